"""The search space of a study: which LSTM variants and which hyperparameters, from what ranges.

Greff et al. (seed 002, "Hyperparameter Search") sample, independently for every trial:

    hidden_size   log-uniform integers in [20, 200]     (memory blocks of one cell each)
    lr            log-uniform in [1e-6, 1e-2]
    momentum      μ = 1 − u, u log-uniform in [0.01, 1.0]
    input_noise   σ uniform in [0, 1]                   (Gaussian noise on the training inputs)

and the variant (vanilla and the eight single changes). ``GREFF`` is that space; any other comes
from a TOML file::

    variants = ["vanilla", "NFG", "CIFG"]          # any of lstmlab.nn.variants.VARIANTS
    [params.lr]
    type = "log"                                   # log | uniform | int_log | int | one_minus_log
    low = 1e-4
    high = 1e-1
    [params.input_noise]
    type = "fixed"                                 # not searched: one value for every trial
    value = 0.0

A hyperparameter is stored in the study in its *sampling coordinate* (momentum as 1 − μ), so
that its search distribution is uniform or log-uniform there; ``config_overrides`` maps a
trial's values to the run configuration. Every error is a ``SpaceError`` whose message starts
with the offending key.
"""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Param", "SearchSpace", "SpaceError", "GREFF", "HYPERPARAMETERS", "load_space"]

# hyperparameter -> (run-config key, integer?, what it is)
HYPERPARAMETERS: dict[str, tuple[str, bool, str]] = {
    "hidden_size": ("model.blocks", True, "memory blocks (one cell each)"),
    "lr": ("optimizer.lr", False, "learning rate (Nesterov, rescaled by 1 − μ)"),
    "momentum": ("optimizer.momentum", False, "momentum μ"),
    "input_noise": ("task.input_noise", False, "σ of Gaussian input noise"),
    "batch_size": ("optimizer.batch_size", True, "sequences per minibatch"),
}
TYPES = ("log", "uniform", "int_log", "int", "one_minus_log", "fixed")
GREFF_VARIANTS = ("vanilla", "NIG", "NFG", "NOG", "NIAF", "NOAF", "NP", "CIFG", "FGR")


