"""The run manifest (``run.json`` at the store prefix) and the progress report of a store.

``run.json`` records what a run was and how it went::

    identity      per finished stage, what decided its results (RunConfig.stage_identity); a rerun must match
    config        the full, normalised configuration of the latest attempt that finished a stage
    versions      package versions; git_commit; weights_identity (per network, from the feature manifest)
    status        running | complete | failed, with started / finished of the latest attempt
    stages        per stage: status, started, finished, seconds, counts (units run / skipped ...)
    attempts      every attempt: started, finished, status, error, host, Ray job submission id, configuration,
                  and per stage the counts of that attempt (units run / skipped ...)

Only the coordinator (the job's driver) writes it, with atomic replace. A second run on the same prefix with a
different configuration for a stage whose results the prefix already holds is refused with
:class:`ConfigMismatchError` before anything is written (the stages' own manifests refuse it too).
:func:`store_progress` reads the stages' own markers (the ground truth), not ``run.json``, so it is right even
after a driver was killed mid-run.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from vsp.errors import ConfigMismatchError
from vsp.runconfig import STAGE_ORDER, RunConfig
from vsp.store import Store

log = logging.getLogger(__name__)

RUN_JSON = "run.json"
FORMAT_VERSION = 1
_PACKAGES = (
    "vsp",
    "torch",
    "torchvision",
    "numpy",
    "scikit-learn",
    "zarr",
    "pyarrow",
    "s3fs",
    "boto3",
    "ray",
    "pillow",
)


def now() -> str:
    """UTC time in ISO 8601, to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def package_versions() -> dict[str, str]:
    """Versions of what decides the numbers or runs the work (read from metadata: Ray is not imported)."""
    import platform

    out = {"python": platform.python_version()}
    for pkg in _PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "absent"
    return out


def git_commit(root: str | os.PathLike[str] | None = None) -> str | None:
    """The project's commit (``-dirty`` with uncommitted changes); None when unknown.

    $VSP_GIT_COMMIT first (set by `vsp submit`: a job's working dir has no .git), else ``git`` in the project.
    """
    if os.environ.get("VSP_GIT_COMMIT"):
        return os.environ["VSP_GIT_COMMIT"]
    root = Path(root) if root is not None else Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}-dirty" if dirty else head or None


