"""Baseline recurrent layers: the shared machinery of `RNN`, `MRNN` and `GRU`.

The baselines a reader of seeds 001/003 expects next to the LSTM (SPEC S1):

- `RNN`  (`lstmlab/nn/rnn.py`)  — simple tanh RNN, h_t = tanh(W x_t + R h_{t-1} + b);
- `MRNN` (`lstmlab/nn/mrnn.py`) — multiplicative RNN (Sutskever et al. 2011; seed 001 Eq. 3),
  W_hh(x_t) = W_hm diag(W_mx x_t) W_mh;
- `GRU`  (`lstmlab/nn/gru.py`)  — the GRU exactly as `torch.nn.GRU` computes it.

This module holds what they share: argument validation, the initialisers of SPEC S1, and the
loop over layers, directions and time. A cell class only declares its parameter shapes
(`_direction_shapes`), the projection of the whole input sequence (`_project`) and one time
step (`_step`).

Computation (matrix-based batch learning, seed 000 Sec. 3.3): samples are rows. For each layer
and direction the input projections of *all* T steps are one (T·B, I) × (I, P) matmul before
the time loop; the loop then does the recurrent matmul(s) of one step and elementwise work.
Gradients come from autograd: these layers are references, with no hand-written backward.

Variable lengths: `lengths` (B,) marks zero-padded batches. At a padded step the state is
carried unchanged and the output is zero, so h_n is each sequence's state at its last valid
step and padding contributes nothing to the gradient (as packed sequences in torch). The
reverse direction reads each sequence reversed *within its own length*.

`RNN`, `MRNN` and `GRU` are importable from here too (lazily, to avoid an import cycle).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from lstmlab.nn.lstm import all_finite

INITS = ("uniform", "gaussian", "sparse", "torch")
SPARSE_K = 15  # Martens (2010): non-zero incoming weights per unit

# Default scale per initialiser: uniform bound, Gaussian σ, sparse N(0,1) multiplier.
# "torch" defaults to torch's own bound 1/√H (computed per layer).
_DEFAULT_SCALE = {"uniform": 0.1, "gaussian": 0.1, "sparse": 1.0}
_INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def check_size(name: str, value: Any) -> int:
    """``value`` when it is a positive int (not a bool); else ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer (>= 1), got {value!r}")
    return value


def init_weight_(w: Tensor, init: str, scale: float | None, hidden_size: int) -> Tensor:
    """Fill a weight matrix (fan_out, fan_in) in place with one of the SPEC S1 initialisers.

    - ``uniform``:  U[−s, s], s = 0.1 by default (Hochreiter & Schmidhuber 1997);
    - ``gaussian``: N(0, s²), s = 0.1 by default (Greff et al.);
    - ``sparse``:   each row (unit) gets k = min(15, fan_in) non-zero entries at random columns,
      drawn N(0, 1)·s with s = 1 by default; the rest are zero (Martens 2010);
    - ``torch``:    U[−s, s] with s = 1/√H, torch's own default.
    """
    with torch.no_grad():
        if init == "sparse":
            s = _DEFAULT_SCALE["sparse"] if scale is None else scale
            rows, fan_in = w.shape
            k = min(SPARSE_K, fan_in)
            # k distinct random columns per row: the k smallest of a random key per entry.
            cols = torch.rand(rows, fan_in, device=w.device).argsort(dim=1)[:, :k]  # (rows, k)
            w.zero_()
            w.scatter_(1, cols, torch.randn(rows, k, dtype=w.dtype, device=w.device) * s)
        else:
            init_bias_(w, init, scale, hidden_size)
    return w


def init_bias_(b: Tensor, init: str, scale: float | None, hidden_size: int) -> Tensor:
    """Fill a bias in place: the dense initialisers use their weight distribution, sparse uses 0."""
    with torch.no_grad():
        if init == "uniform":
            s = _DEFAULT_SCALE["uniform"] if scale is None else scale
            b.uniform_(-s, s)
        elif init == "gaussian":
            s = _DEFAULT_SCALE["gaussian"] if scale is None else scale
            b.normal_(0.0, s)
        elif init == "torch":
            s = 1.0 / math.sqrt(hidden_size) if scale is None else scale
            b.uniform_(-s, s)
        else:  # sparse: biases start at zero (Martens 2010)
            b.zero_()
    return b


