"""The native core (``lstmlab.engines.native``) against its reference twins, the Python loops
of ``bptt_rows`` (batch-major) and ``bptt_features`` (feature-major): every variant and
structure it covers, both dtypes, both layouts, packed lengths, gradients, the R-forward pass;
gradcheck through it; the forced fallback and a failed build."""

from __future__ import annotations

import contextlib
import os

import pytest
import torch

from lstmlab import LSTM, TorchLSTM
from lstmlab.engines import native
from lstmlab.engines.bptt import forced_layout
from lstmlab.engines.native import build

F64, F32 = torch.float64, torch.float32
LENGTHS = torch.tensor([6, 3, 1, 5, 6])  # unequal, some full-length, one of length 1

needs_native = pytest.mark.skipif(
    not build.load(), reason="the native core could not be built on this machine"
)


@pytest.fixture
def calls(monkeypatch):
    """Counts the native forward and backward loops run (so no test passes by falling back)."""
    seen = {"forward": 0, "backward": 0, "ZA steps": [], "C steps": [], "features": 0}
    seen["torch order"] = 0  # the drop-in's inference on torch's weights (C: two steps)
    fwd, bwd = native.forward_rows, native.backward_rows
    tinf = native.torch_lstm

    def torch_lstm(*a, **k):  # (counted per layer-direction)
        seen["torch order"] += a[3] * (2 if a[4] else 1)
        return tinf(*a, **k)

    ffwd, fbwd = native.forward_features, native.backward_features

    def forward_rows(*a, **k):
        seen["forward"] += 1
        seen["ZA steps"].append(a[9].shape[0])  # steps kept: T, or a ring without backward
        seen["C steps"].append(a[10].shape[0])
        return fwd(*a, **k)

    def backward_rows(*a, **k):
        seen["backward"] += 1
        return bwd(*a, **k)

    def forward_features(*a, **k):
        seen["forward"] += 1
        seen["features"] += 1
        seen["ZA steps"].append(a[8].shape[0])
        return ffwd(*a, **k)

    def backward_features(*a, **k):
        seen["backward"] += 1
        return fbwd(*a, **k)

    monkeypatch.setattr(native, "forward_rows", forward_rows)
    monkeypatch.setattr(native, "backward_rows", backward_rows)
    monkeypatch.setattr(native, "forward_features", forward_features)
    monkeypatch.setattr(native, "backward_features", backward_features)
    monkeypatch.setattr(native, "torch_lstm", torch_lstm)
    return seen


def _run(model, x, lengths, python: bool, h0c0=None, layout: str = "batch"):
    """Outputs, final states, cell states and every gradient (parameters, x, h0, c0) of a loss
    touching all of them, in the given layout, native or Python loop."""
    ctx = native.forced_python() if python else contextlib.nullcontext()
    x = x.detach().clone().requires_grad_(True)
    extra = [] if h0c0 is None else [t.detach().clone().requires_grad_(True) for t in h0c0]
    with ctx, forced_layout(layout):
        out, (h, c), states = model(
            x, None if not extra else tuple(extra), lengths=lengths, return_states=True
        )
        w = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
        loss = (w * out).sum() + (out**2).sum() + (h * 0.7).sum() + (c**2).sum() * 0.3
        loss = loss + sum((s.sin()).sum() * 0.1 for s in states)
        grads = torch.autograd.grad(loss, [*model.parameters(), x, *extra])
    return [out, h, c, *states, *grads]


def _rel(a, b):
    return (a - b).abs().max().item() / max(a.abs().max().item(), b.abs().max().item(), 1e-300)


def _assert_twins(model, x, lengths, dtype, h0c0=None, layout: str = "batch"):
    got = _run(model, x, lengths, False, h0c0, layout)
    want = _run(model, x, lengths, True, h0c0, layout)
    tol = 1e-12 if dtype == F64 else 2e-5
    for a, b in zip(got, want, strict=True):
        assert a.shape == b.shape
        assert _rel(a, b) <= tol


COVERED = [
    dict(variant="NP"),
    dict(variant="vanilla"),
    dict(variant="NIG"),
    dict(variant="NFG"),
    dict(variant="NOG"),
    dict(variant="NIAF"),
    dict(variant="NOAF"),
    dict(variant="CIFG"),
    dict(variant="FGR"),
    dict(variant="lstm97", cells_per_block=2),
    dict(variant="vanilla", cells_per_block=3),
    dict(variant="CIFG", cells_per_block=2),
    dict(variant="NOG", cells_per_block=2, input_activation="bipolar1"),
    dict(variant="NP", proj_size=3),
    dict(variant="vanilla", proj_size=4, bidirectional=True, num_layers=2),
    dict(variant="lstm97", cells_per_block=2, proj_size=2, bidirectional=True),
    dict(variant="NP", bias=False),
]
# the forward and backward loops also run mLSTM and the structured F-LSTM / G-LSTM maps
MLSTM = [
    dict(variant="mLSTM"),
    dict(variant="mLSTM", multiplicative_size=5),
    dict(variant="mLSTM", multiplicative_size=9, proj_size=3, bidirectional=True),
    dict(variant="F-LSTM"),
    dict(variant="F-LSTM", factorization_rank=3, proj_size=2, bidirectional=True),
    dict(variant="G-LSTM"),
    dict(variant="G-LSTM", groups=2, proj_size=4, bidirectional=True),
]


