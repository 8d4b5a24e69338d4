"""Concept property norms: CSLB (Devereux et al. 2014) and McRae et al. (2005) loaders.

A :class:`Norms` holds a concept x property matrix in two forms, binary (``uint8``) and production frequency
(``float32``, 0 = absent), plus one feature class and one fine-grained type per property.

Reading CSLB ``norms.dat``
--------------------------
Tab-separated text, UTF-8 (CSLB is ASCII), LF or CRLF line endings, header on line 1::

    domain  feature type  concept  feature  pf  feature alternatives  participant list

Only ``feature type``, ``concept``, ``feature`` and ``pf`` are used; every row must have as many fields as the
header. Blank lines are skipped. ``pf`` is a plain decimal number (``5``, ``5.0``, ``.5``, ``5e1``; no
underscores, ``inf``, ``nan``, hex or non-ASCII digits) from 0 to :data:`MAX_PF`. A missing or repeated
column, CR-only (classic Mac OS) line endings, a ragged row, a bad ``pf``, an empty concept or feature, an
unknown feature type, an empty file or a file without data rows raises :class:`~vsp.errors.VspInputError`
naming the file and the 1-based line number.

Rules (in the order they are applied)
-------------------------------------
1. **Duplicate (concept, feature) rows** (4 in the CSLB v1.1 release: hamster/has fur_hair 18 and 13,
   tarantula/has fur_hair 19 and 11, poison/made of chemicals 11 and 3, leopard/is big_large 12 and 2) are
   combined into one pair whose PF is the **maximum** of the rows' PFs and whose feature class is that of
   the row with the larger PF (equal PFs: the class that comes first in :data:`FEATURE_CLASSES`).
   Why max: PF counts the participants (30 per concept) who produced the feature, and the duplicate rows
   share participants (hamster: 18 + 13 = 31 > 30), so a sum can exceed the number of participants; the max
   is a count that some row really reports and never exceeds it. The binary matrix is the same under max,
   sum or union of participants.
2. **Filtering**: keep pairs with ``pf >= min_pf``, then keep properties that occur for ``>= min_concepts``
   concepts, then keep concepts that have at least one kept property. Defaults 5 and 5 give 638 concepts
   x 390 properties on the CSLB release (the paper's numbers).
3. **Feature class of a property**: CSLB gives a class per (concept, feature) row and 6 of the 390
   properties have rows in more than one class. A property gets the class of the majority of its *kept*
   pairs (after rules 1-2); a tie goes to the class that comes first in :data:`FEATURE_CLASSES`. CSLB's
   ``feature type`` strings are the class names themselves (:data:`CSLB_FEATURE_TYPES`). On the release:
   visual perceptual 156, functional 94, encyclopaedic 65, taxonomic 46, other perceptual 29.
4. **Fine-grained type of a property** (paper section 4.2), one of :data:`FINE_GRAINED`:

   - ``colour``: a *visual perceptual* property named exactly as an entry of the colour vocabulary, by
     default the authors' published list :data:`COLOUR_PROPERTIES` (16: ``is black``, ``is black and
     white``, ``is blue``, ..., ``is clear_transparent``, ``is colourful``, ``is shiny``);
   - ``shape/size``: a *visual perceptual* property named exactly as an entry of the shape/size vocabulary,
     by default the authors' list :data:`SHAPE_SIZE_PROPERTIES` (13: ``is any size``, ``is big_large``,
     ``is circular_round``, ``is long``, ``is rectangular_square``, ...);
   - otherwise the relation: ``is`` (taxonomic ``is a bird`` included), ``has``, ``does``, ``made-of``
     (label prefix ``made of``). So ``does come in colours`` is ``does`` and ``has a long neck`` ``has``.

   Names are compared lower-cased with runs of white space read as one space. A property named in a
   vocabulary but not visual perceptual keeps its relation type. Other vocabularies: ``load_cslb(...,
   colour_vocabulary=, shape_vocabulary=)`` (a file with one property per line, or a list of names;
   `vsp norms --colour-words FILE --shape-words FILE`); a name in both vocabularies is refused, and entries
   that name no kept visual perceptual property are logged. The 10 CSLB rows (none among the 390
   properties) whose label starts with another verb (``comes``, ``gets``, ``found``, ``had`` ...) use
   :data:`RELATION_FALLBACK` and otherwise ``does``. On the release: colour 16, shape/size 13, is 170,
   has 102, does 70, made-of 19.

McRae et al. (2005)
-------------------
:func:`load_mcrae` reads sheet ``concepts_features`` of ``CONCS_FEATS_concstats_brm.xlsx`` (columns
``Concept``, ``Feature``, ``BR_Label``, ``Prod_Freq``). McRae production frequencies are out of 30
participants and the published norms keep only PF >= 5 already. ``BR_Label`` maps onto
:data:`FEATURE_CLASSES` through :data:`MCRAE_BR_CLASSES`; duplicates, filtering and the class majority
follow the CSLB rules (defaults give 539 concepts x 274 properties). Fine-grained type: ``colour`` when the
property's majority ``BR_Label`` is ``visual-colour``; ``shape/size`` when a visual ``is_...`` or
``different_...`` label has a word of :data:`SHAPE_SIZE_WORDS`; then ``made_of...`` -> ``made-of``,
``has...`` -> ``has``; taxonomic, ``is_``, ``a_``, ``an_`` and passive participles (``used_for``,
``worn``, ``eaten``, ``found_in``, which CSLB writes ``is used for`` ...) -> ``is``; anything else
(``beh_-_flies``, ``lives_in``) -> ``does``.
"""

