"""Stage 1 for indexed models: SymPy's ``IndexedBase``/``Sum``/``Eq`` notation -> a ``LoopModel``.

A model of runtime size is a list of *stages*, each a loop nest over a domain of terms whose
body is a scalar function of the *slots* it reads (``x[i + 1]``, ``x[i]``, a scalar argument, an
earlier stage's result).  A stage either adds its terms into a target element (a ``Sum``:
``reduce``) or writes one element per term (an indexed output's equation: ``write``).  An inner
``Sum`` that is not the whole body of the ``Sum`` around it becomes a stage of its own, whose
result (a *temporary* indexed by the outer indices it depends on, only those) the outer body
reads as a slot: ``exp(x[i]) / Sum(exp(x[j]), j)`` computes its sum once, not once per ``i``.

Each body is differentiated by ``derive`` like any small kernel, as a function of its slots;
codegen runs it over the terms.  Index expressions are kept as Python text over the generated
names (``i0`` loop indices, ``N0`` sizes, ``A0`` arrays); the sparse Jacobians read the same
slot maps.  SymPy's own differentiation of ``Sum``/``Indexed`` is never used.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import sympy as sp

from .errors import CompileError


class ArraySpec(NamedTuple):
    """An argument: ``shape`` as Python expressions of the sizes (``()`` for a scalar)."""

    name: str
    shape: tuple[str, ...]
    integer: bool


class Slot(NamedTuple):
    """One value a body reads per term.

    ``source``: ``"A<k>"`` an argument, ``"T<k>"`` a temporary, ``"index"`` the value of a loop index
    or size expression (``flat``), ``"zero"`` nothing (a body that reads no slot)."""

    source: str
    flat: str
    """The flat (C order) position in the source, as Python text; for ``index`` the value."""
    axis: int = -1
    """The coordinate of ``flat`` that holds the stage's outermost loop index ``i``, as ``i + shift``
    (or ``Mod(i + shift, extent)`` when ``wrap``), the index in no other coordinate: terms of
    different rows ``i`` then touch rows of the source a fixed distance apart, and the drivers add
    their adjoints in place (by row bands) instead of into private copies.  -1: no such coordinate."""
    shift: int = 0
    wrap: bool = False
    coords: tuple[str, ...] = ()
    """Per axis of an argument's read, its index as Python text (``wrap(...)`` for Mod): what the
    transposed (gather) adjoint inverts; empty for temporaries and scalars."""


class Loop(NamedTuple):
    index: str
    lo: str
    hi: str
    """Inclusive, as SymPy's Sum; Python text over sizes and outer indices."""


class Check(NamedTuple):
    """An index that must lie in ``0 .. extent - 1``: which argument, which dimension, for errors."""

    array: str
    axis: int
    index: str
    extent: str
    gather: bool
    """Reads index data: checked at every term, not at the ends of the innermost loop."""


class Stage(NamedTuple):
    kind: str  # "reduce" or "write"
    target: str  # "Y" or "T<k>"
    position: str  # flat position in the target, Python text
    partitioned: bool
    """``position`` depends on the outermost loop index, so chunks of it own their target elements."""
    loops: tuple[Loop, ...]
    slots: tuple[Slot, ...]
    checks: tuple[Check, ...]
    body: str
    """The body as ``srepr`` of an expression of ``s0 .. s<K-1>``."""
    text: str
    """The term as the user wrote it, for the listing."""


class Temp(NamedTuple):
    name: str
    extents: tuple[str, ...]


class Piece(NamedTuple):
    """One equation of an indexed output: the box of elements it writes, per dimension (lo, hi)."""

    box: tuple[tuple[str, str], ...]
    text: str


