"""The inner steps of the forward, dX and dW with their sums held in vector registers:
Numba intrinsics written in LLVM IR.

The forward (Eq. 2, in the min form of forward.py) is a matrix product in which the
multiply-add is replaced by min-then-add:

    acc[t, q] += sum_k min(X'[k, q], W'[t, k])

A matrix-product kernel keeps a block of its outputs, MR channels x NV vectors of
positions, in vector registers for the whole loop over k: each step loads NV vectors of
one row of X_col and broadcasts MR filter values, then does MR x NV mins and adds, and
touches no accumulator in memory until the loop ends. Plain Numba cannot write that loop:
LLVM vectorises only the innermost loop, so the positions must be the inner loop and the
accumulators go back to memory at every k (the hand-unrolled Numba block this replaced
loaded and stored them once per 4 rows). Here the block is written out in LLVM IR with llvmlite's
IRBuilder, as sad_intrinsics.py writes vpsadbw, and Numba inlines it like any other code.

The IR is portable: ``x < w ? x : w`` (fcmp and select) is x86's vminps/vminpd and a plain
vector add, on vectors of the target's width (target.py). Measured on one thread of a
2-core AVX-512 Intel (benchmarks/README.md, 2026-12-05 third session): 42-53 G terms/s
against 22-30 for that Numba block on the same rows, 0.7-0.9 of the machine's min + add
ceiling; the compiled loop is 4 loads, 4 broadcasts, 16 vminps and 16 vaddps, no stack
access (``benchmarks/inspect_asm.py``).

dX in full precision (Eq. 6, grad_input.py) gets the same treatment with the roles turned:
the block is rows of dX_col x vectors of positions, the loop runs over the filters t, and
each number keeps x - 1 and x + 1 in registers beside its sum, so a step is one load of
G per vector, one broadcast weight per row, and a max, a min and a multiply-add per number.
dW's product (Eq. 5, grad_weight.py) is a block of filters x rows of X' whose sums are
vectors of lane-wise partial dot products, added up across lanes once per chunk of images.

Each block comes in the variants its kernels need: products for the mins (the l2 layer's
Eq. 28, -(x - w)^2 = 2xw - x^2 - w^2, and minadder's ordinary convolution, conv.py), and
dX's rows without the clip (l2) or without the "- x sum G" too (the convolution).

After the blocks, six moves of memory written the same way: copy_vector (a row of
X_col out of the frame, stride 1 or 2; G's rows onto wide positions), split_pairs (a row
of x into the stride-2 frame's two column phases), pick_pairs (one of them, with its sum:
a 1x1 stride-2 frame), merge_pairs (its inverse, dX's plane
put back in order), add_spread_vector (copy_vector's adjoint at stride 2, dX's col2im)
and prefetch (batch norm's and the frame's passes asking for rows ahead). lanes_of gives
their vector length as a constant to the loops around them.
"""
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from ..target import TARGET

#: channels (filters) per register block: 4 with 32 vector registers (16 accumulators, 4
#: x vectors and a broadcast fit), 2 with 16 (8 accumulators)
BLOCK_CHANNELS = 4 if TARGET.blocking == "wide" else 2
#: vectors of positions per register block
BLOCK_VECTORS = 4
#: channels of the forward's block for the positions left over, one vector wide: as many
#: accumulators as the main block. Its MR x 1 block waited on its accumulators' adds (MR
#: sums, each added to once per row) and read a row of X for every MR channels.
COLUMN_CHANNELS = BLOCK_CHANNELS * BLOCK_VECTORS
#: bytes in one vector register of the target
VECTOR_BYTES = TARGET.vector_bits // 8
I64 = ir.IntType(64)
I32 = ir.IntType(32)


@njit(cache=True)
def vector_length(itemsize):
    """Numbers of ``itemsize`` bytes in one vector register of the target."""
    return VECTOR_BYTES // itemsize


def lanes_of(array):
    """Numbers of ``array``'s dtype in one vector register of the target: vector_length,
    but a constant where a kernel is compiled (``array.itemsize`` is read at run time).
    In a loop over short rows the difference showed: _widen_rows's 8-number rows took
    2.7x as long with the lanes read at run time (measured 2026-12-06)."""
    return VECTOR_BYTES // array.itemsize


@overload(lanes_of)
def _lanes_of(array):
    lanes = VECTOR_BYTES // (array.dtype.bitwidth // 8)
    return lambda array: lanes


def _float_type(dtype):
    return ir.DoubleType() if dtype.bitwidth == 64 else ir.FloatType()


