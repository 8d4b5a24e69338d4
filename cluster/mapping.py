"""Ray fan-out of the zero-shot mapping grid (embedding x mapper x repeat x fold): `vsp map` on a cluster.

Each embedding's aligned (X, Y) is put in the object store once and shared by all its tasks. A task runs a
group of units (`vsp.mapping.stage.Unit`): every kNN / ridge unit of one (embedding, mapper) together (they
take milliseconds per fold), and one MLP unit (``folds_per_task`` folds, 1 by default) per task, so the MLP
folds spread over every core. Each task writes each unit's Parquet and then its marker, so a retried task
only redoes its own units; the coordinator then writes Table 2 exactly as the local loop does.

Threads: a task gets ``num_cpus=1`` and sets ``torch.set_num_threads`` to the CPUs Ray assigned it (Ray also
sets ``OMP_NUM_THREADS`` for the worker), so concurrent tasks do not oversubscribe the machine. With GPUs in
the cluster, MLP tasks ask for ``gpus_per_mlp_task`` of a GPU (several small MLPs share one device) and train
on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import ray

from cluster.executor import gather, worker_device
from cluster.runtime import has_gpus
from vsp.data.norms import Norms
from vsp.io.store import open_store
from vsp.mapping.stage import (
    MappingConfig,
    MappingData,
    MappingSummary,
    Unit,
    finish,
    open_run,
    pending,
    plan_units,
    prepare,
    run_unit,
)


@ray.remote(num_cpus=1, max_retries=3)
def mapping_units_task(
    store_uri: str, config: MappingConfig, data: MappingData, units: Sequence[Unit]
) -> int:
    """Run a few units of one embedding on this worker; returns the number of folds run."""
    device = worker_device()
    store = open_store(store_uri)
    return sum(run_unit(store, data, config, u, device=device) for u in units)


def group_units(units: Sequence[Unit]) -> list[list[Unit]]:
    """Task groups: all kNN / ridge units of one (embedding, mapper) together; each MLP unit alone."""
    groups: dict[tuple[str, str], list[Unit]] = {}
    out: list[list[Unit]] = []
    for u in units:
        if u.mapper == "mlp":
            out.append([u])
        else:
            groups.setdefault((u.embedding, u.mapper), []).append(u)
    # cheap groups first: their rows appear early, and the long MLP tail keeps every core busy
    return list(groups.values()) + out


def run_mapping_ray(
    store_uri: str,
    norms: Norms,
    config: MappingConfig,
    gpus_per_mlp_task: float = 0.25,
    progress: Callable[[int, int, int], None] | None = None,
    connect: Callable[[], Any] | None = None,
) -> MappingSummary:
    """Coordinator: record the run, fan the pending units out as tasks, then write Table 2.

    ``connect()`` is called only when some unit is pending, before the first Ray call (a rerun with
    nothing to do never starts Ray); without it, Ray must already be initialised.
    """
    t0 = time.perf_counter()
    store = open_store(store_uri)
    data, identity = prepare(store, norms, config)
    open_run(store, identity, data, (len(norms.concepts), len(norms.properties)))
    units = plan_units(data, config)
    todo = pending(store, units)
    folds = 0
    if todo:
        if connect is not None:
            connect()
        refs_by_name = {d.name: ray.put(d) for d in data if any(u.embedding == d.name for u in todo)}
        gpu = has_gpus()
        refs = {}
        for group in group_units(todo):
            opts = {"num_gpus": gpus_per_mlp_task} if gpu and group[0].mapper == "mlp" else {}
            ref = mapping_units_task.options(**opts).remote(
                store.uri, config, refs_by_name[group[0].embedding], group
            )
            refs[ref] = len(group)
        folds = gather(refs, len(todo), progress)
    outputs = finish(store)
    return MappingSummary(store.uri, len(units), len(todo), folds, time.perf_counter() - t0, outputs)
