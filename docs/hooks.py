"""mkdocs hooks: the repository's notebooks, proofs, results and source files as site pages.

The site mirrors the repository: ``proofs/variance.md`` becomes ``proofs/variance.html``,
``notebooks/ablation.ipynb`` becomes ``notebooks/ablation.html`` (executed by
mkdocs-jupyter), ``results/*.png`` stay where they are. So a relative link written for the
repository (``../proofs/variance.md``) is also right in the site, and nothing is copied
into docs/. A link to a file that is not a page (``../minadder/tensor.py``,
``coq/Proposition1.v``, ``../tests/test_proofs_variance.py``) goes to a generated page that
shows that file's source; a link to a folder goes to its README or to a generated listing.
"""
import html
import logging
import posixpath
import re
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, InclusionLevel
from mkdocs.utils import get_relative_url

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("mkdocs.hooks.minadder")

# repository files that become site files at the same path
MIRRORED = ["notebooks/README.md", "notebooks/*.ipynb", "proofs/*.md", "results/README.md",
            "results/*.png", "results/*.json", "benchmarks/README.md"]
# files shown as a page of highlighted source (minadder/tensor.py -> minadder/tensor.py.html)
SOURCE_PAGES = ["minadder/**/*.py", "proofs/coq/*.v"]
LANGUAGES = {".py": "python", ".v": "coq", ".sh": "bash", ".log": "text", ".txt": "text",
             "Makefile": "make"}
STATIC = {".png", ".json"}              # files a browser shows as they are
MARKDOWN_LINK = re.compile(r"(\]\()([^)\s]+)(\))")
HEADING = re.compile(r'<h([1-6])[^>]*\bid="([^"]+)"[^>]*>(.*?)</h\1>', re.S)
HTML_HREF = re.compile(r'(href=")([^"]+)(")')
# what nbconvert's template loads from other hosts: MathJax 2 and mermaid (the site has MathJax 3)
NOTEBOOK_EXTERNAL = [re.compile(r"<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->", re.S),
                     re.compile(r'<script type="module">(?:(?!</script>).)*?mermaid(?:(?!</script>).)*</script>', re.S)]


def _relative(path):
    return path.relative_to(ROOT).as_posix()


def _add(files, config, src_uri, **kwargs):
    """A generated page (``content=``), or (``mirror=True``) the repository file at ``src_uri``."""
    if files.get_file_from_path(src_uri) is not None:
        return
    if kwargs.pop("mirror", False):       # a real file under ROOT, as mkdocs-jupyter expects
        files.append(File(src_uri, src_dir=str(ROOT), dest_dir=config.site_dir,
                          use_directory_urls=config.use_directory_urls))
    else:
        files.append(File.generated(config, src_uri, **kwargs))


def _api_pages():
    """Module source file -> the API page that documents it (from the ``::: module`` lines)."""
    pages = {}
    for page in sorted((ROOT / "docs" / "api").glob("*.md")):
        for module in re.findall(r"^::: (minadder[\w.]*)", page.read_text(), re.M):
            path = module.replace(".", "/")
            source = path + ".py" if (ROOT / (path + ".py")).exists() else path + "/__init__.py"
            pages.setdefault(source, "api/" + page.name)
    return pages


def source_page(rel, api_page=None):
    """Markdown for a page showing the repository file ``rel`` as highlighted source."""
    path = ROOT / rel
    text = path.read_text(encoding="utf-8")
    language = LANGUAGES.get(path.suffix, LANGUAGES.get(path.name, "text"))
    fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", text)), default=0))
    up = "../" * rel.count("/")
    lines = [f"---\nsearch:\n  exclude: true\n---\n\n# {rel}\n",
             f"The file `{rel}` of the repository, {len(text.splitlines())} lines."]
    if api_page:
        lines.append(f" Its documentation: [API reference]({up}{api_page}).")
    lines.append(f"\n\n{fence}{language} linenums=\"1\"\n{text.rstrip()}\n{fence}\n")
    return "".join(lines)


def folder_page(rel):
    """Markdown for a folder without a README: its files, linked where the site has them."""
    lines = [f"# {rel}/\n\n| file | size |\n|---|---|"]
    for path in sorted(p for p in (ROOT / rel).iterdir() if p.is_file()):
        size = f"{path.stat().st_size / 1024:,.0f} KB"
        if path.suffix in STATIC:
            lines.append(f"| [{path.name}]({path.name}) | {size} |")
        elif path.suffix in LANGUAGES:
            lines.append(f"| [{path.name}]({path.name}.md) | {size} |")
        else:
            lines.append(f"| {path.name} | {size} (in the repository only) |")
    return "\n".join(lines) + "\n"


def _link_targets(source_uri, text):
    """Repository paths that the Markdown links of a file at ``source_uri`` point to."""
    for _, target, _ in MARKDOWN_LINK.findall(text):
        path = target.split("#")[0]
        if path and "://" not in path and not path.startswith("mailto:"):
            yield posixpath.normpath(posixpath.join(posixpath.dirname(source_uri), path))


def _markdown_of(src_uri, path):
    if path.suffix == ".ipynb":
        import json
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    return path.read_text(encoding="utf-8")