class LoopModel(NamedTuple):
    name: str | None
    dtype: str
    arguments: tuple[ArraySpec, ...]
    sizes: tuple[str, ...]
    size_sources: tuple[tuple[int, int], ...]
    """Per size: (argument, axis) whose extent gives it."""
    wrt: tuple[int, ...]
    output: str
    out_shape: tuple[str, ...]
    pieces: tuple[Piece, ...]
    """Indexed outputs: what each equation writes (coverage is checked per call's sizes)."""
    temps: tuple[Temp, ...]
    stages: tuple[Stage, ...]
    names: tuple[tuple[str, str], ...]
    """Generated name -> the user's (sizes, loop indices, arguments), for messages and listings."""

    def user(self, text: str) -> str:
        """Generated names in ``text`` replaced by the user's."""
        names = dict(self.names)
        return re.sub(r"\b[NiA]\d+\b", lambda m: names.get(m.group(0), m.group(0)), text)

    def __str__(self) -> str:
        lines = [f"loop model {self.name or '(unnamed)'} -> {self.output}{list(self.out_shape)}"]
        lines += [f"  arg {a.name}{list(a.shape)}{' int' if a.integer else ''}" for a in self.arguments]
        for s in self.stages:
            loops = ", ".join(f"{lp.index} in {lp.lo}..{lp.hi}" for lp in s.loops)
            lines.append(f"  {s.kind} {s.target}[{s.position}] over ({loops}): {s.text}")
        return "\n".join(lines)


def is_indexed(outputs, args) -> bool:
    """Whether the model uses the indexed notation (then ``analyze`` compiles it, else the unrolled path)."""
    items = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    if any(isinstance(a, (sp.IndexedBase, sp.Indexed)) for a in args if isinstance(a, sp.Basic)):
        return True
    return any(isinstance(o, sp.Basic) and (isinstance(o, sp.Eq) or o.has(sp.Sum, sp.Indexed)) for o in items)


# -- the analysis ------------------------------------------------------------------------------------

_INDEX_TYPES = (sp.Integer, sp.Symbol, sp.Add, sp.Mul, sp.Mod, sp.Indexed)


