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

The layer kernels at the end plug these column kernels into ``contract.adder2d_forward``
and ``contract.adder2d_backward``, the layer on images.
"""
import numpy as np

from .contract import GRAD_MODES, check_grad_mode, output_size  # noqa: F401  (re-exported)

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
    check_grad_mode(mode)
    dw = np.zeros(weight.shape, dtype=np.result_type(cols, weight, grad_out))
    for sl in _chunks(*weight.shape, cols.shape[1]):
        diff = cols[None, :, sl] - weight[:, :, None]          # X - F, (C_out, K, chunk)
        if mode == "sign":
            diff = np.sign(diff)
        dw += np.einsum("tkl,tl->tk", diff, grad_out[:, sl])
    return dw


def adder_grad_input(cols, weight, grad_out, mode="full"):
    """dX_col[k, l] = sum_t G[t, l] * E(W[t, k] - X_col[k, l])  (Eq. 6: E = HardTanh, or sgn)."""
    check_grad_mode(mode)
    dcols = np.empty(cols.shape, dtype=np.result_type(cols, weight, grad_out))
    for sl in _chunks(*weight.shape, cols.shape[1]):
        diff = weight[:, :, None] - cols[None, :, sl]          # F - X, (C_out, K, chunk)
        diff = np.sign(diff) if mode == "sign" else np.clip(diff, -1.0, 1.0)
        dcols[:, sl] = np.einsum("tkl,tl->kl", diff, grad_out[:, sl])
    return dcols


# ---------------------------------------------- layer kernels (see contract.py), image in
def _g_cols(g, win):
    """G (N, C_out, P) as the column kernels' (C_out, L)."""
    return np.ascontiguousarray(g.transpose(1, 0, 2)).reshape(win.c_out, win.l)


def layer_input(x, w2, win):
    """The input as these layer kernels read it: x itself (each builds X_col from it)."""
    return x


def layer_forward(x, w2, win):
    """Eq. 2 on images: im2col, the column kernel, and back to (N, C_out, P)."""
    cols = im2col(x, win.kh, win.kw, win.stride, win.padding)
    y = adder_forward(cols, w2).reshape(win.c_out, win.n, win.plane)
    return np.ascontiguousarray(y.transpose(1, 0, 2))


def layer_grad_weight(x, w2, g, win, mode="full"):
    """dW (C_out, K) of the layer (Eq. 4 or 5), from the input x and G (N, C_out, P)."""
    check_grad_mode(mode)
    cols = im2col(x, win.kh, win.kw, win.stride, win.padding)
    return adder_grad_weight(cols, w2, _g_cols(g, win), mode)


def layer_grad_input(x, w2, g, win, mode="full"):
    """dX (N, C, H, W) of the layer (Eq. 6 or sgn): dX_col, then col2im, its adjoint fold."""
    check_grad_mode(mode)
    cols = im2col(x, win.kh, win.kw, win.stride, win.padding)
    dcols = adder_grad_input(cols, w2, _g_cols(g, win), mode)
    return col2im(dcols, win.x_shape, win.kh, win.kw, win.stride, win.padding)
