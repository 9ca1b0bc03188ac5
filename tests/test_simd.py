"""Batches run on SIMD vectors, one point per lane; single points on the scalar core.

Both are built from the same instructions and the same math, so a batch gives
each point's single-point result bit for bit: at any batch size (full blocks,
a partial last block), for rows given per point or shared by the batch, and at
special values (signed zeros, infinities, NaN, huge and subnormal numbers).
"""

from __future__ import annotations

import numpy as np
import pytest
from strategies import table_function_outputs

import gradcomp as gc
from gradcomp import ir
from gradcomp.functions import RULES

SPECIAL = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e300, -1e300, 5e-324, 1e22, -1e22, 1e-310, 0.5, -2.5, 710.0, -746.0]
"""Values where vector math takes its special-case paths (float32 casts them to its own extremes)."""


def _points(function, dtype, count):
    """``count`` points per argument: draws from the function's test domain, then the special values."""
    _, symbols = table_function_outputs(function)
    rng = np.random.default_rng(len(function.__name__))
    lo, hi = RULES[function].domain
    columns = []
    for k in range(len(symbols)):
        drawn = rng.uniform(lo, hi, count - len(SPECIAL))
        special = np.roll(np.array(SPECIAL), 3 * k)  # pair the special values differently per argument
        with np.errstate(over="ignore"):
            columns.append(np.concatenate([drawn, special]).astype(dtype))
    return columns


def _per_argument(result):
    return result if isinstance(result, tuple) else (result,)


@pytest.fixture(scope="module")
def table_kernel():
    kernels = {}

    def get(function, dtype):
        if (function, dtype) not in kernels:
            outputs, symbols = table_function_outputs(function)
            kernels[function, dtype] = gc.compile(outputs, symbols, cache=False, dtype=dtype)
        return kernels[function, dtype]

    return get


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("function", list(RULES), ids=lambda f: f.__name__)
def test_a_batch_gives_each_points_single_point_result_bit_for_bit(table_kernel, function, dtype):
    kernel = table_kernel(function, dtype)
    count = 3 * ir.lanes(dtype) + 5  # full blocks and a partial one
    columns = _points(function, dtype, max(count, len(SPECIAL) + 8))
    cotangents = np.linspace(-1.5, 2.0, len(columns[0]) * kernel.out_shape[0]).astype(dtype).reshape(
        len(columns[0]), *kernel.out_shape)
    with np.errstate(all="ignore"):
        batch_value = kernel(*columns)
        batch_vjp = _per_argument(kernel.vjp(*columns, cotangents))
        for i in range(len(columns[0])):
            point = [c[i] for c in columns]
            np.testing.assert_array_equal(batch_value[i], kernel(*point), err_msg=f"forward at {point}")
            for got, expected in zip(batch_vjp, _per_argument(kernel.vjp(*point, cotangents[i]))):
                np.testing.assert_array_equal(got[i], expected, err_msg=f"vjp at {point}")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_row_shared_by_the_batch_gives_the_same_result_as_that_row_repeated(dtype):
    import sympy as sp
    x, y = sp.symbols("x y")
    kernel = gc.compile([sp.sin(x) * y + sp.exp(x * y)], [x, y], cache=False, dtype=dtype)
    xs = np.linspace(-3, 3, 2 * ir.lanes(dtype) + 3).astype(dtype)
    shared = np.asarray(0.75, dtype)
    with_shared = kernel.vjp(xs, shared, np.ones((len(xs), 1), dtype))
    repeated = kernel.vjp(xs, np.full_like(xs, shared), np.ones((len(xs), 1), dtype))
    for got, expected in zip(with_shared, repeated):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_batch_drivers_use_the_vector_width_of_this_cpu(dtype):
    import sympy as sp
    x = sp.Symbol("x")
    kernel = gc.compile(x * x, [x], cache=False, dtype=dtype)
    module = kernel._import()
    assert module.LANES == ir.lanes(dtype)
    assert ir.lanes(dtype) >= 16 // np.dtype(dtype).itemsize  # at least SSE2's 128 bits


