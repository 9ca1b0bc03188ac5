"""The ``gradcomp`` command: manage kernel caches, precompile a file's kernels, export a kernel.

    gradcomp cache list|info|clear|prune [--cache DIR]
    gradcomp precompile FILE.py [--cache DIR]
    gradcomp export NAME -o kernel_module.py [--cache DIR]
    gradcomp export NAME --native DIR [--target TRIPLE] [--cpu CPU] [--static | --object] [--methods M,...]

The cache commands import neither SymPy nor Numba, create nothing, and touch
only a directory that is a gradcomp cache (``cache.existing_cache``).  Every bad
argument exits non-zero with a one-line message on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .cache import Cache, Entry, KernelNotFoundError, current_versions, default_root, existing_cache, max_bytes
from .errors import CacheError


class UsageError(Exception):
    """A bad argument the parser cannot see (a missing file, an unwritable output); the message says which."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status (2: bad usage, 1: the command failed)."""
    arguments = _parser().parse_args(argv)
    try:
        return arguments.run(arguments)
    except (UsageError, CacheError, KernelNotFoundError, ValueError) as exc:
        print(f"gradcomp: {_one_line(exc)}", file=sys.stderr)
        return 1
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        print(f"gradcomp: cannot use{where}: {exc.strerror or exc}", file=sys.stderr)
        return 1


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error: 'gradcomp cache prune: argument --max-bytes: ...'."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def _byte_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a byte count; give an integer >= 0, e.g. 500000000")
    return value


def _directory(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path; give the cache directory")
    return text


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gradcomp", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    cache_dir = _Parser(add_help=False)
    cache_dir.add_argument("--cache", metavar="DIR", type=_directory,
                           help=f"cache directory (default: $GRADCOMP_CACHE_DIR, else {default_root()})")

    cache = commands.add_parser("cache", help="inspect or clean a kernel cache")
    actions = cache.add_subparsers(required=True, metavar="ACTION")
    actions.add_parser("list", parents=[cache_dir], help="one line per cached kernel").set_defaults(run=_list)
    actions.add_parser("info", parents=[cache_dir], help="where the cache is, how big, which versions"
                       ).set_defaults(run=_info)
    actions.add_parser("clear", parents=[cache_dir], help="remove every cached kernel").set_defaults(run=_clear)
    prune = actions.add_parser("prune", parents=[cache_dir],
                               help="remove stray files, entries of other versions, least recently used entries")
    prune.add_argument("--max-bytes", type=_byte_count, metavar="N", help="size to prune down to (default: "
                                                                  "$GRADCOMP_CACHE_MAX_BYTES, else 1 GiB)")
    prune.set_defaults(run=_prune)

    precompile = commands.add_parser("precompile", parents=[cache_dir],
                                     help="import FILE.py and compile every Kernel it defines at module level")
    precompile.add_argument("file", metavar="FILE.py")
    precompile.set_defaults(run=_precompile)

    export = commands.add_parser("export", parents=[cache_dir],
                                 help="write a cached kernel as a module that needs only NumPy and Numba, or "
                                      "as a C header and a native library (--native)")
    export.add_argument("name", metavar="NAME", help="the name the kernel was compiled under")
    where = export.add_mutually_exclusive_group(required=True)
    where.add_argument("-o", "--output", metavar="FILE.py", help="the Python module to write")
    where.add_argument("--native", metavar="DIR", help="write NAME.h and libNAME.so (or .a, .o) into DIR")
    export.add_argument("--target", metavar="TRIPLE", help="with --native: an LLVM target triple "
                                                             "(default: this machine)")
    export.add_argument("--cpu", metavar="CPU", help="with --native: the target's CPU (haswell, cortex-a72, ...)")
    kind = export.add_mutually_exclusive_group()
    kind.add_argument("--static", dest="kind", action="store_const", const="static", default="shared",
                      help="with --native: libNAME.a instead of libNAME.so")
    kind.add_argument("--object", dest="kind", action="store_const", const="object",
                      help="with --native: NAME.o instead of libNAME.so")
    export.add_argument("--methods", metavar="M,...", help="with --native: the methods to export (default: "
                                                          "value,vjp,jvp,jacobian,hvp where the kernel has them)")
    export.set_defaults(run=_export)
    return parser


def _open(arguments) -> Cache:
    """The cache to inspect or clean, opened without creating anything.

    ``--cache DIR`` must be a gradcomp cache; the default directory may not
    exist yet (nothing was compiled), which reads as an empty cache.
    """
    if arguments.cache is not None:
        return existing_cache(arguments.cache)
    root = default_root()
    return existing_cache(root) if root.exists() else Cache(root, create=False)


# -- cache ---------------------------------------------------------------------

def _list(arguments) -> int:
    cache = _open(arguments)
    entries = cache.entries()
    if not entries:
        print(f"no kernels in {cache.root}" + ("" if cache.root.exists() else " (nothing compiled there yet)"))
        return 0
    rows = [("NAME", "KEY", "SIZE", "LAST USED", "COMPILED")]
    rows += [(entry.name or "-", entry.key[:12] + (" (stale)" if entry.stale else ""), _bytes(entry.size),
              time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.last_used)), _compiled(entry))
             for entry in reversed(entries)]  # most recently used first
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
    return 0