class _Analysis:
    def __init__(self, args, wrt, name, dtype):
        self.bases: dict = {}  # IndexedBase or Symbol -> argument number
        self.specs: list[ArraySpec] = []
        self.sizes: dict = {}  # size Symbol -> generated name
        self.size_sources: dict = {}
        self.temps: list[Temp] = []
        self.stages: list[Stage] = []
        self.index_names: dict = {}
        self.temp_bases: dict = {}  # IndexedBase of a Dummy -> Temp
        self.temp_scalars: dict = {}  # Dummy -> temp name
        for k, arg in enumerate(args):
            self._argument(k, arg)
        self._shape_names = [[self.text(e) for e in self._shape_of(k)] for k in range(len(args))]
        self.specs = [spec._replace(shape=tuple(shape)) for spec, shape in zip(self.specs, self._shape_names)]
        for size in self.sizes:
            if size not in self.size_sources:
                raise CompileError(
                    f"the size {size} appears in a shape only inside an expression; give it alone as one "
                    f"argument's dimension (shape=({size}, ...)) so that calls can tell its value.")
        self.wrt = self._wrt(wrt, args)
        self.name, self.dtype = name, dtype

    # -- arguments
    def _argument(self, k, arg):
        if isinstance(arg, sp.IndexedBase):
            if arg.shape is None:
                raise CompileError(f"IndexedBase {arg} needs a shape: IndexedBase({str(arg)!r}, shape=(n,)).")
            integer = bool(arg.is_integer) or bool(getattr(arg.label, "is_integer", False))
            for axis, extent in enumerate(arg.shape):
                extent = sp.sympify(extent)
                if not extent.free_symbols and not (extent.is_Integer and extent >= 0):
                    raise CompileError(f"{arg}'s shape entry {extent} must be a non-negative integer or a size.")
                for size in extent.free_symbols:
                    self.sizes.setdefault(size, f"N{len(self.sizes)}")
                if extent.is_Symbol and extent not in self.size_sources:
                    self.size_sources[extent] = (k, axis)
            self.bases[arg] = k
            self.bases[arg.label] = k
            self.specs.append(ArraySpec(str(arg), (), integer))
        elif isinstance(arg, sp.Symbol):
            self.bases[arg] = k
            self.specs.append(ArraySpec(str(arg), (), bool(arg.is_integer)))
        else:
            raise CompileError(
                f"argument {k} of an indexed model must be an IndexedBase with a shape or a Symbol, got "
                f"{type(arg).__name__} {arg}.")

    def _shape_of(self, k):
        base = next(b for b, j in self.bases.items() if j == k)
        return tuple(sp.sympify(e) for e in base.shape) if isinstance(base, sp.IndexedBase) else ()

    def _wrt(self, wrt, args):
        if wrt is None:
            wrt = [k for k, s in enumerate(self.specs) if not s.integer]
        wrt = tuple(wrt)
        for k in wrt:
            if not isinstance(k, int) or not 0 <= k < len(args):
                raise CompileError(f"wrt entry {k!r} is not an argument index (0 .. {len(args) - 1}).")
            if self.specs[k].integer:
                raise CompileError(
                    f"argument {self.specs[k].name} holds integers (index data) and cannot be differentiated; "
                    f"leave it out of wrt.")
        if not wrt:
            raise CompileError("wrt is empty: name at least one real argument to differentiate.")
        return wrt

    # -- index expressions
    def text(self, expr, loops=()) -> str:
        """An index or bound expression as Python text over generated names."""
        expr = _plain(sp.sympify(expr))
        if expr.is_Integer:
            return str(int(expr))
        if expr.is_Symbol:
            if expr in self.sizes:
                return self.sizes[expr]
            if expr in self.index_names:
                return self.index_names[expr]
            raise CompileError(f"index symbol {expr} is neither a loop index in scope nor a size.")
        if isinstance(expr, sp.Add):
            return "(" + " + ".join(self.text(a, loops) for a in expr.args) + ")"
        if isinstance(expr, sp.Mul):
            if not all(a.is_Integer or not a.is_number for a in expr.args):
                raise CompileError(f"index {expr} has a non-integer coefficient.")
            return "(" + " * ".join(self.text(a, loops) for a in expr.args) + ")"
        if isinstance(expr, sp.Mod):
            return f"wrap({self.text(expr.args[0], loops)}, {self.text(expr.args[1], loops)})"
        if isinstance(expr, sp.Indexed):
            k = self.bases.get(expr.base)
            if k is None or not self.specs[k].integer:
                raise CompileError(f"index {expr} reads {expr.base}, which is not an integer argument "
                                   f"(IndexedBase(..., integer=True)).")
            return f"A{k}[{self.flat(expr, k)}]"
        raise CompileError(f"index expression {expr} ({type(expr).__name__}) is not supported: use integers, "
                           f"sizes, loop indices, +, integer *, Mod and integer arguments' elements.")

    def flat(self, indexed, k) -> str:
        shape = self._shape_of(k)
        if len(indexed.indices) != len(shape):
            raise CompileError(f"{indexed} has {len(indexed.indices)} indices; {indexed.base} has shape {shape}.")
        flat = None
        for index, extent in zip(indexed.indices, shape):
            part = self.text(index)
            flat = part if flat is None else f"({flat}) * {self.text(extent)} + {part}"
        return flat if flat is not None else "0"

    def checks(self, indexed, k, gather_context=False) -> list[Check]:
        found = []
        for axis, (index, extent) in enumerate(zip(indexed.indices, self._shape_of(k))):
            index = _plain(sp.sympify(index))
            gather = bool(index.atoms(sp.Indexed)) or (index.has(sp.Mod) and not _wraps_into(index, extent))
            for inner in index.atoms(sp.Indexed):
                found += self.checks(inner, self.bases[inner.base], True)
            found.append(Check(self.specs[k].name, axis, self.text(index), self.text(extent),
                               gather or gather_context))
        return found

    # -- expressions to stages
    def lower(self, expr, loops: list):
        """``expr`` with every Sum replaced by a read of the temporary (or nothing) that holds it."""
        replacements = {}
        for node in sp.preorder_traversal(expr):
            if isinstance(node, sp.Sum) and node not in replacements:
                replacements[node] = None
        # innermost sums are lowered inside their enclosing sums' stages: only outermost here
        outer = [s for s in replacements if not any(s != o and o.has(s) for o in replacements)]
        mapping = {s: self.sum_stage(s, loops) for s in outer}
        return expr.xreplace(mapping)

    def sum_stage(self, total: sp.Sum, loops: list, target=None):
        """A stage adding ``total``'s terms; returns the read of its temporary (or None with ``target``)."""
        # SymPy lists a Sum's limits innermost first; loops run outermost first
        body, limits = total.function, list(reversed(total.limits))
        while isinstance(body, sp.Sum):  # Sum(Sum(f, j), i): one domain (i, j)
            limits += list(reversed(body.limits))
            body = body.function
        scope = {_plain(lp[0]) for lp in loops}
        free = _plain(total).free_symbols & scope
        used = [lp for lp in loops if lp[0] in free]
        own = []
        for limit in limits:
            if len(limit) != 3:
                raise CompileError(f"Sum {total} needs bounds: Sum(body, (i, first, last)), inclusive.")
            own.append((_plain(limit[0]), _plain(limit[1]), _plain(limit[2])))
        if target is None:
            for index, lo, hi in used:
                if (lo.free_symbols | hi.free_symbols) & scope:
                    raise CompileError(
                        f"the inner Sum {total} depends on {index}, whose range {lo}..{hi} depends on another "
                        f"loop index; make it the direct body of the outer Sum or use a rectangular range.")
            extents = tuple(self.text(hi - lo + 1) for _, lo, hi in used)
            temp = Temp(f"T{len(self.temps)}", tuple(f"max(0, {e})" for e in extents))
            self.temps.append(temp)
            position = self._position([(index - lo) for index, lo, _ in used], [hi - lo + 1 for _, lo, hi in used])
            all_loops = used + own
            self.emit("reduce", temp.name, position, all_loops, body, bool(used))
            if not used:
                scalar = sp.Dummy(temp.name)
                self.temp_scalars[scalar] = temp.name
                return scalar
            base = sp.IndexedBase(sp.Dummy(temp.name))
            self.temp_bases[base] = temp
            return base[tuple(index - lo for index, lo, _ in used)]
        target_name, position, partitioned = target
        self.emit("reduce", target_name, position, list(loops) + own, body, partitioned)
        return None

    def _position(self, coordinates, extents) -> str:
        flat = None
        for coordinate, extent in zip(coordinates, extents):
            part = self.text(coordinate)
            flat = part if flat is None else f"({flat}) * {self.text(extent)} + {part}"
        return flat if flat is not None else "0"

    def emit(self, kind, target, position, loops, body, partitioned):
        for index, _, _ in loops:
            self.index_names.setdefault(index, f"i{len(self.index_names)}")
        names = [self.index_names[index] for index, _, _ in loops]
        if len(set(names)) != len(names):
            raise CompileError(f"loop index used twice in one nest: {[str(lp[0]) for lp in loops]}.")
        loop_texts = tuple(Loop(self.index_names[i], self.text(lo), self.text(hi)) for i, lo, hi in loops)
        body = self.lower(_plain(sp.sympify(body)), loops)
        slots, checks, values = [], [], {}

        def slot(source, flat, band=(-1, 0, False)):
            if (source, flat) not in values:
                values[(source, flat)] = sp.Symbol(f"s{len(slots)}", real=True)
                slots.append(Slot(source, flat, *band))
            return values[(source, flat)]

        mapping = {}
        indexed = body.atoms(sp.Indexed)
        inside = {inner for node in indexed for index in node.indices for inner in sp.sympify(index).atoms(sp.Indexed)}
        for node in sorted(indexed - inside, key=sp.default_sort_key):
            if node.base in self.temp_bases:
                temp = self.temp_bases[node.base]
                flat = self._flat(node.indices, temp.extents)
                mapping[node] = slot(temp.name, flat, _band(node.indices, None, loops))
                continue
            k = self.bases.get(node.base)
            if k is None:
                raise CompileError(f"{node} reads {node.base}, which is not an argument; add it to args.")
            if self.specs[k].integer:
                raise CompileError(f"{node} uses integer index data as a value; integer arguments only index.")
            checks += self.checks(node, k)
            band = (*_band(node.indices, self._shape_of(k), loops), tuple(self.text(i) for i in node.indices))
            mapping[node] = slot(f"A{k}", self.flat(node, k), band)
        partial = body.xreplace(mapping)
        for symbol in sorted(partial.free_symbols - set(mapping.values()), key=sp.default_sort_key):
            if symbol in self.temp_scalars:
                mapping[symbol] = slot(self.temp_scalars[symbol], "0")
            elif symbol in self.bases:
                k = self.bases[symbol]
                if self.specs[k].integer:
                    raise CompileError(f"{symbol} is an integer argument and cannot be used as a value.")
                mapping[symbol] = slot(f"A{k}", "0")
            elif symbol in self.sizes or symbol in self.index_names:
                mapping[symbol] = slot("index", self.text(symbol))
            else:
                raise CompileError(f"symbol {symbol} in {body} is not an argument, a size or a loop index in "
                                   f"scope; add it to args.")
        expression = body.xreplace(mapping)
        if not slots:
            slot("zero", "0")
        self.stages.append(Stage(kind, target, position, partitioned, loop_texts, tuple(slots), tuple(checks),
                                 sp.srepr(expression), str(body)))

    def _flat(self, coordinates, extents) -> str:
        flat = None
        for coordinate, extent in zip(coordinates, extents):
            part = self.text(coordinate)
            flat = part if flat is None else f"({flat}) * {extent} + {part}"
        return flat if flat is not None else "0"


