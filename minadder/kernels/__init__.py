"""Kernel backends for the adder (and ordinary) convolution.

Every backend module in this package exports the same flat functions with the
same signatures (see ``reference.py``, which is their definition):

    im2col, col2im, adder_forward, adder_grad_input, adder_grad_weight,
    adder2d_forward, adder2d_backward

The autograd layer never imports a backend directly; it asks
``minadder.backend.kernels()`` for the active one.
"""

KERNEL_NAMES = (
    "im2col",
    "col2im",
    "adder_forward",
    "adder_grad_input",
    "adder_grad_weight",
    "adder2d_forward",
    "adder2d_backward",
)
