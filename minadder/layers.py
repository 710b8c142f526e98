"""The layers of a network, on top of the primitives of ``ops.py`` (the mathematics:
proofs/mathematics.md). ``linear`` is a composition of primitives; the others are one
fused ``Function`` each, so that a training step keeps few large temporaries alive.
``conv2d`` and the adder layer (Eq. 2) call the active kernel backend (``minadder.backend``).
``max_pool2d`` and ``batch_norm`` have readable definitions from primitives beside them
(``*_from_primitives``, read those first), which the tests hold the fused ones equal to.
"""
import numbers

import numpy as np

from . import backend
from .kernels import contract
from .kernels.contract import output_size
from .ops import _raw, getitem, matmul, max, mean, pad, reshape, transpose
from .tensor import Function

__all__ = [
    "log_softmax", "cross_entropy", "linear",
    "conv2d", "adder2d", "adder_linear",
    "max_pool2d", "avg_pool2d", "batch_norm",
    "max_pool2d_from_primitives", "batch_norm_from_primitives",
]


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
        ctx.logp, ctx.labels = _log_softmax(logits, axis=1), labels
        return np.asarray(-ctx.logp[np.arange(len(labels)), labels].mean(), dtype=logits.dtype)

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


# ============================================================================ weight layers
def linear(x, weight, bias=None):
    """y = x @ weight.T + bias, with weight of shape (out_features, in_features)."""
    xs, ws = np.shape(_raw(x)), np.shape(_raw(weight))
    if len(ws) != 2 or xs[-1] != ws[1]:
        raise ValueError(f"linear: x has {xs[-1]} features but weight has shape {ws} (expected (out, {xs[-1]}))")
    y = matmul(x, transpose(weight))
    return y if bias is None else y + bias


class Conv2d(Function):
    @staticmethod
    def forward(ctx, x, weight, stride, padding):
        k, win = backend.kernels(), contract.Window.of(x.shape, weight.shape, stride, padding)
        cols = k.im2col(x, win.kh, win.kw, stride, padding)           # X_col (K, L)
        w2 = weight.reshape(win.c_out, win.k)                         # W (C_out, K)
        ctx.cols, ctx.w2, ctx.kernels, ctx.window = cols, w2, k, win
        y = (w2 @ cols).reshape(win.c_out, win.n, win.ho, win.wo).transpose(1, 0, 2, 3)
        return np.ascontiguousarray(y)

    @staticmethod
    def backward(ctx, g):
        win = ctx.window
        g2 = np.ascontiguousarray(g.transpose(1, 0, 2, 3)).reshape(win.c_out, win.l)   # G (C_out, L)
        dw = (g2 @ ctx.cols.T).reshape(win.c_out, win.c, win.kh, win.kw)
        dx = None
        if ctx.needs_input_grad[0]:
            dx = ctx.kernels.col2im(ctx.w2.T @ g2, win.x_shape, win.kh, win.kw, win.stride, win.padding)
        return dx, dw, None, None


