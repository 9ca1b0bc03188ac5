"""A kernel as a native library: its cores in one LLVM module with C entry points, an object file from
llvmlite for this CPU or another target, a C header stating the ABI, and the link into a shared or static
library.

The cores are the ones the Numba drivers inline (``gradcomp.ir``: the same instruction text, the same
vector math, no fast-math flags), so that on the host every exported method gives the Python kernel's
results bit for bit.  Each stage hands a plain record to the next::

    plan(kernel, ...)      -> NativePlan   what to build: methods, their code and lanes, the target
    build_objects(plan)    -> [bytes]      the object files (llvmlite, O3, position independent)
    header_text(plan)      -> str          NAME.h
    export_native(...)     -> NativeExport the files written (NAME.h, libNAME.so | libNAME.a | NAME.o)

Needs Numba and llvmlite (as compiling does); the library needs neither, nor Python: only libm (and memcpy).
"""

from __future__ import annotations

import json
import keyword
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from math import prod
from pathlib import Path
from typing import NamedTuple

from .record import VECTOR_ROW_MAX
from .version import __version__

METHODS = {"value": "forward", "vjp": "vjp", "value_and_vjp": "value_and_vjp", "jvp": "jvp",
           "jacobian": "jacobian", "hessian": "hessian", "hvp": "hvp", "vjp_jvp": "vjp_jvp"}
"""The methods a library can export, by the name ``methods=`` takes and the C functions carry (``NAME`` for
the value, ``NAME_<method>`` otherwise) -> the kernel's method."""

DEFAULT_METHODS = ("value", "vjp", "jvp", "jacobian", "hvp")
"""Exported unless ``methods=`` says otherwise (``hvp`` where the output is a scalar)."""

KINDS = {"shared": "lib{}.so", "static": "lib{}.a", "object": "{}.o"}
"""``kind=`` -> the library's file name, from the C prefix."""

STATUS = (("OK", 0, "success"), ("NULL_POINTER", 1, "an argument is a null pointer (nothing was written)"),
          ("NEGATIVE_COUNT", 2, "n < 0 in a _batch function (nothing was written)"))
"""What every entry point returns."""

LIBM = frozenset({
    "exp", "expm1", "log", "log1p", "sin", "cos", "tan", "asin", "acos", "atan", "atan2", "sinh", "cosh", "tanh",
    "asinh", "acosh", "atanh", "erf", "erfc", "pow", "sqrt", "fabs", "floor", "ceil", "fmod", "round", "trunc",
    "fma", "exp2", "log2", "log10", "hypot", "copysign", "fmin", "fmax"})
"""C99 functions a library may call (each also as ``<name>f``): vector math's fallbacks, LLVM's lowering of
its intrinsics where the target has no instruction."""

NOT_NATIVE = {"gamma": "gamma", "lgamma": "loggamma", "polygamma": "polygamma or digamma"}
"""Instructions a native library cannot carry, with the SymPy function behind each: Numba computes them with
its own C helpers (a Python kernel's results), which a library outside Numba's process does not have."""

_VECTOR_BITS_BY_ARCH = {"aarch64": 128, "arm64": 128}
"""Vector registers of targets other than x86 (x86 by CPU name: ``gradcomp.ir.VECTOR_BITS_BY_CPU``); any
other architecture computes a batch one point at a time."""

_C_KEYWORDS = frozenset(
    "auto break case char const continue default do double else enum extern float for goto if inline int long "
    "register restrict return short signed sizeof static struct switch typedef union unsigned void volatile while "
    "bool true false".split())


PARTS_ABOVE = 5_000
"""Instructions of all methods above which a library's parts are built by processes of their own
(``build_objects``): below, the processes' start (about 0.2 s) costs more than it saves (seed: 0.41 -> 0.60 s;
LJ-48: 11.3 -> 7.6 s)."""


PART_PROCESSES = 4
"""At most this many parts are built at once: the longest part bounds the time anyway (LJ-48's vjp batch core
is half of its library's LLVM work), and each process holds its part's module in memory."""


