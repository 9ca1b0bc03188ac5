"""Properties of compiled kernels on random expression trees over the function table.

Trees come from ``strategies.expressions``, which draws every function of
``gradcomp.functions.RULES``.  Kernels ``f(x, a, y)`` (scalars x, y and a
3-vector a) are compiled without a disk cache and called at random batches of
points; every method is compared with PyTorch autograd on the same tree, or,
for functions without a torch oracle, with mpmath at 40 digits.

The tests that draw ``CASES`` share one seed, so they draw the same cases and
reuse each other's kernels (see the ``compiled`` fixture).
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from strategies import (
    ARGS,
    LEAVES,
    MpmathOracle,
    TorchOracle,
    X,
    Y,
    apply_safely,
    cases,
    draw_operands,
    expressions,
    has_torch_oracle,
    is_piecewise_constant,
    table_function_outputs,
    table_functions,
)

import gradcomp as gc
from gradcomp.functions import RULES

TORCH_FUNCTIONS = tuple(table_functions(has_torch_oracle))
"""The table functions that PyTorch can check."""
SMOOTH_FUNCTIONS = tuple(table_functions(lambda f: not is_piecewise_constant(f)))
"""Central differences see a jump of floor, sign, Heaviside ... as a spike: those are checked at their own."""
UNCHECKED_BY_TORCH = tuple(f for f in SMOOTH_FUNCTIONS if not has_torch_oracle(f))

PROPERTY = settings(max_examples=15, deadline=None, database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])
SHARED = seed(20250211)
"""One seed for every test that draws ``CASES``: the same cases, so the kernels are compiled once."""

CASES = cases(TORCH_FUNCTIONS)
SCALAR_CASES = cases(TORCH_FUNCTIONS, scalar=True)
RTOL = 1e-9
FLOAT32_RTOL = 2e-4


def assert_close(actual, expected, rtol=RTOL, what=""):
    """Normwise: ||actual - expected|| <= rtol * ||expected||, with a floor for all-tiny values."""
    expected = np.asarray(expected, dtype=np.float64)
    actual = np.asarray(actual)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, expected {expected.shape}"
    assert np.all(np.isfinite(expected)), f"{what}: the oracle is not finite: {expected}"
    error = np.linalg.norm((actual - expected).ravel())
    scale = max(np.linalg.norm(expected.ravel()), 1e-3 * np.sqrt(expected.size))
    assert error <= rtol * scale, f"{what}: relative error {error / scale:.3g} > {rtol}\n{actual}\n!=\n{expected}"


def per_wrt(result, case) -> list:
    """A method's result as a list, one entry per ``wrt`` argument."""
    return list(result) if len(case.wrt_indices) > 1 else [result]


def tangent_argument(case):
    tangents = case.tangents()
    return tuple(tangents) if len(tangents) > 1 else tangents[0]


@pytest.fixture(scope="session")
def compiled():
    """``compiled(case, dtype)``: the case's kernel, compiled once per session (no disk cache)."""
    kernels = {}

    def get(case, dtype="float64"):
        key = (sp.srepr(case.outputs), case.wrt, dtype)
        if key not in kernels:
            outputs = list(case.outputs) if case.out_shape else case.outputs
            kernels[key] = gc.compile(outputs, ARGS, wrt=case.wrt, dtype=dtype, cache=False)
        return kernels[key]

    return get


# -- every method against PyTorch ------------------------------------------------

@PROPERTY
@SHARED
@given(CASES)
def test_forward_matches_torch(compiled, case):
    assert_close(compiled(case)(*case.points()), TorchOracle(case).forward(), what="forward")


@PROPERTY
@SHARED
@given(CASES)
def test_vjp_matches_torch_autograd(compiled, case):
    actual = per_wrt(compiled(case).vjp(*case.points(), case.cotangent()), case)
    for i, got, expected in zip(case.wrt_indices, actual, TorchOracle(case).vjp(case.cotangent())):
        assert_close(got, expected, what=f"vjp of {ARGS[i]}")


