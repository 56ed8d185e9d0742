"""A local alert receiver: canaryd's generic ``webhook`` notifier posts here."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
from aiohttp import web


@dataclass
class AlertReceiver:
    """Records the JSON body of every alert it receives.

    Attributes:
        alerts: the bodies, in arrival order.
        url: where canaryd should post (set once serving).
    """

    alerts: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    def __post_init__(self) -> None:
        """Prepare the arrival signal."""
        self._arrived = anyio.Event()

    async def _handle(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
        except ValueError:
            return web.Response(status=400, text="not JSON")
        if isinstance(body, dict):
            self.alerts.append(body)
            self._arrived.set()
            self._arrived = anyio.Event()
        return web.Response(text="ok")

    def events(self) -> list[str]:
        """The ``event`` name of every alert received, in order."""
        return [str(a.get("event")) for a in self.alerts]

    async def wait_for(self, event: str, within: float) -> bool:
        """Wait until an alert for ``event`` arrived; False if ``within`` seconds pass first."""
        with anyio.move_on_after(within):
            while event not in self.events():
                await self._arrived.wait()
            return True
        return False


@contextlib.asynccontextmanager
async def run_receiver(port: int) -> AsyncIterator[AlertReceiver]:
    """Serve an :class:`AlertReceiver` on 127.0.0.1:``port`` until the block ends."""
    receiver = AlertReceiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", receiver._handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        receiver.url = f"http://127.0.0.1:{port}/alerts"
        yield receiver
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()
