"""Per-layer speed of the adder layer: G adder-MAC/s for forward, dX and dW, and peak memory,
beside oneDNN's conv2d on the same shapes and threads (the machine's multiply-accumulate
yardstick).

For each layer shape (ResNet-20's seven, LeNet-5, VGG-small; batch 32 by default) and each
implementation:

  numpy        minadder's reference kernels (kernels/reference.py)
  cpu          minadder's Numba kernels (the package kernels/cpu/), compiled for this machine
  cpu-avx2     the same compiled for Haswell (NUMBA_CPU_NAME=haswell): the AVX2 code with
               its 16-register blocking, run on this machine (x86-64 only)
  cpu-blas-dw  cpu with the full-mode dW product always through BLAS sgemm on chunks of
               X_col (kernels/cpu/grad_weight.py FULL_DW_PRODUCT = "blas")
  cpu-numba-dw cpu with it always through the Numba register blocks or reduction ("numba")
  conv2d       torch.nn.functional.conv2d (oneDNN), the multiply-accumulate layer
  torch-unfold the formulation of the paper's reference code: unfold, then broadcast
               |W - X| over a (C_out, K, L) tensor; backward by torch autograd
  torch-cdist  unfold + torch.cdist(p=1) (forward only)

One adder-MAC is one |x - w| accumulated; a pass (forward, dX or dW) of a layer costs
C_out * K * L of them (K = C_in*d*d, L = N*H_out*W_out); a conv2d pass costs as many
multiply-adds. "fwd" is the whole layer forward (the backend's adder2d_forward), dX and dW
its backward asked for one gradient at a time (adder2d_backward, full mode; "dW sign"
the filter gradient in sign mode), for
conv2d its forward and the two halves of its autograd backward together ("dX" column);
"f+b ms" a whole forward + backward. "peak" is the growth of the process's resident
memory during one forward + backward (Linux VmHWM, reset through /proc/self/clear_refs),
outputs and the cache included, next to the size of the layer's im2col buffer. It is
measured first; the timings then run with malloc keeping freed memory, as in the training
command (minadder/memory.py: temporaries reuse warm pages; --malloc-default leaves
glibc's default, where every large temporary page-faults fresh pages). Every
measurement runs in its own child process with --threads threads (Numba's and torch's),
so the memory figures do not see each other; each figure is the best of --repeat
timings in each of --runs processes.

    python benchmarks/bench_adder_layers.py                 # everything, table on stdout
    python benchmarks/bench_adder_layers.py --runs 3 --repeat 5 --markdown   # as in README.md
    python benchmarks/bench_adder_layers.py --impl cpu cpu-avx2 conv2d --layers resnet20 --threads 1
    python benchmarks/bench_adder_layers.py --ceiling measure     # measure the ceilings first, in this run

A second table gives each kernel's rate as a fraction of the ceiling of its instruction mix
on this machine (ceiling.py, same vector width, same thread count): the forward against
min + add, dX (full) against clamp + FMA, dW (full) against FMA and against NumPy's sgemm, dX
and dW (sign) against their term's mix: with 512-bit vectors sgn + FMA (a subtract,
vfixupimm and a multiply-add, as the sign kernels compute it there), else select + add (a
compare, a blend and an add: the AVX2 code compares); conv2d
against FMA. dX and dW are each timed alone (need_weight_grad / need_input_grad False), so
each call also widens G (positions.on_wide_positions; dW where its kernel reads G on wide
positions, the layers with long rows and at most 64 filters, 128 on 32x32 images), which a
training step does once for both: one column times the full backward in one call, against
dX's and dW's ceilings together, and two more the cpu backend's dX and dW kernels alone, G
widened before. One more times the cpu forward given its input's frame, written before
(the forward writes it on the way): what framing the input costs the forward. The ceilings are read from --ceiling PATH (default
results/ceiling-<cpu>.json, written by ``ceiling.py --json``), or measured first with
--ceiling measure.

A third table says what the data allow: the bytes each pass must move (X's rows that its
windows reach, G or Y, dX; ``traffic``) at ceiling.py's memory rates, from the memory and
from a cache as large as a layer's data, against its arithmetic at the ceiling. Where the
data take longer than the arithmetic (a 1x1 layer: K = C_in terms per number read), no
loop can reach the ceiling, and the table gives the most it could: the arithmetic's time
over the data's, as if the two overlapped perfectly.

torch is optional (pip install torch); without it the torch columns are skipped.
"""
import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# name: (N, C_in, H (= W), C_out, d, stride, padding)
LAYERS = {
    "resnet20 16ch 32x32": (32, 16, 32, 16, 3, 1, 1),
    "resnet20 32ch 16x16": (32, 32, 16, 32, 3, 1, 1),
    "resnet20 64ch 8x8": (32, 64, 8, 64, 3, 1, 1),
    # the first layer of stages 2 and 3 (stride 2) and their 1x1 stride-2 shortcuts
    "resnet20 16->32ch s2 32x32": (32, 16, 32, 32, 3, 2, 1),
    "resnet20 1x1 16->32ch s2 32x32": (32, 16, 32, 32, 1, 2, 0),
    "resnet20 32->64ch s2 16x16": (32, 32, 16, 64, 3, 2, 1),
    "resnet20 1x1 32->64ch s2 16x16": (32, 32, 16, 64, 1, 2, 0),
    "lenet5 conv1 1->6 k5": (32, 1, 32, 6, 5, 1, 0),
    "lenet5 conv2 6->16 k5": (32, 6, 14, 16, 5, 1, 0),
    "lenet5 fc1 400->120": (32, 400, 1, 120, 1, 1, 0),
    "vgg-small 128ch 32x32": (32, 128, 32, 128, 3, 1, 1),
    "vgg-small 256ch 16x16": (32, 256, 16, 256, 3, 1, 1),
    "vgg-small 512ch 8x8": (32, 512, 8, 512, 3, 1, 1),
}
#: the text tables' first column
NAME_WIDTH = max(len(name) for name in LAYERS) + 2
IMPLS = ("numpy", "cpu", "cpu-avx2", "cpu-blas-dw", "cpu-numba-dw", "conv2d", "torch-unfold", "torch-cdist")
HERE = os.path.dirname(os.path.abspath(__file__))
#: the ceiling (ceiling.py's mix) each timed pass is divided by
CEILING_OF = {"fwd": "min+add", "dx": "clamp+fma", "dw": "fma", "dws": "sign", "dxs": "sign"}
#: the sign kernels' mix ("sign" above): their term with 512-bit vectors (a subtract,
#: vfixupimm and a multiply-add), else the compares' (select + add, the AVX2 code)
SIGN_MIXES = ("sgn+fma", "select+add")


