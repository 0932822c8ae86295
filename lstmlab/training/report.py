"""``lstmlab report``: figures and a markdown table across run directories.

Runs are grouped by what differs between their configs, seeds aside (usually the optimizer);
a group's row gives its success rate and the medians, over the solved runs, of iterations,
training sequences, P_D and wall time to solve — the numbers seed 000 and the 1997 paper quote.
``metrics.csv`` beside it holds every metrics record of every run (``metrics_csv``).
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Any

from lstmlab.training.config import from_dict, load_toml, to_dict
from lstmlab.training.metrics import read_metrics
from lstmlab.training.metrics_csv import write_metrics_csv
from lstmlab.training.run import RunPaths, read_summary

__all__ = ["find_runs", "load_run", "group_runs", "summary_table", "write_report"]


SEARCH_DEPTH = 6  # folders below a named one searched for runs (a reproduction's: 3)
SEARCH_FOLDERS = 10_000  # folders searched per named folder before giving up


def _search(root: Path) -> list[Path]:
    """Run directories under ``root``, at most ``SEARCH_DEPTH`` levels down and
    ``SEARCH_FOLDERS`` folders in all; links are not followed, a run's own folder is not
    searched further, and a folder that vanishes or cannot be read is skipped."""
    from lstmlab.training.run import RunError

    found: list[Path] = []
    level, seen = [root], 0
    for _ in range(SEARCH_DEPTH):
        below: list[Path] = []
        for folder in level:
            try:
                with os.scandir(folder) as entries:
                    subs = [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]
            except OSError:
                continue
            for sub in subs:
                seen += 1
                if seen > SEARCH_FOLDERS:
                    raise RunError(
                        f"{root}: searched {SEARCH_FOLDERS:,} folders without finishing; name "
                        "the run directories, or a folder that holds runs"
                    )
                if os.path.isfile(sub / "config.toml"):  # False also where it cannot look
                    found.append(sub)
                else:
                    below.append(sub)
        level = below
    return sorted(found)


def find_runs(paths: list[str | Path]) -> list[Path]:
    """Run directories (holding ``config.toml``) among ``paths``; a folder that is not a run is
    searched for runs (``_search``: bounded depth and size)."""
    from lstmlab.training.run import RunError

    out: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise RunError(f"{p}: no such run directory")
        if (p / "config.toml").exists():
            out.append(p)
        elif not p.is_dir():
            raise RunError(f"{p}: not a run directory (a file; give a run's folder)")
        else:
            found = _search(p)
            if not found:
                raise RunError(
                    f"{p}: no runs found (no config.toml within {SEARCH_DEPTH} levels below it)"
                )
            out.extend(found)
    return out


def load_run(run_dir: Path) -> dict[str, Any]:
    """Config, metrics and summary of one run (an unfinished run has ``summary`` None)."""
    cfg = from_dict(load_toml(run_dir / "config.toml"))
    summary_path = run_dir / "summary.json"
    summary = read_summary(RunPaths(run_dir)) if summary_path.exists() else None
    return {
        "dir": run_dir,
        "config": cfg,
        "metrics": read_metrics(run_dir / "metrics.jsonl"),
        "summary": summary,
    }


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and "type" not in v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = json.dumps(v) if isinstance(v, dict | list) else v
    return out


def group_runs(runs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Label each run by the config keys that differ between runs (seed excluded)."""
    flats = [_flat(to_dict(r["config"])) for r in runs]
    keys = sorted({k for f in flats for k in f})
    # budgets and bookkeeping do not make runs different experiments
    ignore = ("seed", "eval_every", "checkpoint_every", "stop.", "log.")
    varying = [
        k for k in keys if not k.startswith(ignore) and len({str(f.get(k)) for f in flats}) > 1
    ]
    # optimizer settings that only follow from the optimizer's name (its preset) add nothing
    if "optimizer.name" in varying:
        by_name: dict[str, list[dict[str, Any]]] = {}
        for f in flats:
            by_name.setdefault(str(f.get("optimizer.name")), []).append(f)
        varying = [
            k
            for k in varying
            if not k.startswith("optimizer.")
            or k == "optimizer.name"
            or any(len({str(f.get(k)) for f in g}) > 1 for g in by_name.values())
        ]
    groups: dict[str, list[dict[str, Any]]] = {}
    for r, f in zip(runs, flats, strict=True):
        if varying:
            label = ", ".join(
                str(f.get(k)) if k == "optimizer.name" else f"{k.split('.')[-1]}={f.get(k)}"
                for k in varying
            )
        else:
            label = f"{f['task.name']} · {f['optimizer.name']}"
        groups.setdefault(label, []).append(r)
    return groups


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}g}" if abs(x) < 1e5 else f"{x:.3e}"
    return str(x)


