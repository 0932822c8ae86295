"""Every change HF makes to its Tikhonov damping λ (Martens 2010, Sec. 4.1).

    ρ = (f(θ + p) − f(θ)) / (q(p) − q(0))                  (``reduction_ratio``)
    ρ < low  (1/4): λ ← λ · increase (3/2)        ρ > high (3/4): λ ← λ · decrease (2/3)

Stochastic HF (Kiros 2013) uses gentler factors; see ``hf.stochastic_hf``. λ is clamped to
[min_value, max_value] so that it can neither vanish nor overflow. A rejected step (a non-finite
value) raises λ by a fixed factor through ``LevenbergMarquardt.scale``.

``as_levenberg_marquardt`` turns what a config file can say (a table of fields, ``false`` or
``"none"`` for no adaptation) into a rule, and names the bad key when it cannot.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["LevenbergMarquardt", "as_levenberg_marquardt", "reduction_ratio"]


@dataclass(frozen=True)
class LevenbergMarquardt:
    decrease: float = 2.0 / 3.0  # λ factor when the quadratic model was good (ρ > high)
    increase: float = 1.5  # λ factor when it was poor (ρ < low, or ρ NaN)
    low: float = 0.25
    high: float = 0.75
    min_value: float = 1e-10  # λ never goes below / above these
    max_value: float = 1e10

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ValueError(f"lm.{f.name}: must be a finite number, got {v!r}")
        if not 0 < self.decrease <= 1 <= self.increase:
            raise ValueError(
                f"lm: need 0 < decrease <= 1 <= increase, got {self.decrease}, {self.increase}"
            )
        if not self.low <= self.high:
            raise ValueError(f"lm: need low <= high, got {self.low}, {self.high}")
        if not 0 <= self.min_value <= self.max_value:
            raise ValueError(
                f"lm: need 0 <= min_value <= max_value, got {self.min_value}, {self.max_value}"
            )

    def clamp(self, lam: float) -> float:
        return min(max(lam, self.min_value), self.max_value)

    def update(self, lam: float, rho: float) -> float:
        """New λ after a step with reduction ratio ρ (NaN counts as a failure)."""
        if math.isnan(rho) or rho < self.low:
            lam = lam * self.increase
        elif rho > self.high:
            lam = lam * self.decrease
        return self.clamp(lam)

    def scale(self, lam: float, factor: float) -> float:
        """λ · factor, clamped (after a rejected step)."""
        return self.clamp(lam * factor)


def as_levenberg_marquardt(value: Any) -> LevenbergMarquardt | None:
    """A rule from a ``LevenbergMarquardt``, a table of its fields, or None / False / "none"."""
    if value is None or value is False or value == "none":
        return None
    if isinstance(value, LevenbergMarquardt):
        return value
    if value is True:
        return LevenbergMarquardt()
    if isinstance(value, dict):
        valid = [f.name for f in dataclasses.fields(LevenbergMarquardt)]
        unknown = sorted(set(value) - set(valid))
        if unknown:
            raise ValueError(f"lm.{unknown[0]}: unknown key; valid: {', '.join(valid)}")
        return LevenbergMarquardt(**value)
    raise ValueError(
        f"lm: must be a table of {{decrease, increase, low, high, min_value, max_value}}, "
        f"true, false or 'none', got {value!r}"
    )


def reduction_ratio(f0: float, f1: float, phi: float) -> float:
    """ρ = (f1 − f0) / φ, φ = q(p) − q(0) < 0 the decrease the quadratic model predicted.

    NaN when f1 is not finite or the model predicted no decrease (LM then counts a failure).
    """
    if math.isfinite(f1) and math.isfinite(f0) and phi < 0:
        return (f1 - f0) / phi
    return float("nan")
