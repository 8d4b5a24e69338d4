"""The run configuration: one YAML (or TOML/JSON) file that records everything a pipeline run depends on.

Example (``vsp run run.yaml``, ``vsp submit --address http://HEAD:8265 run.yaml``)::

    images: s3://my-bucket/photos/            # folder tree, s3:// prefix, or CSV/Parquet manifest
    store: s3://my-bucket/runs/r1             # where every stage writes (local folder or s3://)
    norms: s3://my-bucket/cslb/norms.dat      # or {path: ..., min_pf: 5, min_concepts: 5}
    stages: [extract, decode, meta, map, similarity, report]   # the default: the whole pipeline
    extract:
      models: [alexnet, vgg16, resnet34, densenet169]
      layers: paper                           # paper | all-conv | re:<regex> | [name, name, ...]
      weights: imagenet                       # imagenet | random | path or s3:// URI of a state_dict
      seed: 0
      pooling: max
      activation: conv                        # conv | bn | relu: the value pooled (vsp.extract.networks)
      unit_size: 16
      batch_size: 32
    decode:
      folds: 5
      seed: 0
      C: 1.0
    meta:
      kinds: [penultimate, svd, 1ton]
      dim: 300
      k: 300
      text: glove                             # glove | path of a GloVe/word2vec text file | none
    map:
      mappers: [knn, ridge, mlp]
      repeats: 5
      folds: 10
    similarity: {}                            # default: MEN and SimLex-999 under $VSP_SHARED_DATA
    report:
      out: report.html                        # default: <store>/report.html for a local store

Relative local paths are resolved against the folder of the configuration file. Every error names the key at
fault (``extract.unit_size: must be an integer >= 1, got 0``). ``identity()`` is what decides each stage's
results: a second run on the same store prefix must have the same identity for every stage it shares with the
first (``vsp.runrecord`` enforces it); keys such as ``batch_size`` or ``stages`` change how a run goes, not
what it computes, and are left out of it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from vsp.errors import VspInputError

# Every stage of the pipeline, in the order it runs. `jobs/` says which of them are built so far.
STAGE_ORDER = ("extract", "decode", "meta", "map", "similarity", "report")
DEFAULT_STAGES = STAGE_ORDER  # the whole pipeline; decode and map need the norms section
NEEDS_NORMS = ("decode", "map")
LAYER_SELECTIONS = ("all-conv", "paper")
WEIGHTS_NAMED = ("imagenet", "random")
#: Largest seed of a stage whose folds or shuffles go through numpy's RandomState (scikit-learn's
#: ``random_state``): decode, meta, map, and `vsp demo`.
SEED_MAX = 2**32 - 1
#: Largest seed of random network weights (``torch.manual_seed``; kept within int64 for JSON and Parquet).
WEIGHTS_SEED_MAX = 2**63 - 1


def check_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an integer within [minimum, maximum]; VspInputError naming ``name`` (a key or option)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise VspInputError(f"{name}: must be an integer, got {value!r}")
    low = minimum is not None and value < minimum
    if maximum is not None and (low or value > maximum):
        bound = f"from {minimum} to {maximum}" if minimum is not None else f"<= {maximum}"
        raise VspInputError(f"{name}: must be an integer {bound}, got {value}")
    if low:
        raise VspInputError(f"{name}: must be an integer >= {minimum}, got {value}")
    return value


def check_number(name: str, value: Any, *, positive: bool = False, minimum: float | None = None) -> float:
    """``value`` as a finite float (> 0 with ``positive``, >= ``minimum``); VspInputError naming ``name``."""
    import math

    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise VspInputError(f"{name}: must be a number, got {value!r}")
    if positive and not value > 0:
        raise VspInputError(f"{name}: must be > 0, got {value}")
    if minimum is not None and value < minimum:
        raise VspInputError(f"{name}: must be >= {minimum:g}, got {value}")
    return float(value)


def _is_uri(text: str) -> bool:
    return "://" in text


def _resolve(text: str, base: Path | None) -> str:
    """A local path relative to the configuration's folder becomes absolute; URIs pass through."""
    if _is_uri(text) or base is None:
        return text
    p = Path(text).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


