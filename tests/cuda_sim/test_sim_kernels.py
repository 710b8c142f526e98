"""Every CUDA kernel against the NumPy reference, under the CUDA simulator.

Run through tests/test_cuda.py (which sets NUMBA_ENABLE_CUDASIM=1 before numba is
imported). The simulator runs each GPU thread as a Python thread, so shapes are tiny
(a few channels, 5x5 images) and Hypothesis draws few examples; odd sizes are the point:
they leave partial tiles at every edge.
"""
import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

assert os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", "run these tests through tests/test_cuda.py"

from numba import cuda  # noqa: E402  (after the environment check)

from minadder.kernels import reference as ref  # noqa: E402
from minadder.kernels.cuda import columns as kc  # noqa: E402  (each kernel alone, host in/out)
from minadder.kernels.cuda import launch  # noqa: E402
from minadder.kernels.cuda.tiled import VARIANTS  # noqa: E402

FEW = settings(deadline=None, max_examples=8)
MODES = ("full", "sign")


def values(rng, shape, kind):
    """float32 test values: 'normal', or 'ints' (small integers: exact ties, sgn(0) = 0)."""
    if kind == "ints":
        return rng.integers(-2, 3, size=shape).astype(np.float32)
    return rng.standard_normal(shape).astype(np.float32)


def assert_close(got, want, terms):
    """float32 sums of `terms` numbers: allow rounding that grows with the sum's length."""
    assert got.shape == want.shape and got.dtype == np.float32
    scale = max(1.0, float(np.abs(want).max(initial=0.0)))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6 * terms * scale)


@st.composite
def windows(draw):
    """(x shape, kh, kw, stride, padding) with a valid, small output."""
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    padding = draw(st.integers(0, 2))
    kh = draw(st.integers(1, min(3, h + 2 * padding)))
    kw = draw(st.integers(1, min(3, w + 2 * padding)))
    stride = draw(st.integers(1, 3))
    return (n, c, h, w), kh, kw, stride, padding


@st.composite
def matrices(draw):
    """(K, L, C_out): none of them a multiple of a tile side."""
    return draw(st.integers(1, 21)), draw(st.integers(1, 70)), draw(st.integers(1, 19))


# ----------------------------------------------------------------------- im2col, col2im
@FEW
@given(windows(), st.integers(0, 2**16))
def test_im2col_matches_reference(win, seed):
    shape, kh, kw, stride, padding = win
    x = values(np.random.default_rng(seed), shape, "normal")
    got = kc.im2col(x, kh, kw, stride, padding)
    np.testing.assert_array_equal(got, ref.im2col(x, kh, kw, stride, padding))


@FEW
@given(windows(), st.integers(0, 2**16))
def test_col2im_matches_reference(win, seed):
    shape, kh, kw, stride, padding = win
    n, c, h, w = shape
    ho, wo = ref.output_size(h, kh, stride, padding), ref.output_size(w, kw, stride, padding)
    cols = values(np.random.default_rng(seed), (c * kh * kw, n * ho * wo), "normal")
    got = kc.col2im(cols, shape, kh, kw, stride, padding)
    assert_close(got, ref.col2im(cols, shape, kh, kw, stride, padding), kh * kw)


# --------------------------------------------------------------------- the l1 "GEMMs"
@FEW
@given(matrices(), st.sampled_from(["normal", "ints"]), st.integers(0, 2**16))
def test_adder_forward_matches_reference(dims, kind, seed):
    k, l, c_out = dims
    rng = np.random.default_rng(seed)
    cols, w = values(rng, (k, l), kind), values(rng, (c_out, k), kind)
    assert_close(kc.adder_forward(cols, w), ref.adder_forward(cols, w), k)


@FEW
@given(matrices(), st.sampled_from(MODES), st.sampled_from(["normal", "ints"]), st.integers(0, 2**16))
def test_adder_grad_input_matches_reference(dims, mode, kind, seed):
    k, l, c_out = dims
    rng = np.random.default_rng(seed)
    cols, w, g = values(rng, (k, l), kind), values(rng, (c_out, k), kind), values(rng, (c_out, l), kind)
    assert_close(kc.adder_grad_input(cols, w, g, mode), ref.adder_grad_input(cols, w, g, mode), c_out)


@FEW
@given(matrices(), st.sampled_from(MODES), st.sampled_from(["normal", "ints"]), st.integers(0, 2**16))
def test_adder_grad_weight_matches_reference(dims, mode, kind, seed):
    k, l, c_out = dims
    rng = np.random.default_rng(seed)
    cols, w, g = values(rng, (k, l), kind), values(rng, (c_out, k), kind), values(rng, (c_out, l), kind)
    # full mode goes through G @ X.T - W * G.sum(1): rounding scales with |G||X| + |W||G|
    assert_close(kc.adder_grad_weight(cols, w, g, mode), ref.adder_grad_weight(cols, w, g, mode), 4 * l)


