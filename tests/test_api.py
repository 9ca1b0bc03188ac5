"""The calling conventions of API.md: shapes, parameters, broadcasting, dtypes."""

import numpy as np
import pytest
import sympy as sp

import gradcomp as gc

RNG = np.random.default_rng(7)


@pytest.fixture(scope="module")
def layer():
    """y = tanh(W x + b): a vector argument, a MatrixSymbol and a parameter vector."""
    x = sp.symbols("x0:3")
    W = sp.MatrixSymbol("W", 2, 3)
    b = sp.symbols("b0:2")
    y = [sp.tanh(sum(W[i, j] * x[j] for j in range(3)) + b[i]) for i in range(2)]
    return gc.compile(y, [list(x), W, list(b)], wrt=[0, 1])


def layer_numpy(x, W, b):
    return np.tanh(np.einsum("...ij,...j->...i", W, x) + b)


def layer_jacobians(x, W, b):
    """dy/dx (2, 3) and dy/dW (2, 2, 3) for one point."""
    d = 1 - layer_numpy(x, W, b) ** 2
    return d[:, None] * W, np.einsum("i,ij,k->ijk", d, np.eye(2), x)


@pytest.fixture(scope="module")
def point():
    return RNG.standard_normal(3), RNG.standard_normal((2, 3)), RNG.standard_normal(2)


def test_forward_of_one_point_has_the_output_shape(layer, point):
    np.testing.assert_allclose(layer(*point), layer_numpy(*point), rtol=1e-14)


def test_vjp_returns_one_array_per_wrt_argument_in_order(layer, point):
    v = RNG.standard_normal(2)
    jac_x, jac_W = layer_jacobians(*point)
    grad_x, grad_W = layer.vjp(*point, v)
    np.testing.assert_allclose(grad_x, v @ jac_x, rtol=1e-13)
    np.testing.assert_allclose(grad_W, np.einsum("i,ijk->jk", v, jac_W), rtol=1e-13)


def test_jacobian_has_out_shape_then_arg_shape(layer, point):
    jac_x, jac_W = layer.jacobian(*point)
    expected_x, expected_W = layer_jacobians(*point)
    assert jac_x.shape == (2, 3) and jac_W.shape == (2, 2, 3)
    np.testing.assert_allclose(jac_x, expected_x, rtol=1e-13)
    np.testing.assert_allclose(jac_W, expected_W, rtol=1e-13)


def test_jvp_takes_a_tuple_of_tangents_for_several_wrt_arguments(layer, point):
    t_x, t_W = RNG.standard_normal(3), RNG.standard_normal((2, 3))
    jac_x, jac_W = layer_jacobians(*point)
    np.testing.assert_allclose(layer.jvp(*point, (t_x, t_W)), jac_x @ t_x + np.einsum("ijk,jk->i", jac_W, t_W),
                               rtol=1e-13)


def test_value_and_vjp_equals_forward_and_vjp(layer, point):
    v = RNG.standard_normal(2)
    value, (grad_x, grad_W) = layer.value_and_vjp(*point, v)
    np.testing.assert_array_equal(value, layer(*point))
    np.testing.assert_array_equal(grad_x, layer.vjp(*point, v)[0])
    np.testing.assert_array_equal(grad_W, layer.vjp(*point, v)[1])


def test_a_shared_parameter_broadcasts_against_a_batch(layer, point):
    _, W, b = point
    xs = RNG.standard_normal((4, 5, 3))
    ys = layer(xs, W, b)
    assert ys.shape == (4, 5, 2)
    np.testing.assert_allclose(ys, layer_numpy(xs, W, b), rtol=1e-14)


def test_batch_dimensions_broadcast_like_numpy(layer, point):
    xs = RNG.standard_normal((4, 1, 3))
    Ws = RNG.standard_normal((1, 5, 2, 3))
    v = RNG.standard_normal(2)
    grad_x, grad_W = layer.vjp(xs, Ws, point[2], v)
    assert grad_x.shape == (4, 5, 3) and grad_W.shape == (4, 5, 2, 3)
    jac_x, _ = layer_jacobians(xs[2, 0], Ws[0, 3], point[2])
    np.testing.assert_allclose(grad_x[2, 3], v @ jac_x, rtol=1e-13)


def test_nothing_is_summed_over_the_batch(layer, point):
    _, W, b = point
    xs = RNG.standard_normal((6, 3))
    v = RNG.standard_normal((6, 2))
    grad_x, grad_W = layer.vjp(xs, W, b, v)
    assert grad_W.shape == (6, 2, 3)
    np.testing.assert_allclose(grad_W[4], layer.vjp(xs[4], W, b, v[4])[1], rtol=1e-15)


