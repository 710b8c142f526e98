"""minadder.torch's CUDA path under numba's CUDA simulator.

CUDA tensors cannot exist without a GPU, so what runs here is what the simulator can
run: the cuda backend on a chosen stream (every launch on it, buffers reused per stream),
PyTorch's stream handle turned into the numba stream the kernels launch on, and the
bridge's CUDA path (dispatch by device type, forward and backward) on a stand-in for a
CUDA tensor. The simulator must be chosen before numba is imported, so the tests run in a
child pytest (``test_under_the_cuda_simulator``), as tests/test_cuda.py does.
"""
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason='minadder.torch needs PyTorch: pip install "minadder[torch]"')
if importlib.util.find_spec("numba_cuda") is None:
    pytest.skip('numba-cuda is not installed: pip install "minadder[cuda]"', allow_module_level=True)

REPO = Path(__file__).resolve().parents[1]
SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
sim_only = pytest.mark.skipif(not SIMULATED, reason="runs in the simulator's child process")


@pytest.mark.skipif(SIMULATED, reason="this is the child process")
def test_under_the_cuda_simulator():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    report = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, f"simulator tests failed (exit {proc.returncode}):\n{report}"
    assert re.search(r"\d+ passed", proc.stdout) and "failed" not in proc.stdout, report


# ============================================================================ in the simulator
@pytest.fixture
def launches(monkeypatch):
    """The stream of every kernel launch (0 when a launch names none)."""
    from numba.cuda.simulator.kernel import FakeCUDAKernel

    seen, original = [], FakeCUDAKernel.__getitem__

    def record(self, configuration):
        seen.append(configuration[2] if len(configuration) > 2 else 0)
        return original(self, configuration)

    monkeypatch.setattr(FakeCUDAKernel, "__getitem__", record)
    return seen


def _layer(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, 2, 3, 3)).astype(np.float32)
    w = rng.standard_normal((2, 2, 2, 2)).astype(np.float32)
    g = rng.standard_normal((1, 2, 2, 2)).astype(np.float32)
    return x, w, g


def _reference(x, w, g, mode):
    from minadder.kernels import reference
    from minadder.kernels.geometry import Window

    y, saved = reference.adder2d_forward(x, w, Window.of(x.shape, w.shape))
    return (y, *reference.adder2d_backward(g, saved, mode))


@sim_only
def test_every_launch_and_buffer_goes_to_the_chosen_stream(launches):
    from numba import cuda

    from minadder.kernels import cuda as kc
    from minadder.kernels.cuda import columns, memory, streams
    from minadder.kernels.geometry import Window

    x, w, g = _layer()
    stream = cuda.stream()
    with kc.on_stream(stream):
        assert kc.current_stream() is stream
        d_x, d_w, d_g = (cuda.to_device(a, stream=stream) for a in (x, w, g))
        y, saved = kc.adder2d_forward(d_x, d_w, Window.of(x.shape, w.shape))
        dx, dw = kc.adder2d_backward(d_g, saved, "full")
    assert kc.current_stream() == 0
    assert launches and all(s is stream for s in launches), launches
    assert dx.stream is stream           # allocated on the stream (y and dw are reshaped views)
    for got, want in zip((y, dx, dw), _reference(x, w, g, "full")):
        np.testing.assert_allclose(got.copy_to_host(), want, rtol=1e-5, atol=1e-5)
    ours = [key for key in memory._workspace if key[2] == streams.stream_key(stream)]
    assert ours and all(memory._workspace[key].stream is stream for key in ours)
    launches.clear()
    columns.adder_forward(x.reshape(-1)[:12].reshape(4, 3), w.reshape(2, -1)[:, :4].copy())   # no stream chosen: 0
    assert launches and all(s == 0 for s in launches)


@sim_only
def test_reused_buffers_are_per_stream():
    from numba import cuda

    from minadder.kernels.cuda import memory, streams

    a, b = cuda.stream(), cuda.stream()
    with streams.on_stream(a):
        first, again = memory.scratch("t", (2, 3)), memory.scratch("t", (2, 3))
    with streams.on_stream(b):
        other = memory.scratch("t", (2, 3))
    assert first is again and other is not first
    assert streams.stream_key(0) == 0 and streams.stream_key(a) != streams.stream_key(b)


@sim_only
def test_torch_stream_handles_become_numba_streams(monkeypatch):
    from numba import cuda

    from minadder.torch import streams

    made = []
    monkeypatch.setattr(cuda, "external_stream", lambda ptr: made.append(ptr) or cuda.stream())
    monkeypatch.setattr(streams, "_streams", {})
    assert streams.numba_stream(0) is streams.numba_stream(0)     # the legacy default stream
    external = streams.numba_stream(0x7F00, device_index=0)
    assert made == [0x7F00] and streams.numba_stream(0x7F00) is external


class _CudaStandIn:
    """What the bridge reads of a CUDA tensor: device, shape, dtype, and its memory (here a
    simulator device array, which the cuda backend takes as it takes a tensor's
    __cuda_array_interface__)."""

    def __init__(self, host):
        from numba import cuda

        self.device, self.dtype, self.shape = torch.device("cuda", 0), torch.float32, torch.Size(host.shape)
        self.memory = cuda.to_device(host)

    def detach(self):
        return self

    def contiguous(self):
        return self.memory

    def to(self, dtype):
        return self


@sim_only
@pytest.mark.parametrize("mode", ["full", "sign"])
def test_the_bridge_runs_cuda_tensors_on_torchs_current_stream(mode, monkeypatch, launches):
    from minadder.torch import function, streams

    class CurrentStream:
        cuda_stream = 0

    monkeypatch.setattr(torch.cuda, "current_stream", lambda index=None: CurrentStream())
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    # the results stay numba device arrays (no torch CUDA tensor can exist here)
    monkeypatch.setitem(function.DEVICES, "cuda", function.DEVICES["cuda"]._replace(tensor=lambda a, like: a))
    x, w, g = _layer(1)
    tx, tw, tg = _CudaStandIn(x), _CudaStandIn(w), _CudaStandIn(g)
    assert function.device_of(tx).backend == "cuda"
    y, saved = function.forward_tensors(tx, tw, 1, 0)
    dx, dw = function.backward_tensors(tx, tw, tg, saved, mode)
    torch_stream = streams.numba_stream(0, 0)
    assert launches and all(s is torch_stream for s in launches)
    for got, want in zip((y, dx, dw), _reference(x, w, g, mode)):
        np.testing.assert_allclose(got.copy_to_host(), want, rtol=1e-5, atol=1e-5)
    launches.clear()
    dx_only, none = function.backward_tensors(tx, tw, tg, saved, mode, need_x=True, need_w=False)
    assert none is None and launches
    np.testing.assert_allclose(dx_only.copy_to_host(), dx.copy_to_host())
