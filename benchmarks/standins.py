"""Stand-in servers for the scale benchmark, each run in its own process.

``prometheus``: answers ``/api/v1/query`` (GET or POST) with a one-series
instant vector. Queries whose text contains ``fail-`` (the benchmark gives
failing canaries targets named ``fail-…``) get ``--fail-value``, all others
``--value``; every answer is held back ``--latency-ms``.

``receiver``: the mesh controller the webhook router posts to. It answers 200
and records, for every ``rollback`` action, the canary, the revision and the
``time.time()`` at which the request arrived (the benchmark compares it with
the moment the failing tick's last metric came back, in the other process).

Both bind 127.0.0.1 on a free port, print ``PORT <n>`` on stdout, serve
``GET /stats`` (JSON), and stop when stdin closes (the benchmark exited, however
it died) or after ``--max-seconds``, whichever comes first::

    python benchmarks/standins.py prometheus --value 99.9 --fail-value 50 --latency-ms 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

VECTOR = (
    '{{"status":"success","data":{{"resultType":"vector","result":'
    '[{{"metric":{{}},"value":[{ts:.3f},"{value}"]}}]}}}}'
)


@dataclass
class PromState:
    """What the stand-in Prometheus answers, and how many queries it saw."""

    ok_body: bytes
    fail_body: bytes
    latency: float
    queries: int = 0


@dataclass
class ReceiverState:
    """Requests seen by the stand-in mesh controller."""

    requests: int = 0
    actions: dict[str, int] = field(default_factory=dict)
    rollbacks: list[tuple[str, str, float]] = field(default_factory=list)


def vector_body(value: float) -> bytes:
    """A Prometheus instant-vector answer holding one sample of ``value``."""
    return VECTOR.format(ts=time.time(), value=repr(float(value))).encode()


def prometheus_app(state: PromState) -> web.Application:
    """The stand-in Prometheus: ``/api/v1/query`` and ``/stats``."""

    async def query(request: web.Request) -> web.Response:
        body = await request.read() if request.can_read_body else b""
        failing = b"fail-" in body or "fail-" in request.query_string
        state.queries += 1
        if state.latency > 0:
            await asyncio.sleep(state.latency)
        return web.Response(
            body=state.fail_body if failing else state.ok_body, content_type="application/json"
        )

    async def stats(_: web.Request) -> web.Response:
        return web.json_response({"queries": state.queries})

    app = web.Application()
    app.router.add_route("*", "/api/v1/query", query)
    app.router.add_get("/stats", stats)
    return app


def receiver_app(state: ReceiverState) -> web.Application:
    """The stand-in mesh controller: records rollbacks, answers 200 to anything."""

    async def anything(request: web.Request) -> web.Response:
        body = await request.read()
        arrived = time.time()
        state.requests += 1
        try:
            doc: Any = json.loads(body)
        except ValueError:
            doc = {}
        action = str(doc.get("action", "?")) if isinstance(doc, dict) else "?"
        state.actions[action] = state.actions.get(action, 0) + 1
        if action == "rollback":
            state.rollbacks.append((str(doc.get("canary")), str(doc.get("revision")), arrived))
        return web.Response(text="ok")

    async def stats(_: web.Request) -> web.Response:
        return web.json_response(
            {"requests": state.requests, "actions": state.actions, "rollbacks": state.rollbacks}
        )

    app = web.Application()
    app.router.add_get("/stats", stats)
    app.router.add_route("*", "/{tail:.*}", anything)
    return app


async def _stdin_closed() -> None:
    """Return when stdin reaches end of file (the parent closed it or died)."""
    loop = asyncio.get_running_loop()
    closed = loop.create_future()

    def watch() -> None:  # a daemon thread: never holds up the process's exit
        sys.stdin.buffer.read()

        def close() -> None:
            if not closed.done():
                closed.set_result(None)

        loop.call_soon_threadsafe(close)

    threading.Thread(target=watch, daemon=True).start()
    await closed


async def serve(app: web.Application, max_seconds: float) -> None:
    """Serve ``app`` on 127.0.0.1 until stdin closes or ``max_seconds`` pass."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    port = runner.addresses[0][1]
    print(f"PORT {port}", flush=True)
    try:
        await asyncio.wait_for(_stdin_closed(), timeout=max_seconds)
    except TimeoutError:
        pass
    finally:
        await runner.cleanup()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line of the stand-ins."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("role", choices=["prometheus", "receiver"])
    p.add_argument("--value", type=float, default=99.9, help="answer of passing queries")
    p.add_argument("--fail-value", type=float, default=50.0, help="answer of fail-… queries")
    p.add_argument("--latency-ms", type=float, default=0.0, help="hold each answer back")
    p.add_argument("--max-seconds", type=float, default=900.0, help="stop after this long")
    p.add_argument("--uvloop", action="store_true", help="run on uvloop")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run one stand-in until stdin closes."""
    args = parse_args(argv)
    if args.role == "prometheus":
        state = PromState(
            vector_body(args.value), vector_body(args.fail_value), args.latency_ms / 1000
        )
        app = prometheus_app(state)
    else:
        app = receiver_app(ReceiverState())
    if args.uvloop:
        import uvloop

        uvloop.run(serve(app, args.max_seconds))
    else:
        asyncio.run(serve(app, args.max_seconds))


if __name__ == "__main__":
    main()
