"""minadder.binary's layers in PyTorch: convolution and linear layers on signs, with the straight-through estimator."""
import torch
import torch.nn.functional as F
from torch import nn


class Binarize(torch.autograd.Function):
    """sgn(a) in {-1, +1} (sgn(0) = -1) forward; dL/da = dL/dsgn(a) * 1{|a| <= 1} backward."""

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return torch.where(a > 0, torch.ones_like(a), -torch.ones_like(a))

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        return g * (a.abs() <= 1).to(g.dtype)


def binarize(a):
    """sgn with the straight-through estimator (minadder.binary.binarize)."""
    return Binarize.apply(a)


class BinaryConv2d(nn.Conv2d):
    """Y = conv2d(sgn(X), sgn(W)), as minadder.binary.BinaryConv2d (torch's own convolution of the signs)."""

    def forward(self, x):
        return self._conv_forward(binarize(x), binarize(self.weight), self.bias)


class BinaryLinear(nn.Linear):
    """Y = sgn(X) @ sgn(W).T (+ bias), as minadder.binary.BinaryLinear."""

    def forward(self, x):
        signs = binarize(self.weight)
        return F.linear(binarize(x), signs, self.bias)
