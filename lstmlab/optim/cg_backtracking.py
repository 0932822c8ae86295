"""CG-backtracking (Martens 2010, Sec. 4.6): choose among the iterates CG kept.

CG minimises a quadratic model, not the objective; late iterates can fit the model's errors.
CG keeps iterates p_{i_1}, …, p_{i_m} (at i = ⌈5·1.3^k⌉ and at its end, ``cg.backtrack_indices``).
Starting from the last, step back to the previous kept iterate while the objective on the
gradient batch is lower there, and stop at the first that is not:

    j = m; while j > 1 and f(θ + p_{i_{j−1}}) < f(θ + p_{i_j}): j ← j − 1

Hand-written (HF is this project's subject). Non-finite losses count as +∞ ("no decrease").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import Tensor

__all__ = ["BacktrackResult", "cg_backtrack"]


@dataclass
class BacktrackResult:
    index: int  # position in the candidate list
    iteration: int  # the CG iteration of the chosen iterate
    p: Tensor  # the chosen iterate
    phi: float  # its model value q(p) − q(0)
    loss: float  # f(θ + p) on the gradient batch (+inf when not finite)
    evaluations: int  # objective evaluations made


def cg_backtrack(
    candidates: Sequence[tuple[int, Tensor, float]],
    loss: Callable[[Tensor], float],
    *,
    enabled: bool = True,
) -> BacktrackResult:
    """Pick a candidate ``(cg_iteration, p, φ)``; ``loss(p)`` = f(θ + p).

    With ``enabled=False`` only the last candidate is evaluated and taken.
    """
    if not candidates:
        raise ValueError("cg_backtrack needs at least one candidate")

    def f(p: Tensor) -> float:
        v = loss(p)
        return v if math.isfinite(v) else math.inf

    j = len(candidates) - 1
    best = f(candidates[j][1])
    evals = 1
    while enabled and j > 0:
        prev = f(candidates[j - 1][1])
        evals += 1
        if prev < best:
            j, best = j - 1, prev
        else:
            break
    i, p, phi = candidates[j]
    return BacktrackResult(j, i, p, phi, best, evals)
