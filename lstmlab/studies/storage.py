"""Where a study lives: Optuna's journal file in the study directory (embedded, no server), or
a PostgreSQL database given by URL (many machines) — and how each heals.

Embedded: ``JournalStorage`` on a file, not SQLite. Every worker appends JSON operations to one
log under an exclusive lock and replays the others' operations; nothing is ever updated in
place, so several processes on one machine neither lose nor duplicate a trial, and there is no
"database is locked" (SQLite's single writer makes Optuna's concurrent workers hit that error
under load). The lock here is ``fcntl.flock`` on a side file rather than Optuna's default
symlink lock: the kernel drops a flock when its holder dies, so a worker killed with SIGKILL
while holding it blocks nobody (the symlink lock would stay until its 30 s grace period).

A worker killed *inside* a write leaves a torn record: the file then ends without a newline.
Optuna's reader skips such a tail, but its writer would append the next record onto it, and the
glued line breaks every later read. ``HealingJournalBackend`` therefore checks the tail under
the lock before every append (and, when opening, also that the last line parses) and cuts a
torn or unparsable tail back to the last complete record, keeping the cut bytes beside the
journal in ``study.journal.torn-<UTC time>-<pid>``. A damaged record anywhere else is not
guessed at: opening or reading stops with one line naming the file, the line and what to do.

PostgreSQL: ``RDBStorage`` (SQLAlchemy, driver psycopg 3) with Optuna's heartbeat: a running
trial beats every ``HEARTBEAT`` seconds, and a trial whose beat is older than ``GRACE`` is
marked failed by the next worker that starts a trial. ``RetryingRDBStorage`` retries every
storage operation that failed for want of a connection (server restarted, network gone) with
exponential backoff for up to ``retry_seconds()`` (120 s; environment variable
``LSTMLAB_STORAGE_RETRY``), then raises one ``StorageError`` line; a missed heartbeat is not
retried (the next beat is).
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import re
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from optuna.storages import RDBStorage
from optuna.storages.journal import JournalFileBackend

__all__ = [
    "StorageError",
    "open_storage",
    "describe_url",
    "retry_seconds",
    "HealingJournalBackend",
    "RetryingRDBStorage",
    "HEARTBEAT",
    "GRACE",
    "JOURNAL",
]

HEARTBEAT, GRACE = 10, 30  # seconds (PostgreSQL heartbeats)
JOURNAL = "study.journal"
RETRY_ENV, RETRY_DEFAULT = "LSTMLAB_STORAGE_RETRY", 120.0  # seconds of retrying an outage


class StorageError(RuntimeError):
    """The study's storage cannot be opened or used; ``str(err)`` is one line."""


