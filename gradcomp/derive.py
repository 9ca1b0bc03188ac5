"""Stage 2: the expression DAG as straight-line assignments, and sweeps over it.

The user's outputs are lowered once into *shallow* assignments (one operation
on symbols and numbers each), hash-consed so that equal values are computed
once.  Derivatives never touch the user's expression tree: a reverse sweep
(VJP) or a forward sweep (JVP) visits each assignment once and differentiates
that one small node with SymPy.  Every node a sweep creates goes through the
same hash-consing builder, so derivative programs share forward values: that
is the CSE over the derivative programs.
"""

from __future__ import annotations

import functools
import re
import sys
import threading
from collections import defaultdict
from math import prod
from typing import NamedTuple

import sympy as sp
from sympy.core.basic import _args_sortkey
from sympy.logic.boolalg import Boolean, BooleanAtom
from sympy.matrices.expressions.matexpr import MatrixElement

from .errors import CompileError
from .functions import BINARY, RULES, rule_for
from .linalg import SolveEntry
from .solverules import forward_rule, lower_solve, reverse_rule
from .spec import Argument, Signature, postorder

# Beyond these sizes SymPy's cse is skipped: its opt_cse pass grows quadratically (3.4 s of 11 s on
# lj24) and hash-consing alone still shares every repeated subtree.
_CSE_MAX_NODES = 2_000
_CSE_MAX_DEPTH = 400


class Var(sp.Dummy):
    """A value of a program: named for people (``x1_bar``), equal only to itself.

    Never equal to a user's symbol of the same name, so no spelling of the
    user's names (``lambda`` beside ``lambda_1``) can make two values one.
    """

    def _sympystr(self, printer) -> str:
        return self.name


class Assignment(NamedTuple):
    target: sp.Symbol
    value: sp.Basic  # one operation on operands (Symbols or numbers)

    def __str__(self) -> str:
        return f"{self.target} = {self.value}"


class Block(NamedTuple):
    """A named group of scalars with a shape: an argument, an output, a cotangent."""

    name: str
    shape: tuple[int, ...]
    operands: tuple  # Symbols or SymPy numbers, C order


class Program(NamedTuple):
    """Straight-line code for one kernel method: inputs -> assignments -> outputs.

    ``layout``: what the runtime needs to read outputs that are not dense
    arrays (the sparse Jacobian's pattern: ``[[indptr, indices], ...]`` per
    wrt argument, CSR over (output, argument) flattened in C order).
    """

    method: str
    inputs: tuple[Block, ...]
    assignments: tuple[Assignment, ...]
    outputs: tuple[Block, ...]
    layout: list | None = None

    def __str__(self) -> str:
        lines = [f"program {self.method}:"]
        lines += [f"  in  {b.name}{list(b.shape)} = {list(b.operands)}" for b in self.inputs]
        lines += [f"  {a}" for a in self.assignments]
        lines += [f"  out {b.name}{list(b.shape)} = {list(b.operands)}" for b in self.outputs]
        return "\n".join(lines)


class Derivation(NamedTuple):
    """Every method's program, derived from one signature over one shared graph."""

    signature: Signature
    programs: dict  # method -> Program

    def __str__(self) -> str:
        return f"{self.signature}\n" + "\n".join(str(p) for p in self.programs.values())


def _identifier(name: str) -> str:
    ident = re.sub(r"\W", "_", name).strip("_") or "s"
    if ident[0].isdigit():
        ident = "s" + ident
    return ident