@PROPERTY
@SHARED
@given(CASES)
def test_value_and_vjp_matches_torch_forward_and_autograd(compiled, case):
    oracle = TorchOracle(case)
    value, vjp = compiled(case).value_and_vjp(*case.points(), case.cotangent())
    assert_close(value, oracle.forward(), what="value")
    for i, got, expected in zip(case.wrt_indices, per_wrt(vjp, case), oracle.vjp(case.cotangent())):
        assert_close(got, expected, what=f"vjp of {ARGS[i]}")


@PROPERTY
@SHARED
@given(CASES)
def test_jvp_matches_torch_forward_mode(compiled, case):
    actual = compiled(case).jvp(*case.points(), tangent_argument(case))
    assert_close(actual, TorchOracle(case).jvp(case.tangents()), what="jvp")


@PROPERTY
@SHARED
@given(CASES)
def test_jacobian_matches_torch(compiled, case):
    actual = per_wrt(compiled(case).jacobian(*case.points()), case)
    for i, got, expected in zip(case.wrt_indices, actual, TorchOracle(case).jacobian()):
        assert_close(got, expected, what=f"jacobian wrt {ARGS[i]}")


@PROPERTY
@SHARED
@given(SCALAR_CASES)
def test_hessian_matches_torch(compiled, case):
    assert_close(compiled(case).hessian(*case.points()), TorchOracle(case).hessian(), what="hessian")


@PROPERTY
@SHARED
@given(SCALAR_CASES)
def test_grad_is_vjp_with_unit_cotangent(compiled, case):
    kernel = compiled(case)
    np.testing.assert_array_equal(kernel.grad(*case.points()), kernel.vjp(*case.points(), 1.0))


LARGE_BATCH = 60_000
"""Points enough for the parallel driver of any kernel (codegen's PARALLEL_WORK ops / ops per point)."""


@settings(PROPERTY, max_examples=3)
@SHARED
@given(CASES)
def test_large_batches_take_the_parallel_driver_and_agree_point_by_point(compiled, case):
    kernel = compiled(case)
    kernel.precompile(["forward", "vjp"])  # else a first large batch runs serially while the parallel one compiles
    x, a, y = case.points()
    flat = (x.reshape(-1), a.reshape(-1, 3), np.asarray(y).reshape(-1) if y.ndim else y)
    repeats = LARGE_BATCH // flat[0].shape[0] + 1
    large = [np.tile(flat[0], repeats), np.tile(flat[1], (repeats, 1)), np.tile(flat[2], repeats) if y.ndim else y]
    v = case.cotangent().reshape((-1,) + case.out_shape)
    small = [kernel(*flat), *per_wrt(kernel.vjp(*flat, v), case)]
    tiled = [kernel(*large), *per_wrt(kernel.vjp(*large, np.tile(v, (repeats,) + (1,) * len(case.out_shape))), case)]
    for got, expected in zip(tiled, small):
        np.testing.assert_array_equal(got[-len(expected):], expected)
        np.testing.assert_array_equal(got[:len(expected)], expected)


# -- Piecewise in random trees -------------------------------------------------------

@st.composite
def piecewise_trees(draw):
    """A Piecewise whose condition compares a subtree with a leaf, so that it is not constant."""
    subtrees = expressions(TORCH_FUNCTIONS, 2)
    condition = draw(st.sampled_from((sp.Lt, sp.Ge)))(draw(subtrees), draw(st.sampled_from(LEAVES)))
    return sp.Piecewise((draw(subtrees), condition), (draw(subtrees), True))


@settings(PROPERTY, max_examples=10)
@SHARED
@given(cases(TORCH_FUNCTIONS, depth=2, piecewise=True, first=piecewise_trees()))
def test_trees_with_piecewise_match_torch_autograd(compiled, case):
    kernel, oracle = compiled(case), TorchOracle(case)
    value, vjp = kernel.value_and_vjp(*case.points(), case.cotangent())
    assert_close(value, oracle.forward(), what="value")
    for got, expected in zip(per_wrt(vjp, case), oracle.vjp(case.cotangent())):
        assert_close(got, expected, what="vjp")
    assert_close(kernel.jvp(*case.points(), tangent_argument(case)), oracle.jvp(case.tangents()), what="jvp")


