"""One self-contained HTML report of a run: manifest, Figures 1-2, Tables 1-4 next to the paper, explanations.

``write_report(store, "report.html")`` (and `vsp report`) writes

- ``report.html``: a single file -- inline CSS, figures embedded as base64 PNG ``data:`` URIs, no scripts and
  no external URL anywhere, so it opens offline and can be mailed or archived as is;
- ``report_tables/`` next to it (``<stem>_tables``): ``table1.csv`` ... ``table4.csv``, the same numbers as
  the HTML tables (and the paper's numbers and differences, when shown), and ``outputs.csv``: every
  registered stage's marked outputs (``stage, key``), which the run section summarises per stage.

Sections (each one says "not run" when its stage has no output in the store):

1. **Run** -- ``run.json`` (the jobs' run manifest) when present, the feature manifest (models, weights and
   their identities, layer selection, pooling, concepts, images, package versions), the decoding
   configuration, which stages have outputs, and whether the run's setup is the paper's.
2. **Figures 1-2** -- ``decode/figure1.png`` and ``decode/figure2.png``; re-rendered from the decoding results
   with :mod:`vsp.decode.grid` when the PNGs are missing.
3. **Tables 1-4** -- read through each stage's own reader, so only data its markers cover (a Parquet file
   without a marker is not read):

   - *decodability* (Tables 1 and 4): the decoding stage's penultimate layers
     (:func:`vsp.decode.stage.read_results`, named ``<model>/penultimate``), then the meta stage's embeddings
     (:func:`vsp.meta.stage.read_decodability`), each aggregated by :func:`vsp.decode.grid.aggregate` (mean
     F1 over folds, then over the properties of each feature class; ``overall`` over all properties, which
     reproduces the paper's AlexNet, VGG and DenseNet rows from their class means; the paper's plain ResNet
     row's "Overall" is instead the unweighted mean of the five classes), x100.
   - *mapping* (Table 2): :func:`vsp.mapping.stage.read_table2` (the marked units' folds pooled as
     :func:`vsp.mapping.mappers.summarise`).
   - *similarity* (Table 3): :func:`vsp.similarity.stage.read_table3` (``n_scored`` shown); every
     benchmark gets its column, MEN and SimLex-999 first (:func:`benchmark_column`).

   Run rows are matched to the paper's rows by :func:`vsp.report.paper.canonical_embedding`. Table 1 holds
   the ResNet34 rows (or the first network's, when the run has no ResNet34), Table 4 every network.
4. **Explanations** -- the explanations recorded in ``explain/examples/`` by `vsp explain`, then (when norms
   are known) new ones for a few of the run's own images, one per concept spread over the concept list. These
   images were in the maps' training data; use `vsp explain` on a new photograph for a held-out example.

The paper column
----------------
The paper's numbers, and the difference ``run - paper``, are shown only when the run's setup is the paper's
(:func:`paper_setup`): ImageNet-pretrained weights for every network, max pooling, the paper's layers
(``--layers paper``; ``all-conv`` is the same for every network but DenseNet), the CSLB norms filtered to
638 concepts x 390 properties, and features for all 638 concepts. Otherwise every table says why the paper
column is left out. Within a matching run, only rows with a paper counterpart get paper numbers.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import os
import re
import struct
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vsp.data.norms import Norms
from vsp.errors import VspInputError
from vsp.io.bookkeeping import now, write_marker
from vsp.io.store import Store, open_store
from vsp.report import paper
from vsp.report.config import ReportConfig
from vsp.report.paper import SetupCheck, paper_setup

log = logging.getLogger(__name__)

__all__ = ["ReportConfig", "ReportResult", "SetupCheck", "decodability_frame", "paper_setup", "write_report"]

RUN_MANIFESTS = ("run.json", "features/manifest.json")
REPORT_MARKER = "report/done.json"  # written after the report's files; `vsp status` reads it
MAX_EXAMPLES = 6

# ---------------------------------------------------------------------------------------------- helpers


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _png_size(data: bytes) -> tuple[int, int] | None:
    if len(data) >= 24 and data[:8] == b"\x89PNG\r\n\x1a\n":
        w, h = struct.unpack(">II", data[16:24])
        return int(w), int(h)
    return None


def _img(data: bytes, alt: str, cls: str = "figure") -> str:
    size = _png_size(data)
    dims = f' width="{size[0]}" height="{size[1]}"' if size else ""
    b64 = base64.b64encode(data).decode("ascii")
    return f'<img class="{cls}" alt="{_esc(alt)}"{dims} src="data:image/png;base64,{b64}">'


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return ""
    if isinstance(v, float | np.floating):
        if not math.isfinite(float(v)):
            return "–"
        return f"{float(v):.{digits}f}"
    return str(v)


def _read_json(store: Store, path: str) -> Any | None:
    try:
        return store.read_json(path) if store.exists(path) else None
    except (VspInputError, OSError) as exc:
        log.warning("could not read %s: %s", store.key_uri(path), exc)
        return None


@dataclass
class ReportResult:
    """What `write_report` wrote."""

    path: Path
    tables_dir: Path
    csv: list[Path]
    sections: dict[str, str]  # section id -> "ok" | "not run" | message
    paper_column: bool
    outputs: Path | None = None  # <stem>_tables/outputs.csv: every stage's marked outputs (stage, key)

    def line(self) -> str:
        """The closing summary line."""
        ran = [k for k, v in self.sections.items() if v == "ok"]
        missing = [k for k, v in self.sections.items() if v != "ok"]
        tail = f"; not run: {', '.join(missing)}" if missing else ""
        return f"report: {self.path} ({len(ran)} sections with results{tail}); tables in {self.tables_dir}"


# ------------------------------------------------------------------------------------- stage tables
def _hit_col(col: str) -> str | None:
    m = re.fullmatch(r"(?:hit|top)\s*[_@\-]?\s*(?:at\s*)?(\d+)", str(col).strip().lower())
    return f"hit{m.group(1)}" if m and int(m.group(1)) in (1, 5, 10, 20) else None


def _col(df: pd.DataFrame, *names: str) -> str | None:
    lower = {str(c).lower(): c for c in df.columns}
    for n in names:
        if n in lower:
            return lower[n]
    return None


def decodability_frame(results: pd.DataFrame | Any) -> pd.DataFrame:
    """Per-(property, fold) decoding rows -> rows = embedding name, columns = CLASS_COLUMNS (F1 x 100).

    The per-class means are `vsp.decode.grid.aggregate`'s (folds, then properties; ``overall`` is the mean
    over all properties), the one aggregation of the decoding and meta stages. An embedding is named by its
    rows' ``layer`` (the meta stage's decodability rows carry the embedding's name there), except the decoding
    grid's penultimate layer: ``"<model>/penultimate"``, as `vsp meta` names that embedding.
    """
    from vsp.decode.grid import PENULTIMATE, aggregate

    cols = list(paper.CLASS_COLUMNS)
    if len(results) == 0:
        return pd.DataFrame(columns=cols)
    agg = aggregate(results)
    agg = agg[agg["grouping"].isin(["feature_class", "overall"])]
    pairs = zip(agg["model"], agg["layer"], strict=True)
    names = [f"{m}/{lay}" if lay == PENULTIMATE else lay for m, lay in pairs]
    out = agg.assign(embedding=names).pivot_table(
        index="embedding", columns="group", values="f1", aggfunc="mean", sort=False
    )
    out = out * 100.0
    out = out.reindex(columns=cols)
    out.index.name = "embedding"
    out.columns.name = None
    return out


def mapping_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Rows (embedding, mapper) -> hit1..hit20 in percent, folds pooled by test size."""
    emb, mapper = _col(df, "embedding"), _col(df, "mapper")
    hits = {c: _hit_col(c) for c in df.columns if _hit_col(c)}
    d = df[[emb, mapper, *hits]].rename(columns={emb: "embedding", mapper: "mapper", **hits}).copy()
    ntest = _col(df, "n_test")
    d["_w"] = pd.to_numeric(df[ntest], errors="coerce").fillna(1.0) if ntest is not None else 1.0
    hcols = list(dict.fromkeys(hits.values()))
    for h in hcols:
        d[h] = pd.to_numeric(d[h], errors="coerce")
    vals = d[hcols].to_numpy(dtype=float)
    if np.isfinite(vals).any() and np.nanmax(vals) <= 1.0 + 1e-9:
        d[hcols] = d[hcols] * 100.0
    d["mapper"] = (
        d["mapper"]
        .astype(str)
        .str.lower()
        .map(
            lambda m: (
                "knn"
                if "knn" in m or "neighbour" in m or "neighbor" in m
                else "mlp"
                if "mlp" in m or "neural" in m
                else "ridge"
                if "ridge" in m
                else m
            )
        )
    )
    rows = []
    for (e, m), g in d.groupby(["embedding", "mapper"], sort=False):
        w = g["_w"].to_numpy(dtype=float)
        rows.append({"embedding": e, "mapper": m, **{h: float(np.average(g[h], weights=w)) for h in hcols}})
    return pd.DataFrame(rows)


