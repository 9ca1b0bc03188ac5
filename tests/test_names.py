"""Generated code owns its namespace: no spelling of the user's symbol names changes a result."""

import keyword

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import gradcomp as gc

CLASHING_PAIRS = [("lambda", "lambda_1"), ("n", "n_1"), ("max", "max_1"), ("x-y", "x_y"), ("x.1", "x_1"),
                  ("ｘ", "x"), ("ﬁ", "fi"), ("ℌ", "ℍ"), ("x²", "x2")]
GENERATED_LOOKING = ["r0", "in0", "step0", "out0", "forward_part1", "np", "math", "CACHE", "META", "i", "n",
                     "core", "vjp_core", "prange", "njit", "t1", "x1_bar", "v0"]


def check_against_sympy(names, point):
    """a0**2 * a1 + sin(a2) ...: value and gradient against SymPy's own evaluation."""
    symbols = [sp.Symbol(name) for name in names]
    expr = sum((k + 1) * s ** (k % 3 + 1) for k, s in enumerate(symbols)) + sp.sin(symbols[0]) * symbols[-1]
    kernel = gc.compile(expr, list(symbols), cache=False)
    at = dict(zip(symbols, point))
    assert kernel(*point) == pytest.approx(float(expr.evalf(subs=at)), rel=1e-12)
    gradient = np.atleast_1d(kernel.grad(*point))
    expected = [float(sp.diff(expr, s).evalf(subs=at)) for s in symbols]
    np.testing.assert_allclose(gradient, expected, rtol=1e-12)
    batch = np.tile(np.asarray(point), (5, 1)).T  # the batched drivers too
    np.testing.assert_allclose(np.atleast_2d(kernel.grad(*batch))[..., 0], expected, rtol=1e-12)


@pytest.mark.parametrize("pair", CLASHING_PAIRS, ids=[f"{a}|{b}" for a, b in CLASHING_PAIRS])
def test_two_names_that_sanitize_or_fold_alike_stay_two_values(pair):
    a, b = (sp.Symbol(name) for name in pair)
    kernel = gc.compile(a**2 * b, [a, b], cache=False)
    assert kernel(2.0, 3.0) == 12.0
    assert kernel.grad(2.0, 3.0) == (12.0, 4.0)


def test_symbols_named_like_generated_identifiers_work_in_batches():
    check_against_sympy(GENERATED_LOOKING, np.linspace(0.1, 0.9, len(GENERATED_LOOKING)))


def test_symbols_named_like_python_keywords_work():
    check_against_sympy(keyword.kwlist[:12], np.linspace(-0.7, 0.8, 12))


_alphabet = st.sampled_from(["x", "x_1", "x1", "ｘ", "ﬁ", "fi", "lambda", "in0", "_", "²", "-", ".", "ℌ", "ℍ",
                             "max", "np", "r0", "out0", "t1", "v0", "bar", "_bar", "é", "e\u0301"])


@settings(max_examples=25, deadline=None)
@given(st.lists(st.lists(_alphabet, min_size=1, max_size=3).map("".join), min_size=2, max_size=4, unique=True))
def test_any_spelling_of_names_gives_sympys_values_and_gradients(names):
    check_against_sympy(names, np.linspace(0.3, 1.1, len(names)))
