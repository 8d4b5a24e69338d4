import numpy as np
import pytest

from vsp.errors import ConfigMismatchError, VspInputError
from vsp.extract.features import ExtractionConfig, FeaturePlan, FeatureStore, LayerInfo, assemble_unit
from vsp.io.store import open_store

LAYERS = [LayerInfo("net", "conv1", 0, "conv", 3), LayerInfo("net", "penultimate", 1, "penultimate", 2)]


def make_plan(unit_size=2, weights="random"):
    images = {f"c{i}": [f"/img/c{i}/{j}.png" for j in range(1 + i % 3)] for i in range(5)}
    cfg = ExtractionConfig(models=("net",), weights=weights, unit_size=unit_size)
    return FeaturePlan(cfg, sorted(images), images, LAYERS, {"net": "random:0"})


def unit_result(plan, unit, rng):
    start, stop = plan.units[unit]
    owner = [j for j, c in enumerate(plan.concepts[start:stop]) for _ in plan.images[c]]
    per_image = {layer.path: rng.random((len(owner), layer.channels)).astype(np.float32) for layer in LAYERS}
    return assemble_unit(unit, LAYERS, per_image, owner, stop - start, plan.max_images), per_image, owner


def test_plan_cuts_units_on_concept_boundaries():
    plan = make_plan(unit_size=2)
    assert plan.units == [(0, 2), (2, 4), (4, 5)]
    assert plan.max_images == 3


def test_plan_rejects_concept_without_images():
    cfg = ExtractionConfig(models=("net",), weights="random")
    with pytest.raises(VspInputError, match="c1"):
        FeaturePlan(cfg, ["c0", "c1"], {"c0": ["a"], "c1": []}, LAYERS, {"net": "x"})


def test_create_makes_final_shapes_and_records_metadata(tmp_path):
    plan = make_plan()
    fs = FeatureStore(open_store(tmp_path))
    assert fs.create(plan) is True
    assert fs.create(plan) is False  # same configuration: a no-op
    assert np.isnan(fs.read("net", "conv1")).all()
    assert fs.read("net", "conv1").shape == (5, 3)
    imgs, counts = fs.read_images("net", "penultimate")
    assert imgs.shape == (5, 3, 2) and (counts == 0).all()
    man = fs.manifest()
    assert man["identity"]["concepts"] == plan.concepts
    assert man["identity"]["weights_identity"] == {"net": "random:0"}
    assert "torch" in man["versions"]
    assert [x.name for x in fs.layers()] == ["conv1", "penultimate"]


def test_different_configuration_on_same_prefix_is_refused(tmp_path):
    FeatureStore(open_store(tmp_path)).create(make_plan())
    with pytest.raises(ConfigMismatchError, match="config.weights"):
        FeatureStore(open_store(tmp_path)).create(make_plan(weights="imagenet"))


def test_unit_rows_are_mean_then_l2_and_images_padded(tmp_path):
    plan = make_plan()
    fs = FeatureStore(open_store(tmp_path))
    fs.create(plan)
    rng = np.random.default_rng(0)
    for u in range(len(plan.units)):
        assert not fs.is_done(u)
        res, per_image, owner = unit_result(plan, u, rng)
        fs.write_unit(plan, res)
        assert fs.is_done(u)
        start, _ = plan.units[u]
        x = per_image["net/conv1"]
        for j in set(owner):
            mean = x[np.array(owner) == j].mean(0)
            np.testing.assert_allclose(
                fs.read("net", "conv1")[start + j], mean / np.linalg.norm(mean), rtol=1e-6
            )
    assert fs.complete()
    assert fs.pending_units(plan) == []
    rows = fs.read("net", "penultimate")
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, rtol=1e-6)
    imgs, counts = fs.read_images("net", "conv1")
    assert counts.tolist() == [1 + i % 3 for i in range(5)]
    assert np.isnan(imgs[0, 1:]).all() and not np.isnan(imgs[2]).any()