class _Section:
    """Reads one mapping of the configuration, naming ``<section>.<key>`` in every error."""

    def __init__(self, data: Any, name: str, allowed: tuple[str, ...]) -> None:
        where = name or "the configuration"
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise VspInputError(f"{where}: must be a mapping of keys to values, got {type(data).__name__}")
        unknown = sorted(set(map(str, data)) - set(allowed))
        if unknown:
            raise VspInputError(
                f"{self._key(name, unknown[0])}: unknown key; allowed keys{' in ' + name if name else ''}: "
                f"{', '.join(allowed)}"
            )
        self.data = data
        self.name = name

    @staticmethod
    def _key(section: str, key: str) -> str:
        return f"{section}.{key}" if section else key

    def key(self, key: str) -> str:
        return self._key(self.name, key)

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def text(self, key: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = self.data.get(key)
        if value is None:
            if required:
                raise VspInputError(f"{self.key(key)}: required (a path or URI)")
            return default
        if not isinstance(value, str) or not value.strip():
            raise VspInputError(f"{self.key(key)}: must be a non-empty string, got {value!r}")
        return value.strip()

    def integer(self, key: str, default: int, minimum: int | None = None, maximum: int | None = None) -> int:
        return check_int(self.key(key), self.data.get(key, default), minimum, maximum)

    def seed(self, key: str = "seed", maximum: int = SEED_MAX) -> int:
        return self.integer(key, 0, minimum=0, maximum=maximum)

    def opt_int(self, key: str, minimum: int) -> int | None:
        return None if self.data.get(key) is None else self.integer(key, 0, minimum)

    def number(self, key: str, default: float, *, positive: bool = False) -> float:
        return check_number(self.key(key), self.data.get(key, default), positive=positive)

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.data.get(key, default)
        if value not in choices:
            raise VspInputError(f"{self.key(key)}: must be one of {', '.join(choices)}; got {value!r}")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise VspInputError(f"{self.key(key)}: must be true or false, got {value!r}")
        return value

    def numbers(self, key: str, kind: type) -> tuple | None:
        """A list of numbers (or one number, or 'a,b,c'); None when absent."""
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            try:
                value = [kind(v.strip()) for v in value.split(",") if v.strip()]
            except ValueError:
                raise VspInputError(f"{self.key(key)}: must be a list of numbers, got {value!r}") from None
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = [value]
        ok = (int,) if kind is int else (int, float)
        if (
            not isinstance(value, list)
            or not value
            or any(isinstance(v, bool) or not isinstance(v, ok) for v in value)
        ):
            raise VspInputError(f"{self.key(key)}: must be a non-empty list of numbers, got {value!r}")
        if kind is int and any(v < 1 for v in value):
            raise VspInputError(f"{self.key(key)}: must be integers >= 1, got {value!r}")
        return tuple(kind(v) for v in value)

    def names(self, key: str, default: tuple[str, ...] | None) -> tuple[str, ...] | None:
        """A list of names, or one comma-separated string."""
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",")]
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise VspInputError(f"{self.key(key)}: must be a list of names (or 'a,b,c'), got {value!r}")
        out = tuple(v.strip() for v in value)
        if not out:
            raise VspInputError(f"{self.key(key)}: must name at least one entry")
        if len(set(out)) != len(out):
            raise VspInputError(f"{self.key(key)}: names repeat: {', '.join(out)}")
        return out


@dataclass(frozen=True)
class NormsSpec:
    """The property norms (CSLB format) and the filters that decide which properties are kept."""

    path: str
    min_pf: float = 5
    min_concepts: int = 5


