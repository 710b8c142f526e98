"""minadder.torch.adder2d against PyTorch's own unfold formulation of the adder layer."""
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason='minadder.torch needs PyTorch: pip install "minadder[torch]"')
from hypothesis import given, settings, strategies as st  # noqa: E402

import minadder.torch as mt  # noqa: E402
from minadder import Tensor, functional as F  # noqa: E402
from minadder.torch import function  # noqa: E402

FEW = settings(deadline=None, max_examples=10)


def unfold_adder(x, w, stride, padding):
    """Eq. 2 with torch alone: unfold the receptive fields to (N, K, L) and sum |cols - w|
    over K for every filter; its autograd gives the sign-mode gradients (Eq. 4)."""
    n, _, h, wd = x.shape
    c_out, _, kh, kw = w.shape
    ho, wo = (h + 2 * padding - kh) // stride + 1, (wd + 2 * padding - kw) // stride + 1
    cols = torch.nn.functional.unfold(x, (kh, kw), padding=padding, stride=stride)     # (N, K, L)
    y = -(cols.unsqueeze(1) - w.reshape(1, c_out, -1, 1)).abs().sum(2)                   # (N, C_out, L)
    return y.reshape(n, c_out, ho, wo)


def full_mode_closed_forms(x, w, g, stride, padding):
    """Eqs. 5-6 on the unfolded input: dF = sum G (X - F), dX = fold(sum_t G HardTanh(F - X))."""
    n, _, h, wd = x.shape
    c_out, _, kh, kw = w.shape
    cols = torch.nn.functional.unfold(x, (kh, kw), padding=padding, stride=stride)     # (N, K, L)
    g3 = g.reshape(n, c_out, -1)                                                         # (N, C_out, L)
    w2 = w.reshape(c_out, -1)                                                            # (C_out, K)
    diff = cols.unsqueeze(1) - w2.reshape(1, c_out, -1, 1)                              # (N, C_out, K, L)
    dw = (g3.unsqueeze(2) * diff).sum(dim=(0, 3)).reshape(w.shape)
    dcols = (g3.unsqueeze(2) * (-diff).clamp(-1, 1)).sum(1)                             # (N, K, L)
    dx = torch.nn.functional.fold(dcols, (h, wd), (kh, kw), padding=padding, stride=stride)
    return dx, dw


@st.composite
def layers(draw):
    n, c, c_out = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 5))
    h, w = draw(st.integers(2, 6)), draw(st.integers(2, 6))
    padding = draw(st.integers(0, 1))
    d = draw(st.integers(1, min(3, h + 2 * padding, w + 2 * padding)))
    stride = draw(st.integers(1, 2))
    return (n, c, h, w), (c_out, c, d, d), stride, padding


def away_from_kinks(x_shape, w_shape, seed, gap=0.05):
    """float64 x and w whose every difference x - w (and 0 - w, for padding) is at least
    ``gap`` from 0: the values are distinct points of a grid, x on odd, w on even steps."""
    rng = np.random.default_rng(seed)
    nx, nw = int(np.prod(x_shape)), int(np.prod(w_shape))
    x = (2 * rng.integers(-40, 40, nx) + 1) * gap
    w = 2 * rng.choice(np.r_[np.arange(-40, 0), np.arange(1, 41)], nw) * gap
    return (torch.tensor(x.reshape(x_shape), requires_grad=True),
            torch.tensor(w.reshape(w_shape), requires_grad=True))


@FEW
@given(layers(), st.integers(0, 2**16))
def test_forward_matches_unfold_formulation(layer, seed):
    x_shape, w_shape, stride, padding = layer
    gen = torch.Generator().manual_seed(seed)
    x, w = torch.randn(x_shape, generator=gen, dtype=torch.float64), torch.randn(w_shape, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(mt.adder2d(x, w, stride, padding), unfold_adder(x, w, stride, padding))


@FEW
@given(layers(), st.integers(0, 2**16))
def test_sign_mode_passes_gradcheck_away_from_the_kinks(layer, seed):
    x_shape, w_shape, stride, padding = layer
    x, w = away_from_kinks(x_shape, w_shape, seed)
    assert torch.autograd.gradcheck(lambda a, b: mt.adder2d(a, b, stride, padding, "sign"), (x, w),
                                    eps=1e-3, atol=1e-6)


@FEW
@given(layers(), st.integers(0, 2**16))
def test_sign_mode_equals_autograd_of_unfold_formulation(layer, seed):
    x_shape, w_shape, stride, padding = layer
    x, w = away_from_kinks(x_shape, w_shape, seed)
    g = torch.randn(unfold_adder(x, w, stride, padding).shape, dtype=torch.float64)
    ours = torch.autograd.grad(mt.adder2d(x, w, stride, padding, "sign"), (x, w), g)
    theirs = torch.autograd.grad(unfold_adder(x, w, stride, padding), (x, w), g)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)


