from __future__ import annotations

import pytest
import torch
from torch import nn

from vsp.errors import VspInputError
from vsp.extract.networks import (
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


# --- the paper's layers are the default -------------------------------------------------------------------
@pytest.mark.parametrize("name", ["alexnet", "vgg16", "resnet34"])
def test_paper_selection_is_all_conv_for_alexnet_vgg_resnet(name):
    model = _model(name)
    assert select_layers(model, name, "paper") == select_layers(model, name, "all-conv")


def test_paper_is_the_default_layer_selection_everywhere():
    import inspect

    from vsp.cli.extract import extract
    from vsp.config import RunConfig
    from vsp.extract.features import ExtractionConfig
    from vsp.extract.hooks import MultiNetExtractor
    from vsp.extract.networks import DEFAULT_LAYERS

    assert DEFAULT_LAYERS == "paper"
    assert ExtractionConfig().layers == "paper"
    assert RunConfig.from_dict({"store": "/tmp/s", "stages": ["meta"]}).extract.layers == "paper"
    cfg = RunConfig.from_dict({"store": "/tmp/s", "images": "/tmp/i", "stages": ["extract"]})
    assert cfg.extraction_config().layers == "paper"
    assert inspect.signature(MultiNetExtractor).parameters["layers"].default == "paper"
    assert inspect.signature(extract).parameters["layers"].default == "paper"
    # the drift another issue fixes: left as it is, and no new drift added (activation agrees everywhere)
    assert ExtractionConfig().activation == cfg.extract.activation == "conv"
    assert inspect.signature(extract).parameters["activation"].default == "conv"


def test_demo_extracts_the_paper_layers(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import jobs.runner
    from vsp.cli import app

    seen = {}

    class Stop(Exception):
        pass

    def fake_run_pipeline(config, *args, **kwargs):
        seen["config"] = config
        raise Stop

    monkeypatch.setattr(jobs.runner, "run_pipeline", fake_run_pipeline)
    out = tmp_path / "d"
    res = CliRunner().invoke(
        app, ["demo", "--out", str(out), "--concepts", "12", "--images-per-concept", "1"]
    )
    assert "config" in seen, res.output  # the stub stopped the demo where it runs its run file
    assert seen["config"].source == str(out / "run.yaml")
    extract = seen["config"].settings("extract")
    assert extract.layers == "paper" and extract.activation == "conv"


def _manifest(layers, models=("densenet169",), kinds=None, activation=None):
    config = {"weights": "imagenet", "pooling": "max", "models": list(models), "layers": layers}
    if activation:
        config["activation"] = activation
    stored = [
        {"model": m, "name": f"l{i}", "index": i, "kind": k, "channels": 8}
        for m in models
        for i, k in enumerate(kinds or ["conv", "conv", "penultimate"])
    ]
    return {
        "identity": {
            "config": config,
            "weights_identity": {m: f"{m}_Weights.IMAGENET1K_V1" for m in models},
            "layers": stored,
        }
    }


def test_report_setup_check_knows_the_paper_layer_selection():
    from vsp.report.build import paper_setup

    kinds = ["conv", "block", "transition", "penultimate"]
    ok = paper_setup(_manifest("paper", kinds=kinds), (638, 390), 638)
    assert ok.matches and ok.facts["layers"] == "paper"
    dense = paper_setup(_manifest("all-conv"), (638, 390), 638)
    assert not dense.matches
    assert "'all-conv' (densenet169: 2 convs)" in dense.why_not() and "--layers paper" in dense.why_not()
    # all-conv is the paper's selection for the other three networks
    three = ("alexnet", "vgg16", "resnet34")
    assert paper_setup(_manifest("all-conv", models=three), (638, 390), 638).matches
    assert paper_setup(_manifest("paper", models=three), (638, 390), 638).matches
    picked = paper_setup(_manifest(["conv1", "layer4.2.conv2"], models=("resnet34",)), (638, 390), 638)
    assert not picked.matches and "layer selection is ['conv1', 'layer4.2.conv2']" in picked.why_not()
    regex = paper_setup(_manifest("re:.*conv2", models=("resnet34",)), (638, 390), 638)
    assert not regex.matches and "'re:.*conv2'" in regex.why_not()
    # the paper does not say where it reads a filter's activity: recorded, not held against a run
    relu = paper_setup(_manifest("paper", activation="relu"), (638, 390), 638)
    assert relu.matches and relu.facts["activation"] == "relu"


# --- activation points: where each tap reads --------------------------------------------------------------
def test_activation_taps_resnet_bn_follows_each_conv():
    from vsp.extract.networks import activation_taps

    model = _model("resnet34")
    taps = select_layers(model, "resnet34", "paper")
    assert activation_taps(model, "resnet34", taps, "conv") == taps
    bn = {t.name: t for t in activation_taps(model, "resnet34", taps, "bn")}
    assert len(bn) == 36 and all(t.activation == "bn" and t.module == t.bn for t in bn.values())
    assert bn["conv1"].bn == "bn1" and bn["layer1.0.conv2"].bn == "layer1.0.bn2"
    assert bn["layer2.0.downsample.0"].bn == "layer2.0.downsample.1"
    assert all(t.channels is None for t in bn.values())
    relu = activation_taps(model, "resnet34", taps, "relu")
    assert [(t.module, t.activation) for t in relu] == [(t.bn, "relu") for t in bn.values()]


def test_activation_taps_alexnet_vgg_have_no_bn():
    from vsp.extract.networks import activation_taps

    for name in ("alexnet", "vgg16"):
        model = _model(name)
        taps = select_layers(model, name, "paper") + [penultimate_tap(model, name)]
        bn = activation_taps(model, name, taps, "bn")
        assert [t.module for t in bn] == [t.module for t in taps]  # hooks stay on the convs
        assert [t.activation for t in bn[:-1]] == ["conv"] * (len(taps) - 1)  # bn == conv, recorded
        assert bn[-1].activation == "classifier-input" and all(not t.bn for t in bn)
        assert {t.activation for t in activation_taps(model, name, taps, "relu")[:-1]} == {"relu"}


def test_activation_taps_densenet_paper_taps_read_the_first_consumer_bn():
    from vsp.extract.networks import activation_taps

    model = _model("densenet169")
    taps = {t.name: t for t in activation_taps(model, "d", select_layers(model, "d", "paper"), "bn")}
    assert len(taps) == 86 and all(t.activation == "bn" for t in taps.values())
    assert taps["features.conv0"].bn_point == "features.norm0"
    b = "features.denseblock"
    assert taps[f"{b}1.denselayer1"].bn_point == f"{b}1.denselayer2.norm1[64:96]"
    assert taps[f"{b}1.denselayer6"].bn_point == "features.transition1.norm[224:256]"
    assert taps["features.transition1"].bn_point == f"{b}2.denselayer1.norm1[0:128]"
    assert taps[f"{b}3.denselayer7"].bn_point == f"{b}3.denselayer8.norm1[448:480]"
    assert taps["features.transition3"].bn_point == f"{b}4.denselayer1.norm1[0:640]"
    assert taps[f"{b}4.denselayer32"].bn_point == "features.norm5[1632:1664]"
    # all-conv: conv1 -> norm2, conv2 = the dense layer's output, a transition's conv: none (a pool follows)
    sel = [f"{b}2.denselayer3.conv1", f"{b}2.denselayer3.conv2", "features.transition2.conv"]
    c1, c2, tc = activation_taps(model, "d", select_layers(model, "d", sel), "bn")
    assert c1.bn_point == f"{b}2.denselayer3.norm2" and c1.activation == "bn"
    assert c2.bn_point == f"{b}2.denselayer4.norm1[192:224]" and c2.activation == "bn"
    assert tc.bn == "" and tc.activation == "conv" and tc.module == "features.transition2.conv"


def test_activation_taps_refuse_module_taps_and_unknown_points():
    from vsp.extract.networks import activation_taps

    model = _model("resnet34")
    taps = select_layers(model, "resnet34", ["conv1", "layer1"])
    with pytest.raises(VspInputError, match=r"module tap 'layer1' of model 'resnet34'"):
        activation_taps(model, "resnet34", taps, "relu")
    assert activation_taps(model, "resnet34", taps, "conv") == taps  # conv: any module, as before
    with pytest.raises(VspInputError, match="conv, bn, relu"):
        activation_taps(model, "resnet34", taps, "post")
