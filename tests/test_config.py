import json
from pathlib import Path

import pytest

from vsp.config import ENV_VAR, RunConfig, load_from_env, load_run_config
from vsp.errors import ConfigMismatchError, VspInputError
from vsp.io.store import open_store
from vsp.runrecord import RUN_JSON, RunRecord, format_progress, git_commit, read_run, store_progress

YAML = """
images: photos
store: s3://bucket/runs/r1
norms: {path: norms.dat, min_concepts: 3}
stages: [decode, extract]
extract:
  models: [alexnet, resnet34]
  layers: paper
  weights: random
  seed: 3
  pooling: mean
  unit_size: 8
  batch_size: 4
decode:
  folds: 3
  seed: 1
  C: 0.5
"""


def write(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_yaml_is_read_resolved_and_ordered(tmp_path):
    cfg = load_run_config(write(tmp_path, YAML))
    assert cfg.images == str(tmp_path / "photos")  # relative to the configuration's folder
    assert cfg.store == "s3://bucket/runs/r1"  # URIs untouched
    assert cfg.norms.path == str(tmp_path / "norms.dat") and cfg.norms.min_concepts == 3
    assert cfg.stages == ("extract", "decode")  # pipeline order, whatever the file says
    assert cfg.extract.models == ("alexnet", "resnet34") and cfg.extract.layers == "paper"
    assert cfg.extract.weights == "random" and cfg.extract.pooling == "mean" and cfg.extract.batch_size == 4
    assert (cfg.decode.folds, cfg.decode.seed, cfg.decode.C) == (3, 1, 0.5)
    ec = cfg.extraction_config()
    assert (ec.models, ec.seed, ec.unit_size, ec.pooling) == (("alexnet", "resnet34"), 3, 8, "mean")
    dc = cfg.decode_config()
    assert (dc.folds, dc.seed, dc.C, dc.models) == (3, 1, 0.5, None)


def test_toml_and_json_give_the_same_configuration(tmp_path):
    toml = """
images = "photos"
store = "s3://bucket/runs/r1"
stages = ["extract", "decode"]
[norms]
path = "norms.dat"
min_concepts = 3
[extract]
models = ["alexnet", "resnet34"]
layers = "paper"
weights = "random"
seed = 3
pooling = "mean"
unit_size = 8
batch_size = 4
[decode]
folds = 3
seed = 1
C = 0.5
"""
    a = load_run_config(write(tmp_path, YAML))
    b = load_run_config(write(tmp_path, toml, "run.toml"))
    c = load_run_config(write(tmp_path, json.dumps(a.to_dict()), "run.json"))
    assert a.to_dict() == b.to_dict() == c.to_dict()


def test_defaults_and_layer_lists(tmp_path):
    cfg = RunConfig.from_dict(
        {
            "images": "/data/img",
            "store": "/data/out",
            "stages": "extract",
            "extract": {"layers": "features.0, features.3"},
        }
    )
    assert cfg.stages == ("extract",) and cfg.norms is None
    assert cfg.extract.layers == ("features.0", "features.3")
    assert (
        cfg.extract.models == ("alexnet", "vgg16", "resnet34", "densenet169")
        and cfg.extract.weights == "imagenet"
    )
    assert (
        RunConfig.from_dict(
            {"images": "x", "store": "y", "stages": ["extract"], "extract": {"layers": "re:conv"}}
        ).extract.layers
        == "re:conv"
    )


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"extract": {"unit_size": 0}}, "extract.unit_size: must be an integer >= 1, got 0"),
        ({"extract": {"unit_sise": 4}}, "extract.unit_sise: unknown key"),
        ({"extract": {"pooling": "sum"}}, "extract.pooling: must be one of max, mean"),
        ({"extract": {"seed": "1"}}, "extract.seed: must be an integer"),
        ({"extract": {"models": 3}}, "extract.models: must be a list of names"),
        ({"extract": {"batch_size": True}}, "extract.batch_size: must be an integer"),
        ({"decode": {"C": 0}}, "decode.C: must be > 0"),
        ({"decode": {"folds": 1}}, "decode.folds: must be an integer >= 2"),
        ({"decode": {"dtype": "float16"}}, "decode.dtype: must be one of float32, float64"),
        ({"stages": ["extract", "train"]}, "stages: unknown stage 'train'"),
        ({"storage": "x"}, "storage: unknown key"),
        ({"norms": {"path": "n.dat", "min_pf": "high"}}, "norms.min_pf: must be a number"),
        ({"images": None}, "images: required when the extract stage runs"),
        ({"norms": None}, "norms: required when the decode stage runs"),
        ({"store": None}, "store: required"),
        ({"stages": ["map"], "norms": None}, "norms: required when the map stage runs"),
        ({"meta": {"kinds": ["pca"]}}, "meta.kinds: unknown kind 'pca'"),
        ({"meta": {"dim": 0}}, "meta.dim: must be an integer >= 1, got 0"),
        ({"meta": {"onetoN_epochs": "many"}}, "meta.onetoN_epochs: must be an integer"),
        ({"meta": {"multimodal": "yes"}}, "meta.multimodal: must be true or false"),
        ({"meta": {"glove": True}}, "meta.glove: unknown key"),
        ({"map": {"mappers": "knn,svm"}}, "map.mappers: unknown mapper 'svm'"),
        ({"map": {"folds": 1}}, "map.folds: must be an integer >= 2, got 1"),
        ({"map": {"repeats": 0}}, "map.repeats: must be an integer >= 1, got 0"),
        ({"map": {"mlp_lr": [0.001, "fast"]}}, "map.mlp_lr: must be a non-empty list of numbers"),
        ({"map": {"mlp_epochs": [0]}}, "map.mlp_epochs: must be integers >= 1"),
        ({"map": {"candidates": "train"}}, "map.candidates: must be one of all, test"),
        ({"similarity": {"pairs": 3}}, "similarity.pairs: a path, a list of paths or a mapping"),
        ({"similarity": {"men": ""}}, "similarity.men: must be a non-empty string"),
        ({"report": {"out": "s3://b/r.html"}}, "report.out: must be a local path"),
        ({"report": {"out": "report.pdf"}}, "report.out: must name an .html file"),
        ({"report": {"explain_images": -1}}, "report.explain_images: must be an integer >= 0"),
    ],
)
def test_validation_errors_name_the_key(tmp_path, patch, message):
    base = {"images": "photos", "store": "out", "norms": "norms.dat", "extract": {}, "decode": {}}
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        elif value is None:
            base.pop(key)
        else:
            base[key] = value
    path = write(tmp_path, json.dumps(base), "bad.json")
    with pytest.raises(VspInputError) as err:
        load_run_config(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)  # and the file


