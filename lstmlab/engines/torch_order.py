"""torch.nn.LSTM's layer trained on its own weights: the drop-in's training path.

``lstmlab.TorchLSTM`` keeps torch's parameters (W_ih, W_hh, b_ih, b_hh, rows in torch's gate
order i | f | g | o). The engine's general path (``nn.fast_layer`` → ``engines.bptt``) gathers
them into its own order z | i | f | o with a differentiable permutation each call and runs its
``autograd.Function`` inside another; for a small layer that bookkeeping costs more than the
recurrence (forward + backward of (1, 32, 16, 16): 450 µs against torch's 240). Here the
native batch-major loops read and write torch's order themselves (config entry ``C_ORDER``:
the forward step, and the common cell's backward pass ``common_back``), so one
``autograd.Function`` per layer-direction runs the forward, the backward and the weight
gradients — d[W_ih | W_hh] as one product over the T·B rows of [x_t | y_{t-1}], db_ih = db_hh
the column sums of δ — straight on torch's parameters.

Where it applies: torch's cell (``native.torch_order_cell``), α = 1, dense sequences (no
lengths), float32 / float64 on the CPU with the core loaded, the batch-major layout; the
drop-in decides (``TorchLSTM._torch_order_layer``). A double backward (``create_graph=True``)
differentiates the step loop written in torch operators below (``reference``), the slow twin
that the tests hold this path to.

At two threads and more a float32 call large enough (``SLICE_MIN_FLOPS``) whose recurrent
weight fits in an eighth of a core's level-2 cache (``layout.batch_slices(training=True)``)
runs in slices of rows: each slice's forward and backward loops on a thread of its own, with
its own step buffers (``native.forward_slices`` / ``backward_slices``); the slices' δ are
joined for the weight gradients, which stay one product over every row.

Hand-written: the engine is this project's subject.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lstmlab.engines import layout, native
from lstmlab.nn.variants import CellSpec

__all__ = ["reference", "run_layer"]

_ONES = {"i": 1.0, "f": 1.0, "o": 1.0}
# the forward's flops below which a call runs one loop, not slices of rows: the slices'
# bookkeeping (their buffers, the concatenations) then costs more than it saves
# ((50, 32, 16, 16), 6.6·10⁶: 0.78 of torch's time in one loop, 0.84 in slices)
SLICE_MIN_FLOPS = 2e7


def reference(
    x: Tensor, h0: Tensor, c0: Tensor, W_ih: Tensor, W_hh: Tensor, b: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """The layer as torch defines it, step by step in torch operators (differentiable to any
    order): returns Y (T, B, H), h_n, c_n."""
    h, c, ys = h0, c0, []
    for t in range(x.shape[0]):
        a = x[t] @ W_ih.t() + h @ W_hh.t()
        if b is not None:
            a = a + b
        i, f, g, o = a.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        ys.append(h)
    return torch.stack(ys), h, c


def _blocks(buf: Tensor, cuts: list[int]) -> list[Tensor]:
    """The slices' blocks of a (T, B, n) step buffer laid out slice-major: slice q's (T, b_q, n)
    block, contiguous, after those of the slices before it."""
    T, _, n = buf.shape
    flat = buf.view(-1)
    return [
        flat[T * cuts[q] * n : T * cuts[q + 1] * n].view(T, cuts[q + 1] - cuts[q], n)
        for q in range(len(cuts) - 1)
    ]


class _Layer(torch.autograd.Function):
    """See the module docstring."""

    @staticmethod
    def forward(ctx, spec, x, h0, c0, W_ih, W_hh, b_ih, b_hh):
        T, B, I = x.shape
        H = spec.hidden_size
        D = 4 * H
        bias = b_ih + b_hh if b_ih is not None else x.new_zeros(D)
        size = x.element_size()
        S = layout.batch_slices(B, D * H * size, torch.get_num_threads(), x.dtype, training=True)
        if 2 * T * B * D * (I + H) < SLICE_MIN_FLOPS:  # a small call: one loop
            S = 1
        ctx.spec, ctx.has_b = spec, b_ih is not None
        ctx.set_materialize_grads(False)
        # the step buffers: (T, B, ·) each, or with slices of rows, each slice's (T, b_q, ·)
        # block one after the other in the same storage (slice-major). Where the slices cut is
        # saved with them (``cuts``), so that what the backward reads never depends on the
        # thread count at the time — a recomputation (checkpointing) saves the same tensors.
        cuts = [q * B // S for q in range(S + 1)]
        ZA, C, HC = (x.new_empty(T, B, n) for n in (D, H, H))
        if S > 1:  # each slice of rows on a thread of its own (see ``layout.batch_slices``)
            k = min(T, layout.chunk_steps(-(-B // S) * D * size, target=4 << 20))
            Ys = [x.new_empty(T, cuts[q + 1] - cuts[q], H) for q in range(S)]
            native.forward_slices(
                spec, k, [x[:, cuts[q] : cuts[q + 1]].reshape(-1, I) for q in range(S)],
                W_ih, bias, W_hh, [h0[cuts[q] : cuts[q + 1]].contiguous() for q in range(S)],
                [c0[cuts[q] : cuts[q + 1]].contiguous() for q in range(S)],
                *(_blocks(buf, cuts) for buf in (ZA, C, HC)), Ys,
            )  # fmt: skip
            Y = torch.cat(Ys, 1)
            c_n = torch.cat([c[T - 1] for c in _blocks(C, cuts)])
        else:
            Y = x.new_empty(T, B, H)
            k = min(T, layout.chunk_steps(B * D * size, target=4 << 20))
            h0c, c0c = h0.contiguous(), c0.contiguous()
            native.forward_rows(
                spec, [B] * T, k, x.reshape(T * B, I), W_ih, bias, W_hh, h0c, c0c,
                ZA, C, HC, Y, None, None, None, {}, z_scale=2.0, torch_order=True,
            )  # fmt: skip
            c_n = C[T - 1].clone()
        # (the step buffers too: freed with the graph, seen by saved-tensor hooks)
        starts = torch.zeros(B, dtype=torch.bool)  # (where each slice starts: one shape for
        starts[cuts[:-1]] = True  # any number of slices, as checkpointing's checks want)
        ctx.save_for_backward(x, h0, c0, W_ih, W_hh, b_ih, b_hh, Y, ZA, C, HC, starts)
        return Y, Y[T - 1].clone(), c_n

    @staticmethod
    def backward(ctx, dY, dh_n, dc_n):
        x, h0, c0, W_ih, W_hh, b_ih, b_hh, Y, ZA, C, HC, starts = ctx.saved_tensors
        need = ctx.needs_input_grad[1:]  # x, h0, c0, W_ih, W_hh, b_ih, b_hh
        if dY is None and dh_n is None and dc_n is None:
            return (None,) * 8
        if torch.is_grad_enabled():  # create_graph=True: differentiate the reference twin
            from lstmlab.nn.ops import graph_grads  # (nn imports engines: imported here)

            b = None if b_ih is None else b_ih + b_hh
            outs = reference(x, h0, c0, W_ih, W_hh, b)
            inputs = (x, h0, c0, W_ih, W_hh, b_ih, b_hh)
            return (None, *graph_grads(zip(outs, (dY, dh_n, dc_n), strict=True), inputs, need))
        T, B, I = x.shape
        H = ctx.spec.hidden_size
        D = 4 * H
        dy_next = dh_n.clone().contiguous() if dh_n is not None else x.new_zeros(B, H)
        dc_next = dc_n.clone().contiguous() if dc_n is not None else x.new_zeros(B, H)
        cuts = [*starts.nonzero().view(-1).tolist(), B]
        S = len(cuts) - 1
        dPre = x.new_empty(T, B, D)
        if S > 1:  # the forward's slices, each on a thread of its own; δ slice-major too
            rows = [slice(cuts[q], cuts[q + 1]) for q in range(S)]
            dys = [dy_next[r].clone() for r in rows]
            dcs = [dc_next[r].clone() for r in rows]
            dPres = _blocks(dPre, cuts)
            native.backward_slices(
                ctx.spec, *(_blocks(buf, cuts) for buf in (ZA, C, HC)),
                [c0[r].contiguous() for r in rows], W_hh,
                [dY[:, r].contiguous() if dY is not None else x.new_zeros(T, r.stop - r.start, H)
                 for r in rows],
                dPres, dys, dcs,
            )  # fmt: skip
            dy_next, dc_next = torch.cat(dys), torch.cat(dcs)
            # the products below read the rows of [x_t | y_{t-1}] in δ's order (slice-major);
            # dx goes back to the batch's order slice by slice
            order = torch.cat([torch.arange(T * B).view(T, B)[:, r].reshape(-1) for r in rows])
            if need[0]:
                dx = x.new_empty(T, B, I)
                for r, d in zip(rows, dPres, strict=True):
                    dx[:, r] = (d.reshape(-1, D) @ W_ih).view(T, r.stop - r.start, I)
            else:
                dx = None
        else:
            native.backward_rows(
                ctx.spec, _ONES, [B] * T, ZA, C, HC, c0, W_hh, None, None, {}, dY,
                None, dPre, None, dy_next, dc_next, None, None, torch_order=True,
            )  # fmt: skip
            order = None
            dx = (dPre.view(T * B, D) @ W_ih).view(T, B, I) if need[0] else None
        dPre2 = dPre.view(T * B, D)
        dW_ih = dW_hh = db = None
        if need[3] or need[4]:  # one product over [x_t | y_{t-1}]: d[W_ih | W_hh]
            V = x.new_empty(T, B, I + H)
            V[..., :I] = x
            V[0, :, I:] = h0
            V[1:, :, I:] = Y[:-1]
            V2 = V.view(T * B, I + H)
            dWR = dPre2.t() @ (V2 if order is None else V2.index_select(0, order))
            dW_ih, dW_hh = dWR[:, :I], dWR[:, I:]
        if ctx.has_b and (need[5] or need[6]):
            db = dPre2.sum(0)
        return (
            None,
            dx,
            dy_next if need[1] else None,
            dc_next if need[2] else None,
            dW_ih if need[3] else None,
            dW_hh if need[4] else None,
            db if need[5] else None,
            db.clone() if need[6] and need[5] else (db if need[6] else None),
        )


def run_layer(
    spec: CellSpec,
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    W_ih: Tensor,
    W_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """One layer-direction of torch.nn.LSTM (x (T, B, I) dense, time-major; h0, c0 (B, H);
    torch's weights) with its gradients: Y (T, B, H), h_n, c_n."""
    return _Layer.apply(spec, x, h0, c0, W_ih, W_hh, b_ih, b_hh)
