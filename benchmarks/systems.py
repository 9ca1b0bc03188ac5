"""The systems under test: gradcomp and its peers, each built from benchmarks/suite.py.

Every batched system is a ``Batched``: ``prepare(X, V)`` puts the row-major
inputs into the system's preferred container and layout (outside any timed
region), ``call(prepared)`` computes the VJP (what is timed), and
``as_numpy(result)`` turns the result into an (N, n_in) array for the
correctness check.  A peer whose package is missing is reported by
``missing_peers`` and skipped.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .suite import CASES

PEER_PACKAGES = {"JAX": "jax", "torch": "torch", "SymPy": "sympy", "SymEngine": "symengine"}


@dataclass
class Batched:
    """One system's batched VJP, split into untimed preparation and the timed call."""

    label: str
    prepare: Callable[[np.ndarray, np.ndarray], Any]
    call: Callable[[Any], Any]
    as_numpy: Callable[[Any], np.ndarray]
    note: str = ""


@dataclass
class Point:
    """One system's single-point VJP on a 1-D point x and cotangent v."""

    label: str
    prepare: Callable[[np.ndarray, np.ndarray], Any]
    call: Callable[[Any], Any]
    note: str = ""


def missing_peers() -> list[str]:
    """Peers whose package cannot be imported here: they are skipped with a note."""
    return [peer for peer, package in PEER_PACKAGES.items() if importlib.util.find_spec(package) is None]


def case_shape(name: str) -> tuple[int, int]:
    """(n_in, n_out) of a suite case."""
    _, n_in, n_out = CASES[name]
    return n_in, n_out


def _columns(array: np.ndarray) -> list[np.ndarray]:
    """Contiguous 1-D columns: what per-column backends (lambdify, torch) want."""
    return [np.ascontiguousarray(array[:, j]) for j in range(array.shape[1])]


def _stacked(columns, n_points: int) -> np.ndarray:
    """(N, k) from k results that may be arrays or scalars (a constant-zero gradient)."""
    return np.column_stack([np.broadcast_to(np.asarray(c, float), (n_points,)) for c in columns])


# -- gradcomp --------------------------------------------------------------

def symbolic_case(name: str):
    """The SymPy definition of a case: its input symbols and output expressions."""
    import sympy as sp
    function, n_in, _ = CASES[name]
    symbols = sp.symbols(f"x0:{n_in}")
    return list(symbols), function(list(symbols), sp)


def gradcomp_kernel(name: str, cache=None):
    """Compile a case with gradcomp: one vector argument (n_in,), outputs (n_out,)."""
    import gradcomp as gc
    symbols, outputs = symbolic_case(name)
    return gc.compile(outputs, [symbols], cache=cache)


def gradcomp_batched(kernel) -> list[Batched]:
    """gradcomp's fused value_and_vjp, its vjp and (for the time ratio) its forward alone."""
    def prepare(X, V):
        return X, V
    return [
        Batched("gradcomp value_and_vjp", prepare, lambda p: kernel.value_and_vjp(*p), lambda r: r[1]),
        Batched("gradcomp vjp", prepare, lambda p: kernel.vjp(*p), lambda r: r),
        Batched("gradcomp forward", prepare, lambda p: kernel(p[0]), lambda r: None,
                note="forward alone, for the fused/forward time ratio; not a VJP"),
        Batched("gradcomp value_and_vjp, 1 thread", prepare, _one_thread(lambda p: kernel.value_and_vjp(*p)),
                lambda r: r[1], note="numba.set_num_threads(1) around the call: per-core speed, and how much "
                                     "the 2-thread figure loses to cores shared with other processes"),
    ]


def _one_thread(call):
    """The call run with Numba limited to one thread (restored afterwards)."""
    def limited(prepared):
        import numba
        threads = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            return call(prepared)
        finally:
            numba.set_num_threads(threads)
    return limited


