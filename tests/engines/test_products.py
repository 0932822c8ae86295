"""The bptt engine's per-step products: oneDNN on a packed weight against BLAS and autograd.

oneDNN runs only in float32, so the engine's two kernels are held together in float32 — each
to the float64 autograd reference at float32 accuracy, and to each other — on every product
the batch-major layout makes per step (R forward and backward, W_p, Q, W_mh), on padded
batches of unequal lengths. ``StepProduct`` itself is held to ``torch.mm``. The products
serve the Python loop of ``bptt_rows`` (the native core calls BLAS itself), so these tests run
that loop (``native.forced_python``)."""

from __future__ import annotations

import pytest
import torch

from lstmlab import LSTM
from lstmlab.engines import native
from lstmlab.engines.bptt import forced_layout
from lstmlab.engines.products import (
    MIN_ROWS,
    MIN_SIDE,
    MIN_STEPS,
    StepProduct,
    choose_products,
    forced_products,
    onednn_available,
)

F32, F64 = torch.float32, torch.float64
LENGTHS = torch.tensor([7, 3, 1, 5, 7, 6])
needs_onednn = pytest.mark.skipif(not onednn_available(), reason="torch without oneDNN matmul")


def test_choice_rule():
    wide, narrow = torch.zeros(4 * MIN_SIDE, MIN_SIDE), torch.zeros(4 * 128, 128)
    expect = "onednn" if onednn_available() else "blas"
    assert choose_products(wide, MIN_STEPS) == expect
    assert choose_products(wide, MIN_STEPS - 1) == "blas"  # packing would not pay
    assert choose_products(wide, 1000, rows=MIN_ROWS - 1) == "blas"  # a matrix-vector product
    assert choose_products(wide, 1000, rows=MIN_ROWS) == expect
    assert choose_products(narrow, 1000) == "blas"  # oneDNN's fixed cost per call loses
    assert choose_products(wide.double(), 1000) == "blas"  # no float64 kernel
    with forced_products("onednn"):
        assert choose_products(narrow, 1) == expect
        assert choose_products(narrow.double(), 1) == "blas"
        with forced_products("blas"):  # the innermost forcing wins
            assert choose_products(wide, 1000) == "blas"
    torch.backends.mkldnn.enabled = False  # the user switched oneDNN off
    try:
        assert choose_products(wide, 1000) == "blas"
    finally:
        torch.backends.mkldnn.enabled = True
    with pytest.raises(ValueError, match="unknown products 'mkl'; valid"):
        with forced_products("mkl"):
            pass


@pytest.mark.parametrize("kind", ["blas", pytest.param("onednn", marks=needs_onednn)])
def test_step_product_equals_mm(kind):
    g = torch.Generator().manual_seed(0)
    M = torch.randn(12, 7, generator=g)  # (N, K)
    wide = torch.randn(5, 20, generator=g)
    a = wide[:, 3:10]  # a strided view, as the engine's gate slices are
    add = torch.randn(5, 12, generator=g)
    with forced_products(kind):
        p = StepProduct(M, steps=1)
    assert p.kind == kind
    ref = a @ M.t()
    torch.testing.assert_close(p(a), ref)
    out = torch.randn(5, 12, generator=g)
    before = out.clone()
    torch.testing.assert_close(p.add_(out, a), before + ref)
    torch.testing.assert_close(out, before + ref)
    torch.testing.assert_close(p.into(out, a), ref)
    torch.testing.assert_close(p.into(out, a, add), ref + add)
    torch.testing.assert_close(out, ref + add)


def _loss(m, x):
    out, (h, c) = m(x, lengths=LENGTHS)
    w = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    return (w * out).sum() + (out**2).sum() + 0.7 * h.sum() + 0.3 * (c**2).sum()


def _run(m, x, engine):
    m.engine = engine
    loss = _loss(m, x)
    return loss.detach(), torch.autograd.grad(loss, list(m.parameters()))


