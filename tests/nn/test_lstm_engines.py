"""The fast BPTT engine against the autograd reference and central finite differences.

Every test runs once per memory layout of the bptt engine (feature-major and batch-major,
forced), so both stay held to the same references whichever one ``choose_layout`` picks."""

from __future__ import annotations

import pytest
import torch

from lstmlab import LSTM, Batch, SequenceModel, check_gradients
from lstmlab.engines.bptt import LAYOUTS, choose_layout, forced_layout
from lstmlab.nn.variants import VARIANTS

F64 = torch.float64
ALL_VARIANTS = list(VARIANTS)
LENGTHS = torch.tensor([6, 3, 1, 5, 6])  # unequal, some full-length, one of length 1


@pytest.fixture(autouse=True, params=LAYOUTS)
def layout(request):
    with forced_layout(request.param):
        yield request.param


def test_forced_layout_wins(layout):
    wide = LSTM(50, 512).cells[0].spec
    with forced_layout(layout):  # the innermost forcing wins
        assert choose_layout(wide, 128) == layout
    assert LAYOUTS == ("features", "batch")
    with pytest.raises(ValueError, match="unknown layout 'rows'; valid"):
        with forced_layout("rows"):
            pass


def test_automatic_layout_choice():
    from lstmlab.engines import layout as engine_layout

    saved = list(engine_layout._FORCED)  # the automatic choice, under the autouse fixture's
    engine_layout._FORCED.clear()
    try:
        seed000 = LSTM(2, 4, variant="lstm97", cells_per_block=2).cells[0].spec
        wide = LSTM(50, 512).cells[0].spec
        assert choose_layout(seed000, 1000) == "features"  # the long time-lag nets
        assert choose_layout(wide, 128) == "batch"
        assert choose_layout(LSTM(10, 100).cells[0].spec, 1000) == "features"
        # below float64 the batch-major layout also takes layers of 16 units and more
        f32 = torch.float32
        assert choose_layout(seed000, 1000, f32) == "features"
        assert choose_layout(LSTM(2, 8).cells[0].spec, 10000, f32) == "features"
        assert choose_layout(LSTM(2, 16).cells[0].spec, 10000, f32) == "batch"
        assert choose_layout(LSTM(10, 100).cells[0].spec, 1000, f32) == "batch"
        # with the native loops: training feature-major up to 128 units from 16 samples on,
        # for the variants other than the common cell (here CIFG)
        cifg_kw = dict(variant="CIFG")
        mid, wide_256 = LSTM(10, 100, **cifg_kw).cells[0].spec, LSTM(10, 256).cells[0].spec
        for dt in (f32, F64):
            assert choose_layout(seed000, 1000, dt, native=True) == "features"
            assert choose_layout(mid, 1000, dt, native=True) == "features"
            assert choose_layout(LSTM(10, 100).cells[0].spec, 1000, dt, native=True) == "batch"
            c128 = LSTM(10, 128, **cifg_kw).cells[0].spec
            assert choose_layout(c128, 16, dt, native=True) == "features"
            assert choose_layout(c128, 8, dt, native=True) == "batch"
            assert choose_layout(wide_256, 10000, dt, native=True) == "batch"
            # inference: feature-major only for the long time-lag nets
            assert choose_layout(seed000, 1000, dt, native=True, backward=False) == "features"
            assert choose_layout(mid, 1000, dt, native=True, backward=False) == "batch"
            H32, H64 = LSTM(2, 32, **cifg_kw).cells[0].spec, LSTM(2, 64, **cifg_kw).cells[0].spec
            assert choose_layout(H32, 1000, dt, native=True, backward=False) == "features"
            assert choose_layout(H64, 1000, dt, native=True, backward=False) == "batch"
            H8 = LSTM(2, 8, **cifg_kw).cells[0].spec
            assert choose_layout(H8, 31, dt, native=True, backward=False) == "batch"

            # the common cell (torch's NP): training batch-major from 16 units on (its backward
            # step one vectorised pass), feature-major below on batches of 16 and more
            def np_(H, **kw):
                return LSTM(10, H, variant="NP", **kw).cells[0].spec

            assert choose_layout(np_(128), 20, dt, native=True) == "batch"
            assert choose_layout(np_(16), 1000, dt, native=True) == "batch"
            assert choose_layout(np_(8), 1000, dt, native=True) == "features"
            assert choose_layout(np_(8), 8, dt, native=True) == "batch"
            assert choose_layout(np_(32, proj_size=8), 1000, dt, native=True) == "features"
            # with peepholes (vanilla) too; blocks of cells keep the measured rule
            assert choose_layout(np_(64, peepholes=True), 1000, dt, native=True) == "batch"
            assert choose_layout(LSTM(10, 64).cells[0].spec, 20, dt, native=True) == "batch"
            cifg = LSTM(10, 64, variant="CIFG").cells[0].spec
            assert choose_layout(cifg, 1000, dt, native=True) == "features"

            # vanilla infers as it trains: batch-major from 16 units (its forward step two
            # vectorised passes too), feature-major below from 16 samples
            def van(H):
                return LSTM(2, H).cells[0].spec

            assert choose_layout(van(32), 1000, dt, native=True, backward=False) == "batch"
            assert choose_layout(van(256), 32, dt, native=True, backward=False) == "batch"
            assert choose_layout(van(16), 8, dt, native=True, backward=False) == "batch"
            assert choose_layout(van(12), 16, dt, native=True, backward=False) == "features"
            assert choose_layout(van(12), 15, dt, native=True, backward=False) == "batch"
            # and infers likewise: batch-major from 16 units, below on batches of 4·H and more
            assert choose_layout(np_(32), 1000, dt, native=True, backward=False) == "batch"
            assert choose_layout(np_(16), 1000, dt, native=True, backward=False) == "batch"
            assert choose_layout(np_(8), 32, dt, native=True, backward=False) == "features"
            assert choose_layout(np_(8), 31, dt, native=True, backward=False) == "batch"
    finally:
        engine_layout._FORCED[:] = saved


