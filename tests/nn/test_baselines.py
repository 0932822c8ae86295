"""Baseline recurrent layers (RNN, MRNN, GRU) against their oracles.

- RNN / GRU: `torch.nn.RNN` / `torch.nn.GRU` through `from_torch` (outputs and gradients, float64);
- MRNN: a per-sample, per-step reference that builds W_hh(x_t) = W_hm diag(W_mx x_t) W_mh as an
  explicit matrix, and `torch.autograd.gradcheck`;
- padded batches: equal to each sequence run alone (outputs, h_n, per-sample gradients);
- initialiser statistics and argument validation.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

from lstmlab.nn.gru import GRU
from lstmlab.nn.mrnn import MRNN
from lstmlab.nn.rnn import RNN

F64 = torch.float64
TOL = dict(atol=1e-10, rtol=0)
CONFIGS = [
    pytest.param(L, bi, bf, id=f"L{L}-{'bi' if bi else 'uni'}-{'bf' if bf else 'tf'}")
    for L in (1, 2)
    for bi in (False, True)
    for bf in (False, True)
]
TORCH_PAIRS = [pytest.param(RNN, nn.RNN, id="RNN"), pytest.param(GRU, nn.GRU, id="GRU")]
ALL = [pytest.param(RNN, id="RNN"), pytest.param(MRNN, id="MRNN"), pytest.param(GRU, id="GRU")]


def _torch_grads_as_ours(ours: nn.Module, ref: nn.Module) -> dict[str, torch.Tensor]:
    """Map torch's parameter gradients onto our parameter names (biases merged as from_torch)."""
    H = ours.hidden_size
    out = {}
    for layer, d, sfx in ours._torch_layers():
        out[ours._pname("weight_ih", layer, d)] = getattr(ref, "weight_ih" + sfx).grad
        out[ours._pname("weight_hh", layer, d)] = getattr(ref, "weight_hh" + sfx).grad
        if ours.bias:
            g_ih = getattr(ref, "bias_ih" + sfx).grad
            g_hh = getattr(ref, "bias_hh" + sfx).grad
            if isinstance(ours, GRU):
                # b_r, b_z enter as b_ih + b_hh (equal gradients); b_n is b_ih's own
                torch.testing.assert_close(g_ih[: 2 * H], g_hh[: 2 * H], **TOL)
                out[ours._pname("bias", layer, d)] = g_ih
                out[ours._pname("bias_hn", layer, d)] = g_hh[2 * H :]
            else:
                torch.testing.assert_close(g_ih, g_hh, **TOL)
                out[ours._pname("bias", layer, d)] = g_ih
    return out


@pytest.mark.parametrize("ours_cls, torch_cls", TORCH_PAIRS)
@pytest.mark.parametrize("num_layers, bidirectional, batch_first", CONFIGS)
def test_matches_torch(ours_cls, torch_cls, num_layers, bidirectional, batch_first):
    torch.manual_seed(0)
    I, H, T, B = 3, 4, 5, 2
    ref = torch_cls(
        I, H, num_layers, bidirectional=bidirectional, batch_first=batch_first, dtype=F64
    )
    ours = ours_cls.from_torch(ref)
    D = 2 if bidirectional else 1
    x = torch.randn((B, T, I) if batch_first else (T, B, I), dtype=F64)
    h0 = torch.randn(num_layers * D, B, H, dtype=F64)
    w_out = torch.randn((B, T, D * H) if batch_first else (T, B, D * H), dtype=F64)
    w_h = torch.randn(num_layers * D, B, H, dtype=F64)

    results = []
    for model in (ours, ref):
        xi, hi = x.clone().requires_grad_(), h0.clone().requires_grad_()
        out, h_n = model(xi, hi)
        ((out * w_out).sum() + (h_n * w_h).sum()).backward()
        results.append((out, h_n, xi.grad, hi.grad))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, **TOL)
    want = _torch_grads_as_ours(ours, ref)
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, want[name], **TOL, msg=name)


