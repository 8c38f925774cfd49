"""The rendered book as a reader sees it, checked in a real browser (headless Chromium).

``make test`` builds the book (``make book``, warnings as errors) and installs Chromium
(``tools/ensure_chromium.sh``) before running this file. For every page of ``_toc.yml``
the test opens ``_build/html/<page>.html`` from disk with the network disabled, waits for
MathJax and the images, and checks that

* every image has loaded with a non-zero size, and chapter figures carry alt text;
* every math element is typeset by MathJax (``mjx-container``, no ``mjx-merror``);
* no output cell shows an error or a traceback, and no script throws;
* nothing is requested from the network and no local asset is missing (offline book);
* chapters offer their ``.py`` and ``.ipynb`` downloads;

and, at a window 1280 px and 800 px wide (folded tables opened), that

* no table is clipped: every table fits the text column or sits in a container that
  scrolls it (an ancestor whose content is wider than it and that hides the overflow is a
  clipped table), and the page itself never scrolls sideways;
* every image is in a figure with a caption;
* no output is a raw DataFrame (pandas' ``table.dataframe``, a ``Styler`` table, an HTML
  table not made by ``lielib.book.report``, or a DataFrame's text repr).

A full-page screenshot of each page is saved to ``_build/screenshots/`` as an artefact, at
both widths.
The browser is driven over the DevTools protocol through ``--remote-debugging-pipe``
(standard library only; no browser download). Set ``CHROMIUM`` to use another binary.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
WIDTH, HEIGHT, MAX_SHOT_HEIGHT = 1280, 900, 12000
LAYOUT_WIDTHS = (1280, 800)
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("browser")]


def toc_pages(toc_path: Path = ROOT / "_toc.yml") -> list[str]:
    """Docnames of every page in a Jupyter Book ``_toc.yml``, root first, in reading order."""
    toc = yaml.safe_load(toc_path.read_text())
    pages = [toc["root"]]

    def walk(node) -> None:
        if isinstance(node, dict):
            if "file" in node:
                pages.append(node["file"])
            for key in ("parts", "chapters", "sections"):
                walk(node.get(key, []))
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    return [str(Path(p).with_suffix("")) if Path(p).suffix else p for p in pages]


PAGES = toc_pages()


# Puts the pipe ends on fds 3 and 4 and becomes the browser (sh/dash only knows fds 0-9).
_TRAMPOLINE = (
    "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); "
    "os.close(int(sys.argv[1])); os.close(int(sys.argv[2])); os.execv(sys.argv[3], sys.argv[3:])"
)


def _high_fd(fd: int) -> int:
    """Move ``fd`` to a descriptor number >= 10."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return high


