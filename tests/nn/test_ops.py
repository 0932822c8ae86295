"""The layer-direction as one operator (``lstmlab.nn.ops``) and what the PyTorch stack sees.

- the operator against the reference twin (outputs and gradients, several variants, padded
  lengths), ``gradcheck`` / ``gradgradcheck``, ``torch.library.opcheck`` of both operators;
- ``torch.compile`` of a model holding ``TorchLSTM``: under dynamo's default the layer runs as
  ``nn.LSTM`` does (dynamo refuses every ``nn.LSTM`` and runs it eagerly; nothing inside the
  layer is compiled); with ``allow_rnn=True`` one graph holding the operator, no graph break,
  no recompile after two lengths; outputs and gradients as eager;
- ``torch.export`` with a dynamic length, run at two lengths; ``torch.jit.trace`` run at
  another length (the trace holds the operator, not an unrolled loop).
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
from torch import nn
from torch._dynamo.utils import counters

import lstmlab
from lstmlab.nn import fast_layer, ops

D64 = torch.float64


def _layer_case(variant_kw, lengths):
    torch.manual_seed(0)
    mod = lstmlab.TorchLSTM(3, 4, dtype=D64, **variant_kw)
    spec = mod.specs[0]
    alpha = mod.gate_sharpness.at(0)
    x = torch.randn(5, 2, 3, dtype=D64, requires_grad=True)
    h0 = torch.randn(2, spec.recurrent_size, dtype=D64, requires_grad=True)
    c0 = torch.randn(2, 4, dtype=D64, requires_grad=True)
    L = None if lengths is None else torch.tensor(lengths)
    return mod, spec, alpha, (x, h0, c0), L


VARIANTS = [
    dict(),
    dict(variant="vanilla", gate_sharpness={"i": 2.0, "f": 0.5, "o": 1.5}),
    dict(variant="lstm97", cells_per_block=2),
    dict(proj_size=2),
    dict(variant="mLSTM"),
]


@pytest.mark.parametrize("kw", VARIANTS, ids=lambda k: str(k.get("variant", k) or "NP"))
@pytest.mark.parametrize("lengths", [None, [5, 3]])
def test_operator_matches_reference(kw, lengths):
    mod, spec, alpha, (x, h0, c0), L = _layer_case(kw, lengths)
    w = mod.dense_weights(0, 0)
    got = ops.run_layer(spec, w, x, L, h0, c0, alpha)
    Y, _, h, c = fast_layer.run_layer(spec, w, x, L, h0, c0, alpha, "autograd")
    want = (Y, h, c)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    params = [x, h0, c0, *mod.parameters()]
    gs = [torch.randn_like(t) for t in want]
    ga = torch.autograd.grad(got, params, gs, allow_unused=True, retain_graph=True)
    gb = torch.autograd.grad(want, params, gs, allow_unused=True)
    for a, b in zip(ga, gb, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-12)


def test_operator_gradcheck_and_gradgradcheck():
    """Every input and parameter (peepholes included), padded lengths."""
    mod, spec, alpha, inputs, L = _layer_case(dict(variant="vanilla"), [5, 3])
    names = [n for n, _ in mod.named_parameters()]

    def f(x, h0, c0, *params):
        with _swapped(mod, names, params):
            return ops.run_layer(spec, mod.dense_weights(0, 0), x, L, h0, c0, alpha)

    args = (*inputs, *(p.detach().requires_grad_() for p in mod.parameters()))
    assert torch.autograd.gradcheck(f, args)
    assert torch.autograd.gradgradcheck(f, args)


class _swapped:
    """Temporarily replace a module's parameters by the given tensors (for gradcheck)."""

    def __init__(self, mod, names, tensors):
        self.mod, self.names, self.tensors = mod, names, tensors

    def __enter__(self):
        self.saved = {n: getattr(self.mod, n) for n in self.names}
        for n, t in zip(self.names, self.tensors, strict=True):
            delattr(self.mod, n)
            setattr(self.mod, n, t)

    def __exit__(self, *exc):
        for n, p in self.saved.items():
            delattr(self.mod, n)
            self.mod.register_parameter(n, p)


