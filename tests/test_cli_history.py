"""``canaryd events`` and ``canaryd history``: times, outcomes, and history pieced from events."""

from __future__ import annotations

import json
import re

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cli_helpers import Cli, rollout_at_10
from cli_helpers import cli as cli

from canaryd.cli.views import rollouts_from_events

pytestmark = pytest.mark.anyio


async def test_events_are_listed_with_times_oldest_first(cli: Cli) -> None:
    """``canaryd events`` prints one line per event with its local time, the reason included."""
    await rollout_at_10(cli)
    assert (await cli("abort", "prod/web"))[0] == 0
    code, out, err = await cli("events", "prod/web")
    lines = out.splitlines()
    assert (code, err) == (0, "")
    assert lines[0].split()[2] == "rollout.started"
    assert lines[-1].split()[2] == "rollout.rolled_back"
    assert "reason=aborted by operator" in lines[-1]
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  ", line) for line in lines)
    assert "analysis.tick" not in out
    code, out, _ = await cli("events", "prod/web", "--ticks")
    assert code == 0 and "analysis.tick" in out


async def test_history_lists_past_rollouts_with_outcome_and_reason(cli: Cli) -> None:
    """``canaryd history`` shows each past rollout: revision, outcome, duration, checks, reason."""
    await rollout_at_10(cli)
    assert (await cli("abort", "prod/web"))[0] == 0
    code, out, err = await cli("history", "prod/web")
    assert (code, err) == (0, "")
    head, row = out.splitlines()[:2]
    assert head.split()[:6] == ["ID", "STARTED", "REVISION", "OUTCOME", "DURATION", "FAILED/CHECKS"]
    assert row.split()[3:5] == ["v2", "rolled_back"]
    assert "aborted by operator" in row


def test_history_from_events_when_the_daemon_has_no_history_api() -> None:
    """Without the history API, rollouts are pieced together from events: a rollout replaced
    before it ended is superseded; an ended one has its outcome, reason and checks."""
    events = [
        {"event": "rollout.rolled_back", "time": 5.0, "reason": "success 90 < min 99"},
        {"event": "check.failed", "time": 4.0},
        {"event": "analysis.tick", "time": 4.0},
        {"event": "rollout.started", "time": 3.0, "revision": "v3"},
        {"event": "analysis.tick", "time": 2.0},
        {"event": "rollout.started", "time": 1.0, "revision": "v2"},
    ]
    assert [
        (r["revision"], r["outcome"], r["reason"], r["checkCount"], r["failedCheckCount"])
        for r in rollouts_from_events(events)
    ] == [("v3", "rolled_back", "success 90 < min 99", 1, 1), ("v2", "superseded", None, 1, 0)]


ROLLOUT_EVENTS = [
    {"event": "rollout.started", "time": 1_700_000_000.0, "revision": "v3", "phase": "Progressing"},
    {"event": "rollout.promoted", "time": 1_700_000_090.0, "revision": "v3", "phase": "Succeeded"},
]


async def _answering(cli: Cli, routes: dict[str, web.Response]) -> TestServer:
    """A stand-in daemon answering ``routes`` (path -> response), 404 elsewhere."""

    async def answer(request: web.Request) -> web.Response:
        return routes.get(request.path, web.json_response({"error": "not found"}, status=404))

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", answer)
    server = TestServer(app)
    await server.start_server()
    cli.url = str(server.make_url(""))
    return server


async def test_events_of_one_rollout_come_from_the_history_api(cli: Cli) -> None:
    """``events --rollout ID`` reads that rollout (``GET .../rollouts/ID``) and lists its events."""
    path = "/api/v1/canaries/prod/web/rollouts/3f2a9c01"
    server = await _answering(cli, {path: web.json_response({"events": ROLLOUT_EVENTS})})
    try:
        code, out, err = await cli("events", "prod/web", "--rollout", "3f2a9c01")
    finally:
        await server.close()
    assert (code, err) == (0, "")
    assert [line.split()[2] for line in out.splitlines()] == ["rollout.started", "rollout.promoted"]


async def test_history_from_a_daemon_without_the_history_api(cli: Cli) -> None:
    """A daemon that answers 405 to ``GET .../rollouts`` gets its history from its events."""
    base = "/api/v1/canaries/prod/web"
    routes = {
        base + "/rollouts": web.json_response({"error": "method not allowed"}, status=405),
        base: web.json_response({"events": ROLLOUT_EVENTS}),
    }
    server = await _answering(cli, routes)
    try:
        code, out, err = await cli("history", "prod/web")
    finally:
        await server.close()
    assert (code, err) == (0, "")
    assert out.splitlines()[1].split()[3:6] == ["v3", "promoted", "1m30s"]


async def test_events_of_a_past_rollout_from_the_daemon(cli: Cli) -> None:
    """``events --rollout ID`` lists the events of that rollout only, as the daemon kept them."""
    await rollout_at_10(cli)
    first = json.loads((await cli("status", "prod/web", "--json"))[1])["rolloutId"]
    assert (await cli("abort", "prod/web"))[0] == 0
    assert (await cli("rollout", "prod/web", "--revision", "v3"))[0] == 0
    code, out, err = await cli("events", "prod/web", "--rollout", first)
    assert (code, err) == (0, "")
    assert {line.split()[3] for line in out.splitlines()} == {"v2"}
    assert out.splitlines()[-1].split()[2] == "rollout.rolled_back"
    code, out, err = await cli("history", "prod/web")
    assert [row.split()[0] for row in out.splitlines()[1:]][1] == first
    assert await cli("events", "prod/web", "--rollout", "nope") == (
        2,
        "",
        "canaryd: no rollout nope of prod/web (HTTP 404)\n",
    )
