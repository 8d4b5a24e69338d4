"""The report's statistics section: the uncertainty and the tests behind every headline number.

Each stage writes its own inference tables (``vsp.decode.inference``; the meta, mapping and similarity
stages' ``*_intervals`` / ``*_comparisons`` files); this module only reads them through the stages' readers
and lays them out: one HTML table and one CSV per part, in the order of the paper's figures and tables. A
part whose stage has not written its statistics is left out with a line saying how to get it.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from vsp.io.store import Store

log = logging.getLogger(__name__)

#: (part id, heading, what it says) in the order they are shown
PARTS: list[tuple[str, str, str]] = [
    (
        "decode_intervals",
        "Figures 1-2: mean F1 x 100 [95% bootstrap interval over properties]",
        "Each network's best convolutional layer and its penultimate layer; every layer's interval is drawn "
        "as the band around its line in Figures 1-2.",
    ),
    (
        "decode_significance",
        "Decodable properties per layer (permutation tests)",
        "A property is decodable at a layer when its permutation p-value, adjusted by Benjamini-Hochberg "
        "over the layer's properties, is at most the FDR; the max-statistic column corrects across the "
        "network's layers instead (family-wise). Per-property p-values: decode/significance.parquet.",
    ),
    (
        "decode_selectivity",
        "Selectivity over a random-weight network (F1 x 100)",
        "The same images and layers through the same architecture with seeded random weights, decoded with "
        "the same folds: selectivity = F1(trained) - F1(random), with a paired bootstrap interval over the "
        "properties.",
    ),
    (
        "meta_intervals",
        "Tables 1 and 4: mean F1 [95% bootstrap interval over properties]",
        "Every cell of Tables 1 and 4 (F1 as a fraction) with its interval.",
    ),
    (
        "meta_comparisons",
        "Tables 1 and 4: each embedding against its network's penultimate layer",
        "Paired on the same properties: the mean F1 difference with a bootstrap interval and a sign-flip "
        "permutation p-value; p_bh adjusts over the table (Benjamini-Hochberg).",
    ),
    (
        "table2_intervals",
        "Table 2: Hit@T (%) with 95% intervals over the folds",
        "A bootstrap of the pooled ratio over the repeated-CV folds (folds share training concepts, so the "
        "intervals are somewhat optimistic).",
    ),
    (
        "table2_comparisons",
        "Table 2: paired comparisons between embeddings on the same folds",
        "Mean per-fold difference of Hit@T (points) with a bootstrap interval and a sign-flip p-value; only "
        "folds with the same test concepts are paired.",
    ),
    (
        "table3_intervals",
        "Table 3: every Spearman rho with its 95% intervals",
        "Fisher z (Bonett-Wright standard error for Spearman) and a bootstrap over the pairs.",
    ),
    (
        "table3_comparisons",
        "Table 3: two embeddings on the same pairs (Williams' test)",
        "Whether two rhos that share the human ratings differ: Williams' t on the pairs both embeddings "
        "score, with r_ab the correlation of their cosine lists; p_bh adjusts over one benchmark.",
    ),
]


def _pair(reader: Callable[[Store], Any], store: Store, a: str, b: str) -> dict[str, pd.DataFrame]:
    got = reader(store)
    if got is None:
        return {}
    first, second = got
    return {k: v for k, v in ((a, first), (b, second)) if v is not None and len(v)}


def collect(store: Store) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """Every statistics table the run's stages wrote, by part id; and a note per reader that failed."""
    frames: dict[str, pd.DataFrame] = {}
    notes: list[str] = []
    readers: list[tuple[str, Callable[[], dict[str, pd.DataFrame]]]] = [
        ("decode", lambda: _decode(store)),
        ("meta", lambda: _stage(store, "vsp.meta.statistics", "read_decodability_statistics", "meta")),
        ("map", lambda: _stage(store, "vsp.mapping.statistics", "read_table2_statistics", "table2")),
        (
            "similarity",
            lambda: _stage(store, "vsp.similarity.statistics", "read_table3_statistics", "table3"),
        ),
    ]
    for name, read in readers:
        try:
            frames.update(read())
        except Exception as exc:  # noqa: BLE001 - one stage's odd table must not sink the report
            log.warning("report: the %s statistics could not be read: %s", name, exc)
            notes.append(f"{name}: {exc}")
    return frames, notes


def _decode(store: Store) -> dict[str, pd.DataFrame]:
    from vsp.decode.inference import read_inference

    return {f"decode_{k}": v for k, v in read_inference(store).items() if len(v)}


def _stage(store: Store, module: str, reader: str, prefix: str) -> dict[str, pd.DataFrame]:
    import importlib

    fn = getattr(importlib.import_module(module), reader, None)
    if fn is None:
        return {}
    return _pair(fn, store, f"{prefix}_intervals", f"{prefix}_comparisons")


def _number(v: Any) -> str:
    if isinstance(v, float):
        if v != v:  # NaN
            return "-"
        return f"{v:.4g}"
    return str(v)


def frame_html(df: pd.DataFrame, max_rows: int = 60) -> str:
    """A plain HTML table of ``df`` (the first ``max_rows`` rows; the CSV holds them all)."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_number(v))}</td>" for v in row) + "</tr>"
        for row in df.head(max_rows).itertuples(index=False)
    )
    more = f'<p class="src">{len(df) - max_rows} more rows in the CSV.</p>' if len(df) > max_rows else ""
    return f'<table class="stats"><tr>{head}</tr>{body}</table>{more}'


def section(store: Store, tables_dir: Path) -> tuple[str, bool, list[Path]]:
    """The section's HTML, whether it has any table, and the CSVs written (``statistics_<part>.csv``)."""
    frames, notes = collect(store)
    parts, paths = [], []
    for pid, heading, text in PARTS:
        df = frames.get(pid)
        if df is None:
            continue
        path = tables_dir / f"statistics_{pid}.csv"
        df.to_csv(path, index=False)
        paths.append(path)
        parts.append(
            f"<h3>{html.escape(heading)}</h3>"
            + (f"<p>{html.escape(text)}</p>" if text else "")
            + frame_html(df)
            + f'<p class="src">CSV: {html.escape(tables_dir.name + "/" + path.name)}</p>'
        )
    if not parts:
        hint = (
            "No statistics in this run: `vsp decode` writes the intervals; add `--repeats 5 "
            "--permutations 200 --control random` for repeated folds, p-values and the random-weight control."
        )
        return f'<p class="note">{html.escape(hint)}</p>', False, paths
    if notes:
        parts.append(f'<p class="src">Not read: {html.escape("; ".join(notes))}</p>')
    return "".join(parts), True, paths
