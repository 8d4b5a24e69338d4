"""Table 2's statistics on hand-made per-fold rows: the pooled estimate, the pairing, the paired test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from vsp.mapping.statistics import hit_interval, table2_statistics
from vsp.stats import paired_comparison


def rows(embedding: str, hits: list[float], n_test: list[int], shift: int = 0) -> pd.DataFrame:
    k = len(hits)
    return pd.DataFrame(
        {
            "embedding": embedding,
            "mapper": "knn",
            "repeat": [i // 3 for i in range(k)],
            "fold": [i % 3 for i in range(k)],
            "n_test": n_test,
            "hit1": hits,
            "test_concepts": [[f"c{i + shift}-{j}" for j in range(n)] for i, n in enumerate(n_test)],
        }
    )


def test_hit_interval_is_a_ratio_bootstrap_around_the_pooled_number():
    ci = hit_interval(np.array([50.0, 25.0, 100.0, 0.0]), np.array([4, 4, 2, 2]), seed=0)
    assert ci["estimate"] == pytest.approx((2 + 1 + 2 + 0) / 12 * 100)  # hits over test concepts, pooled
    assert ci["low"] < ci["estimate"] < ci["high"] and ci["method"] == "bootstrap-percentile-folds"
    assert hit_interval(np.array([50.0]), np.array([4]))["low"] == 50.0  # one fold: no interval to draw


def test_comparisons_pair_the_same_folds_and_equal_paired_comparison():
    a = rows("a", [50.0, 25.0, 75.0, 50.0, 25.0, 100.0], [4] * 6)
    b = rows("b", [25.0, 25.0, 50.0, 25.0, 0.0, 75.0], [4] * 6)
    other = rows("other", [25.0] * 6, [4] * 6, shift=1)  # other test concepts: not comparable with a or b
    data = pd.concat([a, b, other], ignore_index=True)
    iv, comps = table2_statistics(data, [("a", "knn"), ("b", "knn"), ("other", "knn")], (1,))
    assert len(iv) == 3 and list(
        comps[["embedding_a", "embedding_b"]].itertuples(index=False, name=None)
    ) == [("a", "b")]
    row = comps.iloc[0]
    ref = paired_comparison(a["hit1"], b["hit1"], n_resamples=5000, seed=0)
    assert row["mean_difference"] == pytest.approx(np.mean(a["hit1"] - b["hit1"]))
    assert row["pvalue"] == pytest.approx(ref.pvalue) and row["low"] == pytest.approx(ref.interval.low)
    same = table2_statistics(pd.concat([a, a.assign(embedding="a2")]), [("a", "knn"), ("a2", "knn")], (1,))[1]
    assert same.iloc[0]["mean_difference"] == 0 and same.iloc[0]["pvalue"] == 1.0
