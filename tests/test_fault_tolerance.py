"""Fault tolerance on the local cluster: real Ray processes (cluster/local.py head + worker), real S3.

Every run here is `python -m jobs.pipeline CONFIG --address <the local cluster>` in a subprocess (the driver,
as on a real cluster), writing to SeaweedFS S3 (tests/s3server.py). The reference is an uninterrupted
in-process run of the same configuration; "equal" means bit for bit, features and decoding results.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from vsp.data.synthetic import generate_world
from vsp.decode.stage import read_results
from vsp.extract.features import DONE, MANIFEST, FeatureStore
from vsp.io.store import open_store
from vsp.runrecord import RUN_JSON, RUNS, read_run

pytestmark = [pytest.mark.slow, pytest.mark.s3]

REPO = Path(__file__).resolve().parents[1]
N_UNITS = 16  # one concept per unit, one image per concept
MODELS = ["alexnet", "resnet18"]  # ~0.5 s per unit on the local cluster: a window to interrupt in


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate_world(tmp_path_factory.mktemp("world"), n_concepts=N_UNITS, images_per_concept=1, seed=3)


def write_config(path: Path, world, store: str, stages=("extract",), **extract) -> Path:
    doc = {
        "images": str(world.images_root),
        "store": store,
        "norms": {"path": str(world.norms_path), "min_concepts": 2},
        "stages": list(stages),
        "extract": {"models": MODELS, "weights": "random", "seed": 0, "unit_size": 1, **extract},
        "decode": {"folds": 2},
    }
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture(scope="module")
def reference(world, tmp_path_factory):
    """An uninterrupted run (extract + decode) in this process, on a local folder."""
    from jobs.runner import run_pipeline
    from vsp.config import load_run_config

    root = tmp_path_factory.mktemp("reference")
    cfg = load_run_config(write_config(root / "run.yaml", world, str(root / "store"), ("extract", "decode")))
    run_pipeline(cfg, no_ray=True)
    return open_store(root / "store")


@pytest.fixture(scope="module")
def cluster(s3_server, tmp_path_factory):
    """A Ray head + one worker node (2 CPUs) on 127.0.0.1 whose processes see the test S3 server."""
    from cluster import local

    env = s3_server.env() | {"AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    gcs, dash = local.free_ports(2)
    root = tmp_path_factory.mktemp("cluster")
    c = local.start(root, worker_cpus=2, s3=False, gcs_port=gcs, dashboard_port=dash, env=env, timeout=120)
    try:
        with pytest.MonkeyPatch.context() as mp:  # the cluster's token, for the Jobs / state API clients here
            for k, v in c.env().items():
                if k.startswith("RAY_AUTH_"):
                    mp.setenv(k, v)
            yield c
    finally:
        pids = list(c.pids.values())
        local.stop(root)
        assert not [p for sid in pids for p in local._session_members(sid)], "processes left after stop"


def start_driver(cfg: Path, cluster, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "VSP_RUN_CONFIG")} | cluster.env()
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "jobs.pipeline", str(cfg), "--address", cluster.ray_address],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def finish(proc: subprocess.Popen, log: Path, timeout: float = 240) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"driver still running after {timeout} s:\n{log.read_text()[-4000:]}")


def markers(store) -> dict[str, bytes]:
    return {k: store.read_bytes(k) for k in store.list(DONE)}


def wait_for_markers(store, n: int, proc: subprocess.Popen, log: Path, timeout: float = 150) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = len(store.list(DONE))
        if done >= n:
            return done
        if proc.poll() is not None:
            pytest.fail(
                f"driver exited ({proc.returncode}) before {n} units were done:\n{log.read_text()[-4000:]}"
            )
        time.sleep(0.05)
    pytest.fail(f"fewer than {n} units done after {timeout} s:\n{log.read_text()[-4000:]}")


def assert_units_equal(store, reference, units=None) -> None:
    """Features of the given units (default: all), concept rows and per-image rows, equal the reference."""
    got, want = FeatureStore(store), FeatureStore(reference)
    plan_units = got.manifest()["units"]
    rows = (
        np.concatenate([np.arange(*plan_units[u]) for u in sorted(units)])
        if units is not None
        else slice(None)
    )
    for layer in want.layers():
        np.testing.assert_array_equal(
            got.read(layer.model, layer.name)[rows], want.read(layer.model, layer.name)[rows]
        )
        np.testing.assert_array_equal(
            got.read_images(layer.model, layer.name)[0][rows],
            want.read_images(layer.model, layer.name)[0][rows],
        )


def unit_ids(keys) -> set[int]:
    return {int(k.rsplit("unit-", 1)[1].split(".")[0]) for k in keys}


@pytest.mark.timeout(240)
def test_kill_9_extraction_actor_mid_unit(cluster, world, reference, s3_uri, tmp_path):
    """The actor's process dies mid-run; Ray restarts it, the unit is retried, the features are unchanged."""
    from cluster import local

    store = open_store(s3_uri)
    log = tmp_path / "driver.log"
    proc = start_driver(write_config(tmp_path / "run.yaml", world, s3_uri), cluster, log)
    wait_for_markers(store, 1, proc, log)
    (actor,) = [a for a in local.actors(cluster.dashboard_url, "ExtractionActor") if a["state"] == "ALIVE"]
    pid = int(actor["pid"])
    assert pid in local._session_members(cluster.pids["worker"])  # a process of our worker node, nothing else
    done_at_kill = len(store.list(DONE))
    os.kill(pid, signal.SIGKILL)
    assert done_at_kill < N_UNITS, "the run finished before the kill"

    assert finish(proc, log) == 0, log.read_text()[-4000:]
    (after,) = [
        a
        for a in local.actors(cluster.dashboard_url, "ExtractionActor")
        if a["actor_id"] == actor["actor_id"]
    ]
    assert int(after["num_restarts"]) >= 1  # the same actor, restarted in a new process
    assert len(store.list(DONE)) == N_UNITS
    assert_units_equal(store, reference)
    assert read_run(store)["stages"]["extract"]["units_run"] == N_UNITS


