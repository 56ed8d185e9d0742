"""What every HTTP metrics provider shares: the request, its retries, its budget, its auth.

Each provider (Prometheus, Graphite, InfluxDB, web; Datadog, New Relic,
Dynatrace) builds its request and parses the answer; :class:`HTTPProvider` gives
it its :class:`Endpoint`, its counters and its closing, and the endpoint does the
rest, the same way for all of them (docs/providers.md, "Common behaviour"):

- Transient failures (connection errors, timeouts, and whatever the provider's
  parser raises as :class:`TransientError`, typically HTTP 429 and 5xx) are
  retried with exponential backoff and jitter. All attempts together stay
  within the caller's ``budget``: an attempt whose timeout would end after the
  budget is not started. Each attempt may take ``min(timeout, budget)``, so
  with a budget shorter than the provider's timeout there is a single attempt.
- Other failures are raised at once as :class:`~canaryd.errors.ProviderError`.
- Secrets are read from their files on every request (a rotated token is
  picked up without a restart) and scrubbed from every answer before any part
  of it reaches an error message.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, Self, TypeVar
from urllib.parse import urlencode

import structlog
from tenacity import RetryError
from yarl import URL

from canaryd import retry
from canaryd.errors import ProviderError, ResourceError
from canaryd.http import (
    BODY_PREVIEW_BYTES,
    USER_AGENT,
    basic_auth,
    describe_redirect,
    redact_url,
    redirect_target,
)
from canaryd.providers.headers import header_lines
from canaryd.providers.transport import (
    AnswerTimeoutError,
    BusyLoopError,
    OutOfResourcesError,
    Pool,
    PoolTimeoutError,
    Response,
    TLSError,
    TransportError,
)
from canaryd.redact import scrub_sent

RETRY_INITIAL_WAIT = 0.1
"""First backoff between attempts, in seconds; doubles each time, plus up to as much jitter."""

RETRY_MAX_WAIT = 2.0
"""Longest backoff between two attempts, in seconds."""

T = TypeVar("T")

FORM = b"application/x-www-form-urlencoded"
JSON = b"application/json"

log = structlog.get_logger()


class TransientError(ProviderError):
    """A failure worth another attempt (network, timeout, 429, 5xx)."""


class OwnTroubleError(TransientError):
    """canaryd could not send the request itself (no fd, no memory, no free connection,
    an event loop too busy to see the answer).

    Worth another attempt; if the last attempt meets it too, the query raises
    :class:`~canaryd.errors.ResourceError` and the check holds (docs/reliability.md).
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


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request of a query: ``path`` (query string included) and body."""

    path: str
    body: bytes = b""
    method: bytes = b"POST"
    content_type: bytes = FORM


@dataclass
class Endpoint:
    """A provider's server: sends requests, retries them within a budget, counts them.

    Attributes:
        name: the kind of server, in messages (``"graphite"``).
        address: its address as configured (redirect targets are resolved against it).
        where: its address without credentials, in messages.
        pool: the connections to it.
        timeout: seconds one attempt may take at most.
        headers: the request headers, auth included (read secret files; may
            raise ProviderError); called once per attempt unless ``static``.
        static: the headers never change (no secret files): built once.
        secret_headers: names (lower case) of headers whose values are secrets,
            scrubbed from answers like ``Authorization``.
        stats: counters, for ``/metrics``.
    """

    name: str
    address: str
    where: str
    pool: Pool
    timeout: float
    headers: Callable[[], dict[str, str]]
    static: bool = False
    secret_headers: frozenset[str] = frozenset()
    stats: ProviderStats = field(default_factory=ProviderStats)
    _head: tuple[dict[str, str], bytes] | None = None

    async def call(self, request: Request, budget: float, parse: Callable[[Response], T]) -> T:
        """Send ``request`` with retries on transient failures and ``parse`` the answer.

        ``parse`` gets the answer with the credentials scrubbed from its body and
        raises :class:`TransientError` for answers worth another attempt.

        Raises:
            ResourceError: the last attempt could not be made for canaryd's own trouble.
            ProviderError: permanent failure, or transient ones until the budget ran out.
        """
        return await self.retrying(lambda limit: self.attempt(request, limit, parse), budget)

    async def retrying(self, attempt: Callable[[float], Awaitable[T]], budget: float) -> T:
        """Run ``attempt(timeout)`` until it succeeds, fails for good, or the budget runs out.

        Raises:
            ResourceError: the last attempt could not be made for canaryd's own trouble.
            ProviderError: permanent failure, or transient ones until the budget ran out.
        """
        self.stats.queries += 1
        if budget <= 0:
            self.stats.failures += 1
            raise ProviderError(f"no time left to query {self.name} (budget {budget:g}s)")
        timeout = min(self.timeout, budget)
        started = time.monotonic()
        try:  # the first attempt without tenacity: most queries need no other (and it's costly)
            return await attempt(timeout)
        except TransientError as exc:
            first: TransientError | None = exc
        except ProviderError:
            self.stats.failures += 1
            raise
        left = budget - (time.monotonic() - started)
        retrying = retry.retrying(
            TransientError,
            # never starts an attempt whose timeout ends after the budget
            budget=left,
            attempt_timeout=timeout,
            wait=retry.jittered_exponential(RETRY_INITIAL_WAIT, RETRY_MAX_WAIT),
            reraise=False,
        )
        try:
            async for tried in retrying:
                with tried:
                    if first is not None:  # tenacity's attempt 1 is the one made above
                        failure, first = first, None
                        raise failure
                    self.stats.retries += 1
                    return await attempt(timeout)
        except RetryError as exc:
            self.stats.failures += 1
            n = exc.last_attempt.attempt_number
            last = exc.last_attempt.exception()
            kind = ResourceError if isinstance(last, OwnTroubleError) else ProviderError
            raise kind(
                f"gave up after {retry.tries(n)} in "
                f"{time.monotonic() - started:.1f}s (budget {budget:g}s): "
                f"{exc.last_attempt.exception()}"
            ) from exc.last_attempt.exception()
        except ProviderError:
            self.stats.failures += 1
            raise
        raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover

    async def attempt(self, request: Request, limit: float, parse: Callable[[Response], T]) -> T:
        """One HTTP request; classify its outcome.

        Raises:
            TransientError: worth retrying.
            ProviderError: not worth retrying.
        """
        self.stats.attempts += 1
        headers, head = self._head if self._head is not None else self._build_head()
        try:
            resp = await self.pool.post(
                request.path,
                request.body,
                timeout=limit,
                headers=head,
                method=request.method,
                content_type=request.content_type,
            )
        except PoolTimeoutError:
            raise OwnTroubleError(
                f"no connection to {self.name} came free within {limit:g}s"
            ) from None
        except OutOfResourcesError as exc:
            raise OwnTroubleError(f"canaryd could not open a connection: {exc}") from exc
        except BusyLoopError as exc:
            raise OwnTroubleError(f"no answer seen within {limit:g}s: {exc}") from exc
        except AnswerTimeoutError as exc:
            raise TransientError(f"{self.name} did not answer within {limit:g}s") from exc
        except TLSError as exc:
            # a certificate problem does not go away by asking again
            raise ProviderError(
                f"TLS error talking to {self.name} at {self.where}: {exc} (insecureSkipVerify: "
                "true turns verification off; use it only for a trusted self-signed endpoint)"
            ) from exc
        except TransportError as exc:
            raise TransientError(f"cannot reach {self.name} at {self.where}: {exc}") from exc
        if 300 <= resp.status < 400:  # never followed: docs/reliability.md
            target = redirect_target(self.address, resp.location)
            raise ProviderError(f"{self.name} answered {describe_redirect(resp.status, target)}")
        body = scrub_sent(resp.body, headers, self.secret_headers)
        return parse(dataclasses.replace(resp, body=body))  # rate-limit headers kept

    def _build_head(self) -> tuple[dict[str, str], bytes]:
        """The headers and their encoded lines (kept when ``static``)."""
        headers = self.headers()
        built = (headers, header_lines(headers))
        if self.static:
            self._head = built
        return built

    async def aclose(self) -> None:
        """Close the connections; queries in flight finish, new ones fail."""
        await self.pool.aclose()


def open_endpoint(
    name: str,
    address: str,
    headers: Callable[[], dict[str, str]],
    *,
    timeout: float,
    limit: int,
    max_body: int,
    insecure: bool = False,
    static: bool = False,
    secret_headers: frozenset[str] = frozenset(),
    accept: str = "application/json",
) -> Endpoint:
    """The :class:`Endpoint` of a provider's ``address`` (``http(s)://[user:pass@]host[/prefix]``).

    User info in the address becomes basic auth, unless ``headers`` set an
    ``Authorization`` of their own. ``insecure`` turns TLS verification off,
    with a warning in the log.
    """
    url = URL(address)
    if url.user is not None:
        pair = basic_auth(url.user or "", url.password or "")
        inner = headers
        headers = lambda: {"Authorization": pair, **inner()}  # noqa: E731
    where = redact_url(address)
    pool = Pool(
        str(url.with_user(None)),
        limit=limit,
        verify_tls=not insecure,
        max_body=max_body,
        head=f"User-Agent: {USER_AGENT}\r\nAccept: {accept}\r\n".encode(),
    )
    if insecure:
        log.warning("provider.tls_insecure", address=where)
    return Endpoint(name, address, where, pool, timeout, headers, static, secret_headers)


class HTTPSettings(Protocol):
    """The settings every HTTP provider's configuration has."""

    @property
    def address(self) -> str:
        """``http(s)://[user:pass@]host[/prefix]``."""
        ...

    @property
    def timeout(self) -> float:
        """Seconds one attempt may take at most."""
        ...

    @property
    def insecureSkipVerify(self) -> bool:  # noqa: N802  # the config's (Flagger's) name
        """Whether TLS verification is off."""
        ...


