"""Stage 3: programs -> the kernel module: Numba drivers, and per method the code for its core.

Per method the module holds
- the *listing*: the straight-line program, one statement per line, with the
  names that trace back to the source (``x1_bar``); op counts come from it;
- the *instructions*: the same operations as text over numbered values, from
  which ``gradcomp.ir`` builds the core as LLVM IR when Numba compiles a driver
  (no Python front end per statement, so size costs little compile time);
- three Numba drivers: a point function (the scalar core), a plain loop and a
  ``prange`` loop over blocks of ``LANES`` points (the core on SIMD vectors, one
  point per lane), which release the GIL (other threads run meanwhile, a
  background compile too).
The drivers' Python uses only names of its own (``in0``, ``step0``, ``out0``):
no user symbol name ever appears in code, so none can clash with it.
Every array the drivers see is C-contiguous with one row per point; an
argument shared by the whole batch has one row and a step of 0.
"""

from __future__ import annotations

import math
import re
from math import prod
from typing import NamedTuple

import sympy as sp
from sympy.core.numbers import mlib
from sympy.logic.boolalg import BooleanAtom

from .derive import Derivation, Program, available_methods
from .functions import rule_for
from .record import DRIVERS, VECTOR_ROW_MAX, KernelRecord, MethodRecord
from .spec import dump_signature
from .version import __version__

PARALLEL_WORK = 1_000_000
"""Operations (points x ops per point) from which a batch runs on all cores.

Waking the OpenMP threads costs a few microseconds on an idle machine but a
scheduler slice (~10 ms) when another process holds a core: measured at
N = 1000 on a loaded 2-core machine, prange ran rosenbrock32 37x slower than
the plain loop.  Below ~0.5 ms of serial work the plain loop is the safe choice."""

SQUARING_MAX_EXPONENT = 64
"""Integer powers up to this are products (by squaring beyond the 4th); higher ones call pow, whose
result is correctly rounded where n squarings would lose about n ulps."""


class Module(NamedTuple):
    """Generated source and what it holds."""

    source: str
    meta: KernelRecord


