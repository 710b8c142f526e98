"""The machine's ceilings: how many terms per second each instruction mix of the cpu kernels
can reach at all on this CPU, one thread and all threads, with nothing but that mix to do.

    python benchmarks/ceiling.py                       # this CPU's widest vectors, and the AVX2 code
    python benchmarks/ceiling.py --json                # also writes results/ceiling-<cpu>.json
    python benchmarks/ceiling.py --quick               # a few milliseconds per figure: checks, no result

A kernel's speed in G terms/s means little alone: "fast" depends on the CPU. Divided by
the ceiling of its own instruction mix it says how much of this machine the kernel uses
(bench_adder_layers.py prints that fraction). The mixes, one term each (one lane of one
vector instruction group):

    mix         term                          the kernel it bounds
    fma         acc = acc * a + b             the yardstick; dW in full precision (Eq. 5)
    min+add     acc = min(acc, w) + x         the forward: |x - w| = x + w - 2 min(x, w)  (Eq. 2)
    clamp+fma   acc = min(max(acc, lo), hi) * g + b
                                              dX in full precision: HardTanh (Eq. 6) as a clip
                                              and a multiply-add (kernels/cpu/grad_input.py)
    select+add  acc = acc + (g if acc < w else -g)
                                              dX and dW in sign mode: g * sgn(x - w) (Eq. 4)
                                              as a compare, a blend and an add (the AVX2 code)
    sgn+fma     acc = acc + g * sgn(acc - w)  the same with 512-bit vectors, as the kernels
                                              compute it there: a subtract, vfixupimm (sgn by
                                              the class of each number) and a multiply-add
    sad         acc = acc + psadbw(acc, w)    the integer adder layer (kernels/cpu/sad.py):
                                              one term is one |a - b| of one byte pair, 64
                                              per vpsadbw with AVX-512BW, 32 with AVX2, and
                                              one vpaddq per vpsadbw adds it up (Eq. 2 in
                                              integers)

How the loops keep everything in registers. Each loop updates CHAINS independent vector
accumulators (enough to cover an instruction's latency times its throughput: 16 with 32
vector registers, 12 with 16), held in a small array ``acc`` of CHAINS x LANES floats
whose length is a compile-time constant: LLVM vectorises the inner loop over it, unrolls it
completely and then keeps its CHAINS vectors in registers across the outer loop
(``reps`` times). The constants are loaded once, before the loop; the term's input is the
accumulator itself, so nothing is hoisted out and every instruction stays in the loop.
No data are read from memory inside the loop at all. The sad loop is written in LLVM IR
(a Numba intrinsic, as the kernel's blocks are): CHAINS <8 x i64> (or <4 x i64>)
accumulators as loop values, each one's bytes fed back into its own psadbw with w, a
vector loaded once before the loop. It runs where sad.py's vector code runs (the CPU has
the instruction and Numba compiles for it), at that code's width, and is left out elsewhere.
The sgn+fma loop is written so too (vfixupimm has no plain-Numba spelling), for 512-bit
code only: with 256-bit vectors the sign kernels compare and select.

How each loop is checked. After compiling, the script reads the function's assembly
(Numba's ``inspect_asm``), finds the loop with the most vector instructions (the loop
finder of inspect_asm.py) and asserts that it holds exactly CHAINS of each claimed
instruction on the claimed registers (zmm for 512-bit, ymm for 256-bit), no other vector
instruction and no memory operand (so no stack spill); the counts are printed beside
each rate. The all-threads figure runs the same loop on every thread (Numba's prange,
one independent accumulator array per thread), and its compiled code is checked too.

The 512-bit code is compiled for this machine through ``minadder.configure()``, as the cpu
backend is; the 256-bit code in a child process compiled for Haswell
(``NUMBA_CPU_NAME=haswell``, as inspect_asm.py and tests/test_kernels_target.py do).
The "sgemm" rows time NumPy's float32 matmul on a large square (n^3 terms), the yardstick
of a full-precision dW done through BLAS.

The memory's rates. A pass whose arithmetic is light (a 1x1 layer's K = C_in terms per
number it reads) cannot outrun the memory however good its loop. Two parallel Numba passes
give the rates a kernel's own streams meet: "read" sums an array (every byte read once),
"copy" writes one array from another with ordinary stores (its rate counts the bytes read
and the bytes written; the CPU also reads each written line before writing it, which the
rate includes). Each runs on arrays far larger than the caches (MEMORY_BYTES: the
memory's rate) and on arrays as large as a layer's data (LAYER_BYTES: a large L3's rate,
where there is one). bench_adder_layers.py turns them into the most of its ceiling each
pass could reach with the bytes it must move.
"""
import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import numpy as np  # noqa: E402

