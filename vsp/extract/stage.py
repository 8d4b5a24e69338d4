"""The extraction stage without Ray: plan units, decode a unit's images, compute and write it, run locally.

The Ray layer (``cluster/extract.py``) calls exactly these functions from its decode tasks and extraction
actors; running them in a loop here gives the same arrays bit for bit, which is what the tests compare.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vsp.config import section_identity
from vsp.data.images import ImageRecord, decode_batch
from vsp.errors import VspInputError
from vsp.extract.features import MANIFEST as FEATURES_MANIFEST
from vsp.extract.features import ROOT as FEATURES_ROOT
from vsp.extract.features import (
    ExtractionConfig,
    FeaturePlan,
    FeatureStore,
    LayerInfo,
    UnitResult,
    assemble_unit,
)
from vsp.extract.hooks import MultiNetExtractor
from vsp.io.store import Store
from vsp.stage import Executor, Resources, Stage, StageContext

if TYPE_CHECKING:
    from vsp.config import RunConfig

log = logging.getLogger(__name__)


def default_channels_last(device: str | torch.device) -> bool:
    """``extract.channels_last: auto`` on a new store: channels-last on a CPU with oneDNN, else not.

    Measured on 2 CPU cores, four networks: 1.18-1.31x the channels-first forward passes with the hooks
    (benchmarks/results/pipeline-cpu-2core-2026-12-07.txt). GPUs keep channels-first until a device run
    measures the choice there (set it explicitly meanwhile).
    """
    return torch.device(device).type == "cpu" and torch.backends.mkldnn.is_available()


def resolve_channels_last(
    config: ExtractionConfig,
    store: Store | None = None,
    device: str | torch.device | Callable[[], str] = "cpu",
) -> ExtractionConfig:
    """``config`` with ``channels_last`` decided: as set, else the store's, else the device's default.

    The store's: as its features were computed (a store written before the setting existed is
    channels-first); the device's: :func:`default_channels_last`. Decided once, by the driver, before
    anything is planned: every actor and every rerun then computes what the manifest records, and a resumed
    store is never refused for a default that changed. ``device`` may be a callable, asked only for a new
    store (a Ray driver joins the cluster to see its GPUs only then).
    """
    if config.channels_last is not None:
        return config
    manifest = FeatureStore(store).manifest() if store is not None else None
    if manifest is not None:
        recorded = manifest.get("identity", {}).get("config", {})
        return replace(config, channels_last=bool(recorded.get("channels_last", False)))
    return replace(config, channels_last=default_channels_last(device() if callable(device) else device))


#: images per forward pass on a CPU (``extract.batch_size: auto``): larger batches gain nothing on a few cores
CPU_BATCH = 32


def batch_for_memory(
    per_image: float, free: float, fraction: float = 0.5, lo: int = 8, hi: int = 1024
) -> int:
    """The largest power of two of images whose activations fit ``fraction`` of the free memory.

    ``per_image`` and ``free`` in bytes; the result is kept within [lo, hi]. The rule
    :func:`choose_batch_size` applies to a GPU's measured memory.
    """
    n = int(fraction * free // max(per_image, 1.0))
    return max(lo, min(hi, 1 << (max(n, 1).bit_length() - 1)))


def choose_batch_size(extractor: MultiNetExtractor, probe: int = 8) -> int:
    """``extract.batch_size: auto``: :data:`CPU_BATCH` on a CPU, on a GPU what its free memory holds.

    On a GPU: one probe batch of zeros, its peak memory per image against the free memory
    (:func:`batch_for_memory`).

    The probe's fixed costs (cuDNN workspaces) count as per-image memory, so the estimate errs small.
    Batch size is tuning, not identity: any batch gives the same features up to float32 summation order.
    """
    if extractor.device.type != "cuda":
        return CPU_BATCH
    dev = extractor.device
    torch.cuda.synchronize(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    base = torch.cuda.memory_allocated(dev)
    extractor.forward_tensors(
        {p.key: torch.zeros(probe, 3, p.size, p.size) for p in extractor.preprocessings}
    )
    torch.cuda.synchronize(dev)
    per_image = (torch.cuda.max_memory_allocated(dev) - base) / probe
    free, _total = torch.cuda.mem_get_info(dev)
    chosen = batch_for_memory(per_image, free)
    log.info("extract: batch size %d on %s (%.0f MiB per image, %.0f MiB free)", chosen, dev,
             per_image / 2**20, free / 2**20)  # fmt: skip
    return chosen


def make_extractor(config: ExtractionConfig, device: str = "cpu", **kwargs) -> MultiNetExtractor:
    """Build the networks a run's configuration names (loaded once per process/actor).

    An undecided ``channels_last`` (auto) takes :func:`default_channels_last` of ``device``; a run decides it
    first (:func:`resolve_channels_last`), so that planner and actors agree.
    """
    layers = config.layers if isinstance(config.layers, str) else list(config.layers)
    kwargs.setdefault("dtype", config.precision)
    cl = config.channels_last
    kwargs.setdefault("channels_last", default_channels_last(device) if cl is None else cl)
    return MultiNetExtractor(
        list(config.models),
        layers=layers,
        weights=config.weights,
        seed=config.seed,
        device=device,
        pooling=config.pooling,
        activation=config.activation,
        **kwargs,
    )


def layer_infos(extractor: MultiNetExtractor) -> list[LayerInfo]:
    """Every tapped layer of every network with its width (from one dry forward pass)."""
    ch = extractor.channels()
    return [
        LayerInfo(
            model=m,
            name=t.name,
            index=t.index,
            kind=t.kind,
            channels=ch[m][t.name],
            activation=t.activation,
            bn=t.bn_point,
            layout=t.layout if t.layout in ("nhwc", "tokens") else "",
        )
        for m, taps in extractor.taps.items()
        for t in taps
    ]


def unusable_concepts(images: dict[str, list[str]], max_workers: int = 4) -> dict[str, list[str]]:
    """Concepts none of whose images can be read, each with the reasons (checked before anything is created).

    A concept is tried image by image until one decodes, so a healthy image set costs about one decode per
    concept. Such concepts are dropped from the run with a warning and recorded in the features manifest.
    """
    from concurrent.futures import ThreadPoolExecutor

    from vsp.data.images import load_image, max_image_pixels

    cap = max_image_pixels()  # read once: a bad VSP_MAX_IMAGE_PIXELS is an error, not a reason per image

    def first_readable(concept: str) -> tuple[str, list[str] | None]:
        reasons = []
        for uri in images[concept]:
            try:
                load_image(uri, max_pixels=cap)
                return concept, None
            except FileNotFoundError:
                reasons.append(f"{uri}: file not found")
            except (VspInputError, OSError, ValueError) as e:
                reasons.append(f"{uri}: {e}" if uri not in str(e) else str(e))
        return concept, reasons

    names = sorted(images)
    with ThreadPoolExecutor(max(1, min(max_workers, len(names)))) as pool:
        checked = list(pool.map(first_readable, names))
    return {c: r for c, r in checked if r is not None}


def plan_extraction(
    records: Sequence[ImageRecord],
    config: ExtractionConfig,
    extractor: MultiNetExtractor,
    concepts: Sequence[str] | None = None,
    store: Store | None = None,
) -> FeaturePlan:
    """Group the manifest by concept (optionally restricted to ``concepts``) and cut it into units.

    Concepts without a single readable image are dropped (named in a warning and in the manifest's
    ``dropped_concepts``). With ``store``, a run already recorded there keeps the drops it recorded, so a
    resumed run plans exactly the same units without reading the images again.
    """
    images: dict[str, list[str]] = {}
    for r in records:
        images.setdefault(r.concept, []).append(r.uri)
    if concepts is not None:
        keep = set(concepts)
        images = {c: u for c, u in images.items() if c in keep}
    images = {c: sorted(u) for c, u in images.items()}
    if config.channels_last is None:  # auto, as the extractor decided it: the manifest records a decision
        config = replace(config, channels_last=extractor.channels_last)
    existing = FeatureStore(store).manifest() if store is not None else None
    if existing is not None and "dropped_concepts" in existing:
        dropped = {c: list(r) for c, r in existing["dropped_concepts"].items() if c in images}
    else:
        dropped = unusable_concepts(images)
    if dropped:
        log.warning(
            "%d concepts have no readable image and are left out: %s",
            len(dropped),
            "; ".join(f"{c} ({r[0]}{'...' if len(r) > 1 else ''})" for c, r in list(dropped.items())[:10]),
        )
    names = sorted(c for c in images if c not in dropped)
    if not names and dropped:
        raise VspInputError(f"no concept has a readable image ({len(dropped)} concepts checked)")
    return FeaturePlan(
        config=config,
        concepts=names,
        images={c: images[c] for c in names},
        layers=layer_infos(extractor),
        weights_identity=dict(extractor.weights_identity),
        dropped=dropped,
        preprocessing=dict(extractor.preprocessing),
        sources=dict(extractor.sources),
    )


@dataclass
class DecodedUnit:
    """A unit's images, decoded and preprocessed on a CPU worker, ready for the networks."""

    unit: int
    tensor: torch.Tensor  # (n_ok, 3, 224, 224), the first (or only) preprocessing
    concept_of_image: np.ndarray  # unit-local concept index per decoded image
    skipped: list[dict[str, str]]
    #: preprocessing key -> the same images preprocessed that way, when the models need more than one
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    #: decoder ``torchvision``: the images still encoded (`vsp.data.device_decode`), decoded by the extractor
    encoded: list[Any] = field(default_factory=list)

    @property
    def n_images(self) -> int:
        """How many images decoded (or will decode on the device)."""
        return len(self.encoded) if self.encoded else len(self.tensor)


