"""TensorBoard scalars of a run, mirrored from its metrics log as it trains.

Every record the loop writes to ``metrics.jsonl`` is also written as TensorBoard scalars,
at step = the record's ``iteration``, into event files in the run directory itself, so
``tensorboard --logdir runs/`` overlays every run under ``runs/`` (each directory is one
TensorBoard run). Tags group the record's fields::

    train/loss, train/grad_norm, train/new_loss          the training minibatch
    test/<metric>, valid/<metric>                         every evaluation metric
    cost/P_D, cost/P_I, cost/wall_seconds, cost/samples, cost/presentations, cost/epoch
    optimizer/<field>                                     whatever the step reports: step_size,
                                                          damping, cg_iterations, rho, …

Strings (``cg_stop``) are not scalars and stay in ``metrics.jsonl`` only. A tag gets one point
per step: the record that closes a run repeats its last iteration's counters (with the final
evaluation), and only its new fields are written.

Resume: the writer opens with ``purge_step`` = the first iteration the resumed run will log
(``checkpoint iteration + 1``; 0 when it starts afresh). TensorBoard's readers then drop every
earlier event at or after that step — those a crash left past the checkpoint, which the
resumed run writes again — so a resumed run's scalars equal an uninterrupted one's. (Readers
take event files in name order, so a process resumed within the second of an older file waits
for the next second: its file must be read last.)

``tensorboard`` is an optional extra (``pip install "lstmlab[tensorboard]"``); the writer is
``torch.utils.tensorboard.SummaryWriter`` (nothing here is hand-written but the tag names).
``log.tensorboard = true`` without it is a ``ConfigError`` that says how to install it;
``"auto"`` (the real-data presets) then skips the scalars with one note per process.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from lstmlab.training.config import ConfigError

__all__ = ["INSTALL", "MirroredLog", "mirror", "require", "scalars", "summary_writer"]

INSTALL = 'pip install "lstmlab[tensorboard]"'
EVAL_SPLITS = ("test", "valid", "train")  # ``<split>_<metric>`` fields of an evaluation
NAMED = {
    "loss": "train/loss",
    "grad_norm": "train/grad_norm",
    "new_loss": "train/new_loss",
    "P_D": "cost/P_D",
    "P_I": "cost/P_I",
    "wall": "cost/wall_seconds",
    "samples": "cost/samples",
    "presentations": "cost/presentations",
    "epoch": "cost/epoch",
}
_noted = False  # the "auto without tensorboard" note is printed once per process


def _writer_class():
    """``SummaryWriter``, or None when the tensorboard package is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch raises ImportError when tensorboard is missing
        return None
    return SummaryWriter


def require(setting: bool | str) -> None:
    """Refuse ``log.tensorboard = true`` on a machine without tensorboard (before any write)."""
    if setting is True and _writer_class() is None:
        raise ConfigError(
            "log.tensorboard",
            f"true needs the tensorboard package: {INSTALL} (or --log.tensorboard false)",
        )


def summary_writer(setting: bool | str, log_dir: str | Path, purge_step: int):
    """A ``SummaryWriter`` on ``log_dir`` for ``setting`` (True / False / "auto"), or None."""
    global _noted
    if setting is False:
        return None
    cls = _writer_class()
    if cls is None:
        require(setting)
        if not _noted:
            print(
                f"note: no TensorBoard scalars (tensorboard is not installed: {INSTALL})",
                file=sys.stderr,
            )
            _noted = True
        return None
    _after_existing(Path(log_dir))
    # flush_secs: scalars reach a watching TensorBoard within seconds, not the default 2 min
    return cls(log_dir=str(log_dir), purge_step=purge_step, flush_secs=5)


def _after_existing(log_dir: Path) -> None:
    """Wait, if need be, until the new event file's name sorts after every older one.

    Readers take a directory's event files in name order, and the name starts with the
    creation time in whole seconds, then host, pid and a counter that do not sort by time: a
    process resumed within the second its predecessor started would be read first, before the
    events its purge step is meant to drop."""
    stamps = []
    for path in log_dir.glob("events.out.tfevents.*"):
        field = path.name.split(".")[3]
        if field.isdigit():
            stamps.append(int(field))
    now = time.time()
    if stamps and max(stamps) == int(now):  # (a stamp in the future: a clock was set back)
        time.sleep(max(stamps) + 1 - now)


def scalars(record: dict[str, Any]) -> list[tuple[str, float]]:
    """The TensorBoard ``(tag, value)`` pairs of one metrics record (step: its iteration)."""
    out = []
    for key, value in record.items():
        if key == "iteration" or isinstance(value, str) or value is None:
            continue
        if not isinstance(value, int | float):
            continue
        split, _, metric = key.partition("_")
        if key in NAMED:
            tag = NAMED[key]
        elif split in EVAL_SPLITS and metric:
            tag = f"{split}/{metric}"
        else:
            tag = f"optimizer/{key}"
        out.append((tag, float(value)))
    return out


class MirroredLog:
    """A metrics log that also writes each record as TensorBoard scalars.

    ``metrics.jsonl`` stays the source of truth and is written first; ``offset()`` (called
    before every checkpoint) flushes the event file too, so the scalars up to a checkpoint are
    on disk with it."""

    def __init__(self, log: Any, writer: Any):
        self.log, self.writer = log, writer
        self._last: dict[str, int] = {}  # tag → the last step written

    def write(self, record: dict[str, Any]) -> None:
        self.log.write(record)
        step = int(record.get("iteration", 0))
        for tag, value in scalars(record):  # NaN / Inf too: a diverging run shows as one
            # the loop's closing record repeats its last step's counters: one point a step
            if self._last.get(tag, -1) < step:
                self.writer.add_scalar(tag, value, step)
                self._last[tag] = step

    def offset(self) -> int:
        self.writer.flush()
        return self.log.offset()

    def close(self) -> None:
        try:
            self.log.close()
        finally:
            self.writer.close()


def mirror(log: Any, setting: bool | str, log_dir: str | Path, *, first_step: int) -> Any:
    """``log`` mirrored into TensorBoard per ``setting`` (``log`` itself when off or
    unavailable). ``first_step``: the first iteration this process logs (see the module
    docstring on resume)."""
    try:
        writer = summary_writer(setting, log_dir, purge_step=first_step)
    except ConfigError:
        log.close()
        raise
    return log if writer is None else MirroredLog(log, writer)
