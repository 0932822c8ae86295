"""The best network by the valid metric is kept (``best.safetensors``), tested once at the end
and reported as such; ``lstmlab eval --checkpoint best|last`` reads either network; resume keeps
the best network intact."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from lstmlab.cli import main
from lstmlab.training import run
from lstmlab.training.checkpoint import load_checkpoint
from lstmlab.training.metrics import read_metrics

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_cli_tasks import RUN, tiny_args  # noqa: E402

# Adam at lr 1.5 on a tiny text with one-hot inputs: the valid bits/char falls, then jumps up
# at the last step (measured: best at iteration 11 of 12), so the best network is not the last.
NOISY = ["--eval_every", "1", "--stop.max_iterations", "12", "--optimizer.lr", "1.5"]
NOISY += ["--task.options.embedding", "false"]


def train_text(run_dir: Path, root: Path, *extra: str) -> int:
    argv = ["train", "text", "--run-dir", str(run_dir), *RUN, *tiny_args("text", root)]
    return main([*argv, *NOISY, *extra])


def eval_json(capsys, run_dir: Path, *extra: str) -> dict:
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_reported_test_metric_is_the_best_networks(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert train_text(run_dir, tmp_path) == 0
    out = capsys.readouterr().out
    s = json.loads((run_dir / "summary.json").read_text())
    valid = [r["valid_bits_per_char"] for r in read_metrics(run_dir / "metrics.jsonl")]
    # the premise: the best validation is not the last one
    assert s["best_iteration"] < s["iterations"] and min(valid) < valid[-1]
    assert s["best"] == min(valid) and s["best_eval"]["bits_per_char"] == min(valid)
    assert s["tested"] == {"network": "best", "iteration": s["best_iteration"], "epoch": 0}
    # the best network on disk is the one of that evaluation
    best = eval_json(capsys, run_dir, "--checkpoint", "best", "--split", "valid")
    assert best["iteration"] == s["best_iteration"] and best["bits_per_char"] == s["best"]
    # the summary's test number is the best network's, not the last one's
    by_hand = eval_json(capsys, run_dir, "--checkpoint", "best")
    last = eval_json(capsys, run_dir, "--checkpoint", "last")
    assert s["test"]["bits_per_char"] == by_hand["bits_per_char"]
    assert last["bits_per_char"] != by_hand["bits_per_char"]
    assert last["iteration"] == s["iterations"] and last["checkpoint"] == "last"
    assert eval_json(capsys, run_dir)["checkpoint"] == "best"  # the default where one is kept
    # and the printed summary says which network it tested, and shows both valid values
    assert f"test bits_per_char (best valid, epoch 0, iteration {s['best_iteration']}" in out
    assert f"last {valid[-1]:.5g}, best {min(valid):.5g}" in out
    # the plain text of `eval` names the network too
    assert main(["eval", str(run_dir), "--checkpoint", "last"]) == 0
    assert f"last checkpoint, iteration {s['iterations']}" in capsys.readouterr().out


def test_report_tables_use_the_best_networks_test_metric(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert train_text(run_dir, tmp_path) == 0
    s = json.loads((run_dir / "summary.json").read_text())
    assert main(["report", str(run_dir), "--out", str(tmp_path / "rep")]) == 0
    text = (tmp_path / "rep" / "report.md").read_text()
    assert f"bits_per_char {s['test']['bits_per_char']:.4g} (best valid, epoch 0)" in text
    assert f"{s['final']['bits_per_char']:.4g}" not in text


def test_a_run_on_the_test_split_keeps_no_best_network(tmp_path, capsys):
    from runkit import train_tiny

    assert train_tiny(tmp_path / "m", **{"stop.max_iterations": "2"}) == 0
    assert not (tmp_path / "m" / "best.safetensors").exists()
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "m"), "--checkpoint", "best"]) == 1
    err = capsys.readouterr().err.strip()
    assert "keeps no best network" in err and "--checkpoint last" in err
    assert len(err.splitlines()) == 1
    assert eval_json(capsys, tmp_path / "m")["checkpoint"] == "last"


def test_the_best_network_is_one_file_without_a_prev_copy(tmp_path):
    """The best file keeps no ``.prev`` (issue 22: a words run folder held four model copies);
    the last checkpoint keeps its ``.prev`` (the fallback of a damaged newest file), and a best
    ``.prev`` left by an earlier lstmlab is removed at the next write, which stays atomic."""
    from lstmlab.training.checkpoint import save_checkpoint

    run_dir = tmp_path / "run"
    assert train_text(run_dir, tmp_path) == 0
    assert (run_dir / "best.safetensors").exists()
    assert not (run_dir / "best.safetensors.prev").exists()
    assert (run_dir / "checkpoint.safetensors.prev").exists()
    # the option itself: an old .prev goes, nothing else is left beside the file
    path = tmp_path / "x" / "best.safetensors"
    path.parent.mkdir()
    path.with_name("best.safetensors.prev").write_bytes(b"old")
    save_checkpoint({"a": torch.ones(2)}, path, keep_prev=False)
    save_checkpoint({"a": torch.zeros(2)}, path, keep_prev=False)
    assert sorted(f.name for f in path.parent.iterdir()) == ["best.safetensors"]
    assert torch.equal(load_checkpoint(path)["a"], torch.zeros(2))
    save_checkpoint({"a": torch.ones(2)}, path)  # the default keeps the one before
    assert torch.equal(
        load_checkpoint(path.with_name("best.safetensors.prev"))["a"], torch.zeros(2)
    )


def test_resume_keeps_the_best_network(tmp_path, capsys):
    full, part = tmp_path / "full", tmp_path / "part"
    assert train_text(full, tmp_path) == 0
    assert train_text(part, tmp_path, "--stop.max_iterations", "6") == 0
    assert main(["resume", str(part), "--progress", "none", "--stop.max_iterations", "12"]) == 0
    a = load_checkpoint(full / "best.safetensors")
    b = load_checkpoint(part / "best.safetensors")
    assert a["train_state"]["iteration"] == b["train_state"]["iteration"] < 12
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    sa = json.loads((full / "summary.json").read_text())
    sb = json.loads((part / "summary.json").read_text())
    assert sa["test"] == sb["test"] and sb["tested"]["network"] == "best"


def test_a_best_network_of_another_evaluation_is_not_tested(tmp_path):
    """A best file that does not belong to the run's best evaluation (a run killed between
    writing it and its checkpoint, resumed to a different end) is not passed off as best."""
    run_dir = tmp_path / "run"
    assert train_text(run_dir, tmp_path) == 0
    from lstmlab.training.state import TrainState

    cfg = run.load_config(run_dir)
    state = TrainState.from_dict(load_checkpoint(run_dir / "checkpoint.safetensors")["train_state"])
    assert run._best_network(run.RunPaths(run_dir), cfg, state) is not None
    state.best_iteration += 1
    assert run._best_network(run.RunPaths(run_dir), cfg, state) is None


@pytest.mark.parametrize("bad", ["middle", "BEST"])
def test_eval_checkpoint_choices(bad, capsys):
    assert main(["eval", "x", "--checkpoint", bad]) == 2
    err = capsys.readouterr().err
    assert "choose from" in err and "best" in err


@pytest.mark.slow  # two worker processes
def test_a_worker_group_keeps_the_best_network_as_one_process_does(tmp_path, capsys):
    one, two = tmp_path / "one", tmp_path / "two"
    assert train_text(one, tmp_path, "--precision", "float64") == 0
    assert train_text(two, tmp_path, "--precision", "float64", "--workers", "2") == 0
    a = json.loads((one / "summary.json").read_text())
    b = json.loads((two / "summary.json").read_text())
    assert b["tested"] == a["tested"] and b["tested"]["network"] == "best"
    assert b["test"]["bits_per_char"] == pytest.approx(a["test"]["bits_per_char"], rel=1e-9)
    assert (
        load_checkpoint(two / "best.safetensors")["train_state"]["iteration"] == a["best_iteration"]
    )


@pytest.mark.parametrize("records", [6])
def test_kill_9_then_resume_keeps_the_uninterrupted_best_network(tmp_path, records):
    """A kill may land after a best network was written and before the checkpoint that
    follows (checkpoints every 5 iterations here); resume replays those steps and ends with the
    best network, the test number and the metrics of the uninterrupted run."""
    import os
    import signal
    import subprocess
    import time

    extra = ["--precision", "float64", "--checkpoint_every", "5"]
    ref = tmp_path / "ref"
    assert train_text(ref, tmp_path, *extra) == 0
    run_dir = tmp_path / "killed"
    argv = ["train", "text", "--run-dir", str(run_dir), *RUN, *tiny_args("text", tmp_path)]
    env = dict(os.environ)
    env["PYTHONPATH"] = (
        str(Path(__file__).resolve().parents[2]) + os.pathsep + env.get("PYTHONPATH", "")
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "lstmlab", *argv, *NOISY, *extra],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    metrics, end = run_dir / "metrics.jsonl", time.time() + 120
    while time.time() < end and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= records:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "summary.json").exists()  # the kill landed inside the run
    assert main(["resume", str(run_dir), "--progress", "none"]) == 0
    a, b = load_checkpoint(ref / "best.safetensors"), load_checkpoint(run_dir / "best.safetensors")
    assert a["train_state"]["iteration"] == b["train_state"]["iteration"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    sa = json.loads((ref / "summary.json").read_text())
    sb = json.loads((run_dir / "summary.json").read_text())
    assert sa["test"] == sb["test"] and sa["tested"] == sb["tested"]
