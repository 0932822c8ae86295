"""Gated recurrent unit (Cho et al. 2014), exactly as `torch.nn.GRU` computes it."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lstmlab.nn.baselines import RecurrentBaseline


class GRU(RecurrentBaseline):
    """GRU, stacked and optionally bidirectional; same interface and function as `torch.nn.GRU`.

    Per layer and direction (σ the logistic sigmoid):

        r_t = σ( W_r x_t + R_r h_{t-1} + b_r )                    reset gate
        z_t = σ( W_z x_t + R_z h_{t-1} + b_z )                    update gate
        n_t = tanh( W_n x_t + b_n + r_t ⊙ (R_n h_{t-1} + b_hn) )  candidate
        h_t = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t-1}

    The reset gate acts *after* the recurrent product (torch's and cuDNN's form, not Cho et
    al.'s R_n (r ⊙ h)), so R_r, R_z, R_n are one (3H, H) matmul per step.

    Parameters (``_l{k}`` for layer k, ``_l{k}_reverse`` for its reverse direction), gate
    blocks in ``r, z, n`` order, as torch:
      - ``weight_ih_l{k}`` [W_r; W_z; W_n]: (3H, I_k), I_0 = input_size, I_k = D·H for k > 0;
      - ``weight_hh_l{k}`` [R_r; R_z; R_n]: (3H, H);
      - ``bias_l{k}``      [b_r; b_z; b_n]: (3H,) — torch's b_ih with b_hh's r and z parts added;
      - ``bias_hn_l{k}``   b_hn: (H,) — torch's b_hh n part, the one recurrent bias that cannot
        be merged because r_t multiplies it.

    Args: as `lstmlab.nn.RNN`.
    """

    def _direction_shapes(self, in_size: int) -> dict[str, tuple[int, ...]]:
        H = self.hidden_size
        return {
            "weight_ih": (3 * H, in_size),
            "weight_hh": (3 * H, H),
            "bias": (3 * H,),
            "bias_hn": (H,),
        }

    def _project(self, p: dict[str, Tensor], x: Tensor) -> Tensor:
        # (T, B, I) → (T, B, 3H): [W_r x + b_r, W_z x + b_z, W_n x + b_n] in one matmul
        xp = x @ p["weight_ih"].T
        return xp if p["bias"] is None else xp + p["bias"]

    def _step(self, p: dict[str, Tensor], xp_t: Tensor, h: Tensor) -> Tensor:
        H = self.hidden_size
        hp = h @ p["weight_hh"].T  # (B, 3H)
        rz = torch.sigmoid(xp_t[:, : 2 * H] + hp[:, : 2 * H])  # (B, 2H)
        r, z = rz[:, :H], rz[:, H:]
        hn = hp[:, 2 * H :] if p["bias_hn"] is None else hp[:, 2 * H :] + p["bias_hn"]
        n = torch.tanh(xp_t[:, 2 * H :] + r * hn)  # (B, H)
        return n + z * (h - n)  # = (1 − z) ⊙ n + z ⊙ h

    # -- torch interop -----------------------------------------------------------------------
    @classmethod
    def from_torch(cls, module: nn.GRU, *, init: str = "torch") -> GRU:
        """A copy of a `torch.nn.GRU` computing the same function.

        b = b_ih + [b_hr; b_hz; 0] and b_hn = b_hh's n part.
        """
        if not isinstance(module, nn.GRU):
            raise ValueError(f"module must be a torch.nn.GRU, got {type(module).__name__}")
        new = cls(**cls._from_torch_kwargs(module, init))
        H = new.hidden_size
        with torch.no_grad():
            for layer, d, sfx in new._torch_layers():
                p = new.direction_parameters(layer, d)
                p["weight_ih"].copy_(getattr(module, "weight_ih" + sfx))
                p["weight_hh"].copy_(getattr(module, "weight_hh" + sfx))
                if new.bias:
                    b_ih, b_hh = getattr(module, "bias_ih" + sfx), getattr(module, "bias_hh" + sfx)
                    p["bias"].copy_(b_ih)
                    p["bias"][: 2 * H] += b_hh[: 2 * H]
                    p["bias_hn"].copy_(b_hh[2 * H :])
        return new

    def to_torch(self) -> nn.GRU:
        """A `torch.nn.GRU` computing the same function (b_ih = b, b_hh = [0; 0; b_hn])."""
        module = nn.GRU(**self._torch_kwargs())
        H = self.hidden_size
        with torch.no_grad():
            for layer, d, sfx in self._torch_layers():
                p = self.direction_parameters(layer, d)
                getattr(module, "weight_ih" + sfx).copy_(p["weight_ih"])
                getattr(module, "weight_hh" + sfx).copy_(p["weight_hh"])
                if self.bias:
                    getattr(module, "bias_ih" + sfx).copy_(p["bias"])
                    b_hh = getattr(module, "bias_hh" + sfx)
                    b_hh.zero_()
                    b_hh[2 * H :] = p["bias_hn"]
        return module
