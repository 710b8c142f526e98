"""Build the documentation site into site/: ``python docs/build.py``.

1. MathJax 3 is served with the site (a reader's browser needs no other host): the first
   build fetches it from the npm registry (``npm pack mathjax@3.2.2``) and unpacks what the
   site uses into docs/javascripts/mathjax/, which git ignores.
2. ``mkdocs build --strict`` (mkdocs.yml): any warning fails the build, a broken link, a
   missing reference, and a notebook that raises, since every notebook is executed. They
   run with MINADDER_NOTEBOOK_FAST=1, their small CI sizes; ``--full`` runs them at the
   sizes their text describes (minutes each).
3. site/build-inputs.sha256 records a digest of everything the site is built from, and how
   the notebooks ran, so that tests/test_docs_site.py can tell a current site from a stale one.

Needs the docs extra: ``pip install -e ".[docs]"``.
"""
import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MATHJAX_VERSION = "3.2.2"
MATHJAX_DIR = ROOT / "docs" / "javascripts" / "mathjax"
# the parts of the npm package the site loads: the TeX-to-HTML component, the TeX
# extensions it loads on demand, its fonts, and the menu's accessibility modules
MATHJAX_PARTS = ["tex-chtml.js", "input/tex/extensions", "output/chtml/fonts/woff-v2", "a11y", "ui"]
INPUTS = ["mkdocs.yml", "README.md", "docs", "notebooks", "proofs", "results", "benchmarks/README.md",
          "minadder"]
STAMP = "build-inputs.sha256"


def fail(message):
    print(f"docs/build.py: {message}", file=sys.stderr)
    sys.exit(1)


def fetch_mathjax():
    """Unpack MathJax into docs/javascripts/mathjax/ unless it is there already."""
    if (MATHJAX_DIR / "tex-chtml.js").exists():
        return
    if shutil.which("npm") is None:
        fail(f"npm not found: install Node.js and npm to fetch MathJax {MATHJAX_VERSION}, "
             f"or unpack its es5/ folder into {MATHJAX_DIR.relative_to(ROOT)}/")
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(["npm", "pack", f"mathjax@{MATHJAX_VERSION}", "--silent"], cwd=tmp,
                              capture_output=True, text=True)
        tarballs = list(Path(tmp).glob("mathjax-*.tgz"))
        if done.returncode != 0 or not tarballs:
            fail(f"npm pack mathjax@{MATHJAX_VERSION} failed: {(done.stderr or done.stdout).strip()[-300:]}")
        with tarfile.open(tarballs[0]) as tar:
            tar.extractall(tmp, filter="data")
        es5 = Path(tmp) / "package" / "es5"
        staging = MATHJAX_DIR.with_name("mathjax.partial")
        shutil.rmtree(staging, ignore_errors=True)
        for part in MATHJAX_PARTS:
            source, target = es5 / part, staging / part
            target.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if source.is_dir() else shutil.copy2)(source, target)
        shutil.copy2(Path(tmp) / "package" / "LICENSE", staging / "LICENSE")
        staging.rename(MATHJAX_DIR)          # only a complete copy ever lands


def input_digest():
    """SHA-256 over the path and content of every file the site is built from."""
    digest = hashlib.sha256()
    for name in INPUTS:
        top = ROOT / name
        paths = sorted(top.rglob("*")) if top.is_dir() else [top]
        for path in paths:
            if not path.is_file() or "__pycache__" in path.parts or MATHJAX_DIR in path.parents:
                continue
            digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()


def build(site_dir, full=False, execute=True):
    """Fetch MathJax if needed and run ``mkdocs build --strict`` into ``site_dir``."""
    try:
        import mkdocs  # noqa: F401
        import mkdocs_jupyter  # noqa: F401
        import mkdocstrings  # noqa: F401
    except ImportError as exc:
        fail(f"{exc.name} is not installed: pip install -e \".[docs]\"")
    fetch_mathjax()
    env = dict(os.environ, MINADDER_DOCS_EXECUTE="true" if execute else "false",
               PYDEVD_DISABLE_FILE_VALIDATION="1", NO_MKDOCS_2_WARNING="1")
    env.pop("MPLBACKEND", None)      # the kernel's inline backend puts each figure into the page
    # the notebooks' kernel ("python3") runs the first `python` on PATH: make it this one
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    if full:
        env.pop("MINADDER_NOTEBOOK_FAST", None)
    else:
        env["MINADDER_NOTEBOOK_FAST"] = "1"
    digest = input_digest()
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--clean",
                           "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(site_dir)],
                          cwd=ROOT, env=env)
    if done.returncode != 0:
        fail("mkdocs build --strict failed (its warnings are above)")
    mode = "no-execute" if not execute else "full" if full else "fast"
    Path(site_dir, STAMP).write_text(f"{digest} {mode}\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description="Build the documentation site (mkdocs, strict).")
    parser.add_argument("--site-dir", default=str(ROOT / "site"), help="where to write the site (default: site/)")
    parser.add_argument("--full", action="store_true",
                        help="run the notebooks at full size, not with MINADDER_NOTEBOOK_FAST=1")
    parser.add_argument("--no-execute", action="store_true",
                        help="do not run the notebooks (a quick look at the pages; their outputs are missing)")
    args = parser.parse_args(argv)
    build(Path(args.site_dir).resolve(), full=args.full, execute=not args.no_execute)
    print(f"docs/build.py: the site is in {args.site_dir}; open its index.html")


if __name__ == "__main__":
    main()
