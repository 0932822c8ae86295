"""Sorting a padded batch by length, shared by the hand-written engines.

Sorted by length (descending), the rows alive at step t are the first n_t, so an engine can work
on contiguous slices instead of masks (the semantics of packed sequences)."""

from __future__ import annotations

import torch
from torch import Tensor


def sort_by_length(lengths: Tensor | None, T: int) -> tuple[Tensor, Tensor, list[int]] | None:
    """(perm, inverse perm, batch sizes n_t) for ``lengths`` (B,), or None when all equal T."""
    if lengths is None or bool((lengths == T).all()):
        return None
    sorted_len, perm = torch.sort(lengths, descending=True, stable=True)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel(), device=perm.device)
    steps = torch.arange(T, device=lengths.device)
    batch_sizes = (sorted_len.unsqueeze(0) > steps.unsqueeze(1)).sum(1).tolist()
    return perm, inv, batch_sizes
