"""The integer adder layer on the CPU: sums of absolute differences of bytes, by vpsadbw.

The same function as int8_reference.py, bit for bit, for uint8 inputs and filters:

    Y[n, t, u, v] = sum_{c,i,j} |Xp[n, c, s*u+i, s*v+j] - W[t, c, i, j]|     (Eq. 2 in integers)

The layout puts the reduction axis k = (c, i, j) in contiguous memory, so that one vector
load takes 64 (or 32) consecutive terms of one sum:

* each output position's receptive field is gathered into one row of bytes (padding
  positions hold ``pad_value``), a chunk of positions at a time (bounded memory);
* each filter is one row of bytes, W reshaped to (C_out, K);
* both are padded with zero bytes to Kp, a multiple of the vector width: a zero in an
  input row meets a zero in a filter row, and |0 - 0| adds nothing, so the sums stay exact;
  the positions and the filters are padded to whole blocks with rows of zeros too (their
  sums are computed and dropped).

Then Y is a "GEMM" of rows against rows with |a - b| in place of a * b, done by
sad_intrinsics.sad_block: 2 input rows x 4 filter rows per call, psadbw on each pair of
vectors (8 per step, each input vector loaded once for 4 filters). A task owns a chunk of
positions; the tasks run in parallel (prange).

Three variants compute the blocks, chosen by ``variant()``:

    "avx512bw"  vpsadbw on 512-bit vectors (64 byte pairs per instruction)
    "avx2"      vpsadbw on 256-bit vectors (32 byte pairs)
    "portable"  plain Numba loops over int32 |a - b| (any CPU, aarch64 included)

A vector variant runs only where the CPU has the instruction *and* Numba compiles for it
(NUMBA_CPU_NAME=haswell compiles for Haswell, which has AVX2 but not AVX-512). Setting
``PREFERRED`` to a variant name (tests do) runs that one instead, if it can run here.
"""
import functools
import platform

import numpy as np
from numba import get_num_threads, literally, njit, prange, types
from numba.extending import overload

from ..geometry import check_window_args, output_size
from ..target import AVX512_CPUS, _named_features
from .sad_intrinsics import BLOCK_FILTERS, BLOCK_ROWS, sad_block

#: the variants, best first, and the bytes of one vector of each (0: no vectors of our own)
VARIANTS = ("avx512bw", "avx2", "portable")
VECTOR_BYTES = {"avx512bw": 64, "avx2": 32, "portable": 0}
#: the x86 feature each vector variant needs
FEATURE = {"avx512bw": "avx512bw", "avx2": "avx2"}
#: None: the best variant that can run here; or a name from VARIANTS (tests set it)
PREFERRED = None

#: LLVM CPU names with AVX-512BW (every AVX-512 core but Xeon Phi's) and with AVX2, used
#: when NUMBA_CPU_NAME names a CPU without listing its features; an unknown name gets the
#: portable code (asking LLVM for an instruction its CPU lacks would stop the process)
AVX512BW_CPUS = AVX512_CPUS - {"knl", "knm"}
AVX2_CPUS = AVX512_CPUS | {
    "haswell", "broadwell", "skylake", "alderlake", "raptorlake", "meteorlake", "arrowlake",
    "arrowlake-s", "lunarlake", "pantherlake", "gracemont", "sierraforest", "grandridge",
    "clearwaterforest", "znver1", "znver2", "znver3", "x86-64-v3", "bdver4", "core-avx2",
}
CPUS_WITH = {"avx512bw": AVX512BW_CPUS, "avx2": AVX2_CPUS}

#: row length multiple: one 512-bit vector (also two 256-bit ones)
ROW_MULTIPLE = 64
#: bytes of gathered rows per task (a chunk of positions x Kp): about half a core's L2, so
#: that the rows stay in cache while every filter passes; chosen by hand, not re-measured
CHUNK_BYTES = 1 << 17
#: tasks per thread at least, so that no thread idles at the end; chosen by hand, not re-measured
TASKS_PER_THREAD = 4


# ------------------------------------------------------------------ which variant runs
def _x86():
    return platform.machine().lower() in ("x86_64", "amd64")


def host_has(feature):
    """Whether this CPU (and its operating system) offers an x86 feature, as LLVM sees it."""
    import llvmlite.binding as ll
    return bool(ll.get_host_cpu_features().get(feature, False))


