"""The kernel cache on disk: hits across processes, concurrency, damaged files, permissions, pruning.

Each test uses its own cache directory (``tmp_path``) and the small kernel
``x * sin(y)`` of two scalars, whose VJP at 1000 points runs the serial driver.
"""

import errno
import importlib.util
import json
import logging
import marshal
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

import gradcomp as gc
import gradcomp.cache
import gradcomp.compiler
from gradcomp.cache import Cache, KernelNotFoundError

POINTS = 1000
x, y = sp.symbols("x y")

COMPILE_SMALL = """
import json, sys
import numpy as np, sympy as sp
import gradcomp as gc
x, y = sp.symbols("x y")
kernel = gc.compile(x * sp.sin(y), [x, y], name="small")
"""

VJP_REPORT = """
xs = np.linspace(-1, 1, 1000)
vjp_x, vjp_y = kernel.vjp(xs, 2 * xs, np.ones_like(xs))
ok = np.allclose(vjp_x, np.sin(2 * xs)) and np.allclose(vjp_y, xs * np.cos(2 * xs))
stats = kernel._methods["vjp"].serial.stats
print(json.dumps({"correct": bool(ok), "numba_compiles": sum(stats.cache_misses.values()),
                  "numba_loads": sum(stats.cache_hits.values()), "sympy_imported": "sympy" in sys.modules}))
"""


def run_python(code: str, cache: Path, **env) -> dict:
    """Run ``code`` in a fresh interpreter using ``cache``; its last stdout line is JSON."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120,
        env={**os.environ, "GRADCOMP_CACHE_DIR": str(cache), **env})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def compile_small(cache, **options):
    return gc.compile(x * sp.sin(y), [x, y], name="small", cache=cache, **options)


def assert_small_vjp_correct(kernel):
    xs = np.linspace(-1, 1, POINTS)
    vjp_x, vjp_y = kernel.vjp(xs, 2 * xs, np.ones_like(xs))
    np.testing.assert_allclose(vjp_x, np.sin(2 * xs))
    np.testing.assert_allclose(vjp_y, xs * np.cos(2 * xs))


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory) -> Path:
    """A cache holding ``small`` with Numba machine code for its serial VJP driver (copy it, don't alter it)."""
    root = tmp_path_factory.mktemp("warm") / "cache"
    assert_small_vjp_correct(compile_small(root))
    return root


@pytest.fixture
def copied_cache(warm_cache, tmp_path) -> Path:
    """A private copy of ``warm_cache``, modification times kept (Numba checks them)."""
    return Path(shutil.copytree(warm_cache, tmp_path / "cache"))


# -- hits in a fresh process -------------------------------------------------------------

def test_a_new_process_compiling_the_same_kernel_neither_differentiates_nor_runs_numba(cache):
    cold = run_python(COMPILE_SMALL + VJP_REPORT, cache)
    refuse_to_differentiate = (
        "import gradcomp.compiler\n"
        "def refuse(*args):\n"
        "    raise AssertionError('differentiated on a cache hit')\n"
        "gradcomp.compiler.derive = refuse\n")
    warm = run_python(refuse_to_differentiate + COMPILE_SMALL + VJP_REPORT, cache)
    assert cold["correct"] and cold["numba_compiles"] == 1
    assert warm["correct"] and warm["numba_compiles"] == 0 and warm["numba_loads"] == 1


def test_load_by_name_runs_without_sympy(cache):
    compile_small(cache)
    report = run_python("import json, sys\nimport numpy as np\nimport gradcomp as gc\n"
                        "kernel = gc.load('small')\n" + VJP_REPORT, cache)
    assert report["correct"] and not report["sympy_imported"]


def test_a_pickled_kernel_unpickles_in_a_new_process_without_sympy(cache):
    pickled = pickle.dumps(compile_small(cache))
    report = run_python(f"import json, pickle, sys\nimport numpy as np\nkernel = pickle.loads({pickled!r})\n"
                        + VJP_REPORT, cache)
    assert report["correct"] and not report["sympy_imported"]


def test_a_pickle_from_a_cache_that_is_gone_runs_in_memory(cache):
    pickled = pickle.dumps(compile_small(cache))
    shutil.rmtree(cache)
    clone = pickle.loads(pickled)
    assert clone.path is None and not cache.exists()
    assert_small_vjp_correct(clone)



EVERY_DRIVER = """
import json, threading
import numpy as np, sympy as sp
import gradcomp as gc
xs = sp.symbols("x0:12")
kernel = gc.compile([sp.sin(xs[i]) * xs[(i + 1) % 12] + sp.exp(xs[(i + 3) % 12] * xs[i]) for i in range(12)],
                    [list(xs)], name="every_driver")
point, cotangent = np.linspace(0.1, 1.2, 12), np.ones(12)
batch = np.tile(point, (40_000, 1))
results = [kernel(point), kernel.vjp(point, cotangent), kernel.jacobian(point)]  # the Jacobian is derived now
results += [kernel(batch), kernel.vjp(batch, cotangent), kernel.jacobian(batch)]  # large: parallel drivers too
for thread in threading.enumerate():  # the first process leaves them to finish at exit, for the next
    if thread.name.startswith("gradcomp-") and WAIT:
        thread.join()
compiled = [f"{name}_{kind} ({sum(driver.stats.cache_misses.values())})"
            for name, method in kernel._methods.items() for kind in ("point", "serial", "parallel")
            if (driver := getattr(method, kind)) is not None and sum(driver.stats.cache_misses.values())]
print(json.dumps({"compiled": compiled, "parallel_ready": kernel._methods["jacobian"].parallel.signatures != []}))
"""
"""Calls every method on a point and on a batch; says which drivers Numba compiled instead of loading."""


def test_every_driver_a_process_compiled_loads_in_the_next_one_though_it_derived_a_method(cache):
    """Deriving the Jacobian writes a new module; what was compiled in the one it replaces is handed on."""
    first = run_python("WAIT = False" + EVERY_DRIVER, cache)
    assert first["compiled"]
    for _ in range(2):  # the second process, and the third
        later = run_python("WAIT = True" + EVERY_DRIVER, cache)
        assert later["compiled"] == [] and later["parallel_ready"]

# -- concurrency ----------------------------------------------------------------------

def test_four_processes_compiling_one_new_kernel_derive_it_once_and_leave_one_entry(cache):
    count_builds = (
        "import gradcomp.compiler\n"
        "builds = []\n"
        "generate = gradcomp.compiler.generate_module\n"
        "gradcomp.compiler.generate_module = lambda *args: builds.append(1) or generate(*args)\n")
    report_builds = "print(json.dumps({'correct': bool(ok), 'builds': len(builds)}))\n"
    code = textwrap.dedent(count_builds + COMPILE_SMALL + VJP_REPORT) + report_builds
    env = {**os.environ, "GRADCOMP_CACHE_DIR": str(cache)}
    workers = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env) for _ in range(4)]
    reports = []
    for worker in workers:
        stdout, stderr = worker.communicate(timeout=120)
        assert worker.returncode == 0, stderr
        reports.append(json.loads(stdout.strip().splitlines()[-1]))
    assert all(report["correct"] for report in reports)
    assert sum(report["builds"] for report in reports) == 1
    assert len(list((cache / "v1" / "index").iterdir())) == 1
    assert len(list((cache / "v1" / "modules").glob("k_*.py"))) == 1
    assert not [p for p in cache.rglob("*") if ".tmp" in p.name]


