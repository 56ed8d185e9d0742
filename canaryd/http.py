"""Outgoing HTTP: one seam, signed JSON posts, bounded answers.

Routers, webhooks and notifiers send every request through an :class:`HttpTransport`
(docs/design.md, "Seams"): one method, :meth:`HttpTransport.send`, that sends an
:class:`HttpRequest` and returns an :class:`HttpResponse`, plus ``aclose``. The daemon
uses :class:`AiohttpTransport` (one shared connection pool; created by
:func:`make_transport`); tests of logic use :class:`canaryd.testing.FakeHttp`.

The transport never follows a redirect: a 3xx answer is a failure naming the status and
the host it points to (docs/reliability.md, "No redirects followed"); it reads at most
:data:`MAX_ANSWER_BYTES` of an answer. :func:`post_json` is the one place a JSON post is
built, signed and sent.

Every outgoing request carries an ``Idempotency-Key`` and, when a secret is
configured, ``X-Canaryd-Signature: t=<unix>,v1=<hex>`` with
``v1 = HMAC-SHA256(secret, "<t>.<raw body>")`` (docs/design.md, "Outgoing calls").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, Self

import aiohttp
from pydantic import SecretStr
from yarl import URL

from canaryd import __version__
from canaryd.errors import WebhookError
from canaryd.redact import redact_url as redact_url

MAX_ANSWER_BYTES = 64 * 1024
"""How much of an answer's body canaryd reads at most (the rest is discarded)."""

BODY_PREVIEW_BYTES = 200
"""How much of an answer's body goes into events and logs."""

USER_AGENT = f"canaryd/{__version__}"


POOL_PER_HOST = 256
"""Connections per host: of the shared transport (routers, webhooks, notifiers) and of each
Prometheus provider's own pool. 10,000 canaries of 2 metrics at 10 s keep about 2,000
queries/s in flight against one Prometheus; providers queue their queries for a free
connection (the request timeout starts once they have one). 512 showed no consistent
gain at 10,000 canaries (benchmarks/README.md, round 3), and a real Prometheus evaluates 20
queries at a time by default (``--query.max-concurrency``): a bigger pool would only move
the queue into Prometheus, where it eats the request timeout."""


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One outgoing request.

    Attributes:
        method: ``GET``, ``POST``, ``PUT``, ``PATCH``, ...
        url: the full URL (may carry a secret: never logged as is).
        body: the exact bytes to send (None: no body).
        headers: request headers (``User-Agent`` is added by the transport).
        timeout: seconds for the whole exchange.
        verify_tls: False accepts any certificate (a webhook's ``disableTLS``).
    """

    method: str
    url: str
    body: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 30.0
    verify_tls: bool = True


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """What the server answered: status, headers and at most :data:`MAX_ANSWER_BYTES`."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class HttpTransport(Protocol):
    """The outgoing-HTTP seam of routers, webhooks and notifiers (docs/design.md, "Seams")."""

    async def send(self, request: HttpRequest) -> HttpResponse:
        """Send ``request`` once and return the answer, whatever its status.

        Implementations never follow redirects and read at most
        :data:`MAX_ANSWER_BYTES` of the body.

        Raises:
            WebhookError: no answer (connection failure, TLS failure or timeout);
                the message names the host only, never the full URL.
        """
        ...

    async def aclose(self) -> None:
        """Release connections; the transport is not used afterwards."""
        ...


class AiohttpTransport:
    """:class:`HttpTransport` over one aiohttp client session (one connection pool)."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        """Wrap ``session``; :meth:`aclose` closes it."""
        self._session = session

    async def __aenter__(self) -> Self:
        """Use as ``async with make_transport() as http:``."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the session."""
        await self.aclose()

    async def aclose(self) -> None:
        """Close the session and its connections."""
        await self._session.close()

    async def send(self, request: HttpRequest) -> HttpResponse:
        """Send once, no redirects followed, the answer read up to the bound."""
        url = request.url
        try:
            async with self._session.request(
                request.method,
                url,
                data=request.body,
                headers=dict(request.headers),
                timeout=aiohttp.ClientTimeout(total=request.timeout),
                ssl=request.verify_tls,
                allow_redirects=False,  # a 3xx is a failure: docs/reliability.md
            ) as resp:
                body = await resp.content.read(MAX_ANSWER_BYTES)
                return HttpResponse(resp.status, resp.headers.copy(), body)  # case-insensitive
        except TimeoutError as exc:
            raise WebhookError(f"{redact_url(url)}: no answer within {request.timeout:g}s") from exc
        except aiohttp.ClientError as exc:
            reason = str(exc).replace(url, redact_url(url))
            raise WebhookError(f"{redact_url(url)}: {type(exc).__name__}: {reason}") from exc


def make_session(limit: int = POOL_PER_HOST) -> aiohttp.ClientSession:
    """Create an aiohttp client session with canaryd's pool and defaults.

    Args:
        limit: connections per host. There is no total limit on purpose: a busy
            Prometheus must not make a rollback wait for a connection to the
            router, nor the router wait behind alerts to a slow chat service.
    """
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=limit)
    return aiohttp.ClientSession(
        connector=connector,
        headers={"User-Agent": USER_AGENT},
        timeout=aiohttp.ClientTimeout(total=30),
    )


