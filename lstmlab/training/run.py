"""A run on disk: start, resume and evaluate one run directory.

A run directory holds::

    config.toml                 the resolved RunConfig (the run is fully described by it)
    metrics.jsonl               one JSON record per iteration (see ``loop``)
    checkpoint.safetensors      the last checkpoint (``.prev``: the one before; see ``checkpoint``)
    best.safetensors            the network of the best evaluation on the valid split (below)
    summary.json                written when the run ends: solved, cost, time, figure path
    figures/learning_curve.png  test metric and training loss against samples and P_D
    run.lock                    the writer lock (``lock``): empty when no process writes

``start`` and ``resume`` build the objects from the config (``build``), take the directory's
writer lock, restore the checkpoint if any, and call ``loop.train``. Ctrl-C (SIGINT) or
SIGTERM asks the loop to stop after the current iteration and checkpoint; a second one aborts
at once (the last checkpoint stays valid). Failures a user can act on (unwritable directory,
full disk, bad checkpoint, a second writer) raise ``RunError`` with a one-line message.

Guarantees (tests in docs/design.md): checkpoints are verified on load (content and config
digests, finite parameters; a failing newest file falls back to ``.prev`` with a warning);
a state with non-finite parameters, or one whose evaluation loss is not finite, is never
written, so a diverged run keeps its last finite checkpoint (``summary.json`` says which);
a damaged ``metrics.jsonl`` is cut back to its last whole row at resume.

Best network: a run that evaluates on the valid split keeps, beside the last checkpoint, the
network of its best evaluation by the stopping metric (in the direction the metric improves):
``best.safetensors``, written by the same atomic, verified machinery each time an evaluation
improves the best value, holding the model, the counters of that moment and the config digest
(no optimizer state: it is for evaluation, not for resuming). It keeps no ``.prev``: an older
best network is not the run's best, and the final test would not use it (a ``.prev`` left by
an earlier lstmlab is still read, and removed at the next write). When the run
ends, the test split is read once, with that network, and ``summary.json`` says which network
was tested (``tested``). Runs that evaluate on the test split keep no best network: choosing
it by the test metric would report a number selected on the test set.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lstmlab.distributed.session import ONE, NullLog, Session
from lstmlab.training import build
from lstmlab.training.checkpoint import (
    UNVERIFIED,
    CheckpointError,
    NonFiniteError,
    config_digest,
    load_latest,
    save_checkpoint,
)
from lstmlab.training.config import RunConfig, dumps_toml, from_dict, load_toml, to_dict
from lstmlab.training.jsonsafe import dumps as json_dumps
from lstmlab.training.jsonsafe import restore as json_restore
from lstmlab.training.lock import LOCK_NAME, LockError, RunLock
from lstmlab.training.loop import batches_per_epoch, train
from lstmlab.training.metrics import MetricsLog, read_metrics, repair
from lstmlab.training.progress import make_progress
from lstmlab.training.rng import get_rng_state
from lstmlab.training.signals import Interrupt, handle_signals
from lstmlab.training.state import TrainState
from lstmlab.training.tensorboard import mirror, require

__all__ = [
    "RunError",
    "RunPaths",
    "start",
    "resume",
    "evaluate_run",
    "load_config",
    "load_run_checkpoint",
    "summarize",
]

FINITE = ("model",)  # the checkpoint entries that must be finite to be written or loaded


class RunError(RuntimeError):
    """A failure the user can act on; ``str(err)`` is one line."""


class AlreadyFinished(RunError):
    """``resume`` of a run that already ended (solved, or a budget it was not given more of):
    nothing to do; the CLI says so and exits 0."""


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

    @property
    def prev(self) -> Path:
        return self.checkpoint.with_name(self.checkpoint.name + ".prev")

    @property
    def best(self) -> Path:
        return self.root / "best.safetensors"


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


def config_sha(cfg: RunConfig) -> str:
    """The digest a run's checkpoints carry: its config without the budgets (``stop``)."""
    return config_digest(_identity(to_dict(cfg)))


