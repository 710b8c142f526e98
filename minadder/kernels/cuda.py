"""CUDA kernels for the adder layer, written with ``numba.cuda``.

The same functions and signatures as ``reference.py`` (the definition they must match),
listed in ``contract.KERNEL_NAMES``; ``contract.adder2d_forward`` / ``adder2d_backward``
run the layer on images through the layer kernels here.

Arrays in and out. Every function accepts host NumPy arrays and device arrays (a numba
device array, or anything with ``__cuda_array_interface__`` such as a CuPy array or a
CUDA torch tensor). When the first array argument is a NumPy array the inputs are copied
to the device and the result is copied back (host in, host out); otherwise the result
stays on the device. Arithmetic is float32 throughout: host arrays are converted,
device arrays must already be float32.

The kernels (Eqs. 2, 4-6 of the paper, with X_col (K, L), W (C_out, K), G (C_out, L)):

* ``_im2col_kernel`` / ``_col2im_kernel``: im2col with one thread per (column, channel);
  col2im as a *gather*, one thread per pixel summing the column entries of the windows
  that cover it, so no two threads write the same place and no atomics are needed.
* One tiled "GEMM" template, ``_make_tiled_kernel``, instantiated five times:

      forward        Y[t, l]  = -sum_k |X_col[k, l] - W[t, k]|                 (Eq. 2)
      dX full        dX[k, l] =  sum_t G[t, l] * HT(W[t, k] - X_col[k, l])       (Eq. 6)
      dX sign        dX[k, l] =  sum_t G[t, l] * sgn(W[t, k] - X_col[k, l])
      dW sign        dW[t, k] =  sum_l G[t, l] * sgn(X_col[k, l] - W[t, k])      (Eq. 4)
      product        P[t, k]  =  sum_l G[t, l] * X_col[k, l]

  and dW in full mode (Eq. 5) is the matrix-product identity
  dW = G @ X_col.T - W * G.sum(axis=1), i.e. the product kernel, a row sum and an update.

The template is a classic shared-memory, register-blocked GEMM with the multiply-add
replaced by an ``op``: a block computes a BM x BN tile of the output, stepping through
the reduction axis BK at a time; each step stages a BK x BM tile of A and a BK x BN tile
of B in shared memory, and each thread accumulates a TM x TN sub-tile in registers.
When the output has too few tiles to fill the GPU (dW: C_out x K, but a reduction over
L = N*H_out*W_out), the reduction axis is split over ``blockIdx.z`` and the partial sums
are added by a second kernel (deterministic, no atomics).

Pitfalls. In numba.cuda, float32 plus a Python int is float64, and from there the kernel
runs at FP64 speed: every constant below is ``float32(...)`` and no
index ever meets a float. Signed array indices get a negative-index fix-up each, so the
tiled kernels index with unsigned integers (see ``_make_tiled_kernel``). The PTX tests
(tests/test_cuda.py) check both: no float64 and no local memory in any kernel.

The layer's cache keeps the input (not X_col) on the device; the backward's layer kernels
rebuild X_col there (an im2col is cheap next to the l1 kernels), and the temporaries reuse
device buffers between calls (``_scratch``; ``release_workspace()`` frees them).

Streams. Kernels, allocations and copies go to numba's default stream, or to the stream
chosen with ``with on_stream(stream):`` (per host thread); the reused buffers are kept per
stream. minadder.torch uses it to run on PyTorch's current stream.
"""
import contextlib
import functools
import math
import threading

import numpy as np

# numba-cuda 0.30.4 calls np.row_stack when it compiles a kernel; NumPy 2.5 removed that
# alias of np.vstack, and the first kernel compile then fails with an AttributeError.
# Restoring the alias (before numba.cuda is imported) is all it needs.
if not hasattr(np, "row_stack"):
    np.row_stack = np.vstack

try:
    from numba import cuda, float32
except ImportError as exc:  # numba without its CUDA target
    raise ImportError(
        f"numba.cuda cannot be imported ({exc}); install the CUDA extra: "
        'pip install "minadder[cuda]"'
    ) from exc

from ..backend import BackendUnavailable
from .contract import check_grad_mode, output_size

__all__ = ["check_available", "current_stream", "on_stream", "im2col", "col2im", "adder_forward", "adder_grad_input",
           "adder_grad_weight", "layer_input", "layer_forward", "layer_grad_input", "layer_grad_weight"]


