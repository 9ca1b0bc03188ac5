"""A 2-D Brusselator reaction-diffusion system on a 256×256 grid: gradcomp's exact sparse Jacobian, and BDF.

    u' = A + u² v - (B + 1) u + α Δu
    v' = B u - u² v           + α Δv

on an n×n periodic grid (2n² states; n = 256: 131 072), Δ the five-point Laplacian, written once
in SymPy's indexed notation: the state is an ``IndexedBase`` ``w`` of shape (2, n, n) with ``n`` a
size symbol, neighbours wrap with ``Mod``, and two equations (u's and v's) define the output.  One
kernel serves every grid size and compiles in the time of its body.  Each state depends on five
others and itself, so the Jacobian has 6 nonzeros per row.  At the grid size ``--n`` (256) it
times one right-hand side, one exact sparse Jacobian and SciPy's coloured finite differences on
the same pattern; then it integrates with two ways of giving ``solve_ivp(method="BDF")`` its
Jacobian, on the grid ``--bdf-n`` (64 by default: at 256×256 SuperLU's factorizations of the
2-D grid take 12 s each on two cores and decide the solve, not the Jacobian):

  gradcomp sparse    jac = rhs.jacobian(w, sparse=True): the exact nonzeros, a CSR array from one
                     pass over the grid (BDF then factorizes with sparse LU)
  SciPy FD + pattern finite differences grouped by ``jac_sparsity=rhs.jacobian_sparsity(w)``

The right-hand side is the same compiled kernel in all of them, one kernel for every grid.
Prints per run the wall time, nfev, the right-hand side calls counted, njev and nlu; saves
brusselator.png (u at the end) when matplotlib is installed.  ``--small`` uses 32×32 for both.
"""

import argparse
import time
from pathlib import Path

import numpy as np
import sympy as sp
from scipy.integrate import solve_ivp

import gradcomp as gc

A, B, ALPHA = 1.0, 3.4, 0.002


def brusselator():
    """The right-hand side of the (2, n, n) state as two indexed equations, u's and v's."""
    n = sp.Symbol("n", integer=True, positive=True)
    w = sp.IndexedBase("w", shape=(2, n, n))
    dw = sp.IndexedBase("dw", shape=(2, n, n))
    i, j = sp.Idx("i", n), sp.Idx("j", n)
    scale = ALPHA * n**2  # α / h² on the unit square

    def laplacian(field):
        return (w[field, sp.Mod(i - 1, n), j] + w[field, sp.Mod(i + 1, n), j] + w[field, i, sp.Mod(j - 1, n)]
                + w[field, i, sp.Mod(j + 1, n)] - 4 * w[field, i, j])

    u, v = w[0, i, j], w[1, i, j]
    return [sp.Eq(dw[0, i, j], A + u**2 * v - (B + 1) * u + scale * laplacian(0)),
            sp.Eq(dw[1, i, j], B * u - u**2 * v + scale * laplacian(1))], w


def initial_state(n: int) -> np.ndarray:
    x = np.arange(n) / n
    u = 0.5 + np.outer(np.ones(n), 22 * x * (1 - x) ** 1.5)
    v = np.outer(27 * x * (1 - x) ** 1.5, np.ones(n))
    return np.concatenate([u.ravel(), v.ravel()])


def plot(y: np.ndarray, n: int, out_dir: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no picture)")
        return
    figure, axes = plt.subplots(figsize=(4.5, 4))
    image = axes.imshow(y[: n * n].reshape(n, n), origin="lower", extent=(0, 1, 0, 1), cmap="viridis")
    figure.colorbar(image, ax=axes, label="u")
    axes.set(title=f"Brusselator u at the end ({n}×{n} grid)")
    path = out_dir / "brusselator.png"
    figure.savefig(path, dpi=120, bbox_inches="tight")
    print(f"saved {path}")


