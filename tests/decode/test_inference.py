"""The decoding stage's inference: repeats, intervals, permutation p-values and the random-weight control."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from scipy.stats import false_discovery_control

from vsp.data.images import build_manifest
from vsp.data.norms import load_cslb
from vsp.data.synthetic import generate_world
from vsp.decode.control import CONTROL, control_store
from vsp.decode.grid import aggregate
from vsp.decode.inference import INTERVALS, SELECTIVITY, SELECTIVITY_INTERVALS, SIGNIFICANCE
from vsp.decode.stage import DecodeConfig, read_permutations, read_results, run_decode_local
from vsp.errors import ConfigMismatchError, VspInputError
from vsp.extract.features import ExtractionConfig, FeatureStore
from vsp.extract.stage import run_extraction_local
from vsp.io.store import open_store
from vsp.stats import max_statistic_pvalues, permutation_pvalues


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate_world(tmp_path_factory.mktemp("world"), n_concepts=12, images_per_concept=1, seed=4)


@pytest.fixture(scope="module")
def decoded(tmp_path_factory, world):
    """A store with alexnet features (random weights, seed 0) decoded once with the defaults."""
    path = tmp_path_factory.mktemp("decoded")
    # channels-first, as every store before the setting existed (the control twin must follow it, not auto)
    cfg = ExtractionConfig(models=("alexnet",), weights="random", seed=0, unit_size=6, channels_last=False)
    run_extraction_local(open_store(path), build_manifest(world.images_root), cfg)
    run_decode_local(open_store(path), norms(world), DecodeConfig(folds=3, seed=1))
    return path


def norms(world):
    return load_cslb(world.norms_path, min_concepts=3)


def copy(src, dst):
    shutil.copytree(src, dst)
    return open_store(dst)


def test_repeat_seeds_start_with_the_single_split():
    seeds = DecodeConfig(seed=7, repeats=4).repeat_seeds()
    assert seeds[0] == 7 and len(set(seeds)) == 4
    assert DecodeConfig(seed=7, repeats=2).repeat_seeds() == seeds[:2]


def test_default_run_writes_intervals_of_the_same_means(decoded):
    store = open_store(decoded)
    summary = store.read_parquet("decode/summary.parquet").to_pandas()
    bands = store.read_parquet(INTERVALS).to_pandas()
    assert bands["f1"].tolist() == summary["f1"].tolist()  # the same means, to the bit
    assert (bands["low"] <= bands["f1"] + 1e-12).all() and (bands["f1"] <= bands["high"] + 1e-12).all()
    assert set(bands["n_resamples"]) == {2000} and set(bands["ci_method"]) == {"bootstrap-percentile"}
    for key in (SIGNIFICANCE, SELECTIVITY, "decode/inference/manifest.json"):
        assert not store.exists(key)


def test_repeats_and_permutations_join_a_decoded_run_without_refitting_it(tmp_path, world, decoded):
    store = copy(decoded, tmp_path / "s")
    layers = FeatureStore(store).layers()
    before = {k: store.read_bytes(k) for k in store.list("decode/results") + store.list("decode/done")}
    config = DecodeConfig(folds=3, seed=1, repeats=3, permutations=19)
    run_decode_local(store, norms(world), config)
    assert {k: store.read_bytes(k) for k in before} == before  # the single split is kept as it was

    rows = read_results(store, layers, repeats=3).to_pandas()
    assert sorted(rows["repeat"].unique()) == [0, 1, 2]
    single = read_results(store, layers).to_pandas()
    first = rows[rows["repeat"] == 0].drop(columns="repeat").reset_index(drop=True)
    pd.testing.assert_frame_equal(first, single)
    # the summary now averages every property over folds x repeats
    summary = store.read_parquet("decode/summary.parquet").to_pandas()
    assert np.allclose(summary["f1"], aggregate(rows)["f1"])
    assert not np.allclose(summary["f1"], aggregate(single)["f1"])

    perms = read_permutations(store, layers).to_pandas()
    null = np.stack(perms["null"].to_numpy())  # (layers x properties, B)
    assert null.shape[1] == 19
    assert np.allclose(perms["p_value"], permutation_pvalues(perms["f1"].to_numpy(), null.T))
    # the observed statistic is the single split's mean F1 per property
    means = single.groupby(["layer_index", "property"], sort=False)["f1"].mean()
    assert np.allclose(
        perms.set_index(["layer_index", "property"])["f1"],
        means.loc[perms.set_index(["layer_index", "property"]).index],
    )

    sig = store.read_parquet(SIGNIFICANCE).to_pandas()
    L = sig["layer_index"].nunique()
    P = len(sig) // L
    for _, g in sig.groupby("layer_index"):
        assert np.allclose(g["p_bh"], false_discovery_control(g["p_value"], method="bh"))
    obs = sig["f1"].to_numpy().reshape(L, P)
    assert np.allclose(sig["p_maxstat"], max_statistic_pvalues(obs, null.T.reshape(19, L, P)).ravel())
    assert (sig["p_maxstat"] >= sig["p_value"] - 1e-12).all()
    assert (sig["decodable"] == (sig["p_bh"] <= 0.05)).all()

    with pytest.raises(ConfigMismatchError, match="permutations"):
        run_decode_local(store, norms(world), DecodeConfig(folds=3, seed=1, repeats=3, permutations=29))


def test_random_control_writes_selectivity(tmp_path, world, decoded):
    from vsp.config import RunConfig
    from vsp.decode.stage import DecodeStage
    from vsp.stage import StageContext

    store = copy(decoded, tmp_path / "s")
    config = DecodeConfig(folds=3, seed=1, control="random")
    run = RunConfig(store=str(tmp_path / "s"), decode=config, stages=("decode",))
    ctx = StageContext(run, store, _norms=norms(world))
    counts = DecodeStage().run(ctx)
    assert SELECTIVITY in counts["outputs"] and SELECTIVITY_INTERVALS in counts["outputs"]
    twin = FeatureStore(control_store(store))
    assert twin.manifest()["identity"]["config"]["weights"] == "random"
    assert twin.manifest()["identity"]["config"]["seed"] != 0  # derived, not the trained run's seed
    trained = FeatureStore(store).manifest()["identity"]["config"]
    for key in ("precision", "channels_last", "decoder"):  # computed as the trained features were
        assert twin.manifest()["identity"]["config"].get(key) == trained.get(key)
    assert twin.concepts() == FeatureStore(store).concepts()
    layer = FeatureStore(store).layers()[0]
    assert not np.allclose(
        twin.read(layer.model, layer.name), FeatureStore(store).read(layer.model, layer.name)
    )
    sel = store.read_parquet(SELECTIVITY).to_pandas()
    assert np.allclose(sel["selectivity"], sel["f1"] - sel["f1_control"])
    twin_rows = read_results(store.child(CONTROL)).to_pandas()
    twin_means = twin_rows.groupby(["layer_index", "property"])["f1"].mean()
    assert np.allclose(
        sel.set_index(["layer_index", "property"])["f1_control"],
        twin_means.loc[sel.set_index(["layer_index", "property"]).index],
    )
    bands = store.read_parquet(SELECTIVITY_INTERVALS).to_pandas()
    assert np.allclose(bands["f1"], bands["f1_trained"] - bands["f1_control"])
    assert store.read_bytes("decode/figure1_selectivity.png")[:4] == b"\x89PNG"

    same_seed = DecodeConfig(folds=3, seed=1, control="random", control_seed=0)
    ctx = StageContext(
        RunConfig(store=str(tmp_path / "s"), decode=same_seed, stages=("decode",)), store, _norms=norms(world)
    )
    with pytest.raises(VspInputError, match="control_seed 0 is the seed"):
        DecodeStage().run(ctx)


def test_cli_adds_repeats_permutations_and_control_and_the_report_shows_them(tmp_path, world, decoded):
    from typer.testing import CliRunner

    from vsp.cli import app

    runner = CliRunner()
    copy(decoded, tmp_path / "s")
    base = ["decode", "--store", str(tmp_path / "s"), "--norms", str(world.norms_path), "--min-concepts", "3"]
    base += ["--folds", "3", "--seed", "1", "--no-ray"]
    bad = runner.invoke(app, [*base, "--control", "trained"])
    assert bad.exit_code == 2 and "--control" in bad.output and "Traceback" not in bad.output
    res = runner.invoke(app, [*base, "--repeats", "2", "--permutations", "9", "--control", "random"])
    assert res.exit_code == 0, res.output
    assert (
        "95% bootstrap interval" in res.output and "decodable" in res.output and "selectivity" in res.output
    )
    store = open_store(tmp_path / "s")
    for key in (
        SIGNIFICANCE,
        SELECTIVITY,
        "decode/inference/manifest.json",
        "decode/figure2_selectivity.png",
    ):
        assert store.exists(key), key
    out = tmp_path / "report.html"
    rep = runner.invoke(
        app, ["report", "--store", str(tmp_path / "s"), "--out", str(out), "--explain-images", "0"]
    )
    assert rep.exit_code == 0, rep.output
    text = out.read_text(encoding="utf-8")
    for part in ("decode_intervals", "decode_significance", "decode_selectivity"):
        assert (tmp_path / "report_tables" / f"statistics_{part}.csv").is_file(), part
    assert "Decodable properties per layer" in text and "Selectivity over a random-weight network" in text
    sig = pd.read_csv(tmp_path / "report_tables" / "statistics_decode_significance.csv")
    want = store.read_parquet(SIGNIFICANCE).to_pandas().groupby("layer_index")["decodable"].sum()
    assert sig.set_index("layer_index").iloc[:, 3].tolist() == want.loc[sig["layer_index"]].tolist()
