"""The machine and software a run measured, and the thread settings it imposes."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["gradcomp", "numba", "llvmlite", "numpy", "sympy", "jax", "jaxlib", "torch", "symengine", "matplotlib"]


def pin_threads(threads: int) -> None:
    """Numba and torch get `threads` threads; must run before Numba is imported."""
    os.environ["NUMBA_NUM_THREADS"] = str(threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(threads)


def available_memory_bytes() -> float:
    """MemAvailable from /proc/meminfo (Linux); elsewhere assume 4 GB."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    return 4e9


def cpu_model() -> str:
    """lscpu's 'Model name', else platform.processor()."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        text = ""
    for line in text.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def git_revision() -> str:
    """HEAD of the repository, marked dirty when gradcomp/ has uncommitted changes."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10).stdout
    try:
        head = git("rev-parse", "--short", "HEAD").strip()
        dirty = bool(git("status", "--porcelain", "gradcomp").strip())
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + (" (gradcomp/ modified)" if dirty else "")


def numba_threads() -> str:
    import numba
    return f"{numba.config.NUMBA_NUM_THREADS} (layer setting {numba.config.THREADING_LAYER!r})"


def numba_layer_used() -> str:
    """The threading layer Numba actually started (known only after a parallel call)."""
    try:
        import numba
        return numba.threading_layer()
    except (ImportError, ValueError):
        return "none started"


def describe(threads: int) -> dict:
    """Everything results.md states about where and when it was measured."""
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model(), "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
        "platform": platform.platform(), "load_average_start": os.getloadavg(),
        "versions": versions(), "git": git_revision(), "threads": threads, "numba_threads": numba_threads(),
    }
