"""The adder kernels on im2col's matrix, device side: Eq. 2, Eq. 4-6 on X_col (K, L).

With X_col (K, L), the filters W (C_out, K) and G = dLoss/dY_col (C_out, L):

    forward      Y[t, l]      = -sum_k |X_col[k, l] - W[t, k]|                        (Eq. 2)
    dX_col       dX_col[k, l] =  sum_t G[t, l] * E(W[t, k] - X_col[k, l])  E = HardTanh (Eq. 6) | sgn
    dW           dW[t, k]     =  sum_l G[t, l] * D(X_col[k, l] - W[t, k])  D = identity (Eq. 5) | sgn (Eq. 4)

Each is one tiled kernel (``tiled.py``), except dW in full mode, which is the identity
dW = G @ X_col.T - W * G.sum(axis=1): the product kernel, then the two small kernels
below (the second sums Eq. 5 directly where W or G holds inf or NaN, so that every
result agrees with the reference's on non-finite inputs too). ``forward`` / ``grad_input`` / ``grad_weight`` take device arrays and return device
arrays; the layer (``adder.py``) calls them. ``im2col`` ... ``adder_grad_weight`` at the
end are the same kernels one by one, host in and host out (or device in and device out),
for the tests and the benchmark to hold against the NumPy reference.
"""
import math

import numpy as np

from numba import cuda, float32

from ..geometry import Window
from . import windows
from .launch import sm_count, tiled
from .memory import elementwise_launch, empty, is_device_array, result, scratch, to_device
from .streams import current_stream

_ROW_SUM_THREADS = 64


@cuda.jit
def row_sums_kernel(g, partials):
    """partials[s, t] = sum of G[t, l] over chunk s of the l axis.

    Block (t, s) reduces one chunk with a shared-memory tree; many chunks per row keep
    the GPU busy when C_out is small and L = N*H_out*W_out is long.
    """
    cache = cuda.shared.array(_ROW_SUM_THREADS, float32)
    t, s, tid = cuda.blockIdx.x, cuda.blockIdx.y, cuda.threadIdx.x
    l_size = g.shape[1]
    chunk = (l_size + partials.shape[0] - 1) // partials.shape[0]
    acc = float32(0.0)
    for l in range(s * chunk + tid, min(l_size, (s + 1) * chunk), _ROW_SUM_THREADS):
        acc += g[t, l]
    cache[tid] = acc
    cuda.syncthreads()
    width = _ROW_SUM_THREADS // 2
    while width > 0:
        if tid < width:
            cache[tid] += cache[tid + width]
        cuda.syncthreads()
        width //= 2
    if tid == 0:
        partials[s, t] = cache[0]


@cuda.jit
def subtract_w_gsum_kernel(dw, w, gsum_partials, g, cols):
    """dW[t, k] -= W[t, k] * sum_l G[t, l]: the second term of the full-mode dW identity.

    Where W[t, k] or that sum is inf or NaN, the identity would cancel infinities into NaN
    (inf - inf) where Eq. 5 does not: that entry is summed as Eq. 5 states it,
    sum_l G[t, l] * (X_col[k, l] - W[t, k]) (one thread, a loop over L: slow, and only
    ever run on inputs that are not finite).
    """
    t_size, k_size = dw.shape
    start, step = cuda.grid(1), cuda.gridsize(1)
    for idx in range(start, t_size * k_size, step):
        t, k = idx // k_size, idx % k_size
        gsum = float32(0.0)
        for s in range(gsum_partials.shape[0]):
            gsum += gsum_partials[s, t]
        wv = w[t, k]
        if math.isfinite(wv) and math.isfinite(gsum):
            dw[t, k] -= wv * gsum
        else:
            total = float32(0.0)
            for l in range(g.shape[1]):
                total += g[t, l] * (cols[k, l] - wv)
            dw[t, k] = total


