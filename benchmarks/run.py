"""Benchmark gradcomp against JAX, PyTorch, SymPy and SymEngine on the suite; write results.md.

    python benchmarks/run.py [--quick] [--cases seed fk6 ...] [--out DIR]

Per case, in one process: compile-time probes (fresh subprocesses), a
correctness check against JAX, batched VJP throughput at several N with all
systems interleaved round-robin, single-point latency, and op counts.  Raw
numbers go to results.json; report.py renders results.md and the chart.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import environment, measure, report, systems, timing  # noqa: E402
from benchmarks.suite import CASES  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
QUICK_CASES = ["seed", "rosenbrock32", "fk6"]


@dataclass
class Config:
    """Everything that differs between a quick and a full run."""

    quick: bool
    cases: list[str]
    threads: int
    batch_sizes: list[int]
    big_batch: int
    big_batch_budget_bytes: float
    correctness_points: int
    compile_points: int
    batch_plan: timing.Plan
    big_plan: timing.Plan
    point_plan: timing.Plan


def make_config(quick: bool, cases: list[str] | None, threads: int) -> Config:
    """Quick: fewer and shorter samples, 10M points only where it fits in 1.2 GB."""
    if quick:
        return Config(True, cases or QUICK_CASES, threads, [1_000, 100_000], 10_000_000, 1.5e9, 1_000, 100_000,
                      timing.Plan(5, 0.02, 2.0), timing.Plan(3, 0.0, 10.0), timing.Plan(5, 0.005, 1.0))
    return Config(False, cases or list(CASES), threads, [1_000, 100_000], 10_000_000, 8e9, 2_000, 100_000,
                  timing.Plan(11, 0.04, 6.0), timing.Plan(5, 0.0, 30.0), timing.Plan(11, 0.015, 3.0))


def build_peers(case: str, skipped: list[str], notes: list[str]) -> tuple[list[systems.Batched], dict]:
    """The installed peers' batched VJPs for a case, with their setup seconds; failures become notes."""
    peers, setup_s = [], {}
    for peer, builder in systems.PEER_BUILDERS.items():
        if peer in skipped:
            continue
        started = time.perf_counter()
        try:
            system = builder(case)
        except Exception as error:  # a peer failing must not stop the run; it is reported
            notes.append(f"{case}: {peer} could not be built: {error!r}")
            continue
        peers.append(system)
        setup_s[system.label] = time.perf_counter() - started
    return peers, setup_s


def build_points(case: str, kernel, skipped: list[str], notes: list[str]) -> list[systems.Point]:
    points = [systems.gradcomp_point(kernel)]
    for peer, builder in systems.POINT_BUILDERS.items():
        if peer not in skipped:
            try:
                points.append(builder(case))
            except Exception as error:
                notes.append(f"{case}: {peer} single-point could not be built: {error!r}")
    return points


def big_batch_fits(case: str, points: int, budget_bytes: float) -> tuple[bool, float]:
    """Whether X, V, y and the VJP (plus slack for input generation) fit the budget and free memory."""
    n_in, n_out = systems.case_shape(case)
    needed = 8 * points * (2 * n_in + 2 * n_out) * 1.5
    return needed <= min(budget_bytes, 0.5 * environment.available_memory_bytes()), needed


