"""One place that turns a URI into a store: a local folder or an ``s3://bucket/prefix``.

It is also the one place that reads a single input file by URI (a local path or ``s3://bucket/key``):
:func:`read_uri` (the whole file) and :func:`open_uri` (a stream), with the stores' S3 client and retries.

Every stage reads and writes through a :class:`Store`, so the same code runs embedded (local folder) and on a
cluster (any S3-compatible server). Small documents (manifests, done-markers) and Parquet tables are replaced
atomically, so a reader never sees half a file; Zarr v3 arrays go through zarr's own store classes.

S3 endpoint, region and credentials come from the standard AWS chain and environment (``AWS_ENDPOINT_URL``,
``AWS_REGION`` / ``AWS_DEFAULT_REGION``, ``AWS_ACCESS_KEY_ID`` ..., ``AWS_PROFILE``, instance roles).
Secrets are never logged, and never appear in ``repr`` or ``uri``.
"""

from __future__ import annotations

import atexit
import errno
import io
import json
import logging
import os
import stat
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from vsp.errors import VspInputError

if TYPE_CHECKING:
    import zarr.abc.store

log = logging.getLogger(__name__)

_TMP_MARK = ".vsp-tmp-"  # local temp files carry this in their name; list() hides them
DEFAULT_MAX_ATTEMPTS = 6  # total tries; standard-mode backoff rides out a server restart of a few seconds


def _clean_key(path: str, *, allow_empty: bool = False) -> str:
    """Return a normalised '/'-joined relative key; refuse anything that could escape the store root."""
    if not isinstance(path, str):
        raise VspInputError(f"store key must be a string, got {type(path).__name__}: {path!r}")
    key = path.rstrip("/")
    if not key:
        if allow_empty:
            return ""
        raise VspInputError(f"store key is empty: {path!r}")
    if key.startswith("/") or "\\" in key:
        raise VspInputError(f"store key must be a relative '/'-joined path, got {path!r}")
    for part in key.split("/"):
        if part in ("", ".", ".."):
            raise VspInputError(f"store key {path!r} has an empty, '.' or '..' part")
    return key


def _join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


class Store:
    """A place to keep results: bytes, JSON, Parquet and Zarr arrays under one root URI."""

    uri: str

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        # Rebuilt from the URI, so a store can be shipped to worker processes (clients are not picklable).
        return (open_store, (self.uri,))

    def key_uri(self, path: str) -> str:
        """The full URI of one key, for error messages and logs."""
        return _join(self.uri, _clean_key(path, allow_empty=True))

    # --- backend operations -------------------------------------------------------------------------------
    def child(self, *parts: str) -> Store:
        """A store rooted at a sub-prefix, so a stage can work in its own folder."""
        raise NotImplementedError

    def zarr_store(self, path: str = "") -> zarr.abc.store.Store:
        """A zarr v3 store (LocalStore, or FsspecStore on s3fs) rooted at ``path`` under this store."""
        raise NotImplementedError

    def exists(self, path: str) -> bool:
        """Whether the key holds an object (a prefix alone does not count)."""
        raise NotImplementedError

    def read_bytes(self, path: str) -> bytes:
        """The object's bytes; FileNotFoundError naming the full URI when missing."""
        raise NotImplementedError

    def write_bytes(self, path: str, data: bytes) -> None:
        """Replace the object atomically: readers see the old bytes or the new, never a part."""
        raise NotImplementedError

    def list(self, prefix: str = "") -> list[str]:
        """Store-relative keys under ``prefix`` (a folder: 'a' matches 'a/x', not 'ab/x'), sorted."""
        raise NotImplementedError

    def delete(self, path: str) -> None:
        """Remove the object; a missing key is not an error (retries stay idempotent)."""
        raise NotImplementedError

    def create_exclusive(self, path: str, data: bytes) -> bool:
        """Write the object only if no object has this key; True if this call created it.

        This is how a driver claims a stage's layout: of two drivers racing on one prefix exactly one gets
        True, and the bytes a reader sees are whole. Local: a hard link of a finished temp file (fails if the
        target exists). S3: a conditional PUT (``If-None-Match: *``), with a claim-and-list fallback for
        servers that ignore the condition.
        """
        raise NotImplementedError

    def list_sizes(self, prefix: str = "") -> dict[str, int]:
        """Store-relative keys under the folder ``prefix`` with their sizes in bytes (one listing)."""
        raise NotImplementedError

    # --- formats on top of bytes ---------------------------------------------------------------------------
    def read_json(self, path: str) -> Any:
        """Parse a JSON document; VspInputError naming the URI when it is not valid JSON."""
        data = self.read_bytes(path)
        try:
            return json.loads(data)
        except ValueError as e:
            raise VspInputError(f"{self.key_uri(path)}: not valid JSON ({e})") from e

    def write_json(self, path: str, obj: Any) -> None:
        """Write a JSON document with atomic replace (manifests and done-markers rely on this)."""
        text = json.dumps(obj, indent=2) + "\n"  # serialise first: a bad object writes nothing
        self.write_bytes(path, text.encode("utf-8"))

    def read_parquet(self, path: str) -> pa.Table:
        """Read a Parquet table; VspInputError naming the URI when the bytes are not Parquet."""
        data = self.read_bytes(path)
        try:
            return pq.read_table(pa.BufferReader(data))
        except pa.ArrowInvalid as e:
            raise VspInputError(f"{self.key_uri(path)}: not a readable Parquet file ({e})") from e

    def write_parquet(self, path: str, table: pa.Table) -> None:
        """Write a Parquet table with atomic replace (serialised in memory, then one write)."""
        self.write_bytes(path, parquet_bytes(table))


