"""Differentiable operations on Tensors (imported as ``F``).

Each operation is a ``Function``: ``forward`` computes with NumPy, ``backward`` returns
the gradient of each input given the gradient of the output. Broadcasting is handled by
the engine, which sums every input gradient back to its input's shape.

The adder layer (Eq. 2) and im2col call the active kernel backend
(``minadder.backend``), so the same graph runs on NumPy, Numba or CUDA kernels.
"""
import numbers

import numpy as np

from . import backend
from .kernels import contract
from .kernels.contract import output_size
from .tensor import Function, Tensor

__all__ = [
    "add", "sub", "mul", "div", "neg", "power", "matmul",
    "sum", "mean", "max", "reshape", "transpose", "flatten",
    "exp", "log", "relu", "hardtanh", "log_softmax", "cross_entropy", "linear",
    "conv2d", "max_pool2d", "avg_pool2d", "batch_norm", "adder2d", "adder_linear",
]


# ============================================================================ arithmetic
class Add(Function):
    @staticmethod
    def forward(ctx, a, b):
        return np.add(a, b)

    @staticmethod
    def backward(ctx, g):
        return g, g


class Sub(Function):
    @staticmethod
    def forward(ctx, a, b):
        return np.subtract(a, b)

    @staticmethod
    def backward(ctx, g):
        return g, -g


