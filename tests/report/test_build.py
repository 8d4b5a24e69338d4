"""vsp.report.build: sections with the stages, self-contained HTML, CSV tables, the paper column."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from vsp.data.norms import FEATURE_CLASSES, Norms
from vsp.io.store import open_store
from vsp.report import paper
from vsp.report.build import decodability_frame, paper_setup, write_report

# ------------------------------------------------------------------------------ planted stage outputs


def _png(title: str) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 2.5))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.plot([0, 1, 2], [0.2, 0.5, 0.4])
    ax.set_title(title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def write_features_manifest(store, model: str, weights: str, identity: str, concepts: list[str]) -> None:
    """A feature manifest as `vsp extract` writes it (enough for the report; no arrays)."""
    store.write_json(
        "features/manifest.json",
        {
            "identity": {
                "format": 1,
                "config": {
                    "models": [model],
                    "layers": "all-conv",
                    "weights": weights,
                    "seed": 0,
                    "pooling": "max",
                    "unit_size": 16,
                },
                "concepts": concepts,
                "images": {c: [f"/img/{c}/{c}_00.jpg"] for c in concepts},
                "weights_identity": {model: identity},
                "layers": [{"model": model, "name": "conv1", "index": 0, "kind": "conv", "channels": 64}],
            },
            "versions": {"vsp": "0.1.0"},
            "units": [[0, len(concepts)]],
            "created": "2026-01-01T00:00:00Z",
        },
    )


def _marked(store, data_key: str, table: pa.Table, marker_key: str, **info) -> None:
    """Write a unit's Parquet, then its marker listing it (as every stage does)."""
    from vsp.io.bookkeeping import write_marker, write_output

    write_marker(store, marker_key, [write_output(store, data_key, table)], **info)


def _decode_rows(model: str, layer: str, norms: Norms, rng: np.random.Generator) -> pa.Table:
    """Per-(property, fold) rows of one layer, as `vsp.decode.grid.decode_layer` writes them (f1 only)."""
    rows = [
        {
            "model": model,
            "layer": layer,
            "layer_index": 0,
            "property": p,
            "feature_class": c,
            "fine_grained": g,
            "fold": f,
            "f1": float(rng.uniform(0.2, 0.8)),
        }
        for p, c, g in zip(norms.properties, norms.feature_class, norms.fine_grained, strict=True)
        for f in range(3)
    ]
    return pa.Table.from_pylist(rows)


#: The meta stage's embeddings planted by `plant_stage_outputs` (name -> kind), ``{model}`` filled in.
PLANTED_META = {"{model}/penultimate": "penultimate", "{model}/svd": "svd", "{model}/1ton": "1ton"}


