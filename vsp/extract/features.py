"""The Zarr feature layout: one coordinator plans and creates every array, units fill whole chunks.

Layout under a store prefix (see docs/architecture.md)::

    features/manifest.json                       configuration, versions, weights identity, concepts, images
    features/features.zarr/<model>/<tap>         (n_concepts, C) float32, chunk = (unit_size, C)
    features/features.zarr/<model>/images/<tap>  (n_concepts, max_images, C) float32, NaN-padded
    features/features.zarr/n_images              (n_concepts,) int32
    features/done/unit-00000.json                marker, written after the unit's data

Why this shape: distributed writers must never touch array metadata or share a chunk (zarr issues 2077, 2729,
3514). The coordinator creates every array at its final shape before any worker writes; the concept axis is
chunked by the work unit, so each unit owns whole chunks of every array and a retried unit overwrites exactly
the same chunks. A unit is done only if its marker exists, and the marker is written after the data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from importlib import metadata
from typing import Any

import numpy as np
import zarr
from zarr.errors import ContainsArrayError, ContainsGroupError

from vsp.config import WEIGHTS_SEED_MAX, field_default, manifest_fields, setting, unrecorded
from vsp.data.preprocess import TORCHVISION, Preprocessing
from vsp.errors import ConfigMismatchError, VspInputError
from vsp.io.bookkeeping import digest, mismatch, now, open_manifest, scan_markers, write_marker
from vsp.io.store import Store

log = logging.getLogger(__name__)

ROOT = "features"
ZARR_PATH = f"{ROOT}/features.zarr"
MANIFEST = f"{ROOT}/manifest.json"
DONE = f"{ROOT}/done"
LAYOUT = f"{ROOT}/layout.json"
FORMAT_VERSION = 2  # 2: claimed layout, markers that list their chunks, JPEG draft above 20 MP


@dataclass(frozen=True)
class ExtractionConfig:
    """Everything that decides the numbers in the feature arrays (the resumability key).

    ``layers``: ``"paper"`` (default), ``"all-conv"``, ``"re:<regex>"`` or module names
    (`vsp.extract.networks`). ``activation``: the value each layer pools, ``"conv"`` (default: the tapped
    module's own output), ``"bn"`` (after the BatchNorm that follows it) or ``"relu"`` (that through a ReLU);
    see `vsp.extract.networks`.
    """

    models: tuple[str, ...] = ("alexnet", "vgg16", "resnet34", "densenet169")
    layers: str | tuple[str, ...] = "paper"  # read by vsp.config's extract.layers hook
    weights: str = "imagenet"  # imagenet | random | path or URI of a state_dict (resolved by vsp.config)
    seed: int = setting(0, minimum=0, maximum=WEIGHTS_SEED_MAX, doc="seed of random weights")
    pooling: str = setting("max", choices=("max", "mean", "cls"))
    unit_size: int = setting(16, minimum=1, doc="concepts per work unit (= Zarr chunk rows)")
    activation: str = setting("conv", choices=("conv", "bn", "relu"))
    #: forward-pass precision: ``bfloat16`` autocast (GPUs) gives other numbers than float32, so it is
    #: identity and a bf16 run never resumes (or mixes into) a float32 store
    precision: str = setting("float32", choices=("float32", "bfloat16"), added=True, doc="forward precision")
    #: channels-last memory format: float sums in another order, so identity. ``None`` (auto, the default) is
    #: resolved before anything is planned (:func:`vsp.extract.stage.resolve_channels_last`): what the store
    #: already holds, else channels-last on a CPU with oneDNN (measured 1.2-1.3x there), channels-first on a
    #: GPU (not yet measured there). Stores written before the setting existed are channels-first (implied).
    channels_last: bool | None = setting(
        None, added=True, implied=False, doc="channels-last memory format (default: auto)"
    )
    #: ``pil`` (PIL decoding and resizing, the reference) or ``torchvision`` (``torchvision.io.decode_jpeg``
    #: on the extraction device, resize and crop there: the GPU input pipeline, other pixels than PIL's)
    decoder: str = setting("pil", choices=("pil", "torchvision"), added=True, doc="image decoder")
    #: ``None`` (auto): 32 on a CPU, on a GPU from its free memory (`vsp.extract.stage.choose_batch_size`)
    batch_size: int | None = setting(None, identity=False, minimum=1, doc="images per forward pass (or auto)")
    actors: int | None = setting(None, identity=False, minimum=1, doc="extraction actors (default: per GPU)")
    #: extract only concepts present in the norms (when norms are given); identity in the run's record, but
    #: not in the feature manifest (the concepts themselves are)
    only_norm_concepts: bool = setting(True, manifest=False)
    #: read symbolic links and manifest uris that lead outside the image root (`--follow-links`); the images
    #: read are in the feature manifest's identity, so this only permits, it decides nothing
    follow_links: bool = setting(False, identity=False)

    def __post_init__(self) -> None:
        if self.pooling not in ("max", "mean", "cls"):
            raise VspInputError(f"pooling must be 'max', 'mean' or 'cls', got {self.pooling!r}")
        if self.activation not in ("conv", "bn", "relu"):
            raise VspInputError(f"activation must be 'conv', 'bn' or 'relu', got {self.activation!r}")
        if self.unit_size < 1:
            raise VspInputError(f"unit_size must be >= 1, got {self.unit_size}")
        if not self.models:
            raise VspInputError("at least one model is needed")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples as lists), as recorded in the manifest."""
        d = manifest_fields(self)  # the fields of the release before tuning moved here: byte-identical
        for f in fields(self):  # settings added later: recorded only when set, so earlier stores resume
            if unrecorded(f, d.get(f.name, field_default(f))):
                d.pop(f.name, None)
        d["models"] = list(self.models)
        d["layers"] = self.layers if isinstance(self.layers, str) else list(self.layers)
        return d


@dataclass(frozen=True)
class LayerInfo:
    """One tapped representation of one network: where it sits and how wide it is.

    ``activation``: the point pooled for this tap (``conv``, ``bn``, ``relu``, ``classifier-input``; a
    ``bn`` request on a tap that no BatchNorm follows records ``conv``); ``bn``: the BatchNorm read for it,
    with its channel slice (``""``: none). See `vsp.extract.networks.activation_taps`.
    """

    model: str
    name: str
    index: int
    kind: str
    channels: int
    activation: str = "conv"
    bn: str = ""
    #: ``nhwc`` or ``tokens`` (`vsp.extract.layouts`); ``""``: a channels-first map or the penultimate vector,
    #: the only layouts before layouts were recorded, so a record of an earlier release reads the same
    layout: str = ""

    def record(self) -> dict[str, Any]:
        """The identity record: ``layout`` only where it is not ``""``, so earlier records stay the same."""
        d = asdict(self)
        if not d["layout"]:
            del d["layout"]
        return d

    @property
    def path(self) -> str:
        """The array path ``<model>/<tap>`` inside the Zarr group."""
        return f"{self.model}/{self.name}"


@dataclass
class FeaturePlan:
    """The coordinator's plan: concepts, their images, the layers and the work units."""

    config: ExtractionConfig
    concepts: list[str]
    images: dict[str, list[str]]
    layers: list[LayerInfo]
    weights_identity: dict[str, str]
    units: list[tuple[int, int]] = field(default_factory=list)
    dropped: dict[str, list[str]] = field(default_factory=dict)  # concept -> why none of its images is usable
    #: model group -> how its images are preprocessed (`vsp.data.preprocess`; absent: torchvision's)
    preprocessing: dict[str, Preprocessing] = field(default_factory=dict)
    #: model group -> spec, family, preprocessing of each non-torchvision model (`vsp.extract.sources`)
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.concepts:
            raise VspInputError("no concepts to extract: the image manifest is empty")
        empty = [c for c in self.concepts if not self.images.get(c)]
        if empty:
            raise VspInputError(f"concepts without images: {', '.join(empty[:10])}")
        if not self.units:
            n, u = len(self.concepts), self.config.unit_size
            self.units = [(s, min(s + u, n)) for s in range(0, n, u)]

    @property
    def preprocessings(self) -> list[Preprocessing]:
        """The distinct preprocessings the models need (torchvision's alone when none is recorded)."""
        return list({p.key: p for p in self.preprocessing.values()}.values()) or [TORCHVISION]

    @property
    def max_images(self) -> int:
        """The largest image count of any concept (the padded image axis)."""
        return max(len(v) for v in self.images.values())

    def identity(self) -> dict[str, Any]:
        """What must match for a rerun on the same prefix to be the same run."""
        return {
            "format": FORMAT_VERSION,
            "config": self.config.to_json(),
            "concepts": list(self.concepts),
            "images": {c: list(self.images[c]) for c in self.concepts},
            "weights_identity": dict(self.weights_identity),
            "layers": [x.record() for x in self.layers],
            **({"sources": dict(self.sources)} if self.sources else {}),
        }


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide the numbers, recorded in every manifest."""
    out = {"python": platform.python_version()}
    for pkg in ("vsp", "torch", "torchvision", "numpy", "zarr", "pillow", "scikit-learn"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "absent"
    return out


@dataclass
class UnitResult:
    """What one unit writes: per-concept vectors and per-image vectors for every layer."""

    unit: int
    concept_vectors: dict[str, np.ndarray]  # layer path -> (u, C)
    image_vectors: dict[str, np.ndarray]  # layer path -> (u, max_images, C) NaN padded
    n_images: np.ndarray  # (u,)
    skipped: list[dict[str, str]] = field(default_factory=list)  # unreadable images: uri, reason


class FeatureStore:
    """Reads and writes the feature layout under one store prefix."""

    #: chunks of one unit written at once (each zarr write waits on its own I/O; S3 most of all)
    WRITE_THREADS = 8

    def __init__(self, store: Store) -> None:
        self.store = store
        # arrays opened for writing, by path: a prefix's arrays never change once created (the manifest
        # claim refuses any other configuration on it), so each is opened once per process, not per unit
        self._arrays: dict[str, zarr.Array] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"store": self.store}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["store"])

    def _array(self, root: zarr.Group | None, path: str) -> zarr.Array:
        if path not in self._arrays:
            if root is None:
                root = zarr.open_group(store=self.store.zarr_store(ZARR_PATH), mode="r+", zarr_format=3)
            self._arrays[path] = root[path]
        return self._arrays[path]

    # -- coordinator -------------------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any] | None:
        """The features manifest, or None when nothing was extracted here."""
        return self.store.read_json(MANIFEST) if self.store.exists(MANIFEST) else None

    def create(self, plan: FeaturePlan) -> bool:
        """Claim the prefix for this run, then create every array at its final shape; True if claimed here.

        Creation never destroys: the manifest is claimed exclusively (`vsp.io.bookkeeping.open_manifest`), a
        prefix that holds a different configuration is refused with ConfigMismatchError, and every array is
        created only if absent (an existing one with the same metadata is joined, one with other metadata is
        refused). A second driver on the same run joins the layout: it checks (and, if the first driver died
        during set-up, completes) the arrays without touching a chunk. ``features/layout.json`` records that
        the layout is complete, so a rerun skips the checks.
        """
        want = plan.identity()
        extra = {
            "versions": package_versions(),
            "units": [list(x) for x in plan.units],
            "dropped_concepts": dict(plan.dropped),
        }
        _, created = open_manifest(self.store, MANIFEST, want, "extraction run", extra=extra)
        want_sha = digest(want)
        if self.store.exists(LAYOUT) and self.store.read_json(LAYOUT).get("identity_sha256") == want_sha:
            return created
        self._ensure_arrays(plan)
        self.store.write_json(LAYOUT, {"identity_sha256": want_sha, "finished": now()})
        log.info(
            "feature layout: %d layers, %d concepts in %s",
            len(plan.layers),
            len(plan.concepts),
            self.store.uri,
        )
        return created

    def _ensure_arrays(self, plan: FeaturePlan) -> None:
        zstore = self.store.zarr_store(ZARR_PATH)
        root_attrs = {"concepts": plan.concepts, "format": FORMAT_VERSION}
        try:
            root = zarr.create_group(store=zstore, zarr_format=3, attributes=root_attrs, overwrite=False)
        except (ContainsGroupError, ContainsArrayError):
            root = zarr.open_group(store=zstore, mode="r+", zarr_format=3)
            _check_attrs(self.store, ZARR_PATH, dict(root.attrs), root_attrs)
        u, n, m = plan.config.unit_size, len(plan.concepts), plan.max_images
        concepts = np.array(plan.concepts, dtype=object)
        uris = np.full((n, m), "", dtype=object)
        for i, c in enumerate(plan.concepts):
            uris[i, : len(plan.images[c])] = plan.images[c]
        _ensure_array(self.store, root, "n_images", (n,), (u,), "int32", 0, ("concept",), {})
        _ensure_labels(self.store, root, "concept", concepts, ("concept",))
        models = list(dict.fromkeys(x.model for x in plan.layers))
        for model in models:
            grp = root.require_group(model)
            img = grp.require_group("images")
            clash = {x.name for x in plan.layers if x.model == model} & set(LABELS)
            if clash:
                raise VspInputError(
                    f"{model}: layer names {sorted(clash)} clash with the label arrays {LABELS}"
                )
            _ensure_labels(self.store, grp, "concept", concepts, ("concept",))
            _ensure_labels(self.store, img, "concept", concepts, ("concept",))
            _ensure_labels(self.store, img, "image", np.arange(m, dtype=np.int32), ("image",))
            _ensure_labels(self.store, img, "uri", uris, ("concept", "image"))
        for layer in plan.layers:
            grp = root[layer.model]
            dim = channel_dim(layer.name)
            attrs = {
                **layer.record(),
                "pooling": plan.config.pooling,
                "weights_identity": plan.weights_identity[layer.model],
                "dims": ["concept", dim],
            }
            shape, chunks = (n, layer.channels), (u, layer.channels)
            nan = float("nan")
            _ensure_array(self.store, grp, layer.name, shape, chunks, "float32", nan, ("concept", dim), attrs)
            _ensure_array(
                self.store,
                grp["images"],
                layer.name,
                (n, m, layer.channels),
                (u, m, layer.channels),
                "float32",
                nan,
                ("concept", "image", dim),
                {**attrs, "dims": ["concept", "image", dim]},
            )

    # -- units -------------------------------------------------------------------------------------------
    @staticmethod
    def marker_path(unit: int) -> str:
        """Where a unit's done-marker lives."""
        return f"{DONE}/unit-{unit:05d}.json"

    def is_done(self, unit: int) -> bool:
        """Whether the unit finished: its marker exists and every chunk it lists is in the store."""
        return unit in self.done_units()

    def unit_status(self) -> tuple[set[int], set[int]]:
        """(done, invalid): units whose marker proves its chunks, and units with a marker that does not."""
        man = self.manifest()
        if man is None:
            return set(), set()
        layers = [LayerInfo(**x) for x in man.get("identity", {}).get("layers", [])]
        units = man.get("units", [])

        def legacy(_key: str, doc: dict[str, Any]) -> list[dict[str, Any]]:
            i = int(doc.get("unit", -1))
            if not 0 <= i < len(units):
                return [{"key": f"{ZARR_PATH}/missing-unit-{i}"}]
            return [{"key": key} for _, key in unit_chunks(layers, units[i][0] // _unit_size(man))]

        scan = scan_markers(self.store, DONE, [ZARR_PATH], legacy_outputs=legacy)
        return {_unit_of(k) for k in scan.done}, {_unit_of(k) for k in scan.invalid}

    def done_units(self) -> set[int]:
        """Indices of every finished unit (marker present and its data present)."""
        return self.unit_status()[0]

    def pending_units(self, plan: FeaturePlan) -> list[int]:
        """Units of the plan not proven done, in order (a unit whose data is gone is redone)."""
        done = self.done_units()
        return [i for i in range(len(plan.units)) if i not in done]

    def write_unit(self, plan: FeaturePlan, result: UnitResult) -> None:
        """Write the unit's whole chunks of every array, then the marker that lists them (never reversed)."""
        from concurrent.futures import ThreadPoolExecutor

        start, stop = plan.units[result.unit]
        chunk = start // plan.config.unit_size
        root = (
            None
            if self._arrays
            else zarr.open_group(self.store.zarr_store(ZARR_PATH), mode="r+", zarr_format=3)
        )
        values = hashlib.sha256()
        blocks: list[tuple[np.ndarray, float]] = []  # in unit_chunks order, with each array's fill value
        for layer in plan.layers:
            cv = result.concept_vectors[layer.path]
            iv = result.image_vectors[layer.path]
            if cv.shape != (stop - start, layer.channels):
                raise ValueError(
                    f"unit {result.unit} {layer.path}: shape {cv.shape} != {(stop - start, layer.channels)}"
                )
            blocks.append((cv.astype(np.float32, copy=False), np.nan))
            blocks.append((iv.astype(np.float32, copy=False), np.nan))
        blocks.append((result.n_images.astype(np.int32), 0))
        outputs = []
        chunks = list(zip(unit_chunks(plan.layers, chunk), blocks, strict=True))
        arrays = [self._array(root, path) for (path, _), _ in chunks]

        def put(i: int) -> None:
            arrays[i][start:stop] = chunks[i][1][0]

        with ThreadPoolExecutor(self.WRITE_THREADS, thread_name_prefix="vsp-chunks") as pool:
            list(pool.map(put, range(len(chunks))))  # every chunk written (or the first error raised)
        for (_path, key), (block, fill) in chunks:
            values.update(key.encode())
            values.update(np.ascontiguousarray(block).tobytes())
            empty = np.isnan(block).all() if np.isnan(fill) else bool((block == fill).all())
            if not empty:  # zarr stores no chunk that holds only the fill value
                outputs.append({"key": key})
        write_marker(
            self.store,
            self.marker_path(result.unit),
            outputs,
            unit=result.unit,
            concepts=[start, stop],
            n_images=int(result.n_images.sum()),
            skipped=result.skipped,
            values_sha256=values.hexdigest(),
        )

    def verify_unit(self, unit: int) -> bool:
        """Deep check: re-read the unit's chunks and compare them with the value digest of its marker."""
        man = self._require_manifest()
        doc = self.store.read_json(self.marker_path(unit))
        if "values_sha256" not in doc:
            return unit in self.done_units()
        start, stop = man["units"][unit]
        root = self._root()
        layers = [LayerInfo(**x) for x in man["identity"]["layers"]]
        values = hashlib.sha256()
        for path, key in unit_chunks(layers, start // _unit_size(man)):
            values.update(key.encode())
            values.update(np.ascontiguousarray(root[path][start:stop]).tobytes())
        return values.hexdigest() == doc["values_sha256"]

    # -- readers -----------------------------------------------------------------------------------------
    def _root(self) -> zarr.Group:
        self._require_manifest()
        return zarr.open_group(store=self.store.zarr_store(ZARR_PATH), mode="r", zarr_format=3)

    def _require_manifest(self) -> dict[str, Any]:
        man = self.manifest()
        if man is None:
            raise FileNotFoundError(f"no features at {self.store.uri}: run `vsp extract` first")
        return man

    def concepts(self) -> list[str]:
        """The concept of each row, in array order."""
        return list(self._require_manifest()["identity"]["concepts"])

    def layers(self) -> list[LayerInfo]:
        """Every stored layer with its model, index, kind and width."""
        return [LayerInfo(**x) for x in self._require_manifest()["identity"]["layers"]]

    def read(self, model: str, name: str) -> np.ndarray:
        """Per-concept vectors (n_concepts, C) of one layer."""
        root = self._root()
        try:
            return np.asarray(root[f"{model}/{name}"][:])
        except KeyError:
            raise VspInputError(f"{self.store.uri}: no layer {name!r} of model {model!r}") from None

    def read_images(self, model: str, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Per-image vectors (n_concepts, max_images, C), NaN padded, and the image count per concept."""
        root = self._root()
        return np.asarray(root[f"{model}/images/{name}"][:]), np.asarray(root["n_images"][:])

    def dataset(self, model: str, images: bool = False) -> Any:
        """One network's features as a labelled ``xarray.Dataset`` (needs xarray).

        Variables are the layers, ``(concept, channel_<layer>)``; with ``images=True`` the per-image vectors
        ``(concept, image, channel_<layer>)`` with the ``uri`` of each slot ("" for padding). Lazy: values are
        read from the store when used. Equivalent to ``xarray.open_zarr(<store>/features/features.zarr,
        group=model, consolidated=False)``.
        """
        try:
            import xarray as xr
        except ImportError as e:
            raise VspInputError("FeatureStore.dataset needs xarray: pip install xarray") from e
        man = self._require_manifest()
        if man["identity"].get("format", 1) < 2:
            raise VspInputError(
                f"{self.store.uri}: features written by an older vsp carry no labels for xarray; "
                "read them with FeatureStore.read"
            )
        if model not in {x.model for x in self.layers()}:
            raise VspInputError(f"{self.store.uri}: no features of model {model!r}")
        group = f"{model}/images" if images else model
        return xr.open_zarr(self.store.zarr_store(ZARR_PATH), group=group, consolidated=False)

    def complete(self) -> bool:
        """Whether every unit of the run is proven done (marker and data)."""
        man = self.manifest()
        return man is not None and self.done_units() >= set(range(len(man["units"])))


def _unit_of(marker_key: str) -> int:
    return int(marker_key.rsplit("unit-", 1)[1].split(".")[0])


def _unit_size(manifest: Mapping[str, Any]) -> int:
    return int(manifest.get("identity", {}).get("config", {}).get("unit_size", 16))


def unit_chunks(layers: Sequence[LayerInfo], chunk: int) -> list[tuple[str, str]]:
    """(array path in the group, store key of its chunk) of every array one unit writes, in write order.

    Per layer the concept array then the image array, then ``n_images``; keys follow zarr v3's default
    chunk-key encoding (``c/<i>/<j>...``). The marker lists these keys; the deep check re-reads them.
    """
    out = []
    for x in layers:
        out.append((f"{x.model}/{x.name}", f"{ZARR_PATH}/{x.model}/{x.name}/c/{chunk}/0"))
        out.append((f"{x.model}/images/{x.name}", f"{ZARR_PATH}/{x.model}/images/{x.name}/c/{chunk}/0/0"))
    out.append(("n_images", f"{ZARR_PATH}/n_images/c/{chunk}"))
    return out


LABELS = ("concept", "image", "uri")  # coordinate arrays beside the layers, written by the coordinator


def channel_dim(layer: str) -> str:
    """The channel dimension's name of one layer, ``channel_<layer>``.

    Layers differ in width, so a model group opens as one xarray Dataset only if each layer names its own
    channel axis.
    """
    return f"channel_{layer}"


def _ensure_labels(
    store: Store, group: zarr.Group, name: str, values: np.ndarray, dims: tuple[str, ...]
) -> None:
    """A coordinate array (concept names, image slots, image uris): created and filled once, then checked.

    The values are fixed by the plan, so a second driver writing them writes the same bytes; labels that
    differ from the plan's are refused.
    """
    text = values.dtype == object
    want = values.astype(str) if text else values
    try:
        arr = group.create_array(
            name,
            shape=values.shape,
            chunks=values.shape,
            dtype=str if text else values.dtype,
            fill_value="" if text else 0,
            overwrite=False,
            dimension_names=dims,
        )
    except ContainsArrayError:
        arr = group[name]
        have = np.asarray(arr[...])
        if have.shape == want.shape and (have == want).all():
            return
        unfilled = (have == ("" if text else 0)).all()  # the creator stopped before writing them
        if have.shape != want.shape or not unfilled:
            path = f"{ZARR_PATH}/{group.path}/{name}"
            raise ConfigMismatchError(
                f"{store.uri}/{path} holds other labels; use a new --store prefix"
            ) from None
    arr[...] = want


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


_NEW_PREFIX = "use a new --store prefix, or delete the old one to start over"


def _check_attrs(store: Store, path: str, have: Mapping[str, Any], want: Mapping[str, Any]) -> None:
    if _jsonable(dict(have)) != _jsonable(dict(want)):
        diff = sorted(k for k in set(have) | set(want) if _jsonable(have.get(k)) != _jsonable(want.get(k)))
        raise mismatch(f"{store.uri}/{path}", "array (attributes)", diff, _NEW_PREFIX)


def _ensure_array(
    store: Store,
    group: zarr.Group,
    name: str,
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    dtype: str,
    fill_value: float,
    dimension_names: tuple[str, ...] | None,
    attributes: Mapping[str, Any],
) -> None:
    """Create the array if absent; join an identical one; refuse one with other metadata. Never overwrites."""
    path = f"{ZARR_PATH}/{group.path}/{name}".replace("//", "/").rstrip("/")
    try:
        group.create_array(
            name,
            shape=shape,
            chunks=chunks,
            dtype=dtype,
            fill_value=fill_value,
            overwrite=False,
            dimension_names=dimension_names,
            attributes=dict(attributes),
        )
        return
    except ContainsArrayError:
        pass
    except ContainsGroupError:
        raise ConfigMismatchError(
            f"{store.uri}/{path} is a group, not an array; use a new --store prefix"
        ) from None
    arr = group[name]
    have = {
        "shape": tuple(arr.shape),
        "chunks": tuple(arr.chunks),
        "dtype": str(arr.dtype),
        "dimension_names": tuple(arr.metadata.dimension_names or ()) or None,
    }
    want = {"shape": shape, "chunks": chunks, "dtype": str(np.dtype(dtype))}
    want["dimension_names"] = dimension_names
    diff = [k for k in want if have[k] != want[k]]
    fv = arr.fill_value
    same_fill = (np.isnan(fv) and np.isnan(fill_value)) if np.isnan(fill_value) else fv == fill_value
    if not same_fill:
        diff.append("fill_value")
    if diff:
        raise mismatch(f"{store.uri}/{path}", "array (metadata)", diff, _NEW_PREFIX)
    _check_attrs(store, path, dict(arr.attrs), attributes)


def assemble_unit(
    unit: int,
    layers: Sequence[LayerInfo],
    per_image: Mapping[str, np.ndarray],
    concept_of_image: Sequence[int],
    n_concepts: int,
    max_images: int,
    skipped: list[dict[str, str]] | None = None,
) -> UnitResult:
    """Turn per-image pooled vectors of one unit into concept rows (mean, then L2) and padded image rows.

    ``concept_of_image[i]`` is the unit-local concept index of image i (images in manifest order).
    """
    from vsp.extract.hooks import concept_vector

    owner = np.asarray(concept_of_image, dtype=np.int64)
    counts = np.bincount(owner, minlength=n_concepts)
    if (counts == 0).any():
        missing = np.flatnonzero(counts == 0).tolist()
        raise VspInputError(
            f"unit {unit}: concepts {missing} have no readable image (see the skipped images)"
        )
    slot = np.zeros_like(owner)
    for c in range(n_concepts):
        slot[owner == c] = np.arange(counts[c])
    concept_vectors, image_vectors = {}, {}
    for layer in layers:
        x = per_image[layer.path]
        cv = np.stack([concept_vector(x[owner == c]) for c in range(n_concepts)])
        iv = np.full((n_concepts, max_images, x.shape[1]), np.nan, dtype=np.float32)
        iv[owner, slot] = x
        concept_vectors[layer.path] = cv.astype(np.float32)
        image_vectors[layer.path] = iv
    return UnitResult(unit, concept_vectors, image_vectors, counts.astype(np.int32), list(skipped or []))


def layer_differences(reference: FeatureStore, other: FeatureStore) -> dict[str, float]:
    """Max relative difference per layer of two stores of the same images and layers.

    ``max |a - b| / max |a|`` over the concept rows: a bfloat16 or channels-last run against its float32
    reference.
    """
    have = {x.path for x in other.layers()}
    out: dict[str, float] = {}
    for layer in reference.layers():
        if layer.path not in have:
            raise VspInputError(f"{other.store.uri} has no layer {layer.path}")
        a = reference.read(layer.model, layer.name).astype(np.float64)
        b = other.read(layer.model, layer.name).astype(np.float64)
        scale = float(np.abs(a).max()) or 1.0
        out[layer.path] = float(np.abs(a - b).max()) / scale
    return out
