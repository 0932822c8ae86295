"""``lstmlab reproduce lyu2015``: seed 000's experiments (Lyu & Zhu, Sec. 4–5) at the scale this
machine allows. Every training run is an ordinary run directory under ``OUT/runs/``, so the whole
set is resumable: finished runs are kept, unfinished ones resumed, missing ones started.

Parts (``--only``):
    table      success rate over ``--seeds`` seeds and median wall time / P_D to solve for
               L-BFGS, nonlinear CG, Hessian-free and momentum GD (batch 100, lr 0.1, μ 0.9)
    alpha      Fig. 2(b): L-BFGS convergence for several gate sharpnesses α
    sigmoid    Fig. 2(a): σ_α and its derivative for several α (no training)
    minibatch  Fig. 3(a): SGD (batch 1) against minibatch GD of several sizes, lr 0.1, μ 0.9
    timing     Fig. 3(b): one gradient, matrix-based batch vs a per-sample loop (T = 10)
    optimizers Fig. 3(c): GD vs L-BFGS vs CG vs HF, from the table's first seed
    plateau    what the table's failing runs are doing (gates, what the cells hold, where the
               errors are, curvature spectra; ``reproduce/plateau.py``), each beside the first
               solving run of its row; reads finished runs only, starts none

The table's rows (``--optimizer``, repeatable) are seed 000's four optimizers by default, and
on request the Hessian-free variants that test seed 000's closing conjecture (Sec. 6): HF with
Gauss–Newton products, HF with gate-aware damping (one λ per gate kind, per memory block, or
driven by the gates' saturation), and HF with α raised over epochs (``METHODS``).
``--perturbations K`` runs every seed K times: as it is, and with its initial weights
perturbed by 1e-12 (K − 1 noise draws), so that the table reports how much of each count is
round-off — line searches and finite differences turn the last digits into another path.

``--quick`` shrinks the problem (T = 50, 2,000 training / 1,000 test sequences), the budgets
and the seed count so that everything runs in minutes on two cores; its numbers show the
machinery and the trends, not seed 000's claims (results.md says which mode made it).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lstmlab.reproduce import report as rep
from lstmlab.reproduce import runset
from lstmlab.reproduce.paper import Paper, ReproduceUsageError, register
from lstmlab.reproduce.runset import RunSpec
from lstmlab.training.config import resolve

__all__ = ["PARTS", "PAPER", "reproduce", "plan", "specs"]

PARTS = ("table", "alpha", "sigmoid", "minibatch", "timing", "optimizers", "plateau")
TABLE_OPTIMIZERS = ("lbfgs", "cg", "hf", "momentum")  # seed 000's, the default rows
_HF_GN = {"optimizer.name": "hf", "optimizer.options.curvature": "gn"}
# seed 000's released script: minFunc called 20 times per minibatch, at most 50 function
# evaluations a call (maxIter 1e5), LS_init = 2, 10 pairs, and minFunc's tolerances
_MINFUNC = {
    "optimizer.iterations_per_batch": "100000",
    "optimizer.options.calls": "20",
    "optimizer.options.max_evals": "50",
    "optimizer.options.step_init": "quadratic",
    "optimizer.options.tolerance_grad": "1e-5",
    "optimizer.options.tolerance_change": "1e-9",
    "optimizer.options.tolerance_step": "1e-9",
}
# every row the table can have: name -> the run's overrides (the optimizer presets apply)
METHODS: dict[str, dict[str, str]] = {
    **{name: {"optimizer.name": name} for name in TABLE_OPTIMIZERS},
    # the preset with minFunc's first trial step at every minibatch's fresh call
    "lbfgs-call-step": {"optimizer.name": "lbfgs", "optimizer.options.first_step": "call"},
    "lbfgs-minfunc": {
        "optimizer.name": "lbfgs",
        "optimizer.history": "10",
        "optimizer.options.first_step": "call",
        **_MINFUNC,
    },
    "cg-minfunc": {"optimizer.name": "cg", **_MINFUNC},
    "hf-gn": _HF_GN,
    "hf-gate": {**_HF_GN, "optimizer.options.block_damping": "gate"},
    "hf-memory-block": {**_HF_GN, "optimizer.options.block_damping": "memory-block"},
    "hf-saturation": {
        **_HF_GN,
        "optimizer.options.block_damping": "gate",
        "optimizer.options.block_rule": "saturation",
    },
    # seed 000 Sec. 6: "gradually increase α by training epochs" (1 → 3.75 over 10 epochs, the
    # previous parameters carried on; an HF epoch is 10 iterations of B_g = 1,000)
    "hf-alpha": {**_HF_GN, "model.alpha": '{type="linear", start=1, end=3.75, steps=10}'},
}
PERTURBATION = 1e-12  # the initial weights' perturbation of --perturbations
ALPHAS = (1.0, 2.0, 3.75, 5.0)
MINIBATCHES = (1, 10, 100, 1000)
NAMES = {
    "lbfgs": "L-BFGS",
    "cg": "nonlinear CG",
    "hf": "Hessian-free",
    "momentum": "momentum GD",
    "lbfgs-call-step": "L-BFGS preset, minFunc's first trial step at every call",
    "lbfgs-minfunc": "L-BFGS as the released script runs minFunc (20 calls ≤ 50 evaluations)",
    "cg-minfunc": "CG as the released script runs minFunc (20 calls ≤ 50 evaluations)",
    "hf-gn": "HF, Gauss–Newton",
    "hf-gate": "HF-GN, λ per gate (LM)",
    "hf-memory-block": "HF-GN, λ per gate and memory block (LM)",
    "hf-saturation": "HF-GN, λ by gate saturation",
    "hf-alpha": "HF-GN, α raised 1 → 3.75 over 10 epochs",
}


@dataclass(frozen=True)
class Scale:
    task: dict[str, Any]  # task option overrides
    max_seconds: float  # per-run wall budget
    max_epochs: int
    max_seeds: int | None  # cap on --seeds
    samples_budget: int  # minibatch part: training sequences per run
    eval_samples: int  # minibatch part: evaluate every this many sequences
    max_pd: float | None = None  # per-run cost budget (P_D); None: none


FULL = Scale(
    task={},
    max_seconds=3600.0,
    max_epochs=100,
    max_seeds=None,
    samples_budget=500_000,
    eval_samples=10_000,
)
QUICK = Scale(
    task={"T": 50, "n_train": 2000, "n_test": 1000},
    max_seconds=60.0,
    max_epochs=30,
    max_seeds=2,
    samples_budget=20_000,
    eval_samples=1000,
)


def plan(
    scale: Scale,
    seeds: int,
    parts: list[str],
    optimizers: list[str] | None = None,
    perturbations: int = 1,
) -> dict[str, dict[str, dict[str, str]]]:
    """part -> run name -> flag overrides (the runs the parts need); ``optimizers``: the
    table's rows (``METHODS``; default seed 000's four; Fig. 3(c) needs each one's first
    seed); ``perturbations``: runs per seed, the first unperturbed (``{row}-seed{s}``), the
    others ``{row}-seed{s}-p{k}`` with initial weights perturbed by 1e-12."""
    base = {f"task.options.{k}": str(v) for k, v in scale.task.items()}
    base["stop.max_seconds"] = str(scale.max_seconds)
    if scale.max_pd is not None:
        base["stop.max_pd"] = f"{scale.max_pd:g}"
    base["stop.max_epochs"] = str(scale.max_epochs)
    n_seeds = min(seeds, scale.max_seeds or seeds)
    out: dict[str, dict[str, dict[str, str]]] = {}
    if "table" in parts or "optimizers" in parts:
        out["table"] = {}
        for opt in optimizers or TABLE_OPTIMIZERS:
            for s in range(n_seeds if "table" in parts else 1):
                for k in range(perturbations if "table" in parts else 1):
                    run = {**base, **METHODS[opt], "seed": str(s)}
                    if k:
                        run["model.perturbation"] = f"{PERTURBATION:g}"
                        run["model.perturbation_seed"] = str(k)
                    out["table"][f"{opt}-seed{s}" + (f"-p{k}" if k else "")] = run
    if "alpha" in parts:
        out["alpha"] = {f"alpha{a:g}": {**base, "model.alpha": str(a)} for a in ALPHAS}
    if "minibatch" in parts:
        out["minibatch"] = {
            f"batch{b}": {
                **base,
                "optimizer.name": "momentum",
                "optimizer.batch_size": str(b),
                "stop.max_samples": str(scale.samples_budget),
                "stop.max_epochs": str(10**6),
                "eval_every": str(max(1, scale.eval_samples // b)),
                "checkpoint_every": str(max(1, scale.eval_samples // b)),
            }
            for b in MINIBATCHES
        }
    return out


def specs(todo: dict[str, dict[str, dict[str, str]]]) -> list[RunSpec]:
    """The plan as run specs of the multiplication task."""
    return [
        RunSpec(part, name, {"task.name": "multiplication", **ov})
        for part, named in todo.items()
        for name, ov in named.items()
    ]


def reproduce(
    out: str | Path,
    *,
    seeds: int = 15,
    quick: bool = False,
    parts: list[str] | None = None,
    progress: str = "auto",
    dry_run: bool = False,
    optimizers: list[str] | None = None,
    max_seconds: float | None = None,
    max_pd: float | None = None,
    perturbations: int = 1,
    plateau_samples: int = 300,
    log: Callable[[str], None] = print,
) -> Path | None:
    parts = list(parts or PARTS)
    scale = QUICK if quick else FULL
    if max_seconds is not None:
        scale = dataclasses.replace(scale, max_seconds=float(max_seconds))
    if max_pd is not None:
        scale = dataclasses.replace(scale, max_pd=float(max_pd))
    out = Path(out)
    todo = specs(plan(scale, seeds, parts, optimizers, perturbations))
    if dry_run:
        runset.dry_run(todo, out, log=log)
        return None
    rep.prepare_out(out)
    summaries = runset.run_all(todo, out, progress=progress, log=log)

    from lstmlab.plots import lyu2015 as figs

    sections = [
        f"# Reproduction of seed 000 (Lyu & Zhu) — {'quick' if quick else 'full'} mode",
        "",
        _scale_text(scale, seeds),
        "",
    ]
    if "table" in parts:
        sections += [
            "## Success rate (seed 000 Sec. 5.3)",
            "",
            table(summaries["table"]),
            "",
            environment(),
            "",
        ]
    if "sigmoid" in parts:
        f = figs.sigmoid_figure(out / "figures" / "fig2a_sigmoid.png", ALPHAS)
        sections += ["## Fig. 2(a): gate sigmoid and derivative", "", f"![]({rep.rel(f, out)})", ""]
    if "alpha" in parts:
        f = figs.curves_figure(
            _curves(out, "alpha", summaries["alpha"], lambda k: f"α = {k.removeprefix('alpha')}"),
            out / "figures" / "fig2b_alpha.png",
            x="iteration",
            title="Fig. 2(b): L-BFGS, several gate sharpnesses α",
        )
        sections += [
            "## Fig. 2(b): convergence for several α",
            "",
            f"![]({rep.rel(f, out)})",
            "",
            _final_table(summaries["alpha"]),
            "",
        ]
    if "minibatch" in parts:
        f = figs.curves_figure(
            _curves(out, "minibatch", summaries["minibatch"], _batch_label),
            out / "figures" / "fig3a_minibatch.png",
            x="samples",
            title="Fig. 3(a): SGD vs minibatch GD (lr 0.1, momentum 0.9)",
        )
        sections += [
            "## Fig. 3(a): SGD vs minibatch sizes",
            "",
            f"![]({rep.rel(f, out)})",
            "",
            _final_table(summaries["minibatch"]),
            "",
        ]
    if "timing" in parts:
        rows = batch_vs_loop_timing(quick=quick)
        f = figs.timing_figure(rows, out / "figures" / "fig3b_timing.png")
        sections += [
            "## Fig. 3(b): matrix-based batch vs per-sample loop (T = 10)",
            "",
            f"![]({rep.rel(f, out)})",
            "",
            _timing_table(rows),
            "",
        ]
    if "optimizers" in parts:
        first = {k: v for k, v in summaries["table"].items() if k.endswith("-seed0")}
        curves = _curves(out, "table", first, label=lambda k: NAMES[k.removesuffix("-seed0")])
        sections += ["## Fig. 3(c): GD vs L-BFGS vs CG vs HF", ""]
        for x in ("P_D", "wall"):
            f = figs.curves_figure(
                curves,
                out / "figures" / f"fig3c_optimizers_{x}.png",
                x=x,
                title="Fig. 3(c): GD vs L-BFGS vs CG vs HF (seed 0)",
            )
            sections += [f"![]({rep.rel(f, out)})"]
        sections += [""]
    if "plateau" in parts:
        sections += plateau_section(out, plateau_samples, log)
    return rep.write_report(out, sections)


def plateau_runs(out: Path) -> list[Path]:
    """The finished table runs the plateau part reads: every failing one, and for each row
    with a failure its first solving run (by seed) to compare with."""
    import json

    finished = {}
    for summary in sorted((Path(out) / "runs" / "table").glob("*/summary.json")):
        try:
            finished[summary.parent] = bool(json.loads(summary.read_text()).get("solved"))
        except (OSError, ValueError):
            continue

    def key(d: Path) -> tuple[str, int]:
        row, _, seed = d.name.partition("-seed")
        return row, int(seed) if seed.isdigit() else 10**9

    picked = []
    for row in sorted({key(d)[0] for d in finished}):
        runs = sorted((d for d in finished if key(d)[0] == row), key=key)
        failing = [d for d in runs if not finished[d]]
        solving = [d for d in runs if finished[d]]
        if failing:
            picked += solving[:1] + failing
    return picked


def plateau_section(out: Path, samples: int, log: Callable[[str], None]) -> list[str]:
    """The report's plateau section: a table of what each run does and one figure per run."""
    from lstmlab.plots.plateau import plateau_figure
    from lstmlab.reproduce import plateau

    runs = plateau_runs(out)
    lines = ["## What the failing runs are doing (issue 24)", ""]
    if not runs:
        return lines + ["No finished failing run in `runs/table/` to read.", ""]
    lines += [
        "| run | solved | test MAE | wrong | wrong, longest lags | wrong, other lags "
        "| most saturated gate | cells hold (R² ≥ 0.5) | GN rank | GN condition "
        "| Hessian: min eigenvalue, negatives |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    figures = []
    for k, d in enumerate(runs, 1):
        log(f"[plateau] {k}/{len(runs)}: {d.name}")
        p = plateau.analyze(d, curvature_samples=samples)
        v = p.verdicts()
        hess = (
            f"{v['hessian_min']:.3g}, {v['hessian_negative']}"
            if v["hessian_min"] is not None
            else "–"
        )
        lines.append(
            f"| {d.name} | {'yes' if p.solved else 'no'} | {p.mae:.4f} | {100 * p.wrong:.1f} % "
            f"| {100 * v['wrong_long_lag']:.1f} % | {100 * v['wrong_short_lag']:.1f} % "
            f"| {v['max_saturation']:.2f} | {v['cells_hold']} | {v['gn_rank'] or '–'} "
            f"| {rep.fmt(v['gn_condition'])} | {hess} |"
        )
        f = plateau_figure(p, Path(out) / "figures" / f"plateau_{d.name}.png")
        figures += [f"![{d.name}]({rep.rel(f, out)})", ""]
    lines += [
        "",
        "Longest lags: the quarter of test sequences with the most steps between X2 and the "
        f"end. Curvature: dense matrices on {samples} training sequences at the run's end.",
        "",
        *figures,
    ]
    return lines


def _batch_label(name: str) -> str:
    b = name.removeprefix("batch")
    return "SGD (batch 1)" if b == "1" else f"minibatch {b}"


def _curves(out: Path, part: str, summaries: dict[str, Any], label=lambda k: k):
    return rep.curves(out, part, summaries, label)


def _scale_text(scale: Scale, seeds: int) -> str:
    task = (
        ", ".join(f"{k}={v}" for k, v in scale.task.items())
        or "T=100, 10,000 train / 3,000 test (seed 000's)"
    )
    n = min(seeds, scale.max_seeds or seeds)
    return (
        f"Task: 1997 multiplication, {task}. Per-run budget: {scale.max_epochs} epochs or "
        f"{scale.max_seconds:g} s"
        + (f" or P_D {scale.max_pd:.3g}" if scale.max_pd is not None else "")
        + f". Seeds per optimizer: {n}."
    )


def _row_runs(summaries: dict[str, dict[str, Any]], opt: str) -> dict[int, dict[int, Any]]:
    """perturbation k -> seed -> summary of table row ``opt`` (names ``{opt}-seed{s}[-p{k}]``)."""
    out: dict[int, dict[int, Any]] = {}
    for name, summary in summaries.items():
        if not name.startswith(f"{opt}-seed"):
            continue
        seed, _, k = name.removeprefix(f"{opt}-seed").partition("-p")
        if seed.isdigit() and (k == "" or k.isdigit()):
            out.setdefault(int(k or 0), {})[int(seed)] = summary
    return out


def table(summaries: dict[str, dict[str, Any]]) -> str:
    """Solved / seeds, medians to solve and the failures' final MAE per row; with
    perturbations also the count under each one and the seeds solved under all of them."""
    claims = {"lbfgs": "15/15", "cg": "15/15", "hf": "4/15", "momentum": "–"}
    rows = [
        "| optimizer | solved | seed 000 claims | solved under each perturbation "
        "| solved under all | median wall to solve (s) | median P_D to solve "
        "| median sequences drawn | median final test MAE | median final MAE of failures "
        "| failed seeds |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for opt in METHODS:
        runs = _row_runs(summaries, opt)
        if 0 not in runs:
            continue
        group = list(runs[0].values())
        solved = [s for s in group if s["solved"]]
        final = [s["final"].get("mae") for s in group if s.get("final")]
        failed = [s for s in group if not s["solved"]]
        fail_mae = [s["final"].get("mae") for s in failed if s.get("final")]
        per = [sum(bool(s["solved"]) for s in runs[k].values()) for k in sorted(runs)]
        seeds = sorted(runs[0])
        robust = [
            sd for sd in seeds if all(runs[k].get(sd, {}).get("solved") for k in sorted(runs))
        ]
        spread = (
            " / ".join(str(n) for n in per) + f" (range {min(per)}–{max(per)})"
            if len(per) > 1
            else "–"
        )
        rows.append(
            f"| {NAMES[opt]} | {len(solved)}/{len(group)} | {claims.get(opt, '–')} | {spread} "
            f"| {f'{len(robust)}/{len(seeds)}' if len(per) > 1 else '–'} "
            f"| {rep.fmt(rep.median([s['wall_time'] for s in solved]))} "
            f"| {rep.fmt(rep.median([s['P_D'] for s in solved]))} "
            f"| {rep.fmt(rep.median([s['samples'] for s in solved]))} "
            f"| {rep.fmt(rep.median([f for f in final if f is not None]), '.4f')} "
            f"| {rep.fmt(rep.median([f for f in fail_mae if f is not None]), '.4f')} "
            f"| {', '.join(str(sd) for sd in seeds if not runs[0][sd]['solved']) or '–'} |"
        )
    rows += [
        "",
        "1997 LSTM (H&S, online RTRL): 482,000 sequences (n_seq = 140) and 1,273,000 "
        "(n_seq = 13) to solve multiplication at T = 100.",
    ]
    return "\n".join(rows)


def environment() -> str:
    """The machine a table ran on: CPU, BLAS, torch, threads (round-off depends on all four)."""
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    config = torch.__config__.show()
    blas = next(
        (ln.split("=", 1)[1].strip() for ln in config.splitlines() if "BLAS_INFO" in ln), "?"
    )
    return (
        f"Ran on: {cpu}; torch {torch.__version__} (BLAS: {blas}, CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} thread(s) in "
        "this process (each run sets its own with --threads)."
    )


def _final_table(summaries: dict[str, dict[str, Any]]) -> str:
    rows = [
        "| run | solved | stop | iterations | sequences drawn | P_D | wall (s) | final MAE |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k, s in summaries.items():
        rows.append(
            f"| {k} | {'yes' if s['solved'] else 'no'} | {s['stop_reason']} "
            f"| {s['iterations']} | {s['samples']} | {rep.fmt(s['P_D'])} "
            f"| {rep.fmt(s['wall_time'])} | {rep.fmt((s['final'] or {}).get('mae'), '.4f')} |"
        )
    return "\n".join(rows)


def _timing_table(rows: list[dict[str, float]]) -> str:
    out = [
        "| batch | matrix-based (ms) | per-sample loop (ms) | loop / batch |",
        "|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['batch']} | {r['batch_ms']:.2f} | {r['loop_ms']:.2f} "
            f"| {r['loop_ms'] / r['batch_ms']:.1f}× |"
        )
    return "\n".join(out)


def batch_vs_loop_timing(quick: bool = False) -> list[dict[str, float]]:
    """Seconds for one mean gradient over a batch: one matrix-based pass (the ``bptt`` engine)
    against a loop over the batch's samples one at a time (seed 000 Fig. 3(b): T = 10)."""
    import torch

    from lstmlab.training import build

    cfg = resolve(
        overrides={
            "task.name": "multiplication",
            "task.options.T": "20",
            "task.options.n_train": "300",
            "task.options.n_test": "10",
        }
    )
    built = build.build_all(cfg)
    model, data = built.model, built.train_data
    # seed 000 used samples of 10 time steps; the 1997 generator needs T >= 20, so cut to 10
    full = data.batch(None)
    # one thread: the comparison is vectorization, not threading (and a shared machine's
    # other load makes multi-threaded timings of small ops erratic)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _timing_rows(model, full, quick)
    finally:
        torch.set_num_threads(threads)


def _timing_rows(model, full, quick: bool) -> list[dict[str, float]]:
    import torch

    from lstmlab.objective import Objective

    rows = []
    for b in (1, 10, 30, 100) if quick else (1, 10, 30, 100, 300):
        batch = full.index(slice(0, b))
        batch = type(batch)(batch.inputs[:, :10], batch.targets, batch.lengths.clamp(max=10))

        def one_pass(batch=batch):
            Objective(model, batch).loss_and_grad()

        def loop(batch=batch, b=b):
            for i in range(b):
                Objective(model, batch.index(slice(i, i + 1))).loss_and_grad()

        times = {
            name: _best_time(fn, 0.1 if quick else 0.3) * 1000
            for name, fn in (("batch", one_pass), ("loop", loop))
        }
        rows.append(
            {
                "batch": b,
                "batch_ms": times["batch"],
                "loop_ms": times["loop"],
                "threads": torch.get_num_threads(),
            }
        )
    return rows


def _best_time(fn, budget: float) -> float:
    """Least seconds per call over 3 rounds, each repeating ``fn`` for about ``budget`` s."""
    fn()  # warm-up
    best = float("inf")
    for _ in range(3):
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= budget:
                break
        best = min(best, elapsed / n)
    return best


# --------------------------------------------------------------------------------------------
# The command: `lstmlab reproduce lyu2015`


def _add_arguments(q: argparse.ArgumentParser) -> None:
    q.add_argument(
        "--seeds",
        type=int,
        default=15,
        metavar="N",
        help="seeds per optimizer for the success-rate table (seed 000 used 15)",
    )
    q.add_argument(
        "--only",
        action="append",
        metavar="PART",
        default=None,
        help="run only these parts (repeatable): " + ", ".join(PARTS),
    )
    q.add_argument(
        "--optimizer",
        action="append",
        metavar="NAME",
        default=None,
        help="the success-rate table's rows to run (repeatable; default seed 000's "
        f"{', '.join(TABLE_OPTIMIZERS)}): " + ", ".join(METHODS),
    )
    q.add_argument(
        "--perturbations",
        type=int,
        default=1,
        metavar="K",
        help="runs per seed in the table: the seed as it is, and K - 1 times with its initial "
        f"weights perturbed by {PERTURBATION:g} (round-off sensitivity; default 1: none)",
    )
    q.add_argument(
        "--plateau-samples",
        type=int,
        default=300,
        metavar="N",
        help="the plateau part's dense curvature matrices use N training sequences "
        "(default 300; 0 skips the spectra)",
    )
    q.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        metavar="S",
        help="wall-time budget of each training run (default: 3600, --quick 60); a run "
        "already finished under another budget is kept",
    )
    q.add_argument(
        "--max-pd",
        type=float,
        default=None,
        metavar="P",
        help="cost budget of each training run in P_D units (seed 000's count of sequence "
        "presentations; default: none). Unlike wall time it does not depend on the load",
    )


def _run(ns: argparse.Namespace, log: Callable[[str], None]) -> Path | None:
    if ns.seeds < 1:
        raise ReproduceUsageError(f"--seeds must be >= 1, got {ns.seeds}")
    parts = ns.only or list(PARTS)
    bad = [p for p in parts if p not in PARTS]
    if bad:
        raise ReproduceUsageError(f"unknown part {bad[0]!r}; valid: {', '.join(PARTS)}")
    optimizers = ns.optimizer or list(TABLE_OPTIMIZERS)
    bad = [o for o in optimizers if o not in METHODS]
    if bad:
        raise ReproduceUsageError(f"unknown optimizer {bad[0]!r}; valid: {', '.join(METHODS)}")
    if ns.plateau_samples < 0:
        raise ReproduceUsageError(f"--plateau-samples must be >= 0, got {ns.plateau_samples}")
    if ns.perturbations < 1:
        raise ReproduceUsageError(f"--perturbations must be >= 1, got {ns.perturbations}")
    if ns.max_seconds is not None and not ns.max_seconds > 0:
        raise ReproduceUsageError(f"--max-seconds must be > 0, got {ns.max_seconds}")
    if ns.max_pd is not None and not ns.max_pd > 0:
        raise ReproduceUsageError(f"--max-pd must be > 0, got {ns.max_pd}")
    return reproduce(
        ns.out,
        seeds=ns.seeds,
        quick=ns.quick,
        parts=parts,
        optimizers=optimizers,
        max_seconds=ns.max_seconds,
        max_pd=ns.max_pd,
        perturbations=ns.perturbations,
        plateau_samples=ns.plateau_samples,
        progress=ns.progress,
        dry_run=ns.dry_run,
        log=log,
    )


PAPER = register(
    Paper(
        name="lyu2015",
        seed="000 (Lyu & Zhu, Revisit LSTM: an optimization perspective)",
        summary="seed 000: multiplication, L-BFGS / CG / HF / momentum, Fig. 2-3",
        description="Seed 000's experiments (Lyu & Zhu): the success-rate table over seeds, "
        "Fig. 2(a)/(b), 3(a)/(b)/(c), at the scale this machine allows.",
        add_arguments=_add_arguments,
        run=_run,
    )
)
