"""Adam (Kingma & Ba 2015), the modern baseline of SPEC S3, with the same clipping as SGD.

m ← β1 m + (1−β1) g;  v ← β2 v + (1−β2) g²;  θ ← θ − ε m̂ / (√v̂ + δ) with bias-corrected m̂, v̂.
Written out (not torch.optim.Adam) because optimizers here see a flat vector through the
objective contract, never ``nn.Parameter``s; a test compares it with torch.optim.Adam.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lstmlab.optim.base import Optimizer, StepInfo, finite
from lstmlab.optim.sgd import clip_gradient

__all__ = ["Adam"]


class Adam(Optimizer):
    """Args: lr*, beta1*, beta2*, eps (δ), clip_norm, clip_value, nonfinite_shrink (* schedule)."""

    def __init__(
        self,
        lr: Any = 1e-3,
        beta1: Any = 0.9,
        beta2: Any = 0.999,
        *,
        eps: float = 1e-8,
        clip_norm: float | None = None,
        clip_value: float | None = None,
        nonfinite_shrink: float = 0.5,
    ) -> None:
        super().__init__(lr=lr, beta1=beta1, beta2=beta2)
        self.eps, self.clip_norm, self.clip_value = eps, clip_norm, clip_value
        self.nonfinite_shrink = nonfinite_shrink
        self.m: Tensor | None = None
        self.v: Tensor | None = None
        self.t = 0  # accepted updates (bias correction)
        self.scale = 1.0

    def _step(self, obj) -> StepInfo:
        x = obj.get_params()
        f, g = obj.loss_and_grad()
        info = StepInfo(iteration=self.iteration, loss=f, grad_norm=float(g.norm()))
        if finite(f, g):
            g = clip_gradient(g, self.clip_value, self.clip_norm)
            b1, b2, lr = self.hp("beta1"), self.hp("beta2"), self.hp("lr") * self.scale
            m = torch.zeros_like(x) if self.m is None else self.m
            v = torch.zeros_like(x) if self.v is None else self.v
            t = self.t + 1
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            m_hat = m / (1 - b1**t)
            v_hat = v / (1 - b2**t)
            x_new = x - lr * m_hat / (v_hat.sqrt() + self.eps)
            if bool(torch.isfinite(x_new).all()):
                obj.set_params(x_new)
                self.m, self.v, self.t = m, v, t
                self.scale = min(1.0, 2.0 * self.scale)
                info.step_size = lr
                return info
        self.scale *= self.nonfinite_shrink
        return info.reject(f"non-finite loss or gradient; step scale now {self.scale:.3g}")

    def _state(self) -> dict[str, Any]:
        return {"m": self.m, "v": self.v, "t": self.t, "scale": self.scale}

    def _load_state(self, s: dict[str, Any]) -> None:
        self.m, self.v, self.t, self.scale = s["m"], s["v"], int(s["t"]), float(s["scale"])
