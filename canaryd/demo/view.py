"""The live terminal view of a demo rollout.

Events scroll by as they happen (one line each, with the seconds since the
rollout started); on a terminal a status line under them is redrawn in place:
the weight bar, each metric's live value against its bound, and failed checks
against the threshold. Without a terminal (a pipe, CI) only the lines are
printed, so the output reads well in a log.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

from canaryd.client import weight_bar
from canaryd.demo.results import Bound, ScenarioResult, fmt_value, number, verdict
from canaryd.demo.scenarios import Scenario
from canaryd.terminal import escape, escape_lines

CLEAR_LINE = "\r\x1b[2K"


class View(Protocol):
    """What shows a scenario as it runs."""

    def begin(self, scenario: Scenario, parts: list[str]) -> None:
        """A scenario starts on ``parts`` (what runs the traffic path and the metrics)."""

    def event(self, elapsed: float, event: dict[str, Any], bounds: list[Bound]) -> None:
        """An event happened ``elapsed`` seconds after the rollout started."""

    def status(
        self, state: dict[str, Any], live: dict[str, float | None], bounds: list[Bound]
    ) -> None:
        """The canary's state (as the API serves it) and the metrics' live values."""

    def end(self, result: ScenarioResult) -> None:
        """The scenario ended."""


def metric_text(bound: Bound, value: float | None) -> str:
    """``request-success-rate 90.1% (>= 99%) FAIL``; no data fails too."""
    mark = "ok" if bound.ok(value) else "FAIL"
    return f"{bound.name} {fmt_value(bound.name, value)} ({bound.text()}) {mark}"


def describe_event(event: dict[str, Any], bounds: list[Bound]) -> str | None:
    """One line for an event; None for events not worth a line."""
    name = event.get("event")
    if name == "analysis.tick":
        metrics = {m.get("name"): number(m.get("value")) for m in event.get("metrics") or []}
        if not metrics:
            return None
        values = "  ".join(metric_text(b, metrics.get(b.name)) for b in bounds)
        outcome = str(event.get("outcome", "?")).upper()
        return (
            f"check {outcome:<4}  {values}  "
            f"failed {event.get('failedChecks')}/{event.get('threshold')}"
        )
    return _describe_decision(str(name), event)


def _describe_decision(name: str, event: dict[str, Any]) -> str | None:
    weight = event.get("canaryWeight")
    if name == "rollout.started":
        return f"rollout of {event.get('revision')} started"
    if name == "weight.advanced":
        if event.get("promotion"):
            return f"traffic back to the promoted primary: {event.get('primaryWeight')}%"
        return f"canary weight {event.get('previousWeight')}% -> {weight}%"
    if name == "rollout.promoting":
        return "all checks passed at the last step: promoting the primary to v2"
    if name == "rollout.promoted":
        return "PROMOTED: all traffic to the primary (which version it serves: see below)"
    if name == "rollout.rolled_back":
        return f"ROLLED BACK: {event.get('reason')}; all traffic back to v1"
    if name == "check.failed":
        return None  # the analysis.tick line of the same tick says it, with values
    return f"{name}: {event.get('reason') or ''}".rstrip(": ")


def served_line(result: ScenarioResult) -> str:
    """What answered the probe requests after a promotion, and whether that is right."""
    counts = result.served_after or Counter()
    total = sum(counts.values())
    found = ", ".join(f"{n} {v}" for v, n in counts.most_common())
    if result.new_version_serves:
        return f"after promotion: {total} of {total} requests answered by v2 (checked)"
    if result.promotes:
        return f"after promotion: requests answered by {found}: the new version is NOT serving"
    return (
        f"after promotion: requests answered by {found}: this router only moves weights; "
        "your deploy pipeline redeploys the primary (docs/routers.md)"
    )


@dataclass
class TerminalView:
    """Prints a scenario as it runs.

    Attributes:
        out: where to write (stdout by default).
        live: redraw a status line in place (default: when ``out`` is a terminal).
    """

    out: TextIO = field(default_factory=lambda: sys.stdout)
    live: bool | None = None
    _status: str = ""

    def __post_init__(self) -> None:
        """Decide whether to redraw in place."""
        if self.live is None:
            self.live = self.out.isatty()

    def _line(self, text: str) -> None:
        if self.live and self._status:
            self.out.write(CLEAR_LINE)
        self.out.write(escape_lines(text) + "\n")
        if self.live and self._status:
            self.out.write(self._status)
        self.out.flush()

    def begin(self, scenario: Scenario, parts: list[str]) -> None:
        """Announce a scenario and what it runs on."""
        self._status = ""
        self._line(f"\n=== scenario {scenario.name}: {scenario.title}")
        for part in parts:
            self._line(f"    {part}")
        self._line(f"    expected: {scenario.expect}")

    def event(self, elapsed: float, event: dict[str, Any], bounds: list[Bound]) -> None:
        """Print an event line (if it is worth one)."""
        text = describe_event(event, bounds)
        if text is not None:  # one line, whatever the reason's text holds
            self._line(f"  {elapsed:5.1f}s  {escape(text)}")

    def status(
        self, state: dict[str, Any], live: dict[str, float | None], bounds: list[Bound]
    ) -> None:
        """Redraw the status line (on a terminal only)."""
        if not self.live:
            return
        values = "  ".join(metric_text(b, live.get(b.name)) for b in bounds)
        self._status = escape(
            f"  canary {weight_bar(int(state.get('canaryWeight', 0)))}  {values}  "
            f"failed {state.get('failedChecks')}/{state.get('threshold')}  {state.get('phase')}"
        )
        self.out.write(CLEAR_LINE + self._status)
        self.out.flush()

    def end(self, result: ScenarioResult) -> None:
        """Print the verdict, the weights the router ended with and the alerts received."""
        if self.live:
            self.out.write(CLEAR_LINE)
        self._status = ""
        mark = "as expected" if result.as_expected else f"EXPECTED {result.scenario.expect}"
        self._line(f"  => {result.scenario.name}: {verdict(result)}  [{mark}]")
        weights = " -> ".join(f"{w}%" for w in result.applied_weights())
        self._line(f"     canary weights applied by the router: {weights or 'none'}")
        if result.served_after is not None:
            self._line(f"     {served_line(result)}")
        alerts = ", ".join(dict.fromkeys(str(a.get("event")) for a in result.alerts))
        self._line(f"     alerts received ({len(result.alerts)}): {alerts or 'none'}")
        if not result.as_expected and result.log_tail:
            self._line(
                "     canaryd's last log lines:\n       "
                + "\n       ".join(escape(line) for line in result.log_tail)
            )

    def summary(self, results: list[ScenarioResult]) -> None:
        """The closing table: one line per scenario."""
        self._line("\n=== summary")
        for r in results:
            ok = "ok " if r.as_expected else "!! "
            self._line(f"  {ok}{r.scenario.name:<11} {verdict(r)}")