class DevTools:
    """A minimal Chrome DevTools Protocol client over ``--remote-debugging-pipe``.

    Chromium reads NUL-terminated JSON messages on fd 3 and writes them on fd 4.
    """

    def __init__(self, binary: str, profile: str):
        # Pipe ends numbered >= 10, so that moving them to 3 and 4 cannot clobber them.
        to_browser_r, self._to_browser = (_high_fd(fd) for fd in os.pipe())
        self._from_browser, from_browser_w = (_high_fd(fd) for fd in os.pipe())
        flags = [
            "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-extensions", "--disable-default-apps", "--mute-audio",
            "--hide-scrollbars", "--allow-file-access-from-files",
            # Offline: no name resolves, so any network request fails (and is reported).
            "--host-resolver-rules=MAP * ~NOTFOUND",
            f"--user-data-dir={profile}", f"--window-size={WIDTH},{HEIGHT}",
            "--remote-debugging-pipe", "about:blank",
        ]
        self.log = Path(profile) / "chromium.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _TRAMPOLINE, str(to_browser_r), str(from_browser_w),
                 binary, *flags],
                pass_fds=(to_browser_r, from_browser_w),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def close(self) -> None:
        with contextlib.suppress(OSError, RuntimeError, TimeoutError):  # may be gone already
            self.send("Browser.close", timeout=5)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_browser, self._from_browser):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no message from Chromium in time")
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if not ready:
                continue
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                err = self.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"Chromium closed the DevTools pipe; stderr:\n{err}")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict | None = None, *, session: str | None = None,
             timeout: float = 30) -> dict:
        """Call a DevTools method and return its result; events seen meanwhile are kept."""
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_browser, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method} failed: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, *, session: str | None, timeout: float = 30) -> dict:
        """Wait for an event (one already received counts); return it."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for event in self.events[seen:]:
                if event.get("method") == method and event.get("sessionId") == session:
                    return event
            seen = len(self.events)
            self.events.append(self._read_message(deadline))


# Runs in the page after the load event: wait for MathJax and images, then report.
_INSPECT = r"""
(async () => {
  for (const img of document.images) { img.loading = "eager"; }
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
  }
  await Promise.all([...document.images].map(img => (img.complete ? null :
      new Promise(done => { img.addEventListener("load", done); img.addEventListener("error", done); }))));
  const main = document.querySelector("main") || document.body;
  const text = main.innerText;
  const math = [...document.querySelectorAll(".math")];
  return {
    title: document.title,
    images: [...main.querySelectorAll("img")].map(img => ({
      src: img.getAttribute("src"), alt: img.getAttribute("alt") || "",
      complete: img.complete, naturalWidth: img.naturalWidth,
      width: img.getBoundingClientRect().width,
      figure: !!(img.closest("figure") || img.closest(".cell_output")),
    })),
    mathElements: math.length,
    typeset: math.filter(el => el.querySelector("mjx-container")).length,
    mjxContainers: document.querySelectorAll("mjx-container").length,
    mjxErrors: document.querySelectorAll("mjx-merror").length,
    mathjaxLoaded: !!(window.MathJax && MathJax.version),
    rawTex: /\\\(|\\\[|\$\$/.test(math.map(el => el.innerText).join(" ")),
    errorCells: document.querySelectorAll(
      ".output.error, .output.traceback, .cell_output .traceback").length,
    tracebackText: text.includes("Traceback (most recent call last)"),
    downloads: [...document.querySelectorAll("a[href*='_sources/']")].map(a => a.getAttribute("href")),
    height: Math.ceil(Math.max(document.documentElement.scrollHeight, document.body.scrollHeight)),
  };
})()
"""


# Runs after _INSPECT at each width: clipped tables, uncaptioned figures, raw DataFrames.
_LAYOUT = r"""
(async () => {
  for (const d of document.querySelectorAll("details")) { d.open = true; }
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  const main = document.querySelector("main") || document.body;
  const article = main.querySelector("article") || main;
  const right = article.getBoundingClientRect().right;
  const style = el => getComputedStyle(el).overflowX;
  const name = t => (t.className || t.id || "table") + ": " +
      (t.innerText || "").trim().split("\n")[0].slice(0, 60);
  const clipped = [];
  for (const t of main.querySelectorAll("table")) {
    if (!t.getClientRects().length) { continue; }  // not displayed (e.g. a closed dropdown)
    let scroller = null, hidden = null;
    for (let el = t.parentElement; el && el !== article.parentElement; el = el.parentElement) {
      const o = style(el);
      if (o === "auto" || o === "scroll") { scroller = el; break; }
      if ((o === "hidden" || o === "clip") && el.scrollWidth > el.clientWidth + 1) { hidden = el; break; }
    }
    if (hidden) {
      clipped.push(`${name(t)} (cut by ${hidden.className || hidden.tagName}: ` +
                   `scroll width ${hidden.scrollWidth} > client width ${hidden.clientWidth})`);
    } else if (scroller) {
      if (scroller.getBoundingClientRect().right > right + 1) {
        clipped.push(`${name(t)} (its scroll container is wider than the text column)`);
      }
    } else if (t.getBoundingClientRect().right > right + 1) {
      clipped.push(`${name(t)} (right edge ${Math.round(t.getBoundingClientRect().right)} px ` +
                   `beyond the text column at ${Math.round(right)} px, no scroll container)`);
    }
  }
  const page = document.scrollingElement;
  const uncaptioned = [...main.querySelectorAll("img")].filter(img => {
    const fig = img.closest("figure");
    const cap = fig && fig.querySelector("figcaption");
    return !(cap && cap.innerText.trim());
  }).map(img => img.getAttribute("alt") || img.getAttribute("src"));
  const reprs = [...main.querySelectorAll(".cell_output pre, .output pre")].filter(p =>
      /\[\d+ rows x \d+ columns\]|\ndtype: \w+|^[ \t]*\S+(?:[ \t]{2,}\S+)+[ \t]*\n(?:\S+(?:[ \t]{2,}\S+)+[ \t]*\n){2,}/m
      .test(p.innerText));
  return {
    width: window.innerWidth,
    clipped,
    pageOverflow: page.scrollWidth > window.innerWidth + 1 ? page.scrollWidth : 0,
    uncaptioned,
    rawTables: [...main.querySelectorAll(
        "table.dataframe, table[id^='T_'], .text_html table:not(.book-table)")].map(name),
    rawText: reprs.map(p => p.innerText.slice(0, 80)),
  };
})()
"""


@pytest.fixture(scope="module")
def browser():
    if not (HTML / "index.html").is_file():
        pytest.fail(
            f"{HTML}/index.html does not exist: build the book first with `make book` "
            "(`make test` does this)."
        )
    binary = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which(
        "chromium-browser")
    if not binary:
        pytest.fail("Chromium is not installed: run tools/ensure_chromium.sh "
                    "(`make test` does this; as root it installs Debian's chromium).")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lielib-chromium-", ignore_cleanup_errors=True) as profile:
        tools = DevTools(binary, profile)
        try:
            target = tools.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = tools.send("Target.attachToTarget",
                                 {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Network", "Runtime", "Log"):
                tools.send(f"{domain}.enable", session=session)
            tools.send("Emulation.setDeviceMetricsOverride",
                       {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1,
                        "mobile": False}, session=session)
            yield tools, session
        finally:
            tools.close()


def open_page(tools: DevTools, session: str, path: Path) -> tuple[dict, list[dict]]:
    """Load ``path``, return the page report and the DevTools events of this load."""
    tools.events.clear()
    tools.send("Page.navigate", {"url": path.as_uri()}, session=session)
    tools.wait_event("Page.loadEventFired", session=session, timeout=60)
    result = tools.send("Runtime.evaluate",
                        {"expression": _INSPECT, "awaitPromise": True, "returnByValue": True},
                        session=session, timeout=60)
    if "exceptionDetails" in result:
        raise AssertionError(f"inspecting {path} failed: {result['exceptionDetails']}")
    return result["result"]["value"], list(tools.events)


def set_width(tools: DevTools, session: str, width: int) -> None:
    """Resize the viewport and wait until the page is laid out again."""
    tools.send("Emulation.setDeviceMetricsOverride",
               {"width": width, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
               session=session)
    tools.send("Runtime.evaluate", {
        "expression": "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))",
        "awaitPromise": True}, session=session)


def layout_report(tools: DevTools, session: str) -> dict:
    result = tools.send("Runtime.evaluate",
                        {"expression": _LAYOUT, "awaitPromise": True, "returnByValue": True},
                        session=session, timeout=60)
    if "exceptionDetails" in result:
        raise AssertionError(f"the layout check failed: {result['exceptionDetails']}")
    return result["result"]["value"]


def screenshot(tools: DevTools, session: str, height: int, out: Path, width: int = WIDTH) -> None:
    """Full-page PNG: grow the viewport to the page (as Puppeteer's fullPage does)."""
    height = max(HEIGHT, min(height, MAX_SHOT_HEIGHT))
    metrics = {"width": width, "deviceScaleFactor": 1, "mobile": False}
    tools.send("Emulation.setDeviceMetricsOverride", {**metrics, "height": height},
               session=session)
    try:
        # Two animation frames, so the enlarged viewport is laid out and painted.
        tools.send("Runtime.evaluate", {
            "expression": "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))",
            "awaitPromise": True}, session=session)
        shot = tools.send("Page.captureScreenshot", {"format": "png"}, session=session,
                          timeout=60)
    finally:
        tools.send("Emulation.setDeviceMetricsOverride", {**metrics, "height": HEIGHT},
                   session=session)
    out.write_bytes(base64.b64decode(shot["data"]))


def test_toc_lists_pages():
    assert PAGES[0] == "index"
    assert any(p.startswith("chapters/") for p in PAGES), "no chapter in _toc.yml"
    assert HTML.is_dir(), f"{HTML} does not exist: build the book first with `make book`"
    for page in PAGES:
        assert (HTML / f"{page}.html").is_file(), (
            f"{page} is in _toc.yml but _build/html/{page}.html was not built; run `make book`"
        )


# Per-model notebooks that `python -m lielib.book.sweep` runs once per model; they need the
# zoo checkpoints, so they are exercised by tests/book/test_sweep.py, not built into the book.
SWEEP_TEMPLATES = {"chapters/workers/measure_model"}
TABLE_PAGES = {"chapters/claims"}  # the Claims page is one table by design: no figure


def test_every_chapter_is_in_the_toc():
    chapters = {f"chapters/{p.stem}" for p in (ROOT / "chapters").glob("*.py")}
    missing = sorted(chapters - set(PAGES) - SWEEP_TEMPLATES)
    assert not missing, f"chapters not listed in _toc.yml (so never built): {missing}"


def test_book_config_is_offline_and_strict():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    sphinx = config["sphinx"]["config"]
    assert config["only_build_toc_files"] is True
    assert config["execute"]["execute_notebooks"] == "cache"
    assert sphinx["nb_execution_raise_on_error"] is True
    assert ".py" in sphinx["nb_custom_formats"]
    assert "_static" not in sphinx["html_static_path"]
    mathjax = sphinx["mathjax_path"]
    assert not mathjax.startswith(("http:", "https:", "//")), "MathJax must be served locally"
    static = [ROOT / folder / mathjax for folder in sphinx["html_static_path"]]
    assert any(p.is_file() for p in static), (
        f"{mathjax} is in none of {sphinx['html_static_path']}: run tools/fetch_mathjax.sh "
        "(`make book` does this)"
    )
    built = HTML / "_static" / mathjax
    assert built.is_file(), f"{built} missing: run `make book`"
    fonts = list((built.parent / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"))
    assert len(fonts) > 10, "MathJax's CHTML fonts were not copied"
    html = (HTML / "index.html").read_text()
    assert f"_static/{mathjax}" in html


@pytest.mark.parametrize("page", PAGES)
def test_page_renders(browser, page):
    tools, session = browser
    path = HTML / f"{page}.html"
    assert path.is_file(), f"{path} missing: `make book` did not build {page}"
    report, events = open_page(tools, session, path)
    screenshot(tools, session, report["height"], SHOTS / f"{page.replace('/', '__')}.png")

    # Offline: nothing went to the network and every local asset was found.
    remote = sorted({e["params"]["request"]["url"] for e in events
                     if e.get("method") == "Network.requestWillBeSent"
                     and not e["params"]["request"]["url"].startswith(LOCAL_SCHEMES)})
    assert not remote, f"{page} requests network resources: {remote}"
    failed = [e["params"] for e in events if e.get("method") == "Network.loadingFailed"
              and not e["params"].get("canceled")]
    assert not failed, f"{page}: resources failed to load: {failed}"
    thrown = [e["params"]["exceptionDetails"] for e in events
              if e.get("method") == "Runtime.exceptionThrown"]
    assert not thrown, f"{page}: a script threw: {thrown}"

    # Images: loaded, non-zero size; figures have alt text.
    for img in report["images"]:
        assert img["complete"] and img["naturalWidth"] > 0, f"{page}: image not loaded: {img}"
        assert img["width"] > 0, f"{page}: image has zero displayed width: {img}"
        if img["figure"]:
            assert img["alt"].strip(), f"{page}: figure without alt text: {img['src']}"

    # Math: every math element typeset by the local MathJax, no TeX errors.
    if report["mathElements"]:
        assert report["mathjaxLoaded"], f"{page} has math but MathJax did not load"
        assert report["typeset"] == report["mathElements"], (
            f"{page}: {report['mathElements'] - report['typeset']} of "
            f"{report['mathElements']} math elements not typeset"
        )
        assert not report["rawTex"], f"{page}: raw TeX left on the page"
    assert report["mjxErrors"] == 0, f"{page}: MathJax reports {report['mjxErrors']} errors"

    # No error output.
    assert report["errorCells"] == 0, f"{page} shows {report['errorCells']} error cells"
    assert not report["tracebackText"], f"{page} shows a Python traceback"

    # At each width: no clipped table, every image captioned, no raw DataFrame output.
    problems = []
    try:
        for width in LAYOUT_WIDTHS:
            set_width(tools, session, width)
            layout = layout_report(tools, session)
            if width != WIDTH:
                height = tools.send("Runtime.evaluate", {
                    "expression": "document.documentElement.scrollHeight",
                    "returnByValue": True}, session=session)["result"]["value"]
                screenshot(tools, session, height,
                           SHOTS / f"{page.replace('/', '__')}__{width}.png", width=width)
            problems += [f"{width} px: clipped table {t}" for t in layout["clipped"]]
            if layout["pageOverflow"]:
                problems.append(f"{width} px: the page scrolls sideways "
                                f"({layout['pageOverflow']} px wide)")
            problems += [f"{width} px: figure without a caption: {u}" for u in layout["uncaptioned"]]
            problems += [f"{width} px: raw DataFrame table: {t}" for t in layout["rawTables"]]
            problems += [f"{width} px: raw DataFrame text: {t!r}" for t in layout["rawText"]]
    finally:
        set_width(tools, session, WIDTH)
    assert not problems, f"{page}:\n  " + "\n  ".join(dict.fromkeys(problems))

    if page.startswith("chapters/") and page not in TABLE_PAGES:
        figures = [img for img in report["images"] if img["figure"]]
        assert figures, f"chapter {page} shows no figure"
        for suffix in (".py", ".ipynb"):
            assert any(h.endswith(f"_sources/{page}{suffix}") for h in report["downloads"]), (
                f"{page}: no {suffix} download button (links: {report['downloads']})"
            )
            assert (HTML / "_sources" / f"{page}{suffix}").is_file(), (
                f"{page}: _build/html/_sources/{page}{suffix} missing"
            )
        notebook = json.loads((HTML / "_sources" / f"{page}.ipynb").read_text())
        assert any(cell.get("outputs") for cell in notebook["cells"]), (
            f"{page}: the downloadable .ipynb has no outputs (not the executed notebook)"
        )


_SYNTHETIC = """<!doctype html><html><head><style>
  body { margin: 0; } main { display: flex; } article { width: 600px; }
  .cut { overflow-x: hidden; } .book-table-wrap { overflow-x: auto; }
  td { white-space: nowrap; }
</style></head><body><main><article>
  <div class="book-table-wrap"><table class="book-table"><tr><td>WIDE</td></tr></table></div>
  <div class="cut"><table class="narrowed"><tr><td>WIDE</td></tr></table></div>
  <div class="output text_html"><table class="dataframe"><tr><td>1</td></tr></table></div>
  <div class="cell_output"><pre>   a  b\n0  1  2\n1  3  4\n2  5  6\n</pre></div>
  <figure><img alt="captioned" src="data:image/gif;base64,R0lGODlhAQABAAAAACw=">
    <figcaption>A caption.</figcaption></figure>
  <img alt="bare" src="data:image/gif;base64,R0lGODlhAQABAAAAACw=">
</article></main></body></html>""".replace("WIDE", "wide " * 200)


def test_layout_check_finds_each_problem(tmp_path):
    """The checks above on a page made to fail each of them, and to pass the scroll container."""
    binary = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which(
        "chromium-browser")
    if not binary:
        pytest.fail("Chromium is not installed: run tools/ensure_chromium.sh")
    page = tmp_path / "page.html"
    page.write_text(_SYNTHETIC)
    (tmp_path / "profile").mkdir()
    tools = DevTools(binary, str(tmp_path / "profile"))
    try:
        target = tools.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = tools.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"]
        tools.send("Page.enable", session=session)
        set_width(tools, session, 800)
        tools.send("Page.navigate", {"url": page.as_uri()}, session=session)
        tools.wait_event("Page.loadEventFired", session=session, timeout=60)
        layout = layout_report(tools, session)
    finally:
        tools.close()
    assert len(layout["clipped"]) == 1 and "narrowed" in layout["clipped"][0], layout  # scroller passes
    assert layout["uncaptioned"] == ["bare"]
    assert len(layout["rawTables"]) == 1 and "dataframe" in layout["rawTables"][0], layout
    assert len(layout["rawText"]) == 1, layout