def test_run_picks_the_layout_by_mode():
    """``bptt.run`` asks the rule with what it knows: a 32-unit CIFG layer on 64 samples
    trains feature-major and infers batch-major where the native loops are built (else
    batch-major both ways, the Python loops' rule), the common cell (vanilla here) trains
    batch-major, and F-LSTM's structured map never goes feature-major on that account."""
    from lstmlab.engines import layout as engine_layout
    from lstmlab.engines.native import build

    saved = list(engine_layout._FORCED)
    engine_layout._FORCED.clear()
    try:
        x = torch.randn(5, 64, 3)
        m = LSTM(3, 32, variant="CIFG", engine="bptt")
        name = _function_name(m, x)
        assert name == ("LSTMLayerBPTTBackward" if build.load() else "LSTMLayerBPTTRowsBackward")
        assert _function_name(m, x, grad=False) == "LSTMLayerBPTTRows"
        vanilla = LSTM(3, 32, engine="bptt")
        assert _function_name(vanilla, x) == "LSTMLayerBPTTRowsBackward"
        assert _function_name(LSTM(3, 32, variant="F-LSTM", engine="bptt"), x) == (
            "LSTMLayerBPTTRowsBackward"
        )
    finally:
        engine_layout._FORCED[:] = saved


def _function_name(model, x, grad: bool = True) -> str:
    """The bptt Function a forward pass ran: its backward node's name with a graph, else which
    of the two Functions' forward was called (without a graph ``bptt.run`` calls it directly,
    not through ``apply``)."""
    from lstmlab.engines import bptt

    seen = []
    classes = (bptt.LSTMLayerBPTT, bptt.bptt_rows.LSTMLayerBPTTRows)
    saved = {cls: cls.__dict__["forward"] for cls in classes}
    for cls in classes:
        orig = saved[cls].__func__

        def spy(*a, _orig=orig, _name=cls.__name__, **k):
            seen.append(_name)
            return _orig(*a, **k)

        cls.forward = staticmethod(spy)
    try:
        with torch.set_grad_enabled(grad):
            model(x)
    finally:
        for cls, fwd in saved.items():
            cls.forward = fwd
    assert len(seen) == 1
    return seen[0] + ("Backward" if grad else "")


