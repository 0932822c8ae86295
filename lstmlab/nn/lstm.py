"""``lstmlab.LSTM``: the whole LSTM family of SPEC S1, called as ``torch.nn.LSTM`` is called.

Its parameters (``cells.k.W/R/b``, rows z|i|f|o, one bias) and defaults (variant "vanilla",
U(−0.1, 0.1)) are the family's own; the drop-in with torch's constructor, parameter names,
``state_dict`` and PackedSequence handling is ``lstmlab.TorchLSTM`` (``lstmlab.nn.dropin``).

    lstm = LSTM(input_size, hidden_size, num_layers=1, variant="vanilla", cells_per_block=1,
                gate_sharpness=1.0, proj_size=None, bidirectional=False, batch_first=False,
                engine="bptt")
    output, (h_n, c_n) = lstm(x, lengths=lengths)

x is (T, B, I) (or (B, T, I) with ``batch_first``), zero-padded when ``lengths`` (B,) is given;
output (T, B, D·Hr) is zero at padded steps; h_n (L·D, B, Hr) and c_n (L·D, B, H) are each
sequence's state at its last valid step (D = 2 if bidirectional, Hr = proj_size or hidden_size).
The reverse direction reads each sequence reversed within its own length.

A memory block's gates are shared by its ``cells_per_block`` cells (1997 LSTM); with one cell
per block this is the vanilla LSTM of Greff et al. Named variants (``variant=``) are defaults for
the individual switches (``input_gate``, ``forget_gate``, ``output_gate``, ``input_activation``,
``output_activation``, ``peepholes``, ``coupled_input_forget``, ``full_gate_recurrence``,
``multiplicative``, ``factorization_rank``, ``groups``), which override them when given.

Engines (``engine=``, same parameters and state_dict): ``"bptt"`` (hand-written matrix-based full
BPTT, the default), ``"autograd"`` (the plain step loop, the reference), ``"rtrl"`` (the 1997
rule: truncated BPTT + forward RTRL sensitivities, batched) and ``"rtrl-per-sample"``. Any engine
name with the suffix ``":per-sample"`` runs the batch one sample at a time (seed 000 Fig. 3(b)).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lstmlab.engines import get_engine
from lstmlab.nn.lstm_cell import INITS, LSTMCell
from lstmlab.nn.variants import CellSpec, GateSharpness, resolve_switches


def all_finite(x: Tensor) -> bool:
    """Whether every element of ``x`` is finite. A NaN or ±Inf anywhere makes the sum non-finite,
    so a finite sum settles it in one reduction (≈ 30× cheaper than ``isfinite(x).all()``);
    only a non-finite sum (which may also be overflow) needs the elementwise check."""
    x = x.detach()  # no graph for a check
    return bool(torch.isfinite(x.sum())) or bool(torch.isfinite(x).all())


__all__ = ["LSTM"]


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


class LSTM(nn.Module):
    """LSTM-family recurrent layers (see the module docstring for the interface)."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        variant: str = "vanilla",
        cells_per_block: int = 1,
        gate_sharpness: Any = 1.0,
        proj_size: int | None = None,
        bidirectional: bool = False,
        batch_first: bool = False,
        bias: bool = True,
        engine: str = "bptt",
        init: str = "uniform",
        init_scale: float | None = None,
        sparse_connections: int = 15,
        gate_bias: dict[str, float | Sequence[float]] | None = None,
        multiplicative_size: int | None = None,
        seed: int | None = None,
        dtype: torch.dtype | None = None,
        device=None,
        # individual switches (None = the variant's choice)
        input_gate: bool | None = None,
        forget_gate: bool | None = None,
        output_gate: bool | None = None,
        input_activation: str | None = None,
        output_activation: str | None = None,
        peepholes: bool | None = None,
        coupled_input_forget: bool | None = None,
        full_gate_recurrence: bool | None = None,
        multiplicative: bool | None = None,
        factorization_rank: int | None = None,
        groups: int | None = None,
    ):
        super().__init__()
        self.input_size = _positive_int("input_size", input_size)
        self.hidden_size = _positive_int("hidden_size", hidden_size)
        self.num_layers = _positive_int("num_layers", num_layers)
        self.cells_per_block = _positive_int("cells_per_block", cells_per_block)
        if hidden_size % cells_per_block:
            raise ValueError(
                f"hidden_size ({hidden_size}) must be divisible by cells_per_block "
                f"({cells_per_block}): the cells of a block share its gates"
            )
        if proj_size is not None:
            _positive_int("proj_size", proj_size)
        if multiplicative_size is not None:
            _positive_int("multiplicative_size", multiplicative_size)
        if init not in INITS:
            raise ValueError(f"init must be one of {list(INITS)}, got {init!r}")
        if dtype is not None and not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
        self.variant = variant
        self.switches = resolve_switches(
            variant,
            dict(
                input_gate=input_gate,
                forget_gate=forget_gate,
                output_gate=output_gate,
                input_activation=input_activation,
                output_activation=output_activation,
                peepholes=peepholes,
                coupled_input_forget=coupled_input_forget,
                full_gate_recurrence=full_gate_recurrence,
                multiplicative=multiplicative,
                factorization_rank=factorization_rank,
                groups=groups,
            ),
        )
        self.gate_sharpness = GateSharpness(gate_sharpness)
        # the epoch of the gate-sharpness schedule, kept in the state_dict as a plain tensor
        self.register_buffer("sharpness_epoch", torch.zeros((), dtype=torch.long))
        self.proj_size = proj_size
        self.bidirectional = bool(bidirectional)
        self.batch_first = bool(batch_first)
        self.bias = bool(bias)
        self.engine = engine
        self.check_finite = True
        sw = self.switches
        gates = tuple(
            g
            for g, on in (
                ("i", sw["input_gate"]),
                ("f", sw["forget_gate"]),
                ("o", sw["output_gate"]),
            )
            if on
        )
        Hr = proj_size or hidden_size
        nd = 2 if self.bidirectional else 1
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        cells = []
        for layer in range(num_layers):
            I = input_size if layer == 0 else Hr * nd
            spec = self._spec(I, Hr, gates, multiplicative_size)
            for _ in range(nd):
                cells.append(
                    LSTMCell(
                        spec,
                        init=init,
                        init_scale=init_scale,
                        sparse_connections=sparse_connections,
                        gate_bias=gate_bias,
                        generator=generator,
                        dtype=dtype,
                        device=device,
                    )
                )
        self.cells = nn.ModuleList(cells)

    def _spec(self, I: int, Hr: int, gates, multiplicative_size) -> CellSpec:
        sw = self.switches
        H, cpb = self.hidden_size, self.cells_per_block
        nb = H // cpb
        D = H + len(gates) * nb
        rank = sw["factorization_rank"]
        if rank == "auto":
            rank = max(1, min(D, I + Hr, 2 * H) // 2)
        if rank is not None and not 1 <= rank <= H:
            raise ValueError(
                f"factorization_rank must be in 1..{H} (the hidden size) for F-LSTM, got {rank}"
            )
        k = sw["groups"]
        if k > 1:
            for name, size in (
                ("input size of a layer", I),
                ("recurrent size", Hr),
                ("blocks", nb),
            ):
                if size % k:
                    raise ValueError(f"groups={k} must divide the {name} ({size}) for G-LSTM")
        return CellSpec(
            input_size=I,
            hidden_size=H,
            cells_per_block=cpb,
            recurrent_size=Hr,
            gates=gates,
            coupled=bool(sw["coupled_input_forget"]),
            peepholes=bool(sw["peepholes"]) and bool(gates),
            fgr=bool(sw["full_gate_recurrence"]) and bool(gates),
            g=sw["input_activation"],
            h=sw["output_activation"],
            multiplicative_size=(multiplicative_size or H) if sw["multiplicative"] else None,
            factorization_rank=rank,
            groups=k,
            proj_size=self.proj_size,
            bias=self.bias,
        )

    # ------------------------------------------------------------------ properties
    @property
    def engine(self) -> str:
        return self._engine

    @engine.setter
    def engine(self, name: str) -> None:
        get_engine(name)  # validates
        self._engine = name

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def output_size(self) -> int:
        return (self.proj_size or self.hidden_size) * self.num_directions

    def set_epoch(self, epoch: int) -> None:
        """Advance the gate-sharpness schedule to ``epoch`` (validated at once)."""
        self.gate_sharpness.at(epoch)
        self.sharpness_epoch.fill_(int(epoch))

    def alpha(self) -> dict[str, float]:
        return self.gate_sharpness.at(self.epoch)

    @property
    def epoch(self) -> int:
        return int(self.sharpness_epoch)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input: Tensor,
        hx: tuple[Tensor, Tensor] | None = None,
        *,
        lengths: Tensor | None = None,
        return_states: bool = False,
    ):
        """See the module docstring. With ``return_states=True`` also returns a list with, per
        layer, the cell states C (T, B, D·H) in the input's time/batch order."""
        x = self._check_input(input)
        if self.batch_first:
            x = x.transpose(0, 1)
        T, B, _ = x.shape
        lengths = self._check_lengths(lengths, T, B, x.device)
        h0, c0 = self._check_hx(hx, B, x)
        engine_name = self.engine
        per_sample = engine_name.endswith(":per-sample")
        if per_sample:
            engine_name = engine_name[: -len(":per-sample")]
        alpha = self.alpha()
        run = get_engine(engine_name)
        if per_sample:
            out, (h_n, c_n), states = self._per_sample(run, x, lengths, h0, c0, alpha)
        else:
            out, (h_n, c_n), states = self._layers(run, x, lengths, h0, c0, alpha)
        if self.batch_first:
            out = out.transpose(0, 1)
            states = [s.transpose(0, 1) for s in states]
        if return_states:
            return out, (h_n, c_n), states
        return out, (h_n, c_n)

    def _layers(self, run, x, lengths, h0, c0, alpha):
        nd = self.num_directions
        hs, cs, states = [], [], []
        layer_in = x
        for layer in range(self.num_layers):
            outs, cells_c = [], []
            for d in range(nd):
                k = layer * nd + d
                cell = self.cells[k]
                xin = layer_in if d == 0 else reverse_sequences(layer_in, lengths)
                Y, C, h_n, c_n = run(cell, xin, lengths, h0[k], c0[k], alpha)
                if d == 1:
                    Y, C = reverse_sequences(Y, lengths), reverse_sequences(C, lengths)
                outs.append(Y)
                cells_c.append(C)
                hs.append(h_n)
                cs.append(c_n)
            layer_in = outs[0] if nd == 1 else torch.cat(outs, dim=2)
            states.append(cells_c[0] if nd == 1 else torch.cat(cells_c, dim=2))
        return layer_in, (torch.stack(hs), torch.stack(cs)), states

    def _per_sample(self, run, x, lengths, h0, c0, alpha):
        """The batch one sample at a time (seed 000 Fig. 3(b)'s baseline)."""
        T, B, _ = x.shape
        outs, hs, cs, sts = [], [], [], []
        for b in range(B):
            L = T if lengths is None else int(lengths[b])
            o, (h, c), st = self._layers(
                run, x[:L, b : b + 1], None, h0[:, b : b + 1], c0[:, b : b + 1], alpha
            )
            pad = T - L
            outs.append(nn.functional.pad(o, (0, 0, 0, 0, 0, pad)))
            sts.append([nn.functional.pad(s, (0, 0, 0, 0, 0, pad)) for s in st])
            hs.append(h)
            cs.append(c)
        states = [torch.cat([s[k] for s in sts], dim=1) for k in range(self.num_layers)]
        return torch.cat(outs, dim=1), (torch.cat(hs, dim=1), torch.cat(cs, dim=1)), states

    # ------------------------------------------------------------------ validation
    def _check_input(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            raise ValueError(f"input must be a tensor, got {type(x).__name__}")
        if x.dim() != 3:
            layout = "(B, T, I)" if self.batch_first else "(T, B, I)"
            raise ValueError(f"input must have rank 3 {layout}, got shape {tuple(x.shape)}")
        if x.shape[2] != self.input_size:
            raise ValueError(
                f"input feature size must be input_size={self.input_size}, got {x.shape[2]}"
            )
        if 0 in x.shape[:2]:
            raise ValueError(
                f"input must have at least one step and one sample, got {tuple(x.shape)}"
            )
        p = next(self.parameters())
        if x.dtype != p.dtype:
            raise ValueError(
                f"input dtype {x.dtype} does not match the parameters' {p.dtype}; "
                f"convert one of them (e.g. model.to(torch.float64))"
            )
        if self.check_finite and not all_finite(x):
            raise ValueError("input contains NaN or Inf")
        return x

    def _check_lengths(self, lengths, T: int, B: int, device) -> Tensor | None:
        if lengths is None:
            return None
        lengths = torch.as_tensor(lengths)
        if lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
            raise ValueError(f"lengths must be an integer tensor, got dtype {lengths.dtype}")
        if lengths.shape != (B,):
            raise ValueError(
                f"lengths must have shape ({B},) (one per sample), got {tuple(lengths.shape)}"
            )
        lo, hi = int(lengths.min()), int(lengths.max())
        if lo < 1 or hi > T:
            raise ValueError(
                f"lengths must lie in [1, {T}] (T = the padded length), got values in [{lo}, {hi}]"
            )
        return lengths.to(device=device, dtype=torch.long)

    def _check_hx(self, hx, B: int, x: Tensor) -> tuple[Tensor, Tensor]:
        L = self.num_layers * self.num_directions
        Hr = self.proj_size or self.hidden_size
        if hx is None:
            return (
                x.new_zeros(L, B, Hr),
                x.new_zeros(L, B, self.hidden_size),
            )
        h0, c0 = hx
        for name, t, shape in (("h0", h0, (L, B, Hr)), ("c0", c0, (L, B, self.hidden_size))):
            if tuple(t.shape) != shape:
                raise ValueError(f"hx: {name} must have shape {shape}, got {tuple(t.shape)}")
        return h0, c0

    # ------------------------------------------------------------------ torch.nn.LSTM mapping
    @classmethod
    def from_torch(cls, lstm: nn.LSTM, **kwargs: Any) -> LSTM:
        """An ``lstmlab.LSTM`` (variant NP, α = 1) computing exactly what ``lstm`` computes
        (see ``lstmlab.nn.torch_mapping``); ``kwargs`` go to the constructor (e.g. engine)."""
        from lstmlab.nn.torch_mapping import from_torch

        return from_torch(cls, lstm, **kwargs)

    def to_torch(self) -> nn.LSTM:
        """The equivalent ``torch.nn.LSTM``; only for configurations it can express."""
        from lstmlab.nn.torch_mapping import to_torch

        return to_torch(self)

    def extra_repr(self) -> str:
        parts = [
            f"{self.input_size}, {self.hidden_size}",
            f"num_layers={self.num_layers}",
            f"variant={self.variant!r}",
            f"cells_per_block={self.cells_per_block}",
            f"engine={self.engine!r}",
        ]
        if self.proj_size:
            parts.append(f"proj_size={self.proj_size}")
        if self.bidirectional:
            parts.append("bidirectional=True")
        return ", ".join(parts)


def reverse_sequences(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each sequence of x (T, B, F) within its own length; padding stays in place."""
    if lengths is None:
        return x.flip(0)
    T = x.shape[0]
    t = torch.arange(T, device=x.device).unsqueeze(1)  # (T, 1)
    L = lengths.unsqueeze(0)  # (1, B)
    idx = torch.where(t < L, L - 1 - t, t)  # (T, B)
    return x.gather(0, idx.unsqueeze(2).expand_as(x))
