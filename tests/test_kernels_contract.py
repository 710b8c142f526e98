"""Every backend's contract functions (kernels/contract.py) against one oracle.

The backends: the NumPy reference ("numpy"), the Numba package ("cpu") and its first rung,
the plain loops of ``minadder.kernels.cpu.naive``. The oracle is written here, apart from
all of them: Eq. 2 and its gradients (Eqs. 4-6) broadcast over sliding-window views of
the padded input, in float64. Shapes come from Hypothesis: stride 2, padding, 1x1
filters, C_out not a multiple of the kernels' register blocks, both dtypes.
"""
import importlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minadder import backend
from minadder.kernels import KERNEL_NAMES, contract
from minadder.kernels.geometry import Window

SETTINGS = settings(deadline=None, max_examples=20)
MODULES = ["minadder.kernels.reference", "minadder.kernels.cpu", "minadder.kernels.cpu.naive"]


def _module(name):
    if name != "minadder.kernels.reference":
        pytest.importorskip("numba")
    return importlib.import_module(name)


# ------------------------------------------------------------------------- the oracle
def _views(x, kh, kw, s, p):
    """V[n, c, u, v, i, j] = Xp[n, c, s*u + i, s*v + j] (float64)."""
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (p, p), (p, p)))
    return np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::s, ::s]


def oracle(x, f, g, s, p, mode):
    """(y, dX, dF) of Eq. 2 with the gradients of ``mode``, by broadcasting."""
    kh, kw = f.shape[2:]
    v = _views(x, kh, kw, s, p)
    diff = v[:, None] - f.astype(np.float64)[None, :, :, None, None]    # X - F: (N, T, C, U, V, i, j)
    y = -np.abs(diff).sum(axis=(2, 5, 6))
    d_f = diff if mode == "full" else np.sign(diff)
    e_x = np.clip(-diff, -1, 1) if mode == "full" else np.sign(-diff)
    df = np.einsum("ntuv,ntcuvij->tcij", g, d_f)
    dv = np.einsum("ntuv,ntcuvij->ncuvij", g, e_x)
    ho, wo = y.shape[2:]
    dxp = np.zeros((x.shape[0], x.shape[1], x.shape[2] + 2 * p, x.shape[3] + 2 * p))
    for i in range(kh):
        for j in range(kw):
            dxp[:, :, i:i + s * ho:s, j:j + s * wo:s] += dv[..., i, j]
    return y, dxp[:, :, p:p + x.shape[2], p:p + x.shape[3]], df