def decode_unit_images(plan: FeaturePlan, unit: int, max_workers: int = 1) -> DecodedUnit:
    """Decode every image of one unit; unreadable files are skipped and recorded (never silently)."""
    start, stop = plan.units[unit]
    recs: list[ImageRecord] = []
    owner: list[int] = []
    for j, concept in enumerate(plan.concepts[start:stop]):
        for uri in plan.images[concept]:
            recs.append(ImageRecord(concept, uri))
            owner.append(j)
    preps = plan.preprocessings
    if getattr(plan.config, "decoder", "pil") == "torchvision":
        return _read_unit_encoded(unit, recs, owner)
    batch = decode_batch(recs, max_workers=max_workers, preprocessings=preps)
    skipped = [{"uri": recs[i].uri, "reason": msg} for i, msg in batch.errors]
    tensors = dict(batch.tensors) if len(preps) > 1 else {}
    return DecodedUnit(unit, batch.tensor, np.asarray(owner)[batch.ok], skipped, tensors)


def _read_unit_encoded(unit: int, recs: list[ImageRecord], owner: list[int]) -> DecodedUnit:
    """The ``torchvision`` decoder's CPU side: read each file and check its header; decoding waits."""
    from vsp.data.device_decode import read_encoded
    from vsp.data.images import max_image_pixels

    cap = max_image_pixels()
    encoded, ok, skipped = [], [], []
    for i, rec in enumerate(recs):
        try:
            encoded.append(read_encoded(rec.uri, cap))
            ok.append(i)
        except (VspInputError, OSError) as exc:
            log.warning("skipping image: %s", exc)
            skipped.append({"uri": rec.uri, "reason": str(exc)})
    empty = torch.empty((0, 3, 0, 0), dtype=torch.float32)
    return DecodedUnit(unit, empty, np.asarray(owner)[ok], skipped, {}, encoded)


