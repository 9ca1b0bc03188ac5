"""gradcomp.vecmath: each function, as a vector and as a scalar, against an accurate reference.

Each function is compiled in a small Numba loop: an intrinsic loads W consecutive elements as a
``<W x double>`` (``<W x float>``), calls ``vecmath.emit`` and stores the result; the tail, or every
element when the loop is asked for the scalar path, goes through ``emit`` on ``double`` (``float``).
References: numpy's ``longdouble`` (80-bit x87, 11 bits beyond double) for dense samples, mpmath
for points near the hard cases.  Errors are in ulps of the target dtype at the reference value;
equal special values (NaN, same infinity, same signed zero) count as exact.
"""

import ast
import functools
import math
import pathlib

import mpmath
import numpy as np
import pytest
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from gradcomp import vecmath

LD = np.longdouble
MAX_ULP = 2.0
WIDTHS = {np.float64: 8, np.float32: 16}
DTYPES = [np.float64, np.float32]

# name: (numpy function on longdouble, mpmath function, (low, high) of the domain, points near hard cases)
_PI2 = math.pi / 2
_LN2 = math.log(2)


def _near(points, spread=(1e-15, 1e-12, 1e-9, 1e-6, 1e-3)):
    """points, and points moved by a few ulps and by relative steps both ways."""
    points = np.asarray(points, dtype=np.float64)
    out = [points]
    for _ in range(3):
        out += [np.nextafter(points, np.inf), np.nextafter(points, -np.inf)]
        points = out[-2]
    base = out[0]
    for s in spread:
        out += [base * (1 + s), base * (1 - s)]
    return np.concatenate(out)


_TRIG_HARD = _near(np.array([k * _PI2 for k in [1, 2, 3, 4, 5, 7, 10, 33, 100, 355, 1000, 6283, 20000, 63000]]
                            + [0.5 * _PI2, 1.5 * _PI2, 2.5 * _PI2, 0.785, 0.79, 1e-5, 1e-8]))
_EXP_HARD = _near([708.0, 709.78, 709.782712893384, -708.0, -708.3964185322641, -745.1332191019411, -745.0,
                   0.5 * _LN2, -0.5 * _LN2, 1.5 * _LN2, 1e-8, -1e-8, 1e-3, 0.3, 40.0, -40.0, 88.72, -87.33, -103.9])
_LOG_HARD = _near([1.0, 1.0 + 1e-8, 1.0 - 1e-8, 0.7071067811865476, 1.4142135623730951, 2.2250738585072014e-308,
                   1e-310, 2.0, 0.5, 1e300, 1.1754943508222875e-38, 1e-40, 1e-320])
_LOG1P_HARD = _near([1e-300, 1e-16, 1e-8, -1e-8, 1e-3, -1e-3, -0.2928932188134524, 0.41421356237309515,
                     -0.999999, -0.5, 1.0, 1e16, 1e300])
_TANH_HARD = _near([1e-300, 1e-9, 1e-5, 0.1, 0.55, 0.6, 0.3466, 0.8664, 1.0, 19.0, 22.0, 8.0, 9.01])
_SINH_HARD = _near([1e-300, 1e-9, 1e-5, 0.1, 0.3466, 1.0, 1.0397, 22.0, 708.0, 710.0, 710.4758600739439,
                    89.41, 89.415985])
_ATAN_HARD = _near([1e-300, 1e-9, 7 / 16, 11 / 16, 19 / 16, 39 / 16, 1.0, 0.5, 1.5, 1e8, 1e20, 2.0**60, 1e300])
_ASIN_HARD = _near([1e-300, 1e-9, 0.1, 0.5, 0.75, 0.975, 0.999999, 1.0 - 2.0**-30, 1.0 - 2.0**-52, 1.0],
                   spread=(1e-15, 1e-12, 1e-9, 1e-6))

_ASINH_HARD = _near([1e-300, 2.0**-28, 1e-8, 1e-3, 0.1, 0.5, 0.75, 1.0, 1.5, 2.0, 1e4, 2.0**28, 1e10, 1e154, 1e300])
_ACOSH_HARD = _near([1.0 + 2.0**-52, 1.0 + 2.0**-30, 1.0 + 1e-8, 1.0001, 1.125, 1.5, 2.0, 1e4, 2.0**28, 1e154, 1e300])
_ATANH_HARD = _near([1e-300, 2.0**-28, 1e-8, 1e-3, 0.1, 0.17, 0.25, 0.5, 0.75, 0.99, 0.999999, 1.0 - 2.0**-30,
                     1.0 - 2.0**-52], spread=(1e-15, 1e-12, 1e-9, 1e-6))
_ERF_HARD = _near([1e-300, 1e-20, 1e-9, 1e-5, 0.1, 0.25, 0.5, 0.6174, 0.84375, 1.0, 1.25, 1 / 0.35, 2.0, 4.0, 5.9,
                   5.921, 6.0, 10.0, 20.0, 26.0, 26.5, 26.55, 27.2, 27.23, 27.5, 28.0])


