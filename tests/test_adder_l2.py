"""The l2 adder layer (Appendix B, Eq. 27: Y = -sum (X - F)^2): every backend's kernels
against the float64 definition, the fused layer against the readable one from primitives,
float32 precision when inputs and filters sit at large offsets (the cpu backend computes
Eq. 28 in a shifted frame), the refusal of grad_mode="sign", and a training step."""
import importlib

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import minadder as ma
from minadder import functional as F, nn
from minadder.kernels.geometry import Window

from adder_cases import adder_layers, use, values_and_grads

SETTINGS = settings(deadline=None, max_examples=20)
seeds = st.integers(0, 2**31 - 1)
BACKENDS = ["numpy", "cpu"]
MODULES = {"numpy": "minadder.kernels.reference", "cpu": "minadder.kernels.cpu"}


def _module(name):
    if name == "cpu":
        pytest.importorskip("numba")
    return importlib.import_module(MODULES[name])


def eq27_by_definition(x, w, stride, padding, g):
    """Y = -sum (X - F)^2, dY/dF = 2 (X - F), dY/dX = 2 (F - X), in float64, window by window."""
    x, w, g = (a.astype(np.float64) for a in (x, w, g))
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    d = w.shape[2]
    views = np.lib.stride_tricks.sliding_window_view(xp, (d, d), axis=(2, 3))[:, :, ::stride, ::stride]
    diff = views[:, None] - w[None, :, :, None, None]            # (N, C_out, C, H_out, W_out, d, d)
    y = -(diff * diff).sum(axis=(2, 5, 6))
    dw = 2 * np.einsum("ntcuvij,ntuv->tcij", diff, g)
    dviews = -2 * np.einsum("ntcuvij,ntuv->ncuvij", diff, g)
    dxp = np.zeros_like(xp)
    for u, v in np.ndindex(*y.shape[2:]):
        dxp[:, :, stride * u:stride * u + d, stride * v:stride * v + d] += dviews[:, :, u, v]
    return y, dxp[:, :, padding:padding + x.shape[2], padding:padding + x.shape[3]], dw


def _draw(layer, seed, dtype, x_offset=0.0, w_offset=0.0):
    x_shape, w_shape, stride, padding = layer
    rng = np.random.default_rng(seed)
    x = (x_offset + rng.standard_normal(x_shape)).astype(dtype)
    w = (w_offset + rng.standard_normal(w_shape)).astype(dtype)
    y_shape = Window.of(x_shape, w_shape, stride, padding).y_shape
    return x, w, rng.standard_normal(y_shape).astype(dtype)


def _kernels(name, x, w, stride, padding, g, need=(True, True)):
    """(y, dx, dw) of backend ``name``'s contract functions with distance="l2"."""
    module = _module(name)
    y, saved = module.adder2d_forward(x, w, Window.of(x.shape, w.shape, stride, padding), distance="l2")
    return (y, *module.adder2d_backward(g, saved, "full", *need))


def _assert_close(got, want, dtype, what, factor=8):
    """Equal to `factor` roundings of dtype, relative to the largest magnitude of `want`."""
    scale = np.abs(want).max(initial=1.0)
    tol = factor * np.finfo(dtype).eps * scale
    assert got.dtype == dtype, what
    np.testing.assert_allclose(got, want, rtol=0, atol=tol, err_msg=what)


# ------------------------------------------------------------------ kernels vs definition
@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@SETTINGS
@given(seed=seeds, layer=adder_layers(max_channels=4, max_batch=3))
@example(seed=1, layer=((2, 3, 5, 5), (4, 3, 3, 3), 2, 1))     # stride 2 with padding
@example(seed=2, layer=((3, 4, 2, 3), (5, 4, 1, 1), 1, 0))     # 1x1: a fully connected layer per pixel
def test_l2_kernels_equal_the_definition(name, dtype, seed, layer):
    _, _, stride, padding = layer
    x, w, g = _draw(layer, seed, dtype)
    want = eq27_by_definition(x, w, stride, padding, g)
    got = _kernels(name, x, w, stride, padding, g)
    factor = 1e4 if dtype == np.float64 else 64     # float64: 1e4 eps ~ 2e-12 relative
    for what, a, b in zip(("y", "dx", "dw"), got, want):
        _assert_close(a, b, dtype, f"{name} {what}", factor)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("need", [(True, False), (False, True)])
def test_an_l2_gradient_not_needed_is_none(name, need):
    layer = ((2, 2, 4, 4), (3, 2, 3, 3), 1, 1)
    x, w, g = _draw(layer, 0, np.float64)
    _, dx, dw = _kernels(name, x, w, 1, 1, g, need)
    want = eq27_by_definition(x, w, 1, 1, g)
    assert (dx is None) != need[0] and (dw is None) != need[1]
    for got, ref in ((dx, want[1]), (dw, want[2])):
        if got is not None:
            np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------ readable, fused, precision
