"""The reference engine: the cell's plain ``step`` looped over time, differentiated by autograd.

It is the oracle for every gradient test and the fallback for anything the fast engine lacks
(forward-mode AD, ``torch.func`` transforms, double backward). Padding is handled the obvious
way, independently of the fast engine's sorting: at a padded step the state is carried over
unchanged (``torch.where``) and the output is zero.
"""

from __future__ import annotations

import torch
from torch import Tensor


def run(cell, x: Tensor, lengths: Tensor | None, h0: Tensor, c0: Tensor, alpha: dict[str, float]):
    """x (T, B, I) -> Y (T, B, Hr), C (T, B, H), h_n (B, Hr), c_n (B, H)."""
    T, B, _ = x.shape
    q0 = x.new_zeros(B, cell.spec.n_q)
    state = (h0, c0, q0)
    ys, cs = [], []
    for t in range(T):
        y, new = cell.step(x[t], state, alpha)
        if lengths is not None:
            alive = (lengths > t).unsqueeze(1)  # (B, 1)
            new = tuple(torch.where(alive, a, b) for a, b in zip(new, state, strict=True))
            y = torch.where(alive, y, torch.zeros_like(y))
            c_out = torch.where(alive, new[1], torch.zeros_like(new[1]))
        else:
            c_out = new[1]
        state = new
        ys.append(y)
        cs.append(c_out)
    return torch.stack(ys), torch.stack(cs), state[0], state[1]
