"""The `vsp map` stage without Ray: zero-shot property mapping of every stored embedding (paper Table 2).

Grid: (embedding, mapper, repeat, fold), the folds of `vsp.mapping.split_plan` (``RepeatedKFold``). A
**unit** is a run of consecutive folds of one (embedding, mapper, repeat): ``folds_per_task`` folds (0 =
auto: one fold per unit for the MLP, whose folds take seconds to minutes each, all folds of a repeat for kNN
and ridge, which take milliseconds). Each unit is one `vsp.mapping.run_fold` call per fold, writes

    mapping/units/<embedding>/<mapper>/r<R>-f<a>-<b>.parquet    one row per fold (UNIT_SCHEMA)
    mapping/done/<embedding>/<mapper>/r<R>-f<a>-<b>.json        marker, written after the Parquet

and is the resumability key: a rerun skips units whose marker exists. ``mapping/manifest.json`` records the
configuration (without the embedding and mapper selections, which may grow between runs), the norms digest
and each mapped embedding's digest; a rerun with another configuration, other norms or a changed embedding
is refused (`ConfigMismatchError`). ``mapping/table2.parquet`` (`vsp.mapping.summarise` of every finished
unit: Hit@T pooled over folds) and ``mapping/table2.txt`` are rewritten at the end of each run.

Targets: the PF-valued property vectors (``norms.pf``) of the embedding's concepts that are in the norms and
have at least one property; the candidate set of the ranking is all of those concepts (`vsp.mapping`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from vsp import mapping
from vsp.embeddings import MANIFEST as META_MANIFEST
from vsp.embeddings import Embedding, PaperCheck, embedding_names, read_embedding, write_text
from vsp.errors import ConfigMismatchError, VspInputError
from vsp.norms import Norms
from vsp.store import Store

log = logging.getLogger(__name__)

__all__ = [
    "UNIT_SCHEMA",
    "MappingConfig",
    "MappingData",
    "MappingSummary",
    "Unit",
    "plan_units",
    "prepare",
    "read_rows",
    "run_mapping_local",
    "run_unit",
    "table2_text",
]

ROOT = "mapping"
MANIFEST = f"{ROOT}/manifest.json"
TABLE2 = f"{ROOT}/table2.parquet"
TABLE2_TXT = f"{ROOT}/table2.txt"

UNIT_SCHEMA = pa.schema(
    [
        ("embedding", pa.string()),
        ("mapper", pa.string()),
        ("repeat", pa.int32()),
        ("fold", pa.int32()),
        ("n_test", pa.int32()),
        ("hit1", pa.float64()),
        ("hit5", pa.float64()),
        ("hit10", pa.float64()),
        ("hit20", pa.float64()),
        ("params", pa.string()),
        ("inner_map", pa.float64()),
        ("test_concepts", pa.list_(pa.string())),
        ("ranks", pa.list_(pa.int32())),
    ]
)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass(frozen=True)
class MappingConfig:
    """What decides the mapping numbers, and which embeddings / mappers to run.

    ``embeddings`` (fnmatch patterns; None = all) and ``mappers`` select work and are not part of the run's
    identity; every other field is.

    Grids: `vsp.mapping.DEFAULT_GRIDS`, with ``mlp_epochs`` / ``mlp_lr`` / ``mlp_weight_decay`` /
    ``ridge_alphas`` replacing a grid axis when given (a lighter MLP for demos and CPU-only machines).
    """

    embeddings: tuple[str, ...] | None = None
    mappers: tuple[str, ...] = mapping.MAPPERS
    repeats: int = 5
    folds: int = 10
    seed: int = 0
    candidates: str = "all"
    inner_folds: int = 5
    mlp_epochs: tuple[int, ...] | None = None
    mlp_lr: tuple[float, ...] | None = None
    mlp_weight_decay: tuple[float, ...] | None = None
    ridge_alphas: tuple[float, ...] | None = None
    folds_per_task: int = 0  # 0: auto (1 for the MLP, all folds of a repeat otherwise)

    def __post_init__(self) -> None:
        bad = [m for m in self.mappers if m not in mapping.MAPPERS]
        if bad or not self.mappers:
            raise VspInputError(
                f"unknown mappers {bad or '(none)'}; choose from {', '.join(mapping.MAPPERS)}"
            )
        if self.repeats < 1 or self.folds < 2:
            raise VspInputError(f"need repeats >= 1 and folds >= 2, got {self.repeats} and {self.folds}")
        if self.inner_folds < 2:
            raise VspInputError(f"inner_folds must be >= 2, got {self.inner_folds}")
        if self.candidates not in ("all", "test"):
            raise VspInputError(f"candidates must be 'all' or 'test', got {self.candidates!r}")
        if self.folds_per_task < 0:
            raise VspInputError(f"folds_per_task must be >= 0, got {self.folds_per_task}")

    def grid(self, mapper: str) -> dict[str, list[Any]]:
        """The hyper-parameter grid searched by the inner CV for ``mapper``."""
        g = {k: list(v) for k, v in mapping.DEFAULT_GRIDS[mapper].items()}
        if mapper == "mlp":
            for key, val in (
                ("epochs", self.mlp_epochs),
                ("lr", self.mlp_lr),
                ("weight_decay", self.mlp_weight_decay),
            ):
                if val:
                    g[key] = list(val)
        if mapper == "ridge" and self.ridge_alphas:
            g["alpha"] = list(self.ridge_alphas)
        return g

    def chunk(self, mapper: str) -> int:
        """Folds per unit for ``mapper``."""
        if self.folds_per_task:
            return min(self.folds_per_task, self.folds)
        return 1 if mapper == "mlp" else self.folds

    def identity(self) -> dict[str, Any]:
        """The fields that must match on a rerun (the grids spelled out)."""
        d = asdict(self)
        for k in ("embeddings", "mappers"):
            d.pop(k)
        d["grids"] = {m: self.grid(m) for m in mapping.MAPPERS}
        return json.loads(json.dumps(d))


@dataclass
class MappingData:
    """One embedding's inputs: X (embedding rows) and Y (PF property vectors) of the shared concepts."""

    name: str
    concepts: list[str]
    X: np.ndarray
    Y: np.ndarray
    digest: str


