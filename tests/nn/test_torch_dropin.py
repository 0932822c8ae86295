"""PyTorch's own nn.LSTM / nn.GRU / nn.RNN checks, ported, run against torch and lstmlab.

Each check takes ``impl``: "torch" runs it on torch.nn.LSTM/GRU/RNN (it must pass there: that
proves the port), "lstmlab" on lstmlab.TorchLSTM/TorchGRU/TorchRNN. The checks are written
anew after what PyTorch's test/test_nn.py, test/test_modules.py (with the module inputs and
error inputs of torch/testing/_internal/common_modules.py) and test/nn/test_packed_sequence.py
test of these modules; the name of each says where it comes from. Checks of torch's that do
not apply here are listed in docs/design.md ("Drop-ins for torch.nn.LSTM / GRU / RNN").
"""

from __future__ import annotations

import io
import pickle
import warnings
from types import SimpleNamespace

import pytest
import torch
from cpu_features import cpu_bf16_lstm_missing
from torch import nn
from torch.nn.utils import rnn as rnn_utils

import lstmlab

IMPLS = {
    "torch": SimpleNamespace(LSTM=nn.LSTM, GRU=nn.GRU, RNN=nn.RNN),
    "lstmlab": SimpleNamespace(LSTM=lstmlab.TorchLSTM, GRU=lstmlab.TorchGRU, RNN=lstmlab.TorchRNN),
}
TORCH = IMPLS["torch"]
D64 = torch.float64


@pytest.fixture(params=list(IMPLS))
def impl(request):
    return IMPLS[request.param]


def _same_weights(kind: str, impl, *args, **kwargs):
    """(torch module, module under test) with the same weights (torch's own init, one seed)."""
    torch.manual_seed(1234)
    ref = getattr(TORCH, kind)(*args, **kwargs)
    torch.manual_seed(1234)
    mod = getattr(impl, kind)(*args, **kwargs)
    return ref, mod


def _hx(kind, L, B, H, Hr=None, dtype=D64, requires_grad=False):
    h = torch.randn(L, B, Hr or H, dtype=dtype, requires_grad=requires_grad)
    if kind == "LSTM":
        return (h, torch.randn(L, B, H, dtype=dtype, requires_grad=requires_grad))
    return h


def _flat(out):
    """The tensors of a module's return value, flattened (output, h_n[, c_n])."""
    o, h = out
    o = o.data if isinstance(o, rnn_utils.PackedSequence) else o
    return [o, *(h if isinstance(h, tuple) else (h,))]


# --------------------------------------------------------------------- common_modules inputs
# module_inputs_torch_nn_{RNN_GRU,LSTM}: constructor keywords × batched/unbatched × hx or not
_CONFIGS = [
    dict(),
    dict(num_layers=2),
    dict(bias=False),
    dict(batch_first=True),
    dict(bidirectional=True),
    dict(num_layers=2, bidirectional=True, batch_first=True),
]


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("cfg", range(len(_CONFIGS)))
@pytest.mark.parametrize("batched", [True, False])
def test_modules_forward_matches_torch(impl, kind, cfg, batched):
    """test_modules.test_forward over common_modules' RNN/GRU/LSTM inputs: every configuration
    runs, with and without hx, batched and unbatched, and gives torch's numbers (float64)."""
    kw = dict(_CONFIGS[cfg], dtype=D64)
    ref, mod = _same_weights(kind, impl, 3, 4, **kw)
    L = kw.get("num_layers", 1) * (2 if kw.get("bidirectional") else 1)
    if batched:
        x = torch.randn((2, 5, 3) if kw.get("batch_first") else (5, 2, 3), dtype=D64)
        hx = _hx(kind, L, 2, 4)
    else:
        x = torch.randn(5, 3, dtype=D64)
        hx = _hx(kind, L, 2, 4)
        hx = tuple(h[:, 0] for h in hx) if kind == "LSTM" else hx[:, 0]
    for args in ((x,), (x, hx)):
        want, got = _flat(ref(*args)), _flat(mod(*args))
        for w, g in zip(want, got, strict=True):
            assert g.shape == w.shape and g.dtype == w.dtype
            torch.testing.assert_close(g, w, rtol=0, atol=1e-13)


@pytest.mark.parametrize("proj", [1, 2])
def test_modules_lstm_proj_size(impl, proj):
    """module_inputs_torch_nn_LSTM with proj_size: h is (L, B, proj), c is (L, B, H)."""
    ref, mod = _same_weights("LSTM", impl, 3, 4, 2, proj_size=proj, bidirectional=True, dtype=D64)
    assert [n for n, _ in mod.named_parameters()] == [n for n, _ in ref.named_parameters()]
    x = torch.randn(5, 2, 3, dtype=D64)
    for args in ((x,), (x, (torch.randn(4, 2, proj, dtype=D64), torch.randn(4, 2, 4, dtype=D64)))):
        for w, g in zip(_flat(ref(*args)), _flat(mod(*args)), strict=True):
            torch.testing.assert_close(g, w, rtol=0, atol=1e-13)


def test_modules_lstm_proj_size_zero(impl):
    """proj_size=0 means no projection (torch's default)."""
    m = impl.LSTM(3, 4, proj_size=0)
    assert not hasattr(m, "weight_hr_l0")
    assert m(torch.randn(2, 1, 3))[1][0].shape == (1, 1, 4)


