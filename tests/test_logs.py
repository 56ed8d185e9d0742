"""The canary event log line: the fast JSON path writes what structlog's chain would."""

from __future__ import annotations

import dataclasses
import datetime
import io
import json
import math
import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest
import structlog
from structlog.testing import capture_logs

from canaryd import logs
from canaryd.core.events import Event


class _Opaque:
    def __repr__(self) -> str:
        return "Opaque()"


EVENT = Event(
    "analysis.tick",
    "shop/checkout",
    "v2",
    "progressing",
    1.0,
    {"metrics": [{"name": "p99", "value": "inf", "min": None, "max": 500.0}], "x": _Opaque()},
)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Leave structlog's configuration and context as the test found them."""
    config = structlog.get_config()
    yield
    structlog.contextvars.clear_contextvars()
    structlog.configure(**config)
    logs._fast = None


def _line(fast: bool, level: str = "info") -> str:
    out = io.StringIO()
    logs.configure("json", level, out)
    if not fast:
        logs._fast = None  # structlog's own processor chain
    structlog.contextvars.bind_contextvars(canary="checkout", revision="v1", request="r-1")
    logs.log_event(EVENT)
    return out.getvalue()


def test_fast_line_is_structlogs_line() -> None:
    """The fast path writes the same line (timestamp aside) as structlog's chain, byte for byte."""
    fast_text, slow_text = _line(fast=True), _line(fast=False)
    fast, slow = json.loads(fast_text), json.loads(slow_text)
    assert fast["timestamp"].endswith("Z") and slow["timestamp"].endswith("Z")
    assert fast_text.replace(fast["timestamp"], "T") == slow_text.replace(slow["timestamp"], "T")
    assert fast["revision"] == "v2" and fast["request"] == "r-1" and fast["x"] == "Opaque()"


def test_line_is_compact_escaped_and_keeps_nan(monkeypatch: pytest.MonkeyPatch) -> None:
    """A line is compact JSON in the documented key order, NaN as ``NaN``, text ``\\uXXXX``."""
    monkeypatch.setattr(logs, "iso_utc_now", lambda: "2026-11-30T01:00:00Z")
    metric = {"name": "p99", "value": math.nan, "min": None, "max": math.inf}
    event = Event("check.failed", "shop/web", "v2", "Progressing", 1.0, {"metrics": [metric]})
    out = io.StringIO()
    logs.configure("json", "info", out)
    logs.log_event(dataclasses.replace(event, fields={**event.fields, "reason": "é\x1b[2K"}))
    assert out.getvalue() == (
        '{"canary":"web","namespace":"shop","revision":"v2","phase":"Progressing",'
        '"metrics":[{"name":"p99","value":NaN,"min":null,"max":Infinity}],'
        '"reason":"\\u00e9\\u001b[2K","event":"check.failed","level":"warning",'
        '"timestamp":"2026-11-30T01:00:00Z"}\n'
    )


@pytest.mark.integration
def test_jq_reads_every_line() -> None:
    """``jq`` reads a canary event line with NaN and control characters, and structlog's line."""
    jq = shutil.which("jq")
    if jq is None:
        if os.environ.get("CI") == "true":
            pytest.fail("jq not found; install it: apt-get install jq")
        pytest.skip("jq not found; install it: apt-get install jq")
    out = io.StringIO()
    logs.configure("json", "info", out)
    fields = {"value": math.nan, "reason": "\x1b]0;title\x07\u202e"}
    logs.log_event(Event("check.failed", "shop/web", "v2", "Progressing", 1.0, fields))
    structlog.get_logger().info("daemon.stopped", note="bye\n")
    done = subprocess.run(
        [jq, "-c", "[.event, .reason]"],
        input=out.getvalue(),
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    assert done.stdout.splitlines() == [
        '["check.failed","\\u001b]0;title\\u0007\u202e"]',
        '["daemon.stopped",null]',
    ]


def test_fast_path_respects_the_level() -> None:
    """An info event is not written when the configured level is warning."""
    assert _line(fast=True, level="warning") == ""


def test_captured_logs_see_events() -> None:
    """``capture_logs`` still receives canary events after JSON logging was configured."""
    logs.configure("json", "info", io.StringIO())
    with capture_logs() as captured:
        logs.log_event(EVENT)
    assert [e["event"] for e in captured] == ["analysis.tick"]


@pytest.mark.parametrize(
    "ns",
    [1_764_464_112_123_456_789, 1_764_464_112_000_000_000, 1_764_464_113_000_001_000, 0],
    ids=["fraction", "on-the-second", "one-microsecond", "epoch"],
)
def test_timestamp_is_structlogs_iso_utc(monkeypatch: pytest.MonkeyPatch, ns: int) -> None:
    """The fast path's timestamp is what ``TimeStamper(fmt="iso", utc=True)`` writes then."""
    monkeypatch.setattr("canaryd.logs.time.time_ns", lambda: ns)
    when = datetime.datetime.fromtimestamp(ns // 1000 / 1e6, datetime.UTC)
    expected = when.replace(microsecond=ns // 1000 % 1_000_000).isoformat().replace("+00:00", "Z")
    assert logs.iso_utc_now() == expected
