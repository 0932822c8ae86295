"""Parameter blocks of an LSTM network and its gates' saturation: what gate-aware damping needs.

Seed 000 (Sec. 6) conjectures that Hessian-free converges better near the optimum with "a special
damping scheme taking into consideration LSTM's layer-wise structure with gate functionality".
Hessian-free (``optim/hf.py``) can damp each block of parameters by its own λ; this module says
which flat parameter belongs to which block, and how saturated each gate is on a batch.
Written by hand: it is a reading of the project's own parameter layout.

Blocks. Every parameter of an LSTM layer-direction belongs to one *kind*:

    cell      the block-input rows z of W, R, b (F-LSTM: of W2; G-LSTM: of the groups' rows)
    input, forget, output
              the gate's rows of W, R, b (and of Q with full gate recurrence, whose rows are
              the gates' too)
    peephole  the peephole weights P_i, P_f, P_o (feeding the gates from the cells)
    other     weights not owned by one pre-activation row: F-LSTM's W1, mLSTM's W_mx / W_mh,
              the projection W_p

and everything outside the LSTM layers (the output layer, ``head``) is ``readout``.
``by="gate"`` makes one block per (layer-direction, kind); ``by="memory-block"`` splits the
cell, gate and peephole kinds further by memory block j (the cells of a block share its gates:
rows j·cpb … (j+1)·cpb − 1 of z, row j of each gate, row j of each peephole matrix).

Saturation. ``gate_saturation`` runs the network once with the cell's plain ``step`` and counts,
for each (layer-direction, gate, memory block), the fraction of valid (sample, step) pairs whose
gate activation v has min(v, 1 − v) < ε — a gate that is nearly always shut or open, where
σ_α'(a) = α v (1 − v) ≈ 0 and the Gauss–Newton curvature of its parameters vanishes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = [
    "BLOCKINGS",
    "KINDS",
    "ParameterBlocks",
    "parameter_blocks",
    "gate_saturation",
    "gate_saturation_counts",
    "block_saturation",
    "saturation_from_means",
    "record_gates",
    "valid_steps",
]

BLOCKINGS = ("gate", "memory-block")
KINDS = ("cell", "input", "forget", "output", "peephole", "other", "readout")
_GATE_KIND = {"i": "input", "f": "forget", "o": "output"}


@dataclass(frozen=True)
class ParameterBlocks:
    """A partition of the flat parameter vector (the order of ``model.parameters()``).

    names[k]: block k's name, e.g. ``"L0.forget"`` or ``"L0.forget.b1"`` (layer-direction 0,
    memory block 1) or ``"readout"``. index (P,) long: the block of every flat parameter.
    gate[k]: (layer-direction, gate letter, memory block or None) for gate and peephole blocks,
    None for the others — the key ``gate_saturation`` reports under.
    """

    names: tuple[str, ...]
    index: Tensor
    gate: tuple[tuple[int, str, int | None] | None, ...]

    def __len__(self) -> int:
        return len(self.names)

    def sizes(self) -> Tensor:
        """(K,) number of parameters in each block."""
        return torch.bincount(self.index, minlength=len(self.names))

    def expand(self, per_block: Tensor) -> Tensor:
        """(K,) one value per block -> (P,) that value at every parameter of the block."""
        return per_block[self.index]


def lstm_cells(model: nn.Module) -> list[nn.Module]:
    """The model's LSTM layer-directions (``LSTMCell`` modules) in parameter order."""
    from lstmlab.nn.lstm_cell import LSTMCell

    return [m for m in model.modules() if isinstance(m, LSTMCell)]


