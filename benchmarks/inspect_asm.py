"""Print the instruction mix of the innermost vector loops of the cpu kernels, and their
stack traffic (spills).

    python benchmarks/inspect_asm.py                          # this machine's target
    NUMBA_CPU_NAME=haswell python benchmarks/inspect_asm.py   # the AVX2 code (16 ymm registers)
    python benchmarks/inspect_asm.py --listing                # also the hottest loop's listing

Numba refuses to show the assembly of code loaded from its on-disk cache, so this script
compiles into a fresh temporary cache directory. A loop is a block that ends in a
backward jump to its own label; for each kernel and inner helper the loop with the most
vector instructions is shown, with its count of stack accesses ([rsp ...] or [rbp ...]
memory operands): a register block that does not fit the target's registers shows up
there as spills and reloads. float32 versions.
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
from minadder.kernels.target import TARGET  # noqa: E402

#: the parallel kernels and the inner helpers that hold their hot loops
FUNCTIONS = ("_forward_wide_kernel", "_forward_packed_kernel", "_min_sums_4x4", "_min_sums_2x4",
             "_min_sums_1", "_copy_field_row",
             "_grad_input_wide_kernel", "_grad_input_packed_kernel", "_dx_row_full", "_dx_row_sign",
             "_add_field_row",
             "_grad_weight_kernel", "_grad_weight_wide_kernel", "_dot_4x4", "_dot_4x2", "_wide_columns")
STACK = re.compile(r"\[(rsp|rbp)[^\]]*\]")


def loops(asm, max_len=200):
    """Blocks of the listing that end with a jump back to their own first label."""
    lines = asm.splitlines()
    labels = {line.rstrip(":"): i for i, line in enumerate(lines) if re.match(r"^\.LBB\d+_\d+:", line)}
    for i, line in enumerate(lines):
        m = re.match(r"\s+j\w+\s+(\.LBB\d+_\d+)", line)
        if m and m.group(1) in labels and 0 < i - labels[m.group(1)] < max_len:
            yield lines[labels[m.group(1)]:i + 1]


def mix(body):
    """Counter of 'mnemonic register-kind' over a loop body."""
    counts = collections.Counter()
    for line in body:
        m = re.match(r"\s+(\w+)\s+(.*)", line)
        if m:
            reg = next((r for r in ("zmm", "ymm", "xmm") if r in m.group(2)), "")
            counts[m.group(1) + (" " + reg if reg else "")] += 1
    return counts


def hottest(asm):
    """(vector instructions, stack accesses, mix, body) of the loop with the most vector work."""
    best = None
    for body in loops(asm):
        c = mix(body)
        vec = sum(v for k, v in c.items() if k.endswith(("zmm", "ymm")))
        stack = sum(1 for line in body if STACK.search(line))
        if best is None or vec > best[0]:
            best = (vec, stack, c, body)
    return best


def run_kernels():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    y, cache = contract.adder2d_forward(cpu, x, w, 1, 1)
    contract.adder2d_backward(cpu, y, cache, "full")
    contract.adder2d_backward(cpu, y, cache, "sign")
    cpu.col2im(cpu.im2col(x, 3, 3, 1, 1), x.shape, 3, 3, 1, 1)


def main():
    run_kernels()
    print(f"target: {TARGET.name} ({TARGET.machine}, {TARGET.registers} x {TARGET.vector_bits}-bit "
          f"registers, blocking {TARGET.blocking!r}, MR = {cpu.MR})")
    for name in FUNCTIONS:
        fn = getattr(cpu, name)
        if not fn.signatures:
            print(f"{name}: not compiled for this target (not used here)")
            continue
        found = hottest(fn.overloads[fn.signatures[0]].library.get_asm_str())
        if found is None:
            print(f"{name}: no loop found")
            continue
        vec, stack, c, body = found
        print(f"{name}: hottest loop {sum(c.values())} instructions, {vec} vector, "
              f"{stack} stack accesses: " + ", ".join(f"{k} x{v}" for k, v in c.most_common(8)))
        if "--listing" in sys.argv and name.startswith("_min_sums"):
            print("\n".join(body))


if __name__ == "__main__":
    main()
