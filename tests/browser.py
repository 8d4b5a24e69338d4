"""Load an HTML file in real headless Chromium and report console errors, images and a screenshot.

Why the DevTools protocol over a pipe (``--remote-debugging-pipe``) and not ``--dump-dom`` or a package:

- ``--dump-dom`` only returns the DOM: it cannot see console errors, failed resource loads or exceptions
  unless the page carries a checking script, and the report must stay script-free. A screenshot would need a
  second launch.
- The DevTools protocol sees everything (``Runtime.exceptionThrown``, ``Runtime.consoleAPICalled``,
  ``Log.entryAdded`` for network/CSP/resource errors), evaluates ``naturalWidth`` of every image and the
  cells of every data table after the load event, and takes the full-page screenshot in the same session.
- Over a pipe (file descriptors 3 and 4, NUL-separated JSON messages; the transport Puppeteer and Playwright
  use) it needs no extra Python package (no ``websocket-client``, no Playwright and its browser download) and
  no TCP port, so parallel test runs cannot collide.

Chromium comes from the Debian package (``infra/install_chromium.sh``); ``$CHROMIUM`` overrides the binary.
Run by hand: ``python -m tests.browser report.html [screenshot.png]``.
"""

from __future__ import annotations

import base64
import json
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
INSTALL_SCRIPT = REPO / "infra" / "install_chromium.sh"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
)

# Evaluated in the page after the load event: every <img> with its decoded size.
_IMAGES_JS = """JSON.stringify(Array.from(document.images).map(i => ({
  alt: i.alt, complete: i.complete, naturalWidth: i.naturalWidth, naturalHeight: i.naturalHeight,
  src: (i.currentSrc || i.src).slice(0, 40)})))"""

# Evaluated in the page after the load event: every <table class="data"> with its section, header rows (text
# and colspan of each cell) and body rows (tag, class and text of each cell), as the DOM holds them.
_TABLES_JS = """JSON.stringify(Array.from(document.querySelectorAll('table.data')).map(t => ({
  section: (t.closest('section') || {}).id || '',
  head: Array.from(t.tHead ? t.tHead.rows : []).map(r => Array.from(r.cells).map(c => ({
    text: c.textContent, span: c.colSpan}))),
  body: Array.from(t.tBodies).flatMap(b => Array.from(b.rows)).map(r => ({cls: r.className,
    cells: Array.from(r.cells).map(c => ({tag: c.tagName.toLowerCase(), cls: c.className,
      text: c.textContent}))}))})))"""