def plant_stage_outputs(store, model: str, norms: Norms, seed: int = 0) -> None:
    """Each stage's outputs in its own layout, with markers (decode, meta, mapping, similarity); run.json."""
    from vsp.mapping.stage import UNIT_SCHEMA, Unit

    rng = np.random.default_rng(seed)
    _marked(
        store,
        f"decode/results/{model}/penultimate.parquet",
        _decode_rows(model, "penultimate", norms, rng),
        f"decode/done/{model}/penultimate.json",
    )
    for name in ("figure1", "figure2"):
        store.write_bytes(f"decode/{name}.png", _png(name))
    from vsp.decode.grid import aggregate_intervals
    from vsp.decode.inference import INTERVALS

    rows = store.read_parquet(f"decode/results/{model}/penultimate.parquet")
    store.write_parquet(INTERVALS, pa.Table.from_pandas(aggregate_intervals(rows, 200), preserve_index=False))
    metas = {k.format(model=model): v for k, v in PLANTED_META.items()}
    store.write_json("meta/manifest.json", {"identity": {}, "plan": [{"name": n} for n in metas]})
    for emb, kind in metas.items():
        vec = pa.table({"concept": norms.concepts, "vector": [[0.0]] * len(norms.concepts)})
        info = {"name": emb, "kind": kind, "model": model, "text": False}
        _marked(store, f"meta/embeddings/{emb}.parquet", vec, f"meta/done/{emb}.json", **info)
        if kind != "penultimate":  # the decoding stage's row stands for the penultimate embedding
            rows = _decode_rows(model, emb, norms, rng)
            rows = rows.append_column("embedding", pa.array([emb] * rows.num_rows))
            _marked(store, f"meta/decode/results/{emb}.parquet", rows, f"meta/decode/done/{emb}.json")
    for emb in (f"{model}/penultimate", f"{model}/svd", "glove", f"{model}/penultimate+glove"):
        for m in ("knn", "ridge", "mlp"):
            mp = []
            for f in range(2):
                h = np.sort(rng.uniform(0, 100, 4))
                mp.append(
                    {
                        "embedding": emb,
                        "mapper": m,
                        "repeat": 0,
                        "fold": f,
                        "n_test": 3 + f,
                        "hit1": h[0],
                        "hit5": h[1],
                        "hit10": h[2],
                        "hit20": h[3],
                        "params": "{}",
                        "test_concepts": norms.concepts[3 * f : 3 * f + 3 + f],
                        "ranks": [1] * (3 + f),
                    }
                )
            unit = Unit(emb, m, 0, 0, 2)
            _marked(store, unit.result_path, pa.Table.from_pylist(mp, schema=UNIT_SCHEMA), unit.marker_path)
    sim = [
        {
            "embedding": emb,
            "benchmark": b,
            "n_pairs": n,
            "n_scored": n - 1,
            "spearman": float(rng.uniform(-1, 1)),
        }
        for emb in (f"{model}/penultimate", f"{model}/svd", "glove")
        for b, n in (("MEN", 104), ("SimLex-999", 48))
    ]
    _marked(store, "similarity/table3.parquet", pa.Table.from_pylist(sim), "similarity/done/table3.json")
    store.write_json(
        "run.json",  # as vsp.runrecord.RunRecord writes it
        {
            "format": 1,
            "created": "2026-01-01T00:00:00Z",
            "identity": {"extract": {"models": [model]}},
            "stages": {
                "extract": {"status": "done", "seconds": 12.5, "units_run": 2, "images": 12},
                "decode": {"status": "done", "seconds": 3.25, "units_run": 21},
                "map": {"status": "failed", "error": "boom"},
            },
            "attempts": [{"attempt": 1, "host": "node-1", "status": "complete"}],
            "config": {"store": "x"},
            "versions": {"vsp": "0.1.0"},
            "git_commit": "abc123",
            "status": "complete",
            "started": "2026-01-01T00:00:00Z",
            "finished": "2026-01-01T00:01:00Z",
        },
    )


def synthetic_norms(n_concepts: int, n_props: int, seed: int = 0) -> Norms:
    rng = np.random.default_rng(seed)
    binary = (rng.random((n_concepts, n_props)) < 0.2).astype(np.uint8)
    return Norms(
        concepts=[f"concept{i:03d}" for i in range(n_concepts)],
        properties=[f"is prop{j:03d}" for j in range(n_props)],
        binary=binary,
        pf=(binary * rng.integers(5, 30, size=binary.shape)).astype(np.float32),
        feature_class=[FEATURE_CLASSES[j % 5] for j in range(n_props)],
        fine_grained=["is"] * n_props,
        source="synthetic",
    )


# ------------------------------------------------------------------------------------------ checks
_URL_ATTR = re.compile(r"""\b(?:src|href|srcset|action|poster|data)\s*=\s*["']?\s*(?:https?:)?//""", re.I)


def assert_self_contained(text: str) -> None:
    assert not _URL_ATTR.search(text), _URL_ATTR.search(text)
    assert "<script" not in text.lower() and "<link" not in text.lower() and "@import" not in text
    assert "url(" not in text.lower()  # no CSS resources either
    for src in re.findall(r'<img[^>]*\ssrc="([^"]*)"', text):
        assert src.startswith("data:image/png;base64,")


def _sections(path: Path) -> dict[str, bool]:
    text = path.read_text(encoding="utf-8")
    out = {}
    for sid in ("run", "figures", "table1", "table2", "table3", "table4", "statistics", "explain"):
        m = re.search(rf'<section id="{sid}"( class="notrun")?>', text)
        assert m, sid
        out[sid] = m.group(1) is None
    return out


# -------------------------------------------------------------------------------------------- tests
def test_empty_store_renders_every_section_as_not_run(tmp_path):
    res = write_report(tmp_path / "store", tmp_path / "out" / "report.html", explain_images=0)
    assert res.path.is_file() and res.tables_dir.is_dir() and res.csv == []
    assert set(res.sections.values()) == {"not run"}
    assert _sections(res.path) == dict.fromkeys(
        ("run", "figures", "table1", "table2", "table3", "table4", "statistics", "explain"), False
    ) | {"run": True}  # noqa: E501
    text = res.path.read_text(encoding="utf-8")
    assert (
        text.count("<b>Not run</b>") == 6
        and "No statistics in this run" in text
        and "no features/manifest.json" in text
    )
    assert_self_contained(text)


