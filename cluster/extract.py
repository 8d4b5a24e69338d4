"""Ray extraction: CPU decode tasks stream units to a hand-written pool of extraction actors.

Why a hand-written actor pool rather than Ray Data: a unit is a group of whole concepts that must land in
whole Zarr chunks followed by a done-marker, and resume is decided per unit by the coordinator. Ray Data's
batches are cut by rows, not by concepts, and its retries re-run batches we cannot map to markers. With a
small pool we keep those guarantees and still get the two things that matter for throughput: each actor loads
its networks once (GPU objects are built inside the actor, never pickled), and decoding runs in parallel CPU
tasks with a bounded window of units in flight (backpressure), so an actor always has its next unit decoded
while it computes the current one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import ray

from vsp.extract_stage import (
    ExtractionSummary,
    compute_unit,
    decode_unit,
    make_extractor,
    plan_extraction,
)
from vsp.features import ExtractionConfig, FeaturePlan, FeatureStore
from vsp.images import ImageRecord
from vsp.store import open_store

log = logging.getLogger(__name__)


@ray.remote(num_cpus=1, max_retries=3)
def decode_task(plan: FeaturePlan, unit: int):
    """CPU worker: decode and preprocess one unit's images."""
    return decode_unit(plan, unit)


@ray.remote(max_restarts=-1, max_task_retries=3)
class ExtractionActor:
    """Holds the networks on its device; computes a unit and writes its chunks, then its marker."""

    def __init__(self, store_uri: str, config: ExtractionConfig, batch_size: int) -> None:
        import torch

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.extractor = make_extractor(config, device=self.device)
        self.fs = FeatureStore(open_store(store_uri))
        self.batch_size = batch_size

    def pid(self) -> int:
        """The actor process id (tests kill it to prove restarts)."""
        import os

        return os.getpid()

    @ray.method(retry_exceptions=True)
    def process(self, plan: FeaturePlan, decoded) -> dict:
        """Compute and write one unit; a retried call rewrites the same chunks (idempotent).

        Exceptions are retried too (``max_task_retries`` of the actor), so a storage outage longer than the
        S3 client's own retries costs a unit retry, not the run.
        """
        result = compute_unit(self.extractor, plan, decoded, self.batch_size)
        self.fs.write_unit(plan, result)
        return {"unit": decoded.unit, "images": len(decoded.tensor), "skipped": len(decoded.skipped)}


def run_extraction_ray(
    store_uri: str,
    records: Sequence[ImageRecord],
    config: ExtractionConfig,
    concepts: Sequence[str] | None = None,
    n_actors: int | None = None,
    batch_size: int = 32,
    window: int = 2,
    progress: Callable[[int, int, int], None] | None = None,
    on_actors: Callable[[list], None] | None = None,
) -> ExtractionSummary:
    """Coordinator: create every array, then stream pending units through the actor pool.

    ``window`` units per actor may be decoded ahead of the actor (backpressure bound).
    ``progress(units_done, units_pending, images_done)`` is called after every unit.
    """
    t0 = time.perf_counter()
    store = open_store(store_uri)
    # The coordinator builds the networks once on CPU to learn each layer's width and the weights identity.
    planner = make_extractor(config, device="cpu")
    plan = plan_extraction(records, config, planner, concepts)
    del planner
    fs = FeatureStore(store)
    fs.create(plan)
    pending = fs.pending_units(plan)
    if not pending:
        return ExtractionSummary(store.uri, len(plan.units), 0, 0, time.perf_counter() - t0, 0)

    res = ray.cluster_resources()
    gpus = int(res.get("GPU", 0))
    if n_actors is None:
        n_actors = gpus if gpus else max(1, int(res.get("CPU", 1)) // 2)
    n_actors = max(1, min(n_actors, len(pending)))
    opts = {"num_gpus": 1, "num_cpus": 1} if gpus else {"num_cpus": 1}
    actors = [ExtractionActor.options(**opts).remote(store.uri, config, batch_size) for _ in range(n_actors)]
    if on_actors:
        on_actors(actors)
    plan_ref = ray.put(plan)

    queue = list(pending)
    inflight: dict[ray.ObjectRef, int] = {}  # process ref -> actor index
    done = n_img = n_skip = 0

    def submit(a: int) -> None:
        unit = queue.pop(0)
        decoded = decode_task.remote(plan_ref, unit)
        inflight[actors[a].process.remote(plan_ref, decoded)] = a

    for _ in range(window):
        for a in range(n_actors):
            if queue:
                submit(a)
    while inflight:
        ready, _ = ray.wait(list(inflight), num_returns=1)
        a = inflight.pop(ready[0])
        out = ray.get(ready[0])
        done += 1
        n_img += out["images"]
        n_skip += out["skipped"]
        if progress:
            progress(done, len(pending), n_img)
        if queue:
            submit(a)
    for actor in actors:
        ray.kill(actor)
    return ExtractionSummary(
        store.uri, len(plan.units), len(pending), n_img, time.perf_counter() - t0, n_skip
    )
