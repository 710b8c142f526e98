"""The optional kernels (contract.OPTIONAL_KERNEL_NAMES): batch norm, max pooling, ReLU and the
sum of two arrays in Numba (minadder/kernels/cpu/batch_norm.py, pooling.py, relu.py,
addition.py) against their NumPy definitions (minadder/kernels/batch_norm_reference.py,
pooling_reference.py, relu_reference.py, addition_reference.py), and ``backend.kernel``,
which hands a layer the active backend's kernel or the reference's. The layers built on
them are held to their definitions from primitives in tests/test_fused_layers.py.
"""
import numpy as np
import pytest

pytest.importorskip("numba")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from minadder import backend  # noqa: E402
from minadder.kernels import batch_norm_reference as bn_ref, pooling_reference as pool_ref  # noqa: E402
from minadder.kernels import addition_reference as add_ref, relu_reference as relu_ref  # noqa: E402
from minadder.kernels.contract import OPTIONAL_KERNEL_NAMES  # noqa: E402
from minadder.kernels.cpu import addition as add_cpu, batch_norm as bn_cpu, pooling as pool_cpu  # noqa: E402
from minadder.kernels.cpu import relu as relu_cpu  # noqa: E402

SETTINGS = settings(deadline=None, max_examples=30)


# ===================================================================== batch norm
@st.composite
def batch_norm_cases(draw):
    """(x, weight or None, bias or None, mean, var, training): rank 4 (the kernels' case:
    (N, C) inputs go to the reference, see the test below), a channel offset."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    n, c = draw(st.integers(1, 5)), draw(st.integers(1, 11))    # 8-11: tasks of several channels
    shape = (n, c, draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    training = draw(st.booleans()) and n * int(np.prod(shape[2:])) >= 2
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    offset = draw(st.sampled_from([0.0, 3.0, -20.0]))
    x = (rng.standard_normal(shape) * rng.uniform(0.1, 4) + offset).astype(dtype)
    weight = rng.uniform(-2, 2, c).astype(dtype) if draw(st.booleans()) else None
    bias = rng.standard_normal(c).astype(dtype) if draw(st.booleans()) else None
    mean, var = (rng.standard_normal(c) + offset).astype(dtype), rng.uniform(0.2, 3, c).astype(dtype)
    return x, weight, bias, mean, var, training


def _close(got, want, dtype, count, scale=1.0):
    """Equal up to the rounding of a sum of ``count`` terms of size ``scale`` (a few ulps each)."""
    eps = np.finfo(dtype).eps
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=16 * eps, atol=16 * eps * count * scale)


@SETTINGS
@given(batch_norm_cases())
def test_batch_norm_forward_equals_the_reference(case):
    """y and the statistics as the reference's, and the xhat that the cpu forward's saved x
    gives back (the cpu kernels do not write xhat; their backward computes it again)."""
    x, weight, bias, mean, var, training = case
    stats = (None, None) if training else (mean, var)
    y, saved, *statistics = bn_cpu.batch_norm_forward(x, weight, bias, *stats, eps=1e-5)
    want_y, want_saved, *want_statistics = bn_ref.batch_norm_forward(x, weight, bias, *stats, eps=1e-5)
    assert isinstance(saved, bn_cpu.Centred) and np.shares_memory(saved.x, x)   # x itself, not a copy
    got = (y, bn_cpu._normalised(saved, x.shape).xhat, saved.inv_std, *statistics)
    want = (want_y, want_saved.xhat, want_saved.inv_std, *want_statistics)
    count = x.size // x.shape[1]
    # x - mean cancels |x| down to |x - mean|: an error in the mean grows by |x| / std in xhat
    spread = 1 + float(np.abs(x).max()) * float(want_saved.inv_std.max())
    affine = 1 + (0 if weight is None else float(np.abs(weight).max())) + (0 if bias is None else 1)
    names = ("y", "xhat", "inv_std", "mean", "var")
    scales = (spread * affine, spread, spread, float(np.abs(x).max()), spread / float(want_saved.inv_std.min()) ** 2)
    for name, a, b, scale in zip(names, got, want, scales):
        try:
            _close(a, b, x.dtype, count, scale)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from None
    if not training:
        assert statistics[0] is mean and statistics[1] is var     # evaluation hands back the statistics it used


@SETTINGS
@given(batch_norm_cases())
def test_batch_norm_backward_equals_the_reference(case):
    """Each backward given its own forward's saved: the cpu one computes xhat again from x."""
    x, weight, _, mean, var, training = case
    stats = (None, None) if training else (mean, var)
    saved = bn_cpu.batch_norm_forward(x, weight, None, *stats)[1]
    want_saved = bn_ref.batch_norm_forward(x, weight, None, *stats)[1]
    g = np.random.default_rng(7).standard_normal(x.shape).astype(x.dtype)
    got = bn_cpu.batch_norm_backward(g, saved, weight, training)
    want = bn_ref.batch_norm_backward(g, want_saved, weight, training)
    count = x.size // x.shape[1]
    xhat, inv_std = want_saved
    size = float(np.abs(g).max()) * (1 + float(np.abs(xhat).max()))
    scale = float(inv_std.max()) * (1 if weight is None else float(np.abs(weight).max()))
    # the two xhat differ by the rounding of the two means, up to |x| eps inv_std (as above)
    spread = 1 + float(np.abs(x).max()) * float(inv_std.max())
    for name, a, b, s in zip(("dx", "dweight", "dbias"), got, want, (size * scale * spread, size * spread, size)):
        try:
            _close(a, b, x.dtype, count, s)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from None


