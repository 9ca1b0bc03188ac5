"""Golden files of the generated artifact: every change to code generation shows up as a reviewable diff.

After an intended change, rewrite the files and review them with git diff:

    GRADCOMP_UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py
"""

import difflib
import os
import re
from pathlib import Path

import pytest
import sympy as sp

from gradcomp.codegen import generate
from gradcomp.derive import available_methods, derive
from gradcomp.ir import ir_text
from gradcomp.spec import make_signature

GOLDEN = Path(__file__).with_name("golden")
UPDATE = os.environ.get("GRADCOMP_UPDATE_GOLDEN", "") not in ("", "0")


def _seed():
    x1, x2, x3 = sp.symbols("x1 x2 x3")
    return make_signature([x1 * x2 * x3, x1 + x2 + x3, x1 + x2 * x3], [[x1, x2, x3]], name="seed")


def _rosenbrock():
    x = sp.symbols("x0:4")
    return make_signature(sum(100 * (x[i + 1] - x[i] ** 2) ** 2 + (1 - x[i]) ** 2 for i in range(3)), [list(x)],
                          name="rosenbrock4")


def _branches_float32():
    a, b = sp.symbols("a b")
    return make_signature([sp.Piecewise((sp.sqrt(a), a > 0), (b**2, True)) * sp.Max(a, b), sp.tanh(a * b)],
                          [a, b], name="branches", dtype="float32")


def _functions():
    x, n = sp.symbols("x n")
    return make_signature(sp.atan2(sp.exp(-x), sp.log(1 + x**2)) + sp.Abs(sp.sin(x)) ** 7 - sp.erf(x) * x**-3,
                          [x, n], wrt=[0], name="functions")


KERNELS = {"seed": _seed, "rosenbrock4": _rosenbrock, "branches_float32": _branches_float32, "functions": _functions}


def _artifact(signature) -> str:
    """The whole generated module, every method derived, under a fixed key (the real key hashes versions)."""
    return generate(derive(signature, available_methods(signature)), "golden").source


def _check(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_text(text)
        return
    expected = path.read_text() if path.exists() else ""
    if text != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True), str(path), "generated",
                                            n=1))
        pytest.fail(f"generated code differs from {path.name}; if intended, run "
                    f"GRADCOMP_UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py and review the diff:\n"
                    f"{diff[:6000]}")


@pytest.mark.parametrize("name", KERNELS)
def test_generated_module_matches_its_golden_file(name):
    _check(f"{name}.py.txt", _artifact(KERNELS[name]()))


def test_ir_of_the_seed_vjp_matches_its_golden_file():
    code = re.search(r'^vjp_CODE = """(.*?)"""$', _artifact(_seed()), re.S | re.M).group(1)
    _check("seed_vjp.ll.txt", ir_text("vjp", code, "float64"))
