"""Every differentiable operation on Tensors, in one namespace: ``from minadder import functional as F``.

The operations live in two modules, to be read in this order:

* ``ops.py``, the primitives: arithmetic (each op that broadcasts sums its gradients
  back with ``unbroadcast``), reductions, reshapes and indexing, elementwise functions;
* ``layers.py``, the layers built on them: losses, ``linear``, ``conv2d``, the adder layer
  ``adder2d`` / ``adder_linear`` (Eq. 2), pooling and batch norm, with readable
  definitions of the two fused ones (``*_from_primitives``).
"""
from . import layers, ops
from .layers import (  # noqa: F401  (the Function classes, for readers and custom layers)
    Adder2d, AvgPool2d, BatchNorm, Conv2d, CrossEntropy, LogSoftmax, MaxPool2d,
    adder2d, adder_linear, avg_pool2d, batch_norm, batch_norm_from_primitives, conv2d,
    cross_entropy, linear, log_softmax, max_pool2d, max_pool2d_from_primitives)
from .ops import (  # noqa: F401
    Add, Div, Exp, GetItem, HardTanh, Log, MatMul, Max, Mul, Neg, Pad, Power, ReLU, Reshape,
    Stack, Sub, Sum, Transpose,
    add, div, exp, flatten, getitem, hardtanh, log, matmul, max, mean, mul, neg, pad, power,
    relu, reshape, stack, sub, sum, transpose, unbroadcast)

__all__ = ops.__all__ + layers.__all__