@dataclass(frozen=True)
class Unit:
    """A run of consecutive folds ``[start, stop)`` of one (embedding, mapper, repeat)."""

    embedding: str
    mapper: str
    repeat: int
    start: int
    stop: int

    @property
    def key(self) -> str:
        """The unit's key: <embedding>/<mapper>/r<R>-f<a>-<b>."""
        return f"{self.embedding}/{self.mapper}/r{self.repeat}-f{self.start}-{self.stop - 1}"

    @property
    def result_path(self) -> str:
        """Where the unit's Parquet goes."""
        return f"{ROOT}/units/{self.key}.parquet"

    @property
    def marker_path(self) -> str:
        """Where the unit's marker goes."""
        return f"{ROOT}/done/{self.key}.json"

    @property
    def n_folds(self) -> int:
        """Number of folds in the unit."""
        return self.stop - self.start


def pf_digest(norms: Norms) -> str:
    """A digest of the PF matrix and its labels: what the mapping targets are."""
    import hashlib

    h = hashlib.sha256(json.dumps([norms.concepts, norms.properties]).encode())
    h.update(np.ascontiguousarray(norms.pf, dtype=np.float32).tobytes())
    return h.hexdigest()


def align(emb: Embedding, norms: Norms) -> MappingData:
    """Rows of the embedding whose concept is in the norms with at least one property, and their PF rows."""
    index = {c: i for i, c in enumerate(norms.concepts)}
    pf = np.asarray(norms.pf, dtype=np.float64)
    rows, targets, no_props = [], [], []
    for r, c in enumerate(emb.concepts):
        i = index.get(c)
        if i is None:
            continue
        if not pf[i].any():
            no_props.append(c)
            continue
        rows.append(r)
        targets.append(i)
    outside = len(emb.concepts) - len(rows) - len(no_props)
    if outside or no_props:
        log.warning(
            "%s: %d concepts not in the norms, %d without any kept property (%s); mapped: %d",
            emb.name,
            outside,
            len(no_props),
            ", ".join(no_props[:10]),
            len(rows),
        )
    return MappingData(
        emb.name,
        [emb.concepts[r] for r in rows],
        np.asarray(emb.matrix[rows], dtype=np.float64),
        pf[targets],
        emb.digest(),
    )


