"""PyTorch bridge: a gradcomp kernel as a differentiable function of torch tensors.

``to_torch(kernel)`` returns a callable whose forward runs the compiled kernel
and whose backward runs the compiled VJP, through a ``torch.autograd.Function``.

Dtypes: the kernel always computes in its own dtype.  The result takes the
dtype the floating-point input tensors promote to (``torch.result_type``), or
the kernel's dtype when no input is floating point; gradients take each
input's dtype.  So a float64 kernel given float32 tensors computes in float64
and returns float32; a float32 kernel given float64 tensors computes (and
loses precision) in float32.

Batch dimensions broadcast as in the kernel.  A differentiated argument with
fewer (or size-1) batch dimensions than the result — a shared parameter —
gets its gradient summed over the broadcast dimensions, as PyTorch requires.
Arguments outside the kernel's ``wrt`` get no gradient (``None``).
Only CPU tensors are accepted.

Higher derivatives: the backward is itself differentiable (``create_graph=True``,
``torch.autograd.gradgradcheck``): it runs the VJP through a second Function
whose backward is the kernel's ``vjp_jvp`` (J w for the cotangent, the
second-order term vᵀ(∂²y)w for the arguments), derived when first needed.  A
third derivative is not available.  Forward mode through ``torch.autograd.forward_ad``
(dual tensors) runs the kernel's ``jvp``.

``torch.func`` transforms of first order work: ``vmap`` (the kernel broadcasts the
mapped dimension like any batch dimension), ``grad``, ``vjp``, ``jacrev``, ``jvp`` and
``jacfwd``.  NumPy sees only plain tensors: each rule runs the kernel inside a
Function's ``forward``, which ``torch.func`` calls with its wrappers removed.
Second order: ``torch.func.hessian`` (forward over reverse) runs the kernel's ``vjp_jvp``
as the forward-mode rule of the VJP.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from ._common import describe, sum_to_shape

__all__ = ["to_torch"]


def to_torch(kernel) -> Callable[..., torch.Tensor]:
    """A function of torch tensors (the kernel's arguments, in order) whose backward is the kernel's VJP.

    Arguments may be tensors, NumPy arrays or numbers, with leading batch
    dimensions before each argument's core shape.  ``loss.backward()`` and
    ``y.backward(gradient=v)`` fill ``.grad`` of the differentiated arguments.
    """
    wrt = kernel.wrt

    def function(*args) -> torch.Tensor:
        if len(args) != len(kernel.arg_names):
            raise TypeError(
                f"{describe(kernel)} takes {len(kernel.arg_names)} arguments "
                f"({', '.join(kernel.arg_names)}), got {len(args)}.")
        tensors = [_as_cpu_tensor(kernel, name, value) for name, value in zip(kernel.arg_names, args)]
        return _KernelFunction.apply(kernel, wrt, *tensors)

    function.__doc__ = f"{describe(kernel)} on torch tensors; backward runs the compiled VJP."
    function.__name__ = kernel.name or "gradcomp_kernel"
    function.kernel = kernel
    return function


class _KernelFunction(torch.autograd.Function):
    """Forward: the compiled kernel.  Backward: the compiled VJP (differentiable), summed over broadcast dims.

    Forward mode: the compiled JVP.
    """

    @staticmethod
    def forward(kernel, wrt, *tensors):
        value = np.asarray(kernel(*[_to_numpy(t, kernel.dtype) for t in tensors]))
        return torch.from_numpy(value).to(_result_dtype(kernel, tensors))

    @staticmethod
    def setup_context(ctx, inputs, output):
        kernel, wrt, *tensors = inputs
        ctx.kernel, ctx.wrt = kernel, wrt
        ctx.save_for_backward(*tensors)
        ctx.save_for_forward(*tensors)
        ctx.output_dtype = output.dtype

    @staticmethod
    def backward(ctx, cotangent):
        kernel, wrt = ctx.kernel, ctx.wrt
        tensors = ctx.saved_tensors
        # Gradient slots: kernel, wrt, then one per tensor.
        needed = [i for i in wrt if ctx.needs_input_grad[2 + i]]
        grads = [None] * len(tensors)
        if not needed:
            return (None, None, *grads)
        vjps = _VJPFunction.apply(kernel, wrt, cotangent, *tensors)
        for index, vjp in zip(wrt, vjps):
            if index in needed:
                grads[index] = vjp.sum_to_size(tensors[index].shape).to(tensors[index].dtype)
        return (None, None, *grads)

    @staticmethod
    def jvp(ctx, kernel_tangent, wrt_tangent, *tangents):
        kernel, wrt = ctx.kernel, ctx.wrt
        for index, tangent in enumerate(tangents):
            if tangent is not None and index not in wrt and _nonzero(tangent):  # functorch passes zeros
                raise ValueError(
                    f"argument {kernel.arg_names[index]!r} of {describe(kernel)} has a forward-mode tangent but "
                    f"is not among the kernel's wrt ({', '.join(kernel.arg_names[i] for i in wrt)}); compile with "
                    f"wrt including it, or pass it without a tangent.")
        tensors = ctx.saved_tensors
        spread = _wrt_tangents(wrt, tangents, tensors)
        return _JVPFunction.apply(kernel, wrt, *tensors, *spread).to(ctx.output_dtype)

    @staticmethod
    def vmap(info, in_dims, kernel, wrt, *tensors):
        cores = kernel.arg_shapes
        return _KernelFunction.apply(kernel, wrt, *_mapped_first(in_dims[2:], tensors, cores)), 0


class _JVPFunction(torch.autograd.Function):
    """J t: the kernel's JVP of the arguments and one tangent per wrt argument (forward mode's rule)."""

    @staticmethod
    def forward(kernel, wrt, *tensors_and_tangents):
        n = len(kernel.arg_shapes)
        arrays = [_to_numpy(t, kernel.dtype) for t in tensors_and_tangents]
        tangents = arrays[n:]
        value = kernel.jvp(*arrays[:n], _as_tangent(tangents))
        return torch.from_numpy(np.asarray(value)).to(_result_dtype(kernel, tensors_and_tangents[:n]))

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def vmap(info, in_dims, kernel, wrt, *tensors_and_tangents):
        cores = list(kernel.arg_shapes) + [kernel.arg_shapes[i] for i in wrt]
        return _JVPFunction.apply(kernel, wrt, *_mapped_first(in_dims[2:], tensors_and_tangents, cores)), 0


class _VJPFunction(torch.autograd.Function):
    """vᵀJ per wrt argument, per point (not yet summed over broadcast dims).

    Its backward, given cotangents w of those VJPs, is the kernel's ``vjp_jvp``
    with tangent w: J w for the cotangent v, and vᵀ(∂²y)w for the arguments.
    """

    @staticmethod
    def forward(kernel, wrt, cotangent, *tensors):
        arrays = [_to_numpy(t, kernel.dtype) for t in tensors]
        vjps = kernel.vjp(*arrays, _to_numpy(cotangent, kernel.dtype))
        if len(wrt) == 1:
            vjps = (vjps,)
        dtype = _result_dtype(kernel, tensors)
        return tuple(torch.from_numpy(np.ascontiguousarray(vjp)).to(dtype) for vjp in vjps)

    @staticmethod
    def setup_context(ctx, inputs, output):
        kernel, wrt, cotangent, *tensors = inputs
        ctx.kernel, ctx.wrt = kernel, wrt
        ctx.save_for_backward(cotangent, *tensors)
        ctx.save_for_forward(cotangent, *tensors)

    @staticmethod
    def vmap(info, in_dims, kernel, wrt, cotangent, *tensors):
        cores = [kernel.out_shape, *kernel.arg_shapes]
        vjps = _VJPFunction.apply(kernel, wrt, *_mapped_first(in_dims[2:], (cotangent, *tensors), cores))
        return vjps, (0,) * len(vjps)

    @staticmethod
    def jvp(ctx, kernel_tangent, wrt_tangent, cotangent_tangent, *tangents):
        """The tangent of vᵀJ along (dv, dx): dvᵀJ + vᵀ(∂²y)dx (forward over reverse: ``torch.func.hessian``)."""
        kernel, wrt = ctx.kernel, ctx.wrt
        cotangent, *tensors = ctx.saved_tensors
        terms = []
        if cotangent_tangent is not None:
            terms.append(_VJPFunction.apply(kernel, wrt, cotangent_tangent, *tensors))
        if any(tangents[i] is not None for i in wrt):
            spread = _wrt_tangents(wrt, tangents, tensors)
            terms.append(_SecondOrderFunction.apply(kernel, wrt, cotangent, *tensors, *spread))
        if not terms:
            return tuple(torch.zeros_like(tensors[i]) for i in wrt)
        return tuple(sum(parts) for parts in zip(*terms))

    @staticmethod
    @once_differentiable
    def backward(ctx, *vjp_cotangents):
        kernel, wrt = ctx.kernel, ctx.wrt
        cotangent, *tensors = ctx.saved_tensors
        grads = [None] * len(tensors)
        wants_v = ctx.needs_input_grad[2]
        wanted = [i for i in wrt if ctx.needs_input_grad[3 + i]]
        if not wants_v and not wanted:
            return (None, None, None, *grads)
        arrays = [_to_numpy(t, kernel.dtype) for t in tensors]
        directions = [_to_numpy(w, kernel.dtype) for w in vjp_cotangents]  # torch materializes unused ones as 0
        tangent = _as_tangent(directions)
        if wanted:
            jvp, second = kernel.vjp_jvp(*arrays, _to_numpy(cotangent, kernel.dtype), tangent)
            second = (second,) if len(wrt) == 1 else second
            for index, term in zip(wrt, second):
                if index in wanted:
                    tensor = tensors[index]
                    summed = sum_to_shape(np.asarray(term), tuple(tensor.shape))
                    grads[index] = torch.from_numpy(summed).to(tensor.dtype)
        else:
            jvp = kernel.jvp(*arrays, tangent)
        grad_v = None
        if wants_v:
            grad_v = torch.from_numpy(sum_to_shape(np.asarray(jvp), tuple(cotangent.shape))).to(cotangent.dtype)
        return (None, None, grad_v, *grads)


class _SecondOrderFunction(torch.autograd.Function):
    """vᵀ(∂²y)t per wrt argument: the second result of the kernel's ``vjp_jvp``."""

    @staticmethod
    def forward(kernel, wrt, cotangent, *tensors_and_tangents):
        n = len(kernel.arg_shapes)
        arrays = [_to_numpy(t, kernel.dtype) for t in tensors_and_tangents]
        tangents = arrays[n:]
        _, second = kernel.vjp_jvp(*arrays[:n], _to_numpy(cotangent, kernel.dtype),
                                   _as_tangent(tangents))
        second = (second,) if len(wrt) == 1 else second
        dtype = _result_dtype(kernel, tensors_and_tangents[:n])
        return tuple(torch.from_numpy(np.ascontiguousarray(term)).to(dtype) for term in second)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def vmap(info, in_dims, kernel, wrt, cotangent, *tensors_and_tangents):
        cores = [kernel.out_shape, *kernel.arg_shapes, *(kernel.arg_shapes[i] for i in wrt)]
        terms = _SecondOrderFunction.apply(
            kernel, wrt, *_mapped_first(in_dims[2:], (cotangent, *tensors_and_tangents), cores))
        return terms, (0,) * len(terms)