@dataclass(frozen=True)
class ExtractSpec:
    """Feature extraction: which networks, layers and weights; how work is cut and batched."""

    models: tuple[str, ...] = ("alexnet", "vgg16", "resnet34", "densenet169")
    layers: str | tuple[str, ...] = "paper"
    weights: str = "imagenet"
    seed: int = 0
    pooling: str = "max"
    unit_size: int = 16
    activation: str = "conv"  # conv | bn | relu: the value each layer pools (vsp.extract.networks)
    batch_size: int = 32  # how, not what: not part of the identity
    # extraction actors (default: one per GPU, else CPUs // 2); not part of the identity
    actors: int | None = None
    only_norm_concepts: bool = True  # extract only concepts present in the norms (when norms are given)


@dataclass(frozen=True)
class DecodeSpec:
    """The decoding grid: stratified folds, their seed, the L2 strength and the solver precision."""

    folds: int = 5
    seed: int = 0
    C: float = 1.0
    dtype: str = "float32"
    models: tuple[str, ...] | None = None  # default: every model in the feature store
    layers_per_task: int = 4  # how, not what: not part of the identity


@dataclass(frozen=True)
class MetaSpec:
    """Meta-embeddings (`vsp meta`): which image embeddings, their sizes, the text vectors; decodability."""

    models: tuple[str, ...] | None = None  # default: every network in the feature store
    kinds: tuple[str, ...] = ("penultimate", "svd", "1ton")
    dim: int = 300
    k: int = 300
    seed: int = 0
    text: str | None = None  # "glove" | a GloVe/word2vec text file | None ("none" in the file)
    multimodal: bool = True
    onetoN_epochs: int = 2000  # noqa: N815 - mirrors vsp.meta.stage.MetaConfig
    onetoN_weighting: str = "scale"  # noqa: N815 - scale (the paper: scaled sources, betas 1) | beta
    folds: int = 5  # decodability (with norms): stratified folds per property
    C: float = 1.0  # decodability: inverse L2 strength
    threads: int | None = None  # torch CPU threads; how, not what: not part of the identity


@dataclass(frozen=True)
class MapSpec:
    """Zero-shot mapping (`vsp map`): embeddings and mappers, the repeated k-fold CV and the grids."""

    embeddings: tuple[str, ...] | None = None  # names or fnmatch patterns; default: all
    mappers: tuple[str, ...] = ("knn", "ridge", "mlp")
    repeats: int = 5
    folds: int = 10
    seed: int = 0
    candidates: str = "all"
    inner_folds: int = 5
    mlp_epochs: tuple[int, ...] | None = None
    mlp_lr: tuple[float, ...] | None = None
    mlp_wd: tuple[float, ...] | None = None
    ridge_alphas: tuple[float, ...] | None = None
    folds_per_task: int = 0  # 0: 1 for the MLP, a repeat otherwise
    meta_fit: str = "all"  # all (SVD / 1ToN fitted once on every concept) | train (refitted per outer fold)


@dataclass(frozen=True)
class SimilaritySpec:
    """Word similarity (`vsp similarity`): benchmark files (default: the shared data's MEN, SimLex-999)."""

    men: str | None = None
    simlex: str | None = None
    pairs: dict[str, str] | None = None  # name -> file of 'word1 word2 score' lines
    embeddings: tuple[str, ...] | None = None

    def benchmarks(self) -> dict[str, str]:
        """Name -> path; the shared data's MEN / SimLex-999 when none is configured."""
        out: dict[str, str] = {}
        if self.men:
            out["MEN"] = self.men
        if self.simlex:
            out["SimLex-999"] = self.simlex
        out.update(self.pairs or {})
        if not out:
            from vsp.similarity.stage import default_benchmarks

            out = {k: str(v) for k, v in default_benchmarks().items()}
        if not out:
            raise VspInputError(
                "similarity: no benchmark files: set similarity.men / similarity.simlex / similarity.pairs, "
                "or VSP_SHARED_DATA (MEN and SimLex-999 under it)"
            )
        return out


@dataclass(frozen=True)
class ReportSpec:
    """The HTML report (`vsp report`): where it goes (a local path) and its explanations."""

    out: str | None = None  # default: <store>/report.html (local store), else report.html by the config
    explain_images: int = 3
    model: str | None = None
    layers: str | None = None
    top: int = 8
    device: str = "cpu"  # how, not what: not part of the identity


