"""Named LSTM variants (SPEC S1; Greff et al., seed 002) as sets of switches, and gate sharpness.

A variant is nothing but defaults for the individual switches of ``lstmlab.LSTM``; any switch
given explicitly overrides the variant, so ``LSTM(..., variant="vanilla", peepholes=False)`` is
the NP variant. ``resolve_switches`` returns the final switch set, validated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from lstmlab.nn.activations import check_activation
from lstmlab.schedules import as_schedule

GATES = ("i", "f", "o")

# Each named variant = the switches it changes from vanilla.
_VANILLA: dict[str, Any] = dict(
    input_gate=True,
    forget_gate=True,
    output_gate=True,
    input_activation="tanh",
    output_activation="tanh",
    peepholes=True,
    coupled_input_forget=False,
    full_gate_recurrence=False,
    multiplicative=False,
    factorization_rank=None,
    groups=1,
)

VARIANTS: dict[str, dict[str, Any]] = {
    "vanilla": {},
    "NIG": dict(input_gate=False),
    "NFG": dict(forget_gate=False),
    "NOG": dict(output_gate=False),
    "NIAF": dict(input_activation="identity"),
    "NOAF": dict(output_activation="identity"),
    "NP": dict(peepholes=False),
    "CIFG": dict(coupled_input_forget=True),
    "FGR": dict(full_gate_recurrence=True),
    # Hochreiter & Schmidhuber 1997 as trained by Lyu & Zhu (seed 000): no forget gate,
    # peepholes, gates see the previous gate activations, g ∈ [-2, 2], h ∈ [-1, 1].
    "lstm97": dict(
        forget_gate=False,
        full_gate_recurrence=True,
        input_activation="bipolar2",
        output_activation="bipolar1",
    ),
    # Krause et al. 2016: every R·y_{t-1} becomes R·m_t, m_t = (W_mx x_t) ⊙ (W_mh y_{t-1}).
    "mLSTM": dict(multiplicative=True),
    # Kuchaiev & Ginsburg 2017 (seed 004).
    "F-LSTM": dict(factorization_rank="auto"),
    "G-LSTM": dict(groups=2),
}

SWITCHES = tuple(_VANILLA)


def resolve_switches(variant: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Vanilla defaults, then the variant's changes, then explicit (non-None) overrides."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {list(VARIANTS)}, got {variant!r}")
    sw = dict(_VANILLA)
    sw.update(VARIANTS[variant])
    for key, value in overrides.items():
        if key not in sw:
            raise ValueError(f"unknown LSTM switch {key!r}; valid switches: {list(SWITCHES)}")
        if value is not None:
            sw[key] = value
    check_activation(sw["input_activation"], "input_activation")
    check_activation(sw["output_activation"], "output_activation")
    if sw["coupled_input_forget"]:
        if not sw["input_gate"]:
            raise ValueError(
                "coupled_input_forget=True needs the input gate (f = 1 - i); "
                "it cannot be combined with input_gate=False"
            )
        sw["forget_gate"] = False  # f is not a gate of its own any more
    groups = sw["groups"]
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"groups must be an integer >= 1, got {groups!r}")
    rank = sw["factorization_rank"]
    if rank is not None and rank != "auto":
        if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
            raise ValueError(f"factorization_rank must be an integer >= 1, got {rank!r}")
    n_special = sum([bool(sw["multiplicative"]), rank is not None, groups > 1])
    if n_special > 1:
        raise ValueError(
            "multiplicative (mLSTM), factorization_rank (F-LSTM) and groups > 1 (G-LSTM) "
            "change the same recurrent map; choose at most one of them"
        )
    return sw


@dataclass(frozen=True)
class CellSpec:
    """Static description of one layer-direction of an LSTM (what the engines need to know).

    Pre-activation layout (the rows of W, R and b), in this order:
        z (hidden_size) | i (blocks) | f (blocks) | o (blocks)
    where only the gates that have parameters appear (``gates``): NIG drops i, NFG and CIFG
    drop f, NOG drops o. q (full gate recurrence) is the vector of the same gates' activations.
    """

    input_size: int
    hidden_size: int
    cells_per_block: int
    recurrent_size: int  # size of y_t: proj_size if projecting, else hidden_size
    gates: tuple[str, ...]
    coupled: bool  # CIFG: f = 1 - i
    peepholes: bool
    fgr: bool
    g: str
    h: str
    multiplicative_size: int | None  # mLSTM: size of m_t
    factorization_rank: int | None  # F-LSTM
    groups: int  # G-LSTM
    proj_size: int | None
    bias: bool

    @property
    def blocks(self) -> int:
        return self.hidden_size // self.cells_per_block

    @property
    def n_pre(self) -> int:
        """D: number of pre-activation rows."""
        return self.hidden_size + len(self.gates) * self.blocks

    @property
    def n_q(self) -> int:
        """Size of q_t (gate activations) for full gate recurrence."""
        return len(self.gates) * self.blocks

    def gate_slice(self, gate: str) -> slice:
        """Rows of gate ``gate`` in the pre-activation layout."""
        k = self.gates.index(gate)
        start = self.hidden_size + k * self.blocks
        return slice(start, start + self.blocks)

    def q_slice(self, gate: str) -> slice:
        k = self.gates.index(gate)
        return slice(k * self.blocks, (k + 1) * self.blocks)


class GateSharpness:
    """Gate sharpness α per gate (seed 000 Sec. 4): a constant, one per gate, or schedules.

    Accepts a number (all gates), a schedule, or a dict ``{"i": …, "f": …, "o": …}`` whose
    values are numbers or schedules (missing gates default to 1). ``at(epoch)`` gives the
    floats in force at that epoch ("gradually increase α by training epochs").
    """

    def __init__(self, value: Any = 1.0):
        if isinstance(value, dict) and set(value) - set(GATES) and "type" not in value:
            raise ValueError(
                f"gate_sharpness keys must be among {list(GATES)}, got {sorted(value)}"
            )
        if isinstance(value, dict) and "type" not in value:
            self.schedules = {g: as_schedule(value.get(g, 1.0)) for g in GATES}
        else:
            try:
                s = as_schedule(value)
            except ValueError as err:
                raise ValueError(f"gate_sharpness: {err}") from None
            self.schedules = {g: s for g in GATES}
        self.at(0)  # validate the starting values

    def at(self, epoch: int) -> dict[str, float]:
        out = {}
        for g, s in self.schedules.items():
            a = float(s(epoch))
            if not (math.isfinite(a) and a > 0):
                raise ValueError(
                    f"gate_sharpness for gate {g!r} must be > 0 and finite, got {a!r} "
                    f"at epoch {epoch}"
                )
            out[g] = a
        return out

    def to_config(self) -> Any:
        specs = {}
        for g, s in self.schedules.items():
            specs[g] = s.value if getattr(s, "kind", "") == "constant" else s.to_dict()
        if len({repr(v) for v in specs.values()}) == 1:
            return specs["i"]
        return specs

    def __repr__(self) -> str:
        return f"GateSharpness({self.to_config()!r})"