class NativeMethod(NamedTuple):
    """One exported method: the C functions ``symbol`` and ``symbol_batch``."""

    name: str
    """As ``methods=`` names it: value, vjp, ..."""
    method: str
    """The kernel's method: forward, vjp, ..."""
    symbol: str
    inputs: tuple[tuple[str, tuple[int, ...]], ...]
    """Blocks in calling order (C parameter names, shapes)."""
    outputs: tuple[tuple[str, tuple[int, ...]], ...]
    code: str
    """The instruction text of its core (``gradcomp.ir``)."""
    lanes: int
    """Points the batch function computes at once."""
    ops: int


class NativePlan(NamedTuple):
    """What one export builds."""

    prefix: str
    """The C prefix (a valid identifier): the kernel's name unless ``name=`` gave another."""
    dtype: str
    triple: str
    cpu: str
    features: str
    host: bool
    """Built for this machine (the kernel's own CPU and features): bit-identical to the Python kernel."""
    arguments: tuple[tuple[str, tuple[int, ...]], ...]
    wrt: tuple[int, ...]
    out_shape: tuple[int, ...]
    methods: tuple[NativeMethod, ...]
    key: str


class NativeExport(NamedTuple):
    """The files ``export_native`` wrote."""

    header: Path
    library: Path
    target: str
    methods: tuple[str, ...]
    seconds: float
    """Building and linking, from the kernel's derived methods."""


def export_native(kernel, directory, *, methods=None, target: str | None = None, cpu: str | None = None,
                  kind: str = "shared", name: str | None = None) -> NativeExport:
    """Write ``NAME.h`` and the library of ``kind`` (``libNAME.so``, ``libNAME.a`` or ``NAME.o``) into
    ``directory`` (created if missing); files already there are replaced only once the new ones are complete.

    ``methods``: names from ``METHODS`` (default ``DEFAULT_METHODS``, those the kernel has); ``target``: an LLVM
    target triple such as ``aarch64-linux-gnu`` (default: this machine, its CPU and features); ``cpu``: the
    target's CPU (``haswell``, ``cortex-a72``; default: the host's on the host, the architecture's baseline
    elsewhere); ``name``: the C prefix (default: the kernel's registered name).
    """
    started = time.perf_counter()
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(map(repr, KINDS))}, got {kind!r}.")
    the_plan = plan(kernel, methods=methods, target=target, cpu=cpu, name=name)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    header_path = directory / f"{the_plan.prefix}.h"
    library_path = directory / KINDS[kind].format(the_plan.prefix)
    # NAME.o is one module (no linker needed); a short kernel's parts cost more in process starts than in LLVM
    parts = kind != "object" and sum(m.code.count("\n") for m in the_plan.methods) > PARTS_ABOVE
    objects = build_objects(the_plan, parts=parts)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".gradcomp-native-") as work:
        work = Path(work)
        paths = [str(work / f"kernel{number}.o") for number in range(len(objects))]
        for path, data in zip(paths, objects):
            Path(path).write_bytes(data)
        built = work / library_path.name
        if kind == "object":
            os.replace(paths[0], built)
        elif kind == "shared":
            _run_tool([_c_compiler(the_plan), "-shared", "-o", str(built), *paths, "-lm"], "link")
        else:
            _run_tool([_archiver(the_plan), "rcs", str(built), *paths], "archive")
        (work / header_path.name).write_text(header_text(the_plan))
        os.replace(built, library_path)
        os.replace(work / header_path.name, header_path)
    return NativeExport(header_path, library_path, the_plan.triple, tuple(m.name for m in the_plan.methods),
                        time.perf_counter() - started)


# -- the plan -------------------------------------------------------------------

