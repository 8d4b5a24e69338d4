"""The run configuration: one YAML (or TOML/JSON) file that records everything a pipeline run depends on.

Example (``vsp run run.yaml``, ``vsp submit --address http://HEAD:8265 run.yaml``)::

    images: s3://my-bucket/photos/            # folder tree, s3:// prefix, or CSV/Parquet manifest
    store: s3://my-bucket/runs/r1             # where every stage writes (local folder or s3://)
    norms: s3://my-bucket/cslb/norms.dat      # or {path: ..., min_pf: 5, min_concepts: 5}
    stages: [extract, decode, meta, map, similarity, report]   # the default: the whole pipeline
    extract:
      models: [alexnet, vgg16, resnet34, densenet169]
      layers: paper                           # paper | all-conv | blocks | re:<regex> | [names]
      weights: imagenet                       # imagenet (= pretrained) | random | path or s3:// URI
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
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vsp.errors import VspInputError

if TYPE_CHECKING:
    from vsp.decode.stage import DecodeConfig
    from vsp.extract.features import ExtractionConfig
    from vsp.mapping.stage import MappingConfig
    from vsp.meta.stage import MetaConfig
    from vsp.report.config import ReportConfig
    from vsp.similarity.stage import SimilarityConfig

# STAGE_ORDER (every stage, in the order it runs), DEFAULT_STAGES (the whole pipeline) and NEEDS_NORMS (the
# stages that need the norms section) are read from ``vsp.pipeline``: see ``__getattr__`` below.
LAYER_SELECTIONS = ("all-conv", "paper", "blocks")
WEIGHTS_NAMED = ("imagenet", "pretrained", "random")
#: Largest seed of a stage whose folds or shuffles go through numpy's RandomState (scikit-learn's
#: ``random_state``): decode, meta, map, and `vsp demo`.
SEED_MAX = 2**32 - 1
#: Largest seed of random network weights (``torch.manual_seed``; kept within int64 for JSON and Parquet).
WEIGHTS_SEED_MAX = 2**63 - 1


def setting(
    default: Any = MISSING, *, identity: bool = True, key: str | None = None, doc: str = "", **extra: Any
) -> Any:
    """A stage Config field: its default, whether it is identity (decides results) or tuning, its run key.

    ``identity=False`` marks tuning (batch sizes, task sizes, threads, work selection): left out of the
    stage's identity, so changing it never refuses a rerun. ``key`` is the run-file/CLI name when it differs
    from the field name (kept for names fixed by an earlier release). ``extra`` holds what the run-file reader
    (:func:`read_section`) applies: ``minimum`` / ``maximum`` / ``positive`` (numbers), ``choices`` (with
    ``choice_word`` for lists), ``path=True`` (a relative local path resolves against the run file's folder),
    ``aliases`` (other accepted run-file keys); and ``added=True`` (identity, but recorded only when not at
    its default: a setting added after stores were written; ``implied``: the value such stores were computed
    with, when the default is now another), ``manifest=False`` (left out of the stage's own manifest, which
    predates it).
    """
    return field(default=default, metadata={"identity": identity, "key": key, "doc": doc, **extra})


def is_identity(f: Any) -> bool:
    """Whether a dataclass field decides results (every field not marked ``identity=False``)."""
    return f.metadata.get("identity", True)


def plain(x: Any) -> Any:
    """Tuples as lists, recursively: the JSON form identities and manifests record."""
    if isinstance(x, tuple | list):
        return [plain(v) for v in x]
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    return x


def identity_fields(config: Any) -> dict[str, Any]:
    """A stage Config's identity settings as plain JSON types (tuning fields left out).

    A field marked ``added=True`` appears only when it is not at its default, as in :func:`section_identity`,
    so a stage manifest written before the setting existed still matches.
    """
    return {
        f.name: plain(getattr(config, f.name))
        for f in fields(config)
        if is_identity(f) and not unrecorded(f, getattr(config, f.name))
    }


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


# -- stage settings: each stage's Config dataclass is the only declaration; the run file is read from it


def _pipeline() -> Any:
    import vsp.pipeline

    return vsp.pipeline


def _stage(name: str) -> Any:
    return _pipeline().get(name)


def config_class(name: str) -> type:
    """The Config dataclass of the registered stage ``name`` (``vsp.pipeline``)."""
    return _stage(name).Config


def required_needs(name: str) -> tuple[str, ...]:
    """Run inputs (``images``, ``norms``) the stage cannot run without: its ``needs`` less optional ones."""
    stage = _stage(name)
    return tuple(n for n in stage.needs if n not in stage.optional_needs)


def __getattr__(name: str) -> Any:
    """STAGE_ORDER, DEFAULT_STAGES, NEEDS_NORMS: derived from ``vsp.pipeline`` each time they are read."""
    if name in ("STAGE_ORDER", "DEFAULT_STAGES"):  # every stage, in the order it runs (the whole pipeline)
        return _pipeline().names()
    if name == "NEEDS_NORMS":  # stages that need the norms section
        return tuple(s for s in _pipeline().names() if "norms" in required_needs(s))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def setting_key(f: Any) -> str:
    """A Config field's run-file (and CLI) name: its ``key`` metadata, else the field name."""
    return f.metadata.get("key") or f.name


def section_keys(cls: type) -> tuple[str, ...]:
    """The keys a Config's run-file section allows: every field's key, then the aliases."""
    keys = [setting_key(f) for f in fields(cls)]
    return (*keys, *(a for f in fields(cls) for a in f.metadata.get("aliases", ())))


def field_default(f: Any) -> Any:
    """A dataclass field's default (its factory's value), or ``MISSING``."""
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def unrecorded(f: Any, value: Any) -> bool:
    """Whether an ``added=True`` setting is left out of identities and manifests at ``value``.

    At its default, and at ``implied`` (the value stores written before the setting existed were computed
    with, when the default is now another, such as ``channels_last``'s ``None`` = auto): both read as absent.
    """
    if not f.metadata.get("added"):
        return False
    implied = f.metadata.get("implied", MISSING)
    return value == field_default(f) or (implied is not MISSING and value == implied)


def section_dict(config: Any) -> dict[str, Any]:
    """A Config as its run-file section (keys as the run file spells them; plain JSON types)."""
    return {setting_key(f): plain(getattr(config, f.name)) for f in fields(config)}


def section_identity(config: Any) -> dict[str, Any]:
    """A Config's identity settings as the run's record keeps them: run-file keys, tuning left out.

    A field marked ``added=True`` (settable after stores were written without it) appears only when it is
    not at its default, so a store written before it existed resumes.
    """
    out: dict[str, Any] = {}
    for f in fields(config):
        if not is_identity(f):
            continue
        value = getattr(config, f.name)
        if unrecorded(f, value):
            continue
        out[setting_key(f)] = plain(value)
    return out


def manifest_fields(config: Any) -> dict[str, Any]:
    """A Config's identity fields for the stage's own manifest (those marked ``manifest=False`` left out)."""
    return {
        f.name: plain(getattr(config, f.name))
        for f in fields(config)
        if is_identity(f) and f.metadata.get("manifest", True)
    }


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _split_optional(hint: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); ``X`` -> (X, False)."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]), True  # noqa: UP007
    return hint, False


def _given(section: _Section, f: Any) -> str:
    """The key the run file used for ``f`` (its key, or one alias); both given is ambiguous."""
    names = (setting_key(f), *f.metadata.get("aliases", ()))
    present = [n for n in names if section.data.get(n) is not None]
    if len(present) > 1:
        raise VspInputError(
            f"{section.key(present[1])}: the same setting as {section.key(present[0])}; give one of them"
        )
    return present[0] if present else names[0]


def _is_name_map(raw: Any) -> bool:
    """A non-empty mapping of names to non-empty strings (``similarity.pairs``, ``dict[str, str]`` fields)."""
    return (
        isinstance(raw, dict)
        and bool(raw)
        and all(isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in raw.items())
    )


def read_field(section: _Section, f: Any, hint: Any, base_dir: Path | None, key: str | None = None) -> Any:
    """One Config field from ``section`` by its type annotation and metadata checks.

    Checks: ``minimum``, ``maximum``, ``positive``, ``choices``, ``path``; errors name ``<section>.<key>``.
    """
    md = f.metadata
    key = key or _given(section, f)
    default = field_default(f)
    t, optional = _split_optional(hint)
    value = section.data.get(key)
    if optional and (value is None or (t in (bool, int) and value == "auto")):  # auto: the default (None)
        return default if default is not MISSING else None
    minimum, maximum, choices = md.get("minimum"), md.get("maximum"), md.get("choices")
    if t is bool:
        return section.flag(key, default)
    if t is int:
        return section.integer(key, 0 if default in (None, MISSING) else default, minimum, maximum)
    if t is float:
        raw = section.data.get(key, default)
        return check_number(section.key(key), raw, positive=md.get("positive", False), minimum=minimum)
    if t is str:
        if choices:
            return section.choice(key, default, tuple(choices))
        text = section.text(key, None if default is MISSING else default, required=default is MISSING)
        return _resolve(text, base_dir) if md.get("path") and text is not None else text
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        kind = args[0]
        if kind is str:
            names = section.names(key, None if default is MISSING else default)
            if choices and names:
                bad = [n for n in names if n not in choices]
                if bad:
                    word = md.get("choice_word", "name")
                    raise VspInputError(
                        f"{section.key(key)}: unknown {word} {bad[0]!r}; {word}s are {', '.join(choices)}"
                    )
            return names
        if kind in (int, float):
            vals = section.numbers(key, kind)
            if vals is None:
                return default
            if md.get("positive") and any(v <= 0 for v in vals):
                raise VspInputError(f"{section.key(key)}: must be numbers > 0, got {list(vals)}")
            if minimum is not None and any(v < minimum for v in vals):
                raise VspInputError(f"{section.key(key)}: must be numbers >= {minimum:g}, got {list(vals)}")
            if maximum is not None and any(v > maximum for v in vals):
                raise VspInputError(f"{section.key(key)}: must be numbers <= {maximum:g}, got {list(vals)}")
            return vals
    if origin is dict and args == (str, str):
        raw = section.data.get(key)
        if raw is None:
            return default
        if not _is_name_map(raw):
            raise VspInputError(
                f"{section.key(key)}: must be a mapping of names to non-empty strings, got {raw!r}"
            )
        return {k: (_resolve(v.strip(), base_dir) if md.get("path") else v.strip()) for k, v in raw.items()}
    raise TypeError(f"{section.key(key)}: no run-file reader for {hint!r}; give the field a hook")


Hook = Callable[[_Section], Any]


def read_section(
    section: _Section, cls: type, base_dir: Path | None, hooks: dict[str, Hook] | None = None
) -> Any:
    """A stage's Config from its run-file section, every field read by its type annotation and metadata.

    ``hooks`` maps a field name to a reader of its own (``extract.layers``, the report's output path...).
    A check the Config makes itself (``__post_init__``) is named by the section.
    """
    hints = _hints(cls)
    values: dict[str, Any] = {}
    for f in fields(cls):
        if not f.init:
            continue
        if hooks and f.name in hooks:
            values[f.name] = hooks[f.name](section)
            continue
        value = read_field(section, f, hints[f.name], base_dir)
        if value is not MISSING:
            values[f.name] = value
    try:
        return cls(**values)
    except VspInputError as exc:
        raise VspInputError(f"{section.name}: {exc}") from exc


def _read_stage(
    name: str, data: Any, base: Path | None, hooks: dict[str, Hook] | None = None, extra_keys: tuple = ()
) -> Any:
    cls = config_class(name)
    return read_section(_Section(data, name, (*section_keys(cls), *extra_keys)), cls, base, hooks)


# -- the hooks of the built-in sections --------------------------------------------------------------------
def _hf_folder(spec: str, base: Path | None) -> str:
    """``hf:<folder>`` with a relative folder that exists made absolute, so every worker finds it.

    Any other spec (a repository id, another family) is returned as written.
    """
    family, sep, rest = spec.partition(":")
    if not sep or family != "hf" or _is_uri(rest):
        return spec
    p = Path(rest).expanduser()
    full = p if p.is_absolute() else (base or Path.cwd()) / p
    return f"hf:{full.resolve()}" if full.is_dir() else spec


def _extract_hooks(base: Path | None) -> dict[str, Hook]:
    def layers(ex: _Section) -> str | tuple[str, ...]:
        raw = ex.data.get("layers", "paper")
        if isinstance(raw, str) and (raw in LAYER_SELECTIONS or raw.startswith("re:")):
            return raw
        if isinstance(raw, str | list):
            return ex.names("layers", None)  # type: ignore[return-value]
        raise VspInputError(
            f"extract.layers: all-conv | paper | blocks | re:<regex> | a list of module names; got {raw!r}"
        )

    def weights(ex: _Section) -> str:
        value = ex.text("weights", "imagenet")
        return value if value in WEIGHTS_NAMED else _resolve(value, base)  # type: ignore[arg-type]

    def models(ex: _Section) -> tuple[str, ...]:
        """Model specs; a Hugging Face folder (``hf:<path>``) is made absolute, so every worker finds it."""
        names = ex.names("models", None)
        if names is None:
            return tuple(config_class("extract")().models)
        return tuple(_hf_folder(spec, base) for spec in names)

    return {"layers": layers, "weights": weights, "models": models}


def _meta_section(data: Any) -> tuple[Any, _Section | None]:
    """meta.decodability.{folds, C} read as meta.folds / meta.C (either spelling, not both)."""
    if not isinstance(data, dict) or data.get("decodability") is None:
        return data, None
    dec = _Section(data["decodability"], "meta.decodability", ("folds", "C"))
    for k in dec.data:
        if data.get(k) is not None:
            raise VspInputError(f"meta.decodability.{k}: the same setting as meta.{k}; give one of them")
    return data, dec


def _meta_hooks(base: Path | None, dec: _Section | None) -> dict[str, Hook]:
    def text(me: _Section) -> str | None:
        value = me.text("text", "none")
        if value.lower() == "none":  # type: ignore[union-attr]
            return None
        if value.lower() == "glove":  # type: ignore[union-attr]
            return "glove"
        if str(value).startswith(("open_clip:", "hf:")):  # a text tower (vsp.data.text_towers)
            return _hf_folder(str(value), base)
        return _resolve(value, base)  # type: ignore[arg-type]

    hooks: dict[str, Hook] = {"text": text}
    if dec is not None:
        cls = config_class("meta")
        by_name = {f.name: f for f in fields(cls)}
        for k in dec.data:
            hooks[k] = lambda _me, k=k: read_field(dec, by_name[k], _hints(cls)[k], base, key=k)
    return hooks


def _similarity_hooks(base: Path | None) -> dict[str, Hook]:
    def pairs(si: _Section) -> dict[str, str] | None:
        raw = si.data.get("pairs")
        if raw is None:
            return None
        if isinstance(raw, str):
            raw = [raw]
        if isinstance(raw, list) and all(isinstance(p, str) and p.strip() for p in raw):
            raw = {Path(p).stem: p for p in raw}
        if not _is_name_map(raw):
            raise VspInputError(
                f"similarity.pairs: a path, a list of paths or a mapping name -> path; got {raw!r}"
            )
        return {str(k): _resolve(v.strip(), base) for k, v in raw.items()}

    return {"pairs": pairs}


def _report_hooks(base: Path | None, store: str) -> dict[str, Hook]:
    def out(re_: _Section) -> str:
        path = re_.text("out")
        if path is not None:
            if _is_uri(path):
                raise VspInputError(f"report.out: must be a local path (the report is a file), got {path!r}")
            path = _resolve(path, base)
        if path is None:  # beside the results on a local store; next to the configuration for an s3:// one
            path = (
                str(Path(store) / "report.html")
                if not _is_uri(store)
                else str((base or Path.cwd()) / "report.html")
            )
        if Path(path).suffix.lower() not in (".html", ".htm"):
            raise VspInputError(f"report.out: must name an .html file, got {path!r}")
        return path

    def layers(re_: _Section) -> str | None:
        value = re_.data.get("layers")
        if isinstance(value, list):
            value = ",".join(str(x) for x in value)
        elif value is not None and not isinstance(value, str | int):
            raise VspInputError(f"report.layers: 0-based tap indices or module names, got {value!r}")
        return str(value) if value is not None else None

    return {"out": out, "layers": layers}


BUILTIN = ("extract", "decode", "meta", "map", "similarity", "report")  # RunConfig's own attributes


def _default_config(name: str) -> Callable[[], Any]:
    return lambda: config_class(name)()


@dataclass(frozen=True)
class RunConfig:
    """Everything a pipeline run depends on; build it with :func:`load_run_config` or :meth:`from_dict`.

    ``extract`` ... ``report`` are the stages' own Config objects (``ExtractionConfig``, ``DecodeConfig``,
    ``MetaConfig``, ``MappingConfig``, ``SimilarityConfig``, ``ReportConfig``); ``extra`` holds those of
    stages registered in ``vsp.pipeline`` beyond them. :meth:`settings` returns any of them by name.
    """

    store: str
    images: str | None = None
    norms: NormsSpec | None = None
    stages: tuple[str, ...] = field(default_factory=lambda: _pipeline().names())
    extract: ExtractionConfig = field(default_factory=_default_config("extract"))
    decode: DecodeConfig = field(default_factory=_default_config("decode"))
    meta: MetaConfig = field(default_factory=_default_config("meta"))
    map: MappingConfig = field(default_factory=_default_config("map"))
    similarity: SimilarityConfig = field(default_factory=_default_config("similarity"))
    report: ReportConfig = field(default_factory=_default_config("report"))
    extra: dict[str, Any] = field(default_factory=dict)  # registered stages beyond the six: name -> Config
    source: str = ""  # where the configuration came from (file path, or "<env VSP_RUN_CONFIG>")

    # -- parsing ---------------------------------------------------------------------------------------------
    @classmethod
    def from_dict(
        cls, data: Any, base_dir: str | os.PathLike[str] | None = None, source: str = ""
    ) -> RunConfig:
        """Validate a parsed document; relative local paths resolve against ``base_dir``."""
        base = Path(base_dir).resolve() if base_dir is not None else None
        order = _pipeline().names()
        top = _Section(data, "", ("store", "images", "norms", "stages", *order))
        store = _resolve(top.text("store", required=True), base)  # type: ignore[arg-type]

        stages = top.names("stages", order) or order
        bad = [s for s in stages if s not in order]
        if bad:
            raise VspInputError(f"stages: unknown stage {bad[0]!r}; stages are {', '.join(order)}")
        stages = tuple(s for s in order if s in stages)  # always run in pipeline order

        images = top.text("images")
        images = _resolve(images, base) if images else None
        for stage in stages:
            if "images" in required_needs(stage) and images is None:
                raise VspInputError(
                    f"images: required when the {stage} stage runs (folder, s3:// prefix or manifest)"
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
        for stage in stages:
            if "norms" in required_needs(stage) and norms is None:
                raise VspInputError(
                    f"norms: required when the {stage} stage runs (path or URI of CSLB norms.dat)"
                )

        meta_data, dec = _meta_section(top.data.get("meta"))
        hooks = {
            "extract": _extract_hooks(base),
            "meta": _meta_hooks(base, dec),
            "similarity": _similarity_hooks(base),
            "report": _report_hooks(base, store),
        }
        configs = {
            name: _read_stage(
                name, meta_data if name == "meta" else top.data.get(name), base, hooks.get(name),
                ("decodability",) if name == "meta" else (),
            )
            for name in order
        }  # fmt: skip
        extra = {k: v for k, v in configs.items() if k not in BUILTIN}
        builtin = {k: configs[k] for k in BUILTIN if k in configs}
        return cls(
            store=store, images=images, norms=norms, stages=stages, **builtin, extra=extra, source=source
        )

    # -- views -----------------------------------------------------------------------------------------------
    def settings(self, name: str) -> Any:
        """The Config of the registered stage ``name``, as the run file set it (its defaults otherwise)."""
        if name in BUILTIN:
            return getattr(self, name)
        if name in self.extra:
            return self.extra[name]
        return config_class(name)()  # KeyError naming the stages for an unknown one

    def norms_dict(self) -> dict[str, Any] | None:
        """The norms section as the run record and the identities hold it (None without norms)."""
        return plain(asdict(self.norms)) if self.norms is not None else None

    def to_dict(self) -> dict[str, Any]:
        """The normalised configuration as plain JSON/YAML types (``from_dict`` reads it back)."""
        out: dict[str, Any] = {
            "store": self.store,
            "images": self.images,
            "norms": self.norms_dict(),
            "stages": list(self.stages),
        }
        for name in BUILTIN:
            out[name] = section_dict(getattr(self, name))
        for name, config in self.extra.items():
            out[name] = section_dict(config)
        return out

    def stage_identity(self, stage: str) -> dict[str, Any]:
        """What decides one stage's results: a rerun of that stage on the same prefix must match it.

        Store, stages and tuning settings (``setting(identity=False)``: batch size, actors, layers per task)
        are left out; so is everything the stage does not read, so running `extract` first and `decode`
        later (adding ``norms``) is one run. Each stage answers for itself (``vsp.stage.Stage.identity``).
        """
        return _stage(stage).identity(self)

    def identity(self) -> dict[str, dict[str, Any]]:
        """Per stage this run runs: what decides its results (see :meth:`stage_identity`)."""
        return {s: self.stage_identity(s) for s in self.stages}

    # The stages' configs are the sections themselves; these names remain for callers of release 0.2.
    def extraction_config(self) -> ExtractionConfig:
        """The extraction stage's config (``self.extract``)."""
        return self.extract

    def decode_config(self) -> DecodeConfig:
        """The decoding stage's config (``self.decode``)."""
        return self.decode

    def meta_config(self) -> MetaConfig:
        """The meta stage's config (``self.meta``)."""
        return self.meta

    def meta_decode_config(self) -> DecodeConfig:
        """The decodability step of the meta stage (folds, seed, C as `vsp meta`)."""
        return self.meta.decodability_config()

    def mapping_config(self) -> MappingConfig:
        """The map stage's config (``self.map``)."""
        return self.map

    def with_settings(self, name: str, config: Any) -> RunConfig:
        """The same run with stage ``name``'s Config replaced (a stage's automatic settings decided)."""
        if name in BUILTIN:
            return replace(self, **{name: config})
        return replace(self, extra={**self.extra, name: config})

    def with_stages(self, stages: tuple[str, ...] | list[str]) -> RunConfig:
        """The same run restricted to some stages (e.g. ``python -m jobs.extract`` runs only extraction)."""
        data = self.to_dict()
        data["stages"] = list(stages)
        return RunConfig.from_dict(data, source=self.source)


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