import minadder  # noqa: E402

minadder.configure()   # before any function is defined with njit: the CPU features they compile for
import numba  # noqa: E402
from numba import njit, prange, typeof  # noqa: E402

from llvmlite import ir  # noqa: E402
from numba import types  # noqa: E402
from numba.core import cgutils  # noqa: E402
from numba.extending import intrinsic  # noqa: E402

from inspect_asm import innermost, loops, mix  # noqa: E402
from minadder.kernels.cpu import sad as int8_sad  # noqa: E402
from minadder.kernels.cpu.register_block import SGN_TABLE, _sgn as sgn  # noqa: E402
from minadder.kernels.cpu.sad_intrinsics import byte_vector, lane_vector, load_bytes, psad  # noqa: E402
from minadder.kernels.target import TARGET, cpu_model  # noqa: E402

#: float32 lanes in one vector register of the target
LANES = TARGET.vector_bits // 32
#: independent accumulators per loop: 16 leave room for the constants in 32 registers,
#: 12 in 16 (AVX2's ymm0-15); either covers latency x throughput of these mixes
CHAINS = 16 if TARGET.registers >= 32 else 12
#: select+add needs two more registers per term in flight (the compare's mask, the blend's
#: result): with 16 registers 12 accumulators spilled to the stack, 11 did not; 10 are used
SELECT_CHAINS = CHAINS if TARGET.registers >= 32 else 10
#: sgn+fma's accumulators: each is updated twice a pass (sgn_fma_chains), its value in
#: two registers by turns; 16 spilled to the stack, 12 cover the term's latency (about 11
#: cycles for its three instructions, 1.5 cycles of the two vector ports each)
SGN_CHAINS = 12
#: floats in one loop's accumulator array: a constant, so LLVM unrolls the loop over it
TERMS = LANES * CHAINS
SELECT_TERMS = LANES * SELECT_CHAINS
#: register_block.SGN_TABLE's bits as a float32 (sgn+fma's third constant)
SGN_TABLE_BITS = float(np.array([SGN_TABLE], dtype=np.uint32).view(np.float32)[0])
#: bytes per vector of the SAD loop: sad.py's best variant here (0: portable only, no sad rows)
SAD_BYTES = int8_sad.VECTOR_BYTES[int8_sad.available()[0]]
#: x86 register name of each vector width
REGISTER = {512: "zmm", 256: "ymm", 128: "xmm"}
#: a memory operand in AT&T (``8(%rsp)``, ``(%rax,%rcx,4)``) or Intel (``[rsp + 8]``) syntax
MEMORY = re.compile(r"\(%|\[")
#: x86 flags printed first (lscpu's names)
FLAGS = ("avx2", "fma", "avx512f", "avx512bw")
DEFAULT_JSON = os.path.join(HERE, "results", f"ceiling-{TARGET.name}.json")


# ----------------------------------------------------------------------------- the loops
# Every loop has the same signature (acc, consts, reps), so one parallel driver runs any
# of them; the constants become scalars before the loop, so they are read once.
@njit(fastmath=True)
def fma_loop(acc, consts, reps):
    """acc = acc * a + b, one fused multiply-add per term."""
    a, b = consts[0], consts[1]
    for _ in range(reps):
        for q in range(TERMS):
            acc[q] = acc[q] * a + b


