from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from vsp.data.images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageRecord,
    build_manifest,
    decode_batch,
    load_image,
    preprocess,
    validate,
)
from vsp.errors import VspInputError


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95, **kw)
    return buf.getvalue()


def _rgb(colour=(200, 30, 40), size=(40, 30)) -> Image.Image:
    return Image.new("RGB", size, colour)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    for concept, names in {
        "bat_(animal)": ["b.png", "a.jpg"],
        "apple": ["x.png"],
        "cat": ["c1.png", "c0.png"],
    }.items():
        for name in names:
            (root / concept).mkdir(parents=True, exist_ok=True)
            data = _jpeg(_rgb()) if name.endswith(".jpg") else _png(_rgb())
            (root / concept / name).write_bytes(data)
    (root / "cat" / "more").mkdir()
    (root / "cat" / "more" / "c2.png").write_bytes(_png(_rgb()))
    (root / "cat" / ".DS_Store").write_bytes(b"junk")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "h.png").write_bytes(_png(_rgb()))
    (root / "README.txt").write_text("not a concept")
    return root


# --------------------------------------------------------------------------------------------- manifests
def test_manifest_from_folder_tree(tree: Path) -> None:
    records = build_manifest(tree)
    root = tree.resolve()
    assert records == [
        ImageRecord("apple", str(root / "apple" / "x.png")),
        ImageRecord("bat_(animal)", str(root / "bat_(animal)" / "a.jpg")),
        ImageRecord("bat_(animal)", str(root / "bat_(animal)" / "b.png")),
        ImageRecord("cat", str(root / "cat" / "c0.png")),
        ImageRecord("cat", str(root / "cat" / "c1.png")),
        ImageRecord("cat", str(root / "cat" / "more" / "c2.png")),
    ]
    assert build_manifest(str(tree)) == records  # str or Path, same answer


def test_manifest_from_relative_folder(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tree.parent)
    records = build_manifest("images")
    assert all(Path(r.uri).is_absolute() for r in records)


def test_manifest_from_csv_resolves_relative_uris(tree: Path, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere.png"
    other.write_bytes(_png(_rgb()))
    csv = tree / "manifest.csv"
    pd.DataFrame(
        {
            "uri": ["cat/c1.png", "apple/x.png", str(other), "./cat/../cat/c0.png", "s3://bkt/p/d.png"],
            "concept": ["cat", "apple", "dog", "cat", "dog"],
            "note": ["", "", "", "", ""],
        }
    ).to_csv(csv, index=False)
    records = build_manifest(csv)
    root = tree.resolve()
    assert records == [
        ImageRecord("apple", str(root / "apple" / "x.png")),
        ImageRecord("cat", str(root / "cat" / "c0.png")),
        ImageRecord("cat", str(root / "cat" / "c1.png")),
        ImageRecord("dog", str(other)),
        ImageRecord("dog", "s3://bkt/p/d.png"),
    ]


def test_manifest_from_parquet(tree: Path) -> None:
    path = tree / "sub" / "m.parquet"
    path.parent.mkdir()
    pq.write_table(pa.table({"concept": ["cat", "apple"], "uri": ["../cat/c1.png", "../apple/x.png"]}), path)
    root = tree.resolve()
    with pytest.raises(VspInputError, match=r"m\.parquet.*row 1.*--follow-links"):
        build_manifest(str(path))  # `..` leaves the manifest's folder: refused unless asked for
    assert build_manifest(str(path), follow_links=True) == [
        ImageRecord("apple", str(root / "apple" / "x.png")),
        ImageRecord("cat", str(root / "cat" / "c1.png")),
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("concept,path\ncat,a.png\n", "lacks column"),
        ("concept,uri\ncat,a.png\ncat,\n", "row 2: empty uri"),
        ("concept,uri\ncat,a.png\n,b.png\n", "row 2: empty concept"),
        ("concept,uri\ncat,a.png\ncat,./a.png\n", "row 2: duplicate of row 1"),
    ],
)
def test_bad_csv_manifest_names_file_and_row(tmp_path: Path, content: str, message: str) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text(content)
    with pytest.raises(VspInputError, match=message) as err:
        build_manifest(csv)
    assert "bad.csv" in str(err.value)


