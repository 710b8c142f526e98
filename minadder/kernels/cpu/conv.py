"""The ordinary convolution on wide positions, as the adder layer's kernels compute theirs:
no X_col and no dX_col.

conv2d is im2col and a matrix product per chunk of images, the chunks shared among the
threads (columns.py, products.py), and so are its gradients, on most layers. On layers of stride 1 whose images have long rows
(ResNet's stages at 32x32 and 16x16, LeNet-5's convolutions) the forward and both
gradients read the padded input in place instead (positions.py):

* Y = W X_col: a task owns some output rows of one image; each pair of rows k, k + 1 of
  X_col (stretches of the padded image) is multiplied into the accumulators of 8 filters
  at a time (16 weights in registers, two multiply-adds per accumulator load and store).
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

from .forward import _rows_per_task
from .frame import VECTOR, unshifted
from .grad_input import _add_into, inside_of
from .grad_weight import _grad_weight_images_kernel
from .positions import on_wide_positions, wide_count, wide_offsets, wide_rows

#: an image needs this many wide positions for the layer to skip X_col (as dW's register
#: blocks in grad_weight.py: below it, BLAS on X_col wins; ResNet-20 CNN step with its 8x8
#: layers, 78 positions, moved here too: 234 against 246 img/s)
WIDE_MIN_POSITIONS = 100


def wide_gradients(win):
    """Whether this layer (its forward and both gradients) reads the padded input in place."""
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
def _grad_input_kernel(koff, wt, gw, fields, npos, pad, dx):
    """dX = col2im(W^T G) on wide positions into dx (N, C, H, W): one task per (image,
    channel); each of its kh*kw rows is computed on whole vectors into the task's buffer
    (G is zero past the last position) and added at its pixels of a padded plane of the
    task's own, whose inside is dX (as grad_input.py's stride-1 kernel)."""
    channels, h, w = dx.shape[1], dx.shape[2], dx.shape[3]
    wp = w + 2 * pad
    plane, whole = (h + 2 * pad) * wp, npos + (-npos) % VECTOR
    for task in prange(dx.shape[0] * channels):
        n, c = task // channels, task % channels
        pl = np.zeros(plane, dtype=dx.dtype)
        d = np.empty(whole, dtype=dx.dtype)
        for f in range(fields):
            k = c * fields + f
            d[:] = 0
            _row_of_product(wt, gw[n], k, whole, d)
            _add_into(pl[koff[k] - c * plane:koff[k] - c * plane + npos], d)
        inside_of(pl, pad, wp, dx[n, c])


@njit(fastmath=True, cache=True)
def _rows_into_filters(r0, r1, wt, k, t0, width, acc):
    """acc[t0 + i, q] += W[t0 + i, k] r0[q] + W[t0 + i, k + 1] r1[q] for i < 8."""
    a0, a1, a2, a3 = acc[t0, :width], acc[t0 + 1, :width], acc[t0 + 2, :width], acc[t0 + 3, :width]
    a4, a5, a6, a7 = acc[t0 + 4, :width], acc[t0 + 5, :width], acc[t0 + 6, :width], acc[t0 + 7, :width]
    u0, u1, u2, u3 = wt[k, t0], wt[k, t0 + 1], wt[k, t0 + 2], wt[k, t0 + 3]
    u4, u5, u6, u7 = wt[k, t0 + 4], wt[k, t0 + 5], wt[k, t0 + 6], wt[k, t0 + 7]
    v0, v1, v2, v3 = wt[k + 1, t0], wt[k + 1, t0 + 1], wt[k + 1, t0 + 2], wt[k + 1, t0 + 3]
    v4, v5, v6, v7 = wt[k + 1, t0 + 4], wt[k + 1, t0 + 5], wt[k + 1, t0 + 6], wt[k + 1, t0 + 7]
    for q in range(width):
        x, y = r0[q], r1[q]
        a0[q] += u0 * x + v0 * y
        a1[q] += u1 * x + v1 * y
        a2[q] += u2 * x + v2 * y
        a3[q] += u3 * x + v3 * y
        a4[q] += u4 * x + v4 * y
        a5[q] += u5 * x + v5 * y
        a6[q] += u6 * x + v6 * y
        a7[q] += u7 * x + v7 * y


@njit(parallel=True, fastmath=True, cache=True)
def _forward_kernel(xp2, koff, wt, pitch, ho, wo, rows, out):
    """Y = W X_col for stride 1, rows of X_col read in place: a task owns ``rows`` output
    rows of one image, on wide positions q = (u - u0)*pitch + v (as forward.py)."""
    n_k, n_t = wt.shape
    blocks = (ho + rows - 1) // rows
    for task in prange(out.shape[0] * blocks):
        n, u0 = task // blocks, (task % blocks) * rows
        u1 = min(ho, u0 + rows)
        width = (u1 - u0 - 1) * pitch + wo
        width += (-width) % VECTOR                       # whole vectors (SLACK covers it)
        img, base = xp2[n], u0 * pitch
        acc = np.zeros((n_t, width), dtype=wt.dtype)
        for k in range(0, n_k - 1, 2):
            r0 = img[base + koff[k]:base + koff[k] + width]
            r1 = img[base + koff[k + 1]:base + koff[k + 1] + width]
            t0 = 0
            while t0 + 8 <= n_t:
                _rows_into_filters(r0, r1, wt, k, t0, width, acc)
                t0 += 8
            _last_row(r0, wt, k, t0, n_t, width, acc)       # filters left over
            _last_row(r1, wt, k + 1, t0, n_t, width, acc)
        if n_k % 2:                                          # the last row of an odd K
            k = n_k - 1
            _last_row(img[base + koff[k]:base + koff[k] + width], wt, k, 0, n_t, width, acc)
        for t in range(n_t):   # out[n, t] = the accumulators, output row by output row
            for u in range(u0, u1):
                q0 = (u - u0) * pitch
                out[n, t, u * wo:(u + 1) * wo] = acc[t, q0:q0 + wo]


@njit(fastmath=True, cache=True)
def _last_row(r, wt, k, t0, t1, width, acc):
    """acc[t, q] += W[t, k] r[q] for t0 <= t < t1: one row into some filters."""
    for t in range(t0, t1):
        a, wv = acc[t, :width], wt[k, t]
        for q in range(width):
            a[q] += wv * r[q]


def conv2d_output(x, w2, win):
    """(Y (N, C_out, H_out, W_out), the padded input, which the gradients read again) of a
    layer where ``wide_gradients(win)``, without X_col."""
    frame = unshifted(x, win)                       # x padded with zeros (no shift: a product)
    pitch = frame.xp.shape[3]
    out = np.empty((win.n, win.c_out, win.plane), dtype=w2.dtype)
    _forward_kernel(frame.flat, wide_offsets(win, frame.xp), np.ascontiguousarray(w2.T), pitch,
                    win.ho, win.wo, _rows_per_task(win, pitch), out)
    return out.reshape(win.y_shape), frame


def conv2d_gradients(frame, w2, g, win, need_input_grad, need_weight_grad):
    """(dX (N, C, H, W) or None, dW (C_out, K) or None) of the convolution, G = g (N, C_out,
    P), for a layer where ``wide_gradients(win)``, from the forward's padded input."""
    pitch = frame.xp.shape[3]
    koff, npos = wide_offsets(win, frame.xp), wide_count(win, pitch)
    gw = on_wide_positions(g, win, pitch)
    dx = dw = None
    if need_weight_grad:
        partial = np.zeros((min(win.n, 4 * get_num_threads()), win.c_out, win.k), dtype=w2.dtype)
        _grad_weight_images_kernel(frame.flat, koff, gw, npos, partial)
        dw = partial.sum(axis=0)
    if need_input_grad:
        dx = np.empty(win.x_shape, dtype=w2.dtype)
        _grad_input_kernel(koff, np.ascontiguousarray(w2.T), gw, win.kh * win.kw, npos, win.padding, dx)
    return dx, dw
