"""The ``gradcomp`` command: cache list/info/clear/prune, precompile, export."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

import gradcomp as gc
from gradcomp.cache import Cache
from gradcomp.cli import main

x, y = sp.symbols("x y")


@pytest.fixture
def cache(tmp_path) -> Path:
    """A cache holding the kernel 'small' (x * sin(y)), with machine code for its serial VJP."""
    root = tmp_path / "cache"
    kernel = gc.compile(x * sp.sin(y), [x, y], name="small", cache=root)
    kernel.vjp(np.zeros(3), np.zeros(3), np.ones(3))
    return root


def gradcomp_command(*arguments: str, cache: Path) -> subprocess.CompletedProcess:
    """``python -m gradcomp ARGUMENTS --cache CACHE`` in a fresh process."""
    return subprocess.run([sys.executable, "-m", "gradcomp", *arguments, "--cache", str(cache)],
                          capture_output=True, text=True, timeout=300)


def fails_with_one_line(result: subprocess.CompletedProcess, says: str) -> None:
    """A bad argument: non-zero exit, nothing on stdout, one line on stderr (no traceback) saying ``says``."""
    assert result.returncode != 0, result.stdout
    assert result.stdout == "" and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("gradcomp"), result.stderr
    assert says in result.stderr, result.stderr


def foreign_directory(tmp_path: Path) -> Path:
    """A user's directory with a release folder that looks like a layout version: not a gradcomp cache."""
    directory = tmp_path / "mine"
    (directory / "v2_release").mkdir(parents=True)
    (directory / "v2_release" / "notes.txt").write_text("keep me")
    return directory


