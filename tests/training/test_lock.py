"""One writer per run directory (issue 16): real processes on one run, a stale lock after
``kill -9``, a lock from another host, only rank 0 writes, and SIGTERM handled as Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from runkit import tiny_flags, train_tiny

from lstmlab.cli import main
from lstmlab.training.checkpoint import load_checkpoint
from lstmlab.training.lock import LOCK_NAME, LockError, RunLock, read_holder

ROOT = Path(__file__).resolve().parents[2]


def lstmlab(*args: str) -> list[str]:
    return [sys.executable, "-m", "lstmlab", *args]


def env():
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    e["OMP_NUM_THREADS"] = "1"
    return e


def wait_for(cond, proc=None, timeout: float = 120) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended early: {proc.communicate()}")
        time.sleep(0.02)
    raise AssertionError("timed out")


def rows(run: Path) -> list[dict]:
    p = run / "metrics.jsonl"
    if not p.exists():
        return []
    return [json.loads(ln) for ln in p.read_text().splitlines() if ln.endswith("}")]


def test_a_second_writer_is_refused_and_sigterm_checkpoints(tmp_path):
    run = tmp_path / "run"
    flags = tiny_flags(**{"stop.max_iterations": "100000"})
    first = subprocess.Popen(
        lstmlab("train", "multiplication", "--run-dir", str(run), "--progress", "plain", *flags),
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: len(rows(run)) >= 3, first)
    # a second writer, a real process: refused with one line naming the holder
    second = subprocess.run(
        lstmlab("resume", str(run), "--progress", "none", "--stop.max_iterations", "200000"),
        env=env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert second.returncode == 1, second.stderr
    err = second.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert f"in use by pid {first.pid}" in err
    # SIGTERM: like Ctrl-C -- a clean checkpoint, exit 143, the lock released
    first.send_signal(signal.SIGTERM)
    out, err = first.communicate(timeout=120)
    assert first.returncode == 143, err
    assert "Traceback" not in err and "SIGTERM" in err and "not solved (interrupted)" in out
    state = load_checkpoint(run / "checkpoint.safetensors")["train_state"]
    assert state["stop_reason"] == "interrupted"
    its = [r["iteration"] for r in rows(run)]
    assert its == sorted(set(its)), "two writers: duplicate metrics rows"
    assert read_holder(run) is None  # released


@pytest.mark.slow
def test_kill_9_leaves_a_stale_lock_that_the_next_resume_takes_over(tmp_path):
    run = tmp_path / "run"
    assert train_tiny(str(run), **{"stop.max_iterations": "2"}) == 0
    its = [r["iteration"] for r in rows(run)]
    stopped_at = 2

    # kill -9 a resumed writer: its lock stays behind, stale, and is taken over with a warning
    budget = str(stopped_at + 100000)
    third = subprocess.Popen(
        lstmlab("resume", str(run), "--progress", "none", "--stop.max_iterations", budget),
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: len(rows(run)) >= len(its) + 3, third)
    third.send_signal(signal.SIGKILL)
    third.wait()
    assert read_holder(run)["pid"] == third.pid
    assert (
        main(
            ["resume", str(run), "--progress", "none", "--stop.max_iterations", str(stopped_at + 8)]
        )
        == 0
    )
    its = [r["iteration"] for r in rows(run)]
    assert its == sorted(set(its)) and its[-1] == stopped_at + 8
    assert read_holder(run) is None


@pytest.mark.slow
def test_sigterm_resume_equals_uninterrupted(tmp_path):
    flags = tiny_flags(**{"stop.max_iterations": "100000"})
    run = tmp_path / "run"
    proc = subprocess.Popen(
        lstmlab("train", "multiplication", "--run-dir", str(run), "--progress", "none", *flags),
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: len(rows(run)) >= 4, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143
    k = load_checkpoint(run / "checkpoint.safetensors")["train_state"]["iteration"] + 3
    assert main(["resume", str(run), "--progress", "none", "--stop.max_iterations", str(k)]) == 0
    ref = tmp_path / "ref"
    ref_flags = tiny_flags(**{"stop.max_iterations": str(k)})
    assert (
        main(["train", "multiplication", "--run-dir", str(ref), "--progress", "none", *ref_flags])
        == 0
    )
    a = load_checkpoint(run / "checkpoint.safetensors")["model"]
    b = load_checkpoint(ref / "checkpoint.safetensors")["model"]
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_lock_in_process(tmp_path):
    with RunLock(tmp_path, command="first") as lock:
        assert lock.held and read_holder(tmp_path)["pid"] == os.getpid()
        # flock is per open file description: a second lock in this process is refused too
        with pytest.raises(LockError, match="in use by pid"):
            RunLock(tmp_path).acquire()
    assert read_holder(tmp_path) is None
    assert not (tmp_path / LOCK_NAME).exists()  # removed on release


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_warning(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    holder = {"pid": dead.pid, "host": socket.gethostname(), "command": "x", "since": 0}
    (tmp_path / LOCK_NAME).write_text(json.dumps(holder))
    lock = RunLock(tmp_path).acquire()
    try:
        assert lock.warning and "stale" in lock.warning and str(dead.pid) in lock.warning
    finally:
        lock.release()


def test_a_lock_from_another_host_needs_break_lock(tmp_path, capsys):
    assert train_tiny(str(tmp_path / "r"), **{"stop.max_iterations": "1"}) == 0
    holder = {"pid": 1234, "host": "elsewhere.example", "command": "lstmlab resume", "since": 0}
    (tmp_path / "r" / LOCK_NAME).write_text(json.dumps(holder))
    capsys.readouterr()
    assert main(["resume", str(tmp_path / "r"), "--stop.max_iterations", "2"]) == 1
    err = capsys.readouterr().err.strip()
    assert "elsewhere.example" in err and "--break-lock" in err and len(err.splitlines()) == 1
    args = ["resume", str(tmp_path / "r"), "--stop.max_iterations", "2", "--progress", "none"]
    assert main([*args, "--break-lock"]) == 0
    assert "stale lock" in capsys.readouterr().err


def test_only_rank_0_takes_the_lock(tmp_path, monkeypatch):
    other = RunLock(tmp_path, rank=1).acquire()
    assert not other.held and not (tmp_path / LOCK_NAME).exists()
    monkeypatch.setenv("RANK", "3")
    assert not RunLock(tmp_path).acquire().held
    monkeypatch.setenv("RANK", "0")
    lock = RunLock(tmp_path).acquire()
    assert lock.held
    lock.release()


def test_train_into_a_directory_left_with_only_a_stale_lock(tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = tmp_path / "run"
    run.mkdir()
    holder = {"pid": dead.pid, "host": socket.gethostname(), "command": "train", "since": 0}
    (run / LOCK_NAME).write_text(json.dumps(holder))
    flags = tiny_flags(**{"stop.max_iterations": "1"})
    assert (
        main(["train", "multiplication", "--run-dir", str(run), "--progress", "none", *flags]) == 0
    )
    assert "stale lock" in capsys.readouterr().err


def test_without_flock_the_holders_pid_decides(tmp_path, monkeypatch):
    """File systems without locks (or no fcntl): a live holder pid refuses, a dead one is stale."""
    import lstmlab.training.lock as lock_module

    monkeypatch.setattr(lock_module, "fcntl", None)
    live = {"pid": os.getpid(), "host": socket.gethostname(), "command": "x", "since": 0}
    (tmp_path / LOCK_NAME).write_text(json.dumps(live))
    with pytest.raises(LockError, match=f"in use by pid {os.getpid()}"):
        RunLock(tmp_path).acquire()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK_NAME).write_text(json.dumps({**live, "pid": dead.pid}))
    lock = RunLock(tmp_path).acquire()
    assert lock.held and "stale" in lock.warning
    lock.release()
    again = RunLock(tmp_path).acquire()
    assert again.warning is None  # released cleanly: no stale holder
    again.release()
