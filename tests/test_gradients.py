"""Every differentiable op against central differences in float64, on drawn shapes."""
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import minadder as ma
from minadder import functional as F
from minadder.gradcheck import gradcheck

SETTINGS = settings(deadline=None, max_examples=15)


def rand(rng, *shape):
    return ma.Tensor(rng.standard_normal(shape), requires_grad=True)


seeds = st.integers(0, 2**31 - 1)
small = st.integers(1, 4)


@SETTINGS
@given(seeds, st.sampled_from(["add", "sub", "mul", "div"]),
       st.sampled_from([((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 4), (3, 1)), ((1,), (2, 3))]))
def test_arithmetic_with_broadcasting(seed, op, shapes):
    rng = np.random.default_rng(seed)
    a, b = rand(rng, *shapes[0]), rand(rng, *shapes[1])
    if op == "div":
        b.data = np.sign(b.data) * (np.abs(b.data) + 0.5)   # keep away from 0
    gradcheck(getattr(F, op), [a, b])


@SETTINGS
@given(seeds, st.sampled_from([2, 3, 0.5, -1.0]))
def test_power_exp_log(seed, exponent):
    rng = np.random.default_rng(seed)
    a = ma.Tensor(rng.uniform(0.5, 2.0, (3, 2)), requires_grad=True)
    gradcheck(lambda t: F.power(t, exponent), [a])
    gradcheck(F.exp, [a])
    gradcheck(F.log, [a])
    gradcheck(lambda t: -t, [a])


@SETTINGS
@given(seeds, small, small, small, st.booleans())
def test_matmul(seed, m, k, n, batched):
    rng = np.random.default_rng(seed)
    a = rand(rng, *((2, m, k) if batched else (m, k)))
    b = rand(rng, k, n)
    gradcheck(F.matmul, [a, b])


@SETTINGS
@given(seeds, st.sampled_from([None, 0, 1, 2, (0, 2), -1]), st.booleans())
def test_reductions(seed, axis, keepdims):
    rng = np.random.default_rng(seed)
    a = rand(rng, 2, 3, 4)
    gradcheck(lambda t: F.sum(t, axis, keepdims), [a])
    gradcheck(lambda t: F.mean(t, axis, keepdims), [a])
    gradcheck(lambda t: F.max(t, axis, keepdims), [a])   # continuous values: no ties


@SETTINGS
@given(seeds)
def test_shape_ops(seed):
    rng = np.random.default_rng(seed)
    a = rand(rng, 2, 3, 4)
    gradcheck(lambda t: F.reshape(t, 4, -1), [a])
    gradcheck(lambda t: F.transpose(t, 2, 0, 1), [a])
    gradcheck(lambda t: t.T, [a])
    gradcheck(lambda t: F.flatten(t), [a])


@SETTINGS
@given(seeds)
def test_getitem_and_pad(seed):
    rng = np.random.default_rng(seed)
    a = rand(rng, 3, 4)
    gradcheck(lambda t: F.getitem(t, (slice(None), slice(1, None, 2))), [a])
    gradcheck(lambda t: F.getitem(t, (np.array([0, 2, 0]),)), [a])     # row 0 picked twice
    overlapping = (np.array([[0, 1], [1, 2]])[:, None, :, None], np.array([[1, 2], [2, 3]])[None, :, None, :])
    gradcheck(lambda t: F.getitem(t, overlapping), [a])                # 2x2 windows, stride 1
    gradcheck(lambda t: F.pad(t, ((1, 0), (2, 1)), value=3.0), [a])


@SETTINGS
@given(seeds)
def test_relu_and_hardtanh_away_from_kinks(seed):
    rng = np.random.default_rng(seed)
    data = rng.uniform(0.1, 2.0, (3, 4)) * rng.choice([-1, 1], (3, 4))
    data[np.abs(np.abs(data) - 1) < 0.05] = 0.5
    a = ma.Tensor(data, requires_grad=True)
    gradcheck(F.relu, [a])
    gradcheck(F.hardtanh, [a])


@SETTINGS
@given(seeds)
def test_abs_away_from_its_kink_and_sign_is_flat(seed):
    rng = np.random.default_rng(seed)
    a = ma.Tensor(rng.uniform(0.1, 2.0, (3, 4)) * rng.choice([-1, 1], (3, 4)), requires_grad=True)
    gradcheck(F.abs, [a])
    gradcheck(F.sign, [a])                 # flat on each side of 0: a zero gradient
    gradcheck(lambda t: F.abs(t) * F.sign(t), [a])    # = t, through both


def test_abs_and_sign_values_and_their_gradient_at_zero():
    a = ma.Tensor(np.array([-2.0, 0.0, 3.0]), requires_grad=True)
    np.testing.assert_array_equal(F.abs(a).data, [2, 0, 3])
    np.testing.assert_array_equal(F.sign(a).data, [-1, 0, 1])
    F.abs(a).backward(np.array([5.0, 5.0, 5.0]))
    np.testing.assert_array_equal(a.grad, [-5, 0, 5])     # g * sgn(a): the subgradient 0 at the kink
    a.grad = None
    F.sign(a).backward(np.ones(3))
    np.testing.assert_array_equal(a.grad, [0, 0, 0])      # a zero array, not "no gradient"


@SETTINGS
@given(seeds, st.integers(1, 5), st.integers(2, 6))
def test_log_softmax_and_cross_entropy(seed, n, c):
    rng = np.random.default_rng(seed)
    logits = rand(rng, n, c)
    labels = rng.integers(0, c, n)
    gradcheck(lambda t: F.log_softmax(t, axis=1), [logits])
    gradcheck(lambda t: F.cross_entropy(t, labels), [logits])


