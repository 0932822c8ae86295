"""A hyperparameter study: Greff et al.'s random search over LSTM variants and hyperparameters,
on Optuna (SPEC S7).

A study directory holds::

    study.toml          the study's name and storage URL (what `lstmlab study run DIR` opens)
    study.journal       the embedded storage (when no database URL is given; ``storage``)
    trials/trial-00012/ one ordinary run directory per trial (`lstmlab resume` works on it)
    analysis/           what `lstmlab study analyze` writes

The study's definition — search space, base run configuration, seed, watched metric — lives in
the storage itself (Optuna study user attributes), so a worker on another machine needs only
the database URL and the study name. Each trial samples its variant and hyperparameters
(``space``) through a random sampler seeded by (study seed, trial number), so which worker runs
a trial does not change what it samples; runs ``lstmlab.training.run.start`` on the base config
with those values, evaluating and checkpointing once per epoch; and reports the best value of the watched metric (on the validation split
by default: Greff's early stopping).

Workers die: a worker records its host, process id and process start time on each trial it
runs; the parent of ``--workers K`` (when it waits for a dead child), any worker (before each
trial), ``status`` and ``resume`` mark a running trial whose process on this host is gone (a
zombie included) as failed and queue it again at once (``requeue``: its parameters, seed and run
directory; at most ``MAX_ATTEMPTS`` automatic attempts); on PostgreSQL, Optuna's heartbeat fails
it across machines. Workers run queued trials first; ``resume`` also queues failed trials that
have no retry. The retry continues that run from its last checkpoint.
"""

from __future__ import annotations

import io
import math
import os
import socket
import sys
import time
import tomllib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w
from optuna.distributions import CategoricalDistribution
from optuna.samplers import RandomSampler
from optuna.trial import TrialState

from lstmlab.studies.dashboard import publish
from lstmlab.studies.space import GREFF, SearchSpace, from_dict
from lstmlab.studies.storage import StorageError, describe_url, open_storage

__all__ = [
    "StudyError",
    "StudyHandle",
    "GREFF_BASE",
    "create",
    "open_study",
    "run_worker",
    "resume",
    "status",
    "reap_dead_trials",
]

STUDY_FILE = "study.toml"
ATTR = "lstmlab"  # the study user attribute that holds the definition

# Greff et al.'s training, on top of the task: Nesterov momentum with the learning rate
# rescaled by (1 − μ), one cell per block, standard sigmoid gates, N(0, 0.1²) weights, at most
# 150 epochs, early stopping after 15 epochs without improvement on the validation split.
GREFF_BASE: dict[str, Any] = {
    "optimizer": {"name": "nesterov", "options": {"rescale": True}},
    "model": {"cells_per_block": 1, "alpha": 1.0, "options": {"init": "gaussian"}},
    "stop": {"max_epochs": 150, "patience_epochs": 15},
    "eval_split": "valid",
    "precision": "float32",
}


class StudyError(RuntimeError):
    """A failure the user can act on; ``str(err)`` is one line."""


@dataclass
class StudyHandle:
    """An open study: its directory, Optuna study and definition."""

    root: Path
    name: str
    storage_url: str | None
    study: Any  # optuna.Study
    space: SearchSpace
    base: dict[str, Any]  # the base RunConfig as a dict
    seed: int
    metric: str

    @property
    def where(self) -> str:
        return (
            describe_url(self.storage_url) if self.storage_url else str(self.root / "study.journal")
        )


def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _storage(url: str | None, root: Path, wait: bool = False):
    try:
        return open_storage(url, root, wait=wait)
    except StorageError as err:
        raise StudyError(str(err)) from None


def _read_pointer(root: Path) -> dict[str, Any]:
    path = root / STUDY_FILE
    if not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise StudyError(f"cannot read {path}: {err}") from None


def _write_pointer(root: Path, name: str, storage: str | None) -> None:
    data = {"name": name, **({"storage": storage} if storage else {})}
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / (STUDY_FILE + ".tmp")
        tmp.write_text(tomli_w.dumps(data))
        os.replace(tmp, root / STUDY_FILE)
    except OSError as err:
        raise StudyError(f"cannot write {root / STUDY_FILE}: {err.strerror or err}") from None


# --------------------------------------------------------------------------------------------
# Create / open


