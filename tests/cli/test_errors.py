"""Hostile or broken inputs at the CLI: one line that names the cause for each failure, and its exit code.

The S3 cases run against the real SeaweedFS server of tests/s3server.py: a closed loopback port for "server
down", a bucket that does not exist, a wrong secret key, an unknown access key id, and no credentials at all.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vsp.cli import app
from vsp.cli.errors import (
    EXIT_CODES,
    EXIT_INPUT,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_MISMATCH,
    EXIT_STORAGE,
    describe,
)

runner = CliRunner()
VSP = str(Path(sys.executable).parent / "vsp")


def one_line_error(res, code: int, *words: str) -> str:
    """Assert exit ``code`` and one ``error:`` line on stderr (no traceback) that holds every word."""
    assert res.exit_code == code, (res.exit_code, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def test_exit_codes_are_documented_in_one_place():
    assert sorted(EXIT_CODES) == [0, 1, 2, 3, 4, 130]
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0 and "Exit codes" in res.stdout


# ----------------------------------------------------------------------------------------- bad options


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["extract", "--images", "IMG", "--batch-size", "0"], ["--batch-size", ">= 1", "got 0"]),
        (["extract", "--images", "IMG", "--batch-size", "-1"], ["--batch-size", "got -1"]),
        (["extract", "--images", "IMG", "--unit-size", "0"], ["--unit-size", "got 0"]),
        (["extract", "--images", "IMG", "--seed", str(2**64)], ["--seed", f"to {2**63 - 1}"]),
        (["extract", "--images", "IMG", "--seed", "-1"], ["--seed", "from 0"]),
        (["extract", "--images", "IMG", "--batch-size", "x"], ["--batch-size", "or auto", "got 'x'"]),
        (["extract", "--images", "IMG", "--weights", "IMG/gone/dir/w.pt"], ["--weights", "no such file"]),
        (["decode", "--norms", "N", "--folds", "1"], ["--folds", ">= 2"]),
        (["decode", "--norms", "N", "--seed", str(2**32)], ["--seed", f"to {2**32 - 1}"]),
        (["decode", "--norms", "N", "--C", "0"], ["--C", "> 0"]),
        (["decode", "--norms", "N", "--C", "nan"], ["--C", "must be a number"]),
        (["meta", "--dim", "0"], ["--dim", ">= 1"]),
        (["meta", "--seed", str(2**32)], ["--seed"]),
        (["map", "--norms", "N", "--inner-folds", "1"], ["--inner-folds", ">= 2"]),
        (["map", "--norms", "N", "--mlp-lr", "0.1,fast"], ["--mlp-lr", "numbers", "fast"]),
        (["map", "--norms", "N", "--ridge-alphas", "0"], ["--ridge-alphas", "> 0"]),
        (["map", "--norms", "N", "--candidates", "train"], ["--candidates", "all, test"]),
        (["map", "--norms", "N", "--repeats", "0"], ["--repeats", ">= 1"]),
        (["explain", "img.jpg", "--top", "0"], ["--top", ">= 1"]),
        (["explain", "img.jpg", "--alpha", "lots"], ["--alpha", "'lots'"]),
        (["report", "--top", "0"], ["--top", ">= 1"]),
        (["report", "--device", "tpu"], ["--device", "cpu, cuda"]),
        (["norms", "--norms", "N", "--min-concepts", "0"], ["--min-concepts", ">= 1"]),
    ],
)
def test_bad_options_are_one_line_and_create_nothing(tmp_path, args, words):
    store = tmp_path / "store"
    argv = [a.replace("IMG", str(tmp_path)) for a in args]
    if argv[0] != "norms":
        argv += ["--store", str(store)]
    res = runner.invoke(app, argv)
    one_line_error(res, EXIT_INPUT, *words)
    assert not store.exists() and not (tmp_path / "gone").exists()


def test_bad_option_through_the_console_script_prints_no_traceback(tmp_path):
    proc = subprocess.run(
        [VSP, "extract", "--images", str(tmp_path), "--store", str(tmp_path / "s"), "--batch-size", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == EXIT_INPUT, proc.stderr
    assert proc.stderr.strip().splitlines() == ["error: --batch-size: must be an integer >= 1, got 0"]


# ------------------------------------------------------------------------------------- local stores


def test_store_that_is_a_file_is_one_line(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    for store in (f, f / "sub"):
        res = runner.invoke(
            app, ["extract", "--images", str(tmp_path), "--store", str(store), "--weights", "random"]
        )
        one_line_error(res, EXIT_INPUT, str(store), "file")
    res = runner.invoke(app, ["status", "--store", str(f)])
    one_line_error(res, EXIT_INPUT, "is a file")


def test_read_only_commands_create_no_folders(tmp_path):
    missing = tmp_path / "no" / "store"
    res = runner.invoke(app, ["status", "--store", str(missing)])
    one_line_error(res, EXIT_INPUT, str(missing), "no such store folder")
    res = runner.invoke(app, ["report", "--store", str(missing), "--out", str(tmp_path / "r" / "x.html")])
    one_line_error(res, EXIT_INPUT, "no such store folder")
    for cmd in (["decode", "--norms", "n.dat"], ["similarity"], ["map", "--norms", "n.dat"]):
        res = runner.invoke(app, [*cmd, "--store", str(missing)])
        assert res.exit_code == EXIT_INPUT, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    # an existing, empty store: status reads it, and report adds only its own marker and the run record
    # (run.json and its attempt, as every stage run through jobs.runner does), no stage folders
    empty = tmp_path / "empty"
    empty.mkdir()
    assert runner.invoke(app, ["status", "--store", str(empty)]).exit_code == 0
    assert list(empty.iterdir()) == []
    res = runner.invoke(app, ["report", "--store", str(empty), "--out", str(tmp_path / "r.html")])
    assert res.exit_code == 0, res.output
    written = sorted(p.relative_to(empty).as_posix() for p in empty.rglob("*"))
    attempts = [p for p in written if p.startswith("runs/")]
    assert len(attempts) == 1 and attempts[0].endswith(".json")
    assert written == ["report", "report/done.json", "run.json", "runs", *attempts]


def test_missing_norms_file_is_one_line(tmp_path):
    res = runner.invoke(app, ["norms", "--norms", str(tmp_path / "gone.dat")])
    one_line_error(res, EXIT_INPUT, "gone.dat", "no such file")


def test_duplicate_key_in_a_run_file_is_one_line(tmp_path):
    run = tmp_path / "run.yaml"
    run.write_text(f"store: {tmp_path / 's'}\nimages: {tmp_path}\nstages: [extract]\nstages: [decode]\n")
    res = runner.invoke(app, ["run", str(run)])
    one_line_error(res, EXIT_INPUT, "run.yaml line 4", "'stages' appears twice")


# ---------------------------------------------------------------------- interrupts and internal errors


def _raise(exc):
    def boom(*args, **kwargs):
        raise exc

    return boom


def test_interrupt_exits_130_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr("vsp.data.norms.load_cslb", _raise(KeyboardInterrupt()))
    res = runner.invoke(app, ["norms", "--norms", str(tmp_path / "n.dat")])
    one_line_error(res, EXIT_INTERRUPTED, "interrupted", "rerun")


def test_internal_error_is_one_line_and_v_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.setattr("vsp.data.norms.load_cslb", _raise(ZeroDivisionError("boom")))
    res = runner.invoke(app, ["norms", "--norms", str(tmp_path / "n.dat")])
    one_line_error(res, EXIT_INTERNAL, "internal error: ZeroDivisionError: boom", "rerun with -v")
    res = runner.invoke(app, ["-v", "norms", "--norms", str(tmp_path / "n.dat")])
    assert res.exit_code == EXIT_INTERNAL and "Traceback" in res.stderr
    assert res.stderr.rstrip().splitlines()[-1] == "error: internal error: ZeroDivisionError: boom"


def test_config_mismatch_is_exit_3():
    from vsp.errors import ConfigMismatchError

    assert describe(RuntimeError("outer"))[0] == EXIT_INTERNAL
    try:
        try:
            raise ConfigMismatchError("s3://b/p holds config.seed 0, this run has 1")
        except ConfigMismatchError as inner:
            raise RuntimeError("stage failed") from inner
    except RuntimeError as exc:
        assert describe(exc) == (EXIT_MISMATCH, "s3://b/p holds config.seed 0, this run has 1")


def test_errors_from_ray_workers_are_named_by_the_worker_exception():
    ray_exceptions = pytest.importorskip("ray.exceptions")
    from vsp.errors import VspInputError

    cause = VspInputError("unit 3 (cat): no readable image")
    remote = ray_exceptions.RayTaskError("run_unit", "Traceback (most recent call last):\n  ...", cause)
    err = remote.as_instanceof_cause()  # what ray.get raises: its text is the remote call, on lines
    assert isinstance(err, VspInputError) and "\n" in str(err)
    assert describe(err) == (EXIT_INPUT, "unit 3 (cat): no readable image")


# --------------------------------------------------------------------------------------------- S3


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3_case(request, s3_uri, monkeypatch, tmp_path):
    """(uri, words the error must hold) for one broken S3 set-up on the real server."""
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    case = request.param
    if case == "down":
        port = _closed_port()
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
        return s3_uri, ["cannot reach the S3 endpoint", f"127.0.0.1:{port}"]
    if case == "missing-bucket":
        bucket = f"vsp-missing-{uuid.uuid4().hex[:8]}"
        return f"s3://{bucket}/run", ["bucket", bucket, "does not exist"]
    if case == "wrong-secret":
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-key-0123456789")
        return s3_uri, ["SignatureDoesNotMatch", "AWS_SECRET_ACCESS_KEY"]
    if case == "unknown-key-id":
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nosuchaccesskeyid")
        return s3_uri, ["InvalidAccessKeyId", "AWS_ACCESS_KEY_ID"]
    assert case == "no-credentials"
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"):
        empty = tmp_path / name.lower()
        empty.write_text("")
        monkeypatch.setenv(name, str(empty))
    return s3_uri, ["no AWS credentials", "AWS_ACCESS_KEY_ID"]


S3_CASES = ["down", "missing-bucket", "wrong-secret", "unknown-key-id", "no-credentials"]


@pytest.mark.parametrize("s3_case", S3_CASES, indirect=True)
def test_s3_failures_are_one_line_exit_4(s3_case, tmp_path):
    uri, words = s3_case
    run = tmp_path / "run.yaml"
    run.write_text(json.dumps({"store": uri, "images": str(tmp_path), "stages": ["extract"],
                               "extract": {"models": ["alexnet"], "weights": "random"}}))  # fmt: skip
    commands = {
        "extract": ["extract", "--images", str(tmp_path), "--store", uri, "--weights", "random"],
        "run": ["run", str(run), "--no-ray"],
        "images validate": ["images", "validate", "--images", uri],  # fails in the listing, not a preflight
        "status": ["status", "--store", uri],
    }
    for name, argv in commands.items():
        res = runner.invoke(app, argv)
        line = one_line_error(res, EXIT_STORAGE, *words)
        assert "not-the-secret-key" not in res.output, (name, line)  # secrets are never printed


@pytest.mark.parametrize("s3_case", ["down", "wrong-secret"], indirect=True)
def test_s3_failure_through_the_console_script(s3_case, tmp_path):
    import os

    uri, words = s3_case
    proc = subprocess.run(
        [VSP, "extract", "--images", str(tmp_path), "--store", uri, "--weights", "random"],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
    )
    assert proc.returncode == EXIT_STORAGE, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and all(w in lines[0] for w in words), proc.stderr


def test_s3fs_wrapped_errors_are_named_by_their_cause(s3_server, s3_uri, monkeypatch):
    """s3fs turns a ClientError into PermissionError / FileNotFoundError; the cause still names it."""
    import s3fs

    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    env = s3_server.env()
    bad = s3fs.S3FileSystem(
        key=env["AWS_ACCESS_KEY_ID"],
        secret="not-the-secret-key-0123456789",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        skip_instance_cache=True,
        config_kwargs={"retries": {"total_max_attempts": 1}},
    )
    bucket = s3_uri[len("s3://") :].split("/", 1)[0]
    with pytest.raises(OSError) as err:
        bad.ls(bucket, refresh=True)
    code, msg = describe(err.value)
    assert code == EXIT_STORAGE and "SignatureDoesNotMatch" in msg, msg
    good = s3fs.S3FileSystem(
        key=env["AWS_ACCESS_KEY_ID"],
        secret=env["AWS_SECRET_ACCESS_KEY"],
        endpoint_url=env["AWS_ENDPOINT_URL"],
        skip_instance_cache=True,
    )
    missing = f"vsp-missing-{uuid.uuid4().hex[:8]}"
    with pytest.raises(FileNotFoundError) as err:
        good.ls(missing, refresh=True)
    code, msg = describe(err.value)
    assert code == EXIT_STORAGE and "does not exist" in msg, msg
