"""Fuzzing every sub-command with bad files and arguments (issue 23).

Each case is one in-process call of ``lstmlab.cli.main`` with captured output: a sub-command
(``train``, ``resume``, ``eval``, ``report``, ``tasks``, ``study create|status|analyze``,
``reproduce NAME --dry-run``) given paths drawn from a pool of special files -- FIFOs,
character devices (``/dev/zero``, ``/dev/null``), links to them and dangling links,
directories, empty files, a sparse file of 5 GiB, random bytes, damaged run directories (a
FIFO for a log, a link to ``/dev/zero`` for a checkpoint, garbage for a config) and a sound run
-- mixed with random flags and values. Accepted: exit 0, 1 or 2; never a traceback or an
exception out of ``main``; a failure is one line on stderr (``note:``/``warning:`` lines
aside); no call runs past ``TIMEOUT`` seconds (a blocking read is a hang).

The cases are drawn from a seeded ``random.Random``, so a run is the same every time. The
default run makes ``DEFAULT_CASES``; ``pytest -m slow`` makes ``SLOW_CASES`` (the count and
the outcome are recorded in docs/design.md, "Fuzzing").
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import shutil
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from runkit import TINY, tiny_flags, train_tiny

from lstmlab.cli import main

DEFAULT_CASES = int(os.environ.get("FUZZ_COMMAND_CASES", "150"))
SLOW_CASES = 10_000
TIMEOUT = 30  # seconds one call may take


class Hang(Exception):
    pass


def call(argv: list[str]) -> tuple[int | None, str, BaseException | None]:
    """``main(argv)`` under an alarm: (exit code, stderr, exception that escaped main)."""
    out, err = io.StringIO(), io.StringIO()

    def ring(signum, frame):
        raise Hang(f"still running after {TIMEOUT} s")

    old = signal.signal(signal.SIGALRM, ring)
    signal.alarm(TIMEOUT)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                return main(argv), err.getvalue(), None
            except SystemExit as done:  # argparse's --help
                return int(done.code or 0), err.getvalue(), None
            except BaseException as escaped:  # noqa: BLE001 - what a user would see as a traceback
                return None, err.getvalue(), escaped
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ------------------------------------------------------------------------------ the pool


def _sparse(path: Path, size: int) -> Path:
    with open(path, "wb") as fh:
        fh.truncate(size)
    return path


def build_pool(root: Path, run: Path) -> dict[str, list[str]]:
    """Paths by kind, all made under ``root`` (plus read-only system devices)."""
    rng = random.Random(7)
    root.mkdir(parents=True, exist_ok=True)
    os.mkfifo(root / "fifo")
    (root / "empty").write_bytes(b"")
    (root / "random.bin").write_bytes(bytes(rng.randrange(256) for _ in range(300)))
    (root / "text.txt").write_text("To be, or not to be, that is the question.\n" * 30)
    (root / "bad.toml").write_bytes(b"[model\nalpha = \xff\n")
    (root / "ok.toml").write_text("seed = 3\n[stop]\nmax_iterations = 2\n")
    (root / "songs.json").write_text(json.dumps({"train": [[[60]]], "test": [[[61]]]}))
    (root / "dir").mkdir()
    _sparse(root / "huge.bin", 5 << 30)
    for name, target in [("to-zero", "/dev/zero"), ("to-fifo", root / "fifo"),
                         ("dangling", root / "nowhere"), ("to-dir", root / "dir")]:  # fmt: skip
        (root / name).symlink_to(target)
    runs = {}
    for damage in ("sound", "metrics-fifo", "ckpt-zero", "config-garbage", "summary-fifo",
                   "no-checkpoint", "config-fifo"):  # fmt: skip
        d = root / "runs" / damage
        shutil.copytree(run, d)
        if damage == "metrics-fifo":
            (d / "metrics.jsonl").unlink()
            os.mkfifo(d / "metrics.jsonl")
        elif damage == "ckpt-zero":
            for n in ("checkpoint.safetensors", "checkpoint.safetensors.prev"):
                (d / n).unlink()
                (d / n).symlink_to("/dev/zero")
        elif damage == "config-garbage":
            (d / "config.toml").write_bytes(b"\x00\xff garbage [[[")
        elif damage == "summary-fifo":
            (d / "summary.json").unlink()
            os.mkfifo(d / "summary.json")
        elif damage == "no-checkpoint":
            for n in ("checkpoint.safetensors", "checkpoint.safetensors.prev"):
                (d / n).unlink()
        elif damage == "config-fifo":
            (d / "config.toml").unlink()
            os.mkfifo(d / "config.toml")
        runs[damage] = str(d)
    files = [str(root / n) for n in ("fifo", "empty", "random.bin", "text.txt", "bad.toml",
             "ok.toml", "songs.json", "dir", "huge.bin", "to-zero", "to-fifo", "dangling",
             "to-dir", "missing")] + ["/dev/zero", "/dev/null"]  # fmt: skip
    return {"file": files, "run": [*runs.values(), *files], "folder": [str(root / "runs"), *files]}


# ------------------------------------------------------------------------------ the cases

TASKS = ["multiplication", "text", "ptb", "words", "music", "framewise", "ctc",
         "japanese_vowels", "xor", "bogus"]  # fmt: skip
PAPERS = ["lyu2015", "ms2011", "krause2015", "greff2017", "kuchaiev2017"]
JUNK = ["--bogus", "--stop.metric", "nope", "--threads", "0", "--threads", "99999", "--workers",
        "0", "--progress", "loud", "--split", "nope", "--seed", "-1", "--json", "--", "-x",
        "--stop.max_iterations", "-3", "--allow-unverified", "--x", "wall", "--trees", "0",
        "\udcff", "--model.options.bidirectional", "3", "--optimizer.options.c1", "2"]  # fmt: skip
COMMANDS = ["train-config", "train-path", "resume", "resume-dry", "eval", "report", "tasks",
            "study-status", "study-analyze", "study-create", "reproduce"]  # fmt: skip


def make_case(rng: random.Random, pool: dict[str, list[str]], scratch: Path, k: int) -> list[str]:
    kind = rng.choice(COMMANDS)
    f, r = rng.choice(pool["file"]), rng.choice(pool["run"])
    if kind == "train-config":
        argv = ["train", rng.choice(TASKS), "--config", f, "--dry-run", *tiny_flags()]
    elif kind == "train-path":
        task = rng.choice(TASKS[1:8])
        argv = ["train", task, "--dry-run", "--task.options.path", json.dumps(f)]
    elif kind == "resume":  # a sound run has finished: resume says so (exit 0)
        argv = ["resume", r, "--progress", "none"]
    elif kind == "resume-dry":
        argv = ["resume", r, "--dry-run"]
    elif kind == "eval":
        argv = ["eval", r, *rng.choice([[], ["--json"], ["--split", "train"]])]
    elif kind == "report":
        argv = ["report", rng.choice(pool["folder"]), "--dry-run"]
    elif kind == "tasks":
        argv = ["tasks"]
    elif kind == "study-status":
        argv = ["study", "status", rng.choice(pool["folder"])]
    elif kind == "study-analyze":
        argv = ["study", "analyze", rng.choice(pool["folder"]), "--out", str(scratch / f"a{k}")]
    elif kind == "study-create":  # a fresh folder each time, so nothing is ever run
        argv = ["study", "create", str(scratch / f"s{k}"), rng.choice(TASKS), "--config", f]
    else:
        argv = ["reproduce", rng.choice(PAPERS), "--dry-run", "--quick",
                "--out", rng.choice([str(scratch / f"r{k}"), f])]  # fmt: skip
    for _ in range(rng.choice([0, 0, 0, 1, 2])):  # now and then, junk flags and values
        argv.insert(rng.randrange(1, len(argv) + 1), rng.choice(JUNK))
    return argv


def run_cases(n: int, tmp: Path, run: Path, *, seed: int = 0) -> dict:
    pool = build_pool(tmp / "pool", run)
    scratch = tmp / "scratch"
    scratch.mkdir()
    rng = random.Random(seed)
    outcomes: Counter = Counter()
    bad: list[str] = []
    started = time.perf_counter()
    for k in range(n):
        argv = make_case(rng, pool, scratch, k)
        code, err, escaped = call(argv)
        if isinstance(escaped, Hang):
            outcomes["hang"] += 1
            bad.append(f"hang: {argv}")
        elif escaped is not None or "Traceback" in err:
            outcomes["traceback"] += 1
            bad.append(f"traceback {type(escaped).__name__}: {escaped} {argv}")
        elif code not in (0, 1, 2):
            outcomes[f"exit {code}"] += 1
            bad.append(f"exit {code}: {argv} {err[-300:]}")
        else:
            outcomes[f"exit {code}"] += 1
            lines = [ln for ln in err.strip().splitlines()
                     if ln and not ln.startswith(("note:", "warning:"))]  # fmt: skip
            if code != 0 and len(lines) != 1:
                outcomes["not one line"] += 1
                bad.append(f"{len(lines)} error lines: {argv} {err[-500:]}")
        if k % 500 == 499:  # the scratch folders of create / analyze cases
            shutil.rmtree(scratch)
            scratch.mkdir()
    outcomes["cases"] = n
    outcomes["seconds"] = round(time.perf_counter() - started)
    return {"outcomes": dict(outcomes), "bad": bad}


@pytest.fixture(scope="module")
def sound_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("fuzzrun") / "run"
    assert train_tiny(run, **{"stop.max_iterations": "2"}) == 0
    return run


def test_every_command_with_special_files(tmp_path, sound_run):
    result = run_cases(DEFAULT_CASES, tmp_path, sound_run)
    print("fuzz (commands):", result["outcomes"])
    assert not result["bad"], "\n".join(result["bad"][:20])


@pytest.mark.slow
def test_every_command_with_special_files_10000_cases(tmp_path, sound_run):
    result = run_cases(SLOW_CASES, tmp_path, sound_run, seed=1)
    print("fuzz (commands, slow):", result["outcomes"])
    assert not result["bad"], "\n".join(result["bad"][:20])


assert TINY  # the tiny run's flags are what train cases use
