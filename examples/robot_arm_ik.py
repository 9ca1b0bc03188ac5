"""Inverse kinematics of a 6-joint arm for many targets at once, with the compiled Jacobian.

Forward kinematics: the UR5 Denavit–Hartenberg chain, joint angles q (6,) →
tool position p (3,).  Inverse kinematics by Levenberg–Marquardt,
    (JᵀJ + λ I) Δq = Jᵀ (target - p(q)),
with a damping λ per target (halved after a step that lowers the error,
multiplied by 10 after one that does not).  Every iteration makes one batched
Jacobian call and one batched forward call for all targets together.

Targets are positions of random joint configurations, so all are reachable;
every target starts from the same home pose.  Prints how many targets reached
1 µm and the time per iteration; saves ik_convergence.png (error against
iteration) when matplotlib is installed.  ``--small`` solves 50 targets
instead of 2000.
"""

import argparse
import math
import time
from pathlib import Path

import numpy as np
import sympy as sp

import gradcomp as gc

# UR5 Denavit–Hartenberg table, one row per joint: (d, a, alpha).
UR5 = [(0.089159, 0.0, math.pi / 2), (0.0, -0.425, 0.0), (0.0, -0.39225, 0.0),
       (0.10915, 0.0, math.pi / 2), (0.09465, 0.0, -math.pi / 2), (0.0823, 0.0, 0.0)]
HOME = np.array([0.0, -1.2, 1.2, -1.5, -1.5, 0.0])
TOLERANCE = 1e-6  # metres


def dh_transform(theta, d, a, alpha):
    """The homogeneous transform of one DH joint."""
    ct, st = sp.cos(theta), sp.sin(theta)
    ca, sa = sp.cos(alpha), sp.sin(alpha)
    return sp.Matrix([[ct, -st * ca, st * sa, a * ct],
                      [st, ct * ca, -ct * sa, a * st],
                      [0, sa, ca, d],
                      [0, 0, 0, 1]])


def tool_position(q):
    """The tool's (x, y, z) for joint angles q."""
    transform = sp.eye(4)
    for theta, (d, a, alpha) in zip(q, UR5):
        transform = transform * dh_transform(theta, d, a, sp.Float(alpha))
    return [transform[row, 3] for row in range(3)]


def solve_ik(forward, targets, q, iterations=100):
    """Levenberg–Marquardt for every target at once; returns (q, error history (iterations, targets))."""
    damping = np.full(len(targets), 1e-2)
    residual = targets - forward(q)
    error = np.linalg.norm(residual, axis=-1)
    history = [error]
    identity = np.eye(q.shape[-1])
    for _ in range(iterations):
        if error.max() < TOLERANCE:
            break
        jacobian = forward.jacobian(q)                                   # (targets, 3, 6)
        jt = np.swapaxes(jacobian, -1, -2)
        normal = jt @ jacobian + damping[:, None, None] * identity
        step = np.linalg.solve(normal, (jt @ residual[..., None]))[..., 0]
        trial_residual = targets - forward(q + step)
        trial_error = np.linalg.norm(trial_residual, axis=-1)
        better = trial_error < error
        q = np.where(better[:, None], q + step, q)
        residual = np.where(better[:, None], trial_residual, residual)
        error = np.where(better, trial_error, error)
        damping = np.where(better, damping * 0.5, damping * 10.0).clip(1e-9, 1e6)
        history.append(error)
    return q, np.array(history)


def plot(history, out_dir: Path) -> None:
    """Median and worst error against iteration."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no picture)")
        return
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.semilogy(np.median(history, axis=1), label="median")
    axes.semilogy(history.max(axis=1), label="worst")
    axes.axhline(TOLERANCE, color="grey", linestyle=":", label="1 µm")
    axes.set(xlabel="Levenberg–Marquardt iteration", ylabel="position error / m",
             title=f"UR5 inverse kinematics, {history.shape[1]} targets at once")
    axes.legend()
    path = out_dir / "ik_convergence.png"
    figure.savefig(path, dpi=120, bbox_inches="tight")
    print(f"saved {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="50 targets instead of 2000")
    parser.add_argument("--out", type=Path, default=Path("."), help="directory for the PNG")
    options = parser.parse_args()
    count = 50 if options.small else 2000

    q = sp.symbols("q0:6")
    forward = gc.compile(tool_position(q), [list(q)], name="ur5_tool_position")
    forward.precompile(["forward", "jacobian"])

    rng = np.random.default_rng(0)
    targets = forward(rng.uniform(-np.pi, np.pi, (count, 6)))
    started = time.perf_counter()
    solution, history = solve_ik(forward, targets, np.broadcast_to(HOME, (count, 6)))
    elapsed = time.perf_counter() - started

    iterations = len(history) - 1
    reached = int((history[-1] < TOLERANCE).sum())
    print(f"UR5 inverse kinematics: {count} targets, {iterations} iterations "
          f"({elapsed:.3f} s, {1e3 * elapsed / max(iterations, 1):.2f} ms per iteration for all targets)")
    print(f"reached within 1 µm: {reached}/{count}; worst error {history[-1].max():.2e} m")
    worst_check = np.abs(forward(solution) - targets).max()
    print(f"check: max |fk(q*) - target| = {worst_check:.2e} m")
    options.out.mkdir(parents=True, exist_ok=True)
    plot(history, options.out)


if __name__ == "__main__":
    main()