def benchmark_column(name: str) -> str:
    """Table 3's column of a benchmark: ``MEN`` / ``SimLex-999`` for their spellings, else the name itself.

    Only whole names count (``men``, ``MEN_3000``, ``simlex999``...): ``garment-pairs`` keeps its own column.
    """
    compact = re.sub(r"[^a-z0-9]", "", str(name).lower())
    if re.fullmatch(r"simlex(999)?", compact):
        return "SimLex-999"
    if re.fullmatch(r"men(3000|3k)?(dataset)?(naturalform)?(full)?", compact):
        return "MEN"
    return str(name)


def similarity_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Rows embedding -> one Spearman rho column per benchmark (:func:`benchmark_column`) and ``n <name>``."""
    emb, bench = _col(df, "embedding"), _col(df, "benchmark")
    rho = _col(df, "spearman", "rho", "spearman_rho")
    ns = _col(df, "n_scored", "n_pairs")
    rows: dict[str, dict[str, Any]] = {}
    for _, r in df.iterrows():
        name = benchmark_column(r[bench])
        row = rows.setdefault(str(r[emb]), {"embedding": str(r[emb])})
        row[name] = float(r[rho]) if r[rho] is not None else float("nan")
        if ns is not None:
            row[f"n {name}"] = int(r[ns]) if pd.notna(r[ns]) else None
    return pd.DataFrame(list(rows.values()))


# ------------------------------------------------------------------------------------------- the context
class _Context:
    """Everything the sections read from the store, read once."""

    def __init__(
        self, store: Store, norms: str | os.PathLike | Norms | None, min_pf: float = 5, min_concepts: int = 5
    ) -> None:
        self.store = store
        self.min_pf, self.min_concepts = min_pf, min_concepts
        self.features = _read_json(store, "features/manifest.json")
        self.decode = _read_json(store, "decode/manifest.json")
        self.run = _read_json(store, "run.json")
        self.norms: Norms | None = None
        self.norms_note = ""
        self._load_norms(norms)
        self._decode_results: pd.DataFrame | None = None
        self.tables = self._read_stages()
        self.stage_outputs: list[tuple[str, str, list[str]]] = []  # (stage, progress, marked outputs)

    # norms -------------------------------------------------------------------------------------------
    def _load_norms(self, norms: str | os.PathLike | Norms | None) -> None:
        from vsp.data.norms import load_cslb

        if isinstance(norms, Norms):
            self.norms, self.norms_note = norms, f"given ({norms.source})"
            return
        src: str | None = os.fspath(norms) if norms is not None else None
        how = "--norms"
        if src is None and self.decode:
            cand = self.decode.get("identity", {}).get("norms_source")
            if isinstance(cand, str) and (cand.startswith("s3://") or os.path.exists(cand)):
                src, how = cand, "recorded by `vsp decode`"
        if src is None:
            self.norms_note = "unknown (no --norms and no `vsp decode` run recording them)"
            return
        try:
            self.norms = load_cslb(src, min_pf=self.min_pf, min_concepts=self.min_concepts)
            self.norms_note = f"{src} ({how})"
        except (VspInputError, OSError) as exc:
            self.norms_note = f"could not load {src}: {exc}"
            log.warning("report: %s", self.norms_note)

    def norms_shape(self) -> tuple[int, int] | None:
        if self.norms is not None:
            return self.norms.shape
        ident = (self.decode or {}).get("identity", {})
        if "properties" in ident:
            # the decode stage keeps the norms' properties that have enough positives; the dropped are listed
            return (-1, len(ident.get("properties", [])) + len(ident.get("dropped_properties", [])))
        return None

    def concepts(self) -> list[str]:
        return list((self.features or {}).get("identity", {}).get("concepts", []))

    def n_shared(self) -> int | None:
        if self.norms is None or not self.features:
            return None
        have = set(self.norms.concepts)
        return sum(c in have for c in self.concepts())

    def setup(self) -> SetupCheck:
        shape = self.norms_shape()
        if shape is not None and shape[0] < 0:
            shape = (len(self.concepts()), shape[1]) if self.features else None
        return paper_setup(self.features, shape, self.n_shared())

    # tables: each stage's own readers, so only what its markers cover --------------------------------
    def decode_results(self) -> pd.DataFrame:
        """The decoding stage's per-(property, fold) rows of every marked layer (`vsp.decode.stage`)."""
        if self._decode_results is None:
            from vsp.decode.stage import read_results

            self._decode_results = read_results(self.store).to_pandas()
        return self._decode_results

    def _penultimate_rows(self) -> tuple[list[str], pd.DataFrame]:
        from vsp.decode.grid import PENULTIMATE
        from vsp.decode.stage import ROOT

        rows = self.decode_results()
        rows = rows[rows["layer"] == PENULTIMATE] if len(rows) else rows
        keys = [f"{ROOT}/results/{m}/{PENULTIMATE}.parquet" for m in dict.fromkeys(rows.get("model", []))]
        return keys, rows

    def _meta_rows(self) -> tuple[list[str], pd.DataFrame]:
        from vsp.meta.stage import decode_result_path, read_decodability

        rows = read_decodability(self.store)
        return [decode_result_path(n) for n in dict.fromkeys(rows.get("embedding", []))], rows

    def _table2(self) -> tuple[list[str], pd.DataFrame]:
        from vsp.mapping.stage import MapStage, read_table2

        table = read_table2(self.store)
        return (MapStage().outputs(self.store) if len(table) else []), table

    def _table3(self) -> tuple[list[str], pd.DataFrame]:
        from vsp.similarity.stage import TABLE3, read_table3

        table = read_table3(self.store)
        return [TABLE3], table

    def _read_stages(self) -> dict[str, list[tuple[list[str], pd.DataFrame]]]:
        """Kind -> (the keys read, the table): decodability (decoding, then meta), Table 2, Table 3."""
        found: dict[str, list[tuple[list[str], pd.DataFrame]]] = {
            "decodability": [],
            "mapping": [],
            "similarity": [],
        }
        readers = [
            ("decodability", self._penultimate_rows),
            ("decodability", self._meta_rows),
            ("mapping", self._table2),
            ("similarity", self._table3),
        ]
        for kind, reader in readers:
            try:
                keys, df = reader()
            except (VspInputError, OSError, ValueError, KeyError) as exc:
                log.warning("report: could not read the %s tables (%s): %s", kind, reader.__name__, exc)
                continue
            if len(df):
                found[kind].append((keys, df))
                log.info("report: %s <- %s", kind, sources_line(keys))
        return found


