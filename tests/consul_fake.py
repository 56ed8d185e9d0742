"""A fake Consul agent for config entries, built from Consul's documented HTTP API.

No Consul binary is installable here, so the ``consul`` router is tested against
this aiohttp app on 127.0.0.1. It follows Consul's documentation for
``/v1/config`` (Consul's own answers, as documented and as Consul's source
words them):

- ``GET /v1/config/:kind/:name``: 200 with the entry and its ``CreateIndex`` /
  ``ModifyIndex``; 404 ``Config entry not found for "<kind>" / "<name>"``.
- ``PUT /v1/config[?cas=N]``: the entry as JSON; answers ``true`` or ``false``.
  With ``cas=0`` the write succeeds only if no entry exists; with ``cas=N`` only
  if the entry's ``ModifyIndex`` is N. Every write raises the global index.
- Validation before storing (500 with Consul's message, nothing stored): split
  weights must add up to 100 (``the sum of all split weights must be 100, not
  80.000000``); the service's protocol must allow splitting (``discovery chain
  "web" uses a protocol "tcp" that does not permit advanced routing or
  splitting behavior``).
- ACLs: with :attr:`FakeConsul.token` set, a request without that
  ``X-Consul-Token`` gets 403 ``ACL not found``.
- ``?dc=``, ``?ns=`` and ``?partition=`` are recorded (:attr:`FakeConsul.queries`).

Test hooks: :attr:`FakeConsul.before_put` runs before each PUT is decided (to
change the entry concurrently); :attr:`FakeConsul.fail_next` answers the next
requests with the given status and Consul's ``No cluster leader``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class FakeConsul:
    """The fake's state, visible to tests.

    Attributes:
        entries: (kind, name) -> stored entry (with its indexes).
        index: Consul's raft index; every write raises it.
        token: the ACL token every request must carry (None: ACLs off).
        protocols: service -> protocol (default ``http``).
        before_put: called before each PUT is decided.
        fail_next: statuses to answer the next requests with.
        queries: the query parameters of every request, in order.
        puts: how many PUTs were decided.
    """

    entries: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    index: int = 10
    token: str | None = None
    protocols: dict[str, str] = field(default_factory=dict)
    before_put: Callable[[FakeConsul], None] | None = None
    fail_next: list[int] = field(default_factory=list)
    queries: list[dict[str, str]] = field(default_factory=list)
    puts: int = 0
    url: str = ""

    def store(self, entry: dict[str, Any]) -> None:
        """Write ``entry`` as another client would (no cas); raises the index."""
        self.index += 1
        key = (entry["Kind"], entry["Name"])
        created = self.entries.get(key, {}).get("CreateIndex", self.index)
        self.entries[key] = {**entry, "CreateIndex": created, "ModifyIndex": self.index}

    def splits(self, name: str = "web") -> list[dict[str, Any]]:
        """The stored splits of service-splitter ``name`` (KeyError: none)."""
        splits: list[dict[str, Any]] = self.entries[("service-splitter", name)]["Splits"]
        return splits

    def _validate(self, entry: dict[str, Any]) -> str | None:
        if entry.get("Kind") != "service-splitter":
            return None
        name = str(entry.get("Name", ""))
        protocol = self.protocols.get(name, "http")
        if protocol not in ("http", "http2", "grpc"):
            return (
                f'discovery chain "{name}" uses a protocol "{protocol}" that does not '
                "permit advanced routing or splitting behavior"
            )
        total = sum(round(float(s.get("Weight", 0)) * 100) for s in entry.get("Splits") or [])
        if total != 10000:
            return f"the sum of all split weights must be 100, not {total / 100:f}"
        return None

    async def _guard(self, request: web.Request) -> web.Response | None:
        self.queries.append(dict(request.query))
        if self.fail_next:
            return web.Response(status=self.fail_next.pop(0), text="No cluster leader")
        if self.token is not None and request.headers.get("X-Consul-Token") != self.token:
            return web.Response(status=403, text="ACL not found")
        return None

    async def get_entry(self, request: web.Request) -> web.Response:
        """``GET /v1/config/:kind/:name``."""
        if (refused := await self._guard(request)) is not None:
            return refused
        kind, name = request.match_info["kind"], request.match_info["name"]
        entry = self.entries.get((kind, name))
        if entry is None:
            return web.Response(status=404, text=f'Config entry not found for "{kind}" / "{name}"')
        return web.json_response(entry)

    async def put_entry(self, request: web.Request) -> web.Response:
        """``PUT /v1/config?cas=N``."""
        if (refused := await self._guard(request)) is not None:
            return refused
        try:
            entry = json.loads(await request.read())
            cas = int(request.query["cas"]) if "cas" in request.query else None
        except ValueError as exc:
            return web.Response(status=400, text=f"Request decoding failed: {exc}")
        if not isinstance(entry, dict):
            return web.Response(status=400, text="Request decoding failed: not an object")
        if self.before_put is not None:
            self.before_put(self)
        self.puts += 1
        if (problem := self._validate(entry)) is not None:
            return web.Response(status=500, text=problem)
        current = self.entries.get((str(entry.get("Kind")), str(entry.get("Name"))))
        if cas is not None and cas != (current["ModifyIndex"] if current else 0):
            return web.json_response(False)
        self.store(entry)
        return web.json_response(True)


@asynccontextmanager
async def running_consul(consul: FakeConsul | None = None) -> AsyncIterator[FakeConsul]:
    """Serve a :class:`FakeConsul` on 127.0.0.1; its ``url`` is set while the block runs."""
    fake = consul or FakeConsul()
    app = web.Application()
    app.router.add_get("/v1/config/{kind}/{name}", fake.get_entry)
    app.router.add_put("/v1/config", fake.put_entry)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield fake
    finally:
        await runner.cleanup()
