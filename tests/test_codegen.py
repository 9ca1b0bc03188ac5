"""The generated module: readable, counted, split where long."""

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


@pytest.fixture(scope="module")
def rich_source():
    x, y = sp.symbols("x y")
    outputs = [sp.Piecewise((x**5 / y, x > 1e-5), (-2.5e-7 * x - sp.sqrt(y), True)), sp.Max(x, y) ** sp.Rational(3, 2),
               sp.Heaviside(x) * sp.atan2(y, x) - 3 * x**-2, sp.loggamma(x + 1) * sp.exp(-y)]
    return gc.compile(outputs, [x, y], cache=False).source


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_operation_count_agrees_with_the_syntax_tree(dtype):
    x, y = sp.symbols("x y")
    outputs = [sp.Piecewise((x**5 / y, x > 1e-5), (-2.5e-7 * x - sp.sqrt(y), True)), sp.Max(x, y) ** 1.5,
               sp.Heaviside(x) * sp.atan2(y, x) - 3 * x**-2, sp.exp(-y) * sp.cos(x) ** 2]
    source = gc.compile(outputs, [x, y], cache=False, dtype=dtype).source
    statements = [line.strip() for line in source.splitlines()
                  if line.startswith("    ") and " = " in line and "[" not in line and "return" not in line]
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
    assert {"vjp_core", "vjp_serial", "vjp_parallel", "forward_core"} <= set(functions)
    assert all(";" not in line for line in rich_source.splitlines() if not line.lstrip().startswith("#"))


def test_integer_powers_print_as_multiplications():
    x = sp.Symbol("x")
    source = gc.compile(x**5 + x**-3, [x], cache=False).source
    assert "**" not in source.split("def forward_core")[1].split("def forward_serial")[0]


def test_adjoints_are_named_after_what_they_differentiate():
    x1, x2 = sp.symbols("x1 x2")
    source = gc.compile(sp.sin(x1) * x2, [x1, x2], cache=False).source
    assert "x1_bar = " in source and "x2_bar = " in source


def test_long_programs_are_split_into_chained_parts_with_the_same_results(monkeypatch):
    x = sp.symbols("x0:4")
    expr = x[0]
    for k in range(40):
        expr = sp.sin(expr) * x[(k + 1) % 4] + sp.cos(x[k % 4])
    whole = gc.compile(expr, [list(x)], cache=False)
    monkeypatch.setattr(codegen, "PART_STATEMENTS", 25)
    split = gc.compile(expr, [list(x)], cache=False)
    assert "vjp_part1" in split.source and "vjp_part1" not in whole.source
    point = np.array([0.3, -0.2, 0.5, 0.9])
    np.testing.assert_array_equal(split.grad(point), whole.grad(point))
