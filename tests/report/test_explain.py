"""vsp.report.explain: ridge maps to property space, layer resolution, per-image top-k, figure, CLI."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest

from vsp.data.norms import FEATURE_CLASSES, Norms
from vsp.errors import VspInputError
from vsp.extract.features import ExtractionConfig, FeaturePlan, FeatureStore, LayerInfo, assemble_unit
from vsp.io.store import open_store
from vsp.report.explain import (
    ALPHAS,
    Explanation,
    LayerPrediction,
    PropertyMap,
    conv_layer_names,
    explain_images,
    figure_bytes,
    fit_ridge,
    image_features,
    load_or_fit,
    map_path,
    resolve_layers,
    select_alpha,
    training_data,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# ------------------------------------------------------------------------------------- a tiny real run
_RUNS: dict[str, tuple[Path, Path]] = {}


def make_tiny_run(root: Path) -> tuple[Path, Path]:
    """Demo world (6 concepts x 2 images) + resnet18 random-weight features of every conv: (store, norms)."""
    from vsp.data.images import build_manifest
    from vsp.data.synthetic import generate_world
    from vsp.extract.stage import run_extraction_local

    world = generate_world(root / "world", n_concepts=6, images_per_concept=2)
    store = root / "store"
    cfg = ExtractionConfig(models=("resnet18",), weights="random", seed=0, layers="all-conv", unit_size=4)
    run_extraction_local(open_store(store), build_manifest(world.images_root), cfg)
    return store, world.norms_path


def tiny_run_copy(tmp_path_factory: pytest.TempPathFactory, dest: Path) -> tuple[Path, Path]:
    """A private copy of the session's tiny run (extracted once per test session, ~5 s)."""
    if "run" not in _RUNS:
        _RUNS["run"] = make_tiny_run(tmp_path_factory.mktemp("tiny-run"))
    store, norms = _RUNS["run"]
    shutil.copytree(store.parent, dest, dirs_exist_ok=True)
    return dest / "store", dest / norms.relative_to(store.parent)


@pytest.fixture
def tiny_run(tmp_path_factory, tmp_path) -> tuple[Path, Path]:
    return tiny_run_copy(tmp_path_factory, tmp_path / "run")


def tiny_norms(path: Path):
    from vsp.data.norms import load_cslb

    return load_cslb(path, min_pf=5, min_concepts=2)  # 6 concepts: the default 5-concept filter keeps nothing


# ---------------------------------------------------------------------------------------------- ridge
def test_fit_ridge_recovers_a_planted_linear_map():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 12))
    W = rng.normal(size=(12, 7))
    b = rng.normal(size=7)
    coef, intercept = fit_ridge(X, X @ W + b, alpha=1e-9)
    np.testing.assert_allclose(coef, W, atol=1e-6)
    np.testing.assert_allclose(intercept, b, atol=1e-6)


def test_fit_ridge_equals_sklearn_with_more_channels_than_rows():
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(20, 50)), rng.normal(size=(20, 4))
    coef, intercept = fit_ridge(X, Y, alpha=3.0)
    ref = Ridge(alpha=3.0).fit(X, Y)
    np.testing.assert_allclose(coef, ref.coef_.T, atol=1e-8)
    np.testing.assert_allclose(intercept, ref.intercept_, atol=1e-8)


def test_fit_ridge_rejects_bad_input():
    with pytest.raises(VspInputError, match="same n"):
        fit_ridge(np.zeros((3, 2)), np.zeros((4, 1)))
    with pytest.raises(VspInputError, match="NaN"):
        fit_ridge(np.full((3, 2), np.nan), np.zeros((3, 1)))


def test_select_alpha_prefers_small_alpha_on_noise_free_data_and_is_grouped():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(60, 5))
    Y = X @ rng.normal(size=(5, 3)) + 4.0
    alpha, scores = select_alpha(X, Y, groups=np.repeat(np.arange(20), 3))
    assert alpha in ALPHAS and alpha <= 0.1
    assert set(scores) == set(ALPHAS)
    assert select_alpha(X[:6], Y[:6], groups=np.array([0, 0, 0, 1, 1, 1]))[1] == {}  # too few groups: no CV


