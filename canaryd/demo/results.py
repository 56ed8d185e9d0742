"""What a demo scenario produced, and the verdict that explains it (pure functions)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from canaryd.demo.scenarios import DURATION, SUCCESS_RATE, Outcome, Scenario

UNITS = {SUCCESS_RATE: "%", DURATION: "ms"}


@dataclass(frozen=True, slots=True)
class Bound:
    """A metric's inclusive bounds, as configured."""

    name: str
    min: float | None = None
    max: float | None = None

    def ok(self, value: float | None) -> bool | None:
        """Whether ``value`` is within bounds; None for no data."""
        if value is None:
            return None
        return not (
            (self.min is not None and value < self.min)
            or (self.max is not None and value > self.max)
        )

    def text(self) -> str:
        """``>= 99%`` / ``<= 200ms``."""
        parts = []
        if self.min is not None:
            parts.append(f">= {fmt_value(self.name, self.min)}")
        if self.max is not None:
            parts.append(f"<= {fmt_value(self.name, self.max)}")
        return " and ".join(parts)


@dataclass(frozen=True, slots=True)
class Sample:
    """What the demo saw at one moment of a rollout.

    Attributes:
        time: seconds since the rollout started.
        primary: primary weight in percent, as the router reports it.
        canary: canary weight in percent, as the router reports it.
        raw: the router's own (primary, canary) weights (HAProxy: 0..256).
        metrics: each metric's current value (None: no data).
    """

    time: float
    primary: int | None
    canary: int | None
    raw: tuple[int, int] | None
    metrics: dict[str, float | None]


@dataclass
class ScenarioResult:
    """Everything a scenario run produced.

    Attributes:
        scenario: what ran.
        parts: labels of the traffic path and metrics source (real or stand-in).
        phase: canaryd's final phase.
        reason: canaryd's reason for the last failure, if any.
        threshold: failed checks that trigger a rollback.
        failed_checks: failed checks counted.
        checks: check records (oldest first), as the API serves them.
        events: events (oldest first), as the API serves them.
        samples: what the demo sampled during the rollout.
        alerts: alert bodies the local receiver got.
        bounds: the metrics' bounds.
        ended: seconds from rollout start to promotion or rollback (None: unfinished).
        final_raw: the router's (primary, canary) weights at the end, read back.
        scale: the router's weight for 100 percent.
        log_tail: the daemon's last log lines (kept when something went wrong).
        pids: the child processes the scenario started (all stopped at its end).
        ports: the ports it used on 127.0.0.1 (all released at its end).
        promotes: the router makes the primary serve the new version on promotion.
        served_after: after a promotion, which version answered the demo's probe
            requests through the traffic path (``v2``: 48, ...).
    """

    scenario: Scenario
    parts: list[str]
    phase: str = "Initialized"
    reason: str | None = None
    threshold: int = 0
    failed_checks: int = 0
    checks: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    bounds: list[Bound] = field(default_factory=list)
    ended: float | None = None
    final_raw: tuple[int, int] | None = None
    scale: int = 100
    log_tail: list[str] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    promotes: bool = False
    served_after: Counter[str] | None = None

    @property
    def new_version_serves(self) -> bool | None:
        """After a promotion: did every probe request reach v2? None: not probed."""
        if self.served_after is None:
            return None
        return set(self.served_after) == {"v2"}

    @property
    def outcome(self) -> Outcome:
        """promoted, rolled back or unfinished."""
        return {"Succeeded": "promoted", "Failed": "rolled back"}.get(self.phase, "unfinished")  # type: ignore[return-value]

    @property
    def as_expected(self) -> bool:
        """Whether the outcome (and the rollback's reason) is what the scenario expects."""
        if self.outcome != self.scenario.expect:
            return False
        if self.promotes and self.new_version_serves is False:
            return False  # "promoted" while the old version still answers
        expected = self.scenario.expect_reason
        return expected is None or (self.reason or "").startswith(expected)

    @property
    def judged(self) -> list[dict[str, Any]]:
        """The checks that judged metrics (the first tick, at weight 0, judges none)."""
        return [c for c in self.checks if c.get("metrics")]

    @property
    def failing_metric(self) -> str | None:
        """The metric named by the final failure reason, if a metric."""
        names = [b.name for b in self.bounds]
        return next((n for n in names if (self.reason or "").startswith(n)), None)

    def applied_weights(self) -> list[int]:
        """Distinct canary weights (percent) the router reported, in order."""
        out: list[int] = []
        for s in self.samples:
            if s.canary is not None and (not out or out[-1] != s.canary):
                out.append(s.canary)
        return out


def number(value: Any) -> float | None:
    """A metric value from the API as a float; None for no data (null, "nan")."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        v = float(value)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def fmt_value(name: str, value: float | None) -> str:
    """``99.2%``, ``412ms``, or ``no data``."""
    if value is None:
        return "no data"
    unit = UNITS.get(name, "")
    if unit == "%":
        return f"{value:.1f}".removesuffix(".0") + "%"
    if unit == "ms":
        return f"{value:.0f}ms"
    return f"{value:g}"


def _metric(check: dict[str, Any], name: str) -> dict[str, Any]:
    return next((m for m in check.get("metrics", []) if m.get("name") == name), {})


def check_value(check: dict[str, Any], name: str) -> tuple[bool, float | None]:
    """Whether the check judged metric ``name``, and the value it saw (None: no data)."""
    record = _metric(check, name)
    return bool(record), number(record.get("value"))


def _failure_phrase(bound: Bound, value: float | None, error: str | None) -> str:
    if error:
        return f"{bound.name} failed ({error})"
    if value is None:
        return f"{bound.name} had no data"
    if bound.min is not None and value < bound.min:
        return f"{bound.name} {fmt_value(bound.name, value)} < {fmt_value(bound.name, bound.min)}"
    if bound.max is not None and value > bound.max:
        return f"{bound.name} {fmt_value(bound.name, value)} > {fmt_value(bound.name, bound.max)}"
    return f"{bound.name} {fmt_value(bound.name, value)}"


def verdict(result: ScenarioResult) -> str:
    """One sentence that explains the outcome from the checks.

    e.g. ``rolled back: request-success-rate 90.3% < 99% on 3 of 3 checks``.
    """
    judged = result.judged
    if result.outcome == "promoted":
        passed = sum(1 for c in judged if c.get("outcome") == "pass")
        last = judged[-1] if judged else {}
        values = ", ".join(
            f"{b.name} {fmt_value(b.name, number(_metric(last, b.name).get('value')))}"
            for b in result.bounds
        )
        top = max(result.applied_weights() or [0])
        return (
            f"promoted: {passed} of {len(judged)} checks passed, canary reached {top}% "
            f"(last check: {values})"
        )
    if result.outcome == "unfinished":
        return f"unfinished: still {result.phase} when the demo gave up"
    bound = next((b for b in result.bounds if b.name == result.failing_metric), None)
    if bound is None:
        return f"rolled back: {result.reason}"
    failed = [c for c in judged if (c.get("reason") or "").startswith(bound.name)]
    last = _metric(failed[-1], bound.name) if failed else {}
    phrase = _failure_phrase(bound, number(last.get("value")), last.get("error"))
    return f"rolled back: {phrase} on {len(failed)} of {len(judged)} checks"


def alert_counts(result: ScenarioResult) -> Counter[str]:
    """How many alerts of each event the receiver got."""
    return Counter(str(a.get("event")) for a in result.alerts)