def write_frames(store: Store, frames: dict[str, Any]) -> list[str]:
    """Write pandas frames as Parquet (key -> frame, index left out); the keys, in order."""
    for key, df in frames.items():
        store.write_parquet(key, pa.Table.from_pandas(df, preserve_index=False))
    return list(frames)


def read_frames(store: Store, keys: Sequence[str]) -> tuple[Any, ...] | None:
    """The Parquet tables ``keys`` as pandas frames, or None when the first is not there (not written yet)."""
    if not keys or not store.exists(keys[0]):
        return None
    return tuple(store.read_parquet(k).to_pandas() for k in keys)


def parquet_bytes(table: pa.Table) -> bytes:
    """A table serialised as Parquet, the bytes :meth:`Store.write_parquet` writes."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


class LocalFileStore(Store):
    """A folder on local disk (the embedded default); temp file + os.replace gives atomic replace."""

    def __init__(self, root: str | os.PathLike[str], *, create: bool = True) -> None:
        self.root = Path(root).expanduser().resolve()
        self.create = create
        for part in (self.root, *self.root.parents):  # the nearest existing part must be a folder
            if part.exists():
                if not part.is_dir():
                    where = "is a file" if part == self.root else f"runs through the file {part}"
                    raise VspInputError(
                        f"store {self.root} {where}, not a folder: pass a folder or s3://bucket/prefix"
                    )
                break
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        self.uri = str(self.root)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (open_store, (self.uri,)) if self.create else (_open_read_only, (self.uri,))

    def _path(self, path: str, *, allow_empty: bool = False) -> Path:
        key = _clean_key(path, allow_empty=allow_empty)
        return self.root.joinpath(*key.split("/")) if key else self.root

    def child(self, *parts: str) -> LocalFileStore:
        """A store rooted at a sub-folder (created unless this store was opened read-only)."""
        return LocalFileStore(self._path(_join(*parts), allow_empty=True), create=self.create)

    def zarr_store(self, path: str = "") -> zarr.abc.store.Store:
        """A ``zarr.storage.LocalStore`` on the sub-folder ``path``."""
        from zarr.storage import LocalStore

        target = self._path(path, allow_empty=True)
        if self.create:
            target.mkdir(parents=True, exist_ok=True)
        return LocalStore(target)

    def exists(self, path: str) -> bool:
        """Whether the key is a file."""
        return self._path(path).is_file()

    def read_bytes(self, path: str) -> bytes:
        """The file's bytes; FileNotFoundError naming the full path when missing."""
        p = self._path(path)
        try:
            return p.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as e:
            raise FileNotFoundError(f"no such key: {self.key_uri(path)}") from e

    def write_bytes(self, path: str, data: bytes) -> None:
        """Write a temp file beside the target, fsync, then os.replace: all or nothing."""
        p = self._path(path)
        tmp = _finished_temp(p, data)
        try:
            os.replace(tmp, p)
        except BaseException:
            _unlink(tmp)
            raise
        log.debug("wrote %d bytes to %s", len(data), p)

    def list(self, prefix: str = "") -> list[str]:
        """Store-relative keys of the files under the folder ``prefix``, sorted (temp files hidden)."""
        return sorted(p.relative_to(self.root).as_posix() for p in self._files(prefix))

    def _files(self, prefix: str) -> list[Path]:
        """The files under the folder ``prefix`` (temp files hidden), unsorted."""
        base = self._path(prefix, allow_empty=True)
        if not base.is_dir():
            return []
        return [Path(d, name) for d, _dirs, files in os.walk(base) for name in files if _TMP_MARK not in name]

    def delete(self, path: str) -> None:
        """Remove the file; a missing one is fine."""
        try:
            self._path(path).unlink()
        except FileNotFoundError:
            pass

    def create_exclusive(self, path: str, data: bytes) -> bool:
        """Finish a temp file beside the target, then hard-link it into place (fails if the target exists)."""
        p = self._path(path)
        if p.exists():
            return False
        tmp = _finished_temp(p, data)
        try:
            try:
                os.link(tmp, p)
            except FileExistsError:
                return False
            except OSError:  # a file system without hard links: O_EXCL claims, then the bytes
                try:
                    fd2 = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    return False
                with os.fdopen(fd2, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
            return True
        finally:
            _unlink(tmp)

    def list_sizes(self, prefix: str = "") -> dict[str, int]:
        """Keys of the files under the folder ``prefix`` with their sizes (temp files hidden)."""
        out: dict[str, int] = {}
        for full in self._files(prefix):
            try:
                out[full.relative_to(self.root).as_posix()] = full.stat().st_size
            except FileNotFoundError:  # removed while listing
                continue
        return out


def _finished_temp(p: Path, data: bytes) -> str:
    """A temp file beside ``p`` holding ``data``, flushed and fsynced (hidden from listings)."""
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}{_TMP_MARK}")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        _unlink(tmp)
        raise
    return tmp


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# --- S3 ---------------------------------------------------------------------------------------------------


