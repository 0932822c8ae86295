"""``torch.compile`` of a word-level language model holding ``lstmlab.TorchLSTM``: the time to
compile against not compiling, and the compiled model's step time against eager.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/bench_compile.py [--steps 35] [--batch 20]
        [--hidden 128] [--layers 2] [--vocab 1000] [--repeats 9]

The model is PyTorch's word_language_model shape (embedding → 2-layer LSTM → linear decoder),
float32, one training step = forward + cross-entropy + backward. Rows:

- ``nn.LSTM`` eager, and compiled (dynamo's default refuses every ``nn.LSTM``: the layer runs
  eagerly between the compiled embedding and decoder);
- ``TorchLSTM`` eager, compiled with the default (the same treatment as ``nn.LSTM``), and
  compiled with ``torch._dynamo.config.allow_rnn = True`` (dynamo traces into the drop-in and
  each layer-direction is one ``lstmlab::lstm_layer`` operator in a single graph, inductor
  backend; its backward runs the layer's forward again, see ``lstmlab.nn.ops``).

"compile s": the first compiled step (tracing and code generation included) minus the median
eager step; then a second length is run once (the automatic-dynamic recompile) and not timed.
Step times: medians over ``--repeats`` round-robin rounds (one step of each row in turn).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch._dynamo
from torch import nn

from lstmlab import TorchLSTM


class WordModel(nn.Module):
    def __init__(self, rnn_cls, vocab: int, hidden: int, layers: int):
        super().__init__()
        self.emb = nn.Embedding(vocab, hidden)
        self.rnn = rnn_cls(hidden, hidden, layers)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, tokens):
        return self.out(self.rnn(self.emb(tokens))[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=35)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=9)
    a = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, a.vocab, (a.steps + 1, a.batch), generator=g)
    other = torch.randint(0, a.vocab, (a.steps + 6, a.batch), generator=g)

    def make(cls):
        torch.manual_seed(0)
        return WordModel(cls, a.vocab, a.hidden, a.layers)

    def step(fn, toks):
        logits = fn(toks[:-1])
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), toks[1:].flatten())
        loss.backward()

    rows: dict[str, tuple] = {}  # name -> (model, callable, allow_rnn)
    for label, cls in (("nn.LSTM", nn.LSTM), ("TorchLSTM", TorchLSTM)):
        m = make(cls)
        rows[f"{label} eager"] = (m, m, False)
        rows[f"{label} compiled (dynamo default)"] = (m, torch.compile(m), False)
    m = make(TorchLSTM)
    rows["TorchLSTM compiled (allow_rnn=True)"] = (m, torch.compile(m), True)

    for name in ("nn.LSTM eager", "TorchLSTM eager"):  # warm-up
        step(rows[name][1], tokens)
    eager_ms = {}
    for name in ("nn.LSTM eager", "TorchLSTM eager"):
        ts = []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            step(rows[name][1], tokens)
            ts.append(time.perf_counter() - t0)
        eager_ms[name] = statistics.median(ts)
    compile_s = {}
    for name, (_, fn, allow) in rows.items():
        if "compiled" not in name:
            continue
        with torch._dynamo.config.patch(allow_rnn=allow):
            t0 = time.perf_counter()
            step(fn, tokens)
            first = time.perf_counter() - t0
            step(fn, other)  # the second length: automatic dynamic shapes, one recompile
        base = eager_ms["nn.LSTM eager" if name.startswith("nn.") else "TorchLSTM eager"]
        compile_s[name] = first - base
    times: dict[str, list[float]] = {n: [] for n in rows}
    for _ in range(a.repeats):
        for name, (_, fn, allow) in rows.items():
            with torch._dynamo.config.patch(allow_rnn=allow, error_on_recompile=True):
                t0 = time.perf_counter()
                step(fn, tokens)
                times[name].append(time.perf_counter() - t0)
    ref = statistics.median(times["nn.LSTM eager"])
    print(
        f"(T, B, H, layers, vocab) = ({a.steps}, {a.batch}, {a.hidden}, {a.layers}, {a.vocab}),"
        f" float32, {torch.get_num_threads()} thread(s), torch {torch.__version__}"
    )
    print("| model | compile s | train step ms | ratio to nn.LSTM eager |")
    print("|---|---|---|---|")
    for name in rows:
        med = statistics.median(times[name])
        c = f"{compile_s[name]:.1f}" if name in compile_s else "—"
        print(f"| {name} | {c} | {1e3 * med:.1f} | {med / ref:.2f} |")


if __name__ == "__main__":
    main()
