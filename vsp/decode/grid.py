"""The decoding grid's compute: one network layer -> per-(property, fold) rows; aggregation; Figures 1-2.

:func:`decode_layer` probes every property of the norms on one layer's concept features with the batched
probe (:func:`vsp.decode.probe.probe_layer`: all properties x folds at once) and returns one Arrow row per
(property, fold). :func:`aggregate` averages F1 over folds per property, then over the properties of each
feature class, each fine-grained type and all properties ("overall"), per (model, layer).
:func:`plot_figure1` and :func:`plot_figure2` draw the paper's Figures 1 and 2 from that;
:func:`baseline_table` gives the plain-network (penultimate-layer) rows of Tables 1 and 4 (per feature class).

Residual connections (ResNet panels): a torchvision ResNet's taps are named ``layer<L>.<B>.<module>``;
block ``layer<L>.<B>`` adds its input (or its ``downsample`` projection of it) to the output of its last
conv, so the connection closes after the block's last tap in depth order (``conv2`` for a BasicBlock,
``conv3`` for a Bottleneck, or ``downsample.0`` in the first block of a stage, which comes after them in
module order). Each residual connection is drawn as a red dotted vertical line half-way between the block's
last tap and the next tap (:func:`residual_positions`).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from typing import IO, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from vsp.data.norms import FEATURE_CLASSES, FINE_GRAINED
from vsp.decode.probe import probe_layer
from vsp.errors import VspInputError

log = logging.getLogger(__name__)

PENULTIMATE = "penultimate"  # the layer name of the penultimate tap (vsp.extract.networks.PENULTIMATE)
PAPER_MODELS = ("alexnet", "vgg16", "resnet34", "densenet169")

SCHEMA = pa.schema(
    [
        ("model", pa.string()),
        ("layer", pa.string()),
        ("layer_index", pa.int32()),
        ("property", pa.string()),
        ("feature_class", pa.string()),
        ("fine_grained", pa.string()),
        ("fold", pa.int32()),
        ("f1", pa.float64()),
        ("precision", pa.float64()),
        ("recall", pa.float64()),
        ("n_pos_test", pa.int32()),
        ("n_pos_train", pa.int32()),
        ("n_test", pa.int32()),
        ("n_iter", pa.int32()),
    ]
)

GROUPINGS = ("feature_class", "fine_grained", "overall")


# --------------------------------------------------------------------------------------------- decode


def decode_layer(
    X: Any,
    norms: Any,
    model: str,
    layer: str,
    layer_index: int,
    folds: int = 5,
    seed: int = 0,
    C: float = 1.0,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    *,
    properties: Sequence[str] | None = None,
    feature_class: Sequence[str] | None = None,
    fine_grained: Sequence[str] | None = None,
    tol: float | None = None,
    workers: int | None = None,
    C_grid: Sequence[float] | None = None,
    inner_folds: int = 3,
) -> pa.Table:
    """Probe every property on one layer; one row per (property, fold) with the columns of :data:`SCHEMA`.

    Args:
        X: (n_concepts, d) concept features of the layer, rows aligned with the label rows.
        norms: a :class:`vsp.data.norms.Norms` (its ``binary``, ``properties``, ``feature_class``,
            ``fine_grained`` are used), or an (n_concepts, n_properties) binary label matrix together with the
            ``properties``/``feature_class``/``fine_grained`` keywords (keywords override a Norms' lists).
        model: network name, copied into every row.
        layer: layer (tap) name, copied into every row.
        layer_index: the layer's position in the network's tap list, copied into every row.
        folds: stratified folds per property.
        seed: ``random_state`` of ``StratifiedKFold``.
        C: inverse L2 strength (scikit-learn's ``C``).
        dtype: torch dtype of the solve (float32 default, float64 available).
        device: torch device of the solve.
        properties: property names (default: the Norms' ``properties``).
        feature_class: feature class per property (default: the Norms').
        fine_grained: fine-grained type per property (default: the Norms').
        tol: solver tolerance (see :func:`vsp.decode.probe.fit_logreg_batched`).
        workers: CPU threads the problems are split over (default: torch's thread count).
        C_grid: choose C per (property, fold) from these by nested CV on ``inner_folds`` inner folds of the
            training concepts (:mod:`vsp.decode.nested`); the rows then get the chosen ``C`` (``C`` unused).
        inner_folds: inner folds of the nested CV.
    """
    labels = np.asarray(norms.binary if hasattr(norms, "binary") else norms)
    if labels.ndim != 2:
        raise VspInputError(f"labels for {model}/{layer} must be a 2-D concept x property matrix")
    P = labels.shape[1]
    properties = list(properties if properties is not None else getattr(norms, "properties", []))
    feature_class = list(feature_class if feature_class is not None else getattr(norms, "feature_class", []))
    fine_grained = list(fine_grained if fine_grained is not None else getattr(norms, "fine_grained", []))
    for name, values in (
        ("properties", properties),
        ("feature_class", feature_class),
        ("fine_grained", fine_grained),
    ):
        if len(values) != P:
            raise VspInputError(f"{model}/{layer}: {name} has {len(values)} entries for {P} label columns")
    X = np.asarray(X.detach().cpu().numpy() if isinstance(X, torch.Tensor) else X)
    if X.shape[0] != labels.shape[0]:
        raise VspInputError(
            f"{model}/{layer}: features have {X.shape[0]} concept rows but the labels have {labels.shape[0]}"
        )
    if C_grid:
        from vsp.decode.nested import probe_layer_nested

        res = probe_layer_nested(
            X, labels, folds, seed, C_grid, inner_folds, dtype=dtype, device=device, tol=tol, workers=workers
        )
    else:
        res = probe_layer(
            X, labels, folds=folds, seed=seed, C=C, dtype=dtype, device=device, tol=tol, workers=workers
        )
    idx = res["property"]
    K = len(idx)
    cols = {
        "model": pa.array([model] * K, pa.string()),
        "layer": pa.array([layer] * K, pa.string()),
        "layer_index": pa.array(np.full(K, layer_index, dtype=np.int32)),
        "property": pa.array([properties[i] for i in idx], pa.string()),
        "feature_class": pa.array([feature_class[i] for i in idx], pa.string()),
        "fine_grained": pa.array([fine_grained[i] for i in idx], pa.string()),
        "fold": pa.array(res["fold"].astype(np.int32)),
        "f1": pa.array(res["f1"].astype(np.float64)),
        "precision": pa.array(res["precision"].astype(np.float64)),
        "recall": pa.array(res["recall"].astype(np.float64)),
        "n_pos_test": pa.array(res["n_pos_test"].astype(np.int32)),
        "n_pos_train": pa.array(res["n_pos_train"].astype(np.int32)),
        "n_test": pa.array(res["n_test"].astype(np.int32)),
        "n_iter": pa.array(res["n_iter"].astype(np.int32)),
    }
    table = pa.table(cols, schema=SCHEMA)
    if C_grid:
        table = table.append_column("C", pa.array(res["C"].astype(np.float64)))
    log.info(
        "decoded %s/%s: %d properties x %d folds, mean F1 %.3f", model, layer, P, folds, res["f1"].mean()
    )
    return table


# ------------------------------------------------------------------------------------------ aggregate


def _frame(table: pa.Table | pd.DataFrame) -> pd.DataFrame:
    df = table.to_pandas() if isinstance(table, pa.Table) else table.copy()
    missing = {"model", "layer", "layer_index", "property", "feature_class", "fine_grained", "f1"} - set(
        df.columns
    )
    if missing:
        raise VspInputError(f"decode results lack columns {sorted(missing)}")
    return df


LAYER_KEYS = ("model", "layer_index", "layer")


def per_property(table: pa.Table | pd.DataFrame) -> pd.DataFrame:
    """Mean F1 over folds per (model, layer, property): the unit every class mean and interval is over."""
    df = _frame(table) if isinstance(table, pa.Table) else table
    return (
        df.groupby([*LAYER_KEYS, "property", "feature_class", "fine_grained"], sort=False, observed=True)[
            "f1"
        ]
        .mean()
        .reset_index()
    )


def aggregate(table: pa.Table | pd.DataFrame) -> pd.DataFrame:
    """Mean F1 per (model, layer) and feature class / fine-grained type / all properties.

    The one per-class aggregation: the decoding stage's summary, the meta stage's decodability table
    (`vsp.meta.stage.aggregate_decodability`) and the report's Tables 1 and 4 all come from here.

    F1 is averaged over folds per property first, then over the properties of each group (so every property
    weighs the same whatever its fold count). Returns a long table with columns ``model, layer_index,
    layer, penultimate, grouping, group, f1, n_properties`` (plus ``layer_kind`` when the rows have it):
    ``grouping`` is ``feature_class``, ``fine_grained`` or ``overall`` (whose ``group`` is ``"overall"``);
    ``penultimate`` marks the penultimate representation (layer name ``penultimate`` or ``layer_kind ==
    "penultimate"``). Sorted by model, layer index, grouping, group.
    """
    df = _frame(table)
    keys = list(LAYER_KEYS)
    per_prop = per_property(df)
    parts = []
    for grouping in GROUPINGS:
        if grouping == "overall":
            g = per_prop.groupby(keys, sort=False)["f1"].agg(["mean", "count"]).reset_index()
            g["group"] = "overall"
        else:
            g = per_prop.groupby([*keys, grouping], sort=False)["f1"].agg(["mean", "count"]).reset_index()
            g = g.rename(columns={grouping: "group"})
        g["grouping"] = grouping
        parts.append(g)
    out = pd.concat(parts, ignore_index=True).rename(columns={"mean": "f1", "count": "n_properties"})
    penult = out["layer"] == PENULTIMATE
    if "layer_kind" in df.columns:
        kinds = df[[*keys, "layer_kind"]].drop_duplicates(subset=keys)
        out = out.merge(kinds, on=keys, how="left")
        penult = penult | (out["layer_kind"] == PENULTIMATE)
    out["penultimate"] = penult.to_numpy()
    order = {g: i for i, g in enumerate(GROUPINGS)}
    group_order = {g: i for i, g in enumerate((*FEATURE_CLASSES, *FINE_GRAINED, "overall"))}
    out = out.assign(_g=out["grouping"].map(order), _h=out["group"].map(group_order).fillna(len(group_order)))
    out = out.sort_values(["model", "layer_index", "_g", "_h", "group"]).drop(columns=["_g", "_h"])
    cols = ["model", "layer_index", "layer", "penultimate", "grouping", "group", "f1", "n_properties"]
    if "layer_kind" in out.columns:
        cols.insert(3, "layer_kind")
    out = out[cols].reset_index(drop=True)
    out["layer_index"] = out["layer_index"].astype(np.int64)
    out["n_properties"] = out["n_properties"].astype(np.int64)
    return out


def baseline_table(df: pd.DataFrame | pa.Table, grouping: str = "feature_class") -> pd.DataFrame:
    """Mean F1 x 100 of the penultimate representation: one row per model, one column per group + overall.

    ``grouping="feature_class"`` gives the plain-network rows of the paper's Tables 1 (ResNet) and 4 (every
    network; Appendix A), both per feature class. ``grouping="fine_grained"`` gives the same row per
    fine-grained type (colour, shape/size, is, has, does, made-of): the paper shows those types only per
    layer (Figure 2) and has no table of them. ``df`` is :func:`aggregate`'s output (raw decode rows are
    aggregated first).
    """
    agg = _aggregated(df)
    pen = agg[agg["penultimate"]]
    if pen.empty:
        raise VspInputError("the decode results hold no penultimate layer (layer 'penultimate')")
    groups = FEATURE_CLASSES if grouping == "feature_class" else FINE_GRAINED
    rows = pen[(pen["grouping"] == grouping) | (pen["grouping"] == "overall")]
    wide = rows.pivot_table(index="model", columns="group", values="f1", aggfunc="mean") * 100.0
    cols = [g for g in groups if g in wide.columns] + ["overall"]
    wide = wide.reindex(columns=cols)
    wide = wide.reindex(_model_order(list(wide.index)))
    wide.columns.name = None
    return wide.reset_index()


def _aggregated(df: pd.DataFrame | pa.Table) -> pd.DataFrame:
    frame = df.to_pandas() if isinstance(df, pa.Table) else df
    return frame if "grouping" in frame.columns else aggregate(frame)


# ------------------------------------------------------------------------------------------- figures


_BLOCK = re.compile(r"^(layer\d+\.\d+)\.")


def residual_positions(layers: Sequence[tuple[int, str]]) -> list[float]:
    """Return the x positions of a torchvision ResNet's residual connections from its (index, name) taps.

    Block ``layer<L>.<B>``'s skip connection closes after its last tap; the line sits half-way to the next
    tap. Networks without such names give no positions.
    """
    last: dict[str, int] = {}
    for index, name in layers:
        m = _BLOCK.match(name)
        if m:
            last[m.group(1)] = max(index, last.get(m.group(1), index))
    return sorted(i + 0.5 for i in last.values())


def _model_order(models: list[str]) -> list[str]:
    paper = [m for m in PAPER_MODELS if m in models]
    return paper + sorted(m for m in models if m not in PAPER_MODELS)


_COLOURS = {
    "taxonomic": "#1f77b4",
    "visual perceptual": "#2ca02c",
    "other perceptual": "#ff7f0e",
    "functional": "#9467bd",
    "encyclopaedic": "#8c564b",
    "colour": "#d62728",
    "shape/size": "#17becf",
    "is": "#1f77b4",
    "has": "#2ca02c",
    "does": "#9467bd",
    "made-of": "#8c564b",
    "overall": "#000000",
}


def _plot(
    df: pd.DataFrame | pa.Table,
    out: str | os.PathLike | IO[bytes],
    grouping: str,
    title: str,
    ylabel: str = "mean F1",
) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    agg = _aggregated(df)
    conv = agg[~agg["penultimate"]]
    models = _model_order(sorted(conv["model"].unique()))
    if not models:
        raise VspInputError("no convolutional-layer decode results to plot")
    groups = FEATURE_CLASSES if grouping == "feature_class" else FINE_GRAINED
    ncols = min(2, len(models))
    nrows = (len(models) + ncols - 1) // ncols
    fig = Figure(figsize=(6.0 * ncols, 3.6 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, model in zip(axes, models, strict=False):
        sub = conv[conv["model"] == model]
        for group in groups:
            line = sub[(sub["grouping"] == grouping) & (sub["group"] == group)].sort_values("layer_index")
            if len(line) and "low" in line.columns:  # the 95% interval over the group's properties
                ax.fill_between(
                    line["layer_index"],
                    line["low"],
                    line["high"],
                    color=_COLOURS.get(group),
                    alpha=0.15,
                    lw=0,
                )
            if len(line):
                ax.plot(
                    line["layer_index"],
                    line["f1"],
                    marker="o",
                    markersize=2.5,
                    linewidth=1.4,
                    color=_COLOURS.get(group),
                    label=group,
                )
        overall = sub[sub["grouping"] == "overall"].sort_values("layer_index")
        ax.plot(
            overall["layer_index"],
            overall["f1"],
            linestyle="--",
            linewidth=1.0,
            color="black",
            label="overall",
        )
        if "resnet" in model.lower():
            taps = sub[["layer_index", "layer"]].drop_duplicates().itertuples(index=False)
            for x in residual_positions([(int(i), str(n)) for i, n in taps]):
                ax.axvline(x, color="red", linestyle=":", linewidth=0.9)
        ax.set_title(model)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("layer index")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    for ax in axes[len(models) :]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(7, len(labels)), frameon=False)
    fig.suptitle(title)
    if isinstance(out, str | os.PathLike):
        fig.savefig(os.fspath(out), format="png", dpi=120)
    else:
        fig.savefig(out, format="png", dpi=120)


def plot_figure1(df: pd.DataFrame | pa.Table, out_png: str | os.PathLike | IO[bytes]) -> None:
    """Figure 1: mean F1 per feature class against layer index, one panel per network (PNG).

    ``df``: :func:`aggregate`'s output or the raw decode rows; with ``low`` / ``high`` columns
    (:func:`aggregate_intervals`) each line gets its interval as a band. ResNet panels mark residual
    connections with red dotted lines. The penultimate representation is not drawn
    (see :func:`baseline_table`).
    """
    _plot(df, out_png, "feature_class", "Decodability of CSLB feature classes per convolutional layer")


def plot_figure2(df: pd.DataFrame | pa.Table, out_png: str | os.PathLike | IO[bytes]) -> None:
    """Figure 2: mean F1 per fine-grained type (colour, shape/size, is, has, does, made-of), as Figure 1."""
    _plot(df, out_png, "fine_grained", "Decodability of fine-grained property types per convolutional layer")


def plot_selectivity(
    df: pd.DataFrame, out_png: str | os.PathLike | IO[bytes], grouping: str = "feature_class"
) -> None:
    """Figure 1 (or 2, ``grouping="fine_grained"``) of the selectivity: F1(trained) - F1(random weights)."""
    what = "feature classes" if grouping == "feature_class" else "fine-grained property types"
    _plot(df, out_png, grouping, f"Selectivity of {what} over a random-weight network", "mean F1 - random")


def aggregate_intervals(
    table: pa.Table | pd.DataFrame, n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> pd.DataFrame:
    """:func:`aggregate` with a bootstrap interval of every mean, over the properties of its group.

    Adds ``low``, ``high``, ``ci_method``, ``n_resamples`` and ``confidence``; ``f1`` is :func:`aggregate`'s
    own value (the interval's estimate is the same mean). Each group's resampling is seeded from ``seed`` and
    the group's position, so the intervals are reproducible and independent of one another.
    """
    from vsp.stats import bootstrap_mean

    df = _frame(table)
    out = aggregate(df)
    pp = per_property(df)
    by_layer = {k: g for k, g in pp.groupby(list(LAYER_KEYS), sort=False)}
    lows, highs, methods = [], [], []
    for i, row in enumerate(out.itertuples(index=False)):
        props = by_layer[(row.model, row.layer_index, row.layer)]
        f1 = props["f1"] if row.grouping == "overall" else props.loc[props[row.grouping] == row.group, "f1"]
        ci = bootstrap_mean(f1.to_numpy(), n_resamples, confidence, seed=np.random.default_rng([seed, i]))
        lows.append(ci.low)
        highs.append(ci.high)
        methods.append(ci.method)
    return out.assign(low=lows, high=highs, ci_method=methods, n_resamples=n_resamples, confidence=confidence)
