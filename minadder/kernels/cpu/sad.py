"""The integer adder layer on the CPU: sums of absolute differences of bytes, by vpsadbw.

The same function as int8_reference.py, bit for bit, for uint8 inputs and filters:

    Y[n, t, u, v] = sum_{c,i,j} |Xp[n, c, s*u+i, s*v+j] - W[t, c, i, j]|     (Eq. 2 in integers)

The bytes are laid out 8 per lane group (sad_layout.py): the channels in groups of 8, so
that word g of ``columns`` holds 8 bytes of one output position's receptive field, for a
chunk of consecutive positions, and word g of ``words`` the same 8 bytes of a filter. One
vector of a columns row then holds word g of 8 consecutive positions (4 with AVX2), and
psadbw against filter t's word g, broadcast to every 8-byte group, gives the 8 positions'
partial sums in its 8 lanes: sad_intrinsics.sad_block adds them over g (vpaddq) for a block
of 32 positions x 4 filters, with no sum across lanes, and stores 8 outputs per vector into
``sums`` (C_out, positions of the chunk), copied from there into out image by image. A
task owns a chunk of positions; the tasks run in parallel (prange).

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
from .sad_intrinsics import BLOCK_FILTERS, block_positions, sad_block
from .sad_layout import GROUP, filter_words, gather, padded_pixels, scatter

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

#: positions per block of the portable loops; every chunk is a multiple of CHUNK_MULTIPLE,
#: which every variant's block divides (32 positions with AVX-512, 8 with AVX2)
PORTABLE_POSITIONS, CHUNK_MULTIPLE = 8, 32
#: bytes of gathered columns per task (a chunk of positions x Kp): about half a core's L2,
#: so that they stay in cache while every filter passes; measured (one thread, ResNet-20
#: layers): 16 KiB to 256 KiB all within 10 %
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
def _portable_block(columns, q, tiles, t, sums):
    """sad_block's sums in plain loops that LLVM vectorizes, for PORTABLE_POSITIONS x
    BLOCK_FILTERS, in psadbw's lanes: ``lanes`` holds one int32 sum of |a - b| (int32:
    bytes would wrap around) per byte of the positions' columns, added over g against the
    filter's 8 bytes repeated once per position (``tiles``: portable_tiles); each
    position's 8 lanes are added up at the end."""
    span = GROUP * PORTABLE_POSITIONS
    lanes = np.empty(span, dtype=np.int32)
    for b in range(BLOCK_FILTERS):
        lanes[:] = 0
        for g in range(columns.shape[0]):
            x, f = columns[g, GROUP * q:GROUP * q + span], tiles[t + b, g * span:(g + 1) * span]
            for j in range(span):
                lanes[j] += abs(np.int32(x[j]) - np.int32(f[j]))
        for a in range(PORTABLE_POSITIONS):
            sums[t + b, q + a] = lanes[GROUP * a:GROUP * (a + 1)].sum()


def _block(columns, q, words, t, sums, width):
    """One block of sums with vectors of ``width`` bytes, or the portable loops (width 0).
    Only its compiled form exists (below): Numba picks the code by the literal width."""


@overload(_block)
def _block_for_width(columns, q, words, t, sums, width):
    """Numba calls this while compiling, with the argument types: the width is a literal
    (the kernel asks for that with ``literally``), so the choice costs nothing at run time.
    Numba tries the plain int type first: None sends it on to the literal."""
    if not isinstance(width, types.IntegerLiteral):
        return None
    if width.literal_value == 0:
        return lambda columns, q, words, t, sums, width: _portable_block(columns, q, words, t, sums)
    return lambda columns, q, words, t, sums, width: sad_block(columns, q, words, t, sums, width)


