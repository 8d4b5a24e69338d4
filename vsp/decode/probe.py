"""Batched class-weighted L2 logistic regression in torch; stratified folds; F1.

Every (property, fold) probe of one layer is a binary logistic regression on the *same* feature matrix X
(n concepts x d features). :func:`fit_logreg_batched` fits all of them at once: problem ``k`` is a label
column ``Y[:, k]`` and a sample-weight column ``W[:, k]`` (test rows weight 0, training rows their
class-balanced weight), so every problem uses the same X and the gradients of all problems are one GEMM pair
``X^T (W * (sigmoid(X B + b) - Y))``.

The objective of problem ``k`` is scikit-learn's ::

    C * sum_i W[i, k] * logloss(Y[i, k], x_i . w_k + b_k) + 0.5 * ||w_k||^2      (intercept not penalised)

which has the same minimiser as ``LogisticRegression(class_weight="balanced", C=C)`` fitted on the training
rows of fold ``k`` when ``W`` holds the balanced weights ``n_train / (2 * n_class)`` (summing to ``n_train``).

Solver: exact reparametrisations, then a batched truncated Newton method.

1. **Centering.** ``x . w + b = (x - mu) . w + (b + mu . w)``; the intercept is free, so centering X by its
   column mean is exact; it removes the large common direction of non-negative (post-ReLU) features.
2. **Row space in an eigenbasis.** With ``Xc = U S V^T`` (from the eigendecomposition of the smaller Gram
   matrix), the optimum satisfies ``w = -C Xc^T r``, so it lies in the row space: ``w = V beta``,
   ``||w|| = ||beta||`` (the penalty is rotation invariant) and the problem becomes the same logistic
   regression on ``Z = U S`` (n x r, r <= min(n - 1, d), orthogonal columns). When d > n the work shrinks
   from d to r < n. Directions with eigenvalue below ``rcond * largest`` are dropped (their effect on any
   margin is below the working precision). Coefficients map back as ``w = V beta``, ``b = b' - mu . w``.
3. **Batched Newton-CG** on ``theta = (beta, b')``. Per Newton iteration: one GEMM for the gradients of all
   active problems (``Z1^T (W (sigmoid(m) - Y))``, ``Z1 = [Z, 1]``), two for the preconditioner, a
   preconditioned CG solve of ``H p = -g`` in which the Hessian-vector products of all problems are one GEMM
   pair (``H v = Z1^T (C W s (1 - s) (Z1 v)) + P v``), and one GEMM for the new margins ``Z1 p``. The
   preconditioner is H's diagonal plus its intercept row and column taken from the majority-class rows (an
   "arrow" matrix, inverted in O(r) by a Schur complement; with all rows, the few heavily weighted minority
   rows can make it indefinite). Z's orthogonal columns make the diagonal a good approximation. The CG
   forcing term is ``min(0.5, |g|) |g|`` on the scaled gradient, floored at half the tolerance.
4. **Mixed precision.** Gradients, margins and the stopping test are in the working dtype (float32 by
   default). Where bfloat16 GEMMs are fast (AVX512-BF16/AMX CPUs, GPUs; measured once per device type), the
   Hessian-vector products inside CG and the preconditioner use bfloat16: an inexact Hessian changes the
   Newton path, never the optimum, which is defined by the float32 gradient.
5. **Exact line search** along the Newton direction: the directional derivative of every problem needs only
   element-wise work on ``m + a Z1 p``; a safeguarded 1-D Newton search (derivatives, not function
   differences, so it is reliable in float32) finds the step. Full steps are almost always accepted.
6. **Active set.** A problem whose scaled gradient norm ``|g| / (C * sum_i W[i, k])`` (what scikit-learn's
   lbfgs compares with ``tol``; here the 2-norm, never smaller than the max-norm) falls below ``tol`` leaves
   the active set and costs nothing more; inside CG, problems whose residual is small enough are frozen, then
   dropped.
7. **CPU threads.** On CPU the problems are split into ``workers`` chunks (default: torch's thread count)
   solved in parallel threads with torch single-threaded meanwhile: whole solves scale across cores better
   than the many small multi-threaded operations of one. float32 GEMMs go through oneDNN (which, unlike MKL's
   sgemm, uses AVX-512 on AMD CPUs too).

On a machine shared with other work, run with ``OMP_WAIT_POLICY=PASSIVE`` (or one torch thread): OpenMP
threads that spin while waiting for a descheduled sibling can make multi-threaded torch ops many times slower.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vsp.errors import VspInputError

log = logging.getLogger(__name__)

#: Default stopping tolerance on the scaled gradient 2-norm, per dtype. scikit-learn's lbfgs default is 1e-4
#: on the max-norm (never larger than the 2-norm), so these stop much closer to the optimum.
DEFAULT_TOL = {torch.float32: 3e-6, torch.float64: 1e-9}

#: Eigenvalues of the centred Gram matrix below ``rcond * largest`` are dropped from the basis.
_RCOND = {torch.float32: 1e-7, torch.float64: 1e-12}

# CG forcing term: stop when |residual| <= min(_ETA_MAX, |g|) |g| (scaled), but not below _CG_FLOOR * tol.
_ETA_MAX = 0.5
_CG_FLOOR = 0.5

#: Work counters (rows of Hessian-vector products and of gradients), for benchmarks and tests.
_STATS = {"hess_vec_rows": 0, "grad_rows": 0}

PROBE_COLUMNS = (
    "property",
    "fold",
    "f1",
    "precision",
    "recall",
    "n_pos_test",
    "n_pos_train",
    "n_test",
    "n_iter",
)


# ---------------------------------------------------------------------------------------------- basis


@dataclass
class _Basis:
    mu: torch.Tensor  # (d,) float64 column means
    Z: torch.Tensor  # (n, r) working dtype, Z = Xc V, orthogonal columns
    V: torch.Tensor | None  # (d, r) float64, orthonormal columns (None when not needed)


def _basis(X: torch.Tensor, dtype: torch.dtype, need_v: bool) -> _Basis:
    """Centre X (float64 in) and return its row-space eigenbasis.

    The Gram matrix is formed and diagonalised in float64 when coefficients are wanted (``need_v``) or the
    working dtype is float64; for float32 margins only (probes) float32 suffices: the solution depends on X
    only through the centred Gram matrix, which ``Z Z^T`` reproduces to float32 precision.
    """
    mu = X.mean(dim=0)
    wd = torch.float64 if (need_v or dtype == torch.float64) else torch.float32
    Xc = (X - mu).to(wd)
    n, d = Xc.shape
    rcond = _RCOND[wd]
    V = None
    if d <= n:
        evals, vecs = torch.linalg.eigh(Xc.T @ Xc)
        top = float(evals[-1]) if d else 0.0
        keep = evals > rcond * top
        vecs = vecs[:, keep].flip(1)
        Z = Xc @ vecs
        V = vecs.to(torch.float64)
    else:
        evals, U = torch.linalg.eigh(Xc @ Xc.T)
        keep = evals > rcond * float(evals[-1])
        evals, U = evals[keep].flip(0), U[:, keep].flip(1)
        S = evals.sqrt()
        Z = U * S
        if need_v:
            V = (Xc.T @ U) / S
    return _Basis(mu=mu, Z=Z.to(dtype).contiguous(), V=V if need_v else None)


# ------------------------------------------------------------------------------------- preconditioner


def _arrow_solve(v: torch.Tensor, dinv: torch.Tensor, cd: torch.Tensor, schur: torch.Tensor) -> torch.Tensor:
    """Solve with the arrow matrix [[diag, c], [c^T, a]] along the last axis; leading axes are batch axes.

    ``dinv = 1/diag``, ``cd = c/diag``, ``schur = a - c^T diag^-1 c``.
    """
    vb = v[..., :-1]
    zb = (v[..., -1] - torch.linalg.vecdot(cd, vb)) / schur
    out = torch.empty_like(v)
    out[..., -1] = zb
    torch.addcmul(dinv * vb, cd, zb.unsqueeze(-1), value=-1.0, out=out[..., :-1])
    return out


class _Arrow:
    """The arrow preconditioner of a batch of problems (one per row)."""

    def __init__(self, dinv: torch.Tensor, cd: torch.Tensor, schur: torch.Tensor) -> None:
        self.dinv, self.cd, self.schur = dinv, cd, schur

    def apply(self, v: torch.Tensor) -> torch.Tensor:
        return _arrow_solve(v, self.dinv, self.cd, self.schur)

    def select(self, keep: torch.Tensor) -> _Arrow:
        return _Arrow(self.dinv[keep], self.cd[keep], self.schur[keep])


# ---------------------------------------------------------------------------------------------- solver


def _pcg(
    hess_vec: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    g: torch.Tensor,
    stop: torch.Tensor,
    D: torch.Tensor,
    prec: _Arrow,
    max_cg: int,
) -> tuple[torch.Tensor, int]:
    """Batched preconditioned CG for ``H_k x_k = -g_k`` (one problem per row).

    A problem is frozen once its residual norm is <= ``stop_k``; frozen rows leave the working set (after
    their result is written back) once they are a quarter of it. Returns ``(x, iterations of the slowest
    problem)``.
    """
    x = torch.empty_like(g)
    idx = torch.arange(g.shape[0], device=g.device)
    cx = torch.zeros_like(g)
    res = -g
    z = prec.apply(res)
    p = z
    rz = torch.linalg.vecdot(res, z)
    frozen = torch.zeros(g.shape[0], dtype=torch.bool, device=g.device)
    it = 0
    for it in range(1, max_cg + 1):  # noqa: B007
        hp = hess_vec(p, D)
        alpha = torch.where(frozen, 0.0, rz / torch.linalg.vecdot(p, hp)).unsqueeze(1)
        cx.addcmul_(alpha, p)
        res = torch.addcmul(res, alpha, hp, value=-1.0)
        frozen |= torch.linalg.vector_norm(res, dim=1) <= stop
        n_frozen = int(frozen.sum())
        if n_frozen == idx.numel():
            break
        if n_frozen * 4 >= idx.numel():
            x[idx[frozen]] = cx[frozen]
            keep = torch.nonzero(~frozen).squeeze(1)
            prec = prec.select(keep)
            idx, cx, res, p, rz, D, stop = (
                idx[keep],
                cx[keep],
                res[keep],
                p[keep],
                rz[keep],
                D[keep],
                stop[keep],
            )
            frozen = torch.zeros(idx.numel(), dtype=torch.bool, device=g.device)
        # frozen rows get p = 0 (and stay finite: their Hessian products and step sizes are then 0)
        z = prec.apply(res)
        if n_frozen:
            z.masked_fill_(frozen.unsqueeze(1), 0.0)
        rz_new = torch.linalg.vecdot(res, z)
        beta = torch.where(frozen, 0.0, rz_new / rz)
        p = torch.addcmul(z, beta.unsqueeze(1), p)
        rz = torch.where(frozen, 1.0, rz_new)
    x[idx] = cx
    return x, it


@dataclass
class _Solution:
    theta: torch.Tensor  # (K, r + 1): beta, intercept (centred parametrisation)
    margins: torch.Tensor | None  # (K, n) Z1 theta
    n_iter: torch.Tensor  # (K,) Newton iterations
    converged: torch.Tensor  # (K,) bool


def _newton_cg(
    Z1: torch.Tensor,
    Y: torch.Tensor,
    W: torch.Tensor,
    C: torch.Tensor,
    tol: float,
    max_iter: int,
    max_cg: int,
    hess_dtype: torch.dtype,
    want_margins: bool,
) -> _Solution:
    """Minimise ``C_k sum_i W_ki logloss(Y_ki, (Z1 theta_k)_i) + 0.5 |theta_k[:-1]|^2`` for every row k.

    Problem-major layout: Y, W are (K, n); theta is (K, r + 1); Z1 is (n, r + 1) with a last column of ones.
    """
    n, r1 = Z1.shape
    K = Y.shape[0]
    dev, dt = Z1.device, Z1.dtype
    Z1T = Z1.T.contiguous()
    times_Z1, times_Z1T = _right_multiplier(Z1), _right_multiplier(Z1T)
    if hess_dtype == dt:
        Zh, ZhT = Z1, Z1T
    else:
        Zh, ZhT = Z1.to(hess_dtype), Z1T.to(hess_dtype)
    # Preconditioner GEMMs: sum_i D_i z_ij^2 (all rows) and sum_i D_i z_ij (majority-class rows).
    Zsq = (Z1 * Z1).to(hess_dtype)
    Zc = Z1[:, :-1].to(hess_dtype).contiguous()

    times_ZhT, times_Zh = _right_multiplier(ZhT), _right_multiplier(Zh)
    times_Zsq, times_Zc = _right_multiplier(Zsq), _right_multiplier(Zc)

    def hess_vec(v: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
        _STATS["hess_vec_rows"] += v.shape[0]
        hv = times_Zh(times_ZhT(v.to(hess_dtype)) * D)
        hv = hv.to(dt) if hv.dtype != dt else hv
        hv[:, :-1] += v[:, :-1]
        return hv

    theta = torch.zeros(K, r1, dtype=dt, device=dev)
    margins = torch.zeros(K, n, dtype=dt, device=dev) if want_margins else None
    n_iter = torch.zeros(K, dtype=torch.int64, device=dev)
    converged = torch.zeros(K, dtype=torch.bool, device=dev)
    active = torch.arange(K, device=dev)
    th = torch.zeros(K, r1, dtype=dt, device=dev)
    m = torch.zeros(K, n, dtype=dt, device=dev)
    CW = C[:, None] * W
    nCWY = -CW * Y
    # Majority-class training rows of each problem: the intercept coupling of the preconditioner comes from
    # these only (the few, heavily weighted minority rows would make the arrow matrix indefinite).
    train = W > 0
    pos = (Y > 0.5) & train
    n_pos = pos.sum(dim=1, keepdim=True)
    major = torch.where(2 * n_pos <= train.sum(dim=1, keepdim=True), train & ~pos, pos).to(hess_dtype)
    del train, pos
    sa = 1.0 / (C * W.sum(dim=1))  # scaled objective = objective / (C * sum of weights), as scikit-learn
    cg_floor = _CG_FLOOR * tol
    prob = torch.full((K, n), 0.5, dtype=dt, device=dev)
    gs_prev = torch.full((K,), math.inf, dtype=dt, device=dev)
    resid = CW * 0.5 + nCWY

    for it in range(max_iter + 1):
        _STATS["grad_rows"] += resid.shape[0]
        g = times_Z1(resid)
        g[:, :-1] += th[:, :-1]
        gs = torch.linalg.vector_norm(g, dim=1) * sa
        # Converged: below tol, or stalled within 100 tol (a Newton step that no longer halves the gradient
        # there is limited by rounding, not by the method).
        done = (gs <= tol) | ((gs <= 100.0 * tol) & (gs > 0.5 * gs_prev))
        if bool(done.any()) or it == max_iter:
            fin = torch.ones_like(done) if it == max_iter else done
            theta[active[fin]] = th[fin]
            converged[active[done]] = True
            if margins is not None:
                margins[active[fin]] = m[fin]
            if bool(fin.all()):
                break
            keep = torch.nonzero(~fin).squeeze(1)
            active, th, m, g, gs, prob = active[keep], th[keep], m[keep], g[keep], gs[keep], prob[keep]
            CW, nCWY, sa, resid = CW[keep], nCWY[keep], sa[keep], resid[keep]
            major = major[keep]
        n_iter[active] += 1

        # Hessian weights D = C W s (1 - s); arrow preconditioner: diag(H), intercept column: majority rows.
        cp = CW * prob
        Dh = torch.addcmul(cp, cp, prob, value=-1.0)
        Dhh = Dh.to(hess_dtype) if hess_dtype != dt else Dh
        diag = times_Zsq(Dhh).to(dt)
        cross = times_Zc(Dhh * major).to(dt)
        diag[:, :-1] += 1.0
        dinv = 1.0 / diag[:, :-1]
        cd = cross * dinv
        schur = diag[:, -1] - torch.linalg.vecdot(cd, cross)
        schur = torch.maximum(schur, 1e-3 * diag[:, -1])
        prec = _Arrow(dinv, cd, schur)

        # Truncated CG with forcing term min(_ETA_MAX, |g|) |g| on the scaled gradient.
        stop = torch.clamp(torch.clamp(gs, max=_ETA_MAX) * gs, min=cg_floor) / sa
        step, n_cg = _pcg(hess_vec, g, stop, Dhh, prec, max_cg)
        zstep = times_Z1T(step)
        log.debug(
            "newton it %d: active %d |g| median %.2e max %.2e, cg %d",
            it,
            g.shape[0],
            gs.median(),
            gs.max(),
            n_cg,
        )

        # Exact line search on phi(a) = f(theta + a step): phi' and phi'' need only element-wise work.
        th_p = torch.linalg.vecdot(th[:, :-1], step[:, :-1])
        p_p = torch.linalg.vecdot(step[:, :-1], step[:, :-1])
        slope0 = torch.linalg.vecdot(g, step)  # phi'(0) < 0
        a = torch.ones_like(slope0)
        lo = torch.zeros_like(slope0)
        hi = torch.full_like(slope0, math.inf)
        for _ in range(20):
            mm = torch.addcmul(m, a.unsqueeze(1), zstep)
            pr = torch.sigmoid(mm)
            rr = torch.addcmul(nCWY, CW, pr)
            d1 = torch.linalg.vecdot(rr, zstep) + th_p + a * p_p
            ok = d1.abs() <= 0.1 * slope0.abs()
            if bool(ok.all()):
                break
            d2 = torch.linalg.vecdot(CW * pr * (1.0 - pr) * zstep, zstep) + p_p
            lo = torch.where(d1 < 0, a, lo)
            hi = torch.where(d1 > 0, a, hi)
            newton = a - d1 / d2
            bisect = torch.where(torch.isinf(hi), 2.0 * a, 0.5 * (lo + hi))
            a = torch.where(ok, a, torch.where((newton > lo) & (newton < hi), newton, bisect))
        else:  # search exhausted: use the last step size, keeping margins consistent with it
            mm = torch.addcmul(m, a.unsqueeze(1), zstep)
            pr = torch.sigmoid(mm)
            rr = torch.addcmul(nCWY, CW, pr)
        th = torch.addcmul(th, a.unsqueeze(1), step)
        m, prob, resid, gs_prev = mm, pr, rr, gs
    n_bad = int((~converged).sum())
    if n_bad:
        log.warning("%d of %d problems did not reach tol=%g in %d Newton iterations", n_bad, K, tol, max_iter)
    return _Solution(theta, margins, n_iter, converged)


# ------------------------------------------------------------------------------------------ precision


_ONEDNN_FP32: list[bool] = []


def _onednn_fp32_ok() -> bool:
    """Whether float32 GEMMs can go through oneDNN (checked once against float64).

    oneDNN picks its kernels by instruction set on any x86 CPU, whereas MKL's sgemm takes a generic path on
    non-Intel CPUs: on an AMD EPYC (Zen 5) oneDNN's float32 GEMM is about twice as fast; on Intel CPUs the
    two are comparable.
    """
    if not _ONEDNN_FP32:
        ok = False
        if torch.backends.mkldnn.is_available():
            try:
                gen = torch.Generator().manual_seed(0)
                a = torch.randn(96, 80, generator=gen)
                b = torch.randn(80, 64, generator=gen)
                out = torch.nn.functional.linear(a.to_mkldnn(), b.T.contiguous().to_mkldnn()).to_dense()
                ref = a.double() @ b.double()
                ok = float((out.double() - ref).abs().max() / ref.abs().max()) < 1e-5
            except RuntimeError:  # pragma: no cover - builds without oneDNN linear
                ok = False
        _ONEDNN_FP32.append(ok)
        log.debug("oneDNN float32 GEMMs: %s", ok)
    return _ONEDNN_FP32[0]


def _right_multiplier(B: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Return ``x -> x @ B``, through oneDNN for float32 on CPUs where that is faster."""
    if B.dtype == torch.float32 and B.device.type == "cpu" and _onednn_fp32_ok():
        W = B.T.contiguous().to_mkldnn()
        return lambda x: torch.nn.functional.linear(x.contiguous().to_mkldnn(), W).to_dense()
    return lambda x: x @ B


