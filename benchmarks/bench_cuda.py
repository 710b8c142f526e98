"""GPU benchmark of the CUDA adder kernels, with PyTorch baselines of the same shapes.

    python benchmarks/bench_cuda.py [OUT.json]        # default benchmarks/results/cuda-<device>.json
    python benchmarks/bench_cuda.py --check-only      # only the correctness check

For every adder layer of ResNet-20 (batch 128), LeNet-5-BN (batch 256), VGG-small
(batch 64) and one ResNet-50 3x3 layer (batch 32), it times on the GPU:

* minadder's CUDA kernels (``minadder.kernels.cuda``): forward (im2col + l1 GEMM), dX
  (HardTanh gradient + col2im), dW (full-precision gradient), and the whole layer's
  forward + backward, on device-resident arrays;
* the PyTorch unfold formulation of the paper's reference code (unfold, then a
  (C_out, K, L) broadcast |X_col - W| and its gradients; the L axis is cut into chunks so
  the temporary fits in memory, which the original code does not do);
* torch.cdist(X_col.T, W, p=1) (forward, and its autograd backward, a sign gradient);
* cuDNN's FP32 conv2d of the same shape (TF32 off), as the multiply-based yardstick.

Speed is in T adder-MAC/s: one adder MAC is one |x - w| accumulated; a layer does
C_out * K * L of them per pass (K = C_in*d*d, L = N*H_out*W_out). Before timing, every
kernel is checked against the NumPy reference on the GPU (odd shapes, both gradient
modes, every tile shape and a split reduction). The JSON written holds the device name,
the versions, the check and every number; the table is printed.

PyTorch is optional: without it those columns are left out.
"""
import argparse
import json
import math
import os
import platform
import re
import sys
import time
from pathlib import Path

# small layers launch few blocks on purpose; numba would warn at every such launch
os.environ.setdefault("NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS", "0")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from numba import cuda  # noqa: E402

from minadder.kernels import cuda as kc  # noqa: E402  (the contract: adder2d_forward / _backward)
from minadder.kernels import reference as ref  # noqa: E402
from minadder.kernels.cuda import columns, launch  # noqa: E402  (each kernel alone, the launch plan)
from minadder.kernels.cuda.tiled import TILES  # noqa: E402
from minadder.kernels.geometry import Window  # noqa: E402

try:
    import torch
    import torch.nn.functional as TF
except ImportError:  # torch is optional: its columns are skipped
    torch = None

# (network, layer, batch, C_in, C_out, H=W, kernel, stride, padding). Only adder layers:
# the first conv and the classifier of the CIFAR nets stay full precision (proofs/mathematics.md);
# repeated layers of the same shape are listed once.
LAYERS = [
    ("ResNet-20", "stage1 3x3", 128, 16, 16, 32, 3, 1, 1),
    ("ResNet-20", "stage2 3x3 /2", 128, 16, 32, 32, 3, 2, 1),
    ("ResNet-20", "stage2 3x3", 128, 32, 32, 16, 3, 1, 1),
    ("ResNet-20", "stage3 3x3 /2", 128, 32, 64, 16, 3, 2, 1),
    ("ResNet-20", "stage3 3x3", 128, 64, 64, 8, 3, 1, 1),
    ("ResNet-20", "shortcut 1x1 /2", 128, 32, 64, 16, 1, 2, 0),
    ("LeNet-5", "conv1 5x5", 256, 1, 6, 32, 5, 1, 0),
    ("LeNet-5", "conv2 5x5", 256, 6, 16, 14, 5, 1, 0),
    ("LeNet-5", "fc1 400-120", 256, 400, 120, 1, 1, 1, 0),
    ("VGG-small", "conv 128-128 @32", 64, 128, 128, 32, 3, 1, 1),
    ("VGG-small", "conv 128-256 @16", 64, 128, 256, 16, 3, 1, 1),
    ("VGG-small", "conv 256-256 @16", 64, 256, 256, 16, 3, 1, 1),
    ("VGG-small", "conv 256-512 @8", 64, 256, 512, 8, 3, 1, 1),
    ("VGG-small", "conv 512-512 @8", 64, 512, 512, 8, 3, 1, 1),
    ("ResNet-50", "conv4_x 3x3 256 @14", 32, 256, 256, 14, 3, 1, 1),
]