_NOT_IDENTITY = {
    "extract": ("batch_size", "actors"),
    "decode": ("layers_per_task",),
    "meta": ("threads",),
    "map": ("embeddings", "mappers"),  # select work (as in the stage's own manifest): a rerun may add some
    "report": ("device", "out"),
}


@dataclass(frozen=True)
class RunConfig:
    """Everything a pipeline run depends on; build it with :func:`load_run_config` or :meth:`from_dict`."""

    store: str
    images: str | None = None
    norms: NormsSpec | None = None
    stages: tuple[str, ...] = DEFAULT_STAGES
    extract: ExtractSpec = field(default_factory=ExtractSpec)
    decode: DecodeSpec = field(default_factory=DecodeSpec)
    meta: MetaSpec = field(default_factory=MetaSpec)
    map: MapSpec = field(default_factory=MapSpec)
    similarity: SimilaritySpec = field(default_factory=SimilaritySpec)
    report: ReportSpec = field(default_factory=ReportSpec)
    source: str = ""  # where the configuration came from (file path, or "<env VSP_RUN_CONFIG>")

    # -- parsing ---------------------------------------------------------------------------------------------
    @classmethod
    def from_dict(
        cls, data: Any, base_dir: str | os.PathLike[str] | None = None, source: str = ""
    ) -> RunConfig:
        """Validate a parsed document; relative local paths resolve against ``base_dir``."""
        base = Path(base_dir).resolve() if base_dir is not None else None
        top = _Section(data, "", ("store", "images", "norms", "stages", *STAGE_ORDER))
        store = _resolve(top.text("store", required=True), base)  # type: ignore[arg-type]

        stages = top.names("stages", DEFAULT_STAGES) or DEFAULT_STAGES
        bad = [s for s in stages if s not in STAGE_ORDER]
        if bad:
            raise VspInputError(f"stages: unknown stage {bad[0]!r}; stages are {', '.join(STAGE_ORDER)}")
        stages = tuple(s for s in STAGE_ORDER if s in stages)  # always run in pipeline order

        images = top.text("images")
        images = _resolve(images, base) if images else None
        if "extract" in stages and images is None:
            raise VspInputError(
                "images: required when the extract stage runs (folder, s3:// prefix or manifest)"
            )

        norms = None
        raw_norms = top.data.get("norms")
        if isinstance(raw_norms, str):
            raw_norms = {"path": raw_norms}
        if raw_norms is not None:
            ns = _Section(raw_norms, "norms", ("path", "min_pf", "min_concepts"))
            norms = NormsSpec(
                path=_resolve(ns.text("path", required=True), base),  # type: ignore[arg-type]
                min_pf=ns.number("min_pf", 5),
                min_concepts=ns.integer("min_concepts", 5, minimum=1),
            )
        for stage in NEEDS_NORMS:
            if stage in stages and norms is None:
                raise VspInputError(
                    f"norms: required when the {stage} stage runs (path or URI of CSLB norms.dat)"
                )

        ex = _Section(
            top.data.get("extract"), "extract",
            ("models", "layers", "weights", "seed", "pooling", "activation", "unit_size", "batch_size",
             "actors", "only_norm_concepts"),
        )  # fmt: skip
        layers_raw = ex.data.get("layers", ExtractSpec.layers)
        if isinstance(layers_raw, str) and (layers_raw in LAYER_SELECTIONS or layers_raw.startswith("re:")):
            layers: str | tuple[str, ...] = layers_raw
        elif isinstance(layers_raw, str | list):
            layers = ex.names("layers", None)  # type: ignore[assignment]
        else:
            raise VspInputError(
                f"extract.layers: all-conv | paper | re:<regex> | a list of module names; got {layers_raw!r}"
            )
        weights = ex.text("weights", "imagenet")
        if weights not in WEIGHTS_NAMED:
            weights = _resolve(weights, base)  # type: ignore[arg-type]
        only = ex.data.get("only_norm_concepts", True)
        if not isinstance(only, bool):
            raise VspInputError(f"extract.only_norm_concepts: must be true or false, got {only!r}")
        extract = ExtractSpec(
            models=ex.names("models", ExtractSpec.models),  # type: ignore[arg-type]
            layers=layers,
            weights=weights,  # type: ignore[arg-type]
            seed=ex.seed(maximum=WEIGHTS_SEED_MAX),
            pooling=ex.choice("pooling", "max", ("max", "mean")),
            activation=ex.choice("activation", "conv", ("conv", "bn", "relu")),
            unit_size=ex.integer("unit_size", 16, minimum=1),
            batch_size=ex.integer("batch_size", 32, minimum=1),
            actors=ex.opt_int("actors", minimum=1),
            only_norm_concepts=only,
        )

        de = _Section(
            top.data.get("decode"), "decode", ("folds", "seed", "C", "dtype", "models", "layers_per_task")
        )
        decode = DecodeSpec(
            folds=de.integer("folds", 5, minimum=2),
            seed=de.seed(),
            C=de.number("C", 1.0, positive=True),
            dtype=de.choice("dtype", "float32", ("float32", "float64")),
            models=de.names("models", None),
            layers_per_task=de.integer("layers_per_task", 4, minimum=1),
        )
        return cls(store=store, images=images, norms=norms, stages=stages, extract=extract, decode=decode,
                   meta=_meta(top, base), map=_map(top), similarity=_similarity(top, base),
                   report=_report(top, base, store), source=source)  # fmt: skip

    # -- views -----------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The normalised configuration as plain JSON/YAML types (``from_dict`` reads it back)."""

        def plain(x: Any) -> Any:
            if isinstance(x, tuple | list):
                return [plain(v) for v in x]
            if isinstance(x, dict):
                return {k: plain(v) for k, v in x.items()}
            return x

        out = {f.name: plain(asdict(self)[f.name]) for f in fields(self) if f.name != "source"}
        return out

    def stage_identity(self, stage: str) -> dict[str, Any]:
        """What decides one stage's results: a rerun of that stage on the same prefix must match it.

        Store, stages and tuning keys (batch size, actors, layers per task) are left out; so is everything the
        stage does not read, so running `extract` first and `decode` later (adding ``norms``) is one run.
        """
        d = self.to_dict()
        for section, keys in _NOT_IDENTITY.items():
            for k in keys:
                d[section].pop(k)
        if stage == "extract":
            restrict = self.extract.only_norm_concepts and self.norms is not None
            return {"images": d["images"], "norms": d["norms"] if restrict else None, "extract": d["extract"]}
        if stage == "decode":
            return {"norms": d["norms"], "decode": d["decode"]}
        if stage == "report":  # rebuilt on every run from what the store holds: binds nothing
            return {}
        if stage in ("meta", "map"):
            return {"norms": d["norms"], stage: d[stage]}
        if stage == "similarity":
            return {"similarity": d["similarity"]}
        return {k: v for k, v in d.items() if k not in ("store", "stages")}

    def identity(self) -> dict[str, dict[str, Any]]:
        """Per stage this run runs: what decides its results (see :meth:`stage_identity`)."""
        return {s: self.stage_identity(s) for s in self.stages}

    def extraction_config(self):  # -> vsp.extract.features.ExtractionConfig
        """The extraction stage's own config (its resumability key)."""
        from vsp.extract.features import ExtractionConfig

        e = self.extract
        try:
            return ExtractionConfig(
                models=e.models, layers=e.layers, weights=e.weights, seed=e.seed, pooling=e.pooling,
                unit_size=e.unit_size, activation=e.activation,
            )  # fmt: skip
        except VspInputError as exc:
            raise VspInputError(f"extract: {exc}") from exc

    def decode_config(self):  # -> vsp.decode.stage.DecodeConfig
        """The decoding stage's own config (its resumability key, with the norms and the features)."""
        from vsp.decode.stage import DecodeConfig

        d = self.decode
        try:
            return DecodeConfig(folds=d.folds, seed=d.seed, C=d.C, dtype=d.dtype, models=d.models)
        except VspInputError as exc:
            raise VspInputError(f"decode: {exc}") from exc

    def meta_config(self):  # -> vsp.meta.stage.MetaConfig
        """The meta stage's own config (its resumability key, with the features and the text vectors)."""
        from vsp.meta.stage import MetaConfig

        m = self.meta
        try:
            return MetaConfig(
                models=m.models, kinds=m.kinds, dim=m.dim, k=m.k, seed=m.seed, text=m.text,
                multimodal=m.multimodal, onetoN_epochs=m.onetoN_epochs, onetoN_weighting=m.onetoN_weighting,
            )  # fmt: skip
        except VspInputError as exc:
            raise VspInputError(f"meta: {exc}") from exc

    def meta_decode_config(self):  # -> vsp.decode.stage.DecodeConfig
        """The decodability step of the meta stage (folds, seed, C as `vsp meta`)."""
        from vsp.decode.stage import DecodeConfig

        return DecodeConfig(folds=self.meta.folds, seed=self.meta.seed, C=self.meta.C)

    def mapping_config(self):  # -> vsp.mapping.stage.MappingConfig
        """The map stage's own config (its resumability key, with the norms and the embeddings)."""
        from vsp.mapping.stage import MappingConfig

        m = self.map
        try:
            return MappingConfig(
                embeddings=m.embeddings, mappers=m.mappers, repeats=m.repeats, folds=m.folds, seed=m.seed,
                candidates=m.candidates, inner_folds=m.inner_folds, mlp_epochs=m.mlp_epochs, mlp_lr=m.mlp_lr,
                mlp_weight_decay=m.mlp_wd, ridge_alphas=m.ridge_alphas, folds_per_task=m.folds_per_task,
                meta_fit=m.meta_fit,
            )  # fmt: skip
        except VspInputError as exc:
            raise VspInputError(f"map: {exc}") from exc

    def with_stages(self, stages: tuple[str, ...] | list[str]) -> RunConfig:
        """The same run restricted to some stages (e.g. ``python -m jobs.extract`` runs only extraction)."""
        data = self.to_dict()
        data["stages"] = list(stages)
        return RunConfig.from_dict(data, source=self.source)


