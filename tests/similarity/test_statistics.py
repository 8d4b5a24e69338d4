"""Table 3's statistics: intervals of every rho and the Williams tests, against scipy and the formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm, spearmanr
from scipy.stats import t as student_t

from vsp.data.norms import load_cslb
from vsp.data.synthetic import generate_world
from vsp.io.store import open_store
from vsp.meta.stage import MetaConfig, run_meta_local
from vsp.similarity.stage import TABLE3, TABLE3_SCHEMA, run_similarity, world_pairs
from vsp.similarity.statistics import (
    COMPARISONS,
    INTERVALS,
    compare,
    cosines,
    read_table3_statistics,
    write_table3_statistics,
)


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sim")
    world = generate_world(tmp / "w", n_concepts=12, images_per_concept=1, seed=2)
    norms = load_cslb(world.norms_path, min_concepts=3)
    store = open_store(tmp / "s")
    run_meta_local(store, MetaConfig(text=str(world.text_vectors_path)), norms)
    run_similarity(store, {"demo-pairs": world_pairs(world.spec_path, tmp / "pairs.txt")})
    return store


def test_intervals_match_table3_and_the_fisher_formula(scored):
    intervals, _ = read_table3_statistics(scored)
    table3 = scored.read_parquet(TABLE3)
    assert table3.schema.equals(TABLE3_SCHEMA)  # Table 3 itself is as before
    t3 = table3.to_pandas().set_index("embedding")
    for r in intervals.itertuples(index=False):
        assert r.spearman == pytest.approx(t3.loc[r.embedding, "spearman"], abs=1e-12)
        n, rho = r.n_scored, r.spearman
        se = math.sqrt((1 + rho * rho / 2) / (n - 3))  # Bonett & Wright (2000)
        q = norm.ppf(0.975)
        assert r.fisher_low == pytest.approx(math.tanh(math.atanh(rho) - q * se))
        assert r.fisher_high == pytest.approx(math.tanh(math.atanh(rho) + q * se))
        assert r.boot_low < rho < r.boot_high and r.n_resamples == 2000


def test_comparisons_are_williams_tests_on_the_same_pairs(scored):
    a, gold = cosines(scored, "text", "demo-pairs")
    b = a + np.random.default_rng(0).normal(scale=0.2, size=a.shape)  # a second embedding's cosines
    b[3] = np.nan  # a pair it cannot score: left out of both rhos
    row = compare(a, b, gold)
    ok = np.isfinite(b)
    a, b, gold = a[ok], b[ok], gold[ok]
    assert row["r_ab"] == pytest.approx(spearmanr(a, b).statistic)
    r1, r2, r12, n = spearmanr(a, gold).statistic, spearmanr(b, gold).statistic, row["r_ab"], int(row["n"])
    assert n == 65 and row["rho_a"] == pytest.approx(r1) and row["rho_b"] == pytest.approx(r2)
    det = 1 - r1**2 - r2**2 - r12**2 + 2 * r1 * r2 * r12
    den = 2 * (n - 1) / (n - 3) * det + ((r1 + r2) / 2) ** 2 * (1 - r12) ** 3
    t = (r1 - r2) * math.sqrt((n - 1) * (1 + r12) / den)
    assert row["t"] == pytest.approx(t) and row["df"] == n - 3
    assert row["pvalue"] == pytest.approx(2 * student_t.sf(abs(t), n - 3))
    _, comps = read_table3_statistics(scored)
    assert list(comps.columns)[:3] == ["benchmark", "embedding_a", "embedding_b"]  # one embedding: no rows


def test_statistics_are_deterministic_and_rebuilt_for_an_older_table3(scored):
    before = {k: scored.read_bytes(k) for k in (INTERVALS, COMPARISONS)}
    write_table3_statistics(scored)
    assert {k: scored.read_bytes(k) for k in before} == before
    for k in before:  # a store whose Table 3 predates the statistics gets them on the next run
        scored.delete(k)
    again = run_similarity(
        scored,
        {
            "demo-pairs": scored.read_json("similarity/manifest.json")["identity"]["benchmark_files"][
                "demo-pairs"
            ]
        },
    )
    assert not again.ran and {k: scored.read_bytes(k) for k in before} == before
