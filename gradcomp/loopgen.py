"""Stage 3 for indexed models: a ``LoopModel`` -> the kernel module (loop drivers over SIMD bodies).

Per stage the module holds the body's methods as instruction text (``derive`` differentiates the
body as a function of its slots; ``gradcomp.ir`` builds each as a block of ``LANES`` terms) and
Numba drivers that walk the stage's terms:

- ``F`` the value, ``J`` its tangent, ``R`` the adjoints of the slots, ``H`` the tangents of those
  adjoints (forward over reverse, for ``hvp`` and ``vjp_jvp``);
- terms are gathered, ``TERMS_PER_BLOCK`` at a time, into rows of a small buffer, the body runs on
  them in vector lanes, and the results go to their target (written, or added in term order);
- the outermost loop is cut into chunks by ``bounds`` (``BND``, chunk boundaries): a closed form
  for rectangular nests, a scan that balances terms for triangular ones; chunks depend only on the
  sizes, one ``prange`` iteration each, so a sum's partial results and their order are the same
  for any thread count;
- adjoints (``R``, ``H``) of a source are scattered by its plan (``_plan``): "direct" where no two
  chunks touch one element (every slot of the source holds the outer loop index on one axis with
  one shift, ``Slot.axis``/``shift``), "banded" where they do only near chunk edges (shifts ``i + c``, or
  ``Mod(i + c, E)`` on a periodic axis, ``Slot.wrap``): groups of chunks run in two alternating
  phases, so neighbours never run together; "copies" otherwise: each group adds into a private copy
  (their number depends on the sizes only), then the copies are summed in order, in parallel over
  blocks of elements. Every plan is deterministic and race-free.  A stencil of arithmetic only (a box
  of loops whose every read of a differentiated argument is ``i + shift`` or its wrap) has no scatter at
  all: its adjoint gathers per element the terms that read it (``loopstencil``);
- inline bodies (arithmetic only) run as scalar statements, the innermost loop split into edges and a
  wrap-free interior that LLVM vectorizes; buffered sums keep eight partial sums side by side;
- ``count`` (terms of a chunk) and ``check`` (every index against its extent, before anything is
  written) walk the loops without the body.

Generated code names only ``N<k>`` sizes, ``A<k>`` arguments, ``T<k>`` temporaries and ``Y`` the
output (all flat, C order), with ``d``/``b``/``h`` prefixes for tangents, adjoints and adjoints'
tangents: no user name reaches the code.
"""

from __future__ import annotations

import re

import sympy as sp

from .codegen import Printer, count_operations, instructions, listing
from .derive import derive
from .indexed import LoopModel, Slot, Stage
from .loopstencil import _expr, _renamed, gather_adjoint, gather_plan, merge_plans, split_loop, whole_sources
from .record import VECTOR_ROW_MAX, LoopRecord
from .spec import make_signature
from .version import __version__

TERMS_PER_BLOCK = 256
"""Terms gathered before the body runs on them: a multiple of every vector width, small enough that
the buffer stays in the L1 cache."""

TERMS_PER_CHUNK = 4096
"""Terms of one chunk (one parallel task): its outermost-loop range is this many terms divided by the
terms of that loop's first index, whatever the thread count."""

MAX_COPIES = 32
"""Private copies of a scattered adjoint at most: groups of chunks that run in parallel."""

COPY_BUDGET = 4 * 2**20
"""Elements of all private copies of one stage together (32 MB in float64) when that allows more
than two; the number of copies depends on the sizes only, never on the thread count."""

ACCUMULATORS = 8
"""Partial sums a chunk of a sum keeps side by side (term ``t`` of a block into ``t % 8``), added in a
fixed tree at the chunk's end: eight chains of dependent additions instead of one, the same bits for
any thread count."""

REDUCE_BLOCK = 4096
"""Elements per parallel task when the private copies are summed (in copy order)."""

BODY_METHODS = ("forward", "vjp", "jvp", "vjp_jvp")

WRAP = '''@njit(cache=CACHE, nogil=True, error_model="numpy")
def wrap(v, m):
    """Python's v % m (sp.Mod), without a division when v is within one period of 0 .. m - 1 (periodic
    neighbours i - 1, i + 1): an integer division costs more than the rest of a stencil term."""
    if v >= m:
        v -= m
        if v >= m:
            return v % m
    elif v < 0:
        v += m
        if v < 0:
            return v % m
    return v


def wrap_numpy(v, m):
    """``wrap`` on arrays of indices, for the NumPy pattern of a box."""
    return np.mod(v, m) if m else np.zeros_like(v)


def wrap_python(v, m):
    """``wrap`` for the plain-Python corner checks (an empty period gives 0, as Numba's division by zero)."""
    return v % m if m else 0'''


class Module:
    def __init__(self, source: str, meta: LoopRecord):
        self.source, self.meta = source, meta


def generate(model: LoopModel, key: str) -> Module:
    dtype = model.dtype
    printer = Printer(dtype)
    programs = [_body_programs(stage, dtype) for stage in model.stages]
    inlines = [_inline_bodies(found, printer, stage) for found, stage in zip(programs, model.stages)]
    fusions = _fusions(model, inlines)
    assigned = _assigned(model, inlines, fusions)
    sections, stage_info = [], []
    for number, stage in enumerate(model.stages):
        text, ops = _stage_source(model, number, stage, printer, programs[number], inlines, fusions, assigned)
        sections.append(text)
        stage_info.append((model.user(stage.text), ops))
    meta = LoopRecord(
        name=model.name, key=key, dtype=dtype,
        arguments=tuple((a.name, tuple(model.user(e) for e in a.shape), a.integer) for a in model.arguments),
        sizes=tuple(model.user(s) for s in model.sizes), size_sources=model.size_sources, wrt=model.wrt,
        output=model.output, out_shape=tuple(model.user(e) for e in model.out_shape),
        pieces=tuple(p.text for p in model.pieces),
        stages=tuple(stage_info), gradcomp=__version__)
    source = "\n".join([_header(model, meta, fusions), *sections, _tables(model, fusions, assigned)])
    return Module(source, meta)


def _fusions(model: LoopModel, inlines: list[dict]) -> dict[int, dict[str, tuple[int, ...]]]:
    """Per stage and mode (``F``, ``J``, ``R``), the stages whose terms its driver runs when that is more
    than its own: ``(n, m, ...)`` for the first of them, ``()`` for the others (which then have no driver
    of that mode).  Consecutive stages that write the output over one box of loops, with bodies inline in
    that mode (for ``R``: adjoints gathered over the same elements), run as one pass over the box: a term
    reads what they share once (both fields of a reaction-diffusion system), an element's adjoint is
    added once, and the pass is one unit to compile instead of one per stage."""
    runs: list[list[int]] = []
    for n, stage in enumerate(model.stages):
        if not (stage.kind == "write" and stage.target == "Y" and stage.partitioned and stage.loops
                and _is_box(stage)):
            continue
        if runs and runs[-1][-1] == n - 1 and model.stages[runs[-1][0]].loops == stage.loops:
            runs[-1].append(n)
        else:
            runs.append([n])
    fusions: dict[int, dict[str, tuple[int, ...]]] = {}
    for run in runs:
        for mode in "FJR":
            members = [n for n in run if _BODY_OF[mode] in inlines[n]]
            if mode == "R":
                members = _gathered_together(model, members, inlines)
            if len(members) > 1:
                fusions.setdefault(members[0], {})[mode] = tuple(members)
                for n in members[1:]:
                    fusions.setdefault(n, {})[mode] = ()
    return fusions


def _assigned(model: LoopModel, inlines: list[dict], fusions: dict) -> frozenset[str]:
    """The arguments whose adjoint one ``R`` driver gathers at every element (``whole_sources``) and no other
    driver adds into: the reverse sweep allocates them uninitialized and that driver stores, which saves
    a pass that zeroes them and a read per element."""
    drivers: dict[str, set[int]] = {}
    for n in range(len(model.stages)):
        members = fusions.get(n, {}).get("R")
        if members != ():
            for m in members or (n,):
                for source in _plan(model, model.stages[m]):
                    drivers.setdefault(source, set()).add(n)
    found = set()
    for source, (n,) in ((s, d) for s, d in drivers.items() if len(d) == 1 and s.startswith("A")):
        members = fusions.get(n, {}).get("R") or (n,)
        parts = [_gather_part(model, model.stages[m], inlines[m]["vjp"]) if "vjp" in inlines[m] else None
                 for m in members]
        if None not in parts and source in whole_sources(merge_plans([part[1] for part in parts]), _extents(model)):
            found.add(source)
        elif "vjp" not in inlines[n] and _in_place_whole(model, model.stages[n], source):
            found.add(source)
    return frozenset(found)


