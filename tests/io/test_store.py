"""vsp.io.store on a local folder and on a real S3 server (SeaweedFS), with the same tests for both."""

from __future__ import annotations

import os
import pickle
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import zarr

from vsp.errors import VspInputError
from vsp.io.store import LocalFileStore, S3Store, Store, open_store, open_uri, read_uri


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "local":
        return open_store(tmp_path / "store" / "nested")
    return open_store(request.getfixturevalue("s3_uri"))


def test_open_store_kinds(tmp_path: Path) -> None:
    local = open_store(tmp_path / "a" / "b")
    assert isinstance(local, LocalFileStore) and (tmp_path / "a" / "b").is_dir()
    assert local.uri == str((tmp_path / "a" / "b").resolve())
    assert open_store(f"file://{tmp_path}").uri == str(tmp_path.resolve())
    s3 = open_store("s3://bucket/some/prefix/")
    assert isinstance(s3, S3Store) and s3.uri == "s3://bucket/some/prefix"
    assert open_store("s3://bucket").uri == "s3://bucket"
    assert repr(s3) == "S3Store('s3://bucket/some/prefix')"
    for bad in ("s3://", "s3:///prefix", "gs://bucket/x", "s3://bucket/a/../b"):
        with pytest.raises(VspInputError):
            open_store(bad)


def test_bytes_round_trip_and_replace(store: Store) -> None:
    store.write_bytes("a/b/c.bin", b"\x00first")
    assert store.read_bytes("a/b/c.bin") == b"\x00first"
    store.write_bytes("a/b/c.bin", b"second")
    assert store.read_bytes("a/b/c.bin") == b"second"
    store.write_bytes("empty", b"")
    assert store.read_bytes("empty") == b""


def test_json_round_trip(store: Store) -> None:
    doc = {"concepts": ["bat_(animal)", "café"], "n": 3, "x": 0.5, "nested": {"ok": True, "none": None}}
    store.write_json("features/manifest.json", doc)
    assert store.read_json("features/manifest.json") == doc
    store.write_bytes("bad.json", b"{not json")
    with pytest.raises(VspInputError, match="bad.json"):
        store.read_json("bad.json")


def test_parquet_round_trip(store: Store) -> None:
    table = pa.table({"layer": ["conv1", "conv2"], "f1": [0.25, 0.5], "n": pa.array([1, 2], pa.int32())})
    store.write_parquet("decode/rows.parquet", table)
    assert store.read_parquet("decode/rows.parquet").equals(table)
    store.write_bytes("junk.parquet", b"not parquet")
    with pytest.raises(VspInputError, match="junk.parquet"):
        store.read_parquet("junk.parquet")


def test_failed_write_keeps_old_content(store: Store) -> None:
    store.write_json("m.json", {"v": 1})
    with pytest.raises(TypeError):
        store.write_json("m.json", {"v": object()})  # not serialisable: nothing may be written
    with pytest.raises(pa.ArrowInvalid):
        store.write_parquet("t.parquet", pa.table({"a": [1]}).append_column("b", pa.array([1, 2])))
    assert store.read_json("m.json") == {"v": 1}
    assert not store.exists("t.parquet")


def test_local_atomic_replace_leaves_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(tmp_path)
    store.write_json("d/m.json", {"v": 1})
    store.write_parquet("d/t.parquet", pa.table({"a": [1, 2]}))
    assert sorted(os.listdir(tmp_path / "d")) == ["m.json", "t.parquet"]

    def broken_fsync(fd: int) -> None:  # the disk fails after part of the new bytes went to the temp file
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        store.write_json("d/m.json", {"v": 2})
    monkeypatch.undo()
    assert store.read_json("d/m.json") == {"v": 1}
    assert sorted(os.listdir(tmp_path / "d")) == ["m.json", "t.parquet"]


def test_list_exists_delete(store: Store) -> None:
    assert store.list() == []
    for key in ("b/2.json", "a/1.json", "a/x/3.bin", "ab/4.bin", "top.bin"):
        store.write_bytes(key, b"x")
    assert store.list() == ["a/1.json", "a/x/3.bin", "ab/4.bin", "b/2.json", "top.bin"]
    assert store.list("a") == ["a/1.json", "a/x/3.bin"]  # a folder: 'ab/' is not under 'a'
    assert store.list("a/") == ["a/1.json", "a/x/3.bin"]
    assert store.list("missing") == []
    assert store.exists("a/1.json") and not store.exists("a/2.json")
    assert not store.exists("a")  # a prefix is not an object
    store.delete("a/1.json")
    store.delete("a/1.json")  # deleting a missing key is fine: retries stay idempotent
    assert not store.exists("a/1.json")
    assert store.list("a") == ["a/x/3.bin"]


def test_missing_key_names_full_uri(store: Store) -> None:
    for read in (store.read_bytes, store.read_json, store.read_parquet):
        with pytest.raises(FileNotFoundError) as info:
            read("no/such.json")
        assert f"{store.uri}/no/such.json" in str(info.value)


