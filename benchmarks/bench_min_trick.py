"""Does |x - w| = x + w - 2 min(x, w) pay? The forward l1 sum written both ways.

Both kernels have the register block of kernels/cpu/forward.py (4 output channels x 4 rows of
X_col per pass over a 256-column tile); they differ only in the inner statement:

  abs:  acc += |x - w|        vsubps + vandps (abs) + vaddps: 3 instructions per adder-MAC
  min:  acc += min(x, w)      vminps + vaddps: 2 (colsum[l] + wsum[t] is added once at the end)

    python benchmarks/bench_min_trick.py

It prints G adder-MAC/s of each on layers of ResNet-20 and VGG-small (batch 32), timed
alternately in one process (best of --repeat), so that the ratio survives a busy machine.
"""
import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import minadder  # noqa: E402

minadder.configure()   # before the kernels below are defined: the CPU features they compile for
from numba import njit, prange  # noqa: E402

from minadder.kernels.reference import im2col  # noqa: E402

TT, TL = 4, 256


@njit(parallel=True, fastmath=True, cache=True)
def l1_abs(cols, weight, out):
    """out[t, l] = -sum_k |X[k, l] - W[t, k]|, with an abs per term."""
    n_k, n_l = cols.shape
    n_t = weight.shape[0]
    bt, bl = n_t // TT, (n_l + TL - 1) // TL
    for tile in prange(bt * bl):
        t0, l0 = (tile % bt) * TT, (tile // bt) * TL
        width = min(TL, n_l - l0)
        acc = np.zeros((TT, TL), dtype=out.dtype)
        a0, a1, a2, a3 = acc[0], acc[1], acc[2], acc[3]
        for k in range(0, n_k - 3, 4):
            w00, w01, w02, w03 = weight[t0, k], weight[t0, k + 1], weight[t0, k + 2], weight[t0, k + 3]
            w10, w11, w12, w13 = weight[t0 + 1, k], weight[t0 + 1, k + 1], weight[t0 + 1, k + 2], weight[t0 + 1, k + 3]
            w20, w21, w22, w23 = weight[t0 + 2, k], weight[t0 + 2, k + 1], weight[t0 + 2, k + 2], weight[t0 + 2, k + 3]
            w30, w31, w32, w33 = weight[t0 + 3, k], weight[t0 + 3, k + 1], weight[t0 + 3, k + 2], weight[t0 + 3, k + 3]
            r0, r1 = cols[k, l0:l0 + width], cols[k + 1, l0:l0 + width]
            r2, r3 = cols[k + 2, l0:l0 + width], cols[k + 3, l0:l0 + width]
            for j in range(width):
                x0, x1, x2, x3 = r0[j], r1[j], r2[j], r3[j]
                a0[j] += (abs(x0 - w00) + abs(x1 - w01)) + (abs(x2 - w02) + abs(x3 - w03))
                a1[j] += (abs(x0 - w10) + abs(x1 - w11)) + (abs(x2 - w12) + abs(x3 - w13))
                a2[j] += (abs(x0 - w20) + abs(x1 - w21)) + (abs(x2 - w22) + abs(x3 - w23))
                a3[j] += (abs(x0 - w30) + abs(x1 - w31)) + (abs(x2 - w32) + abs(x3 - w33))
        for i in range(TT):
            for j in range(width):
                out[t0 + i, l0 + j] = -acc[i, j]


@njit(parallel=True, fastmath=True, cache=True)
def l1_min(cols, weight, colsum, wsum, out):
    """out[t, l] = 2 sum_k min(X[k, l], W[t, k]) - colsum[l] - wsum[t]: the same sum."""
    n_k, n_l = cols.shape
    n_t = weight.shape[0]
    bt, bl = n_t // TT, (n_l + TL - 1) // TL
    for tile in prange(bt * bl):
        t0, l0 = (tile % bt) * TT, (tile // bt) * TL
        width = min(TL, n_l - l0)
        acc = np.zeros((TT, TL), dtype=out.dtype)
        a0, a1, a2, a3 = acc[0], acc[1], acc[2], acc[3]
        for k in range(0, n_k - 3, 4):
            w00, w01, w02, w03 = weight[t0, k], weight[t0, k + 1], weight[t0, k + 2], weight[t0, k + 3]
            w10, w11, w12, w13 = weight[t0 + 1, k], weight[t0 + 1, k + 1], weight[t0 + 1, k + 2], weight[t0 + 1, k + 3]
            w20, w21, w22, w23 = weight[t0 + 2, k], weight[t0 + 2, k + 1], weight[t0 + 2, k + 2], weight[t0 + 2, k + 3]
            w30, w31, w32, w33 = weight[t0 + 3, k], weight[t0 + 3, k + 1], weight[t0 + 3, k + 2], weight[t0 + 3, k + 3]
            r0, r1 = cols[k, l0:l0 + width], cols[k + 1, l0:l0 + width]
            r2, r3 = cols[k + 2, l0:l0 + width], cols[k + 3, l0:l0 + width]
            for j in range(width):
                x0, x1, x2, x3 = r0[j], r1[j], r2[j], r3[j]
                a0[j] += (min(x0, w00) + min(x1, w01)) + (min(x2, w02) + min(x3, w03))
                a1[j] += (min(x0, w10) + min(x1, w11)) + (min(x2, w12) + min(x3, w13))
                a2[j] += (min(x0, w20) + min(x1, w21)) + (min(x2, w22) + min(x3, w23))
                a3[j] += (min(x0, w30) + min(x1, w31)) + (min(x2, w32) + min(x3, w33))
        for i in range(TT):
            for j in range(width):
                out[t0 + i, l0 + j] = (acc[i, j] + acc[i, j]) - colsum[l0 + j] - wsum[t0 + i]


LAYERS = {  # (N, C_in, H, C_out): 3x3, padding 1; C_in*9 and C_out multiples of 4
    "resnet20 16ch 32x32": (32, 16, 32, 16),
    "resnet20 64ch 8x8": (32, 64, 8, 64),
    "vgg-small 256ch 16x16": (32, 256, 16, 256),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'layer':24} {'abs GMAC/s':>11} {'min GMAC/s':>11} {'min/abs':>8} {'max |diff|':>11}")
    for name, (n, c, h, c_out) in LAYERS.items():
        x = rng.standard_normal((n, c, h, h)).astype(np.float32)
        w = rng.standard_normal((c_out, c * 9)).astype(np.float32)
        cols = im2col(x, 3, 3, 1, 1)
        out_a, out_m = (np.empty((c_out, cols.shape[1]), np.float32) for _ in range(2))
        colsum, wsum = cols.sum(axis=0), w.sum(axis=1)
        runs = {"abs": lambda: l1_abs(cols, w, out_a), "min": lambda: l1_min(cols, w, colsum, wsum, out_m)}
        best = {}
        for _ in range(args.repeat):
            for key, fn in runs.items():
                t0 = time.perf_counter()
                fn()
                best[key] = min(best.get(key, np.inf), time.perf_counter() - t0)
        macs = c_out * cols.shape[0] * cols.shape[1]
        diff = float(np.abs(out_a - out_m).max())
        print(f"{name:24} {macs / best['abs'] / 1e9:11.1f} {macs / best['min'] / 1e9:11.1f} "
              f"{best['abs'] / best['min']:8.2f} {diff:11.2e}")


if __name__ == "__main__":
    main()
