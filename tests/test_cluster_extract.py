import os
import signal

import numpy as np
import pytest

from vsp.extract_stage import run_extraction_local
from vsp.features import ExtractionConfig, FeatureStore
from vsp.images import build_manifest
from vsp.store import open_store
from vsp.synthetic import generate_world

CONFIG = ExtractionConfig(models=("alexnet",), weights="random", seed=5, unit_size=2)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    world = generate_world(tmp_path_factory.mktemp("world"), n_concepts=6, images_per_concept=2, seed=2)
    return build_manifest(world.images_root)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, records):
    store = open_store(tmp_path_factory.mktemp("ref"))
    run_extraction_local(store, records, CONFIG)
    return FeatureStore(store)


def assert_same(a: FeatureStore, b: FeatureStore) -> None:
    for layer in b.layers():
        np.testing.assert_array_equal(a.read(layer.model, layer.name), b.read(layer.model, layer.name))
        np.testing.assert_array_equal(
            a.read_images(layer.model, layer.name)[0], b.read_images(layer.model, layer.name)[0]
        )


def test_ray_pool_equals_local_and_resumes(ray_local, tmp_path, records, reference):
    from cluster.extract import run_extraction_ray

    seen = []
    summary = run_extraction_ray(
        str(tmp_path), records, CONFIG, progress=lambda d, t, i: seen.append((d, t, i))
    )
    assert summary.units_run == 3 and seen[-1] == (3, 3, 12)
    assert_same(FeatureStore(open_store(tmp_path)), reference)
    again = run_extraction_ray(str(tmp_path), records, CONFIG)
    assert again.units_run == 0 and again.units_skipped == 3


def test_kill_9_actor_mid_run_still_completes_identically(ray_local, tmp_path, records, reference):
    import ray

    from cluster.extract import run_extraction_ray

    pids: list[int] = []
    killed: list[int] = []

    def on_actors(actors):
        pids.extend(ray.get([a.pid.remote() for a in actors]))

    def progress(done, total, images):
        if done == 1 and not killed:
            os.kill(pids[0], signal.SIGKILL)  # the actor holds the next units in its queue
            killed.append(pids[0])

    summary = run_extraction_ray(
        str(tmp_path), records, CONFIG, n_actors=1, progress=progress, on_actors=on_actors
    )
    assert killed and summary.units_run == 3
    fs = FeatureStore(open_store(tmp_path))
    assert fs.complete()
    assert_same(fs, reference)
