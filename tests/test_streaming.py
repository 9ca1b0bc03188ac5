"""Large batches: results written into preallocated outputs, inputs converted in bounded chunks."""

import numpy as np
import pytest
import sympy as sp

import gradcomp as gc
from gradcomp import runtime

RNG = np.random.default_rng(3)


@pytest.fixture(scope="module")
def bilinear():
    """y = (x·W)_i * s: a batched vector, a shared matrix parameter, a scalar."""
    x = sp.symbols("x0:3")
    W = sp.Matrix(3, 2, sp.symbols("w0:6"))
    s = sp.Symbol("s")
    y = [sum(x[j] * W[j, i] for j in range(3)) * s for i in range(2)]
    return gc.compile(y, [list(x), W, s])


def expected(x, W, s):
    return np.einsum("...j,...ji->...i", x, W) * np.asarray(s)[..., None]


def test_out_receives_the_result_and_is_returned(bilinear):
    x, W = RNG.standard_normal((10, 3)), RNG.standard_normal((3, 2))
    out = np.empty((10, 2))
    result = bilinear(x, W, 2.0, out=out)
    assert result is out
    np.testing.assert_allclose(out, expected(x, W, 2.0), rtol=1e-12, atol=1e-14)


def test_out_for_several_results_is_a_tuple(bilinear):
    x, W, v = RNG.standard_normal((10, 3)), RNG.standard_normal((3, 2)), RNG.standard_normal((10, 2))
    outs = (np.empty((10, 3)), np.empty((10, 3, 2)), np.empty(10))
    grads = bilinear.vjp(x, W, 0.5, v, out=outs)
    assert all(g is o for g, o in zip(grads, outs))
    np.testing.assert_allclose(outs[2], np.einsum("ni,ni->n", v, expected(x, W, 1.0)), rtol=1e-12, atol=1e-14)


def test_out_may_be_a_memory_map(bilinear, tmp_path):
    x, W = RNG.standard_normal((1000, 3)), RNG.standard_normal((3, 2))
    mapped = np.lib.format.open_memmap(tmp_path / "y.npy", mode="w+", shape=(1000, 2))
    bilinear(x, W, 1.5, out=mapped)
    mapped.flush()
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected(x, W, 1.5), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("bad, message", [(np.empty((10, 3)), "must be an array of shape \\(10, 2\\)"),
                                          (np.empty((10, 2), np.float32), "dtype float64"),
                                          (np.empty((2, 10)).T, "C-contiguous")])
def test_a_wrong_out_is_refused_before_anything_is_written(bilinear, bad, message):
    with pytest.raises(ValueError, match=message):
        bilinear(np.ones((10, 3)), np.ones((3, 2)), 1.0, out=bad)


@pytest.mark.parametrize("layout", ["float32", "strided", "broadcast"])
def test_inputs_needing_conversion_are_converted_in_chunks(bilinear, monkeypatch, layout):
    monkeypatch.setattr(runtime, "CHUNK_BYTES", 4 * 8 * 7)  # a handful of points per chunk
    x = RNG.standard_normal((6, 5, 3))
    W = RNG.standard_normal((3, 2))
    s = RNG.standard_normal((6, 1))
    if layout == "float32":
        x = x.astype(np.float32)
    elif layout == "strided":
        x = np.asfortranarray(x)
    else:
        W = RNG.standard_normal((5, 3, 2))  # broadcasts against the batch (6, 5) only partly
    y = bilinear(x, W, s)
    assert y.shape == (6, 5, 2)
    np.testing.assert_allclose(y, expected(x.astype(float), W, s), rtol=1e-12, atol=1e-14)
