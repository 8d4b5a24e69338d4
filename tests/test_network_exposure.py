"""Network and job exposure: what the Ray processes listen on, who may use the Jobs API, what a job ships.

- the embedded Ray of every stage (cluster/runtime.py ``init_ray()`` without an address) listens on loopback
  only and keeps token authentication on, whatever the caller's environment says;
- the local dev cluster (cluster/local.py) refuses Jobs API calls without its token, and ``vsp submit``
  (which sends it) still works;
- ``vsp submit`` ships an allowlist (vsp/, cluster/, jobs/, pyproject.toml), never the secrets that sit in
  the project folder;
- the dependency floors exclude the releases with known code-execution bugs in what vsp relies on.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# A driver as every stage starts it (init_ray() without an address), with a task and an actor running; it
# prints the TCP listeners of itself and of every process below it (GCS, raylet, agents, workers).
DRIVER = r"""
import json, os, sys, time
import ray
import psutil  # ray[default] bundles it; importable once ray is imported
from cluster.runtime import init_ray

init_ray(None, num_cpus=1)

@ray.remote(num_cpus=0)
class Holder:
    def pid(self):
        return os.getpid()

@ray.remote(num_cpus=0)
def work():
    return os.getpid()

holder = Holder.remote()
worker_pids = sorted({ray.get(holder.pid.remote()), ray.get(work.remote())})
time.sleep(1.0)  # agents that bind late
me = psutil.Process()
rows = []
for p in [me, *me.children(recursive=True)]:
    try:
        name = p.name()
        conns = getattr(p, "net_connections", getattr(p, "connections", None))(kind="tcp")
        env = p.environ()
    except psutil.Error:
        continue
    for c in conns:
        if c.status == psutil.CONN_LISTEN:
            rows.append({"pid": p.pid, "name": name, "ip": c.laddr.ip, "port": c.laddr.port,
                         "auth_mode": env.get("RAY_AUTH_MODE")})
print("RESULT " + json.dumps({"listeners": rows, "workers": worker_pids, "driver": me.pid}), flush=True)
ray.shutdown()
"""


def is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def test_is_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("::ffff:127.0.0.1")
    assert not any(is_loopback(a) for a in ("0.0.0.0", "::", "192.0.2.2", "::ffff:10.0.0.1"))


@pytest.mark.timeout(180)
def test_embedded_ray_listens_on_loopback_only_with_token_auth(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    # a caller that disabled auth (the old `python -m cluster.local env` did) and has no token anywhere
    env |= {"HOME": str(home), "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", DRIVER], cwd=REPO, env=env, capture_output=True, text=True, timeout=150
    )
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert out.returncode == 0 and line, out.stdout[-3000:] + out.stderr[-3000:]
    res = json.loads(line.removeprefix("RESULT "))
    rows = res["listeners"]
    names = {r["name"] for r in rows}
    # the check saw the processes that matter: GCS, raylet, the driver and the workers, the agents
    assert {"gcs_server", "raylet"} <= names, names
    pids = {r["pid"] for r in rows}
    assert res["driver"] in pids and set(res["workers"]) <= pids, (res, rows)
    assert any("Agent" in n for n in names), names
    exposed = [r for r in rows if not is_loopback(r["ip"])]
    assert not exposed, "Ray listeners beyond loopback:\n" + "\n".join(
        f"  {r['name']} (pid {r['pid']}) on {r['ip']}:{r['port']}" for r in exposed
    )
    # token authentication stays on in every Ray process, and the token Ray generated is the owner's alone
    gcs = [r for r in rows if r["name"] in ("gcs_server", "raylet")]
    assert all(r["auth_mode"] == "token" for r in gcs), gcs
    token = home / ".ray" / "auth_token"
    assert token.is_file() and token.stat().st_mode & 0o777 == 0o600, oct(token.stat().st_mode)


# --- the local dev cluster: token authentication on ---------------------------------------------------------


def write_config(path: Path, world, store: str) -> Path:
    import yaml

    doc = {
        "images": str(world.images_root),
        "store": store,
        "stages": ["extract"],
        "extract": {"models": ["alexnet"], "weights": "random", "unit_size": 2},
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def http(method: str, url: str, body: dict | None = None, headers: dict | None = None) -> int:
    """Status code of a plain urllib request (no Ray client, so no token unless given)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json",
                                                                         **(headers or {})})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback only
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