def _ids(kw):
    return "-".join(f"{k}={v}" for k, v in kw.items())


# the feature-major native loop runs every dense variant (mLSTM included); F-LSTM's and
# G-LSTM's structured maps keep their own products in the Python loop of that layout
STRUCTURED = ("F-LSTM", "G-LSTM")
TWIN_CASES = [(kw, "batch") for kw in COVERED + MLSTM] + [
    (kw, "features") for kw in COVERED + MLSTM if kw["variant"] not in STRUCTURED
]


@needs_native
@pytest.mark.parametrize("padded", [False, True], ids=["full", "padded"])
@pytest.mark.parametrize("dtype", [F64, F32], ids=str)
@pytest.mark.parametrize(
    ("kw", "layout"), TWIN_CASES, ids=[f"{lay}-{_ids(kw)}" for kw, lay in TWIN_CASES]
)
def test_native_equals_python_loop(kw, layout, dtype, padded, calls):
    """Outputs, states and every gradient within 1e-12 (float64) / round-off (float32), with
    per-gate sharpness α ≠ 1, initial states given, and sequences of unequal lengths, in both
    layouts."""
    m = LSTM(4, 6, dtype=dtype, seed=1, gate_sharpness={"i": 1.5, "f": 0.8, "o": 3.75}, **kw)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(6, 5, 4, generator=g, dtype=dtype)
    L = m.num_layers * m.num_directions
    h0 = torch.randn(L, 5, m.proj_size or 6, generator=g, dtype=dtype)
    c0 = torch.randn(L, 5, 6, generator=g, dtype=dtype)
    _assert_twins(m, x, LENGTHS if padded else None, dtype, (h0, c0), layout)
    assert calls["forward"] == calls["backward"] == L  # the native run, once per direction
    assert calls["features"] == (L if layout == "features" else 0)


@needs_native
@pytest.mark.parametrize("dtype", [F64, F32], ids=str)
@pytest.mark.parametrize(
    "kw",
    [
        dict(variant="lstm97", cells_per_block=2, gate_sharpness=3.75),
        dict(variant="FGR", proj_size=3),
        dict(variant="mLSTM", multiplicative_size=5),
        dict(variant="vanilla", cells_per_block=2, bidirectional=True),
    ],
    ids=_ids,
)
def test_feature_major_columns_split_across_threads(kw, dtype, calls):
    """The feature-major loop gives each thread a slice of the columns through the whole time
    loop: a batch of 301 over 2 threads (slices meeting inside a block of packed lengths) gives
    the Python loop's numbers, and the same numbers as one thread."""
    m = LSTM(3, 4, dtype=dtype, seed=4, **kw)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(9, 301, 3, generator=g, dtype=dtype)
    lengths = torch.randint(1, 10, (301,), generator=g)
    lengths[:3] = 9
    L = m.num_layers * m.num_directions
    hx = (
        torch.randn(L, 301, m.proj_size or 4, generator=g, dtype=dtype),
        torch.randn(L, 301, 4, generator=g, dtype=dtype),
    )
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        _assert_twins(m, x, lengths, dtype, hx, "features")
        two = _run(m, x, lengths, False, hx, "features")
        torch.set_num_threads(1)
        one = _run(m, x, lengths, False, hx, "features")
    finally:
        torch.set_num_threads(threads)
    assert calls["features"] == 3 * m.num_directions
    for a, b in zip(one, two, strict=True):
        assert _rel(a, b) <= (1e-12 if dtype == F64 else 2e-5)


@needs_native
@pytest.mark.parametrize("padded", [False, True], ids=["full", "padded"])
@pytest.mark.parametrize(
    "kw",
    [
        dict(variant="vanilla"),
        dict(variant="NP", proj_size=3),
        dict(variant="lstm97", cells_per_block=2),
        dict(variant="FGR"),
        dict(variant="mLSTM", multiplicative_size=5),
    ],
    ids=_ids,
)
def test_feature_major_inference_keeps_one_step(kw, padded, calls):
    """Feature-major without gradients: the native loop keeps the activations of one step (two
    with a full gate recurrence, whose gates read the previous step's) and h(c), ŷ of one;
    outputs, final and cell states are the Python loop's. With a graph: every step."""
    m = LSTM(4, 6, dtype=F64, seed=1, gate_sharpness=2.5, **kw)
    x = torch.randn(7, 5, 4, generator=torch.Generator().manual_seed(4), dtype=F64)
    lengths = torch.tensor([7, 3, 1, 5, 7]) if padded else None
    h0 = torch.randn(1, 5, m.proj_size or 6, dtype=F64)
    c0 = torch.randn(1, 5, 6, dtype=F64)
    res = []
    for python in (False, True):
        ctx = native.forced_python() if python else contextlib.nullcontext()
        with ctx, forced_layout("features"), torch.no_grad():
            out, (h, c), states = m(x, (h0, c0), lengths=lengths, return_states=True)
        res.append([out, h, c, *states])
    for a, b in zip(*res, strict=True):
        assert _rel(a, b) <= 1e-12
    assert calls["ZA steps"] == [2 if m.cells[0].spec.fgr else 1]
    with forced_layout("features"):
        m(x, lengths=lengths)
    assert calls["ZA steps"][-1] == 7


