"""Batched VJP throughput with each system in its own fresh process, in float64 and float32.

    python benchmarks/isolated.py [--cases seed fk6 ...] [--systems gradcomp jax torch symengine]
        [--dtypes float64 float32] [--points 100000] [--threads 2] [--rounds 1]
        [--samples 7] [--sample-seconds 0.2] [--out benchmarks/isolated.md] [--json PATH]

Why one process per (case, system, dtype): torch's OpenMP pool, XLA's threads
and Numba's threads compete for the cores when they live in one process
(run.py's round-robin), and the loser's figure says more about the neighbours
than about the system (torch ran chain12 at 0.7 Mpts/s beside the others, 9.5
alone).  Here a process imports only its own system, warms it up, and times
``--samples`` samples of >= ``--sample-seconds`` at N = ``--points``; the
parent runs the processes strictly one after another.  Each process also
returns its VJP of the first 64 points, and the parent compares every system
with gradcomp float64 (normwise, as measure.py does).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
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
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.suite import CASES  # noqa: E402

SYSTEMS = {"gradcomp": "gradcomp", "ref": "naive Numba", "jax": "JAX", "torch": "torch", "symengine": "SymEngine",
           "sympy": "SymPy"}
"""Command-line name -> label.  SymPy lambdify is available but not in the default set (slowest, NumPy-bound)."""
PACKAGES = {"gradcomp": "numba", "ref": "numba", "jax": "jax", "torch": "torch", "symengine": "symengine",
            "sympy": "sympy"}
DEFAULT_SYSTEMS = ["gradcomp", "ref", "jax", "torch", "symengine"]
DTYPES = ["float64", "float32"]
TOLERANCE = {"float64": 1e-9, "float32": 1e-4}
"""Largest normwise relative difference from gradcomp float64 that is not flagged."""
CHECK_POINTS = 64
THREADED = ["numba", "jax", "torch"]
"""Packages with thread pools of their own: a process that imports another system's is not isolated."""
SHORT = {"float64": "f64", "float32": "f32"}


# -- in the child process: build one system, time it ------------------------------------------------

def build_gradcomp(case: str, dtype: str, threads: int):
    """gradcomp's kernel.vjp, compiled into the fresh GRADCOMP_CACHE_DIR the parent made, and precompiled:
    otherwise the parallel driver compiles in the background while the first samples run."""
    import gradcomp as gc
    from benchmarks.systems import Batched, symbolic_case
    symbols, outputs = symbolic_case(case)
    kernel = gc.compile(outputs, [symbols], dtype=dtype)
    kernel.precompile(["vjp"])
    batched = Batched("gradcomp vjp", lambda X, V: (X, V), lambda p: kernel.vjp(*p), lambda r: r,
                      note=f"kernel.vjp, {threads} Numba threads")
    return batched, {"lanes": getattr(kernel._import(), "LANES", "-"), **_host_cpu()}


def _host_cpu() -> dict:
    """The vector ISA and CPU LLVM compiles for: what LANES was chosen from."""
    import llvmlite.binding as llvm
    features = llvm.get_host_cpu_features()
    isa = next((name for name in ("avx512f", "avx2", "avx", "neon") if features.get(name)), "other")
    return {"isa": isa, "cpu_name": llvm.get_host_cpu_name()}


def build_jax(case: str, dtype: str, threads: int):
    """float64: systems.jax_batched (x64).  float32: the same jit(vmap(vjp)) with x64 left off (JAX's default),
    so XLA computes in float32; systems.py always switches x64 on, hence this copy."""
    from benchmarks import systems
    if dtype == "float64":
        return systems.jax_batched(case), {}
    import jax
    import jax.numpy as jnp
    function = CASES[case][0]

    def outputs(x):
        return jnp.stack([jnp.asarray(y, x.dtype) for y in function([x[j] for j in range(x.shape[0])], jnp)])

    batched = jax.jit(jax.vmap(lambda x, v: jax.vjp(outputs, x)[1](v)[0]))
    return systems.Batched("JAX jit(vmap(vjp))", lambda X, V: (jax.device_put(X), jax.device_put(V)),
                           lambda p: batched(*p).block_until_ready(), lambda r: r,
                           note="x64 off; XLA CPU default threading"), {}


def build_torch(case: str, dtype: str, threads: int):
    """systems.torch_batched: its tensors take the dtype of the arrays given (float32 arrays -> float32)."""
    import torch

    from benchmarks import systems
    torch.set_num_threads(threads)
    return systems.torch_batched(case), {}


