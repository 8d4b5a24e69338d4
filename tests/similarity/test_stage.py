"""The `vsp similarity` stage: the 104 / 48 CSLB pairs, Table 3 schema, no-op rerun, refusal, custom pairs."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from vsp.data.norms import load_cslb
from vsp.data.synthetic import generate_world
from vsp.data.text import concept_word_candidates
from vsp.errors import ConfigMismatchError, VspInputError
from vsp.io.store import open_store
from vsp.meta.stage import MetaConfig, run_meta_local
from vsp.similarity.score import BENCHMARKS
from vsp.similarity.stage import TABLE3, TABLE3_SCHEMA, read_table3, run_similarity, table3_text, world_pairs


@pytest.fixture(scope="module")
def cslb_store(tmp_path_factory, cslb_path):
    """A text-only store over the real CSLB concepts, with random 8-d word vectors (no GloVe needed)."""
    norms = load_cslb(cslb_path)
    rng = np.random.default_rng(0)
    vec = tmp_path_factory.mktemp("vec") / "vectors.txt"
    words = {concept_word_candidates(c)[0][0] for c in norms.concepts}
    vec.write_text(
        "".join(
            w.replace(" ", "_") + " " + " ".join(f"{v:.4f}" for v in rng.normal(size=8)) + "\n"
            for w in sorted(words)
        )
    )
    path = tmp_path_factory.mktemp("store")
    run_meta_local(open_store(path), MetaConfig(text=str(vec)), norms)
    return open_store(path), norms


def test_real_benchmarks_give_104_and_48_pairs(cslb_store, shared_data):
    store, norms = cslb_store
    benches = {b: shared_data / rel for b, rel in BENCHMARKS.items()}
    summary = run_similarity(store, benches)
    assert summary.ran and summary.pairs == {"MEN": 104, "SimLex-999": 48}
    table = store.read_parquet(TABLE3)
    assert table.schema.equals(TABLE3_SCHEMA) and table.num_rows == 2
    df = table.to_pandas()
    assert list(df["n_pairs"]) == [104, 48]
    assert (df["n_scored"] <= df["n_pairs"]).all() and (df["n_scored"] > 40).all()
    assert df["spearman"].between(-1, 1).all()
    text = table3_text(store)
    assert f"({df['n_scored'][0]}/104)" in text and f"({df['n_scored'][1]}/48)" in text
    assert "[" not in text and "paper" not in text  # the run's numbers only: the paper's are the report's
    assert read_table3(store).equals(df)  # the stage's reader: Table 3 as its marker proves it
    pairs = store.read_parquet("similarity/pairs/MEN.parquet")
    assert pairs.num_rows == 104 and pairs.column_names == [
        "word1",
        "word2",
        "concept1",
        "concept2",
        "rating",
    ]
    again = run_similarity(store, benches)
    assert not again.ran and "nothing to do" in again.line()
    with pytest.raises(ConfigMismatchError, match="benchmarks"):
        run_similarity(store, {"MEN": benches["MEN"]})


def test_demo_world_pairs_and_too_few_benchmark_pairs(tmp_path):
    world = generate_world(tmp_path / "w", n_concepts=10, images_per_concept=1, seed=2)
    norms = load_cslb(world.norms_path, min_concepts=3)
    store = open_store(tmp_path / "s")
    run_meta_local(store, MetaConfig(text=str(world.text_vectors_path)), norms)
    pairs = world_pairs(world.spec_path, tmp_path / "pairs.txt")
    assert len(pairs.read_text().splitlines()) == 1 + 10 * 9 // 2
    few = tmp_path / "few.txt"
    few.write_text(f"{world.concepts[0]} {world.concepts[1]} 3\nnot_a_concept {world.concepts[2]} 1\n")
    summary = run_similarity(store, {"demo-pairs": pairs, "few": few})
    assert summary.pairs == {"demo-pairs": 45, "few": 1}
    assert "fewer than 3 pairs" in summary.line() and "few (1)" in summary.line()
    df = store.read_parquet(TABLE3).to_pandas().set_index("benchmark")
    assert math.isnan(df.loc["few", "spearman"]) and df.loc["few", "n_scored"] == 1
    assert np.isfinite(df.loc["demo-pairs", "spearman"])
    assert pa.types.is_float64(store.read_parquet(TABLE3).schema.field("spearman").type)


def test_no_embeddings_or_no_benchmarks_is_a_clear_error(tmp_path):
    with pytest.raises(VspInputError, match="no benchmark"):
        run_similarity(open_store(tmp_path), {})
    with pytest.raises(VspInputError, match="vsp meta"):
        run_similarity(open_store(tmp_path), {"x": tmp_path / "x.txt"})