def test_child(store: Store) -> None:
    sub = store.child("runs", "r1")
    assert sub.uri == f"{store.uri}/runs/r1"
    sub.write_json("done/unit-00000.json", {"ok": True})
    assert store.list("runs") == ["runs/r1/done/unit-00000.json"]
    assert sub.list() == ["done/unit-00000.json"]
    assert store.child("runs/r1").read_json("done/unit-00000.json") == {"ok": True}


@pytest.mark.parametrize(
    "key", ["", "/", "..", "../x", "a/../b", "/abs/path", "a//b", "./a", "a/.", "a\\b"], ids=repr
)
def test_bad_keys_rejected(store: Store, key: str) -> None:
    for op in (store.read_bytes, store.exists, store.delete, lambda k: store.write_bytes(k, b"x")):
        with pytest.raises(VspInputError):
            op(key)
    if key.strip("/"):
        with pytest.raises(VspInputError):
            store.child(key)
        with pytest.raises(VspInputError):
            store.list(key)


def test_pickles_by_uri(store: Store) -> None:
    store.write_bytes("k", b"v")  # builds the S3 client, which is not picklable
    copy = pickle.loads(pickle.dumps(store))
    assert type(copy) is type(store) and copy.uri == store.uri
    assert copy.read_bytes("k") == b"v"


def test_zarr_round_trip(store: Store) -> None:
    group = zarr.open_group(store=store.zarr_store("features/features.zarr"), mode="w")
    arr = group.create_array(
        "resnet18/layer1", shape=(6, 4), chunks=(2, 4), dtype="float32", fill_value=np.nan
    )
    data = np.arange(24, dtype="float32").reshape(6, 4)
    for start in (4, 0):  # whole chunks, one unit at a time, in any order; chunk 2..4 never written
        arr[start : start + 2] = data[start : start + 2]

    reopened = zarr.open_group(store=store.zarr_store("features/features.zarr"), mode="r")
    back = reopened["resnet18/layer1"][:]
    np.testing.assert_array_equal(back[[0, 1, 4, 5]], data[[0, 1, 4, 5]])
    assert np.isnan(back[2:4]).all()
    # zarr's keys are ordinary store keys: metadata and chunks show up in list()
    keys = store.list("features/features.zarr")
    assert "features/features.zarr/zarr.json" in keys
    assert "features/features.zarr/resnet18/layer1/zarr.json" in keys
    assert sum("/layer1/c/" in k for k in keys) == 2


@pytest.mark.s3
def test_s3_retries_through_server_restart(s3_server, s3_uri: str) -> None:
    store = open_store(s3_uri)
    store.write_bytes("before", b"1")
    s3_server.stop(graceful=False)
    result: dict[str, object] = {}

    def write() -> None:
        try:
            store.write_json("during.json", {"ok": True})
            result["ok"] = True
        except Exception as e:  # noqa: BLE001 - reported below
            result["error"] = e

    writer = threading.Thread(target=write)
    writer.start()
    time.sleep(0.2)  # the write fails (connection refused) and backs off while the server restarts
    s3_server.start()
    writer.join(timeout=60)
    assert result == {"ok": True}
    assert store.read_bytes("before") == b"1"
    assert store.read_json("during.json") == {"ok": True}


@pytest.mark.s3
def test_s3_secrets_not_in_repr(s3_server, s3_uri: str) -> None:
    store = open_store(s3_uri)
    store.exists("x")
    assert s3_server.secret_key not in repr(store) + store.uri + str(store.__dict__.get("uri"))
    assert s3_server.secret_key not in " ".join(s3_server.command())


def test_read_uri_and_open_uri(store: Store) -> None:
    store.write_bytes("in/data.txt", b"a b\nc d\n")
    uri = store.key_uri("in/data.txt")
    assert read_uri(uri) == b"a b\nc d\n"
    with open_uri(uri) as fh:
        assert fh.read() == b"a b\nc d\n"
    missing = store.key_uri("in/missing.txt")
    for read in (read_uri, open_uri):
        with pytest.raises(FileNotFoundError, match="missing.txt") as info:
            read(missing)
        assert missing in str(info.value)


def test_read_uri_local_kinds(tmp_path: Path) -> None:
    (tmp_path / "f.bin").write_bytes(b"xyz")
    assert read_uri(tmp_path / "f.bin") == read_uri(f"file://{tmp_path}/f.bin") == b"xyz"
    with pytest.raises(IsADirectoryError):
        read_uri(tmp_path)
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)  # opening it would block until someone writes
    with pytest.raises(VspInputError, match=r"pipe: not a regular file"):
        read_uri(pipe)
    with pytest.raises(VspInputError, match="/dev/zero: not a regular file"):
        read_uri("/dev/zero")
    with pytest.raises(VspInputError, match="unsupported URI"):
        read_uri("http://example.org/x")
    for bad in ("s3://", "s3://bucket", "s3://bucket/", "s3://bucket/folder/"):
        with pytest.raises(VspInputError, match="not an S3 object URI"):
            read_uri(bad)
