"""The integer kernel the int8 layers call and the passes around it: compiled (minadder.kernels.cpu) when it imports, else the NumPy reference.

The modules export the same functions, bit for bit equal on every input:

    sad2d(xq, wq, stride, padding, pad_value)   Y[n,t,u,v] = sum |Xp - W|  (int32)
    sad_linear(xq, wq)                          Y[n,t]     = sum_k |x[n,k] - w[t,k]|
    codes(values, scale, offset, top)           clip(rint(v / s) + z, 0, top)  (uint8)
    affine(sums, rescale, bias)                 float32(sums) * rescale[t] + bias[t]

(``kernels/cpu/sad.py`` and ``kernels/cpu/int8_passes.py`` are the compiled ones.)

``minadder.kernels.int8_reference`` is the definition, in NumPy; ``minadder.kernels.cpu.sad``
is the compiled kernel (packed sums of absolute differences of bytes). The compiled one is
imported the first time a layer runs, not when ``minadder.int8`` is imported, and only
when the backend is not "numpy": ``--backend numpy`` keeps every kernel, float and
integer, on the NumPy definitions.
"""
import functools
import importlib

from .. import backend
from ..kernels import int8_reference


@functools.lru_cache(maxsize=None)
def _compiled(module):
    """minadder.kernels.cpu.<module> ("sad" or "int8_passes"), or None where it does not import (no Numba)."""
    try:
        return importlib.import_module(f"minadder.kernels.cpu.{module}")
    except ImportError:
        return None


def _implementation(module):
    """The compiled ``module``, or the NumPy reference (backend "numpy", or no Numba)."""
    if backend.get_backend() == "numpy":
        return int8_reference
    return _compiled(module) or int8_reference


def name():
    """Which integer kernel runs now: "cpu" (compiled) or "numpy" (the reference)."""
    return "numpy" if _implementation("sad") is int8_reference else "cpu"


def sad2d(xq, wq, stride=1, padding=0, pad_value=0):
    """int32 sums of |xq - wq| over each receptive field; uint8 xq (N, C, H, W) padded with
    ``pad_value``, uint8 wq (C_out, C, kh, kw)."""
    return _implementation("sad").sad2d(xq, wq, stride, padding, pad_value)


def codes(values, scale, offset, top):
    """uint8 clip(rint(values / scale) + offset, 0, top): one pass (compiled) or NumPy's chain."""
    return _implementation("int8_passes").codes(values, scale, offset, top)


def affine(sums, rescale, bias):
    """float32(sums) * rescale[t] + bias[t] per channel: the folded batch norm on int32 sums or float32 outputs."""
    return _implementation("int8_passes").affine(sums, rescale, bias)


def sad_linear(xq, wq):
    """int32 sums of |xq[n] - wq[t]| for uint8 xq (N, K) and wq (C_out, K)."""
    return _implementation("sad").sad_linear(xq, wq)
