"""Simple tanh RNN (Elman network; seed 001 Eq. 1, seed 003), a baseline for the LSTM."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lstmlab.nn.baselines import RecurrentBaseline


class RNN(RecurrentBaseline):
    """Simple tanh RNN, stacked and optionally bidirectional; same interface as `torch.nn.RNN`.

    Per layer and direction:

        h_t = tanh( W x_t + R h_{t-1} + b )

    Parameters (``_l{k}`` for layer k, ``_l{k}_reverse`` for its reverse direction):
      - ``weight_ih_l{k}`` W: (H, I_k), I_0 = input_size, I_k = num_directions·H for k > 0;
      - ``weight_hh_l{k}`` R: (H, H);
      - ``bias_l{k}``      b: (H,) — one bias; torch's b_ih + b_hh (see `from_torch`).

    Args:
        input_size, hidden_size, num_layers, bidirectional, batch_first, bias: as torch.
        init: "uniform" (U[−0.1, 0.1]), "gaussian" (N(0, 0.1²)), "sparse" (Martens 2010: 15
            non-zero N(0, 1) weights per row of each matrix, zero biases), or "torch"
            (U[−1/√H, 1/√H]).
        init_scale: replaces the initialiser's bound / σ / multiplier.
        input_scale: multiplies the first layer's input weights after the draw (M&S: 0.25).
        learn_h0: the initial state h_0 is a parameter ``h0_l{k}`` (H,) per layer and direction,
            drawn like the weights (sparse: N(0, 1)·s, every entry), as M&S's released HF-RNN
            code has it; False (default): h_0 = 0.
        dtype, device: of the parameters.

    `forward(input, hx=None, *, lengths=None) -> (output, h_n)`: see `RecurrentBaseline.forward`.
    """

    def _direction_shapes(self, in_size: int) -> dict[str, tuple[int, ...]]:
        H = self.hidden_size
        return {"weight_ih": (H, in_size), "weight_hh": (H, H), "bias": (H,)}

    def _project(self, p: dict[str, Tensor], x: Tensor) -> Tensor:
        # (T, B, I) → (T, B, H): W x_t + b for every step in one matmul
        if p["bias"] is None:
            return x @ p["weight_ih"].T
        return torch.addmm(p["bias"], x.reshape(-1, x.shape[-1]), p["weight_ih"].T).view(
            x.shape[0], x.shape[1], -1
        )

    def _step(self, p: dict[str, Tensor], xp_t: Tensor, h: Tensor) -> Tensor:
        return torch.tanh(xp_t + h @ p["weight_hh"].T)  # (B, H)

    # -- torch interop -----------------------------------------------------------------------
    @classmethod
    def from_torch(cls, module: nn.RNN, *, init: str = "torch") -> RNN:
        """A copy of a tanh `torch.nn.RNN` computing the same function (b = b_ih + b_hh)."""
        if not isinstance(module, nn.RNN) or module.nonlinearity != "tanh":
            raise ValueError("module must be a torch.nn.RNN with nonlinearity='tanh'")
        new = cls(**cls._from_torch_kwargs(module, init))
        with torch.no_grad():
            for layer, d, sfx in new._torch_layers():
                p = new.direction_parameters(layer, d)
                p["weight_ih"].copy_(getattr(module, "weight_ih" + sfx))
                p["weight_hh"].copy_(getattr(module, "weight_hh" + sfx))
                if new.bias:
                    p["bias"].copy_(
                        getattr(module, "bias_ih" + sfx) + getattr(module, "bias_hh" + sfx)
                    )
        return new

    def to_torch(self) -> nn.RNN:
        """A `torch.nn.RNN` computing the same function (b_ih = b, b_hh = 0)."""
        module = nn.RNN(nonlinearity="tanh", **self._torch_kwargs())
        with torch.no_grad():
            for layer, d, sfx in self._torch_layers():
                p = self.direction_parameters(layer, d)
                getattr(module, "weight_ih" + sfx).copy_(p["weight_ih"])
                getattr(module, "weight_hh" + sfx).copy_(p["weight_hh"])
                if self.bias:
                    getattr(module, "bias_ih" + sfx).copy_(p["bias"])
                    getattr(module, "bias_hh" + sfx).zero_()
        return module
