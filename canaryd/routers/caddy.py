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
100 / canary 0 whatever the request says. ``promote`` (``promotion: address``,
the default) first points the primary upstream at the canary's address
(``PATCH <handler>/upstreams/<i>`` with the canary's ``dial`` and the ``@id``
``<handler>-canaryd-primary``, which keeps identifying the primary once both
upstreams dial the same address), reads it back, then applies the request's
weights; a ``rollback`` while the primary dials the canary's address is refused
(the old version is no longer in Caddy). With ``promotion: verify`` ``promote``
applies the weights after checking both upstreams exist (docs/routers.md,
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
import re
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
        tag = re.sub(r"[^A-Za-z0-9_-]+", "-", cfg.handler).strip("-")
        self._primary_id = f"{tag}-canaryd-primary"

    async def aclose(self) -> None:
        """Nothing to release: the router borrows the daemon's HTTP transport."""

    async def apply(self, request: RouteRequest) -> None:
        """Set and verify the weights for ``request`` (see the module docstring).

        Raises:
            RouterError: Caddy refused a request (its text is in the message),
                an upstream is missing, the read-back differs, no answer, or a
                rollback after a promotion (the old version is gone from Caddy).
        """
        primary, canary = request.weights()
        with self._errors():
            if self._cfg.promotion == "address" and request.action != "route":
                await self._promotion(request)
            await self._apply(primary, canary)

    async def _promotion(self, request: RouteRequest) -> None:
        """Point the primary upstream at the canary's dial (promote), or refuse a
        rollback once it does (docs/routers.md, "Caddy").

        Raises:
            RouterError: Caddy refused the change, the read-back differs, or a
                rollback cannot restore the old version.
        """
        upstreams = await self._upstream_objects()
        p, _ = self._positions(upstreams)
        dial = upstreams[p].get("dial")
        if request.action == "rollback":
            if dial == self._cfg.canary:
                raise RouterError(
                    f"cannot roll back: the primary upstream already dials the canary's "
                    f"address {dial} (promoted); redeploy the old version to restore it"
                )
            return
        if dial == self._cfg.canary:
            return  # promoted already: idempotent
        changed = {**upstreams[p], "@id": self._primary_id, "dial": self._cfg.canary}
        url = f"{self._handler_url}/upstreams/{p}"
        answer = await call(self._http, "PATCH", url, **self._opts(changed))
        if not answer.ok:
            raise RouterError(answer.describe())
        now = await self._upstream_objects()
        shown = now[p].get("dial") if p < len(now) else None
        if shown != self._cfg.canary:
            raise RouterError(f"primary upstream dials {shown} after setting {self._cfg.canary}")

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
            upstreams = await self._upstream_objects()
            p, c = self._positions(upstreams)
            policy = await self._get(f"{self._handler_url}/load_balancing/selection_policy")
        weights = policy.get("weights") if isinstance(policy, dict) else None
        if (
            not isinstance(weights, list)
            or len(weights) != len(upstreams)
            or not all(isinstance(w, int) for w in weights)
        ):
            raise RouterError(f"caddy {self.name}: no weights for the upstreams: {policy!r:.200}")
        return int(weights[p]), int(weights[c])

    async def _apply(self, primary: int, canary: int) -> None:
        weights = self._weights(await self._upstream_objects(), primary, canary)
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

    def _weights(self, upstreams: list[dict[str, Any]], primary: int, canary: int) -> list[int]:
        """The weights list in upstream order: other upstreams get 0.

        Raises:
            RouterError: the primary or canary is not among the upstreams.
        """
        p, c = self._positions(upstreams)
        return [primary if i == p else canary if i == c else 0 for i in range(len(upstreams))]

    def _positions(self, upstreams: list[dict[str, Any]]) -> tuple[int, int]:
        """Positions of the primary upstream (the one tagged by a promotion, else the one
        dialling ``cfg.primary``) and of the canary upstream (dialling ``cfg.canary``).

        Raises:
            RouterError: the primary or canary is not among the upstreams.
        """
        dials = [str(u.get("dial", "")) for u in upstreams]
        tagged = [i for i, u in enumerate(upstreams) if u.get("@id") == self._primary_id]
        primary = tagged[0] if tagged else self._index(dials, self._cfg.primary, None)
        return primary, self._index(dials, self._cfg.canary, primary)

    @staticmethod
    def _index(dials: list[str], dial: str, skip: int | None) -> int:
        for i, found in enumerate(dials):
            if found == dial and i != skip:
                return i
        have = ", ".join(dials) or "none"
        raise RouterError(f"upstream {dial} not among the handler's upstreams ({have})")

    async def _upstream_objects(self) -> list[dict[str, Any]]:
        """The handler's upstreams, in order.

        Raises:
            RouterError: the handler is unknown or has no upstream list.
        """
        found = await self._get(f"{self._handler_url}/upstreams")
        if not isinstance(found, list):
            raise RouterError(f"handler has no upstreams list: {str(found)[:200]}")
        return [u for u in found if isinstance(u, dict)]

    async def _get(self, url: str) -> Any:
        answer = await call(self._http, "GET", url, **self._opts(None))
        if not answer.ok:
            raise RouterError(answer.describe())
        return json_body(answer)

    def _opts(self, payload: Any) -> dict[str, Any]:
        return {"timeout": self._cfg.timeout, "payload": payload, "retry_5xx": False}
