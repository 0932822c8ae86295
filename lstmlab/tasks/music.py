"""Polyphonic music (SPEC S4.2; seed 002's JSB Chorales task): next-step prediction of 88-key
piano rolls with independent Bernoulli outputs; metric NLL per time step (nats, summed over
keys).

Sources, none downloaded:
    path=FILE   the standard JSB Chorales / Nottingham / MuseData / Piano-midi files
                (Boulanger-Lewandowski et al. 2012): a dict with "train", "valid" (or
                "validation") and "test", each a list of sequences, each step a list of MIDI
                pitches; as pickle (``.pickle``/``.pkl``; Python 2 pickles load) or JSON
                (``.json``). Pickles are read with a restricted unpickler
                (``tasks.safe_pickle.safe_unpickle``) that builds only plain containers,
                numbers, strings and numpy numeric arrays and scalars (as the usual JSB file
                holds its pitches): a pickle that names any other class or function (the way a
                crafted pickle runs code) is refused with a message that says how to convert
                the file to JSON; nothing in it is executed.
    default     the Bach chorales in ``music21``'s corpus (its 371-chorale Riemenschneider
                list), quantized to quarter notes: a pitch is on at step k when a note covers
                quarter-note time k (onset <= k < onset + duration, offsets in the flattened
                score); grace notes and notes that cover no beat vanish. Chorales are split
                60 / 20 / 20 % by a fixed seeded permutation (``split_seed``, default 0),
                close to the standard JSB split (229 / 76 / 77 of 382). Parsing takes about a
                minute, so the parsed rolls are cached (lstmlab.tasks.cache).

A piece of n steps gives inputs roll[0..n-1) and targets roll[1..n) (length n - 1), so every
piece needs at least 2 steps. Pitch p becomes key p - 21 (MIDI 21 = A0 ... 108 = C8).
"""

from __future__ import annotations

import importlib.metadata as md
import json
import math
import pickle
from pathlib import Path

import numpy as np
import torch

from lstmlab.files import LIMITS, UnreadableFile, read_user_file
from lstmlab.tasks.base import DataError, Split, Task
from lstmlab.tasks.cache import cached_arrays
from lstmlab.tasks.metrics import BernoulliEvery
from lstmlab.tasks.rng import Stream
from lstmlab.tasks.safe_pickle import safe_unpickle

__all__ = [
    "make_music",
    "load_piano_rolls",
    "music21_chorales",
    "safe_unpickle",
    "KEYS",
    "LOWEST",
]

KEYS, LOWEST = 88, 21
SPLITS = ("train", "valid", "test")


