"""minadder/kernels/cpu/sad.py, the integer SAD kernel: bit for bit equal to the NumPy
definition (int8_reference.py) on Hypothesis shapes and on the layout's edge cases, in every
variant this machine can run (the portable loops on every machine); the byte layout of
sad_layout.py against the receptive fields it stands for; the AVX2 code compiled for
Haswell in a child process; which variant runs, and that the vector variants really are
vpsadbw on positions in the lanes (broadcast filters, no sum across lanes, no spill).
"""
import contextlib
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("numba")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from numba import njit  # noqa: E402

from minadder.kernels import int8_reference as ref  # noqa: E402
from minadder.kernels.cpu import sad, sad_layout  # noqa: E402
from minadder.kernels.cpu.sad_intrinsics import BLOCK_FILTERS, block_positions, sad_block  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from inspect_asm import innermost, loops, mix  # noqa: E402  (benchmarks/inspect_asm.py: the loop finder)

X86 = platform.machine().lower() in ("x86_64", "amd64")
HERE = sad.available()
SETTINGS = settings(deadline=None, max_examples=30)


@contextlib.contextmanager
def preferred(name):
    """Run sad.py's functions with variant ``name`` inside the block."""
    before, sad.PREFERRED = sad.PREFERRED, name
    try:
        yield
    finally:
        sad.PREFERRED = before


def codes(rng, shape, kind):
    """uint8 codes: uniform, only the extremes 0 and 255, or half extremes."""
    uniform = rng.integers(0, 256, shape, dtype=np.uint8)
    extremes = rng.choice(np.array([0, 255], dtype=np.uint8), shape)
    if kind == "uniform":
        return uniform
    return extremes if kind == "extremes" else np.where(rng.random(shape) < 0.5, extremes, uniform)


@st.composite
def layers(draw):
    """(xq, wq, stride, padding, pad_value) with a valid output; K = C*k*k from 1 to 180,
    mostly not a multiple of 8, 32 or 64."""
    n, c, c_out = draw(st.integers(1, 3)), draw(st.integers(1, 20)), draw(st.integers(1, 9))
    k, padding, stride = draw(st.integers(1, 3)), draw(st.integers(0, 2)), draw(st.integers(1, 2))
    h = draw(st.integers(max(1, k - 2 * padding), 9))
    w = draw(st.integers(max(1, k - 2 * padding), 9))
    kind = draw(st.sampled_from(["uniform", "extremes", "mixed"]))
    pad_value = draw(st.sampled_from([0, 255]) | st.integers(0, 255))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    return codes(rng, (n, c, h, w), kind), codes(rng, (c_out, c, k, k), kind), stride, padding, pad_value


@pytest.mark.parametrize("name", HERE)
@SETTINGS
@given(layers())
def test_sad2d_is_the_reference_bit_for_bit(name, layer):
    xq, wq, stride, padding, pad_value = layer
    with preferred(name):
        got = sad.sad2d(xq, wq, stride, padding, pad_value)
    want = ref.sad2d(xq, wq, stride, padding, pad_value)
    assert got.dtype == np.int32 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name", HERE)
@SETTINGS
@given(st.integers(1, 3), st.integers(1, 300), st.integers(1, 12), st.integers(0, 2**16),
       st.sampled_from(["uniform", "extremes", "mixed"]))
def test_sad_linear_is_the_reference_bit_for_bit(name, n, k, c_out, seed, kind):
    rng = np.random.default_rng(seed)
    xq, wq = codes(rng, (n, k), kind), codes(rng, (c_out, k), kind)
    with preferred(name):
        got = sad.sad_linear(xq, wq)
    assert got.dtype == np.int32 and got.shape == (n, c_out)
    np.testing.assert_array_equal(got, ref.sad_linear(xq, wq))


