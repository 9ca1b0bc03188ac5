"""The two worked examples of DEVELOPERS.md, exactly."""

import numpy as np
import sympy as sp

import gradcomp as gc


def test_gradient_of_sum_of_squares_plus_two(xyz):
    z = gc.compile(sum(x**2 + 2 for x in xyz), [list(xyz)])
    np.testing.assert_array_equal(z.grad([1, 2, 3]), [2.0, 4.0, 6.0])


def test_vjp_of_three_outputs_matches_backward_with_gradient(xyz):
    x1, x2, x3 = xyz
    y = gc.compile([x1 * x2 * x3, x1 + x2 + x3, x1 + x2 * x3], [[x1, x2, x3]])
    np.testing.assert_allclose(y.vjp([1, 2, 3], [0.1, 0.2, 0.3]), [1.1, 1.4, 1.0], rtol=1e-15)


def test_vjp_with_three_scalar_arguments_returns_a_tuple(xyz):
    x1, x2, x3 = xyz
    y = gc.compile([x1 * x2 * x3, x1 + x2 + x3, x1 + x2 * x3], [x1, x2, x3])
    grads = y.vjp(1, 2, 3, [0.1, 0.2, 0.3])
    np.testing.assert_allclose(grads, (1.1, 1.4, 1.0), rtol=1e-15)


def test_seed_example_script_runs():
    import runpy
    from pathlib import Path
    runpy.run_path(str(Path(__file__).parents[1] / "examples" / "seed_backward.py"), run_name="__main__")


def test_compile_is_deterministic(xyz):
    first = gc.compile(sp.sin(xyz[0]) * xyz[1], list(xyz[:2]), cache=False)
    second = gc.compile(sp.sin(xyz[0]) * xyz[1], list(xyz[:2]), cache=False)
    assert first.source == second.source and first.key == second.key
