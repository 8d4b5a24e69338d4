"""Ray fan-out of the decoding grid: one task per few layers, the labels put in the object store once.

A task never fits a single probe: it decodes whole layers (all properties x folds at once, batched in
``vsp.decode.probe``), writes each layer's Parquet and then its marker, so a retried task only redoes its
layers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import ray

from cluster.executor import gather, worker_device
from cluster.runtime import has_gpus
from vsp.data.norms import Norms
from vsp.decode.stage import (
    DecodeConfig,
    DecodeSummary,
    finish,
    open_inference,
    open_run,
    pending,
    prepare,
    probe_layer_unit,
)
from vsp.extract.features import FeatureStore
from vsp.io.store import open_store


@ray.remote(num_cpus=1, max_retries=3, retry_exceptions=True)
def decode_layers_task(store_uri: str, task, layers) -> int:
    """Decode a few layers on this worker (GPU when the task was given one)."""
    device = worker_device()
    store = open_store(store_uri)
    return sum(probe_layer_unit(store, task, layer, device) for layer in layers)


def run_decode_ray(
    store_uri: str,
    norms: Norms,
    config: DecodeConfig,
    layers_per_task: int = 4,
    progress: Callable[[int, int, int], None] | None = None,
    connect: Callable[[], Any] | None = None,
) -> DecodeSummary:
    """Coordinator: record the run, fan pending layers out as tasks, then aggregate and draw the figures.

    ``connect()`` is called only when some layer is pending, before the first Ray call (a rerun with
    nothing to do never starts Ray); without it, Ray must already be initialised.
    """
    t0 = time.perf_counter()
    store = open_store(store_uri)
    task, layers, identity = prepare(FeatureStore(store), norms, config)
    open_run(store, identity)
    open_inference(store, config)
    todo = pending(store, layers, config)
    if todo:
        if connect is not None:
            connect()
        task_ref = ray.put(task)
        opts = {"num_gpus": 1} if has_gpus() else {}
        groups = [todo[i : i + layers_per_task] for i in range(0, len(todo), layers_per_task)]
        refs = {decode_layers_task.options(**opts).remote(store.uri, task_ref, g): len(g) for g in groups}
        fits = gather(refs, len(todo), progress)
    else:
        fits = 0
    outputs = finish(store, layers, config)
    return DecodeSummary(store.uri, len(layers), len(todo), fits, time.perf_counter() - t0, outputs)
