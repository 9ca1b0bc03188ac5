"""Stage 4: the kernel cache on disk.

Layout under the cache root (one directory per layout version)::

    v1/index/<key>.json        key -> generated module (what was compiled, when, last use)
    v1/modules/k_<skey>.py     the generated module; Numba's __pycache__ sits beside it
    v1/names/<name>.json       registered name -> key

``key`` hashes what the user compiled plus every version involved; ``skey``
hashes the generated source, so a module file never changes once written.
Nothing here imports SymPy.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from .runtime import Kernel, import_module, source_key

LAYOUT = "v1"


def default_root() -> Path:
    """$GRADCOMP_CACHE_DIR, else the platform's user cache directory."""
    env = os.environ.get("GRADCOMP_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "gradcomp"


class Cache:
    """One cache directory."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()
        self.base = self.root / LAYOUT

    def _index_path(self, key: str) -> Path:
        return self.base / "index" / f"{key}.json"

    def _name_path(self, name: str) -> Path:
        return self.base / "names" / f"{name}.json"

    def module_path(self, source_key: str) -> Path:
        return self.base / "modules" / f"k_{source_key}.py"

    def lookup(self, key: str) -> Kernel | None:
        try:
            entry = json.loads(self._index_path(key).read_text())
            path = self.module_path(entry["source_key"])
            source = path.read_text()
        except (OSError, ValueError, KeyError):
            return None
        kernel = _kernel_from_file(source, path, self.root)
        if kernel is None or kernel.key != key:
            return None
        self._touch(key, entry)
        return kernel

    def store(self, source: str, source_key: str, meta: dict) -> Kernel:
        path = self.module_path(source_key)
        if not path.exists():
            _write_atomic(path, source)
        entry = {"key": meta["key"], "source_key": source_key, "name": meta["name"],
                 "created": time.time(), "last_used": time.time()}
        _write_atomic(self._index_path(meta["key"]), json.dumps(entry, indent=1))
        if meta["name"]:
            _write_atomic(self._name_path(meta["name"]), json.dumps({"key": meta["key"]}))
        return Kernel(meta, source, str(path), str(self.root))

    def load(self, name: str) -> Kernel:
        try:
            key = json.loads(self._name_path(name).read_text())["key"]
        except (OSError, ValueError, KeyError):
            raise KeyError(
                f"no kernel named {name!r} in the cache at {self.root}; compile it with "
                f"gc.compile(..., name={name!r}) first (with the same cache=).") from None
        kernel = self.lookup(key)
        if kernel is None:
            raise KeyError(f"the kernel named {name!r} is missing from the cache at {self.root}; compile it again.")
        return kernel

    def _touch(self, key: str, entry: dict) -> None:
        entry["last_used"] = time.time()
        try:
            _write_atomic(self._index_path(key), json.dumps(entry, indent=1))
        except OSError:
            pass


def open_cache(cache) -> Cache | None:
    """``cache`` as the user passes it: None (default directory), False (none) or a path."""
    if cache is False:
        return None
    if cache is None or cache is True:
        return Cache(default_root())
    if isinstance(cache, Cache):
        return cache
    if isinstance(cache, (str, os.PathLike)):
        return Cache(cache)
    raise TypeError(f"cache must be None, False or a directory path, got {cache!r}.")


def _write_atomic(path: Path, text: str) -> None:
    """Write to a temporary file beside ``path``, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _kernel_from_file(source: str, path: Path, root) -> Kernel | None:
    try:
        meta = import_module(source, str(path)).META
    except Exception:
        return None
    return Kernel(meta, source, str(path), str(root))


def restore_kernel(meta: dict, source: str, cache_root: str | None) -> Kernel:
    """Unpickling: reuse the module file in the cache when it is there, else write or run it."""
    module_key = source_key(source)
    cache = Cache(cache_root) if cache_root else None
    if cache is not None:
        path = cache.module_path(module_key)
        try:
            if not path.exists() or path.read_text() != source:
                _write_atomic(path, source)
            return Kernel(meta, source, str(path), str(cache.root))
        except OSError:
            pass
    return Kernel(meta, source, None, None)


def load(name: str, cache=None) -> Kernel:
    """A kernel compiled earlier under ``name``, from any process; needs no SymPy."""
    store = open_cache(cache)
    if store is None:
        raise ValueError("load() needs a cache directory; cache=False has none.")
    return store.load(name)