_BF16_FAST: dict[str, bool] = {}


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _bf16_is_fast(device: torch.device) -> bool:
    """Whether bfloat16 GEMMs are native (and so much faster than float32) on this device; decided once.

    CUDA: ``torch.cuda.is_bf16_supported()``. CPU: the AVX512-BF16 or AMX-BF16 instruction set (Linux
    ``/proc/cpuinfo``); where the flags cannot be read, a small timing comparison. CPUs without bf16 units
    emulate bfloat16 GEMMs slowly, so float32 is used there.
    """
    key = device.type
    if key not in _BF16_FAST:
        if device.type == "cuda":
            fast = torch.cuda.is_bf16_supported()
        elif device.type != "cpu":
            fast = False
        else:
            flags = _cpu_flags()
            if flags:
                fast = bool({"avx512_bf16", "amx_bf16"} & flags)
            else:  # pragma: no cover - non-Linux
                a = torch.randn(384, 384)
                timings = {"f32": math.inf, "bf16": math.inf}
                for name, mat in (("f32", a), ("bf16", a.to(torch.bfloat16))) * 4:
                    t0 = time.perf_counter()
                    mat @ mat
                    timings[name] = min(timings[name], time.perf_counter() - t0)
                fast = timings["bf16"] < 0.7 * timings["f32"]
        _BF16_FAST[key] = fast
        log.debug("bfloat16 Hessian products on %s: %s", key, fast)
    return _BF16_FAST[key]


