"""Word-similarity benchmarks on concept embeddings (paper Table 3): MEN and SimLex-999 restricted to CSLB.

A benchmark pair is kept when both of its words equal a CSLB concept name as written in the norms
(`vsp.data.benchmarks.match_pairs`, mode ``"exact"``): 104 MEN pairs (natural form), 48 SimLex-999. For an
embedding given as ``(concepts, matrix)`` the score of a pair is the cosine similarity of the two concept
vectors, and the result is Spearman's rho (``scipy.stats.spearmanr``) between those cosines and the human
ratings, over the pairs the embedding can score (both concepts have a vector). ``n_pairs`` is the size of
the benchmark subset, ``n_scored`` the number of pairs actually scored; when ``n_scored < n_pairs`` the rho
is over fewer pairs and is not strictly comparable with the paper. Fewer than 3 scored pairs (or constant
cosines or ratings) give NaN.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from vsp.data.benchmarks import MatchedPair, load_men, load_simlex, match_pairs
from vsp.errors import VspInputError

log = logging.getLogger(__name__)

__all__ = ["BENCHMARKS", "ROW_COLUMNS", "benchmark_pairs", "score_embedding", "similarity_table"]

ROW_COLUMNS = ("embedding", "benchmark", "n_pairs", "n_scored", "spearman")
#: benchmark name -> path under the shared data folder
BENCHMARKS = {"MEN": "men/MEN_dataset_natural_form_full", "SimLex-999": "simlex999/SimLex-999.txt"}

Pair = tuple[str, str, float]


def benchmark_pairs(
    concepts: Iterable[str],
    men: str | os.PathLike | None = None,
    simlex: str | os.PathLike | None = None,
    mode: str = "exact",
) -> dict[str, list[Pair]]:
    """Load MEN and/or SimLex-999 and keep the pairs whose two words are concepts.

    Returns ``{"MEN": [(concept1, concept2, rating), ...], "SimLex-999": [...]}`` for the files given.
    """
    concepts = list(concepts)
    out: dict[str, list[Pair]] = {}
    for name, path, loader in (("MEN", men, load_men), ("SimLex-999", simlex, load_simlex)):
        if path is None:
            continue
        matched: list[MatchedPair] = match_pairs(loader(path), concepts, mode=mode)
        out[name] = [(m.concept1, m.concept2, m.score) for m in matched]
        log.info(
            "%s: %d pairs with both words among %d concepts (%s match)",
            name,
            len(matched),
            len(concepts),
            mode,
        )
    return out


def _as_pair(embedding: Any) -> tuple[list[str], np.ndarray]:
    if hasattr(embedding, "concepts") and hasattr(embedding, "matrix"):
        concepts, matrix = embedding.concepts, embedding.matrix
    else:
        concepts, matrix = embedding
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != len(concepts):
        raise VspInputError(f"similarity: {len(concepts)} concepts but matrix shape {matrix.shape}")
    return list(concepts), matrix


def score_embedding(
    embedding: Any, pairs: Sequence[Sequence], benchmark: str = "", name: str = "embedding"
) -> dict[str, Any]:
    """Spearman rho between cosine similarity and ratings over the pairs this embedding can score.

    Args:
        embedding: ``(concepts, matrix)`` or an object with ``.concepts`` and ``.matrix``.
        pairs: ``(concept1, concept2, rating)`` triples.
        benchmark: benchmark name, copied into the row.
        name: embedding name, copied into the row.

    Returns:
        ``{"embedding", "benchmark", "n_pairs", "n_scored", "spearman"}``.
    """
    concepts, matrix = _as_pair(embedding)
    pos = {c: i for i, c in enumerate(concepts)}
    norms = np.linalg.norm(matrix, axis=1)
    cos, gold = [], []
    for p in pairs:
        c1, c2, rating = p[0], p[1], float(p[2])
        i, j = pos.get(c1), pos.get(c2)
        if i is None or j is None or norms[i] == 0 or norms[j] == 0:
            continue
        cos.append(float(matrix[i] @ matrix[j] / (norms[i] * norms[j])))
        gold.append(rating)
    if len(cos) >= 3 and np.ptp(cos) > 0 and np.ptp(gold) > 0:
        rho = float(spearmanr(cos, gold).statistic)
    else:
        rho = float("nan")
        log.warning(
            "%s on %s: Spearman undefined (%d scored pairs, or constant values)", name, benchmark, len(cos)
        )
    if len(cos) < len(pairs):
        log.info(
            "%s on %s: %d of %d pairs scored (concepts without a vector)",
            name,
            benchmark,
            len(cos),
            len(pairs),
        )
    return {
        "embedding": name,
        "benchmark": benchmark,
        "n_pairs": len(pairs),
        "n_scored": len(cos),
        "spearman": rho,
    }


def similarity_table(
    embeddings: Mapping[str, Any], benchmarks: Mapping[str, Sequence[Sequence]]
) -> list[dict]:
    """One row (`ROW_COLUMNS`) per (embedding, benchmark)."""
    return [
        score_embedding(emb, pairs, benchmark=b, name=e)
        for e, emb in embeddings.items()
        for b, pairs in benchmarks.items()
    ]
