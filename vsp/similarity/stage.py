"""The `vsp similarity` stage: MEN / SimLex-999 (or your own pair files) on every stored embedding (Table 3).

Pairs are kept when both words equal a concept name of the run exactly
(`vsp.similarity.score.benchmark_pairs`;
on the real CSLB norms: 104 MEN pairs, 48 SimLex-999 pairs). The run's concepts are those of the meta
manifest (the feature store's concepts, or the norms' for a text-only store). A custom pair file holds one
``word1 word2 score`` per line, whitespace-separated (MEN's format; an optional ``word1 word2 score``
header), the words being concept names as written in the norms; its benchmark name is the file's stem
unless given as ``NAME=PATH``.

Store layout::

    similarity/manifest.json             identity: digests of each embedding and each benchmark's pairs
    similarity/pairs/<benchmark>.parquet matched pairs: word1, word2, concept1, concept2, rating
    similarity/table3.parquet            embedding, benchmark, n_pairs, n_scored, spearman
    similarity/table3.txt                the printed table
    similarity/table3_intervals.parquet, table3_comparisons.parquet   intervals of every rho and Williams'
                                         tests between embeddings (`vsp.similarity.statistics`)

A rerun with the same embeddings and pairs is a no-op; other embeddings or pairs on the same prefix are
refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from vsp.config import setting
from vsp.data.benchmarks import MatchedPair, load_men, load_simlex, match_pairs
from vsp.errors import VspInputError
from vsp.io.bookkeeping import MarkerScan, open_manifest, scan_markers, write_marker, write_output
from vsp.io.store import Store
from vsp.meta.stage import MANIFEST as META_MANIFEST
from vsp.meta.stage import embedding_names, read_embedding, write_text
from vsp.similarity.score import BENCHMARKS, score_embedding
from vsp.similarity.statistics import COMPARISONS as STATS_COMPARISONS
from vsp.similarity.statistics import INTERVALS as STATS_INTERVALS
from vsp.similarity.statistics import write_table3_statistics
from vsp.stage import Stage, StageContext

log = logging.getLogger(__name__)

__all__ = [
    "SimilaritySummary",
    "default_benchmarks",
    "read_table3",
    "run_similarity",
    "table3_text",
    "world_pairs",
]

ROOT = "similarity"
MANIFEST = f"{ROOT}/manifest.json"
TABLE3 = f"{ROOT}/table3.parquet"
TABLE3_TXT = f"{ROOT}/table3.txt"
MARKER = f"{ROOT}/done/table3.json"  # the stage's one unit: Table 3 and its pair lists


def _legacy_outputs(_marker: str, _doc: dict) -> list[dict]:
    return [{"key": TABLE3}]


def done_markers(store: Store) -> MarkerScan:
    """The Table 3 marker checked against its Parquet files.

    A store written before the stage had a marker (its manifest lacks ``markers``) counts as done when its
    Table 3 exists.
    """
    scan = scan_markers(store, f"{ROOT}/done", [ROOT], _legacy_outputs)
    legacy = store.exists(MANIFEST) and "markers" not in store.read_json(MANIFEST)
    if legacy and not scan.done and not scan.invalid and store.exists(TABLE3):
        scan.done[MARKER] = {"outputs": [{"key": TABLE3}], "legacy": True}
    return scan


def read_table3(store: Store):
    """Table 3 (embedding, benchmark, n_pairs, n_scored, spearman) when its marker proves it, else empty."""
    import pandas as pd

    scan = done_markers(store)
    keys = {o["key"] for doc in scan.done.values() for o in doc.get("outputs", ())}
    if TABLE3 not in keys:
        return pd.DataFrame(columns=TABLE3_SCHEMA.names)
    return store.read_parquet(TABLE3).to_pandas()


TABLE3_SCHEMA = pa.schema(
    [
        ("embedding", pa.string()),
        ("benchmark", pa.string()),
        ("n_pairs", pa.int64()),
        ("n_scored", pa.int64()),
        ("spearman", pa.float64()),
    ]
)


def default_benchmarks(shared_data: str | os.PathLike | None = None) -> dict[str, Path]:
    """MEN and SimLex-999 files that exist under the shared data folder.

    The folder: ``shared_data``, else env ``VSP_SHARED_DATA``, else ``<repo>/../shared/data``.
    """
    root = Path(
        shared_data
        or os.environ.get("VSP_SHARED_DATA")
        or Path(__file__).resolve().parents[2] / "shared" / "data"
    )
    found = {name: root / rel for name, rel in BENCHMARKS.items()}
    return {name: p for name, p in found.items() if p.is_file()}


def _load(name: str, path: str | os.PathLike) -> list:
    if name == "SimLex-999":
        return load_simlex(path)
    return load_men(path)  # MEN's format is also the custom pair format


@dataclass
class SimilaritySummary:
    """What `run_similarity` did."""

    store: str
    embeddings: int
    pairs: dict[str, int]
    ran: bool
    seconds: float
    empty: list[str] = field(default_factory=list)

    def line(self) -> str:
        """The stage's summary line."""
        counts = ", ".join(f"{b} {n} pairs" for b, n in self.pairs.items())
        if not self.ran:
            done = f"Table 3 already written for {self.embeddings} embeddings ({counts})"
            return f"similarity: nothing to do, {done}"
        line = (
            f"similarity: {self.embeddings} embeddings x {len(self.pairs)} benchmarks ({counts}) "
            f"-> {self.store}/{TABLE3}"
        )
        if self.empty:
            few = ", ".join(f"{b} ({self.pairs[b]})" for b in self.empty)
            line += (
                f"; fewer than 3 pairs have both words among this run's concepts for {few}, "
                "so their rho is NaN "
                "(pass a pair file whose words are the run's concept names with --pairs)"
            )
        return line