# -- functions that PyTorch cannot check: mpmath -----------------------------------------------

@st.composite
def trees_without_torch_oracle(draw):
    """A tree whose root is a table function without a torch oracle (gamma, polygamma, ...)."""
    function = draw(st.sampled_from(UNCHECKED_BY_TORCH))
    return apply_safely(function, draw_operands(draw, function, expressions(SMOOTH_FUNCTIONS, 2)))


MPMATH_CASES = cases(SMOOTH_FUNCTIONS, depth=2, outputs=2, first=trees_without_torch_oracle())


@settings(PROPERTY, max_examples=12)
@SHARED
@given(MPMATH_CASES)
def test_functions_without_torch_oracle_forward_matches_mpmath(compiled, case):
    assert_close(compiled(case)(*case.points()), MpmathOracle(case).forward(), what="forward")


@settings(PROPERTY, max_examples=12)
@SHARED
@given(MPMATH_CASES)
def test_functions_without_torch_oracle_match_finite_differences(compiled, case):
    """The Jacobian against central differences of mpmath at 40 digits (step 1e-15)."""
    actual = per_wrt(compiled(case).jacobian(*case.points()), case)
    for i, got, expected in zip(case.wrt_indices, actual, MpmathOracle(case).jacobian()):
        assert_close(got, expected, what=f"jacobian wrt {ARGS[i]}")


# -- float32 ---------------------------------------------------------------------------------

def call_every_method(kernel, case, points) -> dict:
    """Every method's results at ``points``, flattened to a list of arrays per method."""
    v = case.cotangent().astype(kernel.dtype)
    t = tuple(t.astype(kernel.dtype) for t in case.tangents())
    value, vjp = kernel.value_and_vjp(*points, v)
    return {
        "forward": [kernel(*points)],
        "vjp": per_wrt(kernel.vjp(*points, v), case),
        "value_and_vjp": [value, *per_wrt(vjp, case)],
        "jvp": [kernel.jvp(*points, t if len(t) > 1 else t[0])],
        "jacobian": per_wrt(kernel.jacobian(*points), case),
    }


@settings(PROPERTY, max_examples=6)
@SHARED
@given(CASES)
def test_float32_kernel_returns_float32(compiled, case):
    points = [p.astype(np.float32) for p in case.points()]
    for method, results in call_every_method(compiled(case, "float32"), case, points).items():
        for result in results:
            assert np.asarray(result).dtype == np.float32, method


@settings(PROPERTY, max_examples=6)
@SHARED
@given(CASES)
def test_float32_kernel_agrees_with_float64_to_float32_precision(compiled, case):
    points = [p.astype(np.float32) for p in case.points()]  # the same inputs for both
    single = call_every_method(compiled(case, "float32"), case, points)
    double = call_every_method(compiled(case), case, [p.astype(np.float64) for p in points])
    for method in double:
        for got, expected in zip(single[method], double[method]):
            assert_close(got, expected, rtol=FLOAT32_RTOL, what=method)


# -- the table, one function at a time -------------------------------------------------------------

@pytest.fixture(scope="session")
def table_kernel():
    """``table_kernel(function, dtype)``: (kernel, its scalar argument symbols), compiled once."""
    kernels = {}

    def get(function, dtype="float64"):
        if (function, dtype) not in kernels:
            outputs, symbols = table_function_outputs(function)
            kernels[function, dtype] = gc.compile(outputs, symbols, cache=False, dtype=dtype), symbols
        return kernels[function, dtype]

    return get


def _table_points(function, count=7):
    """``count`` points on the function's domain per argument, and a cotangent."""
    outputs, symbols = table_function_outputs(function)
    rng = np.random.default_rng(len(function.__name__))
    lo, hi = RULES[function].domain
    return [rng.uniform(lo, hi, count) for _ in symbols], rng.uniform(-1, 1, (count, len(outputs)))