class _Vectors:
    """What every block's code generator writes again and again, for one builder and
    vectors of ``dtype`` numbers as wide as the target's registers (or of ``lanes``)."""

    def __init__(self, builder, dtype, lanes=None):
        self.builder = builder
        self.lanes = TARGET.vector_bits // dtype.bitwidth if lanes is None else lanes
        self.type = ir.VectorType(_float_type(dtype), self.lanes)
        self.align = dtype.bitwidth // 8
        self.splat = ir.Constant(ir.VectorType(I32, self.lanes), [0] * self.lanes)

    @staticmethod
    def const(value):
        return ir.Constant(I64, value)

    def stride(self, array, ndim, axis):
        """Numbers between two neighbours along ``axis`` of an ``ndim``-D array."""
        stride = cgutils.unpack_tuple(self.builder, array.strides, ndim)[axis]
        return self.builder.udiv(stride, self.const(self.align))

    def pitch(self, array):
        """Numbers between two rows of a 2-D array (its first stride over the item size)."""
        return self.stride(array, 2, 0)

    def at(self, pointer, v=0):
        """Pointer to the v-th vector from ``pointer`` (a pointer to a number)."""
        return self.builder.bitcast(self.builder.gep(pointer, [self.const(v * self.lanes)]), self.type.as_pointer())

    def load(self, pointer, v=0):
        return self.builder.load(self.at(pointer, v), align=self.align)

    def store(self, value, pointer, v=0):
        self.builder.store(value, self.at(pointer, v), align=self.align)

    def broadcast(self, scalar):
        """The vector of ``scalar`` in every lane (vbroadcastss)."""
        one = self.builder.insert_element(ir.Constant(self.type, ir.Undefined), scalar, ir.Constant(I32, 0))
        return self.builder.shuffle_vector(one, ir.Constant(self.type, ir.Undefined), self.splat)


def _min_term(builder, total, x, w):
    """total + min(x, w): Eq. 2's term in the min form (vminps, vaddps)."""
    return builder.fadd(total, builder.select(builder.fcmp_ordered("<", x, w), x, w), flags=("fast",))


def _product_term(builder, total, x, w):
    """total + x * w: Eq. 28's product (one vfmadd)."""
    return builder.fadd(total, builder.fmul(x, w, flags=("fast",)), flags=("fast",))


def _filter_sums(term):
    """The forward's register block for one kind of term: see min_sums_registers."""
    def typer(typingctx, src, koff, base, wsh, t0, k0, nk, q, acc, channels, vectors):
        return _filter_sums_signature(term, src, koff, base, wsh, t0, k0, nk, q, acc, channels, vectors)
    return intrinsic(typer)


def _filter_sums_signature(term, src, koff, base, wsh, t0, k0, nk, q, acc, channels, vectors):
    if not all(isinstance(arg, types.Array) for arg in (src, koff, wsh, acc)):
        return None                                   # Numba reports that it cannot type the call
    if not (isinstance(channels, types.IntegerLiteral) and isinstance(vectors, types.IntegerLiteral)):
        return None
    dtype = src.dtype
    if not (isinstance(dtype, types.Float) and wsh.dtype == dtype and acc.dtype == dtype):
        return None
    n_channels, n_vectors = channels.literal_value, vectors.literal_value

    def codegen(context, builder, signature, args):
        src_v, koff_v, base_v, wsh_v, t0_v, k0_v, nk_v, q_v, acc_v = args[:9]
        base_v, t0_v, k0_v, nk_v, q_v = (
            context.cast(builder, value, signature.args[i], types.int64)
            for value, i in ((base_v, 2), (t0_v, 4), (k0_v, 5), (nk_v, 6), (q_v, 7)))
        x = context.make_array(signature.args[0])(context, builder, src_v)
        offsets = context.make_array(signature.args[1])(context, builder, koff_v)
        w = context.make_array(signature.args[3])(context, builder, wsh_v)
        a = context.make_array(signature.args[8])(context, builder, acc_v)
        vec = _Vectors(builder, dtype)

        def row_start(array, row, column):
            """Pointer to array[row, column] of a 2-D array with a contiguous last axis."""
            return builder.gep(array.data, [builder.add(builder.mul(row, vec.pitch(array)), column)])

        acc_rows = [row_start(a, builder.add(t0_v, vec.const(r)), q_v) for r in range(n_channels)]
        w_rows = [row_start(w, builder.add(t0_v, vec.const(r)), k0_v) for r in range(n_channels)]
        # the accumulators start from acc's values; LLVM keeps these stack slots in registers
        accs = [[cgutils.alloca_once_value(builder, vec.load(acc_rows[r], v)) for v in range(n_vectors)]
                for r in range(n_channels)]
        first = builder.gep(x.data, [builder.add(base_v, q_v)])
        with cgutils.for_range(builder, nk_v) as loop:
            row = builder.gep(first, [builder.load(builder.gep(offsets.data, [loop.index]))])
            xs = [vec.load(row, v) for v in range(n_vectors)]
            for r in range(n_channels):
                wv = vec.broadcast(builder.load(builder.gep(w_rows[r], [loop.index])))
                for v in range(n_vectors):
                    builder.store(term(builder, builder.load(accs[r][v]), xs[v], wv), accs[r][v])
        for r in range(n_channels):
            for v in range(n_vectors):
                vec.store(builder.load(accs[r][v]), acc_rows[r], v)
        return context.get_dummy_value()

    return types.void(src, koff, base, wsh, t0, k0, nk, q, acc, channels, vectors), codegen


