"""lstmlab's training of a token model equals a plain PyTorch loop on the same batches.

The model is what PyTorch's word_language_model trains: embedding → LSTM → linear, softmax
cross-entropy averaged over tokens, the LSTM state carried from one chunk to the next (detached,
zero at the start of each epoch), gradients clipped to a total norm (``clip_grad_norm_``) and
stepped by ``torch.optim.Adam``. lstmlab trains it through ``lstmlab train ptb_words`` (the
task, the loop, the objective, the bptt engine and its own Adam); the plain loop is written here
from ``torch.nn`` parts holding the same initial weights (the LSTM through its explicit weight
mapping, ``LSTM.to_torch``). Float64, so the two agree to round-off or not at all.

Music (``lstmlab train music``): pieces of unequal lengths in the loop's shuffled minibatches,
88 Bernoulli outputs, each piece from a zero state; the plain loop holds either torch.nn.LSTM
(NP) or lstmlab's own LSTM module with the preset's peephole cell (vanilla). Measured: the
losses agree to 4e-16 over 30 steps (10 epochs) with clipping active.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lstmlab.cli import main
from lstmlab.training.build import build_all
from lstmlab.training.config import resolve
from lstmlab.training.metrics import read_metrics

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_cli_tasks import ptb_words_dir  # noqa: E402

STREAMS, CHUNK, STEPS, LR, CLIP = 4, 10, 40, 0.03, 0.1


def flags(corpus: Path, **extra: str) -> dict[str, str]:
    over = {
        "task.options.path": str(corpus),
        "task.options.chunk": str(CHUNK),
        "task.options.streams": str(STREAMS),
        "model.variant": "NP",  # what torch.nn.LSTM computes: no peepholes, α = 1
        "model.blocks": "6",
        "model.cells_per_block": "1",
        "model.alpha": "1",
        "optimizer.name": "adam",
        "optimizer.batch_size": str(STREAMS),
        "optimizer.lr": str(LR),
        "optimizer.options.clip_norm": str(CLIP),
        "precision": "float64",
        "stop.max_iterations": str(STEPS),
        "eval_every": "1000",
        "checkpoint_every": "1000",
        "log_every": "1",
        "seed": "3",
    }
    return {**over, **extra}


class Plain(nn.Module):
    """word_language_model's RNNModel, written with torch.nn only."""

    def __init__(self, embed: nn.Embedding, lstm: nn.LSTM, head: nn.Linear):
        super().__init__()
        self.embed, self.lstm, self.head = embed, lstm, head

    def forward(self, tokens: torch.Tensor, hidden):
        out, hidden = self.lstm(self.embed(tokens), hidden)
        return self.head(out), hidden


def plain_losses(cfg) -> list[float]:
    """The plain loop, on the same rows of the same task, from the same initial weights."""
    built = build_all(cfg)  # the task's data and the model's initial weights, nothing else
    m = built.model
    embed = nn.Embedding.from_pretrained(m.embed.weight.detach().clone(), freeze=False)
    head = nn.Linear(m.head.in_features, m.head.out_features, dtype=torch.float64)
    with torch.no_grad():
        head.weight.copy_(m.head.weight)
        head.bias.copy_(m.head.bias)
    lstm = m.rnn.to_torch()
    # torch.nn.LSTM adds two biases (b_ih + b_hh) where lstmlab has one; under Adam each of
    # the two moves by a full step, so the pair learns twice as fast: keep b_hh at zero
    lstm.bias_hh_l0.requires_grad_(False)
    model = Plain(embed, lstm, head)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=LR)
    split = built.task.train
    tokens, targets, lengths = split.features[..., 0].long(), split.targets, split.lengths
    n_chunks = math.ceil(len(split) / STREAMS)
    losses, hidden = [], None
    for step in range(STEPS):
        j = step % n_chunks
        if j == 0:
            hidden = None  # a new epoch starts every stream from a zero state
        rows = slice(j * STREAMS, (j + 1) * STREAMS)
        T = int(lengths[rows].max())
        logits, hidden = model(tokens[rows, :T], hidden)
        hidden = tuple(h.detach() for h in hidden)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets[rows, :T].reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(params, CLIP)
        opt.step()
        losses.append(loss.item())
    return losses


def lstmlab_losses(run_dir: Path, over: dict[str, str]) -> tuple[list[float], list[float]]:
    argv = ["train", "ptb_words", "--run-dir", str(run_dir), "--progress", "none"]
    for k, v in over.items():
        argv += [f"--{k}", v]
    assert main(argv) == 0
    records = [r for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r]
    return [r["loss"] for r in records], [r["grad_norm"] for r in records]


