"""A real-data preset against its alternatives: short runs of ``lstmlab train TASK`` (issue 22).

    python benchmarks/bench_presets.py --task music --steps 300 --every 75
    python benchmarks/bench_presets.py --task text --steps 300 --every 100 \\
        --set optimizer.batch_size=20 --set task.options.chunk=35 \\
        --set "task.options.split_chars=[1000000, 20000, 20000]"
    python benchmarks/bench_presets.py --task music --alt model.options.gate_bias.f=1 \\
        --alt optimizer.lr=0.003

Each row is one run of the task's preset with the row's overrides (``--alt KEY=V,KEY=V``,
repeatable; the first row is the preset itself) and the common ``--set KEY=VALUE`` overrides,
for ``--steps`` optimizer steps, evaluated on the valid split every ``--every`` steps. Printed:
a markdown table of the valid metric at each evaluation and the best of them (the network the
run would keep and test), with each row's wall time. Without ``--alt`` the rows are the
defaults a preset chooses: the cell (vanilla with peepholes and U(±0.1), or NP with torch's
initialisation), the initialisation alone, a forget-gate bias of +1, Adam's step halved and
doubled, and for characters the embedding in place of the one-hot input.

``--timing`` prints instead what the evaluation interval costs at the preset's sizes: the
optimizer steps in an epoch, the seconds of one step's gradient (forward and backward of one
minibatch, the median of 3) and of one evaluation of the valid split, and so the share of an
epoch's time that one evaluation per epoch adds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from bench_plain_loop import lstmlab_row

from lstmlab.training.build import build_all
from lstmlab.training.config import resolve, to_dict

CELLS = (
    "model.variant=vanilla,model.options.init=uniform",
    "model.variant=NP,model.options.init=torch",
    "model.variant=vanilla,model.options.init=torch",
    "model.variant=NP,model.options.init=uniform",
)


def default_alts(task: str, lr: float) -> list[str]:
    alts = [
        *CELLS,
        "model.options.gate_bias.f=1",
        f"optimizer.lr={lr / 2:g}",
        f"optimizer.lr={lr * 2:g}",
    ]
    if task in ("text", "ptb"):
        alts.append("task.options.embedding='auto'")
    return alts


UNSET = {"model.options.init": "uniform"}  # the cell's default where a preset names none


def preset_value(tree: dict, key: str) -> str | None:
    """The preset's value of the dotted ``key`` as text (the cell's default where unset)."""
    node: object = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return UNSET.get(key)
        node = node[part]
    return str(node)


def parse_pairs(text: str) -> dict[str, str]:
    """'a=1,b=2' -> {'a': '1', 'b': '2'} (an empty string: no override)."""
    out = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"expected KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def timing(task: str, common: dict[str, str]) -> None:
    """Steps per epoch, seconds per step and per valid evaluation (see the docstring)."""
    from lstmlab.training.loop import batches_per_epoch

    built = build_all(resolve([], {"task.name": task, **common}))
    model, data, B = built.model, built.train_data, built.cfg.optimizer.batch_size
    steps = batches_per_epoch(len(data), B)
    batch = data.batch(torch.arange(min(B, len(data))))
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        model.zero_grad()
        model.loss(model(batch.inputs, batch.lengths), batch).backward()
        times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    t0 = time.perf_counter()
    built.evaluate(model)
    ev = time.perf_counter() - t0
    print(
        f"| {task} | {len(data):,} × {data.batch(torch.arange(1)).inputs.shape[1]} | {B} | "
        f"{steps} | {step:.3g} | {ev:.3g} | {ev / (ev + steps * step):.1%} |",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--task", required=True, help="a task with a preset: text, music, words, ...")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--every", type=int, default=75)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--alt", action="append", default=None, metavar="KEY=V,KEY=V")
    p.add_argument("--timing", action="store_true", help="the evaluation interval's cost")
    a = p.parse_args(argv)
    if a.steps < 1 or a.every < 1 or a.every > a.steps:
        p.error("--steps and --every must be positive, --every at most --steps")
    try:
        common = {}
        for item in a.set:  # one KEY=VALUE each (a value may hold commas: [1, 2, 3])
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ValueError(f"--set takes KEY=VALUE, got {item!r}")
            common[key.strip()] = value.strip()
        base = resolve([], {"task.name": a.task, **common})
        alts = a.alt if a.alt is not None else default_alts(a.task, base.optimizer.lr)
        rows = [{}]
        for x in alts:  # an alternative that is the preset itself is left out
            alt = parse_pairs(x)
            if any(preset_value(to_dict(base), k) != v for k, v in alt.items()):
                rows.append(alt)
    except Exception as e:  # a bad key or value: one line
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.timing:
        print(
            "| task | train rows × steps | batch | steps per epoch | s per step | s per evaluation | evaluation's share |"
        )
        print("|---|---|---|---|---|---|---|")
        timing(a.task, common)
        return 0
    over = {
        "task.name": a.task,
        "stop.max_iterations": str(a.steps),
        "stop.patience": "1000000",
        "eval_every": str(a.every),
        "checkpoint_every": str(a.steps),
        "eval_seconds": "off",
        "checkpoint_seconds": "off",
        "log.tensorboard": "false",
        "seed": str(a.seed),
        **common,
    }
    built = build_all(resolve([], over))  # the task's data and its stopping metric
    metric, higher = built.stopping.metric, built.stopping.higher_is_better
    del built
    print(f"# {a.task}: preset + {' '.join(f'--{k} {v}' for k, v in over.items())}", flush=True)
    steps = " / ".join(str(a.every * (i + 1)) for i in range(a.steps // a.every))
    print(f"| overrides | valid {metric} at steps {steps} | best | wall (s) |")
    print("|---|---|---|---|", flush=True)
    for row in rows:
        t0 = time.perf_counter()
        vals = lstmlab_row({**over, **row}, metric)
        if not vals:
            print(f"row {row} gave no evaluations", file=sys.stderr)
            return 1
        best = max(vals) if higher else min(vals)
        name = ", ".join(f"{k} {v}" for k, v in row.items()) or "(the preset)"
        cells = " / ".join(f"{v:.4g}" for v in vals)
        print(f"| {name} | {cells} | {best:.4g} | {time.perf_counter() - t0:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