def test_sections_follow_the_stages_present(tmp_path):
    st = open_store(tmp_path / "store")
    norms = synthetic_norms(10, 25)
    write_features_manifest(st, "resnet18", "random", "random:0", norms.concepts)
    out = tmp_path / "report.html"

    res = write_report(st, out, norms=norms, explain_images=0)
    assert _sections(out) == {
        "run": True,
        "figures": False,
        "table1": False,
        "table2": False,
        "table3": False,
        "table4": False,
        "statistics": False,
        "explain": False,
    }

    # decoding only: figures, and Tables 1/4 from the penultimate layer's per-property results
    plant_stage_outputs(st, "resnet18", norms)
    for key in st.list("meta") + st.list("mapping") + st.list("similarity"):
        st.delete(key)
    res = write_report(st, out, norms=norms, explain_images=0)
    assert _sections(out) == {
        "run": True,
        "figures": True,
        "table1": True,
        "table2": False,
        "table3": False,
        "table4": True,
        "statistics": True,
        "explain": False,
    }
    assert sorted(p.name for p in res.csv) == ["statistics_decode_intervals.csv", "table1.csv", "table4.csv"]
    t1 = pd.read_csv(res.tables_dir / "table1.csv")
    assert list(t1.columns) == ["embedding", *paper.CLASS_COLUMNS] and len(t1) == 1
    df = st.read_parquet("decode/results/resnet18/penultimate.parquet").to_pandas()
    per_prop = df.groupby(["property", "feature_class"])["f1"].mean().reset_index()
    want = per_prop.groupby("feature_class")["f1"].mean() * 100
    for c in FEATURE_CLASSES:
        assert t1.loc[0, c] == pytest.approx(want[c])
    assert t1.loc[0, "overall"] == pytest.approx(per_prop["f1"].mean() * 100)

    # every stage: every section, 4 CSVs, stale CSVs of the previous report replaced
    plant_stage_outputs(st, "resnet18", norms)
    res = write_report(st, out, norms=norms, explain_images=0)
    assert _sections(out) == {
        "run": True,
        "figures": True,
        "table1": True,
        "table2": True,
        "table3": True,
        "table4": True,
        "statistics": True,
        "explain": False,
    }
    assert sorted(p.name for p in res.csv if p.name.startswith("table")) == [
        "table1.csv",
        "table2.csv",
        "table3.csv",
        "table4.csv",
    ]
    assert "statistics_decode_intervals.csv" in {p.name for p in res.csv}
    text = out.read_text(encoding="utf-8")
    assert_self_contained(text)
    assert "Pipeline stages (run.json)" in text and "complete (started 2026-01-01T00:00:00Z" in text
    assert "<th>map</th><td>failed</td>" in text and "abc123" in text
    assert text.count('<img class="figure"') == 2
    assert "Paper column omitted: weights are not ImageNet-pretrained" in text
    t2 = pd.read_csv(res.tables_dir / "table2.csv")
    assert len(t2) == 4 and "ridge_hit10" in t2.columns and not any(c.endswith("_paper") for c in t2.columns)
    assert list(t2["embedding"]).index("GloVe") == 2  # image rows, then text, then multimodal (paper order)
    from vsp.mapping.stage import read_rows

    mp = read_rows(st)
    g = mp[(mp.embedding == "glove") & (mp.mapper == "mlp")]
    assert t2.loc[t2.embedding == "GloVe", "mlp_hit5"].item() == pytest.approx(
        np.average(g.hit5, weights=g.n_test)
    )
    t3 = pd.read_csv(res.tables_dir / "table3.csv")
    assert {"MEN", "SimLex-999", "n_scored_MEN"} <= set(t3.columns) and len(t3) == 3
    t4 = pd.read_csv(res.tables_dir / "table4.csv")
    assert len(t4) == 3 and t4.embedding.str.contains("1ToN").any()


