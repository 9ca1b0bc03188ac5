"""The derivation's shortcuts past SymPy's general constructors build exactly what SymPy builds."""

import sympy as sp

from gradcomp.derive import Var, _cofactor, _sum, _times, derive
from gradcomp.spec import make_signature


def test_times_and_sum_build_what_sympy_builds():
    a, b, c = Var("a"), Var("b"), Var("c")
    for coeff in (sp.S.One, sp.S.NegativeOne, sp.Integer(3), sp.Rational(-2, 7), sp.Float(1.0), sp.Float(-0.25),
                  sp.S.Zero, sp.Float(0.0), sp.nan):
        for symbols in ((a,), (b, a), (a, sp.S.One), (a, a)):
            assert _times(coeff, *symbols) == sp.Mul(coeff, *symbols)
    sums = ([a, b], [2 * b, -a], [a * b, 3 * c, sp.Float(0.5) * a], [a, a], [a, sp.Integer(2)], [2 * a * b, -a * b])
    for terms in sums:
        built = _sum(terms)
        assert built == sp.Add(*terms) and built.args == sp.Add(*terms).args


def test_cofactor_is_the_derivative():
    a, b = Var("a"), Var("b")
    for product in (a * b, 3 * a * b, -a / b, sp.Float(0.5) * a * b**2, a**2 * b):
        for operand in (a, b):
            assert _cofactor(product, operand) == sp.diff(product, operand)


def test_a_product_with_a_shared_constant_folds_the_constant():
    a0, a1 = sp.symbols("a0 a1")
    constant = sp.tanh(sp.pi)
    signature = make_signature(sp.Max(2 * constant, 2 * sp.tanh(a0)) * a1 + 2 * constant * a0, [a0, a1])
    for program in derive(signature).programs.values():
        names = {str(s) for assignment in program.assignments for s in assignment.value.free_symbols}
        assert not any(name.startswith("_cse") for name in names)
