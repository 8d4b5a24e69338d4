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
import pyarrow.compute as pc

from vsp.config import SEED_MAX, WEIGHTS_SEED_MAX, identity_fields, setting
from vsp.data.norms import Norms
from vsp.errors import VspInputError
from vsp.extract.features import FeatureStore, LayerInfo
from vsp.io.bookkeeping import MarkerScan, digest, open_manifest, scan_markers, write_marker, write_output
from vsp.io.store import Store
from vsp.stage import Resources, Stage, StageContext

log = logging.getLogger(__name__)

ROOT = "decode"
MANIFEST = f"{ROOT}/manifest.json"
CONTROLS = ("none", "random")


@dataclass(frozen=True)
class DecodeConfig:
    """What decides the decoding numbers (the resumability key, with the norms and the features)."""

    folds: int = setting(5, minimum=2, doc="stratified folds per property")
    seed: int = setting(0, minimum=0, maximum=SEED_MAX)
    C: float = setting(1.0, positive=True, doc="inverse L2 strength (LogisticRegression's C)")
    C_grid: tuple[float, ...] | None = setting(
        None, positive=True, added=True, doc="choose C per property and fold from these by nested CV"
    )
    inner_folds: int = setting(3, minimum=2, added=True, doc="inner folds of the nested CV (C_grid)")
    dtype: str = setting("float32", choices=("float32", "float64"))
    models: tuple[str, ...] | None = None  # None: every model in the feature store
    layers_per_task: int = setting(4, identity=False, minimum=1, doc="layers per cluster task")
    # statistical inference (issue 13): additions to a decoding run, so none of them is in its manifest (a run
    # decoded without them takes them later on the same prefix); each is checked where it is written:
    # repeats and permutations by decode/inference/manifest.json, the control by its own run's manifests
    repeats: int = setting(
        1, identity=False, minimum=1, doc="repeats of the stratified folds (seeds from seed)"
    )
    permutations: int = setting(0, identity=False, minimum=0, doc="label permutations per layer (0: none)")
    control: str = setting("none", identity=False, choices=CONTROLS, doc="random: also a random-weight twin")
    control_seed: int | None = setting(
        None, identity=False, minimum=0, maximum=WEIGHTS_SEED_MAX, doc="random-weight seed of the control"
    )
    fdr: float = setting(0.05, identity=False, positive=True, doc="false discovery rate of the marks")
    bootstrap: int = setting(2000, identity=False, minimum=100, doc="bootstrap resamples of every interval")

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
        if self.repeats < 1:
            raise VspInputError(f"repeats must be >= 1, got {self.repeats}")
        if self.permutations < 0:
            raise VspInputError(f"permutations must be >= 0, got {self.permutations}")
        if self.control not in CONTROLS:
            raise VspInputError(f"control must be one of {', '.join(CONTROLS)}, got {self.control!r}")
        if not 0 < self.fdr < 1:
            raise VspInputError(f"fdr must be between 0 and 1, got {self.fdr}")
        if self.C_grid is not None and (not self.C_grid or any(c <= 0 for c in self.C_grid)):
            raise VspInputError(f"C_grid must be numbers > 0, got {list(self.C_grid)}")
        if self.C_grid and not 2 <= self.inner_folds < self.folds:
            raise VspInputError(
                f"inner_folds must be from 2 to folds - 1 ({self.folds - 1}), got {self.inner_folds}"
            )

    def repeat_seeds(self) -> list[int]:
        """The ``StratifiedKFold`` seed of each repeat: ``seed`` itself first (the paper's single split)."""
        return [self.seed] + [
            int(np.random.SeedSequence([self.seed, r]).generate_state(1, np.uint32)[0])
            for r in range(1, self.repeats)
        ]


