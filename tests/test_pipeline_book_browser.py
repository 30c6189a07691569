"""The built book as a reader sees it: a real headless Chromium with the network off.

The slow test builds the book (``tofmra_utils.book.build_book``) from the smoke run in
``$TOFMRA_RUN_DIR`` when that holds executed notebooks, else from a small run it makes itself
(one executed notebook with a formula, a figure, papermill's parameter cells and a bookkeeping
cell), opens the pages through ChromeDriver's WebDriver API (no Python browser package needed)
and checks that figures load, that every formula is typeset by the local MathJax (no raw ``\\(``
in the rendered text), that no script comes from the internet, and that no bookkeeping shows: no
parameter cell, no local run path, no hidden input.

Chromium and ChromeDriver are Debian's packages (``chromium``, ``chromium-driver``); the
Makefile's test set-up installs them. The fast tests check the staging steps one by one.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
import yaml

from tofmra_utils.book import (MATHJAX_STATIC, TIMING_MARKER, build_book, glossary_terms, link_glossary, local_mathjax,
                               prepare_notebook, stage_book, write_instructor_timing, write_results_page)
from tofmra_utils.io import DataError
from tofmra_utils.runs import repo_root

ROOT = repo_root()
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 # The network is off: no host name resolves and no proxy answers.
                 "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>"]


# ------------------------------------------------------------------------------ a run to build from
def _png() -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _mini_run(root: Path) -> Path:
    """A run folder with one executed notebook carrying what the book must handle."""
    run = root / "run"
    (run / "notebooks").mkdir(parents=True)
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = ""\nrun_dir = ""', metadata={"tags": ["parameters", "remove-input"]})
    injected = nbformat.v4.new_code_cell(f'# Parameters\nprofile = "smoke"\nrun_dir = "{run}"\n',
                                         metadata={"tags": ["injected-parameters"]})
    setup = nbformat.v4.new_code_cell("ctx = setup_notebook('02_mini', profile, run_dir)\nctx",
                                      metadata={"tags": ["hide-input"]})
    setup.outputs = [nbformat.v4.new_output("execute_result", {"text/plain": f"NotebookContext(run_dir='{run}')"},
                                            execution_count=1)]
    figure = nbformat.v4.new_code_cell("plot_losses()")
    figure.outputs = [nbformat.v4.new_output("display_data", {"image/png": _png(), "text/plain": "<Figure>"})]
    nb.cells = [
        nbformat.v4.new_markdown_cell("# 02 · A mini chapter\n\nThe generator $G$ plays against $D$ and "
                                      "mode collapse is the failure to watch.\n\n"
                                      "$$\\min_G \\max_D \\; \\mathbb E_{x}[\\log D(x)] + \\mathbb E_{z}[\\log(1 - D(G(z)))].$$"),
        params, injected, setup, figure,
    ]
    nbformat.write(nb, run / "notebooks" / "02_mini.ipynb")
    (run / "summary.json").write_text(json.dumps({
        "profile": "smoke", "machine": "test", "status": "ok", "total_seconds": 12.5,
        "notebooks": {"02_mini": {"status": "ok", "seconds": 12.5, "results": {"dsc_real": 0.5, "path": str(run)}}},
    }))
    return run


def _real_run() -> Path | None:
    run = Path(os.environ.get("TOFMRA_RUN_DIR", ROOT / "runs" / "test-smoke"))
    have = {p.stem for p in (run / "notebooks").glob("[0-9][0-9]_*.ipynb") if not p.name.endswith(".failed.ipynb")}
    return run if {"02_dcgan", "03_wgan_gp"} <= have else None


# ------------------------------------------------------------------------------ fast: staging steps
def test_local_mathjax_is_shipped_and_the_config_uses_no_cdn():
    static = local_mathjax()
    config = yaml.safe_load((ROOT / "book" / "_config.yml").read_text())["sphinx"]["config"]
    script, _, query = config["mathjax_path"].partition("?config=")
    assert script == "mathjax/MathJax.js" and (static / "MathJax.js").exists()
    assert (static / "config" / f"{query}.js").exists(), "the combined configuration the book loads is shipped"
    assert config["html_static_path"] == [str(MATHJAX_STATIC.parent)]
    assert (static / "fonts" / "HTML-CSS" / config["mathjax2_config"]["HTML-CSS"]["webFont"]).is_dir()


def test_glossary_links_first_mentions_outside_code_and_math():
    terms = glossary_terms(ROOT / "book" / "glossary.md")
    assert {"TOF-MRA", "MIP", "bias field", "Rician noise", "Lipschitz", "spectral norm", "mode collapse", "DSC",
            "95HD", "domain shift", "frozen encoder", "z-score"} <= set(terms)
    linked: set[str] = set()
    text = "Mode collapse: `mode collapse` in code, $DSC$ in math, then DSC and DSC again, and domain shift."
    out = link_glossary(text, terms, linked)
    assert out.startswith("{term}`Mode collapse <mode collapse>`:")
    assert "`mode collapse` in code, $DSC$ in math" in out, "code and math are left alone"
    assert out.count("{term}`DSC <DSC>`") == 1 and "{term}`domain shift <domain shift>`" in out
    assert link_glossary("mode collapse again", terms, linked) == "mode collapse again", "one link per page"
    assert link_glossary("# Mode collapse heading", terms, set()) == "# Mode collapse heading"


def test_prepare_notebook_removes_parameter_cells_and_local_paths(tmp_path):
    run = _mini_run(tmp_path)
    path = run / "notebooks" / "02_mini.ipynb"
    prepare_notebook(path, run, ["mode collapse"])
    nb = json.loads(path.read_text())
    tags = [c["metadata"].get("tags", []) for c in nb["cells"]]
    assert "remove-cell" in tags[1] and "remove-cell" in tags[2], "parameters and injected-parameters are removed"
    outputs = json.dumps([c.get("outputs", []) for c in nb["cells"]])
    assert str(run.resolve()) not in outputs and "runs/run" in outputs
    assert "{term}`mode collapse <mode collapse>`" in "".join(nb["cells"][0]["source"])


def test_results_page_and_instructor_timing_come_from_summary(tmp_path):
    run = _mini_run(tmp_path)
    page = write_results_page(tmp_path / "results.md", run).read_text()
    assert "| 02_mini | ok | 0.2 |" in page and "| dsc_real | 0.5 |" in page
    assert str(run) not in page, "no local path on the page"
    guide = tmp_path / "instructor.md"
    guide.write_text(f"before\n{TIMING_MARKER}\nafter\n")
    text = write_instructor_timing(guide, run).read_text()
    assert TIMING_MARKER not in text and "| 02_mini | 30 | 0.2 | ok |" in text
    guide.write_text("no marker")
    with pytest.raises(DataError, match="marker"):
        write_instructor_timing(guide, run)
    empty = tmp_path / "empty"
    (empty / "notebooks").mkdir(parents=True)
    assert "no `summary.json`" in write_results_page(tmp_path / "r2.md", empty).read_text()


def test_stage_lists_the_new_pages_and_copies_mathjax(tmp_path):
    stage = stage_book(_mini_run(tmp_path))
    toc = yaml.safe_load((stage / "_toc.yml").read_text())
    files = [c["file"] for c in toc["chapters"]]
    assert files[0] == "notebooks/02_mini"
    assert {"results", "instructor", "glossary", "references"} <= set(files)
    assert (stage / MATHJAX_STATIC / "MathJax.js").exists()
    assert (stage / MATHJAX_STATIC / "fonts").is_dir() and not (stage / MATHJAX_STATIC / "localization").exists()
    assert TIMING_MARKER not in (stage / "instructor.md").read_text()


def test_citation_file_names_the_study_and_this_version():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    assert cff["preferred-citation"]["doi"] == "10.1016/j.compbiomed.2021.104254"
    version = next(line.split("=")[1].strip().strip('"') for line in (ROOT / "pyproject.toml").read_text().splitlines()
                   if line.startswith("version"))
    assert cff["version"] == version
    bib = (ROOT / "book" / "references.bib").read_text()
    assert bib.count("@") == bib.count("doi "), "every reference carries a DOI"


# ------------------------------------------------------------------------------ slow: the browser
class WebDriver:
    """The few WebDriver calls the test needs, over ChromeDriver's HTTP API."""

    def __init__(self, profile_dir: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen([CHROMEDRIVER, f"--port={self.port}"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                self._call("GET", "/status")
                break
            except OSError:
                time.sleep(0.1)
        caps = {"browserName": "chrome", "goog:chromeOptions": {
            "binary": CHROMIUM, "args": [*BROWSER_FLAGS, "--window-size=1280,1600",
                                         f"--user-data-dir={profile_dir}"]}}
        self.session = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})["sessionId"]
        self._call("POST", f"/session/{self.session}/timeouts", {"script": 30000, "pageLoad": 30000})

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())["value"]

    def open(self, url: str) -> None:
        self._call("POST", f"/session/{self.session}/url", {"url": url})

    def run(self, script: str, asynchronous: bool = False):
        kind = "async" if asynchronous else "sync"
        return self._call("POST", f"/session/{self.session}/execute/{kind}", {"script": script, "args": []})

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self._call("GET", f"/session/{self.session}/screenshot")))
        return path

    def close(self) -> None:
        try:
            self._call("DELETE", f"/session/{self.session}")
        finally:
            self.proc.terminate()
            self.proc.wait(timeout=10)


