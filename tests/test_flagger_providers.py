"""Flagger MetricTemplates of the graphite and influxdb types map onto canaryd's providers."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from canaryd.cli import main
from canaryd.config import GraphiteProvider, InfluxDBProvider
from canaryd.config.flaggermap import Mapped
from canaryd.config.flaggerproviders import map_template
from canaryd.config.loader import load_config
from canaryd.errors import ConfigError

GRAPHITE_TEMPLATE = """\
apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata:
  name: graphite-request-success-rate
spec:
  provider:
    type: graphite
    address: http://graphite.monitoring
  query: |
    target=summarize(
      asPercent(
        sumSeries(
          stats.timers.httpServerRequests.app.{{target}}.exception.*.method.*.outcome.{CLIENT_ERROR,INFORMATIONAL,REDIRECTION,SUCCESS}.status.*.uri.*.count
        ),
        sumSeries(
          stats.timers.httpServerRequests.app.{{target}}.exception.*.method.*.outcome.*.status.*.uri.*.count
        )
      ),
      {{interval}},
      'avg'
    )
"""
"""Flagger's documented Graphite MetricTemplate (docs/gitbook/usage/metrics.md), as published."""

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
"""Flagger's documented InfluxDB MetricTemplate: no address, so canaryd's influxdb provider."""

MAIN = """\
providers:
  influx: {type: influxdb, language: flux, address: "http://127.0.0.1:8086", org: acme}
routers:
  lb: {type: webhook, url: "http://127.0.0.1:9/routes"}
canaries:
  - name: web
    namespace: test
    target: web
    router: lb
    provider: influx
    analysis:
      interval: 1m
      stepWeight: 10
      metrics:
        - name: success
          templateRef: {name: graphite-request-success-rate}
          thresholdRange: {min: 99}
        - name: not-found
          templateRef: {name: not-found, namespace: test}
          thresholdRange: {max: 5}
include: [k8s/*.yaml]
"""


def write(directory: Path, name: str, text: str) -> Path:
    """Write a file (creating directories) and return its path."""
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_flagger_graphite_and_influxdb_templates_load(tmp_path: Path) -> None:
    """Graphite gets a graphite provider at its address; influxdb (no address) the Flux one."""
    write(tmp_path, "k8s/graphite.yaml", GRAPHITE_TEMPLATE)
    write(tmp_path, "k8s/influx.yaml", INFLUXDB_TEMPLATE)
    settings = load_config(write(tmp_path, "c.yaml", MAIN), environ={}).settings
    graphite = settings.providers[settings.templates["graphite-request-success-rate"].provider]
    assert isinstance(graphite, GraphiteProvider)
    assert graphite.address == "http://graphite.monitoring"
    influx_name = next(n for n, t in settings.templates.items() if t.query.startswith("from("))
    influx = settings.providers[settings.templates[influx_name].provider]
    assert isinstance(influx, InfluxDBProvider) and influx.language == "flux"
    assert settings.templates[influx_name].provider == "influx"


