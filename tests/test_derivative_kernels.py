"""Derivative kernels: a kernel's gradient, VJP or JVP as a Kernel of its own, whose methods compose."""

import numpy as np
import pytest
import sympy as sp
import torch
from test_cache import run_python

import gradcomp as gc

x = sp.symbols("x0:4")
ROSENBROCK = sum(100 * (x[i + 1] - x[i] ** 2) ** 2 + (1 - x[i]) ** 2 for i in range(3))
POINT = np.array([0.5, -0.3, 1.2, 0.7])
TANGENT = np.array([1.0, -2.0, 0.5, 3.0])


def rosenbrock_torch(z):
    return sum(100 * (z[i + 1] - z[i] ** 2) ** 2 + (1 - z[i]) ** 2 for i in range(3))


@pytest.fixture(scope="module")
def kernel():
    return gc.compile(ROSENBROCK, [list(x)], cache=False)


def test_the_jacobian_of_a_grad_kernel_is_torchs_hessian(kernel):
    hessian = torch.func.hessian(rosenbrock_torch)(torch.tensor(POINT))
    np.testing.assert_allclose(gc.derivative(kernel, "grad").jacobian(POINT), hessian.numpy(), rtol=1e-12)


def test_the_jvp_of_a_grad_kernel_is_the_hessian_vector_product(kernel):
    _, hvp = torch.autograd.functional.hvp(rosenbrock_torch, torch.tensor(POINT), torch.tensor(TANGENT))
    np.testing.assert_allclose(gc.derivative(kernel, "grad").jvp(POINT, TANGENT), hvp.numpy(), rtol=1e-12)


def test_a_vjp_kernel_takes_the_cotangent_as_its_last_argument_and_differentiates_it_too():
    a, b = sp.symbols("a0:3"), sp.symbols("b0:3")
    field = gc.compile([a[0] * a[1] * b[2], sp.sin(a[2]) * b[0], a[0] + b[1] ** 2], [list(a), list(b)], wrt=[0],
                       cache=False)
    vjp_kernel = gc.derivative(field, "vjp")
    assert vjp_kernel.arg_names == ("arg0", "arg1", "v") and vjp_kernel.wrt == (0, 2)
    xa, xb, v = np.array([0.3, -1.1, 0.8]), np.array([1.5, 0.2, -0.7]), np.array([0.4, -0.9, 2.0])
    np.testing.assert_allclose(vjp_kernel(xa, xb, v), field.vjp(xa, xb, v), rtol=1e-13)
    # a second-order reverse product, against torch's double backward
    w = np.array([0.7, 0.1, -0.4])
    ta = torch.tensor(xa, requires_grad=True)
    tv = torch.tensor(v, requires_grad=True)
    y = torch.stack([ta[0] * ta[1] * xb[2], torch.sin(ta[2]) * xb[0], ta[0] + xb[1] ** 2])
    (first,) = torch.autograd.grad(y, ta, tv, create_graph=True)
    second_a, second_v = torch.autograd.grad(first, (ta, tv), torch.tensor(w))
    got_a, got_v = vjp_kernel.vjp(xa, xb, v, w)
    np.testing.assert_allclose(got_a, second_a.numpy(), rtol=1e-13)
    np.testing.assert_allclose(got_v, second_v.numpy(), rtol=1e-13)


def test_a_jvp_kernel_agrees_with_the_jvp_method(kernel):
    jvp_kernel = gc.derivative(kernel, "jvp")
    assert jvp_kernel(POINT, TANGENT) == pytest.approx(kernel.jvp(POINT, TANGENT), rel=1e-13)


def test_a_grad_kernel_costs_about_what_the_vjp_method_costs(kernel):
    """Built from the derivative program's DAG, not by differentiating the user's expression tree."""
    grad_kernel = gc.derivative(kernel, "grad")
    assert grad_kernel.methods["forward"]["ops"] <= kernel.methods["vjp"]["ops"]


def test_a_grad_kernel_needs_a_scalar_output():
    with pytest.raises(gc.CompileError, match="scalar output"):
        gc.derivative(gc.compile([x[0], x[1]], [list(x)], cache=False), "grad")


def test_an_unknown_kind_is_refused(kernel):
    with pytest.raises(gc.CompileError, match="'hessian' is not a derivative kernel"):
        gc.derivative(kernel, "hessian")


def test_a_derivative_kernel_is_named_and_cached_like_any_kernel(tmp_path):
    gc.derivative(gc.compile(ROSENBROCK, [list(x)], name="rosen", cache=tmp_path), "grad")
    report = run_python("""
        import json
        import numpy as np
        import gradcomp as gc
        print(json.dumps({"grad": gc.load("rosen.grad")(np.array([0.5, -0.3, 1.2, 0.7])).tolist()}))
    """, tmp_path)
    np.testing.assert_allclose(report["grad"], gc.compile(ROSENBROCK, [list(x)], cache=False).grad(POINT),
                               rtol=1e-13)
