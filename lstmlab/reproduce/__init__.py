"""``lstmlab reproduce NAME``: one resumable command per paper (SPEC S8b).

- ``paper.py``: :class:`Paper` (name, flags, run function) and the registry the CLI reads;
- ``runset.py``: :class:`RunSpec` and ``ensure`` / ``run_all`` / ``dry_run`` — a paper's runs
  as ordinary run directories under ``OUT/runs/PART/NAME``: finished ones kept, started ones
  resumed, missing ones started;
- ``report.py``: markdown tables, number formats, curves read from runs, atomic report write;
- one module per paper (``lyu2015.py`` …): its scales, plan and report. A module registers its
  :class:`Paper` on import; add it to ``_MODULES`` below.
"""

from __future__ import annotations

import importlib

from lstmlab.reproduce.paper import PAPERS, Paper, ReproduceUsageError, get, register

__all__ = ["PAPERS", "Paper", "ReproduceUsageError", "get", "register", "load_all"]

_MODULES = ("lyu2015", "ms2011", "krause2015", "kuchaiev2017", "greff2017")


def load_all() -> dict[str, Paper]:
    """Import every paper module (each registers itself); the registry, in a stable order."""
    modules = [importlib.import_module(f"lstmlab.reproduce.{m}") for m in _MODULES]
    # the order of _MODULES, whichever module a caller happened to import first
    order = [
        p.name for m in modules for p in list(PAPERS.values()) if p.run.__module__ == m.__name__
    ]
    items = [(k, PAPERS[k]) for k in order] + [(k, p) for k, p in PAPERS.items() if k not in order]
    PAPERS.clear()
    PAPERS.update(items)
    return PAPERS
