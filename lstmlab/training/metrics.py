"""Metrics log: one JSON object per line (``metrics.jsonl`` in the run directory).

Each training iteration appends one record (see ``loop.train`` for the fields); evaluation
iterations add ``test_*`` fields. Records are flushed line by line so a killed run keeps what
it logged; a checkpoint stores the log's byte length, and ``resume`` cuts the log back to it so
the resumed run's log equals an uninterrupted one's (up to wall-clock times).

Standard JSON: non-finite numbers are written as the strings ``"NaN"``, ``"Infinity"``,
``"-Infinity"`` (``lstmlab.training.jsonsafe``); ``read_metrics`` turns them back into floats.

Damage (a disk error, an editor, a partial copy): ``survey`` sorts the lines up to the
checkpoint's offset into whole rows (UTF-8, one JSON object, newline-terminated) and damaged
lines; ``repair`` (called by ``resume`` before it appends) rewrites the log
atomically with every valid row up to that offset — a damaged line costs itself only, never
the rows around it — and says once what was dropped; ``read_metrics`` skips rows it cannot
read, so a damaged log never stops a run from finishing.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lstmlab.files import LIMITS, read_user_file
from lstmlab.training.jsonsafe import dumps, restore

__all__ = ["MetricsLog", "read_metrics", "survey", "repair", "LogSurvey"]


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
class LogSurvey:
    """A log read up to a checkpoint's offset: what ``repair`` keeps and drops."""

    rows: list[bytes]  # the valid rows within the offset, in order, each with its newline
    damaged: list[int]  # 1-based line numbers of the damaged lines within the offset
    short: bool  # the file ends before the offset (rows the checkpoint counted are missing)
    size: int  # file size

    @property
    def clean(self) -> bool:
        return not self.damaged and not self.short


def survey(path: str | Path, offset: int) -> LogSurvey:
    """Every line of the log before ``offset``: valid rows kept, damaged ones numbered (a
    missing file: no rows, short when ``offset`` > 0)."""
    if not os.path.lexists(path):
        return LogSurvey([], [], offset > 0, 0)
    data = read_user_file(path, LIMITS["metrics log"], "metrics log")
    rows: list[bytes] = []
    damaged: list[int] = []
    head = data[:offset]
    for no, line in enumerate(head.split(b"\n"), 1):
        if no > head.count(b"\n"):  # the bytes after the last newline: a torn row, if any
            if line:
                damaged.append(no)
            break
        if _row(line) is None:
            damaged.append(no)
        else:
            rows.append(line + b"\n")
    return LogSurvey(rows, damaged, len(data) < offset, len(data))


def _lines(numbers: list[int]) -> str:
    shown = ", ".join(map(str, numbers[:5])) + (", …" if len(numbers) > 5 else "")
    return f"line{'s' if len(numbers) > 1 else ''} {shown}"


def repair(path: str | Path, offset: int) -> str | None:
    """Make the log hold every valid row up to ``offset`` (the checkpoint's view) and nothing
    after it.

    A clean log is truncated to ``offset`` (rows after the checkpoint are written again by the
    resumed run). A log with damaged lines, or shorter than ``offset``, is rewritten atomically
    with its valid rows only; the one warning returned says what was dropped or missing
    (else None).
    """
    path = Path(path)
    s = survey(path, offset)
    if s.clean:
        if s.size > offset:
            with open(path, "r+b") as fh:
                fh.truncate(offset)
        return None
    tmp = path.with_name(path.name + ".repair")
    with open(tmp, "wb") as fh:
        fh.writelines(s.rows)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    said = []
    if s.damaged:
        said.append(
            f"dropped {len(s.damaged)} damaged line{'s' if len(s.damaged) > 1 else ''} "
            f"({_lines(s.damaged)}) and kept the {len(s.rows)} valid rows around them"
        )
    if s.short:
        said.append(
            f"it is shorter than the checkpoint says ({s.size} of {offset} bytes): the rows "
            "after its last whole row are missing from the learning curve"
        )
    return f"{path}: " + "; ".join(said)


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
