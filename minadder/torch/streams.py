"""Running minadder's cuda kernels on PyTorch's current CUDA stream.

A CUDA tensor's ``__cuda_array_interface__`` is version 2 and names no stream, so numba
cannot know which stream PyTorch queued the tensor's producers on and will not wait for
them. The kernels are therefore launched on that very stream: numba's external stream
made from ``torch.cuda.current_stream(device).cuda_stream``. Work on one stream runs in
launch order, after everything PyTorch queued before it and before everything it queues
after; no synchronisation of the host is needed.
"""
import contextlib

_streams = {}   # (device index, handle) -> numba stream object (made once, reused)


def numba_stream(handle, device_index=0):
    """The numba stream for a CUDA stream handle (an int, as PyTorch's ``cuda_stream``).

    0 is the legacy default stream, which PyTorch uses unless told otherwise; any other
    handle becomes ``numba.cuda.external_stream(handle)``.
    """
    from numba import cuda

    key = (int(device_index), int(handle))
    if key not in _streams:
        _streams[key] = cuda.legacy_default_stream() if key[1] == 0 else cuda.external_stream(key[1])
    return _streams[key]


@contextlib.contextmanager
def running_on(device_index, handle):
    """Inside the block, the cuda backend works on GPU ``device_index`` and stream ``handle``."""
    from numba import cuda

    from ..kernels import cuda as cuda_kernels

    with cuda.gpus[int(device_index)]:
        with cuda_kernels.on_stream(numba_stream(handle, device_index)):
            yield


def on_torch_stream(device):
    """``running_on`` the GPU of ``device`` (a torch.device) and PyTorch's current stream there."""
    import torch

    index = device.index if device.index is not None else torch.cuda.current_device()
    return running_on(index, torch.cuda.current_stream(index).cuda_stream)
