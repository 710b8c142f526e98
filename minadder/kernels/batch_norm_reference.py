"""Batch norm in NumPy: the readable definition of the optional kernels
``batch_norm_forward`` / ``batch_norm_backward`` (contract.py), which ``cpu/batch_norm.py`` matches.

Per channel, over its M values (M = N for (N, C) inputs, N*H*W for (N, C, H, W)), Eq. 10:

    xhat = (x - mean) * inv_std,   inv_std = 1 / sqrt(var + eps),   y = weight * xhat + bias

with the batch's mean and biased variance in training, given (running) statistics in
evaluation. The backward (proofs/mathematics.md, section 3; the paper's Eq. 11) is

    dweight = sum g * xhat,   dbias = sum g,
    dx = inv_std * weight * (g - sum(g)/M - xhat * sum(g * xhat)/M)     (training)
    dx = inv_std * weight * g                                            (evaluation)

With relu=True the forward returns max(0, y) (a batch norm followed by a ReLU, as in
most CNN blocks), and the backward, given that output as ``y``, first passes the upstream
gradient through the ReLU (relu_reference.py): one kernel call each way for both layers.
A ``residual`` (x's shape) is added to y before that ReLU: the end of ResNet's basic
block, relu(batch_norm(x) + shortcut), in the same pass; its gradient is the upstream
gradient through the ReLU, which the backward returns too when asked (residual=True).

What the backward needs from the forward travels in ``saved``, whose content is each
backend's own business (as adder2d's): here ``Normalised``, xhat itself; the cpu kernels
save x instead and compute xhat again (cpu/batch_norm.py).

The running statistics are the layer's business (minadder/layers.py), not the kernels'.
"""
from typing import NamedTuple

import numpy as np

from .relu_reference import relu_backward, relu_forward


class Normalised(NamedTuple):
    """The reference forward's ``saved``: xhat (x's shape) and inv_std (C,), of x's dtype."""
    xhat: np.ndarray
    inv_std: np.ndarray


def channel_shape(x):
    """The shape that broadcasts a (C,) vector against x (N, C) or (N, C, H, W)."""
    return (1, -1) if x.ndim == 2 else (1, -1, 1, 1)


def channel_sum(a, b=None):
    """sum over every axis but 1 of a (or of a * b, without the product's temporary):
    the per-channel sums of batch norm, for (N, C) and (N, C, H, W) arrays."""
    if a.ndim == 2:
        return np.einsum("nc->c", a) if b is None else np.einsum("nc,nc->c", a, b)
    shape = (*a.shape[:2], int(np.prod(a.shape[2:])))     # (N, C, H*W): an empty batch has no -1 to infer
    a3 = a.reshape(shape)
    if b is None:
        return a3.sum(axis=2).sum(axis=0)   # the inner, contiguous axis first: fast in NumPy
    return np.einsum("nci,nci->c", a3, b.reshape(shape))


def batch_norm_forward(x, weight=None, bias=None, mean=None, var=None, eps=1e-5, relu=False, residual=None):
    """Eq. 10 per channel of x (N, C) or (N, C, H, W): (y, saved, mean, var).

    mean and var None: training, normalise with the batch's mean and biased variance, which
    are returned (of x's dtype) for the running statistics. Given (C,) mean and var:
    evaluation, normalise with them (and return them). weight and bias (C,) may be None.
    saved = Normalised(xhat, inv_std) is what batch_norm_backward needs; y may be xhat
    itself when there is neither weight nor bias. residual: y + residual (before the ReLU).
    relu=True: y is max(0, y).
    """
    shape = channel_shape(x)
    if mean is None:
        count = x.size // x.shape[1]                     # M, the values per channel
        mean = channel_sum(x) / count
        xhat = x - mean.reshape(shape).astype(x.dtype)
        var = channel_sum(xhat, xhat) / count            # biased, for normalising
    else:
        xhat = x - mean.reshape(shape).astype(x.dtype)
    inv_std = (1.0 / np.sqrt(var + eps)).astype(x.dtype)
    xhat *= inv_std.reshape(shape)                       # in place: xhat is our own array
    y = xhat if weight is None else xhat * weight.reshape(shape)
    if bias is not None:
        y = y + bias.reshape(shape) if y is xhat else np.add(y, bias.reshape(shape), out=y)
    if residual is not None:
        y = y + residual if y is xhat else np.add(y, residual, out=y)
    return (relu_forward(y) if relu else y), Normalised(xhat, inv_std), mean, var


def batch_norm_backward(g, saved, weight=None, training=True, y=None, residual=False):
    """The gradients (dx, dweight, dbias) of batch_norm_forward for the upstream g (x's shape),
    given the forward's ``saved``;
    training says whether the statistics were the batch's (then they depend on x too).
    y: the output of a forward with relu=True, whose ReLU g goes back through first.
    residual (with y): the forward added a residual before that ReLU; the residual's
    gradient, g through the ReLU, comes back too: (dx, dweight, dbias, g * 1[y > 0])."""
    xhat, inv_std = saved
    if y is not None:
        g = relu_backward(g, y)
    if residual:
        return _backward(g, xhat, inv_std, weight, training) + (g,)
    return _backward(g, xhat, inv_std, weight, training)


def _backward(g, xhat, inv_std, weight, training):
    """(dx, dweight, dbias) for g already through the ReLU."""
    shape = channel_shape(g)
    dweight = channel_sum(g, xhat)                       # sum g * xhat
    dbias = channel_sum(g)                               # sum g
    scale = inv_std if weight is None else inv_std * weight
    if training:
        m = xhat.size // xhat.shape[1]
        # dx = inv_std * weight * (g - sum(g)/M - xhat * sum(g * xhat)/M), with one temporary
        dx = xhat * (dweight / m).astype(g.dtype).reshape(shape)
        dx += (dbias / m).astype(g.dtype).reshape(shape)
        np.subtract(g, dx, out=dx)
        dx *= scale.reshape(shape)
    else:
        dx = g * scale.reshape(shape)
    return dx, dweight, dbias
