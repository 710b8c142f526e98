"""Whole training steps per second: forward, cross-entropy, backward, SGD update.

    python benchmarks/bench_train_step.py                          # the table, all cores
    python benchmarks/bench_train_step.py --threads 1              # one thread (Numba and torch)
    NUMBA_CPU_NAME=haswell python benchmarks/bench_train_step.py   # minadder's AVX2 code
    python benchmarks/bench_train_step.py --profile resnet20-adder # cProfile of that step
    python benchmarks/bench_train_step.py --grad-mode sign         # the AdderNets with Eq. 4's gradients

Rows (synthetic inputs of the real shapes: MNIST 1x32x32, CIFAR 3x32x32):

  minadder LeNet-5-BN adder / cnn, batch 256, on each requested backend
  minadder ResNet-20 and ResNet-32 (--resnets) adder / cnn, batch 64 and 128 (--resnet-batch)
  torch LeNet-5-BN cnn (PyTorch's own CNN step) and torch LeNet-5-BN adder (the paper's
  reference formulation: unfold + broadcast |W - X|, autograd backward), and torch
  ResNet-20/32 cnn (minadder.torch's, oneDNN convolutions), when torch is installed.

A second table puts every cpu row beside PyTorch's CNN of the same network and batch,
and for the AdderNets says where the step goes and how far it is from what the machine
allows: the share of the step in the adder kernels (the cpu backend's entry points
wrapped with timers: the forward, adder2d_forward; dX and dW, blocked_grad_input and
blocked_grad_weight; "kernels", the forward and the whole adder2d_backward, which also
reads G once for both gradients; each the median of --steps steps' own shares), and the step's ceiling, the images/s of a step that
did nothing but its adder terms (C_out * K * positions per layer, three passes), each
pass at the ceiling of its instruction mix (forward min + add, dX clamp + FMA, dW FMA)
read from results/ceiling-<cpu>.json (benchmarks/ceiling.py --json).

The optimizer is the paper's MNIST one (SGD, Nesterov momentum 0.9, weight decay 5e-4,
adaptive adder learning-rate scaling with eta = 0.1; torch: plain SGD with the same
momentum and decay). Each row runs `--warmup` steps, then `--steps` timed steps, and
reports images/s of the best and of the median step. Like `python -m minadder train`,
the script first tells malloc to keep freed memory (minadder/memory.py; torch's rows run
in the same process); `--malloc-default` leaves glibc's default.
"""
import argparse
import cProfile
import glob
import json
import os
import pstats
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import minadder as ma  # noqa: E402
from minadder import functional as F  # noqa: E402
from minadder import optim  # noqa: E402

from minadder.models import lenet5_bn, resnet20, resnet32  # noqa: E402

BUILDERS = {"lenet5": lenet5_bn, "resnet20": resnet20, "resnet32": resnet32}
SHAPES = {"lenet5": (1, 32), "resnet20": (3, 32), "resnet32": (3, 32)}
#: the ceiling (benchmarks/ceiling.py) each pass of an adder layer is held to: the forward's
#: min + add, dX's clamp + FMA, and the full-precision dW, a product (FMA)
PASS_CEILINGS = {"forward": "min+add", "dX": "clamp+fma", "dW": "fma"}
#: the same with the sign-mode gradients (Eq. 4), g * sgn(...) in both backward passes:
#: "sign" is their term's mix, sgn + FMA with 512-bit vectors (a subtract, vfixupimm and a
#: multiply-add), select + add (the compares) where ceiling.py has no sgn+fma row
SIGN_PASS_CEILINGS = {"forward": "min+add", "dX": "sign", "dW": "sign"}


def build(model, kind, grad_mode="full"):
    return BUILDERS[model](kind, grad_mode=grad_mode)      # (a CNN has no adder layer to take it)


def minadder_step(model, kind, batch, grad_mode="full"):
    """A closure running one training step of a minadder model on a fixed random batch
    (an AdderNet's layers with the gradients of ``grad_mode``, "full" or "sign")."""
    ma.manual_seed(0)
    net = build(model, kind, grad_mode)
    channels, size = SHAPES[model]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, channels, size, size)).astype(np.float32)
    labels = rng.integers(0, 10, batch)
    opt = optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4,
                    adder_scaling="adaptive", eta=0.1)

    def step():
        opt.zero_grad()
        loss = F.cross_entropy(net(ma.Tensor(x)), labels)
        loss.backward()
        opt.step()
        return loss

    return step


