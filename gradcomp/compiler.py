"""The pipeline: spec -> derive -> codegen -> cache -> runtime.

``compile`` checks the cache first: a hit needs neither differentiation nor
printing nor Numba compilation.
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import logging
import sys
import time
from collections.abc import Callable, Sequence

import sympy as sp

from .build import DERIVER, generate_module, kernel_key, subject_key
from .cache import check_name, open_cache
from .derive import derivative_signature
from .errors import CompileError
from .runtime import Kernel
from .spec import Signature, load_signature, make_signature

log = logging.getLogger("gradcomp")


def compile(outputs, args: Sequence, *, wrt: Sequence[int] | None = None, name: str | None = None,
            cache=None, dtype: str = "float64", _arg_names=None) -> Kernel:
    """Compile SymPy ``outputs`` of ``args`` into Numba kernels (forward, VJP, JVP, Jacobian, Hessian).

    ``args`` follows ``sympy.lambdify``: each item is one argument — a Symbol
    (scalar), a nested list / Matrix / NDimArray of Symbols, or a MatrixSymbol.
    ``wrt`` lists the argument indices to differentiate (default: all); the
    others are parameters. ``cache``: None (default directory), False (nothing
    on disk) or a directory. ``dtype``: "float64" or "float32".
    Raises ``gradcomp.CompileError`` naming what cannot be compiled.
    """
    started = time.perf_counter()
    from .indexed import is_indexed
    if is_indexed(outputs, args):
        return _compile_indexed(outputs, args, wrt, name, cache, dtype, started)
    return _compile(lambda: make_signature(outputs, args, wrt, name, dtype, _arg_names), cache, started)


def _compile_indexed(outputs, args, wrt, name, cache, dtype, started):
    """An indexed model (IndexedBase, Sum, Eq): one kernel of loops for every size."""
    from .indexed import analyze
    from .loopgen import generate

    if name is not None:
        check_name(name)
    if dtype not in ("float64", "float32"):
        raise CompileError(f"dtype={dtype!r} is not supported; use 'float64' or 'float32'.")
    model = analyze(outputs, args, wrt, name, dtype)
    subject = hashlib.sha256(repr(model).encode()).hexdigest()[:40]
    key = kernel_key(subject)
    store = open_cache(cache, deriver=DERIVER)

    def build():
        module = generate(model, key)
        log.info("compiled indexed %s in %.3f s", name or key[:12], time.perf_counter() - started)
        return module

    if store is None:
        from .loops import LoopKernel
        module = build()
        return LoopKernel(module.meta, module.source)
    return store.get_or_build(key, build, subject=subject, name=name)


def _compile(make: Callable[[], Signature], cache, started: float) -> Kernel:
    """The kernel of the signature ``make()`` gives: from the cache, else derived, generated and stored."""
    try:
        signature = make()
        store = open_cache(cache, deriver=DERIVER)
        subject = subject_key(signature)
        key = kernel_key(subject)
        if store is None:
            module = generate_module(signature, key, started)
            return Kernel(module.meta, module.source, deriver=DERIVER)
        return store.get_or_build(key, lambda: generate_module(signature, key, started), subject=subject,
                                  name=signature.name)
    except RecursionError:
        # gradcomp's own passes are iterative; SymPy's are recursive and give up first
        raise CompileError(
            f"the expression is nested too deeply for SymPy to traverse (Python's recursion limit is "
            f"{sys.getrecursionlimit()}); build it from shared intermediate symbols or raise the limit with "
            f"sys.setrecursionlimit().") from None


def derivative(kernel: Kernel, kind: str = "grad", *, name: str | None = None, cache=None) -> Kernel:
    """A kernel computing ``kernel``'s gradient ("grad"), VJP ("vjp", takes a cotangent v) or JVP ("jvp",
    takes a tangent t), derived from its DAG; every method of the new kernel composes (the Jacobian of a
    grad kernel is the Hessian, its jvp the Hessian-vector product).  Cached and named like any kernel:
    ``name`` defaults to ``<kernel name>.<kind>``, ``cache`` to the kernel's own cache."""
    started = time.perf_counter()
    if not hasattr(kernel, "ir"):  # an indexed kernel (LoopKernel): its derivatives are its methods
        raise NotImplementedError(
            "gc.derivative of an indexed kernel is not implemented yet: use its methods (k.grad, k.hvp, "
            "k.hessian(*xs, sparse=True) for the sparse Hessian, k.jacobian(*xs, sparse=True)).")
    if name is not None:
        check_name(name)
    elif kernel.name is not None:
        name = f"{kernel.name}.{kind}"
    if cache is None:
        cache = kernel._cache_root if kernel._cache_root is not None else False
    signature = load_signature(kernel._import().SIGNATURE)
    return _compile(lambda: derivative_signature(signature, kind, name), cache, started)


def kernel(fn: Callable | None = None, *, wrt=None, name=None, cache=None, dtype="float64", **shapes):
    """Decorator form of ``compile``: ``@gc.kernel(x=3, W=(2, 3), wrt=("x",))``.

    The function is called once with SymPy symbols of the given shapes
    (``n`` -> a length-n vector, a tuple -> that shape, ``()`` -> a scalar)
    and returns the outputs.
    """
    def build(function: Callable) -> Kernel:
        parameters = list(inspect.signature(function).parameters)
        if set(parameters) != set(shapes):
            raise TypeError(
                f"@gc.kernel gives shapes for {sorted(shapes)} but {function.__name__}() takes "
                f"{parameters}; give one shape per parameter.")
        values, args = {}, []
        for parameter in parameters:
            value, arg = _symbolic_argument(parameter, shapes[parameter])
            values[parameter] = value
            args.append(arg)
        return compile(function(**values), args, wrt=wrt, name=name, cache=cache, dtype=dtype,
                       _arg_names=parameters)
    return build(fn) if fn is not None else build


def _symbolic_argument(parameter: str, shape):
    """(what the function receives, what compile receives) for one decorator parameter."""
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, tuple) or not all(isinstance(n, int) and n > 0 for n in shape):
        raise TypeError(f"shape of {parameter!r} must be an int or a tuple of positive ints, got {shape!r}.")
    if shape == ():
        symbol = sp.Symbol(parameter)
        return symbol, symbol
    names = [f"{parameter}{'_'.join(map(str, index))}" if len(shape) > 1 else f"{parameter}{index[0]}"
             for index in itertools.product(*map(range, shape))]
    flat = [sp.Symbol(n) for n in names]
    if len(shape) == 1:
        return sp.Matrix(flat), flat
    if len(shape) == 2:
        matrix = sp.Matrix(shape[0], shape[1], flat)
        return matrix, matrix
    array = sp.ImmutableDenseNDimArray(flat, shape)
    return array, array


