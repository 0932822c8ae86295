"""Stochastic gradient descent with momentum (SPEC S3, seed 000 Sec. 5.1, Greff et al.).

Direction: −g after optional value clipping (Greff's [−1, 1]) and norm clipping (Pascanu
et al. 2013); momentum, classical or Nesterov in Sutskever et al.'s (2013) form

    classical:  v ← μ v − ε g(θ)          θ ← θ + v
    Nesterov:   v ← μ v − ε g(θ + μ v)     θ ← θ + v     (gradient at the look-ahead point)

with ε optionally rescaled by (1 − μ) (Greff). "One sample per update" (seed 000's strict
SGD) is this optimizer stepped on one-sample objectives; minibatch gradient descent is the same
on minibatches. Hand-written: a dozen lines, and the momentum forms are the subject.

Non-finite gradient (or update): the step is rejected, the parameters stay, and the internal
step scale is multiplied by ``nonfinite_shrink`` (restored ×2 per good step up to 1).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lstmlab.optim.base import Optimizer, StepInfo, finite

__all__ = ["SGD", "clip_gradient"]


CLIP_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_'s guard: g · c / (‖g‖ + 1e-6)


def clip_gradient(g: Tensor, clip_value: float | None, clip_norm: float | None) -> Tensor:
    """Clamp entries to [−clip_value, clip_value], then rescale the whole (flat) gradient to
    total norm ≤ clip_norm exactly as ``torch.nn.utils.clip_grad_norm_`` does:
    g ← g · min(1, c / (‖g‖₂ + 1e-6)), so a plain PyTorch loop and lstmlab step alike
    (``tests/training/test_plain_torch_loop.py``)."""
    if clip_value is not None:
        g = g.clamp(-clip_value, clip_value)
    if clip_norm is not None:
        coef = clip_norm / (float(g.norm()) + CLIP_EPS)
        if coef < 1.0:
            g = g * coef
    return g


class SGD(Optimizer):
    """Minibatch SGD with classical/Nesterov momentum and clipping.

    Args (each a constant or a schedule over iterations where marked *):
        lr*: learning rate ε. momentum*: μ (0 = plain gradient descent).
        nesterov: Sutskever's Nesterov form. rescale: use ε·(1 − μ).
        clip_norm / clip_value: gradient clipping (None = off).
        nonfinite_shrink: step-scale factor after a non-finite evaluation.
    """

    def __init__(
        self,
        lr: Any = 0.1,
        momentum: Any = 0.0,
        *,
        nesterov: bool = False,
        rescale: bool = False,
        clip_norm: float | None = None,
        clip_value: float | None = None,
        nonfinite_shrink: float = 0.5,
    ) -> None:
        super().__init__(lr=lr, momentum=momentum)
        if clip_norm is not None and not clip_norm > 0:
            raise ValueError(f"clip_norm must be > 0 or None, got {clip_norm!r}")
        if clip_value is not None and not clip_value > 0:
            raise ValueError(f"clip_value must be > 0 or None, got {clip_value!r}")
        if not 0 < nonfinite_shrink < 1:
            raise ValueError(f"nonfinite_shrink must lie in (0, 1), got {nonfinite_shrink!r}")
        self.nesterov, self.rescale = nesterov, rescale
        self.clip_norm, self.clip_value = clip_norm, clip_value
        self.nonfinite_shrink = nonfinite_shrink
        self.velocity: Tensor | None = None
        self.scale = 1.0

    def _step(self, obj) -> StepInfo:
        x = obj.get_params()
        mu = self.hp("momentum")
        lr = self.hp("lr") * self.scale * ((1.0 - mu) if self.rescale else 1.0)
        v = self.velocity if self.velocity is not None else torch.zeros_like(x)
        at = x + mu * v if (self.nesterov and mu != 0.0) else None
        f, g = obj.loss_and_grad(at)
        info = StepInfo(iteration=self.iteration, loss=f, grad_norm=float(g.norm()))
        if finite(f, g):
            g = clip_gradient(g, self.clip_value, self.clip_norm)
            v_new = mu * v - lr * g
            x_new = x + v_new
            if bool(torch.isfinite(x_new).all()):
                obj.set_params(x_new)
                self.velocity = v_new
                self.scale = min(1.0, 2.0 * self.scale)
                info.step_size = lr
                return info
        self.scale *= self.nonfinite_shrink
        return info.reject(f"non-finite loss or gradient; step scale now {self.scale:.3g}")

    def _state(self) -> dict[str, Any]:
        return {"velocity": self.velocity, "scale": self.scale}

    def _load_state(self, s: dict[str, Any]) -> None:
        self.velocity, self.scale = s["velocity"], float(s["scale"])
