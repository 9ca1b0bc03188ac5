"""Machine code for a kernel's methods: the generated module imported, each driver compiled (or loaded
from Numba's cache) once, parallel ones in the background, safely across ``fork``; and what one module
compiled handed on to the module that extends it with more methods.

Nothing here imports SymPy; Numba is imported by the generated module (its start-up by ``numba_start`` first).
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib.util
import logging
import os
import sys
import threading
import time
import types
import warnings
from math import prod

from . import numba_start
from .pace import Pace
from .record import DRIVERS

log = logging.getLogger("gradcomp")

FIRST_CALLS = threading.RLock()
"""Held while a generated module is imported, a function compiled or loaded, or the point function frozen.

The first call from many threads at once compiles once; later calls never take it."""
parallel_slot = threading.Lock()
"""Held while a parallel driver runs where Numba's threading layer allows one at a time (workqueue)."""
threading_layer: str | None = None
"""The Numba threading layer gradcomp's parallel drivers run on, once the first of them is ready."""
parallel_exclusive = True
"""Parallel drivers one at a time: true until the layer is known to be thread-safe (TBB, OpenMP)."""
parallel_off = False
"""In a child forked from a process running GNU OpenMP, which it cannot use: serial drivers only."""
EXIT_WAIT_S = 120.0
"""At exit, how long a process waits for parallel drivers still compiling in the background for a cache on
disk, so that the next process loads them instead of compiling them again."""

_background: dict[Method, tuple[threading.Thread, bool]] = {}
"""Parallel drivers compiling on threads of their own: method -> (thread, whether a cache on disk keeps it)."""

# Background compiles give way to first calls.  Numba's compiler lock serializes every compile, so a first
# call that needs a function compiled waited for every parallel driver queued before it: the first sparse
# Jacobian of a least-squares fit took 5.7 s instead of 1.3 s behind three forward drivers.  Now one
# background compile runs at a time, and the next starts only when no first call is compiling (or when
# someone waits for the background ones to finish), so a first call waits for one at most.
_turn = threading.Lock()
"""Held by the one background compile that runs (or waits for its turn)."""
_gate = threading.Condition()
_foreground = 0
"""First calls compiling on their callers' threads now."""
_draining = 0
"""Callers waiting for background compiles to finish: the gate stays open meanwhile."""


@contextlib.contextmanager
def foreground():
    """Around a first call that compiles on the caller's thread: background compiles wait meanwhile."""
    global _foreground
    with _gate:
        _foreground += 1
    try:
        yield
    finally:
        with _gate:
            _foreground -= 1
            _gate.notify_all()


@contextlib.contextmanager
def _drain():
    global _draining
    with _gate:
        _draining += 1
        _gate.notify_all()
    try:
        yield
    finally:
        with _gate:
            _draining -= 1


class Method:
    """A generated method's calling convention, read once from its MethodRecord, and its compiled drivers."""

    __slots__ = ("name", "inputs", "outputs", "cores", "rows_are_results", "parallel_min_points", "layout",
                 "point", "point_ready", "serial", "serial_ready", "parallel", "parallel_ready", "parallel_started",
                 "pace")

    def __init__(self, name: str, info):
        self.name = name
        self.inputs = [(block_name, tuple(shape), prod(shape)) for block_name, shape in info.inputs]
        self.outputs = [(block_name, tuple(shape), prod(shape)) for block_name, shape in info.outputs]
        self.cores = [core for _, core, _ in self.inputs]
        self.rows_are_results = all(len(shape) == 1 for _, shape, _ in self.outputs)
        self.parallel_min_points = info.parallel_min_points
        self.layout = info.layout
        self.point = self.serial = self.parallel = None
        # the point function compiled and frozen; the batch drivers compiled (Kernel._launch); the parallel
        # one's compile started (in the background)
        self.point_ready = self.serial_ready = self.parallel_ready = self.parallel_started = False
        self.pace = Pace()


def pick(module: types.ModuleType, method: Method) -> None:
    """``method``'s three drivers from the generated ``module``."""
    for driver in DRIVERS:
        setattr(method, driver, getattr(module, f"{method.name}_{driver}"))


def first_call(label: str, function, args):
    """Call a generated function that has no machine code yet, and log what that cost."""
    started = time.perf_counter()
    with foreground(), collector_paused():
        result = function(*args)
    log.info("%s: %s ready in %.2f s (Numba compiled it or loaded it from the cache)",
             label, function.__name__, time.perf_counter() - started)
    return result


