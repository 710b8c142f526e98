"""The compiled passes around the integer kernel (kernels/cpu/int8_passes.py) equal the
NumPy definitions of kernels/int8_reference.py bit for bit."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

pytest.importorskip("numba")
from minadder.kernels import int8_reference as reference  # noqa: E402
from minadder.kernels.cpu import int8_passes  # noqa: E402


@settings(deadline=None, max_examples=40)
@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=4), scale=st.floats(1e-3, 10),
       offset=st.integers(0, 255), bits=st.integers(2, 8), spread=st.floats(0.1, 1e3), seed=st.integers(0, 2**16))
def test_codes_equal_the_reference(shape, scale, offset, bits, spread, seed):
    rng = np.random.default_rng(seed)
    top = (1 << bits) - 1
    values = (rng.standard_normal(shape) * spread).astype(np.float32)
    values.reshape(-1)[0] = np.float32(scale) * np.float32(0.5)      # a tie: rint rounds it to even
    offset = min(offset, top)
    np.testing.assert_array_equal(int8_passes.codes(values, scale, offset, top),
                                  reference.codes(values, scale, offset, top))


@settings(deadline=None, max_examples=30)
@given(n=st.integers(1, 4), c=st.integers(1, 9), rest=st.lists(st.integers(1, 5), max_size=2),
       seed=st.integers(0, 2**16))
def test_affine_equals_the_reference(n, c, rest, seed):
    rng = np.random.default_rng(seed)
    sums = rng.integers(0, 1 << 20, (n, c, *rest), dtype=np.int32)
    rescale = rng.standard_normal(c).astype(np.float32) * 1e-3
    bias = rng.standard_normal(c).astype(np.float32)
    got = int8_passes.affine(sums, rescale, bias)
    assert got.dtype == np.float32 and got.shape == sums.shape
    np.testing.assert_array_equal(got, reference.affine(sums, rescale, bias))
