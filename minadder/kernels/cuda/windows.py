"""Moving data on the GPU: im2col, col2im (its adjoint, as a gather) and an axis swap.

With X (N, C, H, W) and the layer's Window ``win`` (kernel kh x kw, stride s, padding p),
im2col builds X_col (K, L), K = C*kh*kw rows (c, i, j), L = N*H_out*W_out columns (n, u, v):

    X_col[(c,i,j), (n,u,v)] = Xp[n, c, s*u + i, s*v + j]     (Xp: X zero-padded by p)

These kernels move data (a few loads and stores per thread), so they keep plain signed
index arithmetic; the divisions that decode a flat index are done once per thread row.
The arithmetic is in ``tiled.py``.
"""
from numba import cuda, float32

from .memory import MAX_BLOCKS, elementwise_launch, empty
from .streams import current_stream


@cuda.jit
def im2col_kernel(x, cols, kh, kw, stride, padding, ho, wo):
    """cols[(c,i,j), (n,u,v)] = Xp[n, c, s*u + i, s*v + j]  (zero outside the image).

    Grid x runs over the columns l = (n, u, v), grid y over the channels c; a thread
    decodes its l once and writes the kh*kw rows of its channel (coalesced along l).
    (ho, wo: the output size, geometry.output_size.)
    """
    _, channels, h, w = x.shape
    l_size = cols.shape[1]
    for c in range(cuda.blockIdx.y, channels, cuda.gridDim.y):
        for l in range(cuda.grid(1), l_size, cuda.gridsize(1)):
            n, uv = l // (ho * wo), l % (ho * wo)
            u, v = uv // wo, uv % wo
            for i in range(kh):
                row = stride * u + i - padding
                for j in range(kw):
                    col = stride * v + j - padding
                    value = float32(0.0)
                    if 0 <= row < h and 0 <= col < w:
                        value = x[n, c, row, col]
                    cols[(c * kh + i) * kw + j, l] = value


@cuda.jit
def col2im_kernel(cols, dx, kh, kw, stride, padding, ho, wo):
    """dX[n, c, y, x] = sum of cols[(c,i,j), (n,u,v)] over the windows with s*u+i = y+p, s*v+j = x+p.

    The adjoint of im2col, computed as a gather: one thread per pixel, so no two threads
    write the same place and no atomics are needed. The window offsets that reach row y
    are i = (y+p) mod s, then i + s, i + 2s, ..., with window row u = (y+p-i)/s falling by
    one at each step (the same along x), so no division happens inside the loops.
    """
    n_img, channels, h, w = dx.shape
    for idx in range(cuda.grid(1), n_img * channels * h * w, cuda.gridsize(1)):
        n, rest = idx // (channels * h * w), idx % (channels * h * w)
        c, rest = rest // (h * w), rest % (h * w)
        y, x = rest // w, rest % w
        acc = float32(0.0)
        i, u = (y + padding) % stride, (y + padding) // stride
        while i < kh and u >= 0:
            if u < ho:
                j, v = (x + padding) % stride, (x + padding) // stride
                while j < kw and v >= 0:
                    if v < wo:
                        acc += cols[(c * kh + i) * kw + j, (n * ho + u) * wo + v]
                    j += stride
                    v -= 1
            i += stride
            u -= 1
        dx[n, c, y, x] = acc


@cuda.jit
def swap01_kernel(src, dst):
    """dst[b, a, p] = src[a, b, p]: (C_out, N, HW) <-> (N, C_out, HW) without the host.

    Grid y runs over b, grid x over the (a, p) pairs.
    """
    a_size, b_size, p_size = src.shape
    for b in range(cuda.blockIdx.y, b_size, cuda.gridDim.y):
        for idx in range(cuda.grid(1), a_size * p_size, cuda.gridsize(1)):
            a, p = idx // p_size, idx % p_size
            dst[b, a, p] = src[a, b, p]


def im2col(d_x, win):
    """X_col (K, L) of the device image d_x (N, C, H, W) for the Window ``win``, on the device."""
    cols = empty((win.k, win.l))
    blocks, threads = elementwise_launch(win.l)
    im2col_kernel[(blocks, min(win.c, MAX_BLOCKS)), threads, current_stream()](
        d_x, cols, win.kh, win.kw, win.stride, win.padding, win.ho, win.wo)
    return cols


def col2im(d_cols, win, out=None):
    """The adjoint of im2col: dX (N, C, H, W) from the device columns d_cols (K, L)."""
    dx = empty(win.x_shape) if out is None else out
    blocks, threads = elementwise_launch(dx.size)
    col2im_kernel[blocks, threads, current_stream()](d_cols, dx, win.kh, win.kw, win.stride, win.padding,
                                                    win.ho, win.wo)
    return dx


def swap01(src, shape, out=None):
    """src viewed as (A, B, P) -> (B, A, P), into ``out`` or a new device array."""
    a, b, p = shape
    dst = empty((b, a, p)) if out is None else out
    blocks, threads = elementwise_launch(a * p)
    swap01_kernel[(blocks, min(b, MAX_BLOCKS)), threads, current_stream()](src.reshape(a, b, p), dst)
    return dst
