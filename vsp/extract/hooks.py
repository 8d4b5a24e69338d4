"""One forward pass per network per batch, every tapped layer pooled inside its hook.

:class:`MultiNetExtractor` loads each network once and registers one forward hook per tapped module (a forward
pre-hook on the last ``nn.Linear`` for the penultimate tap). The hook reduces the module's output to one value
per channel *inside the hook, on the device* (global max pool by default, ``pooling="mean"`` for the spatial
mean) and keeps only that ``(B, C)`` vector, so a full feature map lives no longer than the forward pass
itself needs it; one forward pass gives every layer.

Activation point (``activation``)
---------------------------------
``"conv"`` (the default): a conv tap is the output of the ``nn.Conv2d`` module itself, i.e.
**pre-activation** (before the BatchNorm that follows each conv in ResNet/DenseNet, before the ReLU of
AlexNet/VGG). AlexNet and VGG follow each conv with ``ReLU(inplace=True)``: a hook that only kept a reference
to the conv output would later see post-ReLU values (the ReLU overwrites the same storage after the hook
returns). Pooling immediately in the hook avoids that, so the stored value is unambiguously the
pre-activation pooled value.

``"bn"``: the output of the BatchNorm that follows the tap (for a DenseNet dense layer or transition, the
tap's channel slice of the first consumer's BatchNorm); the hook goes on that BatchNorm and pools its output
(or the slice) before any in-place ReLU runs. AlexNet/VGG have no BatchNorm: there ``bn`` is the conv output
(the same numbers as ``conv``), logged and recorded per tap as activation ``"conv"``. ``"relu"``: that value
through a ReLU, computed in the hook (never read from the network's shared ReLU modules): ReLU is monotone, so
``max(relu(x)) == clamp(max(x), min=0)`` and max pooling just clamps the pooled vector; for mean pooling the
map is clamped first, ``mean(relu(x))`` (one transient copy of that one map). The exact definition per
network and tap is in :mod:`vsp.extract.networks` (:func:`vsp.extract.networks.activation_taps`). The
penultimate tap is never changed: it is already the input of the classifier.

DenseNet "paper" taps (see :mod:`vsp.extract.networks`): a dense layer's output is its 32 new (growth-rate)
channels, the output of its 3x3 conv; a transition's output is after its average pool.

GPU options: ``dtype=torch.bfloat16`` (or ``float16``) runs the forward pass under ``torch.autocast`` (weights
stay float32; pooled values are returned as float32, means accumulated in float32); ``channels_last=True``
converts models and inputs to the channels-last memory format. Everything runs under ``torch.inference_mode``.
A float32 forward pass runs cuDNN convolutions and CUDA matmuls in IEEE float32 (:func:`ieee_float32`):
PyTorch's default lets cuDNN use TF32 on Ampere and later GPUs, 10-bit mantissas that would make "float32"
features depend on the card.

Aggregation per concept (:func:`concept_vector`): the mean of the per-image pooled vectors, then L2
normalised.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from vsp.data.preprocess import Preprocessing
from vsp.errors import VspInputError
from vsp.extract.layouts import (
    POOLINGS,
    check_pooling,
    detect_layout,
    pool_layout,
    refuse_layout,
    token_geometry,
)
from vsp.extract.networks import (
    ACTIVATIONS,
    DEFAULT_LAYERS,
    PENULTIMATE,
    PROJECTION,
    Tap,
    activation_taps,
    penultimate_tap,
    projection_tap,
    select_layers,
)
from vsp.extract.sources import load_source, parse_source, source_record

log = logging.getLogger(__name__)

_DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
}


@contextlib.contextmanager
def ieee_float32():
    """Run cuDNN convolutions and CUDA matmuls in IEEE float32 inside the block (no TF32), restored after.

    Uses the ``fp32_precision`` settings of PyTorch >= 2.9 (mixing them with the legacy ``allow_tf32`` flags
    is an error there), else the legacy flags. Harmless on a CPU-only machine: only flags change.
    """
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        targets = [conv, torch.backends.cuda.matmul]
        saved = [t.fp32_precision for t in targets]
        try:
            for t in targets:
                t.fp32_precision = "ieee"
            yield
        finally:
            for t, v in zip(targets, saved, strict=True):
                t.fp32_precision = v
        return
    saved_legacy = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved_legacy


def _as_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype)]
    except KeyError:
        raise VspInputError(f"unknown dtype {dtype!r}; use one of {', '.join(_DTYPES)}") from None


def _per_model(value, names: Sequence[str], what: str) -> dict:
    """One value per model spec; a mapping may be keyed by the spec or by the model's group name."""
    if isinstance(value, Mapping):
        groups = {n: parse_source(n).group for n in names}
        missing = [n for n in names if n not in value and groups[n] not in value]
        if missing:
            raise VspInputError(f"{what} given per model but missing for: {', '.join(missing)}")
        return {n: value[n] if n in value else value[groups[n]] for n in names}
    return dict.fromkeys(names, value)


