"""Affine stencils in indexed loops: interiors without ``wrap``, and adjoints gathered per element.

Two rewrites of the scalar statements of an inline body (``loopgen``), both about stencils
(``x[i + 1]``, ``u[Mod(r - 1, N), c]``):

- ``split_inner``: the innermost loop as edge, interior, edge.  In the interior every ``wrap(e, m)``
  whose ``e`` is ``index + shift`` is ``e`` itself, so the loop is branch-free and LLVM runs it in
  SIMD lanes (a periodic 2-D stencil: 3x); the edges run first, in one loop, then the interior: an
  order fixed by the sizes, so sums keep their bits for any thread count.
- ``gather_adjoint``: the reverse of a stencil without a scatter.  Each element ``q`` of an argument
  adds the slot adjoints of the terms that read it (term ``q - shift`` per slot, as JAX's transposed
  ``roll``), computed where they are needed.  No two elements share a write: no race, no phases, no
  private copies, and the same bits for any thread count; the interior vectorizes as above.
"""

from __future__ import annotations

import functools
import re

import sympy as sp

_NAME = re.compile(r"[A-Za-z_]\w*")


@functools.lru_cache(maxsize=4096)
def _expr(text: str):
    """Python index text (integers, names, + - *) as a SymPy expression of plain symbols (kept: a model's
    few index texts are parsed hundreds of times, 0.12 of Gray-Scott's 0.2 s compile)."""
    return sp.sympify(text, locals={name: sp.Symbol(name) for name in _NAME.findall(text)})


def _text(expr) -> str:
    return f"({sp.expand(expr)})"


def _wrap_calls(text: str) -> list[tuple[int, int, str, str]]:
    """(start, end, argument, modulus) of each ``wrap(argument, modulus)`` with no wrap inside it."""
    calls = []
    for match in re.finditer(r"\bwrap\(", text):
        depth, comma, position = 1, None, match.end()
        while depth and position < len(text):
            char = text[position]
            depth += char == "("
            depth -= char == ")"
            if char == "," and depth == 1:
                comma = position
            position += 1
        argument = text[match.end():comma] if comma else ""
        if comma and depth == 0 and "wrap(" not in argument:
            calls.append((match.start(), position, argument, text[comma + 1:position - 1].strip()))
    return calls


def unit_shift(text: str, index: str):
    """``text - index`` as a SymPy expression when ``text`` is ``index + shift`` (shift free of the index),
    else None."""
    expr, symbol = _expr(text), sp.Symbol(index)
    if sp.diff(expr, symbol) != 1:
        return None
    shift = sp.expand(expr - symbol)
    return None if shift.has(symbol) else shift


def _periodic(shift, modulus):
    """``shift`` moved by whole periods to an integer when it is one (``N - 1`` mod ``N`` is -1)."""
    for periods in (0, 1, -1, 2, -2):
        moved = sp.expand(shift - periods * modulus)
        if moved.is_Integer:
            return moved
    return shift


def unwrap(lines: list[str], index: str) -> tuple[list[str], list[str], list[str]]:
    """``lines`` with each ``wrap(index + shift, m)`` as ``index + shift'`` (``shift'`` the shift moved by
    whole periods), and the lower and upper bounds on ``index`` (texts) within which that is exact."""
    lows, highs, out = [], [], []
    for line in lines:
        for start, end, argument, modulus in reversed(_wrap_calls(line)):
            shift = unit_shift(argument, index)
            if shift is None:
                continue
            m = _expr(modulus)
            shift = _periodic(shift, m)
            low, high = _text(-shift), _text(m - 1 - shift)
            lows += [low] if low not in lows else []
            highs += [high] if high not in highs else []
            line = line[:start] + _text(sp.Symbol(index) + shift) + line[end:]
        out.append(line)
    return out, lows, highs