@njit(fastmath=True)
def min_add_loop(acc, consts, reps):
    """acc = min(acc, w) + x, the forward's min and add per term."""
    w, x = consts[0], consts[1]
    for _ in range(reps):
        for q in range(TERMS):
            acc[q] = min(acc[q], w) + x


@njit(fastmath=True)
def clamp_fma_loop(acc, consts, reps):
    """acc = clip(acc, lo, hi) * g + b, dX's max, min and multiply-add per term."""
    lo, hi, g, b = consts[0], consts[1], consts[2], consts[3]
    for _ in range(reps):
        for q in range(TERMS):
            acc[q] = min(max(acc[q], lo), hi) * g + b


@njit(fastmath=True)
def select_add_loop(acc, consts, reps):
    """acc = acc + (g if acc < w else -g), the sign-mode dW's compare, blend and add per term."""
    w, g = consts[0], consts[1]
    minus_g = -g
    for _ in range(reps):
        for q in range(SELECT_TERMS):
            v = acc[q]
            acc[q] = v + (g if v < w else minus_g)


@intrinsic
def psad_chains(typingctx, acc, reps, width):
    """CHAINS accumulators, loaded from acc (bytes), ``reps`` times acc_i += psadbw(acc_i, w)
    with w = acc's first vector (loaded once); stored back at the end. width: a literal,
    64 or 32 bytes."""
    if not isinstance(width, types.IntegerLiteral):
        return None
    nbytes = width.literal_value

    def codegen(context, builder, signature, args):
        acc_v, reps_v, _ = args
        data = context.make_array(signature.args[0])(context, builder, acc_v).data
        starts = [ir.Constant(ir.IntType(64), i * nbytes) for i in range(CHAINS)]
        w = load_bytes(builder, data, starts[0], nbytes)
        slots = [cgutils.alloca_once_value(builder, builder.bitcast(load_bytes(builder, data, start, nbytes),
                                                                     lane_vector(nbytes))) for start in starts]
        with cgutils.for_range(builder, reps_v):      # LLVM keeps the slots in registers
            for slot in slots:
                v = builder.load(slot)
                builder.store(builder.add(v, psad(builder, builder.bitcast(v, byte_vector(nbytes)), w, nbytes)), slot)
        for slot, start in zip(slots, starts):
            address = builder.bitcast(builder.gep(data, [start]), lane_vector(nbytes).as_pointer())
            builder.store(builder.load(slot), address, align=1)
        return context.get_dummy_value()

    return types.void(acc, reps, width), codegen