# ------------------------------------------------------------------------------------------ html tables
@dataclass
class _Table:
    """A rendered table: HTML, CSV frame, and whether the paper column was shown."""

    html: str
    csv: pd.DataFrame
    sources: list[str]
    note: str = ""


def sources_line(sources: Sequence[str]) -> str:
    """The tables a report table was read from, in a few words: summary tables by name, unit files counted.

    A key under a sub-folder of a stage (``mapping/units/...``, ``meta/decode/results/...``) is a unit file;
    two or more of them under one folder become ``"56 unit files under mapping/units/"``, a single one keeps
    its name. ``["mapping/table2.parquet", <56 unit files>]`` ->
    ``"mapping/table2.parquet and 56 unit files under mapping/units/"``.
    """
    named: list[str] = []
    groups: dict[str, list[str]] = {}
    for key in dict.fromkeys(sources):
        parts = key.split("/")
        if len(parts) <= 2:
            named.append(key)
        else:
            groups.setdefault("/".join(parts[:2]), []).append(key)
    for keys in groups.values():
        if len(keys) == 1:
            named.append(keys[0])
        else:
            folder = os.path.commonpath([k.rsplit("/", 1)[0] for k in keys])
            named.append(f"{len(keys)} unit files under {folder}/")
    if len(named) <= 1:
        return "".join(named)
    return ", ".join(named[:-1]) + " and " + named[-1]


def _key_order(key: paper.EmbeddingKey | None) -> tuple:
    if key is None:
        return (9, "", 9, 9)
    models = list(paper.PAPER_MODELS)
    m = models.index(key.model) if key.model in models else (len(models) if key.model else -1)
    kinds = ["penultimate", "svd", "1ton", "text"]
    group = (
        1 if key.kind == "text" else 2 if key.text else 0
    )  # image rows, then text, then multimodal (paper)
    return (group, m, key.model or "", kinds.index(key.kind) if key.kind in kinds else 9)


def _label(name: str, key: paper.EmbeddingKey | None) -> str:
    if key is None:
        return name
    lab = paper.embedding_label(key)
    return lab if lab.lower().replace(" ", "") == name.lower().replace(" ", "") else f"{lab} ({name})"


def _render(
    rows: list[tuple[str, dict[str, float], dict[str, float] | None, dict[str, Any]]],
    columns: list[tuple[str, str]],
    groups: list[tuple[str, int]] | None,
    digits: int,
    show_paper: bool,
) -> tuple[str, pd.DataFrame]:
    """rows: (label, run values, paper values or None, extra CSV fields); columns: (key, header)."""
    head = ""
    if groups:
        head += (
            "<tr><th></th>"
            + "".join(f'<th colspan="{n}" class="grp">{_esc(g)}</th>' for g, n in groups)
            + "</tr>"
        )
    head += "<tr><th>embedding</th>" + "".join(f"<th>{_esc(h)}</th>" for _, h in columns) + "</tr>"
    body = []
    csv_rows = []
    for label, run, ref, extra in rows:
        cells = "".join(f'<td class="num">{_fmt(run.get(k), digits)}</td>' for k, _ in columns)
        cls = ' class="run"' if show_paper and ref else ""
        body.append(f"<tr{cls}><th>{_esc(label)}</th>{cells}</tr>")
        rec: dict[str, Any] = {"embedding": label, **extra, **{k: run.get(k) for k, _ in columns}}
        if show_paper:
            for k, _ in columns:
                p = ref.get(k) if ref else None
                r = run.get(k)
                rec[f"{k}_paper"] = p
                rec[f"{k}_diff"] = (r - p) if (p is not None and r is not None and np.isfinite(r)) else None
            if ref:
                pcells = "".join(f'<td class="num">{_fmt(ref.get(k), digits)}</td>' for k, _ in columns)
                dcells = "".join(
                    f'<td class="num {_sign(rec[f"{k}_diff"])}">{_fmt_diff(rec[f"{k}_diff"], digits)}</td>'
                    for k, _ in columns
                )
                body.append(f'<tr class="paper"><th>&nbsp;&nbsp;paper</th>{pcells}</tr>')
                body.append(f'<tr class="diff"><th>&nbsp;&nbsp;difference (run − paper)</th>{dcells}</tr>')
        csv_rows.append(rec)
    table = f'<table class="data"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table>'
    return table, pd.DataFrame(csv_rows)


def _sign(d: float | None) -> str:
    if d is None or not np.isfinite(d):
        return ""
    return "pos" if d > 0 else "neg" if d < 0 else ""


def _fmt_diff(d: float | None, digits: int) -> str:
    if d is None or not np.isfinite(d):
        return ""
    return f"{d:+.{digits}f}"


def _decodability_rows(ctx: _Context) -> tuple[dict[str, pd.Series], list[str]]:
    """Embedding name -> class scores: the decoding stage's penultimate layers, then the meta stage's rows."""
    rows: dict[str, pd.Series] = {}
    sources: list[str] = []
    for keys, df in ctx.tables["decodability"]:
        frame = decodability_frame(df)
        if len(frame):
            sources.extend(keys)
        for name, r in frame.iterrows():
            rows.setdefault(str(name), r)
    return rows, sources


