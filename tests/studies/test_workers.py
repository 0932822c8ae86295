"""Several worker processes on one study, on the embedded journal and on a real PostgreSQL:
the trial count adds up, no trial runs twice; a worker killed with SIGKILL mid-trial leaves a
consistent study whose failed trial ``resume`` runs again from its checkpoint."""

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
from lstmlab.studies.space import from_dict
from lstmlab.training.config import resolve

ROOT = Path(__file__).resolve().parents[2]
SPACE = from_dict(
    {
        "variants": ["vanilla", "NP"],
        "params": {
            "hidden_size": {"type": "int_log", "low": 2, "high": 4},
            "lr": {"type": "log", "low": 1e-3, "high": 1e-1},
            "input_noise": {"type": "uniform", "low": 0.0, "high": 0.5},
        },
    }
)


def tiny_base(epochs=2):
    return resolve(
        [S.GREFF_BASE],
        {
            "task.name": "framewise",
            "task.options.n_train": 20,
            "task.options.n_valid": 10,
            "task.options.n_test": 10,
            "optimizer.batch_size": 5,
            "stop.max_epochs": epochs,
        },
    )


def _worker(root, trials, storage=None):
    cmd = [sys.executable, "-m", "lstmlab", "study", "run", str(root), "--trials", str(trials)]
    if storage:
        cmd += ["--storage", storage]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _trials(handle, **kw):
    return handle.study.get_trials(deepcopy=False, **kw)


@pytest.fixture(params=["journal", "postgresql"])
def storage(request):
    return None if request.param == "journal" else request.getfixturevalue("pg_url")


@pytest.mark.slow  # three fresh processes and six trials: 50-90 s on a loaded 2-core machine
def test_three_workers_one_killed_mid_trial(tmp_path, storage):
    root = tmp_path / "study"
    handle = S.create(root, tiny_base(epochs=5), space=SPACE, storage=storage, seed=1)
    workers = [_worker(root, 2, storage) for _ in range(3)]
    victim = workers[0]
    # wait until the victim is inside a trial that has checkpointed, then SIGKILL it
    deadline = time.time() + 120
    target = None
    while target is None and time.time() < deadline:
        for t in _trials(handle, states=(TrialState.RUNNING,)):
            w, rd = t.user_attrs.get("worker", {}), t.user_attrs.get("run_dir")
            if w.get("pid") == victim.pid and rd and (Path(rd) / "checkpoint.safetensors").exists():
                target = t
        time.sleep(0.05)
    assert target is not None, "the victim never reached a checkpoint"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    for w in workers[1:]:
        assert w.wait(timeout=300) == 0, w.stderr.read().decode()[-2000:]

    # the others went on (2 trials each) and, before each new trial, marked the victim's
    # trial failed once its process was gone and queued it again (one of them may have run
    # the retry already); if they had finished first, the next look does
    S.reap_dead_trials(handle)
    assert [t.number for t in _trials(handle, states=(TrialState.FAIL,))] == [target.number]
    assert not _trials(handle, states=(TrialState.RUNNING,))

    # resume: the queued retry runs (if no worker ran it), continuing its run directory
    assert S.resume(handle, log=lambda m: None) in (0, 1)
    trials = _trials(handle)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(trials) in (5, 6) and len(complete) == len(trials) - 1
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    retry = [t for t in complete if t.user_attrs.get("retry_of") == target.number]
    assert len(retry) == 1 and retry[0].params == target.params
    run_dirs = [t.user_attrs["run_dir"] for t in complete]
    assert len(set(run_dirs)) == len(complete) and target.user_attrs["run_dir"] in run_dirs
    for rd in run_dirs:  # each an ordinary, finished run directory with a gapless log
        summary = json.loads((Path(rd) / "summary.json").read_text())
        assert summary["stop_reason"] in ("max_epochs", "patience")
        its = [json.loads(x)["iteration"] for x in (Path(rd) / "metrics.jsonl").open()]
        assert its == sorted(set(its)) and its[0] == 0 and its[-1] == summary["iterations"]
    st = S.status(handle)
    assert st["states"] == {"complete": len(complete), "fail": 1} and not st["running"]
    assert st["retried"] == [target.number] and not st["not_retried"]
    # nothing more to retry: a second resume runs nothing
    assert S.resume(handle, log=lambda m: None) == 0


def test_unreachable_database_is_a_clear_error(tmp_path):
    with pytest.raises(S.StudyError, match="^cannot reach database postgresql://u:\\*\\*\\*@"):
        S.create(tmp_path / "s", tiny_base(), storage="postgresql://u:secret@127.0.0.1:1/none")
    assert not (tmp_path / "s" / "study.toml").exists()


def test_dead_worker_trial_is_failed_and_resumed_in_process(tmp_path, storage):
    """The fast twin of the test above: a trial whose worker process is gone (a pid that
    cannot be alive) is marked failed, and ``resume`` runs it again in its run directory."""
    root = tmp_path / "study"
    handle = S.create(root, tiny_base(), space=SPACE, storage=storage)
    assert S.run_worker(handle, trials=2, log=lambda m: None) == 2
    orphan = handle.study.ask()  # a trial some worker started ...
    orphan.set_user_attr("worker", {**S.worker_id(), "pid": 2**22 + 1, "start": "0"})
    orphan.set_user_attr("run_dir", str(root / "trials" / "orphan"))
    for p in SPACE.searched.values():  # ... and sampled, before it died
        orphan.suggest_int(p.key, int(p.low), int(p.high), log=p.log) if p.integer else (
            orphan.suggest_float(p.key, p.low, p.high, log=p.log)
        )
    orphan.suggest_categorical("variant", list(SPACE.variants))
    # status looks, and reaps: the trial is failed and queued again
    assert S.status(handle)["states"] == {"complete": 2, "fail": 1, "waiting": 1}
    assert S.resume(handle, log=lambda m: None) == 1
    trials = _trials(handle)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2 + [TrialState.FAIL] + [
        TrialState.COMPLETE
    ]
    assert trials[3].user_attrs["retry_of"] == orphan.number
    assert trials[3].params == trials[2].params
    assert trials[3].user_attrs["run_dir"] == str(root / "trials" / "orphan")
    assert (root / "trials" / "orphan" / "summary.json").exists()
    # a live worker's trial is left alone
    live = handle.study.ask()
    live.set_user_attr("worker", S.worker_id())
    assert S.reap_dead_trials(handle) == []
