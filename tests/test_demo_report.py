"""The demo's HTML report: colours that show, check dots at their values, no data, time axis.

The tests from ``SVG`` on read the chart as XML and check geometry (where a dot sits on
the scale its threshold line defines) and, through Playwright driving Debian's chromium
(never ``playwright install``), the colours the browser really computes.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import sync_playwright

from canaryd.demo.infra import find_binary
from canaryd.demo.report import CSP, chart, render_report
from canaryd.demo.results import Bound, Sample, ScenarioResult
from canaryd.demo.scenarios import DURATION, SCENARIOS, SUCCESS_RATE

BOUNDS = [Bound(SUCCESS_RATE, min=99.0), Bound(DURATION, max=200.0)]


def _result(values: list[tuple[Any, Any]], seconds: float = 60.0) -> ScenarioResult:
    """A finished scenario with one judged check per (success rate, p99) pair, 5 s apart."""
    checks = [
        {
            "time": 5.0 * (i + 1),
            "outcome": "pass" if rate is not None and rate >= 99 else "fail",
            "metrics": [{"name": SUCCESS_RATE, "value": rate}, {"name": DURATION, "value": p99}],
        }
        for i, (rate, p99) in enumerate(values)
    ]
    samples = [
        Sample(t, 80, 20, (205, 51), {SUCCESS_RATE: 99.5, DURATION: 20.0})
        for t in (0.0, seconds / 2, seconds)
    ]
    return ScenarioResult(
        SCENARIOS["errors"],
        ["test"],
        phase="Failed",
        reason="request-success-rate 91 < min 99",
        threshold=3,
        checks=checks,
        events=[{"event": "rollout.started", "time": 0.0}],
        samples=samples,
        bounds=BOUNDS,
        ended=seconds,
    )


def _dots(page: str, kind: str) -> list[float]:
    return [float(y) for y in re.findall(rf'class="check {kind}" cx="[\d.]+" cy="([\d.]+)"', page)]


def test_check_dots_sit_at_the_value_they_judged() -> None:
    """Two checks with different success rates are drawn at different heights, lower for less."""
    page = render_report([_result([(99.9, 20), (92.0, 20)])])
    rate_pass, rate_fail = _dots(page, "pass")[0], _dots(page, "fail")[0]
    assert rate_fail > rate_pass  # SVG y grows downwards


def test_a_check_without_data_has_its_own_mark() -> None:
    """A check whose metric had no data is drawn as a "no data" mark, not left out."""
    page = render_report([_result([(None, None), (99.9, 20)])])
    assert len(_dots(page, "nodata")) == 2  # one per panel
    assert "<title>no data</title>" in page and "no data</text>" in page  # and in the legend


def test_the_time_axis_has_labels_along_it() -> None:
    """A 60 s chart labels the time axis every 10 s, not only at its ends."""
    page = render_report([_result([(99.9, 20)], seconds=60.0)])
    labels = re.findall(r'<text class="time"[^>]*>(\d+)s</text>', page)
    assert labels == ["0", "10", "20", "30", "40", "50", "60"]


@pytest.mark.integration  # starts a process (see tests/support/guard.py)
def test_legend_and_labels_keep_their_colours_in_a_browser(tmp_path: Path) -> None:
    """In Chromium every SVG text with its own colour (legend, thresholds, marker) shows it."""
    chromium = find_binary("chromium")
    if chromium is None:
        message = "chromium not found; install it: apt-get install chromium"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    page = render_report([_result([(99.9, 20), (92.0, 20)])])
    probe = (  # the page forbids scripts; this copy allows one that reads computed colours
        "<pre id=out></pre><script>document.getElementById('out').textContent="
        "[...document.querySelectorAll('svg text[fill]')].map(t=>t.getAttribute('fill')"
        "+'='+getComputedStyle(t).fill).join('\\n')</script></body>"
    )
    path = tmp_path / "report.html"
    path.write_text(page.replace(CSP, "").replace("</body>", probe), encoding="utf-8")
    argv = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"]
    done = subprocess.run(
        [*argv, path.as_uri()], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    pairs = re.search(r"<pre id=\"out\">(.*?)</pre>", done.stdout, re.S)
    assert pairs is not None and pairs[1].strip(), done.stdout[-2000:]
    for pair in pairs[1].split("\n"):
        wanted, shown = pair.split("=")
        if len(wanted) == 4:  # #rgb
            wanted = "#" + "".join(c * 2 for c in wanted[1:])
        red, green, blue = (int(wanted[i : i + 2], 16) for i in (1, 3, 5))
        assert shown == f"rgb({red}, {green}, {blue})", pair


def test_a_dot_is_red_only_for_the_metric_out_of_its_bound() -> None:
    """In a check failed by its success rate, the latency dot within its bound stays green."""
    page = render_report([_result([(92.0, 20)])])
    assert (len(_dots(page, "fail")), len(_dots(page, "pass"))) == (1, 1)


SVG = "{http://www.w3.org/2000/svg}"


def _svg(result: ScenarioResult) -> ET.Element:
    """The scenario's chart, parsed as XML."""
    return ET.fromstring(chart(result))