@FEW
@given(matrices(), st.sampled_from(["normal", "ints"]), st.integers(0, 2**16))
def test_l2_forward_and_gradients_match_reference(dims, kind, seed):
    """Eq. 27 and its exact gradients (dW = 2 sum G (X - W), dX = 2 sum G (W - X))."""
    k, l, c_out = dims
    rng = np.random.default_rng(seed)
    cols, w, g = values(rng, (k, l), kind), values(rng, (c_out, k), kind), values(rng, (c_out, l), kind)
    assert_close(kc.adder_forward(cols, w, "l2"), ref.l2_forward(cols, w), 4 * k)
    dw, dcols = kc.l2_grads(cols, w, g)
    want_dw, want_dcols = ref.l2_grads(cols, w, g)
    # through products and sums (G X^T - W sum G): rounding scales with |G||X| + |W||G|
    assert_close(dw, want_dw, 8 * l)
    assert_close(dcols, want_dcols, 8 * c_out)


def test_sign_mode_treats_ties_as_zero():
    """sgn(0) = 0: where X_col == W exactly, the sign gradients get nothing from that term."""
    cols = np.array([[1.0, 2.0]], dtype=np.float32)     # K = 1, L = 2
    w = np.array([[1.0]], dtype=np.float32)             # C_out = 1: ties at l = 0
    g = np.array([[5.0, 7.0]], dtype=np.float32)
    np.testing.assert_array_equal(kc.adder_grad_weight(cols, w, g, "sign"), [[7.0]])
    np.testing.assert_array_equal(kc.adder_grad_input(cols, w, g, "sign"), [[0.0, -7.0]])


# ------------------------------------------ every tile shape, and the split reduction
@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("tile,splits", [("16x64", 3), ("16x128", 1), ("32x128", 1), ("64x128", 2)])
def test_tiled_kernels_every_tile_and_split(variant, tile, splits):
    """The template with forced tiles and a split reduction axis (the launcher picks these
    only for larger shapes); M, N and R are odd so that every edge guard is exercised."""
    rng = np.random.default_rng(7)
    k, l, c_out = 19, 37, 35
    cols, w, g = (values(rng, s, "normal") for s in ((k, l), (c_out, k), (c_out, l)))
    d = {name: cuda.to_device(a) for name, a in (("cols", cols), ("w", w), ("g", g))}
    if variant == "forward":
        args, out_shape, want = (d["w"], d["cols"], None), (c_out, l), ref.adder_forward(cols, w)
    elif variant == "forward_l2":
        args, out_shape, want = (d["w"], d["cols"], None), (c_out, l), ref.l2_forward(cols, w)
    elif variant == "product_wg":
        args, out_shape, want = (d["w"], d["g"], None), (k, l), w.T @ g
    elif variant.startswith("dx"):
        mode = variant[3:]
        args, out_shape = (d["w"], d["g"], d["cols"]), (k, l)
        want = ref.adder_grad_input(cols, w, g, mode)
    elif variant == "dw_sign":
        args, out_shape = (d["g"], d["cols"], d["w"]), (c_out, k)
        want = ref.adder_grad_weight(cols, w, g, "sign")
    else:  # product
        args, out_shape, want = (d["g"], d["cols"], None), (c_out, k), g @ cols.T
    out = cuda.device_array(out_shape, dtype=np.float32)
    launch.tiled(variant, *args, out, tile=tile, splits=splits)
    assert_close(out.copy_to_host(), want, 4 * max(k, l, c_out))


def test_largest_tile_once():
    """The 128x128 tile (256 threads: slow in the simulator), forward only, partial edges."""
    rng = np.random.default_rng(3)
    cols, w = values(rng, (9, 131), "normal"), values(rng, (129, 9), "normal")
    out = cuda.device_array((129, 131), dtype=np.float32)
    launch.tiled("forward", cuda.to_device(w), cuda.to_device(cols), None, out, tile="128x128")
    assert_close(out.copy_to_host(), ref.adder_forward(cols, w), 9)


def test_launch_choices():
    assert launch.choose_tile(16, 100) == "16x64"          # narrow output
    assert launch.choose_tile(16, 1 << 17) == "16x128"     # ResNet-20 stage 1 forward
    assert launch.choose_tile(6, 1 << 17) == "16x128"      # LeNet conv1: C_out = 6
    assert launch.choose_tile(144, 1 << 17) == "32x128"    # dX with K = 144: 160 rows, not 256
    assert launch.choose_tile(288, 1 << 15) == "64x128"
    assert launch.choose_tile(512, 4096) == "128x128"
    # dW of a ResNet-20 layer: a 16 x 144 output (2 tiles of 64 threads), reduced over
    # 128*32*32 positions: split into hundreds of parts
    assert launch.choose_splits(tiles=2, threads_per_block=64, r_size=128 * 32 * 32) > 100
    assert launch.choose_splits(tiles=10_000, threads_per_block=256, r_size=144) == 1
    assert launch.choose_splits(tiles=1, threads_per_block=64, r_size=100) == 1    # too short
