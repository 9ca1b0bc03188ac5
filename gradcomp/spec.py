"""Stage 1: what the user wrote -> a Signature.

Arguments and outputs are flattened in C order; shapes are kept beside them.
Everything here is checked with clear errors: this is where user input enters.
"""

from __future__ import annotations

import importlib
import json
import numbers
import operator
import re
from dataclasses import dataclass
from math import prod

import sympy as sp
from sympy.core.function import AppliedUndef
from sympy.matrices.expressions.matexpr import MatrixElement
from sympy.tensor.array import NDimArray

from .errors import CompileError

DTYPES = ("float64", "float32")


@dataclass(frozen=True)
class Argument:
    """One kernel argument: its display name, core shape and flat leaves."""

    name: str
    shape: tuple[int, ...]
    leaves: tuple  # Symbols, or MatrixElements of a MatrixSymbol, in C order

    @property
    def size(self) -> int:
        return prod(self.shape)


@dataclass(frozen=True)
class Signature:
    """Everything the later stages need to know about the user's function."""

    name: str | None
    arguments: tuple[Argument, ...]
    out_shape: tuple[int, ...]
    outputs: tuple  # flat SymPy expressions, C order
    wrt: tuple[int, ...]
    dtype: str

    def __str__(self) -> str:
        args = ", ".join(f"{a.name}: {a.shape}" for a in self.arguments)
        wrt = ", ".join(self.arguments[i].name for i in self.wrt)
        return f"{self.name or 'kernel'}({args}) -> {self.out_shape} [{self.dtype}], wrt ({wrt})"


def make_signature(outputs, args, wrt=None, name=None, dtype="float64", arg_names=None) -> Signature:
    if dtype not in DTYPES:
        raise CompileError(f"dtype={dtype!r} is not supported; use one of {DTYPES}.")
    if name is not None and (not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]{1,100}", name)):
        raise CompileError(
            f"name={name!r} is not a valid kernel name; use letters, digits, '_', '-' or '.' (at most 100).")
    if isinstance(args, (sp.Basic, str)) or not hasattr(args, "__iter__"):
        raise CompileError(
            f"args must be a sequence of arguments, got {type(args).__name__}: "
            f"write [x] for one scalar argument x, [[x1, x2]] for one vector argument.")
    out_shape, flat_outputs = _outputs(outputs)
    stand_ins = _stand_ins(args, flat_outputs)
    if stand_ins:
        args, flat_outputs, arg_names = _replace_functions(args, flat_outputs, stand_ins, arg_names)
    arguments = tuple(_argument(item, i, arg_names) for i, item in enumerate(args))
    if not arguments:
        raise CompileError(
            f"args={args!r} gives the kernel no arguments: a function of nothing has nothing to differentiate "
            f"and no batch to run over (outputs {outputs!r}). Pass the symbols it is a function of, e.g. "
            f"gc.compile(outputs, [x]); a constant output may ignore its arguments.")
    _check_unique_leaves(arguments)
    return Signature(name, arguments, out_shape, flat_outputs, _wrt(wrt, arguments), dtype)


# -- functions of time as arguments (sympy.physics.mechanics' dynamicsymbols), as lambdify takes them ----------

def _leaves(item) -> list:
    """An argument's leaves as given, before any check (those come in ``_argument``)."""
    if isinstance(item, (list, tuple)):
        return [leaf for sub in item for leaf in _leaves(sub)]
    if isinstance(item, sp.MatrixBase):
        return list(item)
    if isinstance(item, NDimArray):
        return _leaves(item.tolist())
    return [item]


def _is_function_leaf(leaf) -> bool:
    """``q0(t)``, or a derivative of one in its own variables (``q0(t).diff(t)``, ``.diff(t, 2)``)."""
    if isinstance(leaf, AppliedUndef):
        return True
    return isinstance(leaf, sp.Derivative) and isinstance(leaf.expr, AppliedUndef)