def _roll(seq, where: str) -> np.ndarray:
    """One sequence (steps of pitch lists) -> (n, 88) uint8, validated."""
    if not isinstance(seq, list | tuple | np.ndarray) or len(seq) == 0:
        raise DataError(f"{where}: empty sequence (or not a list of steps)")
    if len(seq) < 2:
        raise DataError(f"{where}: only 1 step; next-step prediction needs at least 2")
    roll = np.zeros((len(seq), KEYS), dtype=np.uint8)
    for t, step in enumerate(seq):
        try:
            pitches = np.asarray(list(step), dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError(f"{where}, step {t}: not a list of MIDI pitches: {step!r}") from None
        if pitches.size == 0:
            continue
        bad = ~np.isfinite(pitches) | (pitches != np.round(pitches))
        bad |= (pitches < LOWEST) | (pitches > LOWEST + KEYS - 1)
        if bad.any():
            raise DataError(
                f"{where}, step {t}: pitch {float(pitches[bad][0])!r} is outside the piano range "
                f"{LOWEST}–{LOWEST + KEYS - 1} (MIDI)"
            )
        roll[t, pitches.astype(np.int64) - LOWEST] = 1
    return roll


CONVERT_HINT = (
    "if you trust the file, convert it to JSON (json.dump of its dict, each step a list of int "
    "pitches) and pass the .json"
)


def load_piano_rolls(path: str | Path) -> dict[str, list[np.ndarray]]:
    """Read a JSB-style pickle or JSON file into {split: [(n, 88) uint8 rolls]}."""
    path = Path(path)
    try:
        raw = read_user_file(path, LIMITS["data file"], "piano-roll")
    except UnreadableFile as e:
        raise DataError(str(e)) from None
    if not raw:
        raise DataError(f"{path}: file is empty")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(raw.decode("utf-8"))
        else:
            data = safe_unpickle(raw)
    except UnicodeDecodeError:
        raise DataError(f"{path}: not valid UTF-8 JSON") from None
    except pickle.UnpicklingError as e:
        if str(e).startswith(("refers to", "uses persistent")):
            raise DataError(f"{path}: pickle {e}; {CONVERT_HINT}") from None
        raise DataError(f"{path}: cannot be read as pickle (UnpicklingError: {e})") from None
    except (MemoryError, RecursionError) as e:
        raise DataError(f"{path}: cannot be read ({type(e).__name__}: a malformed file?)") from None
    except Exception as e:
        kind = "JSON" if path.suffix.lower() == ".json" else "pickle"
        reason = (str(e).splitlines() or [""])[0][:200]
        raise DataError(
            f"{path}: cannot be read as {kind} ({type(e).__name__}: {reason})"
        ) from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a dict of train/valid/test, got {type(data).__name__}")
    if "valid" not in data and "validation" in data:
        data = {**data, "valid": data["validation"]}
    out = {}
    for split in SPLITS:
        if split not in data:
            raise DataError(
                f"{path}: no {split!r} split (keys present: {sorted(map(str, data))}); "
                "expected train, valid and test"
            )
        seqs = data[split]
        if not isinstance(seqs, list | tuple) or len(seqs) == 0:
            raise DataError(f"{path}: split {split!r} has no sequences")
        out[split] = [_roll(s, f"{path}: {split} sequence {i}") for i, s in enumerate(seqs)]
    return out


def _to_split(name: str, rolls: list[np.ndarray]) -> Split:
    n = len(rolls)
    lengths = np.array([len(r) - 1 for r in rolls], dtype=np.int64)
    T = int(lengths.max())
    x = np.zeros((n, T, KEYS), dtype=np.uint8)
    y = np.zeros((n, T, KEYS), dtype=np.uint8)
    for i, r in enumerate(rolls):
        x[i, : len(r) - 1], y[i, : len(r) - 1] = r[:-1], r[1:]
    return Split(
        name, torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(lengths), per_step=True
    )


def _quantize(score) -> np.ndarray:
    """A music21 score -> (steps, 88) uint8, one step per quarter note."""
    steps = max(1, math.ceil(float(score.highestTime)))
    roll = np.zeros((steps, KEYS), dtype=np.uint8)
    for n in score.flatten().notes:
        onset, dur = float(n.offset), float(n.quarterLength)
        ks = range(math.ceil(onset), min(steps, math.ceil(onset + dur)))
        for p in n.pitches:
            if LOWEST <= p.midi < LOWEST + KEYS:
                roll[list(ks), p.midi - LOWEST] = 1
    return roll


def music21_chorales(max_pieces: int | None = None, use_cache: bool = True) -> dict:
    """Quantized rolls of music21's Bach chorales: {"names": (n,), "offsets": (n+1,),
    "rolls": (steps, 88) uint8}, piece i = rolls[offsets[i]:offsets[i+1]] (cached)."""
    try:
        version = md.version("music21")
    except md.PackageNotFoundError:
        raise DataError(
            "the default music corpus needs the 'music21' package (pip install music21), "
            "or give path= to a JSB-style pickle/JSON file"
        ) from None
    key = {
        "source": "music21-chorales",
        "version": version,
        "quantize": "quarter",
        "max_pieces": max_pieces,
    }

    def build():
        from music21 import corpus
        from music21.corpus import chorales

        names = list(chorales.Iterator(returnType="filename"))[:max_pieces]
        rolls, kept = [], []
        for name in names:
            roll = _quantize(corpus.parse(name))
            if len(roll) >= 2:
                rolls.append(roll)
                kept.append(name)
        offsets = np.cumsum([0] + [len(r) for r in rolls])
        return {"names": np.array(kept), "offsets": offsets, "rolls": np.concatenate(rolls)}

    return cached_arrays("music21-chorales", key, build, use_cache=use_cache)


def make_music(
    *,
    path: str | Path | None = None,
    split_seed: int = 0,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    max_pieces: int | None = None,
    target_nll: float | None = None,
    use_cache: bool = True,
    seed: int | None = None,
) -> Task:
    """Polyphonic music task (88 Bernoulli outputs at every step).

    path        JSB-style pickle/JSON file; None: music21's Bach chorales
    split_seed  seed of the chorale split (default corpus only)
    fractions   train/valid/test shares of the chorales (default corpus only)
    max_pieces  parse only the first chorales (quick runs; default corpus only)
    target_nll  success test: test NLL per step <= target_nll (None: none)
    seed        the run's seed, unused: the corpus and its split (split_seed) stay fixed
    """
    if path is not None:
        rolls = load_piano_rolls(path)
        source = str(path)
    else:
        f = np.asarray(fractions, dtype=float)
        if f.shape != (3,) or np.any(f <= 0) or not np.isclose(f.sum(), 1.0):
            raise ValueError(
                f"fractions must be 3 positive numbers summing to 1, got {fractions!r}"
            )
        a = music21_chorales(max_pieces, use_cache)
        pieces = [a["rolls"][s:e] for s, e in zip(a["offsets"][:-1], a["offsets"][1:], strict=True)]
        n = len(pieces)
        if n < 3:
            raise DataError(f"music21 chorales: only {n} usable pieces, need at least 3")
        order = Stream(split_seed, "music21-chorales", "split").permutation(n)
        cuts = np.round(np.cumsum(f)[:2] * n).astype(int)
        cuts = np.clip(cuts, [1, cuts[0] + 1], [n - 2, n - 1])
        parts = np.split(order, cuts)
        rolls = {s: [pieces[i] for i in idx] for s, idx in zip(SPLITS, parts, strict=True)}
        source = f"music21 {md.version('music21')} Bach chorales ({n} pieces)"
    splits = {s: _to_split(s, rolls[s]) for s in SPLITS}
    return Task(
        name="music",
        train=splits["train"],
        valid=splits["valid"],
        test=splits["test"],
        input_size=KEYS,
        output_size=KEYS,
        output="bernoulli",
        read="every",
        scorer=BernoulliEvery(target_nll),
        info={"source": source, "pieces": {s: len(rolls[s]) for s in SPLITS}},
    )