def _meta(top: _Section, base: Path | None) -> MetaSpec:
    me = _Section(
        top.data.get("meta"), "meta",
        ("models", "kinds", "dim", "k", "seed", "text", "multimodal", "onetoN_epochs", "onetoN_weighting",
         "folds", "C", "threads"),
    )  # fmt: skip
    kinds = me.names("kinds", MetaSpec.kinds)
    bad = [k for k in kinds or () if k not in MetaSpec.kinds]
    if bad:
        raise VspInputError(f"meta.kinds: unknown kind {bad[0]!r}; kinds are {', '.join(MetaSpec.kinds)}")
    text = me.text("text", "none")
    if text.lower() == "none":  # type: ignore[union-attr]
        text = None
    elif text.lower() != "glove":  # type: ignore[union-attr]
        text = _resolve(text, base)  # type: ignore[arg-type]
    return MetaSpec(
        models=me.names("models", None),
        kinds=kinds,  # type: ignore[arg-type]
        dim=me.integer("dim", 300, minimum=1),
        k=me.integer("k", 300, minimum=1),
        seed=me.seed(),
        text=text.lower() if text and text.lower() == "glove" else text,
        multimodal=me.flag("multimodal", True),
        onetoN_epochs=me.integer("onetoN_epochs", 2000, minimum=1),
        onetoN_weighting=me.choice("onetoN_weighting", "scale", ("scale", "beta")),
        folds=me.integer("folds", 5, minimum=2),
        C=me.number("C", 1.0, positive=True),
        threads=me.opt_int("threads", minimum=1),
    )