@needs_native
@pytest.mark.parametrize("variant", STRUCTURED)
def test_structured_maps_keep_the_python_loop_feature_major(variant, calls):
    """F-LSTM's and G-LSTM's structured maps are not run by the feature-major native loop: that
    layout runs them in its Python loop (and the batch-major one natively)."""
    m = LSTM(4, 6, dtype=F64, seed=1, variant=variant)
    x = torch.randn(5, 40, 4, dtype=F64)
    _run(m, x, None, False, None, "features")
    assert calls["forward"] == calls["backward"] == 0
    _run(m, x, None, False, None, "batch")
    assert calls["forward"] == calls["backward"] == 1


@needs_native
@pytest.mark.parametrize("padded", [False, True], ids=["full", "padded"])
@pytest.mark.parametrize("dtype", [F64, F32], ids=str)
@pytest.mark.parametrize(
    "kw",
    [
        dict(variant="NP"),
        dict(variant="FGR", proj_size=17),
        dict(variant="mLSTM", proj_size=9),
        dict(variant="F-LSTM", factorization_rank=16),  # MKL's packed float32 product on W2
        dict(variant="G-LSTM"),
    ],
    ids=_ids,
)
def test_wider_layers(kw, dtype, padded, calls):
    """A layer wide enough (both sides of R >= 16, >= 2 rows, >= 4 steps) for the float32
    products on a weight packed once per call (MKL), on its steps with every row alive."""
    m = LSTM(8, 20, dtype=dtype, seed=1, **kw)
    x = torch.randn(6, 5, 8, generator=torch.Generator().manual_seed(4), dtype=dtype)
    _assert_twins(m, x, LENGTHS if padded else None, dtype)
    assert calls["forward"] == calls["backward"] == 1


@needs_native
@pytest.mark.parametrize("chunk", [2, 100], ids=["ring", "whole"])
@pytest.mark.parametrize("padded", [False, True], ids=["full", "padded"])
@pytest.mark.parametrize(
    "kw",
    [
        dict(variant="vanilla"),
        dict(variant="NP", proj_size=3),
        dict(variant="lstm97", cells_per_block=2),
        dict(variant="mLSTM", multiplicative_size=5),
        dict(variant="F-LSTM", factorization_rank=3),
        dict(variant="G-LSTM"),
    ],
    ids=_ids,
)
def test_inference_keeps_a_ring_of_steps(kw, padded, chunk, calls, monkeypatch):
    """Without gradients the native loop keeps the pre-activations of one chunk of input
    projections (a ring, here of 2 steps: it wraps) and h(c), ŷ of one step; outputs, final
    and cell states are the Python loop's (full gate recurrence keeps every step)."""
    from lstmlab.engines import layout

    monkeypatch.setattr(layout, "ring_chunk", lambda *a: chunk)
    m = LSTM(4, 6, dtype=F64, seed=1, gate_sharpness=2.5, **kw)
    x = torch.randn(7, 5, 4, generator=torch.Generator().manual_seed(4), dtype=F64)
    lengths = torch.tensor([7, 3, 1, 5, 7]) if padded else None
    res = []
    for python in (False, True):
        ctx = native.forced_python() if python else contextlib.nullcontext()
        with ctx, forced_layout("batch"), torch.no_grad():
            out, (h, c), states = m(x, lengths=lengths, return_states=True)
        res.append([out, h, c, *states])
    for a, b in zip(*res, strict=True):
        assert _rel(a, b) <= 1e-12
    assert calls["forward"] == 1
    assert calls["ZA steps"] == [7 if m.cells[0].spec.fgr else min(chunk, 7)]
    assert calls["C steps"] == [7]  # the states were asked for
    with forced_layout("batch"):  # with a graph: every step kept for the backward
        m(x, lengths=lengths)
    assert calls["ZA steps"][-1] == 7


@needs_native
@pytest.mark.parametrize("padded", [False, True], ids=["full", "packed"])
@pytest.mark.parametrize("T", [1, 2, 7])
def test_dropin_inference_keeps_two_cell_states(T, padded, calls):
    """The torch drop-in reads no cell-state trajectory: without a graph the batch-major loop
    keeps C for two steps (c_{t-1}, c_t), each row's last c staying in its slot; outputs and
    final states as the Python loop's (which keeps every step) and as torch.nn.LSTM's, packed
    rows of every length."""
    torch.manual_seed(5)
    m = TorchLSTM(4, 6, num_layers=2, bidirectional=True, dtype=F64)
    ref = torch.nn.LSTM(4, 6, num_layers=2, bidirectional=True, dtype=F64)
    ref.load_state_dict(m.state_dict())
    x = torch.randn(T, 5, 4, dtype=F64)
    lengths = torch.tensor([T, max(1, T - 1), 1, max(1, T - 3), T])
    res = []
    for run in ("native", "python", "torch"):
        ctx = native.forced_python() if run == "python" else contextlib.nullcontext()
        with ctx, forced_layout("batch"), torch.no_grad():
            model = ref if run == "torch" else m
            if padded:
                packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
                out, (h, c) = model(packed)
                out = out.data
            else:
                out, (h, c) = model(x)
        res.append([out, h, c])
    for a, b, want in zip(*res, strict=True):
        assert _rel(a, b) <= 1e-12 and _rel(a, want) <= 1e-12
    # 2 layers x 2 directions; full-length batches: torch's weights in torch's gate order
    # (``torch_lstm``, C for two steps too)
    assert calls["C steps"] == [2] * (4 - calls["torch order"])
    assert calls["torch order"] == (0 if padded and T > 1 else 4)
    with forced_layout("batch"):  # with a graph: every step kept
        m(x)
    assert calls["C steps"][-1] == T


