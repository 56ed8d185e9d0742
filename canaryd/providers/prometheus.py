"""Prometheus HTTP API provider (Prometheus, Thanos, Mimir, VictoriaMetrics).

What a query's answer means for a metric check:

- a scalar, or an instant vector with exactly one series: its value;
- an empty vector, or a NaN value (e.g. ``0/0`` when there was no traffic):
  ``None``, "no data", which fails the check unless ``onNoData`` says otherwise;
- ``+Inf``/``-Inf`` are values, not "no data": ``histogram_quantile`` answers
  ``+Inf`` when the quantile falls into the ``+Inf`` bucket, which is a real
  (very slow) latency that should fail a ``max`` bound;
- several series, a range vector or a string: :class:`ProviderError`.

Transient failures (connection errors, timeouts, HTTP 429 and 5xx, except
Prometheus's own ``bad_data``/``execution`` errors) are retried with
exponential backoff and jitter. All attempts together stay within the caller's
``budget``: an attempt whose timeout would end after the budget is not started.
Each attempt may take ``min(timeout, budget)``, so with a budget shorter than
the provider's timeout there is a single attempt. Other failures (HTTP 4xx, a
PromQL error, an answer that is not Prometheus JSON) are raised at once. Error
messages carry Prometheus's own error text and the first bytes of unexpected
bodies, never a credential.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode

import structlog
from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception_type,
    stop_after_delay,
    stop_before_delay,
    wait_exponential,
    wait_random,
)
from yarl import URL

from canaryd.config import PrometheusProvider, read_secret
from canaryd.errors import ProviderError, ResourceError
from canaryd.http import (
    BODY_PREVIEW_BYTES,
    POOL_PER_HOST,
    USER_AGENT,
    describe_redirect,
    redact_url,
    redirect_target,
)
from canaryd.providers.transport import (
    AnswerTimeoutError,
    BusyLoopError,
    OutOfResourcesError,
    Pool,
    PoolTimeoutError,
    TLSError,
    TransportError,
)

MAX_BODY_BYTES = 1024 * 1024
"""Answers larger than this are refused (a metric query answers a few hundred bytes)."""

BODIES_KEPT = 65536
"""Encoded instant-query bodies a provider keeps (two per canary at 10,000 canaries: ~4 MB)."""

RETRY_INITIAL_WAIT = 0.1
"""First backoff between attempts, in seconds; doubles each time, plus up to as much jitter."""

RETRY_MAX_WAIT = 2.0
"""Longest backoff between two attempts, in seconds."""

_PERMANENT_ERROR_TYPES = frozenset({"bad_data", "execution"})
"""Prometheus errors that say the query itself is wrong: retrying cannot help."""

log = structlog.get_logger()

T = TypeVar("T")


class _TransientError(ProviderError):
    """A failure worth another attempt (network, timeout, 429, 5xx)."""


class _OwnTroubleError(_TransientError):
    """canaryd could not send the request itself (no fd, no memory, no free connection).

    Worth another attempt; if the last attempt meets it too, the query raises
    :class:`~canaryd.errors.ResourceError` and the check holds.
    """


@dataclass(slots=True)
class ProviderStats:
    """Counters of one provider, for ``/metrics``.

    Attributes:
        queries: queries asked by callers (instant and range).
        attempts: HTTP requests sent, retries included.
        retries: attempts after the first one of a query.
        failures: queries that ended with a ProviderError.
    """

    queries: int = 0
    attempts: int = 0
    retries: int = 0
    failures: int = 0


class Prometheus:
    """A :class:`~canaryd.providers.MetricsProvider` backed by the Prometheus HTTP API.

    Queries go over the provider's own keep-alive connections
    (:mod:`canaryd.providers.transport`), at most ``pool`` at once; close the
    provider with :meth:`aclose` (or use it as an async context manager).

    Args:
        cfg: the provider's configuration (address, timeout, auth, TLS).
        pool: connections to Prometheus at most; further queries wait for one
            (the request's timeout starts once they have it).
    """

    def __init__(self, cfg: PrometheusProvider, *, pool: int = POOL_PER_HOST) -> None:
        self._cfg = cfg
        self._where = redact_url(cfg.address)
        self.stats = ProviderStats()
        url = URL(cfg.address)
        self._url_auth = (
            _basic(url.user or "", url.password or "") if url.user is not None else None
        )
        self._pool = Pool(
            str(url.with_user(None)),
            limit=pool,
            verify_tls=not cfg.insecureSkipVerify,
            max_body=MAX_BODY_BYTES,
            head=f"User-Agent: {USER_AGENT}\r\nAccept: application/json\r\n".encode(),
        )
        # Without secret files the request headers never change: built once, not per query.
        self._bodies: dict[str, bytes] = {}
        self._static_headers = None if cfg.bearer_token_file or cfg.username else self._headers()
        self._static_head = (
            None if self._static_headers is None else _header_lines(self._static_headers)
        )
        if cfg.insecureSkipVerify:
            log.warning("provider.tls_insecure", address=self._where)

    async def __aenter__(self) -> Prometheus:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the provider's connections; queries in flight finish, new ones fail."""
        await self._pool.aclose()

    async def query(self, query: str, *, budget: float) -> float | None:
        """Run an instant query and return its single value.

        Args:
            query: PromQL expression (already rendered).
            budget: seconds all attempts together may take.

        Returns:
            The value, or ``None`` when there is no data (empty vector or NaN).

        Raises:
            ResourceError: canaryd itself could not send it (out of file descriptors,
                memory, or a free connection of its own pool).
            ProviderError: the request failed for good, Prometheus rejected the
                query, or the answer is not exactly one scalar or series.
        """
        body = self._bodies.get(query)
        if body is None:  # a canary asks the same queries every tick: encoded once
            if len(self._bodies) >= BODIES_KEPT:
                self._bodies.clear()
            body = self._bodies[query] = _form_body({"query": query})
        return await self._call("/api/v1/query", body, budget, _instant_value)

    async def query_range(
        self, query: str, *, start: float, end: float, step: float, budget: float
    ) -> list[float]:
        """Run a range query over one series and return its values in time order.

        Args:
            query: PromQL expression (already rendered).
            start: first evaluation time, unix seconds.
            end: last evaluation time, unix seconds.
            step: seconds between evaluations.
            budget: seconds all attempts together may take.

        Returns:
            The series' values (NaN kept as ``float('nan')``); ``[]`` when no series.

        Raises:
            ResourceError: canaryd itself could not send it (out of file descriptors,
                memory, or a free connection of its own pool).
            ProviderError: the request failed for good, Prometheus rejected the
                query, or the answer holds more than one series.
        """
        form = {"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
        return await self._call("/api/v1/query_range", _form_body(form), budget, _range_values)

    async def _call(self, path: str, body: bytes, budget: float, parse: Callable[[Any], T]) -> T:
        """POST a form body with retries on transient failures; ``parse`` the answer's ``data``.

        Raises:
            ResourceError: the last attempt could not be sent for want of canaryd's own
                resources (file descriptors, memory, a free connection).
            ProviderError: permanent failure, or transient ones until the budget ran out.
        """
        self.stats.queries += 1
        if budget <= 0:
            self.stats.failures += 1
            raise ProviderError(f"no time left to query prometheus (budget {budget:g}s)")
        timeout = min(self._cfg.timeout, budget)
        started = time.monotonic()
        try:  # the first attempt without tenacity: most queries need no other (and it's costly)
            return parse(await self._attempt(path, body, timeout))
        except _TransientError as exc:
            first: _TransientError | None = exc
        except ProviderError:
            self.stats.failures += 1
            raise
        left = budget - (time.monotonic() - started)
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_TransientError),
            # the second condition: never start an attempt whose timeout ends after the budget
            stop=stop_after_delay(left) | stop_before_delay(left - timeout),
            wait=wait_exponential(multiplier=RETRY_INITIAL_WAIT, max=RETRY_MAX_WAIT)
            + wait_random(0, RETRY_INITIAL_WAIT),
        )
        try:
            async for attempt in retrying:
                with attempt:
                    if first is not None:  # tenacity's attempt 1 is the one made above
                        failure, first = first, None
                        raise failure
                    self.stats.retries += 1
                    return parse(await self._attempt(path, body, timeout))
        except RetryError as exc:
            self.stats.failures += 1
            n = exc.last_attempt.attempt_number
            last = exc.last_attempt.exception()
            kind = ResourceError if isinstance(last, _OwnTroubleError) else ProviderError
            raise kind(
                f"gave up after {n} attempt{'s' if n > 1 else ''} in "
                f"{time.monotonic() - started:.1f}s (budget {budget:g}s): "
                f"{exc.last_attempt.exception()}"
            ) from exc.last_attempt.exception()
        except ProviderError:
            self.stats.failures += 1
            raise
        raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover

    async def _attempt(self, path: str, body: bytes, limit: float) -> Any:
        """One HTTP request; classify its outcome.

        Raises:
            _TransientError: worth retrying.
            ProviderError: not worth retrying.
        """
        self.stats.attempts += 1
        headers, head = self._static_headers, self._static_head
        if headers is None or head is None:
            headers = self._headers()
            head = _header_lines(headers)
        try:
            resp = await self._pool.post(path, body, timeout=limit, headers=head)
        except PoolTimeoutError:
            raise _OwnTroubleError(
                f"no connection to prometheus came free within {limit:g}s"
            ) from None
        except OutOfResourcesError as exc:
            raise _OwnTroubleError(f"canaryd could not open a connection: {exc}") from exc
        except BusyLoopError as exc:
            raise _OwnTroubleError(f"no answer seen within {limit:g}s: {exc}") from exc
        except AnswerTimeoutError as exc:
            raise _TransientError(f"prometheus did not answer within {limit:g}s") from exc
        except TLSError as exc:
            # a certificate problem does not go away by asking again
            raise ProviderError(
                f"TLS error talking to prometheus at {self._where}: {exc} (insecureSkipVerify: "
                "true turns verification off; use it only for a trusted self-signed endpoint)"
            ) from exc
        except TransportError as exc:
            raise _TransientError(f"cannot reach prometheus at {self._where}: {exc}") from exc
        if 300 <= resp.status < 400:  # never followed: docs/reliability.md
            target = redirect_target(self._cfg.address, resp.location)
            raise ProviderError(f"prometheus answered {describe_redirect(resp.status, target)}")
        return _answer_data(resp.status, _scrub(resp.body, headers), resp.complete)

    def _headers(self) -> dict[str, str]:
        """Request headers: configured extras plus auth (secrets read on every call).

        Raises:
            ProviderError: a secret file cannot be read, or both kinds of auth are set.
        """
        cfg = self._cfg
        headers = dict(cfg.headers)
        if self._url_auth is not None:
            headers["Authorization"] = self._url_auth
        if cfg.bearer_token_file and cfg.username:
            raise ProviderError("set bearer_token_file or username/password_file, not both")
        try:
            if cfg.bearer_token_file:
                token = read_secret(cfg.bearer_token_file)
                headers["Authorization"] = f"Bearer {token.get_secret_value() if token else ''}"
            elif cfg.username:
                password = read_secret(cfg.password_file)
                secret = password.get_secret_value() if password else ""
                headers["Authorization"] = _basic(cfg.username, secret)
        except ValueError as exc:
            raise ProviderError(str(exc)) from exc
        return headers