class Graph:
    """Hash-consed straight-line code, built in topological order."""

    def __init__(self) -> None:
        self.order: list[sp.Symbol] = []
        self.position: dict[sp.Symbol, int] = {}  # index in ``order``: cones sort without a scan of the graph
        self.value: dict[sp.Symbol, sp.Basic] = {}
        self.uses: dict[sp.Symbol, tuple[sp.Symbol, ...]] = {}  # every symbol a node reads
        self.operands: dict[sp.Symbol, tuple[sp.Symbol, ...]] = {}  # those a derivative flows through
        self.interned: dict[sp.Basic, sp.Symbol] = {}
        self.lowered: dict = {}  # any expression seen -> its operand
        self.boolean: set[sp.Symbol] = set()
        self.taken: set[str] = set()
        self._temp_count = 0
        self._partials: dict = {}
        self._missing: list = []
        self.solves: dict = {}  # member of a solve's solution -> its SolveGroup: the sweeps apply its rule
        self._solved: dict = {}  # LinearSolve -> SolveGroup: each solve is lowered once
        self._spans: list = []  # (start, end, group): the nodes a solve's lowering made, until sealed

    # -- names -------------------------------------------------------------
    def fresh_name(self, base: str) -> str:
        name, k = base, 0
        while name in self.taken:
            k += 1
            name = f"{base}_{k}"
        self.taken.add(name)
        return name

    def leaf(self, name: str, source=None) -> sp.Symbol:
        """A new input scalar; ``source`` (a user leaf) lowers to it from now on."""
        symbol = Var(self.fresh_name(_identifier(name)))
        self.lowered[symbol] = symbol
        if source is not None:
            self.lowered[source] = symbol
        return symbol

    # -- building ----------------------------------------------------------
    def intern(self, value, hint: str | None = None):
        """The operand holding ``value``: a number, an existing node, or a new one."""
        if isinstance(value, (sp.Symbol, BooleanAtom)) or value.is_Number:
            return value
        if not value.free_symbols:
            return _constant(value)
        if value in self.interned:
            return self.interned[value]
        if hint is None:
            self._temp_count += 1
            hint = f"t{self._temp_count}"
        is_boolean = isinstance(value, Boolean)
        target = Var(self.fresh_name(hint))
        if is_boolean:
            self.boolean.add(target)
        self.position[target] = len(self.order)
        self.order.append(target)
        self.value[target] = value
        self.uses[target] = uses = tuple(sorted(value.free_symbols, key=_name))
        # the operands a derivative flows through: conditions are piecewise constant
        self.operands[target] = () if is_boolean else tuple(s for s in uses if s not in self.boolean)
        self.interned[value] = target
        self.lowered[target] = target
        return target

    def lower(self, root, hint: str | None = None):
        """Lower any supported expression into nodes; iterative, so depth is no limit."""
        lowered = self.lowered
        if root in lowered:
            return lowered[root]
        stack = [(root, False)]
        while stack:
            expr, expanded = stack.pop()
            if expr in lowered:
                continue
            if not expanded:
                pending = [c for c in _children(expr) if c not in lowered]
                if pending:
                    stack.append((expr, True))
                    stack.extend((c, False) for c in pending)
                    continue
            lowered[expr] = self._rebuild(expr, hint if expr is root else None)
        if self._missing:
            missing = sorted({str(s) for s in self._missing})
            self._missing.clear()
            raise CompileError(
                f"the outputs use symbol(s) {', '.join(missing)} that are not among the arguments; "
                f"add them to args (as parameters, outside wrt, if they are constants).")
        return lowered[root]

    def _rebuild(self, expr, hint):
        get = self.lowered.get
        if isinstance(expr, BooleanAtom) or expr.is_Number:
            return expr
        if expr.is_NumberSymbol:
            return sp.Float(float(expr))
        if isinstance(expr, (sp.Symbol, MatrixElement)):
            self._missing.append(expr)
            return sp.Symbol(f"missing_{len(self._missing)}")
        if expr.is_Add:
            terms = []
            for term in expr.args:
                coeff, rest = term.as_coeff_Mul()
                terms.append(coeff * rest if rest.is_Number else _times(coeff, get(rest)))
            return self.intern(_sum(terms), hint)
        if expr.is_Mul:
            return self._product(expr, hint)
        if expr.is_Pow:
            base, exponent = (a if a.is_Number else get(a) for a in expr.args)
            if exponent.is_Integer and exponent < -1 and not base.is_Number:
                # b**-k as (1/b)**k: one division, shared by every power of b and by their derivatives
                # (LJ's r2**-6 and r2**-3 and the gradient's r2**-7 and r2**-4 took four divisions)
                return self.intern(sp.Pow(self.intern(sp.Pow(base, -1)), -exponent), hint)
            return self.intern(sp.Pow(base, exponent), hint)
        if isinstance(expr, sp.Piecewise):
            pairs = [(get(e) if e in self.lowered else e, get(c) if c in self.lowered else c) for e, c in expr.args]
            return self.intern(sp.Piecewise(*pairs), hint)
        if isinstance(expr, SolveEntry):
            i, j = expr.index
            return self._solve_group(expr.solve).x[i][j]
        args = [a if (isinstance(a, BooleanAtom) or a.is_Number) else get(a) for a in expr.args]
        if type(expr) in BINARY:  # ordered pairs, left to right: the first argument wins a tie
            binary = BINARY[type(expr)]
            accumulated = args[0]
            for arg in args[1:-1]:
                accumulated = self.intern(binary(accumulated, arg))
            return self.intern(binary(accumulated, args[-1]), hint)
        return self.intern(expr.func(*args), hint)

    def _solve_group(self, node):
        """Lower a LinearSolve once.  Its members get the adjoint rule in the sweeps when each is a node of
        its own (a constant system may fold some away: then derivatives go through the elimination)."""
        if node not in self._solved:
            start = len(self.order)
            group = lower_solve(self, node)
            members = [v for row in group.x for v in row]
            if len(set(members)) == len(members) and all(self.position.get(v, -1) >= start for v in members):
                self.solves.update((v, group) for v in members)
                self._spans.append((start, len(self.order), group))
            self._solved[node] = group
        return self._solved[node]

    def seal_solves(self, outputs) -> None:
        """Keep the adjoint rule only for solves whose elimination nothing else reads: hash-consing may
        share one of its nodes with the rest of the graph, and the rule never sweeps through them."""
        for start, end, group in self._spans:
            members = {v for row in group.x for v in row}
            interior = {v for v in self.order[start:end] if v not in members}
            shared = any(o in interior for o in outputs) or any(
                any(u in interior for u in self.uses[v])
                for v in self.order[start:] if v not in members and v not in interior)
            if shared:
                for v in members:
                    self.solves.pop(v, None)
        self._spans = []

    def _product(self, expr, hint):
        """c * f1 * f2 * ... -> a chain of nodes with at most two factors each."""
        coeff = sp.S.One
        factors = []
        for factor in expr.args:
            if factor.is_Number:
                coeff *= factor
                continue
            reciprocal = factor.is_Pow and factor.exp == -1
            operand = self.lowered[factor.base if reciprocal else factor]
            if operand.is_Number:
                coeff *= 1 / operand if reciprocal else operand
            else:
                factors.append(operand**-1 if reciprocal else operand)
        own = [a for a in expr.args if not a.is_Number]
        if len(factors) == len(own) <= 2 and all(f in own for f in factors):
            return self.intern(expr, hint)  # already one product of operands: rebuilding it gives itself
        factors.sort(key=lambda f: (f.is_Pow, _name(f.base if f.is_Pow else f)))  # numerators first: a*b/c
        while len(factors) > 2:
            factors[:2] = [self.intern(sp.Mul(*factors[:2]))]
        return self.intern(sp.Mul(coeff, *factors), hint)

    # -- derivatives -------------------------------------------------------
    def partial(self, target, operand):
        """d target / d operand as ``coefficient * operand``; computed once per pair."""
        key = (target, operand)
        if key not in self._partials:
            value = self.value[target]
            if value.is_Add:  # a sum's partials are its coefficients: no diff over every term
                for term in value.args:
                    coeff, rest = term.as_coeff_Mul()
                    if not rest.is_Number:
                        self._partials[(target, rest)] = self._partials.get((target, rest), 0) + coeff
            else:
                self._partials[key] = self.scaled(_partial(value, operand, target))
        return self._partials[key]

    def scaled(self, expr, hint: str | None = None):
        """Lower ``expr`` but keep a numeric factor outside as ``c * operand``.

        Sweeps multiply adjoints and partials on: a sign or factor left symbolic
        folds into the next product or sum (``a - b*c``) instead of costing a
        negation of its own.  Outputs are materialized with ``lower``.
        """
        expr = sp.sympify(expr)
        coeff, rest = expr.as_coeff_Mul()
        if rest.is_Add or rest.is_Number:
            return self.lower(expr, hint)
        if self.lowered.get(rest) is rest:  # a multiple of an operand already
            return expr
        return _times(coeff, self.lower(rest, hint))

    def active_from(self, sources) -> set:
        """Symbols whose value depends on any of ``sources``."""
        active = set(sources)
        for target in self.order:
            if any(s in active for s in self.operands[target]):
                active.add(target)
        return active

    def ancestors(self, operands, through_solves: bool = False) -> list:
        """The nodes needed to compute ``operands``, in graph order.  ``through_solves``: what a sweep
        visits, where a solve's member needs its group and the solve's A and b, never its elimination."""
        needed = set()
        stack = [o for o in operands if o in self.value]
        solves = self.solves if through_solves else {}
        while stack:
            target = stack.pop()
            if target in needed:
                continue
            needed.add(target)
            group = solves.get(target)
            if group is None:
                stack.extend(s for s in self.uses[target] if s in self.value)
                continue
            stack.extend(v for rows in (group.x, group.a, group.b) for row in rows for v in row if v in self.value)
        if len(needed) * 8 > len(self.order):
            return [t for t in self.order if t in needed]
        return sorted(needed, key=self.position.__getitem__)  # a small cone of a large graph (sparse Jacobians)

    def chain(self, target, operand, weight):
        """``weight * d target / d operand``, the term a sweep adds (adjoint or tangent).

        Where a branch is inactive the term is *selected* away rather than
        multiplied by 0, so a NaN or inf in an untaken branch (sqrt of a
        negative, 1/0) never leaks into the derivative: a Piecewise passes its
        weight to the active branch only, and a weight that is itself such a
        selection gates everything computed from it.
        """
        value = self.value[target]
        if isinstance(value, sp.Piecewise):
            return sp.Add(*(_select(value.args, k, weight) for k, (branch, _) in enumerate(value.args)
                            if branch == operand))
        partial = self.partial(target, operand)
        if partial == 0:
            return sp.S.Zero
        coeff, symbol = weight.as_coeff_Mul()
        gate = self.value.get(symbol)
        if isinstance(gate, sp.Piecewise):
            inner = {branch for branch, _ in gate.args if branch != 0 and branch is not sp.nan}
            if len(inner) == 1:
                (inner,) = inner
                return sp.Piecewise(*((branch if branch == 0 or branch is sp.nan else coeff * inner * partial,
                                       condition) for branch, condition in gate.args))
        partial_coeff, partial_symbol = partial.as_coeff_Mul()
        return _times(coeff * partial_coeff, symbol, partial_symbol) if symbol != partial_symbol else weight * partial

    def reverse_sweep(self, seeds, sources, active) -> list:
        """Adjoints of ``sources`` given ``(operand, cotangent)`` seeds: one VJP pass."""
        contributions = defaultdict(list)
        for operand, cotangent in seeds:
            if operand in active:
                contributions[operand].append(cotangent)
        for target in reversed(self.ancestors([o for o, _ in seeds], through_solves=True)):
            group = self.solves.get(target)
            if group is not None:  # every member's adjoint is complete once the earliest is reached
                if target is group.earliest:
                    adjoints = [[self.scaled(_sum(contributions.pop(v, []))) for v in row] for row in group.x]
                    reverse_rule(self, group, adjoints, contributions, active)
                continue
            if target not in contributions:
                continue
            adjoint = self.scaled(_sum(contributions.pop(target)), hint=f"{target}_bar")
            if adjoint == 0:
                continue
            for operand in self.operands[target]:
                if operand in active:
                    term = self.chain(target, operand, adjoint)
                    if term != 0:
                        contributions[operand].append(term)
        return [self.lower(_sum(contributions.get(s, [])), hint=f"{s}_bar") for s in sources]

    def forward_sweep(self, tangents: dict, outputs) -> list:
        """Tangents of ``outputs`` given tangents of some leaves: one JVP pass."""
        tangent = dict(tangents)
        for target in self.ancestors(outputs, through_solves=True):
            group = self.solves.get(target)
            if group is not None:
                if target is group.earliest:
                    forward_rule(self, group, tangent)
                continue
            terms = [self.chain(target, s, tangent[s]) for s in self.operands[target] if s in tangent]
            if terms:
                value = self.scaled(_sum(terms), hint=f"{target}_dot")
                if value != 0:
                    tangent[target] = value
        return [self.lower(tangent.get(o, sp.S.Zero)) for o in outputs]


