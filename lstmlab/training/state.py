"""``TrainState``: the counters of a run — everything besides model, optimizer and RNG that a
checkpoint must hold for ``resume`` to continue exactly where the run stopped."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TrainState"]


@dataclass
class TrainState:
    iteration: int = 0  # optimizer steps taken
    epoch: int = 0  # completed passes over the training split
    batch_in_epoch: int = 0  # minibatches of the current epoch already used
    samples: int = 0  # training sequences drawn (each minibatch counted once per step)
    presentations: float = 0.0  # sequences that went into gradients (line searches included)
    P_D: float = 0.0  # sequential cost, forward-pass equivalents per sequence (seed 001)
    P_I: float = 0.0  # fully-parallel cost
    wall: float = 0.0  # seconds spent in the training loop (summed over resumes)
    evals: int = 0  # evaluations done
    best: float | None = None  # best value of the stopping metric so far
    best_iteration: int = 0
    best_epoch: int = 0  # completed epochs when the best value was seen (patience in epochs)
    best_eval: dict[str, Any] = field(default_factory=dict)  # every metric of that evaluation
    evals_since_best: int = 0
    last_eval: dict[str, Any] = field(default_factory=dict)  # test metrics of the last evaluation
    solved: bool = False
    stop_reason: str | None = None  # None while running
    carried: Any = None  # (h_n, c_n) carried to the next chunk of text streams (loop.train)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainState:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