def gradcomp_point(kernel) -> Point:
    """Single point through the public API: 1-D numpy x and v."""
    return Point("gradcomp vjp", lambda x, v: (x, v), lambda p: kernel.vjp(*p))


# -- JAX -------------------------------------------------------------------

def _jax():
    import jax
    jax.config.update("jax_enable_x64", True)
    return jax


def jax_vjp_point_function(name: str):
    """vjp(x, v) of one point, written with jax.numpy; the building block of both JAX variants."""
    jax = _jax()
    import jax.numpy as jnp
    function = CASES[name][0]

    def outputs(x):
        return jnp.stack([jnp.asarray(y, x.dtype) for y in function([x[j] for j in range(x.shape[0])], jnp)])

    def vjp_point(x, v):
        return jax.vjp(outputs, x)[1](v)[0]
    return vjp_point


def jax_batched(name: str) -> Batched:
    """JAX jit(vmap(vjp)) in float64 on device arrays placed before timing."""
    jax = _jax()
    batched = jax.jit(jax.vmap(jax_vjp_point_function(name)))
    return Batched("JAX jit(vmap(vjp))", lambda X, V: (jax.device_put(X), jax.device_put(V)),
                   lambda p: batched(*p).block_until_ready(), lambda r: np.asarray(r),
                   note="x64; XLA CPU default threading")


def jax_point(name: str) -> Point:
    """Jitted single-point JAX VJP, including dispatch and block_until_ready."""
    jax = _jax()
    single = jax.jit(jax_vjp_point_function(name))
    return Point("JAX jit", lambda x, v: (jax.device_put(x), jax.device_put(v)),
                 lambda p: single(*p).block_until_ready())


# -- PyTorch ---------------------------------------------------------------

def _torch_vjp(function, x, cotangents):
    """torch.autograd.grad of the outputs that depend on x, weighted by their cotangents."""
    import torch
    n_in = x.shape[-1]
    columns = [x[..., j] for j in range(n_in)]
    pairs = [(y, v) for y, v in zip(function(columns, torch), cotangents)
             if isinstance(y, torch.Tensor) and y.requires_grad]
    if not pairs:
        return torch.zeros_like(x)
    outputs, weights = zip(*pairs)
    return torch.autograd.grad(outputs, x, grad_outputs=weights)[0]


def torch_batched(name: str) -> Batched:
    """PyTorch eager autograd; X stored column-major so each input column is contiguous."""
    import torch
    function = CASES[name][0]

    def prepare(X, V):
        return torch.from_numpy(np.asfortranarray(X)), [torch.from_numpy(c) for c in _columns(V)]

    def call(prepared):
        X, cotangents = prepared
        return _torch_vjp(function, X.detach().requires_grad_(True), cotangents)
    return Batched("torch eager", prepare, call, lambda r: r.numpy(),
                   note=f"autograd.grad with grad_outputs; X column-major; {torch.get_num_threads()} threads")


def torch_point(name: str) -> Point:
    """PyTorch eager backward on one point (a 1-D leaf tensor)."""
    import torch
    function = CASES[name][0]

    def prepare(x, v):
        return torch.from_numpy(x.copy()), list(torch.from_numpy(v.copy()))

    def call(prepared):
        x, cotangents = prepared
        return _torch_vjp(function, x.detach().requires_grad_(True), cotangents)
    return Point("torch eager", prepare, call)


# -- SymPy lambdify --------------------------------------------------------

def sympy_batched(name: str) -> Batched:
    """SymPy lambdify(numpy, cse=True) of the VJP expressions G_j = sum_i v_i dF_i/dx_j."""
    import sympy as sp
    symbols, outputs = symbolic_case(name)
    cotangents = sp.symbols(f"v0:{len(outputs)}")
    vjp = [sp.Add(*[v * sp.diff(y, x) for v, y in zip(cotangents, outputs)]) for x in symbols]
    function = sp.lambdify([*symbols, *cotangents], vjp, modules="numpy", cse=True)
    return Batched("SymPy lambdify(cse)", lambda X, V: _columns(X) + _columns(V),
                   lambda p: function(*p), lambda r: _stacked(r, _points_of(r)),
                   note="numpy ufuncs on contiguous columns; 1 thread")


