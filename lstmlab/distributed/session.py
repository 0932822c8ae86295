"""``Session``: how a run behaves inside a worker group; the one-process session changes nothing.

``lstmlab.training.run`` asks its session at the few places where workers differ:

    from_main(fn, ...)   rank 0 reads or writes the run directory; its result — or its one-line
                         error — reaches every rank (no rank is left waiting, none half-writes)
    prepare(cfg, built)  same config on every rank; data that can feed every worker; the
                         training split sharded (``shards``) and objectives reduced
                         (``objective``); rank 0's parameters on every rank
    progress             rank 0's display; the others show nothing (and keep no metrics log)
    evaluate             rank 0 evaluates, every rank receives the metrics
    stopping             the stop decision is rank 0's (wall-clock budgets and Ctrl-C included)
    checkpoint           every rank's RNG state gathered to rank 0, which alone writes; then
                         a check that all ranks hold the same parameters
    seed / restore_rng   per-rank random streams (below)

Random streams per rank: rank 0 seeds torch, NumPy and Python's ``random`` with the run's seed
(exactly as one process does), rank r > 0 with ``seed + r · 1_000_003``. The optimizers and
the data order use their own generators, which are the same on every rank; the per-rank
streams are there for anything drawn per local sample. A checkpoint keeps every rank's state
(``rng_ranks``); resuming on the same number of workers restores each, on another number
rank 0 restores its own and the others restart their streams from
``seed + r · 1_000_003 + iteration``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from lstmlab.distributed import comm
from lstmlab.distributed.objective import DistributedObjective, SpeedMeter, check_params_agree
from lstmlab.distributed.shards import BALANCE, ShardedSplit, measure_start

__all__ = ["Session", "ONE", "NullLog", "RANK_STRIDE"]

RANK_STRIDE = 1_000_003


class NullLog:
    """The metrics log of a rank that writes nothing."""

    def write(self, record: dict[str, Any]) -> None: ...
    def offset(self) -> int:
        return 0

    def close(self) -> None: ...


@dataclass
class Session:
    """balance: "equal" or "speed" shards. slowdown: {rank: factor} simulated slow workers."""

    balance: str = "equal"
    slowdown: dict[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.balance not in BALANCE:
            raise ValueError(f"unknown balance {self.balance!r}; valid: {', '.join(BALANCE)}")
        self.meter = SpeedMeter(self.slowdown.get(self.rank, 1.0))
        self.rank_states: dict[str, Any] = {}
        self.split: ShardedSplit | None = None

    # ------------------------------------------------------------------ who am I
    @property
    def rank(self) -> int:
        return comm.get_rank()

    @property
    def world(self) -> int:
        return comm.get_world_size()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    # ------------------------------------------------------------------ rank 0 does, all know
    def from_main(self, fn, *args, **kwargs):
        """``fn(...)`` on rank 0; its value, or its exception (same class, same message), on
        every rank (rebuilt there from class name and message)."""
        if not self.active:
            return fn(*args, **kwargs)
        box: tuple = ("ok", None)
        error: BaseException | None = None
        if self.is_main:
            try:
                box = ("ok", fn(*args, **kwargs))
            except Exception as err:  # noqa: BLE001 - every rank must learn of it
                error = err
                box = ("err", (type(err).__name__, getattr(err, "key", None), str(err)))
        kind, value = comm.broadcast_object(box)
        if kind == "err":
            raise error if error is not None else _rebuild(*value)
        return value

    # ------------------------------------------------------------------ set-up
    def prepare(self, cfg, built) -> None:
        """Check the group agrees and can be fed; shard the data and reduce the objective."""
        if not self.active:
            return
        from lstmlab.training.config import ConfigError, to_dict

        comm.check_same(
            {"config": to_dict(cfg), "balance": self.balance, "slowdown": self.slowdown},
            "the run configuration",
        )
        n, bs = len(built.train_data), cfg.optimizer.batch_size
        if getattr(built, "carry_state", False):
            raise ConfigError(
                "task.options.carry_state",
                "carrying the state from chunk to chunk follows one process's streams; with "
                "several workers set --task.options.carry_state false (each chunk then starts "
                "from a zero state)",
            )
        if getattr(built.train_data, "fresh", False):
            raise ConfigError(
                "task.options.fresh",
                "data drawn afresh at every step is not sharded across workers yet; run it in "
                "one process, or set --task.options.fresh false",
            )
        if n < self.world:
            raise ConfigError(
                "workers",
                f"{self.world} workers but only {n} training sequences: every worker needs "
                "at least one (use fewer workers or more data)",
            )
        if min(bs, n) < self.world:
            raise ConfigError(
                "optimizer.batch_size",
                f"a minibatch of {bs} cannot feed {self.world} workers (use fewer workers "
                "or a batch of at least one sequence per worker)",
            )
        device = next(built.model.parameters()).device
        if device.type == "cuda" and comm.get_local_world_size() > torch.cuda.device_count():
            raise ConfigError(
                "device",
                f"{comm.get_local_world_size()} workers on this machine but "
                f"{torch.cuda.device_count()} CUDA device(s): NCCL needs one device per worker "
                "(use --nproc-per-node <= the GPU count, or --device cpu)",
            )
        from lstmlab.training.loop import batches_per_epoch

        inner = built.make_objective
        factory = _Factory(inner, self.meter)
        probe = measure_start(inner, built.model, built.train_data, self.meter)
        self.split = ShardedSplit(
            built.train_data,
            balance=self.balance,
            meter=self.meter,
            rebalance_every=batches_per_epoch(n, bs),
            probe=probe,
        )
        built.train_data = self.split
        built.make_objective = factory

    def sync_model(self, model: torch.nn.Module) -> None:
        """Rank 0's parameters and buffers on every rank."""
        if not self.active:
            return
        state = comm.broadcast_object(
            {k: v.detach().cpu() for k, v in model.state_dict().items()} if self.is_main else None
        )
        model.load_state_dict(state)

    # ------------------------------------------------------------------ the loop's hooks
    def progress(self, name: str) -> str:
        return name if self.is_main else "none"

    def evaluate(self, fn):
        if not self.active:
            return fn

        def evaluate(model):
            return comm.broadcast_object(fn(model) if self.is_main else None)

        return evaluate

    def stopping(self, rule, interrupted):
        """(rule, interrupted) for the loop: rank 0's decision on every rank."""
        if not self.active:
            return rule, interrupted
        return _AgreedStopping(rule, interrupted, self.is_main), lambda: False

    def agree(self):
        """``agree(x)`` for the loop: rank 0's x on every rank (wall-clock decisions such as
        ``eval_seconds``, which each process's own clock would answer differently)."""
        if not self.active:
            return lambda decided: decided
        return lambda decided: bool(comm.broadcast_object(decided if self.is_main else None))

    def checkpoint(self, write, model):
        """``write(state)`` on rank 0 with every rank's RNG state in ``rank_states``."""
        if not self.active:
            return write

        def checkpoint(state) -> None:
            from lstmlab.training.rng import get_rng_state

            states = comm.gather_objects(get_rng_state())
            self.rank_states = {"rng_ranks": states, "world_size": self.world}
            self.from_main(write, state)
            check_params_agree(model)

        return checkpoint

    # ------------------------------------------------------------------ random streams
    def seed(self, seed: int) -> None:
        from lstmlab.training.rng import seed_everything

        seed_everything(seed + RANK_STRIDE * self.rank)

    def restore_rng(self, ckpt: dict[str, Any], seed: int, iteration: int) -> None:
        from lstmlab.training.rng import seed_everything, set_rng_state

        ranks = ckpt.get("rng_ranks")
        if self.rank == 0:
            set_rng_state(ckpt["rng"])
        elif ranks is not None and len(ranks) == self.world:
            set_rng_state(ranks[self.rank])
        else:
            seed_everything(seed + RANK_STRIDE * self.rank + iteration)


