"""``canaryd demo --report FILE.html``: one self-contained page, one chart per scenario.

Each chart is inline SVG with three panels sharing the time axis: the weights
the router applied (primary and canary), the canary's success rate and its p99
latency, each with its threshold as a dashed line, the checks as dots (green
passed, red failed) and the moment of promotion or rollback as a vertical line
across all panels. Grey bands and crossed rings show where a metric had no data;
the time axis is labelled every few seconds and a legend names every mark.
No script, no external stylesheet, font or image.
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
    check_value,
    fmt_value,
    verdict,
)
from canaryd.demo.scenarios import DURATION, SUCCESS_RATE

WIDTH, LEFT, RIGHT = 760, 70, 20
PANEL_HEIGHT, GAP, TOP = 110, 34, 24
AXIS, LEGEND = 38, 24  # under the last panel: tick labels and axis title, then the legend
PLOT_WIDTH = WIDTH - LEFT - RIGHT
TICK_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600)
"""Seconds between time-axis ticks: the first of these giving at most 8 intervals."""

COLORS = {
    "primary": "#0969da",
    "canary": "#bf5700",
    "metric": "#6639ba",
    "pass": "#1a7f37",
    "fail": "#cf222e",
    "nodata": "#57606a",
}

CSP = "default-src 'none'; style-src 'unsafe-inline'"
"""Nothing but the page itself may load: proof (in a browser) that it is self-contained."""

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:800px;color:#222}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2.2rem}
table{border-collapse:collapse}
td,th{padding:.2rem .6rem;border-bottom:1px solid #ddd;text-align:left}
.ok{color:#1a7f37}.bad{color:#cf222e}.muted{color:#666;font-size:.9em}
svg text{font:11px system-ui,sans-serif}svg text:not([fill]){fill:#444}
"""
"""Page style. A CSS ``fill`` on every ``svg text`` would beat the ``fill`` attributes that
colour the legend and the line labels, so only texts without one get the default grey."""

SVG_STYLE = (
    "<style>"
    + "".join(
        f".{name}{{fill:none;stroke:{COLORS[name]};stroke-width:{width}}}"
        for name, width in (("primary", 2), ("canary", 2), ("metric", 1.5))
    )
    + "</style>"
)


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

    @property
    def bottom(self) -> float:
        """The SVG y of the panel's lower edge."""
        return self.top + PANEL_HEIGHT


def _x(t: float, end: float) -> float:
    return LEFT + PLOT_WIDTH * min(1.0, max(0.0, t / end))


