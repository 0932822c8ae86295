"""Reading a file the user named: checked before a byte is read, bounded while it is read.

Every reader of a path a user can type (a ``--config``, a checkpoint, a corpus, a ``.npz``, a
run directory's config, log, summary and lock, a reproduction's summaries) goes through
``open_user_file`` or ``read_user_file`` (not yet: ``lstmlab study … --space FILE``, read in
``studies/space.py``):

1. the path must name a regular file after its links are followed — a FIFO would block the
   read forever, ``/dev/zero`` never ends, a directory is no file — checked with ``stat``
   before the file is opened, and again on the opened descriptor (``fstat``), so a path
   swapped in between is caught too;
2. its size must be at most ``max_bytes`` (a bound per kind of file, ``LIMITS``), and the read
   itself stops one byte past the bound, so a file that grows while it is read cannot exceed it;
3. only then does the caller parse it.

``npz_declared_bytes`` adds the bound of ``.npz`` archives: each member's ``.npy`` header
declares a shape and a dtype, and those are multiplied out before a single array is allocated
(a 300-byte compressed archive may declare 16 GiB).

Any failure is an ``UnreadableFile`` whose message is one line, ``PATH: what is wrong``; callers
turn it into their own error type (``ConfigError``, ``CheckpointError``, ``DataError``).
"""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "LIMITS",
    "UnreadableFile",
    "open_user_file",
    "read_user_file",
    "npz_declared_bytes",
    "human_bytes",
]

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

# The largest file of each kind lstmlab reads; every one is far above any real file of its kind
# here (a config is a few KiB, a checkpoint of the largest preset tens of MiB, enwik9 1 GB).
LIMITS = {
    "config": 1 * MiB,
    "checkpoint": 4 * GiB,
    "metrics log": 2 * GiB,
    "summary": 64 * MiB,
    "lock file": 64 * KiB,
    "text corpus": 2 * GiB,
    "data file": 4 * GiB,  # .npz, piano-roll pickle/JSON, .ts
}


class UnreadableFile(ValueError):
    """A user-named file that is not read: ``path`` and a one-line ``reason``."""

    def __init__(self, path: str | Path, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


def human_bytes(n: int) -> str:
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} bytes"


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _check(path: str | Path, st: os.stat_result, max_bytes: int, what: str) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise UnreadableFile(
            path, f"is {_kind(st.st_mode)}, not a regular file; give a {what} file"
        )
    if st.st_size > max_bytes:
        raise UnreadableFile(
            path,
            f"{human_bytes(st.st_size)}, more than a {what} may be ({human_bytes(max_bytes)}); "
            f"is this the right file?",
        )


def open_user_file(path: str | Path, max_bytes: int, what: str) -> BinaryIO:
    """The file at ``path`` opened for binary reading, once it is known to be a regular file of
    at most ``max_bytes`` bytes; else ``UnreadableFile`` (no such file, not a regular file, too
    large, not readable). ``what`` names the kind of file in the message ("config")."""
    try:
        _check(path, os.stat(path), max_bytes, what)
        # O_NONBLOCK: should a FIFO be swapped in after the stat, opening it does not block
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise UnreadableFile(path, f"no such file (a {what} was expected)") from None
    except OSError as err:
        raise UnreadableFile(path, f"cannot read: {err.strerror or err}") from None
    try:
        _check(path, os.fstat(fd), max_bytes, what)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_user_file(path: str | Path, max_bytes: int, what: str) -> bytes:
    """All bytes of a user-named file, checked as ``open_user_file`` checks it; the read stops
    one byte past ``max_bytes`` (a file growing while it is read is refused, not followed)."""
    with open_user_file(path, max_bytes, what) as fh:
        try:
            data = fh.read(max_bytes + 1)
        except OSError as err:
            raise UnreadableFile(path, f"cannot read: {err.strerror or err}") from None
    if len(data) > max_bytes:
        raise UnreadableFile(path, f"grew past {human_bytes(max_bytes)} while being read")
    return data


def npz_declared_bytes(fh: BinaryIO, path: str | Path) -> int:
    """The bytes the arrays of an ``.npz`` archive (open in ``fh``) declare in their headers,
    read without loading any array; ``UnreadableFile`` for a file that is no readable ``.npz``.

    Each ``NAME.npy`` member starts with the ``.npy`` magic and a header holding ``shape`` and
    ``descr``; their product times the dtype's item size is what ``np.load`` would allocate.
    """
    import numpy as np
    from numpy.lib import format as npy

    total = 0
    try:
        with zipfile.ZipFile(fh) as archive:
            for info in archive.infolist():
                with archive.open(info) as member:
                    version = npy.read_magic(member)
                    if version == (1, 0):
                        shape, _, dtype = npy.read_array_header_1_0(member)
                    else:
                        shape, _, dtype = npy.read_array_header_2_0(member)
                total += int(np.prod(shape, dtype=object)) * np.dtype(dtype).itemsize
    except (zipfile.BadZipFile, ValueError, TypeError, OSError, EOFError, KeyError,
            NotImplementedError, RuntimeError) as err:  # fmt: skip
        reason = (str(err).splitlines() or [""])[0][:160]
        raise UnreadableFile(
            path, f"not a readable .npz file ({type(err).__name__}: {reason})"
        ) from None
    finally:
        fh.seek(0)
    return total