@needs_native
@pytest.mark.parametrize("dtype", [F64, F32], ids=str)
@pytest.mark.parametrize(
    "kw",
    [
        dict(variant="NP"),  # the common cell's two passes
        dict(variant="vanilla", cells_per_block=2),  # the general pass
        dict(variant="mLSTM", multiplicative_size=5),
        dict(variant="FGR", proj_size=3),
        dict(variant="NOG", input_activation="bipolar1"),  # a scale of 1: nothing to apply
    ],
    ids=_ids,
)
def test_block_input_scale_in_the_step_is_bitwise_the_scaled_weights(kw, dtype, monkeypatch):
    """With every α = 1 the batch-major native forward takes W, R, b as they are and applies
    the block input's argument scale (2 for tanh in the sigmoid form) to the summed
    pre-activation: the same bits as the weights scaled first (a power of two)."""
    from lstmlab.engines import gates

    torch.manual_seed(3)
    m = LSTM(input_size=4, hidden_size=6, dtype=dtype, **kw)
    x = torch.randn(7, 5, 4, dtype=dtype)
    seen = []
    fwd = native.forward_rows

    def prescaled(spec, bs, chunk, x2, Ws, bias, Rs, *rest):
        *head, z_scale = rest  # h0 … the intermediate, then the scale
        seen.append(z_scale)
        if z_scale != 1.0:  # the weights scaled first, the step applying no scale
            one = dict.fromkeys(spec.gates, 1.0)
            Ws, bias, Rs = (gates.scaled_rows(t, spec, one, 0, z_scale) for t in (Ws, bias, Rs))
        return fwd(spec, bs, chunk, x2, Ws, bias, Rs, *head, 1.0)

    outs = []
    for patch in (False, True):
        if patch:
            monkeypatch.setattr(native, "forward_rows", prescaled)
        with forced_layout("batch"):
            outs.append(_run(m, x, LENGTHS, False))
    tanh = m.cells[0].spec.g == "tanh"
    assert seen and all(z == (2.0 if tanh else 1.0) for z in seen)
    for a, b in zip(*outs, strict=True):
        assert torch.equal(a, b)


@needs_native
@pytest.mark.parametrize("dtype", [F64, F32], ids=str)
def test_torch_dropin_native_equals_python_loop(dtype, calls):
    """lstmlab.TorchLSTM (torch's NP cell) on a packed batch, both directions, two layers,
    batch 1 and a wider batch."""
    torch.manual_seed(0)
    m = TorchLSTM(5, 7, num_layers=2, bidirectional=True, dtype=dtype)
    for B in (1, 4):
        x = torch.randn(9, B, 5, dtype=dtype)
        lengths = torch.tensor([9, 4, 7, 1][:B])
        res = []
        for python in (False, True):
            ctx = native.forced_python() if python else contextlib.nullcontext()
            xg = x.clone().requires_grad_(True)
            with ctx:
                packed = torch.nn.utils.rnn.pack_padded_sequence(xg, lengths, enforce_sorted=False)
                out, (h, c) = m(packed)
                loss = (out.data**2).sum() + h.sum() + (c**3).sum()
                res.append([out.data, h, c, *torch.autograd.grad(loss, [xg, *m.parameters()])])
        for a, b in zip(*res, strict=True):
            assert _rel(a, b) <= (1e-12 if dtype == F64 else 2e-5)
    assert calls["forward"] == 2 * 4  # (2 layers x 2 directions) per batch size


@needs_native
@pytest.mark.parametrize("dtype", [F64, F32], ids=str)
@pytest.mark.parametrize("hidden", [70, 256])
def test_batch_one_and_wide_rows(dtype, hidden, calls):
    """Batch 1 (the core's own matrix-vector product over blocks of 64 columns, and its tail)
    and a wider batch (MKL's packed product, the two-pass common cell) against the Python
    loop: outputs, final state and every gradient, forward and backward."""
    torch.manual_seed(1)
    m = TorchLSTM(6, hidden, dtype=dtype)
    for B in (1, 3):
        x = torch.randn(9, B, 6, dtype=dtype)
        res = []
        for python in (False, True):
            ctx = native.forced_python() if python else contextlib.nullcontext()
            xg = x.clone().requires_grad_(True)
            with ctx:
                out, (h, c) = m(xg)
                loss = (out**2).sum() + h.sum() + (c**3).sum()
                res.append([out, h, c, *torch.autograd.grad(loss, [xg, *m.parameters()])])
        for a, b in zip(*res, strict=True):
            assert _rel(a, b) <= (1e-12 if dtype == F64 else 2e-5)
    assert calls["forward"] == 2 and calls["backward"] == 2


