"""``lstmlab reproduce ms2011``: Martens & Sutskever (2011)'s pathological long time-lag
problems with Hessian-free optimisation and structural damping, on an LSTM and on the tanh RNN
M&S used. Every training run is an ordinary run directory under ``OUT/runs/PROBLEM/``, so the
set is resumable: finished runs are kept, unfinished ones resumed, missing ones started.

Problems (the M&S convention, ``lstmlab.tasks.longlag_ms2011``, as released): adding,
multiplication, xor, 2- and 3-bit temporal order, random permutation, noiseless memorization
(5 of 2, and 10 of 5 = "20 bits"). Each is run for every T of ``--T`` (default 50, 100, 200),
each cell of ``--cell`` and ``--seeds`` seeds, with the same HF settings for all (never tuned
per seed or per problem):

    Gauss–Newton curvature with the matching loss, structural damping μ = 1/30 (M&S), λ₀ = 1
    with Levenberg–Marquardt, CG ≤ 300 iterations with Martens' stop, CG-backtracking, Armijo,
    no preconditioner; gradient batch B_g = 1000, the next minibatch of a fixed set of 10,000
    training sequences each iteration (the released code draws new data every HF step:
    ``--rnn-setup released-data`` does so for the RNN), curvature batch B_c = B_g / 4, test on 10,000 sequences (memorization 5 of 2: its 32 patterns, B_g = 32).

The tanh RNN is set up as M&S's released code (``opt/r/demo.py``, ``opt/hf.py``, ``opt/m/rnn``)
has it (``RELEASED_RNN``; issue 24): sparse start, 15 incoming weights per unit drawn
N(0, 1/15) (a recurrent matrix of spectral radius ≈ 1), input weights × 0.25 ("a very
important line" there), no biases, a learned initial state h₀ (drawn N(0, 1/15)), a sparse
readout (15 of the hidden units, N(0, 1/15)); structural damping on the pre-activations,
¼ (1 − h²) weighted and summed over time (``structural_form = "released"``) with μ = 0.03 and
λ₀ = 0.01 · (the problem's output count: 1 for adding, multiplication, xor; 8 for temporal
order); a line search that takes the largest step 0.8^k giving any decrease (Armijo c → 0).
Until issue 24 it started U[−0.1, 0.1] (radius ≈ 0.3 at 20 units) and solved nothing; the
LSTM keeps the settings listed above (M&S's code has no LSTM). What still differs from the
released code, and why, is the table in docs/results.md (ms2011 section). ``--rnn-setup
released-data`` adds the released data regime and search (``RELEASED_DATA``): the gradient on
a new draw of the whole training-set size every HF step (10,000 as released; 2,000 with
``--small``), curvature and ρ on a tenth of it, CG-backtracking and the line search each on
another tenth, CG-backtracking as released (every 10th CG iterate and the last scored, the
lowest taken: ``backtrack_rule = "best"``), weight decay 2·10⁻⁵. What then still differs:
float32 on a GPU, and the budget.

A run is solved when fewer than 1 % of test sequences are wrong (the task's success test); the
report gives seeds solved and the median P_D to solve for each problem, T and cell, beside what
M&S's released code says of T = 200, and draws test error against P_D per problem.

``--small`` keeps M&S's T = 50, 100, 200 and several seeds but shrinks the networks (LSTM 8
cells, RNN 20 units), the data (2,000 training / 1,000 test sequences), the gradient batch
(250) and CG (≤ 100), with a P_D budget of 3·10⁶ per run: what two CPU cores allow in an hour
or two. ``--quick`` is a smoke run (T = 30, the small nets, a P_D budget of 4·10⁵): it shows
the machinery, not M&S's claims. results.md says which mode made it. ``--max-pd``,
``--max-seconds``, ``--problem``, ``--cell``, ``--T`` and ``--seeds`` cut a run set to a
machine; the report states the budget every run had.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lstmlab.reproduce import report as rep
from lstmlab.reproduce import runset
from lstmlab.reproduce.paper import Paper, ReproduceUsageError, register
from lstmlab.reproduce.runset import RunSpec

__all__ = ["PROBLEMS", "CELLS", "Scale", "FULL", "SMALL", "QUICK", "plan", "reproduce", "PAPER"]

# problem -> (task name, task options)
PROBLEMS: dict[str, tuple[str, dict[str, Any]]] = {
    "adding": ("adding", {"convention": "ms2011"}),
    "multiplication": ("multiplication", {"convention": "ms2011"}),
    "xor": ("xor", {}),
    "temporal2": ("temporal_order", {}),
    "temporal3": ("temporal_order_3bit", {}),
    "permutation": ("permutation", {}),
    "memorization5": ("memorization_5of2", {}),
    "memorization20": ("memorization_10of5", {}),
}
CELLS = ("lstm", "rnn")
RNN_INIT_SCALE = 15**-0.5  # M&S's sparse initialisation: 15 incoming weights ~ N(0, 1/15)
# λ₀ of the released code: init_damping = [1, 0.03] · num_outputs · 0.01 (its demo.py), with
# num_outputs 1 for the op problems and 8 for temporal order; the released code's permutation
# and memorization objects were not read, so those keep this project's λ₀ = 1
RNN_LAMBDA0 = {
    "adding": 0.01,
    "multiplication": 0.01,
    "xor": 0.01,
    "temporal2": 0.08,
    "temporal3": 0.08,
}
# M&S's released HF-RNN set-up beyond the initial weights (module docstring)
RELEASED_RNN: dict[str, str] = {
    "model.options.learn_h0": "true",
    "model.options.head_init": "sparse",
    "model.options.head_scale": f"{RNN_INIT_SCALE!r}",
    "optimizer.options.structural_form": "released",
    "optimizer.options.structural_weight": "0.03",
    "optimizer.options.armijo_c": "1e-12",
}

# What M&S's released HF-RNN code says of these problems (its README and its problem file's
# comments). The paper's own per-problem success counts are in no source this project could
# reach (the seed folder has no copy of the paper) and are not quoted.
MS_SAYS = {
    "xor": "harder than the rest: solved with HF at T = 100, but rarely",
    "_all": "batch 300 solves the T = 100 versions; T = 200 needs larger batches (1000)",
    "_seeds": "not every random seed succeeds (its README, which refers to the paper for "
    "failure rates)",
    "_cost": "100 tanh units, exactly 300 CG steps per HF step, training batches redrawn "
    "every step; a run can take several hours and 10,000 CG steps",
}


@dataclass(frozen=True)
class Scale:
    Ts: tuple[int, ...]
    seeds: int
    hidden: dict[str, int]  # cell -> hidden units (LSTM: memory cells, one per block)
    n_train: int
    n_test: int
    batch: int  # gradient batch B_g
    max_pd: float | None  # per-run P_D budget
    max_seconds: float | None  # per-run wall budget (a safety net; the P_D budget decides)
    max_cg: int = 300
    eval_every: int = 1


FULL = Scale(
    Ts=(50, 100, 200),
    seeds=5,
    hidden={"rnn": 100, "lstm": 32},
    n_train=10_000,
    n_test=10_000,
    batch=1000,
    max_pd=1e8,
    max_seconds=None,
)
SMALL = Scale(
    Ts=(50, 100, 200),
    seeds=3,
    hidden={"rnn": 20, "lstm": 8},
    n_train=2000,
    n_test=1000,
    batch=250,
    max_pd=3e6,
    max_seconds=None,
    max_cg=100,
    eval_every=2,
)
QUICK = dataclasses.replace(SMALL, Ts=(30,), seeds=1, max_pd=4e5, max_seconds=120.0)


# ... and its data regime and search (``--rnn-setup released-data``): every HF step on a new
# draw of the scale's whole training-set size (10,000: its 10 batches of 1,000), curvature and
# ρ on a tenth of it, CG-backtracking and the line search each on another tenth (its batches
# 0, 1 and 2), every 10th CG iterate and the last scored there and the lowest taken, weight decay
# 2·10⁻⁵
RELEASED_DATA: dict[str, str] = {
    "task.options.fresh": "true",
    "optimizer.options.curvature_batch": "0.1",
    "optimizer.options.search_batch": "0.1",
    "optimizer.options.rho_batch": "curvature",
    "optimizer.options.backtrack_rule": "best",
    "optimizer.options.weight_decay": "2e-05",
}
# the released network as it starts (initial weights, learned h₀, sparse readout) trained with
# this project's HF settings (``--rnn-setup released-net``): the best of the issue-24 ablations
RELEASED_NET = {k: RELEASED_RNN[k] for k in ("model.options.learn_h0", "model.options.head_init",
                                             "model.options.head_scale")}  # fmt: skip
RNN_SETUPS = ("released", "init", "released-data", "released-net")


def _run_name(cell: str, T: int, seed: int, rnn_setup: str = "released", units: int = 0) -> str:
    """The run's folder name. An RNN's names carry its units and its set-up ("rnn100-T50-seed0",
    "…-init"), so that a set never takes a finished run of another width or set-up for its own
    (a folder of the first issue-24 runs, named "rnn-T50-seed0", is not reused)."""
    if cell != "rnn":
        return f"{cell}-T{T}-seed{seed}"
    tail = {"init": "-init", "released-data": "-data", "released-net": "-net"}.get(rnn_setup, "")
    return f"rnn{units}-T{T}-seed{seed}{tail}"


def plan(
    scale: Scale, problems: list[str], cells: list[str], rnn_setup: str = "released"
) -> list[RunSpec]:
    """Every run, as a deterministic function of the scale and the choices (so a set resumes).

    ``rnn_setup``: "released" (``RELEASED_RNN``, the default), "init" (only the released
    initial weights: h₀ = 0, uniform readout, this project's structural damping and λ₀ — the
    set-up of the first issue-24 runs; run names end in ``-init``), "released-data"
    (``RELEASED_RNN`` and ``RELEASED_DATA``: fresh data every step, the released batch split
    and weight decay; names end in ``-data``) or "released-net" (``RELEASED_NET``: the
    released initial weights, h₀ and readout with this project's HF settings; ``-net``)."""
    if rnn_setup not in RNN_SETUPS:
        raise ValueError(f"rnn_setup must be one of {RNN_SETUPS}, got {rnn_setup!r}")
    specs = []
    # no presets: `train multiplication` means seed 000's 1997 task (sigmoid output, its
    # success rule, an LSTM gate bias); every option these runs need is set here
    for problem in problems:
        task, options = PROBLEMS[problem]
        for T in scale.Ts:
            for cell in cells:
                for seed in range(scale.seeds):
                    specs.append(
                        RunSpec(
                            problem,
                            _run_name(cell, T, seed, rnn_setup, scale.hidden.get(cell, 0)),
                            _overrides(
                                scale,
                                problem,
                                task,
                                options,
                                cell,
                                T,
                                seed,
                                rnn_setup,
                            ),
                            presets=False,
                        )
                    )
    return specs


def _overrides(
    scale, problem, task, options, cell, T, seed, rnn_setup="released"
) -> dict[str, str]:
    released, data = rnn_setup in ("released", "released-data"), rnn_setup == "released-data"
    n_train, n_test, batch = scale.n_train, scale.n_test, scale.batch
    if problem == "memorization5":  # the released code's batch of all 32 patterns
        n_train, n_test, batch = 32, 32, 32
    ov = {
        "task.name": task,
        **{f"task.options.{k}": str(v) for k, v in options.items()},
        "task.options.T": str(T),
        "task.options.n_train": str(n_train),
        "task.options.n_test": str(n_test),
        "seed": str(seed),
        "model.cell": cell,
        "model.blocks": str(scale.hidden[cell]),
        "model.cells_per_block": "1",
        "optimizer.name": "hf",
        "optimizer.batch_size": str(batch),
        "optimizer.options.curvature": "gn",
        "optimizer.options.preconditioner": "none",
        "optimizer.options.structural_weight": str(1 / 30),
        "optimizer.options.damping": "1.0",
        "optimizer.options.max_cg": str(scale.max_cg),
        "optimizer.options.curvature_batch": "0.25",
        "stop.max_epochs": str(10**6),
        "eval_every": str(scale.eval_every),
        "checkpoint_every": str(max(5, scale.eval_every)),
    }
    if cell == "lstm":
        ov.update({"model.variant": "vanilla", "model.alpha": "1.0"})
    else:  # M&S's released set-up of the tanh RNN (module docstring)
        ov.update(
            {
                "model.options.init": "sparse",
                "model.options.init_scale": f"{RNN_INIT_SCALE!r}",
                "model.options.input_scale": "0.25",
                "model.options.bias": "false",
            }
        )
        if rnn_setup == "released-net":
            ov.update(RELEASED_NET)
        if released:
            ov.update(RELEASED_RNN)
            if problem in RNN_LAMBDA0:
                ov["optimizer.options.damping"] = f"{RNN_LAMBDA0[problem]!r}"
        if data and problem == "memorization5":  # its fixed 32 patterns are every batch
            ov["optimizer.options.weight_decay"] = RELEASED_DATA["optimizer.options.weight_decay"]
            ov["optimizer.options.curvature_batch"] = str(batch)  # all 32
            ov["optimizer.options.backtrack_rule"] = RELEASED_DATA[
                "optimizer.options.backtrack_rule"
            ]
        elif data:  # the gradient on a whole new draw of n_train sequences every step
            ov.update(RELEASED_DATA)
            ov["optimizer.batch_size"] = str(n_train)
    if scale.max_pd is not None:
        ov["stop.max_pd"] = f"{scale.max_pd:g}"
    if scale.max_seconds is not None:
        ov["stop.max_seconds"] = f"{scale.max_seconds:g}"
    return ov


def reproduce(
    out: str | Path,
    *,
    quick: bool = False,
    small: bool = False,
    problems: list[str] | None = None,
    cells: list[str] | None = None,
    Ts: list[int] | None = None,
    seeds: int | None = None,
    max_pd: float | None = None,
    max_seconds: float | None = None,
    progress: str = "auto",
    dry_run: bool = False,
    report_only: bool = False,
    log: Callable[[str], None] = print,
    scale: Scale | None = None,
    rnn_setup: str = "released",
    rnn_units: int | None = None,
) -> Path | None:
    """Run (or list) the set; ``scale`` replaces FULL / QUICK outright (tests, studies)."""
    if quick and small:
        raise ReproduceUsageError("give --quick or --small, not both")
    mode = "quick" if quick else "small-network" if small else "full"
    scale = scale or (QUICK if quick else SMALL if small else FULL)
    if Ts:
        scale = dataclasses.replace(scale, Ts=tuple(Ts))
    if seeds is not None:
        scale = dataclasses.replace(scale, seeds=seeds)
    if max_pd is not None:
        scale = dataclasses.replace(scale, max_pd=float(max_pd))
    if max_seconds is not None:
        scale = dataclasses.replace(scale, max_seconds=float(max_seconds))
    if rnn_units is not None:
        scale = dataclasses.replace(scale, hidden={**scale.hidden, "rnn": int(rnn_units)})
    problems = list(problems or PROBLEMS)
    cells = list(cells or CELLS)
    out = Path(out)
    specs = plan(scale, problems, cells, rnn_setup)
    if dry_run:
        runset.dry_run(specs, out, log=log)
        return None
    missing: list[RunSpec] = []
    if report_only:
        summaries, missing = runset.collect(specs, out)
        if not summaries:
            raise ReproduceUsageError(f"--report-only: no finished run of this plan in {out}")
        log(f"# report only: {len(specs) - len(missing)} finished runs, {len(missing)} left out")
    rep.prepare_out(out)
    if not report_only:
        summaries = runset.run_all(specs, out, progress=progress, log=log)
    from lstmlab.plots import ms2011 as figs

    panels = {p: rep.curves(out, p, summaries.get(p, {})) for p in problems}
    fig = figs.error_vs_pd_figure(
        panels, out / "figures" / "error_vs_pd.png", title="HF + structural damping"
    )
    sections = [
        f"# Reproduction of Martens & Sutskever (2011), pathological problems — {mode} mode",
        "",
        scale_text(scale, problems, cells, rnn_setup),
        "",
        "## Success (fewer than 1 % of test sequences wrong)",
        "",
        success_table(summaries, scale, problems, cells),
        "",
        *(
            [
                f"Left out (not finished when this report was written): {len(missing)} of "
                f"{len(specs)} planned runs; a row counts its finished seeds only.",
                "",
            ]
            if missing
            else []
        ),
        "M&S's released code on these problems: "
        + "; ".join(f"{k if not k.startswith('_') else 'all'}: {v}" for k, v in MS_SAYS.items())
        + ".",
        "",
        "## Test error against P_D",
        "",
        f"![]({rep.rel(fig, out)})",
        "",
    ]
    return rep.write_report(out, sections)


def scale_text(
    scale: Scale, problems: list[str], cells: list[str], rnn_setup: str = "released"
) -> str:
    released = (
        "M&S's released set-up (learned h₀, sparse readout, structural damping μ = 0.03 on "
        "the pre-activations summed over time, λ₀ = 0.01 per output)"
    )
    rnn_text = {
        "released": released,
        "init": "M&S's released initial weights only, otherwise as the LSTM",
        "released-net": "M&S's released network as it starts (initial weights, learned h₀, "
        "sparse readout), trained with the LSTM's HF settings",
        "released-data": released + " and its data regime (every step a gradient on "
        f"{scale.n_train} newly drawn sequences; curvature and ρ, CG-backtracking (every 10th "
        "CG iterate scored, the lowest taken), line search each on a tenth of them, memorization 5 of 2 on its 32 patterns; weight "
        "decay 2·10⁻⁵)",
    }[rnn_setup]
    hidden = ", ".join(f"{c} {scale.hidden[c]}" for c in cells)
    budget = " or ".join(
        x
        for x in (
            f"P_D {scale.max_pd:.3g}" if scale.max_pd is not None else "",
            f"{scale.max_seconds:g} s" if scale.max_seconds is not None else "",
        )
        if x
    )
    return (
        f"Problems: {', '.join(problems)}. T: {', '.join(map(str, scale.Ts))}. Cells (hidden "
        f"units): {hidden}. Seeds: {scale.seeds}. Data: {scale.n_train} training / "
        f"{scale.n_test} test sequences, gradient batch {scale.batch}, curvature batch 1/4 of "
        f"it (memorization 5 of 2: its 32 patterns). HF: Gauss–Newton, CG ≤ {scale.max_cg}, "
        f"LM; LSTM: structural damping μ = 1/30 on the states averaged over time, λ₀ = 1; "
        f"RNN: {rnn_text}. Per-run budget: {budget or 'none'}."
    )


def success_table(
    summaries: dict[str, dict[str, dict[str, Any]]],
    scale: Scale,
    problems: list[str],
    cells: list[str],
) -> str:
    rows = []
    for problem in problems:
        runs = summaries.get(problem, {})
        for T in scale.Ts:
            for cell in cells:
                # the plan's runs of this cell and length ("lstm-T50-seed0", "rnn100-T50-seed0")
                group = [s for k, s in runs.items() if re.match(rf"{cell}\d*-T{T}-seed", k)]
                if not group:
                    continue
                solved = [s for s in group if s.get("solved")]
                final = [(s.get("final") or {}).get("frac_wrong") for s in group]
                final = [f for f in final if f is not None]
                rows.append(
                    [
                        problem,
                        T,
                        cell,
                        f"{len(solved)}/{len(group)}",
                        rep.fmt(rep.median([s["P_D"] for s in solved])),
                        rep.fmt(rep.median(final), ".3f"),
                        rep.fmt(rep.median([s["P_D"] for s in group])),
                        rep.fmt(rep.median([s["iterations"] for s in group]), ".0f"),
                    ]
                )
    return rep.md_table(
        [
            "problem",
            "T",
            "cell",
            "seeds solved",
            "median P_D to solve",
            "median final fraction wrong",
            "median P_D spent",
            "median HF iterations",
        ],
        rows,
    )


def _add_arguments(q: argparse.ArgumentParser) -> None:
    q.add_argument(
        "--problem",
        action="append",
        metavar="NAME",
        default=None,
        help="problems to run (repeatable; default all): " + ", ".join(PROBLEMS),
    )
    q.add_argument(
        "--cell",
        action="append",
        metavar="CELL",
        default=None,
        help="recurrent cells (repeatable; default both): " + ", ".join(CELLS),
    )
    q.add_argument(
        "--T",
        action="append",
        type=int,
        metavar="T",
        default=None,
        help="sequence scales (repeatable; default 50, 100, 200; --quick 30)",
    )
    q.add_argument(
        "--small",
        action="store_true",
        help="small networks (LSTM 8 cells, RNN 20 units), 2,000 training sequences, batch "
        "250, CG <= 100, P_D <= 3e6 per run, 3 seeds: the T = 50/100/200 suite on two cores",
    )
    q.add_argument(
        "--seeds", type=int, default=None, metavar="N", help="seeds per problem, T and cell"
    )
    q.add_argument(
        "--max-pd",
        type=float,
        default=None,
        metavar="P",
        help="cost budget of each run in P_D units (default 1e8; --small 3e6; --quick 4e5)",
    )
    q.add_argument(
        "--rnn-setup",
        choices=RNN_SETUPS,
        default="released",
        help="the tanh RNN as M&S's released code sets it up (default: learned h0, sparse "
        "readout, structural damping on the pre-activations summed over time, mu 0.03, "
        "lambda0 0.01); 'released-data': that and the code's data regime (every HF step a "
        "gradient on a new draw of the training-set size, curvature and rho / backtracking / "
        "line search on a tenth of it each, every 10th CG iterate scored and the lowest "
        "taken, weight decay 2e-5); 'init': only its initial "
        "weights (the first issue-24 runs); 'released-net': its initial weights, learned h0 "
        "and sparse readout with this project's HF settings (the best issue-24 ablation)",
    )
    q.add_argument(
        "--rnn-units",
        type=int,
        default=None,
        metavar="N",
        help="hidden units of the tanh RNN (default 100; --small and --quick 20)",
    )
    q.add_argument(
        "--report-only",
        action="store_true",
        help="write the table and figure from the finished runs of the plan; start and "
        "resume nothing (a set still running, or one cut short)",
    )
    q.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        metavar="S",
        help="wall-time safety net of each run (default none; --quick 120)",
    )