def _mpmath_on_longdouble(function):
    """A reference like numpy's longdouble functions, from mpmath: ``function`` of doubles, rounded to longdouble;
    zeros carry the sign of x (erf), NaN gives NaN.  |x| > 100 as 100: erf is +-1 and erfc 0 or 2 in double."""
    def reference(x):
        x = np.asarray(x, dtype=np.float64)
        finite = np.isfinite(x)
        ref = np.full(x.shape, np.nan, dtype=LD)
        with mpmath.workprec(128):  # |x| > 100: erf, erfc at 100 (mpmath's erfc fails on huge x)
            ref[finite] = _to_longdouble([function(mpmath.mpf(max(-100.0, min(100.0, v))))
                                          for v in x[finite].tolist()])
        for i in np.flatnonzero(np.isinf(x)):
            ref[i] = LD(float(function(mpmath.mpf(float(x[i])))))
        zero = ref == 0
        ref[zero] = np.copysign(LD(0), x[zero].astype(LD)) if function is mpmath.erf else LD(0)
        return ref

    return reference


FUNCTIONS = {
    "erf": (_mpmath_on_longdouble(mpmath.erf), mpmath.erf, (0, 7), _ERF_HARD),
    "erfc": (_mpmath_on_longdouble(mpmath.erfc), mpmath.erfc, (0, 28), _ERF_HARD),
    "sin": (np.sin, mpmath.sin, (0, 1e6), _TRIG_HARD),
    "cos": (np.cos, mpmath.cos, (0, 1e6), _TRIG_HARD),
    "tan": (np.tan, mpmath.tan, (0, 1e6), _TRIG_HARD),
    "exp": (np.exp, mpmath.exp, (0, 800), _EXP_HARD),
    "expm1": (np.expm1, mpmath.expm1, (0, 800), _EXP_HARD),
    "log": (np.log, mpmath.log, (0, math.inf), _LOG_HARD),
    "log1p": (np.log1p, mpmath.log1p, (-1, math.inf), _LOG1P_HARD),
    "tanh": (np.tanh, mpmath.tanh, (0, 30), _TANH_HARD),
    "sinh": (np.sinh, mpmath.sinh, (0, 720), _SINH_HARD),
    "cosh": (np.cosh, mpmath.cosh, (0, 720), _SINH_HARD),
    "atan": (np.arctan, mpmath.atan, (0, math.inf), _ATAN_HARD),
    "asin": (np.arcsin, mpmath.asin, (0, 1), _ASIN_HARD),
    "acos": (np.arccos, mpmath.acos, (0, 1), _ASIN_HARD),
    "asinh": (np.arcsinh, mpmath.asinh, (0, math.inf), _ASINH_HARD),
    "acosh": (np.arccosh, mpmath.acosh, (1, math.inf), _ACOSH_HARD),
    "atanh": (np.arctanh, mpmath.atanh, (0, 1), _ATANH_HARD),
}
"""The functions vecmath implements.  The domain (for |x|, both signs tested) guides the dense samples."""

SPECIAL = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 5e-324, -5e-324, 2.2250738585072014e-308,
                    -2.2250738585072014e-308, 1e-310, 1.7976931348623157e308, -1.7976931348623157e308, 1e22, -1e22,
                    1e300, -1e300, 1.0, -1.0, 2.0, 0.5, 710.0, -710.0, 746.0, -746.0, 1e5, -1e5, 3.4028234663852886e38,
                    1.401298464324817e-45, 1.1754943508222875e-38, 89.0, -104.0])


# --------------------------------------------------------------------------------------------
# The harness: an intrinsic applying vecmath.emit to W (or 1) consecutive elements.

def _apply(name, width):
    @intrinsic
    def apply(typingctx, args, out, i):
        def codegen(context, builder, sig, llargs):
            element = context.get_value_type(sig.args[1].dtype)
            value_type = ir.VectorType(element, width) if width else element
            align = 4 if isinstance(element, ir.FloatType) else 8
            values = []
            for k, array_type in enumerate(sig.args[0]):
                array = context.make_array(array_type)(context, builder, builder.extract_value(llargs[0], k))
                pointer = builder.bitcast(builder.gep(array.data, [llargs[2]]), value_type.as_pointer())
                values.append(builder.load(pointer, align=align))
            result = vecmath.emit(builder, name, values)
            out = context.make_array(sig.args[1])(context, builder, llargs[1])
            builder.store(result, builder.bitcast(builder.gep(out.data, [llargs[2]]), value_type.as_pointer()),
                          align=align)
            return context.get_dummy_value()

        return types.void(args, out, i), codegen

    return apply


@functools.cache
def _kernel(name, width):
    """kernel(args, out, vector): out = name(*args), W lanes at a time when vector, else lane by lane."""
    vector_apply = _apply(name, width)
    scalar_apply = _apply(name, 0)

    @njit
    def kernel(args, out, vector):
        n = out.size
        i = 0
        if vector:
            while i + width <= n:
                vector_apply(args, out, i)
                i += width
        while i < n:
            scalar_apply(args, out, i)
            i += 1

    return kernel


