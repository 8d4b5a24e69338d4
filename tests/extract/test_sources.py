"""Model sources: specs and group names, one small model per family against its own manual forward."""

import re

import numpy as np
import pytest
import torch

from vsp.errors import VspInputError
from vsp.extract.hooks import MultiNetExtractor
from vsp.extract.sources import load_source, parse_source

timm = pytest.importorskip("timm", reason="the timm extra (pip install 'vsp[timm]') is not installed")
open_clip = pytest.importorskip(
    "open_clip", reason="the clip extra (pip install 'vsp[clip]') is not installed"
)
transformers = pytest.importorskip(
    "transformers", reason="the hf extra (pip install 'vsp[hf]') is not installed"
)

SAFE = re.compile(r"[A-Za-z0-9_.-]+")
HF_TYPES = ("vit", "dinov2", "clip_vision_model", "siglip_vision_model")


def small_hf(folder, model_type: str, **extra):
    """A tiny Hugging Face configuration of ``model_type`` written as ``config.json`` into ``folder``."""
    from transformers import AutoConfig

    cfg = AutoConfig.for_model(
        model_type, num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=2,
        image_size=64, patch_size=16, **extra,
    )  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    cfg.save_pretrained(folder)
    return folder


def _pooled(ex, x):
    return {m: {k: v.numpy() for k, v in t.items()} for m, t in ex.forward_tensors(x).items()}


def test_specs_and_store_safe_group_names(tmp_path):
    assert parse_source("resnet34").group == "resnet34" == parse_source("torchvision:resnet34").group
    specs = [
        "timm:vit_tiny_patch16_224", "timm:vit_base_patch16_224.augreg2_in21k_ft_in1k",
        "open_clip:ViT-B-32:laion2b_s34b_b79k", "open_clip:ViT-B-32", "hf:google/vit-base-patch16-224",
        "hf:google/vit-base-patch16-224-in21k", "hf:facebook/dinov2-small", "hf:a/b c?*", f"hf:{tmp_path}",
    ]  # fmt: skip
    groups = [parse_source(s).group for s in specs]
    assert len(set(groups)) == len(groups)
    assert all(SAFE.fullmatch(g) and len(g) < 140 for g in groups), groups
    assert parse_source("open_clip:ViT-B-32:openai").tag == "openai"
    assert groups[0] == "timm__vit_tiny_patch16_224"  # nothing replaced: no hash
    assert re.fullmatch(r"hf__google_vit-base-patch16-224-[0-9a-f]{8}", groups[4])
    with pytest.raises(VspInputError, match="unknown family 'keras'"):
        parse_source("keras:resnet")
    with pytest.raises(VspInputError, match="OpenCLIP weights need a tag"):
        load_source("open_clip:ViT-S-32", "pretrained")
    with pytest.raises(VspInputError, match="names an architecture, not a checkpoint"):
        load_source("hf:vit", "pretrained")


def test_timm_vit_blocks_and_embedding_equal_forward_intermediates():
    ex = MultiNetExtractor(["timm:vit_tiny_patch16_224"], layers="blocks", weights="random", seed=3)
    g = "timm__vit_tiny_patch16_224"
    assert [t.name for t in ex.taps[g]] == [f"blocks.{k}" for k in range(12)] + ["penultimate"]
    assert {t.layout for t in ex.taps[g][:-1]} == {"tokens"} and ex.taps[g][0].prefix == 1
    pre = ex.preprocessing[g]  # timm's data config: crop_pct 0.9 -> floor(224 / 0.9), bicubic, 0.5 stats
    assert (pre.resize, pre.crop, pre.interpolation, pre.mean) == (248, 224, "bicubic", (0.5, 0.5, 0.5))
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    got = _pooled(ex, x)[g]
    ref = load_source("timm:vit_tiny_patch16_224", "random", seed=3).model
    with torch.no_grad():
        _, inter = ref.forward_intermediates(x, norm=False, output_fmt="NLC", return_prefix_tokens=True)
        embedding = ref.forward_head(ref.forward_features(x), pre_logits=True)
    for k, (patches, _prefix) in enumerate(inter):
        np.testing.assert_allclose(got[f"blocks.{k}"], patches.amax(dim=1).numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got["penultimate"], embedding.numpy(), rtol=1e-6, atol=1e-6)
    cls = MultiNetExtractor(["timm:vit_tiny_patch16_224"], layers="blocks.11", weights="random", seed=3,
                            pooling="cls", penultimate=False)  # fmt: skip
    np.testing.assert_allclose(
        _pooled(cls, x)[g]["blocks.11"], inter[11][1][:, 0].numpy(), rtol=1e-6, atol=1e-6
    )


