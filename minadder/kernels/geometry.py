"""The geometry of a sliding-window layer: output size, argument checks, the Window record.

Neutral ground for every backend and for the layers: no kernel code lives here. The
names follow proofs/mathematics.md: an input X (N, C, H, W), filters F (C_out, C, kh, kw),
stride s and zero padding p give an output (N, C_out, H_out, W_out); im2col's matrix X_col
has K = C*kh*kw rows and L = N*H_out*W_out columns.
"""
import numbers
from typing import NamedTuple


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