def pool(x: torch.Tensor, pooling: str = "max", relu: bool = False) -> torch.Tensor:
    """Reduce ``(B, C, *spatial)`` to ``(B, C)`` float32 by global max or mean; ``(B, C)`` passes through."""
    if x.ndim > 2:
        dims = tuple(range(2, x.ndim))
        if pooling == "max":
            v = x.amax(dim=dims)
            return (v.clamp(min=0) if relu else v).float()
        return (x.clamp(min=0) if relu else x).mean(dim=dims, dtype=torch.float32)
    v = x.flatten(1) if x.ndim != 2 else x
    return (v.clamp(min=0) if relu else v).float()


def _first_tensor(output):
    """A module's output tensor; a tuple's first element (Hugging Face layers return tuples)."""
    if isinstance(output, tuple | list) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return output


def resolve_layouts(
    model: nn.Module, name: str, taps: list[Tap], pooling: str, device: torch.device, size: int = 224
) -> list[Tap]:
    """Every tap with its layout (`vsp.extract.layouts`); refuses a tap whose layout is unknown.

    Conv, dense-layer and transition taps are channels-first by construction and the penultimate tap is a
    vector; any other tap (a block, a module picked by name) is measured in one dry pass of two square zero
    images, only when there is such a tap.
    """
    geometry = token_geometry(model, size)
    fixed = {
        "conv": "nchw",
        "block": "nchw",
        "transition": "nchw",
        "penultimate": "vector",
        "projection": "vector",
    }
    if all(t.kind in fixed for t in taps):
        out = [replace(t, layout=fixed[t.kind]) for t in taps]
    else:
        modules = dict(model.named_modules())
        shapes: dict[str, tuple[int, ...]] = {}
        handles = []
        for t in taps:
            if t.kind in fixed:
                continue

            def probe(_m, _a, output, _key=t.name):
                output = _first_tensor(output)
                shapes[_key] = tuple(output.shape) if isinstance(output, torch.Tensor) else ()

            handles.append(modules[t.module_name].register_forward_hook(probe))
        try:
            with torch.inference_mode():
                model(torch.zeros(2, 3, size, size, device=device))
        finally:
            for h in handles:
                h.remove()
        out = []
        for t in taps:
            if t.kind in fixed:
                out.append(replace(t, layout=fixed[t.kind]))
                continue
            shape = shapes.get(t.name, ())
            layout = detect_layout(shape, 2, modules[t.module_name], geometry)
            if layout is None:
                raise refuse_layout(name, t.name, shape)
            prefix = geometry.prefix if layout == "tokens" and geometry is not None else 0
            out.append(replace(t, layout=layout, prefix=prefix))
    for t in out:
        if t.kind not in ("penultimate", "projection"):
            check_pooling(name, t.name, t.layout, pooling, geometry)
    return out


def _log_fallback(model: str, activation: str, taps: list[Tap]) -> None:
    """Say which taps no BatchNorm follows (their ``bn`` is the tap's own output)."""
    plain = [t.name for t in taps if t.kind != "penultimate" and not t.bn]
    if plain:
        shown = ", ".join(plain[:4]) + (f" and {len(plain) - 4} more" if len(plain) > 4 else "")
        what = "the tap's own output" if activation == "bn" else "relu of the tap's own output"
        log.warning(
            "%s: no BatchNorm follows %d of its taps (%s): activation %r there is %s (recorded as %r)",
            model, len(plain), shown, activation, what, "conv" if activation == "bn" else "relu",
        )  # fmt: skip


