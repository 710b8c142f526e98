"""Large matrix products split over threads, each thread one single-threaded BLAS call
(``matmul``), and other work shared among the same threads (``on_threads``); and NumPy's
own BLAS called from inside a Numba kernel (``kernel_gemm``, ``add_product_nt``).

minadder.configure() gives NumPy's BLAS one thread (settings.py says why: its idle workers
spin and take the cores from the adder kernels). The ordinary convolution and the
full-precision dW still want every core, so this module splits a product A @ B by
columns of B into one block per Numba thread and runs the blocks on a small pool of
Python threads (NumPy releases the GIL inside the product). Results are those of
``a @ b`` up to float rounding of the split.
"""
import ctypes
import functools
import math
import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba import njit

from ..settings import one_blas_thread, openblas_function

#: the layers that build X_col (dW's chunks, the l2 layer, the convolution's BLAS layers)
#: build it for at most 1/DW_CHUNKS of the batch at a time (measured: 8x8 layers' peak memory 0.75x -> 0.5x of
#: their im2col buffer, commit ed5e863)
DW_CHUNKS = 8
#: the adder layer's dW products (grad_weight.py) take chunks of at most this many numbers
#: of X_col (2 MB of float32), one image at the least: on VGG-small's 32x32 layers an
#: eighth of batch 64 was a 38 MB X_col, mapped fresh by glibc for every chunk (past its
#: 32 MB mmap threshold) and read back by sgemm from memory. Measured 2026-12-06 on the
#: 2-core AVX-512 VM, batch 64, 2 threads, dW of the sgemm ceiling, an eighth of the batch
#: -> this bound: 128ch 32x32 0.39 -> 0.76, 256ch 16x16 0.68 -> 0.86, 512ch 8x8 0.61 ->
#: 0.64, 128ch 16x16 0.71 -> 0.75 (1 MB and 4 MB within 5 % of 2 MB). The convolution's
#: forward keeps its eighths: one image of 8x8 is too thin a product (512ch 8x8 72 -> 81-87 ms).
DW_CHUNK_NUMBERS = 1 << 19
#: below this many multiply-adds a product runs as one call: handing a block to another
#: thread costs tens of microseconds (chosen by hand, not re-measured)
MIN_SPLIT_TERMS = 1 << 21

_pool = None
_pool_size = 0
_pool_lock = threading.Lock()


def _workers(count):
    """The pool of ``count`` helper threads, made (or remade, if the count changed) once."""
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size != count:
            if _pool is not None:
                _pool.shutdown(wait=True)
            _pool, _pool_size = ThreadPoolExecutor(count, thread_name_prefix="minadder-blas"), count
        return _pool


def on_threads(work, parts):
    """[work(part) for part in parts], the first part on the calling thread and the others
    on the pool's threads at the same time (``work`` must release the GIL to gain: a BLAS
    call or a ``nogil`` Numba function)."""
    if len(parts) == 1:
        return [work(parts[0])]
    pending = [_workers(len(parts) - 1).submit(work, part) for part in parts[1:]]
    return [work(parts[0])] + [job.result() for job in pending]


