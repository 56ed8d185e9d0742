"""Flagger MetricTemplates of the SaaS providers: ``canaryd check`` and real rollbacks.

The templates are the examples of Flagger's metrics documentation (addresses
pointed at the test's servers); their ``secretRef`` secrets are files of
``secrets/NAME/`` next to the manifest, one file per key, as Kubernetes mounts
them. Each end-to-end test runs a real daemon whose canary is
judged on one such template, served by the provider's fake (Datadog, New Relic,
Dynatrace) or moto (CloudWatch), and rolled back by it through a webhook router.
"""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from cloudwatch_server import FAKE_CREDENTIALS, REGION, put_metric, start_moto
from daemons import client_for, running_daemon, wait_for_state, write_config
from fake_datadog import API_KEY, APP_KEY, DatadogFake
from fake_dynatrace import TOKEN, DynatraceFake
from fake_newrelic import ACCOUNT, NewRelicFake
from fake_newrelic import API_KEY as NR_KEY
from receiver import Receiver
from vendorfake import Canned

from canaryd.cli import main
from canaryd.config.loader import load_config
from canaryd.errors import ConfigError

pytestmark = pytest.mark.anyio

KEY = "prod/web"

DATADOG = """\
apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata:
  name: not-found-percentage
  namespace: istio-system
spec:
  provider:
    type: datadog
    address: ADDRESS
    secretRef:
      name: datadog
  query: |
    100 - (
      sum:istio.mesh.request.count{
        reporter:destination,
        destination_workload_namespace:{{ namespace }},
        destination_workload:{{ target }},
        !response_code:404
      }.as_count()
      /
      sum:istio.mesh.request.count{
        reporter:destination,
        destination_workload_namespace:{{ namespace }},
        destination_workload:{{ target }}
      }.as_count()
    ) * 100
"""

NEWRELIC = """\
apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata:
  name: newrelic-error-rate
  namespace: ingress-nginx
spec:
  provider:
    type: newrelic
    address: ADDRESS
    secretRef:
      name: newrelic
  query: |
    SELECT
        filter(sum(nginx_ingress_controller_requests), WHERE status >= '500') /
        sum(nginx_ingress_controller_requests) * 100
    FROM Metric
    WHERE metricName = 'nginx_ingress_controller_requests'
    AND ingress = '{{ variables.ingress }}' AND  namespace = '{{ namespace }}'
"""

DYNATRACE = """\
apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata:
  name: response-time-95pct
  namespace: istio-system
spec:
  provider:
    type: dynatrace
    address: ADDRESS
    secretRef:
      name: dynatrace
  query: |
    builtin:service.response.time:filter(eq(dt.entity.service,SERVICE-ABCDEFG0123456789)):percentile(95)
"""

CLOUDWATCH = """\
apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata:
  name: cloudwatch-error-rate
spec:
  provider:
    type: cloudwatch
    region: ap-northeast-1 # specify the region of your metrics
  query: |
    [
        {
            "Id": "e1",
            "Expression": "m1 / m2",
            "Label": "ErrorRate"
        },
        {
            "Id": "m1",
            "MetricStat": {
                "Metric": {
                    "Namespace": "MyKubernetesCluster",
                    "MetricName": "ErrorCount",
                    "Dimensions": [{"Name": "appName", "Value": "{{ name }}.{{ namespace }}"}]
                },
                "Period": 60,
                "Stat": "Sum",
                "Unit": "Count"
            },
            "ReturnData": false
        },
        {
            "Id": "m2",
            "MetricStat": {
                "Metric": {
                    "Namespace": "MyKubernetesCluster",
                    "MetricName": "RequestCount",
                    "Dimensions": [{"Name": "appName", "Value": "{{ name }}.{{ namespace }}"}]
                },
                "Period": 60,
                "Stat": "Sum",
                "Unit": "Count"
            },
            "ReturnData": false
        }
    ]
"""

SECRETS = {
    "datadog": {"datadog_api_key": API_KEY, "datadog_application_key": APP_KEY},
    "newrelic": {"newrelic_account_id": str(ACCOUNT), "newrelic_query_key": NR_KEY},
    "dynatrace": {"dynatrace_token": TOKEN},
}


