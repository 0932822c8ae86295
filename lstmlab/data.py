"""``Batch``: the one container that tasks yield, models read and objectives average over.

Layout (batch-first, zero-padded to the longest sequence):

    inputs          (B, T, I)  float
    lengths         (B,)       long, 1 <= lengths[b] <= T
    targets         depends on the model's output and read mode:
                      read="last":  (B, O) float, or (B,) long class indices (softmax)
                      read="every": (B, T, O) float, or (B, T) long class indices (softmax)
                      output="ctc": (B, S) long label sequences, padded with any value
    target_lengths  (B,) long, only for CTC
    initial_state   (h0, c0) of an LSTM stack, each (layers·directions, B, ·), or None (zero):
                    the state carried over from the previous chunk of a text stream
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

__all__ = ["Batch", "lengths_mask"]


def lengths_mask(lengths: Tensor, T: int) -> Tensor:
    """Boolean mask (B, T): True where step t < lengths[b]."""
    return torch.arange(T, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


@dataclass(frozen=True)
class Batch:
    inputs: Tensor
    targets: Tensor
    lengths: Tensor
    target_lengths: Tensor | None = None
    initial_state: tuple[Tensor, Tensor] | None = None

    def __post_init__(self) -> None:
        if self.inputs.dim() != 3:
            raise ValueError(
                f"Batch.inputs must be (B, T, I), got shape {tuple(self.inputs.shape)}"
            )
        B, T, _ = self.inputs.shape
        if self.lengths.shape != (B,):
            raise ValueError(
                f"Batch.lengths must have shape ({B},), got {tuple(self.lengths.shape)}"
            )
        if B and (int(self.lengths.min()) < 1 or int(self.lengths.max()) > T):
            raise ValueError(f"Batch.lengths must lie in [1, {T}] (the padded length)")
        if self.targets.shape[:1] != (B,):
            raise ValueError(
                f"Batch.targets must start with the batch size {B}, "
                f"got shape {tuple(self.targets.shape)}"
            )

    def __len__(self) -> int:
        return self.inputs.shape[0]

    @property
    def max_length(self) -> int:
        return self.inputs.shape[1]

    def mask(self) -> Tensor:
        """(B, T) bool, True on valid steps."""
        return lengths_mask(self.lengths, self.max_length)

    def to(self, device=None, dtype: torch.dtype | None = None) -> Batch:
        """Move to ``device``; cast floating tensors (inputs, float targets) to ``dtype``."""

        def mv(x: Tensor | None, cast: bool) -> Tensor | None:
            if x is None:
                return None
            if cast and dtype is not None and x.is_floating_point():
                return x.to(device=device, dtype=dtype)
            return x.to(device=device)

        return Batch(
            mv(self.inputs, True),
            mv(self.targets, True),
            mv(self.lengths, False),
            mv(self.target_lengths, False),
            None if self.initial_state is None else tuple(mv(s, True) for s in self.initial_state),  # type: ignore[arg-type]
        )

    def index(self, idx: Tensor | slice) -> Batch:
        """Sub-batch of the rows ``idx`` (padding is kept at this batch's T)."""
        tl = None if self.target_lengths is None else self.target_lengths[idx]
        return replace(
            self,
            inputs=self.inputs[idx],
            targets=self.targets[idx],
            lengths=self.lengths[idx],
            target_lengths=tl,
            initial_state=None
            if self.initial_state is None
            else tuple(s[:, idx] for s in self.initial_state),  # type: ignore[arg-type]
        )