def _wrt_tangents(wrt, tangents, tensors) -> list:
    """The tangent of each wrt argument, zeros for one that has none."""
    return [tangents[i] if tangents[i] is not None else torch.zeros_like(tensors[i]) for i in wrt]


def _as_tangent(tangents):
    """Tangents of the wrt arguments as the kernel's methods take them: one, or a tuple of several."""
    return tangents[0] if len(tangents) == 1 else tuple(tangents)


def _mapped_first(in_dims, tensors, cores) -> list:
    """``torch.func.vmap``'s mapped dimension of each tensor moved to the front, with size-1 dimensions
    after it so that it stands before every batch dimension of the result; unmapped tensors broadcast."""
    batch_ndims = [t.ndim - (d is not None) - len(core) for t, d, core in zip(tensors, in_dims, cores)]
    depth = max(batch_ndims)
    moved = []
    for tensor, dim, ndim in zip(tensors, in_dims, batch_ndims):
        if dim is not None:
            tensor = tensor.movedim(dim, 0)
            tensor = tensor.reshape(tensor.shape[:1] + (1,) * (depth - ndim) + tensor.shape[1:])
        moved.append(tensor)
    return moved


def _nonzero(tangent: torch.Tensor) -> bool:
    """Whether a tangent has a nonzero entry; under ``torch.func.vmap`` (no data-dependent control flow)
    assume it has."""
    try:
        return bool(torch.any(tangent != 0))
    except RuntimeError:
        return True


def _as_cpu_tensor(kernel, name: str, value) -> torch.Tensor:
    tensor = value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
    if tensor.device.type != "cpu":
        raise ValueError(
            f"argument {name!r} of {describe(kernel)} is on device {tensor.device}; gradcomp kernels run "
            f"on the CPU: pass {name}.cpu() and move the result back with .to({str(tensor.device)!r}).")
    if tensor.is_complex() or tensor.dtype == torch.bool:
        raise TypeError(f"argument {name!r} of {describe(kernel)} must be real numbers, got dtype {tensor.dtype}.")
    return tensor


def _to_numpy(tensor: torch.Tensor, dtype: np.dtype) -> np.ndarray:
    """A NumPy view (or copy, when the dtype differs) of a CPU tensor, in the kernel's dtype."""
    array = tensor.detach().numpy()
    return array if array.dtype == dtype else array.astype(dtype)


def _result_dtype(kernel, tensors) -> torch.dtype:
    floating = [t for t in tensors if t.is_floating_point()]
    if not floating:
        return getattr(torch, kernel.dtype.name)
    dtype = floating[0].dtype
    for tensor in floating[1:]:
        dtype = torch.promote_types(dtype, tensor.dtype)
    return dtype

