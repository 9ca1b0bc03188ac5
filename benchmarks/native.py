"""Native libraries against the Numba kernel they come from: build time, size, cold start, latency, batches.

``python benchmarks/native.py [--cases seed fk6 lj6 lj48] [--out benchmarks/native.md]``: per case, in a
cache directory of its own, each step in a fresh process:

* the Numba kernel's ``forward`` and ``vjp`` point and serial drivers compiled (``precompile``, no parallel
  driver), against ``export_native(k, methods=["value", "vjp"])`` from the same cached kernel (derivation
  done: both start from the generated module); the library's size;
* a cold process: from the first line of the script to the first single-point VJP, through
  ``gradcomp.native.load`` and through ``gc.load`` of the cached (already compiled) kernel; the
  interpreter's own start and NumPy's import are outside both and reported apart;
* single-point VJP latency (the best of 20 laps of 1 000 calls: other tenants of a shared machine only
  ever add time) and a batch of 10^5 VJPs on all cores, each system in
  its own process.

``lj48`` is the suite's Lennard-Jones energy over 48 atoms (1 128 pairs), unrolled.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.environment import cpu_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CASES = {"seed": ("seed", 3), "fk6": ("fk6", 6), "lj6": ("lj", 18), "lj48": ("lj48", 144)}

DEFINE = """
import sys, time
sys.path.insert(0, {root!r})
import numpy as np, sympy as sp, gradcomp as gc
from benchmarks import suite
case = {case!r}
function, n_in = (lambda x, m: suite.lj(x, m, 48), 144) if case == "lj48" else suite.CASES[case][:2]
x = sp.symbols(f"x0:{{n_in}}")
outputs = function(list(x), sp)
k = gc.compile(outputs if len(outputs) > 1 else outputs[0], [list(x)], name=case.replace("-", "_"), cache={cache!r})
"""

PROBES = {
    "compile": DEFINE + """
started = time.perf_counter()
k.precompile(["forward", "vjp"], parallel=False)
print(json.dumps({{"seconds": time.perf_counter() - started}}))
""",
    "export": DEFINE + """
k._import()
started = time.perf_counter()
done = gc.export_native(k, {out!r}, methods=["value", "vjp"])
print(json.dumps({{"seconds": time.perf_counter() - started, "bytes": done.library.stat().st_size}}))
""",
    "cold native": """
import time
started = time.perf_counter()
import numpy as np
numpy_s = time.perf_counter() - started
from gradcomp.native import load
lib = load({library!r})
x = np.ones(lib.arg_shapes[0]) + 0.5 * np.arange(lib.arg_shapes[0][0])
g = lib.vjp(x, np.ones(lib.out_shape))
print(json.dumps({{"seconds": time.perf_counter() - started - numpy_s, "numpy_s": numpy_s}}))
""",
    "cold numba": """
import time
started = time.perf_counter()
import numpy as np
numpy_s = time.perf_counter() - started
import gradcomp as gc
k = gc.load({name!r}, cache={cache!r})
x = np.ones(k.arg_shapes[0]) + 0.5 * np.arange(k.arg_shapes[0][0])
g = k.vjp(x, np.ones(k.out_shape))
print(json.dumps({{"seconds": time.perf_counter() - started - numpy_s, "numpy_s": numpy_s}}))
""",
    "latency": """
import time, statistics
import numpy as np
{load}
x = np.ones(k.arg_shapes[0]) + 0.5 * np.arange(k.arg_shapes[0][0])
v = np.ones(k.out_shape)
for _ in range(2000):
    k.vjp(x, v)
laps = []
for _ in range(20):
    started = time.perf_counter()
    for _ in range(1000):
        k.vjp(x, v)
    laps.append((time.perf_counter() - started) / 1000)
xs = np.random.default_rng(0).normal(size=(100_000, k.arg_shapes[0][0])) * 0.1 + x
vs = np.ones((100_000, *k.out_shape))
k.vjp(xs, vs)
batch = []
for _ in range(5):
    started = time.perf_counter()
    k.vjp(xs, vs)
    batch.append(time.perf_counter() - started)
