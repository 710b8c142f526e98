"""ReLU and its backward (``../relu_reference.py``) as parallel Numba passes.

NumPy runs each on one thread, and its backward ``g * (y > 0)`` writes a mask before the
product: in a ResNet-20 step the 19 ReLUs took 17 ms of about 300 that way. Here each is one
pass over memory in chunks, one chunk per task, with NumPy's results: y = x where x > 0
or x is NaN, else +0 (np.maximum(-0.0, 0) is +0 too), and g * 1 or g * 0 (so a NaN in g
stays NaN where the mask is 0, as in the reference). Other dtypes, and arrays that are
not C-contiguous, go to the reference.
"""
import numpy as np
from numba import njit, prange

from .. import relu_reference as reference

#: numbers per task: large enough that a task's start is negligible (chosen by hand)
CHUNK = 1 << 15


@njit(parallel=True, cache=True)
def _forward_kernel(x, y):
    for b in prange((x.shape[0] + CHUNK - 1) // CHUNK):
        for i in range(b * CHUNK, min(x.shape[0], (b + 1) * CHUNK)):
            v = x[i]
            y[i] = v if v > 0 or v != v else 0    # v != v: NaN, kept


@njit(parallel=True, cache=True)
def _backward_kernel(g, y, dx):
    for b in prange((g.shape[0] + CHUNK - 1) // CHUNK):
        for i in range(b * CHUNK, min(g.shape[0], (b + 1) * CHUNK)):
            dx[i] = g[i] * (1 if y[i] > 0 else 0)


def _fits(*arrays):
    """Whether the kernels take these arrays: one float dtype, C-contiguous, one shape."""
    a = arrays[0]
    return (a.dtype in (np.float32, np.float64) and all(b.dtype == a.dtype and b.shape == a.shape
                                                          and b.flags.c_contiguous for b in arrays))


def relu_forward(x):
    """max(0, x), as relu_reference.relu_forward."""
    if not _fits(x):
        return reference.relu_forward(x)
    y = np.empty_like(x)
    _forward_kernel(x.reshape(-1), y.reshape(-1))
    return y


def relu_backward(g, y):
    """g * 1[y > 0], as relu_reference.relu_backward."""
    if not _fits(g, y):
        return reference.relu_backward(g, y)
    dx = np.empty_like(g)
    _backward_kernel(g.reshape(-1), y.reshape(-1), dx.reshape(-1))
    return dx
