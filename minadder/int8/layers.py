"""The integer adder layer, its full-precision neighbours, and batch norm folded into a per-channel rescale and bias.

An adder layer (Eq. 2) computes Y = -sum |X - F|. Give its input and its filters ONE
scale s and ONE offset z and store both as unsigned bytes,

    q = clip(round(v / s) + z, 0, 255),      v ~ s * (q - z),

(with ``bits`` < 8, the codes run 0 .. 2^bits - 1 instead, still stored in bytes: the
same kernel, a coarser step s),

then the offsets cancel inside the absolute value, |x - f| ~ s * |q_x - q_f|, and

    Y ~ -s * SAD(q_x, q_f)                   SAD = sum |q_x - q_f|, exact in int32.

The scale is set by the layer's INPUTS (``calibrate.py``). Trained adder filters reach far
beyond them (on the 30-epoch CIFAR-10 ResNet-20, inputs in [0, 7], filters in [-32, 31]),
and a range stretched to hold both would leave the inputs a few dozen codes. It need
not: for a filter value w beyond the range [lo, hi] and every input x inside it,

    |x - w| = |x - clip(w)| + |w - clip(w)|      (clip(w) lies between x and w)

exactly, so the filters are clipped to the range and the distance clipped off,
c_t = sum |w - clip(w)| over the filter t, is a constant of the output channel, folded
into the bias below: Y = -(s * SAD + c_t).

Rounding moves each input in the range, and each clipped filter value, by at most s/2, so
each term |x - f| moves by at most s and a layer output by at most K * s, K = C * kh * kw
the number of terms it sums. The zero padding of the float layer is the code of 0.0, z
itself (0 always lies in the range).

The batch norm that follows every adder layer, BN(y) = a * y + b per channel with
a = gamma / sqrt(var + eps) and b = beta - a * mean, is folded into the integer result:

    BN(Y) ~ (-s * a) * SAD + (b - a * c_t) = rescale * SAD + bias,

one float multiply-add per output value, the sign of Eq. 2 included in ``rescale``.
The first and last layers of ResNet and VGG-small are not adder layers (the paper keeps
them full precision): ``FloatLayer`` runs them in float32, with their batch norm folded the
same way.
"""
from typing import NamedTuple

import numpy as np

from .. import functional as F
from ..tensor import Tensor, no_grad
from . import kernel

BITS_RANGE = (2, 8)  # the widths a code may have; every width is stored in a uint8
_TINY_RANGE = 1e-12  # the range of a layer whose values are all zero: any scale will do


def check_bits(bits):
    """Refuse a code width that is not an integer from 2 to 8, naming it."""
    low, high = BITS_RANGE
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not low <= bits <= high:
        raise ValueError(f"bits must be an integer from {low} to {high}; got {bits!r}")
    return int(bits)


def largest_code(bits):
    """2^bits - 1: the largest code of a ``bits``-bit quantizer (255 for 8 bits)."""
    return (1 << check_bits(bits)) - 1


class Quantizer(NamedTuple):
    """The scale s and offset z of one adder layer: v ~ s * (q - z) for codes q in
    0 .. 2^bits - 1 (0..255 for the default 8 bits)."""
    scale: float
    offset: int
    bits: int = 8

    @property
    def top(self):
        """The largest code, 2^bits - 1."""
        return largest_code(self.bits)

    def codes(self, values):
        """uint8 codes of float ``values``: clip(round(v / s) + z, 0, 2^bits - 1)."""
        return kernel.codes(values, self.scale, self.offset, self.top)

    def limits(self):
        """(lowest, highest) value a code stands for: s * (0 - z) and s * (2^bits - 1 - z)."""
        return -self.scale * self.offset, self.scale * (self.top - self.offset)

    def values(self, codes):
        """The float values the codes stand for, s * (q - z)."""
        return (np.float32(self.scale) * (codes.astype(np.float32) - self.offset)).astype(np.float32)


def quantizer_for(low, high, bits=8):
    """The Quantizer whose 2^bits codes span [low, high] widened to hold 0:
    s = (high - low) / (2^bits - 1) and z = round(-low / s), an integer, so 0.0 has a code
    of its own (z) and each value of [low, high] lies within s/2 of the value of its code."""
    top = largest_code(bits)
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    scale = max((high - low) / top, _TINY_RANGE)
    offset = int(np.clip(round(-low / scale), 0, top))
    return Quantizer(float(np.float32(scale)), offset, int(bits))


