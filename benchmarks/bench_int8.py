"""Inference speed: minadder's float32 AdderNet, the same network in 8 bits (minadder.int8),
and PyTorch's float32 CNN of the same shapes, in one run on one machine (issue 28).

For each network (ResNet-20 and LeNet-5-BN by default) and batch size, three rows of
images per second, forward passes only (no data loading, no gradient):

  minadder float32 AdderNet   models.<net>(kind="adder"), eval mode, no_grad, cpu kernels
  minadder int8 AdderNet      minadder.int8.quantize(...) of that model: its adder layers as
                              sums of absolute byte differences (kernels/cpu/sad.py)
  torch float32 CNN           minadder.torch.models.<net>(kind="cnn"), eval, inference_mode
                              (oneDNN convolutions)

and a second table with the integer SAD kernel alone on each adder layer's shape: G byte
terms/s (one term = one |a - b| of a byte pair) and the fraction of its ceiling, the
register-resident vpsadbw loop of ceiling.py at the same thread count (read from
results/ceiling-<cpu>.json; run ``python benchmarks/ceiling.py --json`` first).

Weights are random (speed does not depend on them); the int8 network is calibrated on two
random batches. Each figure is the best of --repeat timed calls after one warm-up call.

    python benchmarks/bench_int8.py                                  # all cores
    python benchmarks/bench_int8.py --threads 1 --batch 64
    python benchmarks/bench_int8.py --json results/int8-rocketlake.json
"""
import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import minadder as ma  # noqa: E402

NETWORKS = {"resnet20": (3, 32), "lenet5_bn": (1, 32)}


def best_time(fn, repeat):
    """The fastest of ``repeat`` calls of fn, after one untimed call."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def lscpu_line():
    from ceiling import lscpu
    model, flags = lscpu()
    return f"{model}; " + ", ".join(f"{f} {'yes' if on else 'no'}" for f, on in flags.items())


def sad_ceiling(threads):
    """The SAD ceiling (G terms/s) at ``threads`` threads from ceiling.py's JSON for this CPU, or None."""
    from minadder.kernels.target import TARGET
    path = os.path.join(HERE, "results", f"ceiling-{TARGET.name}.json")
    try:
        with open(path) as f:
            rows = json.load(f)["rows"]
    except (OSError, ValueError, KeyError):
        return None, f"no SAD ceiling: {os.path.relpath(path)} missing or unreadable"
    rates = [r["gterms"] for r in rows if r.get("mix") == "sad" and r.get("threads") == threads
             and r.get("width") == "native"]
    if not rates:
        return None, f"no SAD ceiling at {threads} threads in {os.path.relpath(path)} (rerun ceiling.py --json)"
    return max(rates), f"SAD ceiling from {os.path.relpath(path)}"


def networks(name, batch, seed=0):
    """(float AdderNet, int8 network, torch CNN or None, an input batch) of network ``name``."""
    from minadder import int8, models
    channels, size = NETWORKS[name]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, channels, size, size)).astype(np.float32)
    ma.manual_seed(seed)
    model = models.build_model(name, kind="adder")
    model.eval()
    quantized = int8.quantize(model, [rng.standard_normal(x.shape).astype(np.float32) for _ in range(2)])
    try:
        import torch
        from minadder.torch import models as torch_models
        cnn = torch_models.MODELS[name](kind="cnn").eval()
    except ImportError:
        cnn = None
    return model, quantized, cnn, x


def time_network(name, batch, repeat):
    """The three rows' images/s for one network and batch."""
    model, quantized, cnn, x = networks(name, batch)
    with ma.no_grad():
        float_s = best_time(lambda: model(ma.Tensor(x)), repeat)
    int8_s = best_time(lambda: quantized(x), repeat)
    rows = {"minadder float32 AdderNet": batch / float_s, "minadder int8 AdderNet": batch / int8_s}
    if cnn is not None:
        import torch
        tx = torch.from_numpy(x)
        with torch.inference_mode():
            rows["torch float32 CNN"] = batch / best_time(lambda: cnn(tx), repeat)
    return rows