def test_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "store: out\nextract:\n  models: [alexnet\n  seed: 1\n")
    with pytest.raises(VspInputError, match=r"run\.yaml line \d+, column \d+: not valid YAML"):
        load_run_config(path)
    with pytest.raises(VspInputError, match="configuration file not found"):
        load_run_config(tmp_path / "missing.yaml")


def test_identity_ignores_tuning_and_separates_stages(tmp_path):
    base = load_run_config(write(tmp_path, YAML))
    tuned = RunConfig.from_dict(
        base.to_dict() | {"extract": base.to_dict()["extract"] | {"batch_size": 64, "actors": 3}}
    )
    assert tuned.identity() == base.identity()
    reseeded = RunConfig.from_dict(base.to_dict() | {"extract": base.to_dict()["extract"] | {"seed": 4}})
    assert reseeded.stage_identity("extract") != base.stage_identity("extract")
    # decode does not read extract.*
    assert reseeded.stage_identity("decode") == base.stage_identity("decode")
    assert base.with_stages(["decode"]).identity().keys() == {"decode"}


def test_later_stages_defaults_and_sections(tmp_path):
    minimal = RunConfig.from_dict({"images": "i", "store": str(tmp_path / "st"), "norms": "n.dat"})
    assert minimal.stages == (
        "extract",
        "decode",
        "meta",
        "map",
        "similarity",
        "report",
    )  # the whole pipeline
    assert minimal.meta.text is None and minimal.meta.kinds == ("penultimate", "svd", "1ton")
    assert (minimal.map.mappers, minimal.map.repeats, minimal.map.folds) == (("knn", "ridge", "mlp"), 5, 10)
    assert minimal.report.out == str(tmp_path / "st" / "report.html")  # beside the results on a local store
    s3 = RunConfig.from_dict({"images": "i", "store": "s3://b/r", "norms": "n.dat"}, base_dir=tmp_path)
    assert s3.report.out == str(tmp_path / "report.html")  # a local file next to the configuration
    with pytest.raises(VspInputError, match="norms: required when the decode stage runs"):
        RunConfig.from_dict({"images": "i", "store": "s"})
    no_norms = RunConfig.from_dict({"store": "s", "stages": ["meta", "similarity", "report"]})
    assert no_norms.stages == ("meta", "similarity", "report")

    text = (
        YAML
        + """meta:
  models: alexnet
  kinds: [penultimate, svd]
  dim: 16
  k: 8
  text: vectors.txt
  onetoN_epochs: 50
  threads: 2
map:
  mappers: knn,ridge
  repeats: 1
  folds: 3
  mlp_epochs: 20
  mlp_lr: [0.001, 0.01]
  mlp_wd: "0,0.01"
similarity:
  pairs: [extra/demo.txt]
report:
  out: out/r.html
  explain_images: 0
"""
    )
    cfg = load_run_config(write(tmp_path, text))
    mc = cfg.meta_config()
    assert (mc.models, mc.kinds, mc.dim, mc.k, mc.onetoN_epochs) == (
        ("alexnet",),
        ("penultimate", "svd"),
        16,
        8,
        50,
    )
    assert mc.text == str(tmp_path / "vectors.txt")
    assert (
        RunConfig.from_dict({"store": "s", "stages": ["meta"], "meta": {"text": "GloVe"}}).meta.text
        == "glove"
    )
    mp = cfg.mapping_config()
    assert (mp.mappers, mp.repeats, mp.folds, mp.mlp_epochs) == (("knn", "ridge"), 1, 3, (20,))
    assert mp.mlp_lr == (0.001, 0.01) and mp.mlp_weight_decay == (0.0, 0.01)
    assert cfg.similarity.benchmarks() == {"demo": str(tmp_path / "extra" / "demo.txt")}
    assert cfg.report.out == str(tmp_path / "out" / "r.html") and cfg.report.explain_images == 0
    assert RunConfig.from_dict(cfg.to_dict()) == RunConfig.from_dict(cfg.to_dict(), source="")  # round trip
    assert RunConfig.from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()


