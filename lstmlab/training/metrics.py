"""Metrics log: one JSON object per line (``metrics.jsonl`` in the run directory).

Each training iteration appends one record (see ``loop.train`` for the fields); evaluation
iterations add ``test_*`` fields. Records are flushed line by line so a killed run keeps what
it logged; a checkpoint stores the log's byte length, and ``resume`` cuts the log back to it so
the resumed run's log equals an uninterrupted one's (up to wall-clock times).
Non-finite numbers are written as ``NaN``/``Infinity`` (Python's json reads them back).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["MetricsLog", "read_metrics"]


class MetricsLog:
    def __init__(self, path: str | Path, *, truncate_to: int | None = None):
        self.path = Path(path)
        if truncate_to is not None and self.path.exists():
            with open(self.path, "r+b") as fh:
                fh.truncate(truncate_to)
        self._fh = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record, default=_plain) + "\n")
        self._fh.flush()

    def offset(self) -> int:
        """Bytes written so far, after making them durable (called before a checkpoint)."""
        self._fh.flush()
        os.fsync(self._fh.fileno())
        return self._fh.tell()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()


def _plain(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    raise TypeError(f"cannot log a {type(x).__name__}")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All complete records of a log (a torn last line from a kill is skipped)."""
    out = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return out
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out