def best_of(call, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a 32×32 grid for everything")
    parser.add_argument("--n", type=int, default=None, help="grid size of the Jacobian timings (default 256)")
    parser.add_argument("--bdf-n", type=int, default=None, help="grid size of the BDF solves (default 64)")
    parser.add_argument("--t-end", type=float, default=2.0)
    parser.add_argument("--out", type=Path, default=Path("."), help="directory for the PNG")
    options = parser.parse_args()
    n = options.n or (32 if options.small else 256)
    bdf_n = options.bdf_n or (32 if options.small else 64)
    shape = (2, n, n)

    started = time.perf_counter()
    equations, w = brusselator()
    rhs = gc.compile(equations, [w], name="brusselator")
    y0 = initial_state(n)
    rhs(y0.reshape(shape))
    compile_forward = time.perf_counter() - started
    started = time.perf_counter()
    pattern = rhs.jacobian_sparsity(y0.reshape(shape))
    rhs.jacobian(y0.reshape(shape), sparse=True)
    compile_sparse = time.perf_counter() - started
    print(f"compile + first call: right-hand side {compile_forward:.1f} s, sparse Jacobian {compile_sparse:.1f} s "
          f"(one kernel for every n; a later run loads it from the cache)")
    print(f"2-D Brusselator, {n}×{n} grid: {2 * n * n} states, {pattern.nnz} Jacobian nonzeros "
          f"({pattern.nnz / (2 * n * n) ** 2:.1e} of the matrix)")

    def fun(t, y):
        return rhs(y.reshape(shape)).reshape(-1)

    def jacobian(t, y):
        return rhs.jacobian(y.reshape(shape), sparse=True)

    from scipy.optimize._numdiff import approx_derivative, group_columns
    groups = group_columns(pattern)
    exact = jacobian(0.0, y0)
    def finite_differences():
        return approx_derivative(lambda y: fun(0.0, y), y0, sparsity=(pattern, groups))

    error = abs(finite_differences() - exact).max()
    print(f"one right-hand side {1e3 * best_of(lambda: fun(0.0, y0)):.2f} ms; one sparse Jacobian "
          f"{1e3 * best_of(lambda: jacobian(0.0, y0)):.2f} ms; SciPy's finite differences on the pattern "
          f"({groups.max() + 1} colours) {1e3 * best_of(finite_differences):.2f} ms, max |difference| {error:.1e}")

    n, shape, y0 = bdf_n, (2, bdf_n, bdf_n), initial_state(bdf_n)
    pattern = rhs.jacobian_sparsity(y0.reshape(shape))
    calls = {"rhs": 0}

    def counted(t, y):
        calls["rhs"] += 1
        return fun(t, y)

    print(f"BDF on the {n}×{n} grid ({2 * n * n} states) to t = {options.t_end}, rtol 1e-6:")
    runs = {"gradcomp sparse": dict(jac=jacobian), "SciPy FD + pattern": dict(jac_sparsity=pattern)}
    print(f"{'Jacobian':20s} {'time/s':>8s} {'nfev':>6s} {'rhs calls':>10s} {'njev':>5s} {'nlu':>5s}")
    solutions = {}
    for label, how in runs.items():
        calls["rhs"] = 0
        started = time.perf_counter()
        solution = solve_ivp(counted, (0.0, options.t_end), y0, method="BDF", rtol=1e-6, atol=1e-8, **how)
        elapsed = time.perf_counter() - started
        if not solution.success:
            raise RuntimeError(f"solve_ivp failed with {label}: {solution.message}")
        solutions[label] = solution
        print(f"{label:20s} {elapsed:8.2f} {solution.nfev:6d} {calls['rhs']:10d} {solution.njev:5d} {solution.nlu:5d}")
    final = solutions["gradcomp sparse"].y[:, -1]
    difference = max(np.abs(s.y[:, -1] - final).max() for s in solutions.values())
    print(f"the solutions at t = {options.t_end} differ by at most {difference:.1e}")
    options.out.mkdir(parents=True, exist_ok=True)
    plot(final, n, options.out)


if __name__ == "__main__":
    main()
