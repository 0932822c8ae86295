"""Run configuration: typed dataclasses are the single source of truth.

A run is fully described by one ``RunConfig``. TOML files and ``--key value`` flags only
override the dataclass defaults; every override is validated here, at construction, and a bad
one raises ``ConfigError`` whose message starts with the dotted key (``optimizer.batch_size``)
so the CLI can print one actionable line and exit with code 2.

    cfg = resolve(base=RunConfig(), files=["my.toml"], overrides={"optimizer.lr": "0.1"})
    save_toml(cfg, run_dir / "config.toml")          # the run directory keeps the resolved config

Field metadata carries the help text (the CLI's ``--help`` is generated from it), the valid
choices and the numeric range. ``None`` means "not set / no limit" and is omitted from TOML,
which has no null.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lstmlab.files import LIMITS, UnreadableFile, read_user_file

__all__ = [
    "ConfigError",
    "TaskConfig",
    "ModelConfig",
    "OptimizerConfig",
    "StopConfig",
    "LogConfig",
    "RunConfig",
    "OPTIMIZERS",
    "from_dict",
    "to_dict",
    "load_toml",
    "save_toml",
    "dumps_toml",
    "apply_overrides",
    "parse_value",
    "resolve",
    "flag_specs",
]

OPTIMIZERS = ("lbfgs", "cg", "hf", "sgd", "momentum", "nesterov", "adam")
# lstmlab.engines.engine_names() (a test holds them equal; the README's names are tested too)
ENGINES = (
    "bptt",
    "autograd",
    "rtrl",
    "rtrl-per-sample",
    "bptt:per-sample",
    "autograd:per-sample",
    "rtrl:per-sample",
)
# seed 001's four (Krause et al. 2015), presets of SGD and HF with their batch sizes
SEED001_OPTIMIZERS = ("sgd-clip", "bgd", "shf", "bhf")
OPTIMIZERS += SEED001_OPTIMIZERS
INTERVAL_WORDS = ("off", "epoch")  # what eval_every / checkpoint_every take besides a number


class ConfigError(ValueError):
    """A bad configuration value; ``str(err)`` is one line that starts with the key."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"{key}: {message}")


def opt(default: Any, help: str, *, choices=None, ge=None, gt=None, le=None, words=None) -> Any:
    """A dataclass field with help text, valid choices and a numeric range; ``words``: the
    strings a numeric field also takes (intervals: "off", "epoch"; "off" is None where None
    is allowed)."""
    meta = {"help": help, "choices": choices, "ge": ge, "gt": gt, "le": le, "words": words}
    if isinstance(default, dict | list):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


# --------------------------------------------------------------------------------------------
# The sections of a run


@dataclass
class TaskConfig:
    """Which task, and the options passed to ``lstmlab.tasks.make(name, **options)``."""

    name: str = opt("multiplication", "task name (see `lstmlab tasks`)")
    options: dict = opt({}, "task options passed to lstmlab.tasks.make, e.g. {T = 100}")
    input_noise: float = opt(
        0.0, "σ of Gaussian noise added to the training inputs at every step (Greff)", ge=0
    )


@dataclass
class ModelConfig:
    """The network: a ``SequenceModel`` with an LSTM-family cell (SPEC S1)."""

    cell: str = opt("lstm", "recurrent cell", choices=("lstm", "rnn", "mrnn", "gru"))
    variant: str = opt("lstm97", "LSTM variant (SPEC S1), e.g. lstm97, vanilla, NFG, CIFG")
    blocks: int = opt(2, "memory blocks in the layer", ge=1)
    cells_per_block: int = opt(2, "cells per memory block (gates are shared by a block)", ge=1)
    alpha: float | dict = opt(
        3.75, "gate sharpness α, a number or a schedule over epochs (seed 000 Sec. 4)", gt=0
    )
    engine: str = opt("bptt", "how gradients are computed", choices=ENGINES)
    options: dict = opt({}, "extra keyword arguments for the cell, e.g. {init = 'uniform'}")
    perturbation: float = opt(
        0.0,
        "add this × N(0, 1) to every initial weight (a round-off experiment: does the outcome "
        "survive a change in the last digits?); 0 = none",
        ge=0,
    )
    perturbation_seed: int = opt(1, "seed of the perturbation's noise", ge=0)

    @property
    def hidden_size(self) -> int:
        return self.blocks * self.cells_per_block


