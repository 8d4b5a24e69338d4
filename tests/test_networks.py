from __future__ import annotations

import pytest
import torch
from torch import nn

from vsp.errors import VspInputError
from vsp.networks import (
    PAPER_MODELS,
    available_models,
    imagenet_weights,
    load_model,
    penultimate_tap,
    select_layers,
)

_CACHE: dict[str, nn.Module] = {}


def _model(name: str) -> nn.Module:
    if name not in _CACHE:
        _CACHE[name] = load_model(name, "random", seed=0)[0]
    return _CACHE[name]


@pytest.mark.parametrize(
    ("name", "all_conv", "paper"),
    [("alexnet", 5, 5), ("vgg16", 13, 13), ("resnet34", 36, 36), ("densenet169", 168, 86)],
)
def test_layer_counts(name, all_conv, paper):
    model = _model(name)
    convs = select_layers(model, name, "all-conv")
    assert len(convs) == all_conv
    assert all(t.kind == "conv" and t.model == name for t in convs)
    assert [t.index for t in convs] == list(range(all_conv))
    assert len(select_layers(model, name, "paper")) == paper


def test_all_conv_is_module_order_and_includes_downsample():
    model = _model("resnet34")
    taps = select_layers(model, "resnet34", "all-conv")
    conv_names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert [t.name for t in taps] == conv_names
    assert sum(".downsample.0" in t.name for t in taps) == 3
    assert taps[0].name == "conv1"


def test_densenet_paper_resolution():
    taps = select_layers(_model("densenet169"), "densenet169", "paper")
    assert taps[0].name == "features.conv0" and taps[0].kind == "conv"
    kinds = [t.kind for t in taps]
    assert kinds.count("block") == 6 + 12 + 32 + 32
    assert kinds.count("transition") == 3
    assert [t.name for t in taps if t.kind == "transition"] == [
        "features.transition1",
        "features.transition2",
        "features.transition3",
    ]
    assert taps[1].name == "features.denseblock1.denselayer1"
    assert taps[-1].name == "features.denseblock4.denselayer32"
    # transitions sit between their blocks
    names = [t.name for t in taps]
    assert names.index("features.transition1") == 1 + 6


def test_regex_and_explicit_selection():
    model = _model("resnet34")
    ds = select_layers(model, "resnet34", r"re:layer\d\.0\.downsample\.0")
    assert [t.name for t in ds] == [f"layer{i}.0.downsample.0" for i in (2, 3, 4)]
    l1 = select_layers(model, "resnet34", r"re:layer1\..*conv\d")
    assert len(l1) == 6
    # explicit names come back in module order, deduplicated; a comma string works the same way
    taps = select_layers(model, "resnet34", ["layer2.0.conv1", "conv1", "conv1", "layer1"])
    assert [t.name for t in taps] == ["conv1", "layer1", "layer2.0.conv1"]
    assert [t.kind for t in taps] == ["conv", "module", "conv"]
    assert [t.index for t in taps] == [0, 1, 2]
    assert [t.name for t in select_layers(model, "resnet34", "layer2.0.conv1, conv1")] == [
        "conv1",
        "layer2.0.conv1",
    ]


def test_unknown_layer_names_model_and_near_matches():
    model = _model("resnet34")
    with pytest.raises(VspInputError, match="resnet34") as err:
        select_layers(model, "resnet34", ["conv1", "layer1.0.conv3"])
    assert "layer1.0.conv1" in str(err.value) and "layer1.0.conv3" in str(err.value)
    with pytest.raises(VspInputError, match="matches no module of model 'resnet34'"):
        select_layers(model, "resnet34", "re:nothing.*here")
    with pytest.raises(VspInputError, match="bad layer regex"):
        select_layers(model, "resnet34", "re:(")


def test_unknown_model_name():
    with pytest.raises(VspInputError, match="resnet34"):
        load_model("resnet35")
    assert set(PAPER_MODELS) <= set(available_models())


@pytest.mark.parametrize(
    ("name", "module", "dim"),
    [
        ("alexnet", "classifier.6", 4096),
        ("vgg16", "classifier.6", 4096),
        ("resnet34", "fc", 512),
        ("densenet169", "classifier", 1664),
    ],
)
def test_penultimate_tap(name, module, dim):
    model = _model(name)
    tap = penultimate_tap(model, name)
    assert tap.kind == "penultimate" and tap.name == "penultimate" and tap.module == module
    assert dict(model.named_modules())[module].in_features == dim
    assert tap.index == len(select_layers(model, name, "all-conv"))


def test_other_torchvision_models_by_generic_rule():
    model, ident = load_model("resnet18", "random", seed=1)
    assert ident == "random:1"
    assert len(select_layers(model, "resnet18", "all-conv")) == 20
    assert penultimate_tap(model, "resnet18").module == "fc"
    sq, _ = load_model("squeezenet1_1")
    assert len(select_layers(sq, "squeezenet1_1", "paper")) == 26
    with pytest.raises(VspInputError, match="no nn.Linear"):
        penultimate_tap(sq, "squeezenet1_1")


def test_random_weights_are_seeded_and_leave_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a, ia = load_model("resnet18", "random", seed=4)
    after = torch.rand(3)
    assert torch.equal(before, after)  # global RNG stream not consumed
    b, _ = load_model("resnet18", "random", seed=4)
    c, ic = load_model("resnet18", "random", seed=5)
    assert ia == "random:4" and ic == "random:5"
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["conv1.weight"], sc["conv1.weight"])
    assert not a.training


def test_imagenet_identity_is_the_enum_name():
    # resolves the enum only; nothing is downloaded
    assert str(imagenet_weights("resnet34")) == "ResNet34_Weights.IMAGENET1K_V1"
    assert str(imagenet_weights("alexnet")) == "AlexNet_Weights.IMAGENET1K_V1"