def _map(top: _Section) -> MapSpec:
    from vsp.mapping.mappers import MAPPERS

    mp = _Section(
        top.data.get("map"), "map",
        ("embeddings", "mappers", "repeats", "folds", "seed", "candidates", "inner_folds", "mlp_epochs",
         "mlp_lr", "mlp_wd", "ridge_alphas", "folds_per_task", "meta_fit"),
    )  # fmt: skip
    mappers = mp.names("mappers", MapSpec.mappers)
    bad = [m for m in mappers or () if m not in MAPPERS]
    if bad:
        raise VspInputError(f"map.mappers: unknown mapper {bad[0]!r}; mappers are {', '.join(MAPPERS)}")
    for key in ("mlp_lr", "ridge_alphas"):
        vals = mp.numbers(key, float)
        if vals and any(v <= 0 for v in vals):
            raise VspInputError(f"map.{key}: must be numbers > 0, got {list(vals)}")
    wd = mp.numbers("mlp_wd", float)
    if wd and any(v < 0 for v in wd):
        raise VspInputError(f"map.mlp_wd: must be numbers >= 0, got {list(wd)}")
    return MapSpec(
        embeddings=mp.names("embeddings", None),
        mappers=mappers,  # type: ignore[arg-type]
        repeats=mp.integer("repeats", 5, minimum=1),
        folds=mp.integer("folds", 10, minimum=2),
        seed=mp.seed(),
        candidates=mp.choice("candidates", "all", ("all", "test")),
        inner_folds=mp.integer("inner_folds", 5, minimum=2),
        mlp_epochs=mp.numbers("mlp_epochs", int),
        mlp_lr=mp.numbers("mlp_lr", float),
        mlp_wd=wd,
        ridge_alphas=mp.numbers("ridge_alphas", float),
        folds_per_task=mp.integer("folds_per_task", 0, minimum=0),
        meta_fit=mp.choice("meta_fit", "all", ("all", "train")),
    )


