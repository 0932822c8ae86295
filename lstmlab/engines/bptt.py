"""Matrix-based full BPTT with a hand-written backward pass (seed 000 Sec. 3.3, Eqs. 13–18).

This engine is the project's subject and is written by hand. The whole batch goes through the
recurrence at once (seed 000 puts nodes in rows and samples in columns; so does
``bptt_features.LSTMLayerBPTT``, the feature-major layout; ``bptt_rows`` holds the batch-major
twin for wide layers, and ``run`` picks one by shape and dtype, see ``layout.choose_layout``). Forward, per step:
the input part W x_t + b of the pre-activations (batch-major: one large product per chunk of
steps), one recurrent product R y_{t-1} added to it in place (mLSTM: two; one more with full
gate recurrence or a projection), and elementwise work: the gates and, on the CPU, the
tanh-family activations go through one sigmoid call (see ``gates.SIGMOID_FORM``). Backward runs in
reverse time computing the error responsibilities (Eqs. 13–17, generalised to every variant)
from derivative factors formed a chunk of steps at a time (``gates.FactorChunks``), writing δ of
every step into one (T, D, B) tensor; the weight gradients of Eq. 18 are then one large
product each after the loop:

    dW = Σ_t δ_tᵀ x_t        dR = Σ_t δ_tᵀ y_{t-1}        db = Σ_t δ_t      dx_t = δ_t W

F-LSTM and G-LSTM (seed 004) arrive as their factors / groups and run their own products
(``engines/structured.py``: W1 then W2, k batched group products) in place of W x_t, R y_{t-1},
their transposes and dW, dR, dx; everything else is the same loop.

Unequal lengths: the batch is sorted by length (descending) so that at step t only the first
n_t samples are alive; they are processed as a slice, the rest are left untouched.
Outputs at padded steps are zero, and (h_n, c_n) is each sequence's state at its last valid
step — the semantics of packed sequences. Gradients of the final state enter at each row's
last valid step automatically, because a sample's carried gradient is not touched after it dies.

Backward pass in the notation of ``lstmlab.nn.lstm_cell`` (per step, samples alive at t; written
with row vectors, as in the paper):

    dy      = ∂E/∂y_t (output) + carried dy_{t}          dŷ = dy W_p (projection) or dy
    do      = Σ_cells dŷ ⊙ h(c_t) (+ dq_o)               δ_o = do ⊙ α_o o(1-o)
    dc      = carried dc_t + dŷ ⊙ o ⊙ h'(c_t) + P_o δ_o
    di      = Σ_cells dc ⊙ z (− Σ_cells dc ⊙ c_{t-1} for CIFG) (+ dq_i)   δ_i = di ⊙ α_i i(1-i)
    df      = Σ_cells dc ⊙ c_{t-1} (+ dq_f)                              δ_f = df ⊙ α_f f(1-f)
    δ_z     = dc ⊙ i ⊙ g'(z)
    dc_{t-1} = dc ⊙ f + P_i δ_i + P_f δ_f,   dy_{t-1} = δ R  (mLSTM: (δ R ⊙ W_mx x_t) W_mh),
    dq_{t-1} = δ_gates Q

The modules of the engine, and the one seam where they meet (``run``, this module; see
docs/design.md, "The engine's modules"):

    gates          the gate algebra of a variant: activation forms, α folding, derivative factors
    layout         the two layouts, their choice, per-step views of the samples alive, chunking
    bptt_features  LSTMLayerBPTT: the feature-major time loops (Python)
    bptt_rows      LSTMLayerBPTTRows: the batch-major time loops (Python), the native core's
                   reference twin and fallback; it calls ``native`` where the core is built
    native         the batch-major loops in C++ (forward, backward, R-forward chunks)
    tape           what ``run`` leaves for the R-forward pass (``leave_tape``, ``recording``)
    rop            the R-forward pass of one layer-direction, from a tape
    rop_stack      the R-forward pass of a whole ``lstmlab.LSTM`` stack

``run`` sorts the batch by length, asks ``layout`` for a layout, calls that layout's Function
and leaves a tape (``tape``) for ``rop``; the loops share only ``gates``' and ``layout``'s public names.
No module reaches into another's private names (``tests/test_engine_layout.py``).
"""