@njit(parallel=True, cache=True)
def _sad_kernel(pixels, words, stride, kh, kw, wo, chunk, step, out, width):
    """out (N, C_out, Ho * Wo) = the integer SAD of the pixels' fields against the filter
    words (the portable loops: their tiles), a chunk of ``chunk`` positions per task:
    gathered into columns, summed block by block (``step`` positions x BLOCK_FILTERS
    filters), copied into out. Numba's on-disk cache of this function is keyed on this
    file alone: after editing sad_layout.py or sad_intrinsics.py, delete
    __pycache__/sad.*.nbi (the old code would still run)."""
    literally(width)                # compile once per width, which picks the block's code
    plane = out.shape[2]
    positions = out.shape[0] * plane
    groups, cout = pixels.shape[1] * kh * kw, words.shape[0]
    for task in prange((positions + chunk - 1) // chunk):
        l0 = task * chunk
        count = min(chunk, positions - l0)
        padded = count + (-count) % CHUNK_MULTIPLE
        columns = np.empty((groups, GROUP * padded), dtype=np.uint8)
        columns[:, GROUP * count:] = 0          # positions past the layer: sums dropped
        sums = np.empty((cout, padded), dtype=np.int32)
        gather(pixels, l0, count, stride, kh, kw, wo, plane, columns.view(np.uint64))
        for q in range(0, padded, step):
            for t in range(0, cout, BLOCK_FILTERS):
                _block(columns, q, words, t, sums, width)
        scatter(sums, l0, count, out)


# One compiled entry per variant: each passes its width as a constant, which Numba types
# as a literal while compiling. (A width passed from Python would make every call ask the
# dispatcher for the literal again: some 20 ms a call.)
@njit(cache=True)
def _sad_avx512bw(pixels, words, stride, kh, kw, wo, chunk, step, out):
    _sad_kernel(pixels, words, stride, kh, kw, wo, chunk, step, out, 64)


@njit(cache=True)
def _sad_avx2(pixels, words, stride, kh, kw, wo, chunk, step, out):
    _sad_kernel(pixels, words, stride, kh, kw, wo, chunk, step, out, 32)


@njit(cache=True)
def _sad_portable(pixels, words, stride, kh, kw, wo, chunk, step, out):
    _sad_kernel(pixels, words, stride, kh, kw, wo, chunk, step, out, 0)


KERNELS = {"avx512bw": _sad_avx512bw, "avx2": _sad_avx2, "portable": _sad_portable}


# --------------------------------------------------------------- the Python functions
def chunk_positions(positions, row_bytes):
    """Positions per task: about CHUNK_BYTES of columns, fewer when that leaves a thread
    idle; a multiple of CHUNK_MULTIPLE."""
    chunk = max(CHUNK_MULTIPLE, CHUNK_BYTES // row_bytes)
    while chunk > CHUNK_MULTIPLE and -(-positions // chunk) < TASKS_PER_THREAD * get_num_threads():
        chunk //= 2
    return max(CHUNK_MULTIPLE, chunk - chunk % CHUNK_MULTIPLE)


def portable_tiles(words):
    """The filter words for _portable_block: each word repeated PORTABLE_POSITIONS times,
    (C_out', Kg * 8 * PORTABLE_POSITIONS) bytes."""
    tiled = np.broadcast_to(words.reshape(words.shape[0], -1, 1, GROUP),
                            (words.shape[0], words.shape[1] // GROUP, PORTABLE_POSITIONS, GROUP))
    return np.ascontiguousarray(tiled).reshape(words.shape[0], -1)


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
    words = filter_words(wq, BLOCK_FILTERS)
    pixels = padded_pixels(np.ascontiguousarray(xq), padding, pad_byte(pad_value))
    name, chunk = variant(), chunk_positions(n * ho * wo, words.shape[1])
    if name == "portable":
        words, step = portable_tiles(words), PORTABLE_POSITIONS
    else:
        step = block_positions(VECTOR_BYTES[name])
    KERNELS[name](pixels, words, stride, kh, kw, wo, chunk, step, out.reshape(n, c_out, ho * wo))
    return out


def sad_linear(xq, wq):
    """Y[n, t] = sum_k |xq[n, k] - wq[t, k]| as int32: the fully connected integer adder layer."""
    xq, wq = np.asarray(xq), np.asarray(wq)
    return sad2d(xq[:, :, None, None], wq[:, :, None, None])[:, :, 0, 0]