def plan(kernel, *, methods=None, target: str | None = None, cpu: str | None = None,
         name: str | None = None) -> NativePlan:
    """The kernel's methods as a library will carry them, deriving the deferred ones asked for."""
    from .loops import LoopKernel
    if isinstance(kernel, LoopKernel):
        raise TypeError("export_native takes a kernel of fixed-size arguments; an indexed kernel (IndexedBase "
                        "arguments, loops over runtime sizes) cannot be exported as a native library yet.")
    prefix = _prefix(name if name is not None else kernel.name)
    wanted = _wanted_methods(kernel, methods)
    kernel._derive([METHODS[m] for m in wanted if METHODS[m] not in kernel._methods])  # one new module for all
    module = kernel._import()
    triple, cpu_name, features, host = _target(target, cpu)
    exported = []
    for public in wanted:
        method = METHODS[public]
        record = kernel._meta.methods[method]
        code = getattr(module, f"{method}_CODE")
        _check_native(public, code)
        lanes = getattr(module, f"{method}_LANES") if host else _target_block_lanes(record, triple, cpu_name,
                                                                                      kernel._meta.dtype)
        exported.append(NativeMethod(
            public, method, prefix if public == "value" else f"{prefix}_{public}",
            tuple((_c_name(block), tuple(shape)) for block, shape in record.inputs),
            tuple((_c_name(block), tuple(shape)) for block, shape in record.outputs), code, lanes, record.ops))
    meta = kernel._meta
    return NativePlan(prefix, meta.dtype, triple, cpu_name, features, host,
                      tuple((_c_name(n), tuple(s)) for n, s in meta.arguments), tuple(meta.wrt),
                      tuple(meta.out_shape), tuple(exported), meta.key)


def _prefix(name) -> str:
    if name is None:
        raise ValueError("export_native needs a C prefix for the library's functions: compile the kernel with "
                         "name='...' or pass name='my_kernel'.")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) or name in _C_KEYWORDS:
        raise ValueError(f"{name!r} is not a C identifier, so it cannot prefix the library's functions; pass "
                         f"name= a letter or underscore followed by letters, digits and underscores "
                         f"(e.g. {re.sub(r'[^A-Za-z0-9_]', '_', name).lstrip('0123456789') or 'kernel'!r}).")
    return name


def _wanted_methods(kernel, methods) -> list[str]:
    available = {public for public, method in METHODS.items() if method in kernel.available_methods}
    if methods is None:
        return [m for m in DEFAULT_METHODS if m in available]
    if isinstance(methods, str):
        methods = [methods]
    wanted = list(dict.fromkeys(methods))
    for m in wanted:
        if m not in METHODS:
            raise ValueError(f"unknown method {m!r} to export; choose from {', '.join(METHODS)}.")
        if m not in available:
            raise ValueError(f"this kernel has no method {m!r} (output shape {kernel.out_shape}, wrt "
                             f"{kernel.wrt}); it can export {', '.join(sorted(available))}.")
    if not wanted:
        raise ValueError("methods is empty: name at least one method to export, e.g. methods=['value', 'vjp'].")
    return wanted


def _check_native(public: str, code: str) -> None:
    for line in code.split("\n")[2:]:
        parts = line.split(" ")
        if len(parts) < 3:
            continue
        op = parts[1]
        function = parts[2] if op == "call" else op
        if function in NOT_NATIVE:
            raise ValueError(
                f"method {public!r} computes {NOT_NATIVE[function]}, which a native library cannot carry (Numba "
                f"computes it with its own C helpers); export the methods that do not need it, or rewrite the "
                f"function without it.")


def _c_name(block: str) -> str:
    """A block's name as a C parameter: anything but letters, digits and underscores becomes '_'."""
    text = re.sub(r"\W", "_", block, flags=re.ASCII)
    if not text or text[0].isdigit():
        text = "_" + text
    return text + "_" if text in _C_KEYWORDS or keyword.iskeyword(text) else text


