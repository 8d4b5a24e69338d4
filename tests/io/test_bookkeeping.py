"""Exclusive claims, the one refusal message, and markers that prove their data (vsp/io/bookkeeping.py)."""

from __future__ import annotations

import threading

import pyarrow as pa
import pytest

from vsp.errors import ConfigMismatchError
from vsp.io.bookkeeping import (
    check_identity,
    diff_identity,
    open_manifest,
    scan_markers,
    verify_outputs,
    write_marker,
    write_output,
)
from vsp.io.store import open_store


def race_claims(store, n: int = 8) -> list[bool]:
    """n threads claim one key at once; returns who won."""
    barrier = threading.Barrier(n)
    won = [False] * n

    def claim(i: int) -> None:
        barrier.wait()
        won[i] = store.create_exclusive("stage/manifest.json", f"driver {i}".encode())

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return won


def test_create_exclusive_local_one_winner(tmp_path):
    store = open_store(tmp_path / "s")
    won = race_claims(store)
    assert sum(won) == 1
    assert store.read_bytes("stage/manifest.json") == f"driver {won.index(True)}".encode()
    assert store.list("stage") == ["stage/manifest.json"]  # no temp files left behind
    assert store.create_exclusive("stage/manifest.json", b"late") is False


@pytest.mark.s3
@pytest.mark.parametrize("conditional", ["1", "0", "auto"])
def test_create_exclusive_s3_one_winner(s3_uri, monkeypatch, conditional):
    monkeypatch.setenv("VSP_S3_CONDITIONAL_WRITES", conditional)
    store = open_store(s3_uri)
    won = race_claims(store)
    assert sum(won) == 1
    assert store.read_bytes("stage/manifest.json") == f"driver {won.index(True)}".encode()
    assert store.create_exclusive("stage/manifest.json", b"late") is False


@pytest.mark.s3
def test_probe_detects_a_server_that_ignores_the_condition(s3_uri, monkeypatch):
    """A server that silently overwrites despite If-None-Match gets the listing fallback, still one winner."""
    import vsp.io.store as store_mod

    monkeypatch.setenv("VSP_S3_CONDITIONAL_WRITES", "auto")
    store = open_store(s3_uri)
    client = store.client
    real_put = client.put_object

    def ignoring_put(**kw):
        kw.pop("IfNoneMatch", None)
        return real_put(**kw)

    monkeypatch.setattr(client, "put_object", ignoring_put)
    monkeypatch.setattr(store_mod, "_CONDITIONAL", {})
    assert store_mod._conditional_writes(store) is False
    won = race_claims(store, 4)
    assert sum(won) == 1


def test_open_manifest_joins_the_same_identity_and_refuses_another(tmp_path):
    store = open_store(tmp_path / "s")
    doc, created = open_manifest(store, "stage/manifest.json", {"config": {"a": 1}, "x": 2}, "toy run")
    assert created and doc["identity"] == {"config": {"a": 1}, "x": 2}
    before = store.read_bytes("stage/manifest.json")
    _, created = open_manifest(store, "stage/manifest.json", {"config": {"a": 1}, "x": 2}, "toy run")
    assert not created
    with pytest.raises(ConfigMismatchError) as e:
        open_manifest(store, "stage/manifest.json", {"config": {"a": 3}, "x": 2}, "toy run")
    assert str(e.value) == (
        f"{store.uri}/stage/manifest.json holds a different toy run (differs in: config.a); "
        "use another --store prefix or delete its stage/ folder"
    )
    assert store.read_bytes("stage/manifest.json") == before  # never overwritten


def test_diff_identity_names_config_fields():
    assert diff_identity({"config": {"a": 1, "b": 2}, "n": 1}, {"config": {"a": 1, "b": 3}, "n": 2}) == [
        "config.b",
        "n",
    ]


def test_check_identity_ignores_named_keys(tmp_path):
    store = open_store(tmp_path / "s")
    check_identity(store, "x/m.json", {"a": 1, "path": "/one"}, {"a": 1, "path": "/two"}, "t", ("path",))


def test_markers_prove_their_outputs(tmp_path):
    store = open_store(tmp_path / "s")
    for i in range(3):
        out = write_output(store, f"st/results/u{i}.parquet", pa.table({"v": [i, i + 1]}))
        write_marker(store, f"st/done/u{i}.json", [out], rows=2)
    scan = scan_markers(store, "st/done", ["st/results"])
    assert sorted(scan.done) == [f"st/done/u{i}.json" for i in range(3)] and not scan.invalid
    store.delete("st/results/u1.parquet")  # data gone, marker left: not done
    store.write_bytes("st/results/u2.parquet", b"short")  # replaced by something else: not done
    scan = scan_markers(store, "st/done", ["st/results"])
    assert sorted(scan.done) == ["st/done/u0.json"]
    assert sorted(scan.invalid) == ["st/done/u1.json", "st/done/u2.json"]
    assert verify_outputs(store, scan.done["st/done/u0.json"]) == []


def test_deep_verification_catches_same_size_corruption(tmp_path):
    store = open_store(tmp_path / "s")
    out = write_output(store, "st/results/u.bin", b"abcdef")
    write_marker(store, "st/done/u.json", [out])
    store.write_bytes("st/results/u.bin", b"abcdeX")
    doc = store.read_json("st/done/u.json")
    assert "st/done/u.json" in scan_markers(store, "st/done", ["st/results"])  # sizes agree
    assert verify_outputs(store, doc) == ["st/results/u.bin"]


def test_legacy_markers_use_the_stage_rule(tmp_path):
    store = open_store(tmp_path / "s")
    store.write_json("st/done/a.json", {"rows": 1})
    store.write_json("st/done/b.json", {"rows": 1})
    store.write_bytes("st/results/a.parquet", b"x")

    def legacy(key, _doc):
        return [{"key": key.replace("/done/", "/results/").replace(".json", ".parquet")}]

    scan = scan_markers(store, "st/done", ["st/results"], legacy)
    assert list(scan.done) == ["st/done/a.json"] and scan.invalid == ["st/done/b.json"]


def test_read_only_store_creates_nothing(tmp_path):
    missing = tmp_path / "nope"
    store = open_store(missing, create=False)
    assert store.list("") == [] and not store.exists("features/manifest.json")
    assert not missing.exists()


def test_store_that_is_a_file_is_a_clear_error(tmp_path):
    from vsp.errors import VspInputError

    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(VspInputError, match="is a file, not a folder"):
        open_store(f)
