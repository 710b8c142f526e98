"""inf and NaN in the cuda backend's adder layer agree with the NumPy reference, under the simulator.

The same cases as tests/test_nonfinite.py (which holds the CPU backends to it, and says
what "agree" means). The simulator runs Python's min and max, which keep a NaN where a
GPU's fminf / fmaxf drop it; tests/test_nonfinite.py checks in the compiled PTX that the
kernels pass a NaN through by a select instead.
"""
import os

import numpy as np
import pytest
from hypothesis import given, settings

assert os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", "run these tests through tests/test_cuda.py"

from minadder.kernels import cuda as kc  # noqa: E402
from tests.test_nonfinite import SPECIALS, check_backend, layer_with_specials, one_special  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")   # inf - inf in simulated float32


@settings(deadline=None, max_examples=5)
@given(case=layer_with_specials())
def test_cuda_agrees_with_the_reference_on_inf_and_nan(case):
    check_backend(kc, *case)


@pytest.mark.parametrize("where, special", [("x", np.nan), ("w", np.inf), ("g", -np.inf), ("w", np.nan)])
def test_one_special_value_in_each_operand(where, special):
    check_backend(kc, *one_special((1, 2, 4, 4), (3, 2, 3, 3), where, special, seed=2, at=1 / 2))