def test_paper_column_only_when_the_setup_matches(tmp_path):
    norms = synthetic_norms(638, 390)
    ok = open_store(tmp_path / "paper")
    write_features_manifest(ok, "resnet34", "imagenet", "ResNet34_Weights.IMAGENET1K_V1", norms.concepts)
    plant_stage_outputs(ok, "resnet34", norms)
    res = write_report(ok, tmp_path / "paper.html", norms=norms, explain_images=0)
    assert res.paper_column
    text = res.path.read_text(encoding="utf-8")
    assert "Paper column omitted" not in text and "difference (run − paper)" in text
    t1 = pd.read_csv(res.tables_dir / "table1.csv").set_index("embedding")
    resnet = t1.loc["ResNet (resnet34/penultimate)"]
    assert resnet["taxonomic_paper"] == 61.56 and resnet["overall_paper"] == 44.05
    assert resnet["taxonomic_diff"] == pytest.approx(resnet["taxonomic"] - 61.56)
    assert t1.loc["1ToN Meta ResNet (resnet34/1ton)", "functional_paper"] == 37.45
    t2 = pd.read_csv(res.tables_dir / "table2.csv").set_index("embedding")
    assert t2.loc["GloVe", "ridge_hit1_paper"] == 7.18
    assert t2.loc["ResNet + GloVe (resnet34/penultimate+glove)", "mlp_hit20_paper"] == 82.6
    t3 = pd.read_csv(res.tables_dir / "table3.csv")
    assert t3.loc[t3.embedding.str.startswith("GloVe"), "SimLex-999_paper"].item() == 0.210

    # the same outputs with random weights: no paper column, and the report says why
    off = open_store(tmp_path / "random")
    write_features_manifest(off, "resnet34", "random", "random:0", norms.concepts)
    plant_stage_outputs(off, "resnet34", norms)
    res = write_report(off, tmp_path / "random.html", norms=norms, explain_images=0)
    assert not res.paper_column
    text = res.path.read_text(encoding="utf-8")
    assert text.count("Paper column omitted: weights are not ImageNet-pretrained (resnet34: random:0)") == 4
    for name in ("table1", "table2", "table3", "table4"):
        assert not any(
            c.endswith(("_paper", "_diff")) for c in pd.read_csv(res.tables_dir / f"{name}.csv").columns
        )

    # the paper's weights but other norms: omitted, naming the norms
    res = write_report(ok, tmp_path / "small.html", norms=synthetic_norms(638, 100), explain_images=0)
    assert not res.paper_column
    assert "the norms have 638 concepts x 100 properties" in res.path.read_text(encoding="utf-8")


def test_paper_setup_reasons():
    man = {
        "identity": {
            "config": {"weights": "imagenet", "pooling": "max"},
            "weights_identity": {"resnet34": "ResNet34_Weights.IMAGENET1K_V1"},
        }
    }
    assert paper_setup(man, (638, 390), 638).matches
    assert "cover 600" in paper_setup(man, (638, 390), 600).why_not()
    assert "norms are unknown" in paper_setup(man, None, None).why_not()
    man["identity"]["config"]["pooling"] = "mean"
    assert "pooling" in paper_setup(man, (638, 390), 638).why_not()
    assert "`vsp extract` not run" in paper_setup(None, (638, 390), 638).why_not()


def test_paper_tables_are_the_published_numbers():
    k = paper.embedding_key
    assert paper.TABLE4[k("densenet169", "1ton")]["overall"] == 41.42
    assert (
        paper.TABLE1 == {key: v for key, v in paper.TABLE4.items() if key.model == "resnet34"}
        and len(paper.TABLE1) == 3
    )
    assert paper.TABLE2[k("resnet34", "1ton", True)]["knn"]["hit20"] == 78.8
    assert paper.TABLE3[k("resnet34", "1ton", True)] == {"MEN": 0.846, "SimLex-999": 0.491}
    assert len(paper.TABLE4) == 12 and len(paper.TABLE2) == len(paper.TABLE3) == 7
    # the paper's "Overall" is the mean over all 390 properties: the class means weighted by class sizes
    sizes = {
        "visual perceptual": 156,
        "functional": 94,
        "encyclopaedic": 65,
        "taxonomic": 46,
        "other perceptual": 29,
    }
    row = paper.TABLE4[k("vgg16")]
    assert sum(row[c] * n for c, n in sizes.items()) / 390 == pytest.approx(row["overall"], abs=0.01)


