"""The stage contract: what every pipeline stage declares, and the one way a stage's units are run.

A stage (NeMo Curator's ``ProcessingStage``, pangeo-forge-recipes' transforms) is a class that declares

- ``name`` (its run-file section, CLI word and registry key) and ``root`` (its folder on the store);
- ``Config``: a dataclass, the only declaration of its settings and defaults. A field made with
  :func:`vsp.config.setting` says whether it is identity (decides results; a rerun with another value on the
  same prefix is refused) or tuning (how the work goes: batch sizes, task sizes, threads);
- ``needs``: run inputs it reads (``"images"``, ``"norms"``), so the run file asks for them;
- ``resources``: what one unit asks of a worker (CPUs, a GPU share), kept apart from its settings;
- ``plan(ctx, config) -> [Unit]``: units with keys (xarray-beam's ``Key``: identity and unit of resumption);
- ``run_unit(store, config, unit) -> outputs``: writes a unit's data and returns what it wrote; the contract
  writes the unit's marker after it (data, then a marker that proves it: ``vsp.io.bookkeeping``);
- ``summarise(ctx, config, counts) -> counts``: the stage's last step (tables from its units) and its counts;
- ``progress(store)`` for ``vsp status`` and ``outputs(store)``, the readers of what its markers cover.

:meth:`Stage.run` carries that out once for every stage: claim the manifest with the stage's identity (one
refusal message), skip units whose markers prove their data, run the rest through the executor the runner
chose (in this process, or Ray tasks from ``cluster.executor``), summarise. A stage whose work is not a flat
list of units (the extraction actor pool, the decoding grid's batched layers) overrides :meth:`Stage.run`,
keeping the same bookkeeping module, the same progress and readers, and the same executor choice.

This module never imports Ray: the executor is handed in by the runner (``jobs.runner``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from vsp.errors import VspInputError
from vsp.io.bookkeeping import (
    MarkerScan,
    open_manifest,
    read_markers,
    scan_markers,
    verify_outputs,
    write_marker,
)
from vsp.io.store import Store, open_store

if TYPE_CHECKING:
    from vsp.config import RunConfig
    from vsp.data.norms import Norms
    from vsp.runrecord import RunRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resources:
    """What one unit asks of a worker; a GPU share is used where the cluster has GPUs, else CPU."""

    cpus: float = 1.0
    gpus: float = 0.0


@dataclass(frozen=True)
class Unit:
    """One unit of a stage's plan: its key (unique within the stage, a path-safe name) and its arguments."""

    key: str
    args: Any = None


class Executor(Protocol):
    """How units run: in this process (:class:`LocalExecutor`) or as Ray tasks (``cluster.executor``)."""

    distributed: bool

    def connect(self) -> None:
        """Join the cluster, once, when a stage has work for it (nothing to do for local runs)."""
        ...

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any], resources: Resources) -> Iterator[Any]:
        """``fn(item)`` for every item; results as they finish (any order)."""
        ...

    def call(self, fn: Callable[..., Any], *args: Any, resources: Resources) -> Any:
        """``fn(*args)`` once, on a worker with ``resources``."""
        ...

    def remote(self, name: str) -> Callable[..., Any]:
        """A stage's own distributed driver in ``cluster/`` by ``module:function`` (the actor pool)."""
        ...

    def device_kind(self) -> str:
        """``cuda`` or ``cpu``: where a stage's GPU work will run (the cluster's GPUs; joins the cluster)."""
        ...


class LocalExecutor:
    """Runs every unit in this process, in plan order (``--no-ray``, notebooks, tests)."""

    distributed = False

    def connect(self) -> None:
        """Nothing to join."""

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any], resources: Resources) -> Iterator[Any]:
        """``fn(item)`` for each item in turn."""
        for item in items:
            yield fn(item)

    def call(self, fn: Callable[..., Any], *args: Any, resources: Resources) -> Any:
        """``fn(*args)`` here."""
        return fn(*args)

    def remote(self, name: str) -> Callable[..., Any]:
        """No distributed drivers in this process: a stage asks only when ``distributed`` is true."""
        raise RuntimeError(f"{name}: a distributed driver was asked of the local executor")

    def device_kind(self) -> str:
        """This process's device (:func:`pick_device`)."""
        return "cuda" if pick_device().startswith("cuda") else "cpu"


