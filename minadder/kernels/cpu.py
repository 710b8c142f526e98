"""Numba kernels for the CPU: the contract's functions (contract.py), parallel and vectorised.

Every public function here has the name, signature and result of its namesake in
``minadder.kernels.reference``, its definition and the oracle of tests/test_kernels_cpu.py.

Implicit GEMM. The layer kernels read the input image directly and never build the whole
(K, L) im2col matrix X_col (K = C*kh*kw, L = N*H_out*W_out):

* forward: a task owns a tile of output positions and every channel; it copies the
  receptive fields of its positions into a small panel (CHUNK_K rows of X_col at a time,
  in L1/L2) and runs the register-blocked inner step on it;
* dX: a task owns one (image, channel) plane of dX; for each filter offset (i, j) it
  copies one row of X_col, computes that row of dX_col and adds it straight into the
  plane (col2im fused: no two tasks write the same pixel);
* dW: sums over chunks of a few images: X_col of a chunk (at most a quarter of the
  layer's) is built, used and dropped.
The backward keeps the input x, not X_col (contract.AdderCache).

The l1 "GEMM". |x - w| = x + w - 2 min(x, w): summed over k, the x + w part is
colsum[l] + wsum[t], so the forward's inner loop is one min and one add per adder-MAC
(instead of a subtract, an abs and an add). The inner step keeps MR channels x KR rows
of W in registers while it streams a panel row; MR x KR is chosen for the CPU in
``target.py`` (4 x 4 with 32 vector registers, 2 x 4 with AVX2's 16).

Precision. That identity, HardTanh as clip(w, x - 1, x + 1) - x, and the full-mode dW
identity all cancel large terms when inputs and filters share a large offset (raw pixels
0-255 fed to a first layer). |x - w|, HT(w - x) and x - w do not change when both are
shifted by the same c, so the kernels work in a frame shifted by c = mean(x), computed
per call: the panels hold x - c and the filters become w - c. Sign-mode gradients compare
x with w directly and need no shift.

Compilation is lazy (first call, once per dtype) and cached on disk (cache=True).
``fastmath`` lets LLVM use vminps/vmaxps and reassociate sums: inputs must be finite;
results differ from the reference only by float rounding.
"""
import math
import os

import numpy as np

try:
    import numba
    from numba import njit, prange
except ImportError:  # the backend registry turns this into BackendUnavailable
    numba = None

if numba is not None and "NUMBA_THREADING_LAYER" not in os.environ:
    # Numba's default picks OpenMP, whose idle workers spin. On a small machine shared
    # with other processes a spinning worker holds a core that a running one needs, and
    # every parallel launch waits for a descheduled thread (benchmarks/README.md). The
    # workqueue layer's workers sleep. Set NUMBA_THREADING_LAYER to choose another.
    numba.config.THREADING_LAYER = "workqueue"

from .contract import Window, check_grad_mode
from .target import TARGET

#: rows of X_col per packed panel of the forward (CHUNK_K x tile floats, in L2)
CHUNK_K = 64
#: the register block of the forward's inner step: MR channels x 4 rows (see target.py)
MR = 4 if TARGET.blocking == "wide" else 2
#: dW sums over chunks of images whose X_col has at most 1/DW_CHUNKS of the layer's
DW_CHUNKS = 4


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


# ============================================================= receptive fields (im2col)
# The kernels read a padded copy xp of the input, shifted into the kernels' frame:
# xp[n, c, a, b] = Xp[n, c, a, b] - centre (so the padding holds -centre). Then
# X_col[(c,i,j), (n,u,v)] = xp[n, c, s*u + i, s*v + j], with no bounds to check.
def _padded(x, padding, centre):
    """The shifted, zero-padded input: (N, C, H + 2p, W + 2p), C-contiguous."""
    n, c, h, w = x.shape
    xp = np.empty((n, c, h + 2 * padding, w + 2 * padding), dtype=x.dtype)
    if padding:
        xp[:, :, :padding] = xp[:, :, h + padding:] = -centre
        xp[:, :, :, :padding] = xp[:, :, :, w + padding:] = -centre
    np.subtract(x, centre, out=xp[:, :, padding:padding + h, padding:padding + w])
    return xp