def _basic(username: str, password: str) -> str:
    """The ``Authorization`` value of HTTP basic auth."""
    pair = f"{username}:{password}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def _header_lines(headers: dict[str, str]) -> bytes:
    """``Name: value\\r\\n`` lines; a header that would split the request is refused.

    Raises:
        ProviderError: a name or value holds a line break or is not Latin-1 (a secret
            file with one, say); the message names the header, never its value.
    """
    lines = []
    for name, value in headers.items():
        line = f"{name}: {value}\r\n"
        if any(c in name for c in "\r\n:") or "\r" in value or "\n" in value:
            raise ProviderError(f"header {name.strip()!r} holds a line break; not sent")
        try:
            lines.append(line.encode("latin-1"))
        except UnicodeEncodeError:
            raise ProviderError(f"header {name!r} is not Latin-1 text; not sent") from None
    return b"".join(lines)


_FORM_QUOTED = [
    chr(c)
    if chr(c) in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~"
    else "+"
    if c == 32
    else f"%{c:02X}"
    for c in range(128)
]
"""``quote_plus``'s form of every ASCII character (a full table: misses are slow)."""


def _form_body(form: dict[str, str]) -> bytes:
    """``urlencode(form).encode()``, with one ``str.translate`` per ASCII value.

    ``urlencode`` quotes byte by byte in Python (3 % of a saturated daemon's CPU);
    the table gives the same escapes. Keys are plain names; values with
    non-ASCII characters take ``urlencode``'s way.
    """
    if not all(v.isascii() for v in form.values()):
        return urlencode(form).encode()
    return "&".join(f"{k}={v.translate(_FORM_QUOTED)}" for k, v in form.items()).encode()


