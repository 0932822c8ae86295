"""CG-backtracking (Martens 2010, Sec. 4.6): choose among the iterates CG kept.

CG minimises a quadratic model, not the objective; late iterates can fit the model's errors.
CG keeps iterates p_{i_1}, …, p_{i_m} (at i = ⌈5·1.3^k⌉ and at its end, ``cg.backtrack_indices``).
Starting from the last, step back to the previous kept iterate while the objective on the
gradient batch is lower there, and stop at the first that is not:

    j = m; while j > 1 and f(θ + p_{i_{j−1}}) < f(θ + p_{i_j}): j ← j − 1

M&S's released HF-RNN code chooses otherwise (``rule="best"``): it scores the iterates at every
10th CG iteration (1, 11, 21, …) and the last on a batch apart from the curvature batch and
takes the one with the lowest objective there (the earliest among equals), looking at all of
them rather than walking back until the first rise.

Hand-written (HF is this project's subject). Non-finite losses count as +∞ ("no decrease").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import Tensor

__all__ = ["BACKTRACK_RULES", "BacktrackResult", "cg_backtrack", "every_indices"]

BACKTRACK_RULES = ("walk-back", "best")


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
    rule: str = "walk-back",
) -> BacktrackResult:
    """Pick a candidate ``(cg_iteration, p, φ)``; ``loss(p)`` = f(θ + p).

    ``rule``: "walk-back" (Martens: back from the last while the loss falls) or "best" (every
    candidate scored, the lowest taken; all non-finite: the last). With ``enabled=False`` only
    the last candidate is evaluated and taken.
    """
    if not candidates:
        raise ValueError("cg_backtrack needs at least one candidate")
    if rule not in BACKTRACK_RULES:
        raise ValueError(f"rule: unknown {rule!r}; valid: {', '.join(BACKTRACK_RULES)}")

    def f(p: Tensor) -> float:
        v = loss(p)
        return v if math.isfinite(v) else math.inf

    if enabled and rule == "best" and len(candidates) > 1:
        losses = [f(p) for _, p, _ in candidates]
        j = min(range(len(losses)), key=lambda k: (losses[k], k))
        if not math.isfinite(losses[j]):
            j = len(candidates) - 1
        i, p, phi = candidates[j]
        return BacktrackResult(j, i, p, phi, losses[j], len(candidates))
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


def every_indices(max_iter: int, every: int) -> set[int]:
    """{1, 1 + every, 1 + 2·every, …} ∩ [1, max_iter]: the iterates the "best" rule scores
    (the released code's check at CG iteration i ≡ 0 mod ``every``, counted from 0); CG adds
    its last iterate itself."""
    if every < 1:
        raise ValueError(f"every: must be >= 1, got {every!r}")
    return set(range(1, max_iter + 1, every))
