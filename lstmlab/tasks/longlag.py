"""Long time-lag tasks (SPEC S4.1) as ``Task`` objects, in both conventions.

Generators live in ``longlag_1997`` and ``longlag_ms2011``; this module checks options, draws
each split from its own ``Stream(seed, problem, convention, split)`` (so train, valid and test
never share a stream) and attaches output type, read mode and success test.

Output units (the loss is the model's; docs/design.md):
    1997 adding / multiplication   "sigmoid" (a logistic output unit with squared error, as in
                                   H&S 1997 and seed 000's code; targets lie in [0, 1])
    M&S adding / multiplication    "linear" + squared loss (targets up to 2)
    M&S xor                        "bernoulli" (sigmoid + cross-entropy)
    temporal order, permutation,   "softmax"
    memorization
``output=`` overrides the unit where another one fits the targets.
"""

from __future__ import annotations

import dataclasses

import torch

from lstmlab.tasks.base import Split, Task
from lstmlab.tasks.longlag_1997 import generate_1997, min_T_1997
from lstmlab.tasks.longlag_ms2011 import (
    TEMPORAL_SYMBOLS,
    generate_memorization,
    generate_op,
    generate_permutation,
    generate_temporal,
)
from lstmlab.tasks.metrics import BinaryLast, ClassEvery, ClassLast, RealLast
from lstmlab.tasks.rng import Stream

__all__ = ["CONVENTIONS", "LONGLAG", "make_longlag"]

CONVENTIONS = ("1997", "ms2011")
LONGLAG = (
    "adding",
    "multiplication",
    "xor",
    "temporal_order",
    "permutation",
    "memorization",
)
_MIN_T_MS = 20
_DEFAULT_OUTPUT = {
    ("adding", "1997"): "sigmoid",
    ("multiplication", "1997"): "sigmoid",
    ("adding", "ms2011"): "linear",
    ("multiplication", "ms2011"): "linear",
    ("xor", "ms2011"): "bernoulli",
    ("temporal_order", "ms2011"): "softmax",
    ("permutation", "ms2011"): "softmax",
    ("memorization", "ms2011"): "softmax",
}


