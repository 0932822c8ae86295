"""What a reproduction is, as data: a :class:`Paper` names its seed, its command-line flags and
the function that runs it; :data:`PAPERS` is the registry the CLI reads its choices from.

Every paper's command has the same frame (``lstmlab reproduce NAME [--quick] [--dry-run]
[--out DIR] [--progress MODE]``) plus its own flags; each paper is one module in this package
with its plan (a deterministic function of the scale and the options, so a run set resumes) and
its report.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Paper", "ReproduceUsageError", "PAPERS", "register", "get"]


class ReproduceUsageError(ValueError):
    """A paper's flags do not make sense together; the CLI prints it on one line, exit 2."""


@dataclass(frozen=True)
class Paper:
    name: str  # the command's name: `lstmlab reproduce NAME`
    seed: str  # which seed paper (or outside paper) it reproduces, for help and reports
    summary: str  # one line for `lstmlab reproduce --help`
    description: str  # the paragraph of `lstmlab reproduce NAME --help`
    add_arguments: Callable[[argparse.ArgumentParser], None]  # the paper's own flags
    # run(ns, log) -> the written report (None for a dry run); ``ns`` holds the common flags
    # (quick, dry_run, out, progress) and the paper's own
    run: Callable[[argparse.Namespace, Callable[[str], None]], Path | None]

    @property
    def default_out(self) -> str:
        return f"runs/reproduce-{self.name}"


PAPERS: dict[str, Paper] = {}


def register(paper: Paper) -> Paper:
    if paper.name in PAPERS:
        raise ValueError(f"reproduction {paper.name!r} registered twice")
    PAPERS[paper.name] = paper
    return paper


def get(name: str) -> Paper:
    try:
        return PAPERS[name]
    except KeyError:
        raise ReproduceUsageError(
            f"unknown reproduction {name!r}; valid: {', '.join(PAPERS)}"
        ) from None