def test_timm_convnext_stages_equal_forward_intermediates_and_safetensors_weights(tmp_path):
    from safetensors.torch import save_file

    model = load_source("timm:convnext_atto", "random", seed=5).model
    path = tmp_path / "convnext.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    ex = MultiNetExtractor(["timm:convnext_atto"], layers="blocks", weights=str(path), pooling="mean")
    g = "timm__convnext_atto"
    assert ex.weights_identity[g].startswith("sha256:")
    assert {t.layout for t in ex.taps[g][:-1]} == {"nchw"}
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    got = _pooled(ex, x)[g]
    with torch.no_grad():
        _, stages = model.forward_intermediates(x)
    last = {s: max(k for k in got if k.startswith(f"stages.{s}.blocks.")) for s in range(4)}
    for s, feat in enumerate(stages):  # a stage's output is its last block's
        np.testing.assert_allclose(got[last[s]], feat.mean(dim=(2, 3)).numpy(), rtol=1e-5, atol=1e-6)


def test_open_clip_tower_blocks_embedding_and_projection():
    ex = MultiNetExtractor(["open_clip:ViT-S-32"], layers="blocks", weights="random", seed=2)
    g = "open_clip__ViT-S-32"
    names = [t.name for t in ex.taps[g]]
    assert names[-2:] == ["penultimate", "projection"] and names[0] == "transformer.resblocks.0"
    pre = ex.preprocessing[g]  # OpenCLIP's transform: shorter side 224 bicubic, centre crop, CLIP stats
    assert (pre.resize, pre.crop, pre.interpolation) == (224, 224, "bicubic") and pre.mean[0] == 0.48145466
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    got = _pooled(ex, x)[g]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        full = open_clip.create_model("ViT-S-32", pretrained=None).eval()
    with torch.no_grad():
        inter = full.visual.forward_intermediates(x, output_fmt="NLC")["image_intermediates"]
        embedding = full.encode_image(x)
        full.visual.proj = None
        before = full.visual(x)
    for k, patches in enumerate(inter):
        np.testing.assert_allclose(
            got[f"transformer.resblocks.{k}"], patches.amax(1).numpy(), rtol=1e-5, atol=1e-5
        )
    np.testing.assert_allclose(got["penultimate"], before.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["projection"], embedding.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model_type", HF_TYPES)
def test_hf_layers_equal_output_hidden_states(tmp_path, model_type):
    folder = small_hf(tmp_path / model_type, model_type)
    ex = MultiNetExtractor([f"hf:{folder}"], layers="blocks", weights="random", seed=4)
    (g,) = ex.taps
    prefix = 0 if model_type.startswith("siglip") else 1
    assert all(t.layout == "tokens" and t.prefix == prefix for t in ex.taps[g][:-1])
    assert len(ex.taps[g]) == 3  # two layers and the embedding
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    got = _pooled(ex, x)[g]
    ref = load_source(f"hf:{folder}", "random", seed=4).model
    with torch.no_grad():
        out = ref(x, output_hidden_states=True)
    layers = [t.name for t in ex.taps[g][:-1]]
    for k, name in enumerate(layers):
        hidden = out.hidden_states[k + 1]
        np.testing.assert_allclose(got[name], hidden[:, prefix:].amax(1).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["penultimate"], out.pooler_output.numpy(), rtol=1e-5, atol=1e-6)


def test_hf_folder_checkpoint_processor_and_registers(tmp_path):
    from transformers import AutoModel, ViTImageProcessor

    folder = small_hf(tmp_path / "vit", "vit")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        AutoModel.from_config(transformers.AutoConfig.from_pretrained(folder)).save_pretrained(folder)
    ViTImageProcessor(size={"height": 64, "width": 64}, resample=3).save_pretrained(folder)
    trained = MultiNetExtractor([f"hf:{folder}"], layers="blocks", weights="pretrained")
    random = MultiNetExtractor([f"hf:{folder}"], layers="blocks", weights="random", seed=11)
    (g,) = trained.taps
    assert trained.weights_identity[g].startswith("sha256:") and random.weights_identity[g] == "random:11"
    pre = trained.preprocessing[g]  # read from the folder's preprocessor_config.json
    assert (pre.resize, pre.crop, pre.interpolation, pre.mean) == ((64, 64), 0, "bicubic", (0.5, 0.5, 0.5))
    assert trained.sources[g]["preprocessing"]["interpolation"] == "bicubic"
    x = torch.randn(1, 3, 64, 64)
    a, b = _pooled(trained, x)[g], _pooled(random, x)[g]
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6)  # the same weights
    regs = small_hf(tmp_path / "reg", "dinov2_with_registers", num_register_tokens=4)
    ex = MultiNetExtractor([f"hf:{regs}"], layers="blocks", weights="random")
    assert {t.prefix for t in next(iter(ex.taps.values()))[:-1]} == {5}  # class token + 4 registers


