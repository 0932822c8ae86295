"""Gradient checking by central finite differences (seed 000: "the full gradient can be checked
numerically").

    report = check_gradients(lambda: model.loss(model(x, lengths), batch), model.parameters())
    assert report.max_relative_error < 1e-6

For every coordinate θ_k (or a random sample of ``max_coords`` of them) the numerical derivative
is (f(θ + ε e_k) − f(θ − ε e_k)) / 2ε, compared with the analytic gradient from ``backward``.
Use float64: in float32 the truncation/round-off trade-off caps the agreement near 1e-3.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["GradientCheck", "check_gradients", "numerical_gradient"]


@dataclass(frozen=True)
class GradientCheck:
    analytic: Tensor  # (K,) analytic derivatives at the checked coordinates
    numeric: Tensor  # (K,) central differences at the same coordinates
    max_relative_error: float  # max_k |a_k − n_k| / max(|a|_∞, |n|_∞, tiny)
    norm_relative_error: float  # ‖a − n‖ / max(‖a‖, ‖n‖, tiny)
    n_checked: int
    eps: float

    def __str__(self) -> str:
        return (
            f"GradientCheck({self.n_checked} coords, eps={self.eps:g}: "
            f"max rel {self.max_relative_error:.2e}, norm rel {self.norm_relative_error:.2e})"
        )


@torch.no_grad()
def numerical_gradient(
    f: Callable[[], Tensor], params: list[Tensor], coords: list[tuple[int, int]], eps: float
) -> Tensor:
    """Central differences of the scalar f() at (param index, flat index) coordinates."""
    out = torch.empty(len(coords), dtype=torch.float64)
    for n, (p_i, k) in enumerate(coords):
        flat = params[p_i].view(-1)
        orig = flat[k].item()
        flat[k] = orig + eps
        plus = float(f())
        flat[k] = orig - eps
        minus = float(f())
        flat[k] = orig
        out[n] = (plus - minus) / (2 * eps)
    return out


def check_gradients(
    f: Callable[[], Tensor],
    params: Iterable[Tensor],
    *,
    eps: float = 1e-6,
    max_coords: int | None = None,
    generator: torch.Generator | None = None,
) -> GradientCheck:
    """Compare ``f``'s autograd gradient with central differences (see module docstring).

    ``f`` takes no arguments and returns a scalar computed from ``params`` (tensors that
    require grad, e.g. ``model.parameters()``). ``max_coords`` checks a random subset."""
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("check_gradients: no parameter requires grad")
    if any(p.dtype != torch.float64 for p in params):
        raise ValueError("check_gradients needs float64 parameters (model.to(torch.float64))")
    if not (eps > 0):
        raise ValueError(f"eps must be > 0, got {eps!r}")
    value = f()
    if value.dim() != 0:
        raise ValueError(f"f() must return a scalar, got shape {tuple(value.shape)}")
    grads = torch.autograd.grad(value, params, allow_unused=True)
    coords = [(i, k) for i, p in enumerate(params) for k in range(p.numel())]
    if max_coords is not None and len(coords) > max_coords:
        pick = torch.randperm(len(coords), generator=generator)[:max_coords]
        coords = [coords[int(j)] for j in pick]
    analytic = torch.tensor(
        [0.0 if grads[i] is None else grads[i].reshape(-1)[k].item() for i, k in coords],
        dtype=torch.float64,
    )
    numeric = numerical_gradient(f, params, coords, eps)
    tiny = torch.finfo(torch.float64).tiny
    scale = max(analytic.abs().max().item(), numeric.abs().max().item(), tiny)
    max_rel = (analytic - numeric).abs().max().item() / scale
    norm_rel = (analytic - numeric).norm().item() / max(
        analytic.norm().item(), numeric.norm().item(), tiny
    )
    return GradientCheck(analytic, numeric, max_rel, norm_rel, len(coords), eps)
