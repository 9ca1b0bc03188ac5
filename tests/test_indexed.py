"""Indexed models (IndexedBase, Sum, Eq outputs, gathers): every method against PyTorch and the unrolled kernel."""

import pickle
import subprocess
import sys
import warnings

import numba
import numpy as np
import pytest
import sympy as sp
import torch

import gradcomp as gc
from gradcomp import drivers, loops

torch.set_default_dtype(torch.float64)

n, m = sp.symbols("n m", integer=True, positive=True)
i, j, k, d = sp.symbols("i j k d", integer=True)
x = sp.IndexedBase("x", shape=(n,))
rng = np.random.default_rng(0)


def chain_model():
    return sp.Sum((x[i + 1] - x[i]) ** 2 + sp.cos(x[i]), (i, 0, n - 2)), [x]


def chain_torch(z):
    return ((z[1:] - z[:-1]) ** 2 + torch.cos(z[:-1])).sum()


def lj_model():
    P = sp.IndexedBase("P", shape=(n, 3))
    r2 = sum((P[i, c] - P[j, c]) ** 2 for c in range(3))
    return sp.Sum(sp.Sum(4 * (r2 ** -6 - r2 ** -3), (j, i + 1, n - 1)), (i, 0, n - 2)), [P]


def lj_torch(p):
    diff = p[:, None, :] - p[None, :, :]
    r2 = (diff ** 2).sum(-1)
    upper = torch.triu(torch.ones_like(r2, dtype=torch.bool), 1)
    r2 = r2[upper]
    return (4 * (r2 ** -6 - r2 ** -3)).sum()


def lattice(count):
    side = int(round(count ** (1 / 3))) + 1
    grid = np.array([(a, b, c) for a in range(side) for b in range(side) for c in range(side)], float)[:count]
    return 1.1 * grid + 0.05 * rng.standard_normal((count, 3))


def torch_grad(f, *arrays):
    tensors = [torch.tensor(a, requires_grad=True) for a in arrays]
    f(*tensors).backward()
    return [t.grad.numpy() for t in tensors]


def test_chain_value_gradient_and_worked_example():
    k = gc.compile(*chain_model(), cache=False)
    z = rng.random(50)
    assert np.isclose(k(z), chain_torch(torch.tensor(z)).item(), rtol=1e-13)
    np.testing.assert_allclose(k.grad(z), torch_grad(chain_torch, z)[0], rtol=1e-13, atol=1e-14)
    y = sp.Sum(x[i] ** 2 + 2, (i, 0, n - 1))
    np.testing.assert_allclose(gc.compile(y, [x], cache=False).grad(np.array([1.0, 2, 3])), [2, 4, 6])


