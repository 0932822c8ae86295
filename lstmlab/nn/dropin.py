"""Drop-ins for ``torch.nn.LSTM``, ``torch.nn.GRU`` and ``torch.nn.RNN`` running lstmlab's code.

    from lstmlab import TorchLSTM as LSTM          # instead of: from torch.nn import LSTM
    lstm = LSTM(300, 512, 2, dropout=0.3, batch_first=True)
    lstm.load_state_dict(torch.load("torch_checkpoint.pt", weights_only=True))
    out, (h_n, c_n) = lstm(packed_or_padded_input, (h0, c0))

``TorchLSTM``, ``TorchGRU`` and ``TorchRNN`` are subclasses of the torch classes. They inherit
what a script sees of the module — the constructor and its checks (same signature, defaults,
positional order, error types), the parameters (``weight_ih_l0``, ``weight_hh_l0``,
``bias_ih_l0``, ``bias_hh_l0``, ``_reverse``, ``weight_hr_l0``, gate order i, f, g, o; GRU
r, z, n), the initialisation U(−1/√H, 1/√H), ``all_weights``, ``_flat_weights``,
``flatten_parameters``, ``state_dict`` and pickling, ``weight_norm``, ``isinstance(m,
nn.LSTM)`` — and replace only ``forward``: the recurrence and its gradients are lstmlab's.

``forward`` takes what torch's takes and returns what it returns: a (T, B, I) or (B, T, I)
tensor, an unbatched (T, I) tensor with 2-D h0/c0, or a ``PackedSequence`` (then the output is
a ``PackedSequence`` with the same batch sizes and indices, and h_n/c_n are in the caller's
batch order); inter-layer dropout in training mode; a zero-size batch; NaN/Inf propagate as
in torch (no check). Under CPU autocast the LSTM and RNN compute in the autocast dtype
(bfloat16 output, as torch's); the GRU autocasts its products and keeps a
float32 state and output (as torch's).

LSTM computation (``engine=``): ``"bptt"`` (default) is the hand-written full-BPTT engine
(``lstmlab.engines.bptt``) through ``lstmlab.nn.fast_layer``, whose double backward recomputes
with the reference engine; ``"autograd"`` is the reference step loop. The torch weights map
onto the engine's layout (rows z|i|f|o, one bias b_ih + b_hh) by a differentiable row
permutation each call. Where the cell is torch's (NP, α = 1, no projection) on dense float32 /
float64 CPU input in the batch-major layout, the native loops read the torch weights as they
are, in their own gate order: for training one ``autograd.Function`` per layer-direction
(``engines.torch_order``: no permuted copies, no engine set-up), and where no graph is wanted
(inference) every layer and direction in one call (``native.torch_lstm``). GRU and RNN are lstmlab's baseline
recurrences (autograd). While a graph is captured (``torch.export``, ``torch.jit.trace``, ``torch.compile`` with dynamo's
``allow_rnn``, ``torch.onnx.export``) each layer-direction is one operator of
``lstmlab.nn.ops``; otherwise a compiler does not look inside the layer (docs/design.md).

The LSTM family stays reachable by keywords after torch's arguments: ``variant=`` (default
"NP", torch's LSTM), the switches of ``lstmlab.LSTM`` (``peepholes``, ``forget_gate``, …),
``cells_per_block``, ``gate_sharpness``. Parameters the torch layout has no name for get
torch-style names: peepholes ``weight_ci_l{k}``, ``weight_cf_l{k}``, ``weight_co_l{k}``
(blocks, cells_per_block); full gate recurrence ``weight_qq_l{k}``; mLSTM ``weight_mx_l{k}``,
``weight_mh_l{k}``; F-LSTM ``weight_f1_l{k}`` (r, I + Hr), ``weight_f2_l{k}`` (rows i|f|g|o);
G-LSTM ``weight_ihg_l{k}``, ``weight_hhg_l{k}`` (lstmlab's group layout). Gate rows are per
block and absent gates are left out (NIG, NFG, CIFG, NOG). Every parameter starts U(−1/√H,
1/√H), torch's rule.

``lstmlab.LSTM`` state_dicts (``cells.k.W/R/b…``) load into a ``TorchLSTM`` of the same
configuration: they are converted on load (b → bias_ih, bias_hh = 0); ``from_lstmlab`` and
``to_lstmlab`` convert modules. Likewise ``lstmlab.GRU`` / ``lstmlab.RNN`` state_dicts (one
merged bias, the GRU's b_hn apart) load into ``TorchGRU`` / ``TorchRNN``.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from lstmlab.engines import layout as engine_layout  # (a module: imports before it is filled)
from lstmlab.nn import fast_layer, ops
from lstmlab.nn.lstm import LSTM as _LabLSTM
from lstmlab.nn.lstm import reverse_sequences
from lstmlab.nn.lstm_cell import group_rows
from lstmlab.nn.variants import CellSpec, GateSharpness, resolve_switches

try:  # the dynamo ONNX exporter's flag (see _in_onnx_export)
    from torch.onnx._internal.exporter import _flags as _onnx_flags
except ImportError:  # pragma: no cover - another torch
    _onnx_flags = None

__all__ = ["TorchLSTM", "TorchGRU", "TorchRNN"]

LSTM_ENGINES = ("bptt", "autograd")
_SWITCH_KEYS = (
    "input_gate",
    "forget_gate",
    "output_gate",
    "input_activation",
    "output_activation",
    "peepholes",
    "coupled_input_forget",
    "full_gate_recurrence",
    "multiplicative",
    "factorization_rank",
    "groups",
)
# lstmlab.LSTMCell parameter -> torch-style name (W, R, b, W2 are row-permuted to i|f|g|o)
_EXTRA_NAMES = {
    "peep_i": "weight_ci",
    "peep_f": "weight_cf",
    "peep_o": "weight_co",
    "Q": "weight_qq",
    "W_mx": "weight_mx",
    "W_mh": "weight_mh",
    "W1": "weight_f1",
    "W2": "weight_f2",
    "Wg": "weight_ihg",
    "Rg": "weight_hhg",
}


# ---------------------------------------------------------------------------------- helpers
def _autocast_dtype(device_type: str) -> torch.dtype | None:
    """The autocast dtype in force for ``device_type``, or None."""
    try:
        if not torch.is_autocast_enabled(device_type):
            return None
        return torch.get_autocast_dtype(device_type)
    except TypeError:  # torch < 2.4: per-device functions
        if device_type == "cpu":
            return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None
        return torch.get_autocast_gpu_dtype() if torch.is_autocast_enabled() else None


def _unpack(data: Tensor, batch_sizes: Tensor) -> tuple[Tensor, Tensor | None, Tensor]:
    """Packed data (N, F) → padded (T, B, F) in the packed (sorted) batch order, the lengths
    (None when all are T) and the flat (t·B + b) positions of the packed rows."""
    T, B = len(batch_sizes), int(batch_sizes[0])
    alive = torch.arange(B).unsqueeze(0) < batch_sizes.unsqueeze(1)  # (T, B), CPU
    flat = alive.reshape(-1).nonzero().squeeze(1).to(data.device)
    x = data.new_zeros(T * B, data.shape[1]).index_copy(0, flat, data).view(T, B, -1)
    lengths = alive.sum(0)
    lengths = None if bool((lengths == T).all()) else lengths.to(data.device)
    return x, lengths, flat


class _DropInMixin:
    """The part of ``forward`` shared by the three drop-ins: input forms (packed, unbatched,
    batch_first), torch's checks, dropout between layers, reverse directions, autocast.
    A subclass gives ``_n_states`` (2 for the LSTM), ``_state_sizes()`` and ``_direction``."""

    _n_states = 1
    # under autocast: "dtype" = the whole recurrence in the autocast dtype (torch's LSTM and
    # RNN on the CPU), "ops" = only the products autocast, the state stays float32 (its GRU)
    _follows_autocast = "dtype"

    # -- to be provided ---------------------------------------------------------------------
    def _state_sizes(self) -> tuple[int, ...]:
        return (self.hidden_size,)

    def _direction(self, layer: int, d: int, x, lengths, states, cast):
        raise NotImplementedError

    # -- forward ------------------------------------------------------------------------------
    def _hx_tuple(self, hx):
        return (hx,) if self._n_states == 1 else tuple(hx)

    def _hx_out(self, states):
        return states[0] if self._n_states == 1 else tuple(states)

    def forward(self, input, hx=None):
        """torch's forward contract: ``input`` (T, B, I) / (B, T, I) / unbatched (T, I) / a
        ``PackedSequence``; ``hx`` as torch's (LSTM: (h0, c0)). Returns (output, h_n) or
        (output, (h_n, c_n)), output packed when the input was.

        While a graph is captured (``ops.tracing()``) the recurrence of each layer-direction
        is one operator (``lstmlab.nn.ops``); otherwise the layer runs eagerly and a compiler
        does not look inside it (dynamo then treats it as it treats ``nn.LSTM``)."""
        # ``self`` first: where dynamo refuses an nn.LSTM (its default) it stops right here and
        # runs this frame eagerly, before the branch below is decided at trace time; and torch's
        # own functions inline (dynamo would compile a helper of ours into a constant True)
        eager, traced = self._forward_eager, self._forward
        if torch.compiler.is_compiling() or torch.jit.is_tracing():
            return traced(input, hx)
        return eager(input, hx)

    @torch.compiler.disable
    def _forward_eager(self, input, hx):
        return self._forward(input, hx)

    def _forward(self, input, hx):
        self._update_flat_weights()
        name = self._torch_name
        if isinstance(input, PackedSequence):
            data, batch_sizes, sorted_indices, unsorted_indices = input
            B = int(batch_sizes[0])
            if hx is None:
                hx = self._zeros(B, data)
            else:
                hx = self.permute_hidden(hx, sorted_indices)
            self.check_forward_args(data, hx, batch_sizes)
            x, lengths, flat = _unpack(data, batch_sizes)
            fast = None if lengths is not None else self._native_stack(x, self._hx_tuple(hx))
            if fast is not None:  # (every sequence of the full length)
                out, states = fast
            else:
                out, states = self._stack(x, lengths, self._hx_tuple(hx), flat)
            data_out = out.reshape(-1, out.shape[-1]).index_select(0, flat)
            packed = PackedSequence(data_out, batch_sizes, sorted_indices, unsorted_indices)
            return packed, self.permute_hidden(self._hx_out(states), unsorted_indices)
        if not isinstance(input, Tensor):
            raise TypeError(
                f"{name}: input must be a Tensor or a PackedSequence, got {type(input)}"
            )
        if input.dim() not in (2, 3):
            raise ValueError(f"{name}: Expected input to be 2D or 3D, got {input.dim()}D instead")
        batched = input.dim() == 3
        batch_dim = 0 if self.batch_first else 1
        if not batched:
            input = input.unsqueeze(batch_dim)
        B = input.shape[batch_dim]
        if hx is None:
            self.check_input(input, None)  # (torch's check_forward_args on zero states)
        else:
            parts = self._hx_tuple(hx)
            want = 3 if batched else 2
            if any(not isinstance(p, Tensor) or p.dim() != want for p in parts):
                dims = ", ".join(
                    f"{p.dim()}-D" if isinstance(p, Tensor) else type(p).__name__ for p in parts
                )
                kind = "batched 3-D" if batched else "unbatched 2-D"
                raise RuntimeError(
                    f"For {kind} input, hx{' and cx' if self._n_states == 2 else ''} should "
                    f"also be {want}-D but got ({dims}) tensors"
                )
            if not batched:
                parts = tuple(p.unsqueeze(1) for p in parts)
            hx = self._hx_out(parts)
            self.check_forward_args(input, hx, None)
        x = input.transpose(0, 1) if self.batch_first else input
        if x.shape[0] == 0:
            raise RuntimeError(f"Expected sequence length to be larger than 0 in {name}")
        given = None if hx is None else self._hx_tuple(hx)
        fast = self._native_stack(x, given)
        if fast is not None:
            out, states = fast
        else:
            out, states = self._stack(x, None, given or self._hx_tuple(self._zeros(B, input)))
        if self.batch_first:
            out = out.transpose(0, 1)
        if not batched:
            out = out.squeeze(batch_dim)
            states = tuple(s.squeeze(1) for s in states)
        return out, self._hx_out(states)

    def _native_stack(self, x: Tensor, states: tuple[Tensor, ...] | None):
        """The whole stack in one native call where that applies (TorchLSTM's inference), else
        None: the layer-by-layer path below."""
        return None

    def _zeros(self, B: int, like: Tensor):
        L = self.num_layers * (2 if self.bidirectional else 1)
        z = [
            torch.zeros(L, B, n, dtype=like.dtype, device=like.device) for n in self._state_sizes()
        ]
        return self._hx_out(z)

    def _stack(self, x: Tensor, lengths: Tensor | None, hx: tuple[Tensor, ...], flat=None):
        """x (T, B, I) time-major → output (T, B, D·Hr), final states (each (L·D, B, ·)).
        ``flat``: the packed rows' positions when the input came packed (see ``_dropout``)."""
        if self._follows_autocast == "ops":  # each product autocasts on its own (GRU)
            return self._stack_plain(x, lengths, hx, None, flat)
        cast = _autocast_dtype(x.device.type)
        if cast is None:  # no autocast in force (and no autocast region in a captured graph)
            return self._stack_plain(x, lengths, hx, None, flat)
        x, hx = x.to(cast), tuple(h.to(cast) for h in hx)
        with torch.autocast(x.device.type, enabled=False):
            return self._stack_plain(x, lengths, hx, cast, flat)

    def _stack_plain(self, x, lengths, hx, cast, flat):
        nd = 2 if self.bidirectional else 1
        finals: list[list[Tensor]] = [[] for _ in range(self._n_states)]
        layer_in = x
        for layer in range(self.num_layers):
            outs = []
            for d in range(nd):
                k = layer * nd + d
                xin = layer_in if d == 0 else reverse_sequences(layer_in, lengths)
                Y, st = self._direction(layer, d, xin, lengths, tuple(h[k] for h in hx), cast)
                outs.append(Y if d == 0 else reverse_sequences(Y, lengths))
                for acc, s in zip(finals, st, strict=True):
                    acc.append(s)
            layer_in = outs[0] if nd == 1 else torch.cat(outs, dim=2)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                layer_in = self._dropout(layer_in, flat)
        return layer_in, tuple(torch.stack(f) for f in finals)

    def _dropout(self, y: Tensor, flat: Tensor | None) -> Tensor:
        """Inter-layer dropout drawn as torch draws it: over the (T, B, F) output, or, for a
        packed input, over the packed rows only (so the same seed gives torch's masks)."""
        if flat is None:
            return nn.functional.dropout(y, self.dropout, True)
        T, B, F = y.shape
        rows = nn.functional.dropout(y.reshape(T * B, F).index_select(0, flat), self.dropout, True)
        return y.new_zeros(T * B, F).index_copy(0, flat, rows).view(T, B, F)

    def _param(self, name: str, layer: int, d: int, cast):
        t = getattr(self, f"{name}_l{layer}" + ("_reverse" if d else ""), None)
        return t if t is None or cast is None else t.to(cast)


# ---------------------------------------------------------------------------------- LSTM
class TorchLSTM(_DropInMixin, nn.LSTM):
    """``torch.nn.LSTM`` with lstmlab's engine (see the module docstring).

    Args: those of ``torch.nn.LSTM``, in its order, then keyword-only: ``engine`` ("bptt" or
    "autograd"), ``variant`` (default "NP" = torch's LSTM), ``cells_per_block``,
    ``gate_sharpness`` and the switches of ``lstmlab.LSTM`` (``peepholes``, …)."""

    _n_states = 2
    _torch_name = "LSTM"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device=None,
        dtype=None,
        *,
        engine: str = "bptt",
        variant: str | None = None,
        cells_per_block: int = 1,
        gate_sharpness: Any = 1.0,
        multiplicative_size: int | None = None,
        **switches: Any,
    ) -> None:
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            proj_size,
            device,
            dtype,
        )
        unknown = set(switches) - set(_SWITCH_KEYS)
        if unknown:
            raise TypeError(
                f"TorchLSTM got unexpected keyword argument(s) {sorted(unknown)}; the family's "
                f"switches are {list(_SWITCH_KEYS)}"
            )
        self._perms: dict[tuple, Tensor] = {}
        self.engine = engine
        self.variant = "NP" if variant is None else variant
        self.cells_per_block = cells_per_block
        self.gate_sharpness = GateSharpness(gate_sharpness)
        self.epoch = 0
        self.switches = resolve_switches(self.variant, dict(switches))
        self.specs = self._build_specs(multiplicative_size)
        self.spec_codes = [ops.spec_code(s) for s in self.specs]  # the operator's spec argument
        self.multiplicative_size = multiplicative_size
        self.is_torch_layout = all(_torch_expressible(s) for s in self.specs)
        if not self.is_torch_layout:
            self._family_parameters(device, dtype)
        where = next(self.parameters()).device
        for s in self.specs:  # built now: a constant to torch.jit.trace, not ops it records
            self._perm(s, where)

    # -- construction of the family's layout ----------------------------------------------------
    def _build_specs(self, multiplicative_size) -> list[CellSpec]:
        cpb = self.cells_per_block
        if isinstance(cpb, bool) or not isinstance(cpb, int) or cpb < 1:
            raise ValueError(f"cells_per_block must be a positive integer, got {cpb!r}")
        if self.hidden_size % cpb:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by cells_per_block ({cpb})"
            )
        sw = self.switches
        gates = tuple(
            g
            for g in ("i", "f", "o")
            if sw[{"i": "input_gate", "f": "forget_gate", "o": "output_gate"}[g]]
        )
        shim = _SpecShim(self.switches, self.hidden_size, cpb, self.proj_size or None, self.bias)
        Hr = self.proj_size or self.hidden_size
        nd = 2 if self.bidirectional else 1
        specs = []
        for layer in range(self.num_layers):
            I = self.input_size if layer == 0 else Hr * nd
            spec = _LabLSTM._spec(shim, I, Hr, gates, multiplicative_size)
            specs.extend([spec] * nd)
        return specs

    def _family_parameters(self, device, dtype) -> None:
        """Replace torch's parameters by the family's (shapes and extra tensors), keeping
        torch's names where they exist, then re-initialise with torch's rule."""
        kw = {"device": device, "dtype": dtype}
        names, groups = [], []
        nd = 2 if self.bidirectional else 1
        for k, s in enumerate(self.specs):
            sfx = f"_l{k // nd}" + ("_reverse" if k % nd else "")
            shapes = _cell_shapes(s)
            group = []
            for old in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr"):
                if hasattr(self, old + sfx):
                    delattr(self, old + sfx)
            for lab, shape in shapes.items():
                if lab == "b":
                    pairs = [("bias_ih", shape), ("bias_hh", shape)]
                else:
                    pairs = [(_lab_to_torch(lab), shape)]
                for base, shp in pairs:
                    setattr(self, base + sfx, nn.Parameter(torch.empty(shp, **kw)))
                    group.append(base + sfx)
            names.extend(group)
            groups.append(group)
        self._flat_weights_names = names
        self._all_weights = groups
        self._init_flat_weights()
        self.reset_parameters()

    def flatten_parameters(self) -> None:
        # torch's (cuDNN) flattening only knows its own layout
        if getattr(self, "is_torch_layout", True):
            super().flatten_parameters()

    # -- properties ------------------------------------------------------------------------------
    @property
    def engine(self) -> str:
        return self._engine

    @engine.setter
    def engine(self, name: str) -> None:
        if name not in LSTM_ENGINES:
            raise ValueError(f"engine must be one of {list(LSTM_ENGINES)}, got {name!r}")
        self._engine = name

    def set_epoch(self, epoch: int) -> None:
        """Advance the gate-sharpness schedule to ``epoch``."""
        self.gate_sharpness.at(epoch)
        self.epoch = int(epoch)

    def _state_sizes(self) -> tuple[int, ...]:
        return (self.proj_size or self.hidden_size, self.hidden_size)

    # -- the engine's view of the torch parameters ----------------------------------------------
    def _perm(self, spec: CellSpec, device) -> Tensor:
        """Row indices taking the torch layout (i|f|g|o) to the engine's (z|i|f|o)."""
        key = (spec.gates, spec.hidden_size, spec.blocks, str(device))
        p = self._perms.get(key)
        if p is None:
            p = self._perms[key] = _torch_to_lab_rows(spec).to(device)
        return p

    def dense_weights(self, layer: int, d: int, cast=None) -> dict[str, Tensor | None]:
        """The weights of one layer-direction in the engine's layout (``LSTMCell.weights``),
        assembled differentiably from the torch-named parameters."""
        s = self.specs[layer * (2 if self.bidirectional else 1) + d]

        def p(name):
            return self._param(name, layer, d, cast)

        first = {"W1": "weight_f1", "Wg": "weight_ihg"}.get(
            next(iter(_cell_shapes(s))), "weight_ih"
        )
        device = p(first).device
        perm = self._perm(s, device)
        out: dict[str, Tensor | None] = {}
        if s.factorization_rank is not None:
            WR = p("weight_f2").index_select(0, perm) @ p("weight_f1")
            out["W"], out["R"] = WR[:, : s.input_size], WR[:, s.input_size :]
        elif s.groups > 1:
            rows = group_rows(s).to(device)
            out["W"] = torch.block_diag(*p("weight_ihg"))[rows]
            out["R"] = torch.block_diag(*p("weight_hhg"))[rows]
        else:
            out["W"] = p("weight_ih").index_select(0, perm)
            out["R"] = p("weight_hh").index_select(0, perm)
        if self.bias:
            out["b"] = (p("bias_ih") + p("bias_hh")).index_select(0, perm)
        for lab in ("W_mx", "W_mh", "peep_i", "peep_f", "peep_o", "Q"):
            out[lab] = p(_EXTRA_NAMES[lab])
        out["W_p"] = p("weight_hr")
        return out

    def _direction(self, layer, d, x, lengths, states, cast):
        k = layer * (2 if self.bidirectional else 1) + d
        h0, c0 = states
        engine = self.engine
        if x.shape[1] == 0:
            engine = "autograd"  # an empty batch: the plain loop handles it as torch does
        alpha = self.gate_sharpness.at(self.epoch)
        if engine == "bptt" and lengths is None and cast is None:
            out = self._torch_order_layer(k, x, states, alpha)
            if out is not None:
                return out
        if engine == "bptt" and ops.tracing():  # a graph is captured: the layer as one operator
            if _in_onnx_export():
                _onnx_check(self.specs[k], alpha, lengths is not None)
            Y, h_n, c_n = ops.run_layer(
                self.specs[k],
                self.dense_weights(layer, d, cast),
                x,
                lengths,
                h0,
                c0,
                alpha,
                self.__dict__.get("spec_codes", [None] * len(self.specs))[k],
            )
            return Y, (h_n, c_n)
        with engine_layout.without_states():  # (torch's LSTM returns no cell-state trajectory)
            Y, _, h_n, c_n = fast_layer.run_layer(
                self.specs[k], self.dense_weights(layer, d, cast), x, lengths, h0, c0, alpha, engine
            )
        return Y, (h_n, c_n)

    def _torch_cell_mode(self, spec: CellSpec, x: Tensor, tensors, alpha) -> str | None:
        """How the native loops run torch's cell on ``tensors`` (x first, then the states and
        weights): "train" (a graph wanted: ``engines.torch_order``), "infer" (``native.
        torch_lstm``), or None where they do not — not torch's cell, α ≠ 1, an empty batch, a
        graph captured, a functorch transform or dual tensor, a tensor of another dtype or
        device (the engine's path then gives torch's error), no native loop for this input, or
        the feature-major layout chosen for it."""
        from lstmlab.engines import native  # (engines import nn: imported at the call)

        if not native.torch_order_cell(spec) or x.shape[1] == 0 or ops.tracing():
            return None
        if any(alpha[g] != 1.0 for g in spec.gates):
            return None
        if fast_layer.needs_reference(tensors):  # (a dual weight: forward-mode AD)
            return None
        if any(t.dtype != x.dtype or t.device != x.device for t in tensors):
            return None
        if not native.use_native(spec, x, True, True):
            return None
        graph = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
        layout = engine_layout.choose_layout(spec, x.shape[1], x.dtype, native=True, backward=graph)
        if layout != "batch":
            return None
        return "train" if graph else "infer"

    def _torch_order_layer(self, k: int, x: Tensor, states, alpha):
        """Layer-direction k by ``engines.torch_order`` (the training path on torch's own
        weights, see there) — or, where no graph is wanted (inter-layer dropout in force under
        ``no_grad``), by ``native.torch_lstm`` for this layer-direction alone — or None where
        neither applies (``_torch_cell_mode``)."""
        from lstmlab.engines import native, torch_order  # (engines import nn: at the call)

        spec = self.specs[k]
        layer, d = divmod(k, 2 if self.bidirectional else 1)
        params = [
            self._param(n, layer, d, None) for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        ]
        tensors = (x, *states, *(p for p in params if p is not None))
        mode = self._torch_cell_mode(spec, x, tensors, alpha)
        if mode is None:
            return None
        if mode == "infer":
            # no graph wanted (dropout in force keeps the stack from one call): the inference
            # loop, which keeps a ring of steps instead of every step's buffers
            has_b = params[2] is not None
            Y, (h_n, c_n) = native.torch_lstm(
                x, params if has_b else params[:2], (states[0][None], states[1][None]), 1,
                False, has_b,
            )  # fmt: skip
            return Y, (h_n[0], c_n[0])
        Y, h_n, c_n = torch_order.run_layer(spec, x, *states, *params)
        return Y, (h_n, c_n)

    def _native_stack(self, x: Tensor, states: tuple[Tensor, ...] | None):
        """Every layer and direction by ``native.torch_lstm`` (see the module docstring), or
        None where that does not apply: the "bptt" engine on torch's cell in every layer, no
        dropout in force, no autocast, no graph wanted, and ``_torch_cell_mode``'s conditions
        on the input, the states and every weight."""
        from lstmlab.engines import native  # (engines import nn: imported at the call)

        if self.engine != "bptt":
            return None
        if self.dropout > 0 and self.training and self.num_layers > 1:
            return None
        if _autocast_dtype(x.device.type) is not None:
            return None
        if not all(native.torch_order_cell(s) for s in self.specs):
            return None
        weights = self._flat_weights  # (torch's order; refreshed by _update_flat_weights)
        tensors = (x, *weights) if states is None else (x, *states, *weights)
        alpha = self.gate_sharpness.at(self.epoch)
        if self._torch_cell_mode(self.specs[0], x, tensors, alpha) != "infer":
            return None
        return native.torch_lstm(x, weights, states, self.num_layers, self.bidirectional, self.bias)

    # -- conversions -----------------------------------------------------------------------------
    def _family_kwargs(self) -> dict[str, Any]:
        return dict(
            variant=self.variant,
            cells_per_block=self.cells_per_block,
            multiplicative_size=self.multiplicative_size,
            **{k: self.switches[k] for k in _SWITCH_KEYS},
        )

    @classmethod
    def from_lstmlab(cls, model: _LabLSTM, **kwargs: Any) -> TorchLSTM:
        """A ``TorchLSTM`` computing what the ``lstmlab.LSTM`` ``model`` computes (any
        variant; b → bias_ih, bias_hh = 0). ``kwargs`` override (e.g. ``engine``)."""
        if not isinstance(model, _LabLSTM):
            raise TypeError(f"from_lstmlab expects an lstmlab.LSTM, got {type(model).__name__}")
        p = next(model.parameters())
        args = dict(
            variant=model.variant,
            cells_per_block=model.cells_per_block,
            gate_sharpness=model.gate_sharpness.schedules,
            multiplicative_size=model.cells[0].spec.multiplicative_size
            if model.switches["multiplicative"]
            else None,
            engine=model.engine if model.engine in LSTM_ENGINES else "bptt",
            **{k: model.switches[k] for k in _SWITCH_KEYS},
        )
        args.update(kwargs)
        new = cls(
            model.input_size,
            model.hidden_size,
            model.num_layers,
            model.bias,
            model.batch_first,
            0.0,
            model.bidirectional,
            model.proj_size or 0,
            p.device,
            p.dtype,
            **args,
        )
        new.set_epoch(model.epoch)
        new.load_state_dict(model.state_dict())
        return new

    def to_lstmlab(self, **kwargs: Any) -> _LabLSTM:
        """The ``lstmlab.LSTM`` computing what this module computes (bias_ih + bias_hh → b).
        Inter-layer dropout has no counterpart there (an error when dropout > 0)."""
        if self.dropout:
            raise ValueError(
                f"to_lstmlab: lstmlab.LSTM has no inter-layer dropout, got {self.dropout}"
            )
        p = next(self.parameters())
        fam = self._family_kwargs()
        args = dict(
            variant=fam.pop("variant"),
            cells_per_block=fam.pop("cells_per_block"),
            multiplicative_size=fam.pop("multiplicative_size"),
            gate_sharpness=self.gate_sharpness.schedules,
            proj_size=self.proj_size or None,
            bidirectional=self.bidirectional,
            batch_first=self.batch_first,
            bias=self.bias,
            engine=self.engine,
            dtype=p.dtype,
            device=p.device,
            **fam,
        )
        args.update(kwargs)
        model = _LabLSTM(self.input_size, self.hidden_size, self.num_layers, **args)
        model.set_epoch(self.epoch)
        with torch.no_grad():
            nd = 2 if self.bidirectional else 1
            for k, cell in enumerate(model.cells):
                layer, d = divmod(k, nd)
                perm = self._perm(self.specs[k], p.device)
                for lab in _cell_shapes(self.specs[k]):
                    if lab == "b":
                        t = self._param("bias_ih", layer, d, None)
                        t = t + self._param("bias_hh", layer, d, None)
                    else:
                        t = self._param(_lab_to_torch(lab), layer, d, None)
                    if lab in ("W", "R", "W2", "b"):
                        t = t.index_select(0, perm)
                    getattr(cell, lab).copy_(t)
        return model

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        lab_keys = [k for k in state_dict if k.startswith(prefix + "cells.")]
        if lab_keys:
            _convert_lab_state(self, state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if not self.is_torch_layout:
            s += f", variant={self.variant!r}"
            if self.cells_per_block != 1:
                s += f", cells_per_block={self.cells_per_block}"
        if self.engine != "bptt":
            s += f", engine={self.engine!r}"
        return s


def _in_onnx_export() -> bool:
    """Whether torch.onnx.export is capturing the model. Dynamo folds the public
    ``torch.onnx.is_in_onnx_export()`` to False (its strict capture), so the exporter's own
    flag is read as well where this torch has it."""
    return torch.onnx.is_in_onnx_export() or bool(getattr(_onnx_flags, "_is_onnx_exporting", 0))


def _onnx_check(spec: CellSpec, alpha: dict[str, float], lengths_given: bool) -> None:
    """While ``torch.onnx.export`` captures a TorchLSTM: one line for what cannot export."""
    translation = sys.modules.get("lstmlab.nn.onnx_export")
    if translation is None:
        raise RuntimeError(
            "ONNX export of TorchLSTM needs `import lstmlab.nn.onnx_export` before "
            "torch.onnx.export (it registers the translation of lstmlab's layer operator into "
            "the ONNX LSTM operator; it needs onnxscript)"
        )
    translation.check(spec, alpha, lengths_given)


class _SpecShim:
    """What ``lstmlab.LSTM._spec`` reads of its instance."""

    def __init__(self, switches, hidden_size, cells_per_block, proj_size, bias):
        self.switches = switches
        self.hidden_size = hidden_size
        self.cells_per_block = cells_per_block
        self.proj_size = proj_size
        self.bias = bias


def _torch_expressible(s: CellSpec) -> bool:
    return (
        s.gates == ("i", "f", "o")
        and s.cells_per_block == 1
        and not (s.coupled or s.peepholes or s.fgr)
        and s.g == "tanh"
        and s.h == "tanh"
        and s.multiplicative_size is None
        and s.factorization_rank is None
        and s.groups == 1
    )


def _cell_shapes(s: CellSpec) -> dict[str, tuple[int, ...]]:
    """The parameters of ``LSTMCell(s)`` and their shapes, in torch's registration order
    (weights, biases, projection) followed by the family's extras."""
    I, H, Hr, D = s.input_size, s.hidden_size, s.recurrent_size, s.n_pre
    shapes: dict[str, tuple[int, ...]] = {}
    if s.factorization_rank is not None:
        shapes["W1"] = (s.factorization_rank, I + Hr)
        shapes["W2"] = (D, s.factorization_rank)
    elif s.groups > 1:
        k = s.groups
        shapes["Wg"] = (k, D // k, I // k)
        shapes["Rg"] = (k, D // k, Hr // k)
    else:
        shapes["W"] = (D, I)
        shapes["R"] = (D, s.multiplicative_size or Hr)
    if s.bias:
        shapes["b"] = (D,)
    if s.proj_size is not None:
        shapes["W_p"] = (s.proj_size, H)
    if s.multiplicative_size is not None:
        shapes["W_mx"] = (s.multiplicative_size, I)
        shapes["W_mh"] = (s.multiplicative_size, Hr)
    if s.peepholes:
        for g in s.gates:
            shapes[f"peep_{g}"] = (s.blocks, s.cells_per_block)
    if s.fgr:
        shapes["Q"] = (s.n_q, s.n_q)
    return shapes


def _lab_to_torch(lab: str) -> str:
    return {"W": "weight_ih", "R": "weight_hh", "W_p": "weight_hr"}.get(lab) or _EXTRA_NAMES[lab]


def _torch_to_lab_rows(s: CellSpec) -> Tensor:
    """Indices ``perm`` with lab_rows = torch_rows[perm]: torch's rows are the gates i, f (those
    present), the block input g (H rows), the output gate o; the engine's are z, i, f, o."""
    H, nb = s.hidden_size, s.blocks
    order = [g for g in ("i", "f") if g in s.gates] + ["z"] + (["o"] if "o" in s.gates else [])
    start, seg = 0, {}
    for name in order:
        n = H if name == "z" else nb
        seg[name] = torch.arange(start, start + n)
        start += n
    return torch.cat([seg[name] for name in ["z", *s.gates]])


def _convert_lab_state(module: TorchLSTM, state_dict, prefix: str) -> None:
    """Rewrite the ``cells.k.*`` entries of an ``lstmlab.LSTM`` state_dict in place into this
    module's names and layout (the one bias b goes to bias_ih, bias_hh = 0)."""
    nd = 2 if module.bidirectional else 1
    state_dict.pop(prefix + "sharpness_epoch", None)
    for k, s in enumerate(module.specs):
        sfx = f"_l{k // nd}" + ("_reverse" if k % nd else "")
        inv = torch.argsort(_torch_to_lab_rows(s))  # torch_rows = lab_rows[inv]
        for lab in _cell_shapes(s):
            key = f"{prefix}cells.{k}.{lab}"
            if key not in state_dict:
                continue  # reported as missing by torch's loader
            t = state_dict.pop(key)
            if lab in ("W", "R", "W2", "b"):
                t = t[inv.to(t.device)]
            if lab == "b":
                state_dict[f"{prefix}bias_ih{sfx}"] = t
                state_dict[f"{prefix}bias_hh{sfx}"] = torch.zeros_like(t)
            else:
                state_dict[f"{prefix}{_lab_to_torch(lab)}{sfx}"] = t
    left = [key for key in state_dict if key.startswith(prefix + "cells.")]
    if left:
        raise RuntimeError(
            f"lstmlab.LSTM state_dict entries {left[:4]} have no place in this TorchLSTM "
            f"(variant={module.variant!r}, num_layers={module.num_layers}, "
            f"bidirectional={module.bidirectional}); build it with the checkpoint's "
            f"configuration, or use TorchLSTM.from_lstmlab(model)"
        )


# ---------------------------------------------------------------------------------- GRU, RNN
class _BaselineDropIn(_DropInMixin):
    """GRU and RNN: lstmlab's baseline recurrences (``lstmlab.nn.gru`` / ``rnn``), autograd."""

    def _direction(self, layer, d, x, lengths, states, cast):
        if _in_onnx_export():
            raise RuntimeError(
                f"ONNX export of Torch{self._torch_name}: not supported (its operator has no ONNX "
                f"translation); only TorchLSTM exports to ONNX, or use torch.nn.{self._torch_name}"
            )
        p = self._lab_parameters(layer, d, cast)
        run = ops.run_baseline if ops.tracing() else ops.baseline_run  # one operator if captured
        Y, h_n = run(self._kind(), p, x, lengths, states[0])
        return Y, (h_n,)

    def _kind(self) -> str:
        return "gru" if self._torch_name == "GRU" else self.nonlinearity

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # an lstmlab.GRU / lstmlab.RNN state_dict (one merged bias ``bias_l{k}``, and the GRU's
        # ``bias_hn_l{k}``): converted on load into torch's two biases
        for key in [k for k in state_dict if k.startswith(prefix + "bias_l")]:
            sfx = key[len(prefix + "bias") :]
            b = state_dict.pop(key)
            hh = torch.zeros_like(b)
            hn = state_dict.pop(prefix + "bias_hn" + sfx, None)
            if hn is not None:
                hh[2 * self.hidden_size :] = hn
            state_dict[prefix + "bias_ih" + sfx] = b
            state_dict[prefix + "bias_hh" + sfx] = hh
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class TorchGRU(_BaselineDropIn, nn.GRU):
    """``torch.nn.GRU`` computed by lstmlab's GRU (``lstmlab.nn.gru``); torch's constructor,
    parameters (r, z, n rows) and state_dict. Under CPU autocast its products run in the autocast dtype
    and its state and output stay float32, as torch's."""

    _torch_name = "GRU"
    _follows_autocast = "ops"

    def _lab_parameters(self, layer, d, cast):
        H = self.hidden_size
        p = {
            "weight_ih": self._param("weight_ih", layer, d, cast),
            "weight_hh": self._param("weight_hh", layer, d, cast),
            "bias": None,
            "bias_hn": None,
        }
        if self.bias:
            b_ih, b_hh = (
                self._param("bias_ih", layer, d, cast),
                self._param("bias_hh", layer, d, cast),
            )
            p["bias"] = b_ih + torch.cat([b_hh[: 2 * H], torch.zeros_like(b_hh[2 * H :])])
            p["bias_hn"] = b_hh[2 * H :]
        return p


class TorchRNN(_BaselineDropIn, nn.RNN):
    """``torch.nn.RNN`` (tanh or relu) computed by lstmlab's RNN recurrence
    (``lstmlab.nn.rnn``); torch's constructor, parameters and state_dict."""

    _torch_name = "RNN"

    def _lab_parameters(self, layer, d, cast):
        p = {
            "weight_ih": self._param("weight_ih", layer, d, cast),
            "weight_hh": self._param("weight_hh", layer, d, cast),
            "bias": None,
        }
        if self.bias:
            p["bias"] = self._param("bias_ih", layer, d, cast) + self._param(
                "bias_hh", layer, d, cast
            )
        return p
