"""The `vsp meta` stage: stored embeddings, resume / refusal, text-only stores, decodability (Tables 1, 4)."""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow as pa
import pytest

from vsp.data.norms import load_cslb
from vsp.data.synthetic import generate_world
from vsp.decode.stage import DecodeConfig, run_decode_local
from vsp.errors import ConfigMismatchError, VspInputError
from vsp.extract.features import ExtractionConfig, FeaturePlan, FeatureStore, LayerInfo, UnitResult
from vsp.io.store import open_store
from vsp.meta.methods import default_weights, svd_meta
from vsp.meta.stage import (
    DECODABILITY,
    MetaConfig,
    decodability_table,
    decode_marker_path,
    embedding_names,
    embedding_path,
    marker_path,
    read_decodability,
    read_embedding,
    run_decodability_local,
    run_meta_local,
)

LAYERS = [
    LayerInfo("netA", "conv1", 0, "conv", 8),
    LayerInfo("netA", "conv2", 1, "conv", 6),
    LayerInfo("netA", "conv3", 2, "conv", 5),
    LayerInfo("netA", "penultimate", 3, "penultimate", 7),
]
FAST = {"onetoN_epochs": 60, "dim": 6, "k": 5}


def make_features(path, concepts, seed=0, layers=LAYERS):
    """A finished feature store with random non-negative, L2-normalised rows (no network needed)."""
    rng = np.random.default_rng(seed)
    images = {c: [f"/img/{c}.png"] for c in concepts}
    cfg = ExtractionConfig(
        models=tuple(dict.fromkeys(x.model for x in layers)), weights="random", unit_size=len(concepts)
    )
    plan = FeaturePlan(cfg, list(concepts), images, list(layers), {m: "random:0" for m in cfg.models})
    fs = FeatureStore(open_store(path))
    fs.create(plan)
    cv, iv = {}, {}
    for x in layers:
        m = rng.random((len(concepts), x.channels)).astype(np.float32)
        m /= np.linalg.norm(m, axis=1, keepdims=True)
        cv[x.path], iv[x.path] = m, m[:, None, :]
    fs.write_unit(plan, UnitResult(0, cv, iv, np.ones(len(concepts), np.int32)))
    return fs


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate_world(tmp_path_factory.mktemp("world"), n_concepts=12, images_per_concept=1, seed=3)


@pytest.fixture(scope="module")
def norms(world):
    return load_cslb(world.norms_path, min_concepts=3)


@pytest.fixture(scope="module")
def built(tmp_path_factory, world, norms):
    """Features + every embedding (with the world's text vectors), built once for the module."""
    path = tmp_path_factory.mktemp("meta")
    make_features(path, world.concepts)
    store = open_store(path)
    summary = run_meta_local(store, MetaConfig(text=str(world.text_vectors_path), **FAST), norms)
    return path, summary


def copy(src, dst):
    shutil.copytree(src, dst)
    return open_store(dst)


def test_builds_every_embedding_with_names_schema_and_markers(built, world):
    path, summary = built
    store = open_store(path)
    want = [
        "netA/penultimate",
        "netA/svd",
        "netA/1ton",
        "text",
        "netA/penultimate+text",
        "netA/svd+text",
        "netA/1ton+text",
    ]
    assert embedding_names(store) == want
    assert sorted(summary.built) == sorted(want)
    for name in want:
        table = store.read_parquet(embedding_path(name))
        assert table.schema.field("concept").type == pa.string()
        vec = table.schema.field("vector").type
        assert pa.types.is_fixed_size_list(vec) and vec.value_type == pa.float32()
        marker = store.read_json(marker_path(name))
        assert marker["dim"] == vec.list_size and marker["concepts"] == table.num_rows
    assert embedding_names(store, ["netA/*+text"]) == want[4:]
    with pytest.raises(VspInputError, match="nope"):
        embedding_names(store, ["nope/*"])


