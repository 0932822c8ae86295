"""Weight mapping between ``lstmlab.LSTM`` and ``torch.nn.LSTM``.

torch's gate layout is ``i, f, g, o`` with two biases (b_ih + b_hh); ours is ``z, i, f, o``
(z = the block input, torch's g) with one bias, their sum. ``torch.nn.LSTM`` can express one cell
per block, all three gates, no peepholes, no full gate recurrence / mLSTM / F-LSTM / G-LSTM, tanh
activations and gate sharpness 1: the variant ``NP``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


def from_torch(cls, lstm: nn.LSTM, **kwargs: Any):
    """An ``lstmlab.LSTM`` (variant NP, α = 1) computing exactly what ``lstm`` computes.

    torch's gate layout is ``i, f, g, o`` with two biases (b_ih + b_hh); ours is
    ``z, i, f, o`` with one bias (their sum)."""
    if not isinstance(lstm, nn.LSTM):
        raise ValueError(f"from_torch expects a torch.nn.LSTM, got {type(lstm).__name__}")
    if lstm.dropout:
        raise ValueError(
            f"from_torch: lstmlab.LSTM has no dropout between layers, got dropout={lstm.dropout}"
        )
    p = next(lstm.parameters())
    model = cls(
        lstm.input_size,
        lstm.hidden_size,
        lstm.num_layers,
        variant="NP",
        proj_size=lstm.proj_size or None,
        bidirectional=lstm.bidirectional,
        batch_first=lstm.batch_first,
        bias=lstm.bias,
        dtype=p.dtype,
        device=p.device,
        **kwargs,
    )
    H = lstm.hidden_size
    perm = torch.cat(
        [torch.arange(2 * H, 3 * H), torch.arange(0, 2 * H), torch.arange(3 * H, 4 * H)]
    )
    with torch.no_grad():
        for k, cell in enumerate(model.cells):
            sfx = f"l{k // model.num_directions}" + ("_reverse" if k % model.num_directions else "")
            cell.W.copy_(getattr(lstm, f"weight_ih_{sfx}")[perm])
            cell.R.copy_(getattr(lstm, f"weight_hh_{sfx}")[perm])
            if lstm.bias:
                b = getattr(lstm, f"bias_ih_{sfx}") + getattr(lstm, f"bias_hh_{sfx}")
                cell.b.copy_(b[perm])
            if lstm.proj_size:
                cell.W_p.copy_(getattr(lstm, f"weight_hr_{sfx}"))
    return model


def to_torch(self) -> nn.LSTM:
    """The equivalent ``torch.nn.LSTM``; only for configurations it can express."""
    sw = self.switches
    expressible = (
        self.cells_per_block == 1
        and sw["input_gate"]
        and sw["forget_gate"]
        and sw["output_gate"]
        and not sw["coupled_input_forget"]
        and not sw["peepholes"]
        and not sw["full_gate_recurrence"]
        and not sw["multiplicative"]
        and sw["factorization_rank"] is None
        and sw["groups"] == 1
        and sw["input_activation"] == "tanh"
        and sw["output_activation"] == "tanh"
        and all(math.isclose(a, 1.0) for a in self.alpha().values())
    )
    if not expressible:
        raise ValueError(
            "to_torch: torch.nn.LSTM can only express one cell per block, all three gates, "
            "no peepholes, no full gate recurrence / mLSTM / F-LSTM / G-LSTM, tanh "
            "activations and gate sharpness 1 (variant 'NP'); this model is "
            f"variant={self.variant!r} with switches {self.switches}"
        )
    p = next(self.parameters())
    lstm = nn.LSTM(
        self.input_size,
        self.hidden_size,
        self.num_layers,
        bias=self.bias,
        batch_first=self.batch_first,
        bidirectional=self.bidirectional,
        proj_size=self.proj_size or 0,
        dtype=p.dtype,
        device=p.device,
    )
    H = self.hidden_size
    # ours z|i|f|o -> torch i|f|g|o
    perm = torch.cat([torch.arange(H, 3 * H), torch.arange(0, H), torch.arange(3 * H, 4 * H)])
    with torch.no_grad():
        for k, cell in enumerate(self.cells):
            sfx = f"l{k // self.num_directions}" + ("_reverse" if k % self.num_directions else "")
            getattr(lstm, f"weight_ih_{sfx}").copy_(cell.W[perm])
            getattr(lstm, f"weight_hh_{sfx}").copy_(cell.R[perm])
            if self.bias:
                getattr(lstm, f"bias_ih_{sfx}").copy_(cell.b[perm])
                getattr(lstm, f"bias_hh_{sfx}").zero_()
            if self.proj_size:
                getattr(lstm, f"weight_hr_{sfx}").copy_(cell.W_p)
    return lstm
