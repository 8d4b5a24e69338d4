"""Ray fan-out of the mapping grid: the same rows as the local loop, resume, grouping of units into tasks."""

from __future__ import annotations

import shutil

import pytest

from tests.meta.test_stage import FAST, make_features
from vsp.data.norms import load_cslb
from vsp.data.synthetic import generate_world
from vsp.io.store import open_store
from vsp.mapping.stage import MappingConfig, Unit, read_rows, run_mapping_local
from vsp.meta.stage import MetaConfig, run_meta_local

TINY = {"repeats": 2, "folds": 3, "mlp_epochs": (5,), "mlp_lr": (1e-3,), "mlp_weight_decay": (0.0,)}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    world = generate_world(tmp_path_factory.mktemp("world"), n_concepts=12, images_per_concept=1, seed=6)
    norms = load_cslb(world.norms_path, min_concepts=3)
    path = tmp_path_factory.mktemp("meta")
    make_features(path, world.concepts)
    cfg = MetaConfig(text=str(world.text_vectors_path), kinds=("svd",), multimodal=True, **FAST)
    run_meta_local(open_store(path), cfg, norms)
    return path, norms


def test_group_units_batches_cheap_mappers_and_splits_the_mlp():
    from cluster.mapping import group_units

    units = [Unit("e", m, r, f, f + 1) for m in ("knn", "mlp") for r in range(2) for f in range(3)]
    groups = group_units(units)
    assert [len(g) for g in groups] == [6] + [1] * 6
    assert {u.mapper for u in groups[0]} == {"knn"}


def test_ray_grid_equals_local_loop(ray_local, tmp_path, setup):
    import torch

    from cluster.mapping import run_mapping_ray

    path, norms = setup
    a = open_store(shutil.copytree(path, tmp_path / "a"))
    b = open_store(shutil.copytree(path, tmp_path / "b"))
    config = MappingConfig(**TINY)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the Ray tasks run with 1 thread each: same float sums, same MLP
    try:
        local = run_mapping_local(a, norms, config)
    finally:
        torch.set_num_threads(threads)
    remote = run_mapping_ray(b.uri, norms, config)
    assert remote.units_run == local.units_run == 3 * (2 + 2 + 6)
    keys = ["embedding", "mapper", "repeat", "fold"]
    ra = read_rows(a).sort_values(keys).reset_index(drop=True)
    rb = read_rows(b).sort_values(keys).reset_index(drop=True)
    assert ra.drop(columns=["test_concepts", "ranks"]).equals(rb.drop(columns=["test_concepts", "ranks"]))
    assert [list(x) for x in ra["ranks"]] == [list(x) for x in rb["ranks"]]
    assert a.read_parquet("mapping/table2.parquet").equals(b.read_parquet("mapping/table2.parquet"))
    again = run_mapping_ray(b.uri, norms, config)
    assert again.units_run == 0 and "nothing to do" in again.line()
