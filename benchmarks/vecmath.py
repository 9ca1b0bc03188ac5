"""Throughput of gradcomp.vecmath: elements/s of each function, one thread.

Columns: a Numba loop calling ``math.<f>`` (scalar libm; Numba has no SVML), then vecmath on
``<8 x double>`` and on ``<16 x float>`` (an intrinsic loading W elements, ``vecmath.emit``, a store)
as built by default (internal functions, called), and inlined (``vecmath.INLINE = True``); the
ratio is default / math.  For float, ``via f64`` is vecmath's float computed by the double function
(fpext, ``<16 x double>``, fptrunc: what the functions without a native float implementation do),
and ``nat/via`` the speedup of the native float function over it.  Each figure is the best of 5
runs (the machine may be shared).

    python benchmarks/vecmath.py [--seconds 0.05] [names...]
"""

import argparse
import math
import time

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from gradcomp import vecmath

N = 4096  # elements per pass: in L1/L2, so the loop measures the arithmetic

INPUTS = {  # typical arguments: the fast paths (huge and special values go to libm and are not measured)
    "sin": (-10, 10), "cos": (-10, 10), "tan": (-10, 10), "exp": (-50, 50), "expm1": (-2, 2), "log": (1e-3, 1e3),
    "log1p": (-0.5, 10), "tanh": (-5, 5), "sinh": (-5, 5), "cosh": (-5, 5), "atan": (-10, 10), "asin": (-1, 1),
    "acos": (-1, 1), "atan2": (-10, 10), "pow": ((0, 10), (-10, 10)), "erf": (-4, 4), "erfc": (-4, 8),
    "asinh": (-10, 10), "acosh": (1, 10), "atanh": (-1, 1),
}
"""(low, high) of uniform samples; for pow, one pair per argument (x, y)."""
TWO_ARGUMENTS = ("atan2", "pow")


def _apply(name, width):
    @intrinsic
    def apply(typingctx, args, out, i):
        def codegen(context, builder, sig, llargs):
            element = context.get_value_type(sig.args[1].dtype)
            value_type = ir.VectorType(element, width)
            align = 4 if isinstance(element, ir.FloatType) else 8
            values = []
            for k, array_type in enumerate(sig.args[0]):
                array = context.make_array(array_type)(context, builder, builder.extract_value(llargs[0], k))
                pointer = builder.bitcast(builder.gep(array.data, [llargs[2]]), value_type.as_pointer())
                values.append(builder.load(pointer, align=align))
            out = context.make_array(sig.args[1])(context, builder, llargs[1])
            builder.store(vecmath.emit(builder, name, values),
                          builder.bitcast(builder.gep(out.data, [llargs[2]]), value_type.as_pointer()), align=align)
            return context.get_dummy_value()

        return types.void(args, out, i), codegen

    return apply


def vector_loop(name, width):
    apply = _apply(name, width)

    @njit
    def loop(args, out, repeats):
        for _ in range(repeats):
            for i in range(0, out.size, width):
                apply(args, out, i)

    return loop


def math_loop(name):
    function = getattr(math, name)
    if name in TWO_ARGUMENTS:
        @njit
        def loop(args, out, repeats):
            y, x = args
            for _ in range(repeats):
                for i in range(out.size):
                    out[i] = function(y[i], x[i])
    else:
        @njit
        def loop(args, out, repeats):
            (x,) = args
            for _ in range(repeats):
                for i in range(out.size):
                    out[i] = function(x[i])
    return loop


def rate(loop, args, out, seconds):
    """Elements per second: best of 5 runs of about ``seconds`` each (after compiling)."""
    loop(args, out, 1)
    repeats = 1
    while True:
        start = time.perf_counter()
        loop(args, out, repeats)
        elapsed = time.perf_counter() - start
        if elapsed > seconds / 4:
            break
        repeats *= 4
    repeats = max(1, int(repeats * seconds / elapsed))
    best = math.inf
    for _ in range(5):
        start = time.perf_counter()
        loop(args, out, repeats)
        best = min(best, time.perf_counter() - start)
    return repeats * out.size / best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=sorted(INPUTS))
    parser.add_argument("--seconds", type=float, default=0.05)
    options = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'Melem/s':8} {'math f64':>10} {'vec f64':>10} {'inlined':>10} {'ratio':>6} {'math f32':>10} "
          f"{'vec f32':>10} {'inlined':>10} {'ratio':>6} {'via f64':>10} {'nat/via':>7}")
    for name in options.names:
        n_args = 2 if name in TWO_ARGUMENTS else 1
        ranges = INPUTS[name] if isinstance(INPUTS[name][0], tuple) else (INPUTS[name],) * n_args
        row = [f"{name:8}"]
        for dtype, width in ((np.float64, 8), (np.float32, 16)):
            if name == "log":
                args = tuple(np.exp(rng.uniform(math.log(low), math.log(high), N)).astype(dtype)
                             for low, high in ranges)
            else:
                args = tuple(rng.uniform(low, high, N).astype(dtype) for low, high in ranges)
            out = np.empty(N, dtype)
            default = vecmath.INLINE
            scalar = rate(math_loop(name), args, out, options.seconds)
            called = rate(vector_loop(name, width), args, out, options.seconds)
            vecmath.INLINE = True
            inlined = rate(vector_loop(name, width), args, out, options.seconds)
            vecmath.INLINE = default
            row += [f"{scalar / 1e6:10.1f}", f"{called / 1e6:10.1f}", f"{inlined / 1e6:10.1f}",
                    f"{called / scalar:5.1f}x"]
            if dtype == np.float32:
                native = dict(vecmath._BUILDERS32)
                vecmath._BUILDERS32.clear()  # every float function through double, as before the native ones
                try:
                    via = rate(vector_loop(name, width), args, out, options.seconds)
                finally:
                    vecmath._BUILDERS32.update(native)
                row += [f"{via / 1e6:10.1f}", f"{called / via:6.1f}x"]
        print(" ".join(row), flush=True)


if __name__ == "__main__":
    main()