class SpaceError(ValueError):
    """A bad search space; ``str(err)`` is one line that starts with the key."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"{key}: {message}")


@dataclass(frozen=True)
class Param:
    """One hyperparameter's search distribution (in its sampling coordinate)."""

    name: str
    type: str
    low: float | None = None
    high: float | None = None
    value: float | None = None  # type "fixed"

    @property
    def log(self) -> bool:
        return self.type in ("log", "int_log", "one_minus_log")

    @property
    def integer(self) -> bool:
        return self.type in ("int", "int_log")

    @property
    def key(self) -> str:
        """The parameter's name in the Optuna study (momentum is stored as ``1-momentum``)."""
        return f"1-{self.name}" if self.type == "one_minus_log" else self.name

    def to_value(self, sampled: float) -> float | int:
        """The run-config value of a value in the sampling coordinate."""
        if self.type == "one_minus_log":
            return 1.0 - sampled
        return int(sampled) if self.integer else float(sampled)

    def distribution(self):
        import optuna.distributions as d

        if self.integer:
            return d.IntDistribution(int(self.low), int(self.high), log=self.log)
        return d.FloatDistribution(self.low, self.high, log=self.log)

    def to_dict(self) -> dict[str, Any]:
        if self.type == "fixed":
            return {"type": "fixed", "value": self.value}
        return {"type": self.type, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class SearchSpace:
    variants: tuple[str, ...]
    params: dict[str, Param] = field(default_factory=dict)

    @property
    def searched(self) -> dict[str, Param]:
        return {k: p for k, p in self.params.items() if p.type != "fixed"}

    def to_dict(self) -> dict[str, Any]:
        return {
            "variants": list(self.variants),
            "params": {k: p.to_dict() for k, p in sorted(self.params.items())},
        }

    def fingerprint(self) -> str:
        """A canonical text of the space; two spaces are the same study iff these match."""
        return json.dumps(self.to_dict(), sort_keys=True)

    def sample(self, trial) -> dict[str, Any]:
        """Draw a trial's variant and hyperparameters through Optuna's ``trial.suggest_*``;
        returns the run-config overrides."""
        over: dict[str, Any] = {}
        variant = (
            trial.suggest_categorical("variant", list(self.variants))
            if len(self.variants) > 1
            else self.variants[0]
        )
        over["model.variant"] = variant
        for name, p in self.params.items():
            if p.type == "fixed":
                sampled = p.value
            elif p.integer:
                sampled = trial.suggest_int(p.key, int(p.low), int(p.high), log=p.log)
            else:
                sampled = trial.suggest_float(p.key, p.low, p.high, log=p.log)
            over[HYPERPARAMETERS[name][0]] = p.to_value(sampled)
        return over

    def describe(self) -> str:
        lines = [f"variants: {', '.join(self.variants)}"]
        for name, p in self.params.items():
            if p.type == "fixed":
                lines.append(f"{name}: fixed at {p.value:g}")
            else:
                lines.append(
                    f"{p.key}: {p.type.replace('one_minus_', '')} in [{p.low:g}, {p.high:g}]"
                )
        return "\n".join(lines)


def from_dict(data: dict[str, Any], where: str = "space") -> SearchSpace:
    """Validate a space given as a dict (a TOML file's content)."""
    from lstmlab.nn.variants import VARIANTS

    if not isinstance(data, dict):
        raise SpaceError(where, "must be a table")
    unknown = set(data) - {"variants", "params"}
    if unknown:
        raise SpaceError(f"{where}.{sorted(unknown)[0]}", "unknown key; valid: variants, params")
    variants = data.get("variants", list(GREFF_VARIANTS))
    if isinstance(variants, str):
        variants = [variants]
    if not isinstance(variants, list) or not variants:
        raise SpaceError(f"{where}.variants", "must be a non-empty list of variant names")
    for v in variants:
        if v not in VARIANTS:
            raise SpaceError(
                f"{where}.variants", f"unknown variant {v!r}; valid: {', '.join(VARIANTS)}"
            )
    if len(set(variants)) != len(variants):
        raise SpaceError(f"{where}.variants", "lists a variant twice")
    raw = data.get("params", {})
    if not isinstance(raw, dict):
        raise SpaceError(f"{where}.params", "must be a table of hyperparameters")
    params: dict[str, Param] = {}
    for name, spec in raw.items():
        key = f"{where}.params.{name}"
        if name not in HYPERPARAMETERS:
            raise SpaceError(key, f"unknown hyperparameter; valid: {', '.join(HYPERPARAMETERS)}")
        params[name] = _param(key, name, spec)
    return SearchSpace(tuple(variants), params)


def _number(key: str, spec: dict, k: str) -> float:
    v = spec.get(k)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise SpaceError(f"{key}.{k}", f"must be a finite number, got {v!r}")
    return float(v)


def _param(key: str, name: str, spec: Any) -> Param:
    if not isinstance(spec, dict):
        raise SpaceError(key, "must be a table with type, low, high (or type = 'fixed', value)")
    kind = spec.get("type")
    if kind not in TYPES:
        raise SpaceError(f"{key}.type", f"invalid choice {kind!r}; valid: {', '.join(TYPES)}")
    integer = HYPERPARAMETERS[name][1]
    allowed = {"type", "value"} if kind == "fixed" else {"type", "low", "high"}
    extra = set(spec) - allowed
    if extra:
        raise SpaceError(
            f"{key}.{sorted(extra)[0]}", f"unknown key; valid: {', '.join(sorted(allowed))}"
        )
    if kind == "fixed":
        value = _number(key, spec, "value")
        p = Param(name, kind, value=int(value) if integer else value)
        _check_value(key, name, p.to_value(p.value))
        return p
    if integer != (kind in ("int", "int_log")):
        need = "int or int_log" if integer else "log, uniform or one_minus_log"
        raise SpaceError(f"{key}.type", f"{name} takes type {need}, got {kind!r}")
    low, high = _number(key, spec, "low"), _number(key, spec, "high")
    if not low < high:
        raise SpaceError(key, f"empty range: low ({low:g}) must be below high ({high:g})")
    if kind in ("log", "int_log", "one_minus_log") and low <= 0:
        raise SpaceError(f"{key}.low", f"a log range needs low > 0, got {low:g}")
    if integer:
        if low != int(low) or high != int(high):
            raise SpaceError(key, f"integer bounds needed, got [{low:g}, {high:g}]")
        low, high = int(low), int(high)
    p = Param(name, kind, low, high)
    for end in (low, high):
        _check_value(key, name, p.to_value(end))
    return p


def _check_value(key: str, name: str, value: float) -> None:
    """Ranges the run config would reject, caught here with the space's key."""
    ok = {
        "hidden_size": value >= 1,
        "lr": value > 0,
        "momentum": 0 <= value <= 1,
        "input_noise": value >= 0,
        "batch_size": value >= 1,
    }[name]
    if not ok:
        raise SpaceError(key, f"gives {name} = {value:g}, outside its valid range")


MAX_SPACE_BYTES = 1 << 20  # a search space is a few lines; anything larger is not one


def load_space(path: str | Path) -> SearchSpace:
    """The search space in TOML file ``path``: checked to be a regular file of at most
    ``MAX_SPACE_BYTES`` in UTF-8 before it is parsed; every problem is one ``SpaceError``."""
    import os
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the open
    except OSError as err:
        raise SpaceError(str(path), f"cannot read: {err.strerror or err}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SpaceError(str(path), "not a regular file; give a search space TOML file")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            raw = fh.read(MAX_SPACE_BYTES + 1) if info.st_size <= MAX_SPACE_BYTES else b""
        if max(info.st_size, len(raw)) > MAX_SPACE_BYTES:
            raise SpaceError(
                str(path),
                f"{max(info.st_size, len(raw))} bytes is too large for a search space (at "
                f"most {MAX_SPACE_BYTES}); give the space's TOML file",
            )
    except OSError as err:
        raise SpaceError(str(path), f"cannot read: {err.strerror or err}") from None
    finally:
        os.close(fd)
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise SpaceError(
            str(path), f"not UTF-8 text (byte {err.start}); a search space is a TOML file"
        ) from None
    except tomllib.TOMLDecodeError as err:
        raise SpaceError(str(path), f"not valid TOML: {err}") from None
    return from_dict(data, where=str(path))


GREFF = from_dict(
    {
        "variants": list(GREFF_VARIANTS),
        "params": {
            "hidden_size": {"type": "int_log", "low": 20, "high": 200},
            "lr": {"type": "log", "low": 1e-6, "high": 1e-2},
            "momentum": {"type": "one_minus_log", "low": 0.01, "high": 1.0},
            "input_noise": {"type": "uniform", "low": 0.0, "high": 1.0},
        },
    }
)