def build_symengine(case: str, dtype: str, threads: int):
    """float64: systems.symengine_batched.  float32: the same Lambdify with dtype=float32, which SymEngine
    compiles with its LLVMFloat backend (float arithmetic, not a cast of double results)."""
    from benchmarks import systems
    if dtype == "float64":
        return systems.symengine_batched(case), {}
    import numpy as np
    import symengine as se
    function, n_in, n_out = CASES[case]
    symbols = [se.Symbol(f"in_x{j}") for j in range(n_in)]  # see systems.symengine_batched for the names
    cotangents = [se.Symbol(f"in_v{i}") for i in range(n_out)]
    outputs = [se.sympify(y) for y in function(symbols, se)]
    vjp = [sum((v * y.diff(x) for v, y in zip(cotangents, outputs)), se.Integer(0)) for x in symbols]
    compiled = se.Lambdify([*symbols, *cotangents], vjp, backend="llvm", cse=True, dtype=np.float32)
    return systems.Batched("SymEngine Lambdify llvm", lambda X, V: np.ascontiguousarray(np.hstack([X, V])),
                           compiled, lambda r: r, note="LLVMFloat; packed [X|V]; 1 thread"), {}


def build_sympy(case: str, dtype: str, threads: int):
    """systems.sympy_batched: NumPy ufuncs keep the columns' dtype."""
    from benchmarks import systems
    return systems.sympy_batched(case), {}


def build_ref(case: str, dtype: str, threads: int):
    """systems.numba_reference_batched: a plain prange loop over SymPy's VJP, what a user writes with Numba."""
    from benchmarks import systems
    return systems.numba_reference_batched(case, dtype), {}


BUILDERS = {"gradcomp": build_gradcomp, "ref": build_ref, "jax": build_jax, "torch": build_torch,
            "symengine": build_symengine, "sympy": build_sympy}


def inputs(case: str, points: int, dtype: str):
    """The suite's inputs and standard-normal cotangents from seed 0 (measure.case_inputs), then cast:
    every process, whatever its dtype, sees the same points."""
    from benchmarks.measure import case_inputs
    X, V = case_inputs(case, points)
    return X.astype(dtype), V.astype(dtype)


def sample_rates(call, points: int, samples: int, seconds: float) -> list[float]:
    """Mpts/s of each sample: the call looped for at least `seconds` (as versions.py does)."""
    rates = []
    for _ in range(samples):
        began, calls = time.perf_counter(), 0
        while True:
            call()
            calls += 1
            elapsed = time.perf_counter() - began
            if elapsed >= seconds:
                break
        rates.append(points * calls / elapsed / 1e6)
    return rates


def probe(case: str, system: str, dtype: str, options) -> dict:
    """One fresh process's measurement: build, warm up, sample; plus the VJP of the first points."""
    import numpy as np
    load = os.getloadavg()[0]  # other work on the cores slows the threaded systems most
    X, V = inputs(case, options.points, dtype)
    started = time.perf_counter()
    batched, extra = BUILDERS[system](case, dtype, options.threads)
    prepared = batched.prepare(X, V)
    raw = batched.call(prepared)  # warm-up: JIT compilation, thread pools, allocator
    build_s = time.perf_counter() - started
    rates = sample_rates(lambda: batched.call(prepared), options.points, options.samples, options.sample_seconds)
    result = batched.as_numpy(raw)
    computed = str(getattr(result, "dtype", "?"))
    return {"case": case, "system": system, "dtype": dtype, "points": options.points, "label": batched.label,
            "note": batched.note, "mpts": statistics.median(rates), "samples": rates, "build_s": build_s,
            "result_dtype": computed, "threads": _threads_used(system), "cores": os.cpu_count(), "load_average": load,
            "foreign_modules": [m for m in THREADED if m in sys.modules and m != PACKAGES[system]],
            "vjp": np.asarray(result, float)[:CHECK_POINTS].tolist(), **extra}


def _threads_used(system: str) -> str:
    """The thread count the system reports after the timing (what it actually ran with)."""
    if system in ("gradcomp", "ref"):
        import numba
        return f"{numba.get_num_threads()} Numba ({numba.threading_layer()})"
    if system == "torch":
        import torch
        return f"{torch.get_num_threads()} torch"
    if system == "jax":
        return "XLA default"
    return "1"


# -- in the parent: schedule the processes, compare, tabulate ----------------------------------------