def _stand_ins(args, flat_outputs) -> dict:
    """Each function leaf of the arguments -> the Symbol that stands for it: named after the function
    (``q0``; ``q0_dot``, ``q0_ddot`` for its first and second time derivatives), made unique against
    every name the user's symbols use, so that no stand-in can equal a symbol of the user's."""
    if isinstance(args, (sp.Basic, str)) or not hasattr(args, "__iter__"):
        return {}
    leaves = [leaf for item in args for leaf in _leaves(item) if _is_function_leaf(leaf)]
    if not leaves:
        return {}
    roots = [*flat_outputs, *(leaf for item in args for leaf in _leaves(item) if isinstance(leaf, sp.Basic))]
    taken = {s.name for s in postorder(roots) if isinstance(s, sp.Symbol)}  # the DAG once, not free_symbols' tree
    stand_ins: dict = {}
    for leaf in leaves:
        if leaf in stand_ins:
            continue  # repeated: _check_unique_leaves names it
        if isinstance(leaf, AppliedUndef):
            name = leaf.func.__name__
        else:
            function, counts = leaf.expr, leaf.variable_count
            if len(counts) == 1 and counts[0][1] <= 3:
                name = f"{function.func.__name__}_{'d' * counts[0][1]}ot"
            else:
                name = f"{function.func.__name__}_d_" + "_".join(f"{v}{k}" for v, k in counts)
        name = re.sub(r"\W", "_", name)
        while name in taken:
            name += "_"
        taken.add(name)
        stand_ins[leaf] = sp.Symbol(name)
    return stand_ins


def _replace_functions(args, flat_outputs, stand_ins: dict, arg_names):
    """The arguments and outputs with each function leaf replaced by its stand-in Symbol; a scalar argument
    that is a function is named after it.  A derivative of a function in the outputs that no argument
    holds is an error: replacing the function inside it would make it 0."""
    outputs = _substitute(flat_outputs, stand_ins)
    replaced, names = [], []
    for index, item in enumerate(args):
        if isinstance(item, sp.Basic) and item in stand_ins:
            names.append(arg_names[index] if arg_names else stand_ins[item].name)
        else:
            names.append(arg_names[index] if arg_names else None)
        replaced.append(_replace_leaves(item, stand_ins))
    return replaced, outputs, names


def _substitute(flat_outputs, stand_ins: dict) -> tuple:
    """``xreplace`` over the outputs' DAG, each node once (xreplace and atoms walk the tree: 2.1 s on the
    10-link pendulum's forcing), refusing a function or a derivative of one that no argument holds."""
    new: dict = {}
    holds_function: dict = {}
    for node in postorder(flat_outputs, lambda e: e in stand_ins or not e.args):
        if node in stand_ins:  # a function an argument holds: fine here, not inside an unlisted derivative
            new[node], holds_function[node] = stand_ins[node], True
            continue
        args = [new[a] for a in node.args]
        holds_function[node] = isinstance(node, AppliedUndef) or any(holds_function[a] for a in node.args)
        if holds_function[node] and isinstance(node, (sp.Derivative, AppliedUndef)):
            kind = "derivative" if isinstance(node, sp.Derivative) else "function"
            raise CompileError(
                f"the outputs contain {node}, a {kind} that is in no argument; add it to the arguments "
                f"(as lambdify takes it) or substitute it.")
        new[node] = node if all(a is b for a, b in zip(args, node.args)) else node.func(*args)
    return tuple(new[output] for output in flat_outputs)


def _replace_leaves(item, stand_ins: dict):
    if isinstance(item, (list, tuple)):
        return type(item)(_replace_leaves(sub, stand_ins) for sub in item)
    if isinstance(item, (sp.MatrixBase, NDimArray)):
        return item.applyfunc(lambda leaf: stand_ins.get(leaf, leaf))
    return stand_ins.get(item, item) if isinstance(item, sp.Basic) else item


