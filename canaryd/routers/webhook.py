"""The generic mesh-controller router: each decision is POSTed as (signed) JSON.

Payload (docs/design.md, "Outgoing calls"); ``match`` is present only when the rollout
has A/B rules::

    {"canary": "prod/web", "revision": "v2.4.1", "action": "route",
     "primaryWeight": 80, "canaryWeight": 20, "match": [{"headers": {...}}]}

A 2xx answer means the controller applied the decision. Every attempt carries the
request's ``Idempotency-Key`` (the same across retries) and, with ``secret_file``
or ``secret_env``, ``X-Canaryd-Signature`` (see :mod:`canaryd.http`).

Retries: network errors, 5xx, 408, 425 and 429 are retried with tenacity
(exponential backoff with jitter, at most :data:`ATTEMPTS` attempts); any other
4xx is the controller's final word and is not retried. A whole
:meth:`WebhookRouterClient.apply` never takes longer than ``cfg.timeout *``
:data:`BUDGET_FACTOR`.

Error messages (all :class:`~canaryd.errors.RouterError`; never the URL path or a secret)::

    router mesh: HTTP 503: overloaded (after 3 attempts)
    router mesh: http://10.0.0.5:8080/…: no answer within 10s (after 3 attempts)
    router mesh: no answer within 30s (after 3 attempts)          the apply budget ran out
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import anyio

from canaryd import retry
from canaryd.config.models import WebhookRouter, read_secret
from canaryd.errors import RouterError, SecretError, WebhookError
from canaryd.http import Answer, HttpTransport, post_json
from canaryd.routers import RouteRequest

ATTEMPTS = 3
"""How often one decision is posted before the router gives up."""

BUDGET_FACTOR = 3
"""One :meth:`WebhookRouterClient.apply` takes at most ``cfg.timeout * BUDGET_FACTOR`` seconds."""

BACKOFF_MULTIPLIER = 0.2
"""Seconds; base of the jittered exponential backoff between attempts."""

BACKOFF_MAX = 5.0
"""Seconds; the longest single wait between attempts."""

RETRY_STATUSES = frozenset({408, 425, 429})
"""4xx answers that mean "try again later"; every 5xx is retried as well."""


def route_payload(request: RouteRequest) -> dict[str, Any]:
    """Build the JSON body the mesh controller receives for ``request``."""
    payload: dict[str, Any] = {
        "canary": request.canary,
        "revision": request.revision,
        "action": request.action,
        "primaryWeight": request.primary_weight,
        "canaryWeight": request.canary_weight,
    }
    if request.match:
        payload["match"] = request.match
    return payload


def is_retryable(answer: Answer) -> bool:
    """True for answers worth another attempt: 5xx, 408, 425, 429."""
    return answer.status >= 500 or answer.status in RETRY_STATUSES


class _RetryableAnswerError(Exception):
    """Internal: carries a retryable non-2xx answer through tenacity."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(answer.describe())
        self.answer = answer


class WebhookRouterClient:
    """Posts route/promote/rollback decisions to a mesh controller.

    Attributes:
        name: how errors name this router (the config key; the URL's host by default).
        budget: seconds one :meth:`apply` may take at most, retries included.
    """

    def __init__(self, cfg: WebhookRouter, http: HttpTransport, *, name: str | None = None) -> None:
        """Keep the config and transport; read the signing secret once.

        Args:
            cfg: the router's config entry.
            http: the shared outgoing-HTTP transport (:func:`canaryd.http.make_transport`).
            name: the router's config key, for error messages.

        Raises:
            RouterError: the secret file cannot be read (or is readable by
                others), or the secret's environment variable is not set.
        """
        self.name = name or urlsplit(cfg.url).hostname or "webhook"
        self.budget = cfg.timeout * BUDGET_FACTOR
        self._cfg = cfg
        self._http = http
        try:
            self._secret = read_secret(cfg.secret_file, cfg.secret_env)
        except SecretError as exc:
            raise RouterError(f"router {self.name}: {exc}") from exc

    async def aclose(self) -> None:
        """Nothing to release: the router borrows the daemon's HTTP transport."""

    async def apply(self, request: RouteRequest) -> None:
        """Post the decision and return once the controller answers 2xx.

        Raises:
            RouterError: a non-2xx answer (after retries, for retryable ones), a
                network error on every attempt, or :attr:`budget` ran out; the
                message has the status and first bytes of the answer.
        """
        attempts = 0

        async def once() -> Answer:
            nonlocal attempts
            attempts += 1
            return await self._post(request)

        try:
            with anyio.fail_after(self.budget):
                answer = await self._retrying(once)
        except TimeoutError as exc:
            raise self._error(f"no answer within {self.budget:g}s", attempts) from exc
        except WebhookError as exc:
            raise self._error(str(exc), attempts) from exc
        except _RetryableAnswerError as exc:
            answer = exc.answer
        if not answer.ok:
            raise self._error(answer.describe(), attempts)

    async def _post(self, request: RouteRequest) -> Answer:
        answer = await post_json(
            self._http,
            self._cfg.url,
            route_payload(request),
            timeout=self._cfg.timeout,
            idempotency_key=request.idempotency_key,
            secret=self._secret,
            headers=self._cfg.headers,
        )
        if is_retryable(answer):
            raise _RetryableAnswerError(answer)
        return answer

    @staticmethod
    async def _retrying(once: Callable[[], Awaitable[Answer]]) -> Answer:
        retrying = retry.retrying(
            (WebhookError, _RetryableAnswerError),
            attempts=ATTEMPTS,
            wait=retry.random_exponential(BACKOFF_MULTIPLIER, BACKOFF_MAX),
        )
        return await retrying(once)

    def _error(self, reason: str, attempts: int) -> RouterError:
        return RouterError(f"router {self.name}: {reason} (after {retry.tries(attempts)})")
