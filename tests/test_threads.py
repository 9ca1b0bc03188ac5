"""Threads and processes: first calls from many threads, process pools after parallel batches.

Whatever could hang or abort (a fork under GNU OpenMP, two threads in Numba's
workqueue layer) runs in a subprocess with a timeout, so that a regression
fails the test instead of hanging or killing the test run.
"""

import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
import sympy as sp

import gradcomp as gc

THREADS = 8
TIMEOUT_S = 300
"""A subprocess that has not finished by then hangs: it takes ~10 s on a loaded 2-core machine."""


def _from_threads(call, threads=THREADS):
    """Run ``call()`` in ``threads`` threads released at once; their results and exceptions."""
    barrier = threading.Barrier(threads)
    results, errors = [None] * threads, []

    def work(i):
        barrier.wait()
        try:
            results[i] = call()
        except Exception as exc:  # every failure is reported by the test
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return results, errors


def _fresh_kernel(tag, cache):
    """A kernel no other test compiled: its first call compiles (or loads) for real."""
    x = sp.symbols("x0:3")
    return gc.compile(sp.sin(x[0]) * x[1] ** 2 + x[2] * sp.Integer(tag), [list(x)], cache=cache)


@pytest.mark.parametrize("cache", [None, False], ids=["cached", "in-memory"])
def test_first_single_point_calls_from_many_threads_all_succeed(cache):
    kernel = _fresh_kernel(101 if cache is None else 102, cache)
    point = np.array([0.5, 2.0, 3.0])
    results, errors = _from_threads(lambda: kernel.grad(point))
    assert errors == []
    expected = [np.cos(0.5) * 4, 2 * np.sin(0.5) * 2, 101 if cache is None else 102]
    for result in results:
        np.testing.assert_allclose(result, expected, rtol=1e-14)


@pytest.mark.parametrize("cache", [None, False], ids=["cached", "in-memory"])
def test_first_batch_calls_from_many_threads_all_succeed(cache):
    kernel = _fresh_kernel(103 if cache is None else 104, cache)
    batch = np.random.default_rng(3).standard_normal((64, 3))
    results, errors = _from_threads(lambda: kernel.value_and_grad(batch))
    assert errors == []
    value, grad = results[0]
    np.testing.assert_allclose(grad[:, 0], np.cos(batch[:, 0]) * batch[:, 1] ** 2, rtol=1e-14)
    for other_value, other_grad in results[1:]:
        np.testing.assert_array_equal(other_value, value)
        np.testing.assert_array_equal(other_grad, grad)


def _run_script(tmp_path, body, env=None):
    """Run ``body`` as a script in a fresh interpreter; its completed process (a hang fails the test)."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(body))
    environment = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    environment.update(env or {})
    try:
        return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=TIMEOUT_S,
                              env=environment, cwd=tmp_path)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the script hung (no result in {TIMEOUT_S} s); its output so far: {exc.stdout} {exc.stderr}")


POOL_SCRIPT = """
    import multiprocessing

    import numpy as np
    import sympy as sp

    import gradcomp as gc

    x = sp.symbols("x0:3")
    kernel = gc.compile(x[0] * x[1] + sp.sin(x[2]), [list(x)], name="pool_after_batch")
    kernel.precompile(["vjp"])  # the parallel driver ready: the parent's first batch runs on it
    POINTS = 400_000  # over the kernel's parallel_min_points: the parallel driver runs


    def child_batch(i):
        return float(kernel.grad(np.full((POINTS, 3), float(i)))[:, 0].sum())


    if __name__ == "__main__":
        assert POINTS >= kernel._methods["vjp"].parallel_min_points
        kernel.grad(np.ones((2 * POINTS, 3)))  # the parent's parallel batch: threads on every core
        import numba
        print("layer", numba.threading_layer())
        with multiprocessing.get_context("{method}").Pool(2) as pool:
            print("results", pool.map(child_batch, range(4)))
"""


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_process_pools_after_a_parallel_batch_finish(tmp_path, method):
    if method not in __import__("multiprocessing").get_all_start_methods():
        pytest.skip(f"no {method} start method on this platform")
    done = _run_script(tmp_path, POOL_SCRIPT.replace("{method}", method))
    assert done.returncode == 0, done.stderr
    assert f"results {[i * 400_000.0 for i in range(4)]}" in done.stdout, done.stdout + done.stderr


FORK_DURING_COMPILE_SCRIPT = """
    import multiprocessing, threading

    import numpy as np
    import sympy as sp

    import gradcomp as gc

    x = sp.symbols("x0:3")
    kernel = gc.compile([x[0] * x[1] * x[2], x[0] + x[2]], [list(x)], cache=False)


    def child_point(i):
        return kernel.vjp(np.full(3, float(i)), np.ones(2)).tolist()


    def child_batch(i):
        return float(kernel.vjp(np.full((300_000, 3), float(i)), np.ones(2))[:, 1].sum())


    if __name__ == "__main__":
        kernel.vjp(np.random.rand(2_000_000, 3), np.ones(2))  # serial; the parallel driver compiles meanwhile
        compiling = [t for t in threading.enumerate() if t.name.startswith("gradcomp-")]
        print("compiling at the fork", bool(compiling) and compiling[0].is_alive())
        with multiprocessing.get_context("fork").Pool(2) as pool:
            print("points", pool.map_async(child_point, range(4)).get(120))
            print("batches", pool.map_async(child_batch, range(4)).get(120))
