"""The device input pipeline (``extract.decoder: torchvision``): JPEGs decoded and resized on the device.

At thousands of images per second a GPU node has too few CPU cores to decode and resize JPEGs with PIL. With
this decoder the CPU side only reads each file and checks its header (:func:`read_encoded`: format, mode,
the pixel cap); the extraction device decodes a unit's JPEGs in one batched ``torchvision.io.decode_jpeg``
call (nvJPEG on CUDA, libjpeg-turbo on the CPU; EXIF orientation applied), then resizes (antialiased, the
model's interpolation), centre-crops and normalises each image on the device (:func:`materialise`).
Everything that is not a plain RGB or greyscale JPEG (PNG, WebP, CMYK JPEGs, alpha, palettes) is decoded on
the CPU by :func:`vsp.data.images.load_image` as before and only resized on the device, so the fallback keeps
every decoding rule of the PIL path.

The pixels differ slightly from the PIL path (another resize implementation, and nvJPEG's IDCT on a GPU), so
the decoder is part of the features' identity: a ``torchvision`` run never resumes or mixes into a ``pil``
store. Features agree closely (tests bound the difference on CPU), not bit for bit.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from vsp.data.preprocess import Preprocessing
from vsp.errors import VspInputError

DEVICE_MODES = ("RGB", "L")  # JPEG colour modes decode_jpeg turns into RGB exactly as PIL does


@dataclass
class EncodedImage:
    """One image on its way to the device: JPEG bytes (1-d uint8), or RGB pixels decoded on the CPU (3-d)."""

    data: torch.Tensor
    uri: str

    @property
    def encoded(self) -> bool:
        """Whether the device still has to decode it."""
        return self.data.ndim == 1


def read_encoded(uri: str, max_pixels: int | None = None) -> EncodedImage:
    """Read one file: a plain JPEG stays encoded; anything else is decoded by the PIL path now.

    A JPEG gets the PIL path's checks from its header alone (format, pixel cap, a cut header): no pixel is
    decoded on the CPU. Raises what :func:`vsp.data.images.load_image` raises for bad files (the caller
    skips and records them); a JPEG whose body is corrupt is found by :func:`decode_on`.
    """
    from vsp.data.images import _open_header, load_image, max_image_pixels, read_uri_bytes

    cap = max_image_pixels(max_pixels)
    data = read_uri_bytes(uri)
    label = os.fspath(uri)
    head = _open_header(data, label, cap)
    if head.format == "JPEG" and head.mode in DEVICE_MODES:
        return EncodedImage(torch.frombuffer(bytearray(data), dtype=torch.uint8), label)
    img = load_image(data, name=label, max_pixels=cap)
    return EncodedImage(torch.from_numpy(_rgb_array(img)).permute(2, 0, 1).contiguous(), label)


def _rgb_array(img: Image.Image):
    import numpy as np

    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def decode_on(
    images: Sequence[EncodedImage], device: torch.device | str
) -> tuple[list[torch.Tensor | None], list[tuple[int, str]]]:
    """Every image as a (3, H, W) uint8 tensor on ``device``: the JPEGs in one batched decode.

    Only the header was checked on the CPU: when the batch fails, each JPEG is decoded on its own, and one
    whose body is corrupt is ``None`` here with ``(index, message naming the uri)`` in the errors, so one
    bad file never sinks the unit (as on the PIL path).
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    device = torch.device(device)
    jpegs = [i for i, im in enumerate(images) if im.encoded]
    out: list[torch.Tensor | None] = [None] * len(images)
    errors: list[tuple[int, str]] = []

    def decode(ix: list[int]) -> list[torch.Tensor]:
        data = [images[i].data for i in ix]
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True)

    if jpegs:
        try:
            for i, t in zip(jpegs, decode(jpegs), strict=True):
                out[i] = t
        except RuntimeError:
            for i in jpegs:
                try:
                    out[i] = decode([i])[0]
                except RuntimeError as exc:
                    errors.append((i, f"{images[i].uri}: corrupt JPEG image ({exc})"))
    for i, im in enumerate(images):
        if not im.encoded:
            out[i] = im.data.to(device, non_blocking=True)
    return out, errors


def preprocess_on(pixels: torch.Tensor, p: Preprocessing) -> torch.Tensor:
    """Resize (antialiased), centre-crop, scale and normalise one (3, H, W) uint8 image on its device."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    mode = getattr(InterpolationMode, p.interpolation.upper())
    if mode not in (InterpolationMode.BILINEAR, InterpolationMode.BICUBIC, InterpolationMode.NEAREST):
        raise VspInputError(
            f"decoder torchvision: interpolation {p.interpolation!r} is not available on tensors"
        )
    size = [p.resize] if isinstance(p.resize, int) else list(p.resize)
    x = F.resize(pixels, size, interpolation=mode, antialias=True)
    if p.crop:
        x = F.center_crop(x, [p.crop, p.crop])
    x = x.float().div_(255.0)
    mean = torch.tensor(p.mean, device=x.device).view(3, 1, 1)
    std = torch.tensor(p.std, device=x.device).view(3, 1, 1)
    return (x - mean) / std


def materialise(
    images: Sequence[EncodedImage], preprocessings: Sequence[Preprocessing], device: torch.device | str
) -> tuple[dict[str, torch.Tensor], list[int], list[tuple[int, str]]]:
    """One unit's images decoded on ``device``: a ``(n_ok, 3, S, S)`` float32 batch per preprocessing.

    Also returns the indices of the images in the batches and ``(index, message)`` of those that did not
    decode (:func:`decode_on`).
    """
    pixels, errors = decode_on(images, device)
    ok = [i for i, px in enumerate(pixels) if px is not None]
    out = {}
    for p in preprocessings:
        rows = [preprocess_on(pixels[i], p) for i in ok]  # type: ignore[arg-type]
        out[p.key] = torch.stack(rows) if rows else torch.empty((0, 3, p.size, p.size), device=device)
    return out, ok, errors