def _inputs(I=4, T=6, B=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T, B, I, generator=g, dtype=F64)


def _loss(model, x, lengths, h0c0=None):
    """A loss touching outputs, final states and cell states, with per-position weights."""
    out, (h, c), states = model(x, h0c0, lengths=lengths, return_states=True)
    w = torch.linspace(-1, 1, out.numel(), dtype=F64).view_as(out)
    loss = (w * out).sum() + (out**2).sum() + (h * 0.7).sum() + (c**2).sum() * 0.3
    return loss + sum((s.sin()).sum() * 0.1 for s in states)


def _grads(model, x, lengths, engine, extra=()):
    model.engine = engine
    params = list(model.parameters()) + list(extra)
    loss = _loss(model, x, lengths, None if not extra else tuple(extra))
    return loss.detach(), torch.autograd.grad(loss, params)


def _rel(a, b):
    return (a - b).abs().max().item() / max(a.abs().max().item(), b.abs().max().item(), 1e-300)


@pytest.mark.parametrize("cpb", [1, 2], ids=lambda c: f"cpb{c}")
@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_bptt_equals_autograd(variant, cpb):
    m = LSTM(
        4,
        4,
        variant=variant,
        cells_per_block=cpb,
        gate_sharpness={"i": 1.5, "f": 0.8, "o": 3.75},
        dtype=F64,
        seed=1,
    )
    x = _inputs()
    l_ref, g_ref = _grads(m, x, LENGTHS, "autograd")
    l_fast, g_fast = _grads(m, x, LENGTHS, "bptt")
    assert abs(l_ref - l_fast) <= 1e-12 * max(1.0, abs(l_ref))
    for (name, _), a, b in zip(m.named_parameters(), g_fast, g_ref, strict=True):
        assert _rel(a, b) <= 1e-10, name


@pytest.mark.parametrize("chunk", [1, 2, 4])
@pytest.mark.parametrize("variant", ["vanilla", "NFG", "lstm97", "FGR", "CIFG", "mLSTM"])
def test_factor_and_projection_chunks(variant, chunk, monkeypatch, layout):
    """Both layouts project the inputs, form the derivative factors and sum the peephole
    gradients a chunk of steps at a time; any chunk size (here ones that split the 6 steps
    unevenly) gives the autograd gradients. vanilla, NFG and CIFG fold their peepholes into the factors, lstm97 and FGR
    cannot."""
    from lstmlab.engines import layout as engine_layout

    monkeypatch.setattr(engine_layout, "chunk_steps", lambda step_bytes, target=0: chunk)
    kw = {"cells_per_block": 2} if variant == "lstm97" else {}
    m = LSTM(4, 6, variant=variant, dtype=F64, seed=1, **kw)
    x = _inputs()
    l_ref, g_ref = _grads(m, x, LENGTHS, "autograd")
    l_fast, g_fast = _grads(m, x, LENGTHS, "bptt")
    assert abs(l_ref - l_fast) <= 1e-12 * max(1.0, abs(l_ref))  # the loss is a sum of O(1) terms
    for a, b in zip(g_fast, g_ref, strict=True):
        assert _rel(a, b) <= 1e-10


