"""The adder layer written from primitives (layers.adder2d_from_primitives) is its definition:
it is checked here against finite differences (sign mode) and against the paper's gradient
formulas written as loops (full mode), and every backend's fused F.adder2d is held equal to
it, in both modes, in outputs and in both gradients."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minadder as ma
from minadder import functional as F
from minadder.gradcheck import gradcheck

from adder_cases import adder_layers, assert_fused_equals_readable, away_from_ties, values_and_grads

SETTINGS = settings(deadline=None, max_examples=25)
seeds = st.integers(0, 2**31 - 1)


# ------------------------------------------------------------------ the readable definition
@settings(deadline=None, max_examples=15)
@given(seeds, adder_layers(max_channels=3, max_batch=2))
def test_readable_sign_mode_is_the_exact_gradient(seed, layer):
    x_shape, w_shape, stride, padding = layer
    x, w = away_from_ties(np.random.default_rng(seed), x_shape, w_shape, np.float64)
    fn = lambda x, w: F.adder2d_from_primitives(x, w, stride, padding, grad_mode="sign")  # noqa: E731
    gradcheck(fn, [ma.Tensor(x, requires_grad=True), ma.Tensor(w, requires_grad=True)], eps=1e-3)


def eq2_eq5_eq6_by_loops(x, w, stride, padding, g):
    """Y (Eq. 2), dY/dF = X - F (Eq. 5) and dY/dX = HardTanh(F - X) (Eq. 6), one term at a time."""
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    (c_out, c, d, _), (n, ho, wo) = w.shape, (g.shape[0], g.shape[2], g.shape[3])
    y = np.zeros(g.shape)
    for b, t, u, v in np.ndindex(n, c_out, ho, wo):
        patch = xp[b, :, stride * u:stride * u + d, stride * v:stride * v + d]
        y[b, t, u, v] = -np.abs(patch - w[t]).sum()
        dw[t] += g[b, t, u, v] * (patch - w[t])
        dxp[b, :, stride * u:stride * u + d, stride * v:stride * v + d] += g[b, t, u, v] * np.clip(w[t] - patch, -1, 1)
    return y, dxp[:, :, padding:padding + x.shape[2], padding:padding + x.shape[3]], dw


@settings(deadline=None, max_examples=15)
@given(seeds, adder_layers(max_channels=3, max_batch=2))
def test_readable_full_mode_follows_eqs_5_and_6(seed, layer):
    x_shape, w_shape, stride, padding = layer
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    y_shape = F.adder2d_from_primitives(ma.Tensor(x), ma.Tensor(w), stride, padding).shape
    g = rng.standard_normal(y_shape)
    got = values_and_grads(lambda x, w: F.adder2d_from_primitives(x, w, stride, padding, "full"), x, w, g)
    for a, b in zip(got, eq2_eq5_eq6_by_loops(x, w, stride, padding, g)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_the_two_modes_share_the_forward_and_differ_in_the_gradients():
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((2, 3, 4, 4)) * 3, rng.standard_normal((2, 3, 3, 3))
    g = rng.standard_normal((2, 2, 4, 4))
    sign = values_and_grads(lambda x, w: F.adder2d_from_primitives(x, w, 1, 1, "sign"), x, w, g)
    full = values_and_grads(lambda x, w: F.adder2d_from_primitives(x, w, 1, 1, "full"), x, w, g)
    np.testing.assert_allclose(sign[0], full[0], rtol=1e-12)
    assert not np.allclose(sign[1], full[1]) and not np.allclose(sign[2], full[2])


def test_the_readable_layer_refuses_what_the_fused_one_refuses():
    x, w = ma.Tensor(np.ones((1, 2, 4, 4))), ma.Tensor(np.ones((1, 3, 3, 3)))
    with pytest.raises(ValueError, match="x has 2 channels but weight"):
        F.adder2d_from_primitives(x, w)
    with pytest.raises(ValueError, match="grad_mode must be one of"):
        F.adder2d_from_primitives(x, ma.Tensor(np.ones((1, 2, 3, 3))), grad_mode="exact")


# ------------------------------------------------------------------ every backend's fused layer
@pytest.mark.parametrize("name", ["numpy", "cpu"])
@pytest.mark.parametrize("mode", ["sign", "full"])
@SETTINGS
@given(layer=adder_layers(), dtype=st.sampled_from([np.float64, np.float32]), seed=seeds)
def test_fused_adder2d_equals_the_readable_one(name, mode, layer, dtype, seed):
    assert_fused_equals_readable(name, layer, mode, dtype, seed)


def test_a_fused_layer_in_the_other_mode_would_be_caught():
    """The comparison is sharp: the fused sign gradient is not the readable full one."""
    with pytest.raises(AssertionError, match="x.grad"):
        assert_fused_equals_readable("numpy", ((2, 3, 4, 4), (2, 3, 3, 3), 1, 1), "full", np.float64, 0,
                                     fused_mode="sign")
