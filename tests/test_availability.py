"""Drivers and run records under stress: `ray job stop` mid-wait, no-op reruns, concurrent, refused runs."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from vsp.cli import app
from vsp.config import RunConfig
from vsp.data.synthetic import generate_world
from vsp.io.store import open_store
from vsp.runrecord import (
    LEGACY,
    RUN_JSON,
    RUNS,
    RunRecord,
    attempt_key,
    format_progress,
    read_run,
    store_progress,
)

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate_world(tmp_path_factory.mktemp("world"), n_concepts=4, images_per_concept=1, seed=0)


def write_config(path: Path, world, store: str, stages=("extract",), **extract) -> Path:
    doc = {
        "images": str(world.images_root),
        "store": store,
        "norms": {"path": str(world.norms_path), "min_concepts": 2},
        "stages": list(stages),
        "extract": {"models": ["alexnet"], "weights": "random", "unit_size": 2, **extract},
        "decode": {"folds": 2},
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def small_config(tmp_path: Path, **extract) -> RunConfig:
    return RunConfig.from_dict(
        {"images": str(tmp_path / "img"), "store": str(tmp_path / "store"), "stages": ["extract"],
         "extract": {"models": ["alexnet"], "weights": "random", **extract}}
    )  # fmt: skip


def driver_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "VSP_RUN_CONFIG")}


def dead_pid() -> int:
    """The pid of a process that has exited (and was reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# --- `ray job stop` (SIGTERM) while the driver waits on Ray ----------------------------------------------

# The job's driver (jobs.runner.main, embedded Ray) with an extraction actor whose unit never ends.
SLOW_DRIVER = """
import os, sys, time
import ray
import cluster.extract

@ray.remote(max_restarts=0)
class NeverEndingActor:
    def __init__(self, *args, **kwargs):
        pass

    def process(self, *args, **kwargs):
        open(os.environ["VSP_TEST_STARTED"], "w").close()
        time.sleep(3600)

    decode_and_process = process

cluster.extract.ExtractionActor = NeverEndingActor
from jobs.runner import main
sys.exit(main(None, sys.argv[1:]))
"""


@pytest.mark.timeout(300)
def test_sigterm_while_the_driver_waits_on_a_long_unit_is_recorded(tmp_path, world):
    """SIGTERM (what `ray job stop` sends) reaches a driver blocked on Ray; run.json records the stop."""
    store = tmp_path / "store"
    cfg = write_config(tmp_path / "run.yaml", world, str(store))
    started = tmp_path / "unit-started"
    log = tmp_path / "driver.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", SLOW_DRIVER, str(cfg)], cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            env=driver_env() | {"VSP_TEST_STARTED": str(started)},
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while not started.exists():
            assert proc.poll() is None, log.read_text()[-4000:]
            assert time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(0.1)
        time.sleep(1.0)  # well inside the wait for the unit
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert rc == 143, text[-4000:]
    assert time.monotonic() - t0 < 20
    assert "stopped: SIGTERM received; finished units are kept, rerun to resume" in text
    doc = read_run(open_store(store))
    attempt = doc["attempts"][-1]
    assert (attempt["status"], attempt["error"]) == ("failed", "stopped (SIGTERM)")
    assert doc["status"] == "failed" and doc["stages"]["extract"]["status"] == "failed"
    assert open_store(store).read_json(RUN_JSON)["attempts"][-1]["status"] == "failed"  # the view too


# --- a rerun with nothing to do does not start Ray --------------------------------------------------------


@pytest.fixture
def no_ray(monkeypatch):
    """Any attempt to start or use Ray fails the test."""
    import ray

    import cluster.runtime

    def refuse(*args, **kwargs):
        raise AssertionError("Ray was started for a run with nothing to do")

    monkeypatch.setattr(cluster.runtime, "init_ray", refuse)
    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.setattr(ray, "cluster_resources", refuse)


def test_vsp_run_rerun_of_a_finished_pipeline_never_starts_ray(tmp_path, world, monkeypatch, caplog):
    from tests.test_jobs import write_full_config

    store = tmp_path / "store"
    cfg = write_full_config(tmp_path / "run.yaml", world, str(store))
    first = runner.invoke(app, ["run", str(cfg), "--no-ray"])
    assert first.exit_code == 0, first.output

    import ray

    import cluster.runtime

    def refuse(*args, **kwargs):
        raise AssertionError("Ray was started for a run with nothing to do")

    monkeypatch.setattr(cluster.runtime, "init_ray", refuse)
    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.setattr(ray, "cluster_resources", refuse)
    caplog.set_level("INFO")
    again = runner.invoke(app, ["run", str(cfg)])  # the Ray path: every stage finds its work done
    assert again.exit_code == 0, again.output
    assert "pipeline complete" in again.stdout
    counts = read_run(open_store(store))["attempts"][1]["stage_counts"]
    for stage in ("extract", "decode", "meta", "map", "similarity"):
        assert "nothing to do" in counts[stage]["summary"], (stage, counts[stage])
    assert any("ray: not started" in r.getMessage() for r in caplog.records)


