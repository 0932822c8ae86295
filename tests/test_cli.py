"""The ``lstmlab`` command line end to end, including faults: kill -9, Ctrl-C, damaged
checkpoints, bad configs, an unwritable run directory and a full disk."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from runkit import tiny_flags, train_tiny

from lstmlab.cli import main
from lstmlab.training.checkpoint import load_checkpoint
from lstmlab.training.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]


def lstmlab(*args: str) -> list[str]:
    return [sys.executable, "-m", "lstmlab", *args]


def env():
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def params(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoint.safetensors")["model"]


def assert_same_params(a: Path, b: Path) -> None:
    pa, pb = params(a), params(b)
    assert pa.keys() == pb.keys()
    for k in pa:
        assert torch.equal(pa[k], pb[k]), k


def test_tiny_run_end_to_end(tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(
            ["train", "multiplication", "--run-dir", str(run), "--progress", "plain", *tiny_flags()]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "multiplication · lbfgs · seed 0" in out and "P_D" in out and "learning curve" in out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["iterations"] == 8 and summary["stop_reason"] == "max_iterations"
    assert (run / "figures" / "learning_curve.png").stat().st_size > 1000
    records = read_metrics(run / "metrics.jsonl")
    assert len(records) == 9
    for key in ("loss", "P_D", "P_I", "wall", "samples", "grad_norm", "line_search_evals"):
        assert key in records[-1]
    assert "test_mae" in records[-1]

    assert main(["eval", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mae"] == summary["final"]["mae"]
    assert main(["report", str(run), "--out", str(tmp_path / "rep")]) == 0
    assert "| 0/1 |" in (tmp_path / "rep" / "report.md").read_text()


@pytest.mark.parametrize("flag, key", [("--stop.max_pd", "P_D"), ("--stop.max_pi", "P_I")])
def test_cost_budgets_from_the_command_line(tmp_path, flag, key):
    ref, run = tmp_path / "ref", tmp_path / "run"
    # one iteration's cost, to set a budget of a few iterations
    assert train_tiny(ref, **{"stop.max_iterations": "1"}) == 0
    one = json.loads((ref / "summary.json").read_text())[key]
    budget = f"{3.5 * one:g}"
    assert train_tiny(run, flag, budget, **{"stop.max_iterations": "1000"}) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stop_reason"] == flag.split(".")[1]
    assert float(budget) <= summary[key] < float(budget) + 2 * one


def test_tasks_lists_names_with_descriptions(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "multiplication" in out and "adding" in out and "1997" in out


@pytest.mark.parametrize("cmd", ["train", "resume", "eval", "report", "tasks", "reproduce"])
def test_help_on_every_command(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "--help" in text
    if cmd == "train":
        for flag in ("--optimizer.name", "--stop.max_seconds", "--model.alpha", "--dry-run"):
            assert flag in text


def test_dry_run_writes_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "multiplication", "--run-dir", str(run), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert 'variant = "lstm97"' in out and "n_train = 10000" in out and "batch_size = 1000" in out
    assert not run.exists()


@pytest.mark.parametrize(
    "args, key",
    [
        (["--optimizer.batch_size", "-5"], "optimizer.batch_size"),
        (["--seed", "many"], "seed"),
        (["--model.alpha", "0"], "model.alpha"),
        (["--optimizer.options.bogus", "1"], "optimizer.options.bogus"),
        (["--task.options.T", "5"], "task.options"),
    ],
    ids=["range", "type", "alpha", "unknown-option", "task-option"],
)
def test_bad_flag_values_exit_2_with_one_line_naming_the_key(tmp_path, capsys, args, key):
    code = main(["train", "multiplication", "--run-dir", str(tmp_path / "r"), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and key in err, err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "toml, key",
    [
        ("[optimizer]\nbogus = 1\n", "optimizer.bogus"),
        ("[optimizer]\nbatch_size = 'big'\n", "optimizer.batch_size"),
        ("[stop]\nmax_seconds = -1.0\n", "stop.max_seconds"),
        ("[model]\nblocks = 0\n", "model.blocks"),
        ("seed = [1, 2\n", "not valid TOML"),
    ],
    ids=["unknown-key", "wrong-type", "out-of-range", "zero-blocks", "syntax"],
)
def test_bad_config_files_exit_2(tmp_path, capsys, toml, key):
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml)
    code = main(["train", "multiplication", "--config", str(cfg), "--run-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and key in err, err


@pytest.mark.parametrize(
    "args, words",
    [
        (["train", "multiplcation"], "valid: adding"),
        (["train", "adding", "--optimizer.name", "bfgs"], "choose from"),
        (["train", "adding", "--bogus", "1"], "unrecognized"),
        (["reproduce", "nope"], "'lyu2015'"),  # among the choices listed
        (["reproduce", "lyu2015", "--optimizer", "bfgs"], "valid: lbfgs, cg, hf, momentum"),
        (["reproduce", "lyu2015", "--max-seconds", "0"], "--max-seconds must be > 0"),
        (["reproduce", "lyu2015", "--max-pd", "-1"], "--max-pd must be > 0"),
        (["eval", "x", "--split", "dev"], "choose from"),
    ],
    ids=["task", "optimizer", "flag", "experiment", "table-optimizer", "budget", "cost", "split"],
)
def test_invalid_names_list_the_valid_choices(capsys, args, words):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1, err


def test_reproduce_dry_run_lists_the_chosen_optimizers_and_budget(tmp_path, capsys):
    args = ["reproduce", "lyu2015", "--only", "table", "--seeds", "2", "--out", str(tmp_path)]
    flags = ["--optimizer", "cg", "--optimizer", "hf", "--max-seconds", "90", "--max-pd", "2e6"]
    code = main([*args, *flags, "--dry-run"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and lines[-1] == "# dry run: 4 runs; nothing started"
    names = [ln.split(":")[0].rsplit("/", 1)[1] for ln in lines[:-1]]
    assert names == ["cg-seed0", "cg-seed1", "hf-seed0", "hf-seed1"]
    assert all("--stop.max_seconds 90.0" in ln and "--stop.max_pd 2e+06" in ln for ln in lines[:-1])
    assert list(tmp_path.iterdir()) == []


def test_unwritable_run_directory_is_a_clear_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")  # a path under a regular file cannot be created, even as root
    code = main(["train", "multiplication", "--run-dir", str(blocker / "run"), *tiny_flags()])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "cannot" in err and str(blocker) in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_run_directory(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        code = main(["train", "multiplication", "--run-dir", str(ro / "run"), *tiny_flags()])
    finally:
        ro.chmod(0o700)
    assert code == 1 and "Permission denied" in capsys.readouterr().err


def test_full_disk_is_a_clear_error_and_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch):
    import lstmlab.training.checkpoint as ckpt

    real = ckpt._write
    calls = {"n": 0}

    def write(fh, data):
        calls["n"] += 1
        if calls["n"] > 2:  # the first two checkpoints fit, then the disk is full
            fh.write(data[: len(data) // 3])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fh, data)

    monkeypatch.setattr(ckpt, "_write", write)
    run = tmp_path / "run"
    code = main(
        ["train", "multiplication", "--run-dir", str(run), "--progress", "none", *tiny_flags()]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1 and "no space left on device" in err and len(err.splitlines()) == 1
    assert load_checkpoint(run / "checkpoint.safetensors")["train_state"]["iteration"] == 1
    assert not list(run.glob("*.tmp"))


def test_truncated_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    assert train_tiny(str(run), **{"stop.max_iterations": "3"}) == 0
    capsys.readouterr()
    ck = run / "checkpoint.safetensors"
    ck.write_bytes(ck.read_bytes()[:100])
    # the previous checkpoint is still good: a warning, then the run goes on from it
    assert main(["eval", str(run)]) == 0
    assert "truncated" in capsys.readouterr().err
    (run / "checkpoint.safetensors.prev").unlink()
    for cmd in (["eval", str(run)], ["resume", str(run), "--stop.max_iterations", "5"]):
        assert main(cmd) == 1
        err = capsys.readouterr().err.strip()
        assert "truncated" in err and len(err.splitlines()) == 1 and "Traceback" not in err


def _reference(tmp_path: Path, flags: list[str]) -> Path:
    ref = tmp_path / "reference"
    assert (
        main(["train", "multiplication", "--run-dir", str(ref), "--progress", "none", *flags]) == 0
    )
    return ref


def _wait_for_records(path: Path, n: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        time.sleep(0.01)


def test_kill_9_at_random_moments_then_resume_equals_uninterrupted(tmp_path):
    flags = tiny_flags(**{"stop.max_iterations": "14"})
    ref = _reference(tmp_path, flags)
    rng = random.Random(1234)
    for trial in range(2):
        run = tmp_path / f"killed{trial}"
        proc = subprocess.Popen(
            lstmlab("train", "multiplication", "--run-dir", str(run), "--progress", "none", *flags),
            env=env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # random moment: after a random number of logged iterations plus a random delay
        # (so some kills land inside a step, a checkpoint write, or before any checkpoint)
        _wait_for_records(run / "metrics.jsonl", rng.randint(0, 12), proc)
        time.sleep(rng.uniform(0, 0.05))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        code = main(["resume", str(run), "--progress", "none"])
        # a run that finished (summary written) before the kill landed refuses to resume
        assert code == 0 or (code == 1 and (run / "summary.json").exists())
        assert_same_params(ref, run)
        strip = [
            {k: v for k, v in r.items() if k != "wall"} for r in read_metrics(run / "metrics.jsonl")
        ]
        assert strip == [
            {k: v for k, v in r.items() if k != "wall"} for r in read_metrics(ref / "metrics.jsonl")
        ]


def test_ctrl_c_checkpoints_and_exits_cleanly(tmp_path):
    flags = tiny_flags(**{"stop.max_iterations": "16"})
    run = tmp_path / "run"
    proc = subprocess.Popen(
        lstmlab("train", "multiplication", "--run-dir", str(run), "--progress", "plain", *flags),
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for_records(run / "metrics.jsonl", 3, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupt" in err
    assert "not solved (interrupted)" in out
    state = load_checkpoint(run / "checkpoint.safetensors")["train_state"]
    assert state["stop_reason"] == "interrupted" and 2 <= state["iteration"] < 16
    # and the interrupted run resumes to the uninterrupted result
    assert main(["resume", str(run), "--progress", "none"]) == 0
    assert_same_params(_reference(tmp_path, flags), run)


def test_resume_of_a_run_killed_while_writing_its_summary_finishes_it(tmp_path, capsys):
    run = tmp_path / "run"
    flags = tiny_flags(**{"stop.max_iterations": "2"})
    assert (
        main(["train", "multiplication", "--run-dir", str(run), "--progress", "none", *flags]) == 0
    )
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").unlink()
    assert main(["resume", str(run), "--progress", "none"]) == 0
    again = json.loads((run / "summary.json").read_text())
    assert again["final"] == summary["final"] and again["iterations"] == 2
    capsys.readouterr()
    assert main(["resume", str(run)]) == 0  # finished: nothing to do is not a failure
    assert "already finished" in capsys.readouterr().out
