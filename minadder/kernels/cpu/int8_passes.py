"""The passes around the integer SAD kernel, as one parallel Numba loop each.

An int8 adder layer (minadder/int8/layers.py) turns its float32 input into codes,

    q = clip(rint(x / s) + z, 0, top)                 (uint8)

and its int32 sums into float32 outputs with the batch norm folded in,

    y[n, t, ...] = float32(sad[n, t, ...]) * rescale[t] + bias[t]

In NumPy each is a chain of whole-array operations with a temporary each (five for the
codes); here each is one pass over the data, with the same float32 operations in the same
order, so the results are bit for bit those of the NumPy expressions (no fastmath: no
fused multiply-add).
"""
import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def _codes_kernel(flat, scale, offset, top, out):
    for i in prange(flat.shape[0]):
        q = np.rint(flat[i] / scale) + offset
        out[i] = np.uint8(min(max(q, np.float32(0)), top))


def codes(values, scale, offset, top):
    """uint8 clip(rint(values / scale) + offset, 0, top) of float32 ``values``, any shape."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    out = np.empty(values.shape, dtype=np.uint8)
    _codes_kernel(values.reshape(-1), np.float32(scale), np.float32(offset), np.float32(top), out.reshape(-1))
    return out


@njit(parallel=True, cache=True)
def _affine_kernel(sums, rescale, bias, out):
    n, c, p = sums.shape
    for task in prange(n * c):
        i, t = task // c, task % c
        a, b = rescale[t], bias[t]
        src, dst = sums[i, t], out[i, t]
        for j in range(p):
            dst[j] = np.float32(src[j]) * a + b


def affine(sums, rescale, bias):
    """float32(sums) * rescale[t] + bias[t] per channel t (axis 1) of ``sums`` (N, C, ...), int32 or float32."""
    sums = np.ascontiguousarray(sums)
    out = np.empty(sums.shape, dtype=np.float32)
    n, c = sums.shape[:2]
    _affine_kernel(sums.reshape(n, c, -1), np.asarray(rescale, np.float32), np.asarray(bias, np.float32),
                   out.reshape(n, c, -1))
    return out