def ready(label: str, driver, parallel: bool, args) -> None:
    """Compile ``driver`` for the types of ``args`` (or load it from Numba's cache), once, without running it.

    After the first parallel driver, records which threading layer Numba took:
    Numba's own choice (TBB where installed, else OpenMP, else workqueue) or the
    user's.  gradcomp keeps it: OpenMP ran the memory-bound seed case at 1000
    Mpts/s where workqueue ran 615, and a forked child runs gradcomp's batches
    serially instead (``_after_fork_in_child``), so a fork never hangs.
    """
    with FIRST_CALLS:
        if driver.signatures:
            return
        started = time.perf_counter()
        with foreground(), collector_paused():
            driver.compile(tuple(driver.typeof_pyval(arg) for arg in args))
        log.info("%s: %s ready in %.2f s (Numba compiled it or loaded it from the cache)",
                 label, driver.__name__, time.perf_counter() - started)
        if parallel:
            note_threading_layer()


def compile_in_background(label: str, method: Method, args, cached: bool) -> None:
    """Start compiling (or loading) ``method``'s parallel driver on a thread of its own, once.

    A prange driver costs Numba 0.2-0.6 s more than the serial one; the
    first large batch runs serially meanwhile, so a cold call pays for one
    driver, not both.  ``cached``: the module lives in a cache on disk, whose
    next reader wants this driver compiled (see ``EXIT_WAIT_S``).
    """
    if method.parallel_started:  # the compile is under way: no lock, so the call goes on at once
        return
    with FIRST_CALLS:
        if method.parallel_started:
            return
        method.parallel_started = True
        driver = method.parallel
        signature = tuple(driver.typeof_pyval(arg) for arg in args)  # types only: no reference to the data

        def compile_parallel():
            # not under FIRST_CALLS, which would stall other methods' first calls meanwhile: Numba's own
            # compiler lock serializes compiles, and a dispatcher compiles a signature it already has only once
            try:
                with _turn:
                    with _gate:
                        _gate.wait_for(lambda: _foreground == 0 or _draining > 0)
                    started = time.perf_counter()
                    with collector_paused():
                        driver.compile(signature)
                note_threading_layer()
                log.info("%s: %s ready in %.2f s (in the background; Numba compiled it or loaded it from the "
                         "cache)", label, driver.__name__, time.perf_counter() - started)
            except Exception:  # the serial driver keeps serving every batch
                log.exception("%s: compiling %s failed; batches run serially", label, driver.__name__)
            finally:
                _background.pop(method, None)

        thread = threading.Thread(target=compile_parallel, name=f"gradcomp-{method.name}-parallel", daemon=True)
        _background[method] = (thread, cached)
        thread.start()


def finish_background(method: Method) -> None:
    """Wait until ``method``'s parallel driver, if it is compiling in the background, is ready."""
    thread, _ = _background.get(method, (None, None))
    if thread is not None:
        with _drain():
            thread.join()


def adopt(methods, old: types.ModuleType, new: types.ModuleType) -> list[str]:
    """Give the functions of ``new`` (a module extending ``old`` with more methods) the machine code that
    ``methods`` have in ``old``, in memory and in Numba's cache of ``new``, and make them the methods'
    functions: a process that derives a deferred method thus leaves a module whose every driver the
    next process loads instead of compiling it again.  A method whose code differs between the two
    modules keeps its functions from ``old``.  Returns the functions handed on."""
    handed = []
    for method in methods:
        finish_background(method)  # its result lands in old's dispatcher, to be handed on with the rest
        same = all(getattr(old, f"{method.name}_{part}", None) == getattr(new, f"{method.name}_{part}", None)
                   for part in ("CODE", "LANES"))
        if not same:
            continue
        for kind in DRIVERS:
            before = getattr(method, kind)
            if before is None:
                continue
            after = getattr(new, f"{method.name}_{kind}")
            for signature, compiled in list(before.overloads.items()):
                after.add_overload(compiled)
                try:
                    after._cache.save_overload(signature, compiled)
                except Exception as exc:  # the next process compiles it, as before this hand-over existed
                    log.debug("could not save %s for %s in Numba's cache: %s", after.__name__, signature, exc)
                handed.append(after.__name__)
            if kind == "point" and method.point_ready:
                after.disable_compile()
            setattr(method, kind, after)
    return handed


