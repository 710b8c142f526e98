"""Numba kernels for the CPU: the contract's functions (contract.py), parallel and vectorised.

Every public function here has the name, signature and result of its namesake in
``minadder.kernels.reference``, its definition and the oracle of tests/test_kernels_cpu.py.

Implicit GEMM. The layer kernels read the input image and never build the whole (K, L)
im2col matrix X_col (K = C*kh*kw, L = N*H_out*W_out). ``layer_input`` copies the input
once into a padded buffer (in the shifted frame, below), which the forward and both
full-mode gradients read (a ShiftedInput, kept in the cache). With stride 1, on "wide"
positions q = u * W_padded + v, row (c, i, j) of X_col is then a contiguous stretch of
that buffer, starting at c*H_p*W_p + i*W_p + j (the positions v >= W_out straddle two
rows of the image and are computed and dropped):

* forward: a task owns a few output rows of one image and every channel, and reads the
  rows of X_col in place (other strides: it packs a cache-sized panel of them);
* dX: a task owns one (image, channel) plane; each row of dX_col is added straight into
  the padded gradient at the pixels it came from (col2im fused: no two tasks write the
  same plane);
* dW: full mode reads X from the padded buffer in 4 x 4 (AVX2: 4 x 2) blocks of dot
  products; otherwise it sums over chunks of 1/DW_CHUNKS of the batch, X_col of one chunk
  at a time.
The backward keeps the input x and its padded copy, never X_col (contract.AdderCache).
A 1x1 layer without stride or padding (a fully connected one) is the input's transpose:
one long row.

The l1 "GEMM". |x - w| = x + w - 2 min(x, w): summed over k, the x + w part is
colsum[l] + wsum[t], so the forward's inner loop is one min and one add per adder-MAC
(instead of a subtract, an abs and an add). The inner step keeps MR channels x 4 rows of
W in registers while it streams rows of X_col; MR is chosen for the CPU in ``target.py``
(4 x 4 with 32 vector registers, 2 x 4 with AVX2's 16; no stack accesses either way,
benchmarks/inspect_asm.py).

Precision. That identity, HardTanh as clip(w, x - 1, x + 1) - x, and the full-mode dW
identity all cancel large terms when inputs and filters share a large offset (raw pixels
0-255 fed to a first layer). |x - w|, HT(w - x) and x - w do not change when both are
shifted by the same c, so the kernels work in a frame shifted by c = mean(W), computed
per call: the padded input holds x - c and the filters become w - c. Sign-mode gradients
compare x with w directly and need no shift.

Compilation is lazy (first call, once per dtype) and cached on disk (cache=True).
``fastmath`` lets LLVM use vminps/vmaxps and reassociate sums: inputs must be finite;
results differ from the reference only by float rounding.
"""
import math
import os
from typing import Any, NamedTuple

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

from . import reference
from .contract import Window, check_grad_mode
from .target import TARGET, full_width_features, named_cpu_features

if numba is not None and numba.config.CPU_FEATURES is None:
    # The features Numba compiles for (read when it first compiles; part of its cache key):
    # a CPU named by NUMBA_CPU_NAME gets its own, not the host's; the host gets 512-bit
    # vectors where LLVM would prefer 256 (see target.py)
    named = named_cpu_features()
    numba.config.CPU_FEATURES = named if named is not None else full_width_features()

#: rows of X_col per packed panel of the forward (CHUNK_K x tile floats, in L2)
CHUNK_K = 64
#: the register block of the forward's inner step: MR channels x 4 rows (see target.py)
MR = 4 if TARGET.blocking == "wide" else 2
#: the forward computes whole vectors: its rows are rounded up to a multiple of VECTOR
VECTOR = 16
#: spare numbers after each padded image, for those rounded-up reads
SLACK = VECTOR
#: dW sums over chunks of images whose X_col has at most 1/DW_CHUNKS of the layer's
DW_CHUNKS = 8


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
    """The shifted, zero-padded input: (N, C, H + 2p, W + 2p), C-contiguous.

    Each image's block is followed by SLACK spare numbers, so that the forward may read
    whole vectors past the last receptive field (into values it then drops).
    """
    n, c, h, w = x.shape
    hp, wp = h + 2 * padding, w + 2 * padding
    buf = np.empty((n, c * hp * wp + SLACK), dtype=x.dtype)
    buf[:, c * hp * wp:] = 0
    xp = buf[:, :c * hp * wp].reshape(n, c, hp, wp)
    if padding:
        xp[:, :, :padding] = xp[:, :, h + padding:] = -centre
        xp[:, :, :, :padding] = xp[:, :, :, w + padding:] = -centre
    np.subtract(x, centre, out=xp[:, :, padding:padding + h, padding:padding + w])
    return xp, buf


class ShiftedInput(NamedTuple):
    """The cpu layer kernels' input (``layer_input``): x and its padded copy in the frame
    shifted by ``centre`` (the filters' mean when the forward ran). The forward builds it
    once; the full-mode gradients read the same copy (any common shift of x and W leaves
    |x - w| and its gradients unchanged) instead of building two more."""
    x: np.ndarray       # (N, C, H, W)
    xp: np.ndarray      # (N, C, H + 2p, W + 2p), a view into flat
    flat: np.ndarray    # (N, C * Hp * Wp + SLACK), see _padded
    centre: Any         # a scalar of x's dtype


