"""The kernel backend registry."""
import os
import subprocess
import sys

import pytest

import minadder as ma
from minadder import backend


def test_unknown_backend_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown backend 'tpu'; backends: numpy, cpu, cuda"):
        ma.set_backend("tpu")


def test_set_and_use_backend_restore():
    before = ma.get_backend()
    with ma.use_backend("numpy"):
        assert ma.get_backend() == "numpy"
        assert backend.kernels().__name__ == "minadder.kernels.reference"
    assert ma.get_backend() == before


def test_use_backend_restores_after_an_error():
    before = ma.get_backend()
    with pytest.raises(RuntimeError):
        with ma.use_backend("numpy"):
            raise RuntimeError("boom")
    assert ma.get_backend() == before


def test_a_failed_switch_keeps_the_current_backend():
    before = ma.get_backend()
    with pytest.raises(ValueError):
        ma.set_backend("nope")
    assert ma.get_backend() == before


def test_environment_variable_selects_the_backend():
    env = dict(os.environ, MINADDER_BACKEND="numpy")
    out = subprocess.run([sys.executable, "-c", "import minadder; print(minadder.get_backend())"],
                         env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "numpy"


def test_import_does_not_import_numba():
    code = "import sys, minadder, minadder.nn, minadder.optim; print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_available_backend_exports_the_kernel_names():
    from minadder.kernels import KERNEL_NAMES
    for name in ma.available_backends():
        with ma.use_backend(name):
            module = backend.kernels()
            missing = [k for k in KERNEL_NAMES if not callable(getattr(module, k, None))]
            assert not missing, f"backend {name} lacks {missing}"