def compute_unit(
    extractor: MultiNetExtractor, plan: FeaturePlan, decoded: DecodedUnit, batch_size: int = 32
) -> UnitResult:
    """Run the unit's images through every network in batches and pool them into concept rows."""
    start, stop = plan.units[decoded.unit]
    per_image: dict[str, list[np.ndarray]] = {}
    if decoded.encoded:  # decoder torchvision: decode, resize and crop on the extraction device
        from vsp.data.device_decode import materialise

        tensors, ok, errors = materialise(decoded.encoded, extractor.preprocessings, extractor.device)
        for _, msg in errors:
            log.warning("skipping image: %s", msg)
        skipped = [{"uri": decoded.encoded[i].uri, "reason": msg} for i, msg in errors]
        decoded = replace(
            decoded, tensor=next(iter(tensors.values())), tensors=tensors, encoded=[],
            concept_of_image=decoded.concept_of_image[ok], skipped=decoded.skipped + skipped,
        )  # fmt: skip
    elif extractor.device.type == "cuda" and len(decoded.tensor):  # pinned: batches copy asynchronously
        tensors = {k: t.pin_memory() for k, t in decoded.tensors.items()}
        first = tensors[next(iter(tensors))] if tensors else decoded.tensor.pin_memory()
        decoded = replace(decoded, tensor=first, tensors=tensors)
    for i in range(0, len(decoded.tensor), batch_size):
        if decoded.tensors:
            batch: Any = {k: t[i : i + batch_size] for k, t in decoded.tensors.items()}
        elif len(extractor.preprocessings) == 1:
            batch = decoded.tensor[i : i + batch_size]
        else:
            raise VspInputError(f"unit {decoded.unit}: decoded one way, but the models need several")
        for model, taps in extractor(batch).items():
            for tap, arr in taps.items():
                per_image.setdefault(f"{model}/{tap}", []).append(arr)
    if not per_image:
        names = ", ".join(plan.concepts[start:stop])
        raise VspInputError(f"unit {decoded.unit} ({names}): no readable image; skipped: {decoded.skipped}")
    stacked = {k: np.concatenate(v, axis=0) for k, v in per_image.items()}
    return assemble_unit(
        decoded.unit,
        plan.layers,
        stacked,
        decoded.concept_of_image,
        stop - start,
        plan.max_images,
        decoded.skipped,
    )


