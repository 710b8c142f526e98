"""Eq. 27 and 28: the l2-AdderNet output, directly and as 2 Y_CNN - |X|^2 - |F|^2 (proofs/l2_adder.md).

Plain NumPy; tests/test_proofs_l2_adder.py checks the identity against the engine's convolution.
"""
import numpy as np

from ..kernels.geometry import output_size
from ..kernels.reference import im2col


def _cols_and_filters(x, weight, stride, padding):
    c_out = weight.shape[0]
    n, _, h, w = x.shape
    kh, kw = weight.shape[2:]
    ho, wo = output_size(h, kh, stride, padding), output_size(w, kw, stride, padding)
    return im2col(x, kh, kw, stride, padding), weight.reshape(c_out, -1), (c_out, n, ho, wo)


def _to_nchw(y_col, shape):
    c_out, n, ho, wo = shape
    return y_col.reshape(c_out, n, ho, wo).transpose(1, 0, 2, 3)


def l2_adder2d(x, weight, stride=1, padding=0):
    """Eq. 27, directly: Y[n, t, u, v] = -sum_k (Xp_patch[k] - F[t, k])^2. Plain NumPy."""
    cols, w2, shape = _cols_and_filters(np.asarray(x), np.asarray(weight), stride, padding)
    y = -((cols[None, :, :] - w2[:, :, None]) ** 2).sum(axis=1)
    return _to_nchw(y, shape)


def patch_sq_norms(x, kh, kw, stride=1, padding=0):
    """sum_k Xp_patch[k]^2 for every (kh, kw) patch: shape (N, 1, H_out, W_out)."""
    n, _, h, w = x.shape
    ho, wo = output_size(h, kh, stride, padding), output_size(w, kw, stride, padding)
    cols = im2col(np.asarray(x), kh, kw, stride, padding)
    return (cols ** 2).sum(axis=0).reshape(n, ho, wo)[:, None]


def filter_sq_norms(weight):
    """sum_k F[t, k]^2 per filter, shaped (1, C_out, 1, 1) to broadcast against an output."""
    weight = np.asarray(weight)
    return (weight.reshape(weight.shape[0], -1) ** 2).sum(axis=1).reshape(1, -1, 1, 1)


def l2_adder_from_conv(y_cnn, x, weight, stride=1, padding=0):
    """Eq. 28: Y_l2 = 2 Y_CNN - sum X^2 - sum F^2, given Y_CNN = conv2d(x, weight)."""
    kh, kw = np.shape(weight)[2:]
    return 2 * np.asarray(y_cnn) - patch_sq_norms(np.asarray(x), kh, kw, stride, padding) - filter_sq_norms(weight)