def hoist(lines: list[str], index: str) -> tuple[list[str], list[str]]:
    """The ``wrap`` calls of ``lines`` that depend neither on ``index`` nor on a name the loop assigns, as
    ``w<n>`` values computed before the loop: LLVM does not move them out itself, and a call inside
    keeps the loop from SIMD lanes."""
    found: dict = {}
    varying = {index} | {m.group(1) for line in lines if (m := re.match(r"\s*(\w+) [+]?= ", line))}
    changed = True
    while changed:
        changed, out = False, []
        for line in lines:
            for start, end, argument, _ in reversed(_wrap_calls(line)):
                if set(_NAME.findall(argument)) & varying or "[" in argument:
                    continue
                name = found.setdefault(line[start:end], f"w{len(found)}")
                line, changed = line[:start] + name + line[end:], True
            out.append(line)
        lines = out
    return [f"{name} = {call}" for call, name in found.items()], lines


def split_inner(index: str, lo: str, hi: str, edge: list[str], inner: list[str],
                lows: list[str], highs: list[str]) -> list[str]:
    """The loop ``index`` in ``lo .. hi`` (inclusive texts) as ``edge`` statements before and after the
    interior ``max(lo, lows) .. min(hi, highs)``, where ``inner`` statements run, after the edges; the
    wraps that do not depend on ``index`` computed once before (``hoist``)."""
    hoisted, both = hoist([*edge, "#", *inner], index)
    edge, inner = both[:len(edge)], both[len(edge) + 1:]
    if not lows and not highs:
        return [*hoisted, f"for {index} in range({lo}, {hi} + 1):", *["    " + line for line in edge]]
    first = f"max({', '.join([lo, *lows])})" if lows else lo
    last = f"min({', '.join([hi, *highs])})" if highs else hi
    return [*hoisted, f"in_lo = {first}", f"in_hi = {last}", "if in_hi < in_lo:  # no interior: all edge",
            f"    in_lo = {hi} + 1", f"    in_hi = {hi}", f"in_pre = in_lo - ({lo})",
            f"for in_e in range(in_pre + ({hi}) - in_hi):  # both edges in one loop: one copy less to compile",
            f"    {index} = {lo} + in_e if in_e < in_pre else in_hi + 1 + in_e - in_pre",
            *["    " + line for line in edge],
            f"for {index} in range(in_lo, in_hi + 1):", *["    " + line for line in inner]]


def split_loop(index: str, lo: str, hi: str, statements: list[str]) -> list[str]:
    """The loop ``index`` in ``lo .. hi`` around ``statements``, split by ``split_inner`` where ``unwrap``
    finds wraps that vanish in an interior."""
    inner, lows, highs = unwrap(statements, index)
    return split_inner(index, lo, hi, statements, inner, lows, highs)


# -- the gathered adjoint --------------------------------------------------------------------------------

def _coordinate(text: str, loops, extent: str):
    """(loop number, shift, wrapped) of one index of a read: ``i_d + shift``, or ``wrap(i_d + shift, m)``
    over a loop that runs exactly once around ``m`` (the axis's extent); (None, text, False) for an index
    of no loop; False when it is anything else."""
    if "A" in text:  # index data: a gather, not a stencil
        return False
    wrapped = re.fullmatch(r"wrap\((.*), (N\d+|\d+)\)", text)
    body = wrapped.group(1) if wrapped else text
    if "wrap(" in body:
        return False
    symbols = {s.name for s in _expr(body).free_symbols}
    used = [d for d, lp in enumerate(loops) if lp.index in symbols]
    if not used:
        return None if wrapped else (None, text, False)
    if len(used) > 1:
        return False
    d = used[0]
    shift = unit_shift(body, loops[d].index)
    if shift is None:
        return False
    if wrapped:
        m = _expr(wrapped.group(2))
        lp = loops[d]
        if sp.expand(m - _expr(extent)) != 0 or _expr(lp.lo) != 0 or sp.expand(_expr(lp.hi) - m + 1) != 0:
            return False
        return d, _periodic(shift, m), True
    return d, shift, False


def _flat(coordinates: list[str], extents: tuple[str, ...]) -> str:
    flat = None
    for part, extent in zip(coordinates, extents):
        flat = part if flat is None else f"({flat}) * {extent} + {part}"
    return flat if flat is not None else "0"


def _dead_code_free(statements: list[str], wanted: list[str]) -> list[str]:
    """The statements that ``wanted`` texts need, in their order."""
    need = {name for text in wanted for name in _NAME.findall(text)}
    kept = []
    for line in reversed(statements):
        target, value = line.split(" = ", 1)
        if target in need:
            kept.append(line)
            need |= set(_NAME.findall(value))
    return kept[::-1]