def _raw_input(x):
    """The array x of a layer kernel's argument (an array, or layer_input's record)."""
    return x.x if isinstance(x, ShiftedInput) else x


def _shifted(given, x, w2, win):
    """(xp, flat, centre): x padded in the frame shifted by the filters' mean, the copy
    that layer_input made if ``given`` is one (of x's dtype and this window), else a new one."""
    hp, wp = win.h + 2 * win.padding, win.w + 2 * win.padding
    if isinstance(given, ShiftedInput) and given.xp.dtype == x.dtype and given.xp.shape[2:] == (hp, wp):
        return given.xp, given.flat, given.centre
    centre = _centre(w2)
    return (*_padded(x, win.padding, centre), centre)


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


def im2col(x, kh, kw, stride=1, padding=0):
    """Unroll receptive fields into X_col (K, L): reference.im2col (for conv2d)."""
    (x,) = _same_dtype(x)
    return reference.im2col(x, kh, kw, stride, padding)


def col2im(cols, x_shape, kh, kw, stride=1, padding=0):
    """Scatter-add columns back to an image (the adjoint of im2col): reference.col2im."""
    (cols,) = _same_dtype(cols)
    return reference.col2im(cols, x_shape, kh, kw, stride, padding)


# ===================================================================== forward (Eq. 2)
# The inner steps read rows of X_col from a flat array ``src``: row k0 + kk starts at
# src[base + koff[kk]]. With stride 1 the rows are read straight from the padded input
# (see _wide_offsets); otherwise from a packed panel.
@njit(fastmath=True, cache=True)
def _min_sums_4x4(src, koff, base, wsh, t0, k0, nk, width, acc):
    """acc[t0 + r, q] += sum_{kk < nk} min(X'[k0 + kk, q], W'[t0 + r, k0 + kk]) for r < 4.

    The "wide" inner step (32 vector registers): 4 channels x 4 rows of W' as scalars,
    each x vector loaded serves 4 channels, each accumulator load/store 4 rows. Row
    views indexed by a range variable let Numba emit plain vector loads.
    """
    a_0, a_1, a_2, a_3 = acc[t0, :width], acc[t0 + 1, :width], acc[t0 + 2, :width], acc[t0 + 3, :width]
    nk4 = nk - nk % 4
    for kk in range(0, nk4, 4):
        k = k0 + kk
        w00, w01, w02, w03 = wsh[t0, k], wsh[t0, k + 1], wsh[t0, k + 2], wsh[t0, k + 3]
        w10, w11, w12, w13 = wsh[t0 + 1, k], wsh[t0 + 1, k + 1], wsh[t0 + 1, k + 2], wsh[t0 + 1, k + 3]
        w20, w21, w22, w23 = wsh[t0 + 2, k], wsh[t0 + 2, k + 1], wsh[t0 + 2, k + 2], wsh[t0 + 2, k + 3]
        w30, w31, w32, w33 = wsh[t0 + 3, k], wsh[t0 + 3, k + 1], wsh[t0 + 3, k + 2], wsh[t0 + 3, k + 3]
        s0, s1, s2, s3 = base + koff[kk], base + koff[kk + 1], base + koff[kk + 2], base + koff[kk + 3]
        r0, r1, r2, r3 = src[s0:s0 + width], src[s1:s1 + width], src[s2:s2 + width], src[s3:s3 + width]
        for q in range(width):
            x0, x1, x2, x3 = r0[q], r1[q], r2[q], r3[q]
            a_0[q] += (min(x0, w00) + min(x1, w01)) + (min(x2, w02) + min(x3, w03))
            a_1[q] += (min(x0, w10) + min(x1, w11)) + (min(x2, w12) + min(x3, w13))
            a_2[q] += (min(x0, w20) + min(x1, w21)) + (min(x2, w22) + min(x3, w23))
            a_3[q] += (min(x0, w30) + min(x1, w31)) + (min(x2, w32) + min(x3, w33))
    for kk in range(nk4, nk):   # rows left over
        k, s0 = k0 + kk, base + koff[kk]
        w0, w1, w2, w3 = wsh[t0, k], wsh[t0 + 1, k], wsh[t0 + 2, k], wsh[t0 + 3, k]
        r0 = src[s0:s0 + width]
        for q in range(width):
            x0 = r0[q]
            a_0[q] += min(x0, w0)
            a_1[q] += min(x0, w1)
            a_2[q] += min(x0, w2)
            a_3[q] += min(x0, w3)


