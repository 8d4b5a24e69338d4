"""Statistical inference for every headline number: intervals, permutation p-values, multiple testing.

Well-kept implementations are used where they exist: ``scipy.stats.bootstrap`` (intervals of a mean),
``scipy.stats.false_discovery_control`` (Benjamini-Hochberg), ``scipy.stats.permutation_test`` (paired
sign-flip tests). Written here, because scipy has no function for them: the permutation p-value of a
precomputed null (the decoding nulls are fitted in batches by the probe, not by a callback), the
single-step max-statistic (Westfall-Young) correction across layers, Fisher-z intervals of a correlation, and
Williams' test for two dependent correlations that share a variable (as given by Steiger 1980).

Every function takes plain numpy arrays and returns numbers or arrays, so the stages, the report and a
notebook use the same code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from vsp.errors import VspInputError

#: The interval level used throughout unless a caller asks for another.
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate with its interval and how the interval was made (recorded beside every number)."""

    estimate: float
    low: float
    high: float
    method: str  # "bootstrap-percentile", "bootstrap-bca", "fisher-z", ...
    n_resamples: int = 0
    confidence: float = CONFIDENCE

    def as_dict(self) -> dict[str, Any]:
        """The interval as a row (Parquet / JSON)."""
        return {
            "estimate": self.estimate,
            "low": self.low,
            "high": self.high,
            "method": self.method,
            "n_resamples": self.n_resamples,
            "confidence": self.confidence,
        }