# -------------------------------------------------------------------- planted map through the store path
def _planted_store(tmp_path: Path, n_concepts=30, per=3, C=6, P=8, seed=0):
    """A feature store with one layer whose per-image vectors are copies of a concept vector, and norms whose
    PF matrix is a planted linear map of the L2-normalised concept vectors."""
    rng = np.random.default_rng(seed)
    concepts = [f"c{i:02d}" for i in range(n_concepts)]
    base = rng.uniform(0.1, 2.0, size=(n_concepts, C))
    layer = LayerInfo(model="m", name="l", index=0, kind="conv", channels=C)
    plan = FeaturePlan(
        config=ExtractionConfig(models=("m",), weights="random", unit_size=n_concepts),
        concepts=concepts,
        images={c: [f"/x/{c}_{j}.png" for j in range(per)] for c in concepts},
        layers=[layer],
        weights_identity={"m": "random:0"},
    )
    st = open_store(tmp_path / "store")
    fs = FeatureStore(st)
    fs.create(plan)
    owner = np.repeat(np.arange(n_concepts), per)
    per_image = {layer.path: (base[owner] * rng.uniform(0.5, 2.0, size=(len(owner), 1))).astype(np.float32)}
    fs.write_unit(plan, assemble_unit(0, [layer], per_image, owner, n_concepts, per))
    W = rng.normal(size=(C, P)) * 10
    b = rng.uniform(5, 10, size=P)
    xn = base / np.linalg.norm(base, axis=1, keepdims=True)
    props = [f"prop {j}" for j in range(P)]
    norms = Norms(
        concepts=concepts,
        properties=props,
        binary=np.ones((n_concepts, P), np.uint8),
        pf=(xn @ W + b).astype(np.float32),
        feature_class=[FEATURE_CLASSES[j % 5] for j in range(P)],
        fine_grained=["is"] * P,
        source="planted",
    )
    return st, norms, W, b, base


@pytest.mark.parametrize("source", ["images", "concepts"])
def test_store_map_recovers_planted_map_and_top_k(tmp_path, source):
    st, norms, W, b, base = _planted_store(tmp_path)
    X, Y, groups = training_data(FeatureStore(st), norms, "m", "l", source)
    assert X.shape == ((90 if source == "images" else 30), 6) and len(np.unique(groups)) == 30
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-6)
    pmap, reused = load_or_fit(st, norms, "m", "l", train_on=source, alpha=1e-8)
    assert not reused and st.exists(map_path("m", "l"))
    np.testing.assert_allclose(pmap.coef, W, rtol=1e-3, atol=1e-2)
    np.testing.assert_allclose(pmap.intercept, b, rtol=1e-3, atol=1e-2)
    # a raw (unnormalised) vector of concept 7 predicts concept 7's planted PF vector, and its top-3
    pred = pmap.predict(base[7:8] * 3.0)[0]
    np.testing.assert_allclose(pred, norms.pf[7], rtol=1e-3, atol=1e-2)
    want = list(np.argsort(-norms.pf[7])[:3])
    top = pmap.top(pred, 3)
    assert [t[0] for t in top] == [norms.properties[j] for j in want]
    assert [t[2] for t in top] == [norms.feature_class[j] for j in want]
    # cached: the same identity reuses the file, another alpha refits it
    again, reused = load_or_fit(st, norms, "m", "l", train_on=source, alpha=1e-8)
    assert reused
    np.testing.assert_array_equal(again.coef, pmap.coef)
    assert not load_or_fit(st, norms, "m", "l", train_on=source, alpha=1.0)[1]


def test_property_map_round_trip():
    pm = PropertyMap(
        model="m",
        layer="l",
        source="images",
        alpha=0.5,
        coef=np.eye(3, dtype=np.float32),
        intercept=np.zeros(3, np.float32),
        properties=["a", "b", "c"],
        feature_class=["taxonomic"] * 3,
        fine_grained=["is"] * 3,
        n_train=9,
        n_concepts=3,
        identity={"k": 1},
        cv_scores={"0.5": 0.9},
    )
    back = PropertyMap.from_bytes(pm.to_bytes())
    assert back.header() == pm.header()
    np.testing.assert_array_equal(back.coef, pm.coef)


# ------------------------------------------------------------------------------------------------ layers
def _resnet34_stored():
    convs = conv_layer_names("resnet34")
    stored = [LayerInfo("resnet34", n, i, "conv", 64) for i, n in enumerate(convs)]  # an all-conv store
    stored.append(LayerInfo("resnet34", "penultimate", 36, "penultimate", 512))
    return convs, stored