def create(
    root: str | Path,
    base_cfg,
    *,
    name: str | None = None,
    storage: str | None = None,
    space: SearchSpace = GREFF,
    seed: int = 0,
) -> StudyHandle:
    """Create a study (never overwrites one). ``base_cfg`` is the ``RunConfig`` every trial
    starts from; the space's values replace its fields."""
    import optuna

    from lstmlab.training import build
    from lstmlab.training.config import to_dict

    _quiet_optuna()
    root = Path(root)
    name = name or root.resolve().name
    pointer = _read_pointer(root)
    if pointer:
        raise StudyError(
            f"{root} already holds study {pointer.get('name')!r}; nothing was overwritten "
            f"(add trials with `lstmlab study run {root}`, or choose another directory)"
        )
    task = build.build_all(base_cfg).task  # a bad base config fails here, before any write
    metric = build.stop_metric(base_cfg, task)
    higher = task.higher_is_better if metric == task.metric else metric == "accuracy"
    definition = {
        "space": space.to_dict(),
        "base": to_dict(base_cfg),
        "seed": seed,
        "metric": metric,
    }
    st = _storage(storage, root)
    if name in optuna.get_all_study_names(st):
        raise StudyError(_exists_message(name, st, space, storage, root))
    try:
        study = optuna.create_study(
            storage=st,
            study_name=name,
            direction="maximize" if higher else "minimize",
            sampler=TrialSeededSampler(seed),
        )
    except optuna.exceptions.DuplicatedStudyError:
        raise StudyError(_exists_message(name, st, space, storage, root)) from None
    study.set_user_attr(ATTR, definition)
    _write_pointer(root, name, storage)
    return _handle(root, name, storage, study)


def _exists_message(name, st, space, storage, root) -> str:
    import optuna

    old = optuna.load_study(study_name=name, storage=st).user_attrs.get(ATTR, {})
    where = describe_url(storage) if storage else str(root)
    if old.get("space") and from_dict(old["space"]).fingerprint() != space.fingerprint():
        return (
            f"study {name!r} already exists in {where} with another search space; "
            "nothing was overwritten (choose another --name)"
        )
    return (
        f"study {name!r} already exists in {where}; nothing was overwritten "
        f"(add trials with `lstmlab study run`)"
    )


def open_study(
    root: str | Path,
    *,
    name: str | None = None,
    storage: str | None = None,
    space: SearchSpace | None = None,
) -> StudyHandle:
    """Open the study of ``root`` (its ``study.toml``), or join study ``name`` in ``storage``
    (a worker on another machine: ``root`` then only receives its trials' run directories).
    ``space``, when given, must be the study's own."""
    import optuna

    _quiet_optuna()
    root = Path(root)
    pointer = _read_pointer(root)
    if pointer and name and pointer.get("name") != name:
        raise StudyError(f"{root} holds study {pointer['name']!r}, not {name!r}")
    name = name or pointer.get("name")
    storage = storage or pointer.get("storage")
    if not name:
        raise StudyError(
            f"{root}: no study here (no {STUDY_FILE}); create one with `lstmlab study create`, "
            "or give --name and --storage to join one in a database"
        )
    if storage is None and not (root / "study.journal").exists():
        raise StudyError(f"{root}: no study journal here; give --storage URL")
    st = _storage(storage, root, wait=True)
    try:
        study = optuna.load_study(study_name=name, storage=st, sampler=None)
    except KeyError:
        raise StudyError(f"no study {name!r} in {describe_url(storage or str(root))}") from None
    handle = _handle(root, name, storage, study)
    if space is not None and space.fingerprint() != handle.space.fingerprint():
        raise StudyError(
            f"study {name!r} exists with another search space; nothing was changed "
            "(drop --space, or create a new study)"
        )
    if not pointer:
        _write_pointer(root, name, storage)
    return handle


def _handle(root, name, storage, study) -> StudyHandle:
    d = study.user_attrs.get(ATTR)
    if not d:
        raise StudyError(f"study {name!r} was not made by `lstmlab study create`")
    study.sampler = TrialSeededSampler(d["seed"])
    return StudyHandle(
        root=root,
        name=name,
        storage_url=storage,
        study=study,
        space=from_dict(d["space"]),
        base=d["base"],
        seed=int(d["seed"]),
        metric=d["metric"],
    )


# --------------------------------------------------------------------------------------------
# Sampling


