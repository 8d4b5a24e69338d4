"""Connect to Ray: an embedded local instance by default, or an existing cluster (`auto`, `ray://...`)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import ray

from cluster import auth
from cluster.local import HOST, LOOPBACK_ENV

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _loopback_node() -> Iterator[None]:
    """While an embedded Ray starts: keep 127.0.0.1 as its node address, in this process and its children.

    Ray replaces a loopback node address with the machine's network address (and then binds its gRPC
    servers on every interface and some agents on that address) unless clusters are "disabled", as on
    macOS / Windows. The processes ``ray.init`` starts (GCS, raylet, agents; workers through the raylet)
    inherit LOOPBACK_ENV; this process goes back to its own settings afterwards, so that a later
    ``init_ray(address)`` joins a real cluster with the real address.
    """
    from ray._private import ray_constants

    saved_env = {k: os.environ.get(k) for k in LOOPBACK_ENV}
    saved_flag = ray_constants.ENABLE_RAY_CLUSTER
    os.environ.update(LOOPBACK_ENV)
    ray_constants.ENABLE_RAY_CLUSTER = False  # read at import from the env; services reads it at call time
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _token_auth_on() -> None:
    """Token authentication for an embedded Ray, whatever ``$RAY_AUTH_MODE`` says; a token only we can read.

    Without a token anywhere (``$RAY_AUTH_TOKEN``, ``$RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``) Ray
    would write ``~/.ray/auth_token`` with the umask's permissions (usually world-readable): write it here
    first, mode 0600. An existing default file readable by others is narrowed to 0600.
    """
    if os.environ.get(auth.MODE_ENV, "").lower() != "token":
        if os.environ.get(auth.MODE_ENV):
            log.warning("embedded Ray: %s=%s ignored, token authentication stays on",
                        auth.MODE_ENV, os.environ[auth.MODE_ENV])  # fmt: skip
        os.environ[auth.MODE_ENV] = "token"
        with contextlib.suppress(ImportError, AttributeError):
            from ray._raylet import Config

            Config.initialize("")  # Ray caches its config: let this process see token mode (as Ray does)
    if os.environ.get(auth.TOKEN_ENV) or os.environ.get(auth.TOKEN_PATH_ENV):
        return
    path = auth.default_token_path()
    if not path.is_file():
        auth.write_token(path, replace=False)  # a driver starting beside us may write it first: keep that one
        with contextlib.suppress(ImportError, AttributeError):
            from ray._raylet import AuthenticationTokenLoader

            AuthenticationTokenLoader.instance().reset_cache()
    elif not auth.owner_only(path):
        log.warning("%s was readable by others: narrowed to 0600", path)
        path.chmod(0o600)


def init_ray(address: str | None = None, num_cpus: int | None = None) -> dict[str, float]:
    """Start or join Ray and return the cluster's resources.

    ``address=None`` starts an embedded local Ray (no dashboard, quiet logs) sized to this machine, every
    listener of it on 127.0.0.1 and token authentication on; ``"auto"`` joins the cluster this machine
    belongs to; ``"ray://host:10001"`` connects a client.
    """
    if not ray.is_initialized():
        kwargs: dict = {"ignore_reinit_error": True, "log_to_driver": True}
        if address is None:
            kwargs.update(include_dashboard=False, num_cpus=num_cpus or os.cpu_count() or 1)
            kwargs["_node_ip_address"] = HOST
            # Workers import vsp from the same environment; keep them quiet about metrics.
            kwargs["configure_logging"] = True
            kwargs["logging_level"] = logging.WARNING
            _token_auth_on()
            with _loopback_node():
                ray.init(**kwargs)
        else:
            kwargs["address"] = address
            ray.init(**kwargs)
    res = ray.cluster_resources()
    log.info("ray resources: %s", {k: v for k, v in res.items() if not k.startswith("node:")})
    return res


def has_gpus() -> bool:
    """Whether the connected cluster offers at least one GPU."""
    return ray.cluster_resources().get("GPU", 0) >= 1


def device_kind() -> str:
    """``cuda`` where the connected cluster offers a GPU, else ``cpu``."""
    return "cuda" if has_gpus() else "cpu"
