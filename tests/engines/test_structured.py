"""F-LSTM and G-LSTM in the bptt engine (``engines/structured.py``): their structure runs as
such — no dense matrix is assembled — and the gradients equal the autograd reference (the
cell's structured ``step``) and central differences, in both layouts, with projection,
blocks of several cells, unequal lengths, initial states and the input gradient."""

from __future__ import annotations

import pytest
import torch

from lstmlab import LSTM, Batch, SequenceModel, check_gradients
from lstmlab.engines import structured
from lstmlab.engines.bptt import LAYOUTS, LSTMLayerBPTT, forced_layout
from lstmlab.engines.bptt_rows import LSTMLayerBPTTRows
from lstmlab.nn.lstm_cell import LSTMCell

F64 = torch.float64
LENGTHS = torch.tensor([7, 3, 1, 5, 7])

CASES = [
    dict(variant="F-LSTM", factorization_rank=1),
    dict(variant="F-LSTM", factorization_rank=3, proj_size=4),
    dict(variant="F-LSTM", factorization_rank=8, cells_per_block=2, num_layers=2),
    dict(variant="F-LSTM", factorization_rank=5, peepholes=False, full_gate_recurrence=True),
    dict(variant="G-LSTM", groups=2),
    dict(variant="G-LSTM", groups=4, proj_size=4, bidirectional=True),
    dict(variant="G-LSTM", groups=2, cells_per_block=2, peepholes=False, proj_size=2),
    dict(variant="G-LSTM", groups=4, input_gate=False, full_gate_recurrence=True),
]


def _id(kw):
    return "-".join(f"{k}={v}" for k, v in kw.items())


@pytest.fixture(params=LAYOUTS)
def layout(request):
    with forced_layout(request.param):
        yield request.param


def _rel(a, b):
    return (a - b).abs().max().item() / max(a.abs().max().item(), b.abs().max().item(), 1e-300)


def _loss(m, x, h0c0):
    out, (h, c) = m(x, h0c0, lengths=LENGTHS)
    w = torch.linspace(-1, 1, out.numel(), dtype=F64).view_as(out)
    return (w * out).sum() + (out**2).sum() + (h * 0.7).sum() + (c**2).sum() * 0.3


@pytest.mark.parametrize("kw", CASES, ids=_id)
def test_structured_bptt_equals_autograd(kw, layout):
    m = LSTM(8, 8, dtype=F64, seed=3, gate_sharpness={"i": 1.5, "f": 0.8, "o": 3.0}, **kw)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(7, 5, 8, generator=g, dtype=F64, requires_grad=True)
    L = m.num_layers * m.num_directions
    h0 = torch.randn(L, 5, m.proj_size or 8, generator=g, dtype=F64, requires_grad=True)
    c0 = torch.randn(L, 5, 8, generator=g, dtype=F64, requires_grad=True)
    wrt = [*m.parameters(), x, h0, c0]
    got = {}
    for engine in ("autograd", "bptt"):
        m.engine = engine
        loss = _loss(m, x, (h0, c0))
        got[engine] = (loss.detach(), torch.autograd.grad(loss, wrt))
    (l_ref, g_ref), (l_fast, g_fast) = got["autograd"], got["bptt"]
    assert abs(l_ref - l_fast) <= 1e-12 * max(1.0, abs(l_ref))
    names = [n for n, _ in m.named_parameters()] + ["x", "h0", "c0"]
    for name, a, b in zip(names, g_fast, g_ref, strict=True):
        assert _rel(a, b) <= 1e-10, name


