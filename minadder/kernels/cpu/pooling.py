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


@njit(parallel=True, cache=True)
def _forward_kernel(x, k, y, argmax):
    """x (P, H, W): P planes (image, channel); y, argmax (P, H_out, W_out)."""
    for p in prange(y.shape[0]):
        for u in range(y.shape[1]):
            for v in range(y.shape[2]):
                window = x[p, k * u:k * u + k, k * v:k * v + k]
                best, at = window[0, 0], 0
                for i in range(k):
                    for j in range(k):
                        # strictly greater keeps the first maximum; a NaN beats any number
                        # (value != value is NaN), and nothing beats the first NaN
                        value = window[i, j]
                        if value > best or (value != value and best == best):
                            best, at = value, i * k + j
                y[p, u, v], argmax[p, u, v] = best, at


@njit(parallel=True, cache=True)
def _backward_kernel(g, argmax, k, dx):
    """dx (P, H, W): each window zero but at its argmax, which gets g (P, H_out, W_out)."""
    for p in prange(g.shape[0]):
        dx_p, g_p, argmax_p = dx[p], g[p], argmax[p]
        for u in range(g.shape[1]):
            for v in range(g.shape[2]):
                window = dx_p[k * u:k * u + k, k * v:k * v + k]
                window[:] = 0
                window[argmax_p[u, v] // k, argmax_p[u, v] % k] = g_p[u, v]


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
