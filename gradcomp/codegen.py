"""Stage 3: programs -> the Python source of one module of Numba kernels.

Per method the module has a scalar core (one point: read inputs, straight-line
code, write outputs), split into chained ``part`` functions when the program
is long (Numba's compile time grows much faster than linearly with function
length), and two drivers over a batch: a plain loop and a ``prange`` loop.
Every array the drivers see is 2-D and C-contiguous, ``(points, core size)``;
an argument shared by the whole batch has one row and a step of 0.
"""

from __future__ import annotations

import re
from math import prod
from typing import NamedTuple

import sympy as sp
from sympy.logic.boolalg import BooleanAtom

from . import __version__
from .derive import Derivation, Program
from .functions import RULES

PART_STATEMENTS = 400
"""Longest straight-line function emitted; longer programs are split into parts.

Parts cost run time (values cross calls that LLVM does not inline: rosenbrock32
VJP ran 19 Mpts/s split at 150 statements, 37 unsplit), so split only where Numba's
superlinear compile time starts to dominate."""

PARALLEL_WORK = 1_000_000
"""Operations (points x ops per point) from which a batch runs on all cores.

Waking the OpenMP threads costs a few microseconds on an idle machine but a
scheduler slice (~10 ms) when another process holds a core: measured at
N = 1000 on a loaded 2-core machine, prange ran rosenbrock32 37x slower than
the plain loop.  Below ~0.5 ms of serial work the plain loop is the safe choice."""

_RELATIONS = {"<": "<", "<=": "<=", ">": ">", ">=": ">=", "==": "==", "!=": "!="}
_NOT_OPERATIONS = {"f32", "f64", "int", "float"}


class Module(NamedTuple):
    """Generated source and what it holds."""

    source: str
    meta: dict



class Printer:
    """Prints one shallow assignment value as a Numba expression; ``_print_<Class>`` dispatch."""

    def __init__(self, dtype: str):
        self.float32 = dtype == "float32"
        self.helpers: set[str] = set()

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
            return f"{self(expr.lhs)} {_RELATIONS[expr.rel_op]} {self(expr.rhs)}"
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
        for term in expr.args:
            coeff, rest = term.as_coeff_Mul()
            if rest.is_Number:
                coeff, body = coeff * rest, None
            else:
                body = self._atom(rest) if rest.is_Add else self(rest)
            magnitude = abs(coeff)
            if body is None:
                piece = self.literal(magnitude)
            elif magnitude == 1:
                piece = body
            else:
                piece = f"{self.literal(magnitude)}*{body}"
            signed.append((bool(coeff < 0), piece))
        signed.sort(key=lambda item: item[0])
        negative, text = _pairwise(signed)
        text = text[1:-1] if len(signed) > 1 else text
        return f"-({text})" if negative else text

    def _print_Mul(self, expr) -> str:
        coeff, factors = expr.as_coeff_mul()
        numerator = [f for f in factors if not (f.is_Pow and f.exp == -1)]
        denominator = [f.base for f in factors if f.is_Pow and f.exp == -1]
        negative = coeff < 0
        magnitude = -coeff if negative else coeff
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
            product = _power_product(self._atom(base), abs(n))
            if n > 0:
                return product
            return f"{one}/{product}" if abs(n) == 1 else f"{one}/({product})"
        if exponent == sp.S.Half:
            return f"math.sqrt({self(base)})"
        if exponent == -sp.S.Half:
            return f"{one}/math.sqrt({self(base)})"
        if exponent.is_Rational and exponent.q == 2 and exponent > 0:
            return f"{_power_product(self._atom(base), int(exponent.p) // 2)}*math.sqrt({self(base)})"
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
        rule = RULES[type(expr)]
        text = rule.numba.format(*(self(a) for a in expr.args), zero=self.literal(0), one=self.literal(1))
        if rule.helper:
            self.helpers.add(rule.helper)
            if self.float32:
                text = f"f32({text})"
        return text


def _pairwise(signed: list) -> tuple[bool, str]:
    """[(negative, text), ...] with positives first -> (negative, parenthesized sum)."""
    while len(signed) > 1:
        paired = []
        for k in range(0, len(signed) - 1, 2):
            (left_negative, left), (right_negative, right) = signed[k], signed[k + 1]
            if left_negative == right_negative:
                paired.append((left_negative, f"({left} + {right})"))
            elif right_negative:
                paired.append((False, f"({left} - {right})"))
            else:
                paired.append((False, f"({right} - {left})"))
        if len(signed) % 2:
            paired.append(signed[-1])
        signed = paired
    return signed[0]