def _target(target: str | None, cpu: str | None) -> tuple[str, str, str, bool]:
    """(triple, cpu, features, whether this is the Python kernel's own target)."""
    from llvmlite import binding
    from numba.core import config
    if target is None and cpu is None:
        from .ir import compiled_cpu_name
        host_cpu = compiled_cpu_name()
        features = config.CPU_FEATURES if config.CPU_FEATURES is not None else binding.get_host_cpu_features().flatten()
        return binding.get_process_triple(), host_cpu, features, True
    triple = target or binding.get_process_triple()
    _initialize_targets()
    try:
        binding.Target.from_triple(triple)
    except RuntimeError as exc:
        raise ValueError(f"LLVM cannot build for target {triple!r} ({str(exc).strip()}); give a triple such as "
                         f"'x86_64-linux-gnu', 'aarch64-linux-gnu' or 'riscv64-linux-gnu'.") from None
    return triple, cpu or "", "", False


def _target_block_lanes(record, triple: str, cpu: str, dtype: str) -> int:
    """The points a batch block of the method ``record`` computes at once on another target: as
    ``codegen._lanes`` decides for the host, with the target's register width and CPU."""
    from .ir import block_lanes
    row = sum(prod(shape) for _, shape in record.inputs + record.outputs)
    if row > VECTOR_ROW_MAX:
        return 1
    return block_lanes(_target_lanes(triple, cpu, dtype), ops=record.ops, row=row, cpu=cpu)