def _renamed(text: str, names: set, suffix: str) -> str:
    return _NAME.sub(lambda m: m.group(0) + suffix if m.group(0) in names else m.group(0), text)


def _substituted(text: str, mapping: dict) -> str:
    return re.sub(r"\b(i\d+)\b", lambda m: mapping.get(m.group(1), m.group(1)), text)


def gather_plan(stage, sources: list[str], extents: dict):
    """The gathered adjoint of a box stage into ``sources`` (arguments ``A<k>`` with their extents), or
    None when some read is no stencil: per source the loop each axis follows (or its fixed index), the
    range of elements per loop, and per slot (source, term shifts per loop, wrapped per loop)."""
    loops = stage.loops
    axes_of, fixed_of, reads = {}, {}, []
    for k, slot in enumerate(stage.slots):
        if slot.source not in sources:
            continue
        if not slot.coords or not slot.source.startswith("A"):
            return None
        found = [_coordinate(text, loops, extent) for text, extent in zip(slot.coords, extents[slot.source])]
        if any(f is False or f is None for f in found):
            return None
        axes = tuple(next((a for a, f in enumerate(found) if f[0] == d), -1) for d in range(len(loops)))
        if -1 in axes or len(set(axes)) != len(axes) or sum(f[0] is not None for f in found) != len(loops):
            return None  # a loop missing, or one on two axes (a diagonal A[i, i]): the scatter plans
        fixed = tuple(f[1] if f[0] is None else None for f in found)
        if axes_of.setdefault(slot.source, axes) != axes or fixed_of.setdefault(slot.source, fixed) != fixed:
            return None
        reads.append((k, slot.source, tuple(found[a][1] for a in axes), tuple(found[a][2] for a in axes)))
    if not reads or len(set(axes_of.values())) != 1:
        return None
    per_source = {source: _ranges(loops, [r for r in reads if r[1] == source], extents[source], axes)
                  for source, axes in axes_of.items()}
    ranges = set(per_source.values())
    if len(ranges) != 1:
        return None  # one loop over elements for all sources: a write outside one's own would corrupt it
    ranges = ranges.pop()
    return {"axes": axes_of, "fixed": fixed_of, "ranges": tuple(ranges), "reads": tuple(reads)}


def _ranges(loops, reads, extent: tuple[str, ...], axes: tuple[int, ...]):
    """Per loop, the elements (first, last texts) of one source that its reads touch: the loop's range
    moved by the least and the greatest shift, or the whole axis where a read wraps around it (or
    shifts of sizes do not compare)."""
    ranges = []
    for d, lp in enumerate(loops):
        shifts = [r[2][d] for r in reads]
        span = None  # a period: every element of the axis
        if not any(r[3][d] for r in reads):
            try:
                span = (_text(_expr(lp.lo) + min(shifts)), _text(_expr(lp.hi) + max(shifts)))
            except TypeError:  # shifts of sizes that do not compare
                span = None
        ranges.append(span or (_text(sp.Integer(0)), _text(_expr(extent[axes[d]]) - 1)))  # one text per range
    return tuple(ranges)


def merge_plans(plans: list[dict]) -> dict | None:
    """One gather over the elements for the plans (``gather_plan``) of stages over one box of loops: the
    sources' axes and fixed indices of all, when every plan touches the same elements and reads each
    source along the same axes; else None."""
    axes, fixed = {}, {}
    for plan in plans:
        if plan["ranges"] != plans[0]["ranges"]:
            return None
        for source, along in plan["axes"].items():
            if axes.setdefault(source, along) != along or fixed.setdefault(source, plan["fixed"][source]) != \
                    plan["fixed"][source]:
                return None
    if len(set(axes.values())) != 1:
        return None
    return {"axes": axes, "fixed": fixed, "ranges": plans[0]["ranges"]}