@pytest.mark.parametrize(
    "kw",
    [
        dict(proj_size=3),
        dict(num_layers=2, bidirectional=True),
        dict(variant="lstm97", cells_per_block=2, proj_size=2, bidirectional=True),
        dict(variant="mLSTM", proj_size=3, num_layers=2, multiplicative_size=5),
        dict(variant="FGR", cells_per_block=2, num_layers=2),
        dict(variant="F-LSTM", factorization_rank=2, proj_size=2),
        dict(variant="G-LSTM", groups=2, proj_size=2, bidirectional=True),
        dict(variant="NP", bias=False, batch_first=True),
    ],
    ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()),
)
def test_bptt_equals_autograd_structures(kw):
    batch_first = kw.get("batch_first", False)
    m = LSTM(4, 4, dtype=F64, seed=2, gate_sharpness=2.0, **kw)
    x = _inputs(I=4)
    if batch_first:
        x = x.transpose(0, 1).contiguous()
    L = m.num_layers * m.num_directions
    g = torch.Generator().manual_seed(3)
    h0 = torch.randn(L, 5, m.proj_size or 4, generator=g, dtype=F64, requires_grad=True)
    c0 = torch.randn(L, 5, 4, generator=g, dtype=F64, requires_grad=True)
    xg = x.clone().requires_grad_(True)
    _, g_ref = _grads(m, xg, LENGTHS, "autograd", extra=(h0, c0))
    _, g_fast = _grads(m, xg, LENGTHS, "bptt", extra=(h0, c0))
    for a, b in zip(g_fast, g_ref, strict=True):
        assert _rel(a, b) <= 1e-10
    # the input gradient too
    gx = []
    for engine in ("autograd", "bptt"):
        m.engine = engine
        gx.append(torch.autograd.grad(_loss(m, xg, LENGTHS), xg)[0])
    assert _rel(*gx) <= 1e-10


@pytest.mark.parametrize("engine", ["bptt", "autograd"])
@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_finite_differences(variant, engine):
    """SequenceModel loss on a padded batch vs central differences, every variant, float64."""
    model = SequenceModel(
        4,
        4,
        2,
        output="linear",
        read="every",
        variant=variant,
        cells_per_block=2,
        gate_sharpness=1.7,
        engine=engine,
        dtype=F64,
        seed=4,
    )
    g = torch.Generator().manual_seed(5)
    x = torch.randn(4, 5, 4, generator=g, dtype=F64)
    lengths = torch.tensor([5, 2, 4, 1])
    batch = Batch(x, torch.randn(4, 5, 2, generator=g, dtype=F64), lengths)
    report = check_gradients(lambda: model.loss(model(x, lengths), batch), model.parameters())
    assert report.norm_relative_error <= 1e-6, report
    assert report.max_relative_error <= 1e-6, report


@pytest.mark.parametrize("engine", ["bptt", "autograd"])
@pytest.mark.parametrize("variant", ["vanilla", "lstm97", "mLSTM", "G-LSTM"])
def test_padded_batch_equals_each_sequence_alone(variant, engine):
    m = LSTM(4, 4, variant=variant, dtype=F64, seed=6, engine=engine, bidirectional=True)
    x = _inputs()
    out, (h, c) = m(x, lengths=LENGTHS)
    for b, L in enumerate(LENGTHS.tolist()):
        xb = x[:L, b : b + 1]
        ob, (hb, cb) = m(xb)
        torch.testing.assert_close(out[:L, b : b + 1], ob, rtol=0, atol=1e-14)
        assert out[L:, b].abs().max().item() == 0 if L < x.shape[0] else True
        torch.testing.assert_close(h[:, b : b + 1], hb, rtol=0, atol=1e-14)
        torch.testing.assert_close(c[:, b : b + 1], cb, rtol=0, atol=1e-14)
        # per-sample gradient: sample b's loss computed inside the batch vs alone
        gb = torch.autograd.grad((m(x, lengths=LENGTHS)[0][:, b] ** 2).sum(), list(m.parameters()))
        ga = torch.autograd.grad((m(xb)[0] ** 2).sum(), list(m.parameters()))
        for u, v in zip(gb, ga, strict=True):
            assert _rel(u, v) <= 1e-12