@dataclass
class DecodeTask:
    """Everything a worker needs besides the features: aligned labels and per-property metadata."""

    config: DecodeConfig
    concept_rows: np.ndarray  # rows of the feature arrays, aligned with ``labels``
    labels: np.ndarray  # (n_concepts, n_properties) uint8
    properties: list[str]
    feature_class: list[str]
    fine_grained: list[str]

    def decode(
        self,
        X: np.ndarray,
        *,
        model: str,
        layer: str,
        layer_index: int,
        device: str,
        repeats: Sequence[int] = (0,),
    ) -> pa.Table:
        """Every (property, fold) probe on the rows ``X`` (aligned with ``labels``) for ``repeats``' folds.

        Repeat 0 is the single-split run (folds from ``seed``: no ``repeat`` column); other repeats' rows
        carry their index in a ``repeat`` column, after ``fine_grained``.
        """
        import torch

        from vsp.decode.grid import decode_layer

        seeds = self.config.repeat_seeds()
        tables = []
        for r in repeats:
            t = decode_layer(
                X,
                self.labels,
                model=model,
                layer=layer,
                layer_index=layer_index,
                properties=self.properties,
                feature_class=self.feature_class,
                fine_grained=self.fine_grained,
                folds=self.config.folds,
                seed=seeds[r],
                C=self.config.C,
                dtype=getattr(torch, self.config.dtype),
                device=device,
                C_grid=self.config.C_grid,
                inner_folds=self.config.inner_folds,
            )
            if r:
                t = t.add_column(6, "repeat", pa.array(np.full(t.num_rows, r, np.int32)))
            tables.append(t)
        return pa.concat_tables(tables)

    def permutation_table(
        self, X: np.ndarray, *, model: str, layer: str, layer_index: int, device: str
    ) -> pa.Table:
        """The layer's permutation null (``vsp.decode.permutation``): observed F1, p-value, null per property.

        The statistic is the mean F1 over the folds of repeat 0 (the ``seed`` split); the permutations are
        drawn from ``seed`` too, so every layer sees the same permuted labellings (what the max-statistic
        correction across layers needs).
        """
        import torch

        from vsp.decode.permutation import permutation_null
        from vsp.stats import permutation_pvalues

        observed, null = permutation_null(
            X,
            self.labels,
            self.config.permutations,
            seed=self.config.seed,
            folds=self.config.folds,
            cv_seed=self.config.seed,
            C=self.config.C,
            dtype=getattr(torch, self.config.dtype),
            device=device,
        )
        B, P = null.shape
        return pa.table(
            {
                "model": pa.array([model] * P, pa.string()),
                "layer": pa.array([layer] * P, pa.string()),
                "layer_index": pa.array(np.full(P, layer_index, np.int32)),
                "property": pa.array(self.properties, pa.string()),
                "feature_class": pa.array(self.feature_class, pa.string()),
                "fine_grained": pa.array(self.fine_grained, pa.string()),
                "f1": pa.array(observed.astype(np.float64)),
                "p_value": pa.array(permutation_pvalues(observed, null)),
                "null": pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(null.T).ravel()), B),
            }
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


def pending(store: Store, layers: Sequence[LayerInfo], config: DecodeConfig | None = None) -> list[LayerInfo]:
    """Layers not proven done: no marker, or a marker whose Parquet is missing or of another size.

    With a ``config`` asking for repeats or permutations, a layer whose added rows are not proven is pending
    too.
    """
    scan = done_markers(store, layers)
    extra = inference_markers(store, layers) if config is not None and wants_inference(config) else None
    return [
        x
        for x in layers
        if marker_path(x) not in scan or (extra is not None and inference_marker_path(x) not in extra)
    ]


INFERENCE = f"{ROOT}/inference"
INFERENCE_MANIFEST = f"{INFERENCE}/manifest.json"


def wants_inference(config: DecodeConfig) -> bool:
    """Whether the run adds repeated folds or permutation nulls to its layers."""
    return config.repeats > 1 or config.permutations > 0