def _row_labels(cell: nn.Module, by: str) -> list[tuple[str, int | None]]:
    """(kind, memory block) of each pre-activation row z | i | f | o of one layer-direction."""
    s = cell.spec
    per_block = by == "memory-block"
    rows: list[tuple[str, int | None]] = [
        ("cell", r // s.cells_per_block if per_block else None) for r in range(s.hidden_size)
    ]
    for g in s.gates:
        rows += [(_GATE_KIND[g], j if per_block else None) for j in range(s.blocks)]
    return rows


def _q_labels(cell: nn.Module, by: str) -> list[tuple[str, int | None]]:
    """(kind, memory block) of each row of Q (the gates' rows in q's layout)."""
    s = cell.spec
    per_block = by == "memory-block"
    return [(_GATE_KIND[g], j if per_block else None) for g in s.gates for j in range(s.blocks)]


def _labels(cell: nn.Module, name: str, p: Tensor, by: str) -> list[tuple[str, int | None]]:
    """(kind, memory block) of every element of parameter ``name`` of one layer-direction,
    in flat (row-major) order."""
    s = cell.spec
    per_block = by == "memory-block"
    if name in ("W", "R", "b", "W2"):  # rows are pre-activation rows
        rows = _row_labels(cell, by)
        per_row = p.numel() // p.shape[0]
        return [lab for lab in rows for _ in range(per_row)]
    if name in ("Wg", "Rg"):  # (k, D/k, ·): element (j, d, ·) is flat group-major row j·D/k + d
        rows = _row_labels(cell, by)
        inverse = torch.empty_like(cell.group_rows)
        inverse[cell.group_rows] = torch.arange(cell.group_rows.numel())
        per_row = p.shape[2]
        return [rows[int(r)] for r in inverse for _ in range(per_row)]
    if name == "Q":
        rows = _q_labels(cell, by)
        return [lab for lab in rows for _ in range(p.shape[1])]
    if name.startswith("peep_"):  # (blocks, cells_per_block)
        return [
            ("peephole", j if per_block else None)
            for j in range(s.blocks)
            for _ in range(p.shape[1])
        ]
    return [("other", None)] * p.numel()


def parameter_blocks(model: nn.Module, by: str = "gate") -> ParameterBlocks:
    """The partition of ``model``'s trainable parameters into blocks (module docstring).

    Raises ValueError for a model without LSTM layers (its parameters have no gates to tell
    apart) and for an unknown ``by``.
    """
    if by not in BLOCKINGS:
        raise ValueError(f"blocks: unknown blocking {by!r}; valid: {', '.join(BLOCKINGS)}")
    cells = lstm_cells(model)
    if not cells:
        raise ValueError(
            "gate-aware damping needs a network of LSTM layers (cell = 'lstm'); "
            f"{type(model).__name__} has none"
        )
    owner = {id(p): (k, n) for k, c in enumerate(cells) for n, p in c.named_parameters()}
    names: dict[str, int] = {}
    gates: list[tuple[int, str, int | None] | None] = []
    index: list[int] = []

    def block(label: str, gate) -> int:
        if label not in names:
            names[label] = len(names)
            gates.append(gate)
        return names[label]

    letter = {v: k for k, v in _GATE_KIND.items()}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        if id(p) not in owner:
            index += [block("readout", None)] * p.numel()
            continue
        k, pname = owner[id(p)]
        gate_of_peep = pname.removeprefix("peep_") if pname.startswith("peep_") else None
        for kind, j in _labels(cells[k], pname, p, by):
            label = f"L{k}.{kind}" + ("" if j is None else f".b{j}")
            if kind == "peephole":
                label = f"L{k}.peephole_{gate_of_peep}" + ("" if j is None else f".b{j}")
                gate = (k, gate_of_peep, j)
            elif kind in letter:
                gate = (k, letter[kind], j)
            else:
                gate = None
            index.append(block(label, gate))
    return ParameterBlocks(tuple(names), torch.tensor(index, dtype=torch.long), tuple(gates))


@torch.no_grad()
def record_gates(model: nn.Module, inputs: Tensor, lengths: Tensor | None) -> dict[int, Tensor]:
    """Every gate activation of one forward pass: layer-direction k -> q (T, B, n_q), in q's
    layout (``CellSpec.q_slice``); steps past a sequence's length hold values to ignore.

    Runs the plain ``step`` (the model's engine is set to ``autograd`` for it and restored).
    ``inputs`` (B, T, I) batch-first as ``model`` takes them; ``lengths`` (B,) or None.
    """
    cells = lstm_cells(model)
    gates: dict[int, list[Tensor]] = {k: [] for k in range(len(cells))}
    originals = {}

    def recorder(k, cell):
        plain = cell.step

        def step(x, state, alpha):
            y, new = plain(x, state, alpha)
            gates[k].append(new[2])  # q_t: the gates' activations, (B, n_q)
            return y, new

        return step

    for k, cell in enumerate(cells):
        originals[k] = cell.__dict__.get("step")
        cell.step = recorder(k, cell)
    old_engine = getattr(model, "engine", None)
    try:
        if old_engine is not None:
            model.engine = "autograd"
        model(inputs, lengths)
    finally:
        if old_engine is not None:
            model.engine = old_engine
        for k, cell in enumerate(cells):
            if originals[k] is None:
                del cell.step
            else:
                cell.step = originals[k]
    return {k: torch.stack(q) for k, q in gates.items() if q and cells[k].spec.gates}


def valid_steps(inputs: Tensor, lengths: Tensor | None) -> Tensor:
    """(T, B) 1 at the steps inside each sequence, 0 past its length (``inputs`` (B, T, ·))."""
    T, B = inputs.shape[1], inputs.shape[0]
    if lengths is None:
        return torch.ones(T, B, dtype=inputs.dtype, device=inputs.device)
    t = torch.arange(T, device=inputs.device).unsqueeze(1)
    return (t < lengths.to(inputs.device).unsqueeze(0)).to(inputs.dtype)


def gate_saturation_counts(
    model: nn.Module, inputs: Tensor, lengths: Tensor | None, eps: float = 0.05
) -> tuple[dict[tuple[int, str], Tensor], float]:
    """Saturated gate activations counted: ((layer-direction k, gate) -> (blocks,) number of
    valid (sample, step) pairs with min(v, 1 − v) < ``eps``, number of valid pairs).

    Counts, not fractions, so that workers holding parts of a batch can add them.
    """
    if not 0 < eps < 0.5:
        raise ValueError(f"saturation threshold must be in (0, 0.5), got {eps!r}")
    cells = lstm_cells(model)
    valid = valid_steps(inputs, lengths)
    out: dict[tuple[int, str], Tensor] = {}
    for k, q in record_gates(model, inputs, lengths).items():
        hits = ((torch.minimum(q, 1 - q) < eps).to(q.dtype) * valid.unsqueeze(-1)).sum((0, 1))
        for g in cells[k].spec.gates:
            out[(k, g)] = hits[cells[k].spec.q_slice(g)]
    return out, float(valid.sum())


def gate_saturation(
    model: nn.Module, inputs: Tensor, lengths: Tensor | None, eps: float = 0.05
) -> dict[tuple[int, str], Tensor]:
    """Fraction of saturated gate activations: (layer-direction k, gate) -> (blocks,) in [0, 1]
    (``gate_saturation_counts`` divided by the number of valid steps)."""
    hits, valid = gate_saturation_counts(model, inputs, lengths, eps)
    return {key: h / max(valid, 1.0) for key, h in hits.items()}


def saturation_from_means(
    keys: list[tuple[int, str]], means: Tensor, model: nn.Module
) -> dict[tuple[int, str], Tensor]:
    """Fractions from the flat (hits of every key, valid steps) vector, of any common scale."""
    cells = lstm_cells(model)
    sizes = [cells[k].spec.blocks for k, _ in keys]
    parts = means[: sum(sizes)].split(sizes)
    valid = float(means[-1])
    return {
        key: part / valid if valid > 0 else part * 0 for key, part in zip(keys, parts, strict=True)
    }


def block_saturation(blocks: ParameterBlocks, saturation: dict[tuple[int, str], Tensor]) -> Tensor:
    """(K,) the saturation of the gate each block feeds (the mean over memory blocks for a
    ``by="gate"`` blocking); 0 for cell, other and readout blocks."""
    out = torch.zeros(len(blocks), dtype=torch.float64)
    for b, gate in enumerate(blocks.gate):
        if gate is None:
            continue
        k, g, j = gate
        frac = saturation.get((k, g))
        if frac is None:
            continue
        out[b] = float(frac.mean() if j is None else frac[j])
    return out