@pytest.mark.parametrize(
    ("name", "hint", "want"),
    [
        ("resnet34/penultimate", None, ("resnet34", "penultimate", False)),
        ("penultimate", "resnet34", ("resnet34", "penultimate", False)),
        ("svd_meta:resnet34", None, ("resnet34", "svd", False)),
        ("1ToN Meta ResNet + GloVe", None, ("resnet34", "1ton", True)),
        ("onetoN_meta", "alexnet", ("alexnet", "1ton", False)),
        ("multimodal_svd_meta_resnet34", None, ("resnet34", "svd", True)),
        ("GloVe", "resnet34", (None, "text", True)),
        ("resnet18", None, ("resnet18", "penultimate", False)),
    ],
)
def test_canonical_embedding(name, hint, want):
    assert tuple(paper.canonical_embedding(name, hint)) == want


def test_decodability_frame_is_the_grid_aggregation():
    """Tables 1 and 4 are vsp.decode.grid.aggregate's class means (x100), the one per-class aggregation.

    The decoding stage's penultimate layer is named <model>/penultimate, a meta embedding by its layer.
    """
    from vsp.decode.grid import aggregate

    rows = pd.DataFrame(
        {
            "model": ["a"] * 4 + ["a"] * 2,
            "layer": ["penultimate"] * 4 + ["a/svd"] * 2,
            "layer_index": [3] * 4 + [0] * 2,
            "property": ["p", "p", "q", "r", "p", "q"],
            "feature_class": ["taxonomic", "taxonomic", "functional", "taxonomic", "taxonomic", "functional"],
            "fine_grained": ["is"] * 6,
            "fold": [0, 1, 0, 0, 0, 0],
            "f1": [0.1, 0.3, 0.9, 0.6, 0.5, 0.7],
        }
    )
    frame = decodability_frame(rows)
    assert sorted(frame.index) == ["a/penultimate", "a/svd"]
    assert list(frame.columns) == list(paper.CLASS_COLUMNS)
    agg = aggregate(rows).set_index(["layer", "grouping", "group"])["f1"]
    for layer, name in (("penultimate", "a/penultimate"), ("a/svd", "a/svd")):
        assert frame.loc[name, "taxonomic"] == agg[(layer, "feature_class", "taxonomic")] * 100.0
        assert frame.loc[name, "overall"] == agg[(layer, "overall", "overall")] * 100.0
    assert frame.loc["a/penultimate", "taxonomic"] == pytest.approx(40.0)  # (0.2 + 0.6) / 2: folds first
    assert np.isnan(frame.loc["a/svd", "encyclopaedic"])
    assert decodability_frame(rows.iloc[:0]).empty


def test_report_reads_only_what_the_stages_markers_cover(tmp_path):
    """A Parquet file without a marker (a stray table, an unfinished unit) is not read, whatever it holds."""
    from vsp.mapping.stage import UNIT_SCHEMA, Unit

    st = open_store(tmp_path / "store")
    norms = synthetic_norms(10, 25)
    write_features_manifest(st, "resnet18", "random", "random:0", norms.concepts)
    plant_stage_outputs(st, "resnet18", norms)
    out = tmp_path / "r.html"
    before = {n: pd.read_csv(p) for n, p in ((p.stem, p) for p in write_report(st, out, norms=norms).csv)}
    # stray tables, in the layouts the report used to classify by their columns
    stray = pa.Table.from_pylist(
        [{"embedding": "stray", "model": "resnet18", "feature_class": c, "f1": 0.99} for c in FEATURE_CLASSES]
    )
    st.write_parquet("meta/decodability_old.parquet", stray)
    st.write_parquet("meta/decode/results/resnet18/stray.parquet", stray)  # no marker
    hits = {"n_test": 3, "hit1": 99.0, "hit5": 99.0, "hit10": 99.0, "hit20": 99.0, "params": "{}"}
    unit = Unit("glove", "knn", 0, 7, 8)  # a unit whose worker died before its marker
    row = {"embedding": "glove", "mapper": "knn", "repeat": 0, "fold": 7, **hits, "test_concepts": ["c"]}
    st.write_parquet(unit.result_path, pa.Table.from_pylist([row], schema=UNIT_SCHEMA))
    st.write_parquet("mapping/results.parquet", pa.Table.from_pylist([{**row, "embedding": "stray"}]))
    sim = [{"embedding": "stray", "benchmark": "MEN", "n_pairs": 9, "n_scored": 9, "spearman": 0.99}]
    st.write_parquet("similarity/results.parquet", pa.Table.from_pylist(sim))
    st.write_parquet(
        "decode/results/resnet18/conv9.parquet",
        st.read_parquet("decode/results/resnet18/penultimate.parquet").set_column(
            1, "layer", pa.array(["penultimate"] * 75)
        ),
    )  # no marker
    after = {p.stem: pd.read_csv(p) for p in write_report(st, out, norms=norms).csv}
    assert (
        before.keys()
        == after.keys()
        == {"table1", "table2", "table3", "table4", "statistics_decode_intervals"}
    )
    for name in before:
        pd.testing.assert_frame_equal(before[name], after[name])
    text = out.read_text(encoding="utf-8")
    assert "stray" not in text and "99.00" not in text
    # a marker that no longer proves its data (the Parquet rewritten) drops its rows too
    st.write_parquet("similarity/table3.parquet", pa.Table.from_pylist(sim))
    res = write_report(st, out, norms=norms)
    assert res.sections["table3"] == "not run"