@intrinsic
def sgn_fma_chains(typingctx, acc, consts, reps):
    """SGN_CHAINS vectors of float32 accumulators, loaded from acc, ``reps`` times twice
    acc_i = acc_i + g * sgn(acc_i - w), stored back at the end: the sign kernels' term on
    512-bit vectors (register_block._sign_term), a subtract, vfixupimmps
    (register_block._sgn) and a multiply-add. w, g = consts[0], consts[1]; consts[2] holds
    vfixupimm's table as its bits, loaded at run time so that the table stays in a register
    (a constant is folded into the instruction as a memory operand). Each pass of the loop
    updates every accumulator twice: once a pass, LLVM wrote each update with a register
    copy (vfixupimm overwrites its input, and the multiply-add was given that register,
    not the accumulator's). 512-bit targets only."""
    if TARGET.vector_bits != 512:
        return None

    def codegen(context, builder, signature, args):
        acc_v, consts_v, reps_v = args
        data = context.make_array(signature.args[0])(context, builder, acc_v).data
        given = context.make_array(signature.args[1])(context, builder, consts_v).data
        floats = ir.VectorType(ir.FloatType(), LANES)
        lanes = ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES)

        def splat(value):
            one = builder.insert_element(ir.Constant(ir.VectorType(value.type, LANES), ir.Undefined), value,
                                         ir.Constant(ir.IntType(32), 0))
            return builder.shuffle_vector(one, ir.Constant(one.type, ir.Undefined), lanes)

        def const(i):
            return builder.load(builder.gep(given, [ir.Constant(ir.IntType(64), i)]))
        w, g, table = splat(const(0)), splat(const(1)), splat(builder.bitcast(const(2), ir.IntType(32)))
        pointers = [builder.bitcast(builder.gep(data, [ir.Constant(ir.IntType(64), i * LANES)]), floats.as_pointer())
                    for i in range(SGN_CHAINS)]
        slots = [cgutils.alloca_once_value(builder, builder.load(p, align=4)) for p in pointers]
        with cgutils.for_range(builder, reps_v):      # LLVM keeps the slots in registers
            for _ in range(2):
                for slot in slots:
                    v = builder.load(slot)
                    sign = sgn(builder, builder.fsub(v, w), table)
                    builder.store(builder.fadd(v, builder.fmul(g, sign, flags=("fast",)), flags=("fast",)), slot)
        for slot, pointer in zip(slots, pointers):
            builder.store(builder.load(slot), pointer, align=4)
        return context.get_dummy_value()

    return types.void(acc, consts, reps), codegen


@njit
def sgn_fma_loop(acc, consts, reps):
    """acc = acc + g * sgn(acc - w), the AVX-512 sign kernels' subtract, vfixupimm and
    multiply-add per term."""
    sgn_fma_chains(acc, consts, reps)


@njit
def sad_loop(acc, consts, reps):
    """acc = acc + psadbw(acc, w), one vpsadbw and one vpaddq per vector of byte pairs."""
    psad_chains(acc, reps, SAD_BYTES)


@njit(parallel=True)
def on_threads(loop, accs, consts, reps):
    """The same loop on every thread, each on its own row of accs (one row per thread)."""
    for i in prange(accs.shape[0]):
        loop(accs[i], consts, reps)


class Mix:
    """One instruction mix: its loop, its constants (values stay finite: each term's
    map has a fixed point), the x86 instructions one term claims to be, and its vectors:
    ``lanes`` terms each, ``bits`` wide, accumulators of ``dtype``."""

    def __init__(self, name, bounds, loop, consts, claims, chains=CHAINS, lanes=LANES,
                 bits=TARGET.vector_bits, dtype=np.float32):
        self.name, self.bounds, self.loop = name, bounds, loop
        self.consts = np.array(consts, dtype=np.float32)
        self.claims, self.chains = claims, chains
        self.lanes, self.bits, self.dtype = lanes, bits, dtype


MIXES = (
    Mix("fma", "yardstick; dW full", fma_loop, (0.5, 1.0), ("vfmadd",)),
    Mix("min+add", "forward", min_add_loop, (2.0, 0.5), ("vminps", "vaddps")),
    Mix("clamp+fma", "dX full", clamp_fma_loop, (-1.0, 1.0, 0.5, 0.25), ("vmaxps", "vminps", "vfmadd")),
    Mix("select+add", "dX, dW sign (AVX2 code)", select_add_loop, (0.3, 0.01), ("vcmp", "vblend", "vaddps"),
        SELECT_CHAINS),
) + ((Mix("sgn+fma", "dX, dW sign (AVX-512 code)", sgn_fma_loop, (0.3, -0.01, SGN_TABLE_BITS),
          ("vsubps", "vfixupimmps", "vfmadd"), 2 * SGN_CHAINS),) if TARGET.vector_bits == 512 else ()) \
    + ((Mix("sad", "int8 adder layer", sad_loop, (), ("vpsadbw", "vpaddq"), lanes=SAD_BYTES,
          bits=8 * SAD_BYTES, dtype=np.uint8),) if SAD_BYTES else ())