def image_chunks(win, numbers=None):
    """Slices of the batch of about N / DW_CHUNKS images each; with ``numbers``, fewer
    where their X_col would hold more numbers than that (one image at the least)."""
    step = max(1, math.ceil(win.n / DW_CHUNKS))
    if numbers is not None:
        step = max(1, min(step, numbers // max(1, win.k * win.plane)))
    return [slice(n0, min(win.n, n0 + step)) for n0 in range(0, win.n, step)]


def chunk_tasks(win, numbers=None):
    """(images per chunk, tasks) for a kernel whose task p takes the chunks p, p + tasks, ...
    of image_chunks(win, numbers): as many tasks as threads, at most one per chunk."""
    chunks = image_chunks(win, numbers)
    return chunks[0].stop, min(numba.get_num_threads(), len(chunks))


def matmul(a, b):
    """a (M, K) @ b (K, N), its columns split over numba.get_num_threads() threads."""
    m, k = a.shape
    n = b.shape[1]
    threads = min(numba.get_num_threads(), max(1, n // 64))
    if threads == 1 or m * k * n < MIN_SPLIT_TERMS:
        return a @ b
    out = np.empty((m, n), dtype=np.result_type(a, b))
    edges = np.linspace(0, n, threads + 1).astype(int)
    on_threads(lambda cols: np.matmul(a, b[:, cols[0]:cols[1]], out=out[:, cols[0]:cols[1]]),
               list(zip(edges[:-1], edges[1:])))
    return out


def transposed_product(cols, gc, total=None):
    """cols (K, L) @ gc (C_out, L)^T, added into ``total`` (K, C_out) if given: the filter
    gradient's product G X_col^T, transposed. sgemm runs faster with the long side (K)
    as the rows of its output: measured 2026-12-05 on one thread of the 2-core AVX-512
    VM, G X_col^T at 62 / 44 / 39 / 26 G MAC/s for (C_out, K, L) = (64, 576, 512),
    (32, 288, 512), (32, 144, 2048), (16, 144, 2048), X_col G^T at 83 / 68 / 60 / 46."""
    if total is None:
        return cols @ gc.T
    return np.add(total, cols @ gc.T, out=total)



# ------------------------------------------------------------ BLAS from Numba's own threads
# Handing a product from a Numba kernel to Python threads (on_threads) costs: Numba's
# OpenMP workers spin for a while after each kernel (settings.py), on the cores the
# product's threads then want. Measured 2026-12-05 on the 2-core AVX-512 VM, batch 64:
# a stride-2 layer's dW took 1.4 ms alone and 1.9-2.0 ms right after a Numba kernel.
# A Numba kernel can call NumPy's OpenBLAS itself instead, each of its tasks a
# single-threaded gemm, as each Python thread did: no hand-over at all.

CBLAS_ROW_MAJOR, CBLAS_NO_TRANS, CBLAS_TRANS = 101, 111, 112


@functools.lru_cache(maxsize=None)
def kernel_gemm(dtype):
    """NumPy's OpenBLAS cblas_sgemm (float32) or cblas_dgemm (float64) as a ctypes function
    for add_product_nt, or None where NumPy has another BLAS, or one running threads of its
    own that the environment chose (settings.one_blas_thread; then the callers use
    on_threads). A Numba kernel takes it as an argument: its address is read at each call,
    so the kernel stays in Numba's disk cache."""
    letter = {np.dtype(np.float32): "s", np.dtype(np.float64): "d"}.get(np.dtype(dtype))
    if letter is None or not one_blas_thread():     # a BLAS with threads of its own is not called from tasks
        return None
    found = openblas_function((f"scipy_cblas_{letter}gemm64_", f"scipy_cblas_{letter}gemm",
                               f"cblas_{letter}gemm64_", f"cblas_{letter}gemm"))
    if found is None:
        return None
    name, function = found
    size = ctypes.c_int64 if name.endswith("64_") else ctypes.c_int       # ILP64 or LP64
    scalar = ctypes.c_float if letter == "s" else ctypes.c_double
    function.argtypes = [ctypes.c_int] * 3 + [size] * 3 + [scalar, ctypes.c_void_p, size, ctypes.c_void_p, size,
                                                            scalar, ctypes.c_void_p, size]
    function.restype = None
    return function


@njit(nogil=True, cache=True)
def product_into(gemm, a, a_transposed, b, b_transposed, beta, c):
    """c (M, N) = op(a) @ op(b) + beta * c by ``gemm`` (kernel_gemm: one BLAS call on the
    calling thread), op(a) = a.T if ``a_transposed`` else a (likewise b); all three
    C-contiguous (row-major)."""
    k = a.shape[0] if a_transposed else a.shape[1]
    if c.shape[0] == 0 or c.shape[1] == 0:
        return
    if k == 0:
        c *= beta
        return
    gemm(CBLAS_ROW_MAJOR, CBLAS_TRANS if a_transposed else CBLAS_NO_TRANS,
         CBLAS_TRANS if b_transposed else CBLAS_NO_TRANS, c.shape[0], c.shape[1], k, 1.0,
         a.ctypes.data, a.shape[1], b.ctypes.data, b.shape[1], beta, c.ctypes.data, c.shape[1])


@njit(nogil=True, cache=True)
def add_product_nt(gemm, a, b, c):
    """c (M, N) += a (M, K) @ b (N, K)^T by ``gemm`` (product_into)."""
    product_into(gemm, a, False, b, True, 1.0, c)


@njit(nogil=True, fastmath={"reassoc"}, cache=True)
def g_columns(g, n0, n1, gc):
    """gc[t, (n - n0) * P + q] = G[n, t, q] for images n0..n1 of G (N, C_out, P): G's columns
    in X_col's order, for a chunk's products; returns the sums over them per filter t, in
    float64 (the full-precision dW's sum_l G). Their order of addition is free
    ("reassoc"), so that LLVM vectorises them: in order, each add waited on the last, and
    the copy took 16.7 us a chunk of 64 filters x 512 positions, 5.2 us so; dW alone on
    ResNet-20's 32 -> 64 stride-2 layer 0.87-1.04 -> 0.81-0.88 ms, on the 1x1 32 -> 64
    shortcut 0.25-0.29 -> 0.21-0.23 (batch 64, 2 threads, six alternations, 2026-12-07)."""
    sums = np.zeros(g.shape[1], dtype=np.float64)
    plane = g.shape[2]
    for t in range(g.shape[1]):
        total = 0.0
        for n in range(n0, n1):
            src, dst = g[n, t], gc[t, (n - n0) * plane:(n - n0 + 1) * plane]
            for q in range(plane):
                dst[q] = src[q]
                total += src[q]
        sums[t] = total
    return sums
