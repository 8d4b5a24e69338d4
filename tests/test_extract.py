from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from vsp.errors import VspInputError
from vsp.extract import MultiNetExtractor, concept_vector, extract_images
from vsp.networks import PAPER_MODELS, load_model

SIZE = 64  # AlexNet needs >= 63 px; channel counts do not depend on the size


def _images(n: int = 2, seed: int = 0, size: int = SIZE) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g)


@pytest.fixture(scope="module")
def four() -> MultiNetExtractor:
    return MultiNetExtractor(PAPER_MODELS, layers="all-conv", weights="random", seed=0)


@pytest.fixture(scope="module")
def four_out(four) -> dict:
    return four(_images())


def test_taps_and_shapes(four, four_out):
    counts = {"alexnet": 5, "vgg16": 13, "resnet34": 36, "densenet169": 168}
    for name, n in counts.items():
        taps = four.taps[name]
        assert len(taps) == n + 1 and taps[-1].name == "penultimate" and taps[-1].index == n
        assert list(four_out[name]) == [t.name for t in taps]
        for arr in four_out[name].values():
            assert arr.dtype == np.float32 and arr.shape[0] == 2 and np.isfinite(arr).all()
    assert four.weights_identity == dict.fromkeys(PAPER_MODELS, "random:0")


def test_penultimate_dims_and_channels(four, four_out):
    dims = {"alexnet": 4096, "vgg16": 4096, "resnet34": 512, "densenet169": 1664}
    ch = four.channels(size=SIZE)
    for name, d in dims.items():
        assert four_out[name]["penultimate"].shape == (2, d)
        assert ch[name]["penultimate"] == d
        assert {k: v.shape[1] for k, v in four_out[name].items()} == ch[name]
    assert ch["alexnet"]["features.0"] == 64 and ch["vgg16"]["features.28"] == 512
    # AlexNet/VGG penultimate = after the second FC's ReLU
    assert (four_out["alexnet"]["penultimate"] >= 0).all() and (four_out["vgg16"]["penultimate"] >= 0).all()


def _full_maps(model: nn.Module, names: list[str], x: torch.Tensor, clone: bool = True) -> dict:
    """Capture whole feature maps with plain hooks (clone: the value at that point; no clone: a reference)."""
    maps, handles = {}, []
    mods = dict(model.named_modules())
    for n in names:
        handles.append(
            mods[n].register_forward_hook(
                lambda _m, _a, o, n=n: maps.__setitem__(n, o.clone() if clone else o)
            )
        )
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return maps


def test_alexnet_hook_max_is_pre_relu_max_over_full_map():
    x = _images()
    ex = MultiNetExtractor(["alexnet"], seed=3)
    got = ex(x)["alexnet"]
    relu_ex = MultiNetExtractor(["alexnet"], seed=3, relu=True)
    got_relu = relu_ex(x)["alexnet"]
    model, _ = load_model("alexnet", "random", seed=3)
    convs = ["features.0", "features.3", "features.6", "features.8", "features.10"]
    pre = _full_maps(model, convs, x, clone=True)
    post = _full_maps(model, ["features.1", "features.4", "features.7", "features.9", "features.11"], x)
    ref = _full_maps(model, convs, x, clone=False)  # kept reference: overwritten by ReLU(inplace=True)
    saw_negative = False
    for conv, relu in zip(convs, post, strict=True):
        want_pre = pre[conv].amax(dim=(2, 3)).numpy()
        np.testing.assert_array_equal(got[conv], want_pre)
        np.testing.assert_array_equal(got_relu[conv], post[relu].amax(dim=(2, 3)).numpy())
        np.testing.assert_array_equal(got_relu[conv], np.maximum(want_pre, 0))
        # the pitfall the hook avoids: a reference to the conv output sees post-ReLU values
        np.testing.assert_array_equal(ref[conv].amax(dim=(2, 3)).numpy(), np.maximum(want_pre, 0))
        saw_negative |= bool((want_pre < 0).any())
    assert saw_negative  # the pre/post distinction was actually exercised


