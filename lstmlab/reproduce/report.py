"""Shared pieces of the reproductions' reports: markdown tables, number formats, medians,
learning curves read from run directories, and writing the report atomically."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

# lstmlab.training.run and .metrics are imported where they are used: they load torch, and
# ``lstmlab reproduce NAME --help`` builds every paper's parser from modules that import this one

__all__ = ["md_table", "fmt", "median", "rel", "curves", "write_report", "prepare_out"]


def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(x: float | None, spec: str = ".3g") -> str:
    """``–`` for a missing or NaN value, else ``format(x, spec)``."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return format(x, spec)


def median(xs: Iterable[float]) -> float | None:
    xs = list(xs)
    return statistics.median(xs) if xs else None


def rel(path: str | Path, out: Path) -> str:
    return str(Path(path).relative_to(out))


def curves(
    out: Path, part: str, names: Iterable[str], label: Callable[[str], str] = lambda k: k
) -> dict[str, list[dict[str, Any]]]:
    """label -> the metrics rows of run ``OUT/runs/PART/NAME``."""
    from lstmlab.training.metrics import read_metrics

    return {label(k): read_metrics(Path(out) / "runs" / part / k / "metrics.jsonl") for k in names}


def prepare_out(out: Path) -> None:
    from lstmlab.training.run import RunError

    try:
        (Path(out) / "figures").mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunError(f"cannot create {out}: {err.strerror or err}") from None


def write_report(out: Path, sections: Sequence[str], name: str = "results.md") -> Path:
    from lstmlab.training.run import RunError, atomic_write_text

    path = Path(out) / name
    try:
        atomic_write_text(path, "\n".join(sections))
    except OSError as err:
        raise RunError(f"cannot write {path}: {err.strerror or err}") from None
    return path
