"""vsp.decode.permutation: the null is the same probe on permuted labels; p-values are calibrated."""

import numpy as np
from scipy import stats as sps

from vsp.decode.permutation import mean_f1, permutation_null, permuted_labels
from vsp.decode.probe import probe_layer
from vsp.stats import benjamini_hochberg, permutation_pvalues


def random_labels(rng, n, P, pos=15):
    labels = np.zeros((n, P), dtype=np.uint8)
    for p in range(P):
        labels[rng.choice(n, size=pos, replace=False), p] = 1
    return labels


def test_null_is_the_probe_on_each_permutation_with_its_own_folds():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 5))
    labels = random_labels(rng, 40, 6, pos=10)
    observed, null = permutation_null(X, labels, 5, seed=3, folds=3, cv_seed=1, batch=2)
    np.testing.assert_array_equal(observed, mean_f1(probe_layer(X, labels, folds=3, seed=1), 6, 3))
    perms = permuted_labels(labels, 5, seed=3)
    for b in range(5):  # batching permutations as columns changes nothing
        assert (perms[b].sum(axis=0) == labels.sum(axis=0)).all()
        np.testing.assert_allclose(
            null[b], mean_f1(probe_layer(X, perms[b], folds=3, seed=1), 6, 3), atol=1e-6
        )


def test_pvalues_are_uniform_when_features_carry_no_label_information():
    pvalues = []
    for seed in range(3):
        rng = np.random.default_rng(10 + seed)
        X = rng.normal(size=(60, 6))
        labels = random_labels(rng, 60, 40)
        observed, null = permutation_null(X, labels, 39, seed=seed, folds=3)
        pvalues.append(permutation_pvalues(observed, null))
    p = np.concatenate(pvalues)
    assert sps.kstest(p, "uniform").pvalue > 0.001
    assert (benjamini_hochberg(p) <= 0.1).mean() < 0.05  # no property declared decodable, or almost none


def test_a_decodable_property_gets_the_smallest_pvalue():
    rng = np.random.default_rng(7)
    labels = random_labels(rng, 60, 5)
    X = np.column_stack([labels[:, 0] + 0.1 * rng.normal(size=60), rng.normal(size=(60, 4))])
    observed, null = permutation_null(X, labels, 19, folds=3)
    p = permutation_pvalues(observed, null)
    assert p[0] == 1 / 20 and observed[0] > 0.9
