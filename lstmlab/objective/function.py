"""``FunctionObjective(fn, x0)``: the objective contract for a plain function of a vector.

For tests and examples (Rosenbrock, logistic regression, quadratics): ``fn(x) -> scalar``.
It has no network outputs, so its "Gauss–Newton" product is the exact Hessian product (equal
to the Gauss–Newton matrix for a convex quadratic), unless ``gauss_newton(x, v)`` is given.
It counts evaluations like ``Objective`` with ``n_samples`` sequences per evaluation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from lstmlab.objective.cost import CostCounter

__all__ = ["FunctionObjective"]


class FunctionObjective:
    """``fn`` at a flat vector; holds its own current point (``get_params``/``set_params``)."""

    def __init__(
        self,
        fn: Callable[[Tensor], Tensor],
        x0: Tensor,
        *,
        n_samples: int = 1,
        counter: CostCounter | None = None,
        gauss_newton: Callable[[Tensor, Tensor], Tensor] | None = None,
    ) -> None:
        if x0.dim() != 1:
            raise ValueError(f"x0 must be a flat vector, got shape {tuple(x0.shape)}")
        self.fn = fn
        self.x = x0.detach().clone()
        self.n_samples = int(n_samples)
        self.counter = counter if counter is not None else CostCounter()
        self._gn = gauss_newton

    @property
    def n_params(self) -> int:
        return self.x.numel()

    @property
    def n_seq(self) -> float:
        return float(self.n_samples)

    def get_params(self) -> Tensor:
        return self.x.clone()

    def set_params(self, x: Tensor) -> None:
        if not bool(torch.isfinite(x).all()):
            raise ValueError("refusing to write non-finite parameters")
        self.x = x.detach().clone()

    def subset(self, idx) -> FunctionObjective:
        return self

    def loss(self, x: Tensor | None = None) -> float:
        with torch.no_grad():
            value = self.fn(self.x if x is None else x.detach())
        self.counter.record("fun", self.n_seq)
        return float(value)

    def loss_and_grad(self, x: Tensor | None = None) -> tuple[float, Tensor]:
        xl = (self.x if x is None else x).detach().clone().requires_grad_(True)
        value = self.fn(xl)
        (g,) = torch.autograd.grad(value, xl)
        self.counter.record("grad", self.n_seq)
        return float(value.detach()), g

    def _hvp(self, v: Tensor) -> Tensor:
        xl = self.x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(self.fn(xl), xl, create_graph=True)
        (hv,) = torch.autograd.grad(g, xl, v)
        return hv

    def curvature_operator(self, kind: str = "gn", structural_weight: float = 0.0):
        if kind not in ("gn", "hessian", "fd", "none"):
            raise ValueError(f"unknown curvature kind {kind!r}")
        self.counter.record("curv_setup", self.n_seq)

        def op(v: Tensor) -> Tensor:
            if kind == "gn" and self._gn is not None:
                out = self._gn(self.x, v)
            elif kind == "none":
                out = torch.zeros_like(v)
            elif kind == "fd":
                out = self._fd(v)
            else:
                out = self._hvp(v)
            self.counter.record("curv", self.n_seq, units=3.0 if kind == "fd" else None)
            return out

        return op

    def _fd(self, v: Tensor) -> Tensor:
        vn = float(v.norm())
        if vn == 0.0:
            return torch.zeros_like(v)
        eps = 2 * torch.finfo(self.x.dtype).eps ** 0.5 * (1 + float(self.x.norm())) / vn

        def grad(x: Tensor) -> Tensor:
            xl = x.clone().requires_grad_(True)
            return torch.autograd.grad(self.fn(xl), xl)[0]

        return (grad(self.x + eps * v) - grad(self.x)) / eps

    def gauss_newton_product(self, v: Tensor) -> Tensor:
        return self.curvature_operator("gn")(v)

    def hessian_product(self, v: Tensor) -> Tensor:
        return self.curvature_operator("hessian")(v)

    def fd_hessian_product(self, v: Tensor, eps: float | None = None) -> Tensor:
        return self.curvature_operator("fd")(v)

    def structural_damping_product(self, v: Tensor) -> Tensor:
        return torch.zeros_like(v)

    def per_sample_grads_squared(self) -> Tensor:
        xl = self.x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(self.fn(xl), xl)
        self.counter.record("per_sample", self.n_seq)
        return g * g
