"""The long time-lag problems in the convention of Martens & Sutskever (2011).

Windows follow Sutskever's released HF-RNN generators, written for T = 100 and scaled by
T/100; here ``pct(p) = (p * T) // 100`` in integer arithmetic. The released code draws a read
index T_b from a window and puts the answer *at* T_b, so a sequence has L = T_b + 1 steps and
is read at its last step L − 1 = T_b (201–220 steps at T = 200).

adding / multiplication / xor (two inputs: value, marker)
    value U[0, 1] (xor: independent random bits) at every step; marker -1 at step 0 and at
    T_b − 3 = L − 4 ("a prediction is coming"), +1 at the two operands A and B, 0 elsewhere.
    adding, multiplication: T_b in [T, pct(110)), A in [pct(1), pct(10)), B in [pct(10), pct(50))
    xor:                    T_b in [pct(50), pct(55)), A as above,      B in [pct(15), pct(25))
    targets x + y, x · y, x XOR y. The xor operand bits are drawn independently, as released
    (so the four (x, y) pairs are balanced only in expectation).
temporal order (8 one-hot symbols: 0–3 distractors a b c d, 4 = X, 5 = Y, 6 = E, 7 = B)
    T_b in [T, pct(110)); B (start) at step 0, random distractors elsewhere except the 2 (or 3)
    relevant symbols, each X or Y, at positions
    2-bit: [pct(1), pct(10)], [pct(40), pct(50)];  3-bit: [pct(1), pct(10)], [pct(30),
    pct(40)], [pct(50), pct(60)] — upper ends *included*, as in the released code.
    2-bit: the trigger E at T_b − 1 and a random distractor at the read step T_b;
           class = 2·s_A + s_B (X = 0, Y = 1: the earliest symbol most significant).
    3-bit: the trigger E at the read step T_b;
           class = 4·s_C + 2·s_B + s_A (the *last* symbol most significant).
    Classes are balanced (the released code cycles through them with the row index).
random permutation (``symbols`` one-hot, default 100)
    length T; step 0 shows symbol 0 or 1 (balanced), steps 1..T-1 random symbols from
    2..symbols-1. Target at every step: the next symbol; at the last step: the first symbol.
    Trained on every step (as released); only the last step decides whether it is wrong.
noiseless memorization (alphabet K, n symbols; inputs K + 2 one-hot, outputs K + 1)
    length T; steps 0..n-1 show the n symbols, step T - n - 1 the trigger (K + 1), every other
    step blank (K). Target: blank at every step but the last n, which replay the symbols.
    With ``replay_only`` the non-replay targets are IGNORE (-100) instead of blank (the
    released code's ``only_predict_the_memory_bits``). When all K^n patterns fit in the split
    (5 of 2: 32 patterns) row i shows pattern i mod K^n, written in base K with the most
    significant digit first, so every block of K^n rows holds each pattern once (the released
    code's batch of 32); otherwise (10 of 5) the symbols are random.

Where the released code is itself broken we follow its evident intent: its 3-bit temporal
order reads undefined attributes (``self.v``, ``self.o``), and its memorization input/output
widths (K) leave no room for the blank and trigger symbols it writes (K + 2 inputs, K + 1
outputs here). Lower bound pct(1) is raised to 1 so an operand never lands on the start marker
(the released code can put it there when T < 100).
"""

from __future__ import annotations

import numpy as np
import torch

from lstmlab.tasks.metrics import IGNORE
from lstmlab.tasks.rng import Stream

__all__ = [
    "ms_windows",
    "generate_op",
    "generate_temporal",
    "generate_permutation",
    "generate_memorization",
    "TEMPORAL_SYMBOLS",
]

TEMPORAL_SYMBOLS = 8  # a b c d X Y E B


def ms_windows(problem: str, T: int, bits: int = 2) -> dict[str, tuple[int, int]]:
    """Half-open [lo, hi) ranges of the read index T_b (``"read"``), of the length
    L = T_b + 1 (``"length"``) and of each operand position."""

    def pct(p: int) -> int:
        return (p * T) // 100

    def read(lo: int, hi: int) -> dict[str, tuple[int, int]]:
        return {"read": (lo, hi), "length": (lo + 1, hi + 1)}

    a = (max(1, pct(1)), pct(10))
    if problem in ("adding", "multiplication"):
        return {**read(T, pct(110)), "A": a, "B": (pct(10), pct(50))}
    if problem == "xor":
        return {**read(pct(50), pct(55)), "A": a, "B": (pct(15), pct(25))}
    if problem == "temporal_order":
        inc = {"A": (a[0], a[1] + 1)}
        if bits == 2:
            inc["B"] = (pct(40), pct(50) + 1)
        else:
            inc["B"] = (pct(30), pct(40) + 1)
            inc["C"] = (pct(50), pct(60) + 1)
        return {**read(T, pct(110)), **inc}
    raise ValueError(f"no M&S windows for {problem!r}")