# ------------------------------------------------------------------------- the checks
def memory_operands(body):
    """How many instructions of an assembly loop body read or write memory."""
    return sum(1 for line in body if re.match(r"\s+\w", line) and MEMORY.search(line.split(None, 1)[-1]))


def vector_loop(asm):
    """(instruction counts, memory operands) of the innermost loop with the most vector
    instructions: the loop that runs ``reps`` times (an enclosing loop, e.g. over the
    threads' rows, loads and stores the accumulators once per row and is not counted)."""
    best = None
    for body in filter(innermost, loops(asm)):
        counts = mix(body)
        vector = sum(v for k, v in counts.items() if k.endswith(("zmm", "ymm", "xmm")))
        if best is None or vector > best[0]:
            best = (vector, counts, memory_operands(body))
    if best is None:
        return {}, 0
    return dict(best[1]), best[2]


def problems(counts, memory, claims, register, chains):
    """What is wrong with a loop that claims ``chains`` of each of ``claims`` on ``register``s:
    [] when its vector instructions are exactly those and it touches no memory."""
    found = []
    for claim in claims:
        n = sum(v for k, v in counts.items() if k.startswith(claim) and k.endswith(register))
        if n != chains:
            found.append(f"{n} {claim} {register} (want {chains})")
    others = {k: v for k, v in counts.items()
              if k.endswith(("zmm", "ymm", "xmm")) and not (k.startswith(claims) and k.endswith(register))}
    if others:
        found.append("other vector instructions " + ", ".join(f"{k} x{v}" for k, v in others.items()))
    if memory:
        found.append(f"{memory} memory operands (loads, stores or stack spills)")
    return found


def asm_of(dispatcher, first=None):
    """The assembly of a dispatcher's compiled version (the one whose first argument is of
    the type of ``first``, when given: on_threads is compiled once per loop)."""
    sigs = [s for s in dispatcher.signatures if first is None or s[0] == typeof(first)]
    return dispatcher.overloads[sigs[0]].library.get_asm_str()


def describe_loop(counts):
    """'vminps zmm x16, vaddps zmm x16' (vector instructions only, most frequent first)."""
    vector = sorted(((k, v) for k, v in counts.items() if k.endswith(("zmm", "ymm", "xmm"))),
                    key=lambda kv: -kv[1])
    return ", ".join(f"{k} x{v}" for k, v in vector) or "no vector loop"


# ------------------------------------------------------------------------- the timings
def best_rate(run, terms_per_rep, seconds, repeat):
    """Best terms/s over ``repeat`` timed calls of run(reps), reps sized for ``seconds``."""
    reps = 1000
    while True:
        t0 = time.perf_counter()
        run(reps)
        took = time.perf_counter() - t0
        if took > seconds / 10 or reps > 1 << 40:
            break
        reps *= 10
    reps = max(1, int(reps * seconds / took))
    best = 0.0
    for _ in range(repeat):
        t0 = time.perf_counter()
        run(reps)
        best = max(best, reps * terms_per_rep / (time.perf_counter() - t0))
    return best


def checked_loop(m, threads, asm):
    """(instruction counts, memory operands, checked) of mix m's hot loop in ``asm``; exits
    naming what is wrong when it is not what m claims (x86 only: the claims are x86's)."""
    counts, memory = vector_loop(asm)
    if not TARGET.machine.lower().startswith(("x86", "amd64")):
        return counts, memory, False
    wrong = problems(counts, memory, m.claims, REGISTER.get(m.bits, "xmm"), m.chains)
    if wrong:
        raise SystemExit(f"ceiling.py: the {m.name} loop ({TARGET.name}, {threads} thread(s)) is not what "
                         f"it claims: {'; '.join(wrong)}")
    return counts, memory, True


