"""vsp.stats: calibration in simulation (uniform null p-values, BH's FDR, coverage) and worked cases."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from vsp.errors import VspInputError
from vsp.stats import (
    benjamini_hochberg,
    bootstrap_mean,
    fisher_z_interval,
    max_statistic_pvalues,
    paired_comparison,
    permutation_pvalues,
    williams_test,
)


def test_permutation_pvalues_are_uniform_under_the_null():
    rng = np.random.default_rng(1)
    B, m = 199, 3000  # observed and null from the same continuous distribution: exchangeable
    draws = rng.normal(size=(B + 1, m))
    p = permutation_pvalues(draws[0], draws[1:])
    assert p.min() >= 1 / (B + 1) and p.max() <= 1
    assert sps.kstest(p, "uniform").pvalue > 0.001
    for alpha in (0.01, 0.05, 0.2, 0.5):  # P(p <= alpha) <= alpha, and close to it
        rate = (p <= alpha).mean()
        assert rate <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / m)
        assert rate >= alpha - 3 * math.sqrt(alpha * (1 - alpha) / m) - 1 / (B + 1)


def test_permutation_pvalue_formula_and_shapes():
    p = permutation_pvalues(np.array([3.0, 0.0]), np.array([[1.0, 0.0], [4.0, -1.0], [3.0, 2.0]]))
    assert p.tolist() == [(1 + 2) / 4, (1 + 2) / 4]
    with pytest.raises(VspInputError, match="permutations"):
        permutation_pvalues(np.zeros(3), np.zeros((5, 4)))


def test_max_statistic_controls_the_familywise_error_across_layers():
    rng = np.random.default_rng(2)
    reps, B, L, P = 300, 99, 6, 20
    any_false = 0
    naive_false = 0
    for _ in range(reps):
        shared = rng.normal(size=(B + 1, 1, P))  # layers of one network are correlated
        draws = 0.7 * shared + 0.7 * rng.normal(size=(B + 1, L, P))
        p = max_statistic_pvalues(draws[0], draws[1:])
        any_false += (p[:, 0] <= 0.05).any()  # property 0: a false positive at any layer
        naive_false += (permutation_pvalues(draws[0], draws[1:])[:, 0] <= 0.05).any()
    assert any_false / reps <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / reps)
    assert naive_false / reps > 0.1  # without the correction the family-wise error is well above 5%


def test_benjamini_hochberg_keeps_the_false_discovery_rate():
    rng = np.random.default_rng(3)
    reps, m, q = 400, 200, 0.1
    fdp = []
    for _ in range(reps):
        alt = rng.random(m) < 0.2
        p = np.where(alt, rng.beta(0.1, 1.0, m), rng.random(m))
        rejected = benjamini_hochberg(p) <= q
        fdp.append((rejected & ~alt).sum() / max(1, rejected.sum()))
    fdr = float(np.mean(fdp))
    assert fdr <= q * 0.8 + 0.02  # BH: FDR = q * m0 / m = 0.08 for independent p-values
    assert fdr > 0.04  # not trivially conservative
    same = benjamini_hochberg(np.array([0.01, 0.04, 0.03, 0.5]))
    # by hand: sorted .01 .03 .04 .5 -> p m / rank = .04 .06 .0533 .5 -> running minimum from the top
    np.testing.assert_allclose(same, [0.04, 0.16 / 3, 0.16 / 3, 0.5])


def test_bootstrap_interval_covers_a_known_mean_at_about_its_level():
    rng = np.random.default_rng(4)
    reps, n = 300, 40
    hits = 0
    for i in range(reps):
        x = rng.exponential(size=n)  # skewed, like F1 over properties
        ci = bootstrap_mean(x, n_resamples=999, seed=i)
        hits += ci.low <= 1.0 <= ci.high
        assert ci.low <= ci.estimate <= ci.high and ci.method == "bootstrap-percentile"
    assert 0.88 <= hits / reps <= 0.99
    one = bootstrap_mean([0.3])
    assert (one.low, one.high) == (0.3, 0.3)
    with pytest.raises(VspInputError, match="NaN"):
        bootstrap_mean([0.1, float("nan")])


def test_fisher_z_interval_for_spearman_covers_at_about_its_level():
    rng = np.random.default_rng(5)
    reps, n, rho = 600, 48, 0.5  # 48: the SimLex-999 pairs of Table 3
    cov = [[1, rho], [rho, 1]]
    true_spearman = 6 / math.pi * math.asin(rho / 2)  # of a bivariate normal
    hits = 0
    for _ in range(reps):
        x = rng.multivariate_normal([0, 0], cov, size=n)
        r = sps.spearmanr(x[:, 0], x[:, 1]).statistic
        ci = fisher_z_interval(r, n)
        hits += ci.low <= true_spearman <= ci.high
    assert 0.92 <= hits / reps <= 0.98
    ci = fisher_z_interval(0.3, 104, kind="pearson")  # hand: tanh(atanh(.3) -/+ 1.959964 / sqrt(101))
    z, half = math.atanh(0.3), 1.959964 / math.sqrt(101)
    assert ci.low == pytest.approx(math.tanh(z - half), abs=1e-6)
    assert ci.high == pytest.approx(math.tanh(z + half), abs=1e-6)


def test_williams_test_matches_a_hand_computation():
    # r_jk = .5, r_jh = .3, r_kh = .4, n = 100, worked by hand:
    # |R| = 1 - .25 - .09 - .16 + 2(.5)(.3)(.4) = .62;  rbar = .4
    # den = 2 (99/97)(.62) + .16 (.6)^3 = 1.265567 + .034560 = 1.300127
    # t = .2 sqrt(99 (1.4) / 1.300127) = .2 sqrt(106.6049) = 2.06499;  df = 97;  p = 2 P(T97 > 2.065) ~ .0416
    res = williams_test(0.5, 0.3, 0.4, 100)
    assert res.t == pytest.approx(2.06499, abs=1e-4) and res.df == 97
    assert res.pvalue == pytest.approx(0.0416, abs=5e-4)
    assert williams_test(0.3, 0.5, 0.4, 100).t == pytest.approx(-res.t)
    with pytest.raises(VspInputError, match="valid correlation"):
        williams_test(0.99, -0.99, 0.99, 50)


def test_williams_test_holds_its_level_under_the_null():
    rng = np.random.default_rng(6)
    reps, n = 800, 104  # the MEN pairs of Table 3
    cov = np.array([[1, 0.4, 0.4], [0.4, 1, 0.5], [0.4, 0.5, 1]])  # r_jk = r_jh: the null
    rejections = 0
    for _ in range(reps):
        x = rng.multivariate_normal(np.zeros(3), cov, size=n)
        r = np.corrcoef(x.T)
        rejections += williams_test(r[0, 1], r[0, 2], r[1, 2], n).pvalue <= 0.05
    assert rejections / reps <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / reps)


def test_paired_comparison_exact_sign_flip_and_interval():
    a, b = np.array([0.5, 0.6, 0.7, 0.4]), np.array([0.4, 0.4, 0.4, 0.5])
    res = paired_comparison(a, b)
    # d = .1 .2 .3 -.1, sum .5: the flips with |sum| >= .5 are + + + +, + + + -, - + + + and their negatives
    d = a - b
    flips = [np.mean(d * s) for s in np.array(np.meshgrid(*[[1, -1]] * 4)).T.reshape(-1, 4)]
    assert sum(abs(f) >= abs(d.mean()) - 1e-12 for f in flips) == 6
    assert res.pvalue == pytest.approx(6 / 16) and res.mean_difference == pytest.approx(0.125)
    assert res.interval.low <= 0.125 <= res.interval.high
    assert paired_comparison(a, a).pvalue == 1.0
    one = paired_comparison([0.7], [0.2])  # one property in a class: the two sign flips tie, p = 1
    assert (
        one.pvalue == 1.0
        and one.mean_difference == pytest.approx(0.5)
        and one.interval.low == one.interval.high
    )
