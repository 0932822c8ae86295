"""HF preconditioners: M⁻¹ as a function r ↦ M⁻¹ r.

* Martens (2010, Sec. 4.7) diagonal: M = [diag(F) + λ]^ξ, ξ = 0.75, F = (1/B) Σ_b (∇ℓ_b)² the
  empirical-Fisher diagonal (``objective.per_sample_grads_squared()``, same scale as G).
* L-BFGS (seed 000 Sec. 5.3, "L-BFGS matrix as pre-conditioner"): M⁻¹ = the L-BFGS
  inverse-Hessian approximation. Seed 000 does not say which pairs; here they are the last
  (αd, αAd) pairs of the previous CG solve (Morales & Nocedal 2000), which always satisfy
  yᵀs > 0 and carry no minibatch noise.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from lstmlab.optim.lbfgs import two_loop

__all__ = ["diagonal_preconditioner", "lbfgs_preconditioner"]


def diagonal_preconditioner(
    fisher_diag: Tensor, lam: float, exponent: float = 0.75
) -> Callable[[Tensor], Tensor]:
    m = (fisher_diag + lam).pow(exponent)
    return lambda r: r / m


def lbfgs_preconditioner(S: list[Tensor], Y: list[Tensor]) -> Callable[[Tensor], Tensor] | None:
    if not S:
        return None
    return lambda r: two_loop(r, S, Y)