def test_cross_entropy_value_matches_definition():
    logits = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    labels = np.array([1, 2])
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    expected = -np.log(p[[0, 1], labels]).mean()
    assert F.cross_entropy(ma.Tensor(logits), labels).item() == pytest.approx(expected)
    assert F.cross_entropy(ma.Tensor(logits), ma.Tensor(labels)).item() == pytest.approx(expected)


@SETTINGS
@given(seeds, small, small, st.booleans())
def test_linear(seed, n, k, with_bias):
    rng = np.random.default_rng(seed)
    x, w, b = rand(rng, n, k), rand(rng, 3, k), rand(rng, 3)
    gradcheck(lambda *t: F.linear(*t), [x, w, b] if with_bias else [x, w])


# ------------------------------------------------------------------ sliding windows
def window_case():
    """(N, C_in, H, W, C_out, k, stride, padding) with a kernel that fits the padded input."""
    return st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 6), st.integers(1, 6),
                     st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(0, 2))


@SETTINGS
@given(seeds, window_case(), st.booleans())
def test_conv2d(seed, case, with_bias):
    n, c, h, w, co, k, s, p = case
    assume(k <= h + 2 * p and k <= w + 2 * p)
    rng = np.random.default_rng(seed)
    x, wt, b = rand(rng, n, c, h, w), rand(rng, co, c, k, k), rand(rng, co)
    fn = (lambda x, wt, b: F.conv2d(x, wt, b, s, p)) if with_bias else (lambda x, wt: F.conv2d(x, wt, None, s, p))
    gradcheck(fn, [x, wt, b] if with_bias else [x, wt])


@SETTINGS
@given(seeds, window_case())
def test_adder2d_sign_mode_is_the_exact_gradient_away_from_kinks(seed, case):
    n, c, h, w, co, k, s, p = case
    assume(k <= h + 2 * p and k <= w + 2 * p)
    rng = np.random.default_rng(seed)
    # inputs on a grid of k + 0.25, filters on m + 0.75: every difference X - F, and the
    # padding's 0 - F, is at least 0.25 away from the kink of |.|
    x = ma.Tensor(rng.integers(-3, 3, (n, c, h, w)) + 0.25, requires_grad=True)
    wt = ma.Tensor(rng.integers(-3, 3, (co, c, k, k)) + 0.75, requires_grad=True)
    gradcheck(lambda x, wt: F.adder2d(x, wt, s, p, grad_mode="sign"), [x, wt], eps=1e-3)


@SETTINGS
@given(seeds, small, small, small)
def test_adder_linear_sign_mode(seed, n, k, o):
    rng = np.random.default_rng(seed)
    x = ma.Tensor(rng.integers(-3, 3, (n, k)) + 0.25, requires_grad=True)
    wt = ma.Tensor(rng.integers(-3, 3, (o, k)) + 0.75, requires_grad=True)
    gradcheck(lambda x, wt: F.adder_linear(x, wt, grad_mode="sign"), [x, wt], eps=1e-3)


@SETTINGS
@given(seeds, st.integers(1, 2), st.integers(1, 3), st.integers(2, 7), st.integers(1, 3),
       st.integers(0, 1), st.sampled_from(["max", "avg"]))
def test_pooling(seed, n, c, size, k, p, kind):
    assume(k <= size + 2 * p and p <= k // 2)
    rng = np.random.default_rng(seed)
    x = ma.Tensor(rng.permutation(n * c * size * size).reshape(n, c, size, size) * 0.1,
                  requires_grad=True)  # distinct values: no ties in max pooling
    stride = rng.integers(1, k + 1)
    fn = F.max_pool2d if kind == "max" else F.avg_pool2d
    gradcheck(lambda t: fn(t, k, stride, p), [x])


@SETTINGS
@given(seeds, st.sampled_from([(5, 3), (2, 3, 2, 2), (4, 2, 3, 1)]), st.booleans())
def test_batch_norm_training_mode(seed, shape, affine):
    rng = np.random.default_rng(seed)
    x = rand(rng, *shape)
    c = shape[1]
    gamma, beta = ma.Tensor(rng.uniform(0.5, 2, c), requires_grad=True), rand(rng, c)
    if affine:
        fn = lambda x, g, b: F.batch_norm(x, None, None, g, b, training=True)  # noqa: E731
        gradcheck(fn, [x, gamma, beta], atol=1e-4)
    else:
        gradcheck(lambda x: F.batch_norm(x, None, None, training=True), [x], atol=1e-4)


@SETTINGS
@given(seeds)
def test_batch_norm_eval_mode(seed):
    rng = np.random.default_rng(seed)
    x, gamma, beta = rand(rng, 3, 2, 2, 2), rand(rng, 2), rand(rng, 2)
    mean, var = rng.standard_normal(2), rng.uniform(0.5, 2, 2)
    gradcheck(lambda x, g, b: F.batch_norm(x, mean, var, g, b, training=False), [x, gamma, beta])


def test_batch_norm_matches_definition_and_updates_running_stats():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 3, 4, 4)) * 3 + 1
    rm, rv = np.zeros(3), np.ones(3)
    y = F.batch_norm(ma.Tensor(x), rm, rv, training=True).data
    mu, var = x.mean((0, 2, 3)), x.var((0, 2, 3))
    np.testing.assert_allclose(y, (x - mu[None, :, None, None]) / np.sqrt(var[None, :, None, None] + 1e-5))
    np.testing.assert_allclose(rm, 0.1 * mu)
    count = 8 * 4 * 4
    np.testing.assert_allclose(rv, 0.9 + 0.1 * var * count / (count - 1))
    y_eval = F.batch_norm(ma.Tensor(x), rm, rv, training=False).data
    np.testing.assert_allclose(y_eval, (x - rm[None, :, None, None]) / np.sqrt(rv[None, :, None, None] + 1e-5))