class HTTPProvider:
    """The shared part of an HTTP metrics provider: its endpoint, counters and closing.

    A subclass builds requests and parses answers, and sends them with
    ``self.endpoint.call``.

    Args:
        name: the kind of server, in messages (``"graphite"``).
        cfg: the provider's configuration.
        headers: the request headers (see :attr:`Endpoint.headers`).
        pool: connections to the server at most.
        max_body: answers longer than this are refused.
        static: the headers never change (no secret files): built once.
        secret_headers: names (lower case) of headers whose values are secrets.
        accept: the ``Accept`` header.

    Attributes:
        endpoint: the server's :class:`Endpoint`.
        stats: its counters, for ``/metrics``.
    """

    def __init__(
        self,
        name: str,
        cfg: HTTPSettings,
        headers: Callable[[], dict[str, str]],
        *,
        pool: int,
        max_body: int,
        static: bool = False,
        secret_headers: frozenset[str] = frozenset(),
        accept: str = "application/json",
    ) -> None:
        self.endpoint = open_endpoint(
            name,
            cfg.address,
            headers,
            timeout=cfg.timeout,
            limit=pool,
            max_body=max_body,
            insecure=cfg.insecureSkipVerify,
            static=static,
            secret_headers=secret_headers,
            accept=accept,
        )
        self.stats = self.endpoint.stats

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the provider's connections; queries in flight finish, new ones fail."""
        await self.endpoint.aclose()


def preview(body: bytes) -> str:
    """The first bytes of a body, printable, for error messages."""
    return body[:BODY_PREVIEW_BYTES].decode("utf-8", "replace").strip()


def http_error(name: str, status: int, body: bytes, problem: str = "") -> str:
    """``graphite answered HTTP 503, not JSON: <preview>`` style message."""
    shown = preview(body)
    return f"{name} answered HTTP {status}{problem}" + (f": {shown}" if shown else "")


def status_error(name: str, status: int, body: bytes, problem: str = "") -> ProviderError:
    """:func:`http_error`'s message as a :class:`TransientError` for 429 and 5xx, else permanent."""
    kind = TransientError if is_transient(status) else ProviderError
    return kind(http_error(name, status, body, problem))


def json_or_none(body: bytes) -> Any:
    """The JSON document in ``body``, or None when it is not JSON (or nested too deeply)."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def is_transient(status: int) -> bool:
    """HTTP statuses worth another attempt: 429 (rate limited) and 5xx."""
    return status == 429 or status >= 500


def query_string(params: list[tuple[str, str]]) -> str:
    """``?a=1&b=2``, percent-encoded (``""`` without parameters)."""
    return "?" + urlencode(params) if params else ""
