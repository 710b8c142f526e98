"""Where a row of X_col lies in the padded input: "wide" positions (stride 1, read in
place) and runs of output positions (any stride, copied into a panel).

Wide positions. With stride 1, number the outputs of one image q = u * pitch + v, with
pitch the numbers between two rows of the padded frame (W + p: rows share their padding,
frame.py). Then row k = (c, i, j) of X_col is the contiguous stretch of the flat padded
image starting at koff[k] = c*plane + i*pitch + j: the kernels read it in place, no
im2col at all. The positions v >= W_out of each row straddle two rows of the image; they
are computed and dropped (one a row for a 3x3 layer with padding 1: 3 % of the work at
32x32, 11 % at 8x8).

Runs. Any other stride: a block of output positions l = n*P + u*W_out + v is cut into
runs along one output row (``segments``); each run of a row of X_col is a strided slice
of one row of the padded input, copied out or added back into the padded gradient (its
adjoint: col2im, one row of X_col at a time), both by ``field_row``. With stride 1 or 2
the forward and dW's columns copy runs out by whole vectors instead (``copy_runs``).
"""
import functools
from dataclasses import dataclass
from typing import Optional

import numpy as np
from numba import njit, prange

from .frame import VECTOR, phase_rows, phased, plane_size, row_pitch
from .register_block import add_spread_vector, copy_vector, lanes_of, vector_length


def wide_rows(win):
    """Stride 1 on images of several output rows, or stride 2 on a frame split by parity
    (frame.phased): read X_col on wide positions."""
    return (win.stride == 1 and win.ho > 1) or phased(win)


def wide_offsets(win, xp):
    """koff[k]: where row k = (c, i, j) of X_col starts in a flat padded image (c*plane +
    i*pitch + j, the frame's channel and row strides: frame.py); in a frame split by
    parity, in the phase (i % 2, j % 2), i // 2 rows and j // 2 numbers in."""
    return _offsets(win.c, win.kh, win.kw, plane_size(xp), row_pitch(xp), phase_rows(win, xp)).copy()


