"""Model registry, layer selections, the penultimate tap, and weights (imagenet / file / random).

Any torchvision classification model is available by name (``torchvision.models.list_models`` with
``module=torchvision.models``): the paper's four are ``alexnet``, ``vgg16``, ``resnet34`` and ``densenet169``.

Weights (:func:`load_model`):

- ``"random"``: ``torch.manual_seed(seed)`` (in a forked RNG, so the caller's global RNG is untouched), then
  the torchvision constructor with ``weights=None``. Identity ``"random:<seed>"``. Same torch version, same
  seed: same weights.
- ``"imagenet"``: the torchvision weight enum ``DEFAULT`` (downloaded once into ``$TORCH_HOME``; needs the
  network the first time). Identity is the enum name, e.g. ``"ResNet34_Weights.IMAGENET1K_V1"``.
- anything else is a weights file, a local path or an ``s3://`` URI, read through
  :func:`vsp.io.store.open_store` and loaded with ``torch.load(weights_only=True)``. It must hold a
  ``state_dict`` for that architecture (a ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper and a
  DataParallel ``module.`` prefix are accepted). Identity ``"sha256:<hex of the file bytes>"``.

Layer selections (:func:`select_layers`):

- ``"all-conv"``: every ``nn.Conv2d`` in module (registration) order. AlexNet 5, VGG16 13, ResNet34 36 (the
  three ``downsample.0`` 1x1 convs included), DenseNet169 168.
- ``"paper"``: the paper's choice (section 3.2). AlexNet, VGG, ResNet and any model without dense blocks: all
  conv layers, as ``"all-conv"``. DenseNet: the first conv (``features.conv0``), then every dense layer of
  every dense block and every transition, in module order. A "block layer" resolves to one ``_DenseLayer``
  (e.g. ``features.denseblock1.denselayer1``); its output is the ``growth_rate`` (32) new channels that layer
  adds to the block's concatenated state, i.e. the output of its second (3x3) conv. A transition
  (``features.transition1``) outputs the BN-ReLU-1x1conv-avgpool result. DenseNet169: 1 + (6 + 12 + 32 + 32) +
  3 = 86 taps.
- ``"blocks"``: every repeated block (each CNN block, each transformer block; `_blocks` gives the rule). A
  block's output is pooled according to its layout (`vsp.extract.layouts`: a Swin block is channels-last, a
  ViT block a token sequence), found from a dry pass.
- an explicit list of module names (a Python list, or one string with comma-separated names), or a regular
  expression ``"re:<pattern>"`` matched with ``re.fullmatch`` against every module name. Either way the result
  is in module order, without duplicates.

The default everywhere (``vsp extract``, ``vsp demo``, the run file, ``ExtractionConfig``,
``MultiNetExtractor``) is ``"paper"``; for AlexNet, VGG16 and ResNet34 it is the same taps as ``"all-conv"``.

Tap kinds: ``"conv"`` (an ``nn.Conv2d``), ``"block"`` (a DenseNet dense layer), ``"transition"`` (a DenseNet
transition), ``"penultimate"``, ``"projection"`` (a CLIP image embedding after its projection,
`vsp.extract.sources`), and ``"module"`` for any other module picked by name or regex.

Activation points (:func:`activation_taps`, ``--activation``)
------------------------------------------------------------
Which value of a tap is pooled. ``"conv"`` (the default) is the tapped module's own output: a conv tap is the
raw ``nn.Conv2d`` output (before the BatchNorm of ResNet/DenseNet, before the ReLU of AlexNet/VGG), a dense
layer its 32 new channels as its 3x3 conv outputs them, a transition its average-pooled output.

``"bn"`` is the tap's output as the BatchNorm that follows it normalises it (eval mode: running statistics):

- a conv tap: the BatchNorm that is the only consumer of the conv's output (found by ``torch.fx`` tracing).
  ResNet: ``conv1`` -> ``bn1``, ``layerX.Y.convK`` -> ``layerX.Y.bnK``, ``downsample.0`` -> ``downsample.1``;
  DenseNet: ``features.conv0`` -> ``features.norm0``, ``denselayerN.conv1`` -> ``denselayerN.norm2``.
  A ``denselayerN.conv2`` is that dense layer's output (next item).
- a DenseNet dense layer (and its ``conv2``): DenseNet is pre-activation: a layer's new channels are
  concatenated to the block's state, and every later consumer applies its *own* BatchNorm to them. ``bn`` is
  the *first* consumer's: the next dense layer's ``norm1`` (the block's last layer: the transition's
  ``norm``; the last layer of the last block: ``features.norm5``), restricted to the layer's channel slice
  ``[k, k + 32)`` of that BatchNorm, where ``k`` is the layer's input width (``norm1.num_features``), e.g.
  ``features.denseblock1.denselayer3.norm1[96:128]`` for ``denselayer2``.
- a DenseNet transition: the next block's first dense layer's ``norm1``, channels ``[0, C)``.
- no BatchNorm follows (every conv of AlexNet/VGG; a DenseNet transition's ``conv``, which an average pool
  follows): ``bn`` is the tap's own output, the same numbers as ``"conv"``. The tap records activation
  ``"conv"`` and the extractor logs which taps these are.

``"relu"`` is ``relu`` of the ``"bn"`` value (of the tap's own output where no BatchNorm follows), computed
from that value, never read from the network's ReLU modules (ResNet's ``BasicBlock`` uses one ``relu`` module
twice, the second time after the residual add). Where the network applies that ReLU itself it is the value
the network computes: AlexNet/VGG (``ReLU`` after every conv), ResNet's ``conv1`` and every block's
``conv1``, DenseNet's ``conv0``, ``denselayerN.conv1`` and every dense layer and transition (the consumer's
``relu1``/``relu`` reads its BatchNorm's output). For a ResNet block's ``conv2`` and ``downsample.0`` it is
``relu(bn2(conv2(.)))`` / ``relu(downsample.1(.))`` of that branch *before* the residual add, a value the
network itself never forms (it adds the branches first, then applies the ReLU).

Module taps (kind ``"module"``) have no defined BatchNorm: ``"bn"`` and ``"relu"`` refuse them, naming the
tap. The penultimate tap is never changed (it is the classifier's input, recorded as
``"classifier-input"``).

The penultimate representation (:func:`penultimate_tap`) is the input of the last ``nn.Linear`` in module
order (the classifier), captured with a forward pre-hook. AlexNet/VGG: the second fully connected layer after
its ReLU (dropout is the identity in eval mode), 4096 values; ResNet34: the 512-d pooled vector; DenseNet169:
the 1664-d pooled vector.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import PurePosixPath

import torch
import torchvision
from torch import nn
from torchvision.models.densenet import _DenseBlock, _DenseLayer, _Transition

from vsp.errors import VspInputError

log = logging.getLogger(__name__)

PAPER_MODELS = ("alexnet", "vgg16", "resnet34", "densenet169")
PENULTIMATE = "penultimate"
DEFAULT_LAYERS = "paper"
#: Where a tap's value is read (module docstring): the module's own output, after the BatchNorm that follows
#: it, or that through a ReLU.
ACTIVATIONS = ("conv", "bn", "relu")
CLASSIFIER_INPUT = "classifier-input"  # the penultimate tap's activation: never changed
IMAGE_EMBEDDING = "image-embedding"  # the projection tap's activation (a CLIP image embedding)
EMBEDDING = "vsp_embedding"  # vsp.extract.sources: input = the pooled embedding, output = its projection
PROJECTION = "projection"


@dataclass(frozen=True)
class Tap:
    """One tapped representation of a network.

    ``name`` is the tap's key (the module name, or ``"penultimate"``); ``index`` its position in the model's
    tap list (depth order); ``kind`` one of ``conv``, ``block``, ``transition``, ``penultimate``, ``module``;
    ``module`` the name of the module the hook is registered on (for the penultimate tap, the last Linear; for
    a ``bn``/``relu`` point, the BatchNorm). ``activation`` is the point actually pooled (``conv``, ``bn``,
    ``relu``, or ``classifier-input`` for the penultimate tap); ``bn`` the BatchNorm read for it (``""``:
    none) and ``channels`` the ``[start, stop)`` slice of that BatchNorm's output channels that are this
    tap's (``None``: all of them).
    """

    model: str
    name: str
    index: int
    kind: str
    module: str = ""
    activation: str = "conv"
    bn: str = ""
    channels: tuple[int, int] | None = None
    layout: str = "nchw"  # vsp.extract.layouts: nchw | nhwc | tokens | vector (the penultimate tap)
    prefix: int = 0  # tokens: the class and register tokens before the patches

    @property
    def module_name(self) -> str:
        """The module the hook goes on (``module`` if set, else ``name``)."""
        return self.module or self.name

    @property
    def bn_point(self) -> str:
        """The BatchNorm read, with its channel slice if any (``"a.norm1[64:96]"``); ``""`` for none."""
        if not self.bn:
            return ""
        return self.bn if self.channels is None else f"{self.bn}[{self.channels[0]}:{self.channels[1]}]"


def available_models() -> list[str]:
    """Every torchvision classification model name, sorted."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def _check_model_name(name: str) -> None:
    names = available_models()
    if name not in names:
        near = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(near)}?" if near else ""
        raise VspInputError(
            f"unknown model {name!r}: not a torchvision classification model.{hint} "
            f"Known models include {', '.join(PAPER_MODELS)} (see torchvision.models.list_models())."
        )


