"""benchmarks/bench_cuda.py runs end to end under the simulator with --tiny (one tiny layer,
the correctness check on tiny shapes, no torch), so a GPU session finds it working.
The real timings need a GPU."""
import importlib.util
import json
import os
from pathlib import Path

assert os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", "run these tests through tests/test_cuda.py"

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_cuda.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_cuda", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_tiny_run_checks_every_kernel_and_writes_json(tmp_path):
    bench = load_bench()
    out = tmp_path / "bench.json"
    assert bench.main([str(out), "--tiny", "--no-torch"]) == 0
    report = json.loads(out.read_text())
    assert report["device"] == "CUDA simulator"
    kernels = {c["kernel"].split("[")[0] for c in report["correctness"]}
    assert {"im2col", "col2im", "adder_forward", "adder_grad_input", "adder_grad_weight",
            "adder2d_forward", "adder2d_backward dx", "adder2d_backward dw"} <= kernels
    assert all(c["ok"] for c in report["correctness"])
    (row,) = report["layers"]
    assert row["macs"] == 5 * 3 * 3 * 3 * 2 * 3 * 3
    for key in ("forward_s", "dx_s", "dw_s", "forward_backward_s"):
        assert row["minadder"][key] > 0


def test_bench_output_path_and_layers():
    bench = load_bench()
    assert bench.default_output("NVIDIA H100 80GB HBM3").name == "cuda-nvidia-h100-80gb-hbm3.json"
    batches = {layer[0]: layer[2] for layer in bench.LAYERS}
    assert batches == {"ResNet-20": 128, "LeNet-5": 256, "VGG-small": 64, "ResNet-50": 32}
