"""The cpu kernels (the package minadder/kernels/cpu/) on what only they do: the padded,
shifted copy of the input shared by the forward and the gradients, tiles and chunks of a
large layer, and precision when inputs and filters share a large offset. Their results
on Hypothesis shapes, against an oracle, are in tests/test_kernels_contract.py.
"""
import numpy as np
import pytest

pytest.importorskip("numba")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import minadder as ma  # noqa: E402
from minadder import functional as F  # noqa: E402
from minadder.kernels import cpu, reference as ref  # noqa: E402
from minadder.kernels.cpu import forward, frame, grad_weight, positions, products, register_block  # noqa: E402
from minadder.kernels.cpu.register_block import vector_length  # noqa: E402
from minadder.kernels.geometry import Window  # noqa: E402

SETTINGS = settings(deadline=None, max_examples=25)


@st.composite
def layers(draw):
    """A small adder layer: (x, weight, stride, padding) with a valid output size."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    n = draw(st.integers(1, 3))
    c = draw(st.integers(1, 4))
    c_out = draw(st.integers(1, 9))
    k = draw(st.integers(1, 4))
    padding = draw(st.integers(0, 2))
    h = draw(st.integers(max(1, k - 2 * padding), 9))
    w = draw(st.integers(max(1, k - 2 * padding), 9))
    stride = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w))
    weight = rng.standard_normal((c_out, c, k, k))
    return x.astype(dtype), weight.astype(dtype), stride, padding


def _grad_tol(dtype, terms, *arrays):
    eps = np.finfo(dtype).eps
    scale = 1 + max(float(np.abs(a).max(initial=0)) for a in arrays)
    return dict(rtol=0, atol=8 * eps * terms * scale * scale)


def _both(module, x, weight, stride, padding, g_seed, mode):
    """(y, dx, dw) of a backend's contract functions, G drawn from g_seed."""
    win = Window.of(x.shape, weight.shape, stride, padding)
    y, saved = module.adder2d_forward(x, weight, win)
    g = np.random.default_rng(g_seed).standard_normal(y.shape).astype(y.dtype)
    return (y, *module.adder2d_backward(g, saved, mode))


@pytest.mark.parametrize("stride", [1, 2])
def test_the_full_mode_backward_reads_the_padded_input_of_the_forward(monkeypatch, stride):
    """The forward pads and shifts x once and keeps the copy in ``saved``; both full-mode
    gradients read it. The sign mode compares unshifted values: it pads one copy of its
    own (centre 0), which both of its gradients read."""
    calls = []
    padded = frame.padded
    monkeypatch.setattr(frame, "padded", lambda *args: calls.append(args[1:]) or padded(*args))
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 3, 9, 9)).astype(np.float32)
    weight = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    y, saved = cpu.adder2d_forward(x, weight, Window.of(x.shape, weight.shape, stride, 1))
    cpu.adder2d_backward(np.ones_like(y), saved, "full")
    assert isinstance(saved.frame, frame.ShiftedInput) and len(calls) == 1
    cpu.adder2d_backward(np.ones_like(y), saved, "sign")
    assert len(calls) == 2 and calls[1][1] == 0     # centre 0 for the sign mode


