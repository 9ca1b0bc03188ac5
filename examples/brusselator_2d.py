"""A 2-D Brusselator reaction-diffusion system, solved with SciPy's BDF and gradcomp's sparse Jacobian.

    u' = A + u² v - (B + 1) u + α Δu
    v' = B u - u² v           + α Δv

on an n×n periodic grid (2n² states; n = 24: 1 152), Δ the five-point Laplacian.
Each state depends on five others and itself, so the Jacobian has 6 nonzeros per row.
Three ways to give ``solve_ivp(method="BDF")`` its Jacobian:

  gradcomp sparse    jac = rhs.jacobian(y, sparse=True): only the nonzeros, a CSR array
                     (BDF then factorizes with sparse LU)
  SciPy FD + pattern finite differences grouped by ``jac_sparsity=rhs.jacobian_sparsity()``
  SciPy FD dense     SciPy's default: one right-hand side call per state, dense LU

The right-hand side is the same compiled kernel in all three.  Prints wall time,
nfev (SciPy leaves out the finite-difference calls), the right-hand side calls
counted, njev, nlu and the compile time (the cache makes later runs start at once);
saves brusselator.png (u at the end) when matplotlib is installed.
``--small`` uses a 16×16 grid, ``--n`` any size (n = 32: 2 048 states).
"""

import argparse
import time
from pathlib import Path

import numpy as np
import sympy as sp
from scipy.integrate import solve_ivp

import gradcomp as gc

A, B, ALPHA = 1.0, 3.4, 0.002


def brusselator(u, v, n: int) -> list:
    """The right-hand side as SymPy expressions, u then v, each row-major over the grid."""
    scale = ALPHA * n**2  # α / h² on the unit square

    def laplacian(w, i, j):
        return w[(i - 1) % n][j] + w[(i + 1) % n][j] + w[i][(j - 1) % n] + w[i][(j + 1) % n] - 4 * w[i][j]

    du = [A + u[i][j] ** 2 * v[i][j] - (B + 1) * u[i][j] + scale * laplacian(u, i, j)
          for i in range(n) for j in range(n)]
    dv = [B * u[i][j] - u[i][j] ** 2 * v[i][j] + scale * laplacian(v, i, j) for i in range(n) for j in range(n)]
    return du + dv


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a 16×16 grid instead of 24×24")
    parser.add_argument("--n", type=int, default=None, help="grid size (overrides --small)")
    parser.add_argument("--t-end", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=Path("."), help="directory for the PNG")
    options = parser.parse_args()
    n = options.n or (16 if options.small else 24)

    started = time.perf_counter()
    u = [list(row) for row in np.array(sp.symbols(f"u0:{n * n}")).reshape(n, n)]
    v = [list(row) for row in np.array(sp.symbols(f"v0:{n * n}")).reshape(n, n)]
    rhs = gc.compile(brusselator(u, v, n), [[s for row in u + v for s in row]], name=f"brusselator{n}")
    y0 = initial_state(n)
    rhs(y0)
    compile_forward = time.perf_counter() - started
    started = time.perf_counter()
    pattern = rhs.jacobian_sparsity()
    rhs.jacobian(y0, sparse=True)
    compile_sparse = time.perf_counter() - started
    print(f"compile: right-hand side {compile_forward:.1f} s, sparse Jacobian {compile_sparse:.1f} s "
          f"(a later run loads both from the cache)")
    print(f"2-D Brusselator, {n}×{n} grid: {2 * n * n} states, {pattern.nnz} Jacobian nonzeros "
          f"({pattern.nnz / (2 * n * n) ** 2:.2%} of the matrix); BDF to t = {options.t_end}, rtol 1e-6")

    calls = {"rhs": 0}

    def fun(t, y):
        calls["rhs"] += 1
        return rhs(y)

    runs = {
        "gradcomp sparse": (dict(jac=lambda t, y: rhs.jacobian(y, sparse=True)), compile_forward + compile_sparse),
        "SciPy FD + pattern": (dict(jac_sparsity=pattern), compile_forward),
        "SciPy FD dense": (dict(), compile_forward),
    }
    print(f"{'Jacobian':20s} {'time/s':>8s} {'nfev':>6s} {'rhs calls':>10s} {'njev':>5s} {'nlu':>5s} "
          f"{'compile/s':>10s} {'total/s':>8s}")
    solutions = {}
    for label, (jacobian, compile_time) in runs.items():
        calls["rhs"] = 0
        started = time.perf_counter()
        solution = solve_ivp(fun, (0.0, options.t_end), y0, method="BDF", rtol=1e-6, atol=1e-8, **jacobian)
        elapsed = time.perf_counter() - started
        if not solution.success:
            raise RuntimeError(f"solve_ivp failed with {label}: {solution.message}")
        solutions[label] = solution
        print(f"{label:20s} {elapsed:8.2f} {solution.nfev:6d} {calls['rhs']:10d} {solution.njev:5d} {solution.nlu:5d} "
              f"{compile_time:10.2f} {elapsed + compile_time:8.2f}")
    final = solutions["gradcomp sparse"].y[:, -1]
    difference = max(np.abs(s.y[:, -1] - final).max() for s in solutions.values())
    print(f"the solutions at t = {options.t_end} differ by at most {difference:.1e}")
    options.out.mkdir(parents=True, exist_ok=True)
    plot(final, n, options.out)


if __name__ == "__main__":
    main()
