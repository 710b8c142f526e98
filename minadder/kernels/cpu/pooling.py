"""Max pooling over non-overlapping k x k windows (stride k, no padding) as parallel Numba loops.

The same two functions as ``../pooling_reference.py`` (read that first), for the case LeNet
and VGG use: there NumPy makes k*k passes over the input, here one task reads each
(image, channel) plane once, keeping per window its maximum and the offset i*k + j of the
first maximum in row-major order (the first NaN, if the window holds one), exactly as the
reference chooses. The backward writes every input pixel once: g at the window's argmax,
zero elsewhere. Other windows (overlapping, padded) and other dtypes go to the reference;
the argmax is recorded in the same form on both paths.
"""
import numpy as np
from numba import njit, prange

from .. import pooling_reference as reference

FLOATS = (np.float32, np.float64)


def _tiled(x, k, stride, padding):
    """Whether the windows tile the input: stride k, no padding, a float dtype."""
    return stride == k and padding == 0 and x.dtype in FLOATS


# Both kernels walk the input a row at a time (x[p, r], a contiguous row), not a window
# at a time: a k x k view per window cost more than the comparisons. k = 2 has its own
# loop of selects on four values (LeNet-5's pooling, 256 x 6 x 28 x 28: forward 2.1 ->
# 0.29 ms, backward 1.9 -> 0.64 ms, 2 threads; NumPy's reference 1.7 and 1.2 ms).
@njit(inline="always")
def _better(value, best):
    """Whether value replaces best: strictly greater (the first maximum stays), or the
    first NaN (value != value is NaN; nothing beats the first NaN)."""
    return value > best or (value != value and best == best)


@njit(parallel=True, cache=True)
def _forward_kernel(x, k, y, argmax):
    """x (P, H, W): P planes (image, channel); y, argmax (P, H_out, W_out)."""
    wo = y.shape[2]
    for p in prange(y.shape[0]):
        for u in range(y.shape[1]):
            best, at = y[p, u], argmax[p, u]
            if k == 2:   # LeNet's and VGG's windows: four values in registers, selects only
                r0, r1 = x[p, 2 * u], x[p, 2 * u + 1]
                for v in range(wo):
                    m, a = r0[2 * v], 0
                    b = r0[2 * v + 1]
                    m, a = (b, 1) if _better(b, m) else (m, a)
                    b = r1[2 * v]
                    m, a = (b, 2) if _better(b, m) else (m, a)
                    b = r1[2 * v + 1]
                    m, a = (b, 3) if _better(b, m) else (m, a)
                    best[v], at[v] = m, a
                continue
            first = x[p, k * u]
            for v in range(wo):
                best[v], at[v] = first[k * v], 0
            # the window's values in row-major order, as the reference visits them
            for i in range(k):
                row = x[p, k * u + i]
                for v in range(wo):
                    for j in range(k):
                        value = row[k * v + j]
                        if _better(value, best[v]):
                            best[v], at[v] = value, i * k + j


@njit(parallel=True, cache=True)
def _backward_kernel(g, argmax, k, dx):
    """dx (P, H, W): each window zero but at its argmax, which gets g (P, H_out, W_out)."""
    wo = g.shape[2]
    for p in prange(g.shape[0]):
        for u in range(g.shape[1]):
            g_u, at = g[p, u], argmax[p, u]
            if k == 2:
                r0, r1 = dx[p, 2 * u], dx[p, 2 * u + 1]
                zero = g_u.dtype.type(0)
                for v in range(wo):
                    a, gv = at[v], g_u[v]
                    r0[2 * v] = gv if a == 0 else zero
                    r0[2 * v + 1] = gv if a == 1 else zero
                    r1[2 * v] = gv if a == 2 else zero
                    r1[2 * v + 1] = gv if a == 3 else zero
                continue
            for i in range(k):
                row = dx[p, k * u + i]
                for v in range(wo):
                    for j in range(k):
                        row[k * v + j] = g_u[v] if at[v] == i * k + j else 0


def _planes(a):
    """(N, C, H, W) as contiguous (N*C, H, W): the kernels' tasks."""
    return np.ascontiguousarray(a).reshape((-1,) + a.shape[2:])


def max_pool2d_forward(x, k, stride, padding):
    """(y, argmax), as pooling_reference.max_pool2d_forward."""
    if not _tiled(x, k, stride, padding):
        return reference.max_pool2d_forward(x, k, stride, padding)
    n, c, h, w = x.shape
    y = np.empty((n, c, h // k, w // k), dtype=x.dtype)
    argmax = np.empty(y.shape, dtype=reference.offset_dtype(k))
    _forward_kernel(_planes(x), k, _planes(y), _planes(argmax))
    return y, argmax


def max_pool2d_backward(g, argmax, x_shape, k, stride, padding):
    """dx (x_shape), as pooling_reference.max_pool2d_backward."""
    if not _tiled(g, k, stride, padding):
        return reference.max_pool2d_backward(g, argmax, x_shape, k, stride, padding)
    n, c, h, w = x_shape
    # rows and columns past the last whole window get no gradient: zeros, unless there are none
    dx = (np.empty if h % k == 0 and w % k == 0 else np.zeros)(x_shape, dtype=g.dtype)
    _backward_kernel(_planes(g), _planes(argmax), k, _planes(dx))
    return dx