def _power_product(base: str, n: int) -> str:
    """base**n as multiplications (squaring for large n)."""
    if n <= 4:
        return "*".join([base] * n)
    half = _power_product(base, n // 2)
    square = f"({half})*({half})"
    return f"{square}*{base}" if n % 2 else square


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


# -- the stage ---------------------------------------------------------------

def generate(derivation: Derivation, key: str) -> Module:
    """Derivation -> Module (source text + the metadata the runtime reads)."""
    signature = derivation.signature
    printer = Printer(signature.dtype)
    sections, methods = [], {}
    for method, program in derivation.programs.items():
        text, statements, ops = _method_source(program, printer)
        sections.append(text)
        methods[method] = {
            "inputs": [[b.name, list(b.shape)] for b in program.inputs],
            "outputs": [[b.name, list(b.shape)] for b in program.outputs],
            "statements": statements,
            "ops": ops,
            "parallel_min_points": max(1, PARALLEL_WORK // max(ops, 1)),
        }
    meta = {
        "name": signature.name,
        "key": key,
        "dtype": signature.dtype,
        "arguments": [[a.name, list(a.shape)] for a in signature.arguments],
        "wrt": list(signature.wrt),
        "out_shape": list(signature.out_shape),
        "methods": methods,
        "gradcomp": __version__,
    }
    source = "\n".join([_header(signature, meta, printer)] + sections)
    return Module(source, meta)


def _header(signature, meta, printer) -> str:
    counts = "\n".join(f"    {m:<14} {info['ops']:>6} operations, {info['statements']:>5} statements"
                       for m, info in meta["methods"].items())
    lines = [
        f'"""gradcomp kernel {signature.name or "(unnamed)"}: generated code, do not edit.',
        "",
        f"Computes {signature}",
        "and its derivatives: forward value, vector-Jacobian product (vjp), fused",
        "value_and_vjp, Jacobian-vector product (jvp), Jacobian and (scalar output) Hessian.",
        "Per point (arithmetic operations and calls in each method's core):",
        counts,
        f"Key {meta['key']}, gradcomp {meta['gradcomp']}.",
        '"""',
        "import math",
        "",
        "import numpy as np",
        "from numba import njit, prange",
        "",
        "# Numba caches machine code only for functions of a module that lives in a file.",
        'CACHE = "__file__" in globals()',
    ]
    if printer.float32:
        lines.append("f32 = np.float32")
    lines += ["", f"META = {meta!r}", ""]
    for helper in sorted(printer.helpers):
        lines.append(HELPERS[helper])
    return "\n".join(lines)


def _method_source(program: Program, printer: Printer) -> tuple[str, int, int]:
    names = {a.target.name for a in program.assignments}
    names |= {s.name for b in program.inputs for s in b.operands}
    arrays = _array_names(program, names)
    body = [f"{a.target.name} = {printer(a.value)}" for a in program.assignments]
    ops = count_operations(body)
    reads = [f"r{k} = i * {step}" for k, (_, step) in enumerate(arrays["in"])]
    for k, (block, (array, _)) in enumerate(zip(program.inputs, arrays["in"])):
        reads += [f"{s.name} = {array}[r{k}, {j}]" for j, s in enumerate(block.operands)]
    writes = []
    for block, array in zip(program.outputs, arrays["out"]):
        zeros = sum(1 for o in block.operands if o == 0)
        if zeros > 1:  # sparse results (Hessians, Jacobians): clear the row once, write the rest
            writes.append(f"{array}[i, :] = {printer.literal(0)}")
        writes += [f"{array}[i, {j}] = {printer(o)}" for j, o in enumerate(block.operands) if zeros <= 1 or o != 0]
    numpy_dtype = "np.float32" if printer.float32 else "np.float64"
    parts, body = _split(program, body)
    params = ", ".join([f"{a}, {s}" for a, s in arrays["in"]] + arrays["out"])
    m = program.method
    core = ["@njit(cache=CACHE, error_model=\"numpy\")",
            f"def {m}_core(i, {params}):",
            f'    """One point of {m}: reads row i, writes row i."""']
    core += [f"    {line}" for line in reads + body + writes]
    in_sizes = [prod(b.shape) for b in program.inputs]
    out_sizes = [prod(b.shape) for b in program.outputs]
    point = [
        "",
        "@njit(cache=CACHE, error_model=\"numpy\")",
        f"def {m}_point({', '.join(a for a, _ in arrays['in'])}):",
        '    """One point given inputs of exactly their core shapes: returns the result rows."""']
    point += [f"    {array} = np.empty((1, {size}), {numpy_dtype})" for array, size in zip(arrays["out"], out_sizes)]
    point_args = [f"{a}.reshape((1, {size})), 0" for (a, _), size in zip(arrays["in"], in_sizes)]
    point.append(f"    {m}_core(0, {', '.join(point_args + arrays['out'])})")
    point.append(f"    return ({''.join(f'{array}[0], ' for array in arrays['out'])})")
    driver = "\n".join(point + [
        "",
        "",
        "@njit(cache=CACHE, error_model=\"numpy\")",
        f"def {m}_serial(n, {params}):",
        "    for i in range(n):",
        f"        {m}_core(i, {params})",
        "",
        "",
        "@njit(cache=CACHE, error_model=\"numpy\", parallel=True)",
        f"def {m}_parallel(n, {params}):",
        "    for i in prange(n):",
        f"        {m}_core(np.int64(i), {params})  # prange counts in uint64: one core signature for both",
        ""])
    text = f"\n# ---- {m} " + "-" * (70 - len(m)) + "\n\n" + "".join(parts) + "\n".join(core) + "\n\n" + driver
    return text, len(program.assignments), ops


def _array_names(program, taken) -> dict:
    def fresh(base):
        name, k = base, 0
        while name in taken:
            k += 1
            name = f"{base}_{k}"
        taken.add(name)
        return name
    taken |= {f"r{k}" for k in range(len(program.inputs))}
    return {"in": [(fresh(f"in{k}"), fresh(f"step{k}")) for k in range(len(program.inputs))],
            "out": [fresh(f"out{k}") for k in range(len(program.outputs))]}


def _split(program: Program, body: list[str]) -> tuple[list[str], list[str]]:
    """Long bodies -> part functions chained through arguments and returned tuples.

    (A variant passing values through one scratch row compiled lj48 in 355 s
    instead of 185 s, likely because LLVM inlined its one-argument parts back
    into one giant core.)
    """
    if len(body) <= PART_STATEMENTS:
        return [], body
    targets = [a.target for a in program.assignments]
    uses = [a.value.free_symbols for a in program.assignments]
    last_use = {o: len(targets) for b in program.outputs for o in b.operands if isinstance(o, sp.Symbol)}
    for index, used in enumerate(uses):
        for symbol in used:
            last_use[symbol] = max(last_use.get(symbol, index), index)
    parts, calls = [], []
    method = program.method
    for number, start in enumerate(range(0, len(body), PART_STATEMENTS)):
        end = min(start + PART_STATEMENTS, len(body))
        defined = set(targets[start:end])
        needs = set().union(*uses[start:end])
        params = sorted((s for s in needs - defined), key=lambda s: s.name)
        results = sorted((s for s in defined if last_use.get(s, -1) >= end), key=lambda s: s.name)
        name = f"{method}_part{number}"
        param_text = ", ".join(s.name for s in params)
        result_text = ", ".join(s.name for s in results)
        parts.append("\n".join(
            ["@njit(cache=CACHE, error_model=\"numpy\")", f"def {name}({param_text}):"]
            + [f"    {line}" for line in body[start:end]]
            + [f"    return ({result_text},)", "", ""]))
        calls.append(f"({result_text},) = {name}({param_text})" if results else f"{name}({param_text})")
    return parts, calls


HELPERS = {
    "polygamma": '''
BERNOULLI = (1.0 / 6.0, -1.0 / 30.0, 1.0 / 42.0, -1.0 / 30.0, 5.0 / 66.0, -691.0 / 2730.0)


@njit(cache=CACHE, error_model="numpy")
def polygamma(order, x):
    """psi^(order)(x) in float64: recurrence up to x >= 20, then the asymptotic series."""
    n = int(order)
    x = float(x)
    if math.isnan(x) or (x <= 0.0 and x == math.floor(x)) or x < -1e7:
        return math.nan
    sign = 1.0 if n % 2 == 1 else -1.0
    factorial = math.gamma(n + 1.0)
    shifted = 0.0
    while x < 20.0:
        shifted += -1.0 / x if n == 0 else sign * factorial / x ** (n + 1)
        x += 1.0
    if n == 0:
        inv2 = 1.0 / (x * x)
        series = inv2 * (1 / 12 - inv2 * (1 / 120 - inv2 * (1 / 252 - inv2 * (1 / 240 - inv2 / 132))))
        return shifted + math.log(x) - 0.5 / x - series
    total = math.gamma(n) / x**n + factorial / (2.0 * x ** (n + 1))
    for k in range(len(BERNOULLI)):
        k2 = 2 * (k + 1)
        total += BERNOULLI[k] * math.gamma(k2 + n) / (math.gamma(k2 + 1.0) * x ** (k2 + n))
    return shifted + sign * total
''',
}