def plan_units(data: Sequence[MappingData], config: MappingConfig) -> list[Unit]:
    """Every unit of the grid, in (embedding, mapper, repeat, fold) order."""
    units = []
    for d in data:
        if len(d.concepts) < config.folds:
            raise VspInputError(
                f"{d.name}: {len(d.concepts)} mapped concepts, fewer than --folds {config.folds}"
            )
        for m in config.mappers:
            step = config.chunk(m)
            for r in range(config.repeats):
                for a in range(0, config.folds, step):
                    units.append(Unit(d.name, m, r, a, min(a + step, config.folds)))
    return units


def prepare(store: Store, norms: Norms, config: MappingConfig) -> tuple[list[MappingData], dict[str, Any]]:
    """Read and align the selected embeddings; the run's identity (config + norms)."""
    names = embedding_names(store, config.embeddings)
    if not names:
        raise VspInputError(
            f"{store.uri}: no embeddings; run `vsp meta` first (`vsp meta --text glove --norms ...` "
            "builds a text-only store)"
        )
    data = [align(read_embedding(store, n), norms) for n in names]
    identity = {"format": 1, "config": config.identity(), "norms": pf_digest(norms)}
    return data, identity


def open_run(
    store: Store,
    identity: dict[str, Any],
    data: Sequence[MappingData],
    norms_shape: Sequence[int] | None = None,
) -> None:
    """Record the run (and each embedding's digest), or refuse a prefix holding a different mapping run."""
    if store.exists(MANIFEST):
        man = store.read_json(MANIFEST)
        have = man["identity"]
        if have != identity:
            diff = [k for k in sorted(set(have) | set(identity)) if have.get(k) != identity.get(k)]
            if "config" in diff:
                ca, cb = have.get("config", {}), identity.get("config", {})
                diff = [f"config.{k}" for k in sorted(set(ca) | set(cb)) if ca.get(k) != cb.get(k)] + [
                    k for k in diff if k != "config"
                ]
            raise ConfigMismatchError(
                f"{store.uri}/{MANIFEST} holds a different mapping run (differs in: {', '.join(diff)}); "
                "use another --store prefix or delete its mapping/ folder"
            )
        digests = dict(man.get("embeddings", {}))
        changed = [d.name for d in data if d.name in digests and digests[d.name] != d.digest]
        if changed:
            raise ConfigMismatchError(
                f"{store.uri}/{MANIFEST}: embeddings {changed} changed since they were mapped; "
                "delete the mapping/ folder to map them again"
            )
        new = {d.name: d.digest for d in data if d.name not in digests}
        if new:
            store.write_json(MANIFEST, {**man, "embeddings": {**digests, **new}})
        return
    store.write_json(
        MANIFEST,
        {
            "identity": identity,
            "embeddings": {d.name: d.digest for d in data},
            "norms_shape": list(norms_shape) if norms_shape else None,
            "created": _now(),
        },
    )


def pending(store: Store, units: Sequence[Unit]) -> list[Unit]:
    """Units whose marker is missing."""
    return [u for u in units if not store.exists(u.marker_path)]


