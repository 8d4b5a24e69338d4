"""Submit and follow pipeline runs on a Ray cluster through the Ray Jobs API (the head's dashboard, :8265).

A submission runs ``python -m jobs.pipeline`` on the head node as the run's driver. Its runtime environment:

- ``working_dir``: this project folder (minus virtual environments, git data, tests, demo outputs and
  caches), so the cluster runs exactly the code that was submitted; or, with ``working_dir=False``, the vsp
  installed in the cluster's image (``infra/Dockerfile``); ``pip`` adds packages on top of either;
- ``env_vars``: the normalised run configuration (``VSP_RUN_CONFIG``, JSON, no secrets), the submitting
  checkout's git commit (``VSP_GIT_COMMIT``) and the submission id (``VSP_SUBMISSION_ID``), both recorded in
  run.json.

S3 credentials are never shipped: cluster nodes take them from their own AWS chain (instance role, Kubernetes
service account or secret, the local cluster's environment).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import string
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ray.job_submission import JobStatus, JobSubmissionClient

from vsp.runconfig import ENV_VAR, RunConfig
from vsp.runmanifest import git_commit

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# gitignore-style patterns, relative to the project root: what a job never needs
EXCLUDES = [
    ".git", ".venv", "venv", "**/__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache", "*.egg-info", "build",
    "dist", ".whl", ".gl", "demo-run", "tests", "benchmarks", "docs", "infra", "*.zarr", "*.parquet", "*.png",
]  # fmt: skip
TERMINAL = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}


def client(address: str) -> JobSubmissionClient:
    """A Jobs API client for ``http://HEAD:8265``."""
    return JobSubmissionClient(address)


def entrypoint(stages: Sequence[str] | None = None) -> str:
    """The job's command: the whole pipeline, reading its configuration from $VSP_RUN_CONFIG."""
    cmd = "python -m jobs.pipeline"
    return f"{cmd} --stages {','.join(stages)}" if stages else cmd


def new_submission_id() -> str:
    """A submission id in Ray's own format (chosen here, so the driver can record it in run.json)."""
    alphabet = string.ascii_letters + string.digits
    return "raysubmit_" + "".join(secrets.choice(alphabet) for _ in range(16))


def runtime_env(
    config: RunConfig, working_dir: bool = True, pip: Sequence[str] = (), submission_id: str | None = None
) -> dict[str, Any]:
    """The job's runtime environment (see the module docstring)."""
    env_vars = {ENV_VAR: json.dumps(config.to_dict())}
    if submission_id:
        env_vars["VSP_SUBMISSION_ID"] = submission_id
    commit = git_commit(PROJECT_ROOT)
    if commit:
        env_vars["VSP_GIT_COMMIT"] = commit
    env: dict[str, Any] = {"env_vars": env_vars}
    if working_dir:
        env["working_dir"] = str(PROJECT_ROOT)
        env["excludes"] = list(EXCLUDES)
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
    return client(address).submit_job(
        entrypoint=entrypoint(stages),
        runtime_env=runtime_env(config, working_dir, pip, submission_id),
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