class Printer:
    """Prints one shallow assignment value as a Python expression for the listing; ``_print_<Class>``
    dispatch.  The listing is what people read and what op counts are counted on; the instructions
    (``Emitter``) compute the same operations in the same order."""

    def __init__(self, dtype: str):
        self.float32 = dtype == "float32"
        self._statements: dict = {}  # value -> its text: the programs of one module share most assignments

    def statement(self, value) -> str:
        """``value`` printed once per module, however many programs assign it."""
        text = self._statements.get(value)
        if text is None:
            text = self._statements[value] = self(value)
        return text

    def literal(self, number) -> str:
        value = float(number)
        if value != value:
            text = "math.nan"
        elif value in (float("inf"), float("-inf")):
            text = "math.inf" if value > 0 else "-math.inf"
        else:
            text = repr(value)
        return f"f32({text})" if self.float32 else text

    def __call__(self, expr) -> str:
        if isinstance(expr, BooleanAtom):
            return "True" if expr else "False"
        if isinstance(expr, sp.Symbol):
            return expr.name
        if expr.is_Number:
            return self.literal(expr)
        method = getattr(self, f"_print_{type(expr).__name__}", None)
        if method is not None:
            return method(expr)
        if expr.is_Add:
            return self._print_Add(expr)
        if expr.is_Mul:
            return self._print_Mul(expr)
        if expr.is_Pow:
            return self._print_Pow(expr)
        if isinstance(expr, sp.core.relational.Relational):
            return f"{self(expr.lhs)} {expr.rel_op} {self(expr.rhs)}"
        return self._print_function(expr)

    def _atom(self, expr) -> str:
        """``expr`` printed so that it can stand as a factor."""
        text = self(expr)
        simple = isinstance(expr, sp.Symbol) or (expr.is_Number and float(expr) >= 0)
        return text if simple else f"({text})"

    def _print_Add(self, expr) -> str:
        """A balanced tree of sums, signs as subtraction; all negative -> -(a + b).

        Without fastmath LLVM keeps the printed order, so a left-to-right sum
        of n terms is a chain of n dependent additions; pairs make it log2(n)
        deep (and pairwise summation is also the more accurate one)."""
        signed = []
        for negative, magnitude, rest in _terms(expr):
            if rest is None:
                piece = self.literal(magnitude)
            else:
                body = self._atom(rest) if rest.is_Add else self(rest)
                piece = body if magnitude == 1 else f"{self.literal(magnitude)}*{body}"
            signed.append((negative, piece))
        negative, text = _pairwise(signed, lambda a, b: f"({a} + {b})", lambda a, b: f"({a} - {b})")
        text = text[1:-1] if len(signed) > 1 else text
        return f"-({text})" if negative else text

    def _print_Mul(self, expr) -> str:
        negative, magnitude, numerator, denominator = _factors(expr)
        parts = [self._atom(f) for f in numerator]
        if magnitude != 1 or not parts:
            parts.insert(0, self.literal(magnitude))
        text = "*".join(parts) + "".join(f"/{self._atom(d)}" for d in denominator)
        return f"-{text}" if negative else text

    def _print_Pow(self, expr) -> str:
        base, exponent = expr.args
        one = self.literal(1)
        if exponent.is_Integer:
            n = int(exponent)
            product = _power_text(self._atom(base), abs(n))
            if n > 0:
                return product
            return f"{one}/{product}" if abs(n) == 1 else f"{one}/({product})"
        if exponent == sp.S.Half:
            return f"math.sqrt({self(base)})"
        if exponent == -sp.S.Half:
            return f"{one}/math.sqrt({self(base)})"
        if exponent.is_Rational and exponent.q == 2 and exponent > 0:
            return f"{_power_text(self._atom(base), int(exponent.p) // 2)}*math.sqrt({self(base)})"
        return f"{self._atom(base)}**{self._atom(exponent)}"

    def _print_Piecewise(self, expr) -> str:
        text = "math.nan" if not self.float32 else "f32(math.nan)"
        for value, condition in reversed(expr.args):
            if condition == sp.true:
                text = self(value)
            else:
                text = f"({self(value)} if {self(condition)} else {text})"
        return text

    def _print_And(self, expr) -> str:
        return "(" + " and ".join(self(a) for a in expr.args) + ")"

    def _print_Or(self, expr) -> str:
        return "(" + " or ".join(self(a) for a in expr.args) + ")"

    def _print_Not(self, expr) -> str:
        return f"(not {self(expr.args[0])})"

    def _print_function(self, expr) -> str:
        return rule_for(type(expr)).numba.format(*(self(a) for a in expr.args), zero=self.literal(0),
                                                 one=self.literal(1))


def _terms(expr) -> list:
    """A sum's terms as (negative, |coefficient|, the rest or None for a number), positives first:
    the listing and the instructions build a sum from the same terms in the same order."""
    terms = []
    for term in expr.args:
        coeff, rest = term.as_coeff_Mul()
        if rest.is_Number:
            coeff, rest = coeff * rest, None
        terms.append((_negative(coeff), abs(coeff), rest))
    return sorted(terms, key=lambda item: item[0])


def _negative(number) -> bool:
    """``number < 0``, for SymPy numbers without SymPy's comparison (a sympify per call: this runs for
    every term of every sum printed)."""
    if number.is_Rational:
        return number.p < 0
    if number.is_Float:
        return mlib.mpf_lt(number._mpf_, mlib.fzero)
    return bool(number < 0)


def _factors(expr) -> tuple:
    """A product as (negative, |coefficient|, numerator factors, denominator bases)."""
    coeff, factors = expr.as_coeff_mul()
    numerator = [f for f in factors if not (f.is_Pow and f.exp == -1)]
    denominator = [f.base for f in factors if f.is_Pow and f.exp == -1]
    return _negative(coeff), abs(coeff), numerator, denominator