def _select(pairs, k, weight):
    """Piecewise: ``weight`` where branch k is the active one, else 0 (NaN where no branch is: there
    the value itself is NaN)."""
    selected = [(sp.S.Zero, condition) for _, condition in pairs[:k]] + [(weight, pairs[k][1])]
    if pairs[k][1] != sp.true:
        if pairs[-1][1] == sp.true:
            selected.append((sp.S.Zero, sp.true))
        else:
            selected += [(sp.S.Zero, condition) for _, condition in pairs[k + 1:]] + [(sp.nan, sp.true)]
    return sp.Piecewise(*selected)


def _name(symbol) -> str:
    return symbol.name


def _constant(value):
    number = value.evalf(20)
    if not number.is_real:
        raise CompileError(f"the constant {value} is not real ({number}); gradcomp computes in real arithmetic.")
    return sp.Float(float(number)) if number.is_finite else number


def _children(expr) -> list:
    """The subexpressions that must be lowered before ``expr``; rejects what gradcomp cannot compute."""
    if isinstance(expr, (BooleanAtom, sp.Symbol, MatrixElement)) or expr.is_Number or expr.is_NumberSymbol:
        return []
    if expr.is_Add:
        return [rest for rest in (t.as_coeff_Mul()[1] for t in expr.args) if not rest.is_Number]
    if expr.is_Mul:
        return [f.base if (f.is_Pow and f.exp == -1) else f for f in expr.args if not f.is_Number]
    if isinstance(expr, sp.Piecewise):
        return [part for pair in expr.args for part in pair if not isinstance(part, BooleanAtom)]
    if isinstance(expr, SolveEntry):
        return [e for e in expr.solve.args[3:] if not e.is_Number]
    if (expr.is_Pow or rule_for(type(expr)) is not None
            or isinstance(expr, (sp.core.relational.Relational, sp.And, sp.Or, sp.Not))):
        return [a for a in expr.args if not (isinstance(a, BooleanAtom) or a.is_Number)]
    raise CompileError(_unsupported_message(expr))


