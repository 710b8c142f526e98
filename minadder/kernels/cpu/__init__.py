"""The "cpu" backend: the kernel contract (contract.py) in Numba, parallel and vectorised.

The package is a ladder; read it from the bottom rung up:

    naive.py        Eq. 2 and its gradients as plain loops (no blocking): the definition
                    in Numba, exporting adder2d_forward / adder2d_backward too
    frame.py        the padded input, shifted by the filters' mean (why: precision), its
                    rows sharing their padding (why: fewer positions computed and dropped),
                    split by parity for stride 2 (why: its rows of X_col become stretches)
    positions.py    where a row of X_col lies in that input: wide positions, runs
    register_block.py  the inner steps in LLVM IR, sums held in vector registers
    forward.py      the blocked forward: the min identity, register blocks
    grad_input.py   the blocked dX, col2im fused in
    grad_weight.py  the blocked dW: a register-blocked product, or chunks of X_col
    l2.py           the l2 layer (Eq. 27) through Eq. 28 by BLAS on chunks of X_col, where
                    the blocked kernels (which run Eq. 28 too) do not: 1x1 layers, and
                    the gradients of strides 3 and more
    products.py     large matrix products split over threads (one BLAS call each), and
                    NumPy's own BLAS called from inside a Numba kernel's tasks
    columns.py      parallel im2col / col2im, and the ordinary convolution by chunks of images
    conv.py         the convolution on wide positions, without X_col (long rows, stride 1 or 2)
    batch_norm.py   batch norm (Eq. 10) and its backward, one channel per task
    pooling.py      max pooling over k x k windows with stride k, the argmax recorded
    relu.py         ReLU and its backward, one parallel pass each
    addition.py     the sum of two arrays, one parallel pass (the engine's gradient sums)
    cache.py        keeps Numba's disk cache of all of these in step with their sources

and, one level up because they must be read before any kernel is defined, ../target.py
(which CPU the code is compiled for, and the register block it gets) and ../settings.py
(the Numba settings minadder.configure() sets; importing this package sets none).

This module is the contract's five functions over those rungs (implicit GEMM: no
(K, L) im2col matrix X_col is built, except dW's chunks). The forward pads and shifts
the input once (frame.py) and keeps that copy in ``saved``; both full-mode gradients read
it again. A 1x1 layer without stride or padding (a fully connected one) is worked on as
one image of a single long row (its X_col is the input's transpose).

Compilation is lazy (first call, once per dtype) and cached on disk (cache=True). Numba
keys a function's cache on its own source file only, but a kernel here also compiles in
helpers and constants of other modules (register_block.py's blocks, positions.py's,
frame.py's VECTOR): cache.py clears the package's cache when any of its sources changed,
on import, before a kernel is loaded.

``fastmath`` lets LLVM use vminps/vmaxps and reassociate sums, and the identities above
(the shifted frame, the min identity, dW = G X^T - W sum G) cancel infinities into NaN:
the blocked kernels hold for finite numbers only. So every call first asks whether its
operands are finite (``_finite``: one parallel pass each; the forward's x is checked while
frame.py copies it) and sends one that is not to the NumPy reference, whose inf and NaN
are the definition. Finite results differ from the reference only by float rounding
(tests/test_kernels_cpu.py; tests/test_nonfinite.py for inf and NaN).
"""
from typing import NamedTuple, Optional

import numpy as np

try:
    import numba  # noqa: F401
except ImportError as exc:   # the backend registry reports this as BackendUnavailable
    raise ImportError("backend 'cpu' needs numba: pip install numba") from exc

from .. import reference
from ..geometry import Window
from .forward import blocked_forward, framed_forward
from .frame import ShiftedInput, all_finite, frame_pitch, same_dtype, shifted, unshifted
from .grad_input import blocked_grad_input, plus_if_given
from .grad_weight import blocked_grad_weight, reads_wide_g
from . import columns, conv, products
from .l2 import l2_backward, l2_forward
from .positions import on_wide_positions, wide_rows
from .batch_norm import batch_norm_backward, batch_norm_forward  # noqa: F401  (optional kernels)
from .pooling import max_pool2d_backward, max_pool2d_forward  # noqa: F401
from .relu import relu_backward, relu_forward  # noqa: F401
from .addition import add  # noqa: F401
from . import cache

# before any kernel is compiled or loaded: drop machine code saved from other sources
cache.keep_in_step(cache.cache_dir(all_finite), cache.sources_digest(), cache.module_names())


def check_available():
    """The cpu backend runs wherever Numba imports (the import above checked that)."""


class Saved(NamedTuple):
    """What adder2d_backward needs from the forward: the input, never X_col."""
    x: np.ndarray                     # (N, C, H, W), float32 or float64
    weight: np.ndarray                # (C_out, C, kh, kw), of x's dtype
    win: Window
    frame: Optional[ShiftedInput]     # x padded and shifted by the filters' mean, or None
    finite: bool = True               # x and weight hold no inf or NaN (else: the reference)
    distance: str = "l1"              # "l1" (Eq. 2) or "l2" (Eq. 27)


