"""Batch norm (Eq. 10) and its backward (the paper's Eq. 11) as parallel Numba loops.

The same two functions as ``../batch_norm_reference.py`` (read that first: there each is
a few NumPy expressions, each a pass over memory of its own). Here one thread takes a
group of neighbouring channels at a time (prange over groups of C; one channel where
rows are long, _group_size) and makes all its passes over those channels' values while
they are still in its cache:

    forward     the mean; the variance of x - mean; then y written (y + residual and
                max(0, y) there too: a residual, relu=True)
    backward    sum(g) and sum(g * xhat) together; then dx (g through that ReLU first,
                in both passes, when the forward's y is given)

Each pass asks for the rows it will read or write next ahead of use (``_prefetch_rows``):
a channel is N short rows far apart, which the hardware prefetcher does not follow.

xhat is not written: the forward saves x (``Centred``), which the graph holds anyway as
the layer's input, and the backward computes xhat = (x - mean) * inv_std again as it reads
x. Where no residual was added, it takes the ReLU's mask from there too (weight * xhat +
bias > 0, the forward's own operations) instead of reading y. Both save a stream over
memory per pass: writing xhat, then reading xhat and y, made batch norm's passes take
twice as long inside a ResNet-20 step as on warm data, and the step 3-6 % longer.

The sums accumulate in float64 (for float32 inputs too), one pass each, so the statistics
are those of the reference up to float32 rounding. The sums alone are compiled with
fastmath's ``reassoc`` (LLVM may reorder the additions, which vectorises them: a change of
rounding only); the elementwise passes do the reference's float operations in its order,
without fastmath. Inputs of another dtype (or of mixed dtypes) go to the reference, and so
do (N, C) inputs (a fully connected layer's): there a channel is a column, one number per
row, and NumPy's passes along the rows are faster than a task per column.
"""
from typing import NamedTuple

import numpy as np
from numba import get_num_threads, njit, prange

from .. import batch_norm_reference as reference
from .register_block import PREFETCH_BYTES, prefetch_lines

FLOATS = (np.float32, np.float64)
#: where the backward's ReLU mask comes from: no ReLU; the forward's y; weight * xhat + bias
MASK_NONE, MASK_FROM_Y, MASK_FROM_X = 0, 1, 2


class Centred(NamedTuple):
    """The cpu forward's ``saved``: x (N, C, P) and the per-channel numbers that give xhat
    and the ReLU's input again; mean, inv_std, weight and bias (C,) of x's dtype; added:
    whether a residual was added before the ReLU (then its mask is read from y)."""
    x: np.ndarray
    mean: np.ndarray
    inv_std: np.ndarray
    weight: np.ndarray
    bias: np.ndarray
    added: bool


def _normalised(saved, shape):
    """The reference's ``saved`` (xhat of ``shape``) for a Centred one, or itself."""
    if not isinstance(saved, Centred):
        return saved
    xhat = (saved.x - saved.mean.reshape(1, -1, 1)) * saved.inv_std.reshape(1, -1, 1)
    return reference.Normalised(xhat.reshape(shape), saved.inv_std)


# ======================================================= channels in groups, from memory
#: a task takes a group of neighbouring channels whose rows make at least this many bytes
#: an image (one image's rows of those channels lie side by side in memory)
GROUP_BYTES = 4096