@needs_native
@pytest.mark.parametrize("dtype", [F64, F32], ids=str)
@pytest.mark.parametrize(
    "kw",
    [
        dict(variant="mLSTM", multiplicative_size=70),
        dict(variant="F-LSTM", factorization_rank=20),
        dict(variant="G-LSTM"),
        dict(variant="lstm97", cells_per_block=2),
    ],
    ids=_ids,
)
def test_batch_one_for_the_family(kw, dtype, calls):
    """Batch 1 (the row-major weight copies and the blocked matrix-vector product, over 64
    columns and a tail) for mLSTM, F-LSTM, G-LSTM and blocks of cells, against the Python loop,
    full and packed."""
    m = LSTM(6, 70, dtype=dtype, seed=2, **kw)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(9, 1, 6, generator=g, dtype=dtype)
    _assert_twins(m, x, None, dtype, None)
    x2 = torch.randn(9, 2, 6, generator=g, dtype=dtype)
    _assert_twins(m, x2, torch.tensor([9, 4]), dtype, None)  # the second row dies: batch 1 after
    assert calls["forward"] == calls["backward"] == 2


@needs_native
def test_every_variant_is_covered(calls):
    """Every variant of the family runs the native loop, the structured ones included."""
    for v in ("mLSTM", "F-LSTM", "G-LSTM", "lstm97", "NP"):
        assert native.covers(LSTM(4, 6, variant=v).cells[0].spec)


@needs_native
@pytest.mark.parametrize(
    "kw",
    [
        dict(variant="vanilla"),
        dict(variant="lstm97", cells_per_block=2, proj_size=2),
        dict(variant="mLSTM", multiplicative_size=3),
        dict(variant="F-LSTM", factorization_rank=2),
    ],
)
def test_gradcheck_through_the_native_loop(kw, calls):
    _gradcheck(LSTM(3, 4, dtype=F64, seed=5, gate_sharpness=1.7, **kw), calls)


@needs_native
@pytest.mark.parametrize(
    "kw",
    [
        dict(variant="lstm97", cells_per_block=2, proj_size=2),
        dict(variant="FGR"),
        dict(variant="mLSTM", multiplicative_size=3),
    ],
    ids=_ids,
)
def test_gradcheck_through_the_feature_major_native_loop(kw, calls):
    _gradcheck(LSTM(3, 4, dtype=F64, seed=5, gate_sharpness=1.7, **kw), calls, "features")
    assert calls["features"] > 0


@needs_native
def test_gradcheck_g_lstm_through_the_native_loop(calls):
    _gradcheck(LSTM(4, 4, dtype=F64, seed=5, gate_sharpness=1.7, variant="G-LSTM"), calls)


def _gradcheck(m, calls, layout: str = "batch"):
    x = torch.randn(4, 3, m.input_size, dtype=F64, requires_grad=True)
    params = list(m.parameters())

    names = [n for n, _ in m.named_parameters()]

    def f(x, *ps):
        with forced_layout(layout):
            out, (h, c) = torch.func.functional_call(
                m, dict(zip(names, ps, strict=True)), (x,), {"lengths": torch.tensor([4, 2, 3])}
            )
        return out, h, c

    assert torch.autograd.gradcheck(f, (x, *params))
    assert calls["forward"] > 0 and calls["backward"] > 0


@needs_native
@pytest.mark.parametrize("layout", ["batch", "features"])
def test_forced_fallback_gives_the_same_numbers(layout, monkeypatch, calls):
    """LSTMLAB_NATIVE=0 (read when the core is first asked for) keeps every layer on the Python
    loop, silently, with the native loop's results (float64), in both layouts."""
    m = LSTM(4, 6, variant="vanilla", dtype=F64, seed=3)
    x = torch.randn(6, 5, 4, dtype=F64)
    with_native = _run(m, x, LENGTHS, False, None, layout)
    assert calls["forward"] == 1
    monkeypatch.setenv(build.ENV, "0")
    monkeypatch.setattr(build, "_STATE", {})
    monkeypatch.setattr(build, "_build", lambda: pytest.fail("LSTMLAB_NATIVE=0 must not build"))
    without = _run(m, x, LENGTHS, False, None, layout)
    assert calls["forward"] == 1  # not run again
    for a, b in zip(with_native, without, strict=True):
        assert _rel(a, b) <= 1e-12


@pytest.fixture
def rop_calls(monkeypatch):
    seen = []  # per call: 2 feature-major, 1 batch-major
    run = native.rop_chunk
    monkeypatch.setattr(
        native, "rop_chunk", lambda *a, **k: seen.append(2 if a[1] else 1) or run(*a, **k)
    )
    return seen


def _stack_jvp(model, x, lengths, hx, python: bool, chunk: int | None, layout: str = "batch"):
    """Tangents of every output, state and final state along a fixed random direction in the
    parameters and the initial state, native or Python R-forward."""
    from lstmlab.engines import rop, rop_stack

    params = {n: p.detach() for n, p in model.named_parameters()}
    g = torch.Generator().manual_seed(7)
    tangents = {n: torch.randn(p.shape, generator=g, dtype=p.dtype) for n, p in params.items()}
    ctx = native.forced_python() if python else contextlib.nullcontext()
    forced = rop.forced_chunk(chunk) if chunk else contextlib.nullcontext()
    with forced_layout(layout), rop.recording() as tapes:
        model(x, hx, lengths=lengths, return_states=True)
    with ctx, forced:
        out, states, h = rop_stack.stack_jvp(model, tapes, params, tangents, lengths)
    return [out, *states, *(h if isinstance(h, list | tuple) else [h])]


