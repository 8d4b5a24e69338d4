import numpy as np
import pytest

from vsp.data.images import build_manifest
from vsp.data.synthetic import generate_world
from vsp.extract.features import ExtractionConfig, FeatureStore
from vsp.extract.stage import (
    compute_unit,
    decode_unit_images,
    make_extractor,
    plan_extraction,
    run_extraction_local,
)
from vsp.io.store import open_store

CONFIG = ExtractionConfig(models=("alexnet",), weights="random", seed=3, unit_size=2)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate_world(tmp_path_factory.mktemp("world"), n_concepts=5, images_per_concept=2, seed=1)


@pytest.fixture(scope="module")
def records(world):
    return build_manifest(world.images_root)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, records):
    """An uninterrupted run."""
    store = open_store(tmp_path_factory.mktemp("ref"))
    summary = run_extraction_local(store, records, CONFIG)
    assert summary.units_run == 3 and summary.images == 10
    return FeatureStore(store)


def all_arrays(fs):
    out = {}
    for layer in fs.layers():
        out[layer.path] = fs.read(layer.model, layer.name)
        out[layer.path + "/images"] = fs.read_images(layer.model, layer.name)[0]
    return out


def test_rerun_is_a_noop_that_says_so(tmp_path, records):
    store = open_store(tmp_path)
    run_extraction_local(store, records, CONFIG)
    again = run_extraction_local(store, records, CONFIG)
    assert again.units_run == 0 and again.units_skipped == 3
    assert "nothing to do" in again.line()


def test_killed_then_rerun_equals_uninterrupted_bit_for_bit(tmp_path, records, reference):
    store = open_store(tmp_path)
    extractor = make_extractor(CONFIG)
    plan = plan_extraction(records, CONFIG, extractor)
    fs = FeatureStore(store)
    fs.create(plan)
    fs.write_unit(plan, compute_unit(extractor, plan, decode_unit_images(plan, 0)))
    # unit 1 dies mid-write: some of its chunks hold garbage and it has no marker
    res = compute_unit(extractor, plan, decode_unit_images(plan, 1))
    for k in res.concept_vectors:
        res.concept_vectors[k][:] = 123.0
    first = plan.layers[0]
    zroot = __import__("zarr").open_group(store=store.zarr_store("features/features.zarr"), mode="r+")
    zroot[first.path][2:4] = res.concept_vectors[first.path]
    assert fs.pending_units(plan) == [1, 2]
    summary = run_extraction_local(store, records, CONFIG)
    assert summary.units_run == 2 and summary.units_skipped == 1
    got, want = all_arrays(fs), all_arrays(reference)
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_layers_recorded_with_channels_and_weights(reference):
    layers = reference.layers()
    assert [x.name for x in layers][-1] == "penultimate"
    assert [x.channels for x in layers] == [64, 192, 384, 256, 256, 4096]
    assert reference.manifest()["identity"]["weights_identity"] == {"alexnet": "random:3"}
    rows = reference.read("alexnet", "features.10")
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, rtol=1e-5)


def test_unreadable_image_is_skipped_and_recorded(tmp_path, world):
    import shutil

    root = tmp_path / "images"
    shutil.copytree(world.images_root, root)
    victim = sorted((root / sorted(p.name for p in root.iterdir())[0]).iterdir())[0]
    victim.write_bytes(b"not an image")
    store = open_store(tmp_path / "store")
    summary = run_extraction_local(store, build_manifest(root), CONFIG)
    assert summary.skipped_images == 1
    marker = store.read_json("features/done/unit-00000.json")
    assert marker["skipped"][0]["uri"].endswith(victim.name)
    _, counts = FeatureStore(store).read_images("alexnet", "features.0")
    assert counts.tolist() == [1, 2, 2, 2, 2]


def test_concept_without_readable_image_is_dropped_before_anything_is_created(tmp_path, world, caplog):
    """Only image of a concept is corrupt: the concept is left out with a named warning, recorded in the
    manifest; the other concepts' features equal a run without that concept."""
    import shutil

    from vsp.data.images import ImageRecord
    from vsp.extract.features import MANIFEST

    root = tmp_path / "images"
    shutil.copytree(world.images_root, root)
    victim = sorted(p.name for p in root.iterdir() if p.is_dir())[1]
    for f in (root / victim).iterdir():
        f.write_bytes(b"not an image")
    store = open_store(tmp_path / "store")
    with caplog.at_level("WARNING"):
        summary = run_extraction_local(store, build_manifest(root), CONFIG)
    assert victim in caplog.text and "no readable image" in caplog.text
    assert summary.dropped_concepts == [victim] and "1 concepts without a readable image" in summary.line()
    man = store.read_json(MANIFEST)
    assert list(man["dropped_concepts"]) == [victim]
    assert victim not in man["identity"]["concepts"]
    fs = FeatureStore(store)
    assert fs.complete()
    # the same as a run that never had the concept
    clean = [ImageRecord(r.concept, r.uri) for r in build_manifest(world.images_root) if r.concept != victim]
    ref = open_store(tmp_path / "ref")
    run_extraction_local(ref, clean, CONFIG)
    a, b = all_arrays(fs), all_arrays(FeatureStore(ref))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    # a rerun keeps the recorded drop without reading the images again, and has nothing to do
    again = run_extraction_local(store, build_manifest(root), CONFIG)
    assert again.units_run == 0