@dataclass
class OptimizerConfig:
    """The optimizer and its minibatch; unset (None) hyperparameters take its own defaults."""

    name: str = opt("lbfgs", "optimizer", choices=OPTIMIZERS)
    batch_size: int = opt(1000, "sequences per minibatch (gradient batch B_g)", ge=1)
    lr: float | dict | None = opt(None, "learning rate (a number or a schedule)", gt=0)
    momentum: float | dict | None = opt(None, "momentum coefficient", ge=0, le=1)
    iterations_per_batch: int | None = opt(
        None, "inner iterations per minibatch (L-BFGS/CG; seed 000's code uses 20)", ge=1
    )
    history: int | None = opt(None, "L-BFGS history size m", ge=1)
    options: dict = opt({}, "further keyword arguments for the optimizer")


@dataclass
class StopConfig:
    """When the run ends. Budgets left unset are unlimited; the first rule met ends the run."""

    metric: str = opt(
        "", "test metric for the target and for patience ('' = the task's success test)"
    )
    target: float | None = opt(None, "stop when the test metric is below this value")
    max_iterations: int | None = opt(None, "budget: optimizer steps", ge=1)
    max_epochs: int | None = opt(None, "budget: passes over the training set", ge=1)
    max_samples: int | None = opt(None, "budget: training sequences seen", ge=1)
    max_pd: float | None = opt(None, "budget: sequential cost P_D (forward-pass equivalents)", gt=0)
    max_pi: float | None = opt(
        None, "budget: fully-parallel cost P_I (forward passes of one batch)", gt=0
    )
    max_seconds: float | None = opt(None, "budget: wall time of the training loop", gt=0)
    patience: int | None = opt(
        None,
        "stop after this many evaluations without improvement (epochs where evaluation comes "
        "once per epoch, as in the real-data presets: eval_every = 'epoch')",
        ge=1,
    )
    patience_epochs: int | None = opt(
        None, "stop after this many epochs without improvement (Greff: 15)", ge=1
    )


@dataclass
class LogConfig:
    """What a run writes besides ``metrics.jsonl`` (not part of the run's identity: a resumed
    run may change it). TensorBoard is an optional extra: ``pip install "lstmlab[tensorboard]"``
    (``lstmlab.training.tensorboard``)."""

    tensorboard: bool | str = opt(
        False,
        "mirror every metrics row as TensorBoard scalars in the run directory; 'auto' (the "
        "real-data presets): on when the tensorboard package is installed",
        choices=(True, False, "auto"),
    )


