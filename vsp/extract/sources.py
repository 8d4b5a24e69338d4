"""Model sources: torchvision, timm, OpenCLIP image towers and Hugging Face vision models, one spec each.

A model spec is ``[family:]name``:

- ``resnet34`` or ``torchvision:resnet34``: a torchvision classification network (`vsp.extract.networks`).
- ``timm:<name>``: ``timm.create_model(name)`` (``vsp[timm]``); a pretrained tag goes in the name as timm
  writes it (``timm:vit_base_patch16_224.augreg2_in21k_ft_in1k``).
- ``open_clip:<arch>[:<pretrained tag>]``: the image tower (``model.visual``) of ``open_clip.create_model``
  (``vsp[clip]``); the tag names the published weights (``open_clip.list_pretrained_tags_by_model``).
- ``hf:<repository id or local folder>``: ``transformers.AutoModel`` (``vsp[hf]``), from the Hugging Face
  cache
  (``HF_HOME`` is respected) or a folder written by ``save_pretrained``. Dual image-text models (CLIP, SigLIP)
  give their vision model. With ``--weights random`` a model *type* builds the architecture from its default
  configuration: ``hf:vit``, ``hf:dinov2``, ``hf:clip_vision_model``, ``hf:siglip_vision_model`` (any
  ``transformers`` model type); a folder holding only a ``config.json`` builds that (small) configuration.

Weights (``--weights``): ``random`` (seeded construction: ``torch.manual_seed(seed)`` in a forked RNG,
identity
``random:<seed>``), ``imagenet`` / ``pretrained`` (the family's published weights: torchvision's ``DEFAULT``
enum, timm's pretrained config, the OpenCLIP tag, the Hugging Face checkpoint; identity is the hub repository
and its commit, or the sha256 of a local folder's weight files), or a weights file (local or ``s3://``): a
``state_dict`` read with ``torch.load(weights_only=True)`` or a ``.safetensors`` file, identity
``sha256:<hex>``.

The penultimate representation is the pooled embedding the model itself produces: torchvision and timm the
classifier's input (timm's ``forward_head(pre_logits=True)``); Hugging Face the ``pooler_output`` (ViT: the
pooler's tanh(dense(CLS)), DINOv2 and CLIP: the normalised class token, SigLIP: the attention-pooling head)
or the class token of ``last_hidden_state`` where there is no pooler; OpenCLIP and Hugging Face CLIP the
image embedding *before* the projection, with a second tap ``projection`` after it (the embedding that is
compared with text). Each loaded model carries a module ``vsp_embedding`` whose input is the penultimate
value (and whose output the projection).

Store group names (:attr:`ModelSource.group`): a torchvision model keeps its name; any other is
``<family>__<name>`` with every character outside ``[A-Za-z0-9_.-]`` replaced by ``_``, and when anything had
to be replaced, ``-`` and the first 8 hex digits of the spec's sha256, so two specs never share a group on a
file system or S3 (``hf:google/vit-base-patch16-224`` -> ``hf__google_vit-base-patch16-224-<hash>``).
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vsp.data.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TORCHVISION,
    Preprocessing,
    from_hf_processor,
    from_open_clip,
    from_timm,
)
from vsp.errors import VspInputError
from vsp.extract.networks import EMBEDDING

log = logging.getLogger(__name__)

FAMILIES = ("torchvision", "timm", "open_clip", "hf")
#: family -> (the module it needs, the pip extra that installs it)
EXTRAS = {"timm": ("timm", "timm"), "open_clip": ("open_clip", "clip"), "hf": ("transformers", "hf")}
PRETRAINED = ("imagenet", "pretrained")
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class ModelSource:
    """A parsed model spec: family, name (model, architecture, repository, folder or type), OpenCLIP tag."""

    spec: str
    family: str
    name: str
    tag: str = ""

    @property
    def group(self) -> str:
        """The store-safe name of the model's group (module docstring)."""
        if self.family == "torchvision":
            return self.name
        raw = self.name + (f"__{self.tag}" if self.tag else "")
        if self.family == "hf" and Path(self.name).expanduser().is_dir():
            raw = Path(self.name).expanduser().resolve().name
            digest = hashlib.sha256(str(Path(self.name).expanduser().resolve()).encode()).hexdigest()[:8]
            return f"hf__{_SAFE.sub('_', raw)}-{digest}"
        clean = _SAFE.sub("_", raw)
        if clean != raw or len(clean) > 120:
            clean = f"{clean[:120]}-{hashlib.sha256(self.spec.encode()).hexdigest()[:8]}"
        return f"{self.family}__{clean}"


