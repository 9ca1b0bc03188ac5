"""The UR5 arm's kinematics as a native library, and an inverse-kinematics loop in C that calls it.

Compiles the forward kinematics of ``robot_arm_ik.py`` (joint angles (6,) -> tool position (3,)),
exports its value and Jacobian with ``gc.export_native`` as ``ur5.h`` + ``libur5.so``, builds
``examples/native/ur5_ik.c`` against them with the system's C compiler (the build line is in the C file)
and runs it: Levenberg-Marquardt from the home pose to a target, in C, without Python.  Then the same
iterations in Python on the gradcomp kernel, which reach the same joint angles, and the library
loaded back into Python with ``gradcomp.native.load``.  ``--small`` is accepted (the example is small).
"""

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import sympy as sp
from robot_arm_ik import HOME, tool_position

import gradcomp as gc
from gradcomp.native import load

HERE = Path(__file__).resolve().parent


def lm_in_python(kernel, q, target):
    """ur5_ik.c's loop on the Python kernel."""
    q, lam = q.copy(), 1e-3
    p = kernel(q)
    error = np.sqrt(sum((target[i] - p[i]) ** 2 for i in range(3)))
    iteration = 0
    while iteration < 100 and error > 1e-9:
        jac = kernel.jacobian(q)
        a = jac @ jac.T + lam * np.eye(3)
        y = np.linalg.solve(a, target - p)
        trial = q + jac[0] * y[0] + jac[1] * y[1] + jac[2] * y[2]
        trial_p = kernel(trial)
        trial_error = np.sqrt(sum((target[i] - trial_p[i]) ** 2 for i in range(3)))
        if trial_error < error:
            q, p, error, lam = trial, trial_p, trial_error, lam * 0.5
        else:
            lam *= 10.0
        iteration += 1
    return q, iteration, error


def main() -> None:
    argparse.ArgumentParser(description=__doc__).add_argument("--small", action="store_true")
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise SystemExit("this example needs a C compiler (cc or gcc) on PATH")
    q = sp.symbols("q1:7")
    kernel = gc.compile(tool_position(q), [list(q)], name="ur5")
    target = kernel(np.array([0.4, -1.0, 1.6, -1.2, -1.4, 0.3]))
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        started = time.perf_counter()
        export = gc.export_native(kernel, work, methods=["value", "jacobian"])
        print(f"exported {export.header.name} + {export.library.name} ({export.library.stat().st_size // 1024} KiB) "
              f"for {export.target} in {time.perf_counter() - started:.2f} s")
        program = work / "ur5_ik"
        subprocess.run([compiler, "-std=c99", "-Wall", "-Werror", "-pedantic", "-O2", "-I", str(work),
                        str(HERE / "native" / "ur5_ik.c"), str(export.library), "-lm", f"-Wl,-rpath,{work}",
                        "-o", str(program)], check=True)
        arguments = [repr(float(v)) for v in (*HOME, *target)]
        output = subprocess.run([str(program), *arguments], capture_output=True, text=True, check=True).stdout
        print("C program:", " ".join(output.split()[:4]))
        q_c = np.array([float(v) for v in output.split("q", 2)[-1].split()])
        q_py, iterations, error = lm_in_python(kernel, HOME, target)
        print(f"Python on the gradcomp kernel: iterations {iterations} error {error:.3g}")
        # the kernels agree bit for bit; the loops' own linear algebra (BLAS, LAPACK against ur5_ik.c) rounds apart
        print(f"max |q_C - q_Python| = {np.abs(q_c - q_py).max():.3g}")
        library = load(export.library)
        jac_native, jac_kernel = library.jacobian(q_c), kernel.jacobian(q_c)
        print(f"library loaded back into Python: Jacobian identical to the kernel's: "
              f"{jac_native.tobytes() == jac_kernel.tobytes()}")
        batch = np.random.default_rng(0).uniform(-3, 3, (100_000, 6))
        started = time.perf_counter()
        library.jacobian(batch)
        print(f"a batch of {len(batch)} Jacobians through the library: {time.perf_counter() - started:.3f} s")


if __name__ == "__main__":
    main()
