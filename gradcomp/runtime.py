"""Stage 5: Kernel — argument checks, broadcasting, dispatch to the generated drivers.

Nothing here imports SymPy: a kernel loaded from the cache runs on NumPy and
Numba alone.
"""

from __future__ import annotations

import logging
import time
import types
from math import prod

import numpy as np

from . import drivers
from .arguments import allocate, as_array, broadcast, check_out, overlap, wrong_count, wrong_shape
from .bridges.dask import is_dask_array, run_blockwise
from .drivers import FIRST_CALLS, Method, import_module
from .record import DRIVERS

log = logging.getLogger("gradcomp")
CHUNK_BYTES = 64 << 20
"""Inputs that need converting (dtype, layout, partial broadcast) are converted this much at a time."""

PYTHON_SCALARS = (float, int, np.float64, np.float32)
"""Scalars the single-point path takes for an argument of core shape () (a bool or a complex goes the
general way, which refuses or converts it as any array)."""


class Kernel:
    """Compiled forward, VJP, JVP, Jacobian and Hessian of a SymPy function.

    Every method takes the kernel's arguments positionally; leading batch
    dimensions broadcast across arguments (and the cotangent or tangent) like
    a NumPy generalized ufunc.  See ``gradcomp.compile``.
    """

    def __init__(self, meta, source: str, path: str | None = None, cache_root: str | None = None,
                 deriver=None):
        """``meta`` the module's KernelRecord, ``source`` its text, ``path`` its file (None: run in memory),
        ``cache_root`` the cache it lives in; ``deriver(kernel, names)`` returns the kernel extended with the
        deferred methods ``names`` (the compiler hands one over; without it those methods are refused)."""
        self._meta = meta
        self._deriver = deriver
        self.source: str = source
        """The generated Python source."""
        self.key: str = meta.key
        """The cache key (hex)."""
        self.name: str | None = meta.name
        """The registered name, or None."""
        self.dtype = np.dtype(meta.dtype)
        self.path = path
        self._cache_root = cache_root
        self._module: types.ModuleType | None = None
        self._methods = {name: Method(name, info) for name, info in meta.methods.items()}
        self._deferred = meta.deferred
        self._unit = np.ones((), self.dtype)  # the cotangent of grad()
        self._arguments = [(name, tuple(shape)) for name, shape in meta.arguments]
        self.wrt: tuple[int, ...] = tuple(meta.wrt)
        """Indices of the differentiated arguments, in the order derivatives are returned."""
        self.out_shape: tuple[int, ...] = tuple(meta.out_shape)
        self.arg_shapes: tuple[tuple[int, ...], ...] = tuple(shape for _, shape in self._arguments)
        self.arg_names: tuple[str, ...] = tuple(name for name, _ in self._arguments)
        self._label = self.name or self.key[:12]  # for the log

    # -- public methods ----------------------------------------------------
    def __call__(self, *xs, out=None):
        """y = f(*xs): batch + out_shape.  ``out``: a preallocated result array (C-contiguous, kernel dtype)."""
        return self._run("forward", xs, out)[0]

    def vjp(self, *xs_and_v, out=None):
        """vᵀJ for cotangent v (batch + out_shape): batch + arg_shape, a tuple for several wrt.

        What PyTorch's ``y.backward(gradient=v)`` leaves in ``x.grad``.  ``out``:
        preallocated results (a tuple for several wrt arguments) to write into.
        """
        return self._per_wrt(self._run("vjp", xs_and_v, out))

    def value_and_vjp(self, *xs_and_v, out=None):
        """(y, vᵀJ) from one fused evaluation; ``out`` is a tuple (y, vjp...) of preallocated arrays."""
        results = self._run("value_and_vjp", xs_and_v, out)
        return results[0], self._per_wrt(results[1:])

    def jvp(self, *xs_and_t, out=None):
        """J t: batch + out_shape; t is a tuple of tangents when there are several wrt arguments.  Derived when
        first called."""
        return self._run("jvp", self._spread_tangents("jvp", xs_and_t, len(self._arguments)), out)[0]

    def hvp(self, *xs_and_t, out=None):
        """Hessian-vector product H t of a scalar output: batch + arg_shape per wrt argument (a tuple for several).

        ``t`` is a tangent of the wrt arguments (a tuple of them when there are
        several), batched and broadcast like ``jvp``'s; with several wrt
        arguments the result's entry for argument i is Σ_j ∂²y/∂x_i∂x_j t_j.
        Forward over reverse on the DAG: one tangent sweep of the gradient
        program, never the n×n Hessian.  Derived when first called.
        """
        if self.out_shape != ():
            raise ValueError(
                f"hvp() needs a scalar output; this kernel's output has shape {self.out_shape}. "
                f"Use vjp_jvp(*xs, v, t), whose second result is the tangent of vᵀJ along t.")
        return self._per_wrt(self._run("hvp", self._spread_tangents("hvp", xs_and_t, len(self._arguments)), out))

    def vjp_jvp(self, *xs_v_t, out=None):
        """(J t, vᵀ(∂²y)t): the JVP, and the JVP of the VJP along the same tangent (any output shape).

        ``xs`` the arguments, ``v`` a cotangent (batch + out_shape), ``t`` a
        tangent (a tuple for several wrt arguments).  The second result, per wrt
        argument i, is Σ_k v_k Σ_j ∂²y_k/∂x_i∂x_j t_j: what the backward of a
        backward needs (PyTorch's double backward).  For a scalar output and
        v = 1 it is ``hvp``.  Derived when first called.
        """
        results = self._run("vjp_jvp", self._spread_tangents("vjp_jvp", xs_v_t, len(self._arguments) + 1), out)
        return results[0], self._per_wrt(results[1:])

    def jacobian(self, *xs, out=None, sparse: bool = False):
        """batch + out_shape + arg_shape (a tuple for several wrt arguments).

        ``sparse=True`` computes only the structural nonzeros (``jacobian_sparsity()``):
        for one point a ``scipy.sparse.csr_array`` of shape (out size, arg size),
        rows and columns flattened in C order; for a batch the nonzero values in
        CSR order, batch + (nnz,).  A tuple of either for several wrt arguments.
        """
        if not sparse:
            return self._per_wrt(self._run("jacobian", xs, out))
        method = self._method("jacobian_sparse")
        results = self._run("jacobian_sparse", xs, out)
        if np.ndim(results[0]) != 1 or out is not None:
            return self._per_wrt(results)
        return self._per_wrt([self._csr(values, pattern, i)
                              for i, (values, pattern) in enumerate(zip(results, method.layout))])

    def jacobian_sparsity(self):
        """The Jacobian's structural pattern, known from the DAG: a boolean ``scipy.sparse.csr_array``
        of shape (out size, arg size) per wrt argument (a tuple for several).

        An entry outside it is zero at every point; ``jacobian(*xs, sparse=True)``
        computes and returns exactly these entries (in this CSR order).  Its
        ``indptr``/``indices`` (or ``.nonzero()`` for (rows, cols)) give the
        layout; ``solve_ivp(..., jac_sparsity=...)`` and ``least_squares(...,
        jac_sparsity=...)`` take it as it is.  Derived with the sparse Jacobian.
        """
        method = self._method("jacobian_sparse")
        return self._per_wrt([self._csr(np.ones(len(indices), bool), (indptr, indices), i)
                              for i, (indptr, indices) in enumerate(method.layout)])

    def grad(self, *xs, out=None):
        """Gradient of a scalar output: vjp with v = 1."""
        return self._per_wrt(self._run("vjp", (*xs, self._one()), out))

    def value_and_grad(self, *xs, out=None):
        """(y, grad) of a scalar output; fits ``scipy.optimize.minimize(..., jac=True)``."""
        results = self._run("value_and_vjp", (*xs, self._one()), out)
        return results[0], self._per_wrt(results[1:])

    def hessian(self, *xs, out=None):
        """Hessian of a scalar output with one wrt argument: batch + arg_shape + arg_shape."""
        if "hessian" not in self._methods and "hessian" not in self._deferred:
            raise ValueError(
                f"hessian() needs a scalar output and one wrt argument; this kernel has output shape "
                f"{self.out_shape} and wrt ({', '.join(self._wrt_names())}). Use jacobian() of a gradient kernel.")
        return self._run("hessian", xs, out)[0]

    def run(self, method: str, *blocks, out=None) -> list:
        """The results of the method named ``method`` (one of ``available_methods``) on its input blocks,
        as a list of arrays, one per output block (batch + block shape): every public method is this call
        plus the shaping of its arguments and results.  The dask bridge runs it on each block."""
        return self._run(method, blocks, out)

    def precompile(self, methods=None, parallel: bool = True) -> None:
        """Compile ``methods`` (default: all) now: point function, serial and (optionally) parallel drivers.

        Numba compiles a driver on its first call; this compiles each for the
        argument types a call passes, without running it (the point function
        computes one throwaway point).  With a cache directory the machine
        code lands there for later processes.
        """
        names = list(methods or self.available_methods)
        self._derive([name for name in names if name in self._deferred])  # first: one module for them all
        for name in names:
            method = self._method(name)
            self._load_method(method)
            args = (0, *[a for _, _, size in method.inputs for a in (np.zeros((1, size), self.dtype), 0)],
                    *[np.empty((0, size), self.dtype) for _, _, size in method.outputs])
            self._ready_serial(method, args)
            if parallel:
                self._ready(method.parallel, True, args)
                method.parallel_ready = True
            self._point(method, [np.ones(core, self.dtype) for _, core, _ in method.inputs])

    def core_shapes(self, *shapes) -> tuple[tuple[tuple[int, ...], ...], tuple[int, ...]]:
        """The core shapes of the arguments and of the output for arguments of these (batched) shapes:
        fixed here, sized by the arguments in an indexed kernel.  What the JAX bridge tells JAX."""
        if len(shapes) != len(self.arg_shapes):
            raise TypeError(f"core_shapes takes {len(self.arg_shapes)} shapes, one per argument, got {len(shapes)}.")
        return self.arg_shapes, self.out_shape

    @property
    def available_methods(self) -> tuple[str, ...]:
        """Every method this kernel offers: those derived so far and those derived when first called."""
        return (*self._methods, *self._deferred)

    def ir(self, method: str, lanes: int = 1) -> str:
        """The LLVM IR of ``method``'s core, as gradcomp builds it (before LLVM optimizes it): for one
        point, or with ``lanes`` > 1 on vectors of that many points, as batches run it (their width is
        the generated module's ``<method>_LANES``)."""
        if lanes not in (1, 2, 4, 8, 16):
            raise ValueError(f"lanes must be 1, 2, 4, 8 or 16 (points a vector holds), got {lanes!r}.")
        from .ir import ir_text
        return ir_text(method, getattr(self._import(), f"{method}_CODE"), self.dtype.name, lanes)

    @property
    def methods(self) -> dict:
        """Per method derived so far: operations per point and statements in the generated core.

        ``jvp``, the Jacobian, the Hessian and the second-order products are derived when first called
        (or precompiled)."""
        return {name: {"ops": info.ops, "statements": info.statements} for name, info in self._meta.methods.items()}

    def __repr__(self) -> str:
        args = ", ".join(f"{n}: {s}" for n, s in self._arguments)
        return (f"<gradcomp.Kernel {self.name or '(unnamed)'}({args}) -> {self.out_shape} {self.dtype}, "
                f"wrt ({', '.join(self._wrt_names())}), compiled: {self._compiled() or 'nothing yet'}, "
                f"key {self.key[:12]}>")

    def _compiled(self) -> str:
        """Which methods' functions this process has compiled or loaded from the cache."""
        described = []
        for name, method in self._methods.items():
            kinds = [kind for kind in DRIVERS
                     if getattr(method, kind) is not None and getattr(method, kind).signatures]
            if kinds:
                described.append(f"{name} ({'/'.join(kinds)})")
        return ", ".join(described)

    def to_torch(self):
        """A callable on torch tensors whose backward is this kernel's VJP (needs ``gradcomp[torch]``)."""
        from .bridges.torch import to_torch
        return to_torch(self)

    def to_jax(self):
        """A JAX function with a custom VJP calling this kernel (needs ``gradcomp[jax]``)."""
        from .bridges.jax import to_jax
        return to_jax(self)

    # -- internals ---------------------------------------------------------
    def _wrt_names(self):
        return [self._arguments[i][0] for i in self.wrt]

    def _one(self):
        if self.out_shape != ():
            raise ValueError(
                f"grad needs a scalar output; this kernel's output has shape {self.out_shape}. "
                f"Use vjp(*xs, v) with a cotangent v of that shape.")
        # a 0-d array, not a NumPy scalar: a single point then takes the compiled point function directly
        # (k.grad(x) 4.0 -> 1.2 us); one per kernel, which every driver only reads
        return self._unit

    def _per_wrt(self, results):
        return results[0] if len(results) == 1 else tuple(results)

    def _spread_tangents(self, name: str, values, leading: int) -> tuple:
        """``(*xs, t)`` -> ``(*xs, *t)``: with several wrt arguments the tangent is one tuple per call."""
        if len(values) == leading + 1 and len(self.wrt) > 1:
            tangents = values[-1]
            if not isinstance(tangents, (tuple, list)) or len(tangents) != len(self.wrt):
                raise TypeError(
                    f"{name}() needs a tuple of {len(self.wrt)} tangents, one per wrt argument "
                    f"({', '.join(self._wrt_names())}); got {type(tangents).__name__}"
                    f"{f' of length {len(tangents)}' if isinstance(tangents, (tuple, list)) else ''}.")
            values = tuple(values[:-1]) + tuple(tangents)
        return values

    def _csr(self, values, pattern, index: int):
        try:
            from scipy.sparse import csr_array
        except ImportError:
            raise ImportError("a sparse Jacobian for one point is a scipy.sparse.csr_array: pip install scipy "
                              "(a batch's nonzero values need no SciPy: pass a batch dimension).") from None
        indptr, indices = pattern
        shape = (prod(self.out_shape), prod(self.arg_shapes[self.wrt[index]]))
        return csr_array((values, np.asarray(indices, np.int64), np.asarray(indptr, np.int64)), shape=shape)

    def _import(self) -> types.ModuleType:
        if self._module is None:
            self._module = import_module(self.source, self.path, self.key)
        return self._module

    def _load(self, method: Method) -> None:
        drivers.pick(self._import(), method)

    def _method(self, name: str) -> Method:
        """The method called ``name``, derived now if it was deferred (this needs SymPy, like compiling)."""
        method = self._methods.get(name)
        if method is not None:
            return method
        if name not in self._deferred:
            raise ValueError(f"this kernel has no method {name!r}; it has {list(self.available_methods)}.")
        self._derive([name])
        return self._methods[name]

    def _derive(self, names) -> None:
        """Derive deferred methods, all in one new module (which replaces this kernel's cache entry), and
        hand what this process compiled of the other methods on to the new module."""
        with FIRST_CALLS:
            missing = [name for name in names if name not in self._methods]
            if not missing:
                return
            if self._deriver is None:
                raise ValueError(
                    f"this kernel cannot derive {', '.join(missing)}: it was made without gradcomp's compiler "
                    f"(an exported module has every method it offers derived already).")
            started = time.perf_counter()
            extended = self._deriver(self, missing)
            old_module = self._module
            self._meta, self.source, self.path = extended._meta, extended.source, extended.path
            self._module = None
            for other, info in self._meta.methods.items():
                self._methods.setdefault(other, Method(other, info))
            self._deferred = self._meta.deferred
            handed = [] if old_module is None else drivers.adopt(self._methods.values(), old_module, self._import())
            log.info("%s: derived %s in %.2f s (%d compiled functions handed on to the new module)", self._label,
                     ", ".join(missing), time.perf_counter() - started, len(handed))

    def _run(self, name: str, values, out=None):
        """Run one method; the hot path of every call.

        A single point whose inputs are arrays of exactly their core shapes
        goes straight to the compiled point function: Numba's dispatch checks
        dtype and layout (it compiles nothing new, see ``_point``); a batch of
        rows in the kernel's dtype goes straight to a batch driver
        (``_run_rows``); what they refuse takes the general path — conversion,
        broadcasting, chunks, dask — like every other call.
        """
        method = self._methods.get(name) or self._method(name)
        if len(values) != len(method.inputs):
            wrong_count(name, method, values)
        if out is None and method.point_ready:
            arrays = values
            for index, (value, core) in enumerate(zip(values, method.cores)):
                if type(value) is not np.ndarray or value.shape != core:
                    if core == () and type(value) in PYTHON_SCALARS:  # k(x, 0.5): 0.2 µs here, 4.6 µs below
                        arrays = list(arrays) if arrays is values else arrays
                        arrays[index] = np.array(value, self.dtype)
                        continue
                    break
            else:
                try:
                    rows = method.point(*arrays)
                except TypeError:  # another dtype or layout: converted below
                    pass
                else:
                    return rows if method.rows_are_results else _shape_rows(method, rows)
        if out is None and method.serial_ready:
            results = self._run_rows(method, values)
            if results is not None:
                return results
        return self._run_general(method, values, out)

    def _point(self, method, values):
        """One point from C-contiguous, writeable arrays of the kernel's dtype and exact core shapes.

        The first call compiles (or loads) the point function for exactly
        these types, then freezes it: a later call with other types raises
        TypeError at dispatch instead of compiling a variant per input type.
        First calls from several threads take turns (``FIRST_CALLS``): one
        compiles and freezes, the others find it ready.
        """
        if not method.point_ready:
            with FIRST_CALLS:
                if not method.point_ready:
                    if method.point is None:
                        self._load(method)
                    rows = drivers.first_call(self._label, method.point, values)
                    method.point.disable_compile()
                    method.point_ready = True
                    return rows if method.rows_are_results else _shape_rows(method, rows)
        rows = method.point(*values)
        return rows if method.rows_are_results else _shape_rows(method, rows)

    def _load_method(self, method) -> None:
        """Import the generated module and pick ``method``'s functions, once, whichever thread comes first."""
        with FIRST_CALLS:
            if any(getattr(method, driver) is None for driver in DRIVERS):
                self._load(method)

    def _ready(self, driver, parallel: bool, args) -> None:
        drivers.ready(self._label, driver, parallel, args)

    def _run_general(self, method, values, out):
        """Any batch shapes: convert, broadcast, run on all points, shape the results."""
        if any(is_dask_array(value) for value in values):
            return run_blockwise(self, method, values, out)
        inputs = method.inputs
        dtype = self.dtype
        arrays, batches = [], []
        for (block, core, _), value in zip(inputs, values):
            array = value if type(value) is np.ndarray and value.dtype is dtype else as_array(value, block)
            batch_ndim = array.ndim - len(core)
            if batch_ndim < 0 or array.shape[batch_ndim:] != core:
                wrong_shape(block, core, array.shape)
            arrays.append(array)
            batches.append(array.shape[:batch_ndim])
        batch = batches[0]
        for shape in batches:
            if shape != batch:
                batch = broadcast(method, batches)
                break
        points = prod(batch)
        if points == 1 and batch == () and out is None:
            return self._point(method, [np.require(array, dtype, ("C", "W")) for array in arrays])
        targets = None
        if out is None:
            results = allocate(batch, method.outputs, dtype)
        else:
            results = check_out(method, out, batch, self.dtype)
            if any(overlap(result, array) for result in results for array in arrays):
                targets, results = results, allocate(batch, method.outputs, dtype)  # as NumPy: via a temporary
        rows = [result.reshape(points, size) for result, (_, _, size) in zip(results, method.outputs)]
        if points:
            if method.serial is None or method.parallel is None:
                self._load_method(method)
            self._drive(method, arrays, batches, batch, rows)
        if targets is not None:
            for target, result in zip(targets, results):
                target[...] = result
            results = targets
        return results

    def _launch(self, method, points: int, call_args: list, rows: list) -> None:
        """Run a batch driver on ``points`` points: the parallel one for a large batch once it is compiled
        (until then it compiles in the background and the serial one runs), else the serial one."""
        large = points >= method.parallel_min_points
        parallel = large and not drivers.parallel_off and method.pace.parallel_wanted()
        args = (points, *call_args, *rows)
        if parallel and not method.parallel_ready:
            if method.parallel.signatures:  # compiled in the background meanwhile
                method.parallel_ready = True
            else:
                if not method.serial_ready:
                    self._ready_serial(method, args)  # first: the background compile holds the lock a while
                drivers.compile_in_background(self._label, method, args, self.path is not None)
                parallel = False  # until the parallel driver is ready, batches run on the serial one
        if parallel and drivers.parallel_exclusive:
            slot = drivers.parallel_slot
            if slot.acquire(blocking=False):
                try:
                    _timed(method, True, large, method.parallel, args)
                finally:
                    slot.release()
                return
            parallel = False  # the only parallel slot is taken: run on this core
        if parallel:
            _timed(method, True, large, method.parallel, args)
            return
        if not method.serial_ready:
            self._ready_serial(method, args)
        _timed(method, False, large, method.serial, args)

    def _ready_serial(self, method, args) -> None:
        self._ready(method.serial, False, args)
        method.serial_ready = True

    def _run_rows(self, method, values):
        """The batch hot path: every input a C-contiguous array of the kernel's dtype holding one row per
        point of one batch dimension, or one row for all of them, no ``out``.  None where a call needs more
        (conversion, broadcasting, shaped batches, dask), which the general path then gives."""
        dtype = self.dtype
        points = -1
        call_args = []
        for value, (_, core, size) in zip(values, method.inputs):
            if type(value) is not np.ndarray or value.dtype is not dtype or not value.flags.c_contiguous:
                return None
            if value.shape == core:  # one row shared by every point (grad's cotangent, a parameter): step 0
                call_args += (value.reshape(1, size), 0)
                continue
            if value.ndim != len(core) + 1 or value.shape[1:] != core or (points != -1 and value.shape[0] != points):
                return None
            points = value.shape[0]
            call_args += (value if len(core) == 1 else value.reshape(points, size), 1)
        if points < 1:
            return None
        results = allocate((points,), method.outputs, dtype)
        if method.serial is None:
            self._load_method(method)
        self._launch(method, points, call_args,
                     [result if len(shape) == 1 else result.reshape(points, size)
                      for result, (_, shape, size) in zip(results, method.outputs)])
        return results

    def _drive(self, method, arrays, batches, batch, rows):
        """Run the driver over all points, converting inputs in chunks of bounded size.

        Inputs that are already C-contiguous in the kernel's dtype are passed as
        views (no copy at all); others are converted a chunk of points at a
        time, so no temporary grows with the batch.
        """
        dtype = self.dtype
        points = prod(batch)
        ready = all(a.dtype == dtype and a.flags.c_contiguous and (b == batch or prod(b) == 1)
                    for a, b in zip(arrays, batches))
        point_bytes = dtype.itemsize * sum(size for _, _, size in method.inputs)
        if ready or not batch or points * point_bytes <= CHUNK_BYTES:
            call_args = []
            for array, (_, _, size), shape in zip(arrays, method.inputs, batches):
                shared = shape != batch and prod(shape) == 1  # one row serves every point: step 0
                if shape != batch and not shared:
                    array = np.broadcast_to(array, batch + array.shape[len(shape):])  # rare: a partial broadcast
                array = np.ascontiguousarray(array, dtype)
                call_args += (array.reshape(1 if shared else points, size), 0 if shared else 1)
            self._launch(method, points, call_args, rows)
            return
        inner = prod(batch[1:])
        step = max(1, CHUNK_BYTES // (point_bytes * inner))
        for start in range(0, batch[0], step):
            stop = min(start + step, batch[0])
            pick = start if step == 1 else slice(start, stop)  # an index drops the axis, so recursion ends
            sub_arrays, sub_batches = [], []
            for array, shape in zip(arrays, batches):
                if len(shape) == len(batch):
                    array = array[pick if shape[0] != 1 else (0 if step == 1 else slice(None))]
                    shape = array.shape[:len(shape) - (step == 1)]
                sub_arrays.append(array)
                sub_batches.append(shape)
            sub_batch = batch[1:] if step == 1 else (stop - start,) + batch[1:]
            self._drive(method, sub_arrays, sub_batches, sub_batch, [r[start * inner:stop * inner] for r in rows])


def _shape_rows(method, rows) -> list:
    """The point function's flat result rows in their core shapes (a 0-d result as a NumPy scalar)."""
    return [row if len(shape) == 1 else row.reshape(shape) if shape else row[0]
            for row, (_, shape, _) in zip(rows, method.outputs)]


def _timed(method, parallel: bool, large: bool, driver, args) -> None:
    """Run a batch driver; a large batch's time per point steers the next choice of driver."""
    if not large:
        driver(*args)
        return
    started = time.perf_counter()
    driver(*args)
    method.pace.record(parallel, args[0], time.perf_counter() - started)
