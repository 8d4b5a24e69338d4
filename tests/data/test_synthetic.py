from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vsp.data.images import build_manifest, validate
from vsp.data.norms import FEATURE_CLASSES, load_cslb
from vsp.data.synthetic import CSLB_HEADER, TEXT_DIM, generate_world
from vsp.errors import VspInputError


def _hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    return generate_world(tmp_path_factory.mktemp("world"))


def test_same_seed_gives_byte_identical_files(world, tmp_path: Path) -> None:
    again = generate_world(tmp_path / "again")
    first = _hashes(world.norms_path.parent)
    assert first == _hashes(tmp_path / "again")
    assert len(first) == 24 * 6 + 3  # images + norms.dat + text_vectors.txt + world.json
    assert again.concepts == world.concepts


def test_other_seed_differs_and_rerun_in_place_replaces(world, tmp_path: Path) -> None:
    other = generate_world(tmp_path / "w", seed=1)
    assert other.norms_path.read_bytes() != world.norms_path.read_bytes()
    # regenerate in the same folder with fewer images: stale images are gone, files match a fresh run
    generate_world(tmp_path / "w", images_per_concept=2)
    generate_world(tmp_path / "fresh", images_per_concept=2)
    assert _hashes(tmp_path / "w") == _hashes(tmp_path / "fresh")


def test_refuses_a_foreign_images_folder(tmp_path: Path) -> None:
    (tmp_path / "images" / "mine").mkdir(parents=True)
    with pytest.raises(VspInputError, match="not a generated world"):
        generate_world(tmp_path)


def test_generation_is_fast(tmp_path: Path) -> None:
    start = time.perf_counter()
    generate_world(tmp_path)
    assert time.perf_counter() - start < 5.0


def test_norms_file_is_cslb_format(world) -> None:
    data = world.norms_path.read_bytes()
    assert data.endswith(b"\r\n")
    lines = data.decode("utf-8").split("\r\n")[:-1]
    assert "\n" not in "".join(lines)
    assert lines[0] == "domain\tfeature type\tconcept\tfeature\tpf\tfeature alternatives\tparticipant list"
    assert tuple(lines[0].split("\t")) == CSLB_HEADER
    rows = [ln.split("\t") for ln in lines[1:]]
    assert all(len(r) == 7 for r in rows)
    assert {r[0] for r in rows} == {"living", "nonliving"}
    assert {r[1] for r in rows} == set(FEATURE_CLASSES)
    concepts = [r[2] for r in rows]
    assert concepts == sorted(concepts)  # CSLB order: concept, then pf descending
    assert len({(r[2], r[3]) for r in rows}) == len(rows)
    for r in rows:
        pf = int(r[4])
        assert 2 <= pf <= 30
        groups = r[6].removeprefix("p ").split(" / ")
        assert r[6].startswith("p ") and len(groups) == len(r[5].split("; "))
        ids = [int(p) for g in groups for p in g.split()]
        assert len(ids) == pf == len(set(ids)) and all(1 <= p <= 30 for p in ids)
    assert "bat_(toy)" in concepts and "can_opener" in concepts


def test_norms_survive_default_filter_in_every_class(world) -> None:
    norms = load_cslb(world.norms_path)
    assert norms.concepts == world.concepts and len(norms.concepts) == 24
    counts = Counter(norms.feature_class)
    assert len(norms.properties) >= 20
    assert set(counts) == set(FEATURE_CLASSES)
    assert counts["taxonomic"] == 4 and counts["visual perceptual"] >= 10
    for label in [
        "is red",
        "is green",
        "is blue",
        "is yellow",
        "is circular_round",
        "is triangular",
        "is striped",
        "has spots",
        "is small",
        "is big_large",
        "is a fruit",
        "is a container",
    ]:
        assert label in norms.properties, label
    fine = dict(zip(norms.properties, norms.fine_grained, strict=True))
    assert fine["is red"] == "colour" and fine["is big_large"] == "shape/size"
    # the filter had something to remove: idiosyncratic (low pf) and rare (few concepts) properties
    raw = {ln.split("\t")[3] for ln in world.norms_path.read_text().splitlines()[1:]}
    assert {"is useful", "has a lid"} <= raw and not {"is useful", "has a lid"} & set(norms.properties)


@pytest.mark.parametrize("seed", [1, 7])
def test_other_seeds_keep_every_class(tmp_path: Path, seed: int) -> None:
    w = generate_world(tmp_path, seed=seed, images_per_concept=1, image_size=48)
    norms = load_cslb(w.norms_path)
    assert len(norms.properties) >= 20 and set(norms.feature_class) == set(FEATURE_CLASSES)


def test_visual_properties_match_the_rendered_attributes(world) -> None:
    spec = json.loads((world.norms_path.parent / "world.json").read_text())
    norms = load_cslb(world.norms_path, min_pf=1, min_concepts=1)
    has = {
        (c, p)
        for i, c in enumerate(norms.concepts)
        for j, p in enumerate(norms.properties)
        if norms.binary[i, j]
    }
    for x in spec["concepts"]:
        assert (x["concept"], f"is {x['colour']}") in has
        assert (x["concept"], f"is a {x['category']}") in has
    cats = Counter(x["category"] for x in spec["concepts"])
    assert cats == {"fruit": 6, "tool": 6, "toy": 6, "container": 6}
    for attr in ("shape", "colour", "size"):
        assert min(Counter(x[attr] for x in spec["concepts"]).values()) >= 5, attr


def test_images_validate_and_include_greyscale_and_jpeg(world) -> None:
    records = build_manifest(world.images_root)
    assert len(records) == 24 * 6
    report = validate(records, concepts=world.concepts)
    assert report.ok, report.to_text()
    assert report.modes.get("L", 0) >= 1 and report.modes["RGB"] >= 100
    assert set(report.formats) == {"JPEG", "PNG"}
    with Image.open(records[0].uri) as img:
        assert img.size == (160, 160)


def test_text_vectors_glove_format_and_category_structure(world) -> None:
    lines = world.text_vectors_path.read_text(encoding="utf-8").splitlines()
    vecs = {}
    for ln in lines:
        word, *vals = ln.split(" ")
        assert len(vals) == TEXT_DIM and word and " " not in word
        vecs[word] = np.array([float(v) for v in vals])
    assert len(vecs) == len(lines)
    assert {"bat", "can", "opener", "apple"} <= set(vecs)
    spec = json.loads((world.norms_path.parent / "world.json").read_text())
    single = [x for x in spec["concepts"] if "_" not in x["concept"]]
    unit = {x["concept"]: vecs[x["concept"]] / np.linalg.norm(vecs[x["concept"]]) for x in single}
    same, diff = [], []
    for i, a in enumerate(single):
        for b in single[i + 1 :]:
            cos = float(unit[a["concept"]] @ unit[b["concept"]])
            (same if a["category"] == b["category"] else diff).append(cos)
    assert np.mean(same) > np.mean(diff) + 0.3


def test_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(VspInputError, match="n_concepts"):
        generate_world(tmp_path, n_concepts=2)
    with pytest.raises(VspInputError, match="images_per_concept"):
        generate_world(tmp_path, images_per_concept=0)


def test_larger_world_names_are_unique(tmp_path: Path) -> None:
    w = generate_world(tmp_path, n_concepts=48, images_per_concept=1, image_size=48)
    assert len(set(w.concepts)) == 48 and "fruit_11" in w.concepts
    assert load_cslb(w.norms_path).concepts == w.concepts