def _paper_note(setup: SetupCheck, extra: str = "") -> str:
    if setup.matches:
        return (
            "<p class=\"note\">The run's setup is the paper's: each row with a counterpart in the paper is "
            "followed "
            f"by the paper's numbers and the difference (run − paper).{extra}</p>"
        )
    return f'<p class="note why">Paper column omitted: {_esc(setup.why_not())}.</p>'


def _table_decodability(ctx: _Context, which: int, setup: SetupCheck) -> tuple[str, _Table | None]:
    rows, sources = _decodability_rows(ctx)
    if not rows:
        return "not run", None
    keyed = [(n, paper.canonical_embedding(n)) for n in rows]
    if which == 1:
        models = [k.model for _, k in keyed if k is not None and k.model]
        target = "resnet34" if "resnet34" in models else (models[0] if models else None)
        keyed = [(n, k) for n, k in keyed if k is not None and k.model == target and not k.text]
        if not keyed:
            return "not run", None
        ref_table = paper.TABLE1
    else:
        ref_table = paper.TABLE4
    keyed.sort(key=lambda nk: _key_order(nk[1]))
    cols = [(c, c.replace(" perceptual", " perc.").capitalize()) for c in paper.CLASS_COLUMNS]
    data = []
    for n, k in keyed:
        run = {c: float(rows[n][c]) if pd.notna(rows[n][c]) else None for c in paper.CLASS_COLUMNS}
        data.append((_label(n, k), run, ref_table.get(k) if setup.allows(k) else None, {}))
    html_t, csv = _render(data, cols, None, 2, setup.matches)
    note = ""
    if which == 1 and keyed and keyed[0][1] is not None and keyed[0][1].model != "resnet34":
        note = f"The run has no ResNet34: these are the rows of {keyed[0][1].model}."
    return "ok", _Table(html_t, csv, sources, note)


def _table_mapping(ctx: _Context, setup: SetupCheck) -> tuple[str, _Table | None]:
    frames = [(k, mapping_frame(df)) for k, df in ctx.tables["mapping"]]
    frames = [(k, f) for k, f in frames if len(f)]
    if not frames:
        return "not run", None
    allf = pd.concat([f for _, f in frames], ignore_index=True).drop_duplicates(["embedding", "mapper"])
    mappers = [m for m in paper.MAPPERS if m in set(allf["mapper"])] + sorted(
        set(allf["mapper"]) - set(paper.MAPPERS)
    )
    hits = [h for h in paper.HIT_COLUMNS if h in allf.columns]
    names = list(dict.fromkeys(allf["embedding"]))
    keyed = sorted(((n, paper.canonical_embedding(n)) for n in names), key=lambda nk: _key_order(nk[1]))
    cols = [(f"{m}_{h}", f"Hit@{h[3:]}") for m in mappers for h in hits]
    mapper_names = {"knn": "kNN (k=5)", "ridge": "Ridge", "mlp": "MLP (h=1200)"}
    groups = [(mapper_names.get(m, m), len(hits)) for m in mappers]
    data = []
    for n, k in keyed:
        run: dict[str, float] = {}
        for _, r in allf[allf["embedding"] == n].iterrows():
            for h in hits:
                run[f"{r['mapper']}_{h}"] = float(r[h])
        ref = None
        if setup.allows(k) and k in paper.TABLE2:
            ref = {f"{m}_{h}": v for m, hv in paper.TABLE2[k].items() for h, v in hv.items()}
        data.append((_label(n, k), run, ref, {}))
    html_t, csv = _render(data, cols, groups, 2, setup.matches)
    return "ok", _Table(html_t, csv, [key for keys, _ in frames for key in keys])


def _meta_fit_note(ctx: _Context) -> str:
    """Table 2's note on the meta-embeddings: fitted on all concepts (transductive) or per training fold."""
    from vsp.mapping.stage import meta_fit_note

    try:
        text = meta_fit_note(ctx.store)
    except Exception as exc:  # noqa: BLE001 - a note must not sink the table
        log.warning("report: could not read the mapping run's meta_fit: %s", exc)
        return ""
    return f'<p class="note">{_esc(text)}</p>' if text else ""


def _table_similarity(ctx: _Context, setup: SetupCheck) -> tuple[str, _Table | None]:
    frames = [(k, similarity_frame(df)) for k, df in ctx.tables["similarity"]]
    frames = [(k, f) for k, f in frames if len(f)]
    if not frames:
        return "not run", None
    # one row per embedding; each (embedding, benchmark) value from the first table that has it
    allf = pd.concat([f for _, f in frames], ignore_index=True).groupby("embedding", sort=False).first()
    allf = allf.reset_index()
    keyed = sorted(
        ((n, paper.canonical_embedding(n)) for n in allf["embedding"]), key=lambda nk: _key_order(nk[1])
    )
    # every benchmark in the store gets its column: the paper's two first, then the others as found
    found = [c for c in allf.columns if c != "embedding" and not str(c).startswith("n ")]
    benches = [b for b in paper.SIMILARITY_COLUMNS if b in found] + [
        b for b in found if b not in paper.SIMILARITY_COLUMNS
    ]
    cols = [(b, b) for b in benches]
    data = []
    for n, k in keyed:
        r = allf[allf["embedding"] == n].iloc[0]
        run = {b: float(r[b]) if pd.notna(r[b]) else None for b, _ in cols}
        extra = {
            f"n_scored_{b}": (int(r[f"n {b}"]) if f"n {b}" in r and pd.notna(r[f"n {b}"]) else None)
            for b, _ in cols
        }
        label = _label(n, k)
        counts = ", ".join(
            f"{b} {v}" for b, v in ((b, extra[f"n_scored_{b}"]) for b, _ in cols) if v is not None
        )
        ref = paper.TABLE3.get(k) if setup.allows(k) else None
        data.append((f"{label}  [pairs: {counts}]" if counts else label, run, ref, extra))
    html_t, csv = _render(data, cols, None, 3, setup.matches)
    return "ok", _Table(html_t, csv, [key for keys, _ in frames for key in keys])


