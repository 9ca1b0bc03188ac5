"""The PyTorch and JAX bridges, and kernels feeding SciPy."""

import subprocess
import sys

import numpy as np
import pytest
import sympy as sp

import gradcomp as gc

try:
    import torch
except ImportError:
    torch = None
try:
    import jax
    import jax.numpy as jnp
except ImportError:
    jax = jnp = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
needs_jax = pytest.mark.skipif(jax is None, reason="JAX is not installed")


def tanh_layer(x, W):
    return [sp.tanh(sum(W[i, j] * x[j] for j in range(3))) for i in range(2)]


@pytest.fixture(scope="module")
def layer():
    """y = tanh(W x), differentiated in x and W."""
    return gc.kernel(x=3, W=(2, 3), wrt=("x", "W"))(tanh_layer)


@pytest.fixture(scope="module")
def layer_x_only():
    """y = tanh(W x), differentiated in x only: W is a parameter."""
    return gc.kernel(x=3, W=(2, 3), wrt=("x",))(tanh_layer)


@pytest.fixture(scope="module")
def seed():
    """The seed example y = (x1·x2·x3, x1+x2+x3, x1+x2·x3)."""
    x1, x2, x3 = sp.symbols("x1 x2 x3")
    return gc.compile([x1 * x2 * x3, x1 + x2 + x3, x1 + x2 * x3], [[x1, x2, x3]])


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_importing_gradcomp_and_calling_a_kernel_imports_neither_torch_nor_jax(tmp_path):
    script = (
        "import sys, sympy as sp, gradcomp as gc\n"
        "x = sp.Symbol('x')\n"
        "k = gc.compile(x**2, [x], cache=False)\n"
        "k.grad(3.0)\n"
        "print(sorted(m for m in ('torch', 'jax') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# -- PyTorch ------------------------------------------------------------------

def leaf(array, dtype=None):
    return torch.tensor(array, dtype=dtype or torch.float64, requires_grad=True)


def torch_layer(x, W):
    """tanh(W x) per point, batch dims broadcasting as in the kernel."""
    return torch.tanh((W * x[..., None, :]).sum(-1))


@needs_torch
def test_torch_loss_backward_matches_torch_autograd(layer, rng):
    x, W = rng.standard_normal(3), rng.standard_normal((2, 3))
    xt, Wt, xr, Wr = leaf(x), leaf(W), leaf(x), leaf(W)
    layer.to_torch()(xt, Wt).square().sum().backward()
    torch_layer(xr, Wr).square().sum().backward()
    torch.testing.assert_close(xt.grad, xr.grad)
    torch.testing.assert_close(Wt.grad, Wr.grad)


@needs_torch
def test_torch_backward_with_gradient_leaves_vjp_in_grad(seed):
    x = leaf([1.0, 2.0, 3.0])
    seed.to_torch()(x).backward(gradient=torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64))
    torch.testing.assert_close(x.grad, torch.tensor([1.1, 1.4, 1.0], dtype=torch.float64))


@needs_torch
def test_torch_gradient_of_broadcast_parameter_is_summed_over_batch(layer, rng):
    x, W = rng.standard_normal((5, 3)), rng.standard_normal((2, 3))
    xt, Wt, xr, Wr = leaf(x), leaf(W), leaf(x), leaf(W)
    layer.to_torch()(xt, Wt).sum().backward()
    torch_layer(xr, Wr).sum().backward()
    assert Wt.grad.shape == (2, 3)
    torch.testing.assert_close(Wt.grad, Wr.grad)
    torch.testing.assert_close(xt.grad, xr.grad)


@needs_torch
def test_torch_gradient_of_size_one_batch_dim_is_summed_keeping_the_dim(layer, rng):
    x, W = rng.standard_normal((4, 3, 3)), rng.standard_normal((4, 1, 2, 3))
    xt, Wt, xr, Wr = leaf(x), leaf(W), leaf(x), leaf(W)
    layer.to_torch()(xt, Wt).sum().backward()
    torch_layer(xr, Wr).sum().backward()
    assert Wt.grad.shape == (4, 1, 2, 3)
    torch.testing.assert_close(Wt.grad, Wr.grad)


@needs_torch
def test_torch_float32_tensors_give_float32_result_and_gradients(layer, rng):
    xt = leaf(rng.standard_normal(3), torch.float32)
    Wt = leaf(rng.standard_normal((2, 3)), torch.float32)
    y = layer.to_torch()(xt, Wt)
    y.sum().backward()
    assert (y.dtype, xt.grad.dtype, Wt.grad.dtype) == (torch.float32,) * 3
    torch.testing.assert_close(y, torch_layer(xt.detach(), Wt.detach()))