#: acc[t0 + r, q + j] += sum_{kk < nk} min(src[base + koff[kk] + q + j], wsh[t0 + r, k0 + kk])
#: for r < channels and j < vectors x vector_length (``channels`` and ``vectors``
#: literals: BLOCK_CHANNELS x BLOCK_VECTORS, or COLUMN_CHANNELS x 1 for the positions left
#: over after the last whole block): the l1 forward (Eq. 2, min form).
#: src is a 1-D array holding the rows of X_col (row kk starts at base + koff[kk]); wsh
#: (C_out, K) and acc (C_out, positions) are 2-D arrays whose last axis is contiguous. The
#: block's channels and positions must exist: the caller loops over whole blocks.
min_sums_registers = _filter_sums(_min_term)
#: the same with src * wsh for min(src, wsh): the product of the l2 forward (Eq. 28)
product_sums_registers = _filter_sums(_product_term)


#: dX's register block (Eq. 6): rows of dX_col x vectors of positions. Each of its numbers
#: needs three registers (the sum and x -/+ 1), so 2 x 4 with 32 vector registers (24,
#: 4 vectors of G and a broadcast weight), 2 x 2 with 16 (12, 2 and 1; measured with the
#: AVX2 code, 2026-12-05, dX at batch 64: 25-28 G MAC/s on ResNet-20's layers against
#: 18-26 for 1 x 2 and 22-28 for 1 x 3). The rows and positions left over go through
#: smaller blocks of the same code (1 row; 1 vector).
CLIP_ROWS = 2
CLIP_VECTORS = 4 if TARGET.blocking == "wide" else 2
#: rows of dX's block for the positions left over, one vector wide: as many sums as the
#: main block (8 x 1 with 32 registers, 4 x 1 with 16). A 2 x 1 block waited on its two
#: sums' multiply-adds (one each per filter), and 8x8 layers, whose last of five vectors
#: an image is left over, spent a quarter of their dX there.
COLUMN_ROWS = CLIP_ROWS * CLIP_VECTORS


def _rows_into(clip, minus_x=True, sign=False):
    """dX's register block, with HardTanh's clip (l1, Eq. 6) or without (l2), with the
    "- x * gs" term or without (the convolution), or with sgn(w - x) for the weight (the
    sign mode, Eq. 4): see clip_rows_into."""
    def typer(typingctx, src, koff, k0, wk, g, gs, q, one, plane, shift, rows, vectors):
        return _rows_into_signature(clip, minus_x, sign, src, koff, k0, wk, g, gs, q, one, plane, shift, rows,
                                    vectors)
    return intrinsic(typer)


def _rows_into_signature(clip, minus_x, sign, src, koff, k0, wk, g, gs, q, one, plane, shift, rows, vectors):
    if not all(isinstance(arg, types.Array) for arg in (src, koff, wk, g, gs, plane)):
        return None
    if not (isinstance(rows, types.IntegerLiteral) and isinstance(vectors, types.IntegerLiteral)):
        return None
    dtype = src.dtype
    if not (isinstance(dtype, types.Float) and all(a.dtype == dtype for a in (wk, g, gs, plane))):
        return None
    n_rows, n_vectors = rows.literal_value, vectors.literal_value

    def codegen(context, builder, signature, args):
        src_v, koff_v, k0_v, wk_v, g_v, gs_v, q_v, one_v, plane_v, shift_v = args[:10]
        k0_v = context.cast(builder, k0_v, signature.args[2], types.int64)
        q_v = context.cast(builder, q_v, signature.args[6], types.int64)
        one_v = context.cast(builder, one_v, signature.args[7], dtype)
        shift_v = context.cast(builder, shift_v, signature.args[9], types.int64)
        x = context.make_array(signature.args[0])(context, builder, src_v)
        offsets = context.make_array(signature.args[1])(context, builder, koff_v)
        w = context.make_array(signature.args[3])(context, builder, wk_v)
        gg = context.make_array(signature.args[4])(context, builder, g_v)
        sums_g = context.make_array(signature.args[5])(context, builder, gs_v)
        pl = context.make_array(signature.args[8])(context, builder, plane_v)
        vec = _Vectors(builder, dtype)
        fast = ("fast",)
        ones = vec.broadcast(one_v)
        w_rows, starts, xs, lows, highs, sums = [], [], [], [], [], []
        for r in range(n_rows):
            k = builder.add(k0_v, vec.const(r))
            w_rows.append(builder.gep(w.data, [builder.mul(k, vec.pitch(w))]))
            start = builder.add(builder.load(builder.gep(offsets.data, [k])), q_v)
            starts.append(start)
            row = []
            if clip or minus_x or sign:
                row = [vec.load(builder.gep(x.data, [start]), v) for v in range(n_vectors)]
            xs.append(row)
            if clip:
                lows.append([builder.fsub(xv, ones, flags=fast) for xv in row])
                highs.append([builder.fadd(xv, ones, flags=fast) for xv in row])
            sums.append([cgutils.alloca_once_value(builder, ir.Constant(vec.type, None)) for _ in range(n_vectors)])
        g_start, g_pitch = builder.gep(gg.data, [q_v]), vec.pitch(gg)
        n_t = cgutils.unpack_tuple(builder, gg.shape, 2)[0]
        with cgutils.for_range(builder, n_t) as loop:
            g_row = builder.gep(g_start, [builder.mul(loop.index, g_pitch)])
            gv = [vec.load(g_row, v) for v in range(n_vectors)]
            for r in range(n_rows):
                wv = vec.broadcast(builder.load(builder.gep(w_rows[r], [loop.index])))
                for v in range(n_vectors):
                    if sign:         # g * sgn(w - x)
                        builder.store(_sign_term(builder, builder.load(sums[r][v]), gv[v], wv, xs[r][v]), sums[r][v])
                        continue
                    clipped = wv
                    if clip:
                        low, high = lows[r][v], highs[r][v]
                        clipped = builder.select(builder.fcmp_ordered(">", wv, low), wv, low)
                        clipped = builder.select(builder.fcmp_ordered("<", clipped, high), clipped, high)
                    builder.store(_product_term(builder, builder.load(sums[r][v]), gv[v], clipped), sums[r][v])
        if minus_x:
            gs_row = builder.gep(sums_g.data, [q_v])
            gsv = [vec.load(gs_row, v) for v in range(n_vectors)]
        for r in range(n_rows):                      # one row after another: their pixels may overlap
            target = builder.gep(pl.data, [builder.sub(starts[r], shift_v)])
            for v in range(n_vectors):
                row_value = builder.load(sums[r][v])
                if minus_x:
                    row_value = builder.fsub(row_value, builder.fmul(xs[r][v], gsv[v], flags=fast), flags=fast)
                vec.store(builder.fadd(vec.load(target, v), row_value, flags=fast), target, v)
        return context.get_dummy_value()

    return types.void(src, koff, k0, wk, g, gs, q, one, plane, shift, rows, vectors), codegen