def parse_source(spec: str) -> ModelSource:
    """``[family:]name`` -> :class:`ModelSource`; an unknown family is refused, naming the known ones."""
    text = str(spec).strip()
    if not text:
        raise VspInputError("empty model name")
    family, sep, rest = text.partition(":")
    if not sep:
        return ModelSource(text, "torchvision", text)
    if family not in FAMILIES:
        raise VspInputError(
            f"model {text!r}: unknown family {family!r}; write <family>:<name> with family one of "
            f"{', '.join(FAMILIES)}, or a torchvision model name"
        )
    if not rest:
        raise VspInputError(f"model {text!r}: no name after {family}:")
    if family == "open_clip":
        arch, _, tag = rest.partition(":")
        return ModelSource(text, family, arch, tag)
    return ModelSource(text, family, rest)


def require(family: str) -> Any:
    """Import a family's library, or say which extra installs it."""
    module, extra = EXTRAS[family]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise VspInputError(
            f"models of family {family!r} need the {module} package: pip install 'vsp[{extra}]'"
        ) from exc


@dataclass
class LoadedModel:
    """A model ready for the extractor: the module (eval mode), its identity, preprocessing and source."""

    source: ModelSource
    model: nn.Module
    identity: str
    preprocessing: Preprocessing
    record: dict[str, Any] = field(default_factory=dict)


def _seeded(seed: int, build):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _weights_file(uri: str, name: str) -> tuple[dict[str, torch.Tensor], str]:
    from vsp.extract.networks import _read_weights_file, _state_dict_from_bytes

    data = _read_weights_file(uri)
    return dict(_state_dict_from_bytes(data, uri, name)), "sha256:" + hashlib.sha256(data).hexdigest()


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], uri: str, spec: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise VspInputError(f"weights file {uri!r} does not fit model {spec!r}: {exc}") from exc


def _hub_revision(repo: str) -> str:
    """The commit of a Hugging Face repository in the local cache ("" when unknown)."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo.rstrip("/"), local_files_only=True)).name
    except Exception:  # noqa: BLE001 - not cached, no huggingface_hub: the identity says so
        return ""


def _folder_digest(folder: Path) -> str:
    """sha256 over the weight files of a local checkpoint folder (names and bytes, sorted)."""
    h = hashlib.sha256()
    files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".pt", ".pth"))
    if not files:
        raise VspInputError(f"{folder}: no weight files (*.safetensors, *.bin) in the model folder")
    for p in files:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return "sha256:" + h.hexdigest()


class _Projection(nn.Module):
    """OpenCLIP's image projection (a bare parameter there) as a module, so it can be tapped."""

    def __init__(self, proj: nn.Parameter) -> None:
        super().__init__()
        self.proj = proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.proj


def _attach_embedding(root: nn.Module, head: nn.Module | None, pooled) -> None:
    """Give ``root`` a ``vsp_embedding`` module fed with the pooled embedding after every forward pass."""
    root.add_module(EMBEDDING, head if head is not None else nn.Identity())

    def hook(module, _args, output):
        getattr(module, EMBEDDING)(pooled(output))

    root.register_forward_hook(hook)


# ------------------------------------------------------------------------------------------------ families
def _torchvision(src: ModelSource, weights: str, seed: int) -> LoadedModel:
    from vsp.extract.networks import load_model

    model, identity = load_model(src.name, "imagenet" if weights == "pretrained" else weights, seed)
    return LoadedModel(src, model, identity, TORCHVISION)