def test_opcheck_both_operators():
    mod, spec, alpha, (x, h0, c0), L = _layer_case(dict(variant="vanilla"), [5, 3])
    w = mod.dense_weights(0, 0)
    weights = [w.get(n) for n in fast_layer.WEIGHT_NAMES]
    code, al = ops.spec_code(spec), [alpha[g] for g in "ifo"]
    args = (x, h0, c0, *weights, L, code, al)
    torch.library.opcheck(torch.ops.lstmlab.lstm_layer.default, args)
    Y, h, c = ops.run_layer(spec, w, x, L, h0, c0, alpha)
    grads = (torch.randn_like(Y), torch.randn_like(h), None)
    detached = [t.detach() if isinstance(t, torch.Tensor) else t for t in args]
    torch.library.opcheck(
        torch.ops.lstmlab.lstm_layer_backward.default, (*grads, *detached, [True] * 13)
    )


def _taped(spec, alpha, w, x, h0, c0, L):
    """Y, h_n, c_n through ``lstm_layer_taped`` (what a compiled training step calls)."""
    weights = [w.get(n) for n in fast_layer.WEIGHT_NAMES]
    needs = [t is not None and t.requires_grad for t in (x, h0, c0, *weights)]
    out = torch.ops.lstmlab.lstm_layer_taped(
        x, h0, c0, *weights, L, ops.spec_code(spec), [alpha[g] for g in "ifo"], needs
    )
    return out[0], out[1], out[2]


