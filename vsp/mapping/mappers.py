"""Zero-shot mapping from a concept embedding to the PF-valued property vectors (paper section 6.2, Table 2).

Mappers (`MAPPERS`)
    ``knn``    the mean property vector of the ``k = 5`` training concepts nearest to the test concept by
               cosine similarity of the embeddings (unweighted mean; no hyper-parameter is tuned).
    ``ridge``  multi-output ridge regression with an unpenalised intercept (closed form through the SVD of
               the centred training embeddings; equal to ``sklearn.linear_model.Ridge``); ``alpha`` tuned.
    ``mlp``    one hidden layer of 1200 ReLU units, trained full-batch with Adam (torch, seeded) on the cosine
               loss ``mean 1/2 (1 - cos(y, y_hat))``; learning rate, weight decay and epochs tuned.

Evaluation
    Repeated 10-fold cross-validation over concepts (`split_plan`: scikit-learn ``RepeatedKFold(n_splits=10,
    n_repeats=5, random_state=seed)``). For each test concept the predicted property vector is compared by
    cosine similarity with the **candidate** gold property vectors, and the concept's rank is the position
    of its own gold vector. Candidates: ``"all"`` (default) = the gold vectors of **all** concepts (training
    and test), so a test concept competes with every concept of the norms; ``"test"`` = only the test
    fold's concepts. Ties are counted against the concept (rank = 1 + number of other candidates whose
    cosine is ``>=`` its own), so a constant prediction never scores. A **hit at T** means rank <= T, for
    T in `HITS` = (1, 5, 10, 20). Rows report ``hit{T}`` as the **percentage** (0-100) of the fold's test
    concepts that are hits, as in the paper's Table 2; `summarise` pools them over folds
    (sum of hits / sum of test concepts, so folds of 63 and 64 concepts weigh by size).

Hyper-parameters
    Chosen inside each outer fold by an inner 5-fold CV (``KFold(5, shuffle=True, random_state=unit seed)``)
    on the outer training concepts only; a fold with fewer training concepts than inner folds uses one
    inner fold per training concept (leave-one-out, recorded as the row's ``inner_folds``), and a fold with
    a single training concept is refused. Score: **mean average precision (MAP)**. Each held-out concept has
    exactly one relevant item (its own gold vector), so its average precision is ``1 / rank``, and MAP is
    the mean of ``1 / rank`` over all inner held-out concepts (the mean reciprocal rank). In the inner CV the
    candidates are the gold vectors of the outer training concepts (``"all"``) or of the inner held-out fold
    (``"test"``); the outer test concepts are never seen. The best grid point (first one on ties) is refit
    on all outer training concepts. Grids: `DEFAULT_GRIDS`. For the MLP the ``epochs`` values are
    checkpoints of one training run, so a grid of epochs costs one run of the largest value.

Units
    `run_fold` is a pure function of ``(X, Y, mapper, train_idx, test_idx, seed, ...)``: one (embedding,
    mapper, repeat, fold) unit, safe to fan out as a remote task. `evaluate` loops over `split_plan`
    locally and returns Parquet-ready rows (`ROW_COLUMNS`).
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import KFold, RepeatedKFold
from torch import nn

from vsp.errors import VspInputError
from vsp.linalg import l2_rows

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_GRIDS",
    "HITS",
    "Grid",
    "MAPPERS",
    "ROW_COLUMNS",
    "RidgeSVD",
    "Split",
    "cosine_ranks",
    "evaluate",
    "fit_predict",
    "fit_ridge",
    "mean_average_precision",
    "ridge_predict_many",
    "run_fold",
    "split_plan",
    "summarise",
]

MAPPERS = ("knn", "ridge", "mlp")
HITS = (1, 5, 10, 20)
ROW_COLUMNS = ("embedding", "mapper", "repeat", "fold", "n_test", "hit1", "hit5", "hit10", "hit20", "params")
MLP_HIDDEN = 1200
#: A hyper-parameter grid: a dict of value lists (its product is searched) or an explicit list of points.
Grid = Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]]

DEFAULT_GRIDS: dict[str, dict[str, list[Any]]] = {
    "knn": {"k": [5]},
    "ridge": {"alpha": [0.01, 0.1, 1.0, 10.0, 100.0, 1000.0]},
    # Small on purpose: each (lr, weight_decay) pair costs one full-batch run of max(epochs) per inner fold,
    # about 40 ms per epoch for 600 concepts on one CPU core. lr 1e-3 was the best of {3e-4, 1e-3, 3e-3} on
    # GloVe-50d folds; raise the grid on a GPU.
    "mlp": {"lr": [1e-3], "weight_decay": [0.0, 1e-2], "epochs": [50, 75, 100]},
}


# ----------------------------------------------------------------------------------------------- splits
@dataclass(frozen=True)
class Split:
    """One outer CV unit: its repeat and fold numbers, index arrays and the seed of its inner work."""

    repeat: int
    fold: int
    train: np.ndarray
    test: np.ndarray
    seed: int


def split_plan(n: int, repeats: int = 5, folds: int = 10, seed: int = 0) -> list[Split]:
    """``RepeatedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)`` as a list of `Split`.

    Each split carries a unit seed derived from ``(seed, repeat, fold)`` (``numpy.random.SeedSequence``),
    used for the inner CV shuffle and the MLP initialisation, so any unit can be rerun on its own.
    """
    if folds < 2 or n < folds:
        raise VspInputError(f"split_plan: need 2 <= folds <= n concepts, got folds={folds}, n={n}")
    rkf = RepeatedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    out = []
    for i, (tr, te) in enumerate(rkf.split(np.zeros((n, 1)))):
        r, f = divmod(i, folds)
        s = int(np.random.SeedSequence([seed, r, f]).generate_state(1)[0])
        out.append(Split(r, f, tr, te, s))
    return out


# ---------------------------------------------------------------------------------------------- ranking
def cosine_ranks(pred: np.ndarray, cand: np.ndarray, own: np.ndarray) -> np.ndarray:
    """Rank (1 = best) of each prediction's own candidate among ``cand`` by cosine similarity.

    ``pred`` (m, P), ``cand`` (c, P), ``own`` (m,) row indices into ``cand``. Ties count against: rank =
    1 + number of other candidates with cosine ``>=`` the own candidate's.
    """
    sims = l2_rows(pred) @ l2_rows(cand).T  # (m, c)
    own_sim = sims[np.arange(len(own)), own][:, None]
    ge = (sims >= own_sim).sum(axis=1) - 1  # minus the own candidate
    return 1 + ge


def mean_average_precision(ranks: np.ndarray) -> float:
    """MAP with one relevant item per query: the mean of ``1 / rank``."""
    ranks = np.asarray(ranks, dtype=np.float64)
    return float(np.mean(1.0 / ranks)) if ranks.size else float("nan")


# ---------------------------------------------------------------------------------------------- mappers
def _knn_predict(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, k: int) -> np.ndarray:
    k = min(int(k), len(xtr))
    sims = l2_rows(xte) @ l2_rows(xtr).T
    nn_idx = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return ytr[nn_idx].mean(axis=1)


@dataclass(frozen=True)
class RidgeSVD:
    """The ridge solver: thin SVD of the centred inputs, shared by every ridge strength.

    Ridge regression ``Y ~ X @ coef + b`` with an unpenalised intercept (equal to
    ``sklearn.linear_model.Ridge(alpha)``), solved exactly for ``C`` larger or smaller than ``n``:
    ``coef = V diag(s / (s^2 + alpha)) U^T (Y - mean Y)``. Build it once with :meth:`fit`, then ask for
    :meth:`coef` or :meth:`predict` at as many alphas as needed.
    """

    xm: np.ndarray  # (C,) mean of the inputs
    ym: np.ndarray  # (P,) mean of the targets
    s: np.ndarray  # (k,) singular values of the centred inputs
    vt: np.ndarray  # (k, C) right singular vectors
    uty: np.ndarray  # (k, P) U^T (Y - ym)

    @classmethod
    def fit(cls, X: np.ndarray, Y: np.ndarray) -> RidgeSVD:
        """Centre ``X`` (n, C) and ``Y`` (n, P) and take the thin SVD of the centred ``X``."""
        X = np.asarray(X, dtype=np.float64)
        Y = np.asarray(Y, dtype=np.float64)
        xm, ym = X.mean(axis=0), Y.mean(axis=0)
        u, s, vt = np.linalg.svd(X - xm, full_matrices=False)
        return cls(xm, ym, s, vt, u.T @ (Y - ym))

    def coef(self, alpha: float) -> tuple[np.ndarray, np.ndarray]:
        """``(coef (C, P), intercept (P,))`` at ridge strength ``alpha``."""
        d = self.s / (self.s * self.s + float(alpha))
        coef = self.vt.T @ (d[:, None] * self.uty)
        return coef, self.ym - self.xm @ coef

    def predict(self, xte: np.ndarray, alphas: Sequence[float]) -> list[np.ndarray]:
        """Predictions ``(m, P)`` for ``xte`` (m, C) at each alpha (projected once, not via ``coef``)."""
        xv = (np.asarray(xte, dtype=np.float64) - self.xm) @ self.vt.T
        out = []
        for a in alphas:
            d = self.s / (self.s * self.s + float(a))
            out.append(xv @ (d[:, None] * self.uty) + self.ym)
        return out


def fit_ridge(X: np.ndarray, Y: np.ndarray, alpha: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Ridge regression ``Y ~ X @ coef + b`` with an unpenalised intercept: ``(coef (C, P), b (P,))``.

    Solved exactly through the thin SVD of the centred ``X`` (:class:`RidgeSVD`; works for ``C`` larger or
    smaller than ``n``).

    Raises:
        VspInputError: mismatched shapes, a negative alpha, or NaN / inf inputs.
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if X.ndim != 2 or Y.ndim != 2 or len(X) != len(Y):
        raise VspInputError(f"ridge needs X (n, C) and Y (n, P) with the same n, got {X.shape} and {Y.shape}")
    if alpha < 0:
        raise VspInputError(f"ridge alpha must be >= 0, got {alpha}")
    if not (np.isfinite(X).all() and np.isfinite(Y).all()):
        raise VspInputError("ridge inputs contain NaN or inf values")
    return RidgeSVD.fit(X, Y).coef(float(alpha))


def ridge_predict_many(
    xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, alphas: Sequence[float]
) -> list[np.ndarray]:
    """Ridge predictions for several alphas from one SVD (intercept fitted, not penalised)."""
    return RidgeSVD.fit(xtr, ytr).predict(xte, alphas)


class _MLP(nn.Module):
    def __init__(self, d_in: int, d_out: int, hidden: int, generator: torch.Generator):
        super().__init__()
        self.fc1 = nn.Linear(d_in, hidden)
        self.fc2 = nn.Linear(hidden, d_out)
        with torch.no_grad():  # PyTorch's default init, drawn from a private generator
            for lin in (self.fc1, self.fc2):
                bound = 1.0 / np.sqrt(lin.in_features)
                lin.weight.copy_((torch.rand(lin.weight.shape, generator=generator) * 2 - 1) * bound)
                lin.bias.copy_((torch.rand(lin.bias.shape, generator=generator) * 2 - 1) * bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def cosine_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ``1/2 (1 - cos(target, pred))`` (Lazaridou et al. 2014; paper eq. 3)."""
    return (0.5 * (1.0 - nn.functional.cosine_similarity(pred, target, dim=1, eps=1e-8))).mean()


