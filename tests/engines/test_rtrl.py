"""The 1997 rule (truncated BPTT + RTRL) against its definition, its per-sample twin and BPTT.

- the reference: ``truncated_step`` (``LSTMCell.step`` with ``.detach()`` at the truncation
  points) through autograd, registered for the test as engine ``"rtrl-reference"``;
- ``rtrl`` (whole-batch sensitivities) == reference to 1e-10, ``rtrl-per-sample`` == ``rtrl``
  to 1e-12, forward outputs == ``bptt``'s, on float64 padded batches of unequal lengths;
- where truncation removes nothing (T = 1 from a zero state without output peephole, or every
  weight that carries a truncated path set to zero) the rule equals full BPTT;
- unsupported uses fail with ValueError.
"""

from __future__ import annotations

import pytest
import torch

from lstmlab import engines
from lstmlab.nn import LSTM

F64 = torch.float64
LENGTHS = torch.tensor([6, 3, 1, 5, 6])  # unequal, some full-length, one of length 1
VARIANTS = ["vanilla", "NIG", "NFG", "NOG", "CIFG", "FGR", "lstm97", "NP", "F-LSTM", "G-LSTM"]
SHARPNESS = {"i": 1.5, "f": 0.8, "o": 3.75}


@pytest.fixture(autouse=True)
def _reference_engine(monkeypatch):
    """Make the truncated reference selectable by name (undone after each test)."""
    monkeypatch.setitem(engines._RUNNERS, "rtrl-reference", ("rtrl", "reference_run"))


def _inputs(I=4, T=6, B=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T, B, I, generator=g, dtype=F64)


def _loss(model, x, lengths, read):
    """``every``: outputs at every step, cell states and final states; ``last``: h_n only."""
    out, (h, c), states = model(x, lengths=lengths, return_states=True)
    if read == "last":
        w = torch.linspace(-1, 1, h.numel(), dtype=F64).view_as(h)
        return (w * h).sum() + (h**2).sum(), (out, h, c, states)
    w = torch.linspace(-1, 1, out.numel(), dtype=F64).view_as(out)
    loss = (w * out).sum() + (out**2).sum() + (h * 0.7).sum() + (c**2).sum() * 0.3
    loss = loss + sum(s.sin().sum() * 0.1 for s in states)
    return loss, (out, h, c, states)


def _grads(model, x, lengths, engine, read="every"):
    model.engine = engine
    loss, outs = _loss(model, x, lengths, read)
    return torch.autograd.grad(loss, list(model.parameters())), outs


def _rel(a, b):
    return (a - b).abs().max().item() / max(a.abs().max().item(), b.abs().max().item(), 1e-300)


def _assert_grads(model, got, want, tol):
    for (name, _), a, b in zip(model.named_parameters(), got, want, strict=True):
        assert _rel(a, b) <= tol, f"{name}: relative error {_rel(a, b):.2e}"


@pytest.mark.parametrize("read", ["every", "last"])
@pytest.mark.parametrize("proj", [None, 2], ids=lambda p: f"proj{p}")
@pytest.mark.parametrize("cpb", [1, 2], ids=lambda c: f"cpb{c}")
@pytest.mark.parametrize("variant", VARIANTS)
def test_rtrl_equals_truncated_reference(variant, cpb, proj, read):
    m = LSTM(
        4,
        4,
        variant=variant,
        cells_per_block=cpb,
        proj_size=proj,
        gate_sharpness=SHARPNESS,
        dtype=F64,
        seed=1,
        engine="rtrl",
    )
    x = _inputs()
    g_ref, _ = _grads(m, x, LENGTHS, "rtrl-reference", read)
    g_fast, outs = _grads(m, x, LENGTHS, "rtrl", read)
    g_loop, outs_loop = _grads(m, x, LENGTHS, "rtrl-per-sample", read)
    _assert_grads(m, g_fast, g_ref, 1e-10)
    _assert_grads(m, g_loop, g_fast, 1e-12)
    with torch.no_grad():
        m.engine = "bptt"
        want = _loss(m, x, LENGTHS, read)[1]
    for got in (outs, outs_loop):
        torch.testing.assert_close(got, want, atol=1e-13, rtol=0)


