"""A reproduction's training runs as a set that resumes: each run is an ordinary run directory
``OUT/runs/PART/NAME`` made by :func:`lstmlab.training.run.start`, so

- finished (a ``summary.json`` whose stop is not ``interrupted``): kept, its summary read;
- started (a ``config.toml``, no final summary): resumed from its last checkpoint;
- absent: started from the spec's overrides.

A finished run is kept even when the plan's budget has since changed (the report shows the
budget each run had); a started run resumes under the config it was started with.

Ctrl-C or SIGTERM stops the run in progress at a clean checkpoint, as for ``lstmlab train``,
and then the whole set: :class:`SetInterrupted` carries the run's name and the signal, and the
CLI exits 130 (143) saying that the same command resumes the set.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lstmlab.training.config import resolve


def _runs():
    """lstmlab.training.run, imported on first use (it loads torch; building the ``reproduce``
    parsers must not)."""
    from lstmlab.training import run

    return run


__all__ = [
    "RunSpec",
    "SetInterrupted",
    "ensure",
    "run_all",
    "dry_run",
    "group",
    "status",
    "check_interrupted",
    "collect",
]


class SetInterrupted(Exception):
    """A run of the set stopped on Ctrl-C / SIGTERM (checkpointed): the set stops too."""

    def __init__(self, run_dir: Path, signal: str | None):
        super().__init__(f"interrupted during {run_dir}")
        self.run_dir, self.signal = Path(run_dir), signal or "SIGINT"


def check_interrupted(summary: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """``summary`` as it is, unless its run was interrupted: then :class:`SetInterrupted`."""
    if summary.get("stop_reason") == "interrupted":
        raise SetInterrupted(run_dir, summary.get("interrupted_by"))
    return summary


@dataclass(frozen=True)
class RunSpec:
    """One training run of a reproduction: ``overrides`` are config keys (``task.name``,
    ``optimizer.name``, ``stop.max_pd`` …) exactly as the flags of ``lstmlab train`` take them."""

    part: str
    name: str
    overrides: dict[str, str] = field(default_factory=dict)
    # False: the task / optimizer presets of `lstmlab train` are not applied (a paper whose
    # runs set every option themselves, e.g. ms2011's M&S multiplication on a tanh RNN)
    presets: bool = True

    def dir(self, out: Path) -> Path:
        return Path(out) / "runs" / self.part / self.name

    def command(self) -> str:
        ov = dict(self.overrides)
        task = ov.pop("task.name", "?")
        flags = " ".join(f"--{k} {v}" for k, v in ov.items())
        return f"lstmlab train {task} {flags}".rstrip()


def status(spec: RunSpec, out: Path) -> str:
    """``done``, ``started`` or ``absent``."""
    d = spec.dir(out)
    if (d / "summary.json").exists():
        summary = _runs().read_summary(_runs().RunPaths(d)) or {}  # bounded; unreadable: {}
        if summary.get("stop_reason") not in (None, "interrupted"):
            return "done"
    return "started" if (d / "config.toml").exists() else "absent"


def _summary(run_dir: Path) -> dict[str, Any]:
    """A finished run's summary (standard JSON: "NaN"/"Infinity" strings back to floats)."""
    summary = _runs().read_summary(_runs().RunPaths(run_dir))
    if summary is None:
        raise _runs().RunError(f"{run_dir / 'summary.json'}: cannot be read as a run summary")
    return summary


def ensure(spec: RunSpec, out: Path, *, progress: str = "auto") -> dict[str, Any]:
    """The run's summary: read if finished, else resumed or started (and trained to its end)."""
    d = spec.dir(out)
    state = status(spec, out)
    if state == "done":
        return _summary(d)
    if state == "started":
        return check_interrupted(_runs().resume(d, progress=progress, out=None), d)
    cfg = resolve(overrides=dict(spec.overrides), presets=spec.presets)
    return check_interrupted(_runs().start(cfg, d, progress=progress, out=None), d)


def run_all(
    specs: Iterable[RunSpec],
    out: Path,
    *,
    progress: str = "auto",
    log: Callable[[str], None] = print,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Ensure every run, in order; part -> name -> summary. Each run is announced as
    ``run k of N`` before it starts (a kept one too), and its verdict logged when it ends."""
    done: dict[str, dict[str, dict[str, Any]]] = {}
    specs = list(specs)
    doing = {"done": "finished, kept", "started": "resuming", "absent": "starting"}
    for k, spec in enumerate(specs, 1):
        log(f"run {k} of {len(specs)}: [{spec.part}] {spec.name} ({doing[status(spec, out)]})")
        started = time.perf_counter()
        s = ensure(spec, out, progress=progress)
        done.setdefault(spec.part, {})[spec.name] = s
        verdict = "solved" if s.get("solved") else s.get("stop_reason", "?")
        log(f"[{spec.part}] {spec.name}: {verdict} ({time.perf_counter() - started:.0f} s)")
    return done


def collect(
    specs: Iterable[RunSpec], out: Path
) -> tuple[dict[str, dict[str, dict[str, Any]]], list[RunSpec]]:
    """The summaries of the finished runs among ``specs`` (part -> name -> summary), and the
    specs not finished; starts and resumes nothing (a report of a set still running)."""
    done: dict[str, dict[str, dict[str, Any]]] = {}
    missing = []
    for spec in specs:
        if status(spec, out) == "done":
            done.setdefault(spec.part, {})[spec.name] = _summary(spec.dir(out))
        else:
            missing.append(spec)
    return done, missing


def dry_run(specs: Iterable[RunSpec], out: Path, *, log: Callable[[str], None] = print) -> int:
    """Print each run's directory, state and command; start nothing. Returns the count."""
    specs = list(specs)
    for spec in specs:
        log(f"{spec.dir(out)}: {spec.command()}")
    log(f"# dry run: {len(specs)} runs; nothing started")
    return len(specs)


def group(specs: Iterable[RunSpec]) -> dict[str, list[RunSpec]]:
    out: dict[str, list[RunSpec]] = {}
    for s in specs:
        out.setdefault(s.part, []).append(s)
    return out