def _mlp_predict_checkpoints(
    xtr: np.ndarray,
    ytr: np.ndarray,
    xte: np.ndarray,
    lr: float,
    weight_decay: float,
    epochs: Sequence[int],
    seed: int,
    hidden: int = MLP_HIDDEN,
    device: str = "cpu",
    history: list[float] | None = None,
) -> dict[int, np.ndarray]:
    """Train once for ``max(epochs)`` full-batch Adam steps; predictions on ``xte`` at each checkpoint."""
    dev = torch.device(device)
    g = torch.Generator().manual_seed(int(seed) % (2**63))
    model = _MLP(xtr.shape[1], ytr.shape[1], hidden, g).to(dev)
    xt = torch.as_tensor(np.asarray(xtr, dtype=np.float32), device=dev)
    yt = torch.as_tensor(np.asarray(ytr, dtype=np.float32), device=dev)
    xe = torch.as_tensor(np.asarray(xte, dtype=np.float32), device=dev)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    want = sorted({int(e) for e in epochs})
    out: dict[int, np.ndarray] = {}
    for ep in range(1, want[-1] + 1):
        model.train()
        opt.zero_grad(set_to_none=True)
        loss = cosine_loss(model(xt), yt)
        loss.backward()
        opt.step()
        if history is not None:
            history.append(float(loss.detach()))
        if ep in want:
            model.eval()
            with torch.no_grad():
                out[ep] = model(xe).cpu().numpy().astype(np.float64)
    return out


