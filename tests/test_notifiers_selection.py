"""Alerts: severity as Flagger gives it, and which events an alert selects and filters."""

from __future__ import annotations

from typing import Any

import pytest
from notifier_helpers import ev
from pydantic import ValidationError

from canaryd.config import AlertSpec, Severity
from canaryd.core.events import EVENTS, Event
from canaryd.notifiers import ALERT_EVENTS, passes, severity_of, wanted

# ------------------------------------------------------------------ severity and filtering


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("rollout.started", Severity.INFO),
        ("weight.advanced", Severity.INFO),
        ("check.failed", Severity.WARN),
        ("pre_rollout.failed", Severity.WARN),
        ("rollout.rolled_back", Severity.ERROR),
        ("gate.timed_out", Severity.ERROR),
        ("rollout.waiting", Severity.WARN),
        ("gate.waiting", Severity.WARN),
        ("rollout.promoted", Severity.INFO),
    ],
    ids=lambda v: str(v),
)
def test_severity_follows_flagger_then_event_level(name: str, expected: Severity) -> None:
    """Flagger's severity where Flagger alerts (waiting for approval is warn), else the
    vocabulary level: info, warning -> warn, error."""
    assert severity_of(ev(name)) == expected


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"reason": "failed checks threshold reached"}, Severity.ERROR),
        ({"webhook": "kill-switch"}, Severity.WARN),
        ({"manual": True}, Severity.WARN),
    ],
    ids=["threshold", "rollback-webhook", "operator-abort"],
)
def test_rollback_severity_depends_on_who_asked(fields: dict[str, Any], expected: Severity) -> None:
    """A rollback is error, but warn when a rollback webhook or an operator asked for it, as in
    Flagger ("Rolling back manual webhook invoked" is warn)."""
    assert severity_of(ev("rollout.rolled_back", phase="Failed", **fields)) == expected


def alert(severity: str = "info", events: Any = "flagger") -> AlertSpec:
    """An alert on notifier ``n`` with the given filters."""
    return AlertSpec(name="a", notifier="n", severity=Severity(severity), events=events)


@pytest.mark.parametrize(
    ("spec", "event", "expected"),
    [
        (alert(), ev("rollout.started"), True),
        (alert(), ev("rollout.waiting", gate="confirm-rollout"), True),
        (alert(), ev("gate.waiting", gate="confirm-promotion"), True),
        (alert(), ev("rollout.promoted"), True),
        (alert(), ev("rollout.rolled_back"), True),
        (alert(), ev("weight.advanced"), False),
        (alert(), ev("check.failed"), False),
        (alert(), ev("router.failed"), False),
        (alert(), ev("analysis.tick"), False),
        (alert("warn"), ev("gate.waiting", gate="confirm-promotion"), True),
        (alert("warn"), ev("rollout.started"), False),
        (alert("error"), ev("rollout.rolled_back", webhook="stop"), False),
        (alert(), ev("gate.waiting", gate="confirm-promotion", muteAlert=True), False),
        (alert(events="all"), ev("weight.advanced"), True),
        (alert(events="all"), ev("check.failed"), True),
        (alert(events="all"), ev("analysis.tick"), False),
        (alert(events="all"), ev("rollout.waiting", gate="confirm-rollout", muteAlert=True), False),
        (alert(events=["weight.advanced"]), ev("weight.advanced"), True),
        (alert(events=["weight.advanced"]), ev("rollout.rolled_back"), False),
        (alert("warn", ["weight.advanced"]), ev("weight.advanced"), False),
    ],
    ids=[
        "default-started",
        "default-waiting",
        "default-gate-waiting",
        "default-promoted",
        "default-rolled-back",
        "default-no-weight-steps",
        "default-no-check-failed",
        "default-no-router-failed",
        "default-no-ticks",
        "warn-waiting",
        "warn-not-started",
        "error-not-manual-rollback",
        "muted",
        "all-weight-steps",
        "all-check-failed",
        "all-no-ticks",
        "all-muted",
        "list-listed",
        "list-unlisted",
        "list-and-severity",
    ],
)
def test_alert_selection(spec: AlertSpec, event: Event, expected: bool) -> None:
    """By default an alert sends Flagger's events; ``all`` or a list widen or pick them; the
    severity filter applies on top, and a muted waiting event is never sent."""
    assert wanted(spec, event) is expected


@pytest.mark.parametrize(
    ("events", "message"),
    [
        (["weight.advance"], "unknown alert event 'weight.advance'"),
        (["analysis.tick"], "unknown alert event 'analysis.tick'"),
        ("some", "must be flagger, all or a list of event names"),
    ],
    ids=["typo", "not-alertable", "bad-word"],
)
def test_alert_events_setting_is_validated(events: Any, message: str) -> None:
    """An events setting naming anything but flagger, all or alertable events is refused."""
    with pytest.raises(ValidationError, match=message):
        alert(events=events)


@pytest.mark.parametrize(
    ("filter_", "name", "expected"),
    [
        (Severity.INFO, "rollout.promoted", True),
        (Severity.INFO, "check.failed", True),
        (Severity.INFO, "rollout.rolled_back", True),
        (Severity.WARN, "rollout.promoted", False),
        (Severity.WARN, "check.failed", True),
        (Severity.WARN, "rollout.rolled_back", True),
        (Severity.ERROR, "rollout.promoted", False),
        (Severity.ERROR, "check.failed", False),
        (Severity.ERROR, "rollout.rolled_back", True),
    ],
    ids=lambda v: str(v),
)
def test_severity_filter(filter_: Severity, name: str, expected: bool) -> None:
    """info lets everything through, warn lets warn and error, error only error."""
    assert passes(filter_, ev(name)) is expected


def test_alert_events_are_vocabulary_without_ticks() -> None:
    """Every alert event is in the vocabulary, the required ones are there, ticks are not."""
    required = {
        "rollout.started",
        "rollout.waiting",
        "gate.waiting",
        "weight.advanced",
        "iteration.advanced",
        "check.failed",
        "pre_rollout.failed",
        "rollout.rolled_back",
        "rollout.promoted",
        "gate.timed_out",
        "router.failed",
    }
    assert EVENTS.keys() >= ALERT_EVENTS
    assert required <= ALERT_EVENTS
    assert "analysis.tick" not in ALERT_EVENTS