def test_layer_numbers_are_zero_based_tap_indices():
    convs, stored = _resnet34_stored()
    assert len(convs) == 36 and convs[0] == "conv1" and convs[35] == "layer4.2.conv2"
    got = resolve_layers("3,15,27,35", "resnet34", stored)
    assert got == [
        ("layer1.1.conv1", "3 (layer1.1.conv1)"),
        ("layer2.3.conv2", "15 (layer2.3.conv2)"),
        ("layer3.5.conv1", "27 (layer3.5.conv1)"),
        ("layer4.2.conv2", "35 (layer4.2.conv2)"),  # the paper's 35 is ResNet34's last conv
    ]
    assert resolve_layers(None, "resnet34", stored) == got  # the paper's layers are the default for resnet34
    mixed = resolve_layers(["layer1.0.conv1", 0, "penultimate", "1"], "resnet34", stored)
    assert mixed == [
        ("layer1.0.conv1", "1 (layer1.0.conv1)"),
        ("conv1", "0 (conv1)"),
        ("penultimate", "36 (penultimate)"),
    ]
    with pytest.raises(VspInputError, match=r"layer 37: .*0-based.* 0 = conv1 \.\.\. 36 = penultimate"):
        resolve_layers("37", "resnet34", stored)
    with pytest.raises(VspInputError, match="no stored layer of resnet34 has tap index 3"):
        resolve_layers("3", "resnet34", stored[5:])
    with pytest.raises(VspInputError, match="not in the feature store"):
        resolve_layers("conv1", "resnet34", stored[5:])
    with pytest.raises(VspInputError, match="no layers of model"):
        resolve_layers("3", "alexnet", stored)


def test_layer_numbers_follow_the_stored_tap_index_not_the_conv_count():
    """A store extracted with a layer subset numbers its taps 0.. as its decode results do."""
    stored = [
        LayerInfo("resnet34", "layer1.0.conv1", 0, "conv", 64),
        LayerInfo("resnet34", "layer4.2.conv2", 1, "conv", 512),
        LayerInfo("resnet34", "penultimate", 2, "penultimate", 512),
    ]
    assert resolve_layers("1", "resnet34", stored) == [("layer4.2.conv2", "1 (layer4.2.conv2)")]
    # the paper's layers are not all stored: the default falls back to stored layers at the paper's depths
    assert [n for n, _ in resolve_layers(None, "resnet34", stored)] == ["layer1.0.conv1", "layer4.2.conv2"]


def test_default_layers_of_other_networks_follow_the_paper_depths():
    convs = conv_layer_names("alexnet")
    stored = [LayerInfo("alexnet", n, i, "conv", 64) for i, n in enumerate(convs)]
    assert [lab for _, lab in resolve_layers(None, "alexnet", stored)] == [
        "0 (features.0)",
        "2 (features.6)",
        "3 (features.8)",
        "4 (features.10)",
    ]


def test_figure_titles_name_the_module_beside_the_number():
    from matplotlib.text import Text

    from vsp.report.explain import explanation_figure

    pred = ["is red", "is a fruit"], [3.0, 2.0], ["visual perceptual", "taxonomic"], ["colour", "is"]
    expl = Explanation(
        image="gone.jpg",
        model="resnet34",
        weights="random:0",
        source="concepts",
        layers=[
            LayerPrediction("layer4.2.conv2", "35 (layer4.2.conv2)", *pred),
            LayerPrediction("layer1.0.conv2", "conv 3", *pred),  # recorded by an older vsp
        ],
    )
    titles = {t.get_text() for t in explanation_figure(expl).findobj(Text)}
    assert "(a) resnet34 layer 35 (layer4.2.conv2)" in titles
    assert "(b) resnet34 conv 3 (layer1.0.conv2)" in titles
    assert any("maps trained on the concept vectors" in t for t in titles)
    assert "  35 (layer4.2.conv2):" in expl.to_text() and "  conv 3 (layer1.0.conv2):" in expl.to_text()