def _scrub(body: bytes, headers: dict[str, str]) -> bytes:
    """The body without the credentials just sent: a proxy's error page may echo them.

    Done on the whole body, before any preview is cut from it, so that no part
    of a secret survives at the cut.
    """
    scheme, _, value = headers.get("Authorization", "").partition(" ")
    found = [value]
    if scheme == "Basic":
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            pair = base64.b64decode(value, validate=True).decode()
            found += [pair, pair.partition(":")[2]]
    for secret in sorted(found, key=len, reverse=True):
        if len(secret) >= 4:
            body = body.replace(secret.encode(), b"***")
    return body


def _preview(body: bytes) -> str:
    """The first bytes of a body, printable, for error messages."""
    return body[:BODY_PREVIEW_BYTES].decode("utf-8", "replace").strip()


def _http_error(status: int, body: bytes, problem: str) -> str:
    """``prometheus answered HTTP 503, not JSON: <preview>`` style message."""
    preview = _preview(body)
    return f"prometheus answered HTTP {status}{problem}" + (f": {preview}" if preview else "")


def _answer_data(status: int, body: bytes, complete: bool) -> Any:
    """Decode one answer and return its ``data``.

    Raises:
        _TransientError: HTTP 429/5xx without a permanent Prometheus error.
        ProviderError: any other failure.
    """
    retryable = status == 429 or status >= 500
    if not complete:
        raise ProviderError(_http_error(status, body, f" with more than {MAX_BODY_BYTES} bytes"))
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, or nested too deeply to decode
        doc = None
    if not isinstance(doc, dict) or doc.get("status") not in ("success", "error"):
        kind = _TransientError if retryable else ProviderError
        raise kind(_http_error(status, body, "" if retryable else ", not Prometheus JSON"))
    if doc["status"] == "error":
        error_type = str(doc.get("errorType", "error"))
        message = f"prometheus {error_type}: {doc.get('error', '')}"
        permanent = error_type in _PERMANENT_ERROR_TYPES or not retryable
        raise (ProviderError if permanent else _TransientError)(message)
    if status != 200:
        kind = _TransientError if retryable else ProviderError
        raise kind(_http_error(status, body, ""))
    return doc.get("data")