def time_ticks(end: float) -> list[float]:
    """Seconds to label on a time axis from 0 to ``end``: evenly spaced, at most 9 of them."""
    step = next((s for s in TICK_STEPS if end / s <= 8), TICK_STEPS[-1])
    return [float(i * step) for i in range(int(end // step) + 1)]


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


def _gaps(points: Iterable[tuple[float, float | None]], end: float) -> list[tuple[float, float]]:
    """The stretches of time (from, to) during which the sampled value was None."""
    gaps: list[tuple[float, float]] = []
    since: float | None = None
    for t, v in points:
        if v is None and since is None:
            since = t
        elif v is not None and since is not None:
            gaps.append((since, t))
            since = None
    if since is not None:
        gaps.append((since, end))
    return gaps


def _no_data_bands(points: Iterable[tuple[float, float | None]], panel: Panel, end: float) -> str:
    """Grey bands, labelled when wide enough, over the stretches the metric had no data."""
    out = []
    for a, b in _gaps(points, end):
        x, width = _x(a, end), max(2.0, _x(b, end) - _x(a, end))
        out.append(
            f'<rect class="nodata-band" x="{x:.1f}" y="{panel.top}" width="{width:.1f}" '
            f'height="{PANEL_HEIGHT}" fill="#d0d7de" fill-opacity="0.45"/>'
        )
        if width >= 60:
            out.append(
                f'<text x="{x + width / 2:.1f}" y="{panel.top + PANEL_HEIGHT / 2 + 4:.1f}" '
                f'text-anchor="middle" fill="{COLORS["nodata"]}">no data</text>'
            )
    return "".join(out)


def _frame(panel: Panel, unit: Callable[[float], str], ticks: list[float], end: float) -> str:
    grid = "".join(
        f'<line class="grid" x1="{_x(t, end):.1f}" x2="{_x(t, end):.1f}" y1="{panel.top}" '
        f'y2="{panel.bottom}" stroke="#d8dee4" stroke-dasharray="2 3"/>'
        for t in ticks[1:]
    )
    return (
        f'<rect class="panel" x="{LEFT}" y="{panel.top}" width="{PLOT_WIDTH}" '
        f'height="{PANEL_HEIGHT}" fill="#fafafa" stroke="#ccc"/>{grid}'
        f'<text x="{LEFT}" y="{panel.top - 6}">{html.escape(panel.title)}</text>'
        f'<text x="{LEFT - 6}" y="{panel.top + 10}" text-anchor="end">{unit(panel.high)}</text>'
        f'<text x="{LEFT - 6}" y="{panel.bottom}" text-anchor="end">{unit(panel.low)}</text>'
    )


def _threshold(panel: Panel, value: float | None, label: str) -> str:
    if value is None:
        return ""
    y = panel.y(value)
    label_y = y + 13 if y - panel.top < 16 else y - 4  # below the line when it hugs the top
    return (
        f'<line class="threshold" x1="{LEFT}" x2="{LEFT + PLOT_WIDTH}" y1="{y:.1f}" y2="{y:.1f}" '
        f'stroke="{COLORS["fail"]}" stroke-dasharray="6 4"/>'
        f'<text class="threshold-label" x="{LEFT + PLOT_WIDTH - 4}" y="{label_y:.1f}" '
        f'text-anchor="end" fill="{COLORS["fail"]}">{html.escape(label)}</text>'
    )


def _values(result: ScenarioResult, name: str) -> list[float]:
    """Every value of a metric the chart shows: the samples' and the checks'."""
    sampled = [s.metrics.get(name) for s in result.samples]
    checked = [check_value(c, name)[1] for c in result.judged]
    return [v for v in [*sampled, *checked] if v is not None]


def _panels(result: ScenarioResult) -> tuple[Panel, Panel, Panel]:
    rates, p99s = _values(result, SUCCESS_RATE), _values(result, DURATION)
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


def _marker(result: ScenarioResult, end: float, bottom: float) -> str:
    if result.ended is None:
        return ""
    kind = "promoted" if result.outcome == "promoted" else "rolled-back"
    color = COLORS["pass"] if kind == "promoted" else COLORS["fail"]
    x = _x(result.ended, end)
    left = x > LEFT + PLOT_WIDTH * 0.6  # label on the side with room
    label_x, anchor = (x - 4, "end") if left else (x + 4, "start")
    return (
        f'<g class="marker {kind}" data-outcome="{result.outcome}" data-time="{result.ended:.1f}">'
        f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP - 4}" y2="{bottom}" stroke="{color}" '
        'stroke-width="2"/>'
        f'<text x="{label_x:.1f}" y="{TOP + 12}" text-anchor="{anchor}" fill="{color}">'
        f"{result.outcome} at {result.ended:.1f}s</text></g>"
    )


def _no_data_mark(x: float, y: float, css: str = "check nodata") -> str:
    """A crossed grey ring: a check that judged the metric but got no value."""
    return (
        f'<circle class="{css}" cx="{x:.1f}" cy="{y:.1f}" r="5" fill="#fff" '
        f'stroke="{COLORS["nodata"]}" stroke-width="1.5"><title>no data</title></circle>'
        f'<path d="M{x - 3:.1f},{y - 3:.1f}l6,6m0,-6l-6,6" stroke="{COLORS["nodata"]}" '
        'stroke-width="1.5"/>'
    )


def _checks(result: ScenarioResult, panel: Panel, name: str, end: float, started: float) -> str:
    """Each check that judged metric ``name``: a dot at its value, or the no-data mark."""
    bound, out = _bound(result, name), []
    for c in result.judged:
        judged, value = check_value(c, name)
        if not judged:
            continue
        t = float(c.get("time", 0.0)) - started
        if value is None:
            out.append(_no_data_mark(_x(t, end), panel.bottom - 8))
            continue
        label = f"check at {t:.1f}s: {name} {fmt_value(name, value)}"
        kind = "pass" if bound.ok(value) else "fail"
        out.append(
            f'<circle class="check {kind}" cx="{_x(t, end):.1f}" cy="{panel.y(value):.1f}" '
            f'r="4" fill="{COLORS[kind]}" stroke="#fff"><title>{html.escape(label)} '
            f"{'ok' if kind == 'pass' else 'FAIL'}</title></circle>"
        )
    return "".join(out)


def _time_axis(ticks: list[float], end: float, bottom: float) -> str:
    """Tick labels under the last panel and the axis title."""
    labels = "".join(
        f'<text class="time" x="{_x(t, end):.1f}" y="{bottom + 14}" text-anchor="middle">'
        f"{t:g}s</text>"
        for t in ticks
    )
    return (
        f'{labels}<text x="{LEFT + PLOT_WIDTH / 2}" y="{bottom + 30}" text-anchor="middle">'
        "seconds since the rollout started</text>"
    )


LEGEND_ITEMS = (
    ('<line x1="0" x2="18" y1="0" y2="0" class="primary"/>', "primary", "primary"),
    ('<line x1="0" x2="18" y1="0" y2="0" class="canary"/>', "canary", "canary"),
    ('<line x1="0" x2="18" y1="0" y2="0" class="metric"/>', "canary's metric", "metric"),
    (
        f'<line x1="0" x2="18" y1="0" y2="0" stroke="{COLORS["fail"]}" stroke-dasharray="6 4"/>',
        "threshold",
        "fail",
    ),
    (f'<circle cx="9" cy="0" r="4" fill="{COLORS["pass"]}"/>', "check passed", "pass"),
    (f'<circle cx="9" cy="0" r="4" fill="{COLORS["fail"]}"/>', "check failed", "fail"),
    (_no_data_mark(9, 0, "swatch"), "no data", "nodata"),
)
"""Legend entries: the swatch (drawn at 0,0), its text and the colour of both."""


def _legend(y: float) -> str:
    """One row naming every line and mark, each in its own colour."""
    out, x = [], float(LEFT)
    for swatch, text, color in LEGEND_ITEMS:
        out.append(
            f'<g class="legend-item" transform="translate({x:.0f},{y:.0f})">{swatch}'
            f'<text x="22" y="4" fill="{COLORS[color]}">{html.escape(text)}</text></g>'
        )
        x += 22 + 6.2 * len(text) + 16  # swatch, text (about 6.2 px a character), space
    return "".join(out)


def chart(result: ScenarioResult) -> str:
    """The inline SVG chart of one scenario."""
    weights, rate, p99 = _panels(result)
    end = max([s.time for s in result.samples] + [result.ended or 0.0, 1.0])
    ticks, bottom = time_ticks(end), p99.bottom
    height = bottom + AXIS + LEGEND
    started = _rollout_start(result)
    samples = result.samples
    rate_bound, p99_bound = _bound(result, SUCCESS_RATE), _bound(result, DURATION)
    rates = [(s.time, s.metrics.get(SUCCESS_RATE)) for s in samples]
    p99s = [(s.time, s.metrics.get(DURATION)) for s in samples]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" data-scenario="'
        f'{html.escape(result.scenario.name)}" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" role="img">',
        SVG_STYLE,
        _frame(weights, lambda v: f"{v:.0f}%", ticks, end),
        _polylines(((s.time, s.primary) for s in samples), weights, end, "primary"),
        _polylines(((s.time, s.canary) for s in samples), weights, end, "canary"),
        _frame(rate, lambda v: f"{v:.0f}%", ticks, end),
        _no_data_bands(rates, rate, end),
        _threshold(rate, rate_bound.min, f"min {fmt_value(SUCCESS_RATE, rate_bound.min)}"),
        _polylines(rates, rate, end, "metric"),
        _checks(result, rate, SUCCESS_RATE, end, started),
        _frame(p99, lambda v: f"{v:.0f}ms", ticks, end),
        _no_data_bands(p99s, p99, end),
        _threshold(p99, p99_bound.max, f"max {fmt_value(DURATION, p99_bound.max)}"),
        _polylines(p99s, p99, end, "metric"),
        _checks(result, p99, DURATION, end, started),
        _marker(result, end, bottom),
        _time_axis(ticks, end, bottom),
        _legend(height - 10),
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
