"""The report in a real headless Chromium: it loads without console errors, every figure renders, and every
table shows numbers, the very numbers of its Parquet source.

How: ``tests/browser.py`` starts Debian's ``chromium`` (installed by the idempotent
``infra/install_chromium.sh`` when missing; CI runs it before the tests) with ``--headless --no-sandbox
--disable-gpu --disable-background-networking --disable-component-update --disable-sync --no-first-run`` and a
fresh ``--user-data-dir``, and drives it through the DevTools protocol over ``--remote-debugging-pipe``.
One session collects console errors, uncaught exceptions and failed loads (``Runtime``/``Log``/``Network``
events), reads ``naturalWidth``/``naturalHeight`` of every ``<img>`` and the cells of every data table after
the load event, and takes a full-page screenshot. Why not ``--dump-dom``: it cannot see console errors
without a checking script in the page (the report has none, by design) and needs a second launch for the
screenshot. Why not Playwright or ``websocket-client``: the pipe needs no extra package, no browser download
and no TCP port.

Without Chromium (and no root/apt to install it) the tests skip; CI (``VSP_NO_SKIP=1``) turns that into a
failure.
"""

from __future__ import annotations

import io

import pytest

from tests.browser import check_page, ensure_chromium
from tests.report.test_build import _marked, assert_self_contained, plant_stage_outputs
from tests.report.test_explain import tiny_norms, tiny_run_copy
from vsp.io.store import open_store
from vsp.report.build import write_report


@pytest.fixture(scope="module")
def chromium() -> str:
    exe = ensure_chromium()
    if exe is None:
        pytest.skip("Chromium not available: run infra/install_chromium.sh (needs root and apt)")
    return exe


def test_report_renders_in_headless_chromium(chromium, tmp_path, tmp_path_factory):
    store, norms_path = tiny_run_copy(tmp_path_factory, tmp_path / "run")
    st, norms = open_store(store), tiny_norms(norms_path)
    plant_stage_outputs(st, "resnet18", norms)
    res = write_report(st, tmp_path / "report.html", norms=norms, explain_images=2, top=5)
    assert set(res.sections.values()) == {"ok"}, res.sections
    assert_self_contained(res.path.read_text(encoding="utf-8"))

    page = check_page(res.path, chromium)
    assert page.loaded, "no load event"
    assert page.errors == []
    assert page.title.startswith("vsp report")
    assert len(page.images) == 4  # Figures 1-2 and two explanations
    for img in page.images:
        assert img["complete"] and img["naturalWidth"] > 100 and img["naturalHeight"] > 100, img
    from PIL import Image

    shot = Image.open(io.BytesIO(page.screenshot))
    assert shot.width == 1400 and shot.height > 2000  # the full page, not just the first screen
    (tmp_path / "report.png").write_bytes(page.screenshot)
    # the screenshot is not blank: header colour on top, varied content below
    assert shot.convert("RGB").getpixel((10, 10)) == (0x23, 0x39, 0x5D)
    assert len(shot.convert("L").resize((64, 256)).getcolors(4096) or []) > 20


# ------------------------------------------------------------- the tables' numbers, as the browser has them
_CLASS_HEADERS = {
    "Encyclopaedic": "encyclopaedic",
    "Functional": "functional",
    "Taxonomic": "taxonomic",
    "Visual perc.": "visual perceptual",
    "Other perc.": "other perceptual",
    "Overall": "overall",
}
_MAPPERS = {"kNN (k=5)": "knn", "Ridge": "ridge", "MLP (h=1200)": "mlp"}


def _columns(table: dict) -> list[str]:
    """Column keys of a table's value cells, from its header rows (group row with colspans, then names)."""
    names = [c["text"] for c in table["head"][-1]][1:]
    if len(table["head"]) == 1:
        return names
    groups: list[str] = []
    for cell in table["head"][0][1:]:
        groups += [cell["text"]] * int(cell["span"])
    return [f"{g}|{n}" for g, n in zip(groups, names, strict=True)]


def _shown(table: dict) -> dict[str, dict[str, str]]:
    """Row label -> column key -> the text of the cell."""
    cols = _columns(table)
    out = {}
    for row in table["body"]:
        head, *cells = row["cells"]
        assert head["tag"] == "th" and all(c["tag"] == "td" for c in cells), row
        assert len(cells) == len(cols), row
        out[head["text"].split("  [pairs:")[0]] = {k: c["text"] for k, c in zip(cols, cells, strict=True)}
    return out


def _label(name: str) -> str:
    from vsp.report import paper
    from vsp.report.build import _label as report_label

    return report_label(name, paper.canonical_embedding(name))


