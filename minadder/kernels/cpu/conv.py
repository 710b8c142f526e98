"""The ordinary convolution on wide positions, as the adder layer's kernels compute theirs:
no X_col and no dX_col.

conv2d is im2col and a matrix product per chunk of images, the chunks shared among the
threads (columns.py, products.py), and so are its gradients, on most layers. On layers of
stride 1 whose images have long rows (ResNet's stages at 32x32 and 16x16, LeNet-5's
convolutions), and of stride 2 on the frame split by parity (frame.py), the forward and both gradients read the padded input in place instead
(positions.py), through the adder layer's own register blocks (register_block.py):

* Y = W X_col: a task owns some output rows of one image and runs forward.py's
  _min_sums_all with products for the mins (the l2 layer's Eq. 28 computes the same
  products), on the input padded with zeros, not shifted.
* dW = G X_col^T is the product the adder layer's full-mode dW computes (Eq. 5 without its
  "- W sum G" part): grad_weight.py's register blocks over chunks of images.
* dX = col2im(W^T G): grad_input.py's wide kernel with its CONV kind, a block of rows
  of W^T G added straight into a padded plane per (image, channel) task (the adder layer
  has HardTanh's clamp between W and G there).

Through BLAS the 16-filter products are skinny (W 16 x 144 against X_col 144 x 65,536)
and the dX product writes a dX_col of 9 times the input that col2im reads back.
"""
import numpy as np
from numba import njit, prange

from .forward import _min_sums_all, _rows_per_task, wide_chunk
from .frame import VECTOR, frame_pitch, phase_count, phase_rows, plane_size, row_pitch, unshifted
from .grad_input import CONV, _grad_input_wide_kernel, fits_plus, plus_if_given
from .grad_weight import images_product
from .positions import on_wide_positions, wide_count, wide_offsets, wide_rows

#: an image needs this many wide positions for the layer to skip X_col (as dW's register
#: blocks in grad_weight.py: below it, BLAS on X_col wins; ResNet-20 CNN step with its 8x8
#: layers, 78 positions, moved here too: 234 against 246 img/s)
WIDE_MIN_POSITIONS = 100


def wide_gradients(win):
    """Whether this layer (its forward and both gradients) reads the padded input in place."""
    return wide_rows(win) and wide_count(win, frame_pitch(win)) >= WIDE_MIN_POSITIONS


@njit(parallel=True, fastmath=True, cache=True)
def _forward_kernel(xp2, koff, w2, pitch, ho, wo, rows, chunk, out):
    """Y = W X_col for stride 1, rows of X_col read in place: a task owns ``rows`` output
    rows of one image, on wide positions q = (u - u0)*pitch + v (as forward.py), ``chunk``
    rows of X_col at a time."""
    n_t, n_k = w2.shape
    blocks = (ho + rows - 1) // rows
    for task in prange(out.shape[0] * blocks):
        n, u0 = task // blocks, (task % blocks) * rows
        u1 = min(ho, u0 + rows)
        width = (u1 - u0 - 1) * pitch + wo
        width += (-width) % VECTOR                       # whole vectors (SLACK covers it)
        img, base = xp2[n], u0 * pitch
        acc = np.zeros((n_t, width), dtype=w2.dtype)
        for k0 in range(0, n_k, chunk):
            nk = min(chunk, n_k - k0)
            _min_sums_all(img, koff[k0:k0 + nk], base, w2, k0, nk, width, True, acc)
        for t in range(n_t):   # out[n, t] = the accumulators, output row by output row
            for u in range(u0, u1):
                q0 = (u - u0) * pitch
                out[n, t, u * wo:(u + 1) * wo] = acc[t, q0:q0 + wo]


def conv2d_output(x, w2, win):
    """(Y (N, C_out, H_out, W_out), the padded input, which the gradients read again) of a
    layer where ``wide_gradients(win)``, without X_col."""
    frame = unshifted(x, win)                       # x padded with zeros (no shift: a product)
    pitch = row_pitch(frame.xp)
    out = np.empty((win.n, win.c_out, win.plane), dtype=w2.dtype)
    _forward_kernel(frame.flat, wide_offsets(win, frame.xp), np.ascontiguousarray(w2), pitch,
                    win.ho, win.wo, _rows_per_task(win, pitch), wide_chunk(win), out)
    return out.reshape(win.y_shape), frame


def conv2d_gradients(frame, w2, g, win, need_input_grad, need_weight_grad, plus=None):
    """(dX (N, C, H, W) or None, dW (C_out, K) or None) of the convolution, G = g (N, C_out,
    P), for a layer where ``wide_gradients(win)``, from the forward's padded input; dX +
    plus if plus is given (added as dX is written)."""
    pitch = row_pitch(frame.xp)
    koff, npos = wide_offsets(win, frame.xp), wide_count(win, pitch)
    gw = on_wide_positions(g, win, pitch).values    # (its sums are the adder layer's)
    dx = dw = None
    if need_weight_grad:
        dw = images_product(frame.flat, koff, gw, npos, w2, True, win)   # full: the product G X^T
    if need_input_grad:
        dx = np.empty(win.x_shape, dtype=w2.dtype)
        unused = np.zeros((win.n, 1), dtype=w2.dtype)      # CONV reads no sums of G
        adds = fits_plus(plus, dx)
        _grad_input_wide_kernel(frame.flat, koff, np.ascontiguousarray(w2.T), gw, unused, CONV, win.kh * win.kw,
                                npos, w2.dtype.type(1), win.padding, pitch, phase_rows(win, frame.xp),
                                phase_count(win), plane_size(frame.xp), adds, plus if adds else dx, dx)
        dx = dx if adds else plus_if_given(dx, plus)
    return dx, dw