def test_report_shows_recorded_and_generated_explanations(tmp_path, tmp_path_factory):
    from tests.report.test_explain import tiny_norms, tiny_run_copy
    from vsp.report.explain import explain_images, figure_bytes, save_example

    store, norms_path = tiny_run_copy(tmp_path_factory, tmp_path / "run")
    st, norms = open_store(store), tiny_norms(norms_path)
    image = sorted((norms_path.parent / "images").glob("*/*"))[-1]
    (expl,) = explain_images(st, norms, [image], layers="1,20", top=3)
    save_example(st, expl, figure_bytes(expl))
    res = write_report(st, tmp_path / "r.html", norms=norms, explain_images=3, top=4)
    assert res.sections["explain"] == "ok"
    text = res.path.read_text(encoding="utf-8")
    assert text.count('alt="explanation of ') == 3 and "recorded by `vsp explain`" in text
    assert text.count("an image of the run&#x27;s own image set") == 2
    assert_self_contained(text)


def test_cli_report(tmp_path):
    from typer.testing import CliRunner

    from vsp.cli import app

    st = open_store(tmp_path / "store")
    norms = synthetic_norms(10, 25)
    write_features_manifest(st, "resnet18", "random", "random:0", norms.concepts)
    plant_stage_outputs(st, "resnet18", norms)
    out = tmp_path / "site" / "run.html"
    res = CliRunner().invoke(
        app, ["report", "--store", str(tmp_path / "store"), "--out", str(out), "--explain-images", "0"]
    )
    assert res.exit_code == 0, res.output
    assert f"report: {out}" in res.output and "explain  not run" in res.output
    assert (tmp_path / "site" / "run_tables" / "table2.csv").is_file()
    bad = CliRunner().invoke(
        app, ["report", "--store", str(tmp_path / "store"), "--out", str(tmp_path / "x.pdf")]
    )
    assert bad.exit_code == 2 and ".html" in bad.output


def test_report_embeds_only_images_the_run_extracted(tmp_path, monkeypatch, caplog):
    """A store written by someone else must not steer the report into embedding other local images."""
    from PIL import Image

    from vsp.report.build import _Context, _pick_images

    secret = tmp_path / "private" / "secret.png"
    secret.parent.mkdir()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(secret)
    good = {c: tmp_path / "imgs" / f"{c}.png" for c in ("a", "b", "c", "d")}
    for path in good.values():
        path.parent.mkdir(exist_ok=True)
        Image.new("RGB", (8, 8)).save(path)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    st = open_store(tmp_path / "store")
    norms = synthetic_norms(4, 10)
    names = norms.concepts
    write_features_manifest(st, "resnet18", "random", "random:0", names)
    man = st.read_json("features/manifest.json")
    man["identity"]["images"] = {
        names[0]: ["../private/secret.png", str(good["a"])],  # relative: resolved against the reader's cwd
        names[1]: [str(secret), str(good["b"])],  # recorded as skipped by the run (below)
        names[2]: [str(tmp_path / "imgs" / ".." / "private" / "secret.png"), str(good["c"])],  # unnormalised
        names[3]: [str(tmp_path / "gone.png"), str(good["d"])],  # not on this machine
    }
    st.write_json("features/manifest.json", man)
    st.write_json(
        "features/done/unit-00000.json",
        {"unit": 0, "skipped": [{"uri": str(secret), "reason": "corrupt"}], "outputs": []},
    )
    with caplog.at_level("WARNING", logger="vsp.report.build"):
        picked = _pick_images(_Context(st, norms), 4)
    assert picked == [str(good[c]) for c in ("a", "b", "c", "d")]
    assert "secret.png" not in " ".join(picked)
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "not embedding 4 image(s)" in warned and "../private/secret.png" in warned and "gone.png" in warned


