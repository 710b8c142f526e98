"""proofs/variance.md: Eq. 8 and the corrected Eq. 9 by Monte Carlo, and the batch-norm
gradient (Eq. 10, 11) against the engine.

Monte Carlo tolerances come from the standard error of each estimate (6 standard errors:
a chance failure has probability about 1e-9), and settings(derandomize=True) fixes the
drawn cases, so the tests are repeatable.
"""
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import minadder as ma
from minadder import functional as F
from minadder.paper import variance as eqs
from minadder.kernels.reference import im2col

MC = settings(deadline=None, max_examples=12, derandomize=True)
SETTINGS = settings(deadline=None, max_examples=25)
Z = 6.0                                  # standard errors allowed


def variance_and_se(y, mean=None):
    """Sample variance of y and its standard error. With the true mean given, the
    estimate mean((y - mean)^2) is unbiased and its terms are i.i.d."""
    y = np.asarray(y, dtype=np.float64).ravel()
    centred = y - (y.mean() if mean is None else mean)
    sq = centred ** 2
    return sq.mean(), sq.std() / math.sqrt(y.size)


shapes = st.tuples(st.sampled_from([1, 3, 5]), st.integers(1, 8))
variances = st.floats(0.05, 4.0)


@MC
@given(shapes, variances, variances, st.integers(0, 2**31 - 1))
def test_eq8_and_corrected_eq9_by_monte_carlo(shape, var_x, var_f, seed):
    d, c_in = shape
    k, m = d * d * c_in, 20_000
    rng = np.random.default_rng(seed)
    x = rng.normal(0, math.sqrt(var_x), (m, k))
    f = rng.normal(0, math.sqrt(var_f), (m, k))

    var, se = variance_and_se((x * f).sum(axis=1), mean=0.0)
    assert abs(var - eqs.conv_output_variance(d, c_in, var_x, var_f)) < Z * se

    y = -np.abs(x - f).sum(axis=1)
    expected_mean = -k * math.sqrt(2 / math.pi * (var_x + var_f))
    var, se = variance_and_se(y, mean=expected_mean)
    assert abs(var - eqs.adder_output_variance(d, c_in, var_x, var_f)) < Z * se
    # the constant the paper prints, sqrt(pi/2), is far outside the error bars
    assert abs(var - eqs.adder_output_variance_as_printed(d, c_in, var_x, var_f)) > 50 * se
    # and the mean of Y_adder is -K sqrt(2 (Var X + Var F) / pi)
    assert abs(y.mean() - expected_mean) < Z * y.std() / math.sqrt(m)


@MC
@given(shapes, variances, variances, st.integers(0, 2**31 - 1))
def test_eq8_and_eq9_through_the_engine_layers(shape, var_x, var_f, seed):
    """conv2d and adder2d on random images and filters: pooled over outputs, one
    estimate per independent replicate, the standard error from the spread of replicates."""
    d, c_in = shape
    k = d * d * c_in
    rng = np.random.default_rng(seed)
    mean_adder = -k * math.sqrt(2 / math.pi * (var_x + var_f))
    estimates = {"conv": [], "adder": []}
    for _ in range(24):
        x = rng.normal(0, math.sqrt(var_x), (32, c_in, d, d))
        w = rng.normal(0, math.sqrt(var_f), (32, c_in, d, d))
        estimates["conv"].append(np.mean(F.conv2d(ma.Tensor(x), ma.Tensor(w)).data ** 2))
        estimates["adder"].append(np.mean((F.adder2d(ma.Tensor(x), ma.Tensor(w)).data - mean_adder) ** 2))
    for name, formula in (("conv", eqs.conv_output_variance), ("adder", eqs.adder_output_variance)):
        e = np.array(estimates[name])
        se = e.std(ddof=1) / math.sqrt(e.size)
        assert abs(e.mean() - formula(d, c_in, var_x, var_f)) < Z * se, name


def test_folded_normal_moments_at_zero_mean_are_the_lemma():
    for var in (0.1, 1.0, 7.5):
        mean, v = eqs.folded_normal_moments(0.0, var)
        assert math.isclose(mean, math.sqrt(var) * math.sqrt(2 / math.pi), rel_tol=1e-12)
        assert math.isclose(v, (1 - 2 / math.pi) * var, rel_tol=1e-12)


@MC
@given(shapes, variances, st.floats(0.0, 9.0), st.integers(0, 2**31 - 1))
def test_fixed_filter_variance_by_monte_carlo(shape, var_x, var_f, seed):
    d, c_in = shape
    k, m = d * d * c_in, 20_000
    rng = np.random.default_rng(seed)
    w = rng.normal(0, math.sqrt(var_f), k)
    x = rng.normal(0, math.sqrt(var_x), (m, k))
    means, _ = eqs.folded_normal_moments(-w, var_x)
    var, se = variance_and_se(-np.abs(x - w).sum(axis=1), mean=-means.sum())
    formula = eqs.adder_output_variance_fixed_filter(w, var_x)
    assert abs(var - formula) < Z * se
    # the bounds (1 - 2/pi) K Var[X] <= Var[Y | w] <= K Var[X]
    assert (1 - 2 / math.pi) * k * var_x * (1 - 1e-12) <= formula <= k * var_x * (1 + 1e-12)


