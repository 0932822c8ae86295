"""Framewise labelling and CTC sequence labelling (SPEC S4.2; seed 002's TIMIT and IAM-OnDB
task types, whose corpora cannot be had here), meant for bidirectional models.

``mode="framewise"``: a softmax class at every frame (``read="every"``), metric frame error.
``mode="ctc"``: a label sequence per input, ``output="ctc"`` (``torch.nn.CTCLoss``, blank 0),
metric label error rate of best-path decoding.

File format (``.npz``, written by ``save_npz``): per split the arrays
    inputs          (N, T, I) float, zero-padded; no NaN or infinity
    lengths         (N,) int, 1 <= lengths <= T
    labels          framewise: (N, T) int, one class per frame
                    ctc:       (N, S) int, the label sequence, padded with anything
    label_lengths   ctc only: (N,) int, 1 <= label_lengths <= S
Class labels are 0..K-1 (K = ``num_classes`` or one more than the largest label seen); for
CTC the task shifts them to 1..K so that 0 is the blank, and ``output_size`` is K + 1.
``path`` is a directory with ``train.npz``, ``test.npz`` and optionally ``valid.npz``, or one
``.npz`` whose keys carry a split prefix (``train_inputs``, ``test_lengths``, ...).

Default (no ``path``): a synthetic corpus made here — each sequence is 3–8 segments of 2–6
frames, consecutive segments of different classes (K = 5); a frame is its class's fixed
prototype (I = 8) plus Gaussian noise (``noise``, default 0.6). Frame labels are the segment
classes; the CTC labels are the segment sequence.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from lstmlab.files import LIMITS, UnreadableFile, human_bytes, npz_declared_bytes, open_user_file
from lstmlab.tasks.base import DataError, Split, Task
from lstmlab.tasks.metrics import ClassEvery, CTCLabels
from lstmlab.tasks.rng import Stream

__all__ = ["make_framewise", "save_npz", "load_npz", "synthetic_segments"]

SPLITS = ("train", "valid", "test")


def save_npz(path, inputs, lengths, labels, label_lengths=None) -> None:
    """Write one split in the framewise/CTC ``.npz`` format."""
    arrays = {"inputs": inputs, "lengths": lengths, "labels": labels}
    if label_lengths is not None:
        arrays["label_lengths"] = label_lengths
    np.savez(path, **{k: np.asarray(v) for k, v in arrays.items()})


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of one ``.npz`` file, read only once it is known to be a regular file whose
    arrays' headers declare at most ``LIMITS["data file"]`` bytes in all."""
    limit = LIMITS["data file"]
    try:
        with open_user_file(path, limit, "data") as fh:
            if os.fstat(fh.fileno()).st_size == 0:
                raise DataError(f"{path}: file is empty")
            declared = npz_declared_bytes(fh, path)
            if declared > limit:
                raise DataError(
                    f"{path}: its arrays declare {human_bytes(declared)}, more than a data file "
                    f"may hold ({human_bytes(limit)}); is this the right file?"
                )
            with np.load(fh, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
    except UnreadableFile as e:
        raise DataError(str(e)) from None
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from None


def load_npz(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """{split: arrays} from a directory of per-split files or one prefixed file."""
    path = Path(path)
    out: dict[str, dict[str, np.ndarray]] = {}
    if path.is_dir():
        for s in SPLITS:
            f = path / f"{s}.npz"
            if f.exists():
                out[s] = _read_npz(f) | {"_where": np.array(str(f))}
    else:
        arrays = _read_npz(path)
        for s in SPLITS:
            sub = {k[len(s) + 1 :]: v for k, v in arrays.items() if k.startswith(s + "_")}
            if sub:
                out[s] = sub | {"_where": np.array(f"{path} [{s}_*]")}
    for s in ("train", "test"):
        if s not in out:
            raise DataError(f"{path}: no {s!r} split (need train and test; valid is optional)")
    return out


def _check(a: dict[str, np.ndarray], mode: str) -> tuple[str, dict[str, np.ndarray]]:
    where = str(a["_where"])
    need = ["inputs", "lengths", "labels"] + (["label_lengths"] if mode == "ctc" else [])
    for k in need:
        if k not in a:
            raise DataError(f"{where}: missing array {k!r} (has {sorted(a)})")
    x, n = a["inputs"], a["lengths"]
    if x.ndim != 3 or x.shape[0] == 0:
        raise DataError(f"{where}: inputs must be (N, T, I) with N >= 1, got {x.shape}")
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(f"{where}: inputs must be numeric, got {x.dtype}")
    if not np.isfinite(x).all():
        bad = np.argwhere(~np.isfinite(x))[0]
        raise DataError(f"{where}: inputs contain NaN or infinity (first at index {tuple(bad)})")
    N, T, _ = x.shape
    if n.shape != (N,) or not np.issubdtype(n.dtype, np.integer):
        raise DataError(f"{where}: lengths must be ({N},) integers, got {n.shape} {n.dtype}")
    if n.min() < 1 or n.max() > T:
        raise DataError(f"{where}: lengths must lie in [1, {T}], got [{n.min()}, {n.max()}]")
    y = a["labels"]
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{where}: labels must be integers, got {y.dtype}")
    if mode == "framewise" and y.shape != (N, T):
        raise DataError(f"{where}: framewise labels must be (N, T) = ({N}, {T}), got {y.shape}")
    if mode == "ctc":
        if y.ndim != 2 or y.shape[0] != N:
            raise DataError(f"{where}: CTC labels must be (N, S) with N = {N}, got {y.shape}")
        m = a["label_lengths"]
        if m.shape != (N,) or m.min() < 1 or m.max() > y.shape[1]:
            raise DataError(f"{where}: label_lengths must be ({N},) in [1, {y.shape[1]}]")
    return where, a


def _valid_labels(a: dict[str, np.ndarray], mode: str) -> np.ndarray:
    y = a["labels"]
    if mode == "framewise":
        mask = np.arange(y.shape[1])[None, :] < a["lengths"][:, None]
    else:
        mask = np.arange(y.shape[1])[None, :] < a["label_lengths"][:, None]
    return y[mask]


def _ctc_feasible(where: str, a: dict[str, np.ndarray]) -> None:
    """CTC needs T >= S + (number of adjacent repeats in the label sequence)."""
    y, m, n = a["labels"], a["label_lengths"], a["lengths"]
    pos = np.arange(y.shape[1])
    repeats = ((y[:, 1:] == y[:, :-1]) & (pos[None, 1:] < m[:, None])).sum(1)
    bad = np.flatnonzero(n < m + repeats)
    if bad.size:
        i = bad[0]
        raise DataError(
            f"{where}: sequence {i} has {n[i]} frames, too few for its {m[i]} labels "
            f"({repeats[i]} repeats) under CTC"
        )


def synthetic_segments(
    n: int,
    stream: Stream,
    classes: int = 5,
    features: int = 8,
    noise: float = 0.6,
    prototypes: np.ndarray | None = None,
):
    """Synthetic segmented sequences (see module docstring), vectorized. Returns
    (inputs (n, T, I) float32, lengths (n,), frame labels (n, T), segment labels (n, S),
    label_lengths (n,))."""
    S_max, d_lo, d_hi = 8, 2, 7
    counts = stream.integers(3, S_max + 1, n)
    first = stream.integers(0, classes, n)
    steps = stream.integers(1, classes, (n, S_max))
    steps[:, 0] = 0
    seg = (first[:, None] + np.cumsum(steps, 1)) % classes  # consecutive classes differ
    dur = stream.integers(d_lo, d_hi, (n, S_max))
    dur[np.arange(S_max)[None, :] >= counts[:, None]] = 0
    ends = np.cumsum(dur, 1)
    lengths = ends[:, -1]
    T = int(lengths.max())
    t = np.arange(T)
    which = np.minimum((t[None, None, :] >= ends[:, :, None]).sum(1), S_max - 1)  # (n, T)
    frames = np.take_along_axis(seg, which, 1)
    valid = t[None, :] < lengths[:, None]
    frames[~valid] = 0
    u1, u2 = stream.uniform((n, T, features)), stream.uniform((n, T, features))
    gauss = np.sqrt(-2 * np.log1p(-u1)) * np.cos(2 * np.pi * u2)  # Box–Muller
    x = (prototypes[frames] + noise * gauss) * valid[:, :, None]
    seg[np.arange(S_max)[None, :] >= counts[:, None]] = 0
    return x.astype(np.float32), lengths, frames, seg, counts


def make_framewise(
    *,
    mode: str = "framewise",
    path: str | Path | None = None,
    num_classes: int | None = None,
    n_train: int = 1000,
    n_valid: int = 200,
    n_test: int = 200,
    seed: int = 0,
    noise: float = 0.6,
    target: float | None = None,
) -> Task:
    """Framewise classification or CTC labelling.

    mode        "framewise" or "ctc"
    path        .npz directory or file (module docstring); None: the synthetic corpus
    num_classes K (default: largest label + 1)
    n_train, n_valid, n_test, seed, noise   synthetic corpus only
    target      success test: test frame error (framewise) / label error rate (ctc) <= target
    """
    if mode not in ("framewise", "ctc"):
        raise ValueError(f"mode must be 'framewise' or 'ctc', got {mode!r}")
    if path is None:
        K, feats = 5, 8
        proto = Stream(seed, "framewise", "prototypes").uniform((K, feats), -1.0, 1.0)
        data = {}
        for s, n in (("train", n_train), ("valid", n_valid), ("test", n_test)):
            if not isinstance(n, int) or n < (0 if s == "valid" else 1):
                raise ValueError(f"n_{s} must be an integer >= {0 if s == 'valid' else 1}")
            if n == 0:
                continue
            x, L, frames, seg, counts = synthetic_segments(
                n, Stream(seed, "framewise", s), K, feats, noise, proto
            )
            labels, ll = (frames, None) if mode == "framewise" else (seg, counts)
            data[s] = {"inputs": x, "lengths": L, "labels": labels, "_where": np.array(s)}
            if ll is not None:
                data[s]["label_lengths"] = ll
        source = f"synthetic segments (seed {seed}, noise {noise})"
    else:
        data = load_npz(path)
        source = str(path)
        K = None
    checked = {s: _check(a, mode) for s, a in data.items()}
    seen = max(int(_valid_labels(a, mode).max()) for _, a in checked.values())
    K = num_classes if num_classes is not None else (K or seen + 1)
    splits = {}
    for s, (where, a) in checked.items():
        y = _valid_labels(a, mode)
        if y.min() < 0 or y.max() >= K:
            raise DataError(f"{where}: labels must lie in [0, {K - 1}], found {y.min()}..{y.max()}")
        x = torch.from_numpy(a["inputs"].astype(np.float32))
        L = torch.from_numpy(a["lengths"].astype(np.int64))
        if mode == "framewise":
            lab = np.where(np.arange(x.shape[1])[None, :] < a["lengths"][:, None], a["labels"], 0)
            splits[s] = Split(s, x, torch.from_numpy(lab.astype(np.int64)), L, per_step=True)
        else:
            _ctc_feasible(where, a)
            m = a["label_lengths"].astype(np.int64)
            pos = np.arange(a["labels"].shape[1])[None, :] < m[:, None]
            lab = np.where(pos, a["labels"] + 1, 0).astype(np.int64)  # 0 is the blank
            splits[s] = Split(s, x, torch.from_numpy(lab), L, torch.from_numpy(m))
    input_size = splits["train"].features.shape[2]
    if any(sp.features.shape[2] != input_size for sp in splits.values()):
        raise DataError(f"{path}: splits disagree on the input size")
    if mode == "framewise":
        scorer = FrameError(target)
        out_size, output, read = K, "softmax", "every"
    else:
        scorer = CTCLabels(target)
        out_size, output, read = K + 1, "ctc", "every"
    return Task(
        name=mode,
        train=splits["train"],
        valid=splits.get("valid"),
        test=splits["test"],
        input_size=input_size,
        output_size=out_size,
        output=output,
        read=read,
        scorer=scorer,
        info={"source": source, "classes": K},
        bidirectional=True,
    )


class FrameError(ClassEvery):
    """Per-frame softmax: frame error rate (headline), NLL per frame, sequence error."""

    metric = "frame_error"

    def __init__(self, target: float | None = None) -> None:
        super().__init__(wrong_on="all", max_frac_wrong=None)
        self.target = target

    def finish(self, s: dict[str, float]) -> dict[str, float]:
        m = super().finish(s)
        return {
            "frame_error": m["step_error"],
            "nll_per_frame": m["nll_per_step"],
            "seq_error": m["frac_wrong"],
            "frames": s["steps"],
        }

    def solved(self, m: dict[str, float]) -> bool:
        return self.target is not None and m["frame_error"] <= self.target
