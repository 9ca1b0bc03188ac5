"""Hypothesis strategies for random SymPy expression trees over gradcomp's function table.

Every function comes from ``gradcomp.functions.RULES``: a function added to the
table is drawn by these strategies without any change here.  Each argument of a
function is squashed into the function's test ``domain`` with
``lo + (hi - lo) * (1 + tanh(e)) / 2``, so any subtree may feed any function
without NaN; bases of fractional or negative powers and denominators are
squashed into ``[1/2, 2]``.  Values therefore stay finite and moderate.

``torch_eval`` evaluates such a tree with PyTorch (the oracle named in the
table), walking the SymPy tree that SymPy actually built, after its automatic
simplifications.
"""

from __future__ import annotations

import functools
import itertools
import operator
from typing import NamedTuple

import numpy as np
import sympy as sp
from hypothesis import strategies as st
from sympy.logic.boolalg import BooleanFalse, BooleanTrue

from gradcomp.functions import RULES

# -- the kernel's arguments -----------------------------------------------------

X = sp.Symbol("x", real=True)
A = sp.symbols("a0:3", real=True)
Y = sp.Symbol("y", real=True)
ARGS = [X, list(A), Y]
"""Every kernel under test: ``f(x, a, y)`` with scalars ``x``, ``y`` and a vector ``a`` of length 3."""
LEAVES = (X, *A, Y)
VECTOR = 1
"""The index of the vector argument in ``ARGS``."""

INTEGER_ARGUMENTS = {sp.polygamma: {0: (0, 1, 2)}}
"""Argument positions that take a nonnegative integer (an order) rather than a
point of the table's ``domain``: position -> the orders drawn."""

CONSTANTS = (sp.pi, sp.E, sp.Rational(1, 3), sp.Rational(-5, 2), sp.Integer(2), sp.Float("0.75"), -sp.pi / 4)


def is_piecewise_constant(function) -> bool:
    """Whether the table differentiates ``function`` as 0 in every argument (floor, sign, Heaviside...)."""
    rule = RULES[function]
    if rule.partials is None:
        return False
    args = sp.symbols(f"p0:{rule.arity}", real=True)
    return all(p == 0 for p in rule.partials(args, sp.Symbol("value")))


def has_torch_oracle(function) -> bool:
    return RULES[function].torch is not None


def table_functions(predicate=lambda function: True) -> list:
    """The classes of the table that satisfy ``predicate``, in table order."""
    return [function for function in RULES if predicate(function)]


def squash(expr, lo, hi):
    """A smooth map of the real line onto (lo, hi): lo + (hi - lo) * (1 + tanh(expr)) / 2."""
    lo, hi = sp.nsimplify(lo), sp.nsimplify(hi)
    return lo + (hi - lo) * (1 + sp.tanh(expr)) / 2


def apply_safely(function, operands: list):
    """``function`` applied to ``operands`` squashed into its domain (orders stay integers)."""
    rule = RULES[function]
    return function(*(
        sp.Integer(operand) if position in INTEGER_ARGUMENTS.get(function, {}) else squash(operand, *rule.domain)
        for position, operand in enumerate(operands)))


def draw_operands(draw, function, subtree) -> list:
    """One operand per argument of ``function``: an order where the function takes one, else a subtree."""
    orders = INTEGER_ARGUMENTS.get(function, {})
    return [draw(st.sampled_from(orders[position])) if position in orders else draw(subtree)
            for position in range(RULES[function].arity)]


# -- trees ----------------------------------------------------------------------

constants = st.sampled_from(CONSTANTS)

NODES = ("function",) * 6 + ("add", "sub", "mul", "mul", "div", "integer_power", "rational_power", "real_power",
                            "symbolic_power")
"""Node kinds, repeated by weight: functions are half of the nodes."""


