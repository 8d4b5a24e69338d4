"""The one executor for Ray task fan-out, beside the extraction actor pool (``cluster.extract``).

A stage never imports Ray: it hands its units to ``ctx.executor`` (``vsp.stage.Executor``). The runner
(``jobs.runner``) decides once whether that is :class:`vsp.stage.LocalExecutor` or this one. Here each unit
is a Ray task with the stage's declared resources (a GPU share only where the cluster has GPUs), retried on
failure (a unit writes its data before its marker, so a retry redoes only that unit), and results are
collected as they finish, waiting in short slices so that SIGTERM reaches the driver (``cluster.waiting``).
Ray is joined on first use, so a rerun with nothing to do never starts it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import ray

from cluster.runtime import device_kind, has_gpus
from cluster.waiting import get, wait_any
from vsp.stage import Resources, pick_device

MAX_RETRIES = 3
MAX_IN_FLIGHT = 256  # tasks submitted ahead of results: bounded, so a huge plan does not flood the scheduler


def _run(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


def worker_device() -> str:
    """Inside a task: torch's threads set to the CPUs Ray gave it; the device it may use (its GPU share)."""
    import torch

    cpus = int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))
    torch.set_num_threads(max(1, cpus))
    return pick_device()


def gather(refs: dict[Any, int], total: int, progress: Callable[[int, int, int], None] | None = None) -> int:
    """Wait for every task (short slices: SIGTERM is handled), summing their counts; progress per unit.

    ``refs`` maps each task to the number of units it carries; ``total`` is the number of units.
    """
    done = count = 0
    while refs:
        ref = wait_any(refs)
        done += refs.pop(ref)
        count += get(ref)
        if progress:
            progress(done, total, count)
    return count


class RayExecutor:
    """Runs units as Ray tasks; ``connect`` joins (or starts) Ray on first use."""

    distributed = True

    def __init__(self, connect: Callable[[], None]) -> None:
        self._connect = connect
        self.connected = False

    def connect(self) -> None:
        """Join the cluster (once)."""
        if not self.connected:
            self._connect()
            self.connected = True

    def device_kind(self) -> str:
        """``cuda`` where the cluster offers a GPU, else ``cpu`` (joins the cluster)."""
        self.connect()
        return device_kind()

    def _options(self, resources: Resources) -> dict[str, Any]:
        opts: dict[str, Any] = {
            "num_cpus": resources.cpus,
            "max_retries": MAX_RETRIES,
            "retry_exceptions": True,
        }
        if resources.gpus and has_gpus():  # a GPU share only where the cluster has GPUs, else the CPU
            opts["num_gpus"] = resources.gpus
        return opts

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any], resources: Resources) -> Iterator[Any]:
        """``fn(item)`` as one task per item, at most MAX_IN_FLIGHT at a time; results as they finish."""
        items = list(items)
        if not items:
            return
        self.connect()
        task = ray.remote(_run).options(**self._options(resources))
        fn_ref = ray.put(fn)
        queue = iter(items)
        refs: set[ray.ObjectRef] = set()
        for item in queue:
            refs.add(task.remote(fn_ref, item))
            if len(refs) >= MAX_IN_FLIGHT:
                break
        while refs:
            ref = wait_any(refs)
            refs.discard(ref)
            yield ray.get(ref)
            nxt = next(queue, None)
            if nxt is not None:
                refs.add(task.remote(fn_ref, nxt))

    def call(self, fn: Callable[..., Any], *args: Any, resources: Resources) -> Any:
        """``fn(*args)`` as one task (waits in slices)."""
        self.connect()
        return get(ray.remote(_run).options(**self._options(resources)).remote(fn, *args))

    def remote(self, name: str) -> Callable[..., Any]:
        """A stage's own distributed driver, ``"cluster.extract:run_extraction_ray"``."""
        module, _, attr = name.partition(":")
        if not module.startswith("cluster."):
            raise ValueError(f"{name}: distributed drivers live in cluster/")
        return getattr(importlib.import_module(module), attr)
