"""Runtime of indexed kernels: sizes from the arguments, checks, batches, and the sweeps over stages.

A ``LoopKernel`` has the methods of a ``Kernel`` (``k(x)``, ``vjp``, ``grad``, ``jvp``, ``hvp``,
``jacobian``, ``hessian``, ...); every call reads the sizes off its arguments, checks them, checks
every index of every stage against its array (before anything is written), then runs the stages'
drivers: forward in order, adjoints in reverse order.  Needs neither SymPy nor the compiler.
"""

from __future__ import annotations

import time
import types
from math import prod
from typing import NamedTuple

import numpy as np

from . import drivers, loopsparse
from .arguments import as_array
from .drivers import import_module


class _Driver:
    """A stage's driver for one mode (one of ``_MODES``): its parallel and serial twins, and whether the parallel
    one is compiled (``drivers.compile_in_background`` reads ``name``, ``parallel``, ``parallel_started``)."""

    __slots__ = ("name", "parallel", "serial", "parallel_started", "parallel_ready", "serial_seconds", "serial_ran")

    def __init__(self, name, parallel, serial):
        self.name, self.parallel, self.serial = name, parallel, serial
        self.parallel_started = self.parallel_ready = self.serial_ran = False
        self.serial_seconds = 0.0  # spent in the serial twin's runs after its first (which compiles)

    def run_serial(self, args, timed: bool) -> None:
        """The serial twin; its first run compiles its unit on this thread, ahead of background compiles.
        ``timed``: add the run's seconds to ``serial_seconds`` (where a parallel twin could take over)."""
        if self.serial_ran:
            if not timed:
                self.serial(*args)
                return
            started = time.perf_counter()
            self.serial(*args)
            self.serial_seconds += time.perf_counter() - started
            return
        with drivers.foreground():
            self.serial(*args)
        self.serial_ran = True


PARALLEL_AFTER_S = 0.1
"""A stage's parallel twin starts compiling (in the background) once its serial twin has run this long, over
calls after its first.  That compile costs a core 1-2 s and holds Numba's compiler lock, which the first call
of every other method waits for: the first sparse Jacobian of a least-squares fit took 3.1 s instead of 1.3 s
behind the residual's parallel twin, whose serial one ran 0.03 ms a call and gained nothing from it.
``LoopKernel.precompile`` makes the twins start at their first call instead."""


_MODES = ("F", "J", "R", "H", "P", "S", "SH")
"""A stage's drivers: value, tangent, adjoint, adjoint tangent, sparse pattern, sparse Jacobian, sparse Hessian."""


class _Stage(NamedTuple):
    drivers: tuple[_Driver | None, ...]
    """In ``_MODES`` order; None where an earlier stage's driver runs this one's terms in the same pass."""
    bounds: object
    check: object
    target: int
    """-1: the output; else the temporary it writes."""
    offsets: object
    sparse: tuple[str, ...]
    """The source of each sparse slot (``A<k>``, ``T<k>``): a term's Jacobian entries, in order."""


class _AtSizes(NamedTuple):
    """What holds at one set of sizes, found (and checked) by the first call there: ``LoopKernel._at``."""

    sizes: tuple[int, ...]
    shapes: tuple[tuple[int, ...], ...]
    """The arguments' core shapes."""
    out_shape: tuple[int, ...]
    temps: tuple[int, ...]
    """The temporaries' lengths."""
    recheck: tuple[int, ...]
    """The stages whose index checks read index data: run at every call."""
    bounds: list | None
    """Every stage's chunk boundaries, where they depend on the sizes alone."""
    plans: dict
    """Method -> its ``_Plan`` here, made by its first call."""


class _Plan(NamedTuple):
    """One method's sweep at one set of sizes (``LoopKernel._plan``): positions in a pool of arrays that a
    call fills, so that a call runs its drivers without working out their arguments again."""

    allocate: tuple[tuple[bool, int], ...]
    """(zeros, length) of each array the call allocates (zeros False: ``np.empty``)."""
    constants: tuple
    launches: tuple[tuple[_Driver, tuple[int, ...]], ...]
    """The drivers in order, each with the pool positions of its arguments (chunk boundaries last)."""
    results: tuple[int, tuple[int, ...]]
    """The value's (or the tangent's) position, and the positions of the per-wrt results."""


