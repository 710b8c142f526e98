"""How many threads minadder's cpu kernels use when they run inside PyTorch.

They follow ``torch.get_num_threads()``: set it with ``torch.set_num_threads(n)`` (or the
``OMP_NUM_THREADS`` variable, which ``torchrun`` sets to 1 for each of several processes),
and PyTorch's own operators and minadder's kernels share the same budget. Two processes
on two cores then run one thread each instead of oversubscribing the cores. Numba's pool
has ``NUMBA_NUM_THREADS`` workers (the machine's cores unless set), so the count is capped
there. The full-mode filter gradient (Eq. 5) is one NumPy matrix product, whose BLAS
library reads its own thread count (``OPENBLAS_NUM_THREADS``, else ``OMP_NUM_THREADS``) at
start-up: under torchrun that is 1 as well.
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
    forward in the caller's thread, the backward in autograd's). minadder's cpu backend
    must be imported first: it chooses Numba's threading layer before the pool starts.
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
