"""The blocked input gradient dX (Eq. 6, or sgn for Eq. 4), with col2im fused in.

    dX_col[k, l] = sum_t G[t, l] * E(W[t, k] - X_col[k, l]),   E = HardTanh (full) | sgn (sign)

and dX = col2im(dX_col). Against naive.py's loop:

* One task per (image n, channel c) plane: each of its kh*kw rows of dX_col is computed
  and added straight into the padded gradient at the pixels it came from (col2im fused,
  no dX_col is ever stored; no two tasks write the same plane). On wide positions that
  padded plane is the task's own buffer, its inside copied into dX at the end.
* Stride 1 reads the rows of X_col in place on wide positions (positions.py), where the
  pixels a row of X_col reads are the same stretch of the padded dX; G is laid out on
  wide positions too, with zeros at the dropped ones, which then add nothing. Stride 2
  does the same on the frame split by parity (frame.py): the task's plane is split so
  too, and its inside is put back in order as it is copied into dX (inside_of_phases).
* HardTanh(w - x) = clip(w, x - 1, x + 1) - x: a max, a min and a multiply-add per term,
  the "- x" summed once as x * sum_t G (in the shifted frame of frame.py, where this
  does not cancel large terms). Sign mode compares unshifted values.
* Full mode on wide positions keeps a block of dX_col (2 rows x 4 vectors with 32 vector
  registers) in registers for the whole sum over t, with each number's x - 1 and x + 1
  (register_block.py); the filters come transposed, (K, C_out), so that the weights a
  row reads, one per t, are neighbours. Sign mode runs the same blocks with
  g * sgn(w - x) for the clip (register_block._sign_term). Row by row in plain Numba,
  as before, it took 1.5-1.7x as long: measured 2026-12-06, batch 64, 2 threads,
  ResNet-20's 16ch 32x32 layer 6.8-7.2 -> 4.2-4.5 ms, 64ch 8x8 7.7-8.1 -> 4.6-4.8.
"""
import numpy as np
from numba import njit, prange

from .addition import add
from .naive import sgn
from .frame import VECTOR, cropped, phase_count, phase_rows, plane_size, row_pitch
from .register_block import (CLIP_ROWS, CLIP_VECTORS, COLUMN_ROWS, clip_rows_into, lanes_of, merge_pairs,
                             plain_rows_into, prefetch_lines, product_rows_into, sign_rows_into, vector_length)
from .positions import (add_field_row_spread, channel_sums, copy_runs, field_row, on_wide_positions, run_vectors,
                        segments, wide_count, wide_offsets, wide_rows)


# Both row kernels are unrolled by hand over 8 (full) or 4 (sign) channels: the weights
# become scalars kept in registers, and each load and store of d[q] serves 8 (4)
# channels (vmaxps, vminps and vfmadd231ps x8 per loop, 0 stack accesses with AVX2:
# benchmarks/README.md). The block sizes were chosen by hand, not re-measured.
@njit(fastmath=True, cache=True)
def _dx_row_full(xs, wt, gn, gs, k, width, one, d):
    """d[q] += sum_t G[t, q] * HT(W'[t, k] - xs[q])  (Eq. 6), G = gn (C_out, >= width).

    HT(w - x) = clip(w, x - 1, x + 1) - x, so d = sum_t G clip(W', x - 1, x + 1) - x * gs
    with gs[q] = sum_t G[t, q]. The rows of G are indexed through one 2-D array (not 8
    views), so that LLVM needs a single run-time alias check between d and G to vectorise.
    """
    n_t = wt.shape[1]
    for q in range(width):
        d[q] -= xs[q] * gs[q]
    t = 0
    while t + 8 <= n_t:
        w0, w1, w2, w3 = wt[k, t], wt[k, t + 1], wt[k, t + 2], wt[k, t + 3]
        w4, w5, w6, w7 = wt[k, t + 4], wt[k, t + 5], wt[k, t + 6], wt[k, t + 7]
        for q in range(width):
            lo, hi = xs[q] - one, xs[q] + one
            d[q] += ((gn[t, q] * min(max(w0, lo), hi) + gn[t + 1, q] * min(max(w1, lo), hi))
                     + (gn[t + 2, q] * min(max(w2, lo), hi) + gn[t + 3, q] * min(max(w3, lo), hi))) \
                + ((gn[t + 4, q] * min(max(w4, lo), hi) + gn[t + 5, q] * min(max(w5, lo), hi))
                   + (gn[t + 6, q] * min(max(w6, lo), hi) + gn[t + 7, q] * min(max(w7, lo), hi)))
        t += 8
    for tt in range(t, n_t):   # channels left over
        wv = wt[k, tt]
        for q in range(width):
            d[q] += gn[tt, q] * min(max(wv, xs[q] - one), xs[q] + one)


