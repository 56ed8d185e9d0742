"""Counting where real requests land behind a proxy (shared by the router tests).

The backends behind every proxy under test answer with their own name
(``primary`` / ``canary``, see :func:`haproxy.named_backend`); these helpers send
real requests through the proxy's frontend, each on a new connection, and check
the measured canary share against the weight canaryd set.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Protocol, TypeVar

import anyio
import pytest
from haproxy import count_responses, named_backend
from support import started_on_free_port

from canaryd.errors import RouterError
from canaryd.routers import Action, RouteRequest

REQUESTS = 200
"""Requests sent through the proxy per measured step."""

TOLERANCE = 7
"""Allowed deviation of the measured canary share, in percentage points (0 and 100 exact)."""

STEPS = (0, 20, 50, 100)
"""Canary weights every proxy's router is driven through."""


def share_error(counts: Counter[str], canary: int) -> str | None:
    """Why ``counts`` does not match a ``canary`` percent split, or None if it does.

    0 and 100 percent must be exact; other weights within :data:`TOLERANCE` points.
    """
    total = sum(counts.values())
    unexpected = set(counts) - {"primary", "canary"}
    if unexpected or total == 0:
        return f"answers other than primary/canary: {dict(counts)}"
    measured = 100 * counts["canary"] / total
    allowed = 0 if canary in (0, 100) else TOLERANCE
    if abs(measured - canary) > allowed:
        return f"canary got {measured:.1f}% of {total} requests, weight {canary}% (±{allowed})"
    return None


async def assert_split(url: str, canary: int, requests: int = REQUESTS) -> Counter[str]:
    """Send ``requests`` GETs to ``url`` and assert the canary share is ``canary`` percent.

    Raises:
        AssertionError: the measured share is off (see :func:`share_error`).
    """
    counts = await count_responses(url, requests)
    error = share_error(counts, canary)
    assert error is None, error
    return counts


def route(action: Action = "route", primary: int = 80, canary: int = 20) -> RouteRequest:
    """A router request for prod/web."""
    return RouteRequest("prod/web", "v2", action, primary, canary, idempotency_key="key-1")


class Applies(Protocol):
    """A router under test: anything that applies a :class:`RouteRequest`."""

    async def apply(self, request: RouteRequest) -> None:
        """Set the weights (or promote, or roll back) as ``request`` says."""
        ...


async def step_and_roll_back(
    router: Applies,
    url: str,
    *,
    requests: int = REQUESTS,
    check: Callable[[int], None] | None = None,
) -> None:
    """Drive ``router`` through :data:`STEPS` and a rollback, measuring each split at ``url``.

    ``check(canary)``, if given, runs after each apply and before the traffic is counted
    (the proxy's own view of the weights, say).

    Raises:
        AssertionError: a measured split (or ``check``) is off.
    """
    for canary in STEPS:
        await router.apply(route("route", 100 - canary, canary))
        if check is not None:
            check(canary)
        await assert_split(url, canary, requests)
    await router.apply(route("rollback", 0, 100))
    if check is not None:
        check(0)
    await assert_split(url, 0, requests)


class Proxy(Protocol):
    """A proxy under test that starts in the foreground and stops."""

    def start(self) -> None:
        """Start it and wait until it is ready."""
        ...

    def stop(self) -> None:
        """Stop it (and wait for it)."""
        ...


P = TypeVar("P", bound=Proxy)


@asynccontextmanager
async def in_front_of_backends(
    make: Callable[[Path, tuple[int, int]], P], directory: Path
) -> AsyncIterator[P]:
    """``make(dir, (primary_port, canary_port))`` started in front of two real backends.

    The backends answer "primary" and "canary" (:func:`haproxy.named_backend`); the
    proxy is started by :func:`support.started_on_free_port` (again on a port clash,
    in a fresh subdirectory of ``directory``) and stopped when the block ends.
    """
    async with named_backend("primary") as primary, named_backend("canary") as canary:
        proxy = started_on_free_port(lambda d: make(d, (primary, canary)), directory)
        try:
            yield proxy
        finally:
            proxy.stop()


@contextmanager
def stopped(proxy: Proxy) -> Iterator[None]:
    """``proxy`` stopped for the block, started again after it."""
    proxy.stop()
    try:
        yield
    finally:
        proxy.start()


async def refused_during(
    outage: AbstractContextManager[object],
    router: Applies,
    file: Path,
    url: str,
    *,
    canary: int,
    requests: int = REQUESTS,
) -> str:
    """During ``outage`` a 50/50 apply fails without touching ``file``; the old split holds after.

    ``outage`` is :func:`stopped` or :func:`proxies.frozen`; ``canary`` is the
    weight routed before, measured again at ``url`` once the outage is over.

    Returns:
        The router's error message.

    Raises:
        AssertionError: the apply succeeded, the file changed, or the split moved.
    """
    before = await anyio.Path(file).read_bytes()
    with outage, pytest.raises(RouterError) as info:
        await router.apply(route("route", 50, 50))
    assert await anyio.Path(file).read_bytes() == before
    await assert_split(url, canary, requests)
    return str(info.value)
