"""Arrays on the GPU: host/device conversion, the reused scratch buffers, launch sizes.

Host in, host out; device in, device out. Every function of the cuda backend accepts host
NumPy arrays and device arrays (a numba device array, or anything with
``__cuda_array_interface__`` such as a CuPy array or a CUDA torch tensor). When the
first array argument is a NumPy array, the inputs are copied to the device and the
result is copied back (``to_device`` / ``result``); otherwise the result stays on the
device. Arithmetic is float32 throughout: host arrays are converted, device arrays must
already be float32.
"""
import math

import numpy as np
from numba import cuda

from .numpy_compat import restore_row_stack
from .streams import current_stream, stream_key

ELEMENTWISE_THREADS = 256
MAX_BLOCKS = 65535


def is_device_array(a):
    """True for numba device arrays (real or simulated) and __cuda_array_interface__ objects."""
    return hasattr(a, "copy_to_host") or hasattr(a, "__cuda_array_interface__")


def to_device(a, name, ndim):
    """``a`` as a C-contiguous float32 device array; host arrays are copied in.

    Every array passes here on its way to a kernel, so this is also where the NumPy alias
    a first compile needs is restored (``numpy_compat``).
    """
    restore_row_stack()
    if not is_device_array(a):
        host = np.ascontiguousarray(a, dtype=np.float32)
        if host.ndim != ndim:
            raise ValueError(f"{name} must be {ndim}-D, got shape {host.shape}")
        return cuda.to_device(host, stream=current_stream())
    if not hasattr(a, "copy_to_host"):
        a = cuda.as_cuda_array(a)  # zero-copy view of a foreign device array
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(a.shape)}")
    if np.dtype(a.dtype) != np.float32:
        raise TypeError(f"{name}: device arrays must be float32, got {a.dtype}")
    if not a.is_c_contiguous():
        raise ValueError(f"{name}: device arrays must be C-contiguous")
    return a


def result(d_array, to_host):
    """``d_array`` itself, or (``to_host``) its copy in host memory, once the copy is done."""
    if not to_host:
        return d_array
    stream = current_stream()
    host = d_array.copy_to_host(stream=stream)
    if stream != 0:
        stream.synchronize()   # the copy is asynchronous on a stream; the caller reads it now
    return host


def empty(shape):
    """A new float32 device array on the current stream (for a result that leaves the backend)."""
    return cuda.device_array(tuple(int(d) for d in shape), dtype=np.float32, stream=current_stream())


_workspace = {}  # (tag, shape, stream) -> a device array that later calls reuse (see scratch)


def scratch(tag, shape):
    """A float32 device buffer for a temporary that never leaves the backend.

    Every kernel runs on the current stream (``streams.on_stream``; numba's default
    stream unless chosen), in launch order, so the next call on that stream may reuse a
    buffer as soon as this call's kernels are queued; each stream has its own buffers, so
    kernels on two streams never share one. Allocating and freeing on every call would
    cost more than a small layer's kernels (numba frees in batches with cuMemFree, which
    waits for the whole GPU). One buffer per (tag, shape, stream): a network keeps one set
    per distinct layer shape and stream; ``release_workspace()`` gives them back.
    Not for use from several host threads at once.
    """
    shape = tuple(int(d) for d in shape)
    key = (tag, shape, stream_key(current_stream()))
    buffer = _workspace.get(key)
    if buffer is None:
        buffer = _workspace[key] = empty(shape)
    return buffer


def release_workspace():
    """Free the temporaries kept between calls (they are re-allocated when next needed)."""
    _workspace.clear()


def elementwise_launch(n):
    """(blocks, threads) for one thread per element with a grid-stride loop."""
    threads = min(ELEMENTWISE_THREADS, max(32, 32 * math.ceil(n / 32)))
    return min(MAX_BLOCKS, max(1, math.ceil(n / threads))), threads
