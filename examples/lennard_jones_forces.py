"""Molecular dynamics of a 1 000-atom Lennard-Jones cluster, forces from one indexed kernel.

E(r) = Σ_{i<j} 4 (|rᵢ - rⱼ|⁻¹² - |rᵢ - rⱼ|⁻⁶) in reduced units (ε = σ = m = 1), written
once in SymPy's indexed notation: ``P`` is an ``IndexedBase`` of shape (n, 3) with ``n`` a
size symbol, and the energy a double ``Sum`` over the pairs.  The kernel compiles in the time
of its body (one pair term), and serves every n: the same kernel runs the 1 000-atom cluster
and an 8-atom one.  ``kernel.value_and_grad`` gives the energy and -forces in one pass over
the pairs; a velocity-Verlet run from a slightly jiggled cubic lattice checks energy
conservation (the total E + ½Σv² should drift by a small fraction of the kinetic energy).

Prints the force check against central differences of each atom's own pair energy (computed
with NumPy), the energies and the largest drift of the total energy; saves lj_energy.png when
matplotlib is installed.  ``--small`` runs 200 steps instead of 5000.
"""

import argparse
import time
from pathlib import Path

import numpy as np
import sympy as sp

import gradcomp as gc

SIDE = 10  # a 10×10×10 lattice: 1 000 atoms
TIME_STEP = 0.002


def lennard_jones_energy() -> sp.Expr:
    """Σ_{i<j} 4 (r⁻¹² - r⁻⁶) over the rows of an (n, 3) array of positions, for any n."""
    n = sp.Symbol("n", integer=True, positive=True)
    i, j = sp.symbols("i j", integer=True)
    P = sp.IndexedBase("P", shape=(n, 3))
    r2 = sum((P[i, d] - P[j, d]) ** 2 for d in range(3))
    inverse6 = r2**-3
    return sp.Sum(sp.Sum(4 * (inverse6**2 - inverse6), (j, i + 1, n - 1)), (i, 0, n - 2)), P


def atom_energy(positions: np.ndarray, atom: int) -> float:
    """The energy of the pairs atom ``atom`` is in (NumPy): all of E that depends on its position."""
    r2 = ((positions - positions[atom]) ** 2).sum(axis=1)
    r2 = np.delete(r2, atom)
    return float((4 * (r2**-6 - r2**-3)).sum())


def central_difference_forces(positions: np.ndarray, atoms, h: float = 1e-5) -> np.ndarray:
    """-∂E/∂P for the given atoms by central differences of their own pair energies."""
    forces = np.empty((len(atoms), 3))
    for row, atom in enumerate(atoms):
        for d in range(3):
            plus, minus = positions.copy(), positions.copy()
            plus[atom, d] += h
            minus[atom, d] -= h
            forces[row, d] = -(atom_energy(plus, atom) - atom_energy(minus, atom)) / (2 * h)
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


def plot(potential, kinetic, atoms: int, out_dir: Path) -> None:
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
             title=f"Lennard-Jones cluster of {atoms}, velocity Verlet")
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

    started = time.perf_counter()
    expression, P = lennard_jones_energy()
    energy = gc.compile(expression, [P], name="lennard_jones")
    compiled = time.perf_counter() - started

    rng = np.random.default_rng(1)
    lattice = np.array([(a, b, c) for a in range(SIDE) for b in range(SIDE) for c in range(SIDE)], float)
    positions = 1.12 * lattice + 0.02 * rng.standard_normal(lattice.shape)
    velocities = 0.3 * rng.standard_normal(lattice.shape)
    velocities -= velocities.mean(axis=0)  # no drift of the centre of mass
    atoms = len(positions)

    started = time.perf_counter()
    forces = -energy.grad(positions)
    first_call = time.perf_counter() - started
    print(f"compile {compiled:.2f} s, first call {first_call:.2f} s (Numba; a later run loads both from the cache)")
    print(f"one kernel for every size: 8 atoms E = {energy(positions[:8]):.4f}, {atoms} atoms E = "
          f"{energy(positions):.4f}")
    checked = rng.choice(atoms, 20, replace=False)
    force_error = np.abs(forces[checked] - central_difference_forces(positions, checked)).max()
    print(f"{atoms} atoms: max |F_gradcomp - F_central_difference| = {force_error:.1e} over {len(checked)} atoms "
          f"(largest force {np.abs(forces).max():.2f})")

    started = time.perf_counter()
    potential, kinetic = velocity_verlet(energy, positions, velocities, steps)
    elapsed = time.perf_counter() - started
    total = potential + kinetic
    drift = np.abs(total - total[0]).max()
    print(f"{steps} velocity-Verlet steps (dt = {TIME_STEP}) in {elapsed:.2f} s "
          f"({1e3 * elapsed / steps:.2f} ms per step, {atoms * (atoms - 1) // 2} pairs)")
    print(f"potential {potential[0]:.2f} -> {potential[-1]:.2f}, kinetic {kinetic[0]:.2f} -> {kinetic[-1]:.2f}")
    print(f"total energy {total[0]:.4f}: max drift {drift:.1e} "
          f"({drift / kinetic.mean():.1e} of the mean kinetic energy)")
    options.out.mkdir(parents=True, exist_ok=True)
    plot(potential, kinetic, atoms, options.out)


if __name__ == "__main__":
    main()
