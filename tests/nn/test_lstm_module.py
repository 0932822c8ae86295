"""LSTM module: torch.nn.LSTM mapping, validation, initialisers, gate sharpness, state."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lstmlab import LSTM
from lstmlab.schedules import Linear

F64 = torch.float64


def _torch_lstm(seed=0, **kw):
    torch.manual_seed(seed)
    return nn.LSTM(3, 5, dtype=F64, **kw)


TORCH_CONFIGS = [
    dict(),
    dict(num_layers=2),
    dict(bidirectional=True),
    dict(num_layers=2, bidirectional=True, proj_size=3),
    dict(proj_size=2),
    dict(batch_first=True),
    dict(bias=False),
]


@pytest.mark.parametrize("engine", ["bptt", "autograd"])
@pytest.mark.parametrize(
    "kw", TORCH_CONFIGS, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()) or "default"
)
def test_from_torch_outputs_and_gradients(kw, engine):
    ref = _torch_lstm(**kw)
    ours = LSTM.from_torch(ref, engine=engine)
    assert ours.variant == "NP"
    g = torch.Generator().manual_seed(1)
    x = torch.randn(7, 4, 3, generator=g, dtype=F64)
    if kw.get("batch_first"):
        x = x.transpose(0, 1).contiguous()
    o_ref, (h_ref, c_ref) = ref(x)
    o, (h, c) = ours(x)
    torch.testing.assert_close(o, o_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(h, h_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(c, c_ref, rtol=0, atol=1e-12)
    loss_ref = (o_ref**2).sum() + h_ref.sum() + (c_ref**2).sum()
    loss = (o**2).sum() + h.sum() + (c**2).sum()
    gx_ref = torch.autograd.grad(loss_ref, list(ref.parameters()))
    gx = torch.autograd.grad(loss, list(ours.parameters()))
    # map torch's gradients onto ours: W/R rows permuted, the two biases summed
    named = dict(ref.named_parameters())
    grads_ref = dict(zip(named, gx_ref, strict=True))
    H = 5
    perm = torch.cat(
        [torch.arange(2 * H, 3 * H), torch.arange(0, 2 * H), torch.arange(3 * H, 4 * H)]
    )
    for k in range(len(ours.cells)):
        sfx = f"l{k // ours.num_directions}" + ("_reverse" if k % ours.num_directions else "")
        got = dict(zip([n for n, _ in ours.named_parameters()], gx, strict=True))
        pre = f"cells.{k}."
        torch.testing.assert_close(
            got[pre + "W"], grads_ref[f"weight_ih_{sfx}"][perm], rtol=0, atol=1e-11
        )
        torch.testing.assert_close(
            got[pre + "R"], grads_ref[f"weight_hh_{sfx}"][perm], rtol=0, atol=1e-11
        )
        if kw.get("bias", True):
            torch.testing.assert_close(
                got[pre + "b"], grads_ref[f"bias_ih_{sfx}"][perm], rtol=0, atol=1e-11
            )
        if kw.get("proj_size"):
            torch.testing.assert_close(
                got[pre + "W_p"], grads_ref[f"weight_hr_{sfx}"], rtol=0, atol=1e-11
            )


def test_from_torch_with_lengths_matches_packed_sequences():
    ref = _torch_lstm(bidirectional=True, num_layers=2)
    ours = LSTM.from_torch(ref)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(6, 4, 3, generator=g, dtype=F64)
    lengths = torch.tensor([6, 2, 5, 1])
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
    o_ref, (h_ref, c_ref) = ref(packed)
    o_ref, _ = nn.utils.rnn.pad_packed_sequence(o_ref, total_length=6)
    o, (h, c) = ours(x, lengths=lengths)
    torch.testing.assert_close(o, o_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(h, h_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(c, c_ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kw", TORCH_CONFIGS[:5], ids=str)
def test_to_torch_round_trip(kw):
    ours = LSTM(3, 5, variant="NP", dtype=F64, seed=3, **kw)
    ref = ours.to_torch()
    x = torch.randn(5, 2, 3, dtype=F64)
    torch.testing.assert_close(ours(x)[0], ref(x)[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "kw",
    [
        dict(variant="vanilla"),
        dict(variant="NP", cells_per_block=5),
        dict(variant="NP", gate_sharpness=2.0),
        dict(variant="lstm97"),
    ],
    ids=str,
)
def test_to_torch_rejects_what_torch_cannot_express(kw):
    with pytest.raises(ValueError, match="to_torch"):
        LSTM(3, 5, **kw).to_torch()


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(variant="nope"), "variant must be one of"),
        (dict(hidden_size=0), "hidden_size must be a positive integer"),
        (dict(input_size=-1), "input_size must be a positive integer"),
        (dict(num_layers=0), "num_layers must be a positive integer"),
        (dict(cells_per_block=0), "cells_per_block must be a positive integer"),
        (dict(hidden_size=5, cells_per_block=2), "divisible by cells_per_block"),
        (dict(gate_sharpness=0.0), "gate_sharpness .* must be > 0"),
        (dict(gate_sharpness=-1.0), "gate_sharpness .* must be > 0"),
        (dict(gate_sharpness={"i": 1.0, "x": 2.0}), "gate_sharpness keys"),
        (dict(gate_sharpness=float("nan")), "finite"),
        (dict(proj_size=0), "proj_size must be a positive integer"),
        (dict(engine="fast"), "engine must be one of"),
        (dict(init="zeros"), "init must be one of"),
        (dict(input_activation="relu"), "input_activation must be one of"),
        (dict(variant="CIFG", input_gate=False), "coupled_input_forget"),
        (dict(variant="mLSTM", groups=2), "at most one"),
        (dict(variant="G-LSTM", groups=3), "groups=3 must divide"),
        (dict(gate_bias={"f": 1.0}, variant="lstm97"), "no 'f' gate"),
        (dict(gate_bias={"i": [1.0, 2.0, 3.0]}), "one per block"),
        (dict(gate_bias="00"), "table of gate -> bias"),
        (dict(gate_bias={"i": float("nan")}), "must be finite"),
        (dict(gate_bias={"o": "x"}), "one per block"),
        (dict(dtype=torch.int64), "floating-point"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_construction_arguments(kw, match):
    args = dict(input_size=4, hidden_size=4)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        LSTM(args.pop("input_size"), args.pop("hidden_size"), **args)


def test_gate_sharpness_schedule_rejects_nonpositive_value_at_epoch():
    m = LSTM(2, 4, gate_sharpness=Linear(1.0, -1.0, 10))
    with pytest.raises(ValueError, match="gate_sharpness .* epoch 10"):
        m.set_epoch(10)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m: m(torch.randn(5, 3)), "rank 3"),
        (lambda m: m(torch.randn(5, 3, 7)), "input_size=4"),
        (
            lambda m: m(torch.randn(5, 3, 4), lengths=torch.tensor([5, 6, 1])),
            r"lengths must lie in \[1, 5\]",
        ),
        (
            lambda m: m(torch.randn(5, 3, 4), lengths=torch.tensor([5, 0, 1])),
            r"lengths must lie in",
        ),
        (
            lambda m: m(torch.randn(5, 3, 4), lengths=torch.tensor([5, 1])),
            r"lengths must have shape \(3,\)",
        ),
        (lambda m: m(torch.randn(5, 3, 4), lengths=torch.tensor([5.0, 1, 1])), "integer"),
        (lambda m: m(torch.full((5, 3, 4), float("nan"))), "NaN or Inf"),
        (lambda m: m(torch.randn(5, 3, 4).double()), "dtype"),
        (
            lambda m: m(torch.randn(5, 3, 4), (torch.zeros(1, 3, 4), torch.zeros(1, 2, 4))),
            "c0 must have shape",
        ),
    ],
    ids=[
        "rank",
        "features",
        "too-long",
        "zero-length",
        "lengths-shape",
        "float-lengths",
        "nan",
        "dtype",
        "hx",
    ],
)
def test_bad_call_arguments(call, match):
    m = LSTM(4, 4)
    with pytest.raises(ValueError, match=match):
        call(m)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_one_non_finite_element_is_caught(bad):
    x = torch.randn(5, 3, 4)
    x[4, 2, 3] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        LSTM(4, 4)(x)


def test_finite_input_whose_sum_overflows_is_accepted():
    """The finite check sums first (cheap); an overflowing sum must fall back to the exact test."""
    from lstmlab.nn.lstm import all_finite

    x = torch.full((5, 3, 4), 3e38)  # finite in float32; the sum is inf
    assert not torch.isfinite(x.sum()) and all_finite(x)
    out, _ = LSTM(4, 4)(x)
    assert torch.isfinite(out).all()
    x[0, 0, 0] = float("nan")
    assert not all_finite(x)


# ---------------------------------------------------------------- variants and switches
def test_variant_is_defaults_for_switches():
    a = LSTM(3, 4, variant="vanilla", peepholes=False, seed=0)
    b = LSTM(3, 4, variant="NP", seed=0)
    assert a.switches == b.switches
    assert [n for n, _ in a.named_parameters()] == [n for n, _ in b.named_parameters()]


def test_parameter_shapes_per_variant():
    def names(**kw):
        return {
            n.split(".")[-1]: tuple(p.shape)
            for n, p in LSTM(3, 4, cells_per_block=2, **kw).named_parameters()
        }

    v = names()
    assert v["W"] == (4 + 3 * 2, 3) and v["R"] == (10, 4) and v["peep_i"] == (2, 2)
    l97 = names(variant="lstm97")
    assert "peep_f" not in l97 and l97["Q"] == (4, 4) and l97["W"] == (4 + 2 * 2, 3)
    assert "peep_f" not in names(variant="CIFG")
    assert names(variant="F-LSTM", factorization_rank=2)["W1"] == (2, 7)
    g = dict(LSTM(4, 4, variant="G-LSTM", groups=2).cells[0].named_parameters())
    assert tuple(g["Wg"].shape) == (2, (4 + 3 * 4) // 2, 2) and tuple(g["Rg"].shape) == (2, 8, 2)
    m = names(variant="mLSTM", multiplicative_size=6)
    assert m["W_mx"] == (6, 3) and m["W_mh"] == (6, 4) and m["R"] == (10, 6)
    assert names(proj_size=2)["W_p"] == (2, 4)


def test_f_and_g_lstm_have_fewer_parameters():
    def count(**kw):
        return sum(p.numel() for p in LSTM(64, 64, **kw).parameters())

    full = count(variant="NP")
    assert count(variant="NP", factorization_rank=16) < full
    assert count(variant="NP", groups=4) < full


# ---------------------------------------------------------------- initialisers
def test_initialisers():
    u = LSTM(10, 20, init="uniform", seed=0).cells[0]
    assert u.W.abs().max() <= 0.1 and u.W.abs().max() > 0.09
    gau = LSTM(50, 50, init="gaussian", seed=0).cells[0]
    assert abs(gau.W.std().item() - 0.1) < 0.01
    sp = LSTM(30, 20, init="sparse", seed=0).cells[0]
    nz = (torch.cat([sp.W, sp.R], 1) != 0).sum(1)
    assert (nz == 15).all()
    assert (sp.peep_i == 0).all()
    t = LSTM(10, 16, init="torch", seed=0).cells[0]
    assert t.W.abs().max() <= 0.25
    gb = LSTM(2, 6, cells_per_block=2, variant="lstm97", gate_bias={"i": [-1.0, -3.0, -6.0]}).cells[
        0
    ]
    assert gb.b[gb.spec.gate_slice("i")].tolist() == [-1.0, -3.0, -6.0]
    fb = LSTM(2, 4, gate_bias={"f": 1.0}).cells[0]
    assert (fb.b[fb.spec.gate_slice("f")] == 1.0).all()


def test_torch_init_draws_the_bias_as_torch_nn_lstm_does():
    """torch.nn.LSTM's effective bias b_ih + b_hh is the sum of two U[-k, k] draws, k = 1/√H
    (variance 2k²/3); lstmlab's one bias with init="torch" is drawn the same way, not zero."""
    H = 400
    k = 1 / math.sqrt(H)
    ours = LSTM(10, H, init="torch", seed=0).cells[0].b.detach()
    ref = torch.nn.LSTM(10, H)
    theirs = (ref.bias_ih_l0 + ref.bias_hh_l0).detach()
    for b in (ours, theirs):
        assert b.abs().max() <= 2 * k and b.abs().max() > 1.5 * k
        assert abs(b.var().item() / (2 * k * k / 3) - 1) < 0.1
    assert (LSTM(10, H, init="uniform", seed=0).cells[0].b == 0).all()