def test_large_batches_run_in_parallel_with_the_same_results(layer, point):
    _, W, b = point
    xs = RNG.standard_normal((50_000, 3))
    ys = layer(xs, W, b)
    np.testing.assert_allclose(ys, layer_numpy(xs, W, b), rtol=1e-13, atol=1e-15)


def test_an_empty_batch_gives_empty_results(layer, point):
    _, W, b = point
    assert layer(np.zeros((0, 3)), W, b).shape == (0, 2)


def test_inputs_may_be_lists_integers_and_non_contiguous_arrays(layer, point):
    x, W, b = point
    wide = np.zeros((2, 6))
    wide[:, ::2] = W
    np.testing.assert_allclose(layer([1, 2, 3], wide[:, ::2], list(b)), layer_numpy(np.array([1.0, 2, 3]), W, b))


def test_scalar_arguments_and_scalar_output():
    x, y = sp.symbols("x y")
    k = gc.compile(sp.sin(x) * y, [x, y])
    value, (gx, gy) = k.value_and_grad(0.5, 2.0)
    assert np.ndim(value) == 0 and np.ndim(gx) == 0
    np.testing.assert_allclose([value, gx, gy], [np.sin(0.5) * 2, np.cos(0.5) * 2, np.sin(0.5)])


def test_hessian_of_a_scalar_output_with_one_wrt_argument():
    x = sp.symbols("x0:3")
    k = gc.compile(x[0] ** 2 * x[1] + sp.exp(x[2]) * x[0], [list(x)])
    a, b, c = 0.3, -1.2, 0.7
    expected = [[2 * b, 2 * a, np.exp(c)], [2 * a, 0, 0], [np.exp(c), 0, a * np.exp(c)]]
    np.testing.assert_allclose(k.hessian([a, b, c]), expected, rtol=1e-14)
    assert k.hessian(np.ones((4, 3))).shape == (4, 3, 3)


def test_matrix_outputs_keep_their_shape():
    A = sp.Matrix(2, 2, sp.symbols("a0:4"))
    k = gc.compile(A * A, [A])
    a = RNG.standard_normal((2, 2))
    np.testing.assert_allclose(k(a), a @ a, rtol=1e-14)
    assert k.jacobian(a).shape == (2, 2, 2, 2)
    v = RNG.standard_normal((2, 2))
    np.testing.assert_allclose(k.vjp(a, v), v @ a.T + a.T @ v, rtol=1e-14)


def test_outputs_that_are_constant_or_ignore_an_argument():
    x, y = sp.symbols("x y")
    k = gc.compile([sp.Integer(3), x**2], [x, y])
    np.testing.assert_array_equal(k(2.0, 5.0), [3.0, 4.0])
    gx, gy = k.vjp(2.0, 5.0, [1.0, 1.0])
    assert (gx, gy) == (4.0, 0.0)


def test_float32_kernels_compute_and_return_float32():
    x = sp.symbols("x0:2")
    k = gc.compile(sp.exp(x[0] / 3) * sp.sqrt(x[1]), [list(x)], dtype="float32")
    point = np.array([0.5, 2.0])
    value, grad = k.value_and_grad(point)
    assert value.dtype == np.float32 and grad.dtype == np.float32
    np.testing.assert_allclose(grad, [np.exp(0.5 / 3) * np.sqrt(2) / 3, np.exp(0.5 / 3) / (2 * np.sqrt(2))],
                               rtol=1e-6)
    assert "f32(" in k.source


def test_nan_and_inf_propagate_as_ieee_arithmetic():
    x = sp.Symbol("x")
    k = gc.compile([1 / x, sp.log(x)], [x])
    np.testing.assert_array_equal(k(0.0), [np.inf, -np.inf])
    assert np.isnan(k(-1.0)[1])
    assert np.isnan(k(np.nan)).all()


def test_decorator_builds_symbols_of_the_given_shapes():
    @gc.kernel(x=3, W=(2, 3), wrt=("x",))
    def layer(x, W):
        return [sp.tanh(sum(W[i, j] * x[j] for j in range(3))) for i in range(2)]

    x, W = RNG.standard_normal(3), RNG.standard_normal((2, 3))
    v = RNG.standard_normal(2)
    expected = v @ ((1 - np.tanh(W @ x) ** 2)[:, None] * W)
    np.testing.assert_allclose(layer.vjp(x, W, v), expected, rtol=1e-13)


