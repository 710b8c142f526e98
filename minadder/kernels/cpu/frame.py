"""The padded input in the kernels' shifted frame, which the blocked forward and both
full-mode gradients read: one copy per layer, built by the forward.

Why a shifted frame. The blocked kernels use identities that cancel large terms when
inputs and filters share a large offset (raw pixels 0-255 fed to a first layer):
|x - w| = x + w - 2 min(x, w) in the forward, HardTanh(w - x) = clip(w, x - 1, x + 1) - x
in dX, and dW = G X^T - W sum G in full mode. |x - w|, HT(w - x) and x - w do not change
when x and w are shifted by the same c, so the kernels work with x - c and w - c, where
c = mean(W) is computed per call (the filters are small: no pass over the input). Where
x and w sit near a common offset, the filters' mean finds it; elsewhere |x - w| is large
next to the rounding. Sign-mode gradients compare x with w directly and use c = 0.

Why padded. With the zero padding written into the copy (as -c in the shifted frame),
X_col[(c, i, j), (n, u, v)] = xp[n, c, s*u + i, s*v + j] has no bounds to check.

Why rows share their padding (stride 1). The stride-1 kernels read a row of X_col as
one stretch of the flat frame ("wide positions", positions.py): output (u, v) sits at
q = u * pitch + v, and the positions v >= W_out of each row are computed and dropped.
A padded row holds p numbers of padding on each side, and the right padding of one row
equals the left padding of the next (both -c), so the rows may share it: rows
``pitch`` = W + p numbers apart instead of W + 2p, the right padding of row r read from
the first p numbers of row r + 1. Every address stays xp[n, c, r, j] = flat[n, c * plane
+ r * pitch + j] (xp is a view with those strides; its last p columns alias the next
row's first p), and a 3x3 layer with padding 1 drops 1 position a row instead of 2: 3 %
of the work at 32x32, 6 % at 16x16, 11 % at 8x8 taken back. A 2x3 image (rows a b c and
d f g) with p = 1, e the padding, as the flat plane:

    rows W + 2p apart:  e e e e e | e a b c e | e d f g e | e e e e e
    rows W + p apart:   e e e e | e a b c | e d f g | e e e e | e

(the 3x3 window of output (0, 2) reads b c e of its middle row: the e is row 2's first).

Why stride 2 is split by parity ("phases"). With stride 2, output (u, v) reads
xp[2u + i, 2v + j]: every other number of a row, so its row of X_col is no stretch of
the frame and the kernels copied it out into panels. Split each padded plane into four
by the parity of its row and column, phase (r, s)[a, b] = xp[2a + r, 2b + s], and the
same number is phase (i % 2, j % 2)[u + i // 2, v + j // 2]: in the phase of (i, j), the
outputs' rows of X_col are stretches again, on wide positions q = u * pitch + v with
pitch = ceil((W + 2p) / 2), and the stride-1 kernels read them in place. A channel's
frame is its four phases one after another, (0, 0), (0, 1), (1, 0), (1, 1), each
ceil((H + 2p) / 2) rows of ``pitch`` numbers (positions.wide_offsets finds row (c, i, j));
a 1x1 layer reads phase (0, 0) alone, and its frame holds only that one.
"""
from typing import Any, NamedTuple

import numpy as np
from numba import njit, prange

from .register_block import PREFETCH_BYTES, lanes_of, pick_pairs, prefetch_lines, split_pairs

#: the forward computes whole vectors of VECTOR numbers (16 float32 = one AVX-512
#: register); its rows are rounded up to a multiple of it (chosen by hand for AVX-512,
#: where it is one register; on AVX2 two registers; not re-measured)
VECTOR = 16
#: spare numbers after each padded image, for the kernels' reads rounded up to whole
#: vectors: two, because a stride-2 copy (positions.copy_runs) reads two vectors at a time
SLACK = 2 * VECTOR


def same_dtype(*arrays):
    """C-contiguous arrays of one float dtype (float32 stays float32), so each kernel
    compiles once per dtype. An array already so is returned as it is (no copy: the torch
    bridge passes views of a tensor's memory)."""
    dtype = np.result_type(*arrays)
    if dtype not in (np.float32, np.float64):
        dtype = np.float64
    return tuple(np.ascontiguousarray(a, dtype=dtype) for a in arrays)