def _expected_tables(st, norms) -> dict[str, dict[str, dict[str, float]]]:
    """What each table must show, computed here from the planted Parquet files (no report code)."""
    import numpy as np
    import pandas as pd

    dec: dict[str, dict[str, float]] = {}
    pen = st.read_parquet("decode/results/resnet18/penultimate.parquet").to_pandas()
    per_prop = pen.groupby(["property", "feature_class"])["f1"].mean().reset_index()
    dec[_label("resnet18/penultimate")] = {
        **(per_prop.groupby("feature_class")["f1"].mean() * 100).to_dict(),
        "overall": per_prop["f1"].mean() * 100,
    }
    for key in st.list("meta/decode/results"):
        g = st.read_parquet(key).to_pandas()
        per_prop = g.groupby(["property", "feature_class"])["f1"].mean().reset_index()
        by_class = (per_prop.groupby("feature_class")["f1"].mean() * 100).to_dict()
        dec[_label(g["embedding"].iloc[0])] = {**by_class, "overall": per_prop["f1"].mean() * 100}
    mp = pd.concat([st.read_parquet(k).to_pandas() for k in st.list("mapping/units")])
    t2: dict[str, dict[str, float]] = {}
    for (emb, mapper), g in mp.groupby(["embedding", "mapper"]):
        for h in ("hit1", "hit5", "hit10", "hit20"):
            t2.setdefault(_label(emb), {})[f"{mapper}|{h}"] = float(np.average(g[h], weights=g["n_test"]))
    t3: dict[str, dict[str, float]] = {}
    for r in st.read_parquet("similarity/table3.parquet").to_pylist():
        t3.setdefault(_label(r["embedding"]), {})[r["benchmark"]] = r["spearman"]
    return {"table1": dec, "table2": t2, "table3": t3, "table4": dec}


def _key(sid: str, col: str) -> str:
    if sid in ("table1", "table4"):
        return _CLASS_HEADERS[col]
    if sid == "table2":
        group, hit = col.split("|")
        return f"{_MAPPERS[group]}|hit{hit.removeprefix('Hit@')}"
    return col


def test_report_tables_show_the_numbers_of_their_parquet_sources(chromium, tmp_path, tmp_path_factory):
    import pyarrow as pa

    store, norms_path = tiny_run_copy(tmp_path_factory, tmp_path / "run")
    st, norms = open_store(store), tiny_norms(norms_path)
    plant_stage_outputs(st, "resnet18", norms)
    # a benchmark of the run's own (as the demo's `demo-pairs`): it gets its column too
    demo = [
        {"embedding": e, "benchmark": "demo-pairs", "n_pairs": 276, "n_scored": 276, "spearman": v}
        for e, v in (("resnet18/penultimate", 0.2075), ("resnet18/svd", 0.2838), ("glove", 0.6065))
    ]
    table3 = st.read_parquet("similarity/table3.parquet").to_pylist() + demo
    _marked(st, "similarity/table3.parquet", pa.Table.from_pylist(table3), "similarity/done/table3.json")
    res = write_report(st, tmp_path / "report.html", norms=norms, explain_images=0)
    page = check_page(res.path, chromium)
    assert page.loaded and page.errors == []
    assert all(t["body"] for t in page.tables)  # no table is empty, the run section's status tables included
    results = [t for t in page.tables if t["section"].startswith("table")]
    assert sorted(t["section"] for t in results) == ["table1", "table2", "table3", "table4"]
    expected = _expected_tables(st, norms)
    digits = {"table1": 2, "table2": 2, "table3": 3, "table4": 2}
    for table in results:
        sid = table["section"]
        shown = _shown(table)
        assert shown, f"{sid}: empty table body"
        cols = _columns(table)
        for col in cols:  # every column holds numbers
            assert any(_is_number(row[col]) for row in shown.values()), (sid, col)
        if sid == "table3":
            assert cols == ["MEN", "SimLex-999", "demo-pairs"]
        assert set(shown) == set(expected[sid]), sid
        for label, row in shown.items():
            assert all(_is_number(v) for v in row.values()), (sid, label, row)  # every cell has a number here
            for col, text in row.items():
                want = expected[sid][label][_key(sid, col)]
                assert text == f"{want:.{digits[sid]}f}", (sid, label, col, text, want)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def test_the_checker_sees_broken_images_and_console_errors(chromium, tmp_path):
    page = tmp_path / "bad.html"
    page.write_text(
        "<!DOCTYPE html><html><head><title>bad</title></head><body>"
        '<img alt="x" src="data:image/png;base64,AAAA">'
        '<img alt="y" src="missing.png"><script>console.error("boom"); nope();</script></body></html>',
        encoding="utf-8",
    )
    got = check_page(page, chromium)
    assert got.loaded
    assert [i["naturalWidth"] for i in got.images] == [0, 0]
    assert any("console.error: boom" in e for e in got.errors)
    assert any("nope is not defined" in e for e in got.errors)
    assert any("ERR_FILE_NOT_FOUND" in e for e in got.errors)
