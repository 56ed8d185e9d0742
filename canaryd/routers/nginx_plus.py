"""NGINX Plus router: server weights in an upstream through the NGINX Plus REST API.

Used when an ``nginx`` router sets ``api`` (e.g. ``http://127.0.0.1:8080/api/9``)
instead of ``file``. The upstream needs a shared-memory ``zone`` and the API
``write=on``. For each decision canaryd:

1. ``GET {api}/http/upstreams/{upstream}/servers`` and finds every configured
   primary and canary address among the servers (by their ``server`` field);
2. ``PATCH {api}/http/upstreams/{upstream}/servers/{id}`` with ``{"weight": w,
   "down": false}`` for the side that gets traffic, then ``{"down": true}`` for a
   side at 0 % (NGINX refuses weight 0), so the upstream never has every server
   down. Weights are proportional to the percents, as for the file
   (:func:`canaryd.routers.nginx.split_weights`);
3. reads the servers back and compares weight and ``down`` with what it set.

A PATCH is absolute, so repeating it is harmless: connection errors, timeouts
and 5xx are retried. If a PATCH is refused or the read-back differs, the servers
already changed get their previous weight and state back, and the error quotes
NGINX Plus's ``error.text`` and ``error.code``, e.g. ``nginx plus web: PATCH
server 3: HTTP 405: method disabled (MethodDisabled)``. API changes are lost on
a reload unless the upstream has a ``state`` file (see ``docs/routers.md``).
"""

from __future__ import annotations

import contextlib
from typing import Any
from urllib.parse import quote

import anyio

from canaryd.config import NginxRouter
from canaryd.errors import RouterError
from canaryd.http import HttpTransport
from canaryd.routers import RouteRequest
from canaryd.routers.files import api_auth, applied_within, preview, request_json
from canaryd.routers.nginx import BUDGET_FACTOR, split_weights

Setting = dict[str, Any]
"""What canaryd sets on one server: ``{"weight": int, "down": bool}``."""


def api_error(body: Any) -> str:
    """NGINX Plus's ``{"error": {"text", "code"}}`` answer as ``text (code)``."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        text, code = preview(str(error.get("text", ""))), preview(str(error.get("code", "")))
        return f"{text} ({code})" if code else text
    message = body.get("message") if isinstance(body, dict) else None
    return preview(str(message or body))


def plan(cfg: NginxRouter, primary: int, canary: int) -> list[tuple[str, Setting]]:
    """(address, setting) for every server, the side that gets traffic first.

    Raises:
        ValueError: the percents are not a split.
    """
    wp, wc = split_weights(primary, canary, len(cfg.primary), len(cfg.canary))
    sides = [(cfg.primary, wp), (cfg.canary, wc)]
    sides.sort(key=lambda side: side[1], reverse=True)
    return [
        (address, {"weight": weight, "down": False} if weight else {"down": True})
        for servers, weight in sides
        for address in servers
    ]


class NginxPlusRouter:
    """Moves traffic by setting server weights through the NGINX Plus API.

    Attributes:
        budget: seconds one :meth:`apply` may take at most.
    """

    def __init__(self, cfg: NginxRouter, http: HttpTransport) -> None:
        """Read the API password (``password_file``); nothing is sent yet.

        Raises:
            RouterError: the password file cannot be read or is readable by others.
        """
        self._cfg = cfg
        self._http = http
        self._base = (
            f"{(cfg.api or '').rstrip('/')}/http/upstreams/{quote(cfg.upstream, safe='')}/servers"
        )
        self._label = f"nginx plus {cfg.upstream}"
        self._auth = api_auth("nginx plus", cfg.username, cfg.password_file)
        self.budget = cfg.timeout * BUDGET_FACTOR

    async def aclose(self) -> None:
        """Nothing to release: the router borrows the daemon's HTTP transport."""

    async def apply(self, request: RouteRequest) -> None:
        """Set and read back the server weights for ``request``.

        Raises:
            RouterError: a server is not in the upstream, the API refused a change
                (its text quoted) or did not answer, or the read-back differs;
                servers already changed are then set back.
        """
        primary, canary = request.weights()
        try:
            steps = plan(self._cfg, primary, canary)
        except ValueError as exc:
            raise RouterError(f"{self._label}: {exc}") from exc
        with applied_within(self._label, self.budget):
            await self._apply(steps)

    async def _apply(self, steps: list[tuple[str, Setting]]) -> None:
        servers = await self._servers()
        done: list[tuple[int, Setting]] = []
        try:
            for address, setting in steps:
                server = servers[address]
                await self._patch(server["id"], setting)
                done.append((server["id"], {"weight": server["weight"], "down": server["down"]}))
            await self._verify(steps)
        except BaseException:
            with anyio.CancelScope(shield=True), anyio.move_on_after(self._cfg.timeout):
                for server_id, previous in reversed(done):
                    with contextlib.suppress(RouterError):  # the first error is reported
                        await self._patch(server_id, previous)
            raise

    async def _servers(self) -> dict[str, dict[str, Any]]:
        """The upstream's servers by address; every configured address must be there.

        Raises:
            RouterError: the API refused or a configured address is missing.
        """
        status, body = await request_json(
            "nginx plus", self._http, "GET", self._base, self._cfg.timeout, self._auth
        )
        if status != 200 or not isinstance(body, list):
            raise RouterError(f"{self._label}: GET servers: HTTP {status}: {api_error(body)}")
        servers = {
            s["server"]: {"id": s["id"], "weight": s.get("weight", 1), "down": s.get("down", False)}
            for s in body
            if isinstance(s, dict)
            and isinstance(s.get("server"), str)
            and isinstance(s.get("id"), int)
        }
        missing = [a for a in (*self._cfg.primary, *self._cfg.canary) if a not in servers]
        if missing:
            known = ", ".join(sorted(servers)) or "none"
            raise RouterError(
                f"{self._label}: no server {missing[0]} in the upstream (servers: {known})"
            )
        return servers

    async def _patch(self, server_id: int, setting: Setting) -> None:
        url = f"{self._base}/{server_id}"
        status, body = await request_json(
            "nginx plus", self._http, "PATCH", url, self._cfg.timeout, self._auth, setting
        )
        if status != 200:
            raise RouterError(
                f"{self._label}: PATCH server {server_id}: HTTP {status}: {api_error(body)}"
            )

    async def _verify(self, steps: list[tuple[str, Setting]]) -> None:
        servers = await self._servers()
        for address, setting in steps:
            shown = {key: servers[address][key] for key in setting}
            if shown != setting:
                raise RouterError(f"{self._label}: server {address} shows {shown} after {setting}")
