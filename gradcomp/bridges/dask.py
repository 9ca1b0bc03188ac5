"""Kernels on dask arrays: every method runs blockwise, lazily, on any dask scheduler.

The kernel travels to workers by pickling, which carries its generated source,
so workers need gradcomp, NumPy and Numba but never SymPy.  The runtime imports
this module (dask itself only when a dask array comes); this module imports none
of gradcomp's and works on the kernel it is handed.
"""

from __future__ import annotations

import math
import string
from math import prod

import numpy as np

from ..arguments import NUMERIC_KINDS, as_array, broadcast, wrong_shape


def is_dask_array(value) -> bool:
    """Without importing dask: arrays of dask.array run blockwise."""
    return type(value).__module__.startswith("dask.array")


def run_blockwise(kernel, method, values, out=None) -> list:
    """The results of ``method`` as dask arrays: batch + shape, chunked like the batch.

    Shapes and dtypes are checked here, with the messages of NumPy inputs,
    before dask sees them.  ``out`` is refused: the results are lazy.
    """
    import dask.array as da

    if out is not None:
        raise TypeError(
            f"out= cannot be used with dask array inputs: the results are lazy dask arrays, not computed into "
            f"{type(out).__name__}. Call without out= and store them, e.g. dask.array.store(result, out).")
    values = [value if is_dask_array(value) else as_array(value, block)
              for (block, _, _), value in zip(method.inputs, values)]
    cores = [core for _, core, _ in method.inputs]
    batch_ndims = [_checked_batch_ndim(block, core, value)
                   for (block, core, _), value in zip(method.inputs, values)]
    batches = [np.shape(v)[:n] for v, n in zip(values, batch_ndims)]
    if any(math.isnan(size) for batch in batches for size in batch):
        batch_shape = np.broadcast_shapes(*batches)  # unknown chunk sizes: dask decides
    else:
        batch_shape = broadcast(method, batches)
    batch_index = string.ascii_lowercase[:len(batch_shape)]
    core_letters = iter(string.ascii_uppercase[:-1])
    pairs = []
    for value, core, ndim in zip(values, cores, batch_ndims):
        if ndim == 0 and not is_dask_array(value):
            pairs += (np.asarray(value), None)  # a shared parameter: whole, in every block
            continue
        array = da.broadcast_to(da.asarray(value), batch_shape + tuple(core))
        array = array.rechunk({len(batch_shape) + axis: -1 for axis in range(len(core))})
        pairs += (array, batch_index + "".join(next(core_letters) for _ in core))
    sizes = [size for _, _, size in method.outputs]
    packed = da.blockwise(_packed_block, batch_index + "Z", *pairs, kernel=kernel, name_=method.name,
                          output_shapes=[shape for _, shape, _ in method.outputs],
                          new_axes={"Z": sum(sizes)}, dtype=kernel.dtype, concatenate=True)
    results, start = [], 0
    for (_, shape, size) in method.outputs:
        results.append(packed[..., start:start + size].reshape(batch_shape + shape))
        start += size
    return results


def _checked_batch_ndim(block, core, value) -> int:
    """How many batch dimensions ``value`` has; a wrong core shape or dtype is refused as for NumPy inputs."""
    if np.dtype(value.dtype).kind not in NUMERIC_KINDS:
        raise TypeError(f"argument {block!r} must be real numbers, got {type(value).__name__} of dtype {value.dtype}.")
    shape = tuple(value.shape)
    batch_ndim = len(shape) - len(core)
    if batch_ndim < 0 or shape[batch_ndim:] != core:
        wrong_shape(block, core, shape)
    return batch_ndim


def _packed_block(*blocks, kernel, name_, output_shapes):
    """One block: run the method on NumPy arrays, flatten each result's core, concatenate."""
    outputs = kernel.run(name_, *blocks)
    batch = np.broadcast_shapes(*(np.shape(o)[:np.ndim(o) - len(shape)] for o, shape in zip(outputs, output_shapes)))
    return np.concatenate([np.reshape(o, batch + (prod(shape),)) for o, shape in zip(outputs, output_shapes)],
                          axis=-1)
