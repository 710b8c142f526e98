"""The CUDA kernel tests run under numba's CUDA simulator, in their own pytest process.

NUMBA_ENABLE_CUDASIM=1 only takes effect if it is set before numba is first imported, so
these tests cannot share a process with the rest of the suite (which imports numba for the
CPU backend). tests/test_cuda.py starts `python -m pytest tests/cuda_sim` with the variable
set; a plain `pytest` run skips collecting this folder.
"""
import os

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    collect_ignore_glob = ["test_*.py"]
