"""Sparse Jacobians: the structural pattern from the DAG and only the nonzeros computed."""

import numpy as np
import pytest
import sympy as sp

import gradcomp as gc

pytest.importorskip("scipy")
N = 12
u = sp.symbols(f"u0:{N}")


def diffusion(values):
    """A periodic 1-D reaction-diffusion right-hand side: a tridiagonal (plus corners) Jacobian."""
    n = len(values)
    return [values[(i - 1) % n] - 2 * values[i] + values[(i + 1) % n] + values[i] ** 2 * sp.sin(values[i])
            for i in range(n)]


@pytest.fixture(scope="module")
def kernel():
    return gc.compile(diffusion(u), [list(u)], cache=False)


@pytest.fixture(scope="module")
def point():
    return np.random.default_rng(0).uniform(-1, 1, N)


def test_sparsity_is_the_structural_pattern_of_the_dag(kernel):
    expected = np.zeros((N, N), bool)
    for i in range(N):
        expected[i, [(i - 1) % N, i, (i + 1) % N]] = True
    np.testing.assert_array_equal(kernel.jacobian_sparsity().toarray(), expected)


def test_sparse_jacobian_of_one_point_is_a_csr_array_equal_to_the_dense_one(kernel, point):
    from scipy.sparse import csr_array
    sparse = kernel.jacobian(point, sparse=True)
    assert isinstance(sparse, csr_array) and sparse.nnz == 3 * N
    np.testing.assert_allclose(sparse.toarray(), kernel.jacobian(point), rtol=1e-14)


def test_sparse_jacobian_of_a_batch_is_the_nonzero_values_in_csr_order(kernel):
    points = np.random.default_rng(1).uniform(-1, 1, (2, 3, N))
    values = kernel.jacobian(points, sparse=True)
    rows, columns = kernel.jacobian_sparsity().nonzero()
    assert values.shape == (2, 3, 3 * N)
    np.testing.assert_allclose(values, kernel.jacobian(points)[..., rows, columns], rtol=1e-14)


def test_the_sparse_method_stores_only_the_nonzeros(kernel):
    kernel.jacobian(np.zeros(N), sparse=True)
    assert kernel._methods["jacobian_sparse"].outputs[0][1] == (3 * N,)


def test_sparse_jacobian_writes_into_out_for_a_batch(kernel):
    points = np.random.default_rng(2).uniform(-1, 1, (4, N))
    out = np.empty((4, 3 * N))
    kernel.jacobian(points, sparse=True, out=out)
    np.testing.assert_array_equal(out, kernel.jacobian(points, sparse=True))


def test_several_wrt_arguments_and_a_matrix_output_flatten_in_c_order():
    a, b, c = sp.symbols("a0:2"), sp.symbols("b0:3"), sp.Symbol("c")
    outputs = [[a[0] * b[0], sp.exp(a[1])], [b[2] * c, a[0] + a[1] * b[1]]]
    kernel = gc.compile(outputs, [list(a), list(b), c], wrt=[0, 1], cache=False)
    point = ([0.3, -0.4], [1.5, 0.2, -0.9], 2.0)
    sparse_a, sparse_b = kernel.jacobian(*point, sparse=True)
    dense_a, dense_b = kernel.jacobian(*point)
    assert sparse_a.shape == (4, 2) and sparse_b.shape == (4, 3)
    np.testing.assert_allclose(sparse_a.toarray(), dense_a.reshape(4, 2), rtol=1e-15)
    np.testing.assert_allclose(sparse_b.toarray(), dense_b.reshape(4, 3), rtol=1e-15)


def test_an_input_no_output_depends_on_has_an_empty_pattern():
    a, b = sp.symbols("a b")
    kernel = gc.compile([a * 2, sp.cos(a)], [a, b], cache=False)
    assert kernel.jacobian_sparsity()[1].nnz == 0
    assert kernel.jacobian([1.0, 2.0], 3.0, sparse=True)[1].shape == (2, 0)


def test_more_outputs_than_inputs_sweep_by_columns_with_the_same_result():
    a, b = sp.symbols("a b")
    outputs = [a * b, sp.sin(a), b**2, a + b, sp.exp(b)]
    kernel = gc.compile(outputs, [[a, b]], cache=False)
    np.testing.assert_allclose(kernel.jacobian([0.4, -1.2], sparse=True).toarray(), kernel.jacobian([0.4, -1.2]),
                               rtol=1e-15)


@pytest.mark.parametrize("index_type", [np.int32, np.int64])
@pytest.mark.parametrize("count, row_count, col_count", [(0, 3, 4), (1, 1, 1), (1000, 5, 7), (5000, 2, 100000),
                                                          (20000, 50, 30)])
def test_csr_positions_of_random_entries_match_numpy_unique(count, row_count, col_count, index_type):
    """Short rows (insertion sort) and long ones (heap sort) alike: each entry's CSR position, the pattern,
    in arrays of the index type asked for."""
    from gradcomp.csr import csr_positions
    generator = np.random.default_rng(count)
    rows, cols = generator.integers(0, row_count, count), generator.integers(0, col_count, count)
    position, indptr, indices, unique = csr_positions(rows, cols, row_count, col_count, index_type)
    assert position.dtype == indptr.dtype == indices.dtype == index_type
    keys, inverse = np.unique(rows * col_count + cols, return_inverse=True)
    assert unique == keys.size
    np.testing.assert_array_equal(position, inverse.ravel())
    np.testing.assert_array_equal(indices, keys % col_count)
    np.testing.assert_array_equal(indptr, np.concatenate([[0], np.cumsum(np.bincount(keys // col_count,
                                                                                      minlength=row_count))]))
