"""Code for the cores: a method's instruction text -> LLVM IR, built inside Numba-jitted drivers.

codegen prints each method's straight-line program as *instruction text*, one
operation per line over numbered values.  ``core(method, code, dtype)`` turns
that text into a Numba intrinsic: when Numba compiles a driver that calls it,
the intrinsic builds the core as one LLVM function (internal linkage, always
inlined) in the driver's own module, so Numba's cache stores the machine code
with the driver and a later process never runs this code again.  Going to IR
directly skips Numba's Python front end (type inference and lowering cost
2-10 ms per generated statement); LLVM itself compiles 17 000 statements in
under a second.

Batches run ``block(method, code, dtype, width)``: the same instructions over
vectors of ``width`` lanes (the CPU's vector register: 8 doubles or 16 floats
with AVX-512), one point per lane, so that a batch runs on packed SIMD
instructions; the single point keeps the scalar ``core``.

Transcendental functions come from ``gradcomp.vecmath`` (polynomials over
scalars or vectors alike, so that a batch and a single point agree bit for
bit); the rest are Numba's own implementations of ``math``
(``context.get_function``), lane by lane in vectors.

This module needs only Numba, llvmlite and ``gradcomp.vecmath`` (no SymPy):
``gradcomp export`` copies both sources into standalone modules.

Instruction text::

    in 3 1            sizes of the input blocks (one line)
    out 3             sizes of the output blocks (one line)
    NAME OP ARGS...   one value per line, numbered from 0; NAME is '-' or the
                      listing's name of the value (it names the IR value)

``OP`` is one of ``load b j``, ``store b j v``, ``const x``, ``add sub mul div
a b``, ``neg a``, ``bool 0|1``, ``lt le gt ge eq ne a b`` (booleans), ``and or a b``, ``not
a``, ``select c a b``, ``call f a [b]`` (f a function of ``math``, or
``pow``), ``floor a``, ``ceil a`` and ``polygamma n x``.  ``_schedule`` adds two to a long
program: ``acc s set|neg|add|sub v`` (start or add to the total of long sum ``s``) and ``accget s``.
"""


import math
import operator

from llvmlite import binding, ir
from numba import types as numba_types
from numba.core import cgutils
from numba.core import config as numba_config
from numba.core.typing import signature
from numba.extending import intrinsic, register_jitable

from . import vecmath

CALLS = {
    "exp": math.exp, "expm1": math.expm1, "log": math.log, "log1p": math.log1p, "sqrt": math.sqrt,
    "sin": math.sin, "cos": math.cos, "tan": math.tan, "asin": math.asin, "acos": math.acos, "atan": math.atan,
    "atan2": math.atan2, "sinh": math.sinh, "cosh": math.cosh, "tanh": math.tanh, "asinh": math.asinh,
    "acosh": math.acosh, "atanh": math.atanh, "fabs": math.fabs, "erf": math.erf, "erfc": math.erfc,
    "gamma": math.gamma, "lgamma": math.lgamma, "pow": operator.pow,
}
"""Functions an instruction may call, lowered by Numba's implementation for the argument types."""

_INSTRUCTION_CALLS = frozenset({"sqrt", "fabs"})
"""Functions of ``CALLS`` that are one LLVM intrinsic (one instruction) for scalars and vectors alike."""

INLINE_CALLS_MAX = 64
"""A scalar core inlines gradcomp's math functions when it calls them at most this often, and calls
them otherwise.  Each inlined copy brings its fallback branch, and LLVM's greedy register allocator
grows much faster than linearly with blocks crossed by long-lived values: chain200's single-point VJP
(800 calls of sin and cos) spent 92 s in it inlined, 0.05 s called.  Inlining saves about 3 ns a call:
chain12's VJP (48 calls) ran a point in 1.48 us inlined and 1.65 us called, compiling in 0.16 s and
0.075 s; chain50's (200 calls) in 2.42 and 2.99 us, compiling in 0.87 and 0.10 s."""

LONG_PROGRAM = 2000
"""Instructions from which a core is built for LLVM's sake rather than in derive's order
(``_schedule``): its long sums accumulate term by term, each term computed just before it is added;
an empty ``asm sideeffect`` every ``BARRIER_EVERY`` instructions bounds regions, each its own basic
block, in which the inputs are read again (volatile loads) and after which a running total waits in
memory.  Few values then live long, so what LLVM costs stays near linear in the program's length:
LJ-96's single-point VJP (160 000 instructions) compiles in 10 s instead of 32 (store by store, 3 700
values lived at once, and its register allocator took 21 s).

A shorter program keeps derive's order, whose adjacent independent work the CPU overlaps:
rosenbrock32's VJP (about 400 instructions) ran batches at 22-31 Mpts/s store by store, against
37-55 in derive's order (fresh processes, one thread)."""

BARRIER_EVERY = 128
"""Instructions between two empty ``asm sideeffect`` statements in a long core.  Each is a barrier that
no load or store crosses, so LLVM's schedulers and dead-store elimination, which compare every memory
operation of a region with the others, see regions of this many instructions.  The Brusselator's
sparse Jacobian (16 x 16 grid: 1 280 instructions, 3 072 stores) compiled in 3.9 s without them
(2.2 s in the post-RA scheduler), 0.8-1.1 s with one every 50-200."""

ACCUMULATE_MIN = 8
"""Terms from which a sum of a long program accumulates term by term as the terms are computed,
instead of waiting for all of them as derive's balanced tree of additions does.  Within a region
(between two barriers) the total is a register; across regions it waits in memory.  Adding each
term in memory instead made MLP-256's batch 2.2x slower (a chain of loads and stores) and LJ-48's
value_and_vjp 1.3x slower."""

