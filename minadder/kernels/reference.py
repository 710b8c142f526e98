"""NumPy reference kernels: the readable definition every faster backend must match.

Notation (proofs/mathematics.md): an input X of shape (N, C, H, W), filters F of shape
(C_out, C, d, d), stride s, zero padding p. ``im2col`` unrolls every receptive field of
X into a column, giving X_col of shape (K, L) with K = C*d*d and L = N*H_out*W_out;
the filters become W of shape (C_out, K). An adder layer is then

    Y_col[t, l] = - sum_k | X_col[k, l] - W[t, k] |                         (Eq. 2)

and its gradients, with G = dLoss/dY_col (Eqs. 4-6),

    dW[t, k]     = sum_l G[t, l] * D(X_col[k, l] - W[t, k])     D = identity (full) | sgn (sign)
    dX_col[k, l] = sum_t G[t, l] * E(W[t, k] - X_col[k, l])     E = HardTanh (full) | sgn (sign)

The paper's reference code broadcasts |X_col - W| into a (C_out, K, L) temporary. Here
the L axis is cut into chunks so that the temporary never exceeds ``CHUNK_ELEMENTS``
numbers, which keeps a ResNet-20 layer at batch 256 within a few hundred MB.

The contract's functions at the end (``contract.py``: ``adder2d_forward`` /
``adder2d_backward``, ``conv2d_forward`` / ``conv2d_backward``) are these column kernels
on images: im2col, the column kernel, and back (col2im for the input gradient). The
forward keeps the input, not X_col; the backward rebuilds X_col once for both gradients.
The optional kernels, batch norm, max pooling and ReLU, are defined in
``batch_norm_reference.py``, ``pooling_reference.py`` and ``relu_reference.py`` and exported
here too.
"""
import numpy as np

from .contract import GRAD_MODES  # noqa: F401  (re-exported)
from .geometry import output_size
# the optional kernels (contract.OPTIONAL_KERNEL_NAMES), each defined in a module of its own
from .batch_norm_reference import batch_norm_backward, batch_norm_forward  # noqa: F401
from .pooling_reference import max_pool2d_backward, max_pool2d_forward  # noqa: F401
from .relu_reference import relu_backward, relu_forward  # noqa: F401
from .addition_reference import add  # noqa: F401

#: Largest (C_out, K, chunk) temporary the reference builds, in elements (64 MB of float32).
CHUNK_ELEMENTS = 1 << 24