def _rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def bootstrap_mean(
    values: Any,
    n_resamples: int = 2000,
    confidence: float = CONFIDENCE,
    method: str = "percentile",
    seed: int | np.random.Generator | None = 0,
) -> Interval:
    """The mean of ``values`` with a bootstrap interval (``scipy.stats.bootstrap`` over the values).

    Used for a class or type mean over properties (Figures 1-2, Tables 1 and 4): the properties are the
    resampled units. One value gives a zero-width interval; NaNs are refused.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise VspInputError("bootstrap_mean: no values")
    if not np.isfinite(x).all():
        raise VspInputError("bootstrap_mean: values hold NaN or infinite entries")
    est = float(x.mean())
    if x.size == 1 or np.all(x == x[0]):
        return Interval(est, est, est, f"bootstrap-{method}", n_resamples, confidence)
    from scipy.stats import bootstrap

    res = bootstrap(
        (x,),
        np.mean,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method=method,
        rng=_rng(seed),
        vectorized=True,
    )
    ci = res.confidence_interval
    return Interval(
        est, float(ci.low), float(ci.high), f"bootstrap-{method.lower()}", n_resamples, confidence
    )


def permutation_pvalues(observed: Any, null: Any) -> np.ndarray:
    """One-sided permutation p-values ``(1 + #{null >= observed}) / (1 + B)`` (Phipson & Smyth 2010).

    ``observed``: (...,) statistics; ``null``: (B, ...) the same statistics under B label permutations.
    The +1 counts the observed labelling itself, so no p-value is 0 and the test is exact under the null.
    """
    obs = np.asarray(observed, dtype=np.float64)
    nul = np.asarray(null, dtype=np.float64)
    if nul.ndim != obs.ndim + 1 or nul.shape[1:] != obs.shape:
        raise VspInputError(f"null {nul.shape} must be (permutations, *observed {obs.shape})")
    return (1.0 + (nul >= obs[None]).sum(axis=0)) / (1.0 + nul.shape[0])


def max_statistic_pvalues(observed: Any, null: Any, axis: int = 0) -> np.ndarray:
    """Single-step max-statistic (Westfall-Young) p-values, corrected across ``axis`` of ``observed``.

    ``observed``: (L, P) statistics (layers x properties); ``null``: (B, L, P) from the same B permutations
    for every layer (the labels are what is permuted, so one permutation serves every layer). The corrected
    p-value of (l, p) compares the observed value with the maximum over layers of each permutation's values:
    it controls the family-wise error across layers for each property.
    """
    obs = np.asarray(observed, dtype=np.float64)
    nul = np.asarray(null, dtype=np.float64)
    if nul.ndim != obs.ndim + 1 or nul.shape[1:] != obs.shape:
        raise VspInputError(f"null {nul.shape} must be (permutations, *observed {obs.shape})")
    top = nul.max(axis=axis + 1, keepdims=True)  # (B, 1, P): the largest over the corrected axis
    return (1.0 + (top >= obs[None]).sum(axis=0)) / (1.0 + nul.shape[0])


def benjamini_hochberg(pvalues: Any, axis: int = -1) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values along ``axis`` (``scipy.stats.false_discovery_control``).

    A property is declared decodable at FDR ``q`` when its adjusted p-value is <= q.
    """
    from scipy.stats import false_discovery_control

    p = np.asarray(pvalues, dtype=np.float64)
    if p.size == 0:
        return p
    return false_discovery_control(p, axis=axis, method="bh")


def fisher_z_interval(r: float, n: int, confidence: float = CONFIDENCE, kind: str = "spearman") -> Interval:
    """A correlation's interval on Fisher's z scale.

    ``kind="pearson"``: standard error ``1 / sqrt(n - 3)``; ``"spearman"``: Bonett & Wright's (2000)
    ``sqrt((1 + r**2 / 2) / (n - 3))``, which keeps the nominal coverage for Spearman's rho.
    """
    from scipy.stats import norm

    if n < 4:
        raise VspInputError(f"fisher_z_interval: needs at least 4 pairs, got {n}")
    if not -1 < r < 1:
        return Interval(float(r), float(r), float(r), f"fisher-z-{kind}", 0, confidence)
    if kind == "pearson":
        se = 1.0 / math.sqrt(n - 3)
    elif kind == "spearman":
        se = math.sqrt((1.0 + r * r / 2.0) / (n - 3))
    else:
        raise VspInputError(f"fisher_z_interval: kind must be pearson or spearman, got {kind!r}")
    z = math.atanh(r)
    q = float(norm.ppf(0.5 + confidence / 2.0))
    return Interval(float(r), math.tanh(z - q * se), math.tanh(z + q * se), f"fisher-z-{kind}", 0, confidence)


@dataclass(frozen=True)
class DependentCorrelationTest:
    """Williams' test of r(j, k) = r(j, h) on the same n cases (Steiger 1980)."""

    r_jk: float
    r_jh: float
    r_kh: float
    n: int
    t: float
    df: int
    pvalue: float  # two-sided


def williams_test(r_jk: float, r_jh: float, r_kh: float, n: int) -> DependentCorrelationTest:
    """Whether two correlations with a shared variable differ: Table 3's two embeddings on the same pairs.

    ``j`` is the human rating, ``k`` and ``h`` the two embeddings' similarities of the same pairs, ``r_kh``
    the correlation between those two similarity lists. Williams' t with ``n - 3`` degrees of freedom::

        t = (r_jk - r_jh) * sqrt((n - 1)(1 + r_kh) / (2 (n - 1)/(n - 3) |R| + rbar^2 (1 - r_kh)^3))

    with ``|R| = 1 - r_jk^2 - r_jh^2 - r_kh^2 + 2 r_jk r_jh r_kh`` and ``rbar = (r_jk + r_jh) / 2``.
    """
    from scipy.stats import t as student_t

    if n < 4:
        raise VspInputError(f"williams_test: needs at least 4 cases, got {n}")
    det = 1 - r_jk**2 - r_jh**2 - r_kh**2 + 2 * r_jk * r_jh * r_kh
    rbar = (r_jk + r_jh) / 2
    den = 2 * (n - 1) / (n - 3) * det + rbar**2 * (1 - r_kh) ** 3
    if den <= 0:
        raise VspInputError("williams_test: the three correlations are not a valid correlation matrix")
    t = (r_jk - r_jh) * math.sqrt((n - 1) * (1 + r_kh) / den)
    df = n - 3
    p = float(2 * student_t.sf(abs(t), df))
    return DependentCorrelationTest(r_jk, r_jh, r_kh, n, float(t), df, p)


@dataclass(frozen=True)
class PairedComparison:
    """A mean difference of paired values (same properties, same folds) with its interval and p-value."""

    mean_difference: float
    interval: Interval
    pvalue: float  # two-sided sign-flip permutation test
    n: int
    n_resamples: int


def paired_comparison(
    a: Any,
    b: Any,
    n_resamples: int = 10000,
    confidence: float = CONFIDENCE,
    seed: int | np.random.Generator | None = 0,
) -> PairedComparison:
    """``a - b`` on the same units: bootstrap interval of the mean difference and a sign-flip test.

    For two layers or two embeddings on the same properties (Tables 1 and 4), or two embeddings' Hit@k on
    the same folds (Table 2). The sign-flip null is exact (every flip) when there are at most 2^12 of them.
    """
    from scipy.stats import permutation_test

    x, y = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape or x.size == 0:
        raise VspInputError(f"paired_comparison: a {x.shape} and b {y.shape} must be paired and non-empty")
    d = x - y
    rng = _rng(seed)
    interval = bootstrap_mean(d, n_resamples=min(n_resamples, 9999), confidence=confidence, seed=rng)
    if np.all(d == 0) or d.size == 1:  # one pair: both of its two sign flips are as extreme, p = 1 exactly
        pvalue = 1.0
    else:
        exact = d.size <= 12
        res = permutation_test(
            (d,),
            lambda s, axis=-1: np.mean(s, axis=axis),
            permutation_type="samples",
            n_resamples=np.inf if exact else n_resamples,
            alternative="two-sided",
            vectorized=True,
            rng=rng,
        )
        pvalue = float(res.pvalue)
    return PairedComparison(float(d.mean()), interval, pvalue, int(d.size), n_resamples)
