"""The blocked filter gradient dW (Eq. 5, or sgn for Eq. 4).

    dW[t, k] = sum_l G[t, l] * D(X_col[k, l] - W[t, k]),   D = identity (full) | sgn (sign)

Against naive.py's loop:

* Full mode is a matrix product: dW = G X'^T - W' * sum_l G (X' = X - c, W' = W - c in
  the shifted frame of frame.py, where the subtraction does not cancel large terms).
  With stride 1 and long rows (stride 2: on the frame split by parity, frame.py) the
  product reads X' straight from the padded input on wide positions (positions.py), in
  register blocks of 8 x 3 dot products (4 x 3 with AVX2's 16 registers;
  register_block.py): no X_col at all.
* Sign mode with stride 1 or 2 (and several output rows) reads X the same way, in
  register blocks of 4 x 2 sums of g * sgn(x - w) (2 x 2 with AVX2), each weight in a
  register: a subtract, sgn by AVX-512's vfixupimm and a multiply-add per term (with
  AVX2 two compares and two masked adds: register_block._sign_term). Measured
  2026-12-05 (with the compares), ResNet-20's layers at batch 64, 2 threads: 16.5-18.8 -> 37-40 G terms/s on
  32x32 and 16x16, 15.4 -> 26.6 at 8x8 (where the blocks read 5 vectors an image, and
  still win).
* Otherwise (other strides, a single output row, full mode with short rows when asked
  for "numba") X_col is built for a chunk of about 1/DW_CHUNKS of the batch at a time,
  and one task per (4 filters, row k) runs four dot-product-like reductions along it.

* Full mode on every other layer: G X'^T is BLAS sgemm on chunks of X_col (as above, and
  of at most products.DW_CHUNK_NUMBERS numbers), the chunks dealt out to the threads,
  each building its own X_col and multiplying it by one single-threaded sgemm: the tasks
  of a Numba kernel calling NumPy's own BLAS (products.kernel_gemm; handing the product
  to Python threads after a Numba kernel cost 0.3-0.6 ms a layer), or Python threads
  where that BLAS cannot be called so. With short rows (stride 1, or 2 on the frame
  split by parity) that X_col holds the exact positions, copied by whole vectors
  (positions.copy_runs): wide positions made a fifth of the product at 8x8 a product
  with G's zeros (and before the split, im2col's element-by-element loop took as long as
  the product at stride 2). dW is exact linear algebra, and BLAS is tuned for it, except
  when C_out is small and the rows are long (then sgemm's output block is too thin:
  WIDE_DW_MAX_CHANNELS).
  FULL_DW_PRODUCT chooses: "auto" (the rule above), "numba" or "blas" everywhere
  (benchmarks/bench_adder_layers.py --impl cpu cpu-numba-dw cpu-blas-dw compares them).
  BLAS's threads can stall when the machine's cores are busy with other work (0.2-1.4 G/s
  measured so once, against 7-40 alone): measure on an idle machine.
"""
import numpy as np
from numba import get_num_threads, njit, prange

from . import columns, products
from .naive import sgn
from .products import image_chunks
from .register_block import (DOT_FILTERS, DOT_ROWS, NARROW_FILTERS, SIGN_FILTERS, SIGN_ROWS, dot_sums_registers,
                             narrow_dot_sums_registers, sign_sums_registers, vector_length)
from .frame import VECTOR, frame_pitch, frame_stride, row_pitch
from .positions import copy_runs, on_wide_positions, run_vectors, segments, wide_count, wide_offsets, wide_rows

