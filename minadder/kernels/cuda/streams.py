"""Which CUDA stream the cuda backend queues its work on (``on_stream``, ``current_stream``).

Kernels, allocations and copies go to numba's default stream, or to the stream chosen
with ``with on_stream(stream):`` (per host thread). minadder.torch uses it to run on
PyTorch's current stream. Work on one stream runs in launch order, which is what lets
``memory.scratch`` reuse a buffer as soon as the previous call's kernels are queued.
"""
import contextlib
import threading

_stream_state = threading.local()


def current_stream():
    """The stream this thread's kernels, allocations and copies are queued on.

    0 (numba's default stream) unless a caller chose one with ``on_stream``.
    """
    return getattr(_stream_state, "stream", 0)


@contextlib.contextmanager
def on_stream(stream):
    """Queue every launch, allocation and copy of the cuda backend on ``stream`` inside the block.

    ``stream`` is a numba stream: ``cuda.stream()``, or ``cuda.external_stream(ptr)`` for a
    stream another library created (minadder.torch passes PyTorch's current stream, whose
    ``__cuda_array_interface__`` carries no stream for numba to synchronise on). Work on
    one stream runs in launch order, so the buffers reused between calls
    (``memory.scratch``) are kept per stream and are never written by one stream while
    another reads them.
    """
    previous = current_stream()
    _stream_state.stream = 0 if stream is None else stream
    try:
        yield stream
    finally:
        _stream_state.stream = previous


def stream_key(stream):
    """A hashable name of a stream: its handle as an int (0 for the default stream)."""
    if isinstance(stream, int):
        return stream
    handle = getattr(stream, "handle", None)
    value = getattr(handle, "value", handle)   # ctypes c_void_p, or a driver handle object
    if value is None:
        return 0 if handle is not None else id(stream)   # c_void_p(0): the default stream
    try:
        return int(value)
    except (TypeError, ValueError):
        return id(stream)   # the simulator's streams have no handle
