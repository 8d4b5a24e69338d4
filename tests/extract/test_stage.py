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


def test_channels_last_auto_is_decided_once_and_a_store_keeps_its_own(tmp_path, records):
    from dataclasses import replace

    from vsp.errors import ConfigMismatchError
    from vsp.extract.stage import default_channels_last, resolve_channels_last

    assert CONFIG.channels_last is None  # auto
    assert default_channels_last("cuda") is False  # GPUs keep channels-first until measured there
    assert resolve_channels_last(CONFIG, None, "cuda").channels_last is False
    auto_cpu = default_channels_last("cpu")
    # a new store on this CPU: decided by the device, recorded when it is channels-last
    new = open_store(tmp_path / "new")
    run_extraction_local(new, records, CONFIG)
    recorded = FeatureStore(new).manifest()["identity"]["config"]
    assert recorded.get("channels_last", False) is auto_cpu
    # a store computed channels-first records nothing, as every store before the setting existed
    old = open_store(tmp_path / "old")
    first = replace(CONFIG, channels_last=False)
    run_extraction_local(old, records, first)
    assert "channels_last" not in FeatureStore(old).manifest()["identity"]["config"]
    assert resolve_channels_last(CONFIG, old, "cpu").channels_last is False  # auto resumes it as it is
    assert run_extraction_local(old, records, CONFIG).units_run == 0
    with pytest.raises(ConfigMismatchError, match="channels_last"):
        run_extraction_local(old, records, replace(CONFIG, channels_last=True))
    if auto_cpu:  # an auto channels-last store takes the explicit setting it was decided as, not the other
        assert run_extraction_local(new, records, replace(CONFIG, channels_last=True)).units_run == 0
        with pytest.raises(ConfigMismatchError, match="channels_last"):
            run_extraction_local(new, records, first)
        a, b = all_arrays(FeatureStore(new)), all_arrays(FeatureStore(old))
        diff = max(float(np.abs(a[k] - b[k]).max()) for k in a)
        assert 0 < diff < 1e-4  # the same features up to float32 summation order


def test_the_runner_records_the_decided_memory_format_so_an_explicit_one_resumes(tmp_path, world):
    from jobs.runner import run_pipeline
    from vsp.config import RunConfig
    from vsp.errors import ConfigMismatchError
    from vsp.extract.stage import default_channels_last
    from vsp.runrecord import read_run

    def run(store, **extract):
        doc = {
            "store": str(tmp_path / store),
            "images": str(world.images_root),
            "stages": ["extract"],
            "extract": {"models": ["alexnet"], "weights": "random", "seed": 3, "unit_size": 2, **extract},
        }
        return run_pipeline(RunConfig.from_dict(doc), no_ray=True)

    auto = {"store": "s", "images": "i", "stages": ["extract"], "extract": {"channels_last": "auto"}}
    assert RunConfig.from_dict(auto).extract.channels_last is None
    run("a")
    decided = default_channels_last("cpu")
    doc = read_run(open_store(tmp_path / "a"))
    assert doc["attempts"][-1]["config"]["extract"]["channels_last"] is decided
    assert doc["identity"]["extract"]["extract"].get("channels_last", False) is decided
    run("a", channels_last=decided)  # the decision, given explicitly: the same run, nothing refused
    with pytest.raises(ConfigMismatchError, match="channels_last"):
        run("a", channels_last=not decided)


def test_batch_size_auto_is_32_on_a_cpu_and_follows_free_memory_on_a_gpu():
    from vsp.config import RunConfig
    from vsp.extract.stage import CPU_BATCH, batch_for_memory, choose_batch_size

    assert choose_batch_size(make_extractor(CONFIG)) == CPU_BATCH == 32
    mib = 2**20
    assert batch_for_memory(100 * mib, 80_000 * mib) == 256  # 400 fit half of 80 GB: the power of two below
    assert batch_for_memory(100 * mib, 80_000 * mib, fraction=1.0) == 512
    assert batch_for_memory(1 * mib, 80_000 * mib) == 1024  # capped
    assert batch_for_memory(5_000 * mib, 8_000 * mib) == 8  # never below the floor
    doc = {"store": "s", "images": "i", "stages": ["extract"], "extract": {"batch_size": "auto"}}
    assert RunConfig.from_dict(doc).extract.batch_size is None
    doc["extract"]["batch_size"] = 64
    assert RunConfig.from_dict(doc).extract.batch_size == 64