def load_run_checkpoint(
    paths: RunPaths,
    cfg: RunConfig,
    what: str = "resume",
    which: str = "last",
    *,
    allow_unverified: bool = False,
):
    """The newest verified checkpoint of a run: ``(state, skipped error or None)``;
    ``which="best"``: its best network (``best.safetensors``) instead of the last state; with
    ``allow_unverified`` one without a checksum loads too, with a warning."""
    path = paths.best if which == "best" else paths.checkpoint
    try:
        ckpt, skipped = load_latest(
            path,
            config_digest=config_sha(cfg),
            finite=FINITE,
            allow_unverified=allow_unverified,
        )
    except CheckpointError as err:
        raise RunError(f"cannot {what}: {err}") from None
    if UNVERIFIED in ckpt:
        print(f"warning: {ckpt.pop(UNVERIFIED)}", file=sys.stderr)
    return ckpt, skipped


def read_summary(paths: RunPaths) -> dict[str, Any] | None:
    from lstmlab.files import LIMITS, read_user_file

    try:
        data = json.loads(read_user_file(paths.summary, LIMITS["summary"], "summary"))
    except (OSError, ValueError):  # UnreadableFile is a ValueError
        return None
    return json_restore(data) if isinstance(data, dict) else None


@contextlib.contextmanager
def _writer(paths: RunPaths, break_lock: bool, command: str):
    """Hold the run directory's writer lock (``lock.RunLock``) for the block."""
    lock = RunLock(paths.root, command=command, force=break_lock)
    try:
        lock.acquire()
    except LockError as err:
        raise RunError(str(err)) from None
    except OSError as err:
        raise RunError(_os_message(err, "lock", paths.root)) from None
    if lock.warning:
        print(f"warning: {lock.warning}", file=sys.stderr)
    try:
        yield lock
    finally:
        lock.release()


# --------------------------------------------------------------------------------------------
# Start / resume


SLOW_BUILD_SECONDS = 2.0  # a build taking longer than this says so (a corpus to read)


def generated(name: str) -> bool:
    """Whether task ``name``'s data come from a generator (no corpus to read): the tasks that
    take ``fresh``, the long time-lag problems."""
    from lstmlab import tasks

    return name in tasks.names() and tasks.takes(name, "fresh")


def build_noticed(cfg: RunConfig, stream=None, after: float | None = None):
    """``build.build_all(cfg)``; when it takes more than ``after`` seconds (a corpus read and
    tokenized, the first time before it is cached), one line on stderr says what is loading,
    and one more how long it took. Quick builds print nothing."""
    import threading

    stream = stream or sys.stderr
    t0 = time.perf_counter()
    said = threading.Event()

    def notice() -> None:
        said.set()
        options = cfg.task.options
        source = f" from {options['path']}" if options.get("path") else ""
        what = (
            "its sequences are generated"
            if generated(cfg.task.name)
            else "a corpus is read and tokenized; cached for the next run where the task caches it"
        )
        print(
            f"lstmlab: loading task {cfg.task.name!r}{source} ({what}) ...",
            file=stream,
            flush=True,
        )

    timer = threading.Timer(SLOW_BUILD_SECONDS if after is None else after, notice)
    timer.daemon = True
    timer.start()
    try:
        return build.build_all(cfg)
    finally:
        timer.cancel()
        if said.is_set():
            print(f"lstmlab: loaded in {time.perf_counter() - t0:.1f} s", file=stream, flush=True)


