"""Concept names -> words: the text forms under which a norm concept is looked up.

CSLB concept names are lower case; multiword names use underscores (``coffee_machine``,
``chest_of_drawers``) and a sense is a parenthesised suffix (``bat_(animal)``,
``organ_(musical_instrument)``).

- :func:`strip_sense` drops the sense suffix: ``bat_(animal)`` -> ``bat``.
- :func:`to_word` is the text form used to look a concept up in word embeddings: sense dropped, underscores
  -> spaces (``coffee_machine`` -> ``coffee machine``). :func:`tokens` splits it into words.
- :func:`word_variants` lists spellings to try, most natural first.

The MEN / SimLex-999 loaders and their matching to concepts live in :mod:`vsp.data.benchmarks`.
"""

from __future__ import annotations

import re
from typing import Any

_SENSE = re.compile(r"[\s_]*\([^()]*\)\s*$")

# Moved to vsp.data.benchmarks; importable from here for one release (see __getattr__).
_MOVED_TO_BENCHMARKS = frozenset(
    {
        "AMBIGUOUS_POLICIES",
        "MATCH_MODES",
        "SIMLEX_COLUMNS",
        "MatchedPair",
        "Pair",
        "load_men",
        "load_simlex",
        "match_pairs",
        "matched_concepts",
    }
)


def __getattr__(name: str) -> Any:
    """Old names of the benchmark loaders, now in :mod:`vsp.data.benchmarks` (deprecated here)."""
    if name in _MOVED_TO_BENCHMARKS:
        import warnings

        from vsp.data import benchmarks

        warnings.warn(
            f"vsp.data.concepts.{name} moved to vsp.data.benchmarks.{name}; import it from there",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(benchmarks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------------------------------------- names


def strip_sense(name: str) -> str:
    """Drop a parenthesised sense suffix: ``bat_(animal)`` -> ``bat``; ``dates (fruit)`` -> ``dates``."""
    return _SENSE.sub("", name.strip())


def sense(name: str) -> str | None:
    """The sense in a name's suffix (``bat_(animal)`` -> ``animal``, underscores -> spaces), or None."""
    m = _SENSE.search(name.strip())
    if m is None:
        return None
    return " ".join(m.group(0).strip(" _()").replace("_", " ").split())


def to_word(name: str) -> str:
    """Text form of a concept name: no sense, ``_`` -> space (``coffee_machine`` -> ``coffee machine``)."""
    return " ".join(strip_sense(name).replace("_", " ").split())


def tokens(name: str) -> list[str]:
    """The words of :func:`to_word`: ``chest_of_drawers`` -> ``["chest", "of", "drawers"]``."""
    return to_word(name).split()


def word_variants(name: str) -> list[str]:
    """Spellings to try for a concept, most natural first, without duplicates.

    ``coffee_machine`` -> ``["coffee machine", "coffee_machine", "coffee-machine", "coffeemachine"]``;
    ``bat_(animal)`` -> ``["bat", "bat_(animal)"]`` (the exact name comes last when it differs).
    """
    words = tokens(name)
    out: list[str] = []
    for v in (" ".join(words), "_".join(words), "-".join(words), "".join(words), name.strip()):
        if v and v not in out:
            out.append(v)
    return out