print(json.dumps({{"point_us": min(laps) * 1e6, "mpts": 0.1 / min(batch)}}))
""",
}
ROUNDS = 3
"""Latency processes per system, alternating; the best of each is reported."""
LOAD = {"native": "from gradcomp.native import load\nk = load({library!r})",
        "numba": "import gradcomp as gc\nk = gc.load({name!r}, cache={cache!r})"}


def run(script: str) -> dict:
    # Bytecode as an installed package has it (pip compiles it): without it every cold start compiles gradcomp's
    # modules from source, 10-20 ms of the native one.
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    done = subprocess.run([sys.executable, "-c", "import json\n" + textwrap.dedent(script)], capture_output=True,
                          text=True, timeout=1800, env=environment)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(case: str) -> dict:
    with tempfile.TemporaryDirectory() as work:
        cache, out = f"{work}/cache", f"{work}/lib"
        name = case.replace("-", "_")
        fields = dict(root=str(ROOT), case=case, cache=cache, out=out, name=name, library=f"{out}/lib{name}.so")
        row = {"compile": run(PROBES["compile"].format(**fields))["seconds"]}
        export = run(PROBES["export"].format(**fields))
        row.update(export_s=export["seconds"], bytes=export["bytes"])
        run("import gradcomp.native, gradcomp.build\nprint('{}')")  # their bytecode written, as pip does
        for system in ("native", "numba"):
            cold = run(PROBES[f"cold {system}"].format(**fields))
            row[f"cold_{system}"] = cold["seconds"]
            row["numpy_s"] = cold["numpy_s"]
        for _ in range(ROUNDS):  # alternating, so that a noisy spell of the machine hits both systems
            for system in ("native", "numba"):
                fast = run(PROBES["latency"].format(load=LOAD[system].format(**fields)))
                row[f"point_{system}"] = min(row.get(f"point_{system}", float("inf")), fast["point_us"])
                row[f"mpts_{system}"] = max(row.get(f"mpts_{system}", 0.0), fast["mpts"])
        print(case, json.dumps(row), flush=True)
        return row


def render(rows: dict) -> str:
    lines = [f"# Native libraries beside the Numba kernel (`benchmarks/native.py`), {cpu_model()}, "
             f"{os.cpu_count()} cores", "",
             "Methods value + vjp. Build: the Numba point and serial drivers compiled from the generated module "
             "against `export_native` from the same module (object + link). Cold: a fresh process from the "
             "script's first line to the first single-point VJP (gradcomp's bytecode compiled, as pip installs "
             "it), NumPy's import excluded "
             f"({min(r['numpy_s'] for r in rows.values()) * 1e3:.0f} ms here); the Numba kernel loads from its "
             "cache, compiled. Point: single-point `vjp`, best of 20 laps of 1 000 calls in each of 3 processes per "
             "system (alternating); batch: 10^5 points, all cores, the best of those processes.", "",
             "| case | Numba drivers compile s | export s | library KiB | cold native ms | cold Numba ms "
             "| point native µs | point Numba µs | batch native Mpts/s | batch Numba Mpts/s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for case, r in rows.items():
        lines.append(f"| {case} | {r['compile']:.2f} | {r['export_s']:.2f} | {r['bytes'] / 1024:.0f} | "
                     f"{r['cold_native'] * 1e3:.1f} | {r['cold_numba'] * 1e3:.0f} | {r['point_native']:.2f} | "
                     f"{r['point_numba']:.2f} | {r['mpts_native']:.2f} | {r['mpts_numba']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--out", default=None)
    arguments = parser.parse_args()
    rows = {case: measure(case) for case in arguments.cases}
    text = render(rows)
    print(text)
    if arguments.out:
        Path(arguments.out).write_text(text)
        Path(arguments.out).with_suffix(".json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