# ------------------------------------------------------------------------------- torch
def torch_lenet_step(kind, batch):
    import torch
    from torch import nn as tnn

    torch.manual_seed(0)

    class UnfoldAdder(tnn.Module):
        """The paper's reference formulation: -sum_k |W - X_col| broadcast over (C_out, K, L)."""

        def __init__(self, cin, cout, k):
            super().__init__()
            self.k = k
            self.weight = tnn.Parameter(torch.randn(cout, cin, k, k))

        def forward(self, x):
            n, _, h, w = x.shape
            cout = self.weight.shape[0]
            ho, wo = h - self.k + 1, w - self.k + 1
            cols = tnn.functional.unfold(x, self.k).permute(1, 0, 2).reshape(-1, n * ho * wo)
            y = -(self.weight.reshape(cout, -1, 1) - cols.unsqueeze(0)).abs().sum(1)
            return y.reshape(cout, n, ho, wo).permute(1, 0, 2, 3)

    class UnfoldAdderLinear(UnfoldAdder):
        def __init__(self, i, o):
            super().__init__(i, o, 1)

        def forward(self, x):
            return super().forward(x.reshape(*x.shape, 1, 1)).reshape(len(x), -1)

    def conv(i, o):
        return UnfoldAdder(i, o, 5) if kind == "adder" else tnn.Conv2d(i, o, 5, bias=False)

    def fc(i, o):
        return UnfoldAdderLinear(i, o) if kind == "adder" else tnn.Linear(i, o, bias=False)

    net = tnn.Sequential(conv(1, 6), tnn.BatchNorm2d(6), tnn.ReLU(), tnn.MaxPool2d(2),
                         conv(6, 16), tnn.BatchNorm2d(16), tnn.ReLU(), tnn.MaxPool2d(2), tnn.Flatten(),
                         fc(400, 120), tnn.BatchNorm1d(120), tnn.ReLU(),
                         fc(120, 84), tnn.BatchNorm1d(84), tnn.ReLU(),
                         fc(84, 10), tnn.BatchNorm1d(10))
    return torch_step(net, torch.randn(batch, 1, 32, 32), torch.randint(0, 10, (batch,)))


def torch_step(net, x, labels):
    """A closure running one training step of a torch network on the fixed batch (x, labels)."""
    import torch
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad()
        loss = loss_fn(net(x), labels)
        loss.backward()
        opt.step()
        return loss

    return step


# ------------------------------------------------------------------------------ timing
def time_steps(step, warmup, steps, budget_s=60.0):
    for _ in range(warmup):
        step()
    times = []
    start = time.perf_counter()
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start > budget_s:
            break
    return min(times), float(np.median(times))