def run_case(case: str, config: Config, cache_root: Path, skipped: list[str], notes: list[str]) -> dict:
    """Every figure for one case."""
    log = _logger(case)
    result: dict = {"case": case, "n_in": CASES[case][1], "n_out": CASES[case][2], "load_average": os.getloadavg()}
    cache_dir = cache_root / case
    log("compile probes (fresh processes)")
    result["compile"] = measure.compile_times(case, config.compile_points, config.threads, cache_dir,
                                              with_jax="JAX" not in skipped)
    started = time.perf_counter()
    kernel = systems.gradcomp_kernel(case, cache=cache_dir)
    kernel.precompile(["forward", "vjp", "value_and_vjp"])
    result["in_process_compile_s"] = time.perf_counter() - started
    result["ops"] = measure.op_counts(kernel)
    log("building peers")
    peers, result["peer_setup_s"] = build_peers(case, skipped, notes)
    ours = systems.gradcomp_batched(kernel)
    result["notes"] = {s.label: s.note for s in ours + peers if s.note}
    X, V = measure.case_inputs(case, config.correctness_points, seed=1)
    result["correctness"] = measure.correctness(ours + peers, X, V)
    reference = next((p for p in peers if p.label == measure.REFERENCE), None)
    if reference is not None:
        result["correctness"]["gradcomp vjp, single point"] = measure.point_correctness(kernel, reference, X[0], V[0])
    result["throughput"] = {}
    for points in config.batch_sizes:
        log(f"throughput N={points}")
        X, V = measure.case_inputs(case, points)
        result["throughput"][str(points)] = measure.throughput(ours + peers, X, V, config.batch_plan)
    result["big"] = run_big_batch(case, ours, config, log)
    log("single-point latency")
    x, v = (a[0].copy() for a in measure.case_inputs(case, 1, seed=2))
    result["latency_us"] = measure.latency(build_points(case, kernel, skipped, notes), x, v, config.point_plan)
    result["dispatch_us"] = measure.dispatch_breakdown(kernel, x, v, config.point_plan)
    return result


def run_big_batch(case: str, ours: list[systems.Batched], config: Config, log) -> dict:
    """gradcomp alone at config.big_batch points, where memory allows."""
    points = config.big_batch
    fits, needed = big_batch_fits(case, points, config.big_batch_budget_bytes)
    if not fits:
        return {"skipped": f"needs ~{needed / 1e9:.1f} GB; budget {config.big_batch_budget_bytes / 1e9:.1f} GB "
                           f"or half of free memory"}
    log(f"throughput N={points} (gradcomp only)")
    X, V = measure.case_inputs(case, points)
    multi_threaded = [system for system in ours if "1 thread" not in system.label]
    big = {"points": points, "throughput": measure.throughput(multi_threaded, X, V, config.big_plan)}
    n_in, n_out = systems.case_shape(case)
    big["bytes_per_point"] = {"gradcomp value_and_vjp": measure.bytes_per_point(n_in, n_out, True),
                              "gradcomp vjp": measure.bytes_per_point(n_in, n_out, False),
                              "gradcomp forward": 8 * (n_in + n_out)}
    return big


def _logger(case: str):
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {case}: {message}", flush=True)
    return log


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"short samples; cases {', '.join(QUICK_CASES)} "
                        "unless --cases; 10M points only where under 1.5 GB")
    parser.add_argument("--cases", nargs="+", choices=list(CASES), help="cases to run (default: all, or quick set)")
    parser.add_argument("--threads", type=int, default=2, help="Numba and torch threads (default 2)")
    parser.add_argument("--out", type=Path, default=BENCH_DIR, help="where results.{md,json} and the chart go")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    environment.pin_threads(args.threads)
    config = make_config(args.quick, args.cases, args.threads)
    skipped = systems.missing_peers()
    notes = [f"{peer} is not installed: skipped" for peer in skipped]
    started = time.perf_counter()
    run = {"config": asdict(config), "machine": environment.describe(args.threads), "notes": notes, "cases": {}}
    with tempfile.TemporaryDirectory(prefix="gradcomp-bench-") as cache_root:
        for case in config.cases:
            run["cases"][case] = run_case(case, config, Path(cache_root), skipped, notes)
    run["machine"]["load_average_end"] = os.getloadavg()
    run["machine"]["numba_layer_used"] = environment.numba_layer_used()
    run["wall_s"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(run, indent=1, default=float))
    report.write(run, args.out)
    print(f"wrote {args.out / 'results.md'} in {run['wall_s']:.0f} s")
    return run


if __name__ == "__main__":
    main()
