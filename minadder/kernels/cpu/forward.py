"""The blocked forward (Eq. 2): the min identity and register blocks of the filters.

Against naive.py's loop, three things change, each measured in benchmarks/README.md:

* The l1 "GEMM" as a min. |x - w| = x + w - 2 min(x, w): summed over k, the x + w part is
  colsum[l] + wsum[t], so the inner loop is one min and one add per adder-MAC instead of
  a subtract, an abs and an add (17-29 % faster, ``bench_min_trick.py``). It works in the
  shifted frame of frame.py, where this identity does not cancel large terms.
* Register blocking. The inner step keeps MR channels x 4 vectors of accumulators in
  vector registers for the whole loop over a chunk of k: each step loads 4 vectors of a
  row of X_col and broadcasts MR weights (register_block.py, written in LLVM IR: plain
  Numba stored the accumulators every 4 rows). MR is chosen for the CPU in target.py
  (``inspect_asm.py`` shows each loop and its stack accesses).
* Reading X_col in place. With stride 1 a task owns a few output rows of one image and
  reads the rows of X_col straight from the padded input on wide positions
  (positions.py); stride 2 the same from the frame split by parity (frame.py); larger
  strides, and images with short rows (8x8, where wide positions would waste a fifth
  of the work), pack a cache-sized panel of them per task.
* Framing on the way. The frame (frame.py) of a 16-channel 32x32 layer at batch 64 is
  4.6 MB, more than L2: written in a pass of its own, it was read back from memory. With
  stride 1 or 2 (3x3) and images enough for every thread, a task frames one image and
  then reads that frame while it is in L2. Measured 2026-12-06, batch 64, 2 threads,
  with the frame's stores as views (frame.pad_shift_plane): 16 channels 2.60-2.75 ->
  2.28-2.38 ms, 32 channels 2.23 -> 2.12-2.13, 16 -> 32 channels at stride 2 1.70-1.77
  -> 1.58-1.65; in a ResNet-20 step (cProfile) the wide forwards and every frame
  33.1-34.3 -> 31.1-32.2 ms.
"""
import numpy as np
from numba import get_num_threads, njit, prange

from .frame import (SLACK, VECTOR, empty_frame, empty_phases, filled, filters_mean, frame_pitch, frame_stride,
                    pad_shift_plane, phase_count, phase_shift_plane, row_pitch, shifted)
from .register_block import (BLOCK_CHANNELS, BLOCK_VECTORS, COLUMN_CHANNELS, min_sums_registers, prefetch_lines,
                             product_sums_registers, vector_length)
from .positions import copy_runs, field_row, run_vectors, segments, wide_count, wide_offsets, wide_rows