def _info(arguments) -> int:
    cache = _open(arguments)
    entries = cache.entries()
    stale = sum(entry.stale for entry in entries)
    print(f"cache directory   {cache.root}" + ("" if cache.root.exists() else " (not created yet)"))
    print(f"entries           {len(entries)} ({stale} of other versions, removed by `gradcomp cache prune`)")
    print(f"size              {_bytes(cache.total_bytes())} of at most {_bytes(max_bytes())}")
    print("versions          " + ", ".join(f"{package} {version}" for package, version in current_versions().items()))
    return 0


def _clear(arguments) -> int:
    cache = _open(arguments)
    freed = cache.clear()
    print(f"cleared {cache.root}: {_bytes(freed)} freed")
    return 0


def _prune(arguments) -> int:
    cache = _open(arguments)
    before = cache.total_bytes()
    removed = cache.prune(limit=arguments.max_bytes)
    counts = ", ".join(f"{count} {what}" for what, count in removed.items())
    print(f"pruned {cache.root}: removed {counts}; {_bytes(before - cache.total_bytes())} freed")
    return 0


def _compiled(entry: Entry) -> str:
    """'forward(serial, parallel) vjp(serial)': the drivers Numba has machine code for."""
    return " ".join(f"{method}({', '.join(drivers)})" for method, drivers in entry.compiled.items()) or "-"


def _bytes(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


# -- precompile ----------------------------------------------------------------

def _precompile(arguments) -> int:
    file = _python_file(Path(arguments.file))
    root = Path(arguments.cache).expanduser().resolve() if arguments.cache else default_root()
    Cache(root)  # a file or someone else's directory is refused before the user's file runs
    if arguments.cache:
        os.environ["GRADCOMP_CACHE_DIR"] = str(root)
    kernels = _kernels_of(file)
    if not kernels:
        print(f"gradcomp: {arguments.file} defines no Kernel at module level; nothing to precompile.",
              file=sys.stderr)
        return 1
    for name, kernel in kernels:
        if kernel.path is None:
            print(f"gradcomp: warning: {name} has no disk cache (cache=False or an unwritable cache); its "
                  f"machine code will not outlive this command.", file=sys.stderr)
    # per kernel, all methods at once: the deferred ones are derived into one module first, whose drivers
    # are then compiled (compiling method by method would leave the earlier ones in a replaced module)
    for _name, kernel in _progress(kernels, lambda task: f"{task[0]} ({len(task[1].available_methods)} methods)"):
        kernel.precompile()
    methods = sum(len(kernel.available_methods) for _, kernel in kernels)
    print(f"precompiled {len(kernels)} kernel(s), {methods} method(s): "
          + ", ".join(name for name, _ in kernels))
    return 0


def _python_file(file: Path) -> Path:
    if not file.exists():
        raise UsageError(f"{file} does not exist; pass the path of a Python file that defines kernels.")
    if not file.is_file() or file.suffix != ".py":
        raise UsageError(f"{file} is not a Python file; pass the path of a .py file that defines kernels.")
    return file


def _kernels_of(file: Path) -> list[tuple[str, object]]:
    """Import ``file`` (its directory importable, as when run as a script) and collect its Kernels."""
    from .runtime import Kernel
    sys.path.insert(0, str(file.resolve().parent))
    spec = importlib.util.spec_from_file_location(file.stem, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[file.stem] = module
    spec.loader.exec_module(module)
    return [(name, value) for name, value in vars(module).items() if isinstance(value, Kernel)]


def _progress(tasks: list, describe):
    """tqdm's bar when tqdm is installed, else one line per task."""
    try:
        from tqdm import tqdm
    except ImportError:
        for number, task in enumerate(tasks, 1):
            print(f"[{number}/{len(tasks)}] {describe(task)}", flush=True)
            yield task
        return
    with tqdm(tasks, unit="method", desc="precompiling") as bar:
        for task in bar:
            bar.set_postfix_str(describe(task))
            yield task


# -- export --------------------------------------------------------------------

def _export(arguments) -> int:
    from .build import load
    from .export import write_export
    kernel = load(arguments.name, cache=arguments.cache)
    if arguments.native is not None:
        return _export_native(kernel, arguments)
    if arguments.target or arguments.cpu or arguments.methods or arguments.kind != "shared":
        raise UsageError("--target, --cpu, --static, --object and --methods go with --native DIR.")
    try:
        path = write_export(kernel, arguments.output)
    except OSError as exc:
        raise UsageError(f"cannot write {arguments.output} ({exc.strerror or exc}); pass -o a path in an existing "
                         f"directory you can write to.") from None
    print(f"wrote {path}: `import {path.stem}; {path.stem}.kernel(...)`, {path.stem}.vjp(...), ... "
          f"(needs only NumPy and Numba)")
    return 0


def _export_native(kernel, arguments) -> int:
    from .native_build import export_native
    methods = None if arguments.methods is None else [m.strip() for m in arguments.methods.split(",") if m.strip()]
    try:
        done = export_native(kernel, arguments.native, methods=methods, target=arguments.target, cpu=arguments.cpu,
                             kind=arguments.kind)
    except (OSError, RuntimeError) as exc:
        raise UsageError(f"cannot export {arguments.name} to {arguments.native}: {exc}") from None
    print(f"wrote {done.header} and {done.library} for {done.target} ({', '.join(done.methods)}) in "
          f"{done.seconds:.2f} s")
    return 0
