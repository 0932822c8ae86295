"""`lstmlab study analyze`: what Greff et al. read off their 5,400 runs, for one study.

- fANOVA importance of each hyperparameter (and of the variant) and of each pair
  (``fanova.Forest`` on a scikit-learn forest; Optuna's ``FanovaImportanceEvaluator`` is
  reported beside the singles — it works in raw, not log, coordinates, so it differs for
  log-uniform parameters);
- predicted marginal error with its spread across trees for each hyperparameter (Fig. 4);
- for the strongest pair (and learning rate × hidden size), the predicted marginal and the part
  due to the interaction alone (Fig. 5);
- each variant against vanilla: Welch's t-test (scipy) and box plots (Fig. 3);

written as ``report.md`` and PNGs in the output folder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lstmlab.studies.fanova import fit_forest

__all__ = ["analyze", "trial_table", "variant_tests", "Table"]

ALPHA = 0.05  # significance level of the variant tests
BEST = 0.1  # Greff Fig. 3 (bottom) compares the best 10 % of each variant's trials


@dataclass
class Table:
    """Complete trials as model inputs: X (n, d) in the search's uniform coordinates."""

    names: list[str]  # input names (Optuna parameter names; "variant" first when searched)
    X: np.ndarray
    y: np.ndarray
    bounds: np.ndarray  # (d, 2)
    log: list[bool]  # the coordinate is log10 of the value
    variants: list[str]  # per trial
    variant_names: list[str]  # the space's variants, in index order
    numbers: list[int]


def trial_table(handle) -> Table:
    from optuna.trial import TrialState

    space = handle.space
    trials = handle.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    params = list(space.searched.values())
    names, bounds, logs = [], [], []
    if len(space.variants) > 1:
        names.append("variant")
        bounds.append((0.0, float(len(space.variants))))
        logs.append(False)
    for p in params:
        names.append(p.key)
        bounds.append((math.log10(p.low), math.log10(p.high)) if p.log else (p.low, p.high))
        logs.append(p.log)
    rows, y, variants, numbers = [], [], [], []
    for t in trials:
        if any(p.key not in t.params for p in params):
            continue  # not sampled from this space (e.g. queued by hand)
        v = t.params.get("variant", space.variants[0])
        row = [space.variants.index(v) + 0.5] if len(space.variants) > 1 else []
        for p in params:
            x = t.params[p.key]
            row.append(math.log10(x) if p.log else x)
        rows.append(row)
        y.append(t.value)
        variants.append(v)
        numbers.append(t.number)
    return Table(
        names,
        np.array(rows, dtype=float).reshape(len(rows), len(names)),
        np.array(y, dtype=float),
        np.array(bounds, dtype=float).reshape(len(names), 2),
        logs,
        variants,
        list(space.variants),
        numbers,
    )


def variant_tests(values: dict[str, list[float]], reference: str = "vanilla", higher=False):
    """Per variant: n, mean, median, best, Welch's t and p against ``reference``, verdict."""
    from scipy import stats

    ref = np.asarray(values.get(reference, []), float)
    out = []
    for v, xs in values.items():
        x = np.asarray(xs, float)
        row: dict[str, Any] = {
            "variant": v,
            "n": len(x),
            "mean": float(x.mean()),
            "median": float(np.median(x)),
            "best": float(x.max() if higher else x.min()),
            "t": None,
            "p": None,
            "verdict": "reference" if v == reference else "too few trials",
        }
        if v != reference and len(x) >= 2 and len(ref) >= 2:
            t, p = stats.ttest_ind(x, ref, equal_var=False)
            row["t"], row["p"] = float(t), float(p)
            if not p < ALPHA:
                row["verdict"] = "no significant difference"
            else:
                better = (x.mean() > ref.mean()) == higher
                row["verdict"] = "better" if better else "worse"
        out.append(row)
    return out


def _optuna_singles(handle) -> dict[str, float]:
    import optuna

    try:
        ev = optuna.importance.FanovaImportanceEvaluator(seed=0)
        return dict(ev.evaluate(handle.study))
    except (RuntimeError, ValueError):
        return {}


