"""Inference on the decoding grid: intervals of every mean, permutation p-values, random-network selectivity.

Each function turns stored rows into one table the stage writes and the report reads:

    decode/intervals.parquet       every (model, layer, grouping, group) mean of ``aggregate`` with a
                                   bootstrap interval over its properties (low, high, method, resamples)
    decode/significance.parquet    per (model, layer, property): observed F1, permutation p-value, its
                                   Benjamini-Hochberg adjustment across the layer's properties, the
                                   max-statistic p-value across the model's layers, ``decodable`` at the FDR
    decode/selectivity.parquet     per (model, layer, property): F1 of the trained network, of its
                                   random-weight twin, and their difference (``decode.control: random``)
    decode/selectivity_intervals.parquet   ``intervals`` of the selectivity (paired: the same properties)

The statistics themselves are ``vsp.stats``; this module only arranges the decoding rows for them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from vsp.decode.grid import LAYER_KEYS, aggregate, aggregate_intervals, per_property
from vsp.errors import VspInputError

INTERVALS = "decode/intervals.parquet"
SIGNIFICANCE = "decode/significance.parquet"
SELECTIVITY = "decode/selectivity.parquet"
SELECTIVITY_INTERVALS = "decode/selectivity_intervals.parquet"

PROPERTY_KEYS = [*LAYER_KEYS, "property", "feature_class", "fine_grained"]


def intervals(table: pa.Table | pd.DataFrame, config: Any) -> pd.DataFrame:
    """``aggregate`` with a 95% bootstrap interval over properties of every mean (seeded by ``seed``)."""
    return aggregate_intervals(table, n_resamples=config.bootstrap, seed=config.seed)


def significance(perms: pa.Table | pd.DataFrame, fdr: float = 0.05) -> pd.DataFrame:
    """Permutation p-values of every (layer, property) with their two corrections.

    ``p_bh``: Benjamini-Hochberg across the properties of one layer (which properties a layer encodes, at FDR
    ``fdr``: ``decodable``). ``p_maxstat``: the single-step max-statistic p-value across the layers of one
    model, per property (is the property decodable at this layer, family-wise over the layers); valid because
    every layer's null uses the same permuted labellings.
    """
    from vsp.stats import benjamini_hochberg, max_statistic_pvalues

    df = perms.to_pandas() if isinstance(perms, pa.Table) else perms.copy()
    parts = []
    for model, g in df.groupby("model", sort=False):
        g = g.sort_values("layer_index", kind="stable")
        layers = g.drop_duplicates("layer_index")["layer_index"].to_numpy()
        props = list(dict.fromkeys(g["property"]))
        L, P = len(layers), len(props)
        if len(g) != L * P or any(
            list(x["property"]) != props for _, x in g.groupby("layer_index", sort=True)
        ):
            raise VspInputError(f"decode permutations of {model}: the layers do not hold the same properties")
        null = np.stack(g["null"].to_numpy()).reshape(L, P, -1).transpose(2, 0, 1)  # (B, L, P)
        obs = g["f1"].to_numpy(dtype=np.float64).reshape(L, P)
        out = g.drop(columns=["null"]).copy()
        out["p_bh"] = benjamini_hochberg(g["p_value"].to_numpy().reshape(L, P), axis=1).ravel()
        out["p_maxstat"] = max_statistic_pvalues(obs, null).ravel()
        out["decodable"] = out["p_bh"] <= fdr
        out["fdr"] = fdr
        out["permutations"] = null.shape[0]
        parts.append(out)
    return pd.concat(parts, ignore_index=True)


def selectivity(trained: pa.Table | pd.DataFrame, control: pa.Table | pd.DataFrame) -> pd.DataFrame:
    """Per (model, layer, property): F1 of the trained network, of the random-weight twin, and the difference.

    Both are means over the same folds (and repeats) of the same properties; properties the twin lacks are
    refused rather than silently dropped.
    """
    a = per_property(trained.to_pandas() if isinstance(trained, pa.Table) else trained)
    b = per_property(control.to_pandas() if isinstance(control, pa.Table) else control)
    b = b.rename(columns={"f1": "f1_control"})
    out = a.merge(b, on=PROPERTY_KEYS, how="left", validate="one_to_one")
    missing = out["f1_control"].isna()
    if missing.any():
        row = out[missing].iloc[0]
        raise VspInputError(
            f"the random-weight control has no F1 for {row['model']}/{row['layer']} property "
            f"{row['property']!r} ({int(missing.sum())} such rows): rerun `vsp decode --control random`"
        )
    out["selectivity"] = out["f1"] - out["f1_control"]
    return out


def selectivity_intervals(per_prop: pd.DataFrame, config: Any) -> pd.DataFrame:
    """Every class / type / overall mean of the selectivity with its bootstrap interval over properties.

    The resampled units are the properties, each with its paired difference (trained - random), so the
    interval is that of a paired comparison. ``f1`` holds the mean selectivity; ``f1_trained`` and
    ``f1_control`` the two means it is the difference of.
    """
    sel = aggregate_intervals(per_prop.assign(f1=per_prop["selectivity"]), config.bootstrap, seed=config.seed)
    keys = [*LAYER_KEYS, "grouping", "group"]
    parts = []
    for col in ("f1", "f1_control"):
        means = aggregate(per_prop.assign(f1=per_prop[col]))[[*keys, "f1"]]
        parts.append(means.rename(columns={"f1": "f1_trained" if col == "f1" else "f1_control"}))
    return sel.merge(parts[0], on=keys).merge(parts[1], on=keys)


# ------------------------------------------------------------------------------------------ for the report
def _picked_layers(bands: pd.DataFrame) -> pd.DataFrame:
    """Each model's penultimate layer and its best convolutional layer (by overall mean F1)."""
    overall = bands[bands["grouping"] == "overall"]
    picks = []
    for _model, g in overall.groupby("model", sort=False):
        pen = g[g["penultimate"]]
        conv = g[~g["penultimate"]]
        if not conv.empty:
            picks.append(conv.loc[[conv["f1"].idxmax()]].assign(row="best layer"))
        if not pen.empty:
            picks.append(pen.iloc[[0]].assign(row="penultimate"))
    if not picks:
        return pd.DataFrame(columns=[*LAYER_KEYS, "row"])
    return pd.concat(picks)[[*LAYER_KEYS, "row"]]