def test_cli_stage_commands_rerun_without_starting_ray(tmp_path, world, no_ray):
    store = str(tmp_path / "store")
    args = ["extract", "--images", str(world.images_root), "--store", store, "--models", "alexnet",
            "--weights", "random", "--unit-size", "2"]  # fmt: skip
    first = runner.invoke(app, [*args, "--no-ray"])
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, args)  # Ray path, nothing pending
    assert again.exit_code == 0, again.output
    assert "extract: nothing to do" in again.stdout
    dec = ["decode", "--store", store, "--norms", str(world.norms_path), "--folds", "2",
           "--min-concepts", "2"]  # fmt: skip
    first = runner.invoke(app, [*dec, "--no-ray"])
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, dec)
    assert again.exit_code == 0, again.output
    assert "decode: nothing to do" in again.stdout


# --- run.json under concurrent and refused runs ----------------------------------------------------------


def test_two_interleaved_attempts_both_end_recorded(tmp_path):
    """Two drivers on one prefix, each step of one between the other's: neither loses the other's record."""
    store = open_store(tmp_path / "store")
    cfg = small_config(tmp_path)
    a = RunRecord.begin(store, cfg)
    b = RunRecord.begin(store, cfg)  # read run.json with a running: the old code appended beside it
    a.stage_started("extract")  # the old code rewrote run.json from a's own copy: b's attempt vanished
    b.stage_started("extract")
    a.stage_finished("extract", 1.0, {"units_run": 2})
    a.finish()
    b.stage_finished("extract", 2.0, {"units_run": 0})
    b.finish(error="RuntimeError: boom")
    for doc in (read_run(store), store.read_json(RUN_JSON)):  # the merged records and run.json itself
        att = doc["attempts"]
        assert [x["attempt"] for x in att] == [1, 2] and len({x["id"] for x in att}) == 2
        assert [(x["status"], x["error"]) for x in att] == [
            ("complete", None),
            ("failed", "RuntimeError: boom"),
        ]
        assert [x["stage_counts"]["extract"]["units_run"] for x in att] == [2, 0]
        assert doc["status"] == "failed" and doc["error"] == "RuntimeError: boom"  # the latest attempt
        assert doc["stages"]["extract"]["attempt"] == 2 and doc["identity"] == cfg.identity()
    assert sorted(store.list(RUNS)) == sorted([attempt_key(a.attempt["id"]), attempt_key(b.attempt["id"])])


def test_concurrent_driver_threads_keep_every_attempt(tmp_path):
    store = open_store(tmp_path / "store")
    cfg = small_config(tmp_path)
    errors: list[BaseException] = []
    start = threading.Barrier(3)

    def driver(i: int) -> None:
        try:
            start.wait()
            rec = RunRecord.begin(store, cfg)
            for k in range(5):
                rec.stage_started("extract")
                rec.stage_finished("extract", 0.01, {"units_run": i, "round": k})
            rec.finish()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=driver, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    for doc in (read_run(store), store.read_json(RUN_JSON)):
        assert [x["status"] for x in doc["attempts"]] == ["complete"] * 3
        assert sorted(x["stage_counts"]["extract"]["units_run"] for x in doc["attempts"]) == [0, 1, 2]
        assert doc["status"] == "complete"


def test_a_run_refused_by_a_stage_manifest_leaves_no_run_json(tmp_path, world):
    store_dir = tmp_path / "store"
    store = open_store(store_dir)
    first = write_config(tmp_path / "a.yaml", world, str(store_dir))
    assert runner.invoke(app, ["run", str(first), "--no-ray"]).exit_code == 0
    for key in [RUN_JSON, *store.list(RUNS)]:  # the run's record is gone; the features' manifest remains
        store.delete(key)
    other = write_config(tmp_path / "b.yaml", world, str(store_dir), seed=1)
    res = runner.invoke(app, ["run", str(other), "--no-ray"])
    assert res.exit_code == 3, res.output
    assert "holds a different extraction run" in res.output
    assert not store.exists(RUN_JSON) and store.list(RUNS) == []


def test_a_refused_run_writes_nothing(tmp_path, world):
    store_dir = tmp_path / "store"
    store = open_store(store_dir)
    first = write_config(tmp_path / "a.yaml", world, str(store_dir))
    assert runner.invoke(app, ["run", str(first), "--no-ray"]).exit_code == 0
    before = {k: store.read_bytes(k) for k in [RUN_JSON, *store.list(RUNS)]}
    other = write_config(tmp_path / "b.yaml", world, str(store_dir), seed=1)
    res = runner.invoke(app, ["run", str(other), "--no-ray"])
    assert (
        res.exit_code == 3 and "holds a different run configuration (differs in: extract.seed)" in res.output
    )
    assert {k: store.read_bytes(k) for k in [RUN_JSON, *store.list(RUNS)]} == before

    # refused by the feature manifest after run.json accepted it (run.json never bound extract)
    doc = store.read_json(RUN_JSON)
    (aid,) = [a["id"] for a in doc["attempts"]]
    rec = store.read_json(attempt_key(aid))
    rec["identity"] = {}
    store.write_json(attempt_key(aid), rec)
    store.write_json(RUN_JSON, doc | {"identity": {}})
    before = {k: store.read_bytes(k) for k in [RUN_JSON, *store.list(RUNS)]}
    res = runner.invoke(app, ["run", str(other), "--no-ray"])
    assert res.exit_code == 3 and "holds a different extraction run" in res.output
    assert {k: store.read_bytes(k) for k in [RUN_JSON, *store.list(RUNS)]} == before