def test_lstmlab_trains_a_token_model_as_a_plain_pytorch_loop_does(tmp_path):
    over = flags(ptb_words_dir(tmp_path))
    ours, grad_norms = lstmlab_losses(tmp_path / "run", over)
    theirs = plain_losses(resolve([], {"task.name": "ptb_words", **over}))
    assert len(ours) == len(theirs) == STEPS
    # the comparison covers what it claims: clipping acts, an epoch ends, the loss falls
    assert sum(g > CLIP for g in grad_norms) > STEPS // 2
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["epochs"] >= 1
    assert theirs[-1] < theirs[0] - 0.3
    assert ours == pytest.approx(theirs, rel=1e-10, abs=0)  # measured: 2e-15


# --- polyphonic music (issue 22: JSB Chorales against a plain loop) -------------------------

PIECES, MUSIC_BATCH, MUSIC_STEPS = 8, 3, 30


def jsb_json(root: Path) -> Path:
    """A tiny JSB-style file: pieces of 5-15 steps, each step a chord of MIDI pitches."""
    gen = torch.Generator().manual_seed(0)

    def piece() -> list[list[int]]:
        n = int(torch.randint(5, 16, (1,), generator=gen))
        return [
            sorted({int(p) for p in torch.randint(48, 80, (3,), generator=gen)}) for _ in range(n)
        ]

    data = {
        s: [piece() for _ in range(k)] for s, k in (("train", PIECES), ("valid", 3), ("test", 3))
    }
    path = root / "jsb.json"
    path.write_text(json.dumps(data))
    return path


def music_flags(corpus: Path, variant: str) -> dict[str, str]:
    return {
        "task.options.path": str(corpus),
        "model.variant": variant,
        "model.blocks": "5",
        "optimizer.name": "adam",
        "optimizer.batch_size": str(MUSIC_BATCH),
        "optimizer.lr": str(LR),
        "optimizer.options.clip_norm": "0.5",
        "precision": "float64",
        "stop.max_iterations": str(MUSIC_STEPS),
        "eval_every": "1000",
        "checkpoint_every": "1000",
        "log_every": "1",
        "seed": "2",
    }


def plain_music_losses(cfg, variant: str) -> list[float]:
    """The plain loop on the loop's minibatches (a permutation of the pieces seeded by (seed,
    epoch)), each piece from a zero state, with lstmlab's normalisation: per piece the Bernoulli
    NLL summed over keys and steps, divided by its length, then the mean over pieces."""
    built = build_all(cfg)
    m = built.model
    head = nn.Linear(m.head.in_features, m.head.out_features, dtype=torch.float64)
    with torch.no_grad():
        head.weight.copy_(m.head.weight)
        head.bias.copy_(m.head.bias)
    if variant == "NP":  # torch.nn.LSTM, its b_hh held at zero (lstmlab's cell has one bias)
        lstm = m.rnn.to_torch()
        lstm.bias_hh_l0.requires_grad_(False)
    else:  # the preset's cell (peepholes): lstmlab's LSTM module inside the plain loop
        lstm = m.rnn
    params = [p for p in [*lstm.parameters(), *head.parameters()] if p.requires_grad]
    opt = torch.optim.Adam(params, lr=LR)
    split = built.task.train
    per_epoch = math.ceil(len(split) / MUSIC_BATCH)
    losses = []
    for step in range(MUSIC_STEPS):
        epoch, index = divmod(step, per_epoch)
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        rows = torch.randperm(len(split), generator=gen)[
            index * MUSIC_BATCH : (index + 1) * MUSIC_BATCH
        ]
        n = split.lengths[rows]
        T = int(n.max())
        x = split.features[rows, :T].double()
        y = split.targets[rows, :T].double()
        out, _ = lstm(x)
        per = F.binary_cross_entropy_with_logits(head(out), y, reduction="none").sum(-1)
        mask = torch.arange(T) < n[:, None]
        loss = ((per * mask).sum(1) / n).mean()
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(params, 0.5)
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("variant", ["vanilla", "NP"])
def test_lstmlab_trains_music_as_a_plain_pytorch_loop_does(variant, tmp_path):
    """`lstmlab train music` and a plain loop, same pieces in the same minibatches (of unequal
    lengths), same weights: vanilla puts lstmlab's own cell (the preset's) in the plain loop,
    NP puts torch.nn.LSTM there."""
    over = music_flags(jsb_json(tmp_path), variant)
    argv = ["train", "music", "--run-dir", str(tmp_path / "run"), "--progress", "none"]
    for k, v in over.items():
        argv += [f"--{k}", v]
    assert main(argv) == 0
    records = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "loss" in r]
    ours, grad_norms = [r["loss"] for r in records], [r["grad_norm"] for r in records]
    theirs = plain_music_losses(resolve([], {"task.name": "music", **over}), variant)
    assert len(ours) == len(theirs) == MUSIC_STEPS
    assert sum(g > 0.5 for g in grad_norms) > MUSIC_STEPS // 2  # clipping acts
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["epochs"] >= 5
    assert theirs[-1] < theirs[0] - 5
    assert ours == pytest.approx(theirs, rel=1e-10, abs=0)