@pytest.mark.parametrize("function", list(RULES), ids=lambda f: f.__name__)
def test_each_table_function_alone_matches_oracle(table_kernel, function):
    """Forward and VJP of ``function`` on its domain: torch autograd, or mpmath where the table names none."""
    import mpmath
    import torch

    rule = RULES[function]
    kernel, symbols = table_kernel(function)
    points, v = _table_points(function)
    if rule.torch is not None:
        leaves = [torch.tensor(p, requires_grad=True) for p in points]
        expected = torch.stack([getattr(torch, rule.torch)(*leaves)], -1)
        expected_vjp = [g.numpy() for g in torch.autograd.grad(expected, leaves, torch.tensor(v))]
        expected = expected.detach().numpy()
    else:
        evaluate = sp.lambdify(symbols, table_function_outputs(function)[0], "mpmath")
        with mpmath.workdps(40):
            h = mpmath.mpf("1e-15")
            at = [[mpmath.mpf(float(p[n])) for p in points] for n in range(7)]
            expected = np.array([[float(y) for y in evaluate(*point)] for point in at])
            expected_vjp = []
            for k in range(len(symbols)):
                up = [[*point[:k], point[k] + h, *point[k + 1:]] for point in at]
                down = [[*point[:k], point[k] - h, *point[k + 1:]] for point in at]
                jacobian = np.array([[float((a - b) / (2 * h)) for a, b in zip(evaluate(*u), evaluate(*d))]
                                     for u, d in zip(up, down)])
                expected_vjp.append(np.sum(v * jacobian, axis=-1))
    value, vjp = kernel.value_and_vjp(*points, v)
    assert_close(value, expected, what=f"{function.__name__}")
    for k, (got, want) in enumerate(zip(per_wrt_list(vjp, len(symbols)), expected_vjp)):
        assert_close(got, want, what=f"d{function.__name__}/d{symbols[k]}")


def per_wrt_list(result, count) -> list:
    return list(result) if count > 1 else [result]


@pytest.mark.parametrize("function", list(RULES), ids=lambda f: f.__name__)
def test_each_table_function_in_float32_returns_float32_close_to_float64(table_kernel, function):
    single, symbols = table_kernel(function, "float32")
    double, _ = table_kernel(function)
    points, v = _table_points(function)
    points, v = [p.astype(np.float32) for p in points], v.astype(np.float32)
    value, vjp = single.value_and_vjp(*points, v)
    expected_value, expected_vjp = double.value_and_vjp(*(p.astype(np.float64) for p in points), v.astype(np.float64))
    for got, expected in zip([value, *per_wrt_list(vjp, len(symbols))],
                             [expected_value, *per_wrt_list(expected_vjp, len(symbols))]):
        assert got.dtype == np.float32
        assert_close(got, expected, rtol=FLOAT32_RTOL, what=function.__name__)


# -- conventions at the kinks -------------------------------------------------------------------

def derivatives(kernel, *point) -> dict:
    """d kernel / d each argument at ``point`` by every method: they must all agree."""
    count = len(point)
    jvp_columns = [kernel.jvp(*point, tuple(np.eye(count)[k]) if count > 1 else 1.0) for k in range(count)]
    return {
        "vjp": per_wrt_list(kernel.vjp(*point, 1.0), count),
        "grad": per_wrt_list(kernel.grad(*point), count),
        "value_and_grad": per_wrt_list(kernel.value_and_grad(*point)[1], count),
        "jacobian": per_wrt_list(kernel.jacobian(*point), count),
        "jvp": jvp_columns,
    }


def assert_derivatives(kernel, point, expected):
    for method, got in derivatives(kernel, *point).items():
        np.testing.assert_array_equal(np.asarray(got, dtype=float), np.asarray(expected, dtype=float),
                                      err_msg=f"{method} at {point}")


def test_abs_derivative_at_zero_is_zero():
    kernel = gc.compile(sp.Abs(X), [X], cache=False)
    assert_derivatives(kernel, (0.0,), [0.0])
    assert_derivatives(kernel, (-0.5,), [-1.0])