def _shape_error(data: Any) -> ProviderError:
    """The error for an answer whose ``data`` does not have the documented shape."""
    return ProviderError(
        f"prometheus answered an unexpected result: {_preview(json.dumps(data).encode())}"
    )


def _number(sample: Any) -> float:
    """The float of a ``[timestamp, "value"]`` pair (``"NaN"``, ``"+Inf"`` included).

    Raises:
        ProviderError: not a two-item list, or its value is neither a number nor a
            numeric string (a bare string such as ``"12"`` would index to ``"2"``; a
            boolean is not a number; an integer beyond float range overflows).
    """
    value = sample[1] if isinstance(sample, list) and len(sample) == 2 else None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _shape_error(sample)
    try:
        return float(value)
    except (ValueError, OverflowError) as exc:
        raise _shape_error(sample) from exc


def _instant_value(data: Any) -> float | None:
    """The single value of an instant query's ``data``, or ``None`` for no data.

    Raises:
        ProviderError: not a scalar or single-series vector.
    """
    if not isinstance(data, dict):
        raise _shape_error(data)
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        value = _number(result)
    elif kind == "vector" and isinstance(result, list):
        if not result:
            return None
        if len(result) > 1:
            raise ProviderError(
                f"query returned {len(result)} series; a metric query must return "
                "exactly one (aggregate with sum() or similar)"
            )
        value = _number(result[0].get("value") if isinstance(result[0], dict) else None)
    elif kind == "matrix":
        raise ProviderError(
            "query returned a range vector; a metric query must return a scalar or an "
            "instant vector (wrap the [range] selector in a function such as rate())"
        )
    elif kind == "string":
        raise ProviderError("query returned a string; a metric query must return a number")
    else:
        raise _shape_error(data)
    return None if math.isnan(value) else value


def _range_values(data: Any) -> list[float]:
    """The values of a range query's single series (``[]`` when there is none).

    Raises:
        ProviderError: more than one series, or not a matrix.
    """
    if not isinstance(data, dict) or data.get("resultType") != "matrix":
        raise _shape_error(data)
    result = data.get("result")
    if not isinstance(result, list):
        raise _shape_error(data)
    if not result:
        return []
    if len(result) > 1:
        raise ProviderError(
            f"range query returned {len(result)} series; a metric query must return "
            "exactly one (aggregate with sum() or similar)"
        )
    values = result[0].get("values") if isinstance(result[0], dict) else None
    if not isinstance(values, list):
        raise _shape_error(data)
    return [_number(sample) for sample in values]