def _diff(have: dict[str, Any], want: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ (``extract.seed``), descending into mappings."""
    out = []
    for k in sorted(set(have) | set(want)):
        a, b = have.get(k), want.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}")
    return out


def _has_output(store: Store, doc: dict[str, Any], stage: str) -> bool:
    """Whether a stage left results on the prefix (a run that failed before writing binds nothing)."""
    counter = PROGRESS.get(stage)
    if counter is not None:
        return counter(store) is not None
    return doc.get("stages", {}).get(stage, {}).get("status") == "done"


class RunRecord:
    """The coordinator's handle on ``run.json``: one attempt of a run, written after every change."""

    def __init__(self, store: Store, doc: dict[str, Any], config: RunConfig) -> None:
        self.store = store
        self.doc = doc
        self.config = config

    @property
    def attempt(self) -> dict[str, Any]:
        """The record of the attempt this handle writes."""
        return self.doc["attempts"][-1]

    @classmethod
    def begin(cls, store: Store, config: RunConfig) -> RunRecord:
        """Check the prefix against the configuration, then record a new attempt (status running).

        Raises ConfigMismatchError, naming the differing keys, when a stage of this run already left results
        on the prefix with a different configuration.
        """
        doc = store.read_json(RUN_JSON) if store.exists(RUN_JSON) else None
        want = config.identity()
        if doc is not None:
            have = doc.get("identity", {})
            diff = [
                key
                for stage in want
                if stage in have and _has_output(store, doc, stage)
                for key in _diff(have[stage], want[stage], f"{stage}: ")
            ]
            if diff:
                raise ConfigMismatchError(
                    f"{store.key_uri(RUN_JSON)} holds a run with a different configuration "
                    f"(differs in {'; '.join(diff)}); use a new store prefix for a new configuration, "
                    "or delete the old prefix to start over"
                )
        else:
            doc = {"format": FORMAT_VERSION, "created": now(), "identity": {}, "config": config.to_dict(),
                   "stages": {}, "attempts": []}  # fmt: skip
        started = now()
        doc["attempts"].append(
            {
                "attempt": len(doc["attempts"]) + 1,
                "started": started,
                "finished": None,
                "status": "running",
                "stages": list(config.stages),
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "submission_id": os.environ.get("VSP_SUBMISSION_ID"),  # set by `vsp submit`
                "source": config.source,
                "config": config.to_dict(),
            }
        )
        doc.update(
            versions=package_versions(),
            git_commit=git_commit(),
            status="running",
            started=started,
            finished=None,
            error=None,
        )
        record = cls(store, doc, config)
        record.save()
        return record

    def save(self) -> None:
        """Write run.json (atomic replace)."""
        self.store.write_json(RUN_JSON, self.doc)

    # -- stages ------------------------------------------------------------------------------------------
    def stage_started(self, name: str) -> None:
        """Record that a stage began."""
        self.doc["stages"][name] = {"status": "running", "attempt": self.attempt["attempt"], "started": now()}
        self.save()

    def stage_finished(self, name: str, seconds: float, counts: dict[str, Any]) -> None:
        """Record the stage's counts, and bind the prefix to its configuration (it now holds its results)."""
        self.doc["identity"][name] = self.config.stage_identity(name)
        self.doc["config"] = self.config.to_dict()
        entry = self.doc["stages"].setdefault(name, {})
        entry.update(status="done", finished=now(), seconds=round(seconds, 3), **counts)
        self.attempt.setdefault("stage_counts", {})[name] = {"seconds": round(seconds, 3), **counts}
        self.save()

    def stage_skipped(self, name: str, reason: str) -> None:
        """Record that a stage was not run, and why."""
        self.doc["stages"][name] = {"status": "skipped", "attempt": self.attempt["attempt"], "reason": reason}
        self.save()

    def stage_failed(self, name: str, error: str) -> None:
        """Record a stage's failure."""
        entry = self.doc["stages"].setdefault(name, {})
        entry.update(status="failed", finished=now(), error=error)
        self.save()

    def set_weights_identity(self, identity: dict[str, str]) -> None:
        """Record which weights the networks had (enum name, sha256 or random:<seed>)."""
        self.doc["weights_identity"] = dict(identity)
        self.save()

    def finish(self, error: str | None = None) -> None:
        """Close the attempt: complete, or failed with the error message."""
        status = "failed" if error else "complete"
        self.attempt.update(finished=now(), status=status, error=error)
        self.doc.update(status=status, finished=self.attempt["finished"], error=error)
        self.save()


def read_run(store: Store) -> dict[str, Any] | None:
    """The run manifest of a store prefix, or None when no run was recorded there."""
    return store.read_json(RUN_JSON) if store.exists(RUN_JSON) else None


# --- progress ---------------------------------------------------------------------------------------------


def _extract_progress(store: Store) -> dict[str, Any] | None:
    from vsp.features import FeatureStore

    fs = FeatureStore(store)
    man = fs.manifest()
    if man is None:
        return None
    total = len(man["units"])
    done = len({u for u in fs.done_units() if u < total})
    return {"what": "units", "done": done, "total": total, "complete": done == total}


def _decode_progress(store: Store) -> dict[str, Any] | None:
    from vsp.decode_stage import MANIFEST, ROOT, marker_path
    from vsp.features import FeatureStore

    if not store.exists(MANIFEST):
        return None
    models = store.read_json(MANIFEST)["identity"]["config"].get("models")
    layers = [x for x in FeatureStore(store).layers() if not models or x.model in models]
    markers = set(store.list(f"{ROOT}/done"))
    done = sum(marker_path(x) in markers for x in layers)
    figures = store.exists(f"{ROOT}/figure1.png")
    return {"what": "layers", "done": done, "total": len(layers), "complete": done == len(layers) and figures}


def _meta_progress(store: Store) -> dict[str, Any] | None:
    """Embeddings built (markers) of the planned ones; with a decodability run, its markers count too."""
    from vsp.embeddings import DECODABILITY, DECODE_MANIFEST, MANIFEST, decode_marker_path, marker_path

    if not store.exists(MANIFEST):
        return None
    plan = [e["name"] for e in store.read_json(MANIFEST).get("plan", [])]
    done = sum(store.exists(marker_path(n)) for n in plan)
    total = len(plan)
    complete = done == total
    if store.exists(DECODE_MANIFEST):  # decodability of every embedding: a second unit per embedding
        done += sum(store.exists(decode_marker_path(n)) for n in plan)
        total += len(plan)
        complete = done == total and store.exists(DECODABILITY)
    return {"what": "embeddings", "done": done, "total": total, "complete": complete}


def _map_progress(store: Store) -> dict[str, Any] | None:
    """Mapping units (markers) of the grid: mapped embeddings x mappers x repeats x fold chunks."""
    from vsp.mapping import MAPPERS
    from vsp.mapping_stage import MANIFEST, ROOT, TABLE2

    if not store.exists(MANIFEST):
        return None
    man = store.read_json(MANIFEST)
    cfg = man["identity"]["config"]
    run = read_run(store) or {}
    mappers = (run.get("config", {}).get("map") or {}).get("mappers") or list(MAPPERS)  # not in the identity
    per_embedding = 0
    for m in mappers:
        step = (
            min(cfg["folds_per_task"], cfg["folds"])
            if cfg["folds_per_task"]
            else (1 if m == "mlp" else cfg["folds"])
        )
        per_embedding += cfg["repeats"] * -(-cfg["folds"] // step)
    total = per_embedding * len(man.get("embeddings", {}))
    done = min(sum(k.endswith(".json") for k in store.list(f"{ROOT}/done")), total)
    return {"what": "units", "done": done, "total": total, "complete": done == total and store.exists(TABLE2)}


def _similarity_progress(store: Store) -> dict[str, Any] | None:
    from vsp.similarity_stage import MANIFEST, TABLE3

    if not store.exists(MANIFEST):
        return None
    done = int(store.exists(TABLE3))
    return {"what": "table", "done": done, "total": 1, "complete": bool(done)}


def _report_progress(store: Store) -> dict[str, Any] | None:
    marker = "report/done.json"  # jobs.report.MARKER: written after the report
    if not store.exists(marker):
        return None
    return {"what": "report", "done": 1, "total": 1, "complete": True}


# Per stage: how to count its finished units from its own markers. Adding a stage's report is one line.
PROGRESS: dict[str, Callable[[Store], dict[str, Any] | None]] = {
    "extract": _extract_progress,
    "decode": _decode_progress,
    "meta": _meta_progress,
    "map": _map_progress,
    "similarity": _similarity_progress,
    "report": _report_progress,
}


def store_progress(store: Store) -> dict[str, Any]:
    """Which units of which stages are done under a prefix (from markers), plus the run manifest's view."""
    run = read_run(store)
    recorded = (run or {}).get("stages", {})
    stages: dict[str, Any] = {}
    for name in STAGE_ORDER:
        counter = PROGRESS.get(name)
        prog = counter(store) if counter else None
        rec = recorded.get(name, {})
        if prog is None and not rec:
            continue
        entry = dict(prog or {})
        entry["recorded"] = {k: rec[k] for k in ("status", "seconds", "reason", "error") if k in rec}
        stages[name] = entry
    out: dict[str, Any] = {"store": store.uri, "stages": stages, "run": None}
    if run is not None:
        out["run"] = {
            k: run.get(k)
            for k in ("status", "started", "finished", "error", "git_commit", "weights_identity")
        } | {"attempts": len(run.get("attempts", []))}
    wanted = (run or {}).get("config", {}).get("stages") or list(stages)
    counted = [s for s in wanted if s in PROGRESS and recorded.get(s, {}).get("status") != "skipped"]
    out["complete"] = bool(stages) and all(stages.get(s, {}).get("complete") for s in counted)
    return out


def format_progress(progress: dict[str, Any]) -> str:
    """Human-readable lines for `vsp status --store`."""
    lines = []
    run = progress["run"]
    if run is None:
        lines.append(f"{progress['store']}: no run.json (no pipeline run recorded here)")
    else:
        when = f"started {run['started']}" + (f", finished {run['finished']}" if run.get("finished") else "")
        commit = run.get("git_commit") or ""
        commit = f"; git {commit[:12]}{'-dirty' if commit.endswith('-dirty') else ''}" if commit else ""
        lines.append(f"{progress['store']}: run {run['status']} (attempt {run['attempts']}, {when}{commit})")
        if run.get("error"):
            lines.append(f"  error: {run['error']}")
    if not progress["stages"]:
        lines.append("  no stage has started")
    for name, st in progress["stages"].items():
        rec = st.get("recorded", {})
        if "total" in st:
            state = "complete" if st["complete"] else rec.get("status", "incomplete")
            if state == "done":  # recorded done but markers say otherwise
                state = "incomplete"
            text = f"{st['done']}/{st['total']} {st['what']} done"
        else:
            state, text = rec.get("status", "?"), rec.get("reason", "")
        secs = f"  {rec['seconds']:.1f} s" if "seconds" in rec and state == "complete" else ""
        lines.append(f"  {name:<11}{text:<24}{state}{secs}")
    lines.append("pipeline complete" if progress["complete"] else "pipeline not complete")
    return "\n".join(lines)