def measure_mix(m, threads, seconds, repeat):
    """The rows of one mix: compiled, checked in its assembly, timed on 1 and on ``threads`` threads."""
    terms = m.lanes * m.chains
    accs = np.ones((threads, terms), dtype=m.dtype)
    m.loop(accs[0], m.consts, 1)                       # compile both before reading their assembly
    on_threads(m.loop, accs, m.consts, 1)
    ways = [(1, asm_of(m.loop), lambda reps: m.loop(accs[0], m.consts, reps))]
    if threads > 1:
        ways.append((threads, asm_of(on_threads, m.loop), lambda reps: on_threads(m.loop, accs, m.consts, reps)))
    rows = []
    for n, asm, run in ways:
        counts, memory, checked = checked_loop(m, n, asm)
        rate = best_rate(run, terms * n, seconds, repeat)
        if not np.isfinite(accs).all():
            raise SystemExit(f"ceiling.py: the {m.name} loop left non-finite accumulators")
        rows.append(dict(mix=m.name, bounds=m.bounds, bits=m.bits, target=TARGET.name,
                         threads=n, gterms=rate / 1e9, chains=m.chains, checked=checked,
                         loop=counts, memory_operands=memory))
    return rows


def measure_sgemm(n, seconds, repeat):
    """NumPy's float32 matmul of two n x n matrices, in G terms (multiply-adds) per second;
    the BLAS threads are set by the environment this process was started with."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b
    t0 = time.perf_counter()
    a @ b
    calls = max(1, int(seconds / max(time.perf_counter() - t0, 1e-9)))
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(calls):
            a @ b
        best = min(best, (time.perf_counter() - t0) / calls)
    return n ** 3 / best / 1e9


# ----------------------------------------------------------------- the memory's rates
#: bytes of each array the memory passes stream through: far more than the caches hold
#: (the memory's rate), and as much as one ResNet-20 layer's data at batch 64 (12 MB for
#: the 16-channel dX: the rate such a layer's passes get when the data stay in a large L3,
#: as in bench_adder_layers.py's repeated calls; the memory's where the L3 is smaller)
MEMORY_BYTES, LAYER_BYTES = 1 << 30, 16 << 20
QUICK_BYTES = (8 << 20, 2 << 20)
#: what each memory pass's rate bounds
MEMORY_BOUNDS = {"read": "passes that read (dW: G and X)", "copy": "passes that read and write (forward, dX)"}
#: floats per task of a memory pass
CHUNK_FLOATS = 1 << 16


# Each task works on a view of its chunk indexed from 0, so that LLVM vectorises the loop
# (indexing the whole array from i * CHUNK_FLOATS left the sum scalar: half the rate).
@njit(parallel=True, fastmath=True)
def read_pass(a, sums):
    """sums[i] = the sum of chunk i of a (1-D): every byte of a read once."""
    for i in prange(a.shape[0] // CHUNK_FLOATS):
        chunk, total = a[i * CHUNK_FLOATS:(i + 1) * CHUNK_FLOATS], np.float32(0)
        for j in range(CHUNK_FLOATS):
            total += chunk[j]
        sums[i] = total


@njit(parallel=True, fastmath=True)
def copy_pass(src, dst):
    """dst = src (1-D) chunk by chunk, with ordinary stores as the kernels' (a slice
    assignment may become memcpy, whose non-temporal stores skip reading dst first)."""
    for i in prange(src.shape[0] // CHUNK_FLOATS):
        s, d = src[i * CHUNK_FLOATS:(i + 1) * CHUNK_FLOATS], dst[i * CHUNK_FLOATS:(i + 1) * CHUNK_FLOATS]
        for j in range(CHUNK_FLOATS):
            d[j] = s[j]


def measure_memory(threads, quick):
    """Rows of the rates in GB/s, "read" and "copy", on 1 and ``threads`` threads, for
    arrays of MEMORY_BYTES and of LAYER_BYTES (``bytes``): the best of a few passes over
    arrays written first (so that their pages exist)."""
    rows = []
    for size in QUICK_BYTES if quick else (MEMORY_BYTES, LAYER_BYTES):
        floats = size // 4 - size // 4 % CHUNK_FLOATS
        src, dst = np.ones(floats, dtype=np.float32), np.ones(floats, dtype=np.float32)
        sums = np.zeros(floats // CHUNK_FLOATS, dtype=np.float32)
        passes = {"read": (lambda: read_pass(src, sums), src.nbytes),
                  "copy": (lambda: copy_pass(src, dst), src.nbytes + dst.nbytes)}
        for n in sorted({1, threads}):
            numba.set_num_threads(n)
            for name, (run, moved) in passes.items():
                run()                                    # compiled; the cache as the timings find it
                best = min(_timed(run) for _ in range(2 if quick else 7))
                rows.append(dict(mix=name, bounds=MEMORY_BOUNDS[name], bits=None, target="memory", threads=n,
                                 gbytes=moved / best / 1e9, bytes=src.nbytes))
    return rows


def _timed(run):
    t0 = time.perf_counter()
    run()
    return time.perf_counter() - t0


# ---------------------------------------------------------------- children and parent
def settings(quick):
    """(seconds per timing, timings per figure, sgemm size)."""
    return (0.002, 2, 256) if quick else (0.2, 5, 2048)


def child(args):
    seconds, repeat, n = settings(args.quick)
    if args.child == "sgemm":
        rows = [dict(mix="sgemm", bounds=f"NumPy float32 matmul, n = {n}", bits=None, target="BLAS",
                     threads=args.threads, gterms=measure_sgemm(n, seconds, repeat))]
    elif args.child == "memory":
        minadder.configure(threads=args.threads)
        rows = measure_memory(args.threads, args.quick)
    else:
        minadder.configure(threads=args.threads)
        rows = [row for m in MIXES for row in measure_mix(m, args.threads, seconds, repeat)]
        for row in rows:
            row["width"] = args.child
    print(json.dumps(rows))


def run_child(kind, threads, quick):
    """Rows measured in a fresh process: 'native' (this CPU's code), 'avx2' (compiled for
    Haswell), 'sgemm' (NumPy's BLAS on ``threads`` threads) or 'memory' (the memory's
    rates). (rows, error line)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", kind, "--threads", str(threads)]
    cmd += ["--quick"] if quick else []
    env = dict(os.environ)
    if kind == "avx2":
        env["NUMBA_CPU_NAME"] = "haswell"
        env.pop("NUMBA_CPU_FEATURES", None)
    if kind == "sgemm":
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        last = (proc.stderr.strip() or proc.stdout.strip() or "?").splitlines()[-1]
        return [], f"no figures for {kind}: {last.removeprefix('ceiling.py: ')}"
    return json.loads(proc.stdout.strip().splitlines()[-1]), None