def _retry_config() -> dict[str, Any]:
    """Botocore retries: standard mode with backoff; AWS_RETRY_MODE / AWS_MAX_ATTEMPTS (total) override."""
    return {
        "mode": os.environ.get("AWS_RETRY_MODE", "standard"),
        "total_max_attempts": int(os.environ.get("AWS_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS)),
    }


def _endpoint_url() -> str | None:
    """A custom endpoint from env (service-specific first); a profile's endpoint_url is left to botocore."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def _region(from_chain: str | None) -> str:
    """AWS_REGION first (botocore reads only AWS_DEFAULT_REGION), then the chain, else us-east-1."""
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or from_chain or "us-east-1"


# Clients are built once per process and AWS settings: a boto3 client costs ~0.2 s to build and an s3fs
# instance owns a connection pool. The cache key holds the env the AWS chain reads (in memory, never logged).
_AWS_ENV = (
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE", "AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS",
)  # fmt: skip
_CLIENTS: dict[tuple[Any, ...], Any] = {}
_CLIENTS_LOCK = threading.Lock()


def _settings_key(kind: str) -> tuple[Any, ...]:
    return (kind, os.getpid(), *(os.environ.get(name) for name in _AWS_ENV))


def _boto3_client() -> Any:
    """The boto3 S3 client for the current AWS settings (clients are thread-safe to share)."""
    key = _settings_key("boto3")
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            import boto3
            from botocore.config import Config

            session = boto3.session.Session()
            client = session.client(
                "s3",
                endpoint_url=_endpoint_url(),
                region_name=_region(session.region_name),
                config=Config(retries=_retry_config()),  # type: ignore[arg-type]
            )
            _CLIENTS[key] = client
            log.debug("S3 client for %s in %s", client.meta.endpoint_url, client.meta.region_name)
    return client


def _s3fs() -> Any:
    """The async s3fs filesystem for zarr, with the boto3 client's settings; used on zarr's event loop."""
    region = _boto3_client().meta.region_name
    key = _settings_key("s3fs")
    with _CLIENTS_LOCK:
        fs = _CLIENTS.get(key)
        if fs is None:
            import s3fs

            fs = s3fs.S3FileSystem(
                asynchronous=True,
                endpoint_url=_endpoint_url(),
                client_kwargs={"region_name": region},
                config_kwargs={"retries": _retry_config()},
                skip_instance_cache=True,  # fsspec's own cache could hand back an instance of another loop
                use_listings_cache=False,  # other workers write concurrently: never trust a stale listing
            )
            if not any(k[0] == "s3fs" for k in _CLIENTS):
                atexit.register(_close_s3fs_sessions)  # registered after zarr's hook, so it runs before it
            _CLIENTS[key] = fs
    return fs


def _close_s3fs_sessions() -> None:
    """Close s3fs's aiohttp sessions on zarr's loop at exit (otherwise aiohttp warns of unclosed sessions)."""
    import s3fs
    from zarr.core.sync import _get_loop

    for key, fs in list(_CLIENTS.items()):
        creator = getattr(fs, "_s3creator", None)
        if key[0] == "s3fs" and key[1] == os.getpid() and creator is not None:
            try:
                s3fs.S3FileSystem.close_session(_get_loop(), creator)
            except Exception:  # noqa: BLE001 - best effort at interpreter exit
                log.debug("could not close an s3fs session at exit", exc_info=True)


def _not_found(err: Exception) -> bool:
    code = str(getattr(err, "response", {}).get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound")  # a missing bucket is an error, never "absent"


class S3Store(Store):
    """An ``s3://bucket/prefix`` on any S3-compatible server: boto3 for objects, s3fs for zarr."""

    def __init__(self, bucket: str, prefix: str = "") -> None:
        if not bucket or "/" in bucket:
            raise VspInputError(f"S3 URI needs a bucket name: s3://{bucket}/{prefix}")
        self.bucket = bucket
        self.prefix = _clean_key(prefix, allow_empty=True)
        self.uri = f"s3://{_join(bucket, self.prefix)}"

    def _key(self, path: str, *, allow_empty: bool = False) -> str:
        return _join(self.prefix, _clean_key(path, allow_empty=allow_empty))

    @property
    def client(self) -> Any:
        """The boto3 S3 client for the current AWS settings (standard chain, shared within the process)."""
        return _boto3_client()

    def child(self, *parts: str) -> S3Store:
        """A store rooted at a longer prefix."""
        return S3Store(self.bucket, self._key(_join(*parts), allow_empty=True))

    def zarr_store(self, path: str = "") -> zarr.abc.store.Store:
        """A ``zarr.storage.FsspecStore`` on s3fs at ``bucket/prefix/path``."""
        from zarr.storage import FsspecStore

        return FsspecStore(_s3fs(), path=_join(self.bucket, self._key(path, allow_empty=True)))

    def exists(self, path: str) -> bool:
        """Whether an object has exactly this key (HEAD)."""
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(path))
        except ClientError as e:
            if _not_found(e):
                return False
            raise
        return True

    def read_bytes(self, path: str) -> bytes:
        """The object's bytes; FileNotFoundError naming the s3:// URI when missing."""
        from botocore.exceptions import ClientError

        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self._key(path))
        except ClientError as e:
            if _not_found(e):
                raise FileNotFoundError(f"no such key: {self.key_uri(path)}") from e
            raise
        return resp["Body"].read()

    def write_bytes(self, path: str, data: bytes) -> None:
        """One PUT: S3 makes the new object visible whole or not at all."""
        self.client.put_object(Bucket=self.bucket, Key=self._key(path), Body=io.BytesIO(data))
        log.debug("wrote %d bytes to %s", len(data), self.key_uri(path))

    def list(self, prefix: str = "") -> list[str]:
        """Store-relative keys of the objects under the folder ``prefix``, sorted."""
        return sorted(key for key, _size, _when in self._list_objects(prefix))

    def delete(self, path: str) -> None:
        """Remove the object; a missing key is fine (S3 semantics)."""
        self.client.delete_object(Bucket=self.bucket, Key=self._key(path))

    def list_sizes(self, prefix: str = "") -> dict[str, int]:
        """Keys of the objects under the folder ``prefix`` with their sizes (one paginated listing)."""
        return {k: size for k, size, _ in self._list_objects(prefix)}

    def _list_objects(self, prefix: str) -> list[tuple[str, int, Any]]:
        base = self._key(prefix, allow_empty=True)
        paginator = self.client.get_paginator("list_objects_v2")
        strip = len(self.prefix) + 1 if self.prefix else 0
        out = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=base + "/" if base else ""):
            for o in page.get("Contents", ()):
                out.append((o["Key"][strip:], int(o["Size"]), o["LastModified"]))
        return out

    def create_exclusive(self, path: str, data: bytes) -> bool:
        """A conditional PUT; on servers that ignore ``If-None-Match`` the earliest claim object wins."""
        if self.exists(path):
            return False
        if _conditional_writes(self):
            from botocore.exceptions import ClientError

            try:
                self.client.put_object(
                    Bucket=self.bucket, Key=self._key(path), Body=io.BytesIO(data), IfNoneMatch="*"
                )
            except ClientError as e:
                code = str(e.response.get("Error", {}).get("Code", ""))
                if code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                    return False
                raise
            return True
        return self._claim_by_listing(path, data)

    def _claim_by_listing(self, path: str, data: bytes) -> bool:
        """Fallback claim: write a claim named by the writer's clock, wait, list the claims; earliest wins.

        S3 lists are strongly consistent. Waiting ``VSP_S3_CLAIM_SETTLE_S`` (default 2 s) after the own claim
        is written lets every claim stamped earlier land before the listing (given clocks and PUT latencies
        within that margin), so every driver picks the same earliest claim. A driver that arrives after the
        winner finds the target or the winner's earlier claim, and loses.
        """
        claims = f"{_clean_key(path)}.claims"
        mine = f"{claims}/{time.time_ns():020d}-{uuid.uuid4().hex}"
        self.write_bytes(mine, data)
        time.sleep(float(os.environ.get("VSP_S3_CLAIM_SETTLE_S", "2")))
        listed = sorted(k for k, _size, _when in self._list_objects(claims))
        winner = listed[0] if listed else mine
        if winner != mine:
            if not self.exists(path):
                self.write_bytes(path, self.read_bytes(winner))  # the winner's bytes: idempotent
            return False
        self.write_bytes(path, data)
        return True


