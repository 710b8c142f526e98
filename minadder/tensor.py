"""Tensor and reverse-mode automatic differentiation.

A Tensor wraps a NumPy array. Every differentiable operation is a ``Function`` with a
``forward(ctx, *arrays)`` that computes on plain arrays and a ``backward(ctx, grad)``
that returns one gradient per input. ``Function.apply`` runs the forward and, when a
gradient is wanted, leaves a ``Node`` on the output (which Function, its ctx, its
inputs): these records form a graph, and ``Tensor.backward`` walks it in reverse
topological order, applying the chain rule. The primitives themselves are in ``ops.py``.
"""
import contextlib
from typing import NamedTuple, Optional

import numpy as np

from . import backend

_grad_enabled = True


@contextlib.contextmanager
def no_grad():
    """Within this block no graph is recorded (evaluation, optimizer updates)."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


def is_grad_enabled():
    return _grad_enabled


def _as_array(data, dtype=None):
    """Python data -> ndarray; Python floats become float32, as layers expect."""
    if isinstance(data, Tensor):
        data = data.data
    array = np.asarray(data, dtype=dtype)
    if dtype is None and not isinstance(data, (np.ndarray, np.generic)) and array.dtype == np.float64:
        array = array.astype(np.float32)
    return array


class Node(NamedTuple):
    """How a tensor was computed: the record an operation leaves on its result. ``backward``
    frees it once used (ctx None, inputs dropped, so what forward saved can be reclaimed)."""
    function: type                   # the Function subclass that made the tensor
    ctx: Optional["Context"]         # what its forward saved for its backward; None once freed
    inputs: tuple                    # its arguments: Tensors and constants

    @property
    def freed(self):
        return self.ctx is None


class Tensor:
    """An n-dimensional array that remembers how it was computed.

    ``data`` is the NumPy array; ``grad`` is None until ``backward`` fills it (for leaf
    tensors with ``requires_grad=True``); ``node`` is the ``Node`` that made it, None for
    a leaf. Operators (+, -, *, /, @, **) and methods such as ``sum``, ``reshape`` and
    ``relu`` build the graph through the primitives of ``minadder.ops``.
    """

    __array_priority__ = 1000  # so ndarray + Tensor calls Tensor.__radd__

    def __init__(self, data, requires_grad=False, dtype=None):
        self.data = _as_array(data, dtype)
        self.grad = None
        self.requires_grad = requires_grad
        self.node = None   # a Node for the result of an operation; None for a leaf

    @property
    def requires_grad(self):
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value):
        """Only floating tensors take gradients (a gradient of an integer is no integer), as in PyTorch."""
        if value and not np.issubdtype(self.data.dtype, np.floating):
            raise RuntimeError(f"Only Tensors of floating point dtype can require gradients, got {self.data.dtype}")
        self._requires_grad = bool(value)

    # --- plain properties -------------------------------------------------------
    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)

    def __len__(self):
        return len(self.data)

    def numpy(self):
        return self.data

    def item(self):
        return self.data.item()

    def detach(self):
        """The same values, cut from the graph."""
        return Tensor(self.data)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({np.array2string(self.data, precision=4, threshold=20)}{grad})"

    # --- the chain rule -----------------------------------------------------------
    def backward(self, grad=None, retain_graph=False):
        """Accumulate d(self)/d(leaf) into ``leaf.grad`` for every leaf that requires grad.

        grad is d(Loss)/d(self); it defaults to 1 for a tensor with one element.
        The graph is freed as it is used, as in PyTorch; ``retain_graph=True`` keeps it
        for another backward.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad")
        if grad is None:
            if self.size != 1:
                raise RuntimeError(f"grad must be given for a non-scalar tensor of shape {self.shape}")
            grad = np.ones(self.shape, dtype=self.dtype)
        grad = _as_array(grad, self.dtype)
        if grad.shape != self.shape:
            raise ValueError(f"grad has shape {grad.shape}, expected {self.shape}")
        order = topological_order(self)
        freed = [t.node.function.__name__ for t in order if t.node is not None and t.node.freed]
        if freed:                             # refuse before touching any gradient
            raise RuntimeError(f"Trying to backward through the graph a second time: the {freed[0]} on the way "
                               "was freed by an earlier backward(). Call that backward with retain_graph=True "
                               "to backward through the graph again.")

        grads = {id(self): grad}              # d(self)/d(t) for the tensors t reached so far
        for t in reversed(order):             # every tensor before the inputs it was made from
            g = grads.pop(id(t), None)
            if g is None:
                continue
            if t.node is None:                # a leaf: accumulate
                t.grad = g.copy() if t.grad is None else t.grad + g
                continue
            function, first = t.node.function, t.node.inputs[0] if t.node.inputs else None
            if function.adds_to_first_grad and isinstance(first, Tensor):
                # it adds the gradient its first input has gathered so far into its own
                input_grads = function.backward(t.node.ctx, g, grads.pop(id(first), None))
            else:
                input_grads = function.backward(t.node.ctx, g)
            if not isinstance(input_grads, tuple):
                input_grads = (input_grads,)
            for inp, ig in zip(t.node.inputs, input_grads):
                if ig is None or not isinstance(inp, Tensor) or not inp.requires_grad:
                    continue
                ig = np.asarray(ig, dtype=inp.dtype)
                if ig.shape != inp.shape:
                    raise RuntimeError(f"{t.node.function.__name__}.backward returned a gradient of shape "
                                       f"{ig.shape} for an input of shape {inp.shape}")
                # a tensor used twice (a ResNet block's input) sums its gradients: through the
                # backend's add, which the cpu backend runs on all cores
                grads[id(inp)] = backend.kernel("add")(grads[id(inp)], ig) if id(inp) in grads else ig
            if not retain_graph:
                t.node = t.node._replace(ctx=None, inputs=())   # free the graph as we go

    # --- operators, defined in ops ----------------------------------------
    def __add__(self, other): return ops.add(self, other)
    def __radd__(self, other): return ops.add(other, self)
    def __sub__(self, other): return ops.sub(self, other)
    def __rsub__(self, other): return ops.sub(other, self)
    def __mul__(self, other): return ops.mul(self, other)
    def __rmul__(self, other): return ops.mul(other, self)
    def __truediv__(self, other): return ops.div(self, other)
    def __rtruediv__(self, other): return ops.div(other, self)
    def __neg__(self): return ops.neg(self)
    def __pow__(self, exponent): return ops.power(self, exponent)
    def __matmul__(self, other): return ops.matmul(self, other)
    def __rmatmul__(self, other): return ops.matmul(other, self)

    def sum(self, axis=None, keepdims=False): return ops.sum(self, axis, keepdims)
    def mean(self, axis=None, keepdims=False): return ops.mean(self, axis, keepdims)
    def max(self, axis=None, keepdims=False): return ops.max(self, axis, keepdims)
    def reshape(self, *shape): return ops.reshape(self, *shape)
    def transpose(self, *axes): return ops.transpose(self, *axes)
    def flatten(self, start_dim=1): return ops.flatten(self, start_dim)
    def exp(self): return ops.exp(self)
    def log(self): return ops.log(self)
    def relu(self): return ops.relu(self)

    @property
    def T(self):
        return ops.transpose(self)


