"""Table 3's uncertainty: an interval for every Spearman rho and a test for every two embeddings' difference.

With 104 MEN and 48 SimLex-999 pairs a rho has a 95% interval of about +/-0.2-0.3, so two rows of Table 3
can only be told apart by a test on the same pairs. Written after ``similarity/table3.parquet`` (which is
left as it is):

    similarity/table3_intervals.parquet    embedding, benchmark, n_scored, spearman, fisher_low/high (Fisher z
                                           with Bonett-Wright's standard error for Spearman), boot_low/high
                                           (percentile bootstrap over the pairs), confidence, n_resamples
    similarity/table3_comparisons.parquet  every two embeddings on one benchmark, on the pairs both score:
                                           rho_a, rho_b, their difference, r_ab (Spearman between the two
                                           embeddings' cosine lists), Williams' t, df, two-sided p, and p_bh
                                           (Benjamini-Hochberg over the benchmark's comparisons)

The intervals use ``scipy.stats.bootstrap`` (paired over the pairs) and ``vsp.stats.fisher_z_interval``; the
test is ``vsp.stats.williams_test`` (scipy has no test of two dependent correlations).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pandas as pd

from vsp.errors import VspInputError
from vsp.io.store import Store, read_frames, write_frames
from vsp.stats import CONFIDENCE, benjamini_hochberg, fisher_z_interval, williams_test

INTERVALS = "similarity/table3_intervals.parquet"
COMPARISONS = "similarity/table3_comparisons.parquet"
N_RESAMPLES = 2000


def _spearman(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spearman's rho along ``axis`` (vectorised for the bootstrap): Pearson of the average ranks."""
    from scipy.stats import rankdata

    rx, ry = rankdata(x, axis=axis), rankdata(y, axis=axis)
    rx = rx - rx.mean(axis=axis, keepdims=True)
    ry = ry - ry.mean(axis=axis, keepdims=True)
    den = np.sqrt((rx * rx).sum(axis=axis) * (ry * ry).sum(axis=axis))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rx * ry).sum(axis=axis) / den


def cosines(store: Store, embedding: str, benchmark: str) -> tuple[np.ndarray, np.ndarray]:
    """The embedding's cosine of every pair of the benchmark (NaN where it lacks a concept); the ratings."""
    from vsp.meta.stage import read_embedding
    from vsp.similarity.stage import ROOT, _safe

    pairs = store.read_parquet(f"{ROOT}/pairs/{_safe(benchmark)}.parquet").to_pandas()
    emb = read_embedding(store, embedding)
    pos = {c: i for i, c in enumerate(emb.concepts)}
    m = np.asarray(emb.matrix, dtype=np.float64)
    norms = np.linalg.norm(m, axis=1)
    out = np.full(len(pairs), np.nan)
    for k, (a, b) in enumerate(zip(pairs["concept1"], pairs["concept2"], strict=True)):
        i, j = pos.get(a), pos.get(b)
        if i is not None and j is not None and norms[i] > 0 and norms[j] > 0:
            out[k] = float(m[i] @ m[j] / (norms[i] * norms[j]))
    return out, pairs["rating"].to_numpy(dtype=np.float64)


