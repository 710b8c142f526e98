"""Importing a kernel module changes no process-wide setting; minadder.configure() does.

Each check runs in a fresh interpreter (this test process has been configured by
conftest.py), without NUMBA_THREADING_LAYER / NUMBA_CPU_FEATURES in its environment.
"""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("numba")
from minadder.kernels import settings  # noqa: E402

# the settings before and after an import, as JSON on the last line
PROBE = r"""
import json, sys
import numpy as np
import numba

def _snapshot():
    return {"layer": numba.config.THREADING_LAYER, "features": numba.config.CPU_FEATURES,
            "threads": numba.get_num_threads(), "errors": np.geterr()}

before = _snapshot()
exec(sys.argv[1])
print(json.dumps({"before": before, "after": _snapshot()}))
"""


def _run(statement):
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_THREADING_LAYER", "NUMBA_CPU_FEATURES", "NUMBA_CPU_NAME", "NUMBA_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", PROBE, statement], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", ["minadder.kernels.cpu", "minadder.kernels.cpu.naive",
                                    "minadder.kernels.reference", "minadder"])
def test_importing_a_kernel_module_changes_no_global_setting(module):
    result = _run(f"import {module}")
    assert result["after"] == result["before"]
    assert result["before"]["layer"] == "default"        # Numba's own; configure() below changes it


def test_configure_sets_the_threading_layer_the_features_and_the_threads():
    """configure() before the kernels are imported: Numba's CPU target is set up with the
    features settings.cpu_features() chose (or its default when that is None)."""
    result = _run("import minadder, numba\n"
                  "from minadder.kernels import settings\n"
                  "minadder.configure(threads=1)\n"
                  "want = settings.cpu_features()\n"
                  "assert numba.config.CPU_FEATURES == want, (numba.config.CPU_FEATURES, want)\n"
                  "import minadder.kernels.cpu\n"
                  "from numba.core.registry import cpu_target\n"
                  "used = cpu_target.target_context.codegen()._tm_features\n"
                  "assert want is None or used == want, (used, want)\n"
                  "minadder.configure()            # a second call is harmless\n"
                  "assert numba.config.THREADING_LAYER == settings.threading_layer()\n")
    after = result["after"]
    assert after["layer"] in settings.THREADING_LAYERS and after["threads"] == 1
    assert after["errors"] == result["before"]["errors"]


def test_configure_after_the_kernels_are_defined_warns_when_it_would_change_the_features():
    result = _run("import warnings, numba, minadder\n"
                  "from minadder.kernels import settings\n"
                  "import minadder.kernels.cpu\n"
                  "with warnings.catch_warnings(record=True) as caught:\n"
                  "    warnings.simplefilter('always')\n"
                  "    minadder.configure()\n"
                  "late = [w for w in caught if 'CPU features' in str(w.message)]\n"
                  "assert len(late) == (settings.cpu_features() is not None), caught\n"
                  "assert numba.config.CPU_FEATURES is None\n")
    assert result["after"]["layer"] in settings.THREADING_LAYERS


def test_an_environment_choice_of_threading_layer_is_kept():
    out = subprocess.run([sys.executable, "-c", "import minadder, numba; minadder.configure(); "
                          "print(numba.config.THREADING_LAYER)"],
                         env=dict(os.environ, NUMBA_THREADING_LAYER="workqueue"), capture_output=True, text=True,
                         timeout=300, check=True)
    assert out.stdout.strip() == "workqueue"


def _blas_threads_after_configure(extra_env):
    """The BLAS thread count NumPy's OpenBLAS reports after minadder.configure(), read
    through its own get_num_threads in a fresh process (None: not OpenBLAS)."""
    code = ("import ctypes, minadder, numpy as np\n"
            "from minadder.kernels import settings\n"
            "minadder.configure()\n"
            "paths = {l.split()[-1] for l in open('/proc/self/maps') if 'openblas' in l.lower()}\n"
            "counts = []\n"
            "for path in paths:\n"
            "    lib = ctypes.CDLL(path)\n"
            "    for name in ('scipy_openblas_get_num_threads64_', 'openblas_get_num_threads64_',\n"
            "                 'openblas_get_num_threads'):\n"
            "        if hasattr(lib, name):\n"
            "            counts.append(getattr(lib, name)()); break\n"
            "print(counts[0] if counts else None)\n")
    env = {k: v for k, v in os.environ.items() if k not in settings.BLAS_THREAD_VARIABLES}
    out = subprocess.run([sys.executable, "-c", code], env=dict(env, **extra_env), capture_output=True,
                         text=True, timeout=300, check=True)
    return out.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds OpenBLAS through /proc/self/maps")
def test_configure_gives_blas_one_thread_unless_the_environment_chose():
    chosen = _blas_threads_after_configure({})
    if chosen == "None":
        pytest.skip("NumPy is not linked against OpenBLAS here")
    assert chosen == "1"
    assert _blas_threads_after_configure({"OPENBLAS_NUM_THREADS": "2"}) == "2"


def _spin_count_seen_by_libgomp(extra_env):
    """(GOMP_SPINCOUNT as Numba's OpenMP pool, which loads libgomp, was imported; and as
    left afterwards) in a fresh process that runs minadder.configure()."""
    code = ("import importlib.abc, os, sys, minadder\n"
            "seen = []\n"
            "class Watch(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path, target=None):\n"
            "        if name == 'numba.np.ufunc.omppool':\n"
            "            seen.append(os.environ.get('GOMP_SPINCOUNT'))\n"
            "        return None\n"
            "sys.meta_path.insert(0, Watch())\n"
            "minadder.configure()\n"
            "print(seen[0] if seen else 'not loaded', os.environ.get('GOMP_SPINCOUNT'))\n")
    env = {k: v for k, v in os.environ.items()
           if k not in settings.OMP_WAIT_VARIABLES + ("NUMBA_THREADING_LAYER",)}
    out = subprocess.run([sys.executable, "-c", code], env=dict(env, **extra_env), capture_output=True,
                         text=True, timeout=300, check=True)
    return out.stdout.split()


def test_configure_shortens_libgomp_spinning_for_numba_only():
    """libgomp reads GOMP_SPINCOUNT as it loads: configure() sets it for that moment and
    removes it after (PyTorch's own OpenMP, loaded later, keeps its default); a user's
    choice stays as it was."""
    seen, after = _spin_count_seen_by_libgomp({})
    if seen == "not loaded":
        pytest.skip("this Numba has no OpenMP threading layer")
    assert (seen, after) == (settings.GOMP_SPINCOUNT, "None")
    assert _spin_count_seen_by_libgomp({"GOMP_SPINCOUNT": "5"}) == ["5", "5"]
    assert _spin_count_seen_by_libgomp({"OMP_WAIT_POLICY": "passive"}) == ["None", "None"]


def test_no_cached_kernel_is_another_compilation_of_the_same_function():
    """Numba's disk cache tells compilations apart by the function's code, not by the
    options: ``njit(nogil=True, cache=True)(f.py_func)`` beside a parallel ``f`` would share
    f's cache entry and load whichever was saved first (a parallel loop run from two
    Python threads at once, which the workqueue layer does not allow)."""
    import re
    from pathlib import Path
    found = [f"{path}: {m.group(0)}" for path in (Path(__file__).resolve().parent.parent / "minadder").rglob("*.py")
             for m in re.finditer(r"jit\([^()]*\)\(\s*[\w.]+\.py_func", path.read_text())]
    assert not found, found
