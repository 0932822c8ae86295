"""The run-set logic every reproduction shares, and the registry the CLI reads."""

from __future__ import annotations

import os
import signal

import pytest
from runkit import TINY

from lstmlab import reproduce
from lstmlab.cli import main
from lstmlab.reproduce import report, runset
from lstmlab.reproduce.runset import RunSpec
from lstmlab.training import run as runs
from lstmlab.training.config import resolve

_real_resume = runs.resume


def _spec(name: str = "a", **changes: str) -> RunSpec:
    return RunSpec("part", name, {"task.name": "multiplication", **TINY, **changes})


def test_ensure_starts_keeps_and_resumes(tmp_path):
    spec = _spec(**{"stop.max_iterations": "4"})
    assert runset.status(spec, tmp_path) == "absent"
    first = runset.ensure(spec, tmp_path, progress="none")
    assert runset.status(spec, tmp_path) == "done" and first["iterations"] == 4
    # finished: kept as it is (not re-run: the metrics log does not grow)
    log = spec.dir(tmp_path) / "metrics.jsonl"
    before = log.read_bytes()
    again = runset.ensure(spec, tmp_path, progress="none")
    assert again == first and log.read_bytes() == before


def test_a_started_run_is_resumed_not_restarted(tmp_path, monkeypatch):
    spec = _spec(**{"stop.max_iterations": "6", "checkpoint_every": "1"})
    calls = {"n": 0}

    def interrupt_after_two(fh, data):  # Ctrl-C arrives after the second checkpoint
        fh.write(data)
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGINT)

    cfg = resolve(overrides=dict(spec.overrides))
    first = runs.start(
        cfg, spec.dir(tmp_path), progress="none", checkpoint_writer=interrupt_after_two
    )
    assert first["stop_reason"] == "interrupted" and first["iterations"] < 6
    assert runset.status(spec, tmp_path) == "started"
    resumed = []
    monkeypatch.setattr(runs, "resume", lambda *a, **k: resumed.append(a) or _real_resume(*a, **k))
    done = runset.ensure(spec, tmp_path, progress="none")
    assert len(resumed) == 1 and done["stop_reason"] != "interrupted"
    assert done["iterations"] == 6 and runset.status(spec, tmp_path) == "done"


def test_run_all_groups_by_part_and_logs_each_run(tmp_path):
    specs = [_spec("x"), _spec("y", seed="1")]
    lines: list[str] = []
    out = runset.run_all(specs, tmp_path, progress="none", log=lines.append)
    assert list(out) == ["part"] and list(out["part"]) == ["x", "y"]
    assert [ln.split(":")[0] for ln in lines] == ["[part] x", "[part] y"]


def test_dry_run_starts_nothing(tmp_path):
    lines: list[str] = []
    n = runset.dry_run([_spec("x")], tmp_path, log=lines.append)
    assert n == 1 and lines[-1] == "# dry run: 1 runs; nothing started"
    assert lines[0].startswith(
        str(tmp_path / "runs" / "part" / "x") + ": lstmlab train multiplication"
    )
    assert list(tmp_path.iterdir()) == []


def test_report_helpers():
    assert report.fmt(None) == "–" and report.fmt(float("nan")) == "–" and report.fmt(2.5) == "2.5"
    assert report.median([3, 1, 2]) == 2 and report.median([]) is None
    assert report.md_table(["a", "b"], [[1, 2]]) == "| a | b |\n|---|---|\n| 1 | 2 |"


@pytest.mark.parametrize("name", sorted(reproduce.load_all()))
def test_every_registered_paper_has_a_quick_dry_run_from_the_cli(name, tmp_path, capsys):
    code = main(["reproduce", name, "--quick", "--dry-run", "--out", str(tmp_path / "o")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "dry run" in out and not (tmp_path / "o").exists()


def test_unknown_paper_is_a_usage_error():
    with pytest.raises(reproduce.ReproduceUsageError, match=r"valid: .*lyu2015"):
        reproduce.get("nope")
