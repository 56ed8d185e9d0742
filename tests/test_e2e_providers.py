"""End to end: a metric from each new provider rolls a canary back (real daemon, real servers).

Graphite (a Flagger MetricTemplate, included as a manifest), InfluxDB 1.x and
VictoriaMetrics are the real servers of ``tests/graphite.py``, ``tests/influx.py``
and ``tests/victoria.py``; Flux is answered as InfluxDB 2.x documents it; the
web provider reads a JSON endpoint on 127.0.0.1; the router is a webhook receiver.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from daemons import client_for, running_daemon, wait_for_state, write_config
from graphite import GraphiteServer
from influx import InfluxServer
from receiver import Receiver
from standin import stand_in
from support import eventually
from victoria import start_victoria

from canaryd.providers.graphite import Graphite
from canaryd.providers.influxdb import InfluxDB
from canaryd.providers.prometheus import Prometheus

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

KEY = "prod/web"


def canary(target: str, provider: str, metric: dict[str, Any]) -> dict[str, Any]:
    """A canary judged on one metric, rolled back after two failing ticks."""
    return {
        "name": "web",
        "namespace": "prod",
        "target": target,
        "router": "mesh",
        "provider": provider,
        "analysis": {
            "interval": "0.4s",
            "threshold": 2,
            "stepWeight": 20,
            "maxWeight": 60,
            "metrics": [metric],
        },
    }


async def roll_out_and_expect_rollback(config: Path, router: Receiver, reason: str) -> None:
    """Start a rollout and check it fails for ``reason`` with traffic back on the primary."""
    async with running_daemon(config), client_for(config) as client:
        await client.post(f"{KEY}/rollouts", {"revision": "v2"})
        final = await wait_for_state(client, KEY, lambda s: s["phase"] == "Failed")
    assert final["reason"] == reason
    assert (final["failedChecks"], final["canaryWeight"], final["primaryWeight"]) == (2, 0, 100)
    calls = [(r.json["action"], r.json["primaryWeight"]) for r in router.requests]
    assert calls[-1] == ("rollback", 100) and ("route", 80) not in calls[1:-1]


GRAPHITE_TEMPLATE = """\
apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata:
  name: graphite-errors
spec:
  provider:
    type: graphite
    address: {address}
  query: |
    target=summarize(
      sumSeries(canaryd.{{{{ target }}}}.errors),
      '{{{{ interval }}}}',
      'avg'
    )&from=-{{{{ interval }}}}
"""
"""Flagger's Graphite template shape; ``{{ interval }}`` must read as Graphite's ``1min``."""


async def test_graphite_metric_rolls_back(
    tmp_path: Path, graphite: GraphiteServer, unique_job: str
) -> None:
    """A Flagger graphite MetricTemplate (summarize over {{ interval }}) at 12 % rolls back."""
    graphite.send([(f"canaryd.{unique_job}.errors", 12.0, time.time())])
    async with Graphite(graphite.provider_config()) as provider:
        await eventually(
            lambda: provider.query(f"target=canaryd.{unique_job}.errors&from=-5min", budget=5),
            lambda v: v == 12.0,
        )
    (tmp_path / "k8s").mkdir()
    (tmp_path / "k8s" / "errors.yaml").write_text(GRAPHITE_TEMPLATE.format(address=graphite.url))
    metric = {
        "name": "errors",
        "templateRef": {"name": "graphite-errors"},
        "thresholdRange": {"max": 5},
    }
    async with Receiver() as router:
        config = write_config(
            tmp_path,
            [canary(unique_job, "graphite-errors-provider", metric)],
            routers={"mesh": {"type": "webhook", "url": router.url + "/routes", "timeout": "2s"}},
            include=["k8s/*.yaml"],
        )
        await roll_out_and_expect_rollback(config, router, "errors 12 > max 5")


async def test_influxdb_metric_rolls_back(
    tmp_path: Path, influxdb: InfluxServer, unique_job: str
) -> None:
    """An InfluxQL p99 of 730 ms against max 500, from a real InfluxDB, rolls back."""
    m = unique_job.replace("-", "_")
    influxdb.write([f"{m},service={unique_job} p99=730 {int(time.time())}"])
    query = f"SELECT last(p99) FROM {m} WHERE service = '{{{{ target }}}}'"
    async with InfluxDB(influxdb.provider_config()) as provider:
        rendered = query.replace("{{ target }}", unique_job)
        assert await provider.query(rendered, budget=5) == 730
    cfg = influxdb.provider_config().model_dump(exclude_none=True)
    metric = {"name": "latency", "templateRef": {"name": "p99"}, "thresholdRange": {"max": 500}}
    async with Receiver() as router:
        config = write_config(
            tmp_path,
            [canary(unique_job, "influx", metric)],
            providers={"influx": cfg},
            routers={"mesh": {"type": "webhook", "url": router.url + "/routes", "timeout": "2s"}},
            templates={"p99": {"provider": "influx", "query": query}},
        )
        await roll_out_and_expect_rollback(config, router, "latency 730 > max 500")


async def test_web_metric_rolls_back(tmp_path: Path, unique_job: str) -> None:
    """A web endpoint answering an error rate of 0.2 against max 0.01 rolls back."""
    metric = {"name": "error-rate", "templateRef": {"name": "api"}, "thresholdRange": {"max": 0.01}}
    body = b'{"data": {"errorRate": 0.2, "service": "web"}}'
    async with stand_in((200, body, 0.0)) as endpoint, Receiver() as router:
        config = write_config(
            tmp_path,
            [canary(unique_job, "api", metric)],
            providers={
                "api": {"type": "web", "address": endpoint.url, "jsonPath": "$.data.errorRate"}
            },
            routers={"mesh": {"type": "webhook", "url": router.url + "/routes", "timeout": "2s"}},
            templates={"api": {"provider": "api", "query": "/errors?service={{ target }}"}},
        )
        await roll_out_and_expect_rollback(config, router, "error-rate 0.2 > max 0.01")
        assert endpoint.requests[0].query == {"service": unique_job}


FLUX_ANSWER = (
    "#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,dateTime:RFC3339,long,string\r\n"
    "#group,false,false,true,true,false,false,true\r\n"
    "#default,count,,,,,,\r\n"
    ",result,table,_start,_stop,_time,_value,_measurement\r\n"
    ",,0,2021-01-01T00:00:00Z,2021-01-01T01:00:00Z,2021-01-01T01:00:00Z,42,istio_requests_total\r\n"
    "\r\n"
)
"""A Flux count() answer in InfluxDB 2.x's documented annotated CSV."""

