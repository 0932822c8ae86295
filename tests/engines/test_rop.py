"""The R-forward pass through the bptt engine (``engines/rop.py``) against forward-mode autograd.

The reference is ``torch.func.jvp`` through the ``autograd`` engine (the cell's plain ``step``),
in float64: the tangents of every output, cell state and final state of an ``lstmlab.LSTM``
along a random parameter direction. Every variant of SPEC S1, in both memory layouts of the
engine (forced), on a batch with unequal lengths; then blocks of cells, gate sharpness,
projection, stacking, bidirectional layers, initial-state tangents and float32."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.func import functional_call, jvp

from lstmlab import LSTM
from lstmlab.engines import rop, rop_stack, tape
from lstmlab.engines.bptt import LAYOUTS, forced_layout
from lstmlab.nn.variants import VARIANTS

F64 = torch.float64
LENGTHS = torch.tensor([6, 3, 1, 5, 6])  # unequal, some full-length, one of length 1


@pytest.fixture(params=LAYOUTS)
def layout(request):
    with forced_layout(request.param):
        yield request.param


def _direction(params: dict, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(p.shape, generator=g, dtype=p.dtype) for n, p in params.items()}


def _compare(model: LSTM, x, lengths, seed: int = 1, hx=None):
    """Max relative error of (output, states, h_n) tangents: rop vs forward-mode autograd."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    tangents = _direction(params, seed)

    def f(p):
        out, (h, _), states = functional_call(
            model, p, (x, hx), dict(lengths=lengths, return_states=True)
        )
        return out, states, h

    model.engine = "autograd"
    _, (d_out, d_states, d_h) = jvp(f, (params,), (tangents,))
    model.engine = "bptt"
    with rop.recording() as tapes:
        model(x, hx, lengths=lengths, return_states=True)
    got_out, got_states, got_h = rop_stack.stack_jvp(model, tapes, params, tangents, lengths)
    if model.batch_first:
        got_out = got_out.transpose(0, 1)
        got_states = [s.transpose(0, 1) for s in got_states]
    pairs = [(got_out, d_out), *zip(got_states, d_states, strict=True)]
    pairs += [(got_h[k], d_h[k]) for k in range(d_h.shape[0])]
    scale = max(float(b.abs().max()) for _, b in pairs)
    assert scale > 1e-3  # the direction moves every output: a test that can fail
    return max(float((a - b).abs().max()) for a, b in pairs) / scale


