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
    assert "precompiled 1 kernel(s), 5 method(s): product" in result.stdout
    listing = gradcomp_command("cache", "list", cache=cache).stdout
    drivers = "(point, serial, parallel)"
    assert all(f"{method}{drivers}" in listing for method in ("forward", "vjp", "value_and_vjp", "jvp", "jacobian"))


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


def test_export_of_an_unknown_name_fails_with_a_message(cache, tmp_path, capsys):
    assert main(["export", "missing", "-o", str(tmp_path / "m.py"), "--cache", str(cache)]) == 1
    assert "no kernel named 'missing'" in capsys.readouterr().err


def test_the_console_script_and_python_m_are_the_same_cli(cache):
    script = shutil.which("gradcomp")
    assert script is not None, "the console script is not installed: pip install -e ."
    by_script = subprocess.run([script, "cache", "info", "--cache", str(cache)], capture_output=True, text=True)
    assert by_script.returncode == 0 and by_script.stdout == gradcomp_command("cache", "info", cache=cache).stdout
