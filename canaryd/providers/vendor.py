"""What the SaaS metric APIs (Datadog, New Relic, Dynatrace) share beyond :mod:`.base`.

- Rate limits: a ``429`` answer advertising when the limit resets is retried
  after that reset when the reset falls inside the tick's budget, and fails at
  once when it does not (asking again sooner only spends more of the quota).
  Without an advertised reset a ``429`` is an ordinary transient failure.
- Answers are JSON; ``NaN`` and ``null`` values are "no data".

See docs/providers.md, "Common behaviour" and each provider's section.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any, TypeVar

import anyio

from canaryd.errors import ProviderError
from canaryd.providers.base import Endpoint, Request, TransientError, http_error, is_transient
from canaryd.providers.transport import Response

T = TypeVar("T")

MAX_BODY_BYTES = 1024 * 1024
"""Answers larger than this are refused (a metric query answers a few kilobytes)."""

MAX_RATE_LIMIT_WAIT = 3600.0
"""Advertised resets beyond an hour are taken as garbage, not waited for."""


class RateLimitedError(TransientError):
    """HTTP 429 with an advertised reset: ``wait`` seconds until the limit resets."""

    def __init__(self, message: str, wait: float) -> None:
        super().__init__(message)
        self.wait = wait


async def call(
    endpoint: Endpoint, request: Request, budget: float, parse: Callable[[Response], T]
) -> T:
    """:meth:`Endpoint.call`, waiting out advertised rate-limit resets within ``budget``.

    Raises:
        ProviderError: permanent failure, a reset after the budget, or transient
            failures until the budget ran out.
    """
    deadline = time.monotonic() + budget

    async def attempt(limit: float) -> T:
        try:
            return await endpoint.attempt(request, limit, parse)
        except RateLimitedError as exc:
            if time.monotonic() + exc.wait + min(limit, 1.0) > deadline:
                raise ProviderError(
                    f"{exc}; the limit resets in {exc.wait:.1f}s, after this check's budget"
                ) from None
            await anyio.sleep(exc.wait)
            raise TransientError(f"{exc}; waited {exc.wait:.1f}s for the reset") from None

    return await endpoint.retrying(attempt, budget)


def reset_seconds(resp: Response, *, reset_is_epoch_us: bool = False) -> float | None:
    """Seconds until a rate limit resets, from ``Retry-After`` or ``X-RateLimit-Reset``.

    Args:
        resp: the answer.
        reset_is_epoch_us: ``X-RateLimit-Reset`` is a time in microseconds since the
            epoch (Dynatrace) rather than seconds from now (Datadog).

    Returns:
        The wait (0 or more), or ``None`` when neither header holds a number.
    """
    for value, epoch in ((resp.retry_after, False), (resp.ratelimit_reset, reset_is_epoch_us)):
        try:
            number = float(value.strip())
        except ValueError:
            continue
        wait = number / 1e6 - time.time() if epoch else number
        if math.isfinite(wait) and wait <= MAX_RATE_LIMIT_WAIT:
            return max(0.0, wait)
    return None


def check_rate_limit(name: str, resp: Response, **reset: bool) -> None:
    """Raise :class:`RateLimitedError` for a 429 that advertises its reset.

    (Redirects never get here: :class:`~canaryd.providers.base.Endpoint` refuses them.)

    Raises:
        RateLimitedError: rate limited, with an advertised reset.
    """
    if resp.status == 429:
        wait = reset_seconds(resp, **reset)
        if wait is not None:
            raise RateLimitedError(http_error(name, 429, resp.body, " (rate limited)"), wait)


def decode(name: str, resp: Response) -> Any:
    """The JSON document of an answer, whatever its status (errors come as JSON too).

    Raises:
        TransientError: a 429/5xx answer that is not JSON.
        ProviderError: any other answer that is not JSON, or a cut body.
    """
    if not resp.complete:
        raise ProviderError(
            http_error(name, resp.status, resp.body, f" with more than {MAX_BODY_BYTES} bytes")
        )
    try:
        return json.loads(resp.body)
    except (ValueError, RecursionError):  # not JSON, or nested too deeply to decode
        transient = is_transient(resp.status)
        kind = TransientError if transient else ProviderError
        problem = "" if transient else ", not JSON"
        raise kind(http_error(name, resp.status, resp.body, problem)) from None


def fail(name: str, resp: Response, message: str) -> ProviderError:
    """The error of a non-200 answer: transient for 429/5xx, else permanent."""
    kind = TransientError if is_transient(resp.status) else ProviderError
    return kind(f"{name} answered HTTP {resp.status}: {message}")


def number(value: Any, name: str) -> float | None:
    """A JSON value as a float; ``None`` for ``null`` and NaN ("no data").

    Raises:
        ProviderError: neither a number nor ``null`` (booleans are not numbers).
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProviderError(f"{name} answered a value that is not a number: {value!r:.80}")
    try:
        result = float(value)
    except OverflowError:
        raise ProviderError(f"{name} answered a number beyond float range") from None
    return None if math.isnan(result) else result


def last_value(values: list[Any], name: str) -> float | None:
    """The most recent value of a series in time order that is not ``null``/NaN."""
    for value in reversed(values):
        found = number(value, name)
        if found is not None:
            return found
    return None


def series_values(values: list[Any], name: str) -> list[float]:
    """A series' values with ``null`` kept as NaN, as the Prometheus provider keeps them."""
    return [math.nan if (v := number(value, name)) is None else v for value in values]


def several(name: str, count: int, hint: str) -> ProviderError:
    """The error of an answer with more than one series."""
    return ProviderError(
        f"{name} query returned {count} series; a metric query must return exactly one ({hint})"
    )


def shape(name: str, doc: Any) -> ProviderError:
    """The error of an answer without the documented shape."""
    text = json.dumps(doc)[:200]
    return ProviderError(f"{name} answered an unexpected result: {text}")
