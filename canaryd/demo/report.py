"""``canaryd demo --report FILE.html``: one self-contained page, one chart per scenario.

Each chart is inline SVG with three panels sharing the time axis: the weights
the router applied (primary and canary), the canary's success rate and its p99
latency, each with its threshold as a dashed line, the checks as dots at the
value each judged (green within the bound, red outside it; a hollow grey ring
on the panel's floor when the check had no data), a labelled time axis and the
moment of promotion or rollback as a vertical line across all panels. No
script, no external stylesheet, font or image.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from canaryd.demo.results import (
    Bound,
    ScenarioResult,
    alert_counts,
    fmt_value,
    number,
    verdict,
)
from canaryd.demo.scenarios import DURATION, SUCCESS_RATE

WIDTH, LEFT, RIGHT = 760, 70, 20
PANEL_HEIGHT, GAP, TOP = 110, 34, 24
PLOT_WIDTH = WIDTH - LEFT - RIGHT

CSP = "default-src 'none'; style-src 'unsafe-inline'"
"""Nothing but the page itself may load: proof (in a browser) that it is self-contained."""

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:800px;color:#222}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2.2rem}
table{border-collapse:collapse}
td,th{padding:.2rem .6rem;border-bottom:1px solid #ddd;text-align:left}
.ok{color:#1a7f37}.bad{color:#cf222e}.muted{color:#666;font-size:.9em}
svg text{font:11px system-ui,sans-serif}
svg text:not([fill]){fill:#444}
"""


@dataclass(frozen=True, slots=True)
class Panel:
    """One panel: its title, y range and where it sits."""

    title: str
    low: float
    high: float
    top: float

    def y(self, value: float) -> float:
        """The SVG y of a value (clamped to the panel)."""
        span = self.high - self.low or 1.0
        share = min(1.0, max(0.0, (value - self.low) / span))
        return self.top + PANEL_HEIGHT * (1.0 - share)


def _x(t: float, end: float) -> float:
    return LEFT + PLOT_WIDTH * min(1.0, max(0.0, t / end))


def _polylines(
    points: Iterable[tuple[float, float | None]], panel: Panel, end: float, css: str
) -> str:
    """Lines through the points; a None value breaks the line (no data)."""
    out: list[str] = []
    run: list[str] = []
    for t, v in [*points, (end, None)]:
        if v is None:
            if len(run) > 1:
                out.append(f'<polyline class="{css}" points="{" ".join(run)}"/>')
            elif run:
                out.append(
                    f'<circle class="{css}" cx="{run[0].split(",")[0]}" '
                    f'cy="{run[0].split(",")[1]}" r="2"/>'
                )
            run = []
        else:
            run.append(f"{_x(t, end):.1f},{panel.y(v):.1f}")
    return "".join(out)


def _frame(panel: Panel, unit: Callable[[float], str]) -> str:
    bottom = panel.top + PANEL_HEIGHT
    return (
        f'<rect x="{LEFT}" y="{panel.top}" width="{PLOT_WIDTH}" height="{PANEL_HEIGHT}" '
        'fill="#fafafa" stroke="#ccc"/>'
        f'<text x="{LEFT}" y="{panel.top - 6}">{html.escape(panel.title)}</text>'
        f'<text x="{LEFT - 6}" y="{panel.top + 10}" text-anchor="end">{unit(panel.high)}</text>'
        f'<text x="{LEFT - 6}" y="{bottom}" text-anchor="end">{unit(panel.low)}</text>'
    )


def _threshold(panel: Panel, value: float | None, label: str) -> str:
    if value is None:
        return ""
    y = panel.y(value)
    return (
        f'<line class="threshold" x1="{LEFT}" x2="{LEFT + PLOT_WIDTH}" y1="{y:.1f}" y2="{y:.1f}" '
        'stroke="#cf222e" stroke-dasharray="6 4"/>'
        f'<text x="{LEFT + PLOT_WIDTH - 4}" y="{y - 4:.1f}" text-anchor="end" '
        f'fill="#cf222e">{html.escape(label)}</text>'
    )


