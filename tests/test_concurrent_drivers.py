"""Two and four drivers on one store prefix, local and on SeaweedFS S3: nobody destroys anybody's work.

Each driver is a real `vsp extract` / `vsp decode` process. The windows are widened as in the issue's
reproduction: a driver is frozen (SIGSTOP) at a chosen point of its set-up or run, the others run to the end,
then it is thawed (SIGCONT) and finishes too. Afterwards every array and table equals an uninterrupted run's
(hashes of every array, and of every decode row), every unit is proven done, and a rerun has nothing to do.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import zarr

from vsp.data.synthetic import generate_world
from vsp.decode.stage import read_results
from vsp.extract.features import LAYOUT, MANIFEST, ZARR_PATH, FeatureStore
from vsp.io.store import Store, open_store

pytestmark = pytest.mark.slow

VSP = str(Path(sys.executable).with_name("vsp"))
N_CONCEPTS = 12


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate_world(
        tmp_path_factory.mktemp("world"), n_concepts=N_CONCEPTS, images_per_concept=2, seed=5
    )


def extract_cmd(world, store: str) -> list[str]:
    return [VSP, "extract", "--images", str(world.images_root), "--store", store, "--models", "alexnet",
            "--weights", "random", "--unit-size", "1", "--no-ray"]  # fmt: skip


def decode_cmd(world, store: str) -> list[str]:
    return [VSP, "decode", "--store", store, "--norms", str(world.norms_path), "--folds", "2", "--no-ray"]


def env_for(store: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ) | (extra or {})
    env.pop("RAY_ADDRESS", None)
    return env


def array_hashes(store: Store) -> dict[str, str]:
    """sha256 of every array's values under features.zarr (the identity of the extracted numbers)."""
    root = zarr.open_group(store=store.zarr_store(ZARR_PATH), mode="r", zarr_format=3)
    out = {}
    for path, arr in root.arrays():
        out[path] = hashlib.sha256(np.ascontiguousarray(arr[...]).tobytes()).hexdigest()
    for name, grp in root.groups():
        for path, arr in grp.arrays():
            out[f"{name}/{path}"] = hashlib.sha256(np.ascontiguousarray(arr[...]).tobytes()).hexdigest()
        for sub, g2 in grp.groups():
            for path, arr in g2.arrays():
                out[f"{name}/{sub}/{path}"] = hashlib.sha256(
                    np.ascontiguousarray(arr[...]).tobytes()
                ).hexdigest()
    return out


@pytest.fixture(scope="module")
def reference(world, tmp_path_factory):
    """An uninterrupted extract + decode with one driver."""
    store = str(tmp_path_factory.mktemp("ref") / "store")
    subprocess.run(extract_cmd(world, store), check=True, env=env_for(store), capture_output=True)
    subprocess.run(decode_cmd(world, store), check=True, env=env_for(store), capture_output=True)
    s = open_store(store)
    fs = FeatureStore(s)
    decode_rows = read_results(s, fs.layers()).drop_columns([]).to_pandas()
    return {"arrays": array_hashes(s), "decode": decode_rows}


def wait_for(pred: Callable[[], bool], proc: subprocess.Popen, what: str, timeout: float = 120.0) -> None:
    t0 = time.monotonic()
    while not pred():
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"driver ended (rc {proc.returncode}) before {what}: {out}")
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.0005)


def start(cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, timeout: float = 300.0) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


def race(
    cmd: list[str], env: dict[str, str], store: Store, pauses: list[Callable[[Store], bool]]
) -> list[str]:
    """Start one driver per pause point, freeze each when its point is reached, run one more to the end,
    then thaw the frozen ones in reverse order; returns every driver's output."""
    frozen = []
    for point in pauses:
        p = start(cmd, env)
        wait_for(lambda point=point: point(store), p, "its pause point")
        os.kill(p.pid, signal.SIGSTOP)
        frozen.append(p)
    outputs = [finish(start(cmd, env))]
    for p in reversed(frozen):
        os.kill(p.pid, signal.SIGCONT)
        outputs.append(finish(p))
    return outputs


def claimed(store: Store) -> bool:
    return store.exists(MANIFEST)


def arrays_begun(store: Store) -> bool:
    return store.exists(f"{ZARR_PATH}/zarr.json")


def layout_ready(store: Store) -> bool:
    return store.exists(LAYOUT)


def first_marker(store: Store) -> bool:
    return bool(store.list("features/done"))


def check_truth(store: Store, reference: dict, world, env: dict[str, str]) -> None:
    fs = FeatureStore(store)
    assert array_hashes(store) == reference["arrays"]
    done, invalid = fs.unit_status()
    assert done == set(range(N_CONCEPTS)) and not invalid
    status = subprocess.run([VSP, "status", "--store", store.uri, "--json"], env=env, capture_output=True,
                            text=True, check=True)  # fmt: skip
    assert json.loads(status.stdout)["complete"] is True, status.stdout
    rerun = subprocess.run(extract_cmd(world, store.uri), env=env, capture_output=True, text=True, check=True)
    assert "nothing to do" in rerun.stdout + rerun.stderr


def check_decode(store: Store, reference: dict) -> None:
    fs = FeatureStore(store)
    rows = read_results(store, fs.layers()).to_pandas()
    assert rows.equals(reference["decode"])