#: For r < rows and j < vectors x vector_length (``rows`` and ``vectors`` are literals):
#:
#:     plane[koff[k0 + r] - shift + q + j] += sum_t g[t, q + j] * min(max(wk[k0 + r, t], x - one), x + one)
#:                                            - x * gs[q + j],    x = src[koff[k0 + r] + q + j]
#:
#: that is, row k0 + r of dX_col (Eq. 6 in the shifted frame: HardTanh(w - x) =
#: clip(w, x - 1, x + 1) - x, with gs = sum_t G) added at the pixels it came from (col2im).
#: src and plane are 1-D (the image's rows of X_col start at koff[k]; ``shift`` moves
#: them into the plane), wk (K, C_out) and g (C_out, positions) are 2-D with a contiguous
#: last axis, gs 1-D. Per step t: ``vectors`` loads of G, ``rows`` broadcast weights, a
#: max, a min and a multiply-add per number; the sums and x -/+ one stay in registers for
#: the whole loop over t. The rows are added one after another, so rows whose pixels
#: overlap (neighbouring filter offsets) add correctly.
clip_rows_into = _rows_into(True)
#: the same without the clip: plane[...] += sum_t g[t, q + j] * wk[k0 + r, t] - x * gs[q + j],
#: Eq. 28's dX_col / 2 for the l2 layer (``one`` is not read)
product_rows_into = _rows_into(False)
#: without the "- x * gs" too: plane[...] += sum_t g[t, q + j] * wk[k0 + r, t], row k0 + r
#: of W^T G, the convolution's dX_col (src and gs are not read)
plain_rows_into = _rows_into(False, minus_x=False)
#: with g * sgn(w - x) for g * w: plane[...] += sum_t g[t, q + j] * sgn(wk[k0 + r, t] - x),
#: row k0 + r of the sign-mode dX_col (Eq. 4 by _sign_term, sgn(0) = 0; the numbers must
#: be finite, as for sign_sums_registers; gs and ``one`` are not read)
sign_rows_into = _rows_into(False, minus_x=False, sign=True)


#: dW's register block (Eq. 5, the G X'^T part): filters x rows of X', each a vector of
#: lane-wise partial dot products. 8 x 3 with 32 vector registers (24 sums, the 3 rows'
#: vectors of X and one of G at a time), 4 x 3 with 16 (12 sums). Three rows, because
#: each load of a row of X' read in place (c*plane + i*pitch + j) rarely starts on a cache
#: line, and a load across a line costs two: the block that loads fewer rows of X per
#: multiply-add wins. Measured 2026-12-06, the kernel on one thread, batch 64, ResNet-20's
#: 16ch 32x32 / 32ch 16x16 layers: 4 x 4 55-60 / 51-55 G MAC/s, 8 x 3 64-66 / 60-61 (4 x
#: 6 and 8 x 2 between them; 16 x 1 28-30); with AVX2, 4 x 2 40 / 38, 4 x 3 45 / 41.
#: And 3 rows tile every 3x3 filter (K = 9C) with none left over.
DOT_FILTERS = 8 if TARGET.blocking == "wide" else 4
DOT_ROWS = 3
#: the filters after the last whole block (as many as 4 with AVX-512) go through blocks
#: of NARROW_FILTERS x DOT_ROWS, the same code
NARROW_FILTERS = 4
#: the sign-mode dW's (Eq. 4): each sum's weight W[t, k] held in a register beside it, so
#: 4 x 2 with 32 vector registers (8 sums, 8 weights, 4 vectors of G and 2 of X), 2 x 2 with 16.
#: Its compares and masked adds bound it, not its loads: 4 x 3, 2 x 3, 2 x 4 and 8 x 1 ran
#: within 3 % of 4 x 2 (measured 2026-12-06 as the dot block's shapes above; before the
#: AVX-512 term became a subtract, vfixupimm and a multiply-add, _sign_term).
SIGN_FILTERS = 4 if TARGET.blocking == "wide" else 2
SIGN_ROWS = 2


