"""The decoding-grid stage without Ray: units, their Parquet outputs and markers, resume, aggregation.

A unit is one (model, layer) of the feature store: all properties x all folds of that layer are fitted at once
by the batched probe (``vsp.decode.probe``), never one fit per task. Each unit writes
``decode/results/<model>/<layer>.parquet`` and then ``decode/done/<model>/<layer>.json``; a rerun skips units
whose marker exists, and a rerun with a different configuration on the same prefix is refused.
"""

from __future__ import annotations

import hashlib
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
from vsp.errors import VspInputError
from vsp.extract.features import FeatureStore, LayerInfo
from vsp.io.bookkeeping import MarkerScan, digest, open_manifest, scan_markers, write_marker, write_output
from vsp.io.store import Store
from vsp.stage import Resources, Stage, StageContext

log = logging.getLogger(__name__)

ROOT = "decode"
MANIFEST = f"{ROOT}/manifest.json"


@dataclass(frozen=True)
class DecodeConfig:
    """What decides the decoding numbers (the resumability key, with the norms and the features)."""

    folds: int = setting(5, minimum=2, doc="stratified folds per property")
    seed: int = setting(0, minimum=0, maximum=SEED_MAX)
    C: float = setting(1.0, positive=True, doc="inverse L2 strength (LogisticRegression's C)")
    dtype: str = setting("float32", choices=("float32", "float64"))
    models: tuple[str, ...] | None = None  # None: every model in the feature store
    layers_per_task: int = setting(4, identity=False, minimum=1, doc="layers per cluster task")

    def identity(self) -> dict[str, Any]:
        """The settings recorded in the decoding manifest (tuning left out; no models: None)."""
        return identity_fields(self) | {"models": list(self.models) if self.models else None}

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise VspInputError(f"folds must be >= 2, got {self.folds}")
        if self.C <= 0:
            raise VspInputError(f"C must be > 0, got {self.C}")
        if self.dtype not in ("float32", "float64"):
            raise VspInputError(f"dtype must be float32 or float64, got {self.dtype!r}")


@dataclass
class DecodeTask:
    """Everything a worker needs besides the features: aligned labels and per-property metadata."""

    config: DecodeConfig
    concept_rows: np.ndarray  # rows of the feature arrays, aligned with ``labels``
    labels: np.ndarray  # (n_concepts, n_properties) uint8
    properties: list[str]
    feature_class: list[str]
    fine_grained: list[str]

    def decode(self, X: np.ndarray, *, model: str, layer: str, layer_index: int, device: str) -> pa.Table:
        """Every (property, fold) probe on the rows ``X`` (aligned with ``labels``): the rows' table."""
        import torch

        from vsp.decode.grid import decode_layer

        return decode_layer(
            X,
            self.labels,
            model=model,
            layer=layer,
            layer_index=layer_index,
            properties=self.properties,
            feature_class=self.feature_class,
            fine_grained=self.fine_grained,
            folds=self.config.folds,
            seed=self.config.seed,
            C=self.config.C,
            dtype=getattr(torch, self.config.dtype),
            device=device,
        )


def norms_identity(norms: Norms) -> str:
    """A digest of the filtered norms (concepts, properties, matrix): what the labels are."""
    h = hashlib.sha256()
    h.update(json.dumps([norms.concepts, norms.properties, norms.feature_class, norms.fine_grained]).encode())
    h.update(np.ascontiguousarray(norms.binary).tobytes())
    return h.hexdigest()


def prepare(
    features: FeatureStore, norms: Norms, config: DecodeConfig
) -> tuple[DecodeTask, list[LayerInfo], dict]:
    """Align feature concepts with the norms and drop properties too rare for stratified folds."""
    concepts = features.concepts()
    index = {c: i for i, c in enumerate(norms.concepts)}
    rows = [i for i, c in enumerate(concepts) if c in index]
    if len(rows) < config.folds * 2:
        raise VspInputError(
            f"only {len(rows)} concepts of {features.store.uri} are in the norms ({norms.source}); "
            f"need at least {config.folds * 2}"
        )
    labels = np.asarray(norms.binary)[[index[concepts[i]] for i in rows]]
    pos = labels.sum(axis=0)
    keep = np.flatnonzero((pos >= config.folds) & (pos <= len(rows) - config.folds))
    dropped = [norms.properties[j] for j in range(labels.shape[1]) if j not in set(keep.tolist())]
    if dropped:
        log.warning(
            "%d properties have fewer than %d positives (or negatives) among the %d shared concepts "
            "and are not decoded: %s",
            len(dropped),
            config.folds,
            len(rows),
            ", ".join(dropped[:10]),
        )
    if len(keep) == 0:
        raise VspInputError(
            f"no property of {norms.source} has >= {config.folds} positives among the features' concepts"
        )
    task = DecodeTask(
        config,
        np.asarray(rows),
        labels[:, keep].astype(np.uint8),
        [norms.properties[j] for j in keep],
        [norms.feature_class[j] for j in keep],
        [norms.fine_grained[j] for j in keep],
    )
    layers = [x for x in features.layers() if config.models is None or x.model in config.models]
    if config.models is not None:
        missing = set(config.models) - {x.model for x in layers}
        if missing:
            raise VspInputError(f"{features.store.uri} has no features for models {sorted(missing)}")
    identity = {
        "config": config.identity(),
        "norms": norms_identity(norms),
        "norms_source": str(norms.source),
        "features": digest(features.manifest()["identity"]),  # type: ignore[index]
        "properties": task.properties,
        "dropped_properties": dropped,
    }
    return task, layers, identity


