"""Robertson's stiff chemical kinetics, solved with SciPy's BDF and a compiled Jacobian.

    y1' = -0.04 y1 + 1e4 y2 y3
    y2' =  0.04 y1 - 1e4 y2 y3 - 3e7 y2²
    y3' =                        3e7 y2²

Recipe for ``solve_ivp``: compile the right-hand side f(y) as a kernel and pass
    fun=lambda t, y: rhs(y),  jac=lambda t, y: rhs.jacobian(y)
(for a time-dependent f(t, y), compile it with arguments (t, y) and
``wrt=[1]``: then ``fun=rhs, jac=rhs.jacobian`` as they are).  Without ``jac`` BDF
estimates the Jacobian by finite differences, one extra evaluation per state.

Prints nfev, the right-hand side calls counted (nfev leaves out those of the
finite-difference Jacobian), njev, nlu and time with and without the Jacobian.
With three states a finite-difference Jacobian costs only four calls and BDF
reuses Jacobians, so the gain here is small; it grows with the number of
states.  Also checks that y1 + y2 + y3 stays 1; saves robertson.png when
matplotlib is installed.
``--small`` integrates to t = 1e3 instead of 1e7.
"""

import argparse
import time
from pathlib import Path

import numpy as np
import sympy as sp
from scipy.integrate import solve_ivp

import gradcomp as gc


def robertson(y1, y2, y3):
    """The right-hand side of Robertson's kinetics."""
    return [-0.04 * y1 + 1e4 * y2 * y3,
            0.04 * y1 - 1e4 * y2 * y3 - 3e7 * y2**2,
            3e7 * y2**2]


def plot(solution, out_dir: Path) -> None:
    """Concentrations against time, y2 scaled by 1e4 to share the axis."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no picture)")
        return
    figure, axes = plt.subplots(figsize=(6, 4))
    for row, label in zip(solution.y * np.array([[1], [1e4], [1]]), ["y1", "1e4 · y2", "y3"]):
        axes.semilogx(solution.t[1:], row[1:], label=label)
    axes.set(xlabel="t", ylabel="concentration", title="Robertson kinetics, BDF with a gradcomp Jacobian")
    axes.legend()
    path = out_dir / "robertson.png"
    figure.savefig(path, dpi=120, bbox_inches="tight")
    print(f"saved {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="integrate to t = 1e3 instead of 1e7")
    parser.add_argument("--out", type=Path, default=Path("."), help="directory for the PNG")
    options = parser.parse_args()
    t_end = 1e3 if options.small else 1e7

    y = sp.symbols("y1:4")
    rhs = gc.compile(robertson(*y), [list(y)], name="robertson")
    rhs.precompile(["forward", "jacobian"], parallel=False)

    calls = {"rhs": 0}

    def fun(t, state):
        calls["rhs"] += 1  # SciPy's nfev leaves out the finite-difference Jacobian's calls
        return rhs(state)

    def jac(t, state):
        return rhs.jacobian(state)

    solutions = {}
    print(f"Robertson kinetics to t = {t_end:.0e}, BDF, rtol 1e-6, atol 1e-10")
    print(f"{'Jacobian':24s} {'nfev':>6s} {'rhs calls':>10s} {'njev':>6s} {'nlu':>6s} {'time/s':>8s}")
    for label, jacobian in [("finite differences", None), ("gradcomp rhs.jacobian", jac)]:
        calls["rhs"] = 0
        started = time.perf_counter()
        solution = solve_ivp(fun, (0.0, t_end), [1.0, 0.0, 0.0], method="BDF", jac=jacobian,
                             rtol=1e-6, atol=1e-10)
        elapsed = time.perf_counter() - started
        if not solution.success:
            raise RuntimeError(f"solve_ivp failed with {label}: {solution.message}")
        solutions[label] = solution
        print(f"{label:24s} {solution.nfev:6d} {calls['rhs']:10d} {solution.njev:6d} {solution.nlu:6d} {elapsed:8.3f}")

    compiled = solutions["gradcomp rhs.jacobian"]
    difference = np.abs(compiled.y[:, -1] - solutions["finite differences"].y[:, -1]).max()
    print(f"y(t_end) = {np.array2string(compiled.y[:, -1], precision=6)}; "
          f"the two solutions differ by {difference:.1e}")
    print(f"max |y1 + y2 + y3 - 1| = {np.abs(compiled.y.sum(axis=0) - 1).max():.1e}")
    options.out.mkdir(parents=True, exist_ok=True)
    plot(compiled, options.out)


if __name__ == "__main__":
    main()
