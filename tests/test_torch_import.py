"""minadder's core never imports torch; minadder.torch without torch says what to install."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(code):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_core_never_imports_torch():
    proc = _run("import sys, numpy as np\n"
                "import minadder, minadder.nn, minadder.functional, minadder.models, minadder.optim\n"
                "import minadder.train, minadder.count, minadder.data, minadder.kernels.contract\n"
                "from minadder import Tensor, functional as F\n"
                "F.adder2d(Tensor(np.ones((1, 1, 3, 3), np.float32)), Tensor(np.ones((1, 1, 2, 2), np.float32)))\n"
                "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)\n")
    assert proc.returncode == 0, proc.stderr


def test_minadder_torch_without_torch_says_how_to_install_it():
    # sys.modules["torch"] = None makes `import torch` fail as if torch were not installed
    proc = _run("import sys; sys.modules['torch'] = None\n"
                "try:\n"
                "    import minadder.torch\n"
                "except ImportError as exc:\n"
                "    print(exc)\n"
                "else:\n"
                "    raise SystemExit('imported without torch')\n")
    assert proc.returncode == 0, proc.stderr
    assert 'pip install "minadder[torch]"' in proc.stdout


def test_importing_minadder_torch_loads_no_cuda_and_no_kernels():
    pytest.importorskip("torch", reason='minadder.torch needs PyTorch: pip install "minadder[torch]"')
    proc = _run("import sys, minadder.torch\n"
                "assert 'numba.cuda' not in sys.modules and 'minadder.kernels.cpu' not in sys.modules\n")
    assert proc.returncode == 0, proc.stderr


TORCH_PACKAGE = REPO / "minadder" / "torch"


def _sibling_imports(path):
    """The minadder.torch modules that ``path`` imports, anywhere in it (also inside functions)."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names = [node.module.split(".")[0]] if node.module else [alias.name for alias in node.names]
            found.update(names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("minadder.torch."):
            found.add(node.module.split(".")[2])
    return found


def test_the_imports_inside_minadder_torch_form_a_tree():
    """No module imports, even lazily, a module that imports it back (the package's
    __init__ aside, which imports them all and is imported by none)."""
    modules = {p.stem: p for p in TORCH_PACKAGE.glob("*.py") if p.stem != "__init__"}
    graph = {name: _sibling_imports(path) & set(modules) for name, path in modules.items()}
    assert not any("__init__" in _sibling_imports(path) for path in modules.values())

    def reaches(start, target, seen=()):
        return any(nxt == target or (nxt not in seen and reaches(nxt, target, (*seen, nxt)))
                   for nxt in graph[start])

    assert graph["function"] and "scaling" in graph["function"]     # the walk does see imports
    circles = sorted(name for name in graph if reaches(name, name))
    assert not circles, {name: sorted(graph[name]) for name in circles}


@pytest.mark.parametrize("module", sorted(p.stem for p in TORCH_PACKAGE.glob("*.py") if p.stem != "__init__"))
def test_each_minadder_torch_module_imports_alone(module):
    pytest.importorskip("torch", reason='minadder.torch needs PyTorch: pip install "minadder[torch]"')
    proc = _run(f"import minadder.torch.{module}\n")
    assert proc.returncode == 0, proc.stderr[-3000:]