@pytest.mark.parametrize("name", HERE)
def test_large_sums_and_many_chunks_stay_exact(name, monkeypatch):
    """Sums far past 16 bits (K = 2,700 terms of 255), and a layer cut into the smallest
    chunks (32 positions: images of 16 positions, so each chunk holds parts of 3), the
    last one short."""
    xq = np.full((1, 300, 3, 3), 255, dtype=np.uint8)
    wq = np.zeros((5, 300, 3, 3), dtype=np.uint8)
    with preferred(name):
        np.testing.assert_array_equal(sad.sad2d(xq, wq, padding=1), ref.sad2d(xq, wq, padding=1))
        assert sad.sad2d(xq, wq).max() == 300 * 9 * 255
        monkeypatch.setattr(sad, "CHUNK_BYTES", 128)
        assert sad.chunk_positions(10_000, 144) == sad.CHUNK_MULTIPLE
        rng = np.random.default_rng(1)
        xq, wq = codes(rng, (7, 2, 7, 9), "mixed"), codes(rng, (6, 2, 3, 3), "mixed")
        np.testing.assert_array_equal(sad.sad2d(xq, wq, 2, 1, 9), ref.sad2d(xq, wq, 2, 1, 9))


#: (N, C, H, W, C_out, kh, kw, stride, padding): the layout's edge cases. K = C * kh * kw
#: not a multiple of 8 (channels padded with zeros); positions not a multiple of a block;
#: chunks of 32 positions (CHUNK_BYTES = 1) that start inside an output row and cross
#: images; 1x1 layers; stride 2; C past one group with a short last group; a kernel wider
#: than tall; C_out not a multiple of BLOCK_FILTERS.
EDGES = [
    (3, 5, 7, 5, 6, 3, 3, 1, 1),      # K = 45, 105 positions, images of 35
    (2, 3, 2, 45, 5, 1, 3, 1, 0),     # rows of 43 positions: chunks start mid-row
    (4, 13, 3, 3, 5, 1, 1, 1, 0),     # 1x1, K = 13, images of 9 positions
    (2, 16, 6, 6, 4, 1, 1, 2, 1),     # 1x1, stride 2, a padded border
    (2, 16, 9, 9, 9, 3, 3, 2, 1),     # stride 2, two full groups
    (1, 70, 4, 4, 3, 3, 3, 1, 1),     # 9 groups, the last of 6 channels
    (2, 8, 5, 6, 1, 2, 3, 2, 2),      # 2x3 kernel, stride 2, padding 2
]


@pytest.mark.parametrize("name", HERE)
@pytest.mark.parametrize("edge", EDGES)
def test_the_layout_edges_are_the_reference_bit_for_bit(name, edge, monkeypatch):
    n, c, h, w, c_out, kh, kw, stride, padding = edge
    rng = np.random.default_rng(sum(edge))
    xq, wq = codes(rng, (n, c, h, w), "mixed"), codes(rng, (c_out, c, kh, kw), "mixed")
    monkeypatch.setattr(sad, "CHUNK_BYTES", 1)
    with preferred(name):
        got = sad.sad2d(xq, wq, stride, padding, 200)
    np.testing.assert_array_equal(got, ref.sad2d(xq, wq, stride, padding, 200))