def topological_order(root):
    """Tensors that require grad and lead to root, each after all of its inputs (an
    iterative depth-first search, so deep graphs need no recursion)."""
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        t, inputs_done = stack.pop()
        if inputs_done:
            order.append(t)
            continue
        if id(t) in visited:
            continue
        visited.add(id(t))
        stack.append((t, True))
        if t.node is not None:
            for inp in t.node.inputs:
                if isinstance(inp, Tensor) and inp.requires_grad and id(inp) not in visited:
                    stack.append((inp, False))
    return order


class Context:
    """What a Function's forward leaves for its backward, as named attributes (``ctx.a``,
    ``ctx.input_shape``, ...), one name for one thing. ``needs_input_grad[i]`` tells whether
    argument i wants a gradient, so a backward can skip unused work (a first layer's dX)."""

    needs_input_grad = ()


class Function:
    """A differentiable operation. Subclasses define two static methods:

    forward(ctx, *args, **kwargs) -> ndarray     on plain arrays (Tensors are unwrapped)
    backward(ctx, grad) -> gradient or tuple     one per positional argument (None if none),
                                                 each of its argument's shape

    A Function whose first input's gradient is cheap to add where it is written sets
    ``adds_to_first_grad``: its backward is then called as backward(ctx, grad, gathered),
    ``gathered`` the gradient that input has received so far from its other uses (None if
    none), and returns its first gradient with ``gathered`` added. The adder layer does: in
    a ResNet block, whose input feeds both the block's body and its shortcut, the
    shortcut's gradient is added in the pass that writes dX instead of in a pass of its own.
    """

    adds_to_first_grad = False

    @staticmethod
    def forward(ctx, *args, **kwargs):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, grad):
        raise NotImplementedError

    @classmethod
    def apply(cls, *args, **kwargs):
        ctx = Context()
        ctx.needs_input_grad = tuple(isinstance(a, Tensor) and a.requires_grad for a in args)
        raw = [a.data if isinstance(a, Tensor) else a for a in args]
        out = Tensor(cls.forward(ctx, *raw, **kwargs))
        if _grad_enabled and out.dtype.kind == "f" and any(isinstance(a, Tensor) and a.requires_grad for a in args):
            out.requires_grad = True
            out.node = Node(cls, ctx, args)
        return out


from . import ops  # noqa: E402  (ops needs Tensor and Function, defined above)
