"""Caddy router: weighted_round_robin weights of one reverse_proxy handler, via the admin API.

The handler is found by its ``@id`` (``/id/<id>/...``) or by its config path
(``/config/apps/http/...``). One :meth:`CaddyAdmin.apply`:

1. ``GET <handler>/upstreams`` and find the primary's and canary's ``dial``
   addresses in it (their positions are the positions of the weights);
2. ``GET <handler>/load_balancing/selection_policy``; when it already holds the
   wanted weights nothing is sent (idempotent, no config reload);
3. ``PATCH <handler>/load_balancing/selection_policy`` with
   ``{"policy": "weighted_round_robin", "weights": [...]}`` (other upstreams get
   weight 0);
4. ``GET`` the policy again; anything but the weights sent is an error.

Caddy loads a changed config atomically: a config it refuses leaves the
previous one serving, and its error text is quoted. ``rollback`` sends primary
100 / canary 0 whatever the request says; ``promote`` applies the request's
weights after checking both upstreams exist (Caddy cannot change what an
upstream runs: the deploy pipeline redeploys the primary; docs/routers.md,
"Caddy"). Caddy's admin API answers 500 for a config it refuses, so 5xx is not
retried; connection failures and timeouts are (see :mod:`canaryd.routers.httpapi`).

Error messages (all :class:`~canaryd.errors.RouterError`)::

    caddy web: upstream 10.0.0.9:80 not among the handler's upstreams (10.0.0.1:80, 10.0.0.2:80)
    caddy web: HTTP 404: {"error":"unknown object ID 'web'"}
    caddy web: HTTP 500: {"error":"loading new config: ... weighted_round_robin requires ..."}
    caddy web: weights are [100, 0] after setting [80, 20]
    caddy web: http://127.0.0.1:2019/…: no answer within 5s (after 3 attempts)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import anyio

from canaryd.config.models import CaddyRouter
from canaryd.errors import RouterError
from canaryd.http import HttpTransport
from canaryd.routers import RouteRequest
from canaryd.routers.httpapi import call, json_body

BUDGET_FACTOR = 4
"""One :meth:`CaddyAdmin.apply` takes at most ``cfg.timeout * BUDGET_FACTOR`` seconds."""

POLICY = "weighted_round_robin"


class CaddyAdmin:
    """Sets primary/canary weights of a Caddy reverse_proxy through the admin API.

    Attributes:
        name: the handler, for error messages.
        budget: seconds one :meth:`apply` may take at most, retries included.
    """

    def __init__(self, cfg: CaddyRouter, http: HttpTransport) -> None:
        """Keep the config and the shared HTTP transport (no request is made)."""
        self._cfg = cfg
        self._http = http
        self.name = cfg.handler
        self.budget = cfg.timeout * BUDGET_FACTOR
        base = cfg.handler if cfg.handler.startswith("/config/") else f"/id/{cfg.handler}"
        self._handler_url = cfg.admin + base

    async def aclose(self) -> None:
        """Nothing to release: the router borrows the daemon's HTTP transport."""

    async def apply(self, request: RouteRequest) -> None:
        """Set and verify the weights for ``request`` (see the module docstring).

        Raises:
            RouterError: Caddy refused a request (its text is in the message),
                an upstream is missing, the read-back differs, or no answer.
        """
        primary, canary = request.primary_weight, request.canary_weight
        if request.action == "rollback":
            primary, canary = 100, 0
        with self._errors():
            await self._apply(primary, canary)

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Bound the block by :attr:`budget`; name this router in every RouterError.

        Raises:
            RouterError: the block failed or ran out of time.
        """
        try:
            with anyio.fail_after(self.budget):
                yield
        except TimeoutError as exc:
            raise RouterError(f"caddy {self.name}: no answer within {self.budget:g}s") from exc
        except RouterError as exc:
            raise RouterError(f"caddy {self.name}: {exc}") from exc

    async def read_weights(self) -> tuple[int, int]:
        """The (primary, canary) weights in force, read from the admin API.

        Raises:
            RouterError: an upstream is missing, the policy has no weights list,
                or the admin API did not answer.
        """
        with self._errors():
            dials = await self._upstreams()
            policy = await self._get(f"{self._handler_url}/load_balancing/selection_policy")
        weights = policy.get("weights") if isinstance(policy, dict) else None
        if (
            not isinstance(weights, list)
            or len(weights) != len(dials)
            or not all(isinstance(w, int) for w in weights)
        ):
            raise RouterError(f"caddy {self.name}: no weights for the upstreams: {policy!r:.200}")
        by_dial = dict(zip(dials, weights, strict=True))
        return int(by_dial.get(self._cfg.primary, 0)), int(by_dial.get(self._cfg.canary, 0))

    async def _apply(self, primary: int, canary: int) -> None:
        weights = self._weights(await self._upstreams(), primary, canary)
        wanted = {"policy": POLICY, "weights": weights}
        url = f"{self._handler_url}/load_balancing/selection_policy"
        if await self._get(url) == wanted:
            return
        answer = await call(self._http, "PATCH", url, **self._opts(wanted))
        if not answer.ok:
            raise RouterError(answer.describe())
        actual = await self._get(url)
        if actual != wanted:
            shown = actual.get("weights") if isinstance(actual, dict) else actual
            raise RouterError(f"weights are {shown} after setting {weights}")

    def _weights(self, dials: list[str], primary: int, canary: int) -> list[int]:
        """The weights list in upstream order: other upstreams get 0.

        Raises:
            RouterError: the primary or canary is not among the upstreams.
        """
        for dial in (self._cfg.primary, self._cfg.canary):
            if dial not in dials:
                have = ", ".join(dials) or "none"
                raise RouterError(f"upstream {dial} not among the handler's upstreams ({have})")
        by_dial = {self._cfg.primary: primary, self._cfg.canary: canary}
        return [by_dial.get(dial, 0) for dial in dials]

    async def _upstreams(self) -> list[str]:
        """The handler's upstream ``dial`` addresses, in order.

        Raises:
            RouterError: the handler is unknown or has no upstream list.
        """
        found = await self._get(f"{self._handler_url}/upstreams")
        if not isinstance(found, list):
            raise RouterError(f"handler has no upstreams list: {str(found)[:200]}")
        return [str(u.get("dial", "")) for u in found if isinstance(u, dict)]

    async def _get(self, url: str) -> Any:
        answer = await call(self._http, "GET", url, **self._opts(None))
        if not answer.ok:
            raise RouterError(answer.describe())
        return json_body(answer)

    def _opts(self, payload: Any) -> dict[str, Any]:
        return {"timeout": self._cfg.timeout, "payload": payload, "retry_5xx": False}
