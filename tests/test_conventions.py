"""Conventions where a function is not smooth or not defined: ties, NaN, missing branches, poles."""

import math

import numpy as np
import pytest
import sympy as sp

import gradcomp as gc


@pytest.mark.parametrize("function", [sp.Max, sp.Min])
def test_a_tie_among_three_or_more_arguments_goes_to_the_first_in_sympys_order(function):
    a = sp.symbols("a0:4")
    expr = function(*a)
    kernel = gc.compile(expr, [list(a)], cache=False)
    first = [list(a).index(arg) for arg in expr.args][0]
    expected = np.zeros(4)
    expected[first] = 1.0
    np.testing.assert_array_equal(kernel.grad(np.ones(4)), expected)


@pytest.mark.parametrize("function", [sp.Max, sp.Min])
@pytest.mark.parametrize("point", [(1.0, math.nan), (math.nan, 1.0)])
def test_max_and_min_propagate_nan_from_either_argument(function, point):
    x, y = sp.symbols("x y")
    kernel = gc.compile(function(x, y), [x, y], cache=False)
    assert math.isnan(kernel(*point))
    assert math.isnan(kernel(np.array([point[0]] * 3), np.array([point[1]] * 3))[1])


def test_a_piecewise_without_a_true_branch_has_nan_gradient_where_no_branch_holds():
    x = sp.Symbol("x")
    kernel = gc.compile(sp.Piecewise((x**2, x > 0)), [x], cache=False)
    assert kernel.grad(3.0) == 6.0
    assert math.isnan(kernel(-1.0)) and math.isnan(kernel.grad(-1.0))


@pytest.mark.parametrize("x", [-1e8 - 0.3, -12345678.25, -2.5, -0.5])
def test_digamma_of_large_negative_arguments_is_finite_and_right(x):
    import mpmath
    s = sp.Symbol("s")
    kernel = gc.compile(sp.polygamma(0, s), [s], cache=False)
    with mpmath.workdps(40):  # the reflection formulas, with mpmath's digamma and trigamma at 1 - x > 0
        at = mpmath.mpf(x)
        digamma = mpmath.digamma(1 - at) - mpmath.pi * mpmath.cot(mpmath.pi * at)
        trigamma = (mpmath.pi / mpmath.sin(mpmath.pi * at)) ** 2 - mpmath.polygamma(1, 1 - at)
    assert kernel(x) == pytest.approx(float(digamma), rel=1e-9)
    assert kernel.grad(x) == pytest.approx(float(trigamma), rel=1e-9)