def evaluate(name, *args, vector=True, width=None):
    """name(*args) elementwise through vecmath, W lanes at a time (then the scalar tail) or all scalar."""
    args = tuple(np.ascontiguousarray(a) for a in args)
    out = np.empty_like(args[0])
    _kernel(name, width or WIDTHS[out.dtype.type])(args, out, vector)
    return out


# --------------------------------------------------------------------------------------------
# Errors in ulps.

def ulp_error(got, ref, dtype):
    """|got - ref| in ulps of dtype at ref; equal special values are exact.

    Computed in long double for float64 results and in float64 for float32 ones (a reference in
    float64 is then within 2^-29 ulp, and float64 arithmetic is what a sweep of 8 M floats affords)."""
    work = np.float64 if dtype == np.float32 else LD
    got = np.asarray(got)
    with np.errstate(over="ignore"):  # beyond float64's range is beyond float32's too
        ref = np.asarray(ref, dtype=work)
    mantissa, smallest = (53, -1074) if dtype == np.float64 else (24, -149)
    error = np.zeros(got.shape, dtype=work)
    got_nan, ref_nan = np.isnan(got), np.isnan(ref)
    error[got_nan != ref_nan] = np.inf
    with np.errstate(over="ignore"):
        rounded = ref.astype(dtype)
    finite = ~got_nan & ~ref_nan
    infinite = finite & (np.isinf(got) | np.isinf(rounded))
    error[infinite & (got != rounded)] = np.inf
    zero = finite & ~infinite & (ref == 0)
    error[zero & ((got != 0) | (np.signbit(got) != np.signbit(ref)))] = np.inf
    rest = finite & ~infinite & ~zero
    _, exponent = np.frexp(ref[rest])
    ulp = np.ldexp(work(1), np.maximum(exponent.astype(np.int64) - mantissa, smallest).astype(np.int32))
    error[rest] = np.abs(got[rest].astype(work) - ref[rest]) / ulp
    return error


def _report(name, dtype, x, got, ref, error):
    i = int(np.argmax(error))
    measured = f" (measured max {MEASURED64[name]} ulp)" if name in MEASURED64 and dtype == np.float64 else ""
    return (f"{name} {dtype.__name__}: max error {float(error[i]):.3f} ulp at x = {x[i]!r}: got {got[i]!r}, "
            f"reference {ref[i]!r}{measured}")


def _longdouble_reference(name, x):
    with np.errstate(all="ignore"):
        return FUNCTIONS[name][0](x.astype(LD))


def _to_longdouble(values):
    """mpmath numbers rounded to longdouble (through a sum of two doubles, scaled; beyond its range: 0 or inf)."""
    ref = np.empty(len(values), dtype=LD)
    with np.errstate(over="ignore", under="ignore"):
        for i, value in enumerate(values):
            if value == 0 or not mpmath.isfinite(value):
                ref[i] = LD(float(value))
                continue
            mantissa, exponent = mpmath.frexp(value)
            head = float(mantissa)
            ref[i] = np.ldexp(LD(head) + LD(float(mantissa - head)), int(max(-20000, min(20000, exponent))))
    return ref


def _mpmath_reference(name, x):
    """name(x) in mpmath at 128 bits, rounded to longdouble."""
    function = FUNCTIONS[name][1]
    with mpmath.workprec(128):
        return _to_longdouble([function(mpmath.mpf(value)) for value in x.tolist()])


_REAL_DOMAIN = {"log": lambda x: x > 0, "log1p": lambda x: x > -1, "asin": lambda x: abs(x) <= 1,
                "acos": lambda x: abs(x) <= 1, "acosh": lambda x: x >= 1, "atanh": lambda x: abs(x) < 1}


DENSE_N = {"erf": 8000, "erfc": 8000}
"""Fewer dense samples where the reference is mpmath (tens of microseconds a point)."""

MEASURED64 = {"asinh": 0.81, "acosh": 0.86, "atanh": 0.84}
"""Max error in float64 ulps measured (offline, against mpmath: 3 million points log-uniform over the domain, near 0
and near 1), rounded up; shown in the assertion messages."""


def _dense_samples(name, dtype, n=None, seed=0):
    """Log-uniform magnitudes over the whole dtype range, uniform ones over the function's domain, both signs."""
    rng = np.random.default_rng(seed)
    n = n or DENSE_N.get(name, 40_000)
    low, high = FUNCTIONS[name][2]
    high_finite = min(high, float(np.finfo(dtype).max))
    tiny = float(np.finfo(dtype).smallest_subnormal)
    log_uniform = np.exp(rng.uniform(math.log(tiny), math.log(float(np.finfo(dtype).max)), n))
    in_domain = np.exp(rng.uniform(math.log(max(tiny, 1e-30)), math.log(high_finite), n))
    uniform = rng.uniform(0, min(high_finite, 1e4), n)
    x = np.concatenate([log_uniform, in_domain, uniform])
    x = x * rng.choice([-1.0, 1.0], x.size)
    if low < 0:  # log1p: more points in (-1, 0)
        x = np.concatenate([x, -rng.uniform(0, 1, n)])
    if low == 1:  # acosh: 1 + log-uniform distances from 1
        x = np.concatenate([x, 1 + np.exp(rng.uniform(math.log(1e-16), math.log(1e4), n))])
    if name == "atanh":  # 1 - log-uniform distances from 1, both signs
        x = np.concatenate([x, (1 - np.exp(rng.uniform(math.log(1e-17), 0, n))) * rng.choice([-1.0, 1.0], n)])
    return x.astype(dtype)


