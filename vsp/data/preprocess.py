"""How one network wants its images: resize, crop, scale and normalise, as data that is recorded and compared.

Every torchvision network of the paper takes the same ImageNet evaluation transform (:data:`TORCHVISION`:
shorter side to 256, bilinear, centre crop 224, ImageNet mean and std). Other families declare their own, and
vsp reads it from the model's configuration (`vsp.extract.sources`): timm's data config (``input_size``,
``crop_pct``, ``interpolation``; the resize is ``floor(size / crop_pct)`` as ``timm.data.create_transform``),
OpenCLIP's ``preprocess_cfg`` (shorter side to the input size, bicubic, centre crop) and a Hugging Face image
processor (``size`` as ``shortest_edge`` or ``height``/``width`` -- the latter a squash resize without
keeping the aspect ratio --, ``crop_size`` when ``do_center_crop``, ``resample``, ``image_mean``,
``image_std``).

All of them run on the decoded RGB PIL image with torchvision's v2 transforms, which resize PIL images with
PIL itself (antialiased), as timm, OpenCLIP and the Hugging Face processors do. An image decoded once feeds
every distinct preprocessing of a run (:func:`vsp.data.images.decode_batch`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import torch

from vsp.errors import VspInputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")
#: PIL's resample codes (what Hugging Face processor configs store) -> names
PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


@dataclass(frozen=True)
class Preprocessing:
    """One preprocessing of the images for a network.

    ``resize`` (an int: the shorter side; ``(h, w)``: both sides, aspect not kept), ``crop`` (centre crop
    to ``crop`` x ``crop``; ``0``: none), ``interpolation``, ``mean`` and ``std`` (after scaling to [0, 1]).
    ``size`` is the square side the network receives.
    """

    resize: int | tuple[int, int]
    crop: int
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise VspInputError(
                f"preprocessing: unknown interpolation {self.interpolation!r}; use one of "
                + ", ".join(INTERPOLATIONS)
            )
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise VspInputError(f"preprocessing: mean and std need 3 values (std > 0), got {self}")
        if not self.crop and isinstance(self.resize, int):
            raise VspInputError("preprocessing: a shorter-side resize needs a crop to make images square")

    @property
    def size(self) -> int:
        """The side of the (square) input the network gets."""
        if self.crop:
            return int(self.crop)
        h, w = self.resize  # type: ignore[misc]
        if h != w:
            raise VspInputError(f"preprocessing: non-square input {h}x{w} is not supported")
        return int(h)

    @property
    def key(self) -> str:
        """A short name that is the same for equal preprocessings (how decoded tensors are shared)."""
        r = self.resize if isinstance(self.resize, int) else "x".join(map(str, self.resize))
        stats = ",".join(f"{v:.6g}" for v in (*self.mean, *self.std))
        return f"{r}/{self.crop}/{self.interpolation}/{stats}"

    def record(self) -> dict[str, Any]:
        """A JSON-ready record (in the features identity of runs with non-torchvision models)."""
        d = asdict(self)
        d["resize"] = self.resize if isinstance(self.resize, int) else list(self.resize)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    def transform(self):
        """The torchvision v2 transform: RGB PIL image -> float32 tensor (3, size, size)."""
        return _transform(self)


#: The torchvision ImageNet evaluation transform every torchvision classification network uses.
TORCHVISION = Preprocessing(256, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD)


@lru_cache(maxsize=32)
def _transform(p: Preprocessing):
    from torchvision.transforms import v2

    mode = getattr(v2.InterpolationMode, p.interpolation.upper())
    steps = [
        v2.Resize(
            p.resize if isinstance(p.resize, int) else list(p.resize), interpolation=mode, antialias=True
        )
    ]
    if p.crop:
        steps.append(v2.CenterCrop(p.crop))
    steps += [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(p.mean), std=list(p.std)),
    ]
    return v2.Compose(steps)


def from_timm(config: dict[str, Any]) -> Preprocessing:
    """Timm's resolved data config (``timm.data.resolve_data_config``) as a preprocessing."""
    import math

    size = int(config["input_size"][-1])
    if int(config["input_size"][-2]) != size:
        raise VspInputError(f"timm data config: non-square input size {config['input_size']}")
    crop_pct = float(config.get("crop_pct") or 1.0)
    mode = config.get("crop_mode", "center")
    if mode != "center":
        raise VspInputError(f"timm data config: crop_mode {mode!r} is not supported (only 'center')")
    return Preprocessing(
        math.floor(size / crop_pct), size, str(config.get("interpolation", "bicubic")),
        tuple(map(float, config["mean"])), tuple(map(float, config["std"])),
    )  # fmt: skip


def from_open_clip(cfg: dict[str, Any]) -> Preprocessing:
    """OpenCLIP's ``visual.preprocess_cfg`` (its evaluation transform: shorter side, bicubic, centre crop)."""
    size = cfg.get("size", 224)
    side = int(size if isinstance(size, int) else size[0])
    mode = cfg.get("resize_mode", "shortest")
    if mode == "squash":
        return Preprocessing((side, side), 0, str(cfg.get("interpolation", "bicubic")),
                             tuple(cfg["mean"]), tuple(cfg["std"]))  # fmt: skip
    if mode != "shortest":
        raise VspInputError(f"open_clip preprocess_cfg: resize_mode {mode!r} is not supported")
    return Preprocessing(
        side, side, str(cfg.get("interpolation", "bicubic")), tuple(cfg["mean"]), tuple(cfg["std"])
    )


def _size(value: Any) -> dict[str, int]:
    if value is None:
        return {}
    if isinstance(value, int):
        return {"shortest_edge": value}
    return {k: int(v) for k, v in dict(value).items() if v is not None}


def from_hf_processor(proc: Any) -> Preprocessing:
    """A Hugging Face image processor's resize / crop / normalise settings as a preprocessing."""
    size = _size(getattr(proc, "size", None))
    crop = _size(getattr(proc, "crop_size", None)) if getattr(proc, "do_center_crop", False) else {}
    resample = getattr(proc, "resample", 2)
    interpolation = PIL_RESAMPLE.get(int(resample), "bilinear") if not isinstance(resample, str) else resample
    if getattr(proc, "do_normalize", True):
        mean, std = tuple(proc.image_mean), tuple(proc.image_std)
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if abs(float(getattr(proc, "rescale_factor", 1 / 255)) - 1 / 255) > 1e-12:
        raise VspInputError(f"Hugging Face processor: rescale_factor {proc.rescale_factor} is not 1/255")
    if "shortest_edge" in size:
        resize: int | tuple[int, int] = size["shortest_edge"]
    elif "height" in size and "width" in size:
        resize = (size["height"], size["width"])
    else:
        raise VspInputError(f"Hugging Face processor: size {size} is not supported")
    side = crop.get("height", 0)
    if crop and crop.get("width") != side:
        raise VspInputError(f"Hugging Face processor: non-square crop {crop}")
    return Preprocessing(resize, side, interpolation, mean, std)
