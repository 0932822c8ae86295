"""Adding and multiplication in the 1997 convention (Hochreiter & Schmidhuber 1997, Exp. 4–5).

Each step is a pair (value, marker), marker in {-1, 0, 1}:

* length L uniform on [T, T + T//10] (both ends included);
* X1 is one of the first 10 pairs; X2 is one of the first T//2 - 1 pairs *still unmarked*
  (so X2 lies in [0, T//2 - 1] and never on X1); both get marker 1;
* the first and the last pair get marker -1 unless marked; every other marker is 0;
* adding: values U[-1, 1], target 0.5 + (X1 + X2) / 4; if the first pair is marked its value
  is set to 0 (the paper's "X1 = 0");
* multiplication: values U[0, 1], target X1 · X2; if the first pair is marked its value is set
  to 1 (the paper's "X1 = 1");
* only the last step has a target; a sequence is wrong when |error| >= 0.04.

Reading of the first-pair rule: the paper names X1 because only X1's window (the first 10
pairs) is "rare"ly at position 0, but X2's window includes position 0 as well; we apply the
rule to the first pair whichever operand marks it, so the target stays a function of the
visible inputs (docs/tasks.md). Values are rounded to the storage dtype *before* the target
is computed, so targets recomputed from the stored inputs agree to rounding of the target.
"""

from __future__ import annotations

import numpy as np
import torch

from lstmlab.tasks.rng import Stream

__all__ = ["generate_1997", "min_T_1997"]

min_T_1997 = 20  # X1's window (10 pairs) must fit before the last pair, with room for X2


def generate_1997(
    problem: str, n: int, T: int, stream: Stream, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` sequences of ``problem`` ("adding" or "multiplication").

    Returns inputs (n, T + T//10, 2) (value, marker), zero-padded; targets (n, 1); lengths (n,).
    """
    rows = np.arange(n)
    L_max = T + T // 10
    lengths = stream.integers(T, L_max + 1, n)

    low = -1.0 if problem == "adding" else 0.0
    values = stream.uniform((n, L_max), low, 1.0)
    p1 = stream.integers(0, 10, n)  # X1: one of the first 10 pairs
    r = stream.integers(0, T // 2 - 1, n)  # X2: the r-th of the still-unmarked pairs …
    p2 = r + (r >= p1)  # … skipping X1's position

    markers = np.zeros((n, L_max))
    markers[:, 0] = -1.0
    markers[rows, lengths - 1] = -1.0
    markers[rows, p1] = 1.0
    markers[rows, p2] = 1.0

    first_marked = (p1 == 0) | (p2 == 0)
    values[first_marked, 0] = 0.0 if problem == "adding" else 1.0

    pad = np.arange(L_max)[None, :] >= lengths[:, None]
    values[pad] = 0.0
    markers[pad] = 0.0
    # round to the storage precision first, so the target is exact for what is stored
    np_dtype = torch.empty((), dtype=dtype).numpy().dtype
    values = values.astype(np_dtype).astype(np.float64)

    x1, x2 = values[rows, p1], values[rows, p2]
    target = 0.5 + (x1 + x2) / 4.0 if problem == "adding" else x1 * x2

    inputs = torch.from_numpy(np.stack([values, markers], axis=-1)).to(dtype)
    targets = torch.from_numpy(target[:, None]).to(dtype)
    return inputs, targets, torch.from_numpy(lengths)
