from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from vsp.errors import VspInputError
from vsp.extract.hooks import MultiNetExtractor, concept_vector, extract_images, ieee_float32
from vsp.extract.networks import PAPER_MODELS, load_model

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
    relu_ex = MultiNetExtractor(["alexnet"], seed=3, activation="relu")
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

    from vsp.io.store import open_store

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


def _fp32_flags() -> tuple[str, str]:
    return torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision


def test_float32_forward_on_cuda_turns_tf32_off_and_restores_it():
    before = _fp32_flags()
    torch.backends.cudnn.conv.fp32_precision = "tf32"  # PyTorch's default for cuDNN convolutions
    try:
        with pytest.raises(RuntimeError, match="inside"), ieee_float32():
            assert _fp32_flags() == ("ieee", "ieee")
            raise RuntimeError("inside")
        assert torch.backends.cudnn.conv.fp32_precision == "tf32"
        ex = MultiNetExtractor(["alexnet"], seed=0)
        ex.device = torch.device("cuda")  # what the context is chosen by; nothing runs on it here
        with ex._autocast():
            assert _fp32_flags() == ("ieee", "ieee")
        assert torch.backends.cudnn.conv.fp32_precision == "tf32"
        ex.device = torch.device("cpu")  # a CPU forward pass leaves the CUDA flags alone
        with ex._autocast():
            assert torch.backends.cudnn.conv.fp32_precision == "tf32"
    finally:
        torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision = before


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


# --- activation points ---------------------------------------------------------------------------------
# torchvision initialises every BatchNorm to the identity (mean 0, var 1, weight 1, bias 0), which would
# make "bn" indistinguishable from "conv": the weights files below give every BatchNorm random statistics and
# affine parameters (negative scales too, so that max(bn(x)) != bn(max(x))).
def _bn_weights(name: str, seed: int, path) -> str:
    model, _ = load_model(name, "random", seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(c, generator=g))
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.5)
    torch.save(model.state_dict(), path)
    return str(path)


