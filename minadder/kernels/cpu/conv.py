"""The ordinary convolution's two gradients on wide positions, as the adder layer's kernels
compute theirs: no X_col and no dX_col.

conv2d's forward is im2col and one matrix product split over threads (columns.py,
products.py), and so are its gradients on most layers. On layers of stride 1 whose images
have long rows (ResNet's stages at 32x32 and 16x16) both gradients read the padded input
in place instead (positions.py):

* dW = G X_col^T is the product the adder layer's full-mode dW computes (Eq. 5 without its
  "- W sum G" part): grad_weight.py's register blocks over chunks of images.
* dX = col2im(W^T G). One task per (image, channel) plane: row k = (c, i, j) of W^T G is
  sum_t W[t, k] G[t, q], added straight into the padded dX at the pixels row k came from,
  the layout of grad_input.py (there HardTanh's clamp sits between W and G).

Through BLAS the 16-filter products are skinny (W 16 x 144 against X_col 144 x 65,536)
and the dX product writes a dX_col of 9 times the input that col2im reads back.
"""
import numpy as np
from numba import get_num_threads, njit, prange

from .frame import cropped, unshifted
from .grad_input import _add_into, plane_tasks
from .grad_weight import _grad_weight_images_kernel
from .positions import on_wide_positions, wide_count, wide_offsets, wide_rows

#: an image needs this many wide positions for the gradients to skip X_col (as dW's
#: register blocks in grad_weight.py: below it, BLAS on X_col wins)
WIDE_MIN_POSITIONS = 100


def wide_gradients(win):
    """Whether the gradients of this layer read the padded input in place."""
    return wide_rows(win) and wide_count(win, win.w + 2 * win.padding) >= WIDE_MIN_POSITIONS


@njit(fastmath=True, cache=True)
def _row_of_product(wt, gn, k, width, d):
    """d[q] += sum_t W[t, k] G[t, q]: row k of W^T G, G = gn (C_out, >= width), with the
    filters transposed (wt = W^T, so a block's 8 weights are neighbours)."""
    n_t = wt.shape[1]
    t = 0
    while t + 8 <= n_t:
        w0, w1, w2, w3 = wt[k, t], wt[k, t + 1], wt[k, t + 2], wt[k, t + 3]
        w4, w5, w6, w7 = wt[k, t + 4], wt[k, t + 5], wt[k, t + 6], wt[k, t + 7]
        for q in range(width):
            d[q] += ((gn[t, q] * w0 + gn[t + 1, q] * w1) + (gn[t + 2, q] * w2 + gn[t + 3, q] * w3)) \
                + ((gn[t + 4, q] * w4 + gn[t + 5, q] * w5) + (gn[t + 6, q] * w6 + gn[t + 7, q] * w7))
        t += 8
    for tt in range(t, n_t):   # filters left over
        wv = wt[k, tt]
        for q in range(width):
            d[q] += gn[tt, q] * wv


@njit(parallel=True, cache=True)
def _grad_input_kernel(koff, wt, gw, fields, npos, dxp2):
    """dX = col2im(W^T G) on wide positions into the padded dxp2 (N, C*Hp*Wp): one task
    per (image, channel); each of its kh*kw rows is computed on whole vectors into the
    task's buffer (G is zero past the last position) and added at its pixels."""
    channels, plane, whole = plane_tasks(koff, fields, npos, dxp2)
    for task in prange(dxp2.shape[0] * channels):
        n, c = task // channels, task % channels
        dxp2[n, c * plane:(c + 1) * plane] = 0
        d = np.empty(whole, dtype=dxp2.dtype)
        for f in range(fields):
            k = c * fields + f
            d[:] = 0
            _row_of_product(wt, gw[n], k, whole, d)
            _add_into(dxp2[n, koff[k]:koff[k] + npos], d)


def conv2d_gradients(x, w2, g, win, need_input_grad, need_weight_grad):
    """(dX (N, C, H, W) or None, dW (C_out, K) or None) of the convolution, G = g (N, C_out,
    P), for a layer where ``wide_gradients(win)``."""
    frame = unshifted(x, win)                       # x padded with zeros (no shift: a product)
    pitch = frame.xp.shape[3]
    koff, npos = wide_offsets(win, frame.xp), wide_count(win, pitch)
    gw = on_wide_positions(g, win, pitch)
    dx = dw = None
    if need_weight_grad:
        partial = np.zeros((min(win.n, 4 * get_num_threads()), win.c_out, win.k), dtype=x.dtype)
        _grad_weight_images_kernel(frame.flat, koff, gw, npos, partial)
        dw = partial.sum(axis=0)
    if need_input_grad:
        dxp = np.empty(frame.xp.shape, dtype=x.dtype)
        _grad_input_kernel(koff, np.ascontiguousarray(w2.T), gw, win.kh * win.kw, npos, dxp.reshape(win.n, -1))
        dx = cropped(dxp, win.padding, win.h, win.w)
    return dx, dw