# ---------------------------------------------------------------------------- the real tiny run end to end
def test_explain_images_on_a_tiny_run(tiny_run, tmp_path):
    store, norms_path = tiny_run
    st, norms = open_store(store), tiny_norms(norms_path)
    fs = FeatureStore(st)
    man = fs.manifest()
    concept = man["identity"]["concepts"][1]
    image = man["identity"]["images"][concept][0]

    # the explainer's forward pass reproduces the stored per-image vector of that image exactly
    feats = image_features(fs, "resnet18", ["layer2.0.conv1", "penultimate"], [image])
    stored, _ = fs.read_images("resnet18", "layer2.0.conv1")
    np.testing.assert_allclose(feats["layer2.0.conv1"][0], stored[1, 0], rtol=1e-4, atol=1e-5)

    (expl,) = explain_images(st, norms, [image], layers="1,layer2.0.conv1,penultimate", top=4)
    assert [lp.label for lp in expl.layers] == [
        "1 (layer1.0.conv1)",
        "5 (layer2.0.conv1)",
        "20 (penultimate)",
    ]
    assert expl.source == "concepts"  # the maps are trained on the concept vectors by default
    for lp in expl.layers:
        assert len(lp.properties) == 4 and lp.values == sorted(lp.values, reverse=True)
        assert set(lp.feature_class) <= set(FEATURE_CLASSES)
        # the listed top-k is the cached map's top-k of the same image
        pmap = PropertyMap.from_bytes(st.read_bytes(map_path("resnet18", lp.layer)))
        x = image_features(fs, "resnet18", [lp.layer], [image])[lp.layer]
        assert [t[0] for t in pmap.top(pmap.predict(x)[0], 4)] == lp.properties
    png = figure_bytes(expl)
    assert png.startswith(PNG_MAGIC) and len(png) > 10_000
    from PIL import Image

    w, h = Image.open(io.BytesIO(png)).size
    assert w > 800 and h > 300
    assert Explanation.from_json(expl.to_json()) == expl
    assert "1 (layer1.0.conv1):" in expl.to_text()


def test_explanation_figure_without_the_image_file(tmp_path):
    expl = Explanation(
        image=str(tmp_path / "gone.jpg"),
        model="resnet34",
        weights="random:0",
        source="images",
        layers=[
            LayerPrediction(
                "conv1",
                "conv 1",
                ["is red", "is a fruit"],
                [3.0, 2.0],
                ["visual perceptual", "taxonomic"],
                ["colour", "is"],
            )
        ],
    )
    out = tmp_path / "f.png"
    from vsp.report.explain import plot_explanation

    plot_explanation(expl, out)
    assert out.read_bytes().startswith(PNG_MAGIC)


