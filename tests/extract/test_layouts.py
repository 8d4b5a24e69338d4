"""Layout-aware pooling: channels-first, channels-last and token taps pooled over the right axes."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from vsp.errors import VspInputError
from vsp.extract.features import LayerInfo
from vsp.extract.hooks import MultiNetExtractor, resolve_layouts
from vsp.extract.layouts import TokenGeometry, detect_layout, pool_layout, token_geometry
from vsp.extract.networks import select_layers


def test_pool_layout_reduces_the_axes_that_are_not_channels():
    g = torch.Generator().manual_seed(0)
    nchw = torch.randn(2, 5, 4, 4, generator=g)
    nhwc = nchw.permute(0, 2, 3, 1).contiguous()  # the same numbers, channels last
    for pooling in ("max", "mean"):
        want = pool_layout(nchw, "nchw", pooling)
        assert want.shape == (2, 5)
        assert torch.allclose(pool_layout(nhwc, "nhwc", pooling), want, atol=1e-6)
        # the bug this prevents: channel-first pooling of a channels-last map reduces the channels away
        assert pool_layout(nhwc, "nchw", pooling).shape == (2, 4)
    assert torch.equal(pool_layout(nchw, "nchw", "max"), nchw.amax(dim=(2, 3)))  # as every earlier release
    tokens = torch.randn(2, 1 + 9, 6, generator=g)
    tokens[:, 0] = 100.0  # a class token that max pooling over the patches must not see
    assert torch.equal(pool_layout(tokens, "tokens", "max", prefix=1), tokens[:, 1:].amax(dim=1))
    assert torch.allclose(pool_layout(tokens, "tokens", "mean", prefix=1), tokens[:, 1:].mean(dim=1))
    assert torch.equal(pool_layout(tokens, "tokens", "cls", prefix=1), tokens[:, 0])
    relu = pool_layout(tokens, "tokens", "max", relu=True, prefix=1)
    assert torch.equal(relu, tokens[:, 1:].amax(1).clamp(0))


def test_detect_layout_from_module_and_shape():
    geo = TokenGeometry(prefix=1, patches=196)
    assert detect_layout((2, 64, 56, 56), 2, None, None) == "nchw"
    assert detect_layout((2, 56, 56, 96), 2, None, None) == "nhwc"
    assert detect_layout((2, 7, 7, 7), 2, nn.Conv2d(3, 7, 1), None) == "nchw"  # a conv says so itself
    assert detect_layout((2, 7, 7, 7), 2, None, None) is None  # channels equal to the side: unknown
    assert detect_layout((2, 197, 32), 2, None, geo) == "tokens"
    assert detect_layout((2, 197, 32), 2, None, None) is None  # no token geometry: unknown
    assert detect_layout((2, 50, 32), 2, None, geo) is None  # not this model's sequence
    assert detect_layout((197, 2, 32), 2, None, geo) is None  # batch not first
    assert detect_layout((2, 512), 2, None, None) == "vector"
    assert detect_layout((2, 3, 4, 4, 4), 2, None, None) is None


def test_swin_blocks_are_channels_last_and_pooled_as_a_manual_forward():
    with MultiNetExtractor("swin_t", layers="blocks", weights="random", seed=0) as ex:
        taps = [t for t in ex.taps["swin_t"] if t.kind != "penultimate"]
        assert len(taps) == 2 + 2 + 6 + 2 and {t.layout for t in taps} == {"nhwc"}
        x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
        got = ex(x)["swin_t"]
    model = torchvision.models.swin_t(weights=None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = torchvision.models.swin_t(weights=None).eval()
    maps = {}
    modules = dict(model.named_modules())
    for t in taps:
        modules[t.name].register_forward_hook(lambda _m, _a, o, k=t.name: maps.__setitem__(k, o.clone()))
    with torch.inference_mode():
        model(x)
    for t in taps:
        want = maps[t.name].permute(0, 3, 1, 2).amax(dim=(2, 3))  # to channels-first, then the paper's pool
        assert got[t.name].shape == (2, maps[t.name].shape[-1])
        assert torch.equal(torch.from_numpy(got[t.name]), want)
    info = LayerInfo("swin_t", taps[0].name, 0, "module", 96, layout="nhwc")
    assert info.record()["layout"] == "nhwc"
    assert "layout" not in LayerInfo("resnet34", "conv1", 0, "conv", 64).record()  # earlier records unchanged


def _tiny_vit() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.VisionTransformer(
        image_size=224, patch_size=32, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32
    ).eval()


def test_vit_blocks_are_tokens_with_a_class_token():
    model = _tiny_vit()
    assert token_geometry(model) == TokenGeometry(prefix=1, patches=49)
    taps = select_layers(model, "vit", "blocks")
    assert [t.name for t in taps] == ["encoder.layers.encoder_layer_0", "encoder.layers.encoder_layer_1"]
    for pooling in ("max", "cls"):
        resolved = resolve_layouts(model, "vit", taps, pooling, torch.device("cpu"))
        assert [(t.layout, t.prefix) for t in resolved] == [("tokens", 1)] * 2


def test_unknown_layout_and_misplaced_cls_are_refused_by_name():
    flat = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(2))  # (B, 4, H*W): a 3-d output, no token geometry
    taps = select_layers(flat, "flat", ["1"])
    with pytest.raises(VspInputError, match=r"layer '1' of model 'flat' outputs shape \(2, 4, 49284\)"):
        resolve_layouts(flat, "flat", taps, "max", torch.device("cpu"))
    with pytest.raises(VspInputError, match="pooling 'cls' needs a token sequence.*'layer1.0'"):
        MultiNetExtractor("resnet18", layers="blocks", pooling="cls")


def test_blocks_selection_per_architecture():
    def names(arch: str) -> list[str]:
        return [t.name for t in select_layers(torchvision.models.get_model(arch), arch, "blocks")]

    resnet = names("resnet34")
    assert len(resnet) == 3 + 4 + 6 + 3 and resnet[0] == "layer1.0" and resnet[-1] == "layer4.2"
    dense = names("densenet121")
    assert len(dense) == 6 + 12 + 24 + 16 and dense[0] == "features.denseblock1.denselayer1"
    with pytest.raises(VspInputError, match="model 'vgg11' has no repeated blocks"):
        names("vgg11")