@dataclass
class RunConfig:
    """Task + model + optimizer + stopping rule + seed + precision + device.

    The defaults are seed 000's multiplication setting (Lyu & Zhu, Sec. 5.1).
    """

    seed: int = opt(0, "seed for initialisation, data order and any sampling", ge=0)
    precision: str = opt("float64", "floating-point precision", choices=("float64", "float32"))
    device: str = opt(
        "cpu",
        "device; 'auto' picks cuda when present (tiny nets run faster on cpu)",
        choices=("cpu", "cuda", "auto"),
    )
    eval_every: int | str = opt(
        1,
        "evaluate every this many iterations; 'epoch': at the end of every epoch; 'off': "
        "only the initial and the final network (and by eval_seconds)",
        ge=1,
        words=INTERVAL_WORDS,
    )
    checkpoint_every: int | str = opt(
        1,
        "checkpoint every this many iterations; 'epoch': at the end of every epoch; 'off': "
        "only at the start and the end (and by checkpoint_seconds)",
        ge=1,
        words=INTERVAL_WORDS,
    )
    log_every: int = opt(
        1, "write a metrics row every this many iterations (evaluations are always logged)", ge=1
    )
    eval_seconds: float | str | None = opt(
        None,
        "also evaluate when this many seconds passed since the last evaluation ('off': never)",
        gt=0,
        words=("off",),
    )
    checkpoint_seconds: float | str | None = opt(
        None,
        "also checkpoint when this many seconds passed since the last checkpoint ('off': never)",
        gt=0,
        words=("off",),
    )
    eval_split: str = opt(
        "auto",
        "split evaluated during training (targets, patience); 'auto': valid when the task "
        "has one (the test split is then read once, at the end), else test",
        choices=("auto", "valid", "test"),
    )
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    stop: StopConfig = field(default_factory=StopConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def __post_init__(self) -> None:
        validate(self)


# --------------------------------------------------------------------------------------------
# Validation


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _allowed(tp: Any) -> tuple[type, ...]:
    """The runtime types an annotation admits (None included for ``X | None``)."""
    args = typing.get_args(tp)
    if not args:
        return (tp,)
    out: list[type] = []
    for a in args:
        out.extend(_allowed(a) if typing.get_args(a) else [type(None) if a is None else a])
    return tuple(out)


def _type_name(types: tuple[type, ...]) -> str:
    names = {
        int: "an integer",
        float: "a number",
        str: "a string",
        bool: "true/false",
        dict: "a table",
        type(None): "unset",
    }
    return " or ".join(names.get(t, t.__name__) for t in types if t is not type(None))


def _check_value(key: str, value: Any, tp: Any, meta: dict) -> Any:
    allowed = _allowed(tp)
    if value is None:
        if type(None) in allowed:
            return None
        raise ConfigError(key, f"must be set ({_type_name(allowed)})")
    words = meta.get("words")
    if words:  # an interval: a number, or one of its words ("off", "epoch")
        allowed = tuple(t for t in allowed if t is not str)
        if isinstance(value, str) and value in words:
            return None if value == "off" and type(None) in allowed else value
        number = isinstance(value, allowed) or (float in allowed and isinstance(value, int))
        if isinstance(value, str | bool) or not number:
            one_of = ", ".join(repr(w) for w in words)
            raise ConfigError(key, f"must be {_type_name(allowed)} or {one_of}, got {value!r}")
    # ints are accepted where floats are; bools are never numbers
    if isinstance(value, bool) and bool not in allowed:
        raise ConfigError(key, f"must be {_type_name(allowed)}, got {value!r}")
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and float in allowed
        and int not in allowed
    ):
        value = float(value)
    if not isinstance(value, tuple(t for t in allowed if t is not type(None))):
        raise ConfigError(key, f"must be {_type_name(allowed)}, got {value!r}")
    if isinstance(value, dict | list):
        _check_finite(key, value)
    if isinstance(value, dict) and key.endswith(("alpha", "lr", "momentum")):
        from lstmlab.schedules import as_schedule

        try:
            as_schedule(value)
        except ValueError as err:
            raise ConfigError(key, str(err)) from None
    if meta.get("choices") and value not in meta["choices"]:
        shown = ", ".join(map(show_choice, meta["choices"]))
        raise ConfigError(key, f"invalid choice {value!r}; valid: {shown}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(key, f"must be finite, got {value!r}")
        if meta.get("ge") is not None and value < meta["ge"]:
            raise ConfigError(key, f"must be >= {meta['ge']}, got {value!r}")
        if meta.get("gt") is not None and value <= meta["gt"]:
            raise ConfigError(key, f"must be > {meta['gt']}, got {value!r}")
        if meta.get("le") is not None and value > meta["le"]:
            raise ConfigError(key, f"must be <= {meta['le']}, got {value!r}")
    return value


def show_choice(value: Any) -> str:
    """A choice as a user types it (TOML's ``true``/``false``, strings bare)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _check_finite(key: str, value: Any) -> None:
    """No NaN/Inf anywhere inside an option table or schedule (TOML can write nan and inf)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(key, f"must be finite, got {value!r}")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(f"{key}.{k}", v)
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_finite(f"{key}[{i}]", v)


def validate(obj: Any, prefix: str = "") -> None:
    """Check every field of a config dataclass (recursively); coerce ints to floats."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        key = f"{prefix}{f.name}"
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            validate(value, key + ".")
            continue
        setattr(obj, f.name, _check_value(key, value, hints[f.name], dict(f.metadata)))


# --------------------------------------------------------------------------------------------
# Dicts, TOML and overrides


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict; ``None`` values are dropped (TOML has no null)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            out[f.name] = to_dict(v)
        elif v is not None:
            out[f.name] = v
    return out


def _merge(cls: type, base: Any, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(prefix.rstrip(".") or "config", f"must be a table, got {data!r}")
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {f.name: getattr(base, f.name) for f in dataclasses.fields(cls)}
    for k, v in data.items():
        if k not in names:
            raise ConfigError(
                f"{prefix}{k}", f"unknown key; valid keys here: {', '.join(sorted(names))}"
            )
        if dataclasses.is_dataclass(hints[k]):
            kwargs[k] = _merge(hints[k], kwargs[k], v, f"{prefix}{k}.")
        elif isinstance(v, dict) and isinstance(kwargs[k], dict) and k == "options":
            kwargs[k] = _deep_merge(kwargs[k], v)  # option tables merge key by key
        else:
            kwargs[k] = v
    obj = object.__new__(cls)
    for k, v in kwargs.items():
        setattr(obj, k, v)
    return obj


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on ``base``; nested tables (``options.lm``) merge key by key too."""
    out = dict(base)
    for k, v in over.items():
        out[k] = (
            _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        )
    return out


def from_dict(data: dict[str, Any], base: RunConfig | None = None) -> RunConfig:
    """Override ``base`` (default: ``RunConfig()``) with a nested dict, then validate."""
    merged = _merge(RunConfig, base if base is not None else RunConfig(), data, "")
    validate(merged)
    return merged


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file into a dict; a file that is not UTF-8 TOML becomes a one-line
    ``ConfigError`` naming the file."""
    try:
        raw = read_user_file(path, LIMITS["config"], "config")
    except UnreadableFile as err:
        raise ConfigError(str(path), err.reason) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            str(path), f"not a UTF-8 text file (byte {err.start}); a config file is UTF-8 TOML"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(str(path), f"not valid TOML: {str(err).splitlines()[0]}") from None
    except RecursionError:
        raise ConfigError(str(path), "not valid TOML: nested too deeply") from None


def save_toml(cfg: RunConfig, path: str | Path) -> None:
    Path(path).write_text(dumps_toml(cfg))


def dumps_toml(cfg: RunConfig) -> str:
    # imported here: reading configs and building tasks and models need no TOML writer (a
    # machine with torch alone runs benchmarks/gpu_check.py)
    import tomli_w

    return tomli_w.dumps(to_dict(cfg))


def parse_value(text: str) -> Any:
    """A flag's value as TOML would read it (``3``, ``0.1``, ``true``, ``{type='linear'}``);
    anything TOML cannot read is a plain string (``lbfgs``)."""
    if "\n" in text or "\r" in text:
        return text  # one value, never further TOML lines
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except (tomllib.TOMLDecodeError, RecursionError):
        return text


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys (``optimizer.lr``, ``task.options.T``) in a nested dict (copied)."""
    out = _deepcopy(data)
    for key, value in overrides.items():
        parts = key.split(".")
        node = out
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(key, f"{p!r} is a value, not a table")
            node = nxt
        node[parts[-1]] = parse_value(value) if isinstance(value, str) else value
    return out


def _deepcopy(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _deepcopy(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_deepcopy(v) for v in d]
    return d


def resolve(
    layers: list[dict[str, Any]] | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    presets: bool = True,
    notes: list[str] | None = None,
) -> RunConfig:
    """defaults → task preset → optimizer preset → each layer (files) → ``--key value`` flags.

    The presets are chosen by the *final* task and optimizer names, so
    ``--optimizer.name momentum`` brings seed 000's batch 100, lr 0.1, momentum 0.9 unless the
    user sets those too. A task preset may set settings of the optimizer it names (the music
    preset's Adam step); they apply over that optimizer's preset only while the run uses it,
    never to another optimizer. A task preset's model options apply only to a cell that takes
    them (``presets.for_cell``); those dropped are described in ``notes`` when a list is given.
    """
    from lstmlab.training.presets import (
        OPTIMIZER_PRESETS,
        OPTIMIZER_RUN_PRESETS,
        TASK_PRESETS,
        for_cell,
    )

    user = list(layers or [])
    if overrides:
        user.append(apply_overrides({}, overrides))
    cfg = RunConfig()
    if presets:
        probe = cfg
        for layer in user:
            probe = from_dict(layer, probe)
        task_preset = for_cell(TASK_PRESETS.get(probe.task.name, {}), probe.model, notes)
        own = task_preset.get("optimizer") or {}
        # first only the optimizer's name: the task's settings for it (the music preset's Adam
        # step) must not reach another optimizer the user picks (an L-BFGS trial step × 0.01)
        named = {"optimizer": {"name": own["name"]}} if "name" in own else {}
        cfg = from_dict({**task_preset, **named} if own else task_preset, cfg)
        probe = cfg  # the optimizer a task preset picks counts unless the user picks another
        for layer in user:
            probe = from_dict(layer, probe)
        cfg = from_dict({"optimizer": OPTIMIZER_PRESETS.get(probe.optimizer.name, {})}, cfg)
        cfg = from_dict(OPTIMIZER_RUN_PRESETS.get(probe.optimizer.name, {}), cfg)
        if own.get("name") == probe.optimizer.name:  # the task's own optimizer: its settings
            cfg = from_dict({"optimizer": own}, cfg)
    for layer in user:
        cfg = from_dict(layer, cfg)
    return cfg


def flag_specs(cls: type = RunConfig, prefix: str = "") -> list[tuple[str, str, Any]]:
    """``(dotted key, help, default)`` for every field: the CLI makes one flag of each."""
    out: list[tuple[str, str, Any]] = []
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out.extend(flag_specs(hints[f.name], f"{prefix}{f.name}."))
            continue
        meta = f.metadata
        text = meta.get("help", "")
        if meta.get("choices"):
            text += f" (choices: {', '.join(map(show_choice, meta['choices']))})"
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        out.append((f"{prefix}{f.name}", text, default))
    return out
