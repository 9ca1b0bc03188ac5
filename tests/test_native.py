"""Kernels as native libraries: the C ABI of NAME.h, compiled against by a C program, bit for bit the Python
kernel's results; the ctypes loader; other targets; the errors."""

import shutil
import subprocess
import sys
import textwrap
from math import prod

import numpy as np
import pytest
import sympy as sp

import gradcomp as gc
from gradcomp.native import load

CC = shutil.which("cc") or shutil.which("gcc")
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler on PATH (the CI machine has gcc)")
C_FLAGS = ["-std=c99", "-Wall", "-Werror", "-pedantic"]

x0, x1, x2, x3 = sp.symbols("x0:4")
a, b = sp.symbols("a b")


def seed():
    return gc.compile(sum(x**2 + 2 for x in (x0, x1, x2)), [[x0, x1, x2]], name="seed", cache=False)


def several(dtype="float64"):
    """Two outputs... three, of a 4-vector and two parameters (wrt the vector only), transcendental functions."""
    outputs = [sp.sin(x0 * a) * sp.exp(-x1**2) + sp.tanh(x2 * x3) + b * sp.log(1 + x3**2),
               sp.atan2(x0, x1 + 2) * sp.sqrt(x2**2 + 1), sp.erf(x3) * sp.cosh(x0 / 3)]
    return gc.compile(outputs, [[x0, x1, x2, x3], [a, b]], wrt=[0], name=f"several_{dtype}", dtype=dtype,
                      cache=False)


def same_bits(expected, got) -> bool:
    expected, got = np.asarray(expected), np.asarray(got)
    return expected.shape == got.shape and expected.dtype == got.dtype and expected.tobytes() == got.tobytes()


def harness(prefix: str, symbol: str, inputs, outputs, c_type: str) -> str:
    """A C program that reads n points of every input from a file, runs ``symbol_batch`` on all of them and
    ``symbol`` on each, and writes both results: the header's sizes and prototypes, as a user compiles them."""
    size = {block: f"{prefix.upper()}_{block.upper()}_SIZE" for block, _ in (*inputs, *outputs)}
    read = "\n".join(
        f"    {c_type} *{blk} = malloc((size_t)n * {size[blk]} * sizeof *{blk});\n"
        f"    if ({blk} == NULL || fread({blk}, sizeof *{blk}, (size_t)n * {size[blk]}, in) != "
        f"(size_t)n * {size[blk]}) return 3;" for blk, _ in inputs)
    allocate = "\n".join(
        f"    {c_type} *{blk} = malloc((size_t)n * {size[blk]} * sizeof *{blk});\n"
        f"    {c_type} *one_{blk} = malloc((size_t)n * {size[blk]} * sizeof *one_{blk});\n"
        f"    if ({blk} == NULL || one_{blk} == NULL) return 4;" for blk, _ in outputs)
    batch_args = ", ".join(["n", *(blk for blk, _ in inputs), *(blk for blk, _ in outputs)])
    point_args = ", ".join([*(f"{blk} + i * {size[blk]}" for blk, _ in inputs),
                            *(f"one_{blk} + i * {size[blk]}" for blk, _ in outputs)])
    write = "\n".join(f"    fwrite({blk}, sizeof *{blk}, (size_t)n * {size[blk]}, stdout);\n"
                      f"    fwrite(one_{blk}, sizeof *one_{blk}, (size_t)n * {size[blk]}, stdout);"
                      for blk, _ in outputs)
    return textwrap.dedent(f"""\
        #include <stdint.h>
        #include <stdio.h>
        #include <stdlib.h>
        #include "{prefix}.h"

        int main(int argc, char **argv) {{
            FILE *in;
            int64_t n, i;
            if (argc != 2 || (in = fopen(argv[1], "rb")) == NULL) return 2;
            if (fread(&n, sizeof n, 1, in) != 1) return 3;
        {read}
        {allocate}
            if ({symbol}_batch({batch_args}) != {prefix.upper()}_OK) return 5;
            for (i = 0; i < n; i++)
                if ({symbol}({point_args}) != {prefix.upper()}_OK) return 6;
        {write}
            return 0;
        }}
        """)


