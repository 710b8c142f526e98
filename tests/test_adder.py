"""The adder layer: Eq. 2 and both gradient modes against definitions written as plain loops."""
import tracemalloc

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import minadder as ma
from minadder import functional as F
from minadder.kernels import reference as ref

SETTINGS = settings(deadline=None, max_examples=20)

cases = st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 6), st.integers(1, 6),
                  st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(0, 2))


def padded(x, p):
    return np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))


def loops_forward(x, f, s, p):
    """Eq. 2 literally: Y[n,t,u,v] = -sum_{k,i,j} |Xp[n,k,s*u+i,s*v+j] - F[t,k,i,j]|."""
    xp = padded(x, p)
    n, _, hp, wp = xp.shape
    co, ci, d, _ = f.shape
    ho, wo = (hp - d) // s + 1, (wp - d) // s + 1
    y = np.zeros((n, co, ho, wo))
    for b in range(n):
        for t in range(co):
            for u in range(ho):
                for v in range(wo):
                    patch = xp[b, :, s * u:s * u + d, s * v:s * v + d]
                    y[b, t, u, v] = -np.abs(patch - f[t]).sum()
    return y


def loops_backward(x, f, g, s, p, mode):
    """The closed forms of Eqs. 4-6 (proofs/mathematics.md, section 2), one (n, t, u, v) output at a time:
    dF += G * D(X - F) and dX += G * E(F - X) with D, E = (identity, HardTanh) or (sgn, sgn)."""
    xp = padded(x, p)
    d = f.shape[2]
    dxp, df = np.zeros_like(xp), np.zeros_like(f)
    D = np.sign if mode == "sign" else (lambda z: z)
    E = np.sign if mode == "sign" else (lambda z: np.clip(z, -1, 1))
    for b, t, u, v in np.ndindex(g.shape):
        patch = xp[b, :, s * u:s * u + d, s * v:s * v + d]
        df[t] += g[b, t, u, v] * D(patch - f[t])
        dxp[b, :, s * u:s * u + d, s * v:s * v + d] += g[b, t, u, v] * E(f[t] - patch)
    h, w = x.shape[2:]
    return dxp[:, :, p:p + h, p:p + w], df


def draw(seed, case):
    n, c, h, w, co, k, s, p = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w))
    f = rng.standard_normal((co, c, k, k))
    return rng, x, f, s, p


@SETTINGS
@given(st.integers(0, 2**31), cases)
def test_forward_is_eq2(seed, case):
    _, x, f, s, p = draw(seed, case)
    assume(f.shape[2] <= min(x.shape[2:]) + 2 * p)
    y = F.adder2d(ma.Tensor(x), ma.Tensor(f), s, p)
    np.testing.assert_allclose(y.data, loops_forward(x, f, s, p), rtol=1e-12, atol=1e-12)


@SETTINGS
@given(st.integers(0, 2**31), cases, st.sampled_from(["full", "sign"]))
def test_backward_matches_the_closed_forms(seed, case, mode):
    rng, x, f, s, p = draw(seed, case)
    assume(f.shape[2] <= min(x.shape[2:]) + 2 * p)
    xt, ft = ma.Tensor(x, requires_grad=True), ma.Tensor(f, requires_grad=True)
    y = F.adder2d(xt, ft, s, p, grad_mode=mode)
    g = rng.standard_normal(y.shape)
    y.backward(g)
    dx, df = loops_backward(x, f, g, s, p, mode)
    np.testing.assert_allclose(xt.grad, dx, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ft.grad, df, rtol=1e-10, atol=1e-10)


@SETTINGS
@given(st.integers(0, 2**31), st.integers(1, 5), st.integers(1, 40), st.integers(1, 5))
def test_full_mode_dw_is_the_matrix_product_identity(seed, c_out, length, k):
    """dW = G @ X_col.T - W * G.sum(axis=1): the l1 kernel is not needed for dW in full mode."""
    rng = np.random.default_rng(seed)
    cols, w, g = rng.standard_normal((k, length)), rng.standard_normal((c_out, k)), rng.standard_normal((c_out, length))
    identity = g @ cols.T - w * g.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(ref.adder_grad_weight(cols, w, g, "full"), identity, rtol=1e-10, atol=1e-10)


