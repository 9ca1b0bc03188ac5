"""``torch.func`` transforms of a kernel's PyTorch function agree with the same transforms of PyTorch code.

``vmap`` maps a dimension the kernel broadcasts like any batch dimension; ``grad``,
``vjp``, ``jacrev``, ``jvp``, ``jacfwd`` and ``hessian`` run the compiled VJP, JVP and
``vjp_jvp``.
"""

import pytest
import sympy as sp
from tanh_layer import tanh_layer_kernel, tanh_layer_reference

import gradcomp as gc

torch = pytest.importorskip("torch")
func = pytest.importorskip("torch.func")


@pytest.fixture(scope="module")
def layer():
    return tanh_layer_kernel()


reference = tanh_layer_reference


@pytest.fixture(scope="module")
def energy():
    x = sp.symbols("x0:3")
    return gc.compile(x[0] * x[1] * x[2] + sp.sin(x[0]) * x[2] ** 2 + sp.exp(x[1] * x[2]), [x], cache=False)


def energy_reference(x):
    return x[..., 0] * x[..., 1] * x[..., 2] + torch.sin(x[..., 0]) * x[..., 2] ** 2 + torch.exp(x[..., 1] * x[..., 2])


def values(*shape, seed=0):
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def test_vmap_over_the_first_dimension_gives_the_batched_call(layer):
    x, W, b = values(5, 3), values(2, 3, seed=1), values(2, seed=2)
    torch.testing.assert_close(func.vmap(layer.to_torch(), in_dims=(0, None, None))(x, W, b), reference(x, W, b))


def test_vmap_over_an_inner_dimension_beside_batch_dimensions_broadcasts_like_the_kernel(layer):
    x, W, b = values(4, 3, 6), values(2, 3, seed=1), values(7, 1, 2, seed=2)  # x mapped on dim 2; b batched (7, 1)
    got = func.vmap(layer.to_torch(), in_dims=(2, None, None))(x, W, b)
    expected = func.vmap(reference, in_dims=(2, None, None))(x, W, b)
    torch.testing.assert_close(got, expected)


def test_jacrev_and_jacfwd_give_the_jacobian(layer):
    x, W, b = values(3), values(2, 3, seed=1), values(2, seed=2)
    for transform in (func.jacrev, func.jacfwd):
        for argnums in (0, 1):
            torch.testing.assert_close(transform(layer.to_torch(), argnums=argnums)(x, W, b),
                                       transform(reference, argnums=argnums)(x, W, b))


def test_jvp_gives_the_value_and_the_directional_derivative(layer):
    x, W, b = values(4, 3), values(2, 3, seed=1), values(2, seed=2)
    t_x, t_W = values(4, 3, seed=3), values(2, 3, seed=4)
    got = func.jvp(lambda x, W: layer.to_torch()(x, W, b), (x, W), (t_x, t_W))
    expected = func.jvp(lambda x, W: reference(x, W, b), (x, W), (t_x, t_W))
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)


def test_grad_of_a_loss(layer):
    x, W, b = values(4, 3), values(2, 3, seed=1), values(2, seed=2)
    torch.testing.assert_close(func.grad(lambda W: layer.to_torch()(x, W, b).square().sum())(W),
                               func.grad(lambda W: reference(x, W, b).square().sum())(W))


def test_hessian_is_forward_over_the_compiled_vjp(energy):
    x = values(3)
    torch.testing.assert_close(func.hessian(energy.to_torch())(x), func.hessian(energy_reference)(x))


def test_vmap_of_hessian_gives_the_kernels_hessian_per_point(energy):
    points = values(6, 3)
    got = func.vmap(func.hessian(energy.to_torch()))(points)
    torch.testing.assert_close(got, torch.from_numpy(energy.hessian(points.numpy())))
