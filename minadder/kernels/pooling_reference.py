"""Max pooling in NumPy: the readable definition of the optional kernels
``max_pool2d_forward`` / ``max_pool2d_backward`` (contract.py), which ``cpu/pooling.py`` matches.

An output is the maximum of its k x k window of the input padded with -inf,

    y[n, c, u, v] = max_{i, j} Xp[n, c, s*u + i, s*v + j]

and its gradient goes to one element of the window: the first maximum in row-major window
order (as argmax, and PyTorch, choose), or the first NaN if the window holds one. The
forward records that element as its offset i*k + j in the window (``argmax``, uint8 when
k*k < 256), the backward adds g to it.
"""
import numpy as np

from .geometry import output_size


def windows(xp, k, stride, ho, wo):
    """The k*k strided views xp[..., i::s, j::s] (cut to ho x wo) of a padded input, one per
    offset (i, j) in the window: view[n, c, u, v] = xp[n, c, s*u + i, s*v + j]."""
    for i in range(k):
        for j in range(k):
            yield i, j, xp[:, :, i:i + stride * ho:stride, j:j + stride * wo:stride]


def pad_width(padding):
    """np.pad's widths for ``padding`` rows and columns around each image of (N, C, H, W)."""
    return ((0, 0), (0, 0), (padding, padding), (padding, padding))


def offset_dtype(k):
    """The smallest integer type that holds every window offset i*k + j."""
    return np.uint8 if k * k < 256 else np.intp


def max_pool2d_forward(x, k, stride, padding):
    """(y (N, C, H_out, W_out), argmax of the same shape): each window's maximum and its offset."""
    ho, wo = output_size(x.shape[2], k, stride, padding), output_size(x.shape[3], k, stride, padding)
    xp = x if padding == 0 else np.pad(x, pad_width(padding), constant_values=-np.inf)
    if np.isnan(x).any():
        # argmax semantics with NaN (the first NaN wins), through a stacked copy
        stacked = np.stack([v for _, _, v in windows(xp, k, stride, ho, wo)])  # (k*k, N, C, Ho, Wo)
        first = stacked.argmax(axis=0)
        return np.take_along_axis(stacked, first[None], axis=0)[0], first.astype(offset_dtype(k))
    # a running maximum over the k*k window offsets; the strict > keeps the first
    # maximum, as argmax does, without stacking k*k copies of the input
    views = windows(xp, k, stride, ho, wo)
    _, _, first = next(views)
    out = first.copy()
    argmax = np.zeros(out.shape, dtype=offset_dtype(k))
    for i, j, view in views:
        better = view > out
        np.maximum(out, view, out=out)
        # offsets come in increasing order: the argmax is the largest one at which the
        # running maximum grew (a max, far faster than a masked store of random masks)
        np.maximum(argmax, better * argmax.dtype.type(i * k + j), out=argmax)
    return out, argmax


def max_pool2d_backward(g, argmax, x_shape, k, stride, padding):
    """dx (x_shape): g[n, c, u, v] added to the input element its window's argmax names."""
    n, c, h, w = x_shape
    dxp = np.zeros((n, c, h + 2 * padding, w + 2 * padding), dtype=g.dtype)
    for i, j, view in windows(dxp, k, stride, g.shape[2], g.shape[3]):
        if stride >= k:   # windows do not overlap: each input pixel is written once
            np.multiply(g, argmax == i * k + j, out=view)
        else:
            view += g * (argmax == i * k + j)
    return dxp[:, :, padding:padding + h, padding:padding + w]
