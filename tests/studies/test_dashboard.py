"""A study in optuna-dashboard: its storage read as the dashboard reads it (journal file and
PostgreSQL) shows each trial's variant, hyperparameters, learning curve and value;
``lstmlab study dashboard`` serves it on 127.0.0.1 (its HTTP API, and in a real headless
Chromium, marked slow); its bad ports and a missing package are one line each."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from lstmlab.cli import main
from lstmlab.studies import study as S
from lstmlab.studies.dashboard import curve
from lstmlab.studies.space import from_dict
from lstmlab.training.config import resolve
from lstmlab.training.metrics import read_metrics

pytest.importorskip("optuna_dashboard")
from optuna_dashboard._storage_url import get_storage  # noqa: E402  (the dashboard CLI's reader)

ROOT = Path(__file__).resolve().parents[2]
SPACE = from_dict(
    {
        "variants": ["vanilla", "NP"],
        "params": {
            "hidden_size": {"type": "int_log", "low": 2, "high": 4},
            "lr": {"type": "log", "low": 1e-3, "high": 1e-1},
        },
    }
)
EPOCHS = 3


def make_study(root: Path, storage: str | None = None, trials: int = 2) -> S.StudyHandle:
    base = resolve(
        [S.GREFF_BASE],
        {
            "task.name": "framewise",
            "task.options.n_train": 20,
            "task.options.n_valid": 10,
            "task.options.n_test": 10,
            "optimizer.batch_size": 5,
            "stop.max_epochs": EPOCHS,
        },
    )
    handle = S.create(root, base, space=SPACE, storage=storage, seed=1)
    S.run_worker(handle, trials=trials, log=lambda msg: None)
    return handle


@pytest.fixture(params=["journal", "postgresql"])
def storage(request):
    return None if request.param == "journal" else request.getfixturevalue("pg_url")


def test_storage_as_the_dashboard_reads_it(tmp_path, storage):
    root = tmp_path / "study"
    make_study(root, storage)
    # optuna-dashboard's own reader: a journal file path, or a SQLAlchemy URL (psycopg 3)
    url = str(root / "study.journal") if storage is None else storage
    if storage is not None:
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    st = get_storage(url)
    (summary,) = st.get_all_studies()
    assert summary.study_name == "study"
    assert optuna.load_study(study_name="study", storage=st).metric_names == [
        "valid frame_error (best)"
    ]
    trials = st.get_all_trials(summary._study_id, deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert sorted(t.params["variant"] for t in trials) == ["NP", "vanilla"]
    for t in trials:
        assert set(t.params) == {"variant", "hidden_size", "lr"}
        assert t.user_attrs["variant"] == t.params["variant"]
        records = read_metrics(Path(t.user_attrs["run_dir"]) / "metrics.jsonl")
        want = curve(records, "valid_frame_error")
        assert list(want) == list(range(EPOCHS + 1))  # the initial network, then every epoch
        assert t.intermediate_values == want
        assert t.values == [min(want.values())]  # the value is the best of the curve


def _wait_for_address(proc: subprocess.Popen, timeout: float = 120) -> str:
    deadline = time.time() + timeout
    lines = []
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "optuna-dashboard for study" in line:
            return line.rsplit(" ", 1)[1].strip()
    proc.kill()
    raise AssertionError(f"no address printed: {lines} {proc.stderr.read()}")


def _get(url: str):
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.loads(resp.read())


def _dashboard(root: Path, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "lstmlab", "study", "dashboard", str(root), *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _stop(proc: subprocess.Popen, sig=signal.SIGINT) -> str:
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_study_dashboard_serves_the_study_on_localhost(tmp_path, sig):
    root = tmp_path / "study"
    make_study(root)
    proc = _dashboard(root, "--port", "0")
    try:
        page = _wait_for_address(proc)
        assert page.startswith("http://127.0.0.1:") and "/dashboard/studies/" in page
        base, study_id = page.split("/dashboard/")[0], page.rsplit("/", 1)[1]
        names = [s["study_name"] for s in _get(f"{base}/api/studies")["study_summaries"]]
        assert names == ["study"]
        detail = _get(f"{base}/api/studies/{study_id}?after=0")
        assert detail["objective_names"] == ["valid frame_error (best)"]
        assert len(detail["trials"]) == 2
        for t in detail["trials"]:
            params = {p["name"]: p["param_external_value"] for p in t["params"]}
            assert set(params) == {"variant", "hidden_size", "lr"}
            assert [v["step"] for v in t["intermediate_values"]] == list(range(EPOCHS + 1))
            assert t["values"] == [min(v["value"] for v in t["intermediate_values"])]
    finally:
        if proc.poll() is None:
            out = _stop(proc, sig)
    assert "dashboard stopped" in out


def test_study_dashboard_on_postgresql_from_the_study_directory(tmp_path, pg_url):
    root = tmp_path / "study"
    make_study(root, pg_url, trials=1)
    proc = _dashboard(root, "--port", "0")
    try:
        page = _wait_for_address(proc)
        base = page.split("/dashboard/")[0]
        assert [s["study_name"] for s in _get(f"{base}/api/studies")["study_summaries"]] == [
            "study"
        ]
    finally:
        _stop(proc)


def test_port_in_use_and_bad_port_are_one_line(tmp_path, capsys):
    root = tmp_path / "study"
    S.create(root, resolve([S.GREFF_BASE], {"task.name": "framewise"}), space=SPACE)
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["study", "dashboard", str(root), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"cannot listen on 127.0.0.1:{port}" in err[0], err
    assert main(["study", "dashboard", str(root), "--port", "70000"]) == 2
    assert "--port must be 0..65535" in capsys.readouterr().err
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers


def test_missing_optuna_dashboard_says_how_to_install(tmp_path, capsys, monkeypatch):
    root = tmp_path / "study"
    S.create(root, resolve([S.GREFF_BASE], {"task.name": "framewise"}), space=SPACE)
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)
    assert main(["study", "dashboard", str(root), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'pip install "lstmlab[dashboard]"' in err[0], err


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def headless(url: str, *args: str) -> subprocess.CompletedProcess:
    """Debian's chromium, headless, on its own profile; waits (virtual time) for the page's
    API requests before it dumps or shoots."""
    profile = tempfile.mkdtemp(prefix="lstmlab-chromium-")
    cmd = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=20000",
        *args,
        url,
    ]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.skipif(chromium() is None, reason="no chromium installed (apt-get install chromium)")
def test_dashboard_in_a_headless_browser_shows_the_trials(tmp_path):
    root = tmp_path / "study"
    handle = make_study(root)
    proc = _dashboard(root, "--port", "0")
    try:
        page = _wait_for_address(proc)
        dom = headless(f"{page}/trials", "--dump-dom").stdout
        shot = tmp_path / "trials.png"
        headless(f"{page}/trials", "--window-size=1400,1000", f"--screenshot={shot}")
    finally:
        _stop(proc)
    for t in handle.study.get_trials():
        assert f"Trial {t.number}" in dom
    first = handle.study.get_trials()[0]
    assert first.params["variant"] in dom and "hidden_size" in dom and "Intermediate" in dom
    assert repr(first.value) in dom or f"{first.value}" in dom
    assert not math.isnan(first.value)
    assert shot.stat().st_size > 10_000