def _band(indices, extents, loops) -> tuple[int, int, bool]:
    """(axis, shift, wrap) of a read whose one coordinate holding the outermost loop index ``i`` is
    ``i + shift`` or ``Mod(i + shift, extent)`` (``extent`` that axis's, the loop no longer than it);
    (-1, 0, False) otherwise.  ``extents`` None: no wrap allowed (temporaries)."""
    if not loops:
        return -1, 0, False
    first, lo, hi = loops[0]
    coordinates = [_plain(sp.sympify(index)) for index in indices]
    holding = [a for a, c in enumerate(coordinates) if c.has(first)]
    if len(holding) != 1:
        return -1, 0, False
    axis = holding[0]
    coordinate, wrap = coordinates[axis], False
    if isinstance(coordinate, sp.Mod):
        argument, modulus = coordinate.args
        if extents is None or sp.expand(modulus - extents[axis]) != 0:
            return -1, 0, False
        if not sp.expand(hi - lo + 1 - modulus).is_nonpositive:
            return -1, 0, False
        coordinate, wrap = argument, True
    shift = sp.expand(coordinate - first)
    if wrap and not shift.is_Integer:  # SymPy writes Mod(i - 1, n) as Mod(i + n - 1, n)
        shift = sp.expand(shift - modulus)
    if not shift.is_Integer:
        return -1, 0, False
    return axis, int(shift), wrap


