"""`lstmlab report` writes every metrics record of every run as one CSV table."""

from __future__ import annotations

import csv
import math

from runkit import train_tiny

from lstmlab.cli import main
from lstmlab.training.metrics import read_metrics
from lstmlab.training.metrics_csv import write_metrics_csv


def test_report_writes_metrics_csv_with_every_column_seen(tmp_path, capsys):
    lbfgs, hf = tmp_path / "runs" / "lbfgs", tmp_path / "runs" / "hf"
    assert train_tiny(lbfgs, **{"stop.max_iterations": "3"}) == 0
    hf_flags = {"optimizer.name": "hf", "stop.max_iterations": "2"}
    assert train_tiny(hf, "--optimizer.options.max_cg", "2", **hf_flags) == 0
    capsys.readouterr()
    out = tmp_path / "rep"
    assert main(["report", str(tmp_path / "runs"), "--out", str(out)]) == 0
    assert f"wrote {out / 'metrics.csv'}" in capsys.readouterr().out
    assert "[metrics.csv](metrics.csv)" in (out / "report.md").read_text()
    with open(out / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
        header = list(rows[0].keys())
    logs = {str(d): read_metrics(d / "metrics.jsonl") for d in (hf, lbfgs)}  # report sorts
    seen = {k for recs in logs.values() for r in recs for k in r}
    assert header[0] == "run" and set(header[1:]) == seen and len(header) == len(set(header))
    assert {"damping", "cg_iterations", "line_search_evals", "test_mae"} <= seen
    expected = [(run, r) for run, recs in logs.items() for r in recs]
    assert len(rows) == len(expected)
    for row, (run, rec) in zip(rows, expected, strict=True):
        assert row["run"] == run
        for k in header[1:]:
            v = rec.get(k)
            if v is None:
                assert row[k] == "", (k, row[k])
            elif isinstance(v, bool):
                assert row[k] == str(int(v))
            elif isinstance(v, int | float):
                assert math.isclose(float(row[k]), v, rel_tol=1e-15), k
            else:
                assert row[k] == str(v)


def test_non_finite_values_and_missing_fields(tmp_path):
    path = write_metrics_csv(
        {"a": [{"iteration": 0, "loss": math.nan}], "b": [{"iteration": 1, "x": -math.inf}]},
        tmp_path / "m.csv",
    )
    assert path.read_text().splitlines() == ["run,iteration,loss,x", "a,0,nan,", "b,1,,-inf"]


def test_runs_differing_only_in_what_they_log_are_one_group():
    from lstmlab.training.config import from_dict, resolve
    from lstmlab.training.report import group_runs

    on = resolve([], {"task.name": "text"})
    runs = [{"config": on}, {"config": from_dict({"log": {"tensorboard": False}}, on)}]
    assert len(group_runs(runs)) == 1
    other = {"config": from_dict({"optimizer": {"name": "sgd"}}, on)}
    assert len(group_runs([*runs, other])) == 2
