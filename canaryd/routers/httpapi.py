"""JSON over HTTP for the API-driven routers (Caddy's admin API, Consul's HTTP API).

One request helper, :func:`call`, with the rules every router API call follows
(docs/routers.md, "Common behaviour"):

- **Never follows a redirect**: a 3xx answer is a failure naming where it
  points (docs/reliability.md, "No redirects followed").
- **Bounded**: each attempt has ``timeout`` seconds; answers are read up to
  :data:`canaryd.http.MAX_ANSWER_BYTES`.
- **Retries** (tenacity, jittered exponential backoff, :data:`ATTEMPTS` tries):
  connection errors, timeouts, 5xx, 408, 425 and 429. Any other answer is the
  API's final word and is returned to the router, which quotes it.
- **Errors** name the host only, never a path or a token.
"""

from __future__ import annotations

import json
from typing import Any

from canaryd import retry
from canaryd.errors import RouterError, WebhookError
from canaryd.http import USER_AGENT, Answer, HttpRequest, HttpTransport, answer_of

ATTEMPTS = 3
"""How often one API call is tried before the router gives up."""

BACKOFF_MULTIPLIER = 0.1
"""Seconds; base of the jittered exponential backoff between attempts."""

BACKOFF_MAX = 2.0
"""Seconds; the longest single wait between attempts."""

RETRY_STATUSES = frozenset({408, 425, 429})
"""4xx answers that mean "try again later"; every 5xx is retried as well."""


class _TransientError(Exception):
    """Internal: an attempt worth repeating (network failure or retryable status)."""

    def __init__(self, reason: str, answer: Answer | None = None) -> None:
        super().__init__(reason)
        self.answer = answer


async def call(
    http: HttpTransport,
    method: str,
    url: str,
    *,
    timeout: float,
    payload: Any = None,
    headers: dict[str, str] | None = None,
    retry_5xx: bool = True,
) -> Answer:
    """Send one JSON request with retries and return the final answer (any status).

    Args:
        http: the shared outgoing-HTTP transport.
        method: ``GET``, ``PUT``, ``PATCH``, ...
        url: the full URL.
        timeout: seconds per attempt.
        payload: JSON body (None: no body).
        headers: extra headers (e.g. a token; never logged or quoted).
        retry_5xx: False for APIs whose 5xx is a final answer (Caddy's
            "invalid config" is a 500).

    Raises:
        RouterError: no answer (connection failure or timeout) on every
            attempt; the message names the host and the attempts.
    """
    attempts = 0

    async def once() -> Answer:
        nonlocal attempts
        attempts += 1
        answer = await _send(http, method, url, timeout, payload, headers)
        if answer.status in RETRY_STATUSES or (retry_5xx and answer.status >= 500):
            raise _TransientError(answer.describe(), answer)
        return answer

    retrying = retry.retrying(
        _TransientError,
        attempts=ATTEMPTS,
        wait=retry.random_exponential(BACKOFF_MULTIPLIER, BACKOFF_MAX),
    )
    try:
        return await retrying(once)
    except _TransientError as exc:
        if exc.answer is not None:
            return exc.answer
        raise RouterError(f"{exc} (after {retry.tries(attempts)})") from exc


async def _send(
    http: HttpTransport,
    method: str,
    url: str,
    timeout: float,
    payload: Any,
    headers: dict[str, str] | None,
) -> Answer:
    hdrs = {"User-Agent": USER_AGENT, **(headers or {})}
    data = None
    if payload is not None:
        hdrs["Content-Type"] = "application/json"
        data = json.dumps(payload, separators=(",", ":")).encode()
    try:
        response = await http.send(HttpRequest(method, url, data, hdrs, timeout))
    except WebhookError as exc:  # no answer: names the host only
        raise _TransientError(str(exc)) from exc
    return answer_of(url, response)


def json_body(answer: Answer) -> Any:
    """The answer's body as JSON.

    Raises:
        RouterError: the body is not JSON (or was cut at the size limit).
    """
    try:
        return json.loads(answer.body)
    except ValueError as exc:
        raise RouterError(f"answer is not JSON: {answer.describe()}") from exc
