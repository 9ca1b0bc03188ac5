"""An exported native library (``gradcomp.export_native``) in Python, through ctypes: ``load(path)`` gives a
kernel whose methods take and return NumPy arrays as a compiled Kernel's do (batch dimensions, broadcasting,
``out=``, the same argument checks), in a process that needs neither Numba nor SymPy.

The library describes itself (``NAME_record()``, JSON); single points call ``NAME_<method>``, batches
``NAME_<method>_batch`` (large ones split across threads: ctypes lets go of the GIL during a call).
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import threading

import numpy as np

from .record import KernelRecord, MethodRecord
from .runtime import Kernel

RECORD_FORMAT = 1
PARALLEL_WORK = 1_000_000
"""Operations (points x ops per point) from which a batch is split across threads (as a Kernel's)."""
PIECE_BLOCKS = 64
"""A thread's piece of a batch holds at least this many blocks of lanes."""

_STATUS = {1: "an argument is a null pointer", 2: "n < 0"}
_pool = None  # a concurrent.futures.ThreadPoolExecutor, made by the first large batch
_pool_lock = threading.Lock()


class NativeKernel(Kernel):
    """A Kernel whose methods run an exported library's functions.  ``source`` is the library's C header."""

    def __init__(self, library: ctypes.CDLL, record: dict, path: str):
        methods = {name: MethodRecord(
            inputs=tuple((b, tuple(s)) for b, s in info["inputs"]),
            outputs=tuple((b, tuple(s)) for b, s in info["outputs"]),
            statements=0, ops=info["ops"], parallel_min_points=max(1, PARALLEL_WORK // max(info["ops"], 1)))
            for name, info in record["methods"].items()}
        meta = KernelRecord(name=record["name"], key=record["key"], dtype=record["dtype"],
                            arguments=tuple((n, tuple(s)) for n, s in record["arguments"]),
                            wrt=tuple(record["wrt"]), out_shape=tuple(record["out_shape"]), methods=methods,
                            deferred=(), gradcomp=record["gradcomp"])
        super().__init__(meta, record["header"], path=None)
        self.library_path = path
        """The shared library's file (absolute; a str: pathlib's import would be a fifth of a cold start)."""
        self.target: str = record["triple"]
        self._library = library
        for name, method in self._methods.items():
            symbol = record["methods"][name]["symbol"]
            pointers = len(method.inputs) + len(method.outputs)
            point = _function(library, symbol, [ctypes.c_void_p] * pointers)
            batch = _function(library, f"{symbol}_batch", [ctypes.c_int64] + [ctypes.c_void_p] * pointers)
            method.point = _point_function(point, method, self.dtype)
            lanes = record["methods"][name]["lanes"]
            method.serial = _Batch(batch, method, lanes, 1)
            method.parallel = _Batch(batch, method, lanes, _cores())
            method.point_ready = method.serial_ready = method.parallel_ready = method.parallel_started = True

    def __repr__(self) -> str:
        args = ", ".join(f"{n}: {s}" for n, s in self._arguments)
        return (f"<gradcomp.native.NativeKernel {self.name}({args}) -> {self.out_shape} {self.dtype}, "
                f"methods {', '.join(self._methods)}, {os.path.basename(self.library_path)} for {self.target}>")

    def precompile(self, methods=None, parallel: bool = True) -> None:
        """Nothing to compile: the library is machine code."""

    def ir(self, method: str, lanes: int = 1) -> str:
        raise ValueError("a native library holds machine code, not gradcomp's IR; the Kernel it was exported "
                         "from gives k.ir(method).")

    def _method(self, name: str):
        method = self._methods.get(name)
        if method is None:
            exported = ", ".join(self._methods)
            file = os.path.basename(self.library_path)
            raise ValueError(f"the library {file} does not export {name!r}; it has {exported} "
                             f"(export_native(..., methods=[...]) chooses).")
        return method

    def _import(self):
        raise ValueError("a native kernel has no generated Python module")

    def __reduce__(self):
        return load, (self.library_path,)


def load(path, name: str | None = None) -> NativeKernel:
    """The kernel of the shared library at ``path`` (``libNAME.so`` from ``export_native(..., kind="shared")``).

    ``name``: the C prefix, when the file was renamed (default: ``NAME`` from ``libNAME.so``)."""
    path = os.path.realpath(os.fspath(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no library at {path}: give the path of the libNAME.so that export_native wrote.")
    file = os.path.basename(path)
    if name is None:
        match = re.fullmatch(r"lib(\w+)\.(so|dylib)|(\w+)\.dll", file)
        if match is None:
            raise ValueError(f"cannot tell the kernel's C prefix from the file name {file!r}; pass name='...' "
                             f"(the prefix of its functions, as in NAME.h).")
        name = match.group(1) or match.group(3)
    try:
        library = ctypes.CDLL(path)
    except OSError as exc:
        raise ValueError(f"cannot load {path} as a shared library ({exc}); export it with kind='shared' for this "
                         f"machine's target.") from None
    try:
        describe = getattr(library, f"{name}_record")
    except AttributeError:
        raise ValueError(f"{file} has no function {name}_record: it is not a gradcomp library with the C "
                         f"prefix {name!r} (pass name= the prefix its header uses).") from None
    describe.restype, describe.argtypes = ctypes.c_char_p, []
    record = json.loads(describe().decode())
    if record.get("format") != RECORD_FORMAT:
        raise ValueError(f"{file} was written by gradcomp {record.get('gradcomp')} in record format "
                         f"{record.get('format')}; this gradcomp reads format {RECORD_FORMAT}: export it again.")
    return NativeKernel(library, record, path)


def _function(library, symbol: str, argtypes):
    function = getattr(library, symbol)
    function.restype, function.argtypes = ctypes.c_int, argtypes
    return function


def _failed(symbol, status: int):
    return RuntimeError(f"{symbol} returned {status} ({_STATUS.get(status, 'an unknown status')})")


def _data_offset():
    """Where an ndarray object holds its data pointer: right after the object header (``PyArrayObject``'s
    first field, public in NumPy's C API).  Read there, a pointer costs 0.12 us; ``a.ctypes.data`` builds
    an object for it in 0.8 us, three quarters of a single point's call.  None where a probe disagrees."""
    offset = object.__basicsize__
    probe = np.arange(3.0)
    return offset if ctypes.c_void_p.from_address(id(probe) + offset).value == probe.ctypes.data else None


_DATA_OFFSET = _data_offset()


def _address(array) -> int:
    if _DATA_OFFSET is None:
        return array.ctypes.data
    return ctypes.c_void_p.from_address(id(array) + _DATA_OFFSET).value


def _point_function(function, method, dtype):
    """A Kernel's point function over ``function``: arrays of exactly their core shapes in, the result rows
    out; another dtype or layout raises TypeError (the runtime then converts, as for a Numba point function).

    Written out for the method's blocks (like ``collections.namedtuple``): a loop over the blocks cost
    1 us of a single point's 2."""
    inputs = [f"a{k}" for k in range(len(method.inputs))]
    outputs = [f"r{k}" for k in range(len(method.outputs))]
    address = "{}.ctypes.data" if _DATA_OFFSET is None else f"_from(id({{}}) + {_DATA_OFFSET}).value"
    lines = [f"def point({', '.join(inputs)}):"]
    for k, name in enumerate(inputs):
        lines.append(f"    if {name}.dtype is not dtype or ({name}.strides != strides{k} and not "
                     f"{name}.flags.c_contiguous):")
        lines.append("        raise TypeError('converted by the general path')")
    for name, (_, _, size) in zip(outputs, method.outputs):
        lines.append(f"    {name} = empty({size}, dtype)")
    lines.append(f"    status = function({', '.join(address.format(name) for name in inputs + outputs)})")
    lines.append("    if status:")
    lines.append("        raise _failed(function.__name__, status)")
    lines.append(f"    return [{', '.join(outputs)}]")
    namespace = {"function": function, "dtype": dtype, "empty": np.empty, "_from": ctypes.c_void_p.from_address,
                 "_failed": _failed, **{f"strides{k}": np.empty(shape, dtype).strides
                                        for k, (_, shape, _) in enumerate(method.inputs)}}
    exec("\n".join(lines), namespace)  # noqa: S102 - the text above, of block counts only
    return namespace["point"]


class _Batch:
    """A Kernel's batch driver ``(n, in0, step0, ..., out0, ...)`` over the library's ``_batch`` function; a
    shared row (step 0) is repeated for every point, as the C function takes none.  With ``threads`` > 1 a
    batch is split into that many pieces of whole blocks of lanes, one a thread."""

    __slots__ = ("function", "n_inputs", "lanes", "threads", "signatures")

    def __init__(self, function, method, lanes: int, threads: int):
        self.function = function
        self.n_inputs = len(method.inputs)
        self.lanes = lanes
        self.threads = threads
        self.signatures = [True]  # machine code already: what the runtime asks of a Numba driver

    def __call__(self, n, *args):
        inputs = []
        for k in range(self.n_inputs):
            rows, step = args[2 * k], args[2 * k + 1]
            inputs.append(rows if step else np.ascontiguousarray(np.broadcast_to(rows, (n, rows.shape[1]))))
        outputs = args[2 * self.n_inputs:]
        pieces = min(self.threads, -(-n // (self.lanes * PIECE_BLOCKS)))
        if pieces <= 1:
            self._run(0, n, inputs, outputs)
            return
        size = -(-n // pieces)
        size += -size % self.lanes
        futures = [_executor().submit(self._run, start, min(n, start + size), inputs, outputs)
                   for start in range(0, n, size)]
        for future in futures:
            future.result()

    def _run(self, start, stop, inputs, outputs):
        pointers = [_address(a) + start * a.strides[0] for a in (*inputs, *outputs)]
        status = self.function(stop - start, *pointers)
        if status:
            raise _failed(self.function.__name__, status)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _executor():
    from concurrent.futures import ThreadPoolExecutor  # here: 3 ms of a cold start that no point call needs
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(_cores(), thread_name_prefix="gradcomp-native")
        return _pool
