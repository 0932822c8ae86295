"""Standard JSON for every file lstmlab writes (``metrics.jsonl``, ``summary.json``, ``eval
--json``): JSON has no NaN or Infinity, so a non-finite number is written as one of the
strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` (the spellings JavaScript and Python's
``float()`` read), and ``restore`` turns exactly those strings back into floats when lstmlab
reads its own files. Every writer passes ``allow_nan=False``: a bare ``NaN`` can never be
written by accident.
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["plain", "dumps", "restore", "NON_FINITE"]

NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _non_finite_name(x: float) -> str:
    return "NaN" if x != x else ("Infinity" if x > 0 else "-Infinity")


def plain(obj: Any) -> Any:
    """``obj`` with non-finite floats as strings and 0-d tensors / numpy scalars as numbers."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else _non_finite_name(obj)
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    if hasattr(obj, "item") and getattr(obj, "ndim", 0) == 0:  # torch / numpy scalars
        return plain(obj.item())
    raise TypeError(f"cannot write a {type(obj).__name__} as JSON")


def dumps(obj: Any, **kwargs: Any) -> str:
    """Standard JSON (``allow_nan=False``) of ``plain(obj)``."""
    return json.dumps(plain(obj), allow_nan=False, **kwargs)


def restore(obj: Any) -> Any:
    """Inverse of ``plain`` for what JSON keeps: ``"NaN"``/``"Infinity"``/``"-Infinity"`` back
    to floats, recursively."""
    if isinstance(obj, str):
        return NON_FINITE.get(obj, obj)
    if isinstance(obj, dict):
        return {k: restore(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [restore(v) for v in obj]
    return obj