TINY_LAYERS = [("tiny", "3x3 /2", 2, 3, 5, 5, 3, 2, 1)]   # for --tiny (simulator smoke run)

#: largest (C_out, K, chunk) temporary of the unfold formulation, in elements (2 GB of float32)
UNFOLD_CHUNK_ELEMENTS = 1 << 29


# ============================================================================= timing
SMOKE = False  # --tiny: time one call, no warm-up (a simulator smoke run, not a measurement)


def time_gpu(fn, sync, min_time=0.15, fewest=3, most=50):
    """Seconds per call of fn: the mean over a batch of calls launched back to back (so that
    Python's launch overhead overlaps GPU work, as in training), after a warm-up call."""
    if not SMOKE:
        fn()
        sync()  # warm-up (and compilation)
    t0 = time.perf_counter()
    fn()
    sync()
    once = time.perf_counter() - t0
    if SMOKE:
        return once
    reps = max(fewest, min(most, math.ceil(min_time / max(once, 1e-6))))
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    sync()
    return (time.perf_counter() - t0) / reps


def tmacs(macs, seconds):
    return macs / seconds / 1e12 if seconds and seconds > 0 else float("nan")


# ================================================================ minadder's kernels
def bench_minadder(batch, c_in, c_out, hw, d, stride, padding, rng):
    x = cuda.to_device(rng.standard_normal((batch, c_in, hw, hw)).astype(np.float32))
    w = cuda.to_device(rng.standard_normal((c_out, c_in, d, d)).astype(np.float32))
    win = Window.of(x.shape, w.shape, stride, padding)
    y, saved = kc.adder2d_forward(x, w, win)
    g = cuda.to_device(rng.standard_normal(y.shape).astype(np.float32))

    # dX alone and dW alone, as the layer's backward runs them: from the input kept by the
    # forward (each call rebuilds X_col on the device)
    def grad(mode, need_x, need_w):
        return lambda: kc.adder2d_backward(g, saved, mode, need_x, need_w)

    sync = cuda.synchronize
    return {
        "forward_s": time_gpu(lambda: kc.adder2d_forward(x, w, win), sync),
        "dx_s": time_gpu(grad("full", True, False), sync),
        "dw_s": time_gpu(grad("full", False, True), sync),
        "dx_sign_s": time_gpu(grad("sign", True, False), sync),
        "dw_sign_s": time_gpu(grad("sign", False, True), sync),
        "forward_backward_s": time_gpu(
            lambda: kc.adder2d_backward(g, kc.adder2d_forward(x, w, win)[1], "full"), sync),
        # (tile, splits of the reduction axis, reduction steps per split) of each l1 GEMM
        "launch_plan": {"forward": launch.launch_plan(c_out, win.l, win.k),
                        "dx": launch.launch_plan(win.k, win.l, c_out),
                        "dw": launch.launch_plan(c_out, win.k, win.l)},
    }