def _pairwise(signed: list, add, sub) -> tuple:
    """[(negative, piece), ...], positives first -> (negative, their sum as a balanced tree of ``add`` and
    ``sub``): a sum never becomes a chain of n dependent additions."""
    while len(signed) > 1:
        paired = []
        for k in range(0, len(signed) - 1, 2):
            (left_negative, left), (right_negative, right) = signed[k], signed[k + 1]
            if left_negative == right_negative:
                paired.append((left_negative, add(left, right)))
            elif right_negative:
                paired.append((False, sub(left, right)))
            else:
                paired.append((False, sub(right, left)))
        if len(signed) % 2:
            paired.append(signed[-1])
        signed = paired
    return signed[0]


def _power_text(base: str, n: int) -> str:
    """base**n as the listing shows it: products up to the 4th power (what is computed), else ``**``
    (computed by squaring, or by pow beyond ``SQUARING_MAX_EXPONENT``)."""
    return "*".join([base] * n) if n <= 4 else f"{base}**{n}"


_NUMBER = re.compile(r"(?<![\w.])\d[\d.]*(?:e[+-]?\d+)?")
_CALL = re.compile(r"(?<![\w.])(?!f32\(|int\(|float\()[A-Za-z_][\w.]*\(")
_OPERATORS = re.compile(r"\*\*|==|!=|<=|>=|[-+*/<>]| if | and | or |\bnot ")


def count_operations(statements) -> int:
    """Arithmetic operations, comparisons, selects and calls in generated statements.

    Counted on the printed text (literals and dtype casts excluded), so the
    number is what the generated code does; linear in its length.
    """
    total = 0
    for statement in statements:
        expression = _NUMBER.sub("0", statement.split(" = ", 1)[-1])
        total += len(_OPERATORS.findall(expression)) + len(_CALL.findall(expression))
    return total




# -- instructions --------------------------------------------------------------

