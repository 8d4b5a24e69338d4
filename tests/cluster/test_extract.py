import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vsp.data.images import build_manifest
from vsp.data.synthetic import generate_world
from vsp.extract.features import ExtractionConfig, FeatureStore
from vsp.extract.stage import run_extraction_local
from vsp.io.store import open_store

CONFIG = ExtractionConfig(models=("alexnet",), weights="random", seed=5, unit_size=2)


REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate_world(tmp_path_factory.mktemp("world"), n_concepts=6, images_per_concept=2, seed=2)


@pytest.fixture(scope="module")
def records(world):
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


def test_pool_layout_never_leaves_decode_tasks_without_a_cpu():
    from cluster.extract import pool_layout

    one = pool_layout({"CPU": 1.0}, None, 3)  # `cluster.local start --worker-cpus 1`, a 1-vCPU host
    assert (one.actors, one.actor_options, one.decode_in_actor, one.threads) == (1, {"num_cpus": 1}, True, 1)
    two = pool_layout({"CPU": 2.0}, None, 3)  # one actor, one CPU left for decode tasks
    assert (two.actors, two.decode_in_actor, two.threads) == (1, False, 2)  # all cores: as fast as --no-ray
    assert pool_layout({"CPU": 2.0}, 2, 3).decode_in_actor  # as many actors as CPUs
    crowded = pool_layout({"CPU": 2.0}, 4, 8)  # more actors than CPUs: each asks for a share
    assert crowded.actor_options == {"num_cpus": 0.5} and crowded.decode_in_actor
    assert pool_layout({"CPU": 8.0}, 1, 8).threads == 8  # a CPU actor uses its share of every CPU
    assert pool_layout({"CPU": 16.0}, None, 100).threads == 2  # 8 actors, decode tasks in the gaps
    gpu = pool_layout({"CPU": 8.0, "GPU": 2.0}, None, 8)
    assert gpu.actor_options == {"num_cpus": 1, "num_gpus": 1} and not gpu.decode_in_actor
    assert gpu.threads is None
    assert pool_layout({"CPU": 1.0, "GPU": 1.0}, None, 8).decode_in_actor  # the GPU actor holds the one CPU
    scaling = pool_layout({}, None, 8)  # an autoscaler with no worker yet: decode tasks wait for its nodes
    assert (scaling.actors, scaling.decode_in_actor, scaling.threads) == (1, False, None)


ONE_CPU = """
import logging
import sys
from cluster.extract import run_extraction_ray
from cluster.runtime import init_ray
from vsp.extract.features import ExtractionConfig
from vsp.data.images import build_manifest

logging.basicConfig(level=logging.INFO)
init_ray(None, num_cpus=1)
config = ExtractionConfig(models=("alexnet",), weights="random", seed=5, unit_size=2)
summary = run_extraction_ray(sys.argv[2], build_manifest(sys.argv[1]), config)
print(summary.line())
"""


def test_ray_extraction_on_a_one_cpu_ray_completes_and_equals_local(tmp_path, world, reference):
    """An embedded Ray of 1 CPU: the actor holds it, so the images are decoded inside it (no deadlock)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "VSP_RUN_CONFIG")}
    out = subprocess.run(
        [sys.executable, "-c", ONE_CPU, str(world.images_root), str(tmp_path / "store")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-4000:]
    assert "extract: 3 units (12 images" in out.stdout, out.stdout
    assert "images decoded inside the actors" in out.stderr
    fs = FeatureStore(open_store(tmp_path / "store"))
    assert fs.complete()
    assert_same(fs, reference)