def _points_of(results) -> int:
    return max(np.size(r) for r in results)


# -- SymEngine -------------------------------------------------------------

def symengine_batched(name: str) -> Batched:
    """SymEngine Lambdify(llvm, cse=True) of its own VJP expressions, on a packed [X|V] array.

    Arguments are named in_x<j>/in_v<i>: SymEngine's CSE temporaries are x0, x1, ...,
    and an argument absent from the expressions would clash with one (ANCHORS, fk6).
    """
    import symengine as se
    function, n_in, n_out = CASES[name]
    symbols = [se.Symbol(f"in_x{j}") for j in range(n_in)]
    cotangents = [se.Symbol(f"in_v{i}") for i in range(n_out)]
    outputs = [se.sympify(y) for y in function(symbols, se)]
    vjp = [sum((v * y.diff(x) for v, y in zip(cotangents, outputs)), se.Integer(0)) for x in symbols]
    compiled = se.Lambdify([*symbols, *cotangents], vjp, backend="llvm", cse=True)
    return Batched("SymEngine Lambdify llvm", lambda X, V: np.ascontiguousarray(np.hstack([X, V])),
                   compiled, lambda r: np.asarray(r),
                   note="native SymEngine diff; packed [X|V]; 1 thread; args renamed in_x/in_v")


PEER_BUILDERS: dict[str, Callable[[str], Batched]] = {
    "JAX": jax_batched, "torch": torch_batched, "SymPy": sympy_batched, "SymEngine": symengine_batched,
}
POINT_BUILDERS: dict[str, Callable[[str], Point]] = {"JAX": jax_point, "torch": torch_point}


def numba_reference_source(name: str, dtype: str = "float64") -> str:
    """A plain Numba ``prange`` loop over the points computing SymPy's VJP of a case (``sp.diff`` of each output,
    summed against the cotangent, then ``sp.cse``): what a user writes by hand with Numba, the floor any
    compiler of VJPs should beat.  Its source, defining ``reference(X, V)``."""
    import sympy as sp
    symbols, outputs = symbolic_case(name)
    cotangents = sp.symbols(f"v0:{len(outputs)}")
    vjp = [sum((v * sp.diff(y, x) for v, y in zip(cotangents, outputs)), sp.Integer(0)) for x in symbols]
    temporaries, results = sp.cse(vjp, symbols=sp.numbered_symbols("t"))
    cast = "np.float32" if dtype == "float32" else ""
    lines = ["import math", "import numpy as np", "from numba import njit, prange", "",
             '@njit(parallel=True, error_model="numpy")', "def reference(X, V):",
             "    out = np.empty(X.shape, X.dtype)", "    for p in prange(X.shape[0]):"]
    lines += [f"        {s} = X[p, {j}]" for j, s in enumerate(symbols)]
    lines += [f"        {v} = V[p, {i}]" for i, v in enumerate(cotangents)]
    lines += [f"        {t} = {cast}({sp.pycode(e, fully_qualified_modules=True)})" for t, e in temporaries]
    lines += [f"        out[p, {j}] = {sp.pycode(e, fully_qualified_modules=True)}" for j, e in enumerate(results)]
    lines += ["    return out", ""]
    return "\n".join(lines)


def numba_reference_batched(name: str, dtype: str = "float64") -> Batched:
    """The hand-written-style Numba loop of ``numba_reference_source``, on the threads Numba has."""
    namespace: dict = {}
    exec(compile(numba_reference_source(name, dtype), f"<numba reference {name}>", "exec"), namespace)
    reference = namespace["reference"]
    return Batched("naive Numba prange loop", lambda X, V: (X, V), lambda p: reference(*p), lambda r: r,
                   note="sp.diff + sp.cse VJP in a prange loop over points, error_model='numpy'")