@st.composite
def expressions(draw, functions: tuple, depth: int, piecewise: bool = False, symbols: tuple = LEAVES):
    """A random expression of at most ``depth`` levels over ``symbols``, constants and ``functions``.

    ``functions``: the table classes the tree may apply; ``piecewise``: whether
    ``Piecewise`` nodes (with relational conditions) may appear.
    """
    if depth == 0 or draw(st.integers(0, 7)) == 0:
        return draw(st.sampled_from(symbols)) if draw(st.integers(0, 2)) else draw(constants)
    subtree = expressions(functions, depth - 1, piecewise, symbols)
    kinds = tuple(k for k in NODES if functions or k != "function") + (("piecewise",) if piecewise else ())
    kind = draw(st.sampled_from(kinds))
    if kind == "function":
        function = draw(st.sampled_from(functions))
        return apply_safely(function, draw_operands(draw, function, subtree))
    if kind == "add":
        return draw(subtree) + draw(subtree)
    if kind == "sub":
        return draw(subtree) - draw(subtree)
    if kind == "mul":
        return draw(subtree) * draw(subtree)
    if kind == "div":
        return draw(subtree) / squash(draw(subtree), 0.5, 2)
    if kind == "integer_power":
        exponent = draw(st.sampled_from((2, 3, -1, -2)))
        base = draw(subtree)
        return (base if exponent == 2 else squash(base, 0.5, 2)) ** exponent
    if kind == "rational_power":
        exponent = draw(st.sampled_from((sp.S.Half, sp.Rational(1, 3), sp.Rational(-1, 2), sp.Rational(3, 2))))
        return squash(draw(subtree), 0.5, 2) ** exponent
    if kind == "real_power":
        exponent = sp.Float(draw(st.sampled_from((-1.7, -0.3, 0.45, 1.25, 2.5))))
        return squash(draw(subtree), 0.5, 2) ** exponent
    if kind == "symbolic_power":
        return squash(draw(subtree), 0.5, 2) ** squash(draw(subtree), -1.5, 1.5)
    # piecewise: the condition compares a subtree with a constant
    relation = draw(st.sampled_from((sp.Lt, sp.Le, sp.Gt, sp.Ge)))
    condition = relation(draw(subtree), draw(st.sampled_from((0, sp.Rational(1, 2), -1))))
    return sp.Piecewise((draw(subtree), condition), (draw(subtree), True))


@st.composite
def cases(draw, functions: tuple, depth: int = 3, piecewise: bool = False, scalar: bool = False,
          outputs: int = 3, first=None):
    """A random ``Case``: outputs over ``ARGS``, which arguments to differentiate, a batch of points.

    ``scalar``: one scalar output, differentiated with respect to the vector
    argument alone (the kernels that have a Hessian); else 1 to ``outputs``
    outputs in a vector.  ``first``: a strategy for the first output; by
    default a tree that depends on the vector argument (on several of its
    components for a scalar output).
    """
    trees = expressions(functions, depth, piecewise)
    if first is None and scalar:  # a Hessian with off-diagonal terms: a tree of several components of a
        first = expressions(functions, depth, piecewise, (*A, Y)).filter(
            lambda tree: len(tree.free_symbols & set(A)) > 1)
    elif first is None:
        first = trees.filter(lambda tree: not tree.is_Symbol and bool(tree.free_symbols & set(A)))
    count = 1 if scalar else draw(st.integers(1, outputs))
    drawn = [draw(first if k == 0 else trees) for k in range(count)]
    wrt = (VECTOR,) if scalar else draw(st.sampled_from(WRTS))
    batch = draw(st.sampled_from(BATCHES))
    y_once = draw(st.booleans())  # y given once for the whole batch: it broadcasts
    return Case(drawn[0] if scalar else tuple(drawn), wrt, batch, y_once, draw(st.integers(0, 2**32 - 1)))


class Case(NamedTuple):
    """One kernel ``f(x, a, y)`` to compile and the points to call it at."""

    outputs: object  # an expression (scalar output) or a tuple of them (a vector output)
    wrt: tuple | None
    batch: tuple
    y_once: bool
    seed: int

    @property
    def wrt_indices(self) -> tuple:
        return tuple(range(len(ARGS))) if self.wrt is None else self.wrt

    @property
    def out_shape(self) -> tuple:
        return (len(self.outputs),) if isinstance(self.outputs, tuple) else ()

    def rng(self, stream: int = 0):
        return np.random.default_rng([self.seed, stream])

    def points(self) -> list:
        """One array per argument; ``y`` without batch dimensions when ``y_once``."""
        rng = self.rng()
        return [rng.uniform(-2, 2, self.batch), rng.uniform(-2, 2, self.batch + ARG_SHAPES[VECTOR]),
                rng.uniform(-2, 2, () if self.y_once else self.batch)]

    def cotangent(self):
        return self.rng(1).uniform(-1, 1, self.batch + self.out_shape)

    def tangents(self) -> list:
        rng = self.rng(2)
        return [rng.uniform(-1, 1, self.batch + ARG_SHAPES[i]) for i in self.wrt_indices]


WRTS = (None, (VECTOR,), (2, 0), (0, VECTOR))
"""Which arguments to differentiate; (2, 0) checks that results come in ``wrt`` order."""
BATCHES = ((), (4,), (2, 3))
ARG_SHAPES = ((), (3,), ())


# -- torch ---------------------------------------------------------------------

