"""One small layer, as a gradcomp kernel and in plain PyTorch: the PyTorch bridge's tests compare the two."""

import sympy as sp

import gradcomp as gc


def tanh_layer_kernel():
    """y_i = tanh(Σ_j W_ij x_j + b_i) · x_0, differentiated with respect to x and W (b is a parameter)."""
    @gc.kernel(x=3, W=(2, 3), b=2, wrt=("x", "W"), cache=False)
    def tanh_layer(x, W, b):
        return [sp.tanh(sum(W[i, j] * x[j] for j in range(3)) + b[i]) * x[0] for i in range(2)]
    return tanh_layer


def tanh_layer_reference(x, W, b):
    """The same layer on torch tensors with leading batch dimensions."""
    import torch
    return torch.tanh(x @ W.T + b) * x[..., :1]