def inference_identity(config: DecodeConfig) -> dict[str, Any]:
    """What decides a layer's added rows: the repeats' fold seeds, the permutations (drawn from ``seed``)."""
    return {
        "repeats": config.repeats,
        "fold_seeds": config.repeat_seeds(),
        "permutations": config.permutations,
    }


def repeats_path(layer: LayerInfo) -> str:
    """Where a layer's rows of repeats 1.. live (``decode.repeats`` > 1)."""
    return f"{INFERENCE}/repeats/{layer.model}/{layer.name}.parquet"


def permutation_path(layer: LayerInfo) -> str:
    """Where a layer's permutation null and p-values live (``decode.permutations`` > 0)."""
    return f"{INFERENCE}/permutations/{layer.model}/{layer.name}.parquet"


def inference_marker_path(layer: LayerInfo) -> str:
    """The marker of a layer's added rows (written after them)."""
    return f"{INFERENCE}/done/{layer.model}/{layer.name}.json"


def inference_markers(store: Store, layers: Sequence[LayerInfo] | None = None) -> MarkerScan:
    """The layers' added-rows markers checked against their files."""
    only = None if layers is None else [inference_marker_path(x) for x in layers]
    return scan_markers(
        store, f"{INFERENCE}/done", [f"{INFERENCE}/repeats", f"{INFERENCE}/permutations"], None, only
    )


def open_inference(store: Store, config: DecodeConfig) -> None:
    """Claim (or join) the added rows' manifest; other repeats or permutations on this prefix are refused."""
    if wants_inference(config):
        open_manifest(
            store, INFERENCE_MANIFEST, inference_identity(config), "set of repeats and permutations"
        )


def probe_layer_unit(store: Store, task: DecodeTask, layer: LayerInfo, device: str = "cpu") -> int:
    """Fit a layer's pending probes and write them, each file before its marker; returns the fits.

    The single-split rows (``decode/results``, marker ``decode/done``) and, when asked, the rows of the other
    repeats and the permutation null (``decode/inference``, one marker for both): each part is skipped when
    its marker already proves it, so a run decoded earlier gains its repeats and nulls without a refit.
    """
    config = task.config
    main = marker_path(layer) not in done_markers(store, [layer])
    extra = wants_inference(config) and inference_marker_path(layer) not in inference_markers(store, [layer])
    if not (main or extra):
        return 0
    X = FeatureStore(store).read(layer.model, layer.name)[task.concept_rows]
    if not np.isfinite(X).all():
        raise VspInputError(f"{store.uri}: layer {layer.path} has missing rows; finish `vsp extract` first")
    where = {"model": layer.model, "layer": layer.name, "layer_index": layer.index, "device": device}
    fits = 0
    if main:
        table = task.decode(X, **where)
        table = table.append_column("layer_kind", pa.array([layer.kind] * table.num_rows))
        out = write_output(store, result_path(layer), table)
        write_marker(store, marker_path(layer), [out], rows=table.num_rows)
        fits += table.num_rows
    if extra:
        outputs = []
        if config.repeats > 1:
            table = task.decode(X, **where, repeats=range(1, config.repeats))
            table = table.append_column("layer_kind", pa.array([layer.kind] * table.num_rows))
            outputs.append(write_output(store, repeats_path(layer), table))
            fits += table.num_rows
        if config.permutations:
            null = task.permutation_table(X, **where)
            outputs.append(write_output(store, permutation_path(layer), null))
            fits += config.permutations * null.num_rows * config.folds
        write_marker(store, inference_marker_path(layer), outputs, **inference_identity(config))
    return fits