def test_report_drops_a_crafted_image_from_the_explanations(tmp_path, tmp_path_factory, monkeypatch, caplog):
    from PIL import Image

    from tests.report.test_explain import tiny_norms, tiny_run_copy

    store, norms_path = tiny_run_copy(tmp_path_factory, tmp_path / "run")
    st, norms = open_store(store), tiny_norms(norms_path)
    secret = tmp_path / "private" / "secret.png"
    secret.parent.mkdir()
    Image.new("RGB", (64, 64), (255, 0, 0)).save(secret)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    man = st.read_json("features/manifest.json")
    first = sorted(c for c in man["identity"]["concepts"] if c in set(norms.concepts))[0]
    man["identity"]["images"][first].insert(0, "../private/secret.png")
    st.write_json("features/manifest.json", man)
    with caplog.at_level("WARNING", logger="vsp.report.build"):
        res = write_report(st, tmp_path / "r.html", norms=norms, explain_images=1, explain_layers="1", top=3)
    assert res.sections["explain"] == "ok"
    text = res.path.read_text(encoding="utf-8")
    assert "secret.png" not in text and text.count('alt="explanation of ') == 1
    assert "../private/secret.png" in " ".join(r.getMessage() for r in caplog.records)


# ------------------------------------------- Table 3 columns, source lines, explanation layer labels
def _section_html(text: str, sid: str) -> str:
    m = re.search(rf'<section id="{sid}"[^>]*>(.*?)</section>', text, re.S)
    assert m, sid
    return m.group(1)


def test_table3_has_a_column_for_every_benchmark(tmp_path):
    """The demo's benchmark (demo-pairs) was dropped: only MEN/SimLex columns were rendered."""
    from vsp.report.build import benchmark_column

    st = open_store(tmp_path / "store")
    norms = synthetic_norms(10, 25)
    write_features_manifest(st, "resnet18", "random", "random:0", norms.concepts)
    rho = {"resnet18/penultimate": 0.2075, "resnet18/svd": 0.2838, "glove": 0.6065}
    rows = [
        {"embedding": e, "benchmark": "demo-pairs", "n_pairs": 276, "n_scored": 276, "spearman": v}
        for e, v in rho.items()
    ]
    rows.append(
        {"embedding": "glove", "benchmark": "garment-pairs", "n_pairs": 9, "n_scored": 8, "spearman": -0.25}
    )
    rows.append({"embedding": "glove", "benchmark": "men", "n_pairs": 104, "n_scored": 104, "spearman": 0.5})
    _marked(st, "similarity/table3.parquet", pa.Table.from_pylist(rows), "similarity/done/table3.json")
    # a table without a marker is not read
    other = [{"embedding": "glove", "benchmark": "other-pairs", "n_pairs": 4, "n_scored": 4, "spearman": 0.1}]
    st.write_parquet("similarity/extra.parquet", pa.Table.from_pylist(other))
    res = write_report(st, tmp_path / "r.html", norms=norms, explain_images=0)
    assert res.sections["table3"] == "ok"
    html = _section_html(res.path.read_text(encoding="utf-8"), "table3")
    heads = re.findall(r"<th>([^<]*)</th>", html.split("</thead>")[0])
    assert heads == ["embedding", "MEN", "demo-pairs", "garment-pairs"]
    body = html.split("<tbody>")[1]
    for v in (*rho.values(), -0.25, 0.5):
        assert f'<td class="num">{v:.3f}</td>' in body
    assert "pairs: demo-pairs 276" in body and "garment-pairs 8" in body
    t3 = pd.read_csv(res.tables_dir / "table3.csv")
    glove = t3[t3.embedding.str.startswith("GloVe  [pairs:")].iloc[0]
    assert glove["demo-pairs"] == pytest.approx(0.6065) and glove["MEN"] == 0.5
    assert t3["n_scored_demo-pairs"].tolist() == [276, 276, 276]
    assert benchmark_column("MEN_3000") == "MEN" and benchmark_column("SimLex999") == "SimLex-999"
    assert benchmark_column("garment-pairs") == "garment-pairs"  # has "men" in it, but is not MEN


