"""Image manifests, validation, decoding and ImageNet preprocessing.

A *manifest* is a list of :class:`ImageRecord` ``(concept, uri)``, sorted by concept then uri, built from
one of three sources (:func:`build_manifest`):

- a folder tree on local disk, ``<root>/<concept>/<files>`` (files in nested sub-folders of a concept folder
  belong to that concept; hidden files (``.*``), ``__MACOSX``, ``Thumbs.db`` and files directly under
  ``<root>`` are ignored). Symbolic links (to files or folders, concept folders included) are followed while
  their target stays inside ``<root>``; a link whose target resolves outside it is refused with a
  :class:`~vsp.errors.VspInputError` naming the link, unless ``follow_links=True`` (``--follow-links``);
- the same tree under an S3 prefix, ``s3://bucket/prefix/<concept>/<files>`` (listed through
  :func:`vsp.io.store.open_store`);
- a ``.csv`` or ``.parquet`` table (local or on S3) with columns ``concept`` and ``uri``; relative uris are
  resolved against the folder that holds the table, other columns are ignored. A relative uri that leaves that
  folder (through ``..``, or through a symbolic link that resolves outside it) is refused, naming the row,
  unless ``follow_links=True``; absolute paths and ``s3://`` uris are used as written.

Local uris are absolute paths, so a manifest means the same thing in every worker process.

Decoding (:func:`load_image`) always returns an RGB :class:`PIL.Image.Image`:

- the EXIF orientation tag is applied (photographs taken in portrait come out upright);
- greyscale (``L``, ``1``, 16-bit ``I;16``/``I``) is replicated to three channels;
- CMYK (and YCbCr, LAB, HSV) JPEGs are converted with PIL's conversion (PIL handles Adobe's inverted CMYK);
- palette (``P``) images are expanded; a palette with a transparent entry is treated as an alpha image;
- images with alpha (``RGBA``, ``LA``, ``PA``, premultiplied ``RGBa``/``La``) are **composited on white**
  (not alpha-dropped: dropping alpha exposes whatever colour the transparent pixels happen to store, often
  black, which changes the image a network sees);
- animated images (GIF, WebP) use their first frame;
- images with more pixels than the cap (:func:`max_image_pixels`: 40 MP unless ``max_pixels`` or
  ``$VSP_MAX_IMAGE_PIXELS`` says otherwise) are refused from their header, before any pixel is decoded, so a
  small file that claims 13000 x 13000 pixels costs nothing; extraction skips and records them like any other
  unreadable file, and :func:`validate` reports them;
- very large JPEGs are decoded with libjpeg's DCT scaling (draft mode, see :data:`DRAFT_MIN_PIXELS`).

:func:`preprocess` applies the standard torchvision ImageNet evaluation transform: ``Resize(256)`` (shorter
side, bilinear with antialiasing, on the PIL image), ``CenterCrop(224)``, scaling to [0, 1] and
``Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD)``. :func:`decode_batch` combines both for the CPU decoding
workers of the extraction stage and never lets one bad file sink a batch.
"""

from __future__ import annotations

import io
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from vsp.data.preprocess import TORCHVISION, Preprocessing
from vsp.errors import VspInputError

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE = 256
CROP = 224

#: Container formats (PIL ``Image.format``) that decoding accepts. Anything else, and anything PIL cannot
#: identify, is reported by :func:`validate` as unsupported.
SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "MPO")
#: File-name extensions of images (used only to word error messages: a ``.jpg`` that PIL cannot read is
#: "corrupt", a ``.txt`` is "not an image").
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
MANIFEST_SUFFIXES = (".csv", ".parquet")