@pytest.mark.parametrize("ours_cls, torch_cls", TORCH_PAIRS)
def test_matches_torch_without_bias(ours_cls, torch_cls):
    torch.manual_seed(1)
    ref = torch_cls(3, 4, 2, bias=False, bidirectional=True, dtype=F64)
    ours = ours_cls.from_torch(ref)
    assert not ours.bias and not any("bias" in n for n, _ in ours.named_parameters())
    x = torch.randn(5, 2, 3, dtype=F64)
    for a, b in zip(ours(x), ref(x), strict=True):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("ours_cls, torch_cls", TORCH_PAIRS)
def test_matches_torch_packed_sequence(ours_cls, torch_cls):
    torch.manual_seed(2)
    ref = torch_cls(3, 4, 2, bidirectional=True, batch_first=True, dtype=F64)
    ours = ours_cls.from_torch(ref)
    lengths = torch.tensor([5, 2, 4])
    x = torch.randn(3, 5, 3, dtype=F64) * (torch.arange(5) < lengths[:, None]).unsqueeze(-1)
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out_ref, h_ref = ref(packed)
    out_ref, _ = nn.utils.rnn.pad_packed_sequence(out_ref, batch_first=True, total_length=5)
    out, h_n = ours(x, lengths=lengths)
    torch.testing.assert_close(out, out_ref, **TOL)
    torch.testing.assert_close(h_n, h_ref, **TOL)


