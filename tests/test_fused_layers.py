"""The fused max_pool2d, batch_norm and relu (tuned for memory and threads) against their
readable definitions written with primitives (relu's: the primitive ops.relu): the same values and the same gradients, on the
NumPy reference and on the cpu backend (its Numba kernels, minadder/kernels/cpu/)."""
import importlib.util

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import minadder as ma
from minadder import functional as F

SETTINGS = settings(deadline=None, max_examples=25)
seeds = st.integers(0, 2**31 - 1)
on_each_backend = pytest.mark.parametrize(
    "backend_name", ["numpy"] + (["cpu"] if importlib.util.find_spec("numba") else []))


def values_and_grads(fn, arrays, upstream):
    """fn's output and the gradients of <fn(...), upstream> for fresh leaves made from arrays."""
    leaves = [ma.Tensor(a.copy(), requires_grad=True) for a in arrays]
    out = fn(*leaves)
    out.backward(upstream)
    return out.data, [t.grad for t in leaves]


def assert_same(fused, readable, rtol):
    (out_a, grads_a), (out_b, grads_b) = fused, readable
    assert out_a.dtype == out_b.dtype
    np.testing.assert_allclose(out_a, out_b, rtol=rtol, atol=rtol)
    for ga, gb in zip(grads_a, grads_b):
        np.testing.assert_allclose(ga, gb, rtol=rtol, atol=rtol)


@on_each_backend
@SETTINGS
@given(seeds, st.integers(1, 2), st.integers(1, 3), st.integers(2, 7), st.integers(1, 3),
       st.integers(1, 3), st.integers(0, 1), st.sampled_from([np.float32, np.float64]))