def _similarity(top: _Section, base: Path | None) -> SimilaritySpec:
    si = _Section(top.data.get("similarity"), "similarity", ("men", "simlex", "pairs", "embeddings"))
    men, simlex = si.text("men"), si.text("simlex")
    raw = si.data.get("pairs")
    pairs: dict[str, str] | None = None
    if raw is not None:
        if isinstance(raw, str):
            raw = [raw]
        if isinstance(raw, list) and all(isinstance(p, str) and p.strip() for p in raw):
            raw = {Path(p).stem: p for p in raw}
        if (
            not isinstance(raw, dict)
            or not raw
            or not all(isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in raw.items())
        ):
            raise VspInputError(
                f"similarity.pairs: a path, a list of paths or a mapping name -> path; got {raw!r}"
            )
        pairs = {str(k): _resolve(v.strip(), base) for k, v in raw.items()}
    return SimilaritySpec(
        men=_resolve(men, base) if men else None,
        simlex=_resolve(simlex, base) if simlex else None,
        pairs=pairs,
        embeddings=si.names("embeddings", None),
    )


def _report(top: _Section, base: Path | None, store: str) -> ReportSpec:
    re_ = _Section(
        top.data.get("report"), "report", ("out", "explain_images", "model", "layers", "top", "device")
    )
    out = re_.text("out")
    if out is not None:
        if _is_uri(out):
            raise VspInputError(f"report.out: must be a local path (the report is a file), got {out!r}")
        out = _resolve(out, base)
    if out is None:  # beside the results on a local store; next to the configuration for an s3:// one
        out = (
            str(Path(store) / "report.html")
            if not _is_uri(store)
            else str((base or Path.cwd()) / "report.html")
        )
    if Path(out).suffix.lower() not in (".html", ".htm"):
        raise VspInputError(f"report.out: must name an .html file, got {out!r}")
    layers = re_.data.get("layers")
    if isinstance(layers, list):
        layers = ",".join(str(x) for x in layers)
    elif layers is not None and not isinstance(layers, str | int):
        raise VspInputError(f"report.layers: 0-based tap indices or module names, got {layers!r}")
    return ReportSpec(
        out=out,
        explain_images=re_.integer("explain_images", 3, minimum=0),
        model=re_.text("model"),
        layers=str(layers) if layers is not None else None,
        top=re_.integer("top", 8, minimum=1),
        device=re_.choice("device", "cpu", ("cpu", "cuda")),
    )