def _unsupported_message(expr) -> str:
    kind = type(expr).__name__
    if isinstance(expr, sp.core.function.AppliedUndef):
        return (f"{expr} is an undefined function {kind!r} with no numeric implementation; "
                f"write it out in supported functions or make it an argument.")
    if expr.has(sp.I) and expr.is_number:
        return f"{expr} is complex; gradcomp computes in real arithmetic."
    if isinstance(expr, (sp.Integral, sp.Derivative, sp.Sum, sp.Product)):
        return f"{kind} {expr} is unevaluated and has no numeric implementation; call .doit() first or rewrite it."
    supported = ", ".join(sorted(cls.__name__ for cls in RULES))
    return (f"{kind} (in {str(expr)[:120]}) has no numeric implementation in gradcomp; supported: "
            f"+ - * / ** Piecewise and relations, {supported}.")


def _partial(value, operand, target):
    """d value / d operand as a SymPy expression over operands (and ``target`` for the value)."""
    if value.is_Mul:
        if any(a.is_Pow and a.exp is sp.S.NegativeOne and a.base == operand for a in value.args):
            return -target / operand  # d(a/b)/db = -(a/b)/b: reuse the quotient
        return _cofactor(value, operand)
    if value.is_Pow:
        base, exponent = value.args
        if operand == exponent and operand != base:
            # 0**y * log(0) is 0 * -inf: take the limit 0 where the power vanishes, as PyTorch does
            return sp.Piecewise((sp.S.Zero, sp.Eq(target, 0)), (target * sp.log(base), True))
        if exponent.is_Integer and exponent > 0:
            return exponent * base ** (exponent - 1)
        if exponent == sp.S.Half:
            return sp.S.Half / target
        if exponent is sp.S.NegativeOne:
            return -target**2  # d(1/b)/db = -(1/b)**2: a product, not a second division
        if exponent.is_Number and exponent < 1:
            return exponent * target / base  # reuses the power; at base 0 the derivative is infinite anyway
        return exponent * base ** (exponent - 1)  # finite at base 0 where exponent > 1
    rule = rule_for(type(value))
    if rule is not None and rule.partials is not None:
        partials = rule.partials(value.args, target)
        return sp.Add(*(p for a, p in zip(value.args, partials) if a == operand))
    return sp.diff(value, operand).xreplace({value: target})