@njit(fastmath=True, cache=True)
def _dx_row_sign(xs, wt, gn, k, width, one, d):
    """d[q] += sum_t G[t, q] * sgn(W[t, k] - xs[q]), G = gn; 4 channels per pass over d."""
    n_t = wt.shape[1]
    t = 0
    while t + 4 <= n_t:
        w0, w1, w2_, w3 = wt[k, t], wt[k, t + 1], wt[k, t + 2], wt[k, t + 3]
        for q in range(width):
            xv = xs[q]
            d[q] += (gn[t, q] * sgn(w0 - xv, one) + gn[t + 1, q] * sgn(w1 - xv, one)) \
                + (gn[t + 2, q] * sgn(w2_ - xv, one) + gn[t + 3, q] * sgn(w3 - xv, one))
        t += 4
    for tt in range(t, n_t):
        wv = wt[k, tt]
        for q in range(width):
            d[q] += gn[tt, q] * sgn(wv - xs[q], one)


#: what the wide dX kernel computes: sgn (Eq. 4), HardTanh (Eq. 6), the l2 layer's exact
#: gradient 2 sum_t G (W - X) (Eq. 28), or the convolution's W^T G (conv.py)
SIGN, FULL, L2, CONV = 0, 1, 2, 3


#: the shapes of dX's register blocks (register_block.py), rows x vectors: the main block,
#: its rows left over, the positions left over (a vector at a time), and what is left of both
BLOCK, ROW, COLUMN, SINGLE = 0, 1, 2, 3


def _shapes_of(rows_into):
    """rows_into's register block of each shape (the block sizes are literals there, so
    each size is its own call), inlined into its caller."""
    @njit(inline="always")
    def block(shape, img, koff, k, wk, gn, gs, q, one, pl, shift):
        if shape == BLOCK:
            rows_into(img, koff, k, wk, gn, gs, q, one, pl, shift, CLIP_ROWS, CLIP_VECTORS)
        elif shape == ROW:
            rows_into(img, koff, k, wk, gn, gs, q, one, pl, shift, 1, CLIP_VECTORS)
        elif shape == COLUMN:
            rows_into(img, koff, k, wk, gn, gs, q, one, pl, shift, COLUMN_ROWS, 1)
        else:
            rows_into(img, koff, k, wk, gn, gs, q, one, pl, shift, 1, 1)
    return block


_sign_block, _clip_block, _l2_block, _conv_block = (_shapes_of(rows_into) for rows_into in (
    sign_rows_into, clip_rows_into, product_rows_into, plain_rows_into))