def _dot_term(builder, total, g, x, w):
    """total + g * x: Eq. 5's product (one vfmadd); w is not read."""
    return _product_term(builder, total, g, x)


#: vfixupimm's table for sgn: the answer for each class of its input, 4 bits a class, the
#: first class lowest: QNaN and SNaN -> the NaN (2), 0 -> +0 (8), 1 -> +1 (A), -inf -> -1
#: (9), +inf -> +1, negative -> -1, positive -> +1
SGN_TABLE = 0xA9A9A822


def _element_bits(vector_type):
    return 64 if isinstance(vector_type.element, ir.DoubleType) else 32


def _has_sgn(vector_type):
    """Whether _sgn takes vectors of this type: 512 bits (no such instruction before AVX-512)."""
    return vector_type.count * _element_bits(vector_type) == 512


def _sgn(builder, d, table=None):
    """sgn(d) of a 512-bit vector (_has_sgn) in one instruction, AVX-512's vfixupimmps/pd:
    it looks up each number's class (zero, negative, positive, ...) in SGN_TABLE (or in
    ``table``, a vector of integers as wide as d's numbers, each SGN_TABLE: ceiling.py's
    loop passes it as a value, which stays in a register)."""
    width = _element_bits(d.type)
    double = width == 64
    if table is None:
        table = ir.Constant(ir.VectorType(ir.IntType(width), d.type.count), [SGN_TABLE] * d.type.count)
    name = "llvm.x86.avx512.mask.fixupimm.{}.512".format("pd" if double else "ps")
    function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(
        d.type, [d.type, d.type, table.type, I32, ir.IntType(d.type.count), I32]), name)
    # (d passed through where the mask is off: it is all on; 4: the current rounding)
    return builder.call(function, [d, d, table, ir.Constant(I32, 0), ir.Constant(ir.IntType(d.type.count), -1),
                                   ir.Constant(I32, 4)])


def _sign_term(builder, total, g, x, w):
    """total + g * sgn(x - w): g where x > w, -g where x < w, 0 at a tie (Eq. 4).

    With 512-bit vectors: a subtract, sgn by vfixupimm (_sgn) and a multiply-add, three
    instructions any of the two vector ports runs (the sign of x - w, rounded, is the
    sign of the exact difference). Otherwise two compares and two masked adds, no x - w.
    With AVX-512 the compares (into mask registers) run on one port only, and bound the
    blocks. Measured 2026-12-06 on the 2-core AVX-512 VM, batch 64, 2 threads, the call
    in ms, compares -> vfixupimm: sign-mode dX on ResNet-20's 16ch 32x32 / 32ch 16x16 /
    64ch 8x8 / 16 -> 32ch stride-2 layers 4.43 / 4.30 / 4.86 / 2.53 -> 3.78-3.87 /
    3.24-3.32 / 3.63-3.66 / 2.12-2.25, sign-mode dW 4.09-4.23 / 3.94-4.09 / 4.70-4.85 /
    2.22-2.39 -> 3.31-3.50 / 3.17-3.25 / 3.94-4.22 / 1.96-2.05 (and in a first run 4.15 /
    4.23 / 4.98 / 2.68); the sign-mode ResNet-20 step 272-278 -> 316 img/s (median of 10)."""
    if _has_sgn(x.type):         # (the CPU keeps subnormal differences: no flush to zero)
        sgn = _sgn(builder, builder.fsub(x, w))
        return builder.fadd(total, builder.fmul(g, sgn, flags=("fast",)), flags=("fast",))
    total = builder.select(builder.fcmp_ordered(">", x, w), builder.fadd(total, g, flags=("fast",)), total)
    return builder.select(builder.fcmp_ordered("<", x, w), builder.fsub(total, g, flags=("fast",)), total)


def _lane_sums(term, filters, rows):
    """dW's register block for one kind of term: see dot_sums_registers."""
    def typer(typingctx, src, koff, k0, g, t0, count, w, sums, n0, n1):
        if not all(isinstance(arg, types.Array) for arg in (src, koff, g, w, sums)):
            return None
        if src.ndim != 2 or g.ndim != 3:
            return None
        dtype = src.dtype
        if not (isinstance(dtype, types.Float) and all(a.dtype == dtype for a in (g, w, sums))):
            return None
        return (types.void(src, koff, k0, g, t0, count, w, sums, n0, n1),
                _lane_sums_codegen(term, filters, rows, dtype))
    return intrinsic(typer)


