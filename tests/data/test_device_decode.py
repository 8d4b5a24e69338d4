"""The device input pipeline, run on the CPU: the same images as the PIL path to within resize rounding."""

import numpy as np
import pytest
import torch
from PIL import Image

from vsp.data.device_decode import materialise, read_encoded
from vsp.data.images import decode_batch
from vsp.data.preprocess import TORCHVISION, Preprocessing
from vsp.errors import ConfigMismatchError, VspInputError


def _photo(path, size=(500, 375), mode="RGB", fmt="JPEG"):
    from sklearn.datasets import load_sample_images

    img = Image.fromarray(load_sample_images().images[0][: size[1], : size[0]])
    img.convert(mode).save(path, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return str(path)


def test_jpegs_stay_encoded_and_everything_else_takes_the_pil_path(tmp_path):
    jpeg = read_encoded(_photo(tmp_path / "a.jpg"))
    grey = read_encoded(_photo(tmp_path / "g.jpg", mode="L"))
    png = read_encoded(_photo(tmp_path / "b.png", fmt="PNG"))
    cmyk = read_encoded(_photo(tmp_path / "c.jpg", mode="CMYK"))
    assert jpeg.encoded and grey.encoded and not png.encoded and not cmyk.encoded
    assert png.data.shape == (3, 375, 500) and png.data.dtype == torch.uint8
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(VspInputError, match="bad.jpg"):
        read_encoded(str(tmp_path / "bad.jpg"))


def test_a_jpeg_with_a_corrupt_body_is_found_on_the_device_and_skipped_alone(tmp_path):
    good = _photo(tmp_path / "a.jpg")
    data = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[:600] + b"\x00" * 64)  # the header intact, the body not
    images = [read_encoded(good), read_encoded(str(tmp_path / "cut.jpg"))]
    assert all(im.encoded for im in images)  # nothing decoded on the CPU: the header is fine
    tensors, ok, errors = materialise(images, [TORCHVISION], "cpu")
    assert ok == [0] and tensors[TORCHVISION.key].shape == (1, 3, 224, 224)
    assert [i for i, _ in errors] == [1] and "cut.jpg" in errors[0][1]


def test_device_preprocessing_matches_pil_to_within_resize_rounding(tmp_path):
    paths = [
        _photo(tmp_path / "a.jpg"),
        _photo(tmp_path / "g.jpg", mode="L"),
        _photo(tmp_path / "p.png", fmt="PNG"),
    ]
    timm_like = Preprocessing(248, 224, "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    for p in (TORCHVISION, timm_like):
        ref = decode_batch(paths, preprocessings=[p]).tensor
        got = materialise([read_encoded(u) for u in paths], [p], "cpu")[0][p.key]
        assert got.shape == ref.shape == (3, 3, 224, 224)
        diff = (got - ref).abs() * torch.tensor(p.std).view(1, 3, 1, 1) * 255  # in 8-bit pixel levels
        assert float(diff.mean()) < 0.5 and float(diff.max()) < 12, (p, float(diff.mean()), float(diff.max()))


def test_decoder_torchvision_extracts_close_features_under_its_own_identity(tmp_path):
    from vsp.data.images import build_manifest
    from vsp.extract.features import ExtractionConfig, FeatureStore
    from vsp.extract.stage import run_extraction_local
    from vsp.io.store import open_store

    for c in range(3):
        (tmp_path / "photos" / f"c{c}").mkdir(parents=True)
        for j in range(2):
            _photo(tmp_path / "photos" / f"c{c}" / f"{j}.jpg", size=(480 - 40 * c, 360 - 20 * j))
    records = build_manifest(str(tmp_path / "photos"))
    base = ExtractionConfig(models=("resnet18",), layers="layer4.1", weights="random", unit_size=2)
    dev = ExtractionConfig(**{**base.__dict__, "decoder": "torchvision"})
    run_extraction_local(open_store(str(tmp_path / "pil")), records, base)
    run_extraction_local(open_store(str(tmp_path / "tv")), records, dev)
    a, b = (FeatureStore(open_store(str(tmp_path / s))) for s in ("pil", "tv"))
    for layer in ("layer4.1", "penultimate"):
        x, y = a.read("resnet18", layer), b.read("resnet18", layer)
        cos = (x * y).sum(1)  # rows are L2-normalised
        assert cos.min() > 0.999 and not np.array_equal(x, y), (layer, cos)
    assert b.manifest()["identity"]["config"]["decoder"] == "torchvision"
    assert "decoder" not in a.manifest()["identity"]["config"]  # the default is not recorded: stores resume
    with pytest.raises(ConfigMismatchError):
        run_extraction_local(open_store(str(tmp_path / "pil")), records, dev)  # never mixed into a PIL store


def test_bfloat16_and_channels_last_are_identity_and_compared_per_layer(tmp_path):
    from vsp.data.synthetic import generate_world
    from vsp.extract.features import ExtractionConfig, FeatureStore, layer_differences
    from vsp.extract.stage import run_extraction_local
    from vsp.io.store import open_store

    world = generate_world(tmp_path / "w", n_concepts=4, images_per_concept=2, seed=0)
    from vsp.data.images import build_manifest

    records = build_manifest(str(world.images_root))
    base = ExtractionConfig(models=("resnet18",), weights="random", unit_size=4, channels_last=False)
    stores = {}
    for name, kw in (("fp32", {}), ("bf16", {"precision": "bfloat16"}), ("cl", {"channels_last": True})):
        stores[name] = FeatureStore(open_store(str(tmp_path / name)))
        run_extraction_local(stores[name].store, records, ExtractionConfig(**{**base.__dict__, **kw}))
    ident = {k: fs.manifest()["identity"]["config"] for k, fs in stores.items()}
    assert ident["bf16"]["precision"] == "bfloat16" and "precision" not in ident["fp32"]
    assert ident["cl"]["channels_last"] is True and "channels_last" not in ident["fp32"]
    bf16 = layer_differences(stores["fp32"], stores["bf16"])
    cl = layer_differences(stores["fp32"], stores["cl"])
    assert len(bf16) == 21 and 0 < max(bf16.values()) < 0.1  # bf16 keeps ~3 significant digits
    assert max(cl.values()) < 1e-4  # channels-last: the same numbers up to float32 summation order
    with pytest.raises(ConfigMismatchError):
        run_extraction_local(
            stores["fp32"].store, records, ExtractionConfig(**{**base.__dict__, "precision": "bfloat16"})
        )