#: rows of X_col per chunk of the packed forward's panel, which all channels' blocks share
#: while it is in L1/L2. Chunking was measured (+30 % on VGG-size layers, K up to 4608:
#: benchmarks/README.md, "What made the difference", 2); 144 instead of 64 measured no
#: better on the packed 8x8 and stride-2 layers (2026-12-06).
CHUNK_K = 64
#: at most this many rows of X_col per chunk where they are read in place (wide positions),
#: in chunks as equal as they can be (even_chunk): every chunk pays each register block's
#: setup (its 16 sums loaded and stored, its pointers), and a 64-row loop paid it often.
#: The block alone, one thread, data in cache, of min + add (2026-12-06, 2-core AVX-512
#: VM): 16 channels (K = 144) 0.77-0.79 in chunks of 64, 64, 16 and 0.86-0.89 in one of
#: 144; 32 channels (K = 288) 0.82-0.85 -> 0.90-0.92; 64 channels 0.85-0.86 -> 0.89-0.92
#: (the block: the 64-channel 8x8 layer itself runs packed, in CHUNK_K rows).
#: ResNet-20's wide layers, batch 64, 2 threads, three alternations: 16 channels
#: 2.18 -> 2.00-2.07 ms, 32 channels 1.96-2.03 -> 1.85-2.00, 16 -> 32 at stride 2
#: 1.44-1.46 -> 1.34-1.44 (with the input out of cache: -3 %, -3 %, +3 %); the ResNet-20
#: step, four alternations, within its spread. Every wide ResNet-20 layer sums K in one chunk.
WIDE_CHUNK_K = 288
#: the register block's channels: 4 with 32 vector registers, 2 with 16 (target.py;
#: the 4 x 4 block compiled for 16 registers spilled, 174 stack accesses in its hottest loop)
MR = BLOCK_CHANNELS
#: wide positions per stride-1 task (C_out x 512 accumulators); chosen by hand, not re-measured
WIDE_TASK_POSITIONS = 512
#: tasks per thread the forward aims for, so that no thread idles at the end of a launch;
#: chosen by hand, not re-measured
TASKS_PER_THREAD = 4
#: accumulators (floats) per packed task: C_out x tile floats = 128 KB of float32 stay in
#: L2; chosen by hand from the cache size, not re-measured. A tile is 64 to 512 positions.
PACKED_TASK_FLOATS = 32768
PACKED_TILE_MIN, PACKED_TILE_MAX = 64, 512
#: stride-1 layers read X_col in place only when an image has this many wide positions:
#: on shorter rows each register block's weights serve too few vectors, and packing tiles
#: of positions from several images wins. Measured 2026-12-05 (2-core AVX-512 Intel, batch
#: 64, 2 threads, ms): 8x8 64ch (78 positions) wide 3.65, packed 2.92; 16x16 32ch (286)
#: wide 3.25, packed 4.01; LeNet-5-BN step (conv2: 10x10, 136) 20.3 ms packed, 19.6 wide.
#: Where the wide positions are the output positions (a 1x1 layer's frame: no gaps), in
#: place wins on short rows too: measured 2026-12-07, the kernel given the frame, best ms,
#: 1x1 32 -> 64 channels at stride 2 on 8x8 outputs packed 0.222-0.223, in place
#: 0.172-0.177; 1x1 64 -> 64 at stride 1 on 8x8 0.301-0.302 -> 0.246-0.253.
WIDE_MIN_POSITIONS = 100


# The inner steps read rows of X_col from a flat array ``src``: row k0 + kk starts at
# src[base + koff[kk]]. Row views indexed by a range variable let Numba emit plain
# vector loads (an index it cannot prove non-negative gets gathers: 2.5-3.5x slower).
@njit(fastmath=True, cache=True)
def _min_sums_1(src, koff, base, wsh, t, k0, nk, width, products, acc):
    """acc[t, q] += sum_kk min(X'[k0 + kk, q], W'[t, k0 + kk]) (``products``: X' W', for
    Eq. 28 and the convolution): one channel left over."""
    a = acc[t, :width]
    for kk in range(nk):
        wv, s0 = wsh[t, k0 + kk], base + koff[kk]
        r0 = src[s0:s0 + width]
        if products:
            for q in range(width):
                a[q] += r0[q] * wv
        else:
            for q in range(width):
                a[q] += min(r0[q], wv)


@njit(fastmath=True, cache=True)
def _min_sums_all(src, koff, base, wsh, k0, nk, width, products, acc):
    """acc[t, q] += sum_kk min(X'[k0 + kk, q], W'[t, k0 + kk]) for every channel t; with
    ``products`` X' W' instead of the mins (the l2 layer's Eq. 28, and conv.py's
    convolution, which calls this with W and the unshifted input).

    Register blocks (register_block.py) of MR channels x BLOCK_VECTORS vectors, all
    channels of one stretch of positions before the next, so that the stretch's rows of
    X_col stay in L1 while every block reads them; the positions after the last whole
    block take blocks of COLUMN_CHANNELS channels x one vector, then of MR x one (acc
    and src hold whole vectors past ``width``), the channels after the last whole block
    _min_sums_1.
    """
    n_t = wsh.shape[0]
    lanes = vector_length(wsh.itemsize)
    step, t_end = BLOCK_VECTORS * lanes, n_t - n_t % MR
    t_column = n_t - n_t % COLUMN_CHANNELS
    for q in range(0, width, step):
        if q + step <= width:
            for t in range(0, t_end, MR):
                if products:
                    product_sums_registers(src, koff, base, wsh, t, k0, nk, q, acc, MR, BLOCK_VECTORS)
                else:
                    min_sums_registers(src, koff, base, wsh, t, k0, nk, q, acc, MR, BLOCK_VECTORS)
        else:
            for qv in range(q, width, lanes):                # positions left over, a vector at a time
                for t in range(0, t_column, COLUMN_CHANNELS):
                    if products:
                        product_sums_registers(src, koff, base, wsh, t, k0, nk, qv, acc, COLUMN_CHANNELS, 1)
                    else:
                        min_sums_registers(src, koff, base, wsh, t, k0, nk, qv, acc, COLUMN_CHANNELS, 1)
                for t in range(t_column, t_end, MR):
                    if products:
                        product_sums_registers(src, koff, base, wsh, t, k0, nk, qv, acc, MR, 1)
                    else:
                        min_sums_registers(src, koff, base, wsh, t, k0, nk, qv, acc, MR, 1)
    for tt in range(t_end, n_t):                             # the C_out % MR channels left over
        _min_sums_1(src, koff, base, wsh, tt, k0, nk, width, products, acc)