def _finite_in_dtype(x, dtype):
    with np.errstate(over="ignore"):
        x = x.astype(dtype)
    return x[np.isfinite(x)]


# --------------------------------------------------------------------------------------------
# Tests.

def test_functions_table_lists_what_emit_builds():
    assert vecmath.FUNCTIONS == frozenset(FUNCTIONS) | {"atan2", "pow"}


def test_emit_returns_none_for_a_function_it_does_not_implement():
    builder = ir.IRBuilder(ir.Function(ir.Module(), ir.FunctionType(ir.DoubleType(), [ir.DoubleType()]), "f")
                           .append_basic_block())
    assert vecmath.emit(builder, "gamma", [builder.function.args[0]]) is None


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_dense_samples_within_2_ulp_of_longdouble(name, dtype):
    x = _dense_samples(name, dtype)
    got = evaluate(name, x)
    ref = _longdouble_reference(name, x)
    error = ulp_error(got, ref, dtype)
    assert error.max() <= MAX_ULP, _report(name, dtype, x, got, ref, error)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_hard_cases_within_2_ulp_of_mpmath(name, dtype):
    hard = FUNCTIONS[name][3]
    x = _finite_in_dtype(np.concatenate([hard, -hard]), dtype)
    x = x[_REAL_DOMAIN.get(name, np.isfinite)(x) & (x != 0)]  # zeros (mpmath has no -0): the special values
    got = evaluate(name, x)
    ref = _mpmath_reference(name, x)
    error = ulp_error(got, ref, dtype)
    assert error.max() <= MAX_ULP, _report(name, dtype, x, got, ref, error)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_special_values_as_libm(name, dtype):
    """NaN, infinities, signed zeros, subnormals, overflow, domain errors: libm's value, within 2 ulp if finite."""
    with np.errstate(over="ignore"):
        x = SPECIAL.astype(dtype)
    got = evaluate(name, x)
    ref = _longdouble_reference(name, x)
    error = ulp_error(got, ref, dtype)
    assert error.max() <= MAX_ULP, _report(name, dtype, x, got, ref, error)


@pytest.mark.parametrize("name, x, expected", [
    ("sin", -0.0, -0.0), ("tan", -0.0, -0.0), ("tanh", -0.0, -0.0), ("sinh", -0.0, -0.0), ("expm1", -0.0, -0.0),
    ("log1p", -0.0, -0.0), ("atan", -0.0, -0.0), ("asin", -0.0, -0.0), ("cos", -0.0, 1.0), ("exp", -0.0, 1.0),
    ("log", 0.0, -math.inf), ("log", -1.0, math.nan), ("log1p", -1.0, -math.inf), ("asin", 2.0, math.nan),
    ("acos", 1.0, 0.0), ("exp", 710.0, math.inf), ("exp", -746.0, 0.0), ("expm1", -math.inf, -1.0),
    ("tanh", math.inf, 1.0), ("atan", -math.inf, -math.pi / 2), ("cosh", -math.inf, math.inf),
    ("sin", math.inf, math.nan), ("exp", math.nan, math.nan), ("erf", -0.0, -0.0), ("erf", math.inf, 1.0),
    ("erf", -math.inf, -1.0), ("erf", math.nan, math.nan), ("erf", -7.0, -1.0), ("erfc", math.inf, 0.0),
    ("erfc", -math.inf, 2.0), ("erfc", -0.0, 1.0), ("erfc", 30.0, 0.0), ("erfc", 27.3, 0.0), ("erfc", -7.0, 2.0),
    ("erfc", math.nan, math.nan), ("asinh", -0.0, -0.0), ("asinh", 0.0, 0.0), ("asinh", -math.inf, -math.inf),
    ("asinh", math.nan, math.nan), ("acosh", 1.0, 0.0), ("acosh", 0.5, math.nan), ("acosh", -1.0, math.nan),
    ("acosh", -math.inf, math.nan), ("acosh", math.inf, math.inf), ("acosh", math.nan, math.nan),
    ("atanh", -0.0, -0.0), ("atanh", 1.0, math.inf), ("atanh", -1.0, -math.inf), ("atanh", 1.5, math.nan),
    ("atanh", -math.inf, math.nan), ("atanh", math.nan, math.nan)])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_special_value_exactly(name, x, expected, dtype):
    got = evaluate(name, np.full(WIDTHS[dtype] + 1, x, dtype=dtype))  # the vector path and the scalar tail
    expected = dtype(expected)
    for value in got:
        assert (np.isnan(value) and np.isnan(expected)) or (
            value == expected and np.signbit(value) == np.signbit(expected)), (name, x, got)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_scalar_and_vector_paths_are_bit_identical(name, dtype):
    with np.errstate(over="ignore"):
        x = np.concatenate([_dense_samples(name, dtype, n=2000, seed=1), SPECIAL.astype(dtype),
                            FUNCTIONS[name][3].astype(dtype)])
    vector, scalar = evaluate(name, x), evaluate(name, x, vector=False)
    assert np.array_equal(vector.view(f"u{x.itemsize}"), scalar.view(f"u{x.itemsize}"))