# --------------------------------------------------------------------------------------------- local
@pytest.mark.parametrize("n", [2, 4])
def test_concurrent_extract_local(world, reference, tmp_path, n):
    store = open_store(tmp_path / "store")
    env = env_for(store.uri)
    pauses = [arrays_begun, claimed, first_marker][: n - 1]
    race(extract_cmd(world, store.uri), env, store, pauses)
    check_truth(store, reference, world, env)


def test_driver_killed_during_setup_local(world, reference, tmp_path):
    store = open_store(tmp_path / "store")
    env = env_for(store.uri)
    p = start(extract_cmd(world, store.uri), env)
    wait_for(lambda: arrays_begun(store), p, "array creation")
    p.kill()
    p.wait()
    assert not store.exists(LAYOUT) or first_marker(store) is False
    finish(start(extract_cmd(world, store.uri), env))
    check_truth(store, reference, world, env)


@pytest.mark.parametrize("n", [2, 4])
def test_concurrent_decode_local(world, reference, tmp_path, n):
    store = open_store(tmp_path / "store")
    env = env_for(store.uri)
    finish(start(extract_cmd(world, store.uri), env))
    pauses = [lambda s: s.exists("decode/manifest.json"), lambda s: bool(s.list("decode/done"))]
    pauses += [lambda s: bool(s.list("decode/results"))]
    race(decode_cmd(world, store.uri), env, store, pauses[: n - 1])
    check_decode(store, reference)


def test_a_marker_without_its_data_is_not_done(world, reference, tmp_path):
    """The old failure: markers survived while the chunks were deleted. Now the unit is redone."""
    store = open_store(tmp_path / "store")
    env = env_for(store.uri)
    finish(start(extract_cmd(world, store.uri), env))
    victim = [k for k in store.list(f"{ZARR_PATH}/alexnet") if "/c/3/" in k][0]
    store.delete(victim)
    fs = FeatureStore(store)
    done, invalid = fs.unit_status()
    assert invalid == {3} and 3 not in done
    status = subprocess.run([VSP, "status", "--store", store.uri, "--json"], env=env, capture_output=True,
                            text=True, check=True)  # fmt: skip
    extract = json.loads(status.stdout)["stages"]["extract"]
    assert extract["complete"] is False and extract["invalid"] == 1 and extract["done"] == N_CONCEPTS - 1
    text = subprocess.run(
        [VSP, "status", "--store", store.uri], env=env, capture_output=True, text=True
    ).stdout
    assert "1 with missing or changed data" in text
    out = finish(start(extract_cmd(world, store.uri), env))
    assert "1 units" in out
    check_truth(store, reference, world, env)
    finish(start(decode_cmd(world, store.uri), env))
    store.delete("decode/results/alexnet/features.0.parquet")
    out = finish(start(decode_cmd(world, store.uri), env))
    assert "decode: 1 layers" in out
    check_decode(store, reference)


# ------------------------------------------------------------------------------------------------- S3
@pytest.mark.s3
@pytest.mark.parametrize(
    ("conditional", "n"),
    [("1", 2), ("1", 4), ("0", 4)],
    ids=["conditional-put-2", "conditional-put-4", "claim-by-listing-4"],
)
def test_concurrent_extract_s3(world, reference, s3_uri, conditional, n):
    """Drivers on SeaweedFS, with conditional PUTs and with the fallback for servers without them."""
    store = open_store(s3_uri)
    env = env_for(s3_uri, {"VSP_S3_CONDITIONAL_WRITES": conditional})
    race(extract_cmd(world, s3_uri), env, store, [arrays_begun, claimed, first_marker][: n - 1])
    check_truth(store, reference, world, env)


@pytest.mark.s3
def test_driver_killed_during_setup_s3(world, reference, s3_uri):
    store = open_store(s3_uri)
    env = env_for(s3_uri)
    p = start(extract_cmd(world, s3_uri), env)
    wait_for(lambda: arrays_begun(store), p, "array creation")
    p.kill()
    p.wait()
    finish(start(extract_cmd(world, s3_uri), env))
    check_truth(store, reference, world, env)


@pytest.mark.s3
def test_concurrent_decode_s3(world, reference, s3_uri):
    store = open_store(s3_uri)
    env = env_for(s3_uri)
    finish(start(extract_cmd(world, s3_uri), env))
    pauses = [lambda s: s.exists("decode/manifest.json"), lambda s: bool(s.list("decode/done"))]
    pauses += [lambda s: bool(s.list("decode/results"))]
    race(decode_cmd(world, s3_uri), env, store, pauses)
    check_decode(store, reference)


def test_a_different_configuration_is_refused_in_one_line_and_writes_nothing(world, tmp_path):
    store = open_store(tmp_path / "store")
    env = env_for(store.uri)
    finish(start(extract_cmd(world, store.uri), env))
    before = {k: store.read_bytes(k) for k in store.list("")}
    cmd = extract_cmd(world, store.uri) + ["--seed", "7"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert r.returncode == 3
    # `vsp extract` is a run of one stage: its record refuses first, naming the key (the manifest would too)
    assert "holds a different run configuration (differs in: extract.seed)" in r.stderr
    assert "Traceback" not in r.stderr
    assert {k: store.read_bytes(k) for k in store.list("")} == before