def _grid_points(mapper: str, grid: Grid | None) -> list[dict[str, Any]]:
    """A dict of value lists -> its product (keys sorted); a list of dicts -> those points as given."""
    if mapper not in MAPPERS:
        raise VspInputError(f"unknown mapper {mapper!r}; choose one of {', '.join(MAPPERS)}")
    if grid is not None and not isinstance(grid, Mapping):
        points = [dict(p) for p in grid]
        if not points:
            raise VspInputError(f"empty hyper-parameter grid for mapper {mapper!r}")
        return points
    g = dict(DEFAULT_GRIDS[mapper] if grid is None else grid)
    keys = sorted(g)
    return [dict(zip(keys, vals, strict=True)) for vals in itertools.product(*(list(g[k]) for k in keys))]


def _predict_grid(
    mapper: str,
    points: list[dict[str, Any]],
    xtr: np.ndarray,
    ytr: np.ndarray,
    xte: np.ndarray,
    seed: int,
    device: str = "cpu",
) -> list[np.ndarray]:
    """Predictions for every grid point (sharing work: one SVD for ridge, one run per lr/wd for the MLP)."""
    if mapper == "knn":
        return [_knn_predict(xtr, ytr, xte, p.get("k", 5)) for p in points]
    if mapper == "ridge":
        return ridge_predict_many(xtr, ytr, xte, [p["alpha"] for p in points])
    preds: list[np.ndarray | None] = [None] * len(points)
    groups: dict[tuple[float, float], list[int]] = {}
    for i, p in enumerate(points):
        groups.setdefault((float(p["lr"]), float(p.get("weight_decay", 0.0))), []).append(i)
    for (lr, wd), idx in groups.items():
        eps = [int(points[i]["epochs"]) for i in idx]
        by_ep = _mlp_predict_checkpoints(xtr, ytr, xte, lr, wd, eps, seed, device=device)
        for i in idx:
            preds[i] = by_ep[int(points[i]["epochs"])]
    return preds  # type: ignore[return-value]