#: Default cap on an image's pixel count (width x height, read from its header before decoding). 40 MP holds
#: any phone photo and most camera photos; decoding one costs about 120 MB as RGB (more while converting),
#: per decoding thread. Change it with ``max_pixels=`` or the environment variable :data:`MAX_PIXELS_ENV`.
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000
#: The environment variable that sets the pixel cap (a whole number; 0 turns vsp's cap off, leaving PIL's own
#: hard limit of ``2 * PIL.Image.MAX_IMAGE_PIXELS``). Worker processes read it, so set it where they run.
MAX_PIXELS_ENV = "VSP_MAX_IMAGE_PIXELS"
#: JPEGs with more pixels than this are decoded in draft mode (libjpeg's DCT scaling by 1/2, 1/4 or 1/8),
#: never below :data:`DRAFT_SIZE` on either side, i.e. at least twice the ``Resize(256)`` target.
#:
#: Draft decoding changes pixels (DCT scaling is not PIL's full decode followed by the antialiased resize),
#: so it is kept away from normal photographs, whose features stay bit-identical to a full decode: 20 MP is
#: above every common phone photo (12 MP) and most camera photos (up to 20 MP), so only scans, panoramas
#: and high-resolution camera files are drafted, where it saves most of the decoding time and memory. The
#: threshold is a fixed constant, not tied to the pixel cap: features must not depend on a deployment
#: setting. A drafted image's features differ from a full decode's by about one grey level after resizing.
DRAFT_MIN_PIXELS = 20_000_000
#: The smallest side a drafted JPEG is decoded to (twice the ``Resize(256)`` target).
DRAFT_SIZE = 2 * RESIZE


@dataclass(frozen=True, order=True)
class ImageRecord:
    """One image of one concept. ``uri`` is an absolute local path or an ``s3://`` URI."""

    concept: str
    uri: str


# ----------------------------------------------------------------------------------------------- manifests
def _is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


_JUNK = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini"})


def _hidden(name: str) -> bool:
    return name.startswith(".") or name in _JUNK


def build_manifest(source: str | os.PathLike, follow_links: bool = False) -> list[ImageRecord]:
    """Build a manifest from a folder tree, an S3 prefix, or a ``.csv``/``.parquet`` table (concept, uri).

    Returns records sorted by (concept, uri). Raises :class:`VspInputError` when the source does not exist,
    holds no images, or a table lacks a column or has an empty or duplicated row (the message names the row).
    Unless ``follow_links`` (the CLI's ``--follow-links``), symbolic links in a folder tree whose target
    resolves outside the root, and relative table uris that leave the table's folder (``..`` or a link), are
    refused with a :class:`VspInputError` naming the link or row.
    """
    src = os.fspath(source)
    if src.lower().endswith(MANIFEST_SUFFIXES):
        records = _manifest_from_table(src, follow_links)
    elif _is_s3(src):
        records = _manifest_from_s3_tree(src)
    else:
        path = Path(src)
        if not path.exists():
            raise VspInputError(
                f"image source {src!r} does not exist (expected a folder <root>/<concept>/<files>, "
                "an s3:// prefix, or a .csv/.parquet manifest)"
            )
        if not path.is_dir():
            raise VspInputError(f"image source {src!r} is a file but not a .csv or .parquet manifest")
        records = _manifest_from_local_tree(path, follow_links)
    if not records:
        raise VspInputError(f"image source {src!r} holds no images (expected <root>/<concept>/<files>)")
    records = sorted(records)
    log.info("manifest %s: %d images of %d concepts", src, len(records), len({r.concept for r in records}))
    return records


