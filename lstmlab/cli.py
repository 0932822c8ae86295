"""The ``lstmlab`` command line: parses, builds, calls — nothing else.

    lstmlab train multiplication                 seed 000's setting (Lyu & Zhu), to the end
    lstmlab train adding --optimizer.name cg --seed 3 --stop.max_epochs 20
    lstmlab train multiplication --config my.toml --task.options.T 50 --dry-run
    lstmlab resume runs/multiplication-lbfgs-seed0-…      continue from the last checkpoint
    lstmlab eval RUN [--split S] [--checkpoint best|last]  metrics of a run's best/last network
    lstmlab report RUN… [--out DIR]              figures and a markdown table across runs
    lstmlab tasks                                every task with a one-line description
    lstmlab reproduce NAME [--quick] [--dry-run]  one paper's experiments (lyu2015, …)
    lstmlab train multiplication --workers 3     data-parallel on this machine (torchrun inside)
    torchrun --nproc-per-node 4 -m lstmlab train multiplication --run-dir runs/m   (any launch)
    lstmlab study create|run|resume|status|analyze DIR …   hyperparameter studies (Greff)

Every field of ``lstmlab.training.config.RunConfig`` is a flag (``--section.field VALUE``);
values are read as TOML (``0.1``, ``true``, ``{type="linear", start=1, end=3.75, steps=10}``)
and anything else as a string. Free-form option tables take any key:
``--task.options.T 50``, ``--model.options.init gaussian``, ``--optimizer.options.c2 0.5``.

Exit codes (``train`` and ``resume``; the other commands use 0, 1 and 2, and ``study run`` /
``study resume --workers K`` 4 when a worker died; see ``lstmlab.studies.cli``):

    0    done: solved, or a budget / patience ran out (the summary says which); also
         ``resume`` of a run that had already finished (it says so)
    1    a runtime failure with a one-line reason (unwritable directory, full disk, no
         readable checkpoint, another process writing the run)
    2    a bad command line, config or data file (the message names the key or the file)
    3    the run diverged (NaN/Inf); its last finite checkpoint is kept
    130  interrupted by Ctrl-C (SIGINT) after a clean checkpoint
    143  stopped by SIGTERM after a clean checkpoint (as Ctrl-C; `lstmlab resume RUN`)

JSON written by lstmlab (metrics.jsonl, summary.json, ``eval --json``) is standard JSON:
non-finite numbers appear as the strings "NaN", "Infinity", "-Infinity".
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

__all__ = ["main", "build_parser"]

EXIT_RUNTIME, EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED, EXIT_TERMINATED = 1, 2, 3, 130, 143
EXIT_CODES = (
    "Exit codes: 0 done (solved or a budget ran out), 1 runtime failure, 2 bad command line, "
    "config or data file, 3 diverged (the last finite checkpoint is kept), 130 Ctrl-C, "
    "143 SIGTERM (both after a clean checkpoint)."
)
FREE_FORM = ("task.options.", "model.options.", "optimizer.options.")
PROGRESS = ("auto", "rich", "plain", "none")
UNVERIFIED_HELP = (
    "load a checkpoint that carries no checksum (written by an old lstmlab, or rewritten "
    "without it), with a warning; without this flag it is refused"
)


class UsageError(Exception):
    """A bad command line; printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors in one line (and lists valid choices, as argparse does)."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)")


def _add_config_flags(
    p: argparse.ArgumentParser, *, only: str | None = None, preset: dict | None = None
) -> None:
    """One flag per config field; ``preset``: the defaults of one task (``train TASK --help``:
    ``_task_defaults``), shown instead of the dataclass defaults."""
    from lstmlab.training.config import RunConfig, flag_specs

    title = (
        "run configuration (each flag overrides the config files; task and optimizer "
        "presets, e.g. seed 000's batch sizes, change some defaults shown here)"
        if preset is None
        else f"run configuration; defaults shown are task {preset['task.name']}'s, its "
        f"preset and its optimizer's ({preset['optimizer.name']}) applied"
    )
    group = p.add_argument_group(title)
    choices = _choices()
    for key, text, default in flag_specs(RunConfig):
        if only is not None and not key.startswith(only):
            continue
        if key == "task.name":
            continue  # the positional TASK
        if preset is not None:
            default = preset.get(key)
        shown = "unset" if default is None or default == {} else json.dumps(default)
        group.add_argument(
            f"--{key}",
            dest=f"cfg:{key}",
            metavar="VALUE",
            default=argparse.SUPPRESS,
            choices=choices.get(key),
            help=f"{text} [default: {shown}]",
        )


