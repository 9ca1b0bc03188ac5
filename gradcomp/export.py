"""A kernel as one standalone module that needs only NumPy and Numba.

The generated source already is a module of Numba drivers plus ``META``; the
export puts the sources of ``gradcomp.ir`` (which builds the cores) and
``gradcomp.record`` (the type of ``META``) in place of their imports, and
appends the runtime's argument handling (``gradcomp.runtime`` with the dask
bridge it imports, or ``gradcomp.loops`` for an indexed kernel), each copied
from its source so that there is one implementation, without what needs the
rest of gradcomp, and a ``kernel`` object offering the same calls.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
from pathlib import Path

from . import arguments, drivers, ir, loops, loopsparse, numba_start, pace, record, runtime, vecmath
from .bridges import dask as dask_bridge
from .loops import LoopKernel
from .runtime import Kernel

CALLS = ("vjp", "value_and_vjp", "jvp", "jacobian", "grad", "value_and_grad", "hessian")
"""Module-level functions of the export besides ``kernel`` itself (``kernel(*xs)`` is the forward value)."""

_INLINED = {Kernel: {"from gradcomp.ir import block, block_lanes, core, lanes\n": ir,
                     "from gradcomp.record import KernelRecord, MethodRecord\n": record},
            LoopKernel: {"from gradcomp.ir import block, lanes\n": ir,
                         "from gradcomp.record import LoopRecord\n": record}}
"""Per kernel class: the generated module's imports of gradcomp -> the modules whose source the export puts in
their place."""
_RUNTIME = {Kernel: runtime, LoopKernel: loops}
"""Per kernel class: the module of its runtime, copied into the export."""
_EMBEDDED = {"vecmath": vecmath, "bridges.dask": dask_bridge, "drivers": drivers, "pace": pace, "record": record,
             "arguments": arguments, "loopsparse": loopsparse, "numba_start": numba_start}
"""Modules of gradcomp that a copied module imports (``from . import vecmath``, ``from .drivers import
Method``): the export builds each from its source, its own imports of gradcomp embedded likewise."""


def export_source(kernel: Kernel | LoopKernel) -> str:
    """The text of a standalone module offering ``kernel``'s calls, every method derived (it has no SymPy)."""
    kind = type(kernel)
    if kind is Kernel:
        kernel._derive(kernel.available_methods)  # an indexed kernel's module holds every method already
    taken = _defined_names(kernel.source) & {"kernel", *CALLS}
    if taken:
        raise ValueError(f"the generated source of {kernel!r} already defines {sorted(taken)}; "
                         f"it cannot be exported with those names.")
    aliases = "\n".join(f"{call} = kernel.{call}" for call in CALLS)
    source = kernel.source.rstrip()
    for line, module in _INLINED[kind].items():
        if line not in source:
            raise ValueError(f"the generated source of {kernel!r} does not import {module.__name__} as this "
                             f"gradcomp generates it; recompile the kernel with this version of gradcomp.")
        source = source.replace(line, f"# ---- {module.__name__} (copied) ----\n{_module_source(module)}\n", 1)
    return "\n".join([
        source,
        "",
        "",
        f"# ---- runtime: argument checks, broadcasting, dispatch (copied from {_RUNTIME[kind].__name__}) ----",
        "",
        _module_source(_RUNTIME[kind]),
        "",
        "",
        "def import_module(source, path, key):",
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
        f"kernel = {kind.__name__}(META, _own_source(), None)",
        '"""The kernel: kernel(*xs) is its value; kernel.vjp, kernel.jvp, ... as in gradcomp."""',
        aliases,
        "",
    ])


def write_export(kernel: Kernel | LoopKernel, path: str | Path) -> Path:
    """Write ``kernel`` as a standalone module at ``path``."""
    path = Path(path)
    if path.suffix != ".py" or not path.stem.isidentifier():
        raise ValueError(f"export to {str(path)!r}: the file name must be an importable module name ending "
                         f"in .py, e.g. kernel_module.py.")
    path.write_text(export_source(kernel))
    return path


def _module_source(module) -> str:
    """A module of gradcomp's without its docstring, future import and imports from the rest of gradcomp."""
    source = inspect.getsource(module)
    tree = ast.parse(source)
    kept = []
    for node in tree.body:
        if _is_docstring(node) or (isinstance(node, ast.ImportFrom) and node.module == "__future__"):
            continue
        node = _WithoutGradcomp().visit(node)
        if node is not None:
            kept.append(node)
    text = ast.unparse(ast.Module(body=kept, type_ignores=[]))
    return text if "\nimport sys\n" in f"\n{text}" else "import sys\n" + text


class _WithoutGradcomp(ast.NodeTransformer):
    """``from .bridges.torch import ...`` (reaching into gradcomp) -> raise ImportError: the export lacks it."""

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.AST | list[ast.AST] | None:
        if not node.level:
            return node
        if node.module is None and all(alias.name in _EMBEDDED and alias.asname is None for alias in node.names):
            return [statement for alias in node.names for statement in _embedded(alias.name)]
        if node.module in _EMBEDDED:
            module_name = "_" + node.module.replace(".", "_")
            names = "\n".join(f"{alias.asname or alias.name} = {module_name}.{alias.name}" for alias in node.names)
            return _embedded(node.module, module_name) + ast.parse(names).body
        if f"gradcomp.{node.module}" in {module.__name__ for lines in _INLINED.values() for module in lines.values()}:
            return None  # the export holds that module's source itself
        message = f"this needs gradcomp (gradcomp.{node.module}), which an exported kernel module does without"
        return ast.copy_location(ast.parse(f"raise ImportError({message!r})").body[0], node)


def _embedded(name: str, variable: str | None = None) -> list[ast.stmt]:
    """Statements that make ``variable`` (default: ``name``) the module object built from the source of
    ``gradcomp.<name>``: built once per process (kept in ``sys.modules`` under a name holding its source's
    hash), so every module of the export that imports it shares one copy, its locks included."""
    variable = variable or name
    source = ast.unparse(_WithoutGradcomp().visit(ast.parse(inspect.getsource(_EMBEDDED[name]))))
    key = f"gradcomp_export_{name.replace('.', '_')}_{hashlib.sha256(source.encode()).hexdigest()[:16]}"
    return ast.parse(
        f"import sys as _sys, types as _types\n"
        f"if {key!r} not in _sys.modules:\n"
        f"    _module = _types.ModuleType({key!r})\n"
        f"    exec(compile({source!r}, 'gradcomp.{name} (copied)', 'exec'), _module.__dict__)\n"
        f"    _sys.modules[{key!r}] = _module\n"
        f"{variable} = _sys.modules[{key!r}]").body


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
