"""The adder layer as plain Numba loops: the first rung from reference.py to the blocked kernels.

Eq. 2 and its gradients written the way the paper states them, one output (or one
filter value) at a time, with no im2col, no blocking, no min identity and no shifted
frame. Only the outermost loop is parallel (``prange``), over (image, channel) pairs in
the forward, filters in dW and images in dX, so that no two threads write the same
number. The blocked kernels (forward.py, grad_input.py, grad_weight.py) compute the same
sums; tests/test_kernels_naive.py holds this module to the reference and the notebook
times both.

With Xp the zero-padded input, s the stride and G = dLoss/dY:

    Y[n, t, u, v]  = -sum_{c,i,j} |Xp[n, c, s*u+i, s*v+j] - F[t, c, i, j]|          (Eq. 2)
    dF[t, c, i, j] =  sum_{n,u,v} G[n, t, u, v] * D(Xp[n, c, s*u+i, s*v+j] - F[t, c, i, j])
    dXp[n, c, s*u+i, s*v+j] += G[n, t, u, v] * E(F[t, c, i, j] - Xp[n, c, s*u+i, s*v+j])

with D = identity (Eq. 5) and E = HardTanh (Eq. 6) in "full" mode, D = E = sgn in "sign"
mode (Eq. 4); dX is dXp without its padding.
"""
import numpy as np
from numba import njit, prange

from .frame import same_dtype


# ``one`` is 1 in the arrays' dtype, passed in so that float32 stays float32 (a Python
# literal 1.0 is float64 in Numba, and would turn the whole loop into float64 code).
@njit(inline="always")
def sgn(z, one):
    """sgn(z) with sgn(0) = 0 and sgn(NaN) = NaN, as np.sign (the product keeps the NaN)."""
    return one if z > 0 else (-one if z < 0 else (one - one) * z)


@njit(inline="always")
def hardtanh(z, one):
    """HardTanh(z) = clip(z, -1, 1)."""
    return min(max(z, -one), one)


@njit(parallel=True, cache=True)
def _forward_loops(xp, f, stride, one, y):
    """Eq. 2: y[n, t, u, v] = -sum_{c,i,j} |xp[n, c, s*u+i, s*v+j] - f[t, c, i, j]|."""
    n_img, c_out, ho, wo = y.shape
    c_in, kh, kw = f.shape[1], f.shape[2], f.shape[3]
    for task in prange(n_img * c_out):
        n, t = task // c_out, task % c_out
        for u in range(ho):
            for v in range(wo):
                total = one - one
                for c in range(c_in):
                    for i in range(kh):
                        for j in range(kw):
                            total += abs(xp[n, c, stride * u + i, stride * v + j] - f[t, c, i, j])
                y[n, t, u, v] = -total


@njit(parallel=True, cache=True)
def _grad_weight_loops(xp, f, g, stride, full, one, df):
    """dF[t, c, i, j] += G[n, t, u, v] * D(X - F) over (n, u, v): Eq. 5 (full) or Eq. 4 (sign)."""
    c_out, c_in, kh, kw = f.shape
    n_img, ho, wo = g.shape[0], g.shape[2], g.shape[3]
    for t in prange(c_out):
        for c in range(c_in):
            for i in range(kh):
                for j in range(kw):
                    for n in range(n_img):
                        for u in range(ho):
                            for v in range(wo):
                                diff = xp[n, c, stride * u + i, stride * v + j] - f[t, c, i, j]
                                df[t, c, i, j] += g[n, t, u, v] * (diff if full else sgn(diff, one))


@njit(parallel=True, cache=True)
def _grad_input_loops(xp, f, g, stride, full, one, dxp):
    """dXp[n, c, s*u+i, s*v+j] += G[n, t, u, v] * E(F - X): Eq. 6 (full) or Eq. 4 (sign)."""
    n_img, c_out, ho, wo = g.shape
    c_in, kh, kw = f.shape[1:]
    for n in prange(n_img):
        for t in range(c_out):
            for u in range(ho):
                for v in range(wo):
                    g_out = g[n, t, u, v]       # this output's gradient, sent to its whole window
                    for c in range(c_in):
                        for i in range(kh):
                            for j in range(kw):
                                a, b = stride * u + i, stride * v + j
                                diff = f[t, c, i, j] - xp[n, c, a, b]
                                dxp[n, c, a, b] += g_out * (hardtanh(diff, one) if full else sgn(diff, one))


def _padded(x, p):
    return np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))


def adder2d_forward(x, weight, win):
    """Eq. 2 on images, as loops: (y, saved) with saved = (the padded input, weight, win)."""
    x, weight = same_dtype(x, weight)
    xp = _padded(x, win.padding)
    y = np.empty(win.y_shape, dtype=x.dtype)
    _forward_loops(xp, weight, win.stride, x.dtype.type(1), y)
    return y, (xp, weight, win)


def adder2d_backward(grad_y, saved, mode, need_input_grad=True, need_weight_grad=True, dx_plus=None):
    """(dX, dF) as loops, "full" (Eqs. 5, 6) or "sign" (Eq. 4); None for one not needed;
    dX + dx_plus if given."""
    xp, weight, win = saved
    xp, weight, g = same_dtype(xp, weight, grad_y)
    full, one = mode == "full", xp.dtype.type(1)
    df = dx = None
    if need_weight_grad:
        df = np.zeros(weight.shape, dtype=xp.dtype)
        _grad_weight_loops(xp, weight, g, win.stride, full, one, df)
    if need_input_grad:
        dxp = np.zeros(xp.shape, dtype=xp.dtype)
        _grad_input_loops(xp, weight, g, win.stride, full, one, dxp)
        p = win.padding
        dx = np.ascontiguousarray(dxp[:, :, p:p + win.h, p:p + win.w])
        if dx_plus is not None:
            dx += dx_plus
    return dx, df