def imagenet_weights(name: str):
    """The torchvision ImageNet weight enum (``DEFAULT``) for ``name``; nothing is downloaded."""
    _check_model_name(name)
    return torchvision.models.get_model_weights(name).DEFAULT


def _split_uri(uri: str) -> tuple[str, str]:
    """``"s3://b/p/w.pt"`` -> ``("s3://b/p", "w.pt")``; ``"/a/w.pt"`` -> ``("/a", "w.pt")``."""
    if "://" in uri:
        scheme, rest = uri.split("://", 1)
        rest = rest.rstrip("/")
        if "/" not in rest:
            raise VspInputError(f"weights URI {uri!r} names a bucket, not a file")
        parent, fname = rest.rsplit("/", 1)
        return f"{scheme}://{parent}", fname
    p = PurePosixPath(uri)
    return (str(p.parent) if str(p.parent) else "."), p.name


def _read_weights_file(uri: str) -> bytes:
    from vsp.io.store import read_uri  # imported lazily: the store pulls in pyarrow

    _split_uri(uri)  # refuses a URI that names only a bucket
    try:
        return read_uri(uri)
    except (FileNotFoundError, IsADirectoryError) as exc:
        raise VspInputError(
            f"weights file {uri!r} not found; pass 'random', 'imagenet', or a path/s3:// URI of a state_dict"
        ) from exc


