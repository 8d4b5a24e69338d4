import numpy as np
import pytest

from vsp.errors import VspInputError
from vsp.meta.methods import (
    OneToNResult,
    default_weights,
    one_to_n_meta,
    onetoN_meta,
    onetoN_project,
    onetoN_weights,
    svd_meta,
    svd_meta_inductive,
)


def _low_rank(n=40, r=4, dims=(7, 12, 20, 9), seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, r))
    return z, [z @ rng.normal(size=(r, d)) for d in dims]


def test_default_weights():
    assert default_weights(1) == [1.0]
    assert default_weights(2) == [5.0, 10.0]
    assert default_weights(4) == [1.0, 1.0, 5.0, 10.0]
    with pytest.raises(VspInputError):
        default_weights(0)


def test_svd_meta_recovers_low_rank_input():
    z, layers = _low_rank()
    out = svd_meta(layers, dim=300)
    assert out.shape == (40, 4)  # truncated at the rank, not at dim
    x = np.hstack([w * m for w, m in zip(default_weights(4), layers, strict=True)])
    # Same geometry as the weighted concatenation: identical Gram matrix (distances, cosines) ...
    np.testing.assert_allclose(out @ out.T, x @ x.T, rtol=1e-4, atol=1e-3 * np.abs(x @ x.T).max())
    # ... and the same column space as the latent factors.
    q, _ = np.linalg.qr(z)
    resid = out - q @ (q.T @ out)
    assert np.linalg.norm(resid) < 1e-4 * np.linalg.norm(out)
    # Equal to U*S of a direct SVD up to column signs.
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    np.testing.assert_allclose(np.abs(out), np.abs(u[:, :4] * s[:4]), rtol=1e-3, atol=1e-3)


def test_svd_meta_truncation_weights_signs_and_centring():
    _, layers = _low_rank()
    out2 = svd_meta(layers, dim=2)
    full = svd_meta(layers, dim=300)
    np.testing.assert_allclose(out2, full[:, :2], rtol=1e-5, atol=1e-5)
    # Deterministic signs: the largest-magnitude entry of each column is positive.
    assert np.all(full[np.argmax(np.abs(full), axis=0), np.arange(full.shape[1])] > 0)
    # Weights matter: equal weights give a different embedding.
    assert not np.allclose(np.abs(svd_meta(layers, weights=[1, 1, 1, 1])), np.abs(full))
    centred = svd_meta(layers, center=True)
    np.testing.assert_allclose(centred.mean(axis=0), 0, atol=1e-3)


def test_svd_meta_rejects_mismatched_layers():
    with pytest.raises(VspInputError, match="layer 1 has 5 rows"):
        svd_meta([np.ones((4, 3)), np.ones((5, 3))])
    with pytest.raises(VspInputError, match="weights"):
        svd_meta([np.ones((4, 3))], weights=[1, 2])


def _sources(n=50, seed=1):
    z, layers = _low_rank(n=n, r=6, dims=(10, 16, 24), seed=seed)
    return [m / np.linalg.norm(m, axis=1, keepdims=True) for m in layers]


def test_onetoN_reconstructs_better_than_random_and_is_reproducible():
    layers = _sources()
    res = onetoN_meta(layers, k=8, seed=3, epochs=400, device="cpu")
    assert res.embeddings.shape == (50, 8)
    assert res.loss_history[-1] < 0.1 * res.loss_history[0]
    # Baseline: a random E of the same shape with the best least-squares maps (with bias) to each source.
    rng = np.random.default_rng(0)
    e_rand = np.hstack([rng.normal(size=(50, 8)), np.ones((50, 1))])
    for j, src in enumerate(layers):
        coef, *_ = np.linalg.lstsq(e_rand, src, rcond=None)
        rand_err = float(((e_rand @ coef - src) ** 2).sum(axis=1).mean())
        assert res.reconstruction[j] < 0.5 * rand_err
    again = onetoN_meta(layers, k=8, seed=3, epochs=400, device="cpu")
    np.testing.assert_array_equal(res.embeddings, again.embeddings)
    assert res.loss_history == again.loss_history
    other = one_to_n_meta(layers, k=8, seed=4, epochs=400, device="cpu")
    assert not np.array_equal(res.embeddings, other.embeddings)


