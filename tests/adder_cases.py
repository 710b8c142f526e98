"""What the adder-layer tests share (tests/test_adder_primitives.py, and the cuda backend's
under the simulator, tests/cuda_sim/test_sim_primitives.py): drawn layer shapes, inputs away
from the kink of |.|, and the comparison of a backend's fused F.adder2d with the readable
layers.adder2d_from_primitives, in outputs and in both gradients."""
import numpy as np
import pytest
from hypothesis import strategies as st

import minadder as ma
from minadder import backend
from minadder import functional as F


@st.composite
def adder_layers(draw, max_channels=5, max_batch=3):
    """(x_shape, weight_shape, stride, padding): 1x1 to 3x3 kernels that fit the padded input."""
    n, c, c_out = draw(st.integers(1, max_batch)), draw(st.integers(1, max_channels)), draw(st.integers(1, max_channels))
    padding, stride = draw(st.integers(0, 2)), draw(st.integers(1, 2))
    h, w = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    d = draw(st.integers(1, min(3, h + 2 * padding, w + 2 * padding)))
    return (n, c, h, w), (c_out, c, d, d), stride, padding


def away_from_ties(rng, x_shape, w_shape, dtype):
    """x on the grid m + 1/4 and filters on m + 3/4: every X - F (and the padding's 0 - F) is at
    least 1/4 from 0, where |.| has its kink, so the sign gradient has one right answer."""
    x = rng.integers(-3, 3, x_shape) + 0.25
    w = rng.integers(-3, 3, w_shape) + 0.75
    return x.astype(dtype), w.astype(dtype)


def values_and_grads(layer, x, w, upstream):
    """layer(x, w) and the gradients of <layer(x, w), upstream> for fresh leaves."""
    xt, wt = ma.Tensor(x.copy(), requires_grad=True), ma.Tensor(w.copy(), requires_grad=True)
    y = layer(xt, wt)
    y.backward(upstream.astype(y.dtype))
    return y.data, xt.grad, wt.grad


def use(name):
    """The backend `name`, skipping the test where it cannot run."""
    if name not in backend.available_backends():
        pytest.skip(f"backend {name!r} cannot run here")
    return backend.use_backend(name)


def assert_fused_equals_readable(name, layer, mode, dtype, seed, fused_mode=None):
    """Backend `name`'s F.adder2d (in fused_mode, by default `mode`) gives the output and the
    two gradients (for a random upstream gradient) of adder2d_from_primitives in `mode`:
    to 1e-9 relative in float64, 1e-4 in float32."""
    x_shape, w_shape, stride, padding = layer
    rng = np.random.default_rng(seed)
    if mode == "sign":
        x, w = away_from_ties(rng, x_shape, w_shape, dtype)
    else:
        x, w = rng.standard_normal(x_shape).astype(dtype), rng.standard_normal(w_shape).astype(dtype)
    readable = lambda x, w: F.adder2d_from_primitives(x, w, stride, padding, mode)  # noqa: E731
    g = rng.standard_normal(readable(ma.Tensor(x), ma.Tensor(w)).shape)
    want = values_and_grads(readable, x, w, g)
    with use(name):
        got = values_and_grads(lambda x, w: F.adder2d(x, w, stride, padding, fused_mode or mode), x, w, g)
    rtol = 1e-9 if dtype == np.float64 else 1e-4
    for what, a, b in zip(("y", "x.grad", "weight.grad"), got, want):
        assert a.dtype == dtype, what
        scale = np.abs(b).max(initial=1.0)       # a sum of many terms may cancel to near 0
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale, err_msg=f"{name} {mode}: {what}")
