"""JAX bridge: a gradcomp kernel as a JAX function with a custom VJP.

``to_jax(kernel)`` returns a function whose forward and backward call the
compiled kernel and VJP through ``jax.pure_callback``, so ``jax.grad``,
``jax.vjp``, ``jax.jit`` and ``jax.vmap`` work through it.  Forward-mode
(``jax.jvp``, ``jax.jacfwd``) does not: ``jax.custom_vjp`` defines reverse
mode only; use ``jax.jacrev`` or the kernel's own ``jvp``/``jacobian``.

Dtypes: the kernel computes in its own dtype; the result takes the dtype the
floating-point inputs promote to (integer inputs are converted to it), so with
x64 disabled a float64 kernel still computes in float64 and returns float32.

Batch dimensions broadcast as in the kernel; a differentiated argument with
fewer batch dimensions than the result gets its cotangent summed over them.
Arguments outside the kernel's ``wrt`` get a zero cotangent.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ._common import describe, sum_to_shape

__all__ = ["to_jax"]


def to_jax(kernel) -> Callable[..., jax.Array]:
    """A JAX function of the kernel's arguments (in order) with a ``jax.custom_vjp`` calling the compiled VJP.

    Arguments may carry leading batch dimensions before their core shapes.
    """
    wrt = kernel.wrt
    core_ndims = [len(shape) for shape in kernel.arg_shapes]

    @jax.custom_vjp
    def aligned_call(*args):
        return _forward(kernel, args)

    def forward_with_residuals(*args):
        return _forward(kernel, args), args

    def backward(args, cotangent):
        shapes = tuple(jax.ShapeDtypeStruct(args[i].shape, args[i].dtype) for i in wrt)

        def host_vjp(*arrays):
            *inputs, cotangent_array = arrays
            vjps = kernel.vjp(*[np.asarray(a, kernel.dtype) for a in inputs],
                              np.asarray(cotangent_array, kernel.dtype))
            if len(wrt) == 1:
                vjps = (vjps,)
            # Sum to the shapes received, which under vmap carry its leading axis.
            return tuple(sum_to_shape(np.asarray(v), inputs[i].shape).astype(shape.dtype)
                         for i, v, shape in zip(wrt, vjps, shapes))

        vjps = jax.pure_callback(host_vjp, shapes, *args, cotangent, vmap_method="broadcast_all")
        cotangents = [None] * len(args)
        for index, vjp in zip(wrt, vjps):
            cotangents[index] = vjp
        return tuple(cotangents)

    aligned_call.defvjp(forward_with_residuals, backward)

    def function(*args) -> jax.Array:
        if len(args) != len(kernel.arg_names):
            raise TypeError(
                f"{describe(kernel)} takes {len(kernel.arg_names)} arguments "
                f"({', '.join(kernel.arg_names)}), got {len(args)}.")
        arrays = [jnp.asarray(a) for a in args]
        dtype = _result_dtype(kernel, arrays)
        cores, _ = kernel.core_shapes(*[a.shape for a in arrays])
        for name, core, array in zip(kernel.arg_names, cores, arrays):
            if array.ndim < len(core) or array.shape[array.ndim - len(core):] != core:
                raise ValueError(
                    f"argument {name!r} has shape {array.shape}, which does not end in its core shape {core}; "
                    f"pass an array of shape (..., {', '.join(map(str, core))}).")
        # Give every argument the same number of batch dims (leading size-1 dims) so that
        # the extra leading axis vmap adds lines up across arguments inside the callback.
        batch_ndim = max(a.ndim - n for a, n in zip(arrays, core_ndims))
        aligned = [a.astype(dtype).reshape((1,) * (batch_ndim - (a.ndim - n)) + a.shape)
                   for a, n in zip(arrays, core_ndims)]
        return aligned_call(*aligned)

    function.__doc__ = f"{describe(kernel)} as a JAX function; reverse mode runs the compiled VJP."
    function.__name__ = kernel.name or "gradcomp_kernel"
    function.kernel = kernel
    return function


def _forward(kernel, args):
    cores, out_shape = kernel.core_shapes(*[a.shape for a in args])
    batch = np.broadcast_shapes(*[a.shape[:a.ndim - len(core)] for a, core in zip(args, cores)])
    result = jax.ShapeDtypeStruct(batch + out_shape, args[0].dtype)

    def host_forward(*arrays):
        value = kernel(*[np.asarray(a, kernel.dtype) for a in arrays])
        return np.asarray(value).astype(result.dtype)

    return jax.pure_callback(host_forward, result, *args, vmap_method="broadcast_all")


def _result_dtype(kernel, arrays) -> np.dtype:
    floating = [a.dtype for a in arrays if jnp.issubdtype(a.dtype, jnp.floating)]
    if floating:
        return jnp.result_type(*floating)
    return jax.dtypes.canonicalize_dtype(kernel.dtype)

