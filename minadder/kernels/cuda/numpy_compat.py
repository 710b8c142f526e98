"""The one NumPy setting the cuda backend touches: the ``np.row_stack`` alias numba-cuda needs.

numba-cuda 0.30 registers ``np.row_stack`` when it compiles its first kernel; NumPy 2.5
removed that alias of ``np.vstack``, and the first compile then fails with an
AttributeError. ``restore_row_stack`` puts the alias back, and only when it is missing.
It is a process-wide change, so it is not done on import: the cuda backend calls it
where a compile can follow (``check_available``, every array conversion on the way to a
kernel, and ``ptx.compile_targets``). With NumPy <= 2.4 it changes nothing.
"""
import numpy as np


def restore_row_stack():
    """Make ``np.row_stack`` an alias of ``np.vstack`` if this NumPy lacks it (NumPy >= 2.5)."""
    if not hasattr(np, "row_stack"):
        np.row_stack = np.vstack