def result_path(layer: LayerInfo) -> str:
    """Where a layer's Parquet rows live."""
    return f"{ROOT}/results/{layer.model}/{layer.name}.parquet"


def marker_path(layer: LayerInfo) -> str:
    """Where a layer's done-marker lives (written after its Parquet)."""
    return f"{ROOT}/done/{layer.model}/{layer.name}.json"


def open_run(store: Store, identity: dict) -> None:
    """Claim the prefix for this decoding run, join the same run, or refuse a different one."""
    open_manifest(store, MANIFEST, identity, "decoding run")


def _legacy_outputs(marker: str, _doc: dict) -> list[dict]:
    """A marker written before markers listed their outputs covers the Parquet beside it."""
    rel = marker[len(f"{ROOT}/done/") : -len(".json")]
    return [{"key": f"{ROOT}/results/{rel}.parquet"}]


def done_markers(store: Store, layers: Sequence[LayerInfo] | None = None) -> MarkerScan:
    """The layers' markers checked against their Parquet (all markers when ``layers`` is None)."""
    only = None if layers is None else [marker_path(x) for x in layers]
    return scan_markers(store, f"{ROOT}/done", [f"{ROOT}/results"], _legacy_outputs, only)


def pending(store: Store, layers: Sequence[LayerInfo]) -> list[LayerInfo]:
    """Layers not proven done: no marker, or a marker whose Parquet is missing or of another size."""
    scan = done_markers(store, layers)
    return [x for x in layers if marker_path(x) not in scan]


def probe_layer_unit(store: Store, task: DecodeTask, layer: LayerInfo, device: str = "cpu") -> int:
    """Fit every (property, fold) probe of one layer, write its Parquet, then its marker; returns fits."""
    X = FeatureStore(store).read(layer.model, layer.name)[task.concept_rows]
    if not np.isfinite(X).all():
        raise VspInputError(f"{store.uri}: layer {layer.path} has missing rows; finish `vsp extract` first")
    table = task.decode(X, model=layer.model, layer=layer.name, layer_index=layer.index, device=device)
    table = table.append_column("layer_kind", pa.array([layer.kind] * table.num_rows))
    out = write_output(store, result_path(layer), table)
    write_marker(store, marker_path(layer), [out], rows=table.num_rows)
    return table.num_rows


def read_results(store: Store, layers: Sequence[LayerInfo] | None = None) -> pa.Table:
    """The per-(property, fold) rows of the layers whose marker proves its Parquet, concatenated.

    ``layers``: in their order (the unmarked ones left out); None: every marked layer of the store, in marker
    order. Only the Parquet files the markers list are read; no marked layer gives an empty table.
    """
    scan = done_markers(store, layers)
    keys = sorted(scan.done) if layers is None else [marker_path(x) for x in layers]
    paths = [o["key"] for k in keys if k in scan for o in scan.done[k]["outputs"]]
    paths = [p for p in paths if p.endswith(".parquet")]
    if not paths:
        from vsp.decode.grid import SCHEMA

        return SCHEMA.empty_table()
    return pa.concat_tables([store.read_parquet(p) for p in paths])


@dataclass
class DecodeSummary:
    """The closing line of the decoding stage."""

    store: str
    units_total: int
    units_run: int
    fits: int
    seconds: float
    outputs: list[str]

    def line(self) -> str:
        """One line for the terminal and the job log."""
        if self.units_run == 0:
            return f"decode: nothing to do, all {self.units_total} layers already decoded in {self.store}"
        rate = self.fits / self.seconds if self.seconds > 0 else 0.0
        return (
            f"decode: {self.units_run} layers ({self.fits} fits, {rate:.0f} fits/s) "
            f"written to {self.store}/{ROOT}; "
            f"{self.units_total - self.units_run} already done"
        )