class TrialSeededSampler(RandomSampler):
    """Optuna's random sampler, reseeded for each (trial number, parameter) from the study
    seed: a trial samples the same values whichever worker runs it, and runs of a study with
    any number of workers sample the same trials. The variant is not drawn but dealt round
    robin: fresh trial n gets ``variants[s mod K]`` where s counts the fresh (not retry)
    trials numbered below n. Which earlier trials are retries is fixed when each is created
    (a retry is queued with its parameters and ``retry_of``), so the deal depends on neither
    timing nor which trials failed, and a retry keeps its original's variant: N·K fresh
    trials give every variant N, as Greff's fixed number of trials per variant."""

    def __init__(self, seed: int = 0):
        super().__init__(seed=seed)
        self.study_seed = int(seed)

    def sample_independent(self, study, trial, param_name, param_distribution):
        trials = study.get_trials(deepcopy=False)
        n = origin(trials, trial)  # a retry samples what its original did
        if param_name == "variant" and isinstance(param_distribution, CategoricalDistribution):
            choices = list(param_distribution.choices)
            return choices[fresh_slot(trials, n) % len(choices)]
        digest = sum((i + 1) * ord(c) for i, c in enumerate(param_name))
        seed = (self.study_seed * 1_000_003 + n * 7919 + digest) % 2**32
        return RandomSampler(seed=seed).sample_independent(
            study, trial, param_name, param_distribution
        )


def origin(trials, trial) -> int:
    """The number of the fresh trial that ``trial`` retries (its own if it is fresh)."""
    by_number = {t.number: t for t in trials}
    n, attrs, hops = trial.number, trial.user_attrs, 0
    while "retry_of" in attrs and hops < len(by_number):
        n = int(attrs["retry_of"])
        attrs, hops = (by_number[n].user_attrs if n in by_number else {}), hops + 1
    return n


def fresh_slot(trials, number: int) -> int:
    """How many fresh trials (not queued retries) are numbered below ``number``."""
    return sum(1 for t in trials if t.number < number and "retry_of" not in t.user_attrs)


# --------------------------------------------------------------------------------------------
# Workers


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (state first), or None."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (to tell a live process from a reused pid)."""
    fields = _proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def worker_id() -> dict[str, Any]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": _process_start(pid)}


def _alive(worker: dict[str, Any]) -> bool:
    """Whether the worker process is running: a zombie (dead, not yet waited for by its
    parent) and a process that reuses the pid (another start time) are not."""
    pid = int(worker.get("pid", -1))
    if pid <= 0:
        return False
    fields = _proc_stat(pid)
    if fields and fields[0] in ("Z", "X"):  # zombie or dead
        return False
    start = fields[19] if fields and len(fields) > 19 else None
    if start is not None or worker.get("start") is not None:
        return start is not None and start == worker.get("start")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


MAX_ATTEMPTS = 3  # a trial whose worker dies this often is not queued again automatically