def find_chromium() -> str | None:
    """``$CHROMIUM``, else ``chromium`` / ``chromium-browser`` / ``google-chrome`` on PATH."""
    env = os.environ.get("CHROMIUM")
    if env:
        return env if shutil.which(env) or os.path.isfile(env) else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def ensure_chromium() -> str | None:
    """Find Chromium, running the idempotent install script once if it is missing (needs root and apt)."""
    found = find_chromium()
    if found or os.environ.get("VSP_NO_BROWSER_INSTALL") == "1":
        return found
    if INSTALL_SCRIPT.is_file():
        proc = subprocess.run(["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            sys.stderr.write(f"install_chromium.sh failed:\n{proc.stdout}\n{proc.stderr}\n")
    return find_chromium()


@dataclass
class PageCheck:
    """What the browser saw."""

    url: str
    loaded: bool
    errors: list[str] = field(default_factory=list)  # console errors, exceptions, failed loads
    images: list[dict[str, Any]] = field(default_factory=list)
    tables: list[dict[str, Any]] = field(default_factory=list)  # every table.data: section, head, body
    screenshot: bytes | None = None
    title: str = ""


class _Pipe:
    """The DevTools protocol over Chromium's pipe: write commands on fd 3, read replies/events on fd 4."""

    def __init__(self, proc: subprocess.Popen, to_browser: int, from_browser: int) -> None:
        self.proc = proc
        self.w = to_browser
        self.r = from_browser
        self.buf = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.r, selectors.EVENT_READ)

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no reply from Chromium over the DevTools pipe")
            if not self.sel.select(timeout=left):
                continue
            chunk = os.read(self.r, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium closed the DevTools pipe (exit code {self.proc.poll()})")
            self.buf += chunk
        raw, self.buf = self.buf.split(b"\0", 1)
        return json.loads(raw)

    def send(
        self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 60
    ) -> dict:
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"DevTools {method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, timeout: float = 60) -> dict | None:
        deadline = time.monotonic() + timeout
        for i, ev in enumerate(self.events):
            if ev.get("method") == method:
                return self.events.pop(i)
        while time.monotonic() < deadline:
            try:
                ev = self._read_message(deadline)
            except TimeoutError:
                return None
            if ev.get("method") == method:
                return ev
            self.events.append(ev)
        return None


def _errors_from(events: list[dict[str, Any]]) -> list[str]:
    out = []
    for ev in events:
        m, p = ev.get("method"), ev.get("params", {})
        if m == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            out.append(f"exception: {d.get('text')} {d.get('exception', {}).get('description', '')}".strip())
        elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append(
                "console."
                + p["type"]
                + ": "
                + " ".join(str(a.get("value", a.get("description"))) for a in p.get("args", []))
            )
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            e = p["entry"]
            out.append(f"{e.get('source')}: {e.get('text')} {e.get('url', '')}".strip())
        elif m == "Network.loadingFailed" and not p.get("canceled"):
            out.append(f"network: {p.get('errorText')} ({p.get('type')})")
    return out


def _high_pipe() -> tuple[int, int]:
    """A pipe whose two fds are >= 10, so dup2 onto 3 and 4 in the child cannot clobber one with the other."""
    import fcntl

    r, w = os.pipe()
    hr, hw = fcntl.fcntl(r, fcntl.F_DUPFD_CLOEXEC, 10), fcntl.fcntl(w, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(r)
    os.close(w)
    return hr, hw


def check_page(
    path: str | os.PathLike, chromium: str | None = None, width: int = 1400, timeout: float = 90
) -> PageCheck:
    """Open ``path`` in headless Chromium: console errors, every image's decoded size and a screenshot."""
    exe = chromium or find_chromium()
    if not exe:
        raise FileNotFoundError("Chromium not found: run infra/install_chromium.sh or set CHROMIUM")
    url = Path(path).resolve().as_uri()
    profile = tempfile.mkdtemp(prefix="vsp-chromium-")
    cmd_r, cmd_w = _high_pipe()  # we write commands, Chromium reads them on fd 3
    ev_r, ev_w = _high_pipe()  # Chromium writes replies/events on fd 4, we read them

    def child_fds() -> None:  # runs in the child between fork and exec; dup2 makes 3 and 4 inheritable
        os.dup2(cmd_r, 3)
        os.dup2(ev_w, 4)

    args = [
        exe,
        *FLAGS,
        f"--user-data-dir={profile}",
        "--remote-debugging-pipe",
        f"--window-size={width},900",
        "about:blank",
    ]
    proc = subprocess.Popen(
        # close_fds=False: the child must keep the fds 3 and 4 made by child_fds (Python's own fds are
        # non-inheritable, PEP 446, so nothing else leaks into the browser)
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=child_fds,
        close_fds=False,
    )
    os.close(cmd_r)
    os.close(ev_w)
    pipe = _Pipe(proc, cmd_w, ev_r)
    try:
        targets = pipe.send("Target.getTargets", timeout=timeout)["targetInfos"]
        page = next((t["targetId"] for t in targets if t.get("type") == "page"), None)
        if page is None:
            page = pipe.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        sid = pipe.send("Target.attachToTarget", {"targetId": page, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            pipe.send(f"{domain}.enable", session=sid)
        pipe.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False},
            session=sid,
        )
        pipe.events.clear()
        nav = pipe.send("Page.navigate", {"url": url}, session=sid, timeout=timeout)
        errors = [f"navigation: {nav['errorText']}"] if nav.get("errorText") else []
        loaded = pipe.wait_event("Page.loadEventFired", timeout=timeout) is not None
        res = pipe.send("Runtime.evaluate", {"expression": _IMAGES_JS, "returnByValue": True}, session=sid)
        images = json.loads(res.get("result", {}).get("value", "[]"))
        res = pipe.send("Runtime.evaluate", {"expression": _TABLES_JS, "returnByValue": True}, session=sid)
        tables = json.loads(res.get("result", {}).get("value", "[]"))
        title = pipe.send(
            "Runtime.evaluate", {"expression": "document.title", "returnByValue": True}, session=sid
        )
        height = pipe.send(
            "Runtime.evaluate",
            {"expression": "Math.ceil(document.documentElement.scrollHeight)", "returnByValue": True},
            session=sid,
        )["result"].get("value", 900)
        pipe.send(
            "Emulation.setDeviceMetricsOverride",
            {
                "width": width,
                "height": int(min(max(height, 900), 16000)),
                "deviceScaleFactor": 1,
                "mobile": False,
            },
            session=sid,
        )
        shot = pipe.send(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session=sid
        )
        # give late console messages a moment, then collect everything seen since the navigation
        pipe.wait_event("__none__", timeout=0.5)
        errors += _errors_from(pipe.events)
        try:
            pipe.send("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError):
            pass
        return PageCheck(
            url=url,
            loaded=loaded,
            errors=errors,
            images=images,
            tables=tables,
            screenshot=base64.b64decode(shot["data"]),
            title=title.get("result", {}).get("value", ""),
        )
    finally:
        for fd in (cmd_w, ev_r):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(profile, ignore_errors=True)


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m tests.browser PAGE.html [SCREENSHOT.png]", file=sys.stderr)
        return 2
    exe = ensure_chromium()
    check = check_page(argv[0], exe)
    if len(argv) > 1 and check.screenshot:
        Path(argv[1]).write_bytes(check.screenshot)
    print(
        json.dumps(
            {"loaded": check.loaded, "title": check.title, "errors": check.errors, "images": check.images},
            indent=1,
        )
    )
    broken = [i for i in check.images if not i.get("naturalWidth")]
    return 0 if check.loaded and not check.errors and not broken else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
