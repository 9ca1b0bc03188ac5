"""Sparse Jacobians and Hessians of indexed kernels: gradcomp's exact values against SciPy's coloured finite
differences on the same compiled right-hand side.

    python -m benchmarks.sparse_jacobians [--quick] [--out DIR] [--repeats 7] [--threads 2]

Writes ``sparse_jacobians.md`` and ``sparse_jacobians.json`` into ``--out`` (default: this folder; with
``--quick``, a fresh temporary directory).  Jobs, each in a fresh process with an empty gradcomp cache, one at a time:

- ``gray_scott gradcomp``: the periodic 2-D Gray-Scott right-hand side of ``benchmarks.indexed`` on
  2 x 512 x 512 states (``--quick``: 2 x 16 x 16).  *Cold*: ``gc.compile`` to the first
  ``k.jacobian(u, v, sparse=True)`` (pattern and drivers included).  Then, warm: the pattern alone (the
  kernel's kept patterns dropped before each sample), the sparse values, and one right-hand side.
- ``gray_scott scipy-fd``: the same compiled right-hand side differenced by SciPy's
  ``approx_derivative(method="2-point", sparsity=(pattern, groups))``, the pattern from
  ``k.jacobian_sparsity`` and the colouring (``group_columns``) timed on its own.
- ``gray_scott jax-coloured``: JAX has no sparse Jacobian (jax#1032), so the same colouring by hand: one
  ``jax.jvp`` of the vectorized right-hand side (``benchmarks.indexed``'s ``jnp.roll`` formulation) per
  colour, ``vmap``-ed over the seeds and jitted together with the gather of each nonzero from its colour's
  column (seeds and indices passed as arguments, so that XLA cannot fold them).  *Cold*: ``jit`` to the
  first values, the pattern and colouring (from ``k.jacobian_sparsity``) before the clock.
- ``xy_edges gradcomp``: the XY edge energy of ``benchmarks.indexed`` (1e6 nodes, 4e6 random edges;
  ``--quick``: 1e3 and 4e3): cold first ``k.hessian(x, w, e, sparse=True)``, then warm the pattern, the sparse
  Hessian's values and one gradient.

Warm timings are the median of ``--repeats`` samples, each looping the call for at least ``--sample-seconds``.
The parent compares the finite differences with the exact values (normwise, reported, not a failure: they
are expected to agree to 6-8 digits) and exits non-zero if a worker failed.
"""

from __future__ import annotations

import argparse
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

from benchmarks import indexed  # noqa: E402
from benchmarks.environment import describe  # noqa: E402
from benchmarks.timing import median  # noqa: E402

SIZES, number, samples_ms, size_label = indexed.SIZES, indexed.number, indexed.samples_ms, indexed.size_label

JOBS = [("gray_scott", "gradcomp"), ("gray_scott", "scipy-fd"), ("gray_scott", "jax-coloured"),
        ("xy_edges", "gradcomp")]


