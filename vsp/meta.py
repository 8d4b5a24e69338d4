"""Meta-embeddings built from the per-layer concept vectors of one network: SVD and 1ToN.

Both take a list of per-layer matrices that share their rows (the same concepts in the same order) and may
differ in width, and both up-weight the last two layers (second-to-last x5, last x10) by default, as in the
paper (section 5.1).

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
    column is flipped so that its largest-magnitude entry is positive.

1ToN meta (`onetoN_meta`, Yin & Schuetze 2016)
    A learned matrix ``E`` (``n x k``) and, per source ``j``, a linear map ``M_j`` (``k x d_j``) with bias
    ``b_j``; loss ``sum_j beta_j (mean_w |M_j^T E(w) + b_j - w_j|^2 + lambda |M_j|_F^2)`` (the squared error
    is summed over dimensions and averaged over concepts), full-batch Adam. Stopping looks at the training
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
    "OneToN",
    "OneToNResult",
    "default_weights",
    "one_to_n_meta",
    "onetoN_meta",
    "svd_meta",
]


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
    log.info("svd_meta: %d concepts, %d layers, %d dims -> %d (rank %d)", n, len(layers), total_dim, k, rank)
    return out.astype(np.float32)


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
    loss_history: list[float]  # training loss per epoch
    epochs: int  # epochs run
    converged: bool  # stopped by the tolerance rule (False: hit the epoch limit)
    reconstruction: list[float] = field(default_factory=list)  # final per-source mean squared error
    device: str = "cpu"


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


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
) -> OneToNResult:
    """Train a 1ToN meta-embedding of size ``k`` over the given sources (layers).

    Args:
        layers: per-source concept vectors, each ``(n, d_j)``, same concepts in the same order.
        k: meta-embedding size (300 in the paper).
        betas: per-source loss weights; default `default_weights` (1, ..., 5, 10).
        lam: L2 penalty on every ``M_j``.
        seed: seeds the initialisation (a private `torch.Generator`; global RNG state is untouched).
        epochs: maximum number of full-batch Adam steps.
        lr: Adam learning rate.
        tol: stop when ``(best - loss) / best < tol`` for ``patience`` consecutive epochs (training loss
            only; no evaluation data is ever looked at).
        patience: see ``tol``.
        device: ``"auto"`` (CUDA when present, else CPU), ``"cpu"`` or ``"cuda[:i]"``. Runs on CPU are
            bit-for-bit reproducible for a given seed and thread count.

    Returns:
        `OneToNResult` with the ``(n, k)`` embeddings and the loss history.
    """
    b = _check_layers(layers, betas, "onetoN_meta")
    n = layers[0].shape[0]
    dev = _resolve_device(device)
    g = torch.Generator().manual_seed(int(seed))
    model = OneToN(n, k, [x.shape[1] for x in layers], generator=g).to(dev)
    target = torch.cat([torch.as_tensor(np.asarray(x, dtype=np.float32)) for x in layers], dim=1).to(dev)
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
    log.info(
        "onetoN_meta: %d concepts, %d sources, k=%d, %d epochs (%s), loss %.4g",
        n,
        len(layers),
        k,
        len(history),
        "converged" if converged else "epoch limit",
        history[-1] if history else float("nan"),
    )
    return OneToNResult(emb, history, len(history), converged, recon, str(dev))


one_to_n_meta = onetoN_meta
