"""The report in a real headless Chromium: it loads without console errors and every figure renders.

How: ``tests/browser.py`` starts Debian's ``chromium`` (installed by the idempotent
``infra/install_chromium.sh`` when missing; CI runs it before the tests) with ``--headless --no-sandbox
--disable-gpu --disable-background-networking --disable-component-update --disable-sync --no-first-run`` and a
fresh ``--user-data-dir``, and drives it through the DevTools protocol over ``--remote-debugging-pipe``.
One session collects console errors, uncaught exceptions and failed loads (``Runtime``/``Log``/``Network``
events), reads ``naturalWidth``/``naturalHeight`` of every ``<img>`` after the load event, and takes a
full-page screenshot. Why not ``--dump-dom``: it cannot see console errors without a checking script in the
page (the report has none, by design) and needs a second launch for the screenshot. Why not Playwright or
``websocket-client``: the pipe needs no extra package, no browser download and no TCP port.

Without Chromium (and no root/apt to install it) the tests skip; CI (``VSP_NO_SKIP=1``) turns that into a
failure.
"""

from __future__ import annotations

import io

import pytest

from tests.browser import check_page, ensure_chromium
from tests.test_explain import tiny_norms, tiny_run_copy
from tests.test_report import assert_self_contained, plant_stage_outputs
from vsp.report import write_report
from vsp.store import open_store


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