@functools.lru_cache(maxsize=256)
def _offsets(channels, kh, kw, plane, pitch, rows):
    """wide_offsets' array (``rows`` > 0: a frame split by parity into phases of that many
    rows), made once per shape: NumPy's meshgrid holds the GIL, and dW's threads each asked
    for it per chunk of images (measured: their products ran 20 % slower for it on
    ResNet-20's stride-2 layers)."""
    c, i, j = np.meshgrid(np.arange(channels), np.arange(kh), np.arange(kw), indexing="ij")
    if rows:    # phase (i % 2, j % 2), then i // 2 rows and j // 2 numbers in
        koff = c * plane + ((i % 2) * 2 + j % 2) * rows * pitch + (i // 2) * pitch + j // 2
    else:
        koff = c * plane + i * pitch + j
    return np.ascontiguousarray(koff.reshape(-1), dtype=np.int64)


def wide_count(win, pitch):
    """The wide positions of one image: from the first output to the last, (H_out - 1) * pitch + W_out."""
    return (win.ho - 1) * pitch + win.wo


def aligned_empty(shape, dtype, align=64):
    """np.empty(shape, dtype) whose data starts on an ``align``-byte boundary (a cache line).

    NumPy's own arrays start wherever malloc puts them (16-byte boundaries): a row of
    whole vectors then straddles cache lines at every AVX-512 load. The kernels load G in
    whole vectors from the start of its rows: measured 2026-12-05, the dX kernel at batch
    64 ran 10-14 % faster on G at a 64-byte boundary than 4 or 32 bytes past one."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    buf = np.empty(count * dtype.itemsize + align, dtype=np.uint8)
    start = (-buf.ctypes.data) % align
    return buf[start:start + count * dtype.itemsize].view(dtype).reshape(shape)


@dataclass
class WideG:
    """G read once for the whole backward (``on_wide_positions``): its values on wide
    positions and the sums the two gradients subtract, and whether it is all finite."""
    values: Optional[np.ndarray]   # (N, C_out, wide positions in whole vectors), 0 at the dropped ones
    channel_sums: np.ndarray    # (N, wide positions): sum_t G[n, t, q], dX's (Eq. 6 in full mode)
    filter_sums: np.ndarray     # (C_out,): sum_n sum_q G[n, t, q] in float64, dW's (Eq. 5)
    finite: bool                # every number of G finite (its sums are: see frame.all_finite)

    def drop_values(self):
        """Let the widened copy of G go, keeping the sums: once dX is written, where dW
        reads G as it is (BLAS on exact columns), so that the copy is not held beside dW's
        buffers. VGG-small's 256-channel 16x16 layer: 17 MB, its peak 78 -> 70 MB."""
        self.values = None


def on_wide_positions(g, win, pitch):
    """G (N, C_out, P) on wide positions, zeros where v >= W_out and past the last row (so
    that the dropped positions add nothing to a gradient, and a kernel may run whole
    vectors past the last one), with its sums, as a WideG. The values start on a cache line
    (aligned_empty), and so does every row. One pass over G: widening it, its sums over
    the channels and over the positions, and the finiteness test were four passes, 3.5 %
    of a ResNet-20 step."""
    length = win.ho * pitch
    width = length + (-length) % VECTOR
    gw = aligned_empty((win.n, win.c_out, width), g.dtype)
    over_channels = np.empty((win.n, width), dtype=g.dtype)
    per_row = np.empty((win.n, win.c_out))
    _widen(np.ascontiguousarray(g).reshape(win.n, win.c_out, win.plane), win.wo, pitch, gw, over_channels, per_row)
    with np.errstate(over="ignore"):                   # a sum past G's dtype's range is inf
        over_positions = per_row.sum(axis=0).astype(g.dtype)
    # finite only if the sums are, in G's dtype: numbers whose sums overflow go to the
    # reference too, where no identity can overflow on the way (as frame.all_finite)
    finite = bool(np.isfinite(over_positions).all() and np.isfinite(over_channels).all())
    return WideG(gw, over_channels, over_positions, finite)


@njit(parallel=True, fastmath={"reassoc"}, cache=True)
def _widen(g, wo, pitch, gw, over_channels, per_row):
    """gw[n, t, u*pitch + v] = g[n, t, u*wo + v] for v < wo, 0 elsewhere; over_channels[n]
    = sum_t gw[n, t]; per_row[n, t] = sum of g[n, t] (float64). One task per image, each
    row of G read once and its widened rows summed while they are in cache. fastmath is
    limited to reassociation, which vectorises the float64 sum (an inf or NaN still shows
    in it).

    An output row is short (8 to 32 numbers in ResNet-20), shorter than the vectorised
    loop LLVM makes of a copy (4 vectors a step), which then ran scalar: the rows are
    copied in whole vectors (_widen_rows), all of an image's channels before their sums,
    which run in one long loop over each widened row. Measured 2026-12-06 (2-core AVX-512
    VM, batch 64, 2 threads, on_wide_positions, 40 alternations, best/median us): 16
    channels 32x32 284/304 -> 273/283, 32 channels 16x16 153/154 -> 119/125, 64 channels
    8x8 124/130 -> 118/123, 16 -> 32 channels at stride 2 149/153 -> 116/121.
    """
    n_img, n_t = g.shape[0], g.shape[1]
    rows = g.shape[2] // wo
    for n in prange(n_img):
        acc = over_channels[n]
        acc[:] = 0
        for t in range(n_t):
            _widen_rows(g[n, t], wo, pitch, rows, gw[n, t])
        for t in range(n_t):
            dst = gw[n, t]
            total = 0.0
            for q in range(dst.shape[0]):
                acc[q] += dst[q]
                total += dst[q]
            per_row[n, t] = total


@njit(cache=True)
def _widen_rows(src, wo, pitch, rows, dst):
    """dst[u*pitch + v] = src[u*wo + v] for v < wo, 0 elsewhere: each row copied in whole
    vectors (register_block.copy_vector), which may write past the row into its gap
    (zeroed after the copy) and the next row (written after it); the last rows, whose
    vectors would read past src or write past dst, number by number. (Plain indices and
    loops of step 1: views and a range stepping by the vector length cost more than the
    copy on 8-number rows.)"""
    lanes = lanes_of(src)
    vectors = -(-wo // lanes)
    reach = vectors * lanes
    # the rows u copied in whole vectors: u * wo + reach <= len(src), u * pitch + reach <= len(dst)
    whole = max(0, min(rows, (src.shape[0] - reach) // wo + 1, (dst.shape[0] - reach) // pitch + 1))
    for u in range(whole):
        s, d = u * wo, u * pitch
        for m in range(vectors):
            copy_vector(src, s + m * lanes, dst, d + m * lanes, 1)
        for v in range(d + wo, d + pitch):
            dst[v] = 0
    for u in range(whole, rows):
        s, d = u * wo, u * pitch
        for v in range(wo):
            dst[d + v] = src[s + v]
        for v in range(d + wo, d + pitch):
            dst[v] = 0
    for q in range(rows * pitch, dst.shape[0]):
        dst[q] = 0


@njit(parallel=True, cache=True)
def channel_sums(g):
    """s[n, q] = sum_t g[n, t, q] for g (N, C_out, Q), one image per task (NumPy's
    g.sum(axis=1) runs on one thread)."""
    n_img, n_t, width = g.shape
    s = np.zeros((n_img, width), dtype=g.dtype)
    for n in prange(n_img):
        acc = s[n]
        for t in range(n_t):
            row = g[n, t]
            for q in range(width):
                acc[q] += row[q]
    return s


@njit(cache=True)
def segments(l0, width, plane, wo, segs):
    """Cut the positions l0 .. l0 + width (l = n*P + u*wo + v) into runs along one output
    row: segs[r] = (n, u, v0, length, q0), q0 the run's place in the block. Returns the count."""
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
def field_row(xp, c, i, j, stride, segs, count, row, add):
    """Row (c, i, j) of X_col over the block's runs (segs), to or from the padded image xp.

    add False: row[q] = X_col[(c, i, j), l] = xp[n, c, s*u + i, s*v + j] (copy it out);
    add True, the adjoint (col2im of one row): xp[n, c, s*u + i, s*v + j] += row[q].
    """
    for r in range(count):
        n, u, v0, length, q0 = segs[r, 0], segs[r, 1], segs[r, 2], segs[r, 3], segs[r, 4]
        part = row[q0:q0 + length]                   # views indexed from 0: plain vector code
        start = stride * v0 + j
        if stride == 1:
            pixels = xp[n, c, u + i, start:start + length]
        else:
            pixels = xp[n, c, stride * u + i, start:start + stride * (length - 1) + 1:stride]
        if add:
            for q in range(length):
                pixels[q] += part[q]
        else:
            for q in range(length):
                part[q] = pixels[q]


@njit(cache=True)
def add_field_row_spread(dxp, c, i, j, segs, count, row):
    """field_row(dxp, c, i, j, 2, segs, count, row, add=True) (col2im of one row of dX_col,
    stride 2) by vectors (add_spread_vector): whole vectors of the row, then half ones,
    then number by number. A vector also adds 0 to the odd pixels after its last one; it
    is used only where those stay inside the plane dxp[n, c], which the caller's task
    owns. dxp (N, C, Hp, Wp) must be C-contiguous."""
    n_img, channels, hp, wp = dxp.shape
    flat = dxp.reshape(-1)
    lanes = vector_length(flat.itemsize)
    half = lanes // 2
    for r in range(count):
        n, u, v0, length, q0 = segs[r, 0], segs[r, 1], segs[r, 2], segs[r, 3], segs[r, 4]
        first = (n * channels + c) * hp * wp
        at, end = first + (2 * u + i) * wp + 2 * v0 + j, first + hp * wp
        m = 0
        while m + lanes <= length and at + 2 * (m + lanes) <= end:
            add_spread_vector(row, q0 + m, flat, at + 2 * m, 1)
            m += lanes
        while m + half <= length and at + 2 * (m + half) <= end:
            add_spread_vector(row, q0 + m, flat, at + 2 * m, 2)
            m += half
        for mm in range(m, length):
            flat[at + 2 * mm] += row[q0 + mm]


@njit(cache=True)
def run_vectors(segs, count, image_size, pitch, lanes, stride):
    """Stride 1 or 2: the runs of a block of positions (segs) cut into vectors of ``lanes``
    numbers, as (src, dst): vector m of X_col's row (0, 0, 0) starts at src[m] in the flat
    frame (images image_size numbers apart, rows ``pitch`` apart; its numbers ``stride``
    apart) and is written at dst[m] in the block; row k = (c, i, j) is read koff[k] =
    c*Hp*Wp + i*Wp + j further on (wide_offsets). A run's last vector may reach past the
    run's end (see copy_runs)."""
    total = 0
    for r in range(count):
        total += (segs[r, 3] + lanes - 1) // lanes
    src, dst = np.empty(total, dtype=np.int64), np.empty(total, dtype=np.int64)
    m = 0
    for r in range(count):
        start = segs[r, 0] * image_size + stride * (segs[r, 1] * pitch + segs[r, 2])
        for v in range(0, segs[r, 3], lanes):
            src[m], dst[m] = start + stride * v, segs[r, 4] + v
            m += 1
    return src, dst


@njit(cache=True)
def copy_runs(flat, offset, src, dst, panel, at, stride):
    """panel[at + dst[m] + j] = flat[offset + src[m] + stride * j] for every vector m (j <
    lanes): field_row's copy of one row of X_col for stride 1 or 2, one vector store per
    vector (register_block.copy_vector: a load, or two and a shuffle), the vectors found
    once per block (run_vectors).

    Short runs (8 numbers at 8x8) spent most of field_row's time on the per-run slicing
    and a scalar copy (30 % of an 8x8 layer's forward). A run's last vector may write
    past its end: the next run (written after it) overwrites that, and after the last
    run the caller leaves VECTOR spare numbers in ``panel`` (values it drops). The reads
    past a run stay inside the frame: each image ends with SLACK (>= 2 VECTOR) spare
    numbers."""
    for m in range(src.shape[0]):
        if stride == 1:
            copy_vector(flat, offset + src[m], panel, at + dst[m], 1)
        else:
            copy_vector(flat, offset + src[m], panel, at + dst[m], 2)