def _in_place_whole(model: LoopModel, stage: Stage, source: str) -> bool:
    """An ``_in_place`` single loop with one slot of ``source``, its element ``i + shift``, whose loop runs
    over every element of it: its ``R`` driver writes each element of the adjoint once."""
    slots = [slot for slot in stage.slots if slot.source == source]
    if _in_place(model, stage) is None or len(slots) != 1 or slots[0].axis != 0 or slots[0].wrap:
        return False
    loop, (extent,) = stage.loops[0], model.arguments[int(source[1:])].shape  # axis 0: element i + shift
    first, last = _expr(loop.lo) + slots[0].shift, _expr(loop.hi) + slots[0].shift
    return first == 0 and sp.expand(last - _expr(extent) + 1) == 0


def _gathered_together(model: LoopModel, members: list[int], inlines: list[dict]) -> list[int]:
    """The first of ``members`` whose adjoint gathers (``_gather_part``) and those after it whose gathers
    run over the same elements along the same axes (``merge_plans``)."""
    together, plans = [], []
    for n in members:
        part = _gather_part(model, model.stages[n], inlines[n]["vjp"])
        if part is not None and merge_plans([*plans, part[1]]) is not None:
            together.append(n)
            plans.append(part[1])
    return together


def _names(model: LoopModel):
    arrays = [f"A{k}" for k in range(len(model.arguments))]
    temps = [t.name for t in model.temps]
    base = [*model.sizes, *arrays, *temps, "Y"]
    tangents = [f"d{a}" for a in (*arrays, *temps, "Y")]
    adjoints = [f"b{a}" for a in (*arrays, *temps, "Y")]
    adjoint_tangents = [f"h{a}" for a in (*arrays, *temps, "Y")]
    return {"F": base, "J": [*base, *tangents], "R": [*base, *adjoints],
            "H": [*base, *tangents, *adjoints, *adjoint_tangents]}


def _header(model: LoopModel, meta: LoopRecord, fusions: dict) -> str:
    args = ", ".join(f"{a.name}{list(map(model.user, a.shape)) if a.shape else ''}"
                     f"{' (integers)' if a.integer else ''}" for a in model.arguments)
    lines = [f'"""gradcomp indexed kernel {model.name or "(unnamed)"}: generated code, do not edit.', "",
             f"Computes {model.output}{list(map(model.user, model.out_shape))} of {args}",
             f"for any sizes ({', '.join(meta.sizes) or 'none'}), in {len(model.stages)} stage(s) of loops:"]
    for number, (stage, (text, ops)) in enumerate(zip(model.stages, meta.stages)):
        loops = ", ".join(f"{model.user(lp.index)} in {model.user(lp.lo)}..{model.user(lp.hi)}" for lp in stage.loops)
        lines.append(f"    s{number} {stage.kind} into {_target_name(model, stage)} over ({loops or 'one term'}): "
                     f"{ops['forward']} ops/term (vjp {ops['vjp']})")
        lines.append(f"        {text}")
    passes: dict = {}
    for mode in "FJR":
        for members in (f[mode] for f in fusions.values() if f.get(mode)):
            passes.setdefault(members, []).append(mode)
    lines += [f"    {' and '.join(f's{n}' for n in members)}: one pass over their loops for {', '.join(modes)}"
              for members, modes in passes.items()]
    lines += ["Each body is a straight-line program of the values (slots) a term reads, run on",
              "blocks of terms in vector lanes (bodies of arithmetic only: scalar statements in the",
              "loops); derivatives are the body's own, added per slot.",
              f"Key {meta.key}, gradcomp {meta.gradcomp}.", '"""',
              "import math", "", "import numpy as np", "from numba import njit, prange", "",
              "from gradcomp.ir import block, lanes", "from gradcomp.record import LoopRecord", "",
              "# Numba caches machine code only for functions of a module that lives in a file.",
              'CACHE = "__file__" in globals()', "", "f32 = np.float32  # the casts of float32 statements", "",
              f'LANES = lanes("{model.dtype}")', "",
              "# Indices proved inside their arrays (checked before the loops run) index as unsigned:",
              "# Numba then skips its negative-index wraparound, whose selects keep loops from SIMD lanes.",
              "U = np.uint64", "", f"META = {meta!r}", "",
              f"L = {TERMS_PER_BLOCK}", f"DTYPE = np.{model.dtype}",
              "EMPTY = np.zeros(0, DTYPE)", "ZERO = np.zeros(1, DTYPE)  # a shared row: the tangent of a constant slot",
              "", "", *WRAP.splitlines(), "", ""]
    return "\n".join(lines)


def _target_name(model, stage) -> str:
    if stage.target == "Y":
        return f"{model.output}[{model.user(stage.position)}]"
    return f"{stage.target}[{model.user(stage.position)}]"


def _body_programs(stage: Stage, dtype: str):
    slots = [sp.Symbol(f"s{k}", real=True) for k in range(len(stage.slots))]
    expression = sp.sympify(eval(stage.body, vars(sp)))  # srepr text of our own analysis
    signature = make_signature(expression, [slots], dtype=dtype)
    return derive(signature, BODY_METHODS).programs


def _stage_source(model: LoopModel, number: int, stage: Stage, printer, programs: dict, inlines: list[dict],
                  fusions: dict, assigned: frozenset) -> tuple[str, dict]:
    p = f"s{number}"
    lines = [f"# ---- stage {p} " + "-" * 60, "#"]
    ops = {}
    for method, program in programs.items():
        body = listing(program, printer)
        ops[method] = count_operations(body)
        if method in ("forward", "vjp"):
            lines.append(f"# body {method} per term ({ops[method]} operations), slots:")
            lines += [f"#   s{k} = {_slot_text(model, slot)}" for k, slot in enumerate(stage.slots)]
            lines += [f"#   {line}" for line in body]
            lines += [f"#   out {b.name} = [{', '.join(printer(o) for o in b.operands)}]" for b in program.outputs]
        lines.append(f'{p}_{method}_CODE = """{instructions(program)}"""')
    inline = inlines[number]
    if inline:
        lines.append(f"# {' and '.join(inline)}: arithmetic only, inlined into the loops as scalar statements")
    width = len(stage.slots) * 3 + 2
    lines.append(f"{p}_W = LANES if {width} <= {VECTOR_ROW_MAX} else 1")
    for method in programs:
        lines.append(f'{p}_{method} = block("{p}_{method}", {p}_{method}_CODE, "{model.dtype}", {p}_W)')
    if _in_place(model, stage) is not None:
        lines.append("# in place: the slots read from the arguments' own rows, one input block each")
        for method, blocks in (("forward", 1), ("jvp", 2), ("vjp", 1)):
            if method not in inline:
                lines.append(f'{p}_{method}_rows = block("{p}_{method}_rows", '
                             f'"""{_split_slots(instructions(programs[method]), len(stage.slots), blocks)}""", '
                             f'"{model.dtype}", {p}_W)')
    lines += ["", ""]
    names = _names(model)
    lines += _per_row(model, stage, p) if _is_pair_nest(stage) else []
    lines += _count(model, stage, p) + _check(model, stage, p) + _bounds(model, stage, p)
    python = _inline_bodies(programs, printer, stage, python=True) if not stage.loops else {}
    for mode in "FJRH":
        members = fusions.get(number, {}).get(mode)
        if members == ():
            continue  # the first stage of its pass runs this one's terms
        if members:
            lines += _fused(model, members, mode, names[mode], inlines, assigned)
            continue
        lines += _python_twin(model, stage, p, mode, names[mode], python,
                              _driver(model, stage, p, mode, names[mode], inline, assigned))
    lines += _sparse_drivers(model, stage, p, names["F"], inline)
    return "\n".join(lines), ops


def _slot_text(model, slot) -> str:
    if slot.source in ("index", "zero"):
        return model.user(slot.flat) if slot.source == "index" else "0"
    if slot.source.startswith("A"):
        return f"{model.arguments[int(slot.source[1:])].name}.flat[{model.user(slot.flat)}]"
    return f"{slot.source}.flat[{model.user(slot.flat)}]"


def _loop_header(stage: Stage, chunked: bool, upto=None) -> list[str]:
    """The loop statements of the nest (outermost chunked: ``c_lo .. c_hi``), each one level deeper."""
    lines = []
    loops = stage.loops if upto is None else stage.loops[:upto]
    for depth, loop in enumerate(loops):
        pad = "    " * depth
        if depth == 0 and chunked:
            lines.append(f"{pad}for {loop.index} in range(c_lo, c_hi):")
        else:
            lines.append(f"{pad}for {loop.index} in range({loop.lo}, {loop.hi} + 1):")
    return lines


def _indent(lines, levels):
    return ["    " * levels + line for line in lines]


