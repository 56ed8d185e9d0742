"""Metric provider models (docs/providers.md).

Prometheus, Graphite, InfluxDB, web, Datadog, New Relic, Dynatrace, CloudWatch.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from canaryd.config.models.base import Duration, Headers, HttpBase, Model, Timeout


class PrometheusProvider(Model):
    """A Prometheus-compatible HTTP API (Prometheus, Thanos, Mimir, VictoriaMetrics)."""

    type: Literal["prometheus"]
    address: HttpBase = "http://127.0.0.1:9090"
    timeout: Timeout = 5.0
    headers: Headers = Field(default_factory=dict)
    bearer_token_file: str | None = None
    username: str | None = None
    password_file: str | None = None
    insecureSkipVerify: bool = False


class _HttpProvider(Model):
    """What every HTTP metrics provider other than Prometheus has (docs/providers.md)."""

    address: HttpBase
    timeout: Duration = 5.0
    headers: Headers = Field(default_factory=dict)
    insecureSkipVerify: bool = False


class GraphiteProvider(_HttpProvider):
    """Graphite's render API (graphite-web, carbonapi, Grafana Cloud Graphite)."""

    type: Literal["graphite"]
    bearer_token_file: str | None = None
    username: str | None = None
    password_file: str | None = None


class InfluxDBProvider(_HttpProvider):
    """InfluxDB: InfluxQL over ``/query`` (1.x, 2.x/Cloud v1 API) or Flux (2.x)."""

    type: Literal["influxdb"]
    language: Literal["influxql", "flux"] = "influxql"
    database: str | None = None
    retentionPolicy: str | None = None
    org: str | None = None
    org_file: str | None = None
    token_file: str | None = None
    username: str | None = None
    password_file: str | None = None


class SecretHeader(Model):
    """A request header whose value is read from a secret file on every request."""

    name: str
    value_file: str

    @field_validator("name")
    @classmethod
    def _one_word(cls, v: str) -> str:
        if not v or any(c in v for c in "\r\n: "):
            raise ValueError("a header name is one word without ':'")
        return v


class WebProvider(_HttpProvider):
    """Any HTTP endpoint answering JSON, the value picked by a JSONPath (docs/providers.md)."""

    type: Literal["web"]
    method: Literal["GET", "POST"] = "GET"
    jsonPath: str
    contentType: str = "application/json"
    secret_headers: list[SecretHeader] = Field(default_factory=list)

    @field_validator("address")
    @classmethod
    def _no_query(cls, v: str) -> str:
        if "?" in v or "#" in v:
            raise ValueError("no query string here: put parameters in the template's query")
        return v

    @field_validator("contentType")
    @classmethod
    def _one_line(cls, v: str) -> str:
        if not v or "\r" in v or "\n" in v or not v.isascii():
            raise ValueError("a content type is one line of ASCII text")
        return v

    @field_validator("jsonPath")
    @classmethod
    def _json_path(cls, v: str) -> str:
        from canaryd.config.jsonpath import parse_path

        parse_path(v)  # ValueError names the problem
        return v


# SaaS metric APIs (docs/providers.md): one number from a window ending now.


class _VendorProvider(Model):
    """What the Datadog, New Relic and Dynatrace providers share."""

    address: HttpBase
    timeout: Duration = 5.0
    lookback: Duration = 600.0
    """Seconds of data an instant query covers, ending now (Flagger: 10 intervals of 1m)."""
    insecureSkipVerify: bool = False

    @field_validator("lookback")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v < 1:
            raise ValueError("must be at least 1s")
        return v


class DatadogProvider(_VendorProvider):
    """Datadog's metrics query API: v1 ``/api/v1/query`` or v2 scalar/timeseries formulas."""

    type: Literal["datadog"]
    address: HttpBase = "https://api.datadoghq.com"
    api: Literal["v1", "v2"] = "v1"
    aggregator: Literal["avg", "min", "max", "sum", "last", "area", "l2norm", "percentile"] = "avg"
    """How v2 scalar queries reduce the window to one number."""
    api_key_file: str
    application_key_file: str


class NewRelicProvider(_VendorProvider):
    """New Relic NRQL through NerdGraph (``POST /graphql``)."""

    type: Literal["newrelic"]
    address: HttpBase = "https://api.newrelic.com"
    lookback: Duration = 60.0
    account_id: int | None = None
    account_id_file: str | None = None
    api_key_file: str

    @model_validator(mode="after")
    def _one_account(self) -> NewRelicProvider:
        if (self.account_id is None) == (self.account_id_file is None):
            raise ValueError("set exactly one of account_id or account_id_file")
        return self


class DynatraceProvider(_VendorProvider):
    """Dynatrace metrics API v2 (``/api/v2/metrics/query``)."""

    type: Literal["dynatrace"]
    api_token_file: str


class CloudWatchProvider(Model):
    """Amazon CloudWatch ``GetMetricData``; credentials from the standard AWS chain."""

    type: Literal["cloudwatch"]
    region: str
    endpoint_url: HttpBase | None = None
    """Another endpoint than AWS's (a VPC endpoint, a local test server)."""
    profile: str | None = None
    """A profile of the shared AWS config/credentials files (default: the chain's choice)."""
    timeout: Duration = 5.0
    lookback: Duration = 600.0

    @field_validator("lookback")
    @classmethod
    def _positive(cls, v: float) -> float:
        return _VendorProvider._positive(v)

    @field_validator("region")
    @classmethod
    def _region(cls, v: str) -> str:
        if not v or not all(c.isalnum() or c == "-" for c in v):
            raise ValueError("must be an AWS region name such as us-east-1")
        return v


ProviderConfig = Annotated[
    PrometheusProvider
    | GraphiteProvider
    | InfluxDBProvider
    | WebProvider
    | DatadogProvider
    | NewRelicProvider
    | DynatraceProvider
    | CloudWatchProvider,
    Field(discriminator="type"),
]