def lscpu():
    """(model name, {flag: present}) from lscpu; ('?', {}) where there is no lscpu."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "?", {}
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    flags = set(fields.get("Flags", "").split())
    return fields.get("Model name", "?").strip(), {f: f in flags for f in FLAGS}


def add_fractions(rows):
    """Each row's rate over the fma rate of the same width and threads."""
    fma = {(r["width"], r["threads"]): r["gterms"] for r in rows if r["mix"] == "fma"}
    for r in terms_rows(rows):
        key = (r.get("width"), r["threads"])
        r["fraction_of_fma"] = r["gterms"] / fma[key] if key in fma else None


def terms_rows(rows):
    """The rows of instruction mixes and sgemm (G terms/s), not the memory's (GB/s)."""
    return [r for r in rows if "gterms" in r]


def print_table(rows, markdown):
    header = ["mix", "bounds", "vector", "threads", "G terms/s", "of FMA", "loop (vector instructions)"]
    table = [[r["mix"], r["bounds"], f"{r['bits']}-bit {r['target']}" if r["bits"] else r["target"],
              str(r["threads"]), f"{r['gterms']:.1f}",
              f"{r['fraction_of_fma']:.2f}" if r["fraction_of_fma"] is not None else "-",
              describe_loop(r["loop"]) + ("" if r.get("checked", True) else " (not checked)")
              if "loop" in r else "-"] for r in terms_rows(rows)]
    print_lines(header, table, markdown)
    memory = [[r["mix"], r["bounds"], str(r["threads"]), f"{r['gbytes']:.1f}", f"{r['bytes'] >> 20} MB"]
              for r in rows if "gbytes" in r]
    if memory:
        print()
        print_lines(["memory", "bounds", "threads", "GB/s", "array"], memory, markdown)


