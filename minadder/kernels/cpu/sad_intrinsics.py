"""The x86 instruction vpsadbw, asked for by name: Numba intrinsics written in LLVM IR.

vpsadbw takes two vectors of unsigned bytes and, for each group of 8 byte pairs, adds up
the 8 absolute differences into one 64-bit lane:

    psadbw(a, b)[g] = sum_{i < 8} |a[8g + i] - b[8g + i]|

so one instruction is 64 terms of the integer adder layer (Eq. 2 in integers) with
AVX-512BW (<64 x i8> -> <8 x i64>, ``llvm.x86.avx512.psad.bw.512``) and 32 with AVX2
(<32 x i8> -> <4 x i64>, ``llvm.x86.avx2.psad.bw``). Numba does not produce it from a plain
loop over |a - b|, so these functions write the LLVM IR themselves (llvmlite's IRBuilder),
which Numba then compiles and inlines like any other code.

The kernel puts output positions, not the reduction axis, in the lanes: each 8-byte
group of a vector holds 8 bytes of one position's receptive field, and the filter's 8 bytes
for the same part of the field are broadcast to every group. One psadbw then gives 8 (or 4)
partial sums, one per position, each in its own lane, and the partial sums of the next 8
bytes add lane by lane (vpaddq): no sum across lanes is ever needed, and 8 (or 4)
consecutive outputs leave the registers in one store.

Only call them where the CPU has the instruction and Numba compiles for it: sad.py
chooses. Asked for on a CPU without it, LLVM stops the whole process ("Cannot select").
"""
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

#: the LLVM intrinsic of each vector width, in bytes
PSAD_INTRINSICS = {64: "llvm.x86.avx512.psad.bw.512", 32: "llvm.x86.avx2.psad.bw"}
#: the block one call of ``sad_block`` computes: vectors of positions (8 positions each
#: with AVX-512, 4 with AVX2) x BLOCK_FILTERS filters. AVX-512: 4 x 4 = 16 accumulators,
#: 4 input vectors and a broadcast in 32 zmm registers; AVX2: 2 x 4 = 8, 2 and 1-4 in 16
#: ymm. Measured (one thread, K = 144 and 576): 2x8, 4x6, 6x4, 3x8 within 10 % of 4x4,
#: and 4x2, 3x4, 1x8, 2x6 within 10 % of 2x4: the loop runs at about one vpsadbw a cycle.
POSITION_VECTORS = {64: 4, 32: 2}
BLOCK_FILTERS = 4

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




def block_positions(width):
    """The output positions one block covers with vectors of ``width`` bytes (8 bytes each)."""
    return POSITION_VECTORS[width] * width // 8


def broadcast_word(builder, pointer, offset, width):
    """The 8 bytes at pointer + offset, repeated in every 8-byte group of a <width x i8>."""
    address = builder.bitcast(builder.gep(pointer, [offset]), LANE.as_pointer())
    word = builder.load(address, align=1)
    lanes = lane_vector(width)
    one = builder.insert_element(ir.Constant(lanes, ir.Undefined), word, ir.Constant(ir.IntType(32), 0))
    mask = ir.Constant(ir.VectorType(ir.IntType(32), lanes.count), [0] * lanes.count)
    return builder.bitcast(builder.shuffle_vector(one, ir.Constant(lanes, ir.Undefined), mask), byte_vector(width))


def row_bytes(builder, array):
    """The distance in bytes between two rows of a 2-D array (its first stride)."""
    return cgutils.unpack_tuple(builder, array.strides, 2)[0]


@intrinsic
def sad_block(typingctx, columns, q, words, t, sums, width):
    """sums[t + b, q + p] = sum_g psadbw(columns[g, 8(q+p) : 8(q+p) + 8], words[t + b, 8g : 8g + 8])
    for the block of block_positions(width) positions x BLOCK_FILTERS filters that starts at
    position q and filter t, with psadbw on vectors of ``width`` bytes (a literal: 64 or 32).

    columns (groups, 8 * positions) holds 8 bytes per position in each row g (sad.py's
    gathered layout); words (filters, 8 * groups) the filters' bytes, 8 per group; sums is
    an int32 array (filters, positions). All three are C-contiguous, and the block's
    positions and filters must exist: the caller pads them. One accumulator per (vector,
    filter) holds 8 (or 4) positions' sums in its i64 lanes for the whole loop over g; at
    the end each is cut to int32 and stored: 8 (or 4) consecutive outputs of one filter.
    """
    if not (isinstance(width, types.IntegerLiteral) and width.literal_value in PSAD_INTRINSICS):
        return None                                   # Numba reports that it cannot type the call
    nbytes = width.literal_value
    vectors, filters, lanes = POSITION_VECTORS[nbytes], BLOCK_FILTERS, nbytes // 8

    def codegen(context, builder, signature, args):
        columns_v, q_v, words_v, t_v, sums_v, _ = args
        q_v = context.cast(builder, q_v, signature.args[1], types.int64)
        t_v = context.cast(builder, t_v, signature.args[3], types.int64)
        x = context.make_array(signature.args[0])(context, builder, columns_v)
        w = context.make_array(signature.args[2])(context, builder, words_v)
        s = context.make_array(signature.args[4])(context, builder, sums_v)
        const = lambda value: ir.Constant(LANE, value)               # noqa: E731
        first = builder.gep(x.data, [builder.mul(q_v, const(8))])   # position q in row 0
        w_rows = [builder.gep(w.data, [builder.mul(builder.add(t_v, const(b)), row_bytes(builder, w))])
                  for b in range(filters)]
        # the accumulators start as zero vectors; LLVM keeps these stack slots in registers
        accs = [[cgutils.alloca_once_value(builder, ir.Constant(lane_vector(nbytes), None))
                 for _ in range(filters)] for _ in range(vectors)]
        groups = cgutils.unpack_tuple(builder, x.shape, 2)[0]
        with cgutils.for_range(builder, groups) as loop:
            row = builder.gep(first, [builder.mul(loop.index, row_bytes(builder, x))])
            xv = [load_bytes(builder, row, const(a * nbytes), nbytes) for a in range(vectors)]
            for b in range(filters):
                wv = broadcast_word(builder, w_rows[b], builder.mul(loop.index, const(8)), nbytes)
                for a in range(vectors):
                    acc = accs[a][b]
                    builder.store(builder.add(builder.load(acc), psad(builder, xv[a], wv, nbytes)), acc)
        out = builder.bitcast(s.data, BYTE.as_pointer())
        int32s = ir.VectorType(ir.IntType(32), lanes)
        for b in range(filters):
            out_row = builder.gep(out, [builder.mul(builder.add(t_v, const(b)), row_bytes(builder, s))])
            for a in range(vectors):
                offset = builder.mul(builder.add(q_v, const(a * lanes)), const(4))
                address = builder.bitcast(builder.gep(out_row, [offset]), int32s.as_pointer())
                builder.store(builder.trunc(builder.load(accs[a][b]), int32s), address, align=4)
        return context.get_dummy_value()

    return types.void(columns, q, words, t, sums, width), codegen
