"""A real-data preset against its alternatives: short runs of ``lstmlab train TASK`` (issue 22).

    python benchmarks/bench_presets.py --task music --steps 300 --every 75
    python benchmarks/bench_presets.py --task text --steps 300 --every 100 \\
        --set optimizer.batch_size=20 --set task.options.chunk=100
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
"""

from __future__ import annotations

import argparse
import sys
import time

from bench_plain_loop import lstmlab_row

from lstmlab.training.build import build_all
from lstmlab.training.config import resolve

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


def parse_pairs(text: str) -> dict[str, str]:
    """'a=1,b=2' -> {'a': '1', 'b': '2'} (an empty string: no override)."""
    out = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"expected KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--task", required=True, help="a task with a preset: text, music, words, ...")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--every", type=int, default=75)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--alt", action="append", default=None, metavar="KEY=V,KEY=V")
    a = p.parse_args(argv)
    if a.steps < 1 or a.every < 1 or a.every > a.steps:
        p.error("--steps and --every must be positive, --every at most --steps")
    try:
        common = {k: v for s in a.set for k, v in parse_pairs(s).items()}
        base = resolve([], {"task.name": a.task, **common})
        alts = a.alt if a.alt is not None else default_alts(a.task, base.optimizer.lr)
        rows = [{}, *(parse_pairs(x) for x in alts)]
    except Exception as e:  # a bad key or value: one line
        print(f"error: {e}", file=sys.stderr)
        return 2
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
