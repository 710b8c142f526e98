"""The whole CUDA adder layer (image in, image out), the contract and the backend, under the simulator."""
import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

assert os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", "run these tests through tests/test_cuda.py"

from numba import cuda  # noqa: E402

import minadder  # noqa: E402
from minadder import backend, functional as F  # noqa: E402
from minadder.kernels import KERNEL_NAMES, reference as ref  # noqa: E402
from minadder.kernels import cuda as kc  # noqa: E402
from minadder.kernels.cuda import columns, memory  # noqa: E402
from minadder.kernels.geometry import Window  # noqa: E402

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


def _arrays(seed, x_shape, w_shape):
    rng = np.random.default_rng(seed)
    return rng, rng.standard_normal(x_shape).astype(np.float32), rng.standard_normal(w_shape).astype(np.float32)


def test_the_package_exports_the_contract():
    assert all(callable(getattr(kc, name)) for name in KERNEL_NAMES)
    assert not hasattr(kc, "layer_input") and not hasattr(kc, "im2col")   # the contract only


@FEW
@given(layers(), st.sampled_from(["full", "sign"]), st.booleans(), st.booleans(), st.integers(0, 2**16))
def test_adder2d_forward_backward_match_reference(layer, mode, need_x, need_w, seed):
    x_shape, w_shape, stride, padding = layer
    rng, x, w = _arrays(seed, x_shape, w_shape)
    win = Window.of(x_shape, w_shape, stride, padding)
    y, saved = kc.adder2d_forward(x, w, win)
    y_ref, saved_ref = ref.adder2d_forward(x, w, win)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32 and y.shape == win.y_shape   # host in, host out
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-4)
    g = rng.standard_normal(y.shape).astype(np.float32)
    dx, dw = kc.adder2d_backward(g, saved, mode, need_x, need_w)
    dx_ref, dw_ref = ref.adder2d_backward(g, saved_ref, mode, need_x, need_w)
    for got, want, needed in ((dx, dx_ref, need_x), (dw, dw_ref, need_w)):
        if needed:
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)
        else:
            assert got is None


@FEW
@given(layers(), st.integers(0, 2**16))
def test_l2_adder2d_forward_backward_match_reference(layer, seed):
    """distance="l2" (Eq. 27): outputs and both exact gradients, host in, host out."""
    x_shape, w_shape, stride, padding = layer
    rng, x, w = _arrays(seed, x_shape, w_shape)
    win = Window.of(x_shape, w_shape, stride, padding)
    y, saved = kc.adder2d_forward(x, w, win, distance="l2")
    y_ref, saved_ref = ref.adder2d_forward(x, w, win, distance="l2")
    scale = float(np.abs(y_ref).max(initial=1.0))
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5 * scale)
    g = rng.standard_normal(y.shape).astype(np.float32)
    dx, dw = kc.adder2d_backward(g, saved, "full")
    dx_ref, dw_ref = ref.adder2d_backward(g, saved_ref, "full")
    for got, want in ((dx, dx_ref), (dw, dw_ref)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max(initial=1.0)))


def test_a_gradient_not_needed_launches_nothing_for_it(monkeypatch):
    """dX alone skips the dW kernels, dW alone skips dX's, and neither launches nothing."""
    calls = []
    for name in ("grad_input", "grad_weight"):
        original = getattr(columns, name)
        monkeypatch.setattr(columns, name, lambda *a, _f=original, _n=name, **k: calls.append(_n) or _f(*a, **k))
    _, x, w = _arrays(0, (1, 2, 4, 4), (3, 2, 3, 3))
    win = Window.of(x.shape, w.shape, 1, 1)
    y, saved = kc.adder2d_forward(x, w, win)
    kc.adder2d_backward(np.ones_like(y), saved, "full", True, False)
    kc.adder2d_backward(np.ones_like(y), saved, "sign", False, True)
    assert calls == ["grad_input", "grad_weight"]
    assert kc.adder2d_backward(np.ones_like(y), saved, "full", False, False) == (None, None)
    assert len(calls) == 2