class _DuplicateKey(Exception):
    """A mapping names one key twice (YAML keeps the last silently, JSON too): the run file is ambiguous."""

    def __init__(self, key: Any, line: int | None = None, first: int | None = None) -> None:
        super().__init__(key)
        self.key, self.line, self.first = key, line, first

    def message(self, source: str) -> str:
        where = f" line {self.line}" if self.line else ""
        first = f" (first on line {self.first})" if self.first else " in one object"
        return f"{source}{where}: key {self.key!r} appears twice{first}; keep one"


def _yaml_loader() -> type:
    """A yaml.SafeLoader that refuses a key repeated in one mapping (a ``<<`` merge may be overridden)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            if isinstance(node, yaml.MappingNode):
                seen: dict[Any, int] = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    key = self.construct_object(key_node, deep=deep)
                    try:
                        first = seen.setdefault(key, key_node.start_mark.line + 1)
                    except TypeError:  # an unhashable key: SafeLoader itself refuses it
                        continue
                    if first != key_node.start_mark.line + 1:
                        raise _DuplicateKey(key, key_node.start_mark.line + 1, first)
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


def _syntax_error(exc: Exception, fmt: str, source: str) -> str:
    """One line: the source, line and column, and what the parser found (YAML's own text spans lines)."""
    mark = getattr(exc, "problem_mark", None)
    if mark is not None:  # yaml.MarkedYAMLError
        what = " ".join(str(x) for x in (getattr(exc, "context", None), getattr(exc, "problem", None)) if x)
        return f"{source} line {mark.line + 1}, column {mark.column + 1}: not valid YAML: {what or exc}"
    if isinstance(exc, json.JSONDecodeError):
        return f"{source} line {exc.lineno}, column {exc.colno}: not valid JSON: {exc.msg}"
    return f"{source}: not valid {fmt.upper()}: " + " ".join(str(exc).split())


def parse_text(text: str, fmt: str, source: str) -> Any:
    """Parse YAML / TOML / JSON text; syntax errors and repeated keys name the source and the line."""
    try:
        if fmt == "toml":
            import tomllib

            return tomllib.loads(text)  # TOML refuses a repeated key itself
        if fmt == "json":
            return json.loads(text, object_pairs_hook=_unique_pairs)
        import yaml

        return yaml.load(text, Loader=_yaml_loader())  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as exc:
        raise VspInputError(exc.message(source)) from None
    except Exception as exc:  # noqa: BLE001 - every parser has its own error type; all mean "bad syntax"
        raise VspInputError(_syntax_error(exc, fmt, source)) from exc


def load_run_config(path: str | os.PathLike[str]) -> RunConfig:
    """Read a configuration file (``.yaml``/``.yml``, ``.toml`` or ``.json``)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise VspInputError(f"{p}: configuration file not found")
    suffix = p.suffix.lower()
    fmt = {".toml": "toml", ".json": "json"}.get(suffix, "yaml")
    data = parse_text(p.read_text(encoding="utf-8"), fmt, str(p))
    try:
        return RunConfig.from_dict(data, base_dir=p.parent, source=str(p))
    except VspInputError as exc:
        raise VspInputError(f"{p}: {exc}") from exc


ENV_VAR = "VSP_RUN_CONFIG"


def load_from_env(name: str = ENV_VAR) -> RunConfig:
    """Read a normalised configuration from an environment variable (how `vsp submit` ships it to a job)."""
    text = os.environ.get(name)
    if not text:
        raise VspInputError(f"no configuration: give a CONFIG file or set {name}")
    return RunConfig.from_dict(parse_text(text, "json", f"${name}"), source=f"${name}")