@dataclass
class ExtractionSummary:
    """The closing line of the stage: what was done now, what was already there, how fast."""

    store: str
    units_total: int
    units_run: int
    images: int
    seconds: float
    skipped_images: int
    dropped_concepts: list[str] = field(default_factory=list)  # no readable image: left out of the run

    @property
    def units_skipped(self) -> int:
        """Units that were already done before this run."""
        return self.units_total - self.units_run

    def line(self) -> str:
        """One line for the terminal and the job log."""
        rate = self.images / self.seconds if self.seconds > 0 else 0.0
        if self.units_run == 0:
            return f"extract: nothing to do, all {self.units_total} units already done in {self.store}"
        return (
            f"extract: {self.units_run} units ({self.images} images, {rate:.1f} images/s) written to "
            f"{self.store}; {self.units_skipped} already done; "
            f"{self.skipped_images} unreadable images skipped"
            + (
                f"; {len(self.dropped_concepts)} concepts without a readable image left out"
                if self.dropped_concepts
                else ""
            )
        )


def stream_units(
    extractor: MultiNetExtractor,
    plan: FeaturePlan,
    fs: FeatureStore,
    units: Sequence[int],
    batch_size: int = 32,
    on_unit: Callable[[int, DecodedUnit], None] | None = None,
) -> None:
    """Decode, compute and write ``units`` in order, decoding ahead and writing behind the forward passes.

    One thread decodes the next unit ahead (PIL releases the GIL while decoding), one writes the finished
    unit behind (the Zarr chunks, then its marker, as `FeatureStore.write_unit` always does); at most one unit
    is in each, so memory stays at three units. The numbers are those of the plain loop: only the order of
    waiting changes. ``on_unit(k, decoded)`` is called once unit ``units[k]`` is written; an error in any of
    the three is raised after the write in flight has finished (nothing written is lost).
    """
    from concurrent.futures import Future, ThreadPoolExecutor

    if not units:
        return
    with (
        ThreadPoolExecutor(1, thread_name_prefix="vsp-decode") as decoder,
        ThreadPoolExecutor(1, thread_name_prefix="vsp-write") as writer,
    ):
        ahead: Future = decoder.submit(decode_unit_images, plan, units[0])
        behind: tuple[Future, int, DecodedUnit] | None = None
        for k in range(len(units)):
            decoded = ahead.result()
            if k + 1 < len(units):
                ahead = decoder.submit(decode_unit_images, plan, units[k + 1])
            result = compute_unit(extractor, plan, decoded, batch_size)
            if behind is not None:
                behind[0].result()
                if on_unit:
                    on_unit(behind[1], behind[2])
            behind = (writer.submit(fs.write_unit, plan, result), k, decoded)
        behind[0].result()
        if on_unit:
            on_unit(behind[1], behind[2])


def run_extraction_local(
    store: Store,
    records: Sequence[ImageRecord],
    config: ExtractionConfig,
    concepts: Sequence[str] | None = None,
    device: str = "cpu",
    batch_size: int | None = CPU_BATCH,
    progress: Callable[[int, int], None] | None = None,
) -> ExtractionSummary:
    """Extract in this process (no Ray): the notebook path and the reference the Ray path must equal.

    ``batch_size=None``: chosen for the device (:func:`choose_batch_size`).
    """
    t0 = time.perf_counter()
    config = resolve_channels_last(config, store, device)
    extractor = make_extractor(config, device=device)
    if batch_size is None:
        batch_size = choose_batch_size(extractor)
    plan = plan_extraction(records, config, extractor, concepts, store=store)
    fs = FeatureStore(store)
    fs.create(plan)
    pending = fs.pending_units(plan)
    counts = {"images": 0, "skipped": 0}

    def unit_done(k: int, decoded: DecodedUnit) -> None:
        counts["images"] += decoded.n_images
        counts["skipped"] += len(decoded.skipped)
        if progress:
            progress(k + 1, len(pending))

    stream_units(extractor, plan, fs, pending, batch_size, unit_done)
    n_img, n_skip = counts["images"], counts["skipped"]
    return ExtractionSummary(
        store.uri,
        len(plan.units),
        len(pending),
        n_img,
        time.perf_counter() - t0,
        n_skip,
        sorted(plan.dropped),
    )