def test_device_arrays_stay_on_the_device():
    """Device in, device out; saved keeps the input (not X_col) on the device."""
    rng, x, w = _arrays(0, (2, 3, 5, 5), (4, 3, 3, 3))
    win = Window.of(x.shape, w.shape, 1, 1)
    y, saved = kc.adder2d_forward(cuda.to_device(x), cuda.to_device(w), win)
    y_ref, saved_ref = ref.adder2d_forward(x, w, win)
    assert hasattr(y, "copy_to_host") and hasattr(saved.x, "copy_to_host") and tuple(saved.x.shape) == x.shape
    np.testing.assert_allclose(y.copy_to_host(), y_ref, rtol=1e-5, atol=1e-4)
    g = rng.standard_normal(y.shape).astype(np.float32)
    dx, dw = kc.adder2d_backward(cuda.to_device(g), saved, "full")
    assert hasattr(dx, "copy_to_host") and hasattr(dw, "copy_to_host")
    for got, want in zip((dx, dw), ref.adder2d_backward(g, saved_ref, "full")):
        np.testing.assert_allclose(got.copy_to_host(), want, rtol=1e-4, atol=1e-3)


def test_conv2d_is_the_reference_on_host_copies():
    rng, x, w = _arrays(2, (2, 3, 5, 5), (4, 3, 3, 3))
    win = Window.of(x.shape, w.shape, 2, 1)
    y_ref, saved_ref = ref.conv2d_forward(x, w, win)
    g = rng.standard_normal(y_ref.shape).astype(np.float32)
    want = (y_ref, *ref.conv2d_backward(g, saved_ref))
    y, saved = kc.conv2d_forward(x, w, win)                          # host in, host out
    got = (y, *kc.conv2d_backward(g, saved))
    assert all(isinstance(a, np.ndarray) for a in got)
    y, saved = kc.conv2d_forward(cuda.to_device(x), cuda.to_device(w), win)   # device in, device out
    dx, dw = kc.conv2d_backward(cuda.to_device(g), saved, need_weight_grad=False)
    assert dw is None and all(hasattr(a, "copy_to_host") for a in (y, dx))
    for a, b, c in zip(got, want, (y.copy_to_host(), dx.copy_to_host(), want[2])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(c, b, rtol=1e-5, atol=1e-5)


def test_float64_host_input_is_computed_in_float32():
    x = np.arange(2 * 1 * 3 * 3, dtype=np.float64).reshape(2, 1, 3, 3)
    w = np.ones((2, 1, 2, 2))
    win = Window.of(x.shape, w.shape)
    y, _ = kc.adder2d_forward(x, w, win)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, ref.adder2d_forward(x, w, win)[0], rtol=1e-6)


def test_bad_device_arrays_are_named():
    with pytest.raises(TypeError, match="x: device arrays must be float32"):
        kc.adder2d_forward(cuda.to_device(np.zeros((1, 1, 3, 3))), np.zeros((1, 1, 2, 2), np.float32),
                           Window.of((1, 1, 3, 3), (1, 1, 2, 2)))
    with pytest.raises(ValueError, match="weight must be 4-D"):
        memory.to_device(np.zeros((2, 3), np.float32), "weight", 4)


def test_numpy_alias_is_restored_at_the_first_kernel_not_at_import(monkeypatch):
    """On NumPy >= 2.5 (no np.row_stack) the first array on its way to a kernel puts it back."""
    monkeypatch.delattr(np, "row_stack", raising=False)
    _, x, w = _arrays(3, (1, 1, 3, 3), (1, 1, 2, 2))
    kc.adder2d_forward(x, w, Window.of(x.shape, w.shape))
    assert np.row_stack is np.vstack


def test_backend_cuda_trains_like_numpy():
    """set_backend("cuda") runs the engine's adder layer (the simulator counts as a device)."""
    kc.check_available()  # is_available() is True under the simulator
    rng, x, w = _arrays(1, (2, 3, 5, 5), (3, 3, 3, 3))
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
    win = Window.of((2, 2, 5, 5), w.shape, 1, 1)
    for mode in ("full", "sign", "full"):
        x = rng.standard_normal((2, 2, 5, 5)).astype(np.float32)
        y, saved = kc.adder2d_forward(x, w, win)
        y_ref, saved_ref = ref.adder2d_forward(x, w, win)
        np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-4)
        g = rng.standard_normal(y.shape).astype(np.float32)
        for got, want in zip(kc.adder2d_backward(g, saved, mode), ref.adder2d_backward(g, saved_ref, mode)):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert memory._workspace
    kc.release_workspace()
    assert not memory._workspace