def test_seed_makes_initialisation_reproducible():
    a, b = LSTM(3, 4, seed=5), LSTM(3, 4, seed=5)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


# ---------------------------------------------------------------- gate sharpness and state
def test_gate_sharpness_changes_the_gate_and_follows_schedule():
    m = LSTM(3, 4, gate_sharpness=Linear(1.0, 3.75, 10), dtype=F64, seed=0)
    x = torch.randn(4, 2, 3, dtype=F64)
    y0 = m(x)[0]
    m.set_epoch(10)
    assert m.alpha() == {"i": 3.75, "f": 3.75, "o": 3.75}
    y1 = m(x)[0]
    assert not torch.allclose(y0, y1)
    m2 = LSTM(3, 4, gate_sharpness=Linear(1.0, 3.75, 10), dtype=F64, seed=0)
    m2.load_state_dict(m.state_dict())
    assert m2.epoch == 10
    torch.testing.assert_close(m2(x)[0], y1, rtol=0, atol=0)


def test_per_gate_sharpness():
    m = LSTM(3, 4, gate_sharpness={"i": 2.0, "o": 4.0})
    assert m.alpha() == {"i": 2.0, "f": 1.0, "o": 4.0}


def test_engine_switch_keeps_parameters():
    m = LSTM(3, 4, seed=0)
    sd = {k: v.clone() for k, v in m.state_dict().items()}
    m.engine = "autograd"
    assert all(torch.equal(sd[k], v) for k, v in m.state_dict().items())


def test_from_torch_rejects_what_it_cannot_map():
    with pytest.raises(ValueError, match="dropout"):
        LSTM.from_torch(nn.LSTM(3, 4, num_layers=2, dropout=0.5))
    with pytest.raises(ValueError, match="torch.nn.LSTM"):
        LSTM.from_torch(nn.GRU(3, 4))
