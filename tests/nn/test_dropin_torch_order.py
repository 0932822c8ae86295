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
from lstmlab.engines import layout, native
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
@pytest.mark.parametrize("ring", [None, 2], ids=["cache-sized-ring", "ring-of-2"])
def test_equals_torch_and_the_python_loop(spy, dtype, T, B, I, H, kw, states, ring, monkeypatch):
    """(ring: the steps of input projections the loop keeps; 2 wraps at every length here)"""
    asked = []  # (step bytes, input weight bytes, rows) the ring was sized by
    sized = layout.ring_chunk
    monkeypatch.setattr(layout, "ring_chunk", lambda *a: asked.append(a) or (ring or sized(*a)))
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
    nl, nd = kw.get("num_layers", 1), 2 if kw.get("bidirectional") else 1
    widest = max(I, nd * H if nl > 1 else 0)  # the widest W_ih of the stack
    size = x.element_size()
    slices = layout.batch_slices(B, 4 * H * H * size, torch.get_num_threads(), dtype)
    rows = -(-B // slices)  # a slice's
    assert asked == [(rows * 4 * H * size, 4 * H * widest * size, rows)]
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
    """Inter-layer dropout in training mode (no graph wanted): one native call per
    layer-direction (the inference loop, not the training path's buffers), dropout drawn
    between them with torch's masks for the same seed."""
    ref, lab = _pair(torch.float64, 5, 16, num_layers=2, dropout=0.5, bidirectional=True)
    x = torch.randn(8, 6, 5, dtype=torch.float64)
    with torch.no_grad():
        torch.manual_seed(3)
        want = ref(x)
        torch.manual_seed(3)
        got = lab(x)
    assert spy == [1, 1, 1, 1]  # four layer-directions, a call each
    for a, b in zip((got[0], *got[1]), (want[0], *want[1]), strict=True):
        assert _rel(a, b) <= 1e-12


def test_the_loop_alone_refuses_a_graph():
    """``native.torch_lstm`` computes no gradients: asked for them, it says so."""
    _, lab = _pair(torch.float32, 5, 16)
    with pytest.raises(RuntimeError, match="computes no gradients"):
        native.torch_lstm(torch.randn(3, 2, 5), list(lab._flat_weights), None, 1, False, True)


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


def _case_module(case: str):
    """A drop-in (4 → 16 units) and an input (6, 20, 4) for one case of the "not taken" tests:
    a projection, peepholes, vanilla or α ≠ 1 where the case names one, else torch's cell."""
    kw = {
        "proj": {"proj_size": 8},
        "peepholes": {"peepholes": True},
        "vanilla": {"variant": "vanilla"},
        "sharpness": {"gate_sharpness": 2.0},
    }.get(case, {})
    torch.manual_seed(0)
    return lstmlab.TorchLSTM(4, 16, **kw), torch.randn(6, 20, 4)


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
    lab, x = _case_module(case)
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


# ---------------------------------------------------------------- training (engines/torch_order)
@pytest.fixture
def train_spy(monkeypatch):
    """Counts the layer-directions that ran ``engines.torch_order`` (the training path)."""
    from lstmlab.engines import torch_order

    seen = []
    real = torch_order.run_layer

    def counted(*args, **kwargs):
        seen.append(args[1].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch_order, "run_layer", counted)
    return seen


def _outs_and_grads(model, x, hx):
    """Outputs, final states and the gradient of every input and parameter of a loss that
    reads all three outputs."""
    xs = x.detach().requires_grad_(True)
    hs = None if hx is None else tuple(h.detach().requires_grad_(True) for h in hx)
    y, (h, c) = model(xs) if hs is None else model(xs, hs)
    loss = (y**2).sum() + (h * 0.5).sum() + (c**3).sum()
    wrt = [xs, *(hs or ()), *model.parameters()]
    return [y, h, c, *torch.autograd.grad(loss, wrt)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "T,B,I,H,kw",
    [
        (7, 20, 5, 16, {}),
        (5, 3, 4, 21, {"bias": False}),  # a scalar tail, no bias
        (9, 24, 8, 40, {"num_layers": 2, "bidirectional": True, "batch_first": True}),
        (30, 1, 3, 17, {}),  # batch 1
    ],
)
@pytest.mark.parametrize("states", ["given", "zeros"])
def test_training_equals_torch_and_the_python_loop(train_spy, dtype, T, B, I, H, kw, states):
    """Forward and every gradient (input, states, W_ih, W_hh, b_ih, b_hh) of the drop-in's
    training path against torch.nn.LSTM and against the engine's Python loop."""
    ref, lab = _pair(dtype, I, H, **kw)
    shape = (B, T, I) if kw.get("batch_first") else (T, B, I)
    x = torch.randn(*shape, dtype=dtype)
    L = kw.get("num_layers", 1) * (2 if kw.get("bidirectional") else 1)
    hx = (torch.randn(L, B, H, dtype=dtype), torch.randn(L, B, H, dtype=dtype))
    hx = hx if states == "given" else None
    want = _outs_and_grads(ref, x, hx)
    got = _outs_and_grads(lab, x, hx)
    assert len(train_spy) == L  # every layer-direction took it
    with native.forced_python():
        twin = _outs_and_grads(lab, x, hx)
    assert len(train_spy) == L
    tol = {torch.float32: 2e-5, torch.float64: 1e-12}[dtype]
    for a, b, c in zip(got, want, twin, strict=True):
        assert a.shape == b.shape
        assert _rel(a, b) <= tol and _rel(a, c) <= tol


def test_training_path_gradcheck_and_gradgradcheck():
    """float64 finite differences of the layer itself (first and second order: the double
    backward differentiates the reference twin)."""
    from lstmlab.engines import torch_order

    torch.manual_seed(1)
    _, lab = _pair(torch.float64, 3, 16)
    spec = lab.specs[0]
    T, B = 4, 3
    args = [
        torch.randn(T, B, 3, dtype=torch.float64),
        torch.randn(B, 16, dtype=torch.float64),
        torch.randn(B, 16, dtype=torch.float64),
        *(p.detach().clone() for p in lab.parameters()),
    ]
    args = [a.requires_grad_(True) for a in args]

    def fn(*a):
        return torch_order.run_layer(spec, *a)

    assert torch.autograd.gradcheck(fn, args)
    assert torch.autograd.gradgradcheck(fn, args)


def test_training_path_reference_is_torchs_layer():
    """The reference twin itself against torch.nn.LSTM (so the double backward differentiates
    the right function)."""
    from lstmlab.engines import torch_order

    ref, _ = _pair(torch.float64, 3, 16)
    x, h0, c0 = (torch.randn(*s, dtype=torch.float64) for s in ((5, 2, 3), (2, 16), (2, 16)))
    b = ref.bias_ih_l0 + ref.bias_hh_l0
    y, h, c = torch_order.reference(x, h0, c0, ref.weight_ih_l0, ref.weight_hh_l0, b)
    want, (hw, cw) = ref(x, (h0[None], c0[None]))
    assert _rel(y, want) <= 1e-13 and _rel(h, hw[0]) <= 1e-13 and _rel(c, cw[0]) <= 1e-13


@pytest.mark.parametrize(
    "case", ["packed", "proj", "peepholes", "sharpness", "features", "vanilla", "func grad"]
)
def test_training_path_not_taken_where_it_does_not_apply(train_spy, case):
    """Unequal lengths, a projection, another variant, α ≠ 1, the feature-major layout, a
    torch.func transform: the engine's general path (still torch's gradients where torch has
    the model)."""
    lab, x = _case_module(case)
    if case == "packed":
        packed = nn.utils.rnn.pack_padded_sequence(x, torch.tensor([6] * 10 + [3] * 10))
        lab(packed)[0].data.sum().backward()
    elif case == "features":
        with forced_layout("features"):
            lab(x)[0].sum().backward()
    elif case == "func grad":
        from torch.func import functional_call, grad

        params = {k: v.detach() for k, v in lab.named_parameters()}
        g = grad(lambda p: functional_call(lab, p, (x,))[0].sum())(params)
        ref = nn.LSTM(4, 16)
        ref.load_state_dict(lab.state_dict())
        ref(x)[0].sum().backward()
        assert _rel(g["weight_hh_l0"], ref.weight_hh_l0.grad) <= 2e-5
    else:
        lab(x)[0].sum().backward()
    assert train_spy == []


def test_torch_order_backward_refuses_other_cells():
    """The native backward reads torch's gate order for the common cell's plain layer only; any
    other cell is one clear error, not a wrong gradient."""
    spec = lstmlab.TorchLSTM(4, 16, peepholes=True).specs[0]
    T, B, H = 2, 3, 16
    D = spec.n_pre
    z = torch.zeros
    with pytest.raises(RuntimeError, match="torch's gate order only"):
        native.backward_rows(
            spec, {}, [B] * T, z(T, B, D), z(T, B, H), z(T, B, H), z(B, H), z(D, H), None,
            None, {"i": z(H), "f": z(H), "o": z(H)}, None, None, z(T, B, D), None, z(B, H),
            z(B, H), None, None, torch_order=True,
        )  # fmt: skip


def test_training_path_with_dropout_retain_graph_and_states_only(train_spy):
    """The training path with inter-layer dropout (torch's masks for the same seed), a second
    backward through a retained graph, and a graph through the initial states alone (input and
    weights frozen): each gives torch.nn.LSTM's gradients."""
    ref, lab = _pair(torch.float64, 5, 16, num_layers=2, dropout=0.3)
    x = torch.randn(7, 4, 5, dtype=torch.float64)
    grads = []
    for m in (ref, lab):
        torch.manual_seed(4)
        y, _ = m(x)
        loss = (y**2).sum()
        first = torch.autograd.grad(loss, list(m.parameters()), retain_graph=True)
        second = torch.autograd.grad(loss, list(m.parameters()))
        grads.append([*first, *second])
    assert len(train_spy) == 2
    for a, b in zip(*grads, strict=True):
        assert _rel(a, b) <= 1e-12
    for m in (ref, lab):
        m.requires_grad_(False)
    h0 = torch.randn(2, 4, 16, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(2, 4, 16, dtype=torch.float64, requires_grad=True)
    ref.eval(), lab.eval()
    got = torch.autograd.grad(lab(x, (h0, c0))[0].sum(), [h0, c0])
    want = torch.autograd.grad(ref(x, (h0, c0))[0].sum(), [h0, c0])
    assert len(train_spy) == 4
    for a, b in zip(got, want, strict=True):
        assert _rel(a, b) <= 1e-12


def test_training_path_double_backward_through_the_module(train_spy):
    """A gradient penalty (create_graph=True) through the drop-in: the second-order gradient of
    every parameter equals torch.nn.LSTM's."""
    ref, lab = _pair(torch.float64, 3, 16, num_layers=2)
    x = torch.randn(5, 3, 3, dtype=torch.float64)
    out = []
    for m in (ref, lab):
        params = list(m.parameters())
        g = torch.autograd.grad((m(x)[0] ** 2).sum(), params, create_graph=True)
        penalty = sum((gi**2).sum() for gi in g)
        out.append(torch.autograd.grad(penalty, params))
    assert len(train_spy) == 2
    for a, b in zip(*out, strict=True):
        assert _rel(a, b) <= 1e-10


def test_the_op_refuses_a_bias_of_another_shape():
    """A bias that would broadcast (one entry) is refused, not summed into wrong values."""
    _, lab = _pair(torch.float32, 5, 16)
    w = list(lab._flat_weights)
    w[3] = torch.zeros(1)
    with pytest.raises(RuntimeError, match="biases must be"):
        torch.ops.lstmlab_native.torch_lstm(torch.randn(4, 3, 5), w, None, None, 1, False, True, 4)


@pytest.mark.parametrize(
    "B,kw",
    [
        (7, {}),  # uneven slices: 3 and 4 rows
        (4, {"num_layers": 2, "bidirectional": True}),  # two rows a thread, every layer-direction
        (40, {"num_layers": 2, "batch_first": True, "bias": False}),
        (30, {"input_size": 24, "hidden_size": 40, "steps": 120}),  # W and R packed
    ],
)
@pytest.mark.parametrize("states", ["given", "zeros"])
@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_two_threads_run_the_batch_in_slices(spy, B, kw, states, mode):
    """At two threads, a float32 batch of fewer than 256 rows with a recurrent weight that a
    core's cache holds runs in two slices of rows, each thread the whole stack on its own rows
    (a native counter shows it): torch's outputs and final states, the Python loop's, and —
    where the BLAS gives each row the same sums whatever the number of rows (probed: one
    thread, the batch against its first rows alone; so MKL's float32 products on x86) — one
    thread's to the last bit. Under ``no_grad`` and under ``inference_mode`` (each task takes
    the caller's thread-local state)."""
    split = torch.ops.lstmlab_native.split_stack_calls
    dtype = torch.float32
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    nograd = torch.no_grad if mode == "no_grad" else torch.inference_mode
    try:
        kw = dict(kw)
        I, H, T = kw.pop("input_size", 5), kw.pop("hidden_size", 12), kw.pop("steps", 9)
        ref, lab = _pair(dtype, I, H, **kw)
        x = torch.randn(*((B, T, I) if kw.get("batch_first") else (T, B, I)), dtype=dtype)
        L = kw.get("num_layers", 1) * (2 if kw.get("bidirectional") else 1)
        hx = (torch.randn(L, B, H, dtype=dtype), torch.randn(L, B, H, dtype=dtype))
        args = (x, hx) if states == "given" else (x,)
        with nograd():
            seen = split()
            got = lab(*args)
            assert split() == seen + 1 and spy == [L]
            want = ref(*args)
            with native.forced_python():
                twin = lab(*args)
        for a, b, c in zip(
            (got[0], *got[1]), (want[0], *want[1]), (twin[0], *twin[1]), strict=True
        ):
            assert a.shape == b.shape
            assert _rel(a, b) <= TOL[dtype] and _rel(a, c) <= TOL[dtype]
        with nograd():  # batch 3 (a slice would have one row), one thread: one loop
            seen = split()
            lab(x[:, :3] if not kw.get("batch_first") else x[:3])
            torch.set_num_threads(1)
            one = lab(*args)
            half = B // 2  # the probe: the first rows alone, one thread
            bf = kw.get("batch_first")
            part = lab(
                x[:half] if bf else x[:, :half], *(tuple(h[:, :half] for h in hx),)[: len(args) - 1]
            )
            torch.set_num_threads(2)
            lab.double()(*(t.double() for t in args[:1]))  # float64: one loop
            assert split() == seen
        invariant = torch.equal(part[0], one[0][:half] if bf else one[0][:, :half])
        for a, b in zip((got[0], *got[1]), (one[0], *one[1]), strict=True):
            if invariant:  # the slices' numbers are one loop's, to the last bit
                assert torch.equal(a, b)
            else:
                assert _rel(a, b) <= TOL[dtype]
    finally:
        torch.set_num_threads(before)


def test_torch_lstm_op_takes_slices():
    """The op's slices argument: more slices than rows is at most a row each; 0 is refused."""
    ref, lab = _pair(torch.float64, 3, 4)
    w = [p.detach() for p in lab._flat_weights]
    x = torch.randn(5, 3, 3, dtype=torch.float64)
    op = torch.ops.lstmlab_native.torch_lstm
    with torch.no_grad():
        want = ref(x)
        for slices in (1, 2, 3, 8):
            y, h, c = op(x, w, None, None, 1, False, True, 2, slices)
            assert _rel(y, want[0]) <= 1e-12 and _rel(c, want[1][1]) <= 1e-12
    with pytest.raises(RuntimeError, match="slices >= 1"):
        op(x, w, None, None, 1, False, True, 2, 0)


@pytest.mark.parametrize(
    "T,B,I,H,kw",
    [
        (9, 7, 5, 12, {}),  # uneven slices: 3 and 4 rows
        (8, 4, 3, 16, {"num_layers": 2, "bidirectional": True, "batch_first": True}),
        (120, 30, 24, 40, {"bias": False}),  # W and R packed
    ],
)
@pytest.mark.parametrize("states", ["given", "zeros"])
def test_training_in_slices_at_two_threads(monkeypatch, T, B, I, H, kw, states):
    """At two threads, float32 training runs each slice of rows on a thread of its own, forward
    and backward (a native counter shows it; the size bound lowered so that small layers
    take it): torch's outputs and every gradient, and the Python loop's; a loss reading h_n
    alone (no output gradient) too."""
    from lstmlab.engines import torch_order

    sliced = torch.ops.lstmlab_native.sliced_training_calls
    monkeypatch.setattr(layout, "_L2", 2 << 20)  # (the rule's cache, as measured)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        ref, lab = _pair(torch.float32, I, H, **kw)
        x = torch.randn(*((B, T, I) if kw.get("batch_first") else (T, B, I)))
        L = kw.get("num_layers", 1) * (2 if kw.get("bidirectional") else 1)
        hx = (torch.randn(L, B, H), torch.randn(L, B, H)) if states == "given" else None
        seen = sliced()
        _outs_and_grads(lab, x[:4] if kw.get("batch_first") else x[:4, :], hx)
        assert sliced() == seen or T * B >= 3000  # below the size bound: one loop
        monkeypatch.setattr(torch_order, "SLICE_MIN_FLOPS", 0)
        want = _outs_and_grads(ref, x, hx)
        seen = sliced()
        got = _outs_and_grads(lab, x, hx)
        assert sliced() == seen + L  # a forward per layer-direction, in slices
        with native.forced_python():
            twin = _outs_and_grads(lab, x, hx)
        for a, b, c in zip(got, want, twin, strict=True):
            assert a.shape == b.shape
            assert _rel(a, b) <= 2e-5 and _rel(a, c) <= 2e-5
        grads = []
        for m in (ref, lab):  # h_n alone: no gradient reaches the output sequence
            params = list(m.parameters())
            grads.append(torch.autograd.grad((m(x)[1][0] ** 2).sum(), params))
        for a, b in zip(*grads, strict=True):
            assert _rel(a, b) <= 2e-5
    finally:
        torch.set_num_threads(before)


def test_training_slices_survive_a_thread_count_change(monkeypatch):
    """The layout of the saved step buffers goes with them (where the slices cut is saved), so
    a checkpointed layer recomputed at another thread count, and a backward run at another
    thread count than its forward, give torch's gradients; a retained graph twice too."""
    from torch.utils.checkpoint import checkpoint

    from lstmlab.engines import torch_order

    monkeypatch.setattr(torch_order, "SLICE_MIN_FLOPS", 0)
    monkeypatch.setattr(layout, "_L2", 2 << 20)
    sliced = torch.ops.lstmlab_native.sliced_training_calls
    ref, lab = _pair(torch.float32, 5, 12, num_layers=2)
    x = torch.randn(9, 7, 5)
    before = torch.get_num_threads()
    try:
        grads = []
        for m in (ref, lab):
            torch.set_num_threads(2)
            seen = sliced()
            loss = (checkpoint(m, x, use_reentrant=False)[0] ** 2).sum()
            assert m is ref or sliced() == seen + 2  # the forward ran in slices
            torch.set_num_threads(1)  # the recomputation: one loop
            grads.append(torch.autograd.grad(loss, list(m.parameters())))
            torch.set_num_threads(2)
            loss = (m(x)[0] ** 2).sum()
            first = torch.autograd.grad(loss, list(m.parameters()), retain_graph=True)
            torch.set_num_threads(1)  # a backward at one thread of a forward in slices
            grads.append(first + torch.autograd.grad(loss, list(m.parameters())))
        for a, b in zip(grads[0] + grads[1], grads[2] + grads[3], strict=True):
            assert _rel(b, a) <= 2e-5
    finally:
        torch.set_num_threads(before)
