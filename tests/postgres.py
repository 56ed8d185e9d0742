"""A real PostgreSQL for tests: Debian's server on a temporary data dir and a free port.

``initdb`` and ``pg_ctl`` refuse to run as root, so they run as the ``postgres``
user (``runuser``) on a directory it owns under the system temp dir (pytest's
``tmp_path`` is private to root). The cluster listens on 127.0.0.1 only, trusts
local connections (it lives only as long as the test session) and is stopped
and removed at the end. With ``CI=true`` a missing PostgreSQL fails the test.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import psycopg
import pytest
from support import free_port, retry_on_port_clash

if TYPE_CHECKING:
    from canaryd.service.store import SqliteStore
    from canaryd.service.store.postgres import PostgresStore

PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
"""Debian puts the server binaries under /usr/lib/postgresql/<version>/bin."""

START_TIMEOUT = 60
"""Seconds ``initdb`` and ``pg_ctl start`` may take each."""


def _require() -> Path:
    """The server's bin directory; fail under ``CI=true``, skip elsewhere, when missing."""
    for d in PG_BIN_DIRS:
        if (d / "pg_ctl").exists() and (d / "initdb").exists():
            if shutil.which("runuser") is None:
                break
            return d
    message = "PostgreSQL is not installed (apt-get install postgresql)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class PostgresServer:
    """A running test cluster."""

    port: int
    data: Path
    bin: Path

    def url(self, database: str = "postgres") -> str:
        """The ``postgresql://`` URL of a database of this cluster."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; returns its URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def _ctl(self, *args: str) -> None:
        """Run ``pg_ctl`` as the postgres user."""
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                *args,
            ],
            check=True,
            capture_output=True,
            timeout=START_TIMEOUT,
        )

    def stop(self) -> None:
        """Stop the cluster (fast shutdown) and remove its directory."""
        try:
            self._ctl("stop", "-m", "fast", "-w")
        finally:
            shutil.rmtree(self.data.parent, ignore_errors=True)


@contextmanager
def start_postgres() -> Iterator[PostgresServer]:
    """Start a cluster on a free port in a new temp dir; stop and remove it afterwards."""
    bin_dir = _require()
    root = Path(tempfile.mkdtemp(prefix="canaryd-pg-"))
    shutil.chown(root, "postgres", "postgres")
    data = root / "data"
    as_pg = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*as_pg, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
         "-E", "UTF8", "--no-sync"],
        check=True, capture_output=True, timeout=START_TIMEOUT,
    )  # fmt: skip
    try:
        server = retry_on_port_clash(lambda: _start_cluster(root, data, bin_dir))
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    try:
        yield server
    finally:
        server.stop()


def _start_cluster(root: Path, data: Path, bin_dir: Path) -> PostgresServer:
    """Start the initialised cluster on a :func:`free_port`.

    Raises:
        RuntimeError: it did not start; the message ends with its log (a port taken
            meanwhile shows as "Address already in use").
    """
    server = PostgresServer(free_port(), data, bin_dir)
    options = (
        f"-p {server.port} -c listen_addresses=127.0.0.1 -k {root} -c fsync=off "
        "-c max_connections=200 -c shared_buffers=32MB"
    )
    log = root / "log"
    try:
        server._ctl("start", "-w", "-l", str(log), "-o", options)
    except subprocess.CalledProcessError as exc:
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        log.unlink(missing_ok=True)
        raise RuntimeError(f"PostgreSQL did not start: {exc.stderr!r}\n{tail}") from exc
    return server


AnyStore = Union["SqliteStore", "PostgresStore"]
"""What the ``store`` fixture yields: either store, with ``open`` and ``close``."""


def query(store: object, sql: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` read straight from a store's database, SQLite or PostgreSQL."""
    from canaryd.service.store import SqliteStore
    from canaryd.service.store.postgres import PostgresStore

    if isinstance(store, PostgresStore):
        with psycopg.connect(store.url) as conn:
            return conn.execute(sql).fetchall()
    assert isinstance(store, SqliteStore)
    with sqlite3.connect(store.path) as db:
        return db.execute(sql).fetchall()