@pytest.mark.parametrize("dtype, width", [(np.float64, 2), (np.float64, 4), (np.float64, 16), (np.float32, 4),
                                          (np.float32, 8)], ids=str)
@pytest.mark.parametrize("name", ["sin", "log", "tanh", "erfc"])
def test_other_widths_give_the_same_bits(name, dtype, width):
    """Lanes mixing the fast path and the libm fallback (inf, NaN, huge) in every position."""
    with np.errstate(over="ignore"):
        x = np.concatenate([_dense_samples(name, dtype, n=200, seed=2), SPECIAL.astype(dtype)])
    x = np.random.default_rng(3).permutation(x)
    assert np.array_equal(evaluate(name, x, width=width).view(f"u{x.itemsize}"),
                          evaluate(name, x, vector=False).view(f"u{x.itemsize}"))


def _atan2_samples(dtype, n=20_000, seed=4):
    """(y, x): log-uniform over the whole range and near 1, uniform in [-1, 1], ratios near the reduction bounds."""
    rng = np.random.default_rng(seed)
    info = np.finfo(dtype)

    def log_uniform(low, high):
        return np.exp(rng.uniform(math.log(low), math.log(high), n)) * rng.choice([-1.0, 1.0], n)

    tiny, huge = float(info.smallest_subnormal), float(info.max)
    y = [log_uniform(tiny, huge), log_uniform(1e-3, 1e3), rng.uniform(-1, 1, n)]
    x = [log_uniform(tiny, huge), log_uniform(1e-3, 1e3), rng.uniform(-1, 1, n)]
    bounds = rng.choice([7 / 16, 11 / 16, 19 / 16, 39 / 16, 0.5, 1.0, 1.5], n) * (1 + rng.uniform(-1e-6, 1e-6, n))
    x_near = log_uniform(1e-5, 1e5)
    y += [x_near * bounds * rng.choice([-1.0, 1.0], n), np.zeros(n)]
    x += [x_near, log_uniform(1e-5, 1e5)]
    return np.concatenate(y).astype(dtype), np.concatenate(x).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_atan2_within_2_ulp_of_longdouble_in_all_quadrants(dtype):
    y, x = _atan2_samples(dtype)
    got = evaluate("atan2", y, x)
    ref = np.arctan2(y.astype(LD), x.astype(LD))
    error = ulp_error(got, ref, dtype)
    assert error.max() <= MAX_ULP, _report("atan2", dtype, list(zip(y, x)), got, ref, error)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_atan2_special_values_as_libm(dtype):
    """Every pair of special values: signed zeros, infinities, NaN, subnormals, huge ratios."""
    with np.errstate(over="ignore"):
        y, x = (grid.ravel().copy() for grid in np.meshgrid(SPECIAL.astype(dtype), SPECIAL.astype(dtype)))
    got = evaluate("atan2", y, x)
    with np.errstate(all="ignore"):
        ref = np.arctan2(y.astype(LD), x.astype(LD))
    error = ulp_error(got, ref, dtype)
    assert error.max() <= MAX_ULP, _report("atan2", dtype, list(zip(y, x)), got, ref, error)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_atan2_scalar_and_vector_paths_are_bit_identical(dtype):
    y, x = _atan2_samples(dtype, n=2000, seed=5)
    assert np.array_equal(evaluate("atan2", y, x).view(f"u{x.itemsize}"),
                          evaluate("atan2", y, x, vector=False).view(f"u{x.itemsize}"))


# --------------------------------------------------------------------------------------------
# pow: 2-D samples against mpmath, the C99 special cases.

def _pow_exact(x, y):
    """x^y exactly (mpmath at 160 bits) for finite x, y, with C99's signs, zeros, infinities and NaN."""
    if x == 0 or math.isinf(x) or math.isinf(y) or math.isnan(x) or math.isnan(y) or (x < 0 and y != int(y)):
        return mpmath.mpf(_c99_pow(x, y))
    with mpmath.workprec(160):
        value = mpmath.power(mpmath.mpf(abs(x)), mpmath.mpf(y))
        return -value if x < 0 and y % 2 == 1 else value


def _c99_pow(x, y):
    """pow(x, y) by C99 Annex F for the special cases (libm through math.pow, its domain and range errors as
    values)."""
    odd = math.isfinite(y) and y == int(y) and y % 2 == 1
    try:
        return math.pow(x, y)
    except ValueError:  # 0 to a negative power, or x < 0 to a non-integer
        if x == 0:
            return math.copysign(math.inf, x) if odd else math.inf
        return math.nan
    except OverflowError:
        return -math.inf if x < 0 and odd else math.inf