@SETTINGS
@given(st.integers(0, 2**31), cases)
def test_im2col_matches_its_definition(seed, case):
    _, x, f, s, p = draw(seed, case)
    k = f.shape[2]
    assume(k <= min(x.shape[2:]) + 2 * p)
    cols = ref.im2col(x, k, k, s, p)
    xp = padded(x, p)
    n, c = x.shape[:2]
    ho, wo = ref.output_size(x.shape[2], k, s, p), ref.output_size(x.shape[3], k, s, p)
    assert cols.shape == (c * k * k, n * ho * wo)
    for (ci, i, j), (b, u, v) in [((0, 0, 0), (0, 0, 0)), ((c - 1, k - 1, k - 1), (n - 1, ho - 1, wo - 1))]:
        assert cols[(ci * k + i) * k + j, (b * ho + u) * wo + v] == xp[b, ci, s * u + i, s * v + j]


@SETTINGS
@given(st.integers(0, 2**31), cases)
def test_im2col_and_col2im_are_adjoint(seed, case):
    """<im2col(x), c> == <x, col2im(c)>: col2im is exactly the transpose of im2col."""
    rng, x, f, s, p = draw(seed, case)
    k = f.shape[2]
    assume(k <= min(x.shape[2:]) + 2 * p)
    cols = ref.im2col(x, k, k, s, p)
    c = rng.standard_normal(cols.shape)
    lhs = np.sum(cols * c)
    rhs = np.sum(x * ref.col2im(c, x.shape, k, k, s, p))
    assert lhs == pytest.approx(rhs, rel=1e-10, abs=1e-10)


def test_adder_linear_is_an_l1_distance():
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((3, 5)), rng.standard_normal((4, 5))
    y = F.adder_linear(ma.Tensor(x), ma.Tensor(w))
    np.testing.assert_allclose(y.data, -np.abs(x[:, None, :] - w[None]).sum(-1))


def test_chunked_kernels_equal_one_big_chunk(monkeypatch):
    rng = np.random.default_rng(2)
    cols, w, g = rng.standard_normal((7, 50)), rng.standard_normal((3, 7)), rng.standard_normal((3, 50))
    whole = [ref.adder_forward(cols, w), ref.adder_grad_input(cols, w, g, "full"),
             ref.adder_grad_weight(cols, w, g, "sign")]
    monkeypatch.setattr(ref, "CHUNK_ELEMENTS", 50)   # chunks of 2 columns
    chunked = [ref.adder_forward(cols, w), ref.adder_grad_input(cols, w, g, "full"),
               ref.adder_grad_weight(cols, w, g, "sign")]
    for a, b in zip(whole, chunked):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_reference_never_builds_the_cout_k_l_temporary():
    """A (C_out, K, L) broadcast of this layer would need 64*144*8192*4 B = 302 MB."""
    rng = np.random.default_rng(3)
    cols = rng.standard_normal((144, 8192), dtype=np.float32)
    w = rng.standard_normal((64, 144), dtype=np.float32)
    g = rng.standard_normal((64, 8192), dtype=np.float32)
    tracemalloc.start()
    ref.adder_forward(cols, w)
    ref.adder_grad_input(cols, w, g, "full")
    ref.adder_grad_weight(cols, w, g, "sign")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    budget = 2 * ref.CHUNK_ELEMENTS * 4 + 3 * cols.nbytes
    assert peak < budget, f"peak {peak / 2**20:.0f} MB exceeds {budget / 2**20:.0f} MB"
    assert peak < 64 * 144 * 8192 * 4


def test_first_layer_skips_the_input_gradient():
    x = ma.Tensor(np.ones((1, 1, 4, 4)))                          # data: no grad wanted
    w = ma.Tensor(np.zeros((2, 1, 3, 3)), requires_grad=True)
    F.adder2d(x, w).sum().backward()
    assert x.grad is None and w.grad is not None
