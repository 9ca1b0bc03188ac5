"""The four figures of the benchmark, one function each, for run.py and the smoke test.

All functions take already-built systems (see systems.py) and plain arrays,
and return plain dicts/floats so run.py can store them as JSON.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np

from . import timing
from .compile_probe import probe
from .suite import CASES, sample_inputs
from .systems import Batched, Point

REFERENCE = "JAX jit(vmap(vjp))"
"""Correctness is measured against this system's VJP."""


def case_inputs(case: str, points: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Row-major X (N, n_in) from the suite's sampler and standard-normal cotangents V (N, n_out)."""
    rng = np.random.default_rng(seed)
    return sample_inputs(case, points, rng), rng.standard_normal((points, CASES[case][2]))


def max_relative_difference(result: np.ndarray, reference: np.ndarray) -> float:
    """Normwise: max |G - G_ref| / max |G_ref| (elementwise relative error blows up at G_ref = 0)."""
    scale = np.max(np.abs(reference))
    return float(np.max(np.abs(result - reference)) / (scale if scale > 0 else 1.0))


def correctness(systems: list[Batched], X: np.ndarray, V: np.ndarray) -> dict[str, float]:
    """Each VJP-computing system's max relative difference from the reference system on one batch."""
    outputs = {}
    for system in systems:
        result = system.as_numpy(system.call(system.prepare(X, V)))
        if result is not None:
            outputs[system.label] = np.asarray(result, float).reshape(X.shape)
    if REFERENCE not in outputs:
        return {}
    reference = outputs[REFERENCE]
    return {label: max_relative_difference(result, reference) for label, result in outputs.items()
            if label != REFERENCE}


def point_correctness(kernel, reference: Batched, x: np.ndarray, v: np.ndarray) -> float:
    """gradcomp's single-point path (its own fast path) against the reference on the same point."""
    expected = reference.as_numpy(reference.call(reference.prepare(x[None], v[None])))[0]
    return max_relative_difference(np.asarray(kernel.vjp(x, v)), expected)


def throughput(systems: list[Batched], X: np.ndarray, V: np.ndarray, plan: timing.Plan) -> dict[str, dict]:
    """Million points per second of each system's timed call on this batch (median, min, max of samples)."""
    prepared = {system.label: system.prepare(X, V) for system in systems}
    calls = {system.label: (lambda s=system: s.call(prepared[s.label])) for system in systems}
    samples = timing.round_robin(calls, plan)
    points = X.shape[0]
    return {label: _rates(points, seconds) for label, seconds in samples.items()}


def _rates(points: int, seconds: list[float]) -> dict:
    rates = sorted(points / s / 1e6 for s in seconds)
    return {"mpts": timing.median(rates), "min": rates[0], "max": rates[-1], "samples": len(rates),
            "seconds_per_call": timing.median(seconds)}


def bytes_per_point(n_in: int, n_out: int, fused: bool) -> int:
    """Bytes one point moves at least: read x and v, write the VJP (and y when fused), float64."""
    return 8 * (n_in + n_out + n_in + (n_out if fused else 0))


def latency(points: list[Point], x: np.ndarray, v: np.ndarray, plan: timing.Plan) -> dict[str, float]:
    """Median microseconds per single-point call, systems interleaved."""
    prepared = {point.label: point.prepare(x, v) for point in points}
    calls = {point.label: (lambda p=point: p.call(prepared[p.label])) for point in points}
    return {label: timing.median(s) * 1e6 for label, s in timing.round_robin(calls, plan).items()}


def dispatch_breakdown(kernel, x: np.ndarray, v: np.ndarray, plan: timing.Plan) -> dict[str, float]:
    """Where a single-point vjp's time goes: full public call, the bare Numba driver, a no-op floor.

    Reaches into Kernel internals (``_methods``, ``_load``); diagnostic only, so
    a changed runtime returns an explanation instead of numbers.
    """
    try:
        method = kernel._methods["vjp"]
        if method.serial is None:
            kernel._load(method)
        driver = method.serial
        output = np.empty((1, x.size))
        arguments = (1, x.reshape(1, -1), 0, v.reshape(1, -1), 0, output)
    except (AttributeError, KeyError, TypeError) as error:
        return {"error": f"runtime internals changed: {error!r}"}
    floor = _numba_noop(len(arguments))
    calls = {"public k.vjp(x, v)": lambda: kernel.vjp(x, v), "bare serial driver": lambda: driver(*arguments),
             "numba no-op, same arguments": lambda: floor(*arguments)}
    return {label: timing.median(s) * 1e6 for label, s in timing.round_robin(calls, plan).items()}


def _numba_noop(arity: int):
    """An @njit function of `arity` arguments that does nothing: Numba's dispatch floor."""
    from numba import njit
    names = ", ".join(f"a{i}" for i in range(arity))
    namespace: dict = {}
    exec(f"def noop({names}):\n    return None\n", namespace)
    return njit(namespace["noop"])


def op_counts(kernel) -> dict[str, float]:
    """Per-point operation counts of forward, vjp and fused value_and_vjp from ``k.methods``."""
    methods = kernel.methods
    forward, fused = methods["forward"]["ops"], methods["value_and_vjp"]["ops"]
    return {"forward": forward, "vjp": methods["vjp"]["ops"], "value_and_vjp": fused,
            "ratio": fused / forward if forward else math.nan}


def compile_times(case: str, points: int, threads: int, cache_dir: Path | None = None,
                  with_jax: bool = True) -> dict[str, dict]:
    """Cold gradcomp (empty cache), warm gradcomp (same cache, new process), cold JAX; each a fresh process."""
    directory = Path(cache_dir) if cache_dir else Path(tempfile.mkdtemp(prefix="gradcomp-bench-cache-"))
    results = {"gradcomp cold": probe("gradcomp", case, points, directory, threads),
               "gradcomp warm": probe("gradcomp", case, points, directory, threads)}
    if with_jax:
        results["JAX cold"] = probe("JAX", case, points, directory, threads)
    return results