@pytest.mark.parametrize(("function", "point", "expected"), [
    (sp.Max, (2.0, 1.0), [1.0, 0.0]),
    (sp.Max, (-1.0, 1.0), [0.0, 1.0]),
    (sp.Min, (2.0, 1.0), [0.0, 1.0]),
    (sp.Min, (-1.0, 1.0), [1.0, 0.0]),
], ids=["max-first", "max-second", "min-second", "min-first"])
def test_max_and_min_take_the_derivative_of_the_active_argument(function, point, expected):
    kernel = gc.compile(function(X, Y), [X, Y], cache=False)
    assert_derivatives(kernel, point, expected)


@pytest.mark.parametrize("function", [sp.Max, sp.Min], ids=["Max", "Min"])
def test_max_and_min_at_a_tie_give_the_whole_derivative_to_one_argument(function):
    kernel = gc.compile(function(X, Y), [X, Y], cache=False)
    got = derivatives(kernel, 1.0, 1.0)
    assert sorted(np.asarray(got["vjp"], dtype=float).tolist()) == [0.0, 1.0]
    for method, value in got.items():
        np.testing.assert_array_equal(value, got["vjp"], err_msg=method)


@pytest.mark.parametrize("point", [(-1.0, 0.3), (0.0, 0.3), (1.0, 0.3)], ids=["negative", "zero", "positive"])
def test_heaviside_has_derivative_zero(point):
    kernel = gc.compile(sp.Heaviside(X, Y), [X, Y], cache=False)
    assert_derivatives(kernel, point, [0.0, 0.0])


@pytest.mark.parametrize("x", [-1.5, 0.0, 2.0])
def test_sign_has_derivative_zero(x):
    kernel = gc.compile(sp.sign(X), [X], cache=False)
    assert_derivatives(kernel, (x,), [0.0])


@pytest.mark.parametrize("function", [sp.floor, sp.ceiling], ids=["floor", "ceiling"])
@pytest.mark.parametrize("x", [-1.0, 0.5, 2.0])
def test_floor_and_ceiling_have_derivative_zero(function, x):
    kernel = gc.compile(function(X), [X], cache=False)
    assert_derivatives(kernel, (x,), [0.0])


@pytest.mark.parametrize(("x", "expected"), [(0.5, 1.0), (1.0, 3.0), (2.0, 3.0)],
                         ids=["first-branch", "at-the-boundary", "second-branch"])
def test_piecewise_takes_the_derivative_of_the_active_branch(x, expected):
    kernel = gc.compile(sp.Piecewise((X**2, X < 1), (3 * X, True)), [X], cache=False)
    assert_derivatives(kernel, (x,), [expected])


def test_piecewise_derivative_ignores_an_undefined_inactive_branch():
    kernel = gc.compile(sp.Piecewise((sp.sqrt(X), X > 0), (0, True)), [X], cache=False)
    assert kernel(-1.0) == 0.0
    assert_derivatives(kernel, (-1.0,), [0.0])


def test_hessian_of_max_is_the_hessian_of_the_active_argument():
    a, b = sp.symbols("a b", real=True)
    kernel = gc.compile(sp.Max(a**2 * b, a + b), [[a, b]], cache=False)
    np.testing.assert_array_equal(kernel.hessian([2.0, 3.0]), [[6.0, 4.0], [4.0, 0.0]])
    np.testing.assert_array_equal(kernel.hessian([0.5, 0.5]), [[0.0, 0.0], [0.0, 0.0]])


# -- powers at a zero base ------------------------------------------------------------------------

@pytest.mark.parametrize("exponent", [sp.Rational(3, 2), sp.Rational(5, 2), sp.Float(2.5)], ids=["3/2", "5/2", "2.5"])
def test_derivative_of_a_fractional_power_at_zero_is_zero(exponent):
    kernel = gc.compile(X**exponent, [X], cache=False)
    assert_derivatives(kernel, (0.0,), [0.0])


def test_derivatives_of_a_symbolic_power_at_a_zero_base_are_zero():
    kernel = gc.compile(X**Y, [X, Y], cache=False)
    assert_derivatives(kernel, (0.0, 2.0), [0.0, 0.0])


def test_derivative_of_an_integer_power_at_zero_is_zero():
    kernel = gc.compile(X**4 * Y, [X, Y], cache=False)
    assert_derivatives(kernel, (0.0, 2.0), [0.0, 0.0])