@pytest.mark.parametrize(
    "kw",
    [
        dict(variant="F-LSTM", factorization_rank=2, proj_size=3),
        dict(variant="G-LSTM", groups=2, proj_size=2, cells_per_block=2),
    ],
    ids=_id,
)
def test_structured_finite_differences(kw, layout):
    model = SequenceModel(
        4, 4, 2, output="linear", read="every", dtype=F64, seed=5, gate_sharpness=1.3, **kw
    )
    I = model.rnn.input_size
    g = torch.Generator().manual_seed(6)
    x = torch.randn(4, 4, I, generator=g, dtype=F64)
    lengths = torch.tensor([4, 2, 3, 1])
    batch = Batch(x, torch.randn(4, 4, 2, generator=g, dtype=F64), lengths)
    report = check_gradients(lambda: model.loss(model(x, lengths), batch), model.parameters())
    assert report.max_relative_error <= 1e-6, report


@pytest.mark.parametrize("variant", ["F-LSTM", "G-LSTM"])
def test_no_dense_matrix_is_assembled(variant, layout, monkeypatch):
    """The engine runs on the factors / groups: the dense assembly of ``weights()`` is never
    called, and the Function receives W1, W2 (or Wg, Rg) themselves."""
    m = LSTM(
        8,
        8,
        variant=variant,
        dtype=F64,
        seed=1,
        factorization_rank=2 if variant == "F-LSTM" else None,
    )
    dense = LSTMCell.weights

    def no_dense(self, structured=False):
        assert structured, "the bptt engine asked for the dense effective matrices"
        return dense(self, structured)

    monkeypatch.setattr(LSTMCell, "weights", no_dense)
    x = torch.randn(5, 3, 8, dtype=F64)
    out, _ = m(x)
    out.sum().backward()
    cell = m.cells[0]
    params = (cell.W1, cell.W2) if variant == "F-LSTM" else (cell.Wg, cell.Rg)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)


@pytest.mark.parametrize("variant", ["F-LSTM", "G-LSTM"])
@pytest.mark.parametrize("layer", [LSTMLayerBPTT, LSTMLayerBPTTRows], ids=["features", "batch"])
def test_function_takes_dense_or_structured_weights(variant, layer):
    """The engine's Function also runs the dense effective matrices of an F/G spec (what code
    that calls it with ``weights()`` hands in), with the same outputs."""
    kw = dict(factorization_rank=3) if variant == "F-LSTM" else dict(groups=2)
    cell = LSTM(6, 4, variant=variant, dtype=F64, seed=2, proj_size=2, **kw).cells[0]
    x = torch.randn(5, 3, 6, dtype=F64)
    h0, c0 = torch.zeros(3, 2, dtype=F64), torch.zeros(3, 4, dtype=F64)
    alpha = {"i": 1.0, "f": 2.0, "o": 1.0}
    outs = []
    for structured_ in (False, True):
        w = cell.weights(structured=structured_)
        args = (
            w["W"],
            w["R"],
            w["b"],
            None,
            None,
            *(w["peep"].get(g) for g in "ifo"),
            None,
            w["W_p"],
        )
        outs.append(layer.apply(cell.spec, alpha, None, x, h0, c0, *args))
    for a, b in zip(*outs, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-13)


def test_multiply_adds():
    def spec(**kw):
        return LSTM(512, 512, peepholes=False, proj_size=None, **kw).cells[0].spec

    dense = 4 * 512 * 1024
    assert structured.multiply_adds(spec()) == dense
    assert structured.multiply_adds(spec(variant="F-LSTM", factorization_rank=128)) == (
        128 * 1024 + 2048 * 128
    )
    assert structured.multiply_adds(spec(variant="G-LSTM", groups=4)) == dense // 4


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(variant="F-LSTM", factorization_rank=0), "factorization_rank must be"),
        (dict(variant="F-LSTM", factorization_rank=9), r"factorization_rank must be in 1\.\.8"),
        (dict(variant="G-LSTM", groups=3), "groups=3 must divide"),
        (dict(variant="G-LSTM", groups=4, proj_size=6), "groups=4 must divide the recurrent size"),
    ],
    ids=["rank0", "rank>H", "groups3", "groups-proj"],
)
def test_bad_structure_arguments(kw, message):
    with pytest.raises(ValueError, match=message):
        LSTM(8, 8, **kw)
