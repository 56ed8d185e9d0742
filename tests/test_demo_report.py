"""The demo's HTML report: colours that show, check dots at their values, no data, time axis."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from canaryd.demo.infra import find_binary
from canaryd.demo.report import CSP, render_report
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