def test_similarity_defaults_to_the_shared_data(tmp_path, monkeypatch):
    monkeypatch.setenv("VSP_SHARED_DATA", str(tmp_path / "empty"))
    cfg = RunConfig.from_dict({"store": "s", "stages": ["similarity"]})
    with pytest.raises(VspInputError, match="similarity.men / similarity.simlex / similarity.pairs"):
        cfg.similarity.benchmarks()


def test_later_stages_identities_leave_out_tuning(tmp_path):
    base = RunConfig.from_dict({"images": "i", "store": "s", "norms": "n.dat"})
    d = base.to_dict()

    def changed(section: str, **kv) -> RunConfig:
        return RunConfig.from_dict(d | {section: d[section] | kv})

    assert changed("meta", threads=4).identity() == base.identity()
    assert changed("report", device="cuda", out="elsewhere.html").identity() == base.identity()
    assert (
        changed("map", mappers=["knn"], embeddings=["alexnet/*"]).identity() == base.identity()
    )  # selection
    assert changed("meta", dim=10).stage_identity("meta") != base.stage_identity("meta")
    assert changed("meta", dim=10).stage_identity("map") == base.stage_identity("map")
    assert changed("map", folds=5).stage_identity("map") != base.stage_identity("map")
    assert changed("map", folds=5).stage_identity("meta") == base.stage_identity("meta")
    assert changed("similarity", men="m.txt").stage_identity("similarity") != base.stage_identity(
        "similarity"
    )
    assert base.stage_identity("report") == {}  # rebuilt on every run: another report never conflicts
    assert "extract" not in base.stage_identity("map") and "decode" not in base.stage_identity("meta")


def test_env_round_trip(monkeypatch, tmp_path):
    cfg = load_run_config(write(tmp_path, YAML))
    monkeypatch.setenv(ENV_VAR, json.dumps(cfg.to_dict()))
    assert load_from_env().to_dict() == cfg.to_dict()
    monkeypatch.delenv(ENV_VAR)
    with pytest.raises(VspInputError, match=ENV_VAR):
        load_from_env()