ROP_KW = COVERED + [
    dict(variant="G-LSTM", proj_size=2),
    dict(variant="mLSTM", multiplicative_size=5),
    dict(variant="mLSTM", proj_size=3, bidirectional=True),
]
ROP_CASES = [(kw, lay) for lay in ("batch", "features") for kw in ROP_KW]


@needs_native
@pytest.mark.parametrize("chunk", [None, 2], ids=["whole", "chunks-of-2"])
@pytest.mark.parametrize("dtype", [F64, F32], ids=str)
@pytest.mark.parametrize(
    ("kw", "layout"), ROP_CASES, ids=[f"{lay}-{_ids(kw)}" for kw, lay in ROP_CASES]
)
def test_native_r_forward_equals_python(kw, layout, dtype, chunk, rop_calls):
    """The R-forward pass (Gauss–Newton products' J v) in the native core against the Python
    R-forward, in both layouts, on packed lengths with initial states, whole or in chunks of
    steps (the chunk seams carry ẏ, ċ, q̇ across)."""
    m = LSTM(4, 6, dtype=dtype, seed=1, gate_sharpness={"i": 1.5, "f": 0.8, "o": 3.75}, **kw)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(6, 5, 4, generator=g, dtype=dtype)
    L = m.num_layers * m.num_directions
    hx = (
        torch.randn(L, 5, m.proj_size or 6, generator=g, dtype=dtype),
        torch.randn(L, 5, 6, generator=g, dtype=dtype),
    )
    got = _stack_jvp(m, x, LENGTHS, hx, False, chunk, layout)
    assert len(rop_calls) >= L  # ran native, once per chunk and layer-direction
    assert set(rop_calls) == {2 if layout == "features" else 1}  # in the layout asked for
    want = _stack_jvp(m, x, LENGTHS, hx, True, chunk, layout)
    for a, b in zip(got, want, strict=True):
        assert _rel(a, b) <= (1e-12 if dtype == F64 else 2e-5)


@needs_native
@pytest.mark.parametrize(
    "kw",
    [
        dict(variant="lstm97", cells_per_block=2),
        dict(variant="vanilla", cells_per_block=2, proj_size=3),
        dict(variant="FGR", bias=False),
    ],
    ids=_ids,
)
def test_feature_major_r_forward_forms_its_terms_per_step(kw, rop_calls):
    """Feature-major, the native R-forward forms the carried-independent terms (Ẇ x, ḃ, Ṙ y,
    Q̇ q, Ṗ c) per step from the tape; the same tangents as with those terms formed in Python a
    chunk at a time (``rop.unfused_terms``), and as the Python R-forward (float64)."""
    from lstmlab.engines import rop

    m = LSTM(4, 6, dtype=F64, seed=1, gate_sharpness={"i": 1.5, "f": 0.8, "o": 3.75}, **kw)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(6, 5, 4, generator=g, dtype=F64)
    hx = (torch.randn(1, 5, m.proj_size or 6, generator=g, dtype=F64),) + (
        torch.randn(1, 5, 6, generator=g, dtype=F64),
    )
    fused = _stack_jvp(m, x, LENGTHS, hx, False, None, "features")
    with rop.unfused_terms():
        unfused = _stack_jvp(m, x, LENGTHS, hx, False, None, "features")
    python = _stack_jvp(m, x, LENGTHS, hx, True, None, "features")
    assert set(rop_calls) == {2}
    for a, b, c in zip(fused, unfused, python, strict=True):
        assert _rel(a, b) <= 1e-12 and _rel(a, c) <= 1e-12


_SIMD_SCRIPT = """
import contextlib
import torch
from lstmlab import LSTM
from lstmlab.engines import native
from lstmlab.engines.bptt import forced_layout
torch.manual_seed(0)
worst = 0.0
for variant, H in [(v, H) for v in ("NP", "vanilla") for H in (16, 21, 40)]:
    # the common cell and its peephole form; whole vectors, and a scalar tail
    m = LSTM(5, H, variant=variant, dtype=torch.float32)
    x = torch.randn(9, 6, 5) * 3
    lengths = torch.tensor([9, 4, 7, 1, 9, 3])
    outs = []
    for python in (False, True):
        with native.forced_python() if python else contextlib.nullcontext(), forced_layout("batch"):
            xg = x.clone().requires_grad_(True)
            out, (h, c), states = m(xg, lengths=lengths, return_states=True)
            loss = (out ** 2).sum() + h.sum() + (c * 0.3).sum()
            outs.append([out, h, c, *states, *torch.autograd.grad(loss, [xg, *m.parameters()])])
    for a, b in zip(*outs):
        worst = max(worst, ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item())
# the drop-in's inference on torch's weights in torch's gate order (native.torch_lstm)
from lstmlab import TorchLSTM
for H in (16, 21):
    ref = torch.nn.LSTM(5, H)
    lab = TorchLSTM(5, H)
    lab.load_state_dict(ref.state_dict())
    with torch.no_grad():
        a, b = ref(x)[0], lab(x)[0]
    worst = max(worst, ((a - b).abs().max() / a.abs().max()).item())
# a NaN weight gives NaN outputs, as in the Python loop (the clamps of exp keep a NaN)
with torch.no_grad():
    m.cells[0].W[0, 0] = float("nan")
    with forced_layout("batch"):
        nan_out = bool(m(x)[0].isnan().any())
print(native.simd_level(), worst, nan_out)
"""


