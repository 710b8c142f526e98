"""The engine's tests run on the default (fastest) backend; run them once more on the
NumPy reference, so both backends are held to the same gradient checks."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import minadder as ma

TESTS = Path(__file__).resolve().parent
ENGINE_TESTS = ["test_gradients.py", "test_adder.py", "test_nn.py", "test_autograd.py",
                "test_errors.py", "test_end_to_end.py"]


@pytest.mark.skipif(ma.get_backend() == "numpy", reason="the default backend is already the reference")
def test_engine_tests_pass_on_the_numpy_backend():
    env = dict(os.environ, MINADDER_BACKEND="numpy")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             *[str(TESTS / name) for name in ENGINE_TESTS]],
                            env=env, capture_output=True, text=True, cwd=TESTS.parent)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
