"""Learning curves of one run or many, against samples, P_D, P_I, iterations or wall time."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lstmlab.plots.style import plt, save, spans_decades

__all__ = ["learning_curve", "compare_runs", "AXES"]

AXES = {
    "samples": "training sequences drawn",
    "presentations": "sequence presentations (gradient evaluations × batch)",
    "P_D": "P_D (sequential cost, forward-pass equivalents)",
    "P_I": "P_I (parallel cost, forward-pass equivalents)",
    "iteration": "iterations",
    "wall": "wall time (s)",
}


# A diverged run's last values (NaN, Inf, 1e300) cannot be drawn: matplotlib's log-axis ticks
# overflow. Points beyond this magnitude are left off the figure (the summary says "diverged").
DRAWABLE = 1e100


def _drawable(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v) and abs(v) <= DRAWABLE


def _series(records: Sequence[dict[str, Any]], x: str, y: str) -> tuple[list, list]:
    xs, ys = [], []
    for r in records:
        if y in r and x in r and _drawable(r[y]) and _drawable(r[x]):
            xs.append(r[x])
            ys.append(r[y])
    return xs, ys


def _scale(ax, xs, ys) -> None:
    if spans_decades(ys):
        ax.set_yscale("log")
    if spans_decades(xs, 2) and min(xs) > 0:
        ax.set_xscale("log")


def learning_curve(
    records: Sequence[dict[str, Any]],
    path: str | Path,
    *,
    title: str = "",
    metric: str = "mae",
    target: float | None = None,
    split: str = "test",
) -> str | None:
    """The evaluated split's metric against training sequences, and training loss against
    P_D (two panels). ``split``: the split evaluated during training (``test``/``valid``)."""
    if not records:
        return None
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6))
    xs, ys = _series(records, "samples", f"{split}_{metric}")
    a.plot(xs, ys, marker=".", ms=3, lw=1.2, label=f"{split} {metric}")
    if target is not None:
        a.axhline(target, color="k", ls="--", lw=0.8, label=f"target {target:g}")
    _scale(a, xs, ys + ([target] if target else []))
    a.set_xlabel(AXES["samples"])
    a.set_ylabel(f"{split} {metric}")
    a.legend()
    xs2, ys2 = _series(records, "P_D", "loss")
    b.plot(xs2, ys2, lw=1.0, color="C1", label="training minibatch loss")
    xt, yt = _series(records, "P_D", f"{split}_loss")
    b.plot(xt, yt, lw=1.0, color="C2", marker=".", ms=3, label=f"{split} loss")
    _scale(b, xs2 + xt, ys2 + yt)
    b.set_xlabel(AXES["P_D"])
    b.set_ylabel("loss")
    b.legend()
    if title:
        fig.suptitle(title)
    return save(fig, path)


def compare_runs(
    runs: dict[str, list[Sequence[dict[str, Any]]]],
    path: str | Path,
    *,
    x: str = "P_D",
    y: str = "test_mae",
    title: str = "",
    target: float | None = None,
    ylabel: str | None = None,
) -> str:
    """One colour per label; every run of a label drawn thin, the label named once."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    all_x, all_y = [], []
    log_x = x in ("P_D", "P_I", "samples", "presentations")
    for i, (label, group) in enumerate(runs.items()):
        for j, records in enumerate(group):
            xs, ys = _series(records, x, y)
            if log_x:  # cost axes span decades; the untrained network at x = 0 is left out
                xs, ys = [a for a in xs if a > 0], [b for a, b in zip(xs, ys, strict=True) if a > 0]
            all_x += xs
            all_y += ys
            ax.plot(
                xs,
                ys,
                color=f"C{i}",
                lw=1.0,
                alpha=0.8 if len(group) < 4 else 0.5,
                label=label if j == 0 else None,
            )
    if target is not None:
        ax.axhline(target, color="k", ls="--", lw=0.8, label=f"target {target:g}")
        all_y.append(target)
    _scale(ax, all_x, all_y)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(AXES.get(x, x))
    ax.set_ylabel(ylabel or y.replace("_", " "))
    ax.legend()
    if title:
        ax.set_title(title)
    return save(fig, path)