def _pow_reference(x, y):
    ref = _to_longdouble([_pow_exact(a, b) for a, b in zip(x.astype(np.float64).tolist(),
                                                           y.astype(np.float64).tolist())])
    zero = ref == 0  # the sign of a zero result: (-0)^odd, (-inf)^-odd, x < 0 underflowing with odd y
    ref[zero] = [_c99_pow(a, b) if a == 0 or math.isinf(a) else (
        -0.0 if a < 0 and math.isfinite(b) and b == int(b) and b % 2 == 1 else 0.0)
        for a, b in zip(x[zero].astype(np.float64).tolist(), y[zero].astype(np.float64).tolist())]
    return ref


def _pow_samples(dtype, n=6000, seed=7):
    """(x, y): x log-uniform over every magnitude (subnormals included), both signs; y integers, half-integers,
    huge, tiny, moderate, both signs; and y scaled so that y log|x| spans the range up to overflow and underflow
    (and a little beyond), x near 1 with large y."""
    rng = np.random.default_rng(seed)
    info = np.finfo(dtype)
    tiny, huge = float(info.smallest_subnormal), float(info.max)

    def sign():
        return rng.choice([-1.0, 1.0], n)

    x = np.exp(rng.uniform(math.log(tiny), math.log(huge), n)) * sign()
    log_x = np.log(np.abs(x))
    x_pos = np.abs(x)
    limit = math.log(huge) * 1.02
    y_range = rng.uniform(-limit, limit, n) / log_x  # results over the whole range
    y_edge = (rng.choice([math.log(huge), math.log(float(info.tiny)), math.log(tiny)], n)
              * (1 + rng.uniform(-2e-3, 2e-3, n))) / log_x  # near overflow, the subnormal and underflow limits
    y_int = np.round(rng.uniform(-40, 40, n))
    y_half = y_int + 0.5
    y_wild = np.exp(rng.uniform(math.log(1e-30), math.log(huge), n)) * sign()
    y_small = rng.uniform(-4, 4, n)
    near_one = np.exp(rng.uniform(-1, 1, n) * rng.choice([1e-14, 1e-9, 1e-5, 1e-2], n)) * sign()
    near_one[np.abs(near_one) == 1] *= 1 + 2.0**-52
    y_near_one = rng.uniform(-limit, limit, n) / np.log(np.abs(near_one))
    xs = [x_pos, x_pos, x, x, x, x, near_one, -x_pos]
    ys = [y_range, y_edge, y_int, y_half, y_wild, y_small, y_near_one, np.round(y_range)]
    with np.errstate(over="ignore"):
        x, y = np.concatenate(xs).astype(dtype), np.concatenate(ys).astype(dtype)
    keep = np.isfinite(x) & np.isfinite(y) & (x != 0)
    return x[keep], y[keep]


_POW_HARD = [(1 + 2.0**-52, 2.0**60), (1 - 2.0**-53, -2.0**61), (1 + 1e-10, 7.09e12), (1 - 1e-10, 7.45e12),
             (2.0, 1023.9999999), (2.0, 1024.0), (2.0, -1022.0), (2.0, -1022.5), (2.0, -1074.0), (2.0, -1074.9),
             (2.0, -1075.0), (2.0, -1076.0), (10.0, 308.25), (10.0, -307.6), (10.0, -323.5), (0.5, 1074.2),
             (-2.0, 1023.0), (-2.0, 1025.0), (-2.0, -1075.0), (-2.0, -1073.0), (-0.5, 1023.0), (-1.0000001, 1e9 + 1),
             (-1 - 2.0**-52, 2.0**53 + 2), (-1 - 2.0**-52, 2.0**53 - 1), (0.8944, 0.5), (0.8944272, 1000.0),
             (1.118, -2000.0), (1.118034, 3000.0), (math.sqrt(2), 2040.0), (math.sqrt(0.5), -2040.0),
             (2.2250738585072014e-308, 0.99), (2.2250738585072014e-308, -1.0), (1e-310, 0.5), (5e-324, 1.0 / 3),
             (5e-324, -0.5), (1.7976931348623157e308, 0.999), (1.7976931348623157e308, -1.0), (7.0, 1 / 3),
             (27.0, 1 / 3), (-8.0, 1 / 3), (1e300, 1.0 / 300), (9.0, 0.5), (2.0, 0.5), (3.0, 2.0), (1e22, 14.0),
             (123.456, -147.3), (0.999, 709000.0), (1.001, 709000.0), (1.001, -745000.0)]


def _pow_hard():
    x, y = (np.array(column) for column in zip(*_POW_HARD))
    with np.errstate(over="ignore"):
        near = [(np.nextafter(x, np.inf), y), (np.nextafter(x, -np.inf), y), (x, np.nextafter(y, np.inf)),
                (x, np.nextafter(y, -np.inf)), (x * (1 + 1e-12), y), (x, y * (1 - 1e-12))]
    return np.concatenate([x] + [a for a, _ in near]), np.concatenate([y] + [b for _, b in near])