def _cofactor(product, operand):
    """d product / d operand where ``operand`` is one plain factor of a product of operands and their
    powers: the other factors, as ``sp.diff`` gives them (a subset of canonically ordered factors is
    canonically ordered) without SymPy's differentiation machinery; anything else goes to ``sp.diff``."""
    others = [a for a in product.args if a is not operand]
    simple = all(a.is_Number or a.is_Symbol or (a.is_Pow and a.base.is_Symbol and a.exp.is_Number
                                                 and a.base != operand) for a in others)
    if len(others) != len(product.args) - 1 or not simple or operand in others:
        return sp.diff(product, operand)
    if len(others) == 1:
        return others[0]
    return sp.Mul._from_args(others)


def _times(coeff, *symbols):
    """``coeff * symbols[0] * ...`` for a SymPy number and distinct symbols, as ``sp.Mul`` builds it
    (coefficient first, the rest in SymPy's canonical order) without its general flatten, which is most
    of a sweep's time: every derivative term is such a product.  Other operands go through ``sp.Mul``."""
    symbols = [s for s in symbols if s is not sp.S.One]  # the rest of a number's as_coeff_Mul
    plain = coeff.is_Rational or (coeff.is_Float and coeff._mpf_[1] != 0)  # Floats: finite and nonzero
    if not plain or not all(s.is_Symbol for s in symbols) or len(set(symbols)) != len(symbols):
        return sp.Mul(coeff, *symbols)
    if coeff is sp.S.Zero:
        return coeff
    factors = sorted(symbols, key=_args_sortkey) if len(symbols) > 1 else symbols
    if coeff is not sp.S.One or not factors:
        factors.insert(0, coeff)
    return factors[0] if len(factors) == 1 else sp.Mul._from_args(factors)


def _sum(terms):
    """``sp.Add(*terms)`` where the terms are multiples of distinct products of symbols (what sweeps and
    lowering add): those terms, in SymPy's canonical order, without Add's general flatten, which would
    take each term apart and build it again.  Other terms (numbers, like terms) go through ``sp.Add``."""
    if len(terms) < 2:
        return sp.Add(*terms)
    rests = set()
    for term in terms:
        coeff, rest = term.as_coeff_Mul()
        plain = coeff.is_Rational or (coeff.is_Float and coeff._mpf_[1] != 0)  # Floats: finite and nonzero
        if not (plain and coeff is not sp.S.Zero and (rest.is_Symbol or (rest.is_Mul and _monomial(rest)))):
            return sp.Add(*terms)
        rests.add(rest)
    if len(rests) < len(terms):
        return sp.Add(*terms)
    return sp.Add._from_args(sorted(terms, key=_args_sortkey))


def _monomial(product) -> bool:
    """A product of symbols and their numeric powers only."""
    return all(a.is_Symbol or (a.is_Pow and a.base.is_Symbol and a.exp.is_Number) for a in product.args)


def _dag_size(roots) -> tuple[int, int]:
    """(distinct nodes, depth) of an expression DAG, without recursion."""
    depth: dict = {}
    for expr in postorder(roots):
        depth[expr] = 1 + max((depth[a] for a in expr.args), default=0)
    return len(depth), max((depth[r] for r in roots), default=0)


# -- the stage ---------------------------------------------------------------

BASE_METHODS = ("forward", "vjp", "value_and_vjp")
"""Derived by every compile; the JVP (a tangent sweep), the Jacobian (n sweeps) and the Hessian (n sweeps
of the gradient) are derived when first asked for (70% of the derivation of a 100-deep chain was its
Hessian; LJ-48's JVP was 0.6 of its 1.6 s)."""


SECOND_ORDER = ("hvp", "vjp_jvp")
"""Forward-over-reverse products, derived when first called: ``hvp`` (scalar outputs: H t) and
``vjp_jvp`` (any output: J t and the tangent of vᵀJ along t, what a double backward needs)."""


def available_methods(signature: Signature) -> tuple[str, ...]:
    """Every method a kernel of this signature offers."""
    scalar = signature.out_shape == ()
    hessian = ("hessian",) if scalar and len(signature.wrt) == 1 else ()
    hvp = ("hvp",) if scalar else ()
    return BASE_METHODS + ("jvp", "jacobian") + hessian + hvp + ("vjp_jvp", "jacobian_sparse")


