"""The register blocks of the forward and of dX (kernels/cpu/register_block.py): their
sums equal the definitions, and their compiled loops keep every accumulator in a register;
the packed forward's vector copy (copy_vector, positions.copy_runs) copies what field_row does."""
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("numba")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from numba import literally, njit, types  # noqa: E402

from minadder.kernels.cpu.register_block import (BLOCK_CHANNELS, BLOCK_VECTORS, CLIP_ROWS, CLIP_VECTORS, COLUMN_CHANNELS,  # noqa: E402
                                                 COLUMN_ROWS, DOT_FILTERS, DOT_ROWS, NARROW_FILTERS, clip_rows_into,
                                                 dot_sums_registers, min_sums_registers, narrow_dot_sums_registers,
                                                 plain_rows_into, prefetch,
                                                 product_rows_into, product_sums_registers, SIGN_FILTERS,
                                                 SIGN_ROWS, merge_pairs, sign_sums_registers, split_pairs,
                                                 vector_length)
from minadder.kernels.cpu import frame, grad_input  # noqa: E402
from minadder.kernels.cpu.frame import SLACK, VECTOR  # noqa: E402
from minadder.kernels.cpu.positions import add_field_row_spread, copy_runs, field_row, run_vectors, segments  # noqa: E402
from minadder.kernels.target import TARGET  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from inspect_asm import innermost, loops, mix  # noqa: E402  (benchmarks/inspect_asm.py: the loop finder)

X86 = platform.machine().lower() in ("x86_64", "amd64")


@njit
def one_block(src, koff, base, wsh, t0, k0, nk, q, acc):
    min_sums_registers(src, koff, base, wsh, t0, k0, nk, q, acc, BLOCK_CHANNELS, BLOCK_VECTORS)


@njit
def one_vector_block(src, koff, base, wsh, t0, k0, nk, q, acc):
    min_sums_registers(src, koff, base, wsh, t0, k0, nk, q, acc, BLOCK_CHANNELS, 1)


@njit
def column_block(src, koff, base, wsh, t0, k0, nk, q, acc):
    min_sums_registers(src, koff, base, wsh, t0, k0, nk, q, acc, COLUMN_CHANNELS, 1)


@njit
def product_column_block(src, koff, base, wsh, t0, k0, nk, q, acc):
    product_sums_registers(src, koff, base, wsh, t0, k0, nk, q, acc, COLUMN_CHANNELS, 1)


@njit
def product_block(src, koff, base, wsh, t0, k0, nk, q, acc):
    product_sums_registers(src, koff, base, wsh, t0, k0, nk, q, acc, BLOCK_CHANNELS, BLOCK_VECTORS)


@njit
def product_vector_block(src, koff, base, wsh, t0, k0, nk, q, acc):
    product_sums_registers(src, koff, base, wsh, t0, k0, nk, q, acc, BLOCK_CHANNELS, 1)


def definition(src, koff, base, wsh, t0, k0, nk, q, acc, positions, product=False, channels=BLOCK_CHANNELS):
    """acc plus sum_kk min(src row kk, wsh[t, k0 + kk]) (or their products) on the block, in float64."""
    out = acc.astype(np.float64)
    for r in range(channels):
        for kk in range(nk):
            row = src[base + koff[kk] + q:base + koff[kk] + q + positions].astype(np.float64)
            w = float(wsh[t0 + r, k0 + kk])
            out[t0 + r, q:q + positions] += row * w if product else np.minimum(row, w)
    return out