def whole_sources(merged: dict, extents: dict) -> set[str]:
    """The sources whose every element the gather of ``merged`` (``merge_plans``) writes: each of their axes
    follows a loop whose range of elements is the whole axis."""
    found = set()
    for source, axes in merged["axes"].items():
        shape = extents[source]
        if any(f is not None for f in merged["fixed"][source]) or len(axes) != len(shape):
            continue
        if all(merged["ranges"][d] == (_text(sp.Integer(0)), _text(_expr(shape[a]) - 1)) for d, a in enumerate(axes)):
            found.add(source)
    return found


def gather_adjoint(parts, merged: dict, p: str, params: list[str], extents: dict, terms_per_chunk: int,
                   label: str | None = None, assigned: frozenset = frozenset()) -> list[str]:
    """The ``R`` driver of stages over one box of loops whose adjoints gather over the same elements: a
    unit over element rows first .. last - 1, the parallel driver over blocks of rows, its serial twin in
    plain Python.  ``parts``: per stage (the stage, its ``gather_plan``, its inline VJP, each slot's read
    at term ``i0 ..`` as Python text, its cotangent array); ``merged``: their ``merge_plans``.

    Per element ``q`` (loops ``q0 ..``), per stage, per group of slots that one term reads (the same
    shifts), the term's indices ``k<j>_<d>`` = ``q_d - shift`` (wrapped on a period), the statements of
    the body's reverse that those slots' adjoints need (names suffixed ``_t<j>``), guarded where the term
    may lie outside the loops' ranges; their sum is added into the element once, for all the stages (stored,
    for the ``assigned`` sources: their adjoints start uninitialized, and no other driver adds into them)."""
    loops, D = parts[0][0].loops, len(parts[0][0].loops)
    q = [f"q{d}" for d in range(D)]
    sources = list(merged["axes"])
    acc = {s: f"g{s[1:]}" for s in sources}
    outer, edge_inner, plain_inner, lows, highs = [[] for _ in range(D)], [], [], [], []

    def bound(new_lows, new_highs):  # each list on its own: unwrap's two lists need not pair up
        lows.extend(low for low in dict.fromkeys(new_lows) if low not in lows)
        highs.extend(high for high in dict.fromkeys(new_highs) if high not in highs)

    groups: dict = {}  # (stage's place, shifts, wraps) -> the slots one term of it reads there
    for place, (_, plan, *_) in enumerate(parts):
        for k, source, shifts, wrapped in plan["reads"]:
            groups.setdefault((place, shifts, wrapped), []).append((k, source))
    for j, ((place, shifts, wrapped), members) in enumerate(groups.items()):
        stage, _, (names, statements, outputs), slot_reads, cotangent = parts[place]
        slot_names, (v_name,) = names[0], names[1]
        wanted = [outputs[0][k] for k, _ in members]
        body = _dead_code_free(statements, wanted)
        local = set(slot_names) | {v_name} | {line.split(" = ")[0] for line in body}
        used = {n for text in [*wanted, *body] for n in _NAME.findall(text)}
        suffix, first_source = f"_t{j}", members[0][1]
        edge_of, plain_of, guards, outer_guards, edge_index = {}, {}, [], [], []
        for d, (shift, wrap) in enumerate(zip(shifts, wrapped)):
            modulus = extents[first_source][merged["axes"][first_source][d]]
            plain = _text(sp.Symbol(q[d]) - shift)
            index = f"k{j}_{d}"
            line = f"{index} = {f'wrap({plain}, {modulus})' if wrap else plain}"
            edge_of[f"i{d}"] = index
            plain_of[f"i{d}"] = plain if d == D - 1 else index
            (outer[d] if d < D - 1 else edge_index).append(line)
            lo, hi = _expr(loops[d].lo), _expr(loops[d].hi)
            q_lo, q_hi = (_expr(t) for t in merged["ranges"][d])
            if wrap:
                if d == D - 1:  # the interior reads q - shift unwrapped
                    bound([_text(shift)], [_text(_expr(modulus) - 1 + shift)])
                continue
            if (q_lo - shift - lo).is_nonnegative and (hi - q_hi + shift).is_nonnegative:
                continue  # every element's term lies in the loop's range
            test = f"{loops[d].lo} <= {index} <= {loops[d].hi}"
            if d == D - 1:
                guards.append(test)
                bound([_text(lo + shift)], [_text(hi + shift)])
            else:
                outer_guards.append((d, test))
        reads = [f"{name}{suffix} = {slot_reads[k]}" for k, name in enumerate(slot_names) if name in used]
        reads += [f"{v_name}{suffix} = {cotangent}[U({stage.position})]"] if v_name in used else []
        block = [*reads, *[_renamed(line, local, suffix) for line in body],
                 *[f"{acc[s]} += {_renamed(outputs[0][k], local, suffix)}" for k, s in members]]
        if outer_guards:
            outer[outer_guards[-1][0]].append(f"ok{j} = {' and '.join(t for _, t in outer_guards)}")
            guards.insert(0, f"ok{j}")
        edge_block = [_substituted(line, edge_of) for line in block]
        plain_block = [_substituted(line, plain_of) for line in block]
        edge_inner += edge_index
        edge_inner += [f"if {' and '.join(guards)}:", *["    " + ln for ln in edge_block]] if guards else edge_block
        plain_inner += ([f"if ok{j}:", *["    " + ln for ln in plain_block]] if outer_guards else plain_block)
    starts = [f"{acc[s]} = DTYPE(0.0)" for s in sources]
    writes = [f"b{s}[U({_flat(_coords(merged, s, q), extents[s])})] {'=' if s in assigned else '+='} {acc[s]}"
              for s in sources]
    plain_inner, more_lows, more_highs = unwrap(plain_inner, q[-1])
    bound(more_lows, more_highs)
    lo_last, hi_last = ("first", "last - 1") if D == 1 else merged["ranges"][-1]
    inner = split_inner(q[-1], lo_last, hi_last, [*starts, *edge_inner, *writes],
                        [*starts, *plain_inner, *writes], lows, highs)
    nest = []
    for d in range(D - 1):
        head = "range(first, last)" if d == 0 else f"range({merged['ranges'][d][0]}, {merged['ranges'][d][1]} + 1)"
        nest += ["    " * d + f"for {q[d]} in {head}:", *["    " * (d + 1) + line for line in outer[d]]]
    nest += ["    " * (D - 1) + line for line in inner]
    row_lo, row_hi = merged["ranges"][0]
    per_row = " * ".join(f"max(0, {hi} - {lo} + 1)" for lo, hi in merged["ranges"][1:]) or "1"
    label = label or f"Stage {p}"
    args = ", ".join([*params, "BND"])
    kind = "slot adjoints, gathered per element (each element adds the terms that read it)"
    unit = ['@njit(cache=CACHE, nogil=True, error_model="numpy")', f"def {p}_R_unit({args}, first, last):",
            f'    """{label}: the {kind}, of element rows first .. last - 1."""',
            *["    " + line for line in nest]]
    # no terms, no elements: with an empty loop the shifted element ranges need not lie in the arrays
    empty = [f"    if {' or '.join(f'({lp.hi}) < ({lp.lo})' for lp in loops)}:",
             *[f"        b{s}[:] = 0.0" for s in sources if s in assigned], "        return"]
    parallel = ['@njit(cache=CACHE, nogil=True, parallel=True, error_model="numpy")', f"def {p}_R({args}):",
                f'    """{label}: its terms\' {kind}."""', *empty, f"    lo, hi = {row_lo}, {row_hi}",
                f"    length = max(1, {terms_per_chunk} // max(1, {per_row}))",
                "    blocks = (hi - lo + length) // length if hi >= lo else 0", "    for block in prange(blocks):",
                f"        {p}_R_unit({args}, lo + block * length, min(hi + 1, lo + (block + 1) * length))"]
    serial = [f"def {p}_R_serial({args}):",
              f'    """{label}: its terms\' {kind}, on the calling thread (plain Python around the unit)."""',
              *empty, f"    lo, hi = {row_lo}, {row_hi}", "    if hi >= lo:", f"        {p}_R_unit({args}, lo, hi + 1)"]
    return [*unit, "", "", *parallel, "", "", *serial, "", ""]


def _coords(plan, source: str, q: list[str]) -> list[str]:
    axes, fixed = plan["axes"][source], plan["fixed"][source]
    return [q[axes.index(a)] if a in axes else fixed[a] for a in range(len(fixed))]