@pytest.mark.parametrize("variant", ["NP", "FGR", "lstm97"])
def test_padding_values_never_reach_the_gradients(variant):
    """Whatever finite values sit in the padded steps, the outputs and every gradient are
    exactly those of zero padding: the weight-gradient products meet the padded positions
    (inputs, stored activations) only with δ = 0."""
    kw = {"cells_per_block": 2} if variant == "lstm97" else {}
    m = LSTM(4, 6, variant=variant, dtype=F64, seed=3, **kw)
    x = _inputs()
    pad = (torch.arange(x.shape[0]).unsqueeze(1) >= LENGTHS.unsqueeze(0)).unsqueeze(-1)
    garbage = 1e3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(9), dtype=F64)
    l_junk, g_junk = _grads(m, torch.where(pad, garbage, x), LENGTHS, "bptt")
    l_zero, g_zero = _grads(m, x.masked_fill(pad, 0.0), LENGTHS, "bptt")
    assert l_junk == l_zero
    for a, b in zip(g_junk, g_zero, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("variant", ["vanilla", "lstm97"])
def test_per_sample_engine_equals_batch(variant):
    m = LSTM(4, 4, variant=variant, cells_per_block=2, dtype=F64, seed=7)
    x = _inputs()
    _, g_batch = _grads(m, x, LENGTHS, "bptt")
    _, g_loop = _grads(m, x, LENGTHS, "bptt:per-sample")
    for a, b in zip(g_batch, g_loop, strict=True):
        assert _rel(a, b) <= 1e-12


def test_float32_close_to_float64():
    m64 = LSTM(4, 8, variant="lstm97", cells_per_block=2, dtype=F64, seed=8, gate_sharpness=3.75)
    m32 = LSTM(
        4, 8, variant="lstm97", cells_per_block=2, dtype=torch.float32, seed=8, gate_sharpness=3.75
    )
    m32.load_state_dict(m64.state_dict())
    x = _inputs()
    o64 = m64(x, lengths=LENGTHS)[0]
    o32 = m32(x.float(), lengths=LENGTHS)[0]
    assert o32.dtype == torch.float32
    torch.testing.assert_close(o32.double(), o64, rtol=1e-5, atol=1e-6)
    g32 = torch.autograd.grad(o32.pow(2).sum(), list(m32.parameters()))
    g64 = torch.autograd.grad(o64.pow(2).sum(), list(m64.parameters()))
    for a, b in zip(g32, g64, strict=True):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=str)
@pytest.mark.parametrize("name", ["tanh", "bipolar1", "bipolar2"])
def test_sigmoid_form_activations_within_two_ulps(name, dtype, layout):
    """On the CPU the engine evaluates tanh, 2σ(a)−1 and 4σ(a)−2 as k σ(s a) − k/2 (one sigmoid
    pass); the promise in bptt's comment: within 2 units in the last place of 1 (absolute) of
    the definitions, at both ends of the range too, unscaled and with the scale folded in."""
    from lstmlab.engines.gates import SIGMOID_FORM, activation, uses_sigmoid_form
    from lstmlab.nn.activations import activate

    a = torch.linspace(-30, 30, 60001, dtype=F64)
    a = torch.cat([a, torch.tensor([0.0, 1e-30, -1e-30, 1e-8, 700.0, -700.0], dtype=F64)])
    x = a.to(dtype)
    exact = activate(name, x.double())  # torch.tanh-based, float64
    assert uses_sigmoid_form(x)
    out = activation(name, x)(x, torch.empty_like(x))
    s_, k = SIGMOID_FORM[name]
    pre = activation(name, x, prescaled=True)(x * s_, torch.empty_like(x))
    eps = torch.finfo(dtype).eps
    for got in (out, pre):
        assert got.dtype == dtype
        err = (got.double() - exact).abs().max().item()
        assert err <= 2 * eps * k / 2, (name, dtype, err)  # 2 ulps of the range's end, k/2