def test_cache_list_shows_name_key_size_last_use_and_compiled_drivers(cache, capsys):
    key = gc.load("small", cache=cache).key
    assert main(["cache", "list", "--cache", str(cache)]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["NAME", "KEY", "SIZE", "LAST", "USED", "COMPILED"]
    assert row.startswith(f"small  {key[:12]}") and "KiB" in row and row.endswith("vjp(serial)")


def test_cache_info_says_where_how_big_and_which_versions(cache, capsys):
    assert main(["cache", "info", "--cache", str(cache)]) == 0
    out = capsys.readouterr().out
    assert str(cache) in out and "1 (0 of other versions" in out and "of at most 1.0 GiB" in out
    assert f"numba {__import__('numba').__version__}" in out


def test_cache_clear_removes_every_kernel(cache, capsys):
    assert main(["cache", "clear", "--cache", str(cache)]) == 0
    assert "freed" in capsys.readouterr().out
    assert main(["cache", "list", "--cache", str(cache)]) == 0
    assert capsys.readouterr().out.startswith("no kernels in")
    with pytest.raises(KeyError, match="no kernel named 'small'"):
        gc.load("small", cache=cache)


def test_cache_prune_to_a_size_removes_least_recently_used_kernels(cache, capsys):
    assert main(["cache", "prune", "--max-bytes", "0", "--cache", str(cache)]) == 0
    assert "1 entries over the size limit" in capsys.readouterr().out
    assert Cache(cache).entries() == []


def test_precompile_compiles_every_method_and_driver_of_a_files_kernels(tmp_path):
    defining_file = tmp_path / "models.py"
    defining_file.write_text(textwrap.dedent("""
        import sympy as sp
        import gradcomp as gc
        a, b = sp.symbols("a b")
        product = gc.compile([a * b, a + b], [[a, b]], name="product")
        not_a_kernel = 3
        """))
    cache = tmp_path / "cache"
    result = gradcomp_command("precompile", str(defining_file), cache=cache)
    assert result.returncode == 0, result.stderr
    methods = ("forward", "vjp", "value_and_vjp", "jvp", "jacobian", "vjp_jvp", "jacobian_sparse")
    assert f"precompiled 1 kernel(s), {len(methods)} method(s): product" in result.stdout
    listing = gradcomp_command("cache", "list", cache=cache).stdout
    assert all(f"{method}(point, serial, parallel)" in listing for method in methods)


def test_precompile_of_a_file_without_kernels_fails_with_a_message(tmp_path, capsys):
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    assert main(["precompile", str(empty), "--cache", str(tmp_path / "cache")]) == 1
    assert "defines no Kernel at module level" in capsys.readouterr().err


def test_export_writes_a_module_that_runs_without_gradcomp_or_sympy(cache, tmp_path, capsys):
    out = tmp_path / "exported" / "small_kernel.py"
    out.parent.mkdir()
    assert main(["export", "small", "-o", str(out), "--cache", str(cache)]) == 0
    script = textwrap.dedent("""
        import json, sys
        import numpy as np
        import small_kernel
        xs = np.linspace(-1, 1, 5)
        vjp_x, vjp_y = small_kernel.vjp(xs, 2 * xs, np.ones(5))
        print(json.dumps({
            "value": small_kernel.kernel(xs, 2 * xs).tolist(), "vjp_y": vjp_y.tolist(),
            "jacobian": [j.tolist() for j in small_kernel.jacobian(0.5, 1.0)],
            "imported": sorted(m for m in ("gradcomp", "sympy") if m in sys.modules)}))
        """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            cwd=out.parent, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    xs = np.linspace(-1, 1, 5)
    np.testing.assert_allclose(report["value"], xs * np.sin(2 * xs))
    np.testing.assert_allclose(report["vjp_y"], xs * np.cos(2 * xs))
    np.testing.assert_allclose(report["jacobian"], [np.sin(1.0), 0.5 * np.cos(1.0)])
    assert report["imported"] == []


def test_export_native_writes_a_header_and_a_library_that_loads(cache, tmp_path, capsys):
    from gradcomp.native import load
    assert main(["export", "small", "--native", str(tmp_path / "lib"), "--methods", "value,vjp",
                 "--cache", str(cache)]) == 0
    assert "small.h" in capsys.readouterr().out
    library = load(tmp_path / "lib" / "libsmall.so")
    np.testing.assert_allclose(library(0.5, 1.0), 0.5 * np.sin(1.0))
    assert "int small_vjp(const double *x, const double *y, const double *v, double *vjp_x, double *vjp_y);" in \
        (tmp_path / "lib" / "small.h").read_text()


def test_export_native_options_without_native_fail_with_a_message(cache, tmp_path, capsys):
    assert main(["export", "small", "-o", str(tmp_path / "m.py"), "--static", "--cache", str(cache)]) == 1
    assert "go with --native DIR" in capsys.readouterr().err


def test_export_of_an_unknown_name_fails_with_a_message(cache, tmp_path, capsys):
    assert main(["export", "missing", "-o", str(tmp_path / "m.py"), "--cache", str(cache)]) == 1
    assert "no kernel named 'missing'" in capsys.readouterr().err


def test_the_console_script_and_python_m_are_the_same_cli(cache):
    script = shutil.which("gradcomp")
    assert script is not None, "the console script is not installed: pip install -e ."
    by_script = subprocess.run([script, "cache", "info", "--cache", str(cache)], capture_output=True, text=True)
    assert by_script.returncode == 0 and by_script.stdout == gradcomp_command("cache", "info", cache=cache).stdout


# -- bad arguments: refused with one line, nothing touched ---------------------------------------

def test_cache_clear_leaves_a_users_folders_in_the_cache_directory(cache, capsys):
    notes = cache / "v2_release" / "notes.txt"
    notes.parent.mkdir()
    notes.write_text("keep me")
    assert main(["cache", "clear", "--cache", str(cache)]) == 0
    assert notes.read_text() == "keep me" and Cache(cache).entries() == []


def test_cache_clear_cleans_a_users_directory_gradcomp_compiled_into_and_keeps_the_users_folders(tmp_path):
    directory = foreign_directory(tmp_path)
    (directory / "v1x").mkdir()
    gc.compile(x ** 2, [x], cache=directory)(1.0)
    assert gradcomp_command("cache", "clear", cache=directory).returncode == 0
    assert sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*")) == [
        "v1x", "v2_release", "v2_release/notes.txt"]


@pytest.mark.parametrize("action", ["list", "info", "clear", "prune"])
def test_cache_commands_refuse_a_directory_that_is_not_a_gradcomp_cache(tmp_path, action):
    directory = foreign_directory(tmp_path)
    fails_with_one_line(gradcomp_command("cache", action, cache=directory), "is not a gradcomp cache")
    assert (directory / "v2_release" / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in directory.rglob("*")) == ["notes.txt", "v2_release"]


@pytest.mark.parametrize("action", ["list", "info", "clear", "prune"])
def test_cache_commands_refuse_a_cache_path_that_is_a_file(tmp_path, action):
    a_file = tmp_path / "passwd"
    a_file.write_text("root:x:0:0\n")
    fails_with_one_line(gradcomp_command("cache", action, cache=a_file), "is a file, not a directory")
    assert a_file.read_text() == "root:x:0:0\n"


@pytest.mark.parametrize("action", ["list", "info", "clear", "prune"])
def test_cache_commands_on_a_directory_that_does_not_exist_fail_and_create_nothing(tmp_path, action):
    new_directory = tmp_path / "new"
    fails_with_one_line(gradcomp_command("cache", action, cache=new_directory), "does not exist")
    assert not new_directory.exists()


def test_cache_list_of_a_default_directory_not_created_yet_is_empty_and_creates_nothing(tmp_path):
    default = tmp_path / "not-yet"
    result = subprocess.run([sys.executable, "-m", "gradcomp", "cache", "list"], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "GRADCOMP_CACHE_DIR": str(default)})
    assert result.returncode == 0 and result.stdout.startswith(f"no kernels in {default}"), result.stderr
    assert not default.exists()