def _prepare_dir(paths: RunPaths) -> None:
    if paths.root.exists() and not paths.root.is_dir():
        raise RunError(f"cannot create run directory {paths.root}: a file is in the way")
    # a directory holding only a lock file is one whose `train` was killed before it wrote
    if paths.root.exists() and any(p.name != LOCK_NAME for p in paths.root.iterdir()):
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

    ``parallel``: the worker group's ``lstmlab.distributed.Session``; rank 0 alone creates,
    locks and writes the directory, and its errors reach every rank.
    """
    par = parallel or ONE
    paths = RunPaths(Path(run_dir))
    built = build_noticed(cfg)  # before touching the disk: a bad config fails cleanly
    par.prepare(cfg, built)  # every rank agrees and can be fed, or every rank fails
    with contextlib.ExitStack() as held:

        def create() -> None:
            require(cfg.log.tensorboard)  # true without tensorboard: say so before any write
            _prepare_dir(paths)
            held.enter_context(_writer(paths, False, "lstmlab train"))
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
    break_lock: bool = False,
    parallel: Session | None = None,
    allow_unverified: bool = False,
) -> dict[str, Any]:
    """Continue a run from its last checkpoint; ``stop_overrides`` may change budgets;
    ``allow_unverified`` loads a checkpoint without a checksum (with a warning).

    ``break_lock`` takes over a lock whose holder this machine cannot judge (another host).
    In a worker group (``parallel``) rank 0 reads and locks the directory and every rank
    receives what it read; the number of workers may differ from the run's last one."""
    par = parallel or ONE
    paths = RunPaths(Path(run_dir))
    with contextlib.ExitStack() as held:

        def read():
            cfg = load_config(paths.root)
            if stop_overrides:
                cfg = from_dict({"stop": stop_overrides}, cfg)
            held.enter_context(_writer(paths, break_lock, "lstmlab resume"))
            return _read_resume(cfg, paths, stop_overrides, allow_unverified)

        cfg, ckpt, state, action = par.from_main(read)
        built = build_noticed(cfg)
        if action == "finish":  # killed while writing its figure or summary: finish that only
            if not par.is_main:
                return summarize(cfg, paths, state, None, built.stopping.metric)
            built.model.load_state_dict(ckpt["model"])  # the final test reads the last network
            return _finish_built(
                cfg, paths, state, built, out, checkpoint_iteration=state.iteration
            )
        par.prepare(cfg, built)
        restored = None if action == "fresh" else (ckpt, state)
        return _execute(cfg, paths, built, restored, progress=progress, out=out, par=par)


