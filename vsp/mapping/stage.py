"""The `vsp map` stage without Ray: zero-shot property mapping of every stored embedding (paper Table 2).

Grid: (embedding, mapper, repeat, fold), the folds of `vsp.mapping.mappers.split_plan` (``RepeatedKFold``). A
**unit** is a run of consecutive folds of one (embedding, mapper, repeat): ``folds_per_task`` folds (0 =
auto: one fold per unit for the MLP, whose folds take seconds to minutes each, all folds of a repeat for kNN
and ridge, which take milliseconds). Each unit is one `vsp.mapping.mappers.run_fold` call per fold, writes

    mapping/units/<embedding>/<mapper>/r<R>-f<a>-<b>.parquet    one row per fold (UNIT_SCHEMA)
    mapping/done/<embedding>/<mapper>/r<R>-f<a>-<b>.json        marker, written after the Parquet

and is the resumability key: a rerun skips units whose marker exists. ``mapping/manifest.json`` records the
configuration (without the embedding and mapper selections, which may grow between runs), the norms digest
and each mapped embedding's digest; a rerun with another configuration, other norms or a changed embedding
is refused (`ConfigMismatchError`). ``mapping/table2.parquet`` (`vsp.mapping.mappers.summarise` of every
finished unit: Hit@T pooled over folds) and ``mapping/table2.txt`` are rewritten at the end of each run, and
beside them Table 2's intervals and paired tests (`vsp.mapping.statistics`).

Targets: the PF-valued property vectors (``norms.pf``) of the embedding's concepts that are in the norms and
have at least one property; the candidate set of the ranking is all of those concepts (`vsp.mapping.mappers`).

Meta-embeddings and the test concepts (``meta_fit``)
    ``"all"`` (default): the SVD and 1ToN embeddings (and their ``+text`` versions) are used as `vsp meta`
    stored them, fitted once, label-free, on **all** concepts, including those each outer fold tests on
    (transductive; presumably as in the paper). ``"train"``: inductive; in each outer fold the unit refits
    the meta-embedding from the stored features on the fold's **training** concepts only (`MetaRefit`): SVD
    projects the test concepts onto the training basis (`vsp.meta.methods.svd_meta_inductive`), 1ToN trains on
    the training concepts and solves the test concepts' meta-embeddings by least squares through its learned
    maps (`vsp.meta.methods.onetoN_project`); a ``+text`` embedding then joins the text vectors as `vsp meta`
    does. Each fold's refitted image embedding is cached once under ``mapping/meta_fit/<image
    embedding>/<key>/`` (the kNN, ridge and MLP units of that fold share it). Other embeddings are mapped as
    stored either way. The choice is part of the run's identity and is printed under Table 2.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from vsp.config import SEED_MAX, identity_fields, setting
from vsp.data.norms import Norms
from vsp.errors import ConfigMismatchError, VspInputError
from vsp.io.bookkeeping import MarkerScan, digest, open_manifest, scan_markers, write_marker, write_output
from vsp.io.store import Store
from vsp.mapping import mappers as mapping
from vsp.meta.stage import MANIFEST as META_MANIFEST
from vsp.meta.stage import Embedding, embedding_names, read_embedding, write_text
from vsp.stage import Resources, Stage, StageContext

log = logging.getLogger(__name__)

__all__ = [
    "META_FIT",
    "UNIT_SCHEMA",
    "MappingConfig",
    "MappingData",
    "MappingSummary",
    "MetaRefit",
    "Unit",
    "meta_fit_note",
    "meta_fold_matrix",
    "plan_units",
    "prepare",
    "read_rows",
    "read_table2",
    "run_mapping_local",
    "run_unit",
    "table2_text",
]

ROOT = "mapping"
MANIFEST = f"{ROOT}/manifest.json"
TABLE2 = f"{ROOT}/table2.parquet"
TABLE2_TXT = f"{ROOT}/table2.txt"
META_FIT_ROOT = f"{ROOT}/meta_fit"
#: ``all``: SVD / 1ToN fitted once on every concept (transductive); ``train``: refitted per outer fold.
META_FIT = ("all", "train")
META_KINDS = ("svd", "1ton")

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
        ("inner_folds", pa.int32()),  # inner CV folds used (fewer than asked when the training fold is small)
        ("test_concepts", pa.list_(pa.string())),
        ("ranks", pa.list_(pa.int32())),
    ]
)


@dataclass(frozen=True)
class MappingConfig:
    """What decides the mapping numbers, and which embeddings / mappers to run.

    ``embeddings`` (fnmatch patterns; None = all) and ``mappers`` select work and are not part of the run's
    identity; every other field is.

    Grids: `vsp.mapping.mappers.DEFAULT_GRIDS`, with ``mlp_epochs`` / ``mlp_lr`` / ``mlp_weight_decay`` /
    ``ridge_alphas`` replacing a grid axis when given (a lighter MLP for demos and CPU-only machines).
    """

    embeddings: tuple[str, ...] | None = setting(None, identity=False, doc="names or fnmatch patterns")
    mappers: tuple[str, ...] = setting(
        mapping.MAPPERS, identity=False, choices=mapping.MAPPERS, choice_word="mapper"
    )
    repeats: int = setting(5, minimum=1)
    folds: int = setting(10, minimum=2)
    seed: int = setting(0, minimum=0, maximum=SEED_MAX)
    candidates: str = setting("all", choices=("all", "test"))
    inner_folds: int = setting(5, minimum=2)
    mlp_epochs: tuple[int, ...] | None = None
    mlp_lr: tuple[float, ...] | None = setting(None, positive=True)
    # run-file key mlp_wd (fixed by an earlier release; mlp_weight_decay is accepted too), CLI --mlp-wd
    mlp_weight_decay: tuple[float, ...] | None = setting(
        None, key="mlp_wd", aliases=("mlp_weight_decay",), minimum=0.0
    )
    ridge_alphas: tuple[float, ...] | None = setting(None, positive=True)
    # 0: auto (1 for the MLP, all folds of a repeat otherwise); identity (the stage's manifest records it)
    folds_per_task: int = setting(0, minimum=0)
    # all | train: where the SVD / 1ToN meta-embeddings are fitted (module docstring)
    meta_fit: str = setting("all", choices=META_FIT)

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
        if self.meta_fit not in META_FIT:
            raise VspInputError(f"meta_fit must be one of {', '.join(META_FIT)}, got {self.meta_fit!r}")

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
        d = identity_fields(self)  # embeddings and mappers select work: not identity
        d["grids"] = {m: self.grid(m) for m in mapping.MAPPERS}
        return json.loads(json.dumps(d))


@dataclass
class MetaRefit:
    """How an SVD / 1ToN meta embedding is refitted in each outer fold (``meta_fit="train"``).

    ``image``: the image embedding whose fit this is (the embedding itself, or the image part of a ``+text``
    one). ``sources``: its feature layers, in the meta stage's order; ``rows``: the feature-store row of each
    mapped concept (`MappingData.concepts` order). ``params``: svd ``weights``, ``dim``; 1ton ``k``,
    ``scales``, ``betas``, ``lam``, ``seed``, ``epochs``, ``lr`` (as `vsp meta` used them). ``text``: for a
    ``+text`` embedding the mapped concepts' stored text vectors, else None. ``key``: a digest of everything
    the fold fits depend on (features, sources, concepts, params, CV plan): names their cache.
    """

    kind: str
    model: str
    image: str
    sources: list[str]
    rows: list[int]
    params: dict[str, Any]
    key: str
    text: np.ndarray | None = None


@dataclass
class MappingData:
    """One embedding's inputs: X (embedding rows) and Y (PF property vectors) of the shared concepts.

    ``refit``: with ``meta_fit="train"``, how each outer fold recomputes X for an SVD / 1ToN embedding.
    """

    name: str
    concepts: list[str]
    X: np.ndarray
    Y: np.ndarray
    digest: str
    refit: MetaRefit | None = None


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
    data = []
    for n in names:
        emb = read_embedding(store, n)
        d = align(emb, norms)
        if config.meta_fit == "train":
            d.refit = refit_spec(store, emb, d, config)
        data.append(d)
    identity = {"format": 1, "config": config.identity(), "norms": pf_digest(norms)}
    return data, identity


def refit_spec(store: Store, emb: Embedding, data: MappingData, config: MappingConfig) -> MetaRefit | None:
    """What refitting ``emb`` per outer fold needs (None for an embedding that is not SVD / 1ToN based).

    Read from the meta stage's records: the image embedding's marker (sources, weights or scales and betas),
    the meta manifest (1ToN's size, seed, epochs, learning rate, penalty) and the feature store, which must
    be the one the meta-embeddings were built from.
    """
    from vsp.extract.features import FeatureStore
    from vsp.meta.stage import read_embedding_info

    kind = emb.info.get("kind")
    if kind not in META_KINDS:
        return None
    image = str(emb.info.get("image") or emb.name)
    marker = read_embedding_info(store, image)
    meta_id = store.read_json(META_MANIFEST)["identity"]
    man = FeatureStore(store).manifest()
    if man is None:
        raise VspInputError(
            f"{store.uri}: meta_fit=train refits {emb.name} from the features `vsp meta` built it from, "
            "but the store has no features"
        )
    features = digest(man["identity"])
    if meta_id.get("features") not in (None, features):
        raise ConfigMismatchError(
            f"{store.uri}: the features changed since `vsp meta` built {emb.name}; rerun `vsp meta`"
        )
    sources = list(marker["sources"])
    mc = meta_id["config"]
    if kind == "svd":
        dim = int(marker.get("dim_requested", mc["dim"]))
        params: dict[str, Any] = {"weights": list(marker["weights"]), "dim": dim}
    else:
        params = {
            "k": int(mc["k"]),
            "scales": list(marker.get("scales") or [1.0] * len(sources)),  # older markers: unscaled sources
            "betas": list(marker["betas"]),
            "lam": float(mc["onetoN_lam"]),
            "seed": int(mc["seed"]),
            "epochs": int(mc["onetoN_epochs"]),
            "lr": float(mc["onetoN_lr"]),
        }
    index = {c: i for i, c in enumerate(man["identity"]["concepts"])}
    missing = [c for c in data.concepts if c not in index]
    if missing:
        raise VspInputError(f"{emb.name}: concepts {missing[:5]} have no features to refit from")
    rows = [index[c] for c in data.concepts]
    text = None
    if emb.info.get("text"):  # <image>+<text name>
        temb = read_embedding(store, emb.name[len(image) + 1 :])
        tpos = {c: i for i, c in enumerate(temb.concepts)}
        text = temb.matrix[[tpos[c] for c in data.concepts]]
    cv = [config.repeats, config.folds, config.seed]
    key = digest([features, image, kind, sources, data.concepts, params, cv])[:16]
    return MetaRefit(str(kind), str(emb.info.get("model")), image, sources, rows, params, key, text)


_SOURCES: dict[tuple, list[np.ndarray]] = {}  # the last embedding's source rows (units come in order)


def _source_rows(store: Store, r: MetaRefit) -> list[np.ndarray]:
    """The refit's source layers, rows of the mapped concepts (the last one read is kept per process)."""
    key = (store.uri, r.model, tuple(r.sources), tuple(r.rows))
    if key not in _SOURCES:
        from vsp.extract.features import FeatureStore

        fs = FeatureStore(store)
        rows = np.asarray(r.rows, dtype=np.int64)
        mats = [np.asarray(fs.read(r.model, name))[rows] for name in r.sources]
        _SOURCES.clear()
        _SOURCES[key] = mats
    return _SOURCES[key]


def fit_fold(
    mats: Sequence[np.ndarray], r: MetaRefit, split: mapping.Split, device: str = "cpu"
) -> np.ndarray:
    """The image meta-embedding of one outer fold: fitted on ``split.train``, test rows projected; float32."""
    from vsp.meta.methods import onetoN_meta, onetoN_project, svd_meta_inductive

    tr, te = split.train, split.test
    p = r.params
    if r.kind == "svd":
        a, b = svd_meta_inductive(mats, tr, te, p["weights"], dim=p["dim"])
    else:
        fit = onetoN_meta(
            [m[tr] for m in mats], k=p["k"], betas=p["betas"], lam=p["lam"], seed=p["seed"],
            epochs=p["epochs"], lr=p["lr"], device=device, scales=p["scales"],
        )  # fmt: skip
        a, b = fit.embeddings, onetoN_project([m[te] for m in mats], fit)
    out = np.zeros((len(r.rows), a.shape[1]), dtype=np.float32)
    out[tr], out[te] = a, b
    return out


def _load_npy(store: Store, path: str) -> np.ndarray:
    return np.load(io.BytesIO(store.read_bytes(path)), allow_pickle=False)


def meta_fold_matrix(
    store: Store, data: MappingData, split: mapping.Split, device: str = "cpu"
) -> np.ndarray:
    """X of one outer fold for an inductive meta embedding (``data.refit``), float64 like `align`'s.

    The image part is read from the fold's cache, or fitted (`fit_fold`) and cached write-once (of two units
    fitting the same fold at once, both use the one stored first); a ``+text`` embedding then joins the text
    vectors with `vsp.data.text.multimodal`, exactly as the meta stage built it.
    """
    r = data.refit
    if r is None:
        raise VspInputError(f"{data.name}: not an inductive meta embedding")
    path = f"{META_FIT_ROOT}/{r.image}/{r.key}/r{split.repeat}-f{split.fold}.npy"
    if store.exists(path):
        img = _load_npy(store, path)
    else:
        img = fit_fold(_source_rows(store, r), r, split, device)
        buf = io.BytesIO()
        np.save(buf, img, allow_pickle=False)
        if not store.create_exclusive(path, buf.getvalue()):
            img = _load_npy(store, path)
    if r.text is None:
        return np.asarray(img, dtype=np.float64)
    from vsp.data.text import multimodal

    _, mm = multimodal((data.concepts, r.text), (data.concepts, img))
    return np.asarray(mm, dtype=np.float64)


def open_run(
    store: Store,
    identity: dict[str, Any],
    data: Sequence[MappingData],
    norms_shape: Sequence[int] | None = None,
) -> None:
    """Claim the prefix for this mapping run (with each embedding's digest), join it, or refuse another run.

    Embeddings mapped for the first time are added to the manifest's digests (a superset: nothing recorded
    is ever dropped); an embedding whose digest changed since it was mapped is refused.
    """
    digests_now = {d.name: d.digest for d in data}
    extra = {"embeddings": digests_now, "norms_shape": list(norms_shape) if norms_shape else None}
    man, created = open_manifest(store, MANIFEST, identity, "mapping run", extra)
    if created:
        return
    digests = dict(man.get("embeddings", {}))
    changed = [d.name for d in data if d.name in digests and digests[d.name] != d.digest]
    if changed:
        raise ConfigMismatchError(
            f"{store.uri}/{MANIFEST}: embeddings {changed} changed since they were mapped; "
            "delete the mapping/ folder to map them again"
        )
    if any(n not in digests for n in digests_now):
        latest = store.read_json(MANIFEST)  # re-read just before the write: keep what others added
        merged = {**digests_now, **latest.get("embeddings", {})}
        store.write_json(MANIFEST, {**latest, "embeddings": merged})


def _legacy_outputs(marker: str, _doc: dict) -> list[dict]:
    """A marker written before markers listed their outputs covers its unit's Parquet."""
    return [{"key": f"{ROOT}/units/{_rel(marker)}.parquet"}]


def done_markers(store: Store, units: Sequence[Unit] | None = None) -> MarkerScan:
    """The units' markers checked against their Parquet (every marker when ``units`` is None)."""
    only = None if units is None else [u.marker_path for u in units]
    return scan_markers(store, f"{ROOT}/done", [f"{ROOT}/units"], _legacy_outputs, only)


def pending(store: Store, units: Sequence[Unit]) -> list[Unit]:
    """Units not proven done: no marker, or a marker whose Parquet is missing or of another size."""
    scan = done_markers(store, units)
    return [u for u in units if u.marker_path not in scan]


def compute_unit(
    data: MappingData,
    config: MappingConfig,
    unit: Unit,
    splits: Sequence[mapping.Split],
    device: str = "cpu",
    fold_x: Callable[[mapping.Split], np.ndarray] | None = None,
) -> pa.Table:
    """Run the unit's folds (`vsp.mapping.mappers.run_fold`); a table of UNIT_SCHEMA rows. No I/O of its own.

    ``fold_x(split)``: the fold's X (an inductive meta embedding, `meta_fold_matrix`); default ``data.X``.
    """
    rows = []
    grid = config.grid(unit.mapper)
    for sp in splits:
        r = mapping.run_fold(
            data.X if fold_x is None else fold_x(sp),
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
                "inner_folds": r["inner_folds"],
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
    fold_x = None
    info: dict[str, Any] = {}
    if data.refit is not None:

        def fold_x(sp: mapping.Split) -> np.ndarray:
            return meta_fold_matrix(store, data, sp, device)

        info = {"meta_fit": "train", "meta_fit_key": data.refit.key}
    table = compute_unit(data, config, unit, splits or unit_splits(data, config, unit), device, fold_x)
    out = write_output(store, unit.result_path, table)
    seconds = round(time.perf_counter() - t0, 3)
    write_marker(store, unit.marker_path, [out], folds=table.num_rows, seconds=seconds, device=device, **info)
    return table.num_rows


def read_rows(store: Store, units: Sequence[Unit] | None = None):
    """Every finished unit's rows (all of the store's when ``units`` is None), as a pandas DataFrame."""
    import pandas as pd

    scan = done_markers(store, units)
    if units is None:
        paths = [f"{ROOT}/units/{_rel(k)}.parquet" for k in sorted(scan.done)]
    else:
        paths = [u.result_path for u in units if u.marker_path in scan]
    if not paths:
        return pd.DataFrame(columns=UNIT_SCHEMA.names)
    return pa.concat_tables([store.read_parquet(p) for p in paths]).to_pandas()


def read_table2(store: Store):
    """Table 2 (pandas) of the units whose marker proves them: `vsp.mapping.mappers.summarise` of their folds.

    One row per (embedding, mapper), in plan order: Hit@T pooled over folds, ``n_folds``, ``n_test``,
    ``n_concepts`` (distinct test concepts), ``meta_fit`` (SVD / 1ToN rows); empty when no unit is done.
    """
    import pandas as pd

    rows = read_rows(store)
    summary = pd.DataFrame(mapping.summarise(rows.to_dict("records")))
    if summary.empty:
        return summary
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
    fit = recorded_meta_fit(store)
    summary["meta_fit"] = [fit if _is_meta(store, e) else None for e in summary["embedding"]]
    return summary


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


def finish(store: Store) -> list[str]:
    """Table 2 from every finished unit: Parquet + text; then its intervals and paired tests."""
    from vsp.mapping.statistics import write_table2_statistics

    summary = read_table2(store)
    if summary.empty:
        return []
    store.write_parquet(TABLE2, pa.Table.from_pandas(summary, preserve_index=False))
    write_text(store, TABLE2_TXT, table2_text(store))
    return [TABLE2, TABLE2_TXT, *write_table2_statistics(store, summary, read_rows(store))]


def recorded_meta_fit(store: Store) -> str:
    """The ``meta_fit`` of the store's mapping run (``all`` for runs recorded before the option)."""
    if not store.exists(MANIFEST):
        return "all"
    return str(store.read_json(MANIFEST).get("identity", {}).get("config", {}).get("meta_fit", "all"))


def _is_meta(store: Store, name: str) -> bool:
    """Whether the stored embedding ``name`` is SVD / 1ToN based (its own kind or its image part's)."""
    from vsp.meta.stage import read_embedding_info

    try:
        return read_embedding_info(store, name).get("kind") in META_KINDS
    except (OSError, VspInputError, KeyError):
        return False


META_FIT_NOTES = {
    "all": (
        "SVD and 1ToN meta-embeddings (and their +text rows) are fitted once, label-free, on all concepts, "
        "including the ones each outer fold tests on (transductive; presumably as in the paper); "
        "`map.meta_fit: train` (`vsp map --meta-fit train`) refits them per outer fold on its training "
        "concepts."
    ),
    "train": (
        "SVD and 1ToN meta-embeddings (and their +text rows) are refitted in every outer fold on its "
        "training concepts only (inductive, meta_fit: train): the test concepts are projected onto the "
        "training SVD basis, or their 1ToN meta-embeddings solved by least squares through the maps learned "
        "on the training concepts."
    ),
}


def meta_fit_note(store: Store) -> str:
    """One sentence on where the mapped SVD / 1ToN meta-embeddings were fitted ("" when none was mapped)."""
    if not store.exists(MANIFEST):
        return ""
    names = store.read_json(MANIFEST).get("embeddings", {})
    if not any(_is_meta(store, n) for n in names):
        return ""
    return META_FIT_NOTES.get(recorded_meta_fit(store), "")


def _embedding_order(store: Store, names: list[str]) -> dict[str, int]:
    plan = []
    if store.exists(META_MANIFEST):
        plan = [e["name"] for e in store.read_json(META_MANIFEST).get("plan", [])]
    pos = {n: i for i, n in enumerate(plan)}
    return {n: pos.get(n, len(plan) + i) for i, n in enumerate(names)}


def table2_text(store: Store) -> str:
    """Table 2 as text: Hit@1/5/10/20 (%) per embedding x mapper (the run's; the paper's: `vsp report`)."""
    df = store.read_parquet(TABLE2).to_pandas()
    width = max([len("embedding"), *(len(n) for n in df["embedding"])]) + 2
    head = (
        "embedding".ljust(width)
        + f"{'mapper':<7}{'folds':>6}{'concepts':>9}"
        + "".join(f"{'Hit@' + str(t):>16}" for t in mapping.HITS)
    )
    lines = ["Table 2: zero-shot property mapping, Hit@T (% of test concepts, pooled over folds)", head]
    for _, r in df.iterrows():
        cells = [f"{r[f'hit{t}']:>16.2f}" for t in mapping.HITS]
        n_concepts = int(r["n_concepts"])
        lines.append(
            str(r["embedding"]).ljust(width)
            + f"{r['mapper']:<7}{int(r['n_folds']):>6}{n_concepts:>9}"
            + "".join(cells)
        )
    fit_note = meta_fit_note(store)
    if fit_note:
        lines.append(f"meta-embeddings: {fit_note}")
    return "\n".join(lines)


def run_mapping_local(
    store: Store,
    norms: Norms,
    config: MappingConfig,
    device: str = "cpu",
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
    outputs = finish(store)
    return MappingSummary(store.uri, len(units), len(todo), folds, time.perf_counter() - t0, outputs)


# ------------------------------------------------------------------------------------------------ the stage
class MapStage(Stage):
    """Every stored embedding to the property vectors (kNN, ridge, MLP) under repeated k-fold CV (Table 2).

    Units: one per MLP fold, one per embedding and repeat for kNN and ridge; on a cluster they run as
    tasks (``cluster.mapping``, MLP units with a GPU share), here in turn. Table 2 is rebuilt after.
    """

    name = "map"
    root = ROOT
    Config = MappingConfig
    needs = ("norms",)
    resources = Resources(cpus=1, gpus=0.25)
    unit_word = "units"

    def run(self, ctx: StageContext) -> dict[str, Any]:
        """Run the pending units; counts for run.json."""
        norms = ctx.norms()
        config = ctx.settings(self.name)
        summary = self.drive(
            ctx, "cluster.mapping:run_mapping_ray", run_mapping_local, norms, config, what="folds",
            ray_kw={"gpus_per_mlp_task": self.resources.gpus},
        )  # fmt: skip
        return self.counts(summary, folds=summary.folds, outputs=list(summary.outputs))

    def marker_scans(self, store: Store) -> list[MarkerScan]:
        """Every unit's marker against its Parquet (older markers without outputs included)."""
        return [done_markers(store)]

    def progress(self, store: Store) -> dict[str, Any] | None:
        """Mapping units (markers) of the grid: mapped embeddings x mappers x repeats x fold chunks."""
        from vsp.mapping.mappers import MAPPERS
        from vsp.runrecord import read_run

        if not store.exists(MANIFEST):
            return None
        man = store.read_json(MANIFEST)
        cfg = man["identity"]["config"]
        run = read_run(store) or {}
        mappers = ((run.get("config") or {}).get("map") or {}).get("mappers") or list(MAPPERS)  # not identity
        per_embedding = 0
        for m in mappers:
            fpt = cfg["folds_per_task"]
            step = min(fpt, cfg["folds"]) if fpt else (1 if m == "mlp" else cfg["folds"])
            per_embedding += cfg["repeats"] * -(-cfg["folds"] // step)
        total = per_embedding * len(man.get("embeddings", {}))
        done = min(len(done_markers(store).done), total)  # the stage's own test: marker and data
        return {
            "what": "units",
            "done": done,
            "total": total,
            "complete": done == total and store.exists(TABLE2),
        }
