"""Keep freed memory in the process, so that large NumPy temporaries reuse warm pages.

Every training step allocates and frees many arrays of a few MB (activations, their
gradients, the kernels' padded inputs). glibc's malloc serves blocks that large with a
fresh ``mmap`` and returns them with ``munmap`` (or trims the heap), so each new array
starts as untouched pages, and the first write to every 4 KB page is a page fault in
which the kernel zeroes it. Told to keep what is freed (no mmap for large blocks, no
trimming), malloc hands the same, already mapped pages back out: measured on a 2-core
machine, a LeNet-5-BN AdderNet step at batch 256 ran about 17 % faster, a ResNet-20 CNN
step 12 % (benchmarks/README.md). The price: the process keeps its peak memory until
it exits. The training command does this; a script of your own may call it once.
"""
import ctypes
import ctypes.util
import sys

# mallopt's parameter numbers, from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory():
    """Tell glibc's malloc to keep freed memory for reuse; True if it was told.

    A no-op (False) where the C library is not glibc (macOS, Windows, musl)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # blocks up to 32 MB (the most every glibc version accepts) come from the heap, and
    # the heap is never trimmed
    mmap_ok = mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024)
    trim_ok = mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    return bool(mmap_ok and trim_ok)