from __future__ import annotations

import functools
from contextlib import nullcontext

import torch
from torch import Tensor

from lstmlab.engines import bptt_rows, gates, native
from lstmlab.engines.bptt_features import LSTMLayerBPTT
from lstmlab.engines.layout import LAYOUTS, choose_layout, forced_layout, without_backward
from lstmlab.engines.packing import sort_by_length
from lstmlab.engines.tape import leave_tape

# LSTMLayerBPTT, LAYOUTS, choose_layout and forced_layout are re-exported: their import path
# from this module is public (tests, benchmarks, users)
__all__ = [
    "LAYOUTS",
    "LSTMLayerBPTT",
    "TAPE_NAMES",
    "backward_taped",
    "choose_layout",
    "forced_layout",
    "run",
    "run_taped",
]


def run(cell, x: Tensor, lengths: Tensor | None, h0: Tensor, c0: Tensor, alpha: dict[str, float]):
    """Run one layer-direction with the fast engine. x (T, B, I); returns Y, C, h_n, c_n."""
    s = cell.spec
    T, B, _ = x.shape
    args = _weight_args(cell, structured=True)  # F-LSTM, G-LSTM: factors / groups, not dense
    # no graph will be kept (grad mode off, or nothing requires grad): the layer may keep less
    graph = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, h0, c0, *args)
    )
    dense = s.factorization_rank is None and s.groups == 1  # what both native loops run
    fast = dense and native.use_native(s, x, True, gates.uses_sigmoid_form(x))
    layout = choose_layout(s, B, x.dtype, native=fast, backward=graph)
    if layout == "batch":
        layer = bptt_rows.LSTMLayerBPTTRows
    else:
        layer = LSTMLayerBPTT
    packing = sort_by_length(lengths, T)
    # without a graph the Function's forward is called as it is (autograd's apply costs tens of
    # microseconds a call, all of a small layer's inference): a context object in ctx's place
    call = layer.apply if graph else functools.partial(layer.forward, _TapeContext((False,) * 13))
    with nullcontext() if graph else without_backward():  # (the native loops then keep less)
        if packing is None:
            out = call(s, alpha, None, x, h0, c0, *args)
        else:
            perm, _, batch_sizes = packing
            out = call(s, alpha, batch_sizes, x[:, perm], h0[perm], c0[perm], *args)
    # an R-forward pass may read this call's activations (inside ``rop.recording``)
    leave_tape(cell, layout, alpha, packing, out[0].grad_fn)
    if packing is None:
        return out
    inv = packing[1]
    Y, C, h_n, c_n = out
    return Y[:, inv], C[:, inv], h_n[inv], c_n[inv]


# ------------------------------------------------------------------------ the tape in the open
# ``lstmlab::lstm_layer_taped`` (lstmlab/nn/ops.py) returns a layer's activations as operator
# outputs, so that a compiled training step runs the forward once: the batch-major Function's
# forward and backward called directly, with a context object in autograd's place.
TAPE_NAMES = ("C", "ZA", "HC", "Yh", "MX", "U", "Mm")  # (T, B, ·) each, in the sorted order


class _TapeContext:
    """What an autograd ctx gives the batch-major Function: the inputs' ``needs_input_grad``,
    ``save_for_backward`` / ``saved_tensors`` and attributes, kept in the open."""

    def __init__(self, needs):  # 13 flags: x, h0, c0 and the 10 dense weights
        self.needs_input_grad = (False, False, False, *(bool(n) for n in needs))
        self.saved_tensors: tuple = ()

    def save_for_backward(self, *tensors) -> None:
        self.saved_tensors = tensors

    def set_materialize_grads(self, value: bool) -> None:
        pass


