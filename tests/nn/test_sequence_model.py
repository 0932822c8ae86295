"""SequenceModel: output layers, losses and their normalisation, read modes, validation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lstmlab import Batch, SequenceModel

F64 = torch.float64
LENGTHS = torch.tensor([5, 2, 4])


def _x(B=3, T=5, I=2, seed=0):
    return torch.randn(B, T, I, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _model(**kw):
    args = dict(input_size=2, hidden_size=4, output_size=3, dtype=F64, seed=1)
    args.update(kw)
    return SequenceModel(
        args.pop("input_size"), args.pop("hidden_size"), args.pop("output_size"), **args
    )


def test_linear_every_step_loss_is_half_squared_error_divided_by_length():
    m = _model(output="linear", read="every")
    x = _x()
    targets = torch.randn(3, 5, 3, dtype=F64)
    logits = m(x, LENGTHS)
    assert logits.shape == (3, 5, 3)
    expected = []
    for b, L in enumerate(LENGTHS.tolist()):
        expected.append(0.5 * ((logits[b, :L] - targets[b, :L]) ** 2).sum() / L)
    per = m.per_sample_loss(logits, Batch(x, targets, LENGTHS))
    torch.testing.assert_close(per, torch.stack(expected))
    torch.testing.assert_close(
        m.loss(logits, Batch(x, targets, LENGTHS)), torch.stack(expected).mean()
    )
    assert (logits[1, 2:] == 0).all(), "padded steps carry no output"


def test_sigmoid_output_is_the_1997_squared_error_unit():
    m = _model(output="sigmoid", read="last", output_size=1)
    x = _x()
    t = torch.rand(3, 1, dtype=F64)
    logits = m(x, LENGTHS)
    assert logits.shape == (3, 1)
    expected = 0.5 * (torch.sigmoid(logits) - t).pow(2).sum(-1)
    torch.testing.assert_close(m.per_sample_loss(logits, Batch(x, t, LENGTHS)), expected)
    torch.testing.assert_close(m.predict(x, LENGTHS), torch.sigmoid(logits))


def test_bernoulli_is_summed_binary_cross_entropy():
    m = _model(output="bernoulli", read="every", output_size=4)
    x = _x()
    t = torch.randint(0, 2, (3, 5, 4)).to(F64)
    logits = m(x, LENGTHS)
    p = torch.sigmoid(logits)
    step = -(t * p.log() + (1 - t) * (1 - p).log()).sum(-1)
    mask = (torch.arange(5) < LENGTHS[:, None]).to(F64)
    expected = (step * mask).sum(1) / LENGTHS
    torch.testing.assert_close(m.per_sample_loss(logits, Batch(x, t, LENGTHS)), expected)


def test_softmax_cross_entropy_with_ignored_steps():
    m = _model(output="softmax", read="every", output_size=3)
    x = _x()
    t = torch.randint(0, 3, (3, 5))
    t[0, 1] = -100  # no target at this step
    logits = m(x, LENGTHS)
    logp = torch.log_softmax(logits, -1)
    expected = []
    for b, L in enumerate(LENGTHS.tolist()):
        s = sum(-logp[b, k, t[b, k]] for k in range(L) if t[b, k] != -100)
        expected.append(s / L)
    torch.testing.assert_close(
        m.per_sample_loss(logits, Batch(x, t, LENGTHS)), torch.stack(expected)
    )
    torch.testing.assert_close(m.predict(x, LENGTHS).sum(-1)[0], torch.ones(5, dtype=F64))


def test_ctc_matches_torch_ctc_loss():
    m = _model(output="ctc", read="every", output_size=4, bidirectional=True)
    x = _x()
    targets = torch.tensor([[1, 2, 0], [3, 0, 0], [2, 2, 0]])
    tl = torch.tensor([2, 1, 1])
    logits = m(x, LENGTHS)
    batch = Batch(x, targets, LENGTHS, target_lengths=tl)
    ref = F.ctc_loss(
        torch.log_softmax(logits, -1).transpose(0, 1), targets, LENGTHS, tl, reduction="none"
    )
    torch.testing.assert_close(m.per_sample_loss(logits, batch), ref)
    with pytest.raises(ValueError, match="target_lengths"):
        m.loss(logits, Batch(x, targets, LENGTHS))


def test_read_last_uses_each_sequences_last_valid_step():
    m = _model(output="linear", read="last")
    x = _x()
    logits = m(x, LENGTHS)
    for b, L in enumerate(LENGTHS.tolist()):
        alone = m(x[b : b + 1, :L])
        torch.testing.assert_close(logits[b : b + 1], alone, rtol=0, atol=1e-13)


def test_bidirectional_read_last_sees_the_whole_sequence_both_ways():
    m = _model(output="linear", read="last", bidirectional=True)
    x = _x()
    logits = m(x, LENGTHS)
    for b, L in enumerate(LENGTHS.tolist()):
        torch.testing.assert_close(logits[b : b + 1], m(x[b : b + 1, :L]), rtol=0, atol=1e-13)
    # changing the first step of a sequence changes the backward direction's final state
    x2 = x.clone()
    x2[0, 0] += 1.0
    assert not torch.allclose(m(x2, LENGTHS)[0], logits[0])


@pytest.mark.parametrize("cell", ["lstm", "rnn", "mrnn", "gru"])
def test_every_cell_type_trains_in_a_sequence_model(cell):
    m = _model(cell=cell, output="softmax", read="last")
    x = _x()
    t = torch.tensor([0, 2, 1])
    loss = m.loss(m(x, LENGTHS), Batch(x, t, LENGTHS))
    loss.backward()
    assert math.isfinite(loss.item())
    assert all(p.grad is not None for p in m.parameters())


def test_return_states_holds_outputs_and_cell_states_of_every_layer():
    m = _model(num_layers=2, hidden_size=4)
    logits, states = m(_x(), LENGTHS, return_states=True)
    assert states.shape == (3, 5, 4 + 2 * 4)  # top output + each layer's cell states
    assert (states[1, 2:] == 0).all()


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(output="probit"), "output must be one of"),
        (dict(read="first"), "read must be one of"),
        (dict(cell="lstm2"), "cell must be one of"),
        (dict(output_size=0), "output_size must be a positive integer"),
        (dict(output="ctc", read="last"), "ctc"),
        (dict(cell="gru", engine="rtrl"), "engine 'rtrl' exists only for cell='lstm'"),
        (dict(cell="gru", variant="lstm97"), "unknown option"),
        (dict(variant="unknown"), "variant must be one of"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        _model(**kw)


def test_bad_targets():
    m = _model(output="softmax", read="last")
    x = _x()
    logits = m(x, LENGTHS)
    with pytest.raises(ValueError, match="class indices"):
        m.loss(logits, Batch(x, torch.tensor([0, 3, 1]), LENGTHS))
    with pytest.raises(ValueError, match="integer class indices"):
        m.loss(logits, Batch(x, torch.zeros(3, dtype=F64), LENGTHS))
    lin = _model(output="linear", read="last")
    with pytest.raises(ValueError, match="targets must have shape"):
        lin.loss(lin(x, LENGTHS), Batch(x, torch.zeros(3, 5, 3, dtype=F64), LENGTHS))


def test_engine_switch_on_the_model():
    m = _model()
    m.engine = "autograd"
    assert m.rnn.engine == "autograd"
    with pytest.raises(ValueError, match="engine must be one of"):
        m.engine = "nope"
