"""A deterministic, generated demo world: rendered images, CSLB-format norms and text vectors.

``generate_world(out_dir)`` writes, with nothing downloaded::

    <out_dir>/images/<concept>/<concept>_NN.png|jpg   rendered pictures, images_per_concept per concept
    <out_dir>/norms.dat                               CSLB-format norms (tab-separated, CRLF, CSLB header)
    <out_dir>/text_vectors.txt                        GloVe-format word vectors (dimension 50), SYNTHETIC
    <out_dir>/world.json                              the generating parameters and each concept's attributes

**The world.** Each concept belongs to one of four categories (fruit, tool, toy, container) and has four
visual attributes: a shape (circle, square, triangle, star), a colour (red, green, blue, yellow), a texture
(plain, striped, dotted) and a size (small, big). The category sets the shape for all but one concept per
category (fruits are round, tools triangular, toys star-shaped, containers square; one member of each borrows
the next category's shape), leans on size (fruits small, containers big), and is independent of colour and
texture, which are spread evenly. Concept names are CSLB-style (lower case, ``_`` for spaces, a sense suffix
as in ``bat_(toy)``), taken from a pool of ten per category; past that, names are ``<category>_<n>``.

**The norms** list, per concept, the properties a participant would produce, in the five CSLB feature classes
and with real CSLB feature labels (``is red``, ``is circular_round``, ``is big_large``, ``is a fruit``,
``does contain_hold``, ``is found in kitchens``...):

- visual perceptual: colour, shape, texture and size labels, true exactly when the attribute holds, and
  ``does roll`` for round things (CSLB files ``does roll`` under visual perceptual too);
- taxonomic: the category (``is a fruit``, ``is a tool``, ``is a toy``, ``is a container``);
- other perceptual, functional and encyclopaedic properties (``is sweet``, ``is heavy``, ``does cut``,
  ``is played with``, ``does grow on trees``, ``is expensive``...) that follow a category or an attribute with
  seeded exceptions (members dropped, outsiders added), and one that follows nothing (``is sold_bought in
  supermarkets_shops``);
- noise that the usual filters (``min_pf=5``, ``min_concepts=5``) remove: idiosyncratic properties with
  production frequency 2-4, properties shared by only three concepts, and the occasional real property that
  only a few participants produced.

Production frequencies are out of 30 participants, as in CSLB; each row lists feature alternatives and the
participant groups that produced them. With the defaults (24 concepts; seeds 0-14 tried) 33 properties survive
the default filter: 4 taxonomic, 14 visual perceptual, 5 other perceptual, 5 functional, 5 encyclopaedic.

**The images** render the concept's shape, colour, texture and size with per-image variation: position,
rotation, scale and colour jitter, a random light background with pixel noise; about one image in three is a
JPEG, and roughly one in seventeen is greyscale (mode ``L``), so the pipeline meets both.

**The text vectors are synthetic**: random vectors built from a category centroid plus colour and shape
directions plus noise, written in the GloVe text format (``word v1 ... v50``), with filler and attribute
words, so that the demo's text and multimodal rows have something category-shaped to work with. They are not
GloVe.

Everything is drawn from ``numpy.random.SeedSequence(seed)``: the same arguments give byte-identical files.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vsp.data.norms import CSLB_COLUMNS
from vsp.errors import VspInputError

log = logging.getLogger(__name__)

CSLB_HEADER = CSLB_COLUMNS  # the real file's header, column for column
N_PARTICIPANTS = 30
TEXT_DIM = 50

SHAPES = ("circle", "square", "triangle", "star")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (212, 38, 38),
    "green": (44, 158, 64),
    "blue": (40, 88, 212),
    "yellow": (238, 200, 30),
}
TEXTURES = ("plain", "striped", "dotted")
SIZES = ("small", "big")


@dataclass(frozen=True)
class _Category:
    name: str
    label: str  # taxonomic feature label
    domain: str  # CSLB domain column
    shape: str
    size_rule: str  # "small" | "big" | "alternate"
    names: tuple[str, ...]


CATEGORIES = (
    _Category(
        "fruit",
        "is a fruit",
        "living",
        "circle",
        "small",
        ("apple", "cherry", "lime", "lemon", "plum", "grape", "peach", "apricot", "melon", "kiwi"),
    ),
    _Category(
        "tool",
        "is a tool",
        "nonliving",
        "triangle",
        "alternate",
        ("axe", "chisel", "hammer", "can_opener", "saw", "spanner", "trowel", "pliers", "drill", "rake"),
    ),
    _Category(
        "toy",
        "is a toy",
        "nonliving",
        "star",
        "alternate",
        ("ball", "kite", "yoyo", "bat_(toy)", "doll", "rattle", "frisbee", "marble", "puppet", "whistle"),
    ),
    _Category(
        "container",
        "is a container",
        "nonliving",
        "square",
        "big",
        ("box", "jar", "tin", "bucket", "basket", "crate", "bowl", "bottle", "jug", "tray"),
    ),
)

# Feature label -> (feature class, alternatives as participants might word it). Labels are real CSLB labels.
VISUAL_LABELS = {
    "colour": {c: f"is {c}" for c in COLOURS},
    "shape": {
        "circle": "is circular_round",
        "square": "is rectangular_square",
        "triangle": "is triangular",
        "star": "is star shaped",
    },
    "texture": {"plain": "is plain", "striped": "is striped", "dotted": "has spots"},
    "size": {"small": "is small", "big": "is big_large"},
}
ALTERNATIVES = {
    "is red": ["is red", "is reddish"],
    "is green": ["is green"],
    "is blue": ["is blue", "is bluish"],
    "is yellow": ["is yellow"],
    "is circular_round": ["is round", "is circular"],
    "is rectangular_square": ["is square", "is rectangular", "has four sides"],
    "is triangular": ["is triangular", "is a triangle shape", "has three sides"],
    "is star shaped": ["is star shaped", "is like a star"],
    "is plain": ["is plain", "has no pattern"],
    "is striped": ["is striped", "has stripes", "is stripy"],
    "has spots": ["has spots", "is spotty", "has dots"],
    "is small": ["is small", "is little"],
    "is big_large": ["is big", "is large"],
    "does roll": ["does roll", "does roll around"],
    "is a fruit": ["is a fruit", "is a type of fruit"],
    "is a tool": ["is a tool", "is a type of tool"],
    "is a toy": ["is a toy"],
    "is a container": ["is a container", "is a type of container"],
    "is sweet": ["is sweet", "tastes sweet"],
    "is heavy": ["is heavy"],
    "is hard": ["is hard", "is solid"],
    "is soft": ["is soft"],
    "is noisy_loud": ["is noisy", "is loud"],
    "is eaten_edible": ["is eaten", "is edible", "can be eaten"],
    "does cut": ["does cut", "is used for cutting"],
    "is played with": ["is played with"],
    "does contain_hold": ["does contain things", "does hold things"],
    "is for children": ["is for children", "is used by children"],
    "is found in kitchens": ["is found in kitchens", "is used in kitchens"],
    "is found in sheds": ["is found in sheds", "is kept in a shed"],
    "does grow on trees": ["does grow on trees"],
    "is expensive": ["is expensive", "does cost a lot"],
    "is sold_bought in supermarkets_shops": ["is sold in shops", "is bought in supermarkets"],
}

# Non-visual properties: label, class, source set, members dropped, outsiders added.
# A source is "category:<name>", "size:<size>", "shape:<shape>", "all" (i.e. nothing: random members).
_DERIVED = (
    ("is sweet", "other perceptual", ("category:fruit",), 0, 1),
    ("is heavy", "other perceptual", ("category:tool", "category:container"), 4, 0),
    ("is hard", "other perceptual", ("category:tool", "category:container"), 2, 2),
    ("is soft", "other perceptual", ("category:fruit",), 1, 2),
    ("is noisy_loud", "other perceptual", ("category:toy",), 2, 1),
    ("is eaten_edible", "functional", ("category:fruit",), 0, 0),
    ("does cut", "functional", ("category:tool",), 1, 0),
    ("is played with", "functional", ("category:toy",), 0, 1),
    ("does contain_hold", "functional", ("category:container",), 0, 1),
    ("is for children", "functional", ("category:toy",), 1, 2),
    ("is found in kitchens", "encyclopaedic", ("category:fruit", "category:container"), 4, 1),
    ("is found in sheds", "encyclopaedic", ("category:tool",), 1, 1),
    ("does grow on trees", "encyclopaedic", ("category:fruit",), 1, 0),
    ("is expensive", "encyclopaedic", ("size:big",), 5, 2),
    ("is sold_bought in supermarkets_shops", "encyclopaedic", ("random:0.4",), 0, 0),
    ("does roll", "visual perceptual", ("shape:circle",), 1, 0),
)
# Shared by only three concepts each: removed by min_concepts=5.
_RARE = (
    ("has a stalk_stem", "visual perceptual", "fruit"),
    ("has a lid", "visual perceptual", "container"),
    ("has a handle_handles", "visual perceptual", "tool"),
    ("does fly", "functional", "toy"),
)
# Idiosyncratic properties produced by 2-4 participants: removed by min_pf=5.
_IDIOSYNCRATIC = (
    ("is useful", "functional"),
    ("is old", "encyclopaedic"),
    ("is shiny", "visual perceptual"),
    ("is nice", "encyclopaedic"),
    ("is common", "encyclopaedic"),
    ("does smell", "other perceptual"),
    ("is cheap", "encyclopaedic"),
    ("is smooth", "other perceptual"),
    ("is light", "other perceptual"),
    ("is found in homes_houses", "encyclopaedic"),
    ("is cold", "other perceptual"),
    ("is fun", "encyclopaedic"),
)
# Salience: production-frequency range (inclusive) of a true property, by kind.
_PF_RANGE = {
    "taxonomic": (14, 28),
    "colour": (8, 22),
    "shape": (8, 20),
    "texture": (6, 16),
    "size": (6, 16),
    "other": (6, 18),
}
_FILLER_WORDS = (
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "it",
    "for",
    "with",
    "on",
    "as",
    "at",
    "by",
    "from",
    "this",
    "be",
    "have",
    "not",
    "are",
    "or",
    "one",
    "all",
    "new",
    "more",
    "some",
    "thing",
    "object",
    "colour",
    "shape",
    "pattern",
    "size",
)


@dataclass(frozen=True)
class WorldPaths:
    """Where :func:`generate_world` wrote the world, and its concepts (sorted)."""

    images_root: Path
    norms_path: Path
    text_vectors_path: Path
    concepts: list[str]
    spec_path: Path | None = None


@dataclass(frozen=True)
class _Concept:
    name: str
    category: _Category
    shape: str
    colour: str
    texture: str
    size: str


# ----------------------------------------------------------------------------------------------- concepts
def _make_concepts(n: int, rng: np.random.Generator) -> list[_Concept]:
    n_cat = len(CATEGORIES)
    colour_order = [list(COLOURS)[i] for i in rng.permutation(len(COLOURS))]
    texture_order = [TEXTURES[i] for i in rng.permutation(len(TEXTURES))]
    members = [list(range(c, n, n_cat)) for c in range(n_cat)]  # concept indices per category
    # one member of each category (with >= 3 members) borrows the next category's shape
    exception = [int(rng.integers(len(m))) if len(m) >= 3 else -1 for m in members]
    out: list[_Concept] = []
    for i in range(n):
        c, k = i % n_cat, i // n_cat
        cat = CATEGORIES[c]
        name = cat.names[k] if k < len(cat.names) else f"{cat.name}_{k + 1}"
        shape = CATEGORIES[(c + 1) % n_cat].shape if k == exception[c] else cat.shape
        colour = colour_order[(k + c) % len(colour_order)]
        texture = texture_order[(k + 2 * c) % len(texture_order)]
        if cat.size_rule == "alternate":
            size = SIZES[k % 2]
        else:
            other = "big" if cat.size_rule == "small" else "small"
            size_exception = (exception[c] + len(members[c]) // 2) % max(1, len(members[c]))
            size = other if (k == size_exception or (k % 6 == 5 and len(members[c]) > 6)) else cat.size_rule
        out.append(_Concept(name, cat, shape, colour, texture, size))
    return sorted(out, key=lambda x: x.name)


def _select(concepts: list[_Concept], source: tuple[str, ...], rng: np.random.Generator) -> set[str]:
    chosen: set[str] = set()
    for s in source:
        kind, _, value = s.partition(":")
        if kind == "category":
            chosen |= {x.name for x in concepts if x.category.name == value}
        elif kind == "size":
            chosen |= {x.name for x in concepts if x.size == value}
        elif kind == "shape":
            chosen |= {x.name for x in concepts if x.shape == value}
        elif kind == "random":
            k = max(1, round(float(value) * len(concepts)))
            chosen |= {concepts[i].name for i in rng.choice(len(concepts), size=k, replace=False)}
        else:  # pragma: no cover - programming error
            raise ValueError(f"unknown source {s!r}")
    return chosen


def _drop_add(concepts: list[_Concept], chosen: set[str], n_drop: int, n_add: int, rng) -> set[str]:
    inside = sorted(chosen)
    outside = sorted(x.name for x in concepts if x.name not in chosen)
    n_drop = min(n_drop, max(0, len(inside) - 1))
    n_add = min(n_add, len(outside))
    dropped = {inside[i] for i in rng.choice(len(inside), size=n_drop, replace=False)} if n_drop else set()
    added = {outside[i] for i in rng.choice(len(outside), size=n_add, replace=False)} if n_add else set()
    return (chosen - dropped) | added


# ----------------------------------------------------------------------------------------------- norms
def _participants(pf: int, alternatives: list[str], rng: np.random.Generator) -> tuple[str, str]:
    """Split ``pf`` participants (of 30) into groups, one per alternative wording; drop empty groups."""
    ids = rng.choice(np.arange(1, N_PARTICIPANTS + 1), size=pf, replace=False)
    weights = np.array([0.7**j for j in range(len(alternatives))])
    counts = rng.multinomial(pf, weights / weights.sum())
    groups, alts, start = [], [], 0
    for alt, cnt in sorted(zip(alternatives, counts, strict=True), key=lambda t: -t[1]):
        if cnt == 0:
            continue
        groups.append(" ".join(str(int(p)) for p in sorted(ids[start : start + cnt])))
        alts.append(alt)
        start += cnt
    return "; ".join(alts), "p " + " / ".join(groups)


def _norm_rows(concepts: list[_Concept], rng: np.random.Generator) -> list[tuple[str, ...]]:
    truth: dict[str, dict[str, tuple[str, str]]] = {
        x.name: {} for x in concepts
    }  # concept -> label -> (class, kind)
    for x in concepts:
        truth[x.name][x.category.label] = ("taxonomic", "taxonomic")
        truth[x.name][VISUAL_LABELS["colour"][x.colour]] = ("visual perceptual", "colour")
        truth[x.name][VISUAL_LABELS["shape"][x.shape]] = ("visual perceptual", "shape")
        truth[x.name][VISUAL_LABELS["texture"][x.texture]] = ("visual perceptual", "texture")
        truth[x.name][VISUAL_LABELS["size"][x.size]] = ("visual perceptual", "size")
    for label, fclass, source, n_drop, n_add in _DERIVED:
        for name in sorted(_drop_add(concepts, _select(concepts, source, rng), n_drop, n_add, rng)):
            truth[name][label] = (fclass, "other")
    # properties of every concept, grouped, so that at most one holder per property is "weakly produced"
    holders: dict[str, list[str]] = {}
    for name in sorted(truth):
        for label in sorted(truth[name]):
            holders.setdefault(label, []).append(name)
    weak: set[tuple[str, str]] = set()
    for label in sorted(holders):
        if len(holders[label]) >= 7 and rng.random() < 0.5:
            weak.add((holders[label][int(rng.integers(len(holders[label])))], label))

    rows: list[tuple[str, str, str, str, int, str, str]] = []
    by_name = {x.name: x for x in concepts}
    for name in sorted(truth):
        domain = by_name[name].category.domain
        for label in sorted(truth[name]):
            fclass, kind = truth[name][label]
            lo, hi = (2, 4) if (name, label) in weak else _PF_RANGE[kind]
            pf = int(rng.integers(lo, hi + 1))
            rows.append((domain, fclass, name, label, pf, *_participants(pf, ALTERNATIVES[label], rng)))
    # rare properties: three members of a category, well produced, but too few concepts
    for label, fclass, cat in _RARE:
        names = sorted(x.name for x in concepts if x.category.name == cat)
        for i in sorted(rng.choice(len(names), size=min(3, len(names)), replace=False)):
            pf = int(rng.integers(6, 15))
            rows.append(
                (
                    by_name[names[i]].category.domain,
                    fclass,
                    names[i],
                    label,
                    pf,
                    *_participants(pf, [label], rng),
                )
            )
    # idiosyncratic properties: 1-2 per concept, pf 2-4
    for x in concepts:
        for j in sorted(rng.choice(len(_IDIOSYNCRATIC), size=int(rng.integers(1, 3)), replace=False)):
            label, fclass = _IDIOSYNCRATIC[j]
            pf = int(rng.integers(2, 5))
            rows.append((x.category.domain, fclass, x.name, label, pf, *_participants(pf, [label], rng)))
    # CSLB order: concepts alphabetical, then production frequency descending
    rows.sort(key=lambda r: (r[2], -r[4], r[3]))
    return [tuple(str(v) for v in r) for r in rows]


def _write_norms(path: Path, rows: list[tuple[str, ...]]) -> None:
    lines = ["\t".join(CSLB_HEADER)] + ["\t".join(r) for r in rows]
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-8"))


# ----------------------------------------------------------------------------------------------- text vectors
def _concept_words(name: str) -> list[str]:
    """``bat_(toy)`` -> ``["bat"]``, ``can_opener`` -> ``["can", "opener"]``."""
    base = name.split("_(")[0]
    return [w for w in base.split("_") if w]


def _write_text_vectors(path: Path, concepts: list[_Concept], rng: np.random.Generator) -> None:
    def unit(v: np.ndarray) -> np.ndarray:
        return v / np.linalg.norm(v)

    cat_dir = {c.name: unit(rng.standard_normal(TEXT_DIM)) for c in CATEGORIES}
    colour_dir = {c: unit(rng.standard_normal(TEXT_DIM)) for c in COLOURS}
    shape_dir = {s: unit(rng.standard_normal(TEXT_DIM)) for s in SHAPES}
    vectors: dict[str, np.ndarray] = {}
    for w in _FILLER_WORDS:
        vectors[w] = unit(rng.standard_normal(TEXT_DIM)) * 4.0
    for cat in CATEGORIES:
        vectors[cat.name] = (cat_dir[cat.name] + 0.3 * unit(rng.standard_normal(TEXT_DIM))) * 4.0
    for name, d in list(colour_dir.items()) + list(shape_dir.items()):
        vectors.setdefault(name, (d + 0.3 * unit(rng.standard_normal(TEXT_DIM))) * 4.0)
    for x in concepts:
        latent = (
            1.0 * cat_dir[x.category.name]
            + 0.35 * colour_dir[x.colour]
            + 0.25 * shape_dir[x.shape]
            + 0.6 * unit(rng.standard_normal(TEXT_DIM))
        )
        words = _concept_words(x.name)
        for j, w in enumerate(words):
            if w in vectors:
                continue
            head = j == len(words) - 1  # the head noun carries the meaning; modifiers are generic-ish
            v = latent if head else 0.4 * latent + unit(rng.standard_normal(TEXT_DIM))
            vectors[w] = unit(v) * float(rng.uniform(3.5, 5.0))
    lines = [w + " " + " ".join(f"{v:.5f}" for v in vec) for w, vec in vectors.items()]
    path.write_bytes(("\n".join(lines) + "\n").encode("utf-8"))


# ----------------------------------------------------------------------------------------------- images
def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if shape == "square":
        radii, n = [r * 1.0], 4
    elif shape == "triangle":
        radii, n = [r * 1.15], 3
    elif shape == "star":
        radii, n = [r * 1.15, r * 0.5], 10
    else:
        raise ValueError(shape)
    pts = []
    for j in range(n):
        rr = radii[j % len(radii)]
        a = angle + 2 * math.pi * j / n
        pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
    return pts


def _render(x: _Concept, size_px: int, rng: np.random.Generator) -> Image.Image:
    s = size_px * 2  # draw at 2x and downsample, for antialiased edges
    bg = tuple(int(v) for v in rng.integers(150, 250, size=3))
    canvas = Image.new("RGB", (s, s), bg)
    r = s * (0.15 if x.size == "small" else 0.32) * float(rng.uniform(0.85, 1.15))
    room = max(0.0, 0.40 * s - r)
    cx, cy = (s / 2 + float(rng.uniform(-room, room)) for _ in range(2))
    angle = float(rng.uniform(0, 2 * math.pi))
    jitter = rng.integers(-18, 19, size=3)
    colour = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(COLOURS[x.colour], jitter, strict=True))

    fill = Image.new("RGB", (s, s), colour)
    draw = ImageDraw.Draw(fill)
    d = (math.cos(angle), math.sin(angle))
    nrm = (-d[1], d[0])
    if x.texture == "striped":
        period = r * 0.45
        half = s * 1.5
        t = -s
        while t < s:
            px, py = cx + t * nrm[0], cy + t * nrm[1]
            draw.line(
                [(px - half * d[0], py - half * d[1]), (px + half * d[0], py + half * d[1])],
                fill=(245, 245, 240),
                width=max(1, int(period * 0.45)),
            )
            t += period
    elif x.texture == "dotted":
        step = r * 0.42
        dot = step * 0.22
        dark = tuple(int(c * 0.3) for c in colour)
        m = int(r / step) + 2
        for i in range(-m, m + 1):
            for j in range(-m, m + 1):
                px = cx + i * step * d[0] + j * step * nrm[0]
                py = cy + i * step * d[1] + j * step * nrm[1]
                draw.ellipse([px - dot, py - dot, px + dot, py + dot], fill=dark)

    mask = Image.new("L", (s, s), 0)
    mdraw = ImageDraw.Draw(mask)
    if x.shape == "circle":
        mdraw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    else:
        mdraw.polygon(_polygon(x.shape, cx, cy, r, angle), fill=255)
    canvas.paste(fill, (0, 0), mask)
    img = canvas.resize((size_px, size_px), Image.Resampling.BOX)
    arr = np.asarray(img, dtype=np.int16) + rng.normal(0.0, 5.0, size=(size_px, size_px, 3)).round().astype(
        np.int16
    )
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def _write_images(root: Path, concepts: list[_Concept], per_concept: int, size_px: int, rng) -> None:
    counter = 0
    for x in concepts:
        folder = root / x.name
        folder.mkdir(parents=True)
        for j in range(per_concept):
            img = _render(x, size_px, rng)
            if counter % 17 == 5:
                img = img.convert("L")
            if j % 3 == 2:
                img.save(folder / f"{x.name}_{j:02d}.jpg", format="JPEG", quality=92)
            else:
                img.save(folder / f"{x.name}_{j:02d}.png", format="PNG", optimize=False, compress_level=6)
            counter += 1


# ----------------------------------------------------------------------------------------------- entry point
def generate_world(
    out_dir: str | os.PathLike,
    n_concepts: int = 24,
    images_per_concept: int = 6,
    seed: int = 0,
    image_size: int = 160,
) -> WorldPaths:
    """Write the demo world (images, ``norms.dat``, ``text_vectors.txt``, ``world.json``) under ``out_dir``.

    Deterministic: the same arguments give byte-identical files. An existing world in ``out_dir``
    (recognised by its ``world.json``) is replaced; a non-empty ``out_dir/images`` that is not a generated
    world is refused.
    """
    if not 4 <= n_concepts <= 400:
        raise VspInputError(f"n_concepts={n_concepts}: the demo world needs 4 to 400 concepts")
    if images_per_concept < 1:
        raise VspInputError(f"images_per_concept={images_per_concept}: need at least 1")
    if image_size < 32:
        raise VspInputError(f"image_size={image_size}: need at least 32 pixels")
    out = Path(out_dir)
    images_root = out / "images"
    spec_path = out / "world.json"
    if images_root.exists():
        if spec_path.is_file():
            shutil.rmtree(images_root)
        elif any(images_root.iterdir()):
            raise VspInputError(
                f"{images_root} exists and is not a generated world (no {spec_path.name}); "
                "choose an empty output folder"
            )
    images_root.mkdir(parents=True, exist_ok=True)

    # independent streams, so changing e.g. images_per_concept leaves the norms unchanged
    rng_concepts, rng_norms, rng_text, rng_images = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)
    )
    concepts = _make_concepts(n_concepts, rng_concepts)
    norms_path = out / "norms.dat"
    _write_norms(norms_path, _norm_rows(concepts, rng_norms))
    text_path = out / "text_vectors.txt"
    _write_text_vectors(text_path, concepts, rng_text)
    _write_images(images_root, concepts, images_per_concept, image_size, rng_images)
    spec = {
        "generator": "vsp.data.synthetic.generate_world",
        "params": {
            "n_concepts": n_concepts,
            "images_per_concept": images_per_concept,
            "seed": seed,
            "image_size": image_size,
        },
        "concepts": [
            {
                "concept": x.name,
                "category": x.category.name,
                "shape": x.shape,
                "colour": x.colour,
                "texture": x.texture,
                "size": x.size,
            }
            for x in concepts
        ],
        "text_vectors": "synthetic (not GloVe): category centroid + colour and shape directions + noise",
    }
    spec_path.write_text(json.dumps(spec, indent=1) + "\n", encoding="utf-8")
    names = [x.name for x in concepts]
    log.info("demo world: %d concepts x %d images under %s", len(names), images_per_concept, out)
    return WorldPaths(images_root, norms_path, text_path, names, spec_path)
