"""The cluster definitions parse, ask for the right resources, run the right image and entry point."""

import importlib.util
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from vsp.config import RunConfig

REPO = Path(__file__).resolve().parents[2]
GPU_FAMILIES = ("g4dn.", "g5.", "g6.", "g6e.", "p3.", "p4d.", "p4de.", "p5.")


def ray_version() -> str:
    from importlib import metadata

    return metadata.version("ray")


def images_in(obj) -> list[str]:
    """Every `image:` value anywhere in a parsed manifest."""
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "image" and isinstance(v, str):
                out.append(v)
            else:
                out += images_in(v)
    elif isinstance(obj, list):
        for v in obj:
            out += images_in(v)
    return out


def is_worker_image(image: str) -> bool:
    return re.fullmatch(r"([\w.-]+(:\d+)?/)*vsp-worker:[\w.-]+", image) is not None


@pytest.fixture(scope="module")
def aws():
    return yaml.safe_load((REPO / "cluster" / "aws.yaml").read_text())


def test_aws_cpu_head_and_autoscaling_gpu_workers(aws):
    nodes = aws["available_node_types"]
    head = nodes[aws["head_node_type"]]
    assert head["resources"] == {"CPU": 0, "GPU": 0}  # the head coordinates, it runs no tasks
    assert not head["node_config"]["InstanceType"].startswith(GPU_FAMILIES)
    gpu = [n for name, n in nodes.items() if name != aws["head_node_type"]]
    assert len(gpu) == 1
    gpu = gpu[0]
    assert gpu["node_config"]["InstanceType"].startswith(GPU_FAMILIES)
    assert gpu["resources"]["GPU"] >= 1 and gpu["resources"]["CPU"] >= 2
    assert gpu["min_workers"] == 0 < gpu["max_workers"] <= aws["max_workers"]  # scales from zero
    assert aws["idle_timeout_minutes"] > 0
    for n in nodes.values():
        assert "IamInstanceProfile" in n["node_config"]  # S3 through the role, never keys


def test_aws_runs_the_worker_image_and_starts_ray(aws):
    assert is_worker_image(aws["docker"]["image"])
    assert any("--shm-size" in o for o in aws["docker"]["run_options"])
    head_cmd = " ".join(aws["head_start_ray_commands"])
    assert "ray start --head" in head_cmd and "--num-cpus=0" in head_cmd
    assert "--dashboard-host=127.0.0.1" in head_cmd and "--autoscaling-config" in head_cmd
    assert "--address=$RAY_HEAD_IP:6379" in " ".join(aws["worker_start_ray_commands"])
    assert any("import vsp" in c for c in aws["setup_commands"])


@pytest.fixture(scope="module")
def raycluster():
    return yaml.safe_load((REPO / "cluster" / "k8s" / "raycluster.yaml").read_text())


