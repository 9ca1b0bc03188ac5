"""Functions of time as arguments: sympy.physics.mechanics' dynamicsymbols, taken as lambdify takes them."""

import numpy as np
import pytest
import sympy as sp
import sympy.physics.mechanics as me

import gradcomp as gc

t = me.dynamicsymbols._t
q = me.dynamicsymbols("q0:2")
u = [qi.diff(t) for qi in q]


def test_dynamicsymbols_and_their_derivatives_are_arguments_and_agree_with_lambdify():
    outputs = [sp.sin(q[0]) * u[1] + t * q[1], u[0] ** 2 * sp.cos(q[1] - q[0])]
    kernel = gc.compile(outputs, [q, u, t], cache=False)
    reference = sp.lambdify([q, u, t], outputs)
    x, v = np.array([0.3, -0.2]), np.array([1.5, 0.7])
    np.testing.assert_allclose(kernel(x, v, 0.5), reference(x, v, 0.5), rtol=1e-14)


def test_the_jacobian_through_dynamicsymbols_is_the_derivative_in_the_stand_in_symbols():
    outputs = [q[0] * u[1] ** 2, sp.exp(q[1]) * u[0]]
    kernel = gc.compile(outputs, [q, u], cache=False)
    jacobian = sp.Matrix(outputs).jacobian([*q, *u])
    reference = sp.lambdify([q, u], jacobian)
    x, v = np.array([0.4, 0.1]), np.array([-1.2, 2.0])
    j_q, j_u = kernel.jacobian(x, v)
    np.testing.assert_allclose(np.hstack([j_q, j_u]), reference(x, v), rtol=1e-14)


def test_a_scalar_function_argument_is_named_after_the_function_and_its_derivative_with_dot():
    kernel = gc.compile(q[0] * u[0], [q[0], u[0]], cache=False)
    assert [name for name, _ in kernel._meta.arguments] == ["q0", "q0_dot"]


def test_second_derivatives_and_matrix_arguments_are_taken():
    accelerations = [qi.diff(t, 2) for qi in q]
    outputs = [accelerations[0] * q[1] + accelerations[1]]
    kernel = gc.compile(outputs, [sp.Matrix(q), sp.Matrix(accelerations)], cache=False)
    np.testing.assert_allclose(kernel(np.array([[1.0], [2.0]]), np.array([[3.0], [4.0]])), [10.0])


def test_a_stand_in_never_equals_a_user_symbol_of_the_same_name():
    user_q0 = sp.Symbol("q0")  # a parameter that happens to share the function's name
    kernel = gc.compile(q[0] + 10 * user_q0, [q[0], user_q0], cache=False)
    assert kernel(1.0, 2.0) == pytest.approx(21.0)


def test_a_derivative_in_the_outputs_but_in_no_argument_is_a_clear_error():
    with pytest.raises(gc.CompileError, match=r"Derivative\(q0\(t\), t\).*in no argument"):
        gc.compile(u[0] * q[0], [q], cache=False)


def test_a_function_in_the_outputs_but_in_no_argument_is_a_clear_error():
    with pytest.raises(gc.CompileError, match=r"q1\(t\).*in no argument"):
        gc.compile(q[0] * q[1], [q[0]], cache=False)


def test_the_same_model_gives_the_same_cache_key_twice(tmp_path):
    first = gc.compile(q[0] * u[1], [q, u], cache=tmp_path)
    second = gc.compile(q[0] * u[1], [q, u], cache=tmp_path)
    assert first._meta.key == second._meta.key