@njit(fastmath=True, cache=True)
def _min_sums_2x4(src, koff, base, wsh, t0, k0, nk, width, acc):
    """The "narrow" inner step (16 vector registers): as _min_sums_4x4 for 2 channels.

    8 broadcast weights, 4 x vectors and 2 accumulators fit AVX2's 16 ymm registers.
    """
    a_0, a_1 = acc[t0, :width], acc[t0 + 1, :width]
    nk4 = nk - nk % 4
    for kk in range(0, nk4, 4):
        k = k0 + kk
        w00, w01, w02, w03 = wsh[t0, k], wsh[t0, k + 1], wsh[t0, k + 2], wsh[t0, k + 3]
        w10, w11, w12, w13 = wsh[t0 + 1, k], wsh[t0 + 1, k + 1], wsh[t0 + 1, k + 2], wsh[t0 + 1, k + 3]
        s0, s1, s2, s3 = base + koff[kk], base + koff[kk + 1], base + koff[kk + 2], base + koff[kk + 3]
        r0, r1, r2, r3 = src[s0:s0 + width], src[s1:s1 + width], src[s2:s2 + width], src[s3:s3 + width]
        for q in range(width):
            x0, x1, x2, x3 = r0[q], r1[q], r2[q], r3[q]
            a_0[q] += (min(x0, w00) + min(x1, w01)) + (min(x2, w02) + min(x3, w03))
            a_1[q] += (min(x0, w10) + min(x1, w11)) + (min(x2, w12) + min(x3, w13))
    for kk in range(nk4, nk):
        k, s0 = k0 + kk, base + koff[kk]
        w0, w1 = wsh[t0, k], wsh[t0 + 1, k]
        r0 = src[s0:s0 + width]
        for q in range(width):
            x0 = r0[q]
            a_0[q] += min(x0, w0)
            a_1[q] += min(x0, w1)


@njit(fastmath=True, cache=True)
def _min_sums_1(src, koff, base, wsh, t, k0, nk, width, acc):
    """acc[t, q] += sum_kk min(X'[k0 + kk, q], W'[t, k0 + kk]): one channel left over."""
    a = acc[t, :width]
    for kk in range(nk):
        wv, s0 = wsh[t, k0 + kk], base + koff[kk]
        r0 = src[s0:s0 + width]
        for q in range(width):
            a[q] += min(r0[q], wv)


_MIN_SUMS = _min_sums_4x4 if MR == 4 else _min_sums_2x4


@njit(fastmath=True, cache=True)
def _min_sums_all(src, koff, base, wsh, k0, nk, width, acc):
    """acc[t, q] += sum_kk min(X'[k0 + kk, q], W'[t, k0 + kk]) for every channel t."""
    n_t = wsh.shape[0]
    t = 0
    while t + MR <= n_t:
        _MIN_SUMS(src, koff, base, wsh, t, k0, nk, width, acc)
        t += MR
    for tt in range(t, n_t):   # the C_out % MR channels left over
        _min_sums_1(src, koff, base, wsh, tt, k0, nk, width, acc)


@njit(fastmath=True, cache=True)
def _weight_sums(wsh):
    n_t, n_k = wsh.shape
    wsum = np.zeros(n_t, dtype=wsh.dtype)
    for t in range(n_t):
        for k in range(n_k):
            wsum[t] += wsh[t, k]
    return wsum


@njit(**_FAST)
def _forward_wide_kernel(xp2, koff, wsh, pitch, ho, wo, rows, out):
    """Eq. 2 for stride 1, reading X_col straight from the padded input (reference.layer_forward).

    In the shifted frame (xp = Xp - c, wsh = W - c) and with |a - b| = a + b - 2 min(a, b):
    out = 2 sum_k min(x', w') - colsum'[l] - wsum'[t]. A task owns ``rows`` output rows of
    one image and every channel. It works on "wide" positions q = (u - u0)*pitch + v with
    pitch the padded row length: there, row k = (c, i, j) of X_col is the contiguous
    stretch xp2[n, koff[k] + u0*pitch + q] (koff[k] = c*Hp*Wp + i*Wp + j), and the
    positions v >= wo of each row, which straddle two rows of the image, are computed and
    dropped.
    """
    n_k = wsh.shape[1]
    n_img, n_t = out.shape[0], out.shape[1]
    wsum = _weight_sums(wsh)
    blocks = (ho + rows - 1) // rows
    for task in prange(n_img * blocks):
        n, u0 = task // blocks, (task % blocks) * rows
        u1 = min(ho, u0 + rows)
        width = (u1 - u0 - 1) * pitch + wo
        width += (-width) % VECTOR                         # whole vectors (SLACK covers it)
        base = u0 * pitch
        img = xp2[n]
        acc = np.zeros((n_t, width), dtype=wsh.dtype)      # sum_k min(x', w')
        colsum = np.zeros(width, dtype=wsh.dtype)          # sum_k x'
        for k in range(n_k):
            row = img[base + koff[k]:base + koff[k] + width]
            for q in range(width):
                colsum[q] += row[q]
        for k0 in range(0, n_k, CHUNK_K):   # CHUNK_K rows at a time stay in L1/L2
            nk = min(CHUNK_K, n_k - k0)
            _min_sums_all(img, koff[k0:k0 + nk], base, wsh, k0, nk, width, acc)
        for t in range(n_t):   # out = 2 acc - colsum - wsum, output row by output row
            for u in range(u0, u1):
                q0 = (u - u0) * pitch
                dst, a, cs = out[n, t, u * wo:(u + 1) * wo], acc[t, q0:q0 + wo], colsum[q0:q0 + wo]
                for v in range(wo):
                    dst[v] = (a[v] + a[v]) - cs[v] - wsum[t]


