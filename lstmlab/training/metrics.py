"""Metrics log: one JSON object per line (``metrics.jsonl`` in the run directory).

Each training iteration appends one record (see ``loop.train`` for the fields); evaluation
iterations add ``test_*`` fields. Records are flushed line by line so a killed run keeps what
it logged; a checkpoint stores the log's byte length, and ``resume`` cuts the log back to it so
the resumed run's log equals an uninterrupted one's (up to wall-clock times).

Standard JSON: non-finite numbers are written as the strings ``"NaN"``, ``"Infinity"``,
``"-Infinity"`` (``lstmlab.training.jsonsafe``); ``read_metrics`` turns them back into floats.

Damage (a disk error, an editor, a partial copy): ``scan`` finds the longest prefix of whole
rows (UTF-8, one JSON object, newline-terminated); ``repair`` (called by ``resume`` before it
appends) truncates the log to that prefix when a damaged row lies before the checkpoint's
offset and says what was lost; ``read_metrics`` skips rows it cannot read, so a damaged log
never stops a run from finishing.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lstmlab.files import LIMITS, read_user_file
from lstmlab.training.jsonsafe import dumps, restore

__all__ = ["MetricsLog", "read_metrics", "scan", "repair", "LogScan"]


class MetricsLog:
    def __init__(self, path: str | Path, *, truncate_to: int | None = None):
        self.path = Path(path)
        if truncate_to is not None and self.path.exists():
            with open(self.path, "r+b") as fh:
                fh.truncate(truncate_to)
        self._fh = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(dumps(record) + "\n")
        self._fh.flush()

    def offset(self) -> int:
        """Bytes written so far, after making them durable (called before a checkpoint)."""
        self._fh.flush()
        os.fsync(self._fh.fileno())
        return self._fh.tell()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()


def _row(line: bytes) -> dict[str, Any] | None:
    try:
        rec = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return restore(rec) if isinstance(rec, dict) else None


@dataclass
class LogScan:
    good_bytes: int  # length of the longest prefix of whole, readable rows
    good_rows: int
    size: int  # file size
    last_iteration: int | None  # iteration of the last good row


def scan(path: str | Path) -> LogScan:
    """The longest prefix of whole rows of a metrics log (a missing file: all zeros)."""
    if not os.path.lexists(path):
        return LogScan(0, 0, 0, None)
    data = read_user_file(path, LIMITS["metrics log"], "metrics log")
    pos, rows, last = 0, 0, None
    while pos < len(data):
        end = data.find(b"\n", pos)
        if end < 0:
            break  # a torn last line
        rec = _row(data[pos:end])
        if rec is None:
            break
        rows, pos = rows + 1, end + 1
        last = rec.get("iteration", last)
    return LogScan(pos, rows, len(data), last if isinstance(last, int) else None)


def repair(path: str | Path, offset: int) -> str | None:
    """Make the log a whole-row prefix no longer than ``offset`` (the checkpoint's view).

    Returns a warning when rows the checkpoint counted were damaged or missing (the log is
    then cut to its last whole row; the learning curve has a gap there), else None.
    """
    path = Path(path)
    s = scan(path)
    if s.good_bytes >= offset:
        if s.size > offset:
            with open(path, "r+b") as fh:
                fh.truncate(offset)
        return None
    with open(path, "r+b" if path.exists() else "wb") as fh:
        fh.truncate(s.good_bytes)
    where = (
        f"after iteration {s.last_iteration}" if s.last_iteration is not None else "at its start"
    )
    what = "damaged" if s.size >= offset else "shorter than the checkpoint says"
    return (
        f"{path} is {what} (byte {s.good_bytes} of the {offset} the checkpoint counted): "
        f"truncated to its last whole row ({s.good_rows} rows, {where}); the rows up to the "
        "checkpoint are lost from the learning curve"
    )


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All readable records of a log (a torn or damaged line is skipped)."""
    if not os.path.lexists(path):
        return []
    data = read_user_file(path, LIMITS["metrics log"], "metrics log")
    out = []
    for line in data.split(b"\n"):
        rec = _row(line) if line.strip() else None
        if rec is not None:
            out.append(rec)
    return out
