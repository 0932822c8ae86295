"""Progress display: a ``rich`` bar on a terminal, plain lines otherwise (logs, pipes, CI).

Both show iteration, samples, training loss, the watched test metric, P_D and wall time. The
plain printer writes at most one line every ``every_seconds`` (and always after an
evaluation that improved the best value), so a redirected log stays short.
"""

from __future__ import annotations

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


def _line(state: TrainState, metric: str) -> str:
    parts = [
        f"iter {state.iteration}",
        f"epoch {state.epoch}",
        f"samples {state.samples}",
        f"{metric} {fmt(state.last_eval.get(metric))}",
        f"best {fmt(state.best)}",
        f"P_D {state.P_D:.3g}",
        f"wall {state.wall:.1f}s",
    ]
    return "  ".join(parts)


class NullProgress:
    def start(self, state: TrainState) -> None: ...
    def update(self, state: TrainState) -> None: ...
    def close(self) -> None: ...
    def message(self, text: str) -> None: ...


class PlainProgress(NullProgress):
    def __init__(self, metric: str, stream: TextIO | None = None, every_seconds: float = 5.0):
        self.metric, self.stream, self.every = metric, stream or sys.stderr, every_seconds
        self._last = -float("inf")
        self._best: float | None = None

    def start(self, state: TrainState) -> None:
        self.message(_line(state, self.metric))
        self._last = time.monotonic()

    def update(self, state: TrainState) -> None:
        improved = state.best is not None and state.best != self._best
        if improved or time.monotonic() - self._last >= self.every:
            self.message(_line(state, self.metric))
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

    def start(self, state: TrainState) -> None:
        self._progress.start()
        self._task = self._progress.add_task(
            "train", total=self._total, completed=state.iteration, info=self._info(state)
        )

    def _info(self, state: TrainState) -> str:
        return (
            f"{self.metric} {fmt(state.last_eval.get(self.metric))}  best {fmt(state.best)}  "
            f"samples {state.samples}  P_D {state.P_D:.3g}"
        )

    def update(self, state: TrainState) -> None:
        self._progress.update(self._task, completed=state.iteration, info=self._info(state))

    def message(self, text: str) -> None:
        self._progress.console.print(text)

    def close(self) -> None:
        self._progress.stop()


def make_progress(mode: str, metric: str, total: int | None = None) -> NullProgress:
    """``mode``: "auto" (rich on a terminal, plain otherwise), "rich", "plain" or "none"."""
    if mode == "auto":
        mode = "rich" if sys.stderr.isatty() else "plain"
    if mode == "rich":
        return RichProgress(metric, total)
    if mode == "plain":
        return PlainProgress(metric)
    return NullProgress()