def _is_pair_nest(stage: Stage) -> bool:
    """Two loops, the outer over a range of the sizes, the inner's bounds affine in the outer index and the
    sizes (a pair triangle ``j = i + 1 .. n - 1``): its terms per row, chunks and index checks then have
    a closed form in NumPy (``_per_row``), with nothing to compile on a kernel's first call."""
    if len(stage.loops) != 2 or not all(_of_sizes(text) for text in (stage.loops[0].lo, stage.loops[0].hi)):
        return False
    outer, inner = stage.loops
    sized = [re.sub(rf"\b{outer.index}\b", "N0", text) for text in (inner.lo, inner.hi)]
    return all(_of_sizes(text) and not re.search(r"\*\*|/|%", text) for text in sized)


def _per_row(model, stage, p) -> list[str]:
    """``<p>_per_row``: the outer rows of a pair nest and each one's terms, in NumPy."""
    params = [*model.sizes, *[f"A{k}" for k in range(len(model.arguments))]]
    outer, inner = stage.loops
    return [f"def {p}_per_row({', '.join(params)}):",
            '    """The outer loop\'s rows and the terms of each (the inner range\'s length), in NumPy."""',
            f"    {outer.index} = np.arange({outer.lo}, ({outer.hi}) + 1, dtype=np.int64)",
            f"    return {outer.index}, np.maximum(0, np.asarray(({inner.hi}) - ({inner.lo}) + 1, np.int64) "
            f"+ 0 * {outer.index})", "", ""]


def _count(model, stage, p) -> list[str]:
    params = [*model.sizes, *[f"A{k}" for k in range(len(model.arguments))], "c_lo", "c_hi"]
    lines = ['@njit(cache=CACHE, nogil=True, error_model="numpy")', f"def {p}_count({', '.join(params)}):",
             '    """Terms of the chunk c_lo .. c_hi - 1 of the outermost loop."""']
    if not stage.loops:
        return lines + ["    return 1", "", ""]
    if len(stage.loops) == 1:
        return lines + ["    return max(0, c_hi - c_lo)", "", ""]
    last = stage.loops[-1]
    lines.append("    total = 0")
    lines += _indent(_loop_header(stage, True, len(stage.loops) - 1), 1)
    lines.append("    " * len(stage.loops) + f"total += max(0, {last.hi} - {last.lo} + 1)")
    return lines + ["    return total", "", ""]


def _check(model, stage, p) -> list[str]:
    """(-1, 0) when every index is inside its array, else (check number, the index's value)."""
    params = [*model.sizes, *[f"A{k}" for k in range(len(model.arguments))]]
    lines = ['@njit(cache=CACHE, nogil=True, error_model="numpy")', f"def {p}_check({', '.join(params)}):"]

    def tests(kinds, wrap="wrap("):
        out = []
        for number, check in enumerate(stage.checks):
            if check.gather in kinds:
                out += [f"v = {check.index.replace('wrap(', wrap)}", f"if v < 0 or v >= {check.extent}:",
                        f"    return {number}, v"]
        return out

    if not stage.checks:  # plain Python: nothing to compile (a Numba function costs 0.1-0.4 s of a first call)
        return [f"def {p}_check({', '.join(params)}):", '    """Every index proved inside its array."""',
                "    return -1, 0", "", ""]
    if not stage.loops:
        return lines + _indent(tests((False, True)), 1) + ["    return -1, 0", "", ""]
    if (_is_box(stage)
            and all(not c.gather and _affine_or_wrapped(c.index) for c in stage.checks)):
        # A box of loops and indices affine in them: each index is extreme at a corner of the box, so
        # the corners are all there is to check, in plain Python (nothing to compile).  A wrapped index
        # is inside its period whenever that is not empty, so a corner checks it too.
        empty = " or ".join(f"({lp.hi}) < ({lp.lo})" for lp in stage.loops)
        corners = [f"{'    ' * depth}for {lp.index} in ({lp.lo}, {lp.hi}):" for depth, lp in enumerate(stage.loops)]
        return [lines[1], '    """Each index at the corners of the loops\' box."""', f"    if {empty}:",
                "        return -1, 0", *_indent(corners, 1),
                *_indent(tests((False,), "wrap_python("), len(stage.loops) + 1), "    return -1, 0", "", ""]
    if _is_pair_nest(stage) and all(not c.gather and _affine_or_wrapped(c.index) for c in stage.checks):
        # An affine index is extreme, in each row, at the row's first or last term, and along those (affine
        # in the outer index) at the first or last row that has terms: four corners, in plain Python.
        outer, inner = stage.loops
        return [lines[1], '    """Each index at the corners of the nest (first and last non-empty rows)."""',
                f"    rows, per = {p}_per_row({', '.join(params)})", "    full = np.flatnonzero(per)",
                "    if full.size == 0:", "        return -1, 0",
                f"    for {outer.index} in (int(rows[full[0]]), int(rows[full[-1]])):",
                f"        for {inner.index} in ({inner.lo}, {inner.hi}):",
                *_indent(tests((False,), "wrap_python("), 3), "    return -1, 0", "", ""]
    last = stage.loops[-1]
    outer = _indent(_loop_header(stage, False, len(stage.loops) - 1), 1)
    depth = len(stage.loops)
    inner = [f"lo = {last.lo}", f"hi = {last.hi}", "if lo <= hi:"]
    if not all(c.gather for c in stage.checks):
        inner += [f"    for {last.index} in (lo, hi):", *_indent(tests((False,)), 2)]
    if any(c.gather for c in stage.checks):
        inner += [f"    for {last.index} in range(lo, hi + 1):", *_indent(tests((True,)), 2)]
    return lines + outer + _indent(inner, depth) + ["    return -1, 0", "", ""]


def _bounds(model, stage, p) -> list[str]:
    """``BND``: the first row of each chunk of the outermost loop, then its end; from the sizes (and
    index data) only, never the thread count, so that sums add in one order.  Rectangular nests
    cut equal rows in closed form; nests whose inner ranges depend on the outer index (pair
    triangles) cut by a scan of the terms per row, so that every chunk does about the same work."""
    params = [*model.sizes, *[f"A{k}" for k in range(len(model.arguments))]]
    least = _spread(model, stage)
    lines = ['@njit(cache=CACHE, nogil=True, error_model="numpy")', f"def {p}_bounds({', '.join(params)}):",
             f'    """Chunk boundaries: about {TERMS_PER_CHUNK} terms, at least {least} row(s) each."""']
    if not stage.loops:  # plain Python: nothing to compile
        return [f"def {p}_bounds({', '.join(params)}):",
                '    """One chunk: the single term."""', "    return np.arange(2, dtype=np.int64)", "", ""]
    if _is_box(stage):
        return _bounds_closed_form(stage, p, params, least)
    if _is_pair_nest(stage):
        return [f"def {p}_bounds({', '.join(params)}):",
                f'    """Chunk boundaries: about {TERMS_PER_CHUNK} terms, at least {least} row(s) each, in NumPy."""',
                f"    rows, per = {p}_per_row({', '.join(params)})", "    if rows.size == 0:",
                f"        return np.full(1, {stage.loops[0].lo}, np.int64)",
                "    ends = np.cumsum(per)  # a chunk ends after the row whose running total reaches the next "
                f"multiple of {TERMS_PER_CHUNK}",
                f"    marks = np.arange({TERMS_PER_CHUNK}, ends[-1], {TERMS_PER_CHUNK})",
                "    cuts = np.unique(np.searchsorted(ends, marks, side='left') + 1)",
                "    kept, last = [0], 0", "    for cut in cuts.tolist():",
                f"        if cut - last >= {least} and rows.size - cut >= {least}:",
                "            kept.append(cut)", "            last = cut",
                "    kept.append(rows.size)", "    return rows[0] + np.array(kept, np.int64)", "", ""]
    first = stage.loops[0]
    count = f"{p}_count({', '.join(params)}"
    lines += [f"    lo, hi = {first.lo}, {first.hi}", "    if hi < lo:", "        BND = np.empty(1, np.int64)",
              "        BND[0] = lo", "        return BND",
              f"    least = {least}"]
    triangular = any(re.search(rf"\b{first.index}\b", lp.lo + lp.hi) for lp in stage.loops[1:])
    if not triangular:
        return lines + [f"    per = {count}, lo, lo + 1)",
                        f"    length = max(least, {TERMS_PER_CHUNK} // max(1, per))",
                        "    chunks = max(1, (hi - lo + 1) // length)",
                        "    BND = np.empty(chunks + 1, np.int64)", "    for c in range(chunks):",
                        "        BND[c] = lo + length * c", "    BND[chunks] = hi + 1",
                        "    return BND", "", ""]
    return lines + ["    BND = np.empty(hi - lo + 2, np.int64)", "    BND[0] = lo", "    chunks = 0",
                    "    terms = 0", "    for r in range(lo, hi + 1):", f"        terms += {count}, r, r + 1)",
                    f"        if terms >= {TERMS_PER_CHUNK} and r + 1 - BND[chunks] >= least:",
                    "            chunks += 1", "            BND[chunks] = r + 1", "            terms = 0",
                    "    if BND[chunks] <= hi:",
                    "        if chunks == 0 or hi + 1 - BND[chunks] >= least:", "            chunks += 1",
                    "        BND[chunks] = hi + 1", "    return BND[:chunks + 1].copy()", "", ""]


