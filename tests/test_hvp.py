"""k.hvp: Hessian-vector products by forward over reverse on the DAG, checked against PyTorch."""

import sys
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

import gradcomp as gc

torch = pytest.importorskip("torch")
# The repository root, never benchmarks/ itself: its module names (sparse, timing) shadow installed packages
# in this process and in every worker it spawns.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.suite import CASES  # noqa: E402

x = sp.symbols("x0:4")
ROSENBROCK = sum(100 * (x[i + 1] - x[i] ** 2) ** 2 + (1 - x[i]) ** 2 for i in range(3))


def torch_rosenbrock(z):
    return (100 * (z[..., 1:] - z[..., :-1] ** 2) ** 2 + (1 - z[..., :-1]) ** 2).sum(-1)


@pytest.fixture(scope="module")
def rosenbrock():
    return gc.compile(ROSENBROCK, [list(x)], cache=False)


def test_hvp_matches_torch_autograd_functional_hvp(rosenbrock):
    point, tangent = np.array([0.5, -0.3, 1.2, 0.7]), np.array([1.0, -2.0, 0.5, 0.25])
    _, expected = torch.autograd.functional.hvp(torch_rosenbrock, torch.tensor(point), torch.tensor(tangent))
    np.testing.assert_allclose(rosenbrock.hvp(point, tangent), expected.numpy(), rtol=1e-13)


def test_hvp_is_deferred_until_first_called():
    kernel = gc.compile(ROSENBROCK, [list(x)], cache=False)
    assert "hvp" in kernel.available_methods and "hvp" not in kernel.methods
    kernel.hvp(np.ones(4), np.ones(4))
    assert "hvp" in kernel.methods


def test_hvp_broadcasts_a_batch_of_points_against_one_tangent(rosenbrock):
    rng = np.random.default_rng(1)
    points, tangent = rng.uniform(-1, 1, (5, 2, 4)), rng.standard_normal(4)
    result = rosenbrock.hvp(points, tangent)
    assert result.shape == (5, 2, 4)
    np.testing.assert_allclose(result, rosenbrock.hessian(points) @ tangent, rtol=1e-12)


def test_hvp_with_several_wrt_arguments_takes_a_tuple_of_tangents_and_returns_one_result_each():
    a, b, c = sp.symbols("a b c")
    kernel = gc.compile(sp.sin(a * b) * c + a**3 * c**2, [a, b, c], wrt=[0, 2], cache=False)
    point = (0.4, 1.3, -0.8)
    ha, hc = kernel.hvp(*point, (0.5, -1.5))

    def f(z):
        return torch.sin(z[0] * point[1]) * z[1] + z[0] ** 3 * z[1] ** 2
    _, expected = torch.autograd.functional.hvp(f, torch.tensor([point[0], point[2]], dtype=torch.float64),
                                                torch.tensor([0.5, -1.5], dtype=torch.float64))
    np.testing.assert_allclose([ha, hc], expected.numpy(), rtol=1e-13)


def test_hvp_without_a_tuple_of_tangents_for_several_wrt_names_them():
    a, b = sp.symbols("a b")
    kernel = gc.compile(a * b**2, [a, b], cache=False)
    with pytest.raises(TypeError, match=r"hvp\(\) needs a tuple of 2 tangents.*\(a, b\)"):
        kernel.hvp(1.0, 2.0, 1.0)


def test_hvp_of_a_vector_output_is_refused_with_the_alternative():
    a, b = sp.symbols("a b")
    kernel = gc.compile([a * b, a + b], [[a, b]], cache=False)
    assert "hvp" not in kernel.available_methods
    with pytest.raises(ValueError, match=r"output has shape \(2,\).*vjp_jvp"):
        kernel.hvp([1.0, 2.0], [1.0, 0.0])


@pytest.mark.parametrize("case", ["rosenbrock32", "lj6", "chain12"])
def test_hvp_of_a_benchmark_case_matches_torch(case):
    function, n_in, _ = CASES[case]
    symbols = sp.symbols(f"x0:{n_in}")
    kernel = gc.compile(function(list(symbols), sp)[0], [list(symbols)], cache=False)
    rng = np.random.default_rng(2)
    point = rng.uniform(-1, 1, n_in) if case != "lj6" else np.arange(n_in) * 0.7 + 0.1 * rng.standard_normal(n_in)
    tangent = rng.standard_normal(n_in)
    _, expected = torch.autograd.functional.hvp(lambda z: function([z[i] for i in range(n_in)], torch)[0],
                                                torch.tensor(point), torch.tensor(tangent))
    np.testing.assert_allclose(kernel.hvp(point, tangent), expected.numpy(), rtol=1e-10, atol=1e-12)


def test_vjp_jvp_gives_the_jvp_and_the_tangent_of_the_vjp():
    a, b, c = sp.symbols("a b c")
    kernel = gc.compile([sp.sin(a) * b, a * b * c, sp.exp(c)], [[a, b, c]], cache=False)
    point, v, t = np.array([0.3, -0.7, 1.1]), np.array([0.5, 2.0, -1.0]), np.array([1.0, 0.2, -0.4])

    def f(z):
        return torch.stack([torch.sin(z[0]) * z[1], z[0] * z[1] * z[2], torch.exp(z[2])])

    def vjp(z):
        return torch.autograd.functional.vjp(f, z, torch.tensor(v), create_graph=True)[1]
    jvp, second = kernel.vjp_jvp(point, v, t)
    np.testing.assert_allclose(jvp, torch.autograd.functional.jvp(f, torch.tensor(point), torch.tensor(t))[1],
                               rtol=1e-13)
    np.testing.assert_allclose(second, torch.autograd.functional.jvp(vjp, torch.tensor(point), torch.tensor(t))[1],
                               rtol=1e-13)