def test_methods_with_huge_rows_run_one_point_a_block_and_agree_with_single_points():
    import sympy as sp

    from gradcomp.codegen import VECTOR_ROW_MAX
    n = 33  # a Hessian row of 33 * 33 scalars, over VECTOR_ROW_MAX
    x = sp.symbols(f"x0:{n}")
    kernel = gc.compile(sum(x[i] ** 2 * x[i + 1] for i in range(n - 1)), [x], cache=False)
    points = np.random.default_rng(3).standard_normal((11, n))
    batch = kernel.hessian(points)
    module = kernel._import()
    assert n + n * n > VECTOR_ROW_MAX and module.hessian_LANES == 1
    assert module.vjp_LANES > 1
    for point, hessian in zip(points, batch):
        np.testing.assert_array_equal(hessian, kernel.hessian(point))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_point_core_calls_its_math_functions_when_it_has_many_and_inlines_them_otherwise(dtype):
    import sympy as sp
    x = sp.symbols("x0:40")
    kernel = gc.compile(sum(sp.sin(xi) ** 2 * (i + 1) for i, xi in enumerate(x)), [x], cache=False, dtype=dtype)
    forward, vjp = kernel.ir("forward"), kernel.ir("vjp")  # 40 and 80 calls of sin and cos
    suffix = "f64" if dtype == "float64" else "f32"
    assert 40 <= ir.INLINE_CALLS_MAX < 80
    assert f'@"gradcomp.vecmath.sin.{suffix}"(' in forward and '.call"' not in forward
    assert f'@"gradcomp.vecmath.sin.{suffix}.call"(' in vjp and f'@"gradcomp.vecmath.cos.{suffix}.call"(' in vjp
    points = np.random.default_rng(4).uniform(-4, 4, (13, 40)).astype(dtype)
    batch = kernel.vjp(points, 1.0)
    tolerance = 1e-14 if dtype == "float64" else 2e-4
    np.testing.assert_allclose(batch, np.sin(2 * points.astype(float)) * np.arange(1, 41), rtol=tolerance,
                               atol=tolerance)
    for point, gradient in zip(points, batch):
        np.testing.assert_array_equal(gradient, kernel.vjp(point, 1.0))


def test_only_gradcomps_math_calls_count_towards_calling_instead_of_inlining():
    import sympy as sp
    x = sp.symbols("x0:70")
    kernel = gc.compile(sum(sp.sqrt(xi) for xi in x) + sp.sin(x[0]), [x], cache=False)  # 70 sqrt, 1 sin
    assert ir._math_calls(kernel._import().forward_CODE.split("\n")[2:]) == 1
    assert '@"gradcomp.vecmath.sin.f64"(' in kernel.ir("forward")


def test_the_ir_of_a_batch_core_computes_on_vectors_of_lanes_points():
    import sympy as sp
    x, y = sp.symbols("x y")
    kernel = gc.compile(sp.sin(x) * y, [x, y], cache=False)
    assert "<8 x double>" in kernel.ir("vjp", lanes=8)
    assert "<8 x double>" not in kernel.ir("vjp")
    with pytest.raises(ValueError, match="lanes must be"):
        kernel.ir("vjp", lanes=3)


@pytest.mark.parametrize(("features", "expected"), [("+avx512f,+avx2,+avx", 8), ("-avx512f,+avx2,+avx", 4), ("", 2)])
def test_the_width_follows_the_cpu_numba_is_told_to_compile_for(monkeypatch, features, expected):
    from numba.core import config
    monkeypatch.setattr(config, "CPU_NAME", "x86-64")
    monkeypatch.setattr(config, "CPU_FEATURES", features)
    assert ir.lanes("float64") == expected
    assert ir.lanes("float32") == 2 * expected


@pytest.mark.parametrize(("cpu", "float64_lanes"), [("haswell", 4), ("znver3", 4), ("skylake-avx512", 8),
                                                   ("x86-64-v4", 8), ("x86-64", 2)])
def test_a_cpu_named_without_features_gets_the_lanes_of_its_vector_registers(monkeypatch, cpu, float64_lanes):
    from numba.core import config

    from gradcomp.ir import lanes
    monkeypatch.setattr(config, "CPU_NAME", cpu)
    monkeypatch.setattr(config, "CPU_FEATURES", "")
    assert (lanes("float64"), lanes("float32")) == (float64_lanes, 2 * float64_lanes)


@pytest.mark.parametrize(("cpu", "ops", "row", "expected"), [
    ("znver1", 10, 9, 1), ("znver1", 311, 65, 2), ("znver1", 282, 15, 4),
    ("haswell", 10, 9, 4), ("skylake-avx512", 10, 9, 4)])
def test_a_cpu_with_128_bit_units_gives_light_methods_fewer_lanes(monkeypatch, cpu, ops, row, expected):
    from numba.core import config
    monkeypatch.setattr(config, "CPU_NAME", cpu)
    assert ir.block_lanes(4, ops=ops, row=row) == expected


def test_a_method_on_fewer_lanes_computes_what_its_single_points_compute(monkeypatch):
    import sympy as sp
    from numba.core import config
    monkeypatch.setattr(config, "CPU_NAME", "znver1")
    monkeypatch.setattr(config, "CPU_FEATURES", "")
    x = sp.symbols("x0:3")
    kernel = gc.compile([x[0] * x[1] * x[2], x[0] + x[1] + x[2]], [x], cache=False)
    points = np.random.default_rng(5).standard_normal((7, 3))
    batch = kernel.vjp(points, np.ones((7, 2)))
    assert kernel._import().vjp_LANES == 1
    for point, gradient in zip(points, batch):
        np.testing.assert_array_equal(gradient, kernel.vjp(point, np.ones(2)))
