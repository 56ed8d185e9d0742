"""End to end: a real daemon, a real Prometheus, a real HTTP router receiver, the real API.

The session's Prometheus scrapes ``metrics_app`` every second; each test gives
its canary a unique ``job`` and sets that job's gauges, which the canary's
metric templates read. The router is a webhook receiver on 127.0.0.1.
"""

from __future__ import annotations

import json
import signal
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from daemons import (
    client_for,
    daemon_process,
    log_events,
    running_daemon,
    wait_for_state,
    write_config,
)
from prom import PrometheusServer, open_provider
from receiver import Receiver
from support import eventually

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

KEY = "prod/web"


def canary(
    job: str,
    receiver_url: str,
    prom: PrometheusServer,
    *,
    threshold: int = 3,
    interval: str = "0.4s",
    step: int = 20,
    max_weight: int = 60,
    on_no_data: str = "fail",
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A canary judged on two gauges of ``job``, routed through a webhook receiver."""
    canaries = [
        {
            "name": "web",
            "namespace": "prod",
            "target": job,
            "router": "mesh",
            "provider": "prom",
            "analysis": {
                "interval": interval,
                "threshold": threshold,
                "stepWeight": step,
                "maxWeight": max_weight,
                "metrics": [
                    {
                        "name": "success-rate",
                        "templateRef": {"name": "success"},
                        "thresholdRange": {"min": 99},
                        "onNoData": on_no_data,
                    },
                    {
                        "name": "latency",
                        "templateRef": {"name": "latency"},
                        "thresholdRange": {"max": 500},
                        "onNoData": on_no_data,
                    },
                ],
            },
        }
    ]
    top = {
        "providers": {"prom": {"type": "prometheus", "address": prom.url, "timeout": "2s"}},
        "routers": {"mesh": {"type": "webhook", "url": receiver_url + "/routes", "timeout": "2s"}},
        "templates": {
            "success": {"provider": "prom", "query": 'max(demo_success_rate{job="{{ target }}"})'},
            "latency": {"provider": "prom", "query": 'max(demo_p99_ms{job="{{ target }}"})'},
        },
    }
    return canaries, top


async def seed(prom: PrometheusServer, job: str, success: float, p99: float) -> None:
    """Set the job's gauges and wait until Prometheus has scraped exactly these values."""
    app = prom.app
    assert app is not None
    app.set("demo_success_rate", {"job": job}, success)
    app.set("demo_p99_ms", {"job": job}, p99)
    async with open_provider(prom.provider_config()) as provider:
        await eventually(
            lambda: provider.query(
                f'max(demo_success_rate{{job="{job}"}}) + max(demo_p99_ms{{job="{job}"}})',
                budget=2.0,
            ),
            lambda v: v == success + p99,
            within=15,
        )


def routes(receiver: Receiver) -> list[tuple[str, int, int]]:
    """(action, primaryWeight, canaryWeight) of every router call received."""
    out = []
    for r in receiver.requests:
        body = r.json
        assert body["canary"] == KEY and body["revision"] == "v2"
        out.append((body["action"], body["primaryWeight"], body["canaryWeight"]))
    return out


async def test_healthy_canary_is_promoted_through_every_step(
    tmp_path: Path, prometheus: PrometheusServer, unique_job: str
) -> None:
    """A canary within bounds walks 20, 40, 60, is promoted, and traffic returns to primary."""
    await seed(prometheus, unique_job, 99.9, 120)
    async with Receiver() as router:
        canaries, top = canary(unique_job, router.url, prometheus)
        config = write_config(tmp_path, canaries, **top)
        async with running_daemon(config), client_for(config) as client:
            await client.post(f"{KEY}/rollouts", {"revision": "v2"})
            final = await wait_for_state(
                client, KEY, lambda s: s["phase"] in ("Succeeded", "Failed")
            )
            assert final["phase"] == "Succeeded"
            assert (final["canaryWeight"], final["primaryWeight"], final["failedChecks"]) == (
                0,
                100,
                0,
            )
            assert routes(router) == [
                ("route", 80, 20),
                ("route", 60, 40),
                ("route", 40, 60),
                ("promote", 40, 60),
                ("route", 100, 0),
            ]
            detail = await client.get(KEY)
            values = {m["name"]: m["value"] for m in detail["checks"][0]["metrics"]}
            assert values == {"success-rate": 99.9, "latency": 120}


@pytest.mark.parametrize(
    ("success", "p99", "reason"),
    [(91.5, 120, "success-rate 91.5 < min 99"), (99.9, 730, "latency 730 > max 500")],
    ids=["error-rate-breach", "latency-breach"],
)
async def test_breach_rolls_back_after_exactly_threshold_failing_ticks(
    tmp_path: Path,
    prometheus: PrometheusServer,
    unique_job: str,
    success: float,
    p99: float,
    reason: str,
) -> None:
    """threshold failing ticks roll back in the tick that reaches it, with the metric's reason."""
    await seed(prometheus, unique_job, success, p99)
    async with Receiver() as router:
        canaries, top = canary(unique_job, router.url, prometheus, threshold=3)
        config = write_config(tmp_path, canaries, **top)
        async with running_daemon(config), client_for(config) as client:
            await client.post(f"{KEY}/rollouts", {"revision": "v2"})
            final = await wait_for_state(client, KEY, lambda s: s["phase"] == "Failed")
            assert final["failedChecks"] == 3
            assert final["reason"] == reason
            assert routes(router) == [("route", 80, 20), ("rollback", 100, 0)]
            checks = (await client.get(KEY))["checks"]
            assert [c["outcome"] for c in reversed(checks)] == ["pass", "fail", "fail", "fail"]


async def test_no_traffic_means_no_data_and_rolls_back(
    tmp_path: Path, prometheus: PrometheusServer, unique_job: str
) -> None:
    """A canary whose metrics return nothing is rolled back, reason "no data"."""
    async with Receiver() as router:
        canaries, top = canary(unique_job, router.url, prometheus, threshold=2)
        config = write_config(tmp_path, canaries, **top)
        async with running_daemon(config), client_for(config) as client:
            await client.post(f"{KEY}/rollouts", {"revision": "v2"})
            final = await wait_for_state(client, KEY, lambda s: s["phase"] == "Failed")
            assert final["reason"] == "success-rate: no data"
            assert final["failedChecks"] == 2
            assert routes(router)[-1] == ("rollback", 100, 0)


async def test_on_no_data_hold_waits_instead_of_rolling_back(
    tmp_path: Path, prometheus: PrometheusServer, unique_job: str
) -> None:
    """With onNoData: hold, a canary without data neither advances nor fails, then resumes."""
    async with Receiver() as router:
        canaries, top = canary(unique_job, router.url, prometheus, threshold=1, on_no_data="hold")
        config = write_config(tmp_path, canaries, **top)
        async with running_daemon(config), client_for(config) as client:
            await client.post(f"{KEY}/rollouts", {"revision": "v2"})
            held = await wait_for_state(
                client, KEY, lambda s: len([c for c in s["checks"] if c["outcome"] == "hold"]) >= 5
            )
            assert (held["phase"], held["canaryWeight"], held["failedChecks"]) == (
                "Progressing",
                20,
                0,
            )
            await seed(prometheus, unique_job, 99.9, 100)
            final = await wait_for_state(client, KEY, lambda s: s["phase"] == "Succeeded")
            assert final["failedChecks"] == 0


async def test_sigkill_mid_rollout_resumes_where_it_was(
    tmp_path: Path, prometheus: PrometheusServer, unique_job: str
) -> None:
    """After SIGKILL the rollout resumes with the same revision, weight and failedChecks."""
    await seed(prometheus, unique_job, 50.0, 100)  # failing at first
    async with Receiver() as router:
        canaries, top = canary(
            unique_job, router.url, prometheus, threshold=8, interval="1s", step=10, max_weight=100
        )
        config = write_config(tmp_path, canaries, **top)
        log = tmp_path / "daemon.log"
        async with client_for(config) as client:
            with daemon_process(config, log) as proc:
                await eventually(lambda: client.get(""), lambda v: True, within=20)
                await client.post(f"{KEY}/rollouts", {"revision": "v2"})
                await wait_for_state(client, KEY, lambda s: s["failedChecks"] >= 1)
                await seed(prometheus, unique_job, 99.9, 100)
                await wait_for_state(client, KEY, lambda s: s["canaryWeight"] >= 30)
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
            before = stored_state(tmp_path / "state.db")
            assert before["revision"] == "v2" and before["phase"] == "Progressing"
            assert before["failed_checks"] >= 1 and before["canary_weight"] >= 30
            restarted_at = log.stat().st_size
            with daemon_process(config, log):
                # the first step the new process takes starts from the stored weight (the
                # API may answer after that step: the interval is 1 s and the machine slow)
                advanced = await eventually(
                    lambda: log_events(log, "weight.advanced", offset=restarted_at),
                    lambda e: bool(e),
                    within=20,
                )
                step = advanced[0]
                assert (step["revision"], step["previousWeight"], step["failedChecks"]) == (
                    "v2",
                    before["canary_weight"],
                    before["failed_checks"],
                )
                final = await wait_for_state(
                    client, KEY, lambda s: s["phase"] == "Succeeded", within=40
                )
                assert final["failedChecks"] == before["failed_checks"]
        calls = routes(router)
        promote = calls.index(("promote", 0, 100))
        steps = [w for _, _, w in calls[:promote]]
        assert steps == sorted(steps), f"weights went back after the restart: {steps}"
        assert sorted(set(steps)) == list(range(10, 101, 10))


def stored_state(db: Path) -> dict[str, Any]:
    """The canary's state as the daemon last persisted it."""
    with sqlite3.connect(db) as conn:
        (raw,) = conn.execute("SELECT state FROM canaries WHERE key=?", (KEY,)).fetchone()
    state: dict[str, Any] = json.loads(raw)
    return state
