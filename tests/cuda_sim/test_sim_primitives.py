"""The cuda backend's fused adder layer equals the readable one written from primitives
(layers.adder2d_from_primitives), under the simulator, in both gradient modes: the same
comparison as tests/test_adder_primitives.py makes for "numpy" and "cpu". The cuda kernels
compute in float32, so the comparison is in float32."""
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

assert os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", "run these tests through tests/test_cuda.py"

from adder_cases import adder_layers, assert_fused_equals_readable  # noqa: E402  (tests/adder_cases.py)


@pytest.mark.parametrize("mode", ["sign", "full"])
@settings(deadline=None, max_examples=8)
@given(layer=adder_layers(max_channels=4, max_batch=2), seed=st.integers(0, 2**31 - 1))
def test_cuda_adder2d_equals_the_readable_one(mode, layer, seed):
    assert_fused_equals_readable("cuda", layer, mode, np.float32, seed)


def test_a_cuda_layer_in_the_other_mode_would_be_caught():
    with pytest.raises(AssertionError, match="x.grad"):
        assert_fused_equals_readable("cuda", ((2, 3, 4, 4), (2, 3, 3, 3), 1, 1), "full", np.float32, 0,
                                     fused_mode="sign")
