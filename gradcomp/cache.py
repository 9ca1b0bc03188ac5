"""Stage 4: the kernel cache on disk.

Layout under the cache root (one directory per layout version)::

    CACHEDIR.TAG               marks the directory as a gradcomp cache (and a cache to backup tools), where
                               gradcomp created it or found it empty
    v1/CACHEDIR.TAG            marks the layout directory gradcomp writes into, whatever else the root holds
    v1/index/<key>.json        key -> generated module, versions, creation; its mtime is the last use
    v1/modules/k_<skey>.py     the generated module; Python's and Numba's __pycache__ sit beside it
    v1/names/<name>.json       registered name -> key
    v1/locks/<key>.lock        held (flock) while one process compiles that key

``key`` hashes what the user compiled plus every version involved; ``skey``
hashes the generated source, so a module file is verified by its own name.
Every write goes to a temporary file renamed into place: a killed process
leaves at worst a stray temporary file, which ``prune`` removes.  Loading
runs the cached code, so the root must belong to the user and be writable by
no one else.  The maintenance operations (``entries``, ``prune``, ``clear``)
touch only files whose names gradcomp writes, and ``existing_cache`` refuses a
directory that is not a gradcomp cache.  Nothing here imports SymPy.
"""

from __future__ import annotations

import contextlib
import copyreg
import functools
import hashlib
import json
import logging
import os
import platform
import re
import stat
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from . import numba_cache
from .drivers import import_module, source_key
from .errors import CacheError
from .loops import LoopKernel
from .record import DRIVERS, LoopRecord
from .runtime import Kernel
from .version import __version__

LAYOUT = "v1"
DEFAULT_MAX_BYTES = 1 << 30
STRAY_AGE_S = 600
"""A temporary file, unindexed module or lock this old belongs to no live writer."""

_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,100}")
_HEX = re.compile(r"[0-9a-f]{8,64}")

MARKER = "CACHEDIR.TAG"
"""Written into a cache root that gradcomp creates (or finds empty); see https://bford.info/cachedir/."""
_MARKER_TEXT = ("Signature: 8a477f597d28d172789f06886806bc55\n"
                "# This directory is a gradcomp kernel cache: `gradcomp cache info --cache <this directory>`.\n"
                "# For information about cache directory tags see https://bford.info/cachedir/\n")
_LAYOUT_DIRS = ("index", "modules", "names", "locks")
_TEMPORARY = r"\..+\.tmp"  # what _write_atomic leaves if killed
_OWN_FILES = {  # folder under the layout directory -> the names of the files gradcomp writes there
    "": re.compile(rf"{MARKER}|{_TEMPORARY}"),
    "index": re.compile(rf"[0-9a-f]{{8,64}}\.json|{_TEMPORARY}"),
    "modules": re.compile(rf"k_[0-9a-f]{{8,64}}\.py|{_TEMPORARY}"),
    "modules/__pycache__": re.compile(r"k_[0-9a-f]{8,64}\..+"),  # Python's .pyc, Numba's .nbi/.nbc (and temporaries)
    "names": re.compile(rf"[A-Za-z0-9_.\-]{{1,100}}\.json|{_TEMPORARY}"),
    "locks": re.compile(r"[0-9a-f]{8,64}\.lock"),
}

log = logging.getLogger("gradcomp")


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


def max_bytes() -> int:
    """$GRADCOMP_CACHE_MAX_BYTES, else 1 GiB: the size above which least recently used entries go."""
    text = os.environ.get("GRADCOMP_CACHE_MAX_BYTES")
    if not text:
        return DEFAULT_MAX_BYTES
    try:
        limit = int(text)
    except ValueError:
        limit = -1
    if limit < 0:
        raise ValueError(f"GRADCOMP_CACHE_MAX_BYTES={text!r} is not a byte count; set it to an integer >= 0.")
    return limit


