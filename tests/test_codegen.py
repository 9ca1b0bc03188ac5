"""The generated module: readable listings, counted operations, instructions that compute them."""

import ast

import numpy as np
import pytest
import sympy as sp

import gradcomp as gc
from gradcomp import codegen


def ast_count(statement: str) -> int:
    """The oracle for op counts: walk the statement's syntax tree."""
    total = 0
    for node in ast.walk(ast.parse(statement)):
        if isinstance(node, (ast.BinOp, ast.IfExp)) or (
                isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.Not))):
            total += 1
        elif isinstance(node, ast.Compare):
            total += len(node.ops)
        elif isinstance(node, ast.BoolOp):
            total += len(node.values) - 1
        elif isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id == "f32"):
            total += 1
    return total


def listing_statements(source: str) -> list[str]:
    """The assignments of every method's listing (comment lines ``#   name = expression``)."""
    return [line[len("#   "):] for line in source.splitlines()
            if line.startswith("#   ") and " = " in line and not line.startswith(("#   in ", "#   out "))]


@pytest.fixture(scope="module")
def rich_source():
    x, y = sp.symbols("x y")
    outputs = [sp.Piecewise((x**5 / y, x > 1e-5), (-2.5e-7 * x - sp.sqrt(y), True)), sp.Max(x, y) ** sp.Rational(3, 2),
               sp.Heaviside(x) * sp.atan2(y, x) - 3 * x**-2, sp.loggamma(x + 1) * sp.exp(-y)]
    return gc.compile(outputs, [x, y], cache=False).source


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_operation_count_agrees_with_the_syntax_tree(dtype):
    x, y = sp.symbols("x y")
    outputs = [sp.Piecewise((x**3 / y, x > 1e-5), (-2.5e-7 * x - sp.sqrt(y), True)), sp.Max(x, y) ** 1.5,
               sp.Heaviside(x) * sp.atan2(y, x) - 3 * x**-2, sp.exp(-y) * sp.cos(x) ** 2]
    statements = listing_statements(gc.compile(outputs, [x, y], cache=False, dtype=dtype).source)
    assert statements
    for statement in statements:
        assert codegen.count_operations([statement]) == ast_count(statement), statement


def test_header_says_what_is_computed_and_counts_operations(rich_source):
    header = rich_source.split('"""')[1]
    assert "Computes kernel(x: (), y: ())" in header
    for method in ("forward", "vjp", "value_and_vjp", "jvp", "jacobian"):
        assert method in header
    assert "operations" in header


def test_generated_module_is_valid_python_with_one_statement_per_line(rich_source):
    tree = ast.parse(rich_source)
    functions = [node.name for node in tree.body if isinstance(node, ast.FunctionDef)]
    assert {"vjp_point", "vjp_serial", "vjp_parallel", "forward_serial"} <= set(functions)
    assert all(";" not in line for line in rich_source.splitlines() if not line.lstrip().startswith("#"))


@pytest.mark.parametrize("n", [5, 37, 64])
def test_integer_powers_are_computed_by_squaring(n):
    x = sp.Symbol("x")
    forward = gc.compile(x**n, [x], cache=False).source.split('forward_CODE = """')[1]
    assert forward.split('"""')[0].count(" mul ") <= 2 * n.bit_length()


def test_a_huge_integer_power_compiles_to_one_pow_call_with_a_correctly_rounded_result():
    x = sp.Symbol("x")
    k = gc.compile(x**100001, [x], cache=False)
    forward = k.source.split('forward_CODE = """')[1].split('"""')[0]
    assert forward.count(" mul ") == 0 and forward.count("call pow") == 1
    assert k(1.0001) == pytest.approx(1.0001**100001, rel=1e-15)
    assert k.grad(1.0001) == pytest.approx(100001 * 1.0001**100000, rel=1e-15)


def test_adjoints_are_named_after_what_they_differentiate():
    x1, x2 = sp.symbols("x1 x2")
    source = gc.compile(sp.sin(x1) * x2, [x1, x2], cache=False).source
    assert "#   x1_bar = " in source and "#   x2_bar = " in source


def test_no_user_name_is_an_identifier_of_the_generated_code():
    x, y = sp.symbols("secret_name other_name")
    tree = ast.parse(gc.compile(sp.sin(x) * y, [x, y], cache=False).source)
    identifiers = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    identifiers |= {node.arg for node in ast.walk(tree) if isinstance(node, ast.arg)}
    identifiers |= {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
    assert "in0" in identifiers
    assert not {name for name in identifiers if "secret" in name or "other" in name}


def test_long_programs_compile_as_one_core_whose_gradient_matches_finite_differences():
    def build(x, sin, cos):
        value = x[0]
        for k in range(120):
            value = sin(value) * x[(k + 1) % 4] + cos(x[k % 4])
        return value

    x = sp.symbols("x0:4")
    kernel = gc.compile(build(x, sp.sin, sp.cos), [list(x)], cache=False)
    point = np.array([0.3, -0.2, 0.5, 0.9])
    assert kernel(point) == pytest.approx(build(point, np.sin, np.cos), rel=1e-12)
    gradient, step = kernel.grad(point), 1e-6
    for j, unit in enumerate(np.eye(4) * step):
        central = (kernel(point + unit) - kernel(point - unit)) / (2 * step)
        assert gradient[j] == pytest.approx(central, rel=1e-5, abs=1e-7)
