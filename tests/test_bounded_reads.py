"""Every file a user names is checked before it is read (issue 23): a regular file after its
links, within a size bound, then parsed; anything else is one line and a usage or runtime exit.

FIFOs would block a read forever, so each call here runs under an alarm: a hang fails the test
instead of stalling the suite.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import zipfile

import numpy as np
import pytest
from runkit import train_tiny

from lstmlab.cli import main
from lstmlab.files import (
    LIMITS,
    UnreadableFile,
    npz_declared_bytes,
    open_user_file,
    read_user_file,
)


class Hang(Exception):
    """Not an OSError (as TimeoutError is), so no ``except OSError`` can swallow it."""


@contextlib.contextmanager
def within(seconds: int):
    """Raise ``Hang`` in the block when it runs longer than ``seconds`` (a blocking read)."""

    def ring(signum, frame):
        raise Hang(f"still running after {seconds} s (a blocking read?)")

    old = signal.signal(signal.SIGALRM, ring)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def cli(*argv: str, seconds: int = 60) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with within(seconds), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def one_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith(("note:", "warning:"))]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "pipe"
    os.mkfifo(path)
    return path


def sparse(path, size: int):
    """A regular file of ``size`` bytes that takes no disk (a hole)."""
    with open(path, "wb") as fh:
        fh.truncate(size)
    return path


# ------------------------------------------------------------------------------ the helper


def test_helper_reads_a_regular_file(tmp_path):
    f = tmp_path / "a.toml"
    f.write_bytes(b"seed = 1\n")
    assert read_user_file(f, 100, "config") == b"seed = 1\n"


@pytest.mark.parametrize(
    "make, says",
    [
        (lambda p, fifo: fifo, "is a FIFO (named pipe), not a regular file"),
        (lambda p, fifo: "/dev/zero", "is a character device, not a regular file"),
        (lambda p, fifo: p, "is a directory, not a regular file"),
        (lambda p, fifo: p / "missing.toml", "no such file"),
        (
            lambda p, fifo: sparse(p / "huge.toml", 2 * LIMITS["config"]),
            "more than a config may be",
        ),
    ],
    ids=["fifo", "device", "directory", "missing", "too-large"],
)
def test_helper_refuses_in_one_line(tmp_path, fifo, make, says):
    path = make(tmp_path, fifo)
    with within(20), pytest.raises(UnreadableFile) as info:
        read_user_file(path, LIMITS["config"], "config")
    assert says in str(info.value) and str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_helper_follows_links_to_what_they_name(tmp_path, fifo):
    """A link is judged by what it points at: to a regular file it reads, to /dev/zero or a
    FIFO it is refused."""
    good = tmp_path / "good"
    good.write_bytes(b"x")
    for target, ok in ((good, True), ("/dev/zero", False), (fifo, False)):
        link = tmp_path / f"link{ok}{id(target)}"
        link.symlink_to(target)
        with within(20):
            if ok:
                assert read_user_file(link, 10, "config") == b"x"
            else:
                with pytest.raises(UnreadableFile, match="not a regular file"):
                    open_user_file(link, 10, "config")


def huge_npz(path, shape=(1 << 31, 2), dtype="<f4"):
    """An ``.npz`` whose one member declares ``shape`` (16 GiB by default) but holds 8 bytes."""
    header = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode()
    header = header + b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    npy = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + b"\0" * 8
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("train_inputs.npy", npy)
    return path


def test_npz_declared_bytes_reads_headers_only(tmp_path):
    f = huge_npz(tmp_path / "big.npz")
    with open(f, "rb") as fh:
        assert npz_declared_bytes(fh, f) == (1 << 31) * 2 * 4
    ok = tmp_path / "ok.npz"
    np.savez(ok, a=np.zeros((3, 4)), b=np.arange(5, dtype=np.int32))
    with open(ok, "rb") as fh:
        assert npz_declared_bytes(fh, ok) == 3 * 4 * 8 + 5 * 4


# ------------------------------------------------------------------------ through the CLI


@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "directory", "huge", "link-to-dev-zero"])
def test_config_special_files_one_line(tmp_path, fifo, kind):
    """``--config`` naming /dev/zero (a MemoryError traceback), a FIFO (hung forever), a
    directory, a 2 MiB file or a link to /dev/zero: exit 2 and one line naming the file."""
    path = {
        "dev-zero": "/dev/zero",
        "fifo": str(fifo),
        "directory": str(tmp_path),
        "huge": str(sparse(tmp_path / "big.toml", 2 * LIMITS["config"])),
        "link-to-dev-zero": str(tmp_path / "zero.toml"),
    }[kind]
    if kind == "link-to-dev-zero":
        os.symlink("/dev/zero", path)
    code, _, err = cli("train", "multiplication", "--config", path, "--dry-run")
    line = one_line(err)
    assert code == 2 and path in line and "config" in line, err


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("bounded") / "run"
    assert train_tiny(run) == 0
    return run


@pytest.mark.parametrize("target", ["/dev/zero", "fifo", "sparse"])
def test_checkpoint_special_files_one_line(tiny_run, tmp_path, target):
    """A checkpoint (and its .prev) that are links to /dev/zero (a MemoryError traceback), a
    FIFO or a 5 GiB sparse file: ``eval`` ends with one line and exit 1."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    if target == "fifo":
        os.mkfifo(tmp_path / "pipe")
        target = str(tmp_path / "pipe")
    elif target == "sparse":
        target = str(sparse(tmp_path / "big.safetensors", LIMITS["checkpoint"] + 1))
    for name in ("checkpoint.safetensors", "checkpoint.safetensors.prev"):
        (run / name).unlink(missing_ok=True)
        (run / name).symlink_to(target)
    code, _, err = cli("eval", str(run))
    line = one_line(err)
    assert code == 1 and "checkpoint" in line, err
    code, _, err = cli("resume", str(run), "--dry-run")
    assert code == 1 and "checkpoint" in one_line(err), err


