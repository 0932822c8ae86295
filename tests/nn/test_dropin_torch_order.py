"""The drop-in's inference on torch's own weights (``native.torch_lstm``): every layer and
direction in one native call, the batch-major loop reading W_ih, W_hh in torch's gate order
i | f | g | o, without the engine's gathered copies. Held against torch.nn.LSTM and against the
engine's Python loop, and shown to run exactly where it applies (a spy counts its calls and the
layer-directions each ran)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lstmlab
from lstmlab.engines import native
from lstmlab.engines.bptt import forced_layout
from lstmlab.engines.native import build

pytestmark = pytest.mark.skipif(
    not build.load(), reason="the native core could not be built on this machine"
)
TOL = {torch.float32: 5e-6, torch.float64: 1e-12}


@pytest.fixture
def spy(monkeypatch):
    seen = []
    real = native.torch_lstm

    def counted(*args, **kwargs):  # (x, weights, states, num_layers, bidirectional, bias)
        seen.append(args[3] * (2 if args[4] else 1))
        return real(*args, **kwargs)

    monkeypatch.setattr(native, "torch_lstm", counted)
    return seen


def _pair(dtype, I, H, **kw):
    torch.manual_seed(0)
    ref = nn.LSTM(I, H, dtype=dtype, **kw)
    lab = lstmlab.TorchLSTM(I, H, dtype=dtype, **kw)
    lab.load_state_dict(ref.state_dict())
    return ref, lab


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "T,B,I,H,kw",
    [
        (7, 20, 5, 16, {}),  # whole vectors
        (5, 3, 4, 21, {"bias": False}),  # a scalar tail, no bias
        (9, 24, 8, 40, {"num_layers": 2, "bidirectional": True, "batch_first": True}),
        (6, 17, 5, 16, {"num_layers": 3, "bias": False, "bidirectional": True}),
        (30, 1, 3, 17, {}),  # batch 1
    ],
)
@pytest.mark.parametrize("states", ["given", "zeros"])
def test_equals_torch_and_the_python_loop(spy, dtype, T, B, I, H, kw, states):
    ref, lab = _pair(dtype, I, H, **kw)
    shape = (B, T, I) if kw.get("batch_first") else (T, B, I)
    x = torch.randn(*shape, dtype=dtype) * 2
    L = kw.get("num_layers", 1) * (2 if kw.get("bidirectional") else 1)
    hx = (torch.randn(L, B, H, dtype=dtype), torch.randn(L, B, H, dtype=dtype))
    args = (x, hx) if states == "given" else (x,)
    with torch.no_grad():
        want = ref(*args)
        got = lab(*args)
        assert spy == [L]  # one call ran every layer-direction
        with native.forced_python():
            twin = lab(*args)
        assert spy == [L]
    for a, b, c in zip((got[0], *got[1]), (want[0], *want[1]), (twin[0], *twin[1]), strict=True):
        assert a.shape == b.shape
        assert _rel(a, b) <= TOL[dtype] and _rel(a, c) <= TOL[dtype]


def test_weights_as_the_call_finds_them(spy):
    """Weights swapped in by ``functional_call``, a non-contiguous weight, a packed input whose
    sequences all have the full length, dropout set but the module in eval mode: each read as
    torch reads it."""
    from torch.func import functional_call

    ref, lab = _pair(torch.float32, 5, 16, num_layers=2, dropout=0.5)
    ref.eval(), lab.eval()
    x = torch.randn(8, 6, 5)
    other = {k: torch.randn_like(v) * 0.3 for k, v in ref.state_dict().items()}
    with torch.no_grad():
        got, want = functional_call(lab, other, (x,)), functional_call(ref, other, (x,))
        assert spy == [2]
        assert _rel(got[0], want[0]) <= 5e-6 and _rel(got[1][1], want[1][1]) <= 5e-6
        w = lab.weight_hh_l1.detach()
        lab.weight_hh_l1 = nn.Parameter(w.t().contiguous().t())  # the same values, transposed
        assert not lab.weight_hh_l1.is_contiguous()
        got, want = lab(x), ref(x)
        assert spy == [2, 2] and _rel(got[0], want[0]) <= 5e-6
        packed = nn.utils.rnn.pack_padded_sequence(x, torch.tensor([8] * 6))
        got, want = lab(packed), ref(packed)
        assert spy == [2, 2, 2] and _rel(got[0].data, want[0].data) <= 5e-6
        assert _rel(got[1][0], want[1][0]) <= 5e-6


def test_dropout_in_force_takes_the_layer_path(spy):
    """Inter-layer dropout in training mode (no graph wanted): the layer-by-layer path, with
    torch's masks for the same seed."""
    ref, lab = _pair(torch.float64, 5, 16, num_layers=2, dropout=0.5)
    x = torch.randn(8, 6, 5, dtype=torch.float64)
    with torch.no_grad():
        torch.manual_seed(3)
        want = ref(x)
        torch.manual_seed(3)
        got = lab(x)
    assert spy == [] and _rel(got[0], want[0]) <= 1e-12


