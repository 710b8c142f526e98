"""Which kernel backend computes the adder (and ordinary) convolution.

A backend is a module of plain functions with the names in
``minadder.kernels.contract.KERNEL_NAMES``: ``check_available``, ``adder2d_forward``,
``adder2d_backward``, ``conv2d_forward`` and ``conv2d_backward`` (the contract, with their
signatures, is the docstring of ``minadder/kernels/contract.py``), and may export the
optional ones (batch norm, max pooling; ``kernel(name)`` falls back to the reference's). The choice is global:

    minadder.set_backend("numpy")          # for the rest of the program
    with minadder.use_backend("numpy"):     # for a block
        ...
    MINADDER_BACKEND=numpy python train.py  # for a script

Modules are imported only when first selected, so ``import minadder`` never pulls in
Numba, and importing one changes no process-wide setting: ``configure()`` below does
that, explicitly. A backend that cannot run raises a ValueError saying why; there is
never a silent fallback to another one.
"""
import contextlib
import importlib
import os

from .kernels.contract import KERNEL_NAMES, OPTIONAL_KERNEL_NAMES

#: name -> module path. Later backends add themselves here.
BACKENDS = {
    "numpy": "minadder.kernels.reference",   # the readable definition
    "cpu": "minadder.kernels.cpu",           # numba.njit(parallel=True)
    "cuda": "minadder.kernels.cuda",         # numba.cuda
}

_active = None  # name of the selected backend, resolved lazily
_loaded = {}    # name -> module, for backends that imported and passed their check


class BackendUnavailable(ValueError):
    """Raised when a known backend cannot run on this machine."""


def _load(name):
    if name in _loaded:
        return _loaded[name]
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; backends: {', '.join(BACKENDS)}")
    try:
        module = importlib.import_module(BACKENDS[name])
    except ImportError as exc:
        raise BackendUnavailable(
            f"backend {name!r} is unavailable ({exc}); backends: {', '.join(BACKENDS)}"
        ) from exc
    check = getattr(module, "check_available", None)
    if check is not None:
        check()  # raises BackendUnavailable with the reason and what to install
    _loaded[name] = module
    return module


def _default_name():
    name = os.environ.get("MINADDER_BACKEND")
    if name:
        return name
    # the fastest backend that imports, else the reference
    for candidate in ("cpu", "numpy"):
        if candidate in BACKENDS:
            try:
                _load(candidate)
                return candidate
            except ValueError:
                continue
    return "numpy"


def set_backend(name):
    """Select the kernel backend by name ("numpy", "cpu", "cuda")."""
    if not isinstance(name, str):
        raise TypeError(f"backend name must be a string, got {type(name).__name__}")
    _load(name)
    global _active
    _active = name


def get_backend():
    """Name of the active backend."""
    global _active
    if _active is None:
        _active = _default_name()
        _load(_active)
    return _active


def available_backends():
    """Names of the backends that can run here."""
    names = []
    for name in BACKENDS:
        try:
            _load(name)
            names.append(name)
        except ValueError:
            pass
    return names


@contextlib.contextmanager
def use_backend(name):
    """Run a block with another backend, restoring the previous one afterwards."""
    previous = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def kernels(name=None):
    """The kernel module of backend ``name``, or of the active backend when name is None."""
    return _load(get_backend() if name is None else name)


def kernel(name, backend_name=None):
    """The function ``name`` of backend ``backend_name`` (the active one when None). For an
    optional kernel (contract.OPTIONAL_KERNEL_NAMES) that the backend does not export, the
    NumPy reference's: the layers call batch norm and max pooling through this."""
    if name not in KERNEL_NAMES + OPTIONAL_KERNEL_NAMES:
        raise ValueError(f"unknown kernel {name!r}; kernels: {', '.join(KERNEL_NAMES + OPTIONAL_KERNEL_NAMES)}")
    module = kernels(backend_name)
    if name in OPTIONAL_KERNEL_NAMES and not hasattr(module, name):
        module = kernels("numpy")
    return getattr(module, name)


def configure(threads=None):
    """Set the process-wide options the cpu kernels run best with: Numba's threading layer
    ("omp", else "workqueue"; unless NUMBA_THREADING_LAYER is set), the CPU features it
    compiles for (unless NUMBA_CPU_FEATURES is set), one thread for NumPy's BLAS (unless
    OPENBLAS_NUM_THREADS or MKL_NUM_THREADS is set), and, if ``threads`` is given, Numba's
    thread count.
    See ``minadder/kernels/settings.py`` for why.

    Call it once at a program's start, before the cpu kernels are imported or run: Numba
    fixes the features when the first kernel is defined and the layer when its threads
    start, and later changes to them have no effect (a late call warns). A second call is
    harmless (it changes at most the thread count). Without Numba there is nothing to set.
    The command line, the benchmarks and the tests call it.
    """
    try:
        from .kernels import settings
    except ImportError:
        return
    settings.configure(threads)