def test_onetoN_stops_on_training_loss():
    layers = _sources()
    res = onetoN_meta(layers, k=8, seed=0, epochs=5000, tol=1e-2, patience=5, device="cpu")
    assert res.converged and res.epochs < 5000 and len(res.loss_history) == res.epochs
    capped = onetoN_meta(layers, k=8, seed=0, epochs=10, tol=0.0, device="cpu")
    assert not capped.converged and capped.epochs == 10


# ------------------------------------------------------------------------------- 1ToN: paper Eq. 1 weighting
def _eq1(layers, e, maps, biases, scales, betas, lam):
    """Paper Eq. 1 by hand: sum_j beta_j (mean_w |M_j^T E(w) + b_j - s_j w_j|^2 + lam |M_j|^2), float64."""
    e = np.asarray(e, np.float64)
    total = 0.0
    for x, m, b, s, beta in zip(layers, maps, biases, scales, betas, strict=True):
        resid = e @ np.asarray(m, np.float64) + np.asarray(b, np.float64) - s * np.asarray(x, np.float64)
        total += beta * ((resid**2).sum(axis=1).mean() + lam * (np.asarray(m, np.float64) ** 2).sum())
    return total


def test_onetoN_weights_schemes():
    assert onetoN_weights(4) == ([1.0, 1.0, 5.0, 10.0], [1.0] * 4)  # the paper: scaled sources, betas 1
    assert onetoN_weights(4, "beta") == ([1.0] * 4, [1.0, 1.0, 5.0, 10.0])
    with pytest.raises(VspInputError, match="weighting"):
        onetoN_weights(3, "both")


def test_onetoN_optimises_eq1_with_scaled_sources_and_unit_betas():
    """The loss the code optimises is Eq. 1 with the last two sources x5, x10 and betas 1 (by default)."""
    layers = _sources()
    lam = 1e-2
    # lr 0: one epoch that leaves the seeded initial parameters as they are, so the recorded loss is the
    # objective at the returned E, M_j, b_j
    res = onetoN_meta(layers, k=8, seed=2, epochs=1, lr=0.0, lam=lam, device="cpu")
    assert res.scales == [1.0, 5.0, 10.0] and res.betas == [1.0, 1.0, 1.0]
    assert [m.shape for m in res.maps] == [(8, 10), (8, 16), (8, 24)]
    paper = _eq1(layers, res.embeddings, res.maps, res.biases, [1, 5, 10], [1, 1, 1], lam)
    assert res.loss_history[0] == pytest.approx(paper, rel=1e-5)
    old = _eq1(layers, res.embeddings, res.maps, res.biases, [1, 1, 1], [1, 5, 10], lam)
    assert abs(old - paper) > 0.1 * paper  # the betas-on-unscaled-sources objective is another function
    # ... and the other scheme, asked for explicitly, is exactly that one
    beta = onetoN_meta(layers, k=8, seed=2, epochs=1, lr=0.0, lam=lam, device="cpu", **_scheme("beta"))
    assert beta.loss_history[0] == pytest.approx(old, rel=1e-5)
    # the reconstruction errors are those of the scaled sources
    for j, s in enumerate([1, 5, 10]):
        r = res.embeddings.astype(np.float64) @ res.maps[j] + res.biases[j] - s * layers[j]
        assert res.reconstruction[j] == pytest.approx((r**2).sum(axis=1).mean(), rel=1e-4)


def _scheme(weighting):
    scales, betas = onetoN_weights(3, weighting)
    return {"scales": scales, "betas": betas}


def test_onetoN_fit_is_a_stationary_point_of_the_paper_objective():
    """Trained to convergence, the gradient of Eq. 1 (scaled sources, betas 1) w.r.t. E and b_j vanishes."""
    layers = _sources(n=30)
    lam = 1e-4
    res = onetoN_meta(layers, k=4, seed=0, epochs=4000, tol=1e-9, patience=100, lam=lam, device="cpu")
    e = res.embeddings.astype(np.float64)
    n = len(e)

    def grads(scales, betas):
        ge = np.zeros_like(e)
        gb = []
        for x, m, b, s, beta in zip(layers, res.maps, res.biases, scales, betas, strict=True):
            resid = e @ m + b - s * x
            ge += beta * (2.0 / n) * resid @ m.T
            gb.append(beta * (2.0 / n) * resid.sum(axis=0))
        return ge, np.concatenate(gb)

    ge, gb = grads([1, 5, 10], [1, 1, 1])
    ge_old, gb_old = grads([1, 1, 1], [1, 5, 10])  # the betas-on-unscaled objective at the same point
    assert np.abs(ge).max() < 0.01 * np.abs(ge_old).max()
    assert np.abs(gb).max() < 0.01 * np.abs(gb_old).max()


