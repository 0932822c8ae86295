"""Shards: which rows of each minibatch a worker holds, and sizes that follow worker speed.

Every worker builds the task (its data are a deterministic function of the seed, or read from
the same cache) and draws the same minibatch rows (``loop.minibatch``); a worker then makes
tensors of its own rows only. Rows are split in order: worker r holds rows
``[o_r, o_r + n_r)`` of the minibatch, the n_r from ``split_counts(N, weights)``.

Balancing (``balance="speed"``, seed 000 Sec. 5.4.2: the slowest client sets the pace). Each
worker's speed is s_r = cost units (P_D) computed / seconds spent computing, measured

  * at start: one loss and gradient on the same probe rows on every worker, and
  * at each epoch boundary: over the whole epoch's work (line searches and curvature
    products included; the time spent waiting in all-reduce is not counted),

and n_r ∝ s_r. Per iteration the workers finish together when n_r / s_r is the same for all
— the time per iteration then is N / Σ s_r instead of N / (W · min s_r). A new split is taken
only when it shortens the predicted time of the slowest worker by more than 5 % (so a
full-batch run keeps its shards, and L-BFGS its cached gradient, while the speeds are steady).
The results do not depend on the split beyond float round-off: every reduction is the
sample-weighted mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from lstmlab.data import Batch
from lstmlab.distributed import comm
from lstmlab.distributed.objective import SpeedMeter

__all__ = ["split_counts", "rebalanced", "ShardedBatch", "ShardedSplit", "BALANCE"]

BALANCE = ("equal", "speed")
MIN_GAIN = 0.05  # re-shard only when the slowest worker's predicted time drops by this much


def split_counts(n: int, weights: list[float]) -> list[int]:
    """n rows over len(weights) workers, proportional to ``weights`` (largest remainder).

    Every worker gets at least one row when n >= len(weights); the result sums to n.
    """
    w = len(weights)
    if w < 1 or any(not (x > 0 and math.isfinite(x)) for x in weights):
        raise ValueError(f"weights must be positive and finite, got {weights!r}")
    floor = 1 if n >= w else 0
    rest = n - floor * w
    total = sum(weights)
    exact = [rest * x / total for x in weights]
    counts = [floor + int(math.floor(e)) for e in exact]
    left = n - sum(counts)
    order = sorted(range(w), key=lambda i: (-(exact[i] - math.floor(exact[i])), i))
    for i in order[:left]:
        counts[i] += 1
    return counts


@dataclass(eq=False)
class ShardedBatch:
    """A minibatch of ``size`` rows of which this worker holds ``local`` (None: none).

    ``len()`` is the global size, so the training loop counts samples as one process would.
    """

    size: int
    local: Batch | None
    counts: tuple[int, ...]

    def __len__(self) -> int:
        return self.size


class ShardedSplit:
    """A training split (``build.DeviceSplit``) seen by one worker.

    ``batch(rows)`` returns a ``ShardedBatch`` holding this worker's part of ``rows`` (all
    rows when None; that full batch is cached while the shard sizes stay, as ``DeviceSplit``
    caches its own). ``rebalance_every`` calls of ``batch`` make an epoch.
    """

    def __init__(
        self,
        data: Any,
        *,
        balance: str = "equal",
        meter: SpeedMeter | None = None,
        rebalance_every: int = 1,
        probe: Any = None,
    ) -> None:
        if balance not in BALANCE:
            raise ValueError(f"unknown balance {balance!r}; valid: {', '.join(BALANCE)}")
        self.data, self.balance = data, balance
        self.meter = meter if meter is not None else SpeedMeter()
        self.rebalance_every = max(1, int(rebalance_every))
        self.world, self.rank = comm.get_world_size(), comm.get_rank()
        self.weights = [1.0] * self.world
        self.history: list[list[float]] = []  # the speeds of each balancing, for the record
        self._calls = 0
        self._full: ShardedBatch | None = None
        if balance == "speed" and self.world > 1 and probe is not None:
            probe()  # one timed piece of work on every worker (see ``measure_start``)
            self._rebalance()

    def __len__(self) -> int:
        return len(self.data)

    def counts(self, n: int) -> list[int]:
        return split_counts(n, self.weights)

    def batch(self, rows: torch.Tensor | None = None) -> ShardedBatch:
        if self._calls and self._calls % self.rebalance_every == 0 and self.balance == "speed":
            self._rebalance()
        self._calls += 1
        if rows is None:
            if self._full is None:
                self._full = self._make(torch.arange(len(self.data)))
            return self._full
        return self._make(torch.as_tensor(rows, dtype=torch.long))

    def _make(self, rows: torch.Tensor) -> ShardedBatch:
        counts = self.counts(rows.numel())
        start = sum(counts[: self.rank])
        mine = rows[start : start + counts[self.rank]]
        local = self.data.batch(mine) if mine.numel() else None
        return ShardedBatch(rows.numel(), local, tuple(counts))

    def _rebalance(self) -> None:
        """Speeds from every worker's meter; a new split if it pays (same on every rank)."""
        table = comm.all_gather_floats([self.meter.work, self.meter.seconds])
        self.meter.reset()
        work, secs = table[:, 0].tolist(), table[:, 1].tolist()
        if any(not (s > 0) for s in secs) or any(not (w > 0) for w in work):
            return  # a worker did no timed work: keep the split
        speed = [w / s for w, s in zip(work, secs, strict=True)]
        self.history.append(speed)
        new = rebalanced(max(len(self.data), self.world), self.weights, speed)
        if new is not None:
            self.weights = new
            self._full = None


def rebalanced(n: int, weights: list[float], speed: list[float]) -> list[float] | None:
    """New shard weights (the speeds) when they shorten the slowest worker's predicted time
    per iteration, max_r n_r / s_r, by more than ``MIN_GAIN``; None: keep ``weights``."""
    old = split_counts(n, weights)
    new = split_counts(n, speed)
    t_old = max(c / s for c, s in zip(old, speed, strict=True))
    t_new = max(c / s for c, s in zip(new, speed, strict=True))
    return list(speed) if t_new < (1.0 - MIN_GAIN) * t_old else None


def measure_start(make_objective, model, data: Any, meter: SpeedMeter, rows: int = 64):
    """A probe: every worker times one loss and gradient on the same ``rows`` first rows."""

    def probe() -> None:
        sample = data.batch(torch.arange(min(rows, len(data))))
        obj = make_objective(model, sample)
        before = obj.counter.snapshot()
        meter.run(obj.loss_and_grad)
        meter.work += (obj.counter - before).p_d

    return probe
