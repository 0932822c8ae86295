"""Scorers: metrics and success tests computed from predictions after the output nonlinearity.

Every scorer has the same four parts, so the training loop can score any task blindly:

    sums(pred, batch) -> dict   additive sums and counts over the batch (float64 arithmetic)
    finish(sums)      -> dict   the metrics
    solved(metrics)   -> bool   the success test
    wrong(pred, batch)-> (B,)   which sequences count as wrong (where the task defines it)

Splitting ``sums`` from ``finish`` lets a split be scored in minibatches with the same result.
Log-likelihoods are natural-log (nats) except ``bits_per_char``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lstmlab.data import Batch

__all__ = [
    "RealLast",
    "BinaryLast",
    "ClassLast",
    "ClassEvery",
    "BitsPerChar",
    "BernoulliEvery",
    "CTCLabels",
    "IGNORE",
]

IGNORE = -100  # class target of a step that is not scored (torch's default ignore_index)
_EPS = 1e-12


def _log(p: Tensor) -> Tensor:
    return torch.log(p.double().clamp_min(_EPS))


class RealLast:
    """Real-valued target at the last step (adding, multiplication).

    A sequence is wrong when |prediction − target| >= threshold (0.04 in both conventions).
    ``rule`` picks the success test:
      "ms2011":  fewer than 1% of sequences wrong (Martens & Sutskever 2011);
      "1997":    mean absolute error < 0.01 and at most ``max_wrong`` sequences wrong — H&S
                 1997 stop training when the average error is below 0.01 and the 2,000 most
                 recent sequences were all processed correctly (``max_wrong`` = 0); applied
                 to an evaluated set, since batch learning has no "most recent" sequences;
      "seed000": test mean absolute error < 0.01 (Lyu & Zhu, Sec. 5.1).
    """

    metric = "mae"
    higher_is_better = False

    def __init__(self, rule: str, threshold: float = 0.04, max_wrong: int = 0) -> None:
        if rule not in ("ms2011", "1997", "seed000"):
            raise ValueError(f"rule must be 'ms2011', '1997' or 'seed000', got {rule!r}")
        self.rule, self.threshold, self.max_wrong = rule, threshold, max_wrong

    def _err(self, pred: Tensor, batch: Batch) -> Tensor:
        return (pred.double().reshape(len(batch), -1) - batch.targets.double()).abs()[:, 0]

    def wrong(self, pred: Tensor, batch: Batch) -> Tensor:
        return self._err(pred, batch) >= self.threshold

    def sums(self, pred: Tensor, batch: Batch) -> dict[str, float]:
        e = self._err(pred, batch)
        return {
            "n": float(len(e)),
            "abs": float(e.sum()),
            "sq": float((e * e).sum()),
            "wrong": float((e >= self.threshold).sum()),
        }

    def finish(self, s: dict[str, float]) -> dict[str, float]:
        n = s["n"]
        return {
            "mae": s["abs"] / n,
            "mse": s["sq"] / n,
            "frac_wrong": s["wrong"] / n,
            "n_wrong": s["wrong"],
            "n": n,
        }

    def solved(self, m: dict[str, float]) -> bool:
        if self.rule == "ms2011":
            return m["frac_wrong"] < 0.01
        if self.rule == "1997":
            return m["mae"] < 0.01 and m["n_wrong"] <= self.max_wrong
        return m["mae"] < 0.01


class BinaryLast:
    """One Bernoulli output at the last step (xor): wrong when (p > 0.5) != target."""

    metric = "frac_wrong"
    higher_is_better = False

    def wrong(self, pred: Tensor, batch: Batch) -> Tensor:
        p = pred.reshape(len(batch), -1)[:, 0]
        return (p > 0.5) != (batch.targets.reshape(len(batch), -1)[:, 0] > 0.5)

    def sums(self, pred: Tensor, batch: Batch) -> dict[str, float]:
        p = pred.double().reshape(len(batch), -1)[:, 0].clamp(_EPS, 1 - _EPS)
        t = batch.targets.double().reshape(len(batch), -1)[:, 0]
        nll = -(t * p.log() + (1 - t) * (1 - p).log())
        return {
            "n": float(len(p)),
            "nll": float(nll.sum()),
            "wrong": float(self.wrong(pred, batch).sum()),
        }

    def finish(self, s: dict[str, float]) -> dict[str, float]:
        n = s["n"]
        return {
            "frac_wrong": s["wrong"] / n,
            "accuracy": 1 - s["wrong"] / n,
            "nll": s["nll"] / n,
            "n": n,
        }

    def solved(self, m: dict[str, float]) -> bool:
        return m["frac_wrong"] < 0.01


class ClassLast:
    """A class at the last step (temporal order, JapaneseVowels): argmax must match.

    solved: fewer than ``max_frac_wrong`` of the sequences wrong (None: never; the task then
    has no success test of its own and a run stops on its other rules).
    """

    metric = "accuracy"
    higher_is_better = True

    def __init__(self, max_frac_wrong: float | None = 0.01) -> None:
        self.max_frac_wrong = max_frac_wrong

    def wrong(self, pred: Tensor, batch: Batch) -> Tensor:
        return pred.argmax(-1) != batch.targets

    def sums(self, pred: Tensor, batch: Batch) -> dict[str, float]:
        nll = -_log(pred.gather(-1, batch.targets.unsqueeze(-1)))
        return {
            "n": float(len(batch)),
            "nll": float(nll.sum()),
            "wrong": float(self.wrong(pred, batch).sum()),
        }

    def finish(self, s: dict[str, float]) -> dict[str, float]:
        n = s["n"]
        return {
            "accuracy": 1 - s["wrong"] / n,
            "frac_wrong": s["wrong"] / n,
            "nll": s["nll"] / n,
            "n": n,
        }

    def solved(self, m: dict[str, float]) -> bool:
        return self.max_frac_wrong is not None and m["frac_wrong"] < self.max_frac_wrong


def _step_mask(batch: Batch) -> Tensor:
    """(B, T) bool: valid steps whose class target is scored."""
    return batch.mask() & (batch.targets != IGNORE)


class ClassEvery:
    """A class at every step (random permutation, memorization, framewise labelling).

    Scored steps are the valid ones whose target is not ``IGNORE``. A sequence is wrong when its
    argmax is wrong at the last valid step (``wrong_on="last"``: permutation) or at any scored
    step (``"all"``: memorization). Success: fewer than ``max_frac_wrong`` sequences wrong.
    """

    metric = "frac_wrong"
    higher_is_better = False

    def __init__(self, wrong_on: str = "all", max_frac_wrong: float | None = 0.01) -> None:
        if wrong_on not in ("all", "last"):
            raise ValueError(f"wrong_on must be 'all' or 'last', got {wrong_on!r}")
        self.wrong_on, self.max_frac_wrong = wrong_on, max_frac_wrong

    def _step_wrong(self, pred: Tensor, batch: Batch) -> tuple[Tensor, Tensor]:
        mask = _step_mask(batch)
        return (pred.argmax(-1) != batch.targets) & mask, mask

    def wrong(self, pred: Tensor, batch: Batch) -> Tensor:
        step_wrong, _ = self._step_wrong(pred, batch)
        if self.wrong_on == "last":
            return step_wrong.gather(1, (batch.lengths - 1).unsqueeze(1))[:, 0]
        return step_wrong.any(1)

    def sums(self, pred: Tensor, batch: Batch) -> dict[str, float]:
        step_wrong, mask = self._step_wrong(pred, batch)
        t = batch.targets.clamp_min(0).unsqueeze(-1)
        nll = -_log(pred.gather(-1, t))[..., 0] * mask
        return {
            "n": float(len(batch)),
            "steps": float(mask.sum()),
            "nll": float(nll.sum()),
            "step_wrong": float(step_wrong.sum()),
            "wrong": float(self.wrong(pred, batch).sum()),
        }

    def finish(self, s: dict[str, float]) -> dict[str, float]:
        return {
            "frac_wrong": s["wrong"] / s["n"],
            "step_error": s["step_wrong"] / s["steps"],
            "nll_per_step": s["nll"] / s["steps"],
            "n": s["n"],
        }

    def solved(self, m: dict[str, float]) -> bool:
        return self.max_frac_wrong is not None and m["frac_wrong"] < self.max_frac_wrong


class BitsPerChar(ClassEvery):
    """Next-character softmax: bits per character over every scored character.

    solved: bits_per_char <= ``target`` (None: no success test of its own).
    """

    metric = "bits_per_char"

    def __init__(self, target: float | None = None) -> None:
        super().__init__(wrong_on="all", max_frac_wrong=None)
        self.target = target

    def finish(self, s: dict[str, float]) -> dict[str, float]:
        return {
            "bits_per_char": s["nll"] / s["steps"] / math.log(2),
            "char_error": s["step_wrong"] / s["steps"],
            "chars": s["steps"],
        }

    def solved(self, m: dict[str, float]) -> bool:
        return self.target is not None and m["bits_per_char"] <= self.target


class BernoulliEvery:
    """Independent Bernoulli outputs at every step (polyphonic music).

    nll_per_step: Σ over keys of the binary cross-entropy, averaged over all valid steps of all
    sequences (nats; the convention of the JSB/Nottingham/MuseData/Piano-midi literature).
    frame_accuracy: TP / (TP + FP + FN) with p > 0.5 (Bay et al. 2009), over all frames.
    solved: nll_per_step <= ``target`` (None: no success test of its own).
    """

    metric = "nll_per_step"
    higher_is_better = False

    def __init__(self, target: float | None = None) -> None:
        self.target = target

    def wrong(self, pred: Tensor, batch: Batch) -> Tensor:
        on = (pred > 0.5) & batch.mask().unsqueeze(-1)
        return ((on != (batch.targets > 0.5)) & batch.mask().unsqueeze(-1)).flatten(1).any(1)

    def sums(self, pred: Tensor, batch: Batch) -> dict[str, float]:
        mask = batch.mask().unsqueeze(-1)  # (B, T, 1)
        p = pred.double().clamp(_EPS, 1 - _EPS)
        t = batch.targets.double()
        nll = -(t * p.log() + (1 - t) * (1 - p).log()) * mask
        on, truth = (pred > 0.5) & mask, (batch.targets > 0.5) & mask
        return {
            "steps": float(batch.lengths.sum()),
            "nll": float(nll.sum()),
            "tp": float((on & truth).sum()),
            "fp": float((on & ~truth).sum()),
            "fn": float((~on & truth).sum()),
        }

    def finish(self, s: dict[str, float]) -> dict[str, float]:
        denom = s["tp"] + s["fp"] + s["fn"]
        return {
            "nll_per_step": s["nll"] / s["steps"],
            "frame_accuracy": s["tp"] / denom if denom else 1.0,
            "steps": s["steps"],
        }

    def solved(self, m: dict[str, float]) -> bool:
        return self.target is not None and m["nll_per_step"] <= self.target


def edit_distance(a: list[int], b: list[int]) -> int:
    """Levenshtein distance (insertions, deletions, substitutions all cost 1)."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, y in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        prev = cur
    return prev[-1]