def sad_layers(name, batch, repeat):
    """(layer, G terms/s) of the SAD kernel alone on each adder layer of ``name`` at ``batch``."""
    from minadder import models
    from minadder.int8 import kernel
    from minadder.kernels.geometry import Window
    channels, size = NETWORKS[name]
    model = models.build_model(name, kind="adder")
    shapes, seen = [], set()
    for layer_name, layer in model.named_modules():
        if isinstance(layer, ma.nn.Adder2d):
            shapes.append((layer_name, layer.weight.shape, layer.stride, layer.padding))
    # the input size of each layer: trace one image through with hooks
    sizes = {}
    handles = [m.register_forward_hook(lambda mod, inp, out, n=n: sizes.__setitem__(n, inp[0].shape[1:]))
               for n, m in model.named_modules() if isinstance(m, ma.nn.Adder2d)]
    model.eval()
    with ma.no_grad():
        model(ma.Tensor(np.zeros((1, channels, size, size), np.float32)))
    for h in handles:
        h.remove()
    rng = np.random.default_rng(1)
    out = []
    for layer_name, wshape, stride, padding in shapes:
        key = (tuple(sizes[layer_name]), tuple(wshape), stride, padding)
        if key in seen:
            continue
        seen.add(key)
        xq = rng.integers(0, 256, (batch,) + tuple(sizes[layer_name]), dtype=np.uint8)
        wq = rng.integers(0, 256, wshape, dtype=np.uint8)
        win = Window.of(xq.shape, wshape, stride, padding)
        seconds = best_time(lambda: kernel.sad2d(xq, wq, stride, padding, 128), repeat)
        terms = win.n * win.c_out * win.plane * win.k
        out.append((f"{layer_name} {wshape[1]}->{wshape[0]} k{wshape[2]} s{stride} {sizes[layer_name][1]}x"
                    f"{sizes[layer_name][2]}", terms / seconds / 1e9))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    ap.add_argument("--batch", nargs="+", type=int, default=[64, 256])
    ap.add_argument("--threads", type=int, default=None, help="Numba's and torch's threads (default: all cores)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", default=None, help="also write the results as JSON to this path")
    args = ap.parse_args()

    import numba
    threads = min(args.threads or os.cpu_count(), numba.config.NUMBA_NUM_THREADS)
    ma.configure(threads=threads)
    try:
        import torch
        torch.set_num_threads(threads)
    except ImportError:
        pass
    from minadder.int8 import kernel
    from minadder.kernels.cpu import sad
    print(f"CPU: {lscpu_line()}")
    print(f"{threads} thread(s); integer kernel {kernel.name()} ({sad.variant()})")
    record = {"cpu": lscpu_line(), "threads": threads, "sad_variant": sad.variant(), "rows": [], "sad": []}

    print(f"\n{'network':<10} {'batch':>5}  {'row':<28} {'img/s':>9}  {'vs float32':>10}  {'vs torch CNN':>12}")
    for name in args.networks:
        for batch in args.batch:
            rows = time_network(name, batch, args.repeat)
            base, cnn = rows["minadder float32 AdderNet"], rows.get("torch float32 CNN")
            for row, rate in rows.items():
                versus_cnn = f"{rate / cnn:.2f}x" if cnn else "-"
                print(f"{name:<10} {batch:>5}  {row:<28} {rate:>9,.0f}  {rate / base:>9.2f}x  {versus_cnn:>12}")
                record["rows"].append({"network": name, "batch": batch, "row": row, "images_per_s": rate})

    ceiling, note = sad_ceiling(threads)
    print(f"\nThe SAD kernel alone, batch {args.batch[0]} ({note}):")
    print(f"{'layer':<44} {'G terms/s':>10} {'of ceiling':>11}")
    for name in args.networks:
        for layer, rate in sad_layers(name, args.batch[0], args.repeat):
            fraction = f"{rate / ceiling:.2f}" if ceiling else "-"
            print(f"{name + ' ' + layer:<44} {rate:>10.1f} {fraction:>11}")
            record["sad"].append({"network": name, "layer": layer, "gterms": rate,
                                  "fraction_of_ceiling": rate / ceiling if ceiling else None})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
