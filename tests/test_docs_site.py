"""The documentation site as a reader sees it, in a real headless Chromium.

The site is the one ``python docs/build.py`` writes to site/: used as it is when
site/build-inputs.sha256 says it was built, with the notebooks executed, from the sources
as they are now, built here first otherwise. $MINADDER_DOCS_SITE names another site
folder, read as it is (once built with the notebooks executed). It is served on
127.0.0.1 and every page is read twice: crawled over HTTP (every internal link and anchor
resolves, nothing is loaded from another host), and loaded in Chromium, with every other
host unreachable as for an offline reader (no JavaScript error, the mathematics typeset
by MathJax with no raw TeX left, each notebook page's figures loaded and its printed
output shown, the API pages' docstrings). Screenshots of the home page and of
propositions.ipynb's page go to $MINADDER_DOCS_SCREENSHOTS, else to pytest's temporary
folder; the test prints where.

Skips, saying why, where Chromium and chromedriver (Debian: apt-get install -y chromium
chromium-driver) or the docs extra (pip install -e ".[docs]") are missing.
"""
import functools
import html.parser
import http.server
import importlib.util
import inspect
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SITE = Path(os.environ.get("MINADDER_DOCS_SITE", ROOT / "site"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
NOTEBOOKS = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
SOURCE_PAGE = re.compile(r"\.(py|v|sh|log|txt)\.html$")      # generated pages of source code
# TeX that MathJax should have replaced: delimiters, or a macro such as \alpha outside code
RAW_TEX = re.compile(r"\$\$|\\\(|\\\)|\\\[|\\\]|\\[A-Za-z]{2,}|\$[^$\s][^$\n]*\$")


def _load_build_script():
    spec = importlib.util.spec_from_file_location("docs_build", ROOT / "docs" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _site_is_current(build):
    """True if SITE was built with the notebooks executed, from the sources as they are now
    (or from any sources, where $MINADDER_DOCS_SITE names the site to read)."""
    stamp = SITE / build.STAMP
    if not stamp.exists():
        return False
    digest, _, mode = stamp.read_text().strip().partition(" ")
    fresh = "MINADDER_DOCS_SITE" in os.environ or digest == build.input_digest()
    return fresh and mode in ("fast", "full")


@pytest.fixture(scope="session")
def site():
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("no browser: Chromium and chromedriver are needed "
                    "(Debian: apt-get install -y chromium chromium-driver)")
    pytest.importorskip("selenium", reason="selenium is not installed: pip install -e \".[docs]\"")
    build = _load_build_script()
    if not _site_is_current(build):
        for module in ("mkdocs", "mkdocs_jupyter", "mkdocstrings"):
            pytest.importorskip(module, reason=f"the docs extra is not installed ({module}): pip install -e \".[docs]\"")
        done = subprocess.run([sys.executable, str(ROOT / "docs" / "build.py"), "--site-dir", str(SITE)],
                              cwd=ROOT, capture_output=True, text=True, timeout=1200)
        assert done.returncode == 0, f"docs/build.py failed:\n{(done.stdout + done.stderr)[-4000:]}"
    return SITE


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def base_url(site):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


class _Page(html.parser.HTMLParser):
    """The links, element ids and loaded resources of one HTML page."""

    def __init__(self):
        super().__init__()
        self.links, self.ids, self.resources = [], set(), []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("name"):
            self.ids.add(attrs["name"])
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        elif tag in ("script", "img", "iframe", "source") and attrs.get("src"):
            self.resources.append(attrs["src"])
        elif tag == "link" and attrs.get("href"):
            self.resources.append(attrs["href"])


def _fetch(url):
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.headers.get_content_type(), response.read()
    except urllib.error.HTTPError as error:
        return error.code, None, b""


@pytest.fixture(scope="session")
def crawl(base_url):
    """Every page reachable from the home page: url -> _Page; and every broken reference."""
    pages, broken, external_resources, queue, seen = {}, [], [], [base_url + "index.html"], set()
    targets = []                                    # (from page, url with fragment)
    while queue:
        url = queue.pop()
        if url in seen:
            continue
        seen.add(url)
        status, content_type, body = _fetch(url)
        if status != 200:
            broken.append(f"{url}: HTTP {status}")
            continue
        if content_type != "text/html":
            continue
        page = _Page()
        page.feed(body.decode("utf-8"))
        pages[url] = page
        for ref in page.resources:
            if urllib.parse.urljoin(url, ref).startswith(("http://", "https://")) and \
                    not urllib.parse.urljoin(url, ref).startswith(base_url):
                external_resources.append(f"{url}: {ref}")
        for ref in page.links + page.resources:
            absolute = urllib.parse.urljoin(url, ref)
            if absolute.startswith(base_url):
                targets.append((url, absolute))
                queue.append(urllib.parse.urldefrag(absolute).url)
    for source, absolute in targets:
        target, fragment = urllib.parse.urldefrag(absolute)
        if fragment and target in pages and urllib.parse.unquote(fragment) not in pages[target].ids:
            broken.append(f"{source}: no anchor #{fragment} in {target}")
    return {"pages": pages, "broken": broken, "external": external_resources}


def test_every_internal_link_resolves(crawl, base_url):
    pages = {url[len(base_url):] for url in crawl["pages"]}
    expected = {f"notebooks/{name}.html" for name in NOTEBOOKS} | {
        "learning-path.html", "proofs/proposition1.html", "proofs/coq/Proposition1.v.html",
        "results/index.html", "benchmarks/index.html", "api/tensor.html", "minadder/tensor.py.html"}
    assert expected <= pages, f"not reached from the home page: {sorted(expected - pages)}"
    assert not crawl["broken"], "broken links:\n" + "\n".join(crawl["broken"])


def test_nothing_is_loaded_from_another_host(crawl):
    assert not crawl["external"], "scripts, styles or images from other hosts:\n" + "\n".join(crawl["external"])


@pytest.fixture(scope="session")
def browser(site):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000",
                     # an offline reader: every host but this one fails to resolve
                     "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


# run in the page once MathJax is done: what a reader sees
READ_PAGE = """
const done = arguments[arguments.length - 1];
const ready = (window.MathJax && MathJax.startup && MathJax.startup.promise) || Promise.resolve();
ready.then(() => {
  const article = document.querySelector("article") || document.body;
  const prose = document.body.cloneNode(true);
  prose.querySelectorAll("pre, code, mjx-container, script, style, .jp-OutputArea, .clipboard-copy-txt")
       .forEach(e => e.remove());
  const images = [...article.querySelectorAll(".jp-OutputArea-output img")];
  done({
    text: article.innerText,
    prose: prose.innerText,
    math: article.querySelectorAll("mjx-container").length,
    math_errors: article.querySelectorAll("mjx-merror").length,
    figures: images.length,
    broken_figures: images.filter(i => !(i.complete && i.naturalWidth > 0)).length,
    images_broken: [...article.querySelectorAll("img")].filter(i => !(i.complete && i.naturalWidth > 0))
                   .map(i => i.getAttribute("src").slice(0, 80)),
    printed: [...article.querySelectorAll(".jp-OutputArea-output pre")].map(p => p.innerText)
             .filter(t => t.trim()).length,
    ids: [...article.querySelectorAll("[id]")].map(e => e.id),
  });
}).catch(error => done({error: String(error)}));
"""


@pytest.fixture(scope="session")
def seen(browser, crawl, base_url):
    """Each page other than the generated source pages, as read in the browser, with its console errors."""
    results = {}
    for url in sorted(crawl["pages"]):
        path = url[len(base_url):]
        if SOURCE_PAGE.search(path):
            continue
        browser.get(url)
        page = browser.execute_async_script(READ_PAGE)
        assert "error" not in page, f"{path}: {page['error']}"
        page["console"] = [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        results[path] = page
    return results


def test_no_javascript_errors(seen):
    errors = [f"{path}: {message}" for path, page in seen.items() for message in page["console"]]
    assert not errors, "browser console errors:\n" + "\n".join(errors)


def test_mathematics_is_typeset_with_no_raw_tex_left(seen):
    raw = {path: sorted(set(RAW_TEX.findall(page["prose"])))[:5] for path, page in seen.items()
           if RAW_TEX.search(page["prose"])}
    assert not raw, f"TeX left as text (outside code): {raw}"
    errors = {path: page["math_errors"] for path, page in seen.items() if page["math_errors"]}
    assert not errors, f"MathJax could not typeset some formulas: {errors}"
    with_math = ["proofs/mathematics.html", "proofs/proposition1.html", "proofs/proposition2.html",
                 "proofs/variance.html", "proofs/l2_adder.html", "learning-path.html"] + \
                [f"notebooks/{name}.html" for name in NOTEBOOKS]
    untypeset = [path for path in with_math if seen[path]["math"] == 0]
    assert not untypeset, f"pages with formulas that MathJax did not typeset: {untypeset}"


def test_every_image_loads(seen):
    broken = {path: page["images_broken"] for path, page in seen.items() if page["images_broken"]}
    assert not broken, f"images that did not load: {broken}"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_page_shows_its_figures_and_printed_output(seen, name):
    page = seen[f"notebooks/{name}.html"]
    assert page["figures"] >= 1, f"{name}: no figure in the outputs"
    assert page["broken_figures"] == 0, f"{name}: {page['broken_figures']} figures did not load"
    assert page["printed"] >= 1, f"{name}: no printed output"
    assert "Traceback" not in page["text"], f"{name}: an error is shown"


@pytest.mark.parametrize("page, obj", [("api/tensor.html", "minadder.tensor.Tensor"),
                                       ("api/layers.html", "minadder.layers.adder2d"),
                                       ("api/nn.html", "minadder.nn.Adder2d"),
                                       ("api/optim.html", "minadder.optim.SGD")])
def test_api_page_documents_the_name_with_its_docstring(seen, page, obj):
    module_name, _, name = obj.rpartition(".")
    module = importlib.import_module(module_name)
    first_line = inspect.getdoc(getattr(module, name)).split("\n\n")[0]
    words = " ".join(re.sub(r"[`*]", "", first_line).split())
    shown = seen[page]
    assert obj in shown["ids"], f"{page}: no entry for {obj}"
    assert words in " ".join(shown["text"].split()), f"{page}: the docstring of {obj} is not shown: {words!r}"


def test_screenshots_of_the_home_page_and_a_notebook(browser, base_url, tmp_path_factory):
    folder = Path(os.environ.get("MINADDER_DOCS_SCREENSHOTS") or tmp_path_factory.mktemp("docs-screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    browser.set_window_size(1280, 1600)
    shots = []
    for path, file_name in [("index.html", "home.png"), ("notebooks/propositions.html", "propositions.png")]:
        browser.get(base_url + path)
        browser.execute_async_script(READ_PAGE)        # MathJax done
        # the notebook from its first figure's heading on: text, formulas, code and the figure
        browser.execute_script("""const figure = document.querySelector(".jp-OutputArea-output img");
            if (figure) window.scrollTo(0, figure.getBoundingClientRect().top + window.scrollY - 900);""")
        time.sleep(0.2)
        shot = folder / file_name
        assert browser.save_screenshot(str(shot)), f"no screenshot of {path}"
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
        shots.append(shot)
    print("docs site screenshots:", *shots)
