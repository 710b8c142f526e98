"""What every kernel backend shares: the one place for the adder layer's contract.

A backend (``reference.py``, ``cpu.py``, ``cuda.py``) is a module of plain functions with
the names in ``KERNEL_NAMES``. Two families:

* column kernels, on the im2col matrix X_col (K, L), the filters W (C_out, K) and the
  output gradient G (C_out, L), with K = C*kh*kw and L = N*H_out*W_out:
  ``im2col``, ``col2im``, ``adder_forward``, ``adder_grad_input``, ``adder_grad_weight``;
* layer kernels, on images, which plug into the wrapper below:
  ``layer_input(x, w2, win)`` -> the input as the backend's layer kernels read it (the
  reference and cuda backends: x itself; the cpu backend: x with a padded copy in its
  shifted frame, built once per forward and read again by both gradients),
  ``layer_forward(x, w2, win)`` -> y (N, C_out, P),
  ``layer_grad_weight(x, w2, g, win, mode)`` -> dW (C_out, K),
  ``layer_grad_input(x, w2, g, win, mode)`` -> dX (N, C, H, W),
  with x (N, C, H, W) or what ``layer_input`` made of it, w2 = W (C_out, K),
  g = dLoss/dY as (N, C_out, P), P = H_out*W_out, and ``win`` the layer's :class:`Window`.

``adder2d_forward`` / ``adder2d_backward`` are the layer, image in and image out, written
once here for every backend: they check the arguments, describe the sliding window, keep
the input (never X_col) in an :class:`AdderCache`, and call the backend's layer kernels.
The NumPy reference's layer kernels are im2col -> column kernel -> reshape; the cpu
backend's read the image directly (implicit GEMM) and never build X_col.

The mathematics (docs in ``proofs/mathematics.md``): Eq. 2 of the paper for the forward,
Eq. 4 (sign) or Eqs. 5-6 (full precision, HardTanh for the input) for the gradients.
"""
import numbers
from typing import Any, NamedTuple

#: the two gradients of the adder layer: "full" (Eqs. 5 and 6) and "sign" (Eq. 4)
GRAD_MODES = ("full", "sign")

KERNEL_NAMES = (
    "im2col", "col2im",                                          # sliding windows
    "adder_forward", "adder_grad_input", "adder_grad_weight",    # column kernels
    "layer_input", "layer_forward", "layer_grad_input", "layer_grad_weight",    # layer kernels
)


def check_grad_mode(mode, op="adder2d"):
    """Raise a ValueError naming ``op`` unless ``mode`` is one of GRAD_MODES."""
    if not isinstance(mode, str) or mode not in GRAD_MODES:
        raise ValueError(f"{op}: grad_mode must be one of {GRAD_MODES}, got {mode!r}")
    return mode


def output_size(size, kernel, stride, padding):
    """Spatial output size of a sliding window: (size + 2p - d) // s + 1."""
    return (size + 2 * padding - kernel) // stride + 1


def check_window_args(op, x_shape, weight_shape, stride, padding):
    """Validate a sliding-window layer's arguments (shapes only) before any work is done."""
    x_shape, weight_shape = tuple(x_shape), tuple(weight_shape)
    if len(x_shape) != 4:
        raise ValueError(f"{op}: input x must be 4-D (N, C_in, H, W), got shape {x_shape}")
    if len(weight_shape) != 4:
        raise ValueError(f"{op}: weight must be 4-D (C_out, C_in, kH, kW), got shape {weight_shape}")
    if x_shape[1] != weight_shape[1]:
        raise ValueError(f"{op}: x has {x_shape[1]} channels but weight of shape {weight_shape} "
                         f"expects C_in={weight_shape[1]}")
    if isinstance(stride, bool) or not isinstance(stride, numbers.Integral) or stride < 1:
        raise ValueError(f"{op}: stride must be a positive integer, got {stride!r}")
    if isinstance(padding, bool) or not isinstance(padding, numbers.Integral) or padding < 0:
        raise ValueError(f"{op}: padding must be a non-negative integer, got {padding!r}")
    kh, kw = weight_shape[2:]
    hp, wp = x_shape[2] + 2 * padding, x_shape[3] + 2 * padding
    if kh > hp or kw > wp:
        raise ValueError(f"{op}: kernel {kh}x{kw} is larger than the padded input {hp}x{wp} "
                         f"(H={x_shape[2]}, W={x_shape[3]}, padding={padding})")


