"""The n-link pendulum on a cart of examples/n_link_pendulum.py: gradcomp's right-hand side with gc.solve
against KanesMethod's own, and its Jacobian against central differences."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

pytest.importorskip("scipy")
_SPEC = importlib.util.spec_from_file_location(
    "n_link_pendulum", Path(__file__).resolve().parent.parent / "examples" / "n_link_pendulum.py")
pendulum = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(pendulum)


@pytest.mark.parametrize("links", [1, 2])
def test_the_right_hand_side_agrees_with_kanes_method_rhs(links):
    model = kane, state, force, parameters = pendulum.kanes_method(links)
    symbolic = kane.mass_matrix.LUsolve(kane.forcing)  # u' as KanesMethod.rhs() has it, affordable at small n
    reference = sp.lambdify([state, force, parameters], [*state[links + 1:], *symbolic])
    kernel = pendulum.right_hand_side(links, cache=False, model=model)
    rng = np.random.default_rng(links)
    p = pendulum.parameters(links) * rng.uniform(0.5, 1.5, 2 * links + 2)
    for _ in range(5):
        x, f = rng.standard_normal(2 * (links + 1)), rng.standard_normal()
        np.testing.assert_allclose(kernel(x, f, p), np.ravel(reference(x, f, p)), rtol=1e-12, atol=1e-12)


def test_kanes_method_rhs_is_the_same_function():
    """KanesMethod.rhs() itself (the full mass matrix of q' = u and u') at one link."""
    links = 1
    kane, state, force, parameters = pendulum.kanes_method(links)
    kernel = pendulum.right_hand_side(links, cache=False)
    reference = sp.lambdify([state, force, parameters], list(kane.rhs()))
    x, f, p = np.array([0.2, 1.1, -0.4, 0.3]), 0.7, pendulum.parameters(links)
    np.testing.assert_allclose(kernel(x, f, p), np.ravel(reference(x, f, p)), rtol=1e-12)


def test_the_jacobian_agrees_with_central_differences():
    links = 3
    kernel = pendulum.right_hand_side(links, cache=False)
    p = pendulum.parameters(links)
    x = pendulum.upright(links) + 0.2 * np.random.default_rng(0).standard_normal(2 * (links + 1))
    jac_x, jac_f = kernel.jacobian(x, 0.3, p)
    step = 1e-6
    columns = [(kernel(x + step * e, 0.3, p) - kernel(x - step * e, 0.3, p)) / (2 * step) for e in np.eye(len(x))]
    np.testing.assert_allclose(jac_x, np.array(columns).T, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(jac_f, (kernel(x, 0.3 + step, p) - kernel(x, 0.3 - step, p)) / (2 * step),
                               rtol=1e-6, atol=1e-6)


def test_the_jacobian_agrees_with_the_jacobian_of_sympys_symbolic_solve():
    links = 2
    model = kane, state, force, parameters = pendulum.kanes_method(links)
    symbolic = sp.Matrix([*state[links + 1:], *kane.mass_matrix.LUsolve(kane.forcing)])
    reference = sp.lambdify([state, force, parameters], symbolic.jacobian([*state, force]))
    kernel = pendulum.right_hand_side(links, cache=False, model=model)
    x, f, p = np.array([0.1, 1.2, 2.0, -0.3, 0.5, 0.8]), -0.4, pendulum.parameters(links)
    jac_x, jac_f = kernel.jacobian(x, f, p)
    np.testing.assert_allclose(np.column_stack([jac_x, jac_f]), reference(x, f, p), rtol=1e-11, atol=1e-12)
