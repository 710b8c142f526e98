"""The whole CUDA adder layer (image in, image out) and the backend, under the simulator."""
import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

assert os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", "run these tests through tests/test_cuda.py"

from numba import cuda  # noqa: E402

import minadder  # noqa: E402
from minadder import backend, functional as F  # noqa: E402
from minadder.kernels import cuda as kc  # noqa: E402
from minadder.kernels import contract, reference as ref  # noqa: E402

FEW = settings(deadline=None, max_examples=6)


@st.composite
def layers(draw):
    """Tiny adder layers: odd channel counts, 1..5-pixel images, any stride/padding."""
    n, c, c_out = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 5))
    h, w = draw(st.integers(2, 5)), draw(st.integers(2, 5))
    padding = draw(st.integers(0, 1))
    d = draw(st.integers(1, min(3, h + 2 * padding, w + 2 * padding)))
    stride = draw(st.integers(1, 2))
    return (n, c, h, w), (c_out, c, d, d), stride, padding


@FEW
@given(layers(), st.sampled_from(["full", "sign"]), st.booleans(), st.integers(0, 2**16))
def test_adder2d_forward_backward_match_reference(layer, mode, input_grad, seed):
    x_shape, w_shape, stride, padding = layer
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    y, cache = contract.adder2d_forward(kc, x, w, stride, padding)
    y_ref, cache_ref = contract.adder2d_forward(ref, x, w, stride, padding)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32     # host in, host out
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-4)
    g = rng.standard_normal(y.shape).astype(np.float32)
    dx, dw = contract.adder2d_backward(kc, g, cache, mode, input_grad)
    dx_ref, dw_ref = contract.adder2d_backward(ref, g, cache_ref, mode, input_grad)
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-4, atol=1e-3)
    if input_grad:
        np.testing.assert_allclose(dx, dx_ref, rtol=1e-4, atol=1e-4)
    else:
        assert dx is None


def test_device_arrays_stay_on_the_device():
    """Device in, device out; the cache keeps the im2col matrix on the device."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    y, cache = contract.adder2d_forward(kc, cuda.to_device(x), cuda.to_device(w), 1, 1)
    assert hasattr(y, "copy_to_host") and hasattr(cache[0], "copy_to_host")
    np.testing.assert_allclose(y.copy_to_host(), contract.adder2d_forward(ref, x, w, 1, 1)[0], rtol=1e-5, atol=1e-4)
    g = rng.standard_normal(y.shape).astype(np.float32)
    dx, dw = contract.adder2d_backward(kc, cuda.to_device(g), cache, "full")
    assert hasattr(dx, "copy_to_host") and hasattr(dw, "copy_to_host")
    cols = kc.im2col(cuda.to_device(x), 3, 3, 1, 1)
    assert hasattr(cols, "copy_to_host")
    np.testing.assert_array_equal(cols.copy_to_host(), ref.im2col(x, 3, 3, 1, 1))


def test_float64_host_input_is_computed_in_float32():
    x = np.arange(2 * 1 * 3 * 3, dtype=np.float64).reshape(2, 1, 3, 3)
    w = np.ones((2, 1, 2, 2))
    y, _ = contract.adder2d_forward(kc, x, w)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, contract.adder2d_forward(ref, x, w)[0], rtol=1e-6)


def test_bad_arguments_are_named():
    x = np.zeros((1, 2, 4, 4), np.float32)
    with pytest.raises(ValueError, match="x has 2 channels but weight"):
        contract.adder2d_forward(kc, x, np.zeros((3, 5, 3, 3), np.float32))
    with pytest.raises(ValueError, match="mode must be one of"):
        kc.adder_grad_input(np.zeros((2, 3), np.float32), np.zeros((1, 2), np.float32),
                            np.zeros((1, 3), np.float32), "half")
    with pytest.raises(ValueError, match="grad_out must have shape"):
        kc.adder_grad_weight(np.zeros((2, 3), np.float32), np.zeros((1, 2), np.float32),
                             np.zeros((2, 3), np.float32))
    with pytest.raises(TypeError, match="float32"):
        kc.adder_forward(cuda.to_device(np.zeros((2, 3))), np.zeros((1, 2), np.float32))
    with pytest.raises(ValueError, match="larger than the padded input"):
        kc.im2col(x, 5, 5)
    with pytest.raises(ValueError, match="stride >= 1"):
        kc.im2col(x, 3, 3, stride=0)
    _, cache = contract.adder2d_forward(kc, x, np.zeros((3, 2, 3, 3), np.float32))
    with pytest.raises(ValueError, match="grad_y must have shape"):
        contract.adder2d_backward(kc, np.zeros((1, 3, 3, 3), np.float32), cache)


def test_backend_cuda_trains_like_numpy():
    """set_backend("cuda") runs the engine's adder layer (the simulator counts as a device)."""
    kc.check_available()  # is_available() is True under the simulator
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    w = rng.standard_normal((3, 3, 3, 3)).astype(np.float32)
    grads = {}
    for name in ("numpy", "cuda"):
        with backend.use_backend(name):
            xt = minadder.Tensor(x, requires_grad=True)
            wt = minadder.Tensor(w, requires_grad=True)
            loss = (F.adder2d(xt, wt, stride=2, padding=1) ** 2).sum()
            loss.backward()
            grads[name] = (loss.data, xt.grad, wt.grad)
    for got, want in zip(grads["cuda"], grads["numpy"]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)


def test_reused_workspace_does_not_leak_between_calls():
    """Temporaries are reused across calls of the same shape: each call must still be exact."""
    rng = np.random.default_rng(5)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    for mode in ("full", "sign", "full"):
        x = rng.standard_normal((2, 2, 5, 5)).astype(np.float32)
        y, cache = contract.adder2d_forward(kc, x, w, 1, 1)
        y_ref, cache_ref = contract.adder2d_forward(ref, x, w, 1, 1)
        np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-4)
        g = rng.standard_normal(y.shape).astype(np.float32)
        for got, want in zip(contract.adder2d_backward(kc, g, cache, mode), contract.adder2d_backward(ref, g, cache_ref, mode)):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    kc.release_workspace()
    assert not kc._workspace