# --- run.json ---------------------------------------------------------------------------------------------


def small_config(tmp_path: Path, **extract) -> RunConfig:
    return RunConfig.from_dict(
        {"images": str(tmp_path / "img"), "store": str(tmp_path / "store"), "stages": ["extract"],
         "extract": {"models": ["alexnet"], "weights": "random", **extract}}
    )  # fmt: skip


def test_run_record_writes_manifest_and_attempts(tmp_path):
    store = open_store(tmp_path / "store")
    cfg = small_config(tmp_path)
    rec = RunRecord.begin(store, cfg)
    rec.stage_started("extract")
    rec.stage_finished("extract", 1.5, {"units_run": 2, "units_skipped": 0})
    rec.set_weights_identity({"alexnet": "random:0"})
    rec.finish()
    doc = read_run(store)
    assert doc["status"] == "complete" and doc["finished"]
    assert doc["config"] == cfg.to_dict() and doc["identity"] == cfg.identity()
    assert {"python", "vsp", "torch", "ray", "zarr"} <= set(doc["versions"])
    assert doc["weights_identity"] == {"alexnet": "random:0"}
    assert doc["stages"]["extract"]["status"] == "done" and doc["stages"]["extract"]["units_run"] == 2
    assert "meta" not in doc["stages"]
    assert doc["attempts"][0]["stage_counts"]["extract"]["seconds"] == 1.5
    RunRecord.begin(store, cfg).finish(error="RuntimeError: boom")
    doc = read_run(store)
    assert [a["status"] for a in doc["attempts"]] == ["complete", "failed"]
    assert doc["error"] == "RuntimeError: boom"
    assert "AWS_SECRET" not in json.dumps(doc)


def test_other_configuration_is_refused_once_results_exist(tmp_path):
    from vsp.extract.features import MANIFEST

    store = open_store(tmp_path / "store")
    failed = RunRecord.begin(store, small_config(tmp_path))
    failed.stage_started("extract")
    failed.stage_failed("extract", "VspInputError: bad norms")
    failed.finish(error="VspInputError: bad norms")
    # nothing was written by the failed run: a corrected configuration may take the prefix
    rec = RunRecord.begin(store, small_config(tmp_path, seed=1))
    store.write_json(MANIFEST, {"identity": {}, "units": [[0, 1]]})  # the stage has results now
    rec.stage_finished("extract", 0.1, {})
    rec.finish()
    assert read_run(store)["identity"]["extract"]["extract"]["seed"] == 1
    before = store.read_bytes(RUN_JSON)
    with pytest.raises(ConfigMismatchError) as err:
        RunRecord.begin(store, small_config(tmp_path, seed=2, pooling="mean"))
    msg = str(err.value)
    assert "run.json holds a different run configuration" in msg
    assert "(differs in: extract.pooling, extract.seed)" in msg and "new store prefix" in msg
    assert store.read_bytes(RUN_JSON) == before  # refused before writing anything
    RunRecord.begin(store, small_config(tmp_path, seed=1, batch_size=2)).finish()  # tuning is not identity


def test_git_commit_from_env_or_checkout(monkeypatch, tmp_path):
    monkeypatch.setenv("VSP_GIT_COMMIT", "abc123")
    assert git_commit() == "abc123"
    monkeypatch.delenv("VSP_GIT_COMMIT")
    assert git_commit(tmp_path) is None  # not a checkout
    repo = Path(__file__).resolve().parents[1]
    if (repo / ".git").exists():
        c = git_commit(repo)
        assert c and len(c.split("-")[0]) == 40


def test_progress_of_an_empty_prefix(tmp_path):
    prog = store_progress(open_store(tmp_path / "nothing"))
    assert prog["run"] is None and prog["stages"] == {} and not prog["complete"]
    assert "no run.json" in format_progress(prog)


# ------------------------------------------------------------------------------- hostile or broken inputs