def geometry(layer, batch):
    n, c, h, c_out, d, s, p = layer
    n = batch or n
    ho = (h + 2 * p - d) // s + 1
    k, length = c * d * d, n * ho * ho
    return n, k, length, c_out * k * length


def traffic(layer, batch):
    """The bytes each pass must read and write at the least, {pass: (read, written)}: X's
    rows that some window reaches (whole rows: every other number of a row still touches
    every cache line of it), G and Y (C_out x the output positions), dX, dW. The forward
    reads X and writes Y; dX reads G and X and writes dX; dW (either mode) reads G and X."""
    n, c, h, c_out, d, s, p = layer
    n = batch or n
    ho = (h + 2 * p - d) // s + 1
    rows = {u * s + i - p for u in range(ho) for i in range(d)} & set(range(h))
    x, y = 4 * n * c * len(rows) * h, 4 * n * c_out * ho * ho
    dx, dw = 4 * n * c * h * h, 4 * c_out * c * d * d
    return dict(fwd=(x, y), dx=(y + x, dx), dw=(y + x, dw), dws=(y + x, dw))


# ----------------------------------------------------------------------------- memory
def rss_bytes(field="VmRSS"):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def reset_peak():
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


#: whether the timings run with malloc keeping freed memory (set in the child from --malloc-default)
KEEP_FREED_MEMORY = True


def timing_memory():
    """After the peak is measured, before the timings: as the training command does, tell
    malloc to keep freed memory (minadder/memory.py), so that each timed call's temporaries
    (padded inputs, X_col chunks, outputs) reuse warm pages instead of page-faulting fresh
    ones. Measured 2026-12-05 on the 2-core AVX-512 VM: a chunk of X_col for dW on 8x8
    layers took 0.43 ms on fresh pages, 0.04 ms on warm ones."""
    if KEEP_FREED_MEMORY:
        from minadder.memory import keep_freed_memory
        keep_freed_memory()


