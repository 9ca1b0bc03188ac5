"""Smoke test of benchmarks/indexed.py in its --quick mode (tiny sizes, 1 repeat): the report and the raw JSON
come out, name the CPU, and hold every case and every system, each agreeing with gradcomp.  No timing
assertions: the figures of a 1,000-element chain mean nothing; the test is there so the script does not rot
while gradcomp's API changes."""

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CASES = ["chain", "logsumexp", "lj_pairs", "gray_scott", "xy_edges"]
SYSTEMS = ["gradcomp", "jax", "numba"]
DTYPES = ["float64", "float32"]


def test_indexed_benchmark_quick_run(tmp_path):
    done = subprocess.run([sys.executable, "-m", "benchmarks.indexed", "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    md, raw = tmp_path / "indexed.md", tmp_path / "indexed.json"
    assert md.exists() and raw.exists()

    results = json.loads(raw.read_text())
    cpu = results["environment"]["cpu"]
    table = md.read_text()
    assert cpu and cpu in table and "cores" in table
    for heading in ("## float64", "## float32", "## LJ gradient of", "## Peak memory of the LJ gradient"):
        assert heading in table
    assert ("| case | size | gradcomp value ms | gradcomp grad ms | JAX value ms | JAX grad ms | Numba value ms | "
            "Numba grad ms | gradcomp cold s | JAX cold s | Numba cold s | gradcomp grad speedup vs best other |"
            in table)
    for case in CASES:
        rows = [line for line in table.splitlines() if line.startswith(f"| {case} |")]
        assert len(rows) == 4  # timings and compile/correctness, per dtype
        assert not any("error" in row or "!" in row or "skipped" in row for row in rows)
    for name in ("gradcomp indexed", "gradcomp unrolled", "JAX dense pairs"):
        assert f"| {name} |" in table

    assert results["disagreements"] == []
    runs = {(r["case"], r["system"], r["dtype"]): r for r in results["runs"]}
    expected = {(c, s, d) for c in CASES for s in SYSTEMS for d in DTYPES}
    expected |= {("lj48", "indexed", "float64"), ("lj48", "unrolled", "float64"),
                 ("memory", "gradcomp", "float64"), ("memory", "jax", "float64")}
    assert set(runs) == expected
    for (case, system, dtype), run in runs.items():
        assert "error" not in run and "skipped" not in run, run
        assert run["grad_ms"] > 0 and run["cold_s"] > 0 and run["peak_rss_mb"] > 0
        assert run["result_dtype"] == dtype
        assert run["foreign_modules"] == []  # each system alone in its process
        if case in CASES:
            assert run["value_ms"] > 0 and len(run["grad_samples_ms"]) == 1
        if system in ("gradcomp", "indexed", "unrolled"):
            assert run["compile_s"] > 0
        if system not in ("gradcomp", "indexed"):  # the references: gradcomp, and the indexed kernel for lj48
            assert run["grad_diff"] <= (1e-8 if dtype == "float64" else 1e-3)
            if case in CASES:
                assert run["value_diff"] <= (1e-8 if dtype == "float64" else 1e-3)
