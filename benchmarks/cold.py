"""Cold start beside Numba's floor: definition -> first batched VJP, each in a fresh process, in one run.

``python benchmarks/cold.py [--cases ...] [--rounds 3] [--out benchmarks/cold.md]``: per suite case and
round, in turn, a fresh process each: Numba's floor (a one-line ``prange`` loop's first call after ``import
numba``), gradcomp with an empty cache directory, and JAX's first ``jit(vmap(vjp))``; imports timed apart
(``compile_probe``).  Writes the medians, and gradcomp cold / floor per case.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.compile_probe import probe  # noqa: E402
from benchmarks.environment import cpu_model  # noqa: E402
from benchmarks.suite import CASES  # noqa: E402

SYSTEMS = ["Numba floor", "gradcomp", "JAX"]
DEFINITION = "SymPy definition"
"""Building the case's SymPy expressions, inside gradcomp's total.  SymPy's first ``tanh`` of a sum asks
the assumptions system (gcd, Mod) and took 0.83 of mlp8x16x4's 1.39 s: the user's code, not gradcomp's."""


def measure(cases, rounds: int, points: int, threads: int) -> dict:
    seconds = {(case, system): [] for case in cases for system in [*SYSTEMS, DEFINITION]}
    for _ in range(rounds):
        for case in cases:
            for system in SYSTEMS:
                with tempfile.TemporaryDirectory() as cache:  # empty: gradcomp compiles cold
                    result = probe(system, case, points, cache, threads)
                if "error" in result:
                    print(f"{case} {system}: {result['error']}", file=sys.stderr)
                    continue
                seconds[case, system].append(result["total_s"])
                if system == "gradcomp":  # the user's SymPy definition of the model, apart from gradcomp's work
                    seconds[case, DEFINITION].append(result["sympy_definition_s"])
                print(f"{case:14} {system:12} {result['total_s']:.2f} s", flush=True)
    return seconds


def render(seconds: dict, cases, rounds: int, points: int) -> str:
    lines = [f"# Cold start: definition -> first batched VJP (N = {points:,}), fresh processes, one run", "",
             f"Machine: {cpu_model()}, {os.cpu_count()} cores. Median of {rounds} rounds; imports timed apart "
             "(not included). gradcomp's total starts before the case's SymPy expressions are built; "
             "'gradcomp own' leaves that definition out (compile + first call).",
             "", "| case | Numba floor (s) | gradcomp total (s) | SymPy definition (s) | gradcomp own (s) "
             "| JAX cold (s) | gradcomp total / floor | gradcomp own / floor |",
             "|---|---|---|---|---|---|---|---|"]
    for case in cases:
        medians = {s: statistics.median(v) if (v := seconds[case, s]) else None for s in [*SYSTEMS, DEFINITION]}
        own = [total - definition for total, definition in zip(seconds[case, "gradcomp"], seconds[case, DEFINITION])]
        medians["own"] = statistics.median(own) if own else None
        floor = medians["Numba floor"]
        cells = [medians[s] for s in ("Numba floor", "gradcomp", DEFINITION, "own", "JAX")]
        ratios = [f"{medians[s] / floor:.2f}" if medians[s] and floor else "-" for s in ("gradcomp", "own")]
        lines.append(f"| {case} | " + " | ".join(f"{c:.2f}" if c is not None else "-" for c in cells)
                     + " | " + " | ".join(ratios) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("cold.md"))
    options = parser.parse_args(argv)
    seconds = measure(options.cases, options.rounds, options.points, options.threads)
    options.out.write_text(render(seconds, options.cases, options.rounds, options.points))
    print(options.out.read_text())


if __name__ == "__main__":
    main()
