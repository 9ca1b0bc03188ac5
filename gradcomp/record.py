"""The kernel's record: what a generated module computes and how each of its methods is called.

codegen writes it into the module as ``META = KernelRecord(...)`` (its repr is
the source); the runtime, the cache and export read it.  Plain values only:
no SymPy, no Numba, so that loading a cached kernel needs neither.
"""

from typing import NamedTuple

DRIVERS = ("point", "serial", "parallel")
"""The compiled functions of each generated method, ``<method>_<driver>`` in the module: one point, a
plain loop over a batch, a ``prange`` loop over a batch."""

VECTOR_ROW_MAX = 1024
"""Methods whose rows (inputs and outputs of one point) hold more scalars run their batches one point
a block.  Moving rows into vector lanes and back costs shuffles and a store per row and group, and
LLVM's instruction schedulers grow faster than linearly with the memory operations of one block:
the batch driver of an n x n Hessian compiled in 0.29 s at n = 20 (0.07 s as scalar code), 1.5 s at
n = 40 (0.14 s) and 10 s at n = 100 (1.2 s), while such outputs are mostly stores anyway."""

Block = tuple[str, tuple[int, ...]]
"""A named group of scalars of one shape: an argument, an output, a cotangent or tangent."""


class MethodRecord(NamedTuple):
    """One generated method: its blocks in calling order and what its core costs."""

    inputs: tuple[Block, ...]
    outputs: tuple[Block, ...]
    statements: int
    """Assignments in the straight-line program."""
    ops: int
    """Arithmetic operations, comparisons, selects and calls per point, counted on the listing."""
    parallel_min_points: int
    """Batches from this many points run on all cores."""
    layout: tuple | None = None
    """Outputs that are not dense arrays: the sparse Jacobian's CSR pattern, (indptr, indices) per wrt argument."""


class KernelRecord(NamedTuple):
    """One kernel: its signature as the runtime needs it, and its methods."""

    name: str | None
    key: str
    dtype: str
    arguments: tuple[Block, ...]
    wrt: tuple[int, ...]
    out_shape: tuple[int, ...]
    methods: dict[str, MethodRecord]
    """The methods derived so far."""
    deferred: tuple[str, ...]
    """The methods derived when first called (from the module's SIGNATURE)."""
    gradcomp: str
    """The version that generated the module."""


class LoopRecord(NamedTuple):
    """An indexed kernel (loops over runtime sizes): what the runtime checks and calls.

    Shapes are Python expressions of the sizes ``N0, N1, ...`` (``sizes`` holds the user's names);
    the module computes them (``extents``), so reading the record needs nothing but this."""

    name: str | None
    key: str
    dtype: str
    arguments: tuple[tuple[str, tuple[str, ...], bool], ...]
    """Per argument: name, core shape as written (sizes by name), whether it holds integers (index data)."""
    sizes: tuple[str, ...]
    size_sources: tuple[tuple[int, int], ...]
    """Per size: the (argument, axis) whose extent gives its value."""
    wrt: tuple[int, ...]
    output: str
    out_shape: tuple[str, ...]
    """The output's shape as written (sizes by name); () for a scalar."""
    pieces: tuple[str, ...]
    """The indexed output's equations, in order (for coverage errors)."""
    stages: tuple[tuple[str, dict[str, int]], ...]
    """Per stage: its term as written and the operations per term of each body method."""
    gradcomp: str