def best_time(fn, repeat, budget_s=20.0):
    """Best wall time of fn() over `repeat` runs (fewer when one run is slow)."""
    times = []
    start = time.perf_counter()
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start > budget_s:
            break
    return min(times)


# ------------------------------------------------------------------------- the children
def run_minadder(name, layer, batch, repeat):
    from minadder import backend
    from minadder.kernels.geometry import Window
    backend.set_backend("cpu" if name.startswith("cpu") else name)
    k_mod = backend.kernels()
    if name in ("cpu-blas-dw", "cpu-numba-dw"):
        from minadder.kernels.cpu import grad_weight
        grad_weight.FULL_DW_PRODUCT = name[4:-3]
    n, c, h, c_out, d, s, p = layer
    n = batch or n
    rng = np.random.default_rng(0)
    # compile (cpu) on a tiny layer first, so neither the timings nor the peak see it
    tiny_x = rng.standard_normal((2, c, max(h, d), max(h, d))).astype(np.float32)
    tiny_w = rng.standard_normal((c_out, c, d, d)).astype(np.float32)
    y, saved = k_mod.adder2d_forward(tiny_x, tiny_w, Window.of(tiny_x.shape, tiny_w.shape, s, p))
    k_mod.adder2d_backward(y, saved, "full")

    x = rng.standard_normal((n, c, h, h)).astype(np.float32)
    w = rng.standard_normal((c_out, c, d, d)).astype(np.float32)
    win = Window.of(x.shape, w.shape, s, p)
    y, saved = k_mod.adder2d_forward(x, w, win)
    g = rng.standard_normal(y.shape).astype(np.float32)
    del y, saved
    gc.collect()
    base = rss_bytes()
    ok = reset_peak()
    y, saved = k_mod.adder2d_forward(x, w, win)
    dx, dw = k_mod.adder2d_backward(g, saved, "full")
    peak = rss_bytes("VmHWM") - base if ok else None
    timing_memory()
    del y, dx, dw

    def fwd_bwd():
        _, ss = k_mod.adder2d_forward(x, w, win)
        k_mod.adder2d_backward(g, ss, "full")

    return dict(
        **kernel_times(name, k_mod, saved, w, g, win, repeat),
        fwd=best_time(lambda: k_mod.adder2d_forward(x, w, win), repeat),
        dx=best_time(lambda: k_mod.adder2d_backward(g, saved, "full", need_weight_grad=False), repeat),
        dw=best_time(lambda: k_mod.adder2d_backward(g, saved, "full", need_input_grad=False), repeat),
        dws=best_time(lambda: k_mod.adder2d_backward(g, saved, "sign", need_input_grad=False), repeat),
        dxs=best_time(lambda: k_mod.adder2d_backward(g, saved, "sign", need_weight_grad=False), repeat),
        bwd=best_time(lambda: k_mod.adder2d_backward(g, saved, "full"), repeat),
        fb=best_time(fwd_bwd, repeat),
        peak=peak)


def kernel_times(name, k_mod, saved, w, g, win, repeat):
    """The cpu backend's kernels alone: the forward given its frame (fwk: the input's frame
    written before, which the forward otherwise writes on the way), and the full-precision
    dX and dW (dxk, dwk) with G widened before (positions.on_wide_positions), where the
    layer reads G on wide positions: the dX-only and dW-only calls each widen G, which a
    training step does once for both."""
    if not name.startswith("cpu"):
        return {}
    from minadder.kernels.cpu import forward, grad_input, grad_weight, positions
    from minadder.kernels.cpu.frame import frame_pitch
    frame = saved[3]
    if frame is None:
        return {}
    w2 = w.reshape(win.c_out, win.k)
    out = np.empty((win.n, win.c_out, win.plane), dtype=w2.dtype)
    times = dict(fwk=best_time(lambda: forward.blocked_forward(w2, win, frame, out), repeat))
    if not positions.wide_rows(win):
        return times
    g3 = g.reshape(win.n, win.c_out, win.plane)
    wide = positions.on_wide_positions(g3, win, frame_pitch(win))
    return dict(times, dxk=best_time(lambda: grad_input.blocked_grad_input(w2, g3, win, "full", frame, wide), repeat),
                dwk=best_time(lambda: grad_weight.blocked_grad_weight(w2, g3, win, "full", frame, wide), repeat))


