from __future__ import annotations

from pathlib import Path

import pytest

from vsp.data.benchmarks import MatchedPair, load_men, load_simlex, match_pairs, matched_concepts
from vsp.data.norms import load_cslb
from vsp.errors import VspInputError

CONCEPTS = ["bat_(animal)", "bat_(sporting)", "pipe_(smoking)", "cigar", "cat", "dog", "coffee_machine"]
PAIRS = [
    ("cat", "dog", 40.0),
    ("cat", "lion", 30.0),  # lion unknown
    ("pipe", "cigar", 7.5),  # needs strip_sense
    ("bat", "cat", 1.0),  # bat is ambiguous
    ("Cat", "dog", 40.0),  # exact is case-sensitive
    ("coffee-machine", "cat", 2.0),  # needs variants
]


def test_match_exact() -> None:
    m = match_pairs(PAIRS, CONCEPTS)
    assert m == [MatchedPair("cat", "dog", "cat", "dog", 40.0)]


def test_match_strip_sense_and_ambiguity() -> None:
    m = match_pairs(PAIRS, CONCEPTS, mode="strip_sense")
    assert [(x.concept1, x.concept2) for x in m] == [("cat", "dog"), ("pipe_(smoking)", "cigar")]
    m = match_pairs(PAIRS, CONCEPTS, mode="strip_sense", ambiguous="all")
    assert [(x.concept1, x.concept2) for x in m][2:] == [("bat_(animal)", "cat"), ("bat_(sporting)", "cat")]
    assert matched_concepts(m) == ["bat_(animal)", "bat_(sporting)", "cat", "cigar", "dog", "pipe_(smoking)"]


def test_match_variants() -> None:
    m = match_pairs(PAIRS, CONCEPTS, mode="variants")
    assert [(x.concept1, x.concept2) for x in m] == [
        ("cat", "dog"),
        ("pipe_(smoking)", "cigar"),
        ("cat", "dog"),
        ("coffee_machine", "cat"),
    ]


def test_match_bad_mode() -> None:
    with pytest.raises(VspInputError, match="match mode"):
        match_pairs(PAIRS, CONCEPTS, mode="fuzzy")
    with pytest.raises(VspInputError, match="ambiguous"):
        match_pairs(PAIRS, CONCEPTS, ambiguous="first")


# ----------------------------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def concepts(cslb_path: Path) -> list[str]:
    return load_cslb(cslb_path).concepts


def test_men_overlap(shared_data: Path, concepts: list[str]) -> None:
    men = load_men(shared_data / "men" / "MEN_dataset_natural_form_full")
    assert len(men) == 3000 and men[0] == ("sun", "sunlight", 50.0)
    m = match_pairs(men, concepts)
    assert len(m) == 104 and len(matched_concepts(m)) == 97  # the paper's 104
    assert len(match_pairs(men, concepts, mode="strip_sense")) == 104  # bus-crane is ambiguous: skipped
    m_all = match_pairs(men, concepts, mode="strip_sense", ambiguous="all")
    assert len({(x.word1, x.word2) for x in m_all}) == 105


def test_men_lemma_form(shared_data: Path, concepts: list[str]) -> None:
    lemma = load_men(shared_data / "men" / "MEN_dataset_lemma_form_full", strip_pos=True)
    assert len(match_pairs(lemma, concepts)) == 140  # PROVENANCE.md: why the paper used the natural form


def test_simlex_overlap(shared_data: Path, concepts: list[str]) -> None:
    sl = load_simlex(shared_data / "simlex999" / "SimLex-999.txt")
    assert len(sl) == 999 and sl[0] == ("old", "new", 1.58)
    m = match_pairs(sl, concepts)
    assert len(m) == 48 and len(matched_concepts(m)) == 72  # the paper's 48
    m = match_pairs(sl, concepts, mode="strip_sense")
    assert len(m) == 49 and ("pipe", "cigar") in {(x.word1, x.word2) for x in m}


# ----------------------------------------------------------------------------------------------- loaders


def test_load_men_header_and_blank_lines(tmp_path: Path) -> None:
    p = tmp_path / "men.txt"
    p.write_text("word1 word2 score\r\nsun sunlight 50.0\r\n\r\ncat-n dog-n 40\r\n")
    assert load_men(p) == [("sun", "sunlight", 50.0), ("cat-n", "dog-n", 40.0)]
    assert load_men(p, strip_pos=True)[1] == ("cat", "dog", 40.0)


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("", 1, "empty"),
        ("sun sunlight 50\ncat dog\n", 2, "2 fields"),
        ("sun sunlight 50\ncat dog high\n", 2, "'high'"),
        ("a b 1\nb c 2\nc d nan\n", 3, "'nan'"),
    ],
)
def test_load_men_malformed(tmp_path: Path, text: str, line: int, what: str) -> None:
    p = tmp_path / "men.txt"
    p.write_text(text)
    with pytest.raises(VspInputError) as err:
        load_men(p)
    msg = str(err.value)
    assert str(p) in msg and f"line {line}" in msg and what in msg, msg


SIMLEX_HEADER = "word1\tword2\tPOS\tSimLex999\tconc(w1)"


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("", 1, "empty"),
        (SIMLEX_HEADER + "\n", 1, "no data rows"),
        ("word1\tword2\tPOS\tscore\n", 1, "'SimLex999'"),
        (
            SIMLEX_HEADER + "\nold\tnew\tA\t1.58\t2.7\nsmart\tintelligent\tA\t9.2\n",
            3,
            "4 tab-separated fields",
        ),
        (SIMLEX_HEADER + "\nold\tnew\tA\thigh\t2.7\n", 2, "'high'"),
        (SIMLEX_HEADER + "\n\tnew\tA\t1\t2.7\n", 2, "empty word"),
    ],
)
def test_load_simlex_malformed(tmp_path: Path, text: str, line: int, what: str) -> None:
    p = tmp_path / "simlex.txt"
    p.write_text(text)
    with pytest.raises(VspInputError) as err:
        load_simlex(p)
    msg = str(err.value)
    assert str(p) in msg and f"line {line}" in msg and what in msg, msg


@pytest.mark.s3
def test_loaders_read_s3(s3_uri: str) -> None:
    from vsp.io.store import open_store

    store = open_store(s3_uri)
    store.write_bytes("men.txt", b"sun sunlight 50.0\ncat dog 40\n")
    store.write_bytes("simlex.txt", (SIMLEX_HEADER + "\nold\tnew\tA\t1.58\t2.7\n").encode())
    assert load_men(f"{s3_uri}/men.txt") == [("sun", "sunlight", 50.0), ("cat", "dog", 40.0)]
    assert load_simlex(f"{s3_uri}/simlex.txt") == [("old", "new", 1.58)]
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        load_men(f"{s3_uri}/nope.txt")
