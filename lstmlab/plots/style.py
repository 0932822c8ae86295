"""Shared matplotlib set-up: the Agg backend and one consistent look."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

plt.rcParams.update(
    {
        "figure.dpi": 110,
        "savefig.dpi": 110,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "legend.fontsize": 8,
        "legend.framealpha": 0.85,
        "font.size": 9,
    }
)

__all__ = ["plt", "save", "spans_decades"]


def save(fig, path) -> str:
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return str(path)


def spans_decades(values, decades: float = 1.0) -> bool:
    """True when positive ``values`` span more than ``decades`` powers of ten (use log scale)."""
    pos = [v for v in values if v is not None and v > 0]
    return len(pos) > 1 and max(pos) / min(pos) > 10**decades