def test_source_lines_summarise_unit_files(tmp_path):
    from vsp.report.build import sources_line

    st = open_store(tmp_path / "store")
    norms = synthetic_norms(10, 25)
    write_features_manifest(st, "resnet18", "random", "random:0", norms.concepts)
    plant_stage_outputs(st, "resnet18", norms)
    res = write_report(st, tmp_path / "r.html", norms=norms, explain_images=0)
    text = res.path.read_text(encoding="utf-8")
    src = re.search(r'<p class="src">From ([^;]*);', _section_html(text, "table2")).group(1)
    assert src == "12 unit files under mapping/units/"
    src = re.search(r'<p class="src">From ([^;]*);', _section_html(text, "table4")).group(1)
    want = "decode/results/resnet18/penultimate.parquet and 2 unit files under meta/decode/results/resnet18/"
    assert src == want
    assert "mapping/units/glove" not in text
    assert sources_line(["a/b.parquet"]) == "a/b.parquet"
    assert sources_line(["a/b.parquet", "a/c.parquet", "a/u/x/1.parquet"]) == (
        "a/b.parquet, a/c.parquet and a/u/x/1.parquet"
    )


def test_report_explanations_show_tap_index_and_module(tmp_path, tmp_path_factory):
    from tests.report.test_explain import tiny_norms, tiny_run_copy
    from vsp.report.explain import Explanation, LayerPrediction, figure_bytes, save_example

    store, norms_path = tiny_run_copy(tmp_path_factory, tmp_path / "run")
    st, norms = open_store(store), tiny_norms(norms_path)
    old = Explanation(  # as an older vsp recorded it: a 1-based conv number, no module name
        image=str(tmp_path / "old.jpg"),
        model="resnet18",
        weights="random:0",
        source="images",
        layers=[
            LayerPrediction("layer1.0.conv2", "conv 3", ["is red"], [1.0], ["visual perceptual"], ["colour"])
        ],
    )
    save_example(st, old, figure_bytes(old))
    res = write_report(st, tmp_path / "r.html", norms=norms, explain_images=2, explain_layers="1,20", top=3)
    assert res.sections["explain"] == "ok"
    html = _section_html(res.path.read_text(encoding="utf-8"), "explain")
    assert "<th>2 (layer1.0.conv2)</th>" in html and "conv 3" not in html  # the run's tap index
    assert html.count("<th>1 (layer1.0.conv1)</th>") == 1 and html.count("<th>20 (penultimate)</th>") == 1
    assert "0-based tap index" in html and "1-based" not in html
    assert "maps trained on every image&#x27;s vector" in html  # the recorded one
    assert "maps trained on the concept vectors" in html  # the new ones


def test_comments_on_the_paper_tables_say_what_the_numbers_are(cslb_path):
    """Overall is the mean over all properties (11 of 12 rows), not the mean of the five classes; the
    fine-grained grouping of `baseline_table` is no table of the paper (Table 4 is per feature class)."""
    import inspect

    from vsp.data.norms import load_cslb
    from vsp.decode import grid as decode

    norms = load_cslb(cslb_path)
    sizes = {c: norms.feature_class.count(c) for c in FEATURE_CLASSES}
    classes = [c for c in paper.CLASS_COLUMNS if c != "overall"]
    by_props = {
        k: sum(v[c] * sizes[c] for c in classes) / sum(sizes.values()) for k, v in paper.TABLE4.items()
    }
    matches = {k for k, v in paper.TABLE4.items() if abs(by_props[k] - v["overall"]) < 0.006}
    assert len(matches) == 11 and set(paper.TABLE4) - matches == {paper.embedding_key("resnet34")}
    plain = paper.TABLE4[paper.embedding_key("resnet34")]
    assert abs(sum(plain[c] for c in classes) / 5 - plain["overall"]) < 0.01  # 44.058 printed as 44.05
    source = inspect.getsource(paper)
    assert "mean of the five" not in source and "mean F1 over all 390 properties" in source
    doc = decode.baseline_table.__doc__
    assert '``"fine_grained"`` that of\n    Table 4' not in doc and "no table" in doc
