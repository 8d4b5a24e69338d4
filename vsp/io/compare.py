"""Hash every array and table of a store, leaving out what legitimately differs between runs.

"Identical before and after" claims are checked with this, not by eye: ``python -m vsp.io.compare A B`` prints
which arrays, tables and documents differ between two stores (a refactor must show none).

What is hashed: every Zarr array's values (float arrays bit for bit, labels as text), every Parquet table's
rows (columns in order, values bit for bit; file-level metadata ignored), and every JSON document and text
file with its volatile fields removed: timestamps (``created``, ``finished``, ``started``, ...), durations
(``seconds``), hosts, pids, versions and paths of the store itself. Figures (PNG) are compared by bytes only
when asked (``--figures``): matplotlib embeds its version and fonts.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Iterable
from typing import Any

import numpy as np

from vsp.io.store import Store, open_store

VOLATILE = frozenset(
    {
        "created", "finished", "started", "seconds", "time", "timings", "host", "pid", "process_start",
        "boot_id", "versions", "git_commit", "submission_id", "attempt_id", "path", "tables_dir", "files",
        "summary", "store", "uri", "device",
    }
)  # fmt: skip
RUN_RECORDS = ("run.json", "runs/")  # the run's own history: attempts, hosts and times by nature


def _scrub(obj: Any, root: str) -> Any:
    if isinstance(obj, dict):
        return {k: _scrub(v, root) for k, v in sorted(obj.items()) if k not in VOLATILE}
    if isinstance(obj, list):
        return [_scrub(v, root) for v in obj]
    if isinstance(obj, str) and root and root in obj:
        return obj.replace(root, "<store>")
    return obj


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _array_digest(values: np.ndarray) -> str:
    if values.dtype.kind in "OTUS":
        return _digest("\0".join(map(str, values.ravel())).encode())
    return _digest(np.ascontiguousarray(values).tobytes() + str(values.shape).encode())


def _zarr_hashes(store: Store, root_key: str) -> dict[str, str]:
    import zarr

    out: dict[str, str] = {}

    def walk(group: Any, prefix: str) -> None:
        for name, arr in group.arrays():
            out[f"{prefix}{name}"] = _array_digest(np.asarray(arr[...]))
        for name, sub in group.groups():
            walk(sub, f"{prefix}{name}/")

    walk(zarr.open_group(store=store.zarr_store(root_key), mode="r", zarr_format=3), f"{root_key}/")
    return out


def _table_digest(data: bytes) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(pa.BufferReader(data))
    h = hashlib.sha256()
    for name, col in zip(table.column_names, table.columns, strict=True):
        h.update(name.encode())
        h.update(json.dumps(col.to_pylist(), default=str, sort_keys=True).encode())
    return h.hexdigest()


def store_hashes(store: Store, figures: bool = False, data_only: bool = False) -> dict[str, str]:
    """One digest per array, table and document under the store (keys relative to it).

    ``data_only``: arrays and Parquet tables alone (to compare stores whose manifests and markers have
    different formats, e.g. written by two vsp versions).
    """
    keys = store.list("")
    out: dict[str, str] = {}
    zarr_roots = sorted({k.split(".zarr/", 1)[0] + ".zarr" for k in keys if ".zarr/" in k})
    for root in zarr_roots:
        out |= _zarr_hashes(store, root)
    for key in keys:
        if ".zarr/" in key or key.startswith(RUN_RECORDS) or ".claims/" in key:
            continue
        if key.endswith(".parquet"):
            out[key] = _table_digest(store.read_bytes(key))
        elif data_only:
            continue
        elif key.endswith(".json"):
            out[key] = _digest(json.dumps(_scrub(store.read_json(key), store.uri), sort_keys=True).encode())
        elif key.endswith(".txt"):
            out[key] = _digest(store.read_bytes(key).replace(store.uri.encode(), b"<store>"))
        elif key.endswith(".png") and not figures:
            continue
        else:
            out[key] = _digest(store.read_bytes(key))
    return out


def compare(a: dict[str, str], b: dict[str, str], only: Iterable[str] = ()) -> dict[str, list[str]]:
    """Keys only in ``a``, only in ``b``, and in both with different digests (restricted to prefixes)."""
    prefixes = tuple(only)
    keep = (lambda k: k.startswith(prefixes)) if prefixes else (lambda _k: True)
    ka, kb = {k for k in a if keep(k)}, {k for k in b if keep(k)}
    return {
        "only_in_a": sorted(ka - kb),
        "only_in_b": sorted(kb - ka),
        "different": sorted(k for k in ka & kb if a[k] != b[k]),
        "same": sorted(k for k in ka & kb if a[k] == b[k]),
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m vsp.io.compare A B [--only features/ decode/] [--json]``; exit 1 when anything differs."""
    ap = argparse.ArgumentParser(prog="python -m vsp.io.compare", description=__doc__.split("\n\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--only", nargs="*", default=(), help="key prefixes to compare (e.g. features/ decode/)")
    ap.add_argument("--figures", action="store_true", help="compare PNG figures by bytes too")
    ap.add_argument("--data-only", action="store_true", help="arrays and Parquet tables only")
    ap.add_argument("--json", action="store_true", help="print the comparison as JSON")
    args = ap.parse_args(argv)
    ha = store_hashes(open_store(args.a, create=False), args.figures, args.data_only)
    hb = store_hashes(open_store(args.b, create=False), args.figures, args.data_only)
    result = compare(ha, hb, args.only)
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "same"} | {"same": len(result["same"])}))
    else:
        print(f"{len(result['same'])} identical")
        for what in ("different", "only_in_a", "only_in_b"):
            for key in result[what]:
                print(f"{what}: {key}")
    return 1 if result["different"] or result["only_in_a"] or result["only_in_b"] else 0


if __name__ == "__main__":
    sys.exit(main())