@pytest.mark.parametrize("group", [1, 3, 7])
def test_batch_norm_in_groups_of_channels_is_the_reference(group, monkeypatch):
    """Tasks of 1, 3 (the last one of 1) or all 7 channels: the same statistics, y and
    gradients, with a residual and the ReLU's mask read from y."""
    monkeypatch.setattr(bn_cpu, "_group_size", lambda x, threads: group)
    rng = np.random.default_rng(group)
    x = rng.standard_normal((6, 7, 5, 3)).astype(np.float32)
    weight, bias = rng.uniform(0.5, 2, 7).astype(np.float32), rng.standard_normal(7).astype(np.float32)
    r, g = (rng.standard_normal(x.shape).astype(np.float32) for _ in range(2))
    y, saved, mean, var = bn_cpu.batch_norm_forward(x, weight, bias, relu=True, residual=r)
    want_y, want_saved, want_mean, want_var = bn_ref.batch_norm_forward(x, weight, bias, relu=True, residual=r)
    for a, b in ((y, want_y), (mean, want_mean), (var, want_var)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    got = bn_cpu.batch_norm_backward(g, saved, weight, True, y, residual=True)
    want = bn_ref.batch_norm_backward(g, want_saved, weight, True, want_y, residual=True)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_the_cpu_backward_takes_the_references_saved():
    """A Normalised saved (the reference's, as the cpu forward returns for inputs it leaves
    to the reference) goes to the reference's backward."""
    rng = np.random.default_rng(4)
    x, g = rng.standard_normal((3, 2, 4, 4)).astype(np.float32), rng.standard_normal((3, 2, 4, 4)).astype(np.float32)
    saved = bn_ref.batch_norm_forward(x)[1]
    for a, b in zip(bn_cpu.batch_norm_backward(g, saved), bn_ref.batch_norm_backward(g, saved)):
        np.testing.assert_array_equal(a, b)


@SETTINGS
@given(batch_norm_cases(), st.sampled_from([0.0, 0.5, -0.5]))
def test_batch_norm_with_its_relu_is_the_reference_with_its_relu(case, shift):
    """relu=True: y = max(0, y) written by the forward's pass; the backward, given that y,
    takes g through the ReLU in its own passes. Against the reference's (which calls
    relu_reference), the outputs exactly where the ReLU cut, the gradients to rounding."""
    x, weight, bias, mean, var, training = case
    stats = (None, None) if training else (mean, var)
    bias = None if bias is None else (bias + shift).astype(x.dtype)
    got = bn_cpu.batch_norm_forward(x, weight, bias, *stats, eps=1e-5, relu=True)
    want = bn_ref.batch_norm_forward(x, weight, bias, *stats, eps=1e-5, relu=True)
    plain = bn_cpu.batch_norm_forward(x, weight, bias, *stats, eps=1e-5)
    np.testing.assert_array_equal(got[0], np.maximum(plain[0], 0))   # the same pass, then max(0, .)
    np.testing.assert_array_equal(got[0] == 0, want[0] == 0)
    g = np.random.default_rng(3).standard_normal(x.shape).astype(x.dtype)
    # the cpu backward takes the ReLU's mask from x again (weight * xhat + bias > 0): the same
    # bits as the forward's y > 0, so the gradients equal those of g masked by y first
    fused = bn_cpu.batch_norm_backward(g, got[1], weight, training, y=got[0])
    apart = bn_cpu.batch_norm_backward(relu_ref.relu_backward(g, got[0]), got[1], weight, training)
    for a, b in zip(fused, apart):
        np.testing.assert_array_equal(a, b)     # masking inside the passes = masking first


@SETTINGS
@given(batch_norm_cases(), st.booleans())
def test_the_residual_backward_returns_g_through_the_relu(case, relu):
    """residual=True: a fourth result, the residual's gradient g * 1[y > 0] (g itself
    without the ReLU), written by the cpu kernel in the pass that writes dx: equal to
    relu_backward's, and dx, dweight, dbias as without it, on both backends."""
    x, weight, bias, mean, var, training = case
    stats = (None, None) if training else (mean, var)
    r = np.random.default_rng(5).standard_normal(x.shape).astype(x.dtype)
    g = np.random.default_rng(6).standard_normal(x.shape).astype(x.dtype)
    for bn, relu_module in ((bn_cpu, relu_cpu), (bn_ref, relu_ref)):
        y, saved = bn.batch_norm_forward(x, weight, bias, *stats, eps=1e-5, relu=relu, residual=r)[:2]
        mask_y = y if relu else None
        *grads, g_residual = bn.batch_norm_backward(g, saved, weight, training, mask_y, residual=True)
        g_want = relu_module.relu_backward(g, y) if relu else g
        np.testing.assert_array_equal(g_residual, g_want)
        for a, b in zip(grads, bn.batch_norm_backward(g_want, saved, weight, training)):
            np.testing.assert_array_equal(a, b)


@SETTINGS
@given(batch_norm_cases(), st.booleans())
def test_batch_norm_with_a_residual_adds_it_before_the_relu(case, relu):
    """residual: y = (weight * xhat + bias) + residual, then the ReLU, in the forward's one
    pass: the same float operations in the same order as y computed first and the residual
    added after (and as the reference's, up to its statistics' rounding)."""
    x, weight, bias, mean, var, training = case
    stats = (None, None) if training else (mean, var)
    r = np.random.default_rng(5).standard_normal(x.shape).astype(x.dtype) * 2
    got = bn_cpu.batch_norm_forward(x, weight, bias, *stats, eps=1e-5, relu=relu, residual=r)
    plain = bn_cpu.batch_norm_forward(x, weight, bias, *stats, eps=1e-5)
    added = plain[0] + r
    np.testing.assert_array_equal(got[0], np.maximum(added, 0) if relu else added)
    for a, b in zip((got[1].inv_std, *got[2:]), (plain[1].inv_std, *plain[2:])):   # the statistics: untouched
        np.testing.assert_array_equal(a, b)
    want = bn_ref.batch_norm_forward(x, weight, bias, *stats, eps=1e-5, relu=relu, residual=r)
    ref_plain = bn_ref.batch_norm_forward(x, weight, bias, *stats, eps=1e-5)
    np.testing.assert_array_equal(want[0], np.maximum(ref_plain[0] + r, 0) if relu else ref_plain[0] + r)
    if weight is None and bias is None:
        assert want[1].xhat is not want[0]                         # the reference did not add into xhat


def test_batch_norm_of_fully_connected_features_is_the_references(monkeypatch):
    """(N, C) inputs (a channel is a column) run NumPy's passes along the rows: the kernels are not called."""
    monkeypatch.setattr(bn_cpu, "_forward_kernel", None)
    monkeypatch.setattr(bn_cpu, "_backward_kernel", None)
    x = np.random.default_rng(2).standard_normal((6, 5)).astype(np.float32)
    got, want = bn_cpu.batch_norm_forward(x), bn_ref.batch_norm_forward(x)
    for a, b in zip(_flat(got), _flat(want)):
        np.testing.assert_array_equal(a, b)
    g = np.ones_like(x)
    for a, b in zip(bn_cpu.batch_norm_backward(g, got[1]), bn_ref.batch_norm_backward(g, want[1])):
        np.testing.assert_array_equal(a, b)


def _flat(results):
    """A forward's results with its saved spread out: (y, xhat, inv_std, mean, var) of the reference's."""
    y, (xhat, inv_std), mean, var = results
    return y, xhat, inv_std, mean, var


def test_batch_norm_of_mixed_dtypes_is_the_references():
    """Operands the kernels do not take (here a float64 weight for float32 x) go to the reference."""
    rng = np.random.default_rng(0)
    x, weight = rng.standard_normal((4, 3, 2, 2)).astype(np.float32), rng.standard_normal(3)
    got, want = bn_cpu.batch_norm_forward(x, weight), bn_ref.batch_norm_forward(x, weight)
    assert got[0].dtype == np.float64                 # y: NumPy's promotion, as the reference's
    for a, b in zip(_flat(got), _flat(want)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_batch_norm_normalises_each_channel():
    """Against Eq. 10 itself: every channel of xhat has mean 0 and variance 1 (training)."""
    spread = np.array([1, 10, 100]).reshape(1, 3, 1, 1)
    x = (np.random.default_rng(1).standard_normal((8, 3, 5, 5)) * spread + 1000).astype(np.float32)
    y, saved, mean, var = bn_cpu.batch_norm_forward(x, np.full(3, 2, np.float32), np.ones(3, np.float32))
    xhat = bn_cpu._normalised(saved, x.shape).xhat
    # x - mean is float32: the mean, rounded to float32, is off by up to |1000| eps / 2 = 6e-5 of a std
    np.testing.assert_allclose(xhat.mean(axis=(0, 2, 3), dtype=np.float64), 0, atol=1e-4)
    np.testing.assert_allclose(xhat.var(axis=(0, 2, 3), dtype=np.float64), 1, rtol=1e-4)
    np.testing.assert_allclose(var, x.astype(np.float64).var(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_array_equal(y, xhat * np.float32(2) + np.float32(1))


# ==================================================================== max pooling
@st.composite
def pool_cases(draw):
    """(x, k, stride, padding): coarse values (many ties), sometimes NaN and infinities."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    tiled = draw(st.booleans())   # the kernels' case: 2 x 2 windows, stride 2, no padding
    k = 2 if tiled else draw(st.integers(1, 3))
    stride, padding = (2, 0) if tiled else (draw(st.integers(1, 3)), draw(st.integers(0, k // 2)))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)),
             draw(st.integers(max(1, k - 2 * padding), 7)), draw(st.integers(max(1, k - 2 * padding), 7)))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.integers(-2, 3, size=shape).astype(dtype)
    for special in draw(st.lists(st.sampled_from([np.nan, np.inf, -np.inf]), max_size=3)):
        x[tuple(rng.integers(0, s) for s in shape)] = special
    return x, k, stride, padding


@SETTINGS
@given(pool_cases())
def test_max_pool2d_equals_the_reference_ties_and_nan_included(case):
    x, k, stride, padding = case
    y, argmax = pool_cpu.max_pool2d_forward(x, k, stride, padding)
    y_want, argmax_want = pool_ref.max_pool2d_forward(x, k, stride, padding)
    np.testing.assert_array_equal(y, y_want)          # NaN where the reference has NaN
    assert y.dtype == x.dtype and argmax.dtype == argmax_want.dtype
    np.testing.assert_array_equal(argmax, argmax_want)
    g = np.random.default_rng(3).standard_normal(y.shape).astype(x.dtype)
    dx = pool_cpu.max_pool2d_backward(g, argmax, x.shape, k, stride, padding)
    dx_want = pool_ref.max_pool2d_backward(g, argmax_want, x.shape, k, stride, padding)
    assert dx.shape == x.shape and dx.dtype == x.dtype
    np.testing.assert_array_equal(dx, dx_want)        # one value copied per pixel: exact


def test_max_pool2d_gives_a_tie_to_the_first_maximum_and_a_window_to_its_first_nan():
    x = np.array([[[[0, 5, 7, 7, 1, np.nan], [1, 5, 7, 7, np.nan, 2]]]], dtype=np.float32)
    y, argmax = pool_cpu.max_pool2d_forward(x, 2, 2, 0)
    np.testing.assert_array_equal(y, [[[[5, 7, np.nan]]]])
    np.testing.assert_array_equal(argmax, [[[[1, 0, 1]]]])
    dx = pool_cpu.max_pool2d_backward(np.ones_like(y), argmax, x.shape, 2, 2, 0)
    np.testing.assert_array_equal(dx, [[[[0, 1, 1, 0, 0, 1], [0, 0, 0, 0, 0, 0]]]])


# ===================================================================== ReLU
def test_relu_kernels_keep_nan_as_the_reference_does():
    """NaN inputs stay NaN; a NaN upstream gradient stays NaN even where the mask is 0
    (NaN * 0), as NumPy's g * (y > 0) gives."""
    x = np.array([np.nan, -1, -0.0, 0, 2, -np.inf, np.inf], dtype=np.float32)
    y = relu_cpu.relu_forward(x)
    np.testing.assert_array_equal(y, relu_ref.relu_forward(x))
    assert not np.signbit(y).any()
    g = np.array([1, np.nan, 3, np.nan, 5, 6, np.nan], dtype=np.float32)
    dx = relu_cpu.relu_backward(g, y)            # y = NaN is not > 0: its gradient is 0 too
    np.testing.assert_array_equal(dx, [0, np.nan, 0, np.nan, 5, 0, np.nan])
    np.testing.assert_array_equal(dx, relu_ref.relu_backward(g, y))


def test_relu_kernels_take_other_layouts_and_dtypes_through_the_reference():
    x = np.arange(-6, 6, dtype=np.float32).reshape(3, 4).T         # not C-contiguous
    np.testing.assert_array_equal(relu_cpu.relu_forward(x), np.maximum(x, 0))
    xi = np.arange(-3, 3)                                          # int64
    assert relu_cpu.relu_forward(xi).dtype == xi.dtype
    g = np.ones((4, 3), np.float64)                                # g's dtype is not y's
    np.testing.assert_array_equal(relu_cpu.relu_backward(g, x), g * (x > 0))


# ===================================================================== the sum of two arrays
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [1, 7, add_cpu.CHUNK + 5, 3 * add_cpu.CHUNK])
def test_add_kernel_is_numpys_sum_bit_for_bit(dtype, size):
    """Chunks of any length (one, several, a part of one), infinities and NaN: a + b exactly."""
    rng = np.random.default_rng(size)
    a, b = (rng.standard_normal(size) * 1e3).astype(dtype), rng.standard_normal(size).astype(dtype)
    a[::97], b[::89], b[::101] = np.inf, -np.inf, np.nan
    got = add_cpu.add(a.reshape(size, 1), b.reshape(size, 1))
    assert got.shape == (size, 1) and got.dtype == dtype
    with np.errstate(invalid="ignore"):             # inf + -inf
        np.testing.assert_array_equal(got.reshape(-1), a + b)
        np.testing.assert_array_equal(got, add_ref.add(a.reshape(size, 1), b.reshape(size, 1)))


def test_add_kernel_takes_other_layouts_and_dtypes_through_the_reference():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(add_cpu.add(a.T, a.T), 2 * a.T)            # not C-contiguous
    got = add_cpu.add(a, a.astype(np.float64))                                # two dtypes: NumPy's promotion
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, 2 * a)


# ================================================================ backend.kernel
def test_the_reference_exports_every_optional_kernel():
    for name in OPTIONAL_KERNEL_NAMES:
        module = next(m for prefix, m in (("batch_norm", bn_ref), ("max_pool", pool_ref), ("relu", relu_ref),
                                          ("add", add_ref)) if name.startswith(prefix))
        assert backend.kernel(name, "numpy") is module.__dict__[name]


def test_a_backend_without_an_optional_kernel_gets_the_references(monkeypatch):
    """As the cuda backend does: here the cpu package's first rung, naive.py, which has none."""
    monkeypatch.setitem(backend.BACKENDS, "bare", "minadder.kernels.cpu.naive")
    monkeypatch.setattr(backend, "_loaded", dict(backend._loaded))
    assert backend.kernel("adder2d_forward", "bare").__module__ == "minadder.kernels.cpu.naive"
    assert backend.kernel("batch_norm_forward", "bare") is bn_ref.batch_norm_forward
    assert backend.kernel("max_pool2d_backward", "bare") is pool_ref.max_pool2d_backward


def test_an_unknown_kernel_name_is_refused():
    with pytest.raises(ValueError, match=r"unknown kernel 'batch_norm'; kernels: check_available, "):
        backend.kernel("batch_norm")