def compute_unit(
    data: MappingData, config: MappingConfig, unit: Unit, splits: Sequence[mapping.Split], device: str = "cpu"
) -> pa.Table:
    """Run the unit's folds (`vsp.mapping.run_fold`); a table of UNIT_SCHEMA rows. Pure: no I/O."""
    rows = []
    grid = config.grid(unit.mapper)
    for sp in splits:
        r = mapping.run_fold(
            data.X,
            data.Y,
            unit.mapper,
            sp.train,
            sp.test,
            sp.seed,
            config.candidates,
            grid,
            config.inner_folds,
            device,
        )
        rows.append(
            {
                "embedding": data.name,
                "mapper": unit.mapper,
                "repeat": sp.repeat,
                "fold": sp.fold,
                "n_test": r["n_test"],
                **{f"hit{t}": r[f"hit{t}"] for t in mapping.HITS},
                "params": r["params"],
                "inner_map": r["inner_map"],
                "test_concepts": [data.concepts[i] for i in sp.test],
                "ranks": [int(x) for x in r["ranks"]],
            }
        )
    return pa.Table.from_pylist(rows, schema=UNIT_SCHEMA)


def unit_splits(data: MappingData, config: MappingConfig, unit: Unit) -> list[mapping.Split]:
    """The splits of one unit (split_plan is deterministic, so any worker can recompute them)."""
    plan = mapping.split_plan(len(data.concepts), config.repeats, config.folds, config.seed)
    return [plan[unit.repeat * config.folds + f] for f in range(unit.start, unit.stop)]


def run_unit(
    store: Store,
    data: MappingData,
    config: MappingConfig,
    unit: Unit,
    splits: Sequence[mapping.Split] | None = None,
    device: str = "cpu",
) -> int:
    """Compute one unit, write its Parquet, then its marker; returns the number of folds."""
    t0 = time.perf_counter()
    table = compute_unit(data, config, unit, splits or unit_splits(data, config, unit), device)
    store.write_parquet(unit.result_path, table)
    store.write_json(
        unit.marker_path,
        {
            "folds": table.num_rows,
            "seconds": round(time.perf_counter() - t0, 3),
            "device": device,
            "finished": _now(),
        },
    )
    return table.num_rows


def read_rows(store: Store, units: Sequence[Unit] | None = None):
    """Every finished unit's rows (all of the store's when ``units`` is None), as a pandas DataFrame."""
    import pandas as pd

    if units is None:
        keys = [k for k in store.list(f"{ROOT}/done") if k.endswith(".json")]
        paths = [f"{ROOT}/units/{_rel(k)}.parquet" for k in keys]
    else:
        paths = [u.result_path for u in units if store.exists(u.marker_path)]
    if not paths:
        return pd.DataFrame(columns=UNIT_SCHEMA.names)
    return pa.concat_tables([store.read_parquet(p) for p in paths]).to_pandas()


def _rel(key: str) -> str:
    """A key under mapping/done (relative or absolute form) -> the unit key."""
    key = key[:-5] if key.endswith(".json") else key
    marker = f"{ROOT}/done/"
    return key.split(marker, 1)[1] if marker in key else key


@dataclass
class MappingSummary:
    """What a mapping run did."""

    store: str
    units_total: int
    units_run: int
    folds: int
    seconds: float
    outputs: list[str]

    def line(self) -> str:
        """The stage's summary line."""
        if self.units_run == 0:
            return f"map: nothing to do, all {self.units_total} units already done in {self.store}/{ROOT}"
        return (
            f"map: {self.units_run} units ({self.folds} folds, {self.seconds:.1f}s) "
            f"written to {self.store}/{ROOT}; "
            f"{self.units_total - self.units_run} already done"
        )