#: full mode reads X from the padded input (no X_col) when an image has at least this
#: many wide positions; with shorter rows the per-image reductions cost more than
#: building X_col. Between LeNet-5's conv2 (10x10 outputs, 136 positions) and ResNet's 8x8
#: layers (78): measured 2026-12-05, LeNet-5-BN AdderNet step at batch 256, 2 threads,
#: 27.5 ms with the bound at 200 (conv2 through BLAS), 23.4 ms at 100.
WIDE_DW_MIN_POSITIONS = 100
#: the wide dW's register blocks run over a group of images before the next block, their
#: sums in registers for the whole group: about this many vectors of positions, at most
#: DW_GROUP_IMAGES images. One image a block left short loops at 16x16 (17 vectors) and
#: 8x8 (5); a group as long on 32x32 images (66 vectors each) pushed its rows of G out
#: of L1. Measured 2026-12-06, batch 64, 2 threads, the kernel alone, groups of 1 / 2 / 4
#: / 8 images: 32ch 16x16 1.29 / 1.20 / 1.16 / 1.24 ms, 16ch 32x32 1.17 / 1.20 / 1.34 /
#: 1.33, sign mode 64ch 8x8 4.80 / 4.24 / 4.04 / 4.06.
DW_GROUP_VECTORS = 64
DW_GROUP_IMAGES = 8
#: a task's lane-wise sums at most this many bytes at a time: beyond it, its rows of X'
#: are taken span by span, each span over every group of images, so that the sums each
#: group reads and writes stay in L2. VGG-small's 512ch 8x8 layer held 75 MB of them a
#: task (slabs of 256 filters, K = 4608), which every group of 8 images read and wrote
#: from memory. Measured 2026-12-07, batch 64, 2 threads, sign-mode dW (no BLAS there),
#: two alternations, best ms: 290.4 / 297.9 -> 234.0 / 241.7; the 256ch 16x16 and 128ch
#: 32x32 layers (its full-mode dW too) and ResNet-20's within the spread; spans of 1 MB or
#: 512 KB the same.
DW_SPAN_BYTES = 2 << 20
#: how full mode computes G X'^T: "auto", "numba" (the register blocks below) or "blas"
FULL_DW_PRODUCT = "auto"
#: "auto" keeps the register-block product (no X_col) for long rows only up to this many
#: filters, or up to WIDE_DW_MAX_CHANNELS_LONG where an image has WIDE_DW_LONG_POSITIONS
#: wide positions or more; BLAS (on chunks of X_col) for more filters. Measured 2026-12-06
#: on the 2-core AVX-512 VM, batch 64, 2 threads, the dW call given G widened, of the
#: sgemm ceiling, blocks against BLAS (two alternations): 16ch 32x32 0.75-0.85 / 0.28;
#: 32ch 16x16 0.76-0.79 / 0.38; 64ch 16x16 0.70-0.72 / 0.58; 128ch 16x16 0.70 / 0.74-0.76;
#: 256ch 16x16 0.51-0.57 / 0.82; 64ch 32x32 0.80-0.84 / 0.55; 128ch 32x32 0.79-0.81 /
#: 0.72-0.73; 256ch 32x32 0.64-0.69 / 0.82-0.86. (Before, the bound was 32 filters, from a
#: measurement of 2026-12-04 with slower blocks and BLAS on larger chunks.)
WIDE_DW_MAX_CHANNELS = 64
WIDE_DW_MAX_CHANNELS_LONG = 128
WIDE_DW_LONG_POSITIONS = 512


@njit(inline="always")
def _dw_term(xv, wv, full, one):
    """D(x - w) of Eq. 5 / Eq. 4 without the w: x (full; the -w part is added apart) or sgn(x - w)."""
    return xv if full else sgn(xv - wv, one)


@njit(parallel=True, fastmath=True, cache=True)
def _grad_weight_kernel(cols, weight, grad, full, one, dw):
    """dw[t, k] += sum_l G[t, l] * D(X_col[k, l] - W[t, k])  (reference.adder_grad_weight).

    full (Eq. 5): the sum of G * X only; the caller subtracts W * sum_l G. sign (Eq. 4):
    G * sgn(X - W). One task per (4 channels, row k): four reductions along L, unrolled
    so that each x loaded serves 4 channels; LLVM vectorises them (fastmath lets it
    reassociate the sums).
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


@njit(nogil=True, cache=True)
def _image_columns(img, koff, npos, cols, q0):
    """cols[k, q0 + q] = img[koff[k] + q] for q < npos: one image's X_col on wide positions."""
    for k in range(koff.shape[0]):
        src, dst = img[koff[k]:koff[k] + npos], cols[k, q0:q0 + npos]
        for q in range(npos):
            dst[q] = src[q]