@needs_native
def test_every_simd_level_of_the_common_cell_equals_the_python_loop():
    """The float32 common cell (and vanilla's, with peepholes) runs AVX-512 or AVX2 passes (a reciprocal by one Newton step
    instead of a division) where the CPU has them, else portable ones: each level this machine
    can run (``LSTMLAB_NATIVE_SIMD`` caps it, one process each) equals the Python loop to
    float32 round-off, scalar tails included, and lets a NaN through; so does the drop-in's
    inference in torch's gate order against torch.nn.LSTM."""
    import subprocess
    import sys

    best = native.simd_level()
    for level in range(best + 1):
        env = dict(os.environ, LSTMLAB_NATIVE_SIMD=str(level), OMP_NUM_THREADS="1")
        done = subprocess.run(
            [sys.executable, "-c", _SIMD_SCRIPT], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-2000:]
        got, worst, nan_out = done.stdout.split()
        assert int(got) == level
        assert float(worst) <= 2e-5, (level, worst)
        assert nan_out == "True", level


def test_without_states_and_backward_hold_for_their_own_thread_only():
    """``layout.without_states`` / ``without_backward`` set inside one thread (the drop-in's
    inference) leave a call on another thread (``nn.DataParallel`` replicas, a user's
    threads) keeping its states and its graph."""
    import threading

    from lstmlab.engines import layout

    inside, release, seen = threading.Event(), threading.Event(), {}

    def hold():
        with layout.without_states(), layout.without_backward():
            seen["there"] = (layout.keeps_states(), layout.keeps_graph([True]))
            inside.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert inside.wait(10)
        assert layout.keeps_states() and layout.keeps_graph([True])
    finally:
        release.set()
        t.join()
    assert seen["there"] == (False, False)


def test_failed_build_says_so_once_and_falls_back(monkeypatch, capsys):
    """No compiler (here: a builder that raises): one line on stderr, once; then the Python
    loop, with the Python loop's results."""

    def broken():
        raise RuntimeError("Error building extension 'x':\nc++: error: no such compiler\nmore")

    monkeypatch.delenv(build.ENV, raising=False)
    monkeypatch.setattr(build, "_STATE", {})
    monkeypatch.setattr(build, "_build", broken)
    m = LSTM(4, 6, variant="NP", dtype=F64, seed=3)
    x = torch.randn(6, 5, 4, dtype=F64)
    first = _run(m, x, LENGTHS, False)
    second = _run(m, x, None, False)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "could not be built (c++: error: no such compiler)" in err[0]
    assert "using the Python engine" in err[0] and "LSTMLAB_NATIVE=0" in err[0]
    assert build._STATE == {"loaded": False}
    reference = _run(m, x, LENGTHS, True)
    for a, b in zip(first, reference, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert second[0].shape == (6, 5, 6)


def test_first_build_announces_itself(monkeypatch, capsys, tmp_path):
    """A build (no library in the cache yet) says what it does before and how long it took
    after; a cached load says nothing."""
    from torch.utils import cpp_extension

    lib = tmp_path / f"{build.NAME}.so"
    monkeypatch.setattr(cpp_extension, "_get_build_directory", lambda name, verbose: str(tmp_path))
    monkeypatch.setattr(cpp_extension, "load", lambda **kw: lib.write_bytes(b"x") and str(lib))
    build._build()
    err = capsys.readouterr().err
    assert "compiling lstmlab's native LSTM core (once per machine" in err
    assert "native LSTM core built in" in err and str(tmp_path) in err
    monkeypatch.setattr(cpp_extension, "load", lambda **kw: str(lib))  # cached: no rebuild
    build._build()
    assert capsys.readouterr().err == ""
    # a lock left by a killed build would make torch's builder wait forever: removed when stale
    lock = tmp_path / "lock"
    lock.write_text("")
    build._build()
    assert lock.exists() and capsys.readouterr().err == ""  # fresh: another build is running
    os.utime(lock, (0, 0))
    build._build()
    assert not lock.exists()
    assert "removing a stale build lock" in capsys.readouterr().err


def test_build_without_openmp_when_the_compiler_has_none(monkeypatch, capsys, tmp_path):
    """Where a build with -fopenmp fails (a compiler without OpenMP), the core is built again
    without it, and says so in one line; a build that fails without OpenMP too raises (the
    caller then falls back to the Python loops)."""
    from torch.utils import cpp_extension

    lib = tmp_path / f"{build.NAME}.so"
    monkeypatch.setattr(cpp_extension, "_get_build_directory", lambda name, verbose: str(tmp_path))
    monkeypatch.setattr(build, "OPENMP", ["-fopenmp"])
    seen = []

    def load(**kw):
        seen.append(list(kw["extra_cflags"]))
        if "-fopenmp" in kw["extra_cflags"]:
            raise RuntimeError("x.cpp:1: error: unsupported option '-fopenmp'")
        lib.write_bytes(b"x")
        return str(lib)

    monkeypatch.setattr(cpp_extension, "load", load)
    assert build._build() == str(lib)
    assert [("-fopenmp" in f) for f in seen] == [True, False]
    err = capsys.readouterr().err
    assert "did not build with OpenMP (x.cpp:1: error: unsupported option '-fopenmp')" in err
    lib.unlink()
    monkeypatch.setattr(
        cpp_extension, "load", lambda **kw: (_ for _ in ()).throw(OSError("no g++"))
    )
    with pytest.raises(OSError, match="no g\\+\\+"):
        build._build()


def test_package_ships_the_sources():
    """The C++ sources travel with the package (pyproject package-data)."""
    import tomllib
    from pathlib import Path

    assert all(s.is_file() for s in build.SOURCES + build.HEADERS)
    root = Path(__file__).resolve().parents[2]
    data = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert {"*.cpp", "*.h"} <= set(data["package-data"]["lstmlab.engines.native"])
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("ninja") for d in deps)