def _add_parallel_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "workers and threads (not part of the run's identity: a run resumes on any number)"
    )
    g.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="data-parallel worker processes on this machine (starts torchrun's launcher; "
        "under torchrun itself, its --nproc-per-node decides)",
    )
    g.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="intra-op threads per process [default: 1 for small networks, else the free "
        "cores per worker; see docs/benchmarks.md]",
    )
    g.add_argument(
        "--shards",
        choices=("equal", "speed"),
        default="equal",
        help="shard sizes: equal, or proportional to each worker's measured speed "
        "(measured at start, re-balanced every epoch)",
    )
    g.add_argument(
        "--slow-worker",
        action="append",
        default=[],
        metavar="RANK:FACTOR",
        help="simulate a slower worker: RANK computes FACTOR times slower (repeatable)",
    )
    g.add_argument(
        "--max-restarts",
        type=int,
        default=0,
        metavar="K",
        help="with --workers: restart the group up to K times after a worker dies; it "
        "resumes from the last checkpoint",
    )


def _choices() -> dict[str, tuple[str, ...]]:

    from lstmlab.training.config import RunConfig, show_choice

    out = {}
    for top in dataclasses.fields(RunConfig):
        sub = top.default_factory() if top.default is dataclasses.MISSING else None
        if dataclasses.is_dataclass(sub):
            for f in dataclasses.fields(sub):
                if f.metadata.get("choices"):  # as typed on the command line (true, not True)
                    out[f"{top.name}.{f.name}"] = tuple(map(show_choice, f.metadata["choices"]))
        elif top.metadata.get("choices"):
            out[top.name] = tuple(top.metadata["choices"])
    return out


# the one-line help of the two commands whose parsers import their packages (papers, Optuna):
# the top-level --help shows these without building them (a test holds them equal)
REPRODUCE_HELP = "reproduce a paper's experiments"
STUDY_HELP = "hyperparameter studies: random search over variants (Greff et al.)"


def _command_of(argv: list[str]) -> str | None:
    """The sub-command ``argv`` names: its first word that is not an option."""
    return next((a for a in argv if not a.startswith("-")), None)


def _task_defaults(argv: list[str]) -> dict | None:
    """``lstmlab train TASK [--optimizer.name X] --help``: that task's resolved defaults as
    dotted keys (None for any other command line, or a task name that does not resolve)."""
    if len(argv) < 2 or argv[0] != "train" or argv[1].startswith("-"):
        return None
    if not {"-h", "--help"} & set(argv):
        return None
    from lstmlab.training.config import ConfigError, resolve, to_dict

    over = {"task.name": argv[1]}
    if "--optimizer.name" in argv[:-1]:
        over["optimizer.name"] = argv[argv.index("--optimizer.name") + 1]
    try:
        cfg = resolve([], over)
    except ConfigError:
        return None

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            if isinstance(v, dict) and k not in ("options", "alpha", "lr", "momentum"):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    return flat(to_dict(cfg))