@functools.cache
def current_versions() -> dict[str, str]:
    """Versions an entry depends on, read without importing SymPy or Numba."""
    from importlib.metadata import PackageNotFoundError, version
    versions = {"gradcomp": __version__, "gradcomp code": _code_hash(),
                "python": platform.python_version(), "machine": platform.machine()}
    for package in ("sympy", "numba", "llvmlite", "numpy"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _code_hash(package: Path | None = None) -> str:
    """Every ``*.py`` file of the gradcomp package (path and text, recursively, sorted).

    Whatever module shapes generated code -- today's stages or one added
    later -- a change to it must miss, version bump or not; no hand-kept list
    can fall behind.
    """
    package = Path(__file__).parent if package is None else package
    digest = hashlib.sha256()
    files = sorted((path.relative_to(package).as_posix(), path) for path in package.rglob("*.py"))
    for relative, path in files:
        data = path.read_bytes()
        digest.update(f"{relative}\0{len(data)}\0".encode() + data)
    return digest.hexdigest()[:16]


def explaining() -> bool:
    """Say why compiles miss: $GRADCOMP_EXPLAIN=1, or the 'gradcomp' logger at DEBUG."""
    return os.environ.get("GRADCOMP_EXPLAIN", "") not in ("", "0") or log.isEnabledFor(logging.DEBUG)


class KernelNotFoundError(KeyError):
    """``gc.load(name)`` found no kernel under ``name``.

    A ``KeyError`` (what ``load`` has always raised), whose message says which
    cache was searched, which names it holds and how to register the name.
    """

    def __str__(self) -> str:  # KeyError's own str() is the repr of its message
        return str(self.args[0]) if self.args else ""


class _Damaged(Exception):
    """An entry whose files cannot be read back; the message says which file and how."""


@dataclass
class Entry:
    """One cached kernel as ``gradcomp cache list`` shows it."""

    key: str
    name: str | None
    source_key: str
    size: int
    last_used: float
    versions: dict
    compiled: dict[str, list[str]]
    """method -> the drivers ('serial', 'parallel') Numba has machine code for."""

    @property
    def stale(self) -> bool:
        return self.versions != current_versions()


class Cache:
    """One cache directory."""

    def __init__(self, root: str | os.PathLike, *, create: bool = True, deriver=None):
        """Open the cache at ``root``; ``create=False`` writes nothing, not even the directory.  ``deriver``
        is handed to every kernel read from it (see ``Kernel``).

        Raises CacheError if ``root`` is a file, or belongs to another user or
        is writable by others.
        """
        self.root = Path(root).expanduser().resolve()
        self.deriver = deriver
        self.base = self.root / LAYOUT
        self.unwritable: OSError | None = None
        """Why the root could not be created, if it could not."""
        _check_not_a_file(self.root)
        if create:
            try:
                self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                self.unwritable = exc
        if self.root.is_dir():
            check_private(self.root)
            if create:
                self._mark()

    def _mark(self) -> None:
        """Write the marker file into a root that holds nothing but gradcomp's layout (a new root holds nothing)."""
        marker = self.root / MARKER
        if marker.exists():
            return
        with contextlib.suppress(OSError):
            if _only_layout(self.root):
                _write_atomic(marker, _MARKER_TEXT)

    def _mark_layout(self) -> None:
        """Mark the layout directory before the first file goes into it: what gradcomp wrote is then known
        to be gradcomp's even in a directory that holds the user's own files beside it (``is_cache_dir``)."""
        marker = self.base / MARKER
        if not marker.exists():
            _write_atomic(marker, _MARKER_TEXT)

    # -- paths -------------------------------------------------------------
    def _index_path(self, key: str) -> Path:
        return self.base / "index" / f"{key}.json"

    def _name_path(self, name: str) -> Path:
        return self.base / "names" / f"{name}.json"

    def _lock_path(self, key: str) -> Path:
        return self.base / "locks" / f"{key}.lock"

    def module_path(self, source_key: str) -> Path:
        return self.base / "modules" / f"k_{source_key}.py"

    # -- reading -----------------------------------------------------------
    def lookup(self, key: str) -> Kernel | None:
        """The kernel stored under ``key``, or None.  A damaged entry is reported, removed and missed."""
        kernel, _ = self._lookup(key)
        return kernel

    def load(self, name: str) -> Kernel:
        """The kernel last compiled (or hit) under ``name``; raises KernelNotFoundError (a KeyError)."""
        check_name(name)
        try:
            key = json.loads(self._name_path(name).read_text())["key"]
        except (OSError, ValueError, KeyError, TypeError):
            raise KernelNotFoundError(
                f"no kernel named {name!r} in the cache at {self.root}: {self._holdings()}. Compile it with "
                f"gc.compile(..., name={name!r}) into this cache first, or pass the cache= (or set "
                f"$GRADCOMP_CACHE_DIR to the directory) it was compiled into.") from None
        kernel = self.lookup(key)
        if kernel is None:
            raise KernelNotFoundError(
                f"the kernel named {name!r} is gone from the cache at {self.root} (its entry was pruned, cleared or "
                f"damaged); compile it again with gc.compile(..., name={name!r}).")
        return kernel

    def names(self) -> list[str]:
        """The names registered with compile(..., name=), sorted."""
        folder = self.base / "names"
        try:
            return sorted(p.stem for p in folder.iterdir() if p.suffix == ".json" and _NAME.fullmatch(p.stem))
        except OSError:
            return []

    def _holdings(self) -> str:
        """'it holds the names 'a', 'b'', or why it holds none: for a message."""
        if not self.root.is_dir():
            return "that directory does not exist"
        names = self.names()
        if not names:
            return "it holds no named kernels"
        shown = ", ".join(repr(n) for n in names[:20])
        return f"it holds the name{'s' if len(names) > 1 else ''} {shown}" + (
            f" and {len(names) - 20} more (`gradcomp cache list`)" if len(names) > 20 else "")

    def _lookup(self, key: str) -> tuple[Kernel | None, str | None]:
        """(kernel or None, why a present entry could not be used)."""
        try:
            return self._open_entry(key), None
        except _Damaged as damage:
            warnings.warn(f"gradcomp cache: {damage}; rebuilding that entry.", stacklevel=4)
            self._discard_index(key)
            return None, str(damage)

    def _open_entry(self, key: str) -> Kernel | None:
        index_path = self._index_path(key)
        try:
            entry = json.loads(index_path.read_text())
            module_key = entry["source_key"]
            if not isinstance(module_key, str) or not _HEX.fullmatch(module_key):
                raise ValueError(f"source_key {module_key!r} is not a hash")
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise _Damaged(f"index file {index_path} is damaged ({type(exc).__name__}: {exc})") from None
        path = self.module_path(module_key)
        if not _holds(path, module_key):
            _remove(path)
            raise _Damaged(f"module {path} is missing, truncated or altered (its text does not hash to its name)")
        kernel = self._file_kernel(path, key)
        if kernel.key != key:
            raise _Damaged(f"index file {index_path} points to module {path}, which holds key {kernel.key}")
        with contextlib.suppress(OSError):
            os.utime(index_path)  # last use, for LRU pruning: no rewrite, no fsync on a hit
        return kernel

    def _file_kernel(self, path: Path, key: str) -> Kernel:
        """A kernel run from its module file, with Numba's cache guarded; damaged bytecode is dropped."""
        source = path.read_text()
        try:
            module = import_module(source, str(path), key)
        except Exception as exc:  # a damaged __pycache__/*.pyc raises EOFError, ValueError, ...
            removed = self._remove_bytecode(path)
            try:
                module = import_module(source, str(path), key)
            except Exception as again:
                raise _Damaged(f"module {path} does not import ({type(again).__name__}: {again})") from None
            warnings.warn(f"gradcomp cache: bytecode of {path} was damaged ({type(exc).__name__}: {exc}); "
                          f"removed {len(removed)} file(s).", stacklevel=5)
        numba_cache.guard(module)
        return kernel_class(module.META)(module.META, source, str(path), str(self.root), self.deriver)

    # -- writing -----------------------------------------------------------
    def store(self, source: str, source_key: str, meta, subject: str | None = None) -> Kernel:
        """Write the module (unless an intact copy is there) and its index entry; raises OSError if it cannot."""
        self._mark_layout()
        path = self.module_path(source_key)
        if not _holds(path, source_key):
            _write_atomic(path, source)
        entry = {"key": meta.key, "source_key": source_key, "name": meta.name, "subject": subject,
                 "versions": current_versions(), "created": time.time()}
        _write_atomic(self._index_path(meta.key), json.dumps(entry, indent=1))
        if meta.name:
            _write_atomic(self._name_path(meta.name), json.dumps({"key": meta.key}))
        kernel = self._file_kernel(path, meta.key)
        self.prune(keep=meta.key)
        return kernel

    def get_or_build(self, key: str, build: Callable, *, subject: str | None = None,
                     name: str | None = None) -> Kernel:
        """The cached kernel for ``key``, else ``build()`` (a codegen Module) stored under it.

        One process builds a key at a time (a lock per key); the others wait
        and then find its entry.  A cache that cannot be written degrades to a
        kernel in memory, with one warning.
        """
        started = time.perf_counter()
        kernel, damage = self._lookup(key)
        if kernel is None:
            self._explain_miss(key, subject, name, damage)
            with self.entry_lock(key):
                kernel, _ = self._lookup(key)  # built by another process while this one waited
                if kernel is None:
                    return self._build_and_store(build, subject)
        if name:
            self._claim(name, key)
        log.info("cache hit %s (%s) in %.3f s", key[:12], name or "unnamed", time.perf_counter() - started)
        return kernel

    def _claim(self, name: str, key: str) -> None:
        """Point ``name`` at ``key`` on a hit: a name means what was compiled under it last, not what was built last."""
        path = self._name_path(name)
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            if json.loads(path.read_text())["key"] == key:
                return  # the usual hit: no write
        try:
            _write_atomic(path, json.dumps({"key": key}))
        except OSError as exc:
            warnings.warn(f"gradcomp cache: cannot register the name {name!r} in {self.root} ({exc}); "
                          f"gc.load({name!r}) may return what was compiled under that name before.", stacklevel=4)

    def _build_and_store(self, build: Callable, subject: str | None) -> Kernel:
        module = build()
        try:
            if self.unwritable is not None:
                raise self.unwritable
            return self.store(module.source, source_key(module.source), module.meta, subject)
        except OSError as exc:
            warnings.warn(f"gradcomp cache: cannot write to {self.root} ({exc}); this kernel is compiled in "
                          f"memory only and will be compiled again by the next process.", stacklevel=4)
            return kernel_class(module.meta)(module.meta, module.source, deriver=self.deriver)

    @contextlib.contextmanager
    def entry_lock(self, key: str) -> Iterator[None]:
        """Exclusive while held, across processes and threads (flock); a lock left by a dead process is free."""
        try:
            import fcntl
            path = self._lock_path(key)
            _make_private_dirs(path.parent)
            self._mark_layout()
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except (ImportError, OSError):  # no flock (Windows) or a read-only cache: build unlocked
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _explain_miss(self, key: str, subject: str | None, name: str | None, damage: str | None) -> None:
        if not explaining():
            return
        if damage:
            reason = f"corrupted entry: {damage}"
        else:
            reason = self._why_absent(key, subject, name)
        level = logging.WARNING if os.environ.get("GRADCOMP_EXPLAIN", "") not in ("", "0") else logging.DEBUG
        log.log(level, "cache miss %s (%s) in %s: %s", key[:12], name or "unnamed", self.root, reason)

    def _why_absent(self, key: str, subject: str | None, name: str | None) -> str:
        now = current_versions()
        for entry in self._index_entries():
            if subject is not None and entry.get("subject") == subject:
                then = entry.get("versions") or {}
                changed = ", ".join(f"{p} {then.get(p, '?')} -> {v}" for p, v in now.items() if then.get(p) != v)
                return f"version change since entry {entry['key'][:12]} was compiled ({changed or 'platform'})"
        if name:
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                previous = json.loads(self._name_path(name).read_text())["key"]
                return f"new expression, arguments or options for the name {name!r} (it had key {previous[:12]})"
        return "new expression, arguments or options: nothing like it was compiled into this cache"

    # -- inventory and pruning ----------------------------------------------
    def entries(self) -> list[Entry]:
        """Every readable entry, least recently used first."""
        files = self._module_files()
        result = []
        for entry in self._index_entries():
            module_key = entry["source_key"]
            own = files.get(module_key, [])
            result.append(Entry(
                key=entry["key"], name=entry.get("name"), source_key=module_key,
                size=sum(_size(p) for p in own) + _size(self._index_path(entry["key"])),
                last_used=entry["last_used"], versions=entry.get("versions") or {},
                compiled=_compiled_drivers(own)))
        return sorted(result, key=lambda e: e.last_used)

    def total_bytes(self) -> int:
        """The size of every file gradcomp wrote here."""
        return sum(_size(p) for p in self._own_files())

    def prune(self, limit: int | None = None, keep: str | None = None) -> dict[str, int]:
        """Remove stray and damaged files, entries of other versions, then least recently used entries
        until the cache fits in ``limit`` bytes (default ``max_bytes()``).  Never removes ``keep``."""
        limit = max_bytes() if limit is None else limit
        removed = {"stray files": self._remove_strays(), "stale entries": 0, "entries over the size limit": 0}
        live = []
        for entry in self.entries():
            if entry.key == keep:
                continue
            if entry.stale:
                self._remove_entry(entry)
                removed["stale entries"] += 1
            else:
                live.append(entry)
        removed["stray files"] += self._remove_orphans()
        total = self.total_bytes()
        for entry in live:  # least recently used first
            if total <= limit:
                break
            self._remove_entry(entry)
            total -= entry.size
            removed["entries over the size limit"] += 1
        return removed

    def clear(self) -> int:
        """Remove every file gradcomp wrote under the layout directory, then its folders if that left them
        empty; anything else in the directory stays.  Returns the bytes freed."""
        freed = 0
        for path in self._own_files():
            size = _size(path)
            if _remove(path):
                freed += size
        for folder in sorted(_OWN_FILES, key=len, reverse=True):  # modules/__pycache__ before modules, the
            with contextlib.suppress(OSError):                  # layout directory ("") last
                (self.base / folder).rmdir()
        return freed

    def _own_files(self) -> Iterator[Path]:
        """Every file under the layout directory whose name gradcomp writes there (no one else's)."""
        for folder, pattern in _OWN_FILES.items():
            try:
                children = list((self.base / folder).iterdir())
            except OSError:
                continue
            for path in children:
                if pattern.fullmatch(path.name) and (path.is_symlink() or path.is_file()):
                    yield path

    def _index_entries(self) -> Iterator[dict]:
        """Parsed index files (damaged ones skipped: lookups and prune deal with those)."""
        for path in sorted((self.base / "index").glob("*.json")):
            try:
                entry = json.loads(path.read_text())
                entry["last_used"] = path.stat().st_mtime
                if entry["key"] == path.stem and _HEX.fullmatch(entry["source_key"]):
                    yield entry
            except (OSError, ValueError, KeyError, TypeError):
                continue

    def _module_files(self) -> dict[str, list[Path]]:
        """source key -> its module file and everything Python and Numba cached for it."""
        groups: dict[str, list[Path]] = {}
        modules = self.base / "modules"
        for path in [*modules.glob("k_*"), *(modules / "__pycache__").glob("k_*")]:
            module_key = path.name[2:].split(".", 1)[0]
            groups.setdefault(module_key, []).append(path)
        return groups

    def _remove_entry(self, entry: Entry) -> None:
        self._discard_index(entry.key)
        for path in self._module_files().get(entry.source_key, []):
            _remove(path)
        if entry.name:
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                if json.loads(self._name_path(entry.name).read_text())["key"] == entry.key:
                    _remove(self._name_path(entry.name))

    def _discard_index(self, key: str) -> None:
        _remove(self._index_path(key))

    def _remove_bytecode(self, path: Path) -> list[Path]:
        stale = list((path.parent / "__pycache__").glob(f"{path.stem}.*.pyc"))
        for pyc in stale:
            _remove(pyc)
        return stale

    def _remove_strays(self) -> int:
        """Temporary files of killed writers, damaged index files, old unheld locks."""
        count = 0
        cutoff = time.time() - STRAY_AGE_S
        for path in self._own_files():
            temporary = path.name.endswith(".tmp") or ".tmp." in path.name  # ours, then Numba's
            if temporary and _mtime(path) < cutoff:
                count += _remove(path)
        for path in (self.base / "index").glob("*.json"):
            try:
                json.loads(path.read_text())["source_key"]
            except (ValueError, KeyError, TypeError):
                count += _remove(path)
            except OSError:
                continue
        return count + self._remove_old_locks(cutoff)

    def _remove_old_locks(self, cutoff: float) -> int:
        try:
            import fcntl
        except ImportError:
            return 0
        count = 0
        for path in (self.base / "locks").glob("*.lock"):
            if _mtime(path) >= cutoff:
                continue
            try:
                fd = os.open(path, os.O_RDWR)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                count += _remove(path)
            except OSError:
                pass  # held: a compile is running
            finally:
                os.close(fd)
        return count

    def _remove_orphans(self) -> int:
        """Module files no index entry points to (old enough not to be a store in progress); dead names."""
        indexed = {entry["source_key"] for entry in self._index_entries()}
        cutoff = time.time() - STRAY_AGE_S
        count = 0
        for module_key, paths in self._module_files().items():
            if module_key not in indexed and all(_mtime(p) < cutoff for p in paths):
                count += sum(_remove(p) for p in paths)
        for path in (self.base / "names").glob("*.json"):
            try:
                key = json.loads(path.read_text())["key"]
            except (OSError, ValueError, KeyError, TypeError):
                key = None
            if key is None or not self._index_path(str(key)).exists():
                count += _remove(path)
        return count


def check_private(root: Path) -> None:
    """Refuse a cache directory another user owns or can write to: loading from it runs its code."""
    if os.name != "posix":
        return
    info = root.stat()
    if info.st_uid != os.getuid():
        raise CacheError(
            f"the cache directory {root} belongs to user id {info.st_uid}, not to you (user id {os.getuid()}); "
            f"loading kernels from it would run code someone else wrote. Use a directory of your own "
            f"(cache=... or $GRADCOMP_CACHE_DIR).")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        who = "its group and other users" if info.st_mode & stat.S_IWOTH and info.st_mode & stat.S_IWGRP else (
            "other users" if info.st_mode & stat.S_IWOTH else "its group")
        raise CacheError(
            f"the cache directory {root} has mode {stat.S_IMODE(info.st_mode):o}: {who} can write to it and so "
            f"make gradcomp run their code. Fix it with `chmod go-w {root}`, or use another directory.")


def _check_not_a_file(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise CacheError(f"the cache path {root} is a file, not a directory; pass a directory for the cache "
                         f"(cache=..., --cache or $GRADCOMP_CACHE_DIR).")


def _only_layout(root: Path) -> bool:
    """Whether ``root`` holds nothing but gradcomp's files: the marker, the layout directory with only its own
    folders in it, temporary files of the marker (raises OSError if it cannot be read)."""
    for child in root.iterdir():
        if child.name == LAYOUT and child.is_dir() and not child.is_symlink():
            if not all((sub.name in _LAYOUT_DIRS and sub.is_dir()) or sub.name == MARKER for sub in child.iterdir()):
                return False
        elif child.name != MARKER and not re.fullmatch(rf"\.{MARKER}\..+\.tmp", child.name):
            return False
    return True


def is_cache_dir(root: str | os.PathLike) -> bool:
    """Whether ``root`` is a directory gradcomp compiled into: it or its layout directory holds gradcomp's
    marker file, or it holds nothing but gradcomp's layout (as caches written before the marker existed do),
    or nothing at all."""
    root = Path(root)
    if not root.is_dir():
        return False
    for marker in (root / MARKER, root / LAYOUT / MARKER):
        with contextlib.suppress(OSError, UnicodeDecodeError):
            if "gradcomp" in marker.read_text():
                return True
    try:
        return _only_layout(root)
    except OSError as exc:
        raise CacheError(f"cannot read the cache directory {root} ({exc.strerror or exc}).") from None


def existing_cache(root: str | os.PathLike) -> Cache:
    """The gradcomp cache at ``root``, opened without creating anything; for commands that must touch only a
    cache gradcomp made.  Raises CacheError (saying what is there instead) for anything else."""
    path = Path(root).expanduser()
    hint = "pass the directory kernels were compiled into (cache=, --cache or $GRADCOMP_CACHE_DIR)"
    if not path.exists():
        raise CacheError(f"there is no gradcomp cache at {path}: the directory does not exist; {hint}.")
    _check_not_a_file(path)
    if not is_cache_dir(path):
        try:
            found = sorted(child.name for child in path.iterdir())
        except OSError:
            found = []
        shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        raise CacheError(
            f"{path} is not a gradcomp cache (it holds {shown}, and no {MARKER} written by gradcomp), so gradcomp "
            f"will not touch it; {hint}.")
    return Cache(path, create=False)


def check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"name={name!r} is not a valid kernel name; use letters, digits, '_', '-' or '.' "
                         f"(at most 100).")


def open_cache(cache, *, create: bool = True, deriver=None) -> Cache | None:
    """``cache`` as the user passes it: None (default directory), False (none) or a path."""
    if cache is False:
        return None
    if cache is None or cache is True:
        return Cache(default_root(), create=create, deriver=deriver)
    if isinstance(cache, Cache):
        return cache
    if isinstance(cache, (str, os.PathLike)):
        return Cache(cache, create=create, deriver=deriver)
    raise TypeError(f"cache must be None, False or a directory path, got {cache!r}.")


def _reduce_kernel(kernel: Kernel):
    """Pickling (registered with ``copyreg``, so the runtime needs no import of this module): the kernel's
    record, its source, the cache it came from and its deriver, for ``restore_kernel``."""
    return restore_kernel, (kernel._meta, kernel.source, kernel._cache_root, kernel._deriver)


copyreg.pickle(Kernel, _reduce_kernel)
copyreg.pickle(LoopKernel, _reduce_kernel)


def restore_kernel(meta, source: str, cache_root: str | None, deriver=None) -> Kernel:
    """Unpickling: run the module from the cache it came from when that cache is here and safe, else in memory."""
    if cache_root and Path(cache_root).is_dir():
        try:
            cache = Cache(cache_root, create=False, deriver=deriver)
            path = cache.module_path(source_key(source))
            if not _holds(path, source_key(source)):
                _write_atomic(path, source)
            return cache._file_kernel(path, meta.key)
        except (CacheError, OSError, _Damaged):
            pass  # not ours to use, or unwritable: the pickle carries all it needs
    return kernel_class(meta)(meta, source, None, None, deriver)


def kernel_class(meta) -> type:
    """The runtime class of a module's record: loops over runtime sizes, or the unrolled kernel."""
    return LoopKernel if isinstance(meta, LoopRecord) else Kernel


# -- files -----------------------------------------------------------------

def _write_atomic(path: Path, text: str) -> None:
    """Write to a temporary file beside ``path``, then rename: readers never see half a file."""
    _make_private_dirs(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        _remove(Path(tmp))
        raise


def _make_private_dirs(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)


def _holds(path: Path, module_key: str) -> bool:
    """Whether ``path`` exists and its text hashes to ``module_key``."""
    try:
        return source_key(path.read_text()) == module_key
    except (OSError, UnicodeDecodeError):
        return False


def _compiled_drivers(paths: list[Path]) -> dict[str, list[str]]:
    """From Numba's index files (``k_<skey>.<method>_<driver>-<line>.pyXY.nbi``): method -> drivers."""
    compiled: dict[str, list[str]] = {}
    for path in paths:
        if path.suffix != ".nbi":
            continue
        function = path.name.split(".")[1].rsplit("-", 1)[0]
        method, _, driver = function.rpartition("_")
        if driver in DRIVERS:
            compiled.setdefault(method, []).append(driver)
    return {method: sorted(drivers, key=DRIVERS.index) for method, drivers in sorted(compiled.items())}


def _remove(path: Path) -> int:
    try:
        path.unlink()
        return 1
    except OSError:
        return 0


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return time.time()
