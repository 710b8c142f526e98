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
