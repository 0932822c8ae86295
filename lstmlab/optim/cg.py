"""Linear conjugate gradient for HF's inner problem, with Martens' stopping rule.

Hand-written (the subject of this project). Minimises the quadratic

    φ(x) = ½ xᵀ A x − bᵀ x          (HF: A = G + λI (+ λμ·structural), b = −∇f, so φ(p) = q(p) − q(0))

by preconditioned CG (M⁻¹ given as a function). Since A x = b − r, φ(x) = −½ xᵀ(b + r) is
known at every iteration without another product.

Stops (the reason is returned, never printed):
    "martens"             i > k, φ_i < 0 and (φ_i − φ_{i−k}) / φ_i < k·tol, k = max(10, ⌈0.1 i⌉)
                          (Martens 2010, Sec. 4.4; tol = 5e-4)
    "residual"            ‖r‖ ≤ residual_tol·‖b‖ (the system is solved)
    "max_iter"            i = max_iter
    "negative_curvature"  dᵀAd ≤ 0 (exact / finite-difference curvature): the direction is
                          discarded and the current iterate returned (seed 000 Sec. 5.3)
    "nonfinite"           A d was not finite: the current (finite) iterate is returned
Iterates are kept at i = ⌈5·1.3^k⌉ and at the end, for CG-backtracking (Martens 2010 Sec. 4.6).
The last ``keep_pairs`` (αd, αAd) pairs are returned to build an L-BFGS preconditioner for the
next solve (Morales & Nocedal 2000).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["CGResult", "conjugate_gradient", "martens_should_stop", "backtrack_indices"]


@dataclass
class CGResult:
    x: Tensor  # final iterate
    phi: float  # φ(x)
    iterations: int  # products with A made inside the loop
    stop: str
    iterates: list[tuple[int, Tensor, float]] = field(default_factory=list)  # (i, x_i, φ_i)
    phis: list[float] = field(default_factory=list)  # φ after each iteration (φ_0 first)
    pairs: list[tuple[Tensor, Tensor]] = field(default_factory=list)  # (αd, αAd)


def martens_should_stop(phis: list[float], tol: float = 5e-4) -> bool:
    """Martens' relative-progress test on φ_0, …, φ_i (``phis[i]``)."""
    i = len(phis) - 1
    k = max(10, math.ceil(0.1 * i))
    if i <= k or not phis[i] < 0:
        return False
    return (phis[i] - phis[i - k]) / phis[i] < k * tol


def backtrack_indices(max_iter: int, base: float = 5.0, ratio: float = 1.3) -> set[int]:
    """{⌈base·ratio^k⌉ : k ≥ 0} ∩ [1, max_iter]."""
    out, k = set(), 0
    while (i := math.ceil(base * ratio**k)) <= max_iter:
        out.add(i)
        k += 1
    return out


def conjugate_gradient(
    A: Callable[[Tensor], Tensor],
    b: Tensor,
    x0: Tensor | None = None,
    *,
    M_inv: Callable[[Tensor], Tensor] | None = None,
    max_iter: int = 250,
    tol: float = 5e-4,
    residual_tol: float = 1e-12,
    keep: set[int] | None = None,
    keep_pairs: int = 0,
) -> CGResult:
    """Approximately solve A x = b from ``x0`` (zero when None); see the module docstring."""
    keep = backtrack_indices(max_iter) if keep is None else keep
    if x0 is None or not bool(x0.any()):
        x = torch.zeros_like(b)
        r = b.clone()
    else:
        x = x0.clone()
        r = b - A(x)
        if not bool(torch.isfinite(r).all()):  # a bad warm start: begin from zero instead
            x, r = torch.zeros_like(b), b.clone()
    y = r if M_inv is None else M_inv(r)
    d = y.clone()
    ry = float(r.dot(y))
    phis = [float(-0.5 * x.dot(b + r))]
    res = CGResult(x=x, phi=phis[0], iterations=0, stop="max_iter", phis=phis)
    b_norm = float(b.norm())
    if b_norm == 0.0:
        res.stop = "residual"
        res.iterates.append((0, x, phis[0]))
        return res
    for i in range(1, max_iter + 1):
        Ad = A(d)
        res.iterations = i
        dAd = float(d.dot(Ad))
        if not (math.isfinite(dAd) and bool(torch.isfinite(Ad).all())):
            res.stop = "nonfinite"
            break
        if dAd <= 0:
            res.stop = "negative_curvature"
            break
        alpha = ry / dAd
        x = x + alpha * d
        r = r - alpha * Ad
        phis.append(float(-0.5 * x.dot(b + r)))
        if keep_pairs:
            res.pairs.append((alpha * d, alpha * Ad))
            if len(res.pairs) > keep_pairs:
                res.pairs.pop(0)
        if i in keep:
            res.iterates.append((i, x, phis[-1]))
        if martens_should_stop(phis, tol):
            res.stop = "martens"
            break
        if float(r.norm()) <= residual_tol * b_norm:
            res.stop = "residual"
            break
        y = r if M_inv is None else M_inv(r)
        ry_new = float(r.dot(y))
        d = y + (ry_new / ry) * d
        ry = ry_new
    res.x, res.phi = x, phis[-1]
    if not res.iterates or res.iterates[-1][1] is not x:
        res.iterates.append((len(phis) - 1, x, phis[-1]))
    return res
