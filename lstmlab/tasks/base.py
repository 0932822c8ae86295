"""``Split`` and ``Task``: what every task hands to the rest of lstmlab.

A ``Split`` holds one part of a data set as whole, zero-padded tensors and yields
``lstmlab.data.Batch`` minibatches trimmed to their own longest sequence. A ``Task`` holds its
splits, the four facts a ``SequenceModel`` is built from (``input_size``, ``output_size``,
``output``, ``read``), and a scorer that turns the model's predictions (after the output
nonlinearity) into metrics and a success test.

Symbol-valued inputs (text, temporal order, permutation, memorization) are stored as indices
``(N, T)`` (``-1`` on padding) and expanded to one-hot ``(B, T, one_hot)`` float per batch, so
a 4.8 M-character corpus never exists as a dense one-hot tensor unless ``split.inputs`` is read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from lstmlab.data import Batch

__all__ = ["DataError", "DataNotGiven", "Split", "Task", "OUTPUTS", "READS"]

OUTPUTS = ("linear", "sigmoid", "softmax", "bernoulli", "ctc")
READS = ("last", "every")


class DataError(ValueError):
    """A data file (or cache entry) is missing, empty or malformed; the message names it."""


class DataNotGiven(DataError):
    """The task reads files only the user can give (e.g. the Penn Treebank) and was given none:
    its options are valid, its data is absent (``train --dry-run`` still shows the config)."""


def one_hot(indices: Tensor, size: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """(…,) long with -1 for padding -> (…, size) float, all-zero rows on padding."""
    out = torch.zeros(*indices.shape, size, dtype=dtype)
    valid = indices >= 0
    out[valid, indices[valid]] = 1
    return out


def _as_float(x: Tensor) -> Tensor:
    """Compact binary features (uint8 / bool piano rolls) -> float32; float stays as is."""
    return x if x.is_floating_point() else x.float()


@dataclass(frozen=True, eq=False)
class Split:
    """One split of a task, as whole tensors.

    features        (N, T, I) float (or uint8 0/1, made float per batch), or (N, T) long
                    symbol indices (-1 = padding) when ``one_hot`` is set; ``inputs`` always
                    gives (N, T, I) float
    targets         (N, O) / (N,) long for read="last"; (N, T, O) / (N, T) long for
                    read="every"; (N, S) long for CTC (then ``target_lengths`` (N,))
    lengths         (N,) long, 1 <= lengths <= T
    draw            a generated task's training split with ``fresh`` on: ``draw(k, n)`` is the
                    k-th fresh set of n sequences from the generator (a pure function of k);
                    ``training.loop.minibatch`` then trains every minibatch on a new one
    """

    name: str
    features: Tensor
    targets: Tensor
    lengths: Tensor
    target_lengths: Tensor | None = None
    one_hot: int | None = None  # size of the one-hot code when ``features`` are indices
    per_step: bool = False  # targets carry a time axis (read="every")
    draw: Callable[[int, int], Split] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        n = self.features.shape[0]
        for what, t in (("targets", self.targets), ("lengths", self.lengths)):
            if t.shape[0] != n:
                raise ValueError(f"split {self.name!r}: {what} has {t.shape[0]} rows, not {n}")
        if n == 0:
            raise DataError(f"split {self.name!r} is empty")

    def __len__(self) -> int:
        return self.features.shape[0]

    @property
    def max_length(self) -> int:
        return self.features.shape[1]

    @property
    def inputs(self) -> Tensor:
        """(N, T, I) float. For one-hot splits this materialises the whole code: mind memory."""
        if self.one_hot is None:
            return _as_float(self.features)
        return one_hot(self.features, self.one_hot)

    @property
    def input_size(self) -> int:
        return self.one_hot if self.one_hot is not None else self.features.shape[2]

    def batch(self, idx: Tensor | slice | None = None) -> Batch:
        """The rows ``idx`` (all by default) as one ``Batch``, trimmed to their longest length."""
        if idx is None:
            idx = slice(None)
        lengths = self.lengths[idx]
        T = int(lengths.max())
        feats = self.features[idx][:, :T]
        inputs = one_hot(feats, self.one_hot) if self.one_hot is not None else _as_float(feats)
        targets = self.targets[idx]
        if targets.dtype in (torch.uint8, torch.bool):  # compact binary targets (piano rolls)
            targets = targets.float()
        if self.per_step:
            targets = targets[:, :T]
        tl = None
        if self.target_lengths is not None:
            tl = self.target_lengths[idx]
            targets = targets[:, : max(int(tl.max()), 1)]
        return Batch(inputs, targets, lengths, tl)

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        bucket: bool = False,
    ) -> Iterator[Batch]:
        """Minibatches of ``batch_size`` rows.

        shuffle   random row order from ``generator`` (deterministic given its seed)
        bucket    group rows of similar length (stable sort by length after the shuffle),
                  then shuffle the order of the batches: less padding for text and music
        drop_last drop a final batch smaller than ``batch_size``
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        if bucket:
            order = order[torch.sort(self.lengths[order], stable=True).indices]
        chunks = list(torch.split(order, batch_size))
        if drop_last and chunks and len(chunks[-1]) < batch_size:
            chunks.pop()
        if bucket and shuffle:
            chunks = [chunks[i] for i in torch.randperm(len(chunks), generator=generator)]
        for idx in chunks:
            yield self.batch(idx)


