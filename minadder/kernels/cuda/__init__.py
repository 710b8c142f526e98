"""The "cuda" backend: the adder layer's kernels on an NVIDIA GPU, written with ``numba.cuda``.

It exports the contract (``minadder.kernels.contract``): ``check_available``,
``adder2d_forward`` / ``adder2d_backward`` (Eq. 2; Eq. 4-6) and ``conv2d_forward`` /
``conv2d_backward``, plus the stream helpers ``current_stream``, ``on_stream`` and
``release_workspace``. Read it in this order:

* ``memory.py``   host/device conversion (host in, host out; device in, device out),
                  the scratch buffers reused between calls, launch sizes;
* ``streams.py``  which CUDA stream the work is queued on;
* ``windows.py``  im2col, col2im (a gather, no atomics) and an axis swap;
* ``tiled.py``    the tiled l1 "GEMM" template, one kernel per equation;
* ``launch.py``   how a tiled kernel is launched (tile, split reduction);
* ``columns.py``  Eq. 2, 4, 5, 6 on im2col's matrix X_col, and each kernel alone;
* ``adder.py``    the layer on images: adder2d_forward / adder2d_backward;
* ``conv.py``     the ordinary convolution (the NumPy reference on host copies);
* ``ptx.py``      every kernel with its signature, for the PTX checks;
* ``numpy_compat.py``  the one NumPy alias numba-cuda needs on NumPy >= 2.5.

Importing this package imports ``numba.cuda`` and changes no Numba or NumPy setting.
"""
try:
    from numba import cuda
except ImportError as exc:  # numba without its CUDA target
    raise ImportError(
        f"numba.cuda cannot be imported ({exc}); install the CUDA extra: "
        'pip install "minadder[cuda]"'
    ) from exc

from ...backend import BackendUnavailable
from .adder import adder2d_backward, adder2d_forward
from .conv import conv2d_backward, conv2d_forward
from .memory import release_workspace
from .numpy_compat import restore_row_stack
from .streams import current_stream, on_stream

__all__ = ["check_available", "adder2d_forward", "adder2d_backward", "conv2d_forward", "conv2d_backward",
           "current_stream", "on_stream", "release_workspace"]


def check_available():
    """Raise BackendUnavailable unless a CUDA device and driver can be used.

    (Under the CUDA simulator, NUMBA_ENABLE_CUDASIM=1, numba reports one device.) When
    one can, the kernels are about to be compiled: the NumPy alias that needs is restored.
    """
    if not cuda.is_available():
        raise BackendUnavailable(
            "backend 'cuda': no CUDA device or driver was found (numba.cuda.is_available() "
            "is False). It needs an NVIDIA GPU with its driver installed, and the CUDA extra: "
            'pip install "minadder[cuda]"'
        )
    restore_row_stack()