def _panels(result: ScenarioResult) -> tuple[Panel, Panel, Panel]:
    rates = [v for s in result.samples if (v := s.metrics.get(SUCCESS_RATE)) is not None]
    p99s = [v for s in result.samples if (v := s.metrics.get(DURATION)) is not None]
    limit = _bound(result, DURATION).max or 200.0
    low = min([*rates, 90.0]) // 5 * 5
    high_ms = max([*p99s, limit * 1.5])
    step = PANEL_HEIGHT + GAP
    return (
        Panel("traffic weights applied by the router (%)", 0, 100, TOP),
        Panel("canary success rate (%)", low, 100, TOP + step),
        Panel("canary p99 latency (ms)", 0, high_ms * 1.05, TOP + 2 * step),
    )


def _bound(result: ScenarioResult, name: str) -> Bound:
    return next((b for b in result.bounds if b.name == name), Bound(name))


def _marker(result: ScenarioResult, end: float, height: float) -> str:
    if result.ended is None:
        return ""
    kind = "promoted" if result.outcome == "promoted" else "rolled-back"
    color = "#1a7f37" if kind == "promoted" else "#cf222e"
    x = _x(result.ended, end)
    left = x > LEFT + PLOT_WIDTH * 0.6  # label on the side with room
    label_x, anchor = (x - 4, "end") if left else (x + 4, "start")
    return (
        f'<g class="marker {kind}" data-outcome="{result.outcome}" data-time="{result.ended:.1f}">'
        f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP - 4}" y2="{height}" stroke="{color}" '
        'stroke-width="2"/>'
        f'<text x="{label_x:.1f}" y="{TOP + 12}" text-anchor="{anchor}" fill="{color}">'
        f"{result.outcome} at {result.ended:.1f}s</text></g>"
    )


def _checks(result: ScenarioResult, panel: Panel, end: float, started: float, name: str) -> str:
    """One dot per judged check at the value it judged for ``name``, red when out of its bound;
    no data is a ring."""
    dots = []
    for c in result.judged:
        t = float(c.get("time", 0.0)) - started
        metric = next((m for m in c.get("metrics", []) if m.get("name") == name), None)
        if metric is None:
            continue
        value = number(metric.get("value"))
        x = _x(t, end)
        if value is None:
            dots.append(
                f'<circle class="check nodata" cx="{x:.1f}" cy="{panel.top + PANEL_HEIGHT - 6}" '
                'r="4" fill="none" stroke="#888" stroke-width="1.5"><title>no data</title></circle>'
            )
            continue
        bound = _bound(result, name)  # the dot says whether this metric met its bound
        out = (bound.min is not None and value < bound.min) or (
            bound.max is not None and value > bound.max
        )
        outcome = "fail" if out else "pass"
        color = "#cf222e" if out else "#1a7f37"
        dots.append(
            f'<circle class="check {html.escape(outcome)}" cx="{x:.1f}" '
            f'cy="{panel.y(value):.1f}" r="4" fill="{color}">'
            f"<title>{html.escape(fmt_value(name, value))}</title></circle>"
        )
    return "".join(dots)


TIME_STEPS = (1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1800, 3600)
"""Candidate spacings of the time axis labels, in seconds."""


def _time_axis(end: float, y: float) -> str:
    """Labels every few seconds along the bottom (at most about 8), the last one with units."""
    step = next((s for s in TIME_STEPS if end / s <= 8), TIME_STEPS[-1])
    parts = []
    t = 0
    while t <= end:
        x = _x(t, end)
        parts.append(
            f'<line class="tick" x1="{x:.1f}" x2="{x:.1f}" y1="{y - 14}" y2="{y - 10}" '
            'stroke="#888"/>'
            f'<text class="time" x="{x:.1f}" y="{y}" text-anchor="middle">{t}s</text>'
        )
        t += step
    parts.append(
        f'<text x="{LEFT + PLOT_WIDTH}" y="{y + 14}" text-anchor="end">'
        "seconds since the rollout started</text>"
    )
    return "".join(parts)


def _legend() -> str:
    y = TOP - 6
    return (
        f'<text x="{LEFT + PLOT_WIDTH - 330}" y="{y}" fill="#0969da">primary</text>'
        f'<text x="{LEFT + PLOT_WIDTH - 275}" y="{y}" fill="#bf5700">canary</text>'
        f'<circle cx="{LEFT + PLOT_WIDTH - 220}" cy="{y - 4}" r="4" fill="#1a7f37"/>'
        f'<text x="{LEFT + PLOT_WIDTH - 212}" y="{y}" fill="#1a7f37">in bound</text>'
        f'<circle cx="{LEFT + PLOT_WIDTH - 155}" cy="{y - 4}" r="4" fill="#cf222e"/>'
        f'<text x="{LEFT + PLOT_WIDTH - 147}" y="{y}" fill="#cf222e">out of bound</text>'
        f'<circle cx="{LEFT + PLOT_WIDTH - 68}" cy="{y - 4}" r="4" fill="none" stroke="#888" '
        'stroke-width="1.5"/>'
        f'<text x="{LEFT + PLOT_WIDTH - 60}" y="{y}" fill="#666">no data</text>'
    )


