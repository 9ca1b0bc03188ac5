"""Sparse Jacobians and Hessians of indexed kernels, from the slot maps, never by unrolling.

Every term of a stage gives one entry per *sparse slot* (a slot of a wrt argument): its row is the
target element the term writes or adds into, its column the slot's flat position in its argument,
its value the body's partial derivative there.  A Hessian gives one entry per pair of sparse slots.
The pattern is the set of those (row, column) pairs, built per call in O(entries) by the stage's
``P`` driver and ``csr.csr_positions`` (a counting sort by row, then each row's columns); entries
that share a position are summed, in entry order (deterministic).  Values come from the ``S``/``SH``
drivers: each entry stored straight into its CSR position when no two entries share one, else into its
own slot and then summed.  Either way every value is written once, so the values start unzeroed, and
the positions are 32-bit where they fit: the values are memory-bound (a store and a position read per
entry).

The wrt arguments' blocks are stacked row-wise (block ``b``'s rows at ``b * out size``), so each
block's CSR arrays are one contiguous slice of the whole.  The pattern is kept per sizes and
integer arguments (compared in full: cheaper than any pattern).
"""

from __future__ import annotations

from math import prod
from typing import NamedTuple

import numpy as np


class Pattern(NamedTuple):
    indptr: list[np.ndarray]
    """Per block (wrt argument; one block for a Hessian)."""
    indices: list[np.ndarray]
    starts: list[int]
    """Where each block's entries start in the values of all of them."""
    nnz: int
    positions: list[np.ndarray]
    """Per stage: each entry's CSR position, or (where entries share positions) its own index."""
    summed: np.ndarray | None
    """Where entries share positions: each entry's CSR position, for the ordered sum; else None."""
    cuts: list[tuple[np.ndarray, np.ndarray]]
    """Per stage: chunk boundaries and the terms before each chunk."""


def unsupported(kernel, hessian: bool) -> str | None:
    """Why this kernel has no sparse Jacobian (Hessian), or None."""
    stages = kernel._stages()
    if any(stage.target >= 0 for stage in stages):
        return ("its sums feed other expressions (inner sums kept as temporaries, such as log(Sum(...)) or "
                "tanh(Sum(...)) in an equation), whose sparse chain rule is not implemented yet")
    if hessian and len({source for stage in stages for source in stage.sparse}) > 1:
        return "a Hessian needs one wrt argument"
    return None


def pattern(kernel, arrays, sizes, hessian: bool) -> Pattern:
    """The pattern at these arrays, from the kernel's cache of them when the sizes and index data match."""
    integers = [a for a, integer in zip(arrays, kernel._integer) if integer]
    key = (hessian, sizes)
    kept = kernel._patterns.get(key)
    if kept is not None and all(np.array_equal(a, b) for a, b in zip(kept[0], integers)):
        return kept[1]
    built = _build(kernel, arrays, sizes, hessian)
    if len(kernel._patterns) >= 4:
        kernel._patterns.clear()
    kernel._patterns[key] = ([np.array(a) for a in integers], built)
    return built


def _build(kernel, arrays, sizes, hessian: bool) -> Pattern:
    module = kernel._import()
    flat = [a.reshape(-1) for a in arrays]
    _, out_shape = module.extents(*sizes)
    blocks = [kernel.wrt[0]] if hessian else list(kernel.wrt)
    rows_out = prod(arrays[blocks[0]].shape) if hessian else prod(out_shape)
    width = max(prod(arrays[k].shape) for k in blocks)
    row_parts, column_parts, cuts = [], [], []
    for stage in kernel._stages():
        cut = stage.bounds(*sizes, *flat)
        offsets = stage.offsets(*sizes, *flat, cut)
        terms, per = int(offsets[-1]), len(stage.sparse)
        row = np.empty(terms, np.int64)
        column = np.empty(terms * per, np.int64)
        kernel._launch(stage.drivers[4], (*sizes, *flat, cut, offsets, row, column), cut.size - 1)
        cuts.append((cut, offsets))
        column = column.reshape(terms, per)
        if hessian:
            rows = np.repeat(column, per, axis=1)
            columns = np.tile(column, (1, per))
        else:
            block = np.array([blocks.index(int(source[1:])) for source in stage.sparse], np.int64)
            rows = block[None, :] * rows_out + row[:, None]
            columns = column
        row_parts.append(rows.reshape(-1))
        column_parts.append(columns.reshape(-1))
    rows = _joined(row_parts)
    columns = _joined(column_parts)
    from .csr import csr_positions  # here: Numba's import and the helper's cache load, for patterns only
    narrow = np.int32 if max(rows.size, rows_out * len(blocks), width) < 2 ** 31 else np.int64
    position, indptr_all, columns_all, unique = csr_positions(rows, columns, rows_out * len(blocks), width, narrow)
    shared = unique < rows.size
    positions, start = [], 0
    for part in row_parts:
        positions.append(np.arange(start, start + part.size, dtype=narrow) if shared else
                         position[start:start + part.size])
        start += part.size
    indptr, indices, starts = [], [], []
    for b in range(len(blocks)):
        part = indptr_all[b * rows_out:(b + 1) * rows_out + 1]
        indptr.append(part - part[0])
        indices.append(columns_all[part[0]:part[-1]])
        starts.append(int(part[0]))
    summed = position.astype(np.intp) if shared else None  # np.bincount casts any other index type per call
    return Pattern(indptr, indices, starts, int(unique), positions, summed, cuts)


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    """The stages' entries one after another (one stage: its own array, not a copy)."""
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def values(kernel, arrays, sizes, found: Pattern, hessian: bool) -> np.ndarray:
    """Every block's nonzero values, one after another, in CSR order."""
    module = kernel._import()
    flat = [a.reshape(-1) for a in arrays]
    _, out_shape = module.extents(*sizes)
    dtype = kernel.dtype
    base = (*sizes, *flat, np.zeros(prod(out_shape), dtype))
    total = found.nnz if found.summed is None else found.summed.size
    data = np.empty(total, dtype)  # every entry is stored once (see the module's docstring)
    for stage, (cut, offsets), positions in zip(kernel._stages(), found.cuts, found.positions):
        driver = stage.drivers[6 if hessian else 5]
        kernel._launch(driver, (*base, cut, offsets, positions, data), cut.size - 1)
    if found.summed is not None:  # entries that share a position, summed in entry order
        data = np.bincount(found.summed, weights=data, minlength=found.nnz).astype(dtype, copy=False)
    return data


def csr_blocks(found: Pattern, data: np.ndarray, columns: list[int]) -> list:
    """``scipy.sparse.csr_array`` per block of ``data``."""
    try:
        from scipy.sparse import csr_array
    except ImportError:
        raise ImportError("a sparse Jacobian is a scipy.sparse.csr_array: pip install scipy.") from None
    blocks = []
    for b, width in enumerate(columns):
        start = found.starts[b]
        part = data[start:start + found.indices[b].size]
        blocks.append(csr_array((part, found.indices[b], found.indptr[b]), shape=(found.indptr[b].size - 1, width)))
    return blocks