def test_resnet_hook_pooling_matches_feature_extractor_max_and_mean():
    x = _images()
    layers = ["layer2.0.conv1", "layer2.0.downsample.0", "layer4.2.conv2"]
    mx = MultiNetExtractor(["resnet34"], layers=layers, seed=1)(x)["resnet34"]
    mean = MultiNetExtractor(["resnet34"], layers=layers, seed=1, pooling="mean")(x)["resnet34"]
    model, _ = load_model("resnet34", "random", seed=1)
    fx = create_feature_extractor(model, return_nodes={**{n: n for n in layers}, "flatten": "pen"})
    with torch.no_grad():
        full = fx(x)
    for n in layers:
        np.testing.assert_allclose(mx[n], full[n].amax(dim=(2, 3)).numpy(), rtol=0, atol=0)
        np.testing.assert_allclose(mean[n], full[n].mean(dim=(2, 3)).numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(mx["penultimate"], full["pen"].numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(mean["penultimate"], mx["penultimate"])  # pooling never touches it


def test_densenet_paper_taps_match_full_maps():
    x = _images(1)
    ex = MultiNetExtractor(["densenet169"], layers="paper", seed=2)
    got = ex(x)["densenet169"]
    assert len(got) == 86 + 1
    names = ["features.conv0", "features.denseblock2.denselayer5", "features.transition3"]
    model, _ = load_model("densenet169", "random", seed=2)
    full = _full_maps(model, names, x)
    for n in names:
        np.testing.assert_array_equal(got[n], full[n].amax(dim=(2, 3)).numpy())
    ch = ex.channels(size=SIZE)["densenet169"]
    assert ch["features.conv0"] == 64 and ch["features.denseblock3.denselayer7"] == 32
    assert [ch[f"features.transition{i}"] for i in (1, 2, 3)] == [128, 256, 640]


def test_seeded_features_identical_twice_and_differ_across_seeds():
    x = _images()
    a = MultiNetExtractor(["resnet34"], seed=11)(x)["resnet34"]
    b = MultiNetExtractor(["resnet34"], seed=11)(x)["resnet34"]
    c = MultiNetExtractor(["resnet34"], seed=12)(x)["resnet34"]
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["conv1"], c["conv1"])


def test_weights_file_round_trip_local(tmp_path):
    model, _ = load_model("resnet34", "random", seed=7)
    path = tmp_path / "resnet34.pt"
    torch.save(model.state_dict(), path)
    x = _images()
    from_file = MultiNetExtractor(["resnet34"], weights=str(path))
    seeded = MultiNetExtractor(["resnet34"], weights="random", seed=7)
    assert from_file.weights_identity["resnet34"] == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    a, b = from_file(x)["resnet34"], seeded(x)["resnet34"]
    for k in b:
        np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.s3
def test_weights_file_round_trip_s3(s3_uri):
    import io

    from vsp.store import open_store

    model, _ = load_model("resnet18", "random", seed=9)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    data = buf.getvalue()
    open_store(s3_uri).write_bytes("weights/resnet18.pt", data)
    x = _images()
    from_s3 = MultiNetExtractor(["resnet18"], weights=f"{s3_uri}/weights/resnet18.pt")
    seeded = MultiNetExtractor(["resnet18"], weights="random", seed=9)
    assert from_s3.weights_identity["resnet18"] == "sha256:" + hashlib.sha256(data).hexdigest()
    a, b = from_s3(x)["resnet18"], seeded(x)["resnet18"]
    assert list(a) == list(b)
    for k in b:
        np.testing.assert_array_equal(a[k], b[k])
    with pytest.raises(VspInputError, match="missing.pt"):
        load_model("resnet18", f"{s3_uri}/weights/missing.pt")


def test_weights_file_errors_name_file_and_model(tmp_path):
    bad = tmp_path / "junk.pt"
    bad.write_bytes(b"not a pickle")
    with pytest.raises(VspInputError, match="junk.pt"):
        load_model("resnet18", str(bad))
    other = tmp_path / "alex.pt"
    torch.save(load_model("resnet18", seed=0)[0].state_dict(), other)
    with pytest.raises(VspInputError, match=r"does not fit model 'resnet34'"):
        load_model("resnet34", str(other))
    with pytest.raises(VspInputError, match="missing.pt"):
        load_model("resnet18", str(tmp_path / "missing.pt"))


def test_extract_images_batches_equal_one_shot():
    x = _images(5)
    ex = MultiNetExtractor(["alexnet"], layers=["features.3", "features.10"], seed=0)
    whole = ex(x)["alexnet"]
    batched = extract_images(ex, x, batch_size=2)["alexnet"]
    listed = extract_images(ex, list(x), batch_size=3)["alexnet"]
    for k in whole:
        assert batched[k].shape == whole[k].shape == listed[k].shape
        np.testing.assert_allclose(batched[k], whole[k], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(listed[k], whole[k], rtol=1e-5, atol=1e-5)


def test_autocast_and_channels_last_options():
    x = _images()
    ref = MultiNetExtractor(["resnet18"], seed=0)(x)["resnet18"]
    cl = MultiNetExtractor(["resnet18"], seed=0, channels_last=True)(x)["resnet18"]
    bf = MultiNetExtractor(["resnet18"], seed=0, dtype="bfloat16")(x)["resnet18"]
    for k in ref:
        np.testing.assert_allclose(cl[k], ref[k], rtol=1e-4, atol=1e-4)
        assert bf[k].dtype == np.float32
        assert np.corrcoef(bf[k].ravel(), ref[k].ravel())[0, 1] > 0.98


def test_input_errors():
    with pytest.raises(VspInputError, match="pooling"):
        MultiNetExtractor(["resnet18"], pooling="median")
    with pytest.raises(VspInputError, match="missing for: resnet18"):
        MultiNetExtractor(["resnet18"], weights={"alexnet": "random"})
    ex = MultiNetExtractor("resnet18", layers=["conv1"], penultimate=False)
    assert [t.name for t in ex.taps["resnet18"]] == ["conv1"]
    with pytest.raises(VspInputError, match=r"\(B, 3, H, W\)"):
        ex(torch.zeros(3, SIZE, SIZE))
    with pytest.raises(VspInputError, match="resnet18"):
        MultiNetExtractor(["resnet18"], layers=["conv9"])


def test_concept_vector_unit_norm(four_out):
    for name in PAPER_MODELS:
        for arr in four_out[name].values():
            v = concept_vector(arr)
            assert v.dtype == np.float32 and v.shape == (arr.shape[1],)
            assert abs(float(np.linalg.norm(v)) - 1.0) < 1e-5
    a = np.array([[3.0, 0.0], [1.0, 4.0], [np.nan, np.nan]])
    np.testing.assert_allclose(concept_vector(a), np.array([2.0, 2.0]) / np.sqrt(8), rtol=1e-6)
    np.testing.assert_array_equal(concept_vector(np.zeros((2, 3))), np.zeros(3, np.float32))
    with pytest.raises(VspInputError):
        concept_vector(np.full((2, 3), np.nan))