def test_kernel_metadata_and_source():
    x = sp.Symbol("x")
    k = gc.compile(sp.sin(x), [x], name="api_sine")
    assert k.name == "api_sine" and len(k.key) == 40 and int(k.key, 16) >= 0
    assert "math.sin(x)" in k.source and "api_sine" in repr(k)


def test_named_kernels_load_back():
    x = sp.Symbol("x")
    gc.compile(sp.cos(x) * 2, [x], name="api_cosine")
    loaded = gc.load("api_cosine")
    assert loaded(0.0) == 2.0


def test_kernels_pickle():
    import pickle
    x = sp.Symbol("x")
    k = gc.compile(x**3, [x], cache=False)
    clone = pickle.loads(pickle.dumps(k))
    assert clone.grad(2.0) == 12.0 and clone.source == k.source


def test_expressions_deeper_than_the_recursion_limit_compile():
    import sys
    x = sp.Symbol("x")
    expr = x
    for _ in range(250):
        expr = sp.sin(expr) * sp.Rational(1, 2) + x
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(200)  # the expression is ~750 levels deep
    try:
        k = gc.compile(expr, [x], cache=False)
    finally:
        sys.setrecursionlimit(limit)
    value, derivative = 0.3, 1.0
    for _ in range(250):
        value, derivative = np.sin(value) / 2 + 0.3, np.cos(value) / 2 * derivative + 1
    np.testing.assert_allclose(k.value_and_grad(0.3), (value, derivative), rtol=1e-13)


def test_out_partly_overlapping_an_input_gives_numpys_result():
    x = sp.Symbol("x")
    k = gc.compile(x + 1, [x], cache=False)
    B, C = np.zeros(6), np.zeros(6)
    k(B[:5], out=B[1:])
    np.add(C[:5], 1, out=C[1:])
    np.testing.assert_array_equal(B, C)  # [0, 1, 1, 1, 1, 1]: every input read before any result is written


def test_out_that_is_an_input_itself_is_computed_in_place():
    x = sp.symbols("x0:2")
    k = gc.compile([x[1], x[0]], [list(x)], cache=False)  # a swap: writing y0 first would clobber x1
    X = RNG.standard_normal((1000, 2))
    expected = X[:, ::-1].copy()
    assert k(X, out=X) is X
    np.testing.assert_array_equal(X, expected)


def test_wrt_accepts_numpy_and_sympy_integers():
    x, y = sp.symbols("x y")
    for index in (np.int64(1), np.int32(1), sp.Integer(1), [np.int64(-1)]):
        k = gc.compile(x**2 * y**3, [x, y], wrt=index, cache=False)
        assert k.wrt == (1,) and k.grad(2.0, 1.0) == 12.0


def test_grad_of_one_point_goes_straight_to_the_compiled_point_function(monkeypatch):
    x = sp.symbols("x0:3")
    kernel = gc.compile(sum(s**2 for s in x), [list(x)], cache=False)
    point = np.array([1.0, 2.0, 3.0])
    kernel.grad(point), kernel.value_and_grad(point)  # first calls compile the point functions

    def general_path(*args):
        raise AssertionError("a single point took the general path")

    monkeypatch.setattr(kernel, "_run_general", general_path)
    np.testing.assert_array_equal(kernel.grad(point), [2.0, 4.0, 6.0])
    assert kernel.value_and_grad(point)[0] == 14.0


def test_a_batch_of_rows_and_a_shared_row_give_what_converted_and_broadcast_inputs_give():
    """The batch hot path (C-contiguous rows of the kernel's dtype) and the general path agree bit for bit."""
    a, b, c = sp.symbols("a b c")
    kernel = gc.compile([a * sp.sin(b) * c, a + c ** 2], [[a, b], c], cache=False)
    rng = np.random.default_rng(5)
    rows, scalars, cotangent = rng.standard_normal((37, 2)), rng.standard_normal(37), rng.standard_normal(2)
    kernel.vjp(rows, scalars, cotangent)  # the first batch compiles the serial driver
    fast = kernel.vjp(rows, scalars, cotangent)
    general = kernel.vjp(np.asfortranarray(rows), scalars.tolist(), np.broadcast_to(cotangent, (37, 2)))
    for got, expected in zip(fast, general):
        np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(kernel(rows, scalars), kernel(rows.tolist(), scalars))
