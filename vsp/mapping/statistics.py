"""Table 2's uncertainty: Hit@T intervals over the folds, paired tests between embeddings on the same folds.

Written by the mapping stage after ``mapping/table2.parquet`` (left as it is), from the marked per-fold rows:

    mapping/table2_intervals.parquet    embedding, mapper, hit (T), estimate (= table2's hit<T>, % of test
                                        concepts pooled over folds), low, high, n_folds, method, n_resamples,
                                        confidence: a percentile bootstrap over the folds of the pooled ratio
                                        (resampled folds' hits / their test concepts), so the estimate is the
                                        table's number itself
    mapping/table2_comparisons.parquet  mapper, hit, embedding_a, embedding_b, n_folds, mean_difference (of
                                        the per-fold Hit@T, points), low, high, pvalue (paired sign-flip
                                        test), p_bh (Benjamini-Hochberg over the comparisons of one mapper
                                        and T)

Two embeddings are compared only on the (repeat, fold) splits whose test concepts are the same for both.
The folds of repeated cross-validation share training concepts, so treating them as exchangeable units
makes the intervals and p-values somewhat optimistic (Nadeau & Bengio 2003): they rank differences, they do
not certify them. Uses ``scipy.stats.bootstrap`` and ``vsp.stats.paired_comparison``.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pandas as pd

from vsp.io.store import Store, read_frames, write_frames
from vsp.stats import CONFIDENCE, benjamini_hochberg, paired_comparison

INTERVALS = "mapping/table2_intervals.parquet"
COMPARISONS = "mapping/table2_comparisons.parquet"
N_RESAMPLES = 2000


def _ratio(hits: np.ndarray, n: np.ndarray, axis: int = -1) -> np.ndarray:
    return hits.sum(axis=axis) / n.sum(axis=axis)


def hit_interval(hit: np.ndarray, n_test: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """The pooled Hit@T (%) of some folds with its bootstrap interval over the folds."""
    from scipy.stats import bootstrap

    hits = np.asarray(hit, np.float64) * np.asarray(n_test, np.float64)  # % x concepts per fold
    n = np.asarray(n_test, np.float64)
    est = float(hits.sum() / n.sum())
    if len(n) < 2 or np.ptp(hits / n) == 0:
        return {"estimate": est, "low": est, "high": est, "method": "none (one fold or no spread)"}
    res = bootstrap(
        (hits, n), _ratio, paired=True, vectorized=True, n_resamples=N_RESAMPLES, method="percentile",
        confidence_level=CONFIDENCE, rng=np.random.default_rng(seed),
    )  # fmt: skip
    ci = res.confidence_interval
    return {
        "estimate": est,
        "low": float(ci.low),
        "high": float(ci.high),
        "method": "bootstrap-percentile-folds",
    }


def table2_statistics(
    rows: pd.DataFrame, order: list[tuple[str, str]], hits: tuple[int, ...]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both tables from the per-fold rows; ``order``: the (embedding, mapper) rows of Table 2 in order."""
    intervals, comps = [], []
    for k, (emb, mapper) in enumerate(order):
        g = rows[(rows["embedding"] == emb) & (rows["mapper"] == mapper)]
        for t in hits:
            seed = int(np.random.SeedSequence([k, t]).generate_state(1)[0])
            ci = hit_interval(g[f"hit{t}"].to_numpy(), g["n_test"].to_numpy(), seed)
            intervals.append({"embedding": emb, "mapper": mapper, "hit": t, **ci, "n_folds": len(g)})
    key = ["repeat", "fold"]
    for mapper in dict.fromkeys(m for _, m in order):
        embs = [e for e, m in order if m == mapper]
        for t in hits:
            part = []
            for a, b in itertools.combinations(embs, 2):
                ra = rows[(rows["embedding"] == a) & (rows["mapper"] == mapper)]
                rb = rows[(rows["embedding"] == b) & (rows["mapper"] == mapper)]
                both = ra.merge(rb, on=key, suffixes=("_a", "_b"))
                same = [
                    sorted(x) == sorted(y)
                    for x, y in zip(both["test_concepts_a"], both["test_concepts_b"], strict=True)
                ]
                both = both[same]
                if len(both) < 2:
                    continue
                c = paired_comparison(both[f"hit{t}_a"], both[f"hit{t}_b"], n_resamples=5000, seed=len(part))
                part.append(
                    {
                        "mapper": mapper,
                        "hit": t,
                        "embedding_a": a,
                        "embedding_b": b,
                        "n_folds": c.n,
                        "mean_difference": c.mean_difference,
                        "low": c.interval.low,
                        "high": c.interval.high,
                        "pvalue": c.pvalue,
                    }
                )
            if part:
                for c, q in zip(part, benjamini_hochberg([c["pvalue"] for c in part]), strict=True):
                    c["p_bh"] = float(q)
            comps += part
    iv = pd.DataFrame(intervals).assign(n_resamples=N_RESAMPLES, confidence=CONFIDENCE)
    cols = ["mapper", "hit", "embedding_a", "embedding_b", "n_folds", "mean_difference", "low", "high"]
    return iv, pd.DataFrame(comps, columns=[*cols, "pvalue", "p_bh"])


def write_table2_statistics(store: Store, table2: pd.DataFrame, rows: pd.DataFrame) -> list[str]:
    """Write both tables beside Table 2 (its rows and the per-fold rows it was pooled from); their keys."""
    from vsp.mapping.mappers import HITS

    order = list(zip(table2["embedding"], table2["mapper"], strict=True))
    intervals, comparisons = table2_statistics(rows, order, tuple(HITS))
    return write_frames(store, {INTERVALS: intervals, COMPARISONS: comparisons})


def read_table2_statistics(store: Store) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """Both tables as written (None before the mapping stage wrote Table 2), for the report."""
    return read_frames(store, [INTERVALS, COMPARISONS])  # type: ignore[return-value]