def _is_safetensors(data: bytes) -> bool:
    """The safetensors layout: an 8-byte little-endian header length, then a JSON header."""
    if len(data) < 10:
        return False
    n = int.from_bytes(data[:8], "little")
    return 0 < n <= len(data) - 8 and data[8:9] == b"{"


def _state_dict_from_bytes(data: bytes, uri: str, name: str) -> Mapping[str, torch.Tensor]:
    if _is_safetensors(data):
        try:
            from safetensors.torch import load as load_safetensors
        except ImportError as exc:
            raise VspInputError(
                f"weights file {uri!r} is a safetensors file: pip install safetensors to read it"
            ) from exc
        try:
            return load_safetensors(data)
        except Exception as exc:  # noqa: BLE001 - a damaged file
            raise VspInputError(
                f"weights file {uri!r} for model {name!r}: bad safetensors file: {exc}"
            ) from exc
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad input file
        raise VspInputError(
            f"weights file {uri!r} for model {name!r} could not be loaded with "
            f"torch.load(weights_only=True): {exc}"
        ) from exc
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise VspInputError(f"weights file {uri!r} for model {name!r} does not hold a state_dict of tensors")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


def load_model(name: str, weights: str = "random", seed: int = 0) -> tuple[nn.Module, str]:
    """Build torchvision model ``name`` with ``weights``; return ``(model in eval mode, weights identity)``.

    ``weights`` is ``"random"`` (seeded), ``"imagenet"`` (torchvision ``DEFAULT`` enum) or a path /
    ``s3://`` URI of a state_dict file. See the module docstring for the identity strings.
    """
    _check_model_name(name)
    weights = str(weights)
    if weights == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = torchvision.models.get_model(name, weights=None)
        identity = f"random:{seed}"
    elif weights == "imagenet":
        enum = imagenet_weights(name)
        try:
            model = torchvision.models.get_model(name, weights=enum)
        except Exception as exc:  # noqa: BLE001 - download / cache failures
            raise VspInputError(
                f"could not load ImageNet weights {enum} for model {name!r} (downloaded once into "
                f"TORCH_HOME; offline machines need the file cached there, or use --weights random or a "
                f"weights file): {exc}"
            ) from exc
        identity = str(enum)
    else:
        data = _read_weights_file(weights)
        state = _state_dict_from_bytes(data, weights, name)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = torchvision.models.get_model(name, weights=None)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise VspInputError(f"weights file {weights!r} does not fit model {name!r}: {exc}") from exc
        identity = "sha256:" + hashlib.sha256(data).hexdigest()
    log.info("loaded %s with weights %s", name, identity)
    return model.eval(), identity