def test_cli_explain_prints_top_properties_and_writes_the_figure(tiny_run, tmp_path):
    from typer.testing import CliRunner

    from vsp.cli import app

    store, norms_path = tiny_run
    image = sorted((norms_path.parent / "images").glob("*/*"))[0]
    out = tmp_path / "fig.png"
    args = [
        "explain",
        str(image),
        "--store",
        str(store),
        "--norms",
        str(norms_path),
        "--min-concepts",
        "2",
        "--layers",
        "2,penultimate",
        "--top",
        "3",
        "--out",
        str(out),
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "2 (layer1.0.conv2):" in res.output and "20 (penultimate):" in res.output
    assert res.output.count(" 3. ") == 2
    assert out.read_bytes().startswith(PNG_MAGIC) and out.stat().st_size > 10_000
    st = open_store(store)
    assert st.exists("explain/resnet18/layer1.0.conv2.npz") and st.exists("explain/resnet18/penultimate.npz")
    assert any(k.endswith(".png") for k in st.list("explain/examples"))
    mtime = (store / "explain/resnet18/penultimate.npz").stat().st_mtime_ns
    assert CliRunner().invoke(app, args).exit_code == 0
    assert (store / "explain/resnet18/penultimate.npz").stat().st_mtime_ns == mtime  # reused, not refitted

    bad = CliRunner().invoke(app, [*args[:-6], "--layers", "99"])
    assert bad.exit_code == 2 and "has tap index 99" in bad.output


def test_explanation_figure_renders_dollar_names_as_plain_text(tmp_path):
    """`$...$` in a property (or file) name is a dollar sign, not matplotlib mathtext."""
    from matplotlib.text import Text

    from vsp.report.explain import explanation_figure

    names = ["is $5$ dollars", "costs $x^$ or more", r"has $\foo$ in it"]
    expl = Explanation(
        image=str(tmp_path / "$gone$.jpg"),
        model="resnet34",
        weights="random:$0$",
        source="images",
        layers=[
            LayerPrediction(
                "conv1", "conv $1$", names, [3.0, 2.0, 1.0], ["visual perceptual"] * 3, ["colour"] * 3
            )
        ],
    )
    assert figure_bytes(expl).startswith(PNG_MAGIC)  # mathtext raised ValueError on the last two names
    texts = [t for t in explanation_figure(expl).findobj(Text) if "$" in t.get_text()]
    assert set(names) <= {t.get_text() for t in texts}
    assert all(not t.get_parse_math() and not t.get_usetex() for t in texts)


# ------------------------------------------------------------------------------ what the maps train on
def test_maps_train_on_the_concept_vectors_by_default(tmp_path):
    st, norms, W, b, base = _planted_store(tmp_path)
    pmap, reused = load_or_fit(st, norms, "m", "l", alpha=1e-8)
    assert not reused and pmap.source == "concepts" and pmap.n_train == pmap.n_concepts == 30
    assert pmap.identity["train_on"] == "concepts"
    stored = PropertyMap.from_bytes(st.read_bytes(map_path("m", "l")))
    assert stored.identity["train_on"] == "concepts" and stored.source == "concepts"
    # per-image training is an option; it is part of the stored map's identity, so switching refits
    per_image, reused = load_or_fit(st, norms, "m", "l", train_on="images", alpha=1e-8)
    assert not reused and per_image.source == "images" and per_image.n_train == 90
    assert PropertyMap.from_bytes(st.read_bytes(map_path("m", "l"))).identity["train_on"] == "images"
    assert not load_or_fit(st, norms, "m", "l", alpha=1e-8)[1]
    with pytest.raises(VspInputError, match="train_on must be one of concepts, images"):
        load_or_fit(st, norms, "m", "l", train_on="pixels")


def test_cli_explain_train_on(tiny_run, tmp_path):
    import json

    from typer.testing import CliRunner

    from vsp.cli import app

    store, norms_path = tiny_run
    image = sorted((norms_path.parent / "images").glob("*/*"))[0]
    args = ["explain", str(image), "--store", str(store), "--norms", str(norms_path), "--min-concepts", "2"]
    args += ["--layers", "penultimate", "--top", "2", "--out", str(tmp_path / "f.png"), "--json"]
    st = open_store(store)
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["source"] == "concepts"
    pmap = PropertyMap.from_bytes(st.read_bytes(map_path("resnet18", "penultimate")))
    assert pmap.identity["train_on"] == "concepts" and pmap.n_train == pmap.n_concepts
    res = CliRunner().invoke(app, [*args, "--train-on", "images"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["source"] == "images"
    pmap = PropertyMap.from_bytes(st.read_bytes(map_path("resnet18", "penultimate")))
    assert pmap.identity["train_on"] == "images" and pmap.n_train == 12 > pmap.n_concepts
    bad = CliRunner().invoke(app, [*args, "--train-on", "pixels"])
    assert bad.exit_code == 2 and "--train-on: must be one of concepts, images" in bad.output


def test_cli_explain_layer_35_of_resnet34_is_its_last_conv(tmp_path):
    """`vsp explain --layers 35` on ResNet34 explains layer4.2.conv2, which decode numbers 35 too."""
    import json

    from typer.testing import CliRunner

    from vsp.cli import app
    from vsp.data.images import build_manifest
    from vsp.data.synthetic import generate_world
    from vsp.extract.stage import run_extraction_local

    world = generate_world(tmp_path / "world", n_concepts=6, images_per_concept=1)
    store = tmp_path / "store"
    cfg = ExtractionConfig(models=("resnet34",), weights="random", seed=0, layers="all-conv", unit_size=6)
    run_extraction_local(open_store(store), build_manifest(world.images_root), cfg)
    index = {x.name: x.index for x in FeatureStore(open_store(store)).layers()}
    assert index["layer4.2.conv2"] == 35  # the layer_index its decode results carry
    image = sorted(world.images_root.glob("*/*"))[0]
    args = ["explain", str(image), "--store", str(store), "--norms", str(world.norms_path)]
    args += [
        "--min-concepts",
        "2",
        "--layers",
        "35",
        "--top",
        "2",
        "--out",
        str(tmp_path / "f.png"),
        "--json",
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    (layer,) = json.loads(res.stdout)["layers"]
    assert layer["layer"] == "layer4.2.conv2" and layer["label"] == "35 (layer4.2.conv2)"