@njit(parallel=True, cache=True)
def _wide_columns(xp2, koff, n0, n1, npos, cols):
    """X_col of images n0..n1 on wide positions, one image per task."""
    for n in prange(n0, n1):
        _image_columns(xp2[n], koff, npos, cols, (n - n0) * npos)


# (A function of its own, not njit of the one above: Numba's disk cache tells compilations
# apart by the function's code, not by its options, so the two would share one entry.)
@njit(nogil=True, cache=True)
def _wide_columns_serial(xp2, koff, n0, n1, npos, cols):
    """The same on the calling thread alone, releasing the GIL: for _product_by_threads."""
    for n in range(n0, n1):
        _image_columns(xp2[n], koff, npos, cols, (n - n0) * npos)


@njit(nogil=True, cache=True)
def _packed_columns_serial(flat, koff, src, dst, stride, cols):
    """Row k of X_col for one block of positions into cols[k * L:(k + 1) * L] (cols 1-D,
    K * L + VECTOR long: the last row's last vector may write past it), from the flat
    frame by positions.copy_runs, on the calling thread, releasing the GIL."""
    width = (cols.shape[0] - VECTOR) // koff.shape[0]
    for k in range(koff.shape[0]):
        copy_runs(flat, koff[k], src, dst, cols, k * width, stride)


def _exact_columns(frame, win, images):
    """X_col (K, L_c) of a slice of the batch, stride 1 or 2, on its exact positions: for
    short rows, where wide positions would multiply G's zeros at the dropped ones (at 8x8,
    71 wide positions per 64), and for stride 2 (im2col's element-by-element loop took
    as long as the product)."""
    return _exact_columns_of(frame.flat.reshape(-1), frame.flat.shape[1], wide_offsets(win, frame.xp), images.start,
                             images.stop, win.plane, win.wo, row_pitch(frame.xp), frame_stride(win),
                             vector_length(frame.flat.itemsize))


