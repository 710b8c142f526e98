"""Every differentiable operation on Tensors, in one namespace: ``from minadder import functional as F``.

The operations live in two modules, to be read in this order:

* ``ops.py``, the primitives: arithmetic (each op that broadcasts sums its gradients
  back with ``unbroadcast``), reductions, reshapes and indexing, elementwise functions
  (among them ``abs`` and ``sign``, from which the adder layer is written);
* ``layers.py``, the layers built on them: losses, ``linear``, pooling, ``conv2d``, the
  adder layer ``adder2d`` / ``adder_linear`` (Eq. 2) and batch norm, each fused one after
  its readable definition from primitives (``*_from_primitives``), and ``relu``, the
  primitive's values and gradient through the kernel backend.
"""
from . import layers, ops
from .layers import *  # noqa: F401,F403  (the functions listed in layers.__all__)
from .ops import *  # noqa: F401,F403
# the Function classes too, for readers and for writing new layers
from .layers import (Adder2d, AdderFullPrecision, AvgPool2d, BatchNorm, Conv2d, CrossEntropy,  # noqa: F401
                     FusedReLU, LogSoftmax, MaxPool2d)
from .ops import (Abs, Add, Div, Exp, GetItem, HardTanh, Log, MatMul, Max, Mul, Neg, Pad, Power,  # noqa: F401
                  ReLU, Reshape, Sign, Sub, Sum, Transpose)

__all__ = ops.__all__ + layers.__all__
