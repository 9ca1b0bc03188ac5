import pytest
import sympy as sp


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Every test compiles into a throwaway cache unless it chooses its own."""
    import os
    os.environ.setdefault("GRADCOMP_CACHE_DIR", str(tmp_path_factory.mktemp("gradcomp-cache")))


@pytest.fixture
def xyz():
    return sp.symbols("x1 x2 x3")