def _read_resume(cfg, paths, stop_overrides, allow_unverified=False):
    """(config, checkpoint, state, action): what ``resume`` does, read from the run directory.

    action: "fresh" (no checkpoint yet), "finish" (only the summary is missing), "continue".
    """
    summary = read_summary(paths) if paths.summary.exists() else None
    if summary is not None and summary.get("stop_reason") == "diverged":
        raise RunError(
            f"run {paths.root} diverged at iteration {summary.get('iterations')}"
            + (
                f"; its last finite checkpoint (iteration {summary['checkpoint_iteration']}) is "
                "kept for `lstmlab eval`"
                if summary.get("checkpoint_iteration") is not None
                else ""
            )
            + "; resuming would diverge again -- start a new run with other settings"
        )
    if not paths.checkpoint.exists() and not paths.prev.exists():
        # killed before its first checkpoint: nothing was learned yet, start it afresh
        print(
            f"warning: {paths.root} has no checkpoint yet; starting it from the beginning",
            file=sys.stderr,
        )
        return cfg, None, None, "fresh"
    ckpt, skipped = load_run_checkpoint(paths, cfg, allow_unverified=allow_unverified)
    if skipped is not None:
        print(f"warning: {skipped}; resuming from the previous checkpoint", file=sys.stderr)
    if _identity(ckpt.get("config") or {}) != _identity(to_dict(cfg)):
        raise RunError(f"cannot resume: {paths.checkpoint} belongs to a different run")
    state = TrainState.from_dict(ckpt["train_state"])
    finished = state.stop_reason not in (None, "interrupted")
    if finished and not paths.summary.exists():
        return cfg, ckpt, state, "finish"
    if state.stop_reason == "solved" and not (stop_overrides or {}).keys() & {"target", "metric"}:
        raise AlreadyFinished(f"run {paths.root} already solved its task; nothing to continue")
    if state.stop_reason not in (None, "interrupted") and not stop_overrides:
        raise AlreadyFinished(
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
    """What makes two configs the same run (budgets and what is logged may change)."""
    return {k: v for k, v in cfg_dict.items() if k not in ("stop", "log")}


def _execute(cfg, paths, built, restored, *, progress, out, checkpoint_writer=None, par=ONE):
    out = out or sys.stdout
    written = {"iteration": None}  # the last checkpoint on disk (a diverged run keeps it)
    if restored is None:
        par.seed(cfg.seed)  # one process: seed_everything(cfg.seed)
        state = TrainState()
        truncate = 0
    else:
        ckpt, state = restored
        try:
            built.model.load_state_dict(ckpt["model"])
            built.optimizer.load_state_dict(ckpt["optimizer"])
            par.restore_rng(ckpt, cfg.seed, state.iteration)  # one process: ckpt["rng"]
            truncate = int(ckpt["metrics_offset"])
        except (KeyError, RuntimeError, ValueError, TypeError) as err:
            reason = (str(err).splitlines() or [""])[0][:200]
            raise RunError(f"cannot resume: checkpoint does not fit this run ({reason})") from None
        written["iteration"] = state.iteration
    par.sync_model(built.model)
    logs = []

    def open_log() -> None:  # rank 0 alone keeps the metrics log
        try:
            warn = repair(paths.metrics, truncate) if truncate or paths.metrics.exists() else None
            if warn:
                print(f"warning: {warn}", file=sys.stderr)
            first = 0 if restored is None else state.iteration + 1  # TensorBoard's purge step
            logs.append(
                mirror(MetricsLog(paths.metrics), cfg.log.tensorboard, paths.root, first_step=first)
            )
        except OSError as err:
            raise RunError(_os_message(err, "write", paths.metrics)) from None

    par.from_main(open_log)
    log = logs[0] if logs else NullLog()
    config_hash = config_sha(cfg)

    def checkpoint(st: TrainState) -> None:
        loss = st.last_eval.get("loss")
        if st.stop_reason == "diverged" or (isinstance(loss, float) and not math.isfinite(loss)):
            return  # never replace the last good checkpoint with a diverged state
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
            save_checkpoint(
                payload,
                paths.checkpoint,
                write=checkpoint_writer,
                config_digest=config_hash,
                finite=FINITE,
            )
            written["iteration"] = st.iteration
        except NonFiniteError:
            return  # the loop stops on non-finite parameters; the last good checkpoint stays
        except OSError as err:
            raise RunError(_os_message(err, "write checkpoint", paths.checkpoint)) from None

    def keep_best(st: TrainState) -> None:  # the network of the best valid evaluation so far
        payload = {
            "config": to_dict(cfg),
            "train_state": st.to_dict(),
            "model": built.model.state_dict(),
            "saved_at": time.time(),
        }
        try:
            # no .prev: an older best network is not the run's best (it would not be used)
            save_checkpoint(
                payload, paths.best, config_digest=config_hash, finite=FINITE, keep_prev=False
            )
        except NonFiniteError:
            return
        except OSError as err:
            raise RunError(_os_message(err, "write checkpoint", paths.best)) from None

    on_best = None
    if built.eval_split == "valid":
        on_best = lambda st: par.from_main(keep_best, st)  # noqa: E731 - rank 0 writes

    per_epoch = batches_per_epoch(len(built.train_data), cfg.optimizer.batch_size)
    total = cfg.stop.max_iterations
    if total is None and cfg.stop.max_epochs is not None:
        total = cfg.stop.max_epochs * per_epoch
    bar = make_progress(par.progress(progress), built.stopping.metric, total)
    interrupt = Interrupt(bar.message)
    stopping, interrupted = par.stopping(built.stopping, lambda: interrupt.requested)
    bar.start(state)
    try:
        with handle_signals(interrupt):
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
                eval_every=_every(cfg.eval_every, per_epoch),
                checkpoint_every=_every(cfg.checkpoint_every, per_epoch),
                log_every=cfg.log_every,
                checkpoint=par.checkpoint(checkpoint, built.model),
                on_best=on_best,
                progress=bar,
                interrupted=interrupted,
                agree=par.agree(),
                carry_state=built.carry_state,
                eval_seconds=cfg.eval_seconds,
                checkpoint_seconds=cfg.checkpoint_seconds,
                eval_name=built.eval_split,
            )
    except OSError as err:
        raise RunError(_os_message(err, "write", paths.root)) from None
    finally:
        bar.close()
        log.close()
    if not par.is_main:
        return summarize(cfg, paths, state, None, built.stopping.metric)
    return _finish_built(
        cfg,
        paths,
        state,
        built,
        out,
        checkpoint_iteration=written["iteration"],
        interrupted_by=interrupt.signal if state.stop_reason == "interrupted" else None,
    )


