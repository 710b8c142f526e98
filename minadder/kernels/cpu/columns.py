"""im2col and col2im for the ordinary convolution, as parallel Numba loops, and the
convolution and its gradients through them by chunks of images, one BLAS product a chunk.

The same two maps as ``reference.im2col`` / ``reference.col2im`` (read those first: there
they are NumPy slicing), written out element by element so that nothing is padded or
transposed on the way: one row of X_col (c, i, j), one (image, channel) plane of col2im
at a time. Serial versions (``nogil``: a thread of products.on_threads runs them on its
own chunk of images) and parallel ones, one image per task, so no two tasks write the
same memory. NumPy's versions took a third of a ResNet-20 CNN step.

The chunked convolution runs its chunks as tasks of a Numba kernel that calls NumPy's
BLAS itself (products.kernel_gemm), or, where that BLAS cannot be called so, on Python
threads (products.on_threads).
"""
import numpy as np
from numba import get_num_threads, njit, prange

from . import products
from .products import image_chunks
from ..geometry import output_size


@njit(nogil=True, cache=True)
def _im2col_row(x, row, kh, kw, stride, padding, ho, wo, out):
    """out = row (c, i, j) of X_col: x[b, c, s*u + i - p, s*v + j - p] or 0 outside."""
    n, c, h, w = x.shape
    ci, i, j = row // (kh * kw), (row // kw) % kh, row % kw
    for b in range(n):
        for u in range(ho):
            y = stride * u + i - padding
            base = (b * ho + u) * wo
            for v in range(wo):
                xx = stride * v + j - padding
                inside = 0 <= y < h and 0 <= xx < w
                out[base + v] = x[b, ci, y, xx] if inside else 0


@njit(nogil=True, cache=True)
def _col2im_plane(cols, b, ci, kh, kw, stride, padding, ho, wo, plane):
    """plane (H, W) += the entries of X_col's rows (ci, i, j) that image b's plane ci gave."""
    h, w = plane.shape
    for i in range(kh):
        for j in range(kw):
            row = cols[(ci * kh + i) * kw + j]
            for u in range(ho):
                y = stride * u + i - padding
                if 0 <= y < h:
                    base = (b * ho + u) * wo
                    for v in range(wo):
                        xx = stride * v + j - padding
                        if 0 <= xx < w:
                            plane[y, xx] += row[base + v]


@njit(nogil=True, cache=True)
def im2col_serial(x, kh, kw, stride, padding, ho, wo, cols):
    """X_col of x into cols (K, N*P), on the calling thread, releasing the GIL."""
    for row in range(cols.shape[0]):
        _im2col_row(x, row, kh, kw, stride, padding, ho, wo, cols[row])


@njit(nogil=True, cache=True)
def _col2im_serial(cols, kh, kw, stride, padding, ho, wo, dx):
    """dx (N, C, H, W) += col2im(cols), on the calling thread, releasing the GIL."""
    for b in range(dx.shape[0]):
        for ci in range(dx.shape[1]):
            _col2im_plane(cols, b, ci, kh, kw, stride, padding, ho, wo, dx[b, ci])


# The parallel maps: one image per task, each the serial map on its image. (Functions of
# their own, not njit(parallel=True) of the serial ones: Numba's disk cache tells
# compilations apart by the function's code, not by its options.)
@njit(parallel=True, cache=True)
def _im2col_kernel(x, kh, kw, stride, padding, ho, wo, cols):
    p = ho * wo
    for b in prange(x.shape[0]):
        im2col_serial(x[b:b + 1], kh, kw, stride, padding, ho, wo, cols[:, b * p:(b + 1) * p])


@njit(parallel=True, cache=True)
def _col2im_kernel(cols, kh, kw, stride, padding, ho, wo, dx):
    p = ho * wo
    for b in prange(dx.shape[0]):
        _col2im_serial(cols[:, b * p:(b + 1) * p], kh, kw, stride, padding, ho, wo, dx[b:b + 1])


def im2col(x, kh, kw, stride=1, padding=0):
    """X_col (C*kh*kw, N*H_out*W_out) of x (N, C, H, W): reference.im2col, in parallel."""
    n, c, h, w = x.shape
    ho, wo = output_size(h, kh, stride, padding), output_size(w, kw, stride, padding)
    cols = np.empty((c * kh * kw, n * ho * wo), dtype=x.dtype)
    _im2col_kernel(np.ascontiguousarray(x), kh, kw, stride, padding, ho, wo, cols)
    return cols


def col2im(cols, x_shape, kh, kw, stride=1, padding=0):
    """The adjoint of im2col: reference.col2im, in parallel."""
    n, c, h, w = x_shape
    ho, wo = output_size(h, kh, stride, padding), output_size(w, kw, stride, padding)
    dx = np.zeros(x_shape, dtype=cols.dtype)
    _col2im_kernel(np.ascontiguousarray(cols), kh, kw, stride, padding, ho, wo, dx)
    return dx


# ================================================ the convolution by chunks of images
def _chunk_columns(x, win, images):
    """X_col (K, n_c * P) of a slice of the batch, on the calling thread."""
    cols = np.empty((win.k, (images.stop - images.start) * win.plane), dtype=x.dtype)
    im2col_serial(x[images], win.kh, win.kw, win.stride, win.padding, win.ho, win.wo, cols)
    return cols


def _threads_parts(win):
    """The chunks of images (products.image_chunks), dealt out to the threads."""
    chunks = image_chunks(win)
    threads = min(get_num_threads(), len(chunks))
    return [chunks[i::threads] for i in range(threads)]


