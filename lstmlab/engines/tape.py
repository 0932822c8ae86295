"""What one bptt layer-direction leaves for an R-forward pass: the tape.

``bptt.run`` calls ``leave_tape`` after every layer-direction; inside ``recording()`` that
appends a ``LayerTape`` (the cell, the layout, α, the packing, and the Function's autograd node,
whose saved tensors and attributes are the activations of the forward pass) to the recording's
list. ``rop`` reads a tape back through ``tape_tensors``, the one place that knows what
``bptt_features.LSTMLayerBPTT`` and ``bptt_rows.LSTMLayerBPTTRows`` keep on their node.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["LayerTape", "leave_tape", "recording", "tape_tensors"]

_TAPES: list[list] = []  # set by ``recording``: where ``leave_tape`` puts each call's tape


@dataclass
class LayerTape:
    """What one bptt layer-direction call left for an R-forward pass."""

    cell: torch.nn.Module  # the LSTMCell (its spec; F-/G-LSTM: its factored parameters)
    layout: str  # "features" or "batch"
    alpha: dict[str, float]  # the gate sharpness in force
    packing: tuple[Tensor, Tensor, list[int]] | None  # (perm, inv, batch sizes) or None
    node: object  # the autograd node (= ctx) of LSTMLayerBPTT / LSTMLayerBPTTRows
    cache: dict = field(default_factory=dict)  # the factors, when kept (rop.FACTOR_CACHE_BYTES)


@contextmanager
def recording() -> Iterator[list[LayerTape]]:
    """Collect a ``LayerTape`` for every bptt layer-direction run inside the block.

    The forward pass must build its graph (some parameter requires grad): the tape is the
    Function's node, and it lives as long as the graph does."""
    tapes: list[LayerTape] = []
    _TAPES.append(tapes)
    try:
        yield tapes
    finally:
        _TAPES.remove(tapes)


def leave_tape(cell, kind: str, alpha, packing, node) -> None:
    """Called by ``bptt.run`` after each layer-direction: inside ``recording``, append a
    ``LayerTape`` of this call (its cell, its layout ``kind`` "features" / "batch", α, the packing
    (perm, inv, batch sizes) or None, and the Function's node ``out[0].grad_fn``) to the
    innermost recording's list; outside, nothing."""
    if _TAPES:
        _TAPES[-1].append(LayerTape(cell, kind, alpha, packing, node))


def tape_tensors(tape: LayerTape) -> dict[str, Tensor | None]:
    """The saved tensors of a tape, detached, by name: x, h0, c0, Y, C, Z, A, HC, Yh (and
    mLSTM's MX, U, Mm; None where absent) and the dense weights W, R, W_mx, W_mh, P_i, P_f, P_o,
    Q, W_p. Every per-step one is (T, F, B) feature-major or (T, B, F) batch-major, per the
    tape's layout; h0, c0 are (F, B) / (B, F) likewise."""
    node = tape.node
    if node is None or not hasattr(node, "saved_tensors"):
        raise RuntimeError(
            "the R-forward needs a bptt forward pass that kept its graph (parameters that "
            "require grad, outside torch.no_grad)"
        )
    if tape.layout == "features":
        x, h0, c0, W, R, W_mx, W_mh, P_i, P_f, P_o, Q, W_p, Y = node.saved_tensors
        t = dict(
            x=x.transpose(1, 2), h0=h0.t(), c0=c0.t(), Y=Y.transpose(1, 2), C=node.CT,
            Z=node.ZT, A=node.AT, HC=node.HCT, Yh=node.YhT,
            MX=getattr(node, "MXT", None), U=getattr(node, "UT", None),
            Mm=getattr(node, "MmT", None),
        )  # fmt: skip
    else:
        x, h0, c0, W, R, W_mx, W_mh, P_i, P_f, P_o, Q, W_p, Y, C = node.saved_tensors
        t = dict(
            x=x, h0=h0, c0=c0, Y=Y, C=C, Z=node.Z, A=node.A, HC=node.HC, Yh=node.Yh,
            MX=getattr(node, "MX", None), U=getattr(node, "U", None),
            Mm=getattr(node, "Mm", None),
        )  # fmt: skip
    t.update(W=W, R=R, W_mx=W_mx, W_mh=W_mh, P_i=P_i, P_f=P_f, P_o=P_o, Q=Q, W_p=W_p)
    return {k: (v.detach() if v is not None else None) for k, v in t.items()}