RECENT_KEPT = 2
RECENT_MAX_NODES = 200_000
"""How many derivations ``derive(..., memo_key=...)`` keeps (their graphs up to this many nodes), so that a
method derived on first call (the Jacobian) reuses the lowered graph and the sweeps done already instead of
lowering the outputs again: the 10-link pendulum's Jacobian derived in 0.71 s from scratch."""
_recent: dict = {}  # memo key -> (graph, builders, programs built so far)
_recent_lock = threading.Lock()


def derive(signature: Signature, methods=BASE_METHODS, memo_key: str | None = None) -> Derivation:
    """Signature -> the Programs of ``methods`` (a subset of ``available_methods``), in that table's order.

    ``memo_key`` (the kernel's key): reuse the graph of this process's last derivation under that key, and
    keep this one.  The programs are those of one derivation of every method asked for so far, in the
    table's order, as a fresh derivation gives them when the methods come in that order."""
    unknown = set(methods) - set(available_methods(signature))
    if unknown:
        raise CompileError(f"methods {sorted(unknown)} are not available for {signature}; "
                           f"available: {list(available_methods(signature))}.")
    wanted = [m for m in available_methods(signature) if m in methods]
    if memo_key is None:
        _, builders = _builders(signature)
        return Derivation(signature, {m: builders[m]() for m in wanted})
    with _recent_lock:
        graph, builders, built = _recent.pop(memo_key, None) or (*_builders(signature), {})
        for method in wanted:
            if method not in built:
                built[method] = builders[method]()
        if len(graph.order) <= RECENT_MAX_NODES:
            _recent[memo_key] = graph, builders, built
            while len(_recent) > RECENT_KEPT:
                del _recent[next(iter(_recent))]
        return Derivation(signature, {m: built[m] for m in wanted})


def _builders(signature: Signature):
    """(graph, method -> a function building its Program on that graph)."""
    graph = Graph()
    arg_blocks = tuple(
        Block(a.name, a.shape, tuple(graph.leaf(_leaf_name(leaf), leaf) for leaf in a.leaves))
        for a in signature.arguments)
    outputs = _lower_outputs(graph, signature.outputs)
    graph.seal_solves(outputs)
    out_shape = signature.out_shape
    y = Block("y", out_shape, tuple(outputs))
    wrt_blocks = [arg_blocks[i] for i in signature.wrt]
    wrt_leaves = [s for b in wrt_blocks for s in b.operands]
    active = graph.active_from(wrt_leaves)
    cotangent = Block("v", out_shape, tuple(graph.leaf(f"v{k}") for k in range(len(outputs))))
    tangent_blocks = [Block(f"t_{b.name}", b.shape, tuple(graph.leaf(f"{s}_dot") for s in b.operands))
                      for b in wrt_blocks]

    def program(method, outs, extra_inputs=(), layout=None):
        inputs = arg_blocks + tuple(extra_inputs)
        needed = graph.ancestors([o for b in outs for o in b.operands])
        return Program(method, inputs, tuple(Assignment(t, graph.value[t]) for t in needed), tuple(outs), layout)

    def per_wrt(prefix, flat, leading_shape=()):
        blocks, start = [], 0
        for b in wrt_blocks:
            size = prod(leading_shape) * len(b.operands)
            blocks.append(Block(f"{prefix}_{b.name}", leading_shape + b.shape, tuple(flat[start:start + size])))
            start += size
        return blocks

    tangent_leaves = [s for b in tangent_blocks for s in b.operands]
    tangents = dict(zip(wrt_leaves, tangent_leaves))

    @functools.cache  # the gradient of a scalar output: vjp, value_and_vjp and hvp share one sweep
    def gradient():
        return graph.reverse_sweep([(outputs[0], sp.S.One)], wrt_leaves, active)

    @functools.cache
    def vjp_blocks():
        if len(outputs) == 1:  # v scales the whole sweep: sweep with 1, scale each gradient once at the end
            adjoints = [graph.lower(cotangent.operands[0] * g, hint=f"{s}_bar") for g, s in zip(gradient(), wrt_leaves)]
        else:
            adjoints = graph.reverse_sweep(list(zip(outputs, cotangent.operands)), wrt_leaves, active)
        return per_wrt("vjp", adjoints)

    def jvp_block():
        return Block("jvp", out_shape, tuple(graph.forward_sweep(tangents, outputs)))

    def vjp_jvp_blocks():
        """Forward over reverse: one tangent sweep of (y, vᵀJ) gives J t and (vᵀJ)' = vᵀ (d²y) t."""
        adjoints = [s for b in vjp_blocks() for s in b.operands]
        swept = graph.forward_sweep(tangents, [*outputs, *adjoints])
        return [Block("jvp", out_shape, tuple(swept[:len(outputs)]))] + per_wrt("hvp", swept[len(outputs):])

    builders = {
        "forward": lambda: program("forward", [y]),
        "vjp": lambda: program("vjp", vjp_blocks(), [cotangent]),
        "value_and_vjp": lambda: program("value_and_vjp", [y] + vjp_blocks(), [cotangent]),
        "jvp": lambda: program("jvp", [jvp_block()], tangent_blocks),
        "jacobian": lambda: program("jacobian", per_wrt("jac", _jacobian(graph, outputs, wrt_blocks, active),
                                                        out_shape)),
        "hessian": lambda: program("hessian", per_wrt("hess", _hessian(graph, outputs[0], wrt_leaves, active),
                                                      wrt_blocks[0].shape)),
        "hvp": lambda: program("hvp", per_wrt("hvp", graph.forward_sweep(tangents, gradient())), tangent_blocks),
        "vjp_jvp": lambda: program("vjp_jvp", vjp_jvp_blocks(), [cotangent, *tangent_blocks]),
        "jacobian_sparse": lambda: program("jacobian_sparse", *_sparse_jacobian(graph, outputs, wrt_blocks, active)),
    }
    return graph, builders


