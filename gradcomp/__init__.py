"""gradcomp: SymPy functions compiled into Numba kernels for their value and derivatives.

Importing gradcomp imports neither SymPy nor Numba; compiling imports SymPy,
calling a kernel imports Numba.
"""

from .errors import CacheError, CompileError
from .version import __version__

__all__ = ["compile", "kernel", "derivative", "load", "solve", "export_native", "Kernel", "CompileError", "CacheError",
           "__version__"]


def __getattr__(name):
    if name in ("compile", "kernel", "derivative"):
        from . import compiler
        return getattr(compiler, name)
    if name == "load":
        from .build import load
        return load
    if name == "export_native":
        from .native_build import export_native
        return export_native
    if name == "solve":
        from .linalg import solve
        return solve
    if name == "Kernel":
        from .runtime import Kernel
        return Kernel
    raise AttributeError(f"module 'gradcomp' has no attribute {name!r}")
