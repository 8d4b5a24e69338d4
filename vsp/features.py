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

import logging
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any

import numpy as np
import zarr

from vsp.errors import ConfigMismatchError, VspInputError
from vsp.store import Store

log = logging.getLogger(__name__)

ROOT = "features"
ZARR_PATH = f"{ROOT}/features.zarr"
MANIFEST = f"{ROOT}/manifest.json"
DONE = f"{ROOT}/done"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ExtractionConfig:
    """Everything that decides the numbers in the feature arrays (the resumability key)."""

    models: tuple[str, ...] = ("alexnet", "vgg16", "resnet34", "densenet169")
    layers: str | tuple[str, ...] = "all-conv"
    weights: str = "random"
    seed: int = 0
    pooling: str = "max"
    unit_size: int = 16

    def __post_init__(self) -> None:
        if self.pooling not in ("max", "mean"):
            raise VspInputError(f"pooling must be 'max' or 'mean', got {self.pooling!r}")
        if self.unit_size < 1:
            raise VspInputError(f"unit_size must be >= 1, got {self.unit_size}")
        if not self.models:
            raise VspInputError("at least one model is needed")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples as lists), as recorded in the manifest."""
        d = asdict(self)
        d["models"] = list(self.models)
        d["layers"] = self.layers if isinstance(self.layers, str) else list(self.layers)
        return d


@dataclass(frozen=True)
class LayerInfo:
    """One tapped representation of one network: where it sits and how wide it is."""

    model: str
    name: str
    index: int
    kind: str
    channels: int

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
            "layers": [asdict(x) for x in self.layers],
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


def _diff_keys(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    keys = sorted(set(a) | set(b))
    diff = [k for k in keys if a.get(k) != b.get(k)]
    if "config" in diff:
        ca, cb = a.get("config", {}), b.get("config", {})
        diff = [f"config.{k}" for k in sorted(set(ca) | set(cb)) if ca.get(k) != cb.get(k)] + [
            k for k in diff if k != "config"
        ]
    return diff


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

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- coordinator -------------------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any] | None:
        """The features manifest, or None when nothing was extracted here."""
        return self.store.read_json(MANIFEST) if self.store.exists(MANIFEST) else None

    def create(self, plan: FeaturePlan) -> bool:
        """Create every array at its final shape, then the manifest; False when it already exists.

        A prefix that holds a different configuration is refused with ConfigMismatchError.
        """
        existing = self.manifest()
        want = plan.identity()
        if existing is not None:
            have = existing.get("identity", {})
            if have != want:
                raise ConfigMismatchError(
                    f"{self.store.uri}/{MANIFEST} holds a different extraction run "
                    f"(differs in: {', '.join(_diff_keys(have, want))}); "
                    "use a new --store prefix, or delete the old one to start over"
                )
            return False
        root = zarr.open_group(store=self.store.zarr_store(ZARR_PATH), mode="a", zarr_format=3)
        u, n, m = plan.config.unit_size, len(plan.concepts), plan.max_images
        root.attrs.update({"concepts": plan.concepts, "format": FORMAT_VERSION})
        root.create_array("n_images", shape=(n,), chunks=(u,), dtype="int32", fill_value=0, overwrite=True)
        for layer in plan.layers:
            grp = root.require_group(layer.model)
            attrs = {
                **asdict(layer),
                "pooling": plan.config.pooling,
                "weights_identity": plan.weights_identity[layer.model],
                "dims": ["concept", "channel"],
            }
            arr = grp.create_array(
                layer.name,
                shape=(n, layer.channels),
                chunks=(u, layer.channels),
                dtype="float32",
                fill_value=float("nan"),
                overwrite=True,
                dimension_names=("concept", "channel"),
            )
            arr.attrs.update(attrs)
            img = grp.require_group("images").create_array(
                layer.name,
                shape=(n, m, layer.channels),
                chunks=(u, m, layer.channels),
                dtype="float32",
                fill_value=float("nan"),
                overwrite=True,
                dimension_names=("concept", "image", "channel"),
            )
            img.attrs.update({**attrs, "dims": ["concept", "image", "channel"]})
        self.store.write_json(
            MANIFEST,
            {
                "identity": want,
                "versions": package_versions(),
                "units": [list(x) for x in plan.units],
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
        )
        log.info("created %d layer arrays for %d concepts in %s", len(plan.layers), n, self.store.uri)
        return True

    # -- units -------------------------------------------------------------------------------------------
    @staticmethod
    def marker_path(unit: int) -> str:
        """Where a unit's done-marker lives."""
        return f"{DONE}/unit-{unit:05d}.json"

    def is_done(self, unit: int) -> bool:
        """Whether the unit finished (its marker exists)."""
        return self.store.exists(self.marker_path(unit))

    def done_units(self) -> set[int]:
        """Indices of every finished unit."""
        keys = self.store.list(DONE)
        return {
            int(k.rsplit("unit-", 1)[1].split(".")[0]) for k in keys if "unit-" in k and k.endswith(".json")
        }

    def pending_units(self, plan: FeaturePlan) -> list[int]:
        """Units of the plan without a marker, in order."""
        done = self.done_units()
        return [i for i in range(len(plan.units)) if i not in done]

    def write_unit(self, plan: FeaturePlan, result: UnitResult) -> None:
        """Write the unit's whole chunks of every array, then its marker (never the other way round)."""
        start, stop = plan.units[result.unit]
        root = zarr.open_group(store=self.store.zarr_store(ZARR_PATH), mode="r+", zarr_format=3)
        for layer in plan.layers:
            cv = result.concept_vectors[layer.path]
            iv = result.image_vectors[layer.path]
            if cv.shape != (stop - start, layer.channels):
                raise ValueError(
                    f"unit {result.unit} {layer.path}: shape {cv.shape} != {(stop - start, layer.channels)}"
                )
            root[f"{layer.model}/{layer.name}"][start:stop] = cv.astype(np.float32, copy=False)
            root[f"{layer.model}/images/{layer.name}"][start:stop] = iv.astype(np.float32, copy=False)
        root["n_images"][start:stop] = result.n_images.astype(np.int32)
        self.store.write_json(
            self.marker_path(result.unit),
            {
                "unit": result.unit,
                "concepts": [start, stop],
                "n_images": int(result.n_images.sum()),
                "skipped": result.skipped,
                "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
        )

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

    def complete(self) -> bool:
        """Whether every unit of the run has its marker."""
        man = self.manifest()
        return man is not None and len(self.done_units()) == len(man["units"])


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
    from vsp.extract import concept_vector

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