def _affine_or_wrapped(text: str) -> bool:
    """Python text of an index affine in loop indices and sizes, or such an index wrapped by a size."""
    wrapped = re.fullmatch(r"wrap\((.*), (N\d+)\)", text)
    return re.fullmatch(r"[\sNi\d()+\-*]*", wrapped.group(1) if wrapped else text) is not None


def _of_sizes(text: str) -> bool:
    """Python text of integers and sizes only (no loop index, no argument)."""
    return re.fullmatch(r"[\sN\d()+\-*/%]*", text) is not None


def _sized_only(stage: Stage) -> bool:
    """The loops' ranges read no argument (index data): chunk boundaries, and checks of indices that
    are no gathers, then depend on the sizes alone."""
    return not any(re.search(r"\bA\d", lp.lo + lp.hi) for lp in stage.loops)


def _is_box(stage: Stage) -> bool:
    """Every loop's range from the sizes alone (no outer index): a box, whatever the sizes."""
    return all(_of_sizes(text) for lp in stage.loops for text in (lp.lo, lp.hi))


def _terms_per_row(stage: Stage) -> str:
    """Python text: the terms per row of a box's outermost loop."""
    return " * ".join(f"max(0, ({lp.hi}) - ({lp.lo}) + 1)" for lp in stage.loops[1:]) or "1"


def _bounds_closed_form(stage: Stage, p: str, params: list[str], least: int) -> list[str]:
    """``_bounds`` of a box (every range from the sizes alone) in plain Python: the same chunks as the
    Numba scan would cut, without a Numba function to compile on a kernel's first call."""
    first, per = stage.loops[0], _terms_per_row(stage)
    return [f"def {p}_bounds({', '.join(params)}):",
            f'    """Chunk boundaries: about {TERMS_PER_CHUNK} terms, at least {least} row(s) each (closed form)."""',
            f"    lo, hi = {first.lo}, {first.hi}", "    if hi < lo:", "        return np.full(1, lo, np.int64)",
            f"    length = max({least}, {TERMS_PER_CHUNK} // max(1, {per}))",
            "    chunks = max(1, (hi - lo + 1) // length)",
            "    BND = lo + length * np.arange(chunks + 1, dtype=np.int64)", "    BND[chunks] = hi + 1",
            "    return BND", "", ""]


def _plan(model, stage) -> dict:
    """Per source whose adjoint a stage adds into: ``direct`` (chunks never share its elements),
    ``banded`` (they share only with a neighbouring chunk: chunks run in alternating phases) or
    ``copies`` (anything: each group of chunks adds into a private copy, summed in a fixed order)."""
    plan = {}
    for source in dict.fromkeys(s.source for s in stage.slots if _has_tangent(model, s.source)):
        slots = [s for s in stage.slots if s.source == source]
        if not stage.loops:
            plan[source] = "direct"
        elif any(s.axis < 0 for s in slots) or len({s.axis for s in slots}) > 1:
            plan[source] = "copies"
        else:
            plan[source] = "direct" if len({s.shift for s in slots}) == 1 else "banded"
    return plan


def _spread(model, stage) -> int:
    """Rows a chunk must have so that chunks two apart never share an element of a banded source."""
    plan = _plan(model, stage)
    spreads = [max(s.shift for s in stage.slots if s.source == source) -
               min(s.shift for s in stage.slots if s.source == source)
               for source, how in plan.items() if how == "banded"]
    return max([1, *spreads])


def _has_tangent(model, source) -> bool:
    return source.startswith("T") or (source.startswith("A") and int(source[1:]) in model.wrt)


INLINE_OPS = frozenset({"load", "store", "const", "add", "sub", "mul", "div", "neg"})
"""Bodies of these operations only run as scalar statements inside the loops: with nothing for the vector
math to do, the gather into slot buffers and the core call cost more than the arithmetic (a 2-D stencil:
5x), and the core is one function less to compile."""
_UNIT_NAMES = re.compile(r"c|ch|t|u|b|e|acc\d*|first|last|BND|PART|S|O|P|V|G|FL|DV|G2|D|c_lo|c_hi|in_\w+|lo|hi|"
                         r"length|blocks|block|U|[NAiCYqgw]\d*|k\d+_\d+|ok\d+|[bdh]\w*|\w*_t\d+")


_NUMPY_OF = {"exp": "exp", "log": "log", "sqrt": "sqrt", "sin": "sin", "cos": "cos", "tan": "tan", "tanh": "tanh",
             "sinh": "sinh", "cosh": "cosh", "asin": "arcsin", "acos": "arccos", "atan": "arctan",
             "atan2": "arctan2", "expm1": "expm1", "log1p": "log1p", "copysign": "copysign"}
"""A listing's ``math`` functions that run as plain Python (``_python_twin``), as NumPy's: on NumPy scalars
they give IEEE results (log(0) = -inf, sqrt(-1) = nan) as the compiled code does, where ``math`` raises."""
_PYTHON_CASTS = frozenset({"f32(", "DTYPE(", "U(", "float(", "abs("})


def _inline_bodies(programs, printer, stage: Stage, python: bool = False) -> dict:
    """Per body method of arithmetic only (with ``python``: of anything whose listing is plain Python, math's
    functions included): (its inputs' names per block, its statements, its outputs' texts per block).
    None of its names may be one of the loop unit's own."""
    found = {}
    for method in BODY_METHODS:
        program = programs[method]
        statements = listing(program, printer)
        if python:
            calls = {m.group(0) for line in statements for m in re.finditer(r"(?<![\w.])[\w.]+\(", line)}
            if any(call not in _PYTHON_CASTS and call[5:-1] not in _NUMPY_OF for call in calls):
                continue
            statements = [re.sub(r"(?<![\w.])math\.(\w+)\(", lambda m: f"np.{_NUMPY_OF[m.group(1)]}(", line)
                          for line in statements]
        elif {line.split()[1] for line in instructions(program).splitlines()[2:]} - INLINE_OPS:
            continue
        names = [[symbol.name for symbol in b.operands] for b in program.inputs]
        if any(_UNIT_NAMES.fullmatch(name) for name in [*sum(names, []), *(a.target.name for a in
                                                                             program.assignments)]):
            continue
        found[method] = (names, statements, [[printer(o) for o in b.operands] for b in program.outputs])
    return found


_BODY_OF = {"F": "forward", "J": "jvp", "R": "vjp"}
"""The body method a driver mode runs per term."""


def _term_reads(model: LoopModel, stage: Stage, mode: str, names) -> list[str]:
    """An inline body's inputs for one term of mode ``F``, ``J`` or ``R``: its slots' values, then their
    tangents (``J``) or the cotangent of the target element (``R``)."""
    reads = _slot_reads(names[0], stage)
    if mode == "J":
        reads += [f"{name} = {_read(slot, 'd') if _has_tangent(model, slot.source) else '0.0'}"
                  for name, slot in zip(names[1], stage.slots)]
    elif mode == "R":
        reads.append(f"{names[1][0]} = b{stage.target}[U({stage.position})]")
    return reads


def _slot_reads(names: list[str], stage: Stage, prefix: str = "") -> list[str]:
    """An inline body's inputs: each slot's value (``prefix`` "d": its tangent) into the body's name."""
    return [f"{name} = {_read(slot, prefix)}" for name, slot in zip(names, stage.slots)]


