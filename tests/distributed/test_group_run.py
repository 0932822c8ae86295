"""``lstmlab train`` in a worker group: the run equals a one-process run, only rank 0 writes,
resume on another number of workers, elastic restart after SIGKILL, and bad input (too few
samples, mismatched configs, an unreachable rendezvous, a hung collective)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from group import ROOT, cli_env, free_port, run_cli_group, run_group, worker_env

from lstmlab.cli import main
from lstmlab.distributed import comm
from lstmlab.training.checkpoint import load_latest

TINY = [
    "multiplication",
    "--task.options.T", "20",
    "--task.options.n_train", "12",
    "--task.options.n_test", "6",
    "--optimizer.iterations_per_batch", "2",
    "--progress", "none",
]  # fmt: skip


def _losses(run: Path) -> list[float]:
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in recs if "loss" in r]


def _params(run: Path) -> torch.Tensor:
    ckpt, _ = load_latest(run / "checkpoint.safetensors")
    return torch.cat([v.reshape(-1).double() for v in ckpt["model"].values()])


def _one_process(run: Path, iterations: int, capsys=None) -> dict:
    assert main(["train", *TINY[:1], "--run-dir", str(run), *TINY[1:],
                 "--stop.max_iterations", str(iterations)]) == 0  # fmt: skip
    return json.loads((run / "summary.json").read_text())


@pytest.mark.slow  # the default run does this with 3 workers (test_group_objective.py)
def test_two_workers_equal_one_process_and_only_rank0_writes(tmp_path):
    ref = tmp_path / "ref"
    one = _one_process(ref, 2)
    cwds = [tmp_path / "rank0", tmp_path / "rank1"]
    for c in cwds:
        c.mkdir()
    res = run_cli_group(["train", *TINY, "--run-dir", "run", "--stop.max_iterations", "2",
                         "--shards", "speed"], 2, cwds)  # fmt: skip
    assert [r.returncode for r in res] == [0, 0], [r.stderr[-2000:] for r in res]
    assert list(cwds[1].iterdir()) == []  # rank 1 wrote nothing
    assert res[1].stdout == "" and "iterations 2" in res[0].stdout
    run = cwds[0] / "run"
    assert sorted(p.name for p in run.rglob("*")) == sorted(p.name for p in ref.rglob("*"))
    two = json.loads((run / "summary.json").read_text())
    assert two["iterations"] == one["iterations"] and two["samples"] == one["samples"]
    # a speed re-shard makes a new objective: L-BFGS may evaluate one more gradient
    assert one["P_D"] <= two["P_D"] <= one["P_D"] + 3 * 12
    torch.testing.assert_close(torch.tensor(_losses(run)), torch.tensor(_losses(ref)),
                               rtol=1e-9, atol=0)  # fmt: skip
    torch.testing.assert_close(_params(run), _params(ref), rtol=1e-8, atol=1e-10)
    ckpt, _ = load_latest(run / "checkpoint.safetensors")
    assert ckpt["world_size"] == 2 and len(ckpt["rng_ranks"]) == 2
    ranks = ckpt["rng_ranks"]  # rank 0's stream is one process's; rank 1's its own
    assert torch.equal(ranks[0]["torch"], ckpt["rng"]["torch"])
    assert not torch.equal(ranks[0]["torch"], ranks[1]["torch"])


def test_too_few_samples_fail_on_every_rank_through_workers_flag(tmp_path):
    run = tmp_path / "run"
    p = subprocess.run(
        [sys.executable, "-m", "lstmlab", "train", *TINY, "--task.options.n_train", "1",
         "--run-dir", str(run), "--workers", "2"],
        env=cli_env(), capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert p.returncode == 2, p.stderr
    lines = [x for x in p.stderr.splitlines() if "config error" in x]
    assert sorted(x.split("]")[0] for x in lines) == [f"lstmlab[rank {r}" for r in range(2)]
    assert all("2 workers but only 1 training sequences" in x for x in lines)
    assert "Traceback" not in p.stderr and not run.exists()


def test_unreachable_rendezvous_is_a_clear_error(tmp_path, monkeypatch, capsys):
    # rank 1 of 2 whose rank 0 never comes (in this process: no start-up cost)
    for key, value in worker_env(1, 2, free_port(), LSTMLAB_DIST_TIMEOUT="2").items():
        monkeypatch.setenv(key, value)
    t0 = time.perf_counter()
    code = main(["train", *TINY, "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "lstmlab[rank 1]: error: rank 1: cannot join the worker group at 127.0.0.1" in err
    assert "Traceback" not in err and not (tmp_path / "run").exists()
    assert time.perf_counter() - t0 < 30
    assert comm.get_world_size() == 1  # nothing left half-started


@pytest.mark.slow
def test_mismatched_config_fails_on_every_rank(tmp_path):
    cwds = [tmp_path / "rank0", tmp_path / "rank1"]
    for c in cwds:
        c.mkdir()
    port = free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "lstmlab", "train", *TINY, "--run-dir", "run", "--seed", str(r)],
            env={**worker_env(r, 2, port), "PYTHONPATH": str(ROOT)},
            cwd=cwds[r],
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for r in range(2)
    ]
    errs = [p.communicate(timeout=180)[1] for p in procs]
    assert [p.returncode for p in procs] == [1, 1], errs
    for r, err in enumerate(errs):
        assert f"lstmlab[rank {r}]: error: the run configuration differs between ranks" in err
    assert not (cwds[0] / "run").exists() and list(cwds[1].iterdir()) == []


@pytest.mark.slow
def test_hung_collective_times_out(tmp_path):
    res = run_group("hang", 2, tmp_path, timeout=120, LSTMLAB_DIST_TIMEOUT="4")
    assert "all-reduce failed" in res[0]["error"] and res[0]["seconds"] < 30


@pytest.mark.slow
def test_torchrun_resume_on_another_number_of_workers(tmp_path):
    ref = tmp_path / "ref"
    _one_process(ref, 4)
    run = tmp_path / "run"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    first = subprocess.run(
        [*torchrun, "--nproc-per-node", "2", "-m", "lstmlab", "train", *TINY,
         "--run-dir", str(run), "--stop.max_iterations", "2"],
        env=cli_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    second = subprocess.run(  # lstmlab's own launcher, 3 workers
        [sys.executable, "-m", "lstmlab", "resume", str(run), "--workers", "3",
         "--stop.max_iterations", "3", "--progress", "none"],
        env=cli_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert second.returncode == 0, second.stderr[-3000:]
    third = subprocess.run(  # torchrun, back to 2 workers
        [*torchrun, "--nproc-per-node", "2", "-m", "lstmlab", "resume", str(run),
         "--stop.max_iterations", "4", "--progress", "none"],
        env=cli_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert third.returncode == 0, third.stderr[-3000:]
    assert len(_losses(run)) == len(_losses(ref)) == 4
    torch.testing.assert_close(torch.tensor(_losses(run)), torch.tensor(_losses(ref)),
                               rtol=1e-8, atol=0)  # fmt: skip
    torch.testing.assert_close(_params(run), _params(ref), rtol=1e-7, atol=1e-9)


def _workers_of(agent: int) -> list[int]:
    """The worker processes torchrun's agent started (its children running lstmlab)."""
    out = []
    for pid in Path("/proc").iterdir():
        if not pid.name.isdigit():
            continue
        try:
            stat = (pid / "stat").read_text()
            cmd = (pid / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == agent and "lstmlab" in cmd:
            out.append(int(pid.name))
    return sorted(out)


@pytest.mark.slow
def test_sigkill_then_elastic_restart_gives_the_uninterrupted_result(tmp_path):
    args = ["train", *TINY, "--stop.max_iterations", "8", "--slow-worker", "1:2"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc-per-node", "2"]  # fmt: skip
    ref = tmp_path / "ref"
    p = subprocess.run([*torchrun, "-m", "lstmlab", *args, "--run-dir", str(ref)],
                       env=cli_env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    run = tmp_path / "run"
    agent = subprocess.Popen(
        [*torchrun, "--max-restarts", "2", "-m", "lstmlab", *args, "--run-dir", str(run)],
        env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 240
    while time.time() < deadline:  # kill a worker once 3 iterations are checkpointed
        if (run / "metrics.jsonl").exists() and len(_losses(run)) >= 3:
            break
        time.sleep(0.2)
    workers = _workers_of(agent.pid)
    assert len(workers) == 2, workers
    os.kill(workers[1], signal.SIGKILL)
    out, err = agent.communicate(timeout=300)
    assert agent.returncode == 0, err[-3000:]
    assert json.loads((run / "summary.json").read_text())["iterations"] == 8
    assert torch.equal(_params(run), _params(ref))
    assert _losses(run) == _losses(ref)


@pytest.mark.slow
def test_wall_clock_intervals_are_rank_0s_decision(tmp_path):
    """``eval_seconds`` / ``checkpoint_seconds``: every process's clock answers differently (here
    a worker 3x slower); the group must act on one answer or its collectives would not meet."""
    run = tmp_path / "run"
    p = subprocess.run(
        [sys.executable, "-m", "lstmlab", "train", *TINY, "--run-dir", str(run),
         "--workers", "2", "--slow-worker", "1:3", "--stop.max_iterations", "8",
         "--eval_every", "1000", "--checkpoint_every", "1000",
         "--eval_seconds", "0.001", "--checkpoint_seconds", "0.001"],
        env=cli_env(LSTMLAB_DIST_TIMEOUT="30"), capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["iterations"] == 8