_SUM_OPS = frozenset({"add", "sub", "neg"})

_NEAR = 16
"""After each term, the pending terms that at most this many instructions more would complete are
computed and added at once (found among the users, ``_NEAR_USERS`` at most, of what was just computed,
skipping values used more than ``_NEAR_FANOUT`` times): a pair's energy follows its forces while its
distances are still at hand."""

_NEAR_USERS = 32
_NEAR_FANOUT = 8

_TYPES = {"float64": numba_types.float64, "float32": numba_types.float32}


def core(method: str, code: str, dtype: str):
    """A Numba intrinsic ``core(i, inputs, steps, outputs)`` computing point ``i`` of ``method``.

    ``inputs`` and ``outputs`` are tuples of C-contiguous arrays of ``dtype``
    holding one row per point (``outputs`` row ``i`` is written); ``steps``
    gives per input 1 (row ``i``) or 0 (row 0 serves every point).
    """
    numba_type = _TYPES[dtype]

    @intrinsic
    def core_intrinsic(typingctx, i, inputs, steps, outputs):
        def codegen(context, builder, sig, args):
            program = _parse(code)
            function = _function(context, builder.module, f"gradcomp_{method}_core", program, numba_type)
            index = context.cast(builder, args[0], sig.args[0], numba_types.int64)
            inputs, outputs = _array_data(context, builder, sig, args, 1)
            call_core(builder, function, program, index, inputs, outputs)
            return context.get_dummy_value()

        return numba_types.void(i, inputs, steps, outputs), codegen

    core_intrinsic.__name__ = f"{method}_core"
    return core_intrinsic


VECTOR_BITS_BY_CPU = {
    **dict.fromkeys(("x86-64-v4", "skylake-avx512", "cascadelake", "cooperlake", "cannonlake", "icelake-client",
                     "icelake-server", "tigerlake", "rocketlake", "sapphirerapids", "emeraldrapids",
                     "graniterapids", "graniterapids-d", "znver4", "znver5"), 512),
    **dict.fromkeys(("x86-64-v3", "haswell", "broadwell", "skylake", "alderlake", "raptorlake", "meteorlake",
                     "arrowlake", "gracemont", "znver1", "znver2", "znver3", "sandybridge", "ivybridge",
                     "bdver1", "bdver2", "bdver3", "bdver4"), 256),
}
"""Vector register width of the x86 CPUs ``NUMBA_CPU_NAME`` may name without ``NUMBA_CPU_FEATURES`` (LLVM's
names; AVX-512 where the CPU has avx512f, AVX where it has avx); any other name gets 128 bits."""


def lanes(dtype: str) -> int:
    """Points a batch driver computes at once: the values of one vector register of the CPU Numba
    compiles for (this one, unless ``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES`` name another:
    ``NUMBA_CPU_NAME=haswell`` builds AVX2 code, 4 float64 lanes, on an AVX-512 machine).

    Numba's cache keys machine code by the CPU, so a cached kernel built for one
    width is never loaded on a CPU with another."""
    if numba_config.CPU_NAME and numba_config.CPU_NAME != "host" and not numba_config.CPU_FEATURES:
        bits = VECTOR_BITS_BY_CPU.get(numba_config.CPU_NAME, 128)
    else:
        if numba_config.CPU_FEATURES:
            features = {flag[1:]: flag[0] == "+" for flag in numba_config.CPU_FEATURES.split(",") if flag}
        else:
            features = binding.get_host_cpu_features()
        bits = 512 if features.get("avx512f") else 256 if features.get("avx") else 128
    return bits // (64 if dtype == "float64" else 32)


def compiled_cpu_name() -> str:
    """LLVM's name of the CPU Numba compiles for: ``NUMBA_CPU_NAME``'s, or this machine's."""
    name = numba_config.CPU_NAME
    return name if name and name != "host" else binding.get_host_cpu_name()


NARROW_FP_UNIT_CPUS = frozenset(("znver1", "bdver1", "bdver2", "bdver3", "bdver4", "btver2"))
"""x86 CPUs (LLVM's names) whose floating-point units are 128 bits wide: each 256-bit operation runs as two
halves and a shuffle across halves as several, so moving rows into lanes and back costs twice the work it
costs elsewhere, while packed arithmetic gains no more than 128-bit vectors give (``block_lanes``)."""

SCALAR_BELOW_OPS_PER_SCALAR = 2.0
"""On a narrow-unit CPU, a method with fewer operations per scalar of its row runs one point a block.
Measured on AMD EPYC (znver1, 2 cores), VJP throughput at N = 10 000 (in cache), 1 / 4 lanes: seed
(10 operations over a row of 9 scalars) 673 / 414 Mpts/s, against 552 for a plain Numba loop."""

HALF_WIDTH_BELOW_OPS_PER_SCALAR = 8.0
"""On a narrow-unit CPU, a method with fewer operations per scalar of its row runs half a register of
points a block (128 bits).  Same machine, 2 / 4 / 8 lanes: rosenbrock32 (4.8 per scalar) at N = 100 000
28 / 18 / 15 Mpts/s (its 4-row blocks spill the transposes to the stack); fk6 (18.8) 18 / 20 / 21, lj6
(13.4) 33 / 31 / 28 and chain12 (26.9) 4 / 5 / 6 at N = 10 000."""


