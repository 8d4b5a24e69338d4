"""Regularisation chosen by nested cross-validation: ``C`` per (property, outer fold) from inner folds.

The paper fixes C = 1. With ``decode.C_grid`` every (property, outer fold) instead picks the C of the grid
with the best mean inner-fold F1, where the inner folds are ``StratifiedKFold(inner_folds, shuffle=True,
random_state=seed)`` on the outer training concepts only (the outer test concepts never inform the choice),
and the outer probe is then fitted with that C. Ties go to the smallest C (the strongest regularisation).
Every problem, inner and outer, is one more column of the same batched solve (``vsp.decode.probe``), so the
grid costs ``len(C_grid) x inner_folds + 1`` fits per (property, fold) without a Python loop over fits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from vsp.decode.probe import PROBE_COLUMNS, _fit, _ratio, stratified_folds
from vsp.errors import VspInputError


def _balanced(y: torch.Tensor, train: torch.Tensor) -> torch.Tensor:
    """``class_weight="balanced"`` weights on each problem's training rows, 0 elsewhere."""
    n_train = train.sum(dim=1, keepdim=True)
    n_pos = (y & train).sum(dim=1, keepdim=True)
    w_pos = n_train / (2.0 * n_pos)
    w_neg = n_train / (2.0 * (n_train - n_pos))
    return torch.where(y, w_pos, w_neg) * train


def _scores(Xt, y, train, test, C, dtype, chunk: int, **kw: Any) -> tuple[torch.Tensor, ...]:
    """tp, fp, fn on each problem's test rows after fitting on its training rows (problems in chunks)."""
    parts: list[tuple[torch.Tensor, ...]] = []
    for a in range(0, y.shape[0], chunk):
        b = min(y.shape[0], a + chunk)
        yk, tr, te = y[a:b], train[a:b], test[a:b]
        W = _balanced(yk, tr).to(dtype)
        _, sol = _fit(Xt, yk.to(dtype), W, C[a:b].to(dtype), need_coef=False, dtype=dtype, max_cg=100, **kw)
        pred = sol.margins > 0
        tp = (pred & yk & te).sum(dim=1).to(torch.float64)
        fp = (pred & ~yk & te).sum(dim=1).to(torch.float64)
        fn = (~pred & yk & te).sum(dim=1).to(torch.float64)
        parts.append((tp, fp, fn, sol.n_iter))
    return tuple(torch.cat([p[i] for p in parts]) for i in range(4))


def inner_folds_of(labels: np.ndarray, outer: np.ndarray, folds: int, inner: int, seed: int) -> np.ndarray:
    """(n, P, folds) inner test-fold index of each outer training row (-1 on the outer test rows)."""
    n, P = labels.shape
    out = np.full((n, P, folds), -1, dtype=np.int8)
    for p in range(P):
        for k in range(folds):
            rows = np.flatnonzero(outer[:, p] != k)
            out[rows, p, k] = stratified_folds(labels[rows, p : p + 1], inner, seed)[:, 0]
    return out


def probe_layer_nested(
    X: Any,
    labels: Any,
    folds: int = 5,
    seed: int = 0,
    C_grid: Sequence[float] = (0.1, 1.0, 10.0),
    inner_folds: int = 3,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    tol: float | None = None,
    max_iter: int = 100,
    max_problems: int | None = None,
    workers: int | None = None,
) -> dict[str, np.ndarray]:
    """``probe_layer`` with C chosen per (property, outer fold) by inner CV; adds the chosen ``C`` column."""
    grid = sorted(float(c) for c in C_grid)
    if not grid or any(c <= 0 for c in grid):
        raise VspInputError(f"C_grid must be numbers > 0, got {list(C_grid)}")
    if not 2 <= inner_folds < folds:
        raise VspInputError(f"inner_folds must be from 2 to folds - 1 ({folds - 1}), got {inner_folds}")
    X_np = np.asarray(X.detach().cpu().numpy() if isinstance(X, torch.Tensor) else X)
    lab_np = np.asarray(labels)
    if X_np.ndim != 2 or lab_np.ndim != 2 or X_np.shape[0] != lab_np.shape[0]:
        raise VspInputError(f"X {X_np.shape} and labels {lab_np.shape} must be 2-D with the same rows")
    n, P = lab_np.shape
    outer = stratified_folds(lab_np, folds, seed)  # (n, P): the single-split probe's folds
    inner = inner_folds_of(lab_np, outer, folds, inner_folds, seed)  # (n, P, F)
    dev = torch.device(device)
    Xt = torch.as_tensor(X_np, dtype=torch.float64, device=dev)
    kw = {"tol": tol, "max_iter": max_iter, "hess_dtype": None, "workers": workers}
    chunk = max_problems or 20_000
    y_all = torch.as_tensor(lab_np.T.astype(bool), device=dev)  # (P, n)
    o = torch.as_tensor(outer.T.astype(np.int64), device=dev)  # (P, n)
    i_t = torch.as_tensor(inner.transpose(1, 2, 0).astype(np.int64), device=dev)  # (P, F, n)
    F, J, G = folds, inner_folds, len(grid)
    # inner problems (p, k, j, g): train on the outer training rows outside inner fold j, test on inner fold j
    y_in = y_all[:, None, None, None, :].expand(P, F, J, G, n).reshape(-1, n)
    j_ids = torch.arange(J, device=dev).view(1, 1, J, 1, 1)
    in_outer_train = (i_t >= 0)[:, :, None, None, :]
    test_in = (i_t[:, :, None, None, :] == j_ids).expand(P, F, J, G, n)
    train_in = (in_outer_train & ~test_in).reshape(-1, n)
    C_in = (
        torch.as_tensor(grid, dtype=torch.float64, device=dev).view(1, 1, 1, G).expand(P, F, J, G).reshape(-1)
    )
    tp, fp, fn, _ = _scores(Xt, y_in, train_in, test_in.reshape(-1, n), C_in, dtype, chunk, **kw)
    f1_in = torch.as_tensor(_ratio(2 * tp, 2 * tp + fp + fn)).view(P, F, J, G).mean(dim=2)  # (P, F, G)
    best = torch.argmax(f1_in, dim=2)  # the first maximum: the smallest C among ties
    chosen = torch.as_tensor(grid, dtype=torch.float64)[best].reshape(-1).to(dev)  # (P * F,)
    # outer problems (p, k) with their chosen C
    y = y_all[:, None, :].expand(P, F, n).reshape(-1, n)
    test = (o[:, None, :] == torch.arange(F, device=dev).view(1, F, 1)).reshape(-1, n)
    tp, fp, fn, n_iter = _scores(Xt, y, ~test, test, chosen, dtype, chunk, **kw)
    out = {
        "property": np.repeat(np.arange(P), F),
        "fold": np.tile(np.arange(F), P),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "n_pos_test": (tp + fn).cpu().numpy().astype(np.int32),
        "n_pos_train": (y & ~test).sum(dim=1).cpu().numpy().astype(np.int32),
        "n_test": test.sum(dim=1).cpu().numpy().astype(np.int32),
        "n_iter": n_iter.cpu().numpy().astype(np.int32),
        "C": chosen.cpu().numpy().astype(np.float64),
    }
    assert set(PROBE_COLUMNS) <= set(out)
    return out
