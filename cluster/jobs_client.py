"""Submit and follow pipeline runs on a Ray cluster through the Ray Jobs API (the head's dashboard, :8265).

A submission runs ``python -m jobs.pipeline`` on the head node as the run's driver. Its runtime environment:

- ``working_dir``: an allowlist of this project folder, copied into a temporary staging folder that is
  uploaded and then deleted: the packages ``vsp/``, ``cluster/`` and ``jobs/`` (their Python sources and the
  package data pyproject.toml declares, nothing whose name starts with a dot) and ``pyproject.toml``, so the
  cluster runs exactly the code that was submitted and nothing else in the folder (``.env``, ``.netrc``,
  ``*.pem``, ``.aws/``, data, outputs) ever travels; or, with ``working_dir=False``, the vsp installed in the
  cluster's image (``infra/Dockerfile``); ``pip`` adds packages on top of either;
- ``env_vars``: the normalised run configuration (``VSP_RUN_CONFIG``, JSON, no secrets), the submitting
  checkout's git commit (``VSP_GIT_COMMIT``) and the submission id (``VSP_SUBMISSION_ID``), both recorded in
  run.json.

S3 credentials are never shipped: cluster nodes take them from their own AWS chain (instance role, Kubernetes
service account or secret, the local cluster's environment).

Every request carries the cluster's Ray auth token when this environment names one (``$RAY_AUTH_TOKEN``,
the file in ``$RAY_AUTH_TOKEN_PATH``, or ``~/.ray/auth_token`` with ``RAY_AUTH_MODE=token``; see
``cluster.auth``): ``eval "$(python -m cluster.local env)"`` sets it up for the local dev cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import string
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ray.job_submission import JobStatus, JobSubmissionClient

from cluster import auth
from vsp.config import ENV_VAR, RunConfig
from vsp.runrecord import git_commit

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# What a job's working_dir holds, and nothing else: these packages and files of the project root ...
SHIPPED_PACKAGES = ("vsp", "cluster", "jobs")
SHIPPED_FILES = ("pyproject.toml",)
# ... and inside the packages only these kinds of file (sources, and the package data of pyproject.toml)
SHIPPED_SUFFIXES = (".py", ".yaml", ".sh")
TERMINAL = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}


def client(address: str) -> JobSubmissionClient:
    """A Jobs API client for ``http://HEAD:8265`` that sends the Ray auth token this environment names."""
    return JobSubmissionClient(address, headers=auth.auth_headers() or None)


def _shipped(rel: Path) -> bool:
    return rel.suffix in SHIPPED_SUFFIXES and not any(
        part.startswith(".") or part == "__pycache__" for part in rel.parts
    )


def shipped_files(root: str | os.PathLike[str] | None = None) -> list[str]:
    """The files (relative paths) of ``root`` (default: PROJECT_ROOT) a submission ships: the allowlist."""
    root = Path(PROJECT_ROOT if root is None else root)
    out = [name for name in SHIPPED_FILES if (root / name).is_file() and not (root / name).is_symlink()]
    for pkg in SHIPPED_PACKAGES:
        base = root / pkg
        if not base.is_dir() or base.is_symlink():
            continue
        for dirpath, dirnames, filenames in os.walk(base):  # does not follow symlinked folders
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__pycache__")
            for name in sorted(filenames):
                path = Path(dirpath) / name
                rel = path.relative_to(root)
                if _shipped(rel) and path.is_file() and not path.is_symlink():
                    out.append(rel.as_posix())
    return out


def stage_project(dest: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> Path:
    """Copy the shipped files of ``root`` (default: PROJECT_ROOT) into the folder ``dest``; returns it."""
    dest, root = Path(dest), Path(PROJECT_ROOT if root is None else root)
    dest.mkdir(parents=True, exist_ok=True)
    for rel in shipped_files(root):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, dest / rel)
    return dest


@contextlib.contextmanager
def staged_project(root: str | os.PathLike[str] | None = None) -> Iterator[Path]:
    """A temporary folder holding :func:`stage_project` of ``root``, deleted afterwards."""
    with tempfile.TemporaryDirectory(prefix="vsp-submit-") as tmp:
        yield stage_project(Path(tmp) / "vsp", root)


def entrypoint(stages: Sequence[str] | None = None) -> str:
    """The job's command: the whole pipeline, reading its configuration from $VSP_RUN_CONFIG."""
    cmd = "python -m jobs.pipeline"
    return f"{cmd} --stages {','.join(stages)}" if stages else cmd


