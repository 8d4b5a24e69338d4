"""A new stage is one module plus one registry line: the contract does the rest.

The test writes a toy stage (its own module, in a temporary folder) and a driver that adds one line to
``vsp.pipeline.STAGES`` before calling the `vsp` command, then checks what the contract promises: it runs
under `vsp run` (in the process and on Ray), shows in `vsp status`, resumes after the driver is killed, is
refused on a changed configuration, and its outputs are listed in the report. No file of the project is
edited.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

TOY_STAGE = '''
"""A toy stage: unit i writes i * scale to toy/units/u<i>/value.txt."""
import time
from dataclasses import dataclass

from vsp.config import setting
from vsp.io.bookkeeping import write_output
from vsp.stage import Stage, Unit


@dataclass(frozen=True)
class ToyConfig:
    units: int = setting(4, minimum=1)
    scale: float = setting(2.0)
    pause: float = setting(0.0, identity=False, minimum=0)  # tuning: seconds per unit


class ToyStage(Stage):
    name = "toy"
    root = "toy"
    Config = ToyConfig
    unit_word = "squares"

    def plan(self, ctx, config):
        return [Unit(f"u{i:02d}", i) for i in range(config.units)]

    def run_unit(self, store, config, unit):
        time.sleep(config.pause)
        value = f"{unit.args * config.scale}\\n".encode()
        return [write_output(store, self.data_key(unit.key, "value.txt"), value)]
'''

DRIVER = """
import sys

import vsp.pipeline

vsp.pipeline.STAGES.insert(-1, ("toy", "toy_stage:ToyStage"))  # the one registry line (before the report)

from vsp.cli import main

sys.argv[0] = "vsp"
main()
"""


@pytest.fixture
def toy(tmp_path):
    (tmp_path / "toy_stage.py").write_text(TOY_STAGE)
    (tmp_path / "driver.py").write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}

    def config(name: str, **toy: object) -> Path:
        store = tmp_path / name
        doc = {
            "store": str(store),
            "stages": ["toy", "report"],
            "toy": toy,
            "report": {"explain_images": 0},
        }
        path = tmp_path / f"{name}-{len(list(tmp_path.glob(name + '-*.json')))}.json"
        path.write_text(json.dumps(doc))
        return path

    def vsp(*args: str, **kw: object) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(tmp_path / "driver.py"), *args],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300, **kw,
        )  # fmt: skip

    def start(*args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, str(tmp_path / "driver.py"), *args],
            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip

    return tmp_path, config, vsp, start


def markers(store: Path) -> list[str]:
    return sorted(p.stem for p in (store / "toy" / "done").glob("*.json")) if (store / "toy").exists() else []


def last_counts(store: Path) -> dict:
    doc = json.loads((store / "run.json").read_text())
    return doc["attempts"][-1]["stage_counts"]["toy"]


def test_toy_stage_runs_resumes_after_a_kill_shows_in_status_and_report(toy):
    tmp, config, vsp, start = toy
    store = tmp / "store"
    slow = config("store", units=6, pause=1.0)
    proc = start("run", str(slow), "--no-ray")
    try:
        deadline = time.monotonic() + 120
        while len(markers(store)) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        proc.send_signal(signal.SIGKILL)  # no handler runs: what is on the store is all that is left
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    finished = markers(store)
    assert 2 <= len(finished) < 6
    for key in finished:  # a marker is written after its data
        assert (store / "toy" / "units" / key / "value.txt").exists()

    status = vsp("status", "--store", str(store))
    assert "toy" in status.stdout and "squares" in status.stdout and "pipeline not complete" in status.stdout

    fast = config("store", units=6, pause=0.0)  # a tuning setting may change between runs
    res = vsp("run", str(fast), "--no-ray")
    assert res.returncode == 0, res.stdout + res.stderr
    counts = last_counts(store)
    assert counts["units_skipped"] == len(finished) and counts["units_run"] == 6 - len(finished)
    assert [(store / "toy" / "units" / f"u{i:02d}" / "value.txt").read_text() for i in range(6)] == [
        f"{i * 2.0}\n" for i in range(6)
    ]
    status = vsp("status", "--store", str(store))
    assert status.returncode == 0, status.stdout + status.stderr
    line = next(x for x in status.stdout.splitlines() if x.strip().startswith("toy"))
    assert "6/6 squares done" in line and "complete" in line

    report = (store / "report.html").read_text()
    assert "6 unit files under toy/units/" in report  # the report's outputs table, one row per stage
    listed = (store / "report_tables" / "outputs.csv").read_text().splitlines()
    assert [x for x in listed if x.startswith("toy,")] == [
        f"toy,toy/units/u{i:02d}/value.txt" for i in range(6)
    ]

    changed = config("store", units=6, scale=3.0)  # an identity setting: refused, nothing overwritten
    res = vsp("run", str(changed), "--no-ray")
    assert res.returncode == 3, res.stdout + res.stderr
    assert "toy.scale" in res.stderr and "Traceback" not in res.stderr
    assert (store / "toy" / "units" / "u01" / "value.txt").read_text() == "2.0\n"


def test_toy_stage_refuses_a_bad_setting_naming_its_key(toy):
    tmp, config, vsp, _ = toy
    res = vsp("run", str(config("bad", units=0)), "--no-ray")
    assert res.returncode == 2 and "toy.units" in res.stderr, res.stderr
    assert not (tmp / "bad" / "toy").exists()


@pytest.mark.slow
def test_toy_stage_fans_out_on_ray(toy):
    tmp, config, vsp, _ = toy
    store = tmp / "ray-store"
    res = vsp("run", str(config("ray-store", units=5)))
    assert res.returncode == 0, res.stdout + res.stderr
    assert markers(store) == [f"u{i:02d}" for i in range(5)]
    assert last_counts(store)["units_run"] == 5
    doc = json.loads((store / "toy" / "done" / "u03.json").read_text())
    assert doc["outputs"][0]["key"] == "toy/units/u03/value.txt"
    assert textwrap.dedent((store / "toy" / "units" / "u03" / "value.txt").read_text()) == "6.0\n"