def run_in_c(export, method: str, arrays, tmp_path, dtype):
    """Compile the harness for one exported method against the export's header and library, run it on
    ``arrays`` (one per input block, n points each): (batch results, point-by-point results)."""
    kernel = load(export.library)
    symbol = export.header.stem if method == "value" else f"{export.header.stem}_{method}"
    record = kernel._methods["forward" if method == "value" else method]
    c_type = "double" if dtype == "float64" else "float"
    source = tmp_path / f"{symbol}.c"
    source.write_text(harness(export.header.stem, symbol, [(blk, s) for blk, s, _ in record.inputs],
                              [(blk, s) for blk, s, _ in record.outputs], c_type))
    program = tmp_path / symbol
    subprocess.run([CC, *C_FLAGS, "-I", str(export.header.parent), str(source), str(export.library), "-lm",
                    f"-Wl,-rpath,{export.library.parent}", "-o", str(program)], check=True)
    n = len(arrays[0])
    data = tmp_path / f"{symbol}.bin"
    data.write_bytes(np.int64(n).tobytes() + b"".join(np.ascontiguousarray(a, dtype).tobytes() for a in arrays))
    done = subprocess.run([str(program), str(data)], capture_output=True, check=True)
    flat = np.frombuffer(done.stdout, dtype)
    batch, single, start = [], [], 0
    for _, shape, size in record.outputs:
        batch.append(flat[start:start + n * size].reshape((n, *shape)))
        single.append(flat[start + n * size:start + 2 * n * size].reshape((n, *shape)))
        start += 2 * n * size
    assert start == len(flat)
    return batch, single


def results(value):
    return [np.asarray(v) for v in (value if isinstance(value, tuple) else (value,))]


@needs_cc
@pytest.mark.parametrize("method", ["value", "vjp", "jvp", "jacobian", "hvp"])
def test_a_c_program_gets_the_seed_kernels_results_bit_for_bit(method, tmp_path):
    kernel = seed()
    export = gc.export_native(kernel, tmp_path / "lib")
    points = np.random.default_rng(1).normal(size=(37, 3))  # 37: a partial block of lanes at the end
    extra = {"value": [], "vjp": [np.linspace(-1, 1, 37)], "jvp": [points[::-1]], "jacobian": [],
             "hvp": [points[::-1]]}[method]
    batch, single = run_in_c(export, method, [points, *extra], tmp_path, "float64")
    call = getattr(kernel, "__call__" if method == "value" else method)
    expected = results(call(points, *extra))
    assert all(same_bits(e, got) for e, got in zip(expected, batch))
    for i in range(len(points)):
        assert all(same_bits(e, got[i]) for e, got in zip(results(call(points[i], *(t[i] for t in extra))), single))


def test_the_worked_example_through_the_library(tmp_path):
    kernel = gc.compile([x0 * x1 * x2, x0 + x1 + x2, x0 + x1 * x2], [[x0, x1, x2]], name="worked", cache=False)
    library = load(gc.export_native(kernel, tmp_path).library)
    np.testing.assert_allclose(library.vjp(np.array([1.0, 2.0, 3.0]), np.array([0.1, 0.2, 0.3])), [1.1, 1.4, 1.0])
    np.testing.assert_allclose(load(gc.export_native(seed(), tmp_path).library).grad([1.0, 2.0, 3.0]), [2, 4, 6])


@needs_cc
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_several_arguments_and_parameters_bit_for_bit_in_c(dtype, tmp_path):
    kernel = several(dtype)
    export = gc.export_native(kernel, tmp_path / "lib", methods=["value", "vjp", "jacobian"])
    rng = np.random.default_rng(2)
    xs, ps, vs = (rng.normal(size=(29, m)).astype(dtype) for m in (4, 2, 3))
    for method, extra in (("value", []), ("vjp", [vs]), ("jacobian", [])):
        batch, single = run_in_c(export, method, [xs, ps, *extra], tmp_path, dtype)
        call = getattr(kernel, "__call__" if method == "value" else method)
        assert all(same_bits(e, got) for e, got in zip(results(call(xs, ps, *extra)), batch))
        assert all(same_bits(e, got) for e, got in zip(results(call(xs[7], ps[7], *(t[7] for t in extra))),
                                                         [s[7] for s in single]))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_loaded_library_matches_the_kernel_bit_for_bit_in_every_method(dtype, tmp_path):
    kernel = several(dtype)
    names = ["value", "vjp", "value_and_vjp", "jvp", "jacobian", "vjp_jvp"]
    library = load(gc.export_native(kernel, tmp_path, methods=names).library)
    rng = np.random.default_rng(3)
    xs, ps, vs, ts = (rng.normal(size=(301, m)).astype(dtype) for m in (4, 2, 3, 4))
    calls = {"__call__": (xs, ps), "vjp": (xs, ps, vs), "value_and_vjp": (xs, ps, vs), "jvp": (xs, ps, ts),
             "jacobian": (xs, ps), "vjp_jvp": (xs, ps, vs, ts)}
    for name, args in calls.items():
        for chosen in (args, tuple(arg[4] for arg in args)):  # a batch, and one point
            expected, got = getattr(kernel, name)(*chosen), getattr(library, name)(*chosen)
            assert len(_leaves(expected)) == len(_leaves(got))
            assert all(same_bits(e, g) for e, g in zip(_leaves(expected), _leaves(got))), name


