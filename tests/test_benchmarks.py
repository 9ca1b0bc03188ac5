"""Smoke test of the benchmark harness: every measurement function on one tiny case, no timing assertions.

It keeps benchmarks/ from rotting silently when gradcomp's API or a peer changes.
"""

import hashlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import measure, report, systems, timing  # noqa: E402

TINY = timing.Plan(samples=2, min_sample_s=0.0, slow_budget_s=1.0)
HAS_JAX = importlib.util.find_spec("jax") is not None


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    return systems.gradcomp_kernel("seed", cache=tmp_path_factory.mktemp("bench-cache"))


@pytest.fixture(scope="module")
def peers():
    return [builder("seed") for name, builder in systems.PEER_BUILDERS.items()
            if name not in systems.missing_peers()]


SHARED_SUITE_SHA256 = "3f3c6543a24f14519fca62fcb7ad24e47bf1f8e0b690d0c2a22672b39b9e0d34"
"""sha256 of the shared benchmark suite that benchmarks/suite.py copies verbatim (recorded from that suite)."""


def test_suite_copy_is_identical():
    """benchmarks/suite.py must stay the shared suite, byte for byte: its digest is pinned here, so the check
    needs no file outside the repository.  If the shared suite itself changes, copy it and update the digest."""
    suite = Path(__file__).resolve().parents[1] / "benchmarks" / "suite.py"
    assert hashlib.sha256(suite.read_bytes()).hexdigest() == SHARED_SUITE_SHA256, (
        "benchmarks/suite.py differs from the shared benchmark suite it copies; restore it (git checkout) or, "
        "if the shared suite changed, copy it verbatim and update SHARED_SUITE_SHA256")


def test_throughput_and_correctness(kernel, peers):
    X, V = measure.case_inputs("seed", 64)
    ours = systems.gradcomp_batched(kernel)
    rates = measure.throughput(ours + peers, X, V, TINY)
    assert set(rates) == {s.label for s in ours + peers}
    assert all(r["mpts"] > 0 for r in rates.values())
    errors = measure.correctness(ours + peers, X, V)
    if HAS_JAX:
        assert errors["gradcomp vjp"] < 1e-9
        assert measure.point_correctness(kernel, systems.jax_batched("seed"), X[0], V[0]) < 1e-9


def test_latency_dispatch_and_ops(kernel):
    x, v = (a[0].copy() for a in measure.case_inputs("seed", 1))
    points = [systems.gradcomp_point(kernel)] + [b("seed") for n, b in systems.POINT_BUILDERS.items()
                                                 if n not in systems.missing_peers()]
    assert all(t > 0 for t in measure.latency(points, x, v, TINY).values())
    breakdown = measure.dispatch_breakdown(kernel, x, v, TINY)
    assert "error" in breakdown or all(t > 0 for t in breakdown.values())
    ops = measure.op_counts(kernel)
    assert ops["value_and_vjp"] >= ops["forward"] > 0


def test_compile_probe_and_report(tmp_path):
    probes = measure.compile_times("seed", 16, threads=1, cache_dir=tmp_path / "cache", with_jax=HAS_JAX)
    assert all("error" not in p for p in probes.values()), probes
    assert probes["gradcomp warm"]["total_s"] > 0
    run = _tiny_run(probes)
    report.write(run, tmp_path)
    assert "| seed |" in (tmp_path / "results.md").read_text()


def _tiny_run(probes) -> dict:
    """A run dict in run.py's shape, from tiny real measurements, to exercise the renderer."""
    from benchmarks import environment
    kernel = systems.gradcomp_kernel("seed", cache=False)
    X, V = measure.case_inputs("seed", 32)
    case = {"case": "seed", "n_in": 3, "n_out": 3, "compile": probes, "ops": measure.op_counts(kernel),
            "peer_setup_s": {}, "notes": {}, "correctness": {}, "in_process_compile_s": 0.0,
            "throughput": {"100000": measure.throughput(systems.gradcomp_batched(kernel), X, V, TINY)},
            "big": {"skipped": "smoke test"}, "latency_us": {}, "dispatch_us": {}}
    config = {"quick": True, "cases": ["seed"], "batch_plan": TINY.__dict__}
    machine = environment.describe(1) | {"load_average_end": (0.0, 0.0, 0.0)}
    return {"config": config, "machine": machine, "notes": [], "cases": {"seed": case}, "wall_s": 0.0}


def test_big_batch_guard():
    from benchmarks.run import big_batch_fits
    fits, needed = big_batch_fits("rosenbrock32", 10**12, 1e9)
    assert not fits and needed > 1e9
    assert np.isfinite(needed)


def test_the_cold_start_benchmark_reports_gradcomp_beside_numbas_floor(tmp_path):
    from benchmarks import cold
    out = tmp_path / "cold.md"
    cold.main(["--cases", "seed", "--rounds", "1", "--points", "64", "--threads", "1", "--out", str(out)])
    row = next(line for line in out.read_text().splitlines() if line.startswith("| seed |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    floor, total, definition, own, ratio_own = (float(cells[i]) for i in (1, 2, 3, 4, 7))
    assert floor > 0 and total > 0 and ratio_own > 0
    assert 0 <= definition < total and abs(own - (total - definition)) < 0.011  # gradcomp alone