@pytest.mark.timeout(300)
def test_driver_killed_mid_run_then_rerun_recomputes_nothing_finished(
    cluster, world, reference, s3_uri, tmp_path
):
    """kill -9 of the driver (coordinator): finished units survive, the rerun skips exactly them."""
    store = open_store(s3_uri)
    log = tmp_path / "driver.log"
    cfg = write_config(tmp_path / "run.yaml", world, s3_uri, stages=("extract", "decode"))
    proc = start_driver(cfg, cluster, log)
    wait_for_markers(store, 3, proc, log)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    wait_stable(store)  # Ray ends the dead driver's actor; a unit already inside it may still land
    before = markers(store)
    done = unit_ids(before)
    assert 3 <= len(done) < N_UNITS, f"{len(done)} units done when the driver was killed"
    assert_units_equal(store, reference, done)  # every unit marked done holds its full data
    # the killed attempt never closed its record; its driver is gone from this host, so it reads "lost"
    assert read_run(store)["attempts"][0]["status"] == "lost"

    proc = start_driver(cfg, cluster, log)
    assert finish(proc, log) == 0, log.read_text()[-4000:]
    doc = read_run(store)
    counts = doc["attempts"][-1]["stage_counts"]["extract"]
    assert (counts["units_skipped"], counts["units_run"]) == (len(done), N_UNITS - len(done))
    after = markers(store)
    assert {k: after[k] for k in before} == before  # finished units were not recomputed (markers untouched)
    assert len(after) == N_UNITS and doc["status"] == "complete"
    assert_units_equal(store, reference)
    got, want = FeatureStore(store).layers(), FeatureStore(reference).layers()
    assert read_results(store, got).equals(read_results(reference, want))


def wait_stable(store, quiet: float = 4.0) -> int:
    """Wait until no new marker appears for ``quiet`` seconds (a unit inside a dying actor may still land)."""
    stable_since, last = time.monotonic(), len(store.list(DONE))
    while time.monotonic() - stable_since < quiet:
        time.sleep(0.25)
        now = len(store.list(DONE))
        if now != last:
            stable_since, last = time.monotonic(), now
    return last


@pytest.mark.timeout(300)
def test_ray_job_stop_then_resubmit_resumes(cluster, world, reference, s3_uri, tmp_path):
    """`ray job stop` (SIGTERM to the driver) mid-run: the stop is recorded; `vsp submit` again completes."""
    from typer.testing import CliRunner

    from cluster import jobs_client
    from vsp.cli import app

    runner, address = CliRunner(), cluster.dashboard_url
    store = open_store(s3_uri)
    cfg = write_config(tmp_path / "run.yaml", world, s3_uri)
    sid = runner.invoke(app, ["submit", "--address", address, str(cfg)]).stdout.strip().splitlines()[-1]
    deadline = time.monotonic() + 150
    while len(store.list(DONE)) < 2:
        status = jobs_client.job_info(address, sid)["status"]
        assert status in ("PENDING", "RUNNING") and time.monotonic() < deadline, jobs_client.job_logs(
            address, sid
        )
        time.sleep(0.05)
    assert jobs_client.stop(address, sid)
    assert jobs_client.wait(address, sid, timeout=60) == "STOPPED"
    done = wait_stable(store)
    assert done < N_UNITS, "the job finished before it was stopped"
    attempt = read_run(store)["attempts"][-1]
    assert (attempt["status"], attempt["error"], attempt["submission_id"]) == (
        "failed",
        "stopped (SIGTERM)",
        sid,
    )
    assert_units_equal(store, reference, unit_ids(store.list(DONE)))

    res = runner.invoke(app, ["submit", "--address", address, str(cfg), "--follow"])
    assert res.exit_code == 0, res.output
    counts = read_run(store)["attempts"][-1]["stage_counts"]["extract"]
    assert (counts["units_skipped"], counts["units_run"]) == (done, N_UNITS - done)
    assert_units_equal(store, reference)


