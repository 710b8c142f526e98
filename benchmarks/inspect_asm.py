"""Print the instruction mix of the innermost vector loops of the cpu kernels, and their
stack traffic (spills).

    python benchmarks/inspect_asm.py                          # this machine's target
    NUMBA_CPU_NAME=haswell python benchmarks/inspect_asm.py   # the AVX2 code (16 ymm registers)
    python benchmarks/inspect_asm.py --listing                # also the hottest loop's listing

Numba refuses to show the assembly of code loaded from its on-disk cache, so this script
compiles into a fresh temporary cache directory. A loop is a block that ends in a
backward jump to its own label; for each kernel and inner helper the loop with the most
vector instructions among the innermost ones (loops holding no loop of their own) is
shown, with its count of stack accesses (memory operands on %rsp or %rbp, in the AT&T
syntax Numba prints: ``64(%rsp)``): a register block that does not fit the target's
registers shows up there as spills and reloads. float32 versions.

The loop finder (``loops``, ``innermost``, ``mix``) is also used by ceiling.py; the
kernels are imported only when this script runs.
"""
import collections
import os
import re
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: the parallel kernels and the inner helpers that hold their hot loops, by module name
FUNCTIONS = (
    ("naive", ("_forward_loops", "_grad_input_loops", "_grad_weight_loops")),
    ("forward", ("_forward_wide_kernel", "_framed_forward_kernel", "_wide_rows", "_forward_packed_kernel", "_min_sums_all",
                 "_min_sums_1")),
    ("positions", ("field_row",)),
    ("grad_input", ("_grad_input_wide_kernel", "_grad_input_packed_kernel", "_dx_row_full", "_dx_row_sign")),
    ("grad_weight", ("_grad_weight_kernel", "_grad_weight_images_kernel", "_wide_columns")),
)
#: a memory operand on the stack: AT&T syntax (what Numba prints) or Intel syntax
STACK = re.compile(r"\(%(rsp|rbp)[^)]*\)|\[(rsp|rbp)[^\]]*\]")


def loops(asm, max_len=200):
    """Blocks of the listing that end with a jump back to their own first label."""
    lines = asm.splitlines()
    labels = {line.rstrip(":"): i for i, line in enumerate(lines) if re.match(r"^\.LBB\d+_\d+:", line)}
    for i, line in enumerate(lines):
        m = re.match(r"\s+j\w+\s+(\.LBB\d+_\d+)", line)
        if m and m.group(1) in labels and 0 < i - labels[m.group(1)] < max_len:
            yield lines[labels[m.group(1)]:i + 1]


def innermost(body):
    """Whether a loop body holds no loop of its own (no jump back to a label inside it but its last)."""
    labels = {line.rstrip(":") for line in body if line.startswith(".LBB")}
    jumps = (re.match(r"\s+j\w+\s+(\.LBB\d+_\d+)", line) for line in body[:-1])
    return not any(j and j.group(1) in labels for j in jumps)


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
    """(vector instructions, stack accesses, mix, body) of the innermost loop with the most vector work."""
    best = None
    for body in filter(innermost, loops(asm)):
        c = mix(body)
        vec = sum(v for k, v in c.items() if k.endswith(("zmm", "ymm")))
        stack = sum(1 for line in body if STACK.search(line))
        if best is None or vec > best[0]:
            best = (vec, stack, c, body)
    return best


def run_kernels(cpu, naive, Window):
    """Both rungs, both modes, stride 1 (wide positions, rows long enough for dW's product)
    and stride 2 (the frame split by parity); 2 images (the frame written first) and 64 (the forward
    that frames image by image)."""
    import numpy as np

    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    for n in (2, 64):
        x = rng.standard_normal((n, 3, 20, 20)).astype(np.float32)
        for module in (cpu, naive):
            for stride in (1, 2):
                y, saved = module.adder2d_forward(x, w, Window.of(x.shape, w.shape, stride, 1))
                module.adder2d_backward(y, saved, "full")
                module.adder2d_backward(y, saved, "sign")


def main():
    # Numba shows no assembly for code loaded from its on-disk cache: compile afresh
    os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="minadder-asm-")
    sys.path.insert(0, ROOT)
    import importlib

    import minadder
    minadder.configure()   # before the kernels are defined (imported): the CPU features they compile for
    from minadder.kernels import cpu
    from minadder.kernels.cpu import forward, naive
    from minadder.kernels.geometry import Window
    from minadder.kernels.target import TARGET

    run_kernels(cpu, naive, Window)
    print(f"target: {TARGET.name} ({TARGET.machine}, {TARGET.registers} x {TARGET.vector_bits}-bit "
          f"registers, blocking {TARGET.blocking!r}, MR = {forward.MR})")
    for module, name in ((m, n) for m, names in FUNCTIONS for n in names):
        fn = getattr(importlib.import_module(f"minadder.kernels.cpu.{module}"), name)
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