def finish(store: Store, check: PaperCheck | None = None) -> list[str]:
    """Table 2 from every finished unit: Parquet + text."""
    import pandas as pd

    rows = read_rows(store)
    summary = pd.DataFrame(mapping.summarise(rows.to_dict("records")))
    if summary.empty:
        return []
    order = _embedding_order(store, list(summary["embedding"].unique()))
    summary["_e"] = summary["embedding"].map(order)
    summary["_m"] = summary["mapper"].map({m: i for i, m in enumerate(mapping.MAPPERS)})
    summary = summary.sort_values(["_e", "_m"]).drop(columns=["_e", "_m"]).reset_index(drop=True)
    uniq = rows.explode("test_concepts").groupby(["embedding", "mapper"])["test_concepts"].nunique()
    summary["n_concepts"] = [
        int(uniq.get((e, m), 0)) for e, m in zip(summary["embedding"], summary["mapper"], strict=True)
    ]
    summary["n_folds"] = summary["n_folds"].astype(np.int64)
    summary["n_test"] = summary["n_test"].astype(np.int64)
    store.write_parquet(TABLE2, pa.Table.from_pandas(summary, preserve_index=False))
    write_text(store, TABLE2_TXT, table2_text(store, check))
    return [TABLE2, TABLE2_TXT]


def _embedding_order(store: Store, names: list[str]) -> dict[str, int]:
    plan = []
    if store.exists(META_MANIFEST):
        plan = [e["name"] for e in store.read_json(META_MANIFEST).get("plan", [])]
    pos = {n: i for i, n in enumerate(plan)}
    return {n: pos.get(n, len(plan) + i) for i, n in enumerate(names)}


def table2_text(store: Store, check: PaperCheck | None = None) -> str:
    """Table 2 as text: Hit@1/5/10/20 (%) per embedding x mapper, paper numbers in brackets where allowed."""
    from vsp.paper_results import TABLE2 as PAPER
    from vsp.paper_results import canonical_embedding

    df = store.read_parquet(TABLE2).to_pandas()
    width = max([len("embedding"), *(len(n) for n in df["embedding"])]) + 2
    head = (
        "embedding".ljust(width)
        + f"{'mapper':<7}{'folds':>6}{'concepts':>9}"
        + "".join(f"{'Hit@' + str(t):>16}" for t in mapping.HITS)
    )
    lines = ["Table 2: zero-shot property mapping, Hit@T (% of test concepts, pooled over folds)", head]
    for _, r in df.iterrows():
        key = canonical_embedding(str(r["embedding"]))
        ref = PAPER.get(key, {}).get(r["mapper"]) if (check is not None and check.allows(key)) else None
        cells = []
        for t in mapping.HITS:
            s = f"{r[f'hit{t}']:.2f}"
            if ref is not None:
                s += f" [{ref[f'hit{t}']:.2f}]"
            cells.append(f"{s:>16}")
        n_concepts = int(r["n_concepts"])
        lines.append(
            str(r["embedding"]).ljust(width)
            + f"{r['mapper']:<7}{int(r['n_folds']):>6}{n_concepts:>9}"
            + "".join(cells)
        )
    if check is not None:
        lines.append(f"note: {check.note()}")
    return "\n".join(lines)


def run_mapping_local(
    store: Store,
    norms: Norms,
    config: MappingConfig,
    device: str = "cpu",
    check: PaperCheck | None = None,
    progress: Callable[[int, int, int], None] | None = None,
) -> MappingSummary:
    """Run every pending unit in this process (no Ray): the reference for the Ray fan-out."""
    t0 = time.perf_counter()
    data, identity = prepare(store, norms, config)
    open_run(store, identity, data, (len(norms.concepts), len(norms.properties)))
    by_name = {d.name: d for d in data}
    units = plan_units(data, config)
    todo = pending(store, units)
    folds = 0
    for k, u in enumerate(todo):
        folds += run_unit(store, by_name[u.embedding], config, u, device=device)
        if progress:
            progress(k + 1, len(todo), folds)
    outputs = finish(store, check)
    return MappingSummary(store.uri, len(units), len(todo), folds, time.perf_counter() - t0, outputs)
