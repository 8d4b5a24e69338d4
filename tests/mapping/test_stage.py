"""The `vsp map` stage without Ray: units, Parquet schema, resume, refusal, Table 2, and the CLI."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from tests.meta.test_stage import FAST, make_features
from vsp.data.norms import load_cslb
from vsp.data.synthetic import generate_world
from vsp.errors import ConfigMismatchError
from vsp.io.store import open_store
from vsp.mapping import mappers as mapping
from vsp.mapping.stage import (
    TABLE2,
    UNIT_SCHEMA,
    MappingConfig,
    align,
    plan_units,
    prepare,
    read_rows,
    read_table2,
    run_mapping_local,
    table2_text,
)
from vsp.meta.stage import MetaConfig, embedding_names, read_embedding, run_meta_local

TINY = {"repeats": 2, "folds": 3, "mlp_epochs": (5,), "mlp_lr": (1e-3,), "mlp_weight_decay": (0.0,)}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate_world(tmp_path_factory.mktemp("world"), n_concepts=12, images_per_concept=1, seed=5)


@pytest.fixture(scope="module")
def norms(world):
    return load_cslb(world.norms_path, min_concepts=3)


@pytest.fixture(scope="module")
def meta_store(tmp_path_factory, world, norms):
    path = tmp_path_factory.mktemp("meta")
    make_features(path, world.concepts)
    run_meta_local(
        open_store(path),
        MetaConfig(text=str(world.text_vectors_path), kinds=("penultimate", "svd"), multimodal=False, **FAST),
        norms,
    )
    return path


def copy(src, dst):
    shutil.copytree(src, dst)
    return open_store(dst)


def test_units_schema_table2_and_equality_with_evaluate(tmp_path, meta_store, norms):
    import torch

    store = copy(meta_store, tmp_path / "s")
    config = MappingConfig(**TINY)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summary = run_mapping_local(store, norms, config)
    finally:
        torch.set_num_threads(threads)
    names = embedding_names(store)
    assert names == ["netA/penultimate", "netA/svd", "text"]
    # per embedding: knn and ridge one unit per repeat (all folds), the MLP one unit per fold
    assert summary.units_total == summary.units_run == 3 * (2 + 2 + 2 * 3)
    assert summary.folds == 3 * 3 * 2 * 3
    unit = store.read_parquet("mapping/units/text/mlp/r1-f2-2.parquet")
    assert unit.schema.equals(UNIT_SCHEMA) and unit.num_rows == 1
    rows = read_rows(store)
    assert len(rows) == 3 * 3 * 2 * 3 and set(rows["mapper"]) == {"knn", "ridge", "mlp"}
    for _, g in rows[(rows["embedding"] == "text") & (rows["mapper"] == "knn")].groupby("repeat"):
        assert sorted(c for tc in g["test_concepts"] for c in tc) == sorted(norms.concepts)
    t2 = store.read_parquet(TABLE2).to_pandas()
    assert t2.shape == (9, 10)
    assert {
        "embedding",
        "mapper",
        "n_folds",
        "n_test",
        "n_concepts",
        "hit1",
        "hit5",
        "hit10",
        "hit20",
        "meta_fit",
    } == set(t2)
    assert (t2["n_folds"] == 6).all() and (t2["n_concepts"] == 12).all()
    # the stage's numbers are vsp.mapping.mappers.evaluate's
    d = align(read_embedding(store, "netA/svd"), norms)
    for m in ("knn", "ridge"):
        ref = mapping.summarise(mapping.evaluate(d.X, d.Y, m, "netA/svd", repeats=2, folds=3, seed=0))[0]
        got = t2[(t2["embedding"] == "netA/svd") & (t2["mapper"] == m)].iloc[0]
        for t in mapping.HITS:
            assert got[f"hit{t}"] == pytest.approx(ref[f"hit{t}"])
    text = table2_text(store)
    assert "Hit@20" in text and "netA/svd" in text and "[" not in text  # the run's numbers only
    # the stage's reader: Table 2 from the marked units, as stored
    assert read_table2(store).equals(store.read_parquet(TABLE2).to_pandas())
    # beside Table 2: its intervals (estimates are its own numbers) and the paired tests on the same folds
    from vsp.mapping.statistics import read_table2_statistics

    intervals, comps = read_table2_statistics(store)
    for r in intervals.itertuples(index=False):
        got = t2[(t2["embedding"] == r.embedding) & (t2["mapper"] == r.mapper)].iloc[0]
        assert r.estimate == pytest.approx(got[f"hit{r.hit}"]) and r.low <= r.estimate <= r.high
    assert len(intervals) == 9 * 4 and len(comps) == 3 * 3 * 4  # 3 pairs of embeddings x 3 mappers x 4 T
    assert (comps["n_folds"] == 6).all() and comps["pvalue"].between(0, 1).all()


def test_resume_incremental_selection_and_refusal(tmp_path, meta_store, norms):
    store = copy(meta_store, tmp_path / "s")
    cfg = MappingConfig(embeddings=("text",), mappers=("knn",), **TINY)
    assert run_mapping_local(store, norms, cfg).units_run == 2
    again = run_mapping_local(store, norms, cfg)
    assert again.units_run == 0 and "nothing to do" in again.line()
    # more embeddings / mappers later: only the new units run
    more = MappingConfig(embeddings=("text", "netA/svd"), mappers=("knn", "ridge"), **TINY)
    assert run_mapping_local(store, norms, more).units_run == 6
    store.delete("mapping/done/netA/svd/ridge/r1-f0-2.json")
    assert run_mapping_local(store, norms, more).units_run == 1
    with pytest.raises(ConfigMismatchError, match="config.folds"):
        run_mapping_local(store, norms, MappingConfig(**{**TINY, "folds": 4}))


def test_plan_units_chunks():
    d = type("D", (), {"name": "e", "concepts": list("abcdefghij")})()
    units = plan_units([d], MappingConfig(mappers=("ridge", "mlp"), repeats=2, folds=5, folds_per_task=2))
    assert [(u.mapper, u.repeat, u.start, u.stop) for u in units][:3] == [
        ("ridge", 0, 0, 2),
        ("ridge", 0, 2, 4),
        ("ridge", 0, 4, 5),
    ]
    assert len(units) == 2 * 2 * 3
    assert MappingConfig(mlp_epochs=(7,)).grid("mlp")["epochs"] == [7]


def test_cli_text_only_meta_map_similarity(tmp_path, world):
    from vsp.cli import app

    runner = CliRunner()
    store = str(tmp_path / "cli")
    res = runner.invoke(
        app,
        [
            "meta",
            "--store",
            store,
            "--text",
            str(world.text_vectors_path),
            "--norms",
            str(world.norms_path),
            "--folds",
            "3",
            "--min-concepts",
            "3",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "text" in res.output and "Tables 1 and 4" in res.output
    res = runner.invoke(
        app,
        [
            "map",
            "--store",
            store,
            "--norms",
            str(world.norms_path),
            "--min-concepts",
            "3",
            "--mappers",
            "knn,ridge",
            "--repeats",
            "1",
            "--folds",
            "3",
            "--no-ray",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "Table 2" in res.output and "paper column omitted" not in res.output  # the paper's: `vsp report`
    res = runner.invoke(
        app,
        [
            "map",
            "--store",
            store,
            "--norms",
            str(world.norms_path),
            "--min-concepts",
            "3",
            "--mappers",
            "knn",
            "--repeats",
            "1",
            "--folds",
            "4",
            "--no-ray",
        ],
    )
    assert res.exit_code == 3 and "map.folds" in res.output  # named by the run record: the run-file key
    pairs = tmp_path / "pairs.txt"
    c = world.concepts
    pairs.write_text("".join(f"{c[i]} {c[i + 1]} {i % 5}\n" for i in range(8)))
    res = runner.invoke(app, ["similarity", "--store", store, "--pairs", f"mine={pairs}"])
    assert res.exit_code == 0, res.output
    assert "Table 3" in res.output and "(8/8)" in res.output
    assert np.isfinite(
        open_store(store).read_parquet("similarity/table3.parquet").column("spearman").to_numpy()
    ).all()
    assert pa.types.is_string(
        open_store(store).read_parquet("similarity/table3.parquet").schema.field("embedding").type
    )


# ------------------------------------------------------- meta_fit: transductive (all) / inductive (train)
FIT = {"repeats": 1, "folds": 3, "mappers": ("knn", "ridge"), "ridge_alphas": (1.0,)}
SOURCES = ("conv1", "conv2", "conv3")


@pytest.fixture(scope="module")
def meta_all(tmp_path_factory, world, norms):
    """Features + penultimate, SVD, 1ToN, text and the multimodal embeddings."""
    path = tmp_path_factory.mktemp("meta_all")
    make_features(path, world.concepts)
    run_meta_local(open_store(path), MetaConfig(text=str(world.text_vectors_path), **FAST), norms)
    return path


def _sources(store, concepts):
    from vsp.extract.features import FeatureStore

    fs = FeatureStore(store)
    index = {c: i for i, c in enumerate(fs.concepts())}
    rows = [index[c] for c in concepts]
    return [fs.read("netA", n)[rows] for n in SOURCES]


def _by_name(data):
    return {d.name: d for d in data}


def test_default_meta_fit_is_all_unchanged_and_said_in_table2(tmp_path, meta_all, norms):
    from types import SimpleNamespace

    from vsp.report.build import _meta_fit_note

    store = copy(meta_all, tmp_path / "s")
    config = MappingConfig(embeddings=("netA/svd", "text"), **FIT)
    assert config.meta_fit == "all" and config.identity()["meta_fit"] == "all"
    data, identity = prepare(store, norms, config)
    assert identity["config"]["meta_fit"] == "all" and all(d.refit is None for d in data)
    run_mapping_local(store, norms, config)
    # the stored embedding is mapped as it is (the same numbers as vsp.mapping.mappers.evaluate on it)
    d = _by_name(data)["netA/svd"]
    ref = mapping.summarise(mapping.evaluate(d.X, d.Y, "knn", "netA/svd", repeats=1, folds=3, seed=0))[0]
    t2 = store.read_parquet(TABLE2).to_pandas().set_index(["embedding", "mapper"])
    assert t2.loc[("netA/svd", "knn"), "hit5"] == pytest.approx(ref["hit5"])
    assert t2.loc[("netA/svd", "knn"), "meta_fit"] == "all" and pd.isna(t2.loc[("text", "knn"), "meta_fit"])
    assert not store.list("mapping/meta_fit")
    text = table2_text(store)
    assert "meta-embeddings: " in text and "transductive" in text and "--meta-fit train" in text
    assert "transductive" in _meta_fit_note(SimpleNamespace(store=store))  # the report's Table 2 note
    with pytest.raises(ConfigMismatchError, match="config.meta_fit"):  # never mixed with an inductive run
        run_mapping_local(store, norms, MappingConfig(embeddings=("netA/svd",), meta_fit="train", **FIT))
    # a text-only selection has nothing to say about meta-embeddings
    plain = copy(meta_all, tmp_path / "p")
    run_mapping_local(plain, norms, MappingConfig(embeddings=("text",), **FIT))
    assert "meta-embeddings" not in table2_text(plain)


def test_inductive_svd_is_fitted_on_the_training_concepts_and_projects_the_test_ones(
    tmp_path, meta_all, norms
):
    from types import SimpleNamespace

    from vsp.mapping.stage import meta_fold_matrix
    from vsp.meta.methods import default_weights
    from vsp.report.build import _meta_fit_note

    store = copy(meta_all, tmp_path / "s")
    config = MappingConfig(embeddings=("netA/svd", "netA/svd+text", "text"), meta_fit="train", **FIT)
    summary = run_mapping_local(store, norms, config)
    assert summary.units_run == 3 * 2
    data, identity = prepare(store, norms, config)
    assert identity["config"]["meta_fit"] == "train"
    assert store.read_json("mapping/manifest.json")["identity"]["config"]["meta_fit"] == "train"
    by = _by_name(data)
    d, mm = by["netA/svd"], by["netA/svd+text"]
    assert by["text"].refit is None and d.refit.kind == "svd" and mm.refit.image == "netA/svd"
    layers = _sources(store, d.concepts)
    w = default_weights(3)
    x = np.hstack([wj * m.astype(np.float64) for wj, m in zip(w, layers, strict=True)])
    rows = read_rows(store)
    for sp in mapping.split_plan(len(d.concepts), 1, 3, 0):
        got = meta_fold_matrix(store, d, sp)
        # direct: numpy SVD of the training concepts' weighted concatenation, test concepts projected on V
        u, s, vt = np.linalg.svd(x[sp.train], full_matrices=False)
        k = got.shape[1]
        assert k == min(6, len(sp.train))
        ref_tr, ref_te = u[:, :k] * s[:k], x[sp.test] @ vt[:k].T
        signs = np.sign((ref_tr * got[sp.train]).sum(axis=0))
        np.testing.assert_allclose(got[sp.train], ref_tr * signs, atol=1e-5)
        np.testing.assert_allclose(got[sp.test], ref_te * signs, atol=1e-5)
        assert store.exists(f"mapping/meta_fit/netA/svd/{d.refit.key}/r0-f{sp.fold}.npy")
        # the units mapped exactly these fold matrices
        for m in ("knn", "ridge"):
            want = mapping.run_fold(got, d.Y, m, sp.train, sp.test, sp.seed, grid=config.grid(m))
            row = rows[(rows["embedding"] == "netA/svd") & (rows["mapper"] == m) & (rows["fold"] == sp.fold)]
            assert list(row.iloc[0]["ranks"]) == want["ranks"]
        # +text: the stored text vectors joined with the refitted image part, as `vsp meta` joins them
        both = meta_fold_matrix(store, mm, sp)
        dt = mm.refit.text.shape[1]
        tpos = {c: i for i, c in enumerate(read_embedding(store, "text").concepts)}
        text = read_embedding(store, "text").matrix[[tpos[c] for c in mm.concepts]].astype(np.float64)
        np.testing.assert_allclose(
            both[:, :dt], text / np.linalg.norm(text, axis=1, keepdims=True), atol=1e-6
        )
        img = meta_fold_matrix(store, d, sp)[[d.concepts.index(c) for c in mm.concepts]]
        np.testing.assert_allclose(both[:, dt:], img / np.linalg.norm(img, axis=1, keepdims=True), atol=1e-6)
    marker = store.read_json("mapping/done/netA/svd/knn/r0-f0-2.json")
    assert marker["meta_fit"] == "train"
    t2 = store.read_parquet(TABLE2).to_pandas().set_index(["embedding", "mapper"])
    assert t2.loc[("netA/svd+text", "ridge"), "meta_fit"] == "train" and pd.isna(
        t2.loc[("text", "knn"), "meta_fit"]
    )
    text = table2_text(store)
    assert "refitted in every outer fold" in text and "inductive" in text
    assert "inductive" in _meta_fit_note(SimpleNamespace(store=store))
    # a rerun reuses the cached fold fits and the finished units
    assert run_mapping_local(store, norms, config).units_run == 0


def test_inductive_1ton_keeps_the_training_maps_and_solves_the_test_concepts(tmp_path, meta_all, norms):
    from vsp.mapping.stage import fit_fold, meta_fold_matrix
    from vsp.meta.methods import onetoN_meta

    store = copy(meta_all, tmp_path / "s")
    config = MappingConfig(embeddings=("netA/1ton",), meta_fit="train", **FIT)
    run_mapping_local(store, norms, config)
    (d,) = prepare(store, norms, config)[0]
    assert d.refit.kind == "1ton"
    assert d.refit.params["scales"] == [1.0, 5.0, 10.0] and d.refit.params["betas"] == [1.0, 1.0, 1.0]
    layers = _sources(store, d.concepts)
    sp = mapping.split_plan(len(d.concepts), 1, 3, 0)[1]
    got = meta_fold_matrix(store, d, sp)
    # by hand: 1ToN trained on the training concepts only (the meta stage's settings) ...
    fit = onetoN_meta(
        [m[sp.train] for m in layers], k=5, epochs=60, seed=0, scales=[1.0, 5.0, 10.0], betas=[1.0] * 3,
        device="cpu",
    )  # fmt: skip
    np.testing.assert_allclose(got[sp.train], fit.embeddings, atol=1e-5)
    # ... and the test concepts' E(w) from the normal equations of Eq. 1 with those maps held fixed
    a = sum(m.astype(np.float64) @ m.T for m in fit.maps)
    rhs = sum(
        (s * x[sp.test].astype(np.float64) - b) @ m.T.astype(np.float64)
        for x, m, b, s in zip(layers, fit.maps, fit.biases, (1.0, 5.0, 10.0), strict=True)
    )
    np.testing.assert_allclose(got[sp.test], rhs @ np.linalg.inv(a), rtol=1e-3, atol=1e-4)
    # inductive: the test concepts' features do not move the training concepts' meta-embeddings
    moved = [m.copy() for m in layers]
    for m in moved:
        m[sp.test] = np.random.default_rng(0).random(m[sp.test].shape)
    again = fit_fold(moved, d.refit, sp)
    np.testing.assert_array_equal(again[sp.train], fit_fold(layers, d.refit, sp)[sp.train])
    assert not np.allclose(again[sp.test], got[sp.test])


def test_meta_fit_option_in_the_config_run_file_and_cli(tmp_path, meta_all, world):
    from vsp.config import RunConfig
    from vsp.errors import VspInputError

    with pytest.raises(VspInputError, match="meta_fit"):
        MappingConfig(meta_fit="test")
    assert MappingConfig(meta_fit="train").identity()["meta_fit"] == "train"
    base = {"store": str(tmp_path), "norms": str(world.norms_path), "stages": ["map"]}
    cfg = RunConfig.from_dict({**base, "map": {"meta_fit": "train"}})
    assert (
        cfg.mapping_config().meta_fit == "train" and cfg.stage_identity("map")["map"]["meta_fit"] == "train"
    )
    assert RunConfig.from_dict(base).mapping_config().meta_fit == "all"
    with pytest.raises(VspInputError, match="map.meta_fit"):
        RunConfig.from_dict({**base, "map": {"meta_fit": "some"}})
    from vsp.cli import app

    args = ["map", "--store", str(meta_all), "--norms", str(world.norms_path), "--meta-fit", "some"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and "--meta-fit" in res.output
