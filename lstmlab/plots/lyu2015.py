"""The figures of seed 000 (Lyu & Zhu): Fig. 2(a) gate sigmoid, Fig. 2(b) α, Fig. 3(a) minibatch
sizes, Fig. 3(b) batch-vs-loop timing, Fig. 3(c) optimizers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lstmlab.plots.curves import AXES
from lstmlab.plots.style import plt, save

__all__ = ["sigmoid_figure", "curves_figure", "timing_figure"]


def sigmoid_figure(path: str | Path, alphas: Sequence[float]) -> str:
    """σ_α(x) = 1 / (1 + exp(−αx)) and σ_α'(x) = α σ_α (1 − σ_α) (seed 000 Sec. 4, Fig. 2(a))."""
    x = np.linspace(-4, 4, 401)
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    for i, alpha in enumerate(alphas):
        s = 1 / (1 + np.exp(-alpha * x))
        a.plot(x, s, color=f"C{i}", label=f"α = {alpha:g}")
        b.plot(x, alpha * s * (1 - s), color=f"C{i}", label=f"α = {alpha:g}")
    b.axhline(1.0, color="k", ls=":", lw=0.8, label="slope 1 (α = 4)")
    a.set(xlabel="gate pre-activation x", ylabel="σ_α(x)", title="gate activation")
    b.set(xlabel="gate pre-activation x", ylabel="dσ_α/dx", title="its derivative")
    a.legend(loc="upper left")
    b.set_ylim(-0.03, 1.85)  # room above the peaks for the legend
    b.legend(loc="upper center", ncol=3)
    return save(fig, path)


def curves_figure(
    curves: dict[str, list[dict[str, Any]]],
    path: str | Path,
    *,
    x: str = "P_D",
    y: str = "test_mae",
    title: str = "",
    target: float | None = 0.01,
) -> str:
    """Test MAE (log scale) against ``x`` for each labelled run (log x for cost axes)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    log_x = x in ("P_D", "P_I", "samples", "presentations")
    for i, (label, records) in enumerate(curves.items()):
        pts = [(r[x], r[y]) for r in records if y in r and x in r]
        if log_x:
            pts = [(a, b) for a, b in pts if a > 0]  # the untrained network sits at x = 0
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, color=f"C{i}", lw=1.3, marker=".", ms=3, label=label)
    if target is not None:
        ax.axhline(target, color="k", ls="--", lw=0.8, label=f"target {target:g}")
    ax.set_yscale("log")
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(AXES.get(x, x))
    ax.set_ylabel("test mean absolute error")
    ax.set_title(title)
    ax.legend()
    return save(fig, path)


def timing_figure(rows: list[dict[str, float]], path: str | Path) -> str:
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    b = [r["batch"] for r in rows]
    ax.plot(b, [r["batch_ms"] for r in rows], marker="o", label="matrix-based batch (bptt)")
    ax.plot(b, [r["loop_ms"] for r in rows], marker="s", label="loop over samples")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("batch size (sequences of 10 steps)")
    ax.set_ylabel("time per mean gradient (ms)")
    ax.set_title("Fig. 3(b): vectorized batch vs per-sample loop")
    ax.legend()
    return save(fig, path)