def _lane_sums_codegen(term, filters, rows, dtype):
    def codegen(context, builder, signature, args):
        src_v, koff_v, k0_v, g_v, t0_v, count_v, w_v, sums_v, n0_v, n1_v = args
        k0_v, t0_v, count_v, n0_v, n1_v = (
            context.cast(builder, value, signature.args[i], types.int64)
            for value, i in ((k0_v, 2), (t0_v, 4), (count_v, 5), (n0_v, 8), (n1_v, 9)))
        x, offsets, gg, ww, s = (context.make_array(signature.args[i])(context, builder, value)
                                 for value, i in ((src_v, 0), (koff_v, 1), (g_v, 3), (w_v, 6), (sums_v, 7)))
        vec = _Vectors(builder, dtype)
        x_image, g_image, g_row = vec.pitch(x), vec.stride(gg, 3, 0), vec.stride(gg, 3, 1)
        t_rows = [builder.add(t0_v, vec.const(i)) for i in range(filters)]
        k_rows = [builder.add(k0_v, vec.const(j)) for j in range(rows)]
        x_offsets = [builder.load(builder.gep(offsets.data, [k])) for k in k_rows]
        weights = [[None] * rows for _ in t_rows]
        if term is _sign_term:       # the weights W[t, k], broadcast once, before the loop
            weights = [[vec.broadcast(builder.load(builder.gep(ww.data, [builder.add(builder.mul(t, vec.pitch(ww)), k)])))
                        for k in k_rows] for t in t_rows]
        s_rows = [builder.gep(s.data, [builder.mul(vec.const(b), vec.pitch(s))]) for b in range(filters * rows)]
        accs = [cgutils.alloca_once_value(builder, vec.load(row)) for row in s_rows]
        with cgutils.for_range_slice(builder, n0_v, n1_v, vec.const(1)) as (n, _):   # image by image
            g_first = builder.gep(gg.data, [builder.mul(n, g_image)])
            x_first = builder.gep(x.data, [builder.mul(n, x_image)])
            g_rows = [builder.gep(g_first, [builder.mul(t, g_row)]) for t in t_rows]
            x_rows = [builder.gep(x_first, [offset]) for offset in x_offsets]
            with cgutils.for_range(builder, count_v) as loop:
                at = builder.mul(loop.index, vec.const(vec.lanes))
                gv = [vec.load(builder.gep(row, [at])) for row in g_rows]
                xv = [vec.load(builder.gep(row, [at])) for row in x_rows]
                for i in range(filters):
                    for j in range(rows):
                        acc = accs[i * rows + j]
                        builder.store(term(builder, builder.load(acc), gv[i], xv[j], weights[i][j]), acc)
        for acc, row in zip(accs, s_rows):
            vec.store(builder.load(acc), row)
        return context.get_dummy_value()
    return codegen


#: sums[i * DOT_ROWS + j, :] += sum_{n0 <= n < n1} sum_{v < count} G[n, t0 + i, vL:(v+1)L] * X'[n, k0 + j, vL:(v+1)L]
#: lane by lane, for i < DOT_FILTERS, j < DOT_ROWS (L = vector_length; row k of X' for
#: image n is src[n, koff[k]:]). The sums stay in registers over all the images n0..n1
#: (one image a call left a 32-channel layer's 17-vector loop short against the block's
#: loads and stores of its sums), and the caller adds the lanes up once, at the end of all
#: its images: no sum across lanes per image, and no scalar tail (G is zero past the last
#: position). src (N, image) and w (C_out, K; not read here) are 2-D, g (N, C_out, >=
#: count L) 3-D, sums (DOT_FILTERS * DOT_ROWS, L) 2-D, each with a contiguous last axis.
#: Per step: DOT_FILTERS loads of G, DOT_ROWS loads of X' and DOT_FILTERS x DOT_ROWS
#: multiply-adds.
dot_sums_registers = _lane_sums(_dot_term, DOT_FILTERS, DOT_ROWS)
#: the same, NARROW_FILTERS x DOT_ROWS
narrow_dot_sums_registers = _lane_sums(_dot_term, NARROW_FILTERS, DOT_ROWS)
#: the same block for the sign-mode dW (Eq. 4), SIGN_FILTERS x SIGN_ROWS of
#: sums[i * SIGN_ROWS + j, :] += sum_n sum_v G[n, t0 + i, vL:(v+1)L] * sgn(X[n, k0 + j, vL:(v+1)L] - W[t0 + i, k0 + j]),
#: with sgn(0) = 0; the numbers must be finite (the kernels send others to the reference)
sign_sums_registers = _lane_sums(_sign_term, SIGN_FILTERS, SIGN_ROWS)


def _pair_dtype(src, dst, literal):
    """The float dtype of two 1-D arrays of one dtype beside a literal 1 or 2 (copy_vector's
    stride, add_spread_vector's part), or None: Numba then reports that it cannot type the call."""
    if not (isinstance(src, types.Array) and isinstance(dst, types.Array)):
        return None
    if not (isinstance(literal, types.IntegerLiteral) and literal.literal_value in (1, 2)):
        return None
    if not (isinstance(src.dtype, types.Float) and dst.dtype == src.dtype):
        return None
    return src.dtype