def rho_interval(cos: np.ndarray, gold: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """Spearman rho of the scored pairs with its Fisher-z and bootstrap intervals (NaN when undefined)."""
    from scipy.stats import bootstrap

    ok = np.isfinite(cos)
    x, y = cos[ok], gold[ok]
    n = int(ok.sum())
    row: dict[str, Any] = {"n_scored": n, "spearman": math.nan}
    row |= dict.fromkeys(("fisher_low", "fisher_high", "boot_low", "boot_high"), math.nan)
    if n < 4 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return row
    rho = float(_spearman(x, y))
    fz = fisher_z_interval(rho, n, kind="spearman")
    res = bootstrap(
        (x, y), _spearman, paired=True, vectorized=True, n_resamples=N_RESAMPLES, method="percentile",
        confidence_level=CONFIDENCE, rng=np.random.default_rng(seed),
    )  # fmt: skip
    ci = res.confidence_interval
    return row | {
        "spearman": rho,
        "fisher_low": fz.low,
        "fisher_high": fz.high,
        "boot_low": float(ci.low),
        "boot_high": float(ci.high),
    }


def compare(cos_a: np.ndarray, cos_b: np.ndarray, gold: np.ndarray) -> dict[str, Any] | None:
    """Williams' test of rho(a) = rho(b) on the pairs both embeddings score (None under 4 such pairs)."""
    ok = np.isfinite(cos_a) & np.isfinite(cos_b)
    n = int(ok.sum())
    if n < 4:
        return None
    a, b, y = cos_a[ok], cos_b[ok], gold[ok]
    if min(np.ptp(a), np.ptp(b), np.ptp(y)) == 0:
        return None
    r_a, r_b, r_ab = float(_spearman(a, y)), float(_spearman(b, y)), float(_spearman(a, b))
    try:
        t = williams_test(r_a, r_b, r_ab, n)
    except VspInputError:  # r_ab of about 1: the same ranking of the pairs, nothing to test
        return None
    rhos = {"n": n, "rho_a": r_a, "rho_b": r_b, "difference": r_a - r_b, "r_ab": r_ab}
    return rhos | {"t": t.t, "df": t.df, "pvalue": t.pvalue, "test": "williams"}


def table3_statistics(store: Store) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both tables from ``similarity/table3.parquet``, the stored pairs and the stored embeddings."""
    from vsp.similarity.stage import TABLE3

    table3 = store.read_parquet(TABLE3).to_pandas()
    names = list(dict.fromkeys(table3["embedding"]))
    benches = list(dict.fromkeys(table3["benchmark"]))
    rows, comps = [], []
    for b_i, bench in enumerate(benches):
        cos = {}
        gold = None
        for e_i, name in enumerate(names):
            cos[name], gold = cosines(store, name, bench)
            seed = int(np.random.SeedSequence([b_i, e_i]).generate_state(1)[0])
            row = rho_interval(cos[name], gold, seed=seed)
            rows.append({"embedding": name, "benchmark": bench, **row})
        part = []
        for a, b in itertools.combinations(names, 2):
            c = compare(cos[a], cos[b], gold)
            if c is not None:
                part.append({"benchmark": bench, "embedding_a": a, "embedding_b": b, **c})
        if part:
            p_bh = benjamini_hochberg([c["pvalue"] for c in part])
            for c, q in zip(part, p_bh, strict=True):
                c["p_bh"] = float(q)
        comps += part
    intervals = pd.DataFrame(rows).assign(
        fisher_method="fisher-z-spearman (Bonett-Wright)",
        boot_method="bootstrap-percentile-pairs",
        confidence=CONFIDENCE,
        n_resamples=N_RESAMPLES,
    )
    floats = ["rho_a", "rho_b", "difference", "r_ab", "t", "pvalue", "p_bh"]
    cols = ["benchmark", "embedding_a", "embedding_b", "n", "rho_a", "rho_b", "difference", "r_ab", "t", "df"]
    comparisons = pd.DataFrame(comps, columns=[*cols, "pvalue", "test", "p_bh"])
    comparisons = comparisons.astype({c: "float64" for c in floats} | {"n": "int64", "df": "int64"})
    comparisons = comparisons.astype(
        {c: "object" for c in ("benchmark", "embedding_a", "embedding_b", "test")}
    )
    return intervals, comparisons


def write_table3_statistics(store: Store) -> list[str]:
    """Write both tables (after Table 3); their keys."""
    intervals, comparisons = table3_statistics(store)
    return write_frames(store, {INTERVALS: intervals, COMPARISONS: comparisons})


def read_table3_statistics(store: Store) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """Both tables as written (None before the similarity stage ran), for the report."""
    return read_frames(store, [INTERVALS, COMPARISONS])  # type: ignore[return-value]
