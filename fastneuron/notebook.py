"""The tutorial's own program, replicated: one ``nn.Linear(1, 1)`` learning f(x) = 2x + 1.

``python -m fastneuron.notebook`` runs it as the tutorial does (numpy sampling,
``nn.MSELoss``, ``optim.SGD(lr=0.01)``, 3000 steps) and prints its table in the
tutorial's own format, every 200 steps::

    Iteration 0|| weight:tensor([0.2515]), bias:tensor([0.0839]) Note the
tutorial's sampler: ``np.random.uniform(5)`` is ``uniform(low=5, high=1)``, so x
lies in (1, 5], although the tutorial's text says [0, 5].

:func:`train_tutorial` also accepts the SPEC's init and x stream, which ties this
autograd + ``torch.optim.SGD`` path to fastneuron's reference in the tests.
"""

from __future__ import annotations

import argparse
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim


class Net(nn.Module):
    """The tutorial's model: one input, one output."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(1, 1)

    def forward(self, x):
        return self.fc(x)


def train_tutorial(
    steps: int = 3000,
    lr: float = 0.01,
    *,
    init: Optional[tuple[float, float]] = None,
    sample_x: Optional[Callable[[int], float]] = None,
    print_every: Optional[int] = 200,
    sgd_options: Optional[dict] = None,
    a: float = 2.0,
    c: float = 1.0,
    log_every: Optional[int] = None,
):
    """The tutorial's loop. ``sample_x(i)`` gives x of step i (default: the tutorial's
    ``np.random.uniform(5)``); ``init`` sets (w0, b0) (default: ``nn.Linear``'s own).
    Returns the trained net and, with ``log_every``, the (step, w, b) after logged steps.
    """
    net = Net()
    if init is not None:
        with torch.no_grad():
            net.fc.weight.fill_(init[0])
            net.fc.bias.fill_(init[1])
    criterion = nn.MSELoss()
    optimizer = optim.SGD(net.parameters(), lr=lr, **(sgd_options or {}))
    if sample_x is None:
        sample_x = lambda i: np.random.uniform(5)  # noqa: E731  (the tutorial's own call)
    log = []
    for i in range(steps):
        x = sample_x(i)
        y = a * x + c  # the tutorial's label f(x) = 2x + 1, computed in Python floats
        inputs = torch.tensor([[x]], dtype=torch.float32)
        target = torch.tensor([[y]], dtype=torch.float32)
        optimizer.zero_grad()
        outputs = net(inputs)
        loss = criterion(outputs, target)
        loss.backward()
        optimizer.step()
        w, b = net.fc.weight.item(), net.fc.bias.item()
        if print_every and i % print_every == 0:
            # The tutorial prints the parameters' tensors: weight[0] and bias, shape (1,) each.
            print(f"Iteration {i}|| weight:{net.fc.weight.data[0]}, bias:{net.fc.bias.data}")
        if log_every and i % log_every == 0:
            log.append((i, w, b))
    return net, log


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m fastneuron.notebook",
        description="Run the tutorial's single-neuron training loop: one nn.Linear(1, 1) learning "
        "f(x) = 2x + 1 by SGD on nn.MSELoss, one sample x = np.random.uniform(5) (in (1, 5]) a step, "
        "printing 'Iteration i|| weight:tensor([w]), bias:tensor([b])' every 200 steps, as the "
        "tutorial does. This is the tutorial's own program (numpy and torch random streams), not "
        "fastneuron's engine: see 'python -m fastneuron train' for that.")
    parser.add_argument("--steps", type=int, default=3000, metavar="T",
                        help="training steps, one sample each (default: 3000, as the tutorial)")
    parser.add_argument("--lr", type=float, default=0.01,
                        help="the learning rate of optim.SGD (default: 0.01, as the tutorial)")
    parser.add_argument("--seed", type=int, default=None, metavar="S",
                        help="seed numpy (the samples) and torch (the initial weight and bias) for a "
                        "repeatable run (default: unseeded, as the tutorial)")
    args = parser.parse_args(argv)
    if args.seed is not None:
        np.random.seed(args.seed)
        torch.manual_seed(args.seed)
    train_tutorial(args.steps, args.lr)


if __name__ == "__main__":
    main()
