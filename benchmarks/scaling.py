"""How compile time grows with the size of the expression DAG: chain, Lennard-Jones, MLP.

    python benchmarks/scaling.py [--quick] [--out benchmarks/scaling.md]

Per case, in a fresh process each (so Numba's start-up is paid the same way):
SymPy build, CSE + lowering, derivation sweeps, printing, Numba compile of
the fused value_and_vjp (point function), generated statement count, and the
serial run time per point.  The Lennard-Jones energy is summed with one
``sp.Add``: the suite's ``e = e + ...`` makes SymPy itself quadratic (97 s to
build 48 particles), which is the user's cost, not the compiler's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = [("chain", d) for d in (12, 25, 50, 100, 200, 400, 800)] + [("lj", k) for k in (6, 12, 24, 48, 96, 128)] + \
        [("mlp", w) for w in (16, 64, 256, 1024)]
QUICK = [("chain", 12), ("chain", 25), ("lj", 6), ("lj", 12), ("mlp", 16)]


def build(family: str, size: int):
    """(outputs, args) of one case, with SymPy."""
    import random

    import sympy as sp
    if family == "chain":
        x = sp.symbols("x0:3")
        t = x[0]
        for _ in range(size):
            t = sp.sin(t) * x[1] + sp.cos(t * x[2])
        return t, [list(x)]
    if family == "lj":
        x = sp.symbols(f"x0:{3 * size}")
        terms = []
        for i in range(size):
            for j in range(i + 1, size):
                r2 = sum((x[3 * i + d] - x[3 * j + d]) ** 2 for d in range(3))
                inv6 = 1 / r2**3
                terms.append(4 * (inv6 * inv6 - inv6))
        return [sp.Add(*terms)], [list(x)]
    rng = random.Random(size)
    x = sp.symbols("x0:8")
    hidden = [sp.tanh(sum(round(rng.uniform(-1, 1), 3) * x[j] for j in range(8)) + 0.1 * i) for i in range(size)]
    return [sp.tanh(sum(round(rng.uniform(-1, 1), 3) * h for h in hidden)) for _ in range(4)], [list(x)]


def probe(family: str, size: int) -> dict:
    """Runs in a fresh process: every stage's seconds for one case."""
    import numpy as np

    import gradcomp.derive as derive_module
    from gradcomp.codegen import generate
    from gradcomp.drivers import collector_paused
    from gradcomp.runtime import Kernel
    from gradcomp.spec import make_signature

    seconds = {}
    start = time.perf_counter()
    outputs, args = build(family, size)
    seconds["build"] = time.perf_counter() - start
    lower_outputs = derive_module._lower_outputs

    def timed_lowering(graph, flat):
        began = time.perf_counter()
        result = lower_outputs(graph, flat)
        seconds["cse+lower"] = time.perf_counter() - began
        return result

    derive_module._lower_outputs = timed_lowering
    with collector_paused():  # as gc.compile runs these stages
        began = time.perf_counter()
        derivation = derive_module.derive(make_signature(outputs, args))
        seconds["derive"] = time.perf_counter() - began - seconds["cse+lower"]
        began = time.perf_counter()
        module = generate(derivation, f"scaling-{family}{size}")
        seconds["print"] = time.perf_counter() - began
    kernel = Kernel(module.meta, module.source)
    began = time.perf_counter()
    kernel.precompile(["value_and_vjp"], parallel=False)
    seconds["numba"] = time.perf_counter() - began
    n_in = kernel.arg_shapes[0][0]
    points = np.random.default_rng(0).uniform(0.5, 1.5, (2000, n_in))
    if family == "lj":
        points += np.array([[i % 4, (i // 4) % 4, i // 16] for i in range(size)], float).ravel() * 1.5
    cotangent = np.ones((2000,) + kernel.out_shape)
    kernel.precompile(["value_and_vjp"])  # the parallel driver too (untimed): a 2000-point batch may take it
    kernel.value_and_vjp(points, cotangent)
    began = time.perf_counter()
    kernel.value_and_vjp(points, cotangent)
    info = kernel.methods["value_and_vjp"]
    return {"case": f"{family}{size}", "seconds": seconds, "statements": info["statements"], "ops": info["ops"],
            "us_per_point": (time.perf_counter() - began) / 2000 * 1e6}


def render(rows: list[dict]) -> str:
    lines = ["# Compile time against expression size", "",
             "Fresh process per case; seconds per stage; `derive` is what `gc.compile` derives (value, vjp, "
             "value_and_vjp); `numba` compiles the fused value_and_vjp point function and serial driver "
             "(each builds the core as LLVM IR). `x` = ratio to the previous size of the same family; "
             "ms/stmt = (total - the smallest case's total) / added statements.", "",
             "| case | statements | ops | build | cse+lower | derive | print | numba | gradcomp total | x | ms/stmt | "
             "run µs/point (2000-point batch) |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    previous, first = {}, {}
    for row in rows:
        s = row["seconds"]
        total = s["cse+lower"] + s["derive"] + s["print"] + s["numba"]
        family = row["case"].rstrip("0123456789")
        growth = f"{total / previous[family]:.2f}" if family in previous else ""
        previous[family] = total
        base_total, base_statements = first.setdefault(family, (total, row["statements"]))
        added = row["statements"] - base_statements
        per_statement = f"{(total - base_total) / added * 1e3:.3f}" if added > 0 else ""
        lines.append(f"| {row['case']} | {row['statements']} | {row['ops']} | {s['build']:.2f} | {s['cse+lower']:.2f} "
                     f"| {s['derive']:.2f} | {s['print']:.2f} | {s['numba']:.2f} | {total:.2f} | {growth} | "
                     f"{per_statement} | {row['us_per_point']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(Path(__file__).with_name("scaling.md")))
    parser.add_argument("--probe", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=900)
    options = parser.parse_args()
    if options.probe:
        print(json.dumps(probe(options.probe[0], int(options.probe[1]))))
        return
    rows = []
    for family, size in QUICK if options.quick else CASES:
        with tempfile.TemporaryDirectory() as cache:
            try:
                done = subprocess.run([sys.executable, __file__, "--probe", family, str(size)], capture_output=True,
                                      text=True, timeout=options.timeout, env={**__import__("os").environ,
                                                                               "GRADCOMP_CACHE_DIR": cache})
            except subprocess.TimeoutExpired:
                print(f"{family}{size}: over {options.timeout:.0f} s, stopped", flush=True)
                continue
        if done.returncode:
            print(f"{family}{size} failed:\n{done.stderr[-2000:]}", flush=True)
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
        Path(options.out).write_text(render(rows))


if __name__ == "__main__":
    main()
