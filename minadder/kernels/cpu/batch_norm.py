"""Batch norm (Eq. 10) and its backward (the paper's Eq. 11) as parallel Numba loops.

The same two functions as ``../batch_norm_reference.py`` (read that first: there each is
a few NumPy expressions, each a pass over memory of its own). Here one thread takes one
channel at a time (prange over C) and makes all its passes over that channel's values while
they are still in its cache:

    forward     the mean; the variance of x - mean; then xhat and y written together
                (y + residual and max(0, y) there too: a residual, relu=True)
    backward    sum(g) and sum(g * xhat) together; then dx (g through that ReLU first,
                in both passes, when the forward's y is given)

The sums accumulate in float64 (for float32 inputs too), one pass each, so the statistics
are those of the reference up to float32 rounding. The sums alone are compiled with
fastmath's ``reassoc`` (LLVM may reorder the additions, which vectorises them: a change of
rounding only); the elementwise passes do the reference's float operations in its order,
without fastmath. Inputs of another dtype (or of mixed dtypes) go to the reference, and so
do (N, C) inputs (a fully connected layer's): there a channel is a column, one number per
row, and NumPy's passes along the rows are faster than a task per column.
"""
import numpy as np
from numba import njit, prange

from .. import batch_norm_reference as reference

FLOATS = (np.float32, np.float64)


# ===================================================== sums over one channel c of (N, C, P)
# Each reads the channel image by image through x[n, c], a contiguous row that Numba
# knows to be contiguous (x[:, c, :] is a strided view, whose loops LLVM left scalar:
# 1 ns a value).
@njit(fastmath={"reassoc"}, cache=True)
def _mean(x, c):
    total = 0.0
    for n in range(x.shape[0]):
        row = x[n, c]
        for j in range(row.shape[0]):
            total += row[j]
    return total / (x.shape[0] * x.shape[2])


@njit(fastmath={"reassoc"}, cache=True)
def _centred_mean_square(x, c, mean):
    """The biased variance: the mean of (x - mean)^2 (two passes: no cancellation)."""
    total = 0.0
    for n in range(x.shape[0]):
        row = x[n, c]
        for j in range(row.shape[0]):
            d = row[j] - mean
            total += d * d
    return total / (x.shape[0] * x.shape[2])


@njit(fastmath={"reassoc"}, cache=True)
def _grad_sums(g, xhat, y, masked, c):
    """(sum g, sum g * xhat) over one channel, in one pass; masked: g * 1[y > 0] (the ReLU)."""
    sum_g, sum_gx = 0.0, 0.0
    on, off = g.dtype.type(1), g.dtype.type(0)
    for n in range(g.shape[0]):
        gr, xr, yr = g[n, c], xhat[n, c], y[n, c]
        for j in range(gr.shape[0]):
            gv = gr[j] * (on if yr[j] > 0 else off) if masked else gr[j]
            sum_g += gv
            sum_gx += np.float64(gv) * xr[j]
    return sum_g, sum_gx


# ================================================================ the two kernels
@njit(parallel=True, cache=True)
def _forward_kernel(x, weight, bias, training, eps, relu, residual, added, mean, var, inv_std, xhat, y):
    """x, residual, xhat, y (N, C, P); weight, bias, inv_std (C,) of x's dtype; mean, var
    (C,) float64: written in training, read in evaluation; added: y + residual; relu:
    y = max(0, y) (relu.py's)."""
    for c in prange(x.shape[1]):
        if training:
            mean[c] = _mean(x, c)
            var[c] = _centred_mean_square(x, c, mean[c])
        inv_std[c] = 1.0 / np.sqrt(var[c] + eps)
        m, s, w, b = x.dtype.type(mean[c]), inv_std[c], weight[c], bias[c]
        for n in range(x.shape[0]):
            xr, hr, yr, rr = x[n, c], xhat[n, c], y[n, c], residual[n, c]
            for j in range(xr.shape[0]):
                h = (xr[j] - m) * s
                hr[j] = h
                v = h * w + b
                if added:
                    v = v + rr[j]
                yr[j] = v if not relu or v > 0 or v != v else 0


