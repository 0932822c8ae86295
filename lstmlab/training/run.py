"""A run on disk: start, resume and evaluate one run directory.

A run directory holds::

    config.toml                 the resolved RunConfig (the run is fully described by it)
    metrics.jsonl               one JSON record per iteration (see ``loop``)
    checkpoint.safetensors      the last checkpoint (``.prev``: the one before; see ``checkpoint``)
    summary.json                written when the run ends: solved, cost, time, figure path
    figures/learning_curve.png  test metric and training loss against samples and P_D

``start`` and ``resume`` build the objects from the config (``build``), restore the checkpoint
if any, and call ``loop.train``. Ctrl-C (SIGINT) asks the loop to stop after the current
iteration and checkpoint; a second Ctrl-C aborts at once (the last checkpoint stays valid).
Failures a user can act on (unwritable directory, full disk, bad checkpoint) raise ``RunError``
with a one-line message.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lstmlab.distributed.session import ONE, NullLog, Session
from lstmlab.training import build
from lstmlab.training.checkpoint import CheckpointError, load_latest, save_checkpoint
from lstmlab.training.config import RunConfig, dumps_toml, from_dict, load_toml, to_dict
from lstmlab.training.loop import batches_per_epoch, train
from lstmlab.training.metrics import MetricsLog, read_metrics
from lstmlab.training.progress import make_progress
from lstmlab.training.rng import get_rng_state
from lstmlab.training.state import TrainState

__all__ = ["RunError", "RunPaths", "start", "resume", "evaluate_run", "load_config", "summarize"]


class RunError(RuntimeError):
    """A failure the user can act on; ``str(err)`` is one line."""


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint.safetensors"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def figures(self) -> Path:
        return self.root / "figures"


def _os_message(err: OSError, what: str, path: Path) -> str:
    reason = err.strerror or str(err)
    if err.errno == errno.ENOSPC:
        reason = "no space left on device"
    return f"cannot {what} {path}: {reason}"


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_config(run_dir: str | Path) -> RunConfig:
    paths = RunPaths(Path(run_dir))
    if not paths.root.is_dir():
        raise RunError(f"{paths.root}: no such run directory")
    if not paths.config.exists():
        raise RunError(f"{paths.root}: not a run directory (no config.toml)")
    return from_dict(load_toml(paths.config))


# --------------------------------------------------------------------------------------------
# Ctrl-C


class _Interrupt:
    """First SIGINT: set a flag the loop polls. Second: the default handler (KeyboardInterrupt)."""

    def __init__(self, notify):
        self.requested = False
        self._notify = notify

    def __call__(self, signum, frame) -> None:
        self.requested = True
        self._notify("interrupt: checkpointing after this iteration (Ctrl-C again to abort)")
        signal.signal(signal.SIGINT, signal.default_int_handler)


@contextlib.contextmanager
def _sigint(handler: _Interrupt):
    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: no handler, Ctrl-C behaves as usual
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# --------------------------------------------------------------------------------------------
# Start / resume


def _prepare_dir(paths: RunPaths) -> None:
    if paths.root.exists() and not paths.root.is_dir():
        raise RunError(f"cannot create run directory {paths.root}: a file is in the way")
    if paths.root.exists() and any(paths.root.iterdir()):
        raise RunError(
            f"run directory {paths.root} is not empty; use `lstmlab resume {paths.root}` "
            "or choose another --run-dir"
        )
    try:
        paths.root.mkdir(parents=True, exist_ok=True)
        probe = paths.root / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise RunError(_os_message(err, "write to run directory", paths.root)) from None


def start(
    cfg: RunConfig,
    run_dir: str | Path,
    *,
    progress: str = "auto",
    out=None,
    checkpoint_writer=None,
    parallel: Session | None = None,
) -> dict[str, Any]:
    """Create ``run_dir``, save the resolved config and train; returns the summary.

    ``parallel``: the worker group's ``lstmlab.distributed.Session`` (rank 0 alone writes).
    """
    par = parallel or ONE
    paths = RunPaths(Path(run_dir))
    built = build.build_all(cfg)  # before touching the disk: a bad config fails cleanly
    par.prepare(cfg, built)  # every rank agrees and can be fed, or every rank fails

    def create() -> None:
        _prepare_dir(paths)
        try:
            atomic_write_text(paths.config, dumps_toml(cfg))
        except OSError as err:
            raise RunError(_os_message(err, "write", paths.config)) from None

    par.from_main(create)
    return _execute(
        cfg,
        paths,
        built,
        None,
        progress=progress,
        out=out,
        checkpoint_writer=checkpoint_writer,
        par=par,
    )


def resume(
    run_dir: str | Path,
    *,
    stop_overrides: dict[str, Any] | None = None,
    progress: str = "auto",
    out=None,
    parallel: Session | None = None,
) -> dict[str, Any]:
    """Continue a run from its last checkpoint; ``stop_overrides`` may change budgets.

    In a worker group rank 0 reads the run directory and every rank receives what it read
    (the number of workers may differ from the run's last one).
    """
    par = parallel or ONE
    paths = RunPaths(Path(run_dir))
    cfg, ckpt, state, action = par.from_main(_read_resume, paths, stop_overrides)
    built = build.build_all(cfg)
    if action == "finish":  # killed while writing its figure or summary: finish that only
        if not par.is_main:
            return summarize(cfg, paths, state, None, built.stopping.metric)
        return finish(cfg, paths, state, metric=built.stopping.metric, target=built.target, out=out)
    par.prepare(cfg, built)
    restored = None if action == "fresh" else (ckpt, state)
    return _execute(cfg, paths, built, restored, progress=progress, out=out, par=par)


def _read_resume(paths: RunPaths, stop_overrides: dict[str, Any] | None):
    """(config, checkpoint, state, action): what ``resume`` does, read from the run directory.

    action: "fresh" (no checkpoint yet), "finish" (only the summary is missing), "continue".
    """
    cfg = load_config(paths.root)
    if stop_overrides:
        cfg = from_dict({"stop": stop_overrides}, cfg)
    prev = paths.checkpoint.with_name(paths.checkpoint.name + ".prev")
    if not paths.checkpoint.exists() and not prev.exists():
        # killed before its first checkpoint: nothing was learned yet, start it afresh
        print(
            f"warning: {paths.root} has no checkpoint yet; starting it from the beginning",
            file=sys.stderr,
        )
        return cfg, None, None, "fresh"
    try:
        ckpt, skipped = load_latest(paths.checkpoint)
    except CheckpointError as err:
        raise RunError(f"cannot resume: {err}") from None
    if skipped is not None:
        print(f"warning: {skipped}; resuming from the previous checkpoint", file=sys.stderr)
    if _identity(ckpt.get("config") or {}) != _identity(to_dict(cfg)):
        raise RunError(f"cannot resume: {paths.checkpoint} belongs to a different run")
    state = TrainState.from_dict(ckpt["train_state"])
    finished = state.stop_reason not in (None, "interrupted")
    if finished and not paths.summary.exists():
        return cfg, None, state, "finish"
    if state.stop_reason == "solved" and not (stop_overrides or {}).keys() & {"target", "metric"}:
        raise RunError(f"run {paths.root} already solved its task; nothing to continue")
    if state.stop_reason not in (None, "interrupted") and not stop_overrides:
        raise RunError(
            f"run {paths.root} already finished ({state.stop_reason}); "
            "give a larger budget (e.g. --stop.max_iterations) to continue it"
        )
    state.stop_reason = None
    if stop_overrides:
        state.solved = (
            False if "target" in stop_overrides or "metric" in stop_overrides else state.solved
        )
    return cfg, ckpt, state, "continue"


def _identity(cfg_dict: dict[str, Any]) -> dict[str, Any]:
    """What makes two configs the same run (budgets may change on resume)."""
    return {k: v for k, v in cfg_dict.items() if k != "stop"}


def _execute(cfg, paths, built, restored, *, progress, out, checkpoint_writer=None, par=ONE):
    out = out or sys.stdout
    if restored is None:
        par.seed(cfg.seed)  # one process: seed_everything(cfg.seed)
        state = TrainState()
        truncate = 0
    else:
        ckpt, state = restored
        built.model.load_state_dict(ckpt["model"])
        built.optimizer.load_state_dict(ckpt["optimizer"])
        par.restore_rng(ckpt, cfg.seed, state.iteration)  # one process: set_rng_state(ckpt["rng"])
        truncate = int(ckpt["metrics_offset"])
    par.sync_model(built.model)

    logs = []

    def open_log() -> None:
        try:
            logs.append(MetricsLog(paths.metrics, truncate_to=truncate))
        except OSError as err:
            raise RunError(_os_message(err, "write", paths.metrics)) from None

    par.from_main(open_log)  # rank 0 alone keeps the metrics log
    log = logs[0] if logs else NullLog()

    def checkpoint(st: TrainState) -> None:
        try:
            payload = {
                "config": to_dict(cfg),
                "train_state": st.to_dict(),
                "model": built.model.state_dict(),
                "optimizer": built.optimizer.state_dict(),
                "rng": get_rng_state(),
                "metrics_offset": log.offset(),
                "saved_at": time.time(),
                **par.rank_states,  # a worker group: every rank's RNG state
            }
            save_checkpoint(payload, paths.checkpoint, write=checkpoint_writer)
        except OSError as err:
            raise RunError(_os_message(err, "write checkpoint", paths.checkpoint)) from None

    total = cfg.stop.max_iterations
    if total is None and cfg.stop.max_epochs is not None:
        total = cfg.stop.max_epochs * batches_per_epoch(
            len(built.train_data), cfg.optimizer.batch_size
        )
    bar = make_progress(par.progress(progress), built.stopping.metric, total)
    interrupt = _Interrupt(bar.message)
    stopping, interrupted = par.stopping(built.stopping, lambda: interrupt.requested)
    bar.start(state)
    try:
        with _sigint(interrupt):
            state = train(
                built.model,
                built.optimizer,
                built.train_data,
                par.evaluate(built.evaluate),
                stopping,
                log,
                state=state,
                make_objective=built.make_objective,
                batch_size=cfg.optimizer.batch_size,
                seed=cfg.seed,
                eval_every=cfg.eval_every,
                checkpoint_every=cfg.checkpoint_every,
                checkpoint=par.checkpoint(checkpoint, built.model),
                progress=bar,
                interrupted=interrupted,
            )
    except OSError as err:
        raise RunError(_os_message(err, "write", paths.root)) from None
    finally:
        bar.close()
        log.close()
    if not par.is_main:
        return summarize(cfg, paths, state, None, built.stopping.metric)
    return finish(cfg, paths, state, metric=built.stopping.metric, target=built.target, out=out)


def finish(
    cfg: RunConfig,
    paths: RunPaths,
    state: TrainState,
    *,
    metric: str,
    target: float | None = None,
    out=None,
) -> dict[str, Any]:
    """Write the learning-curve figure and ``summary.json``; print the summary."""
    figure = None
    try:
        from lstmlab.plots.curves import learning_curve

        paths.figures.mkdir(exist_ok=True)
        figure = learning_curve(
            read_metrics(paths.metrics),
            paths.figures / "learning_curve.png",
            title=f"{cfg.task.name} · {cfg.optimizer.name} · seed {cfg.seed}",
            metric=metric,
            target=target,
        )
    except OSError as err:
        print(f"warning: {_os_message(err, 'write figure in', paths.figures)}", file=sys.stderr)
    summary = summarize(cfg, paths, state, figure, metric)
    summary["target"] = target
    try:
        atomic_write_text(paths.summary, json.dumps(summary, indent=2) + "\n")
    except OSError as err:
        raise RunError(_os_message(err, "write", paths.summary)) from None
    if out is not None:
        print(format_summary(summary), file=out)
    return summary


def summarize(
    cfg: RunConfig, paths: RunPaths, state: TrainState, figure, metric: str
) -> dict[str, Any]:
    return {
        "run_dir": str(paths.root),
        "task": cfg.task.name,
        "optimizer": cfg.optimizer.name,
        "seed": cfg.seed,
        "precision": cfg.precision,
        "solved": state.solved,
        "stop_reason": state.stop_reason,
        "metric": metric,
        "target": cfg.stop.target,
        "final": state.last_eval,
        "best": state.best,
        "best_iteration": state.best_iteration,
        "iterations": state.iteration,
        "epochs": state.epoch,
        "samples": state.samples,
        "presentations": state.presentations,
        "P_D": state.P_D,
        "P_I": state.P_I,
        "wall_time": state.wall,
        "learning_curve": str(figure) if figure else None,
    }


def format_summary(s: dict[str, Any]) -> str:
    verdict = "SOLVED" if s["solved"] else f"not solved ({s['stop_reason']})"
    final = s["final"].get(s["metric"]) if s["final"] else None
    lines = [
        f"{s['task']} · {s['optimizer']} · seed {s['seed']}: {verdict}",
        f"  test {s['metric']}: {final if final is None else f'{final:.5g}'}"
        + (f" (target < {s['target']:g})" if s["target"] is not None else ""),
        f"  iterations {s['iterations']}  epochs {s['epochs']}  samples {s['samples']}"
        f"  sequence presentations {s['presentations']:.0f}",
        f"  P_D {s['P_D']:.4g}  P_I {s['P_I']:.4g}  wall time {s['wall_time']:.1f} s",
        f"  run directory {s['run_dir']}",
        f"  learning curve {s['learning_curve']}",
    ]
    return "\n".join(lines)


def evaluate_run(run_dir: str | Path, split: str = "test") -> dict[str, Any]:
    """Metrics of a run's last checkpoint on ``split``."""
    paths = RunPaths(Path(run_dir))
    cfg = load_config(paths.root)
    try:
        ckpt, skipped = load_latest(paths.checkpoint)
    except CheckpointError as err:
        raise RunError(f"cannot evaluate: {err}") from None
    if skipped is not None:
        print(f"warning: {skipped}; using the previous checkpoint", file=sys.stderr)
    built = build.build_all(cfg)
    built.model.load_state_dict(ckpt["model"])
    return {"iteration": ckpt["train_state"]["iteration"], **built.evaluate_split(split)}
