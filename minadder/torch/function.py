"""The adder layer as a ``torch.autograd.Function`` over minadder's kernel contract.

Forward (Eq. 2):  Y[n, t, u, v] = -sum_{c,i,j} |Xp[n, c, s*u + i, s*v + j] - F[t, c, i, j]|.
Backward, for G = dLoss/dY:

* "sign" (Eq. 4): dF = sum G * sgn(X - F), dX = sum G * sgn(F - X), the exact subgradient;
* "full" (Eqs. 5-6): dF = sum G * (X - F), dX = sum G * HardTanh(F - X).

The arguments are checked as ``minadder.functional.adder2d`` checks them (the contract's
``check_grad_mode`` and geometry's ``check_window_args``, with the same messages). The
work is the contract's two functions (``minadder.kernels.contract``) on the backend named
after the tensors' device type: ``adder2d_forward(x, weight, win) -> (y, saved)`` in the
forward, ``adder2d_backward(g, saved, mode, need_x, need_w)`` in the backward, with
``saved`` kept between them. ``DEVICES`` says, per device type, how a tensor becomes that
backend's array and back without a copy, and how the kernels run there (threads, stream).
"""
from typing import Callable, NamedTuple

import numpy as np
import torch

from .. import backend, checks
from ..kernels import contract, geometry
from . import streams, threads
from .scaling import check_eta, reference_scale

#: dtypes the kernels compute in, per device type (the cuda kernels are float32 only)
DTYPES = {"cpu": (torch.float32, torch.float64), "cuda": (torch.float32,)}


# ============================================================================ devices
class Device(NamedTuple):
    """How tensors of one device type reach their kernel backend, and come back."""
    backend: str                  # the name of the kernel backend (minadder.backend.kernels)
    array: Callable               # tensor -> the backend's array, sharing the tensor's memory
    tensor: Callable              # (backend array, like) -> a tensor on like's device, sharing memory
    running: Callable             # torch.device -> a context manager to run the kernels in


def _numpy_view(t):
    """A NumPy view of a tensor (``Tensor.numpy()`` shares memory; only a non-contiguous
    tensor is copied, by ``contiguous()``)."""
    return t.detach().contiguous().numpy()


def _from_numpy(a, like):
    """A kernel's result as a tensor sharing its memory (torch keeps the array alive)."""
    return torch.from_numpy(np.ascontiguousarray(a))


def _cuda_tensor(t):
    """The tensor itself: the cuda backend reads it through ``__cuda_array_interface__``."""
    return t.detach().contiguous()


def _from_device_array(a, like):
    """A numba device array as a CUDA tensor on ``like``'s device, sharing its memory."""
    return torch.as_tensor(a, device=like.device)


DEVICES = {
    # CPU tensors: the cpu backend on NumPy views, with torch's thread count
    "cpu": Device("cpu", _numpy_view, _from_numpy, lambda device: threads.torch_thread_count()),
    # CUDA tensors: the cuda backend on the tensors' GPU memory, on PyTorch's current
    # stream; nothing goes through host memory
    "cuda": Device("cuda", _cuda_tensor, _from_device_array, streams.on_torch_stream),
}


def device_of(t):
    """The ``Device`` entry for a tensor, by its device type."""
    kind = t.device.type
    if kind not in DEVICES:
        raise ValueError(f"adder2d: minadder has kernels for cpu and cuda tensors, got a tensor on {t.device}")
    return DEVICES[kind]


def _check_tensors(op, x, weight):
    """Both tensors on one device, of one dtype the kernels compute in."""
    for name, value in (("x", x), ("weight", weight)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(value).__name__}")
    if x.device != weight.device:
        raise ValueError(f"{op}: x is on {x.device} but weight is on {weight.device}")
    device_of(x)
    if x.dtype != weight.dtype:
        raise TypeError(f"{op}: x is {x.dtype} but weight is {weight.dtype}; give both the same dtype")
    allowed = DTYPES[x.device.type]
    if x.dtype not in allowed:
        names = " or ".join(str(d).replace("torch.", "") for d in allowed)
        raise TypeError(f"{op}: {x.device.type} tensors must be {names}, got {x.dtype}; "
                        f"convert them first, e.g. x.float()")


# ============================================================================ the Function
def _is_empty(win):
    """No work: no images, no output channels or no input channels (K = 0)."""
    return win.n == 0 or win.c_out == 0 or win.k == 0 or win.plane == 0


