"""Permutation nulls for property decoding: more label columns on the same feature matrix.

A permutation test of a probe asks how often F1 at least as high as the observed one arises when the labels
carry no information about the features. Permuting the concept rows of the label matrix (jointly for every
property, so the properties keep their co-occurrence and their positive counts) and running the very same
cross-validated probe gives one draw of that null. The stratified folds are recomputed for every permuted
label vector (``probe_layer`` splits each column itself), as the test requires. Because the batched probe fits
all (property, fold) problems of a layer at once, a batch of permutations is only more columns: the features'
basis is computed once per call.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from vsp.decode.probe import probe_layer
from vsp.errors import VspInputError


def mean_f1(result: dict[str, np.ndarray], n_columns: int, folds: int) -> np.ndarray:
    """``probe_layer``'s per-(column, fold) F1 as the mean over folds per column: (n_columns,)."""
    return result["f1"].reshape(n_columns, folds).mean(axis=1)


def permuted_labels(labels: np.ndarray, n_permutations: int, seed: int = 0) -> np.ndarray:
    """(B, n, P): the label matrix with its concept rows permuted, B times (seeded)."""
    rng = np.random.default_rng(seed)
    n = labels.shape[0]
    return np.stack([labels[rng.permutation(n)] for _ in range(n_permutations)])


def permutation_null(
    X: Any,
    labels: Any,
    n_permutations: int,
    seed: int = 0,
    folds: int = 5,
    cv_seed: int = 0,
    C: float = 1.0,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    batch: int | None = None,
    max_problems: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Observed mean F1 per property (P,) and its permutation null (B, P) for one layer.

    ``seed`` draws the permutations; ``cv_seed`` is the decoding's ``StratifiedKFold`` seed (the same for
    the observed and the permuted labels). ``batch``: permutations fitted per probe call (default: as many as
    keep about 16,000 (property, fold) problems per call; measured on 2 CPU cores with the CSLB labels at
    width 512: 8,000 fits/s at 8 permutations per call, 3,800 at 32, whose working set no longer fits the
    caches; ``benchmarks/bench_permutations.py``).
    """
    labels_np = np.asarray(labels)
    if labels_np.ndim != 2:
        raise VspInputError(f"labels must be (concepts x properties), got shape {labels_np.shape}")
    if n_permutations < 1:
        raise VspInputError(f"permutations must be >= 1, got {n_permutations}")
    n, P = labels_np.shape
    kw = {
        "folds": folds,
        "seed": cv_seed,
        "C": C,
        "dtype": dtype,
        "device": device,
        "max_problems": max_problems,
    }
    observed = mean_f1(probe_layer(X, labels_np, **kw), P, folds)
    if batch is None:
        batch = max(1, 16_000 // max(1, P * folds))
    perms = permuted_labels(labels_np, n_permutations, seed)
    null = np.empty((n_permutations, P), dtype=np.float64)
    for b0 in range(0, n_permutations, batch):
        b1 = min(n_permutations, b0 + batch)
        cols = np.concatenate(list(perms[b0:b1]), axis=1)  # (n, (b1 - b0) * P), permutation-major
        null[b0:b1] = mean_f1(probe_layer(X, cols, **kw), (b1 - b0) * P, folds).reshape(b1 - b0, P)
    return observed, null
