"""PyTorch's y.backward(gradient=v), reproduced with gradcomp's compiled VJP.

For y = f(x) with Jacobian J, backward(gradient=v) leaves vᵀJ in x.grad.
Two worked examples:
  z = Σ(xᵢ² + 2) at x = (1, 2, 3):                      ∇z  = (2, 4, 6)
  y = (x1·x2·x3, x1+x2+x3, x1+x2·x3), v = (0.1, 0.2, 0.3): vᵀJ = (1.1, 1.4, 1.0)
"""

import numpy as np
import sympy as sp

import gradcomp as gc

x1, x2, x3 = sp.symbols("x1 x2 x3")
x = np.array([1.0, 2.0, 3.0])
v = np.array([0.1, 0.2, 0.3])

z = gc.compile(sum(xi**2 + 2 for xi in (x1, x2, x3)), [[x1, x2, x3]], name="seed_sum_of_squares")
y = gc.compile([x1 * x2 * x3, x1 + x2 + x3, x1 + x2 * x3], [[x1, x2, x3]], name="seed")

gradient = z.grad(x)
vjp = y.vjp(x, v)
print("z = sum(x_i^2 + 2):  gradcomp grad      =", gradient)
print("y = (x1*x2*x3, ...): gradcomp v^T J     =", vjp)

try:
    import torch
except ImportError:
    print("(PyTorch is not installed: pip install 'gradcomp[torch]' to compare)")
else:
    xt = torch.tensor(x, requires_grad=True)
    (xt**2 + 2).sum().backward()
    print("                     torch  z.backward() =", xt.grad.numpy())
    xt = torch.tensor(x, requires_grad=True)
    a, b, c = xt
    torch.stack([a * b * c, a + b + c, a + b * c]).backward(gradient=torch.tensor(v))
    print("                     torch  y.backward(v) =", xt.grad.numpy())

np.testing.assert_allclose(gradient, [2.0, 4.0, 6.0])
np.testing.assert_allclose(vjp, [1.1, 1.4, 1.0])