# -------------------------------------------------------------------------------------------- sections
_CSS = """
body{font-family:"DejaVu Sans",Helvetica,Arial,sans-serif;margin:0;color:#1d1d1f;background:#fafafa;
line-height:1.45}
header{background:#23395d;color:#fff;padding:18px 32px}
header h1{margin:0;font-size:22px} header p{margin:4px 0 0;opacity:.85;font-size:13px}
nav{padding:8px 32px;background:#e9eef5;font-size:13px} nav a{margin-right:14px;color:#23395d}
main{padding:8px 32px 40px;max-width:1500px}
section{background:#fff;border:1px solid #dde3ea;border-radius:6px;padding:12px 20px;margin:18px 0}
section h2{margin:4px 0 10px;font-size:18px;color:#23395d}
section.notrun{border-style:dashed;background:#f6f6f6} section.notrun h2{color:#777}
.badge{display:inline-block;font-size:11px;padding:1px 7px;border-radius:9px;margin-left:8px;
vertical-align:middle}
.badge.ok{background:#d7f0dc;color:#185c28} .badge.no{background:#eee;color:#666;border:1px solid #ccc}
table.kv{border-collapse:collapse;font-size:13px}
table.kv th{text-align:left;padding:2px 14px 2px 0;color:#555;
vertical-align:top;font-weight:normal} table.kv td{padding:2px 0}
table.data{border-collapse:collapse;font-size:13px;margin:6px 0} table.data th,table.data td{padding:3px 9px;
border-bottom:1px solid #eceff3} table.data thead th{background:#f0f3f7;border-bottom:2px solid #c9d2dd}
table.data tbody th{text-align:left;font-weight:normal;white-space:nowrap} td.num{text-align:right;
font-variant-numeric:tabular-nums} th.grp{text-align:center}
tr.paper th,tr.paper td{color:#555;font-style:italic;border-bottom:none} tr.run th{font-weight:bold}
tr.diff th,tr.diff td{color:#555;font-size:12px} td.pos{color:#17702e} td.neg{color:#b3261e}
p.note{font-size:13px;color:#444} p.why{background:#fff6e0;border-left:4px solid #e0a800;padding:6px 10px}
p.src{font-size:12px;color:#777} img.figure{max-width:100%;height:auto;border:1px solid #e3e3e3;margin:6px 0}
figure{margin:10px 0} figcaption{font-size:13px;color:#444}
pre{background:#f4f6f8;padding:8px;font-size:12px;overflow:auto;max-height:420px}
.expl{border-top:1px solid #eee;padding-top:8px;margin-top:8px}
"""

_TITLES = {
    "run": "Run",
    "figures": "Figures 1-2: decodability per layer",
    "table1": "Table 1: decodability of the ResNet embeddings (F1 x 100)",
    "table2": "Table 2: zero-shot property mapping (Hit@T, %)",
    "table3": "Table 3: word similarity (Spearman rho)",
    "table4": "Table 4: decodability of every network's embeddings (F1 x 100)",
    "statistics": "Statistics: intervals, significance, selectivity and paired tests",
    "explain": "Explanations: top predicted properties per layer (Figures 3-7)",
}


def _section(sid: str, body: str, ok: bool, status_note: str = "") -> str:
    badge = '<span class="badge ok">results</span>' if ok else '<span class="badge no">not run</span>'
    cls = "" if ok else ' class="notrun"'
    return f'<section id="{sid}"{cls}><h2>{_esc(_TITLES[sid])}{badge}</h2>{body}</section>'


def _not_run(what: str, how: str) -> str:
    return f'<p class="note"><b>Not run</b>: {_esc(what)}. {_esc(how)}</p>'


def _kv(rows: Sequence[tuple[str, Any]]) -> str:
    return (
        '<table class="kv">'
        + "".join(f"<tr><th>{_esc(k)}</th><td>{v}</td></tr>" for k, v in rows)
        + "</table>"
    )


def _compact(obj: Any, limit: int = 400) -> str:
    text = json.dumps(obj, default=str) if not isinstance(obj, str) else obj
    return _esc(text if len(text) <= limit else text[: limit - 1] + "…")


def _stage_outputs(ctx: _Context) -> list[tuple[str, str, list[str]]]:
    """Every registered stage but the report (``vsp.pipeline``): its progress and its marked outputs."""
    from vsp import pipeline

    rows = []
    for stage in pipeline.stages():
        if stage.name == "report":
            continue
        try:
            progress = stage.progress(ctx.store)
            outputs = stage.outputs(ctx.store)
        except (VspInputError, OSError, ValueError, KeyError) as exc:
            log.warning("report: could not read the %s stage's markers: %s", stage.name, exc)
            progress, outputs = None, []
        state = "<i>not run</i>"
        if progress is not None:
            state = f"{progress['done']} of {progress['total']} {_esc(progress['what'])}"
        rows.append((stage.name, state, outputs))
    return rows


def _run_json_rows(run: Any) -> tuple[list[tuple[str, Any]], str]:
    """Key facts of ``run.json`` (status, timing, git commit, attempts) and its per-stage table."""
    if not isinstance(run, dict):
        return [("run.json", _compact(run))], ""
    rows: list[tuple[str, Any]] = []
    if "status" in run:
        when = ", ".join(f"{k} {run[k]}" for k in ("started", "finished") if run.get(k))
        rows.append(("run status", _esc(f"{run['status']}" + (f" ({when})" if when else ""))))
    if run.get("error"):
        rows.append(("run error", _compact(run["error"])))
    if run.get("git_commit"):
        rows.append(("git commit", _esc(run["git_commit"])))
    attempts = run.get("attempts")
    if isinstance(attempts, list) and attempts:
        last = attempts[-1] if isinstance(attempts[-1], dict) else {}
        host = f", host {last['host']}" if last.get("host") else ""
        sub = f", submission {last['submission_id']}" if last.get("submission_id") else ""
        rows.append(("attempts", _esc(f"{len(attempts)}{host}{sub}")))
    known = {"status", "started", "finished", "error", "git_commit", "attempts", "stages"}
    known |= {"identity", "config", "versions", "format", "created"}  # in the full run.json below
    for k, v in run.items():
        if k not in known:
            rows.append((f"run.json: {k}", _compact(v)))
    table = ""
    stages = run.get("stages")
    if isinstance(stages, dict) and stages:
        body = []
        for name, e in stages.items():
            e = e if isinstance(e, dict) else {"status": e}
            rest = {
                k: v for k, v in e.items() if k not in ("status", "seconds", "started", "finished", "attempt")
            }
            secs = e.get("seconds")
            body.append(
                f"<tr><th>{_esc(name)}</th><td>{_esc(e.get('status', '?'))}</td>"
                f'<td class="num">{_fmt(float(secs), 1) if isinstance(secs, int | float) else ""}</td>'
                f'<td class="src">{_compact(rest, 200) if rest else ""}</td></tr>'
            )
        table = (
            '<h3>Pipeline stages (run.json)</h3><table class="data"><thead><tr><th>stage</th><th>status</th>'
            f"<th>seconds</th><th>details</th></tr></thead><tbody>{''.join(body)}</tbody></table>"
        )
    elif isinstance(stages, list):
        rows.append(("run.json: stages", _compact(stages)))
    return rows, table


