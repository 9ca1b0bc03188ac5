"""A symbolic layer, compiled by gradcomp, trained inside a PyTorch model.

The layer y = tanh(W x + b) is written in SymPy and compiled (float32, like the
model); ``kernel.to_torch()`` makes it a differentiable torch function whose
backward is the compiled VJP.  W and b are ``nn.Parameter``s shared by the
whole batch: the bridge sums their per-sample gradients over the batch.  The
layer sits between two ``nn.Linear`` layers, so gradients also flow through it
(wrt x) into the first one.

Prints a gradient check against the same layer in plain PyTorch and the loss
as it goes down; saves torch_loss.png when matplotlib is installed.
``--small`` trains for 30 steps instead of 400.
"""

import argparse
from pathlib import Path

import sympy as sp
import torch
from torch import nn

import gradcomp as gc

IN, HIDDEN = 3, 4


@gc.kernel(x=IN, W=(HIDDEN, IN), b=HIDDEN, dtype="float32", name="torch_example_tanh_layer")
def tanh_layer(x, W, b):
    """tanh(W x + b), one output per hidden unit."""
    return [sp.tanh(sum(W[i, j] * x[j] for j in range(IN)) + b[i]) for i in range(HIDDEN)]


class SymbolicTanh(nn.Module):
    """tanh(W x + b) with gradcomp's compiled forward and backward."""

    def __init__(self):
        super().__init__()
        self.W = nn.Parameter(0.5 * torch.randn(HIDDEN, IN))
        self.b = nn.Parameter(torch.zeros(HIDDEN))
        self.function = tanh_layer.to_torch()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.function(x, self.W, self.b)


def target(x: torch.Tensor) -> torch.Tensor:
    """What the model learns: a smooth function of three inputs."""
    return torch.sin(2 * x[:, :1]) + x[:, 1:2] * x[:, 2:3]


def check_gradients(layer: SymbolicTanh) -> float:
    """Largest difference between the compiled backward and PyTorch's own, on a batch."""
    x = torch.randn(16, IN, requires_grad=True)
    layer(x).square().sum().backward()
    compiled = [x.grad.clone(), layer.W.grad.clone(), layer.b.grad.clone()]
    x.grad = layer.W.grad = layer.b.grad = None
    torch.tanh(x @ layer.W.T + layer.b).square().sum().backward()
    reference = [x.grad, layer.W.grad, layer.b.grad]
    layer.zero_grad()
    return max((a - b).abs().max().item() for a, b in zip(compiled, reference))


def plot(losses, out_dir: Path) -> None:
    """Training loss against step."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no picture)")
        return
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.semilogy(losses)
    axes.set(xlabel="Adam step", ylabel="mean squared error", title="PyTorch model with a gradcomp layer")
    path = out_dir / "torch_loss.png"
    figure.savefig(path, dpi=120, bbox_inches="tight")
    print(f"saved {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="30 training steps instead of 400")
    parser.add_argument("--out", type=Path, default=Path("."), help="directory for the PNG")
    options = parser.parse_args()
    steps = 30 if options.small else 400

    torch.manual_seed(0)
    torch.set_num_threads(1)  # tiny tensors: worker threads cost more than they save
    layer = SymbolicTanh()
    print(f"compiled backward vs PyTorch autograd: max difference {check_gradients(layer):.1e}")

    model = nn.Sequential(nn.Linear(IN, IN), layer, nn.Linear(HIDDEN, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    inputs = torch.rand(256, IN) * 2 - 1
    outputs = target(inputs)
    losses = []
    for step in range(steps):
        optimizer.zero_grad()
        loss = torch.mean((model(inputs) - outputs) ** 2)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % max(steps // 5, 1) == 0:
            print(f"step {step:4d}: loss {loss.item():.5f}")
    print(f"loss {losses[0]:.5f} -> {losses[-1]:.5f} after {steps} steps")
    options.out.mkdir(parents=True, exist_ok=True)
    plot(losses, options.out)


if __name__ == "__main__":
    main()
