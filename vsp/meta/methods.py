"""Meta-embeddings built from the per-layer concept vectors of one network: SVD and 1ToN.

Both take a list of per-layer matrices that share their rows (the same concepts in the same order) and may
differ in width, and both up-weight the last two layers (second-to-last x5, last x10) by default, as in the
paper (section 5.1): both **multiply the layers' vectors** by these weights (`default_weights`).

SVD meta (`svd_meta`)
    The weighted layers are concatenated into one ``n x D`` matrix ``X`` (``D`` = sum of layer widths, often
    tens of thousands, while ``n`` = 638 concepts) and reduced to ``dim`` dimensions by a truncated SVD.
    Because ``n < D`` the work is done in the concept space: the ``n x n`` Gram matrix
    ``G = X X^T = sum_j w_j^2 X_j X_j^T`` is accumulated layer by layer in float64 (the concatenation is
    never materialised) and eigendecomposed, ``G = U S^2 U^T``. The output is ``U S`` truncated to
    ``min(dim, rank)`` columns, i.e. the coordinates of the concepts on the leading right-singular
    directions, exactly what ``X V`` would give. **No centring** by default (like LSA and scikit-learn's
    ``TruncatedSVD``): the concept vectors are non-negative pooled activations, and the paper says SVD, not
    PCA; ``center=True`` subtracts the column means first (PCA). Signs are made deterministic: each output
    column is flipped so that its largest-magnitude entry is positive. `svd_meta_inductive` fits the SVD on
    some rows (training concepts) and projects the others onto that basis (``X_test V``), computed in the
    concept space as ``sum_j w_j^2 X_test,j X_train,j^T U S^-1``.

1ToN meta (`onetoN_meta`, Yin & Schuetze 2016)
    A learned matrix ``E`` (``n x k``) and, per source ``j``, a linear map ``M_j`` (``k x d_j``) with bias
    ``b_j``; loss (paper Eq. 1) ``sum_j beta_j (mean_w |M_j^T E(w) + b_j - s_j w_j|^2 + lambda |M_j|_F^2)``
    (the squared error is summed over dimensions and averaged over concepts), full-batch Adam. As in the
    paper the betas are 1 and the sources are **scaled** (``s_j``: second-to-last x5, last x10, the SVD's
    up-weighting), so with squared error the last two layers weigh ``s_j^2`` = 25 and 100 in the loss
    (ResNet34's 36 sources: 125/159, about 79% of it); `onetoN_weights` ``"beta"`` instead puts 5 and 10 into
    the betas on unscaled sources (15/49, about 31%). `onetoN_project` solves the meta-embeddings of new
    rows (test concepts) by least squares through the learned maps. Stopping looks at the training
    loss only: training stops when the relative improvement of the loss over the best loss so far stays
    below ``tol`` for ``patience`` consecutive epochs, or after ``epochs`` epochs. Deterministic on CPU for a
    given seed; uses the GPU when one is present (``device="auto"``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from vsp.errors import VspInputError

log = logging.getLogger(__name__)

__all__ = [
    "ONETON_WEIGHTINGS",
    "OneToN",
    "OneToNResult",
    "default_weights",
    "one_to_n_meta",
    "onetoN_meta",
    "onetoN_project",
    "onetoN_weights",
    "svd_meta",
    "svd_meta_inductive",
]

#: How 1ToN up-weights the last two layers: ``scale`` the sources (the paper, betas 1) or put the weights
#: into the ``beta`` of Eq. 1 (sources unscaled).
ONETON_WEIGHTINGS = ("scale", "beta")


def default_weights(n_layers: int) -> list[float]:
    """The paper's layer weights: 1 for every layer, except 5 for the second-to-last and 10 for the last.

    With a single layer the weight is 1 (a global scale does not change either meta-embedding's geometry).
    """
    if n_layers < 1:
        raise VspInputError("meta-embedding needs at least one layer, got 0")
    w = [1.0] * n_layers
    if n_layers >= 2:
        w[-2] = 5.0
        w[-1] = 10.0
    return w


def onetoN_weights(n_layers: int, weighting: str = "scale") -> tuple[list[float], list[float]]:
    """The 1ToN ``(scales, betas)`` for ``n_layers`` sources under ``weighting`` (`ONETON_WEIGHTINGS`).

    ``"scale"`` (the paper): scales `default_weights`, betas 1. ``"beta"``: scales 1, betas `default_weights`.
    """
    if weighting not in ONETON_WEIGHTINGS:
        raise VspInputError(
            f"1ToN weighting must be one of {', '.join(ONETON_WEIGHTINGS)}, got {weighting!r}"
        )
    w, ones = default_weights(n_layers), [1.0] * n_layers
    return (w, ones) if weighting == "scale" else (ones, w)


def _check_layers(layers: Sequence[np.ndarray], weights: Sequence[float] | None, what: str) -> list[float]:
    if len(layers) == 0:
        raise VspInputError(f"{what}: no layers given")
    n = layers[0].shape[0]
    for j, x in enumerate(layers):
        if x.ndim != 2:
            raise VspInputError(
                f"{what}: layer {j} must be a 2-D (concepts x dims) array, got shape {x.shape}"
            )
        if x.shape[0] != n:
            raise VspInputError(
                f"{what}: layer {j} has {x.shape[0]} rows but layer 0 has {n}; all layers must share concepts"
            )
        if not np.all(np.isfinite(x)):
            raise VspInputError(f"{what}: layer {j} contains NaN or infinite values")
    if weights is None:
        weights = default_weights(len(layers))
    if len(weights) != len(layers):
        raise VspInputError(f"{what}: {len(weights)} weights for {len(layers)} layers")
    return [float(w) for w in weights]


def svd_meta(
    layers: Sequence[np.ndarray],
    weights: Sequence[float] | None = None,
    dim: int = 300,
    center: bool = False,
) -> np.ndarray:
    """SVD meta-embedding: weighted concatenation of the layers reduced to ``dim`` dimensions.

    Args:
        layers: per-layer concept vectors, each ``(n, d_j)``, same concepts in the same order.
        weights: one weight per layer; default `default_weights` (second-to-last x5, last x10).
        dim: output dimensionality (300 in the paper).
        center: subtract the column means of the concatenation first (PCA); default False (plain SVD).

    Returns:
        ``(n, min(dim, rank))`` float32 array ``U S``: the concepts' coordinates on the leading singular
        directions of the weighted concatenation (numerical rank: singular values above
        ``max(n, D) * eps * s_max``).
    """
    w = _check_layers(layers, weights, "svd_meta")
    n = layers[0].shape[0]
    total_dim = sum(x.shape[1] for x in layers)
    out, _, _, rank = _svd_fit(layers, w, dim, center)
    log.info(
        "svd_meta: %d concepts, %d layers, %d dims -> %d (rank %d)",
        n,
        len(layers),
        total_dim,
        out.shape[1],
        rank,
    )
    return out.astype(np.float32)


def _svd_fit(
    layers: Sequence[np.ndarray], w: Sequence[float], dim: int, center: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The Gram route of `svd_meta`: ``(U S signs`` float64, ``U`` ``(n, k)``, ``s`` ``(k,)``, rank)``.

    ``U`` and ``s`` are the leading left-singular vectors (sign-flipped like the output) and singular values.
    """
    n = layers[0].shape[0]
    gram = np.zeros((n, n), dtype=np.float64)
    for x, wj in zip(layers, w, strict=True):
        xj = np.asarray(x, dtype=np.float64)
        if center:
            xj = xj - xj.mean(axis=0, keepdims=True)
        gram += (wj * wj) * (xj @ xj.T)
    evals, evecs = np.linalg.eigh(gram)  # ascending
    order = np.argsort(evals)[::-1]
    evals = np.clip(evals[order], 0.0, None)
    evecs = evecs[:, order]
    s = np.sqrt(evals)
    # Rank tolerance: the Gram route resolves s only to about sqrt(n * eps) * s_max.
    s_max = float(s[0]) if s.size else 0.0
    tol = 10.0 * np.sqrt(n * np.finfo(np.float64).eps) * s_max
    rank = int(np.sum(s > tol))
    k = min(dim, rank)
    out = evecs[:, :k] * s[:k]
    # Deterministic signs: largest-magnitude entry of each column positive.
    idx = np.argmax(np.abs(out), axis=0)
    signs = np.sign(out[idx, np.arange(k)])
    signs[signs == 0] = 1.0
    out = out * signs
    return out, evecs[:, :k] * signs, s[:k], rank


def svd_meta_inductive(
    layers: Sequence[np.ndarray],
    train: Sequence[int] | np.ndarray,
    test: Sequence[int] | np.ndarray,
    weights: Sequence[float] | None = None,
    dim: int = 300,
    center: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """SVD meta-embedding fitted on the ``train`` rows only, with the ``test`` rows projected onto its basis.

    The training rows get exactly ``svd_meta([x[train] for x in layers], ...)``; a test row ``x`` gets
    ``x V`` (``V``: the leading right-singular vectors of the training concatenation, same column signs), the
    coordinates it would have in the training SVD. With ``center`` the training column means are subtracted
    from both. Returns ``(train (len(train), k), test (len(test), k))`` float32.
    """
    w = _check_layers(layers, weights, "svd_meta_inductive")
    train = np.asarray(train, dtype=np.int64)
    test = np.asarray(test, dtype=np.int64)
    if train.size == 0:
        raise VspInputError("svd_meta_inductive: no training rows")
    tr = [np.asarray(x, dtype=np.float64)[train] for x in layers]
    out, u, s, rank = _svd_fit(tr, w, dim, center)
    cross = np.zeros((test.size, train.size), dtype=np.float64)
    for xtr, x, wj in zip(tr, layers, w, strict=True):
        xte = np.asarray(x, dtype=np.float64)[test]
        if center:
            mu = xtr.mean(axis=0, keepdims=True)
            xtr, xte = xtr - mu, xte - mu
        cross += (wj * wj) * (xte @ xtr.T)
    proj = (cross @ u) / s
    log.info(
        "svd_meta_inductive: fitted on %d concepts (rank %d), %d projected, %d dims",
        train.size, rank, test.size, out.shape[1],
    )  # fmt: skip
    return out.astype(np.float32), proj.astype(np.float32)


class OneToN(nn.Module):
    """The 1ToN network: meta-embeddings ``E`` (n x k) and one linear map (k -> d_j) per source.

    The per-source maps are held side by side in one ``(k, sum d_j)`` matrix so that a step costs one matrix
    product whatever the number of sources (DenseNet169 has 168); Adam is elementwise, so this trains exactly
    the per-source model of Yin & Schuetze.
    """

    def __init__(self, n: int, k: int, dims: Sequence[int], generator: torch.Generator | None = None):
        super().__init__()
        g = generator
        self.E = nn.Parameter(torch.randn(n, k, generator=g) * (1.0 / np.sqrt(k)))
        bound = 1.0 / np.sqrt(k)
        self.M = nn.Parameter(
            torch.cat([(torch.rand(k, d, generator=g) * 2 - 1) * bound for d in dims], dim=1)
        )
        self.b = nn.Parameter(torch.zeros(sum(dims)))
        self.register_buffer(
            "source", torch.repeat_interleave(torch.arange(len(dims)), torch.tensor(list(dims)))
        )
        self.dims = list(dims)

    def forward(self) -> list[torch.Tensor]:
        """Reconstructions ``E M_j + b_j`` of every source, each ``(n, d_j)``."""
        return list(torch.split(self.E @ self.M + self.b, self.dims, dim=1))

    def losses(
        self,
        target: torch.Tensor,
        betas: torch.Tensor,
        lam: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Total loss and the per-source mean squared reconstruction errors (without the penalty).

        ``target`` is the sources concatenated column-wise ``(n, sum d_j)``; ``betas`` one weight per source.
        """
        n = target.shape[0]
        col_err = ((self.E @ self.M + self.b - target) ** 2).sum(dim=0) / n
        col_pen = (self.M**2).sum(dim=0)
        per_source = torch.zeros(len(self.dims), dtype=col_err.dtype, device=col_err.device)
        recon = per_source.index_add(0, self.source, col_err)
        penalty = per_source.index_add(0, self.source, col_pen)
        return (betas * (recon + lam * penalty)).sum(), recon.detach()


@dataclass
class OneToNResult:
    """Output of `onetoN_meta`."""

    embeddings: np.ndarray  # (n, k) float32
    loss_history: list[float]  # training loss per epoch (before that epoch's step)
    epochs: int  # epochs run
    converged: bool  # stopped by the tolerance rule (False: hit the epoch limit)
    reconstruction: list[float] = field(default_factory=list)  # final per-source MSE of the scaled sources
    device: str = "cpu"
    scales: list[float] = field(default_factory=list)  # s_j: each source was multiplied by this
    betas: list[float] = field(default_factory=list)  # beta_j of Eq. 1
    maps: list[np.ndarray] = field(default_factory=list)  # M_j, (k, d_j) float32
    biases: list[np.ndarray] = field(default_factory=list)  # b_j, (d_j,) float32


def _resolve_device(device: str) -> torch.device:
    from vsp.stage import pick_device

    return torch.device(pick_device(None if device == "auto" else device))


def onetoN_meta(  # noqa: N802 - name fixed by the project contract
    layers: Sequence[np.ndarray],
    k: int = 300,
    betas: Sequence[float] | None = None,
    lam: float = 1e-4,
    seed: int = 0,
    epochs: int = 2000,
    lr: float = 1e-2,
    tol: float = 1e-4,
    patience: int = 20,
    device: str = "auto",
    scales: Sequence[float] | None = None,
) -> OneToNResult:
    """Train a 1ToN meta-embedding of size ``k`` over the given sources (layers), paper Eq. 1.

    Args:
        layers: per-source concept vectors, each ``(n, d_j)``, same concepts in the same order.
        k: meta-embedding size (300 in the paper).
        betas: per-source loss weights ``beta_j``; default 1 for every source (the paper).
        lam: L2 penalty on every ``M_j``.
        seed: seeds the initialisation (a private `torch.Generator`; global RNG state is untouched).
        epochs: maximum number of full-batch Adam steps.
        lr: Adam learning rate.
        tol: stop when ``(best - loss) / best < tol`` for ``patience`` consecutive epochs (training loss
            only; no evaluation data is ever looked at).
        patience: see ``tol``.
        device: ``"auto"`` (CUDA when present, else CPU), ``"cpu"`` or ``"cuda[:i]"``. Runs on CPU are
            bit-for-bit reproducible for a given seed and thread count.
        scales: per-source multipliers ``s_j`` applied to the sources before training (the targets are
            ``s_j w_j``); default `default_weights` (1, ..., 5, 10: the paper's up-weighting of the last two
            convolutional layers). `onetoN_weights` gives both lists for a weighting scheme.

    Returns:
        `OneToNResult` with the ``(n, k)`` embeddings, the loss history, the scales and betas used and the
        learned maps and biases (for `onetoN_project`).
    """
    b = _check_layers(layers, betas if betas is not None else [1.0] * len(layers), "onetoN_meta")
    sc = _check_layers(layers, scales, "onetoN_meta")
    n = layers[0].shape[0]
    dev = _resolve_device(device)
    g = torch.Generator().manual_seed(int(seed))
    model = OneToN(n, k, [x.shape[1] for x in layers], generator=g).to(dev)
    target = torch.cat(
        [
            torch.as_tensor(np.asarray(x, dtype=np.float32) * np.float32(sj))
            for x, sj in zip(layers, sc, strict=True)
        ],
        dim=1,
    ).to(dev)
    beta_t = torch.as_tensor(np.asarray(b, dtype=np.float32), device=dev)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    history: list[float] = []
    best = float("inf")
    stall = 0
    converged = False
    for _epoch in range(epochs):
        opt.zero_grad(set_to_none=True)
        loss, _ = model.losses(target, beta_t, lam)
        loss.backward()
        opt.step()
        value = float(loss.detach())
        history.append(value)
        if not np.isfinite(value):
            raise VspInputError(
                f"onetoN_meta: loss became {value} at epoch {len(history)}; lower lr (now {lr})"
            )
        if best < float("inf") and (best - value) / max(abs(best), 1e-12) < tol:
            stall += 1
        else:
            stall = 0
        best = min(best, value)
        if stall >= patience:
            converged = True
            break
    with torch.no_grad():
        recon = model.losses(target, beta_t, lam)[1].cpu().tolist()
    emb = model.E.detach().cpu().numpy().astype(np.float32)
    maps = [m.numpy().astype(np.float32) for m in torch.split(model.M.detach().cpu(), model.dims, dim=1)]
    biases = [v.numpy().astype(np.float32) for v in torch.split(model.b.detach().cpu(), model.dims)]
    log.info(
        "onetoN_meta: %d concepts, %d sources, k=%d, %d epochs (%s), loss %.4g",
        n,
        len(layers),
        k,
        len(history),
        "converged" if converged else "epoch limit",
        history[-1] if history else float("nan"),
    )
    return OneToNResult(emb, history, len(history), converged, recon, str(dev), sc, b, maps, biases)


def onetoN_project(layers: Sequence[np.ndarray], fit: OneToNResult) -> np.ndarray:  # noqa: N802
    """Meta-embeddings of new rows (e.g. test concepts) through a fitted 1ToN's maps, by least squares.

    For each row, ``e = argmin_e sum_j beta_j |M_j^T e + b_j - s_j w_j|^2``: Eq. 1 with the maps, biases,
    scales and betas of ``fit`` held fixed (the penalty on ``M_j`` is then a constant), solved in float64
    (`numpy.linalg.lstsq`; the minimum-norm solution if the stacked maps are rank-deficient). At a converged
    fit the training rows' own embeddings are (nearly) such solutions.

    Args:
        layers: the new rows' source vectors, each ``(m, d_j)``, in the order of the fitted sources.
        fit: the `onetoN_meta` result whose maps to use.

    Returns:
        ``(m, k)`` float32.
    """
    _check_layers(layers, fit.scales, "onetoN_project")
    if len(layers) != len(fit.maps):
        raise VspInputError(f"onetoN_project: {len(layers)} sources for a fit of {len(fit.maps)}")
    for j, (x, m) in enumerate(zip(layers, fit.maps, strict=True)):
        if x.shape[1] != m.shape[1]:
            raise VspInputError(f"onetoN_project: source {j} has {x.shape[1]} dims, the fit {m.shape[1]}")
    root = [np.sqrt(float(bj)) for bj in fit.betas]
    a = np.hstack([rj * np.asarray(m, dtype=np.float64) for rj, m in zip(root, fit.maps, strict=True)])
    t = np.hstack(
        [
            rj * (float(sj) * np.asarray(x, dtype=np.float64) - np.asarray(bias, dtype=np.float64))
            for rj, sj, x, bias in zip(root, fit.scales, layers, fit.biases, strict=True)
        ]
    )
    e, *_ = np.linalg.lstsq(a.T, t.T, rcond=None)
    return e.T.astype(np.float32)


one_to_n_meta = onetoN_meta