def _inputs(I=4, T=6, B=5, dtype=F64, seed=0):
    return torch.randn(T, B, I, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_matches_forward_mode_autograd(variant, layout):
    model = LSTM(4, 6, variant=variant, dtype=F64, seed=1, gate_sharpness=1.5)
    assert _compare(model, _inputs(), LENGTHS) <= 1e-12


@pytest.mark.parametrize("chunk", [1, 2, 4])
@pytest.mark.parametrize("variant", ["vanilla", "lstm97", "FGR", "mLSTM", "CIFG", "NFG"])
def test_chunk_seams(variant, chunk, layout):
    """The factors and the carried-independent terms formed a few steps at a time (the path
    of layers too large to keep them): any chunk size gives the same tangents."""
    model = LSTM(4, 6, variant=variant, dtype=F64, seed=1, proj_size=4 if chunk == 4 else None)
    with rop.forced_chunk(chunk):
        assert _compare(model, _inputs(), LENGTHS) <= 1e-12
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        with rop.forced_chunk(0):
            pass


STRUCTURES = {
    "blocks": dict(variant="vanilla", cells_per_block=2),
    "lstm97-blocks-alpha": dict(variant="lstm97", cells_per_block=3, gate_sharpness=3.75),
    "FGR-alpha-per-gate": dict(
        variant="FGR", cells_per_block=2, gate_sharpness={"i": 2.0, "f": 1.0, "o": 0.5}
    ),
    "CIFG-blocks": dict(variant="CIFG", cells_per_block=2),
    "NOG-blocks": dict(variant="NOG", cells_per_block=2),
    "projection": dict(variant="vanilla", proj_size=3),
    "mLSTM-projection": dict(variant="mLSTM", proj_size=4),
    "stacked-bidirectional": dict(variant="vanilla", num_layers=2, bidirectional=True),
    "stacked-mLSTM": dict(variant="mLSTM", num_layers=2),
    "stacked-FGR-projection": dict(variant="FGR", num_layers=2, proj_size=4),
    "G-LSTM-stacked": dict(variant="G-LSTM", num_layers=2),
    "F-LSTM-bidirectional": dict(variant="F-LSTM", bidirectional=True),
    "batch-first": dict(variant="lstm97", batch_first=True),
}


@pytest.mark.parametrize("kwargs", list(STRUCTURES.values()), ids=list(STRUCTURES))
@pytest.mark.parametrize("padded", [True, False], ids=["padded", "full"])
def test_structures_match_forward_mode_autograd(kwargs, padded, layout):
    model = LSTM(4, 6, dtype=F64, seed=2, **kwargs)
    x = _inputs()
    if model.batch_first:
        x = x.transpose(0, 1).contiguous()
    assert _compare(model, x, LENGTHS if padded else None) <= 1e-12


def test_initial_state_tangents(layout):
    """layer_jvp with tangents of x, h0 and c0 (what a stacked or stateful caller passes)."""
    model = LSTM(4, 6, variant="vanilla", dtype=F64, seed=3)
    cell = model.cells[0]
    T, B = 6, 5
    g = torch.Generator().manual_seed(4)
    x, h0, c0 = (torch.randn(*s, generator=g, dtype=F64) for s in ((T, B, 4), (B, 6), (B, 6)))
    dx, dh0, dc0 = (torch.randn_like(t) for t in (x, h0, c0))
    params = {n: p.detach() for n, p in cell.named_parameters()}
    tangents = _direction(params, 5)

    def f(p, x, h0, c0):
        named = {f"cells.0.{n}": t for n, t in p.items()}
        out, _, states = functional_call(
            model, named, (x, (h0[None], c0[None])), dict(lengths=LENGTHS, return_states=True)
        )
        return out, states[0]

    model.engine = "autograd"
    _, (d_out, d_c) = jvp(f, (params, x, h0, c0), (tangents, dx, dh0, dc0))
    model.engine = "bptt"
    with rop.recording() as tapes:
        model(x, (h0[None], c0[None]), lengths=LENGTHS)
    dw = rop_stack.weight_tangents(cell, params, tangents)
    got_out, got_c = rop.layer_jvp(tapes[0], dw, dx, dh0, dc0)
    assert torch.allclose(got_out, d_out, rtol=0, atol=1e-12 * float(d_out.abs().max()))
    assert torch.allclose(got_c, d_c, rtol=0, atol=1e-12 * float(d_c.abs().max()))


@pytest.mark.parametrize("variant", ["vanilla", "lstm97", "mLSTM"])
def test_float32_within_round_off(variant, layout):
    """float32 R-forward against the float64 reference: round-off only."""
    m64 = LSTM(
        4, 6, variant=variant, dtype=F64, seed=6, cells_per_block=2 if variant == "lstm97" else 1
    )
    params = {n: p.detach() for n, p in m64.named_parameters()}
    tangents = _direction(params, 7)
    x = _inputs()
    m64.engine = "autograd"
    _, (d_out, *_) = jvp(
        lambda p: functional_call(m64, p, (x,), dict(lengths=LENGTHS))[:1], (params,), (tangents,)
    )
    m32 = copy.deepcopy(m64).float()
    m32.engine = "bptt"
    p32 = {n: t.float() for n, t in params.items()}
    t32 = {n: t.float() for n, t in tangents.items()}
    with rop.recording() as tapes:
        m32(x.float(), lengths=LENGTHS)
    got, _, _ = rop_stack.stack_jvp(m32, tapes, p32, t32, LENGTHS)
    assert got.dtype == torch.float32
    err = float((got.double() - d_out).abs().max()) / float(d_out.abs().max())
    assert err <= 1e-5


def test_tape_needs_a_graph():
    model = LSTM(4, 6, dtype=F64, seed=8)
    params = {n: p.detach() for n, p in model.named_parameters()}
    with rop.recording() as tapes, torch.no_grad():
        model(_inputs())
    with pytest.raises(RuntimeError, match="kept its graph"):
        rop_stack.stack_jvp(model, tapes, params, _direction(params, 9), None)


def test_stack_needs_one_tape_per_layer_direction():
    model = LSTM(4, 6, num_layers=2, dtype=F64, seed=8)
    params = {n: p.detach() for n, p in model.named_parameters()}
    with rop.recording() as tapes:
        model(_inputs())
        model(_inputs())  # two forward passes: twice the tapes
    with pytest.raises(RuntimeError, match="one bptt tape per layer-direction"):
        rop_stack.stack_jvp(model, tapes, params, _direction(params, 9), None)
    assert not tape._TAPES  # recording ends with its block
