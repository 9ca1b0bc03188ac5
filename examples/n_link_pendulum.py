"""An n-link pendulum on a cart: Kane's equations of motion, the right-hand side x' = [u; M(q)⁻¹ F(q, u, f)]
as one kernel with ``gc.solve`` inside, its exact Jacobian, a simulation and an LQR controller.

    python examples/n_link_pendulum.py [--links 10] [--seconds 10] [--small]

The model is built with ``sympy.physics.mechanics`` (no PyDy): a cart on a line (q0, pushed by the force f)
carrying n point masses on massless links, each link's angle q_i measured from the horizontal.
``KanesMethod`` gives the mass matrix M(q) and the forcing F(q, u, f); the kernel takes the
state's dynamicsymbols as they are and solves M x = F per point (LU with partial pivoting, in the
generated code), so its Jacobian needs no symbolic inverse.  Then:

  * one right-hand side and one Jacobian, single point and batch (timed);
  * the linearization about the upright position (all q_i = π/2): A = ∂x'/∂x, B = ∂x'/∂f from the
    kernel's Jacobian, and the LQR gain K from ``scipy.linalg.solve_continuous_are``;
  * ``solve_ivp(method="Radau", jac=...)`` of the closed loop f = -K (x - x_up) from a push, with
    the kernel's Jacobian; prints how far from upright the pendulum ends, and saves
    n_link_pendulum.png (the angles over time and the final pose) when matplotlib is installed.

``--small`` uses 3 links and 6 seconds.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import sympy as sp
import sympy.physics.mechanics as me
from scipy.integrate import solve_ivp
from scipy.linalg import solve_continuous_are

import gradcomp as gc


def kanes_method(links: int):
    """(KanesMethod with its equations formed, state [q; u], force f, parameters [m; l; g])."""
    q = me.dynamicsymbols(f"q:{links + 1}")
    u = me.dynamicsymbols(f"u:{links + 1}")
    force = me.dynamicsymbols("f")
    masses = sp.symbols(f"m:{links + 1}")
    lengths = sp.symbols(f"l:{links}")
    gravity = sp.Symbol("g")
    t = me.dynamicsymbols._t

    inertial = me.ReferenceFrame("I")
    origin = me.Point("O")
    origin.set_vel(inertial, 0)
    cart = origin.locatenew("P0", q[0] * inertial.x)
    cart.set_vel(inertial, u[0] * inertial.x)
    points = [cart]
    particles = [me.Particle("Pa0", cart, masses[0])]
    loads = [(cart, force * inertial.x - masses[0] * gravity * inertial.y)]
    for i in range(links):
        frame = inertial.orientnew(f"B{i}", "Axis", [q[i + 1], inertial.z])
        frame.set_ang_vel(inertial, u[i + 1] * inertial.z)
        point = points[-1].locatenew(f"P{i + 1}", lengths[i] * frame.x)
        point.v2pt_theory(points[-1], inertial, frame)
        points.append(point)
        particles.append(me.Particle(f"Pa{i + 1}", point, masses[i + 1]))
        loads.append((point, -masses[i + 1] * gravity * inertial.y))
    kinematics = [q[i].diff(t) - u[i] for i in range(links + 1)]
    kane = me.KanesMethod(inertial, q_ind=q, u_ind=u, kd_eqs=kinematics)
    kane.kanes_equations(particles, loads)
    return kane, [*q, *u], force, [*masses, *lengths, gravity]


def right_hand_side(links: int, cache=None, model=None):
    """The kernel x' = [u; M⁻¹ F] of (state, force, parameters); wrt the state and the force.  ``model``:
    what ``kanes_method(links)`` returned, if it was built already."""
    kane, state, force, parameters = model if model is not None else kanes_method(links)
    outputs = [*state[links + 1:], *gc.solve(kane.mass_matrix, kane.forcing, assume="pos")]  # u' = M⁻¹F, M SPD
    return gc.compile(outputs, [state, force, parameters], wrt=[0, 1], name=f"n_link_pendulum_{links}", cache=cache)


def parameters(links: int) -> np.ndarray:
    """Cart of 1 kg, links of 1/n m carrying 1/n kg each, g = 9.81."""
    return np.array([1.0] + [1.0 / links] * links + [1.0 / links] * links + [9.81])


def upright(links: int) -> np.ndarray:
    return np.concatenate([[0.0], np.full(links, np.pi / 2), np.zeros(links + 1)])


def per_call(function, *args, repeat: int = 2000) -> float:
    """Best of 5 rounds, seconds per call."""
    function(*args)
    best = np.inf
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(repeat):
            function(*args)
        best = min(best, (time.perf_counter() - started) / repeat)
    return best


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--links", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--small", action="store_true", help="3 links, 6 seconds")
    options = parser.parse_args(argv)
    links, seconds = (3, 6.0) if options.small else (options.links, options.seconds)
    states = 2 * (links + 1)

    started = time.perf_counter()
    model = kanes_method(links)
    built = time.perf_counter()
    rhs = right_hand_side(links, cache=False, model=model)
    p = parameters(links)
    x_up = upright(links)
    rhs(x_up, 0.0, p)
    compiled = time.perf_counter()
    rhs.jacobian(x_up, 0.0, p)
    jacobian_ready = time.perf_counter()
    print(f"{links}-link pendulum on a cart: {states} states; Kane's method {built - started:.2f} s, "
          f"compile + first right-hand side {compiled - built:.2f} s, first Jacobian {jacobian_ready - compiled:.2f} s")

    x = x_up + 0.1 * np.random.default_rng(0).standard_normal(states)
    batch = x + 0.01 * np.random.default_rng(1).standard_normal((100_000, states))
    forces = np.zeros(len(batch))
    point_s = per_call(rhs, x, 0.0, p)
    jacobian_s = per_call(rhs.jacobian, x, 0.0, p)
    batch_s = per_call(rhs, batch, forces, p, repeat=3)
    print(f"right-hand side: {point_s * 1e6:.2f} µs per point; Jacobian: {jacobian_s * 1e6:.2f} µs per point; "
          f"batch of {len(batch):,}: {len(batch) / batch_s / 1e6:.2f} Mpts/s")

    jac_x, jac_f = rhs.jacobian(x_up, 0.0, p)
    gain_matrix = jac_f.reshape(states, 1)
    weight = 0.01  # the force's cost against the state's (Q = I): the slowest closed-loop mode decays at ~1/s
    riccati = solve_continuous_are(jac_x, gain_matrix, np.eye(states), weight * np.eye(1))
    gain = gain_matrix.T @ riccati / weight
    closed_poles = np.linalg.eigvals(jac_x - gain_matrix @ gain)
    print(f"LQR about upright: open-loop max Re(eig) {np.linalg.eigvals(jac_x).real.max():+.3f}, "
          f"closed-loop max Re(eig) {closed_poles.real.max():+.3f}")

    def closed_loop(_, y):
        return rhs(y, float(-(gain @ (y - x_up))[0]), p)

    def closed_loop_jacobian(_, y):
        j_x, j_f = rhs.jacobian(y, float(-(gain @ (y - x_up))[0]), p)
        return j_x - j_f.reshape(states, 1) @ gain

    push = x_up.copy()
    push[links + 2:] += 0.3  # every link's angular speed kicked
    started = time.perf_counter()
    solution = solve_ivp(closed_loop, (0.0, seconds), push, method="Radau", jac=closed_loop_jacobian,
                         rtol=1e-6, atol=1e-8)
    elapsed = time.perf_counter() - started
    deviation = np.abs(solution.y[:, -1] - x_up).max()
    print(f"closed loop from a push, {seconds:g} s: {solution.status == 0 and 'solved' or solution.message}, "
          f"{solution.nfev} right-hand sides, {solution.njev} Jacobians, {elapsed:.2f} s; "
          f"max |x(T) - x_up| = {deviation:.2e}")
    _plot(solution, links, p)


def _plot(solution, links: int, p: np.ndarray) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    figure, (angles, pose) = plt.subplots(1, 2, figsize=(11, 4))
    for i in range(1, links + 1):
        angles.plot(solution.t, solution.y[i] - np.pi / 2, lw=1)
    angles.set(xlabel="t (s)", ylabel="q_i - π/2 (rad)", title="link angles under LQR")
    lengths = p[links + 1:2 * links + 1]
    for k, alpha in ((0, 0.3), (-1, 1.0)):
        x, y = [solution.y[0, k]], [0.0]
        for i in range(links):
            x.append(x[-1] + lengths[i] * np.cos(solution.y[i + 1, k]))
            y.append(y[-1] + lengths[i] * np.sin(solution.y[i + 1, k]))
        pose.plot(x, y, "o-", alpha=alpha, label="start" if k == 0 else "end")
    pose.set(aspect="equal", title="pose", xlabel="x (m)", ylabel="y (m)")
    pose.legend()
    out = Path("n_link_pendulum.png")
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    print(f"saved {out.name}")


if __name__ == "__main__":
    main()
