"""Prometheus provider's HTTP/1.1 client: pool limit, queue, timeouts, cancellation, close."""

from __future__ import annotations

import asyncio
import time
from functools import partial

import anyio
import pytest
from transport_servers import (
    WAIT,
    RawHandler,
    RawServer,
    answer,
    keep_answering,
    never_answer,
    pool_for,
    raw_server,
    raw_url,
)

from canaryd.providers.transport import (
    AnswerTimeoutError,
    Pool,
    PoolTimeoutError,
    Response,
    TransportError,
)

pytestmark = pytest.mark.anyio


def answer_on(release: asyncio.Event) -> RawHandler:
    """A handler that answers each request with ``ok`` once ``release`` is set."""

    async def on_release(
        srv: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        while await srv.read_request(reader) is not None:
            await release.wait()
            writer.write(answer())

    return on_release


# --------------------------------------------------------------------------- limit


async def test_limit_bounds_concurrent_connections() -> None:
    """With limit=2, five concurrent posts to a slow server use two connections at most."""

    async def slow(
        srv: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        while await srv.read_request(reader) is not None:
            await asyncio.sleep(0.1)
            writer.write(answer(f"conn {index}".encode()))

    results: list[Response] = []
    most = 0

    async with raw_server(slow) as srv, pool_for(raw_url(srv), limit=2) as pool:

        async def one() -> None:
            nonlocal most
            most = max(most, pool.connections)
            results.append(await pool.post("/q", b"", timeout=WAIT))
            most = max(most, pool.connections)

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(one)
    assert len(results) == 5
    assert all(r.status == 200 and r.complete for r in results)
    assert srv.peak == 2  # both used, never more
    assert srv.accepted == 2  # the queued posts got the freed connections
    assert most == 2


async def test_no_free_connection_is_a_pool_timeout() -> None:
    """With limit=1 and a server that never answers, a second post fails after its timeout."""
    async with raw_server(never_answer) as srv, pool_for(raw_url(srv), limit=1) as pool:
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(pool.post, "/q", b"", timeout=WAIT))  # holds the only connection
            await srv.wait_until(lambda: len(srv.requests) == 1)
            started = time.monotonic()
            with pytest.raises(PoolTimeoutError):
                await pool.post("/q", b"", timeout=0.2)
            elapsed = time.monotonic() - started
            tg.cancel_scope.cancel()
        assert pool.connections == 0  # the cancelled one gave its slot back
    assert 0.2 <= elapsed < 1.0
    assert srv.accepted == 1


async def test_queue_wait_does_not_eat_the_request_time() -> None:
    """A post that waited in the queue still gets its whole timeout for the answer."""

    async def slow(
        srv: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        while await srv.read_request(reader) is not None:
            await asyncio.sleep(0.3)
            writer.write(answer())

    results: list[Response] = []
    async with raw_server(slow) as srv, pool_for(raw_url(srv), limit=1) as pool:

        async def one() -> None:
            results.append(await pool.post("/q", b"", timeout=0.5))

        async with anyio.create_task_group() as tg:
            tg.start_soon(one)
            tg.start_soon(one)  # waits ~0.3 s, then needs ~0.3 s more: over 0.5 in all
    assert [r.status for r in results] == [200, 200]
    assert srv.accepted == 1


async def test_retry_after_queue_wait_gets_the_request_time() -> None:
    """The one retry of a post that waited in the queue is not cut short by that wait."""

    async def drops_second(
        srv: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        # connection 0: answers its first request slowly, then drops the next unanswered;
        # connection 1: answers slowly
        while await srv.read_request(reader) is not None:
            if index == 0 and len(srv.requests) == 2:
                return
            await asyncio.sleep(0.3)
            writer.write(answer())

    results: list[Response] = []
    async with raw_server(drops_second) as srv, pool_for(raw_url(srv), limit=1) as pool:

        async def one() -> None:
            results.append(await pool.post("/q", b"", timeout=0.5))

        async with anyio.create_task_group() as tg:
            tg.start_soon(one)
            tg.start_soon(one)
    assert [r.status for r in results] == [200, 200]
    assert (srv.accepted, len(srv.requests)) == (2, 3)


# --------------------------------------------------------------------------- timeouts


async def test_no_answer_is_an_answer_timeout_and_the_connection_is_dropped() -> None:
    """A server that never answers: AnswerTimeoutError after the timeout, connection closed."""

    async def first_never(
        srv: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        await (never_answer if index == 0 else keep_answering)(srv, reader, writer, index)

    async with raw_server(first_never) as srv, pool_for(raw_url(srv)) as pool:
        started = time.monotonic()
        with pytest.raises(AnswerTimeoutError):
            await pool.post("/q", b"", timeout=0.3)
        elapsed = time.monotonic() - started
        assert pool.connections == 0
        await srv.wait_until(lambda: srv.eofs == 1)  # the client closed it
        assert await pool.post("/q", b"", timeout=WAIT) == Response(200, b"ok", True)
    assert 0.3 <= elapsed < 1.0
    assert srv.accepted == 2


async def test_slow_headers_then_silence_is_an_answer_timeout() -> None:
    """Headers without the promised body do not stop the timer: AnswerTimeoutError."""

    async def half(
        srv: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        await srv.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
        await srv.read_request(reader)

    async with raw_server(half) as srv, pool_for(raw_url(srv)) as pool:
        with pytest.raises(AnswerTimeoutError):
            await pool.post("/q", b"", timeout=0.2)
        assert pool.connections == 0


# --------------------------------------------------------------------------- cancellation


async def test_cancelled_post_drops_its_connection() -> None:
    """A post cancelled mid-request closes its connection; a later post works on a new one."""

    async def first_never(
        srv: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        await (never_answer if index == 0 else keep_answering)(srv, reader, writer, index)

    async with raw_server(first_never) as srv, pool_for(raw_url(srv), limit=1) as pool:
        with anyio.move_on_after(0.1) as scope:
            await pool.post("/q", b"", timeout=WAIT)
        assert scope.cancelled_caught
        assert pool.connections == 0
        await srv.wait_until(lambda: srv.eofs == 1)
        assert await pool.post("/q", b"", timeout=WAIT) == Response(200, b"ok", True)
        assert pool.connections == 1
    assert srv.accepted == 2


async def test_cancelled_wait_for_a_connection_leaves_the_pool_intact() -> None:
    """A post cancelled while queued takes nothing: the busy connection is then reused."""
    release = asyncio.Event()

    async with raw_server(answer_on(release)) as srv, pool_for(raw_url(srv), limit=1) as pool:
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(pool.post, "/q", b"", timeout=WAIT))
            await srv.wait_until(lambda: len(srv.requests) == 1)
            with anyio.move_on_after(0.05) as scope:
                await pool.post("/q", b"", timeout=WAIT)
            assert scope.cancelled_caught
            release.set()
        assert pool.connections == 1
        assert await pool.post("/q", b"", timeout=WAIT) == Response(200, b"ok", True)
    assert srv.accepted == 1
    assert len(srv.requests) == 2


async def test_post_cancelled_as_a_connection_is_handed_to_it_gives_it_back() -> None:
    """A queued post cancelled after a connection was handed to it, before it ran, returns it."""
    release = asyncio.Event()
    outcome: list[str] = []
    queued: list[asyncio.Task[object]] = []

    async with raw_server(answer_on(release)) as srv, pool_for(raw_url(srv), limit=1) as pool:

        async def wait_in_queue() -> None:
            task = asyncio.current_task()
            assert task is not None
            queued.append(task)
            await srv.wait_until(lambda: len(srv.requests) == 1)  # the test's post has the slot
            try:
                await pool.post("/q", b"", timeout=WAIT)
                outcome.append("answered")
            except asyncio.CancelledError:  # the test cancels this task itself, not a scope
                task.uncancel()
                outcome.append("cancelled")

        async def answer_once_queued() -> None:
            await srv.wait_until(lambda: len(srv.requests) == 1)
            await anyio.wait_all_tasks_blocked()
            release.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_in_queue)
            tg.start_soon(answer_once_queued)
            await pool.post("/q", b"", timeout=WAIT)
            # the connection was just handed to the queued post, which has not run yet
            queued[0].cancel()
        assert outcome == ["cancelled"]
        assert pool.connections == 1
        assert await pool.post("/q", b"", timeout=0.5) == Response(200, b"ok", True)
    assert (srv.accepted, len(srv.requests)) == (1, 2)


# --------------------------------------------------------------------------- aclose


async def test_aclose_closes_idle_connections_and_refuses_posts() -> None:
    """aclose closes idle connections (the server sees EOF) and later posts fail."""
    async with raw_server(keep_answering) as srv:
        pool = Pool(raw_url(srv), limit=2, verify_tls=True, max_body=100)
        async with anyio.create_task_group() as tg:  # two connections, both left idle
            for _ in range(2):
                tg.start_soon(partial(pool.post, "/q", b"", timeout=WAIT))
        assert (srv.accepted, pool.connections) == (2, 2)
        await pool.aclose()
        assert pool.connections == 0
        await srv.wait_until(lambda: srv.eofs == 2)
        with pytest.raises(TransportError, match="the client is closed"):
            await pool.post("/q", b"", timeout=WAIT)
    assert len(srv.requests) == 2


async def test_aclose_fails_queued_posts_and_lets_the_one_in_flight_finish() -> None:
    """aclose fails queued posts at once; the post in flight gets its answer, then is closed."""
    release = asyncio.Event()

    results: list[Response] = []
    failures: list[BaseException] = []
    failed = anyio.Event()
    async with raw_server(answer_on(release)) as srv:
        pool = Pool(raw_url(srv), limit=1, verify_tls=True, max_body=100)

        async def in_flight() -> None:
            results.append(await pool.post("/q", b"", timeout=WAIT))

        async def queued() -> None:
            try:
                await pool.post("/q", b"", timeout=WAIT)
            except TransportError as exc:
                failures.append(exc)
                failed.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(in_flight)
            await srv.wait_until(lambda: len(srv.requests) == 1)
            tg.start_soon(queued)
            await anyio.wait_all_tasks_blocked()
            started = time.monotonic()
            await pool.aclose()
            with anyio.fail_after(0.5):
                await failed.wait()
            waited = time.monotonic() - started
            release.set()
        assert pool.connections == 0
        await srv.wait_until(lambda: srv.eofs == 1)  # in-flight connection closed, not kept
    assert results == [Response(200, b"ok", True)]
    assert [type(f) for f in failures] == [TransportError]
    assert "the client is closed" in str(failures[0])
    assert waited < 0.5
    assert len(srv.requests) == 1
