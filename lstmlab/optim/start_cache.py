"""Reuse (f, g) at the start of a line-search step — only when the objective is unchanged.

L-BFGS and nonlinear CG end a step knowing f and ∇f at the new point; when the next step
comes back to the *same function* at the same parameters (full-batch training), computing them
again would waste a gradient. "The same function" is more than the same objective object and
parameters: between two steps the training loop may advance the epoch, which moves gate-
sharpness schedules (``model.set_epoch``), or hand the objective another batch. So the key is

    (the objective object, its parameters, its batch and that batch's tensors' versions,
     the model's buffers (the schedule epoch lives there) and train/eval mode,
     and ``objective.state_key()`` when an objective declares more)

and any difference recomputes (f, g). Hand-written: the project's cost accounting depends on
exactly when a gradient is computed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lstmlab.optim.base import StepInfo

__all__ = ["StartCache", "objective_key", "same_key"]


def _tensor_versions(obj: Any) -> tuple:
    out = []
    for name in ("inputs", "targets", "lengths", "target_lengths"):
        t = getattr(obj, name, None)
        if isinstance(t, Tensor):
            out.append((name, id(t), t._version))
    return tuple(out)


def objective_key(obj: Any) -> list[Any]:
    """Everything besides the parameters that decides what ``obj.loss_and_grad()`` returns."""
    key: list[Any] = [("objective", obj)]
    batch = getattr(obj, "batch", None)
    if batch is not None:
        key.append(("batch", batch))
        key.append(("batch tensors", _tensor_versions(batch)))
    model = getattr(obj, "model", None)
    if isinstance(model, torch.nn.Module):
        key.append(("training", model.training))
        for name, buf in model.named_buffers():
            key.append((f"buffer {name}", buf.detach().clone()))
    extra = getattr(obj, "state_key", None)
    if callable(extra):
        key.append(("state_key", extra()))
    return key


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return (
            isinstance(a, Tensor)
            and isinstance(b, Tensor)
            and a.shape == b.shape
            and a.dtype == b.dtype
            and bool(torch.equal(a, b))
        )
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if type(a).__eq__ is object.__eq__ or isinstance(a, torch.nn.Module):
        return a is b
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - objects without a usable == compare by identity
        return a is b


def same_key(a: list[Any], b: list[Any]) -> bool:
    return len(a) == len(b) and all(
        ka == kb and _same(va, vb) for (ka, va), (kb, vb) in zip(a, b, strict=True)
    )


class StartCache:
    """Reuse (f, g) at the start of a step when the same objective returns unchanged."""

    def __init__(self) -> None:
        self.entry: tuple[list[Any], Tensor, float, Tensor] | None = None

    def start(self, obj) -> tuple[Tensor, float, Tensor]:
        x = obj.get_params()
        e = self.entry
        if e is not None and torch.equal(e[1], x) and same_key(e[0], objective_key(obj)):
            return x, e[2], e[3]
        f, g = obj.loss_and_grad()
        return x, f, g

    def remember(self, obj, x: Tensor, f: float, g: Tensor) -> None:
        self.entry = (objective_key(obj), x.clone(), f, g.clone())

    def finish(self, obj, info: StepInfo, x0: Tensor, x: Tensor, f: float, g: Tensor) -> StepInfo:
        """End a line-search step at x: write it (if it moved), remember (f, g) for the next."""
        if x is not x0:
            obj.set_params(x)
        self.remember(obj, x, f, g)
        info.new_loss, info.grad_norm = f, float(g.norm())
        return info

    def reject(self, info: StepInfo, reason: str) -> StepInfo:
        self.entry = None
        return info.reject(reason)