def new_submission_id() -> str:
    """A submission id in Ray's own format (chosen here, so the driver can record it in run.json)."""
    alphabet = string.ascii_letters + string.digits
    return "raysubmit_" + "".join(secrets.choice(alphabet) for _ in range(16))


def runtime_env(
    config: RunConfig,
    working_dir: str | os.PathLike[str] | None = None,
    pip: Sequence[str] = (),
    submission_id: str | None = None,
) -> dict[str, Any]:
    """The job's runtime environment (see the module docstring).

    ``working_dir``: the folder to ship, a :func:`staged_project` (``None``: the vsp of the cluster's image).
    """
    env_vars = {ENV_VAR: json.dumps(config.to_dict())}
    # the job supervisor (which runs in this runtime env) waits this long after SIGTERM before SIGKILL: time
    # for the driver to record the stop in run.json on a slow object store (Ray's default is 3 s)
    env_vars["RAY_JOB_STOP_WAIT_TIME_S"] = os.environ.get("RAY_JOB_STOP_WAIT_TIME_S", "30")
    if submission_id:
        env_vars["VSP_SUBMISSION_ID"] = submission_id
    commit = git_commit(PROJECT_ROOT)
    if commit:
        env_vars["VSP_GIT_COMMIT"] = commit
    env: dict[str, Any] = {"env_vars": env_vars}
    if working_dir:
        env["working_dir"] = str(working_dir)
    if pip:
        env["pip"] = list(pip)
    return env


def _local_paths(config: RunConfig) -> list[str]:
    paths = [config.store, config.images, config.norms.path if config.norms else None]
    return [p for p in paths if p and "://" not in p]


def submit(
    address: str,
    config: RunConfig,
    stages: Sequence[str] | None = None,
    working_dir: bool = True,
    pip: Sequence[str] = (),
    submission_id: str | None = None,
) -> str:
    """Submit the pipeline run; returns the submission id."""
    local = _local_paths(config)
    if local:
        log.warning(
            "local paths in the configuration must exist at the same place on every node of the cluster "
            "(true on the local dev cluster; use s3:// on a real one): %s", ", ".join(local)
        )  # fmt: skip
    submission_id = submission_id or new_submission_id()
    with staged_project() if working_dir else contextlib.nullcontext() as staged:
        # submit_job zips and uploads the staged folder before it returns
        return client(address).submit_job(
            entrypoint=entrypoint(stages),
            runtime_env=runtime_env(config, staged, pip, submission_id),
            submission_id=submission_id,
            metadata={"vsp_store": config.store, "vsp_config": config.source or "-"},
        )


def job_info(address: str, submission_id: str) -> dict[str, Any]:
    """Status, message, times and entry point of a submission."""
    info = client(address).get_job_info(submission_id)
    return {
        "submission_id": submission_id,
        "status": str(info.status.value if hasattr(info.status, "value") else info.status),
        "message": info.message,
        "entrypoint": info.entrypoint,
        "start_time": info.start_time,
        "end_time": info.end_time,
        "metadata": info.metadata,
    }


def job_logs(address: str, submission_id: str) -> str:
    """Everything the job's driver has printed so far."""
    return client(address).get_job_logs(submission_id)


def wait(address: str, submission_id: str, timeout: float = 3600.0, poll: float = 1.0) -> str:
    """Block until the job ends (SUCCEEDED, FAILED or STOPPED); TimeoutError after ``timeout`` seconds."""
    c = client(address)
    deadline = time.monotonic() + timeout
    while True:
        status = c.get_job_status(submission_id)
        if status in TERMINAL:
            return str(status.value)
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {submission_id} still {status.value} after {timeout:.0f} s")
        time.sleep(poll)


def follow(address: str, submission_id: str, write: Callable[[str], None]) -> str:
    """Stream the job's logs to ``write`` until it ends; returns the final status."""
    c = client(address)

    async def tail() -> None:
        async for chunk in c.tail_job_logs(submission_id):
            write(chunk)

    asyncio.run(tail())
    return wait(address, submission_id, timeout=60)


def stop(address: str, submission_id: str) -> bool:
    """Ask the job to stop (its driver gets SIGTERM and records the stop; finished units are kept)."""
    return client(address).stop_job(submission_id)
