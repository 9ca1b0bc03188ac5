"""A call's arguments checked, as every way into a kernel checks them (NumPy arrays, dask arrays, ``out=``),
and its results allocated: plain functions of a method's blocks, with messages that carry the values."""

from __future__ import annotations

from math import prod

import numpy as np

NUMERIC_KINDS = "biuf"


def as_array(value, block: str) -> np.ndarray:
    """An ndarray of real numbers (converted to the kernel's dtype later, chunk by chunk)."""
    try:
        array = np.asarray(value)
    except ValueError as exc:  # ragged nesting: NumPy refuses an inhomogeneous shape
        text = repr(value)
        raise ValueError(
            f"argument {block!r} is not a rectangular array: {text[:80] + '...' if len(text) > 80 else text} "
            f"({exc}). Give nested lists of equal lengths, or an array of shape (..., core shape).") from None
    if array.dtype.kind not in NUMERIC_KINDS:
        raise TypeError(
            f"argument {block!r} must be real numbers, got {type(value).__name__} of dtype {array.dtype}.")
    return array


def wrong_count(name: str, method, values) -> None:
    expected = ", ".join(block for block, _, _ in method.inputs)
    call = "__call__" if name == "forward" else name
    raise TypeError(f"{call}() takes {len(method.inputs)} arguments ({expected}), got {len(values)}.")


def wrong_shape(block: str, core: tuple, shape: tuple) -> None:
    if core:
        raise ValueError(
            f"argument {block!r} has shape {shape}, which does not end in its core shape {core}; "
            f"pass an array of shape (..., {', '.join(map(str, core))}).")
    raise ValueError(f"argument {block!r} has shape {shape}; its core shape is () (a scalar per point).")


def broadcast(method, batches) -> tuple:
    """The batch shape of a call whose arguments have the batch shapes ``batches``."""
    try:
        return np.broadcast_shapes(*batches)
    except ValueError:
        described = ", ".join(f"{block} {shape}" for (block, _, _), shape in zip(method.inputs, batches))
        raise ValueError(
            f"batch shapes do not broadcast: {described} (batch dimensions come before each "
            f"argument's core shape and broadcast like NumPy's).") from None


def check_out(method, out, batch: tuple, dtype) -> list:
    """The user's preallocated results: one per output block, exact shape, dtype, C order."""
    expected = [batch + shape for _, shape, _ in method.outputs]
    given = (out,) if isinstance(out, np.ndarray) else tuple(out) if isinstance(out, (tuple, list)) else None
    if given is None or len(given) != len(expected):
        raise TypeError(f"out must be {len(expected)} array(s) of shape(s) {expected}, got {type(out).__name__}.")
    for (block, _, _), array, shape in zip(method.outputs, given, expected):
        if not isinstance(array, np.ndarray) or array.shape != shape or array.dtype != dtype:
            raise ValueError(
                f"out for {block!r} must be an array of shape {shape} and dtype {dtype}, got "
                f"{getattr(array, 'shape', type(array).__name__)} {getattr(array, 'dtype', '')}.")
        if not (array.flags.c_contiguous and array.flags.writeable):
            raise ValueError(f"out for {block!r} must be C-contiguous and writeable "
                             f"(np.empty({shape}) or an np.memmap in mode 'w+').")
    blocks = [block for block, _, _ in method.outputs]
    for i, array in enumerate(given):
        for j in range(i):
            if np.may_share_memory(given[j], array):  # C-contiguous: overlapping bounds share memory
                raise ValueError(
                    f"out arrays {j} ({blocks[j]!r}) and {i} ({blocks[i]!r}) share memory: each result "
                    f"needs its own array, e.g. out=({', '.join(f'np.empty({s})' for s in expected)}).")
    return list(given)


def overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two arrays share memory (a problem too hard to decide counts as shared)."""
    if not np.may_share_memory(a, b):
        return False
    try:
        return np.shares_memory(a, b, max_work=1 << 20)
    except getattr(np, "exceptions", np).TooHardError:
        return True


def allocate(batch: tuple, outputs, dtype) -> list:
    """Every result of one call as a view into one block of memory.

    Several separate large arrays freed together push glibc past its trim
    threshold, so the next call gets fresh pages from the OS and pays their
    faults: seed's fused value_and_vjp ran 66 instead of 650 Mpts/s that way.
    """
    points = prod(batch)
    block = np.empty(points * sum([size for _, _, size in outputs]), dtype)
    results, start = [], 0
    for _, shape, size in outputs:
        results.append(block[start:start + points * size].reshape(batch + shape))
        start += points * size
    return results