@contextlib.contextmanager
def collector_paused():
    """Python's cycle collector off while the compiler makes and drops millions of objects that hold no
    cycles worth collecting.  Its full passes, which walk every object alive (a kernel's SymPy
    expressions among them), took 10% of deriving a 1152-state Brusselator (3.4 s -> 3.0 s), and 0.65 s
    of Numba's 3 s compiling LJ-48's single-point VJP (0.8 of 3.9 s for its serial driver).  Paused by
    every driver compile, the background one too: overlapping pauses leave the collector as the first
    found it."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def note_threading_layer() -> None:
    """After a parallel driver is ready: the layer Numba took says whether drivers may run concurrently."""
    global threading_layer, parallel_exclusive
    if threading_layer is None:
        from numba.np.ufunc import parallel
        threading_layer = parallel._threading_layer
        # workqueue aborts the process when two threads launch parallel work at once
        parallel_exclusive = threading_layer not in ("tbb", "omp")


# -- fork and exit -------------------------------------------------------------

def _gnu_openmp_running() -> bool:
    """Whether Numba's threading layer in this process is OpenMP on Linux (GNU OpenMP: not fork-safe)."""
    parallel = sys.modules.get("numba.np.ufunc.parallel")
    return (sys.platform.startswith("linux") and parallel is not None and parallel._is_initialized
            and parallel._threading_layer == "omp")


def _numba_compiler_lock():
    """Numba's lock around every compile and cache load, if Numba is imported."""
    module = sys.modules.get("numba.core.compiler_lock")
    return None if module is None else module.global_compiler_lock


_warned_fork = False
_held_at_fork: list = []


def _before_fork() -> None:
    """Hold gradcomp's first-call lock and Numba's compiler lock across the fork, in that order (the order a
    first call takes them): a compile in flight, a background one too, finishes first, so the child never
    inherits a lock that a thread it does not have holds."""
    global _warned_fork
    if not _warned_fork and _gnu_openmp_running():
        _warned_fork = True
        warnings.warn(
            "gradcomp: this process forks while Numba runs on GNU OpenMP (threading layer 'omp'), which is not "
            "fork-safe: in the child, gradcomp runs batches on one core (its serial driver). For parallel batches "
            "in forked children, leave NUMBA_THREADING_LAYER unset or set it to 'tbb' (pip install tbb) or "
            "'workqueue'; or start processes with 'spawn' or 'forkserver'.", RuntimeWarning, stacklevel=2)
    FIRST_CALLS.acquire()
    _held_at_fork.append(FIRST_CALLS)
    compiler_lock = _numba_compiler_lock()
    if compiler_lock is not None:
        compiler_lock.acquire()
        _held_at_fork.append(compiler_lock)


def _release_held() -> None:
    while _held_at_fork:
        _held_at_fork.pop().release()


def _after_fork_in_child() -> None:
    """A forked child has one thread: the locks held over the fork are its own; a parallel driver that was
    to compile on a thread of the parent's compiles in the child when a batch needs it."""
    global parallel_slot, parallel_off, _turn, _gate, _foreground, _draining
    _release_held()
    parallel_slot = threading.Lock()  # a parent's thread may have held it running a batch
    _turn, _gate, _foreground, _draining = threading.Lock(), threading.Condition(), 0, 0  # and these
    for method in list(_background):
        if not method.parallel.signatures:
            method.parallel_started = False
    _background.clear()
    if _gnu_openmp_running():
        parallel_off = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_release_held, after_in_child=_after_fork_in_child)


@atexit.register
def _wait_for_background_compiles() -> None:
    """Let parallel drivers still compiling for a cache on disk land there (at most ``EXIT_WAIT_S``)."""
    deadline = time.monotonic() + EXIT_WAIT_S
    with _drain():
        for thread, cached in list(_background.values()):
            if cached:
                thread.join(max(0.0, deadline - time.monotonic()))


# -- the generated module ------------------------------------------------------

def source_key(source: str) -> str:
    """The hash of a generated module's text: its file name in the cache."""
    import hashlib  # here: its import is a fifth of a native library's cold start
    return hashlib.sha256(source.encode()).hexdigest()[:32]


def import_module(source: str, path: str | None, key: str) -> types.ModuleType:
    """The generated module of the kernel ``key``: imported from its file (so Numba can cache) or run in memory.

    Its name holds the kernel's key, not its source's: the module that extends a kernel with more methods
    has the name of the one it replaces, so machine code compiled in the first (which names its module)
    loads in a process that has only the second (``adopt``)."""
    module_name = f"gradcomp_kernel_{key}"
    text_key = source_key(source)
    module = sys.modules.get(module_name)
    if module is not None and getattr(module, "__file__", None) == path and module.SOURCE_KEY == text_key:
        return module
    numba_start.start()
    if path is None:
        module = types.ModuleType(module_name)
        module.__dict__["SOURCE_KEY"] = text_key
        exec(compile(source, f"<gradcomp kernel {text_key}>", "exec"), module.__dict__)
    else:
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        module.__dict__["SOURCE_KEY"] = text_key
        spec.loader.exec_module(module)
    sys.modules[module_name] = module
    return module
