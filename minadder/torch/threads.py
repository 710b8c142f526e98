"""How many threads minadder's cpu kernels use when they run inside PyTorch.

``kernel_threads()`` is ``torch.get_num_threads()``, capped at the size of Numba's pool
(``NUMBA_NUM_THREADS``, the machine's cores unless set): set it with
``torch.set_num_threads(n)``, or the ``OMP_NUM_THREADS`` variable, which ``torchrun`` sets
to 1 for each of several processes. PyTorch's operators and minadder's kernels then share
one budget, and two processes on two cores run one thread each instead of
oversubscribing the cores. ``torch_thread_count()`` sets Numba's count to that number
around each kernel call and restores it after; Numba's count belongs to the calling
thread, and the forward runs in the caller's thread, the backward in autograd's.

Only the count is set here. The process-wide Numba settings (the threading layer, the CPU
features it compiles for) are ``minadder.configure()``'s, which a program calls once at
its start, before the first kernel runs; importing minadder.torch sets nothing.
"""
import contextlib

import torch


def kernel_threads():
    """The thread count for minadder's cpu kernels: torch.get_num_threads(), capped at Numba's pool."""
    import numba

    return max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))


@contextlib.contextmanager
def torch_thread_count():
    """Run the block's Numba kernels with ``kernel_threads()`` threads, then restore the count.

    Numba's count is per calling thread, so it is set where the kernels are called (the
    forward in the caller's thread, the backward in autograd's). Reading it starts Numba's
    pool if it was not running: call ``minadder.configure()`` before, so that the pool
    starts with the threading layer chosen there.
    """
    import numba

    wanted = kernel_threads()
    previous = numba.get_num_threads()
    if wanted != previous:
        numba.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        if wanted != previous:
            numba.set_num_threads(previous)