def _pair_pointers(context, builder, signature, args):
    """Pointers to src[i] and dst[j] for an intrinsic called as (src, i, dst, j, ...)."""
    src_v, i_v, dst_v, j_v = args[:4]
    i_v = context.cast(builder, i_v, signature.args[1], types.int64)
    j_v = context.cast(builder, j_v, signature.args[3], types.int64)
    s = context.make_array(signature.args[0])(context, builder, src_v)
    d = context.make_array(signature.args[2])(context, builder, dst_v)
    return builder.gep(s.data, [i_v]), builder.gep(d.data, [j_v])


@intrinsic
def copy_vector(typingctx, src, i, dst, j, stride):
    """dst[j:j + L] = src[i:i + stride * L:stride], L = vector_length, ``stride`` a literal
    1 or 2. Stride 1: one unaligned vector load and one store. Stride 2: two loads and one
    shuffle that keeps the even lanes (AVX-512: one vpermi2ps), one store; it reads src up to
    i + 2L - 1. (1-D arrays of one float dtype; the caller keeps the ranges inside them.)
    Plain Numba left such copies scalar, as it cannot tell that src and dst do not overlap:
    the packed forward's panel of short runs (positions.copy_runs) took 30 % of an 8x8
    layer's forward."""
    dtype = _pair_dtype(src, dst, stride)
    if dtype is None:
        return None
    step = stride.literal_value

    def codegen(context, builder, signature, args):
        first, target = _pair_pointers(context, builder, signature, args)
        vec = _Vectors(builder, dtype)
        value = vec.load(first)
        if step == 2:             # lanes 0, 2, 4, ... of the two vectors side by side
            evens = ir.Constant(ir.VectorType(I32, vec.lanes), list(range(0, 2 * vec.lanes, 2)))
            value = builder.shuffle_vector(value, vec.load(first, 1), evens)
        vec.store(value, target)
        return context.get_dummy_value()

    return types.void(src, i, dst, j, stride), codegen


@intrinsic
def split_pairs(typingctx, src, i, dst, a, b, centre, part):
    """dst[a + m] = src[i + 2m] - centre and dst[b + m] = src[i + 2m + 1] - centre for
    m < L / ``part`` (L = vector_length; ``part`` a literal 1 or 2: whole vectors or half
    ones): a row of the padded plane split into its two column phases (frame.py), in the
    shifted frame. Two loads, two shuffles (the even lanes, the odd lanes), two
    subtractions of the broadcast centre and two stores. (1-D arrays of one float dtype;
    the caller keeps the ranges inside them.)"""
    dtype = _pair_dtype(src, dst, part)
    if dtype is None or centre != dtype:
        return None
    lanes = TARGET.vector_bits // dtype.bitwidth // part.literal_value

    def codegen(context, builder, signature, args):
        first, _ = _pair_pointers(context, builder, signature, args)
        d = context.make_array(signature.args[2])(context, builder, args[2])
        vec = _Vectors(builder, dtype, lanes)
        low, high = vec.load(first), vec.load(first, 1)
        shift = vec.broadcast(args[5])
        for parity, at in ((0, args[3]), (1, args[4])):
            at = context.cast(builder, at, signature.args[3 + parity], types.int64)
            order = ir.Constant(ir.VectorType(I32, lanes), list(range(parity, 2 * lanes, 2)))
            picked = builder.shuffle_vector(low, high, order)
            vec.store(builder.fsub(picked, shift), builder.gep(d.data, [at]))
        return context.get_dummy_value()

    return types.void(src, i, dst, a, b, centre, part), codegen


@intrinsic
def pick_pairs(typingctx, src, i, dst, j, centre, parity, part):
    """dst[j + m] = src[i + 2m + parity] - centre for m < L / ``part`` (``parity`` a
    literal 0 or 1, ``part`` 1 or 2: whole vectors or half ones); returns the sum of the
    numbers picked, src[i + 2m + parity]. One column phase of a row of x, all that a 1x1
    stride-2 layer reads (frame.first_phase_plane): two loads, one shuffle, a subtraction
    and a store, and the sum by halving the vector (log2 L shuffles and adds). (1-D arrays
    of one float dtype; the caller keeps src[i:i + 2L / part] and the range of dst inside
    them.)"""
    dtype = _pair_dtype(src, dst, part)
    if dtype is None or centre != dtype:
        return None
    if not (isinstance(parity, types.IntegerLiteral) and parity.literal_value in (0, 1)):
        return None
    lanes = TARGET.vector_bits // dtype.bitwidth // part.literal_value
    odd = parity.literal_value

    def codegen(context, builder, signature, args):
        first, target = _pair_pointers(context, builder, signature, args)
        vec = _Vectors(builder, dtype, lanes)
        order = ir.Constant(ir.VectorType(I32, lanes), list(range(odd, 2 * lanes, 2)))
        picked = builder.shuffle_vector(vec.load(first), vec.load(first, 1), order)
        vec.store(builder.fsub(picked, vec.broadcast(args[4])), target)
        total, width = picked, lanes
        while width > 1:              # the upper half added onto the lower, down to one number
            width //= 2
            halves = [ir.Constant(ir.VectorType(I32, width), list(range(start, start + width)))
                      for start in (0, width)]
            total = builder.fadd(builder.shuffle_vector(total, total, halves[0]),
                                 builder.shuffle_vector(total, total, halves[1]))
        return builder.extract_element(total, ir.Constant(I32, 0))

    return dtype(src, i, dst, j, centre, parity, part), codegen


