"""The bytes of the integer SAD kernel (sad.py) in the order vpsadbw wants them: 8 per lane group.

The sum of Eq. 2 in integers runs over k = (c, i, j); any order gives the same sum as long
as inputs and filters share it. Here the channels come in groups of GROUP = 8, padded with
zeros (a zero in an input meets a zero in a filter, and |0 - 0| adds nothing), and k runs
over (channel group, i, j, channel in the group). Then 8 consecutive k are one 64-bit word:

* ``pixels`` (N, Cg, Hp, Wp) words: the input, padded with ``pad`` in space and with zeros
  in the channels, the 8 channels of a group side by side in one word (the blocked layout
  nChw8c; byte m of a word is channel 8 * group + m on a little-endian CPU, as x86
  and aarch64 are);
* ``words`` (C_out, 8 * Kg): the filters, word g = (group, i, j) holds their 8 channels;
* ``columns`` (Kg, 8 * positions): for a chunk of output positions q = (n, u, v), word g of
  each position's receptive field, columns[g, 8q : 8q + 8] = pixels[n, group, s*u + i,
  s*v + j]. Along a row of output positions v that is a run of pixels words (contiguous
  for stride 1), copied one output row at a time, with no bounds checks (the padding is in
  pixels already).

``scatter`` then copies the chunk's sums (C_out, positions) into out (N, C_out, Ho * Wo),
one contiguous run per image and filter.
"""
import numpy as np
from numba import njit, prange

#: bytes in one SAD lane group: channels are padded to a multiple of it
GROUP = 8


def channel_groups(channels):
    """How many groups of GROUP channels hold ``channels`` (the last one zero-padded)."""
    return -(-channels // GROUP)


@njit(cache=True)
def _pack_channels(xq, n, group, y, padding, row):
    """row[padding + x] = the word of channels 8 * group .. + 7 of xq[n, :, y, x], one
    byte per channel (channel 8 * group + m in byte m), zero bytes past the last channel.
    Through slices: their indices are never negative, so Numba adds no wraparound checks
    and LLVM vectorizes the loop over x (twice as fast as indexing xq and row directly)."""
    source, target = xq[n, GROUP * group:GROUP * (group + 1), y], row[padding:]
    if source.shape[0] == GROUP:                # a full group: a constant count of bytes
        for x in range(xq.shape[3]):
            word = np.uint64(0)
            for m in range(GROUP):
                word |= np.uint64(source[m, x]) << np.uint64(8 * m)
            target[x] = word
    else:
        for x in range(xq.shape[3]):
            word = np.uint64(0)
            for m in range(source.shape[0]):
                word |= np.uint64(source[m, x]) << np.uint64(8 * m)
            target[x] = word


@njit(parallel=True, cache=True)
def _fill_pixels(xq, padding, pad_words, pixels):
    """pixels (N, Cg, Hp, Wp) words: the channel words of xq, ``padding`` pixels of
    pad_words[group] (pad in the real channels' bytes, 0 in the padding channels) around."""
    h, w = xq.shape[2], xq.shape[3]
    for n in prange(xq.shape[0]):
        for group in range(pixels.shape[1]):
            plane = pixels[n, group]
            pad = pad_words[group]
            plane[:padding] = pad
            plane[padding + h:] = pad
            for y in range(h):
                row = plane[padding + y]
                row[:padding] = pad
                row[padding + w:] = pad
                _pack_channels(xq, n, group, y, padding, row)


def padded_pixels(xq, padding, pad):
    """xq (N, C, H, W) uint8 as pixels (N, Cg, H + 2p, W + 2p) 64-bit words: see above."""
    n, c, h, w = xq.shape
    groups = channel_groups(c)
    pad_bytes = np.zeros((groups, GROUP), dtype=np.uint8)
    pad_bytes.reshape(-1)[:c] = pad
    pixels = np.empty((n, groups, h + 2 * padding, w + 2 * padding), dtype=np.uint64)
    _fill_pixels(xq, padding, pad_bytes.view(np.uint64)[:, 0], pixels)
    return pixels


def filter_words(wq, multiple):
    """The filters (C_out, C, kh, kw) as words (C_out', 8 * Kg) bytes in the pixels' order
    k = (group, i, j, channel in the group), zero-padded to C_out' a multiple of ``multiple``."""
    c_out, c, kh, kw = wq.shape
    groups = channel_groups(c)
    padded = np.zeros((c_out + (-c_out) % multiple, groups * GROUP, kh, kw), dtype=np.uint8)
    padded[:c_out, :c] = wq
    words = padded.reshape(-1, groups, GROUP, kh, kw).transpose(0, 1, 3, 4, 2)
    return np.ascontiguousarray(words).reshape(padded.shape[0], -1)


@njit(cache=True)
def gather(pixels, l0, count, stride, kh, kw, wo, plane, columns):
    """columns[g, l - l0] = word g = (group, i, j) of the receptive field of output position
    l = (n, u, v), for l0 <= l < l0 + count; pixels and columns are 64-bit words. One output
    row at a time: each word's run is a strided run of one pixels row (contiguous for
    stride 1), copied through slices (their indices are never negative: no wraparound
    checks)."""
    q = 0
    while q < count:
        n, p = (l0 + q) // plane, (l0 + q) % plane
        u, v0 = p // wo, p % wo
        run = min(wo - v0, count - q)
        g = 0
        for group in range(pixels.shape[1]):
            for i in range(kh):
                row = pixels[n, group, u * stride + i]
                for j in range(kw):
                    source, target = row[v0 * stride + j:], columns[g, q:]
                    if stride == 1:             # a copy LLVM vectorizes: 2x faster
                        for v in range(run):
                            target[v] = source[v]
                    else:
                        for v in range(run):
                            target[v] = source[v * stride]
                    g += 1
        q += run


@njit(cache=True)
def scatter(sums, l0, count, out):
    """out[n, t, p] = sums[t, l - l0] for the positions l = (n, p) of the chunk and the
    real filters t: a contiguous run per image and filter."""
    plane = out.shape[2]
    q = 0
    while q < count:
        n, p = (l0 + q) // plane, (l0 + q) % plane
        run = min(plane - p, count - q)
        for t in range(out.shape[1]):
            source, target = sums[t, q:], out[n, t, p:]
            for v in range(run):                # a loop: Numba's slice assignment is slower
                target[v] = source[v]
        q += run