# ------------------------------------------------------------- inductive fits (mapping meta_fit=train)
def test_svd_meta_inductive_is_the_training_svd_with_test_rows_projected():
    rng = np.random.default_rng(4)
    layers = [rng.random((30, d)).astype(np.float32) for d in (7, 12, 9)]
    train, test = np.setdiff1d(np.arange(30), [3, 8, 11, 20, 27]), np.array([3, 8, 11, 20, 27])
    w = default_weights(3)
    for center in (False, True):
        tr, te = svd_meta_inductive(layers, train, test, w, dim=5, center=center)
        assert tr.shape == (25, 5) and te.shape == (5, 5)
        np.testing.assert_array_equal(tr, svd_meta([x[train] for x in layers], w, dim=5, center=center))
        # direct: numpy SVD of the weighted training concatenation, test rows times V
        x = np.hstack([wj * m.astype(np.float64) for wj, m in zip(w, layers, strict=True)])
        mu = x[train].mean(axis=0) if center else 0.0
        u, s, vt = np.linalg.svd(x[train] - mu, full_matrices=False)
        ref_tr, ref_te = u[:, :5] * s[:5], (x[test] - mu) @ vt[:5].T
        signs = np.sign((ref_tr * tr).sum(axis=0))  # the column signs are a convention
        np.testing.assert_allclose(tr, ref_tr * signs, atol=1e-5)
        np.testing.assert_allclose(te, ref_te * signs, atol=1e-5)
    # a test row equal to a training row lands on that row's embedding
    dup = [np.vstack([m, m[train[:1]]]) for m in layers]
    tr, te = svd_meta_inductive(dup, train, np.array([30]), w, dim=5)
    np.testing.assert_allclose(te[0], tr[0], atol=1e-5)


def test_onetoN_project_solves_eq1_for_new_rows_by_least_squares():
    rng = np.random.default_rng(5)
    k, dims = 3, (4, 6, 5)
    maps = [rng.normal(size=(k, d)).astype(np.float32) for d in dims]
    biases = [rng.normal(size=d).astype(np.float32) for d in dims]
    fit = OneToNResult(
        np.zeros((1, k), np.float32), [], 0, True, scales=[1.0, 5.0, 10.0], betas=[1.0, 2.0, 1.0]
    )
    fit.maps, fit.biases = maps, biases
    # exact case: sources generated by the maps from known rows are inverted exactly
    e_true = rng.normal(size=(7, k))
    layers = [(e_true @ m + b) / s for m, b, s in zip(maps, biases, fit.scales, strict=True)]
    np.testing.assert_allclose(onetoN_project(layers, fit), e_true, atol=1e-4)
    # noisy case: the weighted normal equations of Eq. 1 in E, solved directly
    noisy = [x + 0.3 * rng.normal(size=x.shape) for x in layers]
    a = sum(beta * m.astype(np.float64) @ m.T for m, beta in zip(maps, fit.betas, strict=True))
    rhs = sum(
        beta * (s * x - b) @ m.T.astype(np.float64)
        for x, m, b, s, beta in zip(noisy, maps, biases, fit.scales, fit.betas, strict=True)
    )
    np.testing.assert_allclose(onetoN_project(noisy, fit), rhs @ np.linalg.inv(a), atol=1e-4)
    with pytest.raises(VspInputError, match="dims"):
        onetoN_project([x[:, :-1] for x in noisy], fit)


def test_onetoN_project_recovers_the_training_rows_of_a_converged_fit():
    layers = _sources(n=30)
    res = onetoN_meta(layers, k=4, seed=0, epochs=4000, tol=1e-9, patience=100, device="cpu")
    again = onetoN_project(layers, res)
    assert np.abs(again - res.embeddings).max() < 0.01 * np.abs(res.embeddings).max()
