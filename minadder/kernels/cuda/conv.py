"""The ordinary convolution of the cuda backend: the NumPy reference's, on host copies.

``conv2d_forward`` / ``conv2d_backward`` (the contract's names, for the CNN baselines) do
not run on the GPU: device arrays are copied to the host, ``reference.conv2d_forward`` /
``conv2d_backward`` compute there in float32 (im2col and a matrix product), and the
results are copied back to the device. Host in, host out; device in, device out, as for
every function of this backend. A CNN baseline on the "cuda" backend is therefore no
faster than on "numpy"; only the adder layer is a GPU kernel here.
"""
import numpy as np

from .. import reference
from .memory import is_device_array, to_device


def _host(a):
    """A device array's float32 copy in host memory, or a host array as float32."""
    if is_device_array(a):
        a = to_device(a, "array", len(a.shape)).copy_to_host()
    return np.ascontiguousarray(a, dtype=np.float32)


def _back(a, on_device):
    """``a`` on the device if the inputs were there (None stays None)."""
    if a is None or not on_device:
        return a
    return to_device(a, "result", a.ndim)


def conv2d_forward(x, weight, win):
    """y = the cross-correlation of x with the filters (the reference's, on the host); (y, saved)."""
    y, saved = reference.conv2d_forward(_host(x), _host(weight), win)
    return _back(y, is_device_array(x)), saved


def conv2d_backward(grad_y, saved, need_input_grad=True, need_weight_grad=True, dx_plus=None):
    """(dx, dweight) of conv2d_forward (the reference's, on the host); None where not needed;
    dx + dx_plus (a host array) if given."""
    dx, dw = reference.conv2d_backward(_host(grad_y), saved, need_input_grad, need_weight_grad, dx_plus)
    return _back(dx, is_device_array(grad_y)), _back(dw, is_device_array(grad_y))