@event_priority(100)          # before mkdocs-jupyter, so that it converts the notebooks added here
def on_files(files, config):
    for pattern in MIRRORED:
        for path in sorted(ROOT.glob(pattern)):
            _add(files, config, _relative(path), mirror=True)
    api = _api_pages()
    for pattern in SOURCE_PAGES:
        for path in sorted(ROOT.glob(pattern)):
            rel = _relative(path)
            _add(files, config, rel + ".md", content=source_page(rel, api.get(rel)),
                 inclusion=InclusionLevel.NOT_IN_NAV)
    # whatever else a page links to: a source page, an image, a folder listing
    sources = [(f.src_uri, Path(f.abs_src_path)) for f in list(files)
               if f.abs_src_path and f.src_uri.endswith((".md", ".ipynb"))]
    sources.append(("index.md", ROOT / "README.md"))          # included into the home page
    for src_uri, path in sources:
        for rel in _link_targets(src_uri, _markdown_of(src_uri, path)):
            _add_target(files, config, rel)
    return files


def _add_target(files, config, rel):
    target = ROOT / rel
    if rel.startswith("..") or not target.exists() or _site_file(files, rel):
        return
    if target.is_dir():
        if not (target / "README.md").exists():
            _add(files, config, rel + "/index.md", content=folder_page(rel),
                 inclusion=InclusionLevel.NOT_IN_NAV)
            for path in target.iterdir():
                if path.is_file() and (path.suffix in STATIC or path.suffix in LANGUAGES):
                    _add_target(files, config, _relative(path))
    elif target.suffix in STATIC:
        _add(files, config, rel, mirror=True)
    elif target.suffix in LANGUAGES or target.name in LANGUAGES:
        _add(files, config, rel + ".md", content=source_page(rel), inclusion=InclusionLevel.NOT_IN_NAV)


def _site_file(files, rel):
    """The site file a repository path ``rel`` is shown as: itself, its source page, or the
    folder's README or listing; None if the site has none."""
    rel = rel.rstrip("/")
    for candidate in (rel, rel + ".md", rel + "/README.md", rel + "/index.md"):
        found = files.get_file_from_path(candidate)
        if found is not None:
            return found
    return None


def _rewrite(target, page, files, to_url):
    """A link as written in the repository -> the link the site needs (unchanged if fine)."""
    path, hash_, fragment = target.partition("#")
    if not path or "://" in path or path.startswith(("mailto:", "data:")):
        return target
    rel = posixpath.normpath(posixpath.join(posixpath.dirname(page.file.src_uri), path))
    found = _site_file(files, rel)
    if found is None:
        log.warning("%s: the link '%s' points to nothing in the site", page.file.src_uri, target)
        return target
    if to_url:
        new = get_relative_url(found.url, page.file.url)
    else:
        new = get_relative_url(found.src_uri, page.file.src_uri)
    return new + hash_ + fragment


def coq_theorems():
    """Each theorem and lemma of proofs/coq/*.v whose name is unique: name -> (file, line)."""
    found = {}
    for path in sorted((ROOT / "proofs" / "coq").glob("*.v")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            match = re.match(r"(?:Theorem|Lemma|Corollary)\s+(\w+)", line)
            if match:
                found.setdefault(match.group(1), []).append((path.name, number))
    return {name: places[0] for name, places in found.items() if len(places) == 1}


def _link_coq_theorems(text):
    """On a proofs page, `prop1_walk` becomes a link to the line of coq/Proposition1.v that states it
    (the anchors pymdownx.highlight puts on each line of the source page)."""
    theorems = coq_theorems()

    def link(match):
        name = match.group(1)
        if name not in theorems:
            return match.group(0)
        file_name, line = theorems[name]
        return f"[`{name}`](coq/{file_name}.md#__codelineno-0-{line})"
    return re.sub(r"(?<!\[)`(\w+)`(?!\])", link, text)


def on_page_markdown(markdown, page, config, files):
    if page.file.generated_by is not None:                             # our own source pages
        return markdown
    proofs_page = posixpath.dirname(page.file.src_uri) == "proofs"
    parts = re.split(r"(^```.*?^```)", markdown, flags=re.S | re.M)     # leave code blocks alone
    for i in range(0, len(parts), 2):
        parts[i] = MARKDOWN_LINK.sub(
            lambda m: m.group(1) + _rewrite(m.group(2), page, files, to_url=False) + m.group(3), parts[i])
        if proofs_page:
            parts[i] = _link_coq_theorems(parts[i])
    return "".join(parts)


def _fix_notebook_toc(html_text, page):
    """mkdocs-jupyter's table of contents drops `code` from headings, and so names anchors
    that do not exist: take each entry's anchor and title from the heading itself."""
    headings = [(anchor, html.unescape(re.sub(r"<[^>]+>", "", text)).replace("\u00b6", "").strip())
                for _, anchor, text in HEADING.findall(html_text)]
    entries, stack = [], list(reversed(list(page.toc)))
    while stack:
        entry = stack.pop()
        entries.append(entry)
        stack.extend(reversed(entry.children))
    if len(entries) != len(headings):
        log.warning("%s: %d headings but %d table of contents entries", page.file.src_uri,
                    len(headings), len(entries))
        return
    for entry, (anchor, title) in zip(entries, headings):
        entry.id, entry.title = anchor, title


def on_page_content(html_text, page, config, files):
    """Source pages: make their line anchors known to mkdocs' link check. Notebook pages:
    drop nbconvert's scripts from other hosts, fix their links and contents."""
    if page.file.generated_by is not None and page.present_anchor_ids is not None:
        page.present_anchor_ids.update(re.findall(r'\bid="(__codelineno-[^"]+)"', html_text))
    if not page.file.src_uri.endswith(".ipynb"):
        return html_text
    for pattern in NOTEBOOK_EXTERNAL:
        html_text = pattern.sub("", html_text)
    _fix_notebook_toc(html_text, page)
    return HTML_HREF.sub(
        lambda m: m.group(1) + (m.group(2) if m.group(2).startswith("#")
                                else _rewrite(m.group(2), page, files, to_url=True)) + m.group(3), html_text)
