"""Numba kernels for the CPU: the functions of ``reference.py``, parallel and vectorised.

Every public function here has the name, signature and result of its namesake in
``minadder.kernels.reference``, which is its definition (and the oracle of
tests/test_kernels_cpu.py). Layout as there: X_col is (K, L) with L contiguous, W is
(C_out, K), G = dLoss/dY_col is (C_out, L).

How the l1 "GEMM" is made fast (measurements in benchmarks/README.md):

* Register and cache blocking. The forward's inner step (``_min_sums_4``) holds 4
  channels x 4 rows of W as scalars and runs along L (contiguous: 512-bit vector code);
  each x vector loaded serves 4 channels and each accumulator load/store 4 rows. A task
  is GROUP_T channels x TILE_L columns, visiting X_col in chunks of CHUNK_K rows that
  stay in cache for all its channels.
* |x - w| = x + w - 2 min(x, w). Summed over k, the x + w part is colsum[l] + wsum[t],
  computed once, so the inner loop is one min and one add per adder-MAC instead of a
  subtract, an abs and an add.
* dX in full mode uses HT(w - x) = clip(w, x - 1, x + 1) - x: a max, a min and a
  fused multiply-add per term.
* dW in full mode is a matrix product (SPEC section 2):
  dW = G @ X_col.T - W * G.sum(axis=1), one BLAS call.
* No temporary larger than the im2col buffer: dX_col of a large layer is computed a
  slice of images at a time and scattered back (col2im) slice by slice; large arrays
  handed out before are recycled once nobody holds them (``_empty``).
* Row views indexed by ``range`` variables everywhere in inner loops: Numba then emits
  plain vector loads instead of wraparound code and gathers.

Compilation is lazy (first call, once per dtype) and cached on disk (cache=True), so
importing this module costs nothing and a second process reuses the machine code.
``fastmath`` lets LLVM use vminps/vmaxps and reassociate sums: inputs must be finite;
results differ from the reference only by float rounding.
"""
import math
import os
import sys

import numpy as np

try:
    import numba
    from numba import njit, prange
except ImportError:  # the backend registry turns this into BackendUnavailable
    numba = None

if numba is not None and "NUMBA_THREADING_LAYER" not in os.environ:
    # Numba's default picks OpenMP, whose idle workers spin. On a small machine shared
    # with other processes a spinning worker holds a core that a running one needs, and
    # every parallel launch waits for a descheduled thread: a LeNet-5-BN training step
    # ran 5-8x slower there (benchmarks/README.md). The workqueue layer's workers sleep.
    # Set NUMBA_THREADING_LAYER to choose another layer (it has to be set before the
    # first parallel kernel runs; Numba then keeps that layer for the process).
    numba.config.THREADING_LAYER = "workqueue"

from .contract import check_grad_mode, output_size

#: output channels per register block of the forward kernel (accumulator rows)
TILE_T = 4
#: output channels per forward task: they share each chunk of X_col while it is in cache
GROUP_T = 16
#: rows of X_col per chunk (CHUNK_K x TILE_L floats: 64 KB of float32, in L2)
CHUNK_K = 64
#: columns (L) per tile: TILE_T rows of this many floats stay in L1
TILE_L = 256
#: the backward pass builds dX_col for 1/BACKWARD_SLICES of the batch at a time ...
BACKWARD_SLICES = 4
#: ... when X_col has more elements than this (1 MB of float32)
SLICE_ABOVE = 1 << 18


def check_available():
    """Raise BackendUnavailable when Numba is missing."""
    if numba is None:
        from ..backend import BackendUnavailable
        raise BackendUnavailable("backend 'cpu' needs numba: pip install numba")


if numba is None:  # keep the module importable; check_available() explains
    def njit(*args, **kwargs):
        return (lambda f: f) if not (len(args) == 1 and callable(args[0])) else args[0]
    prange = range

_FAST = dict(parallel=True, fastmath=True, cache=True)


# ======================================================================= buffer reuse
#: arrays of at least this many bytes are recycled (below it, malloc is cheap)
POOL_MIN_BYTES = 1 << 20
#: recycled arrays kept per (shape, dtype), and in all (256 MB; _pool.clear() frees them)
POOL_PER_SHAPE, POOL_MAX_BYTES = 3, 1 << 28
_pool = {}   # (shape, dtype) -> arrays that this module handed out before
_probe = [np.empty(1)]
_IDLE_REFS = next(sys.getrefcount(a) for a in _probe)   # held by the pool list alone
del _probe