def filters_mean(w2):
    """The shift c of the frame: the mean of the filters W (C_out, K), in their dtype."""
    return w2.dtype.type(w2.mean(dtype=np.float64)) if w2.size else w2.dtype.type(0)


class ShiftedInput(NamedTuple):
    """x - centre, zero-padded (the padding holds -centre): what the blocked kernels read.

    ``xp`` (N, C, H + 2p, W + 2p) is a view into ``flat`` (N, C * plane + SLACK), whose
    rows end with SLACK spare numbers so that the forward may read whole vectors past the
    last receptive field (into values it then drops); its rows are ``row_pitch(xp)``
    numbers apart (shared padding: see above). A frame split by parity (stride 2: see
    above) has xp (N, C, phases * rows, pitch), each channel's phases one under the other.
    ``finite``: whether every number of x is finite, found on the way (the copy reads
    them all; see all_finite).
    """
    xp: np.ndarray
    flat: np.ndarray
    centre: Any          # a scalar of x's dtype
    finite: bool = True


def phased(win):
    """Whether win's frame is split by parity (stride 2 on several output rows: see above)."""
    return win.stride == 2 and win.ho > 1


def frame_pitch(win):
    """Numbers between two rows of win's padded frame: W + p where rows can share their
    padding (stride 1, p <= kw - 1, so that an output row never reaches past the shared
    numbers), ceil((W + 2p) / 2) for a frame split by parity, else W + 2p."""
    if phased(win):
        return (win.w + 2 * win.padding + 1) // 2
    shared = win.stride == 1 and win.padding <= win.kw - 1
    return win.w + (1 if shared else 2) * win.padding


def frame_stride(win):
    """The stride at which the kernels read win's frame: 1 where it is split by parity."""
    return 1 if phased(win) else win.stride


def phase_count(win):
    """The phases win's frame holds: 4, 1 for a 1x1 layer (phase (0, 0) alone), 0 where
    it is not split by parity."""
    if not phased(win):
        return 0
    return 1 if win.kh == win.kw == 1 else 4


def phase_rows(win, xp):
    """Rows of each phase of a frame split by parity (phased); 0 for another."""
    return xp.shape[2] // phase_count(win) if phased(win) else 0


def row_pitch(xp):
    """Numbers between two rows of a padded frame ``xp`` (its row stride)."""
    return xp.strides[2] // xp.itemsize


def plane_size(xp):
    """Numbers between two channels of a padded frame ``xp`` (its channel stride)."""
    return xp.strides[1] // xp.itemsize


def padded(x, padding, centre, pitch=None, phases=0):
    """The ShiftedInput of x (N, C, H, W) for this padding and shift, rows ``pitch``
    numbers apart (W + 2p unless given; W + p shares the padding, frame_pitch); with
    ``phases`` 4 (or 1: phase (0, 0) alone), split by parity (see above; the pitch is
    then ceil((W + 2p) / 2))."""
    if phases:
        frame = empty_phases(x, padding, centre, phases)
        _phase_shift(np.ascontiguousarray(x), padding, frame.xp.shape[2] // phases, row_pitch(frame.xp), phases,
                     frame.centre, frame.flat, frame.sums)
        return filled(frame)
    frame = empty_frame(x, padding, centre, pitch)
    _pad_shift(np.ascontiguousarray(x), padding, row_pitch(frame.xp), plane_size(frame.xp),
               x.dtype.type(centre), frame.flat, frame.sums)
    return filled(frame)


class EmptyFrame(NamedTuple):
    """A ShiftedInput's arrays before _pad_shift (or a kernel that frames each image as it
    goes, forward.py) fills them: ``sums`` (N*C) receives each plane's sum of x."""
    xp: np.ndarray
    flat: np.ndarray
    centre: Any
    sums: np.ndarray


def empty_frame(x, padding, centre, pitch=None):
    """The arrays of x's padded frame (an EmptyFrame), nothing written but the slack."""
    h, w = x.shape[2:]
    hp, wp = h + 2 * padding, w + 2 * padding
    pitch = wp if pitch is None else pitch
    if not w + padding <= pitch <= wp:
        raise ValueError(f"a padded frame's rows are W + p to W + 2p numbers apart, got {pitch}")
    return _empty(x, (hp - 1) * pitch + wp, (hp, wp), pitch, centre)