_CONDITIONAL: dict[tuple[Any, ...], bool] = {}


def _conditional_writes(store: S3Store) -> bool:
    """Whether the server honours ``If-None-Match: *`` (probed once per process, endpoint and bucket).

    ``VSP_S3_CONDITIONAL_WRITES=1`` or ``0`` skips the probe. The probe writes one object twice under
    ``.vsp-probe/`` at the bucket root and deletes it: a second write that succeeds means the server ignores
    the condition, and claims fall back to listing.
    """
    forced = os.environ.get("VSP_S3_CONDITIONAL_WRITES", "auto").strip().lower()
    if forced in ("1", "true", "yes"):
        return True
    if forced in ("0", "false", "no"):
        return False
    key = (_endpoint_url(), store.bucket, os.getpid())
    with _CLIENTS_LOCK:
        if key in _CONDITIONAL:
            return _CONDITIONAL[key]
    from botocore.exceptions import ClientError

    client = store.client
    probe = f".vsp-probe/{uuid.uuid4().hex}"
    supported = False
    try:
        client.put_object(Bucket=store.bucket, Key=probe, Body=b"1", IfNoneMatch="*")
        try:
            client.put_object(Bucket=store.bucket, Key=probe, Body=b"2", IfNoneMatch="*")
        except ClientError as e:
            supported = str(e.response.get("Error", {}).get("Code", "")) in ("PreconditionFailed", "412")
    except ClientError as e:
        code = str(e.response.get("Error", {}).get("Code", ""))
        if code not in ("NotImplemented", "501", "InvalidArgument", "400", "InvalidRequest"):
            raise
    finally:
        try:
            client.delete_object(Bucket=store.bucket, Key=probe)
        except ClientError:
            log.debug("could not delete the probe object %s", probe)
    if not supported:
        log.warning("s3://%s does not honour conditional writes; claims fall back to listing", store.bucket)
    with _CLIENTS_LOCK:
        _CONDITIONAL[key] = supported
    return supported