def run_similarity(
    store: Store,
    benchmarks: Mapping[str, str | os.PathLike],
    patterns: list[str] | None = None,
) -> SimilaritySummary:
    """Score every stored embedding on each benchmark (name -> file); write Table 3.

    Benchmark names ``MEN`` and ``SimLex-999`` are read with their own loaders, any other name as a
    ``word1 word2 score`` file.
    """
    t0 = time.perf_counter()
    if not benchmarks:
        raise VspInputError("no benchmark given: pass --men, --simlex or --pairs")
    names = embedding_names(store, patterns)
    if not names:
        raise VspInputError(f"{store.uri}: no embeddings; run `vsp meta` first")
    concepts = store.read_json(META_MANIFEST)["identity"]["concepts"]
    matched: dict[str, list[MatchedPair]] = {}
    for bname, path in benchmarks.items():
        matched[bname] = match_pairs(_load(bname, path), concepts, mode="exact")
        log.info("%s: %d pairs with both words among %d concepts", bname, len(matched[bname]), len(concepts))
    embs = {n: read_embedding(store, n) for n in names}
    identity = {
        "embeddings": {n: e.digest() for n, e in embs.items()},
        "benchmarks": {
            b: hashlib.sha256(json.dumps([list(m) for m in ms]).encode()).hexdigest()
            for b, ms in matched.items()
        },
        "benchmark_files": {b: str(p) for b, p in benchmarks.items()},
    }
    counts = {b: len(ms) for b, ms in matched.items()}
    empty = [b for b, n in counts.items() if n < 3]
    open_manifest(
        store, MANIFEST, identity, "similarity run (Table 3)", {"markers": 1}, ignore=("benchmark_files",)
    )
    if done_markers(store).done:
        write_text(store, TABLE3_TXT, table3_text(store))
        if not (store.exists(STATS_INTERVALS) and store.exists(STATS_COMPARISONS)):  # older Table 3
            write_table3_statistics(store)
        return SimilaritySummary(store.uri, len(names), counts, False, time.perf_counter() - t0, empty)
    outputs = []
    for b, ms in matched.items():
        t = pa.table(
            {
                "word1": [m.word1 for m in ms],
                "word2": [m.word2 for m in ms],
                "concept1": [m.concept1 for m in ms],
                "concept2": [m.concept2 for m in ms],
                "rating": pa.array([m.score for m in ms], pa.float64()),
            }
        )
        outputs.append(write_output(store, f"{ROOT}/pairs/{_safe(b)}.parquet", t))
    rows = []
    for n, e in embs.items():
        for b, ms in matched.items():
            pairs = [(m.concept1, m.concept2, m.score) for m in ms]
            if len(pairs) < 3:  # no rho: say so once in the summary line, not once per embedding
                have = set(e.concepts)
                scored = sum(p[0] in have and p[1] in have for p in pairs)
                rows.append(
                    {
                        "embedding": n,
                        "benchmark": b,
                        "n_pairs": len(pairs),
                        "n_scored": scored,
                        "spearman": float("nan"),
                    }
                )
                continue
            rows.append(score_embedding((e.concepts, e.matrix), pairs, benchmark=b, name=n))
    outputs.append(write_output(store, TABLE3, pa.Table.from_pylist(rows, schema=TABLE3_SCHEMA)))
    write_marker(store, MARKER, outputs, embeddings=len(names), benchmarks=counts)
    write_text(store, TABLE3_TXT, table3_text(store))
    write_table3_statistics(store)  # intervals and Williams tests beside Table 3 (vsp.similarity.statistics)
    return SimilaritySummary(store.uri, len(names), counts, True, time.perf_counter() - t0, empty)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def table3_text(store: Store) -> str:
    """Table 3 as text: Spearman rho per embedding x benchmark (scored / pairs); the paper's: `vsp report`."""
    df = store.read_parquet(TABLE3).to_pandas()
    benches = list(dict.fromkeys(df["benchmark"]))
    names = list(dict.fromkeys(df["embedding"]))
    width = max([len("embedding"), *(len(n) for n in names)]) + 2
    lines = [
        "Table 3: word similarity, Spearman rho between cosine and human ratings (pairs scored / pairs)",
        "embedding".ljust(width) + "".join(f"{b:>26}" for b in benches),
    ]
    for n in names:
        cells = []
        for b in benches:
            r = df[(df["embedding"] == n) & (df["benchmark"] == b)].iloc[0]
            rho = "  nan" if r["spearman"] is None or math.isnan(r["spearman"]) else f"{r['spearman']:.3f}"
            s = f"{rho} ({int(r['n_scored'])}/{int(r['n_pairs'])})"
            cells.append(f"{s:>26}")
        lines.append(n.ljust(width) + "".join(cells))
    return "\n".join(lines)