def compiled_for(feature):
    """Whether Numba compiles for a CPU with this feature: the features of its code
    generator when it names them, else (a CPU named by NUMBA_CPU_NAME, with no
    features of its own) the named CPU's, from the tables above."""
    import numba
    from numba.core.registry import cpu_target
    codegen = cpu_target.target_context.codegen()
    named_cpu = numba.config.CPU_NAME not in (None, "", "host")
    # a named CPU without NUMBA_CPU_FEATURES is paired with the host's features by Numba:
    # the name is what was asked for (target.py, named_cpu_features)
    features = {} if named_cpu and numba.config.CPU_FEATURES is None else _named_features(codegen._tm_features)
    if feature in features:
        return features[feature]
    return codegen._get_host_cpu_name() in CPUS_WITH[feature]


@functools.lru_cache(maxsize=None)
def available():
    """The variants that can run here, best first; "portable" always can. Asked once: the
    CPU and the target Numba compiles for stay as they are for the whole process."""
    if not _x86():
        return ("portable",)
    return tuple(v for v in VARIANTS if v == "portable" or (host_has(FEATURE[v]) and compiled_for(FEATURE[v])))


def variant():
    """The variant sad2d and sad_linear run: PREFERRED if set, else the best available."""
    here = available()
    if PREFERRED is None:
        return here[0]
    if PREFERRED not in here:
        raise ValueError(f"minadder/kernels/cpu/sad.py: PREFERRED = {PREFERRED!r} cannot run here "
                         f"(available: {', '.join(here)})")
    return PREFERRED


# ------------------------------------------------------------------------ the kernel
@njit(cache=True)
def _gather(xq, l, stride, padding, pad, kh, kw, ho, wo, row):
    """row[k] = Xp[n, c, s*u + i, s*v + j] for k = (c, i, j), the receptive field of output
    position l = (n, u, v); pad where the window leaves the image. row[K:] is left as it is."""
    plane = ho * wo
    n, p = l // plane, l % plane
    u, v = p // wo, p % wo
    h, w = xq.shape[2], xq.shape[3]
    k = 0
    for c in range(xq.shape[1]):
        for i in range(kh):
            y = u * stride + i - padding
            for j in range(kw):
                x = v * stride + j - padding
                row[k] = xq[n, c, y, x] if 0 <= y < h and 0 <= x < w else pad
                k += 1


@njit(cache=True)
def _portable_block(rows, r, filters, t, sums):
    """sad_block's block in plain loops: sums[a * BLOCK_FILTERS + b] = sum_k |rows[r + a, k]
    - filters[t + b, k]|, each difference in int32 (bytes would wrap around)."""
    for a in range(BLOCK_ROWS):
        x = rows[r + a]
        for b in range(BLOCK_FILTERS):
            f = filters[t + b]
            total = np.int32(0)
            for k in range(x.shape[0]):
                total += abs(np.int32(x[k]) - np.int32(f[k]))
            sums[a * BLOCK_FILTERS + b] = total


def _block(rows, r, filters, t, sums, width):
    """One block of sums with vectors of ``width`` bytes, or the portable loops (width 0).
    Only its compiled form exists (below): Numba picks the code by the literal width."""


@overload(_block)
def _block_for_width(rows, r, filters, t, sums, width):
    """Numba calls this while compiling, with the argument types: the width is a literal
    (the kernel asks for that with ``literally``), so the choice costs nothing at run time.
    Numba tries the plain int type first: None sends it on to the literal."""
    if not isinstance(width, types.IntegerLiteral):
        return None
    if width.literal_value == 0:
        return lambda rows, r, filters, t, sums, width: _portable_block(rows, r, filters, t, sums)
    return lambda rows, r, filters, t, sums, width: sad_block(rows, r, filters, t, sums, width)