def run_probe(case: str, system: str, dtype: str, options) -> dict:
    """One (case, system, dtype) in a fresh interpreter with an empty gradcomp cache and pinned thread counts."""
    with tempfile.TemporaryDirectory(prefix="gradcomp-isolated-") as cache:
        env = {**os.environ, "GRADCOMP_CACHE_DIR": cache, "JAX_PLATFORMS": "cpu",
               "NUMBA_NUM_THREADS": str(options.threads), "OMP_NUM_THREADS": str(options.threads),
               "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
        command = [sys.executable, str(Path(__file__).resolve()), "--probe", case, system, dtype,
                   "--points", str(options.points), "--threads", str(options.threads),
                   "--samples", str(options.samples), "--sample-seconds", str(options.sample_seconds)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO_ROOT,
                                  timeout=options.timeout)
        except subprocess.TimeoutExpired:
            return {"case": case, "system": system, "dtype": dtype, "error": f"timed out after {options.timeout} s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode or not lines:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"case": case, "system": system, "dtype": dtype, "error": last}
    return json.loads(lines[-1])


def schedule(cases: list[str], systems: list[str], dtypes: list[str], rounds: int) -> list[tuple[str, str, str]]:
    """Run order: within a round, case by case, dtype by dtype, every system in turn; odd rounds reverse the
    systems, so a drift of the machine's load does not always land on the same system."""
    jobs = []
    for round_ in range(rounds):
        order = systems if round_ % 2 == 0 else systems[::-1]
        jobs += [(case, system, dtype) for case in cases for dtype in dtypes for system in order]
    return jobs


def check(runs: dict, reference: dict) -> None:
    """Add to each successful run its max normwise relative difference from gradcomp float64 (same points)."""
    import numpy as np

    from benchmarks.measure import max_relative_difference
    for (case, _, dtype), results in runs.items():
        expected = reference.get(case)
        for result in results:
            if "vjp" in result and expected is not None:
                difference = max_relative_difference(np.asarray(result["vjp"]), expected)
                result["max_rel_diff"] = difference
                result["flagged"] = difference > TOLERANCE[dtype]


def references(runs: dict) -> dict:
    """Per case, the first successful gradcomp float64 VJP of the first points: the yardstick of check()."""
    import numpy as np
    found = {}
    for (case, system, dtype), results in runs.items():
        good = [r for r in results if "vjp" in r]
        if system == "gradcomp" and dtype == "float64" and good:
            found[case] = np.asarray(good[0]["vjp"])
    return found


def median_rate(results: list[dict]) -> float | None:
    rates = [r["mpts"] for r in results if "mpts" in r]
    return statistics.median(rates) if rates else None


def cell(results: list[dict] | None) -> str:
    """A Mpts/s figure (median over rounds), '!' when the VJP is off, or why there is none."""
    if not results:
        return "-"
    rate = median_rate(results)
    if rate is None:
        return "error"
    return f"{rate:.3g}" + (" !" if any(r.get("flagged") for r in results) else "")


def ratio(numerator: float | None, denominator: float | None) -> str:
    return f"{numerator / denominator:.2f}" if numerator and denominator else "-"


def machine_line(runs: dict) -> str:
    """CPU (LLVM's name and lscpu's model), cores, vector ISA and gradcomp's LANES per dtype."""
    from benchmarks.environment import cpu_model
    facts = [r for results in runs.values() for r in results if "isa" in r]
    lanes = sorted({(r["dtype"], str(r["lanes"])) for r in facts}, key=lambda pair: DTYPES.index(pair[0]))
    lanes_text = ", ".join(f"{dtype} {value}" for dtype, value in lanes) or "-"
    name = facts[0]["cpu_name"] if facts else "-"
    isa = facts[0]["isa"] if facts else "-"
    loads = [r["load_average"] for results in runs.values() for r in results if "load_average" in r]
    load_text = f"{min(loads):.2f} to {max(loads):.2f}" if loads else "-"
    return (f"Machine: {name} ({cpu_model()}), {os.cpu_count()} cores, ISA {isa}; gradcomp LANES: {lanes_text}; "
            f"1-minute load average when each process started: {load_text}.")


def render(runs: dict, options, skipped: list[str]) -> str:
    """The Markdown report: throughput table, correctness table, machine, settings and notes."""
    systems, dtypes = options.systems, options.dtypes
    columns = [(s, d) for d in dtypes for s in systems]
    peers = [s for s in systems if s != "gradcomp"]
    header = [f"{SYSTEMS[s]} {SHORT[d]}" for s, d in columns]
    versus_peers = "gradcomp" in systems and bool(peers)
    both_dtypes = "gradcomp" in systems and set(DTYPES) <= set(dtypes)
    extra = [f"gradcomp / best peer {SHORT[d]}" for d in dtypes if versus_peers]
    extra += ["gradcomp f32 / f64"] if both_dtypes else []
    lines = [f"# Batched VJP throughput, each system in its own process (Mpts/s, N = {options.points:,})", "",
             "| case | " + " | ".join(header + extra) + " |", "|---" * (1 + len(header) + len(extra)) + "|"]
    for case in options.cases:
        rate = {(s, d): median_rate(runs.get((case, s, d), [])) for s, d in columns}
        row = [cell(runs.get((case, s, d))) for s, d in columns]
        for d in dtypes if versus_peers else []:
            row.append(ratio(rate["gradcomp", d], max((rate[s, d] for s in peers if rate[s, d]), default=None)))
        if both_dtypes:
            row.append(ratio(rate["gradcomp", "float32"], rate["gradcomp", "float64"]))
        lines.append(f"| {case} | " + " | ".join(row) + " |")
    lines += ["", "Max normwise relative difference from gradcomp float64 on the first "
              f"{CHECK_POINTS} points (flagged `!` above {TOLERANCE['float64']:g} for float64, "
              f"{TOLERANCE['float32']:g} for float32; float32 includes rounding the inputs):", "",
              "| case | " + " | ".join(header) + " |", "|---" * (1 + len(header)) + "|"]
    for case in options.cases:
        diffs = [max((r["max_rel_diff"] for r in runs.get((case, s, d), []) if "max_rel_diff" in r), default=None)
                 for s, d in columns]
        lines.append(f"| {case} | " + " | ".join("-" if x is None else f"{x:.1e}" for x in diffs) + " |")
    if not references(runs):
        lines += ["", "(No successful gradcomp float64 run: nothing to compare with.)"]
    lines += ["", machine_line(runs), "", *settings(options), *notes(runs, skipped)]
    return "\n".join(lines) + "\n"


def settings(options) -> list[str]:
    from benchmarks.environment import git_revision, versions
    found = versions()
    software = ", ".join(f"{p} {found[p]}" for p in ("numba", "llvmlite", "numpy", "jax", "torch", "symengine"))
    return [f"Date: {datetime.datetime.now(datetime.UTC).isoformat(timespec='minutes')}; git {git_revision()}; "
            f"{software}.",
            f"Each figure: median over {options.rounds} round(s) of the median of {options.samples} samples of "
            f">= {options.sample_seconds} s, in a fresh process (processes run one at a time). "
            f"Numba (NUMBA_NUM_THREADS) and torch (set_num_threads) use {options.threads} threads; XLA keeps "
            f"its default thread pool; SymEngine and SymPy run on one thread. gradcomp: empty cache, "
            f"`kernel.precompile(['vjp'])` before timing. JAX float32 runs without x64; SymEngine float32 "
            f"is Lambdify(dtype=float32) (LLVMFloat)."]


def notes(runs: dict, skipped: list[str]) -> list[str]:
    """Skipped systems, failed processes, a process that loaded another system, a result of the wrong dtype."""
    found = [f"- {name}: not installed, skipped." for name in skipped]
    for (case, system, dtype), results in runs.items():
        for r in results:
            where = f"{case}, {SYSTEMS[system]} {dtype}"
            if "error" in r:
                found.append(f"- {where}: {r['error']}")
            if r.get("foreign_modules"):
                found.append(f"- {where}: its process also imported {', '.join(r['foreign_modules'])}.")
            if r.get("result_dtype") not in (None, "?", dtype) and system != "sympy":
                found.append(f"- {where}: the result came back as {r['result_dtype']}.")
    return ["", "Notes:", *dict.fromkeys(found)] if found else []


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--systems", nargs="+", default=DEFAULT_SYSTEMS, choices=list(SYSTEMS))
    parser.add_argument("--dtypes", nargs="+", default=DTYPES, choices=DTYPES)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--samples", type=int, default=7)
    parser.add_argument("--sample-seconds", type=float, default=0.2)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed to one process")
    parser.add_argument("--out", default=str(Path(__file__).with_name("isolated.md")))
    parser.add_argument("--json", help="raw results (default: --out with .json)")
    parser.add_argument("--probe", nargs=3, metavar=("CASE", "SYSTEM", "DTYPE"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    options = parse(argv)
    if options.probe:
        print(json.dumps(probe(*options.probe, options)))
        return
    skipped = [SYSTEMS[s] for s in options.systems if importlib.util.find_spec(PACKAGES[s]) is None]
    systems = [s for s in options.systems if SYSTEMS[s] not in skipped]
    runs: dict[tuple[str, str, str], list[dict]] = {}
    for case, system, dtype in schedule(options.cases, systems, options.dtypes, options.rounds):
        result = run_probe(case, system, dtype, options)
        runs.setdefault((case, system, dtype), []).append(result)
        print(f"{case:>13} {SYSTEMS[system]:>9} {dtype}: "
              + (f"{result['mpts']:.3g} Mpts/s" if "mpts" in result else result["error"]), flush=True)
    check(runs, references(runs))
    options.systems = systems
    out, raw = Path(options.out), Path(options.json or Path(options.out).with_suffix(".json"))
    for path in (out, raw):
        path.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text(json.dumps({"options": {k: v for k, v in vars(options).items() if k != "probe"},
                               "skipped": skipped,
                               "runs": [{k: v for k, v in r.items() if k != "vjp"}  # the checked values: not kept
                                        for results in runs.values() for r in results]},
                              indent=1))  # first: the raw numbers survive a failure of the report
    out.write_text(render(runs, options, skipped))
    print(out.read_text())


if __name__ == "__main__":
    main()