def empty_phases(x, padding, centre, phases):
    """The EmptyFrame of x split by parity: per channel ``phases`` phases of
    ceil((H + 2p) / 2) rows of ceil((W + 2p) / 2) numbers, xp (N, C, phases * rows, pitch)."""
    h, w = x.shape[2:]
    rows, pitch = (h + 2 * padding + 1) // 2, (w + 2 * padding + 1) // 2
    return _empty(x, phases * rows * pitch, (phases * rows, pitch), pitch, centre)


def _empty(x, plane, shape, pitch, centre):
    """An EmptyFrame: flat (N, C * plane + SLACK), its slack zeroed, and xp its (N, C) +
    ``shape`` view, channels ``plane`` and rows ``pitch`` numbers apart."""
    n, c = x.shape[:2]
    flat = np.empty((n, c * plane + SLACK), dtype=x.dtype)
    flat[:, c * plane:] = 0
    item = flat.itemsize
    xp = np.lib.stride_tricks.as_strided(flat, (n, c) + tuple(shape), (flat.strides[0], plane * item, pitch * item, item))
    return EmptyFrame(xp, flat, x.dtype.type(centre), np.empty(n * c, dtype=x.dtype))


@njit(parallel=True, fastmath={"reassoc"}, cache=True)
def _phase_shift(x, p, rows, pitch, phases, centre, flat, sums):
    """Every plane (n, c) of flat framed and split by parity (phase_shift_plane), one
    task per plane."""
    n_img, channels, h, w = x.shape
    plane = phases * rows * pitch
    planes = x.reshape(n_img * channels, h * w)
    for task in prange(n_img * channels):
        n, c = task // channels, task % channels
        sums[task] = phase_shift_plane(planes[task], h, w, p, rows, pitch, phases, centre,
                                       flat[n, c * plane:(c + 1) * plane])


