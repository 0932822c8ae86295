"""The plateau figure of one multiplication run (``reproduce/plateau.py``): gates, cell states,
what the cells hold, where the errors are, and the curvature spectrum at the start and end."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lstmlab.plots.style import plt, save

__all__ = ["plateau_figure"]


def plateau_figure(p, path: str | Path) -> str:
    """Six panels for a ``Plateau``; returns the PNG's path."""
    fig, ax = plt.subplots(2, 3, figsize=(13, 7))
    verdict = "solved" if p.solved else "not solved"
    fig.suptitle(f"{p.name}: {verdict}, test MAE {p.mae:.4f}, {100 * p.wrong:.1f} % wrong")

    # (a) gates: saturation and mean activation per gate and memory block
    a = ax[0, 0]
    labels = [f"{g}.b{j}" for g, v in p.saturation.items() for j in range(len(v))]
    sat = [x for v in p.saturation.values() for x in v]
    mean = [x for v in p.gate_mean.values() for x in v]
    pos = np.arange(len(labels))
    a.bar(pos - 0.2, sat, 0.4, label="saturated (min(v, 1−v) < 0.05)")
    a.bar(pos + 0.2, mean, 0.4, label="mean activation")
    a.set_xticks(pos, labels, rotation=45, fontsize=7)
    a.set(ylim=(0, 1.05), title="gates on the test set")
    a.legend(loc="upper left")

    # (b) cell states over time for a few test sequences, with the marked steps
    b = ax[0, 1]
    cells = p.cells.numpy()
    for s in range(min(3, cells.shape[0])):
        n = int(p.lengths[s])  # steps past the end are padding
        for j in range(cells.shape[2]):
            b.plot(
                cells[s, :n, j],
                color=f"C{j}",
                lw=0.9,
                alpha=0.8,
                label=f"cell {j}" if s == 0 else None,
            )
        for m in p.marks[s].tolist():
            b.axvline(m, color=f"C{7 + s}", ls=":", lw=0.8)
    b.set(xlabel="step", ylabel="c_t", title="cell states (3 test sequences; dotted: X1, X2)")
    b.legend(loc="best")

    # (c) what the cells hold at the end: R² on X1, X2, X1·X2
    c = ax[0, 2]
    r2 = np.asarray(p.r2)
    pos = np.arange(r2.shape[0])
    for k, name in enumerate(("X1", "X2", "X1·X2")):
        c.bar(pos + (k - 1) * 0.27, r2[:, k], 0.27, label=name)
    c.set_xticks(pos, [f"cell {j}" for j in pos])
    c.set(ylim=(0, 1.05), ylabel="R² of c_T", title="which operand each cell holds")
    c.legend(loc="upper left")

    # (d) errors against the lag X2 must be carried over
    d = ax[1, 0]
    lag = (p.lengths - p.p2).numpy()
    err = p.error.abs().numpy()
    d.scatter(lag, err, s=3, alpha=0.3)
    d.axhline(0.04, color="k", ls=":", lw=0.8, label="wrong at |error| ≥ 0.04")
    d.set(
        xlabel="lag from X2 to the end (steps)",
        ylabel="|error|",
        yscale="log",
        title="test errors against the lag",
    )
    d.legend(loc="upper left")

    # (e) errors against the target
    e = ax[1, 1]
    e.scatter(p.target.numpy(), p.error.numpy(), s=3, alpha=0.3)
    e.axhline(0.04, color="k", ls=":", lw=0.8)
    e.axhline(-0.04, color="k", ls=":", lw=0.8)
    e.set(xlabel="target X1·X2", ylabel="prediction − target", title="errors against the target")

    # (f) curvature spectra
    f = ax[1, 2]
    for i, (key, vals) in enumerate(sorted(p.spectrum.items())):
        v = np.sort(vals.numpy())[::-1]
        f.plot(np.abs(v), color=f"C{i}", label=key.replace("_", " at "))
        neg = v < 0
        if neg.any():
            f.plot(np.nonzero(neg)[0], np.abs(v[neg]), "x", color=f"C{i}", ms=4)
    f.set(
        yscale="log",
        xlabel="eigenvalue rank",
        ylabel="|eigenvalue|",
        title="curvature spectrum (x: negative)",
    )
    f.legend(loc="upper right")
    return save(fig, path)
