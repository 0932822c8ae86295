"""``lstmlab reproduce greff2017``: seed 002 (Greff et al., LSTM: A Search Space Odyssey) at the
scale this machine allows.

One study per task (``lstmlab.studies``), each in ``OUT/<task>/``: vanilla LSTM and the eight
variants, hyperparameters from Greff's ranges, ``--trials`` random trials per variant (so
9 × N trials per task; Greff ran 200 per variant and dataset). Greff's training: Nesterov
momentum with the learning rate rescaled by (1 − μ), Gaussian input noise, at most 150 epochs,
early stopping after 15 epochs without improvement on the validation split. Tasks:

    music             polyphonic music, NLL per step (music21's Bach chorales; --jsb FILE for
                      the JSB Chorales pickle/JSON) — Greff's JSB task, unidirectional
    japanese_vowels   speaker classification, test error (a stand-in for nothing in Greff)
    framewise         synthetic per-frame classification, bidirectional (Greff's TIMIT type)

Then ``lstmlab study analyze`` on each: fANOVA, marginals, variant t-tests and box plots, and
``OUT/results.md`` gathers them. Resumable: the studies keep their trials, and a rerun adds
only the trials still missing (failed ones are retried from their checkpoints).

Learning rate: Greff's loss is summed over a sequence's time steps, ours is divided by the
sequence's length (seed 000 Sec. 3.3), so a step of Greff's size needs a rate ~T times larger:
the range here is log-uniform [1e-4, 1] instead of [1e-6, 1e-2].

``--quick``: 60 chorales, 200 framewise sequences, hidden sizes log-uniform [4, 32], 10 epochs
with patience 5; numbers show the machinery and trends, not Greff's.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lstmlab.reproduce import report as rep
from lstmlab.reproduce.paper import Paper, ReproduceUsageError, register

__all__ = ["PAPER", "TASKS", "plan", "reproduce"]

TASKS = ("music", "japanese_vowels", "framewise")


def plan(task: str, *, quick: bool, jsb: str | None = None) -> tuple[dict[str, Any], Any]:
    """(run-config overrides on top of Greff's base, search space) for one task's study."""
    from lstmlab.studies.space import GREFF, from_dict

    # one sequence per update, as Greff's online training
    over: dict[str, Any] = {"task.name": task, "optimizer.batch_size": 1}
    if task == "music":
        over["task.options.path"] = jsb
        if quick and jsb is None:
            over["task.options.max_pieces"] = 60
    elif task == "japanese_vowels":
        over["task.options.n_valid"] = 30
    elif task == "framewise":
        over["task.options.n_train"] = 200 if quick else 1000
    over = {k: v for k, v in over.items() if v is not None}
    d = GREFF.to_dict()
    # Greff's loss sums over a sequence's steps; ours divides by the length (docs/design.md),
    # so the same step needs a learning rate T times larger (T ≈ 30-60 here): the range is
    # Greff's times 100
    d["params"]["lr"] = {"type": "log", "low": 1e-4, "high": 1.0}
    if quick:
        over["stop.max_epochs"] = 10
        over["stop.patience_epochs"] = 5
        d["params"]["hidden_size"] = {"type": "int_log", "low": 4, "high": 32}
    return over, from_dict(d)


def reproduce(
    out: str | Path,
    *,
    trials: int,
    quick: bool,
    tasks: list[str],
    jsb: str | None = None,
    dry_run: bool = False,
    log: Callable[[str], None] = print,
    overrides: dict[str, Any] | None = None,
) -> Path | None:
    """Run (or list, ``dry_run``) the studies and write ``OUT/results.md``; ``overrides`` are
    extra run-config values for every trial (tests shrink the tasks with them)."""
    from lstmlab.studies import study as S
    from lstmlab.studies.analysis import analyze
    from lstmlab.training.config import dumps_toml, resolve

    out = Path(out)
    total = trials * 9
    sections = [
        "# Greff et al. 2017 (seed 002) at this machine's scale",
        "",
        f"Mode: {'--quick (a smoke run; not Greff’s budgets)' if quick else 'full'}; "
        f"{trials} random trials per variant ({total} per task; Greff: 200 per variant).",
        "",
    ]
    for task in tasks:
        over, space = plan(task, quick=quick, jsb=jsb)
        cfg = resolve([S.GREFF_BASE], {**over, **(overrides or {})})
        root = out / task
        if dry_run:
            log(f"## {task}: study {root}, {total} trials\n{space.describe()}")
            log(dumps_toml(cfg))
            continue
        if (root / "study.toml").exists():
            handle = S.open_study(root, space=space)
        else:
            handle = S.create(root, cfg, space=space, seed=0)
        S.resume(handle, log=log)  # failed or dead trials first
        S.run_worker(handle, total=total, log=log)
        report = analyze(handle, log=log)
        sections += [
            f"## {task}",
            "",
            f"Study `{root}` ({handle.metric}); full report: "
            f"[{rep.rel(report, out)}]({rep.rel(report, out)}).",
            "",
            report.read_text().split("\n", 2)[2],
        ]
    if dry_run:
        log(f"# dry run: {len(tasks)} studies of {total} trials each; nothing started")
        return None
    return rep.write_report(out, [_relink(sections, tasks)])


def _relink(sections: list[str], tasks: list[str]) -> str:
    """The per-task report sections with their figure links made relative to OUT."""
    out, current = [], None
    for s in sections:
        if s.startswith("## ") and s[3:] in tasks:
            current = s[3:]
        if current:
            for name in ("variants.png", "marginals.png", "interaction_"):
                s = s.replace(f"]({name}", f"]({current}/analysis/{name}")
        out.append(s)
    return "\n".join(out)


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--trials",
        type=int,
        default=None,
        metavar="N",
        help="random trials per variant and task (default 20, --quick 2)",
    )
    p.add_argument(
        "--task",
        action="append",
        default=None,
        metavar="TASK",
        help=f"run only these tasks (repeatable): {', '.join(TASKS)}",
    )
    p.add_argument("--jsb", metavar="FILE", help="JSB Chorales pickle/JSON (default: music21)")


def _run(ns: argparse.Namespace, log: Callable[[str], None]) -> Path | None:
    trials = ns.trials if ns.trials is not None else (2 if ns.quick else 20)
    if trials < 1:
        raise ReproduceUsageError(f"--trials must be >= 1, got {trials}")
    tasks = ns.task or list(TASKS)
    bad = [t for t in tasks if t not in TASKS]
    if bad:
        raise ReproduceUsageError(f"unknown task {bad[0]!r}; valid: {', '.join(TASKS)}")
    if ns.jsb is not None and not Path(ns.jsb).is_file():
        raise ReproduceUsageError(f"--jsb: no such file {ns.jsb}")
    from lstmlab.studies import StudyError

    try:
        return reproduce(
            ns.out,
            trials=trials,
            quick=ns.quick,
            tasks=tasks,
            jsb=ns.jsb,
            dry_run=ns.dry_run,
            log=log,
        )
    except StudyError as err:
        raise ReproduceUsageError(str(err)) from None


PAPER = register(
    Paper(
        name="greff2017",
        seed="002 (Greff et al., LSTM: A Search Space Odyssey)",
        summary="seed 002: vanilla LSTM and eight variants, random search, fANOVA",
        description="Seed 002's study (Greff et al.): random search over vanilla LSTM and "
        "the eight variants on music, JapaneseVowels and a framewise task, then fANOVA, "
        "marginals and variant t-tests, at the scale this machine allows.",
        add_arguments=_add_arguments,
        run=_run,
    )
)