def test_one_decode_feeds_each_distinct_preprocessing(tmp_path):
    from PIL import Image

    from vsp.data.images import decode_batch

    ex = MultiNetExtractor(["resnet18", "timm:convnext_atto", "timm:vit_tiny_patch16_224"], layers="blocks")
    keys = [p.key for p in ex.preprocessings]
    assert len(keys) == 3  # torchvision's, timm's 0.875 crop and timm's 0.9 crop
    path = tmp_path / "a.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(path)
    batch = decode_batch([str(path)], preprocessings=ex.preprocessings)
    assert set(batch.tensors) == set(keys) and batch.tensor is batch.tensors[keys[0]]
    plain = decode_batch([str(path)])
    torch.testing.assert_close(batch.tensors[keys[0]], plain.tensor, rtol=0, atol=0)  # torchvision unchanged
    assert not torch.equal(batch.tensors[keys[1]], batch.tensors[keys[2]])
    out = ex(batch.tensors)
    assert out["timm__convnext_atto"]["penultimate"].shape == (1, 320)
    with pytest.raises(VspInputError, match="no images preprocessed as"):
        ex({keys[0]: batch.tensor})


def real_photographs(root, concepts, per_concept: int = 2):
    """Crops of scikit-learn's two bundled photographs (china.jpg, flower.jpg) as JPEGs by concept."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images  # two real 427x640 photographs, shipped with scikit-learn
    for i, concept in enumerate(concepts):
        (root / concept).mkdir(parents=True, exist_ok=True)
        for j in range(per_concept):
            photo = photos[(i + j) % 2]
            top, left = (17 * i + 31 * j) % 60, (23 * i + 41 * j) % 140
            crop = photo[top : top + 360, left : left + 480]
            Image.fromarray(crop).save(root / concept / f"{j}.jpg", quality=90)
    return root


def test_cli_extracts_every_block_of_each_family_from_photographs_then_decode_and_meta(tmp_path):
    """The issue's done-when: timm, Hugging Face and OpenCLIP models, random weights, every block."""
    from typer.testing import CliRunner

    from vsp.cli import app
    from vsp.data.synthetic import generate_world
    from vsp.extract.features import FeatureStore
    from vsp.io.store import open_store

    world = generate_world(tmp_path / "w", n_concepts=16, images_per_concept=1, seed=0)
    photos = real_photographs(tmp_path / "photos", world.concepts)
    vit = small_hf(tmp_path / "hf-vit", "vit")
    store = str(tmp_path / "s")
    specs = f"timm:vit_tiny_patch16_224,timm:convnext_atto,hf:{vit},open_clip:ViT-S-32"
    runner = CliRunner()
    args = ["extract", "--images", str(photos), "--store", store, "--models", specs, "--weights", "random",
            "--layers", "blocks", "--no-ray", "--unit-size", "4"]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    fs = FeatureStore(open_store(store))
    layers = fs.layers()
    widths: dict[str, set[int]] = {}
    for x in layers:
        widths.setdefault(x.model, set()).add(x.channels)
        assert fs.read(x.model, x.name).shape == (16, x.channels)
    count = {m: sum(x.model == m for x in layers) for m in widths}
    hf = next(m for m in count if m.startswith("hf__"))
    assert count == {
        "timm__vit_tiny_patch16_224": 13,
        "timm__convnext_atto": 13,
        hf: 3,
        "open_clip__ViT-S-32": 14,
    }  # fmt: skip  (blocks, penultimate, CLIP projection)
    assert widths["timm__vit_tiny_patch16_224"] == {192} and widths["timm__convnext_atto"] == {
        40,
        80,
        160,
        320,
    }
    assert widths["open_clip__ViT-S-32"] == {384}  # ViT-S-32: tokens and its projection both 384 wide
    ident = fs.manifest()["identity"]
    assert set(ident["sources"]) == set(count)
    assert ident["sources"]["timm__convnext_atto"]["preprocessing"]["resize"] == 256
    assert {
        x.layout for x in layers if x.model == "timm__vit_tiny_patch16_224" and x.name != "penultimate"
    } == {"tokens"}
    dec = runner.invoke(app, ["decode", "--store", store, "--norms", str(world.norms_path), "--no-ray"])
    assert dec.exit_code == 0, dec.output
    meta = runner.invoke(
        app, ["meta", "--store", store, "--norms", str(world.norms_path), "--text", "open_clip:ViT-S-32"]
    )
    assert meta.exit_code == 0, meta.output
    built = set(open_store(store).list("meta/embeddings"))
    for name in ("timm__convnext_atto/svd", "hf__hf-vit", "open_clip__ViT-S-32/1ton", "text",
                 "open_clip__ViT-S-32/penultimate+text"):  # fmt: skip
        assert any(name in k for k in built), (name, sorted(built)[:30])
    text = open_store(store).read_json("meta/manifest.json")["identity"]["text"]
    assert text["source"] == "open_clip:ViT-S-32" and text["dim"] == 384 and text["missing"] == []  # covered


