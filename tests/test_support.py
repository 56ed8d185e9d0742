"""The shared test helpers (tests/support) wait and allocate ports as documented."""

from __future__ import annotations

import errno
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import postgres
import psycopg
import pytest
import yaml
from daemons import api_url, daemon_process, write_config
from support import (
    entered_on_free_port,
    eventually,
    free_port,
    refused_port,
    retry_on_port_clash,
    started_on_free_port,
)
from support.guard import SpawnGuard
from support.ports import is_port_clash, listening

pytestmark = pytest.mark.anyio


def test_refused_port_refuses_and_cannot_be_taken() -> None:
    """Connecting to a refused port is refused, and no server can bind it meanwhile."""
    port = refused_port()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    with socket.socket() as other, pytest.raises(OSError) as info:
        other.bind(("127.0.0.1", port))
    assert info.value.errno == errno.EADDRINUSE


def test_retry_on_port_clash_retries_only_clashes() -> None:
    """A start that clashes is tried again; any other failure is raised at once."""
    tries: list[int] = []

    def clashing_twice() -> str:
        tries.append(1)
        if len(tries) < 3:
            raise RuntimeError("server exited:\nlisten tcp: bind: address already in use")
        return "up"

    assert retry_on_port_clash(clashing_twice) == "up"
    assert len(tries) == 3

    def broken() -> str:
        tries.append(1)
        raise RuntimeError("config invalid")

    tries.clear()
    with pytest.raises(RuntimeError, match="config invalid"):
        retry_on_port_clash(broken)
    assert len(tries) == 1


def test_entered_on_free_port_enters_again_after_a_clash() -> None:
    """A context manager whose start clashes is entered again; the good one is yielded."""
    entered: list[int] = []

    @contextmanager
    def start() -> Iterator[int]:
        entered.append(1)
        if len(entered) == 1:
            raise OSError(errno.EADDRINUSE, "Address already in use")
        yield len(entered)

    with entered_on_free_port(start) as value:
        assert value == 2


def test_started_on_free_port_makes_a_new_server_in_a_new_directory_after_a_clash(
    tmp_path: Path,
) -> None:
    """A server whose start clashes is made again in a fresh subdirectory and started."""
    made: list[Path] = []

    class Server:
        def __init__(self, directory: Path) -> None:
            made.append(directory)
            (directory / "config").mkdir()  # a second make in the same place would fail

        def start(self) -> None:
            if len(made) == 1:
                raise RuntimeError("bind() to 127.0.0.1:1 failed (98: Address already in use)")

    started_on_free_port(Server, tmp_path)
    assert made[0] == tmp_path
    assert len(made) == 2 and made[1].parent == tmp_path


def test_spawn_guard_refuses_a_process_only_inside_a_unit_test() -> None:
    """Inside ``unit_test`` a watched audit event raises and is remembered; outside it passes.

    The guard under test watches an event of its own, so that the session's guard (which
    watches the real process events) stays out of it.
    """
    guard = SpawnGuard(frozenset({"canaryd.test.spawn"}))
    with guard.unit_test("t"), pytest.raises(RuntimeError, match="t started a process"):
        sys.audit("canaryd.test.spawn", "true")
    assert guard.refused == ["canaryd.test.spawn ('true',)"]
    sys.audit("canaryd.test.spawn", "true")  # outside the block: allowed
    with guard.unit_test("u"):
        assert guard.refused == []  # each test starts afresh


async def test_eventually_returns_the_accepted_value() -> None:
    """Sync and async probes are polled until accepted; the accepted value is returned."""
    seen: list[int] = []

    def probe() -> int:
        seen.append(len(seen))
        return seen[-1]

    async def aprobe() -> int:
        return probe()

    assert await eventually(probe, lambda v: v >= 2, interval=0) == 2
    assert await eventually(aprobe, lambda v: v >= 5, interval=0) == 5


async def test_eventually_fails_naming_what_and_the_last_result() -> None:
    """Past ``within`` it raises AssertionError with ``what`` and the last result or error."""

    def failing() -> int:
        raise KeyError("prod/web")

    with pytest.raises(AssertionError, match=r"the runner not met within 0\.1s; last: KeyError"):
        await eventually(failing, within=0.1, what="the runner")


def _taken() -> tuple[socket.socket, int]:
    """A socket listening on a free 127.0.0.1 port, and the port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock, int(sock.getsockname()[1])


@pytest.mark.integration
def test_a_daemon_whose_port_is_taken_is_started_on_another(tmp_path: Path) -> None:
    """``daemon_process`` starts a real daemon again on a new port when its port is taken,
    and removes the clash from the log."""
    config = write_config(tmp_path, [])
    holder, port = _taken()
    data = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump(data | {"listen": f"127.0.0.1:{port}"}))
    log = tmp_path / "daemon.log"
    with holder, daemon_process(config, log) as proc:
        moved = int(api_url(config).rpartition(":")[2])
        assert moved != port and proc.poll() is None
        assert listening(proc.pid, moved)
        assert not is_port_clash(RuntimeError(log.read_text()))


@pytest.mark.integration
def test_postgres_whose_port_is_taken_starts_on_another(monkeypatch: pytest.MonkeyPatch) -> None:
    """A PostgreSQL whose first port is taken is started on the next one."""
    holder, port = _taken()
    ports = iter([port])
    monkeypatch.setattr(postgres, "free_port", lambda: next(ports, None) or free_port())
    with holder, postgres.start_postgres() as server, psycopg.connect(server.url()) as conn:
        assert server.port != port
        assert conn.execute("SELECT 1").fetchone() == (1,)