def test_truncation_changes_the_gradient():
    """Guard against a vacuous reference: on a generic network truncated != full gradient."""
    m = LSTM(4, 4, variant="lstm97", cells_per_block=2, dtype=F64, seed=1, init_scale=0.5)
    x = _inputs()
    g_full, _ = _grads(m, x, LENGTHS, "bptt")
    g_trunc, _ = _grads(m, x, LENGTHS, "rtrl")
    assert max(_rel(a, b) for a, b in zip(g_full, g_trunc, strict=True)) > 1e-3


@pytest.mark.parametrize("variant", ["NP", "NOG", "CIFG", "lstm97"])
def test_single_step_from_zero_state_equals_full_bptt(variant):
    """T = 1, zero initial state: y_0, q_0, c_0 are constants anyway; the output peephole
    (the one truncation inside a step) is switched off."""
    m = LSTM(3, 4, variant=variant, cells_per_block=2, peepholes=False, dtype=F64, seed=3)
    x = _inputs(I=3, T=1, B=4)
    g_full, _ = _grads(m, x, None, "bptt")
    g_trunc, _ = _grads(m, x, None, "rtrl")
    _assert_grads(m, g_trunc, g_full, 1e-12)


@pytest.mark.parametrize(
    "kw",
    [
        dict(variant="vanilla"),
        dict(variant="CIFG", cells_per_block=2),
        dict(variant="lstm97", cells_per_block=2, proj_size=2),
        dict(variant="NFG", proj_size=3),
    ],
    ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()),
)
def test_equals_full_bptt_when_truncated_weights_are_zero(kw):
    """Every truncated path leaves a step through R (y_{t-1}), Q (q_{t-1}) or a peephole
    (c_{t-1} into i, f; c_t into o); with those weights zero, full BPTT carries no error
    along them, so both rules give the same gradient — R, Q and P included."""
    m = LSTM(3, 4, gate_sharpness=SHARPNESS, dtype=F64, seed=4, **kw)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.split(".")[-1] == "R" or name.endswith(".Q") or "peep_" in name:
                p.zero_()
    x = _inputs(I=3)
    for read in ("every", "last"):
        g_full, _ = _grads(m, x, LENGTHS, "bptt", read)
        g_trunc, _ = _grads(m, x, LENGTHS, "rtrl", read)
        _assert_grads(m, g_trunc, g_full, 1e-10)


def test_bidirectional_single_layer():
    m = LSTM(4, 4, variant="lstm97", cells_per_block=2, bidirectional=True, dtype=F64, seed=5)
    x = _inputs()
    g_ref, _ = _grads(m, x, LENGTHS, "rtrl-reference")
    g_fast, _ = _grads(m, x, LENGTHS, "rtrl")
    _assert_grads(m, g_fast, g_ref, 1e-10)


def test_initial_state_gets_no_gradient():
    m = LSTM(3, 4, dtype=F64, seed=6, engine="rtrl")
    h0 = torch.zeros(1, 2, 4, dtype=F64, requires_grad=True)
    c0 = torch.rand(1, 2, 4, dtype=F64, requires_grad=True)
    out, _ = m(_inputs(I=3, B=2), (h0, c0))
    grads = torch.autograd.grad(out.sum(), [h0, c0, m.cells[0].W], allow_unused=True)
    assert grads[0] is None and grads[1] is None and grads[2] is not None


@pytest.mark.parametrize("engine", ["rtrl", "rtrl-per-sample"])
def test_unsupported_uses_raise(engine):
    x = _inputs(I=3)
    with pytest.raises(ValueError, match=f"{engine}.*mLSTM"):
        LSTM(3, 4, variant="mLSTM", dtype=F64, engine=engine)(x)
    with pytest.raises(ValueError, match="num_layers=1"):
        LSTM(3, 4, num_layers=2, dtype=F64, engine=engine)(x)
    with pytest.raises(ValueError, match="no gradient for the layer input"):
        LSTM(3, 4, dtype=F64, engine=engine)(x.clone().requires_grad_())
    # without gradients a stacked forward is fine, and equals the other engines'
    m = LSTM(3, 4, num_layers=2, dtype=F64, seed=7, engine=engine)
    with torch.no_grad():
        out, _ = m(x, lengths=LENGTHS)
        m.engine = "bptt"
        want, _ = m(x, lengths=LENGTHS)
    torch.testing.assert_close(out, want, atol=1e-13, rtol=0)


def test_engine_names():
    names = engines.engine_names()
    assert "rtrl" in names and "rtrl-per-sample" in names and "rtrl:per-sample" in names