def build_parser(
    argv: list[str] | None = None, task_defaults: dict | None = None
) -> argparse.ArgumentParser:
    """The whole parser; given ``argv``, ``reproduce`` and ``study`` are built in full only when
    ``argv`` names them (building them imports every paper module and Optuna, i.e. torch);
    ``task_defaults``: one task's resolved defaults for ``train TASK --help``."""
    from lstmlab import __version__

    command = None if argv is None else _command_of(argv)
    parser = _Parser(
        prog="lstmlab",
        description="Train LSTM-family networks with full-BPTT batch learning and compare "
        "optimizers (SGD/momentum, L-BFGS, nonlinear CG, Hessian-free).",
    )
    parser.add_argument("--version", action="version", version=f"lstmlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    t = sub.add_parser(
        "train",
        help="start a training run",
        description="Start a run. `lstmlab train multiplication` with no other option runs "
        "seed 000's setting (Lyu & Zhu): lstm97, 2 blocks x 2 cells, alpha 3.75, minibatch "
        "L-BFGS on batches of 1,000, stop at test MAE < 0.01.",
        epilog="Free-form option tables take any key: --task.options.KEY VALUE (task builder), "
        "--model.options.KEY VALUE (cell), --optimizer.options.KEY VALUE (optimizer). "
        + EXIT_CODES,
    )
    t.add_argument("task", metavar="TASK", help="task name (see `lstmlab tasks`)")
    t.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="FILE",
        help="TOML config file(s), applied in order before the flags",
    )
    t.add_argument(
        "--run-dir",
        metavar="DIR",
        help="run directory (default: runs/TASK-OPTIMIZER-seedN-TIMESTAMP)",
    )
    t.add_argument(
        "--progress",
        choices=PROGRESS,
        default="auto",
        help="progress display: rich bar on a terminal, plain lines otherwise",
    )
    t.add_argument(
        "--dry-run",
        action="store_true",
        help="resolve and validate the config, build task/model/optimizer, "
        "print the config; write nothing and train nothing",
    )
    _add_parallel_flags(t)
    _add_config_flags(t, preset=task_defaults)

    r = sub.add_parser(
        "resume",
        help="continue a run from its last checkpoint",
        description="Continue a run from its last checkpoint to the result an "
        "uninterrupted run gives. Budgets (--stop.*) may be raised.",
        epilog=EXIT_CODES,
    )
    r.add_argument("run", metavar="RUN", help="run directory")
    r.add_argument(
        "--progress",
        choices=PROGRESS,
        default="auto",
        help="progress display: rich bar on a terminal, plain lines otherwise",
    )
    r.add_argument(
        "--dry-run",
        action="store_true",
        help="check the run directory and checkpoint, print where it would resume",
    )
    r.add_argument(
        "--break-lock",
        action="store_true",
        help="take over the run's writer lock when it names a process on another host that "
        "is known to be gone (a lock left by a crash on this host is taken over by itself)",
    )
    r.add_argument("--allow-unverified", action="store_true", help=UNVERIFIED_HELP)
    _add_parallel_flags(r)
    _add_config_flags(r, only="stop.")

    e = sub.add_parser("eval", help="evaluate a run's best (or last) network")
    e.add_argument("run", metavar="RUN", help="run directory")
    e.add_argument(
        "--split",
        default="test",
        choices=("train", "valid", "test"),
        help="which split to evaluate",
    )
    e.add_argument(
        "--checkpoint",
        default=None,
        choices=("best", "last"),
        help="which network: the best by the valid metric, or the last checkpoint "
        "(default: best where the run keeps one, else last)",
    )
    e.add_argument("--json", action="store_true", help="print the metrics as JSON")
    e.add_argument("--allow-unverified", action="store_true", help=UNVERIFIED_HELP)

    p = sub.add_parser(
        "report",
        help="figures and a markdown summary across runs",
        description="Figures and a markdown table for runs (a RUN may also be "
        "a folder holding runs, searched recursively).",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories or folders of runs")
    p.add_argument(
        "--out", metavar="DIR", default="report", help="folder for report.md and the figures"
    )
    p.add_argument(
        "--x",
        dest="x_axis",
        default="P_D",
        choices=("samples", "presentations", "P_D", "P_I", "iteration", "wall"),
        help="x axis of the comparison figure",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="list the runs found and what would be written"
    )

    sub.add_parser(
        "tasks",
        help="list the tasks with descriptions",
        description="List every task and preset name `train` accepts.",
    )

    if argv is None or command == "reproduce":
        _add_reproduce(sub)
    else:
        sub.add_parser("reproduce", help=REPRODUCE_HELP)
    if argv is None or command == "study":
        from lstmlab.studies.cli import add_parser as add_study_parser

        add_study_parser(sub, _Parser, _add_config_flags)
    else:
        sub.add_parser("study", help=STUDY_HELP)
    return parser


def _add_reproduce(sub) -> None:
    """`lstmlab reproduce NAME …`: one sub-command per registered paper, each with the common
    flags and its own (lstmlab/reproduce/)."""
    from lstmlab import reproduce

    papers = reproduce.load_all()
    q = sub.add_parser(
        "reproduce",
        help=REPRODUCE_HELP,
        description="Run a paper's experiments at the scale this machine allows; resumable "
        "(finished runs are kept, unfinished ones resumed). Valid: " + ", ".join(papers) + ".",
    )
    names = q.add_subparsers(dest="paper", metavar="NAME", parser_class=_Parser)
    names.required = True
    for paper in papers.values():
        p = names.add_parser(paper.name, help=paper.summary, description=paper.description)
        p.add_argument(
            "--quick",
            action="store_true",
            help="a smoke run: small problems, budgets and seed counts (minutes on two cores); "
            "its report says so",
        )
        p.add_argument(
            "--out",
            metavar="DIR",
            default=paper.default_out,
            help=f"folder for the runs, figures and results.md (default: {paper.default_out})",
        )
        p.add_argument(
            "--progress", choices=PROGRESS, default="auto", help="progress display of each run"
        )
        p.add_argument(
            "--dry-run",
            action="store_true",
            help="list the runs that would be made and their configs; run nothing",
        )
        paper.add_arguments(p)


# --------------------------------------------------------------------------------------------
# Commands


def _overrides(ns: argparse.Namespace, extra: list[str], *, allow_free: bool) -> dict[str, str]:
    out = {k[4:]: v for k, v in vars(ns).items() if k.startswith("cfg:")}
    i = 0
    while i < len(extra):
        tok = extra[i]
        key, _, value = tok[2:].partition("=") if tok.startswith("--") else (tok, "", "")
        if (
            not tok.startswith("--")
            or not allow_free
            or not key.startswith(FREE_FORM)
            or len(key.split(".")) < 3
            or "" in key.split(".")
        ):
            raise UsageError(f"unrecognized argument {tok!r} (see --help for the valid flags)")
        if not _:
            if i + 1 >= len(extra):
                raise UsageError(f"--{key} needs a value")
            value = extra[i + 1]
            i += 1
        out[key] = value
        i += 1
    return out


WORKERS_PER_CORE = 4  # more worker processes than this per core only queue for the cores


def _parallel_flags(ns) -> dict[int, float]:
    """Check ``--workers``, ``--threads``, ``--slow-worker``, ``--max-restarts`` against their
    ranges and this machine (before anything starts, ``--dry-run`` included); the slowdowns."""
    import math
    import os

    try:  # distributed.threads.available_cores, without importing torch before a usage error
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    if ns.threads is not None and not 1 <= ns.threads <= cores:
        raise UsageError(
            f"--threads must be in 1..{cores} (<= {cores}, the cores this process may run on), "
            f"got {ns.threads}"
        )
    most = WORKERS_PER_CORE * cores
    if ns.workers is not None and not 1 <= ns.workers <= most:
        raise UsageError(
            f"--workers must be in 1..{most} (<= {WORKERS_PER_CORE} per core; this machine lets "
            f"it use {cores}), got {ns.workers}"
        )
    if ns.max_restarts < 0:
        raise UsageError(f"--max-restarts must be >= 0, got {ns.max_restarts}")
    try:
        world = ns.workers or int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        world = 1
    slow: dict[int, float] = {}
    for item in ns.slow_worker:
        rank, _, factor = item.partition(":")
        try:
            r, f = int(rank), float(factor)
        except ValueError:
            raise UsageError(f"--slow-worker wants RANK:FACTOR (e.g. 2:3), got {item!r}") from None
        if not (f >= 1.0 and math.isfinite(f)):
            raise UsageError(f"--slow-worker factor must be a finite number >= 1, got {item!r}")
        if not 0 <= r < world:
            raise UsageError(
                f"--slow-worker names rank {r}, but the ranks of {world} worker(s) are "
                f"0..{world - 1}; give --workers N with N > {r}, or a rank in range"
            )
        slow[r] = f
    return slow


def _parallel(ns, hidden: int):
    """Threads for this process and the worker group's session (joins torchrun's group)."""
    from lstmlab.distributed import comm, launch, session, threads

    slow = _parallel_flags(ns)
    if launch.under_torchrun() and launch.max_restarts() > 0 and not getattr(ns, "run", None):
        if not getattr(ns, "run_dir", None):
            raise UsageError("torchrun --max-restarts needs --run-dir (a restart resumes it)")
    threads.apply_threads(ns.threads, hidden, comm.get_local_world_size())
    comm.init_from_env()
    return session.Session(balance=ns.shards, slowdown=slow)


class _Reported(Exception):
    """An error a worker already printed; ``code`` is the exit code."""

    def __init__(self, code: int):
        self.code = code


def _in_group(fn):
    """``fn()`` in a worker group: each rank prints its own one-line error, waits briefly for
    the others to print theirs, and leaves the group."""
    from lstmlab.distributed import comm
    from lstmlab.distributed.comm import DistributedError
    from lstmlab.training.config import ConfigError
    from lstmlab.training.run import AlreadyFinished, RunError

    try:
        return fn()
    except AlreadyFinished as done:  # every rank read the same run: rank 0 says so
        if comm.env_rank() == 0:
            print(done)
        raise _Reported(0) from None
    except (ConfigError, RunError, DistributedError) as err:
        kind = "config error" if isinstance(err, ConfigError) else "error"
        _say(f"{_who()}: {kind}: {err}")
        comm.settle()
        raise _Reported(EXIT_USAGE if isinstance(err, ConfigError) else EXIT_RUNTIME) from None
    finally:
        comm.shutdown()


def _spawn(ns, argv: list[str], hidden: int, run_dir: Path | None) -> int:
    """``--workers N`` outside torchrun: the same command in N workers of one machine."""
    from lstmlab.distributed import launch, threads

    args = launch.strip_option(launch.strip_option(argv, "--workers"), "--max-restarts")
    if run_dir is not None and not ns.run_dir and ns.command == "train":
        args += ["--run-dir", str(run_dir)]
    per_worker, _ = threads.choose_threads(ns.threads, hidden, ns.workers)
    args = launch.strip_option(args, "--threads") + ["--threads", str(per_worker)]
    return launch.spawn(args, ns.workers, threads=per_worker, restarts=ns.max_restarts)


def cmd_train(ns, extra) -> int:
    overrides = _overrides(ns, extra, allow_free=True)
    overrides["task.name"] = ns.task
    _parallel_flags(ns)
    from lstmlab.distributed import comm, launch
    from lstmlab.training import build, run
    from lstmlab.training.config import dumps_toml, load_toml, resolve

    layers = [load_toml(f) for f in ns.config]
    notes: list[str] = []
    cfg = resolve(layers, overrides, notes=notes)
    if comm.env_rank() == 0:  # one note per run, not per worker
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
    if ns.workers and ns.workers > 1 and not launch.under_torchrun() and not ns.dry_run:
        return _spawn(ns, ns.argv, cfg.model.hidden_size, _run_dir(ns, cfg))
    par = _parallel(ns, cfg.model.hidden_size)
    if par.active and not ns.dry_run:

        def in_group():
            run_dir = par.from_main(_run_dir, ns, cfg)  # rank 0's timestamp
            # rank 0's view of its run directory decides for every rank
            again = par.from_main(lambda: (Path(run_dir) / "config.toml").exists())
            if launch.restarted() and again:
                return run.resume(run_dir, progress=ns.progress, out=sys.stdout, parallel=par)
            return run.start(cfg, run_dir, progress=ns.progress, out=sys.stdout, parallel=par)

        return _exit_code(_in_group(in_group))
    if ns.dry_run:
        try:
            built = run.build_noticed(cfg)
        except build.DataNotGivenError as err:  # PTB without its files: the config still shows
            print(dumps_toml(cfg).rstrip())
            print(f"# task: not built, its data is not given: {err}")
            print("# model and optimizer: sized by the data (vocabulary); give it to see them")
            print(f"# dry run: nothing written (run directory would be {_run_dir(ns, cfg)})")
            return 0
        n_params = sum(p.numel() for p in built.model.parameters())
        print(dumps_toml(cfg).rstrip())
        print(f"# task: {built.task!r}")
        print(f"# model: {n_params} parameters; optimizer: {type(built.optimizer).__name__}")
        for line in build.describe(built):
            print(f"# {line}")
        print(f"# dry run: nothing written (run directory would be {_run_dir(ns, cfg)})")
        return 0
    summary = run.start(cfg, _run_dir(ns, cfg), progress=ns.progress, out=sys.stdout)
    if summary.get("task_seed"):
        print(f"  note: {summary['task_seed']}")
    return _exit_code(summary)


def _exit_code(summary: dict) -> int:
    """The documented exit code of a run that ended (see the module docstring)."""
    if summary["stop_reason"] == "diverged":
        return EXIT_DIVERGED
    if summary["stop_reason"] == "interrupted":
        return EXIT_TERMINATED if summary.get("interrupted_by") == "SIGTERM" else EXIT_INTERRUPTED
    return 0


def _run_dir(ns, cfg) -> Path:
    if ns.run_dir:
        return Path(ns.run_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.task.name}-{cfg.optimizer.name}-seed{cfg.seed}-{stamp}"


def _hidden_of(run_dir: str) -> int:
    """The run's recurrent width for the thread rule (0 when its config cannot be read here:
    rank 0 reads it again and reports any problem to every rank)."""
    from lstmlab.training import run

    try:
        return run.load_config(run_dir).model.hidden_size
    except Exception:  # noqa: BLE001
        return 0


def cmd_resume(ns, extra) -> int:
    overrides = _overrides(ns, extra, allow_free=False)
    _parallel_flags(ns)
    from lstmlab.distributed import launch
    from lstmlab.training import run
    from lstmlab.training.config import parse_value

    stop = {k.removeprefix("stop."): parse_value(v) for k, v in overrides.items()}
    if ns.workers and ns.workers > 1 and not launch.under_torchrun() and not ns.dry_run:
        return _spawn(ns, ns.argv, _hidden_of(ns.run), None)
    if launch.under_torchrun() and not ns.dry_run:
        par = _parallel(ns, _hidden_of(ns.run))
        return _exit_code(
            _in_group(
                lambda: run.resume(
                    ns.run,
                    stop_overrides=stop or None,
                    progress=ns.progress,
                    out=sys.stdout,
                    break_lock=ns.break_lock,
                    parallel=par,
                    allow_unverified=ns.allow_unverified,
                )
            )
        )
    _parallel(ns, _hidden_of(ns.run))  # threads of this one process
    if ns.dry_run:
        return _resume_dry_run(ns)
    try:
        summary = run.resume(
            ns.run,
            stop_overrides=stop or None,
            progress=ns.progress,
            out=sys.stdout,
            break_lock=ns.break_lock,
            allow_unverified=ns.allow_unverified,
        )
    except run.AlreadyFinished as done:  # nothing to do is not a failure
        print(done)
        return 0
    return _exit_code(summary)


def _resume_dry_run(ns) -> int:
    """What ``resume`` would do: which checkpoint, whether it falls back, the lock, the log."""
    from lstmlab.training import run
    from lstmlab.training.lock import read_holder
    from lstmlab.training.metrics import survey

    paths = run.RunPaths(Path(ns.run))
    cfg = run.load_config(ns.run)
    if not paths.checkpoint.exists() and not paths.prev.exists():
        print(f"{ns.run}: no checkpoint yet; would start the run from the beginning")
        return 0
    ckpt, skipped = run.load_run_checkpoint(paths, cfg, allow_unverified=ns.allow_unverified)
    st = ckpt["train_state"]
    source = "the previous checkpoint (.prev)" if skipped else "the last checkpoint"
    print(
        f"{ns.run}: would resume from {source} at iteration {st['iteration']} "
        f"(epoch {st['epoch']}, stop reason so far: {st['stop_reason']})"
    )
    if skipped:
        print(f"  would fall back to {paths.prev.name}: {skipped}")
    log = survey(paths.metrics, int(ckpt.get("metrics_offset", 0)))
    if log.damaged:
        n = len(log.damaged)
        print(
            f"  metrics.jsonl: would drop {n} damaged line{'s' if n > 1 else ''} and keep the "
            f"{len(log.rows)} valid rows around them"
        )
    if log.short:
        print("  metrics.jsonl is shorter than the checkpoint says: would keep its whole rows")
    holder = read_holder(paths.root)
    if holder:
        print(
            f"  run.lock names pid {holder.get('pid')} on {holder.get('host')}: resume refuses "
            "while that process writes (a crashed holder's lock is taken over)"
        )
    return 0


def cmd_eval(ns, extra) -> int:
    _overrides(ns, extra, allow_free=False)
    from lstmlab.training import run

    metrics = run.evaluate_run(
        ns.run, ns.split, ns.checkpoint, allow_unverified=ns.allow_unverified
    )
    if ns.json:
        from lstmlab.training.jsonsafe import dumps

        print(dumps(metrics, indent=2))
    else:
        which, it = metrics.pop("checkpoint"), metrics.pop("iteration")
        print(f"{ns.run} ({ns.split}, {which} checkpoint, iteration {it}):")
        for k, v in metrics.items():
            print(f"  {k:<12} {v:.6g}" if isinstance(v, float) else f"  {k:<12} {v}")
    return 0


def cmd_report(ns, extra) -> int:
    _overrides(ns, extra, allow_free=False)
    from lstmlab.training.report import find_runs, write_report

    runs = find_runs(ns.runs)
    if ns.dry_run:
        for r in runs:
            print(r)
        print(
            f"# dry run: would write {Path(ns.out) / 'report.md'}, metrics.csv and figures "
            f"for {len(runs)} runs"
        )
        return 0
    path = write_report(runs, ns.out, x_axis=ns.x_axis)
    print(f"wrote {path}")
    print(f"wrote {path.with_name('metrics.csv')}")
    return 0


def cmd_tasks(ns, extra) -> int:
    _overrides(ns, extra, allow_free=False)
    import lstmlab.tasks as tasks
    from lstmlab.training.presets import TASK_PRESETS

    desc = tasks.describe()
    width = max(map(len, desc))
    for name, text in desc.items():
        preset = TASK_PRESETS.get(name, {}).get("task", {}).get("options")
        if preset:
            opts = ", ".join(f"{k}={v}" for k, v in preset.items())
            text += f"  [`lstmlab train {name}` presets: {opts}]"
        print(f"{name:<{width}}  {text}")
    return 0


def cmd_reproduce(ns, extra) -> int:
    _overrides(ns, extra, allow_free=False)
    from lstmlab import reproduce

    paper = reproduce.get(ns.paper)
    from lstmlab.reproduce.runset import SetInterrupted

    try:
        path = paper.run(ns, lambda line: print(line, flush=True))
    except reproduce.ReproduceUsageError as err:
        raise UsageError(str(err)) from None
    except SetInterrupted as stop:
        _say(
            f"lstmlab: {stop.signal} during {stop.run_dir} (checkpointed); the set stopped "
            "there: the same command resumes it"
        )
        return EXIT_TERMINATED if stop.signal == "SIGTERM" else EXIT_INTERRUPTED
    if path:
        print(f"wrote {path}")
    return 0


def cmd_study(ns, extra) -> int:
    from lstmlab.studies.cli import cmd_study as study

    return study(ns, extra, UsageError, lambda ns, ex: _overrides(ns, ex, allow_free=True))


COMMANDS = {
    "train": cmd_train,
    "resume": cmd_resume,
    "eval": cmd_eval,
    "report": cmd_report,
    "tasks": cmd_tasks,
    "reproduce": cmd_reproduce,
    "study": cmd_study,
}


def _say(line: str) -> None:
    """One error line in one write: the workers of a group share stderr, and ``print``'s two
    writes (text, then newline) from two processes can interleave into one line."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _who() -> str:
    """``lstmlab``, or ``lstmlab[rank R]`` in a worker of a group (every rank reports)."""
    import os

    if os.environ.get("WORLD_SIZE", "1") not in ("", "1") and "RANK" in os.environ:
        return f"lstmlab[rank {os.environ['RANK']}]"
    return "lstmlab"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        ns, extra = build_parser(argv, _task_defaults(argv)).parse_known_args(argv)
        ns.argv = argv
        return COMMANDS[ns.command](ns, extra)
    except _Reported as done:
        return done.code
    except UsageError as err:
        print(err, file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `lstmlab tasks | head`: the reader left, nothing is wrong
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(
            "lstmlab: aborted (the last checkpoint is intact; `lstmlab resume RUN`)",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except Exception as err:
        code = _known_error(err)
        if code is None:
            raise
        return code


def _known_error(err: Exception) -> int | None:
    """The exit code of an error lstmlab reports in one line (printed here), else None.

    The error types are imported only here, once a command has failed: the command that raised
    one has imported its module already, and ``--help`` or a usage error never gets here."""
    from lstmlab.files import UnreadableFile
    from lstmlab.training.config import ConfigError

    if isinstance(err, ConfigError):
        _say(f"{_who()}: config error: {err}")
        return EXIT_USAGE
    if isinstance(err, UnreadableFile):  # a file of a run directory that cannot be read
        _say(f"{_who()}: error: {err}")
        return EXIT_RUNTIME
    if "lstmlab.training.run" in sys.modules or "lstmlab.distributed.comm" in sys.modules:
        from lstmlab.distributed.comm import DistributedError
        from lstmlab.training.run import RunError

        if isinstance(err, RunError | DistributedError):
            _say(f"{_who()}: error: {err}")
            return EXIT_RUNTIME
    return None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