def check_available():
    """Raise BackendUnavailable unless a CUDA device and driver can be used.

    (Under the CUDA simulator, NUMBA_ENABLE_CUDASIM=1, numba reports one device.)
    """
    if not cuda.is_available():
        raise BackendUnavailable(
            "backend 'cuda': no CUDA device or driver was found (numba.cuda.is_available() "
            "is False). It needs an NVIDIA GPU with its driver installed, and the CUDA extra: "
            'pip install "minadder[cuda]"'
        )


# ============================================================================ helpers
_ELEMENTWISE_THREADS = 256
_MAX_BLOCKS = 65535


def _is_device_array(a):
    """True for numba device arrays (real or simulated) and __cuda_array_interface__ objects."""
    return hasattr(a, "copy_to_host") or hasattr(a, "__cuda_array_interface__")


def _to_device(a, name, ndim):
    """``a`` as a C-contiguous float32 device array; host arrays are copied in."""
    if not _is_device_array(a):
        host = np.ascontiguousarray(a, dtype=np.float32)
        if host.ndim != ndim:
            raise ValueError(f"{name} must be {ndim}-D, got shape {host.shape}")
        return cuda.to_device(host, stream=current_stream())
    if not hasattr(a, "copy_to_host"):
        a = cuda.as_cuda_array(a)  # zero-copy view of a foreign device array
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(a.shape)}")
    if np.dtype(a.dtype) != np.float32:
        raise TypeError(f"{name}: device arrays must be float32, got {a.dtype}")
    if not a.is_c_contiguous():
        raise ValueError(f"{name}: device arrays must be C-contiguous")
    return a


def _result(d_array, to_host):
    if not to_host:
        return d_array
    stream = current_stream()
    host = d_array.copy_to_host(stream=stream)
    if stream != 0:
        stream.synchronize()   # the copy is asynchronous on a stream; the caller reads it now
    return host


# ============================================================================ streams
_stream_state = threading.local()


def current_stream():
    """The stream this thread's kernels, allocations and copies are queued on.

    0 (numba's default stream) unless a caller chose one with ``on_stream``.
    """
    return getattr(_stream_state, "stream", 0)


@contextlib.contextmanager
def on_stream(stream):
    """Queue every launch, allocation and copy of this module on ``stream`` inside the block.

    ``stream`` is a numba stream: ``cuda.stream()``, or ``cuda.external_stream(ptr)`` for a
    stream another library created (minadder.torch passes PyTorch's current stream, whose
    ``__cuda_array_interface__`` carries no stream for numba to synchronise on). Work on
    one stream runs in launch order, so the buffers reused between calls (``_scratch``)
    are kept per stream and are never written by one stream while another reads them.
    """
    previous = current_stream()
    _stream_state.stream = 0 if stream is None else stream
    try:
        yield stream
    finally:
        _stream_state.stream = previous


def stream_key(stream):
    """A hashable name of a stream: its handle as an int (0 for the default stream)."""
    if isinstance(stream, int):
        return stream
    handle = getattr(stream, "handle", None)
    value = getattr(handle, "value", handle)   # ctypes c_void_p, or a driver handle object
    if value is None:
        return 0 if handle is not None else id(stream)   # c_void_p(0): the default stream
    try:
        return int(value)
    except (TypeError, ValueError):
        return id(stream)   # the simulator's streams have no handle


_workspace = {}  # (tag, shape, stream) -> a device array that later calls reuse (see _scratch)


def _scratch(tag, shape):
    """A float32 device buffer for a temporary that never leaves this module.

    Every kernel here runs on the current stream (``on_stream``; numba's default stream
    unless chosen), in launch order, so the next call on that stream may reuse a buffer as
    soon as this call's kernels are queued; each stream has its own buffers, so kernels on
    two streams never share one. Allocating and freeing on every call would cost more
    than a small layer's kernels (numba frees in batches with cuMemFree, which waits for
    the whole GPU). One buffer per (tag, shape, stream): a network keeps one set per
    distinct layer shape and stream; ``release_workspace()`` gives them back.
    Not for use from several host threads at once.
    """
    shape = tuple(int(d) for d in shape)
    key = (tag, shape, stream_key(current_stream()))
    buffer = _workspace.get(key)
    if buffer is None:
        buffer = _workspace[key] = cuda.device_array(shape, dtype=np.float32, stream=current_stream())
    return buffer


def release_workspace():
    """Free the temporaries kept between calls (they are re-allocated when next needed)."""
    _workspace.clear()


