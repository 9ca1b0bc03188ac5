"""Indexed models (IndexedBase, Sum, Eq outputs): gradcomp's loop kernels against JAX and hand-written Numba.

    python -m benchmarks.indexed [--quick] [--out DIR] [--cases chain lj_pairs ...]
        [--systems gradcomp jax numba] [--dtypes float64 float32] [--threads 2] [--repeats 7]

Writes ``indexed.md`` and ``indexed.json`` into ``--out`` (default: this folder; with ``--quick``, a fresh
temporary directory, so the committed results are never overwritten by a smoke run).

Cases, at full size (``--quick``: tiny sizes, 1 repeat):

- ``chain``: Sum((x[i+1]-x[i])**2 + cos(x[i]), (i, 0, n-2)), n = 1e6; value and gradient.
- ``logsumexp``: log(Sum(exp(x[i]), (i, 0, n-1))), n = 1e6; value and gradient.
- ``lj_pairs``: Lennard-Jones energy Sum_{i<j} 4 (r2^-6 - r2^-3) of P (n, 3), n = 2000, positions on a
  jittered lattice of spacing 1.1; value and gradient (minus the forces).
- ``gray_scott``: the periodic 2-D Gray-Scott right-hand side on N x N, N = 512 (Mod neighbours); value and
  VJP with a standard-normal cotangent.  gradcomp takes Eq outputs of one IndexedBase only, so the two
  fields' right-hand sides are the two planes of one output of shape (2, N, N).
- ``xy_edges``: Sum(w[k] (1 - cos(x[e[k,0]] - x[e[k,1]])), (k, 0, m-1)), 1e6 nodes, 4e6 random edges
  (int64 e of shape (m, 2)); value and gradient with respect to x only (``wrt=[0]``).
- ``lj48``: compile time of the LJ gradient of 48 atoms: the indexed kernel against the unrolled one (the
  explicit sum over the 1,128 pairs of symbols P_i_c, ``sp.Add(*terms)``): ``gc.compile`` + first ``k.grad``.
- ``memory``: peak RSS of the LJ gradient at n = 10,000: gradcomp against JAX's dense pair matrices, the latter
  only if its estimated footprint fits (and under a watchdog that kills it above a cap either way).

Systems, each (case, system, dtype) in a fresh process of its own, one process at a time (Numba's, XLA's and
torch's thread pools compete for the cores when they share a process): ``gradcomp`` (``gc.compile`` into an
empty cache, first calls, then it waits for the parallel drivers the first calls compile in the background),
``jax`` (``jax.jit`` of the function written with ``jnp``; ``jax.jit(jax.grad)`` / ``jax.vjp``; x64 on for
float64 only) and ``numba`` (``@njit(parallel=True, fastmath=False)`` loops written the obvious way: ``prange``
for values and for gradients that gather; a serial loop for the edge-list scatter).  Every worker saves its
value and gradient; the parent compares each with gradcomp's of the same dtype (normwise, tolerance 1e-8 for
float64, 5e-3 for float32) and exits non-zero, after writing the report, if any disagrees or a worker failed
(a worker stopped by the memory guard is a skip, not a failure).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.environment import available_memory_bytes, describe  # noqa: E402
from benchmarks.timing import median, seconds_per_call  # noqa: E402

CASES = ["chain", "logsumexp", "lj_pairs", "gray_scott", "xy_edges"]
EXTRAS = ["lj48", "memory"]
SYSTEMS = {"gradcomp": "gradcomp", "jax": "JAX", "numba": "Numba"}
EXTRA_SYSTEMS = {"lj48": {"indexed": "gradcomp indexed", "unrolled": "gradcomp unrolled"},
                 "memory": {"gradcomp": "gradcomp", "jax": "JAX dense pairs"}}
DTYPES = ["float64", "float32"]
SHORT = {"float64": "f64", "float32": "f32"}
TOLERANCE = {"float64": 1e-8, "float32": 5e-3}
# float32: a sum of 2·10⁶ LJ pair terms in one float32 accumulator (the hand-written Numba loop) is off by 1.5e-3
"""Largest normwise relative difference from gradcomp (same case and dtype) that is not a disagreement."""
THREADED = ["numba", "jax", "torch"]
PACKAGE = {"gradcomp": "numba", "jax": "jax", "numba": "numba", "indexed": "numba", "unrolled": "numba"}

SIZES = {
    "full": {"chain": {"n": 1_000_000}, "logsumexp": {"n": 1_000_000}, "lj_pairs": {"n": 2000},
             "gray_scott": {"N": 512}, "xy_edges": {"n": 1_000_000, "m": 4_000_000}, "lj48": {"n": 48},
             "memory": {"n": 10_000}},
    "quick": {"chain": {"n": 1000}, "logsumexp": {"n": 1000}, "lj_pairs": {"n": 60}, "gray_scott": {"N": 16},
              "xy_edges": {"n": 1000, "m": 4000}, "lj48": {"n": 6}, "memory": {"n": 300}},
}
GRAY_SCOTT = {"Du": 0.16, "Dv": 0.08, "F": 0.035, "k": 0.065}
JAX_LJ_BYTES_PER_PAIR = 8 * 16
"""Estimated peak bytes per (i, j) entry of JAX's dense float64 LJ gradient: the (n, n, 3) differences, their
squares and cotangent, the (n, n) r2, its powers, masks and their cotangents (about 16 doubles)."""


def size_label(case: str, size: dict) -> str:
    if case == "gray_scott":
        return f"{size['N']} x {size['N']}"
    if case == "xy_edges":
        return f"n = {size['n']:,}, m = {size['m']:,}"
    return f"n = {size['n']:,}"


# -- inputs (every process of a case sees the same numbers) ----------------------------------------------

def lattice(count: int, rng):
    """`count` points of a cubic lattice of spacing 1.1, jittered by 0.05 (as tests/test_indexed.py)."""
    import numpy as np
    side = int(round(count ** (1 / 3))) + 1
    grid = np.indices((side, side, side)).reshape(3, -1).T[:count].astype(float)
    return 1.1 * grid + 0.05 * rng.standard_normal((count, 3))


def make_inputs(case: str, size: dict, dtype: str) -> tuple[tuple, object]:
    """(arguments, cotangent or None), drawn in float64 from seed 0 and cast to dtype (integers stay int64)."""
    import numpy as np
    rng = np.random.default_rng(0)
    if case in ("chain", "logsumexp"):
        return (rng.random(size["n"]).astype(dtype),), None
    if case in ("lj_pairs", "lj48", "memory"):
        return (lattice(size["n"], rng).astype(dtype),), None
    if case == "gray_scott":
        N = size["N"]
        u, v = 1 - 0.5 * rng.random((N, N)), 0.25 * rng.random((N, N))
        return (u.astype(dtype), v.astype(dtype)), rng.standard_normal((2, N, N)).astype(dtype)
    if case == "xy_edges":
        n, m = size["n"], size["m"]
        theta = rng.uniform(-np.pi, np.pi, n).astype(dtype)
        weights = rng.random(m).astype(dtype)
        return (theta, weights, rng.integers(0, n, (m, 2), dtype=np.int64)), None
    raise ValueError(case)


# -- gradcomp -----------------------------------------------------------------------------------------------

def gradcomp_model(case: str):
    """(outputs, args, wrt) of the SymPy model."""
    import sympy as sp
    n, m = sp.symbols("n m", integer=True, positive=True)
    i, j, k = sp.symbols("i j k", integer=True)
    x = sp.IndexedBase("x", shape=(n,))
    if case == "chain":
        return sp.Sum((x[i + 1] - x[i]) ** 2 + sp.cos(x[i]), (i, 0, n - 2)), [x], None
    if case == "logsumexp":
        return sp.log(sp.Sum(sp.exp(x[i]), (i, 0, n - 1))), [x], None
    if case in ("lj_pairs", "lj48", "memory"):
        P = sp.IndexedBase("P", shape=(n, 3))
        r2 = sum((P[i, c] - P[j, c]) ** 2 for c in range(3))
        return sp.Sum(sp.Sum(4 * (r2 ** -6 - r2 ** -3), (j, i + 1, n - 1)), (i, 0, n - 2)), [P], None
    if case == "gray_scott":
        N = sp.Symbol("N", integer=True, positive=True)
        u, v = sp.IndexedBase("u", shape=(N, N)), sp.IndexedBase("v", shape=(N, N))
        out = sp.IndexedBase("out", shape=(2, N, N))  # two Eq outputs of different IndexedBases: CompileError
        r, c = sp.Idx("r", N), sp.Idx("c", N)

        def lap(a):
            return (a[sp.Mod(r + 1, N), c] + a[sp.Mod(r - 1, N), c] + a[r, sp.Mod(c + 1, N)]
                    + a[r, sp.Mod(c - 1, N)] - 4 * a[r, c])

        p = {key: sp.Float(value) for key, value in GRAY_SCOTT.items()}
        uvv = u[r, c] * v[r, c] ** 2
        return [sp.Eq(out[0, r, c], p["Du"] * lap(u) - uvv + p["F"] * (1 - u[r, c])),
                sp.Eq(out[1, r, c], p["Dv"] * lap(v) + uvv - (p["F"] + p["k"]) * v[r, c])], [u, v], None
    if case == "xy_edges":
        e = sp.IndexedBase("e", shape=(m, 2), integer=True)
        w = sp.IndexedBase("w", shape=(m,))
        return sp.Sum(w[k] * (1 - sp.cos(x[e[k, 0]] - x[e[k, 1]])), (k, 0, m - 1)), [x, w, e], [0]
    raise ValueError(case)


def unrolled_lj(count: int):
    """The explicit LJ sum over the pairs of `count` atoms of symbols P_i_c, built with one sp.Add."""
    import sympy as sp
    S = sp.Matrix(count, 3, lambda a, b: sp.Symbol(f"P_{a}_{b}"))
    terms = []
    for a in range(count):
        for b in range(a + 1, count):
            r2 = sp.Add(*[(S[a, c] - S[b, c]) ** 2 for c in range(3)])
            terms.append(4 * (r2 ** -6 - r2 ** -3))
    return sp.Add(*terms), [S]


def finish_background(kernel) -> None:
    """Wait for the parallel drivers that a LoopKernel's first calls compile on threads of their own."""
    from gradcomp import drivers
    for stage in getattr(kernel, "_stages", list)():
        for driver in stage.drivers:
            drivers.finish_background(driver)