def world_pairs(world_json: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """A SYNTHETIC pair file for the demo world: every concept pair, rated from the generating attributes.

    The demo world's concept names form (almost) no MEN / SimLex-999 pair, so the demo scores its embeddings
    on this instead: rating = 4 x same category + 2 x same colour + 2 x same shape + same texture + same
    size (0-10). It shows the stage end to end; it is not a human benchmark.
    """
    spec = json.loads(Path(world_json).read_text(encoding="utf-8"))
    items = spec["concepts"]
    lines = ["word1 word2 score"]
    for i, a in enumerate(items):
        for b in items[i + 1 :]:
            score = (
                4 * (a["category"] == b["category"])
                + 2 * (a["colour"] == b["colour"])
                + 2 * (a["shape"] == b["shape"])
                + (a["texture"] == b["texture"])
                + (a["size"] == b["size"])
            )
            lines.append(f"{a['concept']} {b['concept']} {float(score):.1f}")
    out = Path(out_path)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


# ----------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class SimilarityConfig:
    """Word similarity (`vsp similarity`): benchmark files (default: the shared data's MEN, SimLex-999).

    Every field is identity (another benchmark file or selection is another Table 3).
    """

    men: str | None = setting(None, path=True, doc="MEN natural form file")
    simlex: str | None = setting(None, path=True, doc="SimLex-999.txt")
    # name -> file of 'word1 word2 score' lines (run file: a path, a list of paths or a mapping)
    pairs: dict[str, str] | None = setting(None, path=True)
    embeddings: tuple[str, ...] | None = setting(None, doc="names or fnmatch patterns (default: all)")

    def benchmarks(self) -> dict[str, str]:
        """Name -> path; the shared data's MEN / SimLex-999 when none is configured."""
        out: dict[str, str] = {}
        if self.men:
            out["MEN"] = self.men
        if self.simlex:
            out["SimLex-999"] = self.simlex
        out.update(self.pairs or {})
        if not out:
            out = {k: str(v) for k, v in default_benchmarks().items()}
        if not out:
            raise VspInputError(
                "similarity: no benchmark files: set similarity.men / similarity.simlex / similarity.pairs, "
                "or VSP_SHARED_DATA (MEN and SimLex-999 under it)"
            )
        return out


# ------------------------------------------------------------------------------------------------ the stage
class SimilarityStage(Stage):
    """MEN and SimLex-999 (or configured pair files) on every stored embedding (Table 3).

    Seconds of work: one unit, run in the driver with or without a cluster.
    """

    name = "similarity"
    root = ROOT
    Config = SimilarityConfig
    needs = ()
    unit_word = "table"

    def run(self, ctx: StageContext) -> dict[str, Any]:
        """Score every embedding on each benchmark; counts for run.json."""
        config = ctx.settings(self.name)
        benchmarks = config.benchmarks()
        patterns = list(config.embeddings) if config.embeddings else None
        summary = run_similarity(ctx.store, benchmarks, patterns=patterns)
        return {
            "embeddings": summary.embeddings,
            "pairs": dict(summary.pairs),
            "computed": summary.ran,
            "benchmark_files": benchmarks,
            "summary": summary.line(),
        }

    def marker_scans(self, store: Store) -> list[MarkerScan]:
        """Table 3's marker against its files (a store from before the marker included)."""
        return [done_markers(store)]

    def progress(self, store: Store) -> dict[str, Any] | None:
        """Its one unit: Table 3 with a marker that proves it."""
        if not store.exists(MANIFEST):
            return None
        done = int(bool(done_markers(store).done))
        return {"what": "table", "done": done, "total": 1, "complete": bool(done)}