def _elementwise_launch(n):
    """(blocks, threads) for one thread per element with a grid-stride loop."""
    threads = min(_ELEMENTWISE_THREADS, max(32, 32 * math.ceil(n / 32)))
    return min(_MAX_BLOCKS, max(1, math.ceil(n / threads))), threads


_check_mode = check_grad_mode


# ====================================================================== im2col, col2im
# These kernels move data (a few loads and stores per thread), so they keep plain signed
# index arithmetic; the divisions that decode a flat index are done once per thread row.
@cuda.jit
def _im2col_kernel(x, cols, kh, kw, stride, padding, ho, wo):
    """cols[(c,i,j), (n,u,v)] = Xp[n, c, s*u + i, s*v + j]  (zero outside the image).

    Grid x runs over the columns l = (n, u, v), grid y over the channels c; a thread
    decodes its l once and writes the kh*kw rows of its channel (coalesced along l).
    (ho, wo: the output size, contract.output_size.)
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
def _col2im_kernel(cols, dx, kh, kw, stride, padding, ho, wo):
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
def _swap01_kernel(src, dst):
    """dst[b, a, p] = src[a, b, p]: (C_out, N, HW) <-> (N, C_out, HW) without the host.

    Grid y runs over b, grid x over the (a, p) pairs.
    """
    a_size, b_size, p_size = src.shape
    for b in range(cuda.blockIdx.y, b_size, cuda.gridDim.y):
        for idx in range(cuda.grid(1), a_size * p_size, cuda.gridsize(1)):
            a, p = idx // p_size, idx % p_size
            dst[b, a, p] = src[a, b, p]


def _check_window(kh, kw, stride, padding):
    if min(kh, kw) < 1 or stride < 1 or padding < 0:
        raise ValueError(f"need kh, kw >= 1, stride >= 1 and padding >= 0; got kh={kh}, kw={kw}, "
                         f"stride={stride}, padding={padding}")


def _im2col_device(d_x, kh, kw, stride, padding):
    _check_window(kh, kw, stride, padding)
    n, c, h, w = d_x.shape
    ho, wo = output_size(h, kh, stride, padding), output_size(w, kw, stride, padding)
    if ho < 1 or wo < 1:
        raise ValueError(f"kernel {kh}x{kw} is larger than the padded input "
                         f"{h + 2 * padding}x{w + 2 * padding}")
    cols = cuda.device_array((c * kh * kw, n * ho * wo), dtype=np.float32, stream=current_stream())
    blocks, threads = _elementwise_launch(cols.shape[1])
    _im2col_kernel[(blocks, min(c, _MAX_BLOCKS)), threads, current_stream()](d_x, cols, kh, kw, stride, padding,
                                                                          ho, wo)
    return cols


def _col2im_device(d_cols, x_shape, kh, kw, stride, padding):
    _check_window(kh, kw, stride, padding)
    n, c, h, w = x_shape
    ho, wo = output_size(h, kh, stride, padding), output_size(w, kw, stride, padding)
    if tuple(d_cols.shape) != (c * kh * kw, n * ho * wo):
        raise ValueError(f"cols must have shape {(c * kh * kw, n * ho * wo)} for x_shape "
                         f"{tuple(x_shape)}, got {tuple(d_cols.shape)}")
    dx = cuda.device_array(tuple(x_shape), dtype=np.float32, stream=current_stream())
    blocks, threads = _elementwise_launch(dx.size)
    _col2im_kernel[blocks, threads, current_stream()](d_cols, dx, kh, kw, stride, padding, ho, wo)
    return dx


def _swap01_device(src, shape, out=None):
    """src viewed as (A, B, P) -> (B, A, P), into ``out`` or a new device array."""
    a, b, p = shape
    dst = cuda.device_array((b, a, p), dtype=np.float32, stream=current_stream()) if out is None else out
    blocks, threads = _elementwise_launch(a * p)
    _swap01_kernel[(blocks, min(b, _MAX_BLOCKS)), threads, current_stream()](src.reshape(a, b, p), dst)
    return dst


# ========================================================== the tiled l1 "GEMM" template
# The five ops: acc <- op(acc, a, b, c) with a from A[r, m], b from B[r, n], c = C[m, n].
# Padding a tile with a = b = 0 must add nothing: op(acc, 0, 0, c) == acc for each of them.
@cuda.jit(device=True, inline=True)
def _op_l1(acc, w, x, unused):
    """Forward, Eq. 2: acc - |x - w|."""
    return acc - abs(x - w)


@cuda.jit(device=True, inline=True)
def _op_hardtanh_input(acc, w, g, x):
    """dX full, Eq. 6: acc + g * HT(w - x), HT(z) = min(1, max(-1, z))."""
    return acc + g * min(max(w - x, float32(-1.0)), float32(1.0))


@cuda.jit(device=True, inline=True)
def _op_sign_input(acc, w, g, x):
    """dX sign: acc + g * sgn(w - x), sgn(0) = 0.

    sgn as (w > x) - (w < x) in float32: comparisons that set 1.0 or 0.0, no branch
    (an if/else here compiles to a branch per multiply-add, three times slower).
    """
    return acc + g * (float32(w > x) - float32(w < x))


@cuda.jit(device=True, inline=True)
def _op_sign_weight(acc, g, x, w):
    """dW sign, Eq. 4: acc + g * sgn(x - w), sgn(0) = 0 (branch-free, as above)."""
    return acc + g * (float32(x > w) - float32(x < w))


@cuda.jit(device=True, inline=True)
def _op_mul(acc, g, x, unused):
    """The product G @ X_col.T of the full-mode dW identity (Eq. 5)."""
    return acc + g * x


U = np.uint64  # index type of the tiled kernels (see _make_tiled_kernel)

#: variant -> (op, A stored as (M, R)?, B stored as (N, R)?, uses C?)
#: "stored as (M, R)" means A's reduction index is its last, contiguous axis.
_VARIANTS = {
    #                  op                   A is (M,R)  B is (N,R)  C
    "forward":       (_op_l1,              True,       False,      False),  # A=W, B=X_col
    "dx_full":       (_op_hardtanh_input,  False,      False,      True),   # A=W, B=G, C=X_col
    "dx_sign":       (_op_sign_input,      False,      False,      True),
    "dw_sign":       (_op_sign_weight,     True,       True,       True),   # A=G, B=X_col, C=W
    "product":       (_op_mul,             True,       True,       False),  # A=G, B=X_col
}

#: tile name -> (BM, BN, BK, TM, TN): a block computes BM x BN outputs with
#: (BM/TM) x (BN/TN) threads, each holding TM x TN accumulators in registers.
TILES = {
    "128x128": (128, 128, 8, 8, 8),   # 256 threads; large C_out / K
    "64x128": (64, 128, 8, 8, 8),     # 128 threads
    "32x128": (32, 128, 8, 4, 8),     # 128 threads
    "16x128": (16, 128, 8, 4, 8),     # 64 threads; small C_out (LeNet, ResNet-20's first stage)
    "16x64": (16, 64, 8, 4, 4),       # 64 threads; outputs narrower than 128 columns
}


def _make_tiled_kernel(name, op, a_is_mr, b_is_nr, use_c, tile):
    """Build the kernel  out[s, m, n] = op-fold over r in split s of (A[r, m], B[r, n], C[m, n]).

    A is indexed a[m, r] when ``a_is_mr`` else a[r, m]; B is b[n, r] when ``b_is_nr`` else
    b[r, n]; the tile loads read along whichever axis is contiguous (coalesced). Returns the
    plain Python function (``cuda.jit`` it, or ``cuda.compile_ptx`` it).

    Every index below is unsigned (np.uint64, ``U``): numba adds a negative-index fix-up
    to each *signed* array index, and in the inner loop those integer instructions
    outnumbered the floating-point ones. Mixing uint64 with a signed int makes float64 in
    numba, so every constant is a U too (the PTX tests check that no float64 remains).
    """
    bm, bn, bk, tm, tn = (U(v) for v in tile)
    nty, ntx = bm // tm, bn // tn              # threads per block along m and n
    nthreads = nty * ntx
    if (bk * bm) % nthreads or (bk * bn) % nthreads:
        raise ValueError(f"tile {tile}: a BK x BM or BK x BN tile must split evenly over threads")
    a_loads, b_loads = bk * bm // nthreads, bk * bn // nthreads
    # shared tiles get one spare column: when a warp stores along r (a[m, r] layouts), rows
    # of bm + 1 words put its 8 r-values in 8 different banks instead of one
    a_tile, b_tile, sub_tile = (tile[2], tile[0] + 1), (tile[2], tile[1] + 1), (tile[3], tile[4])

    def tiled_kernel(a, b, c, out, r_per_split):
        sa = cuda.shared.array(a_tile, float32)        # A[r0:r0+bk, m0:m0+bm]
        sb = cuda.shared.array(b_tile, float32)        # B[r0:r0+bk, n0:n0+bn]
        acc = cuda.local.array(sub_tile, float32)      # registers (the loops unroll)
        cv = cuda.local.array(sub_tile, float32)
        fa = cuda.local.array(tile[3], float32)
        fb = cuda.local.array(tile[4], float32)

        m_size, n_size = U(out.shape[1]), U(out.shape[2])
        r_size = U(a.shape[1]) if a_is_mr else U(a.shape[0])
        tx, ty = U(cuda.threadIdx.x), U(cuda.threadIdx.y)
        tid = ty * ntx + tx
        m0, n0 = U(cuda.blockIdx.y) * bm, U(cuda.blockIdx.x) * bn
        split = U(cuda.blockIdx.z)
        r_begin = split * U(r_per_split)
        r_end = min(r_size, r_begin + U(r_per_split))

        # Thread (ty, tx) owns rows m0 + ty + i*nty and columns n0 + tx + j*ntx: strided,
        # so neighbouring threads read neighbouring shared-memory words (no bank conflicts)
        # and write neighbouring output columns (coalesced).
        for i in range(tm):
            for j in range(tn):
                acc[i, j] = float32(0.0)
                cv[i, j] = float32(0.0)
                m, n = m0 + ty + i * nty, n0 + tx + j * ntx
                if use_c and m < m_size and n < n_size:
                    cv[i, j] = c[m, n]

        for r0 in range(r_begin, r_end, bk):
            # Stage the A and B tiles in shared memory; zeros past the edges.
            for e in range(a_loads):
                idx = tid + e * nthreads
                if a_is_mr:
                    rr, mm = idx % bk, idx // bk          # r fastest: a[m, r] is contiguous in r
                else:
                    rr, mm = idx // bm, idx % bm          # m fastest: a[r, m] is contiguous in m
                m, r = m0 + mm, r0 + rr
                value = float32(0.0)
                if m < m_size and r < r_end:
                    value = a[m, r] if a_is_mr else a[r, m]
                sa[rr, mm] = value
            for e in range(b_loads):
                idx = tid + e * nthreads
                if b_is_nr:
                    rr, nn = idx % bk, idx // bk
                else:
                    rr, nn = idx // bn, idx % bn
                n, r = n0 + nn, r0 + rr
                value = float32(0.0)
                if n < n_size and r < r_end:
                    value = b[n, r] if b_is_nr else b[r, n]
                sb[rr, nn] = value
            cuda.syncthreads()

            # The inner loop: per step, tm + tn shared loads feed tm * tn ops.
            for rr in range(bk):
                for i in range(tm):
                    fa[i] = sa[rr, ty + i * nty]
                for j in range(tn):
                    fb[j] = sb[rr, tx + j * ntx]
                for i in range(tm):
                    for j in range(tn):
                        acc[i, j] = op(acc[i, j], fa[i], fb[j], cv[i, j])
            cuda.syncthreads()

        for i in range(tm):
            for j in range(tn):
                m, n = m0 + ty + i * nty, n0 + tx + j * ntx
                if m < m_size and n < n_size:
                    out[split, m, n] = acc[i, j]

    tiled_kernel.__name__ = tiled_kernel.__qualname__ = f"tiled_{name}_{tile[0]}x{tile[1]}"
    return tiled_kernel


_compiled = {}  # (variant, tile name) -> cuda.jit dispatcher, built on first use


def tiled_kernel_source(variant, tile_name):
    """The Python function of one tiled kernel (for cuda.jit or cuda.compile_ptx)."""
    op, a_is_mr, b_is_nr, use_c = _VARIANTS[variant]
    return _make_tiled_kernel(variant, op, a_is_mr, b_is_nr, use_c, TILES[tile_name])


def _tiled_dispatcher(variant, tile_name):
    key = (variant, tile_name)
    if key not in _compiled:
        _compiled[key] = cuda.jit(tiled_kernel_source(variant, tile_name))
    return _compiled[key]


@cuda.jit
def _sum_splits_kernel(partials, out):
    """out[m, n] = sum_s partials[s, m, n] (fixed order: deterministic)."""
    splits, m_size, n_size = partials.shape
    start, step = cuda.grid(1), cuda.gridsize(1)
    for idx in range(start, m_size * n_size, step):
        m, n = idx // n_size, idx % n_size
        acc = float32(0.0)
        for s in range(splits):
            acc += partials[s, m, n]
        out[m, n] = acc


_ROW_SUM_THREADS = 64


@cuda.jit
def _row_sums_kernel(g, partials):
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
def _subtract_w_gsum_kernel(dw, w, gsum_partials):
    """dW[t, k] -= W[t, k] * sum_l G[t, l]: the second term of the full-mode dW identity."""
    t_size, k_size = dw.shape
    start, step = cuda.grid(1), cuda.gridsize(1)
    for idx in range(start, t_size * k_size, step):
        t, k = idx // k_size, idx % k_size
        gsum = float32(0.0)
        for s in range(gsum_partials.shape[0]):
            gsum += gsum_partials[s, t]
        dw[t, k] -= w[t, k] * gsum


@functools.lru_cache(maxsize=None)
def _sm_count():
    """Streaming multiprocessors of the current device (132 on an H100 SXM; 132 assumed if unknown)."""
    try:
        return int(cuda.get_current_device().MULTIPROCESSOR_COUNT)
    except Exception:  # the simulator's fake device has no attributes
        return 132


def choose_tile(m_size, n_size):
    """A tile for an (M, N) output: the tallest whose rows waste at most 15 % at the edge.

    Big tiles reuse each staged value more (fewer shared loads per op); a tile taller than
    M computes rows that are thrown away (M = 144 in a 128-row tile wastes 44 %).
    """
    if n_size < 128:
        return "16x64"
    for name in ("128x128", "64x128", "32x128"):
        bm = TILES[name][0]
        if math.ceil(m_size / bm) * bm <= 1.15 * m_size:
            return name
    return "16x128"


#: threads per SM the split heuristic aims for (12 warps: enough to cover the stalls of one
#: block's tile loads with the other blocks' arithmetic)
_THREADS_PER_SM = 384


def choose_splits(tiles, threads_per_block, r_size, min_r_per_split=64):
    """How many parts to cut the reduction axis into so that the GPU has enough threads.

    An output with few tiles (dW: C_out x K, reduced over L = N*H_out*W_out; the small
    maps of a network's last stage) leaves most SMs idle; splitting the reduction
    multiplies the blocks, at the price of a partial-sum buffer. Never below
    ``min_r_per_split`` reduction steps per part.
    """
    wanted = math.ceil(_sm_count() * _THREADS_PER_SM / (tiles * threads_per_block))
    return max(1, min(wanted, r_size // min_r_per_split))


def launch_plan(m_size, n_size, r_size, tile=None, splits=None):
    """(tile name, splits, reduction steps per split) for an (M, N) output reduced over R."""
    tile = tile or choose_tile(m_size, n_size)
    bm, bn, bk, tm, tn = TILES[tile]
    if splits is None:
        tiles = math.ceil(m_size / bm) * math.ceil(n_size / bn)
        splits = choose_splits(tiles, (bm // tm) * (bn // tn), r_size)
    # every split but the last covers a whole number of BK steps
    r_per_split = bk * math.ceil(max(1, r_size) / (bk * splits))
    return tile, max(1, math.ceil(r_size / r_per_split)), r_per_split


def tiled(variant, a, b, c, out, tile=None, splits=None):
    """Launch a tiled kernel writing the (M, N) device array ``out``; returns ``out``.

    ``tile`` and ``splits`` are chosen from the shapes unless given (the tests force them).
    """
    op, a_is_mr, b_is_nr, use_c = _VARIANTS[variant]
    m_size, n_size = out.shape
    r_size = a.shape[1] if a_is_mr else a.shape[0]
    tile, splits, r_per_split = launch_plan(m_size, n_size, r_size, tile, splits)
    bm, bn, bk, tm, tn = TILES[tile]
    grid_m, grid_n = math.ceil(m_size / bm), math.ceil(n_size / bn)
    if c is None:
        c = out  # never read (use_c is False); any 2-D float32 array types the kernel
    target = out.reshape(1, m_size, n_size) if splits == 1 else \
        _scratch("splits", (splits, m_size, n_size))
    kernel = _tiled_dispatcher(variant, tile)
    kernel[(grid_n, grid_m, splits), (bn // tn, bm // tm), current_stream()](a, b, c, target, r_per_split)
    if splits > 1:
        blocks, threads = _elementwise_launch(out.size)
        _sum_splits_kernel[blocks, threads, current_stream()](target, out)
    return out


_C2, _C3, _C4 = "float32[:, ::1]", "float32[:, :, ::1]", "float32[:, :, :, ::1]"


def compile_targets():
    """(name, Python function, signature) of every kernel, typed as a real launch types them.

    The PTX tests compile each with ``cuda.compile_ptx(..., cc=(9, 0))``, which catches the
    typing errors the simulator never sees; a new kernel belongs in this list.
    """
    i64 = "int64"
    targets = [
        ("im2col", _im2col_kernel.py_func, f"void({_C4}, {_C2}, {i64}, {i64}, {i64}, {i64}, {i64}, {i64})"),
        ("col2im", _col2im_kernel.py_func, f"void({_C2}, {_C4}, {i64}, {i64}, {i64}, {i64}, {i64}, {i64})"),
        ("swap01", _swap01_kernel.py_func, f"void({_C3}, {_C3})"),
        ("sum_splits", _sum_splits_kernel.py_func, f"void({_C3}, {_C2})"),
        ("row_sums", _row_sums_kernel.py_func, f"void({_C2}, {_C2})"),
        ("subtract_w_gsum", _subtract_w_gsum_kernel.py_func, f"void({_C2}, {_C2}, {_C2})"),
    ]
    for variant in _VARIANTS:
        for tile_name in TILES:
            targets.append((f"{variant}_{tile_name}", tiled_kernel_source(variant, tile_name),
                            f"void({_C2}, {_C2}, {_C2}, {_C3}, int64)"))
    return targets


# ======================================================== the adder kernels, device side
def _forward_device(d_cols, d_w, out=None):
    if out is None:
        out = cuda.device_array((d_w.shape[0], d_cols.shape[1]), dtype=np.float32, stream=current_stream())
    return tiled("forward", d_w, d_cols, None, out)


def _grad_input_device(d_cols, d_w, d_g, mode, out=None):
    if out is None:
        out = cuda.device_array(d_cols.shape, dtype=np.float32, stream=current_stream())
    return tiled("dx_full" if mode == "full" else "dx_sign", d_w, d_g, d_cols, out)


def _grad_weight_device(d_cols, d_w, d_g, mode):
    out = cuda.device_array(d_w.shape, dtype=np.float32, stream=current_stream())
    if mode == "sign":
        return tiled("dw_sign", d_g, d_cols, d_w, out)
    # full (Eq. 5): sum_l G[t,l] (X[k,l] - W[t,k]) = (G @ X_col.T)[t,k] - W[t,k] * sum_l G[t,l]
    tiled("product", d_g, d_cols, None, out)
    c_out, l_size = d_g.shape
    chunks = max(1, min(math.ceil(4 * _sm_count() / c_out), l_size // 4096))
    gsum_partials = _scratch("gsum", (chunks, c_out))
    _row_sums_kernel[(c_out, chunks), _ROW_SUM_THREADS, current_stream()](d_g, gsum_partials)
    blocks, threads = _elementwise_launch(out.size)
    _subtract_w_gsum_kernel[blocks, threads, current_stream()](out, d_w, gsum_partials)
    return out


def _check_matrices(cols, weight, grad_out=None):
    if cols.shape[0] != weight.shape[1]:
        raise ValueError(f"weight must have shape (C_out, K={cols.shape[0]}) to match cols "
                         f"{tuple(cols.shape)}, got {tuple(weight.shape)}")
    if grad_out is not None and tuple(grad_out.shape) != (weight.shape[0], cols.shape[1]):
        raise ValueError(f"grad_out must have shape (C_out, L) = "
                         f"{(weight.shape[0], cols.shape[1])}, got {tuple(grad_out.shape)}")


# ============================================================== the public kernel functions
def im2col(x, kh, kw, stride=1, padding=0):
    """Unroll the (kh, kw) receptive fields of x (N, C, H, W) into X_col (C*kh*kw, N*H_out*W_out)."""
    cols = _im2col_device(_to_device(x, "x", 4), kh, kw, stride, padding)
    return _result(cols, not _is_device_array(x))


def col2im(cols, x_shape, kh, kw, stride=1, padding=0):
    """The adjoint of im2col: dX[n, c, y, x] = sum of the column entries that read that pixel."""
    x_shape = tuple(int(s) for s in x_shape)
    if len(x_shape) != 4:
        raise ValueError(f"x_shape must be (N, C, H, W), got {x_shape}")
    dx = _col2im_device(_to_device(cols, "cols", 2), x_shape, kh, kw, stride, padding)
    return _result(dx, not _is_device_array(cols))


def adder_forward(cols, weight):
    """Eq. 2 in im2col form: Y[t, l] = -sum_k |X_col[k, l] - W[t, k]|; (K, L), (C_out, K) -> (C_out, L)."""
    d_cols, d_w = _to_device(cols, "cols", 2), _to_device(weight, "weight", 2)
    _check_matrices(d_cols, d_w)
    return _result(_forward_device(d_cols, d_w), not _is_device_array(cols))


def adder_grad_weight(cols, weight, grad_out, mode="full"):
    """dW[t, k] = sum_l G[t, l] * D(X_col[k, l] - W[t, k])  (Eq. 4 sign, Eq. 5 full)."""
    _check_mode(mode)
    d_cols, d_w = _to_device(cols, "cols", 2), _to_device(weight, "weight", 2)
    d_g = _to_device(grad_out, "grad_out", 2)
    _check_matrices(d_cols, d_w, d_g)
    return _result(_grad_weight_device(d_cols, d_w, d_g, mode), not _is_device_array(cols))


def adder_grad_input(cols, weight, grad_out, mode="full"):
    """dX_col[k, l] = sum_t G[t, l] * E(W[t, k] - X_col[k, l])  (Eq. 6: E = HardTanh, or sgn)."""
    _check_mode(mode)
    d_cols, d_w = _to_device(cols, "cols", 2), _to_device(weight, "weight", 2)
    d_g = _to_device(grad_out, "grad_out", 2)
    _check_matrices(d_cols, d_w, d_g)
    return _result(_grad_input_device(d_cols, d_w, d_g, mode), not _is_device_array(cols))


# ======================================================= layer kernels (contract.py)
def _layer_inputs(x, w2, g=None):
    """x, w2 (and g) as float32 device arrays, and whether the results go back to the host."""
    to_host = not _is_device_array(x)
    d_x, d_w = _to_device(x, "x", 4), _to_device(w2, "weight", 2)
    return d_x, d_w, (None if g is None else _to_device(g, "grad_y", 3)), to_host


def layer_input(x, w2, win):
    """The input as these layer kernels read it: x itself (each rebuilds X_col on the device)."""
    return x


def layer_forward(x, w2, win):
    """Eq. 2 on images: im2col on the device, the tiled l1 kernel, and y (N, C_out, P)."""
    d_x, d_w, _, to_host = _layer_inputs(x, w2)
    cols = _im2col_device(d_x, win.kh, win.kw, win.stride, win.padding)        # (K, L)
    y_col = _forward_device(cols, d_w, out=_scratch("y_col", (win.c_out, win.l)))
    return _result(_swap01_device(y_col, (win.c_out, win.n, win.plane)), to_host)


def _g_cols(d_g, win):
    """G (N, C_out, P) on the device as the tiled kernels' (C_out, L)."""
    g = _swap01_device(d_g, (win.n, win.c_out, win.plane), out=_scratch("g", (win.c_out, win.n, win.plane)))
    return g.reshape(win.c_out, win.l)


def layer_grad_weight(x, w2, g, win, mode="full"):
    """dW (C_out, K) of the layer (Eq. 4 or 5): im2col again, from the input kept by the forward."""
    _check_mode(mode)
    d_x, d_w, d_g, _ = _layer_inputs(x, w2, g)
    cols = _im2col_device(d_x, win.kh, win.kw, win.stride, win.padding)
    return _result(_grad_weight_device(cols, d_w, _g_cols(d_g, win), mode), not _is_device_array(g))


def layer_grad_input(x, w2, g, win, mode="full"):
    """dX (N, C, H, W) of the layer (Eq. 6 or sgn): the tiled dX_col kernel, then col2im."""
    _check_mode(mode)
    d_x, d_w, d_g, _ = _layer_inputs(x, w2, g)
    cols = _im2col_device(d_x, win.kh, win.kw, win.stride, win.padding)
    dcols = _grad_input_device(cols, d_w, _g_cols(d_g, win), mode, out=_scratch("dcols", cols.shape))
    dx = _col2im_device(dcols, win.x_shape, win.kh, win.kw, win.stride, win.padding)
    return _result(dx, not _is_device_array(g))
