"""One writer per run directory: ``RunLock`` (file ``run.lock`` in the run directory).

``train`` and ``resume`` hold the lock from before their first write until they exit; a second
``train``/``resume`` on the same directory is refused with a one-line message naming the
holder (pid, host, command, since when). ``eval``, ``report`` and ``resume --dry-run`` only
read and take no lock.

How it works: the lock file is opened and locked with ``fcntl.flock`` (exclusive,
non-blocking). The kernel drops a flock when its process dies in any way (``kill -9``
included), so a lock left by a crash is *stale by construction* on the same machine: the next
``train``/``resume`` gets the flock, reads the holder the crashed process wrote into the file
and warns that it takes the stale lock over. On clean exit the holder empties the file and
removes it while it still holds the flock, so a finished run leaves no ``run.lock``. That is
safe because ``acquire`` checks, once it holds a flock, that the path still names the file it
locked (same inode); a process that locked a file just removed by its holder opens the path
again instead of holding a lock nobody else can see.

Where ``flock`` cannot be trusted -- the file names a holder on *another host* (a shared file
system whose locks may not span machines) -- a lock whose holder wrote no release is refused
unless the caller overrides it (``force=True``, the CLI's ``--break-lock``): this machine
cannot tell whether that process still runs. On the same host a holder pid that is still
alive and still holds the flock is a live writer; a pid that is gone (or reused) is stale.

Multi-process runs (``torch.distributed``): only rank 0 writes to the run directory, so only
rank 0 takes the lock; ``writer_rank()`` reads the rank (the process group if initialised,
else ``$RANK``, else 0) and ``RunLock(..., rank=r)`` is a no-op for ``r != 0``.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: the holder's pid is all there is to go on
    fcntl = None  # type: ignore[assignment]

__all__ = ["LockError", "RunLock", "writer_rank", "LOCK_NAME", "read_holder"]

LOCK_NAME = "run.lock"


class LockError(RuntimeError):
    """The run directory has another writer (or a lock this machine cannot judge)."""


def writer_rank() -> int:
    """This process's rank: the initialised process group's, else ``$RANK``, else 0."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return int(dist.get_rank())
    except Exception:  # pragma: no cover - a torch without distributed
        pass
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the open file ``fd`` (not removed, nor replaced)."""
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def read_holder(run_dir: str | Path) -> dict[str, Any] | None:
    """The holder recorded in ``run_dir``'s lock file (None: free or unreadable)."""
    from lstmlab.files import LIMITS, read_user_file

    try:
        text = read_user_file(Path(run_dir) / LOCK_NAME, LIMITS["lock file"], "lock").decode()
    except (OSError, ValueError):  # UnreadableFile and UnicodeDecodeError are ValueErrors
        return None
    return _parse(text)


def _parse(text: str) -> dict[str, Any] | None:
    try:
        holder = json.loads(text) if text.strip() else None
    except ValueError:
        return None
    return holder if isinstance(holder, dict) else None


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    except OSError:
        return False
    return True


def _describe(h: dict[str, Any]) -> str:
    since = h.get("since")
    when = (
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since))
        if isinstance(since, int | float)
        else "?"
    )
    return f"pid {h.get('pid')} on {h.get('host')} ({h.get('command', '?')}, since {when})"


class RunLock:
    """Exclusive writer lock of one run directory; a context manager.

    ``acquire()`` raises ``LockError`` (one line) when another writer holds the directory;
    ``warning`` is set when a stale lock (crashed holder) was taken over.
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        command: str = "",
        force: bool = False,
        rank: int | None = None,
    ):
        self.path = Path(run_dir) / LOCK_NAME
        self.command = command or " ".join(
            Path(a).name if i == 0 else a for i, a in enumerate(sys.argv[:3])
        )
        self.force = force
        self.rank = writer_rank() if rank is None else rank
        self.warning: str | None = None
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        if self.rank != 0 or self._fd is not None:
            return self  # only rank 0 writes
        for _ in range(100):  # the holder may remove the file between our open and flock
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            flocked = self._flock(fd)
            if flocked is not True or _same_file(fd, self.path):
                break
            os.close(fd)
        else:
            raise LockError(f"{self.path}: replaced again and again while locking; try again")
        try:
            previous = _parse(os.pread(fd, 1 << 16, 0).decode("utf-8", "replace"))
            if flocked is False:
                holder = _describe(previous) if previous else "another process"
                raise LockError(
                    f"run directory {self.path.parent} is in use by {holder}; wait for it to "
                    "finish or stop it (one writer per run)"
                )
            if previous is not None:
                self._judge_stale(previous, flock_works=flocked is True)
            me = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "command": self.command,
                "since": time.time(),
            }
            data = (json.dumps(me) + "\n").encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    @staticmethod
    def _flock(fd: int) -> bool | None:
        """True: locked; False: another process holds it; None: flock unavailable here."""
        if fcntl is None:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        except OSError:  # e.g. ENOLCK on a file system without locks
            return None

    def _judge_stale(self, previous: dict[str, Any], *, flock_works: bool) -> None:
        same_host = previous.get("host") == socket.gethostname()
        pid = previous.get("pid")
        if same_host and (flock_works or not _pid_alive(pid)) or self.force:
            why = (
                "overridden by --break-lock"
                if self.force and not same_host
                else "its process is gone: crashed or killed"
            )
            self.warning = f"taking over a stale lock of {self.path.parent} left by {_describe(previous)}; {why}"
            return
        if same_host:  # flock unavailable and the pid is alive
            raise LockError(
                f"run directory {self.path.parent} is in use by {_describe(previous)}; wait for "
                "it to finish or stop it (one writer per run)"
            )
        raise LockError(
            f"run directory {self.path.parent} is locked by {_describe(previous)}; this machine "
            "cannot tell whether it still runs -- if it does not, repeat with --break-lock"
        )

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # a free lock: empty, then gone (see the module docstring)
            os.fsync(fd)
            if _same_file(fd, self.path):
                self.path.unlink()  # still under the flock: a waiting opener re-checks
        except OSError:
            pass
        finally:
            os.close(fd)  # drops the flock

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