@pytest.mark.parametrize("task", ["framewise", "ctc"])
def test_npz_declaring_16_gib_is_refused_before_allocating(tmp_path, task):
    """A 300-byte ``.npz`` whose header declares a 16 GiB array: one line naming the file and
    the declared size, exit 2 (np.load allocated it unchecked)."""
    f = huge_npz(tmp_path / "data.npz")
    code, _, err = cli("train", task, "--dry-run", "--task.options.path", f'"{f}"')
    line = one_line(err)
    assert code == 2 and str(f) in line and "declare 16 GiB" in line, err


@pytest.mark.parametrize(
    "task, name",
    [
        ("text", "corpus.txt"),
        ("ptb", "ptb.char.train.txt"),
        ("music", "songs.json"),
        ("framewise", "data.npz"),
        ("japanese_vowels", "JapaneseVowels_TRAIN.ts"),
        ("words", "corpus.txt"),
    ],
)
@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_data_files_special_one_line(tmp_path, task, name, kind):
    """Every task that reads a user-named file refuses a FIFO or a link to /dev/zero in one
    line (exit 2), without blocking or reading without end."""
    folder = tmp_path / "data"
    folder.mkdir()
    special = folder / name
    if kind == "fifo":
        os.mkfifo(special)
    else:
        special.symlink_to("/dev/zero")
    if task == "ptb":
        for split in ("valid", "test"):
            (folder / f"ptb.char.{split}.txt").symlink_to(special)
    if task == "japanese_vowels":
        (folder / "JapaneseVowels_TEST.ts").symlink_to(special)
    path = folder if task in ("ptb", "japanese_vowels") else special
    code, _, err = cli("train", task, "--dry-run", "--task.options.path", f'"{path}"')
    line = one_line(err)
    assert code == 2 and "not a regular file" in line, err


@pytest.mark.parametrize("name", ["metrics.jsonl", "summary.json", "run.lock"])
def test_run_directory_files_special_one_line(tiny_run, tmp_path, name):
    """A run directory whose log, summary or lock is a FIFO: ``resume --dry-run``, ``resume``
    and ``report`` end without blocking, with at most one error line."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / name).unlink(missing_ok=True)
    os.mkfifo(run / name)
    for argv in (
        ["resume", str(run), "--dry-run"],
        ["resume", str(run), "--stop.max_iterations", "9", "--progress", "none"],
        ["report", str(run), "--out", str(tmp_path / "report")],
    ):
        code, _, err = cli(*argv)
        assert "Traceback" not in err
        if code != 0:
            assert code == 1 and str(run) in one_line(err), (argv, err)


def test_a_reproduction_reads_its_runs_summaries_bounded(tmp_path):
    """A reproduction's run whose summary.json is a FIFO is judged unfinished at once (it
    blocked ``reproduce`` forever)."""
    from lstmlab.reproduce.runset import RunSpec, status

    spec = RunSpec("part", "x", {"task.name": "multiplication"})
    d = spec.dir(tmp_path)
    d.mkdir(parents=True)
    (d / "config.toml").write_text("seed = 0\n")
    os.mkfifo(d / "summary.json")
    with within(20):
        assert status(spec, tmp_path) == "started"
