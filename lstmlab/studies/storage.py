"""Where a study lives: Optuna's journal file in the study directory (embedded, no server), or
a PostgreSQL database given by URL (many machines).

Embedded: ``JournalStorage`` on a file, not SQLite. Every worker appends JSON operations to one
log under an exclusive lock and replays the others' operations; nothing is ever updated in
place, so several processes on one machine neither lose nor duplicate a trial, and there is no
"database is locked" (SQLite's single writer makes Optuna's concurrent workers hit that error
under load). The lock here is ``fcntl.flock`` on a side file rather than Optuna's default
symlink lock: the kernel drops a flock when its holder dies, so a worker killed with SIGKILL
while holding it blocks nobody (the symlink lock would stay until its 30 s grace period).

PostgreSQL: ``RDBStorage`` (SQLAlchemy, driver psycopg 3) with Optuna's heartbeat: a running
trial beats every ``HEARTBEAT`` seconds, and a trial whose beat is older than ``GRACE`` is
marked failed by the next worker that starts a trial.
"""

from __future__ import annotations

import fcntl
import os
import re
import warnings
from pathlib import Path

__all__ = ["StorageError", "open_storage", "describe_url", "HEARTBEAT", "GRACE", "JOURNAL"]

HEARTBEAT, GRACE = 10, 30  # seconds (PostgreSQL heartbeats)
JOURNAL = "study.journal"


class StorageError(RuntimeError):
    """The study's storage cannot be opened; ``str(err)`` is one line."""


def describe_url(url: str) -> str:
    """A URL with its password hidden (for messages)."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


class FlockLock:
    """Optuna journal-file lock on ``fcntl.flock``: released by the kernel if the holder dies."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self._fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._fd = fd
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _journal(path: Path):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        backend = JournalFileBackend(str(path), lock_obj=FlockLock(str(path) + ".lock"))
    except OSError as err:
        raise StorageError(f"cannot open study journal {path}: {err.strerror or err}") from None
    return JournalStorage(backend)


def _postgres(url: str):
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    shown = describe_url(url)
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    try:
        with warnings.catch_warnings():  # the heartbeat is "experimental" since Optuna 2.9
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs={"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}},
                heartbeat_interval=HEARTBEAT,
                grace_period=GRACE,
            )
    except ModuleNotFoundError as err:
        raise StorageError(
            f"PostgreSQL needs the driver {err.name!r}: pip install 'psycopg[binary]'"
        ) from None
    except (SQLAlchemyError, OSError) as err:
        reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
        raise StorageError(f"cannot reach database {shown}: {reason}") from None


def open_storage(url: str | None, study_dir: str | Path):
    """The Optuna storage for ``url`` (None or ``journal``: the study directory's journal
    file; ``journal:PATH``: that file; ``postgresql://…``: a PostgreSQL database)."""
    if url is None or url == "journal":
        return _journal(Path(study_dir) / JOURNAL)
    if url.startswith("journal:"):
        return _journal(Path(url.removeprefix("journal:")))
    if url.startswith(("postgresql://", "postgresql+psycopg://", "postgres://")):
        return _postgres(url)
    raise StorageError(
        f"unsupported storage URL {describe_url(url)!r}; use a postgresql:// URL, "
        "journal:FILE, or none for the study directory's journal file"
    )