@pytest.mark.parametrize("size", ["-5", "1GB", ""])
def test_cache_prune_refuses_a_size_that_is_not_a_byte_count(cache, size):
    result = subprocess.run([sys.executable, "-m", "gradcomp", "cache", "prune", "--max-bytes", size,
                             "--cache", str(cache)], capture_output=True, text=True, timeout=120)
    fails_with_one_line(result, f"{size!r} is not a byte count")
    assert [entry.name for entry in Cache(cache).entries()] == ["small"]


def test_a_cache_option_that_is_empty_is_refused():
    result = subprocess.run([sys.executable, "-m", "gradcomp", "cache", "list", "--cache", ""],
                            capture_output=True, text=True, timeout=120)
    fails_with_one_line(result, "--cache: an empty path")


def test_precompile_into_a_cache_path_that_is_a_file_fails(tmp_path):
    defining_file = tmp_path / "models.py"
    defining_file.write_text("import sympy as sp\nimport gradcomp as gc\n"
                             "product = gc.compile(sp.Symbol('a') * 2, [sp.Symbol('a')])\n")
    a_file = tmp_path / "cache"
    a_file.write_text("")
    result = gradcomp_command("precompile", str(defining_file), cache=a_file)
    fails_with_one_line(result, f"the cache path {a_file} is a file, not a directory")
    assert "damaged" not in result.stderr


@pytest.mark.parametrize("file", ["missing.py", "a_folder", "models.txt"])
def test_precompile_of_something_that_is_not_a_python_file_fails(tmp_path, file):
    (tmp_path / "a_folder").mkdir()
    (tmp_path / "models.txt").write_text("x = 1\n")
    fails_with_one_line(gradcomp_command("precompile", str(tmp_path / file), cache=tmp_path / "cache"),
                        str(tmp_path / file))


def test_export_to_an_unwritable_path_fails_with_one_line(cache, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    out = a_file / "small_kernel.py"  # a path under a file: unwritable even for root
    fails_with_one_line(gradcomp_command("export", "small", "-o", str(out), cache=cache), f"cannot write {out}")


def test_export_of_an_unknown_name_lists_the_names_the_cache_holds(cache):
    fails_with_one_line(gradcomp_command("export", "smal", "-o", "smal_kernel.py", cache=cache),
                        "no kernel named 'smal'")
    assert "holds the name 'small'" in gradcomp_command("export", "smal", "-o", "m.py", cache=cache).stderr
