import numpy as np
import pytest

from vsp.data.images import build_manifest
from vsp.data.norms import load_cslb
from vsp.data.synthetic import generate_world
from vsp.decode.stage import DecodeConfig, read_results, run_decode_local, summary_table
from vsp.errors import ConfigMismatchError, VspInputError
from vsp.extract.features import ExtractionConfig, FeatureStore
from vsp.extract.stage import run_extraction_local
from vsp.io.store import open_store


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate_world(tmp_path_factory.mktemp("world"), n_concepts=12, images_per_concept=1, seed=4)


@pytest.fixture(scope="module")
def features_dir(tmp_path_factory, world):
    path = tmp_path_factory.mktemp("features")
    cfg = ExtractionConfig(models=("alexnet",), weights="random", seed=0, unit_size=6)
    run_extraction_local(open_store(path), build_manifest(world.images_root), cfg)
    return path


def copy_store(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return open_store(dst)


def test_decode_writes_rows_figures_and_resumes(tmp_path, world, features_dir):
    store = copy_store(features_dir, tmp_path / "s")
    norms = load_cslb(world.norms_path, min_concepts=3)
    config = DecodeConfig(folds=3, seed=1)
    summary = run_decode_local(store, norms, config)
    layers = FeatureStore(store).layers()
    assert summary.units_run == len(layers) == 6
    table = read_results(store, layers).to_pandas()
    kept = table["property"].nunique()
    assert len(table) == 6 * kept * 3
    assert {
        "model",
        "layer",
        "layer_index",
        "property",
        "feature_class",
        "fine_grained",
        "fold",
        "f1",
        "precision",
        "recall",
        "n_pos_test",
    } <= set(table.columns)
    assert table["f1"].between(0, 1).all()
    for name in ("decode/summary.parquet", "decode/figure1.png", "decode/figure2.png"):
        assert store.exists(name)
    assert store.read_bytes("decode/figure1.png")[:4] == b"\x89PNG"
    assert "penultimate" in summary_table(store)
    again = run_decode_local(store, norms, config)
    assert again.units_run == 0 and "nothing to do" in again.line()
    with pytest.raises(ConfigMismatchError, match="config"):
        run_decode_local(store, norms, DecodeConfig(folds=3, seed=2))


def test_rare_properties_are_dropped_not_crashing(tmp_path, world, features_dir):
    store = copy_store(features_dir, tmp_path / "s")
    norms = load_cslb(world.norms_path, min_concepts=1, min_pf=1)
    run_decode_local(store, norms, DecodeConfig(folds=3))
    dropped = store.read_json("decode/manifest.json")["identity"]["dropped_properties"]
    kept = read_results(store, FeatureStore(store).layers()).to_pandas()["property"].unique()
    assert dropped and not set(dropped) & set(kept)
    pos = np.asarray(norms.binary).sum(0)
    assert all(pos[norms.properties.index(p)] >= 3 for p in kept)


def test_decode_without_features_is_a_clear_error(tmp_path, world):
    with pytest.raises(FileNotFoundError, match="vsp extract"):
        run_decode_local(open_store(tmp_path), load_cslb(world.norms_path), DecodeConfig())


def test_unknown_model_named(tmp_path, world, features_dir):
    store = copy_store(features_dir, tmp_path / "s")
    with pytest.raises(VspInputError, match="vgg16"):
        run_decode_local(
            store, load_cslb(world.norms_path, min_concepts=3), DecodeConfig(folds=3, models=("vgg16",))
        )


def test_ray_grid_equals_local(ray_local, tmp_path, world, features_dir):
    from cluster.decode import run_decode_ray

    norms = load_cslb(world.norms_path, min_concepts=3)
    a = copy_store(features_dir, tmp_path / "a")
    b = copy_store(features_dir, tmp_path / "b")
    run_decode_local(a, norms, DecodeConfig(folds=3))
    summary = run_decode_ray(b.uri, norms, DecodeConfig(folds=3), layers_per_task=2)
    assert summary.units_run == 6
    layers = FeatureStore(a).layers()
    ta, tb = read_results(a, layers).to_pandas(), read_results(b, layers).to_pandas()
    assert ta.equals(tb)
