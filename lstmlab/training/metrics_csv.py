"""The metrics of several runs as one CSV table (``metrics.csv`` of ``lstmlab report``).

One row per metrics record of each run, the first column ``run`` naming its directory; the
header holds every field any record has (in the order they first appear), so rows of runs with
other optimizers (HF's ``damping``, ``cg_iterations``) or other evaluation metrics line up, a
missing field an empty cell. Non-finite numbers are written ``nan``, ``inf``, ``-inf`` (what
pandas, R and spreadsheets read back as numbers). Written with the standard ``csv`` module.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

__all__ = ["columns", "write_metrics_csv"]


def columns(tables: list[list[dict[str, Any]]]) -> list[str]:
    """Every field of every record, in the order they first appear, after ``run``."""
    seen: dict[str, None] = {"run": None}
    for records in tables:
        for rec in records:
            seen.update(dict.fromkeys(rec))
    return list(seen)


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def write_metrics_csv(runs: dict[str, list[dict[str, Any]]], path: str | Path) -> Path:
    """Write ``{run name: its metrics records}`` to ``path`` (written whole, then renamed)."""
    path = Path(path)
    header = columns(list(runs.values()))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        out = csv.DictWriter(fh, fieldnames=header, restval="")
        out.writeheader()
        for name, records in runs.items():
            for rec in records:
                out.writerow({"run": name, **{k: _cell(v) for k, v in rec.items() if k != "run"}})
    tmp.replace(path)
    return path