def test_fixed_filter_term_variance_is_even_and_increasing_in_abs_w():
    for var_x in (0.25, 1.0, 4.0):
        w = np.linspace(0, 3 * math.sqrt(var_x), 301)   # beyond ~4 sigma v(w) is var_x to rounding
        _, v = eqs.folded_normal_moments(-w, var_x)
        _, v_neg = eqs.folded_normal_moments(w, var_x)
        np.testing.assert_allclose(v, v_neg, rtol=1e-12)
        assert np.all(np.diff(v) > 0)
        assert math.isclose(v[0], (1 - 2 / math.pi) * var_x, rel_tol=1e-12)
        assert v[-1] < var_x
        _, v_far = eqs.folded_normal_moments(-10 * math.sqrt(var_x), var_x)
        assert math.isclose(v_far, var_x, rel_tol=1e-9)


def engine_bn_grad(x, g, gamma, eps):
    xt = ma.Tensor(x, requires_grad=True)
    weight = ma.Tensor(gamma)
    y = F.batch_norm(xt, weight=weight, training=True, eps=eps)
    F.sum(y * ma.Tensor(g)).backward()
    return xt.grad


@SETTINGS
@given(st.integers(2, 6), st.integers(1, 4), st.integers(1, 3), st.floats(0.01, 100.0),
       st.integers(0, 2**31 - 1))
def test_batch_norm_gradient_formula_zero_sum_bound_and_scaling(n, c, hw, scale, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(3.0, 1.0, (n, c, hw, hw)) * scale
    g = rng.standard_normal(x.shape)
    gamma = rng.uniform(0.5, 2.0, c)
    dx = engine_bn_grad(x, g, gamma, eps=1e-5)
    for ch in range(c):
        xc, gc, dc = x[:, ch].ravel(), g[:, ch].ravel(), dx[:, ch].ravel()
        np.testing.assert_allclose(dc, eqs.batch_norm_grad(xc, gc, gamma[ch], eps=1e-5), rtol=1e-6, atol=1e-10)
        sigma = math.sqrt(xc.var() + 1e-5)
        assert abs(dc.sum()) <= 1e-8 * np.abs(dc).sum() + 1e-12               # (i)
        assert np.linalg.norm(dc) <= gamma[ch] / sigma * np.linalg.norm(gc) * (1 + 1e-9)   # (ii)
    # (iii) eps = 0: an output c times larger receives a gradient c times smaller
    dx_scaled = engine_bn_grad(x * 7.0, g, gamma, eps=0.0)
    np.testing.assert_allclose(dx_scaled * 7.0, engine_bn_grad(x, g, gamma, eps=0.0), rtol=1e-6, atol=1e-10)


@SETTINGS
@given(st.integers(2, 4), st.integers(1, 3), st.integers(1, 4), st.sampled_from([(3, 0), (3, 1), (1, 0)]),
       st.integers(0, 2**31 - 1))
def test_adder_filter_gradient_under_batch_norm_is_the_conv_expression(n, c_in, c_out, kp, seed):
    """With BN after the adder layer, sum_l G[t, l] = 0, so the full-precision filter
    gradient G @ X_col.T - W * sum_l G equals G @ X_col.T, the convolution's formula."""
    k, p = kp
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c_in, 5, 5))
    w = ma.Tensor(rng.standard_normal((c_out, c_in, k, k)), requires_grad=True)
    r = rng.standard_normal((n, c_out, 5 - k + 1 + 2 * p, 5 - k + 1 + 2 * p))

    # G = dLoss/dY at the adder output, from BN's backward alone
    y = F.adder2d(ma.Tensor(x), w, padding=p, grad_mode="full")
    y_leaf = ma.Tensor(y.data, requires_grad=True)
    F.sum(F.batch_norm(y_leaf, training=True) * ma.Tensor(r)).backward()
    G = y_leaf.grad
    np.testing.assert_allclose(G.sum(axis=(0, 2, 3)), 0, atol=1e-9 * np.abs(G).sum())

    # the whole graph's filter gradient
    F.sum(F.batch_norm(F.adder2d(ma.Tensor(x), w, padding=p, grad_mode="full"), training=True)
          * ma.Tensor(r)).backward()
    g2 = G.transpose(1, 0, 2, 3).reshape(c_out, -1)
    cols = im2col(x, k, k, 1, p)
    np.testing.assert_allclose(w.grad.reshape(c_out, -1), g2 @ cols.T, rtol=1e-7, atol=1e-9)
