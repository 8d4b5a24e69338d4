"""Stage bookkeeping, once for every stage: exclusive claims, one refusal message, markers that prove data.

Why this module exists: two drivers on one store prefix (a resubmitted job beside the first, `vsp run` beside
`vsp extract`) must never destroy each other's work, and a marker must never say "done" over data that is not
there. The rules every stage follows through these functions:

- **Claim, then create.** A stage's manifest (its identity) is created with
  :meth:`vsp.io.store.Store.create_exclusive`: exactly one driver wins; the others read the winner's manifest,
  join it when the identity is the same and are refused (:class:`ConfigMismatchError`, one message format)
  when it is not. Nothing a setup step does deletes or overwrites what exists under a stage's prefix.
- **Data, then a marker that proves it.** A marker lists its outputs (key, size and sha256 for whole objects;
  chunk keys and a value digest for Zarr chunks). A unit counts as done only if its marker exists *and* every
  listed output is present with its recorded size (one listing of the data prefix, so `vsp status` and resume
  stay cheap); :func:`verify_outputs` re-reads the bytes for a deep check.
- **One clock format** (:func:`now`), UTC ISO 8601.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from vsp.errors import ConfigMismatchError
from vsp.io.store import LocalFileStore, Store, parquet_bytes

log = logging.getLogger(__name__)

__all__ = [
    "MarkerScan",
    "bytes_output",
    "check_identity",
    "diff_keys",
    "mismatch",
    "diff_identity",
    "digest",
    "now",
    "open_manifest",
    "parquet_bytes",
    "read_markers",
    "scan_markers",
    "verify_outputs",
    "write_marker",
    "write_output",
]


def now() -> str:
    """The current UTC time as ``YYYY-MM-DDTHH:MM:SSZ`` (every manifest and marker uses this)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# --------------------------------------------------------------------------------------------- identity
def digest(obj: Any) -> str:
    """sha256 of a JSON-able object (keys sorted): how one identity is named inside another."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def diff_identity(have: Mapping[str, Any], want: Mapping[str, Any]) -> list[str]:
    """The keys in which two identities differ; a differing ``config`` is named field by field."""
    keys = sorted(set(have) | set(want))
    out = [k for k in keys if have.get(k) != want.get(k)]
    if "config" in out:
        ca, cb = have.get("config") or {}, want.get("config") or {}
        if isinstance(ca, Mapping) and isinstance(cb, Mapping):
            fields = [f"config.{k}" for k in sorted(set(ca) | set(cb)) if ca.get(k) != cb.get(k)]
            out = fields + [k for k in out if k != "config"]
    return out


def diff_keys(have: Mapping[str, Any], want: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ (``extract.seed``), descending into mappings."""
    out = []
    for k in sorted(set(have) | set(want)):
        a, b = have.get(k), want.get(k)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += diff_keys(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}")
    return out


def mismatch(where: str, what: str, keys: Sequence[str], remedy: str) -> ConfigMismatchError:
    """The one refusal: ``<where> holds a different <what> (differs in: <keys>); <remedy>`` (exit 3)."""
    return ConfigMismatchError(f"{where} holds a different {what} (differs in: {', '.join(keys)}); {remedy}")


def check_identity(
    store: Store,
    path: str,
    have: Mapping[str, Any],
    want: Mapping[str, Any],
    what: str,
    ignore: Sequence[str] = (),
) -> None:
    """Refuse a prefix whose manifest ``path`` records another identity (the one message format)."""
    a = {k: v for k, v in have.items() if k not in ignore}
    b = {k: v for k, v in want.items() if k not in ignore}
    if a == b:
        return
    folder = path.split("/", 1)[0] if "/" in path else path
    raise mismatch(
        f"{store.uri}/{path}",
        what,
        diff_identity(a, b),
        f"use another --store prefix or delete its {folder}/ folder",
    )


def open_manifest(
    store: Store,
    path: str,
    identity: Mapping[str, Any],
    what: str,
    extra: Mapping[str, Any] | None = None,
    ignore: Sequence[str] = (),
) -> tuple[dict[str, Any], bool]:
    """Claim the stage's manifest exclusively, or join an identical one; returns (manifest, created).

    A driver that loses the claim reads the winner's manifest: the same identity joins it, another identity
    is refused with :class:`ConfigMismatchError`. The manifest is never overwritten here.
    """
    doc = {"identity": dict(identity), **(extra or {}), "created": now()}
    data = (json.dumps(doc, indent=2) + "\n").encode("utf-8")
    if not store.exists(path) and store.create_exclusive(path, data):
        log.debug("claimed %s", store.key_uri(path))
        return doc, True
    have = store.read_json(path)
    check_identity(store, path, have.get("identity", {}), identity, what, ignore)
    return have, False


