"""Kernels on dask arrays: blockwise, lazy, and runnable on a distributed cluster."""

import numpy as np
import pytest
import sympy as sp

import gradcomp as gc

da = pytest.importorskip("dask.array")
RNG = np.random.default_rng(11)


@pytest.fixture(scope="module")
def layer():
    x = sp.symbols("x0:3")
    W = sp.MatrixSymbol("W", 2, 3)
    return gc.compile([sp.tanh(sum(W[i, j] * x[j] for j in range(3))) for i in range(2)], [list(x), W],
                      wrt=[0, 1])


@pytest.fixture(scope="module")
def batch():
    x = RNG.standard_normal((1000, 3))
    return da.from_array(x, chunks=(300, 3)), x, RNG.standard_normal((2, 3)), RNG.standard_normal((1000, 2))


def test_forward_on_a_dask_array_is_a_lazy_dask_array(layer, batch):
    lazy_x, x, W, _ = batch
    y = layer(lazy_x, W)
    assert type(y).__module__.startswith("dask.array") and y.shape == (1000, 2)
    assert y.chunks[0] == lazy_x.chunks[0]
    np.testing.assert_array_equal(y.compute(), layer(x, W))


def test_vjp_and_jvp_on_dask_arrays_match_numpy(layer, batch):
    lazy_x, x, W, v = batch
    lazy_v = da.from_array(v, chunks=(300, 2))
    grad_x, grad_W = da.compute(*layer.vjp(lazy_x, W, lazy_v))
    expected_x, expected_W = layer.vjp(x, W, v)
    np.testing.assert_array_equal(grad_x, expected_x)
    np.testing.assert_array_equal(grad_W, expected_W)
    tangents = (np.ones(3), np.zeros((2, 3)))
    np.testing.assert_array_equal(layer.jvp(lazy_x, W, tangents).compute(), layer.jvp(x, W, tangents))


def test_a_local_cluster_of_worker_processes_runs_the_kernel(layer, batch):
    distributed = pytest.importorskip("distributed")
    lazy_x, x, W, _ = batch
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        y = client.compute(layer(lazy_x, W)).result()
        workers_without_sympy = client.run(lambda: "sympy" not in __import__("sys").modules)
    np.testing.assert_array_equal(y, layer(x, W))
    assert len(workers_without_sympy) == 2 and all(workers_without_sympy.values())


def test_a_dask_argument_of_the_wrong_core_shape_is_named_before_dask_sees_it(layer, batch):
    _, _, W, _ = batch
    with pytest.raises(ValueError, match=r"argument 'arg0' has shape \(1000, 4\), which does not end in its core "
                                         r"shape \(3,\)"):
        layer(da.ones((1000, 4), chunks=(300, 4)), W)


def test_dask_batch_shapes_that_do_not_broadcast_are_named(layer, batch):
    lazy_x, _, W, _ = batch
    with pytest.raises(ValueError, match=r"batch shapes do not broadcast: arg0 \(1000,\), W \(7,\)"):
        layer(lazy_x, np.ones((7, 2, 3)))


def test_a_complex_dask_argument_is_a_type_error(layer, batch):
    _, _, W, _ = batch
    with pytest.raises(TypeError, match="argument 'arg0' must be real numbers, got Array of dtype complex128"):
        layer(da.ones((10, 3), dtype=complex), W)


def test_out_with_dask_inputs_is_refused(layer, batch):
    lazy_x, _, W, _ = batch
    with pytest.raises(TypeError, match=r"out= cannot be used with dask array inputs.*dask\.array\.store"):
        layer(lazy_x, W, out=np.empty((1000, 2)))
