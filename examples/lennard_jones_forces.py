"""Molecular dynamics of a small Lennard-Jones cluster, forces from the compiled gradient.

E(r) = Σ_{i<j} 4 (|rᵢ - rⱼ|⁻¹² - |rᵢ - rⱼ|⁻⁶) in reduced units (ε = σ = m = 1);
the forces are -∇E, and ``kernel.value_and_grad`` gives energy and forces from one
fused evaluation per step.  A velocity-Verlet run from a slightly jiggled cubic
cluster checks energy conservation: the total energy E + ½Σv² should drift by
a small fraction of the kinetic energy only.

Prints the force check against central differences, the energies and the
largest drift of the total energy; saves lj_energy.png when matplotlib is
installed.  ``--small`` runs 200 steps instead of 5000.
"""

import argparse
import time
from pathlib import Path

import numpy as np

import gradcomp as gc

PARTICLES = 8
TIME_STEP = 0.002


def lennard_jones(positions):
    """Total pair energy of a (particles, 3) matrix of positions."""
    energy = 0
    for i in range(positions.shape[0]):
        for j in range(i + 1, positions.shape[0]):
            r2 = sum((positions[i, d] - positions[j, d]) ** 2 for d in range(3))
            inverse6 = 1 / r2**3
            energy += 4 * (inverse6**2 - inverse6)
    return energy


def central_difference_forces(energy, positions, h=1e-6):
    """-∇E by central differences, for checking."""
    forces = np.empty_like(positions)
    for index in np.ndindex(positions.shape):
        step = np.zeros_like(positions)
        step[index] = h
        forces[index] = -(energy(positions + step) - energy(positions - step)) / (2 * h)
    return forces


def velocity_verlet(energy, positions, velocities, steps):
    """Integrate; returns per-step potential and kinetic energies."""
    potential, gradient = energy.value_and_grad(positions)
    potentials, kinetics = [], []
    for _ in range(steps):
        velocities = velocities - 0.5 * TIME_STEP * gradient
        positions = positions + TIME_STEP * velocities
        potential, gradient = energy.value_and_grad(positions)
        velocities = velocities - 0.5 * TIME_STEP * gradient
        potentials.append(potential)
        kinetics.append(0.5 * np.sum(velocities**2))
    return np.array(potentials), np.array(kinetics)


def plot(potential, kinetic, out_dir: Path) -> None:
    """Potential, kinetic and total energy against time."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no picture)")
        return
    times = TIME_STEP * np.arange(1, len(potential) + 1)
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.plot(times, potential, label="potential")
    axes.plot(times, kinetic, label="kinetic")
    axes.plot(times, potential + kinetic, label="total")
    axes.set(xlabel="time (reduced units)", ylabel="energy (ε)",
             title=f"Lennard-Jones cluster of {PARTICLES}, velocity Verlet")
    axes.legend()
    path = out_dir / "lj_energy.png"
    figure.savefig(path, dpi=120, bbox_inches="tight")
    print(f"saved {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="200 steps instead of 5000")
    parser.add_argument("--out", type=Path, default=Path("."), help="directory for the PNG")
    options = parser.parse_args()
    steps = 200 if options.small else 5000

    energy = gc.kernel(positions=(PARTICLES, 3), name=f"lennard_jones{PARTICLES}")(lennard_jones)
    energy.precompile(["forward", "vjp", "value_and_vjp"], parallel=False)  # keep compiling out of the timing

    rng = np.random.default_rng(1)
    cube = np.array([[i % 2, (i // 2) % 2, i // 4] for i in range(PARTICLES)], float)
    positions = 1.12 * cube + 0.02 * rng.standard_normal((PARTICLES, 3))
    velocities = 0.3 * rng.standard_normal((PARTICLES, 3))
    velocities -= velocities.mean(axis=0)  # no drift of the centre of mass

    forces = -energy.grad(positions)
    force_error = np.abs(forces - central_difference_forces(energy, positions)).max()
    print(f"{PARTICLES} particles: max |F_gradcomp - F_central_difference| = {force_error:.1e} "
          f"(largest force {np.abs(forces).max():.2f})")

    started = time.perf_counter()
    potential, kinetic = velocity_verlet(energy, positions, velocities, steps)
    elapsed = time.perf_counter() - started
    total = potential + kinetic
    drift = np.abs(total - total[0]).max()
    print(f"{steps} velocity-Verlet steps (dt = {TIME_STEP}) in {elapsed:.3f} s "
          f"({1e6 * elapsed / steps:.0f} µs per step)")
    print(f"potential {potential[0]:.4f} -> {potential[-1]:.4f}, kinetic {kinetic[0]:.4f} -> {kinetic[-1]:.4f}")
    print(f"total energy {total[0]:.6f}: max drift {drift:.1e} "
          f"({drift / kinetic.mean():.1e} of the mean kinetic energy)")
    options.out.mkdir(parents=True, exist_ok=True)
    plot(potential, kinetic, options.out)


if __name__ == "__main__":
    main()
