"""The demo's log capture: the daemon's lines, as the daemon writes them, picked by canary."""

from __future__ import annotations

import json

import structlog

from canaryd.core.events import Event
from canaryd.demo import captured_logs, lines_about
from canaryd.logs import log_event


def test_a_scenarios_lines_are_picked_by_their_canary_field() -> None:
    """Only lines whose ``canary`` is the scenario's are its tail, whatever else they mention."""
    with captured_logs() as lines:
        log_event(Event("check.failed", "demo/web", "v2", "Progressing", 1.0, {"reason": "x"}))
        log_event(Event("check.failed", "demo/web-2", "v2", "Progressing", 1.0, {"note": "web"}))
        structlog.get_logger().info("daemon.started", canary="web")
        structlog.get_logger().info("daemon.stopped", reason='"canary":"web"')
    mine = lines_about([*lines, "not json"], "web")
    assert [json.loads(line)["event"] for line in mine] == ["check.failed", "daemon.started"]
    assert mine[0].startswith('{"canary":"web","namespace":"demo","revision":"v2",')


def test_captured_lines_are_compact_and_escaped() -> None:
    """A captured line is compact JSON with control characters escaped, as the daemon's."""
    with captured_logs() as lines:
        structlog.get_logger().warning("router.failed", canary="web", error="\x1b[2Kgone")
    (line,) = lines
    assert line == (
        '{"canary":"web","error":"\\u001b[2Kgone","event":"router.failed","level":"warning"}'
    )