def test_duplicate_yaml_keys_name_the_file_key_and_lines(tmp_path):
    text = "store: out\nimages: photos\nnorms: n.dat\nextract:\n  seed: 1\n  unit_size: 4\n  seed: 2\n"
    path = write(tmp_path, text)
    with pytest.raises(VspInputError, match=r"run\.yaml line 7: key 'seed' appears twice .*line 5") as err:
        load_run_config(path)
    assert "\n" not in str(err.value)
    path = write(tmp_path, "store: a\nimages: photos\nnorms: n.dat\nstore: b\n")
    with pytest.raises(VspInputError, match=r"run\.yaml line 4: key 'store' appears twice .*line 1"):
        load_run_config(path)
    # a YAML merge key may be overridden: that is not a duplicate
    path = write(tmp_path, "store: a\nimages: p\nnorms: n.dat\ndecode: {<<: {folds: 3, C: 2}, folds: 4}\n")
    decode = load_run_config(path).decode
    assert (decode.folds, decode.C) == (4, 2.0)


def test_duplicate_json_keys_name_the_file_and_key(tmp_path):
    path = write(tmp_path, '{"store": "a", "images": "p", "norms": "n", "store": "b"}', "run.json")
    with pytest.raises(VspInputError, match=r"run\.json: key 'store' appears twice"):
        load_run_config(path)


def test_yaml_syntax_errors_are_one_line(tmp_path):
    path = write(tmp_path, "store: out\nextract:\n  models: [alexnet\n  seed: 1\n")
    with pytest.raises(VspInputError, match=r"run\.yaml line \d+, column \d+: not valid YAML") as err:
        load_run_config(path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("section", "seed", "maximum"),
    [("extract", 2**63, 2**63 - 1), ("extract", -1, 2**63 - 1), ("decode", 2**32, 2**32 - 1),
     ("meta", 2**32, 2**32 - 1), ("map", 2**64, 2**32 - 1)],
)  # fmt: skip
def test_seeds_outside_what_torch_and_numpy_take_are_refused(tmp_path, section, seed, maximum):
    base = {"images": "photos", "store": "out", "norms": "norms.dat", section: {"seed": seed}}
    path = write(tmp_path, json.dumps(base), "seed.json")
    message = rf"{section}\.seed: must be an integer from 0 to {maximum}, got {seed}"
    with pytest.raises(VspInputError, match=message):
        load_run_config(path)


# ---------------------------------------------------------- stage Configs: the only declaration of settings

TOY = """
from __future__ import annotations

from dataclasses import dataclass

from vsp.config import setting
from vsp.stage import Stage


@dataclass(frozen=True)
class ToyConfig:
    size: int = setting(3, minimum=1)
    rate: float = setting(0.5, positive=True)
    mode: str = setting("fast", choices=("fast", "slow"))
    shout: bool = False
    words: tuple[str, ...] = ("a", "b")
    counts: tuple[int, ...] | None = None
    weights: tuple[float, ...] | None = setting(None, minimum=0.0)
    data: str | None = setting(None, path=True)
    table: dict[str, str] | None = None
    chunk: int = setting(2, identity=False, key="chunk_size", minimum=1)


class ToyStage(Stage):
    name = "toy"
    root = "toy"
    Config = ToyConfig
    needs = ("norms",)
"""