def work(case: str, system: str, options) -> dict:
    """One process: build, the cold first sparse derivative, then the warm samples; saves the values."""
    import numpy as np

    import gradcomp as gc
    from benchmarks.isolated import _host_cpu
    size = SIZES["quick" if options.quick else "full"][case]
    arrays, _ = indexed.make_inputs(case, size, "float64")
    outputs, args, wrt = indexed.gradcomp_model(case)
    facts: dict = {"case": case, "system": system, "size_label": size_label(case, size), **_host_cpu()}
    started = time.perf_counter()
    kernel = gc.compile(outputs, args, wrt=wrt)
    facts["compile_s"] = time.perf_counter() - started
    repeats, seconds = options.repeats, options.sample_seconds

    def fresh_pattern(method):
        def call():
            kernel._patterns.clear()  # a benchmark's look inside: the pattern is kept per sizes and index data
            return method(*arrays)
        return call

    if case == "gray_scott" and system == "gradcomp":
        jacobian = kernel.jacobian(*arrays, sparse=True)
        facts["cold_s"] = time.perf_counter() - started
        matrix = jacobian[0] if isinstance(jacobian, (list, tuple)) else jacobian
        facts.update(nnz=int(sum(block.nnz for block in (jacobian if isinstance(jacobian, (list, tuple))
                                                          else [jacobian]))),
                     shape=list(matrix.shape))
        kernel.precompile()  # from here on each stage's next call starts its parallel twin's compile
        for _ in range(2):
            kernel(*arrays)
            kernel.jacobian(*arrays, sparse=True)
        indexed.finish_background(kernel)
        facts["parallel_ready_s"] = time.perf_counter() - started
        facts["pattern_ms"] = median(samples_ms(fresh_pattern(kernel.jacobian_sparsity), repeats, seconds))
        facts["values_ms"] = median(samples_ms(lambda: kernel.jacobian(*arrays, sparse=True), repeats, seconds))
        facts["rhs_ms"] = median(samples_ms(lambda: kernel(*arrays), repeats, seconds))
        blocks = jacobian if isinstance(jacobian, (list, tuple)) else [jacobian]
        import scipy.sparse as sps
        whole = sps.csr_matrix(sps.hstack(blocks))
        sps.save_npz(Path(options.save) / f"{case}-{system}.npz", whole)
    elif case == "gray_scott" and system == "jax-coloured":
        facts.update(jax_coloured(kernel, arrays, options, repeats, seconds))
    elif case == "gray_scott":
        import scipy.sparse as sps
        from scipy.optimize._numdiff import approx_derivative, group_columns
        u, v = arrays
        pattern = sps.hstack(kernel.jacobian_sparsity(*arrays)).tocsr()
        began = time.perf_counter()
        groups = group_columns(pattern)
        facts.update(colouring_s=time.perf_counter() - began, colours=int(groups.max()) + 1)
        half = u.size
        kernel.precompile()  # the right-hand side's parallel twins start compiling at its first call
        def rhs(flat):
            return kernel(flat[:half].reshape(u.shape), flat[half:].reshape(v.shape)).ravel()

        point = np.concatenate([u.ravel(), v.ravel()])
        first = approx_derivative(rhs, point, method="2-point", sparsity=(pattern, groups))
        facts["cold_s"] = time.perf_counter() - started
        indexed.finish_background(kernel)
        facts["values_ms"] = median(samples_ms(
            lambda: approx_derivative(rhs, point, method="2-point", sparsity=(pattern, groups)), repeats, seconds))
        facts["rhs_ms"] = median(samples_ms(lambda: rhs(point), repeats, seconds))
        sps.save_npz(Path(options.save) / f"{case}-{system}.npz", sps.csr_matrix(first))
    else:
        hessian = kernel.hessian(*arrays, sparse=True)
        facts["cold_s"] = time.perf_counter() - started
        facts.update(nnz=int(hessian.nnz), shape=list(hessian.shape))
        kernel.precompile()
        for _ in range(2):
            kernel.grad(*arrays)
            kernel.hessian(*arrays, sparse=True)
        indexed.finish_background(kernel)
        facts["parallel_ready_s"] = time.perf_counter() - started
        facts["pattern_ms"] = median(samples_ms(fresh_pattern(lambda *xs: kernel.hessian(*xs, sparse=True)),
                                                repeats, seconds))
        facts["values_ms"] = median(samples_ms(lambda: kernel.hessian(*arrays, sparse=True), repeats, seconds))
        facts["grad_ms"] = median(samples_ms(lambda: kernel.grad(*arrays), repeats, seconds))
        facts["pattern_ms"] -= facts["values_ms"]  # the fresh-pattern call also computed the values
    import numba
    facts["threads"] = numba.get_num_threads()
    return facts