@settings(deadline=None, max_examples=30)
@given(dtype=st.sampled_from([np.float32, np.float64]), nk=st.integers(0, 9), t0=st.integers(0, 3),
       k0=st.integers(0, 5), q=st.integers(0, 7), base=st.integers(0, 11),
       shape=st.sampled_from(["block", "vector", "column"]), product=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_block_adds_its_min_sums_to_the_accumulators(dtype, nk, t0, k0, q, base, shape, product, seed):
    """Only the block's channels x positions change, each by the definition's sum; the
    rows start anywhere (unaligned offsets), the accumulators keep what they held. The
    whole block (MR channels x BLOCK_VECTORS vectors) and the two blocks of the positions
    left over (MR x 1 vector, COLUMN_CHANNELS x 1); mins (l1) and products (l2)."""
    rng = np.random.default_rng(seed)
    itemsize = np.dtype(dtype).itemsize
    channels = COLUMN_CHANNELS if shape == "column" else BLOCK_CHANNELS
    positions = (BLOCK_VECTORS if shape == "block" else 1) * vector_length(itemsize)
    koff = rng.permutation(np.arange(nk) * 3 + rng.integers(0, 3, nk)).astype(np.int64)
    src = rng.standard_normal(base + 3 * nk + 3 + q + positions).astype(dtype)
    wsh = rng.standard_normal((t0 + channels + 1, k0 + nk + 2)).astype(dtype)
    acc = rng.standard_normal((t0 + channels + 2, q + positions + 5)).astype(dtype)
    expected = definition(src, koff, base, wsh, t0, k0, nk, q, acc, positions, product, channels)
    blocks = {("block", False): one_block, ("vector", False): one_vector_block, ("column", False): column_block,
              ("block", True): product_block, ("vector", True): product_vector_block,
              ("column", True): product_column_block}
    blocks[shape, product](src, koff, base, wsh, t0, k0, nk, q, acc)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(acc, expected, rtol=rtol, atol=rtol * (nk + 1) * 4)


def float32_asm(function):
    """The assembly of ``function``'s float32 version (the Hypothesis tests above may have
    compiled a float64 one first)."""
    signature, = [sig for sig in function.signatures if sig[0].dtype == types.float32]
    return function.inspect_asm(signature)


def hot_loop(function, instruction="vminp"):
    """The one innermost loop of ``function``'s float32 code that holds ``instruction``."""
    asm = float32_asm(function)
    hot = [body for body in filter(innermost, loops(asm)) if any(k.startswith(instruction) for k in mix(body))]
    assert len(hot) == 1, asm[-3000:]
    return hot[0]


@pytest.mark.skipif(not X86 or TARGET.vector_bits not in (256, 512), reason="checks x86 vector code")
def test_block_loop_keeps_its_accumulators_in_registers():
    """The loop over k: per step BLOCK_VECTORS loads of X, BLOCK_CHANNELS broadcasts and
    MR x NV mins and adds on the target's vectors, and no stack access (no spill). A fresh
    compile (the njit above has no cache): Numba keeps no assembly of cached code."""
    register = {512: "zmm", 256: "ymm"}[TARGET.vector_bits]
    positions = BLOCK_VECTORS * vector_length(4)
    acc = np.zeros((BLOCK_CHANNELS, positions), np.float32)
    one_block(np.ones(positions + 8, np.float32), np.arange(4), 0, np.zeros((BLOCK_CHANNELS, 4), np.float32), 0, 0, 4, 0, acc)
    np.testing.assert_array_equal(acc, 0)
    body = hot_loop(one_block)
    counts, terms = mix(body), BLOCK_CHANNELS * BLOCK_VECTORS
    assert counts[f"vminps {register}"] == terms and counts[f"vaddps {register}"] == terms, counts
    assert counts[f"vbroadcastss {register}"] == BLOCK_CHANNELS, counts
    assert not [line for line in body if "%rsp" in line], body


@pytest.mark.skipif(not X86 or TARGET.vector_bits not in (256, 512), reason="checks x86 vector code")
def test_column_block_loop_keeps_its_accumulators_in_registers():
    """The block of the positions left over: per step one load of X, COLUMN_CHANNELS
    broadcasts, mins and adds, and no spill."""
    register = {512: "zmm", 256: "ymm"}[TARGET.vector_bits]
    lanes = vector_length(4)
    acc = np.zeros((COLUMN_CHANNELS, lanes), np.float32)
    column_block(np.ones(lanes + 8, np.float32), np.arange(4), 0, np.zeros((COLUMN_CHANNELS, 4), np.float32),
                 0, 0, 4, 0, acc)
    np.testing.assert_array_equal(acc, 0)
    body = hot_loop(column_block)
    counts = mix(body)
    assert counts[f"vminps {register}"] == COLUMN_CHANNELS == counts[f"vaddps {register}"], counts
    # each weight broadcast by vbroadcastss, or by the min's own operand (AVX-512's {1to16})
    embedded = sum("{1to" in line for line in body)
    assert counts[f"vbroadcastss {register}"] + embedded == COLUMN_CHANNELS, body
    # no vector register goes to the stack (the 16 rows' weight pointers may: with
    # AVX-512 some are reloaded, a load each beside 32 vector operations)
    assert not [line for line in body if "%rsp" in line and register in line], body


@njit
def clip_block(src, koff, k0, wk, g, gs, q, one, plane, shift):
    clip_rows_into(src, koff, k0, wk, g, gs, q, one, plane, shift, CLIP_ROWS, CLIP_VECTORS)


@njit
def clip_row_vector(src, koff, k0, wk, g, gs, q, one, plane, shift):
    clip_rows_into(src, koff, k0, wk, g, gs, q, one, plane, shift, 1, 1)


@njit
def clip_column(src, koff, k0, wk, g, gs, q, one, plane, shift):
    clip_rows_into(src, koff, k0, wk, g, gs, q, one, plane, shift, COLUMN_ROWS, 1)


@njit
def product_column(src, koff, k0, wk, g, gs, q, one, plane, shift):
    product_rows_into(src, koff, k0, wk, g, gs, q, one, plane, shift, COLUMN_ROWS, 1)


@njit
def plain_column(src, koff, k0, wk, g, gs, q, one, plane, shift):
    plain_rows_into(src, koff, k0, wk, g, gs, q, one, plane, shift, COLUMN_ROWS, 1)


@njit
def product_rows(src, koff, k0, wk, g, gs, q, one, plane, shift):
    product_rows_into(src, koff, k0, wk, g, gs, q, one, plane, shift, CLIP_ROWS, CLIP_VECTORS)


@njit
def plain_rows(src, koff, k0, wk, g, gs, q, one, plane, shift):
    plain_rows_into(src, koff, k0, wk, g, gs, q, one, plane, shift, CLIP_ROWS, CLIP_VECTORS)


@settings(deadline=None, max_examples=30)
@given(dtype=st.sampled_from([np.float32, np.float64]), n_t=st.integers(0, 9), k0=st.integers(0, 3),
       q=st.integers(0, 7), shift=st.integers(0, 4), one=st.sampled_from([1.0, 0.5]),
       shape=st.sampled_from(["block", "single", "column"]), kind=st.sampled_from(["clip", "product", "plain"]),
       seed=st.integers(0, 2**31 - 1))
def test_clip_block_adds_rows_of_dx_col_into_the_plane(dtype, n_t, k0, q, shift, one, shape, kind, seed):
    """plane[koff[k] - shift + q + j] += sum_t g[t, q + j] clip(wk[k, t], x - one, x + one)
    - x gs[q + j] for the block's rows k (Eq. 6 in the shifted frame, col2im fused); rows
    one position apart overlap in the plane and both add; the rest of the plane untouched.
    The full block, the COLUMN_ROWS x 1 block of the positions left over and the 1 x 1
    block of what is left of both; without the clip (product_rows_into, the l2 layer:
    sum_t g w - x gs) and without "- x gs" too (plain_rows_into, the convolution: sum_t
    g w, src and gs not read: NaN there)."""
    rng = np.random.default_rng(seed)
    shape = "block" if shape == "single" and kind != "clip" else shape
    rows, vectors = {"block": (CLIP_ROWS, CLIP_VECTORS), "single": (1, 1), "column": (COLUMN_ROWS, 1)}[shape]
    positions = vectors * vector_length(np.dtype(dtype).itemsize)
    koff = (shift + rng.integers(0, 3, k0 + rows + 1)).astype(np.int64)      # rows may start at one place
    src = rng.standard_normal(shift + 3 + q + positions).astype(dtype)
    wk = rng.standard_normal((k0 + rows + 1, n_t)).astype(dtype)
    g = rng.standard_normal((n_t, q + positions + 3)).astype(dtype)
    gs = rng.standard_normal(q + positions + 1).astype(dtype)
    plane = rng.standard_normal(3 + q + positions + 2).astype(dtype)
    expected = plane.astype(np.float64)
    for r in range(rows):
        start = koff[k0 + r] + q
        x = src[start:start + positions].astype(np.float64)
        weights = np.broadcast_to(wk[k0 + r].astype(np.float64)[:, None], (n_t, positions))
        clipped = np.clip(weights, x - one, x + one) if kind == "clip" else weights      # (n_t, positions)
        row = (g[:, q:q + positions] * clipped).sum(axis=0)
        if kind != "plain":
            row -= x * gs[q:q + positions]
        expected[start - shift:start - shift + positions] += row
    if kind == "plain":
        src[:], gs[:] = np.nan, np.nan
    blocks = {("block", "clip"): clip_block, ("single", "clip"): clip_row_vector, ("column", "clip"): clip_column,
              ("block", "product"): product_rows, ("column", "product"): product_column,
              ("block", "plain"): plain_rows, ("column", "plain"): plain_column}
    blocks[shape, kind](src, koff, k0, wk, g, gs, q, dtype(one), plane, shift)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(plane, expected, rtol=rtol, atol=rtol * (n_t + 2) * 8)


@pytest.mark.skipif(not X86 or TARGET.vector_bits not in (256, 512), reason="checks x86 vector code")
def test_clip_block_loop_keeps_its_sums_and_bounds_in_registers():
    """dX's loop over t: a max, a min and a multiply-add per number of the block, a
    broadcast weight per row, and no stack access."""
    register = {512: "zmm", 256: "ymm"}[TARGET.vector_bits]
    positions = CLIP_VECTORS * vector_length(4)
    plane = np.zeros(positions + 4, np.float32)
    clip_block(np.ones(positions + 8, np.float32), np.arange(CLIP_ROWS), 0, np.zeros((CLIP_ROWS, 3), np.float32),
               np.zeros((3, positions), np.float32), np.zeros(positions, np.float32), 0, np.float32(1), plane, 0)
    np.testing.assert_array_equal(plane, 0)
    body = hot_loop(clip_block, "vmaxp")
    counts, terms = mix(body), CLIP_ROWS * CLIP_VECTORS
    fmas = sum(v for key, v in counts.items() if key.startswith("vfmadd") and key.endswith(register))
    assert counts[f"vmaxps {register}"] == counts[f"vminps {register}"] == fmas == terms, counts
    assert counts[f"vbroadcastss {register}"] == CLIP_ROWS, counts
    assert not [line for line in body if "%rsp" in line], body


@pytest.mark.skipif(not X86 or TARGET.vector_bits not in (256, 512), reason="checks x86 vector code")
def test_clip_column_loop_keeps_its_sums_and_bounds_in_registers():
    """The block of the positions left over: COLUMN_ROWS numbers, each a max, a min and a
    multiply-add per filter, with their sums and bounds in registers (no vector register
    on the stack)."""
    register = {512: "zmm", 256: "ymm"}[TARGET.vector_bits]
    lanes = vector_length(4)
    plane = np.zeros(lanes + COLUMN_ROWS + 4, np.float32)
    clip_column(np.ones(lanes + COLUMN_ROWS + 8, np.float32), np.arange(COLUMN_ROWS), 0,
                np.zeros((COLUMN_ROWS, 3), np.float32), np.zeros((3, lanes), np.float32), np.zeros(lanes, np.float32),
                0, np.float32(1), plane, 0)
    np.testing.assert_array_equal(plane, 0)
    body = hot_loop(clip_column, "vmaxp")
    counts = mix(body)
    fmas = sum(v for key, v in counts.items() if key.startswith("vfmadd") and key.endswith(register))
    assert counts[f"vmaxps {register}"] == counts[f"vminps {register}"] == fmas == COLUMN_ROWS, counts
    assert not [line for line in body if "%rsp" in line and register in line], body


def lane_sums(sums, src, koff, k0, g, t0, count, n0, n1, filters, rows, d):
    """sums plus, lane by lane, sum_n sum_v G[n, t0 + i] * d(X[n, k0 + j], i, j) over the
    block and the images n0..n1, in float64."""
    lanes = sums.shape[1]
    expected = sums.astype(np.float64)
    for n in range(n0, n1):
        for i in range(filters):
            for j in range(rows):
                x = src[n, koff[k0 + j]:koff[k0 + j] + count * lanes].astype(np.float64)
                expected[i * rows + j] += (g[n, t0 + i, :count * lanes] * d(x, i, j)).reshape(count, lanes).sum(axis=0)
    return expected


def lane_case(rng, dtype, count, k0, t0, images, filters, rows, draw):
    """src (images, size), koff, g (images, filters + ..., positions), sums for a block test."""
    lanes = vector_length(np.dtype(dtype).itemsize)
    koff = rng.integers(0, 7, k0 + rows + 1).astype(np.int64)
    src = draw((images, 7 + count * lanes + 5)).astype(dtype)
    g = rng.standard_normal((images, t0 + filters + 1, count * lanes + 3)).astype(dtype)
    sums = rng.standard_normal((filters * rows, lanes)).astype(dtype)
    return koff, src, g, sums


@njit
def dot_block(src, koff, k0, g, t0, count, sums, n0, n1):
    dot_sums_registers(src, koff, k0, g, t0, count, g[0], sums, n0, n1)     # (w is not read: any array of the dtype)


@njit
def narrow_dot_block(src, koff, k0, g, t0, count, sums, n0, n1):
    narrow_dot_sums_registers(src, koff, k0, g, t0, count, g[0], sums, n0, n1)


@settings(deadline=None, max_examples=25)
@given(dtype=st.sampled_from([np.float32, np.float64]), count=st.integers(0, 5), k0=st.integers(0, 3),
       t0=st.integers(0, 3), images=st.integers(1, 3), narrow=st.booleans(), data=st.data(),
       seed=st.integers(0, 2**31 - 1))
def test_dot_block_adds_lane_wise_dot_products(dtype, count, k0, t0, images, narrow, data, seed):
    """sums[i * DOT_ROWS + j, lane] += sum_n sum_v G[n, t0 + i, v L + lane] X'[n, k0 + j, v L
    + lane] over the images n0..n1 (none, one or several): summed over its lanes, each row
    of sums gains one entry of G X'^T (Eq. 5's product). The same for the narrow block
    of the filters left over."""
    rng = np.random.default_rng(seed)
    n0 = data.draw(st.integers(0, images))
    n1 = data.draw(st.integers(n0, images))
    filters, block = (NARROW_FILTERS, narrow_dot_block) if narrow else (DOT_FILTERS, dot_block)
    koff, src, g, sums = lane_case(rng, dtype, count, k0, t0, images, filters, DOT_ROWS, rng.standard_normal)
    expected = lane_sums(sums, src, koff, k0, g, t0, count, n0, n1, filters, DOT_ROWS, lambda x, i, j: x)
    block(src, koff, k0, g, t0, count, sums, n0, n1)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(sums, expected, rtol=rtol, atol=rtol * (images * count + 1) * 8)


@pytest.mark.skipif(not X86 or TARGET.vector_bits not in (256, 512), reason="checks x86 vector code")
def test_dot_block_loop_is_loads_and_multiply_adds():
    """dW's loop over vectors of positions: DOT_FILTERS + DOT_ROWS loads and one FMA per
    sum, no stack access."""
    register = {512: "zmm", 256: "ymm"}[TARGET.vector_bits]
    lanes = vector_length(4)
    sums = np.zeros((DOT_FILTERS * DOT_ROWS, lanes), np.float32)
    dot_block(np.ones((1, 8 * lanes), np.float32), np.arange(DOT_ROWS), 0, np.zeros((1, DOT_FILTERS, 4 * lanes), np.float32),
              0, 4, sums, 0, 1)
    np.testing.assert_array_equal(sums, 0)
    body = hot_loop(dot_block, "vfmadd")
    counts = mix(body)
    fmas = sum(v for key, v in counts.items() if key.startswith("vfmadd") and key.endswith(register))
    loads = counts[f"vmovups {register}"] + sum(1 for line in body if line.lstrip().startswith("vfmadd") and "(" in line)
    assert fmas == DOT_FILTERS * DOT_ROWS and loads >= DOT_FILTERS, counts
    assert not [line for line in body if "%rsp" in line], body


@njit
def sign_block(src, koff, k0, g, t0, count, w, sums, n0, n1):
    sign_sums_registers(src, koff, k0, g, t0, count, w, sums, n0, n1)


@settings(deadline=None, max_examples=25)
@given(dtype=st.sampled_from([np.float32, np.float64]), count=st.integers(0, 5), k0=st.integers(0, 3),
       t0=st.integers(0, 3), images=st.integers(1, 3), data=st.data(), coarse=st.booleans(),
       seed=st.integers(0, 2**31 - 1))
def test_sign_block_adds_lane_wise_sums_of_g_times_the_sign(dtype, count, k0, t0, images, data, coarse, seed):
    """sums[i * SIGN_ROWS + j, lane] += sum_n sum_v G[n, t0 + i, v L + lane] sgn(X[n, k0 +
    j, v L + lane] - W[t0 + i, k0 + j]) over the images n0..n1, with sgn(0) = 0 at exact
    ties (coarse values): Eq. 4's dW."""
    rng = np.random.default_rng(seed)
    n0 = data.draw(st.integers(0, images))
    n1 = data.draw(st.integers(n0, images))
    draw = (lambda shape: rng.integers(-2, 3, shape) / 2) if coarse else rng.standard_normal
    koff, src, g, sums = lane_case(rng, dtype, count, k0, t0, images, SIGN_FILTERS, SIGN_ROWS, draw)
    w = draw((t0 + SIGN_FILTERS + 1, k0 + SIGN_ROWS + 1)).astype(dtype)
    expected = lane_sums(sums, src, koff, k0, g, t0, count, n0, n1, SIGN_FILTERS, SIGN_ROWS,
                         lambda x, i, j: np.sign(x - w[t0 + i, k0 + j]))
    sign_block(src, koff, k0, g, t0, count, w, sums, n0, n1)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(sums, expected, rtol=rtol, atol=rtol * (images * count + 1) * 8)


@pytest.mark.skipif(not X86 or TARGET.vector_bits != 512, reason="checks AVX-512 vector code")
def test_sign_block_loop_is_subtract_fixup_and_multiply_add():
    """The sign-mode dW's loop with AVX-512: SIGN_FILTERS + SIGN_ROWS loads, and per sum a
    subtract x - w, its sgn by one vfixupimmps and a multiply-add (no compare into a mask
    register, whose one port bound the loop before), no stack."""
    lanes = vector_length(4)
    sums = np.zeros((SIGN_FILTERS * SIGN_ROWS, lanes), np.float32)
    sign_block(np.ones((1, 8 * lanes), np.float32), np.arange(SIGN_ROWS), 0,
               np.zeros((1, SIGN_FILTERS, 4 * lanes), np.float32), 0, 4, np.zeros((SIGN_FILTERS, SIGN_ROWS), np.float32),
               sums, 0, 1)
    np.testing.assert_array_equal(sums, 0)
    body = hot_loop(sign_block, "vfixupimmps")
    counts, blocks = mix(body), SIGN_FILTERS * SIGN_ROWS
    assert counts["vsubps zmm"] == counts["vfixupimmps zmm"] == counts["vfmadd231ps zmm"] == blocks, counts
    assert counts["vmovups zmm"] == SIGN_FILTERS + SIGN_ROWS, counts
    assert not [line for line in body if line.lstrip().startswith("vcmp")], body
    assert not [line for line in body if "%rsp" in line], body


HASWELL_CHECK = r"""
import sys
import numpy as np
import minadder
minadder.configure()
sys.path.insert(0, sys.argv[1])
from inspect_asm import innermost, loops, mix
from numba import njit
from minadder.kernels.cpu.register_block import BLOCK_CHANNELS, BLOCK_VECTORS, min_sums_registers, vector_length
assert BLOCK_CHANNELS == 2 and BLOCK_VECTORS * vector_length(4) == 32
block = njit(lambda src, koff, wsh, nk, acc: min_sums_registers(src, koff, 0, wsh, 0, 0, nk, 0, acc, 2, 4))
block(np.zeros(40, np.float32), np.arange(4), np.zeros((2, 4), np.float32), 4, np.zeros((2, 32), np.float32))
asm = block.inspect_asm(block.signatures[0])     # 16 ymm registers: the 2 x 4 block must not spill
hot = [b for b in filter(innermost, loops(asm)) if mix(b)["vminps ymm"]]
assert len(hot) == 1 and mix(hot[0])["vminps ymm"] == 8 and not [ln for ln in hot[0] if "rsp" in ln], hot
from minadder.kernels.cpu.register_block import COLUMN_CHANNELS
column = njit(lambda src, koff, wsh, nk, acc: min_sums_registers(src, koff, 0, wsh, 0, 0, nk, 0, acc, COLUMN_CHANNELS, 1))
column(np.zeros(16, np.float32), np.arange(4), np.zeros((8, 4), np.float32), 4, np.zeros((8, 8), np.float32))
asm = column.inspect_asm(column.signatures[0])   # the 8 x 1 block of the positions left over
hot = [b for b in filter(innermost, loops(asm)) if mix(b)["vminps ymm"]]
assert COLUMN_CHANNELS == 8 and len(hot) == 1 and mix(hot[0])["vminps ymm"] == 8 and not [ln for ln in hot[0] if "rsp" in ln], hot
from minadder.kernels.cpu.register_block import CLIP_ROWS, CLIP_VECTORS, clip_rows_into
clip = njit(lambda src, koff, wk, g, gs, pl: clip_rows_into(src, koff, 0, wk, g, gs, 0, np.float32(1), pl, 0, CLIP_ROWS, CLIP_VECTORS))
clip(np.zeros(40, np.float32), np.arange(2), np.zeros((2, 3), np.float32), np.zeros((3, 16), np.float32), np.zeros(16, np.float32), np.zeros(40, np.float32))
asm = clip.inspect_asm(clip.signatures[0])
hot = [b for b in filter(innermost, loops(asm)) if mix(b)["vmaxps ymm"]]
assert (CLIP_ROWS, CLIP_VECTORS) == (2, 2) and len(hot) == 1 and not [ln for ln in hot[0] if "rsp" in ln], hot
from minadder.kernels.cpu.register_block import COLUMN_ROWS
tall = njit(lambda src, koff, wk, g, gs, pl: clip_rows_into(src, koff, 0, wk, g, gs, 0, np.float32(1), pl, 0, COLUMN_ROWS, 1))
tall(np.zeros(40, np.float32), np.arange(4), np.zeros((4, 3), np.float32), np.zeros((3, 8), np.float32), np.zeros(8, np.float32), np.zeros(40, np.float32))
asm = tall.inspect_asm(tall.signatures[0])      # the 4 x 1 block of the positions left over
hot = [b for b in filter(innermost, loops(asm)) if mix(b)["vmaxps ymm"]]
assert COLUMN_ROWS == 4 and len(hot) == 1 and mix(hot[0])["vmaxps ymm"] == 4, hot
assert not [ln for ln in hot[0] if "rsp" in ln and "ymm" in ln], hot
from minadder.kernels.cpu.register_block import DOT_FILTERS, DOT_ROWS, dot_sums_registers
dot = njit(lambda src, koff, g, count, sums: dot_sums_registers(src, koff, 0, g, 0, count, g[0], sums, 0, 1))
dot(np.zeros((1, 64), np.float32), np.arange(3), np.zeros((1, 4, 32), np.float32), 4, np.zeros((12, 8), np.float32))
asm = dot.inspect_asm(dot.signatures[0])
hot = [b for b in filter(innermost, loops(asm)) if mix(b)["vfmadd231ps ymm"] + mix(b)["vfmadd213ps ymm"]]
assert DOT_FILTERS * DOT_ROWS == 12 and len(hot) == 1 and not [ln for ln in hot[0] if "rsp" in ln], hot
from minadder.kernels.cpu.register_block import SIGN_FILTERS, SIGN_ROWS, sign_sums_registers
sign = njit(lambda src, koff, g, count, w, sums: sign_sums_registers(src, koff, 0, g, 0, count, w, sums, 0, 1))
sign(np.zeros((1, 64), np.float32), np.arange(2), np.zeros((1, 2, 32), np.float32), 4, np.zeros((2, 2), np.float32), np.zeros((4, 8), np.float32))
asm = sign.inspect_asm(sign.signatures[0])
hot = [b for b in filter(innermost, loops(asm)) if mix(b)["vcmpltps ymm"]]
assert (SIGN_FILTERS, SIGN_ROWS) == (2, 2) and len(hot) == 1 and not [ln for ln in hot[0] if "rsp" in ln], hot
print("avx2 ok")
"""


@pytest.mark.skipif(not X86, reason="needs an x86 CPU")
def test_haswell_block_fits_sixteen_registers():
    """Compiled for Haswell (AVX2, 16 ymm registers) the forward's block is 2 channels x 4
    vectors, dX's 2 rows x 2 vectors, dW's 4 filters x 2 rows (sign mode: 2 x 2), and no
    loop spills."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CPU_FEATURES"}
    env["NUMBA_CPU_NAME"] = "haswell"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", HASWELL_CHECK, str(REPO / "benchmarks")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "avx2 ok" in proc.stdout, proc.stdout + proc.stderr[-3000:]


@njit
def packed_row_by_field_row(xp, c, i, j, stride, segs, count, width):
    row = np.zeros(width, dtype=xp.dtype)
    field_row(xp, c, i, j, stride, segs, count, row, False)
    return row


@settings(deadline=None, max_examples=40)
@given(dtype=st.sampled_from([np.float32, np.float64]), n=st.integers(1, 3), c=st.integers(1, 3),
       ho=st.integers(1, 6), wo=st.integers(1, 40), k=st.integers(1, 3), stride=st.sampled_from([1, 2]),
       l0=st.integers(0, 60), width=st.integers(1, 200), seed=st.integers(0, 2**16))
def test_copy_runs_packs_the_rows_field_row_packs(dtype, n, c, ho, wo, k, stride, l0, width, seed):
    """The packed forward's vector copy of a row of X_col (stride 1 or 2), with runs
    shorter and longer than a vector that start anywhere in an output row, equals field_row's."""
    rng = np.random.default_rng(seed)
    plane = ho * wo
    l0, width = min(l0, n * plane - 1), min(width, n * plane - min(l0, n * plane - 1))
    hp, wp = stride * (ho - 1) + k, stride * (wo - 1) + k
    flat = np.zeros((n, c * hp * wp + SLACK), dtype=dtype)
    flat[:, :c * hp * wp] = rng.standard_normal((n, c * hp * wp))
    xp = flat[:, :c * hp * wp].reshape(n, c, hp, wp)
    segs = np.empty((width // wo + 2, 5), dtype=np.int64)
    count = segments(l0, width, plane, wo, segs)
    src, dst = run_vectors(segs, count, flat.shape[1], wp, vector_length(np.dtype(dtype).itemsize), stride)
    for cc in range(c):
        for i in range(k):
            for j in range(k):
                panel = np.full(width + 2 * VECTOR, np.nan, dtype=dtype)
                copy_runs(flat.reshape(-1), cc * hp * wp + i * wp + j, src, dst, panel, VECTOR, stride)
                expected = packed_row_by_field_row(xp, cc, i, j, stride, segs, count, width)
                np.testing.assert_array_equal(panel[VECTOR:VECTOR + width], expected)
                assert np.isnan(panel[:VECTOR]).all()          # nothing before the row


@njit
def added_by_field_row(dxp, c, i, j, segs, count, row):
    field_row(dxp, c, i, j, 2, segs, count, row, True)


@settings(deadline=None, max_examples=40)
@given(dtype=st.sampled_from([np.float32, np.float64]), n=st.integers(1, 3), c=st.integers(1, 3),
       ho=st.integers(1, 5), wo=st.integers(1, 40), k=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_stride_2_vector_add_back_adds_what_field_row_adds(dtype, n, c, ho, wo, k, seed):
    """dX's col2im at stride 2 by vectors (add_field_row_spread: whole, half and single
    numbers, each vector adding 0 to the odd pixels between) adds each row of dX_col into
    the padded planes as field_row does, and writes nothing outside plane (n, c): the
    other planes (another task's) hold -0.0, which an added 0 would turn into +0.0."""
    rng = np.random.default_rng(seed)
    plane = ho * wo
    hp, wp = 2 * (ho - 1) + k, 2 * (wo - 1) + k
    segs = np.empty((ho + 1, 5), dtype=np.int64)
    for image in range(n):
        count = segments(image * plane, plane, plane, wo, segs)
        for cc in range(c):
            base = np.full((n, c, hp, wp), -0.0, dtype=dtype)
            base[image, cc] = rng.standard_normal((hp, wp))
            got, expected = base.copy(), base.copy()
            for i in range(k):
                for j in range(k):
                    row = rng.standard_normal(plane).astype(dtype)
                    add_field_row_spread(got, cc, i, j, segs, count, row)
                    added_by_field_row(expected, cc, i, j, segs, count, row)
            np.testing.assert_allclose(got, expected, rtol=1e-6 if dtype == np.float32 else 1e-14, atol=0)
            others = np.ones((n, c), bool)
            others[image, cc] = False
            assert np.signbit(got[others]).all()


@njit
def sum_with_prefetches(a, ahead):
    total = a.dtype.type(0)
    for i in range(a.shape[0]):
        prefetch(a, i + ahead, False)       # past the end too: a hint never faults
        prefetch(a, i + ahead, True)
        total += a[i]
    return total


@pytest.mark.skipif(not X86, reason="checks x86 code")
def test_prefetch_is_a_hint_that_leaves_the_values_alone():
    """register_block.prefetch (batch norm's passes ask for later rows with it) compiles to
    prefetch instructions (prefetcht0; for a write prefetchw, where the CPU has it) and
    changes nothing, also past an array's end."""
    a = np.arange(1000, dtype=np.float32)
    assert sum_with_prefetches(a, 10**6) == a.sum()
    asm = sum_with_prefetches.inspect_asm(sum_with_prefetches.signatures[0])
    lines = [line.split()[0] for line in asm.splitlines() if line.strip().startswith("prefetch")]
    assert "prefetcht0" in lines and len(lines) >= 2, lines


@pytest.mark.skipif(not X86 or TARGET.vector_bits not in (256, 512), reason="checks x86 vector code")
def test_the_frames_copies_store_and_load_plain_vectors():
    """The frame's pass (pad_shift_plane) and its crop index each row through a view from
    0: indexed from a start LLVM cannot prove non-negative (dst[at + j], s[p + j]) they
    compiled to scatters and gathers, 1.3-1.8x slower (frame.py). Fresh compiles with the
    kernels' own options (Numba keeps no assembly of cached code)."""
    plane_copy = njit(fastmath={"reassoc"})(frame.pad_shift_plane.py_func)
    dst = np.full(12 * 11 + 12 + 3, np.nan, np.float32)
    src = np.arange(100, dtype=np.float32)
    assert plane_copy(src, 10, 10, 1, 11, np.float32(2), dst) == src.sum()
    assert np.array_equal(dst[12:22], src[:10] - 2) and (dst[:12] == -2).all() and (dst[-14:] == -2).all()
    phase_copy = njit(fastmath={"reassoc"})(frame.phase_shift_plane.py_func)
    phases = np.full(4 * 6 * 6, np.nan, np.float32)
    assert phase_copy(src, 10, 10, 1, 6, 6, 4, np.float32(2), phases) == src.sum()
    assert np.array_equal(phases[6 + 1:6 + 6], src[11:20:2] - 2)     # phase (0, 0), row 1: x[1, 1], x[1, 3], ...
    crop = njit(parallel=True)(frame._crop.py_func)
    xp = np.arange(2 * 3 * 6 * 7, dtype=np.float32).reshape(2, 3, 6, 7)
    out = np.empty((2, 3, 4, 5), np.float32)
    crop(xp, 1, out)
    assert np.array_equal(out, xp[:, :, 1:-1, 1:-1])
    for function in (plane_copy, phase_copy, crop):
        asm = float32_asm(function)
        assert "vscatter" not in asm and "vgather" not in asm, function.py_func.__name__


@njit
def merge(a, i, b, j, dst, k, part):
    merge_pairs(a, i, b, j, dst, k, literally(part))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("part", [1, 2])
def test_merge_pairs_interleaves_two_rows_and_writes_nothing_else(dtype, part):
    """merge_pairs (dX's plane put back together from its column phases at stride 2)
    writes a[i + m] at dst[k + 2m] and b[j + m] at dst[k + 2m + 1] for m < L / part, and
    nothing else."""
    lanes = vector_length(np.dtype(dtype).itemsize) // part
    a = np.arange(2 * lanes + 3, dtype=dtype) * dtype(0.5)
    b = -np.arange(2 * lanes + 5, dtype=dtype) - dtype(1)
    dst = np.full(4 * lanes, np.nan, dtype)
    merge(a, 3, b, 5, dst, lanes + 1, part)
    want = np.full(4 * lanes, np.nan, dtype)
    want[lanes + 1:3 * lanes + 1:2] = a[3:3 + lanes]
    want[lanes + 2:3 * lanes + 2:2] = b[5:5 + lanes]
    np.testing.assert_array_equal(dst, want)


def phases_of(plane, count):
    """A padded plane (Hp, Wp) split by parity as frame.py lays it out: phases (0, 0),
    (0, 1), (1, 0), (1, 1) (the first ``count``), each rows x pitch, flat, with spare
    numbers after it; and (rows, pitch)."""
    rows, pitch = -(-plane.shape[0] // 2), -(-plane.shape[1] // 2)
    split = np.full((4, rows, pitch), np.nan, plane.dtype)
    for r in (0, 1):
        for s in (0, 1):
            part = plane[r::2, s::2]
            split[2 * r + s, :part.shape[0], :part.shape[1]] = part
    return np.concatenate([split[:count].reshape(-1), np.full(2 * VECTOR, np.nan, plane.dtype)]), rows, pitch


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("h, w, pad", [(32, 32, 1), (16, 16, 1), (8, 8, 1), (7, 9, 1), (9, 33, 3), (6, 48, 0),
                                       (5, 31, 2), (4, 70, 1)])
def test_dx_planes_inside_is_read_back_from_its_phases(dtype, h, w, pad):
    """The inside of dX's padded plane split by parity (grad_input.inside_of_phases), and
    for a 1x1 layer phase (0, 0) alone with zeros at the other pixels
    (inside_of_first_phase), equal the plane's inside read by NumPy: rows of whole
    vectors, half ones and single numbers, odd and even padding."""
    rng = np.random.default_rng(h * 100 + w)
    plane = rng.standard_normal((h + 2 * pad, w + 2 * pad)).astype(dtype)
    flat, rows, pitch = phases_of(plane, 4)
    out = np.full((h, w), np.nan, dtype)
    grad_input.inside_of_phases(flat, pad, rows, pitch, out)
    np.testing.assert_array_equal(out, plane[pad:pad + h, pad:pad + w])
    flat, rows, pitch = phases_of(plane, 1)
    grad_input.inside_of_first_phase(flat, pad, pitch, out)
    want = np.zeros_like(plane)
    want[::2, ::2] = plane[::2, ::2]
    np.testing.assert_array_equal(out, want[pad:pad + h, pad:pad + w])


@njit
def split(src, i, dst, a, b, centre, part):
    split_pairs(src, i, dst, a, b, centre, literally(part))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("part", [1, 2])
def test_split_pairs_writes_a_rows_even_and_odd_numbers_apart(dtype, part):
    """split_pairs (the stride-2 frame's row split, frame.phase_shift_plane) writes
    src[i + 2m] - c at dst[a + m] and src[i + 2m + 1] - c at dst[b + m] for m < L / part,
    and nothing else."""
    lanes = vector_length(np.dtype(dtype).itemsize) // part
    src = np.arange(4 * lanes + 3, dtype=dtype) * dtype(0.5)
    dst = np.full(5 * lanes, np.nan, dtype)
    split(src, 3, dst, lanes + 1, 3 * lanes + 2, dtype(0.25), part)
    want = np.full(5 * lanes, np.nan, dtype)
    want[lanes + 1:2 * lanes + 1] = src[3:3 + 2 * lanes:2] - dtype(0.25)
    want[3 * lanes + 2:4 * lanes + 2] = src[4:4 + 2 * lanes:2] - dtype(0.25)
    np.testing.assert_array_equal(dst, want)