@njit(cache=True)
def _chunk_sads(rows, count, l0, filters, c_out, ho, wo, out, width):
    """out[n, t, u, v] for the ``count`` positions l0 .. whose gathered rows are ``rows``,
    and every filter: block after block; the padding rows' sums are dropped."""
    plane = ho * wo
    sums = np.empty(BLOCK_ROWS * BLOCK_FILTERS, dtype=np.int64)
    for r in range(0, count, BLOCK_ROWS):
        for t in range(0, c_out, BLOCK_FILTERS):
            _block(rows, r, filters, t, sums, width)
            for a in range(min(BLOCK_ROWS, count - r)):
                n, p = (l0 + r + a) // plane, (l0 + r + a) % plane
                for b in range(min(BLOCK_FILTERS, c_out - t)):
                    out[n, t + b, p // wo, p % wo] = sums[a * BLOCK_FILTERS + b]


@njit(parallel=True, cache=True)
def _sad_kernel(xq, filters, c_out, stride, padding, pad, kh, kw, chunk, out, width):
    """out = the integer SAD of xq against the filter rows (C_out padded, Kp), a chunk of
    ``chunk`` positions per task: gathered into zeroed rows, then summed block by block."""
    literally(width)                # compile once per width, which picks the block's code
    ho, wo = out.shape[2], out.shape[3]
    positions = out.shape[0] * ho * wo
    for task in prange((positions + chunk - 1) // chunk):
        l0 = task * chunk
        count = min(chunk, positions - l0)
        rows = np.zeros((count + (-count) % BLOCK_ROWS, filters.shape[1]), dtype=np.uint8)
        for q in range(count):
            _gather(xq, l0 + q, stride, padding, pad, kh, kw, ho, wo, rows[q])
        _chunk_sads(rows, count, l0, filters, c_out, ho, wo, out, width)


# --------------------------------------------------------------- the Python functions
def filter_rows(wq):
    """The filters as rows (C_out rounded up to BLOCK_FILTERS, Kp) of bytes, zero-padded;
    Kp is K = C*kh*kw rounded up to ROW_MULTIPLE (at least one vector)."""
    c_out, k = wq.shape[0], int(np.prod(wq.shape[1:]))
    kp = max(ROW_MULTIPLE, -(-k // ROW_MULTIPLE) * ROW_MULTIPLE)
    rows = np.zeros((c_out + (-c_out) % BLOCK_FILTERS, kp), dtype=np.uint8)
    rows[:c_out, :k] = wq.reshape(c_out, k)
    return rows


def chunk_positions(positions, row_bytes):
    """Positions per task: about CHUNK_BYTES of rows, fewer when that leaves a thread idle;
    a whole number of blocks."""
    chunk = max(BLOCK_ROWS, CHUNK_BYTES // row_bytes)
    while chunk > BLOCK_ROWS and -(-positions // chunk) < TASKS_PER_THREAD * get_num_threads():
        chunk //= 2
    return max(BLOCK_ROWS, chunk - chunk % BLOCK_ROWS)


def pad_byte(pad_value):
    """pad_value as the reference's np.pad writes it into uint8 (300 -> 44, -1 -> 255)."""
    return np.pad(np.zeros(1, dtype=np.uint8), 1, constant_values=pad_value)[0]


def checked_codes(xq, wq, stride, padding):
    """xq and wq as arrays, refused with int8_reference.sad2d's errors where it names them
    (not uint8; channels that differ) and with check_window_args' elsewhere."""
    xq, wq = np.asarray(xq), np.asarray(wq)
    if xq.dtype != np.uint8 or wq.dtype != np.uint8:
        raise TypeError(f"sad2d: inputs and filters must be uint8, got {xq.dtype} and {wq.dtype}")
    if xq.ndim == wq.ndim == 4 and wq.shape[1] != xq.shape[1]:
        raise ValueError(f"sad2d: filters have {wq.shape[1]} channels, inputs {xq.shape[1]}")
    check_window_args("sad2d", xq.shape, wq.shape, stride, padding)
    return xq, wq


def sad2d(xq, wq, stride=1, padding=0, pad_value=0):
    """Y[n, t, u, v] = sum_{c,i,j} |Xp[n, c, s*u+i, s*v+j] - W[t, c, i, j]| as int32, for uint8
    xq (N, C, H, W) and wq (C_out, C, kh, kw); Xp is xq padded with ``pad_value``.
    As int8_reference.sad2d, bit for bit, by the variant ``variant()`` names."""
    xq, wq = checked_codes(xq, wq, stride, padding)
    (n, _, h, w), (c_out, _, kh, kw) = xq.shape, wq.shape
    ho, wo = output_size(h, kh, stride, padding), output_size(w, kw, stride, padding)
    out = np.empty((n, c_out, ho, wo), dtype=np.int32)
    if out.size == 0:
        return out
    filters = filter_rows(wq)
    chunk = chunk_positions(n * ho * wo, filters.shape[1])
    _sad_kernel(np.ascontiguousarray(xq), filters, c_out, stride, padding, pad_byte(pad_value),
                kh, kw, chunk, out, VECTOR_BYTES[variant()])
    return out


def sad_linear(xq, wq):
    """Y[n, t] = sum_k |xq[n, k] - wq[t, k]| as int32: the fully connected integer adder layer."""
    xq, wq = np.asarray(xq), np.asarray(wq)
    return sad2d(xq[:, :, None, None], wq[:, :, None, None])[:, :, 0, 0]
