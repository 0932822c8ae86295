"""Engines: how the recurrence of one LSTM layer-direction is run and differentiated (SPEC S2).

Every engine is a function ``run(cell, x, lengths, h0, c0, alpha) -> (Y, C, h_n, c_n)`` over
x (T, B, I); they share the cell's parameters, so a model can switch engine at any time.

| name               | what                                                          |
|--------------------|---------------------------------------------------------------|
| ``bptt``           | matrix-based full BPTT, hand-written backward (the default)    |
| ``autograd``       | the plain step loop differentiated by autograd (the oracle)    |
| ``rtrl``           | 1997 rule: truncated BPTT + RTRL sensitivities, whole batch    |
| ``rtrl-per-sample``| the same rule one sample at a time, as seed 000 says it must be |

Any name with the suffix ``:per-sample`` loops the batch one sample at a time (``lstmlab.LSTM``
does the looping; seed 000 Fig. 3(b)).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

# name -> (module of lstmlab.engines, function). Looked up when asked for, and defined before
# the engines are imported below: they import lstmlab.nn, which asks for get_engine while this
# package is still importing (``import lstmlab.engines`` as a program's first import).
_RUNNERS: dict[str, tuple[str, str]] = {
    "bptt": ("bptt", "run"),
    "autograd": ("autograd", "run"),
    "rtrl": ("rtrl", "run"),
    "rtrl-per-sample": ("rtrl", "run_per_sample"),
}

ENGINES = tuple(_RUNNERS)


def engine_names() -> list[str]:
    names = list(_RUNNERS)
    return names + [f"{n}:per-sample" for n in names if not n.endswith("per-sample")]


def get_engine(name: str) -> Callable:
    if not isinstance(name, str):
        raise ValueError(f"engine must be a string, one of {engine_names()}, got {name!r}")
    base = name[: -len(":per-sample")] if name.endswith(":per-sample") else name
    if base not in _RUNNERS:
        raise ValueError(f"engine must be one of {engine_names()}, got {name!r}")
    module, function = _RUNNERS[base]
    return getattr(importlib.import_module(f"lstmlab.engines.{module}"), function)


# (after get_engine: see above; imported for their public paths lstmlab.engines.bptt, …)
from lstmlab.engines import autograd, bptt, rtrl  # noqa: E402, F401
