"""Connect to Ray: an embedded local instance by default, or an existing cluster (`auto`, `ray://...`)."""

from __future__ import annotations

import logging
import os

import ray

log = logging.getLogger(__name__)


def init_ray(address: str | None = None, num_cpus: int | None = None) -> dict[str, float]:
    """Start or join Ray and return the cluster's resources.

    ``address=None`` starts an embedded local Ray (no dashboard, quiet logs) sized to this machine;
    ``"auto"`` joins the cluster this machine belongs to; ``"ray://host:10001"`` connects a client.
    """
    if not ray.is_initialized():
        kwargs: dict = {"ignore_reinit_error": True, "log_to_driver": True}
        if address is None:
            kwargs.update(include_dashboard=False, num_cpus=num_cpus or os.cpu_count() or 1)
            # Workers import vsp from the same environment; keep them quiet about metrics.
            kwargs["configure_logging"] = True
            kwargs["logging_level"] = logging.WARNING
        else:
            kwargs["address"] = address
        ray.init(**kwargs)
    res = ray.cluster_resources()
    log.info("ray resources: %s", {k: v for k, v in res.items() if not k.startswith("node:")})
    return res


def has_gpus() -> bool:
    """Whether the connected cluster offers at least one GPU."""
    return ray.cluster_resources().get("GPU", 0) >= 1