def test_stored_vectors_are_the_meta_embeddings_of_the_stored_layers(built, world):
    store = open_store(built[0])
    fs = FeatureStore(store)
    pen = read_embedding(store, "netA/penultimate")
    assert pen.concepts == world.concepts
    np.testing.assert_array_equal(pen.matrix, fs.read("netA", "penultimate"))
    layers = [fs.read("netA", n) for n in ("conv1", "conv2", "conv3")]
    np.testing.assert_allclose(
        read_embedding(store, "netA/svd").matrix, svd_meta(layers, default_weights(3), dim=6), atol=1e-6
    )
    assert read_embedding(store, "netA/1ton").matrix.shape == (12, 5)
    mm = read_embedding(store, "netA/svd+text").matrix
    text = read_embedding(store, "text").matrix
    assert mm.shape[1] == text.shape[1] + 6
    np.testing.assert_allclose(np.linalg.norm(mm[:, : text.shape[1]], axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(mm[:, text.shape[1] :], axis=1), 1.0, atol=1e-5)


def test_rerun_is_a_noop_and_other_config_is_refused(tmp_path, built, world, norms):
    store = copy(built[0], tmp_path / "s")
    cfg = MetaConfig(text=str(world.text_vectors_path), **FAST)
    again = run_meta_local(store, cfg, norms)
    assert again.built == [] and "nothing to do" in again.line()
    with pytest.raises(ConfigMismatchError, match="config.dim"):
        run_meta_local(store, MetaConfig(text=str(world.text_vectors_path), **{**FAST, "dim": 4}), norms)
    # resume: a lost marker rebuilds exactly that embedding
    store.delete(marker_path("netA/svd+text"))
    assert run_meta_local(store, cfg, norms).built == ["netA/svd+text"]


def test_text_only_store_needs_norms_and_builds_the_text_embedding(tmp_path, world, norms):
    store = open_store(tmp_path / "t")
    with pytest.raises(VspInputError, match="text-only"):
        run_meta_local(store, MetaConfig(text=str(world.text_vectors_path)))
    summary = run_meta_local(store, MetaConfig(text=str(world.text_vectors_path)), norms)
    assert summary.built == ["text"] and embedding_names(store) == ["text"]
    assert read_embedding(store, "text").concepts == norms.concepts
    assert (
        MetaConfig(text="glove").text_name == "glove"
        and MetaConfig(text="/x/glove.6B.300d.txt").text_name == "glove"
    )


def test_decodability_uses_the_decoding_grid_rules_and_resumes(tmp_path, built, norms):
    store = copy(built[0], tmp_path / "s")
    config = DecodeConfig(folds=3, seed=1)
    summary = run_decodability_local(store, norms, config)
    assert summary.run == 7
    agg = store.read_parquet(DECODABILITY).to_pandas()
    assert list(agg.columns) == [
        "embedding",
        "model",
        "kind",
        "text",
        "grouping",
        "group",
        "f1",
        "n_properties",
    ]
    assert set(agg["embedding"]) == set(embedding_names(store))
    assert agg["f1"].between(0, 1).all()
    overall = agg[agg["grouping"] == "overall"]
    assert len(overall) == 7
    # the penultimate embedding gives exactly the decoding stage's penultimate rows
    run_decode_local(store, norms, config)
    a = store.read_parquet("decode/results/netA/penultimate.parquet").to_pandas()
    b = store.read_parquet("meta/decode/results/netA/penultimate.parquet").to_pandas()
    np.testing.assert_array_equal(a["f1"].to_numpy(), b["f1"].to_numpy())
    assert list(a["property"]) == list(b["property"])
    text = decodability_table(store)
    assert "netA/1ton+text" in text and "[" not in text and "paper" not in text  # the run's numbers only
    # the table is vsp.decode.grid.aggregate of each embedding's marked rows, bit for bit
    from vsp.decode.grid import aggregate

    rows = read_decodability(store)
    assert list(dict.fromkeys(rows["embedding"])) == embedding_names(store)
    for name, got in agg.groupby("embedding", sort=False):
        want = aggregate(rows[rows["embedding"] == name])
        want = want[want["group"].isin(got["group"])]
        assert got["group"].tolist() == want["group"].tolist()
        assert got["f1"].tolist() == want["f1"].tolist()
        assert got["n_properties"].tolist() == want["n_properties"].tolist()
    # beside the table: its intervals (the same means) and each meta-embedding against the penultimate
    from vsp.decode.grid import per_property
    from vsp.meta.statistics import read_decodability_statistics
    from vsp.stats import paired_comparison

    intervals, comps = read_decodability_statistics(store)
    merged = agg.merge(intervals, on=["embedding", "grouping", "group"], suffixes=("", "_iv"))
    assert len(merged) == len(agg) and merged["f1"].tolist() == merged["f1_iv"].tolist()
    assert (merged["low"] <= merged["f1"] + 1e-12).all() and (merged["f1"] <= merged["high"] + 1e-12).all()
    assert set(comps["baseline"]) == {"netA/penultimate"} and "text" not in set(comps["embedding"])
    assert set(comps["embedding"]) == set(embedding_names(store)) - {"netA/penultimate", "text"}
    row = comps[(comps["embedding"] == "netA/svd") & (comps["group"] == "overall")].iloc[0]
    pa_, pb = (per_property(rows[rows["embedding"] == n]) for n in ("netA/svd", "netA/penultimate"))
    both = pa_.merge(pb[["property", "f1"]], on="property")
    ref = paired_comparison(both["f1_x"], both["f1_y"], n_resamples=5000)
    assert row["mean_difference"] == pytest.approx(ref.mean_difference) and 0 < row["pvalue"] <= 1
    assert row["n_properties"] == len(both) and (comps["p_bh"] >= comps["pvalue"] - 1e-12).all()
    assert run_decodability_local(store, norms, config).run == 0
    from vsp.meta.stage import MetaStage, decode_result_path, embedding_path

    listed = MetaStage().outputs(store)  # what the report lists: embeddings and their decodability rows
    for name in embedding_names(store):
        assert embedding_path(name) in listed and decode_result_path(name) in listed
    with pytest.raises(ConfigMismatchError, match="config"):
        run_decodability_local(store, norms, DecodeConfig(folds=4, seed=1))
    store.delete(decode_marker_path("netA/svd"))  # unmarked rows are not read
    assert "netA/svd" not in set(read_decodability(store)["embedding"])


def test_1ton_scales_the_last_two_layers_with_unit_betas_and_records_them(built):
    """The paper's 1ToN: sources x1, x5, x10 (as for the SVD), betas 1, both recorded in the marker."""
    from vsp.meta.methods import onetoN_meta

    store = open_store(built[0])
    fs = FeatureStore(store)
    layers = [fs.read("netA", n) for n in ("conv1", "conv2", "conv3")]
    marker = store.read_json(marker_path("netA/1ton"))
    assert marker["weighting"] == "scale"
    assert marker["scales"] == [1.0, 5.0, 10.0] and marker["betas"] == [1.0, 1.0, 1.0]
    emb = read_embedding(store, "netA/1ton")
    # by hand: the sources multiplied by 1, 5, 10, trained with every beta 1 and no further scaling
    ref = onetoN_meta(
        [s * x for s, x in zip((1.0, 5.0, 10.0), layers, strict=True)],
        k=5, epochs=60, seed=0, betas=[1.0] * 3, scales=[1.0] * 3, device="cpu",
    )  # fmt: skip
    np.testing.assert_allclose(emb.matrix, ref.embeddings, atol=1e-5)


def test_1ton_weighting_is_an_option_and_part_of_the_identity(tmp_path, built, world, norms):
    from vsp.meta.methods import ONETON_WEIGHTINGS as META_WEIGHTINGS
    from vsp.meta.stage import ONETON_WEIGHTINGS

    assert ONETON_WEIGHTINGS == META_WEIGHTINGS
    assert MetaConfig().onetoN_weighting == "scale" and MetaConfig().to_json()["onetoN_weighting"] == "scale"
    with pytest.raises(VspInputError, match="onetoN_weighting"):
        MetaConfig(onetoN_weighting="both")
    store = copy(built[0], tmp_path / "s")
    beta = MetaConfig(text=str(world.text_vectors_path), onetoN_weighting="beta", **FAST)
    with pytest.raises(ConfigMismatchError, match="onetoN_weighting"):  # a store is refused, never mixed
        run_meta_local(store, beta, norms)
    # an existing store of the old (betas) code records no weighting: refused too
    man = store.read_json("meta/manifest.json")
    del man["identity"]["config"]["onetoN_weighting"]
    store.write_json("meta/manifest.json", man)
    with pytest.raises(ConfigMismatchError, match="onetoN_weighting"):
        run_meta_local(store, MetaConfig(text=str(world.text_vectors_path), **FAST), norms)
    # the option: 5 and 10 in the betas on unscaled sources
    fresh = open_store(tmp_path / "beta")
    make_features(tmp_path / "beta", world.concepts)
    run_meta_local(fresh, MetaConfig(kinds=("1ton",), onetoN_weighting="beta", **FAST))
    marker = fresh.read_json(marker_path("netA/1ton"))
    assert marker["weighting"] == "beta"
    assert marker["scales"] == [1.0, 1.0, 1.0] and marker["betas"] == [1.0, 5.0, 10.0]
    assert not np.allclose(
        read_embedding(fresh, "netA/1ton").matrix, read_embedding(store, "netA/1ton").matrix
    )


def test_run_file_and_cli_options_for_the_1ton_weighting(tmp_path, world):
    from typer.testing import CliRunner

    from vsp.cli import app
    from vsp.config import RunConfig

    cfg = RunConfig.from_dict(
        {"store": str(tmp_path), "stages": ["meta"], "meta": {"onetoN_weighting": "beta"}}
    )
    assert cfg.meta_config().onetoN_weighting == "beta"
    assert cfg.stage_identity("meta")["meta"]["onetoN_weighting"] == "beta"
    default = RunConfig.from_dict({"store": str(tmp_path), "stages": ["meta"]})
    assert default.meta_config().onetoN_weighting == "scale"
    with pytest.raises(VspInputError, match="meta.onetoN_weighting"):
        RunConfig.from_dict({"store": str(tmp_path), "stages": ["meta"], "meta": {"onetoN_weighting": "x"}})
    res = CliRunner().invoke(app, ["meta", "--store", str(tmp_path / "c"), "--onetoN-weighting", "x"])
    assert res.exit_code == 2 and "--onetoN-weighting" in res.output