def _check_int(name: str, value, low: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def make_longlag(
    problem: str,
    *,
    convention: str | None = None,
    T: int | None = None,
    n_train: int = 10_000,
    n_valid: int = 0,
    n_test: int | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    output: str | None = None,
    bits: int = 2,
    symbols: int = 100,
    n_symbols: int = 5,
    alphabet: int = 2,
    replay_only: bool = False,
    rule: str | None = None,
    max_wrong: int = 0,
    fresh: bool = False,
) -> Task:
    """Build a long time-lag task.

    problem      one of LONGLAG
    convention   "1997" or "ms2011"; required for adding and multiplication (the two
                 conventions disagree), only "ms2011" exists for the others
    T            minimal length (1997) / scale parameter (M&S); default 100 (1997), 200 (M&S)
    n_train, n_valid, n_test   sequences per split (n_valid 0: no valid split); n_test default
                 2560 (1997, the paper's test set) or 10,000 (M&S, 10 batches of 1,000)
    seed         non-negative integer; each split has its own stream
    output       override the output unit (see module docstring)
    bits         temporal order: 2 or 3
    symbols      random permutation: alphabet size (default 100)
    n_symbols, alphabet   memorization: "5 of 2" (default) or "10 of 5"
    replay_only  memorization: score only the replay steps (others get target IGNORE = -100)
    rule         success test for real-valued targets: "1997", "seed000" or "ms2011"
                 (default: the convention's)
    max_wrong    1997 rule: wrong sequences allowed (0; Exp. 5's n_seq variants allow more)
    fresh        train every minibatch on newly generated sequences (minibatch k: its own
                 stream, so a resumed run draws the same ones), as M&S's released code draws
                 its batches afresh at every HF step; n_train is then the size of an "epoch"
    """
    if problem not in LONGLAG:
        raise ValueError(f"unknown long time-lag problem {problem!r}; valid: {', '.join(LONGLAG)}")
    if problem in ("adding", "multiplication"):
        if convention not in CONVENTIONS:
            raise ValueError(
                f"{problem} needs convention='1997' or 'ms2011' (they disagree on lengths, "
                f"markers, values and targets; see docs/tasks.md), got {convention!r}"
            )
    else:
        if convention not in (None, "ms2011"):
            raise ValueError(f"{problem} exists only in convention 'ms2011', got {convention!r}")
        convention = "ms2011"
    if T is None:
        T = 100 if convention == "1997" else 200
    min_T = min_T_1997 if convention == "1997" else _MIN_T_MS
    if problem == "memorization":
        min_T = max(min_T, 2 * n_symbols + 2)
    _check_int("T", T, min_T)
    _check_int("n_train", n_train, 1)
    _check_int("n_valid", n_valid, 0)
    if n_test is None:
        n_test = 2560 if convention == "1997" else 10_000
    _check_int("n_test", n_test, 1)
    _check_int("seed", seed, 0)
    if bits not in (2, 3):
        raise ValueError(f"bits must be 2 or 3 (temporal order), got {bits!r}")
    _check_int("symbols", symbols, 3)
    _check_int("n_symbols", n_symbols, 1)
    _check_int("alphabet", alphabet, 2)
    if not isinstance(fresh, bool):
        raise ValueError(f"fresh must be true or false, got {fresh!r}")

    if output is not None:
        allowed = (
            ("sigmoid", "linear")
            if problem in ("adding", "multiplication")
            else (_DEFAULT_OUTPUT[(problem, convention)],)
        )
        if output not in allowed:
            raise ValueError(f"{problem} output must be one of {allowed}, got {output!r}")
        if output == "sigmoid" and convention == "ms2011" and problem == "adding":
            raise ValueError("output='sigmoid' cannot fit M&S adding targets, which reach 2")
    sizes = {"train": n_train, "valid": n_valid, "test": n_test}
    name = f"{problem}/{convention}"
    info = {
        "problem": problem,
        "convention": convention,
        "T": T,
        "seed": seed,
        "sizes": sizes,
        "rng": "PCG64 raw words via lstmlab.tasks.rng.Stream",
    }
    key = (problem, convention)

    def stream(split: str) -> Stream:
        return Stream(seed, *key, split)

    def generate(split: str, n: int, s: Stream) -> Split:
        if problem in ("adding", "multiplication", "xor"):
            if convention == "1997":
                x, y, L = generate_1997(problem, n, T, s, dtype)
            else:
                x, y, L = generate_op(problem, n, T, s, dtype)
            return Split(split, x, y, L)
        if problem == "temporal_order":
            x, y, L = generate_temporal(bits, n, T, s)
            return Split(split, x, y, L, one_hot=TEMPORAL_SYMBOLS)
        if problem == "permutation":
            x, y, L = generate_permutation(n, T, symbols, s)
            return Split(split, x, y, L, one_hot=symbols, per_step=True)
        x, y, L = generate_memorization(n, T, n_symbols, alphabet, s, replay_only)
        return Split(split, x, y, L, one_hot=alphabet + 2, per_step=True)

    def build(split: str):
        return generate(split, sizes[split], stream(split)) if sizes[split] else None

    def draw(k: int, n: int) -> Split:  # fresh training sequences, minibatch k's own stream
        return generate("train", n, Stream(seed, *key, "train", "fresh", k))

    train, valid, test = build("train"), build("valid"), build("test")
    if fresh:
        train = dataclasses.replace(train, draw=draw)
        info["fresh"] = True

    if problem in ("adding", "multiplication"):
        default_out = "sigmoid" if convention == "1997" else "linear"
        rule = rule or convention
        scorer = RealLast(rule, threshold=0.04, max_wrong=max_wrong)
        in_size, out_size, read = 2, 1, "last"
        info["rule"] = rule
    elif problem == "xor":
        default_out, scorer, in_size, out_size, read = "bernoulli", BinaryLast(), 2, 1, "last"
    elif problem == "temporal_order":
        default_out, scorer, read = "softmax", ClassLast(0.01), "last"
        in_size, out_size = TEMPORAL_SYMBOLS, 2**bits
        info["bits"] = bits
        name = f"temporal_order_{bits}bit/ms2011"
    elif problem == "permutation":
        default_out, scorer, read = "softmax", ClassEvery("last"), "every"
        in_size = out_size = symbols
        info["symbols"] = symbols
    else:
        default_out, scorer, read = "softmax", ClassEvery("all"), "every"
        in_size, out_size = alphabet + 2, alphabet + 1
        info.update(n_symbols=n_symbols, alphabet=alphabet, replay_only=replay_only)
        name = f"memorization_{n_symbols}of{alphabet}/ms2011"
    return Task(
        name=name,
        train=train,
        valid=valid,
        test=test,
        input_size=in_size,
        output_size=out_size,
        output=output or default_out,
        read=read,
        scorer=scorer,
        info=info,
    )
