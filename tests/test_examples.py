"""Every example script runs with --small and prints the result it is there to show."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def number_after(pattern: str, text: str) -> float:
    """The number that follows ``pattern`` in ``text``."""
    match = re.search(pattern + r"\s*([-+0-9.e]+)", text)
    assert match, f"no {pattern!r} in the output:\n{text}"
    return float(match.group(1))


def check_seed_backward(output: str) -> None:
    assert "v^T J" in output


def check_rosenbrock(output: str) -> None:
    newton = next(line for line in output.splitlines() if line.startswith("Newton-CG"))
    assert float(newton.split()[-1]) < 1e-6, newton


def check_robot_arm(output: str) -> None:
    assert "reached within 1 µm: 50/50" in output


def check_lennard_jones(output: str) -> None:
    assert number_after(r"max \|F_gradcomp - F_central_difference\| =", output) < 1e-6
    assert number_after(r"max drift [-+0-9.e]+ \(", output) < 1e-2


def check_torch_layer(output: str) -> None:
    match = re.search(r"loss ([0-9.]+) -> ([0-9.]+) after", output)
    assert match and float(match.group(2)) < float(match.group(1)), output


def check_stiff_ode(output: str) -> None:
    assert number_after(r"max \|y1 \+ y2 \+ y3 - 1\| =", output) < 1e-10


def check_brusselator(output: str) -> None:
    assert number_after(r"differ by at most", output) < 1e-6
    assert re.search(r"^gradcomp sparse\s", output, re.MULTILINE), output


def check_bratu(output: str) -> None:
    assert number_after(r"final residual: gradcomp", output) < 1e-8
    assert number_after(r"solutions differ by at most", output) < 1e-8


def check_deblur(output: str) -> None:
    assert number_after(r"recovered", output) < 0.8 * number_after(r"start \(the blurred data\)", output)
    exact, fd = number_after(r"final cost: gradcomp", output), number_after(r"finite differences", output)
    assert abs(exact - fd) <= 1e-6 * exact, output


def check_pendulum(output: str) -> None:
    assert "closed loop from a push, 6 s: solved" in output, output
    assert number_after(r"max \|x\(T\) - x_up\| =", output) < 0.05
    assert number_after(r"closed-loop max Re\(eig\)", output) < 0


def check_native_ik(output: str) -> None:
    assert re.search(r"C program: iterations \d+ error", output), output
    assert number_after(r"C program: iterations \d+ error", output) < 1e-9
    assert number_after(r"max \|q_C - q_Python\| =", output) < 1e-9
    assert "Jacobian identical to the kernel's: True" in output


CHECKS = {
    "native_ik.py": check_native_ik,
    "bratu_newton.py": check_bratu,
    "deblur_least_squares.py": check_deblur,
    "n_link_pendulum.py": check_pendulum,
    "brusselator_2d.py": check_brusselator,
    "seed_backward.py": check_seed_backward,
    "rosenbrock_optimize.py": check_rosenbrock,
    "robot_arm_ik.py": check_robot_arm,
    "lennard_jones_forces.py": check_lennard_jones,
    "torch_custom_layer.py": check_torch_layer,
    "stiff_ode_jacobian.py": check_stiff_ode,
}
NEEDS = {"torch_custom_layer.py": "torch", "brusselator_2d.py": "scipy", "n_link_pendulum.py": "scipy",
         "bratu_newton.py": "scipy", "deblur_least_squares.py": "scipy",
         "rosenbrock_optimize.py": "scipy", "stiff_ode_jacobian.py": "scipy"}


@pytest.mark.parametrize("script", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_example_runs_small_and_prints_its_result(script, tmp_path):
    if script not in CHECKS:
        pytest.fail(f"examples/{script} has no output check: add one to CHECKS in {Path(__file__).name}.")
    if script in NEEDS:
        pytest.importorskip(NEEDS[script])
    environment = dict(os.environ, MPLBACKEND="Agg")
    # Run in tmp_path: pictures land in the current directory by default.
    result = subprocess.run([sys.executable, str(EXAMPLES / script), "--small"], cwd=tmp_path,
                            env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"examples/{script} failed:\n{result.stdout}\n{result.stderr}"
    CHECKS[script](result.stdout)