def reported(s: dict[str, Any]) -> float | None:
    """The metric a finished run reports: on the test split, of the network its summary tested
    (the best by the valid metric where the run evaluates on valid; else the last)."""
    value = (s.get("test") or s.get("final") or {}).get(s["metric"])
    return value if isinstance(value, int | float) else None


def summary_table(groups: dict[str, list[dict[str, Any]]]) -> str:
    rows = [
        "| runs | solved | median iterations | median sequences drawn | median presentations "
        "| median P_D | median wall (s) | median test metric |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, runs in groups.items():
        done = [r["summary"] for r in runs if r["summary"] is not None]
        solved = [s for s in done if s["solved"]]
        final = [reported(s) for s in done]
        rows.append(
            f"| {label} | {len(solved)}/{len(runs)}"
            + ("" if len(done) == len(runs) else f" ({len(runs) - len(done)} unfinished)")
            + f" | {_fmt(_median([s['iterations'] for s in solved]))}"
            f" | {_fmt(_median([s['samples'] for s in solved]))}"
            f" | {_fmt(_median([s['presentations'] for s in solved]))}"
            f" | {_fmt(_median([s['P_D'] for s in solved]))}"
            f" | {_fmt(_median([s['wall_time'] for s in solved]))}"
            f" | {_fmt(_median([f for f in final if f is not None]), 4)} |"
        )
    rows.append("")
    rows.append("Medians of iterations, sequences, P_D and wall time are over the solved runs.")
    rows.append(
        "The test metric is the best network's (by the valid metric) where a run evaluates on "
        "a valid split, else the last network's."
    )
    return "\n".join(rows)


def _tested(s: dict[str, Any]) -> str:
    t = s.get("tested") or {}
    return f" (best valid, epoch {t['epoch']})" if t.get("network") == "best" else ""


def run_table(runs: list[dict[str, Any]]) -> str:
    rows = [
        "| run | solved | stop | iterations | samples | P_D | wall (s) | test |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        s = r["summary"]
        if s is None:
            rows.append(f"| {r['dir']} | unfinished | | {len(r['metrics'])} records | | | | |")
            continue
        rows.append(
            f"| {r['dir']} | {'yes' if s['solved'] else 'no'} | {s['stop_reason']} "
            f"| {s['iterations']} | {s['samples']} | {_fmt(s['P_D'])} | {_fmt(s['wall_time'])} "
            f"| {s['metric']} {_fmt(reported(s), 4)}{_tested(s)} |"
        )
    return "\n".join(rows)


def write_report(run_dirs: list[Path], out: str | Path, *, x_axis: str = "P_D") -> Path:
    from lstmlab.plots.curves import compare_runs
    from lstmlab.training.run import RunError

    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunError(f"cannot create {out}: {err.strerror or err}") from None
    runs = [load_run(d) for d in run_dirs]
    groups = group_runs(runs)
    metric = next((r["summary"]["metric"] for r in runs if r["summary"]), "mae")
    target = next(
        (r["summary"]["target"] for r in runs if (r["summary"] or {}).get("target") is not None),
        None,
    )
    # the split the runs evaluated during training (valid for tasks that have one)
    split = next((r["summary"].get("eval_split", "test") for r in runs if r["summary"]), "test")
    curves = {label: [r["metrics"] for r in rs] for label, rs in groups.items()}
    figs = []
    for x in dict.fromkeys([x_axis, "samples"]):
        figs.append(
            compare_runs(
                curves,
                out / f"{split}_{metric}_vs_{x}.png",
                x=x,
                y=f"{split}_{metric}",
                target=target,
                ylabel=f"{split} {metric}",
                title=f"{split} {metric} against {x}",
            )
        )
    figs.append(
        compare_runs(
            curves,
            out / f"train_loss_vs_{x_axis}.png",
            x=x_axis,
            y="loss",
            ylabel="training minibatch loss",
            title="training loss",
        )
    )
    lines = [
        "# lstmlab report",
        "",
        f"{len(runs)} runs.",
        "",
        "## Summary",
        "",
        summary_table(groups),
        "",
        "## Figures",
        "",
    ]
    lines += [f"![{Path(f).stem}]({Path(f).name})" for f in figs]
    table = write_metrics_csv({str(r["dir"]): r["metrics"] for r in runs}, out / "metrics.csv")
    lines += ["", "## Runs", "", run_table(runs), ""]
    lines += [f"Every metrics record of every run: [{table.name}]({table.name}).", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