# ------------------------------------------------------------------------------------------------ the stage
class ExtractStage(Stage):
    """Every tapped layer of every network into the Zarr feature store (``vsp.extract.features``).

    Not a flat list of tasks: on a cluster the units stream through the actor pool of ``cluster.extract``
    (one actor per GPU, CPU decode tasks with backpressure); in this process the same units run in turn.
    """

    name = "extract"
    root = FEATURES_ROOT
    Config = ExtractionConfig
    needs = ("images",)
    resources = Resources(cpus=1, gpus=1)
    unit_word = "units"

    def identity(self, run: RunConfig) -> dict[str, Any]:
        """The images, the extraction settings, and the norms only when they restrict the concepts."""
        config = run.settings(self.name)
        restrict = config.only_norm_concepts and run.norms is not None
        norms = run.norms_dict() if restrict else None
        return {"images": run.images, "norms": norms, "extract": section_identity(config)}

    def resolve(self, run: RunConfig, store: Store, executor: Executor) -> RunConfig:
        """``channels_last: auto`` decided: the store's, else by the device the extraction will run on.

        A new store with Ray joins the cluster here to see its GPUs.
        """
        config = run.settings(self.name)
        if config.channels_last is not None:
            return run
        return run.with_settings(self.name, resolve_channels_last(config, store, executor.device_kind))

    def check_inputs(self, run: RunConfig) -> list[Any]:
        """The image list (a folder tree, an S3 prefix or a manifest), every link and row checked."""
        from vsp.data.images import build_manifest

        return build_manifest(run.images, follow_links=run.settings(self.name).follow_links)

    def run(self, ctx: StageContext) -> dict[str, Any]:
        """Extract the pending units (the pool on a cluster, else here); counts for run.json."""
        run = ctx.config
        config = ctx.settings(self.name)
        records = ctx.inputs.get(self.name) or self.check_inputs(run)
        concepts = ctx.norms().concepts if run.norms is not None and config.only_norm_concepts else None
        summary = self.drive(
            ctx, "cluster.extract:run_extraction_ray", run_extraction_local, records, config, concepts,
            what="images", ray_kw={"n_actors": config.actors, "batch_size": config.batch_size},
            local_kw={"batch_size": config.batch_size},
        )  # fmt: skip
        manifest = FeatureStore(ctx.store).manifest() or {}
        if ctx.record is not None:
            ctx.record.set_weights_identity(manifest.get("identity", {}).get("weights_identity", {}))
        return self.counts(summary, images=summary.images, unreadable_images=summary.skipped_images)

    def progress(self, store: Store) -> dict[str, Any] | None:
        """Units whose marker's chunks are all there, of the planned units."""
        fs = FeatureStore(store)
        man = fs.manifest()
        if man is None:
            return None
        total = len(man["units"])
        done_units, invalid = fs.unit_status()  # a marker counts only if the chunks it lists are there
        done = len({u for u in done_units if u < total})
        return {
            "what": "units",
            "done": done,
            "total": total,
            "complete": done == total,
            "invalid": len(invalid),
        }

    def outputs(self, store: Store) -> list[str]:
        """The feature store's manifest and layout, once every planned unit is done."""
        prog = self.progress(store)
        if not prog or not prog["complete"]:
            return []
        return [k for k in (FEATURES_MANIFEST, f"{FEATURES_ROOT}/layout.json") if store.exists(k)]

    def verify(self, store: Store) -> tuple[int, list[str]]:
        """Re-read every done unit's chunks and hash them against its marker's value digest."""
        fs = FeatureStore(store)
        if fs.manifest() is None:
            return 0, []
        units = sorted(fs.done_units())
        return len(units), [fs.marker_path(u) for u in units if not fs.verify_unit(u)]

    def has_results(self, store: Store) -> bool:
        """Whether a feature manifest is on the prefix."""
        return store.exists(FEATURES_MANIFEST)
