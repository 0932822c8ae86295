"""``lstmlab study``: create / run / resume / status / analyze (parses, opens, calls).

lstmlab study create studies/jsb music --task.options.max_pieces 60
lstmlab study run studies/jsb --trials 20 --workers 2      two worker processes here
lstmlab study run DIR --name jsb --storage postgresql://u:p@host/db --trials 20  (elsewhere)
lstmlab study resume studies/jsb                           retry failed / dead trials
lstmlab study status studies/jsb [--json]
lstmlab study analyze studies/jsb [--out DIR]
lstmlab study dashboard studies/jsb [--port 8080]         optuna-dashboard on 127.0.0.1

Exit codes: 0 done; 1 the storage failed at run time (a database outage that outlasted the
retries, a journal damaged while running: one line says which and what to do); 2 a bad command
line, space file or study (one line); 4 ``--workers K``: a worker process died (killed by a
signal: the line names it and the signal). A dead worker's trial is marked failed and queued
again, and a fresh worker runs the queued retries before the command ends, so the study is
whole; the code still says that a worker died. A worker that fails on its own prints its error,
and the command ends with its code.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time

__all__ = ["add_parser", "cmd_study", "EXIT_STORAGE", "EXIT_WORKER_DIED"]

EXIT_STORAGE, EXIT_WORKER_DIED = 1, 4


def _where(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", metavar="DIR", help="study directory (trial run directories go here)")
    p.add_argument("--name", help="study name (default: the directory's study, or its name)")
    p.add_argument(
        "--storage",
        metavar="URL",
        help="postgresql://user:password@host/db for many machines; default: the journal file "
        "in DIR (no server)",
    )


def _count(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--trials", type=int, metavar="N", default=None, help=what)
    p.add_argument(
        "--total",
        type=int,
        metavar="N",
        default=None,
        help="stop once the study holds N complete, running or queued trials",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="K",
        help="worker processes on this machine (each runs --trials N); a worker killed by a "
        "signal is named, its trial run again, and the exit code is 4",
    )


def add_parser(sub, parser_class, add_config_flags) -> None:
    s = sub.add_parser(
        "study",
        help="hyperparameter studies: random search over variants (Greff et al.)",
        description="Random search over LSTM variants and hyperparameters on Optuna; each trial "
        "is an ordinary run directory. Greff's ranges by default, any other space from TOML.",
    )
    ss = s.add_subparsers(dest="study_command", metavar="ACTION", parser_class=parser_class)
    ss.required = True

    c = ss.add_parser(
        "create",
        help="create a study (never overwrites one)",
        description="Create a study on TASK. Trials start from Greff's training (Nesterov "
        "momentum, lr rescaled by 1 - momentum, 150 epochs, early stopping after 15 epochs on "
        "the validation split) with the task preset, the --config files and the flags on top.",
    )
    _where(c)
    c.add_argument("task", metavar="TASK", help="task name (see `lstmlab tasks`)")
    c.add_argument("--space", metavar="FILE", help="search space TOML (default: Greff's space)")
    c.add_argument(
        "--search-seed", type=int, default=0, help="seed of the random search (trial seeds follow)"
    )
    c.add_argument(
        "--config", action="append", default=[], metavar="FILE", help="base run config TOML"
    )
    add_config_flags(c)

    r = ss.add_parser("run", help="run trials (one worker, or --workers K here)")
    _where(r)
    _count(r, "trials this worker runs")
    r.add_argument("--space", metavar="FILE", help="refuse to run unless the study has this space")

    u = ss.add_parser(
        "resume", help="mark dead trials failed, run the failed ones again, then --trials more"
    )
    _where(u)
    _count(u, "new trials to run after the retries (default 0)")

    t = ss.add_parser("status", help="trial counts, best trial, per-variant summary")
    _where(t)
    t.add_argument("--json", action="store_true", help="print as JSON")

    a = ss.add_parser("analyze", help="fANOVA, marginals, variant comparison: report.md + PNGs")
    _where(a)
    a.add_argument("--out", metavar="DIR", help="output folder (default: DIR/analysis)")
    a.add_argument("--trees", type=int, default=64, help="trees of the random forest")

    d = ss.add_parser(
        "dashboard",
        help="watch the study in optuna-dashboard on 127.0.0.1 (Ctrl-C stops it)",
        description="Serve optuna-dashboard on the study's storage at 127.0.0.1 and print the "
        "address: trials with variant, hyperparameters, learning curves and values. Needs "
        'pip install "lstmlab[dashboard]".',
    )
    _where(d)
    d.add_argument(
        "--port", type=int, default=8080, help="port on 127.0.0.1 (0: a free one; default 8080)"
    )


def cmd_study(ns, extra, usage_error, overrides_of) -> int:
    from lstmlab.studies import study as S
    from lstmlab.studies.space import SpaceError, load_space
    from lstmlab.studies.storage import StorageError

    try:
        if ns.study_command == "create":
            return _create(ns, extra, overrides_of)
        if extra:
            raise usage_error(f"unrecognized argument {extra[0]!r} (see --help)")
        space = load_space(ns.space) if getattr(ns, "space", None) else None
        handle = S.open_study(ns.dir, name=ns.name, storage=ns.storage, space=space)
        if ns.study_command in ("run", "resume"):
            for flag in ("trials", "total", "workers"):
                v = getattr(ns, flag)
                if v is not None and v < 1:
                    raise usage_error(f"--{flag} must be >= 1, got {v}")
            if ns.workers > 1:
                return _spawn(ns, handle)
            if ns.study_command == "run":
                S.run_worker(handle, trials=ns.trials, total=ns.total, log=_log)
            else:
                S.resume(handle, trials=ns.trials or 0, log=_log)
            _print_status(S.status(handle))
            return 0
        if ns.study_command == "status":
            st = S.status(handle)
            print(json.dumps(st, indent=2)) if ns.json else _print_status(st)
            return 0
        if ns.study_command == "dashboard":
            from lstmlab.studies.dashboard import main as dashboard

            return dashboard(handle, ns.port, usage_error)
        if ns.study_command == "analyze":
            from lstmlab.studies.analysis import analyze

            path = analyze(handle, out=ns.out, n_trees=ns.trees, log=_log)
            print(f"wrote {path}")
            return 0
    except (S.StudyError, SpaceError) as err:
        raise usage_error(f"lstmlab study {ns.study_command}: {err}") from None
    except StorageError as err:  # at run time: after the retries (see the module docstring)
        _log(f"lstmlab study {ns.study_command}: {err}")
        return EXIT_STORAGE
    raise usage_error(f"unknown study action {ns.study_command!r}")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _create(ns, extra, overrides_of) -> int:
    from lstmlab.studies import study as S
    from lstmlab.studies.space import GREFF, load_space
    from lstmlab.training.config import load_toml, resolve

    overrides = overrides_of(ns, extra)
    overrides["task.name"] = ns.task
    cfg = resolve([S.GREFF_BASE, *(load_toml(f) for f in ns.config)], overrides)
    space = load_space(ns.space) if ns.space else GREFF
    h = S.create(ns.dir, cfg, name=ns.name, storage=ns.storage, space=space, seed=ns.search_seed)
    print(f"created study {h.name!r} in {h.where} (metric {h.metric}, {h.study.direction.name})")
    print(space.describe())
    return 0


def _spawn(ns, handle) -> int:
    """``--workers K``: K worker processes of this same command, watched until they end. A
    worker killed by a signal is named with the signal, its trial failed and queued again
    (``reap_dead_trials``); then one fresh worker runs the queued retries, and the exit code
    is ``EXIT_WORKER_DIED``."""
    from lstmlab.studies import study as S

    cmd = [sys.executable, "-m", "lstmlab", "study", ns.study_command, ns.dir]
    for flag in ("name", "storage"):
        v = getattr(ns, flag, None)
        if v is not None:
            cmd += [f"--{flag}", str(v)]
    count = [f"--{f}" for f in ("trials", "total") if getattr(ns, f) is not None]
    count = [x for f in count for x in (f, str(getattr(ns, f[2:])))]
    workers = []
    for k in range(ns.workers):
        # a resume retries the failed trials once (in the first worker); the others add trials
        if ns.study_command == "resume" and k > 0:
            if not count:
                continue
            workers.append([*cmd[:4], "run", *cmd[5:], *count])
        else:
            workers.append([*cmd, *count])
    codes, killed = _watch(handle, [subprocess.Popen(c) for c in workers])
    if killed:
        left = S.waiting(handle)
        if left:
            _log(f"lstmlab study: a fresh worker runs the {left} queued trial(s) now")
            more, _ = _watch(
                handle, [subprocess.Popen([*cmd[:4], "run", *cmd[5:], "--trials", str(left)])]
            )
            codes += more
        return EXIT_WORKER_DIED
    return max(codes, default=0)


def _watch(handle, procs) -> tuple[list[int], int]:
    """Wait for worker processes, reaping each as it ends (no zombie is left for
    ``_alive`` to mistake for a live worker). Returns their exit codes and how many were
    killed by a signal (each named on stderr, its trials failed and queued again)."""
    from lstmlab.studies import study as S

    codes: dict[int, int] = {}
    killed = 0
    try:
        while len(codes) < len(procs):
            for k, p in enumerate(procs):
                if k in codes or (rc := p.poll()) is None:
                    continue
                codes[k] = rc
                if rc < 0:
                    killed += 1
                    reaped = S.reap_dead_trials(handle, pids={p.pid})
                    what = (
                        f"; its trial {', '.join(map(str, reaped))} marked failed and queued again"
                        if reaped
                        else ""
                    )
                    _log(f"lstmlab study: worker {k + 1} (pid {p.pid}) {_cause(rc)}{what}")
                elif rc != 0:  # it printed its own error above; say which worker ended so
                    _log(f"lstmlab study: worker {k + 1} (pid {p.pid}) {_cause(rc)}")
            time.sleep(0.1)
    except KeyboardInterrupt:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        return [p.wait() for p in procs], killed
    return [codes[k] for k in range(len(procs))], killed


def _cause(rc: int) -> str:
    """How a worker ended, from its ``Popen.returncode``."""
    if rc < 0:
        try:
            return f"was killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"was killed by signal {-rc}"
    return f"exited with status {rc}"


def _print_status(st) -> None:
    states = ", ".join(f"{n} {k}" for k, n in sorted(st["states"].items())) or "no trials"
    print(f"study {st['name']} ({st['storage']}): {st['trials']} trials: {states}")
    if st["best"]:
        b = st["best"]
        params = " ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in b["params"].items()
        )
        print(f"  best: trial {b['number']}, {st['metric']} {b['value']:.5g}  {params}")
    for v, d in st["variants"].items():
        print(f"  {v:<8} {d['complete']:>4} complete, best {st['metric']} {d['best']:.5g}")
    for r in st["running"]:
        print(f"  running: trial {r['number']} on {r.get('host')} pid {r.get('pid')}")
    if st["retried"]:
        print(f"  failed and run again: trials {', '.join(map(str, st['retried']))}")
    if st["not_retried"]:
        print(
            f"  failed, not run again: trials {', '.join(map(str, st['not_retried']))} "
            "(`lstmlab study resume DIR` runs them)"
        )