def _kind(module: nn.Module) -> str:
    if isinstance(module, nn.Conv2d):
        return "conv"
    if isinstance(module, _DenseLayer):
        return "block"
    if isinstance(module, _Transition):
        return "transition"
    return "module"


def _named(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if n]


def _taps(name: str, picked: list[tuple[str, nn.Module]]) -> list[Tap]:
    return [Tap(model=name, name=n, index=i, kind=_kind(m), module=n) for i, (n, m) in enumerate(picked)]


def _unknown(name: str, bad: str, modules: list[str]) -> VspInputError:
    near = difflib.get_close_matches(bad, modules, n=5, cutoff=0.6)
    hint = f" Near matches: {', '.join(near)}." if near else ""
    return VspInputError(
        f"model {name!r} has no module named {bad!r}.{hint} "
        "Use 'all-conv', 'paper', 'blocks', a list of module names, or 're:<regex>'."
    )


def _blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The ``blocks`` selection: every repeated block, innermost, in module order.

    A block is a child of a ``Sequential`` / ``ModuleList`` / ``ModuleDict`` whose two or more children are
    all of one class and have sub-modules themselves (a run of bare convs or ReLUs is layers, not blocks); a
    block that contains other blocks gives way to them. ResNet: ``layerX.Y``; DenseNet: every dense layer;
    Swin: ``features.S.B``; ViT: ``encoder.layers.encoder_layer_K`` (torchvision), ``blocks.K`` (timm);
    ConvNeXt (timm): ``stages.S.blocks.B``. AlexNet and VGG have no blocks.
    """
    containers = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
    found: set[str] = set()
    for pname, parent in model.named_modules():
        if not isinstance(parent, containers):
            continue
        kids = list(parent.named_children())
        if len(kids) < 2 or len({type(m) for _, m in kids}) != 1 or not list(kids[0][1].children()):
            continue
        found |= {f"{pname}.{k}" if pname else k for k, _ in kids}
    inner = {n for n in found if not any(o.startswith(n + ".") for o in found)}
    return [(n, m) for n, m in _named(model) if n in inner]


def select_layers(model: nn.Module, name: str, selection: str | list[str]) -> list[Tap]:
    """The taps of ``model`` (registered as ``name``) chosen by ``selection``, in module order.

    ``selection``: ``"all-conv"``, ``"paper"``, ``"blocks"`` (:func:`_blocks`), ``"re:<pattern>"``
    (``re.fullmatch`` on module names), a list of module names, or a comma-separated string of them.
    Unknown names raise :class:`VspInputError` naming the model and the nearest module names. A module
    that runs more than once per forward pass (e.g. ResNet's shared ``relu``) reports its last
    call: tap convs, blocks or containers instead.
    """
    named = _named(model)
    if isinstance(selection, str) and selection == "all-conv":
        picked = [(n, m) for n, m in named if isinstance(m, nn.Conv2d)]
    elif isinstance(selection, str) and selection == "paper":
        if any(isinstance(m, _DenseLayer) for _, m in named):
            convs = [(n, m) for n, m in named if isinstance(m, nn.Conv2d)]
            first = convs[0][0] if convs else None
            picked = [(n, m) for n, m in named if n == first or isinstance(m, (_DenseLayer, _Transition))]
        else:
            picked = [(n, m) for n, m in named if isinstance(m, nn.Conv2d)]
    elif isinstance(selection, str) and selection == "blocks":
        picked = _blocks(model)
        if not picked:
            raise VspInputError(
                f"model {name!r} has no repeated blocks (a container of two or more modules of one class); "
                "use 'all-conv', 'paper', module names or 're:<regex>'"
            )
    elif isinstance(selection, str) and selection.startswith("re:"):
        try:
            pattern = re.compile(selection[3:])
        except re.error as exc:
            raise VspInputError(f"bad layer regex {selection!r} for model {name!r}: {exc}") from exc
        picked = [(n, m) for n, m in named if pattern.fullmatch(n)]
        if not picked:
            raise VspInputError(f"layer regex {selection!r} matches no module of model {name!r}")
    else:
        wanted = [s.strip() for s in selection.split(",")] if isinstance(selection, str) else list(selection)
        wanted = [w for w in wanted if w]
        if not wanted:
            raise VspInputError(f"empty layer selection for model {name!r}")
        modules = [n for n, _ in named]
        known = set(modules)
        for w in wanted:
            if w not in known:
                raise _unknown(name, w, modules)
        want = set(wanted)
        picked = [(n, m) for n, m in named if n in want]
    if not picked:
        raise VspInputError(f"layer selection {selection!r} picks no layer of model {name!r}")
    return _taps(name, picked)


def penultimate_tap(model: nn.Module, name: str, index: int | None = None) -> Tap:
    """The input of the last ``nn.Linear`` (the classifier), tapped with a forward pre-hook.

    ``index`` defaults to the number of conv layers (so the tap sorts after an ``"all-conv"`` selection); the
    extractor sets it to the length of the model's selection.
    """
    if index is None:
        index = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    if hasattr(model, EMBEDDING):  # `vsp.extract.sources`: the pooled embedding the model itself produces
        return Tap(
            model=name, name=PENULTIMATE, index=index, kind="penultimate", module=EMBEDDING,
            activation=CLASSIFIER_INPUT, layout="vector",
        )  # fmt: skip
    linears = [n for n, m in _named(model) if isinstance(m, nn.Linear)]
    if not linears:
        raise VspInputError(
            f"model {name!r} has no nn.Linear classifier, so it has no penultimate tap; "
            "pick the layer by name instead"
        )
    return Tap(
        model=name, name=PENULTIMATE, index=index, kind="penultimate", module=linears[-1],
        activation=CLASSIFIER_INPUT, layout="vector",
    )  # fmt: skip


def projection_tap(model: nn.Module, name: str, index: int) -> Tap | None:
    """The CLIP image embedding after its projection (`vsp.extract.sources`), where the model has one."""
    head = getattr(model, EMBEDDING, None)
    if head is None or isinstance(head, nn.Identity):
        return None
    return Tap(
        model=name, name=PROJECTION, index=index, kind="projection", module=EMBEDDING,
        activation=IMAGE_EMBEDDING, layout="vector",
    )  # fmt: skip


def _following_bn(model: nn.Module, name: str) -> dict[str, str]:
    """Conv module name -> the BatchNorm module that is the only consumer of its output (``torch.fx``)."""
    from torch import fx

    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as exc:  # noqa: BLE001 - any tracing failure: the structure cannot be read
        raise VspInputError(
            f"model {name!r} cannot be traced with torch.fx, so the BatchNorm after each conv is unknown "
            f"({type(exc).__name__}: {exc}); use activation 'conv'"
        ) from exc
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    out: dict[str, str] = {}
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.Conv2d):
            continue
        users = list(node.users)
        if len(users) != 1 or calls[node.target] != 1:
            continue
        user = users[0]
        if (
            user.op == "call_module"
            and isinstance(modules.get(user.target), nn.modules.batchnorm._BatchNorm)
            and user.args[:1] == (node,)
            and calls[user.target] == 1
        ):
            out[node.target] = user.target
    return out


def _dense_consumers(model: nn.Module) -> dict[str, tuple[str, tuple[int, int]]]:
    """DenseNet layer/transition name -> (the first BatchNorm that reads its output, its channel slice)."""
    out: dict[str, tuple[str, tuple[int, int]]] = {}

    def first_bn(prefix: str, module: nn.Module) -> str | None:
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            return prefix
        if isinstance(module, _Transition):
            return f"{prefix}.norm"
        if isinstance(module, _DenseBlock):
            first = next((n for n, m in module.named_children() if isinstance(m, _DenseLayer)), None)
            return f"{prefix}.{first}.norm1" if first else None
        return None

    for pname, parent in model.named_modules():
        kids = list(parent.named_children())
        pre = f"{pname}." if pname else ""
        for i, (cname, child) in enumerate(kids):
            after = first_bn(pre + kids[i + 1][0], kids[i + 1][1]) if i + 1 < len(kids) else None
            if isinstance(child, _Transition) and after:
                out[pre + cname] = (after, (0, child.conv.out_channels))
            if isinstance(child, _DenseBlock):
                layers = [(n, m) for n, m in child.named_children() if isinstance(m, _DenseLayer)]
                for j, (lname, layer) in enumerate(layers):
                    bn = f"{pre}{cname}.{layers[j + 1][0]}.norm1" if j + 1 < len(layers) else after
                    if bn:
                        k = layer.norm1.num_features
                        out[f"{pre}{cname}.{lname}"] = (bn, (k, k + layer.conv2.out_channels))
    return out


def activation_taps(model: nn.Module, name: str, taps: list[Tap], activation: str = "conv") -> list[Tap]:
    """``taps`` resolved to ``activation`` (``conv``/``bn``/``relu``, module docstring): where each hook goes.

    ``conv`` returns the taps unchanged. Otherwise every conv, dense-layer and transition tap gets the
    BatchNorm that follows it (``module``, ``bn``, ``channels``) and its activation; a tap that no BatchNorm
    follows keeps its module and records ``conv`` (for ``bn``) or ``relu`` (its own output through a ReLU).
    Module taps are refused with :class:`VspInputError` naming the tap.
    """
    if activation not in ACTIVATIONS:
        raise VspInputError(f"unknown activation point {activation!r}; use one of {', '.join(ACTIVATIONS)}")
    if activation == "conv":
        return list(taps)
    bad = [t.name for t in taps if t.kind == "module"]
    if bad:
        raise VspInputError(
            f"activation {activation!r} is defined for conv layers and DenseNet dense layers/transitions, "
            f"not for module tap {bad[0]!r} of model {name!r}"
            + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else "")
            + "; tap the conv layers, or use activation 'conv'"
        )
    modules = dict(model.named_modules())
    follows = _following_bn(model, name) if any(t.kind == "conv" for t in taps) else {}
    dense = _dense_consumers(model) if any(isinstance(m, _DenseLayer) for m in modules.values()) else {}
    out: list[Tap] = []
    for t in taps:
        if t.kind in ("penultimate", "projection"):
            out.append(t)
            continue
        source: tuple[str, tuple[int, int] | None] | None = None
        if t.kind == "conv" and t.name in follows:
            source = (follows[t.name], None)
        elif t.kind in ("block", "transition") and t.name in dense:
            source = dense[t.name]
        elif t.kind == "conv" and t.name.endswith(".conv2"):
            parent = t.name.rsplit(".", 1)[0]
            if isinstance(modules.get(parent), _DenseLayer) and parent in dense:
                source = dense[parent]  # a dense layer's conv2 output *is* the layer's output
        if source is None:
            out.append(replace(t, activation="conv" if activation == "bn" else "relu"))
            continue
        bn, channels = source
        width = modules[bn].num_features
        if channels is not None and channels[1] > width:  # pragma: no cover - a foreign DenseNet variant
            raise VspInputError(f"model {name!r}: {bn} has {width} channels, tap {t.name!r} needs {channels}")
        out.append(replace(t, module=bn, activation=activation, bn=bn, channels=channels))
    return out
