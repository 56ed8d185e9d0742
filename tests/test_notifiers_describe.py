"""Alert text: the one-line summary, number formatting, unknown types and events refused."""

from __future__ import annotations

import pytest
from notifier_helpers import ROLLED_BACK, ev

from canaryd.core.events import Event
from canaryd.notifiers import describe, render
from canaryd.notifiers.text import number

# ------------------------------------------------------------------ wording


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (
            ROLLED_BACK,
            "prod/web v2: rolled back: request-success-rate 91.8 < min 99 (5/5 failed checks)",
        ),
        (
            ev(
                "check.failed", metric="latency", value=612.25, max=500, failedChecks=2, threshold=5
            ),
            "prod/web v2: check failed: latency 612.25 > max 500 (2/5 failed checks)",
        ),
        (
            ev("check.failed", None, metric="latency", error="prometheus: HTTP 503"),
            "prod/web: check failed: latency: prometheus: HTTP 503",
        ),
        (
            ev("check.failed", metric="latency", value=None, max=500),
            "prod/web v2: check failed: latency: no data (max 500)",
        ),
        (
            ev("gate.waiting", gate="confirm-promotion"),
            "prod/web v2: waiting for approval: confirm-promotion",
        ),
        (
            ev("weight.advanced", canaryWeight=20, primaryWeight=80),
            "prod/web v2: weight advanced: canary 20%",
        ),
        (ev("iteration.advanced", iteration=3), "prod/web v2: iteration advanced: iteration 3"),
        (ev("rollout.promoted", phase="Succeeded"), "prod/web v2: promoted"),
        (
            ev("pre_rollout.failed", reason="smoke-test: HTTP 500: boom"),
            "prod/web v2: pre-rollout hook failed: smoke-test: HTTP 500: boom",
        ),
    ],
    ids=[
        "rolled-back",
        "above-max",
        "error",
        "no-data",
        "gate",
        "weight",
        "iteration",
        "promoted",
        "pre-rollout",
    ],
)
def test_describe(event: Event, expected: str) -> None:
    """The one-line summary names the canary, revision, what happened and why."""
    assert describe(event) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (99, "99"),
        (99.0, "99"),
        (91.8, "91.8"),
        (0.00123, "0.00123"),
        (1234.56789, "1234.57"),
        (float("nan"), "NaN"),
        (None, "no data"),
    ],
    ids=["int", "whole-float", "decimal", "small", "rounded", "nan", "none"],
)
def test_number_formatting(value: float | None, expected: str) -> None:
    """Metric values are shown without float noise."""
    assert number(value) == expected


def test_render_rejects_unknown_type_and_event() -> None:
    """An unknown notifier type or event name is a ValueError, not a silent default."""
    with pytest.raises(ValueError, match="notifier type"):
        render("pagerduty", ROLLED_BACK)
    with pytest.raises(ValueError, match="unknown event"):
        render("slack", ev("rollout.exploded"))
