"""The run manifest (``run.json`` at the store prefix) and the progress report of a store.

``run.json`` records what a run was and how it went::

    identity      per finished stage, what decided its results (RunConfig.stage_identity); a rerun must match
    config        the full, normalised configuration of the latest attempt that finished a stage
    versions      package versions; git_commit; weights_identity (per network, from the feature manifest)
    status        running | complete | failed | lost, with started / finished of the latest attempt
    stages        per stage: status, started, finished, seconds, counts (units run / skipped ...)
    attempts      every attempt: id, started, finished, status, error, host, pid, Ray job submission id,
                  configuration, and per stage the counts of that attempt (units run / skipped ...)

Each attempt has its own record, ``runs/attempt-<id>.json``, written only by its driver (the coordinator),
with atomic replace; ``run.json`` is derived from all of them (and from a ``run.json`` of format 1, kept in
``runs/legacy.json``), republished after every change. Two drivers on one prefix therefore never lose each
other's record. A "running" attempt whose driver process is gone (checked on the driver's own host: pid and
process start time) reads ``lost``. A second run on the same prefix with a different configuration for a
stage whose results the prefix already holds is refused with :class:`ConfigMismatchError` before anything
is written; one refused by a stage's own manifest removes its record again (:meth:`RunRecord.discard`).
:func:`store_progress` reads the stages' own markers (the ground truth), not ``run.json``, so it is right even
after a driver was killed mid-run.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import time
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

from vsp import pipeline
from vsp.config import RunConfig
from vsp.errors import VspInputError
from vsp.io import bookkeeping
from vsp.io.bookkeeping import diff_keys, mismatch
from vsp.io.store import Store

log = logging.getLogger(__name__)

RUN_JSON = "run.json"
PUBLISH_TRIES = 200  # bounded only against a livelock; other attempts stop writing when they finish
FORMAT_VERSION = 2  # 1: run.json was the only record; 2: each attempt has its own, run.json is their view
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


now = bookkeeping.now  # one clock format for every manifest and marker


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


def _has_output(store: Store, doc: dict[str, Any], stage: str) -> bool:
    """Whether a stage left results on the prefix (a run that failed before writing binds nothing).

    One existence check per stage (its manifest), not a scan of its markers.
    """
    if stage in pipeline.names():
        return pipeline.get(stage).has_results(store)
    return doc.get("stages", {}).get(stage, {}).get("status") == "done"


RUNS = "runs"  # one object per attempt, written only by that attempt's driver
LEGACY = f"{RUNS}/legacy.json"  # the run.json of format 1 a prefix had when its first format-2 attempt began


def attempt_key(attempt_id: str) -> str:
    """Where an attempt's own record lives."""
    return f"{RUNS}/attempt-{attempt_id}.json"


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks since boot) of a process, from /proc; None where unknown."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        fields = text.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        return fields[0], int(fields[19])  # fields 3 (state) and 22 (starttime)
    except (OSError, IndexError, ValueError):
        return None


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def driver_gone(attempt: dict[str, Any]) -> bool:
    """Whether the driver of an attempt is known to be gone.

    Known only on the attempt's own host: its process no longer exists (or is a zombie), the pid now
    belongs to a younger process, or the machine rebooted since. Elsewhere: False (it may still run).
    """
    if attempt.get("host") != socket.gethostname():
        return False
    boot = _boot_id()
    if attempt.get("boot_id") and boot and attempt["boot_id"] != boot:
        return True
    pid = attempt.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    except OSError:
        return False
    stat = _proc_stat(pid)
    if stat is None:
        return False
    state, start = stat
    recorded = attempt.get("pid_start")
    return state == "Z" or (isinstance(recorded, int) and start != recorded)


def attempt_status(attempt: dict[str, Any]) -> str:
    """An attempt's status as a reader should see it: ``lost`` for a "running" one whose driver is gone."""
    status = attempt.get("status") or "?"
    return "lost" if status == "running" and driver_gone(attempt) else status


