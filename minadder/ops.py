"""The differentiable primitives: arithmetic, reductions, shapes and elementwise functions.

Each is a ``Function``: ``forward(ctx, ...)`` computes with NumPy and stores on ``ctx``,
under a name that says what it is, what ``backward(ctx, g)`` needs; the backward returns
one gradient per input, of that input's shape. Two families share their plumbing: the
``BinaryOp``s (+, -, *, /, @) broadcast, so their gradients are summed back with
``unbroadcast``; the ``Elementwise`` functions (exp, log, relu, hardtanh, abs, sign) give
f and f', and their backward is g * f'(a). ``layers.py`` builds on these; ``functional`` has both.
"""
import numbers

import numpy as np

from .tensor import Function, Tensor

__all__ = [
    "add", "sub", "mul", "div", "neg", "power", "matmul",
    "sum", "mean", "max", "reshape", "transpose", "flatten",
    "getitem", "pad",
    "exp", "log", "hardtanh", "abs", "sign",
    "unbroadcast",
]   # relu is defined below too, but functional offers layers.relu: the same, through the kernels


def _raw(t):
    """The array behind a Tensor (or the value itself, as an array)."""
    return t.data if isinstance(t, Tensor) else np.asarray(t)


def unbroadcast(grad, shape):
    """Sum a gradient over the axes that broadcasting added or stretched, back to `shape`.

    If a of shape (3, 1) was broadcast against (2, 3, 4), every a[i, 0] was used 2 * 4
    times, so its gradient is the sum of those 8 entries of the output's gradient.
    """
    shape = tuple(shape)
    if grad.shape == shape:
        return grad
    added = grad.ndim - len(shape)
    if added > 0:
        grad = grad.sum(axis=tuple(range(added)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad.reshape(shape)


# ============================================================================ arithmetic
class BinaryOp(Function):
    """An operation on two operands that broadcast against each other. A subclass gives
    ``compute(a, b)`` and ``grads(a, b, g)``, the gradients of the broadcast shape; the
    backward sums each back to its operand's shape with ``unbroadcast``. Only the ops
    whose gradients read the operands keep them (``uses_operands``): a kept array stays
    alive until backward, and a training step's memory is mostly such arrays."""
    uses_operands = True

    @classmethod
    def forward(cls, ctx, a, b):
        ctx.shapes = np.shape(a), np.shape(b)
        ctx.a, ctx.b = (a, b) if cls.uses_operands else (None, None)
        return cls.compute(a, b)

    @classmethod
    def backward(cls, ctx, g):
        grad_a, grad_b = cls.grads(ctx.a, ctx.b, g)
        return unbroadcast(grad_a, ctx.shapes[0]), unbroadcast(grad_b, ctx.shapes[1])


class Add(BinaryOp):
    uses_operands = False
    compute = staticmethod(np.add)
    grads = staticmethod(lambda a, b, g: (g, g))                     # d(a + b)/da = d(a + b)/db = 1


class Sub(BinaryOp):
    uses_operands = False
    compute = staticmethod(np.subtract)
    grads = staticmethod(lambda a, b, g: (g, -g))                    # d(a - b)/db = -1


class Mul(BinaryOp):
    compute = staticmethod(np.multiply)
    grads = staticmethod(lambda a, b, g: (g * b, g * a))             # d(ab)/da = b, d(ab)/db = a


class Div(BinaryOp):
    compute = staticmethod(np.divide)
    grads = staticmethod(lambda a, b, g: (g / b, -g * a / (b * b)))  # d(a/b)/db = -a / b^2


class MatMul(BinaryOp):
    # dA = G B^T, dB = A^T G; a batched operand met an unbatched one: unbroadcast sums the batch out
    compute = staticmethod(np.matmul)
    grads = staticmethod(lambda a, b, g: (g @ np.swapaxes(b, -1, -2), np.swapaxes(a, -1, -2) @ g))


class Neg(Function):
    @staticmethod
    def forward(ctx, a):
        return np.negative(a)

    @staticmethod
    def backward(ctx, g):
        return -g


class Power(Function):
    @staticmethod
    def forward(ctx, a, exponent):
        ctx.a, ctx.exponent = a, exponent
        return np.power(a, exponent)

    @staticmethod
    def backward(ctx, g):
        if ctx.exponent == 0:      # d(a ** 0)/da = 0 everywhere, also at a = 0 (0 * 0 ** -1 is nan)
            return np.zeros_like(g), None
        return g * ctx.exponent * np.power(ctx.a, ctx.exponent - 1), None


# the operations that need no checks are their Function's apply: add(a, b) is Add.apply(a, b)
add = Add.apply     # a + b, with broadcasting
sub = Sub.apply     # a - b
mul = Mul.apply     # a * b
div = Div.apply     # a / b
neg = Neg.apply     # -a


def power(a, exponent):
    """a ** exponent for a constant (non-Tensor) exponent."""
    if isinstance(exponent, Tensor):
        raise TypeError("power: the exponent must be a number, not a Tensor")
    return Power.apply(a, exponent)


def matmul(a, b):
    """Matrix product of two operands with at least 2 dimensions (batched over leading axes)."""
    a_shape, b_shape = np.shape(_raw(a)), np.shape(_raw(b))
    for name, shape in (("a", a_shape), ("b", b_shape)):
        if len(shape) < 2:
            raise ValueError(f"matmul: operand {name} must have at least 2 dimensions")
    if a_shape[-1] != b_shape[-2]:
        raise ValueError(f"matmul: shapes {a_shape} and {b_shape} do not align ({a_shape[-1]} != {b_shape[-2]})")
    return MatMul.apply(a, b)


# ============================================================================ reductions
def _expand(g, shape, axis, keepdims):
    """Give a reduced gradient back the reduced axes, so it broadcasts against the input."""
    if axis is not None and not keepdims:
        g = np.expand_dims(g, axis)
    return np.broadcast_to(g, shape)       # (a full reduction's g has shape () or all ones)


class Sum(Function):
    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        ctx.input_shape, ctx.axis, ctx.keepdims = a.shape, axis, keepdims
        return np.asarray(np.sum(a, axis=axis, keepdims=keepdims))

    @staticmethod
    def backward(ctx, g):
        return _expand(g, ctx.input_shape, ctx.axis, ctx.keepdims)


class Max(Function):
    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        out = np.max(a, axis=axis, keepdims=True)
        # the gradient flows to the maxima; ties share it equally
        is_max = (a == out).astype(a.dtype)
        ctx.share = is_max / is_max.sum(axis=axis, keepdims=True)
        ctx.input_shape, ctx.axis, ctx.keepdims = a.shape, axis, keepdims
        return np.asarray(out if keepdims else np.squeeze(out, axis=axis))

    @staticmethod
    def backward(ctx, g):
        return _expand(g, ctx.input_shape, ctx.axis, ctx.keepdims) * ctx.share


def _norm_axis(axis, ndim):
    if axis is None:
        return None
    axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
    for ax in axes:
        if not -ndim <= ax < ndim:
            raise ValueError(f"axis {ax} is out of range for a tensor with {ndim} dimensions")
    return tuple(sorted(ax % ndim for ax in axes))


def sum(a, axis=None, keepdims=False):  # noqa: A001  (mirrors numpy's name)
    """Sum over `axis` (an int, a tuple, or None for all)."""
    return Sum.apply(a, axis=_norm_axis(axis, np.ndim(_raw(a))), keepdims=keepdims)


def mean(a, axis=None, keepdims=False):
    """Mean over `axis`: a sum divided by the number of elements reduced."""
    shape = np.shape(_raw(a))
    axes = _norm_axis(axis, len(shape))
    count = int(np.prod(shape)) if axes is None else int(np.prod([shape[i] for i in axes]))
    return sum(a, axes, keepdims) / count


def max(a, axis=None, keepdims=False):  # noqa: A001
    """Maximum over `axis`; the gradient goes to the maximal entries."""
    return Max.apply(a, axis=_norm_axis(axis, np.ndim(_raw(a))), keepdims=keepdims)


# ============================================================================ shapes
class Reshape(Function):
    @staticmethod
    def forward(ctx, a, shape):
        ctx.input_shape = a.shape
        return np.reshape(a, shape)

    @staticmethod
    def backward(ctx, g):
        return np.reshape(g, ctx.input_shape)


class Transpose(Function):
    @staticmethod
    def forward(ctx, a, axes):
        ctx.axes = axes
        return np.transpose(a, axes)

    @staticmethod
    def backward(ctx, g):
        return np.transpose(g, None if ctx.axes is None else np.argsort(ctx.axes))


class GetItem(Function):
    @staticmethod
    def forward(ctx, a, index):
        ctx.input_shape, ctx.index = a.shape, index
        return np.asarray(a[index])

    @staticmethod
    def backward(ctx, g):
        grad = np.zeros(ctx.input_shape, dtype=g.dtype)
        np.add.at(grad, ctx.index, g)   # add.at: an entry picked twice gets both gradients
        return grad, None


class Pad(Function):
    @staticmethod
    def forward(ctx, a, widths, value):
        ctx.inside = tuple(slice(before, before + n) for (before, _), n in zip(widths, a.shape))
        return np.pad(a, widths, constant_values=value)

    @staticmethod
    def backward(ctx, g):
        return g[ctx.inside], None, None


def reshape(a, *shape):
    """Reshape; accepts reshape(t, 2, 3) or reshape(t, (2, 3)); one -1 is inferred."""
    shape = tuple(shape[0]) if len(shape) == 1 and not isinstance(shape[0], numbers.Integral) else shape
    size = np.size(_raw(a))
    known = int(np.prod([n for n in shape if n != -1]))
    if shape.count(-1) > 1 or (-1 not in shape and known != size) or (-1 in shape and (known == 0 or size % known)):
        raise ValueError(f"reshape: cannot reshape a tensor of shape {np.shape(_raw(a))} into {shape}")
    return Reshape.apply(a, shape=shape)


def transpose(a, *axes):
    """Permute axes (reverse them when none are given); negative axes count from the end,
    as in NumPy."""
    axes = tuple(axes[0]) if len(axes) == 1 and not isinstance(axes[0], numbers.Integral) else axes
    ndim = np.ndim(_raw(a))    # negative axes normalised, so that the backward's argsort inverts the permutation
    axes = tuple(ax % ndim if -ndim <= ax < ndim else ax for ax in axes)
    if axes and sorted(axes) != list(range(ndim)):
        raise ValueError(f"transpose: axes {axes} are not a permutation of the {ndim} axes of shape {np.shape(_raw(a))}")
    return Transpose.apply(a, axes=axes or None)


def flatten(a, start_dim=1):
    """Merge all axes from `start_dim` on: (N, C, H, W) -> (N, C*H*W), an empty batch too."""
    shape = np.shape(_raw(a))
    return reshape(a, *shape[:start_dim], int(np.prod(shape[start_dim:], dtype=np.int64)))


def getitem(a, index):
    """a[index] with NumPy's indexing; the gradient lands on the entries that were picked."""
    return GetItem.apply(a, index)


def pad(a, widths, value=0.0):
    """np.pad(a, widths, constant_values=value); widths is one (before, after) per axis."""
    return Pad.apply(a, tuple((int(lo), int(hi)) for lo, hi in widths), value)


# ============================================================================ elementwise
class Elementwise(Function):
    """f applied to every entry: out = f(a). A subclass gives ``compute(a)`` and
    ``derivative(kept)``, f'(a) from what it keeps: ``keeps`` = "a" (the input) or "out"
    (the result; one array kept, not both). The backward is the chain rule entry by entry,
    g * f'(a)."""
    keeps = "a"

    @classmethod
    def forward(cls, ctx, a):
        out = cls.compute(a)
        ctx.kept = a if cls.keeps == "a" else out
        return out

    @classmethod
    def backward(cls, ctx, g):
        return g * cls.derivative(ctx.kept)


class Exp(Elementwise):
    keeps = "out"
    compute = staticmethod(np.exp)
    derivative = staticmethod(lambda out: out)                       # (e^a)' = e^a


class Log(Elementwise):
    compute = staticmethod(np.log)
    derivative = staticmethod(lambda a: 1 / a)


class ReLU(Elementwise):
    keeps = "out"
    compute = staticmethod(lambda a: np.maximum(a, a.dtype.type(0)))
    derivative = staticmethod(lambda out: out > 0)                   # a > 0 exactly where out > 0


class HardTanh(Elementwise):
    compute = staticmethod(lambda a: np.clip(a, -1, 1))
    derivative = staticmethod(lambda a: (a > -1) & (a < 1))          # 1 inside (-1, 1), else 0


class Abs(Elementwise):
    compute = staticmethod(np.abs)
    derivative = staticmethod(lambda a: np.sign(a))                  # the subgradient 0 at a = 0


class Sign(Elementwise):
    compute = staticmethod(np.sign)
    derivative = staticmethod(lambda a: np.zeros_like(a))            # flat on each side of 0


exp = Exp.apply
log = Log.apply
relu = ReLU.apply             # max(0, a)
hardtanh = HardTanh.apply     # HT(a) = min(1, max(-1, a)), Eq. 7: it clips the adder layer's input gradient (Eq. 6)
abs = Abs.apply               # |a|, the adder layer's distance (Eq. 2)  # noqa: A001
sign = Sign.apply             # sgn(a), its derivative (Eq. 4)