@needs_onednn
@pytest.mark.parametrize(
    "kw",
    [
        dict(variant="NP"),
        dict(variant="vanilla", gate_sharpness={"i": 1.5, "o": 3.0}),
        dict(variant="lstm97", cells_per_block=2, proj_size=3),
        dict(variant="FGR"),
        dict(variant="mLSTM", multiplicative_size=5, proj_size=4),
        dict(variant="CIFG", num_layers=2, bidirectional=True),
    ],
    ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()),
)
def test_onednn_products_match_blas_and_autograd(kw, monkeypatch):
    m64 = LSTM(4, 6, dtype=F64, seed=3, **kw)
    m32 = LSTM(4, 6, dtype=F32, seed=3, **kw)
    m32.load_state_dict(m64.state_dict())
    x = torch.randn(7, 6, 4, generator=torch.Generator().manual_seed(1), dtype=F64)
    l_ref, g_ref = _run(m64, x, "autograd")

    calls = []
    kernel = StepProduct._onednn
    monkeypatch.setattr(StepProduct, "_onednn", lambda self, a: calls.append(1) or kernel(self, a))
    results = {}
    for kind in ("blas", "onednn"):
        calls.clear()
        with forced_layout("batch"), forced_products(kind), native.forced_python():
            results[kind] = _run(m32, x.float(), "bptt")
        assert bool(calls) == (kind == "onednn")  # the kernel asked for is the one that ran
    scale = max(g.abs().max().item() for g in g_ref)
    for kind, (loss, grads) in results.items():
        assert abs(loss.item() - l_ref.item()) <= 1e-5 * abs(l_ref.item()), kind
        for (name, _), a, b in zip(m64.named_parameters(), grads, g_ref, strict=True):
            err = (a.double() - b).abs().max().item()
            assert err <= 2e-6 * scale, (kind, name, err)  # float32 round-off: ≈ 2e-7
    for a, b in zip(results["blas"][1], results["onednn"][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6 * scale)


@needs_onednn
def test_wide_layer_takes_onednn_and_matches_autograd(monkeypatch):
    """At the sizes where the rule picks oneDNN by itself (both sides of R ≥ 256, ≥ 16 steps),
    the kernels it runs there (other blockings than the small tests') give the float64 autograd
    gradients to float32 accuracy."""
    T, B, H = MIN_STEPS, 3, MIN_SIDE
    m64 = LSTM(5, H, dtype=F64, seed=4)
    m32 = LSTM(5, H, dtype=F32, seed=4)
    m32.load_state_dict(m64.state_dict())
    x = torch.randn(T, B, 5, generator=torch.Generator().manual_seed(2), dtype=F64)
    lengths = torch.tensor([T, T - 5, 2])

    def run(m, xx, engine):
        m.engine = engine
        out, (h, c) = m(xx, lengths=lengths)
        w = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
        loss = (w * out).sum() + (out**2).sum() + h.sum() + (c**2).sum()
        return loss.detach(), torch.autograd.grad(loss, list(m.parameters()))

    l_ref, g_ref = run(m64, x, "autograd")
    kinds = []
    init = StepProduct.__init__

    def spy(self, M, steps, rows):
        init(self, M, steps, rows)
        kinds.append(self.kind)

    monkeypatch.setattr(StepProduct, "__init__", spy)
    with forced_layout("batch"), native.forced_python():
        loss, grads = run(m32, x.float(), "bptt")
    assert kinds == ["onednn", "onednn"]  # R forward, Rᵀ backward
    assert abs(loss.item() - l_ref.item()) <= 1e-5 * abs(l_ref.item())
    scale = max(g.abs().max().item() for g in g_ref)
    for (name, _), a, b in zip(m64.named_parameters(), grads, g_ref, strict=True):
        err = (a.double() - b).abs().max().item()
        assert err <= 4e-6 * scale, (name, err)  # float32 round-off: ≈ 4e-7
