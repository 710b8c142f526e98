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
"""
from typing import Any, NamedTuple

import numpy as np

#: the forward computes whole vectors of VECTOR numbers (16 float32 = one AVX-512
#: register); its rows are rounded up to a multiple of it (chosen by hand for AVX-512,
#: where it is one register; on AVX2 two registers; not re-measured)
VECTOR = 16
#: spare numbers after each padded image, for the forward's rounded-up reads
SLACK = VECTOR


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

    ``xp`` (N, C, H + 2p, W + 2p) is a view into ``flat`` (N, C*Hp*Wp + SLACK), whose
    rows end with SLACK spare numbers so that the forward may read whole vectors past the
    last receptive field (into values it then drops).
    """
    xp: np.ndarray
    flat: np.ndarray
    centre: Any          # a scalar of x's dtype


def padded(x, padding, centre):
    """The ShiftedInput of x (N, C, H, W) for this padding and shift."""
    n, c, h, w = x.shape
    hp, wp = h + 2 * padding, w + 2 * padding
    flat = np.empty((n, c * hp * wp + SLACK), dtype=x.dtype)
    flat[:, c * hp * wp:] = 0
    xp = flat[:, :c * hp * wp].reshape(n, c, hp, wp)
    if padding:
        xp[:, :, :padding] = xp[:, :, h + padding:] = -centre
        xp[:, :, :, :padding] = xp[:, :, :, w + padding:] = -centre
    np.subtract(x, centre, out=xp[:, :, padding:padding + h, padding:padding + w])
    return ShiftedInput(xp, flat, centre)


def shifted(x, w2, win):
    """x padded in the frame shifted by the filters' mean (full mode and the forward)."""
    return padded(x, win.padding, filters_mean(w2))


def unshifted(x, win):
    """x padded, not shifted (sign mode: a shift could round a near-tie x == w to 0)."""
    return padded(x, win.padding, x.dtype.type(0))