_RELATIONS = {sp.StrictLessThan: "lt", sp.LessThan: "le", sp.StrictGreaterThan: "gt", sp.GreaterThan: "ge",
              sp.Equality: "eq", sp.Unequality: "ne"}


def torch_eval(expr, env: dict):
    """``expr`` evaluated with torch; ``env`` maps each free Symbol to a float64 tensor."""
    import torch

    memo: dict = {}

    def constant(value):
        return torch.tensor(float(value), dtype=torch.float64)

    def walk(e):
        if e in env:
            return env[e]
        if e in memo:
            return memo[e]
        if isinstance(e, BooleanTrue):
            result = torch.tensor(True)
        elif isinstance(e, BooleanFalse):
            result = torch.tensor(False)
        elif e.is_Number or e.is_NumberSymbol or not e.free_symbols and e.is_real:
            result = constant(sp.N(e, 20))
        elif e.is_Add:
            result = functools.reduce(operator.add, map(walk, e.args))
        elif e.is_Mul:
            result = functools.reduce(operator.mul, map(walk, e.args))
        elif e.is_Pow:
            base, exponent = e.args
            result = walk(base) ** (int(exponent) if exponent.is_Integer else walk(exponent))
        elif isinstance(e, sp.Piecewise):
            result = walk(e.args[-1][0])
            for value, condition in reversed(e.args[:-1]):
                result = torch.where(walk(condition), walk(value), result)
        elif type(e) in _RELATIONS:
            result = getattr(torch, _RELATIONS[type(e)])(walk(e.lhs), walk(e.rhs))
        elif isinstance(e, sp.And):
            result = functools.reduce(torch.logical_and, map(walk, e.args))
        elif isinstance(e, sp.Or):
            result = functools.reduce(torch.logical_or, map(walk, e.args))
        elif isinstance(e, sp.Not):
            result = torch.logical_not(walk(e.args[0]))
        elif isinstance(e, sp.im):  # of a real argument: 0 (torch.imag refuses real tensors)
            result = torch.zeros_like(walk(e.args[0]))
        elif type(e) in RULES and RULES[type(e)].torch is not None:
            function = getattr(torch, RULES[type(e)].torch)
            operands = [walk(a) for a in e.args]
            if len(operands) > RULES[type(e)].arity:  # Max/Min of several arguments: pairwise
                result = functools.reduce(function, operands)
            else:
                result = function(*operands)
        else:
            raise NotImplementedError(f"no torch oracle for {type(e).__name__} in {e}")
        memo[e] = result
        return result

    return walk(expr)


# -- oracles -------------------------------------------------------------------

def _environment(values: list) -> dict:
    """Leaf symbol -> its value, from one value per argument of ``ARGS``."""
    x, a, y = values
    return {X: x, Y: y, **{leaf: a[..., i] for i, leaf in enumerate(A)}}


class TorchOracle:
    """Every kernel method of a ``Case``, by PyTorch autograd at the case's points (float64)."""

    def __init__(self, case: Case):
        import torch

        self.torch = torch
        self.case = case
        self.values = [torch.tensor(np.broadcast_to(value, case.batch + shape).copy())
                       for value, shape in zip(case.points(), ARG_SHAPES)]

    def _outputs(self, values):
        torch, case = self.torch, self.case
        env = _environment(values)
        trees = case.outputs if case.out_shape else (case.outputs,)
        ys = [torch.broadcast_to(torch_eval(tree, env), case.batch) for tree in trees]
        return torch.stack(ys, -1) if case.out_shape else ys[0]

    def _leaves(self):
        return [value.clone().requires_grad_(True) for value in self.values]

    def _grad(self, y, leaves, cotangent, create_graph=False) -> list:
        wrt = [leaves[i] for i in self.case.wrt_indices]
        if not y.requires_grad:
            return [self.torch.zeros_like(w) for w in wrt]
        grads = self.torch.autograd.grad(y, wrt, cotangent, allow_unused=True, retain_graph=True,
                                         create_graph=create_graph)
        return [self.torch.zeros_like(w) if g is None else g for g, w in zip(grads, wrt)]

    def forward(self):
        return self._outputs(self.values).numpy()

    def vjp(self, v) -> list:
        leaves = self._leaves()
        return [g.numpy() for g in self._grad(self._outputs(leaves), leaves, self.torch.as_tensor(v))]

    def jvp(self, tangents):
        wrt = self.case.wrt_indices

        def f(*moving):
            values = list(self.values)
            for i, value in zip(wrt, moving):
                values[i] = value
            return self._outputs(values)

        primals = tuple(self.values[i] for i in wrt)
        _, out = self.torch.func.jvp(f, primals, tuple(self.torch.as_tensor(t) for t in tangents))
        return out.detach().numpy()

    def jacobian(self) -> list:
        case = self.case
        leaves = self._leaves()
        y = self._outputs(leaves)
        jacobians = [np.zeros(case.batch + case.out_shape + ARG_SHAPES[i]) for i in case.wrt_indices]
        for k in np.ndindex(case.out_shape):
            component = y[(Ellipsis, *k)]
            for jacobian, i, g in zip(jacobians, case.wrt_indices,
                                      self._grad(component, leaves, self.torch.ones_like(component))):
                jacobian[(Ellipsis, *k) + (slice(None),) * len(ARG_SHAPES[i])] = g.detach().numpy()
        return jacobians

    def hessian(self):
        """The Hessian of a scalar output with respect to the vector argument."""
        (i,) = self.case.wrt_indices
        leaves = self._leaves()
        y = self._outputs(leaves)
        (gradient,) = self._grad(y, leaves, self.torch.ones_like(y), create_graph=True)
        hessian = np.zeros(self.case.batch + ARG_SHAPES[i] * 2)
        for j in range(ARG_SHAPES[i][0]):
            component = gradient[..., j]
            (row,) = self._grad(component, leaves, self.torch.ones_like(component))
            hessian[..., j, :] = row.detach().numpy()
        return hessian


