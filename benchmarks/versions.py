"""Two gradcomp versions side by side on the suite, each measurement in its own fresh process.

    python benchmarks/versions.py BASELINE_REV [--cases seed fk6 ...] [--rounds 2] [--out benchmarks/versions.md]

BASELINE_REV (a commit of this repository) is checked out into a temporary
git worktree; the working tree is the candidate.  Per case and version, a
fresh process with an empty cache times the cold path (``gc.compile`` to the
first 1e5-point VJP, after imports and the SymPy definition), then batched VJP throughput at N = 1e5
(median of 7 samples of >= 0.2 s) and single-point ``k.vjp(x, v)`` latency
(best of 5 timeit runs).  JAX's cold ``jit(vmap(vjp))`` runs in a process of its
own.  Versions alternate round by round, so drift on a shared machine hits both.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path.append(str(REPO_ROOT))  # after PYTHONPATH: a probe imports the gradcomp of the tree it measures

from benchmarks.suite import CASES  # noqa: E402

POINTS = 100_000


def measure(case: str) -> dict:
    """In a fresh process: cold compile to the first batched VJP, then throughput and latency."""
    import timeit

    import numba  # noqa: F401  (imports are not compile time: the first call imports Numba)
    import numpy as np
    import sympy  # noqa: F401

    import gradcomp as gc
    from benchmarks.suite import sample_inputs
    from benchmarks.systems import symbolic_case

    rng = np.random.default_rng(0)
    X = sample_inputs(case, POINTS, rng)
    V = rng.standard_normal((POINTS, CASES[case][2]))
    symbols, outputs = symbolic_case(case)  # the user's SymPy definition is not compile time either
    started = time.perf_counter()
    kernel = gc.compile(outputs, [symbols])
    kernel.vjp(X, V)
    cold = time.perf_counter() - started
    kernel.precompile(["vjp"])  # steady state: the parallel driver may still be compiling in the background
    samples = []
    for _ in range(7):
        began, calls = time.perf_counter(), 0
        while time.perf_counter() - began < 0.2:
            kernel.vjp(X, V)
            calls += 1
        samples.append(POINTS * calls / (time.perf_counter() - began) / 1e6)
    x, v = np.ascontiguousarray(X[0]), np.ascontiguousarray(V[0])
    kernel.vjp(x, v)
    latency = min(timeit.repeat(lambda: kernel.vjp(x, v), number=2000, repeat=5)) / 2000 * 1e6
    return {"cold_s": cold, "mpts": statistics.median(samples), "point_us": latency, "gradcomp": gc.__file__}


def measure_jax(case: str) -> dict:
    import jax
    import numpy as np

    from benchmarks.suite import sample_inputs
    from benchmarks.systems import jax_batched
    jax.config.update("jax_enable_x64", True)
    rng = np.random.default_rng(0)
    X = sample_inputs(case, POINTS, rng)
    V = rng.standard_normal((POINTS, CASES[case][2]))
    started = time.perf_counter()
    system = jax_batched(case)
    system.call(system.prepare(X, V))
    return {"cold_s": time.perf_counter() - started}


def run(tree: Path, case: str, jax: bool = False) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "GRADCOMP_CACHE_DIR": cache, "JAX_PLATFORMS": "cpu",
               "PYTHONPATH": os.pathsep.join([str(tree), str(REPO_ROOT)])}
        done = subprocess.run([sys.executable, __file__, "--probe", "jax" if jax else "gradcomp", case],
                              capture_output=True, text=True, env=env, cwd=tree, timeout=1800)
    if done.returncode:
        return {"error": (done.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def render(baseline: str, candidate: str, rows: dict) -> str:
    lines = [f"# gradcomp {baseline[:10]} (before) against the working tree {candidate} (after)", "",
             f"Each figure: a fresh process with an empty cache; median over rounds. N = {POINTS:,}; float64; "
             f"2-core machine unless noted. Cold = `gc.compile` to the first batched VJP, after imports and "
             f"the SymPy definition (JAX: trace + compile + first call of `jit(vmap(vjp))`).", "",
             "| case | cold before | cold after | JAX cold | vjp Mpts/s before | after | after/before | "
             "one point µs before | after |", "|---|---|---|---|---|---|---|---|---|"]
    def med(row, version, key):
        values = [r[key] for r in row[version] if key in r]
        return statistics.median(values) if values else float("nan")

    for case, row in rows.items():
        before, after = med(row, "before", "mpts"), med(row, "after", "mpts")
        lines.append(f"| {case} | {med(row, 'before', 'cold_s'):.2f} s | {med(row, 'after', 'cold_s'):.2f} s | "
                     f"{med(row, 'jax', 'cold_s'):.2f} s | {before:.3g} | {after:.3g} | {after / before:.2f} | "
                     f"{med(row, 'before', 'point_us'):.2f} | {med(row, 'after', 'point_us'):.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", nargs="?")
    parser.add_argument("--cases", nargs="+", default=list(CASES))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=str(Path(__file__).with_name("versions.md")))
    parser.add_argument("--probe", nargs=2, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.probe:
        kind, case = options.probe
        print(json.dumps(measure_jax(case) if kind == "jax" else measure(case)))
        return
    with tempfile.TemporaryDirectory() as scratch:
        old = Path(scratch) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(old), options.baseline], cwd=REPO_ROOT, check=True,
                       capture_output=True)
        try:
            rows = {case: {"before": [], "after": [], "jax": []} for case in options.cases}
            for _ in range(options.rounds):
                for case in options.cases:
                    rows[case]["before"].append(run(old, case))
                    rows[case]["after"].append(run(REPO_ROOT, case))
                    rows[case]["jax"].append(run(REPO_ROOT, case, jax=True))
                    print(case, {k: v[-1] for k, v in rows[case].items()}, flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=REPO_ROOT, capture_output=True)
    Path(options.out).write_text(render(options.baseline, "after", rows))
    print(Path(options.out).read_text())


if __name__ == "__main__":
    main()
