"""The x86 instruction vpsadbw, asked for by name: Numba intrinsics written in LLVM IR.

vpsadbw takes two vectors of unsigned bytes and, for each group of 8 byte pairs, adds up
the 8 absolute differences into one 64-bit lane:

    psadbw(a, b)[g] = sum_{i < 8} |a[8g + i] - b[8g + i]|

so one instruction is 64 terms of the integer adder layer (Eq. 2 in integers) with
AVX-512BW (<64 x i8> -> <8 x i64>, ``llvm.x86.avx512.psad.bw.512``) and 32 with AVX2
(<32 x i8> -> <4 x i64>, ``llvm.x86.avx2.psad.bw``). Numba does not produce it from a plain
loop over |a - b|, so these functions write the LLVM IR themselves (llvmlite's IRBuilder),
which Numba then compiles and inlines like any other code.

Only call them where the CPU has the instruction and Numba compiles for it: sad.py
chooses. Asked for on a CPU without it, LLVM stops the whole process ("Cannot select").
"""
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

#: the LLVM intrinsic of each vector width, in bytes
PSAD_INTRINSICS = {64: "llvm.x86.avx512.psad.bw.512", 32: "llvm.x86.avx2.psad.bw"}
#: the block one call of ``sad_block`` computes: 2 rows of inputs x 4 rows of filters, 8
#: vector accumulators, 2 + 4 vectors loaded per step. 14 registers fit AVX2's 16 ymm (and
#: AVX-512's 32 zmm, which would hold a larger block); chosen by hand, not re-measured.
BLOCK_ROWS, BLOCK_FILTERS = 2, 4

BYTE, LANE = ir.IntType(8), ir.IntType(64)


def byte_vector(width):
    """The LLVM type of one vector of ``width`` bytes: <width x i8>."""
    return ir.VectorType(BYTE, width)


def lane_vector(width):
    """The type psadbw returns for ``width`` bytes: one i64 lane per 8 bytes."""
    return ir.VectorType(LANE, width // 8)


def psad(builder, a, b, width):
    """Emit psadbw(a, b) on two <width x i8> vectors: a <width/8 x i64> vector."""
    signature = ir.FunctionType(lane_vector(width), [byte_vector(width), byte_vector(width)])
    function = cgutils.get_or_insert_function(builder.module, signature, PSAD_INTRINSICS[width])
    return builder.call(function, [a, b])


def load_bytes(builder, pointer, offset, width):
    """Load ``width`` bytes from pointer + offset as one vector (align 1: any address)."""
    address = builder.bitcast(builder.gep(pointer, [offset]), byte_vector(width).as_pointer())
    return builder.load(address, align=1)


def horizontal_sum(builder, vector, lanes):
    """lane 0 + lane 1 + ... of an integer vector, as one scalar."""
    total = builder.extract_element(vector, ir.Constant(ir.IntType(32), 0))
    for lane in range(1, lanes):
        total = builder.add(total, builder.extract_element(vector, ir.Constant(ir.IntType(32), lane)))
    return total


def row_pointers(builder, array, first, count):
    """Pointers to rows first .. first + count - 1 of a 2-D byte array (its data and strides)."""
    row_stride = cgutils.unpack_tuple(builder, array.strides, 2)[0]
    return [builder.gep(array.data, [builder.mul(builder.add(first, ir.Constant(LANE, r)), row_stride)])
            for r in range(count)]


@intrinsic
def sad_block(typingctx, rows, r, filters, t, sums, width):
    """sums[a * BLOCK_FILTERS + b] = sum_k |rows[r + a, k] - filters[t + b, k]| for the
    BLOCK_ROWS x BLOCK_FILTERS block, with psadbw on vectors of ``width`` bytes (a literal:
    64 or 32).

    rows and filters are C-contiguous uint8 arrays (Numba types them before this runs) whose
    rows have the same length, a multiple of ``width``, and the block's rows must exist: the
    caller pads both (with zero bytes: |0 - 0| adds nothing). sums is an int64 array of
    BLOCK_ROWS * BLOCK_FILTERS. Each psadbw result is added into its own vector accumulator
    for the whole row; only at the end is each accumulator summed across its lanes.
    """
    if not (isinstance(width, types.IntegerLiteral) and width.literal_value in PSAD_INTRINSICS):
        return None                                   # Numba reports that it cannot type the call
    nbytes = width.literal_value

    def codegen(context, builder, signature, args):
        rows_v, r_v, filters_v, t_v, sums_v, _ = args
        r_v = context.cast(builder, r_v, signature.args[1], types.int64)
        t_v = context.cast(builder, t_v, signature.args[3], types.int64)
        x = context.make_array(signature.args[0])(context, builder, rows_v)
        w = context.make_array(signature.args[2])(context, builder, filters_v)
        x_rows = row_pointers(builder, x, r_v, BLOCK_ROWS)
        w_rows = row_pointers(builder, w, t_v, BLOCK_FILTERS)
        row_bytes = cgutils.unpack_tuple(builder, x.shape, 2)[1]
        # the accumulators start as zero vectors; LLVM keeps these stack slots in registers
        accs = [cgutils.alloca_once_value(builder, ir.Constant(lane_vector(nbytes), None))
                for _ in range(BLOCK_ROWS * BLOCK_FILTERS)]
        steps = builder.udiv(row_bytes, ir.Constant(LANE, nbytes))
        with cgutils.for_range(builder, steps) as loop:
            offset = builder.mul(loop.index, ir.Constant(LANE, nbytes))
            xv = [load_bytes(builder, p, offset, nbytes) for p in x_rows]
            wv = [load_bytes(builder, p, offset, nbytes) for p in w_rows]
            for a in range(BLOCK_ROWS):
                for b in range(BLOCK_FILTERS):
                    acc = accs[a * BLOCK_FILTERS + b]
                    builder.store(builder.add(builder.load(acc), psad(builder, xv[a], wv[b], nbytes)), acc)
        out = context.make_array(signature.args[4])(context, builder, sums_v)
        for i, acc in enumerate(accs):
            total = horizontal_sum(builder, builder.load(acc), nbytes // 8)
            builder.store(total, builder.gep(out.data, [ir.Constant(LANE, i)]))
        return context.get_dummy_value()

    return types.void(rows, r, filters, t, sums, width), codegen
