"""Ray extraction: CPU decode tasks stream units to a hand-written pool of extraction actors.

Why a hand-written actor pool rather than Ray Data: a unit is a group of whole concepts that must land in
whole Zarr chunks followed by a done-marker, and resume is decided per unit by the coordinator. Ray Data's
batches are cut by rows, not by concepts, and its retries re-run batches we cannot map to markers. With a
small pool we keep those guarantees and still get the two things that matter for throughput: each actor loads
its networks once (GPU objects are built inside the actor, never pickled), and decoding runs in parallel CPU
tasks with a bounded window of units in flight (backpressure), so an actor always has its next unit decoded
while it computes the current one.

Small clusters: when the CPUs left beside the actors cannot hold a decode task (a 1-CPU worker, or as many
actors as CPUs), decode tasks would wait forever for a CPU the actors hold. The pool then decodes inside the
actors instead (same function, same bytes), and says so in the log; with fewer CPUs than actors, each actor
asks for a fraction of a CPU. On CPU-only nodes an actor uses the CPUs that no actor or decode task reserves
for its forward passes (Ray's default for a 1-CPU actor is a single torch thread).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import ray

from cluster.runtime import device_kind
from cluster.waiting import wait_any
from vsp.data.images import ImageRecord
from vsp.extract.features import ExtractionConfig, FeaturePlan, FeatureStore
from vsp.extract.stage import (
    ExtractionSummary,
    choose_batch_size,
    compute_unit,
    decode_unit_images,
    make_extractor,
    plan_extraction,
    resolve_channels_last,
)
from vsp.io.store import open_store
from vsp.stage import pick_device

log = logging.getLogger(__name__)


@ray.remote(num_cpus=1, max_retries=3)
def decode_task(plan: FeaturePlan, unit: int):
    """CPU worker: decode and preprocess one unit's images."""
    return decode_unit_images(plan, unit)


@ray.remote(max_restarts=-1, max_task_retries=3)
class ExtractionActor:
    """Holds the networks on its device; computes a unit and writes its chunks, then its marker.

    Threaded (``max_concurrency=2``): the forward passes of one unit run under a lock, so a unit's Zarr
    writes overlap the next unit's forward passes instead of idling the device.
    """

    def __init__(
        self, store_uri: str, config: ExtractionConfig, batch_size: int | None, threads: int | None = None
    ) -> None:
        import torch

        self.device = pick_device()
        if self.device == "cpu" and threads:
            torch.set_num_threads(max(1, min(threads, os.cpu_count() or 1)))
        self.extractor = make_extractor(config, device=self.device)
        self.fs = FeatureStore(open_store(store_uri))
        self.batch_size = batch_size if batch_size is not None else choose_batch_size(self.extractor)
        self._compute = threading.Lock()  # one unit's forward passes at a time; writes run beside them

    def pid(self) -> int:
        """The actor process id (tests kill it to prove restarts)."""
        return os.getpid()

    @ray.method(retry_exceptions=True)
    def process(self, plan: FeaturePlan, decoded) -> dict:
        """Compute and write one unit; a retried call rewrites the same chunks (idempotent).

        Exceptions are retried too (``max_task_retries`` of the actor), so a storage outage longer than the
        S3 client's own retries costs a unit retry, not the run.
        """
        with self._compute:
            result = compute_unit(self.extractor, plan, decoded, self.batch_size)
        self.fs.write_unit(plan, result)
        return {"unit": decoded.unit, "images": decoded.n_images, "skipped": len(decoded.skipped)}

    @ray.method(retry_exceptions=True)
    def decode_and_process(self, plan: FeaturePlan, unit: int) -> dict:
        """Decode the unit's images here, then compute and write it (clusters without a spare CPU)."""
        return self.process(plan, decode_unit_images(plan, unit))


@dataclass(frozen=True)
class PoolLayout:
    """How the actor pool fits the cluster: actors, what each asks of Ray, and where images are decoded."""

    actors: int
    actor_options: dict[str, Any] = field(default_factory=dict)
    decode_in_actor: bool = False
    threads: int | None = None  # torch threads of a CPU actor (None: leave the worker's default)

    def line(self) -> str:
        """One log line describing the layout."""
        where = "inside the actors (no CPU left for decode tasks)" if self.decode_in_actor else "in CPU tasks"
        threads = f", {self.threads} torch threads each on CPU" if self.threads else ""
        return f"{self.actors} extraction actors ({self.actor_options}{threads}); images decoded {where}"