def test_threads_compiling_one_new_kernel_derive_it_once(cache, monkeypatch):
    builds = []
    generate = gradcomp.compiler.generate_module
    monkeypatch.setattr(gradcomp.compiler, "generate_module", lambda *args: builds.append(1) or generate(*args))
    kernels = []
    threads = [threading.Thread(target=lambda: kernels.append(compile_small(cache))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(builds) == 1 and len(kernels) == 4
    for kernel in kernels:
        assert_small_vjp_correct(kernel)


def test_a_lock_left_by_a_killed_compiler_does_not_block(cache):
    hang_while_building = textwrap.dedent("""
        import sys, time
        import gradcomp.compiler
        def hang(*args):
            print("building", flush=True)
            time.sleep(120)
        gradcomp.compiler.generate_module = hang
        """) + COMPILE_SMALL
    worker = subprocess.Popen([sys.executable, "-c", hang_while_building], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "GRADCOMP_CACHE_DIR": str(cache)})
    assert worker.stdout.readline().strip() == "building"  # it holds the lock now
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    assert list((cache / "v1" / "locks").glob("*.lock"))
    assert_small_vjp_correct(compile_small(cache))


def test_temporary_files_of_a_killed_writer_are_harmless_and_pruned(copied_cache):
    modules = copied_cache / "v1" / "modules"
    strays = [modules / ".k_0123.py.abc.tmp", modules / "__pycache__" / "k_0123.vjp_serial-1.py311.nbi.tmp.ab12"]
    for stray in strays:
        stray.write_bytes(b"half a fi")
        os.utime(stray, (0, 0))  # long ago: no live writer
    assert_small_vjp_correct(compile_small(copied_cache))
    Cache(copied_cache).prune()
    assert not any(stray.exists() for stray in strays)


# -- damaged files ----------------------------------------------------------------------

def _find(root: Path, kind: str) -> Path:
    patterns = {"index": "v1/index/*.json", "module": "v1/modules/k_*.py",
                "numba index": "v1/modules/__pycache__/*.vjp_serial-*.nbi",
                "numba data": "v1/modules/__pycache__/*.vjp_serial-*.nbc"}
    (path,) = root.glob(patterns[kind])
    return path


DAMAGES = {
    "truncated": lambda data: data[: len(data) // 2],
    "empty": lambda data: b"",
    "garbage": lambda data: bytes(range(256)) * 4,
}


def _readable(path: Path, kind: str) -> bool:
    data = path.read_bytes()
    if kind == "index":
        return "source_key" in json.loads(data)
    if kind == "module":
        return path.name == f"k_{gradcomp.drivers.source_key(data.decode())}.py"
    with path.open("rb") as handle:  # Numba's layout: a pickled version, then the pickled payload
        if kind == "numba index":
            pickle.load(handle)
        return pickle.loads(handle.read()) is not None


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("kind", ["index", "module", "numba index", "numba data"])
def test_a_damaged_cache_file_is_reported_and_rebuilt(copied_cache, kind, damage):
    path = _find(copied_cache, kind)
    path.write_bytes(DAMAGES[damage](path.read_bytes()))
    with pytest.warns(UserWarning, match="gradcomp cache"):
        assert_small_vjp_correct(compile_small(copied_cache))
    assert _readable(_find(copied_cache, kind), kind)


def test_damaged_python_bytecode_of_a_module_is_dropped(copied_cache):
    module = _find(copied_cache, "module")
    code = compile(module.read_text(), str(module), "exec")
    header = importlib.util.MAGIC_NUMBER + (0).to_bytes(4, "little")
    header += int(module.stat().st_mtime).to_bytes(4, "little") + module.stat().st_size.to_bytes(4, "little")
    pyc = Path(importlib.util.cache_from_source(str(module)))
    pyc.write_bytes(header + marshal.dumps(code)[:100])  # valid header, truncated code
    with pytest.warns(UserWarning, match="bytecode"):
        assert_small_vjp_correct(compile_small(copied_cache))
    assert not pyc.exists()


@pytest.mark.parametrize("error", [errno.EROFS, errno.ENOSPC], ids=["read-only", "full"])
def test_an_unwritable_cache_compiles_in_memory_with_one_warning(cache, monkeypatch, recwarn, error):
    def fail(*args, **kwargs):
        raise OSError(error, os.strerror(error))
    monkeypatch.setattr(gradcomp.cache.tempfile, "mkstemp", fail)
    kernel = compile_small(cache)
    assert [str(w.message) for w in recwarn].__len__() == 1
    assert "compiled in memory" in str(recwarn[0].message) and kernel.path is None
    assert_small_vjp_correct(kernel)


# -- permissions -------------------------------------------------------------------------

def test_the_default_cache_directory_is_created_private(tmp_path, monkeypatch):
    monkeypatch.delenv("GRADCOMP_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    root = gradcomp.cache.open_cache(None).root
    assert root == tmp_path / "gradcomp" and root.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("mode, who", [(0o770, "its group"), (0o707, "other users")])
def test_a_cache_directory_others_can_write_to_is_refused(cache, mode, who):
    cache.mkdir(mode=0o700)
    cache.chmod(mode)
    with pytest.raises(gc.CacheError, match=f"{who} can write to it.*chmod go-w"):
        compile_small(cache)


def test_a_cache_directory_of_another_user_is_refused(cache, monkeypatch):
    cache.mkdir(mode=0o700)
    monkeypatch.setattr(os, "getuid", lambda: cache.stat().st_uid + 1)
    with pytest.raises(gc.CacheError, match="belongs to user id"):
        gc.load("small", cache=cache)


# -- pruning -----------------------------------------------------------------------------

def _compile_three(cache) -> list:
    """Three entries (no machine code), least recently used first."""
    kernels = [gc.compile(x * sp.sin(y) + n, [x, y], cache=cache) for n in range(3)]
    for age, kernel in zip((300, 200, 100), kernels):
        index = cache / "v1" / "index" / f"{kernel.key}.json"
        os.utime(index, (time.time() - age,) * 2)
    return kernels


def test_prune_removes_least_recently_used_entries_beyond_the_limit(cache):
    oldest, middle, newest = _compile_three(cache)
    store = Cache(cache)
    sizes = {entry.key: entry.size for entry in store.entries()}
    removed = store.prune(limit=sizes[middle.key] + sizes[newest.key] + 4096)
    assert removed["entries over the size limit"] == 1
    assert [entry.key for entry in store.entries()] == [middle.key, newest.key]


def test_a_cache_hit_counts_as_a_use(cache):
    oldest, _, _ = _compile_three(cache)
    gc.compile(x * sp.sin(y) + 0, [x, y], cache=cache)
    assert Cache(cache).entries()[-1].key == oldest.key


def test_compiling_prunes_down_to_the_size_limit(cache, monkeypatch):
    first = gc.compile(x * sp.sin(y), [x, y], cache=cache)
    monkeypatch.setenv("GRADCOMP_CACHE_MAX_BYTES", "1")
    second = gc.compile(x * sp.cos(y), [x, y], cache=cache)
    assert [entry.key for entry in Cache(cache).entries()] == [second.key] != [first.key]


def test_prune_removes_entries_of_other_versions(cache):
    kernels = _compile_three(cache)
    index = cache / "v1" / "index" / f"{kernels[0].key}.json"
    entry = json.loads(index.read_text())
    entry["versions"]["numba"] = "0.1.0"
    index.write_text(json.dumps(entry))
    removed = Cache(cache).prune()
    assert removed["stale entries"] == 1
    assert {entry.key for entry in Cache(cache).entries()} == {k.key for k in kernels[1:]}


def test_a_bad_size_limit_is_named_with_its_fix(monkeypatch):
    monkeypatch.setenv("GRADCOMP_CACHE_MAX_BYTES", "1GB")
    with pytest.raises(ValueError, match="GRADCOMP_CACHE_MAX_BYTES='1GB'.*integer"):
        gradcomp.cache.max_bytes()


# -- explaining misses ---------------------------------------------------------------------

def test_a_miss_on_a_new_expression_is_explained_at_debug_level(cache, caplog):
    with caplog.at_level(logging.DEBUG, logger="gradcomp"):
        compile_small(cache)
    assert "cache miss" in caplog.text and "new expression" in caplog.text


def test_a_miss_after_a_version_change_is_explained(cache, caplog, monkeypatch):
    kernel = compile_small(cache)
    index = cache / "v1" / "index" / f"{kernel.key}.json"
    entry = json.loads(index.read_text())
    entry.update(key="0" * 40, versions={**entry["versions"], "numba": "0.1.0"})
    (index.parent / f"{'0' * 40}.json").write_text(json.dumps(entry))  # as an older numba left it
    index.unlink()
    monkeypatch.setenv("GRADCOMP_EXPLAIN", "1")
    with caplog.at_level(logging.WARNING, logger="gradcomp"):
        compile_small(cache)
    assert "version change" in caplog.text and "numba 0.1.0 -> " in caplog.text


def test_a_miss_on_a_corrupted_entry_is_explained(copied_cache, caplog):
    _find(copied_cache, "index").write_text("{")
    with caplog.at_level(logging.DEBUG, logger="gradcomp"), pytest.warns(UserWarning):
        compile_small(copied_cache)
    assert "corrupted entry" in caplog.text


# -- names and gc.load -------------------------------------------------------------------------

def test_a_cache_hit_claims_its_name_so_a_new_process_loads_the_kernel_compiled_last(cache):
    gc.compile(sp.sin(x), [x], name="model", cache=cache)
    gc.compile(sp.cos(x), [x], name="model", cache=cache)
    hit = gc.compile(sp.sin(x), [x], name="model", cache=cache)  # the first entry, found again
    report = run_python("import json\nimport gradcomp as gc\nkernel = gc.load('model')\n"
                        "print(json.dumps({'value': float(kernel(1.0)), 'key': kernel.key}))", cache)
    assert report["key"] == hit.key
    assert report["value"] == pytest.approx(np.sin(1.0))


def test_load_of_a_missing_name_says_which_cache_holds_which_names_and_how_to_compile_it(cache):
    compile_small(cache)
    with pytest.raises(KeyError) as raised:  # a KeyError, as load has always raised
        gc.load("smal", cache=cache)
    assert isinstance(raised.value, KernelNotFoundError)
    message = str(raised.value)
    assert message.startswith("no kernel named 'smal'")  # no KeyError quoting around the message
    assert str(cache) in message and "holds the name 'small'" in message and "name='smal'" in message


def test_load_from_a_cache_directory_that_does_not_exist_says_so_and_creates_nothing(cache):
    with pytest.raises(KernelNotFoundError, match="does not exist"):
        gc.load("small", cache=cache)
    assert not cache.exists()


# -- the cache key ------------------------------------------------------------------------------

def test_the_code_hash_covers_every_python_file_of_the_package_including_new_ones(tmp_path):
    package = Path(gradcomp.cache.__file__).parent
    copy = Path(shutil.copytree(package, tmp_path / "gradcomp", ignore=shutil.ignore_patterns("__pycache__")))
    assert gradcomp.cache._code_hash(copy) == gradcomp.cache._code_hash() == gradcomp.cache._code_hash(package)
    hashes = {gradcomp.cache._code_hash(copy)}
    (copy / "new_stage.py").write_text("# a module added later\n")
    hashes.add(gradcomp.cache._code_hash(copy))
    (copy / "bridges" / "new_bridge.py").write_text("# in a subpackage\n")
    hashes.add(gradcomp.cache._code_hash(copy))
    with (copy / "cli.py").open("a") as handle:
        handle.write("# edited\n")
    hashes.add(gradcomp.cache._code_hash(copy))
    (copy / "notes.txt").write_text("not Python")
    hashes.add(gradcomp.cache._code_hash(copy))
    assert len(hashes) == 4


# -- what the cache directory may be -----------------------------------------------------------

def test_a_cache_path_that_is_a_file_is_refused_without_damage_warnings(tmp_path):
    not_a_directory = tmp_path / "cache"
    not_a_directory.write_text("a file")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "damaged" warning on the way
        with pytest.raises(gc.CacheError, match="cache path .*cache is a file, not a directory"):
            compile_small(not_a_directory)
        with pytest.raises(gc.CacheError, match="is a file, not a directory"):
            gc.load("small", cache=not_a_directory)


def test_a_new_cache_directory_is_marked_as_a_gradcomp_cache(cache):
    compile_small(cache)
    assert (cache / "CACHEDIR.TAG").read_text().startswith("Signature: 8a477f597d28d172789f06886806bc55\n")
    assert gradcomp.cache.is_cache_dir(cache)


def test_a_directory_with_other_content_is_not_tagged_whole_but_its_layout_directory_is(tmp_path):
    project = tmp_path / "project"
    (project / "v2_release").mkdir(parents=True)
    (project / "v2_release" / "notes.txt").write_text("mine")
    compile_small(project)  # backup tools must still see the user's files: only v1/, gradcomp's own, is tagged
    assert not (project / "CACHEDIR.TAG").exists() and (project / "v1" / "CACHEDIR.TAG").exists()
    assert gradcomp.cache.is_cache_dir(project)
    assert gradcomp.cache.existing_cache(project).entries()


def test_a_directory_gradcomp_never_wrote_into_is_not_taken_for_a_cache(tmp_path):
    project = tmp_path / "project"
    (project / "v1" / "my_notes").mkdir(parents=True)
    (project / "v2_release").mkdir()
    assert not gradcomp.cache.is_cache_dir(project)
    with pytest.raises(gc.CacheError, match="project is not a gradcomp cache.*v1, v2_release"):
        gradcomp.cache.existing_cache(project)


def test_a_cache_written_before_the_marker_existed_is_recognized_by_its_layout(copied_cache):
    (copied_cache / "CACHEDIR.TAG").unlink()
    assert gradcomp.cache.is_cache_dir(copied_cache)
    assert [entry.name for entry in gradcomp.cache.existing_cache(copied_cache).entries()] == ["small"]


def test_clear_removes_only_the_files_gradcomp_wrote(copied_cache):
    theirs = [copied_cache / "v2_release" / "notes.txt", copied_cache / "notes.txt",
              copied_cache / "v1" / "modules" / "README"]
    for path in theirs:
        path.parent.mkdir(exist_ok=True)
        path.write_text("not gradcomp's")
    Cache(copied_cache).clear()
    assert all(path.read_text() == "not gradcomp's" for path in theirs)
    assert Cache(copied_cache).entries() == [] and not list((copied_cache / "v1").rglob("k_*"))
    assert not (copied_cache / "v1" / "index").exists() and (copied_cache / "CACHEDIR.TAG").exists()


def test_inspecting_a_cache_creates_nothing(cache):
    store = Cache(cache, create=False)
    assert store.entries() == [] and store.total_bytes() == 0 and store.names() == []
    assert not cache.exists()
