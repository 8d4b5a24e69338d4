"""Word-similarity benchmarks (MEN, SimLex-999): loaders, and matching their word pairs to norm concepts.

Benchmark matching (:func:`match_pairs`) has three modes:

- ``"exact"``: both words equal a concept name as written in the norms, case-sensitive. This is the paper's
  matching: 104 MEN pairs (``MEN_dataset_natural_form_full``, 97 concepts) and 48 SimLex-999 pairs
  (72 concepts) with CSLB.
- ``"strip_sense"``: a word matches a concept name exactly or a concept's sense-stripped name
  (``pipe`` -> ``pipe_(smoking)``; SimLex-999 gives 49 pairs).
- ``"variants"``: a word (lower-cased) matches any of :func:`vsp.data.concepts.word_variants` of a concept.

A word that matches several concepts (``crane`` -> ``crane_(bird)``, ``crane_(equipment)``) is ambiguous:
by default (``ambiguous="skip"``) the pair is dropped, since the benchmark does not say which sense it
means; ``ambiguous="all"`` keeps one match per combination of senses (MEN then has 105 benchmark pairs,
bus-crane twice).
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from vsp.data.concepts import strip_sense, word_variants
from vsp.data.norms import _text_lines
from vsp.errors import VspInputError
from vsp.io.store import read_uri

log = logging.getLogger(__name__)

MATCH_MODES = ("exact", "strip_sense", "variants")
AMBIGUOUS_POLICIES = ("skip", "all")

Pair = tuple[str, str, float]


class MatchedPair(NamedTuple):
    """A benchmark pair whose two words were matched to norm concepts."""

    word1: str
    word2: str
    concept1: str
    concept2: str
    score: float


# ----------------------------------------------------------------------------------------------- matching


def _index(concepts: Iterable[str], mode: str) -> tuple[set[str], dict[str, list[str]]]:
    exact = set(concepts)
    alt: dict[str, list[str]] = defaultdict(list)
    for c in sorted(exact):
        if mode == "strip_sense":
            keys = {strip_sense(c)}
        elif mode == "variants":
            keys = {v.lower() for v in word_variants(c)}
        else:
            keys = set()
        for k in keys:
            alt[k].append(c)
    return exact, alt


def _lookup(word: str, exact: set[str], alt: dict[str, list[str]], mode: str) -> list[str]:
    if word in exact:
        return [word]
    if mode == "exact":
        return []
    key = word.strip().lower() if mode == "variants" else word.strip()
    return alt.get(key, [])


def match_pairs(
    pairs: Iterable[Sequence],
    concepts: Iterable[str],
    mode: str = "exact",
    ambiguous: str = "skip",
) -> list[MatchedPair]:
    """Keep the benchmark pairs whose two words both match a concept (modes: see the module docstring).

    Args:
        pairs: ``(word1, word2, score)`` triples, e.g. from :func:`load_men` or :func:`load_simlex`.
        concepts: concept names as written in the norms (e.g. ``Norms.concepts``).
        mode: ``"exact"`` (the paper's), ``"strip_sense"`` or ``"variants"``.
        ambiguous: ``"skip"`` drops a pair with a word that matches several concepts; ``"all"`` keeps one
            match per sense combination.

    Returns:
        The matches in benchmark order.
    """
    if mode not in MATCH_MODES:
        raise VspInputError(f"unknown match mode {mode!r}; expected one of {', '.join(MATCH_MODES)}")
    if ambiguous not in AMBIGUOUS_POLICIES:
        raise VspInputError(
            f"unknown ambiguous policy {ambiguous!r}; expected one of {', '.join(AMBIGUOUS_POLICIES)}"
        )
    exact, alt = _index(concepts, mode)
    out: list[MatchedPair] = []
    n_ambiguous = 0
    for pair in pairs:
        w1, w2, score = pair[0], pair[1], float(pair[2])
        c1s, c2s = _lookup(w1, exact, alt, mode), _lookup(w2, exact, alt, mode)
        if not c1s or not c2s:
            continue
        if (len(c1s) > 1 or len(c2s) > 1) and ambiguous == "skip":
            n_ambiguous += 1
            log.debug("ambiguous pair %s-%s skipped: %s / %s", w1, w2, c1s, c2s)
            continue
        out.extend(MatchedPair(w1, w2, c1, c2, score) for c1 in c1s for c2 in c2s)
    if n_ambiguous:
        log.info("%d benchmark pairs skipped because a word matches several concept senses", n_ambiguous)
    return out


def matched_concepts(matches: Iterable[MatchedPair]) -> list[str]:
    """The distinct concepts that occur in matched pairs, sorted."""
    return sorted({c for m in matches for c in (m.concept1, m.concept2)})


# ----------------------------------------------------------------------------------------------- benchmarks


def _score(value: str, source: str, line: int) -> float:
    try:
        score = float(value)
    except ValueError:
        score = math.nan
    if not math.isfinite(score):
        raise VspInputError(f"{source}, line {line}: score {value!r} is not a number")
    return score


def load_men(path: str | os.PathLike, strip_pos: bool = False) -> list[Pair]:
    """Read MEN (Bruni et al. 2014): one ``word1 word2 score`` per line, whitespace-separated, score 0-50.

    An optional header line ``word1 word2 score`` is skipped and blank lines are ignored. ``strip_pos=True``
    drops the POS tag of the lemma form (``sun-n`` -> ``sun``).

    Raises:
        VspInputError: empty file, a line without exactly three fields, or a non-numeric score
            (the message names the file and the 1-based line).
    """
    source = os.fspath(path)
    data = read_uri(source)
    lines = _text_lines(source, data)
    out: list[Pair] = []
    for lineno, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        if lineno == 1 and [f.lower() for f in fields] == ["word1", "word2", "score"]:
            continue
        if len(fields) != 3:
            raise VspInputError(
                f"{source}, line {lineno}: expected 'word1 word2 score', got {len(fields)} fields"
            )
        w1, w2 = fields[0], fields[1]
        if strip_pos:
            w1, w2 = (re.sub(r"-[a-z]$", "", w) for w in (w1, w2))
        out.append((w1, w2, _score(fields[2], source, lineno)))
    if not out:
        raise VspInputError(f"{source}, line 1: empty file; expected lines 'word1 word2 score'")
    return out


SIMLEX_COLUMNS = ("word1", "word2", "SimLex999")


def load_simlex(path: str | os.PathLike) -> list[Pair]:
    """Read SimLex-999 (Hill et al. 2015): tab-separated with a header holding ``word1 word2 ... SimLex999``.

    Raises:
        VspInputError: empty file, missing column, ragged row or non-numeric score (the message names the
            file and the 1-based line).
    """
    source = os.fspath(path)
    data = read_uri(source)
    lines = _text_lines(source, data)
    if not any(ln.strip() for ln in lines):
        raise VspInputError(
            f"{source}, line 1: empty file; expected a tab-separated header with {SIMLEX_COLUMNS}"
        )
    header = [h.strip() for h in lines[0].split("\t")]
    missing = [c for c in SIMLEX_COLUMNS if c not in header]
    if missing:
        raise VspInputError(
            f"{source}, line 1: missing column(s) {', '.join(repr(m) for m in missing)} in the header "
            f"{lines[0]!r}; SimLex-999 is tab-separated with columns {', '.join(SIMLEX_COLUMNS)}, ..."
        )
    i1, i2, iscore = (header.index(c) for c in SIMLEX_COLUMNS)
    out: list[Pair] = []
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            raise VspInputError(
                f"{source}, line {lineno}: {len(fields)} tab-separated fields, the header has {len(header)}"
            )
        w1, w2 = fields[i1].strip(), fields[i2].strip()
        if not w1 or not w2:
            raise VspInputError(f"{source}, line {lineno}: empty word1 or word2")
        out.append((w1, w2, _score(fields[iscore].strip(), source, lineno)))
    if not out:
        raise VspInputError(f"{source}, line 1: no data rows after the header")
    return out
