"""Tables 1 and 4's uncertainty: an interval for every mean, and each meta-embedding against its baseline.

Tables 1 and 4 ask whether an all-layer meta-embedding (SVD, 1ToN, and their multimodal rows) makes the
properties more decodable than the network's penultimate layer. Both are decoded on the same properties
with the same folds, so the question is a paired one. Written beside ``meta/decodability.parquet`` (left
as it is):

    meta/decodability_intervals.parquet    the decodability rows with ``low, high, ci_method, n_resamples,
                                           confidence``: a bootstrap over the group's properties
                                           (``vsp.decode.grid.aggregate_intervals``; ``f1`` is the table's)
    meta/decodability_comparisons.parquet  embedding, baseline (``<model>/penultimate``), model, grouping,
                                           group, n_properties, f1, f1_baseline, mean_difference, low, high
                                           (bootstrap over the properties' paired differences), pvalue
                                           (paired sign-flip test), p_bh (Benjamini-Hochberg over the table)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from vsp.data.norms import FEATURE_CLASSES, FINE_GRAINED
from vsp.io.store import Store, read_frames, write_frames
from vsp.stats import benjamini_hochberg, paired_comparison

INTERVALS = "meta/decodability_intervals.parquet"
COMPARISONS = "meta/decodability_comparisons.parquet"
N_RESAMPLES = 2000
KNOWN = {"feature_class": set(FEATURE_CLASSES), "fine_grained": set(FINE_GRAINED), "overall": {"overall"}}


def _results(store: Store, name: str) -> pd.DataFrame:
    from vsp.meta.stage import decode_result_path

    return store.read_parquet(decode_result_path(name)).to_pandas()


def decodability_intervals(store: Store, names: Sequence[str]) -> pd.DataFrame:
    """Every embedding's class / type / overall mean F1 with its bootstrap interval over properties."""
    from vsp.decode.grid import aggregate_intervals
    from vsp.meta.stage import read_embedding_info

    frames = []
    for k, name in enumerate(names):
        agg = aggregate_intervals(_results(store, name), N_RESAMPLES, seed=k)
        agg = agg[[g in KNOWN[grouping] for grouping, g in zip(agg["grouping"], agg["group"], strict=True)]]
        info = read_embedding_info(store, name)
        frames.append(
            agg[
                [
                    "grouping",
                    "group",
                    "f1",
                    "n_properties",
                    "low",
                    "high",
                    "ci_method",
                    "n_resamples",
                    "confidence",
                ]
            ].assign(
                embedding=name,
                model=info.get("model") or "",
                kind=info.get("kind") or "",
                text=bool(info.get("text")),
            )
        )
    cols = ["embedding", "model", "kind", "text", "grouping", "group", "f1", "n_properties", "low", "high"]
    return pd.concat(frames, ignore_index=True)[[*cols, "ci_method", "n_resamples", "confidence"]]


def baselines(store: Store, names: Sequence[str]) -> dict[str, str]:
    """Each embedding with a network behind it -> that network's penultimate layer (when it was decoded)."""
    from vsp.meta.stage import read_embedding_info

    out = {}
    for name in names:
        info = read_embedding_info(store, name)
        model = info.get("model") or ""
        base = f"{model}/penultimate"
        if model and name != base and base in names:
            out[name] = base
    return out


def decodability_comparisons(store: Store, names: Sequence[str]) -> pd.DataFrame:
    """Each embedding minus its network's penultimate layer, per feature class and overall, paired."""
    from vsp.decode.grid import per_property

    rows = []
    for name, base in baselines(store, names).items():
        a, b = per_property(_results(store, name)), per_property(_results(store, base))
        both = a.merge(b[["property", "f1"]], on="property", suffixes=("", "_baseline"))
        model = str(a["model"].iloc[0]) if len(a) else ""
        groups = [("feature_class", c) for c in FEATURE_CLASSES] + [("overall", "overall")]
        for grouping, group in groups:
            sel = both if grouping == "overall" else both[both["feature_class"] == group]
            if sel.empty:
                continue
            seed = int(np.random.SeedSequence([len(rows)]).generate_state(1)[0])
            c = paired_comparison(sel["f1"], sel["f1_baseline"], n_resamples=5000, seed=seed)
            rows.append(
                {
                    "embedding": name,
                    "baseline": base,
                    "model": model,
                    "grouping": grouping,
                    "group": group,
                    "n_properties": c.n,
                    "f1": float(sel["f1"].mean()),
                    "f1_baseline": float(sel["f1_baseline"].mean()),
                    "mean_difference": c.mean_difference,
                    "low": c.interval.low,
                    "high": c.interval.high,
                    "pvalue": c.pvalue,
                }
            )
    out = pd.DataFrame(rows)
    if not out.empty:
        out["p_bh"] = benjamini_hochberg(out["pvalue"].to_numpy())
    return out


def write_decodability_statistics(store: Store, names: Sequence[str]) -> list[str]:
    """Write both tables beside Tables 1 and 4; their keys."""
    frames = {
        INTERVALS: decodability_intervals(store, names),
        COMPARISONS: decodability_comparisons(store, names),
    }
    return write_frames(store, frames)


def read_decodability_statistics(store: Store) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """Both tables as written (None before the meta stage's decodability ran), for the report."""
    return read_frames(store, [INTERVALS, COMPARISONS])  # type: ignore[return-value]
