"""``torch.compile`` of a word-level language model holding ``lstmlab.TorchLSTM``: the time to
compile against not compiling, and the compiled model's step time against eager.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/bench_compile.py [--steps 35] [--batch 20]
        [--hidden 128] [--layers 2] [--vocab 1000] [--repeats 9]

The model is PyTorch's word_language_model shape (embedding → 2-layer LSTM → linear decoder),
float32, one training step = forward + cross-entropy + backward. Rows:

- ``nn.LSTM`` compiled with dynamo's default (which refuses every ``nn.LSTM``: the layer
  runs eagerly);
- ``TorchLSTM`` compiled with the default (the same treatment as ``nn.LSTM``), and with
  ``torch._dynamo.config.allow_rnn = True`` (dynamo traces into the drop-in and each
  layer-direction is one ``lstmlab::lstm_layer`` operator in a single graph, inductor
  backend; its backward runs the layer's forward again, see ``lstmlab.nn.ops``).

Each row starts with ``torch._dynamo.reset()``. "compile s": the first compiled step
(tracing and code generation included) minus the median of three eager steps; then a second
length is run once (the automatic-dynamic recompile, not timed). Step times: medians over
``--repeats`` round-robin rounds of one eager and one compiled step of the same model, with
recompiles forbidden.
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

    rows = [
        ("nn.LSTM", nn.LSTM, False),
        ("TorchLSTM", TorchLSTM, False),
        ("TorchLSTM", TorchLSTM, True),
    ]
    print(
        f"(T, B, H, layers, vocab) = ({a.steps}, {a.batch}, {a.hidden}, {a.layers}, {a.vocab}),"
        f" float32, {torch.get_num_threads()} thread(s), torch {torch.__version__}"
    )
    print(
        "| model | compiled with | compile s | eager step ms | compiled step ms | compiled / eager |"
    )
    print("|---|---|---|---|---|---|")
    for label, cls, allow in rows:
        torch._dynamo.reset()  # dynamo remembers frames it refused: each row starts afresh
        m = make(cls)
        compiled = torch.compile(m)
        with torch._dynamo.config.patch(allow_rnn=allow):
            step(m, tokens)  # eager warm-up
            eager = []
            for _ in range(3):
                t0 = time.perf_counter()
                step(m, tokens)
                eager.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            step(compiled, tokens)
            first = time.perf_counter() - t0
            step(compiled, other)  # the second length: automatic dynamic shapes
            times: dict[str, list[float]] = {"eager": [], "compiled": []}
            with torch._dynamo.config.patch(error_on_recompile=True):
                for _ in range(a.repeats):  # round-robin: eager, compiled
                    for name, fn in (("eager", m), ("compiled", compiled)):
                        t0 = time.perf_counter()
                        step(fn, tokens)
                        times[name].append(time.perf_counter() - t0)
        e, c = statistics.median(times["eager"]), statistics.median(times["compiled"])
        how = "allow_rnn=True" if allow else "dynamo default"
        print(
            f"| {label} | {how} | {first - statistics.median(eager):.1f} | {1e3 * e:.1f} "
            f"| {1e3 * c:.1f} | {c / e:.2f} |"
        )


if __name__ == "__main__":
    main()