# ------------------------------------------------------------------------------------------------ outputs
def bytes_output(key: str, data: bytes) -> dict[str, Any]:
    """What a marker records of one whole object: its key, size and sha256."""
    return {"key": key, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def write_output(store: Store, key: str, data: bytes | pa.Table) -> dict[str, Any]:
    """Write one output object (bytes or a Parquet table) and return its marker record."""
    raw = parquet_bytes(data) if isinstance(data, pa.Table) else data
    store.write_bytes(key, raw)
    return bytes_output(key, raw)


def write_marker(store: Store, key: str, outputs: Sequence[Mapping[str, Any]], **info: Any) -> None:
    """Write a unit's marker after its data: what it covers (``outputs``) and any facts about the unit."""
    store.write_json(key, {**info, "outputs": [dict(o) for o in outputs], "finished": now()})


def _proves(doc: Mapping[str, Any], sizes: Mapping[str, int]) -> bool:
    for out in doc.get("outputs", ()):
        size = sizes.get(out["key"])
        if size is None or (out.get("size") is not None and size != out["size"]):
            return False
    return True


def read_markers(store: Store, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Read many small markers (in parallel on object storage); unreadable or missing ones are left out."""
    keys = list(keys)

    def one(key: str) -> tuple[str, dict[str, Any] | None]:
        try:
            doc = store.read_json(key)
        except (FileNotFoundError, ValueError):
            return key, None
        return key, doc if isinstance(doc, dict) else None

    if isinstance(store, LocalFileStore) or len(keys) < 4:
        pairs = [one(k) for k in keys]
    else:
        with ThreadPoolExecutor(16) as pool:
            pairs = list(pool.map(one, keys))
    return {k: d for k, d in pairs if d is not None}


@dataclass
class MarkerScan:
    """Which markers prove their data (``done``) and which do not (``invalid``: the unit is redone)."""

    done: dict[str, dict[str, Any]] = field(default_factory=dict)
    invalid: list[str] = field(default_factory=list)

    def __contains__(self, key: object) -> bool:
        return key in self.done


def scan_markers(
    store: Store,
    done_prefix: str,
    data_prefixes: Sequence[str],
    legacy_outputs: Callable[[str, dict[str, Any]], list[dict[str, Any]]] | None = None,
    only: Iterable[str] | None = None,
) -> MarkerScan:
    """Every marker under ``done_prefix`` (or just ``only``) checked against one listing of the data.

    A marker written before markers listed their outputs gets its outputs from ``legacy_outputs(key, doc)``
    (the stage knows where such a unit's data lives); without that callable it is trusted as it is.
    """
    present = set(store.list(done_prefix))
    keys = sorted(present) if only is None else [k for k in only if k in present]
    keys = [k for k in keys if k.endswith(".json")]
    docs = read_markers(store, keys)
    sizes: dict[str, int] = {}
    for prefix in data_prefixes:
        sizes.update(store.list_sizes(prefix))
    scan = MarkerScan()
    for key in keys:
        doc = docs.get(key)
        if doc is None:
            scan.invalid.append(key)
            continue
        if "outputs" not in doc and legacy_outputs is not None:
            doc = {**doc, "outputs": legacy_outputs(key, doc)}
        if _proves(doc, sizes):
            scan.done[key] = doc
        else:
            scan.invalid.append(key)
    if scan.invalid:
        log.warning(
            "%s: %d markers under %s do not match their data and count as not done: %s",
            store.uri,
            len(scan.invalid),
            done_prefix,
            ", ".join(scan.invalid[:5]),
        )
    return scan


def verify_outputs(store: Store, doc: Mapping[str, Any]) -> list[str]:
    """Deep check of one marker: re-read each whole-object output, compare sha256; the keys that differ."""
    bad = []
    for out in doc.get("outputs", ()):
        if "sha256" not in out:
            continue
        try:
            data = store.read_bytes(out["key"])
        except FileNotFoundError:
            bad.append(out["key"])
            continue
        if hashlib.sha256(data).hexdigest() != out["sha256"]:
            bad.append(out["key"])
    return bad