def build_gradcomp(case: str, dtype: str, cotangent, facts: dict):
    import gradcomp as gc
    started = time.perf_counter()
    outputs, args, wrt = gradcomp_model(case)
    defined = time.perf_counter()
    kernel = gc.compile(outputs, args, wrt=wrt, cache=False, dtype=dtype, name=f"indexed_{case}")
    facts.update(definition_s=defined - started, compile_s=time.perf_counter() - defined,
                 gradcomp_wrt=list(kernel.wrt), lanes=getattr(kernel._import(), "LANES", "-"))
    if cotangent is not None:
        return kernel, (lambda *xs: kernel.vjp(*xs, cotangent))
    return kernel, kernel.grad


def build_unrolled(count: int, dtype: str, facts: dict):
    import gradcomp as gc
    started = time.perf_counter()
    expr, args = unrolled_lj(count)
    defined = time.perf_counter()
    kernel = gc.compile(expr, args, cache=False, dtype=dtype, name="lj_unrolled")
    facts.update(definition_s=defined - started, compile_s=time.perf_counter() - defined,
                 terms=count * (count - 1) // 2)
    return kernel, kernel.grad


# -- JAX ------------------------------------------------------------------------------------------------------

def jax_function(case: str):
    """The case's vectorized JAX formulation (the fastest we could write), unjitted."""
    import jax.numpy as jnp

    if case == "chain":
        def f(x):
            return jnp.sum((x[1:] - x[:-1]) ** 2 + jnp.cos(x[:-1]))
    elif case == "logsumexp":
        def f(x):
            return jnp.log(jnp.sum(jnp.exp(x)))
    elif case in ("lj_pairs", "memory"):
        def f(p):
            diff = p[:, None, :] - p[None, :, :]
            r2 = jnp.sum(diff ** 2, axis=-1)
            upper = jnp.triu(jnp.ones(r2.shape, dtype=bool), 1)
            r2 = jnp.where(upper, r2, 1)  # the diagonal would give inf, and NaN gradients
            return jnp.sum(jnp.where(upper, 4 * (r2 ** -6 - r2 ** -3), 0))
    elif case == "gray_scott":
        p = GRAY_SCOTT

        def lap(a):
            return jnp.roll(a, -1, 0) + jnp.roll(a, 1, 0) + jnp.roll(a, -1, 1) + jnp.roll(a, 1, 1) - 4 * a

        def f(u, v):
            uvv = u * v ** 2
            return jnp.stack([p["Du"] * lap(u) - uvv + p["F"] * (1 - u),
                              p["Dv"] * lap(v) + uvv - (p["F"] + p["k"]) * v])
    elif case == "xy_edges":
        def f(x, w, e):
            return jnp.sum(w * (1 - jnp.cos(x[e[:, 0]] - x[e[:, 1]])))
    else:
        raise ValueError(case)
    return f


def build_jax(case: str, dtype: str, cotangent, facts: dict):
    import jax
    import jax.numpy as jnp
    f = jax_function(case)
    value = jax.jit(f)
    if cotangent is not None:
        # The cotangent is an argument of the jitted function: captured in a closure it would be a constant
        # that XLA folds at compile time (the stencil of the cotangent, then free), which no user call gets.
        ct = jax.device_put(cotangent)
        vjp = jax.jit(lambda ct, *xs: jax.vjp(f, *xs)[1](ct))

        def grad(*xs):
            return jax.block_until_ready(vjp(ct, *xs))
    else:
        gradient = jax.jit(jax.grad(f, argnums=0))

        def grad(*xs):
            return gradient(*xs).block_until_ready()
    facts.update(jax_default_float=str(jnp.asarray(1.0).dtype), jax_devices=str(jax.devices()))
    return (lambda *xs: value(*xs).block_until_ready()), grad


def jax_arguments(arrays: tuple, dtype: str) -> tuple:
    """On the device once, before timing; x64 switched on first for float64 (without it JAX would round the
    arrays to float32); integer arrays int32 without x64 (JAX's own width then)."""
    import jax
    import numpy as np
    if dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    converted = [a.astype(np.int32) if a.dtype.kind == "i" and dtype == "float32" else a for a in arrays]
    return tuple(jax.device_put(a) for a in converted)


# -- hand-written Numba -----------------------------------------------------------------------------------

def build_numba(case: str, dtype: str, cotangent, facts: dict):
    """What a user writes: prange loops for values and gathers, a serial loop for a scatter.  Constants are
    scalars of the dtype, so float32 arrays are computed (and accumulated) in float32."""
    import numpy as np
    from numba import njit, prange
    f = np.dtype(dtype).type
    zero, one, two, three, four, six = f(0), f(1), f(2), f(3), f(4), f(6)

    if case == "chain":
        @njit(parallel=True, fastmath=False)
        def value(x):
            acc = zero
            for i in prange(x.shape[0] - 1):
                acc += (x[i + 1] - x[i]) ** 2 + np.cos(x[i])
            return acc

        @njit(parallel=True, fastmath=False)
        def grad(x):
            n = x.shape[0]
            g = np.empty_like(x)
            for i in prange(n):
                gi = zero
                if i < n - 1:
                    gi += two * (x[i] - x[i + 1]) - np.sin(x[i])
                if i > 0:
                    gi += two * (x[i] - x[i - 1])
                g[i] = gi
            return g
    elif case == "logsumexp":
        @njit(parallel=True, fastmath=False)
        def value(x):
            s = zero
            for i in prange(x.shape[0]):
                s += np.exp(x[i])
            return np.log(s)

        @njit(parallel=True, fastmath=False)
        def grad(x):
            s = zero
            for i in prange(x.shape[0]):
                s += np.exp(x[i])
            g = np.empty_like(x)
            for i in prange(x.shape[0]):
                g[i] = np.exp(x[i]) / s
            return g
    elif case == "lj_pairs":
        @njit(parallel=True, fastmath=False)
        def value(p):
            n = p.shape[0]
            acc = zero
            for i in prange(n - 1):
                for j in range(i + 1, n):
                    r2 = (p[i, 0] - p[j, 0]) ** 2 + (p[i, 1] - p[j, 1]) ** 2 + (p[i, 2] - p[j, 2]) ** 2
                    acc += four * (r2 ** -6 - r2 ** -3)
            return acc

        @njit(parallel=True, fastmath=False)
        def grad(p):  # each i gathers over every j: no race, twice the pairs of the triangle
            n = p.shape[0]
            g = np.empty_like(p)
            for i in prange(n):
                gx = gy = gz = zero
                for j in range(n):
                    if j != i:
                        dx, dy, dz = p[i, 0] - p[j, 0], p[i, 1] - p[j, 1], p[i, 2] - p[j, 2]
                        r2 = dx ** 2 + dy ** 2 + dz ** 2
                        de = two * four * (-six * r2 ** -7 + three * r2 ** -4)
                        gx += de * dx
                        gy += de * dy
                        gz += de * dz
                g[i, 0], g[i, 1], g[i, 2] = gx, gy, gz
            return g
    elif case == "gray_scott":
        Du, Dv, F, K = (f(GRAY_SCOTT[key]) for key in ("Du", "Dv", "F", "k"))

        @njit(parallel=True, fastmath=False)
        def value(u, v):
            N = u.shape[0]
            out = np.empty((2, N, N), u.dtype)
            for r in prange(N):
                rp, rm = (r + 1) % N, (r + N - 1) % N
                for c in range(N):
                    cp, cm = (c + 1) % N, (c + N - 1) % N
                    lu = u[rp, c] + u[rm, c] + u[r, cp] + u[r, cm] - four * u[r, c]
                    lv = v[rp, c] + v[rm, c] + v[r, cp] + v[r, cm] - four * v[r, c]
                    uvv = u[r, c] * v[r, c] ** 2
                    out[0, r, c] = Du * lu - uvv + F * (one - u[r, c])
                    out[1, r, c] = Dv * lv + uvv - (F + K) * v[r, c]
            return out

        @njit(parallel=True, fastmath=False)
        def vjp(u, v, ct):  # the stencil is symmetric: its adjoint is the same stencil on the cotangent
            N = u.shape[0]
            g = np.empty((2, N, N), u.dtype)
            a, b = ct[0], ct[1]
            for r in prange(N):
                rp, rm = (r + 1) % N, (r + N - 1) % N
                for c in range(N):
                    cp, cm = (c + 1) % N, (c + N - 1) % N
                    la = a[rp, c] + a[rm, c] + a[r, cp] + a[r, cm] - four * a[r, c]
                    lb = b[rp, c] + b[rm, c] + b[r, cp] + b[r, cm] - four * b[r, c]
                    vv, uv2 = v[r, c] ** 2, two * u[r, c] * v[r, c]
                    g[0, r, c] = Du * la + a[r, c] * (-vv - F) + b[r, c] * vv
                    g[1, r, c] = Dv * lb - a[r, c] * uv2 + b[r, c] * (uv2 - (F + K))
            return g

        def grad(u, v):
            return vjp(u, v, cotangent)
    elif case == "xy_edges":
        @njit(parallel=True, fastmath=False)
        def value(x, w, e):
            acc = zero
            for k in prange(e.shape[0]):
                acc += w[k] * (one - np.cos(x[e[k, 0]] - x[e[k, 1]]))
            return acc

        @njit(fastmath=False)
        def grad(x, w, e):  # a scatter: serial, as a user writes it
            g = np.zeros_like(x)
            for k in range(e.shape[0]):
                a, b = e[k, 0], e[k, 1]
                s = w[k] * np.sin(x[a] - x[b])
                g[a] += s
                g[b] -= s
            return g
    else:
        raise ValueError(case)
    return value, grad


# -- in the worker: build, first calls, samples, results saved ------------------------------------------------

def peak_rss_mb() -> float:
    """ru_maxrss (Linux: kilobytes).  It keeps the high-water mark of the parent's forked copy across exec,
    which is why ``vm_hwm_mb`` (this address space's own peak) is recorded beside it."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def vm_hwm_mb() -> float | None:
    return _status_mb("VmHWM")


def _status_mb(field: str) -> float | None:
    """A memory field of /proc/self/status (Linux), in MB; None elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return float(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def call_growth_mb(call) -> float | None:
    """How far one call's peak resident memory rises above the resident memory just before it (everything
    compiled and loaded): freed heap memory goes back to the system first (glibc's malloc_trim), so that
    the call's temporaries count, and the high-water mark is reset to the current RSS
    (/proc/self/clear_refs)."""
    import ctypes
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
    except (OSError, AttributeError):
        return None
    before = _status_mb("VmRSS")
    call()
    after = vm_hwm_mb()
    return None if before is None or after is None else after - before


def as_array(result):
    import numpy as np
    if isinstance(result, tuple):
        return np.stack([np.asarray(r) for r in result])
    return np.asarray(result)


def samples_ms(call, repeats: int, seconds: float) -> list[float]:
    call()  # warm-up
    return [1e3 * seconds_per_call(call, seconds) for _ in range(repeats)]


def work(case: str, system: str, dtype: str, options) -> dict:
    """One process's measurement: build, first value and gradient (cold), warm-up, samples, saved results."""
    import numpy as np
    load = os.getloadavg()[0]
    size = SIZES["quick" if options.quick else "full"][case]
    arrays, cotangent = make_inputs(case, size, dtype)
    facts: dict = {}
    rss_inputs = peak_rss_mb()
    timed_value = case not in EXTRAS
    repeats = 1 if case == "memory" else options.repeats  # memory: one sample (JAX's call takes seconds)
    if system in ("gradcomp", "indexed", "unrolled", "numba"):  # imports are not part of cold (JAX's neither)
        import numba  # noqa: F401
        if system != "numba":
            import sympy  # noqa: F401

            import gradcomp  # noqa: F401
    started = time.perf_counter()
    if system == "gradcomp" or system == "indexed":
        value, grad = build_gradcomp(case, dtype, cotangent, facts)
    elif system == "unrolled":
        value, grad = build_unrolled(size["n"], dtype, facts)
    elif system == "jax":
        arrays = jax_arguments(arrays, dtype)
        started = time.perf_counter()
        value, grad = build_jax(case, dtype, cotangent, facts)
    elif system == "numba":
        value, grad = build_numba(case, dtype, cotangent, facts)
    else:
        raise ValueError(system)
    first = time.perf_counter()
    value_result = value(*arrays) if timed_value else None
    valued = time.perf_counter()
    grad_result = grad(*arrays)
    graded = time.perf_counter()
    facts.update(first_value_s=valued - first, first_grad_s=graded - valued, cold_s=graded - started)
    if system in ("gradcomp", "indexed"):
        from benchmarks.isolated import _host_cpu
        facts.update(_host_cpu())
    if system in ("gradcomp", "indexed"):  # from here on a stage's next call starts its parallel twin's compile
        value.precompile()  # value is the kernel
        if timed_value:
            value(*arrays)
        grad(*arrays)
        finish_background(value)
        facts["parallel_ready_s"] = time.perf_counter() - started
    value_ms = samples_ms(lambda: value(*arrays), repeats, options.sample_seconds) if timed_value else []
    grad_ms = samples_ms(lambda: grad(*arrays), repeats, options.sample_seconds)
    if case == "memory":
        facts["call_growth_mb"] = call_growth_mb(lambda: grad(*arrays))
    stem = Path(options.save) / f"{case}-{system}-{dtype}"
    if timed_value:
        np.save(f"{stem}-value.npy", as_array(value_result).astype(np.float64))
    grad_array = as_array(grad_result)
    np.save(f"{stem}-grad.npy", grad_array.astype(np.float64))
    threads = "XLA default"
    if PACKAGE[system] == "numba":
        import numba
        threads = f"{numba.get_num_threads()} Numba"
    return {"case": case, "system": system, "dtype": dtype, "size": size, "size_label": size_label(case, size),
            "value_ms": median(value_ms) if value_ms else None, "grad_ms": median(grad_ms),
            "value_samples_ms": value_ms, "grad_samples_ms": grad_ms, "repeats": repeats,
            "result_dtype": str(grad_array.dtype), "threads": threads, "load_average": load,
            "rss_before_mb": rss_inputs, "peak_rss_mb": peak_rss_mb(), "vm_hwm_mb": vm_hwm_mb(),
            "foreign_modules": [m for m in THREADED if m in sys.modules and m != PACKAGE[system]], **facts}


# -- in the parent: one process per job, a memory watchdog, comparisons, the report ---------------------------

def vm_rss_bytes(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    return 0.0


def run_worker(case: str, system: str, dtype: str, options, save: str, cap_bytes: float) -> dict:
    """One job in a fresh interpreter with an empty gradcomp cache and pinned thread counts; killed if its
    resident memory passes cap_bytes or it runs past --timeout."""
    job = {"case": case, "system": system, "dtype": dtype}
    with tempfile.TemporaryDirectory(prefix="gradcomp-indexed-") as scratch:
        env = {**os.environ, "GRADCOMP_CACHE_DIR": str(Path(scratch) / "cache"), "JAX_PLATFORMS": "cpu",
               "NUMBA_NUM_THREADS": str(options.threads), "OMP_NUM_THREADS": str(options.threads),
               "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
        command = [sys.executable, "-m", "benchmarks.indexed", "--worker", case, system, dtype, "--save", save,
                   "--repeats", str(options.repeats), "--sample-seconds", str(options.sample_seconds)]
        command += ["--quick"] if options.quick else []
        out_path, err_path = Path(scratch) / "stdout", Path(scratch) / "stderr"
        with open(out_path, "w") as out, open(err_path, "w") as err:  # files: no pipe to fill while polling
            process = subprocess.Popen(command, stdout=out, stderr=err, env=env, cwd=REPO_ROOT)
            began, peak, stopped = time.monotonic(), 0.0, None
            while process.poll() is None:
                peak = max(peak, vm_rss_bytes(process.pid))
                if peak > cap_bytes:
                    stopped = (f"skipped: killed by the memory guard at {peak / 1e9:.1f} GB "
                               f"(cap {cap_bytes / 1e9:.1f} GB)")
                elif time.monotonic() - began > options.timeout:
                    stopped = f"error: timed out after {options.timeout:.0f} s"
                if stopped:
                    process.kill()
                    process.wait()
                    break
                time.sleep(0.05)
        if stopped:
            key = "skipped" if stopped.startswith("skipped") else "error"
            return {**job, key: stopped.split(": ", 1)[1]}
        lines = out_path.read_text().strip().splitlines()
        if process.returncode or not lines:
            last = (err_path.read_text().strip().splitlines() or ["no output"])[-1]
            return {**job, "error": f"exit {process.returncode}: {last}"}
    return json.loads(lines[-1])


def jobs(options) -> list[tuple[str, str, str]]:
    found = []
    for case in options.cases:
        if case == "lj48":
            found += [(case, system, "float64") for system in EXTRA_SYSTEMS[case]]
        elif case == "memory":
            found += [(case, system, "float64") for system in EXTRA_SYSTEMS[case] if system in options.systems]
        else:
            found += [(case, system, dtype) for dtype in options.dtypes for system in options.systems]
    return found


def reference_system(case: str) -> str:
    return "indexed" if case == "lj48" else "gradcomp"


def compare(runs: list[dict], save: str) -> list[str]:
    """Each run's value and gradient against gradcomp's of the same case and dtype (normwise relative
    difference, stored in the run); returns the disagreements beyond TOLERANCE."""
    import numpy as np

    from benchmarks.measure import max_relative_difference
    problems = []
    for run in runs:
        if "grad_ms" not in run:
            continue
        case, dtype = run["case"], run["dtype"]
        reference = reference_system(case)
        if run["system"] == reference:
            continue
        for what in ("value", "grad"):
            mine = Path(save) / f"{case}-{run['system']}-{dtype}-{what}.npy"
            theirs = Path(save) / f"{case}-{reference}-{dtype}-{what}.npy"
            if not (mine.exists() and theirs.exists()):
                continue
            difference = max_relative_difference(np.load(mine), np.load(theirs))
            run[f"{what}_diff"] = difference
            if not difference <= TOLERANCE[dtype]:  # NaN too
                problems.append(f"{case} {dtype}: {label(case, run['system'])} {what} differs from "
                                f"{label(case, reference)}'s by {difference:.2e} (tolerance {TOLERANCE[dtype]:g})")
    return problems


def label(case: str, system: str) -> str:
    return EXTRA_SYSTEMS.get(case, SYSTEMS).get(system, system)


def lookup(runs: list[dict], case: str, system: str, dtype: str) -> dict:
    return next((r for r in runs if (r["case"], r["system"], r["dtype"]) == (case, system, dtype)), {})


def number(value, digits: str = ".3g") -> str:
    return "-" if value is None else format(value, digits)


def timing_cell(run: dict, key: str) -> str:
    if not run:
        return "-"
    if "skipped" in run:
        return "skipped"
    if "error" in run:
        return "error"
    flagged = any(run.get(f"{what}_diff", 0) > TOLERANCE[run["dtype"]] for what in ("value", "grad"))
    return number(run.get(key)) + (" !" if flagged else "")


def speedup(runs: list[dict], case: str, dtype: str, systems: list[str]) -> str:
    mine = lookup(runs, case, "gradcomp", dtype).get("grad_ms")
    others = [lookup(runs, case, s, dtype).get("grad_ms") for s in systems if s != "gradcomp"]
    best = min((t for t in others if t), default=None)
    return f"{best / mine:.2f}" if mine and best else "-"


def render(runs: list[dict], options, problems: list[str], total_s: float, environment: dict) -> str:
    systems = [s for s in SYSTEMS if s in options.systems]
    cases = [c for c in options.cases if c in CASES]
    facts = next((r for r in runs if "cpu_name" in r), {})
    found = {d: next((r["lanes"] for r in runs if r["dtype"] == d and "lanes" in r), None) for d in DTYPES}
    lanes = ", ".join(f"{d} {value}" for d, value in found.items() if value is not None) or "-"
    lines = ["# Indexed models: gradcomp loop kernels against JAX and hand-written Numba", "",
             f"Machine: {environment['cpu']} (LLVM: {facts.get('cpu_name', '-')}, ISA {facts.get('isa', '-')}), "
             f"{environment['cores']} cores ({environment['usable_cores']} usable); gradcomp LANES "
             f"{lanes}. Date {environment['date']}; git {environment['git']}; "
             + ", ".join(f"{p} {environment['versions'][p]}" for p in ("numba", "llvmlite", "numpy", "jax", "sympy"))
             + f". Whole run: {total_s:.0f} s" + (" (--quick: tiny sizes, timings meaningless)." if options.quick
                                                    else "."), "",
             "How it was measured: every (case, system, dtype) runs in a fresh Python process of its own, one "
             "process at a time, so that Numba's and XLA's thread pools never share the cores. In each process "
             "the inputs are drawn (seed 0, float64, then cast), the system is built and its first value and "
             "first gradient are computed: *cold* is that time, from the model's definition (gradcomp: "
             "`gc.compile` with an empty cache; JAX: tracing and XLA compilation by the first `jax.jit` calls; "
             "Numba: compilation by the first calls) to the first gradient, imports excluded. gradcomp's first "
             "calls run serial drivers while the parallel ones compile in the background; the process waits "
             "for those before timing. Then one warm-up call and the median of "
             f"{options.repeats} samples, each looping the call for at least {options.sample_seconds} s "
             f"(`benchmarks.timing.seconds_per_call`), of the value and of the gradient (gray_scott: the VJP "
             f"with a standard-normal cotangent). Numba (gradcomp and the hand-written loops) runs "
             f"{options.threads} threads; XLA keeps its default thread pool; JAX arrays are put on the device "
             "before timing; JAX float64 runs with x64, float32 without. Every process saves its results; each "
             "value and gradient is compared with gradcomp's of the same dtype (normwise max |a - b| / max |b|, "
             f"`!` and a failed run beyond {TOLERANCE['float64']:g} for float64, {TOLERANCE['float32']:g} for "
             "float32). Speedup: the fastest other system's gradient time over gradcomp's.", ""]
    for dtype in options.dtypes:
        header = ["case", "size"] + [f"{SYSTEMS[s]} {what} ms"
                                     for s in systems for what in ("value", "grad")]
        header += [f"{SYSTEMS[s]} cold s" for s in systems] + ["gradcomp grad speedup vs best other"]
        lines += [f"## {dtype}", "", "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
        for case in cases:
            row = [case, size_label(case, SIZES["quick" if options.quick else "full"][case])]
            row += [timing_cell(lookup(runs, case, s, dtype), f"{what}_ms") for s in systems
                    for what in ("value", "grad")]
            row += [timing_cell(lookup(runs, case, s, dtype), "cold_s") for s in systems]
            row.append(speedup(runs, case, dtype, systems))
            lines.append("| " + " | ".join(row) + " |")
        others = [s for s in systems if s != "gradcomp"]
        header = (["case", "gradcomp compile s", "gradcomp parallel ready s"]
                  + [f"{SYSTEMS[s]} {what} diff" for s in others for what in ("value", "grad")]
                  + [f"{SYSTEMS[s]} peak RSS MB" for s in systems])
        lines += ["", f"gradcomp compile time (`gc.compile` alone), time to the parallel drivers, differences "
                  f"from gradcomp and peak RSS ({dtype}):", "",
                  "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
        for case in cases:
            mine = lookup(runs, case, "gradcomp", dtype)
            row = [case, number(mine.get("compile_s")), number(mine.get("parallel_ready_s"))]
            row += [number(lookup(runs, case, s, dtype).get(f"{what}_diff"), ".1e") for s in others
                    for what in ("value", "grad")]
            row += [number(lookup(runs, case, s, dtype).get("peak_rss_mb"), ".0f") for s in systems]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    if "lj48" in options.cases:
        count = SIZES["quick" if options.quick else "full"]["lj48"]["n"]
        lines += [f"## LJ gradient of {count} atoms: indexed kernel against the unrolled one (float64)", "",
                  "Compile only what the gradient needs: `gc.compile` then the first `k.grad` (which compiles its "
                  "drivers), in a fresh process each.", "",
                  "| kernel | compile s | first grad s | compile + first grad s | grad µs | grad diff |",
                  "|---|---|---|---|---|---|"]
        for system in EXTRA_SYSTEMS["lj48"]:
            run = lookup(runs, "lj48", system, "float64")
            if "grad_ms" not in run:
                lines.append(f"| {label('lj48', system)} | {run.get('error') or run.get('skipped') or '-'} "
                             "| - | - | - | - |")
                continue
            lines.append(f"| {label('lj48', system)} | {run['compile_s']:.2f} | {run['first_grad_s']:.2f} | "
                         f"{run['compile_s'] + run['first_grad_s']:.2f} | {1e3 * run['grad_ms']:.3g} | "
                         f"{number(run.get('grad_diff'), '.1e')} |")
        lines.append("")
    if "memory" in options.cases:
        count = SIZES["quick" if options.quick else "full"]["memory"]["n"]
        lines += [f"## Peak memory of the LJ gradient at n = {count:,} (float64)", "",
                  "Peak RSS of the worker after its gradient calls (first, warm-up and one sample): "
                  "`resource.getrusage` ru_maxrss, and VmHWM of /proc/self/status (ru_maxrss also counts the "
                  "parent's copy forked before exec); *RSS before*: ru_maxrss with the inputs drawn, before the "
                  "system is imported; *one call's growth*: how far the peak rises above the resident memory "
                  "just before one more gradient call (VmHWM reset through /proc/self/clear_refs), what a call "
                  "needs beyond the inputs and what is loaded. JAX runs only if its estimated footprint "
                  f"({JAX_LJ_BYTES_PER_PAIR} bytes per pair) fits under the cap, and a watchdog in the parent kills "
                  "any worker whose RSS passes the cap (default 80% of MemAvailable).", "",
                  "| system | peak RSS MB | VmHWM MB | RSS before MB | one call's growth MB | cold s | grad ms | "
                  "grad diff | note |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for system, name in EXTRA_SYSTEMS["memory"].items():
            run = lookup(runs, "memory", system, "float64")
            if "grad_ms" not in run:
                why = run.get("skipped") or run.get("error") or "-"
                lines.append(f"| {name} | - | - | - | - | - | - | - | {why} |")
                continue
            lines.append(f"| {name} | {run['peak_rss_mb']:.0f} | {number(run.get('vm_hwm_mb'), '.0f')} | "
                         f"{run['rss_before_mb']:.0f} | {number(run.get('call_growth_mb'), '.1f')} | "
                         f"{run['cold_s']:.2f} | {run['grad_ms']:.4g} | {number(run.get('grad_diff'), '.1e')} | |")
        lines.append("")
    lines += ["Notes:", "",
              "- gray_scott: gradcomp refuses Eq outputs of two IndexedBases (\"every Eq must assign an element of "
              "one output IndexedBase\"), so du and dv are the planes out[0] and out[1] of one output of shape "
              "(2, N, N); JAX and Numba return the same stacked array.",
              "- xy_edges: gradcomp compiled with wrt=[0] (x only); JAX's grad has argnums=0; the Numba gradient "
              "is a serial scatter loop. JAX float32 gets the edges as int32.",
              "- lj_pairs: the Numba gradient gathers over every j != i in a prange over i (twice the pair "
              "evaluations of the triangle, but no race); JAX builds the dense (n, n, 3) differences with a "
              "triu mask."]
    for run in runs:
        where = f"{run['case']}, {label(run['case'], run['system'])} {run['dtype']}"
        if "error" in run:
            lines.append(f"- {where}: error: {run['error']}")
        if "skipped" in run:
            lines.append(f"- {where}: skipped: {run['skipped']}")
        if run.get("foreign_modules"):
            lines.append(f"- {where}: its process also imported {', '.join(run['foreign_modules'])}.")
        if run.get("result_dtype") not in (None, run["dtype"]) and "grad_ms" in run:
            lines.append(f"- {where}: the gradient came back as {run['result_dtype']}.")
    lines += [f"- DISAGREEMENT: {problem}" for problem in problems]
    return "\n".join(lines) + "\n"


def jax_estimate_bytes(count: int) -> float:
    return JAX_LJ_BYTES_PER_PAIR * count * count


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and 1 repeat: a smoke run")
    parser.add_argument("--out", help="directory for indexed.md and indexed.json (default: this folder; "
                                      "--quick: a new temporary directory)")
    parser.add_argument("--cases", nargs="+", default=CASES + EXTRAS, choices=CASES + EXTRAS)
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    parser.add_argument("--dtypes", nargs="+", default=DTYPES, choices=DTYPES)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, help="samples per timing (default 7; --quick 1)")
    parser.add_argument("--sample-seconds", type=float, help="each sample loops the call for at least this "
                                                             "(default 0.05; --quick 0: one call)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds allowed to one process")
    parser.add_argument("--memory-cap-gb", type=float,
                        help="kill a worker whose RSS passes this (default: 80%% of MemAvailable at the start)")
    parser.add_argument("--worker", nargs=3, metavar=("CASE", "SYSTEM", "DTYPE"), help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.repeats is None:
        options.repeats = 1 if options.quick else 7
    if options.sample_seconds is None:
        options.sample_seconds = 0.0 if options.quick else 0.05
    return options


def report_dir(options, stem: str) -> Path:
    """Where a benchmark writes its report: ``--out``, else this folder; a ``--quick`` smoke run without
    ``--out`` a fresh temporary directory, so that the committed results are never overwritten by it."""
    if options.out:
        out_dir = Path(options.out)
    elif options.quick:
        out_dir = Path(tempfile.mkdtemp(prefix=f"gradcomp-{stem}-quick-"))
    else:
        out_dir = Path(__file__).resolve().parent
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def main(argv=None) -> None:
    options = parse(argv)
    if options.worker:
        print(json.dumps(work(*options.worker, options)))
        return
    began = time.perf_counter()
    out_dir = report_dir(options, "indexed")
    environment = describe(options.threads)
    cap = options.memory_cap_gb * 1e9 if options.memory_cap_gb else 0.8 * available_memory_bytes()
    runs = []
    with tempfile.TemporaryDirectory(prefix="gradcomp-indexed-results-") as save:
        for case, system, dtype in jobs(options):
            if case == "memory" and system == "jax":
                count = SIZES["quick" if options.quick else "full"]["memory"]["n"]
                if jax_estimate_bytes(count) > cap:
                    runs.append({"case": case, "system": system, "dtype": dtype, "skipped":
                                 f"estimated {jax_estimate_bytes(count) / 1e9:.1f} GB > cap {cap / 1e9:.1f} GB"})
                    print(f"{case:>10} {system:>9} {dtype}: {runs[-1]['skipped']}", flush=True)
                    continue
            result = run_worker(case, system, dtype, options, save, cap)
            runs.append(result)
            summary = (f"value {number(result.get('value_ms'))} ms, grad {result['grad_ms']:.3g} ms, "
                       f"cold {result['cold_s']:.2f} s" if "grad_ms" in result
                       else result.get("error") or result.get("skipped"))
            print(f"{case:>10} {system:>9} {dtype}: {summary}", flush=True)
        problems = compare(runs, save)
    total_s = time.perf_counter() - began
    md, raw = out_dir / "indexed.md", out_dir / "indexed.json"
    raw.write_text(json.dumps({"options": {k: v for k, v in vars(options).items() if k not in ("worker", "save")},
                               "environment": environment, "total_s": total_s, "disagreements": problems,
                               "runs": runs}, indent=1))  # first: the raw numbers survive a failure of the report
    md.write_text(render(runs, options, problems, total_s, environment))
    print(md.read_text())
    print(f"wrote {md} and {raw} in {total_s:.0f} s")
    errors = [f"{r['case']} {label(r['case'], r['system'])} {r['dtype']}: {r['error']}" for r in runs if "error" in r]
    if problems or errors:  # after the report: the numbers that did come out are kept
        sys.exit("\n".join(["DISAGREEMENT between systems:", *problems] * bool(problems)
                           + ["ERRORS in workers:", *errors] * bool(errors)))


if __name__ == "__main__":
    main()
