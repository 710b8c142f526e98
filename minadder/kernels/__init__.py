"""Kernel backends for the adder (and ordinary) convolution.

Every backend exports the five functions of ``contract.KERNEL_NAMES`` with the signatures
``contract.py`` states: ``reference.py`` ("numpy") is their readable definition, the
package ``cpu/`` ("cpu") climbs from plain Numba loops (``cpu/naive.py``) to the blocked
kernels, and ``cuda.py`` ("cuda") runs them on a GPU. Batch norm and max pooling are
optional kernels (``contract.OPTIONAL_KERNEL_NAMES``; their definitions in
``batch_norm_reference.py`` and ``pooling_reference.py``): the cpu backend has its own. ``geometry.py`` holds what is
neither: the output size, the window checks and the Window record.

The autograd layer never imports a backend directly; it asks
``minadder.backend.kernels()`` for the active one.
"""
from .contract import KERNEL_NAMES  # noqa: F401