def _np_dtype(dtype: torch.dtype) -> np.dtype:
    return torch.empty((), dtype=dtype).numpy().dtype


def generate_op(problem: str, n: int, T: int, stream: Stream, dtype: torch.dtype = torch.float32):
    """adding / multiplication / xor: inputs (n, L_max, 2), targets (n, 1), lengths (n,)."""
    w = ms_windows(problem, T)
    rows = np.arange(n)
    L_max = w["length"][1] - 1
    lengths = stream.integers(*w["length"], n)
    if problem == "xor":
        values = (stream.uniform((n, L_max)) < 0.5).astype(np.float64)
    else:
        values = stream.uniform((n, L_max))
    pa = stream.integers(*w["A"], n)
    pb = stream.integers(*w["B"], n)

    markers = np.zeros((n, L_max))
    markers[:, 0] = -1.0
    markers[rows, lengths - 4] = -1.0
    markers[rows, pa] = 1.0
    markers[rows, pb] = 1.0

    pad = np.arange(L_max)[None, :] >= lengths[:, None]
    values[pad] = 0.0
    markers[pad] = 0.0
    values = values.astype(_np_dtype(dtype)).astype(np.float64)

    x, y = values[rows, pa], values[rows, pb]
    if problem == "adding":
        target = x + y
    elif problem == "multiplication":
        target = x * y
    else:
        target = np.logical_xor(x > 0.5, y > 0.5).astype(np.float64)
    inputs = torch.from_numpy(np.stack([values, markers], axis=-1)).to(dtype)
    return inputs, torch.from_numpy(target[:, None]).to(dtype), torch.from_numpy(lengths)


def generate_temporal(bits: int, n: int, T: int, stream: Stream):
    """Temporal order: symbol indices (n, L_max) (-1 pad), classes (n,), lengths (n,)."""
    w = ms_windows("temporal_order", T, bits)
    rows = np.arange(n)
    L_max = w["length"][1] - 1
    lengths = stream.integers(*w["length"], n)
    symbols = stream.integers(0, 4, (n, L_max))
    symbols[:, 0] = 7  # B: start
    # E: the trigger, one step before the read step (2-bit; the read step keeps a random
    # distractor) or at the read step (3-bit), as released
    symbols[rows, lengths - (2 if bits == 2 else 1)] = 6
    classes = stream.balanced(n, 2**bits)
    for i, key in enumerate("ABC"[:bits]):
        pos = stream.integers(*w[key], n)
        # 2-bit: the earliest symbol is the most significant bit; 3-bit: the last one
        weight = bits - 1 - i if bits == 2 else i
        symbols[rows, pos] = 4 + ((classes >> weight) & 1)
    symbols[np.arange(L_max)[None, :] >= lengths[:, None]] = -1
    return torch.from_numpy(symbols), torch.from_numpy(classes), torch.from_numpy(lengths)


def generate_permutation(n: int, T: int, symbols: int, stream: Stream):
    """Random permutation: indices (n, T), next-symbol targets (n, T), lengths (n,) = T."""
    seq = np.empty((n, T), dtype=np.int64)
    seq[:, 0] = stream.balanced(n, 2)
    seq[:, 1:] = stream.integers(2, symbols, (n, T - 1))
    targets = np.empty_like(seq)
    targets[:, :-1] = seq[:, 1:]
    targets[:, -1] = seq[:, 0]
    lengths = np.full(n, T, dtype=np.int64)
    return torch.from_numpy(seq), torch.from_numpy(targets), torch.from_numpy(lengths)


def generate_memorization(
    n: int, T: int, n_symbols: int, alphabet: int, stream: Stream, replay_only: bool = False
):
    """Noiseless memorization: indices (n, T), targets (n, T), lengths (n,) = T."""
    blank, trigger = alphabet, alphabet + 1
    patterns = alphabet**n_symbols
    if patterns <= n:  # every block of K^n rows shows each pattern once, as released (5 of 2)
        code = np.arange(n) % patterns
        digits = alphabet ** np.arange(n_symbols - 1, -1, -1)  # most significant first
        data = (code[:, None] // digits[None, :]) % alphabet
    else:
        data = stream.integers(0, alphabet, (n, n_symbols))
    seq = np.full((n, T), blank, dtype=np.int64)
    seq[:, :n_symbols] = data
    seq[:, T - n_symbols - 1] = trigger
    targets = np.full((n, T), IGNORE if replay_only else blank, dtype=np.int64)
    targets[:, T - n_symbols :] = data
    lengths = np.full(n, T, dtype=np.int64)
    return torch.from_numpy(seq), torch.from_numpy(targets), torch.from_numpy(lengths)