from __future__ import annotations

import io
import logging
import math
import os
import re
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from vsp.errors import VspInputError
from vsp.io.store import read_uri

log = logging.getLogger(__name__)

FEATURE_CLASSES = ("taxonomic", "visual perceptual", "other perceptual", "functional", "encyclopaedic")
FINE_GRAINED = ("colour", "shape/size", "is", "has", "does", "made-of")

CSLB_COLUMNS = (
    "domain",
    "feature type",
    "concept",
    "feature",
    "pf",
    "feature alternatives",
    "participant list",
)
"""The columns of CSLB ``norms.dat`` v1.1, in order."""

CSLB_REQUIRED_COLUMNS = ("feature type", "concept", "feature", "pf")
"""The columns the loader reads; the others may be absent."""

CSLB_FEATURE_TYPES: Mapping[str, str] = {
    "taxonomic": "taxonomic",
    "visual perceptual": "visual perceptual",
    "other perceptual": "other perceptual",
    "functional": "functional",
    "encyclopaedic": "encyclopaedic",
    "encyclopedic": "encyclopaedic",
}
"""CSLB ``feature type`` (lower-cased, ``-``/``_`` read as spaces) -> feature class."""

COLOUR_PROPERTIES = frozenset(
    {
        "is black",
        "is black and white",
        "is blue",
        "is brown",
        "is golden",
        "is green",
        "is grey",
        "is orange",
        "is pink",
        "is purple",
        "is red",
        "is yellow",
        "is white",
        "is clear_transparent",
        "is colourful",
        "is shiny",
    }
)
"""The authors' colour vocabulary: the CSLB visual perceptual properties of the fine-grained type colour."""

SHAPE_SIZE_PROPERTIES = frozenset(
    {
        "is any size",
        "is big_large",
        "is circular_round",
        "is curved",
        "is cylindrical",
        "is fat",
        "is flat",
        "is long",
        "is rectangular_square",
        "is short",
        "is small",
        "is tall",
        "is thin",
    }
)
"""The authors' shape/size vocabulary: the CSLB visual perceptual properties of the type shape/size."""