@pytest.mark.parametrize("distance", ["l1", "l2"])
@pytest.mark.parametrize("n, framed", [(9, True), (2, False)])
@pytest.mark.parametrize("stride, size", [(1, 12), (2, 24)])
def test_the_forward_frames_image_by_image_with_images_for_every_thread(numba_threads, monkeypatch, distance, n,
                                                                        framed, stride, size):
    """With stride 1 or 2, long rows and at least 4 images a thread, one kernel frames each
    image and computes its outputs (no separate pass through frame.padded); its frame holds
    the same numbers, finiteness and outputs as the pass's, and an inf in x sends the
    layer to the reference."""
    calls = []
    padded = frame.padded
    monkeypatch.setattr(frame, "padded", lambda *args: calls.append(args[1:]) or padded(*args))
    rng = np.random.default_rng(8)
    x = rng.standard_normal((n, 3, size, size)).astype(np.float32) + 4
    weight = rng.standard_normal((5, 3, 3, 3)).astype(np.float32) + 4
    win = Window.of(x.shape, weight.shape, stride, 1)
    y, saved = cpu.adder2d_forward(x, weight, win, distance)
    assert len(calls) == (0 if framed and n >= 4 * numba_threads else 1)
    alone = frame.shifted(x, weight.reshape(5, -1), win)
    assert np.array_equal(saved.frame.flat, alone.flat) and saved.frame.centre == alone.centre
    assert saved.frame.finite and saved.finite
    assert _relative_error(y, ref.adder2d_forward(x, weight, win, distance)[0]) < 1e-5
    x[-1, 2, size // 2, 3] = np.inf
    y, saved = cpu.adder2d_forward(x, weight, win, distance)
    assert not saved.finite and np.isneginf(y[-1]).any() and np.isfinite(y[0]).all()


@pytest.mark.parametrize("stride, padding, k, pitch", [
    (1, 1, 3, 8), (1, 2, 5, 9), (1, 2, 3, 9), (1, 0, 3, 7),   # shared: W + p
    (1, 2, 1, 11), (1, 3, 3, 13), (3, 1, 3, 9)])              # not: W + 2p
def test_the_frame_rows_share_their_padding_where_the_outputs_allow(stride, padding, k, pitch):
    """Stride 1 with p <= kw - 1: the padded rows lie W + p numbers apart, a row's right
    padding being the next row's left. xp still reads as x - c padded with -c, and for
    every output (u, v) and row k = (c, i, j) of X_col the frame holds X_col's number at
    koff[k] + u * pitch + v: what every stride-1 kernel reads (wide positions)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 6, 7)).astype(np.float32)
    win = Window.of(x.shape, (4, 3, k, k), stride, padding)
    assert frame.frame_pitch(win) == pitch
    shifted = frame.padded(x, padding, np.float32(0.25), pitch)
    assert frame.row_pitch(shifted.xp) == pitch
    want = np.pad(x - np.float32(0.25), ((0, 0), (0, 0), (padding,) * 2, (padding,) * 2), constant_values=-0.25)
    np.testing.assert_array_equal(shifted.xp, want)
    if stride == 1:
        koff = positions.wide_offsets(win, shifted.xp)
        cols = ref.im2col(want, k, k, 1, 0)              # X_col (K, N * H_out * W_out)
        u, v = np.meshgrid(np.arange(win.ho), np.arange(win.wo), indexing="ij")
        q = (u * pitch + v).reshape(-1)
        for n in range(2):
            read = shifted.flat[n][koff[:, None] + q[None, :]]
            np.testing.assert_array_equal(read, cols[:, n * win.plane:(n + 1) * win.plane])


@pytest.mark.parametrize("h, w, k, padding", [(6, 7, 3, 1), (9, 8, 1, 0), (7, 7, 5, 2), (8, 9, 2, 0), (6, 6, 4, 3),
                                               (7, 9, 1, 1), (5, 6, 1, 1), (9, 33, 3, 1), (6, 7, 1, 2), (8, 10, 1, 0)])
def test_a_stride_2_frame_split_by_parity_holds_x_col_on_wide_positions(h, w, k, padding):
    """Stride 2: the padded plane split into its four parity phases, phase (r, s)[a, b] =
    xp[2a + r, 2b + s] (-c where the phase reaches past the padded plane), rows
    ceil((W + 2p) / 2) apart (a 1x1 layer: phase (0, 0) alone); and row k = (c, i, j) of
    X_col read at koff[k] + u * pitch + v for every output (u, v), as the stride-1
    kernels read it."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, h, w)).astype(np.float32)
    win = Window.of(x.shape, (4, 3, k, k), 2, padding)
    assert frame.phased(win) and frame.frame_pitch(win) == (w + 2 * padding + 1) // 2
    split = frame.shifted(x, np.full((4, 3 * k * k), 0.25, np.float32), win)
    want = np.pad(x - np.float32(0.25), ((0, 0), (0, 0), (padding,) * 2, (padding,) * 2), constant_values=-0.25)
    rows, pitch = frame.phase_rows(win, split.xp), frame.row_pitch(split.xp)
    even = np.pad(want, ((0, 0), (0, 0), (0, 2 * rows - want.shape[2]), (0, 2 * pitch - want.shape[3])),
                  constant_values=-0.25)
    phases = [even[:, :, r::2, s::2] for r in (0, 1) for s in (0, 1)]
    count = 1 if k == 1 else 4
    assert frame.phase_count(win) == count
    np.testing.assert_array_equal(split.xp, np.concatenate(phases[:count], axis=2))
    koff = positions.wide_offsets(win, split.xp)
    cols = ref.im2col(want, k, k, 2, 0)
    u, v = np.meshgrid(np.arange(win.ho), np.arange(win.wo), indexing="ij")
    q = (u * pitch + v).reshape(-1)
    for n in range(2):
        np.testing.assert_array_equal(split.flat[n][koff[:, None] + q[None, :]], cols[:, n * win.plane:(n + 1) * win.plane])


@pytest.mark.parametrize("h, w, padding", [(8, 10, 0), (9, 7, 0), (6, 7, 1), (7, 8, 2), (5, 5, 3), (16, 32, 0),
                                            (4, 66, 1), (3, 95, 0), (2, 48, 0)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_first_phase_alone_writes_every_number_and_sums_the_numbers_it_reads(h, w, padding, dtype):
    """A 1x1 stride-2 frame (phase (0, 0) alone) from a plane: every number written (the
    padding's -c too, into a plane of NaNs), and the sum returned is that of the numbers of
    x on even padded rows and columns (whole vectors, half ones and single numbers), no
    other."""
    rng = np.random.default_rng(5)
    src = rng.integers(-8, 8, size=h * w).astype(dtype)
    rows, pitch = (h + 2 * padding + 1) // 2, (w + 2 * padding + 1) // 2
    dst = np.full(rows * pitch, np.nan, dtype)
    total = frame.phase_shift_plane(src, h, w, padding, rows, pitch, 1, dtype(0.5), dst)
    want = np.pad(src.reshape(h, w) - dtype(0.5), padding, constant_values=-0.5)[::2, ::2]
    np.testing.assert_array_equal(dst.reshape(rows, pitch), want)
    assert total == src.reshape(h, w)[padding % 2::2, padding % 2::2].sum()


@pytest.mark.parametrize("pitch", [8, 11])
def test_a_frame_refuses_rows_that_would_overlap_or_leave_gaps(pitch):
    """Rows closer than W + p would overlap the inside of the next row; wider than W + 2p,
    leave numbers nobody writes."""
    with pytest.raises(ValueError, match="W \\+ p to W \\+ 2p"):
        frame.padded(np.zeros((1, 1, 4, 8), np.float32), 1, np.float32(0), pitch)


@settings(deadline=None, max_examples=30)
@given(dtype=st.sampled_from([np.float32, np.float64]), k=st.sampled_from([1, 2, 3, 5]), data=st.data(),
       size=st.integers(10, 14), c_out=st.integers(1, 9), mode=st.sampled_from(ref.GRAD_MODES + ("l2",)),
       seed=st.integers(0, 2**16))
def test_stride_1_layers_on_shared_padding_equal_the_reference(dtype, k, data, size, c_out, mode, seed):
    """Stride 1, rows long enough for the forward's and dW's wide kernels, every padding
    from 0 to kw (kw itself: rows that may not share it), l1 in both modes and l2."""
    padding = data.draw(st.integers(0, k))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, size, size + 1)).astype(dtype)
    weight = rng.standard_normal((c_out, 3, k, k)).astype(dtype)
    distance, grad = ("l2", "full") if mode == "l2" else ("l1", mode)
    win = Window.of(x.shape, weight.shape, 1, padding)
    y, saved = cpu.adder2d_forward(x, weight, win, distance)
    y_ref, saved_ref = ref.adder2d_forward(x, weight, win, distance)
    g = rng.standard_normal(y.shape).astype(dtype)
    dx, dw = cpu.adder2d_backward(g, saved, grad)
    dx_ref, dw_ref = ref.adder2d_backward(g, saved_ref, grad)
    scale = 4 if distance == "l2" else 1
    np.testing.assert_allclose(y, y_ref, **_grad_tol(dtype, scale * win.k, x, weight))
    np.testing.assert_allclose(dx, dx_ref, **_grad_tol(dtype, scale * c_out * win.k, g, x, weight))
    np.testing.assert_allclose(dw, dw_ref, **_grad_tol(dtype, scale * y[:, 0].size, g, x, weight))


@SETTINGS
@given(layers(), st.sampled_from(ref.GRAD_MODES))
def test_the_gradients_hold_for_filters_other_than_the_forward_ones(layer, mode):
    """The padded copy is shifted by the forward's filter mean; the gradients for other
    filters (any common shift of x and W leaves |x - w| unchanged) are still exact."""
    x, weight, stride, padding = layer
    win = Window.of(x.shape, weight.shape, stride, padding)
    y, saved = cpu.adder2d_forward(x, weight, win)
    other = (weight * 3 + 5).astype(x.dtype)
    g = np.random.default_rng(6).standard_normal(y.shape).astype(x.dtype)
    dx, dw = cpu.adder2d_backward(g, saved._replace(weight=other), mode)
    _, saved_ref = ref.adder2d_forward(x, other, win)
    dx_ref, dw_ref = ref.adder2d_backward(g, saved_ref, mode)
    np.testing.assert_allclose(dw, dw_ref, **_grad_tol(x.dtype, y[:, 0].size, g, x, other))
    np.testing.assert_allclose(dx, dx_ref, **_grad_tol(x.dtype, weight.shape[0] * win.k, g))


@pytest.mark.parametrize("mode", ref.GRAD_MODES)
@pytest.mark.parametrize("stride", [1, 2])
def test_a_layer_of_many_tasks_tiles_and_chunks(mode, stride):
    """Several images per dW chunk (a batch not a multiple of DW_CHUNKS), several row
    blocks per image in the forward, C_out not a multiple of the register block, and (stride
    1, full mode) rows long enough for the dW product read from the padded input."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((7, 3, 37, 29)).astype(np.float32)
    weight = rng.standard_normal((6, 3, 3, 3)).astype(np.float32)
    assert (37 - 1) * 31 + 29 >= grad_weight.WIDE_DW_MIN_POSITIONS and 7 % products.DW_CHUNKS
    y, dx, dw = _both(cpu, x, weight, stride, 1, 7, mode)
    y_ref, dx_ref, dw_ref = _both(ref, x, weight, stride, 1, 7, mode)
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=8 * np.finfo(np.float32).eps * 27 * 8)
    np.testing.assert_allclose(dx, dx_ref, atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(dw, dw_ref, atol=2e-3, rtol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("batch", [8, 1])
def test_the_wide_forward_sums_a_long_k_in_equal_chunks(monkeypatch, stride, batch):
    """Where X_col is read in place, K rows go in chunks of at most WIDE_CHUNK_K, as equal
    as they can be: here K = 3 * 3 * 11 = 99 in chunks of 33 (at most 40), for the adder
    layer (framed on the way with 8 images, the frame written first with 1) and the
    convolution; both equal the reference."""
    from minadder.kernels.cpu import forward
    assert [forward.even_chunk(n, 288) for n in (1, 144, 288, 289, 576, 600)] == [1, 144, 288, 145, 288, 200]
    monkeypatch.setattr(forward, "WIDE_CHUNK_K", 40)
    chunks = []
    even_chunk = forward.even_chunk
    monkeypatch.setattr(forward, "even_chunk", lambda n, most: chunks.append(even_chunk(n, most)) or chunks[-1])
    rng = np.random.default_rng(9)
    x = rng.standard_normal((batch, 11, 30, 30)).astype(np.float32)
    weight = rng.standard_normal((6, 11, 3, 3)).astype(np.float32)
    win = Window.of(x.shape, weight.shape, stride, 1)
    y, _ = cpu.adder2d_forward(x, weight, win)
    np.testing.assert_allclose(y, ref.adder2d_forward(x, weight, win)[0], rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(cpu.conv2d_forward(x, weight, win)[0], ref.conv2d_forward(x, weight, win)[0],
                               rtol=1e-5, atol=1e-4)
    assert chunks == [33, 33], chunks


@pytest.mark.parametrize("mode", ref.GRAD_MODES)
@pytest.mark.parametrize("kernel", [3, 2])
def test_dw_register_blocks_over_groups_of_images_give_the_reference(mode, kernel):
    """The wide dW runs each register block over a group of images (DW_GROUP_VECTORS):
    here 12x12 images, groups of six (three with AVX2's shorter vectors), and chunks of
    seven images (four of the kernel's tasks a thread, or more) that end mid-group. 13
    filters: whole blocks, then (full mode, AVX-512) a narrow block, and the filter left
    over takes the edge sums, image by image; with 2x2 filters (K = 8) two rows do too."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((56, 2, 12, 12)).astype(np.float32)
    weight = rng.standard_normal((13, 2, kernel, kernel)).astype(np.float32)
    win = Window.of(x.shape, weight.shape, 1, 1)
    npos = positions.wide_count(win, frame.frame_pitch(win))
    group = grad_weight.DW_GROUP_VECTORS // -(-npos // vector_length(4))
    assert npos >= grad_weight.WIDE_DW_MIN_POSITIONS and 2 <= group < 56 // 8, group
    assert 13 % register_block.DOT_FILTERS and win.k % register_block.DOT_ROWS == (0 if kernel == 3 else 2)
    y, dx, dw = _both(cpu, x, weight, 1, 1, 8, mode)
    y_ref, dx_ref, dw_ref = _both(ref, x, weight, 1, 1, 8, mode)
    np.testing.assert_allclose(dw, dw_ref, **_grad_tol(np.float32, 56 * 144, x, weight))


@pytest.mark.parametrize("numba_threads", [2], indirect=True)
@pytest.mark.parametrize("mode", ref.GRAD_MODES)
@pytest.mark.parametrize("lane_bytes, slabs", [(0, True), (1 << 40, False)])
def test_dw_register_blocks_split_by_filters_give_the_reference(numba_threads, monkeypatch, mode, lane_bytes, slabs):
    """Where the blocks' lane-wise sums would pass DW_LANE_BYTES, each task takes a slab of
    the filters over every image (whole blocks; the last slab the narrow block and the
    filter left over): 29 filters, 12x12 images. dW equals the reference either way, and
    so does the ordinary convolution's, which runs the same kernel."""
    if numba_threads < 2:
        pytest.skip("one thread: one task")
    monkeypatch.setattr(grad_weight, "DW_LANE_BYTES", lane_bytes)
    rng = np.random.default_rng(12)
    x = rng.standard_normal((6, 2, 12, 12)).astype(np.float32)
    weight = rng.standard_normal((29, 2, 3, 3)).astype(np.float32)
    win = Window.of(x.shape, weight.shape, 1, 1)
    want = (1, numba_threads) if slabs else (min(6, numba_threads), 1)
    assert grad_weight.wide_tasks(win, np.float32, mode == "full") == want
    y, dx, dw = _both(cpu, x, weight, 1, 1, 8, mode)
    y_ref, dx_ref, dw_ref = _both(ref, x, weight, 1, 1, 8, mode)
    np.testing.assert_allclose(dw, dw_ref, **_grad_tol(np.float32, 6 * 144, x, weight))
    if mode == "full":
        y_conv, saved = cpu.conv2d_forward(x, weight, win)
        g = np.random.default_rng(8).standard_normal(y_conv.shape).astype(np.float32)
        dw_conv = cpu.conv2d_backward(g, saved)[1]
        dw_conv_ref = ref.conv2d_backward(g, ref.conv2d_forward(x, weight, win)[1])[1]
        np.testing.assert_allclose(dw_conv, dw_conv_ref, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("mode", ref.GRAD_MODES)
def test_dw_register_blocks_take_the_rows_span_by_span_where_their_sums_are_large(mode):
    """Where a task's lane-wise sums pass DW_SPAN_BYTES, the blocks take the rows of X'
    span by span over every group of images: 61 filters (whole blocks, a narrow one, one
    left over) and K = 1160 (2x2 filters on 290 channels: rows left over too), 4.5 MB of
    sums with AVX-512 (three spans), 2.3 MB with AVX2 (two). dW equals the reference."""
    rng = np.random.default_rng(13)
    x = rng.standard_normal((3, 290, 10, 10)).astype(np.float32)
    weight = rng.standard_normal((61, 290, 2, 2)).astype(np.float32)
    win = Window.of(x.shape, weight.shape, 1, 1)
    lanes = vector_length(4)
    assert 61 * win.k * lanes * 4 > grad_weight.DW_SPAN_BYTES and win.k % register_block.DOT_ROWS
    assert positions.wide_count(win, frame.frame_pitch(win)) >= grad_weight.WIDE_DW_MIN_POSITIONS
    y, dx, dw = _both(cpu, x, weight, 1, 1, 8, mode)
    y_ref, dx_ref, dw_ref = _both(ref, x, weight, 1, 1, 8, mode)
    np.testing.assert_allclose(dw, dw_ref, **_grad_tol(np.float32, 3 * 121, x, weight))


@pytest.mark.parametrize("slabs, filters, n_t", [(1, 8, 29), (2, 8, 29), (2, 4, 61), (3, 8, 100), (2, 8, 16)])
def test_dw_slabs_cover_every_filter_once_and_spans_fit_their_bound(slabs, filters, n_t):
    """The slabs of filters follow each other from 0 to n_t, each its whole blocks, the
    last also the narrow blocks and the filters left over; a span holds every row where
    their sums fit DW_SPAN_BYTES, else whole blocks of rows that fit (one at the least)."""
    narrow = filters // 2
    t_main = n_t - n_t % filters
    t_end = t_main + (n_t - t_main) // narrow * narrow
    slab = t_main // filters // slabs * filters
    bounds = [grad_weight._slab_filters(s, slabs, slab, t_main, t_end, n_t) for s in range(slabs)]
    assert bounds[0][0] == 0 and bounds[-1][1:] == (t_main, t_end, n_t)
    for (lo, hi, nar, stop), following in zip(bounds, bounds[1:] + [(n_t,)]):
        assert (hi - lo) % filters == 0 and lo <= hi <= nar <= stop == following[0]
    cap = grad_weight.DW_SPAN_BYTES
    assert grad_weight._span_rows(cap // 100, 100, 3) == 100
    assert grad_weight._span_rows(cap // 100, 101, 3) == 99
    assert grad_weight._span_rows(2 * cap, 101, 3) == 3


@pytest.mark.parametrize("product", ["auto", "numba", "blas"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [(37, 29), (8, 8)])
def test_both_full_mode_products_give_the_reference_dw(monkeypatch, product, stride, size):
    """dW's G X'^T through the register blocks or through BLAS (FULL_DW_PRODUCT), in
    chunks of X_col (on wide positions, or on exact ones for short rows): both equal the
    reference, also with a large shared offset."""
    monkeypatch.setattr(grad_weight, "FULL_DW_PRODUCT", product)
    rng = np.random.default_rng(5)
    x = (300 + rng.standard_normal((9, 3) + size)).astype(np.float32)
    weight = (300 + rng.standard_normal((6, 3, 3, 3))).astype(np.float32)
    _, _, dw = _both(cpu, x, weight, stride, 1, 3, "full")
    _, _, dw_ref = _both(ref, x.astype(np.float64), weight.astype(np.float64), stride, 1, 3, "full")
    assert _relative_error(dw, dw_ref) < 1e-5


@pytest.mark.parametrize("stride", [1, 2])
def test_dw_alone_by_blas_reads_g_as_it_is(monkeypatch, stride):
    """dW alone where it is BLAS on exact columns (short rows, more filters than the
    register blocks take): G is not widened (no pass over it that nothing reads), dW is
    the reference's, and a NaN in G still sends the call to the reference."""
    widened = []
    for module in (cpu, grad_weight):
        original = module.on_wide_positions
        monkeypatch.setattr(module, "on_wide_positions", lambda *a, _f=original: widened.append(1) or _f(*a))
    rng = np.random.default_rng(9)
    x = rng.standard_normal((4, 5, 8 * stride, 8 * stride)).astype(np.float32)
    weight = rng.standard_normal((grad_weight.WIDE_DW_MAX_CHANNELS + 3, 5, 3, 3)).astype(np.float32)
    win = Window.of(x.shape, weight.shape, stride, 1)
    y, saved = cpu.adder2d_forward(x, weight, win)
    g = rng.standard_normal(y.shape).astype(np.float32)
    dx, dw = cpu.adder2d_backward(g, saved, "full", need_input_grad=False)
    uses_blas = products.kernel_gemm(np.dtype(np.float32)) is not None   # NumPy's BLAS callable from Numba
    assert grad_weight.reads_wide_g(win, "full", np.dtype(np.float32)) is not uses_blas
    assert dx is None and len(widened) == (0 if uses_blas else 1)
    assert _relative_error(dw, ref.adder2d_backward(g, ref.adder2d_forward(x, weight, win)[1], "full")[1]) < 1e-5
    g[1, 2, 3, 4] = np.nan
    assert np.isnan(cpu.adder2d_backward(g, saved, "full", need_input_grad=False)[1]).any()
    cpu.adder2d_backward(g, saved, "full")          # dX too: G widened
    assert len(widened) == (1 if uses_blas else 3)


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def numba_threads(request):
    """Numba's thread count for one test (the trainings of results/ run on one thread)."""
    import numba
    previous = numba.get_num_threads()
    numba.set_num_threads(min(request.param, numba.config.NUMBA_NUM_THREADS))
    yield numba.get_num_threads()
    numba.set_num_threads(previous)


def _layer_results(module, x, weight, win, distance, mode):
    """(y, dx, dw) of the adder layer and (y, dx, dw) of the convolution, on one backend."""
    y, saved = module.adder2d_forward(x, weight, win, distance)
    g = np.random.default_rng(3).standard_normal(y.shape).astype(np.float32)
    y_conv, saved_conv = module.conv2d_forward(x, weight, win)
    return (y, *module.adder2d_backward(g, saved, mode)), (y_conv, *module.conv2d_backward(g, saved_conv))


@pytest.mark.parametrize("distance, mode", [("l1", "full"), ("l1", "sign"), ("l2", "full")])
@pytest.mark.parametrize("shape, stride", [((16, 8, 8, 8), 1), ((16, 8, 16, 16), 2), ((3, 4, 40, 30), 1)])
def test_every_path_takes_the_whole_batch_on_any_number_of_threads(numba_threads, distance, mode, shape, stride):
    """The chunks of images that dW's products, the l2 layer and the ordinary convolution
    deal out to the threads are all taken, on one thread as on two: 8x8 images (dW by BLAS
    on chunks of X_col), stride 2 and long rows, against the reference. (On one thread dW
    once took the first chunk alone: 1/8 of the batch.)"""
    rng = np.random.default_rng(11)
    x = rng.standard_normal(shape).astype(np.float32)
    weight = rng.standard_normal((16, shape[1], 3, 3)).astype(np.float32)
    win = Window.of(x.shape, weight.shape, stride, 1)
    (adder, conv), (adder_ref, conv_ref) = (_layer_results(m, x, weight, win, distance, mode) for m in (cpu, ref))
    for name, a, b in zip(("y", "dx", "dw", "conv y", "conv dx", "conv dw"), adder + conv, adder_ref + conv_ref):
        assert _relative_error(a, b) < 1e-5, name


def _relative_error(got, want):
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))


@settings(deadline=None, max_examples=20)
@given(st.floats(0, 1000), st.integers(0, 2**16), st.sampled_from(ref.GRAD_MODES),
       st.sampled_from([1, 2]))
def test_precision_when_inputs_and_filters_share_a_large_offset(offset, seed, mode, stride):
    """|x - w| = x + w - 2 min(x, w) and the full-mode identities cancel large terms when x
    and w sit near a common offset (raw pixels 0-255 into a first layer). Against a
    float64 oracle, the cpu kernels stay within a few times the float32 reference's error."""
    rng = np.random.default_rng(seed)
    x = (offset + rng.standard_normal((3, 4, 7, 6))).astype(np.float32)
    weight = (offset + rng.standard_normal((5, 4, 3, 3))).astype(np.float32)
    results = {}
    for name, module, dtype in (("cpu", cpu, np.float32), ("ref32", ref, np.float32), ("oracle", ref, np.float64)):
        results[name] = _both(module, x.astype(dtype), weight.astype(dtype), stride, 1, seed + 1, mode)
    eps = np.finfo(np.float32).eps
    for part, got, ref32, want in zip(("y", "dx", "dw"), results["cpu"], results["ref32"], results["oracle"]):
        err, err_ref = _relative_error(got, want), _relative_error(ref32, want)
        assert err <= 4 * err_ref + 16 * eps, (part, offset, err, err_ref)


# ------------------------------------------------------------- through the autograd engine
def _numerical_grads(fn, arrays, eps=1e-6):
    """Central differences of fn(*arrays) (a scalar) with respect to every array."""
    grads = []
    for a in arrays:
        g = np.zeros_like(a)
        flat, gflat = a.reshape(-1), g.reshape(-1)
        for i in range(flat.size):
            saved = flat[i]
            flat[i] = saved + eps
            plus = fn(*arrays)
            flat[i] = saved - eps
            minus = fn(*arrays)
            flat[i] = saved
            gflat[i] = (plus - minus) / (2 * eps)
        grads.append(g)
    return grads


@pytest.mark.parametrize("stride,padding", [(1, 0), (2, 1)])
def test_adder2d_gradcheck_on_the_cpu_backend(stride, padding):
    """sign mode is the exact (sub)gradient of Eq. 2, so it must match central
    differences (float64, values kept apart so no |x - w| crosses 0 within eps)."""
    rng = np.random.default_rng(5)
    x = rng.permutation(np.arange(2 * 2 * 5 * 5)).reshape(2, 2, 5, 5) * 0.1 + 0.05
    weight = rng.permutation(np.arange(3 * 2 * 3 * 3)).reshape(3, 2, 3, 3) * 0.1 + 0.025
    proj = rng.standard_normal(F.adder2d(ma.Tensor(x), ma.Tensor(weight), stride, padding).shape)

    def loss(xa, wa):
        return float(np.sum(F.adder2d(ma.Tensor(xa), ma.Tensor(wa), stride, padding, "sign").data * proj))

    with ma.use_backend("cpu"):
        assert ma.get_backend() == "cpu"
        xt, wt = ma.Tensor(x, requires_grad=True), ma.Tensor(weight, requires_grad=True)
        (F.adder2d(xt, wt, stride, padding, "sign") * proj).sum().backward()
        num_x, num_w = _numerical_grads(loss, [x, weight])
    np.testing.assert_allclose(xt.grad, num_x, atol=1e-6)
    np.testing.assert_allclose(wt.grad, num_w, atol=1e-6)


@pytest.mark.parametrize("mode", ref.GRAD_MODES)
def test_adder_layers_agree_across_backends_in_the_engine(mode):
    """The same float32 graph (Adder2d and AdderLinear) on "numpy" and "cpu"."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4, 3, 8, 8)).astype(np.float32)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    wl = rng.standard_normal((7, 5 * 4 * 4)).astype(np.float32)
    results = {}
    for name in ("numpy", "cpu"):
        with ma.use_backend(name):
            xt, wt, wlt = (ma.Tensor(a.copy(), requires_grad=True) for a in (x, w, wl))
            h = F.adder2d(xt, wt, stride=2, padding=1, grad_mode=mode)
            out = F.adder_linear(F.flatten(h), wlt, grad_mode=mode)
            (out * out).mean().backward()
            results[name] = [out.data, xt.grad, wt.grad, wlt.grad]
    for a, b in zip(results["cpu"], results["numpy"]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * (1 + np.abs(b).max()))


@settings(deadline=None, max_examples=15)
@given(dtype=st.sampled_from([np.float32, np.float64]), n=st.integers(1, 3), c=st.integers(1, 4),
       c_out=st.integers(1, 19), k=st.sampled_from([1, 3, 5]), padding=st.integers(0, 2),
       size=st.integers(14, 18), seed=st.integers(0, 2**16))
def test_conv2d_gradients_on_wide_positions_equal_the_reference(dtype, n, c, c_out, k, padding, size, seed):
    """Stride 1, long rows: conv2d and its gradients read the padded input (kernels/cpu/conv.py),
    no X_col; C_out up to 19 covers the blocks of 8 filters and those left over, c * k * k
    odd and even K the pairs of rows and the last one."""
    from minadder.kernels.cpu import conv
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, size, size)).astype(dtype)
    weight = rng.standard_normal((c_out, c, k, k)).astype(dtype)
    win = Window.of(x.shape, weight.shape, 1, padding)
    assert conv.wide_gradients(win)
    y, saved = cpu.conv2d_forward(x, weight, win)
    assert saved[0] is None                      # X_col is not kept
    g = rng.standard_normal(win.y_shape).astype(dtype)
    dx, dw = cpu.conv2d_backward(g, saved)
    y_want, saved_want = ref.conv2d_forward(x, weight, win)
    dx_want, dw_want = ref.conv2d_backward(g, saved_want)
    tol = dict(rtol=1e-4, atol=1e-4 * max(win.k, win.c_out * k * k)) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(y, y_want, **tol)
    np.testing.assert_allclose(dw, dw_want, **tol)
    np.testing.assert_allclose(dx, dx_want, **tol)
    assert cpu.conv2d_backward(g, saved, need_input_grad=False)[0] is None
    assert cpu.conv2d_backward(g, saved, need_weight_grad=False)[1] is None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3, 5, 7, 9), (2, 16, 8, 8), (1, 1, 1, 3), (2, 3, 6, 17), (2, 2, 5, 33)])
@pytest.mark.parametrize("gap", [0, 1, 2])
def test_g_on_wide_positions_starts_each_row_on_a_cache_line(dtype, shape, gap):
    """The kernels load G's rows in whole vectors from their start: on_wide_positions puts
    the array on a 64-byte boundary (and its rows are whole vectors long), holding G at
    q = u * pitch + v and zeros elsewhere; in the same pass its sums over the channels
    (per image and position) and over the positions (per filter), and its finiteness.
    Rows shorter and longer than a vector, ``gap`` dropped positions a row (a row's
    copy in whole vectors reaches into the next row's place, written after it)."""
    n, c_out, ho, wo = shape
    pitch = wo + gap
    g = np.random.default_rng(0).standard_normal((n, c_out, ho * wo)).astype(dtype)
    win = Window(n, 1, ho, wo, c_out, 1, 1, 1, 0)
    for _ in range(3):
        wide = positions.on_wide_positions(g, win, pitch)
        gw = wide.values
        assert gw.ctypes.data % 64 == 0 and (gw.shape[2] * gw.itemsize) % 64 == 0 and gw.flags.c_contiguous
    want = np.zeros(gw.shape, dtype)
    want[:, :, :ho * pitch].reshape(n, c_out, ho, pitch)[..., :wo] = g.reshape(n, c_out, ho, wo)
    np.testing.assert_array_equal(gw, want)
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(wide.channel_sums, want.sum(axis=1, dtype=np.float64), rtol=0, atol=8 * c_out * eps)
    np.testing.assert_allclose(wide.filter_sums, g.sum(axis=(0, 2), dtype=np.float64), rtol=0,
                               atol=8 * g[:, 0].size * eps)
    assert wide.filter_sums.dtype == dtype and wide.finite


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_g_with_an_inf_or_nan_is_not_finite_on_wide_positions(bad):
    """The pass that widens G also tells whether G is finite: the backward then takes the
    reference's definition instead of the identities (as frame.all_finite does)."""
    g = np.ones((2, 3, 4 * 5), np.float32)
    g[1, 2, 7] = bad
    win = Window(2, 1, 4, 5, 3, 1, 1, 1, 0)
    assert positions.on_wide_positions(g, win, 7).finite is False
    g[1, 2, 7] = 1
    assert positions.on_wide_positions(g, win, 7).finite is True


@pytest.mark.parametrize("distance, mode", [("l1", "full"), ("l1", "sign"), ("l2", "full")])
@pytest.mark.parametrize("shape, k, stride, padding", [((3, 4, 12, 12), 3, 1, 1), ((3, 4, 12, 12), 3, 2, 1),
                                                       ((3, 4, 12, 12), 1, 2, 0), ((2, 3, 9, 7), 3, 1, 0)])
def test_the_wide_dx_kernel_adds_dx_plus_as_it_writes_dx(monkeypatch, distance, mode, shape, k, stride, padding):
    """On wide positions (stride 1, stride 2 on the split frame, the 1x1 shortcut's first
    phase) dx_plus is added inside the kernel, never in a pass of its own (plus_if_given,
    the separate pass, is made to fail wherever it is called from), and the result is
    dX + dx_plus bit for bit."""
    from minadder.kernels.cpu import grad_input
    rng = np.random.default_rng(7)
    x = rng.standard_normal(shape).astype(np.float32)
    weight = rng.standard_normal((5, shape[1], k, k)).astype(np.float32)
    win = Window.of(x.shape, weight.shape, stride, padding)
    assert positions.wide_rows(win)
    y, saved = cpu.adder2d_forward(x, weight, win, distance=distance)
    g, plus = rng.standard_normal(y.shape).astype(np.float32), rng.standard_normal(x.shape).astype(np.float32)
    dx, dw = cpu.adder2d_backward(g, saved, mode)

    def no_separate_pass(dx, plus):
        assert plus is None, "dx_plus added in a pass of its own"
        return dx
    for module in (cpu, grad_input):
        monkeypatch.setattr(module, "plus_if_given", no_separate_pass)
    dx_plus, dw_plus = cpu.adder2d_backward(g, saved, mode, dx_plus=plus)
    np.testing.assert_array_equal(dx_plus, dx + plus)
    np.testing.assert_array_equal(dw_plus, dw)


def test_dw_chunks_of_x_col_are_bounded(monkeypatch):
    """The dW products build X_col for chunks of at most DW_CHUNK_NUMBERS numbers (one image
    at the least; the convolution keeps its eighths of the batch), and dW through BLAS on
    such chunks, here of two images (an eighth of the batch would be three) and a last one
    alone, is the reference's."""
    wide = Window.of((64, 128, 32, 32), (256, 128, 3, 3), 1, 1)
    assert [c.stop - c.start for c in products.image_chunks(wide)] == [8] * 8
    assert [c.stop - c.start for c in products.image_chunks(wide, products.DW_CHUNK_NUMBERS)] == [1] * 64
    small = Window.of((64, 16, 8, 8), (16, 16, 3, 3), 1, 1)
    assert products.image_chunks(small, products.DW_CHUNK_NUMBERS) == products.image_chunks(small)
    rng = np.random.default_rng(12)
    for stride in (1, 2):
        x = rng.standard_normal((21, 4, 8 * stride, 8 * stride)).astype(np.float32)
        weight = rng.standard_normal((grad_weight.WIDE_DW_MAX_CHANNELS + 3, 4, 3, 3)).astype(np.float32)
        win = Window.of(x.shape, weight.shape, stride, 1)
        monkeypatch.setattr(products, "DW_CHUNK_NUMBERS", 2 * win.k * win.plane + 1)
        assert [c.stop - c.start for c in products.image_chunks(win, products.DW_CHUNK_NUMBERS)] == [2] * 10 + [1]
        y, saved = cpu.adder2d_forward(x, weight, win)
        g = rng.standard_normal(y.shape).astype(np.float32)
        dw = cpu.adder2d_backward(g, saved, "full", need_input_grad=False)[1]
        dw_ref = ref.adder2d_backward(g, ref.adder2d_forward(x, weight, win)[1], "full")[1]
        assert _relative_error(dw, dw_ref) < 1e-5


def test_dw_by_blas_holds_few_copies_of_dw_at_once():
    """Full-mode dW through BLAS on many filters (dW 9 MB: 512 filters of 512 x 3 x 3): the
    tasks' partial sums, their total transposed, then dW and one temporary; never the
    partial sums beside three more copies (the total, its transpose and a dW of zeros), as
    before 2026-12-07. And dW equals the reference."""
    import tracemalloc
    if products.kernel_gemm(np.float32) is None:
        pytest.skip("NumPy's BLAS is not OpenBLAS: dW takes Python threads")
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4, 512, 4, 4)).astype(np.float32)
    weight = rng.standard_normal((512, 512, 3, 3)).astype(np.float32)
    win = Window.of(x.shape, weight.shape, 1, 1)
    y, saved = cpu.adder2d_forward(x, weight, win)
    g = rng.standard_normal(y.shape).astype(np.float32)
    parts = products.chunk_tasks(win, products.DW_CHUNK_NUMBERS)[1]
    cpu.adder2d_backward(g, saved, "full", need_input_grad=False)    # compiled before: Numba's own allocations
    tracemalloc.start()
    dw = cpu.adder2d_backward(g, saved, "full", need_input_grad=False)[1]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < (parts + 2) * dw.nbytes, (peak / dw.nbytes, parts)
    dw_ref = ref.adder2d_backward(g, ref.adder2d_forward(x, weight, win)[1], "full")[1]
    assert _relative_error(dw, dw_ref) < 1e-5


@pytest.mark.parametrize("c, size, reads_wide", [(64, 8, False), (16, 32, True)])
def test_the_backward_lets_widened_g_go_before_a_dw_that_does_not_read_it(monkeypatch, c, size, reads_wide):
    """dX reads G on wide positions; dW by BLAS (64 filters on 8x8 images) reads G as it
    is, so the widened copy is let go before dW runs (its sums kept); the register blocks
    (16 filters on 32x32) read it. Both gradients still equal the reference."""
    if products.kernel_gemm(np.float32) is None:
        pytest.skip("NumPy's BLAS is not OpenBLAS: dW takes Python threads")
    seen = []
    blocked = cpu.blocked_grad_weight
    monkeypatch.setattr(cpu, "blocked_grad_weight", lambda w2, g, win, mode, frame, wide=None: seen.append(
        (wide.values is not None, wide.filter_sums is not None)) or blocked(w2, g, win, mode, frame, wide))
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, c, size, size)).astype(np.float32)
    weight = rng.standard_normal((c, c, 3, 3)).astype(np.float32)
    y, dx, dw = _both(cpu, x, weight, 1, 1, 9, "full")
    assert seen == [(reads_wide, True)]
    y_ref, dx_ref, dw_ref = _both(ref, x, weight, 1, 1, 9, "full")
    assert _relative_error(dx, dx_ref) < 1e-5 and _relative_error(dw, dw_ref) < 1e-5


@pytest.mark.parametrize("c_out, size, blocks", [(16, 32, True), (32, 16, True), (64, 16, True), (128, 16, False),
                                                 (64, 32, True), (128, 32, True), (256, 32, False), (64, 8, False)])
def test_full_dw_takes_the_product_measured_faster(c_out, size, blocks):
    """Full mode's G X'^T through the register blocks or BLAS as measured (grad_weight.py's
    table): blocks up to 64 filters on long rows, 128 on 32x32 images, BLAS beyond and on
    short rows (8x8)."""
    win = Window.of((64, c_out, size, size), (c_out, c_out, 3, 3), 1, 1)
    assert grad_weight._blocks(win) is blocks


@pytest.mark.parametrize("c, size, k, stride, padding, in_place", [
    (16, 32, 3, 1, 1, True), (16, 32, 3, 2, 1, True), (64, 8, 3, 1, 1, False), (32, 16, 3, 2, 1, False),
    (32, 16, 1, 2, 0, True), (16, 32, 1, 2, 0, True), (64, 8, 1, 1, 0, True), (8, 10, 1, 3, 0, False)])
def test_the_forward_reads_x_col_in_place_as_measured(c, size, k, stride, padding, in_place):
    """The forward reads X_col in place on long rows and on rows without gaps (1x1 layers,
    8x8 outputs included), packs it on short rows with gaps (3x3 at 8x8) and at stride 3."""
    win = Window.of((64, c, size, size), (2 * c, c, k, k), stride, padding)
    assert forward._in_place(win, frame.frame_pitch(win)) is in_place


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("batch", [8, 1])
def test_a_1x1_forward_writes_rows_without_gaps_in_one_run(stride, batch):
    """A 1x1 layer's wide positions are its output positions: the forward writes a task's
    rows as one run. Tasks of several rows that start past the first (framed on the way
    with 8 images at stride 1; with 1 image, rows split for the threads) equal the reference."""
    from minadder.kernels.cpu import forward
    rng = np.random.default_rng(12)
    x = rng.standard_normal((batch, 5, 40, 36)).astype(np.float32)
    weight = rng.standard_normal((7, 5, 1, 1)).astype(np.float32)
    win = Window.of(x.shape, weight.shape, stride, 0)
    assert frame.frame_pitch(win) == win.wo and forward._in_place(win, win.wo)
    y, _ = cpu.adder2d_forward(x, weight, win)
    np.testing.assert_allclose(y, ref.adder2d_forward(x, weight, win)[0], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("stride", [1, 2])
def test_sign_dx_by_register_blocks_equals_the_reference_ties_included(stride):
    """Sign-mode dX (Eq. 4) through dX's register blocks (the main block, the 1-row blocks
    for the ninth row of each channel, the 1-vector blocks for the positions left over)
    equals the reference on coarse values, with many exact ties x == w where sgn(0) = 0."""
    rng = np.random.default_rng(13)
    x = (rng.integers(-3, 4, size=(3, 5, 20 * stride, 37)) / 2).astype(np.float32)
    weight = (rng.integers(-3, 4, size=(7, 5, 3, 3)) / 2).astype(np.float32)
    win = Window.of(x.shape, weight.shape, stride, 1)
    assert positions.wide_rows(win)
    y, saved = cpu.adder2d_forward(x, weight, win)
    g = rng.standard_normal(y.shape).astype(np.float32)
    dx = cpu.adder2d_backward(g, saved, "sign", need_weight_grad=False)[0]
    dx_ref = ref.adder2d_backward(g, ref.adder2d_forward(x, weight, win)[1], "sign")[0]
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sign_gradients_see_differences_below_the_normal_numbers(dtype):
    """Sign mode's dX and dW (Eq. 4) where every x - w is 0 or one step of the number line
    near the smallest normal number (a subnormal difference): its sign, never 0, as the
    reference's comparisons give it (the AVX-512 blocks take sgn of the difference)."""
    rng = np.random.default_rng(14)
    tiny = np.finfo(dtype).tiny
    steps = np.array([np.nextafter(tiny, dtype(0)), tiny, np.nextafter(tiny, dtype(1))], dtype=dtype)
    x = steps[rng.integers(0, 3, size=(2, 3, 12, 40))]
    weight = np.full((5, 3, 3, 3), tiny, dtype=dtype)
    win = Window.of(x.shape, weight.shape, 1, 1)
    y, saved = cpu.adder2d_forward(x, weight, win)
    g = rng.standard_normal(y.shape).astype(dtype)
    dx, dw = cpu.adder2d_backward(g, saved, "sign")
    dx_ref, dw_ref = ref.adder2d_backward(g, ref.adder2d_forward(x, weight, win)[1], "sign")
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-5, atol=1e-4)