class Window(NamedTuple):
    """The geometry of one sliding-window layer: input (n, c, h, w), filters (c_out, c, kh, kw)."""
    n: int
    c: int
    h: int
    w: int
    c_out: int
    kh: int
    kw: int
    stride: int
    padding: int

    @classmethod
    def of(cls, x_shape, weight_shape, stride=1, padding=0):
        n, c, h, w = (int(s) for s in x_shape)
        c_out, _, kh, kw = (int(s) for s in weight_shape)
        return cls(n, c, h, w, c_out, kh, kw, int(stride), int(padding))

    @property
    def ho(self):
        return output_size(self.h, self.kh, self.stride, self.padding)

    @property
    def wo(self):
        return output_size(self.w, self.kw, self.stride, self.padding)

    @property
    def plane(self):
        """P = H_out * W_out, the outputs per image and channel."""
        return self.ho * self.wo

    @property
    def k(self):
        """K = C * kh * kw, the length of one receptive field (a row of W)."""
        return self.c * self.kh * self.kw

    @property
    def l(self):  # noqa: E743  (the paper's and im2col's name for the column axis)
        """L = N * H_out * W_out, the number of receptive fields (columns of X_col)."""
        return self.n * self.plane

    @property
    def x_shape(self):
        return (self.n, self.c, self.h, self.w)

    @property
    def y_shape(self):
        return (self.n, self.c_out, self.ho, self.wo)


class AdderCache(NamedTuple):
    """What adder2d_backward needs from the forward: the input itself, never X_col."""
    x: Any          # (N, C, H, W) as the backend's layer_input made it (array or its own record)
    weight: Any     # (C_out, C, kh, kw)
    window: Window


def adder2d_forward(kernels, x, weight, stride=1, padding=0):
    """The adder layer (Eq. 2) on images with a backend's layer kernels: (y, cache).

    y[n, t, u, v] = -sum_{c,i,j} |Xp[n, c, s*u + i, s*v + j] - F[t, c, i, j]| with Xp the
    zero-padded input; y has shape (N, C_out, H_out, W_out).
    """
    check_window_args("adder2d", x.shape, weight.shape, stride, padding)
    win = Window.of(x.shape, weight.shape, stride, padding)
    w2 = weight.reshape(win.c_out, win.k)
    x = kernels.layer_input(x, w2, win)
    y = kernels.layer_forward(x, w2, win)
    return y.reshape(win.y_shape), AdderCache(x, weight, win)


def adder2d_backward(kernels, grad_y, cache, mode="full", input_grad=True):
    """Gradients of adder2d_forward for G = grad_y (N, C_out, H_out, W_out): (dx, dweight).

    ``mode`` picks the gradients (Eq. 4 "sign", Eqs. 5-6 "full"); with input_grad=False dx
    is None and its kernel is skipped (a network's first layer).
    """
    check_grad_mode(mode)
    x, weight, win = cache
    if tuple(grad_y.shape) != win.y_shape:
        raise ValueError(f"adder2d: grad_y must have shape {win.y_shape}, got {tuple(grad_y.shape)}")
    w2 = weight.reshape(win.c_out, win.k)
    g = grad_y.reshape(win.n, win.c_out, win.plane)
    dw = kernels.layer_grad_weight(x, w2, g, win, mode).reshape(weight.shape)
    dx = kernels.layer_grad_input(x, w2, g, win, mode) if input_grad else None
    return dx, dw