@needs_cc
def test_a_library_built_in_parts_by_processes_matches_the_kernel_bit_for_bit(tmp_path, monkeypatch):
    """A long kernel's library is built in parts, one process each (here forced for a short one): the parts
    link into one library that gives the kernel's bits, point and batch."""
    from gradcomp import native_build
    monkeypatch.setattr(native_build, "PARTS_ABOVE", 0)
    kernel = several()
    library = load(gc.export_native(kernel, tmp_path, methods=["value", "vjp", "jvp"]).library)
    rng = np.random.default_rng(4)
    xs, ps, vs, ts = (rng.normal(size=(37, m)) for m in (4, 2, 3, 4))
    for name, args in {"__call__": (xs, ps), "vjp": (xs, ps, vs), "jvp": (xs, ps, ts)}.items():
        for chosen in (args, tuple(arg[5] for arg in args)):
            assert same_bits(getattr(kernel, name)(*chosen), getattr(library, name)(*chosen)), name


def _leaves(value):
    if isinstance(value, tuple):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value]


def test_the_loaded_library_broadcasts_and_checks_arguments_as_a_kernel_does(tmp_path):
    kernel = several()
    library = load(gc.export_native(kernel, tmp_path, methods=["value", "vjp"]).library)
    xs = np.random.default_rng(4).normal(size=(5, 6, 4))
    params = np.array([0.5, -1.0])  # one row for every point: broadcast
    assert same_bits(kernel(xs, params), library(xs, params))
    assert same_bits(kernel.vjp(xs, params, np.ones(3)), library.vjp(xs, params, np.ones(3)))
    out = np.empty((5, 6, 3))
    assert library(xs, params, out=out) is out and same_bits(kernel(xs, params), out)
    with pytest.raises(ValueError, match=r"argument 'arg0' has shape \(5, 6, 3\).*core shape \(4,\)"):
        library(xs[..., :3], params)
    with pytest.raises(TypeError, match="takes 2 arguments"):
        library(xs)
    with pytest.raises(ValueError, match="does not export 'jacobian'"):
        library.jacobian(xs, params)


def test_a_large_batch_runs_on_threads_with_the_same_results(tmp_path):
    kernel = several()
    library = load(gc.export_native(kernel, tmp_path, methods=["vjp"]).library)
    rng = np.random.default_rng(5)
    xs, ps, vs = (rng.normal(size=(200_003, m)) for m in (4, 2, 3))
    assert same_bits(kernel.vjp(xs, ps, vs), library.vjp(xs, ps, vs))