@FEW
@given(layers(), st.integers(0, 2**16))
def test_full_mode_gradients_are_eqs_5_and_6(layer, seed):
    x_shape, w_shape, stride, padding = layer
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(x_shape, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(w_shape, generator=gen, dtype=torch.float64, requires_grad=True)
    y = mt.adder2d(x, w, stride, padding, "full")
    g = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    dx, dw = torch.autograd.grad(y, (x, w), g)
    dx_ref, dw_ref = full_mode_closed_forms(x.detach(), w.detach(), g, stride, padding)
    torch.testing.assert_close(dw, dw_ref)
    torch.testing.assert_close(dx, dx_ref)


def test_float32_matches_minadder_functional_bit_for_bit():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((4, 3, 9, 9)).astype(np.float32), rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    g = rng.standard_normal((4, 5, 5, 5)).astype(np.float32)
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    y = mt.adder2d(tx, tw, 2, 1)
    y.backward(torch.tensor(g))
    mx, mw = Tensor(x, requires_grad=True), Tensor(w, requires_grad=True)
    with __import__("minadder").use_backend("cpu"):
        my = F.adder2d(mx, mw, 2, 1)
        my.backward(g)
    assert y.dtype == torch.float32
    np.testing.assert_array_equal(y.detach().numpy(), my.data)
    np.testing.assert_array_equal(tx.grad.numpy(), mx.grad)
    np.testing.assert_array_equal(tw.grad.numpy(), mw.grad)


def cpu_kernels():
    from minadder import backend
    return backend.kernels("cpu")


def spy(monkeypatch, name, record):
    """Wrap the cpu backend's contract function ``name``: record(args, result) at each call."""
    kernels = cpu_kernels()
    original = getattr(kernels, name)

    def wrapper(*args, **kwargs):
        out = original(*args, **kwargs)
        record(args, out)
        return out

    monkeypatch.setattr(kernels, name, wrapper)


def test_needs_input_grad_is_respected(monkeypatch):
    asked = []
    spy(monkeypatch, "adder2d_backward", lambda args, out: asked.append((args[3:], out[0] is None, out[1] is None)))
    x = torch.randn(2, 3, 5, 5)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    mt.adder2d(x, w, 1, 1).sum().backward()           # a first layer: no dX
    assert asked == [((False, True), True, False)] and x.grad is None and w.grad is not None
    asked.clear()
    x.requires_grad_(True)
    w2 = w.detach()                                    # frozen filters: no dF
    mt.adder2d(x, w2, 1, 1).sum().backward()
    assert asked == [((True, False), False, True)] and x.grad is not None


@pytest.mark.parametrize("mode", ["full", "sign"])
def test_empty_batch_returns_at_once(mode, monkeypatch):
    for name in ("adder2d_forward", "adder2d_backward"):
        monkeypatch.setattr(cpu_kernels(), name, lambda *a: pytest.fail("a kernel ran on an empty batch"))
    x = torch.zeros(0, 3, 8, 8, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    y = mt.adder2d(x, w, 2, 1, mode)
    assert y.shape == (0, 4, 4, 4)
    y.sum().backward()
    assert x.grad.shape == x.shape and torch.equal(w.grad, torch.zeros_like(w))


def _messages(fn):
    try:
        fn()
    except (ValueError, TypeError) as exc:
        return type(exc), str(exc)
    return None


@pytest.mark.parametrize("x_shape, w_shape, stride, padding, mode", [
    ((2, 3, 8), (4, 3, 3, 3), 1, 0, "full"),          # x not 4-D
    ((2, 3, 8, 8), (4, 3, 3), 1, 0, "full"),          # weight not 4-D
    ((2, 2, 8, 8), (4, 3, 3, 3), 1, 0, "full"),       # channels
    ((2, 3, 8, 8), (4, 3, 3, 3), 0, 0, "full"),       # stride
    ((2, 3, 8, 8), (4, 3, 3, 3), 1, -1, "full"),      # padding
    ((2, 3, 8, 8), (4, 3, 3, 3), 1.5, 0, "full"),     # stride not an integer
    ((2, 3, 2, 2), (4, 3, 5, 5), 1, 1, "full"),       # kernel larger than the input
    ((2, 3, 8, 8), (4, 3, 3, 3), 1, 0, "fast"),       # grad mode
])
def test_argument_checks_and_messages_match_minadder_functional(x_shape, w_shape, stride, padding, mode):
    x, w = np.zeros(x_shape, np.float32), np.zeros(w_shape, np.float32)
    ours = _messages(lambda: mt.adder2d(torch.from_numpy(x), torch.from_numpy(w), stride, padding, mode))
    theirs = _messages(lambda: F.adder2d(Tensor(x), Tensor(w), stride, padding, mode))
    assert ours is not None and ours == theirs


def test_unsupported_dtypes_and_mixed_tensors_are_refused_clearly():
    w = torch.randn(4, 3, 3, 3)
    with pytest.raises(TypeError, match=r"cpu tensors must be float32 or float64, got torch.float16"):
        mt.adder2d(torch.randn(1, 3, 5, 5).half(), w.half())
    with pytest.raises(TypeError, match="x is torch.float64 but weight is torch.float32"):
        mt.adder2d(torch.randn(1, 3, 5, 5, dtype=torch.float64), w)
    with pytest.raises(TypeError, match="weight must be a torch.Tensor"):
        mt.adder2d(torch.randn(1, 3, 5, 5), w.numpy())
    with pytest.raises(ValueError, match="eta must be None or a finite non-negative number"):
        mt.adder2d(torch.randn(1, 3, 5, 5), w, eta=-1)


@pytest.mark.parametrize("eta", [float("inf"), float("-inf"), float("nan"), -0.5, True, "0.2"])
def test_eta_must_be_a_finite_non_negative_number(eta):
    x, w = torch.randn(1, 3, 5, 5), torch.randn(4, 3, 3, 3)
    for call in (lambda: mt.adder2d(x, w, eta=eta), lambda: mt.adder_linear(x[:, :, 0, 0], w[:, :, 0, 0], eta=eta)):
        with pytest.raises(ValueError, match=r"adder(2d|_linear): eta must be None or a finite non-negative number"):
            call()


def test_adder_linear_is_adder2d_on_a_1x1_map():
    x, w = torch.randn(5, 7, dtype=torch.float64), torch.randn(3, 7, dtype=torch.float64)
    torch.testing.assert_close(mt.adder_linear(x, w), -(x[:, None, :] - w[None]).abs().sum(-1))
    with pytest.raises(ValueError, match=r"adder_linear: x has 7 features but weight has shape \(3, 6\)"):
        mt.adder_linear(x, w[:, :6])


def test_kernel_threads_follow_torch(monkeypatch):
    import numba

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert mt.kernel_threads() == 1
        seen = []
        spy(monkeypatch, "adder2d_forward", lambda args, out: seen.append(numba.get_num_threads()))
        mt.adder2d(torch.randn(1, 2, 4, 4), torch.randn(3, 2, 3, 3))
        assert seen == [1]
    finally:
        torch.set_num_threads(before)


def test_double_backward_is_refused():
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    (dx,) = torch.autograd.grad(mt.adder2d(x, w).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|does not require grad"):
        dx.sum().backward()


def test_the_backward_reads_what_the_forward_saved(monkeypatch):
    """The backend's ``saved`` goes from its forward to its backward untouched (for the cpu
    backend: the padded, shifted copy of the input made once, in forward)."""
    saved, given = [], []
    spy(monkeypatch, "adder2d_forward", lambda args, out: saved.append(out[1]))
    spy(monkeypatch, "adder2d_backward", lambda args, out: given.append(args[1]))
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    mt.adder2d(x, w, 1, 1).pow(2).sum().backward()
    assert len(saved) == 1 and given == saved
    y, kept = function.forward_tensors(x.detach(), w.detach(), 1, 1)
    dx, dw = function.backward_tensors(x.detach(), w.detach(), 2 * y, kept, "full")
    torch.testing.assert_close(x.grad, dx)
    torch.testing.assert_close(w.grad, dw)


def test_cpu_tensors_reach_the_kernels_without_copies(monkeypatch):
    x, w = torch.randn(2, 3, 6, 6), torch.randn(4, 3, 3, 3)
    seen = {}
    spy(monkeypatch, "adder2d_forward", lambda args, out: seen.update(x=args[0], w=args[1], y=out[0]))
    y = mt.adder2d(x, w, 1, 1)
    assert seen["x"].ctypes.data == x.data_ptr() and np.shares_memory(seen["w"], w.numpy())
    assert y.data_ptr() == seen["y"].ctypes.data          # the kernel's result, not a copy


def test_every_device_type_names_its_backend_and_dtypes():
    from minadder import backend

    assert set(function.DEVICES) == set(function.DTYPES) == {"cpu", "cuda"}
    assert all(entry.backend in backend.BACKENDS for entry in function.DEVICES.values())
    with pytest.raises(ValueError, match="minadder has kernels for cpu and cuda tensors, got a tensor on meta"):
        mt.adder2d(torch.zeros(1, 1, 3, 3, device="meta"), torch.zeros(1, 1, 2, 2, device="meta"))
