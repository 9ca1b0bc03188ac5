"""Kernels on dask arrays: every method runs blockwise, lazily, on any dask scheduler.

The kernel travels to workers by pickling, which carries its generated source,
so workers need gradcomp, NumPy and Numba but never SymPy.
"""

from __future__ import annotations

import string
from math import prod

import numpy as np

from ..runtime import is_dask_array


def run_blockwise(kernel, method, values) -> list:
    """The results of ``method`` as dask arrays: batch + shape, chunked like the batch."""
    import dask.array as da

    cores = [core for _, core, _ in method.inputs]
    batch_ndims = [np.ndim(v) - len(core) for v, core in zip(values, cores)]
    batch_shape = np.broadcast_shapes(*(np.shape(v)[:n] for v, n in zip(values, batch_ndims)))
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
                          new_axes={"Z": sum(sizes)}, dtype=kernel.dtype, concatenate=True)
    results, start = [], 0
    for (_, shape, size) in method.outputs:
        results.append(packed[..., start:start + size].reshape(batch_shape + shape))
        start += size
    return results


def _packed_block(*blocks, kernel, name_):
    """One block: run the method on NumPy arrays, flatten each result's core, concatenate."""
    outputs = kernel._run(name_, blocks)
    batch = np.broadcast_shapes(*(np.shape(o)[:np.ndim(o) - len(shape)]
                                  for o, (_, shape, _) in zip(outputs, kernel._methods[name_].outputs)))
    return np.concatenate([np.reshape(o, batch + (prod(shape),))
                           for o, (_, shape, _) in zip(outputs, kernel._methods[name_].outputs)], axis=-1)
