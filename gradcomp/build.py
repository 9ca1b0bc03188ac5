"""Building a kernel's module — its keys, differentiation, code generation, its cache entry — when it is
compiled, and again when a method derived on first call (the Jacobian, the Hessian, ...) is first called.

Importing this module imports neither SymPy nor Numba, so ``load`` needs neither: the stages that need
SymPy are imported by the functions that run them.  It sits above the cache and the runtime and below the
compiler, and hands every kernel a ``Deriver`` so that the runtime never imports what builds it.
"""

from __future__ import annotations

import hashlib
import logging
import time

from .cache import current_versions, open_cache
from .drivers import collector_paused, source_key
from .runtime import Kernel

log = logging.getLogger("gradcomp")


class Deriver:
    """What a kernel calls to derive its deferred methods: ``deriver(kernel, names)`` is the kernel extended
    with them.  A plain value (it pickles by name), so a kernel loaded from the cache or unpickled gets one
    without importing SymPy; deriving imports it."""

    def __call__(self, kernel: Kernel, names: list[str]) -> Kernel:
        return extend(kernel, names)

    def __repr__(self) -> str:
        return "gradcomp.build.Deriver()"


DERIVER = Deriver()


def load(name: str, cache=None) -> Kernel:
    """A kernel compiled earlier under ``name``, from any process; needs no SymPy.

    Raises ``KernelNotFoundError`` (a ``KeyError``) naming the cache searched
    and the names it holds when ``name`` is not there.  Creates nothing.
    """
    store = open_cache(cache, create=False, deriver=DERIVER)
    if store is None:
        raise ValueError("load() needs a cache directory; cache=False has none.")
    return store.load(name)


def extend(kernel: Kernel, methods: list[str]) -> Kernel:
    """``kernel`` with deferred ``methods`` (the Jacobian, the Hessian, ...) derived too.

    The module is generated again with every method so far plus these, from
    the signature the module records, and replaces the kernel's cache entry, so
    a later process finds every method derived so far.
    """
    from .spec import load_signature

    started = time.perf_counter()
    signature = load_signature(kernel._import().SIGNATURE)
    methods = [*kernel.methods, *methods]
    store = open_cache(kernel._cache_root, deriver=DERIVER) if kernel._cache_root else None
    if store is None:
        module = generate_module(signature, kernel.key, started, methods)
        return Kernel(module.meta, module.source, deriver=DERIVER)
    with store.entry_lock(kernel.key):
        module = generate_module(signature, kernel.key, started, methods)
        return store.store(module.source, source_key(module.source), module.meta, subject_key(signature))


def generate_module(signature, key: str, started: float, methods=None):
    """Differentiate and print (the base methods unless ``methods`` are named): what a cache hit skips."""
    from .codegen import generate
    from .derive import BASE_METHODS, derive

    derived_at = time.perf_counter()
    with collector_paused():
        derivation = derive(signature, BASE_METHODS if methods is None else methods, memo_key=key)
        printed_at = time.perf_counter()
        module = generate(derivation, key)
    done_at = time.perf_counter()
    log.info("compiled %s: signature+key %.3f s, derive %.3f s, codegen %.3f s",
             signature.name or key[:12], derived_at - started, printed_at - derived_at, done_at - printed_at)
    return module


def subject_key(signature) -> str:
    """Hash of what was compiled: its expression DAG, arguments and options (no versions)."""
    import sympy as sp

    digest = hashlib.sha256()
    for part in (signature.name, signature.dtype, signature.wrt, signature.out_shape):
        digest.update(repr(part).encode() + b"\0")
    for argument in signature.arguments:
        digest.update(f"{argument.name}{argument.shape}{[sp.srepr(leaf) for leaf in argument.leaves]}".encode())
    for line in _dag_lines(signature.outputs):
        digest.update(line.encode() + b"\n")
    return digest.hexdigest()[:40]


def kernel_key(subject: str) -> str:
    """The cache key: the subject hash plus every version involved (a new version misses the cache)."""
    digest = hashlib.sha256(subject.encode())
    for package, version in sorted(current_versions().items()):
        digest.update(f"{package}={version}".encode() + b"\0")
    return digest.hexdigest()[:40]


def _dag_lines(roots):
    """The expression DAG as numbered lines, children first; linear in DAG size (srepr is tree size)."""
    import sympy as sp

    from .spec import postorder

    number: dict = {}
    for expr in postorder(roots):
        number[expr] = len(number)
        body = ",".join(str(number[a]) for a in expr.args) if expr.args else sp.srepr(expr)
        yield f"{type(expr).__name__}({body})"
    yield "outputs " + ",".join(str(number[r]) for r in roots)