def even_chunk(n, most):
    """The length of ceil(n / most) chunks of n as equal as they can be (none over most)."""
    chunks = -(-n // most)
    return -(-n // chunks)


def wide_chunk(win):
    """Rows of X_col per chunk where the forward reads them in place (WIDE_CHUNK_K)."""
    return even_chunk(win.k, WIDE_CHUNK_K)


@njit(fastmath=True, cache=True)
def _weight_sums(wsh, squared):
    """sum_k W'[t, k] per filter (squared: sum_k W'[t, k]^2, Eq. 28's |W|^2)."""
    n_t, n_k = wsh.shape
    wsum = np.zeros(n_t, dtype=wsh.dtype)
    for t in range(n_t):
        for k in range(n_k):
            wsum[t] += wsh[t, k] * wsh[t, k] if squared else wsh[t, k]
    return wsum


@njit(fastmath=True, cache=True)
def _add_row(colsum, row, width, squared):
    """colsum[q] += row[q] (squared: row[q]^2, Eq. 28's |X_col|^2) for q < width."""
    if squared:
        for q in range(width):
            colsum[q] += row[q] * row[q]
    else:
        for q in range(width):
            colsum[q] += row[q]


# Without fastmath: its reassociation let LLVM compute 2 acc - (colsum + wsum) in one
# compilation and (2 acc - colsum) - wsum in another (a kernel compiled in this process
# against the same kernel loaded from Numba's disk cache), which differ in the last bit:
# the same training gave two results. Plain operations vectorise here just as well.
@njit(cache=True)
def _output_run(dst, acc, colsum, wsum):
    """dst = 2 acc - colsum - wsum (Eq. 2 from the min sums: out = 2 sum min - colsum - wsum)."""
    for v in range(dst.shape[0]):
        dst[v] = (acc[v] + acc[v]) - colsum[v] - wsum


@njit(fastmath=True, cache=True)
def _channel_sums(img, koff, fields, base, k0, nk, squared, channels):
    """channels[q] += X'[k, q] (squared: X'[k, q]^2) over the width of ``channels`` for
    each channel's first row k = (c, 0, 0) among the rows k0..k0 + nk - 1 of X_col (row k
    starts at img[base + koff[k]]): one row per channel, reaching over the whole filter
    window, whose kh*kw shifts _column_sums then adds up."""
    reach = channels.shape[0]
    for k in range(k0 + (-k0) % fields, k0 + nk, fields):
        _add_row(channels, img[base + koff[k]:base + koff[k] + reach], reach, squared)


@njit(fastmath=True, cache=True)
def _column_sums(channels, offsets, width, colsum):
    """colsum[q] = sum_k X'[k, q] on wide positions from the channels' sums (_channel_sums):
    the sum of their kh*kw shifts (offsets: the rows (0, i, j), i*pitch + j). C + kh*kw
    adds a position instead of C*kh*kw: on 16 channels at 32x32 the plain sum over the
    144 rows took 15 % of the forward."""
    for f in range(offsets.shape[0]):
        _add_row(colsum, channels[offsets[f]:offsets[f] + width], width, False)


@njit(fastmath=True, cache=True)
def _wide_rows(img, koff, fields, wsh, wsum, pitch, wo, u0, u1, chunk, squared, out):
    """Eq. 2 on wide positions (stride 1, or 2 on a frame split by parity) on output rows
    u0..u1 - 1 of one image, every channel, reading
    X_col straight from its padded frame ``img`` (flat) into ``out`` (C_out, P).

    In the shifted frame (xp = Xp - c, wsh = W - c) and with |a - b| = a + b - 2 min(a, b):
    out = 2 sum_k min(x', w') - colsum'[l] - wsum'[t], on wide positions q = (u - u0)*pitch
    + v: row k of X_col is the stretch img[koff[k] + u0*pitch + q] (``fields`` = kh*kw rows
    per channel), summed ``chunk`` rows at a time (wide_chunk). ``squared``: the l2 layer
    (Eq. 27) by Eq. 28, -(a - b)^2 = 2 a b - a^2 - b^2: the same with products for the
    mins and sums of squares for colsum and wsum.

    (Y written by the register blocks themselves, masked stores across the rows' gaps,
    instead of the output pass: within the spread, 2026-12-06; the pass's cost is Y's
    bytes, which the blocks write too: benchmarks/README.md, thirteenth session.)
    """
    n_k, n_t = wsh.shape[1], wsh.shape[0]
    width = (u1 - u0 - 1) * pitch + wo
    width += (-width) % VECTOR                         # whole vectors (SLACK covers them)
    base = u0 * pitch
    acc = np.zeros((n_t, width), dtype=wsh.dtype)      # sum_k min(x', w')
    channels = np.zeros(width + koff[:fields].max(), dtype=wsh.dtype)   # sum_c x'[c, 0, 0]
    for k0 in range(0, n_k, chunk):
        nk = min(chunk, n_k - k0)
        _min_sums_all(img, koff[k0:k0 + nk], base, wsh, k0, nk, width, squared, acc)
        # the chunk's channels summed while its rows are still in cache (before the
        # min sums, the sums' first reads from memory took 9 % of a 16-channel forward)
        _channel_sums(img, koff, fields, base, k0, nk, squared, channels)
    colsum = np.zeros(width, dtype=wsh.dtype)          # sum_k x'
    _column_sums(channels, koff[:fields], width, colsum)
    # out = 2 acc - colsum - wsum: rows without gaps (a 1x1 layer's) in one run of
    # (u1 - u0) * wo numbers, others output row by output row. With K = C = 16 to 32 terms
    # per number, the pass over rows of 8 to 16 numbers took about as long as the blocks;
    # in one run, ResNet-20's 1x1 forwards at batch 64, 2 threads, three alternations, best
    # ms: 16 -> 32 channels 0.35-0.38 -> 0.32-0.36, 32 -> 64 0.27-0.28 -> 0.22-0.24
    # (measured 2026-12-07).
    run, runs = (wo, u1 - u0) if pitch != wo else ((u1 - u0) * wo, 1)
    for t in range(n_t):
        for r in range(runs):
            q0 = r * pitch
            _output_run(out[t, u0 * wo + r * run:u0 * wo + (r + 1) * run], acc[t, q0:q0 + run], colsum[q0:q0 + run],
                        wsum[t])


@njit(parallel=True, fastmath=True, cache=True)
def _forward_wide_kernel(xp2, koff, fields, wsh, pitch, ho, wo, rows, chunk, squared, out):
    """Eq. 2 on wide positions, from a frame written before (frame.padded): a task owns
    ``rows`` output rows of one image (_wide_rows)."""
    n_img = out.shape[0]
    wsum = _weight_sums(wsh, squared)
    blocks = (ho + rows - 1) // rows
    for task in prange(n_img * blocks):
        n, u0 = task // blocks, (task % blocks) * rows
        _wide_rows(xp2[n], koff, fields, wsh, wsum, pitch, wo, u0, min(ho, u0 + rows), chunk, squared, out[n])


@njit(parallel=True, fastmath=True, cache=True)
def _framed_forward_kernel(x, padding, centre, flat, sums, koff, fields, wsh, pitch, ho, wo, rows, phases, chunk,
                           squared, out):
    """_forward_wide_kernel with the frame written on the way: a task owns one image,
    frames it (frame.pad_shift_plane, each plane's sum into sums[n*C + c]) and then
    computes its output ``rows`` rows at a time while that frame is still in L2. A frame
    written in a pass of its own before was read back from memory (the layer's frame is
    larger than L2 from 16 channels at 32x32 at batch 64). Stride 2 (``phases`` 4 or 1):
    the frame split by parity (frame.phase_shift_plane), in phases of ``phase_rows`` rows."""
    n_img, channels, h, w = x.shape
    plane = (flat.shape[1] - SLACK) // channels
    phase_rows = plane // (phases * pitch) if phases else 0
    wsum = _weight_sums(wsh, squared)
    for n in prange(n_img):
        img, planes = flat[n], x[n].reshape(channels, h * w)
        for c in range(channels):
            if c + 1 < channels:          # the next plane's source, across a page boundary
                prefetch_lines(planes[c + 1], 0, h * w, False)
            if phases:
                sums[n * channels + c] = phase_shift_plane(planes[c], h, w, padding, phase_rows, pitch, phases,
                                                           centre, img[c * plane:(c + 1) * plane])
            else:
                sums[n * channels + c] = pad_shift_plane(planes[c], h, w, padding, pitch, centre,
                                                         img[c * plane:(c + 1) * plane])
        for u0 in range(0, ho, rows):
            _wide_rows(img, koff, fields, wsh, wsum, pitch, wo, u0, min(ho, u0 + rows), chunk, squared, out[n])


@njit(parallel=True, fastmath=True, cache=True)
def _forward_packed_kernel(xp, flat, koff_frame, wsh, kh, kw, stride, ho, wo, pitch, tile, squared, out):
    """Eq. 2 for any stride: as _forward_wide_kernel, but a task owns ``tile`` positions
    and packs their receptive fields into a panel, CHUNK_K rows of X_col at a time.
    Strides 1 and 2 copy a row's runs from the flat frame (``flat``, 1-D; row k starts
    koff_frame[k] after a run's start) by whole vectors (positions.copy_runs: 8x8 layers
    spent 30 % of the forward in field_row), other strides by field_row."""
    n_k = wsh.shape[1]
    n_img, n_t, plane = out.shape
    n_l = n_img * plane
    wsum = _weight_sums(wsh, squared)
    # panel row kk starts at kk * rows_apart, VECTOR numbers (a cache line of float32)
    # more than the tile: with rows a power of 2 apart the block's 64 rows fell in the
    # same few sets of the L1 cache, evicting each other (packed forwards 6-7 % faster)
    rows_apart = tile + VECTOR
    koff = np.arange(CHUNK_K) * rows_apart
    image_size = flat.shape[0] // n_img
    for b in prange((n_l + tile - 1) // tile):
        l0 = b * tile
        width = min(tile, n_l - l0)
        segs = np.empty((tile // wo + 2, 5), dtype=np.int64)
        count = segments(l0, width, plane, wo, segs)
        src, dst = run_vectors(segs, count, image_size, pitch, vector_length(flat.itemsize), min(stride, 2))
        panel = np.zeros(CHUNK_K * rows_apart, dtype=wsh.dtype)
        acc = np.zeros((n_t, width + (-width) % VECTOR), dtype=wsh.dtype)
        colsum = np.zeros(width, dtype=wsh.dtype)
        for k0 in range(0, n_k, CHUNK_K):
            nk = min(CHUNK_K, n_k - k0)
            for kk in range(nk):
                row = panel[kk * rows_apart:kk * rows_apart + width]
                if stride <= 2:
                    copy_runs(flat, koff_frame[k0 + kk], src, dst, panel, kk * rows_apart, stride)
                else:
                    c, ij = (k0 + kk) // (kh * kw), (k0 + kk) % (kh * kw)
                    field_row(xp, c, ij // kw, ij % kw, stride, segs, count, row, False)
                _add_row(colsum, row, width, squared)
            _min_sums_all(panel, koff, 0, wsh, k0, nk, width, squared, acc)
        for t in range(n_t):
            for r in range(count):
                n, u, v0, length, q0 = segs[r, 0], segs[r, 1], segs[r, 2], segs[r, 3], segs[r, 4]
                _output_run(out[n, t, u * wo + v0:u * wo + v0 + length], acc[t, q0:q0 + length],
                            colsum[q0:q0 + length], wsum[t])


def _rows_per_task(win, pitch):
    """Output rows per stride-1 task: about WIDE_TASK_POSITIONS wide positions, fewer when
    that leaves a thread without work."""
    rows = max(1, min(win.ho, WIDE_TASK_POSITIONS // pitch))
    while rows > 1 and win.n * -(-win.ho // rows) < TASKS_PER_THREAD * get_num_threads():
        rows = -(-rows // 2)
    return rows


def _tile(c_out, positions):
    """Positions per packed task: C_out x tile accumulators stay in L2, and there are
    enough tasks for every thread."""
    tile = min(PACKED_TILE_MAX, max(PACKED_TILE_MIN, (PACKED_TASK_FLOATS // max(1, c_out)) // 16 * 16))
    while tile > PACKED_TILE_MIN and -(-positions // tile) < TASKS_PER_THREAD * get_num_threads():
        tile //= 2
    return tile


def _in_place(win, pitch):
    """Whether the forward reads X_col in place (wide positions), not packed: on long rows,
    or on rows with no gaps between them (a 1x1 layer), where packing would only copy."""
    count = wide_count(win, pitch)
    return wide_rows(win) and (count >= WIDE_MIN_POSITIONS or count == win.plane)


def framed_forward(x, w2, win, out, distance="l1"):
    """x framed (frame.shifted) and Eq. 2 (Eq. 27 for "l2") into out (N, C_out, P): the
    ShiftedInput, which the gradients read again. With stride 1 or 2 on long rows and images
    enough for every thread, one kernel does both, image by image (_framed_forward_kernel);
    else the frame is written first, then blocked_forward reads it."""
    pitch, phases = frame_pitch(win), phase_count(win)
    # (a 1x1 stride-2 layer's frame, phase (0, 0) alone, is written apart: framed on the
    # way it ran 4-6 % slower, 16 -> 32 channels at batch 64; its kernel is light, K = C)
    if not (_in_place(win, pitch) and win.n >= TASKS_PER_THREAD * get_num_threads() and phases != 1):
        frame = shifted(x, w2, win)
        if frame.finite:        # else the caller goes to the reference
            blocked_forward(w2, win, frame, out, distance)
        return frame
    squared = distance == "l2"
    empty = (empty_phases(x, win.padding, filters_mean(w2), phases) if phases
             else empty_frame(x, win.padding, filters_mean(w2), pitch))
    rows = max(1, min(win.ho, WIDE_TASK_POSITIONS // pitch))
    _framed_forward_kernel(np.ascontiguousarray(x), win.padding, empty.centre, empty.flat, empty.sums,
                           wide_offsets(win, empty.xp), win.kh * win.kw, w2 - empty.centre, pitch, win.ho, win.wo,
                           rows, phases, wide_chunk(win), squared, out)
    return filled(empty)


def blocked_forward(w2, win, frame, out, distance="l1"):
    """Eq. 2 (distance "l2": Eq. 27 by Eq. 28) into out (N, C_out, P) from the
    ShiftedInput ``frame`` (its centre c shifts W too)."""
    squared = distance == "l2"
    wsh = w2 - frame.centre
    pitch = row_pitch(frame.xp)
    if _in_place(win, pitch):
        _forward_wide_kernel(frame.flat, wide_offsets(win, frame.xp), win.kh * win.kw, wsh, pitch,
                             win.ho, win.wo, _rows_per_task(win, pitch), wide_chunk(win), squared, out)
    else:
        _forward_packed_kernel(frame.xp, frame.flat.reshape(-1), wide_offsets(win, frame.xp), wsh, win.kh, win.kw,
                               frame_stride(win), win.ho, win.wo, pitch, _tile(win.c_out, win.l), squared, out)
    return out