def fold_batch_norm(bn, channels):
    """(a, b), float64 per channel, such that BN(y) = a * y + b with the running statistics
    (eval mode): a = gamma / sqrt(var + eps), b = beta - a * mean. No batch norm: (1, 0)."""
    if bn is None:
        return np.ones(channels), np.zeros(channels)
    gamma = np.ones(channels) if bn.weight is None else bn.weight.data.astype(np.float64)
    beta = np.zeros(channels) if bn.bias is None else bn.bias.data.astype(np.float64)
    a = gamma / np.sqrt(np.asarray(bn.running_var, np.float64) + bn.eps)
    return a, beta - a * np.asarray(bn.running_mean, np.float64)


def clipped_distance(weight, quantizer):
    """c_t = sum |w - clip(w)| over each output channel t's filter (float64): what clipping
    the filters to the quantizer's range removes from every |x - w|, x inside the range."""
    w = np.asarray(weight, np.float64)
    return np.abs(w - np.clip(w, *quantizer.limits())).reshape(len(w), -1).sum(axis=1)


class AdderLayer:
    """An l1 adder layer in integers: uint8 filter ``codes`` (C_out, C, k, k) or (C_out, K)
    of the layer's ``quantizer``, and the folded batch norm as float32 ``rescale`` and ``bias``."""

    def __init__(self, codes, quantizer, rescale, bias, stride=1, padding=0):
        self.codes, self.quantizer = codes, quantizer
        self.rescale, self.bias = np.asarray(rescale, np.float32), np.asarray(bias, np.float32)
        self.stride, self.padding = stride, padding

    @classmethod
    def from_float(cls, layer, bn, quantizer):
        """The integer version of ``layer`` (nn.Adder2d or nn.AdderLinear) and the batch
        norm ``bn`` after it (or None), in the units of ``quantizer``; the filters are
        clipped to its range and the distance clipped off is folded into the bias."""
        a, b = fold_batch_norm(bn, layer.weight.shape[0])
        return cls(quantizer.codes(layer.weight.data), quantizer, -quantizer.scale * a,
                   b - a * clipped_distance(layer.weight.data, quantizer), getattr(layer, "stride", 1),
                   getattr(layer, "padding", 0))

    def sad(self, x):
        """The int32 SAD of the quantized input ``x`` with the filters (Eq. 2 without its sign and scale)."""
        xq = self.quantizer.codes(x)
        if self.codes.ndim == 2:
            return kernel.sad_linear(xq, self.codes)
        return kernel.sad2d(xq, self.codes, self.stride, self.padding, self.quantizer.offset)

    def __call__(self, x):
        """BN(Y) ~ rescale * SAD + bias, per output channel."""
        return kernel.affine(self.sad(x), self.rescale, self.bias)


class FloatLayer:
    """A full-precision convolution or linear layer (float32 ``weight``), its bias and the
    batch norm after it folded into ``rescale`` and ``bias``: y = rescale * (W x) + bias."""

    def __init__(self, weight, rescale, bias, stride=1, padding=0):
        self.weight = np.asarray(weight, np.float32)
        self.rescale, self.bias = np.asarray(rescale, np.float32), np.asarray(bias, np.float32)
        self.stride, self.padding = stride, padding

    @classmethod
    def from_float(cls, layer, bn):
        """``layer`` (nn.Conv2d or nn.Linear) with the batch norm ``bn`` after it (or None):
        a * (W x + c) + b = a * W x + (a * c + b)."""
        a, b = fold_batch_norm(bn, layer.weight.shape[0])
        own_bias = 0.0 if layer.bias is None else layer.bias.data.astype(np.float64)
        return cls(layer.weight.data, a, a * own_bias + b, getattr(layer, "stride", 1), getattr(layer, "padding", 0))

    def __call__(self, x):
        with no_grad():
            if self.weight.ndim == 2:
                y = F.linear(Tensor(x), Tensor(self.weight)).data
            else:
                y = F.conv2d(Tensor(x), Tensor(self.weight), None, self.stride, self.padding).data
        return kernel.affine(y, self.rescale, self.bias)
