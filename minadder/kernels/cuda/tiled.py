"""The tiled l1 "GEMM" template of the cuda backend and its seven variants.

One template, ``make_tiled_kernel``, instantiated seven times (X_col (K, L), W (C_out, K),
G (C_out, L)):

      forward        Y[t, l]  = -sum_k |X_col[k, l] - W[t, k]|                 (Eq. 2)
      forward l2     Y[t, l]  = -sum_k (X_col[k, l] - W[t, k])^2               (Eq. 27)
      dX full        dX[k, l] =  sum_t G[t, l] * HT(W[t, k] - X_col[k, l])       (Eq. 6)
      dX sign        dX[k, l] =  sum_t G[t, l] * sgn(W[t, k] - X_col[k, l])
      dW sign        dW[t, k] =  sum_l G[t, l] * sgn(X_col[k, l] - W[t, k])      (Eq. 4)
      product        P[t, k]  =  sum_l G[t, l] * X_col[k, l]
      product W^T G  Q[k, l]  =  sum_t W[t, k] * G[t, l]      (the l2 layer's dX, columns.py)

and dW in full mode (Eq. 5) is the matrix-product identity
dW = G @ X_col.T - W * G.sum(axis=1): the product kernel, a row sum and an update
(``columns.py``).

The template is a classic shared-memory, register-blocked GEMM with the multiply-add
replaced by an ``op``: a block computes a BM x BN tile of the output, stepping through
the reduction axis BK at a time; each step stages a BK x BM tile of A and a BK x BN tile
of B in shared memory, and each thread accumulates a TM x TN sub-tile in registers.
When the output has too few tiles to fill the GPU, the reduction axis is split over
``blockIdx.z`` (``launch.py`` chooses the tile and the split and adds the parts).

Pitfalls. In numba.cuda, float32 plus a Python int is float64, and from there the kernel
runs at FP64 speed: every constant below is ``float32(...)`` and no index ever meets a
float. Signed array indices get a negative-index fix-up each, so the tiled kernels index
with unsigned integers (see ``make_tiled_kernel``). The PTX tests (tests/test_cuda.py)
check both: no float64 and no local memory in any kernel.
"""
import numpy as np
from numba import cuda, float32


# The ops: acc <- op(acc, a, b, c) with a from A[r, m], b from B[r, n], c = C[m, n].
# Padding a tile with a = b = 0 must add nothing: op(acc, 0, 0, c) == acc for each of them.
@cuda.jit(device=True, inline=True)
def _op_l1(acc, w, x, unused):
    """Forward, Eq. 2: acc - |x - w|."""
    return acc - abs(x - w)


@cuda.jit(device=True, inline=True)
def _op_l2(acc, w, x, unused):
    """Forward of the l2 layer, Eq. 27: acc - (x - w)^2 (the definition itself: on the
    GPU it costs what the l1 term costs, and it has none of Eq. 28's cancellation)."""
    d = x - w
    return acc - d * d


@cuda.jit(device=True, inline=True)
def _or_nan(z, value):
    """value, or z where z is NaN: a select (setp.nan, selp), not a branch.

    On the GPU, min and max are fminf and fmaxf, which return the other operand of a NaN,
    and every comparison with a NaN is false: HT and sgn below would turn a NaN into a
    number where the reference (np.clip, np.sign) keeps it. (The simulator runs Python's
    min and max, which happen to keep it: only a real GPU shows the difference.)
    """
    return z if z != z else value


@cuda.jit(device=True, inline=True)
def _op_hardtanh_input(acc, w, g, x):
    """dX full, Eq. 6: acc + g * HT(w - x), HT(z) = min(1, max(-1, z)), HT(NaN) = NaN."""
    z = w - x
    return acc + g * _or_nan(z, min(max(z, float32(-1.0)), float32(1.0)))


@cuda.jit(device=True, inline=True)
def _sgn(z):
    """sgn(z) with sgn(0) = 0 and sgn(NaN) = NaN, as the reference's np.sign.

    (z > 0) - (z < 0) in float32: comparisons that set 1.0 or 0.0, no branch (an if/else
    here compiles to a branch per multiply-add, three times slower).
    """
    return _or_nan(z, float32(z > float32(0.0)) - float32(z < float32(0.0)))


@cuda.jit(device=True, inline=True)
def _op_sign_input(acc, w, g, x):
    """dX sign: acc + g * sgn(w - x)."""
    return acc + g * _sgn(w - x)


@cuda.jit(device=True, inline=True)
def _op_sign_weight(acc, g, x, w):
    """dW sign, Eq. 4: acc + g * sgn(x - w)."""
    return acc + g * _sgn(x - w)


@cuda.jit(device=True, inline=True)
def _op_mul(acc, g, x, unused):
    """The product G @ X_col.T of the full-mode dW identity (Eq. 5)."""
    return acc + g * x


U = np.uint64  # index type of the tiled kernels (see make_tiled_kernel)

#: variant -> (op, A stored as (M, R)?, B stored as (N, R)?, uses C?)
#: "stored as (M, R)" means A's reduction index is its last, contiguous axis.
VARIANTS = {
    #                  op                   A is (M,R)  B is (N,R)  C
    "forward":       (_op_l1,              True,       False,      False),  # A=W, B=X_col
    "forward_l2":    (_op_l2,              True,       False,      False),
    "dx_full":       (_op_hardtanh_input,  False,      False,      True),   # A=W, B=G, C=X_col
    "dx_sign":       (_op_sign_input,      False,      False,      True),
    "dw_sign":       (_op_sign_weight,     True,       True,       True),   # A=G, B=X_col, C=W
    "product":       (_op_mul,             True,       True,       False),  # A=G, B=X_col
    "product_wg":    (_op_mul,             False,      False,      False),  # A=W, B=G
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


def make_tiled_kernel(name, op, a_is_mr, b_is_nr, use_c, tile):
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
    op, a_is_mr, b_is_nr, use_c = VARIANTS[variant]
    return make_tiled_kernel(variant, op, a_is_mr, b_is_nr, use_c, TILES[tile_name])


def dispatcher(variant, tile_name):
    """The compiled kernel of one variant and tile (cuda.jit, built on first use)."""
    key = (variant, tile_name)
    if key not in _compiled:
        _compiled[key] = cuda.jit(tiled_kernel_source(variant, tile_name))
    return _compiled[key]