def _driver(model: LoopModel, stage: Stage, p: str, mode: str, params: list[str], inline: dict,
            assigned: frozenset = frozenset()) -> list[str]:
    """One driver; for ``R``/``H`` also the function that runs one unit of chunks (see ``_plan``)."""
    K = len(stage.slots)
    plan = _plan(model, stage) if mode in "RH" else {}
    scatter = [(k, s) for k, s in enumerate(stage.slots) if s.source in plan]
    copied = [source for source, how in plan.items() if how == "copies"]
    banded = any(how == "banded" for how in plan.values())
    constant = stage.kind == "reduce" and not stage.partitioned and bool(stage.loops)
    prefix = {"F": "", "J": "d", "R": "b", "H": "h"}[mode]
    target = prefix + stage.target

    per_term = []
    for k, slot in enumerate(stage.slots):
        per_term.append(f"S[c, {k}] = {_read(slot, '')}")
        if mode in "JH":
            per_term.append(f"D[c, {k}] = {_read(slot, 'd') if _has_tangent(model, slot.source) else '0.0'}")
    if mode in "FJ":
        if stage.loops and not constant:
            per_term.append(f"P[c] = {stage.position}")
    else:
        per_term.append(f"V[c, 0] = b{stage.target}[{stage.position}]")
        if mode == "H":
            per_term.append(f"DV[c, 0] = h{stage.target}[{stage.position}]")
        per_term += [f"FL[c, {k}] = {slot.flat}" for k, slot in scatter]
    per_term.append("c += 1")

    flush = [f"for b in range(0, c, {p}_W):"]
    if mode == "F":
        flush += [f"    {p}_forward(b, c, (S,), (1,), (O,))"]
    elif mode == "J":
        flush += [f"    {p}_jvp(b, c, (S, D), (1, 1), (O,))"]
    elif mode == "R":
        flush += [f"    {p}_vjp(b, c, (S, V), (1, 1), (G,))"]
    else:
        flush += [f"    {p}_vjp(b, c, (S, DV), (1, 1), (G,))",
                  f"    {p}_vjp_jvp(b, c, (S, V, D), (1, 1, 1), (O, G2))"]
    flush.append("for t in range(c):")
    if mode in "FJ":
        if constant:  # ACCUMULATORS sums side by side: one chain of dependent additions is latency-bound
            lanes = [f"acc{a}" for a in range(ACCUMULATORS)]
            flush[-1] = f"for t in range(0, c - c % {ACCUMULATORS}, {ACCUMULATORS}):"
            flush += [f"    {name} += O[t + {a}, 0]" for a, name in enumerate(lanes)]
            flush += [f"for t in range(c - c % {ACCUMULATORS}, c):", "    acc0 += O[t, 0]"]
        elif not stage.loops:
            flush.append(f"    {target}[{stage.position}] {'=' if stage.kind == 'write' else '+='} O[t, 0]")
        else:
            flush.append(f"    {target}[P[t]] {'=' if stage.kind == 'write' else '+='} O[t, 0]")
    else:
        value = "G[t, {k}]" if mode == "R" else "(G[t, {k}] + G2[t, {k}])"
        for k, slot in scatter:
            into = f"C{copied.index(slot.source)}[u, FL[t, {k}]]" if slot.source in copied else \
                f"{prefix}{slot.source}[U(FL[t, {k}])]"
            flush.append(f"    {into} {'=' if mode == 'R' and slot.source in assigned else '+='} {value.format(k=k)}")
    if len(flush) == 2:  # nothing to add: the adjoints of constants
        flush = []
    flush.append("c = 0")

    buffers = [f"S = np.empty((L, {K}), DTYPE)"]
    if mode in "JH":
        buffers.append(f"D = np.empty((L, {K}), DTYPE)")
    if mode in "FJ":
        buffers += ["O = np.empty((L, 1), DTYPE)", "P = np.empty(L, np.int64)", "acc = 0.0"]
    else:
        buffers += ["V = np.empty((L, 1), DTYPE)", f"G = np.empty((L, {K}), DTYPE)",
                    f"FL = np.empty((L, {K}), np.int64)"]
        if mode == "H":
            buffers += ["DV = np.empty((L, 1), DTYPE)", f"G2 = np.empty((L, {K}), DTYPE)",
                        "O = np.empty((L, 1), DTYPE)"]
    buffers.append("c = 0")

    chunk = ["c_lo = BND[ch]", "c_hi = BND[ch + 1]"] if stage.loops else []
    terms = [*chunk, *_blocked_gather(stage, per_term, flush)]
    body_method = _BODY_OF.get(mode)
    rows = _in_place(model, stage) if body_method is not None and body_method not in inline else None
    if rows is not None:  # flush's lines after the core call, on rows rs + t instead of buffered positions
        position = re.sub(rf"\b{stage.loops[0].index}\b", "(rs + t)", stage.position)
        consume = [line.replace("P[t]", f"U({position})") for line in flush[2:-1]]
        for k, slot in scatter:
            flat = re.sub(rf"\b{stage.loops[0].index}\b", "(rs + t)", slot.flat)
            consume = [line.replace(f"FL[t, {k}]", flat) for line in consume]
        terms = [*chunk, *_in_place_terms(model, stage, p, mode, rows, consume)]
        buffers = [b for b in buffers if not b.startswith(("S =", "D =", "V =", "FL =", "P ="))]
    kind = {"F": "values", "J": "tangents", "R": "slot adjoints", "H": "tangents of the slot adjoints"}[mode]
    head = ['@njit(cache=CACHE, nogil=True, parallel=True, error_model="numpy")',
            f"def {p}_{mode}({', '.join([*params, 'BND'])}):", f'    """Stage {p}: its terms\' {kind}."""',
            "    NC = BND.size - 1"]
    if mode in "FJ" and body_method in inline:
        per = _inline_term(model, stage, mode, inline[body_method], "acc +=" if constant else None)
        terms, buffers = [*chunk, *_inline_nest(stage, per)], []
    if mode == "R" and body_method in inline:
        part = _gather_part(model, stage, inline[body_method])
        if part is not None:
            return gather_adjoint([part], part[1], p, params, _extents(model), TERMS_PER_CHUNK, assigned=assigned)
        names, statements, outputs = inline[body_method]
        per = [*_term_reads(model, stage, mode, names), *statements]
        for k, slot in scatter:
            into = f"C{copied.index(slot.source)}[u, {slot.flat}]" if slot.source in copied else \
                f"{prefix}{slot.source}[U({slot.flat})]"
            per.append(f"{into} += {outputs[0][k]}")
        terms, buffers = [*chunk, *_inline_nest(stage, per)], []
    if mode in "FJ":
        buffers = [b for b in buffers if b != "acc = 0.0"]
        if constant and buffers:
            lanes = [f"acc{a}" for a in range(ACCUMULATORS)]
            per_chunk = [f"{' = '.join(lanes)} = 0.0", *terms, f"PART[ch] = {_pairwise(lanes)}"]
        else:
            per_chunk = ["acc = 0.0", *terms, "PART[ch] = acc"] if constant else terms
        total = ["    total = 0.0", "    for ch in range(NC):", "        total += PART[ch]",
                 f"    {target}[{stage.position}] += total"] if constant else []
        return _chunked(p, mode, [*params, "BND"], buffers, per_chunk, kind, total)

    # R/H: a unit is one chunk, or (with private copies) a group of chunks, run serially
    copies = [f"C{j}" for j in range(len(copied))]
    unit_params = [*params, "BND", "u", "first", "last", *copies]
    unit = ['@njit(cache=CACHE, nogil=True, error_model="numpy")', f"def {p}_{mode}_unit({', '.join(unit_params)}):",
            f'    """Stage {p}: the {kind} of chunks first .. last - 1 (unit u)."""', *_indent(buffers, 1),
            "    for ch in range(first, last):", *_indent(terms, 2), "", ""]
    call = f"{p}_{mode}_unit({', '.join([*params, 'BND', 'u', *_unit_range(bool(copied)), *copies])})"
    lines = list(head)
    if copied:
        total = " + ".join(f"{prefix}{source}.size" for source in copied)
        lines += [f"    units = min(NC, max(2, min({MAX_COPIES}, {COPY_BUDGET} // max(1, {total}))))"]
        lines += [f"    C{j} = np.zeros((units, {prefix}{source}.size), DTYPE)" for j, source in enumerate(copied)]
    else:
        lines.append("    units = NC")
    if banded:
        wrap = any(s.wrap for s in stage.slots if plan.get(s.source) == "banded")
        lines += [f"    alone = units - 1 if {wrap} and units % 2 == 1 and units > 1 else units",
                  "    for phase in range(2):", "        for q in prange((alone - phase + 1) // 2):",
                  "            u = 2 * q + phase", f"            {call}",
                  "    for u in range(alone, units):", f"        {call}"]
    else:
        lines += ["    for u in prange(units):", f"        {call}"]
    # The serial twin in plain Python around the compiled unit (a Numba function of its own cost a first
    # call 0.2-0.5 s): the same units in the same order, and copies added in copy order, so the same bits.
    serial = [f"def {p}_{mode}_serial({', '.join([*params, 'BND'])}):",
              f'    """Stage {p}: its terms\' {kind}, on the calling thread (plain Python around the unit)."""',
              *[line.replace("prange(", "range(") for line in lines[3:]]]
    if copied:  # one chunk (small models' single calls): it adds into the adjoints themselves, no copies
        serial[3:3] = ["    if NC == 1:", "        u, units = 0, 1",
                       *[f"        C{j} = {prefix}{source}.reshape(1, -1)" for j, source in enumerate(copied)],
                       f"        {call}", "        return"]
    for j, source in enumerate(copied):
        into = f"{prefix}{source}"
        lines += [f"    for block in prange(({into}.size + {REDUCE_BLOCK - 1}) // {REDUCE_BLOCK}):",
                  f"        e0, e1 = block * {REDUCE_BLOCK}, min({into}.size, (block + 1) * {REDUCE_BLOCK})",
                  "        for g in range(units):", "            for e in range(e0, e1):",
                  f"                {into}[e] += C{j}[g, e]"]
        serial += ["    for g in range(units):", f"        {into} += C{j}[g]"]
    return [*unit, *lines, "", "", *serial, "", ""]