def _leaf_name(leaf) -> str:
    if isinstance(leaf, MatrixElement):
        return f"{leaf.parent}_{leaf.i}_{leaf.j}"
    return leaf.name


def _lower_outputs(graph: Graph, outputs) -> list:
    """CSE the outputs once with SymPy (when it is affordable), then lower them."""
    nodes, depth = _dag_size(outputs)
    solves = any(isinstance(node, SolveEntry) for node in postorder(outputs)) if nodes <= _CSE_MAX_NODES else True
    if not solves and nodes <= _CSE_MAX_NODES and depth <= min(_CSE_MAX_DEPTH, sys.getrecursionlimit() // 4):
        replacements, reduced = sp.cse(list(outputs), symbols=sp.numbered_symbols("cse", cls=sp.Dummy),
                                       order="none")
        for dummy, value in replacements:
            graph.lowered[dummy] = graph.lower(value)
        outputs = reduced
    return [graph.lower(expr) for expr in outputs]


def _jacobian(graph: Graph, outputs, wrt_blocks, active) -> list:
    """J flattened per wrt argument (outputs x that argument): by whichever sweep needs fewer passes."""
    wrt_leaves = [s for b in wrt_blocks for s in b.operands]
    n_out, n_in = len(outputs), len(wrt_leaves)
    if _reverse_is_cheaper(graph, outputs, wrt_leaves, active):
        rows = [graph.reverse_sweep([(outputs[k], sp.S.One)], wrt_leaves, active) for k in range(n_out)]
    else:
        columns = [graph.forward_sweep({leaf: sp.S.One}, outputs) for leaf in wrt_leaves]
        rows = [[columns[j][k] for j in range(n_in)] for k in range(n_out)]
    flat, start = [], 0
    for block in wrt_blocks:
        end = start + len(block.operands)
        flat += [rows[k][j] for k in range(n_out) for j in range(start, end)]
        start = end
    return flat


def _reverse_is_cheaper(graph: Graph, outputs, wrt_leaves, active) -> bool:
    """Whether one reverse sweep per output visits fewer nodes than one forward sweep per input: a node
    costs each sweep that reaches it (the outputs that depend on it; the inputs it depends on).  The
    counts, not the Jacobian's shape, decide: the 10-link pendulum's right-hand side has 22 outputs and
    23 inputs, but half its outputs are speeds, and forward sweeps from the speeds touch only the forcing
    (15 821 operations against 42 067)."""
    cone = graph.ancestors([o for o in outputs if isinstance(o, sp.Symbol)])
    inputs = {leaf: 1 << j for j, leaf in enumerate(wrt_leaves)}
    forward = 0
    for target in cone:
        if target in active:
            mask = 0
            for operand in graph.operands[target]:
                mask |= inputs.get(operand, 0)
            inputs[target] = mask
            forward += mask.bit_count()
    users = defaultdict(int)
    for k, output in enumerate(outputs):
        if isinstance(output, sp.Symbol):
            users[output] |= 1 << k
    reverse = 0
    for target in reversed(cone):
        mask = users.get(target, 0)
        if mask and target in active:
            reverse += mask.bit_count()
            for operand in graph.operands[target]:
                users[operand] |= mask
    return reverse <= forward


def _hessian(graph: Graph, output, wrt_leaves, active) -> list:
    """Forward over reverse: one tangent sweep of the gradient program per input."""
    gradient = graph.reverse_sweep([(output, sp.S.One)], wrt_leaves, active)
    columns = [graph.forward_sweep({leaf: sp.S.One}, gradient) for leaf in wrt_leaves]
    n = len(wrt_leaves)
    return [columns[j][i] for i in range(n) for j in range(n)]


def _dependencies(graph: Graph, outputs, wrt_leaves, active) -> list[int]:
    """Per output, the wrt leaves a derivative can flow to, as a bit set (bit j: ``wrt_leaves[j]``)."""
    bits = {leaf: 1 << j for j, leaf in enumerate(wrt_leaves)}
    for target in graph.order:
        if target in active:
            mask = 0
            for operand in graph.operands[target]:
                mask |= bits.get(operand, 0)
            bits[target] = mask
    return [bits.get(o, 0) if isinstance(o, sp.Symbol) else 0 for o in outputs]


def _bits(mask: int) -> list[int]:
    """The set bits of ``mask``, ascending (in time linear in their number, not in the mask's width)."""
    bits = []
    while mask:
        low = mask & -mask
        bits.append(low.bit_length() - 1)
        mask ^= low
    return bits


def _sparse_jacobian(graph: Graph, outputs, wrt_blocks, active):
    """The Jacobian's structural nonzeros only, per wrt argument in CSR order, and their pattern.

    The pattern is structural: where no derivative path joins an output to an
    input the entry is zero at every point and is neither computed nor stored.
    Each row (or column, whichever there are fewer of) is one sweep restricted
    to its own cone of the DAG, so the work follows the nonzeros, not n_out x n_in.
    """
    wrt_leaves = [s for b in wrt_blocks for s in b.operands]
    n_out, n_in = len(outputs), len(wrt_leaves)
    rows = [_bits(mask) for mask in _dependencies(graph, outputs, wrt_leaves, active)]
    entries: dict = {}
    if n_out <= n_in:
        for k, columns in enumerate(rows):
            if columns:
                values = graph.reverse_sweep([(outputs[k], sp.S.One)], [wrt_leaves[j] for j in columns], active)
                entries.update({(k, j): value for j, value in zip(columns, values)})
    else:
        by_column = defaultdict(list)
        for k, columns in enumerate(rows):
            for j in columns:
                by_column[j].append(k)
        for j, column_rows in by_column.items():
            values = graph.forward_sweep({wrt_leaves[j]: sp.S.One}, [outputs[k] for k in column_rows])
            entries.update({(k, j): value for k, value in zip(column_rows, values)})
    blocks, layout, start = [], [], 0
    for block in wrt_blocks:
        end = start + len(block.operands)
        indptr, indices, values = [0], [], []
        for k in range(n_out):
            for j in rows[k]:
                if start <= j < end:
                    indices.append(j - start)
                    values.append(entries[(k, j)])
            indptr.append(len(indices))
        blocks.append(Block(f"jac_{block.name}", (len(values),), tuple(values)))
        layout.append([indptr, indices])
        start = end
    return blocks, (), layout


# -- derivative kernels: a derivative program as the outputs of a new signature ---------------------------

DERIVATIVES = {"grad": "vjp", "vjp": "vjp", "jvp": "jvp"}
"""Derivative kernel kind -> the program whose outputs it computes."""


def derivative_signature(signature: Signature, kind: str, name: str | None) -> Signature:
    """The signature of a kernel computing the ``kind`` ("grad", "vjp" or "jvp") of ``signature``'s function.

    Its outputs are the derivative program's DAG rebuilt as SymPy expressions
    (shared nodes stay shared), never a differentiation of the user's tree;
    compiling it again gives second derivatives that compose (the Jacobian of
    a gradient kernel is the Hessian).  Arguments: the function's own, then
    for "vjp" the cotangent ``v`` and for "jvp" the tangent ``t`` (named so that
    they differ from every user symbol).  wrt: the function's wrt and the new
    argument.  grad and vjp need one wrt argument (their output is its shape).
    """
    if kind not in DERIVATIVES:
        raise CompileError(f"kind={kind!r} is not a derivative kernel; use one of {sorted(DERIVATIVES)}.")
    if kind == "grad" and signature.out_shape != ():
        raise CompileError(f"a grad kernel needs a scalar output; {signature} has output shape "
                           f"{signature.out_shape}. Use the vjp kernel, which takes a cotangent v.")
    if kind in ("grad", "vjp") and len(signature.wrt) != 1:
        raise CompileError(f"a {kind} kernel returns one array, so it needs one wrt argument; {signature} has "
                           f"{len(signature.wrt)}. Compile with wrt=[index] for the argument to differentiate.")
    program = derive(signature, [DERIVATIVES[kind]]).programs[DERIVATIVES[kind]]
    taken = {str(leaf) for argument in signature.arguments for leaf in argument.leaves}
    user_blocks = program.inputs[:len(signature.arguments)]
    values = {var: leaf for argument, block in zip(signature.arguments, user_blocks)
              for leaf, var in zip(argument.leaves, block.operands)}
    extra = []
    for block in program.inputs[len(signature.arguments):]:  # the cotangent or tangent: new symbols
        prefix = _unused(block.name, taken)
        leaves = tuple(sp.Symbol(_unused(f"{prefix}{k}", taken)) for k in range(len(block.operands)))
        values.update({var: (sp.S.One if kind == "grad" else leaf) for var, leaf in zip(block.operands, leaves)})
        extra.append(Argument(prefix, block.shape, leaves))
    for assignment in program.assignments:
        values[assignment.target] = assignment.value.xreplace(values)
    outputs = tuple(values.get(o, o) if isinstance(o, sp.Symbol) else o for b in program.outputs for o in b.operands)
    out_shape = program.outputs[0].shape if len(program.outputs) == 1 else (len(outputs),)
    arguments = signature.arguments + (() if kind == "grad" else tuple(extra))
    wrt = signature.wrt + (() if kind == "grad" else (len(signature.arguments),))
    return Signature(name, arguments, out_shape, outputs, wrt, signature.dtype)


def _unused(name: str, taken: set) -> str:
    """``name``, with underscores added until no user symbol has it."""
    while name in taken:
        name += "_"
    taken.add(name)
    return name