@njit(parallel=True, cache=True)
def _backward_kernel(g, xhat, y, masked, scale, training, dx, dweight, dbias, keep, g_relu):
    """g, xhat, dx (N, C, P); scale = inv_std * weight, dweight, dbias (C,) of g's dtype;
    masked: g goes through the ReLU whose output was y (N, C, P) first; keep: that g
    through the ReLU is written into g_relu (N, C, P) on the way (a residual's gradient)."""
    count = g.shape[0] * g.shape[2]
    on, off = g.dtype.type(1), g.dtype.type(0)      # g * 1 or g * 0 in g's dtype, as relu.py
    for c in prange(g.shape[1]):
        sum_g, sum_gx = _grad_sums(g, xhat, y, masked, c)
        dweight[c], dbias[c] = sum_gx, sum_g
        s = scale[c]
        a, b = g.dtype.type(sum_gx / count), g.dtype.type(sum_g / count)
        for n in range(g.shape[0]):
            gr, hr, yr, dr, kr = g[n, c], xhat[n, c], y[n, c], dx[n, c], g_relu[n, c]
            if training:   # the batch statistics depend on x: the means of g and g * xhat come in
                for j in range(gr.shape[0]):
                    gv = gr[j] * (on if yr[j] > 0 else off) if masked else gr[j]
                    dr[j] = (gv - (hr[j] * a + b)) * s
                    if keep:
                        kr[j] = gv
            else:
                for j in range(gr.shape[0]):
                    gv = gr[j] * (on if yr[j] > 0 else off) if masked else gr[j]
                    dr[j] = gv * s
                    if keep:
                        kr[j] = gv


# ============================================================= the optional kernels
def _as_3d(a):
    """(N, C) or (N, C, H, W) as a contiguous (N, C, P) array (P = 1 or H*W)."""
    n, c = a.shape[:2]
    return np.ascontiguousarray(a).reshape(n, c, int(np.prod(a.shape[2:], dtype=np.int64)))


def _per_channel(v, c, fill, dtype):
    """A (C,) vector of ``dtype``: v, or ``fill`` repeated when v is None."""
    return np.full(c, fill, dtype) if v is None else np.ascontiguousarray(v, dtype=dtype)


def _numba_dtypes(*arrays):
    """Whether the kernels take these arrays: one dtype, float32 or float64 (None ignored)."""
    dtypes = {a.dtype for a in arrays if a is not None}
    return len(dtypes) == 1 and dtypes.pop() in FLOATS


def batch_norm_forward(x, weight=None, bias=None, mean=None, var=None, eps=1e-5, relu=False, residual=None):
    """Eq. 10: (y, xhat, inv_std, mean, var), as batch_norm_reference.batch_norm_forward
    (mean and var None: training, the batch's statistics are returned, of x's dtype;
    residual: y + residual; relu: y = max(0, y); both in the same pass)."""
    if x.ndim == 2 or not _numba_dtypes(x, weight, bias, residual):   # (N, C): NumPy runs along C already
        return reference.batch_norm_forward(x, weight, bias, mean, var, eps, relu, residual)
    c, training = x.shape[1], mean is None
    x3 = _as_3d(x)
    mean64 = np.empty(c) if training else np.ascontiguousarray(mean, dtype=np.float64)
    var64 = np.empty(c) if training else np.ascontiguousarray(var, dtype=np.float64)
    inv_std = np.empty(c, x.dtype)
    xhat, y = np.empty_like(x3), np.empty_like(x3)
    _forward_kernel(x3, _per_channel(weight, c, 1, x.dtype), _per_channel(bias, c, 0, x.dtype), training,
                    float(eps), bool(relu), x3 if residual is None else _as_3d(residual), residual is not None,
                    mean64, var64, inv_std, xhat, y)
    if training:
        mean, var = mean64.astype(x.dtype), var64.astype(x.dtype)
    return y.reshape(x.shape), xhat.reshape(x.shape), inv_std, mean, var


def batch_norm_backward(g, xhat, inv_std, weight=None, training=True, y=None, residual=False):
    """(dx, dweight, dbias), as batch_norm_reference.batch_norm_backward (y: the output of a
    forward with relu=True; g goes through that ReLU first, in the same passes; residual:
    that g comes back too, as a fourth result, written in the pass that writes dx: a
    separate ReLU backward took 2 % of a ResNet-20 step)."""
    if g.ndim == 2 or not _numba_dtypes(g, xhat, inv_std, weight, y):
        return reference.batch_norm_backward(g, xhat, inv_std, weight, training, y, residual)
    c = g.shape[1]
    scale = inv_std if weight is None else inv_std * weight
    g3, x3 = _as_3d(g), _as_3d(xhat)
    dx, dweight, dbias = np.empty_like(g3), np.empty(c, g.dtype), np.empty(c, g.dtype)
    keep = residual and y is not None
    g_relu = np.empty_like(g3) if keep else dx
    _backward_kernel(g3, x3, x3 if y is None else _as_3d(y), y is not None, np.ascontiguousarray(scale), training,
                     dx, dweight, dbias, keep, g_relu)
    if residual:
        return dx.reshape(g.shape), dweight, dbias, (g_relu.reshape(g.shape) if keep else g)
    return dx.reshape(g.shape), dweight, dbias