@pytest.mark.timeout(300)
def test_s3_outage_mid_run_retries_or_stops_cleanly(cluster, s3_server, world, reference, s3_uri, tmp_path):
    """S3 disappears for a few seconds mid-run: writes back off and succeed, or the run stops with an error
    naming the endpoint and a rerun completes. Either way no unit is marked done without its data."""
    store = open_store(s3_uri)
    log = tmp_path / "driver.log"
    cfg = write_config(tmp_path / "run.yaml", world, s3_uri)
    proc = start_driver(cfg, cluster, log)
    done_at_outage = wait_for_markers(store, 2, proc, log)
    s3_server.stop()
    t0 = time.monotonic()
    time.sleep(4)
    s3_server.start()
    print(f"S3 down for {time.monotonic() - t0:.1f} s after {done_at_outage} units")
    # no marker can land while S3 is down, so the outage overlapped the run
    assert done_at_outage < N_UNITS, "the run finished before the outage"

    rc = finish(proc, log)
    text = log.read_text()
    if rc != 0:
        # stopped: the error says what failed, and what is marked done is whole
        print("driver error:", *[ln for ln in text.splitlines() if "Error" in ln][-3:], sep="\n  ")
        last = text.strip().splitlines()[-1]
        assert last.startswith("error: ") and "rerun to resume" in last, text[-4000:]
        assert "Could not connect to the endpoint URL" in last or "EndpointConnectionError" in last, last
        done = unit_ids(store.list(DONE))
        assert_units_equal(store, reference, done)
        assert read_run(store)["status"] == "failed"
        proc = start_driver(cfg, cluster, log)
        assert finish(proc, log) == 0, log.read_text()[-4000:]
    print("outage ridden out by retries" if rc == 0 else f"run stopped (rc {rc}), rerun completed")
    assert len(store.list(DONE)) == N_UNITS and read_run(store)["status"] == "complete"
    assert_units_equal(store, reference)


@pytest.mark.timeout(180)
def test_other_configuration_on_same_prefix_is_refused(cluster, world, s3_uri, tmp_path):
    """A second run with another configuration is refused before it writes, by run.json and by the stage."""
    from jobs.runner import run_pipeline
    from vsp.config import load_run_config

    store = open_store(s3_uri)
    first = write_config(tmp_path / "a.yaml", world, s3_uri, unit_size=8)
    run_pipeline(load_run_config(first), no_ray=True)
    snapshot = {
        k: store.read_bytes(k)
        for k in store.list("")
        if k == RUN_JSON or k.startswith(("features/done", f"{RUNS}/"))
    }
    snapshot[MANIFEST] = store.read_bytes(MANIFEST)

    log = tmp_path / "driver.log"
    other = write_config(tmp_path / "b.yaml", world, s3_uri, unit_size=8, seed=1)
    assert finish(start_driver(other, cluster, log), log, 120) == 3
    text = log.read_text()
    assert "run.json holds a different run configuration (differs in: extract.seed)" in text
    assert "use a new store prefix" in text

    for key, data in snapshot.items():
        assert store.read_bytes(key) == data, f"{key} changed"  # run.json and the attempts' records too

    for key in [RUN_JSON, *store.list(RUNS)]:  # even without the run's record, the feature manifest refuses
        store.delete(key)
    log2 = tmp_path / "driver2.log"
    assert finish(start_driver(other, cluster, log2), log2, 120) == 3
    assert "holds a different extraction run (differs in: config.seed" in log2.read_text()
    assert not store.exists(RUN_JSON) and store.list(RUNS) == []  # the refused run left no record
    for key, data in snapshot.items():
        if key != RUN_JSON and not key.startswith(f"{RUNS}/"):
            assert store.read_bytes(key) == data, f"{key} changed"
