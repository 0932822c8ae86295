"""Progress display: a ``rich`` bar on a terminal, plain lines otherwise (logs, pipes, CI).

Both show iteration, epoch, samples, the smoothed training loss, the training throughput, the
watched metric of the last evaluation (and the iteration it was measured at), the best value,
P_D and wall time. The plain printer writes at most one line every ``every_seconds`` (and
always after an evaluation that improved the best value), so a redirected log stays short.

Between evaluations the training loss is what moves: ``StepMeter`` keeps its exponential
moving average over steps, ``loss_t = β·loss_{t−1} + (1 − β)·f_t`` with β = 0.9 (bias-corrected
as Adam's moments are: ÷ (1 − β^t)), and the throughput, in tokens (valid time steps of the
minibatch) and sequences per second of optimizer steps, measured over the steps since the
last line (evaluations and checkpoints are not counted as training time).
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO

from lstmlab.training.state import TrainState

__all__ = ["make_progress", "PlainProgress", "RichProgress", "NullProgress", "fmt"]


def fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


class StepMeter:
    """Smoothed training loss and throughput over the optimizer steps (module docstring)."""

    def __init__(self, beta: float = 0.9):
        self.beta = beta
        self._ema, self._n = 0.0, 0
        self._tokens = self._samples = 0
        self._seconds = 0.0
        self.rate: tuple[float, float] | None = None  # (tokens/s, sequences/s) last measured
        self.eval_iteration: int | None = None  # the iteration of the last evaluation seen
        self._evals = -1

    def add(self, loss: float | None, tokens: int, samples: int, seconds: float) -> None:
        if loss is not None and math.isfinite(loss):
            self._ema = self.beta * self._ema + (1 - self.beta) * float(loss)
            self._n += 1
        self._tokens += tokens
        self._samples += samples
        self._seconds += seconds

    @property
    def loss(self) -> float | None:
        return self._ema / (1 - self.beta**self._n) if self._n else None

    def measure(self) -> None:
        """Close the throughput window (the steps since the last call)."""
        if self._seconds > 0:
            self.rate = (self._tokens / self._seconds, self._samples / self._seconds)
            self._tokens = self._samples = 0
            self._seconds = 0.0

    def seen(self, state: TrainState) -> None:
        if state.evals != self._evals:
            self._evals, self.eval_iteration = state.evals, state.iteration


def _rate(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def _line(state: TrainState, metric: str, meter: StepMeter | None = None) -> str:
    parts = [f"iter {state.iteration}", f"epoch {state.epoch}", f"samples {state.samples}"]
    if meter is not None and meter.loss is not None:
        parts.append(f"train loss {meter.loss:.4g}")
    if meter is not None and meter.rate is not None:
        parts.append(f"{_rate(meter.rate[0])} tok/s ({_rate(meter.rate[1])} seq/s)")
    at = meter.eval_iteration if meter is not None else None
    parts += [
        f"{metric} {fmt(state.last_eval.get(metric))}" + (f" @{at}" if at is not None else ""),
        f"best {fmt(state.best)}",
        f"P_D {state.P_D:.3g}",
        f"wall {state.wall:.1f}s",
    ]
    return "  ".join(parts)


class NullProgress:
    def start(self, state: TrainState) -> None: ...
    def update(self, state: TrainState, **step: Any) -> None: ...
    def close(self) -> None: ...
    def message(self, text: str) -> None: ...


class PlainProgress(NullProgress):
    """``update(state, loss=, tokens=, samples=, seconds=)``: after each optimizer step, with
    that step's minibatch loss, its tokens and sequences and the seconds the step took."""

    def __init__(self, metric: str, stream: TextIO | None = None, every_seconds: float = 5.0):
        self.metric, self.stream, self.every = metric, stream or sys.stderr, every_seconds
        self._last = -float("inf")
        self._best: float | None = None
        self.meter = StepMeter()

    def start(self, state: TrainState) -> None:
        self.meter.seen(state)
        self.message(_line(state, self.metric))
        self._last = time.monotonic()

    def update(self, state: TrainState, **step: Any) -> None:
        _add(self.meter, state, step)
        improved = state.best is not None and state.best != self._best
        if improved or time.monotonic() - self._last >= self.every:
            self.meter.measure()
            self.message(_line(state, self.metric, self.meter))
            self._last, self._best = time.monotonic(), state.best

    def message(self, text: str) -> None:
        print(text, file=self.stream, flush=True)


class RichProgress(NullProgress):
    def __init__(self, metric: str, total: int | None = None):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self.metric = metric
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]training"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
            transient=False,
            console=Console(stderr=True),
        )
        self._total = total
        self._task = None
        self.meter = StepMeter()
        self._measured = time.monotonic()

    def start(self, state: TrainState) -> None:
        self._progress.start()
        self._task = self._progress.add_task(
            "train", total=self._total, completed=state.iteration, info=self._info(state)
        )

    def _info(self, state: TrainState) -> str:
        m = self.meter
        loss = f"train loss {m.loss:.4g}  " if m.loss is not None else ""
        rate = f"{_rate(m.rate[0])} tok/s  " if m.rate is not None else ""
        at = f" @{m.eval_iteration}" if m.eval_iteration is not None else ""
        return (
            f"{loss}{rate}{self.metric} {fmt(state.last_eval.get(self.metric))}{at}  "
            f"best {fmt(state.best)}  samples {state.samples}  P_D {state.P_D:.3g}"
        )

    def update(self, state: TrainState, **step: Any) -> None:
        _add(self.meter, state, step)
        if time.monotonic() - self._measured >= 2.0:  # a throughput window of ~2 s
            self.meter.measure()
            self._measured = time.monotonic()
        self._progress.update(self._task, completed=state.iteration, info=self._info(state))

    def message(self, text: str) -> None:
        self._progress.console.print(text)

    def close(self) -> None:
        self._progress.stop()


def _add(meter: StepMeter, state: TrainState, step: dict[str, Any]) -> None:
    if step:
        meter.add(
            step.get("loss"),
            int(step.get("tokens", 0)),
            int(step.get("samples", 0)),
            float(step.get("seconds", 0.0)),
        )
    meter.seen(state)


def make_progress(mode: str, metric: str, total: int | None = None) -> NullProgress:
    """``mode``: "auto" (rich on a terminal, plain otherwise), "rich", "plain" or "none"."""
    if mode == "auto":
        mode = "rich" if sys.stderr.isatty() else "plain"
    if mode == "rich":
        return RichProgress(metric, total)
    if mode == "plain":
        return PlainProgress(metric)
    return NullProgress()