def _grad_gradgrad(impl, kind, sizes, with_params):
    mod = getattr(impl, kind)(*sizes, bidirectional=True, dtype=D64)
    T, B, I, H, L = 3, 2, sizes[0], sizes[1], sizes[2] * 2
    x = torch.randn(T, B, I, dtype=D64, requires_grad=True)
    hx = _hx(kind, L, B, H, requires_grad=True)
    hxs = list(hx) if kind == "LSTM" else [hx]
    names = [n for n, _ in mod.named_parameters()] if with_params else []
    params = [getattr(mod, n) for n in names]

    def f(x, *rest):
        h = tuple(rest[: len(hxs)]) if kind == "LSTM" else rest[0]
        ps = dict(zip(names, rest[len(hxs) :], strict=True))
        return _flat(torch.func.functional_call(mod, ps, (x, h)))

    inputs = (x, *hxs, *params)
    assert torch.autograd.gradcheck(f, inputs)
    assert torch.autograd.gradgradcheck(f, inputs)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_modules_grad_and_gradgrad(impl, kind):
    """test_modules.test_grad / test_gradgrad and test_nn.test_{LSTM,GRU}_grad_and_gradgrad:
    gradcheck and gradgradcheck in float64 w.r.t. the input and hx (bidirectional, one
    layer; every parameter too in the slow twin below)."""
    _grad_gradgrad(impl, kind, (2, 2, 1), with_params=False)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_modules_grad_and_gradgrad_all_parameters(impl, kind):
    """The same w.r.t. every parameter of a 2-layer bidirectional module."""
    _grad_gradgrad(impl, kind, (2, 3, 2), with_params=True)


