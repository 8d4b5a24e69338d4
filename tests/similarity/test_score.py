import numpy as np
import pytest
from scipy.stats import spearmanr

from vsp.errors import VspInputError
from vsp.similarity.score import BENCHMARKS, ROW_COLUMNS, benchmark_pairs, score_embedding, similarity_table


def test_spearman_on_hand_made_case_equals_scipy():
    concepts = ["a", "b", "c", "d"]
    m = np.array([[1.0, 0.0], [1.0, 0.2], [0.0, 1.0], [0.6, 0.8]])
    pairs = [
        ("a", "b", 9.0),
        ("a", "c", 1.0),
        ("b", "d", 6.0),
        ("c", "d", 7.0),
        ("a", "d", 2.0),
        ("a", "zz", 5),
    ]
    row = score_embedding((concepts, m), pairs, benchmark="toy", name="emb")
    cos = [
        m[i] @ m[j] / np.linalg.norm(m[i]) / np.linalg.norm(m[j])
        for i, j in [(0, 1), (0, 2), (1, 3), (2, 3), (0, 3)]
    ]
    expect = spearmanr(cos, [9, 1, 6, 7, 2]).statistic
    assert row["spearman"] == pytest.approx(expect)
    assert (row["n_pairs"], row["n_scored"]) == (6, 5)
    assert tuple(row) == ROW_COLUMNS
    assert np.isnan(score_embedding((concepts, m), pairs[:2])["spearman"])  # < 3 pairs
    with pytest.raises(VspInputError):
        score_embedding((concepts, m[:3]), pairs)


def test_similarity_table_rows():
    emb = {"x": (["a", "b", "c"], np.array([[1.0, 0], [1, 0.5], [0, 1]])), "y": (["a", "b"], np.ones((2, 2)))}
    bench = {"B1": [("a", "b", 1.0), ("a", "c", 2.0), ("b", "c", 3.0)]}
    rows = similarity_table(emb, bench)
    assert [(r["embedding"], r["benchmark"], r["n_scored"]) for r in rows] == [("x", "B1", 3), ("y", "B1", 1)]
    assert rows[0]["spearman"] == pytest.approx(-0.5) and np.isnan(rows[1]["spearman"])


@pytest.mark.shared_data
def test_overlap_counts_on_real_files(shared_data):
    from vsp.data.norms import load_cslb

    concepts = load_cslb(shared_data / "cslb" / "norms.dat").concepts
    pairs = benchmark_pairs(
        concepts, men=shared_data / BENCHMARKS["MEN"], simlex=shared_data / BENCHMARKS["SimLex-999"]
    )
    assert len(pairs["MEN"]) == 104
    assert len(pairs["SimLex-999"]) == 48
    assert all(c1 in concepts and c2 in concepts for c1, c2, _ in pairs["MEN"] + pairs["SimLex-999"])
