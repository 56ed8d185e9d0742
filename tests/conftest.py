"""Shared test settings and the fixtures for real servers.

- asyncio is the only anyio backend (aiohttp runs on asyncio).
- A test using a real server's fixture is marked ``integration``; a unit test (neither
  ``integration`` nor ``slow``) that starts a process fails (tests/support/guard.py), so
  ``make unit`` stays fast.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Generator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from graphite import GraphiteServer, start_graphite
from haproxy import HAProxyInstance, find_haproxy, named_backend, run_haproxy, write_config
from influx import InfluxServer, start_influxdb
from postgres import PostgresServer, start_postgres
from prom import MetricsApp, PrometheusServer, start_prometheus
from support import entered_on_free_port
from support.guard import ProcessInUnitTestError, SpawnGuard

from canaryd.http import HttpTransport, make_transport
from canaryd.service.store import SqliteStore, StateStore
from canaryd.service.store.postgres import PostgresStore

# Tests drive real daemons with sub-second intervals: lower the interval floor
# (docs/flagger.md, "Floors") for this process and the daemons it starts.
os.environ.setdefault("UNSAFE_CANARYD_MIN_INTERVAL", "0.01")


@pytest.fixture
def anyio_backend() -> str:
    """Pin anyio's pytest plugin to asyncio."""
    return "asyncio"


REAL_SERVER_FIXTURES = frozenset(
    {"haproxy", "haproxy_binary", "prometheus", "graphite", "influxdb", "postgres"}
    | {"caddy", "caddy_binary", "moto_endpoint", "alb", "chromium"}
    | {"full_disk", "tiny_tmpfs"}  # mount a small filesystem
)
"""Fixtures that start a real external server or process: a test using one is integration."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test using a real server's fixture ``integration`` (``make unit`` skips it)."""
    for item in items:
        if REAL_SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


GUARD = SpawnGuard()
"""Refuses processes in unit tests; one audit hook for the session."""


def _is_unit(item: pytest.Item) -> bool:
    return not any(item.iter_markers("integration")) and not any(item.iter_markers("slow"))


def _guarded(item: pytest.Item) -> Generator[None, None, None]:
    """Run a set-up or call phase; a unit test in it may start no process."""
    if not _is_unit(item):
        return (yield)
    with GUARD.unit_test(item.nodeid):
        result = yield
    if GUARD.refused:  # refused even if the test caught the error
        raise ProcessInUnitTestError(f"{item.nodeid} started a process: {GUARD.refused[0]}")
    return result


# Set-up and call only: a session fixture's tear-down runs in whichever test is last.
pytest_runtest_setup = pytest.hookimpl(wrapper=True)(_guarded)
pytest_runtest_call = pytest.hookimpl(wrapper=True)(_guarded)


# --------------------------------------------------------------------------- HAProxy
# A real HAProxy per test (tests/haproxy.py): `haproxy` yields an HAProxyInstance
# with .unix_socket, .tcp_socket, .url (frontend), .backend/.primary/.canary and
# .router_config(tcp=...); `haproxy_backends` are the two aiohttp backends behind it.


@pytest.fixture(scope="session")
def haproxy_binary() -> str:
    """Path of the haproxy binary; missing fails under CI=true and skips elsewhere."""
    binary = find_haproxy()
    if binary is None:
        message = "haproxy binary not found; install it: apt-get install haproxy"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return binary


@pytest.fixture
async def haproxy_backends(anyio_backend: str) -> AsyncIterator[tuple[int, int]]:
    """Two real HTTP backends on 127.0.0.1 answering "primary" and "canary"; yields their ports."""
    async with named_backend("primary") as primary, named_backend("canary") as canary:
        yield primary, canary


@pytest.fixture
def haproxy(
    haproxy_binary: str, haproxy_backends: tuple[int, int], tmp_path: Path
) -> Iterator[HAProxyInstance]:
    """A running HAProxy (foreground subprocess) in front of ``haproxy_backends``."""
    primary_port, canary_port = haproxy_backends

    @contextmanager
    def start() -> Iterator[HAProxyInstance]:
        instance = write_config(tmp_path, primary_port=primary_port, canary_port=canary_port)
        try:
            with run_haproxy(haproxy_binary, instance):
                yield instance
        finally:
            if not instance.unix_socket.is_relative_to(tmp_path):  # path-length fallback dir
                shutil.rmtree(instance.unix_socket.parent, ignore_errors=True)

    with entered_on_free_port(start) as instance:  # a port taken meanwhile: new ports
        yield instance


# --------------------------------------------------------------------------- Prometheus
# A real Prometheus for the whole session (tests/prom.py), scraping `metrics_app`
# every second. A test picks a `unique_job`, sets samples with
# `prometheus.app.set(name, {"job": unique_job, ...}, value)` and polls with
# `prom.eventually(...)`; `prometheus.provider_config()` is a PrometheusProvider for it.


@pytest.fixture(scope="session")
def metrics_app() -> Iterator[MetricsApp]:
    """An aiohttp scrape target on 127.0.0.1 whose samples tests set at any time."""
    app = MetricsApp()
    app.start()
    try:
        yield app
    finally:
        app.stop()


@pytest.fixture(scope="session")
def prometheus(
    metrics_app: MetricsApp, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusServer]:
    """The real prometheus binary on a free 127.0.0.1 port, scraping ``metrics_app`` every 1s."""
    server = start_prometheus(tmp_path_factory.mktemp("prometheus"), app=metrics_app)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def unique_job() -> str:
    """A ``job`` label value no other test uses (the Prometheus is shared)."""
    return f"web-canary-{uuid.uuid4().hex[:8]}"


# --------------------------------------------------------------------------- shared seams
# A real SQLite store and the real outgoing-HTTP transport, for tests that drive runners
# and the outbox.


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL cluster shared by the session (each test makes its own database)."""
    with start_postgres() as server:
        yield server


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """A real SQLite store in a temporary directory."""
    s = SqliteStore(tmp_path / "state.db")
    await s.open()
    yield s
    await s.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateStore]:
    """A real store: SQLite in a temporary directory, then PostgreSQL in a new database."""
    s: StateStore
    if request.param == "sqlite":
        s = SqliteStore(tmp_path / "state.db")
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        s = PostgresStore(server.create_database())
    await s.open()
    yield s
    await s.close()


@pytest.fixture
async def session() -> AsyncIterator[HttpTransport]:
    """The real outgoing-HTTP transport (canaryd.http.make_transport), closed after the test."""
    async with make_transport() as s:
        yield s


# --------------------------------------------------------------------------- other metric servers


@pytest.fixture(scope="session")
def graphite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GraphiteServer]:
    """A real carbon-cache + graphite-web shared by the session (tests write their own metrics)."""
    server = start_graphite(tmp_path_factory.mktemp("graphite"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def influxdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxServer]:
    """A real influxd (1.x, auth on, database ``canaryd``) shared by the session."""
    server = start_influxdb(tmp_path_factory.mktemp("influxdb"))
    try:
        yield server
    finally:
        server.stop()
