"""Stage 3 for indexed models: a ``LoopModel`` -> the kernel module (loop drivers over SIMD bodies).

Per stage the module holds the body's methods as instruction text (``derive`` differentiates the
body as a function of its slots; ``gradcomp.ir`` builds each as a block of ``LANES`` terms) and
Numba drivers that walk the stage's terms:

- ``F`` the value, ``J`` its tangent, ``R`` the adjoints of the slots, ``H`` the tangents of those
  adjoints (forward over reverse, for ``hvp`` and ``vjp_jvp``);
- terms are gathered, ``TERMS_PER_BLOCK`` at a time, into rows of a small buffer, the body runs on
  them in vector lanes, and the results go to their target (written, or added in term order);
- the outermost loop is cut into chunks whose size depends only on the sizes, one ``prange``
  iteration each, so a sum's partial results and their order are the same for any thread count;
- adjoints of slots whose elements no two chunks share (``Slot.owned``) are added in place; the
  others are kept per term in a buffer of a bounded group of chunks and added serially, in term
  order (deterministic, race-free, memory independent of the number of terms);
- ``count`` (terms of a chunk) and ``check`` (every index against its extent, before anything is
  written) walk the loops without the body.

Generated code names only ``N<k>`` sizes, ``A<k>`` arguments, ``T<k>`` temporaries and ``Y`` the
output (all flat, C order), with ``d``/``b``/``h`` prefixes for tangents, adjoints and adjoints'
tangents: no user name reaches the code.
"""

from __future__ import annotations

import sympy as sp

from .codegen import VECTOR_ROW_MAX, Printer, count_operations, instructions, listing
from .derive import derive
from .indexed import LoopModel, Stage
from .record import LoopRecord
from .spec import make_signature
from .version import __version__

TERMS_PER_BLOCK = 256
"""Terms gathered before the body runs on them: a multiple of every vector width, small enough that
the buffer stays in the L1 cache."""

TERMS_PER_CHUNK = 4096
"""Terms of one chunk (one parallel task): its outermost-loop range is this many terms divided by the
terms of that loop's first index, whatever the thread count."""

CHUNKS_PER_GROUP = 64
"""Chunks whose shared adjoints wait in one buffer before they are added: bounds its memory."""

BODY_METHODS = ("forward", "vjp", "jvp", "vjp_jvp")


class Module:
    def __init__(self, source: str, meta: LoopRecord):
        self.source, self.meta = source, meta


def generate(model: LoopModel, key: str) -> Module:
    dtype = model.dtype
    printer = Printer(dtype)
    sections, stage_info = [], []
    for number, stage in enumerate(model.stages):
        text, ops = _stage_source(model, number, stage, printer)
        sections.append(text)
        stage_info.append((model.user(stage.text), ops))
    meta = LoopRecord(
        name=model.name, key=key, dtype=dtype,
        arguments=tuple((a.name, tuple(model.user(e) for e in a.shape), a.integer) for a in model.arguments),
        sizes=tuple(model.user(s) for s in model.sizes), size_sources=model.size_sources, wrt=model.wrt,
        output=model.output, out_ndim=len(model.out_shape), pieces=tuple(p.text for p in model.pieces),
        stages=tuple(stage_info), gradcomp=__version__)
    source = "\n".join([_header(model, meta), *sections, _tables(model)])
    return Module(source, meta)


def _names(model: LoopModel):
    arrays = [f"A{k}" for k in range(len(model.arguments))]
    temps = [t.name for t in model.temps]
    base = [*model.sizes, *arrays, *temps, "Y"]
    tangents = [f"d{a}" for a in (*arrays, *temps, "Y")]
    adjoints = [f"b{a}" for a in (*arrays, *temps, "Y")]
    adjoint_tangents = [f"h{a}" for a in (*arrays, *temps, "Y")]
    return {"F": base, "J": [*base, *tangents], "R": [*base, *adjoints],
            "H": [*base, *tangents, *adjoints, *adjoint_tangents]}


def _header(model: LoopModel, meta: LoopRecord) -> str:
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
    lines += ["Each body is a straight-line program of the values (slots) a term reads, run on",
              "blocks of terms in vector lanes; derivatives are the body's own, added per slot.",
              f"Key {meta.key}, gradcomp {meta.gradcomp}.", '"""',
              "import numpy as np", "from numba import njit, prange", "",
              "from gradcomp.ir import block, lanes", "from gradcomp.record import LoopRecord", "",
              "# Numba caches machine code only for functions of a module that lives in a file.",
              'CACHE = "__file__" in globals()', "",
              f'LANES = lanes("{model.dtype}")', "", f"META = {meta!r}", "",
              f"L = {TERMS_PER_BLOCK}", f"GROUP = {CHUNKS_PER_GROUP}", f"DTYPE = np.{model.dtype}",
              "EMPTY = np.zeros(0, DTYPE)", "", ""]
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