@pytest.mark.parametrize("variant", ["vanilla", "NP", "lstm97", "NIAF", "NOAF", "CIFG"])
def test_tanh_form_activations_equal_autograd(variant, monkeypatch):
    """Off the CPU the engine evaluates the tanh-family activations with torch.tanh (the
    argument scale folded into the weights differs, and the block input is activated on its
    own). That path, run here on the CPU by switching the form off, gives the autograd
    gradients too."""
    from lstmlab.engines import gates

    monkeypatch.setattr(gates, "uses_sigmoid_form", lambda t: False)
    kw = {"cells_per_block": 2} if variant == "lstm97" else {}
    m = LSTM(4, 4, variant=variant, dtype=F64, seed=1, gate_sharpness={"i": 1.5, "o": 3.0}, **kw)
    x = _inputs()
    l_ref, g_ref = _grads(m, x, LENGTHS, "autograd")
    l_fast, g_fast = _grads(m, x, LENGTHS, "bptt")
    assert abs(l_ref - l_fast) <= 1e-12 * max(1.0, abs(l_ref))
    for a, b in zip(g_fast, g_ref, strict=True):
        assert _rel(a, b) <= 1e-10


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("variant", ["vanilla", "lstm97", "mLSTM"])
def test_cuda_matches_cpu(variant):
    m = LSTM(4, 4, variant=variant, dtype=F64, seed=9)
    x = _inputs()
    _, g_cpu = _grads(m, x, LENGTHS, "bptt")
    mc = LSTM(4, 4, variant=variant, dtype=F64, seed=9, device="cuda")
    _, g_gpu = _grads(mc, x.cuda(), LENGTHS.cuda(), "bptt")
    for a, b in zip(g_cpu, g_gpu, strict=True):
        assert _rel(a, b.cpu()) <= 1e-10


@pytest.mark.parametrize("use", ["output", "h_n", "c_n", "cell_states"])
def test_gradients_when_only_some_outputs_are_used(use):
    """Unused outputs reach the backward as None; each alone must still be right."""
    m = LSTM(4, 4, variant="lstm97", cells_per_block=2, dtype=F64, seed=11, proj_size=3)
    x = _inputs()
    grads = {}
    for engine in ("autograd", "bptt"):
        m.engine = engine
        out, (h, c), states = m(x, lengths=LENGTHS, return_states=True)
        pick = {"output": out, "h_n": h, "c_n": c, "cell_states": states[0]}[use]
        grads[engine] = torch.autograd.grad((pick**2).sum(), list(m.parameters()))
    for a, b in zip(grads["bptt"], grads["autograd"], strict=True):
        assert _rel(a, b) <= 1e-10


@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(variant="lstm97", cells_per_block=2, proj_size=6),
        dict(variant="mLSTM"),
        dict(variant="FGR", num_layers=2),
    ],
    ids=["vanilla", "lstm97-proj", "mLSTM", "FGR-2layers"],
)
def test_bptt_equals_autograd_when_batch_is_narrower_than_layers(kw):
    """B < feature sizes: the engine then lays the steps side by side for the weight gradients
    (a different code path from the per-step accumulation of the other tests)."""
    m = LSTM(6, 8, dtype=F64, seed=12, gate_sharpness=1.3, **kw)
    x = torch.randn(6, 3, 6, generator=torch.Generator().manual_seed(13), dtype=F64)
    lengths = torch.tensor([6, 2, 5])
    _, g_ref = _grads(m, x, lengths, "autograd")
    _, g_fast = _grads(m, x, lengths, "bptt")
    for (name, _), a, b in zip(m.named_parameters(), g_fast, g_ref, strict=True):
        assert _rel(a, b) <= 1e-10, name


