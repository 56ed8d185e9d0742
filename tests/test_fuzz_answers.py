"""Hostile answers (huge, endless, trickling, slow) cost each outgoing call bounded time, memory.

Webhook, router, notifier and provider calls meet them from a real local server.
"""

from __future__ import annotations

import contextlib
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import pytest
from aiohttp import web
from faults import StandIn

from canaryd.config import CanaryConfig, Notifier, PrometheusProvider, WebhookRouter, WebhookSpec
from canaryd.core.analysis import CanaryState, Phase
from canaryd.errors import ProviderError, RouterError, WebhookError
from canaryd.http import MAX_ANSWER_BYTES, HttpTransport, make_transport
from canaryd.notifiers import deliver
from canaryd.providers.prometheus import MAX_BODY_BYTES, Prometheus
from canaryd.routers import RouteRequest
from canaryd.routers.webhook import WebhookRouterClient
from canaryd.service.webhooks import call as call_webhook

# --------------------------------------------------------------------------- hostile servers

CHUNK = b"x" * 65536


async def _huge(request: web.Request, body: bytes) -> web.StreamResponse:
    """A 2xx whose declared body is 256 MiB (streamed, so the server itself stays small)."""
    resp = web.StreamResponse(headers={"Content-Length": str(4096 * len(CHUNK))})
    await resp.prepare(request)
    with contextlib.suppress(ConnectionError, RuntimeError):
        for _ in range(4096):
            await resp.write(CHUNK)
    return resp


async def _endless(request: web.Request, body: bytes) -> web.StreamResponse:
    resp = web.StreamResponse()
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    with contextlib.suppress(ConnectionError, RuntimeError):
        for _ in range(100_000):  # ~6 GB: endless for any client that keeps reading
            await resp.write(CHUNK)
    return resp


async def _trickle(request: web.Request, body: bytes) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    with contextlib.suppress(ConnectionError, RuntimeError):
        for _ in range(600):
            await resp.write(b" ")
            await anyio.sleep(0.1)
    return resp


async def _slow(request: web.Request, body: bytes) -> web.StreamResponse:
    await anyio.sleep(30)
    return web.Response(text="late")


HOSTILE: dict[str, Callable[[web.Request, bytes], Awaitable[web.StreamResponse]]] = {
    "huge-body": _huge,
    "endless-chunked": _endless,
    "trickle": _trickle,
    "slow": _slow,
}
TIMEOUT = 1.0
MEMORY_LIMIT = 16 * 1024 * 1024
"""Peak Python memory one call may allocate, whatever the server sends (tracemalloc)."""


@contextlib.asynccontextmanager
async def hostile(kind: str) -> AsyncIterator[StandIn]:
    """A server answering every request the hostile way ``kind``."""
    async with StandIn(HOSTILE[kind]) as server:
        yield server


async def bounded(call: Callable[[], Awaitable[Any]], seconds: float) -> tuple[Any, float, int]:
    """Run ``call``; return its result (or exception), the seconds taken, the peak memory."""
    tracemalloc.start()
    started = time.monotonic()
    try:
        with anyio.fail_after(seconds + 5):
            try:
                result: Any = await call()
            except Exception as exc:  # the caller checks which ones are allowed
                result = exc
        return result, time.monotonic() - started, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


SPEC = CanaryConfig.model_validate(
    {"name": "web", "router": "mesh", "analysis": {"stepWeight": 10}}
)
STATE = CanaryState(phase=Phase.PROGRESSING, revision="v2", rollout_id="r1")


async def _webhook(url: str, session: HttpTransport) -> Any:
    hook = WebhookSpec.model_validate(
        {"name": "load", "type": "rollout", "url": url, "timeout": TIMEOUT}
    )
    result = await call_webhook(session, SPEC, STATE, hook, "k")
    return result


async def _router(url: str, session: HttpTransport) -> Any:
    cfg = WebhookRouter.model_validate({"type": "webhook", "url": url, "timeout": TIMEOUT})
    request = RouteRequest("default/web", "v2", "route", 90, 10, "k")
    await WebhookRouterClient(cfg, session, name="mesh").apply(request)


async def _notifier(url: str, session: HttpTransport) -> Any:
    notifier = Notifier.model_validate({"type": "webhook", "url": url, "timeout": TIMEOUT})
    await deliver(
        session, notifier, {"text": "hi"}, "application/json", idempotency_key="k", secret=None
    )


async def _provider(url: str, session: HttpTransport) -> Any:
    cfg = PrometheusProvider.model_validate(
        {"type": "prometheus", "address": url, "timeout": TIMEOUT}
    )
    async with Prometheus(cfg) as provider:
        return await provider.query("up", budget=TIMEOUT * 2)


CALLERS = {"webhook": _webhook, "router": _router, "notifier": _notifier, "provider": _provider}
ATTEMPTS = {"webhook": 1, "router": 3, "notifier": 1, "provider": 2}
"""How many timeouts a caller may spend at most (router retries; provider budget)."""


@pytest.mark.anyio
@pytest.mark.parametrize("kind", list(HOSTILE), ids=list(HOSTILE))
@pytest.mark.parametrize("caller", list(CALLERS), ids=list(CALLERS))
@pytest.mark.slow
async def test_hostile_answers_cost_bounded_time_and_memory(caller: str, kind: str) -> None:
    """Huge, endless, trickling or slow answers end within the timeouts, memory capped."""
    async with hostile(kind) as server, make_transport() as session:
        result, took, peak = await bounded(
            lambda: CALLERS[caller](server.url + "/x", session), TIMEOUT * ATTEMPTS[caller]
        )
    assert took < TIMEOUT * ATTEMPTS[caller] + 2.0, f"{caller} took {took:.1f}s against {kind}"
    assert peak < MEMORY_LIMIT, f"{caller} held {peak / 1e6:.1f} MB against {kind}"
    # A 2xx status is an answer whatever body follows (only its first bytes are read);
    # a Prometheus answer must be whole, so those fail the query instead.
    answered = kind != "slow"  # the others send 2xx headers at once, then their body
    if caller == "provider":  # a metric needs the whole body: a broken one is an error
        assert isinstance(result, ProviderError), result
        assert len(str(result)) < 1000
    elif caller == "webhook":
        assert result.ok == answered and len(result.detail) < 1000, result
    elif answered:
        assert result is None, result  # applied / delivered
    else:
        assert isinstance(result, RouterError | WebhookError), result
        assert len(str(result)) < 1000


def test_answer_caps_are_what_the_memory_bound_assumes() -> None:
    """Webhook answers are read up to 64 KiB and Prometheus answers up to 1 MiB, no more."""
    assert MAX_ANSWER_BYTES <= 64 * 1024 and MAX_BODY_BYTES <= 1024 * 1024