def test_one_kernel_serves_every_size():
    k = gc.compile(*chain_model(), cache=False)
    for size in (1, 2, 3, 17, 1000, 10_001):
        z = rng.random(size)
        assert np.isclose(k(z), chain_torch(torch.tensor(z)).item(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(k.grad(z), torch_grad(chain_torch, z)[0], rtol=1e-12, atol=1e-13)


def test_jvp_hvp_hessian_jacobian_match_torch():
    k = gc.compile(*chain_model(), cache=False)
    z, t = rng.random(12), rng.random(12)
    hessian = torch.autograd.functional.hessian(chain_torch, torch.tensor(z)).numpy()
    gradient = torch_grad(chain_torch, z)[0]
    assert np.isclose(k.jvp(z, t), gradient @ t, rtol=1e-13)
    np.testing.assert_allclose(k.hvp(z, t), hessian @ t, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(k.hessian(z), hessian, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(k.jacobian(z), gradient, rtol=1e-13, atol=1e-14)
    value, gradient2 = k.value_and_grad(z)
    assert np.isclose(value, k(z)) and np.allclose(gradient2, gradient)


def test_triangle_pair_sum_forces_match_torch():
    k = gc.compile(*lj_model(), cache=False)
    p = lattice(40)
    assert np.isclose(k(p), lj_torch(torch.tensor(p)).item(), rtol=1e-12)
    np.testing.assert_allclose(k.grad(p), torch_grad(lj_torch, p)[0], rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("length", [1, 2, 3, 150])
def test_a_lower_triangle_pair_sum_matches_torch(length):
    """Rows of 0, 1, ... i - 1 terms (the first row empty): chunks and checks in closed form."""
    term = sp.exp(-(x[i] - x[j]) ** 2) * x[j]
    kernel = gc.compile(sp.Sum(sp.Sum(term, (j, 0, i - 1)), (i, 0, n - 1)), [x], cache=False)

    def f(z):
        lower = torch.tril(torch.ones(z.shape[0], z.shape[0], dtype=torch.bool), -1)
        return (torch.exp(-(z[:, None] - z[None, :]) ** 2) * z[None, :])[lower].sum()

    a = rng.random(length)
    np.testing.assert_allclose(kernel(a), f(torch.tensor(a)).item(), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(kernel.grad(a), torch_grad(f, a)[0], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("length", [1, 2, 5, 300])
def test_a_buffered_pair_sum_flushes_its_last_terms_where_the_last_rows_are_empty(length):
    """exp keeps the pair body on the vector cores (buffered terms); the triangle's last row has no terms, and
    each chunk's last row must still flush what its buffer holds (300 atoms: several chunks)."""
    kernel = gc.compile(sp.Sum(sp.Sum(sp.exp(-(x[i] - x[j]) ** 2), (j, i + 1, n - 1)), (i, 0, n - 1)), [x],
                        cache=False)
    a = rng.random(length)

    def f(z):
        pairs = torch.exp(-(z[:, None] - z[None, :]) ** 2)
        return torch.triu(pairs, 1).sum()

    np.testing.assert_allclose(kernel(a), f(torch.tensor(a)).item(), rtol=1e-12)
    np.testing.assert_allclose(kernel.grad(a), torch_grad(f, a)[0], rtol=1e-11, atol=1e-13)


def test_a_pair_sum_reading_past_a_shorter_array_raises_at_call_time():
    w = sp.IndexedBase("w", shape=(m,))
    kernel = gc.compile(sp.Sum(sp.Sum(x[i] * w[j], (j, i, n - 1)), (i, 0, n - 1)), [x, w], cache=False)
    np.testing.assert_allclose(kernel(np.ones(3), np.ones(3)), 6.0)
    with pytest.raises(IndexError, match="w"):
        kernel(np.ones(4), np.ones(3))


def test_pair_sum_matches_the_unrolled_kernel():
    P = sp.IndexedBase("P", shape=(n, 3))
    expr, args = lj_model()
    count = 8
    S = sp.Matrix(count, 3, lambda a, b: sp.Symbol(f"p{a}_{b}"))
    unrolled_expr = sum(4 * (r2 ** -6 - r2 ** -3) for r2 in
                        (sum((S[a, c] - S[b, c]) ** 2 for c in range(3)) for a in range(count)
                         for b in range(a + 1, count)))
    unrolled = gc.compile(unrolled_expr, [S], cache=False)
    indexed = gc.compile(expr, [P], cache=False)
    p = lattice(count)
    assert np.isclose(indexed(p), unrolled(p), rtol=1e-13)
    np.testing.assert_allclose(indexed.grad(p), unrolled.grad(p), rtol=1e-12, atol=1e-12)


def test_log_sum_exp_of_a_sum():
    k = gc.compile(sp.log(sp.Sum(sp.exp(x[i]), (i, 0, n - 1))), [x], cache=False)
    z = rng.random(100)
    assert np.isclose(k(z), np.log(np.exp(z).sum()), rtol=1e-14)
    np.testing.assert_allclose(k.grad(z), np.exp(z) / np.exp(z).sum(), rtol=1e-13)
    t = rng.random(100)
    hessian = torch.autograd.functional.hessian(lambda q: torch.logsumexp(q, 0), torch.tensor(z)).numpy()
    np.testing.assert_allclose(k.hvp(z, t), hessian @ t, rtol=1e-11, atol=1e-14)


def test_a_single_term_stage_runs_in_python_with_ieee_results():
    """log(Sum(...)): the log is one term, run as plain Python; log(0) is -inf as in compiled code, not an error."""
    kernel = gc.compile(sp.log(sp.Sum(x[i] ** 2, (i, 0, n - 1))), [x], cache=False)
    assert "its single term, in plain Python" in kernel.source
    a = rng.random(7)
    np.testing.assert_allclose(kernel(a), np.log(np.sum(a ** 2)), rtol=1e-15)
    np.testing.assert_allclose(kernel.grad(a), 2 * a / np.sum(a ** 2), rtol=1e-14)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert kernel(np.zeros(3)) == -np.inf


def test_indexed_output_with_boundaries_and_inner_sum():
    y = sp.IndexedBase("y", shape=(n,))
    inner = sp.Idx("I", (1, n - 2))
    lap = [sp.Eq(y[0], x[0] ** 2), sp.Eq(y[inner], x[inner - 1] - 2 * sp.sin(x[inner]) + x[inner + 1] ** 3),
           sp.Eq(y[n - 1], x[n - 1] / sp.Sum(sp.exp(x[j]), (j, 0, n - 1)))]
    k = gc.compile(lap, [x], cache=False)

    def f(z):
        middle = z[:-2] - 2 * torch.sin(z[1:-1]) + z[2:] ** 3
        return torch.cat([z[:1] ** 2, middle, z[-1:] / torch.exp(z).sum()])

    z, v, t = rng.random(30), rng.random(30), rng.random(30)
    np.testing.assert_allclose(k(z), f(torch.tensor(z)).numpy(), rtol=1e-13)
    zt = torch.tensor(z, requires_grad=True)
    f(zt).backward(torch.tensor(v))
    np.testing.assert_allclose(k.vjp(z, v), zt.grad.numpy(), rtol=1e-12, atol=1e-14)
    jacobian = torch.autograd.functional.jacobian(f, torch.tensor(z)).numpy()
    np.testing.assert_allclose(k.jvp(z, t), jacobian @ t, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(k.jacobian(z), jacobian, rtol=1e-12, atol=1e-14)
    _, second = torch.autograd.functional.vhp(lambda q: (f(q) * torch.tensor(v)).sum(), torch.tensor(z),
                                              torch.tensor(t))
    np.testing.assert_allclose(k.vjp_jvp(z, v, t)[1], second.numpy(), rtol=1e-11, atol=1e-13)


def test_matrix_vector_layer_in_two_arguments():
    A = sp.IndexedBase("A", shape=(m, n))
    y = sp.IndexedBase("y", shape=(m,))
    row = sp.Idx("r", m)
    k = gc.compile([sp.Eq(y[row], sp.tanh(sp.Sum(A[row, j] * x[j], (j, 0, n - 1))))], [A, x], cache=False)
    a, z, v = rng.random((7, 5)), rng.random(5), rng.random(7)
    np.testing.assert_allclose(k(a, z), np.tanh(a @ z), rtol=1e-13)
    at, zt = torch.tensor(a, requires_grad=True), torch.tensor(z, requires_grad=True)
    torch.tanh(at @ zt).backward(torch.tensor(v))
    ga, gz = k.vjp(a, z, v)
    np.testing.assert_allclose(ga, at.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(gz, zt.grad.numpy(), rtol=1e-12)


def test_periodic_grid_with_mod():
    N = sp.Symbol("N", integer=True, positive=True)
    u = sp.IndexedBase("u", shape=(N, N))
    r, c = sp.Idx("r", N), sp.Idx("c", N)
    out = sp.IndexedBase("out", shape=(N, N))
    lap = (u[sp.Mod(r + 1, N), c] + u[sp.Mod(r - 1, N), c] + u[r, sp.Mod(c + 1, N)] + u[r, sp.Mod(c - 1, N)]
           - 4 * u[r, c])
    k = gc.compile([sp.Eq(out[r, c], lap + u[r, c] ** 2)], [u], cache=False)

    def f(w):
        return (torch.roll(w, -1, 0) + torch.roll(w, 1, 0) + torch.roll(w, -1, 1) + torch.roll(w, 1, 1) - 4 * w
                + w ** 2)

    w, v = rng.random((9, 9)), rng.random((9, 9))
    np.testing.assert_allclose(k(w), f(torch.tensor(w)).numpy(), rtol=1e-13, atol=1e-15)  # (sums that cancel)
    wt = torch.tensor(w, requires_grad=True)
    f(wt).backward(torch.tensor(v))
    np.testing.assert_allclose(k.vjp(w, v), wt.grad.numpy(), rtol=1e-12)


def two_field_stencil():
    """A periodic reaction-diffusion right-hand side on an N x M grid, of arithmetic only (inline)."""
    N, M = sp.symbols("N M", integer=True, positive=True)
    u, v = sp.IndexedBase("u", shape=(N, M)), sp.IndexedBase("v", shape=(N, M))
    out = sp.IndexedBase("out", shape=(2, N, M))
    r, c = sp.Idx("r", N), sp.Idx("c", M)

    def lap(a):
        return a[sp.Mod(r + 1, N), c] + a[sp.Mod(r - 1, N), c] + a[r, sp.Mod(c + 1, M)] + a[r, sp.Mod(c - 1, M)]

    uvv = u[r, c] * v[r, c] ** 2
    return [sp.Eq(out[0, r, c], 0.2 * lap(u) - uvv + 0.03 * (1 - u[r, c]) * u[r, sp.Mod(c + 1, M)]),
            sp.Eq(out[1, r, c], 0.1 * lap(v) + uvv / (1 + v[sp.Mod(r - 1, N), c] ** 2))], [u, v]


def two_field_torch(a, b):
    def lap(w):
        return torch.roll(w, -1, 0) + torch.roll(w, 1, 0) + torch.roll(w, -1, 1) + torch.roll(w, 1, 1)

    abb = a * b ** 2
    return torch.stack([0.2 * lap(a) - abb + 0.03 * (1 - a) * torch.roll(a, -1, 1),
                        0.1 * lap(b) + abb / (1 + torch.roll(b, 1, 0) ** 2)])


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (3, 2), (6, 11)])
def test_a_periodic_stencil_adjoint_gathers_per_element_like_torch(shape):
    """The VJP of a stencil adds, per element, the terms that read it (no scatter), at every size."""
    kernel = gc.compile(*two_field_stencil(), cache=False)
    assert "gathered per element" in kernel.source
    a, b, ct = rng.random(shape), rng.random(shape), rng.standard_normal((2, *shape))
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    value = two_field_torch(ta, tb)
    value.backward(torch.tensor(ct))
    np.testing.assert_allclose(kernel(a, b), value.detach().numpy(), rtol=1e-13, atol=1e-15)
    ga, gb = kernel.vjp(a, b, ct)
    np.testing.assert_allclose(ga, ta.grad.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(gb, tb.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_a_gathered_stencil_adjoint_does_not_depend_on_the_thread_count():
    kernel = gc.compile(*two_field_stencil(), cache=False)
    kernel.precompile()  # parallel twins compile from each stage's first call on
    a, b, ct = rng.random((300, 70)), rng.random((300, 70)), rng.standard_normal((2, 300, 70))
    results = []
    for threads in (1, numba.config.NUMBA_NUM_THREADS):
        numba.set_num_threads(threads)
        kernel.vjp(a, b, ct)
        for stage in kernel._stages():
            drivers.finish_background(stage.drivers[2])
        results.append(kernel.vjp(a, b, ct))
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    assert all(np.array_equal(p, q) for p, q in zip(*results))


def test_equations_over_one_grid_run_as_one_pass_in_value_tangent_and_adjoint():
    """Both fields' equations share one loop nest: one pass reads u and v once per element, for the value, its
    tangent and the gathered adjoint (``hvp`` keeps a driver per equation)."""
    kernel = gc.compile(*two_field_stencil(), cache=False)
    assert "s0 and s1: one pass over their loops for F, J, R" in kernel.source
    a, b, ct = rng.random((5, 7)), rng.random((5, 7)), rng.standard_normal((2, 5, 7))
    ta, tb = rng.standard_normal((5, 7)), rng.standard_normal((5, 7))
    args, tangents = (torch.tensor(a), torch.tensor(b)), (torch.tensor(ta), torch.tensor(tb))
    _, jt = torch.func.jvp(two_field_torch, args, tangents)
    np.testing.assert_allclose(kernel.jvp(a, b, ta, tb), jt.numpy(), rtol=1e-12, atol=1e-14)

    def pulled(p, q):
        return torch.func.vjp(two_field_torch, p, q)[1](torch.tensor(ct))

    _, hvps = torch.func.jvp(pulled, args, tangents)
    _, got = kernel.vjp_jvp(a, b, ct, ta, tb)
    for g, want in zip(got, hvps):
        np.testing.assert_allclose(g, want.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("length", [1, 2, 7])
def test_an_adjoint_stored_at_every_element_is_zero_where_no_term_runs(length):
    """Reads x[r] and x[r + 1] over r in 0 .. n-2 gather into every element of x, so x's adjoint starts
    uninitialized and is stored; with no terms at all (n = 1) it must still come back as zeros."""
    out, r = sp.IndexedBase("out", shape=(n - 1,)), sp.Idx("r", (0, n - 2))
    kernel = gc.compile([sp.Eq(out[r], x[r + 1] * x[r])], [x], cache=False)
    assert "ASSIGNED = (0,)" in kernel.source
    a, ct = rng.random(length), rng.standard_normal(length - 1)
    _, pullback = torch.func.vjp(lambda z: z[1:] * z[:-1], torch.tensor(a))
    for _ in range(3):  # fresh uninitialized memory each call
        np.testing.assert_allclose(kernel.vjp(a, ct), pullback(torch.tensor(ct))[0].numpy(), rtol=1e-14, atol=0)


def test_a_loop_that_reads_each_element_once_stores_its_adjoint_like_torch():
    """log(Sum(exp(x[i]))) reads x[i] once per term over all of x: its adjoint is stored, not added to zeros."""
    kernel = gc.compile(sp.log(sp.Sum(sp.exp(x[i]), (i, 0, n - 1))), [x], cache=False)
    assert "ASSIGNED = (0,)" in kernel.source
    for length in (1, 5, 600):
        a = rng.standard_normal(length)
        expected = torch_grad(lambda z: torch.logsumexp(z, 0), a)[0]
        np.testing.assert_allclose(kernel.grad(a), expected, rtol=1e-13, atol=1e-16)


def test_an_adjoint_two_stages_add_into_starts_from_zeros():
    """x's adjoint gets a part from each sum: neither may store it."""
    kernel = gc.compile(sp.log(sp.Sum(sp.exp(x[i]), (i, 0, n - 1))) + sp.Sum(x[i] ** 3, (i, 0, n - 1)), [x],
                        cache=False)
    assert "ASSIGNED = ()" in kernel.source
    a = rng.standard_normal(600)
    expected = torch_grad(lambda z: torch.logsumexp(z, 0) + (z ** 3).sum(), a)[0]
    np.testing.assert_allclose(kernel.grad(a), expected, rtol=1e-13, atol=1e-16)


def test_equations_whose_adjoints_touch_different_elements_share_only_the_value_pass():
    """x[i + 1] - x[i] touches x[0 .. n-1], x[i]**2 only x[0 .. n-2]: one gather over elements cannot serve
    both, so each equation keeps its adjoint driver; the values and tangents still run as one pass."""
    out, r = sp.IndexedBase("out", shape=(2, n - 1)), sp.Idx("r", n - 1)
    kernel = gc.compile([sp.Eq(out[0, r], x[r + 1] - x[r]), sp.Eq(out[1, r], x[r] ** 2)], [x], cache=False)
    assert "s0 and s1: one pass over their loops for F, J\n" in kernel.source
    for length in (2, 9):
        a, ct = rng.random(length), rng.standard_normal((2, length - 1))

        def f(z):
            return torch.stack([z[1:] - z[:-1], z[:-1] ** 2])

        np.testing.assert_allclose(kernel(a), f(torch.tensor(a)).numpy(), rtol=1e-14)
        _, pullback = torch.func.vjp(f, torch.tensor(a))
        np.testing.assert_allclose(kernel.vjp(a, ct), pullback(torch.tensor(ct))[0].numpy(), rtol=1e-13)


def test_a_pass_takes_the_inline_equations_around_one_that_calls_a_function():
    """exp keeps its equation on the vector cores; the arithmetic equations before and after it run as one pass."""
    out, r = sp.IndexedBase("out", shape=(3, n)), sp.Idx("r", n)
    w = sp.IndexedBase("w", shape=(n,))
    equations = [sp.Eq(out[0, r], 2 * x[r] * w[r]), sp.Eq(out[1, r], sp.exp(x[r]) * w[r]),
                 sp.Eq(out[2, r], x[r] ** 3 - w[r])]
    kernel = gc.compile(equations, [x, w], cache=False)
    assert "s0 and s2: one pass over their loops for F, J, R" in kernel.source

    def f(z, q):
        return torch.stack([2 * z * q, torch.exp(z) * q, z ** 3 - q])

    a, b, ct = rng.random(300), rng.random(300), rng.standard_normal((3, 300))
    args = (torch.tensor(a), torch.tensor(b))
    np.testing.assert_allclose(kernel(a, b), f(*args).numpy(), rtol=1e-14)
    _, pullback = torch.func.vjp(f, *args)
    for got, want in zip(kernel.vjp(a, b, ct), pullback(torch.tensor(ct))):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-13)


@pytest.mark.parametrize("shape", [(1, 1), (1, 4), (2, 2), (5, 8)])
def test_a_stencil_sum_with_open_edges_matches_torch(shape):
    """Terms only inside the grid (no wrap): elements near the edges gather fewer terms."""
    N, M = sp.symbols("N M", integer=True, positive=True)
    u = sp.IndexedBase("u", shape=(N, M))
    r, c = sp.symbols("r c", integer=True)
    term = u[r + 1, c] * u[r, c - 1] - u[r, c] ** 2 * u[r + 1, c - 1] / (2 + u[r, c])
    kernel = gc.compile(sp.Sum(term, (r, 0, N - 2), (c, 1, M - 1)), [u], cache=False)
    assert "gathered per element" in kernel.source

    def f(w):
        return (w[1:, 1:] * w[:-1, :-1] - w[:-1, 1:] ** 2 * w[1:, :-1] / (2 + w[:-1, 1:])).sum()

    a = rng.random(shape)
    np.testing.assert_allclose(kernel(a), f(torch.tensor(a)).item(), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(kernel.grad(a), torch_grad(f, a)[0], rtol=1e-12, atol=1e-14)


def test_a_diagonal_read_keeps_the_scatter_and_matches_torch():
    """A[i, i] puts one loop on two axes: no per-element gather inverts it, the scatter plans run."""
    A = sp.IndexedBase("A", shape=(n, n))
    kernel = gc.compile(sp.Sum(3 * A[i, i] * A[i, i] - A[i, i] * A[i, n - 1 - i], (i, 0, n - 1)), [A], cache=False)
    assert "gathered per element" not in kernel.source
    a = rng.random((5, 5))
    expected = torch_grad(lambda t: (3 * torch.diagonal(t) ** 2 - torch.diagonal(t) * torch.diagonal(t.flip(1))).sum(),
                          a)[0]
    np.testing.assert_allclose(kernel.grad(a), expected, rtol=1e-13, atol=1e-14)


def test_stencil_reads_of_two_arguments_with_different_element_ranges_match_torch():
    """x[i] and w[i + 1] touch different elements of arrays of different lengths (no shared gather)."""
    w = sp.IndexedBase("w", shape=(n + 1,))
    kernel = gc.compile(sp.Sum(x[i] * w[i + 1] - x[i] ** 2 * w[i], (i, 0, n - 1)), [x, w], cache=False)
    a, b = rng.random(7), rng.random(8)
    expected = torch_grad(lambda s, t: (s * t[1:] - s ** 2 * t[:-1]).sum(), a, b)
    for got, want in zip(kernel.grad(a, b), expected):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("lengths", [(7, 3), (3, 7), (5, 5), (1, 4), (4, 1)])
def test_one_shift_wrapped_by_two_moduli_matches_torch(lengths):
    """x[Mod(i + 1, n)] and w[Mod(i + 1, m)]: one shift, two periods, so the wrap-free interior of the
    loop is bounded by both (a read of w is exact without its wrap only where i + 1 < m)."""
    w = sp.IndexedBase("w", shape=(m,))
    term = x[sp.Mod(i + 1, n)] * w[sp.Mod(i + 1, m)] - x[i] * w[sp.Mod(i + 2, m)] ** 2
    kernel = gc.compile(sp.Sum(term, (i, 0, n - 1)), [x, w], cache=False)
    a, b = rng.random(lengths[0]), rng.random(lengths[1])
    index = np.arange(lengths[0])

    def f(s, t):
        return (s[(index + 1) % s.shape[0]] * t[(index + 1) % t.shape[0]] - s * t[(index + 2) % t.shape[0]] ** 2).sum()

    np.testing.assert_allclose(kernel(a, b), f(torch.tensor(a), torch.tensor(b)).item(), rtol=1e-13, atol=1e-15)
    for got, want in zip(kernel.grad(a, b), torch_grad(f, a, b)):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("length", [4, 258, 259, 1000])
def test_a_single_loop_of_function_calls_reads_its_slots_in_place_like_torch(length):
    """Rows r - 2 and r + 1 of x and one element of w for every term: the cores read them where they are,
    in blocks of 256 terms (the last one partial)."""
    w = sp.IndexedBase("w", shape=(2,))
    y = sp.IndexedBase("y", shape=(n,))
    r = sp.Idx("r", (2, n - 2))
    equations = [sp.Eq(y[r], sp.exp(x[r - 2] * w[1]) + sp.sin(x[r + 1]) * w[0]),
                 sp.Eq(y[0], x[0]), sp.Eq(y[1], x[1]), sp.Eq(y[n - 1], x[n - 1])]
    kernel = gc.compile(equations, [x, w], cache=False)
    assert "_rows(" in kernel.source
    a, b, ct = rng.random(length), rng.random(2), rng.standard_normal(length)

    def f(s, t):
        inner = torch.exp(s[:-3] * t[1]) + torch.sin(s[3:]) * t[0]
        return torch.cat([s[:2], inner, s[-1:]])

    np.testing.assert_allclose(kernel(a, b), f(torch.tensor(a), torch.tensor(b)).numpy(), rtol=1e-14)
    tensors = [torch.tensor(v, requires_grad=True) for v in (a, b)]
    f(*tensors).backward(torch.tensor(ct))
    for got, tensor in zip(kernel.vjp(a, b, ct), tensors):
        np.testing.assert_allclose(got, tensor.grad.numpy(), rtol=1e-13, atol=1e-14)
    da, db = rng.standard_normal(length), rng.standard_normal(2)
    _, expected = torch.func.jvp(f, (torch.tensor(a), torch.tensor(b)), (torch.tensor(da), torch.tensor(db)))
    np.testing.assert_allclose(kernel.jvp(a, b, da, db), expected.numpy(), rtol=1e-13, atol=1e-14)
    of_x = gc.compile(equations, [x, w], wrt=[0], cache=False)  # w's slot: a shared row of zero tangents
    _, expected = torch.func.jvp(lambda s: f(s, torch.tensor(b)), (torch.tensor(a),), (torch.tensor(da),))
    np.testing.assert_allclose(of_x.jvp(a, b, da), expected.numpy(), rtol=1e-13, atol=1e-14)


def test_in_place_rows_in_float32_and_in_a_batch_match_torch():
    """The same in-place reads on float32 arrays, and per point of a batch of 3."""
    kernel = gc.compile(sp.Sum(sp.exp(x[i + 1] - x[i]) * sp.cos(x[i]), (i, 0, n - 2)), [x], cache=False,
                        dtype="float32")
    assert "_rows(" in kernel.source
    a = rng.random((3, 300)).astype(np.float32)

    def f(z):
        return (torch.exp(z[..., 1:] - z[..., :-1]) * torch.cos(z[..., :-1])).sum(-1)

    tensor = torch.tensor(a, dtype=torch.float64, requires_grad=True)
    f(tensor).sum().backward()
    np.testing.assert_allclose(kernel(a), f(torch.tensor(a, dtype=torch.float64)).numpy(), rtol=2e-5)
    np.testing.assert_allclose(kernel.grad(a), tensor.grad.numpy(), rtol=2e-5, atol=2e-6)


def test_gather_through_an_edge_list_with_repeated_edges():
    e = sp.IndexedBase("e", shape=(m, 2), integer=True)
    w = sp.IndexedBase("w", shape=(m,))
    energy = sp.Sum(w[k] * (1 - sp.cos(x[e[k, 0]] - x[e[k, 1]])), (k, 0, m - 1))
    kernel = gc.compile(energy, [x, w, e], cache=False)
    theta, edges = rng.random(20), rng.integers(0, 20, (60, 2))
    edges[5] = edges[4]
    weights = rng.random(60)

    def f(q, ww):
        return (ww * (1 - torch.cos(q[edges[:, 0]] - q[edges[:, 1]]))).sum()

    assert np.isclose(kernel(theta, weights, edges), f(torch.tensor(theta), torch.tensor(weights)).item())
    gq, gw = kernel.grad(theta, weights, edges)
    tq, tw = torch_grad(f, theta, weights)
    np.testing.assert_allclose(gq, tq, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(gw, tw, rtol=1e-12, atol=1e-14)


def test_batches_broadcast_over_leading_dimensions():
    k = gc.compile(*chain_model(), cache=False)
    z = rng.random((3, 2, 8))
    values = k(z)
    assert values.shape == (3, 2)
    np.testing.assert_allclose(values[1, 0], k(z[1, 0]))
    np.testing.assert_allclose(k.grad(z)[2, 1], k.grad(z[2, 1]))


def test_results_do_not_depend_on_the_thread_count():
    k = gc.compile(*lj_model(), cache=False)
    p = lattice(300)
    results = []
    for threads in (1, numba.config.NUMBA_NUM_THREADS):
        numba.set_num_threads(threads)
        results.append((k(p), k.grad(p)))
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    assert results[0][0] == results[1][0]
    assert np.array_equal(results[0][1], results[1][1])


def test_first_call_serial_and_later_parallel_give_the_same_bits():
    # the first call runs each stage's serial twin while the parallel driver compiles in the background
    chain, grid = gc.compile(*chain_model(), cache=False), gc.compile(*lj_model(), cache=False)
    for kernel, point in ((chain, rng.random(30_000)), (grid, lattice(300))):
        kernel.precompile()  # each first call starts its parallel twin's compile, after the serial run
        first = (kernel(point), kernel.grad(point), kernel.hvp(point, np.ones_like(point)))
        again = (kernel(point), kernel.grad(point), kernel.hvp(point, np.ones_like(point)))
        stages = kernel._stages()
        for stage in stages:
            for driver in stage.drivers:
                drivers.finish_background(driver)
        later = (kernel(point), kernel.grad(point), kernel.hvp(point, np.ones_like(point)))
        assert all(driver.parallel_ready for driver in (stages[0].drivers[0], stages[0].drivers[2]))
        for a, b, c in zip(first, again, later):
            assert np.array_equal(a, b) and np.array_equal(a, c)


def test_a_parallel_twin_compiles_only_once_the_serial_one_has_run_a_while():
    """Cheap calls never pay for a parallel compile (nor make another method's first call wait behind it)."""
    # a model of its own: kernels of one model share their generated module, and so their compiled drivers
    kernel = gc.compile(sp.Sum((x[i + 1] - x[i]) ** 2 + 3 * sp.cos(x[i]), (i, 0, n - 2)), [x], cache=False)
    point = rng.random(30_000)  # several chunks, a fraction of a millisecond a call
    for _ in range(5):
        kernel.grad(point)
    adjoint = kernel._stages()[0].drivers[2]
    assert adjoint.serial_seconds < loops.PARALLEL_AFTER_S and not adjoint.parallel_started


def test_precompile_starts_each_parallel_twin_after_its_first_run():
    kernel = gc.compile(sp.Sum((x[i + 1] - x[i]) ** 2 + 5 * sp.cos(x[i]), (i, 0, n - 2)), [x], cache=False)
    kernel.precompile()
    kernel.grad(rng.random(30_000))
    adjoint = kernel._stages()[0].drivers[2]
    assert adjoint.parallel_started
    drivers.finish_background(adjoint)
    assert adjoint.parallel.signatures


def test_out_of_bounds_index_is_a_compile_error_when_provable():
    with pytest.raises(gc.CompileError, match="outside"):
        gc.compile(sp.Sum(x[i + 1], (i, 0, n - 1)), [x], cache=False)


def test_out_of_bounds_gather_raises_before_writing():
    e = sp.IndexedBase("e", shape=(m,), integer=True)
    kernel = gc.compile(sp.Sum(x[e[k]] ** 2, (k, 0, m - 1)), [x, e], cache=False)
    out = np.full((), 7.0)
    with pytest.raises(IndexError, match="'x'.*5"):
        kernel(np.ones(5), np.array([0, 5]), out=out)
    with pytest.raises(IndexError, match="-1"):
        kernel.grad(np.ones(5), np.array([0, -1]))
    assert out == 7.0


def test_index_data_is_checked_on_every_call_at_the_same_sizes():
    """Checks of affine indices are kept per sizes; those through index data run on every call."""
    e = sp.IndexedBase("e", shape=(m,), integer=True)
    kernel = gc.compile(sp.Sum(x[e[k]] * x[k], (k, 0, m - 1)), [x, e], cache=False)
    np.testing.assert_allclose(kernel(np.arange(5.0), np.array([4, 3])), 4 * 0 + 3 * 1)
    with pytest.raises(IndexError, match="'x'.*5"):
        kernel(np.arange(5.0), np.array([5, 3]))


def test_an_affine_index_past_a_shorter_array_raises_at_call_time():
    """Box loops over one size reading an array of another: the index is checked where it is extreme."""
    y = sp.IndexedBase("y", shape=(m,))
    kernel = gc.compile(sp.Sum(sp.Sum(x[i] * y[i + j], (j, 0, 1)), (i, 0, n - 1)), [x, y], cache=False)
    assert kernel(np.ones(3), np.ones(4)) == 6.0
    with pytest.raises(IndexError, match="'y'.*is 4, outside 0 .. m - 1"):
        kernel.grad(np.ones(4), np.ones(4))


def test_a_periodic_index_into_an_empty_array_raises():
    y = sp.IndexedBase("y", shape=(m,))
    kernel = gc.compile(sp.Sum(x[i] * y[sp.Mod(i + 1, m)], (i, 0, n - 1)), [x, y], cache=False)
    assert kernel(np.ones(3), np.arange(2.0)) == 2.0  # y[1] + y[0] + y[1]
    with pytest.raises(IndexError, match="'y'"):
        kernel(np.ones(3), np.zeros(0))


def test_size_mismatch_names_the_size_and_both_values():
    A = sp.IndexedBase("A", shape=(n, n))
    kernel = gc.compile(sp.Sum(A[i, i] * x[i], (i, 0, n - 1)), [A, x], cache=False)
    with pytest.raises(ValueError, match=r"size n is 3 .* but 4"):
        kernel(np.ones((3, 3)), np.ones(4))


def test_gap_and_overlap_in_indexed_outputs_are_errors():
    y = sp.IndexedBase("y", shape=(n,))
    inner = sp.Idx("I", (1, n - 2))
    gap = gc.compile([sp.Eq(y[0], x[0]), sp.Eq(y[inner], x[inner])], [x], cache=False)
    with pytest.raises(ValueError, match=r"no equation writes y\[4\]"):
        gap(np.ones(5))
    overlap = gc.compile([sp.Eq(y[sp.Idx("J", n)], x[sp.Idx("J", n)]), sp.Eq(y[0], 1 + x[0])], [x], cache=False)
    with pytest.raises(ValueError, match=r"more than one equation writes y\[0\]"):
        overlap(np.ones(5))


def test_integer_arguments_are_not_differentiated_and_take_integers():
    e = sp.IndexedBase("e", shape=(m,), integer=True)
    with pytest.raises(gc.CompileError, match="integers"):
        gc.compile(sp.Sum(x[e[k]], (k, 0, m - 1)), [x, e], wrt=[1], cache=False)
    kernel = gc.compile(sp.Sum(x[e[k]], (k, 0, m - 1)), [x, e], cache=False)
    with pytest.raises(TypeError, match="integer array"):
        kernel(np.ones(3), np.array([0.0, 1.0]))


def test_empty_range_sums_to_zero():
    kernel = gc.compile(sp.Sum(x[i] * x[i + 1], (i, 0, n - 2)), [x], cache=False)
    assert kernel(np.ones(1)) == 0.0
    np.testing.assert_array_equal(kernel.grad(np.ones(1)), [0.0])


def test_float32_kernels():
    expr, args = chain_model()
    kernel = gc.compile(expr, args, cache=False, dtype="float32")
    z = rng.random(1000).astype(np.float32)
    assert kernel.grad(z).dtype == np.float32
    np.testing.assert_allclose(kernel.grad(z), torch_grad(chain_torch, z.astype(float))[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_an_arithmetic_body_runs_inline_and_matches_torch(dtype):
    """A body of + - * / only runs as scalar statements in the loops (no vector core): same results."""
    expr = sp.Sum((x[i + 1] - x[i]) ** 2 * x[i] / (1 + x[i + 1] ** 2), (i, 0, n - 2))
    kernel = gc.compile(expr, [x], cache=False, dtype=dtype)
    assert "inlined into the loops" in kernel.source
    z = rng.random(5000)
    expected = torch_grad(lambda t: ((t[1:] - t[:-1]) ** 2 * t[:-1] / (1 + t[1:] ** 2)).sum(), z)[0]
    tolerance = {"float64": 1e-13, "float32": 1e-4}[dtype]
    np.testing.assert_allclose(kernel.grad(z.astype(dtype)), expected, rtol=tolerance, atol=tolerance)


def test_an_inline_body_gives_jvp_and_dense_jacobian_like_torch():
    y = sp.IndexedBase("y", shape=(n,))
    r = sp.Idx("r", (1, n - 2))
    equations = [sp.Eq(y[r], x[r - 1] * x[r + 1] - 2 * x[r] ** 3), sp.Eq(y[0], x[0]), sp.Eq(y[n - 1], x[n - 1])]
    kernel = gc.compile(equations, [x], cache=False)
    assert "inlined into the loops" in kernel.source
    z, t = rng.random(9), rng.random(9)

    def f(a):
        return torch.cat([a[:1], a[:-2] * a[2:] - 2 * a[1:-1] ** 3, a[-1:]])
    jac = torch.autograd.functional.jacobian(f, torch.tensor(z)).numpy()
    np.testing.assert_allclose(kernel.jvp(z, t), jac @ t, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(kernel.jacobian(z), jac, rtol=1e-13, atol=1e-14)


def test_sparse_hessian_of_an_inline_edge_energy_matches_torch():
    """Springs with a quartic term on random edges (repeats included): arithmetic, so the Hessian's
    values run inline."""
    e = sp.IndexedBase("e", shape=(m, 2), integer=True)
    d = x[e[k, 0]] - x[e[k, 1]]
    kernel = gc.compile(sp.Sum(d ** 2 + d ** 4 / 4, (k, 0, m - 1)), [x, e], wrt=[0], cache=False)
    assert "inlined into the loops" in kernel.source
    z, edges = rng.random(12), rng.integers(0, 12, (40, 2))

    def energy(a):
        diff = a[edges[:, 0]] - a[edges[:, 1]]
        return (diff ** 2 + diff ** 4 / 4).sum()
    expected = torch.autograd.functional.hessian(energy, torch.tensor(z)).numpy()
    np.testing.assert_allclose(kernel.hessian(z, edges, sparse=True).toarray(), expected, rtol=1e-13, atol=1e-13)


def test_pickle_and_fresh_process_load(tmp_path):
    expr, args = chain_model()
    kernel = gc.compile(expr, args, cache=tmp_path, name="chain_indexed")
    z = rng.random(64)
    again = pickle.loads(pickle.dumps(kernel))
    np.testing.assert_array_equal(again.grad(z), kernel.grad(z))
    script = (f"import sys, numpy as np, gradcomp as gc; k = gc.load('chain_indexed', cache={str(tmp_path)!r});"
              f"print(float(k(np.arange(7.0) / 7))); print('sympy' in sys.modules)")
    lines = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    assert np.isclose(float(lines[0]), kernel(np.arange(7.0) / 7), rtol=1e-15)
    assert lines[1] == "False"


def test_a_pickle_of_an_earlier_version_whose_module_has_no_assigned_adjoints_still_computes():
    """Modules from before adjoints were stored (no ASSIGNED table) add into zeros, as they were written to."""
    kernel = gc.compile(sp.log(sp.Sum(sp.exp(x[i]), (i, 0, n - 1))), [x], cache=False)
    older = kernel.source.replace("ASSIGNED = (0,)", "")
    assert "ASSIGNED" not in older.split("# ---- what the runtime reads")[1]
    older_source = older.replace("bA0[U((rs + t))] = G[t, 0]", "bA0[U((rs + t))] += G[t, 0]")
    restored = pickle.loads(pickle.dumps(kernel))
    restored.source, restored._module = older_source, None
    a = rng.standard_normal(50)
    np.testing.assert_allclose(restored.grad(a), kernel.grad(a), rtol=1e-15)
    assert not hasattr(restored._import(), "ASSIGNED")


def test_source_shows_loops_and_body_listing():
    kernel = gc.compile(*chain_model(), cache=False)
    assert "over (i in 0..n - 2)" in kernel.source.replace("(-2 + n)", "n - 2")
    assert "cos" in kernel.source
    assert kernel.methods["s0"]["vjp"] > 0


def test_torch_bridge_gradcheck():
    k = gc.compile(*chain_model(), cache=False)
    f = k.to_torch()
    z = torch.tensor(rng.random(9), requires_grad=True)
    assert torch.autograd.gradcheck(f, (z,))
    assert torch.autograd.gradgradcheck(f, (z,))


def test_jax_bridge_gradient_matches_the_kernel():
    import jax
    jax.config.update("jax_enable_x64", True)
    k = gc.compile(*chain_model(), cache=False)
    z = rng.random(11)
    assert np.allclose(np.asarray(jax.grad(k.to_jax())(z)), k.grad(z), rtol=1e-13)


def test_export_runs_without_sympy_or_gradcomp(tmp_path):
    k = gc.compile(*chain_model(), cache=tmp_path / "c", name="chain")
    from gradcomp.export import write_export
    write_export(k, tmp_path / "chain_module.py")
    z = rng.random(8)
    code = (f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import numpy as np, chain_module; "
            f"g = chain_module.grad(np.array({z.tolist()!r})); "
            f"print(repr(g.tolist()), 'sympy' in sys.modules, 'gradcomp' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True)
    grads, sympy_loaded, gradcomp_loaded = out.stdout.rsplit(" ", 2)
    assert np.array_equal(np.array(eval(grads)), k.grad(z))
    assert (sympy_loaded, gradcomp_loaded.strip()) == ("False", "False")


# -- sparse Jacobians and Hessians --------------------------------------------------------------------------

def stencil_with_boundaries():
    y = sp.IndexedBase("y", shape=(n,))
    r = sp.Idx("r", (1, n - 2))
    return gc.compile([sp.Eq(y[0], x[0]), sp.Eq(y[r], x[r - 1] - 2 * x[r] + x[r + 1] + sp.sin(x[r]) * x[r + 1]),
                       sp.Eq(y[n - 1], x[n - 1] ** 2)], [x], cache=False)


def test_sparse_jacobian_of_a_stencil_with_boundaries_matches_the_dense_one():
    k = stencil_with_boundaries()
    z = rng.random(9)
    J = k.jacobian(z, sparse=True)
    assert J.nnz == 3 * 9 - 2 - 2  # the boundary rows read one element each
    np.testing.assert_array_equal(J.toarray(), k.jacobian(z))
    assert J.has_canonical_format


def test_sparse_jacobian_of_a_periodic_grid_matches_torch():
    N = sp.Symbol("N", integer=True, positive=True)
    u = sp.IndexedBase("u", shape=(N, N))
    r, c = sp.Idx("r", N), sp.Idx("c", N)
    out = sp.IndexedBase("out", shape=(N, N))
    lap = u[sp.Mod(r + 1, N), c] + u[sp.Mod(r - 1, N), c] + u[r, sp.Mod(c + 1, N)] - 4 * u[r, c]
    k = gc.compile([sp.Eq(out[r, c], lap * u[r, c])], [u], cache=False)

    def f(w):
        return (torch.roll(w, -1, 0) + torch.roll(w, 1, 0) + torch.roll(w, -1, 1) - 4 * w) * w

    w = rng.random((6, 6))
    expected = torch.autograd.functional.jacobian(f, torch.tensor(w)).reshape(36, 36).numpy()
    J = k.jacobian(w, sparse=True)
    assert J.nnz == 4 * 36
    np.testing.assert_allclose(J.toarray(), expected, rtol=1e-13, atol=1e-15)
    np.testing.assert_array_equal(k.jacobian_sparsity(w).toarray(), J.toarray() != 0)


def test_sparse_hessian_of_an_edge_energy_sums_repeated_edges():
    e = sp.IndexedBase("e", shape=(m, 2), integer=True)
    w = sp.IndexedBase("w", shape=(m,))
    kernel = gc.compile(sp.Sum(w[k] * (1 - sp.cos(x[e[k, 0]] - x[e[k, 1]])), (k, 0, m - 1)), [x, w, e], wrt=[0],
                        cache=False)
    theta, weights = rng.random(12), rng.random(40)
    edges = rng.integers(0, 12, (40, 2))
    edges[3] = edges[2]
    H = kernel.hessian(theta, weights, edges, sparse=True)
    assert H.has_canonical_format  # repeated (row, column) entries summed into one
    np.testing.assert_allclose(H.toarray(), kernel.hessian(theta, weights, edges), rtol=1e-12, atol=1e-14)
    ht = torch.autograd.functional.hessian(
        lambda q: (torch.tensor(weights) * (1 - torch.cos(q[edges[:, 0]] - q[edges[:, 1]]))).sum(),
        torch.tensor(theta)).numpy()
    np.testing.assert_allclose(H.toarray(), ht, rtol=1e-12, atol=1e-14)


def test_sparse_jacobian_per_wrt_argument():
    A = sp.IndexedBase("A", shape=(n, 3))
    y = sp.IndexedBase("y", shape=(n,))
    r = sp.Idx("r", n)
    k = gc.compile([sp.Eq(y[r], sp.exp(x[r]) * A[r, 1] + A[r, 2] ** 2)], [x, A], cache=False)
    z, a = rng.random(5), rng.random((5, 3))
    Jx, Ja = k.jacobian(z, a, sparse=True)
    dense_x, dense_a = k.jacobian(z, a)
    np.testing.assert_array_equal(Jx.toarray(), dense_x)
    np.testing.assert_array_equal(Ja.toarray(), dense_a.reshape(5, 15))
    assert (Jx.nnz, Ja.nnz) == (5, 10)


def test_sparse_hessian_of_a_pair_sum_matches_the_dense_one():
    kernel = gc.compile(*lj_model(), cache=False)
    points = lattice(6)
    dense = kernel.hessian(points)
    np.testing.assert_allclose(kernel.hessian(points, sparse=True).toarray(), dense.reshape(18, 18),
                               rtol=1e-12, atol=1e-12)


def test_pattern_of_a_million_states_without_unrolling():
    k = stencil_with_boundaries()
    z = rng.random(10**6)
    pattern = k.jacobian_sparsity(z)
    assert pattern.shape == (10**6, 10**6) and pattern.nnz == 3 * 10**6 - 4
    rows, cols = pattern.nonzero()
    assert np.abs(rows - cols).max() == 1


def test_pattern_follows_changed_index_data():
    e = sp.IndexedBase("e", shape=(m, 2), integer=True)
    k = gc.compile(sp.Sum((x[e[i, 0]] - x[e[i, 1]]) ** 2, (i, 0, m - 1)), [x, e], cache=False)
    z = rng.random(6)
    edges = np.array([[0, 1], [1, 2]])
    first = k.hessian_sparsity(z, edges)
    edges[1] = [4, 5]  # changed in place: the kept pattern must not be reused
    second = k.hessian(z, edges, sparse=True)
    assert first.nnz == 7 and second.nnz == 8
    np.testing.assert_allclose(second.toarray(), k.hessian(z, edges))


def test_sparse_jacobian_through_a_temporary_is_a_clear_error():
    kernel = gc.compile(sp.log(sp.Sum(sp.exp(x[i]), (i, 0, n - 1))), [x], cache=False)
    with pytest.raises(NotImplementedError, match="temporaries"):
        kernel.jacobian(rng.random(4), sparse=True)


def test_sparse_jacobian_is_for_one_point():
    with pytest.raises(ValueError, match="one point"):
        stencil_with_boundaries().jacobian(rng.random((2, 5)), sparse=True)


def test_derivative_kernel_of_an_indexed_kernel_is_a_clear_error():
    with pytest.raises(NotImplementedError, match="hessian"):
        gc.derivative(gc.compile(*chain_model(), cache=False), "grad")