def _argument(item, index, arg_names) -> Argument:
    name = arg_names[index] if arg_names else None  # None entries: the argument's own name
    if isinstance(item, sp.MatrixSymbol):
        rows, cols = (int(n) for n in item.shape)
        leaves = tuple(item[r, c] for r in range(rows) for c in range(cols))
        return Argument(name or str(item.name), (rows, cols), leaves)
    if isinstance(item, sp.Symbol):
        return Argument(name or item.name, (), (item,))
    if isinstance(item, sp.MatrixBase):
        shape, flat = tuple(int(n) for n in item.shape), list(item)
    elif isinstance(item, NDimArray):
        shape, flat = tuple(item.shape), _flatten_nested(item.tolist(), f"argument {index}")[1]
    elif isinstance(item, (list, tuple)):
        shape, flat = _flatten_nested(item, f"argument {index}")
    else:
        raise CompileError(
            f"argument {index} is {item!r} ({type(item).__name__}); each argument must be a Symbol, "
            f"a (nested) list of Symbols, a Matrix or NDimArray of Symbols, or a MatrixSymbol.")
    for leaf in flat:
        if not isinstance(leaf, sp.Symbol):
            raise CompileError(f"argument {index} contains {leaf!r}, which is not a Symbol.")
    return Argument(name or f"arg{index}", shape, tuple(flat))


def _flatten_nested(item, what) -> tuple[tuple[int, ...], list]:
    """A nested list/tuple -> (shape, flat C-order list); ragged nesting is an error."""
    if not isinstance(item, (list, tuple)):
        return (), [item]
    if len(item) == 0:
        raise CompileError(f"{what} is an empty list; give at least one element.")
    parts = [_flatten_nested(sub, what) for sub in item]
    inner = {shape for shape, _ in parts}
    if len(inner) != 1:
        raise CompileError(f"{what} is ragged: its elements have shapes {sorted(inner)}.")
    return (len(item),) + parts[0][0], [leaf for _, flat in parts for leaf in flat]


def _outputs(outputs) -> tuple[tuple[int, ...], tuple]:
    if isinstance(outputs, sp.MatrixExpr) and not isinstance(outputs, sp.MatrixBase):
        outputs = outputs.as_explicit()
    if isinstance(outputs, sp.MatrixBase):
        shape, flat = tuple(int(n) for n in outputs.shape), list(outputs)
    elif isinstance(outputs, NDimArray):
        shape, flat = tuple(outputs.shape), _flatten_nested(outputs.tolist(), "outputs")[1]
    elif isinstance(outputs, (list, tuple)):
        shape, flat = _flatten_nested(outputs, "outputs")
    else:
        shape, flat = (), [outputs]
    exprs = []
    for item in flat:
        try:
            expr = sp.sympify(item, strict=True)
        except (sp.SympifyError, TypeError) as exc:
            raise CompileError(f"output {item!r} ({type(item).__name__}) is not a SymPy expression or number.") from exc
        if not isinstance(expr, sp.Expr):
            raise CompileError(f"output {expr!r} is a {type(expr).__name__}, not a numeric expression.")
        exprs.append(expr)
    return shape, tuple(exprs)


def _check_unique_leaves(arguments) -> None:
    seen: dict = {}
    for argument in arguments:
        for leaf in argument.leaves:
            if leaf in seen:
                raise CompileError(
                    f"symbol {leaf} appears in argument {seen[leaf]!r} and again in argument "
                    f"{argument.name!r}; each symbol may be one argument only.")
            seen[leaf] = argument.name
    matrix_names = {a.name for a in arguments if a.leaves and isinstance(a.leaves[0], MatrixElement)}
    for argument in arguments:
        for leaf in argument.leaves:
            if isinstance(leaf, sp.Symbol) and leaf.name in matrix_names:
                raise CompileError(f"symbol {leaf} has the same name as a MatrixSymbol argument; rename one.")