def make_transport(limit: int = POOL_PER_HOST) -> AiohttpTransport:
    """Create the transport shared by all routers, webhooks and notifiers (one pool)."""
    return AiohttpTransport(make_session(limit))


def basic_auth(username: str, password: str) -> str:
    """The ``Authorization`` value of HTTP basic auth (providers' and routers' alike)."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def sign(secret: SecretStr, body: bytes, timestamp: int | None = None) -> str:
    """Return the ``X-Canaryd-Signature`` header value for ``body``."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.get_secret_value().encode(), f"{t}.".encode() + body, hashlib.sha256)
    return f"t={t},v1={mac.hexdigest()}"


def encode(payload: Any) -> bytes:
    """Serialise a payload as compact JSON bytes (the exact bytes that get signed)."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=False).encode()


@dataclass(frozen=True, slots=True)
class Answer:
    """What a receiver answered: status, the first bytes of its body, where it redirects.

    Attributes:
        location: for a 3xx, the scheme and host its ``Location`` points to
            (:func:`redirect_target`); empty otherwise.
    """

    status: int
    body: bytes
    location: str = ""

    @property
    def ok(self) -> bool:
        """Any 2xx is success; a 3xx is a failure (redirects are never followed)."""
        return 200 <= self.status < 300

    def describe(self) -> str:
        """``HTTP 503: <first bytes of body>`` for events and logs.

        A redirect names where it points instead: ``HTTP 302 redirect to
        https://sso.example/… (redirects are not followed)``.
        """
        if 300 <= self.status < 400:
            return describe_redirect(self.status, self.location)
        preview = self.body[:BODY_PREVIEW_BYTES].decode("utf-8", "replace").strip()
        return f"HTTP {self.status}: {preview}" if preview else f"HTTP {self.status}"


def redirect_target(url: str, location: str | None) -> str:
    """Scheme and host a redirect's ``Location`` points to, resolved against ``url``.

    The path and query are dropped (a sign-in redirect may carry tokens); an
    unparseable or missing ``Location`` is named as such.
    """
    if not location:
        return "no Location"
    try:
        target = str(URL(url).join(URL(location)))
    except ValueError:
        return "an unparseable Location"
    return redact_url(target)


def describe_redirect(status: int, target: str) -> str:
    """The failure reason of a 3xx answer (docs/reliability.md, "No redirects followed")."""
    return f"HTTP {status} redirect to {target or 'no Location'} (redirects are not followed)"


def answer_of(url: str, response: HttpResponse) -> Answer:
    """The :class:`Answer` of ``response`` to a request for ``url`` (redirects named)."""
    location = ""
    if 300 <= response.status < 400:
        location = redirect_target(url, response.headers.get("Location"))
    return Answer(response.status, response.body, location)


async def post_json(
    http: HttpTransport,
    url: str,
    payload: Any,
    *,
    timeout: float,
    idempotency_key: str,
    secret: SecretStr | None = None,
    headers: dict[str, str] | None = None,
    content_type: str = "application/json",
    verify_tls: bool = True,
) -> Answer:
    """POST ``payload`` as JSON through ``http`` and return the answer (any status).

    ``verify_tls=False`` (a webhook's ``disableTLS``) accepts any certificate.

    Raises:
        WebhookError: connection failure or timeout; the message names the
            host only, never the full URL (URLs of chat webhooks are secrets).
    """
    body = encode(payload)
    hdrs = {"Content-Type": content_type, "Idempotency-Key": idempotency_key}
    if headers:
        hdrs.update(headers)
    if secret is not None:
        hdrs["X-Canaryd-Signature"] = sign(secret, body)
    request = HttpRequest("POST", url, body, hdrs, timeout, verify_tls)
    return answer_of(url, await http.send(request))