def _timm(src: ModelSource, weights: str, seed: int) -> LoadedModel:
    timm = require("timm")
    try:
        if weights in PRETRAINED:
            model = timm.create_model(src.name, pretrained=True)
            cfg = model.pretrained_cfg or {}
            hub = cfg.get("hf_hub_id") or cfg.get("url") or src.name
            rev = _hub_revision(hub) if cfg.get("hf_hub_id") else ""
            identity = f"timm:{hub}" + (f"@{rev}" if rev else "")
        else:
            model = _seeded(seed, lambda: timm.create_model(src.name.split(".")[0], pretrained=False))
            identity = f"random:{seed}"
    except RuntimeError as exc:
        if "Unknown model" in str(exc) or "Invalid pretrained tag" in str(exc):
            raise VspInputError(f"model {src.spec!r}: {exc} (see timm.list_models())") from exc
        raise VspInputError(f"model {src.spec!r}: could not load pretrained weights: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - hub / cache failures: say how to get the weights
        raise VspInputError(
            f"model {src.spec!r}: could not load timm weights ({type(exc).__name__}: {exc}); offline "
            "machines need them in the Hugging Face cache (HF_HOME), or pass --weights random or a weights "
            "file"
        ) from exc
    if weights not in PRETRAINED and weights != "random":
        state, identity = _weights_file(weights, src.spec)
        _load_state(model, state, weights, src.spec)
    config = timm.data.resolve_data_config({}, model=model)
    return LoadedModel(src, model.eval(), identity, from_timm(config), {"architecture": src.name})


def _open_clip(src: ModelSource, weights: str, seed: int) -> LoadedModel:
    open_clip = require("open_clip")
    if src.name not in open_clip.list_models():
        raise VspInputError(
            f"model {src.spec!r}: unknown OpenCLIP architecture (see open_clip.list_models())"
        )
    record: dict[str, Any] = {"architecture": src.name}
    if weights in PRETRAINED:
        tags = open_clip.list_pretrained_tags_by_model(src.name)
        if not src.tag:
            raise VspInputError(
                f"model {src.spec!r}: pretrained OpenCLIP weights need a tag, open_clip:{src.name}:<tag> "
                f"with tag one of {', '.join(tags) or '(none published)'}"
            )
        try:
            full = open_clip.create_model(src.name, pretrained=src.tag, require_pretrained=True)
        except Exception as exc:  # noqa: BLE001 - download / cache failures
            raise VspInputError(
                f"model {src.spec!r}: could not load OpenCLIP weights {src.tag!r} "
                f"({type(exc).__name__}: {exc}); offline machines need them in the Hugging Face cache "
                "(HF_HOME)"
            ) from exc
        hub = (open_clip.get_pretrained_cfg(src.name, src.tag) or {}).get("hf_hub", "")
        rev = _hub_revision(hub) if hub else ""
        identity = f"open_clip:{src.name}:{src.tag}" + (f"@{hub.rstrip('/')}:{rev}" if rev else "")
    else:
        full = _seeded(seed, lambda: open_clip.create_model(src.name, pretrained=None))
        identity = f"random:{seed}"
        if weights != "random":
            state, identity = _weights_file(weights, src.spec)
            if not any(k.startswith("visual.") for k in state):  # the image tower's own state_dict
                state = {f"visual.{k}": v for k, v in state.items()}
                state = {
                    **{k: v for k, v in full.state_dict().items() if not k.startswith("visual.")},
                    **state,
                }
            _load_state(full, state, weights, src.spec)
    visual = full.visual
    pre = from_open_clip(dict(getattr(visual, "preprocess_cfg", {}) or {
        "size": visual.image_size, "mean": CLIP_MEAN, "std": CLIP_STD,
    }))  # fmt: skip
    head = None
    if isinstance(getattr(visual, "proj", None), nn.Parameter):
        head = _Projection(visual.proj)
        visual.proj = None  # the tower now outputs the embedding before the projection
    _attach_embedding(visual, head, lambda out: out)
    return LoadedModel(src, visual.eval(), identity, pre, record)


#: Preprocessing of a Hugging Face model built from its type (no processor config): that of the type's
#: reference checkpoint (google/vit-base-patch16-224, facebook/dinov2-base, openai/clip-vit-base-patch32,
#: google/siglip-base-patch16-224); ``size`` is the configuration's ``image_size``.
def _hf_default(model_type: str, size: int) -> Preprocessing:
    if model_type == "vit":
        return Preprocessing((size, size), 0, "bilinear", HALF, HALF)
    if model_type in ("dinov2", "dinov2_with_registers"):
        return Preprocessing(round(size * 256 / 224), size, "bicubic", IMAGENET_MEAN, IMAGENET_STD)
    if model_type in ("clip", "clip_vision_model"):
        return Preprocessing(size, size, "bicubic", CLIP_MEAN, CLIP_STD)
    if model_type in ("siglip", "siglip_vision_model", "siglip2", "siglip2_vision_model"):
        return Preprocessing((size, size), 0, "bicubic", HALF, HALF)
    raise VspInputError(
        f"Hugging Face model type {model_type!r} has no preprocessing vsp knows; use a folder or repository "
        "with a preprocessor_config.json"
    )


def _hf_pooled(output):
    pooled = getattr(output, "pooler_output", None)
    if pooled is None:
        pooled = output.last_hidden_state[:, 0]
    return pooled


def _hf(src: ModelSource, weights: str, seed: int) -> LoadedModel:
    transformers = require("hf")
    from transformers import AutoConfig, AutoModel

    folder = Path(src.name).expanduser()
    local = folder.is_dir()
    if local and not (folder / "config.json").is_file():
        raise VspInputError(f"model {src.spec!r}: {folder} has no config.json")
    is_type = not local and src.name in transformers.CONFIG_MAPPING
    where = str(folder) if local else src.name
    try:
        if weights in PRETRAINED:
            if is_type:
                raise VspInputError(
                    f"model {src.spec!r} names an architecture, not a checkpoint: pretrained weights need a "
                    "repository (hf:google/vit-base-patch16-224) or a folder; use --weights random for "
                    "the type"
                )
            model = AutoModel.from_pretrained(where, local_files_only=local)
            commit = getattr(model.config, "_commit_hash", None)
            identity = (
                _folder_digest(folder) if local else f"hf:{src.name}" + (f"@{commit}" if commit else "")
            )
        else:
            config = (
                AutoConfig.for_model(src.name)
                if is_type
                else AutoConfig.from_pretrained(where, local_files_only=local)
            )
            model = _seeded(seed, lambda: AutoModel.from_config(config))
            identity = f"random:{seed}"
    except VspInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - missing repository, no cache, bad config
        raise VspInputError(
            f"model {src.spec!r}: could not load it with transformers ({type(exc).__name__}: {exc}); a "
            "repository must be in the Hugging Face cache (HF_HOME) on an offline machine"
        ) from exc
    head = None
    if hasattr(model, "vision_model") and hasattr(model, "get_image_features"):  # a dual image-text model
        head = getattr(model, "visual_projection", None)
        model = model.vision_model
    if weights not in PRETRAINED and weights != "random":
        state, identity = _weights_file(weights, src.spec)
        _load_state(model, state, weights, src.spec)
    config = model.config
    size = int(config.image_size if isinstance(config.image_size, int) else config.image_size[0])
    pre = None
    if not is_type:
        try:
            from transformers import AutoImageProcessor

            pre = from_hf_processor(AutoImageProcessor.from_pretrained(where, local_files_only=local))
        except (OSError, ValueError, KeyError) as exc:
            log.info("%s: no image processor config (%s); using the type's defaults", src.spec, exc)
    if pre is None:
        pre = _hf_default(config.model_type, size)
    _attach_embedding(model, head, _hf_pooled)
    record = {"model_type": config.model_type, "class": type(model).__name__}
    return LoadedModel(src, model.eval(), identity, pre, record)


_LOADERS = {"torchvision": _torchvision, "timm": _timm, "open_clip": _open_clip, "hf": _hf}


def load_source(spec: str | ModelSource, weights: str = "random", seed: int = 0) -> LoadedModel:
    """Build the model a spec names with ``weights`` (module docstring); eval mode, on the CPU."""
    src = spec if isinstance(spec, ModelSource) else parse_source(spec)
    loaded = _LOADERS[src.family](src, str(weights), seed)
    log.info("loaded %s with weights %s", src.spec, loaded.identity)
    return loaded


def source_record(loaded: LoadedModel) -> dict[str, Any]:
    """What the features identity records of a non-torchvision model: spec, family, preprocessing."""
    return {
        "spec": loaded.source.spec,
        "family": loaded.source.family,
        "preprocessing": loaded.preprocessing.record(),
        **loaded.record,
    }
