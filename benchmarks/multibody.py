"""The n-link pendulum on a cart (examples/n_link_pendulum.py): gradcomp's right-hand side x' = [u; M⁻¹F]
with ``gc.solve`` inside, against ``sympy.lambdify`` + ``numpy.linalg.solve`` and PyDy's Cython backend.

    python benchmarks/multibody.py [--links 10 20] [--systems gradcomp lambdify pydy] [--out PATH]

Each (links, system) runs in a fresh process, one after another.  Every process builds the model with
Kane's method first (timed apart: the user's SymPy, the same for every system), then times:

  compile     gradcomp: ``gc.compile`` with an empty cache plus the first right-hand side; then the first
              Jacobian (derived and compiled on first call).  lambdify: ``lambdify(cse=True)`` of M and
              F.  PyDy: ``generate_ode_function(generator="cython")`` (a C compiler builds it).
  rhs         one point, µs per call (best of 5 rounds).
  Jacobian    ∂x'/∂x at one point, µs (gradcomp only: the others have no derivative of M⁻¹F).
  batch       right-hand sides of 100 000 points (10 000 beyond 20 links), Mpts/s: gradcomp's batch call;
              a Python loop of single points for the others, which have no batch form.

PyDy is an optional benchmark dependency (``pip install pydy cython`` and a C compiler); a system
that cannot run is reported with its error.  Every process checks its right-hand side against
gradcomp's at one point.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.environment import cpu_model  # noqa: E402

SYSTEMS = {"gradcomp": "gradcomp (gc.solve)", "lambdify": "lambdify(cse=True) + numpy.linalg.solve",
           "pydy": "PyDy, Cython backend"}


def _example():
    spec = importlib.util.spec_from_file_location("n_link_pendulum", REPO_ROOT / "examples" / "n_link_pendulum.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def per_call(function, *args, repeat: int) -> float:
    function(*args)
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(repeat):
            function(*args)
        best = min(best, (time.perf_counter() - started) / repeat)
    return best


def probe(system: str, links: int) -> dict:
    """In the child: build, compile, time one system."""
    import numpy as np

    pendulum = _example()
    started = time.perf_counter()
    model = kane, state, force, parameters = pendulum.kanes_method(links)
    mass_matrix, forcing = kane.mass_matrix, kane.forcing
    result = {"kane_s": time.perf_counter() - started}
    from gradcomp.spec import postorder
    result["model_nodes"] = sum(1 for _ in postorder([*mass_matrix, *forcing]))  # distinct nodes of M and F
    p = pendulum.parameters(links)
    rng = np.random.default_rng(0)
    states = 2 * (links + 1)
    x = pendulum.upright(links) + 0.1 * rng.standard_normal(states)
    points = 100_000 if links <= 20 else 10_000
    batch = x + 0.01 * rng.standard_normal((points, states))
    started = time.perf_counter()
    if system == "gradcomp":
        rhs = pendulum.right_hand_side(links, cache=tempfile.mkdtemp(prefix="gc-multibody-"), model=model)
        rhs(x, 0.0, p)
        result["compile_s"] = time.perf_counter() - started
        started = time.perf_counter()
        rhs.jacobian(x, 0.0, p)
        result["jacobian_compile_s"] = time.perf_counter() - started
        result["rhs_us"] = per_call(rhs, x, 0.0, p, repeat=2000) * 1e6
        result["jacobian_us"] = per_call(rhs.jacobian, x, 0.0, p, repeat=1000) * 1e6
        forces = np.zeros(points)
        result["batch_mpts"] = points / per_call(rhs, batch, forces, p, repeat=3) / 1e6
        result["rhs"] = rhs(x, 0.0, p).tolist()
        result["ops"] = {name: record.ops for name, record in rhs._meta.methods.items()}
        return result
    if system == "lambdify":
        import sympy as sp
        m_function = sp.lambdify([state, force, parameters], mass_matrix, cse=True)
        f_function = sp.lambdify([state, force, parameters], forcing, cse=True)
        speeds = links + 1

        def rhs(y, f, params):
            accelerations = np.linalg.solve(m_function(y, f, params), f_function(y, f, params))
            return np.concatenate([y[speeds:], accelerations.ravel()])
    elif system == "pydy":
        from pydy.codegen.ode_function_generators import generate_ode_function
        function = generate_ode_function(kane.forcing_full, state[:links + 1], state[links + 1:], parameters,
                                         mass_matrix=kane.mass_matrix_full, specifieds=[force], generator="cython")

        def rhs(y, f, params):
            return function(y, 0.0, np.array([f]), params)
    else:
        raise ValueError(system)
    rhs(x, 0.0, p)
    result["compile_s"] = time.perf_counter() - started
    result["rhs_us"] = per_call(rhs, x, 0.0, p, repeat=2000) * 1e6
    loop_points = batch[:min(points, 20_000)]

    def loop():
        for row in loop_points:
            rhs(row, 0.0, p)
    result["batch_mpts"] = len(loop_points) / per_call(loop, repeat=1) / 1e6
    result["rhs"] = np.asarray(rhs(x, 0.0, p)).ravel().tolist()
    return result


def run(systems, link_counts, timeout: float) -> dict:
    results = {}
    for links in link_counts:
        for system in systems:
            environment = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
            command = [sys.executable, str(Path(__file__).resolve()), "--probe", system, str(links)]
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment)
                line = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
                result = json.loads(line) if done.returncode == 0 and line else {
                    "error": (done.stderr.strip().splitlines() or ["no output"])[-1][:200]}
            except subprocess.TimeoutExpired:
                result = {"error": f"over {timeout:.0f} s"}
            results[f"{links}/{system}"] = result
            print(f"{links:3d} links {system:9s} {_summary(result)}", flush=True)
    return results


def _summary(result: dict) -> str:
    if "error" in result:
        return "error: " + result["error"]
    return (f"compile {result['compile_s']:.2f} s, rhs {result['rhs_us']:.2f} µs"
            + (f", Jacobian {result['jacobian_us']:.2f} µs" if "jacobian_us" in result else "")
            + f", batch {result['batch_mpts']:.3g} Mpts/s")


def render(results: dict, systems, link_counts) -> str:
    import numpy as np

    def cell(value, form):
        return form.format(value) if value is not None else "–"

    lines = ["# Multibody: the n-link pendulum on a cart, x' = [u; M⁻¹F]", "",
             f"Machine: {cpu_model()}, {os.cpu_count()} cores. Each (links, system) in a fresh process; "
             f"{datetime.datetime.now(datetime.UTC):%Y-%m-%dT%H:%M}Z. Kane's method (SymPy, the same "
             "for every system) is timed apart. gradcomp's compile: `gc.compile` into an empty cache plus the "
             "first right-hand side; its Jacobian's: derived and compiled on first call. The others have no "
             "batch form: their batch is a Python loop of single points.", "",
             "| links | system | Kane (s) | compile rhs (s) | compile Jacobian (s) | rhs (µs) | Jacobian (µs) "
             "| batch (Mpts/s) | max diff from gradcomp |", "|---|---|---|---|---|---|---|---|---|"]
    for links in link_counts:
        reference = results.get(f"{links}/gradcomp", {}).get("rhs")
        for system in systems:
            r = results[f"{links}/{system}"]
            if "error" in r:
                lines.append(f"| {links} | {SYSTEMS[system]} | – | – | – | – | – | – | {r['error']} |")
                continue
            diff = (f"{np.abs(np.subtract(r['rhs'], reference)).max():.1e}"
                    if reference is not None and len(reference) == len(r["rhs"]) else "–")
            lines.append(f"| {links} | {SYSTEMS[system]} | {r['kane_s']:.2f} | {r['compile_s']:.2f} | "
                         f"{cell(r.get('jacobian_compile_s'), '{:.2f}')} | {r['rhs_us']:.2f} | "
                         f"{cell(r.get('jacobian_us'), '{:.2f}')} | {r['batch_mpts']:.3g} | {diff} |")
    ops = [f"{links} links: M and F {results[f'{links}/gradcomp'].get('model_nodes', '?')} DAG nodes; "
           + ", ".join(f"{k} {v}" for k, v in results[f"{links}/gradcomp"]["ops"].items())
           for links in link_counts if "ops" in results.get(f"{links}/gradcomp", {})]
    if ops:
        lines += ["", "gradcomp's operations per point: " + "; ".join(ops) + "."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--links", nargs="+", type=int, default=[10, 20])
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("multibody.md"))
    parser.add_argument("--probe", nargs=2, metavar=("SYSTEM", "LINKS"), help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.probe:
        print(json.dumps(probe(options.probe[0], int(options.probe[1]))))
        return
    results = run(options.systems, options.links, options.timeout)
    options.out.write_text(render(results, options.systems, options.links))
    options.out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    print(options.out.read_text())


if __name__ == "__main__":
    main()