@njit(fastmath=True, cache=True, inline="always")
def _dx_block(kind, shape, img, koff, k, wk, gn, gs, q, one, pl, shift):
    """One register block of dX_col rows of the ``kind`` added into the plane
    (register_block.py). Inlined into the kernel (inline="always"): called, it cost 4-9 %
    of a 16-channel dX (about 85 calls an (image, channel) task, each passing 12
    arguments; measured 2026-12-06, batch 64, 2 threads, the kernel 3.75-3.78 -> 3.43-3.61
    ms at 32x32, 3.24-3.32 -> 3.13-3.18 at 16x16)."""
    if kind == SIGN:
        _sign_block(shape, img, koff, k, wk, gn, gs, q, one, pl, shift)
    elif kind == FULL:
        _clip_block(shape, img, koff, k, wk, gn, gs, q, one, pl, shift)
    elif kind == L2:
        _l2_block(shape, img, koff, k, wk, gn, gs, q, one, pl, shift)
    else:
        _conv_block(shape, img, koff, k, wk, gn, gs, q, one, pl, shift)


@njit(parallel=True, fastmath=True, cache=True)
def _grad_input_wide_kernel(xp2, koff, wk, gw, gsum, kind, fields, npos, one, pad, pitch, rows, phases, plane, adds,
                            plus, dx):
    """dX on wide positions (stride 1, or 2 on a frame split by parity): row k of X_col
    for image n is the stretch xp2[n, koff[k]:koff[k] + npos], and the pixels it reads are
    the same stretch of the padded plane, so each row of dX_col is added into that plane.
    One task per (image, channel): its ``fields`` = kh*kw rows write only that channel's
    plane, a buffer of the task's own laid out as the frame's (rows ``pitch`` apart,
    padding ``pad``, ``plane`` numbers: frame.plane_size; if rows > 0, split by parity
    into ``phases`` phases of ``rows`` rows), whose inside it then writes into dx (N, C,
    H, W): no padded dX, no crop. With shared padding (frame.py) a row's right padding is
    the next row's left: what is added there is dropped. With ``adds``, plus (N, C, H, W)
    is added to each plane of dx as it is written, while the plane is in L1 (the gradient
    x gathered from its other uses: a ResNet block's shortcut).
    Rows run on whole vectors: the dropped positions past npos read the frame's SLACK
    and G's zeros, and add zeros into the plane's spare end.

    Every ``kind``: register blocks (register_block.py) of CLIP_ROWS rows x CLIP_VECTORS
    vectors add straight into the plane; the rows left over take 1-row blocks, the
    positions left over blocks of COLUMN_ROWS rows x 1 vector (and 1 x 1 for the rows
    left over from those). L2 doubles the plane at the end.
    """
    channels = dx.shape[1]
    lanes = vector_length(xp2.itemsize)
    whole = npos + (-npos) % lanes
    step = CLIP_VECTORS * lanes
    paired, tall = fields - fields % CLIP_ROWS, fields - fields % COLUMN_ROWS
    for task in prange(xp2.shape[0] * channels):
        n, c = task // channels, task % channels
        img, gn, gs = xp2[n], gw[n], gsum[n]
        pl = np.zeros(plane + whole - npos, dtype=dx.dtype)
        shift = c * plane
        if adds:     # asked for now, read at the task's end: in cache by then
            extra = plus[n, c].reshape(dx.shape[2] * dx.shape[3])
            prefetch_lines(extra, 0, extra.shape[0], False)
        # stretch by stretch of positions, every row of the plane: the stretch's G
        # (C_out x step numbers) stays in L1 while the plane's kh*kw rows read it
        k0 = c * fields
        for q in range(0, whole - step + 1, step):
            for f0 in range(0, paired, CLIP_ROWS):
                _dx_block(kind, BLOCK, img, koff, k0 + f0, wk, gn, gs, q, one, pl, shift)
            for f0 in range(paired, fields):
                _dx_block(kind, ROW, img, koff, k0 + f0, wk, gn, gs, q, one, pl, shift)
        for qv in range(whole - whole % step, whole, lanes):   # the positions left over
            for f0 in range(0, tall, COLUMN_ROWS):
                _dx_block(kind, COLUMN, img, koff, k0 + f0, wk, gn, gs, qv, one, pl, shift)
            for f0 in range(tall, fields):
                _dx_block(kind, SINGLE, img, koff, k0 + f0, wk, gn, gs, qv, one, pl, shift)
        if rows:                                    # the inside of the plane is dX
            if phases == 4:
                inside_of_phases(pl, pad, rows, pitch, dx[n, c])
            else:
                inside_of_first_phase(pl, pad, pitch, dx[n, c])
        else:
            inside_of(pl, pad, pitch, dx[n, c])
        out = dx[n, c]
        if kind == L2:
            out *= 2
        if adds:
            _add_plane(out, plus[n, c])