_POW_SPECIAL = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, 0.5, -0.5, 2.0, -2.0, 3.0, -3.0, 1.5, -1.5,
                         0.25, 2.0**53, 2.0**53 + 2, -(2.0**53) - 2, 2.0**53 - 1, 1e300, -1e300, 5e-324, -5e-324,
                         1e-310, 2.2250738585072014e-308, 1.7976931348623157e308, -1.7976931348623157e308, 1075.0,
                         -1075.0, 710.0, -746.0, 0.3, 3.4028234663852886e38, 1.401298464324817e-45])
"""Every pair (x, y) of these covers the C99 special cases of pow (zeros, infinities, NaN, x = +-1, odd and even
integer, non-integer y, exponents beyond 2^53, overflow and underflow)."""


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_pow_dense_2d_samples_within_2_ulp_of_mpmath(dtype):
    x, y = _pow_samples(dtype)
    got = evaluate("pow", x, y)
    ref = _pow_reference(x, y)
    error = ulp_error(got, ref, dtype)
    assert error.max() <= MAX_ULP, _report("pow", dtype, list(zip(x, y)), got, ref, error)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_pow_hard_cases_within_2_ulp_of_mpmath(dtype):
    x, y = _pow_hard()
    with np.errstate(over="ignore"):
        x, y = x.astype(dtype), y.astype(dtype)
    got = evaluate("pow", x, y)
    ref = _pow_reference(x, y)
    error = ulp_error(got, ref, dtype)
    assert error.max() <= MAX_ULP, _report("pow", dtype, list(zip(x, y)), got, ref, error)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_pow_special_values_as_c99(dtype):
    """Every pair of special values: C99's exact value (signed zeros, infinities, NaN, 1), within 2 ulp if finite."""
    with np.errstate(over="ignore"):
        y, x = (grid.ravel().copy() for grid in np.meshgrid(_POW_SPECIAL.astype(dtype), _POW_SPECIAL.astype(dtype)))
    got = evaluate("pow", x, y)
    ref = _pow_reference(x, y)
    error = ulp_error(got, ref, dtype)
    assert error.max() <= MAX_ULP, _report("pow", dtype, list(zip(x, y)), got, ref, error)
    special = np.isnan(ref) | np.isinf(ref) | (ref == 0) | (ref == 1)
    assert np.array_equal(got[special].astype(np.float64), ref[special].astype(np.float64), equal_nan=True)
    signed = special & ~np.isnan(ref)
    assert np.array_equal(np.signbit(got[signed]), np.signbit(ref[signed]))


@pytest.mark.parametrize("x, y, expected", [
    (0.0, -3.0, math.inf), (-0.0, -3.0, -math.inf), (-0.0, -2.0, math.inf), (-0.0, -0.5, math.inf),
    (-0.0, -math.inf, math.inf), (0.0, 3.0, 0.0), (-0.0, 3.0, -0.0), (-0.0, 2.0, 0.0), (-0.0, 0.5, 0.0),
    (-1.0, math.inf, 1.0), (-1.0, -math.inf, 1.0), (1.0, math.nan, 1.0), (1.0, -math.inf, 1.0),
    (math.nan, 0.0, 1.0), (math.nan, -0.0, 1.0), (math.inf, 0.0, 1.0), (-2.0, 0.5, math.nan),
    (-8.0, 1 / 3, math.nan), (0.5, -math.inf, math.inf), (-0.5, -math.inf, math.inf), (2.0, -math.inf, 0.0),
    (0.5, math.inf, 0.0), (-2.0, math.inf, math.inf), (-math.inf, -3.0, -0.0), (-math.inf, -2.0, 0.0),
    (-math.inf, -0.5, 0.0), (-math.inf, 3.0, -math.inf), (-math.inf, 2.0, math.inf), (-math.inf, 0.5, math.inf),
    (math.inf, -1.0, 0.0), (math.inf, 0.5, math.inf), (math.nan, 1.0, math.nan), (2.0, math.nan, math.nan),
    (-2.0, 3.0, -8.0), (-2.0, -3.0, -0.125), (-2.0, 2.0, 4.0), (-3.0, 1025.0, -math.inf),
    (-3.0, 1024.0, math.inf), (-3.0, -1025.0, -0.0), (-3.0, -1024.0, 0.0), (10.0, 400.0, math.inf),
    (10.0, -400.0, 0.0), (2.0, 1e300, math.inf), (-2.0, 1e300, math.inf), (0.5, 1e300, 0.0), (-0.5, 1e300, 0.0),
    (-2.0, 2.0**53 + 2, math.inf), (-(2.0**-60), 2.0**60 + 1, 0.0), (4.0, 0.5, 2.0), (1e-310, 0.0, 1.0)])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_pow_special_case_exactly(x, y, expected, dtype):
    n = WIDTHS[dtype] + 1  # the vector path and the scalar tail
    with np.errstate(over="ignore", under="ignore"):
        got = evaluate("pow", np.full(n, x, dtype=dtype), np.full(n, y, dtype=dtype))
        expected = dtype(expected)
    for value in got:
        assert (np.isnan(value) and np.isnan(expected)) or (
            value == expected and np.signbit(value) == np.signbit(expected)), (x, y, got)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_pow_scalar_and_vector_paths_are_bit_identical(dtype):
    x, y = _pow_samples(dtype, n=500, seed=8)
    with np.errstate(over="ignore"):
        sy, sx = (grid.ravel() for grid in np.meshgrid(_POW_SPECIAL.astype(dtype), _POW_SPECIAL.astype(dtype)))
    order = np.random.default_rng(9).permutation(x.size + sx.size)  # fast and libm lanes mixed in each vector
    x, y = np.concatenate([x, sx])[order], np.concatenate([y, sy])[order]
    for width in (None, 2, 4):
        assert np.array_equal(evaluate("pow", x, y, width=width).view(f"u{x.itemsize}"),
                              evaluate("pow", x, y, vector=False).view(f"u{x.itemsize}"))


