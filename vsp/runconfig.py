"""The run configuration: one YAML (or TOML/JSON) file that records everything a pipeline run depends on.

Example (``vsp run run.yaml``, ``vsp submit --address http://HEAD:8265 run.yaml``)::

    images: s3://my-bucket/photos/            # folder tree, s3:// prefix, or CSV/Parquet manifest
    store: s3://my-bucket/runs/r1             # where every stage writes (local folder or s3://)
    norms: s3://my-bucket/cslb/norms.dat      # or {path: ..., min_pf: 5, min_concepts: 5}
    stages: [extract, decode]                 # default: every stage that exists, in pipeline order
    extract:
      models: [alexnet, vgg16, resnet34, densenet169]
      layers: all-conv                        # all-conv | paper | re:<regex> | [name, name, ...]
      weights: imagenet                       # imagenet | random | path or s3:// URI of a state_dict
      seed: 0
      pooling: max
      unit_size: 16
      batch_size: 32
    decode:
      folds: 5
      seed: 0
      C: 1.0

Relative local paths are resolved against the folder of the configuration file. Every error names the key at
fault (``extract.unit_size: must be an integer >= 1, got 0``). ``identity()`` is what decides each stage's
results: a second run on the same store prefix must have the same identity for every stage it shares with the
first (``vsp.runmanifest`` enforces it); keys such as ``batch_size`` or ``stages`` change how a run goes, not
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
DEFAULT_STAGES = ("extract", "decode")
LAYER_SELECTIONS = ("all-conv", "paper")
WEIGHTS_NAMED = ("imagenet", "random")


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

    def integer(self, key: str, default: int, minimum: int | None = None) -> int:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise VspInputError(f"{self.key(key)}: must be an integer, got {value!r}")
        if minimum is not None and value < minimum:
            raise VspInputError(f"{self.key(key)}: must be an integer >= {minimum}, got {value}")
        return value

    def opt_int(self, key: str, minimum: int) -> int | None:
        return None if self.data.get(key) is None else self.integer(key, 0, minimum)

    def number(self, key: str, default: float, *, positive: bool = False) -> float:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise VspInputError(f"{self.key(key)}: must be a number, got {value!r}")
        if positive and not value > 0:
            raise VspInputError(f"{self.key(key)}: must be > 0, got {value}")
        return float(value)

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.data.get(key, default)
        if value not in choices:
            raise VspInputError(f"{self.key(key)}: must be one of {', '.join(choices)}; got {value!r}")
        return value

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
    layers: str | tuple[str, ...] = "all-conv"
    weights: str = "imagenet"
    seed: int = 0
    pooling: str = "max"
    unit_size: int = 16
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


_NOT_IDENTITY = {"extract": ("batch_size", "actors"), "decode": ("layers_per_task",)}


@dataclass(frozen=True)
class RunConfig:
    """Everything a pipeline run depends on; build it with :func:`load_run_config` or :meth:`from_dict`."""

    store: str
    images: str | None = None
    norms: NormsSpec | None = None
    stages: tuple[str, ...] = DEFAULT_STAGES
    extract: ExtractSpec = field(default_factory=ExtractSpec)
    decode: DecodeSpec = field(default_factory=DecodeSpec)
    source: str = ""  # where the configuration came from (file path, or "<env VSP_RUN_CONFIG>")

    # -- parsing ---------------------------------------------------------------------------------------------
    @classmethod
    def from_dict(
        cls, data: Any, base_dir: str | os.PathLike[str] | None = None, source: str = ""
    ) -> RunConfig:
        """Validate a parsed document; relative local paths resolve against ``base_dir``."""
        base = Path(base_dir).resolve() if base_dir is not None else None
        top = _Section(data, "", ("store", "images", "norms", "stages", "extract", "decode"))
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
        if "decode" in stages and norms is None:
            raise VspInputError("norms: required when the decode stage runs (path or URI of CSLB norms.dat)")

        ex = _Section(
            top.data.get("extract"), "extract",
            ("models", "layers", "weights", "seed", "pooling", "unit_size", "batch_size", "actors",
             "only_norm_concepts"),
        )  # fmt: skip
        layers_raw = ex.data.get("layers", "all-conv")
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
            seed=ex.integer("seed", 0),
            pooling=ex.choice("pooling", "max", ("max", "mean")),
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
            seed=de.integer("seed", 0),
            C=de.number("C", 1.0, positive=True),
            dtype=de.choice("dtype", "float32", ("float32", "float64")),
            models=de.names("models", None),
            layers_per_task=de.integer("layers_per_task", 4, minimum=1),
        )
        return cls(store=store, images=images, norms=norms, stages=stages, extract=extract, decode=decode,
                   source=source)  # fmt: skip

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
        return {k: v for k, v in d.items() if k not in ("store", "stages")}  # a later stage: everything

    def identity(self) -> dict[str, dict[str, Any]]:
        """Per stage this run runs: what decides its results (see :meth:`stage_identity`)."""
        return {s: self.stage_identity(s) for s in self.stages}

    def extraction_config(self):  # -> vsp.features.ExtractionConfig
        """The extraction stage's own config (its resumability key)."""
        from vsp.features import ExtractionConfig

        e = self.extract
        try:
            return ExtractionConfig(
                models=e.models, layers=e.layers, weights=e.weights, seed=e.seed, pooling=e.pooling,
                unit_size=e.unit_size,
            )  # fmt: skip
        except VspInputError as exc:
            raise VspInputError(f"extract: {exc}") from exc

    def decode_config(self):  # -> vsp.decode_stage.DecodeConfig
        """The decoding stage's own config (its resumability key, with the norms and the features)."""
        from vsp.decode_stage import DecodeConfig

        d = self.decode
        try:
            return DecodeConfig(folds=d.folds, seed=d.seed, C=d.C, dtype=d.dtype, models=d.models)
        except VspInputError as exc:
            raise VspInputError(f"decode: {exc}") from exc

    def with_stages(self, stages: tuple[str, ...] | list[str]) -> RunConfig:
        """The same run restricted to some stages (e.g. ``python -m jobs.extract`` runs only extraction)."""
        data = self.to_dict()
        data["stages"] = list(stages)
        return RunConfig.from_dict(data, source=self.source)


def parse_text(text: str, fmt: str, source: str) -> Any:
    """Parse YAML / TOML / JSON text; syntax errors name the source and the line."""
    try:
        if fmt == "toml":
            import tomllib

            return tomllib.loads(text)
        if fmt == "json":
            return json.loads(text)
        import yaml

        return yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001 - every parser has its own error type; all mean "bad syntax"
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise VspInputError(f"{source}{where}: not valid {fmt.upper()}: {exc}") from exc


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
