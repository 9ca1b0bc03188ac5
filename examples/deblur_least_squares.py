"""Nonlinear deblurring as least squares: recover a log-intensity image u from a blurred, noisy
intensity d ≈ exp(K u) (K a periodic 3×3 binomial blur), with a smoothness penalty, by
``scipy.optimize.least_squares(method="trf", tr_solver="lsmr")`` — once with gradcomp's exact sparse
Jacobian, once with SciPy's own coloured finite differences (``jac_sparsity``).

    python examples/deblur_least_squares.py [--n 512] [--alpha 0.01] [--noise 0.002] [--small]

The residual is one indexed kernel on an n×n image (n a size symbol: one kernel for every image size),
an output of shape (3, n, n):

  y[0, r, s] = exp(Σ_ab K_ab u[r+a, s+b]) - d[r, s]        (the data, wrapped at the edges)
  y[1, r, s] = α (u[r+1, s] - u[r, s]),  y[2, r, s] = α (u[r, s+1] - u[r, s])   (the penalty)

Each row of the data block has 9 nonzeros, so finite differences need about 10 right-hand sides per
Jacobian; the trust-region steps use LSMR on the sparse Jacobian (matrix-vector products only), so here
the Jacobian, not a factorization, decides the time.  Both runs start from the same point and stop by the
same tolerances.  Prints per run the total time (the residual kernel's compile included in both), the
Jacobian evaluations and their time, the final cost and the error against the true image; saves
deblur.png when matplotlib is installed.  ``--small`` uses a 48×48 image.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import sympy as sp
from scipy.optimize import least_squares

import gradcomp as gc

BLUR = np.outer([1, 2, 1], [1, 2, 1]) / 16.0


def deblur_residual(cache=None):
    """The (3, n, n) residual as indexed equations over the periodic n×n image."""
    n = sp.Symbol("n", integer=True, positive=True)
    u = sp.IndexedBase("u", shape=(n, n))
    d = sp.IndexedBase("d", shape=(n, n))
    y = sp.IndexedBase("y", shape=(3, n, n))
    alpha = sp.Symbol("alpha")
    r, s = sp.Idx("r", n), sp.Idx("s", n)
    blurred = sum(sp.Rational(int(16 * BLUR[a + 1, b + 1]), 16) * u[sp.Mod(r + a, n), sp.Mod(s + b, n)]
                  for a in (-1, 0, 1) for b in (-1, 0, 1))
    equations = [sp.Eq(y[0, r, s], sp.exp(blurred) - d[r, s]),
                 sp.Eq(y[1, r, s], alpha * (u[sp.Mod(r + 1, n), s] - u[r, s])),
                 sp.Eq(y[2, r, s], alpha * (u[r, sp.Mod(s + 1, n)] - u[r, s]))]
    return gc.compile(equations, [u, d, alpha], wrt=[0], name="deblur", cache=cache)


def blur(u: np.ndarray) -> np.ndarray:
    """K u with periodic edges, in NumPy: how the data are made."""
    return sum(BLUR[a + 1, b + 1] * np.roll(u, (-a, -b), axis=(0, 1)) for a in (-1, 0, 1) for b in (-1, 0, 1))


def true_image(size: int) -> np.ndarray:
    """A log-intensity in [-1, 1] with detail at the scale of the blur: a checkerboard of 8-pixel squares in
    one quarter, thin rings, and a smooth wave beneath."""
    index = np.arange(size)
    R, S = np.meshgrid(index, index, indexing="ij")
    t = index / size
    X, Y = np.meshgrid(t, t, indexing="ij")
    image = 0.3 * np.sin(2 * np.pi * X) * np.cos(2 * np.pi * Y)
    quarter = (R < size // 2) & (S < size // 2)
    image[quarter] += 0.6 * np.where(((R // 8) + (S // 8)) % 2 == 0, 1.0, -1.0)[quarter]
    radius = np.hypot(X - 0.7, Y - 0.7)
    image += 0.6 * (np.abs(np.sin(2 * np.pi * radius * size / 12)) > 0.8) * (radius < 0.25)
    return np.clip(image, -1, 1)


def fit(residual, jac, u0: np.ndarray):
    """least_squares from u0; (result, seconds in Jacobians, Jacobian evaluations)."""
    seconds = [0.0]

    def timed(flat):
        started = time.perf_counter()
        matrix = jac(flat)
        seconds[0] += time.perf_counter() - started
        return matrix

    result = least_squares(residual, u0.ravel(), jac=timed, method="trf", tr_solver="lsmr", x_scale="jac",
                           ftol=1e-10, xtol=1e-10, gtol=1e-10)
    return result, seconds[0], result.njev


def finite_differences(residual, pattern):
    """What ``least_squares(jac="2-point", jac_sparsity=pattern)`` does inside, as a callable so that it can
    be timed: the columns grouped once, then one right-hand side per group, reusing the residual at x that
    least_squares has just evaluated."""
    from scipy.optimize._numdiff import approx_derivative, group_columns
    groups = group_columns(pattern)
    last = {}

    def counted(flat):
        last["x"], last["f"] = flat.copy(), residual(flat)
        return last["f"]

    def jacobian(flat):
        f0 = last["f"] if "x" in last and np.array_equal(last["x"], flat) else None
        return approx_derivative(residual, flat, method="2-point", f0=f0, sparsity=(pattern, groups))

    return counted, jacobian, int(groups.max()) + 1


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--alpha", type=float, default=0.01, help="weight of the smoothness penalty")
    parser.add_argument("--noise", type=float, default=0.002, help="relative noise on the intensity")
    parser.add_argument("--small", action="store_true", help="a 48×48 image")
    options = parser.parse_args(argv)
    size = 48 if options.small else options.n
    alpha, truth = options.alpha, true_image(size)
    noise = np.random.default_rng(0).standard_normal((size, size))
    data = np.exp(blur(truth)) * (1 + options.noise * noise)
    u0 = np.log(data)  # the blurred log-intensity: where a user would start

    started = time.perf_counter()
    kernel = deblur_residual(cache=False)
    kernel(u0, data, alpha)
    compiled = time.perf_counter() - started

    def residual(flat):
        return kernel(flat.reshape(size, size), data, alpha).ravel()

    first_jacobian = []

    def exact(flat):
        began = time.perf_counter()
        matrix = kernel.jacobian(flat.reshape(size, size), data, alpha, sparse=True)
        if not first_jacobian:
            first_jacobian.append(time.perf_counter() - began)
        return matrix

    exact_fit, exact_jac_s, exact_njev = fit(residual, exact, u0)
    exact_total = time.perf_counter() - started
    pattern = kernel.jacobian_sparsity(u0, data, alpha)
    started = time.perf_counter()
    counted, fd_jacobian, colours = finite_differences(residual, pattern)
    fd_fit, fd_jac_s, fd_njev = fit(counted, fd_jacobian, u0)
    fd_total = compiled + time.perf_counter() - started  # the same residual kernel, compiled once for both

    print(f"Deblurring a {size}×{size} image ({size * size:,} unknowns, {3 * size * size:,} residuals, "
          f"{pattern.nnz:,} Jacobian nonzeros), α = {alpha:g}, trf + lsmr; {colours} colours")
    print(f"{'':18} {'total s':>8} {'Jacobians s':>12} {'Jacobians':>10} {'ms each':>8} {'final cost':>11} "
          f"{'rms error':>10}")
    for label, total, seconds, njev, found in (("gradcomp sparse", exact_total, exact_jac_s, exact_njev, exact_fit),
                                               ("SciPy FD + pattern", fd_total, fd_jac_s, fd_njev, fd_fit)):
        error = np.sqrt(np.mean((found.x.reshape(size, size) - truth) ** 2))
        print(f"{label:18} {total:8.2f} {seconds:12.3f} {njev:10d} {1e3 * seconds / max(njev, 1):8.2f} "
              f"{found.cost:11.4e} {error:10.2e}")
    start_error = np.sqrt(np.mean((u0 - truth) ** 2))
    print(f"both totals include compiling the residual kernel and its first call ({compiled:.2f} s); gradcomp's "
          f"first Jacobian ({first_jacobian[0]:.2f} s) includes compiling the sparse Jacobian's drivers")
    exact_error = np.sqrt(np.mean((exact_fit.x.reshape(size, size) - truth) ** 2))
    print(f"rms error against the true image: recovered {exact_error:.2e}, start (the blurred data) {start_error:.2e}")
    print(f"final cost: gradcomp {exact_fit.cost:.9e}, finite differences {fd_fit.cost:.9e}; "
          f"solutions differ by at most {np.abs(exact_fit.x - fd_fit.x).max():.1e}")
    _plot(truth, u0, exact_fit.x.reshape(size, size))


def _plot(truth: np.ndarray, start: np.ndarray, found: np.ndarray) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    figure, axes = plt.subplots(1, 3, figsize=(11, 3.8))
    for ax, image, title in zip(axes, (truth, start, found), ("true u", "log of the blurred data", "recovered u")):
        shown = ax.imshow(image, origin="lower", cmap="magma", vmin=truth.min(), vmax=truth.max())
        ax.set(title=title, xticks=[], yticks=[])
    figure.colorbar(shown, ax=axes, shrink=0.85)
    figure.savefig("deblur.png", dpi=100)
    print("saved deblur.png")


if __name__ == "__main__":
    main()