class Mul(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return np.multiply(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        return g * b, g * a


class Div(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return np.divide(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        return g / b, -g * a / (b * b)


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
        ctx.save_for_backward(a)
        ctx.exponent = exponent
        return np.power(a, exponent)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved
        return g * ctx.exponent * np.power(a, ctx.exponent - 1), None


class MatMul(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return np.matmul(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        return g @ np.swapaxes(b, -1, -2), np.swapaxes(a, -1, -2) @ g


def add(a, b):
    """a + b with broadcasting."""
    return Add.apply(a, b)


def sub(a, b):
    """a - b with broadcasting."""
    return Sub.apply(a, b)


def mul(a, b):
    """a * b with broadcasting."""
    return Mul.apply(a, b)


def div(a, b):
    """a / b with broadcasting."""
    return Div.apply(a, b)


def neg(a):
    return Neg.apply(a)


def power(a, exponent):
    """a ** exponent for a constant (non-Tensor) exponent."""
    if isinstance(exponent, Tensor):
        raise TypeError("power: the exponent must be a number, not a Tensor")
    return Power.apply(a, exponent)


def matmul(a, b):
    """Matrix product of two operands with at least 2 dimensions (batched over leading axes)."""
    for name, t in (("a", a), ("b", b)):
        if np.ndim(t.data if isinstance(t, Tensor) else t) < 2:
            raise ValueError(f"matmul: operand {name} must have at least 2 dimensions")
    a_shape, b_shape = np.shape(_raw(a)), np.shape(_raw(b))
    if a_shape[-1] != b_shape[-2]:
        raise ValueError(f"matmul: shapes {a_shape} and {b_shape} do not align ({a_shape[-1]} != {b_shape[-2]})")
    return MatMul.apply(a, b)


def _raw(t):
    return t.data if isinstance(t, Tensor) else np.asarray(t)


# ============================================================================ reductions
def _expand(g, shape, axis, keepdims):
    """Give a reduced gradient back the reduced axes, so it broadcasts against the input."""
    if axis is None:
        return np.broadcast_to(np.reshape(g, (1,) * len(shape)), shape)
    if not keepdims:
        g = np.expand_dims(g, axis)
    return np.broadcast_to(g, shape)


class Sum(Function):
    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        ctx.shape, ctx.axis, ctx.keepdims = a.shape, axis, keepdims
        return np.asarray(np.sum(a, axis=axis, keepdims=keepdims))

    @staticmethod
    def backward(ctx, g):
        return _expand(g, ctx.shape, ctx.axis, ctx.keepdims)


class Max(Function):
    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        out = np.max(a, axis=axis, keepdims=True)
        # the gradient flows to the maxima; ties share it equally
        mask = (a == out).astype(a.dtype)
        ctx.mask = mask / mask.sum(axis=axis, keepdims=True)
        ctx.shape, ctx.axis, ctx.keepdims = a.shape, axis, keepdims
        return np.asarray(out if keepdims else np.squeeze(out, axis=axis))

    @staticmethod
    def backward(ctx, g):
        return _expand(g, ctx.shape, ctx.axis, ctx.keepdims) * ctx.mask


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


# ============================================================================ shape
class Reshape(Function):
    @staticmethod
    def forward(ctx, a, shape):
        ctx.shape = a.shape
        return np.reshape(a, shape)

    @staticmethod
    def backward(ctx, g):
        return np.reshape(g, ctx.shape)


class Transpose(Function):
    @staticmethod
    def forward(ctx, a, axes):
        ctx.axes = axes
        return np.transpose(a, axes)

    @staticmethod
    def backward(ctx, g):
        if ctx.axes is None:
            return np.transpose(g)
        return np.transpose(g, np.argsort(ctx.axes))


def reshape(a, *shape):
    """Reshape; accepts reshape(t, 2, 3) or reshape(t, (2, 3)); one -1 is inferred."""
    shape = tuple(shape[0]) if len(shape) == 1 and not isinstance(shape[0], numbers.Integral) else shape
    size = np.size(_raw(a))
    known = int(np.prod([n for n in shape if n != -1]))
    if shape.count(-1) > 1 or (-1 not in shape and known != size) or (-1 in shape and (known == 0 or size % known)):
        raise ValueError(f"reshape: cannot reshape a tensor of shape {np.shape(_raw(a))} into {shape}")
    return Reshape.apply(a, shape=shape)


def transpose(a, *axes):
    """Permute axes (reverse them when none are given)."""
    axes = tuple(axes[0]) if len(axes) == 1 and not isinstance(axes[0], numbers.Integral) else axes
    return Transpose.apply(a, axes=axes or None)


def flatten(a, start_dim=1):
    """Merge all axes from `start_dim` on: (N, C, H, W) -> (N, C*H*W)."""
    shape = np.shape(_raw(a))
    return reshape(a, *shape[:start_dim], -1)


# ============================================================================ elementwise
class Exp(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.out = np.exp(a)
        return ctx.out

    @staticmethod
    def backward(ctx, g):
        return g * ctx.out


class Log(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return np.log(a)

    @staticmethod
    def backward(ctx, g):
        return g / ctx.saved[0]


class ReLU(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.mask = a > 0
        return np.maximum(a, a.dtype.type(0))

    @staticmethod
    def backward(ctx, g):
        return g * ctx.mask


class HardTanh(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.mask = (a > -1) & (a < 1)
        return np.clip(a, -1, 1)

    @staticmethod
    def backward(ctx, g):
        return g * ctx.mask


def exp(a):
    return Exp.apply(a)


def log(a):
    return Log.apply(a)


def relu(a):
    """max(0, a)."""
    return ReLU.apply(a)


def hardtanh(a):
    """HT(a) = min(1, max(-1, a))  (Eq. 7)."""
    return HardTanh.apply(a)


# ============================================================================ losses
def _log_softmax(x, axis):
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


class LogSoftmax(Function):
    @staticmethod
    def forward(ctx, x, axis=-1):
        ctx.out, ctx.axis = _log_softmax(x, axis), axis
        return ctx.out

    @staticmethod
    def backward(ctx, g):
        return g - np.exp(ctx.out) * g.sum(axis=ctx.axis, keepdims=True)


class CrossEntropy(Function):
    @staticmethod
    def forward(ctx, logits, labels):
        logp = _log_softmax(logits, axis=1)
        ctx.logp, ctx.labels = logp, labels
        return np.asarray(-logp[np.arange(len(labels)), labels].mean(), dtype=logits.dtype)

    @staticmethod
    def backward(ctx, g):
        grad = np.exp(ctx.logp)                       # softmax
        grad[np.arange(len(ctx.labels)), ctx.labels] -= 1
        return grad * (g / len(ctx.labels)), None


def log_softmax(x, axis=-1):
    """log(softmax(x)) along `axis`, computed stably."""
    return LogSoftmax.apply(x, axis=axis)


def cross_entropy(logits, labels):
    """Mean over the batch of -log softmax(logits)[n, labels[n]].

    logits: (N, C) Tensor; labels: integer array or Tensor of shape (N,) with values in [0, C).
    """
    shape = np.shape(_raw(logits))
    if len(shape) != 2:
        raise ValueError(f"cross_entropy: logits must be 2-D (N, C), got shape {shape}")
    labels = np.asarray(_raw(labels))
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"cross_entropy: labels must be integers, got dtype {labels.dtype}")
    if labels.shape != (shape[0],):
        raise ValueError(f"cross_entropy: labels must have shape ({shape[0]},) to match logits {shape}, got {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= shape[1]):
        bad = labels[(labels < 0) | (labels >= shape[1])][0]
        raise ValueError(f"cross_entropy: label {bad} is out of range for {shape[1]} classes (expected 0..{shape[1] - 1})")
    return CrossEntropy.apply(logits, labels.astype(np.intp))


# ============================================================================ layers
def linear(x, weight, bias=None):
    """y = x @ weight.T + bias, with weight of shape (out_features, in_features)."""
    xs, ws = np.shape(_raw(x)), np.shape(_raw(weight))
    if len(ws) != 2 or xs[-1] != ws[1]:
        raise ValueError(f"linear: x has {xs[-1]} features but weight has shape {ws} (expected (out, {xs[-1]}))")
    y = matmul(x, transpose(weight))
    return y if bias is None else y + bias


def _check_window_args(op, x, weight_shape, stride, padding):
    """Validate a sliding-window layer's arguments before any work is done."""
    contract.check_window_args(op, np.shape(_raw(x)), weight_shape, stride, padding)


class Conv2d(Function):
    @staticmethod
    def forward(ctx, x, weight, stride, padding):
        k = backend.kernels()
        c_out, _, kh, kw = weight.shape
        n, _, h, w = x.shape
        ho, wo = output_size(h, kh, stride, padding), output_size(w, kw, stride, padding)
        cols = k.im2col(x, kh, kw, stride, padding)                   # (K, L)
        w2 = weight.reshape(c_out, -1)                                # (C_out, K)
        ctx.cols, ctx.w2, ctx.kernels = cols, w2, k
        ctx.shape = (x.shape, weight.shape, stride, padding)
        y = (w2 @ cols).reshape(c_out, n, ho, wo).transpose(1, 0, 2, 3)
        return np.ascontiguousarray(y)

    @staticmethod
    def backward(ctx, g):
        x_shape, w_shape, stride, padding = ctx.shape
        g2 = np.ascontiguousarray(g.transpose(1, 0, 2, 3)).reshape(w_shape[0], -1)
        dw = (g2 @ ctx.cols.T).reshape(w_shape)
        dx = None
        if ctx.needs_input_grad[0]:
            dx = ctx.kernels.col2im(ctx.w2.T @ g2, x_shape, w_shape[2], w_shape[3], stride, padding)
        return dx, dw, None, None


def conv2d(x, weight, bias=None, stride=1, padding=0):
    """2-D convolution (cross-correlation) via im2col: Y = W @ X_col, reshaped to (N, C_out, H_out, W_out)."""
    _check_window_args("conv2d", x, np.shape(_raw(weight)), stride, padding)
    y = Conv2d.apply(x, weight, stride, padding)
    return y if bias is None else y + reshape(bias, 1, -1, 1, 1)


class Adder2d(Function):
    @staticmethod
    def forward(ctx, x, weight, stride, padding, grad_mode):
        k = backend.kernels()
        y, ctx.cache = contract.adder2d_forward(k, x, weight, stride, padding)
        ctx.kernels, ctx.grad_mode = k, grad_mode
        return y

    @staticmethod
    def backward(ctx, g):
        dx, dw = contract.adder2d_backward(ctx.kernels, g, ctx.cache, ctx.grad_mode,
                                           input_grad=ctx.needs_input_grad[0])
        return dx, dw, None, None, None


def adder2d(x, weight, stride=1, padding=0, grad_mode="full"):
    """The adder layer (Eq. 2): Y[n,t,u,v] = -sum_{k,i,j} |Xp[n,k,s*u+i,s*v+j] - F[t,k,i,j]|.

    x: (N, C_in, H, W), weight: (C_out, C_in, d, d), zero padding. grad_mode selects the
    gradients of SPEC section 2: "full" (X - F for the filters, Eq. 5, and HardTanh(F - X)
    for the input, Eq. 6) or "sign" (the exact subgradient, Eq. 4).
    """
    contract.check_grad_mode(grad_mode, "adder2d")
    _check_window_args("adder2d", x, np.shape(_raw(weight)), stride, padding)
    return Adder2d.apply(x, weight, stride, padding, grad_mode)


def adder_linear(x, weight, grad_mode="full"):
    """Fully connected adder layer: Y[n, t] = -sum_k |x[n, k] - W[t, k]| (adder2d on a 1x1 map)."""
    contract.check_grad_mode(grad_mode, "adder_linear")
    xs, ws = np.shape(_raw(x)), np.shape(_raw(weight))
    if len(xs) != 2:
        raise ValueError(f"adder_linear: input x must be 2-D (N, in_features), got shape {xs}")
    if len(ws) != 2 or ws[1] != xs[1]:
        raise ValueError(f"adder_linear: x has {xs[1]} features but weight has shape {ws} (expected (out, {xs[1]}))")
    y = Adder2d.apply(reshape(x, xs[0], xs[1], 1, 1), reshape(weight, ws[0], ws[1], 1, 1), 1, 0, grad_mode)
    return reshape(y, xs[0], ws[0])


# ============================================================================ pooling
def _windows(xp, k, stride, ho, wo):
    """The k*k strided views xp[..., i::s, j::s] of a padded input, one per window offset."""
    for i in range(k):
        for j in range(k):
            yield i, j, xp[:, :, i:i + stride * ho:stride, j:j + stride * wo:stride]


class MaxPool2d(Function):
    @staticmethod
    def forward(ctx, x, k, stride, padding):
        n, c, h, w = x.shape
        ho, wo = output_size(h, k, stride, padding), output_size(w, k, stride, padding)
        xp = x if padding == 0 else np.pad(x, ((0, 0), (0, 0), (padding,) * 2, (padding,) * 2),
                                           constant_values=-np.inf)
        ctx.shape = (xp.shape, k, stride, padding, ho, wo, x.shape)
        if np.isnan(x).any():
            # argmax semantics with NaN (the first NaN wins), through a stacked copy
            stacked = np.stack([v for _, _, v in _windows(xp, k, stride, ho, wo)])  # (k*k, N, C, Ho, Wo)
            ctx.argmax = stacked.argmax(axis=0)
            return np.take_along_axis(stacked, ctx.argmax[None], axis=0)[0]
        # a running maximum over the k*k window offsets; the strict > keeps the first
        # maximum, as argmax (and PyTorch) do, without stacking k*k copies of the input
        windows = _windows(xp, k, stride, ho, wo)
        _, _, first = next(windows)
        out = first.copy()
        ctx.argmax = np.zeros(out.shape, dtype=np.uint8 if k * k < 256 else np.intp)
        for i, j, view in windows:
            better = view > out
            np.maximum(out, view, out=out)
            np.putmask(ctx.argmax, better, i * k + j)
        return out

    @staticmethod
    def backward(ctx, g):
        xp_shape, k, stride, padding, ho, wo, x_shape = ctx.shape
        dxp = np.zeros(xp_shape, dtype=g.dtype)
        for i, j, view in _windows(dxp, k, stride, ho, wo):
            if stride >= k:   # windows do not overlap: each input pixel is written once
                np.multiply(g, ctx.argmax == i * k + j, out=view)
            else:
                view += g * (ctx.argmax == i * k + j)
        return dxp[:, :, padding:padding + x_shape[2], padding:padding + x_shape[3]], None, None, None


class AvgPool2d(Function):
    @staticmethod
    def forward(ctx, x, k, stride, padding):
        n, c, h, w = x.shape
        ho, wo = output_size(h, k, stride, padding), output_size(w, k, stride, padding)
        xp = np.pad(x, ((0, 0), (0, 0), (padding,) * 2, (padding,) * 2))
        out = np.zeros((n, c, ho, wo), dtype=x.dtype)
        for _, _, view in _windows(xp, k, stride, ho, wo):
            out += view
        ctx.shape = (xp.shape, k, stride, padding, ho, wo, x.shape)
        return out / (k * k)  # padded zeros count, as PyTorch's default

    @staticmethod
    def backward(ctx, g):
        xp_shape, k, stride, padding, ho, wo, x_shape = ctx.shape
        dxp = np.zeros(xp_shape, dtype=g.dtype)
        for _, _, view in _windows(dxp, k, stride, ho, wo):
            view += g / (k * k)
        return dxp[:, :, padding:padding + x_shape[2], padding:padding + x_shape[3]], None, None, None


def _check_pool_args(op, x, kernel_size, stride, padding):
    xs = np.shape(_raw(x))
    if len(xs) != 4:
        raise ValueError(f"{op}: input x must be 4-D (N, C, H, W), got shape {xs}")
    stride = kernel_size if stride is None else stride
    for name, value, low in (("kernel_size", kernel_size, 1), ("stride", stride, 1), ("padding", padding, 0)):
        if not isinstance(value, numbers.Integral) or value < low:
            raise ValueError(f"{op}: {name} must be an integer >= {low}, got {value!r}")
    if padding > kernel_size // 2:
        raise ValueError(f"{op}: padding {padding} must be at most half the kernel size {kernel_size}")
    if kernel_size > min(xs[2], xs[3]) + 2 * padding:
        raise ValueError(f"{op}: kernel {kernel_size} is larger than the padded input {xs[2]}x{xs[3]} (padding={padding})")
    return stride


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """Max over k x k windows (stride defaults to k); padding counts as -inf."""
    stride = _check_pool_args("max_pool2d", x, kernel_size, stride, padding)
    return MaxPool2d.apply(x, kernel_size, stride, padding)


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    """Mean over k x k windows (stride defaults to k); padding counts as zeros."""
    stride = _check_pool_args("avg_pool2d", x, kernel_size, stride, padding)
    return AvgPool2d.apply(x, kernel_size, stride, padding)


# ============================================================================ batch norm
def _channel_sum(a, b=None):
    """sum over every axis but 1 of a (or of a * b, without the product's temporary):
    the per-channel sums of batch norm, for (N, C) and (N, C, H, W) arrays."""
    if a.ndim == 2:
        return np.einsum("nc->c", a) if b is None else np.einsum("nc,nc->c", a, b)
    n, c = a.shape[:2]
    a3 = a.reshape(n, c, -1)
    if b is None:
        return a3.sum(axis=2).sum(axis=0)   # the inner, contiguous axis first: fast in NumPy
    return np.einsum("nci,nci->c", a3, b.reshape(n, c, -1))


class BatchNorm(Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, training, momentum, eps):
        axes = (0,) if x.ndim == 2 else (0, 2, 3)
        shape = (1, -1) if x.ndim == 2 else (1, -1, 1, 1)
        count = x.size // x.shape[1]
        if training:
            mu = _channel_sum(x) / count
            xhat = x - mu.reshape(shape).astype(x.dtype)
            var = _channel_sum(xhat, xhat) / count       # biased, for normalising (Eq. 10)
            if running_mean is not None:
                running_mean *= 1 - momentum
                running_mean += momentum * mu
                running_var *= 1 - momentum
                running_var += momentum * var * count / (count - 1)  # unbiased (count >= 2 is checked)
        else:
            mu, var = running_mean, running_var
            xhat = x - mu.reshape(shape).astype(x.dtype)
        inv_std = (1.0 / np.sqrt(var + eps)).astype(x.dtype)
        xhat *= inv_std.reshape(shape)                    # in place: xhat is our own array
        ctx.xhat, ctx.inv_std, ctx.axes, ctx.shape, ctx.training = xhat, inv_std, axes, shape, training
        ctx.weight, ctx.count = weight, count
        y = xhat if weight is None else xhat * weight.reshape(shape)
        if bias is None:
            return y
        if y is xhat:
            return y + bias.reshape(shape)
        y += bias.reshape(shape)
        return y

    @staticmethod
    def backward(ctx, g):
        xhat, shape = ctx.xhat, ctx.shape
        dweight = _channel_sum(g, xhat)                   # sum g * xhat
        dbias = _channel_sum(g)                           # sum g
        scale = ctx.inv_std if ctx.weight is None else ctx.inv_std * ctx.weight
        if ctx.training:
            # the batch statistics depend on x too (the backward of Eq. 10): with
            # dxhat = g * weight,  dx = inv_std * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
            #                         = inv_std * weight * (g - sum(g)/M - xhat * sum(g * xhat)/M)
            m = ctx.count
            dx = xhat * (dweight / m).astype(g.dtype).reshape(shape)
            dx += (dbias / m).astype(g.dtype).reshape(shape)
            np.subtract(g, dx, out=dx)
            dx *= scale.reshape(shape)
        else:
            dx = g * scale.reshape(shape)
        return dx, dweight, dbias, None, None, None, None, None


def batch_norm(x, running_mean=None, running_var=None, weight=None, bias=None,
               training=False, momentum=0.1, eps=1e-5):
    """Batch normalisation (Eq. 10) of x (N, C) or (N, C, H, W) per channel.

    training=True normalises with the batch's mean and biased variance and updates the
    running statistics in place (momentum 0.1, unbiased variance); training=False uses
    the running statistics. Follows PyTorch's ``F.batch_norm`` argument order.
    """
    xs = np.shape(_raw(x))
    if len(xs) not in (2, 4):
        raise ValueError(f"batch_norm: input must be 2-D (N, C) or 4-D (N, C, H, W), got shape {xs}")
    arrays = {}
    for name, value in (("running_mean", running_mean), ("running_var", running_var),
                        ("weight", weight), ("bias", bias)):
        if value is not None and np.shape(_raw(value)) != (xs[1],):
            raise ValueError(f"batch_norm: {name} must have shape ({xs[1]},), got {np.shape(_raw(value))}")
        arrays[name] = _raw(value) if value is not None else None
    if not training and (running_mean is None or running_var is None):
        raise ValueError("batch_norm: evaluation (training=False) needs running_mean and running_var")
    if training and xs[0] * (1 if len(xs) == 2 else xs[2] * xs[3]) < 2:
        raise ValueError(f"batch_norm: training needs more than one value per channel, got input shape {xs}")
    return BatchNorm.apply(x, weight, bias, arrays["running_mean"], arrays["running_var"],
                           training, momentum, eps)