@pytest.mark.parametrize("ours_cls, torch_cls", TORCH_PAIRS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_to_torch_round_trip(ours_cls, torch_cls, bias):
    torch.manual_seed(3)
    ours = ours_cls(3, 4, 2, bidirectional=True, batch_first=True, bias=bias, dtype=F64)
    ref = ours.to_torch()
    assert isinstance(ref, torch_cls) and ref.batch_first and ref.bidirectional
    assert ref.num_layers == 2 and ref.bias == bias and ref.weight_hh_l0.dtype == F64
    x = torch.randn(2, 5, 3, dtype=F64)
    for a, b in zip(ours(x), ref(x), strict=True):
        torch.testing.assert_close(a, b, **TOL)
    back = ours_cls.from_torch(ref)
    for (n1, p1), (n2, p2) in zip(ours.named_parameters(), back.named_parameters(), strict=True):
        assert n1 == n2
        torch.testing.assert_close(p1, p2, **TOL)


def test_from_torch_rejects_inexpressible_modules():
    with pytest.raises(ValueError, match="nonlinearity"):
        RNN.from_torch(nn.RNN(2, 3, nonlinearity="relu"))
    with pytest.raises(ValueError, match="dropout"):
        GRU.from_torch(nn.GRU(2, 3, 2, dropout=0.5))
    with pytest.raises(ValueError, match="module"):
        GRU.from_torch(nn.LSTM(2, 3))


# -- variable lengths -------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("batch_first", [False, True], ids=["tf", "bf"])
def test_padded_batch_equals_each_sequence_alone(cls, batch_first):
    torch.manual_seed(4)
    model = cls(3, 4, 2, bidirectional=True, batch_first=batch_first, dtype=F64)
    T, B, H = 6, 3, 4
    lengths = torch.tensor([6, 2, 4])
    valid = torch.arange(T)[:, None] < lengths  # (T, B)
    x = torch.randn(T, B, 3, dtype=F64) * valid.unsqueeze(-1)
    h0 = torch.randn(4, B, H, dtype=F64)
    w = torch.randn(T, B, 2 * H, dtype=F64)

    def tb(a):  # (T, B, ...) <-> (B, T, ...) as the model expects
        return a.transpose(0, 1) if batch_first else a

    def sample_loss(out, h_n, col, b, L):  # loss of sample b, found at column col of out/h_n
        return (tb(out)[:L, col] * w[:L, b]).sum() + h_n[:, col].pow(2).sum()

    out, h_n = model(tb(x), h0, lengths=lengths)
    assert (tb(out)[~valid] == 0).all(), "outputs at padded steps must be zero"
    params = dict(model.named_parameters())
    for b, L in enumerate(lengths.tolist()):
        alone_out, alone_h = model(tb(x[:L, b : b + 1]), h0[:, b : b + 1].contiguous())
        torch.testing.assert_close(tb(out)[:L, b], tb(alone_out)[:, 0], **TOL)
        torch.testing.assert_close(h_n[:, b], alone_h[:, 0], **TOL)
        # per-sample gradient from the padded batch == gradient of the sequence run alone
        g_batch = torch.autograd.grad(
            sample_loss(out, h_n, b, b, L), list(params.values()), retain_graph=True
        )
        g_alone = torch.autograd.grad(
            sample_loss(alone_out, alone_h, 0, b, L), list(params.values())
        )
        for name, g1, g2 in zip(params, g_batch, g_alone, strict=True):
            torch.testing.assert_close(g1, g2, **TOL, msg=name)


def test_full_lengths_equal_no_lengths():
    torch.manual_seed(5)
    model = GRU(3, 4, bidirectional=True, dtype=F64)
    x = torch.randn(5, 2, 3, dtype=F64)
    for a, b in zip(model(x), model(x, lengths=torch.tensor([5, 5])), strict=True):
        torch.testing.assert_close(a, b, **TOL)


# -- MRNN -------------------------------------------------------------------------------------


def _mrnn_reference(model: MRNN, x: torch.Tensor, h0: torch.Tensor):
    """Per sample, per step, with W_hh(x_t) = W_hm diag(W_mx x_t) W_mh built as a matrix.

    x (T, B, I) time-major, no padding; returns output (T, B, D·H), h_n (L·D, B, H).
    """
    D = model.num_directions
    outs, h_n = [], []
    for b in range(x.shape[1]):
        seq = [x[t, b] for t in range(x.shape[0])]  # list of (I,)
        hs_b = []
        for layer in range(model.num_layers):
            per_dir = []
            for d in range(D):
                p = model.direction_parameters(layer, d)
                h = h0[layer * D + d, b]
                ys = []
                for x_t in seq if d == 0 else seq[::-1]:
                    W_hh = p["weight_hm"] @ torch.diag(p["weight_mx"] @ x_t) @ p["weight_mh"]
                    h = torch.tanh(p["weight_hx"] @ x_t + W_hh @ h + p["bias"])
                    ys.append(h)
                per_dir.append(ys if d == 0 else ys[::-1])
                hs_b.append(h)
            seq = [torch.cat(ys_t) for ys_t in zip(*per_dir, strict=True)]
        outs.append(torch.stack(seq))  # (T, D·H)
        h_n.append(torch.stack(hs_b))  # (L·D, H)
    return torch.stack(outs, dim=1), torch.stack(h_n, dim=1)


@pytest.mark.parametrize("num_layers, bidirectional, batch_first", CONFIGS)
def test_mrnn_matches_explicit_matrix_reference(num_layers, bidirectional, batch_first):
    torch.manual_seed(6)
    model = MRNN(
        3,
        4,
        num_layers,
        multiplicative_size=5,
        bidirectional=bidirectional,
        batch_first=batch_first,
        init="gaussian",
        init_scale=0.5,
        dtype=F64,
    )
    D = model.num_directions
    x = torch.randn(4, 2, 3, dtype=F64)
    h0 = torch.randn(num_layers * D, 2, 4, dtype=F64)
    out, h_n = model(x.transpose(0, 1) if batch_first else x, h0)
    out = out.transpose(0, 1) if batch_first else out
    out_ref, h_ref = _mrnn_reference(model, x, h0)
    torch.testing.assert_close(out, out_ref, **TOL)
    torch.testing.assert_close(h_n, h_ref, **TOL)
    params = list(model.parameters())
    g = torch.autograd.grad(out.sum() + h_n.sum(), params)
    g_ref = torch.autograd.grad(out_ref.sum() + h_ref.sum(), params)
    for a, b in zip(g, g_ref, strict=True):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("use_lengths", [False, True], ids=["full", "lengths"])
def test_mrnn_gradcheck(use_lengths):
    torch.manual_seed(7)
    model = MRNN(
        2,
        3,
        2,
        multiplicative_size=2,
        bidirectional=True,
        init="gaussian",
        init_scale=0.5,
        dtype=F64,
    )
    names = [n for n, _ in model.named_parameters()]
    lengths = torch.tensor([3, 2]) if use_lengths else None

    def f(x, h0, *params):
        out, h_n = functional_call(
            model, dict(zip(names, params, strict=True)), (x, h0), {"lengths": lengths}
        )
        return out, h_n

    x = torch.randn(3, 2, 2, dtype=F64, requires_grad=True)
    h0 = torch.randn(4, 2, 3, dtype=F64, requires_grad=True)
    params = [p.detach().clone().requires_grad_() for p in model.parameters()]
    assert torch.autograd.gradcheck(f, (x, h0, *params))


def test_mrnn_multiplicative_size_default_and_shapes():
    m = MRNN(3, 4)
    assert m.multiplicative_size == 4
    m = MRNN(3, 4, 2, multiplicative_size=7, bidirectional=True)
    assert m.weight_mx_l1_reverse.shape == (7, 8) and m.weight_hm_l0.shape == (4, 7)


# -- dtypes, initialisers ---------------------------------------------------------------------


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_dtype_and_shapes(cls, dtype):
    model = cls(3, 4, 2, bidirectional=True, batch_first=True, dtype=dtype)
    out, h_n = model(torch.randn(2, 5, 3, dtype=dtype))
    assert out.shape == (2, 5, 8) and out.dtype == dtype
    assert h_n.shape == (4, 2, 4) and h_n.dtype == dtype


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("cls", ALL)
def test_cuda_matches_cpu(cls):
    torch.manual_seed(8)
    model = cls(3, 4, 2, bidirectional=True, dtype=F64)
    x, lengths = torch.randn(5, 3, 3, dtype=F64), torch.tensor([5, 2, 4])
    out, h_n = model(x, lengths=lengths)
    out_c, h_c = model.to("cuda")(x.cuda(), lengths=lengths)
    torch.testing.assert_close(out_c.cpu(), out, atol=1e-9, rtol=0)
    torch.testing.assert_close(h_c.cpu(), h_n, atol=1e-9, rtol=0)


def _weights(model):
    return [p for n, p in model.named_parameters() if n.startswith("weight")]


def _biases(model):
    return [p for n, p in model.named_parameters() if n.startswith("bias")]


@pytest.mark.parametrize("cls", ALL)
def test_init_uniform_and_gaussian(cls):
    torch.manual_seed(9)
    u = torch.cat([p.flatten() for p in cls(64, 64, init="uniform", dtype=F64).parameters()])
    assert u.abs().max() <= 0.1 and u.abs().max() > 0.099
    assert abs(u.std().item() - 0.1 / math.sqrt(3)) < 0.003 and abs(u.mean().item()) < 0.003
    g = torch.cat([p.flatten() for p in cls(64, 64, init="gaussian", dtype=F64).parameters()])
    assert abs(g.std().item() - 0.1) < 0.004 and abs(g.mean().item()) < 0.004
    g = torch.cat([p.flatten() for p in cls(64, 64, init="gaussian", init_scale=0.3).parameters()])
    assert abs(g.std().item() - 0.3) < 0.012


@pytest.mark.parametrize("cls", ALL)
def test_init_torch_default_bound(cls):
    torch.manual_seed(10)
    H = 25
    p = torch.cat([p.flatten() for p in cls(40, H, init="torch").parameters()])
    assert p.abs().max() <= 1 / math.sqrt(H) and p.abs().max() > 0.95 / math.sqrt(H)


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("input_size", [6, 40], ids=["fanin-below-k", "fanin-above-k"])
def test_init_sparse_exactly_k_per_row(cls, input_size):
    torch.manual_seed(11)
    model = cls(input_size, 32, 2, bidirectional=True, init="sparse", init_scale=2.0)
    nonzero = []
    for w in _weights(model):
        k = min(15, w.shape[1])
        assert ((w != 0).sum(dim=1) == k).all()
        nonzero.append(w[w != 0])
    nonzero = torch.cat(nonzero)
    assert abs(nonzero.std().item() - 2.0) < 0.15  # N(0, 1) · init_scale
    assert all((b == 0).all() for b in _biases(model))


@pytest.mark.parametrize("cls", ALL)
def test_input_scale_multiplies_the_first_layers_input_weights_only(cls):
    def build(scale):
        torch.manual_seed(12)
        return cls(5, 8, 2, bidirectional=True, init="sparse", input_scale=scale, dtype=F64)

    plain, scaled = build(1.0), build(0.25)
    inputs = set(cls._input_weights)
    for (name, p), (_, q) in zip(plain.named_parameters(), scaled.named_parameters(), strict=True):
        reads_x = name.rsplit("_l", 1)[0] in inputs and "_l0" in name
        torch.testing.assert_close(q, 0.25 * p if reads_x else p, rtol=0, atol=0)
    assert any(n.rsplit("_l", 1)[0] in inputs for n, _ in scaled.named_parameters())


# -- validation -------------------------------------------------------------------------------

BAD_CONSTRUCTION = [
    pytest.param(dict(input_size=0), "input_size", id="input_size=0"),
    pytest.param(dict(input_size=2.5), "input_size", id="input_size=2.5"),
    pytest.param(dict(hidden_size=-1), "hidden_size", id="hidden_size=-1"),
    pytest.param(dict(num_layers=0), "num_layers", id="num_layers=0"),
    pytest.param(dict(init="xavier"), "init must be one of", id="init=xavier"),
    pytest.param(dict(init_scale=0.0), "init_scale", id="init_scale=0"),
    pytest.param(dict(init_scale=float("nan")), "init_scale", id="init_scale=nan"),
    pytest.param(dict(input_scale=0.0), "input_scale", id="input_scale=0"),
    pytest.param(dict(dtype=torch.int64), "dtype", id="dtype=int64"),
]


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("kwargs, match", BAD_CONSTRUCTION)
def test_bad_construction_raises(cls, kwargs, match):
    args = dict(input_size=3, hidden_size=4) | kwargs
    with pytest.raises(ValueError, match=match):
        cls(**args)


@pytest.mark.parametrize("size", [0, -2, True], ids=["0", "-2", "bool"])
def test_bad_multiplicative_size_raises(size):
    with pytest.raises(ValueError, match="multiplicative_size"):
        MRNN(3, 4, multiplicative_size=size)


T_, B_ = 5, 2
BAD_CALLS = [
    pytest.param(dict(input=torch.randn(T_, 3)), "input must be a 3-D", id="rank2-input"),
    pytest.param(dict(input=torch.randn(T_, B_, 4)), "input_size", id="wrong-feature-size"),
    pytest.param(dict(input=torch.full((T_, B_, 3), math.nan)), "NaN or Inf", id="nan-input"),
    pytest.param(dict(input=torch.full((T_, B_, 3), math.inf)), "NaN or Inf", id="inf-input"),
    pytest.param(dict(lengths=torch.tensor([5])), "lengths must have shape", id="lengths-shape"),
    pytest.param(dict(lengths=torch.tensor([5, 0])), "lengths must lie in", id="lengths-zero"),
    pytest.param(dict(lengths=torch.tensor([6, 2])), "lengths must lie in", id="lengths-gt-T"),
    pytest.param(
        dict(lengths=torch.tensor([5.0, 2.0])), "lengths must be an integer", id="lengths-float"
    ),
    pytest.param(dict(hx=torch.zeros(2, B_, 4)), "hx must have shape", id="hx-shape"),
    pytest.param(dict(input=torch.randn(0, B_, 3)), "at least one time step", id="T=0"),
    pytest.param(dict(input=torch.randn(T_, B_, 3).double()), "dtype", id="dtype-mismatch"),
    pytest.param(
        dict(lengths=torch.tensor([True, True])), "lengths must be an integer", id="lengths-bool"
    ),
]


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("call, match", BAD_CALLS)
def test_bad_call_raises(cls, call, match):
    model = cls(3, 4)
    call = dict(input=torch.randn(T_, B_, 3)) | call
    with pytest.raises(ValueError, match=match):
        model(call.pop("input"), call.pop("hx", None), **call)
