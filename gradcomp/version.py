"""The version, in a module of its own: the stages read it without importing the package back."""

__version__ = "0.1.0"