def _empty(shape, dtype):
    """np.empty, recycling a large array handed out before once nobody holds it any more.

    A fresh multi-megabyte array costs a page fault per 4 KB on first touch (the C library
    maps it afresh and returns it to the system on free): for LeNet-5-BN at batch 256
    that was about a fifth of a training step. An array is reused only when the pool's
    own list is its sole holder (no caller, no view of it: a view holds its base), so a
    live result is never overwritten. Every caller writes the whole array.
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    if nbytes < POOL_MIN_BYTES:
        return np.empty(shape, dtype)
    free = _pool.setdefault((tuple(shape), dtype.str), [])
    for arr in free:
        if sys.getrefcount(arr) == _IDLE_REFS:
            return arr
    arr = np.empty(shape, dtype)
    held = sum(a.nbytes for arrays in _pool.values() for a in arrays)
    if len(free) < POOL_PER_SHAPE and held + nbytes <= POOL_MAX_BYTES:
        free.append(arr)
    return arr


# ============================================================================ im2col
@njit(inline="always")
def _valid_range(size, out_size, offset, stride, padding):
    """The outputs v in [v0, v1) whose input index stride*v + offset - padding lies in [0, size)."""
    v0 = max(0, (padding - offset + stride - 1) // stride)
    v1 = min(out_size, (size - 1 + padding - offset) // stride + 1)
    return v0, max(v0, v1)


@njit(parallel=True, cache=True)
def _im2col_kernel(x, kh, kw, stride, padding, cols, colsum, with_sums):
    """cols[(c,i,j), (n,u,v)] = Xp[n, c, s*u + i, s*v + j]  (reference.im2col), and
    colsum[l] = sum_k cols[k, l], which the forward kernel needs (when ``with_sums``).

    One task per image n: it writes the columns n*P .. (n+1)*P of every row (P = H_out*W_out),
    then sums them while they are in cache. Element loops over views rather than slice
    assignments, which cost more than these short copies (Numba checks them for overlap).
    """
    n_img, channels, h, w = x.shape
    ho = (h + 2 * padding - kh) // stride + 1
    wo = (w + 2 * padding - kw) // stride + 1
    plane = ho * wo
    for n in prange(n_img):
        base = n * plane
        for c in range(channels):
            for i in range(kh):
                for j in range(kw):
                    v0, v1 = _valid_range(w, wo, j, stride, padding)
                    start = stride * v0 + j - padding       # first input column read
                    for u in range(ho):
                        hh = stride * u + i - padding
                        # views indexed from 0 by range variables: plain (vector) loads
                        dst = cols[(c * kh + i) * kw + j, base + u * wo:base + (u + 1) * wo]
                        if hh < 0 or hh >= h or v1 == v0:
                            for v in range(wo):
                                dst[v] = 0
                            continue
                        for v in range(v0):
                            dst[v] = 0
                        for v in range(v1, wo):
                            dst[v] = 0
                        inner = dst[v0:v1]
                        if stride == 1:
                            src = x[n, c, hh, start:start + v1 - v0]
                            for q in range(v1 - v0):
                                inner[q] = src[q]
                        else:
                            src_s = x[n, c, hh, start:start + stride * (v1 - v0 - 1) + 1:stride]
                            for q in range(v1 - v0):
                                inner[q] = src_s[q]
        if not with_sums:
            continue
        total = colsum[base:base + plane]
        for q in range(plane):
            total[q] = 0
        for k in range(cols.shape[0]):
            row = cols[k, base:base + plane]
            for q in range(plane):
                total[q] += row[q]


@njit(parallel=True, cache=True)
def _col2im_kernel(cols, kh, kw, stride, padding, dx):
    """dx[n, c, h, w] = sum of cols[(c,i,j), (n,u,v)] over s*u+i-p = h, s*v+j-p = w.

    The adjoint of im2col (reference.col2im); ``cols`` holds the columns of the images
    in dx (which may be a slice of a batch). Parallel over (n, c) planes, which no two
    tasks share.
    """
    n_img, channels, h, w = dx.shape
    ho = (h + 2 * padding - kh) // stride + 1
    wo = (w + 2 * padding - kw) // stride + 1
    plane = ho * wo
    for nc in prange(n_img * channels):
        n, c = nc // channels, nc % channels
        for hh in range(h):
            dr = dx[n, c, hh]
            for ww in range(w):
                dr[ww] = 0
        base = n * plane
        for i in range(kh):
            u0, u1 = _valid_range(h, ho, i, stride, padding)
            for j in range(kw):
                k = (c * kh + i) * kw + j
                v0, v1 = _valid_range(w, wo, j, stride, padding)
                start = stride * v0 + j - padding
                for u in range(u0, u1):
                    hh = stride * u + i - padding
                    src = cols[k, base + u * wo + v0:base + u * wo + v1]
                    if stride == 1:   # views indexed from 0: contiguous vector code
                        dst = dx[n, c, hh, start:start + v1 - v0]
                        for q in range(v1 - v0):
                            dst[q] += src[q]
                    else:
                        dst_s = dx[n, c, hh, start:start + stride * (v1 - v0 - 1) + 1:stride]
                        for q in range(v1 - v0):
                            dst_s[q] += src[q]


def _im2col_with_sums(x, kh, kw, stride, padding, with_sums=True):
    n, c, h, w = x.shape
    if kh == kw == 1 and stride == 1 and padding == 0:
        # a 1x1 layer (a fully connected adder layer is one): im2col is a transpose
        cols = np.ascontiguousarray(x.transpose(1, 0, 2, 3)).reshape(c, n * h * w)
        return cols, (cols.sum(axis=0) if with_sums else None)
    ho, wo = output_size(h, kh, stride, padding), output_size(w, kw, stride, padding)
    cols = _empty((c * kh * kw, n * ho * wo), x.dtype)
    colsum = np.empty(n * ho * wo if with_sums else 0, dtype=x.dtype)
    _im2col_kernel(np.ascontiguousarray(x), kh, kw, stride, padding, cols, colsum, with_sums)
    return cols, (colsum if with_sums else None)


def im2col(x, kh, kw, stride=1, padding=0):
    """Unroll receptive fields into X_col (K, L); see reference.im2col."""
    return _im2col_with_sums(x, kh, kw, stride, padding, with_sums=False)[0]


def _col2im_into(cols, kh, kw, stride, padding, dx):
    if kh == kw == 1 and stride == 1 and padding == 0:   # the inverse transpose
        n, c, h, w = dx.shape
        dx[...] = cols.reshape(c, n, h, w).transpose(1, 0, 2, 3)
    else:
        _col2im_kernel(np.ascontiguousarray(cols), kh, kw, stride, padding, dx)


def col2im(cols, x_shape, kh, kw, stride=1, padding=0):
    """Scatter-add columns back to an image (the adjoint of im2col); see reference.col2im."""
    dx = np.empty(x_shape, dtype=cols.dtype)
    _col2im_into(cols, kh, kw, stride, padding, dx)
    return dx


# ===================================================================== adder forward
@njit(parallel=True, cache=True)
def _column_sums(cols):
    """colsum[l] = sum_k X_col[k, l], parallel over blocks of L."""
    n_k, n_l = cols.shape
    out = np.zeros(n_l, dtype=cols.dtype)
    for b in prange((n_l + TILE_L - 1) // TILE_L):
        l0, l1 = b * TILE_L, min(n_l, (b + 1) * TILE_L)
        for k in range(n_k):
            for l in range(l0, l1):
                out[l] += cols[k, l]
    return out


@njit(fastmath=True, cache=True)
def _min_sums_4(cols, weight, t0, k0, k1, l0, width, acc, a0):
    """acc[a0 + i, j] += sum_{k0 <= k < k1} min(X_col[k, l0 + j], W[t0 + i, k]) for i < 4.

    The register-blocked inner step of the forward: 4 channels x 4 rows of W as
    scalars; each x vector loaded along L serves all 4 channels, and each accumulator
    load/store serves 4 rows. Row views indexed by a range variable j >= 0 let Numba
    emit plain vector loads (an index it cannot prove non-negative gets wraparound
    code, which LLVM turns into gathers).
    """
    a_0, a_1, a_2, a_3 = acc[a0], acc[a0 + 1], acc[a0 + 2], acc[a0 + 3]
    k4 = k1 - (k1 - k0) % 4
    for k in range(k0, k4, 4):
        w00, w01, w02, w03 = weight[t0, k], weight[t0, k + 1], weight[t0, k + 2], weight[t0, k + 3]
        w10, w11, w12, w13 = weight[t0 + 1, k], weight[t0 + 1, k + 1], weight[t0 + 1, k + 2], weight[t0 + 1, k + 3]
        w20, w21, w22, w23 = weight[t0 + 2, k], weight[t0 + 2, k + 1], weight[t0 + 2, k + 2], weight[t0 + 2, k + 3]
        w30, w31, w32, w33 = weight[t0 + 3, k], weight[t0 + 3, k + 1], weight[t0 + 3, k + 2], weight[t0 + 3, k + 3]
        r0, r1 = cols[k, l0:l0 + width], cols[k + 1, l0:l0 + width]
        r2, r3 = cols[k + 2, l0:l0 + width], cols[k + 3, l0:l0 + width]
        for j in range(width):
            x0, x1, x2, x3 = r0[j], r1[j], r2[j], r3[j]
            a_0[j] += (min(x0, w00) + min(x1, w01)) + (min(x2, w02) + min(x3, w03))
            a_1[j] += (min(x0, w10) + min(x1, w11)) + (min(x2, w12) + min(x3, w13))
            a_2[j] += (min(x0, w20) + min(x1, w21)) + (min(x2, w22) + min(x3, w23))
            a_3[j] += (min(x0, w30) + min(x1, w31)) + (min(x2, w32) + min(x3, w33))
    for k in range(k4, k1):  # rows left over when k1 - k0 is not a multiple of 4
        w0, w1, w2, w3 = weight[t0, k], weight[t0 + 1, k], weight[t0 + 2, k], weight[t0 + 3, k]
        r0 = cols[k, l0:l0 + width]
        for j in range(width):
            x = r0[j]
            a_0[j] += min(x, w0)
            a_1[j] += min(x, w1)
            a_2[j] += min(x, w2)
            a_3[j] += min(x, w3)


@njit(fastmath=True, cache=True)
def _min_sums_1(cols, weight, t, k0, k1, l0, width, acc, a0):
    """acc[a0, j] += sum_{k0 <= k < k1} min(X_col[k, l0 + j], W[t, k]): one channel."""
    a = acc[a0]
    for k in range(k0, k1):
        wv, r0 = weight[t, k], cols[k, l0:l0 + width]
        for j in range(width):
            a[j] += min(r0[j], wv)


@njit(**_FAST)
def _adder_forward_kernel(cols, weight, colsum, out):
    """Eq. 2: out[n, t, p] = -sum_k |X_col[k, l] - W[t, k]| with l = n*P + p.

    Defined by reference.adder_forward (whose (C_out, L) result is out with N = 1).
    Computed as 2 * sum_k min(X_col[k, l], W[t, k]) - colsum[l] - wsum[t], because
    |x - w| = x + w - 2 min(x, w). ``out`` is (N, C_out, P): writing the image layout
    directly saves adder2d_forward a transpose.

    A task is TILE_L columns x GROUP_T channels. Its rows of X_col are visited in
    chunks of CHUNK_K, and each chunk (CHUNK_K x TILE_L, in L1/L2) serves all the
    task's channels before the next is loaded: a large layer (K = 4608) would otherwise
    stream its X_col block from L3 once for every 4 channels.
    """
    n_k, n_l = cols.shape
    n_img, n_t, plane = out.shape
    wsum = np.zeros(n_t, dtype=weight.dtype)
    for t in range(n_t):
        for k in range(n_k):
            wsum[t] += weight[t, k]
    groups = (n_t + GROUP_T - 1) // GROUP_T
    blocks_l = (n_l + TILE_L - 1) // TILE_L
    # the group varies fastest: consecutive tasks of a thread share their X_col block
    for task in prange(blocks_l * groups):
        g0 = (task % groups) * GROUP_T
        g1 = min(n_t, g0 + GROUP_T)
        l0 = (task // groups) * TILE_L
        width = min(TILE_L, n_l - l0)
        acc = np.zeros((GROUP_T, TILE_L), dtype=out.dtype)   # sum_k min(x, w) of the task
        for k0 in range(0, n_k, CHUNK_K):
            k1 = min(n_k, k0 + CHUNK_K)
            t = g0
            while t + TILE_T <= g1:
                _min_sums_4(cols, weight, t, k0, k1, l0, width, acc, t - g0)
                t += TILE_T
            for tt in range(t, g1):   # the C_out % TILE_T channels left over
                _min_sums_1(cols, weight, tt, k0, k1, l0, width, acc, tt - g0)
        # out = 2 acc - colsum - wsum, written image by image (columns of one image are
        # contiguous in out[n, t, :]); per-element index arithmetic would cost more than
        # the whole l1 sum when K is small
        for t in range(g0, g1):
            j = 0
            while j < width:
                n, p = (l0 + j) // plane, (l0 + j) % plane
                seg = min(width - j, plane - p)
                dst, a, cs = out[n, t, p:p + seg], acc[t - g0, j:j + seg], colsum[l0 + j:l0 + j + seg]
                for q in range(seg):
                    dst[q] = (a[q] + a[q]) - cs[q] - wsum[t]
                j += seg


def _forward_into(cols, weight, out3, colsum=None):
    _adder_forward_kernel(cols, weight, _column_sums(cols) if colsum is None else colsum, out3)


def adder_forward(cols, weight):
    """Eq. 2 in im2col form: Y[t, l] = -sum_k |X_col[k, l] - W[t, k]|; see reference.adder_forward."""
    cols, weight = _same_dtype(cols, weight)
    out = np.empty((weight.shape[0], cols.shape[1]), dtype=cols.dtype)
    _forward_into(cols, weight, out.reshape(1, weight.shape[0], cols.shape[1]))
    return out


# ===================================================================== input gradient
# ``one`` is 1 in the arrays' dtype, passed in so that float32 stays float32 (a Python
# literal 1.0 is float64 in Numba, and would turn the whole loop into float64 code).
@njit(inline="always")
def _sgn(z, one):
    """sgn(z) with sgn(0) = 0."""
    return one if z > 0 else (-one if z < 0 else one - one)


@njit(**_FAST)
def _grad_input_kernel(cols, weight, grad, gsum, l_start, full, one, dcols):
    """dX_col[k, l] = sum_t G[t, l] * E(W[t, k] - X_col[k, l])  (Eq. 6; reference.adder_grad_input).

    E = HardTanh when ``full``, else sgn. Computes the columns l_start .. l_start + width
    of dX_col into dcols (K, width). A tile is one row k x tile_l columns; each pass
    over it folds in 8 (full) or 4 (sign) rows of G, so each dcols load/store serves
    that many channels.

    Full mode uses HT(w - x) = clip(w, x - 1, x + 1) - x, so that
    dX_col[k, l] = sum_t G[t, l] * clip(W[t, k], x - 1, x + 1) - x * gsum[l] with
    gsum[l] = sum_t G[t, l]: a max, a min and a fused multiply-add per term instead of
    a subtract, a max, a min and a multiply-add.
    """
    n_k, width = dcols.shape
    n_t = weight.shape[0]
    # few channels make little work per tile: widen the tile so that the per-tile costs
    # (views, zeroing, scheduling) stay small next to the C_out * tile_l MACs
    tile_l = TILE_L * max(1, 64 // n_t)
    blocks_l = (width + tile_l - 1) // tile_l
    # k varies fastest: consecutive tiles of a thread read the same C_out x tile_l block
    # of G, which then stays in L1/L2 (the other order streams all of G once per row k)
    for tile in prange(n_k * blocks_l):
        k = tile % n_k
        j0 = (tile // n_k) * tile_l
        j1 = min(width, j0 + tile_l)
        m0, m1 = l_start + j0, l_start + j1
        # row views indexed from 0 (see _min_sums_4: plain vector loads)
        d, xs = dcols[k, j0:j1], cols[k, m0:m1]
        for j in range(j1 - j0):
            d[j] = 0
        t = 0
        if full:
            while t + 8 <= n_t:
                w0, w1, w2, w3 = weight[t, k], weight[t + 1, k], weight[t + 2, k], weight[t + 3, k]
                w4, w5, w6, w7 = weight[t + 4, k], weight[t + 5, k], weight[t + 6, k], weight[t + 7, k]
                g0, g1, g2, g3 = grad[t, m0:m1], grad[t + 1, m0:m1], grad[t + 2, m0:m1], grad[t + 3, m0:m1]
                g4, g5, g6, g7 = grad[t + 4, m0:m1], grad[t + 5, m0:m1], grad[t + 6, m0:m1], grad[t + 7, m0:m1]
                for j in range(j1 - j0):
                    lo, hi = xs[j] - one, xs[j] + one
                    d[j] += ((g0[j] * min(max(w0, lo), hi) + g1[j] * min(max(w1, lo), hi))
                             + (g2[j] * min(max(w2, lo), hi) + g3[j] * min(max(w3, lo), hi))) \
                        + ((g4[j] * min(max(w4, lo), hi) + g5[j] * min(max(w5, lo), hi))
                           + (g6[j] * min(max(w6, lo), hi) + g7[j] * min(max(w7, lo), hi)))
                t += 8
            for tt in range(t, n_t):   # channels left over
                wv, g0 = weight[tt, k], grad[tt, m0:m1]
                for j in range(j1 - j0):
                    d[j] += g0[j] * min(max(wv, xs[j] - one), xs[j] + one)
            gs = gsum[m0:m1]
            for j in range(j1 - j0):
                d[j] -= xs[j] * gs[j]
        else:
            while t + 4 <= n_t:
                w0, w1, w2, w3 = weight[t, k], weight[t + 1, k], weight[t + 2, k], weight[t + 3, k]
                g0, g1, g2, g3 = grad[t, m0:m1], grad[t + 1, m0:m1], grad[t + 2, m0:m1], grad[t + 3, m0:m1]
                for j in range(j1 - j0):
                    x = xs[j]
                    d[j] += (g0[j] * _sgn(w0 - x, one) + g1[j] * _sgn(w1 - x, one)) \
                        + (g2[j] * _sgn(w2 - x, one) + g3[j] * _sgn(w3 - x, one))
                t += 4
            for tt in range(t, n_t):
                wv, g0 = weight[tt, k], grad[tt, m0:m1]
                for j in range(j1 - j0):
                    d[j] += g0[j] * _sgn(wv - xs[j], one)


def adder_grad_input(cols, weight, grad_out, mode="full"):
    """dX_col[k, l] = sum_t G[t, l] * E(W[t, k] - X_col[k, l]); see reference.adder_grad_input."""
    _check_mode(mode)
    cols, weight, grad_out = _same_dtype(cols, weight, grad_out)
    dcols = np.empty(cols.shape, dtype=cols.dtype)
    _grad_input_kernel(cols, weight, grad_out, grad_out.sum(axis=0), 0, mode == "full", cols.dtype.type(1), dcols)
    return dcols


# ==================================================================== weight gradient
@njit(**_FAST)
def _grad_weight_sign_kernel(cols, weight, grad, one, dw):
    """Eq. 4: dW[t, k] = sum_l G[t, l] * sgn(X_col[k, l] - W[t, k])  (reference.adder_grad_weight).

    One task per (4 channels, row k): four dot-product-like reductions along L, which
    LLVM vectorises (fastmath lets it reassociate the sums).
    """
    n_k, n_l = cols.shape
    n_t = weight.shape[0]
    blocks_t = (n_t + 3) // 4
    for tile in prange(blocks_t * n_k):
        t0 = (tile // n_k) * 4
        k = tile % n_k
        xs = cols[k]
        if t0 + 4 <= n_t:
            w0, w1, w2, w3 = weight[t0, k], weight[t0 + 1, k], weight[t0 + 2, k], weight[t0 + 3, k]
            g0, g1, g2, g3 = grad[t0], grad[t0 + 1], grad[t0 + 2], grad[t0 + 3]
            s0 = s1 = s2 = s3 = one - one
            for l in range(n_l):
                x = xs[l]
                s0 += g0[l] * _sgn(x - w0, one)
                s1 += g1[l] * _sgn(x - w1, one)
                s2 += g2[l] * _sgn(x - w2, one)
                s3 += g3[l] * _sgn(x - w3, one)
            dw[t0, k], dw[t0 + 1, k], dw[t0 + 2, k], dw[t0 + 3, k] = s0, s1, s2, s3
        else:
            for t in range(t0, n_t):
                wv, g0 = weight[t, k], grad[t]
                s = one - one
                for l in range(n_l):
                    s += g0[l] * _sgn(xs[l] - wv, one)
                dw[t, k] = s


def adder_grad_weight(cols, weight, grad_out, mode="full"):
    """dW[t, k] = sum_l G[t, l] * D(X_col[k, l] - W[t, k]); see reference.adder_grad_weight.

    full (Eq. 5, D = identity): the sum is G @ X_col.T - W * G.sum(axis=1) (SPEC
    section 2), one BLAS matrix product and no l1 kernel. sign (Eq. 4): a Numba kernel.
    """
    _check_mode(mode)
    cols, weight, grad_out = _same_dtype(cols, weight, grad_out)
    if mode == "full":
        dw = grad_out @ cols.T
        dw -= weight * grad_out.sum(axis=1, keepdims=True)
        return dw
    dw = np.empty(weight.shape, dtype=cols.dtype)
    _grad_weight_sign_kernel(cols, weight, grad_out, cols.dtype.type(1), dw)
    return dw


# ========================================================= layer kernels (contract.py)
def layer_forward(x, w2, win):
    """Eq. 2 on images: y (N, C_out, P); see reference.layer_forward."""
    x, w2 = _same_dtype(x, w2)
    cols, colsum = _im2col_with_sums(x, win.kh, win.kw, win.stride, win.padding)
    y = _empty((win.n, win.c_out, win.plane), x.dtype)
    _forward_into(cols, w2, y, colsum)
    return y


def _g_cols(g, dtype):
    gc = _empty((g.shape[1], g.shape[0], g.shape[2]), dtype)
    np.copyto(gc, g.transpose(1, 0, 2))
    return gc.reshape(g.shape[1], -1)


def layer_grad_weight(x, w2, g, win, mode="full"):
    """dW (C_out, K); see reference.layer_grad_weight."""
    _check_mode(mode)
    x, w2, g = _same_dtype(x, w2, g)
    cols = im2col(x, win.kh, win.kw, win.stride, win.padding)
    return adder_grad_weight(cols, w2, _g_cols(g, x.dtype), mode)


def layer_grad_input(x, w2, g, win, mode="full"):
    """dX (N, C, H, W); see reference.layer_grad_input.

    dX_col is never built whole: it is computed for a slice of the images at a time
    (about 1/BACKWARD_SLICES of the batch) and scattered into dx by col2im.
    """
    _check_mode(mode)
    x, w2, g = _same_dtype(x, w2, g)
    cols = im2col(x, win.kh, win.kw, win.stride, win.padding)
    g2 = _g_cols(g, x.dtype)
    n, plane = win.n, win.plane
    dx = _empty(win.x_shape, cols.dtype)
    gsum = g2.sum(axis=0)   # sum_t G[t, l], for the full-mode dX kernel
    slices = BACKWARD_SLICES if cols.size > SLICE_ABOVE else 1
    step = max(1, math.ceil(n / slices))
    for n0 in range(0, n, step):
        n1 = min(n, n0 + step)
        part = _empty((cols.shape[0], (n1 - n0) * plane), cols.dtype)  # dX_col of images n0..n1
        _grad_input_kernel(cols, w2, g2, gsum, n0 * plane, mode == "full", cols.dtype.type(1), part)
        _col2im_into(part, win.kh, win.kw, win.stride, win.padding, dx[n0:n1])
    return dx


# ============================================================================ helpers
_check_mode = check_grad_mode


def _same_dtype(*arrays):
    """C-contiguous arrays of one float dtype (float32 stays float32), so each kernel
    compiles once per dtype."""
    dtype = np.result_type(*arrays)
    if dtype not in (np.float32, np.float64):
        dtype = np.float64
    return tuple(np.ascontiguousarray(a, dtype=dtype) for a in arrays)
