"""Stopping rule: target metric, budgets (iterations, epochs, samples, P_D, P_I, wall time), and
patience (no improvement of the stopping metric for N evaluations, or for N epochs as Greff
et al. count it).

``StoppingRule.observe`` is called after each evaluation; ``StoppingRule.reason`` before each
step. Both read and write only the ``TrainState`` counters, so a resumed run stops exactly where
the uninterrupted run would (wall-time budgets aside).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lstmlab.training.state import TrainState

__all__ = ["StoppingRule"]


@dataclass
class StoppingRule:
    metric: str  # key of the evaluation dict watched for target and patience
    target: float | None = None  # solved when metric beats target; None: use ``solved_fn``
    solved_fn: Callable[[dict[str, Any]], bool] | None = None  # the task's own success test
    higher_is_better: bool = False  # direction of ``metric`` (accuracy: higher)
    max_iterations: int | None = None
    max_epochs: int | None = None
    max_samples: int | None = None
    max_pd: float | None = None
    max_pi: float | None = None
    max_seconds: float | None = None
    patience: int | None = None  # evaluations without improvement
    patience_epochs: int | None = None  # completed epochs without improvement (Greff: 15)

    def observe(self, state: TrainState, metrics: dict[str, Any]) -> None:
        """Update best / patience counters and ``solved`` from one evaluation."""
        state.evals += 1
        state.last_eval = dict(metrics)
        value = metrics.get(self.metric)
        if value is not None and math.isfinite(value):
            better = state.best is None or (
                value > state.best if self.higher_is_better else value < state.best
            )
            if better:
                state.best, state.best_iteration, state.evals_since_best = value, state.iteration, 0
                state.best_epoch, state.best_eval = state.epoch, dict(metrics)
            else:
                state.evals_since_best += 1
        else:
            state.evals_since_best += 1
        if self.target is not None:
            state.solved = value is not None and (
                value > self.target if self.higher_is_better else value < self.target
            )
        elif self.solved_fn is not None:
            state.solved = bool(self.solved_fn(metrics))

    def reason(self, state: TrainState) -> str | None:
        """Why the run should stop now, or None to go on."""
        if state.solved:
            return "solved"
        if not all(math.isfinite(v) for v in _finite_fields(state.last_eval)):
            return "diverged"
        budgets = [
            ("max_iterations", state.iteration, self.max_iterations),
            ("max_epochs", state.epoch, self.max_epochs),
            ("max_samples", state.samples, self.max_samples),
            ("max_pd", state.P_D, self.max_pd),
            ("max_pi", state.P_I, self.max_pi),
            ("max_seconds", state.wall, self.max_seconds),
        ]
        for name, used, limit in budgets:
            if limit is not None and used >= limit:
                return name
        if self.patience is not None and state.evals_since_best >= self.patience:
            return "patience"
        if (
            self.patience_epochs is not None
            and state.epoch - state.best_epoch >= self.patience_epochs
        ):
            return "patience"
        return None


def _finite_fields(metrics: dict[str, Any]):
    for key in ("loss",):
        v = metrics.get(key)
        if isinstance(v, float):
            yield v
