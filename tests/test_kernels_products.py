"""The cpu backend's threaded matrix product and parallel im2col / col2im equal NumPy's."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

pytest.importorskip("numba")
import numba  # noqa: E402

from minadder.kernels.cpu import products  # noqa: E402


@pytest.fixture
def split_everything(monkeypatch):
    """Split every product, however small, over 2 threads."""
    monkeypatch.setattr(products, "MIN_SPLIT_TERMS", 0)
    before = numba.get_num_threads()
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    yield numba.get_num_threads()
    numba.set_num_threads(before)


# the fixture's setting holds for every example, which is what is wanted here
@settings(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(m=st.integers(1, 9), k=st.integers(1, 40), n=st.integers(1, 300), transposed=st.booleans(),
       seed=st.integers(0, 2**16))
def test_threaded_product_equals_numpy(split_everything, m, k, n, transposed, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((n, k)).astype(np.float32).T if transposed else \
        rng.standard_normal((k, n)).astype(np.float32)
    out = products.matmul(a, b)
    assert out.shape == (m, n) and out.dtype == np.float32
    np.testing.assert_allclose(out, a.astype(np.float64) @ b.astype(np.float64), rtol=1e-5, atol=1e-4)


def test_a_product_wide_enough_is_split_into_one_block_per_thread(split_everything, monkeypatch):
    if split_everything < 2:
        pytest.skip("needs 2 Numba threads")
    calls = []
    real = np.matmul
    monkeypatch.setattr(products.np, "matmul", lambda a, b, out: calls.append(b.shape) or real(a, b, out=out))
    a, b = np.ones((3, 4)), np.ones((4, 256))
    np.testing.assert_array_equal(products.matmul(a, b), np.full((3, 256), 4.0))
    assert sorted(calls) == [(4, 128), (4, 128)]


@settings(deadline=None, max_examples=30)
@given(n=st.integers(1, 3), c=st.integers(1, 3), h=st.integers(1, 7), w=st.integers(1, 7),
       k=st.integers(1, 3), stride=st.integers(1, 2), padding=st.integers(0, 2), seed=st.integers(0, 2**16))
def test_parallel_im2col_and_col2im_equal_the_reference(n, c, h, w, k, stride, padding, seed):
    from minadder.kernels import reference
    from minadder.kernels.cpu import columns
    if h + 2 * padding < k or w + 2 * padding < k:
        return
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    cols = reference.im2col(x, k, k, stride, padding)
    np.testing.assert_array_equal(columns.im2col(x, k, k, stride, padding), cols)
    g = rng.standard_normal(cols.shape).astype(np.float32)
    np.testing.assert_allclose(columns.col2im(g, x.shape, k, k, stride, padding),
                               reference.col2im(g, x.shape, k, k, stride, padding), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blas_called_from_a_numba_kernel_adds_a_product(dtype):
    """kernel_gemm is NumPy's own BLAS (here OpenBLAS, found by name) and add_product_nt
    adds a @ b.T into c, on the calling thread; None only where NumPy has another BLAS."""
    gemm = products.kernel_gemm(dtype)
    if gemm is None:
        pytest.skip("NumPy's BLAS here is not an OpenBLAS that exports cblas_?gemm")
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((7, 33)).astype(dtype), rng.standard_normal((5, 33)).astype(dtype)
    c = rng.standard_normal((7, 5)).astype(dtype)
    expected = c.astype(np.float64) + a.astype(np.float64) @ b.astype(np.float64).T
    products.add_product_nt(gemm, a, b, c)
    np.testing.assert_allclose(c, expected, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)
    assert products.kernel_gemm(np.int32) is None


@pytest.mark.parametrize("shape", [(8, 6, 8, 8, 40, 1), (8, 5, 9, 7, 7, 2)], ids=["8x8, 40 filters", "stride 2"])
def test_dw_products_on_numba_threads_and_on_python_threads_agree(shape, monkeypatch):
    """The full-precision dW's BLAS path runs its chunks' products from Numba's threads
    (kernel_gemm) or, where NumPy's BLAS cannot be called so, from Python threads: the
    two equal each other and the reference."""
    from minadder.kernels import cpu, reference
    from minadder.kernels.cpu import grad_weight
    from minadder.kernels.geometry import Window
    if products.kernel_gemm(np.float32) is None:
        pytest.skip("no BLAS callable from Numba here: only the Python threads' path runs")
    n, c, h, w, c_out, stride = shape
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    weight = rng.standard_normal((c_out, c, 3, 3)).astype(np.float32)
    win = Window.of(x.shape, weight.shape, stride, 1)
    y, saved = cpu.adder2d_forward(x, weight, win)
    g = rng.standard_normal(y.shape).astype(np.float32)
    calls = []
    real = grad_weight._product_on_numba_threads
    monkeypatch.setattr(grad_weight, "_product_on_numba_threads", lambda *a: calls.append(1) or real(*a))
    on_numba = cpu.adder2d_backward(g, saved, "full", False, True)[1]
    assert calls, "the BLAS-from-Numba path did not run"
    monkeypatch.setattr(products, "kernel_gemm", lambda dtype: None)
    on_python = cpu.adder2d_backward(g, saved, "full", False, True)[1]
    expected = reference.adder2d_backward(g.astype(np.float64), (x.astype(np.float64), weight.astype(np.float64),
                                                                 win, "l1"), "full", False, True)[1]
    np.testing.assert_allclose(on_numba, on_python, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(on_numba, expected, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("shape", [(9, 6, 8, 8, 40, 1, 1), (8, 5, 9, 7, 7, 2, 1), (3, 2, 6, 5, 4, 3, 0)],
                         ids=["8x8", "stride 2", "stride 3, no padding"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_chunked_convolution_on_numba_threads_and_on_python_threads_agree(shape, dtype, monkeypatch):
    """The ordinary convolution by chunks of images (layers that do not read their input
    in place) runs its chunks on Numba's threads with BLAS called from them, or on Python
    threads: both equal the reference, forward and both gradients."""
    from minadder.kernels import cpu, reference
    from minadder.kernels.geometry import Window
    if products.kernel_gemm(dtype) is None:
        pytest.skip("no BLAS callable from Numba here: only the Python threads' path runs")
    n, c, h, w, c_out, stride, padding = shape
    rng = np.random.default_rng(2)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    weight = rng.standard_normal((c_out, c, 3, 3)).astype(dtype)
    win = Window.of(x.shape, weight.shape, stride, padding)
    y_ref = reference.conv2d_forward(x.astype(np.float64), weight.astype(np.float64), win)[0]
    g = rng.standard_normal(y_ref.shape).astype(dtype)
    dx_ref, dw_ref = reference.conv2d_backward(g.astype(np.float64), reference.conv2d_forward(
        x.astype(np.float64), weight.astype(np.float64), win)[1])
    tol = dict(rtol=1e-4, atol=1e-3) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    for kernel_gemm in (products.kernel_gemm, lambda dtype: None):
        monkeypatch.setattr(products, "kernel_gemm", kernel_gemm)
        y, saved = cpu.conv2d_forward(x, weight, win)
        assert saved[1] is None            # the chunked path, not the in-place one
        dx, dw = cpu.conv2d_backward(g, saved)
        np.testing.assert_allclose(y, y_ref, **tol)
        np.testing.assert_allclose(dx, dx_ref, **tol)
        np.testing.assert_allclose(dw, dw_ref, **tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_g_columns_copies_a_chunk_of_g_and_sums_it_in_float64(dtype):
    """A chunk's G in X_col's column order (image after image, each its positions) and its
    sum per filter, added up in float64 (in any order: the sums are vectorised), equal to
    NumPy's float64 sum to its rounding."""
    rng = np.random.default_rng(3)
    g = (rng.standard_normal((7, 40, 50)) * 1e4).astype(dtype)
    gc = np.empty((40, 3 * 50), dtype=dtype)
    sums = products.g_columns(g, 2, 5, gc)
    np.testing.assert_array_equal(gc, g[2:5].transpose(1, 0, 2).reshape(40, -1))
    assert sums.dtype == np.float64
    np.testing.assert_allclose(sums, g[2:5].astype(np.float64).sum(axis=(0, 2)), rtol=0, atol=1e-9 * 1e4 * 150)


