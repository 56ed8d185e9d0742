"""canaryd's own trouble in adapters: answers left unread, late timeouts, EMFILE."""

from __future__ import annotations

import asyncio
import select
import time

import pytest
from fdlimits import out_of_file_descriptors
from overload_helpers import UNREACHABLE
from receiver import Receiver
from transport_servers import keep_answering, never_answer, raw_server, raw_url

from canaryd.config.models import CanaryConfig, WebhookRouter
from canaryd.core.analysis import CanaryState
from canaryd.errors import RouterError
from canaryd.http import make_transport
from canaryd.providers import connection, transport
from canaryd.routers import RouteRequest, build_router
from canaryd.service import webhooks
from canaryd.service.limits import out_of_resources

REQUEST = b"POST /api/v1/query HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"


# --------------------------------------------------------------------------- an unread answer


def readable(conn: connection.Connection) -> bool:
    """Whether bytes wait on the connection's socket."""
    assert conn.transport is not None
    poller = select.poll()
    poller.register(conn.transport.get_extra_info("socket").fileno(), select.POLLIN)
    return bool(poller.poll(0))


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("answer", "error"),
    [(True, transport.BusyLoopError), (False, transport.AnswerTimeoutError)],
    ids=["answered-but-unread", "never-answered"],
)
async def test_an_answer_left_unread_by_a_busy_loop_is_canaryds_own_trouble(
    answer: bool, error: type[Exception]
) -> None:
    """An answer unread when its time ran out is canaryd's trouble; no answer is the server's."""
    async with raw_server(keep_answering if answer else never_answer) as srv:
        loop = asyncio.get_running_loop()
        sock, conn = await loop.create_connection(
            lambda: connection.Connection(1024), "127.0.0.1", srv.port
        )
        try:
            waiter = conn.send(REQUEST)
            sock.pause_reading()  # what an event loop too busy to read amounts to
            deadline = time.monotonic() + 0.5
            while not readable(conn) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            now = loop.time()
            conn.expire(now, 1.0)  # on time: only the unread bytes make it canaryd's trouble
            with pytest.raises(transport.AnswerTimeoutError) as raised:
                await waiter
            assert type(raised.value) is error
        finally:
            sock.close()


@pytest.mark.anyio
async def test_a_timeout_seen_late_by_a_blocked_loop_is_canaryds_own_trouble() -> None:
    """A timeout a blocked event loop saw late is canaryd's trouble, not the server's."""
    async with raw_server(never_answer) as srv:
        pool = transport.Pool(raw_url(srv), limit=1, verify_tls=False, max_body=1024)
        try:
            # the loop is stuck for 0.6 s (CPU starvation, a long pause) while the 0.2 s run
            asyncio.get_running_loop().call_later(0.05, time.sleep, 0.6)
            with pytest.raises(transport.BusyLoopError, match="too busy"):
                await pool.post("/api/v1/query", b"", timeout=0.2)
            with pytest.raises(transport.AnswerTimeoutError) as on_time:
                await pool.post("/api/v1/query", b"", timeout=0.2)
            assert type(on_time.value) is transport.AnswerTimeoutError
        finally:
            await pool.aclose()


@pytest.mark.anyio
async def test_a_webhook_canaryd_has_no_descriptor_for_is_its_own_trouble() -> None:
    """A rollout webhook call that meets EMFILE is canaryd's trouble; a refused one is not."""
    async with Receiver() as receiver:
        spec = CanaryConfig.model_validate(
            {
                "name": "web",
                "namespace": "prod",
                "router": "lb",
                "analysis": {
                    "interval": "1s",
                    "stepWeight": 10,
                    "webhooks": [
                        {"name": "load", "type": "rollout", "url": f"{receiver.url}/load"},
                        {"name": "down", "type": "rollout", "url": f"{UNREACHABLE}/x"},
                    ],
                },
            }
        )
        load, down = spec.analysis.webhooks
        # a transport of its own, used first: no pooled keep-alive connection to reuse
        async with make_transport() as fresh:
            with out_of_file_descriptors():
                starved = await webhooks.call(fresh, spec, CanaryState(), load, "k1")
        async with make_transport() as session:
            refused = await webhooks.call(session, spec, CanaryState(), down, "k2")
            served = await webhooks.call(session, spec, CanaryState(), load, "k3")
    assert (starved.ok, starved.own) == (False, True), starved
    assert "Too many open files" in starved.detail
    assert (refused.ok, refused.own) == (False, False), refused
    assert served.ok and len(receiver.requests) == 1  # there all along; reached once, not starved


@pytest.mark.anyio
async def test_a_route_canaryd_has_no_descriptor_for_is_its_own_trouble() -> None:
    """A route that meets EMFILE is known as canaryd's trouble (check.held_by_canaryd); a refusal
    is the router's."""
    async with Receiver() as receiver, make_transport() as session:
        cfg = WebhookRouter.model_validate({"type": "webhook", "url": f"{receiver.url}/routes"})
        down = WebhookRouter.model_validate({"type": "webhook", "url": f"{UNREACHABLE}/r"})
        request = RouteRequest("prod/web", "v2", "route", 90, 10, "k")
        router = build_router("lb", cfg, session)
        with out_of_file_descriptors(), pytest.raises(RouterError) as starved:
            await router.apply(request)
        with pytest.raises(RouterError) as refused:
            await build_router("down", down, session).apply(request)
        await router.apply(request)
    assert out_of_resources(starved.value), starved.value
    assert not out_of_resources(refused.value), refused.value
    assert len(receiver.requests) == 1  # the receiver was there all along