def run_conv2d(layer, batch, repeat):
    """oneDNN's convolution on the same shapes: forward, and forward + autograd backward."""
    import torch
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count())))
    n, c, h, c_out, d, s, p = layer
    n = batch or n
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, h, h, generator=gen)
    w = torch.randn(c_out, c, d, d, generator=gen)
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    g = torch.randn_like(torch.nn.functional.conv2d(x, w, stride=s, padding=p))

    def fwd():
        with torch.no_grad():
            torch.nn.functional.conv2d(x, w, stride=s, padding=p)

    def fwd_bwd():
        torch.nn.functional.conv2d(xr, wr, stride=s, padding=p).backward(g)

    fwd(), fwd_bwd()
    gc.collect()
    base = rss_bytes()
    ok = reset_peak()
    fwd_bwd()
    peak = rss_bytes("VmHWM") - base if ok else None
    timing_memory()
    t_fwd, t_fb = best_time(fwd, repeat), best_time(fwd_bwd, repeat)
    return dict(fwd=t_fwd, fb=t_fb, dx=max(t_fb - t_fwd, 1e-9) / 2, dw=max(t_fb - t_fwd, 1e-9) / 2,
                peak=peak)


def run_torch(name, layer, batch, repeat, max_temp_gb):
    import torch
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count())))
    n, c, h, c_out, d, s, p = layer
    n = batch or n
    _, k, length, _ = geometry(layer, batch)
    temp_gb = c_out * k * length * 4 / 1e9
    if name == "torch-unfold" and temp_gb > max_temp_gb:
        return dict(skipped=f"needs a {temp_gb:.0f} GB (C_out, K, L) temporary")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, h, h, generator=gen)
    w = torch.randn(c_out, c, d, d, generator=gen)
    ho = (h + 2 * p - d) // s + 1

    def unfold_cols(xx):
        cols = torch.nn.functional.unfold(xx, d, padding=p, stride=s)     # (N, K, P)
        return cols.permute(1, 0, 2).reshape(k, -1)                       # (K, L)

    def unfold_adder(xx, ww):
        # the paper's reference code: broadcast W - X over (C_out, K, L), abs, sum over K
        cols = unfold_cols(xx)
        y = -(ww.reshape(c_out, k, 1) - cols.unsqueeze(0)).abs().sum(1)   # (C_out, L)
        return y.reshape(c_out, len(xx), ho, ho).permute(1, 0, 2, 3)

    def cdist_adder(xx, ww):
        cols = unfold_cols(xx)
        y = -torch.cdist(cols.t().unsqueeze(0), ww.reshape(1, c_out, k), p=1)[0]   # (L, C_out)
        return y.t().reshape(c_out, len(xx), ho, ho).permute(1, 0, 2, 3)

    g = torch.randn(n, c_out, ho, ho, generator=gen)
    fn = unfold_adder if name == "torch-unfold" else cdist_adder
    with torch.no_grad():
        fn(x[:2], w)                            # warm up
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()

    def fwd_bwd():
        y = fn(xr, wr)
        y.backward(g)

    def fwd():
        with torch.no_grad():
            fn(x, w)

    gc.collect()
    base = rss_bytes()
    ok = reset_peak()
    if name == "torch-unfold":
        fwd_bwd()
    else:
        fwd()
    peak = rss_bytes("VmHWM") - base if ok else None
    timing_memory()
    out = dict(fwd=best_time(fwd, repeat), peak=peak)
    if name == "torch-unfold":
        out["fb"] = best_time(fwd_bwd, repeat)
    return out


def child(args):
    global KEEP_FREED_MEMORY
    KEEP_FREED_MEMORY = not args.malloc_default
    import minadder
    minadder.configure()       # as the command line does (NUMBA_NUM_THREADS sets the threads)
    layer = LAYERS[args.child_layer]
    if args.child_impl in ("numpy", "cpu", "cpu-avx2", "cpu-blas-dw", "cpu-numba-dw"):
        result = run_minadder(args.child_impl, layer, args.batch, args.repeat)
    elif args.child_impl == "conv2d":
        result = run_conv2d(layer, args.batch, args.repeat)
    else:
        result = run_torch(args.child_impl, layer, args.batch, args.repeat, args.max_temp_gb)
    print(json.dumps(result))