def _section_run(ctx: _Context, setup: SetupCheck) -> tuple[str, bool]:
    parts = []
    rows: list[tuple[str, Any]] = [("store", _esc(ctx.store.uri))]
    run_stages = ""
    if ctx.run is not None:
        rows_, run_stages = _run_json_rows(ctx.run)
        rows += rows_
    f = ctx.features
    if f:
        ident = f.get("identity", {})
        cfg = ident.get("config", {})
        imgs = ident.get("images", {}) or {}
        layers = ident.get("layers", []) or []
        per_model: dict[str, int] = {}
        for x in layers:
            per_model[x.get("model", "?")] = per_model.get(x.get("model", "?"), 0) + 1
        rows += [
            ("models", _esc(", ".join(cfg.get("models", [])))),
            ("weights", _esc(cfg.get("weights"))),
            (
                "weights identity",
                _esc(", ".join(f"{m}: {i}" for m, i in ident.get("weights_identity", {}).items())),
            ),
            ("layer selection", _esc(cfg.get("layers"))),
            ("tapped layers", _esc(", ".join(f"{m}: {n}" for m, n in per_model.items()))),
            ("pooling / seed", _esc(f"{cfg.get('pooling')} / {cfg.get('seed')}")),
            (
                "concepts / images",
                _esc(f"{len(ident.get('concepts', []))} / {sum(len(v) for v in imgs.values())}"),
            ),
            ("extracted", _esc(f.get("created", "?"))),
            ("versions", _esc(", ".join(f"{k} {v}" for k, v in (f.get("versions") or {}).items()))),
        ]
    else:
        rows.append(("features", "<b>not run</b> (no features/manifest.json)"))
    rows.append(
        (
            "norms",
            _esc(ctx.norms_note)
            + (f" — {ctx.norms.shape[0]} concepts x {ctx.norms.shape[1]} properties" if ctx.norms else ""),
        )
    )
    if ctx.decode:
        dcfg = ctx.decode.get("identity", {}).get("config", {})
        rows.append(("decoding", _esc(", ".join(f"{k}={v}" for k, v in dcfg.items()))))
    parts.append(_kv(rows))
    parts.append(run_stages)
    st = "".join(
        f'<tr><th>{_esc(n)}</th><td>{state}</td><td class="src">{_esc(sources_line(outs)) or "—"}</td></tr>'
        for n, state, outs in ctx.stage_outputs
    )
    parts.append(f'<h3>Outputs in the store</h3><table class="data"><tbody>{st}</tbody></table>')
    verdict = (
        "The run's setup is the paper's (ImageNet weights, max pooling, CSLB 638 x 390): "
        "the paper's numbers are "
        "shown next to the run's."
        if setup.matches
        else "The run's setup differs from the paper's, so the tables show the run's numbers only: "
        + setup.why_not()
        + "."
    )
    parts.append(f'<p class="note{"" if setup.matches else " why"}">{_esc(verdict)}</p>')
    if f:
        ident = dict(f.get("identity", {}))
        ident["concepts"] = f"{len(ident.get('concepts', []))} concepts"
        ident["images"] = f"{sum(len(v) for v in (ident.get('images') or {}).values())} images"
        ident["layers"] = [
            f"{x.get('model')}/{x.get('name')} ({x.get('kind')}, {x.get('channels')} ch)"
            for x in ident.get("layers", [])
        ]
        full = {"identity": ident, **{k: v for k, v in f.items() if k != "identity"}}
        parts.append(
            "<details><summary>features/manifest.json</summary>"
            f"<pre>{_esc(json.dumps(full, indent=1, default=str))}</pre></details>"
        )
    if ctx.run is not None:
        parts.append(
            "<details><summary>run.json</summary>"
            f"<pre>{_esc(json.dumps(ctx.run, indent=1, default=str))}</pre></details>"
        )
    return "".join(parts), True


def _figure_bytes(ctx: _Context) -> tuple[dict[str, bytes], str]:
    s = ctx.store
    figs = {n: s.read_bytes(f"decode/{n}.png") for n in ("figure1", "figure2") if s.exists(f"decode/{n}.png")}
    note = ""
    if len(figs) < 2 and s.list("decode/results") and ctx.features:
        try:  # re-render from the per-layer results (vsp.decode.grid's own plotting)
            from vsp.decode.grid import aggregate, plot_figure1, plot_figure2  # type: ignore[attr-defined]
            from vsp.decode.stage import read_results, result_path
            from vsp.extract.features import LayerInfo

            layers = [LayerInfo(**x) for x in ctx.features["identity"]["layers"]]
            layers = [x for x in layers if s.exists(result_path(x))]
            agg = aggregate(read_results(s, layers))
            for name, plot in (("figure1", plot_figure1), ("figure2", plot_figure2)):
                if name not in figs:
                    buf = io.BytesIO()
                    plot(agg, buf)
                    figs[name] = buf.getvalue()
            note = "re-rendered from decode/results (the stored PNGs were missing)"
        except Exception as exc:  # noqa: BLE001 - a partial decode stage must not sink the report
            note = f"could not re-render from decode/results: {exc}"
            log.warning("report: %s", note)
    return figs, note


def _section_figures(ctx: _Context) -> tuple[str, bool]:
    figs, note = _figure_bytes(ctx)
    if not figs:
        how = "Run `vsp decode --store ... --norms ...`."
        return _not_run("no decoding results in decode/", how + (f" ({note})" if note else "")), False
    captions = {
        "figure1": "Figure 1: mean F1 per CSLB feature class at each layer of each network.",
        "figure2": "Figure 2: mean F1 per fine-grained property type "
        "(colour, shape/size, is, has, does, made-of).",
    }
    body = "".join(
        f"<figure>{_img(data, captions[n])}<figcaption>{_esc(captions[n])}</figcaption></figure>"
        for n, data in sorted(figs.items())
    )
    if note:
        body += f'<p class="src">{_esc(note)}</p>'
    return body, True


def _explain_examples(ctx: _Context) -> list[tuple[dict, bytes]]:
    out = []
    for key in ctx.store.list("explain/examples"):
        if key.endswith(".json") and ctx.store.exists(key[:-5] + ".png"):
            try:
                out.append((ctx.store.read_json(key), ctx.store.read_bytes(key[:-5] + ".png")))
            except (VspInputError, OSError) as exc:
                log.warning("report: skipping %s: %s", key, exc)
    return out[:MAX_EXAMPLES]


def _skipped_images(ctx: _Context) -> set[str]:
    """The images the extraction recorded as unreadable in its unit markers (``features/done/*.json``)."""
    out: set[str] = set()
    for key in ctx.store.list("features/done"):
        if not key.endswith(".json"):
            continue
        try:
            doc = ctx.store.read_json(key)
        except (VspInputError, OSError, ValueError) as exc:
            log.warning("report: skipping %s: %s", key, exc)
            continue
        for item in (doc.get("skipped") or []) if isinstance(doc, dict) else []:
            if isinstance(item, dict) and isinstance(item.get("uri"), str):
                out.add(item["uri"])
    return out


