"""Every differentiable operation on Tensors, in one namespace: ``from minadder import functional as F``.

The operations live in two modules, to be read in this order:

* ``ops.py``, the primitives: arithmetic (each op that broadcasts sums its gradients
  back with ``unbroadcast``), reductions, reshapes and indexing, elementwise functions;
* ``layers.py``, the layers built on them: losses, ``linear``, ``conv2d``, the adder layer
  ``adder2d`` / ``adder_linear`` (Eq. 2), pooling and batch norm, with readable
  definitions of the two fused ones (``*_from_primitives``).
"""
from . import layers, ops
from .layers import *  # noqa: F401,F403  (the functions listed in layers.__all__)
from .ops import *  # noqa: F401,F403
# the Function classes too, for readers and for writing new layers
from .layers import Adder2d, AvgPool2d, BatchNorm, Conv2d, CrossEntropy, LogSoftmax, MaxPool2d  # noqa: F401
from .ops import (Add, Div, Exp, GetItem, HardTanh, Log, MatMul, Max, Mul, Neg, Pad, Power,  # noqa: F401
                  ReLU, Reshape, Sub, Sum, Transpose)

__all__ = ops.__all__ + layers.__all__