# --- attempts whose driver is gone ------------------------------------------------------------------------


def test_a_running_attempt_whose_driver_died_reads_lost(tmp_path):
    store = open_store(tmp_path / "store")
    cfg = small_config(tmp_path)
    rec = RunRecord.begin(store, cfg)
    rec.stage_started("extract")
    own = store.read_json(rec.key)
    assert read_run(store)["attempts"][0]["status"] == "running"  # this process: alive
    store.write_json(rec.key, own | {"pid": dead_pid()})  # as if its driver had been killed
    doc = read_run(store)
    assert doc["attempts"][0]["status"] == "lost" and doc["status"] == "lost"
    assert doc["stages"]["extract"]["status"] == "lost"
    text = format_progress(store_progress(store))
    assert "run lost (attempt 1" in text and "attempt 1 lost: its driver (host" in text, text
    store.write_json(rec.key, own | {"pid_start": -1})  # the pid now belongs to another process
    assert read_run(store)["attempts"][0]["status"] == "lost"
    store.write_json(rec.key, own | {"host": "another-host", "pid": dead_pid()})  # unknowable from here
    assert read_run(store)["attempts"][0]["status"] == "running"
    assert "attempt 1 running since" in format_progress(store_progress(store))
    store.write_json(rec.key, own)
    rec.finish()
    assert read_run(store)["status"] == "complete"


def old_format_doc(tmp_path: Path, pid: int, host: str) -> dict:
    cfg = small_config(tmp_path)
    return {
        "format": 1, "created": "2026-01-01T00:00:00Z", "identity": cfg.identity(), "config": cfg.to_dict(),
        "stages": {"extract": {"status": "running", "attempt": 2, "started": "2026-01-01T00:01:00Z"}},
        "attempts": [
            {"attempt": 1, "started": "2026-01-01T00:00:00Z", "finished": "2026-01-01T00:00:30Z",
             "status": "failed", "error": "boom", "stages": ["extract"], "host": host, "pid": 1},
            {"attempt": 2, "started": "2026-01-01T00:01:00Z", "finished": None, "status": "running",
             "stages": ["extract"], "host": host, "pid": pid, "submission_id": None},
        ],
        "versions": {"vsp": "0.1.0"}, "git_commit": "abc123", "status": "running",
        "started": "2026-01-01T00:01:00Z", "finished": None, "error": None,
    }  # fmt: skip


def test_stores_of_the_old_format_read_and_resume(tmp_path):
    from vsp.errors import ConfigMismatchError

    store = open_store(tmp_path / "store")
    old = old_format_doc(tmp_path, dead_pid(), socket.gethostname())
    store.write_json(RUN_JSON, old)
    doc = read_run(store)
    assert [a["status"] for a in doc["attempts"]] == ["failed", "lost"] and doc["status"] == "lost"
    assert doc["stages"]["extract"]["status"] == "lost"
    status = runner.invoke(app, ["status", "--store", str(tmp_path / "store")])
    assert status.exit_code == 0 and "run lost (attempt 2" in status.stdout, status.output
    store.write_json(RUN_JSON, old_format_doc(tmp_path, 1, "another-host"))
    assert read_run(store)["status"] == "running"  # another host's driver: cannot tell

    rec = RunRecord.begin(store, small_config(tmp_path, batch_size=4))  # a new attempt on the old store
    rec.finish()
    doc = read_run(store)
    assert [a["attempt"] for a in doc["attempts"]] == [1, 2, 3]
    assert [a["status"] for a in doc["attempts"]] == ["failed", "running", "complete"]
    assert doc["status"] == "complete" and doc["format"] == 2 and store.exists(LEGACY)
    assert store.read_json(RUN_JSON)["attempts"] == doc["attempts"]
    assert json.dumps(store.read_json(LEGACY), sort_keys=True) == json.dumps(
        old_format_doc(tmp_path, 1, "another-host"), sort_keys=True
    )
    from vsp.extract.features import MANIFEST

    store.write_json(MANIFEST, {"identity": {"layers": []}, "units": [[0, 1]]})  # extract left results
    with pytest.raises(ConfigMismatchError):  # the old record still binds the prefix (identity kept)
        RunRecord.begin(store, small_config(tmp_path, seed=3))
