"""End to end: the statistical judge compares canary and primary series from a real Prometheus."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from daemons import client_for, running_daemon, wait_for_state, write_config
from prom import PrometheusServer, open_provider
from receiver import Receiver
from support import eventually

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

KEY = "prod/web"
LOOKBACK = 8


@asynccontextmanager
async def latency_feed(prom: PrometheusServer, job: str, factor: float) -> AsyncIterator[None]:
    """Keep setting noisy primary latency and canary = primary x factor, every 0.25 s."""
    app = prom.app
    assert app is not None
    rng = random.Random(7)

    async def feed() -> None:
        while True:
            value = rng.gauss(100.0, 4.0)
            app.set_many(
                [
                    ("demo_latency_ms", {"job": f"{job}-primary"}, value),
                    ("demo_latency_ms", {"job": job}, value * factor),
                ]
            )
            await anyio.sleep(0.25)

    async with anyio.create_task_group() as tg:
        tg.start_soon(feed)
        async with open_provider(prom.provider_config()) as provider:
            await eventually(  # enough history on both sides for the first judgement
                lambda: provider.query(
                    f'count_over_time(demo_latency_ms{{job="{job}"}}[{LOOKBACK}s])', budget=2.0
                ),
                lambda v: v is not None and v >= LOOKBACK - 1,
                within=LOOKBACK + 10,
            )
        yield
        tg.cancel_scope.cancel()


def config(tmp_path: Path, job: str, router_url: str, prom: PrometheusServer) -> Path:
    """A canary with a fixed 500 ms bound and a compare metric on the same latency."""
    query = 'max(demo_latency_ms{job="{{ target }}"})'
    canaries: list[dict[str, Any]] = [
        {
            "name": "web",
            "namespace": "prod",
            "target": job,
            "router": "mesh",
            "provider": "prom",
            "analysis": {
                "interval": "0.5s",
                "threshold": 2,
                "stepWeight": 25,
                "maxWeight": 50,
                "metrics": [
                    {"name": "latency-bound", "query": query, "thresholdRange": {"max": 500}},
                    {
                        "name": "latency-vs-primary",
                        "query": query,
                        "compare": {
                            "direction": "increase",
                            "lookback": f"{LOOKBACK}s",
                            "step": "1s",
                        },
                    },
                ],
            },
        }
    ]
    return write_config(
        tmp_path,
        canaries,
        providers={"prom": {"type": "prometheus", "address": prom.url, "timeout": "2s"}},
        routers={"mesh": {"type": "webhook", "url": router_url, "timeout": "2s"}},
    )


@pytest.mark.parametrize(
    ("factor", "phase"),
    [(1.3, "Failed"), (1.0, "Succeeded")],
    ids=["30pct-slower-rolled-back", "identical-promoted"],
)
async def test_compare_judge_decides_against_the_primary(
    tmp_path: Path, prometheus: PrometheusServer, unique_job: str, factor: float, phase: str
) -> None:
    """A canary 30% slower than the primary (under 500 ms) rolls back; an equal one is promoted."""
    async with Receiver() as router, latency_feed(prometheus, unique_job, factor):
        cfg = config(tmp_path, unique_job, router.url, prometheus)
        async with running_daemon(cfg), client_for(cfg) as client:
            await client.post(f"{KEY}/rollouts", {"revision": "v2"})
            final = await wait_for_state(
                client, KEY, lambda s: s["phase"] in ("Failed", "Succeeded")
            )
            assert final["phase"] == phase
            checks = (await client.get(KEY))["checks"]
            judged = [c for c in checks if "judge" in c]
            assert judged, "the API shows the judgement of each analysed tick"
            result = judged[0]["judge"]["results"][0]
            assert result["name"] == "latency-vs-primary"
            bound = next(m for m in judged[0]["metrics"] if m["name"] == "latency-bound")
            assert bound["value"] < 500
            if phase == "Failed":
                assert final["reason"] == "compare: Fail (score 0; latency-vs-primary High)"
                assert result["classification"] == "High"
                assert result["ratio"] == pytest.approx(1.3, rel=0.05)
            else:
                assert result["classification"] == "Pass"
