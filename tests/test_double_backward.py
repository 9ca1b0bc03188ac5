"""The PyTorch bridge's backward is differentiable: double backward, gradgradcheck, forward mode."""

import pytest
import sympy as sp
from tanh_layer import tanh_layer_kernel, tanh_layer_reference

import gradcomp as gc

torch = pytest.importorskip("torch")
forward_ad = pytest.importorskip("torch.autograd.forward_ad")


@pytest.fixture(scope="module")
def layer():
    return tanh_layer_kernel()


reference = tanh_layer_reference


def inputs(seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 3, dtype=torch.float64, generator=generator, requires_grad=True)
    W = torch.randn(2, 3, dtype=torch.float64, generator=generator, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, generator=generator)
    return x, W, b


def test_gradcheck_passes(layer):
    assert torch.autograd.gradcheck(layer.to_torch(), inputs())


def test_gradgradcheck_passes_with_a_broadcast_parameter(layer):
    assert torch.autograd.gradgradcheck(layer.to_torch(), inputs())


def test_gradient_penalty_matches_pure_torch(layer):
    function = layer.to_torch()
    results = []
    for f in (function, reference):
        x, W, b = inputs(1)
        gradients = torch.autograd.grad(f(x, W, b).pow(2).sum(), (x, W), create_graph=True)
        penalty = sum((g ** 2).sum() for g in gradients)
        results.append(torch.autograd.grad(penalty, (x, W)))
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


def test_double_backward_of_a_scalar_kernel_is_its_hessian():
    a, b = sp.symbols("a b")
    function = gc.compile(sp.exp(a) * sp.sin(b) + a**2 * b**3, [[a, b]], cache=False).to_torch()
    z = torch.tensor([0.3, -0.8], dtype=torch.float64, requires_grad=True)
    expected = torch.autograd.functional.hessian(lambda u: torch.exp(u[0]) * torch.sin(u[1]) + u[0] ** 2 * u[1] ** 3, z)
    (gradient,) = torch.autograd.grad(function(z), z, create_graph=True)
    rows = [torch.autograd.grad(gradient[i], z, retain_graph=True)[0] for i in range(2)]
    torch.testing.assert_close(torch.stack(rows), expected, rtol=1e-13, atol=1e-13)


def test_forward_mode_dual_tensors_run_the_compiled_jvp(layer):
    x, W, b = inputs(2)
    tx, tW = torch.randn_like(x), torch.randn_like(W)
    tangents = []
    with forward_ad.dual_level():
        for f in (layer.to_torch(), reference):
            y = f(forward_ad.make_dual(x.detach(), tx), forward_ad.make_dual(W.detach(), tW), b)
            tangents.append(forward_ad.unpack_dual(y).tangent)
    torch.testing.assert_close(tangents[0], tangents[1], rtol=1e-13, atol=1e-13)


def test_forward_mode_tangent_of_a_parameter_outside_wrt_is_refused(layer):
    x, W, b = inputs(3)
    with forward_ad.dual_level():
        with pytest.raises(ValueError, match=r"argument 'b' .* not among the kernel's wrt \(x, W\)"):
            layer.to_torch()(x.detach(), W.detach(), forward_ad.make_dual(b, torch.ones_like(b)))


def test_gradgradcheck_passes_for_a_float32_kernel_given_float64_tensors_within_float32_accuracy():
    a, b = sp.symbols("a b")
    function = gc.compile([a * sp.cos(b), a**2 + b], [[a, b]], dtype="float32", cache=False).to_torch()
    z = torch.tensor([0.7, 0.2], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(function, (z,), eps=1e-3, atol=1e-2, rtol=1e-2)