@dataclass(eq=False)
class Task:
    """A task: its splits, how to build the model for it, and how to score it.

    ``evaluate(predictions, data)`` takes the model's predictions *after* the output
    nonlinearity (``model.predict``) for a ``Split`` or ``Batch`` and returns a dict of metrics;
    ``solved(metrics)`` is the task's success test; ``metric`` names the headline metric.
    """

    name: str
    train: Split
    test: Split
    valid: Split | None
    input_size: int
    output_size: int
    output: str  # one of OUTPUTS: the loss the model uses (docs/design.md)
    read: str  # "last" or "every"
    scorer: Any  # a lstmlab.tasks.metrics scorer
    info: dict[str, Any] = field(default_factory=dict)  # convention, source, options, sizes
    bidirectional: bool = False  # the task is meant for bidirectional models
    # inputs are symbol indices (N, T, 1) read through a learned table (SequenceModel's
    # ``embedding``: a width, or "auto"); None: the inputs are the features themselves
    embedding: int | str | None = None

    def __post_init__(self) -> None:
        if self.output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {self.output!r}")
        if self.read not in READS:
            raise ValueError(f"read must be one of {READS}, got {self.read!r}")

    @property
    def metric(self) -> str:
        """The headline metric's key in ``evaluate``'s dict."""
        return self.scorer.metric

    @property
    def higher_is_better(self) -> bool:
        return self.scorer.higher_is_better

    def splits(self) -> dict[str, Split]:
        out = {"train": self.train, "valid": self.valid, "test": self.test}
        return {k: v for k, v in out.items() if v is not None}

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``SequenceModel`` (hidden size and cell are the caller's)."""
        out: dict[str, Any] = {
            "input_size": self.input_size,
            "output_size": self.output_size,
            "output": self.output,
            "read": self.read,
        }
        if self.embedding is not None:
            out["embedding"] = self.embedding
        return out

    def evaluate(self, predictions: Tensor, data: Split | Batch) -> dict[str, float]:
        """Metrics of ``predictions`` (after the output nonlinearity) on a split or batch."""
        batch = data.batch() if isinstance(data, Split) else data
        return self.scorer.finish(self.scorer.sums(self._align(predictions, batch), batch))

    def evaluate_batches(self, pairs: Iterable[tuple[Tensor, Batch]]) -> dict[str, float]:
        """Metrics accumulated over ``(predictions, batch)`` pairs, e.g. a whole split in
        minibatches; equals ``evaluate`` on the concatenation."""
        total: dict[str, float] = {}
        for pred, batch in pairs:
            for k, v in self.scorer.sums(self._align(pred, batch), batch).items():
                total[k] = total.get(k, 0.0) + v
        return self.scorer.finish(total)

    def per_sequence_wrong(self, predictions: Tensor, batch: Batch) -> Tensor:
        """(B,) bool: which sequences the success test counts as wrong (where defined)."""
        return self.scorer.wrong(self._align(predictions, batch), batch)

    def _align(self, pred: Tensor, batch: Batch) -> Tensor:
        """Per-step predictions made on a longer padding (e.g. ``split.inputs``) are cut to
        the batch's padded length; padded steps never count."""
        if self.read == "every" and pred.dim() >= 3 and pred.shape[1] > batch.max_length:
            return pred[:, : batch.max_length]
        return pred

    def solved(self, metrics: dict[str, float]) -> bool:
        """The task's success test (docs/tasks.md lists each)."""
        return bool(self.scorer.solved(metrics))

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(v)}" for k, v in self.splits().items())
        return (
            f"Task({self.name!r}, {sizes}, input_size={self.input_size}, "
            f"output_size={self.output_size}, output={self.output!r}, read={self.read!r}, "
            f"metric={self.metric!r})"
        )
