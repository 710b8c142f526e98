"""The adder layer on the GPU, the contract's ``adder2d_forward`` / ``adder2d_backward``.

Image in, image out, on the device: im2col builds X_col (K, L) there, the tiled kernels
of ``columns.py`` run Eq. 2 (forward), Eq. 4-6 (gradients) on it, and col2im folds dX_col
back onto the image. ``saved`` keeps the input and the filters on the device, never
X_col: the backward builds X_col again (an im2col is cheap next to the l1 kernels).
Host in, host out; device in, device out (``memory.py``); float32 throughout.
"""
from typing import Any, NamedTuple

from ..geometry import Window
from . import columns, windows
from .memory import is_device_array, result, scratch, to_device


class Saved(NamedTuple):
    """What adder2d_backward reads: the input and the filters as device arrays, the window
    and the distance ("l1" or "l2")."""
    x: Any           # (N, C, H, W), float32 on the device
    w2: Any          # W = F as (C_out, K), float32 on the device
    win: Window
    distance: str = "l1"


def adder2d_forward(x, weight, win, distance="l1"):
    """Eq. 2: y[n, t, u, v] = -sum_{c,i,j} |Xp[n, c, s*u+i, s*v+j] - F[t, c, i, j]|, or with
    distance="l2" the squares of Eq. 27; (y, saved).

    im2col, the tiled kernel giving Y_col (C_out, L), and a swap to (N, C_out, H_out, W_out).
    """
    d_x = to_device(x, "x", 4)
    d_w = to_device(weight, "weight", 4).reshape(win.c_out, win.k)
    cols = windows.im2col(d_x, win)                                            # (K, L)
    y_col = columns.forward(cols, d_w, out=scratch("y_col", (win.c_out, win.l)), distance=distance)
    y = windows.swap01(y_col, (win.c_out, win.n, win.plane))                 # (N, C_out, P)
    return result(y.reshape(win.y_shape), not is_device_array(x)), Saved(d_x, d_w, win, distance)


def _g_cols(grad_y, win):
    """G = grad_y (N, C_out, H_out, W_out) on the device as the tiled kernels' (C_out, L)."""
    d_g = to_device(grad_y, "grad_y", 4).reshape(win.n, win.c_out, win.plane)
    g = windows.swap01(d_g, (win.n, win.c_out, win.plane), out=scratch("g", (win.c_out, win.n, win.plane)))
    return g.reshape(win.c_out, win.l)


def adder2d_backward(grad_y, saved, mode, need_input_grad=True, need_weight_grad=True, dx_plus=None):
    """(dx, dweight) for G = grad_y: Eq. 5 and Eq. 6 ("full") or Eq. 4 ("sign"); for an l2
    layer the exact gradients of Eq. 27, whatever the mode: dW = 2 sum G (X - W), which is
    twice Eq. 5's, and dX = 2 sum G (W - X) (``columns.grad_input_l2``), from 2 G.

    A gradient not needed is None and its kernel does not run. dx_plus (host arrays only,
    as the engine passes it) is added to dX on the host.
    """
    if not (need_input_grad or need_weight_grad):
        return None, None
    d_x, d_w, win, distance = saved
    to_host = not is_device_array(grad_y)
    g = _g_cols(grad_y, win)
    if distance == "l2":
        g, mode = columns.doubled(g), "full"
    cols = windows.im2col(d_x, win)
    dw = dx = None
    if need_weight_grad:
        dw = columns.grad_weight(cols, d_w, g, mode).reshape(win.c_out, win.c, win.kh, win.kw)
        dw = result(dw, to_host)
    if need_input_grad:
        dcols = scratch("dcols", cols.shape)
        if distance == "l2":
            columns.grad_input_l2(cols, d_w, g, out=dcols)
        else:
            columns.grad_input(cols, d_w, g, mode, out=dcols)
        dx = result(windows.col2im(dcols, win), to_host)
        if dx_plus is not None:
            dx = dx + dx_plus
    return dx, dw