def conv2d(x, weight, bias=None, stride=1, padding=0):
    """2-D convolution (cross-correlation) via im2col: Y = W @ X_col, reshaped to (N, C_out, H_out, W_out)."""
    contract.check_window_args("conv2d", np.shape(_raw(x)), np.shape(_raw(weight)), stride, padding)
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
    gradients (proofs/mathematics.md): "full" (X - F for the filters, Eq. 5, and
    HardTanh(F - X) for the input, Eq. 6) or "sign" (the exact subgradient, Eq. 4).
    """
    contract.check_grad_mode(grad_mode, "adder2d")
    contract.check_window_args("adder2d", np.shape(_raw(x)), np.shape(_raw(weight)), stride, padding)
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
    """The k*k strided views xp[..., i::s, j::s] (cut to ho x wo) of a padded input, one per
    offset (i, j) in the window: view[n, c, u, v] = xp[n, c, s*u + i, s*v + j]."""
    for i in range(k):
        for j in range(k):
            yield i, j, xp[:, :, i:i + stride * ho:stride, j:j + stride * wo:stride]


def _pad_width(padding):
    return ((0, 0), (0, 0), (padding, padding), (padding, padding))


def _padded_zeros(ctx, dtype):
    n, c, h, w = ctx.x_shape
    return np.zeros((n, c, h + 2 * ctx.padding, w + 2 * ctx.padding), dtype=dtype)


def _unpad(xp, padding, x_shape):
    return xp[:, :, padding:padding + x_shape[2], padding:padding + x_shape[3]]


class MaxPool2d(Function):
    @staticmethod
    def forward(ctx, x, k, stride, padding):
        ho, wo = output_size(x.shape[2], k, stride, padding), output_size(x.shape[3], k, stride, padding)
        xp = x if padding == 0 else np.pad(x, _pad_width(padding), constant_values=-np.inf)
        ctx.x_shape, ctx.k, ctx.stride, ctx.padding = x.shape, k, stride, padding
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
            # offsets come in increasing order: the argmax is the largest one at which the
            # running maximum grew (a max, far faster than a masked store of random masks)
            np.maximum(ctx.argmax, better * ctx.argmax.dtype.type(i * k + j), out=ctx.argmax)
        return out

    @staticmethod
    def backward(ctx, g):
        k, dxp = ctx.k, _padded_zeros(ctx, g.dtype)
        for i, j, view in _windows(dxp, k, ctx.stride, g.shape[2], g.shape[3]):
            if ctx.stride >= k:   # windows do not overlap: each input pixel is written once
                np.multiply(g, ctx.argmax == i * k + j, out=view)
            else:
                view += g * (ctx.argmax == i * k + j)
        return _unpad(dxp, ctx.padding, ctx.x_shape), None, None, None


class AvgPool2d(Function):
    @staticmethod
    def forward(ctx, x, k, stride, padding):
        n, c, h, w = x.shape
        ho, wo = output_size(h, k, stride, padding), output_size(w, k, stride, padding)
        xp = np.pad(x, _pad_width(padding))
        out = np.zeros((n, c, ho, wo), dtype=x.dtype)
        for _, _, view in _windows(xp, k, stride, ho, wo):
            out += view
        ctx.x_shape, ctx.k, ctx.stride, ctx.padding = x.shape, k, stride, padding
        return out / (k * k)  # padded zeros count, as PyTorch's default

    @staticmethod
    def backward(ctx, g):
        dxp = _padded_zeros(ctx, g.dtype)
        for _, _, view in _windows(dxp, ctx.k, ctx.stride, g.shape[2], g.shape[3]):
            view += g / (ctx.k * ctx.k)
        return _unpad(dxp, ctx.padding, ctx.x_shape), None, None, None


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


def max_pool2d_from_primitives(x, kernel_size, stride=None, padding=0):
    """max_pool2d written with primitives, the definition the fused MaxPool2d is tested against:
    pad with -inf, gather every k x k window with one index, take each window's maximum.
    (On ties the gradient is shared here, where the fused version gives it to the first maximum.)"""
    k, stride = kernel_size, _check_pool_args("max_pool2d", x, kernel_size, stride, padding)
    n, c, h, w = np.shape(_raw(x))
    rows = stride * np.arange(output_size(h, k, stride, padding))[:, None] + np.arange(k)  # (H_out, k)
    cols = stride * np.arange(output_size(w, k, stride, padding))[:, None] + np.arange(k)  # (W_out, k)
    xp = pad(x, _pad_width(padding), value=-np.inf)
    windows = getitem(xp, (slice(None), slice(None), rows[:, None, :, None], cols[None, :, None, :]))
    return max(windows, axis=(4, 5))       # windows[n, c, u, v, i, j] = xp[n, c, s*u + i, s*v + j]


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
        channel_shape = (1, -1) if x.ndim == 2 else (1, -1, 1, 1)   # broadcasts (C,) against x
        count = x.size // x.shape[1]                                 # values per channel
        if training:
            mu = _channel_sum(x) / count
            xhat = x - mu.reshape(channel_shape).astype(x.dtype)
            var = _channel_sum(xhat, xhat) / count       # biased, for normalising (Eq. 10)
            if running_mean is not None:
                running_mean *= 1 - momentum
                running_mean += momentum * mu
                running_var *= 1 - momentum
                running_var += momentum * var * count / (count - 1)  # unbiased (count >= 2 is checked)
        else:
            mu, var = running_mean, running_var
            xhat = x - mu.reshape(channel_shape).astype(x.dtype)
        inv_std = (1.0 / np.sqrt(var + eps)).astype(x.dtype)
        xhat *= inv_std.reshape(channel_shape)                    # in place: xhat is our own array
        ctx.xhat, ctx.inv_std, ctx.weight = xhat, inv_std, weight
        ctx.channel_shape, ctx.count, ctx.training = channel_shape, count, training
        y = xhat if weight is None else xhat * weight.reshape(channel_shape)
        if bias is None:
            return y
        if y is xhat:          # y must not alias ctx.xhat, which backward reads
            return y + bias.reshape(channel_shape)
        y += bias.reshape(channel_shape)
        return y

    @staticmethod
    def backward(ctx, g):
        xhat, shape = ctx.xhat, ctx.channel_shape
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


def _check_batch_norm_args(x, running_mean, running_var, weight, bias, training):
    xs = np.shape(_raw(x))
    if len(xs) not in (2, 4):
        raise ValueError(f"batch_norm: input must be 2-D (N, C) or 4-D (N, C, H, W), got shape {xs}")
    for name, value in (("running_mean", running_mean), ("running_var", running_var),
                        ("weight", weight), ("bias", bias)):
        if value is not None and np.shape(_raw(value)) != (xs[1],):
            raise ValueError(f"batch_norm: {name} must have shape ({xs[1]},), got {np.shape(_raw(value))}")
    if not training and (running_mean is None or running_var is None):
        raise ValueError("batch_norm: evaluation (training=False) needs running_mean and running_var")
    if training and xs[0] * (1 if len(xs) == 2 else xs[2] * xs[3]) < 2:
        raise ValueError(f"batch_norm: training needs more than one value per channel, got input shape {xs}")


def batch_norm(x, running_mean=None, running_var=None, weight=None, bias=None,
               training=False, momentum=0.1, eps=1e-5):
    """Batch normalisation (Eq. 10, 11) of x (N, C) or (N, C, H, W) per channel.

    training=True normalises with the batch's mean and biased variance and updates the
    running statistics in place (momentum 0.1, unbiased variance); training=False uses
    the running statistics. Follows PyTorch's ``F.batch_norm`` argument order.
    """
    _check_batch_norm_args(x, running_mean, running_var, weight, bias, training)
    stats = [None if s is None else _raw(s) for s in (running_mean, running_var)]
    return BatchNorm.apply(x, weight, bias, *stats, training, momentum, eps)


def batch_norm_from_primitives(x, running_mean=None, running_var=None, weight=None, bias=None,
                               training=False, momentum=0.1, eps=1e-5):
    """batch_norm written with primitives, the definition the fused BatchNorm is tested against:
    y = weight * (x - mean) / sqrt(var + eps) + bias per channel (Eq. 10), and the running
    statistics updated in place exactly as batch_norm does."""
    _check_batch_norm_args(x, running_mean, running_var, weight, bias, training)
    axes = (0,) if len(x.shape) == 2 else (0, 2, 3)      # all but the channel axis
    channel_shape = (1, -1) if len(x.shape) == 2 else (1, -1, 1, 1)
    if training:
        mu = mean(x, axes, keepdims=True)
        var = mean((x - mu) ** 2, axes, keepdims=True)     # biased
        if running_mean is not None:
            count = np.prod([x.shape[a] for a in axes])
            _raw(running_mean)[...] = (1 - momentum) * _raw(running_mean) + momentum * mu.data.reshape(-1)
            _raw(running_var)[...] = ((1 - momentum) * _raw(running_var)
                                      + momentum * var.data.reshape(-1) * count / (count - 1))
    else:
        mu, var = _raw(running_mean).reshape(channel_shape), _raw(running_var).reshape(channel_shape)
    y = (x - mu) / (var + eps) ** 0.5
    if weight is not None:
        y = y * reshape(weight, channel_shape)
    if bias is not None:
        y = y + reshape(bias, channel_shape)
    return y