class MultiNetExtractor:
    """Load every network once; one forward pass per network per batch yields every tapped layer, pooled.

    ``models``: model specs (a list or a comma-separated string; `vsp.extract.sources`: ``resnet34``,
    ``timm:<name>``, ``open_clip:<arch>[:<tag>]``, ``hf:<repo|folder|type>``). Results are keyed by each
    model's store group name (:attr:`vsp.extract.sources.ModelSource.group`; a torchvision model's own name).
    ``layers``, ``weights``: one value for all models or a mapping spec (or group) -> value (see
    :func:`vsp.extract.networks.select_layers` and :func:`vsp.extract.sources.load_source`). ``pooling``:
    ``"max"`` (default), ``"mean"`` or ``"cls"``. ``activation``:
    ``"conv"`` (default), ``"bn"`` or ``"relu"``, the value each layer tap pools (module docstring); every tap
    records the point it got (``Tap.activation``). ``penultimate``: also tap the classifier input (last in
    each model's tap list).

    Attributes (keyed by group name): ``models`` (module), ``taps`` (list of :class:`Tap`, penultimate
    last, then a CLIP ``projection``), ``weights_identity`` (identity string), ``preprocessing``
    (:class:`vsp.data.preprocess.Preprocessing`), ``sources`` (the record of each non-torchvision model).
    A batch is one tensor for every model, or a mapping preprocessing key -> tensor (:meth:`forward_tensors`).
    """

    def __init__(
        self,
        models: str | Sequence[str],
        layers: str | list[str] | Mapping[str, str | list[str]] = DEFAULT_LAYERS,
        weights: str | Mapping[str, str] = "random",
        seed: int = 0,
        device: str | torch.device = "cpu",
        pooling: str = "max",
        dtype: torch.dtype | str = torch.float32,
        *,
        activation: str = "conv",
        channels_last: bool = False,
        penultimate: bool = True,
    ) -> None:
        names = [m.strip() for m in models.split(",")] if isinstance(models, str) else list(models)
        names = [n for n in names if n]
        if not names:
            raise VspInputError("no models given to extract from")
        if len(set(names)) != len(names):
            raise VspInputError(f"duplicate model names in {names}")
        if pooling not in POOLINGS:
            raise VspInputError(f"unknown pooling {pooling!r}; use one of {', '.join(POOLINGS)}")
        if activation not in ACTIVATIONS:
            raise VspInputError(f"unknown activation {activation!r}; use one of {', '.join(ACTIVATIONS)}")
        self.pooling = pooling
        self.activation = activation
        self.dtype = _as_dtype(dtype)
        self.device = torch.device(device)
        self.channels_last = bool(channels_last)
        self.seed = seed
        layer_sel = (
            _per_model(layers, names, "layers")
            if isinstance(layers, Mapping)
            else dict.fromkeys(names, layers)
        )
        weight_sel = _per_model(weights, names, "weights")

        self.models: dict[str, nn.Module] = {}
        self.taps: dict[str, list[Tap]] = {}
        self.weights_identity: dict[str, str] = {}
        self.preprocessing: dict[str, Preprocessing] = {}
        self.sources: dict[str, dict] = {}
        self._results: dict[str, dict[str, torch.Tensor]] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._channels: dict[str, dict[str, int]] | None = None

        groups = [parse_source(n).group for n in names]
        if len(set(groups)) != len(groups):
            raise VspInputError(f"models {names} name the same model twice")
        for spec in names:
            loaded = load_source(spec, str(weight_sel[spec]), seed=seed)
            model, identity, name = loaded.model, loaded.identity, loaded.source.group
            taps = select_layers(model, name, layer_sel[spec])
            if penultimate:
                taps = [t for t in taps if t.name not in (PENULTIMATE, PROJECTION)]
                taps.append(penultimate_tap(model, name, index=len(taps)))
                proj = projection_tap(model, name, index=len(taps))
                if proj is not None:
                    taps.append(proj)
            taps = activation_taps(model, name, taps, activation)
            if activation != "conv":
                _log_fallback(name, activation, taps)
            model = model.to(self.device)
            if self.channels_last:
                model = model.to(memory_format=torch.channels_last)
            taps = resolve_layouts(model, name, taps, pooling, self.device, loaded.preprocessing.size)
            self.models[name] = model
            self.taps[name] = taps
            self.weights_identity[name] = identity
            self.preprocessing[name] = loaded.preprocessing
            if loaded.source.family != "torchvision":
                self.sources[name] = source_record(loaded)
            self._results[name] = {}
            self._register(name, model, taps)
            log.info("%s: %d taps (%s weights) on %s", name, len(taps), identity, self.device)

    # hooks -------------------------------------------------------------------------------------------------
    def _register(self, name: str, model: nn.Module, taps: list[Tap]) -> None:
        modules = dict(model.named_modules())
        results = self._results[name]
        pooling = self.pooling
        for tap in taps:
            module = modules[tap.module_name]
            if tap.kind == "penultimate":

                def pre_hook(_mod, args, _key=tap.name):
                    results[_key] = args[0].flatten(1).float()  # the classifier input, (B, D)

                self._handles.append(module.register_forward_pre_hook(pre_hook))
            else:

                def hook(
                    _mod, _args, output, _key=tap.name, _model=name, _ch=tap.channels,
                    _relu=tap.activation == "relu", _layout=tap.layout, _prefix=tap.prefix,
                ):  # fmt: skip
                    output = _first_tensor(output)
                    if not isinstance(output, torch.Tensor):
                        raise VspInputError(
                            f"layer {_key!r} of model {_model!r} outputs {type(output).__name__}, "
                            "not a tensor; tap a module whose output is a (B, C, H, W) feature map"
                        )
                    if _ch is not None:  # a DenseNet tap: its channels of the consumer's BatchNorm
                        output = output[:, _ch[0] : _ch[1]]
                    results[_key] = pool_layout(output, _layout, pooling, _relu, _prefix)

                self._handles.append(module.register_forward_hook(hook))

    def close(self) -> None:
        """Remove every hook (the models stay usable without them)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __enter__(self) -> MultiNetExtractor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # forward -----------------------------------------------------------------------------------------------
    def _autocast(self):
        if self.dtype == torch.float32:
            return ieee_float32() if self.device.type == "cuda" else contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    @property
    def preprocessings(self) -> list[Preprocessing]:
        """The distinct preprocessings of the models, in model order (what a decoder must produce)."""
        return list({p.key: p for p in self.preprocessing.values()}.values())

    def _input(self, batch, key: str) -> torch.Tensor:
        if isinstance(batch, Mapping):
            if key not in batch:
                raise VspInputError(
                    f"no images preprocessed as {key!r} in the batch (have: {', '.join(batch)})"
                )
            batch = batch[key]
        if not isinstance(batch, torch.Tensor) or batch.ndim != 4 or batch.shape[1] != 3:
            shape = tuple(batch.shape) if isinstance(batch, torch.Tensor) else type(batch).__name__
            raise VspInputError(f"expected an image batch of shape (B, 3, H, W), got {shape}")
        x = batch.to(self.device, dtype=torch.float32, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def forward_tensors(
        self, batch: torch.Tensor | Mapping[str, torch.Tensor]
    ) -> dict[str, dict[str, torch.Tensor]]:
        """Like :meth:`__call__` but returns the pooled ``(B, C)`` float32 tensors on the device.

        ``batch``: one ``(B, 3, H, W)`` tensor for every model, or a mapping from preprocessing key
        (:attr:`vsp.data.preprocess.Preprocessing.key`) to the same images preprocessed that way.
        """
        inputs: dict[str, torch.Tensor] = {}
        out: dict[str, dict[str, torch.Tensor]] = {}
        with torch.inference_mode(), self._autocast():
            for name, model in self.models.items():
                key = self.preprocessing[name].key if isinstance(batch, Mapping) else ""
                if key not in inputs:
                    inputs[key] = self._input(batch, key)
                x = inputs[key]
                results = self._results[name]
                results.clear()
                model(x)
                missing = [t.name for t in self.taps[name] if t.name not in results]
                if missing:
                    raise RuntimeError(f"model {name!r}: the forward pass never reached taps {missing[:5]}")
                out[name] = {t.name: results[t.name] for t in self.taps[name]}
                results.clear()
        return out

    def __call__(self, batch: torch.Tensor | Mapping[str, torch.Tensor]) -> dict[str, dict[str, np.ndarray]]:
        """Pooled features of one batch: model -> tap name -> ``(B, C)`` float32 array."""
        pooled = self.forward_tensors(batch)
        out: dict[str, dict[str, np.ndarray]] = {}
        for name, per_tap in pooled.items():
            keys = list(per_tap)
            widths = [per_tap[k].shape[1] for k in keys]
            flat = torch.cat([per_tap[k] for k in keys], dim=1).cpu().numpy()  # one device->host copy
            parts = np.split(flat, np.cumsum(widths)[:-1], axis=1)
            out[name] = {k: np.ascontiguousarray(p) for k, p in zip(keys, parts, strict=True)}
        return out

    def channels(self, size: int | None = None) -> dict[str, dict[str, int]]:
        """Channels per model and tap, from one dry pass of a zero image (cached).

        The image has each model's input size, or ``size`` px.
        """
        if self._channels is None:
            zeros = {p.key: torch.zeros(1, 3, size or p.size, size or p.size) for p in self.preprocessings}
            pooled = self.forward_tensors(zeros)
            self._channels = {m: {k: int(v.shape[1]) for k, v in t.items()} for m, t in pooled.items()}
        return self._channels


def extract_images(
    extractor: MultiNetExtractor,
    tensors: torch.Tensor | Iterable[torch.Tensor],
    batch_size: int = 32,
) -> dict[str, dict[str, np.ndarray]]:
    """Run ``tensors`` ((N, 3, H, W) or an iterable of (3, H, W)) through ``extractor`` in batches.

    Returns model -> tap name -> ``(N, C)`` float32, the per-image pooled vectors in input order.
    """
    if batch_size < 1:
        raise VspInputError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(tensors, torch.Tensor):
        batches: Iterable[torch.Tensor] = (
            tensors[i : i + batch_size] for i in range(0, len(tensors), batch_size)
        )
    else:

        def _chunks():
            buf: list[torch.Tensor] = []
            for t in tensors:
                buf.append(t)
                if len(buf) == batch_size:
                    yield torch.stack(buf)
                    buf = []
            if buf:
                yield torch.stack(buf)

        batches = _chunks()
    parts: dict[str, dict[str, list[np.ndarray]]] = {}
    for batch in batches:
        for model, per_tap in extractor(batch).items():
            for tap, arr in per_tap.items():
                parts.setdefault(model, {}).setdefault(tap, []).append(arr)
    if not parts:
        raise VspInputError("no images to extract")
    return {m: {t: np.concatenate(a, axis=0) for t, a in per.items()} for m, per in parts.items()}


def concept_vector(per_image: np.ndarray) -> np.ndarray:
    """Mean over images (rows), then L2-normalise; float32 ``(C,)``.

    Rows that are entirely NaN (padding in the per-image arrays) are ignored. A zero mean vector stays zero
    instead of dividing by zero.
    """
    a = np.asarray(per_image, dtype=np.float64)
    if a.ndim != 2:
        raise VspInputError(f"per-image features must be (n_images, channels), got shape {a.shape}")
    a = a[~np.all(np.isnan(a), axis=1)]
    if len(a) == 0:
        raise VspInputError("no images for this concept: cannot form a concept vector")
    mean = a.mean(axis=0)
    norm = float(np.linalg.norm(mean))
    if not np.isfinite(norm):
        raise VspInputError("per-image features contain NaN/inf values")
    return (mean / norm if norm > 0 else mean).astype(np.float32)