def _every(value: int | str, per_epoch: int) -> int | None:
    """An interval in iterations: a number, "epoch" (the iterations of one epoch) or "off"."""
    if value == "off":
        return None
    return per_epoch if value == "epoch" else int(value)


def _finish_built(cfg, paths, state, built, out, **kwargs) -> dict[str, Any]:
    """``finish`` with what the built run knows: its metric, target, evaluation split, the one
    read of the test split (with the best network) and the note of a task that takes no seed."""
    seed_note = built.task.info.get("seed")
    final_test, tested = _final_test(built, state, paths)
    return finish(
        cfg,
        paths,
        state,
        metric=built.stopping.metric,
        target=built.target,
        out=out,
        final_test=final_test,
        tested=tested,
        eval_split=built.eval_split,
        task_seed=seed_note if isinstance(seed_note, str) else None,
        **kwargs,
    )


def _final_test(built, state: TrainState, paths: RunPaths):
    """``(test metrics, which network)``: the test split, read once when a run that evaluated
    on valid ends (not on Ctrl-C, nor when it diverged), with the best network by the valid
    metric (``best.safetensors``). The last network is tested only when no best network of
    this run's best evaluation is on disk (a run killed between writing them); ``tested`` says
    which: ``{"network": "best" | "last", "iteration", "epoch"}``."""
    if built.eval_split == "test" or state.stop_reason in ("interrupted", "diverged"):
        return None, None
    tested = {"network": "last", "iteration": state.iteration, "epoch": state.epoch}
    best = _best_network(paths, built.cfg, state)
    if best is not None:
        built.model.load_state_dict(best["model"])
        ts = best["train_state"]
        tested = {"network": "best", "iteration": ts["iteration"], "epoch": ts["epoch"]}
    else:
        tested["note"] = "no best network of this run's best evaluation on disk"
    return built.evaluate_test(built.model), tested


def _best_network(paths: RunPaths, cfg: RunConfig, state: TrainState) -> dict[str, Any] | None:
    """The run's best-network checkpoint when it is the one of ``state``'s best evaluation."""
    if not (paths.best.exists() or paths.best.with_name(paths.best.name + ".prev").exists()):
        return None
    try:
        ckpt, _ = load_latest(paths.best, config_digest=config_sha(cfg), finite=FINITE)
    except CheckpointError as err:
        print(f"warning: {err}; testing the last network", file=sys.stderr)
        return None
    if int(ckpt["train_state"]["iteration"]) != state.best_iteration:
        return None
    return ckpt


