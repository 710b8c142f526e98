"""How a tiled kernel is launched: the tile, the split of the reduction axis, the launch.

``launch_plan`` chooses, from the output's shape (M, N) and the reduction length R, the
tile (``tiled.TILES``) and how many parts to cut the reduction axis into; ``tiled``
launches the kernel with that plan and, when the axis was split, adds the partial sums
with a second kernel (in a fixed order: deterministic, no atomics).
"""
import functools
import math

from numba import cuda, float32

from .memory import elementwise_launch, scratch
from .streams import current_stream
from .tiled import TILES, VARIANTS, dispatcher


@cuda.jit
def sum_splits_kernel(partials, out):
    """out[m, n] = sum_s partials[s, m, n] (fixed order: deterministic)."""
    splits, m_size, n_size = partials.shape
    start, step = cuda.grid(1), cuda.gridsize(1)
    for idx in range(start, m_size * n_size, step):
        m, n = idx // n_size, idx % n_size
        acc = float32(0.0)
        for s in range(splits):
            acc += partials[s, m, n]
        out[m, n] = acc


@functools.lru_cache(maxsize=None)
def sm_count():
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
    wanted = math.ceil(sm_count() * _THREADS_PER_SM / (tiles * threads_per_block))
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
    op, a_is_mr, b_is_nr, use_c = VARIANTS[variant]
    m_size, n_size = out.shape
    r_size = a.shape[1] if a_is_mr else a.shape[0]
    tile, splits, r_per_split = launch_plan(m_size, n_size, r_size, tile, splits)
    bm, bn, bk, tm, tn = TILES[tile]
    grid_m, grid_n = math.ceil(m_size / bm), math.ceil(n_size / bn)
    if c is None:
        c = out  # never read (use_c is False); any 2-D float32 array types the kernel
    target = out.reshape(1, m_size, n_size) if splits == 1 else \
        scratch("splits", (splits, m_size, n_size))
    kernel = dispatcher(variant, tile)
    kernel[(grid_n, grid_m, splits), (bn // tn, bm // tm), current_stream()](a, b, c, target, r_per_split)
    if splits > 1:
        blocks, threads = elementwise_launch(out.size)
        sum_splits_kernel[blocks, threads, current_stream()](target, out)
    return out