def check_cluster_spec(spec: dict) -> None:
    assert spec["rayVersion"] == ray_version()  # the image's Ray must be the submitter's Ray
    assert spec["enableInTreeAutoscaling"] is True
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    head_res = head["template"]["spec"]["containers"][0]["resources"]
    assert "nvidia.com/gpu" not in head_res.get("limits", {})
    (group,) = spec["workerGroupSpecs"]
    assert group["minReplicas"] == 0 < group["maxReplicas"]
    (container,) = group["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert any(t["key"] == "nvidia.com/gpu" for t in group["template"]["spec"]["tolerations"])
    assert any(v["mountPath"] == "/dev/shm" for v in container["volumeMounts"])
    images = images_in(spec)
    assert images and all(is_worker_image(i) for i in images) and len(set(images)) == 1
    for pod in [head["template"]["spec"], group["template"]["spec"]]:
        assert pod["serviceAccountName"] == "vsp-ray"  # S3 through IRSA / Pod Identity, never keys


def test_kuberay_raycluster(raycluster):
    assert raycluster["apiVersion"] == "ray.io/v1" and raycluster["kind"] == "RayCluster"
    check_cluster_spec(raycluster["spec"])


def test_kuberay_rayjob_runs_the_pipeline_on_its_config():
    docs = list(yaml.safe_load_all((REPO / "cluster" / "k8s" / "rayjob.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"ConfigMap", "RayJob"}
    job = kinds["RayJob"]
    assert job["apiVersion"] == "ray.io/v1"
    spec = job["spec"]
    assert spec["entrypoint"] == "python -m jobs.pipeline /config/run.yaml"
    assert importlib.util.find_spec("jobs.pipeline") is not None
    check_cluster_spec(spec["rayClusterSpec"])
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    mount = head["containers"][0]["volumeMounts"][0]
    assert mount["mountPath"] == "/config"
    volume = next(v for v in head["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == kinds["ConfigMap"]["metadata"]["name"]
    cfg = RunConfig.from_dict(yaml.safe_load(kinds["ConfigMap"]["data"]["run.yaml"]))
    assert cfg.stages == ("extract", "decode") and cfg.store.startswith("s3://")
    assert cfg.images.startswith("s3://") and cfg.norms.path.startswith("s3://")


def test_dockerfile_builds_vsp_on_the_ray_gpu_image():
    text = (REPO / "infra" / "Dockerfile").read_text()
    version = re.search(r"^ARG RAY_VERSION=(\S+)$", text, re.M).group(1)
    assert version == ray_version()
    assert re.search(r"^FROM rayproject/ray:\$\{RAY_VERSION\}-py311-gpu$", text, re.M)
    for d in ("vsp", "cluster", "jobs"):
        assert re.search(rf"^COPY .* {d} \./{d}$", text, re.M)
    assert re.search(r"pip install --no-cache-dir \.\s", text)
    ignore = (REPO / "infra" / "Dockerfile.dockerignore").read_text().split()
    assert ignore[ignore.index("*") :][:1] == ["*"] and {
        "!vsp/",
        "!cluster/",
        "!jobs/",
        "!pyproject.toml",
    } <= set(ignore)


def test_iam_policy_is_least_privilege():
    policy = json.loads((REPO / "infra" / "aws" / "iam-policy.json").read_text())
    actions = set()
    for st in policy["Statement"]:
        assert st["Effect"] == "Allow"
        acts = [st["Action"]] if isinstance(st["Action"], str) else st["Action"]
        res = [st["Resource"]] if isinstance(st["Resource"], str) else st["Resource"]
        assert all("*" not in a for a in acts)
        assert all(r.startswith("arn:aws:s3:::my-vsp-bucket") for r in res)
        if set(acts) & {"s3:PutObject", "s3:DeleteObject"}:
            assert res == ["arn:aws:s3:::my-vsp-bucket/runs/*"]  # writes only under runs/
        actions |= set(acts)
    assert actions == {
        "s3:ListBucket",
        "s3:GetObject",
        "s3:PutObject",
        "s3:DeleteObject",
        "s3:AbortMultipartUpload",
    }


def test_seaweedfs_script_binds_loopback_only():
    script = REPO / "infra" / "seaweedfs" / "start.sh"
    text = script.read_text()
    assert "-ip.bind=127.0.0.1" in text and "-ip=127.0.0.1" in text
    subprocess.run(["bash", "-n", str(script)], check=True)
    example = json.loads((REPO / "infra" / "seaweedfs" / "s3.json.example").read_text())
    assert {i["name"] for i in example["identities"]} == {"vsp-admin", "vsp-runner"}


def test_local_cluster_command_lines_stay_on_loopback(tmp_path, monkeypatch):
    """Without starting anything: every process the script launches is told to use 127.0.0.1."""
    from cluster import local

    launched = []
    monkeypatch.setattr(local, "_spawn", lambda cmd, log, env, cwd: launched.append((cmd, env)) or 999999)
    monkeypatch.setattr(local, "_wait_nodes", lambda *a, **k: None)
    monkeypatch.setattr(local, "_end_session", lambda *a, **k: None)
    c = local.start(
        tmp_path, s3=False, gcs_port=local.free_ports(1)[0], dashboard_port=local.free_ports(1)[0]
    )
    (head, head_env), (worker, worker_env) = launched
    assert "--head" in head and "--dashboard-host=127.0.0.1" in head and "--node-ip-address=127.0.0.1" in head
    assert "--num-cpus=0" in head and "--block" in head
    assert f"--address={c.ray_address}" in worker and "--node-ip-address=127.0.0.1" in worker
    assert c.ray_address.startswith("127.0.0.1:") and c.dashboard_url.startswith("http://127.0.0.1:")
    for env in (head_env, worker_env):
        assert env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0" and env["RAY_AUTH_MODE"] == "token"
        assert env["RAY_AUTH_TOKEN_PATH"] == str(c.token_path)
    assert c.env()["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0" and c.env()["RAY_AUTH_MODE"] == "token"
    assert c.token_path.stat().st_mode & 0o777 == 0o600  # the token: its owner's only
