"""A training script written for torch.nn.LSTM runs unchanged with lstmlab.TorchLSTM.

``SCRIPT`` is an ordinary small word-level language model as one would write it for torch:
embedding, a 2-layer ``LSTM`` with inter-layer dropout fed a ``PackedSequence``, a linear
decoder, cross-entropy, ``clip_grad_norm_``, SGD, a torch checkpoint of the recurrent layer
loaded with ``load_state_dict``. The lstmlab run changes one line, the import of ``LSTM``.
Both runs give the same losses to float64 round-off on the same seed, with dropout 0 and
with dropout (the drop-in draws torch's inter-layer masks).
"""

from __future__ import annotations

import io
import math

import torch
from torch import nn

IMPORT_TORCH = "from torch.nn import LSTM"
IMPORT_LSTMLAB = "from lstmlab import TorchLSTM as LSTM"

SCRIPT = '''
import io
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from torch.nn import LSTM

torch.manual_seed(SEED)
torch.set_default_dtype(torch.float64)
text = """the cat sat on the mat . the dog sat on the log . a cat saw a dog .
the dog ran to the cat . a bird sat on the dog . the cat ran away .
the mat was red . the log was old . a dog saw the bird on the log ."""
sentences = [s.split() + ["."] for s in text.replace("\\n", " ").split(" . ") if s.strip()]
vocab = ["<pad>"] + sorted({w for s in sentences for w in s})
index = {w: i for i, w in enumerate(vocab)}
PAD = 0


class WordLM(nn.Module):
    def __init__(self, n_words, emb, hidden, layers, dropout):
        super().__init__()
        self.embed = nn.Embedding(n_words, emb, padding_idx=PAD)
        self.drop = nn.Dropout(dropout)
        self.rnn = LSTM(emb, hidden, layers, dropout=dropout, batch_first=True)
        self.out = nn.Linear(hidden, n_words)

    def forward(self, tokens, lengths, hidden=None):
        x = self.drop(self.embed(tokens))
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, hidden = self.rnn(packed, hidden)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=tokens.shape[1])
        return self.out(self.drop(out)), hidden


model = WordLM(len(vocab), 8, 16, 2, DROPOUT)
model.rnn.load_state_dict(torch.load(io.BytesIO(CHECKPOINT)))
for name, p in model.rnn.named_parameters():
    if "bias_hh" in name:
        with torch.no_grad():
            p[16:32].add_(0.5)  # a common tweak: forget-gate bias up (rows H..2H, i|f|g|o)
opt = torch.optim.SGD(model.parameters(), lr=0.5)


def batch(sents):
    lengths = torch.tensor([len(s) - 1 for s in sents])
    T = int(lengths.max())
    inp = torch.full((len(sents), T), PAD, dtype=torch.long)
    tgt = torch.full((len(sents), T), PAD, dtype=torch.long)
    for b, s in enumerate(sents):
        ids = torch.tensor([index[w] for w in s])
        inp[b, : len(s) - 1] = ids[:-1]
        tgt[b, : len(s) - 1] = ids[1:]
    return inp, tgt, lengths


losses = []
for epoch in range(EPOCHS):
    model.train()
    order = torch.randperm(len(sentences)).tolist()
    for start in range(0, len(order), 4):
        inp, tgt, lengths = batch([sentences[i] for i in order[start : start + 4]])
        logits, _ = model(inp, lengths)
        loss = F.cross_entropy(logits.reshape(-1, len(vocab)), tgt.reshape(-1), ignore_index=PAD)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        opt.step()
        losses.append(loss.item())
model.eval()
with torch.no_grad():
    inp, tgt, lengths = batch(sentences)
    logits, (h_n, c_n) = model(inp, lengths)
    eval_loss = F.cross_entropy(
        logits.reshape(-1, len(vocab)), tgt.reshape(-1), ignore_index=PAD
    ).item()
'''


def _torch_checkpoint() -> bytes:
    """A checkpoint of a torch.nn.LSTM (as saved by someone else's torch training)."""
    torch.manual_seed(99)
    lstm = nn.LSTM(8, 16, 2, dtype=torch.float64)
    buf = io.BytesIO()
    torch.save(lstm.state_dict(), buf)
    return buf.getvalue()


def run_script(import_line: str, dropout: float, epochs: int = 3, seed: int = 0) -> dict:
    assert SCRIPT.count(IMPORT_TORCH) == 1
    source = SCRIPT.replace(IMPORT_TORCH, import_line)
    namespace = dict(SEED=seed, DROPOUT=dropout, EPOCHS=epochs, CHECKPOINT=_torch_checkpoint())
    old = torch.get_default_dtype()
    try:
        exec(compile(source, "wordlm_script", "exec"), namespace)
    finally:
        torch.set_default_dtype(old)
    return namespace


def test_script_same_losses_as_torch_without_dropout():
    ref = run_script(IMPORT_TORCH, dropout=0.0)
    got = run_script(IMPORT_LSTMLAB, dropout=0.0)
    assert type(got["model"].rnn).__name__ == "TorchLSTM"
    assert type(ref["model"].rnn) is nn.LSTM
    assert len(ref["losses"]) == len(got["losses"]) >= 9
    for a, b in zip(ref["losses"], got["losses"], strict=True):
        assert math.isclose(a, b, rel_tol=1e-12), (a, b)
    assert math.isclose(ref["eval_loss"], got["eval_loss"], rel_tol=1e-12)
    torch.testing.assert_close(got["h_n"], ref["h_n"], rtol=0, atol=1e-12)
    assert ref["losses"][-1] < ref["losses"][0]


def test_script_with_dropout_same_losses_as_torch():
    """With dropout 0.3 the script runs unchanged and learns, and even gives torch's losses:
    the drop-in draws its inter-layer masks as torch does (over the packed rows)."""
    ref = run_script(IMPORT_TORCH, dropout=0.3, epochs=4)
    got = run_script(IMPORT_LSTMLAB, dropout=0.3, epochs=4)
    assert all(math.isfinite(v) for v in got["losses"])
    for a, b in zip(ref["losses"], got["losses"], strict=True):
        assert math.isclose(a, b, rel_tol=1e-12), (a, b)
    first, last = sum(got["losses"][:3]) / 3, sum(got["losses"][-3:]) / 3
    assert last < first


def test_readme_dropin_example_runs():
    """The README's drop-in example runs as printed."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "TorchLSTM" in b]
    assert len(blocks) == 1
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert namespace["h_n"].shape == (2, 2, 20)
    assert isinstance(namespace["out"], torch.nn.utils.rnn.PackedSequence)