@njit(cache=True)
def inside_of(pl, pad, pitch, out):
    """out (H, W) = the inside of the flat padded plane pl (rows ``pitch`` numbers apart, pad around)."""
    for r in range(out.shape[0]):
        row, src = out[r], pl[(r + pad) * pitch + pad:(r + pad) * pitch + pad + out.shape[1]]
        for v in range(out.shape[1]):
            row[v] = src[v]


@njit(cache=True)
def inside_of_phases(pl, pad, rows, pitch, out):
    """out (H, W) = the inside of the flat padded plane pl split by parity (frame.py):
    pixel (y, z) of the padded plane in phase (y % 2, z % 2), row y // 2, column z // 2,
    each phase ``rows`` rows of ``pitch`` numbers. A row of out takes its numbers from the
    two column phases of its row in turn (_interleave_row)."""
    quarter = rows * pitch
    for r in range(out.shape[0]):
        y = r + pad
        at = (y % 2) * 2 * quarter + (y // 2) * pitch
        # out[r, 2m] is pixel z = pad + 2m, out[r, 2m + 1] pixel pad + 2m + 1
        first = at + (pad % 2) * quarter + pad // 2
        second = at + ((pad + 1) % 2) * quarter + (pad + 1) // 2
        _interleave_row(pl, first, pl, second, out[r])


@njit(cache=True)
def inside_of_first_phase(pl, pad, pitch, out):
    """inside_of_phases for a 1x1 layer's plane, phase (0, 0) alone: the pixels of the
    other phases get no gradient (0). (One function for both, its loop testing which, made
    the 16 -> 32 channel stride-2 dX slower: 0.38-0.39 -> 0.35-0.37 of its ceiling, batch
    64, two alternations.)"""
    width = out.shape[1]
    zeros = np.zeros(width // 2 + lanes_of(pl), dtype=pl.dtype)
    for r in range(out.shape[0]):
        y, row = r + pad, out[r]
        if y % 2 == 1:
            row[:] = 0
            continue
        at = (y // 2) * pitch
        if pad % 2 == 0:        # out[r, 2m] is an even pixel, out[r, 2m + 1] an odd one
            _interleave_row(pl, at + pad // 2, zeros, 0, row)
        else:
            _interleave_row(zeros, 0, pl, at + (pad + 1) // 2, row)


@njit(cache=True)
def _interleave_row(a, i, b, j, row):
    """row[2m] = a[i + m] and row[2m + 1] = b[j + m] for every number of row: whole
    vectors of pairs (register_block.merge_pairs), then half ones, then number by number.
    Number by number, with a test of v % 2 for each, this took a quarter of a stride-2
    3x3 layer's dX kernel and half of a 1x1's (measured 2026-12-06, batch 64, 2 threads:
    16 -> 32 channels 2.03 -> 1.55 ms with the copy left out, 32 -> 64 1.93 -> 1.70)."""
    width = row.shape[0]
    lanes = lanes_of(row)
    m = 0
    while 2 * (m + lanes) <= width:
        merge_pairs(a, i + m, b, j + m, row, 2 * m, 1)
        m += lanes
    if 2 * (m + lanes // 2) <= width:
        merge_pairs(a, i + m, b, j + m, row, 2 * m, 2)
        m += lanes // 2
    for v in range(2 * m, width):
        row[v] = a[i + v // 2] if v % 2 == 0 else b[j + v // 2]


@njit(cache=True)
def _add_plane(out, plus):
    """out (H, W) += plus (H, W), row by row (contiguous rows: vector loops, no temporary)."""
    for r in range(out.shape[0]):
        row, extra = out[r], plus[r]
        for v in range(row.shape[0]):
            row[v] += extra[v]


@njit(parallel=True, fastmath=True, cache=True)
def _grad_input_packed_kernel(xp, flat, koff_frame, wk, g, gsum, full, kh, kw, stride, ho, wo, pitch, one, dxp):
    """dX for any stride (as _grad_input_wide_kernel): one task per image n; for each
    channel c (_packed_channel) it copies the channel's rows of X_col (the image's
    positions), computes its rows of dX_col and adds them into the padded plane dxp[n, c].
    Full mode runs the register blocks over CLIP_ROWS rows at a time (the positions after
    the last whole block through _dx_row_full); sign mode _dx_row_sign.
    Strides 1 and 2 copy the rows from the flat frame (``flat``, 1-D; row k starts
    koff_frame[k] after a run's start) by whole vectors (positions.copy_runs)."""
    n_img, channels = xp.shape[0], xp.shape[1]
    plane = ho * wo
    lanes = vector_length(dxp.itemsize)
    step = CLIP_VECTORS * lanes
    blocked = plane - plane % step
    for n in prange(n_img):
        # the image's runs, and the buffers every channel reuses, made once (per (image,
        # channel) task, they made the stride-2 dX 7-11 % slower)
        xs = np.empty(kh * kw * plane + VECTOR, dtype=dxp.dtype)   # a channel's rows of X_col
        d = np.empty(kh * kw * plane, dtype=dxp.dtype)     # and of dX_col
        koff = np.zeros(wk.shape[0], dtype=np.int64)        # row k starts at xs[koff[k]]
        segs = np.empty((ho + 1, 5), dtype=np.int64)
        count = segments(n * plane, plane, plane, wo, segs)
        src, dst = run_vectors(segs, count, flat.shape[0] // n_img, pitch, lanes, min(stride, 2))
        for c in range(channels):
            _packed_channel(xp, flat, koff_frame, wk, g, gsum, full, kh, kw, stride, plane, blocked, step, one, dxp,
                            n, c, xs, d, koff, segs, count, src, dst)


@njit(fastmath=True, cache=True)
def _packed_channel(xp, flat, koff_frame, wk, g, gsum, full, kh, kw, stride, plane, blocked, step, one, dxp,
                    n, c, xs, d, koff, segs, count, src, dst):
    """_grad_input_packed_kernel's work on channel c of image n: dX's plane dxp[n, c].
    Every row of the channel's X_col is copied and every row of its dX_col computed
    before any is added into the plane, and they are added column offset by column offset
    (j, then i): rows (i, j) and (i, j + 1) cover the same pixels but one, and adding one
    right after the other would have each load wait on the stores just made (this order
    came with the vector add-back, add_field_row_spread, and was not timed apart from it)."""
    fields = kh * kw
    dxp[n, c] = 0
    for f in range(fields):                    # row f of the channel's X_col at xs[f * plane]
        k = c * fields + f
        koff[k] = f * plane
        if stride <= 2:
            copy_runs(flat, koff_frame[k], src, dst, xs, f * plane, stride)
        else:
            field_row(xp, c, f // kw, f % kw, stride, segs, count, xs[f * plane:(f + 1) * plane], False)
    d[:] = 0
    if full:
        f = 0
        while f < fields:
            rows = CLIP_ROWS if f + CLIP_ROWS <= fields else 1
            k = c * fields + f
            for q in range(0, blocked, step):
                if rows == CLIP_ROWS:
                    clip_rows_into(xs, koff, k, wk, g[n], gsum[n], q, one, d, 0, CLIP_ROWS, CLIP_VECTORS)
                else:
                    clip_rows_into(xs, koff, k, wk, g[n], gsum[n], q, one, d, 0, 1, CLIP_VECTORS)
            for r in range(f, f + rows if blocked < plane else f):    # the positions left over
                _dx_row_full(xs[r * plane + blocked:(r + 1) * plane], wk, g[n][:, blocked:], gsum[n][blocked:],
                             c * fields + r, plane - blocked, one, d[r * plane + blocked:(r + 1) * plane])
            f += rows
    else:
        for f in range(fields):
            _dx_row_sign(xs[f * plane:(f + 1) * plane], wk, g[n], c * fields + f, plane, one,
                         d[f * plane:(f + 1) * plane])
    for j in range(kw):
        for i in range(kh):
            row = d[(i * kw + j) * plane:(i * kw + j + 1) * plane]
            if stride == 2:
                add_field_row_spread(dxp, c, i, j, segs, count, row)
            else:
                field_row(dxp, c, i, j, stride, segs, count, row, True)


def blocked_grad_input(w2, g, win, mode, frame, wide=None, plus=None):
    """dX (N, C, H, W) for G = g (N, C_out, P), from the ShiftedInput ``frame`` (shifted by
    the filters' mean in full and l2 mode, unshifted in sign mode); ``wide``: G on wide
    positions with its sums (positions.WideG), if the caller has it already; dX + plus if
    plus is given (on wide positions added as dX is written). mode "l2" (the l2 layer's
    exact dX) takes layers on wide positions only (``wide_rows(win)``: stride 1 or 2,
    several output rows)."""
    full = mode in ("full", "l2")
    # the filters transposed, (K, C_out): the 8 (or 16) weights a block reads for one row k
    # are then neighbours, one or two cache lines, not 8 lines K numbers apart (64 channels
    # at 8x8, where a block serves only 5 vectors, waited on them)
    wk = np.ascontiguousarray((w2 - frame.centre if full else w2).T)
    xp, dtype = frame.xp, frame.xp.dtype
    one = dtype.type(1)
    if wide_rows(win):
        pitch = row_pitch(xp)
        wide = on_wide_positions(g, win, pitch) if wide is None else wide
        dx = np.empty((win.n, win.c, win.h, win.w), dtype=dtype)
        kind = {"sign": SIGN, "full": FULL, "l2": L2}[mode]
        adds = fits_plus(plus, dx)
        _grad_input_wide_kernel(frame.flat, wide_offsets(win, xp), wk, wide.values, wide.channel_sums, kind,
                                win.kh * win.kw,
                                wide_count(win, pitch), one, win.padding, pitch, phase_rows(win, xp), phase_count(win),
                                plane_size(xp), adds, plus if adds else dx, dx)
        return dx if adds else plus_if_given(dx, plus)
    if mode == "l2":
        raise ValueError("the blocked l2 dX takes layers on wide positions only (stride 1 or 2, several output rows)")
    dxp = np.empty(xp.shape, dtype=dtype)
    gsum = channel_sums(g) if full else np.zeros((win.n, 1), dtype=dtype)
    _grad_input_packed_kernel(xp, frame.flat.reshape(-1), wide_offsets(win, xp), wk, g, gsum, full, win.kh, win.kw,
                              win.stride, win.ho, win.wo, row_pitch(xp), one, dxp)
    return plus_if_given(cropped(dxp, win.padding, win.h, win.w), plus)


def fits_plus(plus, dx):
    """Whether the wide kernel adds ``plus`` as it writes dx: one shape and dtype, C-contiguous."""
    return plus is not None and plus.dtype == dx.dtype and plus.shape == dx.shape and plus.flags.c_contiguous


def plus_if_given(dx, plus):
    """dx + plus in a pass of its own (addition.py), or dx where plus is None."""
    return dx if plus is None else add(dx, plus)