def _cells(bands: pd.DataFrame, picks: pd.DataFrame, value: str = "f1") -> pd.DataFrame:
    """One row per picked layer, one "mean [low, high]" x 100 cell per feature class and overall."""
    from vsp.data.norms import FEATURE_CLASSES

    rows = []
    for pick in picks.itertuples(index=False):
        sel = bands[(bands["model"] == pick.model) & (bands["layer_index"] == pick.layer_index)]
        sel = sel[sel["grouping"].isin(["feature_class", "overall"])]
        cells = {
            r.group: f"{100 * getattr(r, value):.1f} [{100 * r.low:.1f}, {100 * r.high:.1f}]"
            for r in sel.itertuples(index=False)
        }
        rows.append({"model": pick.model, "row": f"{pick.row} ({pick.layer})", **cells})
    cols = ["model", "row", *FEATURE_CLASSES, "overall"]
    return pd.DataFrame(rows).reindex(columns=cols) if rows else pd.DataFrame(columns=cols)


def _signed(mean: float, low: float, high: float) -> str:
    return f"{100 * mean:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"


def read_inference(store: Any) -> dict[str, pd.DataFrame]:
    """The decoding stage's inference tables, as the report shows them (only those the run wrote).

    ``intervals``: each model's best and penultimate layers, mean F1 x 100 [95% interval] per feature class;
    ``significance``: per (model, layer), properties decodable at the run's FDR (BH within the layer) and
    by the max-statistic correction across layers, per feature class; ``selectivity``: the picked layers'
    F1 minus the random-weight twin's, x 100 [interval], beside the two F1 means.
    """
    from vsp.data.norms import FEATURE_CLASSES

    out: dict[str, pd.DataFrame] = {}
    if not store.exists(INTERVALS):
        return out
    bands = store.read_parquet(INTERVALS).to_pandas()
    picks = _picked_layers(bands)
    out["intervals"] = _cells(bands, picks)
    if store.exists(SIGNIFICANCE):
        sig = store.read_parquet(SIGNIFICANCE).to_pandas()
        fdr = float(sig["fdr"].iloc[0]) if len(sig) else 0.05
        g = sig.groupby(["model", "layer_index", "layer"], sort=False)
        table = g.agg(
            properties=("property", "size"),
            decodable=("decodable", "sum"),
            maxstat=("p_maxstat", lambda p: int((p <= fdr).sum())),
        ).reset_index()
        per_class = sig[sig["decodable"]].groupby(["model", "layer_index", "feature_class"]).size()
        for c in FEATURE_CLASSES:
            table[c] = [
                int(per_class.get((m, i, c), 0))
                for m, i in zip(table["model"], table["layer_index"], strict=True)
            ]
        out["significance"] = table.rename(
            columns={"decodable": f"decodable (BH q={fdr:g})", "maxstat": f"max-stat p<={fdr:g}"}
        )
    if store.exists(SELECTIVITY_INTERVALS):
        sel = store.read_parquet(SELECTIVITY_INTERVALS).to_pandas()
        rows = []
        for pick in picks.itertuples(index=False):
            s = sel[(sel["model"] == pick.model) & (sel["layer_index"] == pick.layer_index)]
            for r in s[s["grouping"].isin(["feature_class", "overall"])].itertuples(index=False):
                rows.append(
                    {
                        "model": pick.model,
                        "row": f"{pick.row} ({pick.layer})",
                        "group": r.group,
                        "F1 trained": round(100 * r.f1_trained, 1),
                        "F1 random": round(100 * r.f1_control, 1),
                        "selectivity [95% CI]": _signed(r.f1, r.low, r.high),
                    }
                )
        out["selectivity"] = pd.DataFrame(rows)
    return out