def forward_tensors(x, weight, stride, padding, distance="l1"):
    """(y, saved): Eq. 2 (or Eq. 27, ``distance="l2"``) on tensors of one device, and what
    backward_tensors needs.

    An empty batch returns at once (a GPU refuses a launch with a zero-size grid), with
    y = 0 when K = 0 (an empty sum) and saved = None.
    """
    win = geometry.Window.of(x.shape, weight.shape, stride, padding)
    if _is_empty(win):
        return x.new_zeros(win.y_shape), None
    device = device_of(x)
    with device.running(x.device):
        y, saved = backend.kernels(device.backend).adder2d_forward(device.array(x), device.array(weight), win,
                                                                   distance=distance)
        return device.tensor(y, x), saved


def backward_tensors(x, weight, grad_y, saved, mode, need_x=True, need_w=True):
    """(dX, dF) of Eq. 4 ("sign") or Eqs. 5-6 ("full") from forward_tensors' ``saved``;
    None for a gradient not needed, and the kernel that would compute it is skipped."""
    if not (need_x or need_w):
        return None, None
    if saved is None:   # an empty layer: zero gradients
        return (torch.zeros_like(x) if need_x else None), (torch.zeros_like(weight) if need_w else None)
    device = device_of(x)
    with device.running(x.device):
        g = device.array(grad_y.to(x.dtype))
        dx, dw = backend.kernels(device.backend).adder2d_backward(g, saved, mode, need_x, need_w)
        return (None if dx is None else device.tensor(dx, x)), (None if dw is None else device.tensor(dw, x))


class AdderFunction(torch.autograd.Function):
    """Y = adder2d(X, F) (Eq. 2) with the gradients of ``grad_mode``; see the module doc.

    With ``eta`` set, dF is rescaled inside backward to eta * sqrt(k) * dF / ||dF||_2, as
    the paper's reference code does (with eta = 0.2); see ``scaling.reference_scale``.
    """

    @staticmethod
    def forward(ctx, x, weight, stride, padding, grad_mode, eta, distance="l1"):
        ctx.save_for_backward(x, weight)   # so that autograd refuses x or F changed in place
        ctx.config = (grad_mode, eta)
        y, ctx.kernel_saved = forward_tensors(x, weight, stride, padding, distance)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y):
        # the kernels' gradients are not themselves differentiable: a double backward
        # (create_graph=True through this layer) is refused rather than silently wrong
        x, weight = ctx.saved_tensors
        grad_mode, eta = ctx.config
        need_x, need_w = ctx.needs_input_grad[:2]
        dx, dw = backward_tensors(x, weight, grad_y, ctx.kernel_saved, grad_mode, need_x, need_w)
        if dw is not None and eta is not None:
            dw = reference_scale(dw, eta)
        return dx, dw, None, None, None, None, None


def adder2d(x, weight, stride=1, padding=0, grad_mode="full", eta=None, distance="l1"):
    """The adder layer (Eq. 2) on torch tensors, with minadder's kernels.

    x: (N, C_in, H, W), weight: (C_out, C_in, d, d), zero padding; float32 (float64 too on
    the CPU). ``grad_mode``: "full" (Eqs. 5-6, the paper's training gradients) or "sign"
    (Eq. 4). ``eta``: None, or the reference code's normalisation of dF inside backward
    (it used 0.2); prefer ``scale_adder_grads`` (Eq. 13) after ``backward()``, which also
    holds under DistributedDataParallel. ``distance``: "l1" (Eq. 2) or "l2" (Eq. 27, exact
    gradients; grad_mode "sign" is refused for it).
    """
    checks.check_distance("adder2d", distance, grad_mode)
    geometry.check_window_args("adder2d", tuple(x.shape), tuple(weight.shape), stride, padding)
    _check_tensors("adder2d", x, weight)
    eta = check_eta("adder2d", eta)
    return AdderFunction.apply(x, weight, int(stride), int(padding), grad_mode, eta, distance)


def adder_linear(x, weight, grad_mode="full", eta=None, distance="l1"):
    """Fully connected adder layer: Y[n, t] = -sum_k |x[n, k] - W[t, k]| (adder2d on a 1x1 map;
    the squares for distance="l2")."""
    checks.check_distance("adder_linear", distance, grad_mode)
    xs, ws = tuple(x.shape), tuple(weight.shape)
    if len(xs) != 2:
        raise ValueError(f"adder_linear: input x must be 2-D (N, in_features), got shape {xs}")
    if len(ws) != 2 or ws[1] != xs[1]:
        raise ValueError(f"adder_linear: x has {xs[1]} features but weight has shape {ws} (expected (out, {xs[1]}))")
    _check_tensors("adder_linear", x, weight)
    eta = check_eta("adder_linear", eta)
    y = AdderFunction.apply(x.reshape(xs[0], xs[1], 1, 1), weight.reshape(ws[0], ws[1], 1, 1),
                            1, 0, grad_mode, eta, distance)
    return y.reshape(xs[0], ws[0])
