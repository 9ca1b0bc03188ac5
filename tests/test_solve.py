"""gc.solve: a dense linear solve inside kernels, checked against torch.linalg.solve and SymPy."""

import numpy as np
import pytest
import sympy as sp
import torch

import gradcomp as gc

N = 4
RNG = np.random.default_rng(7)
A_SYMBOLS = sp.symbols(f"a0:{N * N}")
B_SYMBOLS = sp.symbols(f"b0:{N * 2}")
WEIGHTS = np.arange(1.0, 2 * N + 1)


def general_system():
    """x = A⁻¹ B for a general A and two right-hand sides, weighted into one vector output."""
    x = gc.solve(sp.Matrix(N, N, A_SYMBOLS), sp.Matrix(N, 2, B_SYMBOLS))
    return [w * entry for w, entry in zip(WEIGHTS, x)]


def torch_general(a, b):
    return (torch.linalg.solve(a.reshape(N, N), b.reshape(N, 2)).reshape(-1) * torch.tensor(WEIGHTS))


@pytest.fixture(scope="module")
def general():
    return gc.compile(general_system(), [list(A_SYMBOLS), list(B_SYMBOLS)], cache=False)


def point():
    """A well-conditioned A whose rows come in an order that makes partial pivoting swap them."""
    dominant = RNG.standard_normal((N, N)) + 3 * np.eye(N)
    return dominant[[2, 0, 3, 1]].ravel(), RNG.standard_normal(2 * N)


def test_values_agree_with_torch_linalg_solve_for_several_right_hand_sides(general):
    a, b = point()
    expected = torch_general(torch.tensor(a), torch.tensor(b)).numpy()
    np.testing.assert_allclose(general(a, b), expected, rtol=1e-13, atol=1e-14)


def test_a_batch_solves_each_point_on_its_own(general):
    a = RNG.standard_normal((37, N * N))
    b = RNG.standard_normal((37, 2 * N))
    expected = np.stack([torch_general(torch.tensor(p), torch.tensor(q)).numpy() for p, q in zip(a, b)])
    np.testing.assert_allclose(general(a, b), expected, rtol=1e-10, atol=1e-12)


def test_partial_pivoting_solves_a_matrix_with_a_zero_leading_entry(general):
    a = np.array([[0.0, 2, 1, 0], [1, 1e-3, 0, 2], [3, 1, 4, 1], [0, 5, 2, 1]]).ravel()
    b = RNG.standard_normal(2 * N)
    expected = torch_general(torch.tensor(a), torch.tensor(b)).numpy()
    np.testing.assert_allclose(general(a, b), expected, rtol=1e-12)


