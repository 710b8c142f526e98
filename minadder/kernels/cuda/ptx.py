"""Every kernel of the cuda backend with the signature a real launch gives it, for PTX checks.

tests/test_cuda.py compiles each with ``cuda.compile_ptx(..., cc=(9, 0))`` (an H100),
which types them for real: float64 creeping in, local memory, or a typing error the
simulator (plain Python) never notices fails there. A new kernel belongs in this list.
"""
from . import columns, launch, windows
from .numpy_compat import restore_row_stack
from .tiled import TILES, VARIANTS, tiled_kernel_source

_C2, _C3, _C4 = "float32[:, ::1]", "float32[:, :, ::1]", "float32[:, :, :, ::1]"
_I64 = "int64"


def compile_targets():
    """(name, Python function, signature) of every kernel, typed as a real launch types them."""
    restore_row_stack()   # the compile that follows needs it on NumPy >= 2.5 (numpy_compat)
    window_args = ", ".join([_I64] * 6)   # kh, kw, stride, padding, ho, wo
    targets = [
        ("im2col", windows.im2col_kernel.py_func, f"void({_C4}, {_C2}, {window_args})"),
        ("col2im", windows.col2im_kernel.py_func, f"void({_C2}, {_C4}, {window_args})"),
        ("swap01", windows.swap01_kernel.py_func, f"void({_C3}, {_C3})"),
        ("sum_splits", launch.sum_splits_kernel.py_func, f"void({_C3}, {_C2})"),
        ("row_sums", columns.row_sums_kernel.py_func, f"void({_C2}, {_C2})"),
        ("subtract_w_gsum", columns.subtract_w_gsum_kernel.py_func, f"void({_C2}, {_C2}, {_C2}, {_C2}, {_C2})"),
        ("double", columns.double_kernel.py_func, f"void({_C2})"),
        ("col_sums", columns.col_sums_kernel.py_func, f"void({_C2}, float32[::1])"),
        ("subtract_x_gsum", columns.subtract_x_gsum_kernel.py_func,
         f"void({_C2}, {_C2}, float32[::1], {_C2}, {_C2})"),
    ]
    for variant in VARIANTS:
        for tile_name in TILES:
            targets.append((f"{variant}_{tile_name}", tiled_kernel_source(variant, tile_name),
                            f"void({_C2}, {_C2}, {_C2}, {_C3}, {_I64})"))
    return targets