def reap_dead_trials(handle: StudyHandle, *, pids: set[int] | None = None) -> list[int]:
    """Mark running trials whose worker process on this host is gone as failed (and, on
    PostgreSQL, those whose heartbeat stopped), and queue each again (``requeue``); returns
    their numbers. ``pids``: only trials of these worker processes (a parent that has just
    waited for them knows they are dead)."""
    import optuna
    from optuna.storages._heartbeat import is_heartbeat_enabled

    study = handle.study
    reaped = []
    if is_heartbeat_enabled(study._storage) and pids is None:
        before = {t.number for t in study.get_trials(False, states=(TrialState.RUNNING,))}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        after = {t.number for t in study.get_trials(False, states=(TrialState.RUNNING,))}
        reaped += sorted(before - after)
    host = socket.gethostname()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        w = t.user_attrs.get("worker")
        if not w or w.get("host") != host:
            continue
        if pids is not None and int(w.get("pid", -1)) not in pids:
            continue
        if pids is None and _alive(w):
            continue
        try:
            study._storage.set_trial_user_attr(t._trial_id, "failed_because", "worker died")
            if study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL):
                reaped.append(t.number)
        except (RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
            pass  # another worker reaped it first
    trials = study.get_trials(deepcopy=False)
    for n in reaped:
        requeue(handle, trials[n], trials)
    return reaped


def requeue(handle: StudyHandle, failed, trials=None, *, force: bool = False) -> bool:
    """Queue failed trial ``failed`` again with its parameters, seed and run directory (the
    retry continues that run from its checkpoint) unless a retry of it exists, or (without
    ``force``) it is already attempt ``MAX_ATTEMPTS``. Returns whether it was queued."""
    trials = trials if trials is not None else handle.study.get_trials(deepcopy=False)
    if any(t.user_attrs.get("retry_of") == failed.number for t in trials):
        return False
    attempt = int(failed.user_attrs.get("attempt", 1)) + 1
    if attempt > MAX_ATTEMPTS and not force:
        return False
    attrs: dict[str, Any] = {"retry_of": failed.number, "attempt": attempt}
    for k in ("run_dir", "seed"):
        if k in failed.user_attrs:
            attrs[k] = failed.user_attrs[k]
    # a trial that died before sampling is queued without parameters: the sampler deals the
    # retry what its original would have drawn (``origin``)
    handle.study.enqueue_trial(failed.params, user_attrs=attrs, skip_if_exists=False)
    return True


class _Objective:
    def __init__(self, handle: StudyHandle, log):
        self.h, self.log = handle, log

    def __call__(self, trial) -> float:
        import json

        from lstmlab.training import build, run
        from lstmlab.training.config import apply_overrides, from_dict
        from lstmlab.training.loop import batches_per_epoch

        h = self.h
        trial.set_user_attr("worker", worker_id())
        over = h.space.sample(trial)
        base = from_dict(h.base)
        over["seed"] = h.seed * 100_000 + trial.number
        run_dir = Path(
            trial.user_attrs.get("run_dir") or h.root / "trials" / f"trial-{trial.number:05d}"
        )
        if "retry_of" in trial.user_attrs:
            over["seed"] = int(trial.user_attrs.get("seed", over["seed"]))
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("seed", over["seed"])
        cfg = from_dict(apply_overrides({}, over), base)
        if not run.RunPaths(run_dir).config.exists():
            # evaluate and checkpoint once per epoch, as Greff's early stopping counts
            n = len(build.build_task(cfg).train)
            per_epoch = batches_per_epoch(n, cfg.optimizer.batch_size)
            cfg = from_dict({"eval_every": per_epoch, "checkpoint_every": per_epoch}, cfg)
        paths = run.RunPaths(run_dir)
        if paths.summary.exists():
            summary = json.loads(paths.summary.read_text())
        elif paths.config.exists():
            summary = run.resume(run_dir, progress="none", out=io.StringIO())
        else:
            _set_aside(run_dir)
            summary = run.start(cfg, run_dir, progress="none", out=io.StringIO())
        if summary["stop_reason"] == "interrupted":
            raise KeyboardInterrupt
        value = summary["best"]
        publish(trial, run_dir, summary, h.metric, over["model.variant"])  # dashboard.py
        trial.set_user_attr("stop_reason", summary["stop_reason"])
        trial.set_user_attr("epochs", summary["epochs"])
        trial.set_user_attr("wall_time", summary["wall_time"])
        if cfg.eval_split != "test":
            test = run.evaluate_run(run_dir, "test")
            trial.set_user_attr(f"test_{h.metric}", test.get(h.metric))
        if value is None or not math.isfinite(value):
            raise StudyError(f"trial {trial.number}: no finite {h.metric}")
        self.log(
            f"trial {trial.number}: {over['model.variant']} "
            + " ".join(f"{k}={v:.4g}" for k, v in trial.params.items() if k != "variant")
            + f" -> {h.metric} {value:.5g} ({summary['stop_reason']}, {summary['epochs']} epochs)"
        )
        return float(value)


def _set_aside(run_dir: Path) -> None:
    """A trial's run directory without a saved config is what a worker killed while starting
    the run left (a temporary file, a lock): move it aside (``<dir>.partial-<time>``, nothing
    deleted) so the retry can start the run there."""
    if run_dir.is_dir() and any(run_dir.iterdir()):
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = run_dir.with_name(f"{run_dir.name}.partial-{stamp}-{os.getpid()}")
        try:
            os.replace(run_dir, aside)
        except OSError as err:
            raise StudyError(f"cannot move {run_dir} aside: {err.strerror or err}") from None


def _counted(handle: StudyHandle) -> tuple[int, int]:
    """(complete, running or queued) trials of the study."""

    trials = handle.study.get_trials(deepcopy=False)
    done = sum(t.state == TrialState.COMPLETE for t in trials)
    busy = sum(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials)
    return done, busy


def waiting(handle: StudyHandle) -> int:
    """How many of the study's trials are queued (state WAITING), not yet taken by a worker."""
    return len(handle.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def run_worker(
    handle: StudyHandle,
    *,
    trials: int | None = None,
    total: int | None = None,
    log=None,
) -> int:
    """Run trials one after another, queued ones (retries) first: ``trials`` of them, or
    until the study holds ``total`` complete, running or queued trials and no queued one is
    left (whichever comes first). Returns how many ran."""
    if trials is None and total is None:
        raise StudyError("say how many trials: --trials N (this worker) or --total N (study)")
    log = log or (lambda msg: print(msg, file=sys.stderr))
    objective = _Objective(handle, log)
    done = 0
    while trials is None or done < trials:
        reaped = reap_dead_trials(handle)
        if reaped:
            log(f"marked failed (worker gone) and queued again: trials {_numbers(reaped)}")
        if total is not None and sum(_counted(handle)) >= total and not waiting(handle):
            break
        _run_one(handle, objective, log)
        done += 1
    return done


def _numbers(ns) -> str:
    return ", ".join(map(str, ns))


def _run_one(handle: StudyHandle, objective, log) -> None:
    """Ask for a trial (a queued one first), run it, tell the result: a failed run (bad
    configuration, no finite value, a run error) fails the trial and the worker goes on; an
    interrupt fails it and stops; a storage error stops with it (``StorageError``)."""
    import optuna
    from optuna.storages._heartbeat import get_heartbeat_thread

    from lstmlab.training.config import ConfigError
    from lstmlab.training.run import RunError

    study = handle.study
    with warnings.catch_warnings():  # "heartbeat is supposed to be used with optimize": it is
        warnings.simplefilter("ignore", UserWarning)  # (the thread below beats)
        trial = study.ask()
    try:
        with get_heartbeat_thread(trial._trial_id, study._storage):
            value = objective(trial)
    except (RunError, ConfigError, StudyError, FloatingPointError) as err:
        log(f"trial {trial.number} failed: {err}")
        trial.set_user_attr("failed_because", str(err).splitlines()[0] if str(err) else "")
        study.tell(trial, state=TrialState.FAIL)
        return
    except (KeyboardInterrupt, Exception) as err:
        if not isinstance(err, StorageError):
            try:  # leave no RUNNING trial behind (``resume`` runs it again)
                study.tell(trial, state=TrialState.FAIL)
            except Exception:
                pass
        raise
    try:
        study.tell(trial, value)
    except optuna.exceptions.UpdateFinishedTrialError:
        # another worker failed this trial while the database was away (its heartbeat
        # stopped): the retry it queued continues the finished run directory
        log(f"trial {trial.number} was marked failed meanwhile; its retry reuses the result")


def resume(handle: StudyHandle, *, trials: int = 0, log=None) -> int:
    """Mark dead trials failed, queue every failed trial again (its parameters, seed and run
    directory, so the run continues from its checkpoint) that has no retry yet, run every
    queued trial and ``trials`` more."""

    log = log or (lambda msg: print(msg, file=sys.stderr))
    reap_dead_trials(handle)
    all_trials = handle.study.get_trials(deepcopy=False)
    queued = sum(
        requeue(handle, t, all_trials, force=True) for t in all_trials if t.state == TrialState.FAIL
    )
    if queued:
        log(f"queued {queued} failed trial(s) again")
    n = waiting(handle) + trials
    return run_worker(handle, trials=n, log=log) if n else 0


def status(handle: StudyHandle) -> dict[str, Any]:
    """Counts by state, the best trial, per-variant counts and best values, running trials,
    and which failed trials have a retry (``retried``) and which not (``not_retried``)."""

    reap_dead_trials(handle)
    trials = handle.study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    sign = 1 if handle.study.direction.name == "MINIMIZE" else -1
    variants: dict[str, dict[str, Any]] = {}
    for t in complete:
        v = t.params.get("variant", handle.space.variants[0])
        d = variants.setdefault(v, {"complete": 0, "best": None})
        d["complete"] += 1
        if d["best"] is None or sign * t.value < sign * d["best"]:
            d["best"] = t.value
    best = min(complete, key=lambda t: sign * t.value) if complete else None
    retried = {t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs}
    return {
        "name": handle.name,
        "storage": handle.where,
        "metric": handle.metric,
        "direction": handle.study.direction.name.lower(),
        "trials": len(trials),
        "states": counts,
        "best": None
        if best is None
        else {"number": best.number, "value": best.value, "params": best.params},
        "variants": variants,
        "running": [
            {"number": t.number, **t.user_attrs.get("worker", {})}
            for t in trials
            if t.state == TrialState.RUNNING
        ],
        # failed trials with a retry (queued, running or done) and those without one
        "retried": [t.number for t in trials if t.state == TrialState.FAIL and t.number in retried],
        "not_retried": [
            t.number for t in trials if t.state == TrialState.FAIL and t.number not in retried
        ],
    }