def print_lines(header, table, markdown):
    """A table as Markdown or as aligned text."""
    if markdown:
        print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
        for line in table:
            print("| " + " | ".join(line) + " |")
        return
    widths = [max(len(str(c)) for c in col) + 2 for col in zip(header, *table)]
    for line in [header] + table:
        print("".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="the all-threads figure's threads")
    ap.add_argument("--widths", nargs="*", default=None, choices=("native", "avx2"),
                    help="which code to time (default: this CPU's, and the AVX2 code where this CPU has wider)")
    ap.add_argument("--quick", action="store_true", help="milliseconds per figure: checks the loops, measures nothing")
    ap.add_argument("--json", nargs="?", const=DEFAULT_JSON, default=None, metavar="PATH",
                    help=f"write the rows as JSON (default path: {os.path.relpath(DEFAULT_JSON)})")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    ap.add_argument("--child", choices=("native", "avx2", "sgemm", "memory"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads < 1:
        ap.error(f"--threads must be at least 1, not {args.threads}")
    if args.child:
        return child(args)

    model, flags = lscpu()
    print(f"CPU: {cpu_model()}; lscpu model name: {model}")
    print("flags: " + ", ".join(f"{f} {'yes' if on else 'no'}" for f, on in flags.items()) +
          f"; Numba compiles for {TARGET.name} ({TARGET.vector_bits}-bit vectors, {TARGET.registers} registers)")
    if args.quick:
        print("--quick: a few milliseconds per figure; the loops are checked, the rates are not measurements")
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    widths = args.widths or (["native", "avx2"] if x86 and TARGET.vector_bits > 256 else ["native"])
    jobs = [(w, args.threads) for w in widths] + [("sgemm", 1)]
    jobs += [("sgemm", args.threads)] if args.threads > 1 else []
    jobs += [("memory", args.threads)]
    rows, errors = [], []
    for kind, threads in jobs:           # one after another: two timings never share the cores
        got, error = run_child(kind, threads, args.quick)
        rows += [dict(r, width=r.get("width", kind)) for r in got]
        errors += [error] if error else []
    add_fractions(rows)
    print()
    print_table(rows, args.markdown)
    chains = sorted({r["chains"] for r in rows if "chains" in r})
    print(f"\nOne term: one lane of one accumulator update ({' or '.join(map(str, chains))} vector "
          f"accumulator updates per pass of a loop, all in registers; sgn+fma: {SGN_CHAINS} accumulators, each "
          "updated twice); sad: one |a - b| of one byte pair; "
          "sgemm: one multiply-add of its n^3. memory: GB/s of the bytes a pass reads (read) or reads "
          "and writes (copy).")
    if args.json:
        record = dict(cpu=cpu_model(), model=model, flags=flags, llvm_cpu=TARGET.name, threads=args.threads,
                      quick=args.quick, numpy=np.__version__, numba=numba.__version__,
                      time=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), rows=rows)
        try:
            os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
            with open(args.json, "w") as f:
                json.dump(record, f, indent=1)
        except OSError as e:
            errors.append(f"--json {args.json}: cannot write it ({e.strerror})")
        else:
            print(f"wrote {args.json}")
    for error in errors:
        print(f"ceiling.py: {error}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