SHAPE_SIZE_WORDS = frozenset(
    {
        "big",
        "large",
        "huge",
        "small",
        "tiny",
        "size",
        "sizes",
        "shape",
        "shaped",
        "long",
        "short",
        "tall",
        "thin",
        "thick",
        "fat",
        "wide",
        "narrow",
        "flat",
        "round",
        "circular",
        "oval",
        "square",
        "rectangular",
        "triangular",
        "cylindrical",
        "spherical",
        "curved",
        "straight",
        "pointed",
        "pointy",
    }
)
"""McRae only (:func:`mcrae_fine_grained_type`): words that make a visual ``is_``/``different_`` label
``shape/size``."""

RELATIONS = (("made of", "made-of"), ("is", "is"), ("has", "has"), ("does", "does"))
"""CSLB label prefix -> fine-grained relation type (the four relations of the CSLB listing task)."""

RELATION_FALLBACK: Mapping[str, str] = {"had": "has", "found": "is"}
"""First word of a CSLB label with none of the four relations -> relation; any other word -> ``does``."""

MCRAE_BR_CLASSES: Mapping[str, str] = {
    "taxonomic": "taxonomic",
    "visual-colour": "visual perceptual",
    "visual-form_and_surface": "visual perceptual",
    "visual-motion": "visual perceptual",
    "smell": "other perceptual",
    "sound": "other perceptual",
    "tactile": "other perceptual",
    "taste": "other perceptual",
    "function": "functional",
    "encyclopaedic": "encyclopaedic",
}
"""McRae ``BR_Label`` (brain-region taxonomy of Cree & McRae 2003) -> feature class."""

MCRAE_SHEET = "concepts_features"
MCRAE_REQUIRED_COLUMNS = ("Concept", "Feature", "BR_Label", "Prod_Freq")

_MCRAE_HAS = frozenset({"has", "have", "had"})
_MCRAE_IS = frozenset({"is", "a", "an", "eg", "are", "was"})
_IRREGULAR_PARTICIPLES = frozenset(
    {
        "blown",
        "bought",
        "built",
        "caught",
        "done",
        "drawn",
        "driven",
        "drunk",
        "eaten",
        "flown",
        "found",
        "given",
        "grown",
        "held",
        "hung",
        "kept",
        "made",
        "ridden",
        "run",
        "seen",
        "sewn",
        "shot",
        "sold",
        "spun",
        "sung",
        "thrown",
        "won",
        "worn",
        "woven",
        "written",
    }
)
_WORD_SPLIT = re.compile(r"[\s_/\-]+")

MAX_PF = 1_000_000.0
"""Largest production frequency accepted: PF counts participants (30 per concept in CSLB and McRae)."""