def _run(ns: argparse.Namespace, log: Callable[[str], None]) -> Path | None:
    for flag, values, valid in (
        ("--problem", ns.problem, PROBLEMS),
        ("--cell", ns.cell, CELLS),
    ):
        bad = [v for v in values or [] if v not in valid]
        if bad:
            raise ReproduceUsageError(f"{flag}: unknown {bad[0]!r}; valid: {', '.join(valid)}")
    if ns.T is not None and any(t < 20 for t in ns.T):
        raise ReproduceUsageError(f"--T must be >= 20 (the M&S generators), got {ns.T}")
    if ns.seeds is not None and ns.seeds < 1:
        raise ReproduceUsageError(f"--seeds must be >= 1, got {ns.seeds}")
    if ns.max_pd is not None and not ns.max_pd > 0:
        raise ReproduceUsageError(f"--max-pd must be > 0, got {ns.max_pd}")
    if ns.max_seconds is not None and not ns.max_seconds > 0:
        raise ReproduceUsageError(f"--max-seconds must be > 0, got {ns.max_seconds}")
    if ns.rnn_units is not None and ns.rnn_units < 1:
        raise ReproduceUsageError(f"--rnn-units must be >= 1, got {ns.rnn_units}")
    return reproduce(
        ns.out,
        quick=ns.quick,
        small=ns.small,
        problems=ns.problem,
        cells=ns.cell,
        Ts=ns.T,
        seeds=ns.seeds,
        max_pd=ns.max_pd,
        max_seconds=ns.max_seconds,
        progress=ns.progress,
        dry_run=ns.dry_run,
        report_only=ns.report_only,
        log=log,
        rnn_setup=ns.rnn_setup,
        rnn_units=ns.rnn_units,
    )


PAPER = register(
    Paper(
        name="ms2011",
        seed="Martens & Sutskever 2011 (Learning RNNs with Hessian-free optimization)",
        summary="M&S 2011: pathological long time-lag problems with HF, LSTM and tanh RNN",
        description="Martens & Sutskever (2011)'s pathological problems (adding, "
        "multiplication, xor, 2-/3-bit temporal order, random permutation, noiseless "
        "memorization) with Hessian-free optimisation and structural damping, on an LSTM and "
        "on a tanh RNN, several seeds each: a success table and error-against-P_D figures.",
        add_arguments=_add_arguments,
        run=_run,
    )
)
