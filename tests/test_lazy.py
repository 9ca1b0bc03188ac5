"""Compile only what a call needs: the JVP, the Jacobian and the Hessian are derived when first asked for."""

import numpy as np
import sympy as sp
from test_cache import run_python

import gradcomp as gc

x = sp.symbols("x0:3")
ROSENBROCK = sum(100 * (x[i + 1] - x[i] ** 2) ** 2 + (1 - x[i]) ** 2 for i in range(2))
POINT = np.array([0.5, -0.3, 1.2])


def exact_hessian(point):
    return np.array(sp.hessian(ROSENBROCK, x).subs(dict(zip(x, point))), dtype=float)


def test_compile_derives_the_value_and_the_reverse_products_only():
    kernel = gc.compile(ROSENBROCK, [list(x)], cache=False)
    assert set(kernel.methods) == {"forward", "vjp", "value_and_vjp"}
    assert "Derived when first called: jvp, jacobian, hessian" in kernel.source


def test_the_first_jvp_call_derives_it():
    kernel = gc.compile(ROSENBROCK, [list(x)], cache=False)
    tangent = np.array([1.0, 2.0, -1.0])
    np.testing.assert_allclose(kernel.jvp(POINT, tangent), kernel.grad(POINT) @ tangent, rtol=1e-12)
    assert "jvp" in kernel.methods


def test_the_first_hessian_call_derives_it_and_keeps_what_was_compiled():
    kernel = gc.compile(ROSENBROCK, [list(x)], cache=False)
    gradient = kernel.grad(POINT)
    np.testing.assert_allclose(kernel.hessian(POINT), exact_hessian(POINT), rtol=1e-12)
    assert {"hessian", "vjp"} <= set(kernel.methods) and "jacobian" not in kernel.methods
    np.testing.assert_array_equal(kernel.grad(POINT), gradient)
    np.testing.assert_allclose(kernel.jacobian(POINT), gradient, rtol=1e-12)


def test_a_method_derived_later_is_in_the_cache_for_the_next_process(tmp_path):
    gc.compile(ROSENBROCK, [list(x)], name="lazy_rosenbrock", cache=tmp_path).hessian(POINT)
    report = run_python("""
        import json, sys
        import numpy as np
        import gradcomp as gc
        kernel = gc.load("lazy_rosenbrock")
        hessian = kernel.hessian(np.array([0.5, -0.3, 1.2]))
        print(json.dumps({"hessian": hessian.tolist(), "sympy_imported": "sympy" in sys.modules}))
    """, tmp_path)
    assert not report["sympy_imported"]
    np.testing.assert_allclose(report["hessian"], exact_hessian(POINT), rtol=1e-12)


def test_a_loaded_kernel_derives_a_deferred_method_from_the_signature_its_module_records(tmp_path):
    gc.compile(ROSENBROCK, [list(x)], name="lazy_rosenbrock", cache=tmp_path)
    report = run_python("""
        import json
        import numpy as np
        import gradcomp as gc
        print(json.dumps({"jacobian": gc.load("lazy_rosenbrock").jacobian(np.array([0.5, -0.3, 1.2])).tolist()}))
    """, tmp_path)
    np.testing.assert_allclose(report["jacobian"], gc.compile(ROSENBROCK, [list(x)], cache=False).grad(POINT),
                               rtol=1e-12)


def test_ir_shows_the_core_with_the_listings_names():
    a, b = sp.symbols("a b")
    text = gc.compile(sp.sin(a) * b, [a, b], cache=False).ir("vjp")
    assert "define internal void @\"gradcomp_vjp_core\"" in text
    assert '%"a_bar"' in text and '%"b_bar"' in text and "fmul" in text


def test_a_drivers_first_call_runs_with_the_cycle_collector_paused_and_restores_it():
    import gc as collector

    from gradcomp import drivers
    seen = []

    def driver(value):
        seen.append(collector.isenabled())
        return value + 1

    assert drivers.first_call("k", driver, (6,)) == 7
    assert seen == [False] and collector.isenabled()


def test_a_batch_driver_compiles_with_the_cycle_collector_paused_and_restores_it():
    import gc as collector

    kernel = gc.compile(ROSENBROCK, [list(x)], cache=False)
    seen = []

    class Driver:
        signatures: list = []
        __name__ = "vjp_serial"

        @staticmethod
        def typeof_pyval(value):
            return type(value)

        def compile(self, types):
            seen.append(collector.isenabled())

    kernel._ready(Driver(), False, (1, 2.0))
    assert seen == [False] and collector.isenabled()