def _finite(*arrays):
    """Whether every number in ``arrays`` is finite: one parallel pass each (frame.py)."""
    return all(all_finite(np.ascontiguousarray(a).reshape(-1)) for a in arrays)


# ============================================================ shapes the kernels skip
def _empty(win):
    """No work: an empty sum (K = 0) or no outputs."""
    return win.k == 0 or win.l == 0 or win.c_out == 0


def _pointwise(win):
    """A 1x1 layer without stride or padding (a fully connected one among them): its
    X_col is the input's transpose, worked on as one image of a single long row (an input
    that is that row already, N = H = 1, goes straight to the kernels)."""
    single_row = win.n == 1 and win.h == 1
    return win.kh == win.kw == 1 and win.stride == 1 and win.padding == 0 and not single_row


def _as_row(a):
    """(N, C, P) or (N, C, H, W) -> the image (1, C, 1, N*P) of a pointwise layer."""
    n, c = a.shape[:2]
    return np.ascontiguousarray(a.reshape(n, c, -1).transpose(1, 0, 2)).reshape(1, c, 1, -1)


def _from_row(a, n, shape):
    """The inverse of _as_row: (1, C, ..., N*P) -> (N, C) + shape."""
    c = a.shape[1]
    return np.ascontiguousarray(a.reshape(c, n, -1).transpose(1, 0, 2)).reshape((n, c) + tuple(shape))


def _row_window(win):
    return Window(1, win.c, 1, win.l, win.c_out, 1, 1, 1, 0)


# ====================================================================== the contract
def adder2d_forward(x, weight, win, distance="l1"):
    """Eq. 2 (Eq. 27 for distance="l2") on images: (y (N, C_out, H_out, W_out), saved)."""
    x, weight = same_dtype(x, weight)
    if _empty(win):
        return np.zeros(win.y_shape, dtype=x.dtype), Saved(x, weight, win, None, True, distance)
    if not _finite(weight) or (_pointwise(win) and not _finite(x)):
        return _reference_forward(x, weight, win, distance)
    w2 = weight.reshape(win.c_out, win.k)
    if distance == "l2" and _pointwise(win):
        y, frame = l2_forward(x, w2, win)
        return y.reshape(win.y_shape), Saved(x, weight, win, frame, True, distance)
    if _pointwise(win):
        row_win = _row_window(win)
        y = np.empty((1, win.c_out, win.l), dtype=x.dtype)
        blocked_forward(w2, row_win, shifted(_as_row(x), w2, row_win), y)
        return _from_row(y, win.n, (win.ho, win.wo)), Saved(x, weight, win, None)
    y = np.empty((win.n, win.c_out, win.plane), dtype=x.dtype)
    frame = framed_forward(x, w2, win, y, distance)
    if not frame.finite:         # found while copying x into the frame
        return _reference_forward(x, weight, win, distance)
    return y.reshape(win.y_shape), Saved(x, weight, win, frame, True, distance)


def _reference_forward(x, weight, win, distance):
    """inf or NaN in x or the filters: the reference's definition, not the identities."""
    with np.errstate(invalid="ignore", over="ignore"):   # inf - inf is NaN, silently, as in PyTorch
        y = reference.adder2d_forward(x, weight, win, distance)[0]
    return y, Saved(x, weight, win, None, False, distance)


def _frame_for(mode, x, w2, win, saved_frame):
    """The padded input the gradients of ``mode`` read: the forward's shifted copy in
    full mode (a new one if there is none of this dtype), a new unshifted one in sign mode."""
    if mode != "full":
        return unshifted(x, win)
    if saved_frame is not None and saved_frame.xp.dtype == x.dtype:
        return saved_frame      # any common shift of x and W leaves the gradients unchanged
    return shifted(x, w2, win)