@settings(deadline=None, max_examples=15)
@given(seed=seeds, layer=adder_layers(max_channels=3, max_batch=2))
def test_readable_l2_has_the_exact_gradients(seed, layer):
    _, _, stride, padding = layer
    x, w, g = _draw(layer, seed, np.float64)
    readable = lambda x, w: F.adder2d_from_primitives(x, w, stride, padding, distance="l2")  # noqa: E731
    for got, want in zip(values_and_grads(readable, x, w, g), eq27_by_definition(x, w, stride, padding, g)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", BACKENDS)
@SETTINGS
@given(seed=seeds, layer=adder_layers(max_channels=3, max_batch=2))
def test_the_fused_l2_layer_equals_the_readable_one(name, seed, layer):
    _, _, stride, padding = layer
    x, w, g = _draw(layer, seed, np.float64)
    want = values_and_grads(lambda x, w: F.adder2d_from_primitives(x, w, stride, padding, distance="l2"), x, w, g)
    with use(name):
        got = values_and_grads(lambda x, w: F.adder2d(x, w, stride, padding, distance="l2"), x, w, g)
    for what, a, b in zip(("y", "x.grad", "weight.grad"), got, want):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9 * np.abs(b).max(initial=1.0), err_msg=what)


@pytest.mark.parametrize("name", BACKENDS)
def test_adder_linear_l2_is_a_squared_distance(name):
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((4, 6)), rng.standard_normal((3, 6))
    with use(name):
        y = F.adder_linear(ma.Tensor(x), ma.Tensor(w), distance="l2").data
    np.testing.assert_allclose(y, -((x[:, None] - w[None]) ** 2).sum(axis=2), rtol=1e-12)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("x_offset, w_offset", [(1e3, 1e3), (0.0, 1e3), (1e3, 0.0), (-5e2, 5e2)])
def test_float32_l2_keeps_its_precision_at_large_offsets(name, x_offset, w_offset):
    """Inputs and filters around offsets up to 1e3 apart (or sharing one): float32 stays
    within a few float32 roundings of the float64 result of the same float32 numbers, on
    the scale of the output (Eq. 28's terms |X|^2 ~ 1e6 K would lose it without the shift)."""
    layer = ((2, 3, 6, 6), (4, 3, 3, 3), 2, 1)
    x, w, g = _draw(layer, 11, np.float32, x_offset, w_offset)
    want = eq27_by_definition(x, w, 2, 1, g)
    got = _kernels(name, x, w, 2, 1, g)
    for what, a, b in zip(("y", "dx", "dw"), got, want):
        _assert_close(a, b, np.float32, f"{name} {what} at offsets {x_offset}, {w_offset}", factor=4)


# ---------------------------------------------------------------- settings and training
@pytest.mark.parametrize("make", [
    lambda: F.adder2d(ma.Tensor(np.ones((1, 1, 3, 3))), ma.Tensor(np.ones((1, 1, 3, 3))), grad_mode="sign", distance="l2"),
    lambda: F.adder_linear(ma.Tensor(np.ones((1, 2))), ma.Tensor(np.ones((1, 2))), grad_mode="sign", distance="l2"),
    lambda: nn.Adder2d(1, 1, 3, grad_mode="sign", distance="l2"),
    lambda: nn.AdderLinear(2, 1, grad_mode="sign", distance="l2"),
    lambda: F.adder2d_from_primitives(ma.Tensor(np.ones((1, 1, 3, 3))), ma.Tensor(np.ones((1, 1, 3, 3))),
                                      grad_mode="sign", distance="l2"),
])
def test_an_l2_layer_refuses_the_sign_gradient(make):
    with pytest.raises(ValueError, match="grad_mode='sign' applies to the l1 distance only"):
        make()


@pytest.mark.parametrize("make", [lambda: nn.Adder2d(1, 1, 3, distance="L2"),
                                  lambda: nn.AdderLinear(2, 1, distance=2)])
def test_an_unknown_distance_is_refused(make):
    with pytest.raises(ValueError, match=r"distance must be one of \('l1', 'l2'\)"):
        make()


def test_the_distance_is_shown_and_the_saved_state_is_unchanged():
    l1, l2 = nn.Adder2d(2, 3, 3, padding=1), nn.Adder2d(2, 3, 3, padding=1, distance="l2")
    assert "distance='l2'" in repr(l2) and "distance='l1'" in repr(l1)
    assert "distance='l2'" in repr(nn.AdderLinear(4, 2, distance="l2"))
    assert {k: v.shape for k, v in l1.state_dict().items()} == {k: v.shape for k, v in l2.state_dict().items()}


@pytest.mark.parametrize("name", BACKENDS)
def test_an_l2_adder2d_trains(name):
    """A few SGD steps (adaptive scaling, Eq. 13) lower the squared error of a tiny l2 layer."""
    ma.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 2, 5, 5)).astype(np.float32)
    target = rng.standard_normal((4, 3, 5, 5)).astype(np.float32)
    layer = nn.Adder2d(2, 3, 3, padding=1, bias=True, distance="l2")
    opt = ma.optim.SGD(list(layer.parameters()), lr=0.5)
    losses = []
    with use(name):
        for _ in range(5):
            y = layer(ma.Tensor(x))
            loss = F.mean((y / 18 - ma.Tensor(target)) ** 2)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.data))
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < 0.9 * losses[0], losses