def _wrt(wrt, arguments) -> tuple[int, ...]:
    if wrt is None:
        return tuple(range(len(arguments)))
    if isinstance(wrt, (numbers.Integral, str)):
        wrt = (wrt,)
    names = [a.name for a in arguments]
    indices = []
    for item in wrt:
        if isinstance(item, str) and item in names:
            item = names.index(item)
        elif isinstance(item, numbers.Integral) and not isinstance(item, bool):
            item = operator.index(item)  # np.int64, sympy Integer, ...: a plain int
        if isinstance(item, bool) or not isinstance(item, int) or not -len(arguments) <= item < len(arguments):
            raise CompileError(
                f"wrt={tuple(wrt)!r} is invalid: {item!r} is not an argument index in "
                f"0..{len(arguments) - 1} (or an argument name among {names}).")
        indices.append(item % len(arguments))
    if len(set(indices)) != len(indices):
        raise CompileError(f"wrt={tuple(wrt)!r} names an argument twice.")
    if not indices:
        raise CompileError("wrt=() differentiates nothing; give at least one argument index.")
    return tuple(indices)


# -- the signature as text: a kernel carries it, so that methods derived later need no user code ---------

def postorder(roots, atomic=lambda expr: not expr.args):
    """Each distinct node of an expression DAG once, children first, left to right; iterative, so any
    depth, and linear in the DAG's size (a tree walk is the tree's size).  ``atomic`` nodes are not
    descended into."""
    seen: set = set()
    stack = [(r, False) for r in reversed(roots)]
    while stack:
        expr, expanded = stack.pop()
        if expr in seen:
            continue
        if not expanded and not atomic(expr):
            stack.append((expr, True))
            stack.extend((a, False) for a in reversed(expr.args) if a not in seen)
            continue
        seen.add(expr)
        yield expr


def dump_signature(signature: Signature) -> str:
    """The signature as JSON; outputs as their DAG, children first, each node once."""
    def atomic(expr):
        return not expr.args or isinstance(expr, MatrixElement)

    number: dict = {}
    nodes: list = []
    classes: dict[type, int] = {}
    for expr in postorder(signature.outputs, atomic):
        number[expr] = len(nodes)
        if atomic(expr):
            nodes.append(sp.srepr(expr))
        else:
            cls = classes.setdefault(type(expr), len(classes))
            nodes.append([cls] + [number[a] for a in expr.args])
    return json.dumps({
        "name": signature.name, "dtype": signature.dtype, "wrt": list(signature.wrt),
        "out_shape": list(signature.out_shape),
        "arguments": [[a.name, list(a.shape), [sp.srepr(leaf) for leaf in a.leaves]] for a in signature.arguments],
        "classes": [[cls.__module__, cls.__qualname__] for cls in classes],
        "nodes": nodes, "outputs": [number[r] for r in signature.outputs]})


def load_signature(text: str) -> Signature:
    """The inverse of ``dump_signature``."""
    data = json.loads(text)
    namespace: dict = {}
    exec("from sympy import *", namespace)  # srepr's names; srepr is written to be read back this way
    namespace.update(MatrixElement=MatrixElement, Str=sp.core.symbol.Str)
    classes = [_class(module, qualname) for module, qualname in data["classes"]]
    values: list = []
    for node in data["nodes"]:
        if isinstance(node, str):
            values.append(eval(node, namespace))  # noqa: S307 - text gradcomp itself wrote
        else:
            values.append(_rebuild(classes[node[0]], [values[k] for k in node[1:]]))
    arguments = tuple(Argument(name, tuple(shape), tuple(eval(leaf, namespace) for leaf in leaves))  # noqa: S307
                      for name, shape, leaves in data["arguments"])
    return Signature(data["name"], arguments, tuple(data["out_shape"]), tuple(values[k] for k in data["outputs"]),
                     tuple(data["wrt"]), data["dtype"])


def _rebuild(cls: type, args: list):
    """A node from its (already canonical) arguments, without SymPy's evaluation, which rescans subtrees."""
    try:
        return cls(*args, evaluate=False)
    except TypeError:  # a class without the keyword (ExprCondPair, ...)
        return cls(*args)


def _class(module: str, qualname: str) -> type:
    target = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    return target