def describe_url(url: str) -> str:
    """A URL with its password hidden (for messages)."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def retry_seconds() -> float:
    """How long a storage outage is retried (``LSTMLAB_STORAGE_RETRY`` seconds, default 120)."""
    raw = os.environ.get(RETRY_ENV, "")
    try:
        value = float(raw) if raw else RETRY_DEFAULT
    except ValueError:
        raise StorageError(f"{RETRY_ENV}={raw!r}: give a number of seconds, e.g. 120") from None
    if not (0 <= value <= 86_400):
        raise StorageError(f"{RETRY_ENV}={raw!r}: give seconds between 0 and 86400")
    return value


# --------------------------------------------------------------------------------------------
# The journal file


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


def _record_problem(line: bytes) -> str | None:
    """Why ``line`` (with its newline) is not a journal record, or None if it is one."""
    try:
        rec = json.loads(line)
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        return "not a JSON record"
    if not isinstance(rec, dict) or not isinstance(rec.get("op_code"), int):
        return "not an Optuna journal operation"
    return None


def first_damage(path: str | Path) -> tuple[int, str] | None:
    """(1-based line number, why) of the first damaged record of a journal file, or None.
    A last line without its newline is a torn tail, not damage (it is cut on the next write)."""
    with open(path, "rb") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.endswith(b"\n"):
                return None
            why = _record_problem(line)
            if why:
                return n, why
    return None


def _damage_message(path: str, n: int, why: str) -> str:
    keep = f"head -n {n - 1} {path} > {path}.fixed" if n > 1 else f": > {path}.fixed"
    return (
        f"study journal {path} is damaged at line {n} ({why}); the {n - 1} records before it "
        f"are intact: keep a copy, then `{keep} && mv {path}.fixed {path}` and run "
        "`lstmlab study resume DIR` (trials recorded after that line are run again)"
    )


class HealingJournalBackend(JournalFileBackend):
    """Optuna's ``JournalFileBackend`` that cuts back a torn tail instead of writing onto
    it, and reports a damaged record as one ``StorageError`` line."""

    def __init__(self, path: str | Path, notify=None):
        self._path = path = str(path)
        self._flock = FlockLock(path + ".lock")
        self._notify = notify or (lambda msg: print(msg, file=sys.stderr, flush=True))
        super().__init__(path, lock_obj=self._flock)
        try:
            self._flock.acquire()
        except PermissionError:  # a study one may read, not write: nothing to heal here
            return
        try:
            self.heal(check_last=True)
        except PermissionError:
            pass
        finally:
            self._flock.release()

    def heal(self, *, check_last: bool = False) -> int:
        """Cut a torn tail (bytes after the last newline) and, with ``check_last``, a last
        line that does not parse; the caller holds the lock. Returns the bytes cut."""
        with open(self._path, "r+b") as fh:
            size = fh.seek(0, os.SEEK_END)
            if size == 0:
                return 0
            cut = _start_of_line(fh, size)  # just past the last newline
            if cut == size and check_last:
                start = _start_of_line(fh, size - 1)
                fh.seek(start)
                if _record_problem(fh.read(size - start)):
                    cut = start
            if cut == size:
                return 0
            fh.seek(cut)
            torn = fh.read()
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            keep = f"{self._path}.torn-{stamp}-{os.getpid()}"
            with open(keep, "wb") as out:
                out.write(torn)
                out.flush()
                os.fsync(out.fileno())
            fh.truncate(cut)
            fh.flush()
            os.fsync(fh.fileno())
        self._notify(
            f"lstmlab study: cut a torn record ({len(torn)} bytes: a worker died while "
            f"writing) from the end of {self._path}; the bytes are kept in {keep}"
        )
        return len(torn)

    def _write(self, fh, data: bytes) -> None:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        data = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in logs).encode()
        self._flock.acquire()
        try:
            self.heal()
            with open(self._path, "ab") as fh:
                self._write(fh, data)
        finally:
            self._flock.release()

    def read_logs(self, log_number_from: int):
        try:
            yield from super().read_logs(log_number_from)
        except ValueError:  # a JSONDecodeError, or Optuna's "Invalid log format."
            self._raise_damage()

    def _raise_damage(self):
        try:
            found = first_damage(self._path)
        except OSError as err:
            raise StorageError(
                f"cannot read study journal {self._path}: {err.strerror or err}"
            ) from None
        if found is None:
            raise StorageError(
                f"study journal {self._path} holds a record Optuna cannot replay; keep a copy "
                "and restore the journal from a backup, or start a new study"
            ) from None
        raise StorageError(_damage_message(self._path, *found)) from None


def _start_of_line(fh, end: int) -> int:
    """The offset just past the last newline before ``end`` (0 if none)."""
    pos = end
    while pos > 0:
        step = min(1 << 16, pos)
        fh.seek(pos - step)
        i = fh.read(step).rfind(b"\n")
        if i >= 0:
            return pos - step + i + 1
        pos -= step
    return 0


def _journal(path: Path):
    from optuna.storages import JournalStorage

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and not path.is_file():
            raise StorageError(f"study journal {path} is not a regular file")
        backend = HealingJournalBackend(path)
    except OSError as err:
        raise StorageError(f"cannot open study journal {path}: {err.strerror or err}") from None
    try:
        return JournalStorage(backend)
    except (KeyError, TypeError, AttributeError, IndexError):  # a record of the wrong shape
        backend._raise_damage()


# --------------------------------------------------------------------------------------------
# PostgreSQL


def _transient(err: BaseException) -> bool:
    """Whether ``err`` (or what caused it) is a lost or refused database connection."""
    from sqlalchemy import exc

    seen = 0
    e: BaseException | None = err
    while e is not None and seen < 10:
        if isinstance(e, (exc.OperationalError, exc.InterfaceError, exc.DisconnectionError)):
            return True
        if isinstance(e, exc.DBAPIError) and e.connection_invalidated:
            return True
        if type(e).__module__.startswith("psycopg") and type(e).__name__ == "OperationalError":
            return True
        e, seen = e.__cause__ or e.__context__, seen + 1
    return False


def _reason(err: BaseException) -> str:
    e: BaseException | None = err
    while e is not None and e.__cause__ is not None:
        e = e.__cause__
    text = str(getattr(e, "orig", None) or e).strip()
    return text.splitlines()[0] if text else type(e).__name__


_busy = threading.local()  # inside a retried call: nested storage calls are not retried again


def _with_retries(fn, shown: str, limit: float, what: str, lead: str = "lost the database"):
    """``fn()``, called again with backoff (0.25 s doubling to 5 s) while it fails for want of
    a database connection, for up to ``limit`` seconds; then one ``StorageError`` line."""
    start, delay, tries = time.monotonic(), 0.25, 0
    while True:
        try:
            return fn()
        except Exception as err:
            if not _transient(err):
                raise
            tries += 1
            waited = time.monotonic() - start
            if waited + delay > limit:
                raise StorageError(
                    f"{lead} {shown} ({_reason(err)}); retried {what} for {waited:.0f} s "
                    f"({tries} tries); the study is intact there: run `lstmlab study resume "
                    "DIR` when the database is back"
                ) from None
        if tries == 1:
            print(
                f"lstmlab study: database {shown} unreachable; retrying for up to {limit:.0f} s",
                file=sys.stderr,
                flush=True,
            )
        time.sleep(delay)
        delay = min(delay * 2, 5.0)


def _retrying(name: str, method):
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        if getattr(_busy, "on", False):
            return method(self, *args, **kwargs)

        def once():
            _busy.on = True
            try:
                return method(self, *args, **kwargs)
            finally:
                _busy.on = False

        return _with_retries(once, self.shown, self.retry_for, name)

    return call


class RetryingRDBStorage(RDBStorage):
    """Optuna's ``RDBStorage`` whose operations are retried through a lost connection for
    ``retry_for`` seconds (``shown``: the URL without its password, for messages)."""

    shown: str = "the database"
    retry_for: float = RETRY_DEFAULT

    def record_heartbeat(self, trial_id: int) -> None:  # best effort: the next beat retries
        try:
            super().record_heartbeat(trial_id)
        except Exception as err:
            if not _transient(err):
                raise


def _wrap_rdb_methods() -> None:
    from optuna.storages._base import BaseStorage

    # the public operations and the private ones Optuna's cache layer calls on its backend
    private = {"_create_new_trial", "_get_best_trial_id", "_get_stale_trial_ids"}
    private |= {"_get_trials", "_set_trial_param"}
    names = {n for n in vars(BaseStorage) if not n.startswith("_")} | private
    for n in sorted(names):
        if n in vars(RDBStorage) and callable(vars(RDBStorage)[n]):
            setattr(RetryingRDBStorage, n, _retrying(n, vars(RDBStorage)[n]))


_wrap_rdb_methods()


def _postgres(url: str, wait: bool):
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    shown = describe_url(url)
    retry_for = retry_seconds()
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]

    def connect():
        with warnings.catch_warnings():  # the heartbeat is "experimental" since Optuna 2.9
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RetryingRDBStorage(
                url,
                engine_kwargs={"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}},
                heartbeat_interval=HEARTBEAT,
                grace_period=GRACE,
            )

    try:
        if wait:  # a worker of an existing study outlasts a restart that began before it
            storage = _with_retries(connect, shown, retry_for, "connecting", "cannot reach")
        else:
            storage = connect()
        storage.shown, storage.retry_for = shown, retry_for
        return storage
    except ModuleNotFoundError as err:
        raise StorageError(
            f"PostgreSQL needs the driver {err.name!r}: pip install 'psycopg[binary]'"
        ) from None
    except (SQLAlchemyError, OSError) as err:
        reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
        raise StorageError(f"cannot reach database {shown}: {reason}") from None
    except optuna.exceptions.StorageInternalError as err:
        raise StorageError(f"cannot reach database {shown}: {_reason(err)}") from None


def open_storage(url: str | None, study_dir: str | Path, *, wait: bool = False):
    """The Optuna storage for ``url`` (None or ``journal``: the study directory's journal
    file; ``journal:PATH``: that file; ``postgresql://…``: a PostgreSQL database). ``wait``:
    retry connecting to the database for ``retry_seconds()`` (opening an existing study;
    creating one fails at once on an unreachable URL, which is likelier a typo)."""
    if url is None or url == "journal":
        return _journal(Path(study_dir) / JOURNAL)
    if url.startswith("journal:"):
        return _journal(Path(url.removeprefix("journal:")))
    if url.startswith(("postgresql://", "postgresql+psycopg://", "postgres://")):
        return _postgres(url, wait)
    raise StorageError(
        f"unsupported storage URL {describe_url(url)!r}; use a postgresql:// URL, "
        "journal:FILE, or none for the study directory's journal file"
    )