INFLUXDB_TEMPLATE = """\
apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata:
  name: not-found
  namespace: test
spec:
  provider:
    type: influxdb
    secretRef:
      name: influx-token
  query: |
    from(bucket: "default")
    |> range(start: -2h)
    |> filter(fn: (r) => r["_measurement"] == "istio_requests_total")
    |> filter(fn: (r) => r[" destination_workload_namespace"] == "{{ namespace }}")
    |> filter(fn: (r) => r["destination_workload"] == "{{ target }}")
    |> filter(fn: (r) => r["response_code"] == "500")
    |> count()
    |> yield(name: "count")
"""
"""Flagger's documented InfluxDB MetricTemplate (no address: canaryd's only influxdb provider)."""


async def test_influxdb_flux_metric_rolls_back(tmp_path: Path, unique_job: str) -> None:
    """Flagger's documented InfluxDB MetricTemplate, answered 42 (Flux CSV) vs max 5, rolls back."""
    metric = {
        "name": "not-found",
        "templateRef": {"name": "not-found", "namespace": "test"},
        "thresholdRange": {"max": 5},
    }
    (tmp_path / "k8s").mkdir()
    (tmp_path / "k8s" / "not-found.yaml").write_text(INFLUXDB_TEMPLATE)
    async with (
        stand_in((200, FLUX_ANSWER.encode(), 0.0), content_type="text/csv") as influx2,
        Receiver() as router,
    ):
        provider = {"type": "influxdb", "language": "flux", "address": influx2.url, "org": "acme"}
        config = write_config(
            tmp_path,
            [canary(unique_job, "influx2", metric)],
            providers={"influx2": provider},
            routers={"mesh": {"type": "webhook", "url": router.url + "/routes", "timeout": "2s"}},
            include=["k8s/*.yaml"],
        )
        await roll_out_and_expect_rollback(config, router, "not-found 42 > max 5")
        sent = influx2.requests[0]
        assert (sent.path, sent.query) == ("/api/v2/query", {"org": "acme"})
        assert f'r["destination_workload"] == "{unique_job}"' in json.loads(sent.body)["query"]


async def test_victoria_metrics_metric_rolls_back(tmp_path: Path, unique_job: str) -> None:
    """A p99 of 730 ms from a real VictoriaMetrics (Prometheus provider) rolls back."""
    (tmp_path / "vm").mkdir()
    server = start_victoria(tmp_path / "vm")
    try:
        now_ms = int(time.time() * 1000)
        server.import_text(f'canaryd_p99_ms{{job="{unique_job}"}} 730 {now_ms}\n')
        query = 'max(canaryd_p99_ms{job="{{ target }}"})'
        async with Prometheus(server.provider_config()) as vm:
            rendered = query.replace("{{ target }}", unique_job)
            await eventually(lambda: vm.query(rendered, budget=5), lambda v: v == 730)
        metric = {"name": "latency", "templateRef": {"name": "p99"}, "thresholdRange": {"max": 500}}
        async with Receiver() as router:
            config = write_config(
                tmp_path,
                [canary(unique_job, "vm", metric)],
                providers={"vm": {"type": "prometheus", "address": server.url}},
                routers={
                    "mesh": {"type": "webhook", "url": router.url + "/routes", "timeout": "2s"}
                },
                templates={"p99": {"provider": "vm", "query": query}},
            )
            await roll_out_and_expect_rollback(config, router, "latency 730 > max 500")
    finally:
        server.stop()
