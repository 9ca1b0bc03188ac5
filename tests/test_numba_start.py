"""Numba's start-up in a gradcomp process skips SciPy's import, and the user's own Numba code keeps BLAS."""

import numpy as np
from test_cache import run_python

KERNEL_CALL = """
    import json, sys
    import numpy as np, sympy as sp
    import gradcomp as gc
    x = sp.Symbol("x")
    gradient = gc.compile(x * sp.sin(x), [x]).grad(np.array([0.5, 1.5]))
"""


def test_a_kernels_first_call_does_not_import_scipy(tmp_path):
    report = run_python(KERNEL_CALL + """
    print(json.dumps({"gradient": gradient.tolist(), "scipy_linalg": "scipy.linalg" in sys.modules}))
    """, tmp_path)
    assert not report["scipy_linalg"]
    points = np.array([0.5, 1.5])
    np.testing.assert_allclose(report["gradient"], np.sin(points) + points * np.cos(points), rtol=1e-14)


def test_the_users_numba_functions_keep_blas_after_a_kernel_ran(tmp_path):
    report = run_python(KERNEL_CALL + """
    import numba
    a, b = np.arange(6.0), np.array([1.0, -2.0, 0.5])
    correlate = numba.njit(lambda a, b: np.correlate(a, b))(a, b)
    dot = numba.njit(lambda a: np.dot(a, a))(a)
    print(json.dumps({"blas": numba.np.arraymath._HAVE_BLAS, "correlate": correlate.tolist(), "dot": dot,
                      "expected": np.correlate(a, b).tolist()}))
    """, tmp_path)
    assert report["blas"] is True
    np.testing.assert_allclose(report["correlate"], report["expected"], rtol=1e-15)
    assert report["dot"] == 55.0