@st.composite
def layers(draw):
    """A small layer: (x, weight, stride, padding) with a valid output size."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    n, c, c_out = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 9))
    k = draw(st.sampled_from([1, 2, 3]))
    padding = draw(st.integers(0, 2))
    h = draw(st.integers(max(1, k - 2 * padding), 9))
    w = draw(st.integers(max(1, k - 2 * padding), 9))
    stride = draw(st.sampled_from([1, 2, 3]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if draw(st.booleans()):
        # coarse values: exact ties x == w, where sgn(0) = 0 and HardTanh's corners matter
        x, weight = rng.integers(-3, 4, size=(n, c, h, w)) / 2, rng.integers(-3, 4, size=(c_out, c, k, k)) / 2
    else:
        x, weight = rng.standard_normal((n, c, h, w)), rng.standard_normal((c_out, c, k, k))
    return x.astype(dtype), weight.astype(dtype), stride, padding


def _tol(dtype, terms, *arrays):
    """Rounding budget of a sum of ``terms`` products: a few ulps of its largest partial sum."""
    scale = 1 + max(float(np.abs(a).max(initial=0)) for a in arrays)
    return dict(rtol=0, atol=8 * np.finfo(dtype).eps * terms * scale * scale)


# ---------------------------------------------------------------------------- tests
@pytest.mark.parametrize("name", MODULES[:2])
def test_a_backend_exports_the_contract(name):
    module = _module(name)
    assert all(callable(getattr(module, k)) for k in KERNEL_NAMES)
    assert module.check_available() is None


@pytest.mark.parametrize("name", MODULES[:2])
def test_a_backend_exports_the_optional_kernels_it_has(name):
    """The reference and the cpu package export all of contract.OPTIONAL_KERNEL_NAMES (the cpu
    package from cpu/batch_norm.py and cpu/pooling.py), and backend.kernel hands them out."""
    module = _module(name)
    for kernel in contract.OPTIONAL_KERNEL_NAMES:
        function = getattr(module, kernel, None)
        assert callable(function), f"{name} lacks {kernel}"
        assert backend.kernel(kernel, "numpy" if name.endswith("reference") else "cpu") is function
        if name.endswith(".cpu"):
            assert function.__module__.startswith("minadder.kernels.cpu."), function.__module__


@pytest.mark.parametrize("name", MODULES)
@SETTINGS
@given(layer=layers(), mode=st.sampled_from(contract.GRAD_MODES), need=st.sampled_from([(1, 1), (0, 1), (1, 0)]))
def test_adder2d_equals_the_oracle(name, layer, mode, need):
    module = _module(name)
    x, weight, stride, padding = layer
    win = Window.of(x.shape, weight.shape, stride, padding)
    y, saved = module.adder2d_forward(x, weight, win)
    g = np.random.default_rng(1).standard_normal(win.y_shape).astype(x.dtype)
    y_want, dx_want, dw_want = oracle(x, weight, g, stride, padding, mode)
    assert y.shape == win.y_shape and y.dtype == x.dtype
    np.testing.assert_allclose(y, y_want, **_tol(x.dtype, win.k, x, weight))

    dx, dw = module.adder2d_backward(g, saved, mode, need_input_grad=bool(need[0]), need_weight_grad=bool(need[1]))
    if need[0]:
        assert dx.shape == x.shape and dx.dtype == x.dtype
        np.testing.assert_allclose(dx, dx_want, **_tol(x.dtype, win.c_out * win.k, g))
    else:
        assert dx is None
    if need[1]:
        assert dw.shape == weight.shape and dw.dtype == x.dtype
        np.testing.assert_allclose(dw, dw_want, **_tol(x.dtype, win.l, g, x, weight))
    else:
        assert dw is None


@pytest.mark.parametrize("name", MODULES[:2])
@SETTINGS
@given(layer=layers())
def test_conv2d_equals_the_oracle(name, layer):
    module = _module(name)
    x, weight, stride, padding = layer
    win = Window.of(x.shape, weight.shape, stride, padding)
    y, saved = module.conv2d_forward(x, weight, win)
    v = _views(x, win.kh, win.kw, stride, padding)
    np.testing.assert_allclose(y, np.einsum("ncuvij,tcij->ntuv", v, weight), **_tol(x.dtype, win.k, x, weight))
    g = np.random.default_rng(2).standard_normal(win.y_shape).astype(x.dtype)
    dx, dw = module.conv2d_backward(g, saved, need_input_grad=False)
    assert dx is None
    np.testing.assert_allclose(dw, np.einsum("ntuv,ncuvij->tcij", g, v), **_tol(x.dtype, win.l, g, x))
    # dX against the forward's adjoint: <conv(x'), g> = <x', dX> for every x'
    dx, no_dw = module.conv2d_backward(g, saved, need_weight_grad=False)
    assert no_dw is None
    probe = np.random.default_rng(3).standard_normal(x.shape).astype(x.dtype)
    lhs = np.sum(module.conv2d_forward(probe, weight, win)[0].astype(np.float64) * g)
    rel = 1e-3 if x.dtype == np.float32 else 1e-9
    assert np.sum(probe * dx.astype(np.float64)) == pytest.approx(lhs, rel=rel, abs=rel)
    # dx_plus (the gradient x gathered from its other uses) comes back added, bit for bit
    plus = np.random.default_rng(6).standard_normal(x.shape).astype(x.dtype)
    dx_plus = module.conv2d_backward(g, saved, need_weight_grad=False, dx_plus=plus)[0]
    np.testing.assert_array_equal(dx_plus, dx + plus)


@pytest.mark.parametrize("name", MODULES[1:])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_cpu_kernels_read_views_of_foreign_memory(name, dtype):
    """The torch bridge passes NumPy views of a tensor's memory: arrays that do not own
    their data, read in place (no copy) and left unchanged."""
    module = _module(name)
    rng = np.random.default_rng(4)
    buffer = bytearray(rng.standard_normal(2 * 3 * 6 * 6).astype(dtype).tobytes())
    x = np.frombuffer(buffer, dtype=dtype).reshape(2, 3, 6, 6)       # read-only, not owned
    weight = rng.standard_normal((5, 3, 3, 3)).astype(dtype)[:, :, ::1]
    before = x.copy()
    win = Window.of(x.shape, weight.shape, 1, 1)
    y, saved = module.adder2d_forward(x, weight, win)
    dx, dw = module.adder2d_backward(np.ones_like(y), saved, "full")
    y_want, dx_want, dw_want = oracle(x, weight, np.ones(win.y_shape), 1, 1, "full")
    tol = 1e-3 if dtype == np.float32 else 1e-9
    for got, want in ((y, y_want), (dx, dx_want), (dw, dw_want)):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("name", MODULES)
@SETTINGS
@given(layer=layers(), mode=st.sampled_from(contract.GRAD_MODES), contiguous=st.booleans())
def test_adder2d_backward_adds_dx_plus(name, layer, mode, contiguous):
    """dx_plus (the gradient x gathered from its other uses) comes back added to dX, bit for
    bit dX + dx_plus (IEEE addition is one rounding in any order), and is left unchanged;
    a strided view as dx_plus (which the cpu kernel does not add in its own pass) too."""
    module = _module(name)
    x, weight, stride, padding = layer
    win = Window.of(x.shape, weight.shape, stride, padding)
    y, saved = module.adder2d_forward(x, weight, win)
    rng = np.random.default_rng(5)
    g = rng.standard_normal(win.y_shape).astype(x.dtype)
    plus = rng.standard_normal(x.shape[:-1] + (2 * x.shape[-1],)).astype(x.dtype)
    plus = np.ascontiguousarray(plus[..., ::2]) if contiguous else plus[..., ::2]
    before = plus.copy()
    dx, dw = module.adder2d_backward(g, saved, mode)
    dx_plus, dw_plus = module.adder2d_backward(g, saved, mode, dx_plus=plus)
    np.testing.assert_array_equal(dx_plus, dx + before)
    np.testing.assert_array_equal(dw_plus, dw)
    np.testing.assert_array_equal(plus, before)
