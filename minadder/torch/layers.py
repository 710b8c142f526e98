"""Adder layers as ``torch.nn`` modules: ``Adder2d`` and ``AdderLinear``.

The filters are the parameter ``.weight`` (so code that looks for ``.weight``, as for a
convolution, finds them), initialised N(0, 1) as in the paper's reference code and in
``minadder.nn.Adder2d``; ``weight.is_adder`` is True. Each class says
``is_adder_layer = True``, by which ``adder_modules`` (defined in scaling.py, re-exported
here) lists the layers that ``scale_adder_grads`` (Eq. 13) rescales.
"""
import torch
from torch import nn

from .. import checks
from .function import adder2d, adder_linear
from .scaling import adder_modules, check_eta  # noqa: F401  (re-exported: minadder.torch.layers.adder_modules)


def _adder_weight(shape, device, dtype):
    weight = nn.Parameter(torch.randn(shape, device=device, dtype=dtype or torch.float32))
    weight.is_adder = True
    return weight


class Adder2d(nn.Module):
    """The adder layer (Eq. 2) on (N, C_in, H, W) inputs, filters (out, in, k, k) ~ N(0, 1).

    ``grad_mode``: "full" (Eqs. 5-6) or "sign" (Eq. 4). ``distance``: "l1" (Eq. 2) or
    "l2" (Eq. 27, Appendix B; exact gradients). ``bias``: a per-channel bias
    (zeros). ``eta``: None, or the reference code's in-backward normalisation of the
    filter gradient (0.2 there); see ``minadder.torch.scaling``.
    """

    is_adder_layer = True   # scale_adder_grads rescales its filters (Eq. 13)

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=False,
                 grad_mode="full", eta=None, device=None, dtype=None, distance="l1"):
        super().__init__()
        self.distance = checks.check_distance("Adder2d", distance, grad_mode)
        in_channels, out_channels, kernel_size, stride, padding = checks.check_conv_layer(
            "Adder2d", in_channels, out_channels, kernel_size, stride, padding)
        self.stride, self.padding, self.grad_mode = stride, padding, grad_mode
        self.eta = check_eta("Adder2d", eta)
        self.weight = _adder_weight((out_channels, in_channels, kernel_size, kernel_size), device, dtype)
        self.bias = nn.Parameter(torch.zeros(out_channels, device=device, dtype=self.weight.dtype)) if bias else None

    def forward(self, x):
        y = adder2d(x, self.weight, self.stride, self.padding, self.grad_mode, self.eta, self.distance)
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)

    def extra_repr(self):
        o, i, k, _ = self.weight.shape
        return (f"{i}, {o}, kernel_size={k}, stride={self.stride}, padding={self.padding}, "
                f"grad_mode={self.grad_mode!r}, distance={self.distance!r}"
                + (f", eta={self.eta}" if self.eta is not None else ""))


class AdderLinear(nn.Module):
    """Fully connected adder layer: y[n, t] = -sum_k |x[n, k] - W[t, k]|, W ~ N(0, 1)."""

    is_adder_layer = True

    def __init__(self, in_features, out_features, bias=False, grad_mode="full", eta=None,
                 device=None, dtype=None, distance="l1"):
        super().__init__()
        self.distance = checks.check_distance("AdderLinear", distance, grad_mode)
        in_features, out_features = checks.check_sizes("AdderLinear", in_features=in_features,
                                                       out_features=out_features)
        self.grad_mode, self.eta = grad_mode, check_eta("AdderLinear", eta)
        self.weight = _adder_weight((out_features, in_features), device, dtype)
        self.bias = nn.Parameter(torch.zeros(out_features, device=device, dtype=self.weight.dtype)) if bias else None

    def forward(self, x):
        y = adder_linear(x, self.weight, self.grad_mode, self.eta, self.distance)
        return y if self.bias is None else y + self.bias

    def extra_repr(self):
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, grad_mode={self.grad_mode!r}, distance={self.distance!r}"