# --- one file by URI --------------------------------------------------------------------------------------


def _s3_object(uri: str) -> tuple[str, str]:
    """``(bucket, key)`` of ``s3://bucket/key``; VspInputError when it names no object."""
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket or not key or key.endswith("/"):
        raise VspInputError(f"{uri!r} is not an S3 object URI (expected s3://bucket/key)")
    return bucket, key


def _local_file(uri: str) -> str:
    """The path of a local ``uri`` (``file://`` allowed), checked to be a regular file before it is opened.

    A folder raises IsADirectoryError; a device (``/dev/zero``), pipe or socket is refused unread
    (VspInputError), since reading one would never end, or block; nothing there: FileNotFoundError.
    """
    if "://" in uri and not uri.startswith("file://"):
        raise VspInputError(f"unsupported URI {uri!r}: use a local path or s3://bucket/key")
    path = uri.removeprefix("file://")
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError) as e:
        raise FileNotFoundError(errno.ENOENT, "no such file", uri) from e
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, "is a folder, not a file", uri)
    if not stat.S_ISREG(mode):
        raise VspInputError(f"{uri}: not a regular file (a device, pipe or socket); remove it")
    return path


def read_uri(uri: str | os.PathLike[str]) -> bytes:
    """The whole file at a local path (or ``file://``) or an ``s3://bucket/key`` object.

    S3 objects are read with the stores' shared boto3 client (endpoint, region, credentials and retries from
    the AWS environment, see the module docstring).

    Raises:
        FileNotFoundError: nothing at ``uri`` (the message names it).
        IsADirectoryError: a local folder.
        VspInputError: not an object URI, another scheme, or a device, pipe or socket.
    """
    with open_uri(uri) as fh:
        return fh.read()