def test_the_benchmark_scripts_run_on_music_and_text(tmp_path, capsys):
    """benchmarks/bench_plain_loop.py (music rows; text's preset and plain-cell rows) and
    benchmarks/bench_presets.py at tiny sizes: lstmlab's rows equal the plain loop's from the
    same weights (the tables of docs/results.md), and a bad row or override is one line."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import bench_plain_loop
    import bench_presets
    from test_cli_tasks import text_file

    tiny = ["--hidden", "4", "--streams", "3", "--steps", "6", "--every", "3"]
    music = ["--task", "music", "--path", str(jsb_json(tmp_path)), *tiny]
    assert bench_plain_loop.main([*music, "--clip", "1"]) == 0
    rows = {
        ln.split("|")[1].strip(): ln.split("|")[2].strip()
        for ln in capsys.readouterr().out.splitlines()
        if ln.startswith("| lstmlab-") or ln.startswith("| plain-")
    }
    assert set(rows) == set(bench_plain_loop.MUSIC_ROWS)
    assert (
        rows["lstmlab-vanilla"] == rows["plain-cell"] and rows["lstmlab-np"] == rows["plain-same"]
    )
    assert rows["lstmlab-vanilla"] != rows["lstmlab-np"]
    text = ["--task", "text", "--path", str(text_file(tmp_path)), *tiny, "--chunk", "20"]
    text += ["--train-tokens", "4000", "--eval-tokens", "600"]
    rows = ["lstmlab-vanilla", "plain-cell", "lstmlab-preset"]
    assert bench_plain_loop.main([*text, "--rows", ",".join(rows)]) == 0
    out = capsys.readouterr().out
    cells = {
        ln.split("|")[1].strip(): ln.split("|")[2] for ln in out.splitlines() if ln.startswith("| ")
    }
    assert cells["lstmlab-vanilla"] == cells["plain-cell"]
    assert "task.options.embedding" in out.splitlines()[0]  # the rows read an embedding
    # lstmlab-preset: the preset's input (an embedding), or one-hot with --set
    one_hot = ["--rows", "lstmlab-preset", "--set", "task.options.embedding=false"]
    assert bench_plain_loop.main([*text, *one_hot]) == 0
    out = capsys.readouterr().out
    assert "--task.options.embedding false" in out.splitlines()[0]
    preset = [ln.split("|")[2] for ln in out.splitlines() if ln.startswith("| lstmlab-preset")]
    assert preset and preset[0] != cells["lstmlab-preset"]
    assert bench_plain_loop.main([*music, "--rows", "plain-1bias"]) == 2
    assert "unknown row 'plain-1bias'" in capsys.readouterr().err
    # bench_presets: the preset and two alternatives, valid NLL at steps 3 and 6 and the best
    alts = ["--alt", "model.variant=NP,model.options.init=torch", "--alt", "optimizer.lr=0.02"]
    presets = ["--task", "music", "--steps", "6", "--every", "3", *alts]
    presets += ["--set", f"task.options.path={jsb_json(tmp_path)}", "--set", "model.blocks=3"]
    assert bench_presets.main(presets) == 0
    table = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| ")][1:]
    assert [ln.split("|")[1].strip() for ln in table] == [
        "(the preset)",
        "model.variant NP, model.options.init torch",
        "optimizer.lr 0.02",
    ]
    for ln in table:
        vals = [float(v) for v in ln.split("|")[2].split("/")]
        assert len(vals) == 2 and float(ln.split("|")[3]) == min(vals)
    timing = ["--task", "music", "--timing", "--set", f"task.options.path={jsb_json(tmp_path)}"]
    assert bench_presets.main([*timing, "--set", "optimizer.batch_size=3"]) == 0
    row = capsys.readouterr().out.splitlines()[-1].split("|")
    assert row[1].strip() == "music" and row[3].strip() == "3" and row[4].strip() == "3"
    # the default alternatives: each cell/initialisation but the preset's, the forget-gate
    # bias, Adam's step halved and doubled
    tiny = ["--task", "music", "--steps", "2", "--every", "2", "--set", "model.blocks=2"]
    assert bench_presets.main([*tiny, "--set", f"task.options.path={jsb_json(tmp_path)}"]) == 0
    names = [ln.split("|")[1].strip() for ln in capsys.readouterr().out.splitlines()[3:]]
    assert names == [
        "(the preset)",
        "model.variant NP, model.options.init torch",
        "model.variant vanilla, model.options.init torch",
        "model.variant NP, model.options.init uniform",
        "model.options.gate_bias.f 1",
        "optimizer.lr 0.005",
        "optimizer.lr 0.02",
    ]
    assert bench_presets.main(["--task", "music", "--alt", "model.blocks"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err