def _wraps_into(index, extent) -> bool:
    """``index`` is ``Mod(affine, extent)``: inside 0 .. extent - 1 whenever extent > 0, so checking it at
    the ends of the innermost loop suffices (an empty axis fails there)."""
    return isinstance(index, sp.Mod) and sp.expand(index.args[1] - extent) == 0


def _plain(expr):
    """``Idx`` objects as their labels: loop indices are plain symbols from here on."""
    if isinstance(expr, sp.Idx):
        return expr.label
    if isinstance(expr, sp.Basic) and expr.has(sp.Idx):
        return expr.xreplace({idx: idx.label for idx in expr.atoms(sp.Idx)})
    return expr


def analyze(outputs, args, wrt=None, name=None, dtype="float64") -> LoopModel:
    """The loop model of an indexed ``outputs``: a scalar expression with Sums, or ``Eq``s on one output."""
    args = list(args) if isinstance(args, (list, tuple)) else [args]
    analysis = _Analysis(args, wrt, name, dtype)
    equations = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    if all(isinstance(e, sp.Eq) for e in equations) and equations:
        output, out_shape, pieces = _equations(analysis, equations)
    elif any(isinstance(e, sp.Eq) for e in equations) or len(equations) != 1:
        raise CompileError("an indexed model's outputs are one scalar expression or a list of Eq(y[...], rhs) "
                           "on one output IndexedBase.")
    else:
        expr = _plain(sp.sympify(equations[0]))
        output, out_shape, pieces = "y", (), ()
        if isinstance(expr, sp.Sum):
            analysis.sum_stage(expr, [], ("Y", "0", False))
        else:
            analysis.emit("write", "Y", "0", [], expr, False)
    for stage in analysis.stages:
        _prove_bounds(stage, analysis)
    names = {v: str(k) for k, v in analysis.sizes.items()}
    names.update({v: str(k) for k, v in analysis.index_names.items()})
    names.update({f"A{k}": s.name for k, s in enumerate(analysis.specs)})
    return LoopModel(name, dtype, tuple(analysis.specs), tuple(analysis.sizes.values()),
                     tuple(analysis.size_sources[s] for s in analysis.sizes), analysis.wrt, output, out_shape,
                     pieces, tuple(analysis.temps), tuple(analysis.stages), tuple(sorted(names.items())))