def test_max_pool2d_equals_its_definition(backend_name, seed, n, c, size, k, stride, p, dtype):
    assume(k <= size + 2 * p and p <= k // 2)
    rng = np.random.default_rng(seed)
    # distinct values: on ties the two give the gradient to different maxima
    x = (rng.permutation(n * c * size * size).reshape(n, c, size, size) * 0.1 - 1).astype(dtype)
    out_shape = F.max_pool2d(ma.Tensor(x), k, stride, p).shape
    g = rng.standard_normal(out_shape).astype(dtype)
    with ma.use_backend(backend_name):
        fused = values_and_grads(lambda t: F.max_pool2d(t, k, stride, p), [x], g)
    readable = values_and_grads(lambda t: F.max_pool2d_from_primitives(t, k, stride, p), [x], g)
    np.testing.assert_array_equal(fused[0], readable[0])       # picking a maximum is exact;
    assert_same(fused, readable, rtol=1e-6 if dtype == np.float32 else 1e-14)  # overlaps sum in another order


@on_each_backend
def test_max_pool2d_gives_a_tie_to_its_first_maximum(backend_name):
    """As PyTorch (and argmax) do: the first of equal maxima, in row-major window order."""
    x = ma.Tensor(np.array([[[[0., 5., 7., 7.], [1., 5., 7., 7.]]]]), requires_grad=True)
    with ma.use_backend(backend_name):
        F.max_pool2d(x, 2).sum().backward()
    np.testing.assert_array_equal(x.grad, [[[[0, 1, 1, 0], [0, 0, 0, 0]]]])


@on_each_backend
@SETTINGS
@given(seeds, st.sampled_from([(6, 3), (2, 3, 2, 2), (4, 2, 3, 1), (3, 4, 2, 3)]), st.booleans(),
       st.booleans(), st.sampled_from([np.float32, np.float64]), st.booleans())
def test_batch_norm_equals_its_definition(backend_name, seed, shape, training, affine, dtype, relu):
    """relu=True: the fused batch norm + ReLU against ops.relu of the definition."""
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    weight, bias = rng.uniform(0.5, 2, c).astype(dtype), rng.standard_normal(c).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    stats0 = rng.standard_normal(c).astype(dtype), rng.uniform(0.5, 2, c).astype(dtype)

    def run(batch_norm):
        running_mean, running_var = stats0[0].copy(), stats0[1].copy()

        def fn(x, *affine_params):
            return batch_norm(x, running_mean, running_var, *affine_params, training=training,
                              momentum=0.1, eps=1e-5)
        result = values_and_grads(fn, [x, weight, bias] if affine else [x], g)
        return result, (running_mean, running_var)

    with ma.use_backend(backend_name):
        fused, fused_stats = run(lambda *a, **k: F.batch_norm(*a, **k, relu=relu))
    readable, readable_stats = run(lambda *a, **k: (lambda y: ma.ops.relu(y) if relu else y)(
        F.batch_norm_from_primitives(*a, **k)))
    if relu:   # only examples where the ReLU cut some and kept some (biases near -2.5 can cut all)
        assume((fused[0] == 0).any() and (fused[0] > 0).any())
    rtol = 1e-4 if dtype == np.float32 else 1e-10
    assert_same(fused, readable, rtol)
    for a, b in zip(fused_stats, readable_stats):                 # the running statistics too
        np.testing.assert_allclose(a, b, rtol=rtol)
    if training:
        assert not np.allclose(fused_stats[0], stats0[0])         # and they were updated


@on_each_backend
@SETTINGS
@given(seeds, st.sampled_from([(2, 3, 2, 2), (4, 2, 3, 1), (3, 4, 2, 3)]), st.booleans(),
       st.sampled_from([np.float32, np.float64]), st.booleans())
def test_batch_norm_with_a_residual_equals_its_definition(backend_name, seed, shape, training, dtype, relu):
    """F.batch_norm(x, ..., relu, residual=r), ResNet's block end in one layer, against
    relu(definition(x) + r) written with primitives: values and the gradients of x, the
    affine parameters and r (the residual's: the upstream gradient through the ReLU)."""
    rng = np.random.default_rng(seed)
    c = shape[1]
    x, r = (rng.standard_normal(shape) * 3 + 1).astype(dtype), rng.standard_normal(shape).astype(dtype)
    r.flat[0], r.flat[-1] = -100, 100     # the ReLU both stops and passes, whatever was drawn
    weight, bias = rng.uniform(0.5, 2, c).astype(dtype), rng.standard_normal(c).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    stats = rng.standard_normal(c).astype(dtype), rng.uniform(0.5, 2, c).astype(dtype)

    def fused(x, weight, bias, r):
        return F.batch_norm(x, stats[0].copy(), stats[1].copy(), weight, bias, training=training, relu=relu,
                            residual=r)

    def readable(x, weight, bias, r):
        y = F.batch_norm_from_primitives(x, stats[0].copy(), stats[1].copy(), weight, bias, training=training) + r
        return ma.ops.relu(y) if relu else y
    with ma.use_backend(backend_name):
        got = values_and_grads(fused, [x, weight, bias, r], g)
    want = values_and_grads(readable, [x, weight, bias, r], g)
    if relu:
        assert (got[0] == 0).any() and (got[0] > 0).any()
    assert_same(got, want, 1e-4 if dtype == np.float32 else 1e-10)
    with pytest.raises(ValueError, match="residual must have the input's shape"):
        F.batch_norm(ma.Tensor(x), *stats, training=False, residual=ma.Tensor(r[:1, :1]))


@on_each_backend
@SETTINGS
@given(seeds, st.sampled_from([(3,), (2, 5), (2, 3, 4, 5), (1, 1, 70, 1000)]), st.sampled_from([np.float32, np.float64]))
def test_relu_equals_the_primitive(backend_name, seed, shape, dtype):
    """F.relu (layers.FusedReLU, the backend's kernels) and ops.relu: the same values and
    gradients bit for bit, zeros and negative zeros included; the largest shape spans
    several of the cpu kernel's chunks."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    x.reshape(-1)[::7] = 0
    x.reshape(-1)[::11] = -0.0
    g = rng.standard_normal(shape).astype(dtype)
    with ma.use_backend(backend_name):
        fused = values_and_grads(F.relu, [x], g)
    readable = values_and_grads(ma.ops.relu, [x], g)
    np.testing.assert_array_equal(fused[0], readable[0])
    np.testing.assert_array_equal(np.signbit(fused[0]), np.signbit(readable[0]))
    np.testing.assert_array_equal(fused[1][0], readable[1][0])
    assert fused[0].dtype == fused[1][0].dtype == dtype
