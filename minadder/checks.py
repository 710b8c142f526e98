"""What every public layer and optimizer setting refuses, and the message it gives.

The layers (``layers.py``) and the optimizer (``optim.py``) call these before any work,
so a bad argument fails at once with its name and what was expected. The sliding-window
shape checks are ``kernels.geometry.check_window_args``, and the one grad_mode check is
``kernels.contract.check_grad_mode``; the adder layer's entry points call both here.
"""
import math
import numbers

import numpy as np

from .kernels.contract import DISTANCES, check_grad_mode
from .kernels.geometry import check_window_args
from .tensor import Tensor


#: the dtypes the adder and convolution kernels compute in (kernels/contract.py)
KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _shape(t):
    """The shape of a Tensor or an array."""
    return np.shape(t.data if isinstance(t, Tensor) else t)


def check_operand(op, name, value, dtypes=None):
    """A layer's operand ``name``: a Tensor or a NumPy array (a list or a number has no
    dtype to keep) of a real floating dtype, one of ``dtypes`` when given. Integers would
    be truncated on the way (batch norm's 1 / std to 0) and the backends differ on other
    floats, so both are refused rather than converted. Returns the operand's shape."""
    data = value.data if isinstance(value, Tensor) else value
    if not isinstance(data, np.ndarray):
        raise TypeError(f"{op}: {name} must be a Tensor or a NumPy array, got {type(value).__name__}")
    if data.dtype.kind != "f" or (dtypes is not None and data.dtype not in dtypes):
        wanted = " or ".join(d.name for d in dtypes) if dtypes is not None else "of a floating dtype"
        raise TypeError(f"{op}: {name} must be {wanted}, got dtype {data.dtype} "
                        "(convert it first, e.g. x.astype(np.float32))")
    return data.shape


def check_adder2d_args(op, x, weight, stride, padding, grad_mode, distance="l1"):
    """The adder layer's operands (x 4-D, weight (C_out, C_in, kh, kw), a window that fits,
    both float32 or float64), its grad_mode, one of contract.GRAD_MODES, and its distance
    (check_distance)."""
    check_distance(op, distance, grad_mode)
    check_window_args(op, check_operand(op, "x", x, KERNEL_DTYPES), check_operand(op, "weight", weight, KERNEL_DTYPES),
                      stride, padding)


def check_bias(op, bias, features):
    """A layer's bias: None, or a floating vector of ``features`` numbers (one per output)."""
    if bias is not None and check_operand(op, "bias", bias) != (features,):
        raise ValueError(f"{op}: bias must have shape ({features},), got {_shape(bias)}")


def check_distance(op, distance, grad_mode):
    """An adder layer's distance, one of contract.DISTANCES, with a grad_mode that fits it:
    grad_mode chooses among the l1 layer's gradients; the l2 layer's are exact, and asking
    it for the sign gradient (Eq. 4) is an error rather than a silently ignored setting."""
    check_grad_mode(grad_mode, op)
    if not isinstance(distance, str) or distance not in DISTANCES:
        raise ValueError(f"{op}: distance must be one of {DISTANCES}, got {distance!r}")
    if distance == "l2" and grad_mode == "sign":
        raise ValueError(f"{op}: grad_mode='sign' applies to the l1 distance only; "
                         "an l2 layer's gradients are exact (use grad_mode='full')")
    return distance