@intrinsic
def merge_pairs(typingctx, a, i, b, j, dst, k, part):
    """dst[k + 2m] = a[i + m] and dst[k + 2m + 1] = b[j + m] for m < L / ``part`` (L =
    vector_length; ``part`` a literal 1 or 2: whole vectors or half ones): split_pairs
    turned round, a row of the padded plane put back together from its two column phases
    (dX's plane at stride 2, grad_input.py). Two loads, two shuffles (the first halves of
    a and b interleaved, then the second halves) and two stores. (1-D arrays of one float
    dtype; the caller keeps the ranges inside them.)"""
    dtype = _pair_dtype(a, dst, part)
    if dtype is None or not isinstance(b, types.Array) or b.dtype != dtype:
        return None
    lanes = TARGET.vector_bits // dtype.bitwidth // part.literal_value

    def codegen(context, builder, signature, args):
        first, other = _pair_pointers(context, builder, signature, args)      # a[i], b[j]
        k_v = context.cast(builder, args[5], signature.args[5], types.int64)
        target = builder.gep(context.make_array(signature.args[4])(context, builder, args[4]).data, [k_v])
        vec = _Vectors(builder, dtype, lanes)
        from_a, from_b = vec.load(first), vec.load(other)
        for half in range(2):           # lanes 0..L/2-1 of both, then L/2..L-1
            start = half * lanes // 2
            order = [index for m in range(start, start + lanes // 2) for index in (m, lanes + m)]
            pairs = builder.shuffle_vector(from_a, from_b, ir.Constant(ir.VectorType(I32, lanes), order))
            vec.store(pairs, target, half)
        return context.get_dummy_value()

    return types.void(a, i, b, j, dst, k, part), codegen


@intrinsic
def add_spread_vector(typingctx, src, i, dst, j, part):
    """dst[j + 2m] += src[i + m] for m < L / ``part`` (L = vector_length; ``part`` a literal
    1 or 2: a whole vector of src or half of one): the adjoint of copy_vector with stride
    2, for dX's col2im at stride 2. One load of src, two shuffles that put its numbers in
    the even lanes of two vectors and zeros in the odd ones, and two loads, adds and
    stores of dst: it adds 0 to dst[j + 2m + 1] too, up to dst[j + 2L / part - 1], so the
    caller keeps that range inside memory no other thread writes meanwhile. (1-D arrays of
    one float dtype.) Number by number, these strided adds took a third of a stride-2
    layer's dX."""
    dtype = _pair_dtype(src, dst, part)
    if dtype is None:
        return None
    lanes = TARGET.vector_bits // dtype.bitwidth // part.literal_value

    def codegen(context, builder, signature, args):
        first, target = _pair_pointers(context, builder, signature, args)
        vec = _Vectors(builder, dtype, lanes)
        value, zeros = vec.load(first), ir.Constant(vec.type, None)
        for half in range(2):           # lanes 0..L/2-1 of src, then L/2..L-1, spread out
            order = [index for m in range(lanes // 2) for index in (half * lanes // 2 + m, lanes + m)]
            spread = builder.shuffle_vector(value, zeros, ir.Constant(ir.VectorType(I32, lanes), order))
            vec.store(builder.fadd(vec.load(target, half), spread, flags=("fast",)), target, half)
        return context.get_dummy_value()

    return types.void(src, i, dst, j, part), codegen


@intrinsic
def prefetch(typingctx, array, index, write):
    """Ask the CPU to bring the cache line of array[index] (a 1-D array) into its caches
    ahead of use (llvm.prefetch: prefetcht0, or prefetchw when ``write``, a literal bool,
    for a line about to be written). A hint: it never faults, even past the array's end."""
    if not (isinstance(array, types.Array) and isinstance(write, types.BooleanLiteral)):
        return None
    rw = int(write.literal_value)

    def codegen(context, builder, signature, args):
        a = context.make_array(signature.args[0])(context, builder, args[0])
        index_v = context.cast(builder, args[1], signature.args[1], types.int64)
        pointer = builder.bitcast(builder.gep(a.data, [index_v]), ir.IntType(8).as_pointer())
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [pointer.type, I32, I32, I32]), "llvm.prefetch.p0i8")
        builder.call(function, [pointer, ir.Constant(I32, rw), ir.Constant(I32, 3), ir.Constant(I32, 1)])
        return context.get_dummy_value()

    return types.void(array, index, write), codegen


#: how far ahead the passes over memory ask for what they will read and write, in bytes
PREFETCH_BYTES = 8192


@njit(cache=True)
def prefetch_lines(array, start, stop, write):
    """prefetch every cache line (64 bytes) of array[start:stop] (a 1-D array)."""
    for j in range(start, stop, 64 // array.itemsize):
        prefetch(array, j, write)
