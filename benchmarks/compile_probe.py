"""Cold and warm compile time, each measured in a fresh process.

``python -m benchmarks.compile_probe SYSTEM CASE POINTS`` imports what the
system needs (timed apart), then times definition -> first batched VJP result
and prints one JSON line.  gradcomp's cache directory comes from
GRADCOMP_CACHE_DIR, so the parent decides cold (empty) or warm (filled by the
cold run).  ``probe`` is the parent side.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _inputs(case: str, points: int):
    import numpy as np

    from .suite import CASES, sample_inputs
    rng = np.random.default_rng(0)
    return sample_inputs(case, points, rng), rng.standard_normal((points, CASES[case][2]))


class _Lines(logging.Handler):
    """Keeps gradcomp's own log lines (its derive/codegen breakdown) for the report."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def _gradcomp(case: str, points: int) -> dict:
    started = time.perf_counter()
    import numba  # noqa: F401  (imported by the first call anyway; timed apart as an import)
    import numpy  # noqa: F401
    import sympy  # noqa: F401

    import gradcomp

    from .systems import symbolic_case
    imported = time.perf_counter()
    X, V = _inputs(case, points)
    handler = _Lines()
    logging.getLogger("gradcomp").addHandler(handler)
    logging.getLogger("gradcomp").setLevel(logging.INFO)
    defined = time.perf_counter()
    symbols, outputs = symbolic_case(case)
    built = time.perf_counter()
    kernel = gradcomp.compile(outputs, [symbols])
    compiled = time.perf_counter()
    kernel.vjp(X, V)
    first = time.perf_counter()
    return {"imports_s": imported - started, "sympy_definition_s": built - defined, "compile_s": compiled - built,
            "first_call_s": first - compiled, "total_s": first - defined, "log": handler.lines}


def _jax(case: str, points: int) -> dict:
    started = time.perf_counter()
    import jax  # noqa: F401
    import jax.numpy  # noqa: F401

    from .systems import jax_batched
    imported = time.perf_counter()
    X, V = _inputs(case, points)
    defined = time.perf_counter()
    system = jax_batched(case)
    system.call(system.prepare(X, V))
    first = time.perf_counter()
    return {"imports_s": imported - started, "total_s": first - defined}


def _numba_floor(case: str, points: int) -> dict:
    """Numba's own floor: a one-line ``prange`` loop's first call, after ``import numba`` (timed apart), on the
    case's inputs; nothing gradcomp compiles can come back sooner through Numba."""
    started = time.perf_counter()
    import numba
    import numpy as np
    imported = time.perf_counter()
    X, V = _inputs(case, points)
    defined = time.perf_counter()

    @numba.njit(parallel=True)
    def scale(x, v):
        out = np.empty_like(x)
        for i in numba.prange(x.shape[0]):
            out[i, 0] = x[i, 0] * v[i, 0]
        return out

    scale(X, V)
    first = time.perf_counter()
    return {"imports_s": imported - started, "total_s": first - defined}


PROBES = {"gradcomp": _gradcomp, "JAX": _jax, "Numba floor": _numba_floor}


def probe(system: str, case: str, points: int, cache_dir: str, threads: int, timeout_s: float = 900) -> dict:
    """Run one probe in a fresh interpreter; its JSON plus the process's wall seconds, or an error."""
    env = dict(os.environ, GRADCOMP_CACHE_DIR=str(cache_dir), NUMBA_NUM_THREADS=str(threads),
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    command = [sys.executable, "-m", "benchmarks.compile_probe", system, case, str(points)]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s"}
    wall = time.perf_counter() - started
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = wall
    return result


def main(argv: list[str]) -> None:
    system, case, points = argv
    print(json.dumps(PROBES[system](case, int(points))))


if __name__ == "__main__":
    main(sys.argv[1:])
