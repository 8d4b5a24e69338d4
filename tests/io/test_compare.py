"""The store comparison that checks "identical before and after" claims (vsp/io/compare.py)."""

import numpy as np
import pyarrow as pa
import zarr

from vsp.io.compare import compare, main, store_hashes
from vsp.io.store import open_store


def make_store(path, value=1.0, when="2026-01-01T00:00:00Z"):
    store = open_store(path)
    root = zarr.open_group(store=store.zarr_store("features/features.zarr"), mode="a", zarr_format=3)
    arr = root.require_group("net").create_array("conv1", shape=(2, 3), dtype="float32", overwrite=True)
    arr[...] = np.full((2, 3), value, dtype=np.float32)
    store.write_parquet("decode/results/net/conv1.parquet", pa.table({"f1": [0.5, value]}))
    store.write_json("decode/manifest.json", {"identity": {"folds": 5}, "created": when, "store": store.uri})
    store.write_json("run.json", {"status": "complete", "started": when})
    return store


def test_timestamps_hosts_and_the_store_path_do_not_count(tmp_path):
    a = make_store(tmp_path / "a")
    b = make_store(tmp_path / "b", when="2027-05-05T00:00:00Z")
    result = compare(store_hashes(a), store_hashes(b))
    assert result["different"] == [] and result["only_in_a"] == [] and result["only_in_b"] == []
    assert "features/features.zarr/net/conv1" in result["same"]
    assert main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0


def test_a_changed_value_in_an_array_or_a_table_is_found(tmp_path, capsys):
    a = make_store(tmp_path / "a")
    b = make_store(tmp_path / "b", value=np.nextafter(np.float32(1), np.float32(2)))  # one ulp
    result = compare(store_hashes(a), store_hashes(b))
    assert result["different"] == ["decode/results/net/conv1.parquet", "features/features.zarr/net/conv1"]
    assert main([str(tmp_path / "a"), str(tmp_path / "b")]) == 1
    assert "different: features/features.zarr/net/conv1" in capsys.readouterr().out


def test_a_changed_identity_and_a_missing_table_are_found(tmp_path):
    a = make_store(tmp_path / "a")
    b = make_store(tmp_path / "b")
    b.write_json("decode/manifest.json", {"identity": {"folds": 10}, "created": "x"})
    b.delete("decode/results/net/conv1.parquet")
    result = compare(store_hashes(a), store_hashes(b))
    assert result["different"] == ["decode/manifest.json"]
    assert result["only_in_a"] == ["decode/results/net/conv1.parquet"]
    data = compare(store_hashes(a, data_only=True), store_hashes(b, data_only=True))
    assert data["different"] == [] and data["only_in_a"] == ["decode/results/net/conv1.parquet"]