def _panel_rects(svg: ET.Element) -> list[tuple[float, float]]:
    """(top, bottom) of the three panels: weights, success rate, p99."""
    rects = [r for r in svg.iter(f"{SVG}rect") if r.get("fill") == "#fafafa"]
    assert len(rects) == 3
    return [(float(r.get("y", 0)), float(r.get("y", 0)) + float(r.get("height", 0))) for r in rects]


def _inside(y: float, panel: tuple[float, float]) -> bool:
    """Whether an SVG y lies within a panel."""
    return panel[0] <= y <= panel[1]


def _threshold_y(svg: ET.Element, panel: tuple[float, float]) -> float:
    """The y of the threshold line drawn in a panel."""
    lines = [x for x in svg.iter(f"{SVG}line") if x.get("class") == "threshold"]
    return next(y for x in lines if _inside(y := float(x.get("y1", 0)), panel))


def _dot_positions(svg: ET.Element, panel: tuple[float, float]) -> list[tuple[float, float]]:
    """(cx, cy) of the check dots (passed or failed) in a panel, left to right."""
    found = [
        (float(c.get("cx", 0)), float(c.get("cy", 0)))
        for c in svg.iter(f"{SVG}circle")
        if c.get("class") in ("check pass", "check fail")
    ]
    return sorted(d for d in found if _inside(d[1], panel))


def test_report_check_dots_sit_at_their_values() -> None:
    """Each check's dot sits at its value on the scale its threshold line and frame define."""
    values = [(95.0, 50.0), (97.5, 250.0), (91.8, 120.0)]
    svg = _svg(_result(values))
    _, rate, p99 = _panel_rects(svg)
    rate_min, p99_max = _threshold_y(svg, rate), _threshold_y(svg, p99)
    # success rate: the panel's top is 100 %, the threshold line 99 %
    expected_rates = [rate_min + (v - 99.0) * (rate[0] - rate_min) for v, _ in values]
    # p99: the panel's bottom is 0 ms, the threshold line 200 ms
    expected_p99s = [p99[1] - v / 200.0 * (p99[1] - p99_max) for _, v in values]

    assert [cy for _, cy in _dot_positions(svg, rate)] == pytest.approx(expected_rates, abs=0.2)
    assert [cy for _, cy in _dot_positions(svg, p99)] == pytest.approx(expected_p99s, abs=0.2)


def test_report_marks_checks_without_data() -> None:
    """A check that got no value (null or NaN) leaves a no-data mark at its time, not a dot."""
    values: list[tuple[Any, Any]] = [(99.5, 20.0), (math.nan, 30.0), (None, 40.0)]
    svg = _svg(_result(values))
    _, rate, p99 = _panel_rects(svg)
    marks = [
        (float(c.get("cx", 0)), float(c.get("cy", 0)))
        for c in svg.iter(f"{SVG}circle")
        if c.get("class") == "check nodata"
    ]
    p99_xs = [cx for cx, _ in _dot_positions(svg, p99)]

    assert len(p99_xs) == 3 and len(_dot_positions(svg, rate)) == 1
    assert sorted(x for x, y in marks if _inside(y, rate)) == pytest.approx(p99_xs[1:], abs=0.1)
    assert [y for _, y in marks if _inside(y, p99)] == []


