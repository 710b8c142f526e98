"""The l2 adder layer (Appendix B, Eq. 27) on the cpu backend: BLAS products through Eq. 28.

Most l2 layers do not come here: the blocked kernels run Eq. 28 too (forward.py with
products for the mins, grad_input.py's L2 kind, and dW twice the l1 layer's full-mode
product), 3-7x faster on ResNet-20's layers. This module is the definition those are
held against in tests, and the path for 1x1 layers and for the gradients of strides 3
and more (and of single output rows).

Eq. 27 is Y[t, l] = -sum_k (X_col[k, l] - W[t, k])^2. Expanding the square (Eq. 28),

    Y = 2 W X_col - |X_col|^2 - |W|^2          |X_col|^2 per column l, |W|^2 per filter t

a matrix product plus two vectors of squared norms. Its gradients are exact (G = dLoss/dY):

    dW     = 2 (G X_col^T - W * rowsum(G))          = sum_l G[t, l] 2 (X - W)
    dX_col = 2 (W^T G - X_col * colsum(G))          = sum_t G[t, l] 2 (W - X), then col2im

Precision. The three terms of Eq. 28 are each about |X|^2 when inputs and filters sit near
a common offset (raw pixels and filters that learnt them), and cancel to a much smaller Y.
(x - w)^2 does not change when x and w are shifted by the same c, so everything is computed
with x - c and w - c, c the filters' mean: the frame.py copy the l1 kernels read.

Memory. X_col is built for about N / DW_CHUNKS images at a time (as the l1 layer's dW is),
so no more than that part of the layer's im2col buffer exists at once.
"""

import numpy as np

from . import columns, products
from .products import image_chunks
from .frame import shifted


def _columns(frame, win, images):
    """X_col (K, L_c) of some images, from the padded, shifted input (no padding left to add)."""
    return columns.im2col(frame.xp[images], win.kh, win.kw, win.stride, 0)


def _g_columns(g, images):
    """G (N, C_out, P) of some images as (C_out, L_c), in im2col's column order."""
    gc = g[images]
    return np.ascontiguousarray(gc.transpose(1, 0, 2)).reshape(gc.shape[1], -1)


def l2_forward(x, w2, win):
    """Eq. 28 per chunk of images: (y (N, C_out, P), the shifted frame for the backward)."""
    frame = shifted(x, w2, win)
    wc = w2 - frame.centre                                    # W - c (C_out, K)
    w_norms = (wc * wc).sum(axis=1)[:, None]                   # |W - c|^2 per filter
    y = np.empty((win.n, win.c_out, win.plane), dtype=x.dtype)
    for images in image_chunks(win):
        cols = _columns(frame, win, images)                    # X_col - c (K, L_c)
        yc = 2 * products.matmul(wc, cols) - (cols * cols).sum(axis=0) - w_norms
        y[images] = yc.reshape(win.c_out, -1, win.plane).transpose(1, 0, 2)
    return y, frame


def l2_backward(w2, g, win, frame, need_input_grad, need_weight_grad):
    """The exact gradients of Eq. 27 (dX (N, C, H, W), dW (C_out, K); None where not needed)
    for G = g (N, C_out, P), from the forward's shifted frame."""
    wc = (w2 - frame.centre).astype(frame.xp.dtype)
    gemm = products.kernel_gemm(wc.dtype)
    if gemm is not None and len(image_chunks(win)) > 1:
        return _l2_backward_in_tasks(gemm, wc, g, win, frame, need_input_grad, need_weight_grad)
    dw = np.zeros(w2.shape, dtype=wc.dtype) if need_weight_grad else None
    dxp = np.zeros(frame.xp.shape, dtype=wc.dtype) if need_input_grad else None
    for images in image_chunks(win):
        cols, gc = _columns(frame, win, images), _g_columns(g, images)
        if need_weight_grad:
            dw += products.matmul(gc, cols.T) - wc * gc.sum(axis=1)[:, None]
        if need_input_grad:
            dcols = products.matmul(wc.T, gc) - cols * gc.sum(axis=0)
            dxp[images] += columns.col2im(dcols, (images.stop - images.start,) + frame.xp.shape[1:],
                                            win.kh, win.kw, win.stride, 0)
    p = win.padding
    dx = None if dxp is None else 2 * dxp[:, :, p:p + win.h, p:p + win.w]
    return dx, (None if dw is None else 2 * dw)


def _l2_backward_in_tasks(gemm, wc, g, win, frame, need_input_grad, need_weight_grad):
    """l2_backward with the convolution's products (columns.py: chunks of images as tasks of
    a Numba kernel calling BLAS) on the padded, shifted frame, and Eq. 28's two corrections
    after them: dW = 2 (G X'^T - W' rowsum(G)), and dX = 2 (col2im(W'^T G) - X' * S), where
    col2im(X'_col * colsum(G)) = X' * S, S the col2im of colsum(G) on one channel (at each
    pixel, the sum of colsum over the output positions whose windows cover it)."""
    xp, p = frame.xp, win.padding
    n, _, hp, wp = xp.shape
    step, parts = products.chunk_tasks(win)
    g = np.ascontiguousarray(g)
    dxp = np.zeros(xp.shape, dtype=wc.dtype) if need_input_grad else xp[:0]
    dw_t = np.zeros((parts, win.k, win.c_out), dtype=wc.dtype)
    g_sums = np.zeros((parts, win.c_out))
    columns._conv2d_gradient_tasks(gemm, xp, wc, g, step, win.kh, win.kw, win.stride, 0,
                                   win.ho, win.wo, need_input_grad, need_weight_grad, dxp, dw_t, g_sums)
    dw = 2 * (dw_t.sum(axis=0).T - wc * g_sums.sum(axis=0).astype(wc.dtype)[:, None]) if need_weight_grad else None
    if not need_input_grad:
        return None, dw
    colsum = np.ascontiguousarray(np.broadcast_to(g.sum(axis=1).reshape(1, -1), (win.kh * win.kw, g.shape[0] * g.shape[2])))
    s = np.zeros((n, 1, hp, wp), dtype=wc.dtype)
    columns._col2im_serial(colsum, win.kh, win.kw, win.stride, 0, win.ho, win.wo, s)
    inside = (slice(None), slice(None), slice(p, p + win.h), slice(p, p + win.w))
    return 2 * (dxp[inside] - xp[inside] * s[inside]), dw