@pytest.fixture
def auth_cluster(tmp_path_factory, monkeypatch):
    """cluster/local.py's head + worker (no S3: the store is a local folder) on free 127.0.0.1 ports."""
    from cluster import local

    gcs, dash = local.free_ports(2)
    root = tmp_path_factory.mktemp("auth-cluster")
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    c = local.start(root, worker_cpus=1, s3=False, gcs_port=gcs, dashboard_port=dash, timeout=150)
    try:
        yield c
    finally:
        pids = list(c.pids.values())
        local.stop(root)
        assert not [p for sid in pids for p in local._session_members(sid)], "processes left after stop"
        assert not c.token_path.exists(), "stop leaves no token behind"


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_local_cluster_refuses_jobs_api_calls_without_its_token(auth_cluster, tmp_path, monkeypatch, capsys):
    from typer.testing import CliRunner

    from cluster import jobs_client, local
    from vsp.cli import app
    from vsp.data.synthetic import generate_world

    c = auth_cluster
    # the token: a file of the cluster's state dir that only its owner can read
    assert c.token_path.parent == Path(c.dir) and c.token_path.stat().st_mode & 0o777 == 0o600
    token = c.token()
    assert token and len(token) >= 32
    # `python -m cluster.local env` exports where it is (not the token itself), and token mode
    assert local.main(["--dir", c.dir, "env"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "unset RAY_AUTH_TOKEN"
    assert "export RAY_AUTH_MODE=token" in lines and f"export RAY_AUTH_TOKEN_PATH={c.token_path}" in lines
    assert not any(token in ln for ln in lines)

    api = f"{c.dashboard_url}/api/jobs/"
    pwned = tmp_path / "pwned"
    job = {"entrypoint": f"touch {pwned}", "runtime_env": {}}
    # no token: refused (401), for reads and for submissions; a wrong token: refused (403)
    assert http("GET", api) == 401
    assert http("POST", api, job) == 401
    assert http("POST", api, job, {"Authorization": "Bearer " + "0" * 64}) == 403
    assert http("GET", f"{c.dashboard_url}/api/v0/nodes?limit=10") == 401
    assert http("GET", api, headers={"Authorization": f"Bearer {token}"}) == 200
    time.sleep(1)
    assert not pwned.exists()
    st = local.status(c.dir)  # the script's own health checks send the token
    assert st["up"] and st["ray_nodes"] == 2 and st["loopback_only"], st

    # `vsp submit`, `vsp status`, `vsp logs` with the environment of `python -m cluster.local env`
    for k, v in c.env().items():
        monkeypatch.setenv(k, v)
    world = generate_world(tmp_path / "world", n_concepts=4, images_per_concept=1, seed=0)
    store = tmp_path / "store"
    cfg = write_config(tmp_path / "run.yaml", world, str(store))
    runner = CliRunner()
    res = runner.invoke(app, ["submit", "--address", c.dashboard_url, str(cfg)])
    assert res.exit_code == 0, res.output
    sid = res.stdout.strip().splitlines()[-1]
    final = jobs_client.wait(c.dashboard_url, sid, timeout=300)
    logs = runner.invoke(app, ["logs", sid, "--address", c.dashboard_url]).stdout
    assert final == "SUCCEEDED", logs
    assert "extract: 2 units" in logs, logs
    status = runner.invoke(app, ["status", sid, "--address", c.dashboard_url])
    assert status.exit_code == 0 and f"{sid}: SUCCEEDED" in status.stdout

    # the same client without the token is refused, saying so
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    res = runner.invoke(app, ["status", sid, "--address", c.dashboard_url])
    assert res.exit_code != 0


def test_local_cluster_token_file_and_env_without_starting_ray(tmp_path, monkeypatch):
    """The token is written 0600 before any Ray process starts, and every Ray process is told to use it."""
    from cluster import local

    monkeypatch.setenv("RAY_AUTH_TOKEN", "a-token-from-elsewhere")  # must not override the cluster's file
    launched = []

    def spawn(cmd, log, env, cwd):
        mode = (tmp_path / "auth_token").stat().st_mode & 0o777
        launched.append((cmd, env, mode))
        return 999999

    monkeypatch.setattr(local, "_spawn", spawn)
    monkeypatch.setattr(local, "_wait_nodes", lambda *a, **k: None)
    monkeypatch.setattr(local, "_end_session", lambda *a, **k: None)
    c = local.start(tmp_path, s3=False, env={"RAY_AUTH_MODE": "disabled"}, **dict(
        zip(("gcs_port", "dashboard_port"), local.free_ports(2), strict=True)))  # fmt: skip
    assert len(launched) == 2
    for _, env, mode in launched:
        assert mode == 0o600
        assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN_PATH"] == str(c.token_path)
        assert "RAY_AUTH_TOKEN" not in env
    assert c.env()["RAY_AUTH_MODE"] == "token" and c.env()["RAY_AUTH_TOKEN_PATH"] == str(c.token_path)
    first = c.token()
    local.stop(tmp_path)
    assert not c.token_path.exists()
    c2 = local.start(tmp_path, s3=False, **dict(
        zip(("gcs_port", "dashboard_port"), local.free_ports(2), strict=True)))  # fmt: skip
    assert c2.token() and c2.token() != first  # a fresh token per start
    local.stop(tmp_path)


def test_jobs_client_sends_the_token_of_the_environment(tmp_path, monkeypatch):
    from cluster import auth, jobs_client

    seen = {}

    class Client:
        def __init__(self, address, headers=None, **kw):
            seen["headers"] = headers

    monkeypatch.setattr(jobs_client, "JobSubmissionClient", Client)
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token
    jobs_client.client("http://127.0.0.1:8265")
    assert not seen["headers"]
    path = tmp_path / "tok"
    auth.write_token(path, "file-token")
    assert path.stat().st_mode & 0o777 == 0o600
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(path))
    jobs_client.client("http://127.0.0.1:8265")
    assert seen["headers"] == {"Authorization": "Bearer file-token"}
    monkeypatch.setenv("RAY_AUTH_TOKEN", "env-token")  # Ray's precedence: the variable, then the file
    jobs_client.client("http://127.0.0.1:8265")
    assert seen["headers"] == {"Authorization": "Bearer env-token"}
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    jobs_client.client("http://127.0.0.1:8265")
    assert not seen["headers"]
    # a token file another process created first is kept, not replaced
    assert auth.write_token(path, "second", replace=False) == "file-token" and auth.owner_only(path)
    assert auth.write_token(tmp_path / "new" / "tok", "x", replace=False) == "x"
    assert auth.owner_only(tmp_path / "new" / "tok") and not list(tmp_path.glob("**/.*.tmp"))


# --- what `vsp submit` ships ------------------------------------------------------------------------------

SECRETS = {
    ".env": "AWS_SECRET_ACCESS_KEY=topsecret\n",
    ".netrc": "machine example.com login me password topsecret\n",
    "deploy.pem": "-----BEGIN PRIVATE KEY-----\ntopsecret\n",
    ".aws/credentials": "[default]\naws_secret_access_key = topsecret\n",
    "vsp/.env": "TOKEN=topsecret\n",
    "cluster/id_ed25519.pem": "topsecret\n",
    "jobs/.aws/credentials": "topsecret\n",
    "vsp/.netrc": "topsecret\n",
    "notes/secrets.py": "KEY = 'topsecret'\n",
    "tests/test_x.py": "KEY = 'topsecret'\n",
    "demo-run/features.zarr/zarr.json": "{}\n",
    "vsp/__pycache__/x.cpython-311.pyc": "topsecret",
}


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A copy of this project's packages and pyproject.toml, with secrets planted in and around them."""
    import shutil

    from cluster import jobs_client

    root = tmp_path / "project"
    for pkg in ("vsp", "cluster", "jobs"):
        shutil.copytree(REPO / pkg, root / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(REPO / "pyproject.toml", root / "pyproject.toml")
    (root / "README.md").write_text("readme\n")
    for rel, text in SECRETS.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    monkeypatch.setattr(jobs_client, "PROJECT_ROOT", root)
    return root


def uploaded_files(working_dir: str, excludes=()) -> set[str]:
    """The files of the package Ray builds from ``working_dir`` (what it would upload), by Ray's zipper."""
    import zipfile

    from ray._private.runtime_env.packaging import create_package

    target = Path(working_dir).parent / "pkg.zip"
    create_package(str(working_dir), target, include_gitignore=True, excludes=list(excludes))
    with zipfile.ZipFile(target) as z:
        return {n for n in z.namelist() if not n.endswith("/")}


def expected_files(root: Path) -> set[str]:
    out = {"pyproject.toml"}
    for pkg in ("vsp", "cluster", "jobs"):
        for p in (root / pkg).rglob("*"):
            rel = p.relative_to(root)
            if (
                p.is_file()
                and p.suffix in (".py", ".yaml", ".sh")
                and not any(s.startswith(".") or s == "__pycache__" for s in rel.parts)
            ):
                out.add(rel.as_posix())
    return out


def test_vsp_submit_ships_an_allowlist_never_the_secrets_in_the_project(project, tmp_path, monkeypatch):
    from cluster import jobs_client
    from vsp.config import ENV_VAR, RunConfig

    cfg = RunConfig.from_dict({"images": "s3://b/images/", "store": "s3://b/runs/r1", "stages": ["extract"]})
    seen = {}

    class Client:
        def submit_job(self, entrypoint, runtime_env, submission_id, metadata):
            seen["env"] = runtime_env
            seen["files"] = uploaded_files(runtime_env["working_dir"], runtime_env.get("excludes", ()))
            seen["dir"] = runtime_env["working_dir"]
            return submission_id

    monkeypatch.setattr(jobs_client, "client", lambda address: Client())
    sid = jobs_client.submit("http://127.0.0.1:8265", cfg)
    files = seen["files"]
    assert files == expected_files(project), sorted(files ^ expected_files(project))
    assert {"vsp/cli/__init__.py", "jobs/pipeline.py", "cluster/local.py", "cluster/k8s/rayjob.yaml"} <= files
    leaked = [rel for rel in SECRETS if rel in files]
    assert not leaked, leaked
    assert not [n for n in files if n.endswith((".pem", ".pyc", "README.md")) or "/." in "/" + n]
    assert not Path(seen["dir"]).exists()  # the staging folder is gone once the upload is done
    env = seen["env"]
    assert RunConfig.from_dict(json.loads(env["env_vars"][ENV_VAR])).to_dict() == cfg.to_dict()
    assert env["env_vars"]["VSP_SUBMISSION_ID"] == sid
    assert not any("AWS_" in k for k in env["env_vars"])

    # --installed: nothing is shipped at all
    monkeypatch.setattr(
        Client, "submit_job", lambda self, entrypoint, runtime_env, submission_id, metadata: seen.update(
            installed=runtime_env) or submission_id)  # fmt: skip
    jobs_client.submit("http://127.0.0.1:8265", cfg, working_dir=False)
    assert "working_dir" not in seen["installed"]


def test_staged_project_skips_symlinks_out_of_the_tree(project, tmp_path):
    from cluster import jobs_client

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "leak.py").write_text("KEY = 'topsecret'\n")
    (project / "vsp" / "linked").symlink_to(outside, target_is_directory=True)
    (project / "vsp" / "linked_file.py").symlink_to(outside / "leak.py")
    with jobs_client.staged_project() as staged:
        names = {p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file()}
    assert not [n for n in names if "linked" in n]
    assert names == expected_files(project) - {"vsp/linked_file.py"}


# --- dependency floors ------------------------------------------------------------------------------------


def test_dependency_floors_exclude_known_code_execution_bugs():
    import tomllib
    from importlib import metadata

    from packaging.requirements import Requirement

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    reqs = {Requirement(d).name: Requirement(d) for d in deps}
    # bypassable torch.load(weights_only=True) before torch 2.10 (torchvision 0.25 is its pair); pyarrow
    # 14.0.0 unpickles extension types from Parquet; Ray has no token authentication before 2.52
    bad = {"torch": "2.9.1", "torchvision": "0.24.1", "pyarrow": "14.0.0", "ray": "2.51.0"}
    good = {"torch": "2.10.0", "torchvision": "0.25.0", "pyarrow": "14.0.1", "ray": "2.52.0"}
    for name in bad:
        spec = reqs[name].specifier
        assert not spec.contains(bad[name], prereleases=True), (name, str(spec))
        assert spec.contains(good[name]), (name, str(spec))
        installed = metadata.version(name).split("+")[0]
        assert spec.contains(installed), (name, installed, str(spec))  # the tested environment qualifies