def fit_predict(
    mapper: str,
    params: Mapping[str, Any],
    xtr: np.ndarray,
    ytr: np.ndarray,
    xte: np.ndarray,
    seed: int = 0,
    device: str = "cpu",
) -> np.ndarray:
    """Fit one mapper with fixed hyper-parameters on (xtr, ytr) and predict property vectors for xte."""
    point = dict(params)
    if mapper == "mlp":
        point.setdefault("weight_decay", 0.0)
    return _predict_grid(mapper, [point], xtr, ytr, xte, seed, device)[0]


# ------------------------------------------------------------------------------------------------ units
def _check_xy(X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
        raise VspInputError(f"mapping: embedding {X.shape} and property matrix {Y.shape} must share rows")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(Y))):
        raise VspInputError("mapping: embedding or property matrix contains NaN / inf")
    zero = np.flatnonzero(np.linalg.norm(Y, axis=1) == 0)
    if zero.size:
        raise VspInputError(f"mapping: concept rows {zero[:10].tolist()} have no properties (zero vector)")
    return X, Y


def _choose_params(
    mapper: str,
    points: list[dict[str, Any]],
    X: np.ndarray,
    Y: np.ndarray,
    train_idx: np.ndarray,
    seed: int,
    inner_folds: int,
    candidates: str,
    device: str,
) -> tuple[dict[str, Any], float, int]:
    """The best grid point by inner CV, its MAP and the number of inner folds used (0: nothing tuned)."""
    if len(points) == 1:
        return points[0], float("nan"), 0
    k = _inner_folds(inner_folds, len(train_idx))
    kf = KFold(n_splits=k, shuffle=True, random_state=seed % (2**32))
    recip = [[] for _ in points]
    pos = {int(c): i for i, c in enumerate(train_idx)}
    for j, (itr, ite) in enumerate(kf.split(train_idx)):
        tr, te = train_idx[itr], train_idx[ite]
        preds = _predict_grid(mapper, points, X[tr], Y[tr], X[te], seed + 1 + j, device)
        if candidates == "all":
            cand, own = Y[train_idx], np.array([pos[int(c)] for c in te])
        else:
            cand, own = Y[te], np.arange(len(te))
        for i, p in enumerate(preds):
            recip[i].extend((1.0 / cosine_ranks(p, cand, own)).tolist())
    maps = [float(np.mean(r)) for r in recip]
    best = int(np.argmax(maps))
    return points[best], maps[best], k


_CLAMP_WARNED: set[tuple[int, int]] = set()


def _inner_folds(inner_folds: int, n_train: int) -> int:
    """``inner_folds``, clamped to the training concepts (leave-one-out); refused below 2 concepts."""
    if n_train < 2:
        raise VspInputError(
            f"mapping: {n_train} training concept(s) in an outer fold, too few for the {inner_folds} inner "
            "folds of the hyper-parameter search (it needs >= 2); use fewer outer folds (--folds), more "
            "concepts, or a single-point grid"
        )
    if n_train >= inner_folds:
        return inner_folds
    if (inner_folds, n_train) not in _CLAMP_WARNED:
        _CLAMP_WARNED.add((inner_folds, n_train))
        log.warning(
            "mapping: %d inner folds asked for, but an outer fold has only %d training concepts: "
            "using %d inner folds (leave-one-out; recorded as inner_folds)",
            inner_folds, n_train, n_train,
        )  # fmt: skip
    return n_train