def _init_h0_(h0: Tensor, init: str, scale: float | None, hidden_size: int) -> Tensor:
    """Fill a learned initial state (H,): ``sparse`` draws every entry N(0, 1)·s (M&S's
    released code sparsifies its 1 × H initial state with 15 non-zeros per column, so none is
    zeroed); the dense initialisers use their weight distribution."""
    with torch.no_grad():
        if init == "sparse":
            s = _DEFAULT_SCALE["sparse"] if scale is None else scale
            h0.copy_(torch.randn(h0.shape, dtype=h0.dtype, device=h0.device) * s)
        else:
            init_bias_(h0, init, scale, hidden_size)
    return h0


class RecurrentBaseline(nn.Module):
    """Stacked, optionally bidirectional recurrent layer; subclasses define one time step.

    Parameters are registered flat, torch-style: ``<name>_l{k}`` for layer k and
    ``<name>_l{k}_reverse`` for its reverse direction, with ``<name>`` from the subclass's
    `_direction_shapes`. Layer k > 0 reads the concatenated outputs of layer k−1's directions
    (size num_directions·H), as in torch.

    Subclass contract:
      - ``_direction_shapes(in_size) -> {name: shape}``; names starting with ``bias`` are biases;
      - ``_project(p, x) -> xp``: x (T, B, in_size) → (T, B, P), one matmul, biases folded in;
      - ``_step(p, xp_t, h) -> h``: xp_t (B, P), h (B, H) → next h (B, H).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        bidirectional: bool = False,
        batch_first: bool = False,
        bias: bool = True,
        init: str = "uniform",
        init_scale: float | None = None,
        input_scale: float = 1.0,
        learn_h0: bool = False,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(learn_h0, bool):
            raise ValueError(f"learn_h0 must be true or false, got {learn_h0!r}")
        self.learn_h0 = learn_h0
        if (
            isinstance(input_scale, bool)
            or not isinstance(input_scale, int | float)
            or not (math.isfinite(input_scale) and input_scale > 0)
        ):
            raise ValueError(f"input_scale must be a finite number > 0, got {input_scale!r}")
        self.input_scale = float(input_scale)
        self.input_size = check_size("input_size", input_size)
        self.hidden_size = check_size("hidden_size", hidden_size)
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"num_layers must be an integer >= 1, got {num_layers!r}")
        self.num_layers = num_layers
        if init not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}; got {init!r}")
        if init_scale is not None and not (
            isinstance(init_scale, int | float)
            and not isinstance(init_scale, bool)
            and math.isfinite(init_scale)
            and init_scale > 0
        ):
            raise ValueError(f"init_scale must be a finite number > 0 or None, got {init_scale!r}")
        if dtype is not None and not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
        self.bidirectional = bool(bidirectional)
        self.batch_first = bool(batch_first)
        self.bias = bool(bias)
        self.init = init
        self.init_scale = init_scale
        self.num_directions = 2 if self.bidirectional else 1

        factory = {"dtype": dtype, "device": device}
        for layer in range(num_layers):
            in_size = input_size if layer == 0 else self.num_directions * hidden_size
            for d in range(self.num_directions):
                for name, shape in self._direction_shapes(in_size).items():
                    if name.startswith("bias") and not self.bias:
                        continue
                    param = nn.Parameter(torch.empty(shape, **factory))
                    self.register_parameter(self._pname(name, layer, d), param)
                if self.learn_h0:  # M&S's released HF-RNN learns its initial state
                    h0 = nn.Parameter(torch.empty(hidden_size, **factory))
                    self.register_parameter(self._pname("h0", layer, d), h0)
        self.reset_parameters()

    # -- subclass contract -------------------------------------------------------------------
    def _direction_shapes(self, in_size: int) -> dict[str, tuple[int, ...]]:
        raise NotImplementedError

    def _project(self, p: dict[str, Tensor], x: Tensor) -> Tensor:
        raise NotImplementedError

    def _step(self, p: dict[str, Tensor], xp_t: Tensor, h: Tensor) -> Tensor:
        raise NotImplementedError

    # -- parameters --------------------------------------------------------------------------
    @staticmethod
    def _pname(name: str, layer: int, direction: int) -> str:
        return f"{name}_l{layer}" + ("_reverse" if direction == 1 else "")

    def direction_parameters(self, layer: int, direction: int) -> dict[str, Tensor | None]:
        """The parameters of one layer and direction, by short name (biases None if bias=False)."""
        in_size = self.input_size if layer == 0 else self.num_directions * self.hidden_size
        return {
            name: getattr(self, self._pname(name, layer, direction), None)
            for name in self._direction_shapes(in_size)
        }

    # the weights that read the network's input x (scaled by ``input_scale`` in layer 0)
    _input_weights: tuple[str, ...] = ("weight_ih",)

    def reset_parameters(self) -> None:
        """Re-draw every parameter with the layer's `init` and `init_scale`; then multiply the
        first layer's input weights by ``input_scale`` (M&S's released HF-RNN code: × 0.25)."""
        for name, param in self.named_parameters():
            if name.startswith("h0"):
                _init_h0_(param, self.init, self.init_scale, self.hidden_size)
            elif name.startswith("bias"):
                init_bias_(param, self.init, self.init_scale, self.hidden_size)
            else:
                init_weight_(param, self.init, self.init_scale, self.hidden_size)
        if self.input_scale != 1.0:
            with torch.no_grad():
                for d in range(self.num_directions):
                    for name in self._input_weights:
                        self.direction_parameters(0, d)[name].mul_(self.input_scale)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
        for key in ("bidirectional", "batch_first"):
            if getattr(self, key):
                s += f", {key}=True"
        if not self.bias:
            s += ", bias=False"
        return s + f", init={self.init!r}"

    # -- forward -----------------------------------------------------------------------------
    def _check_call(self, input: Tensor, hx: Tensor | None, lengths: Tensor | None) -> None:
        if not isinstance(input, Tensor) or input.dim() != 3:
            layout = "(B, T, I)" if self.batch_first else "(T, B, I)"
            got = input.dim() if isinstance(input, Tensor) else type(input).__name__
            raise ValueError(f"input must be a 3-D tensor {layout}, got rank {got}")
        if input.shape[-1] != self.input_size:
            raise ValueError(
                f"input feature size must be input_size={self.input_size}, got {input.shape[-1]}"
            )
        if not input.is_floating_point():
            raise ValueError(f"input must be a floating-point tensor, got {input.dtype}")
        w = next(self.parameters())
        if input.dtype != w.dtype:
            raise ValueError(f"input dtype must match the parameters' {w.dtype}, got {input.dtype}")
        if not all_finite(input):
            raise ValueError("input contains NaN or Inf")
        B, T = (input.shape[0], input.shape[1]) if self.batch_first else input.shape[1::-1]
        if T < 1:
            raise ValueError("input must have at least one time step (T >= 1)")
        if hx is not None:
            want = (self.num_layers * self.num_directions, B, self.hidden_size)
            if not isinstance(hx, Tensor) or tuple(hx.shape) != want:
                got = tuple(hx.shape) if isinstance(hx, Tensor) else type(hx).__name__
                raise ValueError(
                    f"hx must have shape (num_layers*num_directions, B, H)={want}, got {got}"
                )
        if lengths is not None:
            if not isinstance(lengths, Tensor) or lengths.dtype not in _INT_DTYPES:
                raise ValueError("lengths must be an integer tensor of shape (B,)")
            if tuple(lengths.shape) != (B,):
                raise ValueError(f"lengths must have shape (B,)=({B},), got {tuple(lengths.shape)}")
            if B > 0 and (int(lengths.min()) < 1 or int(lengths.max()) > T):
                raise ValueError(
                    f"lengths must lie in 1..T (T={T}), got "
                    f"{int(lengths.min())}..{int(lengths.max())}"
                )

    def forward(
        self, input: Tensor, hx: Tensor | None = None, *, lengths: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Run the stack over a batch of sequences.

        Args:
            input: (T, B, I), or (B, T, I) if batch_first.
            hx: initial states (num_layers·num_directions, B, H); if None, zeros, or the
                learned ``h0_l{k}`` parameters with ``learn_h0=True``.
            lengths: (B,) integer lengths in 1..T for a zero-padded batch; None = all T.

        Returns:
            output: (T, B, D·H) (or (B, T, D·H)) — the last layer's states, directions
                concatenated; zero at padded steps.
            h_n: (num_layers·num_directions, B, H) — each sequence's state at its last
                valid step (index 2k + d for layer k, direction d, as torch).
        """
        self._check_call(input, hx, lengths)
        x = input.transpose(0, 1) if self.batch_first else input  # (T, B, I)
        T, B, _ = x.shape
        H = self.hidden_size
        if hx is None and self.learn_h0:  # the learned initial states, one per layer-direction
            hx = torch.stack(
                [
                    getattr(self, self._pname("h0", k, d)).expand(B, H)
                    for k in range(self.num_layers)
                    for d in range(self.num_directions)
                ]
            )
        elif hx is None:
            hx = x.new_zeros(self.num_layers * self.num_directions, B, H)
        mask = rev = None
        if lengths is not None:
            lengths = lengths.to(device=x.device, dtype=torch.long)
            steps = torch.arange(T, device=x.device).unsqueeze(1)  # (T, 1)
            mask = (steps < lengths).unsqueeze(-1)  # (T, B, 1)
            # reverse within each length: step t of the reversed sequence is step L−1−t
            rev = torch.where(steps < lengths, lengths - 1 - steps, steps)  # (T, B)

        h_n = []
        for layer in range(self.num_layers):
            outs = []
            for d in range(self.num_directions):
                p = self.direction_parameters(layer, d)
                xp = self._project(p, x)  # (T, B, P): all input projections in one matmul
                if d == 1:
                    xp = xp.flip(0) if rev is None else _gather_time(xp, rev)
                out, h = self._scan(p, xp, hx[layer * self.num_directions + d], mask)
                if d == 1:
                    out = out.flip(0) if rev is None else _gather_time(out, rev)
                outs.append(out)
                h_n.append(h)
            x = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)  # (T, B, D·H)
        output = x.transpose(0, 1) if self.batch_first else x
        return output, torch.stack(h_n)

    def _scan(
        self, p: dict[str, Tensor], xp: Tensor, h: Tensor, mask: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """The time loop of one layer and direction: xp (T, B, P), h (B, H) → (T, B, H), (B, H)."""
        outs = []
        for t in range(xp.shape[0]):
            h_new = self._step(p, xp[t], h)  # (B, H)
            if mask is None:
                h = h_new
                outs.append(h_new)
            else:  # padded steps: carry h, emit 0
                h = torch.where(mask[t], h_new, h)
                outs.append(h_new * mask[t])
        return torch.stack(outs), h

    # -- torch interop helpers ----------------------------------------------------------------
    def _torch_kwargs(self) -> dict[str, Any]:
        if self.learn_h0:
            raise ValueError("a layer with learn_h0=True has no torch equivalent (torch's h0 is 0)")
        w = next(self.parameters())
        return dict(
            input_size=self.input_size,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            bias=self.bias,
            batch_first=self.batch_first,
            bidirectional=self.bidirectional,
            dtype=w.dtype,
            device=w.device,
        )

    @staticmethod
    def _from_torch_kwargs(module: nn.RNNBase, init: str) -> dict[str, Any]:
        if module.dropout:
            raise ValueError(f"dropout must be 0 to map a torch module, got {module.dropout}")
        if getattr(module, "proj_size", 0):
            raise ValueError(f"proj_size must be 0 to map a torch module, got {module.proj_size}")
        w = module.weight_ih_l0
        return dict(
            input_size=module.input_size,
            hidden_size=module.hidden_size,
            num_layers=module.num_layers,
            bidirectional=module.bidirectional,
            batch_first=module.batch_first,
            bias=module.bias,
            init=init,
            dtype=w.dtype,
            device=w.device,
        )

    def _torch_layers(self):
        """(layer, direction, torch-name suffix) for every layer and direction."""
        for layer in range(self.num_layers):
            for d in range(self.num_directions):
                yield layer, d, f"_l{layer}" + ("_reverse" if d else "")


def _gather_time(x: Tensor, index: Tensor) -> Tensor:
    """x (T, B, F), index (T, B) → y with y[t, b] = x[index[t, b], b]."""
    return x.gather(0, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def __getattr__(name: str) -> Any:
    # Lazy re-export: rnn.py/mrnn.py/gru.py import this module, so importing them eagerly
    # here would be a cycle.
    if name == "RNN":
        from lstmlab.nn.rnn import RNN

        return RNN
    if name == "MRNN":
        from lstmlab.nn.mrnn import MRNN

        return MRNN
    if name == "GRU":
        from lstmlab.nn.gru import GRU

        return GRU
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