def conv2d_by_chunks(x, w2, win):
    """Y = W X_col (N, C_out, H_out, W_out), chunk by chunk of images: each thread builds its
    chunks' X_col and multiplies each on one BLAS thread. No X_col of the whole batch (9x
    the input for 3x3 filters) is built or kept: the backward builds the chunks again."""
    y = np.empty((win.n, win.c_out, win.plane), dtype=x.dtype)
    gemm = products.kernel_gemm(x.dtype)
    if gemm is not None:
        x = np.ascontiguousarray(x)
        step, parts = products.chunk_tasks(win)
        _conv2d_tasks(gemm, x, np.ascontiguousarray(w2), step, win.kh, win.kw, win.stride, win.padding,
                      win.ho, win.wo, parts, y)
        return y.reshape(win.y_shape)

    def work(part):
        for images in part:
            y_cols = w2 @ _chunk_columns(x, win, images)                 # (C_out, n_c * P)
            y[images] = y_cols.reshape(win.c_out, -1, win.plane).transpose(1, 0, 2)
    products.on_threads(work, _threads_parts(win))
    return y.reshape(win.y_shape)


def conv2d_gradients_by_chunks(x, w2, g, win, need_input_grad, need_weight_grad):
    """(dX or None, dW (C_out, K) or None) for G = g (N, C_out, P), chunk by chunk as
    conv2d_by_chunks: dW = sum of G_c X_col_c^T, dX_c = col2im(W^T G_c) per chunk."""
    dx = np.zeros(win.x_shape, dtype=x.dtype) if need_input_grad else None
    gemm = products.kernel_gemm(x.dtype)
    if gemm is not None:
        step, parts = products.chunk_tasks(win)
        dw_t = np.zeros((parts, win.k, win.c_out), dtype=x.dtype)
        _conv2d_gradient_tasks(gemm, np.ascontiguousarray(x), np.ascontiguousarray(w2), np.ascontiguousarray(g),
                               step, win.kh, win.kw, win.stride, win.padding, win.ho, win.wo,
                               need_input_grad, need_weight_grad, dx if need_input_grad else x[:0], dw_t,
                               np.zeros((parts, win.c_out)))
        return dx, (np.ascontiguousarray(dw_t.sum(axis=0).T) if need_weight_grad else None)

    def work(part):
        dw_t = None      # dW^T (K, C_out), summed as products.transposed_product computes it
        for images in part:
            gc = np.ascontiguousarray(g[images].transpose(1, 0, 2)).reshape(win.c_out, -1)
            if need_weight_grad:
                dw_t = products.transposed_product(_chunk_columns(x, win, images), gc, dw_t)
            if need_input_grad:
                _col2im_serial(w2.T @ gc, win.kh, win.kw, win.stride, win.padding, win.ho, win.wo, dx[images])
        return dw_t
    dws = products.on_threads(work, _threads_parts(win))
    return dx, (np.ascontiguousarray(sum(dws).T) if need_weight_grad else None)


# ------------------------------------ the same chunks as tasks of Numba kernels, BLAS called from them
@njit(parallel=True, cache=True)
def _conv2d_tasks(gemm, x, w2, step, kh, kw, stride, padding, ho, wo, parts, y):
    """conv2d_by_chunks' work on Numba's threads: task p takes the chunks p, p + parts, ...
    of ``step`` images, builds each one's X_col, multiplies it by W (``gemm``,
    products.product_into) and writes Y (N, C_out, P) image by image."""
    n_img, c_out, plane = y.shape
    chunks = (n_img + step - 1) // step
    for part in prange(parts):
        for chunk in range(part, chunks, parts):
            n0, n1 = chunk * step, min(n_img, (chunk + 1) * step)
            cols = np.empty((w2.shape[1], (n1 - n0) * plane), dtype=x.dtype)
            im2col_serial(x[n0:n1], kh, kw, stride, padding, ho, wo, cols)
            y_cols = np.empty((c_out, (n1 - n0) * plane), dtype=x.dtype)
            products.product_into(gemm, w2, False, cols, False, 0.0, y_cols)
            for n in range(n0, n1):
                y[n] = y_cols[:, (n - n0) * plane:(n - n0 + 1) * plane]


@njit(parallel=True, cache=True)
def _conv2d_gradient_tasks(gemm, x, w2, g, step, kh, kw, stride, padding, ho, wo, need_dx, need_dw, dx, dw_t,
                           g_sums):
    """conv2d_gradients_by_chunks' work on Numba's threads: task p takes the chunks p, p +
    parts, ... (parts = dw_t.shape[0]); per chunk, G's columns in X_col's order (their sums
    per filter added into g_sums[p], which the l2 layer's dW subtracts), then dW^T +=
    X_col G^T into dw_t[p] and dX of the chunk's images = col2im(W^T G)."""
    n_img, c_out, plane = g.shape
    parts = dw_t.shape[0]
    chunks = (n_img + step - 1) // step
    for part in prange(parts):
        for chunk in range(part, chunks, parts):
            n0, n1 = chunk * step, min(n_img, (chunk + 1) * step)
            gc = np.empty((c_out, (n1 - n0) * plane), dtype=g.dtype)
            g_sums[part] += products.g_columns(g, n0, n1, gc)
            if need_dw:
                cols = np.empty((w2.shape[1], (n1 - n0) * plane), dtype=x.dtype)
                im2col_serial(x[n0:n1], kh, kw, stride, padding, ho, wo, cols)
                products.product_into(gemm, cols, False, gc, True, 1.0, dw_t[part])
            if need_dx:
                dx_cols = np.empty((w2.shape[1], (n1 - n0) * plane), dtype=x.dtype)
                products.product_into(gemm, w2, True, gc, False, 0.0, dx_cols)
                _col2im_serial(dx_cols, kh, kw, stride, padding, ho, wo, dx[n0:n1])