def test_canaryd_check_accepts_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``canaryd check`` passes on a config that includes both Flagger templates."""
    write(tmp_path, "k8s/graphite.yaml", GRAPHITE_TEMPLATE)
    write(tmp_path, "k8s/influx.yaml", INFLUXDB_TEMPLATE)
    code = main(["check", "--config", str(write(tmp_path, "c.yaml", MAIN))])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "config OK" in out.out


def test_influxdb_template_without_an_influxdb_provider_is_a_problem(tmp_path: Path) -> None:
    """An influxdb template without address and no influxdb provider defined is refused."""
    write(tmp_path, "k8s/influx.yaml", INFLUXDB_TEMPLATE)
    main_text = MAIN.replace(
        'influx: {type: influxdb, language: flux, address: "http://127.0.0.1:8086", org: acme}',
        'influx: {type: prometheus, address: "http://127.0.0.1:9090"}',
    ).replace(
        "          templateRef: {name: graphite-request-success-rate}\n"
        "          thresholdRange: {min: 99}\n",
        "          templateRef: {name: not-found, namespace: test}\n"
        "          thresholdRange: {min: 99}\n",
    )
    with pytest.raises(ConfigError, match="cannot choose a influxdb provider: no influxdb"):
        load_config(write(tmp_path, "c.yaml", main_text), environ={})


def test_unknown_template_provider_type_is_a_warning_naming_the_supported_ones(
    tmp_path: Path,
) -> None:
    """A MetricTemplate of a type canaryd does not query is left out, with a warning."""
    write(tmp_path, "k8s/x.yaml", GRAPHITE_TEMPLATE.replace("type: graphite", "type: splunk"))
    write(tmp_path, "k8s/influx.yaml", INFLUXDB_TEMPLATE)
    only_influx = MAIN.replace(
        "        - name: success\n"
        "          templateRef: {name: graphite-request-success-rate}\n"
        "          thresholdRange: {min: 99}\n",
        "",
    )
    loaded = load_config(write(tmp_path, "c.yaml", only_influx), environ={})
    assert "graphite-request-success-rate" not in loaded.settings.templates
    assert any(
        "provider type 'splunk' is not supported (canaryd queries: cloudwatch, datadog, "
        "dynatrace, graphite, influxdb, newrelic, prometheus)" in w
        for w in loaded.warnings
    ), loaded.warnings


def secret_dir(root: Path, name: str, **keys: str) -> None:
    """The files of a Kubernetes Secret's keys, as canaryd reads a secretRef (mode 600)."""
    directory = root / "k8s" / "secrets" / name
    directory.mkdir(parents=True)
    for key, value in keys.items():
        (directory / key).write_text(value)
        (directory / key).chmod(0o600)


def test_secret_refs_become_secret_files(tmp_path: Path) -> None:
    """Graphite's username/password and InfluxDB's token/org Secrets become *_file keys."""
    auth = "    secretRef:\n      name: graphite-basic-auth\n  query: |"
    write(tmp_path, "k8s/graphite.yaml", GRAPHITE_TEMPLATE.replace("  query: |", auth, 1))
    addressed = INFLUXDB_TEMPLATE.replace(
        "    type: influxdb\n", "    type: influxdb\n    address: https://influx.example\n"
    )
    write(tmp_path, "k8s/influx.yaml", addressed)
    secret_dir(tmp_path, "graphite-basic-auth", username="flagger", password="pw-1234")
    secret_dir(tmp_path, "influx-token", token="tok-1234", org="acme")
    settings = load_config(write(tmp_path, "c.yaml", MAIN), environ={}).settings
    graphite = settings.providers[settings.templates["graphite-request-success-rate"].provider]
    assert isinstance(graphite, GraphiteProvider) and graphite.username == "flagger"
    assert graphite.password_file == str(tmp_path / "k8s/secrets/graphite-basic-auth/password")
    influx_name = next(n for n, t in settings.templates.items() if t.query.startswith("from("))
    influx = settings.providers[settings.templates[influx_name].provider]
    assert isinstance(influx, InfluxDBProvider) and influx.language == "flux"
    assert influx.token_file == str(tmp_path / "k8s/secrets/influx-token/token")
    assert influx.org_file == str(tmp_path / "k8s/secrets/influx-token/org")


def test_influxdb_secret_without_org_is_a_problem(tmp_path: Path) -> None:
    """An InfluxDB secretRef without its org key is refused, naming the file to create."""
    influx = INFLUXDB_TEMPLATE.replace(
        "    type: influxdb\n", "    type: influxdb\n    address: https://influx.example\n"
    )
    write(tmp_path, "k8s/influx.yaml", influx)
    write(tmp_path, "k8s/graphite.yaml", GRAPHITE_TEMPLATE)
    secret_dir(tmp_path, "influx-token", token="tok-1234")
    with pytest.raises(ConfigError, match=r"put the InfluxDB organization in the file .*/org"):
        load_config(write(tmp_path, "c.yaml", MAIN), environ={})


@pytest.mark.parametrize("kind", ["graphite", "datadog"], ids=["template", "saas"])
def test_secret_ref_without_a_name_is_a_problem_at_its_key(kind: str) -> None:
    """A provider's secretRef that names no secret is a problem at spec.provider.secretRef."""
    out = Mapped("MetricTemplate", name="t")
    spec = {"provider": {"type": kind, "secretRef": {"key": "x"}}, "query": "q"}

    map_template(spec, {}, out)

    assert out.secret_ref is None
    assert out.problems == [(("spec", "provider", "secretRef"), "must be a mapping with a name")]
