"""Schedules: any hyperparameter may be a constant or a function of a step counter.

A schedule is a pure function ``step -> float`` (step = epoch or iteration, whatever the owner
counts). Being pure, a schedule carries no state: resuming a run only needs the counter.
Every schedule round-trips through ``to_dict`` / ``schedule_from_dict`` so that configs and
checkpoints can store it as plain data.

    >>> s = as_schedule({"type": "linear", "start": 1.0, "end": 3.75, "steps": 10})
    >>> s(0), s(5), s(100)
    (1.0, 2.375, 3.75)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "Schedule",
    "Constant",
    "Linear",
    "Exponential",
    "Piecewise",
    "Cosine",
    "as_schedule",
    "schedule_from_dict",
]


class Schedule:
    """Base class: ``schedule(step) -> float`` for integer ``step >= 0``."""

    kind: str = "schedule"

    def __call__(self, step: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, **asdict(self)}  # type: ignore[call-overload]


def _finite(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"schedule {name} must be a finite number, got {value!r}")
    return value


@dataclass(frozen=True)
class Constant(Schedule):
    """``value`` at every step."""

    value: float
    kind = "constant"

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", _finite("value", self.value))

    def __call__(self, step: int) -> float:
        return self.value


@dataclass(frozen=True)
class Linear(Schedule):
    """From ``start`` at step 0 to ``end`` at step ``steps``, constant afterwards."""

    start: float
    end: float
    steps: int
    kind = "linear"

    def __post_init__(self) -> None:
        _finite("start", self.start)
        _finite("end", self.end)
        if int(self.steps) < 1:
            raise ValueError(f"linear schedule steps must be >= 1, got {self.steps!r}")

    def __call__(self, step: int) -> float:
        frac = min(max(step, 0), self.steps) / self.steps
        return float(self.start + (self.end - self.start) * frac)


@dataclass(frozen=True)
class Exponential(Schedule):
    """``start * rate ** (step // every)``, optionally bounded below/above by ``bound``."""

    start: float
    rate: float
    every: int = 1
    bound: float | None = None
    kind = "exponential"

    def __post_init__(self) -> None:
        _finite("start", self.start)
        if not (float(self.rate) > 0):
            raise ValueError(f"exponential schedule rate must be > 0, got {self.rate!r}")
        if int(self.every) < 1:
            raise ValueError(f"exponential schedule every must be >= 1, got {self.every!r}")

    def __call__(self, step: int) -> float:
        value = self.start * self.rate ** (max(step, 0) // self.every)
        if self.bound is not None:
            value = max(value, self.bound) if self.rate < 1 else min(value, self.bound)
        return float(value)


@dataclass(frozen=True)
class Piecewise(Schedule):
    """``values[k]`` for ``boundaries[k-1] <= step < boundaries[k]``.

    ``len(values) == len(boundaries) + 1``."""

    boundaries: tuple[int, ...]
    values: tuple[float, ...]
    kind = "piecewise"

    def __post_init__(self) -> None:
        object.__setattr__(self, "boundaries", tuple(int(b) for b in self.boundaries))
        object.__setattr__(self, "values", tuple(_finite("value", v) for v in self.values))
        if len(self.values) != len(self.boundaries) + 1:
            raise ValueError(
                "piecewise schedule needs len(values) == len(boundaries) + 1, got "
                f"{len(self.values)} values for {len(self.boundaries)} boundaries"
            )
        if list(self.boundaries) != sorted(self.boundaries):
            raise ValueError(f"piecewise schedule boundaries must increase, got {self.boundaries}")

    def __call__(self, step: int) -> float:
        k = sum(1 for b in self.boundaries if step >= b)
        return self.values[k]


@dataclass(frozen=True)
class Cosine(Schedule):
    """Cosine decay from ``start`` to ``end`` over ``steps``, constant afterwards."""

    start: float
    end: float
    steps: int
    kind = "cosine"

    def __post_init__(self) -> None:
        _finite("start", self.start)
        _finite("end", self.end)
        if int(self.steps) < 1:
            raise ValueError(f"cosine schedule steps must be >= 1, got {self.steps!r}")

    def __call__(self, step: int) -> float:
        frac = min(max(step, 0), self.steps) / self.steps
        return float(self.end + 0.5 * (self.start - self.end) * (1 + math.cos(math.pi * frac)))


_KINDS: dict[str, type[Schedule]] = {
    cls.kind: cls for cls in (Constant, Linear, Exponential, Piecewise, Cosine)
}


def schedule_from_dict(spec: dict[str, Any]) -> Schedule:
    """Build a schedule from ``{"type": name, **fields}`` (the inverse of ``to_dict``)."""
    spec = dict(spec)
    kind = spec.pop("type", None)
    if kind not in _KINDS:
        raise ValueError(f"unknown schedule type {kind!r}; valid types: {sorted(_KINDS)}")
    cls = _KINDS[kind]
    try:
        if cls is Piecewise:
            spec["boundaries"] = tuple(spec.get("boundaries", ()))
            spec["values"] = tuple(spec.get("values", ()))
        return cls(**spec)
    except TypeError as err:
        raise ValueError(f"bad fields for {kind!r} schedule: {err}") from None


def as_schedule(value: float | Schedule | dict | Callable[[int], float]) -> Schedule:
    """Accept a number, a ``Schedule``, a dict spec or a plain callable."""
    if isinstance(value, Schedule):
        return value
    if isinstance(value, dict):
        return schedule_from_dict(value)
    if isinstance(value, bool):
        raise ValueError(f"expected a number or a schedule, got {value!r}")
    if isinstance(value, int | float):
        return Constant(float(value))
    if callable(value):
        return _Callable(value)
    if isinstance(value, Sequence):
        raise ValueError(f"expected a number or a schedule, got a sequence {value!r}")
    raise ValueError(f"expected a number or a schedule, got {type(value).__name__}")


class _Callable(Schedule):
    """Wraps a user function; not serialisable (``to_dict`` raises)."""

    kind = "callable"

    def __init__(self, fn: Callable[[int], float]):
        self.fn = fn

    def __call__(self, step: int) -> float:
        return float(self.fn(step))

    def to_dict(self) -> dict[str, Any]:
        raise ValueError("a schedule given as a Python function cannot be saved; use a dict spec")

    def __repr__(self) -> str:
        return f"_Callable({self.fn!r})"
