"""The demo's log capture: the daemon's lines, as the daemon writes them, picked by canary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import structlog

from canaryd import redact
from canaryd.core.events import Event
from canaryd.demo import captured_logs, lines_about
from canaryd.demo.procs import log_tail
from canaryd.logs import log_event

SECRET = "demo-hook-s3cret"
"""A secret canaryd read (a webhook's), protected as the daemon protects what it reads."""


@pytest.fixture
def protected(monkeypatch: pytest.MonkeyPatch) -> str:
    """:data:`SECRET`, protected for this test only."""
    monkeypatch.setattr(redact, "_SECRETS", {})
    redact.protect(SECRET)
    return SECRET


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


def test_captured_lines_are_scrubbed(protected: str) -> None:
    """A captured line has protected secrets and credential-looking values replaced by ***."""
    with captured_logs() as lines:
        log_event(
            Event("check.failed", "demo/web", "v2", "Progressing", 1.0, {"reason": protected})
        )
        structlog.get_logger().warning(
            "router.failed", canary="web", error="Authorization: Bearer abc123"
        )
    assert [json.loads(line).get("reason", json.loads(line).get("error")) for line in lines] == [
        "***",
        "Authorization: ***",
    ]


def test_a_childs_log_tail_is_scrubbed_and_escaped(tmp_path: Path, protected: str) -> None:
    """A child's log tail, printed when the demo fails, is scrubbed and control-escaped."""
    log = tmp_path / "proxy.log"
    lines = [f"line {i}" for i in range(20)]
    lines[-3:] = [f"hook {protected} said no", "GET / Authorization: Bearer abc123", "\x1b[2Kok\r!"]
    log.write_text("\n".join(lines) + "\n")

    assert log_tail(log, lines=4).split("\n") == [
        "line 16",
        "hook *** said no",
        "GET / Authorization: ***",
        "\\x1b[2Kok\\r!",
    ]


def test_a_missing_childs_log_has_an_empty_tail(tmp_path: Path) -> None:
    """A child that wrote no log yet has an empty tail, not an error."""
    assert log_tail(tmp_path / "absent.log") == ""