# A plain decimal number: Python's float() also takes "1_2" (= 12), "inf", "nan" and non-ASCII digits.
_PLAIN_NUMBER = re.compile(r"\+?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)


@dataclass(frozen=True, eq=False)
class Norms:
    """A concept x property matrix with per-property feature class and fine-grained type.

    The arrays are read-only; copy them before modifying.
    """

    concepts: list[str]  # sorted
    properties: list[str]  # sorted, feature labels as in the file (CSLB: "is green", "made of metal")
    binary: np.ndarray  # (n_concepts, n_properties) uint8
    pf: np.ndarray  # (n_concepts, n_properties) float32 production frequency (0 = absent)
    feature_class: list[str]  # per property, one of FEATURE_CLASSES
    fine_grained: list[str]  # per property, one of FINE_GRAINED
    source: str  # file path or URI

    def __post_init__(self) -> None:
        shape = (len(self.concepts), len(self.properties))
        if self.binary.shape != shape or self.pf.shape != shape:
            raise ValueError(f"Norms matrices must be {shape}, got {self.binary.shape} and {self.pf.shape}")
        if len(self.feature_class) != shape[1] or len(self.fine_grained) != shape[1]:
            raise ValueError("Norms needs one feature class and one fine-grained type per property")

    @property
    def shape(self) -> tuple[int, int]:
        """(number of concepts, number of properties)."""
        return (len(self.concepts), len(self.properties))


def summary(norms: Norms) -> dict[str, Any]:
    """Counts for ``vsp norms --json``: concepts, properties, and properties per class and per fine type."""
    classes = Counter(norms.feature_class)
    fine = Counter(norms.fine_grained)
    return {
        "concepts": len(norms.concepts),
        "properties": len(norms.properties),
        "feature_classes": {c: classes.get(c, 0) for c in FEATURE_CLASSES},
        "fine_grained": {t: fine.get(t, 0) for t in FINE_GRAINED},
    }


# ----------------------------------------------------------------------------------------------- rules


def split_relation(feature: str) -> tuple[str, str]:
    """Split a CSLB label into (relation type, attribute): ``"made of wood"`` -> ``("made-of", "wood")``.

    The relation type is one of ``is``, ``has``, ``does``, ``made-of``; labels with another first word use
    :data:`RELATION_FALLBACK` and otherwise ``does``, with the whole label as the attribute.
    """
    label = feature.strip()
    lower = label.lower()
    for prefix, relation in RELATIONS:
        if lower == prefix or lower.startswith(prefix + " "):
            return relation, label[len(prefix) :].strip()
    first = lower.split(" ", 1)[0]
    return RELATION_FALLBACK.get(first, "does"), label


def attribute_words(attribute: str) -> list[str]:
    """Lower-cased words of an attribute, split at spaces, ``_``, ``/`` and ``-``."""
    return [w for w in _WORD_SPLIT.split(attribute.lower()) if w]


def property_key(name: str) -> str:
    """How vocabulary entries and property names are compared: lower-cased, white space runs as one space."""
    return " ".join(str(name).lower().split())


def fine_grained_type(
    feature: str,
    feature_class: str,
    colour: Iterable[str] = COLOUR_PROPERTIES,
    shape: Iterable[str] = SHAPE_SIZE_PROPERTIES,
) -> str:
    """Fine-grained type of a CSLB property (see the module docstring for the rule).

    ``colour`` and ``shape``: the property names of the two visual types (default: the authors' lists).
    """
    if feature_class == "visual perceptual":
        key = property_key(feature)
        if key in {property_key(c) for c in colour}:
            return "colour"
        if key in {property_key(c) for c in shape}:
            return "shape/size"
    return split_relation(feature)[0]


VocabularyLike = str | os.PathLike | Iterable[str] | None
"""A vocabulary: ``None`` (the default list), a file path or URI (one property per line), or names."""


def load_vocabulary(path: str | os.PathLike) -> frozenset[str]:
    """Property names from a text file (local path or ``s3://`` URI): one per line, UTF-8.

    Blank lines and lines starting with ``#`` are skipped; names are compared as :func:`property_key` says.
    An empty file raises :class:`~vsp.errors.VspInputError`.
    """
    source = os.fspath(path)
    data = read_uri(source)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise VspInputError(f"{source}: not UTF-8 text ({exc})") from exc
    names = [ln.strip() for ln in text.splitlines()]
    names = [n for n in names if n and not n.startswith("#")]
    if not names:
        raise VspInputError(f"{source}: no property names (one per line expected)")
    return frozenset(property_key(n) for n in names)


def _vocabulary(value: VocabularyLike, default: frozenset[str], what: str) -> tuple[frozenset[str], str]:
    """``(names, where they came from)`` of a vocabulary argument."""
    if value is None:
        return frozenset(property_key(n) for n in default), "default"
    if isinstance(value, str | os.PathLike):
        return load_vocabulary(value), os.fspath(value)
    names = [str(n) for n in value]
    bad = [n for n in names if not property_key(n)]
    if bad or not names:
        raise VspInputError(f"{what} vocabulary: give property names, got {list(value)!r}")
    return frozenset(property_key(n) for n in names), "given"


def _vocabularies(
    colour: VocabularyLike, shape: VocabularyLike
) -> tuple[frozenset[str], frozenset[str], str, str]:
    col, col_src = _vocabulary(colour, COLOUR_PROPERTIES, "colour")
    shp, shp_src = _vocabulary(shape, SHAPE_SIZE_PROPERTIES, "shape/size")
    both = sorted(col & shp)
    if both:
        raise VspInputError(
            f"{', '.join(repr(b) for b in both)} in both the colour ({col_src}) and the shape/size "
            f"({shp_src}) vocabulary; a property has one fine-grained type"
        )
    return col, shp, col_src, shp_src


def _report_unmatched(norms: Norms, vocab: frozenset[str], kind: str, where: str) -> None:
    """Log the vocabulary entries that name no kept visual perceptual property of ``norms``."""
    visual = {
        property_key(p)
        for p, c in zip(norms.properties, norms.feature_class, strict=True)
        if c == "visual perceptual"
    }
    kept = {property_key(p) for p in norms.properties}
    missing = sorted(vocab - visual)
    if not missing:
        return
    shown = ", ".join(repr(m) + ("" if m not in kept else " (not visual perceptual)") for m in missing[:10])
    more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
    level = logging.INFO if where == "default" else logging.WARNING
    log.log(
        level,
        "%s: %d of %d %s vocabulary entries (%s) name no kept visual perceptual property: %s%s",
        norms.source,
        len(missing),
        len(vocab),
        kind,
        where,
        shown,
        more,
    )


def _mcrae_shape_words(words: Iterable[str]) -> bool:
    return bool(set(words) & SHAPE_SIZE_WORDS)


def mcrae_fine_grained_type(feature: str, feature_class: str, br_label: str | None = None) -> str:
    """Fine-grained type of a McRae property such as ``is_red`` or ``used_for_cutting`` (see module doc)."""
    words = [w for w in re.split(r"[_/\s]+", feature.strip().lower()) if w]
    first = words[0] if words else ""
    if feature_class == "visual perceptual":
        if br_label == "visual-colour":
            return "colour"
        if first in ("is", "different") and _mcrae_shape_words(words[1:]):
            return "shape/size"
    if first == "made" and len(words) > 1 and words[1] == "of":
        return "made-of"
    if first in _MCRAE_HAS:
        return "has"
    if feature_class == "taxonomic" or first in _MCRAE_IS:
        return "is"
    if (first.endswith("ed") and len(first) > 3) or first in _IRREGULAR_PARTICIPLES:
        return "is"
    return "does"


def _majority(counts: Counter, order: Iterable[str]) -> str:
    """The most frequent key; ties go to the key that comes first in ``order``."""
    rank = {k: i for i, k in enumerate(order)}
    return max(counts, key=lambda k: (counts[k], -rank.get(k, len(rank))))


# ----------------------------------------------------------------------------------------------- building


@dataclass
class _Pair:
    pf: float
    cls: str
    label: str | None  # McRae BR_Label (None for CSLB)


def _add_pair(pairs: dict[tuple[str, str], _Pair], key: tuple[str, str], new: _Pair) -> bool:
    """Insert a pair, combining a duplicate by the max-PF rule. Returns True when it was a duplicate."""
    old = pairs.get(key)
    if old is None:
        pairs[key] = new
        return False
    rank = {c: i for i, c in enumerate(FEATURE_CLASSES)}
    if new.pf > old.pf or (new.pf == old.pf and rank[new.cls] < rank[old.cls]):
        pairs[key] = new
    return True


def _check_thresholds(min_pf: float, min_concepts: int) -> None:
    if isinstance(min_pf, bool) or not isinstance(min_pf, int | float) or not min_pf >= 0:
        raise VspInputError(f"min_pf must be a number >= 0, got {min_pf!r}")
    if isinstance(min_concepts, bool) or not isinstance(min_concepts, int) or min_concepts < 1:
        raise VspInputError(f"min_concepts must be an integer >= 1, got {min_concepts!r}")


def _build(
    pairs: Mapping[tuple[str, str], _Pair],
    min_pf: float,
    min_concepts: int,
    source: str,
    fine: Callable[[str, str, str | None], str],
) -> Norms:
    kept = {k: p for k, p in pairs.items() if p.pf >= min_pf}
    concepts_per_feature: dict[str, int] = Counter(f for _, f in kept)
    properties = sorted(f for f, n in concepts_per_feature.items() if n >= min_concepts)
    if not properties:
        raise VspInputError(
            f"{source}: no property has pf >= {min_pf} for >= {min_concepts} concepts; "
            "lower min_pf / min_concepts (--min-pf / --min-concepts)"
        )
    prop_set = set(properties)
    kept = {k: p for k, p in kept.items() if k[1] in prop_set}
    concepts = sorted({c for c, _ in kept})
    n_all = len({c for c, _ in pairs})
    if len(concepts) < n_all:
        log.info(
            "%s: %d of %d concepts have no kept property and are left out",
            source,
            n_all - len(concepts),
            n_all,
        )
    ci = {c: i for i, c in enumerate(concepts)}
    pi = {p: j for j, p in enumerate(properties)}
    pf = np.zeros((len(concepts), len(properties)), dtype=np.float32)
    binary = np.zeros((len(concepts), len(properties)), dtype=np.uint8)
    classes: dict[str, Counter] = defaultdict(Counter)
    labels: dict[str, Counter] = defaultdict(Counter)
    for (c, f), p in kept.items():
        pf[ci[c], pi[f]] = p.pf
        binary[ci[c], pi[f]] = 1  # also when min_pf == 0 lets a pair with pf 0 through
        classes[f][p.cls] += 1
        if p.label is not None:
            labels[f][p.label] += 1
    feature_class = [_majority(classes[f], FEATURE_CLASSES) for f in properties]
    fine_grained = [
        fine(f, cls, _majority(labels[f], sorted(labels[f])) if labels[f] else None)
        for f, cls in zip(properties, feature_class, strict=True)
    ]
    binary.setflags(write=False)
    pf.setflags(write=False)
    norms = Norms(concepts, properties, binary, pf, feature_class, fine_grained, source)
    log.info(
        "%s: %d concepts x %d properties (min_pf=%s, min_concepts=%d)",
        source,
        len(concepts),
        len(properties),
        min_pf,
        min_concepts,
    )
    return norms


# ----------------------------------------------------------------------------------------------- CSLB


def _text_lines(source: str, data: bytes) -> list[str]:
    """Split into lines at LF (a CR before the LF is dropped); lone CRs stay inside their field."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise VspInputError(
            f"{source}, line {line}: not UTF-8 text ({exc.reason}); save the file as UTF-8"
        ) from exc
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in text.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    if lines and "\r" in lines[0]:
        raise VspInputError(
            f"{source}, line 1: lines end in a bare CR (classic Mac OS line endings); "
            "save the file with LF or CRLF line endings"
        )
    return lines


def _check_header(header: list[str], where: str, unit: str = "line") -> None:
    """Refuse a header that names a column twice (which one would be read is a guess)."""
    seen: dict[str, int] = {}
    for i, name in enumerate(header, start=1):
        if not name:
            continue
        if name in seen:
            raise VspInputError(
                f"{where}, {unit} 1: column {name!r} appears more than once (fields {seen[name]} and {i}); "
                "keep one"
            )
        seen[name] = i


def _check_pf_range(pf: float, raw: Any, where: str, line: int, unit: str, column: str) -> float:
    if not math.isfinite(pf) or not 0 <= pf <= MAX_PF:
        raise VspInputError(
            f"{where}, {unit} {line}: {column} {raw!r} is not a number from 0 to {MAX_PF:g} "
            "(a production frequency counts participants)"
        )
    return pf


def _parse_pf(value: str, where: str, line: int, unit: str = "line", column: str = "pf") -> float:
    if not _PLAIN_NUMBER.fullmatch(value):
        raise VspInputError(
            f"{where}, {unit} {line}: {column} {value!r} is not a non-negative number "
            "(plain decimal digits, e.g. 5 or 5.0)"
        )
    return _check_pf_range(float(value), value, where, line, unit, column)


def load_cslb(
    path: str | os.PathLike,
    min_pf: float = 5,
    min_concepts: int = 5,
    colour_vocabulary: VocabularyLike = None,
    shape_vocabulary: VocabularyLike = None,
) -> Norms:
    """Load CSLB ``norms.dat`` and filter it (see the module docstring for every rule).

    Args:
        path: local path or ``s3://bucket/key`` URI of a CSLB-format ``norms.dat``.
        min_pf: keep (concept, property) pairs with production frequency >= this.
        min_concepts: then keep properties that occur for >= this many concepts.
        colour_vocabulary: the visual perceptual properties of fine-grained type ``colour``: a file (one
            property per line; :func:`load_vocabulary`) or a list of names; default
            :data:`COLOUR_PROPERTIES`, the authors' 16.
        shape_vocabulary: the same for ``shape/size``; default :data:`SHAPE_SIZE_PROPERTIES` (13).

    Raises:
        VspInputError: malformed file (the message names the file and 1-based line), nothing is left
            after filtering, or a vocabulary that is empty or shares a name with the other.
        FileNotFoundError: no such file.
    """
    _check_thresholds(min_pf, min_concepts)
    colours, shapes, colour_src, shape_src = _vocabularies(colour_vocabulary, shape_vocabulary)
    source = os.fspath(path)
    data = read_uri(source)
    lines = _text_lines(source, data)
    if not any(ln.strip() for ln in lines):
        raise VspInputError(
            f"{source}, line 1: empty file; expected a tab-separated header {', '.join(CSLB_COLUMNS)}"
        )
    header = [h.strip().lower() for h in lines[0].split("\t")]
    _check_header(header, source)
    missing = [c for c in CSLB_REQUIRED_COLUMNS if c not in header]
    if missing:
        raise VspInputError(
            f"{source}, line 1: missing column(s) {', '.join(repr(m) for m in missing)} in the header "
            f"{lines[0]!r}; a CSLB norms file is tab-separated with columns {', '.join(CSLB_COLUMNS)}"
        )
    col = {c: header.index(c) for c in CSLB_REQUIRED_COLUMNS}
    pairs: dict[tuple[str, str], _Pair] = {}
    n_rows = n_dup = 0
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            hint = " (the line holds a bare CR: mixed line endings?)" if "\r" in line else ""
            raise VspInputError(
                f"{source}, line {lineno}: {len(fields)} tab-separated fields, the header has {len(header)}"
                + hint
            )
        concept = fields[col["concept"]].strip()
        feature = fields[col["feature"]].strip()
        if not concept or not feature:
            raise VspInputError(f"{source}, line {lineno}: empty concept or feature")
        ftype = " ".join(fields[col["feature type"]].replace("_", " ").replace("-", " ").lower().split())
        if ftype not in CSLB_FEATURE_TYPES:
            raise VspInputError(
                f"{source}, line {lineno}: unknown feature type {fields[col['feature type']]!r}; "
                f"expected one of {', '.join(FEATURE_CLASSES)}"
            )
        pf = _parse_pf(fields[col["pf"]].strip(), source, lineno)
        n_rows += 1
        n_dup += _add_pair(pairs, (concept, feature), _Pair(pf, CSLB_FEATURE_TYPES[ftype], None))
    if n_rows == 0:
        raise VspInputError(f"{source}, line 1: no data rows after the header")
    if n_dup:
        log.info("%s: combined %d duplicate (concept, feature) rows (max PF)", source, n_dup)
    norms = _build(
        pairs, min_pf, min_concepts, source, lambda f, cls, _label: fine_grained_type(f, cls, colours, shapes)
    )
    _report_unmatched(norms, colours, "colour", colour_src)
    _report_unmatched(norms, shapes, "shape/size", shape_src)
    return norms


# ----------------------------------------------------------------------------------------------- McRae


def load_mcrae(path: str | os.PathLike, min_pf: float = 5, min_concepts: int = 5) -> Norms:
    """Load the McRae et al. (2005) norms: ``CONCS_FEATS_concstats_brm.xlsx``, sheet ``concepts_features``.

    Production frequencies are out of 30 participants. Feature classes come from ``BR_Label`` through
    :data:`MCRAE_BR_CLASSES`; the other rules are those of :func:`load_cslb`. Errors name the file, sheet and
    1-based spreadsheet row.
    """
    with warnings.catch_warnings():  # the McRae file carries a worksheet extension openpyxl warns about
        warnings.filterwarnings("ignore", message="Unknown extension", category=UserWarning)
        return _load_mcrae(path, min_pf, min_concepts)


def _load_mcrae(path: str | os.PathLike, min_pf: float, min_concepts: int) -> Norms:
    _check_thresholds(min_pf, min_concepts)
    import openpyxl

    source = os.fspath(path)
    try:
        wb = openpyxl.load_workbook(io.BytesIO(read_uri(source)), read_only=True, data_only=True)
    except (FileNotFoundError, VspInputError):
        raise
    except Exception as exc:  # openpyxl raises zipfile / KeyError / InvalidFileException on bad files
        raise VspInputError(f"{source}: not a readable .xlsx workbook ({exc})") from exc
    try:
        if MCRAE_SHEET not in wb.sheetnames:
            raise VspInputError(f"{source}: no sheet {MCRAE_SHEET!r} (sheets: {', '.join(wb.sheetnames)})")
        where = f"{source} [sheet {MCRAE_SHEET}]"
        rows = wb[MCRAE_SHEET].iter_rows(values_only=True)
        header_row = next(rows, None)
        if header_row is None:
            raise VspInputError(
                f"{where}, row 1: empty sheet; expected a header {', '.join(MCRAE_REQUIRED_COLUMNS)}"
            )
        header = [str(h).strip() if h is not None else "" for h in header_row]
        _check_header(header, where, "row")
        missing = [c for c in MCRAE_REQUIRED_COLUMNS if c not in header]
        if missing:
            raise VspInputError(f"{where}, row 1: missing column(s) {', '.join(repr(m) for m in missing)}")
        col = {c: header.index(c) for c in MCRAE_REQUIRED_COLUMNS}
        pairs: dict[tuple[str, str], _Pair] = {}
        n_rows = n_dup = 0
        for rowno, row in enumerate(rows, start=2):
            if row is None or all(v is None or str(v).strip() == "" for v in row):
                continue

            def cell(name: str, row: tuple = row) -> Any:
                i = col[name]
                return row[i] if i < len(row) else None

            concept = str(cell("Concept") or "").strip()
            feature = str(cell("Feature") or "").strip()
            if not concept or not feature:
                raise VspInputError(f"{where}, row {rowno}: empty Concept or Feature")
            br = str(cell("BR_Label") or "").strip()
            if br not in MCRAE_BR_CLASSES:
                raise VspInputError(
                    f"{where}, row {rowno}: unknown BR_Label {br!r}; "
                    f"expected one of {', '.join(MCRAE_BR_CLASSES)}"
                )
            raw = cell("Prod_Freq")
            if isinstance(raw, bool) or raw is None:
                raise VspInputError(f"{where}, row {rowno}: Prod_Freq {raw!r} is not a non-negative number")
            pf = (
                _check_pf_range(float(raw), raw, where, rowno, "row", "Prod_Freq")
                if isinstance(raw, int | float)
                else _parse_pf(str(raw).strip(), where, rowno, "row", "Prod_Freq")
            )
            n_rows += 1
            n_dup += _add_pair(pairs, (concept, feature), _Pair(pf, MCRAE_BR_CLASSES[br], br))
    finally:
        wb.close()
    if n_rows == 0:
        raise VspInputError(f"{where}, row 1: no data rows after the header")
    if n_dup:
        log.info("%s: combined %d duplicate (concept, feature) rows (max PF)", source, n_dup)
    return _build(pairs, min_pf, min_concepts, source, mcrae_fine_grained_type)
