"""Kernel backends for the adder (and ordinary) convolution.

Every backend module in this package exports the same flat functions with the same
signatures, listed in ``contract.KERNEL_NAMES``; ``reference.py`` is their definition and
``contract.py`` holds what they share (grad modes, output size, the window geometry, the
adder cache, and the layer wrapper ``adder2d_forward`` / ``adder2d_backward``).

The autograd layer never imports a backend directly; it asks
``minadder.backend.kernels()`` for the active one.
"""
from .contract import KERNEL_NAMES  # noqa: F401