@njit(fastmath={"reassoc"}, cache=True)
def phase_shift_plane(src, h, w, p, rows, pitch, phases, centre, dst):
    """dst = the plane src (h*w numbers) - centre, padded with -centre and split by
    parity: pixel (y, z) of the padded plane goes to phase (y % 2, z % 2), row y // 2,
    column z // 2 (with ``phases`` 1, only the pixels of phase (0, 0): first_phase_plane);
    returns the sum of src, as pad_shift_plane. The padding first (the whole plane, in
    L1), then each row of x into its phases' rows.

    A row's numbers go in pairs (row[2m], row[2m + 1]) to the two column phases, padded
    columns 2m + p and 2m + 1 + p: by whole vectors and then half ones
    (register_block.split_pairs: two loads, two shuffles), the sum in one loop over the
    plane. Read as two loops of every other number, one per phase, LLVM gathered them
    (vgatherqps); a loop over the pairs ran number by number on rows of 16 pairs, shorter
    than the loop LLVM vectorises. Measured 2026-12-06, one 16-channel 32x32 image in L2,
    one thread: 9.3-9.8 us gathered, 6.2-6.9 by pairs, 3.4-3.6 by vectors; the forward at
    batch 64, 2 threads, four alternations, 16 -> 32 channels 1.36-1.46 -> 1.31-1.44 ms,
    32 -> 64 channels 1.34-1.48 -> 1.28-1.40 (by pairs -> by vectors). (Writing only the
    padding instead of the whole plane first turned the padding's stores into scatters.)"""
    if phases == 1:
        return first_phase_plane(src, h, w, p, pitch, centre, dst)
    quarter = rows * pitch
    edge = -centre
    for q in range(dst.shape[0]):
        dst[q] = edge
    total = src.dtype.type(0)
    for q in range(h * w):
        total += src[q]
    pairs = w // 2
    lanes = lanes_of(src)
    for i in range(h):
        y = i + p
        at = (y % 2) * 2 * quarter + (y // 2) * pitch
        first_at = at + (p % 2) * quarter + p // 2             # where row[2m] goes
        second_at = at + ((p + 1) % 2) * quarter + (p + 1) // 2   # and row[2m + 1]
        s = i * w
        m = 0
        while m + lanes <= pairs:
            split_pairs(src, s + 2 * m, dst, first_at + m, second_at + m, centre, 1)
            m += lanes
        if m + lanes // 2 <= pairs:    # at most one half vector is left
            split_pairs(src, s + 2 * m, dst, first_at + m, second_at + m, centre, 2)
            m += lanes // 2
        for mm in range(m, pairs):
            dst[first_at + mm] = src[s + 2 * mm] - centre
            dst[second_at + mm] = src[s + 2 * mm + 1] - centre
        if w % 2:                      # the row's last number, without a pair
            z = w - 1 + p
            dst[at + (z % 2) * quarter + z // 2] = src[s + w - 1] - centre
    return total


@njit(fastmath={"reassoc"}, cache=True)
def first_phase_plane(src, h, w, p, pitch, centre, dst):
    """phase_shift_plane's phase (0, 0) alone, all that a 1x1 stride-2 layer reads: the
    numbers of src on even padded rows and columns (i + p and j + p even), - centre;
    returns their sum. The numbers no window reads (odd padded rows and columns) are
    neither read nor summed, so that a non-finite number there does not send the layer to
    the reference, which never reads it either.

    A loop of its own over each row's pairs, the even (or odd) one of each pair picked by
    whole vectors and half ones (register_block.pick_pairs, its sum with it), and no
    padding written where there is none (p = 0). Inside phase_shift_plane's loop over
    every row, pair by pair, it ran 1.4-2x as long: measured 2026-12-07, 2-core AVX-512
    VM, batch 64, 2 threads, the frame's pass alone (_phase_shift), best ms, 16 -> 32
    channels 0.102-0.119 -> 0.074-0.076, 32 -> 64 channels 0.085-0.101 -> 0.049-0.051.
    (Pair by pair in a loop of its own: 0.084 and 0.052; LLVM gathered every other number.)"""
    if p:                              # with p = 0 the rows below write every number
        for q in range(dst.shape[0]):
            dst[q] = -centre
    total = src.dtype.type(0)
    pairs = w // 2
    odd = p % 2                        # then row[2m + 1] is on an even padded column
    lanes = lanes_of(src)
    for i in range(odd, h, 2):
        s = i * w
        at = ((i + p) // 2) * pitch + (odd + p) // 2
        m = 0
        while m + lanes <= pairs:
            total += pick_pairs(src, s + 2 * m, dst, at + m, centre, 1, 1) if odd else \
                pick_pairs(src, s + 2 * m, dst, at + m, centre, 0, 1)
            m += lanes
        if m + lanes // 2 <= pairs:    # at most one half vector is left
            total += pick_pairs(src, s + 2 * m, dst, at + m, centre, 1, 2) if odd else \
                pick_pairs(src, s + 2 * m, dst, at + m, centre, 0, 2)
            m += lanes // 2
        for mm in range(m, pairs):
            v = src[s + 2 * mm + odd]
            total += v
            dst[at + mm] = v - centre
        if w % 2 and not odd:          # the row's last number, without a pair
            v = src[s + w - 1]
            total += v
            dst[at + pairs] = v - centre
    return total


def filled(frame):
    """The ShiftedInput of an EmptyFrame once every plane is written: finite if its sums are."""
    return ShiftedInput(frame.xp, frame.flat, frame.centre, bool(np.isfinite(frame.sums).all()))


@njit(parallel=True, fastmath={"reassoc"}, cache=True)
def _pad_shift(x, p, pitch, plane, centre, flat, sums):
    """Every plane (n, c) of flat framed by pad_shift_plane, one parallel pass (NumPy's
    four fills and a subtraction took 4 % of a ResNet-20 step on one thread), each task
    asking for a later plane ahead (its source and its frame: prefetch_lines)."""
    n_img, channels, h, w = x.shape
    planes = x.reshape(n_img * channels, h * w)
    ahead = max(1, PREFETCH_BYTES // max(1, h * w * x.itemsize))     # planes asked for ahead
    for task in prange(n_img * channels):
        n, c = task // channels, task % channels
        later = task + ahead                            # most often a later task of this thread's
        if later < n_img * channels:
            prefetch_lines(planes[later], 0, h * w, False)
            prefetch_lines(flat[later // channels], (later % channels) * plane, (later % channels + 1) * plane, True)
        sums[task] = pad_shift_plane(planes[task], h, w, p, pitch, centre, flat[n, c * plane:(c + 1) * plane])


@njit(fastmath={"reassoc"}, cache=True)
def pad_shift_plane(src, h, w, p, pitch, centre, dst):
    """dst = the plane src (h*w numbers) - centre framed by p rows and columns of -centre
    (the zero padding, shifted), rows ``pitch`` numbers apart; returns the sum of src,
    finite only if every number of it is (all_finite's test, here at no extra pass over
    x: a separate one took 1 % of a ResNet-20 step). fastmath is limited to
    reassociation, so that an inf or NaN still shows in the sum.

    Front to back: the top rows and the first left padding, then each row's inside and
    the numbers up to the next row's inside (its right padding and the next row's left,
    one stretch of p numbers when they share it), then the bottom rows; each stretch a
    view indexed from 0. Indexed from the plane's start instead (dst[at + j], an index
    LLVM cannot prove non-negative), the stores became scatters (vscatterqps): measured
    2026-12-06, batch 64, 2 threads, 0.25 / 0.17 / 0.135 ms at 16 / 32 / 64 channels
    against 0.16 / 0.11 / 0.10-0.12 with views."""
    edge = -centre
    top = dst[:p * pitch + p]
    for q in range(top.shape[0]):
        top[q] = edge
    total = src.dtype.type(0)
    for i in range(h):
        at = (p + i) * pitch + p
        inside, row, between = dst[at:at + w], src[i * w:(i + 1) * w], dst[at + w:at + pitch]
        for j in range(w):
            v = row[j]
            inside[j] = v - centre
            total += v
        for j in range(between.shape[0]):
            between[j] = edge
    bottom = dst[(p + h) * pitch:]
    for q in range(bottom.shape[0]):
        bottom[q] = edge
    return total


@njit(parallel=True, fastmath={"reassoc"}, cache=True)
def all_finite(flat):
    """Whether every number of the 1-D ``flat`` is finite, by sums in its dtype over chunks
    of 2^16 in parallel: an IEEE sum is finite only if every term is (inf - inf and NaN +
    anything are NaN). Numbers so large that a chunk's sum overflows read as not finite
    too, which sends them to the reference, where no identity can overflow on the way.
    fastmath is limited to reassociation (the sum vectorises; the full set would let LLVM
    assume there is no inf or NaN). (NumPy's a.sum(), on one thread, took 4 % of a
    ResNet-20 step.)"""
    chunk = 1 << 16
    chunks = (flat.shape[0] + chunk - 1) // chunk
    bad = 0
    for b in prange(chunks):
        part = flat[b * chunk:min(flat.shape[0], (b + 1) * chunk)]
        s = part.dtype.type(0)
        for i in range(part.shape[0]):
            s += part[i]
        if not np.isfinite(s):
            bad += 1
    return bad == 0


def cropped(xp, padding, h, w):
    """The (N, C, h, w) inside of a padded (N, C, h + 2p, w + 2p) array, as a new array."""
    out = np.empty(xp.shape[:2] + (h, w), dtype=xp.dtype)
    _crop(xp, padding, out)
    return out


@njit(parallel=True, cache=True)
def _crop(xp, p, out):
    n_img, channels, h, w = out.shape
    for task in prange(n_img * channels):
        src, dst = xp[task // channels, task % channels], out[task // channels, task % channels]
        for i in range(h):
            s, d = src[p + i, p:p + w], dst[i]     # indexed from 0: s[p + j] made LLVM gather
            for j in range(w):
                d[j] = s[j]


def shifted(x, w2, win):
    """x padded in the frame shifted by the filters' mean (full mode and the forward)."""
    return padded(x, win.padding, filters_mean(w2), frame_pitch(win), phase_count(win))


def unshifted(x, win):
    """x padded, not shifted (sign mode: a shift could round a near-tie x == w to 0)."""
    return padded(x, win.padding, x.dtype.type(0), frame_pitch(win), phase_count(win))