def _in_place(model: LoopModel, stage: Stage) -> list[tuple[str, int]] | None:
    """For a single loop over a range of the sizes whose every slot is a float argument's element
    ``i + shift`` (a row per term, contiguous) or one element for all terms (a shared row), and whose
    target position (its adjoint's, in ``R``) is one of those too: per slot, then for the target, the
    array the core reads a block of terms from, starting at the block's first term ``rs``, and its step
    (1 or 0).  The core then reads them in place, with no copy into slot buffers and no index buffer
    for the scatter (logsumexp's VJP spent more on those than on its arithmetic).  Else None."""
    if len(stage.loops) != 1 or not _is_box(stage):
        return None
    index = re.compile(rf"\b{stage.loops[0].index}\b")
    affine = re.compile(rf"\(?(-?\d+ \+ )?{stage.loops[0].index}( [+-] \d+)?\)?")  # i + c, as SymPy prints it
    rows = []
    for slot in stage.slots:
        source = slot.source
        if source[:1] not in "AT" or (
                source[0] == "A" and model.arguments[int(source[1:])].integer):
            return None
        if not index.search(slot.flat):
            rows.append((f"{source}[{slot.flat}:]", 0))
        elif source[0] == "A" and len(slot.coords) == 1 and slot.axis == 0 and not slot.wrap:  # i + shift
            start = f"rs {'+' if slot.shift > 0 else '-'} {abs(slot.shift)}" if slot.shift else "rs"
            rows.append((f"{source}[{start}:]", 1))
        else:
            return None
    if not index.search(stage.position):
        rows.append((f"{stage.target}[{stage.position}:]", 0))
    elif affine.fullmatch(stage.position):
        rows.append((f"{stage.target}[{index.sub('rs', stage.position)}:]", 1))
    else:
        return None
    return rows


def _split_slots(code: str, slots: int, blocks: int = 1) -> str:
    """A body's instruction text with its first ``blocks`` input blocks (the slots' values, then for a jvp
    their tangents: one value per slot each) split into one block per slot, so that each slot's rows can
    come from an array of its own (``_in_place``)."""
    lines = code.split("\n")
    head = lines[0].split()
    out = ["in " + " ".join(["1"] * (slots * blocks) + head[1 + blocks:]), *lines[1:2]]
    for line in lines[2:]:
        parts = line.split(" ")
        if len(parts) == 4 and parts[1] == "load":
            block, position = int(parts[2]), int(parts[3])
            parts[2:] = ([str(block * slots + position), "0"] if block < blocks
                         else [str(block - blocks + slots * blocks), str(position)])
        out.append(" ".join(parts))
    return "\n".join(out)


def _in_place_terms(model: LoopModel, stage: Stage, p: str, mode: str, rows, consume: list[str]) -> list[str]:
    """``F``/``J``/``R`` of an ``_in_place`` stage: blocks of up to ``L`` terms from each chunk's first, the core
    reading the slots' rows where they are; ``consume`` then takes the block's ``c`` results (``O`` or
    ``G``) with ``i0`` (the loop index) at ``rs + t`` for row ``t``."""
    slots = rows[:len(stage.slots)]
    if mode == "F":
        inputs, outputs, method = slots, "(O,)", "forward"
    elif mode == "J":
        tangents = [("d" + text, step) if _has_tangent(model, slot.source) else ("ZERO", 0)
                    for (text, step), slot in zip(slots, stage.slots)]
        inputs, outputs, method = [*slots, *tangents], "(O,)", "jvp"
    else:
        inputs, outputs, method = [*slots, ("b" + rows[-1][0], rows[-1][1])], "(G,)", "vjp"
    arrays = ", ".join(text for text, _ in inputs) + ("," if len(inputs) == 1 else "")
    steps = ", ".join(str(step) for _, step in inputs) + ("," if len(inputs) == 1 else "")
    return ["for rs in range(c_lo, c_hi, L):", "    c = min(L, c_hi - rs)", f"    for b in range(0, c, {p}_W):",
            f"        {p}_{method}_rows(b, c, ({arrays}), ({steps}), {outputs})", *_indent(consume, 1)]


def _blocked_gather(stage: Stage, per_term: list[str], flush: list[str]) -> list[str]:
    """The loops that gather terms into the buffer rows ``c ..`` and ``flush`` every ``L`` of them: the
    innermost loop fills as many rows as the buffer has left in one branch-free run (``in_n`` of them
    from ``in_s``), which LLVM turns into vector copies, then tests once for a full buffer; the rest
    is flushed at the chunk's end by the same test in one or two loops (one copy of the flush, whose
    core call inlines the body's code), after the loops in deeper nests."""
    if not stage.loops:
        return [*per_term, "if c == L:", *_indent(flush, 1), *flush]
    depth, (lo, hi), last = len(stage.loops) - 1, _innermost_range(stage), stage.loops[-1]
    rows = [line.replace("[c, ", "[c + in_t, ").replace("P[c]", "P[c + in_t]") for line in per_term
            if line != "c += 1"]
    head, end = [f"while in_s <= {hi}:"], f" or in_s > {hi}" if depth == 0 else ""
    if depth == 1:  # the chunk's last row flushes the rest, even where it has no terms of its own
        head = [f"in_end = {stage.loops[0].index} == c_hi - 1", f"while in_s <= {hi} or (in_end and c > 0):"]
        end = f" or (in_end and in_s > {hi})"
    inner = [f"in_s = {lo}", *head, f"    in_n = max(0, min(L - c, {hi} + 1 - in_s))",
             "    for in_t in range(in_n):", f"        {last.index} = in_s + in_t", *_indent(rows, 2),
             "    c += in_n", "    in_s += in_n", f"    if c == L{end}:", *_indent(flush, 2)]
    return [*_loop_header(stage, True, depth), *_indent(inner, depth), *(flush if depth > 1 else [])]


def _pairwise(names: list[str]) -> str:
    """Python text adding ``names`` as a balanced tree, in a fixed order."""
    if len(names) == 1:
        return names[0]
    half = len(names) // 2
    return f"({_pairwise(names[:half])} + {_pairwise(names[half:])})"


def _innermost_range(stage: Stage) -> tuple[str, str]:
    """The inclusive range of a chunk's innermost loop: the chunk's own rows when it is the outermost."""
    last = stage.loops[-1]
    return ("c_lo", "c_hi - 1") if len(stage.loops) == 1 else (last.lo, last.hi)


def _inline_nest(stage: Stage, statements: list[str]) -> list[str]:
    """The chunk's loops around an inline body's statements, the innermost split where wraps vanish."""
    if not stage.loops:
        return statements
    depth = len(stage.loops) - 1
    inner = split_loop(stage.loops[-1].index, *_innermost_range(stage), statements)
    return [*_loop_header(stage, True, depth), *_indent(inner, depth)]


def _python_twin(model: LoopModel, stage: Stage, p: str, mode: str, params: list[str], python: dict,
                 lines: list[str]) -> list[str]:
    """``lines`` (a mode's drivers), whose serial twin, for a single term (no loops: a stage like
    ``log(_T0)`` of ``log(Sum(...))``) whose body is plain Python, runs the body's statements in Python:
    nothing to compile (its unit cost a first call 0.1-0.2 s) for one term, which never needs the
    parallel twin either.  NumPy's functions (``_NUMPY_OF``) round within an ulp of the vector math's."""
    method = _BODY_OF.get(mode)
    if stage.loops or method not in python:
        return lines
    if mode in "FJ":
        body = _inline_term(model, stage, mode, python[method])
    else:
        names, statements, outputs = python[method]
        body = [*_term_reads(model, stage, mode, names), *statements,
                *[f"b{slot.source}[U({slot.flat})] += {outputs[0][k]}" for k, slot in enumerate(stage.slots)
                  if _has_tangent(model, slot.source)]]
    head = f"def {p}_{mode}_serial("
    start = next(n for n, line in enumerate(lines) if line.startswith(head))
    end = next((n for n in range(start + 1, len(lines)) if lines[n][:1] not in ("", " ")), len(lines))
    twin = [f"{head}{', '.join([*params, 'BND'])}):",
            f'    """Stage {p}: its single term, in plain Python (nothing to compile)."""',
            '    with np.errstate(all="ignore"):  # IEEE results without warnings, as compiled', *_indent(body, 2),
            "", ""]
    return [*lines[:start], *twin, *lines[end:]]


