import json
from pathlib import Path

import pytest

from vsp.errors import ConfigMismatchError, VspInputError
from vsp.runconfig import ENV_VAR, RunConfig, load_from_env, load_run_config
from vsp.runmanifest import RUN_JSON, RunRecord, format_progress, git_commit, read_run, store_progress
from vsp.store import open_store

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
    with pytest.raises(VspInputError, match=r"run\.yaml line \d+: not valid YAML"):
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
    rec.stage_skipped("meta", "not built yet")
    rec.set_weights_identity({"alexnet": "random:0"})
    rec.finish()
    doc = read_run(store)
    assert doc["status"] == "complete" and doc["finished"]
    assert doc["config"] == cfg.to_dict() and doc["identity"] == cfg.identity()
    assert {"python", "vsp", "torch", "ray", "zarr"} <= set(doc["versions"])
    assert doc["weights_identity"] == {"alexnet": "random:0"}
    assert doc["stages"]["extract"]["status"] == "done" and doc["stages"]["extract"]["units_run"] == 2
    assert doc["stages"]["meta"] == {"status": "skipped", "attempt": 1, "reason": "not built yet"}
    assert doc["attempts"][0]["stage_counts"]["extract"]["seconds"] == 1.5
    RunRecord.begin(store, cfg).finish(error="RuntimeError: boom")
    doc = read_run(store)
    assert [a["status"] for a in doc["attempts"]] == ["complete", "failed"]
    assert doc["error"] == "RuntimeError: boom"
    assert "AWS_SECRET" not in json.dumps(doc)


def test_other_configuration_is_refused_once_results_exist(tmp_path):
    from vsp.features import MANIFEST

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
    assert "run.json holds a run with a different configuration" in msg
    assert "extract: extract.pooling" in msg and "extract: extract.seed" in msg and "new store prefix" in msg
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
