"""Print the instruction mix of the innermost vector loops of the cpu kernels.

    python benchmarks/inspect_asm.py            # a summary per kernel
    python benchmarks/inspect_asm.py --listing  # also the forward kernel's hot loop

Numba refuses to show the assembly of code loaded from its on-disk cache, so this script
compiles into a fresh temporary cache directory. A loop is a block that ends in a
backward jump to its own label; the two with the most zmm (512-bit) instructions per
instruction are shown for each kernel (float32 versions).
"""
import collections
import os
import re
import sys
import tempfile

os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="minadder-asm-")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

from minadder.kernels import contract, cpu  # noqa: E402

KERNELS = ("_adder_forward_kernel", "_grad_input_kernel", "_grad_weight_sign_kernel",
           "_im2col_kernel", "_col2im_kernel")


def loops(asm, max_len=120):
    """Blocks of the listing that end with a jump back to their own first label."""
    lines = asm.splitlines()
    labels = {line.rstrip(":"): i for i, line in enumerate(lines) if re.match(r"^\.LBB\d+_\d+:", line)}
    for i, line in enumerate(lines):
        m = re.match(r"\s+j\w+\s+(\.LBB\d+_\d+)", line)
        if m and m.group(1) in labels and 0 < i - labels[m.group(1)] < max_len:
            yield lines[labels[m.group(1)]:i + 1]


def mix(body):
    counts = collections.Counter()
    for line in body:
        m = re.match(r"\s+(\w+)\s+(.*)", line)
        if m:
            reg = next((r for r in ("zmm", "ymm", "xmm") if r in m.group(2)), "")
            counts[m.group(1) + (" " + reg if reg else "")] += 1
    return counts


def main():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    y, cache = contract.adder2d_forward(cpu, x, w, 1, 1)
    contract.adder2d_backward(cpu, y, cache, "full")
    contract.adder2d_backward(cpu, y, cache, "sign")
    for name in KERNELS:
        kernel = getattr(cpu, name)
        asm = kernel.overloads[kernel.signatures[0]].library.get_asm_str()
        ranked = []
        for body in loops(asm):
            c = mix(body)
            n = sum(c.values())
            ranked.append((sum(v for k, v in c.items() if k.endswith("zmm")) / n, n, c, body))
        ranked.sort(key=lambda r: -r[0])
        print(f"{name}:")
        for share, n, c, _ in ranked[:2]:
            print(f"  loop of {n} instructions ({share:.0%} zmm): "
                  + ", ".join(f"{k} x{v}" for k, v in c.most_common()))
        if name == "_adder_forward_kernel" and "--listing" in sys.argv and ranked:
            print("\n".join(ranked[0][3]))


if __name__ == "__main__":
    main()