def _stage_source(model: LoopModel, number: int, stage: Stage, printer) -> tuple[str, dict]:
    programs = _body_programs(stage, model.dtype)
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
    width = len(stage.slots) * 3 + 2
    lines.append(f"{p}_W = LANES if {width} <= {VECTOR_ROW_MAX} else 1")
    for method in programs:
        lines.append(f'{p}_{method} = block("{p}_{method}", {p}_{method}_CODE, "{model.dtype}", {p}_W)')
    lines += ["", ""]
    names = _names(model)
    lines += _count(model, stage, p) + _check(model, stage, p) + _chunks(model, stage, p)
    for mode in "FJRH":
        lines += _driver(model, stage, p, mode, names[mode])
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

    def tests(kinds):
        out = []
        for number, check in enumerate(stage.checks):
            if check.gather in kinds:
                out += [f"v = {check.index}", f"if v < 0 or v >= {check.extent}:", f"    return {number}, v"]
        return out

    if not stage.checks:
        return lines + ["    return -1, 0", "", ""]
    if not stage.loops:
        return lines + _indent(tests((False, True)), 1) + ["    return -1, 0", "", ""]
    last = stage.loops[-1]
    outer = _indent(_loop_header(stage, False, len(stage.loops) - 1), 1)
    depth = len(stage.loops)
    inner = [f"lo = {last.lo}", f"hi = {last.hi}", "if lo <= hi:"]
    if not all(c.gather for c in stage.checks):
        inner += [f"    for {last.index} in (lo, hi):", *_indent(tests((False,)), 2)]
    if any(c.gather for c in stage.checks):
        inner += [f"    for {last.index} in range(lo, hi + 1):", *_indent(tests((True,)), 2)]
    return lines + outer + _indent(inner, depth) + ["    return -1, 0", "", ""]


def _chunks(model, stage, p) -> list[str]:
    params = [*model.sizes, *[f"A{k}" for k in range(len(model.arguments))]]
    lines = [f"def {p}_chunks({', '.join(params)}):",
             '    """(chunk length in the outermost loop, number of chunks): from the sizes only."""']
    if not stage.loops:
        return lines + ["    return 1, 1", "", ""]
    first = stage.loops[0]
    lines += [f"    lo, hi = {first.lo}, {first.hi}",
              "    if hi < lo:", "        return 1, 0",
              f"    per = {p}_count({', '.join(params)}, lo, lo + 1)",
              f"    length = max(1, {TERMS_PER_CHUNK} // max(1, per))",
              "    return length, (hi - lo + length) // length", "", ""]
    return lines


def _has_tangent(model, source) -> bool:
    return source.startswith("T") or (source.startswith("A") and int(source[1:]) in model.wrt)


