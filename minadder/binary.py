"""The paper's BNN baseline (Tables 2 and 3): convolution and linear layers on signs.

A binary layer replaces its weights W and its input X by their signs before an ordinary
convolution (or linear map), as in BinaryNet (Hubara et al., 2016), the BNN the paper
compares against:

    Y = conv(sgn(X), sgn(W)),      sgn(a) = +1 if a > 0 else -1

so every product is +-1 (an XNOR of two bits on binary hardware: ``minadder.count``
counts them so), while batch norm and the network's first and last layers stay full
precision. sgn is flat, so training needs a gradient that is not its derivative: the
straight-through estimator passes the gradient through where |a| <= 1 and stops it
elsewhere, dL/da = dL/dsgn(a) * 1{|a| <= 1} (the derivative of HardTanh, Eq. 7's clip).

sgn(0) is -1 here. A network of kind "bnn" uses HardTanh where the others use ReLU
(``frameworks.activation``), as BinaryNet does: the signs are the same, and the estimator
then passes wherever the pre-activation is within [-1, 1], not only on its positive half.
"""
import numpy as np

from . import functional as F
from . import nn
from .ops import Elementwise


def signs(a):
    """sgn(a) in a's dtype, -1 at 0 (and at NaN): 2 * (a > 0) - 1, computed in place in
    the result. (np.where(a > 0, 1, -1).astype(a.dtype) took 10x longer, a fifth of a
    ResNet-20 BNN training step.)"""
    out = np.empty_like(a)
    np.greater(a, 0, out=out)
    out *= 2
    out -= 1
    return out


class Binarize(Elementwise):
    """sgn(a) in {-1, +1} forward; the straight-through estimator 1{|a| <= 1} backward."""
    compute = staticmethod(signs)
    derivative = staticmethod(lambda a: np.abs(a) <= 1)          # a mask: g * mask keeps g's dtype


binarize = Binarize.apply


class BinaryConv2d(nn.Conv2d):
    """Y = conv2d(sgn(X), sgn(W)): a convolution of signs (weights kept real for training:
    ``weight.is_binary``, which optim.SGD's binary_weight_decay applies to)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.weight.is_binary = True

    def forward(self, x):
        return F.conv2d(binarize(x), binarize(self.weight), self.bias, self.stride, self.padding)


class BinaryLinear(nn.Linear):
    """Y = sgn(X) @ sgn(W).T (+ bias): a fully connected layer of signs."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.weight.is_binary = True

    def forward(self, x):
        return F.linear(binarize(x), binarize(self.weight), self.bias)