def write_manifests(folder: Path, address: str, *templates: str) -> None:
    """The templates in ``folder/k8s/`` and their secrets in ``folder/k8s/secrets/<name>/``."""
    k8s = folder / "k8s"
    for secret, keys in SECRETS.items():
        (k8s / "secrets" / secret).mkdir(parents=True, exist_ok=True)
        for key, value in keys.items():
            path = k8s / "secrets" / secret / key
            path.write_text(value + "\n")
            path.chmod(0o600)
    for i, text in enumerate(templates):
        (k8s / f"template-{i}.yaml").write_text(text.replace("ADDRESS", address))


def top_level(tmp_path: Path, provider: str, metric: dict[str, Any], router: str) -> Path:
    """A config including the manifests, with one canary judged on ``metric``."""
    canary = {
        "name": "web",
        "namespace": "prod",
        "target": "web",
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
    return write_config(
        tmp_path,
        [canary],
        include=["k8s/*.yaml"],
        routers={"mesh": {"type": "webhook", "url": router + "/routes", "timeout": "2s"}},
    )


def test_flagger_templates_pass_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Flagger's datadog, newrelic, dynatrace and cloudwatch examples pass ``canaryd check``."""
    write_manifests(tmp_path, "https://api.example.com", DATADOG, NEWRELIC, DYNATRACE, CLOUDWATCH)
    metric = {
        "name": "m",
        "templateRef": {"name": "not-found-percentage", "namespace": "istio-system"},
        "thresholdRange": {"max": 5},
    }
    config = top_level(tmp_path, "not-found-percentage-provider", metric, "http://127.0.0.1:1")
    assert main(["check", "-c", str(config)]) == 0, capsys.readouterr()
    providers = load_config(config).settings.providers
    secrets = tmp_path / "k8s" / "secrets"
    dd = providers["not-found-percentage-provider"]
    assert dd.model_dump(include={"type", "api_key_file", "application_key_file"}) == {
        "type": "datadog",
        "api_key_file": str(secrets / "datadog" / "datadog_api_key"),
        "application_key_file": str(secrets / "datadog" / "datadog_application_key"),
    }
    nr = providers["newrelic-error-rate-provider"]
    assert nr.model_dump(include={"api_key_file", "account_id_file"}) == {
        "api_key_file": str(secrets / "newrelic" / "newrelic_query_key"),
        "account_id_file": str(secrets / "newrelic" / "newrelic_account_id"),
    }
    dt = providers["response-time-95pct-provider"]
    assert dt.model_dump(include={"type", "api_token_file"}) == {
        "type": "dynatrace",
        "api_token_file": str(secrets / "dynatrace" / "dynatrace_token"),
    }
    cw = providers["cloudwatch-error-rate-provider"]
    assert cw.model_dump(include={"type", "region"}) == {
        "type": "cloudwatch",
        "region": "ap-northeast-1",
    }


def test_missing_secret_file_fails_check(tmp_path: Path) -> None:
    """A secretRef whose key file is missing fails the check, naming the file."""
    write_manifests(tmp_path, "https://api.example.com", DYNATRACE)
    (tmp_path / "k8s" / "secrets" / "dynatrace" / "dynatrace_token").unlink()
    metric = {
        "name": "m",
        "templateRef": {"name": "response-time-95pct", "namespace": "istio-system"},
        "thresholdRange": {"max": 5},
    }
    config = top_level(tmp_path, "response-time-95pct-provider", metric, "http://127.0.0.1:1")
    with pytest.raises(ConfigError) as err:
        load_config(config)
    assert "secrets/dynatrace/dynatrace_token" in str(err.value)


def test_missing_secret_ref_is_one_problem(tmp_path: Path) -> None:
    """A datadog template without secretRef is one problem naming it, not a missing key each."""
    no_ref = DATADOG.replace("    secretRef:\n      name: datadog\n", "")
    write_manifests(tmp_path, "https://api.example.com", no_ref)
    metric = {
        "name": "m",
        "templateRef": {"name": "not-found-percentage", "namespace": "istio-system"},
        "thresholdRange": {"max": 5},
    }
    config = top_level(tmp_path, "not-found-percentage-provider", metric, "http://127.0.0.1:1")
    with pytest.raises(ConfigError) as err:
        load_config(config)
    assert [str(p).split(": ", 1)[1] for p in err.value.problems] == [
        "spec.provider: missing key 'secretRef' (datadog reads its keys from a secret)"
    ]


async def rolled_back(config: Path, router: Receiver) -> dict[str, Any]:
    """Start a rollout, wait for it to fail, and check the router saw one step and a rollback."""
    async with running_daemon(config), client_for(config) as client:
        await client.post(f"{KEY}/rollouts", {"revision": "v2"})
        final = await wait_for_state(client, KEY, lambda s: s["phase"] in ("Failed", "Succeeded"))
    actions = [(r.json["action"], r.json["primaryWeight"]) for r in router.requests]
    assert actions[0] == ("route", 80) and actions[-1] == ("rollback", 100)
    return dict(final)


def rendered(template: str) -> str:
    """The query of a template as canaryd renders it for canary prod/web."""
    query = template.split("  query: |\n", 1)[1]
    text = textwrap.dedent(query).replace("{{ namespace }}", "prod").replace("{{ target }}", "web")
    return text.replace("{{ variables.ingress }}", "web-ingress")


@pytest.fixture
async def router(anyio_backend: str) -> AsyncIterator[Receiver]:
    """The webhook router's receiver."""
    async with Receiver() as r:
        yield r


@pytest.mark.slow
async def test_datadog_metric_rolls_back(tmp_path: Path, router: Receiver) -> None:
    """A Datadog 404 percentage above its bound fails the checks and rolls the canary back."""
    async with DatadogFake() as fake:
        fake.put(rendered(DATADOG), [(time.time() - 30, 12.5)])
        write_manifests(tmp_path, fake.url, DATADOG)
        metric = {
            "name": "404s-percentage",
            "templateRef": {"name": "not-found-percentage", "namespace": "istio-system"},
            "thresholdRange": {"max": 5},
        }
        config = top_level(tmp_path, "not-found-percentage-provider", metric, router.url)
        final = await rolled_back(config, router)
    assert (final["phase"], final["reason"]) == ("Failed", "404s-percentage 12.5 > max 5")


@pytest.mark.slow
async def test_newrelic_metric_rolls_back(tmp_path: Path, router: Receiver) -> None:
    """A New Relic error rate above its bound fails the checks and rolls the canary back."""
    async with NewRelicFake() as fake:
        fake.put_now(rendered(NEWRELIC), 7.0)
        write_manifests(tmp_path, fake.url, NEWRELIC)
        metric = {
            "name": "error-rate",
            "templateRef": {"name": "newrelic-error-rate", "namespace": "ingress-nginx"},
            "thresholdRange": {"max": 5},
            "templateVariables": {"ingress": "web-ingress"},
        }
        config = top_level(tmp_path, "newrelic-error-rate-provider", metric, router.url)
        final = await rolled_back(config, router)
    assert (final["phase"], final["reason"]) == ("Failed", "error-rate 7 > max 5")


@pytest.mark.slow
async def test_dynatrace_metric_rolls_back(tmp_path: Path, router: Receiver) -> None:
    """A Dynatrace p95 response time above its bound fails the checks and rolls back."""
    async with DynatraceFake() as fake:
        fake.put(rendered(DYNATRACE), [(time.time() - 30, 1500.0)])
        write_manifests(tmp_path, fake.url, DYNATRACE)
        metric = {
            "name": "response-time-95pct",
            "templateRef": {"name": "response-time-95pct", "namespace": "istio-system"},
            "thresholdRange": {"max": 1000},
        }
        config = top_level(tmp_path, "response-time-95pct-provider", metric, router.url)
        final = await rolled_back(config, router)
    assert (final["phase"], final["reason"]) == ("Failed", "response-time-95pct 1500 > max 1000")


@pytest.mark.integration
async def test_cloudwatch_metric_rolls_back(
    tmp_path: Path, router: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CloudWatch error count (moto, put by the test) above its bound rolls the canary back.

    The Flagger template has no endpoint: the standard AWS setting
    AWS_ENDPOINT_URL_CLOUDWATCH points botocore at moto, credentials come from
    the environment.
    """
    for name, value in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    query = json.loads(CLOUDWATCH.split("  query: |\n", 1)[1])
    errors = {**query[1], "ReturnData": True}  # moto evaluates no metric math beyond "m1"
    template = (
        CLOUDWATCH.split("  query: |\n", 1)[0] + "  query: |\n    " + json.dumps([errors]) + "\n"
    )
    with start_moto() as moto:
        monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDWATCH", moto.url)
        template = template.replace("ap-northeast-1", REGION)
        now = time.time()
        await put_metric(
            moto, "MyKubernetesCluster", "ErrorCount", {"appName": "web.prod"}, [(now - 30, 42.0)]
        )
        write_manifests(tmp_path, "", template)
        metric = {
            "name": "app-errors",
            "templateRef": {"name": "cloudwatch-error-rate"},
            "thresholdRange": {"max": 10},
        }
        config = top_level(tmp_path, "cloudwatch-error-rate-provider", metric, router.url)
        final = await rolled_back(config, router)
    assert (final["phase"], final["reason"]) == ("Failed", "app-errors 42 > max 10")


async def started(client: Any, within: float = 20.0) -> None:
    """Wait until the daemon's API answers (bounded)."""
    from canaryd.errors import ClientError

    with anyio.fail_after(within):
        while True:
            try:
                await client.get(KEY)
                return
            except ClientError:
                await anyio.sleep(0.2)


@pytest.mark.slow
async def test_keys_never_reach_the_log(tmp_path: Path, router: Receiver) -> None:
    """A real daemon whose Datadog, New Relic and Dynatrace answers echo their keys logs none."""
    from daemons import daemon_process

    echoes = (f"denied {API_KEY} {APP_KEY}", f"denied {NR_KEY}", f"denied Api-Token {TOKEN}")
    fakes = (DatadogFake(), NewRelicFake(), DynatraceFake())
    async with fakes[0] as dd, fakes[1] as nr, fakes[2] as dt:
        for fake, echo in zip((dd, nr, dt), echoes, strict=True):  # each echoes its own keys
            fake.script(*[Canned(400, {"errors": [echo], "error": {"message": echo}})] * 50)
        write_manifests(tmp_path / "dd", dd.url, DATADOG)
        write_manifests(tmp_path / "nr", nr.url, NEWRELIC)
        write_manifests(tmp_path / "dt", dt.url, DYNATRACE)
        metrics = [
            {
                "name": name,
                "templateRef": {"name": name, "namespace": ns},
                "thresholdRange": {"max": 1},
            }
            for name, ns in (
                ("not-found-percentage", "istio-system"),
                ("newrelic-error-rate", "ingress-nginx"),
                ("response-time-95pct", "istio-system"),
            )
        ]
        config = top_level(tmp_path, "not-found-percentage-provider", metrics[0], router.url)
        doc = yaml.safe_load(config.read_text())
        doc["include"] = ["dd/k8s/*.yaml", "nr/k8s/*.yaml", "dt/k8s/*.yaml"]
        doc["canaries"][0]["analysis"]["metrics"] = metrics
        doc["canaries"][0]["analysis"]["threshold"] = 1
        doc["canaries"][0]["analysis"]["metrics"][1]["templateVariables"] = {"ingress": "x"}
        config.write_text(yaml.safe_dump(doc))
        log = tmp_path / "daemon.log"
        with daemon_process(config, log):
            async with client_for(config) as client:
                await started(client)
                await client.post(f"{KEY}/rollouts", {"revision": "v2"})
                final = await wait_for_state(client, KEY, lambda s: s["phase"] == "Failed")
    assert "***" in final["reason"]
    text = log.read_text()
    assert "denied ***" in text  # the failures were logged, scrubbed
    for key in (API_KEY, APP_KEY, NR_KEY, TOKEN):
        assert key not in text
        assert key not in json.dumps(final)