def _target_lanes(triple: str, cpu: str, dtype: str) -> int:
    from .ir import VECTOR_BITS_BY_CPU
    arch = triple.split("-")[0]
    if arch in ("x86_64", "i386", "i686"):
        bits = VECTOR_BITS_BY_CPU.get(cpu, 128)
    else:
        bits = _VECTOR_BITS_BY_ARCH.get(arch, 0)
    return max(1, bits // (64 if dtype == "float64" else 32))


_targets_ready = False


def _initialize_targets() -> None:
    global _targets_ready
    if not _targets_ready:
        from llvmlite import binding
        binding.initialize_all_targets()
        binding.initialize_all_asmprinters()
        _targets_ready = True


# -- the object file ---------------------------------------------------------------

def build_objects(plan: NativePlan, parts: bool = True) -> list[bytes]:
    """The plan's entry points as object files for its target (``native_object.object_of``).  With ``parts``,
    one object per core (``module_texts``), each optimized and emitted by a Python process of its own
    (``_object_in_process``), as many at once as there are cores (up to ``PART_PROCESSES``), while the next
    part's IR is printed here (llvmlite runs one LLVM call at a time per process): a long kernel's export
    takes about its longest part on enough cores.  Else one object, in this process."""
    from concurrent.futures import ThreadPoolExecutor

    from numba.core import config

    from .native_object import object_of
    target_machine = _target_machine(plan)
    options = {"triple": plan.triple, "cpu": plan.cpu, "features": plan.features,
               "loop_vectorize": bool(config.LOOP_VECTORIZE)}
    texts = module_texts(plan, target_machine, parts)
    if not parts:
        return [object_of(text, **options) for text in texts]
    # threads that wait on processes; at most PART_PROCESSES at once: each holds a part's LLVM module in memory
    with ThreadPoolExecutor(max_workers=min(os.cpu_count() or 1, PART_PROCESSES)) as pool:
        built = [pool.submit(_object_in_process, {"text": text, **options}) for text in texts]
        return [future.result() for future in built]


def _object_in_process(request: dict) -> bytes:
    """``native_object.object_of`` in a Python process of its own: the file run as a script (it imports only
    llvmlite), with this process's import path, so that it runs wherever this one found gradcomp and
    llvmlite; in this process where no process can start."""
    from .native_object import object_of
    script = Path(__file__).with_name("native_object.py")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path for path in sys.path if path)}
    try:
        # -P: the script's folder (gradcomp's own) is not put first on the child's import path
        done = subprocess.run([sys.executable, "-P", str(script)], input=json.dumps(request).encode(),
                              capture_output=True, env=env)
    except OSError:
        return object_of(**request)
    if done.returncode != 0:
        raise RuntimeError(f"building a part of the library failed in {script.name} (exit {done.returncode}):\n"
                           f"{done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def _target_machine(plan: NativePlan):
    from llvmlite import binding
    from numba.core.registry import cpu_target
    cpu_target.target_context.refresh()  # Numba's native target initialized
    if not plan.host:
        _initialize_targets()
    return binding.Target.from_triple(plan.triple).create_target_machine(
        cpu=plan.cpu, features=plan.features, opt=3, reloc="pic", codemodel="default")


def module_texts(plan: NativePlan, target_machine=None, parts: bool = True):
    """The library's LLVM IR before optimization, each method's cores (``gradcomp.ir``) and C entry points: with
    ``parts``, a text per core (a method's batch core with its batch function; its scalar core with the point
    function), the record with the first, yielded as each is printed; else one text.  Every part defines its
    own (internal) math helpers, so the parts link without clashes."""
    from llvmlite import ir
    from numba import types as numba_types
    from numba.core.registry import cpu_target

    from .ir import _function, _parse
    context = cpu_target.target_context
    context.refresh()
    numba_type = getattr(numba_types, plan.dtype)
    scalar_type = context.get_value_type(numba_type)

    def new_module(suffix: str):
        module = ir.Module(name=plan.prefix + suffix)
        if target_machine is not None:
            module.triple = target_machine.triple
            module.data_layout = str(target_machine.target_data)
        return module

    module = new_module("")
    _record_function(module, plan)
    # the longest methods first: their parts start first and the short ones finish behind them
    for method in sorted(plan.methods, key=lambda m: -len(m.code)):
        program = _parse(method.code)
        core = _function(context, module, f"{method.symbol}_block{method.lanes}", program, numba_type, method.lanes)
        batch = _entry(module, f"{method.symbol}_batch", program, core, method.lanes, scalar_type)
        if method.lanes == 1:
            _point_entry(module, method.symbol, batch)
            continue
        if parts:
            yield _checked_text(module)
            module = new_module(f"_{method.symbol}_point")
        # a scalar core of its own: a block core on one point runs all its lanes (LJ-48's vjp 1.6x slower)
        scalar = _function(context, module, f"{method.symbol}_core", program, numba_type)
        one = _entry(module, f"{method.symbol}_one", program, scalar, 1, scalar_type)
        one.linkage = "internal"  # inlined into the point function, not part of the ABI
        _point_entry(module, method.symbol, one)
        if parts:
            yield _checked_text(module)
            module = new_module(f"_{method.symbol}_after")
    if module.functions or not parts:
        yield _checked_text(module)


def _entry(module, symbol, program, core, width, scalar_type):
    """``int symbol(int64_t n, const T *in..., T *out...)``: checks, then a loop of blocks over ``n`` points
    (``gradcomp.ir.call_block``, the serial driver's loop)."""
    from llvmlite import ir
    from numba.core import cgutils

    from .ir import call_block
    int32, int64 = ir.IntType(32), ir.IntType(64)
    n_blocks = len(program.input_sizes) + len(program.output_sizes)
    function = ir.Function(module, ir.FunctionType(int32, [int64] + [scalar_type.as_pointer()] * n_blocks), symbol)
    function.attributes.add("nounwind")
    builder = ir.IRBuilder(function.append_basic_block("entry"))
    count, pointers = function.args[0], list(function.args[1:])
    status = {name: ir.Constant(int32, value) for name, value, _ in STATUS}
    with builder.if_then(builder.icmp_signed("<", count, ir.Constant(int64, 0)), likely=False):
        builder.ret(status["NEGATIVE_COUNT"])
    with builder.if_then(builder.icmp_signed("==", count, ir.Constant(int64, 0)), likely=False):
        builder.ret(status["OK"])
    null = ir.Constant(ir.IntType(1), 0)
    for pointer in pointers:
        null = builder.or_(null, builder.icmp_unsigned("==", pointer, ir.Constant(pointer.type, None)))
    with builder.if_then(null, likely=False):
        builder.ret(status["NULL_POINTER"])
    n_in = len(program.input_sizes)
    step = ir.Constant(int64, 1)
    blocks = builder.sdiv(builder.add(count, ir.Constant(int64, width - 1)), ir.Constant(int64, width))
    with cgutils.for_range(builder, blocks) as loop:
        start = builder.mul(loop.index, ir.Constant(int64, width))
        call_block(builder, core, program, width, scalar_type, start, count,
                   [(p, step) for p in pointers[:n_in]], pointers[n_in:])
    builder.ret(status["OK"])
    return function


def _point_entry(module, symbol, batch) -> None:
    """``int symbol(const T *in..., T *out...)``: the batch function on one point (not inlined: one copy of
    the core in the library)."""
    from llvmlite import ir
    function = ir.Function(module, ir.FunctionType(batch.type.pointee.return_type, batch.type.pointee.args[1:]),
                           symbol)
    function.attributes.add("nounwind")
    builder = ir.IRBuilder(function.append_basic_block("entry"))
    builder.ret(builder.call(batch, [ir.Constant(ir.IntType(64), 1), *function.args]))


def record_json(plan: NativePlan) -> str:
    """What ``gradcomp.native.load`` reads from the library (``NAME_record()``): the kernel's description."""
    return json.dumps({
        "format": 1, "name": plan.prefix, "dtype": plan.dtype, "key": plan.key, "gradcomp": __version__,
        "triple": plan.triple, "cpu": plan.cpu, "arguments": plan.arguments, "wrt": plan.wrt,
        "out_shape": plan.out_shape,
        "methods": {m.method: {"name": m.name, "symbol": m.symbol, "inputs": m.inputs, "outputs": m.outputs,
                               "lanes": m.lanes, "ops": m.ops} for m in plan.methods},
        "header": header_text(plan)}, separators=(",", ":"))


def _record_function(module, plan: NativePlan) -> None:
    """``const char *NAME_record(void)``: the record as a NUL-terminated JSON string in read-only data."""
    from llvmlite import ir
    data = record_json(plan).encode() + b"\0"
    text = ir.GlobalVariable(module, ir.ArrayType(ir.IntType(8), len(data)), f"{plan.prefix}_record_text")
    text.global_constant = True
    text.linkage = "private"
    text.initializer = ir.Constant(text.type.pointee, bytearray(data))
    char_pointer = ir.IntType(8).as_pointer()
    function = ir.Function(module, ir.FunctionType(char_pointer, []), f"{plan.prefix}_record")
    builder = ir.IRBuilder(function.append_basic_block("entry"))
    builder.ret(builder.bitcast(text, char_pointer))


def _checked_text(module) -> str:
    """The text of a part (an ``llvmlite.ir`` module) whose every function called but not defined is libm's
    (a Numba helper would be unresolved in the library)."""
    for function in module.functions:
        name = function.name
        if function.is_declaration and not name.startswith("llvm.") and name not in LIBM and \
                name.removesuffix("f") not in LIBM:
            raise ValueError(f"the library would call {name!r}, which is neither gradcomp's nor libm's; this "
                             f"kernel cannot be exported as a native library.")
    return str(module)


# -- the header ----------------------------------------------------------------------

def header_text(plan: NativePlan) -> str:
    """``NAME.h``: the ABI in its comments, the sizes, the status codes and one prototype per function."""
    p, c_type = plan.prefix, "double" if plan.dtype == "float64" else "float"
    guard = f"GRADCOMP_{p.upper()}_H"
    arguments = ", ".join(n + "".join(f"[{d}]" for d in s) for n, s in plan.arguments)
    wrt = ", ".join(plan.arguments[k][0] for k in plan.wrt)
    lines = [
        f"/* {p}.h: gradcomp kernel {p}, exported by gradcomp {__version__}; generated, do not edit.",
        " *",
        f" * y{''.join(f'[{d}]' for d in plan.out_shape)} = {p}({arguments}), derivatives with respect to {wrt}.",
        f" * Built for {plan.triple}{f' (cpu {plan.cpu})' if plan.cpu else ''}; key {plan.key[:16]}.",
        " *",
        f" * Every argument, a scalar too, points to a flat, C-ordered array of {c_type}: the sizes below.",
        " * Outputs must not overlap each other or an input.  The _batch functions take n points one after",
        " * another in every input and output (no broadcasting) and compute them on this CPU's vector lanes,",
        " * on the calling thread.  Every function is pure, reentrant and thread-safe: no globals, no",
        " * allocation, no Python; it calls only libm and memcpy (link with -lm).",
        " */",
        f"#ifndef {guard}",
        f"#define {guard}",
        "",
        "#include <stdint.h>",
        "",
        "#ifdef __cplusplus",
        'extern "C" {',
        "#endif",
        "",
        f"/* Returned by every function of {p}. */",
        f"enum {p}_status {{",
        *[f"    {p.upper()}_{name} = {value},{' ' * (16 - len(name))}/* {text} */" for name, value, text in STATUS],
        "};",
        "",
        "/* Scalars per point of each block (an argument, an output, a cotangent or tangent). */",
        f"enum {p}_sizes {{",
    ]
    sizes = {}
    for method in plan.methods:
        for block, shape in method.inputs + method.outputs:
            sizes.setdefault(block, shape)
    lines += [f"    {p.upper()}_{block.upper()}_SIZE = {prod(shape)},{' ' * max(1, 24 - len(block))}/* shape "
              f"{_shape_text(shape)} */" for block, shape in sizes.items()]
    lines += ["};", ""]
    for method in plan.methods:
        ins = [f"const {c_type} *{block}" for block, _ in method.inputs]
        outs = [f"{c_type} *{block}" for block, _ in method.outputs]
        lines.append(f"/* {method.name}: {', '.join(b for b, _ in method.outputs)} from "
                     f"{', '.join(b for b, _ in method.inputs)}; {method.ops} operations a point, batches "
                     f"{method.lanes} points at a time. */")
        lines.append(f"int {method.symbol}({', '.join(ins + outs)});")
        lines.append(f"int {method.symbol}_batch({', '.join(['int64_t n'] + ins + outs)});")
        lines.append("")
    lines += ["/* The kernel's description as JSON (what gradcomp.native.load reads). */",
              f"const char *{p}_record(void);", "",
              "#ifdef __cplusplus", "}", "#endif", "", f"#endif /* {guard} */", ""]
    return "\n".join(lines)


def _shape_text(shape) -> str:
    return "()" if not shape else f"({shape[0]},)" if len(shape) == 1 else f"({', '.join(map(str, shape))})"


# -- tools --------------------------------------------------------------------------

def _c_compiler(plan: NativePlan) -> str:
    """The C compiler that links the shared library: ``$CC``, else ``cc``/``gcc``/``clang`` on the host or
    ``<triple>-gcc`` for another target."""
    names = [os.environ["CC"]] if os.environ.get("CC") else (
        ["cc", "gcc", "clang"] if plan.host or plan.triple.startswith(_host_arch()) else [f"{plan.triple}-gcc"])
    return _find_tool(names, "a C compiler to link the shared library", "kind='static' or kind='object'")


def _archiver(plan: NativePlan) -> str:
    names = [os.environ["AR"]] if os.environ.get("AR") else (
        ["ar", "gcc-ar", "llvm-ar"] if plan.host or plan.triple.startswith(_host_arch()) else
        [f"{plan.triple}-ar", "llvm-ar"])
    return _find_tool(names, "an archiver (ar) to make the static library", "kind='object'")


def _host_arch() -> str:
    import platform
    return platform.machine()


def _find_tool(names, what: str, instead: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise FileNotFoundError(f"{what} is needed and none of {', '.join(names)} is on PATH; install one (Debian: "
                            f"apt install gcc binutils), set $CC / $AR, or pass {instead}.")


def _run_tool(command: list[str], step: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{step} failed: {' '.join(command)} exited with {done.returncode}:\n"
                           f"{done.stderr.strip() or done.stdout.strip()}")
