"""inf and NaN in the adder layer: every CPU backend agrees with the NumPy reference (issue 24, item 6).

"Agree" means: NaN at the same positions, the same infinities (position and sign) and the
finite values within float32 rounding, for the forward and both gradients in both grad
modes. The inputs, the filters or the incoming gradient hold inf, -inf or NaN at
positions Hypothesis chooses. The cuda backend is held to the same under the simulator
(tests/cuda_sim/test_sim_nonfinite.py).
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minadder.kernels import cpu, geometry, reference
from minadder.kernels.cpu import naive

SPECIALS = (np.inf, -np.inf, np.nan)
pytestmark = pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")   # the reference's own inf - inf


def assert_agree(got, want, what):
    """Same NaN positions, same infinities, finite values within tolerance."""
    assert got.shape == want.shape, what
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"{what}: NaN positions differ")
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want), err_msg=f"{what}: +inf positions differ")
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want), err_msg=f"{what}: -inf positions differ")
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-4, atol=1e-4, err_msg=what)


@st.composite
def layer_with_specials(draw):
    """x, F, G and the window of a small adder layer, with a few inf / -inf / NaN planted."""
    n, c, c_out = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 5))
    k, stride, padding = draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(0, 1))
    h = draw(st.integers(k, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal((n, c, h, h)).astype(np.float32)
    w = rng.standard_normal((c_out, c, k, k)).astype(np.float32)
    win = geometry.Window.of(x.shape, w.shape, stride, padding)
    g = rng.standard_normal(win.y_shape).astype(np.float32)
    arrays = {"x": x, "w": w, "g": g}
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(sorted(arrays)))
        target = arrays[name]
        target.flat[draw(st.integers(0, target.size - 1))] = draw(st.sampled_from(SPECIALS))
    return x, w, g, win


def check_backend(backend, x, w, g, win):
    y_ref, saved_ref = reference.adder2d_forward(x, w, win)
    y, saved = backend.adder2d_forward(x, w, win)
    assert_agree(y, y_ref, "forward")
    for mode in ("full", "sign"):
        dx_ref, dw_ref = reference.adder2d_backward(g, saved_ref, mode)
        dx, dw = backend.adder2d_backward(g, saved, mode)
        assert_agree(dx, dx_ref, f"dX ({mode})")
        assert_agree(dw, dw_ref, f"dF ({mode})")


def one_special(x_shape, w_shape, where, special, seed, at):
    """(x, w, g, win) of a random stride-1, padding-1 layer with ``special`` (inf or NaN) put
    into operand ``where`` ("x", "w" or "g") at the fraction ``at`` of its entries."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    win = geometry.Window.of(x.shape, w.shape, 1, 1)
    g = rng.standard_normal(win.y_shape).astype(np.float32)
    target = {"x": x, "w": w, "g": g}[where]
    target.flat[int(target.size * at)] = special
    return x, w, g, win