@needs_torch
def test_torch_gradcheck_passes(layer, rng):
    inputs = (leaf(rng.standard_normal((2, 3))), leaf(rng.standard_normal((2, 3))))
    assert torch.autograd.gradcheck(layer.to_torch(), inputs)


@needs_torch
def test_torch_argument_outside_wrt_gets_no_gradient(layer_x_only, rng):
    xt, Wt = leaf(rng.standard_normal(3)), leaf(rng.standard_normal((2, 3)))
    layer_x_only.to_torch()(xt, Wt).sum().backward()
    assert xt.grad is not None
    assert Wt.grad is None


@needs_torch
def test_torch_tensor_off_the_cpu_raises_naming_argument_and_device(layer):
    x = torch.zeros(3, device="meta")
    with pytest.raises(ValueError, match=r"'x'.*meta.*\.cpu\(\)"):
        layer.to_torch()(x, torch.zeros(2, 3))


@needs_torch
def test_torch_wrong_argument_count_raises_type_error(layer):
    with pytest.raises(TypeError, match="takes 2 arguments"):
        layer.to_torch()(torch.zeros(3))


# -- JAX ----------------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def jax_x64():
    """Double precision in JAX for these tests, restored afterwards."""
    if jax is None:
        yield
        return
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


def jax_layer(x, W):
    """tanh(W x) per point, batch dims broadcasting as in the kernel."""
    return jnp.tanh((W * x[..., None, :]).sum(-1))


def summed(function):
    return lambda x, W: function(x, W).sum()


@needs_jax
def test_jax_grad_matches_jax_autodiff(layer, rng):
    x, W = rng.standard_normal((5, 3)), rng.standard_normal((2, 3))
    got = jax.grad(summed(layer.to_jax()), argnums=(0, 1))(x, W)
    expected = jax.grad(summed(jax_layer), argnums=(0, 1))(x, W)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-12)


@needs_jax
def test_jax_vjp_matches_jax_autodiff(layer, rng):
    x, W = rng.standard_normal((5, 3)), rng.standard_normal((2, 3))
    cotangent = rng.standard_normal((5, 2))
    y, pullback = jax.vjp(layer.to_jax(), x, W)
    y_ref, pullback_ref = jax.vjp(jax_layer, x, W)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12)
    for g, e in zip(pullback(cotangent), pullback_ref(cotangent)):
        np.testing.assert_allclose(g, e, rtol=1e-12)


@needs_jax
def test_jax_jit_of_grad_matches_eager(layer, rng):
    x, W = rng.standard_normal(3), rng.standard_normal((2, 3))
    loss = summed(layer.to_jax())
    np.testing.assert_allclose(jax.jit(jax.grad(loss, argnums=1))(x, W), jax.grad(loss, argnums=1)(x, W))


@needs_jax
def test_jax_vmap_of_grad_over_parameter_matches_jax_autodiff(layer, rng):
    x, Ws = rng.standard_normal((5, 3)), rng.standard_normal((4, 2, 3))
    per_W = jax.vmap(jax.grad(summed(layer.to_jax()), argnums=1), in_axes=(None, 0))(x, Ws)
    expected = jax.vmap(jax.grad(summed(jax_layer), argnums=1), in_axes=(None, 0))(x, Ws)
    np.testing.assert_allclose(per_W, expected, rtol=1e-12)


@needs_jax
def test_jax_check_grads_reverse_mode_passes(layer, rng):
    from jax.test_util import check_grads
    check_grads(layer.to_jax(), (rng.standard_normal((2, 3)), rng.standard_normal((2, 3))), order=1, modes=["rev"])


@needs_jax
def test_jax_argument_outside_wrt_gets_zero_cotangent(layer_x_only, rng):
    x, W = rng.standard_normal(3), rng.standard_normal((2, 3))
    grad_W = jax.grad(summed(layer_x_only.to_jax()), argnums=1)(x, W)
    np.testing.assert_array_equal(grad_W, np.zeros((2, 3)))


@needs_jax
def test_jax_float32_inputs_give_float32_result(layer):
    y = layer.to_jax()(jnp.ones(3, jnp.float32), jnp.ones((2, 3), jnp.float32))
    assert y.dtype == jnp.float32


# -- SciPy --------------------------------------------------------------------

def test_value_and_grad_drives_scipy_minimize_with_jac_true():
    optimize = pytest.importorskip("scipy.optimize")
    x = sp.symbols("x0:4")
    rosenbrock = sum(100 * (x[i + 1] - x[i] ** 2) ** 2 + (1 - x[i]) ** 2 for i in range(3))
    kernel = gc.compile(rosenbrock, [list(x)])
    result = optimize.minimize(kernel.value_and_grad, np.full(4, -0.5), jac=True, method="BFGS")
    assert result.success, result.message
    np.testing.assert_allclose(result.x, np.ones(4), atol=1e-4)