def _axis(svg: ET.Element) -> list[tuple[float, float]]:
    """(seconds, x) of every time-axis label."""
    labels = [(t.text or "", float(t.get("x", 0))) for t in svg.iter(f"{SVG}text")]
    return [(float(text[:-1]), x) for text, x in labels if re.fullmatch(r"\d+s", text)]


@pytest.mark.parametrize("end", [11.0, 40.0, 95.0])
def test_report_time_axis_is_labelled_every_few_seconds(end: float) -> None:
    """The time axis has evenly spaced labels at round seconds, on the scale of the marker."""
    result = _result([(100, 9.9)] * 3)
    result.samples = [Sample(t / 2, 80, 20, (205, 51), {}) for t in range(int(end * 2) + 1)]
    result.ended = end * 0.7
    svg = _svg(result)
    ticks = _axis(svg)
    seconds = [t for t, _ in ticks]
    assert 3 <= len(ticks) <= 12, seconds
    step = seconds[1] - seconds[0]
    marker = next(g for g in svg.iter(f"{SVG}g") if "marker" in (g.get("class") or ""))
    marker_x = float(next(marker.iter(f"{SVG}line")).get("x1", 0))
    (t0, x0), (t1, x1) = ticks[0], ticks[-1]

    assert step in (1, 2, 5, 10, 15, 30) and seconds[0] == 0 and seconds[-1] > end - step
    assert seconds == [i * step for i in range(len(seconds))]
    assert marker_x == pytest.approx(x0 + (end * 0.7 - t0) * (x1 - x0) / (t1 - t0), abs=0.2)


def chromium() -> str:
    """Debian's chromium; missing fails under ``CI=true`` and skips elsewhere."""
    path = find_binary("chromium")
    if path:
        return path
    message = "chromium is not installed (apt-get install chromium)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


COLOURS_JS = """() => {
  const style = (el) => getComputedStyle(el);
  const texts = [...document.querySelectorAll("svg.chart text")];
  const text = (t) => style(texts.find((e) => e.textContent.trim() === t)).fill;
  const swatch = (el) => (style(el).stroke !== "none" ? style(el).stroke : style(el).fill);
  return {
    primary: [text("primary"), style(document.querySelector("polyline.primary")).stroke],
    canary: [text("canary"), style(document.querySelector("polyline.canary")).stroke],
    threshold: [
      style(texts.find((e) => e.textContent.startsWith("min "))).fill,
      style(document.querySelector("line.threshold")).stroke,
    ],
    marker: [
      style(document.querySelector(".marker text")).fill,
      style(document.querySelector(".marker line")).stroke,
    ],
    legend: [...document.querySelectorAll(".legend-item")].map((g) => [
      style(g.querySelector("text")).fill,
      swatch(g.firstElementChild),
    ]),
  };
}"""
"""Computed colours, as [text, the line or mark it names], in the rendered report."""


@pytest.mark.integration  # starts a process (see tests/support/guard.py)
def test_report_legend_and_labels_keep_their_colours_in_chromium() -> None:
    """In Chromium each legend entry and line label has its line's colour, not the page's grey."""
    results = [_result([(91.8, 9)] * 3)]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.set_content(render_report(results))
            colours = page.evaluate(COLOURS_JS)
        finally:
            browser.close()
    pairs = [colours[k] for k in ("primary", "canary", "threshold", "marker")]

    assert all(text == line for text, line in pairs), colours
    assert colours["primary"][0] != colours["canary"][0]
    assert len(colours["legend"]) >= 7, colours
    assert all(text == mark for text, mark in colours["legend"]), colours["legend"]
    assert len({text for text, _ in colours["legend"]}) >= 6, colours["legend"]