def block_lanes(width: int, ops: int, row: int, cpu: str | None = None) -> int:
    """Points a method's batch block computes at once: ``width`` (the CPU's ``LANES``), or fewer where
    moving a row of ``row`` scalars into lanes costs more than ``ops`` operations per point gain from
    them.  ``cpu``: LLVM's name of the CPU the block is for; by default the one Numba compiles for."""
    if (compiled_cpu_name() if cpu is None else cpu) not in NARROW_FP_UNIT_CPUS:
        return width
    per_scalar = ops / max(row, 1)
    if per_scalar < SCALAR_BELOW_OPS_PER_SCALAR:
        return 1
    return max(1, width // 2) if per_scalar < HALF_WIDTH_BELOW_OPS_PER_SCALAR else width


def block(method: str, code: str, dtype: str, width: int):
    """A Numba intrinsic ``block(i, n, inputs, steps, outputs)`` computing points ``i .. i+width-1`` of
    ``method`` at once, each value a vector of ``width`` lanes; lanes past ``n - 1`` compute a copy of
    point ``n - 1`` and store nowhere.  Arguments as for ``core``.

    The core gets a pointer to ``width`` contiguous rows per block and moves them between rows and
    lanes itself (``_Lanes``).  A full block of rows given per point is read and written in place; a
    shared row (step 0) and the last, partial block go through a scratch block of rows.  With
    ``width`` 1 the block is the scalar core on one point."""
    numba_type = _TYPES[dtype]

    @intrinsic
    def block_intrinsic(typingctx, i, n, inputs, steps, outputs):
        def codegen(context, builder, sig, args):
            program = _parse(code)
            core = _function(context, builder.module, f"gradcomp_{method}_block{width}", program, numba_type, width)
            start = context.cast(builder, args[0], sig.args[0], numba_types.int64)
            count = context.cast(builder, args[1], sig.args[1], numba_types.int64)
            inputs, outputs = _array_data(context, builder, sig, args, 2)
            call_block(builder, core, program, width, context.get_value_type(numba_type), start, count,
                       inputs, outputs)
            return context.get_dummy_value()

        return numba_types.void(i, n, inputs, steps, outputs), codegen

    block_intrinsic.__name__ = f"{method}_block"
    return block_intrinsic


def _array_data(context, builder, sig, args, first):
    """A driver's tuples of arrays as the cores take them: (data pointer, step as int64) per input block,
    data pointer per output block; ``first`` the position of the inputs among the intrinsic's arguments."""
    inputs = []
    for array_type, array, step, step_type in zip(
            sig.args[first], cgutils.unpack_tuple(builder, args[first]),
            cgutils.unpack_tuple(builder, args[first + 1]), sig.args[first + 1]):
        inputs.append((context.make_array(array_type)(context, builder, array).data,
                       context.cast(builder, step, step_type, numba_types.int64)))
    outputs = [context.make_array(array_type)(context, builder, array).data
               for array_type, array in zip(sig.args[first + 2], cgutils.unpack_tuple(builder, args[first + 2]))]
    return inputs, outputs


def call_core(builder, function, program, index, inputs, outputs) -> None:
    """Call a single-point core on point ``index``: ``inputs`` (first row, step) per input block, ``outputs``
    the first row of each output block; rows hold a block's scalars one point after another."""
    int64 = ir.IntType(64)
    pointers = [builder.gep(data, [builder.mul(builder.mul(index, step), ir.Constant(int64, size))])
                for (data, step), size in zip(inputs, program.input_sizes)]
    pointers += [builder.gep(data, [builder.mul(index, ir.Constant(int64, size))])
                 for data, size in zip(outputs, program.output_sizes)]
    builder.call(function, pointers)


def call_block(builder, core, program, width, scalar_type, start, count, inputs, outputs) -> None:
    """Call a block core on points ``start .. start + width - 1`` of ``count`` (arguments as ``call_core``'s).

    A full block of rows given per point is read and written in place; a shared row (step 0) and the
    last, partial block go through a scratch block of rows."""
    int64 = ir.IntType(64)
    full = builder.icmp_signed("<=", builder.add(start, ir.Constant(int64, width)), count)
    rows = []
    for (data, step), size in zip(inputs, program.input_sizes):
        if width == 1:  # one point a block: its own row, or the shared one
            rows.append(builder.gep(data, [builder.mul(builder.mul(start, step), ir.Constant(int64, size))]))
            continue
        direct = builder.and_(full, builder.icmp_signed("==", step, ir.Constant(int64, 1)))
        scratch = cgutils.alloca_once(builder, scalar_type, size=width * size)
        with builder.if_then(builder.not_(direct)):
            _copy_rows_in(builder, data, step, start, count, size, scratch, width)
        rows.append(builder.select(direct, builder.gep(data, [builder.mul(start, ir.Constant(int64, size))]),
                                   scratch))
    spills = []
    for data, size in zip(outputs, program.output_sizes):
        if width == 1:
            rows.append(builder.gep(data, [builder.mul(start, ir.Constant(int64, size))]))
            continue
        scratch = cgutils.alloca_once(builder, scalar_type, size=width * size)
        spills.append((data, scratch, size))
        rows.append(builder.select(full, builder.gep(data, [builder.mul(start, ir.Constant(int64, size))]),
                                   scratch))
    builder.call(core, rows)
    with builder.if_then(builder.not_(full)):
        for data, scratch, size in spills:
            _copy_rows_out(builder, scratch, data, start, count, size)


def _copy_rows_in(builder, data, step, start, count, size, scratch, width):
    """The block's ``width`` rows into ``scratch``: row (i + k) * step, past the end row (n - 1) * step."""
    int64 = ir.IntType(64)
    last = builder.sub(count, ir.Constant(int64, 1))
    with cgutils.for_range(builder, ir.Constant(int64, width)) as lane:
        row = builder.add(start, lane.index)
        row = builder.select(builder.icmp_signed("<", row, count), row, last)
        source = builder.gep(data, [builder.mul(builder.mul(row, step), ir.Constant(int64, size))])
        target = builder.gep(scratch, [builder.mul(lane.index, ir.Constant(int64, size))])
        with cgutils.for_range(builder, ir.Constant(int64, size)) as column:
            builder.store(builder.load(builder.gep(source, [column.index])), builder.gep(target, [column.index]))


def _copy_rows_out(builder, scratch, data, start, count, size):
    """The rows of the points before ``n`` from ``scratch`` to the output."""
    int64 = ir.IntType(64)
    target = builder.gep(data, [builder.mul(start, ir.Constant(int64, size))])
    with cgutils.for_range(builder, builder.mul(builder.sub(count, start), ir.Constant(int64, size))) as element:
        builder.store(builder.load(builder.gep(scratch, [element.index])), builder.gep(target, [element.index]))


class _Lanes:
    """A block's rows (array of structs: ``width`` contiguous rows, one per point) as lanes (one
    ``<width x T>`` vector per scalar of the row), and back.

    Rows of at least ``width`` scalars move by ``width x width`` transposes in registers, a group of
    ``width`` columns at a time; shorter rows as one vector of all their scalars and one shuffle per
    column.  Each group is loaded where a column of it is first used and stored once all its columns
    are computed, so that loads and stores interleave with the arithmetic as in the scalar core."""

    def __init__(self, builder, scalar_type, width):
        self.builder = builder
        self.scalar_type = scalar_type
        self.width = width
        self.align = 8 if isinstance(scalar_type, ir.DoubleType) else 4
        self.loaded = {}
        self.pending = {}
        self.written = {}

    def _int(self, value):
        return ir.Constant(ir.IntType(64), value)

    def _vector_at(self, rows, offset, length):
        pointer = self.builder.gep(rows, [self._int(offset)])
        return self.builder.bitcast(pointer, ir.VectorType(self.scalar_type, length).as_pointer())

    def load(self, rows, size, index):
        """Column ``index`` of a block of rows of ``size`` scalars."""
        builder, w = self.builder, self.width
        if size < w:
            key = (id(rows), None)
            if key not in self.loaded:
                self.loaded[key] = builder.load(self._vector_at(rows, 0, w * size), align=self.align)
            chunk = self.loaded[key]
            return builder.shuffle_vector(chunk, ir.Constant(chunk.type, None),
                                          _indices([index + k * size for k in range(w)]))
        first = min(index - index % w, size - w)
        key = (id(rows), first)
        if key not in self.loaded:
            self.loaded[key] = self.transpose([builder.load(self._vector_at(rows, r * size + first, w),
                                                            align=self.align) for r in range(w)])
        return self.loaded[key][index - first]

    def store(self, rows, size, index, value):
        """Column ``index`` of a block of rows; a group's rows are written once all its columns are in."""
        builder, w = self.builder, self.width
        columns = self.pending.setdefault(id(rows), {})
        columns[index] = value
        if size < w:
            if len(columns) == size:
                vectors = [columns[j] for j in range(size)]
                while len(vectors) & (len(vectors) - 1):
                    vectors.append(ir.Constant(vectors[0].type, None))
                chunk = self._concat(vectors)
                chunk = builder.shuffle_vector(chunk, ir.Constant(chunk.type, None),
                                               _indices([(p % size) * w + p // size for p in range(w * size)]))
                builder.store(chunk, self._vector_at(rows, 0, w * size), align=self.align)
            return
        written = self.written.setdefault(id(rows), set())
        firsts = {index - index % w} if index - index % w + w <= size else set()
        if size % w and index >= size - w:
            firsts.add(size - w)  # the last group overlaps its neighbour
        for first in firsts:
            if first not in written and all(first + c in columns for c in range(w)):
                written.add(first)
                group = [columns[first + c] for c in range(w)]
                if all(isinstance(column, ir.Constant) for column in group):
                    # constants (a Hessian's structural zeros): each row is one constant vector, no shuffles
                    transposed = [ir.Constant(group[0].type, [column.constant[r] for column in group])
                                  for r in range(w)]
                else:
                    transposed = self.transpose(group)
                for r, row in enumerate(transposed):
                    builder.store(row, self._vector_at(rows, r * size + first, w), align=self.align)

    def transpose(self, vectors):
        """``width`` vectors of ``width`` lanes, transposed (log2(width) stages of two-source shuffles)."""
        w = self.width
        vectors = list(vectors)
        d = 1
        while d < w:
            for p in range(w):
                if p & d:
                    continue
                a, b = vectors[p], vectors[p + d]
                low = [q if q & d == 0 else w + q - d for q in range(w)]
                high = [q + d if q & d == 0 else w + q for q in range(w)]
                vectors[p] = self.builder.shuffle_vector(a, b, _indices(low))
                vectors[p + d] = self.builder.shuffle_vector(a, b, _indices(high))
            d *= 2
        return vectors

    def _concat(self, parts):
        """Vectors of one type joined end to end (their count a power of two)."""
        while len(parts) > 1:
            parts = [self.builder.shuffle_vector(parts[k], parts[k + 1], _indices(range(2 * parts[k].type.count)))
                     for k in range(0, len(parts), 2)]
        return parts[0]


def _indices(values):
    return ir.Constant(ir.VectorType(ir.IntType(32), len(values)), list(values))


def ir_text(method: str, code: str, dtype: str, width: int = 1) -> str:
    """The LLVM IR of one method's core on ``width`` points at once, as Numba's drivers inline it
    (before optimization): width 1 is the single-point core, the batch drivers' is ``<method>_LANES``."""
    from numba.core.registry import cpu_target
    context = cpu_target.target_context
    context.refresh()
    module = ir.Module(name=f"gradcomp_{method}")
    with context.push_code_library(context.codegen().create_library(f"gradcomp_{method}")):
        name = f"gradcomp_{method}_core" if width == 1 else f"gradcomp_{method}_block{width}"
        _function(context, module, name, _parse(code), _TYPES[dtype], width)
    return str(module)


class _Program:
    __slots__ = ("input_sizes", "output_sizes", "lines", "long")

    def __init__(self, input_sizes, output_sizes, lines, long):
        self.input_sizes = input_sizes
        self.output_sizes = output_sizes
        self.lines = lines
        self.long = long  # at least LONG_PROGRAM instructions: lines as ``_schedule`` gives them


def _parse(code: str) -> _Program:
    lines = code.split("\n")
    inputs, outputs = lines[0].split(), lines[1].split()
    if inputs[0] != "in" or outputs[0] != "out":
        raise ValueError(f"instruction text must start with 'in' and 'out' lines, got {lines[:2]!r}")
    lines = [line for line in lines[2:] if line]
    long = len(lines) >= LONG_PROGRAM
    return _Program([int(s) for s in inputs[1:]], [int(s) for s in outputs[1:]],
                    _schedule(lines) if long else lines, long)


_LITERAL_ARGS = {"load": 2, "store": 2, "const": 1, "bool": 1, "call": 1, "acc": 2, "accget": 1}
"""Per instruction, how many leading arguments are literals; the rest are indices of earlier values."""


def _schedule(lines: list[str]) -> list[str]:
    """A long program's instructions for LLVM: its sums of at least ``ACCUMULATE_MIN`` terms accumulate
    (``acc`` per term, ``accget`` for the total), each term computed just before it is added.

    The terms go from the last computed to the first, each preceded, depth first, by what it needs
    and followed by the pending terms it brought within ``_NEAR`` instructions; then the stores, from
    the last to the first.  A sum of all pairs (LJ's forces) is so computed pair by pair, and each
    pair's values die at once: LJ-48's VJP holds at most 150 values live at once (1 900 store by
    store, 6 800 in derive's order).  The operations are the same except that a long sum adds its terms
    one after the other, in this order; so a gradient differs from a short program's in rounding only.
    """
    parsed = [line.split(" ") for line in lines]
    ops = [parts[1] for parts in parsed]
    operands = [[int(t) for t in parts[2 + _LITERAL_ARGS.get(parts[1], 0):]] for parts in parsed]
    users: list[list[int]] = [[] for _ in parsed]
    for index, args in enumerate(operands):
        for argument in args:
            users[argument].append(index)

    def inner(index):  # a sum node whose only user is a sum node: part of that sum
        return ops[index] in _SUM_OPS and len(users[index]) == 1 and ops[users[index][0]] in _SUM_OPS

    removed = [False] * len(parsed)  # inner nodes of accumulated sums
    slot_of: dict[int, int] = {}  # an accumulated sum's last node -> its slot
    slot_terms: list[list[int]] = []  # per slot, its terms
    terms: list[tuple[int, int, bool]] = []  # (value, slot, negative)
    for root, op in enumerate(ops):
        if op not in _SUM_OPS or inner(root):
            continue
        found, nodes, stack = [], [], [(root, False)]
        while stack:
            index, negative = stack.pop()
            if index != root and not inner(index):
                found.append((index, negative))
                continue
            nodes.append(index)
            args = operands[index]
            if ops[index] == "neg":
                stack.append((args[0], not negative))
            else:
                stack.append((args[1], negative != (ops[index] == "sub")))
                stack.append((args[0], negative))
        if len(found) < ACCUMULATE_MIN:
            continue
        slot_of[root] = len(slot_terms)
        for index in nodes[1:]:
            removed[index] = True
        slot_terms.append(list(range(len(terms), len(terms) + len(found))))
        terms += [(index, len(slot_terms) - 1, negative) for index, negative in found]
    terms_of: dict[int, list[int]] = {}
    for term, (value, _, _) in enumerate(terms):
        terms_of.setdefault(value, []).append(term)

    done = [False] * len(parsed)
    added = [False] * len(terms)
    order: list[int] = []  # instruction index, or -1 - term

    def compute(item, new):
        """``item`` (an instruction, or -1 - a term) after what it needs, depth first."""
        stack = [(item, False)]
        while stack:
            item, ready = stack.pop()
            if (done[item] if item >= 0 else added[-1 - item]):
                continue
            if ready:
                if item >= 0:
                    done[item] = True
                    new.append(item)
                else:
                    added[-1 - item] = True
                order.append(item)
                continue
            stack.append((item, True))
            if item < 0:
                stack.append((terms[-1 - item][0], False))
            elif item in slot_of:
                stack.extend((-1 - t, False) for t in reversed(slot_terms[slot_of[item]]) if not added[t])
            else:
                stack.extend((t, False) for t in reversed(operands[item]) if not done[t])

    def near(value):
        """Whether at most ``_NEAR`` instructions more compute ``value``."""
        seen, stack = set(), [value]
        while stack:
            index = stack.pop()
            if done[index] or index in seen:
                continue
            if index in slot_of or len(seen) == _NEAR:
                return False
            seen.add(index)
            stack.extend(operands[index])
        return True

    def follow(new):
        """Add the pending terms that what was just computed brought near."""
        while new:
            seen, frontier, candidates = {new[-1]}, [new.pop()], []
            while frontier and len(seen) < _NEAR_USERS:
                index = frontier.pop()
                candidates += terms_of.get(index, ())
                if len(users[index]) <= _NEAR_FANOUT:
                    for user in users[index]:
                        if not (done[user] or removed[user] or user in seen):
                            seen.add(user)
                            frontier.append(user)
            for term in candidates:
                if not added[term] and near(terms[term][0]):
                    compute(-1 - term, new)

    for term in sorted(range(len(terms)), key=lambda t: -terms[t][0]):
        if not added[term]:
            new: list[int] = []
            compute(-1 - term, new)
            follow(new)
    for index in reversed([index for index, op in enumerate(ops) if op == "store"]):
        compute(index, [])
    order += [index for index, finished in enumerate(done) if not (finished or removed[index])]  # unused values

    scheduled: list[str] = []
    position: dict[int, int] = {}
    started: set[int] = set()
    for item in order:
        if item < 0:
            value, slot, negative = terms[-1 - item]
            mode = ("sub" if negative else "add") if slot in started else ("neg" if negative else "set")
            started.add(slot)
            scheduled.append(f"- acc {slot} {mode} {position[value]}")
            continue
        name, op, *args = parsed[item]
        position[item] = len(scheduled)
        if item in slot_of:
            scheduled.append(f"{name} accget {slot_of[item]}")
            continue
        literals = _LITERAL_ARGS.get(op, 0)
        scheduled.append(" ".join([name, op, *args[:literals], *(str(position[int(t)]) for t in args[literals:])]))
    return scheduled


def _volatile(instruction):
    """``instruction`` (a load or a store) as volatile: LLVM keeps it where it is and as it is.  A long
    sum's total crosses a barrier in memory this way (no promotion to a register that would live across
    the program), and LLVM's optimizations skip these loads and stores instead of comparing each with
    the others: LJ-96's VJP compiled in 14 s instead of 20."""
    instruction.__class__ = _VOLATILE[type(instruction)]
    return instruction


class _VolatileLoad(ir.LoadInstr):
    def descr(self, buf):
        super().descr(buf)
        buf[-1] = buf[-1].replace("load ", "load volatile ", 1)


class _VolatileStore(ir.StoreInstr):
    def descr(self, buf):
        super().descr(buf)
        buf[-1] = buf[-1].replace("store ", "store volatile ", 1)


_VOLATILE = {ir.LoadInstr: _VolatileLoad, ir.StoreInstr: _VolatileStore}


def _function(context, module, name, program, numba_type, width=1):
    """Build (once per LLVM module) ``void name(in0, ..., out0, ...)`` from the instructions.

    The arguments point to the first row of each block.  With ``width`` 1 every value is a scalar;
    otherwise the arguments point to ``width`` contiguous rows and every value is a ``<width x T>``
    vector, one point per lane."""
    try:
        return module.get_global(name)
    except KeyError:
        pass
    value_type = context.get_value_type(numba_type)
    pointer = value_type.as_pointer()
    n_pointers = len(program.input_sizes) + len(program.output_sizes)
    function = ir.Function(module, ir.FunctionType(ir.VoidType(), [pointer] * n_pointers), name)
    function.linkage = "internal"
    function.attributes.add("alwaysinline")
    function.attributes.add("nounwind")
    for argument in function.args:
        argument.add_attribute("noalias")
    builder = ir.IRBuilder(function.append_basic_block("entry"))
    # An empty asm statement: no instruction, but LLVM's loop vectorizer leaves a loop that calls it alone.
    # Auto-vectorized over points, the array-of-structs rows ran seed's serial VJP at 565 Mpts/s, scalar at
    # 1096; vectorization across points is explicit instead (``block``).
    builder.asm(ir.FunctionType(ir.VoidType(), []), "", "", [], side_effect=True)
    _Emitter(context, builder, function.args, program, numba_type, value_type, width).run(program.lines)
    builder.ret_void()
    return function


def _math_calls(lines) -> int:
    """Calls of gradcomp's math functions (``vecmath``) among the instructions; not sqrt or fabs (one
    instruction each) nor what Numba's libm computes lane by lane."""
    return sum(parts[1] == "call" and parts[2] in vecmath.FUNCTIONS for parts in (line.split(" ", 3) for line in lines))


class _Emitter:
    """One pass over the instruction lines; ``_op_<name>`` builds one instruction.  Every value is a
    scalar (``width`` 1) or a vector of ``width`` lanes, one point per lane."""

    def __init__(self, context, builder, pointers, program, numba_type, scalar_type, width):
        self.context = context
        self.builder = builder
        self.inputs = pointers[:len(program.input_sizes)]
        self.outputs = pointers[len(program.input_sizes):]
        self.program = program
        self.lanes = _Lanes(builder, scalar_type, width)
        self.numba_type = numba_type
        self.scalar_type = scalar_type
        self.width = width
        self.value_type = scalar_type if width == 1 else ir.VectorType(scalar_type, width)
        self.bool_type = ir.IntType(1) if width == 1 else ir.VectorType(ir.IntType(1), width)
        self.values: list = []
        self.name = ""
        self.inline_math = None if width > 1 else _math_calls(program.lines) <= INLINE_CALLS_MAX

    def run(self, lines) -> None:
        values = self.values
        barrier = ir.FunctionType(ir.VoidType(), [])
        self.long = long = self.program.long
        self.exit = None  # a long core's block that returns, where no branch ever goes
        self.reloads = {}  # a long program's loads: value position -> the input's address
        self.region = {}  # address -> its value loaded since the last barrier
        self.totals = {}  # slot -> its long sum's total so far, where it changed or was read since then
        if long:
            self._columns_in_memory()
            slots = sum(line.split(" ", 2)[1] == "accget" for line in lines)
            accumulators = self.builder.alloca(self.value_type, size=slots, name="accumulators")
            # handed to an asm statement, so that LLVM's passes do not analyse them as local memory
            # (LJ-48's VJP: 2.3 s in LLVM this way, 3.9 s without)
            self.builder.asm(ir.FunctionType(ir.VoidType(), [accumulators.type]), "", "r,~{memory}",
                             [accumulators], side_effect=True)
            self.accumulators = [self.builder.gep(accumulators, [ir.Constant(ir.IntType(64), slot)])
                                 for slot in range(slots)]
        for count, line in enumerate(lines, 1):
            if long and count % BARRIER_EVERY == 0:
                for slot, total in self.totals.items():
                    _volatile(self.builder.store(total, self.accumulators[slot]))
                self.builder.asm(barrier, "", "~{memory}", [], side_effect=True)
                self.region = {}
                self.totals = {}
                self._next_block()
            name, op, *args = line.split(" ")
            self.name = "" if name == "-" else name
            values.append(getattr(self, f"_op_{op}")(*args))

    def _next_block(self):
        """Go on in a new basic block, entered by a branch on a flag that is always false: LLVM selects
        instructions and schedules them block by block, and its costs there grow faster than linearly
        with a block's length (LJ-96's single-point VJP: 13.2 s -> 9.9 s with a block per region)."""
        builder = self.builder
        if self.exit is None:
            self.exit = builder.function.append_basic_block("exit")
            self.flag = cgutils.alloca_once_value(builder, ir.Constant(ir.IntType(1), 0))
            here = builder.block
            builder.position_at_end(self.exit)
            builder.ret_void()
            builder.position_at_end(here)
        following = builder.function.append_basic_block()
        builder.cbranch(_volatile(builder.load(self.flag)), self.exit, following)
        builder.position_at_end(following)

    def _columns_in_memory(self):
        """A long core reads each input where it is used, once per region between barriers (a volatile
        load, which LLVM neither moves nor merges), instead of keeping it in a register or a spill slot
        across the program.  A block of points first moves its inputs from rows to columns, in stack
        memory."""
        if self.width > 1:
            columns = []
            for rows, size in zip(self.inputs, self.program.input_sizes):
                column = cgutils.alloca_once(self.builder, self.value_type, size=size)
                for index in range(size):
                    self.builder.store(self.lanes.load(rows, size, index),
                                       self.builder.gep(column, [ir.Constant(ir.IntType(64), index)]))
                columns.append(column)
            self.columns = columns
        else:
            self.columns = list(self.inputs)

    def _lanes(self, vector):
        return [self.builder.extract_element(vector, ir.Constant(ir.IntType(32), k)) for k in range(self.width)]

    def _vector(self, scalars, vector_type):
        vector = ir.Constant(vector_type, None)
        for k, scalar in enumerate(scalars):
            vector = self.builder.insert_element(vector, scalar, ir.Constant(ir.IntType(32), k))
        return vector

    def _per_lane(self, scalar_op, *vectors):
        """A scalar operation applied lane by lane (what has no vector form)."""
        if self.width == 1:
            return scalar_op(*vectors)
        lanes = zip(*(self._lanes(v) for v in vectors))
        return self._vector([scalar_op(*args) for args in lanes], self.value_type)

    def _ref(self, token: str):
        position = int(token)
        column = self.reloads.get(position)
        if column is None:
            return self.values[position]
        value = self.region.get(column)
        if value is None:
            value = self.region[column] = _volatile(self.builder.load(column))
        return value

    def _op_load(self, block, index):
        block, index = int(block), int(index)
        if self.long:
            column = self.builder.gep(self.columns[block], [ir.Constant(ir.IntType(64), index)])
            self.reloads[len(self.values)] = column
            value = self.region[column] = _volatile(self.builder.load(column, name=self.name))
            return value
        if self.width > 1:
            return self.lanes.load(self.inputs[block], self.program.input_sizes[block], index)
        pointer = self.builder.gep(self.inputs[block], [ir.Constant(ir.IntType(64), index)])
        return self.builder.load(pointer, name=self.name)

    def _op_store(self, block, index, value):
        block, index = int(block), int(index)
        if self.width > 1:
            self.lanes.store(self.outputs[block], self.program.output_sizes[block], index, self._ref(value))
            return
        pointer = self.builder.gep(self.outputs[block], [ir.Constant(ir.IntType(64), index)])
        self.builder.store(self._ref(value), pointer)

    def _op_acc(self, slot, mode, value):
        """Add a term to (or start) a long sum's total: in a register within a region, in memory between."""
        builder, slot, value = self.builder, int(slot), self._ref(value)
        if mode == "set":
            self.totals[slot] = value
        elif mode == "neg":
            self.totals[slot] = builder.fneg(value)
        else:
            total = self._total(slot)
            self.totals[slot] = builder.fadd(total, value) if mode == "add" else builder.fsub(total, value)

    def _op_accget(self, slot):
        return self._total(int(slot))

    def _total(self, slot):
        total = self.totals.get(slot)
        if total is None:
            total = self.totals[slot] = _volatile(self.builder.load(self.accumulators[slot]))
        return total

    def _op_const(self, text):
        number = float(text)
        return ir.Constant(self.value_type, number if self.width == 1 else [number] * self.width)

    def _op_bool(self, flag):
        return ir.Constant(self.bool_type, int(flag) if self.width == 1 else [int(flag)] * self.width)

    def _op_add(self, a, b):
        return self.builder.fadd(self._ref(a), self._ref(b), name=self.name)

    def _op_sub(self, a, b):
        return self.builder.fsub(self._ref(a), self._ref(b), name=self.name)

    def _op_mul(self, a, b):
        return self.builder.fmul(self._ref(a), self._ref(b), name=self.name)

    def _op_div(self, a, b):
        return self.builder.fdiv(self._ref(a), self._ref(b), name=self.name)

    def _op_neg(self, a):
        return self.builder.fneg(self._ref(a), name=self.name)

    def _compare(self, op, a, b):
        return self.builder.fcmp_ordered(op, self._ref(a), self._ref(b), name=self.name)

    def _op_lt(self, a, b):
        return self._compare("<", a, b)

    def _op_le(self, a, b):
        return self._compare("<=", a, b)

    def _op_gt(self, a, b):
        return self._compare(">", a, b)

    def _op_ge(self, a, b):
        return self._compare(">=", a, b)

    def _op_eq(self, a, b):
        return self._compare("==", a, b)

    def _op_ne(self, a, b):
        # Python's != is true when either side is NaN: the unordered comparison
        return self.builder.fcmp_unordered("!=", self._ref(a), self._ref(b), name=self.name)

    def _op_and(self, a, b):
        return self.builder.and_(self._ref(a), self._ref(b), name=self.name)

    def _op_or(self, a, b):
        return self.builder.or_(self._ref(a), self._ref(b), name=self.name)

    def _op_not(self, a):
        return self.builder.not_(self._ref(a), name=self.name)

    def _op_select(self, condition, a, b):
        return self.builder.select(self._ref(condition), self._ref(a), self._ref(b), name=self.name)

    def _op_floor(self, a):
        return self._llvm_intrinsic("floor", a)

    def _op_ceil(self, a):
        return self._llvm_intrinsic("ceil", a)

    def _llvm_intrinsic(self, name, a):
        return self.builder.call(vecmath.intrinsic(self.builder.module, name, self.value_type), [self._ref(a)],
                                 name=self.name)

    def _op_call(self, function, *args):
        """gradcomp's own math where it has the function (the same code for scalars and vectors, so a
        batch gives each point's single-point result); Numba's, lane by lane, otherwise."""
        values = [self._ref(a) for a in args]
        if function in _INSTRUCTION_CALLS:
            return self.builder.call(vecmath.intrinsic(self.builder.module, function, self.value_type), values,
                                     name=self.name)
        result = vecmath.emit(self.builder, function, values, self.inline_math)
        if result is not None:
            return result
        return self._per_lane(lambda *lane: self._math(function, lane), *values)

    def _math(self, function, values):
        """What Numba does for ``math.<function>(*values)`` on scalars, cast back to the kernel's dtype."""
        context = self.context
        argument_types = (self.numba_type,) * len(values)
        resolved = context.typing_context.resolve_function_type(
            context.typing_context.resolve_value_type(CALLS[function]), argument_types, {})
        values = [context.cast(self.builder, v, self.numba_type, t) for v, t in zip(values, resolved.args)]
        result = context.get_function(CALLS[function], resolved)(self.builder, values)
        return context.cast(self.builder, result, resolved.return_type, self.numba_type)

    def _op_polygamma(self, order, x):
        return self._per_lane(self._polygamma, self._ref(order), self._ref(x))

    def _polygamma(self, order, x):
        context, builder = self.context, self.builder
        float64 = numba_types.float64
        values = [context.cast(builder, v, self.numba_type, float64) for v in (order, x)]
        # compile_internal would propagate an exception status into the caller's Numba calling convention,
        # which this plain function does not have; polygamma raises nothing, so its status is not read
        sig = signature(float64, float64, float64)
        compiled = context.compile_subroutine(builder, polygamma, sig)
        _, result = context.call_internal_no_propagate(builder, compiled.fndesc, sig, values)
        return context.cast(builder, result, float64, self.numba_type)


_BERNOULLI = (1.0 / 6.0, -1.0 / 30.0, 1.0 / 42.0, -1.0 / 30.0, 5.0 / 66.0, -691.0 / 2730.0)


@register_jitable
def polygamma(order, x):
    """psi^(order)(x) in float64: reflection below 0 (orders 0 and 1), recurrence up to x >= 20, then the
    asymptotic series.  Orders >= 2 below -1e7 give NaN: the recurrence would take that many steps."""
    n = int(order)
    if math.isnan(x) or (x <= 0.0 and x == math.floor(x)):
        return math.nan
    if x < 0.0 and n <= 1:
        # psi(1 - x) - psi(x) = pi cot(pi x) and psi1(1 - x) + psi1(x) = pi^2 / sin^2(pi x); the
        # period-1 fraction keeps pi x small, so the trigonometry is exact to rounding for any x
        s = math.sin(math.pi * (x - math.floor(x)))
        if n == 0:
            return _digamma_positive(1.0 - x) - math.pi * math.cos(math.pi * (x - math.floor(x))) / s
        return (math.pi / s) ** 2 - _polygamma_series(1, 1.0 - x)
    if x < -1e7:
        return math.nan
    return _polygamma_series(n, x)


@register_jitable
def _polygamma_series(n, x):
    """psi^(n)(x) by recurrence up to x >= 20, then the asymptotic series."""
    sign = 1.0 if n % 2 == 1 else -1.0
    factorial = math.gamma(n + 1.0)
    shifted = 0.0
    while x < 20.0:
        shifted += -1.0 / x if n == 0 else sign * factorial / x ** (n + 1)
        x += 1.0
    if n == 0:
        return shifted + _digamma_positive(x)
    total = math.gamma(n) / x**n + factorial / (2.0 * x ** (n + 1))
    for k in range(len(_BERNOULLI)):
        k2 = 2 * (k + 1)
        total += _BERNOULLI[k] * math.gamma(k2 + n) / (math.gamma(k2 + 1.0) * x ** (k2 + n))
    return shifted + sign * total


@register_jitable
def _digamma_positive(x):
    """psi(x) for x > 0: recurrence up to 20, then the asymptotic series."""
    shifted = 0.0
    while x < 20.0:
        shifted -= 1.0 / x
        x += 1.0
    inv2 = 1.0 / (x * x)
    series = inv2 * (1 / 12 - inv2 * (1 / 120 - inv2 * (1 / 252 - inv2 * (1 / 240 - inv2 / 132))))
    return shifted + math.log(x) - 0.5 / x - series