def _inside(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or below it (both absolute and normalised)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _check_link(path: str, root: str, follow_links: bool) -> None:
    """Refuse a symbolic link whose target resolves outside ``root``, unless ``follow_links``."""
    if follow_links:
        return
    target = os.path.realpath(path)
    if not _inside(target, root):
        raise VspInputError(
            f"{path}: symbolic link to {target}, outside the image root {root}; remove it, or pass "
            "--follow-links (follow_links=True) to use links that leave the root"
        )


def _walk_concept(
    concept: str, top: str, root: str, follow_links: bool, ancestors: frozenset[str] = frozenset()
) -> list[ImageRecord]:
    """Every non-hidden file under ``top`` (links followed, each checked), as records of ``concept``."""
    real = os.path.realpath(top)
    if real in ancestors:  # a link back to a folder being walked: its files are listed already
        return []
    try:
        with os.scandir(top) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        raise VspInputError(f"{top}: cannot list the folder ({exc})") from exc
    records: list[ImageRecord] = []
    for e in entries:
        if _hidden(e.name):
            continue
        if e.is_symlink():
            _check_link(e.path, root, follow_links)
        if e.is_dir():
            records += _walk_concept(concept, e.path, root, follow_links, ancestors | {real})
        else:
            records.append(ImageRecord(concept, e.path))
    return records


def _manifest_from_local_tree(root: Path, follow_links: bool = False) -> list[ImageRecord]:
    root = root.resolve()
    records: list[ImageRecord] = []
    skipped = 0
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if _hidden(entry.name):
            continue
        if not entry.is_dir():
            skipped += 1
            continue
        if entry.is_symlink():
            _check_link(entry.path, str(root), follow_links)
        records += _walk_concept(entry.name, entry.path, str(root), follow_links)
    if skipped:
        log.warning(
            "%s: ignored %d file(s) directly under the root (images go in <root>/<concept>/)", root, skipped
        )
    return records


def _manifest_from_s3_tree(prefix: str) -> list[ImageRecord]:
    from vsp.io.store import open_store

    store = open_store(prefix)
    base = store.uri.rstrip("/")
    records: list[ImageRecord] = []
    skipped = 0
    for key in store.list():
        parts = PurePosixPath(key).parts
        if any(_hidden(p) for p in parts):
            continue
        if len(parts) < 2:
            skipped += 1
            continue
        records.append(ImageRecord(parts[0], f"{base}/{key}"))
    if skipped:
        log.warning(
            "%s: ignored %d object(s) directly under the prefix (images go in <prefix>/<concept>/)",
            base,
            skipped,
        )
    return records


def _read_table(src: str):
    """Read a CSV/Parquet manifest as a pandas DataFrame of strings."""
    import pandas as pd
    import pyarrow.parquet as pq

    if not _is_s3(src) and not Path(src).is_file():
        raise VspInputError(f"image manifest {src!r} does not exist")
    data = read_uri_bytes(src)
    try:
        if src.lower().endswith(".csv"):
            return pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
        return pq.read_table(io.BytesIO(data)).to_pandas()
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad input file
        raise VspInputError(f"image manifest {src!r} could not be read: {exc}") from exc


def _manifest_from_table(src: str, follow_links: bool = False) -> list[ImageRecord]:
    df = _read_table(src)
    missing = [c for c in ("concept", "uri") if c not in df.columns]
    if missing:
        raise VspInputError(
            f"image manifest {src!r} lacks column(s) {missing}; it has {list(df.columns)} "
            "(expected columns: concept, uri)"
        )
    if _is_s3(src):
        base = src.rstrip("/").rpartition("/")[0]
    else:
        base = str(Path(src).resolve().parent)
    records: list[ImageRecord] = []
    seen: dict[tuple[str, str], int] = {}
    real_dirs: dict[str, str] = {}
    # data row n is line n + 2 of a CSV (1-based, after the header)
    for n, (concept, uri) in enumerate(zip(df["concept"], df["uri"], strict=True)):
        where = f"image manifest {src!r}, row {n + 1}"
        concept = "" if concept is None else str(concept).strip()
        uri = "" if uri is None else str(uri).strip()
        if not concept or concept.lower() == "nan":
            raise VspInputError(f"{where}: empty concept")
        if not uri or uri.lower() == "nan":
            raise VspInputError(f"{where}: empty uri for concept {concept!r}")
        try:
            resolved = _resolve_uri(uri, base, follow_links, real_dirs)
        except VspInputError as exc:
            raise VspInputError(f"{where}: {exc}") from None
        key = (concept, resolved)
        if key in seen:
            raise VspInputError(f"{where}: duplicate of row {seen[key] + 1} ({concept!r}, {uri!r})")
        seen[key] = n
        records.append(ImageRecord(concept, resolved))
    return records


def _realpath(path: str, real_dirs: dict[str, str]) -> str:
    """``os.path.realpath(path)`` with the folders' answers cached (one ``lstat`` per row of a big table)."""
    head, tail = os.path.split(path)
    real_head = real_dirs.get(head)
    if real_head is None:
        real_head = real_dirs[head] = os.path.realpath(head)
    full = os.path.join(real_head, tail)
    return os.path.realpath(full) if os.path.islink(full) else full


def _resolve_uri(
    uri: str, base: str, follow_links: bool = False, real_dirs: dict[str, str] | None = None
) -> str:
    """``uri`` of a table row, resolved against the table's folder ``base`` (refusing escapes, see above)."""
    hint = "write it as an absolute path or uri, or pass --follow-links (follow_links=True) to allow it"
    if _is_s3(uri):
        return uri
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    if _is_s3(base):
        if uri.startswith("/"):
            raise VspInputError(f"uri {uri!r} is an absolute local path inside an S3 manifest ({base})")
        bucket, _, prefix = base[len("s3://") :].partition("/")
        parts = [p for p in prefix.split("/") if p]
        depth = base_depth = len(parts)  # the shallowest point the path reaches, and the manifest's own
        for p in PurePosixPath(uri).parts:
            if p == "..":
                if not parts:
                    raise VspInputError(f"uri {uri!r} climbs above the bucket of the manifest at {base}")
                parts.pop()
                depth = min(depth, len(parts))
            elif p != ".":
                parts.append(p)
        if depth < base_depth and not follow_links:
            raise VspInputError(f"uri {uri!r} climbs out of the manifest's folder {base} with '..'; {hint}")
        return f"s3://{bucket}/{'/'.join(parts)}"
    path = os.path.expanduser(uri)
    if os.path.isabs(path):
        return os.path.normpath(path)
    joined = os.path.normpath(os.path.join(base, path))
    if not follow_links:
        if not _inside(joined, base):
            raise VspInputError(f"uri {uri!r} climbs out of the manifest's folder {base} with '..'; {hint}")
        real = _realpath(joined, {} if real_dirs is None else real_dirs)
        if not _inside(real, base):
            raise VspInputError(
                f"uri {uri!r} leads through a symbolic link to {real}, outside the manifest's folder "
                f"{base}; {hint}"
            )
    return joined


# ----------------------------------------------------------------------------------------------- reading
def read_uri_bytes(uri: str | os.PathLike) -> bytes:
    """The bytes of a local image file or an ``s3://`` object (`vsp.io.store.read_uri`); errors name the uri.

    A local path that is not a regular file (a folder, a device such as ``/dev/zero``, a pipe, a socket) is
    refused before it is opened: reading one would never end, or block.
    """
    from vsp.io.store import read_uri  # imported lazily: the store pulls in pyarrow

    try:
        return read_uri(uri)
    except IsADirectoryError as exc:
        raise VspInputError(f"image path {os.fspath(uri)!r} is a folder, not an image file") from exc


def max_image_pixels(max_pixels: int | None = None) -> int:
    """The pixel cap in force: ``max_pixels`` when given, else ``$VSP_MAX_IMAGE_PIXELS``, else 40 MP.

    0 turns vsp's cap off (PIL's own hard limit, ``2 * PIL.Image.MAX_IMAGE_PIXELS``, still applies). A value
    that is not a whole number >= 0 raises :class:`VspInputError` naming the parameter or the variable.
    """
    if max_pixels is None:
        raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
        if not raw:
            return DEFAULT_MAX_IMAGE_PIXELS
        try:
            value = int(raw)
        except ValueError:
            value = -1
        if value < 0:
            raise VspInputError(
                f"{MAX_PIXELS_ENV}={raw!r}: expected a whole number of pixels "
                f"(e.g. {DEFAULT_MAX_IMAGE_PIXELS}), or 0 for no cap"
            )
        return value
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 0:
        raise VspInputError(f"max_pixels must be a whole number >= 0 (0: no cap), got {max_pixels!r}")
    return max_pixels


def _too_large(pixels: int, cap: int, size: tuple[int, int] | None = None, pil_limit: int = 0) -> str:
    """The reason an image is refused for its size, naming the size and the cap (or PIL's limit)."""
    dims = f"{size[0]}x{size[1]} = " if size else ""
    if cap and pixels > cap:
        limit = f"the cap of {cap:,} pixels (set {MAX_PIXELS_ENV} to change it)"
    else:
        limit = f"PIL's limit of {pil_limit:,} pixels (2 x PIL.Image.MAX_IMAGE_PIXELS)"
    return f"image too large: {dims}{pixels:,} pixels exceeds {limit}"


def _open(data: bytes, name: str, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """:func:`_open_header`, then decode the pixels."""
    return _decode_opened(_open_header(data, name, max_pixels), name)


def _open_header(data: bytes, name: str, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """Open ``data`` and check it from its header alone; errors name ``name`` with the reason.

    ``Image.open`` reads only the header, so an image with more than ``max_pixels`` pixels (0: no cap) is
    refused before any pixel is decoded; PIL's decompression-bomb guard is only a backstop (it refuses in
    ``Image.open`` above twice its own limit, and its warning may be turned into an error). JPEGs above
    :data:`DRAFT_MIN_PIXELS` are decoded in draft mode, at least :data:`DRAFT_SIZE` on either side.
    """
    if len(data) == 0:
        raise VspInputError(f"{name}: empty file (0 bytes)")
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        if name.lower().endswith(IMAGE_EXTENSIONS):
            raise VspInputError(f"{name}: corrupt image (not decodable as any known format)") from exc
        raise VspInputError(f"{name}: unsupported format (not an image file)") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = int(found.group(1)) if found else 0
        pil_limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        raise VspInputError(f"{name}: {_too_large(pixels, max_pixels, pil_limit=pil_limit)}") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # e.g. a cut header
        raise VspInputError(f"{name}: corrupt image ({exc})") from exc
    if img.format not in SUPPORTED_FORMATS:
        raise VspInputError(
            f"{name}: unsupported format {img.format} (supported: {', '.join(SUPPORTED_FORMATS)})"
        )
    width, height = img.size
    if max_pixels and width * height > max_pixels:
        raise VspInputError(f"{name}: {_too_large(width * height, max_pixels, (width, height))}")
    return img


def _decode_opened(img: Image.Image, name: str) -> Image.Image:
    """Decode an image :func:`_open_header` accepted (draft mode for very large JPEGs)."""
    width, height = img.size
    if img.format in ("JPEG", "MPO") and width * height > DRAFT_MIN_PIXELS:
        img.draft("RGB", (DRAFT_SIZE, DRAFT_SIZE))  # DCT scaling by 1/2..1/8, keeping both sides >= 512
    try:
        img.load()
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise VspInputError(f"{name}: corrupt {img.format} image ({exc})") from exc
    return img


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB: greyscale replicated, CMYK converted, alpha composited on white."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        scale = 257.0 if arr.max(initial=0) > 255 or mode.startswith("I;16") else 1.0
        return Image.fromarray(np.clip(np.rint(arr / scale), 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        if arr.size and arr.max() <= 1.0:
            arr = arr * 255.0
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
        if mode == "RGB":
            return img
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode in ("L", "RGB") and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(
    uri_or_bytes: str | os.PathLike | bytes, name: str | None = None, max_pixels: int | None = None
) -> Image.Image:
    """Decode an image (local path, ``s3://`` URI, or raw bytes) to an RGB PIL image.

    Raises :class:`VspInputError` (empty, corrupt, unsupported, more pixels than ``max_pixels``: see
    :func:`max_image_pixels`) or ``FileNotFoundError``, naming the uri (or ``name`` for bytes).
    """
    cap = max_image_pixels(max_pixels)
    if isinstance(uri_or_bytes, bytes | bytearray | memoryview):
        data = bytes(uri_or_bytes)
        label = name or "<bytes>"
    else:
        label = name or os.fspath(uri_or_bytes)
        data = read_uri_bytes(uri_or_bytes)
    img = _open(data, label, cap)
    try:
        img = ImageOps.exif_transpose(img) or img
    except Exception:  # noqa: BLE001 - a broken EXIF block is not worth losing the image
        log.debug("%s: ignoring unreadable EXIF orientation", label)
    return to_rgb(img)


# ------------------------------------------------------------------------------------------ preprocessing
@lru_cache(maxsize=1)
def imagenet_transform():
    """The torchvision (v2) ImageNet evaluation transform: PIL RGB image -> float32 tensor (3, 224, 224)."""
    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.Resize(RESIZE, interpolation=v2.InterpolationMode.BILINEAR, antialias=True),
            v2.CenterCrop(CROP),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD)),
        ]
    )


def preprocess(img: Image.Image) -> torch.Tensor:
    """Resize the shorter side to 256, centre-crop 224, scale to [0, 1], ImageNet-normalise: (3, 224, 224)."""
    if img.mode != "RGB":
        img = to_rgb(img)
    return imagenet_transform()(img)


class DecodedBatch(NamedTuple):
    """A decoded batch, the images that decoded and the errors of those that did not.

    ``tensor`` (n_ok, 3, 224, 224) holds the images of ``records[i] for i in ok``, in order, preprocessed the
    first (or only) way; ``tensors`` the same images under every requested preprocessing, keyed by
    :attr:`vsp.data.preprocess.Preprocessing.key`. ``errors`` lists ``(index, message)`` for the records that
    could not be decoded (the message names the uri).
    """

    tensor: torch.Tensor
    ok: list[int]
    errors: list[tuple[int, str]]
    tensors: dict[str, torch.Tensor] = {}


def _apply(img: Image.Image, p: Preprocessing) -> torch.Tensor:
    return preprocess(img) if p == TORCHVISION else p.transform()(img)


def _decode_one(
    item: ImageRecord | str | os.PathLike,
    max_pixels: int | None = None,
    preprocessings: Sequence[Preprocessing] = (),
) -> list[torch.Tensor]:
    uri = item.uri if isinstance(item, ImageRecord) else os.fspath(item)
    img = load_image(uri, max_pixels=max_pixels)
    return [_apply(img, p) for p in (preprocessings or (TORCHVISION,))]


def decode_batch(
    records: Sequence[ImageRecord | str | os.PathLike],
    strict: bool = False,
    max_workers: int = 1,
    max_pixels: int | None = None,
    preprocessings: Sequence[Preprocessing] = (),
) -> DecodedBatch:
    """Load and preprocess a batch of images for the networks.

    Bad files do not sink the batch: they are left out of ``tensor`` and listed in ``errors`` (and logged),
    images above the pixel cap (``max_pixels``, see :func:`max_image_pixels`) included. ``strict=True`` raises
    the first error instead. ``max_workers > 1`` decodes with threads (PIL releases the GIL while decoding).
    A bad cap setting raises :class:`VspInputError` before any image is read. ``preprocessings``: every
    way the images are needed (`vsp.data.preprocess`; default: the torchvision ImageNet transform); each
    image is decoded once and preprocessed each way.
    """
    cap = max_image_pixels(max_pixels)
    preps = list({p.key: p for p in preprocessings}.values()) or [TORCHVISION]

    def attempt(i: int):
        try:
            return i, _decode_one(records[i], cap, preps), None
        except (VspInputError, OSError) as exc:
            if strict:
                raise
            return i, None, str(exc)

    idx = range(len(records))
    if max_workers > 1 and len(records) > 1:
        with ThreadPoolExecutor(max_workers=min(max_workers, len(records))) as pool:
            results = list(pool.map(attempt, idx))
    else:
        results = [attempt(i) for i in idx]
    tensors, ok, errors = [], [], []
    for i, t, err in results:
        if err is None:
            tensors.append(t)
            ok.append(i)
        else:
            log.warning("skipping image: %s", err)
            errors.append((i, err))
    stacked = {
        p.key: torch.stack([t[j] for t in tensors])
        if tensors
        else torch.empty((0, 3, p.size, p.size), dtype=torch.float32)
        for j, p in enumerate(preps)
    }
    return DecodedBatch(stacked[preps[0].key], ok, errors, stacked)


# ----------------------------------------------------------------------------------------------- validation
@dataclass(frozen=True)
class UnreadableImage:
    """A file that cannot be used, with the reason (empty, corrupt, unsupported, too large, missing)."""

    concept: str
    uri: str
    reason: str


@dataclass
class ValidationReport:
    """The outcome of :func:`validate`.

    ``missing_concepts``: concepts of the given list with no (readable) image; ``unknown_concepts``: manifest
    concepts not in the given list (e.g. not in the norms); ``unreadable``: files that failed to decode.
    ``ok`` is true when there is at least one image and all three lists are empty.
    """

    n_images: int
    n_readable: int
    concepts: list[str]
    missing_concepts: list[str] = field(default_factory=list)
    unknown_concepts: list[str] = field(default_factory=list)
    unreadable: list[UnreadableImage] = field(default_factory=list)
    modes: dict[str, int] = field(default_factory=dict)
    formats: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every file decodes and the manifest and the concept list agree."""
        return (
            self.n_images > 0
            and not self.unreadable
            and not self.missing_concepts
            and not self.unknown_concepts
        )

    @property
    def bad_uris(self) -> list[str]:
        """The uris of the unreadable files."""
        return [u.uri for u in self.unreadable]

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return {
            "ok": self.ok,
            "n_images": self.n_images,
            "n_readable": self.n_readable,
            "n_concepts": len(self.concepts),
            "missing_concepts": list(self.missing_concepts),
            "unknown_concepts": list(self.unknown_concepts),
            "unreadable": [{"concept": u.concept, "uri": u.uri, "reason": u.reason} for u in self.unreadable],
            "modes": dict(self.modes),
            "formats": dict(self.formats),
        }

    def to_text(self, max_items: int = 20) -> str:
        """A human-readable summary: counts first, then each problem (at most ``max_items`` per list)."""

        def listing(items: list[str]) -> list[str]:
            out = [f"  - {s}" for s in items[:max_items]]
            if len(items) > max_items:
                out.append(f"  ... and {len(items) - max_items} more")
            return out

        lines = [
            f"{self.n_images} images of {len(self.concepts)} concepts: {self.n_readable} readable, "
            f"{len(self.unreadable)} unreadable",
        ]
        if self.formats:
            lines.append("formats: " + ", ".join(f"{k} {v}" for k, v in sorted(self.formats.items())))
        if self.modes:
            lines.append("modes: " + ", ".join(f"{k} {v}" for k, v in sorted(self.modes.items())))
        if self.unreadable:
            lines.append(f"unreadable files ({len(self.unreadable)}):")
            lines += listing([f"{u.uri}: {u.reason}" for u in self.unreadable])
        if self.missing_concepts:
            lines.append(f"concepts without images ({len(self.missing_concepts)}):")
            lines += listing(self.missing_concepts)
        if self.unknown_concepts:
            lines.append(f"concepts not in the norms ({len(self.unknown_concepts)}):")
            lines += listing(self.unknown_concepts)
        lines.append("OK" if self.ok else "NOT OK: fix or remove the files and concepts listed above")
        return "\n".join(lines)


def _check(
    record: ImageRecord, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
) -> tuple[str | None, str | None, str | None]:
    """(error, format, mode) of one record, decoding it fully (oversize images are refused unread)."""
    try:
        data = read_uri_bytes(record.uri)
        img = _open(data, record.uri, max_pixels)
        return None, img.format, img.mode
    except FileNotFoundError:
        return "file not found", None, None
    except VspInputError as exc:
        msg = str(exc)
        prefix = f"{record.uri}: "
        return (msg[len(prefix) :] if msg.startswith(prefix) else msg), None, None
    except OSError as exc:
        return f"cannot read ({exc})", None, None


def validate(
    manifest: Iterable[ImageRecord],
    concepts: Sequence[str] | None = None,
    max_workers: int = 4,
    max_pixels: int | None = None,
) -> ValidationReport:
    """Decode every image of ``manifest``; compare its concepts with ``concepts`` (e.g. ``norms.concepts``).

    Reports unreadable files (empty, corrupt, unsupported format, missing, more pixels than the cap of
    :func:`max_image_pixels`) with the reason, and, when ``concepts`` is given, the listed concepts without
    any readable image and the manifest concepts not listed.
    """
    records = list(manifest)
    cap = max_image_pixels(max_pixels)
    if max_workers > 1 and len(records) > 1:
        with ThreadPoolExecutor(max_workers=min(max_workers, len(records))) as pool:
            checks = list(pool.map(lambda r: _check(r, cap), records))
    else:
        checks = [_check(r, cap) for r in records]
    unreadable: list[UnreadableImage] = []
    modes: Counter[str] = Counter()
    formats: Counter[str] = Counter()
    readable_concepts: set[str] = set()
    for rec, (err, fmt, mode) in zip(records, checks, strict=True):
        if err is None:
            modes[mode] += 1
            formats[fmt] += 1
            readable_concepts.add(rec.concept)
        else:
            unreadable.append(UnreadableImage(rec.concept, rec.uri, err))
    manifest_concepts = sorted({r.concept for r in records})
    missing: list[str] = []
    unknown: list[str] = []
    if concepts is not None:
        wanted = set(concepts)
        missing = sorted(wanted - readable_concepts)
        unknown = sorted(set(manifest_concepts) - wanted)
    report = ValidationReport(
        n_images=len(records),
        n_readable=len(records) - len(unreadable),
        concepts=manifest_concepts,
        missing_concepts=missing,
        unknown_concepts=unknown,
        unreadable=sorted(unreadable, key=lambda u: (u.concept, u.uri)),
        modes=dict(sorted(modes.items())),
        formats=dict(sorted(formats.items())),
    )
    log.info(
        "validated %d images: %d unreadable, %d concepts without images, %d not in the norms",
        report.n_images,
        len(report.unreadable),
        len(missing),
        len(unknown),
    )
    return report