def check_number(name, value, low=0.0, high=math.inf, low_open=False, high_open=False):
    """Return ``value`` as a float if it is a finite real number in the interval from
    ``low`` to ``high`` (each end closed unless ``*_open``); else raise a ValueError that
    names it, e.g. "momentum must be in [0, 1); got 1.5"."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        if high == math.inf:
            wanted = f"a finite number {'>' if low_open else '>='} {low:g}"
        else:
            wanted = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be {wanted}; got {value!r}")
    return float(value)


def check_labels(logits, labels):
    """cross_entropy's labels: integers, one per row of the 2-D logits, each a class index.
    Returns them as an intp array."""
    shape = check_operand("cross_entropy", "logits", logits)
    if len(shape) != 2:
        raise ValueError(f"cross_entropy: logits must be 2-D (N, C), got shape {shape}")
    labels = np.asarray(getattr(labels, "data", labels))
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"cross_entropy: labels must be integers, got dtype {labels.dtype}")
    if labels.shape != (shape[0],):
        raise ValueError(f"cross_entropy: labels must have shape ({shape[0]},) to match logits {shape}, got {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= shape[1]):
        bad = labels[(labels < 0) | (labels >= shape[1])][0]
        raise ValueError(f"cross_entropy: label {bad} is out of range for {shape[1]} classes (expected 0..{shape[1] - 1})")
    return labels.astype(np.intp)


def check_features(op, x, weight, x_ndim=None, dtypes=None):
    """A fully connected layer's operands: weight (out, in) with in = x's last axis (and x
    of x_ndim dimensions when given, else at least 1), both floating (of ``dtypes`` when
    given). Returns the two shapes."""
    xs, ws = check_operand(op, "x", x, dtypes), check_operand(op, "weight", weight, dtypes)
    if x_ndim is not None and len(xs) != x_ndim:
        raise ValueError(f"{op}: input x must be {x_ndim}-D (N, in_features), got shape {xs}")
    if not xs:
        raise ValueError(f"{op}: input x must have at least 1 dimension (in_features), got a 0-D one")
    if len(ws) != 2 or xs[-1] != ws[1]:
        raise ValueError(f"{op}: x has {xs[-1]} features but weight has shape {ws} (expected (out, {xs[-1]}))")
    return xs, ws


def check_pool_args(op, x, kernel_size, stride, padding):
    """A pooling layer's window: integers, padding at most half the kernel, a kernel that
    fits the padded input. Returns the stride (the kernel size when None)."""
    xs = check_operand(op, "x", x)
    if len(xs) != 4:
        raise ValueError(f"{op}: input x must be 4-D (N, C, H, W), got shape {xs}")
    kernel_size, stride, padding = check_pool_layer(op, kernel_size, stride, padding)
    if kernel_size > min(xs[2], xs[3]) + 2 * padding:
        raise ValueError(f"{op}: kernel {kernel_size} is larger than the padded input {xs[2]}x{xs[3]} (padding={padding})")
    return stride


def check_sizes(op, low=1, **sizes):
    """Each of ``sizes`` (name=value) as an int, if it is an integer >= ``low`` (True and
    False are not sizes); else a ValueError naming ``op`` and the argument, e.g.
    "Conv2d: kernel_size must be an integer >= 1, got 0". The layers check at construction,
    as PyTorch's do, so a bad size never reaches a forward."""
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise ValueError(f"{op}: {name} must be an integer >= {low}, got {value!r}")
    return tuple(int(v) for v in sizes.values())


def check_conv_layer(op, in_channels, out_channels, kernel_size, stride, padding):
    """A sliding-window layer's sizes (Adder2d, Conv2d): positive channels and kernel,
    stride >= 1, padding >= 0. Returns them as ints, in that order."""
    return check_sizes(op, 1, in_channels=in_channels, out_channels=out_channels,
                       kernel_size=kernel_size, stride=stride) + check_sizes(op, 0, padding=padding)


def check_pool_layer(op, kernel_size, stride, padding):
    """A pooling window: kernel >= 1, stride None (the kernel size) or >= 1, padding >= 0
    and at most half the kernel, as PyTorch requires. Returns (kernel_size, stride, padding)."""
    stride = kernel_size if stride is None else stride
    kernel_size, stride = check_sizes(op, 1, kernel_size=kernel_size, stride=stride)
    (padding,) = check_sizes(op, 0, padding=padding)
    if padding > kernel_size // 2:
        raise ValueError(f"{op}: padding {padding} must be at most half the kernel size {kernel_size}")
    return kernel_size, stride, padding


def check_batch_norm_layer(op, num_features, eps, momentum):
    """A batch norm's settings: num_features >= 1, eps > 0, momentum in [0, 1]."""
    (num_features,) = check_sizes(op, 1, num_features=num_features)
    eps, momentum = check_number(f"{op}: eps", eps, low_open=True), check_number(f"{op}: momentum", momentum, 0, 1)
    return num_features, eps, momentum


def check_batch_norm_args(x, running_mean, running_var, weight, bias, training, residual=None,
                          momentum=0.1, eps=1e-5):
    """batch_norm's operands: x (N, C) or (N, C, H, W) of a floating dtype, per-channel
    vectors of C (the running statistics NumPy arrays, which training updates in place),
    running statistics for evaluation, more than one value per channel for training, a
    residual of x's shape, eps >= 0 and momentum in [0, 1]."""
    xs = check_operand("batch_norm", "input", x)
    if residual is not None and check_operand("batch_norm", "residual", residual) != xs:
        raise ValueError(f"batch_norm: residual must have the input's shape {xs}, got {_shape(residual)}")
    if len(xs) not in (2, 4):
        raise ValueError(f"batch_norm: input must be 2-D (N, C) or 4-D (N, C, H, W), got shape {xs}")
    check_number("batch_norm: eps", eps)       # (0 is the definition itself: the proofs' tests use it)
    check_number("batch_norm: momentum", momentum, 0, 1)
    for name, value in (("running_mean", running_mean), ("running_var", running_var),
                        ("weight", weight), ("bias", bias)):
        if value is not None and check_operand("batch_norm", name, value) != (xs[1],):
            raise ValueError(f"batch_norm: {name} must have shape ({xs[1]},), got {_shape(value)}")
    if not training and (running_mean is None or running_var is None):
        raise ValueError("batch_norm: evaluation (training=False) needs running_mean and running_var")
    if training and xs[0] * (1 if len(xs) == 2 else xs[2] * xs[3]) < 2:
        raise ValueError(f"batch_norm: training needs more than one value per channel, got input shape {xs}")