ONE = Session()  # the one-process session (every hook the identity)


def _rebuild(name: str, key: str | None, text: str) -> Exception:
    """Rank 0's exception, rebuilt on another rank from its class name and message."""
    from lstmlab.training.checkpoint import CheckpointError
    from lstmlab.training.config import ConfigError
    from lstmlab.training.run import AlreadyFinished, RunError

    if name == "ConfigError" and key is not None:
        return ConfigError(key, text.removeprefix(f"{key}: "))
    for cls in (AlreadyFinished, RunError, CheckpointError, comm.DistributedError):
        if name == cls.__name__:
            return cls(text)
    return RuntimeError(f"rank 0: {name}: {text}")


class _AgreedStopping:
    def __init__(self, rule, interrupted, main: bool) -> None:
        self.rule, self.interrupted, self.main = rule, interrupted, main

    def __getattr__(self, name: str):
        return getattr(self.rule, name)

    def observe(self, state, metrics) -> None:
        self.rule.observe(state, metrics)

    def reason(self, state) -> str | None:
        mine = None
        if self.main:
            mine = self.rule.reason(state)
            if mine is None and self.interrupted():
                mine = "interrupted"
        return comm.broadcast_object(mine)


class _Factory:
    """Per-worker ``Objective`` on the worker's rows, wrapped in the reduction; the same
    wrapper while the batch is the same object (full batch: L-BFGS reuses its gradient)."""

    def __init__(self, inner, meter: SpeedMeter) -> None:
        self.inner, self.meter = inner, meter
        self._last: tuple[Any, Any, DistributedObjective] | None = None

    def __call__(self, model, batch) -> DistributedObjective:
        if self._last is not None and self._last[0] is batch and self._last[1] is model:
            return self._last[2]
        local = None if batch.local is None else self.inner(model, batch.local)
        obj = DistributedObjective(local, model, meter=self.meter)
        self._last = (batch, model, obj)
        return obj