def read_results(store: Store, layers: Sequence[LayerInfo] | None = None, repeats: int = 1) -> pa.Table:
    """The per-(property, fold) rows of the layers whose marker proves its Parquet, concatenated.

    ``layers``: in their order (the unmarked ones left out); None: every marked layer of the store, in marker
    order. Only the Parquet files the markers list are read; no marked layer gives an empty table. With
    ``repeats`` > 1 the rows of repeats 1 .. repeats - 1 are added (where their marker proves them) and every
    row gets a ``repeat`` column (0: the single-split rows).
    """
    scan = done_markers(store, layers)
    keys = sorted(scan.done) if layers is None else [marker_path(x) for x in layers]
    paths = [o["key"] for k in keys if k in scan for o in scan.done[k]["outputs"]]
    paths = [p for p in paths if p.endswith(".parquet")]
    if not paths:
        from vsp.decode.grid import SCHEMA

        return SCHEMA.empty_table()
    base = pa.concat_tables([store.read_parquet(p) for p in paths])
    if repeats == 1:
        return base
    base = base.add_column(6, "repeat", pa.array(np.zeros(base.num_rows, np.int32)))
    extra = [t for t in _inference_tables(store, layers, "repeats") if t is not None]
    rows = pa.concat_tables([base, *extra])
    return rows.filter(pc.less(rows["repeat"], repeats))


def _inference_tables(store: Store, layers: Sequence[LayerInfo] | None, part: str) -> list[pa.Table]:
    scan = inference_markers(store, layers)
    keys = sorted(scan.done) if layers is None else [inference_marker_path(x) for x in layers]
    prefix = f"{INFERENCE}/{part}/"
    paths = [
        o["key"] for k in keys if k in scan for o in scan.done[k]["outputs"] if o["key"].startswith(prefix)
    ]
    return [store.read_parquet(p) for p in paths]


def read_permutations(store: Store, layers: Sequence[LayerInfo] | None = None) -> pa.Table | None:
    """The marked layers' permutation tables (``decode.permutations``), concatenated; None when none."""
    tables = _inference_tables(store, layers, "permutations")
    return pa.concat_tables(tables) if tables else None


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


def finish(store: Store, layers: Sequence[LayerInfo], config: DecodeConfig | None = None) -> list[str]:
    """Aggregate all units into the summary table and Figures 1-2 (rebuilt from the unit files each time).

    Beside them (``vsp.decode.inference``): every mean's bootstrap interval (``decode/intervals.parquet``, the
    figures' bands) and, when the run has permutations, the p-values with their corrections
    (``decode/significance.parquet``).
    """
    import io

    from vsp.decode.grid import aggregate, plot_figure1, plot_figure2
    from vsp.decode.inference import INTERVALS, SIGNIFICANCE, intervals, significance

    config = config or DecodeConfig()
    table = read_results(store, layers, config.repeats)
    agg = aggregate(table)
    outputs = []
    path = f"{ROOT}/summary.parquet"
    store.write_parquet(path, pa.Table.from_pandas(agg, preserve_index=False))
    outputs.append(path)
    bands = intervals(table, config)
    store.write_parquet(INTERVALS, pa.Table.from_pandas(bands, preserve_index=False))
    outputs.append(INTERVALS)
    if config.permutations:
        perms = read_permutations(store, layers)
        if perms is not None:
            store.write_parquet(
                SIGNIFICANCE, pa.Table.from_pandas(significance(perms, config.fdr), preserve_index=False)
            )
            outputs.append(SIGNIFICANCE)
    for name, plot in (("figure1", plot_figure1), ("figure2", plot_figure2)):
        buf = io.BytesIO()
        plot(bands, buf)
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
    open_inference(store, config)
    todo = pending(store, layers, config)
    fits = 0
    for k, layer in enumerate(todo):
        fits += probe_layer_unit(store, task, layer, device)
        if progress:
            progress(k + 1, len(todo), fits)
    outputs = finish(store, layers, config)
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
        outputs = list(summary.outputs)
        if config.control == "random":
            from vsp.decode.control import run_control

            outputs += run_control(self, ctx, norms, config)
        return self.counts(summary, fits=summary.fits, outputs=outputs)

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