def test_ring_chunk_rules(monkeypatch):
    """Inference's ring of input projections: a quarter of the level-2 cache over a step's
    bytes, at least 256 rows a product, at least the input weight's bytes a chunk."""
    from lstmlab.engines import layout as engine_layout

    assert engine_layout.l2_bytes() >= 1 << 16  # read from the CPU, or the fallback
    monkeypatch.setattr(engine_layout, "_L2", 2 << 20)
    ring = engine_layout.ring_chunk
    assert ring(32 << 10, 16 << 10, 64) == 16  # the cache: 512 KB over 32 KB
    assert ring(512 << 10, 16 << 10, 1000) == 1  # one step fills it
    assert ring(128 << 10, 256 << 10, 8) == 32  # 256 rows over 8 samples
    assert ring(512 << 10, 4 << 20, 64) == 8  # the weight's 4 MB over 512 KB
    monkeypatch.setattr(engine_layout, "_L2", 512 << 10)  # a smaller cache, smaller chunks
    assert ring(32 << 10, 16 << 10, 64) == 4


def test_l2_bytes_reads_the_cache_size(tmp_path, monkeypatch):
    from lstmlab.engines import layout as engine_layout

    cpu = tmp_path / "cache"
    for i, (level, size) in enumerate([("1", "48K"), ("1", "32K"), ("2", "2048K"), ("3", "8M")]):
        (cpu / f"index{i}").mkdir(parents=True)
        (cpu / f"index{i}" / "level").write_text(level + "\n")
        (cpu / f"index{i}" / "size").write_text(size + "\n")
    monkeypatch.setattr(engine_layout, "_CACHE_DIR", cpu)
    monkeypatch.setattr(engine_layout, "_L2", None)
    assert engine_layout.l2_bytes() == 2 << 20
    for size, want in [("1M", 1 << 20), ("512k", 512 << 10), ("2048KB", None), ("", None)]:
        (cpu / "index2" / "size").write_text(size + "\n")
        monkeypatch.setattr(engine_layout, "_L2", None)
        assert engine_layout.l2_bytes() == (want or engine_layout.L2_FALLBACK), size
    monkeypatch.setattr(engine_layout, "_CACHE_DIR", tmp_path / "absent")
    monkeypatch.setattr(engine_layout, "_L2", None)
    assert engine_layout.l2_bytes() == engine_layout.L2_FALLBACK


def test_batch_slices_rules(monkeypatch):
    """Inference's slices of rows at two threads and more: float32, two rows a slice at least,
    under 128 rows a thread, the recurrent weight in half a core's level-2 cache."""
    from lstmlab.engines import layout

    monkeypatch.setattr(layout, "_L2", 2 << 20)
    f32 = torch.float32
    assert layout.batch_slices(64, 16 << 10, 2, f32) == 2
    assert layout.batch_slices(64, 16 << 10, 2, torch.float64) == 1  # float32 only
    assert layout.batch_slices(7, 16 << 10, 4, f32) == 3  # two rows a slice at least
    assert layout.batch_slices(64, 16 << 10, 1, f32) == 1  # one thread
    assert layout.batch_slices(3, 16 << 10, 2, f32) == 1  # a slice of one row: one loop
    assert layout.batch_slices(256, 16 << 10, 2, f32) == 1  # 128 rows a thread: one loop
    assert layout.batch_slices(255, 16 << 10, 2, f32) == 2
    assert layout.batch_slices(32, 1 << 20, 2, f32) == 2  # R of 1 MB: half the cache
    assert layout.batch_slices(32, 4 << 20, 2, f32) == 1  # R of 4 MB: split by columns instead
    assert layout.batch_slices(32, 256 << 10, 2, f32, training=True) == 2  # an eighth: training
    assert layout.batch_slices(32, 1 << 20, 2, f32, training=True) == 1