def _not_embeddable(uri: Any, skipped: set[str]) -> str | None:
    """Why the report will not read and embed ``uri`` of the features manifest, or None when it may."""
    if not isinstance(uri, str) or not uri:
        return "not a uri"
    if uri in skipped:
        return "the run skipped it as unreadable"
    if uri.startswith("s3://"):
        return None
    if not os.path.isabs(uri) or os.path.normpath(uri) != uri:
        return "not an absolute, normalised path (`vsp extract` records only those)"
    if not os.path.isfile(uri):
        return "no such file here"
    return None


def _pick_images(ctx: _Context, n: int) -> list[str]:
    """Up to ``n`` of the run's own images to explain, one per concept spread over the concept list.

    This is the only place the report chooses local images to read and embed. Candidates come only from the
    features manifest's ``identity.images``; an image is taken only when :func:`_not_embeddable` finds no
    fault (the run did not skip it; an ``s3://`` uri or an absolute, normalised local path of an existing
    file: a relative or ``..`` path would be resolved against the reader's folder, not the run's). Each
    dropped candidate is named in a warning and the concept's next image is tried.
    """
    imgs = (ctx.features or {}).get("identity", {}).get("images", {}) or {}
    if not isinstance(imgs, dict):
        return []
    concepts = [c for c in ctx.concepts() if isinstance(imgs.get(c), list) and imgs.get(c)]
    if ctx.norms is not None:
        have = set(ctx.norms.concepts)
        concepts = [c for c in concepts if c in have]
    if not concepts or n < 1:
        return []
    idx = sorted({int(round(i)) for i in np.linspace(0, len(concepts) - 1, min(n, len(concepts)))})
    skipped = _skipped_images(ctx)
    picked: list[str] = []
    dropped: list[str] = []
    for i in idx:
        for uri in imgs[concepts[i]]:
            why = _not_embeddable(uri, skipped)
            if why is None:
                picked.append(uri)
                break
            dropped.append(f"{uri!r} ({why})")
    if dropped:
        more = f"; and {len(dropped) - 5} more" if len(dropped) > 5 else ""
        log.warning(
            "report: not embedding %d image(s) of the features manifest: %s%s",
            len(dropped),
            "; ".join(dropped[:5]),
            more,
        )
    return picked


def _layer_indices(ctx: _Context) -> dict[tuple[str, str], int]:
    """(model, layer) -> the 0-based tap index of the features manifest (``layer_index`` of decode)."""
    out = {}
    for x in (ctx.features or {}).get("identity", {}).get("layers", []) or []:
        if isinstance(x, dict) and isinstance(x.get("index"), int):
            out[(str(x.get("model")), str(x.get("name")))] = x["index"]
    return out


def _explanation_html(
    expl: dict, png: bytes, where: str, indices: dict[tuple[str, str], int] | None = None
) -> str:
    from vsp.report.explain import Explanation, layer_label

    e = Explanation.from_json(expl)

    def label(lp: Any) -> str:  # the run's tap index with the module beside it, whatever the JSON says
        idx = (indices or {}).get((e.model, lp.layer))
        if idx is not None:
            return layer_label(idx, lp.layer)
        return lp.label if lp.layer in lp.label else f"{lp.label} ({lp.layer})"

    rows = "".join(
        f"<tr><th>{_esc(label(lp))}</th><td>{_esc(', '.join(lp.properties[:5]))}</td></tr>" for lp in e.layers
    )
    trained = {"concepts": "the concept vectors", "images": "every image's vector"}.get(e.source, e.source)
    return (
        f'<div class="expl"><figure>{_img(png, f"explanation of {Path(e.image).name}")}'
        f"<figcaption>{_esc(Path(e.image).name)} — {_esc(e.model)} ({_esc(where)}; maps trained on "
        f"{_esc(trained)}); top-5 per layer:</figcaption>"
        f'</figure><table class="kv">{rows}</table></div>'
    )


def _section_explain(
    ctx: _Context, n_images: int, model: str | None, layers: Any, top: int, device: str
) -> tuple[str, bool]:
    parts = []
    recorded = _explain_examples(ctx)
    for expl, png in recorded:
        parts.append(_explanation_html(expl, png, "recorded by `vsp explain`", _layer_indices(ctx)))
    wanted = max(0, n_images - len(recorded))
    note = ""
    if wanted and ctx.features and ctx.norms is not None:
        from vsp.report.explain import explain_images, figure_bytes

        images = _pick_images(ctx, wanted)
        try:
            t0 = time.perf_counter()
            expls = explain_images(
                ctx.store, ctx.norms, images, model=model, layers=layers, top=top, device=device
            )
            for e in expls:
                parts.append(
                    _explanation_html(
                        e.to_json(),
                        figure_bytes(e),
                        "an image of the run's own image set",
                        _layer_indices(ctx),
                    )
                )
            log.info("report: %d explanations in %.1fs", len(expls), time.perf_counter() - t0)
            note = (
                "Images from the run's own image set were seen by the maps in training; "
                "for a held-out example run `vsp explain PHOTO --store ...` "
                "(recorded explanations appear first)."
            )
        except (VspInputError, FileNotFoundError, OSError) as exc:
            note = f"could not explain the run's images: {exc}"
            log.warning("report: %s", note)
    elif wanted and not recorded:
        why = "no features" if not ctx.features else "the norms are unknown"
        return _not_run(
            f"no explanations ({why})", "Pass --norms, or run `vsp explain IMAGE --store ... --norms ...`."
        ), False
    if not parts:
        if n_images < 1:
            return _not_run(
                "explanations not requested (0 images)", "Use --explain-images N or `vsp explain`."
            ), False
        return _not_run("no explanations", note), False
    legend = (
        '<p class="note">Ridge maps from each layer\'s pooled vectors to the CSLB production-frequency '
        "space (vsp.report.explain), trained on the concept vectors as in the paper's Appendix B unless the "
        "caption says otherwise; bars are the top predicted properties, coloured by feature class. Layers "
        "are numbered by their 0-based tap index, the layer_index of the decoding results and the x axis of "
        "Figures 1-2, with the module beside it; the default layers are the paper's ResNet34 layers 3, 15, "
        "27 and 35 "
        "(35 (layer4.2.conv2) is its last conv).</p>"
    )
    tail = f'<p class="src">{_esc(note)}</p>' if note else ""
    return legend + "".join(parts) + tail, True


# ------------------------------------------------------------------------------------------- the report
def _csv_name(sid: str) -> str:
    return f"{sid}.csv"