WAIT_FOR_MATHJAX = """
const done = arguments[arguments.length - 1];
const math = document.querySelectorAll(".math").length;
if (!window.MathJax || !MathJax.Hub) { done(math ? "math but no MathJax" : "typeset"); return; }
MathJax.Hub.Queue(() => done("typeset"));
"""

PAGE_STATE = """
const main = document.querySelector("main") || document.body;
const imgs = Array.from(main.querySelectorAll("img"));
return {
  images: imgs.map(i => ({src: i.getAttribute("src"), loaded: i.complete && i.naturalWidth > 0})),
  formulas: document.querySelectorAll(".MathJax, .MathJax_Display").length,
  errors: document.querySelectorAll(".MathJax_Error, .merror, [data-mjx-error]").length
    + (main.innerText.match(/Math Processing Error/g) || []).length,
  text: main.innerText,
  remote: performance.getEntriesByType("resource").map(e => e.name).filter(n => !n.startsWith("file:") && !n.startsWith("data:")),
  scripts: Array.from(document.scripts).map(s => s.src).filter(s => s && !s.startsWith("file:")),
};
"""


@pytest.mark.slow
@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="chromium and chromium-driver are not installed "
                    "(Debian packages; `make test` installs them)")
def test_built_book_reads_offline_in_a_real_browser(tmp_path):
    run = _real_run() or _mini_run(tmp_path)
    index = build_book(run)
    html = index.parent
    pages = sorted((html / "notebooks").glob("*.html"))
    assert pages, "no chapter was built"
    driver = WebDriver(tmp_path / "chromium-profile")
    typeset_total = 0
    try:
        for page in [*pages, html / "glossary.html", html / "results.html", html / "references.html"]:
            driver.open(page.as_uri())
            assert driver.run(WAIT_FOR_MATHJAX, asynchronous=True) == "typeset", f"{page.name}: MathJax did not load"
            state = driver.run(PAGE_STATE)
            text = state["text"]
            # What a reader saw, kept beside the book for a person to look at (runs/<run>/book/screenshots/):
            # the first formula when the page has one, else the top of the page.
            driver.run("const f = document.querySelector('.MathJax_Display, .MathJax'); if (f) f.scrollIntoView();")
            shot = driver.screenshot(html.parent.parent / "screenshots" / f"{page.stem}.png")
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            broken = [i["src"] for i in state["images"] if not i["loaded"]]
            assert not broken, f"{page.name}: figures that did not load: {broken}"
            assert "\\(" not in text and "\\[" not in text and "$$" not in text, f"{page.name}: raw LaTeX in the text"
            assert not re.search(r"\$[^$\s][^$\n]*\$", text), f"{page.name}: raw $...$ math in the text"
            assert state["errors"] == 0, f"{page.name}: MathJax reported errors"
            assert not state["scripts"] and not state["remote"], f"{page.name}: fetches from the network: {state['remote']}"
            assert str(run.resolve()) not in text, f"{page.name}: shows the builder's local run path"
            assert "# Parameters" not in text and 'run_dir = "' not in text, f"{page.name}: shows a parameters cell"
            assert "setup_notebook(" not in text, f"{page.name}: shows a hidden bookkeeping cell's input"
            if page.parent.name == "notebooks":
                assert state["images"], f"{page.name}: no figure on the page"
            typeset_total += state["formulas"]
        chapter = html / "notebooks" / ("03_wgan_gp.html" if (html / "notebooks" / "03_wgan_gp.html").exists() else "02_mini.html")
        driver.open(chapter.as_uri())
        driver.run(WAIT_FOR_MATHJAX, asynchronous=True)
        assert driver.run(PAGE_STATE)["formulas"] > 0, f"{chapter.name}: no typeset formula"
        glossary_links = driver.run("return document.querySelectorAll('main a[href*=\"glossary.html#term-\"]').length")
        assert glossary_links > 0, f"{chapter.name}: no glossary link"
    finally:
        driver.close()
    assert typeset_total > 0