@pytest.fixture
def toy_stage(tmp_path, monkeypatch):
    import vsp.pipeline

    (tmp_path / "toy_module.py").write_text(TOY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(vsp.pipeline, "STAGES", [*vsp.pipeline.STAGES, ("toy", "toy_module:ToyStage")])
    return tmp_path


def test_a_registered_stage_gets_its_section_read_from_its_config(toy_stage):
    import vsp.config

    assert vsp.config.STAGE_ORDER[-1] == "toy" and "toy" in vsp.config.NEEDS_NORMS
    data = {
        "store": "s", "norms": "n.dat", "stages": ["toy"],
        "toy": {"size": 4, "rate": 2, "mode": "slow", "shout": True, "words": "x,y", "counts": [1, 2],
                "weights": 0, "data": "d.txt", "table": {"k": "v"}, "chunk_size": 9},
    }  # fmt: skip
    cfg = RunConfig.from_dict(data, base_dir=toy_stage)
    toy = cfg.settings("toy")
    assert (toy.size, toy.rate, toy.mode, toy.shout, toy.words) == (4, 2.0, "slow", True, ("x", "y"))
    assert (toy.counts, toy.weights, toy.table, toy.chunk) == ((1, 2), (0.0,), {"k": "v"}, 9)
    assert toy.data == str(toy_stage / "d.txt")
    assert RunConfig.from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()  # round trip, extra section kept
    assert cfg.to_dict()["toy"]["chunk_size"] == 9
    ident = cfg.stage_identity("toy")
    assert ident["toy"]["size"] == 4 and "chunk" not in ident["toy"] and ident["norms"]["path"]
    assert RunConfig.from_dict({"store": "s", "norms": "n", "stages": ["toy"]}).settings("toy").size == 3
    with pytest.raises(VspInputError, match="norms: required when the toy stage runs"):
        RunConfig.from_dict({"store": "s", "stages": ["toy"]})


@pytest.mark.parametrize(
    ("toy", "message"),
    [
        ({"size": 0}, "toy.size: must be an integer >= 1, got 0"),
        ({"rate": 0}, "toy.rate: must be > 0"),
        ({"mode": "medium"}, "toy.mode: must be one of fast, slow"),
        ({"shout": "yes"}, "toy.shout: must be true or false"),
        ({"words": 3}, "toy.words: must be a list of names"),
        ({"counts": [0]}, "toy.counts: must be integers >= 1"),
        ({"weights": [-1]}, "toy.weights: must be numbers >= 0"),
        ({"table": ["x"]}, "toy.table: must be a mapping"),
        ({"chunk": 3}, "toy.chunk: unknown key"),
        ({"chunk_size": 0}, "toy.chunk_size: must be an integer >= 1"),
    ],
)
def test_generic_section_errors_name_the_key(toy_stage, toy, message):
    with pytest.raises(VspInputError, match=message.replace(".", r"\.")):
        RunConfig.from_dict({"store": "s", "norms": "n", "stages": ["toy"], "toy": toy})


def test_settings_are_the_stage_configs():
    from vsp import pipeline

    cfg = RunConfig.from_dict({"images": "i", "store": "s", "norms": "n.dat"})
    for name in pipeline.names():
        assert isinstance(cfg.settings(name), pipeline.get(name).Config)
    assert cfg.settings("extract") is cfg.extract and cfg.extraction_config() is cfg.extract
    assert cfg.settings("map") is cfg.map and cfg.settings("report") is cfg.report


def test_mlp_weight_decay_is_read_under_either_name():
    base = {"store": "s", "norms": "n", "stages": ["map"]}
    a = RunConfig.from_dict(base | {"map": {"mlp_wd": [0, 0.1]}})
    b = RunConfig.from_dict(base | {"map": {"mlp_weight_decay": [0, 0.1]}})
    assert a.map.mlp_weight_decay == b.map.mlp_weight_decay == (0.0, 0.1)
    assert a.identity() == b.identity() and a.to_dict()["map"]["mlp_wd"] == [0.0, 0.1]
    with pytest.raises(VspInputError, match="map.mlp_weight_decay: the same setting as map.mlp_wd"):
        RunConfig.from_dict(base | {"map": {"mlp_wd": [0], "mlp_weight_decay": [0]}})
    with pytest.raises(VspInputError, match=r"map\.mlp_wd: must be numbers >= 0"):
        RunConfig.from_dict(base | {"map": {"mlp_wd": [-1]}})


def test_meta_decodability_settings_under_either_spelling():
    base = {"store": "s", "stages": ["meta"]}
    flat = RunConfig.from_dict(base | {"meta": {"folds": 3, "C": 0.5}})
    nested = RunConfig.from_dict(base | {"meta": {"decodability": {"folds": 3, "C": 0.5}}})
    assert (nested.meta.folds, nested.meta.C) == (3, 0.5) and nested.identity() == flat.identity()
    with pytest.raises(VspInputError, match=r"meta\.decodability\.folds: must be an integer >= 2"):
        RunConfig.from_dict(base | {"meta": {"decodability": {"folds": 1}}})
    with pytest.raises(VspInputError, match=r"meta\.decodability\.folds: the same setting as meta\.folds"):
        RunConfig.from_dict(base | {"meta": {"folds": 3, "decodability": {"folds": 3}}})
    lr = RunConfig.from_dict(base | {"meta": {"onetoN_lr": 0.1, "onetoN_lam": 0.001}})
    assert (lr.meta.onetoN_lr, lr.meta.onetoN_lam) == (0.1, 0.001)
    with pytest.raises(VspInputError, match=r"meta\.onetoN_lr: must be > 0"):
        RunConfig.from_dict(base | {"meta": {"onetoN_lr": 0}})