def test_a_missing_extra_is_named_and_a_relative_hf_folder_made_absolute(tmp_path, monkeypatch):
    import sys

    from vsp.config import load_run_config
    from vsp.extract.sources import require

    monkeypatch.setitem(sys.modules, "open_clip", None)  # import fails as if the extra were absent
    with pytest.raises(VspInputError, match=r"pip install 'vsp\[clip\]'"):
        require("open_clip")
    small_hf(tmp_path / "models" / "tiny", "vit")
    run = tmp_path / "run.yaml"
    run.write_text(
        "store: s\nimages: i\nstages: [extract]\nextract:\n  models: [resnet18, 'hf:models/tiny', 'hf:vit']\n"
    )
    models = load_run_config(run).settings("extract").models
    assert models == ("resnet18", f"hf:{(tmp_path / 'models' / 'tiny').resolve()}", "hf:vit")


def test_text_towers_encode_each_word_as_the_checkpoint_does(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPConfig, CLIPModel, PreTrainedTokenizerFast

    from vsp.data.text import load_text_vectors

    words = ["apple", "ice_cream", "zebra"]
    got = load_text_vectors("open_clip:ViT-S-32", vocab=words)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        full = open_clip.create_model("ViT-S-32", pretrained=None).eval()
    with torch.no_grad():
        ref = full.encode_text(open_clip.get_tokenizer("ViT-S-32")(["apple", "ice cream", "zebra"]))
    assert got.words == words
    np.testing.assert_allclose(got.matrix, ref.numpy(), rtol=1e-5, atol=1e-6)

    folder = tmp_path / "clip"  # a tiny CLIP checkpoint with a word-level tokenizer, all offline
    vocab = {"[PAD]": 0, "[UNK]": 1, "[EOS]": 2, "apple": 3, "ice": 4, "cream": 5, "zebra": 6}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(
        folder
    )
    small = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2}
    cfg = CLIPConfig(
        text_config={**small, "vocab_size": len(vocab), "max_position_embeddings": 16, "eos_token_id": 2},
        vision_config={**small, "image_size": 32, "patch_size": 16}, projection_dim=16,
    )  # fmt: skip
    CLIPModel(cfg).save_pretrained(folder)
    hf = load_text_vectors(f"hf:{folder}", vocab=words)
    assert hf.matrix.shape == (3, 16) and np.isfinite(hf.matrix).all()
    model = CLIPModel.from_pretrained(folder).eval()
    with torch.no_grad():
        one = model.get_text_features(input_ids=torch.tensor([[3]]))
    one = one if isinstance(one, torch.Tensor) else one.pooler_output
    np.testing.assert_allclose(hf.matrix[0], one[0].numpy(), rtol=1e-5, atol=1e-6)  # "apple" alone