@njit(nogil=True, cache=True)
def _exact_columns_of(flat, image_size, koff, n0, n1, plane, wo, pitch, stride, lanes):
    """_exact_columns from the flat frame (1-D; images ``image_size`` numbers apart, rows
    ``pitch`` apart): images n0..n1, each ``plane`` output positions in rows of ``wo``."""
    width = (n1 - n0) * plane
    segs = np.empty((width // wo + 2, 5), dtype=np.int64)
    count = segments(n0 * plane, width, plane, wo, segs)
    src, dst = run_vectors(segs, count, image_size, pitch, lanes, stride)
    cols = np.empty(koff.shape[0] * width + VECTOR, dtype=flat.dtype)
    _packed_columns_serial(flat, koff, src, dst, stride, cols)
    return cols[:koff.shape[0] * width].reshape(koff.shape[0], width)


def _chunk_columns(frame, g, win, gw, images, serial=False):
    """(X_col, G) of a slice of the batch, from the padded input (in its frame): X_col (K, L_c),
    G (C_out, L_c) with the matching columns. serial: X_col is built on the calling thread,
    releasing the GIL (for _product_by_threads), else by every thread. Stride 1 uses wide
    positions (G is zero at the dropped ones, so they add nothing to dW): ``gw``; serial
    chunks with short rows, and of stride 2, the exact positions (_exact_columns)."""
    xp, n0, n1 = frame.xp, images.start, images.stop
    if serial and (win.stride == 2 or (win.stride == 1 and wide_count(win, row_pitch(xp)) < WIDE_DW_MIN_POSITIONS)):
        cols, gc = _exact_columns(frame, win, images), g[images]
    elif frame_stride(win) == 1:
        koff, npos = wide_offsets(win, xp), wide_count(win, row_pitch(xp))
        cols = np.empty((win.k, (n1 - n0) * npos), dtype=xp.dtype)
        (_wide_columns_serial if serial else _wide_columns)(frame.flat, koff, n0, n1, npos, cols)
        gc = gw[images, :, :npos]
    elif serial:     # the frame is padded already: padding 0
        cols = np.empty((win.k, (n1 - n0) * win.plane), dtype=xp.dtype)
        columns.im2col_serial(xp[images], win.kh, win.kw, win.stride, 0, win.ho, win.wo, cols)
        gc = g[images]
    else:
        cols = columns.im2col(xp[images], win.kh, win.kw, win.stride, 0)
        gc = g[images]
    return cols, np.ascontiguousarray(gc.transpose(1, 0, 2)).reshape(win.c_out, -1)


def _product_by_threads(frame, g, win, gw, with_sums=False):
    """(G X'^T (C_out, K), sum_l G (C_out,) or None) by BLAS, the chunks of images dealt
    out to the threads: each builds its chunks' X_col, multiplies each with one
    single-threaded sgemm into a sum of its own and, if ``with_sums``, adds up its
    chunks' G (G times ones, sgemv: 3x faster than NumPy's sum, as precise as the sgemm). No Numba kernel
    runs meanwhile, so no worker of Numba's spins on a core a product wants (one product
    split over two threads, after a parallel copy of each chunk, ran 8x8 layers at 26 G
    MAC/s: benchmarks/README.md); and the sums of G come from the same threads, not from a
    Numba kernel right after them (its workers' start cost 0.3-0.4 ms on a stride-2 layer)."""
    chunks = image_chunks(win, products.DW_CHUNK_NUMBERS)
    if len(chunks) == 1:    # one chunk (a fully connected layer is one image): split the product instead
        cols, gc = _chunk_columns(frame, g, win, gw, chunks[0])
        return products.matmul(gc, cols.T), (gc @ np.ones(gc.shape[1], gc.dtype) if with_sums else None)
    threads = min(get_num_threads(), len(chunks))     # one thread: every chunk on the calling thread

    def work(part):
        total, sums = None, 0   # (G X'^T)^T = X' G^T, (K, C_out): see products.transposed_product
        for images in part:
            cols, gc = _chunk_columns(frame, g, win, gw, images, serial=True)
            total = products.transposed_product(cols, gc, total)
            if with_sums:
                sums = sums + gc @ np.ones(gc.shape[1], gc.dtype)
        return total, sums
    parts = products.on_threads(work, [chunks[i::threads] for i in range(threads)])
    return np.ascontiguousarray(sum(p[0] for p in parts).T), (sum(p[1] for p in parts) if with_sums else None)


@njit(parallel=True, cache=True)
def _product_in_tasks(gemm, flat, image_size, koff, g, step, wo, pitch, stride, lanes, totals, sums):
    """G X'^T as _product_by_threads, on Numba's own threads: task p adds the chunks p,
    p + parts, ... of ``step`` images into totals[p] (K, C_out: X' G^T, as
    products.transposed_product) and their sums of G into sums[p]. Each chunk's X_col (on
    exact positions, stride 1 or 2: _exact_columns_of) and G are copied by the task and
    multiplied by ``gemm``, NumPy's BLAS called from the task (products.kernel_gemm)."""
    n_img, c_out, plane = g.shape
    parts = totals.shape[0]
    chunks = (n_img + step - 1) // step
    for part in prange(parts):
        for chunk in range(part, chunks, parts):
            n0, n1 = chunk * step, min(n_img, (chunk + 1) * step)
            cols = _exact_columns_of(flat, image_size, koff, n0, n1, plane, wo, pitch, stride, lanes)
            gc = np.empty((c_out, (n1 - n0) * plane), dtype=g.dtype)
            sums[part] += products.g_columns(g, n0, n1, gc)
            products.add_product_nt(gemm, cols, gc, totals[part])


def _product_on_numba_threads(frame, g, win, gemm):
    """(G X'^T (C_out, K), sum_l G (C_out,)) by _product_in_tasks, X_col built for at most
    1/DW_CHUNKS of the batch (and DW_CHUNK_NUMBERS numbers) at a time by each thread, as in
    _product_by_threads."""
    step, parts = products.chunk_tasks(win, products.DW_CHUNK_NUMBERS)
    totals = np.zeros((parts, win.k, win.c_out), dtype=frame.flat.dtype)
    sums = np.zeros((parts, win.c_out), dtype=np.float64)
    _product_in_tasks(gemm, frame.flat.reshape(-1), frame.flat.shape[1], wide_offsets(win, frame.xp),
                      np.ascontiguousarray(g), step, win.wo, row_pitch(frame.xp), frame_stride(win),
                      vector_length(frame.flat.itemsize), totals, sums)
    for part in totals[1:]:        # added up in place: no third copy of dW's size (see _correct)
        totals[0] += part
    return np.ascontiguousarray(totals[0].T), sums.sum(axis=0).astype(frame.flat.dtype)


@njit(fastmath=True, cache=True)
def _edge_dot(img, koff, gn, npos, w, full, one, t, k, out):
    """out[t, k] += sum_q G[t, q] D(X[k, q] - W[t, k]) for one image (img, gn) on wide positions."""
    row, gr, wv = img[koff[k]:koff[k] + npos], gn[t, :npos], w[t, k]
    total = out[t, k] - out[t, k]
    for q in range(npos):
        total += gr[q] * _dw_term(row[q], wv, full, one)
    out[t, k] += total


@njit(parallel=True, fastmath=True, cache=True)
def _grad_weight_images_kernel(xp2, koff, gw, npos, w, full, slabs, partial):
    """partial[b, t, k] = sum_{n in chunk b} sum_q G[n, t, q] D(X[n, k, q] - W[t, k]) on
    wide positions, stride 1 (D as _dw_term: full mode, Eq. 5, the G X'^T part of its dW,
    X' in the shifted frame; sign mode, Eq. 4, sgn(X - W)), reading row k of X straight
    from the padded input (xp2[n, koff[k]:]). One task per chunk of images and slab of
    filters (``slabs`` of them, whole blocks each, the last with the filters left over): a
    group of images at a time (about DW_GROUP_VECTORS vectors of positions), it runs its
    register blocks (register_block.py: DOT_FILTERS x DOT_ROWS dot products in full mode,
    then NARROW_FILTERS x DOT_ROWS for the filters left over; SIGN_FILTERS x SIGN_ROWS sign
    sums in sign mode) over the group while its rows of G and X are in L2, each block keeping
    its lane-wise sums in ``sums`` between groups; the lanes are added up once, at the end
    of the task (of each span of rows, where the sums pass DW_SPAN_BYTES). The caller sums
    the chunks. (One task per block over the whole batch, as
    before, streamed all of G and X' from memory for each block, two bytes a multiply-add:
    measured 2026-12-05, batch 64, 2 threads, 16 channels at 32x32: 51 -> 70 G MAC/s.)"""
    n_img, n_t = gw.shape[0], gw.shape[1]
    n_k = koff.shape[0]
    chunks = partial.shape[0]
    lanes = vector_length(xp2.itemsize)
    one = partial.dtype.type(1)
    count = (npos + lanes - 1) // lanes              # whole vectors: G is zero past npos
    filters, rows = (DOT_FILTERS, DOT_ROWS) if full else (SIGN_FILTERS, SIGN_ROWS)
    narrow = NARROW_FILTERS if full and NARROW_FILTERS < filters else filters
    t_main = n_t - n_t % filters                     # filters in whole blocks
    t_end = t_main + (n_t - t_main) // narrow * narrow   # and in narrow ones after them
    k_end = n_k - n_k % rows
    slab = t_main // filters // slabs * filters      # whole blocks of filters a slab
    group = max(1, min(DW_GROUP_IMAGES, DW_GROUP_VECTORS // max(1, count)))
    for task in prange(chunks * slabs):
        b, s = task // slabs, task % slabs
        t_lo, t_hi, t_narrow, t_stop = _slab_filters(s, slabs, slab, t_main, t_end, n_t)
        out = partial[b]
        # every group of images reads and writes the lane-wise sums of a span of rows
        span = _span_rows((t_narrow - t_lo) * lanes * partial.itemsize, k_end, rows)
        sums = np.empty(((t_hi - t_lo) // filters, span // rows, filters * rows, lanes), dtype=partial.dtype)
        narrow_sums = np.empty(((t_narrow - t_hi) // narrow, span // rows, narrow * rows, lanes), dtype=partial.dtype)
        first, last = b * n_img // chunks, (b + 1) * n_img // chunks
        for k_lo in range(0, max(1, k_end), span):
            k_hi = min(k_end, k_lo + span)
            sums[:] = 0
            narrow_sums[:] = 0
            for n0 in range(first, last, group):
                n1 = min(last, n0 + group)
                for t0 in range(t_lo, t_hi, filters):
                    for k0 in range(k_lo, k_hi, rows):
                        if full:
                            dot_sums_registers(xp2, koff, k0, gw, t0, count, w,
                                               sums[(t0 - t_lo) // filters, (k0 - k_lo) // rows], n0, n1)
                        else:
                            sign_sums_registers(xp2, koff, k0, gw, t0, count, w,
                                                sums[(t0 - t_lo) // filters, (k0 - k_lo) // rows], n0, n1)
                for t0 in range(t_hi, t_narrow, narrow):     # (full mode only)
                    for k0 in range(k_lo, k_hi, rows):
                        narrow_dot_sums_registers(xp2, koff, k0, gw, t0, count, w,
                                                  narrow_sums[(t0 - t_hi) // narrow, (k0 - k_lo) // rows], n0, n1)
                # the edge blocks (with the first span), one dot product at a time: the
                # filters after the last whole block (every row k), then the rows after the
                # last whole block (a loop over every (t, k) that skipped the blocks' own
                # took 18 % of a 32-channel dW)
                if k_lo == 0:
                    for n in range(n0, n1):
                        for t in range(t_lo, t_stop):
                            for k in range(k_end if t < t_narrow else 0, n_k):
                                _edge_dot(xp2[n], koff, gw[n], npos, w, full, one, t, k, out)
            _add_lanes(sums, t_lo, k_lo, k_hi, filters, rows, out)
            _add_lanes(narrow_sums, t_hi, k_lo, k_hi, narrow, rows, out)


@njit(cache=True)
def _slab_filters(s, slabs, slab, t_main, t_end, n_t):
    """The filters of slab s of ``slabs``, ``slab`` filters (whole blocks) each, as
    (first, end of its whole blocks, end of its narrow blocks, end of its filters): the
    last slab's whole blocks reach t_main, and it alone takes the narrow blocks (to
    t_end) and the filters left over after them (to n_t)."""
    last = s == slabs - 1
    t_lo = s * slab
    t_hi = t_main if last else t_lo + slab
    return t_lo, t_hi, (t_end if last else t_hi), (n_t if last else t_hi)


@njit(cache=True)
def _span_rows(row_bytes, k_end, rows):
    """Rows of X' a span: all k_end rows where their lane-wise sums (``row_bytes`` each)
    fit DW_SPAN_BYTES, else as many whole blocks of ``rows`` as fit, one at the least."""
    if row_bytes * k_end <= DW_SPAN_BYTES:
        return max(rows, k_end)
    return max(rows, DW_SPAN_BYTES // row_bytes // rows * rows)


@njit(fastmath=True, cache=True)
def _add_lanes(sums, t_first, k_first, k_stop, filters, rows, out):
    """out[t, k] += the lanes of its block's sum: block (a, c) of ``sums`` holds filters
    t_first + a * filters ... and rows k_first + c * rows ... (below k_stop), sum (i, j)
    at sums[a, c, i * rows + j]."""
    for a in range(sums.shape[0]):
        for c in range((k_stop - k_first) // rows):
            block = sums[a, c]
            for i in range(filters):
                for j in range(rows):
                    t, k = t_first + a * filters + i, k_first + c * rows + j
                    total = out[t, k] - out[t, k]
                    for v in range(block.shape[1]):
                        total += block[i * rows + j, v]
                    out[t, k] += total


@njit(parallel=True, fastmath={"reassoc"}, cache=True)
def _sums_per_filter(g):
    """s[t] = sum_n sum_q G[n, t, q] (in float64), one filter per task: the sum that
    dW = G X'^T - W' sum G subtracts (NumPy's g.sum(axis=(0, 2)) runs on one thread)."""
    s = np.zeros(g.shape[1], dtype=g.dtype)
    for t in prange(g.shape[1]):
        total = 0.0
        for n in range(g.shape[0]):
            row = g[n, t]
            for q in range(row.shape[0]):
                total += row[q]
        s[t] = total
    return s


#: the register blocks' lane-wise sums (C_out x K x lanes numbers a task) at most this many
#: bytes in all: beyond it the tasks split the filters among them, not the images.
#: VGG-small's 128-channel 32x32 layer held 19 MB of them in two tasks (its peak memory
#: 0.52x of im2col); by filters 9.4 MB (0.49x), and its dW ran as fast: measured
#: 2026-12-07, batch 64, 2 threads, three alternations, 82.4-88.5 -> 80.0-84.2 ms.
#: The spans (DW_SPAN_BYTES) bound the lane sums too, but not the tasks' partial dWs
#: (one a chunk of images): with the spans alone, VGG-small's 512ch 8x8 sign dW took
#: 208.6-220.9 ms against 188.8-205.7 by slabs, its peak RSS 253 MiB against 237; the
#: 256ch and 128ch layers the same either way (2026-12-07, three alternations).
DW_LANE_BYTES = 8 << 20


def wide_tasks(win, dtype, full=True):
    """(chunks of images, slabs of filters) for _grad_weight_images_kernel: one task a
    thread, each on its chunk of the images. Each task zeroes its blocks' lane-wise sums
    (C_out x K x lanes numbers: 590 KB at 32 channels) and adds them up at its end, and
    Numba's OpenMP layer hands each thread an equal, fixed share of the tasks, so more
    chunks only repeat that work. Measured 2026-12-06 (batch 64, 2 threads, the kernel
    given G widened, two alternations, ms): four chunks a thread against one, 16ch 32x32
    1.17 / 1.08 -> 1.08 / 1.09, 32ch 16x16 1.31 / 1.24 -> 1.15 / 1.18, 16 -> 32 channels
    at stride 2 0.72 / 0.73 -> 0.67 / 0.68. Where those sums would pass DW_LANE_BYTES, the
    tasks take a slab of the filters each (whole blocks of them) over every image."""
    threads = max(1, get_num_threads())
    filters = DOT_FILTERS if full else SIGN_FILTERS
    itemsize = np.dtype(dtype).itemsize
    lane_bytes = win.c_out * win.k * vector_length(itemsize) * itemsize
    if threads > 1 and lane_bytes * min(win.n, threads) > DW_LANE_BYTES and win.c_out >= threads * filters:
        return 1, threads
    return max(1, min(win.n, threads)), 1


def images_product(flat, koff, gw, npos, w2, full, win):
    """sum_n G X'^T (full) or Eq. 4's sign sums by _grad_weight_images_kernel, in the
    tasks of wide_tasks, their chunks added up."""
    chunks, slabs = wide_tasks(win, w2.dtype, full)
    partial = np.zeros((chunks,) + w2.shape, dtype=w2.dtype)
    _grad_weight_images_kernel(flat, koff, gw, npos, w2, full, slabs, partial)
    return partial[0] if chunks == 1 else partial.sum(axis=0)


def _long_rows(win):
    """Rows long enough for the register blocks to read X' in place (WIDE_DW_MIN_POSITIONS)."""
    return wide_rows(win) and wide_count(win, frame_pitch(win)) >= WIDE_DW_MIN_POSITIONS


def _blocks(win):
    """Whether full mode's G X'^T runs through the register blocks rather than BLAS."""
    if FULL_DW_PRODUCT != "auto":
        return FULL_DW_PRODUCT == "numba"
    if not _long_rows(win):
        return False
    long_images = wide_count(win, frame_pitch(win)) >= WIDE_DW_LONG_POSITIONS
    return win.c_out <= (WIDE_DW_MAX_CHANNELS_LONG if long_images else WIDE_DW_MAX_CHANNELS)


def _blas_in_tasks(win, full, dtype):
    """Whether full mode's G X'^T is BLAS called from Numba's threads on exact columns
    (_product_on_numba_threads), which reads G as it is, not on wide positions."""
    return full and not _blocks(win) and products.kernel_gemm(dtype) is not None and win.stride <= 2 and win.n > 1


def reads_wide_g(win, mode, dtype):
    """Whether blocked_grad_weight reads G on wide positions: a caller that wants dW alone
    widens G only then (adder2d_backward)."""
    return frame_stride(win) == 1 and not _blas_in_tasks(win, mode == "full", dtype)


def blocked_grad_weight(w2, g, win, mode, frame, wide=None):
    """dW (C_out, K) for G = g (N, C_out, P), from the ShiftedInput ``frame`` (shifted by
    the filters' mean in full mode, unshifted in sign mode); ``wide``: G on wide positions
    with its sums (positions.WideG), if the caller has it already."""
    full = mode == "full"
    xp = frame.xp
    pitch = row_pitch(xp)
    npos = wide_count(win, pitch)
    if wide is None and reads_wide_g(win, mode, xp.dtype):
        wide = on_wide_positions(g, win, pitch)
    gw = None if wide is None else wide.values
    blocks = _blocks(win)
    sums = None if wide is None else wide.filter_sums
    if _blas_in_tasks(win, full, xp.dtype):
        dw, own = _product_on_numba_threads(frame, g, win, products.kernel_gemm(xp.dtype))   # BLAS from Numba's threads
        sums = own if sums is None else sums
    elif full and not blocks:
        # sgemm on at most 1/DW_CHUNKS of X_col a thread; sum G on the same threads if needed
        dw, own = _product_by_threads(frame, g, win, gw, with_sums=sums is None)
        sums = own if sums is None else sums
    elif _long_rows(win) or (not full and wide_rows(win)):   # register blocks, no X_col
        dw = images_product(frame.flat, wide_offsets(win, xp), gw, npos, w2, full, win)
    else:
        dw = np.zeros(w2.shape, dtype=xp.dtype)
        for images in image_chunks(win):
            cols, gc = _chunk_columns(frame, g, win, gw, images)
            _grad_weight_kernel(cols, w2, gc, full, xp.dtype.type(1), dw)
    if full:
        sums = _sums_per_filter(np.ascontiguousarray(g)) if sums is None else sums
        _correct(dw, w2, frame.centre, sums)
    return dw


def _correct(dw, w2, centre, sums):
    """dw -= (W - c) sum_l G per filter (Eq. 5's second part, in the shifted frame), with
    one temporary of dW's size, not two. (VGG-small's 512-channel 8x8 layer, whose dW is
    9 MB: the product's partial sums, their total, its transposed copy, a dW of zeros
    never used and the two temporaries here held 45 MB at once; 2026-12-07.)"""
    term = w2 - centre
    term *= sums[:, None]
    dw -= term
