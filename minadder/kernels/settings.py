"""The process-wide Numba settings the cpu kernels run best with, set only when asked.

Importing a kernel module changes no global setting; ``minadder.configure()`` calls
``configure`` here, once, at a program's start:

* the threading layer: Numba picks OpenMP when it can, whose idle workers spin. On a
  small machine shared with other processes a spinning worker holds a core that a
  running one needs, and every parallel launch waits for a descheduled thread (a
  LeNet-5-BN step: 345 images/s on OpenMP against 2,050 on workqueue in the same minute,
  benchmarks/README.md). The workqueue layer's workers sleep. NUMBA_THREADING_LAYER, if
  set, is kept.
* the CPU features Numba compiles for (part of its on-disk cache key): a CPU named by
  NUMBA_CPU_NAME gets its own features, not the host's; an AVX-512 host gets 512-bit
  vectors where LLVM would prefer 256 (the zmm loops ran 1.6-2x faster; target.py).
  NUMBA_CPU_FEATURES, if set, is kept.
* the number of threads, when given.

When. Numba fixes the CPU features when it sets up its CPU target, which happens as the
first function is *defined* with ``numba.njit`` (importing minadder.kernels.cpu defines
its kernels), and the threading layer when it first starts its threads. So this module
imports no kernel, and ``configure`` must run before the cpu kernels are imported; called
later it warns that the features stay as they were.
"""
import os
import warnings

import numba

from .target import full_width_features, named_cpu_features

#: the threading layer used unless NUMBA_THREADING_LAYER says otherwise (see above)
THREADING_LAYER = "workqueue"


def cpu_features():
    """The LLVM feature string the kernels should be compiled with, or None for Numba's default."""
    named = named_cpu_features()
    return named if named is not None else full_width_features()


def _cpu_target_is_set_up():
    """Whether Numba has set up its CPU target (and so fixed its CPU features) already:
    its target context is created lazily, as a cached attribute of ``cpu_target``."""
    from numba.core.registry import cpu_target
    return "_toplevel_target_context" in vars(cpu_target)


def configure(threads=None):
    """Set Numba's threading layer and CPU features (unless the environment chose them),
    and its thread count if ``threads`` is given (that starts Numba's threads, so the
    layer is set first). A second call changes at most the thread count."""
    if "NUMBA_THREADING_LAYER" not in os.environ:
        numba.config.THREADING_LAYER = THREADING_LAYER
    wanted = cpu_features() if numba.config.CPU_FEATURES is None else None
    if wanted is not None:
        if _cpu_target_is_set_up():
            warnings.warn("minadder.configure() ran after a Numba function was defined (the cpu kernels "
                          "were imported): the CPU features Numba compiles for stay as they were. "
                          "Call it at the program's start.", RuntimeWarning, stacklevel=3)
        else:
            numba.config.CPU_FEATURES = wanted
    if threads is not None:
        numba.set_num_threads(int(threads))