def _driver(model: LoopModel, stage: Stage, p: str, mode: str, params: list[str]) -> list[str]:
    K = len(stage.slots)
    scatter = [(k, s) for k, s in enumerate(stage.slots) if mode in "RH" and _has_tangent(model, s.source)]
    shared = [(k, s) for k, s in scatter if not s.owned]
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
        if constant:
            flush.append("    acc += O[t, 0]")
        elif not stage.loops:
            flush.append(f"    {target}[{stage.position}] {'=' if stage.kind == 'write' else '+='} O[t, 0]")
        else:
            flush.append(f"    {target}[P[t]] {'=' if stage.kind == 'write' else '+='} O[t, 0]")
    else:
        value = "G[t, {k}]" if mode == "R" else "(G[t, {k}] + G2[t, {k}])"
        column = {k: j for j, (k, _) in enumerate(shared)}
        for k, slot in scatter:
            v = value.format(k=k)
            if slot.owned:
                flush.append(f"    {prefix}{slot.source}[FL[t, {k}]] += {v}")
            else:
                flush += [f"    BV[off + t, {column[k]}] = {v}", f"    BI[off + t, {column[k]}] = FL[t, {k}]"]
        if shared:
            flush.append("off += c")
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

    chunk = []
    if stage.loops:
        first = stage.loops[0]
        chunk = [f"c_lo = {first.lo} + ch * CH", f"c_hi = min({first.hi} + 1, c_lo + CH)"]
    nest = _loop_header(stage, True)
    depth = len(stage.loops)
    body = [*buffers, *(["off = OFF[ch - g0]"] if shared else []), *chunk, *nest,
            *_indent([*per_term, "if c == L:", *_indent(flush, 1)], depth), *flush]
    if constant and mode in "FJ":
        body.append("PART[ch] = acc")

    signature = ", ".join([*params, "CH", "NC"])
    kind = {"F": "values", "J": "tangents", "R": "slot adjoints", "H": "tangents of the slot adjoints"}[mode]
    lines = ['@njit(cache=CACHE, nogil=True, parallel=True, error_model="numpy")', f"def {p}_{mode}({signature}):",
             f'    """Stage {p}: its terms\' {kind}."""']
    if mode in "FJ":
        if constant:
            lines.append("    PART = np.zeros(NC)")
        lines += ["    for ch in prange(NC):", *_indent(body, 2)]
        if constant:
            lines += ["    total = 0.0", "    for ch in range(NC):", "        total += PART[ch]",
                      f"    {target}[{stage.position}] += total"]
    elif shared:
        count_args = ", ".join([*model.sizes, *[f"A{k}" for k in range(len(model.arguments))]])
        lines += ["    for g0 in range(0, NC, GROUP):", "        g1 = min(NC, g0 + GROUP)",
                  "        OFF = np.zeros(g1 - g0 + 1, np.int64)", "        for ch in range(g0, g1):",
                  *_indent(chunk, 3),
                  f"            OFF[ch - g0 + 1] = OFF[ch - g0] + {p}_count({count_args}"
                  f"{', c_lo, c_hi' if stage.loops else ', 0, 1'})",
                  f"        BV = np.empty((OFF[g1 - g0], {len(shared)}), DTYPE)",
                  f"        BI = np.empty((OFF[g1 - g0], {len(shared)}), np.int64)",
                  "        for ch in prange(g0, g1):", *_indent(body, 3),
                  "        for t in range(OFF[g1 - g0]):"]
        lines += [f"            {prefix}{slot.source}[BI[t, {j}]] += BV[t, {j}]" for j, (_, slot) in enumerate(shared)]
    else:
        lines += ["    for ch in prange(NC):", *_indent(body, 2)]
    return [*lines, "", ""]


def _read(slot, prefix: str) -> str:
    if slot.source == "zero":
        return "0.0"
    if slot.source == "index":
        return f"float({slot.flat})" if not prefix else "0.0"
    return f"{prefix}{slot.source}[{slot.flat}]"


def _tables(model: LoopModel) -> str:
    """What the runtime reads: shapes from sizes, the output's pieces, temporaries, the stages."""
    sizes = ", ".join(model.sizes)
    shapes = ", ".join("(" + "".join(f"{e}, " for e in a.shape) + ")" for a in model.arguments)
    out = "(" + "".join(f"{e}, " for e in model.out_shape) + ")"
    boxes = ", ".join("(" + "".join(f"({lo}, {hi}), " for lo, hi in piece.box) + ")" for piece in model.pieces)
    temps = ", ".join(" * ".join(t.extents) if t.extents else "1" for t in model.temps)
    stages = ", ".join(
        f"(s{n}_F, s{n}_J, s{n}_R, s{n}_H, s{n}_chunks, s{n}_check, "
        f"{-1 if s.target == 'Y' else int(s.target[1:])}, {s.kind == 'reduce'})" for n, s in enumerate(model.stages))
    checks = ", ".join("(" + "".join(f"({c.array!r}, {c.axis}, {model.user(c.index)!r}, {model.user(c.extent)!r}), "
                                     for c in s.checks) + ")" for s in model.stages)
    return "\n".join([
        "# ---- what the runtime reads " + "-" * 50,
        f"def extents({sizes}):", '    """The arguments\' core shapes and the output\'s, from the sizes."""',
        f"    return ({shapes}{',' if len(model.arguments) == 1 else ''}), {out}", "", "",
        f"def boxes({sizes}):", '    """Per equation of the output: the (first, last) elements it writes per axis."""',
        f"    return [{boxes}]", "", "",
        f"def temps({sizes}):", '    """The lengths of the temporaries (inner sums kept per outer index)."""',
        f"    return [{temps}]", "", "",
        "# per stage: value, tangent, adjoint and adjoint-tangent drivers, chunking, bounds check,",
        "# target (-1: the output, else a temporary), whether it adds into it",
        f"STAGES = [{stages}]", "",
        "# per stage: (argument, axis, index, extent) of each bounds check, for errors",
        f"CHECKS = [{checks}]", ""])