def jax_coloured(kernel, arrays, options, repeats: int, seconds: float) -> dict:
    """The Gray-Scott Jacobian's values in CSR order from JAX: a jvp per colour, gathered per nonzero."""
    import numpy as np
    import scipy.sparse as sps
    from scipy.optimize._numdiff import group_columns
    pattern = sps.csr_matrix(sps.hstack(kernel.jacobian_sparsity(*arrays)))
    groups = group_columns(pattern)
    colours = int(groups.max()) + 1
    rows = np.repeat(np.arange(pattern.shape[0]), np.diff(pattern.indptr))
    import jax
    jax.config.update("jax_enable_x64", True)
    f = indexed.jax_function("gray_scott")
    u, v = arrays
    half = u.size

    def rhs(flat):
        return f(flat[:half].reshape(u.shape), flat[half:].reshape(v.shape)).ravel()

    @jax.jit
    def values(point, seeds, colour, row):
        compressed = jax.vmap(lambda seed: jax.jvp(rhs, (point,), (seed,))[1])(seeds)  # (colours, rows)
        return compressed[colour, row]

    seeds = np.zeros((colours, pattern.shape[1]))
    seeds[groups, np.arange(pattern.shape[1])] = 1.0
    device = [jax.device_put(a) for a in (np.concatenate([u.ravel(), v.ravel()]), seeds,
                                          groups[pattern.indices].astype(np.int64), rows)]
    started = time.perf_counter()
    first = np.asarray(values(*device).block_until_ready())
    cold = time.perf_counter() - started
    rhs_jit = jax.jit(rhs)
    rhs_jit(device[0]).block_until_ready()
    sps.save_npz(Path(options.save) / "gray_scott-jax-coloured.npz",
                 sps.csr_matrix((first, pattern.indices, pattern.indptr), shape=pattern.shape))
    return {"cold_s": cold, "colours": colours, "nnz": int(pattern.nnz),
            "values_ms": median(samples_ms(lambda: values(*device).block_until_ready(), repeats, seconds)),
            "rhs_ms": median(samples_ms(lambda: rhs_jit(device[0]).block_until_ready(), repeats, seconds)),
            "jax": jax.__version__}


def run_worker(case: str, system: str, options, save: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="gradcomp-sparse-") as scratch:
        env = {**os.environ, "GRADCOMP_CACHE_DIR": str(Path(scratch) / "cache"),
               "NUMBA_NUM_THREADS": str(options.threads), "OMP_NUM_THREADS": str(options.threads),
               "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
        command = [sys.executable, "-m", "benchmarks.sparse_jacobians", "--worker", case, system, "--save", save,
                   "--repeats", str(options.repeats), "--sample-seconds", str(options.sample_seconds),
                   *(["--quick"] if options.quick else [])]
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO_ROOT,
                              timeout=options.timeout)
        lines = done.stdout.strip().splitlines()
        if done.returncode or not lines:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            return {"case": case, "system": system, "error": f"exit {done.returncode}: {last}"}
        return json.loads(lines[-1])