def greedy_ctc_decode(pred: Tensor, lengths: Tensor, blank: int = 0) -> list[list[int]]:
    """Best-path decoding: argmax per frame, merge repeats, drop blanks."""
    best = pred.argmax(-1)
    out = []
    for row, n in zip(best.tolist(), lengths.tolist(), strict=True):
        seq, last = [], None
        for k in row[:n]:
            if k != last and k != blank:
                seq.append(k)
            last = k
        out.append(seq)
    return out


def _ctc_log(pred: Tensor) -> Tensor:
    """Per-frame log-probabilities from probabilities or from log-probabilities (the model's
    log-softmax): a softmax output is never negative, a log-softmax output always has a
    negative entry, so the sign tells them apart."""
    return pred.double() if bool((pred < 0).any()) else _log(pred)


class CTCLabels:
    """CTC sequence labelling: per-frame probabilities (or log-probabilities, as the model's
    log-softmax gives them) over blank (0) + labels.

    label_error_rate: total edit distance of the best-path decoding to the targets, divided by
    the total target length (Graves et al. 2006). nll: CTC negative log-likelihood per sequence.
    solved: label_error_rate <= ``target`` (None: no success test of its own).
    """

    metric = "label_error_rate"
    higher_is_better = False

    def __init__(self, target: float | None = None) -> None:
        self.target = target

    def _dists(self, pred: Tensor, batch: Batch) -> list[int]:
        decoded = greedy_ctc_decode(pred, batch.lengths)
        tl = batch.target_lengths.tolist()
        refs = [row[:n] for row, n in zip(batch.targets.tolist(), tl, strict=True)]
        return [edit_distance(d, r) for d, r in zip(decoded, refs, strict=True)]

    def wrong(self, pred: Tensor, batch: Batch) -> Tensor:
        return torch.tensor([d > 0 for d in self._dists(pred, batch)])

    def sums(self, pred: Tensor, batch: Batch) -> dict[str, float]:
        dists = self._dists(pred, batch)
        logp = _ctc_log(pred).transpose(0, 1)  # (T, B, C)
        nll = F.ctc_loss(
            logp,
            batch.targets,
            batch.lengths,
            batch.target_lengths,
            blank=0,
            reduction="sum",
            zero_infinity=True,
        )
        return {
            "n": float(len(batch)),
            "labels": float(batch.target_lengths.sum()),
            "edits": float(sum(dists)),
            "wrong": float(sum(d > 0 for d in dists)),
            "nll": float(nll),
        }

    def finish(self, s: dict[str, float]) -> dict[str, float]:
        return {
            "label_error_rate": s["edits"] / s["labels"],
            "seq_error": s["wrong"] / s["n"],
            "nll": s["nll"] / s["n"],
            "n": s["n"],
        }

    def solved(self, m: dict[str, float]) -> bool:
        return self.target is not None and m["label_error_rate"] <= self.target
