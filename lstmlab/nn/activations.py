"""Activation functions of the LSTM family, with derivatives written in terms of their outputs.

The hand-written backward passes (``lstmlab.engines.bptt``, ``lstmlab.engines.rtrl``) keep only
activations, never pre-activations, so every derivative here is a function of the output y:

| name      | f(x)              | range    | f'(x) from y = f(x) | used for                     |
|-----------|-------------------|----------|---------------------|------------------------------|
| tanh      | tanh(x)           | (-1, 1)  | 1 - y²              | g and h of vanilla LSTM      |
| identity  | x                 | ℝ        | 1                   | NIAF (g), NOAF (h)           |
| bipolar2  | 4σ(x) - 2         | (-2, 2)  | 1 - y²/4            | g of the 1997 LSTM (lstm97)  |
| bipolar1  | 2σ(x) - 1         | (-1, 1)  | (1 - y²)/2          | h of the 1997 LSTM (lstm97)  |

Gates use the sharpened sigmoid of seed 000 Sec. 4, σ_α(x) = 1 / (1 + exp(-α x)), whose
derivative is α σ_α (1 - σ_α).
"""

from __future__ import annotations

import torch
from torch import Tensor

ACTIVATIONS = ("tanh", "identity", "bipolar2", "bipolar1")


def check_activation(name: str, arg: str) -> str:
    if name not in ACTIVATIONS:
        raise ValueError(f"{arg} must be one of {list(ACTIVATIONS)}, got {name!r}")
    return name


def activate(name: str, x: Tensor) -> Tensor:
    """f(x) for the activation ``name`` (out of place; autograd-friendly)."""
    if name == "tanh":
        return torch.tanh(x)
    if name == "identity":
        return x
    if name == "bipolar2":  # 4σ(x) - 2 = 2 tanh(x/2)
        return 2.0 * torch.tanh(0.5 * x)
    if name == "bipolar1":  # 2σ(x) - 1 = tanh(x/2)
        return torch.tanh(0.5 * x)
    raise ValueError(f"unknown activation {name!r}")


def derivative_from_output(name: str, y: Tensor) -> Tensor:
    """f'(x) expressed through y = f(x)."""
    if name == "tanh":
        return 1.0 - y * y
    if name == "identity":
        return torch.ones_like(y)
    if name == "bipolar2":
        return 1.0 - 0.25 * y * y
    if name == "bipolar1":
        return 0.5 * (1.0 - y * y)
    raise ValueError(f"unknown activation {name!r}")


def gate(x: Tensor, alpha: float) -> Tensor:
    """σ_α(x) = 1 / (1 + exp(-α x)), seed 000 Sec. 4."""
    return torch.sigmoid(x if alpha == 1.0 else alpha * x)
