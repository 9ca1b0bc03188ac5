"""Numba's own on-disk cache (``.nbi`` index, ``.nbc`` data), made to survive damaged files.

A truncated or garbage ``.nbi``/``.nbc`` makes Numba raise on every later load
instead of recompiling.  ``guard`` swaps each dispatcher's cache for one that
reports the damage once, deletes that function's cache files and lets Numba
compile and save afresh.  Numba writes each file to a temporary name and
renames it, so two processes compiling the same driver at once both compile
and the last rename wins with an equally valid file: nothing to lock.
"""

from __future__ import annotations

import functools
import glob
import os
import types
import warnings


def guard(module: types.ModuleType) -> None:
    """Give every cached Numba function of ``module`` a cache that recovers from damaged files."""
    from numba.core.caching import FunctionCache
    from numba.core.dispatcher import Dispatcher

    guarded = _guarded_cache_class()
    for value in vars(module).values():
        if isinstance(value, Dispatcher) and type(getattr(value, "_cache", None)) is FunctionCache:
            value._cache = guarded(value.py_func)


def cache_files(cache) -> list[str]:
    """The index and data files Numba keeps for one function."""
    index_path = cache._cache_file._index_path
    pattern = glob.escape(cache._impl.filename_base) + ".*.nbc"
    data_files = glob.glob(os.path.join(glob.escape(cache.cache_path), pattern))
    return [index_path, *data_files]


@functools.cache
def _guarded_cache_class():
    """Defined on first use: subclassing Numba's cache imports Numba."""
    from numba.core.caching import FunctionCache

    class GuardedFunctionCache(FunctionCache):
        """A FunctionCache that treats an unreadable file as a miss and removes it."""

        def load_overload(self, sig, target_context):
            try:
                return super().load_overload(sig, target_context)
            except Exception as exc:  # what a damaged pickle raises is open-ended
                self._discard(exc)
                return None

        def save_overload(self, sig, data):
            try:
                super().save_overload(sig, data)
            except OSError:
                pass  # read-only or full directory: the machine code stays in memory
            except Exception as exc:  # the index it merges into is damaged
                self._discard(exc)
                try:
                    super().save_overload(sig, data)
                except Exception:
                    pass

        def _discard(self, exc: Exception) -> None:
            files = cache_files(self)
            warnings.warn(
                f"gradcomp cache: Numba's cache of {self._py_func.__name__} in {self.cache_path} is damaged "
                f"({type(exc).__name__}: {exc}); deleted {len(files)} file(s) and compiling it again.",
                stacklevel=2)
            for path in files:
                try:
                    os.unlink(path)
                except OSError:
                    pass

    return GuardedFunctionCache