def _is_view(doc: dict[str, Any] | None) -> bool:
    """Whether a run.json is the derived view of format 2 (else: format 1, the attempts' only record)."""
    return isinstance(doc, dict) and doc.get("format") == FORMAT_VERSION


def _parse(store: Store, data: bytes | None) -> dict[str, Any] | None:
    """run.json's bytes as a document; VspInputError naming it when they are not JSON."""
    if data is None:
        return None
    try:
        return json.loads(data)
    except ValueError as e:
        raise VspInputError(f"{store.key_uri(RUN_JSON)}: not valid JSON ({e})") from e


def _with_lost(doc: dict[str, Any]) -> dict[str, Any]:
    """A copy of a run.json where "running" attempts (and their stages) whose driver is gone read ``lost``."""
    doc = dict(doc)
    attempts = [dict(a) for a in doc.get("attempts", [])]
    lost = set()
    for a in attempts:
        if attempt_status(a) == "lost":
            a["status"] = "lost"
            lost.add(a.get("attempt"))
    doc["attempts"] = attempts
    if lost:
        doc["stages"] = {
            k: (v | {"status": "lost"}) if v.get("status") == "running" and v.get("attempt") in lost else v
            for k, v in doc.get("stages", {}).items()
        }
        if doc.get("status") == "running" and attempts and attempts[-1]["status"] == "lost":
            doc["status"] = "lost"
    return doc


def _read_attempts(
    store: Store, cache: dict[str, dict[str, Any]] | None = None, skip: str | None = None
) -> dict[str, dict[str, Any]]:
    """Every attempt's own record under ``runs/``, by attempt id (one that vanishes meanwhile is left out).

    ``cache`` (key -> record) spares reading records that can no longer change: a finished attempt's
    driver never writes again. ``skip``: a key not to read (the caller's own record).
    """
    out = {}
    for key in store.list(RUNS):
        name = key.rsplit("/", 1)[-1]
        if key == skip or not (name.startswith("attempt-") and name.endswith(".json")):
            continue
        doc = cache.get(key) if cache is not None else None
        if doc is None or doc.get("status") == "running":
            try:
                doc = store.read_json(key)
            except (FileNotFoundError, VspInputError):  # discarded meanwhile, or not ours
                continue
            if cache is not None and isinstance(doc, dict):
                cache[key] = doc
        if isinstance(doc, dict) and doc.get("id"):
            out[doc["id"]] = doc
    return out


