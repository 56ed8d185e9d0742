"""`canaryd demo` end to end on the real Prometheus and HAProxy: outcomes, weights, alerts, cleanup.

The four scenarios run at once (distinct temp dirs and ports) with a 2 s
analysis interval; the results are shared by the tests below. Under
``CI=true`` a missing ``prometheus``, ``haproxy`` or ``chromium`` fails the
tests that need it; elsewhere they are skipped with the install command.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import anyio
import pytest

from canaryd.demo import run_scenarios
from canaryd.demo.follow import PROBE_REQUESTS
from canaryd.demo.infra import find_binary
from canaryd.demo.parts import STANDINS_ENV, Tools
from canaryd.demo.report import chart, write_report
from canaryd.demo.results import ScenarioResult, alert_counts, verdict
from canaryd.demo.scenarios import SCENARIOS, Timings
from canaryd.demo.view import TerminalView

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TIMINGS = Timings(interval=2.0, metric_interval=8.0, rate=100.0, deadline=45.0)

HAPROXY_WEIGHTS = {0: 0, 20: 51, 40: 102, 60: 154, 80: 205, 100: 256}
"""Percent -> HAProxy's absolute weight, as canaryd's router sets it."""

VERDICTS = {
    "healthy": r"promoted: 3 of 3 checks passed, canary reached 60% \(last check: .*\)",
    "errors": r"rolled back: request-success-rate \d+(\.\d)?% < 99% on 3 of [34] checks",
    "slow": r"rolled back: request-duration \d+ms > 200ms on 3 of 3 checks",
    "no-traffic": r"rolled back: request-success-rate had no data on 3 of 3 checks",
}


def require(name: str, package: str | None = None) -> str:
    """The binary's path; missing fails under CI=true and skips elsewhere."""
    path = find_binary(name)
    if path is None:
        message = f"{name} not found; install it: apt-get install {package or name}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def results() -> dict[str, ScenarioResult]:
    """All four scenarios, run at once on the real Prometheus and HAProxy."""
    tools = Tools(require("prometheus"), require("haproxy"))
    view = TerminalView(live=False)
    done = anyio.run(lambda: run_scenarios(list(SCENARIOS), tools, TIMINGS, view, concurrent=True))
    return {r.scenario.name: r for r in done}


@pytest.mark.timeout(150)
@pytest.mark.parametrize("name", list(SCENARIOS), ids=list(SCENARIOS))
def test_outcome_and_reason(results: dict[str, ScenarioResult], name: str) -> None:
    """Each scenario ends as expected, for the expected reason, explained by its verdict."""
    r = results[name]
    assert r.as_expected, (verdict(r), r.reason, r.log_tail)
    assert re.fullmatch(VERDICTS[name], verdict(r)), verdict(r)
    assert r.parts[0].startswith("HAProxy (real)") and r.parts[1].startswith("Prometheus (real)")
    assert r.failed_checks == (0 if name == "healthy" else 3)
    assert r.threshold == 3


def test_promotion_made_haproxy_serve_v2(results: dict[str, ScenarioResult]) -> None:
    """After the healthy rollout's promotion every probe request through HAProxy reaches v2."""
    assert results["healthy"].served_after == Counter(v2=PROBE_REQUESTS)
    assert all(r.served_after is None for n, r in results.items() if n != "healthy")


@pytest.mark.parametrize("name", list(SCENARIOS), ids=list(SCENARIOS))
def test_haproxy_applied_the_weights(results: dict[str, ScenarioResult], name: str) -> None:
    """HAProxy's runtime API reported each step's weights, and primary-only weights at the end."""
    r = results[name]
    raw = [s.raw for s in r.samples if s.raw is not None]
    canary = [c for _, c in raw]
    steps = [w for i, w in enumerate(canary) if i == 0 or canary[i - 1] != w]
    expected = [20, 40, 60, 0] if name == "healthy" else [20, 0]
    if name == "errors" and len(steps) == 3:  # one lucky passing check moved it to 40% first
        expected = [20, 40, 0]
    assert steps[-len(expected) :] == [HAPROXY_WEIGHTS[w] for w in expected]
    assert r.final_raw == (256, 0)


@pytest.mark.parametrize("name", list(SCENARIOS), ids=list(SCENARIOS))
def test_alerts_reached_the_receiver(results: dict[str, ScenarioResult], name: str) -> None:
    """The local receiver got the start, every step, every failed check and the verdict."""
    counts = alert_counts(results[name])
    assert counts["rollout.started"] == 1
    if name == "healthy":
        assert counts["rollout.promoted"] == 1
        assert counts["weight.advanced"] == 4  # 20, 40, 60, then back to the primary
        assert counts["check.failed"] == 0
    else:
        assert counts["rollout.rolled_back"] == 1
        assert counts["check.failed"] == 3


def test_no_process_or_port_left(results: dict[str, ScenarioResult]) -> None:
    """Every child process is gone and every port can be bound again."""
    for r in results.values():
        assert len(r.pids) == 4  # two apps, HAProxy, Prometheus
        for pid in r.pids:
            assert not _alive(pid), f"{r.scenario.name}: process {pid} still runs"
        for port in r.ports:
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", port))


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.split(")")[-1].split()[0] != "Z"


def test_report_opens_in_headless_chromium(
    results: dict[str, ScenarioResult], tmp_path: Path
) -> None:
    """The real report has one marked chart per scenario and loads in Chromium without errors.

    Each chart labels its time axis more than twice; the no-traffic one marks its checks'
    missing data (two metrics, three checks) and draws no check dot.
    """
    path = tmp_path / "demo.html"
    write_report(path, list(results.values()))
    page = path.read_text()
    assert page.count("<svg") == 4
    assert page.count('class="marker promoted"') == 1
    assert page.count('class="marker rolled-back"') == 3
    charts = {r.scenario.name: chart(r) for r in results.values()}
    for name, svg in charts.items():
        assert len(re.findall(r'<text class="time"[^>]*>\d+s</text>', svg)) > 2, name
    assert charts["no-traffic"].count('class="check nodata"') == 6
    assert not re.search(r'class="check (pass|fail)"', charts["no-traffic"])
    chromium = require("chromium")
    done = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
            path.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "CONSOLE" not in done.stderr, done.stderr[-2000:]
    assert done.stdout.count("<svg") == 4


@pytest.mark.timeout(90)
def test_ctrl_c_stops_every_child(tmp_path: Path) -> None:
    """SIGINT during a rollout exits 130 and leaves none of the demo's children running."""
    require("prometheus"), require("haproxy")
    out = tmp_path / "out.txt"
    env = {k: v for k, v in os.environ.items() if k != STANDINS_ENV}
    with out.open("w") as sink:
        demo = subprocess.Popen(
            [sys.executable, "-m", "canaryd", "demo", "--scenario", "healthy"],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        _wait_for_line(out, "rollout of v2 started", demo, within=45.0)
        children = _children(demo.pid)
        assert len(children) == 4, out.read_text()
        demo.send_signal(signal.SIGINT)
        assert demo.wait(30) == 130, out.read_text()
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert "interrupted" in out.read_text()
    assert [pid for pid in children if _alive(pid)] == []


def _wait_for_line(path: Path, text: str, proc: subprocess.Popen[bytes], within: float) -> None:
    deadline = time.monotonic() + within
    while text not in path.read_text():
        assert proc.poll() is None, path.read_text()
        assert time.monotonic() < deadline, path.read_text()
        time.sleep(0.2)


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().split(")")[-1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found