def _weight_args(cell, structured: bool = False) -> tuple:
    """The cell's weights in the order the layer Functions take them (``LSTMCell.weights``)."""
    w = cell.weights(structured=structured)
    p = w["peep"]
    return (w["W"], w["R"], w["b"], w["W_mx"], w["W_mh"], p.get("i"), p.get("f"), p.get("o"),
            w["Q"], w["W_p"])  # fmt: skip


def run_taped(cell, x: Tensor, lengths: Tensor | None, h0: Tensor, c0: Tensor, alpha, needs):
    """``run`` of a dense layer-direction in the batch-major layout, keeping what its backward
    needs: Y, h_n, c_n (the caller's order) and the tape {name: tensor or None} of
    ``TAPE_NAMES`` (the rows sorted by length). ``needs``: which of x, h0, c0 and the weights
    will want a gradient (at least one)."""
    s = cell.spec
    args = _weight_args(cell)
    ctx = _TapeContext(needs)
    packing = sort_by_length(lengths, x.shape[0])
    if packing is None:
        Y, C, h_n, c_n = bptt_rows.LSTMLayerBPTTRows.forward(ctx, s, alpha, None, x, h0, c0, *args)
    else:
        perm, inv, batch_sizes = packing
        Y, C, h_n, c_n = bptt_rows.LSTMLayerBPTTRows.forward(
            ctx, s, alpha, batch_sizes, x[:, perm], h0[perm], c0[perm], *args
        )
        Y, h_n, c_n = Y[:, inv], h_n[inv], c_n[inv]
    tape = {n: getattr(ctx, n, None) for n in TAPE_NAMES if n != "C"}
    return Y, h_n, c_n, dict(tape, C=C)


def backward_taped(cell, x, lengths, h0, c0, alpha, Y, tape, gY, gh, gc, needs) -> list:
    """The gradients of x, h0, c0 and the 10 dense weights (None where not ``needs``) from the
    outputs' gradients gY, gh, gc (each may be None) and what ``run_taped`` kept."""
    s = cell.spec
    args = _weight_args(cell)
    W, R, b, W_mx, W_mh, P_i, P_f, P_o, Q, W_p = args
    packing = sort_by_length(lengths, x.shape[0])
    if packing is None:
        bs, xs, h0s, c0s, Ys, gYs, ghs, gcs = None, x, h0, c0, Y, gY, gh, gc
    else:
        perm, inv, bs = packing
        xs, h0s, c0s, Ys = x[:, perm], h0[perm], c0[perm], Y[:, perm]
        gYs = None if gY is None else gY[:, perm]
        ghs = None if gh is None else gh[perm]
        gcs = None if gc is None else gc[perm]
    ctx = _TapeContext(needs)
    ctx.save_for_backward(xs, h0s, c0s, W, R, W_mx, W_mh, P_i, P_f, P_o, Q, W_p, Ys, tape["C"])
    H = s.hidden_size
    ZA = tape["ZA"]
    ctx.spec, ctx.alpha, ctx.bs = s, alpha, bs
    ctx.ZA, ctx.Z, ctx.A, ctx.HC, ctx.Yh = ZA, ZA[..., :H], ZA[..., H:], tape["HC"], tape["Yh"]
    ctx.MX, ctx.U, ctx.Mm = tape["MX"], tape["U"], tape["Mm"]
    ctx.smap, ctx.has_b = None, b is not None
    ctx.native = native.use_native(s, x, True, gates.uses_sigmoid_form(x))
    grads = list(bptt_rows.LSTMLayerBPTTRows.backward(ctx, gYs, None, ghs, gcs)[3:])
    if packing is not None:  # back to the caller's order: x (T, B, I), h0 and c0 (B, ·)
        dx, dh0, dc0 = grads[:3]
        grads[:3] = (
            None if dx is None else dx[:, inv],
            None if dh0 is None else dh0[inv],
            None if dc0 is None else dc0[inv],
        )
    return grads
