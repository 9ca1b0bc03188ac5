"""Numba's start-up without SciPy's: the first compile or cache load of a process imports
``numba.np.arraymath``, which imports ``scipy.linalg`` (0.15–0.3 s, half of Numba's own start-up) only to
learn whether ``np.correlate`` and ``np.convolve`` may call BLAS.  No gradcomp kernel calls BLAS.

``start`` imports that module with ``scipy.linalg.cython_blas`` marked missing, then restores the flag to
what Numba would have found, so the user's own Numba functions keep BLAS: the first one that uses it
imports SciPy then (Numba's ``ensure_blas`` runs when such a call is typed).  Nothing changes where
SciPy's linear algebra is already imported.
"""

from __future__ import annotations

import importlib.util
import sys

_BLAS = "scipy.linalg.cython_blas"


def start() -> None:
    """Import Numba's array math module, skipping its SciPy import; call before a first compile."""
    if "numba.np.arraymath" in sys.modules or _BLAS in sys.modules or "scipy.linalg" in sys.modules:
        return
    sys.modules[_BLAS] = None  # "import scipy.linalg.cython_blas" raises ImportError, imports nothing
    try:
        import numba.np.arraymath as arraymath
    finally:
        if sys.modules.get(_BLAS, 0) is None:
            del sys.modules[_BLAS]
    arraymath._HAVE_BLAS = importlib.util.find_spec("scipy") is not None