def _inline_term(model: LoopModel, stage: Stage, mode: str, body, write: str | None = None) -> list[str]:
    """An inline body's statements for one term of mode ``F`` or ``J``: its reads, the body, and its value
    stored into the target element (``write``: another left side, a sum's ``acc +=``)."""
    names, statements, outputs = body
    target = {"F": "", "J": "d"}[mode] + stage.target
    write = write or f"{target}[U({stage.position})] {'=' if stage.kind == 'write' else '+='}"
    return [*_term_reads(model, stage, mode, names), *statements, f"{write} {outputs[0][0]}"]


def _extents(model: LoopModel) -> dict:
    return {f"A{k}": a.shape for k, a in enumerate(model.arguments)}


def _gather_part(model: LoopModel, stage: Stage, body):
    """What ``loopstencil.gather_adjoint`` needs of a stage whose inline adjoint gathers per element:
    (stage, its gather plan, the body's VJP, each slot's read, the cotangent), when the stage is a box
    of loops whose every read of a differentiated argument is a stencil (``i + shift`` or its wrap);
    else None."""
    if not stage.loops or not _is_box(stage):
        return None
    found = gather_plan(stage, list(_plan(model, stage)), _extents(model))
    if found is None:
        return None
    return stage, found, body, [_read(slot, "") for slot in stage.slots], f"b{stage.target}"


def _fused(model: LoopModel, members: tuple[int, ...], mode: str, params: list[str], inlines: list[dict],
           assigned: frozenset) -> list[str]:
    """The ``mode`` driver of stages that run as one pass (``_fusions``), named after the first: for ``F``
    and ``J`` each stage's inline term (its names suffixed ``_m<place>``) in the first's loops, for
    ``R`` one gather per element of all their terms."""
    p, label = f"s{members[0]}", f"Stages {', '.join(f's{n}' for n in members)}"
    bodies = [inlines[n][_BODY_OF[mode]] for n in members]
    if mode == "R":
        parts = [_gather_part(model, model.stages[n], body) for n, body in zip(members, bodies)]
        return gather_adjoint(parts, merge_plans([part[1] for part in parts]), p, params, _extents(model),
                              TERMS_PER_CHUNK, label, assigned)
    per = []
    for place, (n, body) in enumerate(zip(members, bodies)):
        names, statements, _ = body
        local = {*sum(names, []), *(line.split(" = ")[0] for line in statements)}
        per += [_renamed(line, local, f"_m{place}") for line in _inline_term(model, model.stages[n], mode, body)]
    terms = ["c_lo = BND[ch]", "c_hi = BND[ch + 1]", *_inline_nest(model.stages[members[0]], per)]
    return _chunked(p, mode, [*params, "BND"], [], terms, {"F": "values", "J": "tangents"}[mode], label=label)


def _chunked(p: str, mode: str, params: list[str], buffers: list[str], per_chunk: list[str], kind: str,
             total: list[str] = (), serial: list[str] | None = None, label: str | None = None) -> list[str]:
    """A driver over chunks that share nothing (but a sum's partial result per chunk, into ``PART`` when
    ``total`` adds them up): ``<p>_<mode>_unit`` runs chunks first .. last - 1; the parallel driver one
    chunk per ``prange`` iteration; its serial twin, plain Python with nothing more to compile (a Numba
    function of its own costs a first call 0.2-0.5 s), all of them in one call.  Both add the partial
    results in chunk order: the same bits.  ``serial`` replaces that twin (the NumPy pattern of a box)."""
    part = ["PART"] if total else []
    label = label or f"Stage {p}"
    args = ", ".join(params)
    allocate = ["    PART = np.zeros(NC)"] if total else []
    unit = ['@njit(cache=CACHE, nogil=True, error_model="numpy")',
            f"def {p}_{mode}_unit({', '.join([*params, 'first', 'last', *part])}):",
            f'    """{label}: the {kind} of chunks first .. last - 1."""', *_indent(buffers, 1),
            "    for ch in range(first, last):", *_indent(per_chunk, 2)]
    parallel = ['@njit(cache=CACHE, nogil=True, parallel=True, error_model="numpy")', f"def {p}_{mode}({args}):",
                f'    """{label}: its terms\' {kind}."""', "    NC = BND.size - 1", *allocate,
                "    for ch in prange(NC):", f"        {p}_{mode}_unit({', '.join([args, 'ch', 'ch + 1', *part])})",
                *total]
    serial = serial or [
        f"def {p}_{mode}_serial({args}):",
        f'    """{label}: its terms\' {kind}, on the calling thread (plain Python around the unit)."""',
        "    NC = BND.size - 1", *allocate, f"    {p}_{mode}_unit({', '.join([args, '0', 'NC', *part])})", *total]
    return [*unit, "", "", *parallel, "", "", *serial, "", ""]


def _sparse_slots(model, stage) -> list[tuple[int, Slot]]:
    """The slots whose partial derivatives are Jacobian entries: those of wrt arguments and temporaries."""
    return [(k, slot) for k, slot in enumerate(stage.slots) if _has_tangent(model, slot.source)]


