"""canaryd's /metrics after real ticks; promtool accepts it and the shipped rules."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import aiohttp
import anyio
import pytest
import yaml
from daemons import api_url, running_daemon, write_config
from prometheus_client.parser import text_string_to_metric_families
from receiver import Receiver
from service_helpers import backends, canary
from support import eventually

from canaryd.core.analysis import CanaryState, Phase
from canaryd.errors import RouterError
from canaryd.routers import RouteRequest
from canaryd.service.metrics import DaemonMetrics
from canaryd.service.metrics_snapshot import CanarySample, Snapshot

ROOT = Path(__file__).resolve().parent.parent

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def promtool() -> str:
    """Path of promtool; missing fails under CI=true and skips elsewhere."""
    binary = shutil.which("promtool")
    if binary is None:
        message = "promtool not found; install it: apt-get install prometheus"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return binary


def samples(text: str) -> Samples:
    """Every sample of an exposition, keyed by name and labels."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(all_samples: Samples, sample: str, /, **labels: str) -> float:
    """One sample's value (KeyError when absent)."""
    return all_samples[(sample, frozenset(labels.items()))]


async def scrape(url: str) -> str:
    """GET /metrics."""
    async with aiohttp.ClientSession() as s, s.get(url + "/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return await r.text()


@pytest.mark.anyio
@pytest.mark.slow
async def test_metrics_after_a_rollout_pass_promtool(tmp_path: Path) -> None:
    """After real ticks, /metrics has every family the issue lists and promtool accepts it."""
    tool = promtool()
    async with backends() as (prom, router), Receiver(statuses=[500]) as chat:
        web = canary(threshold=5)
        web["alerts"] = [{"name": "audit", "notifier": "audit"}]
        config = write_config(
            tmp_path,
            [web, canary("api", manual_promotion=True)],
            providers={"prom": {"type": "prometheus", "address": prom.url, "timeout": "1s"}},
            routers={"lb": {"type": "webhook", "url": router.url, "timeout": "1s"}},
            notifiers={"audit": {"type": "webhook", "url": chat.url}},
        )
        async with running_daemon(config) as daemon:
            runner = daemon.runner("prod/web")
            assert runner is not None
            await runner.start_rollout("v2", {})
            await eventually(lambda: runner.state.phase is Phase.SUCCEEDED, what="promotion")
            await eventually(lambda: len(chat.requests) >= 1, what="an alert attempt")
            text = await scrape(api_url(config))
    result = await anyio.run_process([tool, "check", "metrics"], input=text.encode(), check=False)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")
    got = samples(text)
    web_labels = {"namespace": "prod", "name": "web"}
    settled = {**web_labels, "route_pending": "false"}
    assert value(got, "canaryd_canary_phase", **settled, phase="Succeeded") == 1
    assert value(got, "canaryd_canary_phase", **settled, phase="Progressing") == 0
    assert value(got, "canaryd_canary_weight", **web_labels) == 0
    assert value(got, "canaryd_canary_primary_weight", **web_labels) == 100
    assert value(got, "canaryd_canary_failed_checks", **web_labels) == 0
    assert value(got, "canaryd_canary_threshold", **web_labels) == 5
    assert value(got, "canaryd_canary_metric_value", **web_labels, metric="success") == 99.9
    assert value(got, "canaryd_canary_metric_min", **web_labels, metric="success") == 90
    assert value(got, "canaryd_rollouts_finished_total", **web_labels, result="promoted") == 1
    assert value(got, "canaryd_rollouts_finished_total", **web_labels, result="rolled_back") == 0
    assert value(got, "canaryd_tick_duration_seconds_count") >= 4
    assert value(got, "canaryd_provider_requests_total", provider="prom") >= 3
    assert value(got, "canaryd_provider_errors_total", provider="prom") == 0
    assert value(got, "canaryd_provider_request_duration_seconds_count", provider="prom") >= 3
    assert value(got, "canaryd_router_requests_total", router="lb") >= 3
    assert value(got, "canaryd_router_errors_total", router="lb") == 0
    assert value(got, "canaryd_canary_route_refused_seconds", **web_labels) == 0
    assert value(got, "canaryd_outbox_messages", status="pending") >= 1
    assert value(got, "canaryd_outbox_oldest_pending_age_seconds") > 0
    assert value(got, "canaryd_outbox_deliveries_total", outcome="failed") >= 1
    assert value(got, "canaryd_ready") == 1
    assert value(got, "canaryd_canaries") == 2


@pytest.mark.anyio
async def test_provider_errors_and_rollbacks_are_counted(tmp_path: Path) -> None:
    """A provider that fails counts errors, and the rollback it causes counts as rolled_back."""
    async with backends() as (prom, router):
        prom.statuses = [400]
        prom.body = b'{"status":"error","errorType":"bad_data","error":"parse error"}'
        config = write_config(
            tmp_path,
            [canary(threshold=2)],
            providers={"prom": {"type": "prometheus", "address": prom.url, "timeout": "1s"}},
            routers={"lb": {"type": "webhook", "url": router.url, "timeout": "1s"}},
        )
        async with running_daemon(config) as daemon:
            runner = daemon.runner("prod/web")
            assert runner is not None
            await runner.start_rollout("v2", {})
            await eventually(lambda: runner.state.phase is Phase.FAILED, what="rollback")
            got = samples(await scrape(api_url(config)))
    labels = {"namespace": "prod", "name": "web"}
    assert value(got, "canaryd_provider_errors_total", provider="prom") >= 2
    assert value(got, "canaryd_rollouts_finished_total", **labels, result="rolled_back") == 1
    assert value(got, "canaryd_canary_failed_checks", **labels) == 2
    assert (
        "canaryd_canary_metric_value",
        frozenset({**labels, "metric": "success"}.items()),
    ) not in got


@pytest.mark.anyio
async def test_a_router_refusing_forward_routes_is_counted_and_timed_until_it_recovers(
    tmp_path: Path,
) -> None:
    """While the router refuses a rollout's routes its errors count and the canary's
    route_refused_seconds grows (the rollout held at 0 %); once the router takes a route
    the gauge is 0 again and errors stop counting."""
    async with backends() as (prom, router):
        router.statuses = [400]  # refused, not retried
        config = write_config(
            tmp_path,
            [canary()],
            providers={"prom": {"type": "prometheus", "address": prom.url, "timeout": "1s"}},
            routers={"lb": {"type": "webhook", "url": router.url, "timeout": "1s"}},
        )
        url, web = api_url(config), {"namespace": "prod", "name": "web"}
        async with running_daemon(config) as daemon:
            runner = daemon.runner("prod/web")
            assert runner is not None
            await runner.start_rollout("v2", {})
            first = await eventually(
                lambda: _scraped(url),
                lambda got: value(got, "canaryd_router_errors_total", router="lb") >= 2,
                what="two refused routes",
            )
            later = await eventually(
                lambda: _scraped(url),
                lambda got: _routes(got)[1] > _routes(first)[1],
                what="one more refused route",
            )
            held = (runner.state.phase, runner.state.canary_weight, runner.state.failed_checks)
            router.statuses = [200]
            back = await eventually(
                lambda: _scraped(url),
                lambda got: value(got, "canaryd_canary_route_refused_seconds", **web) == 0,
                what="the router taking a route",
            )
            after = await eventually(
                lambda: _scraped(url),
                lambda got: _routes(got)[0] >= _routes(back)[0] + 2,
                what="two more routes",
            )
    assert held == (Phase.PROGRESSING, 0, 0)
    refused = [value(g, "canaryd_canary_route_refused_seconds", **web) for g in (first, later)]
    assert 0 < refused[0] < refused[1], refused
    assert _routes(later)[0] == _routes(later)[1] >= 2  # every route so far refused
    assert _routes(after)[1] == _routes(back)[1]
    assert value(after, "canaryd_canary_route_refused_seconds", **web) == 0


def _routes(got: Samples) -> tuple[float, float]:
    """Routes sent to router ``lb`` and those it refused."""
    requests = value(got, "canaryd_router_requests_total", router="lb")
    return requests, value(got, "canaryd_router_errors_total", router="lb")


async def _scraped(url: str) -> Samples:
    """Every sample of one scrape of /metrics."""
    return samples(await scrape(url))


class _Answers:
    """A router that answers each route with the next of ``errors`` (None: applied)."""

    def __init__(self, *errors: RouterError | None) -> None:
        self.errors = list(errors)

    async def apply(self, request: RouteRequest) -> None:
        """Raise the next error, if any."""
        error = self.errors.pop(0)
        if error is not None:
            raise error

    async def aclose(self) -> None:
        """Nothing to release."""


def _out_of_fds() -> RouterError:
    """A route canaryd could not send: no file descriptor left (its own trouble)."""
    exc = RouterError("router lb: canaryd could not open a connection")
    exc.__cause__ = OSError(errno.EMFILE, "Too many open files")
    return exc


@pytest.mark.anyio
async def test_router_refusals_start_a_run_that_a_confirmed_route_ends() -> None:
    """Every route counts as a request and each refusal as an error; the canary's run of
    refusals dates from its first refusal and ends with a confirmed route (or when the
    canary is tracked anew); canaryd's own trouble is neither an error nor a refusal."""
    metrics = DaemonMetrics()
    refused = RouterError("router lb: HTTP 400: no such backend")
    router = metrics.router("lb", _Answers(refused, refused, _out_of_fds(), None, refused))
    route = RouteRequest("prod/web", "v2", "route", 90, 10, "prod/web:1:route:0")
    runs = []
    for _ in range(3):
        with pytest.raises(RouterError):
            await router.apply(route)
        runs.append(metrics.refused_since.get("prod/web"))
    counts = _routes(samples(metrics.render().decode()))
    await router.apply(route)
    ended = "prod/web" in metrics.refused_since
    with pytest.raises(RouterError):
        await router.apply(route)
    again = "prod/web" in metrics.refused_since
    metrics.track("prod/web", CanaryState())
    assert runs[0] is not None and runs == [runs[0]] * 3
    assert counts == (3, 2)
    assert (ended, again, "prod/web" in metrics.refused_since) == (False, True, False)


@pytest.mark.parametrize(
    ("phases", "promoted", "rolled_back"),
    [
        ([Phase.PROGRESSING, Phase.SUCCEEDED], 1, 0),
        ([Phase.PROGRESSING, Phase.FAILED, Phase.FAILED], 0, 1),
        ([Phase.SUCCEEDED], 0, 0),
        ([Phase.PROGRESSING, Phase.SUCCEEDED, Phase.PROGRESSING, Phase.FAILED], 1, 1),
    ],
    ids=["promoted", "failed-once-however-often-saved", "restart-in-terminal-phase", "two"],
)
def test_rollouts_finished_counts_transitions(
    phases: list[Phase], promoted: int, rolled_back: int
) -> None:
    """A rollout is counted when its phase becomes terminal, once, not on restart."""
    metrics = DaemonMetrics()
    metrics.track("prod/web", CanaryState(phase=phases[0]))
    for phase in phases[1:]:
        metrics.changed("prod/web", CanaryState(phase=phase))
    got = samples(metrics.render().decode())
    labels = {"namespace": "prod", "name": "web"}
    assert value(got, "canaryd_rollouts_finished_total", **labels, result="promoted") == promoted
    assert (
        value(got, "canaryd_rollouts_finished_total", **labels, result="rolled_back") == rolled_back
    )


def test_a_rollback_is_counted_once_the_router_applied_it() -> None:
    """A Failed rollout whose rollback route is pending is not counted as rolled back (and
    shows as pending); it is counted once, when the router confirms the route."""
    metrics = DaemonMetrics()
    metrics.track("prod/web", CanaryState(phase=Phase.PROGRESSING))
    labels = {"namespace": "prod", "name": "web"}
    pending = CanaryState(phase=Phase.FAILED, route_pending=True)
    metrics.changed("prod/web", pending)
    metrics.changed("prod/web", pending)
    metrics.snapshot = Snapshot(
        canaries=(CanarySample("prod", "web", pending, 5, "canary", 0.0, None),)
    )
    got = samples(metrics.render().decode())
    assert value(got, "canaryd_rollouts_finished_total", **labels, result="rolled_back") == 0
    assert value(got, "canaryd_canary_route_pending", **labels) == 1
    metrics.changed("prod/web", CanaryState(phase=Phase.FAILED))
    metrics.changed("prod/web", CanaryState(phase=Phase.FAILED))
    got = samples(metrics.render().decode())
    assert value(got, "canaryd_rollouts_finished_total", **labels, result="rolled_back") == 1


def test_the_phase_of_a_pending_rollback_says_pending_as_the_api_does() -> None:
    """While a rollback waits for the router, the Failed phase series says route_pending
    "true" (the API's ``routePending``), and "false" once the router applied it."""
    labels = {"namespace": "prod", "name": "web"}
    for state, pending in (
        (CanaryState(phase=Phase.FAILED, route_pending=True), "true"),
        (CanaryState(phase=Phase.FAILED), "false"),
    ):
        metrics = DaemonMetrics()
        metrics.track("prod/web", state)
        metrics.snapshot = Snapshot(
            canaries=(CanarySample("prod", "web", state, 5, "canary", 0.0, None),)
        )
        got = samples(metrics.render().decode())
        current = {k: v for k, v in got.items() if k[0] == "canaryd_canary_phase" and v == 1}
        assert list(current) == [
            (
                "canaryd_canary_phase",
                frozenset({**labels, "phase": "Failed", "route_pending": pending}.items()),
            )
        ], current


@pytest.mark.integration  # starts a process (see tests/support/guard.py)
def test_shipped_alerting_rules_pass_promtool() -> None:
    """``promtool check rules`` accepts config/prometheus-rules.yaml."""
    result = subprocess.run(
        [promtool(), "check", "rules", str(ROOT / "config" / "prometheus-rules.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 10 rules found" in result.stdout


@pytest.mark.integration  # starts a process (see tests/support/guard.py)
def test_shipped_alerting_rules_fire_as_intended() -> None:
    """``promtool test rules``: every shipped alert fires when, and only when, it should."""
    result = subprocess.run(
        [promtool(), "test", "rules", str(ROOT / "tests" / "prometheus_rules_test.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _exported_names() -> set[str]:
    """Every sample name canaryd can export (a snapshot with one canary and one metric)."""
    metrics = DaemonMetrics()
    metrics.track("prod/web", CanaryState())
    metrics.provider("prom", None)  # type: ignore[arg-type]  # only registers its series
    metrics.router("lb", None)  # type: ignore[arg-type]  # only registers its series
    record = {"metrics": [{"name": "m", "value": 1.0, "min": 0.0, "max": 2.0}]}
    metrics.snapshot = Snapshot(
        canaries=(CanarySample("prod", "web", CanaryState(), 5, "canary", 0.0, record),)
    )
    metrics.tick_seconds.observe(0.1)
    metrics.provider_seconds.labels("prom").observe(0.1)
    return {
        s.name for f in text_string_to_metric_families(metrics.render().decode()) for s in f.samples
    }


def _canaryd_names(expr: str) -> set[str]:
    return set(re.findall(r"\bcanaryd_[a-z_]+\b", expr))


@pytest.mark.integration  # starts a process (see tests/support/guard.py)
def test_dashboard_queries_use_exported_metrics_and_parse(tmp_path: Path) -> None:
    """Every dashboard query names metrics canaryd exports and is valid PromQL (via promtool)."""
    dashboard = json.loads((ROOT / "config" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 15
    used = set().union(*(_canaryd_names(e) for e in exprs))
    assert used - _exported_names() == set()
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {
                        "record": f"dashboard:query{i}",
                        "expr": e.replace("$namespace", ".*").replace("$canary", ".*"),
                    }
                    for i, e in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_charts_the_router_metrics() -> None:
    """The dashboard has a panel for routes sent, routes refused and how long refused."""
    dashboard = json.loads((ROOT / "config" / "grafana-dashboard.json").read_text())
    charted = {
        name
        for p in dashboard["panels"]
        for t in p.get("targets", [])
        for name in _canaryd_names(t["expr"])
    }
    router = {
        "canaryd_router_requests_total",
        "canaryd_router_errors_total",
        "canaryd_canary_route_refused_seconds",
    }
    assert router - charted == set()
    assert router <= _exported_names()


def test_alerting_rules_use_exported_metrics() -> None:
    """The shipped alerting rules name only metrics canaryd exports."""
    rules = yaml.safe_load((ROOT / "config" / "prometheus-rules.yaml").read_text())
    used = set().union(*(_canaryd_names(r["expr"]) for g in rules["groups"] for r in g["rules"]))
    assert used and used - _exported_names() == set()