def test_marker_only_after_data(tmp_path, monkeypatch):
    """A unit whose write fails half-way has no marker, so a rerun recomputes it."""
    plan = make_plan()
    fs = FeatureStore(open_store(tmp_path))
    fs.create(plan)
    res, _, _ = unit_result(plan, 0, np.random.default_rng(1))
    res.concept_vectors["net/penultimate"] = res.concept_vectors["net/penultimate"][:1]  # wrong shape
    with pytest.raises(ValueError, match="shape"):
        fs.write_unit(plan, res)
    assert not fs.is_done(0)
    assert fs.pending_units(plan) == [0, 1, 2]


def written_store(tmp_path):
    """A plan whose every unit is written to a fresh local store."""
    plan = make_plan()
    store = open_store(tmp_path)
    fs = FeatureStore(store)
    fs.create(plan)
    rng = np.random.default_rng(0)
    for u in range(len(plan.units)):
        fs.write_unit(plan, unit_result(plan, u, rng)[0])
    return plan, store, fs


def test_a_model_group_opens_as_one_labelled_xarray_dataset(tmp_path):
    xr = pytest.importorskip("xarray")
    plan, store, fs = written_store(tmp_path)
    ds = xr.open_zarr(str(tmp_path / "features" / "features.zarr"), group="net", consolidated=False)
    assert list(ds["concept"].values) == plan.concepts
    assert ds["conv1"].dims == ("concept", "channel_conv1")
    assert ds["penultimate"].dims == ("concept", "channel_penultimate")
    np.testing.assert_array_equal(ds["conv1"].sel(concept="c3").values, fs.read("net", "conv1")[3])
    api = fs.dataset("net", images=True)
    assert api["conv1"].dims == ("concept", "image", "channel_conv1")
    assert api["uri"].sel(concept="c2").values.tolist() == ["/img/c2/0.png", "/img/c2/1.png", "/img/c2/2.png"]
    assert api["uri"].sel(concept="c0").values.tolist() == ["/img/c0/0.png", "", ""]
    np.testing.assert_array_equal(api["conv1"].values, fs.read_images("net", "conv1")[0])


def test_creation_never_destroys_and_refuses_other_metadata(tmp_path):
    """A second create on written data leaves every chunk; an array with other metadata is refused."""
    import zarr

    plan = make_plan()
    store = open_store(tmp_path)
    fs = FeatureStore(store)
    fs.create(plan)
    rng = np.random.default_rng(0)
    fs.write_unit(plan, unit_result(plan, 0, rng)[0])
    before = {k: store.read_bytes(k) for k in store.list("features")}
    store.delete("features/layout.json")  # as if the first driver had died before recording its layout
    assert fs.create(plan) is False
    after = {k: store.read_bytes(k) for k in store.list("features") if k != "features/layout.json"}
    assert after == {k: v for k, v in before.items() if k != "features/layout.json"}
    assert fs.done_units() == {0}
    # someone replaced one array with another shape: refused, nothing rewritten
    root = zarr.open_group(store=store.zarr_store("features/features.zarr"), mode="r+", zarr_format=3)
    root["net"].create_array("conv1", shape=(5, 4), chunks=(2, 4), dtype="float32", overwrite=True)
    store.delete("features/layout.json")
    with pytest.raises(ConfigMismatchError, match=r"conv1 holds a different array \(metadata\)"):
        fs.create(plan)


def test_status_verify_rereads_the_data_and_finds_changed_values(tmp_path):
    """The listing check sees chunks that are gone; --verify also sees chunks whose values changed."""
    import json

    import zarr
    from typer.testing import CliRunner

    from vsp.cli import app

    plan, store, fs = written_store(tmp_path)
    runner = CliRunner()
    ok = runner.invoke(app, ["status", "--store", str(tmp_path), "--verify"])
    assert ok.exit_code == 0 and "all 3 units re-read and equal to their markers" in ok.output
    root = zarr.open_group(store=store.zarr_store("features/features.zarr"), mode="r+", zarr_format=3)
    root["net/conv1"][2:4] = np.ones((2, 3), dtype=np.float32)  # same chunk, other values, marker untouched
    assert fs.done_units() == {0, 1, 2}  # the quick check only proves presence
    assert fs.verify_unit(1) is False and fs.verify_unit(0) is True
    bad = runner.invoke(app, ["status", "--store", str(tmp_path), "--verify", "--json"])
    assert bad.exit_code == 1
    assert json.loads(bad.output)["verified"]["mismatched"] == ["features/done/unit-00001.json"]