def _sparse_drivers(model: LoopModel, stage: Stage, p: str, base: list[str], inline: dict) -> list[str]:
    """Sparse Jacobians and Hessians, one entry per term and sparse slot (per pair of them for ``SH``):

    - ``offsets``: the terms before each chunk, so that chunks know where their entries start;
    - ``P`` (pattern): per term its row (the target element) into ``ROW``, per entry its column (the
      slot's flat position in its source) into ``COL``;
    - ``S`` (values): the body's VJP with a cotangent of 1 gives every slot's partial derivative;
      entry ``e`` is stored into ``DATA[POS[e]]`` (its CSR position when no two entries share one, else
      ``POS`` is the identity and the runtime sums duplicates in order): every position is written by
      exactly one entry, so ``DATA`` needs no zeroing and no read;
    - ``SH``: the body's Hessian, column by column (forward over reverse along each sparse slot).
    """
    sparse = _sparse_slots(model, stage)
    KS = len(sparse)
    sizes_args = [*model.sizes, *[f"A{k}" for k in range(len(model.arguments))]]
    count = f"{p}_count({', '.join(sizes_args)}, BND[ch], BND[ch + 1])"
    if _is_box(stage):  # (or a single term) each row of the outermost loop has the same count: plain Python
        per = _terms_per_row(stage)
        lines = [f"def {p}_offsets({', '.join([*sizes_args, 'BND'])}):",
                 '    """Terms before each chunk (and all of them, last): rows times the terms per row."""',
                 "    OFF = np.zeros(BND.size, np.int64)", f"    np.cumsum(np.diff(BND) * ({per}), out=OFF[1:])",
                 "    return OFF", "", ""]
    elif _is_pair_nest(stage):  # the running total of the terms per row, at each chunk's first row
        lines = [f"def {p}_offsets({', '.join([*sizes_args, 'BND'])}):",
                 '    """Terms before each chunk (and all of them, last), in NumPy."""',
                 f"    rows, per = {p}_per_row({', '.join(sizes_args)})",
                 "    ends = np.zeros(per.size + 1, np.int64)", "    np.cumsum(per, out=ends[1:])",
                 f"    return ends[BND - ({stage.loops[0].lo})]", "", ""]
    else:
        lines = ['@njit(cache=CACHE, nogil=True, error_model="numpy")',
                 f"def {p}_offsets({', '.join([*sizes_args, 'BND'])}):",
                 '    """Terms before each chunk (and all of them, last)."""', "    NC = BND.size - 1",
                 "    OFF = np.empty(NC + 1, np.int64)", "    OFF[0] = 0", "    for ch in range(NC):",
                 f"        OFF[ch + 1] = OFF[ch] + {count}", "    return OFF", "", ""]
    chunk = ["c_lo = BND[ch]", "c_hi = BND[ch + 1]"] if stage.loops else []
    depth = len(stage.loops)
    # pattern
    per_term = [f"ROW[t] = {stage.position}", *[f"COL[t * {KS} + {j}] = {slot.flat}" for j, (_, slot) in
                                                 enumerate(sparse)], "t += 1"]
    body = ["t = OFF[ch]", *chunk, *_loop_header(stage, True), *_indent(per_term, depth)]
    lines += _chunked(p, "P", [*sizes_args, "BND", "OFF", "ROW", "COL"], [], body,
                      f"rows and their {KS} entries' columns",
                      serial=_pattern_of_box(stage, p, sizes_args, sparse) if _is_box(stage) else None)
    K = len(stage.slots)
    gather = [f"S[c, {k}] = {_read(slot, '')}" for k, slot in enumerate(stage.slots)] + ["c += 1"]
    for mode in ("S", "SH"):
        per = KS if mode == "S" else KS * KS
        buffers = [f"S = np.empty((L, {K}), DTYPE)", "V = np.ones((L, 1), DTYPE)", f"G = np.empty((L, {K}), DTYPE)"]
        if mode == "S":
            flush = [f"for b in range(0, c, {p}_W):", f"    {p}_vjp(b, c, (S, V), (1, 1), (G,))",
                     "for t in range(c):", f"    e = (tb + t) * {per}",
                     *[f"    DATA[POS[e + {j}]] = G[t, {k}]" for j, (k, _) in enumerate(sparse)]]
        else:  # the columns in a loop, not unrolled: one copy of the core in the unit (each inlines it)
            buffers += [f"D = np.zeros((L, {K}), DTYPE)", "O = np.empty((L, 1), DTYPE)"]
            slots = "".join(f"{kc}, " for kc, _ in sparse)
            flush = [f"for column in range({KS}):", f"    kc = ({slots})[column]", "    for t in range(c):",
                     "        D[t, kc] = 1.0", f"    for b in range(0, c, {p}_W):",
                     f"        {p}_vjp_jvp(b, c, (S, V, D), (1, 1, 1), (O, G))", "    for t in range(c):",
                     "        D[t, kc] = 0.0", f"        e = (tb + t) * {per} + column",
                     *[f"        DATA[POS[e + {j * KS}]] = G[t, {k}]" for j, (k, _) in enumerate(sparse)]]
        flush += ["tb += c", "c = 0"]
        body = ["c = 0", "tb = OFF[ch]", *chunk, *_blocked_gather(stage, gather, flush)]
        if mode == "SH" and "vjp_jvp" in inline:  # forward over reverse along each sparse slot, as statements
            names, statements, outputs = inline["vjp_jvp"]
            per_term = [*_slot_reads(names[0], stage), f"{names[1][0]} = DTYPE(1.0)", f"e = tb * {per}"]
            for column, (kc, _) in enumerate(sparse):
                per_term += [f"{name} = DTYPE({1.0 if k == kc else 0.0})" for k, name in enumerate(names[2])]
                per_term += [*statements, *[f"DATA[POS[e + {column + j * KS}]] = {outputs[1][k]}"
                                            for j, (k, _) in enumerate(sparse)]]
            body = ["tb = OFF[ch]", *chunk, *_loop_header(stage, True), *_indent([*per_term, "tb += 1"], depth)]
            buffers = []
        if mode == "S" and "vjp" in inline:  # the body's VJP with a cotangent of 1, as scalar statements
            names, statements, outputs = inline["vjp"]
            per_term = [*_slot_reads(names[0], stage), f"{names[1][0]} = DTYPE(1.0)", *statements, f"e = tb * {per}",
                        *[f"DATA[POS[e + {j}]] = {outputs[0][k]}" for j, (k, _) in enumerate(sparse)], "tb += 1"]
            body, buffers = ["tb = OFF[ch]", *chunk, *_loop_header(stage, True), *_indent(per_term, depth)], []
        what = "partial derivatives" if mode == "S" else "second partial derivatives"
        lines += _chunked(p, mode, [*base, "BND", "OFF", "POS", "DATA"], buffers, body,
                          f"{what}, stored into DATA at their positions POS")
    return lines


def _pattern_of_box(stage: Stage, p: str, sizes_args: list[str], sparse) -> list[str]:
    """``P``'s serial twin for a box of loops, in NumPy (nothing to compile): the loop indices as
    broadcast grids, each row and column expression evaluated on them at once, in the nest's order."""
    grids = [f"    {lp.index} = np.arange({'BND[0]' if depth == 0 else lp.lo}, "
             f"{'BND[-1]' if depth == 0 else f'({lp.hi}) + 1'}, dtype=np.int64)"
             f".reshape({', '.join('-1' if d == depth else '1' for d in range(len(stage.loops)))})"
             for depth, lp in enumerate(stage.loops)]
    shape = f"({', '.join(f'{lp.index}.size' for lp in stage.loops)}{',' * (len(stage.loops) == 1)})"
    KS = len(sparse)

    def whole(text):
        return f"np.broadcast_to(np.asarray({text.replace('wrap(', 'wrap_numpy(')}, np.int64), SHAPE).reshape(-1)"

    return [f"def {p}_P_serial({', '.join([*sizes_args, 'BND', 'OFF', 'ROW', 'COL'])}):",
            f'    """Stage {p}: its terms\' rows and their {KS} entries\' columns, in NumPy over the box."""',
            "    if OFF[-1] == 0:", "        return", *grids, f"    SHAPE = {shape}",
            f"    ROW[:] = {whole(stage.position)}", f"    COL2 = COL.reshape(-1, {KS})",
            *[f"    COL2[:, {j}] = {whole(slot.flat)}" for j, (_, slot) in enumerate(sparse)]]


def _unit_range(grouped: bool) -> tuple[str, str]:
    """The chunks of unit ``u``: a group of contiguous chunks (private copies) or chunk ``u`` itself."""
    return ("u * NC // units", "(u + 1) * NC // units") if grouped else ("u", "u + 1")


def _read(slot, prefix: str) -> str:
    if slot.source == "zero":
        return "0.0"
    if slot.source == "index":
        return f"float({slot.flat})" if not prefix else "0.0"
    return f"{prefix}{slot.source}[U({slot.flat})]"


def _tables(model: LoopModel, fusions: dict, assigned: frozenset) -> str:
    """What the runtime reads: shapes from sizes, the output's pieces, temporaries, the stages."""
    sizes = ", ".join(model.sizes)
    shapes = ", ".join("(" + "".join(f"{e}, " for e in a.shape) + ")" for a in model.arguments)
    out = "(" + "".join(f"{e}, " for e in model.out_shape) + ")"
    boxes = ", ".join("(" + "".join(f"({lo}, {hi}), " for lo, hi in piece.box) + ")" for piece in model.pieces)
    temps = ", ".join(" * ".join(t.extents) if t.extents else "1" for t in model.temps)
    modes = ("F", "J", "R", "H", "P", "S", "SH")
    def named(n, m, twin=""):  # None: the first stage of its pass runs this one's terms
        return "None" if fusions.get(n, {}).get(m) == () else f"s{n}_{m}{twin}"

    stages = ", ".join(
        f"(({', '.join(named(n, m) for m in modes)}), ({', '.join(named(n, m, '_serial') for m in modes)}), "
        f"s{n}_bounds, s{n}_check, {-1 if s.target == 'Y' else int(s.target[1:])}, s{n}_offsets, "
        f"{tuple(slot.source for _, slot in _sparse_slots(model, s))!r})" for n, s in enumerate(model.stages))
    checks = ", ".join("(" + "".join(f"({c.array!r}, {c.axis}, {model.user(c.index)!r}, {model.user(c.extent)!r}), "
                                     for c in s.checks) + ")" for s in model.stages)
    sized = ", ".join(f"({_sized_only(s) and not any(c.gather for c in s.checks)}, {_sized_only(s)})"
                      for s in model.stages)
    return "\n".join([
        "# ---- what the runtime reads " + "-" * 50,
        f"def extents({sizes}):", '    """The arguments\' core shapes and the output\'s, from the sizes."""',
        f"    return ({shapes}{',' if len(model.arguments) == 1 else ''}), {out}", "", "",
        f"def boxes({sizes}):", '    """Per equation of the output: the (first, last) elements it writes per axis."""',
        f"    return [{boxes}]", "", "",
        f"def temps({sizes}):", '    """The lengths of the temporaries (inner sums kept per outer index)."""',
        f"    return [{temps}]", "", "",
        "# per stage: value, tangent, adjoint, adjoint-tangent, sparse pattern, sparse Jacobian and Hessian",
        "# drivers (parallel, then serial; None where an earlier stage's pass runs its terms), chunk boundaries,",
        "# bounds check, target (-1: the output, else a temporary), terms before each chunk, the source of each",
        "# sparse slot",
        f"STAGES = [{stages}]", "",
        "# per stage: (argument, axis, index, extent) of each bounds check, for errors",
        f"CHECKS = [{checks}]", "",
        "# the arguments whose adjoint one gathering driver stores at every element: allocated uninitialized",
        f"ASSIGNED = {tuple(sorted(int(source[1:]) for source in assigned))!r}", "",
        "# per stage: whether its index checks, and its chunk boundaries, depend on the sizes alone (kept per sizes)",
        f"SIZED = [{sized}]", ""])
