"""A kernel as one standalone module that needs only NumPy and Numba.

The generated source already is a module of Numba drivers plus ``META``; the
export appends the runtime's argument handling (``gradcomp.runtime``, copied
from its source so that there is one implementation) without what needs the
rest of gradcomp, and a ``kernel`` object offering the same calls.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from . import runtime
from .runtime import Kernel

CALLS = ("vjp", "value_and_vjp", "jvp", "jacobian", "grad", "value_and_grad", "hessian")
"""Module-level functions of the export besides ``kernel`` itself (``kernel(*xs)`` is the forward value)."""

_OMITTED_FUNCTIONS = {"import_module"}  # replaced: the export's drivers live in the export itself


def export_source(kernel: Kernel) -> str:
    """The text of a standalone module offering ``kernel``'s calls."""
    taken = _defined_names(kernel.source) & {"kernel", *CALLS}
    if taken:
        raise ValueError(f"the generated source of {kernel!r} already defines {sorted(taken)}; "
                         f"it cannot be exported with those names.")
    aliases = "\n".join(f"{call} = kernel.{call}" for call in CALLS)
    return "\n".join([
        kernel.source.rstrip(),
        "",
        "",
        "# ---- runtime: argument checks, broadcasting, dispatch (copied from gradcomp.runtime) ----",
        "",
        _runtime_source(),
        "",
        "",
        "def import_module(source, path):",
        '    """The drivers are in this very module."""',
        "    return sys.modules[__name__]",
        "",
        "",
        "def _own_source():",
        "    if '__file__' not in globals():",
        "        return ''",
        "    with open(__file__) as handle:",
        "        return handle.read()",
        "",
        "",
        "kernel = Kernel(META, _own_source(), None)",
        '"""The kernel: kernel(*xs) is its value; kernel.vjp, kernel.jvp, ... as in gradcomp."""',
        aliases,
        "",
    ])


def write_export(kernel: Kernel, path: str | Path) -> Path:
    """Write ``kernel`` as a standalone module at ``path``."""
    path = Path(path)
    if path.suffix != ".py" or not path.stem.isidentifier():
        raise ValueError(f"export to {str(path)!r}: the file name must be an importable module name ending "
                         f"in .py, e.g. kernel_module.py.")
    path.write_text(export_source(kernel))
    return path


def _runtime_source() -> str:
    """gradcomp.runtime without its docstring, future import and imports from the rest of gradcomp."""
    source = inspect.getsource(runtime)
    tree = ast.parse(source)
    kept = []
    for node in tree.body:
        if _is_docstring(node) or (isinstance(node, ast.ImportFrom) and node.module == "__future__"):
            continue
        if isinstance(node, ast.FunctionDef) and node.name in _OMITTED_FUNCTIONS:
            continue
        kept.append(_WithoutGradcomp().visit(node))
    text = ast.unparse(ast.Module(body=kept, type_ignores=[]))
    return text if "\nimport sys\n" in f"\n{text}" else "import sys\n" + text


class _WithoutGradcomp(ast.NodeTransformer):
    """``from .bridges.torch import ...`` (reaching into gradcomp) -> raise ImportError: the export lacks it."""

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.AST:
        if not node.level:
            return node
        message = f"this needs gradcomp (gradcomp.{node.module}), which an exported kernel module does without"
        return ast.copy_location(ast.parse(f"raise ImportError({message!r})").body[0], node)


def _is_docstring(node: ast.AST) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def _defined_names(source: str) -> set[str]:
    names = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {target.id for target in node.targets if isinstance(target, ast.Name)}
    return names
