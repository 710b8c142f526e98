"""The process-wide Numba settings the cpu kernels run best with, set only when asked.

Importing a kernel module changes no global setting; ``minadder.configure()`` calls
``configure`` here, once, at a program's start:

* the threading layer: OpenMP when Numba has it (its workers spin between parallel
  loops, so the many short kernels of a step start without waking anyone), else
  workqueue. NUMBA_THREADING_LAYER, if set, is kept; on a machine shared with other busy
  processes, workqueue (sleeping workers) is the better choice (benchmarks/README.md).
* how long those OpenMP workers spin: GOMP_SPINCOUNT=30000 (libgomp's default is 300,000
  spins, about a millisecond), unless GOMP_SPINCOUNT or OMP_WAIT_POLICY is set. The
  products the cpu backend splits over Python threads (products.py) run their second
  block on a core where a worker still spins after the last kernel: ResNet-20's CNN step
  (im2col and BLAS on its 8x8 and stride-2 layers) ran at 255-261 images/s with the
  default and 289-300 with 10,000-30,000, the AdderNet steps within their noise
  (benchmarks/README.md). libgomp reads it once, as it is loaded: the variable is set
  while Numba's OpenMP pool loads it and removed again, so that an OpenMP runtime loaded
  later (PyTorch has its own) keeps its defaults.
* BLAS's own threads: one. NumPy's OpenBLAS keeps its workers spinning for up to about
  0.1 s after every matrix product, and on a small machine they take the cores from the
  kernels' threads: a ResNet-20 AdderNet step ran at 80 images/s on OpenMP with two BLAS
  threads and at 172 with one (workqueue: 126 and 141; benchmarks/README.md). The cpu
  backend splits its own large matrix products over threads instead. OPENBLAS_NUM_THREADS
  (or MKL_NUM_THREADS), if set, is kept.
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
import ctypes
import os
import warnings

import numba

from .target import full_width_features, named_cpu_features

#: the threading layers tried, in order, unless NUMBA_THREADING_LAYER says otherwise (see above)
THREADING_LAYERS = ("omp", "workqueue")
#: the environment variables that mean the user chose the BLAS thread count. Not
#: OMP_NUM_THREADS: launchers and batch systems set it for every OpenMP runtime in the
#: process, and with it OpenBLAS would keep spinning workers (a full dW of a ResNet-20 8x8
#: layer ran 10x slower with OPENBLAS_NUM_THREADS=2 than with 1, benchmarks/README.md)
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
#: spins before an idle worker of Numba's libgomp sleeps (see above), and the variables
#: that mean the user chose how OpenMP workers wait
GOMP_SPINCOUNT = "30000"
OMP_WAIT_VARIABLES = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")


def cpu_features():
    """The LLVM feature string the kernels should be compiled with, or None for Numba's default."""
    named = named_cpu_features()
    return named if named is not None else full_width_features()


def _cpu_target_is_set_up():
    """Whether Numba has set up its CPU target (and so fixed its CPU features) already:
    its target context is created lazily, as a cached attribute of ``cpu_target``."""
    from numba.core.registry import cpu_target
    return "_toplevel_target_context" in vars(cpu_target)


def threading_layer():
    """The first of THREADING_LAYERS this Numba can start (its OpenMP layer needs libgomp)."""
    for layer in THREADING_LAYERS:
        try:
            if layer == "omp":
                load_openmp()
            return layer
        except ImportError:
            continue
    return "workqueue"


def load_openmp():
    """Import Numba's OpenMP pool, which loads libgomp (and starts no thread), with
    GOMP_SPINCOUNT set while libgomp reads its environment, unless the user chose how
    OpenMP workers wait; then remove it again. ImportError where Numba has no OpenMP."""
    chosen = any(v in os.environ for v in OMP_WAIT_VARIABLES)
    if not chosen:
        os.environ["GOMP_SPINCOUNT"] = GOMP_SPINCOUNT
    try:
        import numba.np.ufunc.omppool  # noqa: F401
    finally:
        if not chosen:
            del os.environ["GOMP_SPINCOUNT"]


def openblas_function(names):
    """(name, function) of the first of ``names`` that an OpenBLAS library this process has
    loaded (NumPy's, on Linux) exports, as a ctypes function, or None (another BLAS,
    another system). NumPy's wheels prefix and suffix its symbols (scipy_..._64_)."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower()}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for name in names:
            function = getattr(library, name, None)
            if function is not None:
                return name, function
    return None


def _openblas_threads_function(verb, argtypes, restype):
    """NumPy's OpenBLAS ``<verb>_num_threads`` function (set or get) as a ctypes function, or None."""
    found = openblas_function(tuple(f"{prefix}openblas_{verb}_num_threads{suffix}"
                                    for prefix in ("scipy_", "") for suffix in ("64_", "")))
    if found is None:
        return None
    function = found[1]
    function.argtypes, function.restype = argtypes, restype
    return function


def set_blas_threads(count):
    """Tell NumPy's OpenBLAS to use ``count`` threads; True if it could be told."""
    setter = _openblas_threads_function("set", [ctypes.c_int], None)
    if setter is None:
        return False
    setter(int(count))
    return True


def blas_threads():
    """The thread count of NumPy's OpenBLAS, or None where it cannot be asked."""
    getter = _openblas_threads_function("get", [], ctypes.c_int)
    return None if getter is None else getter()


def one_blas_thread():
    """Whether NumPy's OpenBLAS runs one thread, made so unless the environment chose its
    count: what BLAS called from inside Numba's threads needs (products.kernel_gemm). With
    its own threads it nested a team in each task, and OpenBLAS printed "Detect OpenMP Loop
    and this application may hang" a task at a time, where configure() was not called."""
    if blas_threads() != 1 and not any(v in os.environ for v in BLAS_THREAD_VARIABLES):
        set_blas_threads(1)
    return blas_threads() == 1


def configure(threads=None, blas_threads=1):
    """Set Numba's threading layer and CPU features (unless the environment chose them),
    its thread count if ``threads`` is given (that starts Numba's threads, so the layer is
    set first), and BLAS's thread count to ``blas_threads`` (unless the environment chose
    it; None leaves it). A second call changes at most the two thread counts."""
    if "NUMBA_THREADING_LAYER" not in os.environ:
        numba.config.THREADING_LAYER = threading_layer()
    elif os.environ["NUMBA_THREADING_LAYER"] == "omp":
        load_openmp()
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
    if blas_threads is not None and not any(v in os.environ for v in BLAS_THREAD_VARIABLES):
        set_blas_threads(blas_threads)
