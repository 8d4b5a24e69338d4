from __future__ import annotations

import pytest

import vsp.data.benchmarks as benchmarks
import vsp.data.concepts as concepts
from vsp.data.concepts import sense, strip_sense, to_word, tokens, word_variants


@pytest.mark.parametrize(
    ("name", "stripped", "word", "sense_"),
    [
        ("bat_(animal)", "bat", "bat", "animal"),
        ("organ_(musical_instrument)", "organ", "organ", "musical instrument"),
        ("coffee_machine", "coffee_machine", "coffee machine", None),
        ("chest_of_drawers", "chest_of_drawers", "chest of drawers", None),
        ("dates", "dates", "dates", None),
        ("dates (fruit)", "dates", "dates", "fruit"),
        ("yo-yo", "yo-yo", "yo-yo", None),
    ],
)
def test_names(name: str, stripped: str, word: str, sense_: str | None) -> None:
    assert strip_sense(name) == stripped
    assert to_word(name) == word
    assert sense(name) == sense_


def test_tokens_and_variants() -> None:
    assert tokens("chest_of_drawers") == ["chest", "of", "drawers"]
    assert word_variants("coffee_machine") == [
        "coffee machine",
        "coffee_machine",
        "coffee-machine",
        "coffeemachine",
    ]
    assert word_variants("bat_(animal)") == ["bat", "bat_(animal)"]
    assert word_variants("dates") == ["dates"]


@pytest.mark.parametrize(
    "name", ["MatchedPair", "load_men", "load_simlex", "match_pairs", "matched_concepts"]
)
def test_benchmark_names_still_import_from_concepts_with_a_warning(name: str) -> None:
    with pytest.warns(DeprecationWarning, match=f"vsp.data.benchmarks.{name}"):
        assert getattr(concepts, name) is getattr(benchmarks, name)


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        concepts.no_such_name  # noqa: B018