# ----------------------------------------------------------- where the step goes, and its ceiling
def kernel_shares(step, steps):
    """(share of the step in the cpu backend's adder kernels, ms per step): the forward,
    dX and dW, the whole backward (dX, dW and the pass over G they share) and "kernels"
    (the forward and the whole backward), their entry points wrapped with timers; each
    share the median of ``steps`` steps' own (one share over 2 steps, as before, varied by
    4 points between runs of the same tree)."""
    from minadder.kernels import cpu
    spent = {"forward": 0.0, "dX": 0.0, "dW": 0.0, "backward": 0.0}
    originals = {"forward": ("adder2d_forward", cpu.adder2d_forward),
                 "dX": ("blocked_grad_input", cpu.blocked_grad_input),
                 "dW": ("blocked_grad_weight", cpu.blocked_grad_weight),
                 "backward": ("adder2d_backward", cpu.adder2d_backward)}

    def timed(key, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[key] += time.perf_counter() - start
        return wrapper

    for key, (attr, fn) in originals.items():
        setattr(cpu, attr, timed(key, fn))
    shares, times = {key: [] for key in (*spent, "kernels")}, []
    try:
        step()
        for _ in range(steps):
            for key in spent:
                spent[key] = 0.0
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
            for key, t in spent.items():
                shares[key].append(t / times[-1])
            shares["kernels"].append((spent["forward"] + spent["backward"]) / times[-1])
    finally:
        for attr, fn in originals.values():
            setattr(cpu, attr, fn)
    return {key: float(np.median(s)) for key, s in shares.items()}, float(np.median(times)) * 1e3


def adder_terms(model):
    """Adder terms |x - w| of one image's forward: the sum of C_out * K * positions over its adder layers."""
    from minadder import count
    report = count.count({"lenet5": "lenet5_bn"}.get(model, model), "adder")
    return sum(r["pairs"] for r in report["layers"] if r["type"] in ("Adder2d", "AdderLinear"))


def ceiling_rates(threads, results=None):
    """{mix: G terms/s} at ``threads`` threads for the code this process runs, from
    ceiling.py's JSON in ``results`` (benchmarks/results): results/ceiling-<target>.json's
    own ("native") rows, or, where there is none and the code is the AVX2 code compiled on
    a wider CPU (NUMBA_CPU_NAME=haswell), the "avx2" rows of this CPU's file; {} if none."""
    from minadder.kernels.target import TARGET, cpu_model
    results = results or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    candidates = [(os.path.join(results, f"ceiling-{TARGET.name}.json"), "native")]
    if TARGET.vector_bits == 256:
        candidates += [(path, "avx2") for path in sorted(glob.glob(os.path.join(results, "ceiling-*.json")))]
    for path, width in candidates:
        try:
            with open(path) as f:
                record = json.load(f)
            rows = record["rows"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if width == "avx2" and record.get("cpu") != cpu_model():
            continue
        rate = {r["mix"]: r["gterms"] for r in rows if r.get("threads") == threads and r.get("width") == width}
        if rate:
            return rate
    return {}


def step_ceiling(model, batch, threads, grad_mode="full"):
    """Images/s of a step that did nothing but its adder terms, each pass at its ceiling
    (forward, dX and dW: three passes over the terms), from ceiling.py's JSON
    (ceiling_rates); or None."""
    rate = ceiling_rates(threads)
    sign = rate.get("sgn+fma", rate.get("select+add"))
    rate.update({"sign": sign} if sign else {})
    mixes = (SIGN_PASS_CEILINGS if grad_mode == "sign" else PASS_CEILINGS).values()
    if not all(mix in rate for mix in mixes):
        return None
    terms = adder_terms(model) * batch
    seconds = sum(terms / (rate[mix] * 1e9) for mix in mixes)
    return batch / seconds


def profile(name, batch, steps, top, grad_mode="full"):
    model, kind = name.split("-")
    step = minadder_step(model, kind, batch, grad_mode)
    step()
    step()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(steps):
        step()
    prof.disable()
    stats = pstats.Stats(prof).sort_stats("tottime")
    total = sum(v[2] for v in stats.stats.values())
    print(f"cProfile of {steps} steps of {name} at batch {batch} on backend {ma.get_backend()!r}: "
          f"{total / steps * 1e3:.1f} ms per step")
    print(f"{'tottime/step ms':>16} {'share':>6}  function")
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:top]
    for (filename, line, func), (cc, nc, tt, ct, callers) in rows:
        where = os.path.relpath(filename, ROOT) if filename.startswith(ROOT) else os.path.basename(filename)
        print(f"{tt / steps * 1e3:16.2f} {tt / total:6.1%}  {func} ({where}:{line})")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", nargs="*", default=["cpu", "numpy"])
    ap.add_argument("--lenet-batch", type=int, default=256)
    ap.add_argument("--resnet-batch", type=int, nargs="*", default=[64, 128])
    ap.add_argument("--resnets", nargs="*", default=["resnet20", "resnet32"], choices=["resnet20", "resnet32"])
    ap.add_argument("--threads", type=int, default=None, help="threads for Numba and torch (default: all)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--skip", nargs="*", default=[], help="row names to skip, e.g. resnet20-cnn")
    ap.add_argument("--profile", metavar="MODEL-KIND", help="cProfile one model (lenet5-adder, resnet20-adder, ...)")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--grad-mode", choices=["full", "sign"], default="full",
                    help="the AdderNets' gradients: full precision (Eq. 5 and 6, the default) or sign (Eq. 4)")
    ap.add_argument("--malloc-default", action="store_true",
                    help="leave glibc's malloc as it is (the training command keeps freed memory)")
    args = ap.parse_args()

    threads = args.threads or os.cpu_count()
    from minadder.memory import keep_freed_memory
    kept = False if args.malloc_default else keep_freed_memory()
    import numba
    # as the command line does, before the kernels load: Numba's threading layer, one BLAS thread
    # and the CPU features of this machine (512-bit vectors on AVX-512), then the threads
    ma.configure(threads=min(threads, numba.config.NUMBA_NUM_THREADS))
    if args.profile:
        batch = args.lenet_batch if args.profile.startswith("lenet5") else args.resnet_batch[0]
        ma.set_backend(args.backends[0])
        return profile(args.profile, batch, args.steps, args.top, args.grad_mode)

    rows = []
    from minadder.kernels.target import TARGET, cpu_model
    print(f"CPU: {cpu_model()}; minadder's kernels compiled for {TARGET.name} "
          f"({TARGET.registers} x {TARGET.vector_bits}-bit registers); {threads} thread(s); "
          f"malloc {'keeps freed memory' if kept else 'default'}; the AdderNets' gradients: {args.grad_mode}")
    print(f"{'row':34} {'batch':>6} {'best img/s':>11} {'median img/s':>13} {'best ms/step':>13}")
    cases = [("lenet5", "adder", args.lenet_batch), ("lenet5", "cnn", args.lenet_batch)]
    cases += [(net, kind, b) for net in args.resnets for b in args.resnet_batch for kind in ("adder", "cnn")]
    for backend in args.backends:
        ma.set_backend(backend)
        for model, kind, batch in cases:
            if f"{model}-{kind}" in args.skip or (backend == "numpy" and model != "lenet5"):
                continue   # the NumPy reference takes minutes per ResNet step
            best, med = time_steps(minadder_step(model, kind, batch, args.grad_mode), args.warmup, args.steps)
            rows.append((f"minadder[{backend}] {model} {kind}", batch, best, med))
            print_row(*rows[-1])
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            print("torch is not installed: no torch rows")
        else:
            torch.set_num_threads(threads)
            for kind in ("cnn", "adder"):
                best, med = time_steps(torch_lenet_step(kind, args.lenet_batch), args.warmup, args.steps)
                label = "torch lenet5 cnn" if kind == "cnn" else "torch lenet5 adder (unfold)"
                rows.append((label, args.lenet_batch, best, med))
                print_row(*rows[-1])
            for net in args.resnets:
                for batch in args.resnet_batch:
                    best, med = time_steps(torch_resnet_step(net, batch), args.warmup, args.steps)
                    rows.append((f"torch {net} cnn", batch, best, med))
                    print_row(*rows[-1])
    compare(rows, cases, args, min(threads, numba.config.NUMBA_NUM_THREADS))


