import numpy as np
import pytest

from vsp.errors import VspInputError
from vsp.meta import default_weights, one_to_n_meta, onetoN_meta, svd_meta


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