class Emitter:
    """SymPy values of one program -> instruction text for ``gradcomp.ir``; ``_emit_<Class>`` dispatch.

    Mirrors ``Printer`` operation for operation (balanced sums, products left
    to right, the same selects), so the listing shows what the core computes.
    """

    _RELATIONS = {"<": "lt", "<=": "le", ">": "gt", ">=": "ge", "==": "eq", "!=": "ne"}

    def __init__(self):
        self.lines: list[str] = []
        self.refs: dict = {}  # program Var -> value number
        self._constants: dict[str, int] = {}

    def emit(self, op: str, *args, name: str = "-") -> int:
        self.lines.append(" ".join((name, op, *map(str, args))))
        return len(self.lines) - 1

    def constant(self, number) -> int:
        text = repr(float(number))
        if text not in self._constants:
            self._constants[text] = self.emit("const", text)
        return self._constants[text]

    def assign(self, target, value) -> None:
        self.refs[target] = self.value(value, _ir_name(target.name))

    def value(self, expr, name: str = "-") -> int:
        if isinstance(expr, BooleanAtom):
            return self.emit("bool", int(bool(expr)), name=name)
        if isinstance(expr, sp.Symbol):
            return self.refs[expr]
        if expr.is_Number:
            return self.constant(expr)
        method = getattr(self, f"_emit_{type(expr).__name__}", None)
        if method is not None:
            return method(expr, name)
        if expr.is_Add:
            return self._emit_Add(expr, name)
        if expr.is_Mul:
            return self._emit_Mul(expr, name)
        if expr.is_Pow:
            return self._emit_Pow(expr, name)
        if isinstance(expr, sp.core.relational.Relational):
            return self.emit(self._RELATIONS[expr.rel_op], self.value(expr.lhs), self.value(expr.rhs), name=name)
        return self._emit_function(expr, name)

    def _emit_Add(self, expr, name):
        signed = []
        for negative, magnitude, rest in _terms(expr):
            if rest is None:
                piece = self.constant(magnitude)
            elif magnitude == 1:
                piece = self.value(rest)
            else:
                piece = self.emit("mul", self.constant(magnitude), self.value(rest))
            signed.append((negative, piece))
        negative, total = _pairwise(signed, lambda a, b: self.emit("add", a, b), lambda a, b: self.emit("sub", a, b))
        return self.emit("neg", total, name=name) if negative else self._named(total, name)

    def _emit_Mul(self, expr, name):
        negative, magnitude, numerator, denominator = _factors(expr)
        parts = [self.value(f) for f in numerator]
        if magnitude != 1 or not parts:
            parts.insert(0, self.constant(magnitude))
        if negative:  # the listing's -a*b is (-a)*b
            parts[0] = self.emit("neg", parts[0])
        result = parts[0]
        for part in parts[1:]:
            result = self.emit("mul", result, part)
        for divisor in denominator:
            result = self.emit("div", result, self.value(divisor))
        return self._named(result, name)

    def _emit_Pow(self, expr, name):
        base, exponent = expr.args
        if exponent.is_Integer and abs(exponent) > SQUARING_MAX_EXPONENT:
            return self.emit("call", "pow", self.value(base), self.constant(exponent), name=name)
        if exponent.is_Integer:
            n = int(exponent)
            product = self._power(self.value(base), abs(n))
            return self._named(product if n > 0 else self.emit("div", self.constant(1), product), name)
        if exponent == sp.S.Half:
            return self.emit("call", "sqrt", self.value(base), name=name)
        if exponent == -sp.S.Half:
            return self.emit("div", self.constant(1), self.emit("call", "sqrt", self.value(base)), name=name)
        if exponent.is_Rational and exponent.q == 2 and exponent > 0:
            root = self.emit("call", "sqrt", self.value(base))
            return self.emit("mul", self._power(self.value(base), int(exponent.p) // 2), root, name=name)
        return self.emit("call", "pow", self.value(base), self.value(exponent), name=name)

    def _power(self, base: int, n: int) -> int:
        """base**n: a chain of products up to n = 4, else by squaring (log2(n) products)."""
        if n <= 4:
            result = base
            for _ in range(n - 1):
                result = self.emit("mul", result, base)
            return result
        result, square = None, base
        while n:
            if n & 1:
                result = square if result is None else self.emit("mul", result, square)
            n >>= 1
            if n:
                square = self.emit("mul", square, square)
        return result

    def _emit_Piecewise(self, expr, name):
        result = None
        pairs = list(expr.args)
        if pairs[-1][1] == sp.true:
            result = self.value(pairs.pop()[0])
        else:
            result = self.constant(float("nan"))
        for value, condition in reversed(pairs):
            result = self.emit("select", self.value(condition), self.value(value), result)
        return self._named(result, name)

    def _emit_And(self, expr, name):
        return self._fold("and", expr.args, name)

    def _emit_Or(self, expr, name):
        return self._fold("or", expr.args, name)

    def _emit_Not(self, expr, name):
        return self.emit("not", self.value(expr.args[0]), name=name)

    def _fold(self, op, args, name):
        result = self.value(args[0])
        for arg in args[1:]:
            result = self.emit(op, result, self.value(arg))
        return self._named(result, name)

    def _emit_function(self, expr, name):
        op = _ir_op(rule_for(type(expr)))
        args = [self.value(a) for a in expr.args]
        if op == "identity":
            return args[0]
        if op == "zero":
            return self.constant(0)
        if op in ("max", "min"):  # the first argument wins a tie; NaN in either gives NaN
            a, b = args
            keep_a = self.emit("or", self.emit("ge" if op == "max" else "le", a, b), self.emit("ne", a, a))
            return self.emit("select", keep_a, a, b, name=name)
        if op == "sign":  # NaN and +-0 give themselves
            (x,) = args
            zero = self.constant(0)
            inner = self.emit("select", self.emit("lt", x, zero), self.constant(-1), x)
            return self.emit("select", self.emit("gt", x, zero), self.constant(1), inner, name=name)
        if op == "arg":  # of a real number: 0 or pi; NaN gives NaN
            (x,) = args
            zero = self.constant(0)
            angle = self.emit("select", self.emit("lt", x, zero), self.constant(math.pi), zero)
            return self.emit("select", self.emit("ne", x, x), x, angle, name=name)
        if op == "heaviside":
            x, at_zero = args
            zero = self.constant(0)
            inner = self.emit("select", self.emit("eq", x, zero), at_zero, x)
            inner = self.emit("select", self.emit("lt", x, zero), zero, inner)
            return self.emit("select", self.emit("gt", x, zero), self.constant(1), inner, name=name)
        return self.emit(*op.split(), *args, name=name)

    def _named(self, value: int, name: str) -> int:
        """Give the last instruction the assignment's name when it computed ``value``."""
        if name != "-" and value == len(self.lines) - 1 and self.lines[value].startswith("- "):
            self.lines[value] = name + self.lines[value][1:]
        return value


_MATH_CALL = re.compile(r"math\.(\w+)\(")


def _ir_op(rule) -> str:
    """A rule's instruction: its ``ir`` entry, else a call of the ``math`` function it prints as."""
    return rule.ir or f"call {_MATH_CALL.match(rule.numba).group(1)}"


def _ir_name(name: str) -> str:
    """The listing's name on the IR value, where it is plain ASCII (IR names are for reading only)."""
    return name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) else "-"


def instructions(program: Program) -> str:
    """A program as instruction text: the input and output block sizes, loads, the body, stores."""
    emitter = Emitter()
    lines = [f"in {' '.join(str(len(b.operands)) for b in program.inputs)}",
             f"out {' '.join(str(len(b.operands)) for b in program.outputs)}"]
    for b, block in enumerate(program.inputs):
        for j, symbol in enumerate(block.operands):
            emitter.refs[symbol] = emitter.emit("load", b, j, name=_ir_name(symbol.name))
    for assignment in program.assignments:
        emitter.assign(assignment.target, assignment.value)
    for b, block in enumerate(program.outputs):
        for j, operand in enumerate(block.operands):
            emitter.emit("store", b, j, emitter.value(operand))
    return "\n".join(lines + emitter.lines)


# -- the stage ---------------------------------------------------------------

def generate(derivation: Derivation, key: str) -> Module:
    """Derivation -> Module (source text + the metadata the runtime reads)."""
    signature = derivation.signature
    printer = Printer(signature.dtype)
    sections, methods = [], {}
    for method, program in derivation.programs.items():
        text, statements, ops = _method_source(program, printer, signature.dtype)
        sections.append(text)
        methods[method] = MethodRecord(
            inputs=tuple((b.name, b.shape) for b in program.inputs),
            outputs=tuple((b.name, b.shape) for b in program.outputs),
            statements=statements, ops=ops, parallel_min_points=max(1, PARALLEL_WORK // max(ops, 1)),
            layout=None if program.layout is None else tuple((tuple(p), tuple(i)) for p, i in program.layout))
    meta = KernelRecord(
        name=signature.name, key=key, dtype=signature.dtype,
        arguments=tuple((a.name, a.shape) for a in signature.arguments), wrt=signature.wrt,
        out_shape=signature.out_shape, methods=methods,
        deferred=tuple(m for m in available_methods(signature) if m not in methods), gradcomp=__version__)
    source = "\n".join([_header(signature, meta)] + sections)
    return Module(source, meta)


def _header(signature, meta) -> str:
    counts = "\n".join(f"    {m:<14} {info.ops:>6} operations, {info.statements:>5} statements"
                       for m, info in meta.methods.items())
    return "\n".join([
        f'"""gradcomp kernel {signature.name or "(unnamed)"}: generated code, do not edit.',
        "",
        f"Computes {signature}",
        "and its derivatives: forward value, vector-Jacobian product (vjp), fused",
        "value_and_vjp, Jacobian-vector product (jvp), Jacobian and (scalar output) Hessian.",
        "Per point (arithmetic operations and calls in each method's listing):",
        counts,
        *([f"Derived when first called: {', '.join(meta.deferred)}."] if meta.deferred else []),
        "Each method's listing is its straight-line program, and its instructions are the same",
        "operations, built into LLVM IR by gradcomp.ir when Numba compiles a driver.",
        f"Key {meta.key}, gradcomp {meta.gradcomp}.",
        '"""',
        "import numpy as np",
        "from numba import njit, prange",
        "",
        "from gradcomp.ir import block, block_lanes, core, lanes",
        "from gradcomp.record import KernelRecord, MethodRecord",
        "",
        "# Numba caches machine code only for functions of a module that lives in a file.",
        'CACHE = "__file__" in globals()',
        "",
        "# Points the batch drivers compute at once, in the lanes of this CPU's vector registers.",
        f'LANES = lanes("{signature.dtype}")',
        "",
        f"META = {meta!r}",
        "",
        "# What the kernel computes, from which the methods derived when first called start.",
        f"SIGNATURE = {dump_signature(signature)!r}",
        "",
    ])


def listing(program: Program, printer: Printer) -> list[str]:
    """The program as statements people read: ``name = expression``, one per assignment."""
    return [f"{a.target.name} = {printer.statement(a.value)}" for a in program.assignments]


def _lanes(program: Program, ops: int) -> str:
    """The points a batch block of ``program`` computes at once: 1 for huge rows, else what the CPU the
    module is imported on gains from (``block_lanes``: its ``LANES``, fewer for a light method)."""
    row = sum(prod(b.shape) for b in program.inputs) + sum(prod(b.shape) for b in program.outputs)
    if row > VECTOR_ROW_MAX:
        return f"1  # rows of {row} scalars: see VECTOR_ROW_MAX"
    return f"block_lanes(LANES, ops={ops}, row={row})"


def _method_source(program: Program, printer: Printer, dtype: str) -> tuple[str, int, int]:
    body = listing(program, printer)
    ops = count_operations(body)
    m = program.method
    point, serial, parallel = DRIVERS
    ins = [f"in{k}" for k in range(len(program.inputs))]
    steps = [f"step{k}" for k in range(len(program.inputs))]
    outs = [f"out{k}" for k in range(len(program.outputs))]
    params = ", ".join([p for pair in zip(ins, steps) for p in pair] + outs)
    call_ins = f"({', '.join(ins)},)"
    call_outs = f"({', '.join(outs)},)"
    reads = [f"#   in  {b.name}{list(b.shape)} = [{', '.join(s.name for s in b.operands)}]" for b in program.inputs]
    writes = [f"#   out {b.name}{list(b.shape)} = [{', '.join(printer(o) for o in b.operands)}]"
              for b in program.outputs]
    lines = [f"# ---- {m} " + "-" * (70 - len(m)), "#", f"# listing of {m}: one point, {ops} operations", "#"]
    lines += reads + [f"#   {line}" for line in body] + writes
    lines += ["", "", f'{m}_CODE = """{instructions(program)}"""', f'{m}_core = core("{m}", {m}_CODE, "{dtype}")',
              f"{m}_LANES = {_lanes(program, ops)}",
              f'{m}_block = block("{m}", {m}_CODE, "{dtype}", {m}_LANES)', "", ""]
    out_sizes = [prod(b.shape) for b in program.outputs]
    lines += [
        '@njit(cache=CACHE, error_model="numpy", nogil=True)',
        f"def {m}_{point}({', '.join(ins)}):",
        '    """One point given inputs of exactly their core shapes: returns the result rows."""']
    lines += [f"    {o} = np.empty((1, {size}), np.{dtype})" for o, size in zip(outs, out_sizes)]
    lines += [f"    {m}_core(0, {call_ins}, ({', '.join('0' for _ in ins)},), {call_outs})",
              f"    return ({''.join(f'{o}[0], ' for o in outs)})",
              "",
              "",
              '@njit(cache=CACHE, error_model="numpy", nogil=True)',
              f"def {m}_{serial}(n, {params}):",
              f"    for b in range((n + {m}_LANES - 1) // {m}_LANES):",
              f"        {m}_block(b * {m}_LANES, n, {call_ins}, ({', '.join(steps)},), {call_outs})",
              "",
              "",
              '@njit(cache=CACHE, error_model="numpy", nogil=True, parallel=True)',
              f"def {m}_{parallel}(n, {params}):",
              f"    for b in prange((n + {m}_LANES - 1) // {m}_LANES):",
              f"        {m}_block(b * {m}_LANES, n, {call_ins}, ({', '.join(steps)},), {call_outs})",
              ""]
    return "\n".join(lines), len(program.assignments), ops