def test_columns_hold_each_receptive_field_8_bytes_per_group():
    """gather's columns, read back as bytes, are each position's padded receptive field in
    the order k = (channel group, i, j, channel in the group), zeros for the padding
    channels; the filter words are the filters in the same order."""
    rng = np.random.default_rng(3)
    n, c, h, w, c_out, k, stride, padding, pad = 2, 11, 5, 6, 3, 3, 2, 1, 77
    xq, wq = codes(rng, (n, c, h, w), "uniform"), codes(rng, (c_out, c, k, k), "uniform")
    ho, wo = (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1
    pixels = sad_layout.padded_pixels(xq, padding, pad)
    columns = np.zeros((2 * k * k, n * ho * wo), dtype=np.uint64)
    sad_layout.gather(pixels, 0, n * ho * wo, stride, k, k, wo, ho * wo, columns)
    got = columns.view(np.uint8).reshape(2, k, k, n * ho * wo, 8).transpose(3, 0, 4, 1, 2)   # (L, group, c8, i, j)
    xp = np.pad(xq, ((0, 0), (0, 0), (padding, padding), (padding, padding)), constant_values=pad)
    xp = np.pad(xp, ((0, 0), (0, 16 - c), (0, 0), (0, 0)))                                    # zero channels
    for l, (m, u, v) in enumerate(np.ndindex(n, ho, wo)):
        field = xp[m, :, stride * u:stride * u + k, stride * v:stride * v + k]
        np.testing.assert_array_equal(got[l].reshape(16, k, k), field)
    words = sad_layout.filter_words(wq, BLOCK_FILTERS)
    assert words.shape == (BLOCK_FILTERS, 2 * k * k * 8) and not words[c_out:].any()
    filters = np.pad(wq, ((0, 0), (0, 16 - c), (0, 0), (0, 0)))
    np.testing.assert_array_equal(words[:c_out].reshape(c_out, 2, k, k, 8).transpose(0, 1, 4, 2, 3).reshape(c_out, 16, k, k),
                                  filters)


@pytest.mark.parametrize("name", HERE)
def test_a_call_costs_no_compile_or_dispatch_time(name):
    """Each variant has one compiled entry, its width a constant: after the first call, a
    small layer takes well under a millisecond (a width passed from Python made every call
    ask Numba's dispatcher for the literal again: some 20 ms each)."""
    xq, wq = np.zeros((1, 3, 4, 4), dtype=np.uint8), np.zeros((2, 3, 3, 3), dtype=np.uint8)
    with preferred(name):
        sad.sad2d(xq, wq)
        start = time.perf_counter()
        for _ in range(20):
            sad.sad2d(xq, wq)
        assert time.perf_counter() - start < 0.2
    assert len(sad.KERNELS[name].signatures) == 1


def test_pad_values_are_written_as_the_reference_writes_them():
    xq, wq = np.zeros((1, 1, 2, 2), dtype=np.uint8), np.zeros((1, 1, 3, 3), dtype=np.uint8)
    for pad_value in (300, -1, 7.9):
        np.testing.assert_array_equal(sad.sad2d(xq, wq, 1, 1, pad_value), ref.sad2d(xq, wq, 1, 1, pad_value))


def test_wrong_inputs_give_the_reference_errors():
    x, w = np.zeros((1, 2, 4, 4), dtype=np.uint8), np.zeros((3, 2, 3, 3), dtype=np.uint8)
    for args in [(x.astype(np.int8), w), (x, w.astype(np.float32)), (x, w[:, :1])]:
        with pytest.raises((TypeError, ValueError)) as want:
            ref.sad2d(*args)
        with pytest.raises(want.type) as got:
            sad.sad2d(*args)
        assert str(got.value) == str(want.value)
    for stride, padding in [(0, 0), (1, -1)]:
        with pytest.raises(ValueError, match="^sad2d: "):
            sad.sad2d(x, w, stride, padding)
    with pytest.raises(ValueError, match="^sad2d: kernel 3x3 is larger"):
        sad.sad2d(x[:, :, :2, :2], w)


def test_the_variant_is_the_best_this_cpu_and_numba_allow():
    """On an x86 CPU with AVX-512BW (lscpu's flags) and Numba compiling for the host, the
    512-bit code; with AVX2 only, the 256-bit code; elsewhere the portable loops. A variant
    that cannot run here is refused, and PREFERRED picks any that can."""
    if "NUMBA_CPU_NAME" in os.environ or "NUMBA_CPU_FEATURES" in os.environ:
        pytest.skip("Numba compiles for a CPU named in the environment")
    flags = set()
    if X86:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        flags = set(next((ln for ln in out.splitlines() if ln.startswith("Flags")), "").split())
    best = "avx512bw" if "avx512bw" in flags else "avx2" if "avx2" in flags else "portable"
    assert sad.variant() == best and HERE[0] == best and HERE[-1] == "portable"
    for name in HERE:
        with preferred(name):
            assert sad.variant() == name
    for name in {"avx512bw", "avx2", "sse"} - set(HERE):
        with preferred(name), pytest.raises(ValueError, match="cannot run here"):
            sad.variant()


@pytest.mark.parametrize("width, register", [(64, "zmm"), (32, "ymm")])
def test_the_vector_blocks_are_vpsadbw_on_positions(width, register):
    """The block's hot loop: per step one load per vector of positions, one broadcast
    filter word per filter (vpbroadcastq), a vpsadbw and a vpaddq per (vector, filter)
    pair (16 with AVX-512, 8 with AVX2, or a multiple: unrolled), no stack operand (no
    spill); the sums right. A fresh compile: Numba keeps no assembly of cached code."""
    name = {64: "avx512bw", 32: "avx2"}[width]
    if name not in HERE:
        pytest.skip(f"no {name} here")

    @njit
    def block(columns, words, sums):
        sad_block(columns, 0, words, 0, sums, width)

    rng = np.random.default_rng(0)
    positions, groups = block_positions(width), 5
    columns, words = codes(rng, (groups, 8 * positions), "uniform"), codes(rng, (BLOCK_FILTERS, 8 * groups), "uniform")
    sums = np.zeros((BLOCK_FILTERS, positions), dtype=np.int32)
    block(columns, words, sums)
    fields = columns.reshape(groups, positions, 8).transpose(1, 0, 2).reshape(positions, -1).astype(np.int64)
    np.testing.assert_array_equal(sums, np.abs(fields[None] - words[:, None].astype(np.int64)).sum(-1))
    asm = block.inspect_asm(block.signatures[0])
    hot = [body for body in filter(innermost, loops(asm)) if any(k.startswith("vpsadbw") for k in mix(body))]
    assert len(hot) == 1, asm[-3000:]
    counts, pairs = mix(hot[0]), positions * 8 // width * BLOCK_FILTERS
    assert counts[f"vpsadbw {register}"] % pairs == 0 and counts[f"vpsadbw {register}"] == counts[f"vpaddq {register}"]
    assert counts[f"vpbroadcastq {register}"] * pairs == BLOCK_FILTERS * counts[f"vpsadbw {register}"], counts
    assert not [ln for ln in hot[0] if "rsp" in ln], hot[0]


HASWELL_CHECK = r"""
import sys
import numpy as np
import minadder
if sys.argv[1] == "configured":
    minadder.configure()
from minadder.kernels import int8_reference as ref
from minadder.kernels.cpu import sad
assert sad.available() == ("avx2", "portable") and sad.variant() == "avx2", sad.available()
rng = np.random.default_rng(0)
for (n, c, h, co, k, s, p) in [(2, 3, 9, 7, 3, 1, 1), (1, 20, 5, 5, 3, 2, 2), (3, 1, 1, 1, 1, 1, 0)]:
    x = rng.integers(0, 256, (n, c, h, h), dtype=np.uint8)
    w = rng.integers(0, 256, (co, c, k, k), dtype=np.uint8)
    np.testing.assert_array_equal(sad.sad2d(x, w, s, p, 255), ref.sad2d(x, w, s, p, 255))
assert sad._sad_avx2.signatures and not sad._sad_avx512bw.signatures
sys.path.insert(0, sys.argv[2])
from inspect_asm import innermost, loops, mix
from numba import njit
from minadder.kernels.cpu.sad_intrinsics import sad_block
block = njit(lambda columns, words, sums: sad_block(columns, 0, words, 0, sums, 32))
block(np.zeros((5, 64), np.uint8), np.zeros((4, 40), np.uint8), np.zeros((4, 8), np.int32))
asm = block.inspect_asm(block.signatures[0])     # 16 ymm registers: the 2 x 4 block must not spill
hot = [b for b in filter(innermost, loops(asm)) if mix(b)["vpsadbw ymm"]]
assert len(hot) == 1 and not [ln for ln in hot[0] if "rsp" in ln], hot
print("avx2 ok")
"""


@pytest.mark.skipif(not X86 or "avx2" not in HERE, reason="needs an x86 CPU with AVX2")
@pytest.mark.parametrize("how", ["configured", "bare"])
def test_haswell_runs_the_avx2_variant(how):
    """NUMBA_CPU_NAME=haswell gives the 256-bit code, the only kernel compiled, bit-exact,
    its block not spilling from Haswell's 16 registers; with minadder.configure()
    (Haswell's own features) and without it (Numba pairs the name with the host's
    features: the name still decides)."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CPU_FEATURES"}
    env["NUMBA_CPU_NAME"] = "haswell"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", HASWELL_CHECK, how, str(REPO / "benchmarks")], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0 and "avx2 ok" in proc.stdout, proc.stdout + proc.stderr[-3000:]