"""


def test_a_fork_in_the_middle_of_a_background_compile_neither_hangs_nor_loses_the_driver(tmp_path):
    """The fork waits for the compile in flight (it holds Numba's compiler lock, which the children need)."""
    if "fork" not in __import__("multiprocessing").get_all_start_methods():
        pytest.skip("no fork start method on this platform")
    done = _run_script(tmp_path, FORK_DURING_COMPILE_SCRIPT)
    assert done.returncode == 0, done.stderr
    assert "compiling at the fork True" in done.stdout, done.stdout
    expected_points = [[i * i + 1, i * i, i * i + 1] for i in range(4)]  # v = (1, 1)
    assert f"points {[[float(v) for v in row] for row in expected_points]}" in done.stdout, done.stdout
    assert f"batches {[i * i * 300_000.0 for i in range(4)]}" in done.stdout, done.stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="elsewhere Numba's default is fork-safe already")
def test_a_threading_layer_the_user_chose_is_kept(tmp_path):
    done = _run_script(tmp_path, """
        import numpy as np, sympy as sp, gradcomp as gc, numba
        x = sp.Symbol("x")
        kernel = gc.compile(x * 2, [x], cache=False)
        kernel.precompile(["forward"])
        kernel(np.ones(2_000_000))
        print("layer", numba.threading_layer())
    """, env={"NUMBA_THREADING_LAYER": "workqueue"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "workqueue", done.stdout


def _has_gnu_openmp():
    try:
        from numba.np.ufunc import omppool  # noqa: F401
    except ImportError:
        return False
    return sys.platform.startswith("linux")


@pytest.mark.skipif(not _has_gnu_openmp(), reason="needs Numba's OpenMP layer on Linux (GNU OpenMP)")
def test_forking_under_gnu_openmp_warns_and_the_child_runs_serially(tmp_path):
    done = _run_script(tmp_path, POOL_SCRIPT.replace("{method}", "fork"), env={"NUMBA_THREADING_LAYER": "omp"})
    assert done.returncode == 0, done.stderr
    assert "layer omp" in done.stdout
    assert f"results {[i * 400_000.0 for i in range(4)]}" in done.stdout, done.stdout + done.stderr
    assert "not fork-safe" in done.stderr and "Terminating" not in done.stderr, done.stderr


def test_parallel_batches_from_many_threads_on_the_workqueue_layer_agree(tmp_path):
    """workqueue aborts the process when two threads launch parallel work at once: gradcomp takes turns."""
    done = _run_script(tmp_path, """
        import threading
        import numpy as np, sympy as sp, gradcomp as gc, numba
        x = sp.symbols("x0:3")
        kernel = gc.compile(x[0] * x[1] * x[2], [list(x)], cache=False)
        kernel.precompile(["vjp"])
        batch = np.random.default_rng(0).standard_normal((1_000_000, 3))
        expected = kernel.grad(batch)
        assert numba.threading_layer() == "workqueue"
        wrong = []
        def work():
            for _ in range(10):
                wrong.append(not np.array_equal(kernel.grad(batch), expected))
        workers = [threading.Thread(target=work) for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        print("wrong", sum(wrong), "of", len(wrong))
    """, env={"NUMBA_THREADING_LAYER": "workqueue"})
    assert done.returncode == 0, done.stderr
    assert "wrong 0 of 40" in done.stdout, done.stdout


def test_a_first_large_batch_runs_serially_while_the_parallel_driver_compiles_in_the_background():
    import time

    import numpy as np
    import sympy as sp

    import gradcomp as gc
    x = sp.Symbol("x")
    kernel = gc.compile(sp.sin(x) * x, [x], cache=False)
    points = np.linspace(-2, 2, 2 * kernel._methods["forward"].parallel_min_points)
    expected = np.sin(points) * points
    np.testing.assert_allclose(kernel(points), expected, rtol=1e-15)
    method = kernel._methods["forward"]
    assert method.serial.signatures and method.parallel_started
    deadline = time.monotonic() + 120
    while not method.parallel.signatures and time.monotonic() < deadline:
        time.sleep(0.05)
    assert method.parallel.signatures, "the background compile of the parallel driver never finished"
    np.testing.assert_allclose(kernel(points), expected, rtol=1e-15)


def _large_batch_kernel():
    x = sp.Symbol("x")
    kernel = gc.compile(sp.cos(x) * x + x ** 3, [x], cache=False)
    return kernel, np.linspace(-2, 2, 2 * kernel._methods["forward"].parallel_min_points)


def test_a_background_compile_waits_while_a_first_call_compiles():
    import time

    from gradcomp import drivers
    kernel, points = _large_batch_kernel()
    method = kernel._methods["forward"]
    with drivers.foreground():  # as a first call compiling on this thread: the background one must not start
        kernel(points)  # serial; starts the parallel driver's compile, which waits for its turn
        assert method.parallel_started
        time.sleep(1.0)
        assert not method.parallel.signatures
    drivers.finish_background(method)
    assert method.parallel.signatures


def test_waiting_for_a_background_compile_inside_a_first_call_does_not_hang():
    from gradcomp import drivers
    kernel, points = _large_batch_kernel()
    method = kernel._methods["forward"]

    def first_call_that_waits():
        with drivers.foreground():
            kernel(points)
            drivers.finish_background(method)  # the gate opens for a caller that waits

    worker = threading.Thread(target=first_call_that_waits, daemon=True)
    worker.start()
    worker.join(TIMEOUT_S)
    assert not worker.is_alive(), "finish_background inside a first call hung"
    assert method.parallel.signatures