def _hess_dtype(dtype: torch.dtype, device: torch.device, hess_dtype: torch.dtype | None) -> torch.dtype:
    if hess_dtype is not None:
        return hess_dtype
    return torch.bfloat16 if dtype == torch.float32 and _bf16_is_fast(device) else dtype


# -------------------------------------------------------------------------------------------- fitting


#: Fewest problems per worker thread when problems are split over threads (see ``workers``).
_MIN_PER_WORKER = 64


def _default_workers(device: torch.device) -> int:
    return torch.get_num_threads() if device.type == "cpu" else 1


def _fit(
    X: torch.Tensor,
    Y: torch.Tensor,
    W: torch.Tensor,
    C: torch.Tensor,
    *,
    tol: float | None,
    max_iter: int,
    max_cg: int,
    dtype: torch.dtype,
    hess_dtype: torch.dtype | None,
    need_coef: bool,
    workers: int | None = None,
) -> tuple[_Basis, _Solution]:
    """Fit the problems of Y, W (K, n) in dtype with C (K,) on X (n, d) float64.

    With ``workers > 1`` the problems are split into that many contiguous chunks solved in parallel threads,
    torch itself single-threaded meanwhile (and restored after): whole independent solves scale across cores
    better than the many small multi-threaded operations of one solve.
    """
    if dtype not in DEFAULT_TOL:
        raise VspInputError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    tol = DEFAULT_TOL[dtype] if tol is None else float(tol)
    device = X.device
    basis = _basis(X, dtype, need_coef)
    n, K = X.shape[0], Y.shape[0]
    Z1 = torch.cat([basis.Z, torch.ones(n, 1, dtype=dtype, device=device)], dim=1)
    hd = _hess_dtype(dtype, device, hess_dtype)
    _onednn_fp32_ok()  # resolve the lazy checks before any thread starts
    workers = _default_workers(device) if workers is None else int(workers)
    workers = max(1, min(workers, K // _MIN_PER_WORKER))

    def solve(sl: slice) -> _Solution:
        return _newton_cg(Z1, Y[sl], W[sl], C[sl], tol, max_iter, max_cg, hd, want_margins=not need_coef)

    if workers == 1:
        return basis, solve(slice(0, K))
    bounds = np.linspace(0, K, workers + 1).round().astype(int)
    chunks = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vsp-probe") as pool:
            parts = list(pool.map(solve, chunks))
    finally:
        torch.set_num_threads(before)
    sol = _Solution(
        theta=torch.cat([p.theta for p in parts]),
        margins=None if need_coef else torch.cat([p.margins for p in parts]),  # type: ignore[misc]
        n_iter=torch.cat([p.n_iter for p in parts]),
        converged=torch.cat([p.converged for p in parts]),
    )
    return basis, sol


def _as_tensor(a: Any, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a.to(device=device, dtype=dtype)
    return torch.as_tensor(np.asarray(a), dtype=dtype, device=device)


def fit_logreg_batched(
    X: Any,
    Y: Any,
    sample_weight: Any,
    C: float | Sequence[float] | np.ndarray = 1.0,
    tol: float | None = None,
    max_iter: int = 100,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
    hess_dtype: torch.dtype | None = None,
    max_cg: int = 100,
    workers: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fit K class-weighted L2 logistic regressions that share the feature matrix X.

    Args:
        X: (n, d) features shared by all problems.
        Y: (n, K) binary labels (0/1), one column per problem (or (n,) for one problem).
        sample_weight: (n, K) non-negative weights (or (n,) shared); 0 removes a row from a problem.
        C: inverse regularisation strength, a scalar or one per problem (scikit-learn's ``C``).
        tol: stopping tolerance on ``|grad| / (C * sum(sample_weight[:, k]))`` (2-norm over coefficients and
            intercept); default ``DEFAULT_TOL[dtype]`` (3e-6 float32, 1e-9 float64).
        max_iter: maximum Newton iterations per problem.
        dtype: ``torch.float32`` (default) or ``torch.float64``.
        device: torch device; default X's device if X is a tensor, else CPU.
        hess_dtype: dtype of the Hessian-vector products inside CG; default bfloat16 when dtype is float32 and
            the device has fast bfloat16 GEMMs, else dtype.
        max_cg: maximum conjugate-gradient iterations per Newton step.
        workers: threads over which the problems are split (each solving a contiguous chunk with torch
            single-threaded meanwhile); default ``torch.get_num_threads()`` on CPU, 1 on GPUs. 1: one solve
            using torch's own intra-op threads.

    Returns:
        ``(coef, intercept, n_iter)``: (K, d) and (K,) tensors in ``dtype`` on ``device``, and the (K,) Newton
        iterations per problem. Problems that did not converge in ``max_iter`` are logged as a warning.
    """
    if device is None:
        device = X.device if isinstance(X, torch.Tensor) else torch.device("cpu")
    device = torch.device(device)
    Xt = _as_tensor(X, torch.float64, device)
    if Xt.ndim != 2:
        raise VspInputError(f"X must be 2-D (n, d), got shape {tuple(Xt.shape)}")
    n, d = Xt.shape
    Yt = _as_tensor(Y, dtype, device)
    Wt = _as_tensor(sample_weight, dtype, device)
    if Yt.ndim == 1:
        Yt = Yt[:, None]
    if Wt.ndim == 1:
        Wt = Wt[:, None].expand(n, Yt.shape[1])
    if Yt.shape[0] != n or Wt.shape != Yt.shape:
        raise VspInputError(
            f"Y {tuple(Yt.shape)} and sample_weight {tuple(Wt.shape)} must both be (n={n}, K) for X {(n, d)}"
        )
    if not bool(((Yt == 0) | (Yt == 1)).all()):
        raise VspInputError("Y must hold binary labels (0/1)")
    if bool((Wt < 0).any()) or not bool(torch.isfinite(Wt).all()):
        raise VspInputError("sample_weight must be finite and non-negative")
    if not bool(torch.isfinite(Xt).all()):
        raise VspInputError("X holds NaN or infinite values")
    K = Yt.shape[1]
    Ct = torch.as_tensor(
        np.broadcast_to(np.asarray(C, dtype=np.float64), (K,)).copy(), dtype=dtype, device=device
    )
    if bool((Ct <= 0).any()):
        raise VspInputError("C must be positive")
    if bool((Wt.sum(dim=0) <= 0).any()):
        bad = int(torch.nonzero(Wt.sum(dim=0) <= 0)[0])
        raise VspInputError(f"problem {bad} has no training rows (all its sample weights are 0)")
    basis, sol = _fit(
        Xt,
        Yt.T.contiguous(),
        Wt.T.contiguous(),
        Ct,
        tol=tol,
        max_iter=max_iter,
        max_cg=max_cg,
        dtype=dtype,
        hess_dtype=hess_dtype,
        need_coef=True,
        workers=workers,
    )
    assert basis.V is not None
    coef = sol.theta[:, :-1].to(torch.float64) @ basis.V.T  # (K, d)
    intercept = sol.theta[:, -1].to(torch.float64) - coef @ basis.mu
    return coef.to(dtype), intercept.to(dtype), sol.n_iter


# --------------------------------------------------------------------------------------------- folds


def _fast_test_folds(labels: np.ndarray, n_splits: int, seed: int) -> np.ndarray:
    """Vectorised ``StratifiedKFold(n_splits, shuffle=True, random_state=seed)._make_test_folds`` per column.

    For a binary column the split depends only on which label comes first and on the class counts: classes are
    numbered by first appearance, per-class fold sizes come from a round robin over the sorted encoded labels,
    and a fresh ``RandomState(seed)`` shuffles the fold ids of class 0, then of class 1. Columns with the same
    counts share their shuffled fold ids, which are cached.
    """
    n, P = labels.shape
    out = np.empty((n, P), dtype=np.int8)
    cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    residues = np.arange(n) % n_splits
    for p in range(P):
        y = labels[:, p]
        enc = y != y[0]  # class 0: the label seen first
        c0 = int(n - enc.sum())
        if c0 not in cache:
            rng = np.random.RandomState(seed)
            f0 = np.arange(n_splits).repeat(np.bincount(residues[:c0], minlength=n_splits))
            rng.shuffle(f0)
            f1 = np.arange(n_splits).repeat(np.bincount(residues[c0:], minlength=n_splits))
            rng.shuffle(f1)
            cache[c0] = (f0, f1)
        f0, f1 = cache[c0]
        col = out[:, p]
        col[~enc] = f0
        col[enc] = f1
    return out


def _sklearn_test_folds(labels: np.ndarray, n_splits: int, seed: int) -> np.ndarray:
    from sklearn.model_selection import StratifiedKFold

    n, P = labels.shape
    out = np.full((n, P), -1, dtype=np.int8)
    skf = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    zeros = np.zeros(n)
    for p in range(P):
        for f, (_, test) in enumerate(skf.split(zeros, labels[:, p])):
            out[test, p] = f
    return out


def stratified_folds(labels: Any, n_splits: int = 5, seed: int = 0) -> np.ndarray:
    """Test-fold index of every row for every property: (n, P) int8.

    Row ``i`` is in the test set of fold ``f`` of property ``p`` iff ``out[i, p] == f``; the split is exactly
    scikit-learn's ``StratifiedKFold(n_splits, shuffle=True, random_state=seed)`` on that property's labels.
    A vectorised re-implementation is used after checking, on every call, that it reproduces scikit-learn on
    the first columns; if it does not (a future scikit-learn), scikit-learn splits every column.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise VspInputError(f"labels must be a 2-D (concepts x properties) matrix, got shape {labels.shape}")
    if not np.isin(labels, (0, 1)).all():
        raise VspInputError("labels must be binary (0/1)")
    if n_splits < 2:
        raise VspInputError(f"folds must be >= 2, got {n_splits}")
    n, P = labels.shape
    counts = labels.sum(axis=0)
    bad = np.nonzero((counts < n_splits) | (n - counts < n_splits))[0]
    if bad.size:
        p = int(bad[0])
        raise VspInputError(
            f"property column {p} has {int(counts[p])} positive and {int(n - counts[p])} negative concepts; "
            f"{n_splits}-fold stratified cross-validation needs at least {n_splits} of each "
            f"({bad.size} columns fail this)"
        )
    labels = labels.astype(np.int8, copy=False)
    fast = _fast_test_folds(labels, n_splits, seed)
    check = min(P, 3)
    if not np.array_equal(fast[:, :check], _sklearn_test_folds(labels[:, :check], n_splits, seed)):
        log.warning(
            "the fast StratifiedKFold re-implementation disagrees with scikit-learn; using scikit-learn"
        )
        return _sklearn_test_folds(labels, n_splits, seed)
    return fast


# --------------------------------------------------------------------------------------------- probes


def probe_layer(
    X: Any,
    labels: Any,
    folds: int = 5,
    seed: int = 0,
    C: float = 1.0,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    tol: float | None = None,
    max_iter: int = 100,
    max_problems: int | None = None,
    hess_dtype: torch.dtype | None = None,
    workers: int | None = None,
) -> dict[str, np.ndarray]:
    """Cross-validated probes of every property on one layer's features.

    For each property: ``StratifiedKFold(folds, shuffle=True, random_state=seed)`` on its labels; for each
    fold, ``LogisticRegression(class_weight="balanced", C=C)``'s optimum on the training concepts (all folds
    of all properties fitted at once by the batched solver), then precision, recall and F1 of the positive
    class on the test concepts (scikit-learn's conventions, ``zero_division=0``).

    Args:
        X: (n, d) concept features of one layer.
        labels: (n, P) binary property matrix (e.g. ``Norms.binary``).
        folds: number of stratified folds per property.
        seed: ``random_state`` of ``StratifiedKFold`` (shuffle=True).
        C: inverse L2 strength, as scikit-learn's ``LogisticRegression(C=...)``.
        dtype: torch dtype of the solve, ``torch.float32`` (default) or ``torch.float64``.
        device: torch device of the solve ("cpu", "cuda", ...).
        tol: stopping tolerance (see :func:`fit_logreg_batched`); default ``DEFAULT_TOL[dtype]``.
        max_iter: maximum Newton iterations per problem.
        hess_dtype: dtype of the Hessian-vector products (see :func:`fit_logreg_batched`).
        max_problems: fit at most this many (property, fold) problems at once (bounds memory); default all.
        workers: threads the problems are split over (see :func:`fit_logreg_batched`).

    Returns:
        Columns (numpy arrays with one entry per (property, fold), property-major): ``property`` (column index
        into ``labels``), ``fold``, ``f1``, ``precision``, ``recall``, ``n_pos_test``, ``n_pos_train``,
        ``n_test``, ``n_iter`` (Newton iterations).
    """
    X_np = X.detach().cpu().numpy() if isinstance(X, torch.Tensor) else np.asarray(X)
    labels_np = np.asarray(labels)
    if X_np.ndim != 2 or labels_np.ndim != 2 or labels_np.shape[0] != X_np.shape[0]:
        raise VspInputError(
            f"X {X_np.shape} and labels {labels_np.shape} must be 2-D with the same number of rows (concepts)"
        )
    if not np.isfinite(X_np).all():
        raise VspInputError("X holds NaN or infinite values")
    fold_of = stratified_folds(labels_np, folds, seed)  # (n, P); validates labels
    n, P = labels_np.shape
    dev = torch.device(device)
    Xt = torch.as_tensor(X_np, dtype=torch.float64, device=dev)
    lab = torch.as_tensor(labels_np.T.astype(bool), device=dev)  # (P, n)
    fold_t = torch.as_tensor(fold_of.T.astype(np.int64), device=dev)  # (P, n)
    f_ids = torch.arange(folds, device=dev).view(1, folds, 1)
    per_chunk = max(1, P if max_problems is None else max_problems // folds)
    out: dict[str, list[np.ndarray]] = {k: [] for k in PROBE_COLUMNS}
    for p0 in range(0, P, per_chunk):
        p1 = min(P, p0 + per_chunk)
        Pc = p1 - p0
        y = lab[p0:p1, None, :].expand(Pc, folds, n)  # (Pc, F, n)
        test = fold_t[p0:p1, None, :] == f_ids  # (Pc, F, n)
        train = ~test
        n_train = train.sum(dim=2)
        n_pos_train = (y & train).sum(dim=2)
        w_pos = n_train / (2.0 * n_pos_train)
        w_neg = n_train / (2.0 * (n_train - n_pos_train))
        weight = torch.where(y, w_pos.unsqueeze(2), w_neg.unsqueeze(2)) * train
        Kc = Pc * folds
        Yk = y.reshape(Kc, n).to(dtype)
        Wk = weight.reshape(Kc, n).to(dtype)
        Ck = torch.full((Kc,), float(C), dtype=dtype, device=dev)
        _, sol = _fit(
            Xt,
            Yk,
            Wk,
            Ck,
            tol=tol,
            max_iter=max_iter,
            max_cg=100,
            dtype=dtype,
            hess_dtype=hess_dtype,
            need_coef=False,
            workers=workers,
        )
        assert sol.margins is not None
        pred = sol.margins > 0
        yk = y.reshape(Kc, n)
        tk = test.reshape(Kc, n)
        tp = (pred & yk & tk).sum(dim=1).to(torch.float64)
        fp = (pred & ~yk & tk).sum(dim=1).to(torch.float64)
        fn = (~pred & yk & tk).sum(dim=1).to(torch.float64)
        out["property"].append(np.repeat(np.arange(p0, p1), folds))
        out["fold"].append(np.tile(np.arange(folds), Pc))
        out["precision"].append(_ratio(tp, tp + fp))
        out["recall"].append(_ratio(tp, tp + fn))
        out["f1"].append(_ratio(2 * tp, 2 * tp + fp + fn))
        out["n_pos_test"].append((tp + fn).cpu().numpy().astype(np.int32))
        out["n_pos_train"].append(n_pos_train.reshape(-1).cpu().numpy().astype(np.int32))
        out["n_test"].append(tk.sum(dim=1).cpu().numpy().astype(np.int32))
        out["n_iter"].append(sol.n_iter.cpu().numpy().astype(np.int32))
    if not P:
        return {
            k: np.zeros(0, dtype=np.float64 if k in ("f1", "precision", "recall") else np.int64) for k in out
        }
    return {k: np.concatenate(v) for k, v in out.items()}


def _ratio(num: torch.Tensor, den: torch.Tensor) -> np.ndarray:
    """Return num / den, 0 where den == 0 (scikit-learn's zero_division=0)."""
    num, den = num.cpu().numpy(), den.cpu().numpy()
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)