# ======================================================================== PyTorch
def _chunks(c_out, k, length):
    step = max(1, UNFOLD_CHUNK_ELEMENTS // max(1, c_out * k))
    return [slice(s, min(s + step, length)) for s in range(0, length, step)]


def unfold_cols(x, d, stride, padding):
    """X_col (K, L) with columns in (n, u, v) order, as the paper's code lays it out."""
    cols = TF.unfold(x, d, padding=padding, stride=stride)          # (N, K, HoWo)
    return cols.permute(1, 0, 2).reshape(cols.shape[1], -1)


def unfold_forward(x, w2, d, stride, padding, ho, wo):
    """Eq. 2 by broadcasting: Y = -sum_k |X_col[None] - W[:, :, None]|, reshaped to NCHW."""
    cols = unfold_cols(x, d, stride, padding)
    out = torch.empty(w2.shape[0], cols.shape[1], device=x.device)
    for sl in _chunks(*w2.shape, cols.shape[1]):
        out[:, sl] = -(cols[None, :, sl] - w2[:, :, None]).abs().sum(1)
    return out.reshape(w2.shape[0], x.shape[0], ho, wo).permute(1, 0, 2, 3).contiguous()


def unfold_grad_input(cols, w2, g, x_shape, d, stride, padding):
    """dX_col = sum_t G * HT(W - X_col) by broadcasting (Eq. 6), then fold (col2im)."""
    dcols = torch.empty_like(cols)
    for sl in _chunks(*w2.shape, cols.shape[1]):
        ht = (w2[:, :, None] - cols[None, :, sl]).clamp_(-1, 1)
        dcols[:, sl] = (ht * g[:, None, sl]).sum(0)
    n = x_shape[0]
    dcols = dcols.reshape(dcols.shape[0], n, -1).permute(1, 0, 2)
    return TF.fold(dcols, x_shape[2:], d, padding=padding, stride=stride)


def unfold_grad_weight(cols, w2, g):
    """dW = sum_l G * (X_col - W) by broadcasting (Eq. 5)."""
    dw = torch.zeros_like(w2)
    for sl in _chunks(*w2.shape, cols.shape[1]):
        dw += ((cols[None, :, sl] - w2[:, :, None]) * g[:, None, sl]).sum(2)
    return dw


#: torch.cdist's backward builds a (C_out, L, K) buffer: skip it above this many bytes
CDIST_BACKWARD_MAX_BYTES = 8 << 30


def bench_torch(batch, c_in, c_out, hw, d, stride, padding, rng, device="cuda"):
    """Times of the three PyTorch formulations; a baseline that fails records its error."""
    dev = torch.device(device)
    x_np = rng.standard_normal((batch, c_in, hw, hw)).astype(np.float32)
    w_np = rng.standard_normal((c_out, c_in, d, d)).astype(np.float32)
    x = torch.from_numpy(x_np).to(dev).requires_grad_(True)
    w = torch.from_numpy(w_np).to(dev).requires_grad_(True)
    ho = (hw + 2 * padding - d) // stride + 1
    k_size, l_size = c_in * d * d, batch * ho * ho
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def unfold_times():
        with torch.no_grad():
            xd, w2 = x.detach(), w.detach().reshape(c_out, -1)
            cols = unfold_cols(xd, d, stride, padding)
            g = torch.randn(c_out, cols.shape[1], device=dev)
            fwd = time_gpu(lambda: unfold_forward(xd, w2, d, stride, padding, ho, ho), sync, fewest=2)
            dx = time_gpu(lambda: unfold_grad_input(cols, w2, g, xd.shape, d, stride, padding),
                          sync, fewest=2)
            dw = time_gpu(lambda: unfold_grad_weight(cols, w2, g), sync, fewest=2)
        return {"forward_s": fwd, "dx_s": dx, "dw_s": dw, "forward_backward_s": fwd + dx + dw}

    def cdist_forward():
        c = unfold_cols(x, d, stride, padding)                       # (K, L)
        return -torch.cdist(c.t()[None], w.reshape(c_out, -1)[None], p=1)[0]   # (L, C_out)

    cdist_backward = c_out * l_size * k_size * 4 <= CDIST_BACKWARD_MAX_BYTES
    results = {}
    for name, run in (("unfold", unfold_times),
                      ("cdist", lambda: _autograd_times(cdist_forward, x, w, sync, cdist_backward)),
                      ("cudnn", lambda: _autograd_times(
                          lambda: TF.conv2d(x, w, stride=stride, padding=padding), x, w, sync))):
        try:
            results[name] = run()
        except RuntimeError as exc:  # out of memory, most likely
            results[name] = {"error": str(exc).splitlines()[0][:200]}
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return results


def _autograd_times(forward, x, w, sync, backward=True):
    """Forward, dX alone and dW alone (torch.autograd.grad on a kept graph)."""
    with torch.no_grad():
        fwd = time_gpu(forward, sync)
    if not backward:
        return {"forward_s": fwd, "backward": "skipped (its buffer would exceed "
                f"{CDIST_BACKWARD_MAX_BYTES >> 30} GB)"}
    y = forward()
    g = torch.randn_like(y)
    dx = time_gpu(lambda: torch.autograd.grad(y, x, g, retain_graph=True), sync)
    dw = time_gpu(lambda: torch.autograd.grad(y, w, g, retain_graph=True), sync)
    del y

    def step():
        out = forward()
        torch.autograd.grad(out, (x, w), g)

    return {"forward_s": fwd, "dx_s": dx, "dw_s": dw, "forward_backward_s": time_gpu(step, sync)}


# ===================================================================== correctness
#: (x shape, weight shape, stride, padding): odd sizes; the GPU set also reaches the 128x128
#: tile (C_out = 129, K = 130) and the split reduction of dW (L = 16384, C_out = 16)
CHECK_LAYERS_TINY = [((2, 3, 5, 5), (5, 3, 3, 3), 1, 1), ((1, 2, 5, 4), (3, 2, 2, 2), 2, 0)]
CHECK_LAYERS_GPU = [
    ((4, 5, 13, 11), (7, 5, 3, 3), 1, 1),
    ((3, 16, 17, 17), (33, 16, 3, 3), 2, 1),
    ((2, 130, 6, 6), (129, 130, 1, 1), 1, 0),
    ((64, 16, 16, 16), (16, 16, 3, 3), 1, 1),
]


def _compare(results, name, shape, got, want, terms):
    """Record max |got - want| against a worst-case float32 rounding bound for `terms` terms."""
    got = got.copy_to_host() if hasattr(got, "copy_to_host") else np.asarray(got)
    want = np.asarray(want, dtype=np.float64)
    err = float(np.abs(got.astype(np.float64) - want).max(initial=0.0))
    tol = 4e-7 * max(1, terms) * max(1.0, float(np.abs(want).max(initial=0.0)))
    ok = bool(got.shape == want.shape and err <= tol)
    results.append({"kernel": name, "shape": str(shape), "max_abs_err": err, "tol": tol, "ok": ok})


def check_correctness(tiny=False, seed=0):
    """Every kernel against the NumPy reference (computed in float64); a list of records."""
    rng = np.random.default_rng(seed)
    results = []
    for x_shape, w_shape, stride, padding in (CHECK_LAYERS_TINY if tiny else CHECK_LAYERS_GPU):
        x = rng.standard_normal(x_shape).astype(np.float32)
        w = rng.standard_normal(w_shape).astype(np.float32)
        x64, w64 = x.astype(np.float64), w.astype(np.float64)
        c_out, _, d, _ = w_shape
        label = f"x{x_shape} w{w_shape} s{stride} p{padding}"
        cols64 = ref.im2col(x64, d, d, stride, padding)
        cols = cols64.astype(np.float32)
        w2, w2_64 = w.reshape(c_out, -1), w64.reshape(c_out, -1)
        k, l = cols.shape
        g = rng.standard_normal((c_out, l)).astype(np.float32)
        g64 = g.astype(np.float64)
        d_cols, d_w2, d_g = cuda.to_device(cols), cuda.to_device(w2), cuda.to_device(g)

        _compare(results, "im2col", label, columns.im2col(cuda.to_device(x), d, d, stride, padding), cols64, 1)
        _compare(results, "col2im", label, columns.col2im(d_cols, x_shape, d, d, stride, padding),
                 ref.col2im(cols64, x_shape, d, d, stride, padding), d * d)
        _compare(results, "adder_forward", label, columns.adder_forward(d_cols, d_w2),
                 ref.adder_forward(cols64, w2_64), k)
        for mode in ("full", "sign"):
            _compare(results, f"adder_grad_input[{mode}]", label,
                     columns.adder_grad_input(d_cols, d_w2, d_g, mode),
                     ref.adder_grad_input(cols64, w2_64, g64, mode), c_out)
            _compare(results, f"adder_grad_weight[{mode}]", label,
                     columns.adder_grad_weight(d_cols, d_w2, d_g, mode),
                     ref.adder_grad_weight(cols64, w2_64, g64, mode), 4 * l)

        win = Window.of(x_shape, w_shape, stride, padding)
        y, saved = kc.adder2d_forward(cuda.to_device(x), cuda.to_device(w), win)
        y_ref, saved_ref = ref.adder2d_forward(x64, w64, win)
        _compare(results, "adder2d_forward", label, y, y_ref, k)
        gy = rng.standard_normal(y_ref.shape).astype(np.float32)
        for mode in ("full", "sign"):
            dx, dw = kc.adder2d_backward(cuda.to_device(gy), saved, mode)
            dx_ref, dw_ref = ref.adder2d_backward(gy.astype(np.float64), saved_ref, mode)
            _compare(results, f"adder2d_backward dx[{mode}]", label, dx, dx_ref, c_out * d * d)
            _compare(results, f"adder2d_backward dw[{mode}]", label, dw, dw_ref, 4 * l)

    if not tiny:  # every tile shape with a split reduction, odd sizes
        k, l, c_out = 37, 301, 133
        cols = rng.standard_normal((k, l)).astype(np.float32)
        w2 = rng.standard_normal((c_out, k)).astype(np.float32)
        g = rng.standard_normal((c_out, l)).astype(np.float32)
        c64, w64, g64 = cols.astype(np.float64), w2.astype(np.float64), g.astype(np.float64)
        d_cols, d_w2, d_g = cuda.to_device(cols), cuda.to_device(w2), cuda.to_device(g)
        cases = {
            "forward": ((d_w2, d_cols, None), (c_out, l), ref.adder_forward(c64, w64), k),
            "dx_full": ((d_w2, d_g, d_cols), (k, l), ref.adder_grad_input(c64, w64, g64, "full"), c_out),
            "dx_sign": ((d_w2, d_g, d_cols), (k, l), ref.adder_grad_input(c64, w64, g64, "sign"), c_out),
            "dw_sign": ((d_g, d_cols, d_w2), (c_out, k), ref.adder_grad_weight(c64, w64, g64, "sign"), l),
            "product": ((d_g, d_cols, None), (c_out, k), g64 @ c64.T, l),
        }
        for variant, (args, shape, want, terms) in cases.items():
            for tile in TILES:
                for splits in (1, 3):
                    out = cuda.device_array(shape, dtype=np.float32)
                    launch.tiled(variant, *args, out, tile=tile, splits=splits)
                    _compare(results, f"tiled {variant} {tile} splits={splits}",
                             f"K={k} L={l} C_out={c_out}", out, want, terms)
    return results


# ============================================================================ report
def device_name():
    name = getattr(cuda.get_current_device(), "name", "CUDA simulator")  # the simulator has none
    return name.decode() if isinstance(name, bytes) else str(name)


def default_output(name):
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "gpu"
    return ROOT / "benchmarks" / "results" / f"cuda-{slug}.json"


def _ms(seconds):
    return f"{seconds * 1e3:8.3f}" if seconds is not None else "       -"


def print_table(rows):
    head = (f"{'network':10} {'layer':22} {'GMAC':>7} | {'fwd ms':>8} {'T/s':>5} {'dX ms':>8} {'T/s':>5} "
            f"{'dW ms':>8} {'T/s':>5} | {'unfold':>8} {'u f+b':>8} {'cdist':>8} {'cuDNN':>8} | "
            f"{'f+b x':>6} {'fwd/cuDNN':>9}")
    print(head)
    print("-" * len(head))
    for row in rows:
        ours, base = row["minadder"], row.get("torch") or {}
        unfold, cdist, cudnn = base.get("unfold", {}), base.get("cdist", {}), base.get("cudnn", {})
        speedup = (unfold["forward_backward_s"] / ours["forward_backward_s"]) \
            if "forward_backward_s" in unfold else None
        vs_cudnn = (ours["forward_s"] / cudnn["forward_s"]) if "forward_s" in cudnn else None
        print(f"{row['network']:10} {row['layer']:22} {row['macs'] / 1e9:7.2f} | "
              f"{_ms(ours['forward_s'])} {row['forward_tmacs']:5.2f} {_ms(ours['dx_s'])} {row['dx_tmacs']:5.2f} "
              f"{_ms(ours['dw_s'])} {row['dw_tmacs']:5.2f} | {_ms(unfold.get('forward_s'))} "
              f"{_ms(unfold.get('forward_backward_s'))} {_ms(cdist.get('forward_s'))} {_ms(cudnn.get('forward_s'))} | "
              f"{speedup if speedup else float('nan'):6.1f} {vs_cudnn if vs_cudnn else float('nan'):9.2f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", nargs="?", help="JSON path (default benchmarks/results/cuda-<device>.json)")
    parser.add_argument("--check-only", action="store_true", help="only the correctness check")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch baselines")
    parser.add_argument("--tiny", action="store_true",
                        help="one tiny layer, one timing call each: a smoke run under the CUDA simulator")
    args = parser.parse_args(argv)
    layers = TINY_LAYERS if args.tiny else LAYERS
    global SMOKE
    SMOKE = args.tiny

    kc.check_available()
    name = device_name()
    print(f"device: {name}")
    started = time.perf_counter()
    checks = check_correctness(tiny=args.tiny)
    failed = [c for c in checks if not c["ok"]]
    print(f"correctness: {len(checks) - len(failed)}/{len(checks)} kernel checks passed "
          f"(largest error {max(c['max_abs_err'] for c in checks):.2e})")
    for c in failed:
        print(f"  FAILED {c['kernel']} {c['shape']}: max |err| {c['max_abs_err']:.3e} > {c['tol']:.3e}")

    use_torch = torch is not None and not args.no_torch and torch.cuda.is_available()
    if use_torch:
        torch.backends.cudnn.allow_tf32 = False          # FP32 convolutions, not TF32
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
    elif not args.check_only:
        print("PyTorch baselines skipped (--no-torch, or torch with CUDA not importable)")

    rows = []
    if not args.check_only:
        rng = np.random.default_rng(0)
        for network, layer, batch, c_in, c_out, hw, d, stride, padding in layers:
            ho = (hw + 2 * padding - d) // stride + 1
            macs = c_out * c_in * d * d * batch * ho * ho
            row = {"network": network, "layer": layer, "batch": batch, "c_in": c_in, "c_out": c_out,
                   "hw": hw, "kernel": d, "stride": stride, "padding": padding, "macs": macs,
                   "minadder": bench_minadder(batch, c_in, c_out, hw, d, stride, padding, rng)}
            for part in ("forward", "dx", "dw"):
                row[f"{part}_tmacs"] = tmacs(macs, row["minadder"][f"{part}_s"])
            if use_torch:
                row["torch"] = bench_torch(batch, c_in, c_out, hw, d, stride, padding, rng)
                unfold, cudnn = row["torch"]["unfold"], row["torch"]["cudnn"]
                if "forward_backward_s" in unfold:   # issue 5 target: at least 20x
                    row["forward_backward_speedup_vs_unfold"] = \
                        unfold["forward_backward_s"] / row["minadder"]["forward_backward_s"]
                if "forward_s" in cudnn:             # target on large layers: at most 2.5x
                    row["forward_time_vs_cudnn"] = row["minadder"]["forward_s"] / cudnn["forward_s"]
            rows.append(row)
            print(f"  {network} {layer}: forward {row['forward_tmacs']:.2f} T adder-MAC/s", flush=True)
        print()
        print_table(rows)

    report = {
        "device": name,
        "compute_capability": list(getattr(cuda.get_current_device(), "compute_capability", ())),
        "numba_cuda": _version("numba_cuda", "numba-cuda"),
        "numba": _version("numba"),
        "numpy": np.__version__,
        "torch": getattr(torch, "__version__", None),
        "python": platform.python_version(),
        "tf32": False,
        "unfold_chunk_elements": UNFOLD_CHUNK_ELEMENTS,
        "correctness": checks,
        "layers": rows,
        "seconds": time.perf_counter() - started,
    }
    out = Path(args.output) if args.output else default_output(name)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"\nwrote {out} ({report['seconds']:.0f} s)")
    return 1 if failed else 0


def _version(module, dist=None):
    try:
        from importlib.metadata import version
        return version(dist or module)
    except Exception:
        return None


if __name__ == "__main__":
    sys.exit(main())