_BLAS_FROM_TASKS = """
import numpy as np
import torch        # its libgomp, loaded first, is what OpenBLAS detects a parallel region with
import minadder as ma
from minadder import functional as F
from minadder.kernels import settings
rng = np.random.default_rng(0)
x = ma.Tensor(rng.standard_normal((16, 64, 8, 8)).astype(np.float32), requires_grad=True)
w = ma.Tensor(rng.standard_normal((64, 64, 3, 3)).astype(np.float32), requires_grad=True)
with ma.use_backend("cpu"):
    F.sum(F.adder2d(x, w, 1, 1)).backward()          # dW: BLAS called from Numba's tasks
print(settings.blas_threads())
"""


def test_blas_called_from_numba_tasks_runs_one_thread_without_configure(tmp_path):
    """A program that never calls minadder.configure() (the README's PyTorch snippet): the
    64-channel 8x8 dW calls BLAS from Numba's OpenMP tasks, where a multi-threaded OpenBLAS
    printed "Detect OpenMP Loop and this application may hang" once a task. The backend
    now gives BLAS one thread before it calls it so (settings.one_blas_thread)."""
    import os
    import subprocess
    import sys
    pytest.importorskip("torch")
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    env["NUMBA_CACHE_DIR"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-c", _BLAS_FROM_TASKS], env=env, capture_output=True, text=True, check=True)
    assert "OpenBLAS Warning" not in out.stderr + out.stdout
    assert out.stdout.strip().splitlines()[-1] in ("1", "None")     # None: a BLAS that cannot be asked