def test_a_process_without_numba_or_sympy_loads_and_runs_the_library(tmp_path):
    kernel = several()
    export = gc.export_native(kernel, tmp_path, methods=["value", "vjp"])
    xs = np.random.default_rng(6).normal(size=(11, 4))
    np.save(tmp_path / "xs.npy", xs)
    np.save(tmp_path / "expected.npy", kernel.vjp(xs, [0.3, 0.7], np.ones(3)))
    script = textwrap.dedent(f"""\
        import sys
        sys.modules["numba"] = sys.modules["sympy"] = sys.modules["llvmlite"] = None  # importing them fails
        import numpy as np
        from gradcomp.native import load
        library = load({str(export.library)!r})
        got = library.vjp(np.load({str(tmp_path / 'xs.npy')!r}), [0.3, 0.7], np.ones(3))
        expected = np.load({str(tmp_path / 'expected.npy')!r})
        assert got.tobytes() == expected.tobytes(), (got, expected)
        assert not any(name.split(".")[0] in ("numba", "sympy", "llvmlite") for name in sys.modules
                       if sys.modules[name] is not None)
        print("ok")
        """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_the_entry_points_return_status_codes_for_null_pointers_and_negative_counts(tmp_path):
    import ctypes
    export = gc.export_native(seed(), tmp_path, methods=["vjp"])
    library = ctypes.CDLL(str(export.library))
    x, v, g = (np.ones(3), np.ones(1), np.zeros(3))
    vjp, batch = library.seed_vjp, library.seed_vjp_batch
    vjp.argtypes = [ctypes.c_void_p] * 3
    batch.argtypes = [ctypes.c_int64] + [ctypes.c_void_p] * 3
    assert vjp(x.ctypes.data, v.ctypes.data, g.ctypes.data) == 0 and list(g) == [2, 2, 2]
    assert vjp(x.ctypes.data, None, g.ctypes.data) == 1
    assert batch(-1, x.ctypes.data, v.ctypes.data, g.ctypes.data) == 2
    assert batch(0, None, None, None) == 0  # no points: nothing is read or written
    assert "SEED_NULL_POINTER = 1" in export.header.read_text()


@needs_cc
def test_a_static_library_links_into_a_c_program(tmp_path):
    export = gc.export_native(seed(), tmp_path, methods=["vjp"], kind="static")
    assert export.library.name == "libseed.a"
    source = tmp_path / "main.c"
    source.write_text(textwrap.dedent("""\
        #include <stdio.h>
        #include "seed.h"
        int main(void) {
            double x[SEED_ARG0_SIZE] = {1.0, 2.0, 3.0}, v[SEED_V_SIZE] = {1.0}, g[SEED_VJP_ARG0_SIZE];
            if (seed_vjp(x, v, g) != SEED_OK) return 1;
            printf("%.17g %.17g %.17g\\n", g[0], g[1], g[2]);
            return 0;
        }
        """))
    subprocess.run([CC, *C_FLAGS, "-I", str(tmp_path), str(source), str(export.library), "-lm", "-o",
                    str(tmp_path / "main")], check=True)
    assert subprocess.run([str(tmp_path / "main")], capture_output=True, text=True).stdout.split() == ["2", "4", "6"]


@needs_cc
def test_the_header_compiles_as_cpp_too(tmp_path):
    cxx = shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    export = gc.export_native(seed(), tmp_path, methods=["value"])
    source = tmp_path / "main.cpp"
    source.write_text('#include "seed.h"\nint main() { double x[3] = {1, 2, 3}, y[1]; return seed(x, y); }\n')
    subprocess.run([cxx, "-Wall", "-Werror", "-pedantic", "-I", str(tmp_path), str(source), str(export.library),
                    "-o", str(tmp_path / "main")], check=True)


def _elf_machine(path) -> int:
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF"
    return int.from_bytes(data[18:20], "little")


def test_an_object_for_aarch64_names_that_machine(tmp_path):
    export = gc.export_native(several(), tmp_path, methods=["value", "vjp"], target="aarch64-linux-gnu",
                              kind="object")
    assert export.library.name == "several_float64.o" and _elf_machine(export.library) == 183  # EM_AARCH64
    assert "Built for aarch64-linux-gnu" in export.header.read_text()


def test_an_object_for_another_x86_cpu_has_its_lane_count(tmp_path):
    export = gc.export_native(seed(), tmp_path, methods=["vjp"], target="x86_64-linux-gnu", cpu="haswell",
                              kind="object")
    assert _elf_machine(export.library) == 62  # EM_X86_64
    assert "batches 4 points at a time" in export.header.read_text()  # AVX2: 4 doubles


@pytest.mark.parametrize("arguments, message", [
    (dict(kind="dll"), "kind must be one of"),
    (dict(methods=["gradient"]), "unknown method 'gradient'"),
    (dict(methods=["hessian"]), "has no method 'hessian'"),
    (dict(methods=[]), "methods is empty"),
    (dict(name="my-kernel"), "not a C identifier"),
    (dict(target="vax-dec-ultrix"), "LLVM cannot build for target 'vax-dec-ultrix'"),
])
def test_bad_export_arguments_name_the_problem_and_write_nothing(arguments, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        gc.export_native(several(), tmp_path / "out", **arguments)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_an_unnamed_kernel_needs_a_c_prefix(tmp_path):
    kernel = gc.compile(x0 * x1, [[x0, x1]], cache=False)
    with pytest.raises(ValueError, match="needs a C prefix"):
        gc.export_native(kernel, tmp_path)
    assert gc.export_native(kernel, tmp_path, name="product").header.name == "product.h"


def test_a_function_numba_computes_with_its_own_helpers_is_refused(tmp_path):
    kernel = gc.compile(sp.loggamma(x0) + x1, [[x0, x1]], name="lg", cache=False)
    with pytest.raises(ValueError, match="loggamma, which a native library cannot carry"):
        gc.export_native(kernel, tmp_path)


def test_an_export_replaces_the_files_of_an_earlier_one(tmp_path):
    first = gc.export_native(seed(), tmp_path, methods=["value"])
    second = gc.export_native(seed(), tmp_path, methods=["value", "vjp"])
    assert first.library == second.library and "seed_vjp" in second.header.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["libseed.so", "seed.h"]
    assert prod(load(second.library).grad([1.0, 2.0, 3.0]).shape) == 3
