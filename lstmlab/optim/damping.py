"""Levenberg–Marquardt adaptation of HF's Tikhonov damping λ (Martens 2010, Sec. 4.1).

    ρ = (f(θ + p) − f(θ)) / (q(p) − q(0))
    ρ < low  (1/4): λ ← λ · increase (3/2)        ρ > high (3/4): λ ← λ · decrease (2/3)

Stochastic HF (Kiros 2013) uses gentler factors; see ``hf.stochastic_hf``. λ is clamped to
[min_value, max_value] so that it can neither vanish nor overflow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["LevenbergMarquardt"]


@dataclass(frozen=True)
class LevenbergMarquardt:
    decrease: float = 2.0 / 3.0
    increase: float = 1.5
    low: float = 0.25
    high: float = 0.75
    min_value: float = 1e-10
    max_value: float = 1e10

    def __post_init__(self) -> None:
        if not 0 < self.decrease <= 1 <= self.increase:
            raise ValueError(
                f"need 0 < decrease <= 1 <= increase, got {self.decrease}, {self.increase}"
            )
        if not self.low <= self.high:
            raise ValueError(f"need low <= high, got {self.low}, {self.high}")

    def update(self, lam: float, rho: float) -> float:
        """New λ after a step with reduction ratio ρ (NaN counts as a failure)."""
        if math.isnan(rho) or rho < self.low:
            lam = lam * self.increase
        elif rho > self.high:
            lam = lam * self.decrease
        return min(max(lam, self.min_value), self.max_value)
