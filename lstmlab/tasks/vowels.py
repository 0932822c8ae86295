"""Sequence classification: JapaneseVowels (Kudo et al. 1999; UCI) — which of 9 speakers said
a vowel, from 7–29 frames of 12 LPC cepstrum coefficients. 270 training and 370 test
utterances; one softmax output read at the last frame; metric accuracy.

The data are the ``.ts`` text files inside the ``aeon`` wheel
(``aeon/datasets/data/JapaneseVowels/JapaneseVowels_{TRAIN,TEST}.ts``), located through the
installed distribution's file list and read as text: aeon itself is never imported (so its
heavy dependencies need not be installed; ``pip install --no-deps aeon`` suffices).

.ts format (sktime/aeon): ``#`` comments, ``@`` header lines ending with ``@data``, then one
case per line: dimensions separated by ``:``, values within a dimension by ``,``, the class
label last. ``path=DIR`` reads ``*_TRAIN.ts`` / ``*_TEST.ts`` from DIR instead.

Features are standardised per channel with the training set's mean and standard deviation
(``standardize=True``). ``n_valid`` > 0 holds out that many training cases (seeded) as valid.
"""

from __future__ import annotations

import importlib.metadata as md
from pathlib import Path

import numpy as np
import torch

from lstmlab.files import LIMITS, UnreadableFile, read_user_file
from lstmlab.tasks.base import DataError, Split, Task
from lstmlab.tasks.metrics import ClassLast
from lstmlab.tasks.rng import Stream

__all__ = ["make_vowels", "read_ts", "aeon_vowels_files"]


def aeon_vowels_files() -> tuple[str, Path, Path]:
    """(aeon version, TRAIN path, TEST path) from the installed aeon distribution."""
    try:
        version = md.version("aeon")
        files = md.files("aeon") or []
    except md.PackageNotFoundError:
        raise DataError(
            "JapaneseVowels needs the 'aeon' package's data files (pip install --no-deps "
            "aeon), or give path= to a directory with *_TRAIN.ts and *_TEST.ts"
        ) from None
    found = {}
    for f in files:
        if f.parent.name == "JapaneseVowels" and f.name.startswith("JapaneseVowels_T"):
            found[f.name] = Path(str(f.locate()))
    try:
        return version, found["JapaneseVowels_TRAIN.ts"], found["JapaneseVowels_TEST.ts"]
    except KeyError:
        raise DataError(f"aeon {version} ships no JapaneseVowels_TRAIN/TEST.ts files") from None


def read_ts(path: str | Path) -> tuple[list[np.ndarray], list[str], list[str]]:
    """Read a .ts file: cases as (T_i, D) float64 arrays, their labels, the declared labels."""
    path = Path(path)
    try:
        raw = read_user_file(path, LIMITS["data file"], ".ts data")
    except UnreadableFile as e:
        raise DataError(str(e)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 (offset {e.start})") from None
    if not text.strip():
        raise DataError(f"{path}: file is empty")
    cases, labels, declared, in_data, dims = [], [], [], False, None
    for no, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            low = line.lower()
            if low.startswith("@classlabel"):
                parts = line.split()
                declared = parts[2:] if len(parts) > 2 and parts[1].lower() == "true" else []
            elif low.startswith("@dimensions"):
                dims = int(line.split()[1])
            elif low.startswith("@data"):
                in_data = True
            continue
        *channels, label = line.split(":")
        if dims is not None and len(channels) != dims:
            raise DataError(f"{path}: line {no} has {len(channels)} dimensions, header says {dims}")
        try:
            arr = np.array([[float(v) for v in c.split(",")] for c in channels]).T
        except ValueError:
            raise DataError(f"{path}: line {no} has a value that is not a number") from None
        if arr.ndim != 2 or arr.shape[0] == 0:
            raise DataError(f"{path}: line {no}: dimensions of unequal length or empty")
        if not np.isfinite(arr).all():
            raise DataError(f"{path}: line {no} contains NaN or infinite values")
        label = label.strip()
        if declared and label not in declared:
            raise DataError(f"{path}: line {no}: label {label!r} not among declared {declared}")
        cases.append(arr)
        labels.append(label)
    if not cases:
        raise DataError(f"{path}: no cases after @data")
    return cases, labels, declared


def _split(name, cases, y, mean, std) -> Split:
    lengths = np.array([len(c) for c in cases], dtype=np.int64)
    x = np.zeros((len(cases), lengths.max(), cases[0].shape[1]), dtype=np.float32)
    for i, c in enumerate(cases):
        x[i, : len(c)] = (c - mean) / std
    return Split(name, torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(lengths))


def make_vowels(
    *,
    path: str | Path | None = None,
    standardize: bool = True,
    n_valid: int = 0,
    seed: int = 0,
    target_accuracy: float | None = None,
) -> Task:
    """JapaneseVowels speaker classification.

    path             directory with *_TRAIN.ts and *_TEST.ts; None: aeon's files
    standardize      per-channel z-scores with training statistics
    n_valid, seed    hold out n_valid training cases (seeded) as a valid split
    target_accuracy  success test: test accuracy >= target (None: none)
    """
    if path is None:
        version, f_train, f_test = aeon_vowels_files()
        source = f"aeon {version} JapaneseVowels .ts files"
    else:
        d = Path(path)
        trains, tests = sorted(d.glob("*_TRAIN.ts")), sorted(d.glob("*_TEST.ts"))
        if not trains or not tests:
            raise DataError(f"{d}: needs a *_TRAIN.ts and a *_TEST.ts file")
        f_train, f_test, source = trains[0], tests[0], str(d)
    tr_cases, tr_labels, declared = read_ts(f_train)
    te_cases, te_labels, _ = read_ts(f_test)
    classes = declared or sorted(set(tr_labels))
    index = {c: i for i, c in enumerate(classes)}
    for f, labels in ((f_test, te_labels),):
        unknown = sorted(set(labels) - set(index))
        if unknown:
            raise DataError(f"{f}: labels {unknown} do not occur in the training file")
    y_tr = np.array([index[c] for c in tr_labels], dtype=np.int64)
    y_te = np.array([index[c] for c in te_labels], dtype=np.int64)
    if not isinstance(n_valid, int) or not 0 <= n_valid < len(tr_cases):
        raise ValueError(f"n_valid must be an integer in [0, {len(tr_cases) - 1}], got {n_valid!r}")
    order = Stream(seed, "japanese_vowels", "valid").permutation(len(tr_cases))
    va_idx, tr_idx = np.sort(order[:n_valid]), np.sort(order[n_valid:])
    train_cases = [tr_cases[i] for i in tr_idx]
    frames = np.concatenate(train_cases)
    mean = frames.mean(0) if standardize else 0.0
    std = frames.std(0) if standardize else 1.0
    train = _split("train", train_cases, y_tr[tr_idx], mean, std)
    valid = None
    if n_valid:
        valid = _split("valid", [tr_cases[i] for i in va_idx], y_tr[va_idx], mean, std)
    test = _split("test", te_cases, y_te, mean, std)
    return Task(
        name="japanese_vowels",
        train=train,
        valid=valid,
        test=test,
        input_size=train.features.shape[2],
        output_size=len(classes),
        output="softmax",
        read="last",
        scorer=ClassLast(None if target_accuracy is None else 1 - target_accuracy),
        info={"source": source, "classes": classes, "standardize": standardize},
    )