class MpmathOracle:
    """Forward and Jacobian of a ``Case`` with mpmath at 40 digits: central differences with a tiny step."""

    DIGITS = 40
    STEP = "1e-15"

    def __init__(self, case: Case):
        import mpmath

        self.mpmath = mpmath
        self.case = case
        trees = list(case.outputs) if case.out_shape else [case.outputs]
        self.outputs = len(trees)
        self.function = sp.lambdify(LEAVES, trees, "mpmath")
        x, a, y = (np.broadcast_to(value, case.batch + shape) for value, shape in zip(case.points(), ARG_SHAPES))
        self.points = np.stack([x, a[..., 0], a[..., 1], a[..., 2], y], -1)  # batch + (leaves,)

    def _evaluate(self, point) -> list:
        mp = self.mpmath
        with mp.workdps(self.DIGITS):
            return self.function(*(p if isinstance(p, mp.mpf) else mp.mpf(float(p)) for p in point))

    def forward(self):
        out = np.array([[float(v) for v in self._evaluate(p)]
                        for p in self.points.reshape(-1, len(LEAVES))])
        return out.reshape(self.case.batch + self.case.out_shape)

    def _leaf_jacobian(self):
        """batch + (outputs, leaves)."""
        mp = self.mpmath
        flat = self.points.reshape(-1, len(LEAVES))
        result = np.zeros((len(flat), self.outputs, len(LEAVES)))
        with mp.workdps(self.DIGITS):
            h = mp.mpf(self.STEP)
            for n, point in enumerate(flat):
                base = [mp.mpf(float(p)) for p in point]
                for leaf in range(len(LEAVES)):
                    up, down = list(base), list(base)
                    up[leaf] += h
                    down[leaf] -= h
                    plus, minus = self._evaluate(up), self._evaluate(down)
                    result[n, :, leaf] = [float((p - m) / (2 * h)) for p, m in zip(plus, minus)]
        return result.reshape(self.case.batch + result.shape[1:])

    def jacobian(self) -> list:
        """batch + out_shape + arg_shape per differentiated argument."""
        leaf_jacobian = self._leaf_jacobian()
        columns = {0: leaf_jacobian[..., 0], VECTOR: leaf_jacobian[..., 1:4], 2: leaf_jacobian[..., 4]}
        jacobians = []
        for i in self.case.wrt_indices:
            jacobian = columns[i]
            jacobians.append(jacobian if self.case.out_shape else jacobian[..., 0, :] if ARG_SHAPES[i]
                             else jacobian[..., 0])
        return jacobians


def table_function_outputs(function):
    """``function`` of scalar arguments p0, p1, ...: one output per choice of its integer orders, and the
    argument symbols."""
    rule = RULES[function]
    orders = INTEGER_ARGUMENTS.get(function, {})
    symbols = [sp.Symbol(f"p{k}", real=True) for k in range(rule.arity) if k not in orders]
    outputs = []
    for choice in itertools.product(*(orders[k] for k in sorted(orders))):
        chosen, free = dict(zip(sorted(orders), choice)), iter(symbols)
        outputs.append(function(*(sp.Integer(chosen[k]) if k in chosen else next(free) for k in range(rule.arity))))
    return outputs, symbols