def adder2d_backward(grad_y, saved, mode, need_input_grad=True, need_weight_grad=True, dx_plus=None):
    """(dX, dF) of ``mode`` (full: Eqs. 5, 6; sign: Eq. 4), None for one not needed;
    dX + dx_plus if given (added as the wide kernel writes dX, else in a pass of its own)."""
    if not (need_input_grad or need_weight_grad):
        return None, None
    x, weight, win, saved_frame, finite, distance = saved
    x, weight, g = same_dtype(x, weight, grad_y)
    if _empty(win):
        return (plus_if_given(np.zeros(win.x_shape, dtype=x.dtype), dx_plus) if need_input_grad else None,
                np.zeros(weight.shape, dtype=x.dtype) if need_weight_grad else None)
    # G read once for the kernels on wide positions: widened, with its sums and its
    # finiteness (for dW alone, only where dW reads it so: grad_weight.reads_wide_g)
    wide = None
    if (finite and wide_rows(win) and not _pointwise(win)
            and (need_input_grad or reads_wide_g(win, mode, x.dtype))):
        wide = on_wide_positions(g.reshape(win.n, win.c_out, win.plane), win, frame_pitch(win))
    if not (finite and (wide.finite if wide is not None else _finite(g))):
        with np.errstate(invalid="ignore", over="ignore"):
            return reference.adder2d_backward(g, (x, weight, win, distance), mode, need_input_grad, need_weight_grad,
                                              dx_plus)
    w2, g = weight.reshape(win.c_out, win.k), g.reshape(win.n, win.c_out, win.plane)
    if distance == "l2":   # exact gradients, whatever the mode
        frame = saved_frame if saved_frame.xp.dtype == x.dtype else shifted(x, w2, win)
        if _pointwise(win) or not wide_rows(win):     # by BLAS products (l2.py)
            dx, dw = l2_backward(w2, g, win, frame, need_input_grad, need_weight_grad)
            dx = None if dx is None else plus_if_given(dx, dx_plus)
        else:                                          # the l1 layer's kernels, Eq. 28's form
            dx, dw = _backward(w2, g, win, "l2", frame, need_input_grad, need_weight_grad, wide, dx_plus)
        return dx, (None if dw is None else dw.reshape(weight.shape))
    if _pointwise(win):   # the layer on one long row: x, G and dX as rows
        row_win, x_row = _row_window(win), _as_row(x)
        g_row = _as_row(g).reshape(1, win.c_out, win.l)
        dx, dw = _backward(w2, g_row, row_win, mode, _frame_for(mode, x_row, w2, row_win, None),
                           need_input_grad, need_weight_grad)
        dx = None if dx is None else plus_if_given(_from_row(dx, win.n, (win.h, win.w)), dx_plus)
    else:
        dx, dw = _backward(w2, g, win, mode, _frame_for(mode, x, w2, win, saved_frame),
                           need_input_grad, need_weight_grad, wide, dx_plus)
    return dx, (None if dw is None else dw.reshape(weight.shape))


def _backward(w2, g, win, mode, frame, need_input_grad, need_weight_grad, wide=None, dx_plus=None):
    """(dX (+ dx_plus), dW) from the blocked kernels; ``wide``: G on wide positions with its
    sums (positions.WideG), read once for both gradients (stride 1 or 2, several rows)."""
    dx = blocked_grad_input(w2, g, win, mode, frame, wide, dx_plus) if need_input_grad else None
    if wide is not None and need_weight_grad and not reads_wide_g(win, "full" if mode == "l2" else mode, w2.dtype):
        wide.drop_values()     # dW reads G as it is: no widened copy beside its buffers
    if need_weight_grad and mode == "l2":   # dW = 2 (G X'^T - W' sum G): twice full mode's
        return dx, 2 * blocked_grad_weight(w2, g, win, "full", frame, wide)
    dw = blocked_grad_weight(w2, g, win, mode, frame, wide) if need_weight_grad else None
    return dx, dw


def conv2d_forward(x, weight, win):
    """The ordinary convolution: on wide positions (conv.py: stride 1 or 2, long rows), else by
    chunks of images, im2col and one BLAS product each, the chunks shared among threads
    (columns.py). ``saved`` keeps the padded input or the input, never X_col."""
    x, weight = same_dtype(x, weight)
    w2 = weight.reshape(win.c_out, win.k)
    if _empty(win):
        return np.zeros(win.y_shape, dtype=x.dtype), (x, None, w2, win)
    if conv.wide_gradients(win):
        y, frame = conv.conv2d_output(x, w2, win)
        return y, (None, frame, w2, win)
    return columns.conv2d_by_chunks(x, w2, win), (x, None, w2, win)


def conv2d_backward(grad_y, saved, need_input_grad=True, need_weight_grad=True, dx_plus=None):
    """dW = G @ X_col^T and dX = col2im(W^T @ G): on wide positions (conv.py), or by chunks
    of images as the forward (columns.py); dX + dx_plus if given (added as the wide kernel
    writes dX, else in a pass of its own)."""
    x, frame, w2, win = saved
    if _empty(win):
        return (plus_if_given(np.zeros(win.x_shape, dtype=w2.dtype), dx_plus) if need_input_grad else None,
                np.zeros((win.c_out, win.c, win.kh, win.kw), dtype=w2.dtype) if need_weight_grad else None)
    g = np.ascontiguousarray(grad_y, dtype=w2.dtype).reshape(win.n, win.c_out, win.plane)
    if frame is not None:
        dx, dw = conv.conv2d_gradients(frame, w2, g, win, need_input_grad, need_weight_grad, dx_plus)
    else:
        dx, dw = columns.conv2d_gradients_by_chunks(x, w2, g, win, need_input_grad, need_weight_grad)
        dx = None if dx is None else plus_if_given(dx, dx_plus)
    return dx, (None if dw is None else dw.reshape(win.c_out, win.c, win.kh, win.kw))
