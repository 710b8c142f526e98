"""The kernel contract: the five functions every backend exports, the optional ones, and the grad-mode check.

A backend is a module (or package) of plain functions with the names in ``KERNEL_NAMES``:
``minadder.kernels.reference`` ("numpy", the readable definition), the package
``minadder.kernels.cpu`` ("cpu", Numba) and ``minadder.kernels.cuda`` ("cuda").
``minadder.backend.kernels()`` returns the active one; the layers call only these names.

    check_available()
        Raise ``minadder.backend.BackendUnavailable`` (saying why) when the backend cannot
        run here; return None when it can.

    adder2d_forward(x, weight, win, distance="l1") -> (y, saved)
        The adder layer, Eq. 2: y[n, t, u, v] = -sum_{c,i,j} |Xp[n, c, s*u+i, s*v+j] - F[t, c, i, j]|
        with Xp the zero-padded input; distance="l2" is Appendix B's Eq. 27, the same sum
        of (Xp - F)^2 (one of DISTANCES; a backend without it raises NotImplementedError). x (N, C, H, W), weight F (C_out, C, kh, kw),
        win = geometry.Window.of(x.shape, weight.shape, stride, padding); y has shape
        win.y_shape = (N, C_out, H_out, W_out). ``saved`` is opaque: only the same
        backend's adder2d_backward reads it (and it remembers the distance).

    adder2d_backward(grad_y, saved, mode, need_input_grad=True, need_weight_grad=True, dx_plus=None)
        -> (dx or None, dweight or None)
        The gradients for G = grad_y (N, C_out, H_out, W_out), in one of GRAD_MODES:
        "full" is Eq. 5 for the filters (X - F) and Eq. 6 for the input (HardTanh(F - X));
        "sign" is Eq. 4, the exact subgradient (sgn). A gradient not needed is None and
        its kernel is skipped (the input gradient of a network's first layer). An l2 layer's
        gradients are exact whatever the mode: dY/dF = 2 (X - F), dY/dX = 2 (F - X).
        dx_plus: None, or an array of x's shape and dtype (given only with need_input_grad):
        the returned dx is then dX + dx_plus (the gradient x gathered from its other uses,
        tensor.py), which a backend may add in the pass that writes dX.

    conv2d_forward(x, weight, win) -> (y, saved)
    conv2d_backward(grad_y, saved, need_input_grad=True, need_weight_grad=True, dx_plus=None) -> (dx, dweight)
        The ordinary convolution (cross-correlation), same shapes, for the CNN baselines
        (dx_plus as adder2d_backward's).

Optional kernels, the names in ``OPTIONAL_KERNEL_NAMES``: the layers around the adder
layer that a backend may speed up. The reference defines them all (``batch_norm_reference.py``,
``pooling_reference.py``, ``relu_reference.py``, ``addition_reference.py``); ``minadder.backend.kernel(name)`` returns the active backend's
function, or the reference's when the backend has none (the "cuda" backend: its layers then
run them in NumPy on host arrays).

    batch_norm_forward(x, weight=None, bias=None, mean=None, var=None, eps=1e-5, relu=False, residual=None)
        -> (y, saved, mean, var)
        Batch norm, Eq. 10, per channel (axis 1) of x (N, C) or (N, C, H, W):
        xhat = (x - mean) / sqrt(var + eps), y = weight * xhat + bias. mean and var None:
        training, with the batch's mean and biased variance, returned of x's dtype (the
        layer updates its running statistics with them); given (C,): evaluation, with those.
        weight and bias (C,) or None. saved: what the same backend's backward needs (the
        reference's: xhat and inv_std; the cpu kernels': x and the channel statistics).
    batch_norm_backward(g, saved, weight=None, training=True, y=None, residual=False)
        -> (dx, dweight, dbias), or (dx, dweight, dbias, g_relu) when residual
        Its gradients for the upstream g (Eq. 11; proofs/mathematics.md, section 3):
        dweight = sum g * xhat, dbias = sum g per channel, and dx, which in training
        accounts for the batch statistics depending on x. relu=True in the forward makes
        y = max(0, y) (batch norm and the ReLU after it in one call); its backward is
        given that y and takes g through the ReLU first (g * 1[y > 0]). A residual (x's
        shape) is added to y before that ReLU: y = max(0, weight * xhat + bias + residual),
        the end of ResNet's basic block in one pass; its gradient, g through the ReLU,
        comes back as g_relu when the backward is asked with residual=True (and y).

    max_pool2d_forward(x, k, stride, padding) -> (y, argmax)
        The maximum of each k x k window of x (N, C, H, W) padded with -inf, and its offset
        i*k + j in the window (uint8 when k*k < 256): the first maximum in row-major order,
        or the first NaN. The argmax is in this form on every backend.
    max_pool2d_backward(g, argmax, x_shape, k, stride, padding) -> dx
        g added to the input element each window's argmax names.

    relu_forward(x) -> y
        max(0, x) entry by entry (NaN stays NaN), a new array.
    relu_backward(g, y) -> dx
        g * 1[y > 0] for the output y of relu_forward (NaN in g stays NaN).

    add(a, b) -> out
        a + b entry by entry, a new array (a and b of one shape and dtype): the engine sums
        the gradients of a tensor used twice with it.

The caller validates the arguments before it calls a backend: shapes with
``geometry.check_window_args``, the mode with ``check_grad_mode`` below (the one place
it is checked). Backends trust them and do not check again. Arrays are those of the
backend (NumPy arrays for "numpy" and "cpu", float32 or float64; device arrays for "cuda");
a result has the dtype of its inputs.

The mathematics is in ``proofs/mathematics.md``; the geometry (output size, the window
checks, the Window record) in ``geometry.py``.
"""
from .geometry import Window, check_window_args, output_size  # noqa: F401  (re-exported for older imports)

#: the two gradients of the adder layer: "full" (Eqs. 5 and 6) and "sign" (Eq. 4)
GRAD_MODES = ("full", "sign")

#: the two distances of the adder layer: "l1" (Eq. 2) and "l2" (Appendix B, Eq. 27)
DISTANCES = ("l1", "l2")

#: the functions every backend exports (see above)
KERNEL_NAMES = ("check_available", "adder2d_forward", "adder2d_backward", "conv2d_forward", "conv2d_backward")

#: the functions a backend may export (see above); the reference has them all
OPTIONAL_KERNEL_NAMES = ("batch_norm_forward", "batch_norm_backward", "max_pool2d_forward", "max_pool2d_backward",
                         "relu_forward", "relu_backward", "add")


def check_grad_mode(mode, op="adder2d"):
    """Raise a ValueError naming ``op`` unless ``mode`` is one of GRAD_MODES."""
    if not isinstance(mode, str) or mode not in GRAD_MODES:
        raise ValueError(f"{op}: grad_mode must be one of {GRAD_MODES}, got {mode!r}")
    return mode
