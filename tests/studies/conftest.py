"""A real PostgreSQL server for the study tests, from the ``pgserver`` wheel.

As root (CI runs as root, and PostgreSQL refuses to run as root) pgserver creates a system user
``pgserver`` with ``useradd``, hands it the data directory, opens the directories above it
for traversal (o+rx) and runs the server as that user; as any other user it runs the server
as that user. Either way the server listens only on a Unix socket in the data directory.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def pg_server():
    pgserver = pytest.importorskip("pgserver")
    # not under pytest's 0700 temporary root: the server's own user must reach the directory
    pgdata = Path(tempfile.mkdtemp(prefix="lstmlab-pg-"))
    srv = pgserver.get_server(pgdata, cleanup_mode=None)
    yield srv
    srv.cleanup()
    shutil.rmtree(pgdata, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server):
    """A fresh database on the session's server."""
    name = f"t{uuid.uuid4().hex[:12]}"
    pg_server.psql(f"CREATE DATABASE {name};")
    return pg_server.get_uri(name)


class _Ctl:
    """Stop and start the session's server (a database outage in the middle of a study)."""

    def __init__(self, srv):
        self.srv = srv

    def stop(self) -> None:
        """``pg_ctl stop -m fast``: clients are disconnected at once."""
        from pgserver._commands import pg_ctl

        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.srv.pgdata, user=self.srv.system_user)

    def start(self) -> None:
        """Start it again on the same socket (the URLs stay valid)."""
        self.srv.ensure_postgres_running()


@pytest.fixture
def pg_ctl(pg_server):
    ctl = _Ctl(pg_server)
    yield ctl
    ctl.start()  # whatever the test did, the server runs for the next one
