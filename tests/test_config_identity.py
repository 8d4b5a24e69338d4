"""Golden identities: what the release before the stage Configs (``vsp.runconfig``) recorded for a run file.

Stores written by that release must resume without being refused, so for the same run file the run's
identity (``RunConfig.identity`` / ``stage_identity``, kept in run.json) and the dicts each stage writes into
its own manifest from its Config must be exactly these. The literals were computed with the pre-change tree
(``vsp.runconfig.RunConfig.from_dict(run)``, then ``extraction_config().to_json()``, the decoding
manifest's ``config`` entry, ``meta_config().to_json()``, the meta decodability config and
``mapping_config().identity()``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vsp.config import RunConfig

RUNS = {
    "minimal": {"store": "/runs/r1", "images": "/data/images", "norms": "/data/norms.dat"},
    "full": {
        "store": "/runs/r2",
        "images": "s3://bucket/photos/",
        "norms": {"path": "/data/norms.dat", "min_pf": 3, "min_concepts": 4},
        "stages": ["extract", "decode", "meta", "map", "similarity", "report"],
        "extract": {
            "models": ["alexnet", "resnet34"],
            "layers": ["features.0", "layer1.0.conv1"],
            "weights": "random",
            "seed": 7,
            "pooling": "mean",
            "activation": "relu",
            "unit_size": 8,
            "only_norm_concepts": False,
        },
        "decode": {"folds": 3, "seed": 2, "C": 0.5, "dtype": "float64", "models": ["alexnet"]},
        "meta": {
            "models": ["resnet34"],
            "kinds": ["svd", "1ton"],
            "dim": 50,
            "k": 40,
            "seed": 3,
            "text": "glove",
            "multimodal": False,
            "onetoN_epochs": 10,
            "onetoN_weighting": "beta",
            "folds": 4,
            "C": 2.0,
        },
        "map": {
            "embeddings": ["resnet34/*"],
            "mappers": ["ridge", "mlp"],
            "repeats": 2,
            "folds": 3,
            "seed": 5,
            "candidates": "test",
            "inner_folds": 3,
            "mlp_epochs": [5, 10],
            "mlp_lr": "0.001,0.01",
            "mlp_wd": [0, 0.01],
            "ridge_alphas": [1, 10],
            "folds_per_task": 2,
            "meta_fit": "train",
        },
        "similarity": {
            "men": "/data/men.txt",
            "simlex": "/data/simlex.txt",
            "pairs": {"toy": "/data/toy.txt"},
            "embeddings": ["glove"],
        },
        "report": {
            "out": "/tmp/out/r.html",
            "explain_images": 1,
            "model": "alexnet",
            "layers": [0, 2],
            "top": 3,
            "device": "cuda",
        },
    },
    "tuning": {
        "store": "/runs/r3",
        "images": "/data/images",
        "norms": "/data/norms.dat",
        "stages": ["extract", "decode", "meta", "map"],
        "extract": {"batch_size": 4, "actors": 3, "weights": "/models/w.pt", "layers": "re:conv"},
        "decode": {"layers_per_task": 9},
        "meta": {"threads": 2, "text": "none"},
        "map": {"mappers": ["knn"], "embeddings": ["glove", "a/*"], "folds_per_task": 1},
        "report": {"device": "cuda", "out": "/x/y.html"},
    },
    "no_norms": {
        "store": "s3://b/r4",
        "images": "/data/images",
        "stages": ["extract", "meta", "similarity"],
        "extract": {"layers": "all-conv", "seed": 12345678901},
    },
}

#: run -> identity, stage identities and manifest dicts, recorded from the pre-change tree (tests/goldens/)
GOLDEN = json.loads((Path(__file__).parent / "goldens" / "config_identity.json").read_text())


def _json(x):
    """As the manifests and run.json hold it (tuples as lists), key order kept."""
    return json.loads(json.dumps(x))


@pytest.mark.parametrize("run", sorted(RUNS))
def test_run_identity_is_the_previous_releases(run):
    cfg = RunConfig.from_dict(RUNS[run])
    want = GOLDEN[run]
    assert _json(cfg.identity()) == want["identity"]
    for stage, identity in want["stage_identity"].items():
        got = _json(cfg.stage_identity(stage))
        assert got == identity, stage
        assert json.dumps(got) == json.dumps(identity), f"{stage}: key order"  # byte-identical JSON


@pytest.mark.parametrize("run", sorted(RUNS))
def test_stage_manifest_dicts_are_the_previous_releases(run):
    cfg = RunConfig.from_dict(RUNS[run])
    got = _json(
        {
            "extract": cfg.extract.to_json(),
            "decode": cfg.decode.identity(),  # decode/manifest.json "config"
            "meta": cfg.meta.to_json(),
            "meta_decode": cfg.meta_decode_config().identity(),
            "map": cfg.map.identity(),
        }
    )
    for name, want in GOLDEN[run]["manifests"].items():
        assert got[name] == want, name
        assert json.dumps(got[name]) == json.dumps(want), f"{name}: key order"


def test_tuning_fields_never_reach_identity_or_manifests():
    base = RunConfig.from_dict(RUNS["minimal"])
    tuned = RunConfig.from_dict(
        RUNS["minimal"]
        | {
            "extract": {"batch_size": 1, "actors": 7},
            "decode": {"layers_per_task": 1},
            "meta": {"threads": 3},
            "map": {"mappers": ["knn"], "embeddings": ["x/*"]},
            "report": {"device": "cuda", "out": "/elsewhere/r.html"},
        }
    )
    assert tuned.identity() == base.identity()
    assert tuned.extract.to_json() == base.extract.to_json()
    assert tuned.decode.identity() == base.decode.identity()
    assert tuned.meta.to_json() == base.meta.to_json()
    assert tuned.map.identity() == base.map.identity()


def test_oneton_lr_and_lambda_are_identity_once_set():
    base = RunConfig.from_dict(RUNS["minimal"])
    lr = RunConfig.from_dict(RUNS["minimal"] | {"meta": {"onetoN_lr": 0.05}})
    lam = RunConfig.from_dict(RUNS["minimal"] | {"meta": {"onetoN_lam": 0.0}})
    assert (lr.meta.onetoN_lr, lam.meta.onetoN_lam) == (0.05, 0.0)
    assert lr.stage_identity("meta")["meta"]["onetoN_lr"] == 0.05
    assert lr.stage_identity("meta") != base.stage_identity("meta") != lam.stage_identity("meta")
    assert "onetoN_lr" not in base.stage_identity("meta")["meta"]  # at its default: as before it was settable
    assert lr.meta.to_json()["onetoN_lr"] == 0.05  # the meta manifest always recorded it