# ----------------------------------------------------------------------------- im2col
def im2col(x, kh, kw, stride=1, padding=0):
    """Unroll the (kh, kw) receptive fields of x (N, C, H, W) into columns.

    Returns X_col of shape (C*kh*kw, N*H_out*W_out). Row k = (c, i, j) in C order;
    column l = (n, u, v) in C order, so X_col[(c,i,j), (n,u,v)] = Xp[n, c, s*u+i, s*v+j].
    """
    n, c, h, w = x.shape
    ho, wo = output_size(h, kh, stride, padding), output_size(w, kw, stride, padding)
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    cols = np.empty((c, kh, kw, n, ho, wo), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            # every output position (u, v) reads xp[..., s*u + i, s*v + j]
            window = xp[:, :, i:i + stride * ho:stride, j:j + stride * wo:stride]
            cols[:, i, j] = window.transpose(1, 0, 2, 3)
    return cols.reshape(c * kh * kw, n * ho * wo)


def col2im(cols, x_shape, kh, kw, stride=1, padding=0):
    """The adjoint of im2col: scatter-add every column entry back to its pixel.

    <im2col(x), c> == <x, col2im(c)> for all x and c, which is what makes
    dX = col2im(dX_col) the gradient of an im2col-based layer.
    """
    n, c, h, w = x_shape
    ho, wo = output_size(h, kh, stride, padding), output_size(w, kw, stride, padding)
    cols = cols.reshape(c, kh, kw, n, ho, wo)
    xp = np.zeros((n, c, h + 2 * padding, w + 2 * padding), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            xp[:, :, i:i + stride * ho:stride, j:j + stride * wo:stride] += cols[:, i, j].transpose(1, 0, 2, 3)
    return xp[:, :, padding:padding + h, padding:padding + w].copy()


# ------------------------------------------------------------------ adder (l1) "GEMM"
def _chunks(n_out, k, length):
    """Slices of the L axis such that an (n_out, k, chunk) temporary stays bounded."""
    step = max(1, CHUNK_ELEMENTS // max(1, n_out * k))
    for start in range(0, length, step):
        yield slice(start, min(start + step, length))


def adder_forward(cols, weight):
    """Eq. 2 in im2col form: Y[t, l] = -sum_k |X_col[k, l] - W[t, k]|.

    cols: (K, L), weight: (C_out, K). Returns (C_out, L).
    """
    out = np.empty((weight.shape[0], cols.shape[1]), dtype=np.result_type(cols, weight))
    for sl in _chunks(*weight.shape, cols.shape[1]):
        diff = cols[None, :, sl] - weight[:, :, None]          # (C_out, K, chunk)
        out[:, sl] = -np.abs(diff).sum(axis=1)
    return out


def adder_grad_weight(cols, weight, grad_out, mode="full"):
    """dW[t, k] = sum_l G[t, l] * D(X_col[k, l] - W[t, k])  (Eq. 4 sign, Eq. 5 full)."""
    dw = np.zeros(weight.shape, dtype=np.result_type(cols, weight, grad_out))
    for sl in _chunks(*weight.shape, cols.shape[1]):
        diff = cols[None, :, sl] - weight[:, :, None]          # X - F, (C_out, K, chunk)
        if mode == "sign":
            diff = np.sign(diff)
        dw += np.einsum("tkl,tl->tk", diff, grad_out[:, sl])
    return dw


def adder_grad_input(cols, weight, grad_out, mode="full"):
    """dX_col[k, l] = sum_t G[t, l] * E(W[t, k] - X_col[k, l])  (Eq. 6: E = HardTanh, or sgn)."""
    dcols = np.empty(cols.shape, dtype=np.result_type(cols, weight, grad_out))
    for sl in _chunks(*weight.shape, cols.shape[1]):
        diff = weight[:, :, None] - cols[None, :, sl]          # F - X, (C_out, K, chunk)
        diff = np.sign(diff) if mode == "sign" else np.clip(diff, -1.0, 1.0)
        dcols[:, sl] = np.einsum("tkl,tl->kl", diff, grad_out[:, sl])
    return dcols


# ------------------------------------------------------------ l2 distance (Appendix B)
def l2_forward(cols, weight):
    """Eq. 27 in im2col form: Y[t, l] = -sum_k (X_col[k, l] - W[t, k])^2, by its definition."""
    out = np.empty((weight.shape[0], cols.shape[1]), dtype=np.result_type(cols, weight))
    for sl in _chunks(*weight.shape, cols.shape[1]):
        diff = cols[None, :, sl] - weight[:, :, None]          # (C_out, K, chunk)
        out[:, sl] = -(diff * diff).sum(axis=1)
    return out


def l2_grads(cols, weight, grad_out):
    """The exact gradients of Eq. 27: dW[t, k] = sum_l G[t, l] * 2 (X_col[k, l] - W[t, k])
    and dX_col[k, l] = sum_t G[t, l] * 2 (W[t, k] - X_col[k, l])."""
    dw = np.zeros(weight.shape, dtype=np.result_type(cols, weight, grad_out))
    dcols = np.empty(cols.shape, dtype=dw.dtype)
    for sl in _chunks(*weight.shape, cols.shape[1]):
        diff = cols[None, :, sl] - weight[:, :, None]          # X - F, (C_out, K, chunk)
        dw += 2 * np.einsum("tkl,tl->tk", diff, grad_out[:, sl])
        dcols[:, sl] = -2 * np.einsum("tkl,tl->kl", diff, grad_out[:, sl])
    return dw, dcols


# ------------------------------------------------- the contract (contract.py), image in
def check_available():
    """The reference needs only NumPy: it always runs."""


def columns_of(g):
    """G (N, C_out, H_out, W_out) as the column kernels' (C_out, L)."""
    return np.ascontiguousarray(g.transpose(1, 0, 2, 3)).reshape(g.shape[1], g.size // max(1, g.shape[1]))


def image_of(y_cols, win):
    """Y (C_out, L) back to the image (N, C_out, H_out, W_out)."""
    y = y_cols.reshape(win.c_out, win.n, win.ho, win.wo).transpose(1, 0, 2, 3)
    return np.ascontiguousarray(y)


def adder2d_forward(x, weight, win, distance="l1"):
    """Eq. 2 (or Eq. 27 for distance="l2") on images: im2col, the column kernel, and back.
    saved = (x, weight, win, distance)."""
    cols = im2col(x, win.kh, win.kw, win.stride, win.padding)
    y = (l2_forward if distance == "l2" else adder_forward)(cols, weight.reshape(win.c_out, win.k))
    return image_of(y, win), (x, weight, win, distance)


def adder2d_backward(grad_y, saved, mode, need_input_grad=True, need_weight_grad=True, dx_plus=None):
    """dX (Eq. 6, or sgn) and dF (Eq. 5, or Eq. 4's sgn) from one X_col rebuilt from x; for
    an l2 layer the exact gradients of Eq. 27, whatever the mode; dX + dx_plus if given."""
    x, weight, win, distance = saved
    cols = im2col(x, win.kh, win.kw, win.stride, win.padding)
    w2, g = weight.reshape(win.c_out, win.k), columns_of(grad_y)
    if distance == "l2":
        dw, dcols = l2_grads(cols, w2, g)
    else:
        dw = adder_grad_weight(cols, w2, g, mode) if need_weight_grad else None
        dcols = adder_grad_input(cols, w2, g, mode) if need_input_grad else None
    dx = col2im(dcols, win.x_shape, win.kh, win.kw, win.stride, win.padding) if need_input_grad else None
    if dx is not None and dx_plus is not None:
        dx = dx + dx_plus
    return dx, (dw.reshape(weight.shape) if need_weight_grad else None)


def conv2d_forward(x, weight, win):
    """Convolution via im2col: Y = W @ X_col. saved = (X_col, W, win)."""
    cols = im2col(x, win.kh, win.kw, win.stride, win.padding)        # X_col (K, L)
    w2 = weight.reshape(win.c_out, win.k)                            # W (C_out, K)
    return image_of(w2 @ cols, win), (cols, w2, win)


def conv2d_backward(grad_y, saved, need_input_grad=True, need_weight_grad=True, dx_plus=None):
    """dW = G @ X_col^T and dX = col2im(W^T @ G), with G (C_out, L); dX + dx_plus if given."""
    cols, w2, win = saved
    g = columns_of(grad_y)
    dw = (g @ cols.T).reshape(win.c_out, win.c, win.kh, win.kw) if need_weight_grad else None
    dx = None
    if need_input_grad:
        dx = col2im(w2.T @ g, win.x_shape, win.kh, win.kw, win.stride, win.padding)
        if dx_plus is not None:
            dx = dx + dx_plus
    return dx, dw
