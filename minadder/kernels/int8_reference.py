"""The integer adder layer in NumPy: sums of absolute differences of unsigned bytes.

A quantized AdderNet layer stores its input and its filters as uint8 codes of one shared
scale s and offset z (x ~ s * (q_x - z), w ~ s * (q_w - z)), so that

    -sum |x - w|  ~  -s * sum |q_x - q_w|                      (Eq. 2 in integers)

and the whole layer is the integer SAD below, exact in int32 (a sum of at most 2^23 terms
of at most 255 each). Padding pads with ``pad_value``, the code of the real number 0.
This is the definition the fast kernels (cpu/sad.py) are held to, bit for bit.
"""
import numpy as np

from .geometry import output_size
from .reference import im2col


def sad2d(xq, wq, stride=1, padding=0, pad_value=0):
    """Y[n, t, u, v] = sum_{c,i,j} |Xp[n, c, s*u+i, s*v+j] - W[t, c, i, j]| as int32, for uint8
    xq (N, C, H, W) and wq (C_out, C, kh, kw); Xp is xq padded with ``pad_value``."""
    xq, wq = np.asarray(xq), np.asarray(wq)
    if xq.dtype != np.uint8 or wq.dtype != np.uint8:
        raise TypeError(f"sad2d: inputs and filters must be uint8, got {xq.dtype} and {wq.dtype}")
    n, c, h, w = xq.shape
    c_out, c_w, kh, kw = wq.shape
    if c_w != c:
        raise ValueError(f"sad2d: filters have {c_w} channels, inputs {c}")
    ho, wo = output_size(h, kh, stride, padding), output_size(w, kw, stride, padding)
    xp = np.pad(xq, ((0, 0), (0, 0), (padding, padding), (padding, padding)), constant_values=pad_value)
    cols = im2col(xp.astype(np.int32), kh, kw, stride, 0)            # (K, L), exact in int32
    w2 = wq.reshape(c_out, -1).astype(np.int32)
    y = np.empty((c_out, cols.shape[1]), dtype=np.int32)
    for t in range(c_out):                                          # one (K, L) temporary at a time
        y[t] = np.abs(cols - w2[t][:, None]).sum(axis=0)
    return np.ascontiguousarray(y.reshape(c_out, n, ho, wo).transpose(1, 0, 2, 3))


def sad_linear(xq, wq):
    """Y[n, t] = sum_k |xq[n, k] - wq[t, k]| as int32: the fully connected integer adder layer."""
    xq, wq = np.asarray(xq), np.asarray(wq)
    return sad2d(xq[:, :, None, None], wq[:, :, None, None])[:, :, 0, 0]


def codes(values, scale, offset, top):
    """The codes of float32 ``values``: clip(rint(values / scale) + offset, 0, top) as uint8."""
    q = np.rint(np.asarray(values, np.float32) / np.float32(scale)) + np.float32(offset)
    return np.clip(q, 0, top).astype(np.uint8)


def affine(sums, rescale, bias):
    """float32(sums) * rescale[t] + bias[t] for each channel t (axis 1) of ``sums``: an
    integer layer's int32 sums (or a float layer's float32 outputs) with its batch norm
    folded in."""
    shape = (1, -1) + (1,) * (np.ndim(sums) - 2)
    rescale, bias = np.asarray(rescale, np.float32), np.asarray(bias, np.float32)
    return sums.astype(np.float32) * rescale.reshape(shape) + bias.reshape(shape)