def _svg_open(result: ScenarioResult, height: float) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" data-scenario="'
        f'{html.escape(result.scenario.name)}" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" role="img">'
        "<style>.canary{fill:none;stroke:#bf5700;stroke-width:2}"
        ".primary{fill:none;stroke:#0969da;stroke-width:2}"
        ".metric{fill:none;stroke:#6639ba;stroke-width:1.5}</style>"
    )


def chart(result: ScenarioResult) -> str:
    """The inline SVG chart of one scenario."""
    weights, rate, p99 = _panels(result)
    end = max([s.time for s in result.samples] + [result.ended or 0.0, 1.0])
    height = p99.top + PANEL_HEIGHT + 44
    started = _rollout_start(result)
    samples = result.samples
    rate_bound, p99_bound = _bound(result, SUCCESS_RATE), _bound(result, DURATION)
    parts = [
        _svg_open(result, height),
        _frame(weights, lambda v: f"{v:.0f}%"),
        _polylines(((s.time, s.primary) for s in samples), weights, end, "primary"),
        _polylines(((s.time, s.canary) for s in samples), weights, end, "canary"),
        _frame(rate, lambda v: f"{v:.0f}%"),
        _threshold(rate, rate_bound.min, f"min {fmt_value(SUCCESS_RATE, rate_bound.min)}"),
        _polylines(((s.time, s.metrics.get(SUCCESS_RATE)) for s in samples), rate, end, "metric"),
        _checks(result, rate, end, started, SUCCESS_RATE),
        _frame(p99, lambda v: f"{v:.0f}ms"),
        _threshold(p99, p99_bound.max, f"max {fmt_value(DURATION, p99_bound.max)}"),
        _polylines(((s.time, s.metrics.get(DURATION)) for s in samples), p99, end, "metric"),
        _checks(result, p99, end, started, DURATION),
        _marker(result, end, height - 38),
        _time_axis(end, height - 20),
        _legend(),
        "</svg>",
    ]
    return "".join(parts)


def _rollout_start(result: ScenarioResult) -> float:
    """Unix time the rollout started (its first event), to place checks on the time axis."""
    first = next((e for e in result.events if e.get("event") == "rollout.started"), None)
    return float(first["time"]) if first else 0.0


def _section(result: ScenarioResult) -> str:
    s = result.scenario
    css = "ok" if result.as_expected else "bad"
    alerts = ", ".join(f"{name} x{n}" for name, n in alert_counts(result).items()) or "none"
    parts = " / ".join(html.escape(p) for p in result.parts)
    return (
        f'<section id="{html.escape(s.name)}"><h2>{html.escape(s.name)}: '
        f"{html.escape(s.title)}</h2>"
        f'<p class="{css}"><b>{html.escape(verdict(result))}</b> '
        f"(expected: {html.escape(s.expect)})</p>"
        f"<p>{html.escape(s.proves)}.</p>{chart(result)}"
        f'<p class="muted">alerts received: {html.escape(alerts)}<br>runs on: {parts}</p>'
        "</section>"
    )


def render_report(results: list[ScenarioResult]) -> str:
    """The whole HTML page."""
    rows = "".join(
        f'<tr><td><a href="#{html.escape(r.scenario.name)}">{html.escape(r.scenario.name)}</a>'
        f'</td><td class="{"ok" if r.as_expected else "bad"}">{html.escape(verdict(r))}</td></tr>'
        for r in results
    )
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>canaryd demo report</title><style>{CSS}</style></head><body>"
        f'<h1>canaryd demo</h1><p class="muted">{stamp}</p>'
        f"<table><tr><th>scenario</th><th>verdict</th></tr>{rows}</table>"
        + "".join(_section(r) for r in results)
        + "</body></html>\n"
    )


def write_report(path: Path, results: list[ScenarioResult]) -> None:
    """Write the report to ``path``.

    Raises:
        OSError: the file cannot be written.
    """
    path.write_text(render_report(results), encoding="utf-8")
