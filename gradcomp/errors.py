"""The exceptions gradcomp raises on purpose."""


class CompileError(ValueError):
    """What the user asked to compile cannot be compiled; the message names the culprit."""


class CacheError(RuntimeError):
    """The kernel cache cannot be used safely (wrong owner, others can write to it, ...)."""
