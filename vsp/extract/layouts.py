"""What axis of a tap's output holds the channels, and pooling over the others.

A tap's output is pooled to one value per channel, so the extractor must know which axis the channels are on:

- ``nchw``: a channels-first map ``(B, C, H, W)``: every conv, BatchNorm2d and CNN block of torchvision,
  timm's ConvNeXt blocks. Pooled over ``H, W``.
- ``nhwc``: a channels-last map ``(B, H, W, C)``: the stages and blocks of torchvision's and timm's Swin.
  Pooled over ``H, W``. (This is the logical layout, not the memory format: a channels-first tensor stored
  channels-last is still ``nchw``.)
- ``tokens``: a token sequence ``(B, N, D)`` of a vision transformer, ``N = prefix + patches`` where the
  prefix is the class token and any register tokens (:class:`TokenGeometry`). ``max`` / ``mean`` pool over
  the patch tokens only; ``cls`` takes token 0 (the class token), refused where the model has no prefix token.
- ``vector``: ``(B, D)`` already (a pooled or classifier input), passed through.

:func:`detect_layout` decides from the tapped module and the output's shape in a dry pass on a square image
(so the two spatial axes are equal): a ``Conv2d`` / ``BatchNorm2d`` output is ``nchw``; another 4-d output is
``nchw`` when its last two axes are equal and differ from the second, ``nhwc`` when its middle two are equal
and differ from the last; a 3-d output is ``tokens`` only when the model's token geometry is known and
``N`` equals prefix + patches. Anything else (a 5-d tensor, a map whose channel count equals its side, a token
sequence of unknown geometry, a batch axis that is not first) cannot be determined and is refused with the
tap's name: pooling the wrong axis silently is the bug this module exists to prevent.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vsp.errors import VspInputError

LAYOUTS = ("nchw", "nhwc", "tokens", "vector")
#: Poolings: ``max`` / ``mean`` over space or patch tokens, ``cls`` (token layouts only).
POOLINGS = ("max", "mean", "cls")


@dataclass(frozen=True)
class TokenGeometry:
    """The token sequence of a vision transformer at the dry-pass resolution: prefix and patch tokens."""

    prefix: int  # class token + register tokens, before the patches
    patches: int

    @property
    def tokens(self) -> int:
        """Sequence length ``N``."""
        return self.prefix + self.patches


def _pair(v) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, list | tuple) else (int(v), int(v))


def token_geometry(model: nn.Module, size: int = 224) -> TokenGeometry | None:
    """The prefix and patch counts of ``model``'s token sequence for a ``size`` x ``size`` image, if known.

    Read from what the model itself declares: timm (``num_prefix_tokens``, ``patch_embed.patch_size``),
    torchvision's ``VisionTransformer`` (``class_token``, ``patch_size``), OpenCLIP's ``VisionTransformer``
    (``class_embedding``: one class token), a Hugging Face vision model (``config.patch_size``; the prefix is
    the embeddings' sequence length less the patches: ViT, DINOv2, CLIP 1, SigLIP 0, DINOv2 with registers
    1 + registers). Models that declare nothing have no token geometry, and their 3-d taps are refused.
    """
    patch = None
    prefix = None
    embed = getattr(model, "patch_embed", None)
    if embed is not None and hasattr(embed, "patch_size") and hasattr(model, "num_prefix_tokens"):
        patch = _pair(embed.patch_size)
        prefix = int(model.num_prefix_tokens)
    elif hasattr(model, "class_token") and hasattr(model, "patch_size") and hasattr(model, "encoder"):
        patch = _pair(model.patch_size)  # torchvision.models.VisionTransformer
        prefix = 1
    elif hasattr(model, "class_embedding") and hasattr(model, "grid_size") and hasattr(model, "patch_size"):
        patch = _pair(model.patch_size)  # open_clip's VisionTransformer: one class token
        prefix = 1
    elif hasattr(model, "config") and hasattr(model, "embeddings") and hasattr(model.config, "patch_size"):
        patch = _pair(model.config.patch_size)  # Hugging Face: the prefix is what the embeddings add
        first = next(model.parameters())
        with torch.inference_mode():
            tokens = model.embeddings(torch.zeros(1, 3, size, size, device=first.device, dtype=first.dtype))
        tokens = tokens[0] if isinstance(tokens, tuple) else tokens
        prefix = int(tokens.shape[1]) - (size // patch[0]) * (size // patch[1])
        if tokens.ndim != 3 or prefix < 0:
            return None
    if patch is None or prefix is None:
        return None
    return TokenGeometry(prefix, (size // patch[0]) * (size // patch[1]))


def detect_layout(
    shape: tuple[int, ...],
    batch: int,
    module: nn.Module | None,
    geometry: TokenGeometry | None,
) -> str | None:
    """The layout of an output of ``shape`` from a dry pass of ``batch`` square images; None: unknown."""
    if len(shape) < 2 or shape[0] != batch:
        return None
    if len(shape) == 2:
        return "vector"
    if len(shape) == 4:
        a, b, c = shape[1:]
        if isinstance(module, nn.Conv2d | nn.BatchNorm2d):
            return "nchw"
        if b == c and a != b:
            return "nchw"
        if a == b and c != a:
            return "nhwc"
        return None
    if len(shape) == 3 and geometry is not None and shape[1] == geometry.tokens:
        return "tokens"
    return None


def refuse_layout(model: str, tap: str, shape: tuple[int, ...]) -> VspInputError:
    """The refusal of a tap whose layout cannot be determined."""
    return VspInputError(
        f"layer {tap!r} of model {model!r} outputs shape {tuple(shape)}, whose layout cannot be determined "
        f"(known: (B, C, H, W), (B, H, W, C), (B, tokens, D) of a vision transformer, (B, D)); tap another "
        "module, for example the block that contains it"
    )


def check_pooling(model: str, tap: str, layout: str, pooling: str, geometry: TokenGeometry | None) -> None:
    """Refuse ``cls`` pooling where there is no class token, naming the tap."""
    if pooling not in POOLINGS:
        raise VspInputError(f"unknown pooling {pooling!r}; use one of {', '.join(POOLINGS)}")
    if pooling == "cls" and layout != "vector":
        if layout != "tokens":
            raise VspInputError(
                f"pooling 'cls' needs a token sequence, but layer {tap!r} of model {model!r} is a {layout} "
                "map; use 'max' or 'mean'"
            )
        if geometry is None or geometry.prefix < 1:
            raise VspInputError(
                f"pooling 'cls': model {model!r} has no class token (layer {tap!r}); use 'max' or 'mean'"
            )


def pool_layout(
    x: torch.Tensor, layout: str, pooling: str = "max", relu: bool = False, prefix: int = 0
) -> torch.Tensor:
    """Reduce one tap's output to ``(B, C)`` float32 over the axes ``layout`` says are not channels.

    ``nchw`` is exactly `vsp.extract.hooks.pool` of every earlier release (global max or mean over ``H, W``).
    ``prefix``: the class/register tokens of a ``tokens`` layout, left out of ``max`` / ``mean``.
    """
    if layout == "vector":
        v = x.flatten(1) if x.ndim != 2 else x
        return (v.clamp(min=0) if relu else v).float()
    if layout == "tokens":
        if pooling == "cls":
            v = x[:, 0]
            return (v.clamp(min=0) if relu else v).float()
        x = x[:, prefix:]
        dims: tuple[int, ...] = (1,)
    elif layout == "nhwc":
        dims = (1, 2)
    else:
        dims = tuple(range(2, x.ndim))
    if pooling == "max":
        v = x.amax(dim=dims)
        return (v.clamp(min=0) if relu else v).float()
    return (x.clamp(min=0) if relu else x).mean(dim=dims, dtype=torch.float32)