def test_vjp_agrees_with_torch_autograd(general):
    a, b = point()
    v = RNG.standard_normal(2 * N)
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    torch_general(ta, tb).backward(torch.tensor(v))
    grad_a, grad_b = general.vjp(a, b, v)
    np.testing.assert_allclose(grad_a, ta.grad.numpy(), rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(grad_b, tb.grad.numpy(), rtol=1e-11, atol=1e-12)


def test_jvp_agrees_with_torch_func_jvp(general):
    a, b = point()
    da, db = RNG.standard_normal(N * N), RNG.standard_normal(2 * N)
    primals, tangents = (torch.tensor(a), torch.tensor(b)), (torch.tensor(da), torch.tensor(db))
    _, expected = torch.func.jvp(torch_general, primals, tangents)
    np.testing.assert_allclose(general.jvp(a, b, (da, db)), expected.numpy(), rtol=1e-11, atol=1e-12)


def test_jacobian_agrees_with_torch_jacobian(general):
    a, b = point()
    expected_a, expected_b = torch.autograd.functional.jacobian(torch_general, (torch.tensor(a), torch.tensor(b)))
    jac_a, jac_b = general.jacobian(a, b)
    np.testing.assert_allclose(jac_a, expected_a.numpy(), rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(jac_b, expected_b.numpy(), rtol=1e-11, atol=1e-12)


def test_the_hessian_through_a_solve_agrees_with_torch():
    n = 3
    q = sp.symbols("q0:3")
    matrix = sp.Matrix([[2 + sp.cos(q[0]), q[1], 0], [q[1], 3 + q[2] ** 2, sp.sin(q[0])], [0.5, q[0], 4]])
    rhs = sp.Matrix([sp.exp(q[2]), q[0] * q[1], 1])
    energy = sum(e ** 2 for e in gc.solve(matrix, rhs))
    kernel = gc.compile(energy, [list(q)], cache=False)

    def torch_energy(x):
        m = torch.stack([torch.stack([2 + torch.cos(x[0]), x[1], torch.zeros(())]),
                         torch.stack([x[1], 3 + x[2] ** 2, torch.sin(x[0])]),
                         torch.stack([torch.tensor(0.5, dtype=x.dtype), x[0], torch.tensor(4.0, dtype=x.dtype)])])
        r = torch.stack([torch.exp(x[2]), x[0] * x[1], torch.ones((), dtype=x.dtype)])
        return (torch.linalg.solve(m, r) ** 2).sum()

    x = np.array([0.3, -0.7, 0.2])
    expected = torch.autograd.functional.hessian(torch_energy, torch.tensor(x)).numpy()
    np.testing.assert_allclose(kernel.hessian(x), expected, rtol=1e-10, atol=1e-12)
    t = RNG.standard_normal(n)
    np.testing.assert_allclose(kernel.hvp(x, t), expected @ t, rtol=1e-10, atol=1e-12)


def test_cholesky_reads_the_lower_triangle_and_differentiates_as_a_symmetric_matrix():
    n = 3
    lower = sp.symbols("s0:6")
    entries = iter(lower)
    symmetric = sp.zeros(n, n)
    for i in range(n):
        for j in range(i + 1):
            symmetric[i, j] = symmetric[j, i] = next(entries)
    b = sp.symbols("c0:3")
    x = gc.solve(symmetric, sp.Matrix(b), assume="pos")
    kernel = gc.compile(list(x), [list(lower), list(b)], cache=False)
    rows, cols = np.tril_indices(n)

    def torch_solve(s, c):
        m = torch.zeros((n, n), dtype=s.dtype)
        m = m.index_put((torch.tensor(rows), torch.tensor(cols)), s)
        m = m + torch.tril(m, -1).T
        return torch.cholesky_solve(c.reshape(n, 1), torch.linalg.cholesky(m)).reshape(-1)

    spd = np.array([[4.0, 1, 0.5], [1, 3, -0.2], [0.5, -0.2, 2]])
    s, c = spd[rows, cols], RNG.standard_normal(n)
    np.testing.assert_allclose(kernel(s, c), np.linalg.solve(spd, c), rtol=1e-13)
    expected_s, expected_c = torch.autograd.functional.jacobian(torch_solve, (torch.tensor(s), torch.tensor(c)))
    jac_s, jac_c = kernel.jacobian(s, c)
    np.testing.assert_allclose(jac_s, expected_s.numpy(), rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(jac_c, expected_c.numpy(), rtol=1e-11, atol=1e-12)


def test_cholesky_of_a_matrix_that_is_not_positive_definite_is_nan():
    a = sp.symbols("a0:4")
    kernel = gc.compile(list(gc.solve(sp.Matrix(2, 2, a), [1, 1], assume="pos")), [list(a)], cache=False)
    assert np.isnan(kernel(np.array([1.0, 2.0, 2.0, 1.0]))).all()


def test_a_singular_matrix_gives_inf_or_nan_never_a_finite_answer(general):
    singular = np.ones((N, N)).ravel()
    assert not np.isfinite(general(singular, np.ones(2 * N))).all()


def test_a_solve_of_a_closed_form_system_matches_sympys_symbolic_solve_and_its_jacobian():
    q = sp.symbols("q0:2")
    matrix = sp.Matrix([[1 + q[0] ** 2, sp.sin(q[1])], [q[1], 2 + sp.cos(q[0])]])
    rhs = sp.Matrix([q[0] * q[1], sp.exp(q[0])])
    kernel = gc.compile(list(gc.solve(matrix, rhs)), [list(q)], cache=False)
    symbolic = matrix.LUsolve(rhs)
    value = sp.lambdify([q], list(symbolic))
    jacobian = sp.lambdify([q], symbolic.jacobian(list(q)))
    x = np.array([0.4, -1.1])
    np.testing.assert_allclose(kernel(x), value(x), rtol=1e-12)
    np.testing.assert_allclose(kernel.jacobian(x), jacobian(x), rtol=1e-12)


def test_every_entry_rests_on_one_factorization():
    """The VJP costs the forward solve plus O(n²) more, not another elimination: the adjoint rule."""
    n = 8
    a, b = sp.symbols(f"a0:{n * n}"), sp.symbols(f"b0:{n}")
    kernel = gc.compile(list(gc.solve(sp.Matrix(n, n, a), sp.Matrix(b))), [list(a), list(b)], cache=False)
    methods = kernel._meta.methods
    assert methods["vjp"].ops - methods["forward"].ops < 8 * n * n


def test_a_vector_right_hand_side_gives_a_column():
    a = sp.symbols("a0:4")
    x = gc.solve(sp.Matrix(2, 2, a), [1, 2])
    assert x.shape == (2, 1)


@pytest.mark.parametrize("matrix, rhs, assume, message", [
    (sp.Matrix(2, 3, sp.symbols("a0:6")), [1, 2], None, "square"),
    (sp.Matrix(2, 2, sp.symbols("a0:4")), [1, 2, 3], None, "2 rows"),
    (sp.Matrix(2, 2, sp.symbols("a0:4")), [1, 2], "lower", "assume='lower'"),
])
def test_bad_systems_are_clear_errors(matrix, rhs, assume, message):
    with pytest.raises(gc.CompileError, match=message):
        gc.solve(matrix, rhs, assume=assume)


def test_a_constant_singular_matrix_is_a_compile_error():
    x = sp.Symbol("x")
    with pytest.raises(gc.CompileError, match="singular"):
        gc.compile(list(gc.solve(sp.Matrix([[0, 0], [0, 1]]), [x, 1])), [x], cache=False)


def test_a_solve_survives_the_cache_and_a_derivative_kernel(tmp_path):
    a, b = sp.symbols("a0:4"), sp.symbols("b0:2")
    outputs = sum(gc.solve(sp.Matrix(2, 2, a), sp.Matrix(b)))
    kernel = gc.compile(outputs, [list(a), list(b)], cache=tmp_path, wrt=[1])
    again = gc.compile(outputs, [list(a), list(b)], cache=tmp_path, wrt=[1])
    assert again._meta.key == kernel._meta.key
    grad = gc.derivative(kernel, "grad")
    av, bv = np.array([2.0, 1, 0.5, 3]), np.array([1.0, -1])
    np.testing.assert_allclose(grad(av, bv), np.linalg.solve(av.reshape(2, 2).T, np.ones(2)), rtol=1e-13)


def test_the_torch_bridge_passes_gradcheck_and_gradgradcheck_through_a_solve(general):
    a, b = point()
    inputs = (torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True))
    function = general.to_torch()
    assert torch.autograd.gradcheck(function, inputs)
    assert torch.autograd.gradgradcheck(function, inputs)