def render(runs: list[dict], options, total_s: float, environment: dict, fd_difference, jax_difference=None) -> str:
    def find(case, system):
        return next((r for r in runs if r["case"] == case and r["system"] == system), {})

    exact, fd, hess = find("gray_scott", "gradcomp"), find("gray_scott", "scipy-fd"), find("xy_edges", "gradcomp")
    lines = ["# Sparse Jacobians and Hessians of indexed kernels", "",
             f"Machine: {environment['cpu']} (LLVM: {exact.get('cpu_name', '-')}, ISA {exact.get('isa', '-')}), "
             f"{environment['cores']} cores; {options.threads} Numba threads. Date {environment['date']}; git "
             f"{environment['git']}; " + ", ".join(f"{p} {environment['versions'][p]}"
                                                  for p in ("numba", "numpy", "scipy") if p in environment["versions"])
             + f". Whole run: {total_s:.0f} s" + (" (--quick: tiny sizes, timings meaningless)." if options.quick
                                                    else "."), "",
             "Each job in a fresh process with an empty cache; *cold* is `gc.compile` to the first sparse "
             "result (first calls run serial drivers while the parallel ones compile in the background; the "
             "process waits for those before timing); warm times are medians of " f"{options.repeats} samples "
             f"of at least {options.sample_seconds} s each. Jacobian / RHS: over the right-hand side of the same "
             "process.", "",
             f"## Gray-Scott right-hand side, {exact.get('size_label', '-')} per field", "",
             "| system | nnz | cold s | pattern ms | Jacobian ms | one RHS ms | Jacobian / RHS | colours |",
             "|---|---|---|---|---|---|---|---|"]
    jx = find("gray_scott", "jax-coloured")
    for name, run in (("gradcomp exact sparse", exact), ("SciPy 2-point FD + pattern", fd),
                      ("JAX jvp per colour (same colouring)", jx)):
        if "error" in run:
            lines.append(f"| {name} | error: {run['error']} | | | | | | |")
            continue
        ratio = run["values_ms"] / run["rhs_ms"] if run.get("rhs_ms") else None
        lines.append(f"| {name} | {run.get('nnz', exact.get('nnz', '-'))} | {number(run.get('cold_s'))} | "
                     f"{number(run.get('pattern_ms'))} | {number(run.get('values_ms'))} | "
                     f"{number(run.get('rhs_ms'))} | {number(ratio)} | {run.get('colours', '-')} |")
    if "values_ms" in exact and "values_ms" in fd:
        lines += ["", f"Exact values {fd['values_ms'] / exact['values_ms']:.1f}x faster than the finite "
                  f"differences (colouring {number(fd.get('colouring_s'))} s on top, once per pattern); "
                  f"max |FD - exact| / max |exact| = {number(fd_difference, '.1e')}."]
    if "values_ms" in exact and "values_ms" in jx:
        lines += ["", f"Exact values {jx['values_ms'] / exact['values_ms']:.1f}x faster than JAX's coloured "
                  f"forward mode (JAX {jx.get('jax', '-')}, float64, its own RHS {number(jx.get('rhs_ms'))} ms); "
                  f"max |JAX - gradcomp| / max |gradcomp| = {number(jax_difference, '.1e')}."]
    lines += ["", f"## XY edge energy, sparse Hessian ({hess.get('size_label', '-')})", "",
              "| nnz | cold s | pattern ms | Hessian ms | one gradient ms | Hessian / gradient |",
              "|---|---|---|---|---|---|"]
    if "error" in hess:
        lines.append(f"| error: {hess['error']} | | | | | |")
    elif hess:
        lines.append(f"| {hess['nnz']} | {number(hess['cold_s'])} | {number(hess['pattern_ms'])} | "
                     f"{number(hess['values_ms'])} | {number(hess['grad_ms'])} | "
                     f"{number(hess['values_ms'] / hess['grad_ms'])} |")
    lines += ["", "Pattern: the warm build with the kernel's kept patterns dropped (the Hessian's: the fresh call "
              "minus a values call)."]
    return "\n".join(lines) + "\n"


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and 1 repeat: a smoke run")
    parser.add_argument("--out", help="directory for sparse_jacobians.md and sparse_jacobians.json")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--sample-seconds", type=float)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--worker", nargs=2, metavar=("CASE", "SYSTEM"), help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    options.repeats = options.repeats or (1 if options.quick else 7)
    options.sample_seconds = options.sample_seconds if options.sample_seconds is not None else (
        0.0 if options.quick else 0.2)
    return options


def main(argv=None) -> None:
    options = parse(argv)
    if options.worker:
        print(json.dumps(work(*options.worker, options)))
        return
    import scipy.sparse as sps
    began = time.perf_counter()
    out_dir = indexed.report_dir(options, "sparse")
    environment = describe(options.threads)
    runs = []
    with tempfile.TemporaryDirectory(prefix="gradcomp-sparse-results-") as save:
        for case, system in JOBS:
            runs.append(run_worker(case, system, options, save))
            print(f"{case:>10} {system:>9}: {runs[-1]}", flush=True)
        differences = {}
        for other in ("scipy-fd", "jax-coloured"):
            files = [Path(save) / f"gray_scott-{s}.npz" for s in ("gradcomp", other)]
            if all(f.exists() for f in files):
                exact, found = (sps.load_npz(f) for f in files)
                differences[other] = float(abs(found - exact).max() / abs(exact).max())
        difference, jax_difference = differences.get("scipy-fd"), differences.get("jax-coloured")
    total_s = time.perf_counter() - began
    (out_dir / "sparse_jacobians.json").write_text(json.dumps(
        {"options": {k: v for k, v in vars(options).items() if k not in ("worker", "save")},
         "environment": environment, "total_s": total_s, "fd_difference": difference,
         "jax_difference": jax_difference, "runs": runs}, indent=1))
    (out_dir / "sparse_jacobians.md").write_text(render(runs, options, total_s, environment, difference,
                                                                 jax_difference))
    print((out_dir / "sparse_jacobians.md").read_text())
    errors = [f"{r['case']} {r['system']}: {r['error']}" for r in runs if "error" in r]
    if errors:
        sys.exit("ERRORS in workers:\n" + "\n".join(errors))


if __name__ == "__main__":
    main()