def test_benchmark_script_runs(tmp_path):
    """benchmarks/bench_native.py (the table of docs/benchmarks.md) on a tiny size, and its
    one-line refusal of a bad --sizes."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_native.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, str(script), "--sizes", "3,2,2,4", "--repeats", "1", "--python", "--best"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    rows = [ln for ln in run.stdout.splitlines() if ln.startswith("| 3, 2, 2, 4 |")]
    assert len(rows) == 1 and rows[0].count("(") == 6  # six columns, each with the Python loop
    assert rows[0].count("[") == 6  # and fastest / fastest
    cpu = subprocess.run(
        [sys.executable, str(script), "--sizes", "3,2,2,4", "--repeats", "1", "--cpu-time"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert cpu.returncode == 0, cpu.stderr
    cells = [ln for ln in cpu.stdout.splitlines() if ln.startswith("| 3, 2, 2, 4 |")][0]
    cells = [c.strip() for c in cells.strip("|").split("|")][1:]
    # CPU time for the four one-thread columns, the two two-thread ones left out
    assert [c == "—" for c in cells] == [False, False, True, True, False, False], cells
    bad = subprocess.run(
        [sys.executable, str(script), "--sizes", "3,2"], capture_output=True, text=True, env=env
    )
    assert bad.returncode == 2
    assert "each size is four positive integers T,B,I,H" in bad.stderr.strip().splitlines()[-1]
    mem = subprocess.run(
        [sys.executable, str(script), "--memory", "20,1,2,4"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert mem.returncode == 0, mem.stderr
    assert mem.stdout.strip().splitlines()[-1].startswith("| 20, 1, 2, 4 | ")
    bad = subprocess.run(
        [sys.executable, str(script), "--memory", "20,1"], capture_output=True, text=True, env=env
    )
    assert bad.returncode == 2 and "four positive integers" in bad.stderr.strip().splitlines()[-1]


@needs_native
@pytest.mark.parametrize("dtype", [F64, F32], ids=str)
@pytest.mark.parametrize(
    "kw", [dict(variant="NP"), dict(variant="vanilla"), dict(variant="vanilla", cells_per_block=3)]
)
def test_two_threads_split_each_small_step_by_rows(kw, dtype, calls):
    """With two threads, a step whose recurrent product is small (below ``serial_flops``) and
    whose rows make several tasks runs as one parallel pass: each thread its rows' product and
    elementwise work (blocks of cells: the general pass). The same numbers as the Python loop,
    packed rows included; and the drop-in's inference in torch's gate order takes the same
    split. (A native counter shows the split ran.)"""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    fused = torch.ops.lstmlab_native.fused_step_calls
    try:
        m = LSTM(4, 6, dtype=dtype, seed=1, **kw)
        g = torch.Generator().manual_seed(3)
        x = torch.randn(5, 600, 4, generator=g, dtype=dtype)  # 600 rows: several tasks
        lengths = torch.randint(1, 6, (600,), generator=g)
        lengths[0] = 5
        for lens in (None, lengths):
            seen = fused()
            _assert_twins(m, x, lens, dtype)
            assert fused() > seen  # the split path ran
        ref = torch.nn.LSTM(4, 16, dtype=dtype)
        lab = TorchLSTM(4, 16, dtype=dtype)
        lab.load_state_dict(ref.state_dict())
        with torch.no_grad():
            xs = torch.randn(7, 300, 4, generator=g, dtype=dtype)
            seen = fused()
            got, want = lab(xs), ref(xs)
            assert fused() == seen + 1
        for a, b in zip((got[0], *got[1]), (want[0], *want[1]), strict=True):
            assert _rel(a, b) <= (1e-12 if dtype == F64 else 2e-5)
        # a larger product (300 x 66 x 264 and so: above the one-thread bound), 150 rows a thread
        wide = LSTM(4, 66, dtype=dtype, seed=2, **kw)
        xw = torch.randn(3, 300, 4, generator=g, dtype=dtype)
        seen = fused()
        _assert_twins(wide, xw, None, dtype)
        assert fused() > seen
        assert calls["torch order"] == 1
    finally:
        torch.set_num_threads(before)
