"""Every error of API.md, with its message: what went wrong and how to fix it."""

import numpy as np
import pytest
import sympy as sp

import gradcomp as gc

x, y, z = sp.symbols("x y z")


@pytest.fixture(scope="module")
def vector_kernel():
    a = sp.symbols("a0:3")
    return gc.compile([a[0] * a[1], a[2] * x], [list(a), x])


# -- compile time -----------------------------------------------------------

def test_free_symbol_missing_from_args_is_named():
    with pytest.raises(gc.CompileError, match=r"symbol\(s\) y .*not among the arguments"):
        gc.compile(x * y, [x])


def test_undefined_function_is_named():
    f = sp.Function("f")
    with pytest.raises(gc.CompileError, match=r"f\(x\) is an undefined function"):
        gc.compile(f(x) + 1, [x])


@pytest.mark.parametrize("unevaluated", [sp.Integral(x**2, x), sp.Derivative(sp.sin(x * y), x)],
                         ids=["Integral", "Derivative"])
def test_unevaluated_integral_or_derivative_is_named(unevaluated):
    with pytest.raises(gc.CompileError, match=type(unevaluated).__name__ + ".*unevaluated"):
        gc.compile(unevaluated, [x, y])


def test_function_without_numeric_implementation_is_named():
    with pytest.raises(gc.CompileError, match="besselj .*no numeric implementation"):
        gc.compile(sp.besselj(0, x), [x])


def test_complex_constants_are_rejected():
    with pytest.raises(gc.CompileError, match="complex"):
        gc.compile(sp.I * x, [x])


def test_duplicated_symbol_across_arguments_is_named():
    with pytest.raises(gc.CompileError, match="symbol x appears in argument 'x' and again in argument 'arg1'"):
        gc.compile(x * y, [x, [y, x]])


@pytest.mark.parametrize("wrt, message", [([2], r"2 is not an argument index in 0\.\.1"),
                                          ([0, 0], "names an argument twice"),
                                          ([], "differentiates nothing"),
                                          (["w"], "'w' is not an argument index"),
                                          ([True], "True is not an argument index"),
                                          ([1.0], r"1\.0 is not an argument index")])
def test_bad_wrt_is_explained(wrt, message):
    with pytest.raises(gc.CompileError, match=message):
        gc.compile(x * y, [x, y], wrt=wrt)


def test_a_constant_function_of_no_arguments_is_refused_at_compile_time():
    with pytest.raises(gc.CompileError, match=r"args=\[\] gives the kernel no arguments.*outputs 3.*Pass the symbols"):
        gc.compile(sp.Integer(3), [])


def test_argument_that_is_not_a_symbol_is_named():
    with pytest.raises(gc.CompileError, match=r"argument 0 contains x \+ 1, which is not a Symbol"):
        gc.compile(x, [[x + 1, y]])


def test_ragged_argument_is_rejected():
    with pytest.raises(gc.CompileError, match="ragged"):
        gc.compile(x, [[[x, y], [z]]])


def test_unknown_dtype_is_rejected():
    with pytest.raises(gc.CompileError, match="dtype='float16' is not supported"):
        gc.compile(x, [x], dtype="float16")


def test_outputs_must_be_numeric_expressions():
    with pytest.raises(gc.CompileError, match="not a numeric expression"):
        gc.compile(sp.Lt(x, 1), [x])


# -- call time --------------------------------------------------------------

def test_wrong_number_of_arguments_is_a_type_error(vector_kernel):
    with pytest.raises(TypeError, match=r"vjp\(\) takes 3 arguments \(arg0, x, v\), got 2"):
        vector_kernel.vjp([1, 2, 3], [1, 1])
    with pytest.raises(TypeError, match=r"__call__\(\) takes 2 arguments"):
        vector_kernel([1, 2, 3])


def test_shape_not_ending_in_the_core_shape_names_the_argument(vector_kernel):
    with pytest.raises(ValueError, match=r"argument 'arg0' has shape \(4,\), which does not end in its core "
                                         r"shape \(3,\); pass an array of shape \(\.\.\., 3\)"):
        vector_kernel([1, 2, 3, 4], 1.0)


def test_cotangent_of_the_wrong_shape_names_v(vector_kernel):
    with pytest.raises(ValueError, match=r"argument 'v' has shape \(3,\)"):
        vector_kernel.vjp([1, 2, 3], 1.0, [1, 2, 3])


def test_batch_shapes_that_do_not_broadcast_are_named(vector_kernel):
    with pytest.raises(ValueError, match=r"batch shapes do not broadcast: arg0 \(4,\), x \(5,\)"):
        vector_kernel(np.ones((4, 3)), np.ones(5))


@pytest.mark.parametrize("bad", ["abc", None, {"a": 1}, 1 + 2j], ids=["str", "None", "dict", "complex"])
def test_non_numeric_input_is_a_type_error(vector_kernel, bad):
    with pytest.raises(TypeError, match="argument 'x' must be real numbers"):
        vector_kernel([1, 2, 3], bad)


def test_ragged_list_input_names_the_argument(vector_kernel):
    with pytest.raises(ValueError, match=r"argument 'arg0' is not a rectangular array: \[\[1, 2, 3\], \[3\]\]"):
        vector_kernel([[1, 2, 3], [3]], 1.0)


@pytest.mark.parametrize("overlap", ["one array twice", "partly"])
def test_out_arrays_that_share_memory_are_refused(overlap):
    k = gc.compile(x * y, [x, y], cache=False)
    block, other = np.empty(7), np.empty(4)
    out = (block[:4], other, block[:4]) if overlap == "one array twice" else (block[:4], other, block[3:])
    with pytest.raises(ValueError, match=r"out arrays 0 \(.*\) and 2 \(.*\) share memory: each result needs its own"):
        k.value_and_vjp(np.ones(4), 2.0, 1.0, out=out)


def test_grad_of_a_vector_output_points_to_vjp(vector_kernel):
    with pytest.raises(ValueError, match=r"grad needs a scalar output; .* shape \(2,\)\. Use vjp"):
        vector_kernel.grad([1, 2, 3], 1.0)


def test_hessian_of_a_vector_output_is_explained(vector_kernel):
    with pytest.raises(ValueError, match="hessian.. needs a scalar output and one wrt argument"):
        vector_kernel.hessian([1, 2, 3], 1.0)


def test_jvp_with_several_wrt_arguments_needs_a_tuple(vector_kernel):
    with pytest.raises(TypeError, match="needs a tuple of 2 tangents"):
        vector_kernel.jvp([1, 2, 3], 1.0, [1, 0, 0])


def test_load_of_an_unknown_name_says_how_to_register_it():
    with pytest.raises(KeyError, match="no kernel named 'never_compiled'"):
        gc.load("never_compiled")