def write_report(
    store: str | os.PathLike | Store,
    out: str | os.PathLike,
    norms: str | os.PathLike | Norms | None = None,
    min_pf: float = 5,
    min_concepts: int = 5,
    explain_images: int = 3,
    explain_model: str | None = None,
    explain_layers: str | Sequence[str | int] | None = None,
    top: int = 8,
    device: str = "cpu",
    progress: Callable[[str], None] | None = None,
) -> ReportResult:
    """Write the HTML report of the run in ``store`` to ``out`` and its tables as CSV beside it.

    ``norms``: the norms file (or a loaded :class:`Norms`) for the paper-setup check and the explanations;
    default: the norms `vsp decode` recorded, filtered with ``min_pf`` / ``min_concepts``. ``explain_images``:
    how many explanations to show (recorded ones first, then new ones for the run's images; 0 for none).
    """
    st = store if isinstance(store, Store) else open_store(store)
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise VspInputError(f"--out {out}: the report is an .html file")
    tables_dir = out.parent / f"{out.stem}_tables"
    say = progress or (lambda _msg: None)
    ctx = _Context(st, norms, min_pf, min_concepts)
    setup = ctx.setup()
    sections: dict[str, str] = {}
    blocks: list[str] = []
    csv_paths: list[Path] = []

    say("figures 1-2")
    body, ok = _section_figures(ctx)
    blocks.append(_section("figures", body, ok))
    sections["figures"] = "ok" if ok else "not run"

    say("tables 1-4")
    tables_dir.mkdir(parents=True, exist_ok=True)
    for stale in tables_dir.glob("table*.csv"):
        stale.unlink()
    builders: dict[str, Callable[[], tuple[str, _Table | None]]] = {
        "table1": lambda: _table_decodability(ctx, 1, setup),
        "table2": lambda: _table_mapping(ctx, setup),
        "table3": lambda: _table_similarity(ctx, setup),
        "table4": lambda: _table_decodability(ctx, 4, setup),
    }
    hints = {
        "table1": ("no decodability results for the embeddings", "Run `vsp decode` and `vsp meta`."),
        "table2": ("no zero-shot mapping results (mapping/*.parquet)", "Run `vsp map`."),
        "table3": ("no similarity results (similarity/*.parquet)", "Run `vsp similarity`."),
        "table4": ("no decodability results for the embeddings", "Run `vsp decode` and `vsp meta`."),
    }
    for sid, build in builders.items():
        try:
            status, table = build()
        except Exception as exc:  # noqa: BLE001 - an unexpected table layout must not sink the whole report
            log.warning("report: %s could not be built: %s", sid, exc)
            status, table = f"error: {exc}", None
        if table is None:
            what, how = hints[sid]
            msg = (
                _not_run(what, how)
                if status == "not run"
                else _not_run(f"{what} could be read ({status})", how)
            )
            blocks.append(_section(sid, msg, False))
            sections[sid] = "not run"
            continue
        path = tables_dir / _csv_name(sid)
        table.csv.to_csv(path, index=False)
        csv_paths.append(path)
        src = sources_line(table.sources)
        extra = ""
        if sid == "table1" and table.note:
            extra += " " + table.note
        if sid == "table1" and setup.matches:
            extra = (
                " The paper's plain ResNet row's 'Overall' is the unweighted mean of its five classes (its "
                "SVD and 1ToN rows are per-property means); here overall is the mean over all properties."
            )
        if sid in ("table2", "table3"):
            extra += " The paper's text vectors are 300-d spaCy GloVe."
        fit_note = _meta_fit_note(ctx) if sid == "table2" else ""
        body = (
            _paper_note(setup, extra)
            + fit_note
            + table.html
            + f'<p class="src">From {_esc(src)}; CSV: {_esc(tables_dir.name + "/" + path.name)}</p>'
        )
        blocks.append(_section(sid, body, True))
        sections[sid] = "ok"

    say("statistics")
    from vsp.report import statistics

    for stale in tables_dir.glob("statistics_*.csv"):
        stale.unlink()
    body, ok, stat_csv = statistics.section(st, tables_dir)
    csv_paths += stat_csv
    blocks.append(_section("statistics", body, ok))
    sections["statistics"] = "ok" if ok else "not run"

    say("explanations")
    try:
        body, ok = _section_explain(ctx, explain_images, explain_model, explain_layers, top, device)
    except Exception as exc:  # noqa: BLE001 - e.g. weights that cannot be loaded offline
        log.warning("report: explanations failed: %s", exc)
        body, ok = (
            _not_run(f"explanations failed ({exc})", "Run `vsp explain` to see the error in full."),
            False,
        )
    blocks.append(_section("explain", body, ok))
    sections["explain"] = "ok" if ok else "not run"

    say("run manifest")  # last, so its stage list sees what this report itself added (explanation maps)
    ctx.stage_outputs = _stage_outputs(ctx)
    outputs_csv = tables_dir / "outputs.csv"
    pd.DataFrame(
        [(name, key) for name, _state, keys in ctx.stage_outputs for key in keys], columns=["stage", "key"]
    ).to_csv(outputs_csv, index=False)
    body, _ok = _section_run(ctx, setup)
    blocks.insert(0, _section("run", body, True))
    sections = {"run": "ok" if ctx.features else "not run", **sections}

    nav = "".join(f'<a href="#{sid}">{_esc(_TITLES[sid].split(":")[0])}</a>' for sid in _TITLES)
    stamp = now()
    try:
        from importlib.metadata import version

        vsp_version = version("vsp")
    except Exception:  # noqa: BLE001
        vsp_version = "?"
    doc = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>vsp report — {_esc(st.uri)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>vsp report</h1><p>{_esc(st.uri)} · written {stamp} · "
        f"vsp {_esc(vsp_version)}</p></header>"
        f"<nav>{nav}</nav><main>{''.join(blocks)}</main></body></html>\n"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")  # one per writer
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(doc)
    os.replace(tmp, out)
    result = ReportResult(out, tables_dir, csv_paths, sections, setup.matches, outputs_csv)
    _record(st, result)
    return result


def _record(store: Store, result: ReportResult) -> None:
    """Write ``report/done.json`` after the files: which files it wrote, with their sizes and sha256.

    The report's files live outside the store (``--out``), so the marker names them by absolute path; a
    store the user may only read keeps no marker (with a warning), and the report itself is still written.
    """
    import hashlib

    files = []
    for p in [result.path, *result.csv, *([result.outputs] if result.outputs else [])]:
        data = Path(p).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        files.append({"path": str(Path(p).resolve()), "size": len(data), "sha256": digest})
    ok = [k for k, v in result.sections.items() if v == "ok"]
    try:
        write_marker(
            store,
            REPORT_MARKER,
            [],
            files=files,
            path=str(result.path),
            tables_dir=str(result.tables_dir),
            sections=dict(result.sections),
            sections_with_results=len(ok),
            csv=len(result.csv),
            summary=result.line(),
        )
    except Exception as exc:  # noqa: BLE001 - a read-only store still gets its report
        log.warning("report written, but %s could not record it: %s", store.uri, exc)


def report_files_ok(doc: dict) -> bool:
    """Whether every file a report marker lists is there with its recorded size (on this machine)."""
    for f in doc.get("files", ()):
        p = Path(f["path"])
        if not p.is_file() or p.stat().st_size != f["size"]:
            return False
    return True