def _legacy(store: Store, raw: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the prefix recorded in format 1: run.json itself, or the copy kept once attempts moved out."""
    if raw is not None and not _is_view(raw):
        return raw
    return store.read_json(LEGACY) if store.exists(LEGACY) else None


def _summary(a: dict[str, Any], number: int) -> dict[str, Any]:
    """An attempt as run.json lists it."""
    out = {"attempt": number, "id": a["id"]}
    for k in ("started", "finished"):
        out[k] = a.get(k)
    out["status"] = attempt_status(a)
    for k in ("error", "stages", "host", "pid", "submission_id", "source", "config"):
        out[k] = a.get(k)
    if a.get("stage_counts"):
        out["stage_counts"] = a["stage_counts"]
    return out


def build_view(legacy: dict[str, Any] | None, attempts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """run.json: the legacy record plus every attempt's own record, merged.

    Attempts are numbered in the order they started. Per stage, the latest event wins (binding a stage to
    its configuration when it finished; its status when it started, finished, failed or was skipped). The
    top-level status, times, error, versions and commit are those of the attempt that started last.
    """
    base = _with_lost(legacy) if legacy is not None else {}
    old = list(base.get("attempts", []))
    order = sorted(attempts.values(), key=lambda a: (a.get("clock", {}).get("started", 0.0), a["id"]))
    number = {a["id"]: len(old) + i + 1 for i, a in enumerate(order)}

    def events(kind: str, items: str):
        got = [
            (a.get("clock", {}).get(f"{kind}:{s}", 0.0), number[a["id"]], s, a)
            for a in order
            for s in a.get(items, {})
        ]
        return sorted(got, key=lambda e: (e[0], e[1]))

    identity = dict(base.get("identity", {}))
    config = base.get("config")
    for _, _, stage, a in events("bound", "identity"):
        identity[stage] = a["identity"][stage]
        config = a.get("config")
    stages = {k: dict(v) for k, v in base.get("stages", {}).items()}
    for _, n, stage, a in events("stage", "records"):
        rec = {"status": a["records"][stage].get("status"), "attempt": n, **a["records"][stage]}
        if rec["status"] == "running" and attempt_status(a) == "lost":
            rec["status"] = "lost"
        stages[stage] = rec
    weights = base.get("weights_identity")
    with_weights = [a for a in order if "weights_identity" in a]
    if with_weights:
        weights = max(with_weights, key=lambda a: a.get("clock", {}).get("weights", 0.0))["weights_identity"]
    runs = old + [_summary(a, number[a["id"]]) for a in order]
    latest = order[-1] if order else None
    top = runs[-1] if runs else {}
    view: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "created": base.get("created") or (order[0].get("started") if order else now()),
        "identity": identity,
        "config": config if config is not None else (latest or {}).get("config"),
        "stages": stages,
        "attempts": runs,
        "versions": (latest or base).get("versions"),
        "git_commit": (latest or base).get("git_commit"),
        "status": top.get("status", base.get("status")),
        "started": top.get("started", base.get("started")),
        "finished": top.get("finished", base.get("finished")),
        "error": top.get("error", base.get("error")),
    }
    if weights is not None:
        view["weights_identity"] = weights
    return view


class RunRecord:
    """The coordinator's handle on its attempt: its own record in ``runs/``, and run.json derived from all.

    Only this attempt's driver writes its record (``runs/attempt-<id>.json``), so concurrent attempts on
    one prefix cannot overwrite each other's progress; after every change it republishes ``run.json`` from
    every attempt's record (re-reading them until nobody wrote meanwhile). :func:`read_run` merges the
    records itself, so a reader is right even when two drivers published at the same moment.
    """

    def __init__(
        self, store: Store, config: RunConfig, attempt: dict[str, Any], legacy: dict[str, Any] | None,
        restore: tuple[bytes | None, dict[str, dict[str, Any]], bool],
    ) -> None:  # fmt: skip
        self.store = store
        self.config = config
        self.attempt = attempt  # this attempt's own record (``attempt["attempt"]``: its number at the start)
        self.key = attempt_key(attempt["id"])
        self._legacy = legacy
        self._restore = restore  # run.json's bytes, the other attempts and whether LEGACY is ours, at begin
        self._cache: dict[str, dict[str, Any]] = {}  # other attempts' records read so far
        self.doc: dict[str, Any] = {}  # the run.json this attempt published last

    @classmethod
    def begin(cls, store: Store, config: RunConfig) -> RunRecord:
        """Check the prefix against the configuration, then record a new attempt (status running).

        Raises ConfigMismatchError, naming the differing keys, when a stage of this run already left results
        on the prefix with a different configuration; nothing is written then.
        """
        before = store.read_bytes(RUN_JSON) if store.exists(RUN_JSON) else None
        raw = _parse(store, before)
        legacy = _legacy(store, raw)
        others = _read_attempts(store)
        doc = build_view(legacy, others) if (others or legacy is not None) else None
        want = config.identity()
        if doc is not None:
            have = doc.get("identity", {})
            diff = [
                key
                for stage in want
                if stage in have and _has_output(store, doc, stage)
                for key in diff_keys(have[stage], want[stage])
            ]
            if diff:
                raise mismatch(
                    store.key_uri(RUN_JSON), "run configuration", list(dict.fromkeys(diff)),
                    "use a new store prefix for a new configuration, or delete the old prefix to start over",
                )  # fmt: skip
        legacy_ours = False
        if raw is not None and not _is_view(raw):  # format 1: keep its record before run.json becomes a view
            legacy_ours = not store.exists(LEGACY)
            store.write_json(LEGACY, raw)
        pid = os.getpid()
        stat = _proc_stat(pid)
        attempt = {
            "format": FORMAT_VERSION,
            "id": f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}",
            "attempt": len((doc or {}).get("attempts", [])) + 1,
            "started": now(),
            "finished": None,
            "status": "running",
            "error": None,
            "stages": list(config.stages),
            "host": socket.gethostname(),
            "pid": pid,
            "pid_start": stat[1] if stat else None,
            "boot_id": _boot_id(),
            "submission_id": os.environ.get("VSP_SUBMISSION_ID"),  # set by `vsp submit`
            "source": config.source,
            "config": config.to_dict(),
            "versions": package_versions(),
            "git_commit": git_commit(),
            "records": {},
            "identity": {},
            "stage_counts": {},
            "clock": {"started": time.time()},
        }
        record = cls(store, config, attempt, legacy, (before, others, legacy_ours))
        record.save()
        return record

    def save(self) -> None:
        """Write this attempt's record (atomic replace), then republish run.json from every record."""
        self.store.write_json(self.key, self.attempt)
        self._publish()

    def _publish(self, exclude_self: bool = False) -> None:
        seen: dict[str, dict[str, Any]] | None = None
        # Until a re-read finds the records this view was built from: then no attempt wrote in between, and
        # any later write is followed by its own publish. A fixed small number of tries (3, before) let a
        # driver under contention leave a stale view as the last write (CI: an attempt shown "running").
        for _ in range(PUBLISH_TRIES):
            records = _read_attempts(self.store, self._cache, skip=self.key)
            records.pop(self.attempt["id"], None)
            if not exclude_self:
                records[self.attempt["id"]] = self.attempt
            if records == seen:
                return
            self.doc = build_view(self._legacy, records)
            self.store.write_json(RUN_JSON, self.doc)
            seen = records

    def _stage(self, name: str) -> dict[str, Any]:
        """The attempt's own record of a stage, stamped as the stage's latest event."""
        self.attempt["clock"][f"stage:{name}"] = time.time()
        return self.attempt["records"].setdefault(name, {})

    # -- stages ------------------------------------------------------------------------------------------
    def stage_started(self, name: str) -> None:
        """Record that a stage began."""
        self._stage(name).update(status="running", started=now())
        self.save()

    def stage_finished(self, name: str, seconds: float, counts: dict[str, Any]) -> None:
        """Record the stage's counts, and bind the prefix to its configuration (it now holds its results)."""
        self.attempt["identity"][name] = self.config.stage_identity(name)
        self.attempt["clock"][f"bound:{name}"] = time.time()
        entry = self._stage(name)
        entry.update(status="done", finished=now(), seconds=round(seconds, 3), **counts)
        self.attempt["stage_counts"][name] = {"seconds": round(seconds, 3), **counts}
        self.save()

    def stage_failed(self, name: str, error: str) -> None:
        """Record a stage's failure."""
        self._stage(name).update(status="failed", finished=now(), error=error)
        self.save()

    def set_weights_identity(self, identity: dict[str, str]) -> None:
        """Record which weights the networks had (enum name, sha256 or random:<seed>)."""
        self.attempt["weights_identity"] = dict(identity)
        self.attempt["clock"]["weights"] = time.time()
        self.save()

    def finish(self, error: str | None = None) -> None:
        """Close the attempt: complete, or failed with the error message."""
        self.attempt.update(finished=now(), status="failed" if error else "complete", error=error)
        self.attempt["clock"]["finished"] = time.time()
        self.save()

    def discard(self) -> None:
        """Remove this attempt's every trace: a run refused by a stage's own manifest leaves nothing.

        When no other attempt wrote since this one began, run.json gets back its bytes of then (or is removed
        when there was none); otherwise it is republished from the other attempts' records.
        """
        self.store.delete(self.key)
        before, others_then, legacy_ours = self._restore
        now_others = _read_attempts(self.store)
        now_others.pop(self.attempt["id"], None)
        if now_others == others_then:
            if before is None:
                self.store.delete(RUN_JSON)
            else:
                self.store.write_bytes(RUN_JSON, before)
            if legacy_ours:
                self.store.delete(LEGACY)
            self.doc = {}
            return
        self._publish(exclude_self=True)


def read_run(store: Store) -> dict[str, Any] | None:
    """The run manifest of a store prefix (run.json merged with every attempt's record), or None.

    Stores written before attempts had their own records (format 1) read as they are, with a "running"
    attempt whose driver is gone shown as ``lost``.
    """
    raw = store.read_json(RUN_JSON) if store.exists(RUN_JSON) else None
    attempts = _read_attempts(store)
    if not attempts:
        return _with_lost(raw) if raw is not None else None
    return build_view(_legacy(store, raw), attempts)


# --- progress ---------------------------------------------------------------------------------------------


def store_progress(store: Store) -> dict[str, Any]:
    """Which units of which stages are done under a prefix (from markers), plus the run manifest's view."""
    run = read_run(store)
    recorded = (run or {}).get("stages", {})
    stages: dict[str, Any] = {}
    for name in pipeline.names():
        prog = pipeline.get(name).progress(store)
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
        out["run"]["open_attempts"] = [
            {k: a.get(k) for k in ("attempt", "status", "started", "host", "pid", "submission_id")}
            for a in run.get("attempts", [])
            if a.get("status") in ("running", "lost")
        ]
    wanted = ((run or {}).get("config") or {}).get("stages") or list(stages)
    counted = [s for s in wanted if s in pipeline.names() and recorded.get(s, {}).get("status") != "skipped"]
    out["complete"] = bool(stages) and all(stages.get(s, {}).get("complete") for s in counted)
    return out


def verify_store(store: Store) -> dict[str, Any]:
    """Deep check (`vsp status --verify`): re-read every unit's data and compare it with its marker.

    Each stage re-reads its own outputs (feature units against their value digest, Parquet outputs against
    their sha256). Slower than the status listing (it reads everything), so it runs only when asked.
    """
    checked, bad = 0, []
    for stage in pipeline.stages():
        n, mismatched = stage.verify(store)
        checked += n
        bad += mismatched
    return {"checked": checked, "mismatched": bad}


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
        for a in run.get("open_attempts", []):
            where = f"host {a.get('host')}, pid {a.get('pid')}"
            if a.get("submission_id"):
                where += f", submission {a['submission_id']}"
            if a["status"] == "lost":
                lines.append(f"  attempt {a['attempt']} lost: its driver ({where}) is gone; rerun to resume")
            else:
                lines.append(f"  attempt {a['attempt']} running since {a.get('started')} ({where})")
    if not progress["stages"]:
        lines.append("  no stage has started")
    for name, st in progress["stages"].items():
        rec = st.get("recorded", {})
        if "total" in st:
            state = "complete" if st["complete"] else rec.get("status", "incomplete")
            if state == "done":  # recorded done but markers say otherwise
                state = "incomplete"
            text = f"{st['done']}/{st['total']} {st['what']} done"
            if st.get("invalid"):
                text += f" ({st['invalid']} with missing or changed data: rerun to redo them)"
        else:
            state, text = rec.get("status", "?"), rec.get("reason", "")
        secs = f"  {rec['seconds']:.1f} s" if "seconds" in rec and state == "complete" else ""
        lines.append(f"  {name:<11}{text:<24}{state}{secs}")
    lines.append("pipeline complete" if progress["complete"] else "pipeline not complete")
    return "\n".join(lines)