def analyze(handle, *, out: str | Path | None = None, n_trees: int = 64, log=None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    from lstmlab.studies.study import StudyError

    log = log or (lambda m: None)
    out = Path(out) if out else handle.root / "analysis"
    tab = trial_table(handle)
    if len(tab.y) < 2:
        raise StudyError(f"study {handle.name!r} has {len(tab.y)} complete trials; need 2 or more")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StudyError(f"cannot write {out}: {err.strerror or err}") from None
    higher = handle.study.direction.name == "MAXIMIZE"
    metric = handle.metric
    lines = [
        f"# Study {handle.name}: {len(tab.y)} complete trials",
        "",
        f"Storage: `{handle.where}`. Metric: {metric} on the evaluation split "
        f"({'higher' if higher else 'lower'} is better). Search space:",
        "",
        "```",
        handle.space.describe(),
        "```",
        "",
    ]

    # ---- variants vs vanilla (Fig. 3)
    by_variant: dict[str, list[float]] = {}
    for v, y in zip(tab.variants, tab.y, strict=True):
        by_variant.setdefault(v, []).append(float(y))
    order = [v for v in tab.variant_names if v in by_variant]
    by_variant = {v: by_variant[v] for v in order}
    best_share = {
        v: sorted(ys, reverse=higher)[: max(2, math.ceil(BEST * len(ys)))]
        for v, ys in by_variant.items()
    }
    for title, values in (
        ("all complete trials", by_variant),
        (
            f"the best {BEST:.0%} of each variant's trials (at least 2)",
            best_share,
        ),
    ):
        rows = variant_tests(values, "vanilla", higher)
        lines += [
            f"## Variants against vanilla: {title} (Welch's t-test, Greff Fig. 3)",
            "",
            f"| variant | trials | mean {metric} | median | best | t | p | at p < {ALPHA} |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            t = "" if r["t"] is None else f"{r['t']:.2f}"
            p = "" if r["p"] is None else f"{r['p']:.3g}"
            lines.append(
                f"| {r['variant']} | {r['n']} | {r['mean']:.4g} | {r['median']:.4g} "
                f"| {r['best']:.4g} | {t} | {p} | {r['verdict']} |"
            )
        lines.append("")
    fig, axes = plt.subplots(1, 2, figsize=(2.0 + 1.3 * len(order), 3.6))
    for ax, values, title in (
        (axes[0], by_variant, "all complete trials"),
        (axes[1], best_share, f"best {BEST:.0%} (at least 2)"),
    ):
        ax.boxplot([values[v] for v in order], tick_labels=order)
        for k, v in enumerate(order):
            ax.plot(np.full(len(values[v]), k + 1.0), values[v], ".", color="gray", alpha=0.6)
        ax.set_ylabel(metric)
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="x", labelrotation=45)
    fig.suptitle(f"{handle.name}: {metric} per variant", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "variants.png", dpi=120)
    plt.close(fig)
    lines += ["", "![variants](variants.png)", ""]

    # ---- fANOVA
    if len(tab.y) < 4 or np.ptp(tab.y) == 0:
        lines += ["## fANOVA", "", "Too few distinct results for a forest.", ""]
        (out / "report.md").write_text("\n".join(lines) + "\n")
        return out / "report.md"
    log(f"fitting {n_trees} trees on {len(tab.y)} trials")
    _, forest = fit_forest(tab.X, tab.y, tab.bounds, n_trees=n_trees, seed=0)
    d = len(tab.names)
    single = {tab.names[i]: forest.importance(i) for i in range(d)}
    pairs = {
        (tab.names[i], tab.names[j]): forest.pair_importance(i, j)
        for i in range(d)
        for j in range(i + 1, d)
    }
    opt = _optuna_singles(handle)
    lines += [
        "## fANOVA: importance of each hyperparameter (fraction of variance)",
        "",
        "On scikit-learn's random forest (64 trees, Optuna's settings), in the coordinates the "
        "search was uniform in (log10 for log-uniform ones; the variant as a category). "
        "Optuna's `FanovaImportanceEvaluator` is shown beside it: it integrates in raw "
        "coordinates, so it differs where a parameter is log-uniform.",
        "",
        "| hyperparameter | importance (mean ± std over trees) | Optuna's evaluator |",
        "|---|---|---|",
    ]
    for name, (m, s) in sorted(single.items(), key=lambda kv: -kv[1][0]):
        o = opt.get(name)
        lines.append(f"| {name} | {m:.3f} ± {s:.3f} | {'' if o is None else f'{o:.3f}'} |")
    total = sum(m for m, _ in single.values()) + sum(m for m, _ in pairs.values())
    lines += [
        "",
        "## fANOVA: pairs (interaction alone)",
        "",
        "| pair | importance (mean ± std over trees) |",
        "|---|---|",
    ]
    for (a, b), (m, s) in sorted(pairs.items(), key=lambda kv: -kv[1][0]):
        lines.append(f"| {a} × {b} | {m:.3f} ± {s:.3f} |")
    lines += [
        "",
        f"Singles and pairs explain {total:.2f} of the forest's variance; the rest is "
        "higher-order interactions.",
        "",
    ]

    # ---- Fig. 4: marginals
    cont = [i for i in range(d) if tab.names[i] != "variant"]
    if cont:
        fig, axes = plt.subplots(1, len(cont), figsize=(3.2 * len(cont), 3.0), squeeze=False)
        for ax, i in zip(axes[0], cont, strict=True):
            grid = np.linspace(tab.bounds[i, 0], tab.bounds[i, 1], 120)
            m, s = forest.marginal((i,), grid[:, None])
            xs = 10**grid if tab.log[i] else grid
            ax.plot(xs, m, color="C0")
            ax.fill_between(xs, m - s, m + s, color="C0", alpha=0.25)
            pts = 10 ** tab.X[:, i] if tab.log[i] else tab.X[:, i]
            ax.plot(pts, tab.y, ".", color="gray", alpha=0.5, ms=3)
            if tab.log[i]:
                ax.set_xscale("log")
                ax.set_xticks(np.geomspace(xs[0], xs[-1], 5))
                ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.2g}"))
                ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel(tab.names[i])
            ax.set_ylabel(f"predicted {metric}")
        fig.suptitle(f"{handle.name}: predicted marginal {metric} (± std over trees)", fontsize=10)
        fig.tight_layout()
        fig.savefig(out / "marginals.png", dpi=120)
        plt.close(fig)
        lines += [
            "## Predicted marginal error (Greff Fig. 4)",
            "",
            "![marginals](marginals.png)",
            "",
        ]

    # ---- Fig. 5: interaction maps
    shown = []
    cont_pairs = [(a, b) for (a, b) in pairs if "variant" not in (a, b)]
    if cont_pairs:
        top = max(cont_pairs, key=lambda p: pairs[p][0])
        shown.append(top)
        if {"lr", "hidden_size"} <= set(tab.names) and {"lr", "hidden_size"} != set(top):
            shown.append(("lr", "hidden_size"))
    for a, b in shown:
        i, j = tab.names.index(a), tab.names.index(b)
        gi = np.linspace(tab.bounds[i, 0], tab.bounds[i, 1], 60)
        gj = np.linspace(tab.bounds[j, 0], tab.bounds[j, 1], 60)
        P = np.array([(u, v) for v in gj for u in gi])
        m, _ = forest.marginal((i, j), P)
        inter = forest.interaction(i, j, P)
        fig, axes = plt.subplots(1, 2, figsize=(8.5, 3.4))
        ext = [gi[0], gi[-1], gj[0], gj[-1]]
        for ax, z, title in (
            (axes[0], m, f"predicted marginal {metric}"),
            (axes[1], inter, "interaction part alone"),
        ):
            im = ax.imshow(
                z.reshape(len(gj), len(gi)),
                origin="lower",
                extent=ext,
                aspect="auto",
                cmap="coolwarm" if not higher else "coolwarm_r",
            )
            fig.colorbar(im, ax=ax)
            ax.set_xlabel(f"log10 {a}" if tab.log[i] else a)
            ax.set_ylabel(f"log10 {b}" if tab.log[j] else b)
            ax.set_title(title, fontsize=9)
        fig.suptitle(f"{handle.name}: {a} × {b} (blue is better)", fontsize=10)
        fig.tight_layout()
        name = f"interaction_{a}_{b}.png".replace("-", "_")
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
        lines += [f"## {a} × {b} (Greff Fig. 5)", "", f"![{a} x {b}]({name})", ""]

    (out / "report.md").write_text("\n".join(lines) + "\n")
    return out / "report.md"
