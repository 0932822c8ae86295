"""A study heals, end to end with real processes (issue 23): ``lstmlab study run --workers 2``
whose worker is SIGKILLed in the middle of a journal write, and the same on PostgreSQL with a
worker SIGKILLed and the server restarted mid-study. Each ends with every trial complete (a
failed one by its retry), none run twice, and ``status`` clean; the command's exit code says
that a worker died."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from lstmlab.studies import study as S
from lstmlab.studies.cli import EXIT_WORKER_DIED
from lstmlab.studies.storage import first_damage

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "--task.options.n_train", "12",
    "--task.options.n_valid", "6",
    "--task.options.n_test", "6",
    "--optimizer.batch_size", "6",
    "--stop.max_epochs", "2",
]  # fmt: skip
SPACE = """variants = ["vanilla", "CIFG"]
[params.hidden_size]
type = "int_log"
low = 2
high = 4
[params.lr]
type = "log"
low = 0.001
high = 0.1
"""

# Loaded into every Python process of the command (PYTHONPATH): the first process to write a
# journal record holding MARKER writes half of it and kills itself with SIGKILL, inside the
# journal's lock: a worker that dies in the middle of a write.
TEAR = """
import os
if os.environ.get("TEAR_MARKER"):
    from lstmlab.studies import storage

    _write = storage.HealingJournalBackend._write

    def _tearing_write(self, fh, data):
        if os.environ["TEAR_MARKER"].encode() in data:
            try:
                os.close(os.open(os.environ["TEAR_CLAIM"], os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                return _write(self, fh, data)
            fh.write(data[: len(data) // 2])
            fh.flush()
            os.kill(os.getpid(), 9)
        return _write(self, fh, data)

    storage.HealingJournalBackend._write = _tearing_write
"""


def _lstmlab(*args, env=None, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "lstmlab", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def _create(tmp_path, storage=None) -> str:
    space = tmp_path / "space.toml"
    space.write_text(SPACE)
    d = str(tmp_path / "st")
    extra = ["--storage", storage] if storage else []
    p = _lstmlab("study", "create", d, "framewise", "--space", str(space), *extra, *TINY)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    return d


def _assert_whole(d: str, min_complete: int) -> list:
    """Every trial complete or failed-and-retried once by a complete retry with its
    parameters and run directory; no two fresh trials alike; nothing running or queued."""
    handle = S.open_study(d)
    trials = handle.study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states, states
    retries = [t for t in trials if "retry_of" in t.user_attrs]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert failed, "a worker was killed: its trial failed"
    for f in failed:
        mine = [r for r in retries if r.user_attrs["retry_of"] == f.number]
        assert len(mine) == 1, (f.number, [r.number for r in mine])
        assert mine[0].state == TrialState.COMPLETE
        assert mine[0].params == f.params or not f.params
        if "run_dir" in f.user_attrs:
            assert mine[0].user_attrs["run_dir"] == f.user_attrs["run_dir"]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) >= min_complete
    run_dirs = [t.user_attrs["run_dir"] for t in complete]
    assert len(set(run_dirs)) == len(run_dirs)  # no trial ran twice
    fresh = [t for t in complete if "retry_of" not in t.user_attrs]
    assert len({json.dumps(t.params, sort_keys=True) for t in fresh}) == len(fresh)
    for rd in run_dirs:
        summary = json.loads((Path(rd) / "summary.json").read_text())
        assert summary["stop_reason"] in ("max_epochs", "patience")
    st = S.status(handle)
    assert not st["running"] and not st["not_retried"] and st["retried"]
    p = _lstmlab("study", "status", d)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0 and "Traceback" not in err, err
    assert "failed and run again" in out and "not run again" not in out, out
    return trials


def test_worker_killed_mid_journal_write(tmp_path):
    d = _create(tmp_path)
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(TEAR)
    env = {
        "PYTHONPATH": f"{hook}{os.pathsep}{ROOT}",
        "TEAR_MARKER": '"stop_reason"',  # the record a trial writes when its run has ended
        "TEAR_CLAIM": str(tmp_path / "claim"),
    }
    p = _lstmlab("study", "run", d, "--workers", "2", "--trials", "2", env=env)
    out, err = p.communicate(timeout=600)
    print(err)  # shown when the test fails
    assert p.returncode == EXIT_WORKER_DIED, err
    assert "was killed by SIGKILL" in err and "cut a torn record" in err, err
    assert "Traceback" not in err, err
    journal = tmp_path / "st" / "study.journal"
    assert journal.read_bytes().endswith(b"\n") and first_damage(journal) is None
    (kept,) = journal.parent.glob("study.journal.torn-*")
    torn = kept.read_bytes()
    assert torn.startswith(b'{"op_code":8,') and not torn.endswith(b"\n")  # half a user attr
    _assert_whole(d, min_complete=2)


@pytest.mark.slow  # ~75 s on a loaded 2-core machine (three interpreters, a server restart)
def test_postgresql_worker_killed_and_server_restarted_mid_study(tmp_path, pg_url, pg_ctl):
    d = _create(tmp_path, pg_url)
    handle = S.open_study(d)
    p = _lstmlab("study", "run", d, "--workers", "2", "--trials", "2", "--storage", pg_url)
    # once a worker is inside a trial, kill it, and take the database away for a few seconds
    deadline, victim = time.time() + 300, None
    while victim is None and time.time() < deadline and p.poll() is None:
        for t in handle.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if "run_dir" in t.user_attrs and "worker" in t.user_attrs:
                victim = t.user_attrs["worker"]["pid"]
                break
        time.sleep(0.05)
    assert victim is not None, "no trial started"
    os.kill(victim, signal.SIGKILL)
    pg_ctl.stop()
    time.sleep(4)
    pg_ctl.start()
    out, err = p.communicate(timeout=600)
    print(err)  # shown when the test fails
    assert p.returncode == EXIT_WORKER_DIED, err
    assert f"(pid {victim}) was killed by SIGKILL" in err, err
    assert "cannot reach" not in err and "lost the database" not in err, err  # all waited
    assert "Traceback" not in err, err
    _assert_whole(d, min_complete=2)
