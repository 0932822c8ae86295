"""The pieces of M&S's released tanh RNN: a learned initial state and a sparse readout."""

from __future__ import annotations

import pytest
import torch

from lstmlab.nn.rnn import RNN
from lstmlab.nn.sequence_model import SequenceModel


def test_learned_h0_starts_the_recurrence_and_gets_a_gradient():
    torch.manual_seed(0)
    r = RNN(2, 5, learn_h0=True, init="sparse", init_scale=0.5, bias=False, dtype=torch.float64)
    assert [n for n, _ in r.named_parameters()] == ["weight_ih_l0", "weight_hh_l0", "h0_l0"]
    h0 = r.h0_l0
    assert (h0 != 0).all() and 0.1 < float(
        h0.detach().abs().mean()
    ) < 1.0  # every entry N(0, 1)·0.5
    x = torch.randn(4, 3, 2, dtype=torch.float64)  # (T, B, I)
    out, h_n = r(x)
    h = h0.detach().expand(3, 5)
    for t in range(4):
        h = torch.tanh(x[t] @ r.weight_ih_l0.detach().T + h @ r.weight_hh_l0.detach().T)
        assert torch.allclose(out[t], h)
    out.sum().backward()
    assert h0.grad is not None and h0.grad.abs().sum() > 0
    plain = RNN(2, 5, init="sparse", bias=False, dtype=torch.float64)  # default: h0 = 0
    assert not plain.learn_h0 and not hasattr(plain, "h0_l0")
    with pytest.raises(ValueError, match="learn_h0=True has no torch equivalent"):
        r.to_torch()
    with pytest.raises(ValueError, match="learn_h0 must be true or false"):
        RNN(2, 5, learn_h0="yes")


def test_sparse_readout_has_15_inputs_per_output_and_uniform_stays_default():
    m = SequenceModel(2, 30, 3, cell="rnn", head_init="sparse", head_scale=0.25, seed=0)
    w = m.head.weight.detach()
    assert ((w != 0).sum(1) == 15).all() and float(w.abs().max()) < 0.25 * 6
    assert (m.head.bias == 0).all()
    u = SequenceModel(2, 30, 3, cell="rnn", seed=0).head.weight.detach()
    assert (u != 0).all() and float(u.abs().max()) <= 0.1
    with pytest.raises(ValueError, match="head_init must be one of"):
        SequenceModel(2, 30, 3, cell="rnn", head_init="gaussian")
    with pytest.raises(ValueError, match="head_scale must be a finite number > 0"):
        SequenceModel(2, 30, 3, cell="rnn", head_scale=0)
