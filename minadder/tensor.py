"""Tensor and reverse-mode automatic differentiation.

A Tensor wraps a NumPy array. Every differentiable operation is a ``Function`` with a
``forward(ctx, *arrays)`` that computes on plain arrays and a ``backward(ctx, grad)``
that returns one gradient per input. ``Function.apply`` runs the forward and, when a
gradient is wanted, records the inputs on the output: the recorded links form a graph,
and ``Tensor.backward`` walks it in reverse topological order, applying the chain rule.
"""
import contextlib

import numpy as np

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


def unbroadcast(grad, shape):
    """Sum a gradient over the axes that broadcasting added or stretched, back to `shape`."""
    if grad.shape == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    grad = grad.sum(axis=tuple(range(extra))) if extra > 0 else grad
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad.reshape(shape)


class Tensor:
    """An n-dimensional array that remembers how it was computed.

    ``data`` is the NumPy array; ``grad`` is None until ``backward`` fills it (for leaf
    tensors with ``requires_grad=True``). Operators (+, -, *, /, @, **) and methods such
    as ``sum``, ``reshape`` and ``relu`` build the graph through ``minadder.functional``.
    """

    __array_priority__ = 1000  # so ndarray + Tensor calls Tensor.__radd__

    def __init__(self, data, requires_grad=False, dtype=None):
        self.data = _as_array(data, dtype)
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._node = None  # (Function class, ctx, inputs) for results of an operation

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
    def backward(self, grad=None):
        """Accumulate d(self)/d(leaf) into ``leaf.grad`` for every leaf that requires grad.

        grad is d(Loss)/d(self); it defaults to 1 for a tensor with one element.
        The graph is freed afterwards, as in PyTorch.
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

        grads = {id(self): grad}
        for node in reversed(_topological_order(self)):
            g = grads.pop(id(node), None)
            if g is None:
                continue
            if node._node is None:  # a leaf: accumulate
                node.grad = g.copy() if node.grad is None else node.grad + g
                continue
            fn, ctx, inputs = node._node
            input_grads = fn.backward(ctx, g)
            if not isinstance(input_grads, tuple):
                input_grads = (input_grads,)
            for inp, ig in zip(inputs, input_grads):
                if ig is None or not isinstance(inp, Tensor) or not inp.requires_grad:
                    continue
                ig = unbroadcast(np.asarray(ig, dtype=inp.dtype), inp.shape)
                grads[id(inp)] = grads[id(inp)] + ig if id(inp) in grads else ig
            node._node = None  # free the graph as we go

    # --- operators, defined in functional ----------------------------------------
    def __add__(self, other): return F.add(self, other)
    def __radd__(self, other): return F.add(other, self)
    def __sub__(self, other): return F.sub(self, other)
    def __rsub__(self, other): return F.sub(other, self)
    def __mul__(self, other): return F.mul(self, other)
    def __rmul__(self, other): return F.mul(other, self)
    def __truediv__(self, other): return F.div(self, other)
    def __rtruediv__(self, other): return F.div(other, self)
    def __neg__(self): return F.neg(self)
    def __pow__(self, exponent): return F.power(self, exponent)
    def __matmul__(self, other): return F.matmul(self, other)
    def __rmatmul__(self, other): return F.matmul(other, self)

    def sum(self, axis=None, keepdims=False): return F.sum(self, axis, keepdims)
    def mean(self, axis=None, keepdims=False): return F.mean(self, axis, keepdims)
    def max(self, axis=None, keepdims=False): return F.max(self, axis, keepdims)
    def reshape(self, *shape): return F.reshape(self, *shape)
    def transpose(self, *axes): return F.transpose(self, *axes)
    def flatten(self, start_dim=1): return F.flatten(self, start_dim)
    def exp(self): return F.exp(self)
    def log(self): return F.log(self)
    def relu(self): return F.relu(self)

    @property
    def T(self):
        return F.transpose(self)


def _topological_order(root):
    """Tensors reachable from root, each after all of its inputs (iterative DFS)."""
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        node, inputs_done = stack.pop()
        if inputs_done:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        if node._node is not None:
            for inp in node._node[2]:
                if isinstance(inp, Tensor) and inp.requires_grad and id(inp) not in visited:
                    stack.append((inp, False))
    return order


class Context:
    """Scratch space a Function's forward leaves for its backward.

    ``needs_input_grad[i]`` tells whether positional argument i wants a gradient, so a
    backward can skip work nobody will use (the input gradient of a first layer).
    """

    needs_input_grad = ()

    def save_for_backward(self, *arrays):
        self.saved = arrays


class Function:
    """A differentiable operation. Subclasses define two static methods:

    forward(ctx, *args, **kwargs) -> ndarray     on plain arrays (Tensors are unwrapped)
    backward(ctx, grad) -> gradient or tuple     one per positional argument (None if none)
    """

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
        if _grad_enabled and any(isinstance(a, Tensor) and a.requires_grad for a in args):
            out.requires_grad = True
            out._node = (cls, ctx, args)
        return out


from . import functional as F  # noqa: E402  (functional needs Tensor, defined above)
