"""The `vsp map` stage without Ray: units, Parquet schema, resume, refusal, Table 2, and the CLI."""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from tests.test_embeddings import FAST, make_features
from vsp import mapping
from vsp.embeddings import MetaConfig, embedding_names, read_embedding, run_meta_local
from vsp.errors import ConfigMismatchError
from vsp.mapping_stage import (
    TABLE2,
    UNIT_SCHEMA,
    MappingConfig,
    align,
    plan_units,
    read_rows,
    run_mapping_local,
    table2_text,
)
from vsp.norms import load_cslb
from vsp.store import open_store
from vsp.synthetic import generate_world

TINY = {"repeats": 2, "folds": 3, "mlp_epochs": (5,), "mlp_lr": (1e-3,), "mlp_weight_decay": (0.0,)}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate_world(tmp_path_factory.mktemp("world"), n_concepts=12, images_per_concept=1, seed=5)


@pytest.fixture(scope="module")
def norms(world):
    return load_cslb(world.norms_path, min_concepts=3)


@pytest.fixture(scope="module")
def meta_store(tmp_path_factory, world, norms):
    path = tmp_path_factory.mktemp("meta")
    make_features(path, world.concepts)
    run_meta_local(
        open_store(path),
        MetaConfig(text=str(world.text_vectors_path), kinds=("penultimate", "svd"), multimodal=False, **FAST),
        norms,
    )
    return path


def copy(src, dst):
    shutil.copytree(src, dst)
    return open_store(dst)


def test_units_schema_table2_and_equality_with_evaluate(tmp_path, meta_store, norms):
    import torch

    store = copy(meta_store, tmp_path / "s")
    config = MappingConfig(**TINY)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summary = run_mapping_local(store, norms, config)
    finally:
        torch.set_num_threads(threads)
    names = embedding_names(store)
    assert names == ["netA/penultimate", "netA/svd", "text"]
    # per embedding: knn and ridge one unit per repeat (all folds), the MLP one unit per fold
    assert summary.units_total == summary.units_run == 3 * (2 + 2 + 2 * 3)
    assert summary.folds == 3 * 3 * 2 * 3
    unit = store.read_parquet("mapping/units/text/mlp/r1-f2-2.parquet")
    assert unit.schema.equals(UNIT_SCHEMA) and unit.num_rows == 1
    rows = read_rows(store)
    assert len(rows) == 3 * 3 * 2 * 3 and set(rows["mapper"]) == {"knn", "ridge", "mlp"}
    for _, g in rows[(rows["embedding"] == "text") & (rows["mapper"] == "knn")].groupby("repeat"):
        assert sorted(c for tc in g["test_concepts"] for c in tc) == sorted(norms.concepts)
    t2 = store.read_parquet(TABLE2).to_pandas()
    assert t2.shape == (9, 9)
    assert {
        "embedding",
        "mapper",
        "n_folds",
        "n_test",
        "n_concepts",
        "hit1",
        "hit5",
        "hit10",
        "hit20",
    } == set(t2)
    assert (t2["n_folds"] == 6).all() and (t2["n_concepts"] == 12).all()
    # the stage's numbers are vsp.mapping.evaluate's
    d = align(read_embedding(store, "netA/svd"), norms)
    for m in ("knn", "ridge"):
        ref = mapping.summarise(mapping.evaluate(d.X, d.Y, m, "netA/svd", repeats=2, folds=3, seed=0))[0]
        got = t2[(t2["embedding"] == "netA/svd") & (t2["mapper"] == m)].iloc[0]
        for t in mapping.HITS:
            assert got[f"hit{t}"] == pytest.approx(ref[f"hit{t}"])
    text = table2_text(store)
    assert "Hit@20" in text and "netA/svd" in text


def test_resume_incremental_selection_and_refusal(tmp_path, meta_store, norms):
    store = copy(meta_store, tmp_path / "s")
    cfg = MappingConfig(embeddings=("text",), mappers=("knn",), **TINY)
    assert run_mapping_local(store, norms, cfg).units_run == 2
    again = run_mapping_local(store, norms, cfg)
    assert again.units_run == 0 and "nothing to do" in again.line()
    # more embeddings / mappers later: only the new units run
    more = MappingConfig(embeddings=("text", "netA/svd"), mappers=("knn", "ridge"), **TINY)
    assert run_mapping_local(store, norms, more).units_run == 6
    store.delete("mapping/done/netA/svd/ridge/r1-f0-2.json")
    assert run_mapping_local(store, norms, more).units_run == 1
    with pytest.raises(ConfigMismatchError, match="config.folds"):
        run_mapping_local(store, norms, MappingConfig(**{**TINY, "folds": 4}))


def test_plan_units_chunks():
    d = type("D", (), {"name": "e", "concepts": list("abcdefghij")})()
    units = plan_units([d], MappingConfig(mappers=("ridge", "mlp"), repeats=2, folds=5, folds_per_task=2))
    assert [(u.mapper, u.repeat, u.start, u.stop) for u in units][:3] == [
        ("ridge", 0, 0, 2),
        ("ridge", 0, 2, 4),
        ("ridge", 0, 4, 5),
    ]
    assert len(units) == 2 * 2 * 3
    assert MappingConfig(mlp_epochs=(7,)).grid("mlp")["epochs"] == [7]


def test_cli_text_only_meta_map_similarity(tmp_path, world):
    from vsp.cli import app

    runner = CliRunner()
    store = str(tmp_path / "cli")
    res = runner.invoke(
        app,
        [
            "meta",
            "--store",
            store,
            "--text",
            str(world.text_vectors_path),
            "--norms",
            str(world.norms_path),
            "--folds",
            "3",
            "--min-concepts",
            "3",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "text" in res.output and "Tables 1 and 4" in res.output
    res = runner.invoke(
        app,
        [
            "map",
            "--store",
            store,
            "--norms",
            str(world.norms_path),
            "--min-concepts",
            "3",
            "--mappers",
            "knn,ridge",
            "--repeats",
            "1",
            "--folds",
            "3",
            "--no-ray",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "Table 2" in res.output and "paper column omitted" in res.output
    res = runner.invoke(
        app,
        [
            "map",
            "--store",
            store,
            "--norms",
            str(world.norms_path),
            "--min-concepts",
            "3",
            "--mappers",
            "knn",
            "--repeats",
            "1",
            "--folds",
            "4",
            "--no-ray",
        ],
    )
    assert res.exit_code == 3 and "config.folds" in res.output
    pairs = tmp_path / "pairs.txt"
    c = world.concepts
    pairs.write_text("".join(f"{c[i]} {c[i + 1]} {i % 5}\n" for i in range(8)))
    res = runner.invoke(app, ["similarity", "--store", store, "--pairs", f"mine={pairs}"])
    assert res.exit_code == 0, res.output
    assert "Table 3" in res.output and "(8/8)" in res.output
    assert np.isfinite(
        open_store(store).read_parquet("similarity/table3.parquet").column("spearman").to_numpy()
    ).all()
    assert pa.types.is_string(
        open_store(store).read_parquet("similarity/table3.parquet").schema.field("embedding").type
    )