@cuda.jit
def double_kernel(a):
    """a *= 2, in place (exact in floating point): the l2 layer's gradients are twice sums
    of the l1 kernels' form."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for idx in range(start, a.size, step):
        a[idx // a.shape[1], idx % a.shape[1]] *= float32(2.0)


def doubled(d_g):
    """2 * G in place on the device (G is the layer's own scratch copy); returns it."""
    blocks, threads = elementwise_launch(d_g.size)
    double_kernel[blocks, threads, current_stream()](d_g)
    return d_g


@cuda.jit
def col_sums_kernel(g, sums):
    """sums[l] = sum_t G[t, l]: one thread per column (C_out is short)."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for l in range(start, g.shape[1], step):
        acc = float32(0.0)
        for t in range(g.shape[0]):
            acc += g[t, l]
        sums[l] = acc


@cuda.jit(device=True, inline=True)
def _l2_dx_as_written(g, w, k, l, xv):
    """sum_t G[t, l] (W[t, k] - x): one entry of the l2 layer's half dX, summed term by term."""
    total = float32(0.0)
    for t in range(g.shape[0]):
        total += g[t, l] * (w[t, k] - xv)
    return total


@cuda.jit
def subtract_x_gsum_kernel(dcols, cols, gsum, g, w):
    """dX_col[k, l] -= X_col[k, l] * sum_t G[t, l]: the second term of the l2 layer's dX,
    sum_t G[t, l] (W[t, k] - X_col[k, l]) = (W^T G)[k, l] - X_col[k, l] sum_t G[t, l].
    Where X_col[k, l] or that sum is inf or NaN the entry is summed as written (one thread,
    a loop over C_out), as ``subtract_w_gsum_kernel`` does for dW."""
    n_cols = dcols.shape[1]
    for idx in range(cuda.grid(1), dcols.size, cuda.gridsize(1)):
        k, l = idx // n_cols, idx % n_cols
        xv = cols[k, l]
        if math.isfinite(xv) and math.isfinite(gsum[l]):
            dcols[k, l] = dcols[k, l] - xv * gsum[l]
        else:
            dcols[k, l] = _l2_dx_as_written(g, w, k, l, xv)


# ====================================================================== device side
def forward(d_cols, d_w, out=None, distance="l1"):
    """Eq. 2 (or Eq. 27 for distance="l2"): Y_col (C_out, L) from X_col (K, L) and W (C_out, K)."""
    out = empty((d_w.shape[0], d_cols.shape[1])) if out is None else out
    return tiled("forward_l2" if distance == "l2" else "forward", d_w, d_cols, None, out)


def grad_input_l2(d_cols, d_w, d_g, out=None):
    """sum_t G[t, l] (W[t, k] - X_col[k, l]), half the l2 layer's dX_col (K, L): the
    product W^T G, then the column sums of G times X_col taken off."""
    out = empty(d_cols.shape) if out is None else out
    tiled("product_wg", d_w, d_g, None, out)
    gsum = scratch("gsum_cols", (d_g.shape[1],))
    blocks, threads = elementwise_launch(d_g.shape[1])
    col_sums_kernel[blocks, threads, current_stream()](d_g, gsum)
    blocks, threads = elementwise_launch(out.size)
    subtract_x_gsum_kernel[blocks, threads, current_stream()](out, d_cols, gsum, d_g, d_w)
    return out


def grad_input(d_cols, d_w, d_g, mode, out=None):
    """dX_col (K, L): Eq. 6 (HardTanh) in "full" mode, sgn in "sign" mode."""
    out = empty(d_cols.shape) if out is None else out
    return tiled("dx_full" if mode == "full" else "dx_sign", d_w, d_g, d_cols, out)


def grad_weight(d_cols, d_w, d_g, mode):
    """dW (C_out, K): Eq. 5 (X - F) in "full" mode, Eq. 4 (sgn) in "sign" mode."""
    out = empty(d_w.shape)
    if mode == "sign":
        return tiled("dw_sign", d_g, d_cols, d_w, out)
    # full (Eq. 5): sum_l G[t,l] (X[k,l] - W[t,k]) = (G @ X_col.T)[t,k] - W[t,k] * sum_l G[t,l]
    tiled("product", d_g, d_cols, None, out)
    c_out, l_size = d_g.shape
    chunks = max(1, min(math.ceil(4 * sm_count() / c_out), l_size // 4096))
    gsum_partials = scratch("gsum", (chunks, c_out))
    row_sums_kernel[(c_out, chunks), _ROW_SUM_THREADS, current_stream()](d_g, gsum_partials)
    blocks, threads = elementwise_launch(out.size)
    subtract_w_gsum_kernel[blocks, threads, current_stream()](out, d_w, gsum_partials, d_g, d_cols)
    return out


# ============================================== one kernel at a time, for tests and benchmarks
def _window(x_shape, kh, kw, stride, padding):
    return Window.of(x_shape, (1, x_shape[1], kh, kw), stride, padding)


def im2col(x, kh, kw, stride=1, padding=0):
    """X_col (C*kh*kw, N*H_out*W_out) of x (N, C, H, W); see reference.im2col."""
    d_x = to_device(x, "x", 4)
    return result(windows.im2col(d_x, _window(d_x.shape, kh, kw, stride, padding)), not is_device_array(x))


def col2im(cols, x_shape, kh, kw, stride=1, padding=0):
    """The adjoint of im2col: dX[n, c, y, x] = sum of the column entries that read that pixel."""
    d_cols = to_device(cols, "cols", 2)
    return result(windows.col2im(d_cols, _window(x_shape, kh, kw, stride, padding)), not is_device_array(cols))


def _matrices(cols, weight, grad_out=None):
    d_cols, d_w = to_device(cols, "cols", 2), to_device(weight, "weight", 2)
    return d_cols, d_w, (None if grad_out is None else to_device(grad_out, "grad_out", 2))


def adder_forward(cols, weight, distance="l1"):
    """Eq. 2 (or Eq. 27) in im2col form, (K, L), (C_out, K) -> (C_out, L); see
    reference.adder_forward and reference.l2_forward."""
    d_cols, d_w, _ = _matrices(cols, weight)
    return result(forward(d_cols, d_w, distance=distance), not is_device_array(cols))


def l2_grads(cols, weight, grad_out):
    """(dW, dX_col) of Eq. 27 in im2col form; see reference.l2_grads. Twice the full-mode
    dW of Eq. 5, and twice ``grad_input_l2``."""
    d_cols, d_w, _ = _matrices(cols, weight)
    d_g = doubled(cuda.to_device(np.ascontiguousarray(grad_out, dtype=np.float32), stream=current_stream()))
    to_host = not is_device_array(cols)
    return (result(grad_weight(d_cols, d_w, d_g, "full"), to_host),
            result(grad_input_l2(d_cols, d_w, d_g), to_host))


def adder_grad_input(cols, weight, grad_out, mode="full"):
    """dX_col (K, L) (Eq. 6, or sgn); see reference.adder_grad_input."""
    d_cols, d_w, d_g = _matrices(cols, weight, grad_out)
    return result(grad_input(d_cols, d_w, d_g, mode), not is_device_array(cols))


def adder_grad_weight(cols, weight, grad_out, mode="full"):
    """dW (C_out, K) (Eq. 5, or Eq. 4); see reference.adder_grad_weight."""
    d_cols, d_w, d_g = _matrices(cols, weight, grad_out)
    return result(grad_weight(d_cols, d_w, d_g, mode), not is_device_array(cols))
