"""The README's first example prints what the README says it prints."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _example_and_output():
    """The first ```python block of README.md and the ``` block after it that follows "prints"."""
    text = (REPO / "README.md").read_text()
    found = re.search(r"```python\n(.*?)```\s*\nprints[^\n]*\n\s*```\n(.*?)```", text, re.S)
    assert found, "README.md: no python example followed by what it prints"
    return found.group(1), found.group(2)


@pytest.mark.parametrize("backend_name", ["cpu", "numpy"])
def test_the_readme_example_prints_what_the_readme_shows(backend_name):
    """on the default cpu backend exactly; on the numpy one the README names the digits that differ"""
    if backend_name == "cpu":
        pytest.importorskip("numba")
    code, shown = _example_and_output()
    code = f"import minadder\nminadder.set_backend({backend_name!r})\n" + code
    printed = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout
    if backend_name == "cpu":
        assert printed.split() == shown.split()
    else:
        assert "-14.48032 " in printed and "0.36857334" in printed      # as the note under the block says
        assert "`-14.48032`" in (REPO / "README.md").read_text()
