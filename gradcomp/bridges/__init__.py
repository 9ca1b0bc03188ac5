"""Optional bridges to PyTorch and JAX; each imports its framework only when used."""