def test_the_op_refuses_what_it_cannot_run():
    """The native op checks its arguments itself (no read out of bounds): the parameter count,
    the weights' shapes and the states' shapes, each with one line."""
    _, lab = _pair(torch.float32, 5, 16)
    x = torch.randn(4, 3, 5)
    w = list(lab._flat_weights)
    op = torch.ops.lstmlab_native.torch_lstm
    with pytest.raises(RuntimeError, match="parameters for"):
        op(x, w[:3], None, None, 1, False, True, 4)
    with pytest.raises(RuntimeError, match="weights must be"):
        op(torch.randn(4, 3, 6), w, None, None, 1, False, True, 4)
    bad = torch.zeros(1, 2, 16)
    with pytest.raises(RuntimeError, match="initial states must be"):
        op(x, w, bad, bad, 1, False, True, 4)
    with pytest.raises(RuntimeError, match="dtype and device"):
        op(x, [t.double() for t in w], None, None, 1, False, True, 4)


def test_unbatched_and_inference_mode(spy):
    ref, lab = _pair(torch.float32, 4, 16)
    x = torch.randn(6, 4)
    with torch.inference_mode():
        (y, (h, c)), (y2, (h2, c2)) = ref(x), lab(x)
    assert spy == [1] and y2.shape == y.shape and h2.shape == h.shape == (1, 16)
    assert _rel(y2, y) <= 5e-6 and _rel(c2, c) <= 5e-6


def test_the_states_returned_are_their_own_tensors(spy):
    """h_n and c_n do not alias the output or a buffer (torch's contract)."""
    _, lab = _pair(torch.float32, 4, 16)
    with torch.no_grad():
        y, (h, c) = lab(torch.randn(5, 3, 4))
        h_before = h.clone()
        y.zero_()
    assert spy == [1] and torch.equal(h, h_before)
    assert h.data_ptr() != y[-1].data_ptr()


@pytest.mark.parametrize(
    "case",
    [
        "grad", "packed", "proj", "peepholes", "sharpness", "features", "bfloat16", "vanilla",
        "dual weight", "float64 states",
    ],
)  # fmt: skip
def test_not_taken_where_it_does_not_apply(spy, case):
    """A graph wanted, packed lengths, a projection, another variant, α ≠ 1, the feature-major
    layout, another dtype: the engine's own path, with the same results as torch where torch
    has the model."""
    kw = {"proj_size": 8} if case == "proj" else {}
    extra = {
        "peepholes": {"peepholes": True},
        "vanilla": {"variant": "vanilla"},
        "sharpness": {"gate_sharpness": 2.0},
    }.get(case, {})
    torch.manual_seed(0)
    lab = lstmlab.TorchLSTM(4, 16, **kw, **extra)
    x = torch.randn(6, 20, 4)
    if case == "packed":
        x = nn.utils.rnn.pack_padded_sequence(x, torch.tensor([6] * 10 + [3] * 10))
    if case == "bfloat16":
        lab, x = lab.to(torch.bfloat16), x.to(torch.bfloat16)
    if case == "grad":
        lab(x)[0].sum().backward()
    elif case == "dual weight":  # forward-mode AD through a weight: the reference engine's
        import torch.autograd.forward_ad as fwAD
        from torch.func import functional_call

        params = dict(lab.named_parameters())
        with torch.no_grad(), fwAD.dual_level():
            tangent = torch.randn_like(params["weight_hh_l0"])
            params["weight_hh_l0"] = fwAD.make_dual(params["weight_hh_l0"], tangent)
            out = functional_call(lab, params, (x,))[0]
            assert fwAD.unpack_dual(out).tangent is not None
    elif case == "float64 states":  # torch's own check refuses the mismatch, as nn.LSTM does
        hx = (torch.zeros(1, 20, 16, dtype=torch.float64),) * 2
        with torch.no_grad(), pytest.raises(RuntimeError):
            lab(x, hx)
    elif case == "features":
        with torch.no_grad(), forced_layout("features"):
            lab(x)
    else:
        with torch.no_grad():
            lab(x)
    assert spy == []