def pool_layout(resources: Mapping[str, float], n_actors: int | None, n_units: int) -> PoolLayout:
    """Fit the pool to the cluster's resources (``ray.cluster_resources()``) so that it cannot deadlock.

    Default: one actor per GPU, else one per two CPUs; never more actors than units. Each actor asks for one
    CPU (and one GPU when the cluster has GPUs), or an equal share of the CPUs when there are fewer CPUs than
    actors. Decode tasks need a whole CPU beside the actors; when less than one is left they would never be
    scheduled, so the actors decode their own units. A CPU actor runs torch on its share of all the CPUs.
    A cluster that reports no CPU at all (an autoscaler
    that starts from zero workers) keeps decode tasks: the nodes it brings up have CPUs.
    """
    cpus = float(resources.get("CPU", 0))
    gpus = int(resources.get("GPU", 0))
    if n_actors is None:
        n_actors = gpus if gpus else max(1, int(cpus) // 2)
    n_actors = max(1, min(n_actors, max(1, n_units)))
    actor_cpus = 1.0
    if 0 < cpus < n_actors:
        actor_cpus = round(cpus / n_actors, 4)
    opts: dict[str, Any] = {"num_cpus": actor_cpus if actor_cpus != 1.0 else 1}
    if gpus:
        opts["num_gpus"] = 1
    spare = cpus - n_actors * actor_cpus
    decode_in_actor = cpus > 0 and spare < 1
    threads = None
    if not gpus and cpus > 0:
        # CPU actors: every CPU shared out (at least one each). Decoding a unit costs a few percent of its
        # forward passes on a CPU, so the decode tasks run in the gaps; reserving a core for them would halve
        # the forward passes of a 2-core machine (the 1-thread actor of earlier releases).
        threads = max(1, int(cpus // n_actors))
    return PoolLayout(n_actors, opts, decode_in_actor, threads)


def run_extraction_ray(
    store_uri: str,
    records: Sequence[ImageRecord],
    config: ExtractionConfig,
    concepts: Sequence[str] | None = None,
    n_actors: int | None = None,
    batch_size: int | None = 32,
    window: int = 2,
    progress: Callable[[int, int, int], None] | None = None,
    on_actors: Callable[[list], None] | None = None,
    connect: Callable[[], Any] | None = None,
) -> ExtractionSummary:
    """Coordinator: create every array, then stream pending units through the actor pool.

    ``window`` units per actor may be decoded ahead of the actor (backpressure bound).
    ``progress(units_done, units_pending, images_done)`` is called after every unit.
    ``connect()`` is called once there is work for Ray, before the first Ray call: a rerun with nothing to
    do never starts (or joins) Ray. Without it, Ray must already be initialised.
    """
    t0 = time.perf_counter()
    store = open_store(store_uri)

    def cluster_device() -> str:  # auto, undecided by the runner, on a new store: the cluster's devices
        if connect is not None:
            connect()
        return device_kind()

    config = resolve_channels_last(config, store, cluster_device)
    # The coordinator builds the networks once on CPU to learn each layer's width and the weights identity.
    planner = make_extractor(config, device="cpu")
    plan = plan_extraction(records, config, planner, concepts, store=store)
    del planner
    fs = FeatureStore(store)
    fs.create(plan)
    pending = fs.pending_units(plan)
    if not pending:
        return ExtractionSummary(store.uri, len(plan.units), 0, 0, time.perf_counter() - t0, 0)

    if connect is not None:
        connect()
    layout = pool_layout(ray.cluster_resources(), n_actors, len(pending))
    log.info("extract: %s", layout.line())
    actors = [
        ExtractionActor.options(**layout.actor_options, max_concurrency=2).remote(
            store.uri, config, batch_size, layout.threads
        )
        for _ in range(layout.actors)
    ]
    if on_actors:
        on_actors(actors)
    plan_ref = ray.put(plan)

    queue = list(pending)
    inflight: dict[ray.ObjectRef, int] = {}  # process ref -> actor index
    done = n_img = n_skip = 0

    def submit(a: int) -> None:
        unit = queue.pop(0)
        if layout.decode_in_actor:
            inflight[actors[a].decode_and_process.remote(plan_ref, unit)] = a
            return
        decoded = decode_task.remote(plan_ref, unit)
        inflight[actors[a].process.remote(plan_ref, decoded)] = a

    for _ in range(window):
        for a in range(layout.actors):
            if queue:
                submit(a)
    while inflight:
        ref = wait_any(inflight)  # in short slices: SIGTERM (`ray job stop`) is handled while we wait
        a = inflight.pop(ref)
        out = ray.get(ref)
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
