"""Nested CV for C: the outer folds are the single split's; C is chosen on inner folds of training rows."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold

from vsp.decode.nested import probe_layer_nested
from vsp.decode.probe import probe_layer
from vsp.errors import VspInputError


def data(n=40, d=6, P=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    w = rng.standard_normal((d, P))
    labels = ((X @ w + rng.normal(scale=1.5, size=(n, P))) > 0.3).astype(np.uint8)
    return X, labels


def test_a_one_value_grid_is_the_plain_probe():
    X, labels = data()
    plain = probe_layer(X, labels, folds=4, seed=3, C=0.5, dtype=plain_dtype())
    nested = probe_layer_nested(X, labels, folds=4, seed=3, C_grid=(0.5,), inner_folds=3, dtype=plain_dtype())
    np.testing.assert_array_equal(nested["f1"], plain["f1"])
    assert (nested["C"] == 0.5).all()


def plain_dtype():
    import torch

    return torch.float64


def test_chosen_c_is_scikit_learns_inner_cv_choice():
    X, labels = data(seed=1)
    grid = (0.01, 1.0, 100.0)
    got = probe_layer_nested(
        X, labels, folds=4, seed=2, C_grid=grid, inner_folds=3, dtype=plain_dtype(), tol=1e-10
    )
    outer = StratifiedKFold(4, shuffle=True, random_state=2)
    k = 0
    agree = total = 0
    for p in range(labels.shape[1]):
        for train, test in outer.split(X, labels[:, p]):
            scores = []
            for c in grid:
                inner = StratifiedKFold(3, shuffle=True, random_state=2)
                f1s = []
                for itr, ite in inner.split(X[train], labels[train, p]):
                    m = LogisticRegression(C=c, class_weight="balanced", tol=1e-10, max_iter=10000)
                    m.fit(X[train][itr], labels[train, p][itr])
                    f1s.append(f1_score(labels[train, p][ite], m.predict(X[train][ite]), zero_division=0))
                scores.append(np.mean(f1s))
            want = grid[int(np.argmax(np.round(scores, 9)))]
            agree += got["C"][k] == want
            total += 1
            m = LogisticRegression(C=want, class_weight="balanced", tol=1e-10, max_iter=10000)
            m.fit(X[train], labels[train, p])
            if got["C"][k] == want:
                assert got["f1"][k] == pytest.approx(
                    f1_score(labels[test, p], m.predict(X[test]), zero_division=0)
                )
            k += 1
    assert agree == total


def test_inner_folds_must_fit_inside_the_outer_training_rows():
    X, labels = data()
    with pytest.raises(VspInputError, match="inner_folds"):
        probe_layer_nested(X, labels, folds=3, inner_folds=3)


def test_the_stage_records_the_chosen_c_and_refuses_to_mix_with_a_fixed_c_run(tmp_path):
    import shutil

    from vsp.data.images import build_manifest
    from vsp.data.norms import load_cslb
    from vsp.data.synthetic import generate_world
    from vsp.decode.stage import DecodeConfig, read_results, run_decode_local
    from vsp.errors import ConfigMismatchError
    from vsp.extract.features import ExtractionConfig
    from vsp.extract.stage import run_extraction_local
    from vsp.io.store import open_store

    world = generate_world(tmp_path / "w", n_concepts=12, images_per_concept=1, seed=4)
    store = open_store(tmp_path / "s")
    cfg = ExtractionConfig(
        models=("alexnet",), layers=("features.0", "features.3"), weights="random", unit_size=6
    )
    run_extraction_local(store, build_manifest(world.images_root), cfg)
    shutil.copytree(tmp_path / "s", tmp_path / "fixed")
    norms = load_cslb(world.norms_path, min_concepts=3)
    run_decode_local(store, norms, DecodeConfig(folds=3, seed=1, C_grid=(0.1, 10.0), inner_folds=2))
    rows = read_results(store).to_pandas()
    assert set(rows["C"]) <= {0.1, 10.0} and store.read_json("decode/manifest.json")["identity"]["config"][
        "C_grid"
    ] == [0.1, 10.0]
    with pytest.raises(ConfigMismatchError, match="config"):
        run_decode_local(store, norms, DecodeConfig(folds=3, seed=1))
    fixed = open_store(tmp_path / "fixed")
    run_decode_local(fixed, norms, DecodeConfig(folds=3, seed=1))
    plain = read_results(fixed).to_pandas()
    assert (
        "C" not in plain.columns
        and "C_grid" not in fixed.read_json("decode/manifest.json")["identity"]["config"]
    )
    assert (
        plain[["property", "fold", "n_test"]].to_numpy() == rows[["property", "fold", "n_test"]].to_numpy()
    ).all()