def finish(
    cfg: RunConfig,
    paths: RunPaths,
    state: TrainState,
    *,
    metric: str,
    target: float | None = None,
    out=None,
    checkpoint_iteration: int | None = None,
    interrupted_by: str | None = None,
    final_test: dict[str, Any] | None = None,
    tested: dict[str, Any] | None = None,
    eval_split: str = "test",
    task_seed: str | None = None,
) -> dict[str, Any]:
    """Write the learning-curve figure and ``summary.json``; print the summary.

    ``checkpoint_iteration``: the iteration of the checkpoint on disk (a diverged run's last
    finite one; None when none was written). ``final`` is the last evaluation during training
    (on ``eval_split``); when that was the valid split, ``test`` holds the one evaluation of the
    test split at the end, of the network ``tested`` names (the best by the valid metric)."""
    figure = None
    try:
        from lstmlab.plots.curves import learning_curve

        paths.figures.mkdir(exist_ok=True)
        with warnings.catch_warnings():  # a diverged run's huge values: no numpy noise
            warnings.simplefilter("ignore", RuntimeWarning)
            figure = learning_curve(
                read_metrics(paths.metrics),
                paths.figures / "learning_curve.png",
                title=f"{cfg.task.name} · {cfg.optimizer.name} · seed {cfg.seed}",
                metric=metric,
                target=target,
                split=eval_split,
            )
    except OSError as err:
        print(f"warning: {_os_message(err, 'write figure in', paths.figures)}", file=sys.stderr)
    except Exception as err:  # a figure must never cost the summary (e.g. overflowing values)
        reason = (str(err).splitlines() or [""])[0][:200]
        print(
            f"warning: no learning-curve figure ({type(err).__name__}: {reason})", file=sys.stderr
        )
    summary = summarize(cfg, paths, state, figure, metric)
    summary["target"] = target
    summary["checkpoint_iteration"] = checkpoint_iteration  # None: no checkpoint was written
    summary["interrupted_by"] = interrupted_by
    summary["eval_split"] = eval_split
    summary["test"] = final_test if eval_split != "test" else state.last_eval
    summary["tested"] = tested
    if task_seed:
        summary["task_seed"] = task_seed
    try:
        atomic_write_text(paths.summary, json_dumps(summary, indent=2) + "\n")
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
        "best_epoch": state.best_epoch,
        "best_eval": state.best_eval,
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
    split = s.get("eval_split", "test")
    best = s.get("best")
    best_note = (
        f", best {best:.5g} (iteration {s['best_iteration']}, epoch {s.get('best_epoch', 0)})"
        if split != "test" and isinstance(best, float) and best != final
        else ""
    )
    lines = [
        f"{s['task']} · {s['optimizer']} · seed {s['seed']}: {verdict}",
        f"  {split} {s['metric']}: {'last ' if best_note else ''}"
        f"{final if final is None else f'{final:.5g}'}{best_note}"
        + (f" (target < {s['target']:g})" if s["target"] is not None else ""),
        *(
            [f"  test {s['metric']} ({_tested_words(s)}): {s['test'][s['metric']]:.5g}"]
            if split != "test" and s.get("test") and s["metric"] in s["test"]
            else []
        ),
        f"  iterations {s['iterations']}  epochs {s['epochs']}  samples {s['samples']}"
        f"  sequence presentations {s['presentations']:.0f}",
        f"  P_D {s['P_D']:.4g}  P_I {s['P_I']:.4g}  wall time {s['wall_time']:.1f} s",
        f"  run directory {s['run_dir']}",
        *(
            [
                f"  diverged: checkpoint and .prev keep the last finite state "
                f"(iteration {s['checkpoint_iteration']})"
                if s.get("checkpoint_iteration") is not None
                else "  diverged before any finite checkpoint was written"
            ]
            if s["stop_reason"] == "diverged"
            else []
        ),
        f"  learning curve {s['learning_curve']}",
    ]
    return "\n".join(lines)


def _tested_words(s: dict[str, Any]) -> str:
    """Which network the summary's test number belongs to, in words."""
    t = s.get("tested") or {}
    if t.get("network") == "best":
        where = f"best valid, epoch {t['epoch']}, iteration {t['iteration']}"
    else:
        where = f"last network, iteration {t.get('iteration', s['iterations'])}"
    return f"{where}; read once, at the end"


def evaluate_run(
    run_dir: str | Path,
    split: str = "test",
    checkpoint: str | None = None,
    *,
    allow_unverified: bool = False,
) -> dict[str, Any]:
    """Metrics of one of a run's networks on ``split``, with ``iteration`` and ``checkpoint``.

    ``checkpoint``: "best" (the best network by the valid metric, ``best.safetensors``),
    "last" (the last checkpoint), or None: best where the run keeps one, else last."""
    if checkpoint not in (None, "best", "last"):
        raise RunError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}")
    paths = RunPaths(Path(run_dir))
    cfg = load_config(paths.root)
    has_best = paths.best.exists() or paths.best.with_name(paths.best.name + ".prev").exists()
    which = checkpoint or ("best" if has_best else "last")
    if which == "best" and not has_best:
        raise RunError(
            f"{paths.root} keeps no best network (only runs that evaluate on a valid split "
            "do); use --checkpoint last"
        )
    ckpt, skipped = load_run_checkpoint(
        paths, cfg, "evaluate", which, allow_unverified=allow_unverified
    )
    if skipped is not None:
        print(f"warning: {skipped}; using the previous checkpoint", file=sys.stderr)
    built = build_noticed(cfg)
    built.model.load_state_dict(ckpt["model"])
    return {
        "iteration": ckpt["train_state"]["iteration"],
        "checkpoint": which,
        **built.evaluate_split(split),
    }