@pytest.mark.parametrize("kw", VARIANTS, ids=lambda k: str(k.get("variant", k) or "NP"))
@pytest.mark.parametrize("lengths", [None, [5, 3], [3, 5]])  # [3, 5]: sorted in the operator
@pytest.mark.parametrize("loop", ["native", "python"])
def test_taped_operator_matches_reference(kw, lengths, loop):
    """The operator that returns the layer's activations (so that its backward does not run
    the forward again): outputs and every gradient as the reference twin's, with the native
    loop and with the Python loop (a machine without a compiler)."""
    from contextlib import nullcontext

    from lstmlab.engines import native

    mod, spec, alpha, (x, h0, c0), L = _layer_case(kw, lengths)
    w = mod.dense_weights(0, 0)
    with native.forced_python() if loop == "python" else nullcontext():
        got = _taped(spec, alpha, w, x, h0, c0, L)
    Y, _, h, c = fast_layer.run_layer(spec, w, x, L, h0, c0, alpha, "autograd")
    want = (Y, h, c)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    params = [x, h0, c0, *mod.parameters()]
    for gs in ([torch.randn_like(t) for t in want], [torch.randn_like(want[0]), None, None]):
        pairs = [(o, g) for o, g in zip(got, gs, strict=True) if g is not None]
        with native.forced_python() if loop == "python" else nullcontext():
            ga = torch.autograd.grad(
                [o for o, _ in pairs], params, [g for _, g in pairs], allow_unused=True,
                retain_graph=True,
            )  # fmt: skip
        ref = [(o, g) for o, g in zip(want, gs, strict=True) if g is not None]
        gb = torch.autograd.grad(
            [o for o, _ in ref], params, [g for _, g in ref], allow_unused=True, retain_graph=True
        )
        for a, b in zip(ga, gb, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize(
    "kw", [dict(variant="vanilla"), dict(variant="mLSTM"), dict(proj_size=2)], ids=str
)
def test_taped_operator_gradcheck_gradgradcheck_and_opcheck(kw):
    """Every tape the fake kernel describes (mLSTM's MX, U, Mm; a projection's Yh)."""
    mod, spec, alpha, inputs, L = _layer_case(kw, [5, 3])
    names = [n for n, _ in mod.named_parameters()]

    def f(x, h0, c0, *params):
        with _swapped(mod, names, params):
            return _taped(spec, alpha, mod.dense_weights(0, 0), x, h0, c0, L)

    args = (*inputs, *(p.detach().requires_grad_() for p in mod.parameters()))
    assert torch.autograd.gradcheck(f, args)
    assert torch.autograd.gradgradcheck(f, args)  # create_graph: through the reference twin
    w = mod.dense_weights(0, 0)
    weights = [w.get(n) for n in fast_layer.WEIGHT_NAMES]
    code, al = ops.spec_code(spec), [alpha[g] for g in "ifo"]
    needs = [t is not None for t in (*inputs, *weights)]
    x, h0, c0 = inputs
    torch.library.opcheck(
        torch.ops.lstmlab.lstm_layer_taped.default, (x, h0, c0, *weights, L, code, al, needs)
    )
    with torch.no_grad():
        out = torch.ops.lstmlab.lstm_layer_taped(x, h0, c0, *weights, L, code, al, needs)
    grads = (torch.randn_like(out[0]), torch.randn_like(out[1]), None)
    detached = [t.detach() if isinstance(t, torch.Tensor) else t for t in (x, h0, c0, *weights)]
    torch.library.opcheck(
        torch.ops.lstmlab.lstm_layer_taped_backward.default,
        (*grads, out[0], list(out[3:]), *detached, L, code, al, needs),
    )


# ------------------------------------------------------------------------------ the stack
class _WordModel(nn.Module):
    def __init__(self, rnn_cls, **kw):
        super().__init__()
        self.emb = nn.Embedding(10, 6, dtype=D64)
        self.rnn = rnn_cls(6, 5, 2, dtype=D64, **kw)
        width = 5 * (2 if self.rnn.bidirectional else 1)
        self.out = nn.Linear(width, 10, dtype=D64)

    def forward(self, tokens):
        return self.out(self.rnn(self.emb(tokens))[0])


def _tokens(T, B=3, seed=0):
    return torch.randint(0, 10, (T, B), generator=torch.Generator().manual_seed(seed))


def _outputs_and_grads(model, fn, tokens):
    model.zero_grad()
    y = fn(tokens)
    y.square().sum().backward()
    return [y.detach()] + [p.grad.clone() for p in model.parameters()]


def _assert_same(a, b):
    for s, t in zip(a, b, strict=True):
        torch.testing.assert_close(s, t, rtol=1e-10, atol=1e-12)


def _compile_stats(rnn_cls):
    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    model = _WordModel(rnn_cls)
    compiled = torch.compile(model, backend="aot_eager")
    got = _outputs_and_grads(model, compiled, _tokens(7))
    want = _outputs_and_grads(model, model, _tokens(7))
    _assert_same(got, want)
    return {k: dict(v) for k, v in counters.items() if k in ("graph_break", "stats")}


def test_compile_default_treats_the_drop_in_as_nn_lstm():
    """Dynamo's default refuses any nn.LSTM and runs it eagerly; the drop-in then runs its
    eager path with nothing inside it compiled: the same counts as the model with nn.LSTM."""
    assert _compile_stats(lstmlab.TorchLSTM) == _compile_stats(nn.LSTM)


def test_compile_allow_rnn_one_graph_one_operator_no_recompile():
    graphs: list[torch.fx.GraphModule] = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return torch._dynamo.lookup_backend("aot_eager")(gm, example_inputs)

    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    model = _WordModel(lstmlab.TorchLSTM, bidirectional=True)
    with torch._dynamo.config.patch(allow_rnn=True):
        compiled = torch.compile(model, backend=backend)
        for T in (7, 9):  # the second length makes T dynamic (automatic dynamic shapes)
            got = _outputs_and_grads(model, compiled, _tokens(T))
            _assert_same(got, _outputs_and_grads(model, model, _tokens(T)))
        with torch._dynamo.config.patch(error_on_recompile=True):
            for T in (4, 13):
                got = _outputs_and_grads(model, compiled, _tokens(T, seed=T))
                _assert_same(got, _outputs_and_grads(model, model, _tokens(T, seed=T)))
    assert not counters["graph_break"]
    assert len(graphs) == 2  # the first length, then the dynamic one
    # a training step: the operator that returns the activations, so the forward runs once
    op, plain = torch.ops.lstmlab.lstm_layer_taped, torch.ops.lstmlab.lstm_layer
    layer_ops = [n for n in graphs[-1].graph.nodes if n.target in (op, op.default)]
    assert len(layer_ops) == 4  # 2 layers × 2 directions
    assert not [n for n in graphs[-1].graph.nodes if n.target in (plain, plain.default)]
    assert len(graphs[-1].graph.nodes) < 120  # no unrolled time loop


def test_compiled_training_step_runs_each_forward_once(monkeypatch):
    """allow_rnn: in a compiled forward + backward each layer-direction's forward runs once
    (the engine's ``run_taped``), never again inside the backward (``bptt.run``, which the
    plain operator's backward calls); gradients as eager, packed lengths included."""
    from lstmlab.engines import bptt

    seen = {"run": 0, "run_taped": 0, "backward_taped": 0}
    for name in seen:
        real = getattr(bptt, name)

        def counted(*a, _real=real, _name=name, **k):
            seen[_name] += 1
            return _real(*a, **k)

        monkeypatch.setattr(bptt, name, counted)
    torch._dynamo.reset()
    torch.manual_seed(0)
    rnn = lstmlab.TorchLSTM(4, 5, num_layers=2, bidirectional=True, proj_size=3, dtype=D64)
    x = torch.randn(6, 3, 4, dtype=D64)
    lengths = torch.tensor([6, 2, 4])

    def loss(model, x):
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
        out, (h, c) = model(packed)
        return (out.data**2).sum() + h.sum() + (c**3).sum()

    with torch._dynamo.config.patch(allow_rnn=True):
        compiled = torch.compile(rnn, backend="aot_eager")
        xs = x.clone().requires_grad_(True)
        got = torch.autograd.grad(loss(compiled, xs), [xs, *rnn.parameters()])
    assert seen == {"run": 0, "run_taped": 4, "backward_taped": 4}
    xs = x.clone().requires_grad_(True)
    want = torch.autograd.grad(loss(rnn, xs), [xs, *rnn.parameters()])
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_export_with_a_dynamic_length():
    torch.manual_seed(0)
    model = _WordModel(lstmlab.TorchLSTM, bidirectional=True).eval()
    T = torch.export.Dim("T", min=2, max=4096)
    ep = torch.export.export(model, (_tokens(7),), dynamic_shapes={"tokens": {0: T}})
    targets = [n.target for n in ep.graph.nodes if n.op == "call_function"]
    assert targets.count(torch.ops.lstmlab.lstm_layer.default) == 4
    for L in (7, 12, 31):  # (eager inference reads torch's gate order in place, the operator
        # the engine's: the same numbers up to the BLAS's order of summation)
        with torch.no_grad():
            torch.testing.assert_close(
                ep.module()(_tokens(L, seed=L)), model(_tokens(L, seed=L)), rtol=1e-13, atol=1e-15
            )


def test_jit_trace_runs_at_another_length():
    torch.manual_seed(0)
    model = _WordModel(lstmlab.TorchLSTM).eval()
    with torch.no_grad(), pytest.warns(torch.jit.TracerWarning):
        traced = torch.jit.trace(model, (_tokens(7),))
    kinds = [n.kind() for n in traced.inlined_graph.nodes()]
    assert kinds.count("lstmlab::lstm_layer") == 2
    for L in (7, 12):  # (to the BLAS's order of summation: see the export test)
        with torch.no_grad():
            torch.testing.assert_close(
                traced(_tokens(L, seed=L)), model(_tokens(L, seed=L)), rtol=1e-13, atol=1e-15
            )
    # the traced module trains: the operator's backward
    got = _outputs_and_grads(model, traced, _tokens(12))
    _assert_same(got, _outputs_and_grads(model, model, _tokens(12)))


# ------------------------------------------------------------------------ GRU and RNN
BASELINES = [
    (lstmlab.TorchGRU, {}),
    (lstmlab.TorchRNN, {}),
    (lstmlab.TorchRNN, dict(nonlinearity="relu")),
]


@pytest.mark.parametrize("kind", ["gru", "tanh", "relu"])
def test_baseline_operator_checks(kind):
    """opcheck of both operators, gradcheck and gradgradcheck with padded lengths."""
    torch.manual_seed(0)
    H = 4
    rows = 3 * H if kind == "gru" else H
    x = torch.randn(5, 2, 3, dtype=D64, requires_grad=True)
    h0 = torch.randn(2, H, dtype=D64, requires_grad=True)
    w_ih = torch.randn(rows, 3, dtype=D64, requires_grad=True)
    w_hh = torch.randn(rows, H, dtype=D64, requires_grad=True)
    b = torch.randn(rows, dtype=D64, requires_grad=True)
    b_hn = torch.randn(H, dtype=D64, requires_grad=True) if kind == "gru" else None
    L = torch.tensor([5, 3])
    args = (x, h0, w_ih, w_hh, b, b_hn, L, kind)
    torch.library.opcheck(torch.ops.lstmlab.baseline_layer.default, args)

    def f(*t):
        p = dict(weight_ih=t[2], weight_hh=t[3], bias=t[4], bias_hn=t[5] if len(t) > 5 else None)
        return ops.run_baseline(kind, p, t[0], L, t[1])

    inputs = (x, h0, w_ih, w_hh, b) + ((b_hn,) if b_hn is not None else ())
    assert torch.autograd.gradcheck(f, inputs)
    assert torch.autograd.gradgradcheck(f, inputs)


@pytest.mark.parametrize("cls, kw", BASELINES, ids=["GRU", "RNN", "RNN-relu"])
def test_baseline_drop_ins_compile_export_trace(cls, kw):
    torch.manual_seed(0)
    model = _WordModel(cls, **kw)
    graphs: list[torch.fx.GraphModule] = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return torch._dynamo.lookup_backend("aot_eager")(gm, example_inputs)

    torch._dynamo.reset()
    counters.clear()
    with torch._dynamo.config.patch(allow_rnn=True):
        compiled = torch.compile(model, backend=backend)
        for T in (7, 9, 13):
            with torch._dynamo.config.patch(error_on_recompile=T == 13):
                got = _outputs_and_grads(model, compiled, _tokens(T))
            _assert_same(got, _outputs_and_grads(model, model, _tokens(T)))
    assert not counters["graph_break"] and len(graphs) == 2
    op = torch.ops.lstmlab.baseline_layer
    assert sum(n.target in (op, op.default) for n in graphs[-1].graph.nodes) == 2
    model.eval()
    T = torch.export.Dim("T", min=2, max=4096)
    ep = torch.export.export(model, (_tokens(7),), dynamic_shapes={"tokens": {0: T}})
    with torch.no_grad(), pytest.warns(torch.jit.TracerWarning):
        traced = torch.jit.trace(model, (_tokens(7),))
    for L in (7, 12):
        with torch.no_grad():
            want = model(_tokens(L, seed=L))
            torch.testing.assert_close(ep.module()(_tokens(L, seed=L)), want, rtol=0, atol=0)
            torch.testing.assert_close(traced(_tokens(L, seed=L)), want, rtol=0, atol=0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_operators_on_cuda():
    """The operators on a CUDA device: outputs and gradients as the reference there, and a
    dynamic-length export run at another length."""
    mod, spec, alpha, (x, h0, c0), L = _layer_case(dict(), [5, 3])
    mod = mod.cuda()
    x, h0, c0 = (t.detach().cuda().requires_grad_() for t in (x, h0, c0))
    L = L.cuda()
    w = mod.dense_weights(0, 0)
    got = ops.run_layer(spec, w, x, L, h0, c0, alpha)
    Y, _, h, c = fast_layer.run_layer(spec, w, x, L, h0, c0, alpha, "autograd")
    for a, b in zip(got, (Y, h, c), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    ga = torch.autograd.grad(sum(t.sum() for t in got), [x, *mod.parameters()], retain_graph=True)
    gb = torch.autograd.grad(Y.sum() + h.sum() + c.sum(), [x, *mod.parameters()])
    for a, b in zip(ga, gb, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
    model = _WordModel(lstmlab.TorchLSTM).cuda().eval()
    T = torch.export.Dim("T", min=2, max=4096)
    ep = torch.export.export(model, (_tokens(7).cuda(),), dynamic_shapes={"tokens": {0: T}})
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(_tokens(12).cuda()), model(_tokens(12).cuda()))
