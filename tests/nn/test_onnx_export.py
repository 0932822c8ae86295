"""ONNX export of TorchLSTM (``lstmlab.nn.onnx_export``): the torch-compatible cell becomes one
standard ONNX ``LSTM`` node per layer-direction with a dynamic sequence length and gives
torch's outputs in onnxruntime; everything else refuses with one line naming what ONNX
cannot express; a missing ``import lstmlab.nn.onnx_export`` is said in one line too.
"""

from __future__ import annotations

import re
import sys
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import lstmlab

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
import lstmlab.nn.onnx_export  # noqa: E402  (registers the translation)


class _WordModel(nn.Module):
    """PyTorch's word_language_model shape: embedding → LSTM → linear decoder."""

    def __init__(self, layers=2, **kw):
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.rnn = lstmlab.TorchLSTM(8, 6, layers, **kw)
        width = 6 * (2 if self.rnn.bidirectional else 1)
        self.out = nn.Linear(width, 20)

    def forward(self, tokens):
        return self.out(self.rnn(self.emb(tokens))[0])


def _tokens(T, B=3, seed=0):
    return torch.randint(0, 20, (T, B), generator=torch.Generator().manual_seed(seed))


def _export(model, path=None):
    T = torch.export.Dim("T", min=2, max=4096)
    return torch.onnx.export(
        model, (_tokens(7),), path, dynamic_shapes={"tokens": {0: T}}, verbose=False
    )


@pytest.mark.parametrize(
    "kw, n_lstm", [(dict(layers=2), 2), (dict(layers=1, bidirectional=True), 2)]
)
def test_np_exports_to_onnx_lstm_and_runs_in_onnxruntime(tmp_path, kw, n_lstm):
    torch.manual_seed(0)
    model = _WordModel(**kw).eval()
    path = tmp_path / "model.onnx"
    _export(model, path)
    graph = onnx.load(str(path)).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("LSTM") == n_lstm, ops
    assert len(ops) < 12 * n_lstm, ops  # no unrolled time loop
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    for T in (7, 1 + 2, 40):  # the traced length, shorter, longer
        tokens = _tokens(T, seed=T)
        got = sess.run(None, {name: tokens.numpy()})[0]
        with torch.no_grad():
            want = model(tokens)
        torch.testing.assert_close(torch.from_numpy(got), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "kw, named",
    [
        (dict(variant="vanilla"), "peepholes"),
        (dict(gate_sharpness=2.0), "gate sharpness"),
        (dict(proj_size=3), "proj_size=3"),
        (dict(variant="lstm97", cells_per_block=2), "cells_per_block=2"),
    ],
)
def test_other_variants_refuse_in_one_line(kw, named):
    torch.manual_seed(0)
    model = _WordModel(layers=1, **kw).eval()
    if "proj_size" in kw:
        model.out = nn.Linear(3, 20)
    with pytest.raises(Exception) as err:
        _export(model)
    line = re.search(
        r"ONNX export of TorchLSTM: the ONNX LSTM operator cannot express .*", str(err.value)
    )
    assert line is not None, str(err.value)[-2000:]
    assert named in line.group(0)
    assert line.group(0).endswith("exports")  # the whole reason on one line


def test_without_the_translation_module_it_says_so(monkeypatch):
    """As in a process that did not import lstmlab.nn.onnx_export (the drop-in's view of
    sys.modules without it: removing it from the real one would break torch's exporter)."""
    modules = {k: v for k, v in sys.modules.items() if k != "lstmlab.nn.onnx_export"}
    monkeypatch.setattr(lstmlab.nn.dropin, "sys", SimpleNamespace(modules=modules))
    with pytest.raises(Exception, match=r"needs `import lstmlab.nn.onnx_export` before"):
        _export(_WordModel(layers=1).eval())


@pytest.mark.parametrize("cls", [lstmlab.TorchGRU, lstmlab.TorchRNN])
def test_gru_and_rnn_refuse_in_one_line(cls):
    model = cls(4, 5).eval()
    with pytest.raises(Exception, match=rf"ONNX export of {cls.__name__}: not supported"):
        torch.onnx.export(model, (torch.randn(6, 2, 4),), verbose=False)


class _RNNModel(nn.Module):
    """word_language_model's RNNModel with TorchLSTM: forward(input, hidden) → (decoded,
    hidden), the form its --onnx-export writes."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Embedding(20, 8)
        self.rnn = lstmlab.TorchLSTM(8, 8, 2)
        self.decoder = nn.Linear(8, 20)

    def forward(self, input, h0, c0):
        output, (h, c) = self.rnn(self.encoder(input), (h0, c0))
        return self.decoder(output), h, c


def test_word_language_model_with_hidden_state(tmp_path):
    torch.manual_seed(0)
    model = _RNNModel().eval()
    h0, c0 = torch.randn(2, 3, 8), torch.randn(2, 3, 8)
    path = tmp_path / "wlm.onnx"
    T = torch.export.Dim("T", min=2, max=4096)
    torch.onnx.export(
        model,
        (_tokens(35), h0, c0),
        path,
        dynamic_shapes={"input": {0: T}, "h0": None, "c0": None},
        verbose=False,
    )
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("LSTM") == 2 and len(ops) < 30, ops
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    for L in (35, 12):
        tokens = _tokens(L, seed=L)
        feed = dict(zip(names, (tokens.numpy(), h0.numpy(), c0.numpy()), strict=True))
        got = sess.run(None, feed)
        with torch.no_grad():
            want = model(tokens, h0, c0)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(torch.from_numpy(g), w, rtol=1e-5, atol=1e-5)
