"""Small numerical helpers shared across stages (numpy only, so any module can import them)."""

from __future__ import annotations

import numpy as np

__all__ = ["l2_rows"]


def l2_rows(m: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norms, as float64; a zero row stays zero (NaN rows stay NaN)."""
    m = np.asarray(m, dtype=np.float64)
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    return m / np.where(norms > 0, norms, 1.0)