def open_uri(uri: str | os.PathLike[str]) -> BinaryIO:
    """A binary stream of the file at ``uri`` (as :func:`read_uri`), for files too big to read whole.

    The caller closes it (``with open_uri(uri) as fh``). Raises as :func:`read_uri`.
    """
    text = os.fspath(uri)
    if text.startswith("s3://"):
        from botocore.exceptions import ClientError

        bucket, key = _s3_object(text)
        try:
            return _boto3_client().get_object(Bucket=bucket, Key=key)["Body"]
        except ClientError as e:
            if _not_found(e):
                raise FileNotFoundError(errno.ENOENT, "no such key", text) from e
            raise
    path = _local_file(text)
    try:
        return open(path, "rb")  # noqa: SIM115 - the caller owns the stream
    except FileNotFoundError as e:
        raise FileNotFoundError(errno.ENOENT, "no such file", text) from e


def open_store(uri: str | os.PathLike[str], *, create: bool = True) -> Store:
    """Turn ``s3://bucket/prefix`` or a local path into a :class:`Store`.

    ``create=False`` is for read-only commands (`vsp status`, `vsp report`): a missing local folder is not
    created (reads then find nothing).
    """
    text = os.fspath(uri)
    if text.startswith("s3://"):
        bucket, _, prefix = text[len("s3://") :].partition("/")
        return S3Store(bucket, prefix)
    if "://" in text and not text.startswith("file://"):
        raise VspInputError(f"unsupported store URI {text!r}: use a local path or s3://bucket/prefix")
    return LocalFileStore(text.removeprefix("file://"), create=create)


def _open_read_only(uri: str) -> Store:
    return open_store(uri, create=False)
