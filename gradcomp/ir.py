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

Transcendental functions are lowered by Numba's own implementations of
``math`` (``context.get_function``), so results are those of a Numba loop.

This module needs only Numba and llvmlite (no SymPy, nothing else of
gradcomp): ``gradcomp export`` copies its source into standalone modules.

Instruction text::

    in 3 1            sizes of the input blocks (one line)
    out 3             sizes of the output blocks (one line)
    NAME OP ARGS...   one value per line, numbered from 0; NAME is '-' or the
                      listing's name of the value (it names the IR value)

``OP`` is one of ``load b j``, ``store b j v``, ``const x``, ``add sub mul div
a b``, ``neg a``, ``bool 0|1``, ``lt le gt ge eq ne a b`` (booleans), ``and or a b``, ``not
a``, ``select c a b``, ``call f a [b]`` (f a function of ``math``, or
``pow``), ``floor a``, ``ceil a`` and ``polygamma n x``.
"""


import math
import operator

from llvmlite import ir
from numba import types as numba_types
from numba.core import cgutils
from numba.core.typing import signature
from numba.extending import intrinsic, register_jitable

CALLS = {
    "exp": math.exp, "expm1": math.expm1, "log": math.log, "log1p": math.log1p, "sqrt": math.sqrt,
    "sin": math.sin, "cos": math.cos, "tan": math.tan, "asin": math.asin, "acos": math.acos, "atan": math.atan,
    "atan2": math.atan2, "sinh": math.sinh, "cosh": math.cosh, "tanh": math.tanh, "asinh": math.asinh,
    "acosh": math.acosh, "atanh": math.atanh, "fabs": math.fabs, "erf": math.erf, "erfc": math.erfc,
    "gamma": math.gamma, "lgamma": math.lgamma, "pow": operator.pow,
}
"""Functions an instruction may call, lowered by Numba's implementation for the argument types."""

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
            pointers = []
            input_values = cgutils.unpack_tuple(builder, args[1])
            step_values = cgutils.unpack_tuple(builder, args[2])
            for array_type, array, step, step_type, size in zip(
                    sig.args[1], input_values, step_values, sig.args[2], program.input_sizes):
                step = context.cast(builder, step, step_type, numba_types.int64)
                offset = builder.mul(builder.mul(index, step), ir.Constant(ir.IntType(64), size))
                pointers.append(builder.gep(context.make_array(array_type)(context, builder, array).data, [offset]))
            for array_type, array, size in zip(sig.args[3], cgutils.unpack_tuple(builder, args[3]),
                                               program.output_sizes):
                offset = builder.mul(index, ir.Constant(ir.IntType(64), size))
                pointers.append(builder.gep(context.make_array(array_type)(context, builder, array).data, [offset]))
            builder.call(function, pointers)
            return context.get_dummy_value()

        return numba_types.void(i, inputs, steps, outputs), codegen

    core_intrinsic.__name__ = f"{method}_core"
    return core_intrinsic


def ir_text(method: str, code: str, dtype: str) -> str:
    """The LLVM IR of one method's core, as Numba's drivers inline it (before optimization)."""
    from numba.core.registry import cpu_target
    context = cpu_target.target_context
    context.refresh()
    module = ir.Module(name=f"gradcomp_{method}")
    with context.push_code_library(context.codegen().create_library(f"gradcomp_{method}")):
        _function(context, module, f"gradcomp_{method}_core", _parse(code), _TYPES[dtype])
    return str(module)


class _Program:
    __slots__ = ("input_sizes", "output_sizes", "lines")

    def __init__(self, input_sizes, output_sizes, lines):
        self.input_sizes = input_sizes
        self.output_sizes = output_sizes
        self.lines = lines


def _parse(code: str) -> _Program:
    lines = code.split("\n")
    inputs, outputs = lines[0].split(), lines[1].split()
    if inputs[0] != "in" or outputs[0] != "out":
        raise ValueError(f"instruction text must start with 'in' and 'out' lines, got {lines[:2]!r}")
    return _Program([int(s) for s in inputs[1:]], [int(s) for s in outputs[1:]], lines[2:])


def _function(context, module, name, program, numba_type):
    """Build (once per LLVM module) ``void name(T* in0, ..., T* out0, ...)`` from the instructions."""
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
    # 1096 (vectorization across points is to be explicit, in struct-of-arrays blocks).
    builder.asm(ir.FunctionType(ir.VoidType(), []), "", "", [], side_effect=True)
    _Emitter(context, builder, function.args, len(program.input_sizes), numba_type, value_type).run(program.lines)
    builder.ret_void()
    return function


class _Emitter:
    """One pass over the instruction lines; ``_op_<name>`` builds one instruction."""

    def __init__(self, context, builder, pointers, n_inputs, numba_type, value_type):
        self.context = context
        self.builder = builder
        self.inputs = pointers[:n_inputs]
        self.outputs = pointers[n_inputs:]
        self.numba_type = numba_type
        self.value_type = value_type
        self.values: list = []
        self.name = ""

    def run(self, lines) -> None:
        values = self.values
        for line in lines:
            if not line:
                continue
            name, op, *args = line.split(" ")
            self.name = "" if name == "-" else name
            values.append(getattr(self, f"_op_{op}")(*args))

    def _ref(self, token: str):
        return self.values[int(token)]

    def _op_load(self, block, index):
        pointer = self.builder.gep(self.inputs[int(block)], [ir.Constant(ir.IntType(64), int(index))])
        return self.builder.load(pointer, name=self.name)

    def _op_store(self, block, index, value):
        pointer = self.builder.gep(self.outputs[int(block)], [ir.Constant(ir.IntType(64), int(index))])
        self.builder.store(self._ref(value), pointer)

    def _op_const(self, text):
        return ir.Constant(self.value_type, float(text))

    def _op_bool(self, flag):
        return ir.Constant(ir.IntType(1), int(flag))

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
        function = self.builder.module.declare_intrinsic(f"llvm.{name}", [self.value_type])
        return self.builder.call(function, [self._ref(a)], name=self.name)

    def _op_call(self, function, *args):
        """What Numba does for ``math.<function>(*args)``, cast back to the kernel's dtype."""
        context = self.context
        argument_types = (self.numba_type,) * len(args)
        resolved = context.typing_context.resolve_function_type(
            context.typing_context.resolve_value_type(CALLS[function]), argument_types, {})
        values = [context.cast(self.builder, self._ref(a), self.numba_type, t) for a, t in zip(args, resolved.args)]
        result = context.get_function(CALLS[function], resolved)(self.builder, values)
        return context.cast(self.builder, result, resolved.return_type, self.numba_type)

    def _op_polygamma(self, order, x):
        context, builder = self.context, self.builder
        float64 = numba_types.float64
        values = [context.cast(builder, self._ref(a), self.numba_type, float64) for a in (order, x)]
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