def test_missing_or_empty_source(tmp_path: Path) -> None:
    with pytest.raises(VspInputError, match="does not exist"):
        build_manifest(tmp_path / "nope")
    with pytest.raises(VspInputError, match="does not exist"):
        build_manifest(tmp_path / "nope.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(VspInputError, match="holds no images"):
        build_manifest(tmp_path / "empty")


def test_manifest_from_s3_prefix_and_s3_csv(request: pytest.FixtureRequest, tree: Path) -> None:
    try:
        s3_uri = request.getfixturevalue("s3_uri")
    except pytest.FixtureLookupError:
        pytest.skip("no s3_uri fixture (SeaweedFS) in tests/conftest.py")
    from vsp.io.store import open_store

    store = open_store(s3_uri).child("imgs")
    for r in build_manifest(tree):
        key = Path(r.uri).relative_to(tree.resolve()).as_posix()
        store.write_bytes(key, Path(r.uri).read_bytes())
    store.write_bytes("stray.png", _png(_rgb()))  # directly under the prefix: ignored
    records = build_manifest(store.uri)
    base = store.uri.rstrip("/")
    assert [(r.concept, r.uri) for r in records] == [
        ("apple", f"{base}/apple/x.png"),
        ("bat_(animal)", f"{base}/bat_(animal)/a.jpg"),
        ("bat_(animal)", f"{base}/bat_(animal)/b.png"),
        ("cat", f"{base}/cat/c0.png"),
        ("cat", f"{base}/cat/c1.png"),
        ("cat", f"{base}/cat/more/c2.png"),
    ]
    report = validate(records, concepts=["apple", "bat_(animal)", "cat"])
    assert report.ok, report.to_text()
    batch = decode_batch(records)
    assert batch.tensor.shape == (6, 3, 224, 224) and not batch.errors

    store.write_bytes("lists/m.csv", b"concept,uri\ncat,../cat/c1.png\napple,../apple/x.png\n")
    with pytest.raises(VspInputError, match=r"m\.csv.*row 1.*--follow-links"):
        build_manifest(f"{base}/lists/m.csv")
    from_csv = build_manifest(f"{base}/lists/m.csv", follow_links=True)
    assert from_csv == [ImageRecord("apple", f"{base}/apple/x.png"), ImageRecord("cat", f"{base}/cat/c1.png")]
    assert load_image(from_csv[0].uri).mode == "RGB"


# --------------------------------------------------------------------------------------------- validation
@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    """The issue's folder: a corrupt file, a zero-byte file, a CMYK JPEG and a greyscale PNG."""
    root = tmp_path / "mixed"
    (root / "apple").mkdir(parents=True)
    (root / "bee").mkdir()
    good = _jpeg(_rgb(size=(64, 64)))
    (root / "apple" / "corrupt.jpg").write_bytes(good[: len(good) // 2])  # truncated JPEG
    (root / "apple" / "cmyk.jpg").write_bytes(_jpeg(Image.new("CMYK", (64, 48), (0, 200, 200, 20))))
    (root / "bee" / "empty.png").write_bytes(b"")
    (root / "bee" / "grey.png").write_bytes(_png(Image.new("L", (50, 40), 90)))
    return root


def test_validate_reports_exactly_the_two_bad_files(mixed: Path) -> None:
    report = validate(build_manifest(mixed), concepts=["apple", "bee"])
    root = mixed.resolve()
    assert report.bad_uris == [str(root / "apple" / "corrupt.jpg"), str(root / "bee" / "empty.png")]
    reasons = {Path(u.uri).name: u.reason for u in report.unreadable}
    assert "corrupt" in reasons["corrupt.jpg"] and "truncated" in reasons["corrupt.jpg"].lower()
    assert "empty" in reasons["empty.png"] and "0 bytes" in reasons["empty.png"]
    assert report.n_images == 4 and report.n_readable == 2
    assert report.modes == {"CMYK": 1, "L": 1} and report.formats == {"JPEG": 1, "PNG": 1}
    assert report.missing_concepts == [] and report.unknown_concepts == []
    assert not report.ok
    text = report.to_text()
    assert "corrupt.jpg" in text and "empty.png" in text and "cmyk.jpg" not in text and "grey.png" not in text
    assert "NOT OK" in text
    assert report.to_dict()["unreadable"][0]["uri"].endswith("corrupt.jpg")


def test_validate_concepts_and_more_bad_kinds(mixed: Path) -> None:
    (mixed / "bee" / "notes.txt").write_text("hello")
    (mixed / "bee" / "noise.png").write_bytes(np.random.default_rng(0).bytes(300))
    ico = io.BytesIO()
    _rgb(size=(16, 16)).save(ico, format="ICO")
    (mixed / "bee" / "icon.ico").write_bytes(ico.getvalue())
    report = validate(build_manifest(mixed), concepts=["apple", "cow"], max_workers=1)
    reasons = {Path(u.uri).name: u.reason for u in report.unreadable}
    assert set(reasons) == {"corrupt.jpg", "empty.png", "notes.txt", "noise.png", "icon.ico"}
    assert "unsupported format" in reasons["notes.txt"]
    assert "corrupt" in reasons["noise.png"]
    assert "unsupported format ICO" in reasons["icon.ico"]
    assert report.missing_concepts == ["cow"]
    assert report.unknown_concepts == ["bee"]
    assert "concepts without images (1)" in report.to_text() and "not in the norms (1)" in report.to_text()


def test_validate_ok_and_missing_file(tree: Path) -> None:
    records = build_manifest(tree)
    report = validate(records)
    assert report.ok and report.n_readable == 6 and "OK" in report.to_text()
    gone = ImageRecord("cat", str(tree / "cat" / "gone.png"))
    report = validate([*records, gone])
    assert report.unreadable[0].uri == gone.uri and report.unreadable[0].reason == "file not found"


# --------------------------------------------------------------------------------------------- decoding
def _decoded(data: bytes) -> np.ndarray:
    img = load_image(data)
    assert img.mode == "RGB"
    return np.asarray(img)


def test_decode_greyscale_png() -> None:
    arr = _decoded(_png(Image.new("L", (10, 8), 77)))
    assert arr.shape == (8, 10, 3) and (arr == 77).all()


def test_decode_16bit_greyscale_png() -> None:
    img = Image.fromarray(np.full((6, 6), 65535, dtype=np.uint16))
    arr = _decoded(_png(img))
    assert (arr == 255).all()


def test_decode_bilevel_png() -> None:
    arr = _decoded(_png(Image.new("1", (5, 5), 1)))
    assert (arr == 255).all()


def test_decode_cmyk_jpeg() -> None:
    arr = _decoded(_jpeg(Image.new("CMYK", (16, 16), (0, 255, 255, 0))))  # pure red in CMYK
    r, g, b = arr.reshape(-1, 3).mean(axis=0)
    assert r > 230 and g < 25 and b < 25


def test_decode_palette_png() -> None:
    img = _rgb((10, 120, 240)).quantize(colors=4)
    assert img.mode == "P"
    arr = _decoded(_png(img))
    assert np.abs(arr.astype(int) - (10, 120, 240)).max() <= 8


def test_decode_palette_with_transparency_composites_on_white() -> None:
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.putpixel((0, 0), 1)
    img.info["transparency"] = 0  # palette entry 0 (black) is transparent
    arr = _decoded(_png(img))
    assert tuple(arr[0, 0]) == (255, 0, 0) and tuple(arr[1, 1]) == (255, 255, 255)


def test_decode_rgba_composites_on_white() -> None:
    img = Image.new("RGBA", (4, 2), (0, 0, 0, 0))  # fully transparent black
    img.putpixel((0, 0), (0, 0, 255, 255))  # opaque blue
    img.putpixel((1, 0), (0, 0, 0, 128))  # half-transparent black
    arr = _decoded(_png(img))
    assert tuple(arr[0, 0]) == (0, 0, 255)
    assert tuple(arr[1, 1]) == (255, 255, 255)
    assert 120 <= arr[0, 1, 0] <= 135 and len(set(arr[0, 1])) == 1


def test_decode_la_composites_on_white() -> None:
    img = Image.new("LA", (3, 3), (0, 0))
    img.putpixel((0, 0), (40, 255))
    arr = _decoded(_png(img))
    assert tuple(arr[0, 0]) == (40, 40, 40) and tuple(arr[2, 2]) == (255, 255, 255)


def test_decode_rgb_jpeg_and_path(tmp_path: Path) -> None:
    path = tmp_path / "x.jpg"
    path.write_bytes(_jpeg(_rgb((30, 200, 90))))
    for src in (path, str(path)):
        arr = np.asarray(load_image(src))
        assert np.abs(arr.astype(int) - (30, 200, 90)).max() <= 6


def test_decode_applies_exif_orientation() -> None:
    img = _rgb(size=(20, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    assert load_image(_jpeg(img, exif=exif)).size == (10, 20)


def test_decode_errors_name_the_uri(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image(tmp_path / "missing.png")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(VspInputError, match=r"empty\.jpg: empty file"):
        load_image(empty)
    with pytest.raises(VspInputError, match=r"blob\.jpg: corrupt"):
        load_image(b"\xff\xd8\xff garbage", name="blob.jpg")


# --------------------------------------------------------------------------------------------- preprocessing
@pytest.mark.parametrize("size", [(224, 224), (300, 200), (120, 500)])
def test_preprocess_constant_image(size: tuple[int, int]) -> None:
    colour = (255, 128, 0)
    t = preprocess(Image.new("RGB", size, colour))
    assert t.shape == (3, 224, 224) and t.dtype == torch.float32
    expected = (torch.tensor(colour) / 255.0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(t.mean(dim=(1, 2)), expected.float(), atol=1e-5, rtol=0)
    torch.testing.assert_close(t.amax(dim=(1, 2)) - t.amin(dim=(1, 2)), torch.zeros(3), atol=1e-5, rtol=0)


def test_preprocess_matches_torchvision_imagenet_weights_transform() -> None:
    from torchvision.models import ResNet34_Weights

    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 256, size=(180, 260, 3), dtype=np.uint8), "RGB")
    reference = ResNet34_Weights.IMAGENET1K_V1.transforms()(img)
    torch.testing.assert_close(preprocess(img), reference, atol=1e-5, rtol=0)


def test_preprocess_converts_non_rgb() -> None:
    assert preprocess(Image.new("L", (256, 256), 10)).shape == (3, 224, 224)


def test_decode_batch_skips_bad_files(mixed: Path) -> None:
    records = build_manifest(mixed)  # apple/cmyk, apple/corrupt, bee/empty, bee/grey
    for workers in (1, 3):
        batch = decode_batch(records, max_workers=workers)
        assert batch.tensor.shape == (2, 3, 224, 224)
        assert batch.ok == [0, 3]
        assert [i for i, _ in batch.errors] == [1, 2]
        assert "corrupt.jpg" in batch.errors[0][1] and "empty.png" in batch.errors[1][1]
        torch.testing.assert_close(batch.tensor[1], preprocess(load_image(records[3].uri)))
    with pytest.raises(VspInputError, match="corrupt.jpg"):
        decode_batch(records, strict=True)
    empty = decode_batch([])
    assert empty.tensor.shape == (0, 3, 224, 224) and empty.ok == [] and empty.errors == []
    tensor, ok, errors, _ = decode_batch([records[0].uri])
    assert tensor.shape == (1, 3, 224, 224) and ok == [0] and errors == []


# ------------------------------------------------------------------------------- hostile or broken inputs
def _bilevel_png(width: int, height: int) -> bytes:
    """A white 1-bit PNG of any size, written row by row: a few KB on disk, width x height pixels decoded."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = b"\x00" + b"\xff" * ((width + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # PIL's backstop, above 89 MP
def test_oversize_image_is_skipped_from_its_header_quickly_and_cheaply(tmp_path: Path) -> None:
    import time

    folder = tmp_path / "bombs" / "cat"
    folder.mkdir(parents=True)
    bomb = folder / "bomb.png"
    bomb.write_bytes(_bilevel_png(13000, 13000))  # 169 MP: 1.3 GB as RGB float, under 100 KB on disk
    assert bomb.stat().st_size < 100_000
    (folder / "ok.png").write_bytes(_png(_rgb()))
    records = build_manifest(tmp_path / "bombs")
    decode_batch(records[1:])  # warm up (torchvision's import) so that only the bomb is timed
    before, t0 = _peak_rss_mib(), time.perf_counter()
    batch = decode_batch(records, max_workers=2)
    elapsed, grew = time.perf_counter() - t0, _peak_rss_mib() - before
    assert batch.ok == [1] and batch.tensor.shape == (1, 3, 224, 224)
    ((i, reason),) = batch.errors
    assert i == 0 and "bomb.png" in reason
    assert "too large" in reason and "13000x13000" in reason and "40,000,000" in reason
    assert elapsed < 3, f"{elapsed:.2f}s: the header check should not decode (a full decode takes ~10 s)"
    assert grew < 50, f"peak RSS grew by {grew:.0f} MiB"
    report = validate(records)  # `vsp images validate` reports it like any unreadable file
    assert report.bad_uris == [str(bomb.resolve())] and "13000x13000" in report.unreadable[0].reason
    assert "40,000,000" in report.to_text()


def test_pixel_cap_is_a_parameter_and_an_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vsp.data.images import DEFAULT_MAX_IMAGE_PIXELS, max_image_pixels

    monkeypatch.delenv("VSP_MAX_IMAGE_PIXELS", raising=False)
    assert max_image_pixels() == DEFAULT_MAX_IMAGE_PIXELS == 40_000_000
    data = _png(_rgb(size=(100, 80)))  # 8,000 pixels
    with pytest.raises(
        VspInputError, match=r"pic\.png: image too large: 100x80 = 8,000 pixels.*cap of 5,000"
    ):
        load_image(data, name="pic.png", max_pixels=5000)
    assert load_image(data, max_pixels=8000).size == (100, 80)  # the cap is inclusive
    path = tmp_path / "pic.png"
    path.write_bytes(data)
    monkeypatch.setenv("VSP_MAX_IMAGE_PIXELS", "5000")
    assert max_image_pixels() == 5000
    with pytest.raises(VspInputError, match="cap of 5,000 pixels"):
        load_image(path)
    batch = decode_batch([ImageRecord("cat", str(path))])
    assert batch.ok == [] and "cap of 5,000 pixels" in batch.errors[0][1]
    assert (
        validate([ImageRecord("cat", str(path))], max_workers=1)
        .unreadable[0]
        .reason.startswith("image too large: 100x80")
    )
    assert load_image(path, max_pixels=0).size == (100, 80)  # the parameter wins; 0: no cap of vsp's own
    monkeypatch.setenv("VSP_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(VspInputError, match=r"VSP_MAX_IMAGE_PIXELS.*'lots'"):
        decode_batch([ImageRecord("cat", str(path))])  # a bad setting is an error, not a skipped image
    monkeypatch.delenv("VSP_MAX_IMAGE_PIXELS")
    # beyond PIL's own hard limit (2 x PIL.Image.MAX_IMAGE_PIXELS) PIL refuses in Image.open already:
    # the reason is worded the same way
    with pytest.raises(VspInputError, match=r"huge\.png: image too large: 196,000,000 pixels.*40,000,000"):
        load_image(_bilevel_png(14000, 14000), name="huge.png")


def test_jpeg_draft_only_for_images_much_larger_than_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    from vsp.data import images
    from vsp.data.images import RESIZE

    assert images.DRAFT_MIN_PIXELS > 4032 * 3024  # a 12 MP phone photo decodes in full
    rng = np.random.default_rng(0)
    photo = _jpeg(Image.fromarray(rng.integers(0, 256, (600, 800, 3), dtype=np.uint8)))
    full = Image.open(io.BytesIO(photo)).convert("RGB")
    assert np.array_equal(np.asarray(load_image(photo)), np.asarray(full))  # bit-identical

    monkeypatch.setattr(images, "DRAFT_MIN_PIXELS", 1_000_000)
    yy, xx = np.mgrid[0:1600, 0:2100]
    smooth = np.stack([xx * 255 // 2100, yy * 255 // 1600, (xx + yy) * 255 // 3700], axis=-1)
    big = _jpeg(Image.fromarray(smooth.astype(np.uint8)))
    drafted = load_image(big)
    assert drafted.size == (1050, 800) and min(drafted.size) >= 2 * RESIZE  # DCT-scaled by 2, not further
    reference = preprocess(Image.open(io.BytesIO(big)).convert("RGB"))
    torch.testing.assert_close(preprocess(drafted), reference, atol=0.05, rtol=0)
    assert load_image(_png(Image.fromarray(smooth.astype(np.uint8)))).size == (2100, 1600)  # JPEG only


def test_symlinks_leaving_the_image_root_are_refused_unless_asked(tree: Path, tmp_path: Path) -> None:
    root = tree.resolve()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(_png(_rgb()))
    (tree / "cat" / "alias.png").symlink_to(tree / "apple" / "x.png")  # stays inside the root: fine
    assert ImageRecord("cat", str(root / "cat" / "alias.png")) in build_manifest(tree)

    evil = tree / "cat" / "more" / "evil.png"
    evil.symlink_to(outside / "secret.png")
    with pytest.raises(
        VspInputError, match=r"evil\.png.*secret\.png.*outside the image root.*--follow-links"
    ):
        build_manifest(tree)
    assert ImageRecord("cat", str(root / "cat" / "more" / "evil.png")) in build_manifest(
        tree, follow_links=True
    )
    evil.unlink()

    (tree / "dog").symlink_to(outside, target_is_directory=True)  # a concept folder that is a link
    with pytest.raises(VspInputError, match=r"dog.*outside the image root.*--follow-links"):
        build_manifest(tree)
    assert ImageRecord("dog", str(root / "dog" / "secret.png")) in build_manifest(tree, follow_links=True)
    (tree / "dog").unlink()

    (tree / "cat" / "sub").symlink_to(outside, target_is_directory=True)  # a linked sub-folder
    with pytest.raises(VspInputError, match=r"sub.*--follow-links"):
        build_manifest(tree)
    assert ImageRecord("cat", str(root / "cat" / "sub" / "secret.png")) in build_manifest(
        tree, follow_links=True
    )
    (tree / "cat" / "sub").unlink()

    (tree / "cat" / "loop").symlink_to(tree / "cat", target_is_directory=True)  # a cycle inside the root
    assert not [r for r in build_manifest(tree) if "/loop/" in r.uri]


def test_manifest_uris_that_leave_its_folder_are_refused_unless_asked(tree: Path, tmp_path: Path) -> None:
    root = tree.resolve()
    secret = tmp_path / "secret.png"
    secret.write_bytes(_png(_rgb()))
    csv = tree / "m.csv"
    rows = {"concept": ["cat", "dog", "dog"], "uri": ["cat/c1.png", str(secret), "s3://bkt/p/d.png"]}
    pd.DataFrame(rows).to_csv(csv, index=False)
    explicit = [
        ImageRecord("cat", str(root / "cat" / "c1.png")),
        ImageRecord("dog", str(secret)),  # absolute paths and s3:// uris: written out, so allowed
        ImageRecord("dog", "s3://bkt/p/d.png"),
    ]
    assert build_manifest(csv) == explicit

    pd.DataFrame({"concept": [*rows["concept"], "cow"], "uri": [*rows["uri"], "../secret.png"]}).to_csv(
        csv, index=False
    )
    with pytest.raises(VspInputError, match=r"m\.csv.*row 4.*\.\./secret\.png.*--follow-links"):
        build_manifest(csv)
    assert build_manifest(csv, follow_links=True) == sorted([ImageRecord("cow", str(secret)), *explicit])

    (tree / "link").symlink_to(tmp_path, target_is_directory=True)  # relative, but through a link outside
    pd.DataFrame({"concept": ["cow"], "uri": ["link/secret.png"]}).to_csv(csv, index=False)
    with pytest.raises(VspInputError, match=r"m\.csv.*row 1.*link/secret\.png.*--follow-links"):
        build_manifest(csv)
    assert build_manifest(csv, follow_links=True) == [ImageRecord("cow", str(root / "link" / "secret.png"))]


def test_cli_follow_links(tree: Path, tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from vsp.cli import app

    runner = CliRunner()
    (tmp_path / "secret.png").write_bytes(_png(_rgb()))
    (tree / "cat" / "evil.png").symlink_to(tmp_path / "secret.png")
    res = runner.invoke(app, ["images", "validate", "--images", str(tree)])
    assert res.exit_code == 2 and "evil.png" in res.output and "--follow-links" in res.output
    res = runner.invoke(app, ["images", "validate", "--images", str(tree), "--follow-links", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["n_images"] == 7
    args = [
        "extract",
        "--images",
        str(tree),
        "--store",
        str(tmp_path / "s"),
        "--weights",
        "random",
        "--no-ray",
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "evil.png" in res.output and "--follow-links" in res.output
    res = runner.invoke(app, [*args, "--follow-links", "--norms", str(tmp_path / "no-norms.dat")])
    assert res.exit_code == 2 and "no-norms.dat" in res.output  # past the manifest, stopped by the norms
    assert not (tmp_path / "s").exists()


def test_devices_and_pipes_are_refused_not_read(tmp_path: Path) -> None:
    import os

    folder = tmp_path / "imgs" / "cat"
    folder.mkdir(parents=True)
    pipe = folder / "pipe.png"
    os.mkfifo(pipe)  # opening it for reading would block until someone writes
    (folder / "ok.png").write_bytes(_png(_rgb()))
    with pytest.raises(VspInputError, match=r"pipe\.png: not a regular file"):
        load_image(pipe)
    with pytest.raises(VspInputError, match=r"/dev/zero: not a regular file"):
        load_image("/dev/zero")  # an absolute uri of a manifest: reading it would never end
    report = validate(build_manifest(tmp_path / "imgs"), max_workers=1)
    assert report.bad_uris == [str(pipe.resolve())]
    assert report.unreadable[0].reason.startswith("not a regular file")