@njit(cache=True)
def _segments(l0, width, plane, wo, segs):
    """Cut the positions l0 .. l0 + width (l = n*P + u*wo + v) into runs along one output
    row: segs[r] = (n, u, v0, length, q0), q0 the run's place in the tile. Returns the count."""
    count, q = 0, 0
    while q < width:
        l = l0 + q
        n, p = l // plane, l % plane
        u, v = p // wo, p % wo
        length = min(wo - v, width - q)
        segs[count, 0], segs[count, 1], segs[count, 2] = n, u, v
        segs[count, 3], segs[count, 4] = length, q
        count += 1
        q += length
    return count


@njit(cache=True)
def _copy_field_row(xp, c, i, j, stride, segs, count, dst):
    """dst[q] = X_col[(c, i, j), l] for the tile's positions (runs in segs): one row of X_col."""
    for r in range(count):
        n, u, v0, length, q0 = segs[r, 0], segs[r, 1], segs[r, 2], segs[r, 3], segs[r, 4]
        out = dst[q0:q0 + length]                    # views indexed from 0: plain vector code
        start = stride * v0 + j
        if stride == 1:
            src = xp[n, c, u + i, start:start + length]
        else:
            src = xp[n, c, stride * u + i, start:start + stride * (length - 1) + 1:stride]
        for q in range(length):
            out[q] = src[q]


@njit(cache=True)
def _add_field_row(src, c, i, j, stride, segs, count, dxp):
    """dxp[n, c, s*u + i, s*v + j] += src[q] over the tile's runs: the adjoint of _copy_field_row."""
    for r in range(count):
        n, u, v0, length, q0 = segs[r, 0], segs[r, 1], segs[r, 2], segs[r, 3], segs[r, 4]
        part = src[q0:q0 + length]
        start = stride * v0 + j
        if stride == 1:
            dst = dxp[n, c, u + i, start:start + length]
        else:
            dst = dxp[n, c, stride * u + i, start:start + stride * (length - 1) + 1:stride]
        for q in range(length):
            dst[q] += part[q]


