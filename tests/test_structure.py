"""The package's structure: every import, lazy ones inside functions included, points down the pipeline."""

import ast
from pathlib import Path

import gradcomp

PACKAGE = Path(gradcomp.__file__).parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Module -> the modules of gradcomp it imports anywhere in its text; and -> 'sympy' where it does."""
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    target = f"{base}.{node.module}" if node.module else base
                else:
                    target = node.module
                submodules = {f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in modules}
                found |= submodules or {target}  # ``from . import drivers`` imports drivers, not the package
        graph[name] = {t for t in found if t in modules and t != name} | {"sympy" for t in found
                                                                          if t.split(".")[0] == "sympy"}
    return graph


def _reachable(graph, start: str) -> set[str]:
    seen, stack = set(), [start]
    while stack:
        for target in graph.get(stack.pop(), ()):
            if target not in seen:
                seen.add(target)
                stack.append(target)
    return seen


def test_no_module_of_gradcomp_imports_one_that_imports_it_back():
    graph = _imports()
    circles = sorted(name for name in graph if name in _reachable(graph, name))
    assert circles == [], f"modules on an import circle: {circles}"


def test_calling_a_loaded_kernel_needs_neither_the_compiler_nor_the_cache_nor_sympy():
    needed = _reachable(_imports(), "gradcomp.runtime")
    assert not needed & {"gradcomp.compiler", "gradcomp.build", "gradcomp.cache", "sympy"}, sorted(needed)
