"""Training-step images/s of a PyTorch ResNet-20 AdderNet: minadder.torch.Adder2d against
the unfold adder layer of the paper's reference code.

    python benchmarks/bench_torch.py                          # CPU (and GPU when there is one)
    python benchmarks/bench_torch.py --batch 64 --steps 10 --json results.json
    python benchmarks/bench_torch.py --smoke                  # batch 2, one step: does it run

Both rows train the same network (``minadder.torch.resnet20(kind="adder")``, the same
weights) with one step = forward, cross-entropy, backward, SGD update (momentum 0.9,
weight decay 5e-4):

  minadder  every adder layer is ``minadder.torch.Adder2d``: minadder's cpu kernels for
            CPU tensors, its cuda kernels for CUDA tensors; Eq. 13 by
            ``scale_adder_grads`` (eta 0.1) after backward;
  unfold    every adder layer is ``UnfoldAdder2d`` below, the reference code's
            formulation: ``torch.nn.functional.unfold`` to X_col (K, L), then |W - X_col|
            broadcast to a (C_out, K, L) tensor and summed over K; backward builds the
            same tensor for the full-precision gradients (Eqs. 5-6) and normalises the
            filter gradient to 0.2 * sqrt(k) inside backward, as that code does.

The table names the CPU (lscpu), PyTorch's and minadder's thread counts, and gives the
best and the median of ``--steps`` timed steps after ``--warmup``; ``--json`` writes it.
"""
import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import minadder  # noqa: E402
import minadder.torch as mt  # noqa: E402


# ============================================================================ the unfold layer
class _UnfoldAdder(torch.autograd.Function):
    """Y[t, l] = -sum_k |W[t, k] - X_col[k, l]| over a (C_out, K, L) broadcast (Eq. 2)."""

    @staticmethod
    def forward(ctx, w_col, x_col):
        ctx.save_for_backward(w_col, x_col)
        return -(w_col.unsqueeze(2) - x_col.unsqueeze(0)).abs().sum(1)

    @staticmethod
    def backward(ctx, grad):
        w_col, x_col = ctx.saved_tensors
        diff = x_col.unsqueeze(0) - w_col.unsqueeze(2)                       # (C_out, K, L)
        grad_w = (diff * grad.unsqueeze(1)).sum(2)                           # Eq. 5
        grad_w = grad_w * (0.2 * math.sqrt(grad_w.numel()) / grad_w.norm().clamp(min=1e-12))
        grad_x = (-diff).clamp(-1, 1).mul(grad.unsqueeze(1)).sum(0)          # Eq. 6
        return grad_w, grad_x


class UnfoldAdder2d(torch.nn.Module):
    """The reference code's adder layer, written again: unfold, broadcast, sum."""

    def __init__(self, weight, stride, padding):
        super().__init__()
        self.weight = torch.nn.Parameter(weight.detach().clone())
        self.stride, self.padding = stride, padding

    def forward(self, x):
        n, _, h, w = x.shape
        c_out, _, d, _ = self.weight.shape
        ho, wo = (h + 2 * self.padding - d) // self.stride + 1, (w + 2 * self.padding - d) // self.stride + 1
        cols = F.unfold(x, d, padding=self.padding, stride=self.stride)          # (N, K, P)
        x_col = cols.permute(1, 0, 2).reshape(cols.shape[1], -1)                  # (K, N*P)
        y = _UnfoldAdder.apply(self.weight.reshape(c_out, -1), x_col)            # (C_out, N*P)
        return y.reshape(c_out, n, ho, wo).permute(1, 0, 2, 3).contiguous()


def with_unfold_layers(model):
    """The same model (same weights) with every Adder2d replaced by UnfoldAdder2d."""
    for name, layer in mt.adder_modules(model):
        parent_name, _, leaf = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, leaf, UnfoldAdder2d(layer.weight, layer.stride, layer.padding))
    return model


# ============================================================================ timing
def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown"


def build(impl, device):
    torch.manual_seed(0)
    model = mt.resnet20(kind="adder")
    if impl == "unfold":
        model = with_unfold_layers(model)
    return model.to(device)


def time_steps(impl, device, batch, warmup, steps):
    """Seconds of each timed training step (forward, loss, backward, Eq. 13, SGD)."""
    model = build(impl, device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, 32, 32, generator=gen).to(device)
    labels = torch.randint(0, 10, (batch,), generator=gen).to(device)
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), labels).backward()
        if impl == "minadder":
            mt.scale_adder_grads(model, eta=0.1)
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def run(args):
    devices = [torch.device("cpu")]
    if torch.cuda.is_available() and not args.cpu_only:
        devices.append(torch.device("cuda"))
    info = {"cpu": cpu_model(), "torch": torch.__version__, "minadder": minadder.__version__,
            "torch_threads": torch.get_num_threads(), "minadder_threads": mt.kernel_threads(),
            "gpu": torch.cuda.get_device_name() if len(devices) > 1 else None,
            "batch": args.batch, "warmup": args.warmup, "steps": args.steps, "rows": []}
    for device in devices:
        for impl in args.impl:
            times = time_steps(impl, device, args.batch, args.warmup, args.steps)
            info["rows"].append({"impl": impl, "device": device.type, "batch": args.batch,
                                 "best_images_per_s": args.batch / min(times),
                                 "median_images_per_s": args.batch / statistics.median(times),
                                 "step_seconds": times})
    return info


def table(info):
    lines = [f"CPU: {info['cpu']}" + (f"; GPU: {info['gpu']}" if info["gpu"] else ""),
             f"torch {info['torch']} with {info['torch_threads']} threads; minadder {info['minadder']} "
             f"kernels with {info['minadder_threads']} threads",
             f"ResNet-20 AdderNet training step, batch {info['batch']}, {info['steps']} steps after "
             f"{info['warmup']} warm-up",
             "", f"{'layer':<10} {'device':<7} {'best img/s':>11} {'median img/s':>13} {'vs unfold':>10}"]
    base = {r["device"]: r["median_images_per_s"] for r in info["rows"] if r["impl"] == "unfold"}
    for r in info["rows"]:
        ratio = r["median_images_per_s"] / base[r["device"]] if r["device"] in base else float("nan")
        lines.append(f"{r['impl']:<10} {r['device']:<7} {r['best_images_per_s']:>11.1f} "
                     f"{r['median_images_per_s']:>13.1f} {ratio:>9.1f}x")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--impl", nargs="+", choices=("minadder", "unfold"), default=["minadder", "unfold"])
    p.add_argument("--cpu-only", action="store_true", help="skip the GPU rows")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--smoke", action="store_true", help="batch 2, one step after one warm-up")
    args = p.parse_args(argv)
    if args.smoke:
        args.batch, args.warmup, args.steps = 2, 1, 1
    info = run(args)
    print(table(info))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(info, f, indent=2)
    return info


if __name__ == "__main__":
    main()
