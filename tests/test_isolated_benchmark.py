"""Smoke test of benchmarks/isolated.py on one tiny configuration: the report and the raw JSON come out with
plausible fields.  No timing assertions: the figures of 2,000 points and 20 ms samples mean nothing; the test is
there so the script does not rot while gradcomp's API changes."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "isolated.py"


def test_isolated_benchmark_tiny_run(tmp_path):
    out, raw = tmp_path / "isolated.md", tmp_path / "isolated.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--cases", "seed", "--systems", "gradcomp", "ref", "--dtypes", "float64",
         "float32", "--points", "2000", "--samples", "2", "--sample-seconds", "0.02", "--out", str(out),
         "--json", str(raw)],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr

    table = out.read_text()
    assert "| case | gradcomp f64 | naive Numba f64 | gradcomp f32 | naive Numba f32 |" in table
    seed_rows = [line for line in table.splitlines() if line.startswith("| seed |")]
    assert len(seed_rows) == 2  # throughput and correctness
    assert "error" not in seed_rows[0] and "!" not in seed_rows[0]
    assert "Machine:" in table and "LANES" in table

    runs = json.loads(raw.read_text())["runs"]
    assert sorted((r["system"], r["dtype"]) for r in runs) == [
        ("gradcomp", "float32"), ("gradcomp", "float64"), ("ref", "float32"), ("ref", "float64")]
    for run in runs:
        assert run["case"] == "seed" and run["points"] == 2000
        assert run["mpts"] > 0 and len(run["samples"]) == 2
        assert run["result_dtype"] == run["dtype"]
        if run["system"] == "gradcomp":
            assert isinstance(run["lanes"], int) or run["lanes"] == "-"
            assert run["isa"] and run["cpu_name"]
        assert run["foreign_modules"] == []  # neither torch nor JAX in gradcomp's process
        assert "vjp" not in run  # the checked rows are compared, not kept
        assert run["max_rel_diff"] < (1e-9 if run["dtype"] == "float64" else 1e-4)
        assert run["flagged"] is False