def test_inlined_and_called_functions_give_the_same_bits(monkeypatch):
    x = np.concatenate([_dense_samples("sin", np.float64, n=500, seed=6), SPECIAL])
    called = evaluate("sin", x)
    monkeypatch.setattr(vecmath, "INLINE", not vecmath.INLINE)
    inlined = _kernel.__wrapped__("sin", 8)
    out = np.empty_like(x)
    inlined((x,), out, True)
    assert np.array_equal(out.view("u8"), called.view("u8"))


def test_each_function_is_built_once_per_module_and_declares_its_libm_fallback():
    module = ir.Module()
    vector = ir.VectorType(ir.DoubleType(), 8)
    function = ir.Function(module, ir.FunctionType(vector, [vector]), "f")
    builder = ir.IRBuilder(function.append_basic_block())
    first = vecmath.emit(builder, "sin", [function.args[0]])
    builder.ret(vecmath.emit(builder, "sin", [first]))
    text = str(module)
    assert text.count("define internal <8 x double> @\"gradcomp.vecmath.sin.v8f64\"") == 1
    assert "declare double @\"sin\"(double" in text or "declare double @sin(double" in text
    assert "llvm.vector.reduce.or.v8i1" in text


@pytest.mark.parametrize("name", sorted(vecmath.FUNCTIONS))
def test_ir_has_no_fast_math_flags(name):
    module = ir.Module()
    n_args = 2 if name in ("atan2", "pow") else 1
    for value_type in (ir.DoubleType(), ir.VectorType(ir.FloatType(), 16), ir.VectorType(ir.DoubleType(), 8)):
        function = ir.Function(module, ir.FunctionType(value_type, [value_type] * n_args), f"f{value_type}")
        builder = ir.IRBuilder(function.append_basic_block())
        builder.ret(vecmath.emit(builder, name, list(function.args)))
    text = str(module)
    for flag in (" fast ", " reassoc ", " nnan ", " ninf ", " nsz ", " arcp ", " contract ", " afn "):
        assert flag not in text


def test_module_imports_only_llvmlite_and_the_standard_library():
    """gradcomp export copies vecmath's source into standalone modules."""
    tree = ast.parse(pathlib.Path(vecmath.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports"
            imported.add(node.module.split(".")[0])
    assert imported <= {"llvmlite", "math"}, imported


# --------------------------------------------------------------------------------------------
# Native float32: a sweep of the whole float32 domain (every 509th bit pattern: all binades, both
# signs, subnormals, infinities and NaNs), against numpy's float64 function (within about 1 ulp of
# double: 2^-29 ulp of float).

NATIVE32 = {"exp": np.exp, "expm1": np.expm1, "log": np.log, "log1p": np.log1p, "sin": np.sin, "cos": np.cos,
            "tanh": np.tanh, "sinh": np.sinh, "cosh": np.cosh}
MEASURED32 = {"exp": 0.75, "expm1": 1.30, "log": 0.83, "log1p": 0.90, "sin": 0.89, "cos": 0.86, "tanh": 0.96,
              "sinh": 0.84, "cosh": 0.80}
"""Max error in float32 ulps measured (offline) on every 7th float32 bit pattern, rounded up."""


def test_native_float32_functions_are_the_float_builders():
    assert set(vecmath._BUILDERS32) == set(NATIVE32)


@pytest.mark.parametrize("name", sorted(NATIVE32))
def test_float32_sweep_of_every_509th_float_within_2_ulp(name):
    x = np.arange(0, 2**32, 509, dtype=np.uint64).astype(np.uint32).view(np.float32)
    got = evaluate(name, x)
    with np.errstate(all="ignore"):
        ref = NATIVE32[name](x.astype(np.float64))
    error = ulp_error(got, ref, np.float32)
    i = int(np.argmax(error))
    assert error[i] <= MAX_ULP, (f"{name} float32: {error[i]:.3f} ulp at x = {x[i]!r}: got {got[i]!r}, "
                                 f"reference {ref[i]!r} (measured max {MEASURED32[name]} ulp)")
    assert error[i] <= MEASURED32[name] + 0.01, f"{name} float32: {error[i]:.3f} ulp, measured max {MEASURED32[name]}"