@njit(**_FAST)
def _forward_packed_kernel(xp, wsh, kh, kw, stride, ho, wo, tile, out):
    """Eq. 2 for any stride: as _forward_wide_kernel, but a task owns ``tile`` positions
    and packs their receptive fields into a panel, CHUNK_K rows of X_col at a time."""
    n_k = wsh.shape[1]
    n_img, n_t, plane = out.shape
    n_l = n_img * plane
    wsum = _weight_sums(wsh)
    koff = np.arange(CHUNK_K) * tile            # panel row kk starts at kk * tile
    for b in prange((n_l + tile - 1) // tile):
        l0 = b * tile
        width = min(tile, n_l - l0)
        segs = np.empty((tile // wo + 2, 5), dtype=np.int64)
        count = _segments(l0, width, plane, wo, segs)
        panel = np.empty(CHUNK_K * tile, dtype=wsh.dtype)
        acc = np.zeros((n_t, width), dtype=wsh.dtype)
        colsum = np.zeros(width, dtype=wsh.dtype)
        for k0 in range(0, n_k, CHUNK_K):
            nk = min(CHUNK_K, n_k - k0)
            for kk in range(nk):
                c, ij = (k0 + kk) // (kh * kw), (k0 + kk) % (kh * kw)
                row = panel[kk * tile:kk * tile + width]
                _copy_field_row(xp, c, ij // kw, ij % kw, stride, segs, count, row)
                for q in range(width):
                    colsum[q] += row[q]
            _min_sums_all(panel, koff, 0, wsh, k0, nk, width, acc)
        for t in range(n_t):
            for r in range(count):
                n, u, v0, length, q0 = segs[r, 0], segs[r, 1], segs[r, 2], segs[r, 3], segs[r, 4]
                dst = out[n, t, u * wo + v0:u * wo + v0 + length]
                a, cs = acc[t, q0:q0 + length], colsum[q0:q0 + length]
                for q in range(length):
                    dst[q] = (a[q] + a[q]) - cs[q] - wsum[t]


def _wide_offsets(win, xp):
    """koff[k]: where row k = (c, i, j) of X_col starts in a flat padded image (c*Hp*Wp + i*Wp + j)."""
    hp, wp = xp.shape[2], xp.shape[3]
    c, i, j = np.meshgrid(np.arange(win.c), np.arange(win.kh), np.arange(win.kw), indexing="ij")
    return np.ascontiguousarray((c * hp * wp + i * wp + j).reshape(-1), dtype=np.int64)


def _rows_per_task(win, pitch):
    """Output rows per forward task: about 512 wide positions (C_out x 512 accumulators),
    fewer when that leaves a thread without work."""
    rows = max(1, min(win.ho, 512 // pitch))
    while rows > 1 and win.n * -(-win.ho // rows) < 4 * numba.get_num_threads():
        rows = -(-rows // 2)
    return rows


def _tile(c_out, positions, smallest=64, largest=512):
    """Positions per packed task: C_out x tile accumulators stay in L2, and there are
    enough tasks for every thread."""
    tile = min(largest, max(smallest, (32768 // max(1, c_out)) // 16 * 16))
    while tile > smallest and -(-positions // tile) < 4 * numba.get_num_threads():
        tile //= 2
    return tile


def _pointwise(win):
    """A 1x1 layer without stride or padding (a fully connected one among them): its
    X_col is the input's transpose, worked on as one image of a single long row (an input
    that is that row already, N = H = 1, goes straight to the kernels)."""
    single_row = win.n == 1 and win.h == 1
    return win.kh == win.kw == 1 and win.stride == 1 and win.padding == 0 and not single_row


def _as_row(a):
    """(N, C, P) or (N, C, H, W) -> the image (1, C, 1, N*P) of a pointwise layer."""
    n, c = a.shape[:2]
    return np.ascontiguousarray(a.reshape(n, c, -1).transpose(1, 0, 2)).reshape(1, c, 1, -1)


def _from_row(a, n, shape):
    """The inverse of _as_row: (1, C, ..., N*P) -> (N, C) + shape."""
    c = a.shape[1]
    return np.ascontiguousarray(a.reshape(c, n, -1).transpose(1, 0, 2)).reshape((n, c) + tuple(shape))


def _row_window(win):
    return Window(1, win.c, 1, win.l, win.c_out, 1, 1, 1, 0)


def _wide_rows(win):
    """Stride 1 reads rows of X_col straight from the padded input (images of several rows)."""
    return win.stride == 1 and win.ho > 1


def layer_input(x, w2, win):
    """The input as these layer kernels read it: a ShiftedInput (x padded and shifted once
    for the forward and both gradients), or x itself for an empty or pointwise layer."""
    x, w2 = _same_dtype(x, w2)
    if x.size == 0 or win.plane == 0 or _pointwise(win):
        return x
    return ShiftedInput(x, *_shifted(None, x, w2, win))


def layer_forward(x, w2, win):
    """Eq. 2 on images: y (N, C_out, P); see reference.layer_forward."""
    given = x
    x, w2 = _same_dtype(_raw_input(x), w2)
    y = np.empty((win.n, win.c_out, win.plane), dtype=x.dtype)
    if y.size == 0:
        return y
    if _pointwise(win):
        return _from_row(layer_forward(_as_row(x), w2, _row_window(win)), win.n, (win.plane,))
    xp, flat, centre = _shifted(given, x, w2, win)
    if _wide_rows(win):
        pitch = xp.shape[3]
        _forward_wide_kernel(flat, _wide_offsets(win, xp), w2 - centre, pitch,
                             win.ho, win.wo, _rows_per_task(win, pitch), y)
    else:
        _forward_packed_kernel(xp, w2 - centre, win.kh, win.kw, win.stride, win.ho, win.wo,
                               _tile(win.c_out, win.l), y)
    return y


# ===================================================================== input gradient
# ``one`` is 1 in the arrays' dtype, passed in so that float32 stays float32 (a Python
# literal 1.0 is float64 in Numba, and would turn the whole loop into float64 code).
@njit(inline="always")
def _sgn(z, one):
    """sgn(z) with sgn(0) = 0."""
    return one if z > 0 else (-one if z < 0 else one - one)


@njit(fastmath=True, cache=True)
def _dx_row_full(xs, wsh, gn, gs, k, width, one, d):
    """d[q] += sum_t G[t, q] * HT(W'[t, k] - xs[q])  (Eq. 6), G = gn (C_out, >= width).

    HT(w - x) = clip(w, x - 1, x + 1) - x, so d = sum_t G clip(W', x - 1, x + 1) - x * gs
    with gs[q] = sum_t G[t, q]: a max, a min and a multiply-add per term, 8 channels per
    pass over d. The rows of G are indexed through one 2-D array (not 8 views), so that
    LLVM needs a single run-time alias check between d and G to vectorise the loop.
    """
    n_t = wsh.shape[0]
    for q in range(width):
        d[q] -= xs[q] * gs[q]
    t = 0
    while t + 8 <= n_t:
        w0, w1, w2, w3 = wsh[t, k], wsh[t + 1, k], wsh[t + 2, k], wsh[t + 3, k]
        w4, w5, w6, w7 = wsh[t + 4, k], wsh[t + 5, k], wsh[t + 6, k], wsh[t + 7, k]
        for q in range(width):
            lo, hi = xs[q] - one, xs[q] + one
            d[q] += ((gn[t, q] * min(max(w0, lo), hi) + gn[t + 1, q] * min(max(w1, lo), hi))
                     + (gn[t + 2, q] * min(max(w2, lo), hi) + gn[t + 3, q] * min(max(w3, lo), hi))) \
                + ((gn[t + 4, q] * min(max(w4, lo), hi) + gn[t + 5, q] * min(max(w5, lo), hi))
                   + (gn[t + 6, q] * min(max(w6, lo), hi) + gn[t + 7, q] * min(max(w7, lo), hi)))
        t += 8
    for tt in range(t, n_t):   # channels left over
        wv = wsh[tt, k]
        for q in range(width):
            d[q] += gn[tt, q] * min(max(wv, xs[q] - one), xs[q] + one)


@njit(fastmath=True, cache=True)
def _dx_row_sign(xs, w2, gn, k, width, one, d):
    """d[q] += sum_t G[t, q] * sgn(W[t, k] - xs[q]), G = gn; 4 channels per pass over d."""
    n_t = w2.shape[0]
    t = 0
    while t + 4 <= n_t:
        w0, w1, w2_, w3 = w2[t, k], w2[t + 1, k], w2[t + 2, k], w2[t + 3, k]
        for q in range(width):
            xv = xs[q]
            d[q] += (gn[t, q] * _sgn(w0 - xv, one) + gn[t + 1, q] * _sgn(w1 - xv, one)) \
                + (gn[t + 2, q] * _sgn(w2_ - xv, one) + gn[t + 3, q] * _sgn(w3 - xv, one))
        t += 4
    for tt in range(t, n_t):
        wv = w2[tt, k]
        for q in range(width):
            d[q] += gn[tt, q] * _sgn(wv - xs[q], one)


@njit(**_FAST)
def _grad_input_wide_kernel(xp2, koff, wk, gw, gsum, full, fields, npos, one, dxp2):
    """dX for stride 1, col2im fused: dX_col[k, l] = sum_t G[t, l] E(W[t, k] - X_col[k, l])  (Eq. 6).

    E = HardTanh (``full``; xp2 and wk = W - c in the shifted frame) or sgn (unshifted).
    On wide positions (see _forward_wide_kernel), row k of X_col for image n is the
    stretch xp2[n, koff[k]:koff[k] + npos] and the pixels it reads are the same stretch
    of the padded dX: so a row of dX_col is added straight into dxp2. G is laid out wide
    too (gw, with zeros at the dropped positions, which then add nothing). One task per
    (image, channel): its ``fields`` = kh*kw rows write only that channel's plane.
    """
    n_img = xp2.shape[0]
    channels = koff.shape[0] // fields
    plane = dxp2.shape[1] // channels
    for task in prange(n_img * channels):
        n, c = task // channels, task % channels
        dst_plane = dxp2[n, c * plane:(c + 1) * plane]
        for q in range(plane):
            dst_plane[q] = 0
        for f in range(fields):
            k = c * fields + f
            off = koff[k]
            xs, dst = xp2[n, off:off + npos], dxp2[n, off:off + npos]
            if full:   # each row of dX_col is added straight into the pixels it came from
                _dx_row_full(xs, wk, gw[n], gsum[n], k, npos, one, dst)
            else:
                _dx_row_sign(xs, wk, gw[n], k, npos, one, dst)


@njit(**_FAST)
def _grad_input_packed_kernel(xp, wk, g, gsum, full, kh, kw, stride, ho, wo, one, dxp):
    """dX for any stride, col2im fused (as _grad_input_wide_kernel): one task per (image n,
    channel c); for each filter offset (i, j) it copies that row of X_col (the image's
    positions), computes the row of dX_col and adds it into the padded plane dxp[n, c]."""
    n_img, channels = xp.shape[0], xp.shape[1]
    plane = ho * wo
    for task in prange(n_img * channels):
        n, c = task // channels, task % channels
        dxp[n, c] = 0
        xs = np.empty(plane, dtype=dxp.dtype)
        d = np.empty(plane, dtype=dxp.dtype)
        segs = np.empty((ho + 1, 5), dtype=np.int64)
        count = _segments(n * plane, plane, plane, wo, segs)
        for i in range(kh):
            for j in range(kw):
                k = (c * kh + i) * kw + j
                _copy_field_row(xp, c, i, j, stride, segs, count, xs)
                d[:] = 0
                if full:
                    _dx_row_full(xs, wk, g[n], gsum[n], k, plane, one, d)
                else:
                    _dx_row_sign(xs, wk, g[n], k, plane, one, d)
                _add_field_row(d, c, i, j, stride, segs, count, dxp)


def _wide(g, win, pitch):
    """G (N, C_out, P) on wide positions (N, C_out, H_out * pitch), zeros where v >= W_out."""
    gw = np.zeros((win.n, win.c_out, win.ho, pitch), dtype=g.dtype)
    gw[:, :, :, :win.wo] = g.reshape(win.n, win.c_out, win.ho, win.wo)
    return gw.reshape(win.n, win.c_out, win.ho * pitch)


def layer_grad_input(x, w2, g, win, mode="full"):
    """dX (N, C, H, W) of the layer; see reference.layer_grad_input. col2im is fused in."""
    check_grad_mode(mode)
    given = x
    x, w2, g = _same_dtype(_raw_input(x), w2, g)
    if x.size == 0 or win.plane == 0:
        return np.zeros(win.x_shape, dtype=x.dtype)
    if _pointwise(win):
        dx = layer_grad_input(_as_row(x), w2, _as_row(g).reshape(1, win.c_out, -1), _row_window(win), mode)
        return _from_row(dx, win.n, (win.h, win.w))
    full = mode == "full"
    if full:
        xp, flat, centre = _shifted(given, x, w2, win)
        wk = w2 - centre
    else:   # sgn(w - x) compares unshifted values (a shift could round a near-tie to 0)
        xp, flat = _padded(x, win.padding, x.dtype.type(0))
        wk = w2
    one = x.dtype.type(1)
    dxp = np.empty(xp.shape, dtype=x.dtype)
    if _wide_rows(win):
        pitch = xp.shape[3]
        gw = _wide(g, win, pitch)
        # sum_t G[n, t, p], which only the full mode reads
        gsum = gw.sum(axis=1) if full else np.zeros((win.n, 1), dtype=x.dtype)
        npos = (win.ho - 1) * pitch + win.wo
        _grad_input_wide_kernel(flat, _wide_offsets(win, xp), wk, gw, gsum, full, win.kh * win.kw,
                                npos, one, dxp.reshape(win.n, -1))
    else:
        gsum = g.sum(axis=1) if full else np.zeros((win.n, 1), dtype=x.dtype)
        _grad_input_packed_kernel(xp, wk, g, gsum, full, win.kh, win.kw, win.stride, win.ho, win.wo,
                                  one, dxp)
    p = win.padding
    return np.ascontiguousarray(dxp[:, :, p:p + win.h, p:p + win.w])


# ==================================================================== weight gradient
@njit(inline="always")
def _dw_term(xv, wv, full, one):
    """D(x - w) of Eq. 5 / Eq. 4 without the w: x (full; the -w part is added apart) or sgn(x - w)."""
    return xv if full else _sgn(xv - wv, one)


@njit(**_FAST)
def _grad_weight_kernel(cols, weight, grad, full, one, dw):
    """dw[t, k] += sum_l G[t, l] * D(X_col[k, l] - W[t, k])  (reference.adder_grad_weight).

    full (Eq. 5): the sum of G * X only; the caller subtracts W * sum_l G. sign (Eq. 4):
    G * sgn(X - W). One task per (4 channels, row k): four dot-product-like reductions
    along L, which LLVM vectorises (fastmath lets it reassociate the sums).
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
                s0 += g0[l] * _dw_term(xv, w0, full, one)
                s1 += g1[l] * _dw_term(xv, w1, full, one)
                s2 += g2[l] * _dw_term(xv, w2, full, one)
                s3 += g3[l] * _dw_term(xv, w3, full, one)
            dw[t0, k] += s0
            dw[t0 + 1, k] += s1
            dw[t0 + 2, k] += s2
            dw[t0 + 3, k] += s3
        else:
            for t in range(t0, n_t):
                wv, g0 = weight[t, k], grad[t]
                s = one - one
                for l in range(n_l):
                    s += g0[l] * _dw_term(xs[l], wv, full, one)
                dw[t, k] += s


@njit(parallel=True, cache=True)
def _wide_columns(xp2, koff, n0, n1, npos, cols):
    """cols[k, (n - n0)*npos + q] = xp2[n, koff[k] + q]: X_col of images n0..n1 on wide positions."""
    n_k = koff.shape[0]
    for task in prange((n1 - n0) * n_k):
        n, k = n0 + task // n_k, task % n_k
        src = xp2[n, koff[k]:koff[k] + npos]
        dst = cols[k, (n - n0) * npos:(n - n0 + 1) * npos]
        for q in range(npos):
            dst[q] = src[q]


def _columns_in_chunks(xp, flat, g, win):
    """(X_col, G) of chunks of about N / DW_CHUNKS images, from the padded input xp (its
    frame is X_col's): X_col (K, L_c), G (C_out, L_c) with the matching columns. Stride 1
    uses wide positions (G is zero at the dropped ones, so they add nothing to dW)."""
    step = max(1, math.ceil(win.n / DW_CHUNKS))
    if win.stride == 1:
        pitch = xp.shape[3]
        koff, npos = _wide_offsets(win, xp), (win.ho - 1) * pitch + win.wo
        gw = _wide(g, win, pitch)[:, :, :npos]
    for n0 in range(0, win.n, step):
        n1 = min(win.n, n0 + step)
        if win.stride == 1:
            cols = np.empty((win.k, (n1 - n0) * npos), dtype=xp.dtype)
            _wide_columns(flat, koff, n0, n1, npos, cols)
            gc = gw[n0:n1]
        else:
            cols = reference.im2col(xp[n0:n1], win.kh, win.kw, win.stride, 0)
            gc = g[n0:n1]
        yield cols, np.ascontiguousarray(gc.transpose(1, 0, 2)).reshape(win.c_out, -1)


@njit(fastmath=True, cache=True)
def _dot_4x4(r0, r1, r2, r3, g0, g1, g2, g3, width, acc):
    """acc[i, j] += sum_q g_i[q] * r_j[q]: a 4 x 4 block of dot products (16 accumulators)."""
    s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = acc[0, 0] - acc[0, 0]
    s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = s00
    for q in range(width):
        x0, x1, x2, x3 = r0[q], r1[q], r2[q], r3[q]
        a, b, c, d = g0[q], g1[q], g2[q], g3[q]
        s00 += a * x0
        s01 += a * x1
        s02 += a * x2
        s03 += a * x3
        s10 += b * x0
        s11 += b * x1
        s12 += b * x2
        s13 += b * x3
        s20 += c * x0
        s21 += c * x1
        s22 += c * x2
        s23 += c * x3
        s30 += d * x0
        s31 += d * x1
        s32 += d * x2
        s33 += d * x3
    acc[0, 0] += s00
    acc[0, 1] += s01
    acc[0, 2] += s02
    acc[0, 3] += s03
    acc[1, 0] += s10
    acc[1, 1] += s11
    acc[1, 2] += s12
    acc[1, 3] += s13
    acc[2, 0] += s20
    acc[2, 1] += s21
    acc[2, 2] += s22
    acc[2, 3] += s23
    acc[3, 0] += s30
    acc[3, 1] += s31
    acc[3, 2] += s32
    acc[3, 3] += s33


@njit(fastmath=True, cache=True)
def _dot_4x2(r0, r1, g0, g1, g2, g3, width, acc):
    """acc[i, j] += sum_q g_i[q] * r_j[q] for a 4 x 2 block (8 accumulators: AVX2's 16 registers)."""
    s00 = s01 = s10 = s11 = s20 = s21 = s30 = s31 = acc[0, 0] - acc[0, 0]
    for q in range(width):
        x0, x1 = r0[q], r1[q]
        a, b, c, d = g0[q], g1[q], g2[q], g3[q]
        s00 += a * x0
        s01 += a * x1
        s10 += b * x0
        s11 += b * x1
        s20 += c * x0
        s21 += c * x1
        s30 += d * x0
        s31 += d * x1
    acc[0, 0] += s00
    acc[0, 1] += s01
    acc[1, 0] += s10
    acc[1, 1] += s11
    acc[2, 0] += s20
    acc[2, 1] += s21
    acc[3, 0] += s30
    acc[3, 1] += s31


#: rows of X per block of the full-mode dW product: 4 with 32 vector registers, else 2
KB = 4 if MR == 4 else 2


@njit(**_FAST)
def _grad_weight_wide_kernel(xp2, koff, gw, npos, dw):
    """dw[t, k] = sum_n sum_q G[n, t, q] X'[n, k, q] on wide positions, stride 1: the
    G X'^T part of the full-mode dW (Eq. 5), reading row k of X' straight from the padded
    input (xp2[n, koff[k]:]) and never building X_col. One task per (4 channels, KB rows):
    a register block of 4 x KB dot products, run image by image."""
    n_img, n_t = gw.shape[0], gw.shape[1]
    n_k = koff.shape[0]
    blocks_k = (n_k + KB - 1) // KB
    for task in prange(((n_t + 3) // 4) * blocks_k):
        t0, k0 = (task // blocks_k) * 4, (task % blocks_k) * KB
        acc = np.zeros((4, 4), dtype=dw.dtype)
        if t0 + 4 <= n_t and k0 + KB <= n_k:
            for n in range(n_img):
                img, gn = xp2[n], gw[n]
                g0, g1, g2, g3 = gn[t0, :npos], gn[t0 + 1, :npos], gn[t0 + 2, :npos], gn[t0 + 3, :npos]
                if KB == 4:
                    o0, o1, o2, o3 = koff[k0], koff[k0 + 1], koff[k0 + 2], koff[k0 + 3]
                    _dot_4x4(img[o0:o0 + npos], img[o1:o1 + npos], img[o2:o2 + npos], img[o3:o3 + npos],
                             g0, g1, g2, g3, npos, acc)
                else:
                    o0, o1 = koff[k0], koff[k0 + 1]
                    _dot_4x2(img[o0:o0 + npos], img[o1:o1 + npos], g0, g1, g2, g3, npos, acc)
            for i in range(4):
                for j in range(KB):
                    dw[t0 + i, k0 + j] = acc[i, j]
        else:   # the edge blocks, one dot product at a time
            for t in range(t0, min(n_t, t0 + 4)):
                for k in range(k0, min(n_k, k0 + KB)):
                    s = acc[0, 0] - acc[0, 0]
                    for n in range(n_img):
                        row, gr = xp2[n, koff[k]:koff[k] + npos], gw[n, t, :npos]
                        for q in range(npos):
                            s += gr[q] * row[q]
                    dw[t, k] = s


def layer_grad_weight(x, w2, g, win, mode="full"):
    """dW (C_out, K) of the layer; see reference.layer_grad_weight.

    full (Eq. 5, D = identity): in the shifted frame, dW = G X'^T - W' * G.sum(axis=1);
    with stride 1 the product reads X' from the padded input (_grad_weight_wide_kernel).
    sign (Eq. 4), and larger strides: sum G sgn(X - W) or G X'^T over chunks of images,
    X_col of one chunk at a time (at most 1/DW_CHUNKS of the layer's).
    (A Numba reduction rather than NumPy's BLAS, whose threads stall when the machine's
    cores are busy with other work: 0.2-1.4 G/s measured so, against 7-40 alone.)
    """
    check_grad_mode(mode)
    given = x
    x, w2, g = _same_dtype(_raw_input(x), w2, g)
    dw = np.zeros(w2.shape, dtype=x.dtype)
    if win.n == 0 or win.plane == 0:
        return dw
    if _pointwise(win):
        return layer_grad_weight(_as_row(x), w2, _as_row(g).reshape(1, win.c_out, -1), _row_window(win), mode)
    full = mode == "full"
    if full:
        xp, flat, centre = _shifted(given, x, w2, win)
    else:   # sgn(x - w) compares unshifted values
        centre = x.dtype.type(0)
        xp, flat = _padded(x, win.padding, centre)
    pitch = xp.shape[3]
    npos = (win.ho - 1) * pitch + win.wo
    if full and _wide_rows(win) and npos >= 200:   # rows read from the padded input, no X_col
        # (with shorter rows the per-image reductions cost more than building X_col)
        gw = np.ascontiguousarray(_wide(g, win, pitch))
        _grad_weight_wide_kernel(flat, _wide_offsets(win, xp), gw, npos, dw)
    else:
        for cols, gc in _columns_in_chunks(xp, flat, g, win):
            _grad_weight_kernel(cols, w2, gc, full, x.dtype.type(1), dw)
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
def _centre(w2):
    """The shift c of the kernels' frame: the mean of the filters, in their dtype.

    Cancellation only hurts where x and w both sit near a common offset, and there the
    filters' mean finds it; elsewhere |x - w| is large next to the rounding. (The filters
    are small: no pass over the input is needed.)"""
    return w2.dtype.type(w2.mean(dtype=np.float64)) if w2.size else w2.dtype.type(0)


def _same_dtype(*arrays):
    """C-contiguous arrays of one float dtype (float32 stays float32), so each kernel
    compiles once per dtype."""
    dtype = np.result_type(*arrays)
    if dtype not in (np.float32, np.float64):
        dtype = np.float64
    return tuple(np.ascontiguousarray(a, dtype=dtype) for a in arrays)