def _equations(analysis, equations):
    bases = {e.lhs.base for e in equations if isinstance(e.lhs, sp.Indexed)}
    if len(bases) != 1 or not all(isinstance(e.lhs, sp.Indexed) for e in equations):
        raise CompileError(f"every Eq must assign an element of one output IndexedBase, got left sides "
                           f"{[str(e.lhs) for e in equations]}.")
    base = bases.pop()
    if base.shape is None:
        raise CompileError(f"the output {base} needs a shape: IndexedBase({str(base)!r}, shape=(n,)).")
    if base in analysis.bases:
        raise CompileError(f"the output {base} is also an argument; give the output its own name.")
    shape = [sp.sympify(e) for e in base.shape]
    out_shape = tuple(analysis.text(e) for e in shape)
    pieces = []
    for equation in equations:
        if len(equation.lhs.indices) != len(shape):
            raise CompileError(f"{equation.lhs} has {len(equation.lhs.indices)} indices; {base} has shape {shape}.")
        loops, box = [], []
        for index in equation.lhs.indices:
            if isinstance(index, sp.Idx):
                if index.lower is None:
                    raise CompileError(f"Idx {index} in {equation.lhs} needs a range: Idx('i', n) or Idx('i', (a, b)).")
                loops.append((index.label, _plain(index.lower), _plain(index.upper)))
                box.append((analysis.text(index.lower), analysis.text(index.upper)))
            elif not (_plain(index).free_symbols - set(analysis.sizes)):
                box.append((analysis.text(index), analysis.text(index)))
            else:
                raise CompileError(f"index {index} of {equation.lhs} must be an Idx with a range (Idx('i', n)) "
                                   f"or a fixed position (an integer or size expression).")
        for index, _, _ in loops:
            analysis.index_names.setdefault(index, f"i{len(analysis.index_names)}")
        position = analysis._position([_plain(i) for i in equation.lhs.indices], shape)
        rhs = _plain(sp.sympify(equation.rhs))
        if isinstance(rhs, sp.Sum):
            analysis.sum_stage(rhs, loops, ("Y", position, bool(loops)))
        else:
            analysis.emit("write", "Y", position, loops, rhs, bool(loops))
        pieces.append(Piece(tuple(box), str(equation)))
    return str(base), out_shape, tuple(pieces)


def _prove_bounds(stage: Stage, analysis) -> None:
    """Indices provably outside their array (at the first or last term, whatever the sizes): CompileError."""
    if len(stage.loops) != 1:
        return
    names = {v: k for k, v in analysis.sizes.items()}
    loop = stage.loops[0]
    symbols = {**{n: sp.Symbol(n, integer=True, positive=True) for n in names}, loop.index: sp.Symbol(loop.index)}
    for check in stage.checks:
        if check.gather:
            continue
        try:
            index = sp.sympify(check.index, locals=symbols)
            extent = sp.sympify(check.extent, locals=symbols)
            lo, hi = sp.sympify(loop.lo, locals=symbols), sp.sympify(loop.hi, locals=symbols)
        except (sp.SympifyError, TypeError, SyntaxError):
            continue
        if not (hi - lo).is_nonnegative:
            continue
        for end in (lo, hi):
            at = index.subs(symbols[loop.index], end)
            if (at - extent).is_nonnegative or at.is_negative:
                raise CompileError(
                    f"index {_user(check.index, analysis)} of {check.array} (axis {check.axis}) is "
                    f"{_user(str(at), analysis)} at {_user(loop.index, analysis)} = {_user(str(end), analysis)}, "
                    f"outside 0 .. {_user(check.extent, analysis)} - 1 for every size.")


def _user(text: str, analysis) -> str:
    """Generated names in ``text`` back to the user's."""
    names = {v: str(k) for k, v in analysis.sizes.items()}
    names.update({v: str(k) for k, v in analysis.index_names.items()})
    names.update({f"A{k}": s.name for k, s in enumerate(analysis.specs)})
    return re.sub(r"\b[NiA]\d+\b", lambda m: names.get(m.group(0), m.group(0)), text)