def pick_device(wanted: str | None = None) -> str:
    """``wanted`` if given, else ``cuda`` where torch sees a GPU, else ``cpu`` (the one device choice)."""
    if wanted:
        return wanted
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class StageContext:
    """What a stage's ``run(ctx)`` gets: the run's configuration, the store, its record, and the executor."""

    config: RunConfig
    store: Store
    executor: Executor = field(default_factory=LocalExecutor)
    record: RunRecord | None = None
    _norms: Any = field(default=None, repr=False)
    #: What each stage's :meth:`Stage.check_inputs` returned (read before the store was touched)
    inputs: dict[str, Any] = field(default_factory=dict)
    #: Makes a stage's progress callback from (stage, unit, what): the CLI's bars; default: log lines
    reporter: Callable[[str, str, str], Callable[..., None]] | None = None

    @property
    def distributed(self) -> bool:
        """Whether units fan out to workers (decided once, by the runner)."""
        return self.executor.distributed

    def connect(self) -> None:
        """Join the cluster now (a stage calls it only when it has work for it); nothing for local runs."""
        self.executor.connect()

    def settings(self, stage: str) -> Any:
        """The stage's Config, as the run file (or the CLI) set it."""
        return self.config.settings(stage)

    @staticmethod
    def load_norms(config: RunConfig) -> Norms | None:
        """The run's norms (None when it names none): the runner loads them before it writes anything."""
        spec = config.norms
        if spec is None:
            return None
        from vsp.data.norms import load_cslb

        return load_cslb(spec.path, min_pf=spec.min_pf, min_concepts=spec.min_concepts)

    def norms(self) -> Norms:
        """The configured norms, loaded once per run (several stages need them)."""
        if self._norms is None:
            self._norms = self.load_norms(self.config)
            if self._norms is None:
                raise VspInputError("norms: required by this stage (path or URI of CSLB norms.dat)")
        return self._norms

    def progress(self, stage: str, unit: str, what: str) -> Callable[..., None]:
        """A progress callback: the reporter's (a bar), else one log line per finished unit (job logs)."""
        if self.reporter is not None:
            return self.reporter(stage, unit, what)
        t0 = time.perf_counter()

        def report(done: int, total: int, count: int | None = None) -> None:
            rate = ""
            if count is not None:
                rate = f", {count} {what} ({count / max(time.perf_counter() - t0, 1e-9):.1f}/s)"
            log.info("%s: %d/%d %s%s", stage, done, total, unit, rate)

        return report


