"""Every notebook in notebooks/ runs top to bottom in a fresh kernel without an error.

The kernel is this interpreter (sys.executable, through a kernelspec written to a
temporary JUPYTER_PATH), started in notebooks/, with MINADDER_NOTEBOOK_FAST=1 so that
the notebooks that train use their smaller CI sizes. Committed notebooks carry no
outputs: run them yourself to see the plots.
"""
import ast
import json
import sys
import time
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))
NOTEBOOK_TIMEOUT_S = 600      # per notebook, all cells together: a guard against hangs, not a speed test


def test_there_are_notebooks():
    assert PATHS, f"no notebooks found in {NOTEBOOKS}"


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_committed_notebook_has_no_outputs(path):
    nb = json.loads(path.read_text())
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"{path.name}: cell {i} has outputs; strip them before committing"
            assert cell.get("execution_count") is None, f"{path.name}: cell {i} has an execution count"


@pytest.fixture
def this_python_kernel(tmp_path, monkeypatch):
    """A kernelspec that runs ipykernel with this very interpreter, found first."""
    spec = tmp_path / "kernels" / "minadder-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "minadder test", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    monkeypatch.setenv("MINADDER_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return "minadder-test"


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_notebook_runs_without_error(path, this_python_kernel):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(path, as_version=4)
    # one extra cell at the end reports which interpreter ran, and where
    nb.cells.append(nbformat.v4.new_code_cell("import os, sys; print(repr((sys.executable, os.getcwd())))"))
    deadline = time.monotonic() + NOTEBOOK_TIMEOUT_S
    client = nbclient.NotebookClient(nb, kernel_name=this_python_kernel,
                                     # each cell gets what is left of the notebook's time
                                     timeout_func=lambda cell: max(1, int(deadline - time.monotonic())),
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()        # raises CellExecutionError, naming the cell, on any error
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    executable, cwd = ast.literal_eval(nb.cells[-1].outputs[0]["text"])
    assert Path(executable).resolve() == Path(sys.executable).resolve()
    assert Path(cwd).resolve() == NOTEBOOKS
