"""Studies heal (issue 23): a torn journal tail is cut back, never written onto; damaged
storage is one line; a dead worker (a zombie included) is reaped, named with its signal, its
trial failed and queued again, and the command's exit code says so; a database outage is
retried for a while, then one line; the variant a trial gets does not depend on timing; a bad
space file is one line. The end-to-end runs with real worker processes are in
``test_heal_e2e.py``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState
from test_space_cli import SPACE, TINY
from test_workers import SPACE as SPACE2
from test_workers import tiny_base

from lstmlab.cli import main
from lstmlab.studies import cli as study_cli
from lstmlab.studies import study as S
from lstmlab.studies.storage import StorageError, first_damage


def _study(tmp_path, capsys, trials=1) -> tuple[str, Path]:
    space = tmp_path / "space.toml"
    space.write_text(SPACE)
    d = str(tmp_path / "st")
    assert main(["study", "create", d, "framewise", "--space", str(space), *TINY]) == 0
    if trials:
        assert main(["study", "run", d, "--trials", str(trials)]) == 0
    capsys.readouterr()
    return d, tmp_path / "st" / "study.journal"


def _records(journal: Path) -> list[dict]:
    raw = journal.read_bytes()
    assert raw.endswith(b"\n")
    return [json.loads(line) for line in raw.splitlines()]


# --------------------------------------------------------------------------------------------
# The journal


def test_torn_tail_is_cut_back_and_kept_not_glued_onto(tmp_path, capsys):
    d, journal = _study(tmp_path, capsys)
    n_before = len(_records(journal))
    torn = b'{"op_code":8,"worker_id":"w","trial_id":0,"user_attr":{"stop_re'
    with journal.open("ab") as fh:  # a worker killed in the middle of a write
        fh.write(torn)
    assert main(["study", "run", d, "--trials", "1"]) == 0
    assert "cut a torn record" in capsys.readouterr().err
    records = _records(journal)  # every line whole: nothing was glued onto the torn bytes
    assert len(records) > n_before
    kept = list(journal.parent.glob("study.journal.torn-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == torn
    assert main(["study", "status", d]) == 0
    assert "2 trials: 2 complete" in capsys.readouterr().out


def test_torn_tail_under_an_open_study_is_cut_before_the_next_write(tmp_path, capsys):
    """The torn record of a worker that died while this one had the study open: this one's
    next write cuts it first (under the lock), so its records are never glued onto it."""
    d, journal = _study(tmp_path, capsys)
    handle = S.open_study(d)
    torn = b'{"op_code":5,"worker_id":"dead","study_id":0,"datetime_sta'
    with journal.open("ab") as fh:
        fh.write(torn)
    handle.study.set_user_attr("note", "written after the tear")
    handle.study.set_user_attr("more", 2)
    assert "cut a torn record" in capsys.readouterr().err
    records = _records(journal)
    assert [r.get("user_attr") for r in records[-2:]] == [
        {"note": "written after the tear"},
        {"more": 2},
    ]
    assert S.open_study(d).study.user_attrs["more"] == 2  # a fresh reader replays it all
    (kept,) = journal.parent.glob("study.journal.torn-*")
    assert kept.read_bytes() == torn


def test_unparsable_last_line_is_cut_on_open(tmp_path, capsys):
    d, journal = _study(tmp_path, capsys)
    with journal.open("ab") as fh:
        fh.write(b'{"op_code":8,"worker_id"{"op_code":8}\n')  # a glued tail, as before the fix
    assert main(["study", "status", d]) == 0
    captured = capsys.readouterr()
    assert "1 trials: 1 complete" in captured.out and "cut a torn record" in captured.err
    assert first_damage(journal) is None
    assert [p.read_bytes() for p in journal.parent.glob("study.journal.torn-*")] == [
        b'{"op_code":8,"worker_id"{"op_code":8}\n'
    ]


@pytest.mark.parametrize(
    "bad",
    [b"\x00\x00garbage\n", b'{"op_code":8,"worker_id":"w","tr{"op_code":4}\n', b"[1, 2]\n"],
    ids=["garbage", "glued", "not-an-operation"],
)
def test_damage_in_the_middle_is_one_line_with_the_line_number(tmp_path, capsys, bad):
    d, journal = _study(tmp_path, capsys)
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join(lines[:3]) + bad + b"".join(lines[3:]))
    before = journal.read_bytes()
    for argv in (["study", "status", d], ["study", "run", d, "--trials", "1"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert "study.journal is damaged at line 4" in err and "head -n 3" in err
    assert journal.read_bytes() == before  # damage is reported, never "repaired" by guessing


def test_damage_appearing_while_running_is_one_line(tmp_path, capsys):
    """A record damaged under a running worker (its reads past it): StorageError, exit 1."""
    d, journal = _study(tmp_path, capsys, trials=0)
    handle = S.open_study(d)
    with journal.open("ab") as fh:
        fh.write(b"garbage\n" + b'{"op_code":0,"study_name":"x","directions":[1]}\n')
    with pytest.raises(StorageError, match=r"damaged at line \d+ \(not a JSON record\)"):
        S.status(handle)


# --------------------------------------------------------------------------------------------
# The search space file


@pytest.mark.parametrize("kind", ["latin-1", "directory", "fifo", "device", "huge", "missing"])
def test_bad_space_file_is_one_line(tmp_path, capsys, kind):
    f = tmp_path / "space.toml"
    if kind == "latin-1":
        f.write_bytes('variants = ["vanilla"]  # \xe9t\xe9\n'.encode("latin-1"))
    elif kind == "directory":
        f.mkdir()
    elif kind == "fifo":
        os.mkfifo(f)  # nobody writes: reading it would hang
    elif kind == "device":
        f = Path("/dev/zero")
    elif kind == "huge":
        f.write_bytes(b"# " + b"x" * (2 << 20) + b"\n")
    want = {
        "latin-1": "not UTF-8 text",
        "directory": "not a regular file",
        "fifo": "not a regular file",
        "device": "not a regular file",
        "huge": "too large for a search space",
        "missing": "cannot read: No such file",
    }[kind]
    d = tmp_path / "st"
    assert main(["study", "create", str(d), "framewise", "--space", str(f), *TINY]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and want in err and str(f) in err
    assert not d.exists()


# --------------------------------------------------------------------------------------------
# Dead workers


def test_a_zombie_worker_is_not_alive():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        me = S.worker_id()
        w = {**me, "pid": p.pid, "start": S._process_start(p.pid)}
        assert S._alive(w)
        p.send_signal(signal.SIGKILL)
        deadline = time.time() + 10
        while (S._proc_stat(p.pid) or ["?"])[0] != "Z" and time.time() < deadline:
            time.sleep(0.02)
        assert S._proc_stat(p.pid)[0] == "Z"  # dead, not waited for: a zombie
        assert not S._alive(w)
    finally:
        p.kill()
        p.wait()


class _InProcess:
    """A stand-in for ``subprocess.Popen`` of ``python -m lstmlab ARGS``: runs ``main(ARGS)``
    here, at once (the worker logic is the same; the test needs no fresh interpreter)."""

    def __init__(self, argv):
        assert argv[:3] == [sys.executable, "-m", "lstmlab"], argv
        self.argv, self.pid = argv[3:], os.getpid()
        self.returncode = main(self.argv)

    def poll(self):
        return self.returncode

    def wait(self, timeout=None):
        return self.returncode


def test_resume_with_two_workers_starts_two(tmp_path, capsys, monkeypatch):
    d, _ = _study(tmp_path, capsys)
    started: list[_InProcess] = []
    monkeypatch.setattr(
        study_cli.subprocess, "Popen", lambda argv: started.append(_InProcess(argv)) or started[-1]
    )
    assert main(["study", "resume", d, "--workers", "2", "--trials", "1"]) == 0
    assert [w.argv[:2] for w in started] == [["study", "resume"], ["study", "run"]]
    assert [w.returncode for w in started] == [0, 0]
    assert main(["study", "status", d]) == 0
    assert "3 trials: 3 complete" in capsys.readouterr().out


def test_a_killed_worker_is_named_its_trial_retried_and_the_exit_code_says_so(
    tmp_path, capsys, monkeypatch
):
    """``study run --workers 2``: the second worker is killed with SIGKILL inside its trial.
    The command names it with the signal, fails its trial and queues it again, a fresh worker
    runs the retry (same parameters and run directory), and the exit code is 4."""
    d, _ = _study(tmp_path, capsys, trials=0)
    handle = S.open_study(d)
    started: list = []
    real_popen = subprocess.Popen

    def popen(argv):
        if len(started) != 1:
            started.append(_InProcess(argv))
            return started[-1]
        # the victim: a real process that "runs" a trial it has sampled, then is killed
        p = real_popen([sys.executable, "-c", "import time; time.sleep(60)"])
        t = handle.study.ask()
        t.set_user_attr("worker", {**S.worker_id(), "pid": p.pid, "start": S._process_start(p.pid)})
        t.set_user_attr("run_dir", str(Path(d) / "trials" / "victim"))
        # killed as its run started: the run directory holds a temporary file, no config
        (Path(d) / "trials" / "victim").mkdir(parents=True)
        (Path(d) / "trials" / "victim" / "config.toml.tmp").write_text("[task")
        t.suggest_categorical("variant", ["vanilla", "CIFG"])
        t.suggest_int("hidden_size", 2, 4, log=True)
        t.suggest_float("lr", 0.001, 0.1, log=True)
        p.send_signal(signal.SIGKILL)
        started.append(p)
        return p

    monkeypatch.setattr(study_cli.subprocess, "Popen", popen)
    assert (
        main(["study", "run", d, "--workers", "2", "--trials", "1"])
        == 4  # EXIT_WORKER_DIED, as documented
    )
    err = capsys.readouterr().err
    victim = started[1]
    assert f"worker 2 (pid {victim.pid}) was killed by SIGKILL" in err
    assert "trial 1 marked failed and queued again" in err
    assert [w.argv[:4] for w in started if isinstance(w, _InProcess)] == [
        ["study", "run", d, "--trials"],
        ["study", "run", d, "--trials"],
    ]
    trials = handle.study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert trials[2].user_attrs["retry_of"] == 1 and trials[2].params == trials[1].params
    assert trials[2].user_attrs["run_dir"] == str(Path(d) / "trials" / "victim")
    (aside,) = (Path(d) / "trials").glob("victim.partial-*")  # moved aside, not deleted
    assert (aside / "config.toml.tmp").read_text() == "[task"
    st = S.status(handle)
    assert st["retried"] == [1] and not st["not_retried"] and not st["running"]


def test_a_worker_that_fails_is_named_and_its_code_returned(tmp_path, capsys, monkeypatch):
    d, _ = _study(tmp_path, capsys, trials=0)
    real_popen, started = subprocess.Popen, []

    def popen(argv):
        started.append(real_popen(["sh", "-c", "exit 3"] if not started else ["true"]))
        return started[-1]

    monkeypatch.setattr(study_cli.subprocess, "Popen", popen)
    assert main(["study", "run", d, "--workers", "2", "--trials", "1"]) == 3
    err = capsys.readouterr().err
    assert f"worker 1 (pid {started[0].pid}) exited with status 3" in err
    assert "worker 2" not in err


def test_dead_trial_requeue_is_bounded():
    """A trial whose worker keeps dying is queued again at most MAX_ATTEMPTS - 1 times;
    ``resume`` (the user's explicit word) queues it regardless."""

    class T:
        def __init__(self, number, **attrs):
            self.number, self.user_attrs, self.params = number, attrs, {}

    queued = []

    class H:
        class study:  # noqa: N801
            @staticmethod
            def enqueue_trial(params, user_attrs, skip_if_exists):
                queued.append(user_attrs)

    assert S.requeue(H, T(0), [])
    assert S.requeue(H, T(5, attempt=S.MAX_ATTEMPTS - 1), [])
    assert not S.requeue(H, T(6, attempt=S.MAX_ATTEMPTS), [])
    assert S.requeue(H, T(6, attempt=S.MAX_ATTEMPTS), [], force=True)
    assert not S.requeue(H, T(0), [T(7, retry_of=0)])  # it has a retry already
    assert [q["attempt"] for q in queued] == [2, S.MAX_ATTEMPTS, S.MAX_ATTEMPTS + 1]


# --------------------------------------------------------------------------------------------
# Variants


def test_variant_is_dealt_by_trial_number_not_by_timing(tmp_path):
    """Fresh trials take the variants round robin whatever fails or is still running; a
    retry keeps its original's variant (and, if it died before sampling, draws it)."""
    handle = S.create(tmp_path / "s", tiny_base(), space=SPACE2, seed=3)
    study = handle.study

    def sample(trial):
        return SPACE2.sample(trial)["model.variant"]

    t0 = study.ask()
    assert sample(t0) == "vanilla"
    study.tell(t0, state=TrialState.FAIL)
    t1 = study.ask()  # after a failure, before its retry is queued: the next variant
    assert sample(t1) == "NP"
    S.requeue(handle, study.get_trials(deepcopy=False)[0])  # retry of 0 = trial 2
    t2 = study.ask()
    assert t2.number == 2 and sample(t2) == "vanilla"  # the retry: its original's variant
    t3, t4 = study.ask(), study.ask()
    assert (sample(t3), sample(t4)) == ("vanilla", "NP")
    t5, t6 = study.ask(), study.ask()  # t6 samples before t5 (another worker was quicker)
    assert (sample(t6), sample(t5)) == ("NP", "vanilla")
    # a trial that died before sampling: its retry draws what it would have drawn
    t7 = study.ask()
    study.tell(t7, state=TrialState.FAIL)
    S.requeue(handle, study.get_trials(deepcopy=False)[7])
    t8 = study.ask()
    assert t8.user_attrs["retry_of"] == 7 and sample(t8) == "vanilla"
    fresh = [t for t in study.get_trials(deepcopy=False) if "retry_of" not in t.user_attrs]
    assert [t.params.get("variant") for t in fresh] == [
        *["vanilla", "NP"] * 3,
        None,  # t7, failed before it sampled
    ]


# --------------------------------------------------------------------------------------------
# PostgreSQL outages


def test_database_outage_is_retried_then_one_line(tmp_path, capsys, monkeypatch, pg_ctl, pg_url):
    d = str(tmp_path / "st")
    space = tmp_path / "space.toml"
    space.write_text(SPACE)
    assert main(["study", "create", d, "framewise", "--space", str(space), "--storage", pg_url, *TINY]) == 0  # fmt: skip
    monkeypatch.setenv("LSTMLAB_STORAGE_RETRY", "2")
    opened = S.open_study

    def open_then_lose_the_server(*a, **kw):
        h = opened(*a, **kw)
        pg_ctl.stop()
        return h

    monkeypatch.setattr(S, "open_study", open_then_lose_the_server)
    try:
        t = time.time()
        assert main(["study", "status", d]) == study_cli.EXIT_STORAGE
        took = time.time() - t
        err = capsys.readouterr().err
        assert "lost the database postgresql://" in err and "retried" in err, err
        assert err.count("\n") == 2 and "Traceback" not in err  # "retrying…", then the error
        assert 1.5 < took < 30
    finally:
        pg_ctl.start()
    monkeypatch.setattr(S, "open_study", opened)
    assert main(["study", "status", d]) == 0  # the server is back: all as it was
    assert "0 trials: no trials" in capsys.readouterr().out
    # a worker that starts while the server is down waits for it (a restart in progress)
    monkeypatch.setenv("LSTMLAB_STORAGE_RETRY", "60")
    pg_ctl.stop()
    back = threading.Timer(3.0, pg_ctl.start)
    back.start()
    try:
        assert main(["study", "status", d]) == 0
    finally:
        back.join()
    captured = capsys.readouterr()
    assert "unreachable; retrying for up to 60 s" in captured.err
    assert "0 trials: no trials" in captured.out


@pytest.mark.parametrize("value", ["abc", "-1", "1e9"])
def test_bad_retry_setting_is_one_line(tmp_path, capsys, monkeypatch, value):
    monkeypatch.setenv("LSTMLAB_STORAGE_RETRY", value)
    argv = ["study", "status", str(tmp_path / "w"), "--name", "s", "--storage"]
    assert main([*argv, "postgresql://u:p@127.0.0.1:1/x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"LSTMLAB_STORAGE_RETRY={value!r}: give" in err