@njit(parallel=True, cache=True)
def _im2col_kernel(xp, kh, kw, stride, ho, wo, cols):
    """cols[(c,i,j), (n,u,v)] = xp[n, c, s*u + i, s*v + j]  (reference.im2col, on the padded xp).

    One task per (image, channel); each writes its image's columns of its kh*kw rows.
    """
    n_img, channels = xp.shape[0], xp.shape[1]
    plane = ho * wo
    for task in prange(n_img * channels):
        n, c = task // channels, task % channels
        segs = np.empty((plane // wo + 2, 5), dtype=np.int64)
        count = _segments(n * plane, plane, plane, wo, segs)
        for i in range(kh):
            for j in range(kw):
                _copy_field_row(xp, c, i, j, stride, segs, count, cols[(c * kh + i) * kw + j, n * plane:])


@njit(parallel=True, cache=True)
def _col2im_kernel(cols, kh, kw, stride, ho, wo, dxp):
    """dxp[n, c] = the sum of the column entries that read each (padded) pixel (reference.col2im).

    Parallel over (n, c) planes, which no two tasks share.
    """
    n_img, channels = dxp.shape[0], dxp.shape[1]
    plane = ho * wo
    for task in prange(n_img * channels):
        n, c = task // channels, task % channels
        dxp[n, c] = 0
        segs = np.empty((plane // wo + 2, 5), dtype=np.int64)
        count = _segments(n * plane, plane, plane, wo, segs)
        for i in range(kh):
            for j in range(kw):
                _add_field_row(cols[(c * kh + i) * kw + j, n * plane:], c, i, j, stride, segs, count, dxp)


def _out_hw(shape, kh, kw, stride, padding):
    return (shape[2] + 2 * padding - kh) // stride + 1, (shape[3] + 2 * padding - kw) // stride + 1


def _im2col(x, kh, kw, stride, padding, centre):
    ho, wo = _out_hw(x.shape, kh, kw, stride, padding)
    cols = np.empty((x.shape[1] * kh * kw, x.shape[0] * ho * wo), dtype=x.dtype)
    _im2col_kernel(_padded(x, padding, centre), kh, kw, stride, ho, wo, cols)
    return cols


def im2col(x, kh, kw, stride=1, padding=0):
    """Unroll receptive fields into X_col (K, L); see reference.im2col."""
    (x,) = _same_dtype(x)
    return _im2col(x, kh, kw, stride, padding, x.dtype.type(0))


def col2im(cols, x_shape, kh, kw, stride=1, padding=0):
    """Scatter-add columns back to an image (the adjoint of im2col); see reference.col2im."""
    (cols,) = _same_dtype(cols)
    n, c, h, w = (int(v) for v in x_shape)
    ho, wo = _out_hw(x_shape, kh, kw, stride, padding)
    dxp = np.empty((n, c, h + 2 * padding, w + 2 * padding), dtype=cols.dtype)
    _col2im_kernel(cols, kh, kw, stride, ho, wo, dxp)
    return np.ascontiguousarray(dxp[:, :, padding:padding + h, padding:padding + w])


# ===================================================================== forward (Eq. 2)
@njit(fastmath=True, cache=True)
def _min_sums_4x4(panel, wsh, t0, kk0, kk1, k_base, width, acc, a0):
    """acc[a0 + r, q] += sum_{kk0 <= kk < kk1} min(panel[kk, q], W'[t0 + r, k_base + kk]), r < 4.

    The "wide" inner step (32 vector registers): 4 channels x 4 rows of W' as scalars,
    each panel vector loaded serves 4 channels, each accumulator load/store 4 rows.
    Row views indexed by a range variable let Numba emit plain vector loads.
    """
    a_0, a_1, a_2, a_3 = acc[a0], acc[a0 + 1], acc[a0 + 2], acc[a0 + 3]
    kk4 = kk1 - (kk1 - kk0) % 4
    for kk in range(kk0, kk4, 4):
        k = k_base + kk
        w00, w01, w02, w03 = wsh[t0, k], wsh[t0, k + 1], wsh[t0, k + 2], wsh[t0, k + 3]
        w10, w11, w12, w13 = wsh[t0 + 1, k], wsh[t0 + 1, k + 1], wsh[t0 + 1, k + 2], wsh[t0 + 1, k + 3]
        w20, w21, w22, w23 = wsh[t0 + 2, k], wsh[t0 + 2, k + 1], wsh[t0 + 2, k + 2], wsh[t0 + 2, k + 3]
        w30, w31, w32, w33 = wsh[t0 + 3, k], wsh[t0 + 3, k + 1], wsh[t0 + 3, k + 2], wsh[t0 + 3, k + 3]
        r0, r1, r2, r3 = panel[kk, :width], panel[kk + 1, :width], panel[kk + 2, :width], panel[kk + 3, :width]
        for q in range(width):
            x0, x1, x2, x3 = r0[q], r1[q], r2[q], r3[q]
            a_0[q] += (min(x0, w00) + min(x1, w01)) + (min(x2, w02) + min(x3, w03))
            a_1[q] += (min(x0, w10) + min(x1, w11)) + (min(x2, w12) + min(x3, w13))
            a_2[q] += (min(x0, w20) + min(x1, w21)) + (min(x2, w22) + min(x3, w23))
            a_3[q] += (min(x0, w30) + min(x1, w31)) + (min(x2, w32) + min(x3, w33))
    for kk in range(kk4, kk1):   # rows left over
        k = k_base + kk
        w0, w1, w2, w3 = wsh[t0, k], wsh[t0 + 1, k], wsh[t0 + 2, k], wsh[t0 + 3, k]
        r0 = panel[kk, :width]
        for q in range(width):
            x0 = r0[q]
            a_0[q] += min(x0, w0)
            a_1[q] += min(x0, w1)
            a_2[q] += min(x0, w2)
            a_3[q] += min(x0, w3)


@njit(fastmath=True, cache=True)
def _min_sums_2x4(panel, wsh, t0, kk0, kk1, k_base, width, acc, a0):
    """The "narrow" inner step (16 vector registers): as _min_sums_4x4 for 2 channels.

    8 broadcast weights, 4 panel vectors and 2 accumulators fit AVX2's 16 ymm registers.
    """
    a_0, a_1 = acc[a0], acc[a0 + 1]
    kk4 = kk1 - (kk1 - kk0) % 4
    for kk in range(kk0, kk4, 4):
        k = k_base + kk
        w00, w01, w02, w03 = wsh[t0, k], wsh[t0, k + 1], wsh[t0, k + 2], wsh[t0, k + 3]
        w10, w11, w12, w13 = wsh[t0 + 1, k], wsh[t0 + 1, k + 1], wsh[t0 + 1, k + 2], wsh[t0 + 1, k + 3]
        r0, r1, r2, r3 = panel[kk, :width], panel[kk + 1, :width], panel[kk + 2, :width], panel[kk + 3, :width]
        for q in range(width):
            x0, x1, x2, x3 = r0[q], r1[q], r2[q], r3[q]
            a_0[q] += (min(x0, w00) + min(x1, w01)) + (min(x2, w02) + min(x3, w03))
            a_1[q] += (min(x0, w10) + min(x1, w11)) + (min(x2, w12) + min(x3, w13))
    for kk in range(kk4, kk1):
        k = k_base + kk
        w0, w1 = wsh[t0, k], wsh[t0 + 1, k]
        r0 = panel[kk, :width]
        for q in range(width):
            x0 = r0[q]
            a_0[q] += min(x0, w0)
            a_1[q] += min(x0, w1)


@njit(fastmath=True, cache=True)
def _min_sums_1(panel, wsh, t, kk0, kk1, k_base, width, acc, a0):
    """acc[a0, q] += sum_kk min(panel[kk, q], W'[t, k_base + kk]): one channel left over."""
    a = acc[a0]
    for kk in range(kk0, kk1):
        wv, r0 = wsh[t, k_base + kk], panel[kk, :width]
        for q in range(width):
            a[q] += min(r0[q], wv)


_MIN_SUMS = _min_sums_4x4 if MR == 4 else _min_sums_2x4


@njit(**_FAST)
def _forward_kernel(xp, wsh, kh, kw, stride, ho, wo, tile_l, out):
    """Eq. 2: out[n, t, p] = -sum_k |X_col[k, l] - W[t, k]| with l = n*P + p  (reference.layer_forward).

    In the shifted frame (xp = Xp - c, wsh = W - c) and with |a - b| = a + b - 2 min(a, b):
    out = 2 sum_k min(x', w') - colsum'[l] - wsum'[t]. A task owns tile_l positions and
    every channel; it packs their receptive fields CHUNK_K rows of X_col at a time into
    a panel (in cache), which all channels use before the next is packed: X_col is
    built once in all, a panel at a time, and never stored whole.
    """
    n_t, n_k = wsh.shape
    n_img, _, plane = out.shape
    n_l = n_img * plane
    wsum = np.zeros(n_t, dtype=wsh.dtype)
    for t in range(n_t):
        for k in range(n_k):
            wsum[t] += wsh[t, k]
    for b in prange((n_l + tile_l - 1) // tile_l):
        l0 = b * tile_l
        width = min(tile_l, n_l - l0)
        segs = np.empty((tile_l // wo + 2, 5), dtype=np.int64)
        count = _segments(l0, width, plane, wo, segs)
        panel = np.empty((CHUNK_K, tile_l), dtype=wsh.dtype)
        acc = np.zeros((n_t, tile_l), dtype=wsh.dtype)        # sum_k min(x', w')
        colsum = np.zeros(tile_l, dtype=wsh.dtype)            # sum_k x'
        for k0 in range(0, n_k, CHUNK_K):
            k1 = min(n_k, k0 + CHUNK_K)
            for k in range(k0, k1):
                c, ij = k // (kh * kw), k % (kh * kw)
                row = panel[k - k0]
                _copy_field_row(xp, c, ij // kw, ij % kw, stride, segs, count, row)
                for q in range(width):
                    colsum[q] += row[q]
            t = 0
            while t + MR <= n_t:
                _MIN_SUMS(panel, wsh, t, 0, k1 - k0, k0, width, acc, t)
                t += MR
            for tt in range(t, n_t):
                _min_sums_1(panel, wsh, tt, 0, k1 - k0, k0, width, acc, tt)
        for t in range(n_t):   # out = 2 acc - colsum - wsum, run by run
            for r in range(count):
                n, u, v0, length, q0 = segs[r, 0], segs[r, 1], segs[r, 2], segs[r, 3], segs[r, 4]
                dst = out[n, t, u * wo + v0:u * wo + v0 + length]
                a, cs = acc[t, q0:q0 + length], colsum[q0:q0 + length]
                for q in range(length):
                    dst[q] = (a[q] + a[q]) - cs[q] - wsum[t]


def _tile(c_out, positions, smallest=64, largest=512):
    """Positions per task: C_out x tile floats of accumulators stay in L2 (128 KB), and
    there are enough tasks for every thread."""
    tile = min(largest, max(smallest, (32768 // max(1, c_out)) // 16 * 16))
    while tile > smallest and -(-positions // tile) < 4 * numba.get_num_threads():
        tile //= 2
    return tile


def layer_forward(x, w2, win):
    """Eq. 2 on images: y (N, C_out, P); see reference.layer_forward."""
    x, w2 = _same_dtype(x, w2)
    y = np.empty((win.n, win.c_out, win.plane), dtype=x.dtype)
    if y.size == 0:
        return y
    centre = _centre(x)
    _forward_kernel(_padded(x, win.padding, centre), w2 - centre, win.kh, win.kw, win.stride,
                    win.ho, win.wo, _tile(win.c_out, win.l), y)
    return y


# ===================================================================== input gradient
# ``one`` is 1 in the arrays' dtype, passed in so that float32 stays float32 (a Python
# literal 1.0 is float64 in Numba, and would turn the whole loop into float64 code).
@njit(inline="always")
def _sgn(z, one):
    """sgn(z) with sgn(0) = 0."""
    return one if z > 0 else (-one if z < 0 else one - one)


@njit(fastmath=True, cache=True)
def _dx_row_full(xs, wsh, g, gsum, n, k, p0, width, one, d):
    """d[q] = sum_t G[n, t, p] * HT(W'[t, k] - xs[q]) for p = p0 + q  (Eq. 6).

    HT(w - x) = clip(w, x - 1, x + 1) - x, so d = sum_t G clip(W', x - 1, x + 1) - x * gsum:
    a max, a min and a multiply-add per term; 8 channels per pass over d.
    """
    n_t = wsh.shape[0]
    for q in range(width):
        d[q] = 0
    t = 0
    while t + 8 <= n_t:
        w0, w1, w2, w3 = wsh[t, k], wsh[t + 1, k], wsh[t + 2, k], wsh[t + 3, k]
        w4, w5, w6, w7 = wsh[t + 4, k], wsh[t + 5, k], wsh[t + 6, k], wsh[t + 7, k]
        g0, g1, g2, g3 = g[n, t, p0:p0 + width], g[n, t + 1, p0:p0 + width], g[n, t + 2, p0:p0 + width], g[n, t + 3, p0:p0 + width]
        g4, g5, g6, g7 = g[n, t + 4, p0:p0 + width], g[n, t + 5, p0:p0 + width], g[n, t + 6, p0:p0 + width], g[n, t + 7, p0:p0 + width]
        for q in range(width):
            lo, hi = xs[q] - one, xs[q] + one
            d[q] += ((g0[q] * min(max(w0, lo), hi) + g1[q] * min(max(w1, lo), hi))
                     + (g2[q] * min(max(w2, lo), hi) + g3[q] * min(max(w3, lo), hi))) \
                + ((g4[q] * min(max(w4, lo), hi) + g5[q] * min(max(w5, lo), hi))
                   + (g6[q] * min(max(w6, lo), hi) + g7[q] * min(max(w7, lo), hi)))
        t += 8
    for tt in range(t, n_t):   # channels left over
        wv, g0 = wsh[tt, k], g[n, tt, p0:p0 + width]
        for q in range(width):
            d[q] += g0[q] * min(max(wv, xs[q] - one), xs[q] + one)
    gs = gsum[n, p0:p0 + width]
    for q in range(width):
        d[q] -= xs[q] * gs[q]


@njit(fastmath=True, cache=True)
def _dx_row_sign(xs, w2, g, n, k, p0, width, one, d):
    """d[q] = sum_t G[n, t, p] * sgn(W[t, k] - xs[q]) for p = p0 + q; 4 channels per pass."""
    n_t = w2.shape[0]
    for q in range(width):
        d[q] = 0
    t = 0
    while t + 4 <= n_t:
        w0, w1, w2_, w3 = w2[t, k], w2[t + 1, k], w2[t + 2, k], w2[t + 3, k]
        g0, g1, g2, g3 = g[n, t, p0:p0 + width], g[n, t + 1, p0:p0 + width], g[n, t + 2, p0:p0 + width], g[n, t + 3, p0:p0 + width]
        for q in range(width):
            xv = xs[q]
            d[q] += (g0[q] * _sgn(w0 - xv, one) + g1[q] * _sgn(w1 - xv, one)) \
                + (g2[q] * _sgn(w2_ - xv, one) + g3[q] * _sgn(w3 - xv, one))
        t += 4
    for tt in range(t, n_t):
        wv, g0 = w2[tt, k], g[n, tt, p0:p0 + width]
        for q in range(width):
            d[q] += g0[q] * _sgn(wv - xs[q], one)


@njit(**_FAST)
def _grad_input_kernel(xp, wk, g, gsum, full, kh, kw, stride, ho, wo, tile_p, one, dxp):
    """dX = col2im(dX_col), dX_col[k, l] = sum_t G[t, l] E(W[t, k] - X_col[k, l])  (Eq. 6).

    E = HardTanh (``full``; xp and wk = W - c in the shifted frame) or sgn (unshifted).
    One task per (image n, channel c): for each block of tile_p positions and each filter
    offset (i, j) it copies that row of X_col, computes the row of dX_col and adds it into
    the padded plane dxp[n, c], which no other task writes (col2im fused).
    """
    n_img, channels = xp.shape[0], xp.shape[1]
    plane = ho * wo
    for task in prange(n_img * channels):
        n, c = task // channels, task % channels
        dxp[n, c] = 0
        xs = np.empty(tile_p, dtype=dxp.dtype)
        d = np.empty(tile_p, dtype=dxp.dtype)
        segs = np.empty((tile_p // wo + 2, 5), dtype=np.int64)
        for p0 in range(0, plane, tile_p):
            width = min(tile_p, plane - p0)
            count = _segments(n * plane + p0, width, plane, wo, segs)
            for i in range(kh):
                for j in range(kw):
                    k = (c * kh + i) * kw + j
                    _copy_field_row(xp, c, i, j, stride, segs, count, xs)
                    if full:
                        _dx_row_full(xs, wk, g, gsum, n, k, p0, width, one, d)
                    else:
                        _dx_row_sign(xs, wk, g, n, k, p0, width, one, d)
                    _add_field_row(d, c, i, j, stride, segs, count, dxp)


def layer_grad_input(x, w2, g, win, mode="full"):
    """dX (N, C, H, W) of the layer; see reference.layer_grad_input. col2im is fused in."""
    check_grad_mode(mode)
    x, w2, g = _same_dtype(x, w2, g)
    if x.size == 0 or win.plane == 0:
        return np.zeros(win.x_shape, dtype=x.dtype)
    full = mode == "full"
    centre = _centre(x) if full else x.dtype.type(0)
    # sum_t G[n, t, p], which only the full mode reads
    gsum = g.sum(axis=1) if full else np.zeros((1, 1), dtype=x.dtype)
    wk = w2 - centre if full else w2
    p = win.padding
    dxp = np.empty((win.n, win.c, win.h + 2 * p, win.w + 2 * p), dtype=x.dtype)
    _grad_input_kernel(_padded(x, p, centre), wk, g, gsum, full, win.kh, win.kw, win.stride,
                       win.ho, win.wo, _tile(win.c_out, win.plane, largest=1024), x.dtype.type(1), dxp)
    return np.ascontiguousarray(dxp[:, :, p:p + win.h, p:p + win.w])


# ==================================================================== weight gradient
@njit(**_FAST)
def _grad_weight_sign_kernel(cols, weight, grad, one, dw):
    """dw[t, k] += sum_l G[t, l] * sgn(X_col[k, l] - W[t, k])  (Eq. 4; reference.adder_grad_weight).

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
                xv = xs[l]
                s0 += g0[l] * _sgn(xv - w0, one)
                s1 += g1[l] * _sgn(xv - w1, one)
                s2 += g2[l] * _sgn(xv - w2, one)
                s3 += g3[l] * _sgn(xv - w3, one)
            dw[t0, k] += s0
            dw[t0 + 1, k] += s1
            dw[t0 + 2, k] += s2
            dw[t0 + 3, k] += s3
        else:
            for t in range(t0, n_t):
                wv, g0 = weight[t, k], grad[t]
                s = one - one
                for l in range(n_l):
                    s += g0[l] * _sgn(xs[l] - wv, one)
                dw[t, k] += s


def layer_grad_weight(x, w2, g, win, mode="full"):
    """dW (C_out, K) of the layer; see reference.layer_grad_weight.

    Summed over chunks of images, X_col of one chunk at a time (at most 1/DW_CHUNKS of the
    layer's). full (Eq. 5, D = identity): in the shifted frame,
    dW = sum_chunks G_c @ X'_c.T - W' * G.sum(axis=1), one BLAS product per chunk.
    sign (Eq. 4): a Numba reduction per chunk.
    """
    check_grad_mode(mode)
    x, w2, g = _same_dtype(x, w2, g)
    dw = np.zeros(w2.shape, dtype=x.dtype)
    if win.n == 0 or win.plane == 0:
        return dw
    full = mode == "full"
    centre = _centre(x) if full else x.dtype.type(0)
    step = max(1, math.ceil(win.n / DW_CHUNKS))
    for n0 in range(0, win.n, step):
        n1 = min(win.n, n0 + step)
        cols = _im2col(x[n0:n1], win.kh, win.kw, win.stride, win.padding, centre)   # (K, L_c)
        gc = np.ascontiguousarray(g[n0:n1].transpose(1, 0, 2)).reshape(win.c_out, -1)
        if full:
            dw += gc @ cols.T
        else:
            _grad_weight_sign_kernel(cols, w2, gc, x.dtype.type(1), dw)
    if full:
        dw -= (w2 - centre) * g.sum(axis=(0, 2))[:, None]
    return dw


# ================================================== column kernels, on a ready X_col
# X_col (K, L) is the image (1, K, 1, L) of a 1x1 layer: the layer kernels compute it.
def _as_image(cols, weight):
    (k, n_l), c_out = cols.shape, weight.shape[0]
    return cols.reshape(1, k, 1, n_l), Window(1, k, 1, n_l, c_out, 1, 1, 1, 0)


def adder_forward(cols, weight):
    """Eq. 2 in im2col form, (K, L), (C_out, K) -> (C_out, L); see reference.adder_forward."""
    cols, weight = _same_dtype(cols, weight)
    image, win = _as_image(cols, weight)
    return layer_forward(image, weight, win)[0]


def adder_grad_input(cols, weight, grad_out, mode="full"):
    """dX_col[k, l] = sum_t G[t, l] * E(W[t, k] - X_col[k, l]); see reference.adder_grad_input."""
    cols, weight, grad_out = _same_dtype(cols, weight, grad_out)
    image, win = _as_image(cols, weight)
    return layer_grad_input(image, weight, grad_out[None], win, mode).reshape(cols.shape)


def adder_grad_weight(cols, weight, grad_out, mode="full"):
    """dW[t, k] = sum_l G[t, l] * D(X_col[k, l] - W[t, k]); see reference.adder_grad_weight."""
    cols, weight, grad_out = _same_dtype(cols, weight, grad_out)
    image, win = _as_image(cols, weight)
    return layer_grad_weight(image, weight, grad_out[None], win, mode)


# ============================================================================ helpers
def _centre(x):
    """The shift c of the kernels' frame: the mean of the input, in its dtype."""
    return x.dtype.type(x.mean(dtype=np.float64)) if x.size else x.dtype.type(0)


def _same_dtype(*arrays):
    """C-contiguous arrays of one float dtype (float32 stays float32), so each kernel
    compiles once per dtype."""
    dtype = np.result_type(*arrays)
    if dtype not in (np.float32, np.float64):
        dtype = np.float64
    return tuple(np.ascontiguousarray(a, dtype=dtype) for a in arrays)
