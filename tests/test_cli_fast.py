"""A fast, honest command line (issue 23): ``--version``; ``--help`` and usage errors without
importing torch; ``resume`` of a finished run is not a failure; a dead worker is named with its
cause; ``report`` searches a bounded depth; a reproduction says "run k of N"."""

from __future__ import annotations

import contextlib
import io
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from runkit import tiny_flags, train_tiny

import lstmlab
from lstmlab.cli import main

ROOT = Path(__file__).resolve().parents[1]


def cli(*argv: str, seconds: int = 120) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()

    def ring(signum, frame):  # not a TimeoutError: an OSError, which `except OSError` swallows
        raise RuntimeError(f"lstmlab {' '.join(argv)}: still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, ring)
    signal.alarm(seconds)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(argv))
            except SystemExit as done:  # --help, --version
                code = int(done.code or 0)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return code, out.getvalue(), err.getvalue()


def test_version():
    code, out, _ = cli("--version")
    assert code == 0 and out.strip() == f"lstmlab {lstmlab.__version__}"


LIGHT = [
    ["--help"],
    ["--version"],
    ["train", "--help"],
    ["resume", "--help"],
    ["eval", "--help"],
    ["report", "--help"],
    ["tasks", "--help"],
    [],  # no command: usage error
    ["bogus"],
    ["train"],  # no TASK
    ["train", "multiplication", "--no-such-flag", "1"],
    ["train", "multiplication", "--threads", "0"],
    ["train", "multiplication", "--progress", "loud"],
    ["resume"],
    ["resume", "runs/x", "--no-such-flag"],
    ["eval", "runs/x", "--split", "nope"],
    ["report", "runs/x", "--x", "nope"],
    ["tasks", "extra"],
    ["study", "--help"],
    ["study", "run", "--help"],
    ["study", "create"],  # missing arguments: usage error
    ["reproduce", "--help"],
    *(["reproduce", name, "--help"] for name in
      ("lyu2015", "ms2011", "krause2015", "greff2017", "kuchaiev2017")),
    ["reproduce", "lyu2015", "--no-such-flag"],
]  # fmt: skip


def test_help_and_usage_errors_do_not_import_torch():
    """Each of these ends before anything needs torch: a new process checks that torch was never
    imported (it took 5-15 s on a loaded machine). One process runs them all, in turn."""
    script = (
        "import sys\nfrom lstmlab.cli import main\n"
        "import contextlib, io\n"
        f"for argv in {LIGHT!r}:\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        "        try:\n            code = main(argv)\n"
        "        except SystemExit as e:\n            code = e.code\n"
        "    print(argv, code, sorted(m for m in sys.modules if m == 'torch' or m.startswith(('optuna', 'numpy'))))\n"
    )  # fmt: skip
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == len(LIGHT), done.stdout
    for line in lines:
        assert line.endswith("[]"), line  # neither torch nor numpy nor optuna imported
        assert line.split("] ")[1].split()[0] in ("0", "2"), line


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    run = tmp_path_factory.mktemp("fast") / "run"
    assert train_tiny(run, **{"stop.max_iterations": "3"}) == 0
    return run


def test_resume_of_a_finished_run_exits_0_and_says_so(finished):
    """It exited 1 as a failure; a finished run is not an error."""
    code, out, err = cli("resume", str(finished), "--progress", "none")
    assert code == 0, err
    assert "already finished (max_iterations)" in out and "--stop.max_iterations" in out, out
    assert err == ""


def test_a_killed_worker_is_named_with_its_signal(tmp_path, monkeypatch):
    """A worker SIGKILLed under ``--workers 2`` ended the group with a bare exit 1 and no
    output; now one line names the rank, its pid and the signal."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure
    from torch.distributed.launcher import api

    def launch(config, entrypoint):
        def run(*args):
            failure = ProcessFailure(local_rank=1, pid=4242, exitcode=-9, error_file="")
            raise ChildFailedError("lstmlab", {1: failure})

        return run

    monkeypatch.setattr(api, "elastic_launch", launch)
    code, _, err = cli("train", "multiplication", *tiny_flags(), "--workers", "2",
                       "--run-dir", str(tmp_path / "run"), "--progress", "none")  # fmt: skip
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1, err
    assert "rank 1" in lines[0] and "pid 4242" in lines[0] and "SIGKILL" in lines[0], err
    assert "lstmlab resume" in lines[0], err


@pytest.mark.parametrize("where", ["/proc", "/"])
def test_report_of_a_folder_without_runs_is_one_line_and_bounded(where):
    """``lstmlab report /`` walked the whole disk and died of a FileNotFoundError from rglob
    (a process's folder under /proc vanished); now the search is bounded, never follows links,
    skips what vanishes, and ends with the runs it found or one line."""
    code, out, err = cli("report", where, "--dry-run", seconds=60)
    assert "Traceback" not in err
    if where == "/proc" or code != 0:
        lines = err.strip().splitlines()
        assert code == 1 and len(lines) == 1 and where in lines[0], err


def test_report_finds_runs_within_its_depth_and_says_when_deeper(tmp_path, finished):
    import shutil

    shallow = tmp_path / "a" / "runs" / "part" / "x"
    shutil.copytree(finished, shallow)
    code, out, err = cli("report", str(tmp_path), "--dry-run")
    assert code == 0 and str(shallow) in out, err
    deep = tmp_path / "d" / "1" / "2" / "3" / "4" / "5" / "6" / "7" / "run"
    shutil.copytree(finished, deep)
    code, out, err = cli("report", str(tmp_path / "d"), "--dry-run")
    assert code == 1 and "levels" in err and str(tmp_path / "d") in err, err


def test_a_reproduce_set_counts_its_runs(tmp_path):
    from runkit import TINY

    from lstmlab.reproduce import runset
    from lstmlab.reproduce.runset import RunSpec

    specs = [RunSpec("part", n, {"task.name": "multiplication", **TINY}) for n in ("x", "y")]
    lines: list[str] = []
    runset.run_all(specs, tmp_path, progress="none", log=lines.append)
    assert any("run 1 of 2" in ln and "x" in ln for ln in lines), lines
    assert any("run 2 of 2" in ln and "y" in ln for ln in lines), lines


def test_the_light_parser_shows_what_the_full_one_shows():
    """``--help`` builds ``reproduce`` and ``study`` as one-line placeholders; the text it
    prints is the full parser's, word for word."""
    from lstmlab.cli import build_parser

    assert build_parser(["--help"]).format_help() == build_parser().format_help()


def test_resume_of_a_finished_run_under_two_workers_exits_0_once(finished):
    """In a worker group rank 0 reads the run and every rank learns it had finished: one line
    on stdout, exit 0 (rank 1 rebuilt the error as a bare RuntimeError and failed)."""
    import os

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "lstmlab", "resume", str(finished), "--workers", "2",
         "--progress", "none"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("already finished") == 1, done.stdout
    assert "Traceback" not in done.stderr and "rank 0:" not in done.stderr, done.stderr
