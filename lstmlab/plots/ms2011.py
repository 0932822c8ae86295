"""The figure of ``reproduce ms2011``: test error (fraction of wrong sequences) against P_D,
one panel per problem, one line per (cell, T, seed) run."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lstmlab.plots.style import plt, save

__all__ = ["error_vs_pd_figure"]


def error_vs_pd_figure(
    panels: dict[str, dict[str, list[dict[str, Any]]]],
    path: str | Path,
    *,
    target: float = 0.01,
    title: str = "",
) -> str:
    """``panels``: problem -> run label -> metrics rows (``P_D``, ``test_frac_wrong``)."""
    n = max(1, len(panels))
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.8 * rows), squeeze=False)
    for ax, (problem, runs) in zip(axes.flat, panels.items(), strict=False):
        for i, (label, records) in enumerate(sorted(runs.items())):
            pts = [
                (r["P_D"], max(r["test_frac_wrong"], 1e-4))
                for r in records
                if "test_frac_wrong" in r and r.get("P_D", 0) > 0
            ]
            if pts:
                xs, ys = zip(*pts, strict=True)
                style = "-" if label.startswith("lstm") else "--"
                ax.plot(xs, ys, style, color=f"C{i % 10}", lw=1.1, marker=".", ms=2, label=label)
        ax.axhline(target, color="k", ls=":", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(1e-4 * 0.8, 1.2)
        ax.set_title(problem)
        ax.set_xlabel("P_D (forward-pass equivalents)")
        ax.set_ylabel("test fraction wrong")
        if runs:
            ax.legend(fontsize=6, loc="lower left")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    return save(fig, path)
