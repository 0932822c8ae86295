"""The R-forward pass of a whole ``lstmlab.LSTM`` stack, one recorded layer-direction at a time.

``stack_jvp`` replays ``LSTM._layers`` with tangents: each layer-direction's R-forward pass
(``rop.layer_jvp``) on the tangent of its input (the layer below's outputs, reversed within
each sequence for the reverse direction) and of its dense weights (``weight_tangents``).

Hand-written: curvature products are this project's subject.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lstmlab.engines.rop import last_step, layer_jvp
from lstmlab.engines.tape import LayerTape

__all__ = ["dense_weights", "stack_jvp", "weight_tangents"]


def weight_tangents(cell, params: dict[str, Tensor], tangents: dict[str, Tensor]) -> dict:
    """The tangents of ``cell.weights()`` (the dense weights the engine runs on) along the
    parameter tangents ``tangents``, at the parameters ``params`` (both keyed by the cell's own
    parameter names). Linear for every variant but F-LSTM, whose [W | R] = W2 W1 is bilinear:
    its tangent is Ẇ2 W1 + W2 Ẇ1. G-LSTM's block-diagonal assembly is linear, so its tangent
    is the assembly of the tangents."""
    s = cell.spec
    own = {n: p.detach() for n, p in cell.named_parameters(recurse=False)}
    params = {**own, **params}  # a frozen parameter: its own value, and a zero tangent
    tangents = {n: tangents[n] if n in tangents else torch.zeros_like(p) for n, p in params.items()}
    if s.factorization_rank is not None:
        WR = tangents["W2"] @ params["W1"] + params["W2"] @ tangents["W1"]  # (D, I + Hr)
        W, R = WR[:, : s.input_size], WR[:, s.input_size :]
    elif s.groups > 1:
        W = torch.block_diag(*tangents["Wg"])[cell.group_rows]
        R = torch.block_diag(*tangents["Rg"])[cell.group_rows]
    else:
        W, R = tangents["W"], tangents["R"]
    return dict(
        W=W,
        R=R,
        b=tangents.get("b"),
        W_mx=tangents.get("W_mx"),
        W_mh=tangents.get("W_mh"),
        peep={g: tangents[f"peep_{g}"] for g in s.gates} if s.peepholes else {},
        Q=tangents.get("Q"),
        W_p=tangents.get("W_p"),
    )


def dense_weights(cell, params: dict[str, Tensor]) -> dict[str, Tensor | None]:
    """The dense weights the engine runs on, at the parameters ``params`` (keyed by the cell's
    own names; a missing one: the cell's own value), keyed as ``rop.layer_jvp``'s ``weights``.
    The R-forward pass reads them from here rather than from the forward pass's saved inputs,
    so it does not depend on how the engine receives F-LSTM's and G-LSTM's weights."""
    s = cell.spec
    p = {**{n: t.detach() for n, t in cell.named_parameters(recurse=False)}, **params}
    if s.factorization_rank is not None:
        WR = p["W2"] @ p["W1"]
        W, R = WR[:, : s.input_size], WR[:, s.input_size :]
    elif s.groups > 1:
        W = torch.block_diag(*p["Wg"])[cell.group_rows]
        R = torch.block_diag(*p["Rg"])[cell.group_rows]
    else:
        W, R = p["W"], p["R"]
    out = dict(W=W, R=R, W_mx=p.get("W_mx"), W_mh=p.get("W_mh"), Q=p.get("Q"), W_p=p.get("W_p"))
    for g in ("i", "f", "o"):
        out[f"P_{g}"] = p.get(f"peep_{g}")
    return out


def stack_jvp(
    lstm,
    tapes: list[LayerTape],
    params: dict[str, Tensor],
    tangents: dict[str, Tensor],
    lengths: Tensor | None,
) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """The R-forward pass of a whole ``lstmlab.LSTM`` stack (layers, directions) whose forward
    pass was recorded in ``tapes`` (one per layer-direction, in ``LSTM._layers``' order).

    ``params`` and ``tangents`` are keyed by the LSTM's parameter names (``cells.k.W`` …); the
    input is data (its tangent is zero). Returns, time-major like the engine: the tangent of the
    output (T, B, D·Hr), of each layer's cell states (T, B, D·H), and of h_n per layer-direction
    (B, Hr) — each sequence's last valid step; the reverse direction's is at step 0."""
    from lstmlab.nn.lstm import reverse_sequences

    nd = lstm.num_directions
    if len(tapes) != len(lstm.cells) or any(
        tp.cell is not c for tp, c in zip(tapes, lstm.cells, strict=False)
    ):
        raise RuntimeError(
            f"expected one bptt tape per layer-direction ({len(lstm.cells)}), got {len(tapes)}: "
            "record exactly one forward pass of this LSTM on the bptt engine"
        )
    d_in: Tensor | None = None
    d_states: list[Tensor] = []
    d_hn: list[Tensor] = []
    for layer in range(lstm.num_layers):
        outs, cells = [], []
        for d in range(nd):
            k = layer * nd + d
            pre = f"cells.{k}."
            p = {n[len(pre) :]: t for n, t in params.items() if n.startswith(pre)}
            v = {n[len(pre) :]: t for n, t in tangents.items() if n.startswith(pre)}
            dw = weight_tangents(lstm.cells[k], p, v)
            dx = None if d_in is None else (d_in if d == 0 else reverse_sequences(d_in, lengths))
            dY, dC = layer_jvp(tapes[k], dw, dx, weights=dense_weights(lstm.cells[k], p))
            d_hn.append(last_step(dY, lengths))
            if d == 1:
                dY, dC = reverse_sequences(dY, lengths), reverse_sequences(dC, lengths)
            outs.append(dY)
            cells.append(dC)
        d_in = outs[0] if nd == 1 else torch.cat(outs, dim=2)
        d_states.append(cells[0] if nd == 1 else torch.cat(cells, dim=2))
    return d_in, d_states, d_hn