def _group_size(x, threads):
    """Channels per task: GROUP_BYTES of each image, fewer if that left a thread idle.

    A channel of (N, C, P) is N rows of P numbers, C * P numbers apart: 4 KB rows 64 KB
    apart at 16 channels of 32x32, 256-byte rows 16 KB apart at 64 channels of 8x8. On data
    out of cache (in a training step the layer's input was written long before) a task that
    read one channel started again at every row: the hardware prefetcher follows a stream
    only within a 4 KB page, and a 256-byte row is four cache lines. A group of channels
    reads a page or more of each image in one stretch, and asks for the next images' ahead
    (_prefetch_rows). Measured 2026-12-06 in a ResNet-20 step (batch 64, 2 threads, per
    call): the backward of a 64-channel 8x8 batch norm 0.58 -> 0.32 ms, with a residual
    1.12 -> 0.56. Whole-batch passes image by image did as well there but lost at 16 and 32
    channels, whose second pass then read everything from memory again; a group keeps its
    task's data in cache between passes, as one channel did."""
    channels, row = x.shape[1], max(1, x.shape[2] * x.itemsize)
    return max(1, min(-(-GROUP_BYTES // row), channels // (2 * threads)))


@njit(cache=True)
def _images_ahead(a, c0, c1):
    """Images of a group ahead to ask for: PREFETCH_BYTES' worth, at least one."""
    return max(1, PREFETCH_BYTES // max(1, (c1 - c0) * a.shape[2] * a.itemsize))


@njit(cache=True)
def _prefetch_rows(a, n, c0, c1, write):
    """Ask for image n's rows of channels c0..c1 (if there is an image n): side by side."""
    if n < a.shape[0]:
        prefetch_lines(a[n].reshape(a.shape[1] * a.shape[2]), c0 * a.shape[2], c1 * a.shape[2], write)


# ============================================= sums over a group of channels c0..c1 of (N, C, P)
# Each reads the group image by image through x[n, c], a contiguous row that Numba knows
# to be contiguous (x[:, c, :] is a strided view, whose loops LLVM left scalar: 1 ns a value).
@njit(fastmath={"reassoc"}, cache=True)
def _means(x, c0, c1, out):
    """out[c - c0] = the mean of channel c, for c0 <= c < c1 (the group's first pass: from memory)."""
    out[:] = 0
    ahead = _images_ahead(x, c0, c1)
    for n in range(ahead):
        _prefetch_rows(x, n, c0, c1, False)
    for n in range(x.shape[0]):
        _prefetch_rows(x, n + ahead, c0, c1, False)
        for c in range(c0, c1):
            row, total = x[n, c], 0.0
            for j in range(row.shape[0]):
                total += row[j]
            out[c - c0] += total
    out /= x.shape[0] * x.shape[2]


@njit(fastmath={"reassoc"}, cache=True)
def _centred_mean_squares(x, c0, c1, mean, out):
    """out[c - c0] = the biased variance of channel c: the mean of (x - mean)^2 (two passes:
    no cancellation)."""
    out[:] = 0
    for n in range(x.shape[0]):
        for c in range(c0, c1):
            row, m, total = x[n, c], mean[c], 0.0
            for j in range(row.shape[0]):
                d = row[j] - m
                total += d * d
            out[c - c0] += total
    out /= x.shape[0] * x.shape[2]


# The forward's elementwise operations, shared so that the backward computes the same bits
# again (compiled without fastmath; inlined into the fastmath sums with their own flags).
@njit(cache=True)
def _xhat(v, m, s):
    return (v - m) * s


@njit(cache=True)
def _through_relu(gv, h, y, w, b, mask, zero):
    """g through the forward's ReLU, g * 1[output > 0] (``zero`` of g's dtype: g * 0 is NaN
    for an infinite g, as in relu.py), that output's sign read from y (MASK_FROM_Y) or
    computed again from xhat (MASK_FROM_X: weight * xhat + bias, no residual added)."""
    if mask == MASK_FROM_Y:
        return gv if y > 0 else gv * zero
    if mask == MASK_FROM_X:
        return gv if h * w + b > 0 else gv * zero
    return gv


@njit(cache=True)
def _prefetch_inputs(g, x, y, mask, n, c0, c1):
    """Ask for image n's rows of the group in what the backward's first pass reads."""
    _prefetch_rows(g, n, c0, c1, False)
    _prefetch_rows(x, n, c0, c1, False)
    if mask == MASK_FROM_Y:
        _prefetch_rows(y, n, c0, c1, False)


@njit(fastmath={"reassoc"}, cache=True)
def _grad_sums(g, x, y, mask, c0, c1, saved, out):
    """out[c - c0] = (sum g, sum g * xhat) over channel c, in one pass (the group's first:
    from memory), g through the ReLU (mask)."""
    zero = g.dtype.type(0)
    out[:] = 0
    ahead = _images_ahead(g, c0, c1)
    for n in range(ahead):
        _prefetch_inputs(g, x, y, mask, n, c0, c1)
    for n in range(g.shape[0]):
        _prefetch_inputs(g, x, y, mask, n + ahead, c0, c1)
        for c in range(c0, c1):
            m, s, w, b = saved.mean[c], saved.inv_std[c], saved.weight[c], saved.bias[c]
            gr, xr, yr = g[n, c], x[n, c], y[n, c]
            sum_g, sum_gx = 0.0, 0.0
            for j in range(gr.shape[0]):
                h = _xhat(xr[j], m, s)
                gv = _through_relu(gr[j], h, yr[j], w, b, mask, zero)
                sum_g += gv
                sum_gx += np.float64(gv) * h
            out[c - c0, 0] += sum_g
            out[c - c0, 1] += sum_gx


# ================================================================ the two kernels
@njit(parallel=True, cache=True)
def _forward_kernel(x, weight, bias, training, eps, relu, residual, added, group, mean, var, inv_std, y):
    """x, residual, y (N, C, P); weight, bias, inv_std (C,) of x's dtype; mean, var (C,)
    float64: written in training, read in evaluation; added: y + residual; relu:
    y = max(0, y) (relu.py's); one task per ``group`` channels."""
    channels = x.shape[1]
    for task in prange(-(-channels // group)):
        c0, c1 = task * group, min(channels, (task + 1) * group)
        if training:
            _means(x, c0, c1, mean[c0:c1])
            _centred_mean_squares(x, c0, c1, mean, var[c0:c1])
        for c in range(c0, c1):
            inv_std[c] = 1.0 / np.sqrt(var[c] + eps)
        ahead = _images_ahead(y, c0, c1)
        for n in range(x.shape[0]):
            _prefetch_rows(y, n + ahead, c0, c1, True)       # lines about to be written
            if added:
                _prefetch_rows(residual, n + ahead, c0, c1, False)
            for c in range(c0, c1):
                m, s, w, b = x.dtype.type(mean[c]), inv_std[c], weight[c], bias[c]
                xr, yr, rr = x[n, c], y[n, c], residual[n, c]
                for j in range(xr.shape[0]):
                    v = _xhat(xr[j], m, s) * w + b
                    if added:
                        v = v + rr[j]
                    yr[j] = v if not relu or v > 0 or v != v else 0


@njit(parallel=True, cache=True)
def _backward_kernel(g, saved, y, mask, scale, training, group, dx, dweight, dbias, keep, g_relu):
    """g, y, dx (N, C, P); saved: Centred; scale = inv_std * weight, dweight, dbias (C,) of
    g's dtype; mask: where g goes through the forward's ReLU (MASK_*); keep: that g through
    the ReLU is written into g_relu (N, C, P) on the way (a residual's gradient); one task
    per ``group`` channels."""
    x, zero = saved.x, g.dtype.type(0)
    channels = g.shape[1]
    count = g.shape[0] * g.shape[2]
    for task in prange(-(-channels // group)):
        c0, c1 = task * group, min(channels, (task + 1) * group)
        sums = np.empty((c1 - c0, 2))
        _grad_sums(g, x, y, mask, c0, c1, saved, sums)
        ahead = _images_ahead(dx, c0, c1)
        for n in range(g.shape[0]):
            _prefetch_rows(dx, n + ahead, c0, c1, True)      # lines about to be written
            if keep:
                _prefetch_rows(g_relu, n + ahead, c0, c1, True)
            for c in range(c0, c1):
                m, s_, w, b_ = saved.mean[c], saved.inv_std[c], saved.weight[c], saved.bias[c]
                s = scale[c]
                a, b = g.dtype.type(sums[c - c0, 1] / count), g.dtype.type(sums[c - c0, 0] / count)
                gr, xr, yr, dr, kr = g[n, c], x[n, c], y[n, c], dx[n, c], g_relu[n, c]
                for j in range(gr.shape[0]):
                    h = _xhat(xr[j], m, s_)
                    gv = _through_relu(gr[j], h, yr[j], w, b_, mask, zero)
                    # the batch statistics depend on x in training: the means of g and g * xhat come in
                    dr[j] = (gv - (h * a + b)) * s if training else gv * s
                    if keep:
                        kr[j] = gv
        for c in range(c0, c1):
            dweight[c], dbias[c] = sums[c - c0, 1], sums[c - c0, 0]


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
    """Eq. 10: (y, saved, mean, var), as batch_norm_reference.batch_norm_forward
    (mean and var None: training, the batch's statistics are returned, of x's dtype;
    residual: y + residual; relu: y = max(0, y); both in the same pass)."""
    if x.ndim == 2 or not _numba_dtypes(x, weight, bias, residual):   # (N, C): NumPy runs along C already
        return reference.batch_norm_forward(x, weight, bias, mean, var, eps, relu, residual)
    c, training = x.shape[1], mean is None
    x3 = _as_3d(x)
    mean64 = np.empty(c) if training else np.ascontiguousarray(mean, dtype=np.float64)
    var64 = np.empty(c) if training else np.ascontiguousarray(var, dtype=np.float64)
    inv_std = np.empty(c, x.dtype)
    y = np.empty_like(x3)
    weight, bias = _per_channel(weight, c, 1, x.dtype), _per_channel(bias, c, 0, x.dtype)
    _forward_kernel(x3, weight, bias, training, float(eps), bool(relu), x3 if residual is None else _as_3d(residual),
                    residual is not None, _group_size(x3, get_num_threads()), mean64, var64, inv_std, y)
    saved = Centred(x3, mean64.astype(x.dtype), inv_std, weight, bias, residual is not None)
    if training:
        mean, var = saved.mean, var64.astype(x.dtype)
    return y.reshape(x.shape), saved, mean, var


def batch_norm_backward(g, saved, weight=None, training=True, y=None, residual=False):
    """(dx, dweight, dbias), as batch_norm_reference.batch_norm_backward (y: the output of a
    forward with relu=True; g goes through that ReLU first, in the same passes; residual:
    that g comes back too, as a fourth result, written in the pass that writes dx: a
    separate ReLU backward took 2 % of a ResNet-20 step). ``saved``: the cpu forward's
    Centred, or the reference's Normalised where that forward left the work to it."""
    if not isinstance(saved, Centred) or not _numba_dtypes(g, saved.x, weight, y):
        return reference.batch_norm_backward(g, _normalised(saved, g.shape), weight, training, y, residual)
    c = g.shape[1]
    scale = saved.inv_std if weight is None else saved.inv_std * weight
    g3 = _as_3d(g)
    dx, dweight, dbias = np.empty_like(g3), np.empty(c, g.dtype), np.empty(c, g.dtype)
    keep = residual and y is not None
    g_relu = np.empty_like(g3) if keep else dx
    mask = MASK_NONE if y is None else (MASK_FROM_Y if saved.added else MASK_FROM_X)
    _backward_kernel(g3, saved, saved.x if mask != MASK_FROM_Y else _as_3d(y), mask, np.ascontiguousarray(scale),
                     training, _group_size(g3, get_num_threads()), dx, dweight, dbias, keep, g_relu)
    if residual:
        return dx.reshape(g.shape), dweight, dbias, (g_relu.reshape(g.shape) if keep else g)
    return dx.reshape(g.shape), dweight, dbias