@pytest.mark.parametrize("backend", [cpu, naive], ids=["cpu", "naive"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=layer_with_specials())
def test_backends_agree_with_the_reference_on_inf_and_nan(backend, case):
    check_backend(backend, *case)


@pytest.mark.parametrize("special", SPECIALS)
@pytest.mark.parametrize("where", ["x", "w", "g"])
@pytest.mark.parametrize("x_shape", [(2, 4, 20, 20), (9, 4, 12, 12)], ids=["long-rows", "framed-per-image"])
def test_a_wide_layer_with_one_special_value_agrees(where, special, x_shape):
    """A stride-1 layer big enough for the blocked kernels' wide paths (and dW's no-X_col
    path); with 9 images, the forward that frames x image by image (forward.py)."""
    check_backend(cpu, *one_special(x_shape, (8, 4, 3, 3), where, special, seed=0, at=1 / 3))


@pytest.mark.filterwarnings("error")
def test_the_cpu_backend_computes_nan_without_warnings():
    x = np.full((1, 1, 3, 3), np.inf, np.float32)
    w = np.full((1, 1, 2, 2), np.inf, np.float32)
    win = geometry.Window.of(x.shape, w.shape, 1, 0)
    y, saved = cpu.adder2d_forward(x, w, win)
    dx, dw = cpu.adder2d_backward(np.ones_like(y), saved, "full")
    assert np.isnan(y).all() and np.isnan(dx).all() and np.isnan(dw).all()


def test_finite_inputs_keep_the_blocked_kernels_and_others_go_to_the_reference(monkeypatch):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    win = geometry.Window.of(x.shape, w.shape, 1, 1)
    g = np.ones(win.y_shape, np.float32)
    calls = []
    for name in ("adder2d_forward", "adder2d_backward"):
        original = getattr(reference, name)
        monkeypatch.setattr(reference, name, lambda *a, _f=original, _n=name, **k: calls.append(_n) or _f(*a, **k))
    y, saved = cpu.adder2d_forward(x, w, win)
    cpu.adder2d_backward(g, saved, "full")
    assert calls == [] and saved.finite                 # finite: the blocked kernels alone
    g[0, 0, 0, 0] = np.nan
    cpu.adder2d_backward(g, saved, "full")
    assert calls == ["adder2d_backward"]                # a NaN in G: the reference's backward
    x[1, 2, 3, 4] = np.inf
    y, saved = cpu.adder2d_forward(x, w, win)
    assert calls[-1] == "adder2d_forward" and not saved.finite
    assert np.isneginf(y[1]).any() and np.isfinite(y[0]).all()


def test_a_1x1_stride_2_layer_tests_only_the_rows_it_reads(monkeypatch):
    """A 1x1 stride-2 layer never reads x's odd rows and columns (nor does the reference):
    an inf there keeps the blocked kernels, and forward and gradients equal the reference's
    (dX 0 where x is not read); an inf read goes to the reference."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((8, 4, 10, 10)).astype(np.float32)
    w = rng.standard_normal((6, 4, 1, 1)).astype(np.float32)
    win = geometry.Window.of(x.shape, w.shape, 2, 0)
    g = rng.standard_normal(win.y_shape).astype(np.float32)
    calls = []
    for name in ("adder2d_forward", "adder2d_backward"):
        original = getattr(reference, name)
        monkeypatch.setattr(reference, name, lambda *a, _f=original, _n=name, **k: calls.append(_n) or _f(*a, **k))
    x[3, 1, 5, 2] = np.inf                               # row 5: odd, not read
    x[2, 0, 4, 3] = np.inf                               # row 4, column 3: odd, not read
    y, saved = cpu.adder2d_forward(x, w, win)
    dx, dw = cpu.adder2d_backward(g, saved, "full")
    assert calls == [] and saved.finite
    y_ref, saved_ref = reference.adder2d_forward(x, w, win)
    dx_ref, dw_ref = reference.adder2d_backward(g, saved_ref, "full")
    for got, want, what in ((y, y_ref, "y"), (dx, dx_ref, "dx"), (dw, dw_ref, "dw")):
        assert_agree(got, want, what)
    assert not dx[:, :, 1::2].any() and not dx[:, :, :, 1::2].any()
    calls.clear()
    x[3, 1, 4, 2] = np.inf                               # row 4: even, read
    y, saved = cpu.adder2d_forward(x, w, win)
    assert calls == ["adder2d_forward"] and not saved.finite and np.isneginf(y[3]).any()


def test_an_overflowing_sum_of_finite_numbers_is_still_correct():
    """The finiteness test is a sum: finite numbers whose sum overflows read as not finite and
    go to the reference, which is slower but right."""
    x = np.full((1, 1, 4, 4), 3e38, np.float32)
    w = np.zeros((1, 1, 1, 1), np.float32)
    win = geometry.Window.of(x.shape, w.shape, 1, 0)
    assert not cpu._finite(x)
    y, _ = cpu.adder2d_forward(x, w, win)
    np.testing.assert_array_equal(y, np.full((1, 1, 4, 4), -3e38, np.float32))


@pytest.mark.parametrize("mode", ["full", "sign"])
def test_a_gradient_whose_sums_overflow_goes_to_the_reference(mode, monkeypatch):
    """G's finiteness comes from its sums in the pass that widens it (positions.on_wide_positions),
    taken in G's dtype: finite float32 numbers whose sums overflow read as not finite (as
    frame.all_finite's), and the backward is the reference's."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 2, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    win = geometry.Window.of(x.shape, w.shape, 1, 1)
    g = np.full(win.y_shape, 2e38, np.float32)
    g[:, 1::2] = -2e38                   # each filter's sum over its 72 positions overflows float32
    calls = []
    original = reference.adder2d_backward
    monkeypatch.setattr(reference, "adder2d_backward", lambda *a, **k: calls.append(1) or original(*a, **k))
    y, saved = cpu.adder2d_forward(x, w, win)
    dx, dw = cpu.adder2d_backward(g, saved, mode)
    assert calls == [1]
    with np.errstate(over="ignore", invalid="ignore"):      # as cpu.adder2d_backward calls it
        want = original(g, (x, w, win, "l1"), mode, True, True)
    np.testing.assert_array_equal(dx, want[0])
    np.testing.assert_array_equal(dw, want[1])


@pytest.mark.parametrize("variant", ["dx_full", "dx_sign", "dw_sign"])
def test_the_gpu_kernels_pass_nan_through_their_min_max_and_sign(variant):
    """On a GPU, min and max are fminf / fmaxf (a NaN operand is dropped) and comparisons with
    NaN are false, which the simulator does not show: the compiled kernels must test for NaN
    (setp.nan) and select it (selp). Needs numba-cuda's PTX compiler, not a GPU."""
    pytest.importorskip("numba_cuda")
    from numba import cuda
    from minadder.kernels.cuda import tiled
    try:
        ptx, _ = cuda.compile_ptx(tiled.tiled_kernel_source(variant, "16x64"),
                                  "void(float32[:, ::1], float32[:, ::1], float32[:, ::1], float32[:, :, ::1], int64)",
                                  cc=(9, 0))
    except Exception as exc:  # noqa: BLE001 -- NVVM missing raises several kinds
        pytest.skip(f"numba.cuda.compile_ptx unavailable: {type(exc).__name__}")
    assert "setp.nan.f32" in ptx and "selp.f32" in ptx