# ------------------------------------------------------------------------------ parent
def measure(impl, layer_name, args):
    if impl == "numpy" and geometry(LAYERS[layer_name], args.batch)[3] > args.numpy_max_gmac * 1e9:
        return dict(skipped=f"over --numpy-max-gmac {args.numpy_max_gmac}")
    cmd = [sys.executable, os.path.abspath(__file__), "--child-impl", impl, "--child-layer", layer_name,
           "--repeat", str(args.repeat), "--max-temp-gb", str(args.max_temp_gb)]
    if args.batch:
        cmd += ["--batch", str(args.batch)]
    if args.malloc_default:
        cmd += ["--malloc-default"]
    # BLAS's thread count is left to minadder.configure() (one: its spinning workers would
    # take the cores from the kernels' threads); torch sets its own from BENCH_THREADS
    env = dict(os.environ, BENCH_THREADS=str(args.threads), NUMBA_NUM_THREADS=str(args.threads),
               OMP_NUM_THREADS=str(args.threads))
    env.pop("OPENBLAS_NUM_THREADS", None)
    if impl == "cpu-avx2":
        env["NUMBA_CPU_NAME"] = "haswell"
        env.pop("NUMBA_CPU_FEATURES", None)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return dict(skipped="failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def best_of_runs(impl, layer_name, args):
    """Per-figure minimum over --runs child processes (a shared machine is noisy)."""
    best = {}
    for _ in range(args.runs):
        r = measure(impl, layer_name, args)
        if "skipped" in r:
            return r
        for key, value in r.items():
            if value is not None:
                best[key] = min(best.get(key, value), value)
            else:
                best.setdefault(key, None)
    return best


def fmt_rate(macs, t):
    return f"{macs / t / 1e9:.2f}" if t else "-"


def fmt_ms(t):
    return f"{t * 1e3:.1f}" if t else "-"


def fmt_mb(b):
    return f"{b / 2**20:.0f}" if b is not None else "-"


# ---------------------------------------------------------------------------- ceilings
def default_ceiling_path():
    from minadder.kernels.target import TARGET
    return os.path.join(HERE, "results", f"ceiling-{TARGET.name}.json")


def load_ceilings(choice, threads):
    """ceiling.py's record: read from the file ``choice`` (default: this CPU's file in
    results/), measured now (``measure``: ceiling.py in a child process, before any layer is
    timed) or none (``none``). (record or None, a line saying which)."""
    if choice == "none":
        return None, "no ceilings (--ceiling none)"
    if choice != "measure":
        return read_ceilings(choice or default_ceiling_path())
    with tempfile.TemporaryDirectory(prefix="minadder-ceiling-") as tmp:
        path = os.path.join(tmp, "ceiling.json")
        proc = subprocess.run([sys.executable, os.path.join(HERE, "ceiling.py"), "--threads", str(threads),
                               "--json", path], capture_output=True, text=True)
        print(proc.stdout)
        if not os.path.exists(path):
            return None, "no ceilings: ceiling.py failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1]
        record, note = read_ceilings(path)
    return record, note.replace(path, "ceiling.py, measured in this run")


def read_ceilings(path):
    """(record, note) from ceiling.py's JSON at ``path``; (None, why not) if it cannot be read."""
    if not os.path.exists(path):
        return None, (f"no ceilings: {os.path.relpath(path)} does not exist (run benchmarks/ceiling.py --json, "
                      "or give --ceiling measure)")
    try:
        with open(path) as f:
            record = json.load(f)
        record["rows"] = [r for r in record["rows"] if {"mix", "threads"} <= set(r)
                          and ({"width", "gterms"} <= set(r) or "gbytes" in r)]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return None, f"no ceilings: {path} is not ceiling.py's JSON ({e})"
    shown = os.path.relpath(path) if not os.path.relpath(path).startswith("..") else path
    note = f"ceilings from {shown} ({record.get('cpu', '?')}, {record.get('time', '?')})"
    if record.get("quick"):
        note += "; ceiling.py --quick: not a measurement"
    return record, note


def ceiling_rate(record, mix, impl, threads):
    """The ceiling in G terms/s of ``mix`` for ``impl``'s code at ``threads`` threads, or None:
    cpu-avx2 against the 256-bit loops, every other implementation against this CPU's own.
    "sign": the first of SIGN_MIXES measured for that code."""
    if record is None:
        return None
    if mix == "sign":
        return next(filter(None, (ceiling_rate(record, m, impl, threads) for m in SIGN_MIXES)), None)
    width = "avx2" if impl == "cpu-avx2" else "native"
    if mix == "sgemm":
        width = "sgemm"
    rows = [r for r in record["rows"] if r["mix"] == mix and r["threads"] == threads]
    found = [r for r in rows if r["width"] == width]
    if not found and width == "avx2":      # a 256-bit machine: its native code is the AVX2 code
        found = [r for r in rows if r["width"] == "native" and r.get("bits") == 256]
    return found[0]["gterms"] * 1e9 if found else None


def memory_rate(record, mix, threads, level):
    """ceiling.py's rate in bytes/s of ``mix`` ("read" or "copy") at ``threads`` threads on
    its largest arrays (``level`` "memory") or its smallest ("layer": as large as a layer's
    data), or None."""
    found = [r for r in (record or {}).get("rows", ()) if r["mix"] == mix and r["threads"] == threads
             and "gbytes" in r]
    if not found:
        return None
    pick = max if level == "memory" else min
    return pick(found, key=lambda r: r["bytes"])["gbytes"] * 1e9


def memory_seconds(read, written, record, threads, level):
    """The least time the memory (or a cache, ``level``) takes to read ``read`` and write
    ``written`` bytes at ceiling.py's rates: reading at the read rate, writing at what the
    copy's rate leaves for its writes (a copy of S bytes takes S / read + S / write). None
    without the rates."""
    read_rate, copy_rate = (memory_rate(record, mix, threads, level) for mix in ("read", "copy"))
    if not (read_rate and copy_rate):
        return None
    per_written = max(2 / copy_rate - 1 / read_rate, 1 / copy_rate)     # seconds per byte written
    return read / read_rate + written * per_written


#: each pass and the ceiling it is held to
BOUND_PASSES = (("fwd", "min+add"), ("dx", "clamp+fma"), ("dw", "sgemm"), ("dws", "sign"))


def memory_row(name, impl, layer, batch, record, threads):
    """[layer, impl, the MB each pass must move (fwd / dX / dW), then from the memory and
    from a cache of a layer's size: the most of its ceiling each pass (fwd, dX, dW against
    sgemm, dW sign) can reach when the data's time and the arithmetic's overlap perfectly,
    min(1, arithmetic at the ceiling / data time)]."""
    macs, moved = geometry(layer, batch)[3], traffic(layer, batch)
    row = [name, impl, " / ".join(f"{sum(moved[key]) / 2**20:.1f}" for key in ("fwd", "dx", "dw"))]
    for level in ("memory", "layer"):
        bounds = []
        for key, mix in BOUND_PASSES:
            ceiling = ceiling_rate(record, mix, impl, threads)
            data = memory_seconds(*moved[key], record, threads, level)
            bounds.append(f"{min(1.0, macs / ceiling / data):.2f}" if ceiling and data else "-")
        row.append(" / ".join(bounds))
    return row


def fraction_row(name, impl, result, macs, record, threads):
    """[layer, impl, fwd, dX, dW vs FMA, dW vs sgemm, dX sign, dW sign, dX and dW in one call,
    the forward's kernel, dX's kernel, dW's kernel vs sgemm] as fractions of their ceilings."""
    def part(key, mix):
        t, ceil = result.get(key), ceiling_rate(record, mix, impl, threads)
        return f"{macs / t / ceil:.2f}" if t and ceil else "-"
    if impl == "conv2d":                   # multiply-adds: all against the FMA ceiling
        return [name, impl, part("fwd", "fma"), part("dx", "fma"), part("dw", "fma"), part("dw", "sgemm")] + ["-"] * 6
    return [name, impl] + [part(key, CEILING_OF[key]) for key in ("fwd", "dx", "dw")] + \
        [part("dw", "sgemm"), part("dxs", CEILING_OF["dxs"]), part("dws", CEILING_OF["dws"]),
         both_part(result.get("bwd"), macs, record, impl, threads), part("fwk", "min+add"), part("dxk", "clamp+fma"),
         part("dwk", "sgemm")]


def both_part(t, macs, record, impl, threads):
    """The backward as a training step runs it, dX and dW in one call (G widened once for
    both, where the dX-only and dW-only calls each pay for it): the time dX and dW would
    take at their ceilings (clamp + FMA, sgemm) over the call's time."""
    dx_ceil, dw_ceil = ceiling_rate(record, "clamp+fma", impl, threads), ceiling_rate(record, "sgemm", impl, threads)
    return f"{(macs / dx_ceil + macs / dw_ceil) / t:.2f}" if t and dx_ceil and dw_ceil else "-"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--impl", nargs="*", default=[i for i in IMPLS if not i.endswith("-dw")], choices=IMPLS)
    ap.add_argument("--layers", nargs="*", default=None,
                    help="substrings of layer names to keep (default: all)")
    ap.add_argument("--batch", type=int, default=None, help="override the batch size (32)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per figure (the best is kept)")
    ap.add_argument("--runs", type=int, default=2,
                    help="child processes per figure; the best of their figures is kept")
    ap.add_argument("--numpy-max-gmac", type=float, default=0.6,
                    help="skip the NumPy reference on layers with more G MACs per pass")
    ap.add_argument("--max-temp-gb", type=float, default=1.0,
                    help="skip torch-unfold when its (C_out, K, L) temporary is larger")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="threads per child (Numba and torch)")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    ap.add_argument("--malloc-default", action="store_true",
                    help="time with glibc's malloc as it is (default: it keeps freed memory, as in training)")
    ap.add_argument("--ceiling", default=None, metavar="PATH|measure|none",
                    help="ceiling.py's JSON for the fraction-of-ceiling table (default: "
                         "results/ceiling-<cpu>.json if it exists); 'measure' runs ceiling.py first")
    ap.add_argument("--child-impl", help=argparse.SUPPRESS)
    ap.add_argument("--child-layer", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_impl:
        return child(args)

    impls = list(args.impl)
    from minadder.kernels.target import cpu_model
    print(f"CPU: {cpu_model()}; {args.threads} thread(s); batch {args.batch or 32}; "
          f"malloc {'default' if args.malloc_default else 'keeps freed memory during the timings'}")
    ceilings, ceiling_note = load_ceilings(args.ceiling, args.threads)
    if any(i.startswith("torch") or i == "conv2d" for i in impls):
        try:
            import torch  # noqa: F401
        except ImportError:
            print("torch is not installed: skipping the torch columns")
            impls = [i for i in impls if not (i.startswith("torch") or i == "conv2d")]
    names = [n for n in LAYERS if not args.layers or any(s in n for s in args.layers)]

    header = ["layer", "impl", "fwd GMAC/s", "dX GMAC/s", "dW GMAC/s", "dW sign GMAC/s", "fwd ms", "f+b ms",
              "peak MB", "im2col MB", "f+b vs cpu", "fwd vs conv2d"]
    rows, fractions, bounds = [], [], []
    for name in names:
        _, k, length, macs = geometry(LAYERS[name], args.batch)
        im2col_bytes = k * length * 4
        results = {impl: best_of_runs(impl, name, args) for impl in impls}
        cpu_fb = results.get("cpu", {}).get("fb")
        conv_fwd = results.get("conv2d", {}).get("fwd")
        for impl in impls:
            r = results[impl]
            if "skipped" in r:
                rows.append([name, impl, "skipped: " + r["skipped"]] + [""] * (len(header) - 3))
                continue
            fb = r.get("fb")
            ratio = f"{fb / cpu_fb:.1f}x" if fb and cpu_fb else "-"
            if impl == "torch-cdist" and cpu_fb:
                ratio = f"fwd {r['fwd'] / cpu_fb:.1f}x"
            vs_conv = f"{conv_fwd / r['fwd']:.2f}x" if conv_fwd and r.get("fwd") and impl != "conv2d" else "-"
            rows.append([name, impl, fmt_rate(macs, r.get("fwd")), fmt_rate(macs, r.get("dx")),
                         fmt_rate(macs, r.get("dw")), fmt_rate(macs, r.get("dws")), fmt_ms(r.get("fwd")), fmt_ms(fb),
                         fmt_mb(r.get("peak")), fmt_mb(im2col_bytes), ratio, vs_conv])
            if impl in ("cpu", "cpu-avx2", "cpu-blas-dw", "cpu-numba-dw", "conv2d"):
                fractions.append(fraction_row(name, impl, r, macs, ceilings, args.threads))
            if impl in ("cpu", "cpu-avx2"):
                bounds.append(memory_row(name, impl, LAYERS[name], args.batch, ceilings, args.threads))
        print_rows(header, rows[-len(impls):], args.markdown, first=(name == names[0]))
    print()
    print("f+b vs cpu: (this implementation's forward+backward time) / (cpu's); for torch-cdist, "
          "its forward alone / cpu's forward+backward. fwd vs conv2d: the forward's MAC rate / "
          "conv2d's. conv2d's dX and dW columns are half its backward each.")
    print_fractions(fractions, args.markdown, ceiling_note)
    print_bounds(bounds, args.markdown)


def print_fractions(rows, markdown, note):
    """The second table: each pass's rate over the ceiling of its instruction mix."""
    if not rows:
        return
    header = ["layer", "impl", "fwd / min+add", "dX / clamp+fma", "dW / FMA", "dW / sgemm",
              "dX sign / sgn+fma", "dW sign / sgn+fma", "dX + dW in one call", "fwd kernel", "dX kernel",
              "dW kernel / sgemm"]
    print(f"\nFraction of this machine's ceiling ({note}; same vector width and threads):")
    print_table(header, rows, [NAME_WIDTH, 13, 15, 16, 10, 12, 22, 22, 21, 12, 11, 18], markdown)
    print("conv2d: its forward and backward halves against the FMA ceiling (multiply-adds). dX + dW in "
          "one call: the full-precision backward as a step runs it (G widened once for both), against "
          "dX's and dW's ceilings (clamp + FMA, sgemm) together. fwd kernel: the cpu forward given "
          "its input's frame (which the forward otherwise writes on the way). dX kernel, dW kernel: the cpu "
          "kernels alone, G widened before (layers that read it on wide positions). dX sign, dW sign: against "
          "sgn+fma (a subtract, vfixupimm, a multiply-add) where the code has 512-bit vectors, select + add "
          "(the compares) where it has not.")


def print_bounds(rows, markdown):
    """The third table: what the memory allows each pass (memory_row)."""
    if not rows or all(r[3].startswith("-") for r in rows):
        return
    header = ["layer", "impl", "MB fwd / dX / dW", "from memory: fwd / dX / dW / dW sign",
              "from a layer-size cache"]
    print("\nThe most of its ceiling each pass can reach with the bytes it must move (X's rows that "
          "windows reach, G or Y, dX) at ceiling.py's rates, the data's time and the arithmetic's "
          "overlapping perfectly (dW against sgemm); 1.00: the arithmetic bounds it, under 1: the data:")
    print_table(header, rows, [NAME_WIDTH, 11, 20, 39, 25], markdown)


def print_table(header, rows, widths, markdown):
    """A whole table as Markdown, or as text in columns ``widths`` characters wide."""
    if markdown:
        print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
        for r in rows:
            print("| " + " | ".join(r) + " |")
    else:
        for r in [header] + rows:
            print("".join(str(c).ljust(wd) for c, wd in zip(r, widths)).rstrip())


def print_rows(header, rows, markdown, first):
    if markdown:
        if first:
            print("| " + " | ".join(header) + " |")
            print("|" + "---|" * len(header))
        for r in rows:
            if r[2].startswith("skipped"):
                print(f"| {r[0]} | {r[1]} | {r[2]} |" + " |" * (len(header) - 3))
            else:
                print("| " + " | ".join(r) + " |")
    else:
        widths = [NAME_WIDTH, 13, 11, 10, 10, 15, 9, 9, 8, 10, 11, 10]
        if first:
            print("".join(h.ljust(wd) for h, wd in zip(header, widths)))
        for r in rows:
            if r[2].startswith("skipped"):
                print(r[0].ljust(widths[0]) + r[1].ljust(widths[1]) + r[2])
            else:
                print("".join(str(c).ljust(wd) for c, wd in zip(r, widths)))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
