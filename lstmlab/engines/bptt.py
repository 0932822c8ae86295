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
__all__ = ["LAYOUTS", "LSTMLayerBPTT", "choose_layout", "forced_layout", "run"]


def run(cell, x: Tensor, lengths: Tensor | None, h0: Tensor, c0: Tensor, alpha: dict[str, float]):
    """Run one layer-direction with the fast engine. x (T, B, I); returns Y, C, h_n, c_n."""
    s = cell.spec
    w = cell.weights(structured=True)  # F-LSTM, G-LSTM: factors / groups, not a dense matrix
    T, B, _ = x.shape
    args = (
        w["W"],
        w["R"],
        w["b"],
        w["W_mx"],
        w["W_mh"],
        w["peep"].get("i"),
        w["peep"].get("f"),
        w["peep"].get("o"),
        w["Q"],
        w["W_p"],
    )
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
    with nullcontext() if graph else without_backward():  # (the native loops then keep less)
        if packing is None:
            out = layer.apply(s, alpha, None, x, h0, c0, *args)
        else:
            perm, _, batch_sizes = packing
            out = layer.apply(s, alpha, batch_sizes, x[:, perm], h0[perm], c0[perm], *args)
    # an R-forward pass may read this call's activations (inside ``rop.recording``)
    leave_tape(cell, layout, alpha, packing, out[0].grad_fn)
    if packing is None:
        return out
    inv = packing[1]
    Y, C, h_n, c_n = out
    return Y[:, inv], C[:, inv], h_n[inv], c_n[inv]