def compare(rows, cases, args, threads):
    """The second table: each cpu row against PyTorch's CNN of the same network and batch,
    the share of its step in the adder kernels, and the step's distance to its ceiling."""
    best = {(label, batch): batch / t for label, batch, t, _ in rows}
    print(f"\n{'row':34} {'batch':>6} {'vs torch cnn':>13} {'fwd':>6} {'dX':>6} {'dW':>6} {'kernels':>8} "
          f"{'ceiling img/s':>14} {'of ceiling':>11}")
    ma.set_backend("cpu")
    for model, kind, batch in cases:
        label = f"minadder[cpu] {model} {kind}"
        if (label, batch) not in best:
            continue
        torch_rate = best.get((f"torch {model} cnn", batch))
        versus = f"{best[label, batch] / torch_rate:.2f}x" if torch_rate else "-"
        cells = ["-"] * 4
        ceiling = fraction = "-"
        if kind == "adder":
            shares, _ = kernel_shares(minadder_step(model, kind, batch, args.grad_mode), args.steps)
            cells = [f"{shares[k]:.0%}" for k in ("forward", "dX", "dW", "kernels")]
            rate = step_ceiling(model, batch, threads, args.grad_mode)
            if rate:
                ceiling, fraction = f"{rate:,.0f}", f"{best[label, batch] / rate:.2f}"
        print(f"{label:34} {batch:6d} {versus:>13} {cells[0]:>6} {cells[1]:>6} {cells[2]:>6} {cells[3]:>8} "
              f"{ceiling:>14} {fraction:>11}")


def torch_resnet_step(name, batch):
    """PyTorch's own ResNet-20/32 CNN (the layers of minadder's, from minadder.torch) on CIFAR shapes."""
    import torch
    from minadder.torch.models import MODELS
    torch.manual_seed(0)
    net = MODELS[name](kind="cnn")
    return torch_step(net, torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,)))



def print_row(label, batch, best, med):
    print(f"{label:34} {batch:6d} {batch / best:11.0f} {batch / med:13.0f} {best * 1e3:13.1f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
