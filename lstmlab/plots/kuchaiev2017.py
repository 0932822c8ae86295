"""The figure of ``lstmlab reproduce kuchaiev2017``: seed 004's comparison of LSTM, F-LSTM and
G-LSTM — training loss against steps and against wall time, with the test loss marked."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lstmlab.plots.style import plt, save

__all__ = ["loss_figure", "smooth"]


def smooth(values: Sequence[float], window: int) -> list[float]:
    """Running mean over the last ``window`` values (fewer at the start)."""
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def loss_figure(
    runs: dict[str, list[dict[str, Any]]], path: str | Path, *, title: str, window: int = 20
) -> str:
    """Two panels: training loss (nats per word, a running mean over ``window`` steps) against
    the step and against the wall time of the training loop; the test loss at each evaluation
    as markers. ``runs``: label -> metrics records of a run."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for k, (label, records) in enumerate(runs.items()):
        color = f"C{k}"
        steps = [r for r in records if r.get("loss") is not None and r["iteration"] > 0]
        tests = [r for r in records if r.get("test_nll_per_word") is not None]
        ys = smooth([float(r["loss"]) for r in steps], window)
        for ax, x in zip(axes, ("iteration", "wall"), strict=True):
            ax.plot([r[x] for r in steps], ys, color=color, lw=1.2, label=label)
            ax.plot(
                [r[x] for r in tests],
                [r["test_nll_per_word"] for r in tests],
                "o",
                ms=3,
                color=color,
            )
    axes[0].set_xlabel("step")
    axes[1].set_xlabel("training time (s; evaluations left out)")
    axes[0].set_ylabel("loss (nats per word; lines: training, dots: test)")
    axes[0].legend()
    fig.suptitle(title)
    return save(fig, path)
