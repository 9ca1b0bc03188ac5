"""What the framework bridges share: gradients of broadcast arguments, names in messages."""

from __future__ import annotations

import numpy as np


def sum_to_shape(gradient: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``gradient`` summed over the dimensions along which an array of ``shape`` was broadcast to it."""
    leading = gradient.ndim - len(shape)
    if leading:
        gradient = gradient.sum(axis=tuple(range(leading)))
    stretched = tuple(axis for axis, size in enumerate(shape) if size == 1 and gradient.shape[axis] != 1)
    if stretched:
        gradient = gradient.sum(axis=stretched, keepdims=True)
    return np.ascontiguousarray(gradient)


def describe(kernel) -> str:
    return f"gradcomp kernel {kernel.name or kernel.key[:12]}"