@pytest.fixture(scope="module")
def bn_files(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("bn-weights")
    return {n: _bn_weights(n, 5, root / f"{n}.pt") for n in ("resnet34", "densenet169")}


def _reference(weights: str, name: str, x: torch.Tensor, kinds: tuple) -> tuple[nn.Module, dict]:
    """The full output of every module of the given types, cloned in plain forward hooks."""
    model, _ = load_model(name, weights)
    names = [n for n, m in model.named_modules() if isinstance(m, kinds)]
    return model, _full_maps(model, names, x)


def _pooled(t: torch.Tensor, pooling: str) -> np.ndarray:
    return (t.amax(dim=(2, 3)) if pooling == "max" else t.mean(dim=(2, 3))).numpy()


def _resnet_bn_of(conv: str) -> str:
    """The BatchNorm after a ResNet conv, by torchvision's naming (independent of the fx lookup)."""
    if conv.endswith("downsample.0"):
        return conv[: -len("0")] + "1"
    head, last = conv.rsplit(".", 1) if "." in conv else ("", conv)
    return (head + "." if head else "") + last.replace("conv", "bn")


@pytest.mark.parametrize("pooling", ["max", "mean"])
def test_resnet_activation_points_match_manual_forward(bn_files, pooling):
    x = _images()
    w = bn_files["resnet34"]
    got = {a: MultiNetExtractor(["resnet34"], weights=w, pooling=pooling, activation=a)(x)["resnet34"]
           for a in ("conv", "bn", "relu")}  # fmt: skip
    model, full = _reference(w, "resnet34", x, (nn.Conv2d, nn.BatchNorm2d, torchvision_basic_block()))
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 36
    for c in convs:
        bn = full[_resnet_bn_of(c)]
        np.testing.assert_array_equal(got["conv"][c], _pooled(full[c], pooling))
        np.testing.assert_allclose(got["bn"][c], _pooled(bn, pooling), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(got["relu"][c], _pooled(bn.clamp(min=0), pooling), rtol=1e-6, atol=1e-6)
        assert not np.allclose(got["bn"][c], got["conv"][c], atol=1e-3)  # the points really differ
    # BasicBlock conv2: relu(bn2(conv2(.))) before the residual add, by explicit module calls, which is not
    # what the block's shared `relu` module outputs (after the add)
    blk = model.layer3[1]
    inner = blk.relu(blk.bn1(blk.conv1(full["layer3.0"])))
    want = blk.bn2(blk.conv2(inner.detach())).detach().clamp(min=0)
    np.testing.assert_allclose(got["relu"]["layer3.1.conv2"], _pooled(want, pooling), rtol=1e-5, atol=1e-5)
    assert not np.allclose(got["relu"]["layer3.1.conv2"], _pooled(full["layer3.1"], pooling), atol=1e-3)
    if pooling == "mean":  # mean(relu(x)), not relu(mean(x))
        bn = full["layer3.1.bn2"]
        assert not np.allclose(got["relu"]["layer3.1.conv2"], _pooled(bn, "mean").clip(min=0), atol=1e-3)
    for a in ("bn", "relu"):
        np.testing.assert_array_equal(got[a]["penultimate"], got["conv"]["penultimate"])


def torchvision_basic_block():
    from torchvision.models.resnet import BasicBlock

    return BasicBlock


@pytest.mark.parametrize("name", ["alexnet", "vgg16"])
def test_alexnet_vgg_bn_is_conv_and_relu_is_the_relu_output(name, caplog):
    x = _images()
    with caplog.at_level("WARNING", logger="vsp.extract.hooks"):
        bn = MultiNetExtractor([name], seed=4, activation="bn")
    assert f"{name}: no BatchNorm follows" in caplog.text and "recorded as 'conv'" in caplog.text
    assert {t.activation for t in bn.taps[name][:-1]} == {"conv"}
    got_bn = bn(x)[name]
    mean_relu = MultiNetExtractor([name], seed=4, activation="relu", pooling="mean")(x)[name]
    max_relu = MultiNetExtractor([name], seed=4, activation="relu")(x)[name]
    model, _ = load_model(name, "random", seed=4)
    feats = list(model.features.named_children())
    pairs = [(f"features.{a}", f"features.{b}") for (a, m), (b, _) in zip(feats, feats[1:], strict=False)
             if isinstance(m, nn.Conv2d)]  # fmt: skip
    post = _full_maps(model, [r for _, r in pairs], x)  # the ReLU modules' outputs
    pre = _full_maps(model, [c for c, _ in pairs], x)  # the convs' outputs (cloned before the ReLU)
    for c, r in pairs:
        np.testing.assert_array_equal(got_bn[c], _pooled(pre[c], "max"))  # bn == conv
        np.testing.assert_array_equal(max_relu[c], _pooled(post[r], "max"))
        np.testing.assert_allclose(mean_relu[c], _pooled(post[r], "mean"), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("pooling", ["max", "mean"])
def test_densenet_activation_points_match_manual_forward(bn_files, pooling):
    from torchvision.models.densenet import _DenseLayer, _Transition

    x = _images(1)
    w = bn_files["densenet169"]
    got = {a: MultiNetExtractor(["densenet169"], weights=w, pooling=pooling, activation=a)(x)["densenet169"]
           for a in ("bn", "relu")}  # fmt: skip
    kinds = (nn.BatchNorm2d, nn.ReLU, _DenseLayer, _Transition, nn.Conv2d)
    model, full = _reference(w, "densenet169", x, kinds)
    # the first consumer of each tap's output, written out for DenseNet169 (blocks of 6, 12, 32, 32 layers)
    init, sizes, b = {1: 64, 2: 128, 3: 256, 4: 640}, {1: 6, 2: 12, 3: 32, 4: 32}, "features.denseblock"
    want: dict[str, tuple[str, slice]] = {"features.conv0": ("features.norm0", slice(None))}
    for blk, n in sizes.items():
        for j in range(1, n + 1):
            nxt = f"{b}{blk}.denselayer{j + 1}.norm1" if j < n else (
                f"features.transition{blk}.norm" if blk < 4 else "features.norm5")  # fmt: skip
            off = init[blk] + 32 * (j - 1)
            want[f"{b}{blk}.denselayer{j}"] = (nxt, slice(off, off + 32))
        if blk < 4:
            want[f"features.transition{blk}"] = (f"{b}{blk + 1}.denselayer1.norm1", slice(0, init[blk + 1]))
    assert list(got["bn"])[:-1] == list(want)  # the 86 paper taps, in order
    for tap, (bn, sl) in want.items():
        value = full[bn][:, sl]
        np.testing.assert_allclose(got["bn"][tap], _pooled(value, pooling), rtol=1e-6, atol=1e-6)
        relu = _pooled(value.clamp(min=0), pooling)
        np.testing.assert_allclose(got["relu"][tap], relu, rtol=1e-6, atol=1e-6)
    # the same by explicit module calls: the consumer's BatchNorm on the layer's own output (its conv2), and
    # the consumer's relu1 is exactly the relu point
    layer, nxt = f"{b}2.denselayer5", model.features.denseblock2.denselayer6
    by_hand = torch.nn.functional.batch_norm(
        full[layer], nxt.norm1.running_mean[256:288], nxt.norm1.running_var[256:288],
        nxt.norm1.weight[256:288], nxt.norm1.bias[256:288], False, 0.0, nxt.norm1.eps,
    ).detach()  # fmt: skip
    np.testing.assert_array_equal(full[layer].numpy(), full[f"{layer}.conv2"].numpy())
    np.testing.assert_allclose(got["bn"][layer], _pooled(by_hand, pooling), rtol=1e-5, atol=1e-5)
    relu1 = full[f"{b}2.denselayer6.relu1"][:, 256:288]
    np.testing.assert_allclose(got["relu"][layer], _pooled(relu1, pooling), rtol=1e-6, atol=1e-6)
    assert not np.allclose(got["bn"][layer], _pooled(full[layer], pooling), atol=1e-3)


def test_densenet_all_conv_bn_and_the_transition_conv_fallback(bn_files):
    x = _images(1)
    w, b = bn_files["densenet169"], "features.denseblock"
    sel = [f"{b}1.denselayer2.conv1", f"{b}1.denselayer2.conv2", "features.transition1.conv"]
    ex = MultiNetExtractor(["densenet169"], layers=sel, weights=w, activation="bn", penultimate=False)
    got = ex(x)["densenet169"]
    assert [t.activation for t in ex.taps["densenet169"]] == ["bn", "bn", "conv"]
    _, full = _reference(w, "densenet169", x, (nn.BatchNorm2d, nn.Conv2d))
    np.testing.assert_allclose(got[sel[0]], _pooled(full[f"{b}1.denselayer2.norm2"], "max"), rtol=1e-6)
    consumer = full[f"{b}1.denselayer3.norm1"][:, 96:128]
    np.testing.assert_allclose(got[sel[1]], _pooled(consumer, "max"), rtol=1e-6)
    np.testing.assert_array_equal(got[sel[2]], _pooled(full["features.transition1.conv"], "max"))


def test_activation_option_errors():
    with pytest.raises(VspInputError, match="unknown activation 'post'"):
        MultiNetExtractor(["resnet18"], activation="post")
    with pytest.raises(VspInputError, match="module tap 'layer1' of model 'resnet18'"):
        MultiNetExtractor(["resnet18"], layers=["layer1"], activation="bn")


def test_activation_in_identity_array_attributes_and_refused_when_changed(tmp_path):
    import zarr

    from vsp.data.images import build_manifest
    from vsp.data.synthetic import generate_world
    from vsp.errors import ConfigMismatchError
    from vsp.extract.features import ExtractionConfig, FeatureStore
    from vsp.extract.stage import run_extraction_local
    from vsp.io.store import open_store

    with pytest.raises(VspInputError, match="activation must be"):
        ExtractionConfig(activation="post")
    assert ExtractionConfig().to_json()["activation"] == "conv"
    world = generate_world(tmp_path / "w", n_concepts=4, images_per_concept=1, seed=0)
    records = build_manifest(world.images_root)
    config = ExtractionConfig(models=("alexnet", "resnet18"), weights="random", activation="bn", unit_size=4)
    store = open_store(tmp_path / "s")
    run_extraction_local(store, records, config)
    fs = FeatureStore(store)
    ident = fs.manifest()["identity"]
    assert ident["config"]["activation"] == "bn" and ident["config"]["layers"] == "paper"
    layers = {(x["model"], x["name"]): x for x in ident["layers"]}
    assert layers[("alexnet", "features.0")]["activation"] == "conv"  # no BatchNorm: bn == conv, recorded
    assert layers[("resnet18", "layer1.0.conv2")]["activation"] == "bn"
    assert layers[("resnet18", "layer1.0.conv2")]["bn"] == "layer1.0.bn2"
    assert layers[("resnet18", "penultimate")]["activation"] == "classifier-input"
    root = zarr.open_group(store=store.zarr_store("features/features.zarr"), mode="r")
    attrs = dict(root["resnet18"]["layer1.0.conv2"].attrs)
    assert attrs["activation"] == "bn" and attrs["bn"] == "layer1.0.bn2"
    assert dict(root["resnet18"]["images"]["layer1.0.conv2"].attrs)["activation"] == "bn"
    assert dict(root["alexnet"]["features.0"].attrs)["activation"] == "conv"
    with pytest.raises(ConfigMismatchError, match="config.activation"):
        run_extraction_local(store, records, ExtractionConfig(**{**config.__dict__, "activation": "relu"}))


def test_run_file_extract_activation():
    from vsp.config import RunConfig

    base = {"store": "/tmp/s", "images": "/tmp/i", "stages": ["extract"]}
    assert RunConfig.from_dict(base).extraction_config().activation == "conv"
    cfg = RunConfig.from_dict({**base, "extract": {"activation": "relu"}})
    assert cfg.extraction_config().activation == "relu"
    assert cfg.stage_identity("extract")["extract"]["activation"] == "relu"
    with pytest.raises(VspInputError, match="extract.activation: must be one of conv, bn, relu"):
        RunConfig.from_dict({**base, "extract": {"activation": "post"}})


def test_default_cli_extract_taps_densenet_paper_layers(tmp_path):
    from typer.testing import CliRunner

    from vsp.cli import app
    from vsp.data.synthetic import generate_world
    from vsp.extract.features import FeatureStore
    from vsp.io.store import open_store

    world = generate_world(tmp_path / "w", n_concepts=4, images_per_concept=1, seed=0)
    base = ["extract", "--images", str(world.images_root), "--weights", "random", "--no-ray"]
    runner = CliRunner()
    res = runner.invoke(app, [*base, "--store", str(tmp_path / "d"), "--models", "densenet169"])
    assert res.exit_code == 0, res.output
    ident = FeatureStore(open_store(tmp_path / "d")).manifest()["identity"]
    assert ident["config"]["layers"] == "paper" and ident["config"]["activation"] == "conv"
    taps = [x for x in ident["layers"] if x["model"] == "densenet169"]
    assert len(taps) == 86 + 1 and taps[-1]["name"] == "penultimate"
    assert sum(x["kind"] == "block" for x in taps) == 82 and taps[0]["name"] == "features.conv0"
    alex = [*base, "--models", "alexnet"]
    res = runner.invoke(app, [*alex, "--store", str(tmp_path / "a"), "--activation", "relu"])
    assert res.exit_code == 0, res.output
    ident = FeatureStore(open_store(tmp_path / "a")).manifest()["identity"]
    assert ident["config"]["activation"] == "relu" and ident["layers"][0]["activation"] == "relu"
    bad = runner.invoke(app, [*alex, "--store", str(tmp_path / "b"), "--activation", "x"])
    assert bad.exit_code == 2 and "activation must be" in bad.output