def finish(store: Store, layers: Sequence[LayerInfo]) -> list[str]:
    """Aggregate all units into the summary table and Figures 1-2 (rebuilt from the unit files each time)."""
    import io

    from vsp.decode.grid import aggregate, plot_figure1, plot_figure2

    table = read_results(store, layers)
    agg = aggregate(table)
    outputs = []
    for name, df in agg.items() if isinstance(agg, dict) else [("summary", agg)]:
        path = f"{ROOT}/{name}.parquet"
        store.write_parquet(path, pa.Table.from_pandas(df, preserve_index=False))
        outputs.append(path)
    for name, plot in (("figure1", plot_figure1), ("figure2", plot_figure2)):
        buf = io.BytesIO()
        plot(agg, buf)
        path = f"{ROOT}/{name}.png"
        store.write_bytes(path, buf.getvalue())
        outputs.append(path)
    return outputs


def run_decode_local(
    store: Store,
    norms: Norms,
    config: DecodeConfig,
    device: str = "cpu",
    progress: Callable[[int, int, int], None] | None = None,
) -> DecodeSummary:
    """Decode every pending layer in this process (no Ray); the reference for the Ray fan-out."""
    t0 = time.perf_counter()
    task, layers, identity = prepare(FeatureStore(store), norms, config)
    open_run(store, identity)
    todo = pending(store, layers)
    fits = 0
    for k, layer in enumerate(todo):
        fits += probe_layer_unit(store, task, layer, device)
        if progress:
            progress(k + 1, len(todo), fits)
    outputs = finish(store, layers)
    return DecodeSummary(store.uri, len(layers), len(todo), fits, time.perf_counter() - t0, outputs)


def summary_table(store: Store) -> str:
    """Mean F1 x 100 per feature class as text: each network's penultimate layer and its best layer."""
    import pandas as pd

    from vsp.data.norms import FEATURE_CLASSES

    agg = store.read_parquet(f"{ROOT}/summary.parquet").to_pandas()
    rows = []
    for model, df in agg.groupby("model", sort=False):
        overall = df[df["grouping"] == "overall"]
        picks = [("penultimate", overall[overall["penultimate"]])]
        convs = overall[~overall["penultimate"]]
        if not convs.empty:
            picks.append(("best layer", convs.loc[[convs["f1"].idxmax()]]))
        for label, pick in picks:
            if pick.empty:
                continue
            name = pick["layer"].iloc[0]
            sel = df[(df["layer"] == name) & (df["grouping"].isin(["feature_class", "overall"]))]
            vals = dict(zip(sel["group"], sel["f1"] * 100, strict=True))
            rows.append(
                {
                    "model": model,
                    "row": f"{label} ({name})",
                    **{c: vals.get(c) for c in (*FEATURE_CLASSES, "overall")},
                }
            )
    table = pd.DataFrame(rows)
    return "mean F1 x 100 by feature class\n" + table.to_string(
        index=False, float_format=lambda v: f"{v:.1f}", na_rep="-"
    )


# ------------------------------------------------------------------------------------------------ the stage
class DecodeStage(Stage):
    """Every property from every stored layer: one unit per layer, batched probes (Figures 1-2).

    On a cluster, layers go out a few per task (``cluster.decode``, the labels put in the object store
    once); in this process they run in turn. Either way the aggregation and figures are rebuilt after.
    """

    name = "decode"
    root = ROOT
    Config = DecodeConfig
    needs = ("norms",)
    resources = Resources(cpus=1, gpus=1)
    unit_word = "layers"

    def run(self, ctx: StageContext) -> dict[str, Any]:
        """Decode the pending layers; counts for run.json."""
        norms = ctx.norms()
        config = ctx.settings(self.name)
        summary = self.drive(
            ctx, "cluster.decode:run_decode_ray", run_decode_local, norms, config, what="fits",
            ray_kw={"layers_per_task": config.layers_per_task},
        )  # fmt: skip
        return self.counts(summary, fits=summary.fits, outputs=list(summary.outputs))

    def marker_scans(self, store: Store) -> list[MarkerScan]:
        """Every layer's marker against its Parquet (older markers without outputs included)."""
        return [done_markers(store)]

    def progress(self, store: Store) -> dict[str, Any] | None:
        """Layers whose marker proves its rows, of the feature store's layers the stage decodes."""
        if not store.exists(MANIFEST):
            return None
        models = store.read_json(MANIFEST)["identity"]["config"].get("models")
        layers = [x for x in FeatureStore(store).layers() if not models or x.model in models]
        scan = done_markers(store, layers)  # the stage's own test: marker and data
        done = len(scan.done)
        figures = store.exists(f"{ROOT}/figure1.png")
        return {
            "what": "layers",
            "done": done,
            "total": len(layers),
            "complete": done == len(layers) and figures,
            "invalid": len(scan.invalid),
        }
