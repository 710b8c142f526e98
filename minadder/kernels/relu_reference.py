"""ReLU in NumPy: the readable definition of the optional kernels ``relu_forward`` /
``relu_backward`` (contract.py), which ``cpu/relu.py`` matches.

    y = max(0, x),   dx = g * 1[y > 0]

the chain rule of any elementwise function (ops.Elementwise), with ReLU's derivative read
from the output: y > 0 exactly where x > 0. NaN stays NaN both ways (np.maximum keeps it,
and NaN * 0 is NaN).
"""
import numpy as np


def relu_forward(x):
    """max(0, x) entry by entry, a new array of x's dtype."""
    return np.maximum(x, x.dtype.type(0))


def relu_backward(g, y):
    """The gradient for the upstream g of a ReLU whose output was y: g where y > 0, else 0."""
    return g * (y > 0)
