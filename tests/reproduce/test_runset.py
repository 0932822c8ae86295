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
_real_start = runs.start


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


def _signal_at_first_checkpoint(monkeypatch, sig: int) -> None:
    """Every run started from now on gets ``sig`` when it writes its first checkpoint."""

    def writer(fh, data, sent):  # one signal per run (a second one aborts at once)
        fh.write(data)
        if not sent:
            sent.append(sig)
            os.kill(os.getpid(), sig)

    def start(*a, **k):
        sent = []
        return _real_start(*a, checkpoint_writer=lambda fh, d: writer(fh, d, sent), **k)

    monkeypatch.setattr(runs, "start", start)


def test_an_interrupted_run_stops_the_set_and_the_set_resumes(tmp_path, monkeypatch):
    specs = [_spec("x", **{"checkpoint_every": "1"}), _spec("y", seed="1")]
    _signal_at_first_checkpoint(monkeypatch, signal.SIGINT)
    with pytest.raises(runset.SetInterrupted) as stop:
        runset.run_all(specs, tmp_path, progress="none", log=lambda line: None)
    assert stop.value.run_dir == specs[0].dir(tmp_path) and stop.value.signal == "SIGINT"
    # the set stopped with the interrupted run: the next one was never started
    assert [runset.status(s, tmp_path) for s in specs] == ["started", "absent"]
    monkeypatch.setattr(runs, "start", _real_start)
    out = runset.run_all(specs, tmp_path, progress="none", log=lambda line: None)
    assert [out["part"][s.name]["iterations"] for s in specs] == [8, 8]


def test_sigterm_during_a_reproduction_exits_143_with_one_line(tmp_path, monkeypatch, capsys):
    _signal_at_first_checkpoint(monkeypatch, signal.SIGTERM)
    argv = ["reproduce", "ms2011", "--quick", "--problem", "adding", "--problem", "xor"]
    argv += ["--cell", "rnn", "--T", "20", "--max-pd", "2e4", "--progress", "none"]
    argv += ["--out", str(tmp_path)]
    assert main(argv) == 143
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "SIGTERM during" in err, err
    assert "rnn20-T20-seed0" in err and "the same command resumes it" in err
    assert not (tmp_path / "runs" / "xor").exists() and not (tmp_path / "results.md").exists()
    monkeypatch.setattr(runs, "start", _real_start)
    assert main(argv) == 0 and (tmp_path / "results.md").exists()


def test_run_all_groups_by_part_and_logs_each_run(tmp_path):
    specs = [_spec("x"), _spec("y", seed="1")]
    lines: list[str] = []
    out = runset.run_all(specs, tmp_path, progress="none", log=lines.append)
    assert list(out) == ["part"] and list(out["part"]) == ["x", "y"]
    ends = [ln.split(":")[0] for ln in lines if not ln.startswith("run ")]
    assert ends == ["[part] x", "[part] y"]
    assert [ln for ln in lines if ln.startswith("run ")] == [
        "run 1 of 2: [part] x (starting)",
        "run 2 of 2: [part] y (starting)",
    ]


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