class Stage:
    """The contract every stage declares (see the module docstring); subclasses set the class attributes."""

    name: ClassVar[str]
    root: ClassVar[str]
    Config: ClassVar[type]
    needs: ClassVar[tuple[str, ...]] = ()
    #: Of ``needs``, those it uses when given and runs without (meta: norms, for decodability)
    optional_needs: ClassVar[tuple[str, ...]] = ()
    resources: ClassVar[Resources] = Resources()
    unit_word: ClassVar[str] = "units"  # what `vsp status` counts
    #: Folders of its unit markers (`vsp status --verify` re-reads what they list); default: ``<root>/done``
    marker_prefixes: ClassVar[tuple[str, ...] | None] = None

    # -- inputs and identity ---------------------------------------------------------------------------------
    def check_inputs(self, run: RunConfig) -> Any:
        """Read and check the run's inputs before anything is written (bad input names its file or row).

        The runner calls it for every stage it will run, before it opens the store; what it returns is the
        stage's ``ctx.inputs[name]`` (the extraction's image list, read once).
        """
        return None

    def resolve(self, run: RunConfig, store: Store, executor: Executor) -> RunConfig:
        """``run`` with this stage's automatic settings decided (from the store and where it will run).

        The runner calls it for every stage it will run, before the run is recorded, so the record, the
        stage's manifest and every worker see one decision. Default: nothing to decide.
        """
        return run

    def identity(self, run: RunConfig) -> dict[str, Any]:
        """What decides this stage's results in a run: the inputs it reads and its identity settings.

        The run record keeps it per stage (``RunConfig.stage_identity``) and a rerun on the same prefix must
        match it; tuning settings (``setting(identity=False)``) are left out.
        """
        from vsp.config import section_identity

        out: dict[str, Any] = {
            need: run.norms_dict() if need == "norms" else getattr(run, need) for need in self.needs
        }
        out[self.name] = section_identity(run.settings(self.name))
        return out

    @property
    def manifest_key(self) -> str:
        """The stage's manifest: claimed once with its identity."""
        return f"{self.root}/manifest.json"

    @property
    def plan_key(self) -> str:
        """The unit keys of the last plan (``vsp status`` counts against it)."""
        return f"{self.root}/plan.json"

    def marker_key(self, key: str) -> str:
        """Where a unit's marker goes."""
        return f"{self.root}/done/{key}.json"

    def data_key(self, key: str, name: str) -> str:
        """A conventional place for a unit's data file ``name``."""
        return f"{self.root}/units/{key}/{name}"

    # -- the unit-based contract -----------------------------------------------------------------------------
    def plan(self, ctx: StageContext, config: Any) -> list[Unit]:
        """The stage's units, in order (keys unique, path-safe)."""
        raise NotImplementedError(f"stage {self.name}: plan() is not defined")

    def run_unit(self, store: Store, config: Any, unit: Unit) -> list[dict[str, Any]]:
        """Write one unit's data; return its outputs (``bookkeeping.write_output``). Runs on a worker."""
        raise NotImplementedError(f"stage {self.name}: run_unit() is not defined")

    def summarise(self, ctx: StageContext, config: Any, counts: dict[str, Any]) -> dict[str, Any]:
        """The stage's last step (tables over its units); returns the counts for run.json."""
        return counts

    def run(self, ctx: StageContext) -> dict[str, Any]:
        """Claim, plan, skip proven units, run the rest through the executor, summarise."""
        config = ctx.settings(self.name)
        store = ctx.store
        open_manifest(store, self.manifest_key, self.identity(ctx.config), f"{self.name} configuration")
        units = self.plan(ctx, config)
        keys = [u.key for u in units]
        if len(set(keys)) != len(keys):
            raise ValueError(f"stage {self.name}: unit keys repeat")
        store.write_json(self.plan_key, {"units": keys})
        done = self.done_units(store, keys)
        pending = [u for u in units if u.key not in done]
        progress = ctx.progress(self.name, self.unit_word, self.unit_word)
        task = _UnitTask(type(self), store.uri, config)
        for i, _ in enumerate(ctx.executor.map(task, pending, self.resources), 1):
            progress(len(done) + i, len(units))
        counts = {"units_total": len(units), "units_run": len(pending), "units_skipped": len(done)}
        counts = self.summarise(ctx, config, counts)
        counts.setdefault("summary", f"{self.name}: {len(pending)} of {len(units)} {self.unit_word} run")
        return counts

    # -- a stage with its own drivers (the actor pool, batched layers): one choice, one set of counts --------
    def drive(
        self,
        ctx: StageContext,
        remote: str,
        local: Callable[..., Any],
        *args: Any,
        what: str,
        ray_kw: dict[str, Any] | None = None,
        local_kw: dict[str, Any] | None = None,
    ) -> Any:
        """``cluster.<remote>(store uri, *args)`` when units fan out, else ``local(store, *args)`` here.

        Both get a progress callback counting ``what``; the local one the device (:func:`pick_device`), the
        distributed one ``connect`` (Ray is joined only if there is work).
        """
        progress = ctx.progress(self.name, self.unit_word, what)
        if ctx.distributed:
            driver = ctx.executor.remote(remote)
            return driver(ctx.store.uri, *args, progress=progress, connect=ctx.connect, **(ray_kw or {}))
        return local(ctx.store, *args, device=pick_device(), progress=progress, **(local_kw or {}))

    def counts(self, summary: Any, **extra: Any) -> dict[str, Any]:
        """run.json's counts of a summary: ``<unit_word>_total/_run/_skipped``, ``extra``, its line."""
        word = self.unit_word
        return {
            f"{word}_total": summary.units_total,
            f"{word}_run": summary.units_run,
            f"{word}_skipped": summary.units_total - summary.units_run,
            **extra,
            "summary": summary.line(),
        }

    # -- readers ---------------------------------------------------------------------------------------------
    def done_units(self, store: Store, keys: Iterable[str] | None = None) -> set[str]:
        """Keys of units whose marker proves its data (one listing of the stage's folder)."""
        prefix = f"{self.root}/done/"
        only = None if keys is None else [self.marker_key(k) for k in keys]
        scan = scan_markers(store, prefix, [f"{self.root}/"], only=only)
        return {k[len(prefix) : -len(".json")] for k in scan.done}

    def progress(self, store: Store) -> dict[str, Any] | None:
        """Units done of the last plan, for ``vsp status``; None when the stage never started here."""
        if not store.exists(self.plan_key):
            return None
        keys = store.read_json(self.plan_key).get("units", [])
        done = len(self.done_units(store, keys))
        return {"what": self.unit_word, "done": done, "total": len(keys), "complete": done == len(keys)}

    def marker_scans(self, store: Store) -> list[MarkerScan]:
        """Its markers checked against its data, one scan per marker folder (``marker_prefixes``).

        A stage whose older markers did not list their outputs overrides this with its own scan, which
        knows where such a unit's data lives.
        """
        prefixes = self.marker_prefixes if self.marker_prefixes is not None else (f"{self.root}/done",)
        return [scan_markers(store, f"{p}/", [f"{self.root}/"]) for p in prefixes]

    def outputs(self, store: Store) -> list[str]:
        """Store keys of the outputs its markers cover (the report lists them)."""
        docs = [doc for scan in self.marker_scans(store) for doc in scan.done.values()]
        return sorted({o["key"] for doc in docs for o in doc.get("outputs", [])})

    def verify(self, store: Store) -> tuple[int, list[str]]:
        """Re-read every marked output against its recorded sha256: (markers checked, markers that differ)."""
        checked, bad = 0, []
        prefixes = self.marker_prefixes if self.marker_prefixes is not None else (f"{self.root}/done",)
        for prefix in prefixes:
            keys = [k for k in store.list(prefix) if k.endswith(".json")]
            for key, doc in read_markers(store, keys).items():
                checked += 1
                if verify_outputs(store, doc):
                    bad.append(key)
        return checked, bad

    def has_results(self, store: Store) -> bool:
        """Whether the stage left results on the prefix (one existence check: its manifest)."""
        return store.exists(self.manifest_key)


@dataclass
class _UnitTask:
    """One unit on a worker: run it, then write its marker (picklable, so Ray tasks can carry it)."""

    stage: type[Stage]
    store_uri: str
    config: Any

    def __call__(self, unit: Unit) -> str:
        stage = self.stage()
        store = open_store(self.store_uri)
        outputs = stage.run_unit(store, self.config, unit)
        write_marker(store, stage.marker_key(unit.key), outputs, unit=unit.key)
        return unit.key
