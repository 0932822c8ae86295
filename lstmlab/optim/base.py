"""What every optimizer shares: the step contract, diagnostics, cost deltas, resumable state.

``info = opt.step(objective)`` reads the parameters from the objective, evaluates only through
it, writes the new parameters back with ``objective.set_params`` (which refuses non-finite
vectors), and returns a ``StepInfo``. The optimizer never touches data. The cost of a step is
the difference of the objective's ``CostCounter`` before and after it, so every evaluation the
objective made (line searches included) is counted without the optimizer having to remember.

``state_dict()`` layout (plain numbers, strings and tensors; ``weights_only``-loadable):

    {"optimizer": class name, "iteration": int, "totals": {CostCounter fields},
     "wall_time": float, "state": {subclass tensors/numbers}}
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from lstmlab.objective.cost import CostCounter
from lstmlab.schedules import Schedule, as_schedule

__all__ = ["Optimizer", "StepInfo", "NonFiniteError", "finite"]


class NonFiniteError(RuntimeError):
    """An evaluation returned a non-finite loss or gradient; the step must be rejected."""


def finite(f: float, g: Tensor | None = None) -> bool:
    return math.isfinite(f) and (g is None or bool(torch.isfinite(g).all()))


@dataclass
class StepInfo:
    """Diagnostics of one ``step`` (returned, never printed)."""

    iteration: int  # index of this step (0-based)
    loss: float  # loss at the start of the step, on the step's objective
    new_loss: float | None = None  # loss at the accepted point when it was evaluated
    grad_norm: float = float("nan")
    step_size: float = 0.0  # the line-search / learning-rate multiplier actually taken
    accepted: bool = True
    rejected: bool = False  # a non-finite value or failed search: parameters left unchanged
    reason: str = ""
    line_search_evals: int = 0
    inner_iterations: int = 1  # L-BFGS / CG iterations inside this step
    damping: float | None = None  # λ after this step (HF)
    rho: float | None = None  # reduction ratio (HF)
    cg_iterations: int | None = None
    cg_stop: str | None = None
    cost: dict[str, float] = field(default_factory=dict)  # this step's CostCounter delta
    p_d: float = 0.0  # cumulative, seed 001
    p_i: float = 0.0
    samples: float = 0.0  # cumulative sequences that went into gradients
    wall_time: float = 0.0  # cumulative seconds inside step()
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def reject(self, reason: str) -> StepInfo:
        """Mark the step rejected (parameters left unchanged) and say why."""
        self.accepted, self.rejected, self.reason = False, True, reason
        return self


class Optimizer:
    """Base: schedules, counters, state. Subclasses implement ``_step`` and ``_state``."""

    def __init__(self, **hyper: Any) -> None:
        self.hyper: dict[str, Schedule] = {k: as_schedule(v) for k, v in hyper.items()}
        self.iteration = 0
        self.totals = CostCounter()
        self.wall_time = 0.0

    def hp(self, name: str) -> float:
        """Hyperparameter ``name`` at the current iteration (constant or schedule)."""
        return self.hyper[name](self.iteration)

    def step(self, objective) -> StepInfo:
        before = objective.counter.snapshot()
        t0 = time.perf_counter()
        info = self._step(objective)
        self.wall_time += time.perf_counter() - t0
        delta = objective.counter - before
        self.totals = self.totals + delta
        info.iteration = self.iteration
        info.cost = delta.as_dict()
        info.p_d, info.p_i = self.totals.p_d, self.totals.p_i
        info.samples = self.totals.samples_grad
        info.wall_time = self.wall_time
        self.iteration += 1
        return info

    def _step(self, objective) -> StepInfo:  # pragma: no cover - abstract
        raise NotImplementedError

    # ------------------------------------------------------------------ state
    def _state(self) -> dict[str, Any]:
        return {}

    def _load_state(self, state: dict[str, Any]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": type(self).__name__,
            "iteration": self.iteration,
            "totals": self.totals.as_dict(),
            "wall_time": self.wall_time,
            "state": {k: _copy(v) for k, v in self._state().items()},
        }

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        if sd.get("optimizer") != type(self).__name__:
            raise ValueError(
                f"state_dict is for {sd.get('optimizer')!r}, not {type(self).__name__!r}"
            )
        self.iteration = int(sd["iteration"])
        self.totals = CostCounter(**sd["totals"])
        self.wall_time = float(sd["wall_time"])
        self._load_state({k: _copy(v) for k, v in sd["state"].items()})


def _copy(v: Any) -> Any:
    if isinstance(v, Tensor):
        return v.detach().clone()
    if isinstance(v, list):
        return [_copy(x) for x in v]
    if isinstance(v, dict):
        return {k: _copy(x) for k, x in v.items()}
    return v