def test_modules_gradgrad_lstm_autograd_engine():
    """The same gradgradcheck on lstmlab's reference engine (engine="autograd")."""
    mod = lstmlab.TorchLSTM(2, 3, dtype=D64, engine="autograd")
    x = torch.randn(3, 2, 2, dtype=D64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda x: mod(x)[0], (x,))


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_modules_errors(impl, kind):
    """module_error_inputs_torch_nn_RNN_GRU / _LSTM: wrong input rank → ValueError; batched
    input with 2-D hx and unbatched input with 3-D hx → RuntimeError."""
    mod = getattr(impl, kind)(3, 4)
    with pytest.raises(ValueError, match="Expected input to be 2D or 3D, got 4D"):
        mod(torch.randn(1, 2, 3, 3))
    with pytest.raises(RuntimeError, match="For batched 3-D input, hx"):
        mod(
            torch.randn(2, 1, 3),
            _hx(kind, 1, 1, 4, dtype=torch.float32)[0][0:1, 0]
            if kind != "LSTM"
            else tuple(h[:, 0] for h in _hx(kind, 1, 1, 4, dtype=torch.float32)),
        )
    with pytest.raises(RuntimeError, match="For unbatched 2-D input, hx"):
        mod(torch.randn(2, 3), _hx(kind, 1, 1, 4, dtype=torch.float32))


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_modules_factory_kwargs_and_repr(impl, kind):
    """test_modules.test_factory_kwargs and test_repr: dtype/device reach every parameter;
    repr is torch's."""
    mod = getattr(impl, kind)(3, 4, 2, dtype=D64, device="cpu")
    assert all(p.dtype == D64 and p.device.type == "cpu" for p in mod.parameters())
    assert repr(mod).split("(", 1)[1] == repr(getattr(TORCH, kind)(3, 4, 2)).split("(", 1)[1]


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_modules_pickle_and_save_load(impl, kind):
    """test_modules.test_pickle / test_save_load: torch.save of the module and of its
    state_dict round-trip, and the reloaded module computes the same."""
    mod = getattr(impl, kind)(3, 4, 2, dtype=D64)
    x = torch.randn(4, 2, 3, dtype=D64)
    buf = io.BytesIO()
    torch.save(mod, buf)
    buf.seek(0)
    again = torch.load(buf, weights_only=False)
    assert type(again) is type(mod)
    for a, b in zip(_flat(mod(x)), _flat(again(x)), strict=True):
        assert torch.equal(a, b)
    other = getattr(impl, kind)(3, 4, 2, dtype=D64)
    other.load_state_dict(pickle.loads(pickle.dumps(mod.state_dict())))
    for a, b in zip(_flat(mod(x)), _flat(other(x)), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_modules_non_contiguous(impl, kind):
    """test_modules.test_non_contiguous_tensors: non-contiguous input and hx give the same
    outputs and gradients as contiguous ones."""
    mod = getattr(impl, kind)(3, 4, dtype=D64)
    x = torch.randn(3, 4, 2, dtype=D64).transpose(0, 2).requires_grad_()  # (2, 4, 3)
    assert not x.is_contiguous()
    xc = x.detach().contiguous().requires_grad_()
    outs = []
    for inp in (x, xc):
        mod.zero_grad()
        o = _flat(mod(inp))
        sum(t.sum() for t in o).backward()
        outs.append((o, [p.grad.clone() for p in mod.parameters()]))
    for a, b in zip(outs[0][0] + outs[0][1], outs[1][0] + outs[1][1], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-14)
    torch.testing.assert_close(x.grad, xc.grad, rtol=0, atol=1e-14)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_modules_multiple_transfer_and_swap(impl, kind):
    """test_modules.test_multiple_device_transfer / test_to (swap_tensors): dtype conversions
    keep the module working and _flat_weights in step with the parameters."""
    mod = getattr(impl, kind)(3, 4, 2)
    mod.double().float().double()
    assert all(p.dtype == D64 for p in mod.parameters())
    assert all(
        w is getattr(mod, n)
        for w, n in zip(mod._flat_weights, mod._flat_weights_names, strict=True)
    )
    mod(torch.randn(2, 1, 3, dtype=D64))
    old = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(True)
    try:
        mod.to(torch.float32)
    finally:
        torch.__future__.set_swap_module_params_on_conversion(old)
    assert mod(torch.randn(2, 1, 3))[0].dtype == torch.float32


def test_modules_to_empty(impl):
    """test_modules.test_to_empty: a module built on the meta device, moved with to_empty,
    re-initialised, runs."""
    m = impl.LSTM(3, 4, device="meta")
    m = m.to_empty(device="cpu")
    m.reset_parameters()
    assert m(torch.randn(2, 1, 3))[0].shape == (2, 1, 4)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_modules_train_eval_same_without_dropout(impl, kind):
    """test_modules.test_if_train_and_eval_modes_differ: with dropout 0 the modes agree."""
    mod = getattr(impl, kind)(3, 4, 2, dtype=D64)
    x = torch.randn(3, 2, 3, dtype=D64)
    a = _flat(mod.train()(x))
    b = _flat(mod.eval()(x))
    for u, v in zip(a, b, strict=True):
        assert torch.equal(u, v)


# --------------------------------------------------------------------- test_nn.py
@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_nn_constructor_checks(impl, kind):
    """RNNBase's argument checks (test_nn: test_rnn_args_check and the constructor errors):
    the same exception types as torch."""
    cls = getattr(impl, kind)
    with pytest.raises(TypeError):
        cls(3, 4, batch_first="False")
    with pytest.raises(TypeError):
        cls(3.0, 4)
    with pytest.raises(TypeError):
        cls(3, 4.0)
    with pytest.raises(TypeError):
        cls(3, 4, bias=1)
    with pytest.raises(ValueError):
        cls(0, 4)
    with pytest.raises(ValueError):
        cls(3, 0)
    with pytest.raises(ValueError):
        cls(3, 4, 0)
    with pytest.raises(ValueError):
        cls(3, 4, 2, dropout=1.5)
    with pytest.raises(ValueError):
        cls(3, 4, 2, dropout=True)
    with pytest.warns(UserWarning, match="dropout"):
        cls(3, 4, 1, dropout=0.5)


def test_nn_positional_arguments(impl):
    """Arguments in torch's positional order: (I, H, layers, bias, batch_first, dropout,
    bidirectional, proj_size) for LSTM, nonlinearity fourth for RNN
    (test_nn.test_RNN_nonlinearity_passed_as_arg)."""
    m = impl.LSTM(3, 4, 2, False, True, 0.25, True, 2)
    assert (m.bias, m.batch_first, m.dropout, m.bidirectional, m.proj_size) == (
        False, True, 0.25, True, 2
    )  # fmt: skip
    assert impl.RNN(1, 10, 2, "relu").nonlinearity == "relu"
    with pytest.raises(ValueError, match="Unknown nonlinearity"):
        impl.RNN(1, 10, 2, nonlinearity="garbage")


def test_nn_proj_size_checks(impl):
    """test_nn: proj_size must be >= 0 and < hidden_size (ValueError); GRU and RNN reject it."""
    with pytest.raises(ValueError):
        impl.LSTM(3, 4, proj_size=-1)
    with pytest.raises(ValueError):
        impl.LSTM(3, 4, proj_size=4)
    with pytest.raises(ValueError):
        impl.GRU(3, 4, proj_size=2)


def test_nn_default_init(impl):
    """Every parameter starts U(−1/√H, 1/√H) (RNNBase.reset_parameters)."""
    torch.manual_seed(0)
    m = impl.LSTM(30, 64, 2, proj_size=16)
    bound = 1 / 64**0.5
    with torch.no_grad():
        for p in m.parameters():
            assert bound >= float(p.abs().max()) > 0.9 * bound
        # uniform on [-b, b]: mean ≈ 0, standard deviation b/√3
        for p in (m.weight_ih_l0, m.weight_hh_l1):
            assert abs(float(p.mean())) < 0.05 * bound
            assert abs(float(p.std()) - bound / 3**0.5) < 0.05 * bound


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_nn_forward_args_check(impl, kind):
    """test_nn.test_rnn_args_check (and its projection twin): a wrong input size, hidden size,
    batch size or number of layers in hx is a RuntimeError."""
    mod = getattr(impl, kind)(3, 4, 2)
    x = torch.randn(5, 2, 3)
    with pytest.raises(RuntimeError):
        mod(torch.randn(5, 2, 4))
    bad = [(4, 2, 5), (4, 3, 4), (3, 2, 4)]  # 2 layers → L = 2; each shape wrong somewhere
    for shape in bad:
        h = torch.randn(*shape)
        with pytest.raises(RuntimeError):
            mod(x, (h, torch.randn(2, 2, 4)) if kind == "LSTM" else h)
    if kind == "LSTM":
        with pytest.raises(RuntimeError, match=r"hidden\[1\]"):
            mod(x, (torch.randn(2, 2, 4), torch.randn(2, 2, 5)))
        p = impl.LSTM(3, 4, 2, proj_size=2)
        with pytest.raises(RuntimeError, match=r"hidden\[0\]"):
            p(x, (torch.randn(2, 2, 4), torch.randn(2, 2, 4)))


def test_nn_dtype_mismatch(impl):
    """check_input: an input of another dtype than the weights is a ValueError."""
    with pytest.raises(ValueError, match="dtype"):
        impl.LSTM(3, 4)(torch.randn(2, 1, 3, dtype=D64))


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_nn_seq_len_zero(impl, kind):
    """test_nn.test_error_RNN_seq_len_zero: an empty sequence is a RuntimeError."""
    with pytest.raises(RuntimeError, match="larger than 0"):
        getattr(impl, kind)(3, 4)(torch.randn(0, 1, 3))


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_nn_zero_batch(impl, kind):
    """A zero-size batch gives empty outputs of the right shapes, and backward runs."""
    mod = getattr(impl, kind)(3, 4, 2, bidirectional=True)
    x = torch.randn(5, 0, 3, requires_grad=True)
    out, h = mod(x)
    assert out.shape == (5, 0, 8)
    for t in h if kind == "LSTM" else (h,):
        assert t.shape == (4, 0, 4)
    out.sum().backward()
    assert x.grad.shape == x.shape


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_nn_initial_hidden_state(impl, kind):
    """test_nn.test_rnn_initial_hidden_state: hx=None is the same as zeros."""
    mod = getattr(impl, kind)(3, 4, 2)
    x = torch.randn(5, 2, 3)
    zero = _hx(kind, 2, 2, 4, dtype=torch.float32)
    zero = tuple(torch.zeros_like(t) for t in zero) if kind == "LSTM" else torch.zeros_like(zero)
    for a, b in zip(_flat(mod(x)), _flat(mod(x, zero)), strict=True):
        assert torch.equal(a, b)


def test_nn_projections_initial_hidden_state(impl):
    """test_nn.test_projections_lstm_initial_hidden_state."""
    mod = impl.LSTM(3, 4, 2, proj_size=2)
    x = torch.randn(5, 2, 3)
    zero = (torch.zeros(2, 2, 2), torch.zeros(2, 2, 4))
    for a, b in zip(_flat(mod(x)), _flat(mod(x, zero)), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_nn_unbatched_matches_batch_of_one(impl, kind):
    """test_nn unbatched inputs: (T, I) with 2-D hx is the batch of one, squeezed."""
    mod = getattr(impl, kind)(3, 4, 2, bidirectional=True, dtype=D64)
    x = torch.randn(5, 3, dtype=D64)
    hx = _hx(kind, 4, 1, 4)
    o1, h1 = mod(x.unsqueeze(1), hx)
    h_sq = tuple(t.squeeze(1) for t in hx) if kind == "LSTM" else hx.squeeze(1)
    o2, h2 = mod(x, h_sq)
    assert torch.equal(o1.squeeze(1), o2)
    for a, b in zip(h1 if kind == "LSTM" else (h1,), h2 if kind == "LSTM" else (h2,), strict=True):
        assert torch.equal(a.squeeze(1), b)


def test_nn_rnn_dropout(impl):
    """test_nn.test_RNN_dropout: a 2-layer relu RNN of ones; the second layer sums the first
    layer's dropped-out outputs, each 0 or 10/(1−p); with p = 0 or in eval mode none dropped."""
    for p, train in ((0.0, True), (0.276, True), (0.731, True), (1.0, True), (0.5, False)):
        rnn = impl.RNN(10, 1000, 2, bias=False, dropout=p, nonlinearity="relu")
        with torch.no_grad():
            for w in rnn.parameters():
                w.fill_(1)
        rnn.train(train)
        out, hy = rnn(torch.ones(1, 1, 10), torch.zeros(2, 1, 1000))
        v = float(out[0, 0, 0])
        assert float(out.min()) == float(out.max()) == v
        if p == 0 or not train:
            assert v == 10000.0
        elif p == 1:
            assert v == 0.0
        else:
            assert v > 8000 if p < 0.5 else v > 0
            mod10 = (v * (1 - p)) % 10
            assert min(mod10, 10 - mod10) < 1e-2
        assert float(hy[0].min()) == float(hy[0].max()) == 10.0
        assert float(hy[1].min()) == float(hy[1].max()) == v


def test_nn_change_dropout(impl):
    """test_nn.test_RNN_change_dropout: the dropout attribute can be changed between calls;
    p = 0 and p = 1 give the deterministic results, eval mode ignores it."""
    rnn = impl.LSTM(3, 4, 2, dropout=0.0)
    x = torch.randn(5, 2, 3)
    base = rnn(x)[0]
    rnn.dropout = 1.0
    ones = rnn(x)[0]
    assert not torch.allclose(base, ones)
    ones2 = rnn(x)[0]
    assert torch.equal(ones, ones2)  # p = 1 drops everything: no randomness left
    rnn.dropout = 0.5
    rnn.eval()
    assert torch.equal(rnn(x)[0], base)


def test_nn_dropout_state(impl):
    """test_nn.test_RNN_dropout_state: in training two calls differ (fresh masks), in eval
    they agree; the same seed gives the same masks."""
    rnn = impl.LSTM(10, 100, 2, dropout=0.5)
    x = torch.randn(4, 3, 10)
    torch.manual_seed(5)
    a = rnn(x)[0]
    b = rnn(x)[0]
    torch.manual_seed(5)
    c = rnn(x)[0]
    assert not torch.equal(a, b) and torch.equal(a, c)
    rnn.eval()
    assert torch.equal(rnn(x)[0], rnn(x)[0])


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_nn_retain_variables(impl, kind):
    """test_nn.test_rnn_retain_variables: backward twice with retain_graph gives the same
    gradients."""
    mod = getattr(impl, kind)(3, 4, 2, dtype=D64)
    x = torch.randn(5, 2, 3, dtype=D64, requires_grad=True)
    out = mod(x)[0]
    grads = []
    for _ in range(2):
        mod.zero_grad()
        x.grad = None
        out.sum().backward(retain_graph=True)
        grads.append([x.grad.clone(), *[p.grad.clone() for p in mod.parameters()]])
    for a, b in zip(*grads, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_nn_variable_sequence(impl, kind, bidirectional):
    """test_nn.test_variable_sequence: a packed batch gives, per sequence, the output and the
    final state of that sequence run alone, and the same gradients."""
    mod = getattr(impl, kind)(3, 4, 2, bidirectional=bidirectional, dtype=D64)
    lengths = [7, 5, 5, 2, 1]
    seqs = [torch.randn(L, 3, dtype=D64, requires_grad=True) for L in lengths]
    padded = rnn_utils.pad_sequence(seqs)
    out_p, h_p = mod(rnn_utils.pack_padded_sequence(padded, lengths))
    out, _ = rnn_utils.pad_packed_sequence(out_p)
    (out.sum() + sum(t.sum() for t in (h_p if kind == "LSTM" else (h_p,)))).backward()
    grads_packed = [s.grad.clone() for s in seqs] + [p.grad.clone() for p in mod.parameters()]
    mod.zero_grad()
    total = 0
    for b, s in enumerate(seqs):
        s.grad = None
        o, h = mod(s.detach().unsqueeze(1).requires_grad_(False))
        torch.testing.assert_close(out[: lengths[b], b], o[:, 0], rtol=0, atol=1e-13)
        assert float(out[lengths[b] :, b].abs().sum()) == 0
        for hp, hs in zip(
            h_p if kind == "LSTM" else (h_p,), h if kind == "LSTM" else (h,), strict=True
        ):
            torch.testing.assert_close(hp[:, b], hs[:, 0], rtol=0, atol=1e-13)
        o2, h2 = mod(s.unsqueeze(1))
        total = total + o2.sum() + sum(t.sum() for t in (h2 if kind == "LSTM" else (h2,)))
    total.backward()
    grads_alone = [s.grad for s in seqs] + [p.grad for p in mod.parameters()]
    for a, b in zip(grads_packed, grads_alone, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_nn_packed_with_proj_and_hx_order(impl):
    """Packed input with enforce_sorted=False and a given (h0, c0): hx is read, and h_n/c_n
    returned, in the caller's batch order (permute_hidden), projections included."""
    ref, mod = _same_weights("LSTM", impl, 3, 4, 2, proj_size=2, dtype=D64)
    lengths = [2, 6, 4]
    x = torch.randn(6, 3, 3, dtype=D64)
    packed = rnn_utils.pack_padded_sequence(x, lengths, enforce_sorted=False)
    hx = (torch.randn(2, 3, 2, dtype=D64), torch.randn(2, 3, 4, dtype=D64))
    (po, (h, c)), (ro, (rh, rc)) = mod(packed, hx), ref(packed, hx)
    assert isinstance(po, rnn_utils.PackedSequence)
    assert torch.equal(po.batch_sizes, ro.batch_sizes)
    assert torch.equal(po.sorted_indices, ro.sorted_indices)
    for a, b in ((po.data, ro.data), (h, rh), (c, rc)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-13)
    o1, (h1, _) = mod(x[: lengths[0], :1], (hx[0][:, :1], hx[1][:, :1]))
    torch.testing.assert_close(h[:, :1], h1, rtol=0, atol=1e-13)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_nn_weight_norm(impl, kind):
    """test_nn.test_rnn_weight_norm: weight_norm on weight_hh_l0 works (forward, backward to
    g and v), keeps the name in _flat_weights_names, and removes cleanly."""
    mod = getattr(impl, kind)(3, 4, 2)
    n_before = len(mod._flat_weights_names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        m = nn.utils.weight_norm(mod, name="weight_hh_l0")
    out = m(torch.randn(5, 2, 3))[0]
    out.sum().backward()
    assert m.weight_hh_l0_g.grad is not None and m.weight_hh_l0_v.grad is not None
    assert "weight_hh_l0" in m._flat_weights_names and len(m._flat_weights_names) == n_before
    m = nn.utils.remove_weight_norm(m, name="weight_hh_l0")
    assert "weight_hh_l0" in dict(m.named_parameters())
    m(torch.randn(5, 2, 3))


def test_nn_parametrized_weight_norm(impl):
    """The parametrizations form of weight_norm on weight_hh_l0."""
    m = nn.utils.parametrizations.weight_norm(impl.LSTM(3, 4), name="weight_hh_l0")
    m(torch.randn(5, 2, 3))[0].sum().backward()
    assert m.parametrizations.weight_hh_l0.original0.grad is not None


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_nn_all_weights_and_flatten(impl, kind):
    """all_weights lists each layer-direction's parameters in torch's order;
    flatten_parameters() is callable (a no-op on the CPU)."""
    kw = dict(proj_size=2) if kind == "LSTM" else {}
    mod = getattr(impl, kind)(3, 4, 2, bidirectional=True, **kw)
    ref = getattr(TORCH, kind)(3, 4, 2, bidirectional=True, **kw)
    assert [[tuple(p.shape) for p in g] for g in mod.all_weights] == [
        [tuple(p.shape) for p in g] for g in ref.all_weights
    ]
    assert mod._flat_weights_names == ref._flat_weights_names
    assert mod.all_weights[1][0] is mod.weight_ih_l0_reverse
    mod.flatten_parameters()
    mod(torch.randn(2, 1, 3))


def test_nn_name_based_init_loop(impl):
    """The common init loop over named_parameters (orthogonal weight_hh, forget bias 1)
    finds torch's names and changes what the module computes."""
    m = impl.LSTM(3, 4, 2)
    x = torch.randn(5, 2, 3)
    before = m(x)[0]
    hit = 0
    for name, p in m.named_parameters():
        if "weight_hh" in name:
            nn.init.orthogonal_(p)
            hit += 1
        elif "bias" in name:
            with torch.no_grad():
                p.zero_()
                p[4:8] = 1.0  # forget gate: rows H..2H in torch's i, f, g, o layout
    assert hit == 2
    after = m(x)[0]
    assert not torch.allclose(before, after)
    m2 = nn.LSTM(3, 4, 2)
    m2.load_state_dict(m.state_dict())
    torch.testing.assert_close(m2(x)[0], after, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_nn_torch_checkpoint_loads(impl, kind):
    """A torch module's state_dict loads (strict) and gives torch's results, and back."""
    ref = getattr(TORCH, kind)(3, 4, 2, bidirectional=True, dtype=D64)
    mod = getattr(impl, kind)(3, 4, 2, bidirectional=True, dtype=D64)
    mod.load_state_dict(ref.state_dict())
    x = torch.randn(5, 2, 3, dtype=D64)
    for a, b in zip(_flat(ref(x)), _flat(mod(x)), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-13)
    ref2 = getattr(TORCH, kind)(3, 4, 2, bidirectional=True, dtype=D64)
    ref2.load_state_dict(mod.state_dict())
    assert set(mod.state_dict()) == set(ref.state_dict())


def test_nn_functional_call(impl):
    """torch.func.functional_call with other weights (RNNBase._weights_have_changed)."""
    m = impl.LSTM(3, 4, dtype=D64)
    x = torch.randn(5, 2, 3, dtype=D64)
    new = {n: torch.randn_like(p) for n, p in m.named_parameters()}
    out = torch.func.functional_call(m, new, (x,))[0]
    m.load_state_dict(new)
    torch.testing.assert_close(out, m(x)[0], rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_nn_mkldnn_flags_agree(impl, kind):
    """test_nn.test_LSTM_differentiable_backward_using_oneDNN: results and gradients with
    oneDNN switched off agree with oneDNN on (float32)."""
    mod = getattr(impl, kind)(8, 16, 2)
    x = torch.randn(6, 3, 8, requires_grad=True)
    res = []
    for enabled in (True, False):
        with torch.backends.mkldnn.flags(enabled=enabled):
            mod.zero_grad()
            x.grad = None
            out = _flat(mod(x))
            sum((t * t).sum() for t in out).backward()
            res.append([*out, x.grad, *[p.grad for p in mod.parameters()]])
    for a, b in zip(*res, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_nn_nan_propagates(impl, kind):
    """NaN and Inf in the input propagate (no error): a NaN poisons its own sequence from its
    step on and no other sequence."""
    ref, mod = _same_weights(kind, impl, 3, 4, 2)
    x = torch.randn(5, 3, 3)
    x[2, 1, 0] = float("nan")
    x[3, 2, 1] = float("inf")
    out, _ = mod(x)
    want, _ = ref(x)
    assert torch.equal(out.isnan(), want.isnan())
    assert bool(out[:2].isfinite().all()) and bool(out[:, 0].isfinite().all())


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_nn_cpu_autocast_bfloat16(impl, kind):
    """Under CPU autocast(bfloat16) the output and state dtypes are torch's (LSTM, RNN:
    bfloat16; GRU: float32), the values near torch's, and the gradients reach the float32
    parameters. Skipped, with the reason, where torch's own bf16 LSTM cannot run (CPUs without
    AVX-512 bf16): there is no reference to compare with."""
    if kind == "LSTM" and (missing := cpu_bf16_lstm_missing()):
        pytest.skip(missing)
    ref, mod = _same_weights(kind, impl, 3, 8, 2)
    x = torch.randn(6, 2, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want, got = _flat(ref(x)), _flat(mod(x))
    for w, g in zip(want, got, strict=True):
        assert g.dtype == w.dtype
        torch.testing.assert_close(g.float(), w.float(), rtol=0, atol=0.05)
    got[0].float().sum().backward()
    assert mod.weight_hh_l0.grad.dtype == torch.float32


def test_nn_double_backward_gradient_penalty(impl):
    """Double backward (create_graph=True), as in a gradient penalty: the penalty's gradient
    with respect to the weights is torch's (float64)."""
    ref, mod = _same_weights("LSTM", impl, 3, 4, 2, dtype=D64)
    x = torch.randn(5, 2, 3, dtype=D64, requires_grad=True)
    res = []
    for m in (ref, mod):
        out, (h, c) = m(x)
        (gx,) = torch.autograd.grad((out**2).sum() + h.sum(), x, create_graph=True)
        penalty = (gx**2).sum()
        res.append(torch.autograd.grad(penalty, list(m.parameters())))
    for a, b in zip(*res, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


# --------------------------------------------------------------------- test_packed_sequence.py
@pytest.mark.parametrize("enforce_sorted", [True, False])
@pytest.mark.parametrize("batch_first", [True, False])
def test_packed_pack_sequence_compat(impl, enforce_sorted, batch_first):
    """test_pack_sequence's compatibility test through the module: pack_sequence and
    pack_padded_sequence of the same batch give the same module output, and unpacked it
    equals the padded run with zero padding."""
    mod = impl.LSTM(5, 4, batch_first=batch_first, dtype=D64)
    lengths = [6, 4, 4, 1] if enforce_sorted else [4, 6, 1, 4]
    seqs = [torch.randn(L, 5, dtype=D64) for L in lengths]
    a = mod(rnn_utils.pack_sequence(seqs, enforce_sorted=enforce_sorted))
    padded = rnn_utils.pad_sequence(seqs, batch_first)
    b = mod(rnn_utils.pack_padded_sequence(padded, lengths, batch_first, enforce_sorted))
    for u, v in zip(_flat(a), _flat(b), strict=True):
        assert torch.equal(u, v)
    unpacked, lens = rnn_utils.pad_packed_sequence(a[0], batch_first)
    assert lens.tolist() == lengths
    t_dim = 1 if batch_first else 0
    for i, L in enumerate(lengths):
        seq = unpacked[i] if batch_first else unpacked[:, i]
        assert float(seq[L:].abs().sum()) == 0
        alone = mod(seqs[i].unsqueeze(0 if batch_first else 1))[0]
        torch.testing.assert_close(
            seq[:L], alone.squeeze(0 if batch_first else 1), rtol=0, atol=1e-13
        )
    del t_dim


def test_packed_total_length(impl):
    """test_total_length through the module: pad_packed_sequence of the module's packed output
    pads to total_length, and too small a total_length is a ValueError."""
    mod = impl.GRU(2, 3)
    lengths = [5, 3, 2]
    packed = rnn_utils.pack_padded_sequence(torch.randn(5, 3, 2), lengths)
    out = mod(packed)[0]
    padded, _ = rnn_utils.pad_packed_sequence(out, total_length=8)
    assert padded.shape == (8, 3, 3) and float(padded[5:].abs().sum()) == 0
    with pytest.raises(ValueError, match="total_length"):
        rnn_utils.pad_packed_sequence(out, total_length=4)


def test_packed_type_casts(impl):
    """test_type_casts / test_to through the module: a packed batch cast to double runs
    through a module cast to double and comes back double."""
    mod = impl.RNN(2, 3).double()
    packed = rnn_utils.pack_padded_sequence(torch.randn(4, 2, 2), [4, 2]).double()
    out, h = mod(packed)
    assert out.data.dtype == D64 and h.dtype == D64
    assert packed.to("cpu") is packed


def test_packed_wrong_order(impl):
    """test_wrong_order: pack_padded_sequence refuses unsorted lengths with enforce_sorted."""
    with pytest.raises(RuntimeError):
        rnn_utils.pack_padded_sequence(torch.randn(25, 2, 3), [22, 25], enforce_sorted=True)
    impl.LSTM(3, 2)(
        rnn_utils.pack_padded_sequence(torch.randn(25, 2, 3), [22, 25], enforce_sorted=False)
    )


# --------------------------------------------------------------------- lstmlab-only checks
def test_dropin_is_a_torch_module():
    """The drop-ins are the torch classes (isinstance), with lstmlab's forward."""
    assert isinstance(lstmlab.TorchLSTM(2, 3), nn.LSTM)
    assert isinstance(lstmlab.TorchGRU(2, 3), nn.GRU)
    assert isinstance(lstmlab.TorchRNN(2, 3), nn.RNN)
    assert lstmlab.TorchLSTM.forward is not nn.LSTM.forward


def test_dropin_engines_agree():
    """The fast engine and the reference engine of the drop-in agree to float64 round-off,
    packed and bidirectional, values and gradients (the fast path's slow twin)."""
    m = lstmlab.TorchLSTM(3, 5, 2, bidirectional=True, proj_size=2, dtype=D64)
    x = torch.randn(6, 4, 3, dtype=D64, requires_grad=True)
    res = []
    for engine in ("bptt", "autograd"):
        packed = rnn_utils.pack_padded_sequence(x, [6, 2, 5, 3], enforce_sorted=False)
        m.engine = engine
        m.zero_grad()
        x.grad = None
        out, (h, c) = m(packed)
        (out.data.pow(2).sum() + h.sum() + c.pow(3).sum()).backward()
        res.append([out.data, h, c, x.grad, *[p.grad for p in m.parameters()]])
    for a, b in zip(*res, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="engine"):
        m.engine = "rtrl"


def test_dropin_double_backward_matches_autograd_engine():
    """The fast engine's double backward (recomputed with the reference engine) equals the
    reference engine's own, for a Hessian-vector product w.r.t. the weights."""
    res = []
    for engine in ("bptt", "autograd"):
        torch.manual_seed(3)
        m = lstmlab.TorchLSTM(2, 3, 2, dtype=D64, engine=engine)
        x = torch.randn(4, 2, 2, dtype=D64)
        params = list(m.parameters())
        loss = m(x)[0].pow(2).sum()
        grads = torch.autograd.grad(loss, params, create_graph=True)
        v = [torch.ones_like(p) for p in params]
        hv = torch.autograd.grad(sum((g * u).sum() for g, u in zip(grads, v, strict=True)), params)
        res.append([*grads, *hv])
    for a, b in zip(*res, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "variant, kw",
    [
        ("vanilla", dict(cells_per_block=2, gate_sharpness=2.0)),
        ("lstm97", dict(cells_per_block=2)),
        ("CIFG", {}),
        ("NOG", {}),
        ("mLSTM", {}),
        ("F-LSTM", {}),
        ("G-LSTM", {}),
    ],
)
def test_dropin_family_by_keywords(variant, kw):
    """The LSTM family through the drop-in: keywords after torch's, torch-style names for
    every parameter, and the same function as lstmlab.LSTM with the same weights."""
    m = lstmlab.TorchLSTM(4, 6, 2, dtype=D64, variant=variant, **kw)
    names = [n for n, _ in m.named_parameters()]
    assert all(n.startswith(("weight_", "bias_")) for n in names)
    lab = m.to_lstmlab()
    x = torch.randn(5, 3, 4, dtype=D64)
    for a, b in zip(_flat(m(x)), _flat(lab(x)), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-13)
    back = lstmlab.TorchLSTM.from_lstmlab(lab)
    torch.testing.assert_close(back(x)[0], lab(x)[0], rtol=0, atol=1e-13)


def test_dropin_loads_lstmlab_checkpoint():
    """An lstmlab.LSTM state_dict loads into a TorchLSTM of the same configuration
    (converted on load); a wrong configuration is a RuntimeError naming the way out."""
    lab = lstmlab.LSTM(3, 4, 2, variant="NP", dtype=D64, bidirectional=True)
    m = lstmlab.TorchLSTM(3, 4, 2, bidirectional=True, dtype=D64)
    m.load_state_dict(lab.state_dict())
    x = torch.randn(5, 2, 3, dtype=D64)
    torch.testing.assert_close(m(x)[0], lab(x)[0], rtol=0, atol=1e-13)
    ref = nn.LSTM(3, 4, 2, bidirectional=True, dtype=D64)
    ref.load_state_dict(m.state_dict())
    torch.testing.assert_close(ref(x)[0], lab(x)[0], rtol=0, atol=1e-13)
    with pytest.raises(RuntimeError, match="from_lstmlab"):
        lstmlab.TorchLSTM(3, 4, 1, dtype=D64).load_state_dict(lab.state_dict())
    with pytest.raises(TypeError, match="unexpected keyword"):
        lstmlab.TorchLSTM(3, 4, peephole=True)


def test_func_transforms_and_forward_ad(impl):
    """torch.func.grad, torch.func.jvp and forward-mode AD (dual tensors) through the module
    give torch's numbers (the drop-in runs its reference engine under them)."""
    ref, mod = _same_weights("LSTM", impl, 3, 4, 2, dtype=D64)
    x = torch.randn(5, 2, 3, dtype=D64)
    v = torch.randn_like(x)
    res = []
    for m in (ref, mod):
        g = torch.func.grad(lambda x, m=m: m(x)[0].pow(2).sum())(x)
        _, jv = torch.func.jvp(lambda x, m=m: m(x)[0], (x,), (v,))
        with torch.autograd.forward_ad.dual_level():
            out = m(torch.autograd.forward_ad.make_dual(x, v))[0]
            tangent = torch.autograd.forward_ad.unpack_dual(out).tangent
        res.append([g, jv, tangent])
    for a, b in zip(*res, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-13)


@pytest.mark.parametrize("packed", [False, True])
def test_nn_dropout_masks_as_torch(impl, packed):
    """Inter-layer dropout draws torch's masks from the same seed (over the padded output,
    or over the packed rows for a PackedSequence), so training runs with dropout match."""
    ref, mod = _same_weights("LSTM", impl, 3, 6, 3, dropout=0.4, dtype=D64)
    x = torch.randn(5, 4, 3, dtype=D64)
    inp = rnn_utils.pack_padded_sequence(x, [5, 2, 4, 3], enforce_sorted=False) if packed else x
    torch.manual_seed(7)
    want = _flat(ref(inp))
    torch.manual_seed(7)
    got = _flat(mod(inp))
    for a, b in zip(want, got, strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-13)


@pytest.mark.parametrize("kind", ["GRU", "RNN"])
def test_dropin_loads_lstmlab_baseline_checkpoint(kind):
    """An lstmlab.GRU / lstmlab.RNN state_dict (merged biases) loads into the drop-in and
    gives the same function."""
    lab = getattr(lstmlab, kind)(3, 4, 2, bidirectional=True, dtype=D64, init="torch")
    m = getattr(lstmlab, "Torch" + kind)(3, 4, 2, bidirectional=True, dtype=D64)
    m.load_state_dict(lab.state_dict())
    x = torch.randn(5, 2, 3, dtype=D64)
    for a, b in zip(_flat(m(x)), _flat(lab(x)), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-13)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_dropin_cuda_matches_torch(kind):
    """On a CUDA device the drop-in (the engine on the GPU) gives torch's values and
    gradients for a packed, bidirectional 2-layer module (float64)."""
    ref, mod = _same_weights(kind, IMPLS["lstmlab"], 3, 8, 2, bidirectional=True, dtype=D64)
    ref, mod = ref.cuda(), mod.cuda()
    x = torch.randn(7, 4, 3, dtype=D64, device="cuda")
    res = []
    for m in (ref, mod):
        packed = rnn_utils.pack_padded_sequence(x, [7, 3, 5, 1], enforce_sorted=False)
        out = _flat(m(packed))
        grads = torch.autograd.grad(sum((t * t).sum() for t in out), list(m.parameters()))
        res.append([*out, *grads])
    for a, b in zip(*res, strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-11)
