"""The CUDA backend without a GPU: simulator tests (in a subprocess) and PTX compilation.

* tests/cuda_sim/ runs every CUDA kernel under numba's CUDA simulator. The simulator is
  chosen by NUMBA_ENABLE_CUDASIM=1 *before numba is imported*, and this process has
  imported numba already (the CPU backend), so those tests run in a child pytest.
* ``numba.cuda.compile_ptx(..., cc=(9, 0))`` compiles every kernel for an H100 (sm_90)
  with NVVM, which types them for real: float64 creeping in, or a typing error the
  simulator (plain Python) never notices, fails here. It needs libNVVM and NVRTC, which
  the ``cu13`` extra of numba-cuda installs; without them these tests are skipped.
"""
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

if importlib.util.find_spec("numba_cuda") is None:
    pytest.skip('numba-cuda is not installed: pip install "minadder[cuda]"', allow_module_level=True)

REPO = Path(__file__).resolve().parents[1]


def test_kernels_under_the_cuda_simulator():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/cuda_sim"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )
    report = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, f"simulator tests failed (exit {proc.returncode}):\n{report}"
    assert re.search(r"\d+ passed", proc.stdout), report


def test_cuda_backend_refuses_without_a_device():
    from numba import cuda

    from minadder import backend

    if cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(backend.BackendUnavailable) as info:
        backend.set_backend("cuda")
    message = str(info.value)
    assert "no CUDA device or driver was found" in message
    assert 'pip install "minadder[cuda]"' in message


# ------------------------------------------------------------------------------ PTX
def _ptx_compiler_problem():
    """None when compile_ptx works here, else why not (no libNVVM / NVRTC, ...)."""
    from numba import cuda, float32

    def probe(a):
        a[0] = float32(1.0)

    try:
        cuda.compile_ptx(probe, "void(float32[::1])", cc=(9, 0))
    except Exception as exc:  # the exception type depends on what is missing
        return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    return None


@pytest.fixture(scope="module")
def ptx_compiler():
    problem = _ptx_compiler_problem()
    if problem:
        pytest.skip("NVVM/NVRTC not available for numba.cuda.compile_ptx (install "
                    f'"numba-cuda[cu13]"): {problem}')


def _targets():
    from minadder.kernels.cuda import ptx
    return ptx.compile_targets()


@pytest.mark.parametrize("name", [name for name, _, _ in _targets()])
def test_kernel_compiles_to_sm90_ptx(ptx_compiler, name):
    from numba import cuda

    _, function, signature = next(t for t in _targets() if t[0] == name)
    ptx, _ = cuda.compile_ptx(function, signature, cc=(9, 0))
    assert ".target sm_90" in ptx
    # the DESIGN.md pitfall: float32 + int index is float64, and FP64 is slow: none allowed
    assert not re.search(r"\.f64\b", ptx), f"{name}: float64 arithmetic in the PTX"
    # register blocking: the per-thread TM x TN accumulators must live in registers; a local
    # array that NVVM could not promote shows up as .local memory
    assert ".local" not in ptx, f"{name}: local (off-chip) memory in the PTX"


_NUMPY_25 = """
import numpy as np
if hasattr(np, "row_stack"):
    del np.row_stack                     # what NumPy >= 2.5 looks like
import minadder.kernels.cuda
assert not hasattr(np, "row_stack"), "importing the cuda backend changed NumPy"
{guard}
from numba import cuda

def probe(a):
    a[0] = 1.0

cuda.compile_ptx(probe, "void(float32[::1])", cc=(9, 0))
"""


def _run(code):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("guarded", [False, True])
def test_row_stack_guard_for_numpy_2_5(ptx_compiler, guarded):
    """numba-cuda 0.30 registers np.row_stack at the first compile; NumPy 2.5 removed it.
    Importing minadder.kernels.cuda leaves NumPy alone; the backend restores the alias
    where a compile can follow (here ptx.compile_targets), and the compile works."""
    guard = "from minadder.kernels.cuda import ptx; ptx.compile_targets()" if guarded else ""
    proc = _run(_NUMPY_25.format(guard=guard))
    if guarded:
        assert proc.returncode == 0, proc.stderr[-3000:]
    elif proc.returncode == 0:
        pytest.skip("this numba-cuda no longer needs np.row_stack")
    else:
        assert "row_stack" in proc.stderr


def test_importing_the_cuda_backend_changes_no_numpy_or_numba_setting():
    code = ("import numpy as np, numba\n"
            "before = (np.geterr(), hasattr(np, 'row_stack'), numba.config.THREADING_LAYER, numba.config.NUMBA_NUM_THREADS)\n"
            "import minadder.kernels.cuda\n"
            "after = (np.geterr(), hasattr(np, 'row_stack'), numba.config.THREADING_LAYER, numba.config.NUMBA_NUM_THREADS)\n"
            "assert before == after, (before, after)\n"
            "assert 'minadder.kernels.cpu' not in __import__('sys').modules\n")
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
