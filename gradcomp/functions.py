"""What gradcomp supports, per SymPy function: one table.

Each entry says how the function prints for Numba, how it is differentiated
(SymPy's own derivative unless a convention overrides it) and a domain on
which tests may evaluate it safely, with the PyTorch function that serves as
the oracle.  The compiler, the printer and the tests all iterate this table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import sympy as sp


class Rule(NamedTuple):
    """How one SymPy function class is supported."""

    numba: str
    """Format string for Numba: ``{0}``, ``{1}`` are the printed arguments,
    ``{zero}`` and ``{one}`` literals of the kernel's dtype."""
    partials: Callable | None
    """``partials(args, value) -> one partial per argument``; None: SymPy's diff."""
    domain: tuple[float, float]
    """An interval on which every argument may be drawn in tests."""
    torch: str | None
    """The oracle in tests: a ``torch`` attribute name, or None (finite differences)."""
    arity: int = 1
    ir: str = ""
    """How the core computes it (``gradcomp.ir``): ``call <math function>``, another instruction,
    or one of codegen's compositions (``max``, ``min``, ``sign``, ``heaviside``, ``arg``, ``identity``, ``zero``);
    empty: ``call`` of the function's own name."""


def _zero(args, value):
    """Piecewise-constant functions: derivative 0 everywhere (PyTorch's convention)."""
    return tuple(sp.S.Zero for _ in args)


def _active(condition):
    return sp.Piecewise((sp.S.One, condition), (sp.S.Zero, True))


def _max_partials(args, value):
    """The active branch: the first argument attaining the maximum."""
    a, b = args
    return (_active(sp.Ge(a, b)), _active(sp.Lt(a, b)))


def _min_partials(args, value):
    a, b = args
    return (_active(sp.Le(a, b)), _active(sp.Gt(a, b)))


def _abs_partials(args, value):
    return (sp.sign(args[0]),)


def _identity_partials(args, value):
    return (sp.S.One,)


def _exp_partials(args, value):
    return (value,)


def _tanh_partials(args, value):
    return (1 - value**2,)


class Maximum(sp.Function):
    """Max of two values in the order given: SymPy's own Max sorts its arguments, and the tie rule
    (the first argument wins) and NaN propagation depend on the order."""

    nargs = 2


class Minimum(sp.Function):
    """Min of two values in the order given (see Maximum)."""

    nargs = 2


BINARY = {sp.Max: Maximum, sp.Min: Minimum}
"""SymPy functions of any arity -> the ordered two-argument node the compiler lowers them to."""


SMOOTH_DOMAIN = (-2.0, 2.0)

RULES: dict[type, Rule] = {
    sp.exp: Rule("math.exp({0})", _exp_partials, (-3.0, 3.0), "exp"),
    sp.log: Rule("math.log({0})", None, (0.2, 4.0), "log"),
    sp.sin: Rule("math.sin({0})", None, SMOOTH_DOMAIN, "sin"),
    sp.cos: Rule("math.cos({0})", None, SMOOTH_DOMAIN, "cos"),
    sp.tan: Rule("math.tan({0})", None, (-1.2, 1.2), "tan"),
    sp.asin: Rule("math.asin({0})", None, (-0.9, 0.9), "asin"),
    sp.acos: Rule("math.acos({0})", None, (-0.9, 0.9), "acos"),
    sp.atan: Rule("math.atan({0})", None, SMOOTH_DOMAIN, "atan"),
    sp.atan2: Rule("math.atan2({0}, {1})", None, (0.3, 2.0), "atan2", 2),
    sp.sinh: Rule("math.sinh({0})", None, SMOOTH_DOMAIN, "sinh"),
    sp.cosh: Rule("math.cosh({0})", None, SMOOTH_DOMAIN, "cosh"),
    sp.tanh: Rule("math.tanh({0})", _tanh_partials, SMOOTH_DOMAIN, "tanh"),
    sp.asinh: Rule("math.asinh({0})", None, SMOOTH_DOMAIN, "asinh"),
    sp.acosh: Rule("math.acosh({0})", None, (1.2, 4.0), "acosh"),
    sp.atanh: Rule("math.atanh({0})", None, (-0.9, 0.9), "atanh"),
    sp.Abs: Rule("abs({0})", _abs_partials, SMOOTH_DOMAIN, "abs", ir="call fabs"),
    sp.sign: Rule("np.sign({0})", _zero, SMOOTH_DOMAIN, "sign", ir="sign"),
    sp.floor: Rule("np.floor({0})", _zero, SMOOTH_DOMAIN, "floor", ir="floor"),
    sp.ceiling: Rule("np.ceil({0})", _zero, SMOOTH_DOMAIN, "ceil", ir="ceil"),
    sp.Heaviside: Rule(
        "({one} if {0} > {zero} else ({zero} if {0} < {zero} else ({1} if {0} == {zero} else {0})))",
        _zero, SMOOTH_DOMAIN, None, 2, ir="heaviside"),
    sp.Max: Rule("max({0}, {1})", _max_partials, SMOOTH_DOMAIN, "maximum", 2, ir="max"),
    sp.Min: Rule("min({0}, {1})", _min_partials, SMOOTH_DOMAIN, "minimum", 2, ir="min"),
    sp.erf: Rule("math.erf({0})", None, SMOOTH_DOMAIN, "erf"),
    sp.erfc: Rule("math.erfc({0})", None, SMOOTH_DOMAIN, "erfc"),
    sp.gamma: Rule("math.gamma({0})", None, (0.5, 4.0), None, ir="call gamma"),
    sp.loggamma: Rule("math.lgamma({0})", None, (0.5, 4.0), "lgamma", ir="call lgamma"),
    # SymPy rewrites e.g. Abs(exp(x)) as exp(re(x)) for symbols not declared real; arguments are real
    sp.re: Rule("{0}", _identity_partials, SMOOTH_DOMAIN, "real", ir="identity"),
    sp.im: Rule("{zero}", _zero, SMOOTH_DOMAIN, None, ir="zero"),
    sp.arg: Rule("({0} if {0} != {0} else (math.pi if {0} < {zero} else {zero}))", _zero, SMOOTH_DOMAIN, "angle",
                 ir="arg"),
    sp.polygamma: Rule("polygamma({0}, {1})", None, (0.5, 4.0), None, 2, ir="polygamma"),
}
"""SymPy function class -> Rule. ``Add``, ``Mul``, ``Pow``, ``Piecewise`` and
logic are structural and handled by the compiler's stages themselves."""


def rule_for(node_type: type) -> Rule | None:
    """The rule of a lowered node's class (an ordered Maximum/Minimum has Max's/Min's rule)."""
    for original, lowered in BINARY.items():
        if node_type is lowered:
            return RULES[original]
    return RULES.get(node_type)
