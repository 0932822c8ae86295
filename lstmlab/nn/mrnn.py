"""Multiplicative RNN (Sutskever, Martens & Hinton 2011; seed 001 Eq. 3).

The recurrent matrix depends on the current input through a factorisation,

    W_hh(x_t) = W_hm diag(W_mx x_t) W_mh,

so each input character selects its own transition matrix. mLSTM (SPEC S1) reuses the same
multiplicative intermediate state m_t. torch has no counterpart; the test holds this layer
against a step-by-step reference that builds W_hh(x_t) as an explicit matrix.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lstmlab.nn.baselines import RecurrentBaseline, check_size


class MRNN(RecurrentBaseline):
    """Multiplicative RNN, stacked and optionally bidirectional.

    Per layer and direction, with M = multiplicative_size:

        m_t = (W_mx x_t) ⊙ (W_mh h_{t-1})            multiplicative state, size M
        h_t = tanh( W_hx x_t + W_hm m_t + b )

    which is h_t = tanh(W_hx x_t + W_hh(x_t) h_{t-1} + b) with
    W_hh(x_t) = W_hm diag(W_mx x_t) W_mh (seed 001 Eq. 3, where W_mx is called W_mi).
    The time loop does two recurrent matmuls per step (W_mh, then W_hm); both input
    projections W_hx x_t + b and W_mx x_t are one matmul before the loop.

    Parameters (``_l{k}`` for layer k, ``_l{k}_reverse`` for its reverse direction):
      - ``weight_hx_l{k}``: (H, I_k), I_0 = input_size, I_k = num_directions·H for k > 0;
      - ``weight_mx_l{k}``: (M, I_k);
      - ``weight_mh_l{k}``: (M, H);
      - ``weight_hm_l{k}``: (H, M);
      - ``bias_l{k}``:      (H,) (absent if bias=False).

    Args:
        multiplicative_size: M, default hidden_size.
        Others as `lstmlab.nn.RNN`.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        multiplicative_size: int | None = None,
        bidirectional: bool = False,
        batch_first: bool = False,
        bias: bool = True,
        init: str = "uniform",
        init_scale: float | None = None,
        input_scale: float = 1.0,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        check_size("input_size", input_size)  # so errors come in argument order
        if multiplicative_size is None:
            multiplicative_size = check_size("hidden_size", hidden_size)
        # set before the base class registers parameters, which reads it in _direction_shapes
        self.multiplicative_size = check_size("multiplicative_size", multiplicative_size)
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bidirectional=bidirectional,
            batch_first=batch_first,
            bias=bias,
            init=init,
            init_scale=init_scale,
            input_scale=input_scale,
            dtype=dtype,
            device=device,
        )

    _input_weights = ("weight_hx", "weight_mx")

    def _direction_shapes(self, in_size: int) -> dict[str, tuple[int, ...]]:
        H, M = self.hidden_size, self.multiplicative_size
        return {
            "weight_hx": (H, in_size),
            "weight_mx": (M, in_size),
            "weight_mh": (M, H),
            "weight_hm": (H, M),
            "bias": (H,),
        }

    def _project(self, p: dict[str, Tensor], x: Tensor) -> Tensor:
        # (T, B, I) → (T, B, H + M): [W_hx x_t + b, W_mx x_t] for every step in one matmul
        w = torch.cat([p["weight_hx"], p["weight_mx"]])  # (H + M, I)
        xp = x @ w.T
        if p["bias"] is not None:
            xp = xp + torch.cat([p["bias"], p["bias"].new_zeros(self.multiplicative_size)])
        return xp

    def _step(self, p: dict[str, Tensor], xp_t: Tensor, h: Tensor) -> Tensor:
        xh, xm = xp_t.split([self.hidden_size, self.multiplicative_size], dim=-1)
        m = xm * (h @ p["weight_mh"].T)  # (B, M)
        return torch.tanh(xh + m @ p["weight_hm"].T)  # (B, H)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", multiplicative_size={self.multiplicative_size}"