class LoopKernel:
    """Compiled value and derivatives of an indexed SymPy model, for every size.  See ``gradcomp.compile``."""

    def __init__(self, meta, source: str, path: str | None = None, cache_root: str | None = None,
                 deriver=None):
        self._meta = meta
        self._deriver = deriver
        self.source: str = source
        """The generated Python source: per stage its loops, the body's listing and the drivers."""
        self.key: str = meta.key
        self.name: str | None = meta.name
        self.dtype = np.dtype(meta.dtype)
        self.path = path
        self._cache_root = cache_root
        self._module: types.ModuleType | None = None
        self.arg_names: tuple[str, ...] = tuple(a[0] for a in meta.arguments)
        self.arg_shapes: tuple[tuple[str, ...], ...] = tuple(a[1] for a in meta.arguments)
        """Core shapes as written: sizes by name (``("n", "3")``)."""
        self.wrt: tuple[int, ...] = tuple(meta.wrt)
        self.out_shape: tuple[str, ...] = tuple(meta.out_shape)
        """The output's shape as written (sizes by name); () for a scalar."""
        self.sizes: tuple[str, ...] = tuple(meta.sizes)
        """The sizes the arguments' shapes give, by name."""
        self._integer = tuple(a[2] for a in meta.arguments)
        self._at: dict[tuple, _AtSizes] = {}  # sizes -> what holds there (at most 16 kept)
        self._one = np.ones((), self.dtype)  # the cotangent of a gradient (drivers only read it)
        self._stage_list: list[_Stage] | None = None
        self._patterns: dict = {}  # (hessian, sizes) -> (integer arguments, loopsparse.Pattern)
        self._parallel_after = PARALLEL_AFTER_S  # 0 after precompile(); -1 with precompile(parallel=False)

    # -- public methods ----------------------------------------------------
    def __call__(self, *xs, out=None):
        """The value: batch + the output's shape at these sizes."""
        return self._batched("forward", xs, 0, out)[0]

    def vjp(self, *xs_and_v, out=None):
        """vᵀJ for a cotangent v of the output's shape (batch + it): per wrt argument (a tuple for several)."""
        return self._per_wrt(self._batched("vjp", xs_and_v, 1, out))

    def value_and_vjp(self, *xs_and_v, out=None):
        results = self._batched("value_and_vjp", xs_and_v, 1, out)
        return results[0], self._per_wrt(results[1:])

    def grad(self, *xs, out=None):
        """The gradient of a scalar output."""
        self._scalar("grad")
        return self._per_wrt(self._batched("vjp", (*xs, self._one), 1, out))

    def value_and_grad(self, *xs, out=None):
        """(value, gradient) of a scalar output; fits ``scipy.optimize.minimize(..., jac=True)``."""
        self._scalar("value_and_grad")
        results = self._batched("value_and_vjp", (*xs, self._one), 1, out)
        return results[0], self._per_wrt(results[1:])

    def jvp(self, *xs_and_t, out=None):
        """J t for a tangent t of the wrt arguments (a tuple of them for several)."""
        return self._batched("jvp", self._spread(xs_and_t, 1), len(self.wrt), out)[0]

    def vjp_jvp(self, *xs_v_t, out=None):
        """(J t, the tangent of vᵀJ along t): forward over reverse through every stage."""
        xs = self._spread(xs_v_t, 2)
        results = self._batched("vjp_jvp", xs, 1 + len(self.wrt), out)
        return results[0], self._per_wrt(results[1:])

    def hvp(self, *xs_and_t, out=None):
        """H t of a scalar output (per wrt argument); never forms H."""
        self._scalar("hvp")
        xs = self._spread(xs_and_t, 1)
        count = len(self.arg_names)
        one = np.ones((), self.dtype)
        return self._per_wrt(self._batched("vjp_jvp", (*xs[:count], one, *xs[count:]), 1 + len(self.wrt), out)[1:])

    def jacobian(self, *xs, out=None, sparse: bool = False):
        """The dense Jacobian: batch + out shape + arg shape per wrt argument, from one JVP per input
        element or one VJP per output element, whichever are fewer.

        ``sparse=True``: only the structural nonzeros at one point (no batch dimensions), a
        ``scipy.sparse.csr_array`` (out size, arg size) per wrt argument, from one pass over the terms."""
        if sparse:
            return self._sparse(xs, out, hessian=False)
        if out is not None:
            raise TypeError("jacobian() of an indexed kernel takes no out=.")
        arrays, batch = self._arrays(xs)
        results = []
        for point in np.ndindex(*batch):
            results.append(self._dense(self._point_arrays(arrays, point, batch)))
        stacked = [np.stack([r[k] for r in results]).reshape(batch + results[0][k].shape)
                   for k in range(len(self.wrt))]
        return self._per_wrt(stacked)

    def jacobian_sparsity(self, *xs):
        """The Jacobian's structural pattern at these arguments (sizes and index data come from them): a
        boolean ``scipy.sparse.csr_array`` (out size, arg size) per wrt argument, in the CSR order of
        ``jacobian(*xs, sparse=True)``.  Built from the slot maps in O(terms), kept for the next call."""
        return self._sparse(xs, None, hessian=False, structure=True)

    def hessian_sparsity(self, *xs):
        """The Hessian's structural pattern at these arguments, like ``jacobian_sparsity``."""
        self._scalar("hessian_sparsity")
        return self._sparse(xs, None, hessian=True, structure=True)

    def _sparse(self, xs, out, hessian: bool, structure: bool = False):
        what = "hessian" if hessian else "jacobian"
        if out is not None:
            raise TypeError(f"{what}(sparse=True) of an indexed kernel takes no out=.")
        why = loopsparse.unsupported(self, hessian)
        if why is not None:
            products = "hvp" if hessian else "jvp/vjp"
            raise NotImplementedError(f"no sparse {what} for this indexed kernel: {why}. Use {what}(*xs) (dense) "
                                      f"or the {products} products, one pass over the terms each.")
        arrays, batch = self._arrays(xs)
        if batch:
            raise ValueError(f"sparse {what}s of an indexed kernel are for one point: the arguments have batch "
                             f"shape {batch}; call once per point (the pattern is kept between calls).")
        sizes = self._at_sizes(arrays).sizes
        found = loopsparse.pattern(self, arrays, sizes, hessian)
        data = (np.ones(found.nnz, bool) if structure else loopsparse.values(self, arrays, sizes, found, hessian))
        blocks = [self.wrt[0]] if hessian else self.wrt
        return self._per_wrt(loopsparse.csr_blocks(found, data, [arrays[k].size for k in blocks]))

    def hessian(self, *xs, out=None, sparse: bool = False):
        """The dense Hessian of a scalar output with one wrt argument: one HVP per element.

        ``sparse=True``: only the structural nonzeros at one point, a ``scipy.sparse.csr_array``
        (arg size, arg size), from one pass over the terms (the body's Hessian per term)."""
        self._scalar("hessian")
        if sparse:
            return self._sparse(xs, out, hessian=True)
        if len(self.wrt) != 1:
            raise ValueError(f"hessian() needs one wrt argument; this kernel has {len(self.wrt)}.")
        if out is not None:
            raise TypeError("hessian() of an indexed kernel takes no out=.")
        arrays, batch = self._arrays(xs)
        k = self.wrt[0]
        results = []
        for point in np.ndindex(*batch):
            point_arrays = self._point_arrays(arrays, point, batch)
            at = self._at_sizes(point_arrays)
            shape = point_arrays[k].shape
            columns = []
            for j in range(prod(shape)):
                t = np.zeros(prod(shape), self.dtype)
                t[j] = 1
                columns.append(self._sweep("vjp_jvp", point_arrays, at, v=np.ones(1, self.dtype),
                                           tangents=[t])[1])
            results.append(np.stack(columns, axis=-1).reshape(shape + shape))
        return np.stack(results).reshape(batch + results[0].shape) if batch else results[0]

    def core_shapes(self, *shapes) -> tuple[tuple[tuple[int, ...], ...], tuple[int, ...]]:
        """The core shapes of the arguments and of the output, in numbers, for arguments of these (batched)
        shapes: the sizes read off their last axes.  What the JAX bridge tells JAX."""
        if len(shapes) != len(self.arg_shapes):
            raise TypeError(f"core_shapes takes {len(self.arg_shapes)} shapes, one per argument, got {len(shapes)}.")
        for k, shape in enumerate(shapes):
            if len(shape) < len(self.arg_shapes[k]):
                raise ValueError(f"argument {self.arg_names[k]!r} has shape {tuple(shape)}, fewer dimensions than "
                                 f"its core shape ({', '.join(self.arg_shapes[k])}).")
        arguments, out = self._import().extents(*self._read_sizes(shapes))
        return tuple(tuple(int(e) for e in a) for a in arguments), tuple(int(e) for e in out)

    @property
    def methods(self) -> dict:
        """Per stage: its term and the operations per term of the body's value, VJP, JVP and second order."""
        return {f"s{n}": {"term": text, **ops} for n, (text, ops) in enumerate(self._meta.stages)}

    @property
    def available_methods(self) -> tuple[str, ...]:
        return ("forward", "vjp", "value_and_vjp", "jvp", "vjp_jvp", "hvp", "jacobian", "hessian")

    def precompile(self, methods=None, parallel: bool = True) -> None:
        """Each stage's drivers compile at first use, for the types that call gives them (sizes come with the
        arguments), and load from the cache after.  So this only sets when parallel twins compile: with
        ``parallel``, in the background right after a stage's first (serial) run, instead of after its
        serial runs took ``PARALLEL_AFTER_S``; else never.  ``methods`` is ignored: stages serve them all."""
        self._parallel_after = 0.0 if parallel else -1.0

    def to_torch(self):
        from .bridges.torch import to_torch
        return to_torch(self)

    def to_jax(self):
        from .bridges.jax import to_jax
        return to_jax(self)

    def __repr__(self) -> str:
        args = ", ".join(f"{n}: ({', '.join(s)})" for n, s in zip(self.arg_names, self.arg_shapes))
        return (f"<gradcomp.LoopKernel {self.name or '(unnamed)'}({args}) -> {self._meta.output}, "
                f"{len(self._meta.stages)} stage(s), wrt ({', '.join(self.arg_names[k] for k in self.wrt)}), "
                f"{self.dtype}, key {self.key[:12]}>")

    # -- internals ---------------------------------------------------------
    def _import(self):
        if self._module is None:
            self._module = import_module(self.source, self.path, self.key)  # guarded by the cache that gave path
        return self._module

    def _stages(self) -> list[_Stage]:
        if self._stage_list is None:
            self._stage_list = [
                _Stage(tuple(None if parallel is None else _Driver(f"s{n}_{mode}", parallel, serial)
                             for mode, parallel, serial in zip(_MODES, par, ser)),
                       bounds, check, target, offsets, sparse)
                for n, (par, ser, bounds, check, target, offsets, sparse) in enumerate(self._import().STAGES)]
        return self._stage_list

    def _launch(self, driver: _Driver, args, chunks: int) -> None:
        """Run a stage's driver: the parallel twin for more than one chunk once it is compiled (until then
        the serial twin runs, and from the second call on the parallel one compiles in the background),
        else the serial one.  Both give the same bits."""
        if chunks > 1 and not drivers.parallel_off:
            if not driver.parallel_ready:
                if driver.parallel.signatures:  # compiled in the background meanwhile (or loaded)
                    driver.parallel_ready = True
                else:
                    driver.run_serial(args, timed=True)
                    if 0 <= self._parallel_after <= driver.serial_seconds:
                        drivers.compile_in_background(self.name or self.key[:12], driver, args, self.path is not None)
                    return
            if not drivers.parallel_exclusive:
                driver.parallel(*args)
                return
            slot = drivers.parallel_slot
            if slot.acquire(blocking=False):  # a threading layer that runs one parallel region at a time
                try:
                    driver.parallel(*args)
                finally:
                    slot.release()
                return
        driver.run_serial(args, timed=False)  # one chunk, or parallel off: no parallel twin to time it for

    def _scalar(self, name):
        if self.out_shape:
            raise ValueError(f"{name}() needs a scalar output; {self._meta.output} is indexed "
                             f"(shape ({', '.join(self.out_shape)})). Use vjp(*xs, v) with a cotangent v.")

    def _per_wrt(self, results):
        return results[0] if len(results) == 1 else tuple(results)

    def _spread(self, values, extra: int) -> tuple:
        """(*xs, [v], t) -> (*xs, [v], *t) when there are several wrt arguments."""
        count = len(self.arg_names) + extra
        if len(values) == count and len(self.wrt) > 1:
            tangents = values[-1]
            if not isinstance(tangents, (tuple, list)) or len(tangents) != len(self.wrt):
                raise TypeError(f"the tangent must be a tuple of {len(self.wrt)} arrays, one per wrt argument.")
            return (*values[:-1], *tangents)
        return tuple(values)

    def _arrays(self, xs, extra: int = 0):
        """The arguments as arrays and their broadcast batch shape (extra: cotangents/tangents follow)."""
        if len(xs) != len(self.arg_names) + extra:
            raise TypeError(f"expected {len(self.arg_names) + extra} arguments "
                            f"({', '.join(self.arg_names)}{' and their cotangent/tangents' if extra else ''}), "
                            f"got {len(xs)}.")
        arrays, batches = [], []
        for k, value in enumerate(xs[:len(self.arg_names)]):
            name, shape = self.arg_names[k], self.arg_shapes[k]
            array = as_array(value, name)
            if self._integer[k]:
                if array.dtype.kind not in "iu":
                    raise TypeError(f"argument {name!r} holds indices and must be an integer array, got dtype "
                                    f"{array.dtype}; pass np.asarray(..., dtype=np.int64).")
                array = array.astype(np.int64, copy=False)
            else:
                array = array.astype(self.dtype, copy=False)
            if array.ndim < len(shape):
                raise ValueError(f"argument {name!r} has shape {array.shape}, fewer dimensions than its core "
                                 f"shape ({', '.join(shape)}).")
            arrays.append(array)
            batches.append(array.shape[:array.ndim - len(shape)])
        return arrays, np.broadcast_shapes(*batches) if any(batches) else ()  # (a point: the hot path)

    def _point_arrays(self, arrays, point, batch):
        chosen = []
        for array, shape in zip(arrays, [*self.arg_shapes, *[None] * (len(arrays) - len(self.arg_shapes))]):
            core = len(shape) if shape is not None else None
            lead = array.ndim - core if core is not None else array.ndim - len(batch)
            index = point[len(point) - lead:] if lead else ()
            index = tuple(0 if array.shape[d] == 1 else i for d, i in enumerate(index))
            chosen.append(np.array(array[index]))
        return chosen

    def _at_sizes(self, arrays) -> _AtSizes:
        """What holds at the sizes of one point's arrays, their shapes and indices checked: coverage, and the
        index checks that read no index data, once per sizes."""
        given = tuple(a.shape for a in arrays)
        sizes = self._read_sizes(given)
        at = self._at.get(sizes)
        if at is None:  # new sizes: their extents once; the kept record has them
            module = self._import()
            shapes, out_shape = module.extents(*sizes)
            shapes = tuple(tuple(shape) for shape in shapes)
        else:
            shapes = at.shapes
        if given != shapes:
            for k, (shape, expected) in enumerate(zip(given, shapes)):
                if shape != expected:
                    self._shape_error(k, shape, expected, sizes)
        if at is not None:
            if at.recheck:
                self._bounds(sizes, arrays, at.recheck)
            return at
        out_shape = tuple(out_shape)
        self._coverage(module, sizes, out_shape)
        stages = self._stages()
        self._bounds(sizes, arrays, range(len(stages)))
        flat = [a.reshape(-1) for a in arrays]
        bounds = ([stage.bounds(*sizes, *flat) for stage in stages]
                  if all(by_sizes for _, by_sizes in module.SIZED) else None)
        at = _AtSizes(sizes, shapes, out_shape, tuple(module.temps(*sizes)),
                      tuple(number for number, (checks_by_sizes, _) in enumerate(module.SIZED) if not checks_by_sizes),
                      bounds, {})
        if len(self._at) >= 16:
            self._at.clear()
        self._at[sizes] = at
        return at

    def _read_sizes(self, shapes) -> tuple:
        """The sizes' values off the arguments' (batched) shapes: each from its core axis."""
        return tuple([shapes[k][axis - len(self.arg_shapes[k])] for k, axis in self._meta.size_sources])

    def _shape_error(self, k, actual, expected, sizes):
        names = dict(zip(self.sizes, sizes))
        for axis, (a, e, text) in enumerate(zip(actual, expected, self.arg_shapes[k])):
            if a != e:
                if text in names:
                    source, source_axis = self._meta.size_sources[self.sizes.index(text)]
                    raise ValueError(
                        f"size {text} is {e} from {self.arg_names[source]!r} (axis {source_axis}) but "
                        f"{a} from {self.arg_names[k]!r} (axis {axis}); arrays of one size must agree.")
                raise ValueError(f"argument {self.arg_names[k]!r} has shape {actual}; its core shape "
                                 f"({', '.join(self.arg_shapes[k])}) is {expected} at sizes {names}.")
        raise ValueError(f"argument {self.arg_names[k]!r} has shape {actual}, expected {expected}.")

    def _coverage(self, module, sizes, out_shape):
        """Every element of an indexed output written by exactly one equation."""
        if not self._meta.pieces:
            return
        count = np.zeros(out_shape, np.int32)
        for text, box in zip(self._meta.pieces, module.boxes(*sizes)):
            for axis, ((lo, hi), extent) in enumerate(zip(box, out_shape)):
                if lo <= hi and (lo < 0 or hi >= extent):
                    raise IndexError(f"{text} writes {self._meta.output} at {lo}..{hi} along axis {axis}, "
                                     f"outside 0..{extent - 1} (sizes {dict(zip(self.sizes, sizes))}).")
            count[tuple(slice(lo, hi + 1) if lo <= hi else slice(0, 0) for lo, hi in box)] += 1
        for wrong, what in ((count == 0, "no equation writes"), (count > 1, "more than one equation writes")):
            if wrong.any():
                element = tuple(int(i) for i in np.argwhere(wrong)[0])
                raise ValueError(f"{what} {self._meta.output}{list(element)} at sizes "
                                 f"{dict(zip(self.sizes, sizes))}: the equations {list(self._meta.pieces)} must "
                                 f"write every element exactly once.")

    def _bounds(self, sizes, arrays, numbers):
        """The index checks of the stages ``numbers``: an IndexError naming the first index outside its array."""
        flat = [a.reshape(-1) for a in arrays]
        stages = self._stages()
        for number in numbers:
            failed, value = stages[number].check(*sizes, *flat)
            if failed >= 0:
                array, axis, index, extent = self._import().CHECKS[number][failed]
                raise IndexError(
                    f"index {index} of {array!r} (axis {axis}) is {value}, outside 0 .. {extent} - 1 at sizes "
                    f"{dict(zip(self.sizes, sizes))}; nothing was computed or written.")

    def _batched(self, method, values, extra, out):
        arrays, batch = self._arrays(values, extra)
        extras = [as_array(v, "cotangent/tangent").astype(self.dtype, copy=False) for v in values[len(arrays):]]
        if not batch:
            results = self._call(method, arrays, extras, self._at_sizes(arrays))
        else:
            rows = []
            for point in np.ndindex(*batch):
                point_arrays = self._point_arrays(arrays, point, batch)
                point_extras = []
                for number, extra_value in enumerate(extras):
                    core = self._extra_ndim(method, number, point_arrays)
                    core_shape = extra_value.shape[extra_value.ndim - core:] if core else ()
                    point_extras.append(np.array(np.broadcast_to(extra_value, batch + core_shape)[point], self.dtype))
                rows.append(self._call(method, point_arrays, point_extras, self._at_sizes(point_arrays)))
            results = [np.stack([r[k] for r in rows]).reshape(batch + rows[0][k].shape) for k in range(len(rows[0]))]
        if out is not None:
            given = (out,) if isinstance(out, np.ndarray) else tuple(out)
            if len(given) != len(results) or any(not isinstance(g, np.ndarray) or g.shape != r.shape or
                                                 g.dtype != self.dtype for g, r in zip(given, results)):
                raise ValueError(f"out must be {len(results)} array(s) of shape(s) {[r.shape for r in results]} "
                                 f"and dtype {self.dtype}.")
            for g, r in zip(given, results):
                g[...] = r
            return list(given)
        return results

    def _extra_ndim(self, method, i, point_arrays):
        out_shape = self._at_sizes(point_arrays).out_shape
        if method in ("vjp", "value_and_vjp") or (method == "vjp_jvp" and i == 0):
            return len(out_shape)
        k = self.wrt[i - (1 if method == "vjp_jvp" else 0)]
        return point_arrays[k].ndim

    def _call(self, method, arrays, extras, at: _AtSizes):
        """One point: the results of ``method`` as arrays of their shapes."""
        out_shape = at.out_shape
        if method == "forward":
            return [self._sweep("forward", arrays, at).reshape(out_shape)]
        shapes = [arrays[k].shape for k in self.wrt]
        if method in ("vjp", "value_and_vjp"):
            v = self._shaped(extras[0], out_shape, "the cotangent v")
            y, grads = self._sweep(method, arrays, at, v=v)
            grads = [g.reshape(s) for g, s in zip(grads, shapes)]
            return grads if method == "vjp" else [y.reshape(out_shape), *grads]
        if method == "jvp":
            tangents = [self._shaped(t, s, "the tangent") for t, s in zip(extras, shapes)]
            return [self._sweep("jvp", arrays, at, tangents=tangents).reshape(out_shape)]
        v = self._shaped(extras[0], out_shape, "the cotangent v")
        tangents = [self._shaped(t, s, "the tangent") for t, s in zip(extras[1:], shapes)]
        jv, hs = self._sweep("vjp_jvp", arrays, at, v=v, tangents=tangents)
        return [jv.reshape(out_shape), *[h.reshape(s) for h, s in zip(hs, shapes)]]

    def _shaped(self, value, shape, what):
        if value.shape != tuple(shape):
            raise ValueError(f"{what} has shape {value.shape}; expected {tuple(shape)} here.")
        return np.ascontiguousarray(value, self.dtype).reshape(-1)  # read only: no copy of the user's array

    def _sweep(self, method, arrays, at: _AtSizes, v=None, tangents=None):
        """Run the stages: ``forward`` -> y; ``vjp``/``value_and_vjp`` -> (y, grads); ``jvp`` -> J t;
        ``vjp_jvp`` -> (J t, tangents of the grads)."""
        plan = at.plans.get(method)
        if plan is None:
            plan = at.plans[method] = self._plan(method, at)
        extras = ((v,) if v is not None else ()) + (tuple(tangents) if tangents is not None else ())
        pool = [*at.sizes, *[a.reshape(-1) for a in arrays], *extras]
        dtype = self.dtype
        pool += [(np.zeros if zeros else np.empty)(length, dtype) for zeros, length in plan.allocate]
        pool += plan.constants
        if at.bounds is None:  # chunk boundaries that read index data: found at every call
            pool += [stage.bounds(*pool[:len(at.sizes) + len(arrays)]) for stage in self._stages()]
        launch = self._launch
        for driver, positions in plan.launches:
            args = [pool[k] for k in positions]
            launch(driver, args, args[-1].size - 1)
        first, rest = plan.results
        if method in ("forward", "jvp"):
            return pool[first]
        return pool[first], [pool[k] for k in rest]

    def _plan(self, method, at: _AtSizes) -> _Plan:
        """``_sweep``'s work for ``method`` at these sizes, as positions in its pool of arrays: the sizes, the
        arguments (flat), the cotangent and tangents given, the arrays it allocates, the constants, and the
        stages' chunk boundaries (last: constants where they depend on the sizes alone)."""
        module, stages = self._import(), self._stages()
        n_sizes, n_args = len(at.sizes), len(self.arg_names)
        sizes = tuple(range(n_sizes))
        flat = tuple(range(n_sizes, n_sizes + n_args))
        with_v, with_tangents = method in ("vjp", "value_and_vjp", "vjp_jvp"), method in ("jvp", "vjp_jvp")
        v = n_sizes + n_args if with_v else None
        given = n_sizes + n_args + with_v + (len(self.wrt) if with_tangents else 0)
        tangent_at = dict(zip(self.wrt, range(given - len(self.wrt), given))) if with_tangents else {}
        allocate = []

        def new(length, zeros=True):
            allocate.append((zeros, length))
            return given + len(allocate) - 1

        lengths = [prod(shape) for shape in at.shapes]
        y_length = prod(at.out_shape)
        temps = tuple(new(n) for n in at.temps)
        y = new(y_length) if method != "vjp" else None  # a vjp's reverse drivers never read the value
        if with_tangents:
            d_args = [tangent_at.get(k) for k in range(n_args)]
            tangent = (*d_args, *(new(n) for n in at.temps), new(y_length))
        if method not in ("forward", "jvp"):
            assigned = getattr(module, "ASSIGNED", ())  # (absent from the modules of earlier versions' pickles)
            # an adjoint that one driver stores at every element needs no zeros first
            b_args = [new(lengths[k], k not in assigned) if k in self.wrt else None for k in range(n_args)]
            adjoint = (*b_args, *(new(n) for n in at.temps), v)
        if method == "vjp_jvp":
            h_args = [new(lengths[k]) if k in self.wrt else None for k in range(n_args)]
            second = (*tangent, *adjoint, *h_args, *(new(n) for n in at.temps), new(y_length))
        empty = given + len(allocate)
        cuts = [empty + 1 + number for number in range(len(stages))]
        y = empty if y is None else y
        base = (*sizes, *flat, *temps, y)

        def args(*parts):
            return tuple(empty if k is None else k for k in (*base, *parts))

        launches = []
        for stage, cut in zip(stages, cuts):
            value, value_tangent = stage.drivers[:2]
            if value is not None and (stage.target >= 0 or method in ("forward", "value_and_vjp")):
                launches.append((value, args(cut)))
            if value_tangent is not None and with_tangents:
                launches.append((value_tangent, args(*tangent, cut)))
        if method == "forward":
            results = (y, ())
        elif method == "jvp":
            results = (tangent[-1], ())
        else:
            for number in range(len(stages) - 1, -1, -1):
                drivers_of, cut = stages[number].drivers, cuts[number]
                if drivers_of[2] is not None:
                    launches.append((drivers_of[2], args(*adjoint, cut)))
                if method == "vjp_jvp":
                    launches.append((drivers_of[3], args(*second, cut)))
            results = (tangent[-1], tuple(h_args[k] for k in self.wrt)) if method == "vjp_jvp" else \
                (y, tuple(b_args[k] for k in self.wrt))
        constants = (module.EMPTY, *(at.bounds or ()))
        return _Plan(tuple(allocate), constants, tuple(launches), results)

    def _dense(self, arrays):
        at = self._at_sizes(arrays)
        out_shape = at.out_shape
        m = prod(out_shape)
        shapes = [arrays[k].shape for k in self.wrt]
        n = sum(prod(s) for s in shapes)
        blocks = [np.empty((m, prod(s)), self.dtype) for s in shapes]
        if m <= n:
            for row in range(m):
                v = np.zeros(m, self.dtype)
                v[row] = 1
                _, grads = self._sweep("vjp", arrays, at, v=v)
                for block, g in zip(blocks, grads):
                    block[row] = g
        else:
            for b, shape in enumerate(shapes):
                for column in range(prod(shape)):
                    tangents = [np.zeros(prod(s), self.dtype) for s in shapes]
                    tangents[b][column] = 1
                    blocks[b][:, column] = self._sweep("jvp", arrays, at, tangents=tangents)
        return [block.reshape(tuple(out_shape) + s) for block, s in zip(blocks, shapes)]