def run_fold(
    X: np.ndarray,
    Y: np.ndarray,
    mapper: str,
    train_idx: np.ndarray,
    test_idx: np.ndarray,
    seed: int = 0,
    candidates: str = "all",
    grid: Grid | None = None,
    inner_folds: int = 5,
    device: str = "cpu",
) -> dict[str, Any]:
    """One (embedding, mapper, repeat, fold) unit: tune by inner CV, refit, rank the test concepts.

    Returns ``{"n_test", "hit1", "hit5", "hit10", "hit20" (percent of test concepts), "params" (JSON of the
    chosen hyper-parameters), "inner_map" (MAP of the chosen point in the inner CV; NaN when nothing was
    tuned), "inner_folds" (inner folds used: ``inner_folds`` clamped to the training concepts; 0 when
    nothing was tuned), "ranks" (list of each test concept's rank, in test_idx order)}``.
    """
    if candidates not in ("all", "test"):
        raise VspInputError(f"candidates must be 'all' or 'test', got {candidates!r}")
    X, Y = _check_xy(X, Y)
    train_idx = np.asarray(train_idx, dtype=np.int64)
    test_idx = np.asarray(test_idx, dtype=np.int64)
    if np.intersect1d(train_idx, test_idx).size:
        raise VspInputError("run_fold: train and test concepts overlap")
    points = _grid_points(mapper, grid)
    params, inner_map, n_inner = _choose_params(
        mapper, points, X, Y, train_idx, seed, inner_folds, candidates, device
    )
    pred = fit_predict(mapper, params, X[train_idx], Y[train_idx], X[test_idx], seed, device)
    if candidates == "all":
        ranks = cosine_ranks(pred, Y, test_idx)
    else:
        ranks = cosine_ranks(pred, Y[test_idx], np.arange(len(test_idx)))
    row: dict[str, Any] = {"n_test": len(test_idx)}
    for t in HITS:
        row[f"hit{t}"] = 100.0 * float(np.mean(ranks <= t))
    row["params"] = json.dumps(params, sort_keys=True)
    row["inner_map"] = inner_map
    row["inner_folds"] = n_inner
    row["ranks"] = ranks.tolist()
    return row


def evaluate(
    X: np.ndarray,
    Y: np.ndarray,
    mapper: str,
    embedding: str = "embedding",
    repeats: int = 5,
    folds: int = 10,
    seed: int = 0,
    candidates: str = "all",
    grid: Grid | None = None,
    inner_folds: int = 5,
    device: str = "cpu",
) -> list[dict[str, Any]]:
    """Run every unit of `split_plan` locally; one row per (repeat, fold) with `ROW_COLUMNS` (+ inner_map)."""
    rows = []
    plan = split_plan(len(X), repeats, folds, seed)
    for sp in plan:
        r = run_fold(X, Y, mapper, sp.train, sp.test, sp.seed, candidates, grid, inner_folds, device)
        r.pop("ranks")
        rows.append({"embedding": embedding, "mapper": mapper, "repeat": sp.repeat, "fold": sp.fold, **r})
        log.debug("%s/%s repeat %d fold %d: %s", embedding, mapper, sp.repeat, sp.fold, r)
    log.info("%s", _fmt(summarise(rows)))
    return rows


def summarise(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Pool fold rows per (embedding, mapper): ``hit{T}`` = 100 * total hits / total test concepts."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["embedding"], r["mapper"]), []).append(r)
    out = []
    for (emb, mapper), rs in groups.items():
        n = sum(int(r["n_test"]) for r in rs)
        s: dict[str, Any] = {"embedding": emb, "mapper": mapper, "n_folds": len(rs), "n_test": n}
        for t in HITS:
            s[f"hit{t}"] = sum(r[f"hit{t}"] * int(r["n_test"]) for r in rs) / n
        out.append(s)
    return out


def _fmt(summary: Sequence[Mapping[str, Any]]) -> str:
    return "; ".join(
        f"{s['embedding']}/{s['mapper']}: " + " ".join(f"Hit@{t} {s[f'hit{t}']:.2f}" for t in HITS)
        for s in summary
    )
