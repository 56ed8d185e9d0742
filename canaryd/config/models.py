"""Typed configuration models (docs/design.md, "Configuration").

The models validate *shape and values*; cross references (a canary naming an
undefined provider, ...) and file positions are handled by :mod:`canaryd.config.loader`,
which turns every problem into ``FILE:LINE:COLUMN: key.path: message``.

Keys follow Flagger's spelling (``stepWeight``, ``thresholdRange``, ...) so an
``analysis:`` block can be pasted from a Flagger ``Canary``. Secrets are never
inline values that could reach a log: they are read from ``*_file`` paths or
from the environment, and held as :class:`pydantic.SecretStr`.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from canaryd.core.events import ALERTABLE
from canaryd.core.judgeinput import MetricSettings, ThresholdsInput
from canaryd.durations import parse_duration
from canaryd.errors import SecretError
from canaryd.redact import protect


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite duration")
    return value


Duration = Annotated[float, BeforeValidator(parse_duration), AfterValidator(_finite)]
"""Seconds; accepts ``30s``, ``1m``, ``1h30m``, ``500ms`` or a number of seconds."""

MIN_INTERVAL = 1.0
"""Floor of ``analysis.interval`` and ``metrics[].interval`` (seconds); see docs/flagger.md."""

MIN_INTERVAL_ENV = "UNSAFE_CANARYD_MIN_INTERVAL"
"""Environment variable lowering :data:`MIN_INTERVAL` (test suites only; never below 10 ms)."""


def min_interval() -> float:
    """The interval floor in force: :data:`MIN_INTERVAL` unless lowered for a test suite.

    Test suites drive real daemons with sub-second intervals; they set
    ``UNSAFE_CANARYD_MIN_INTERVAL`` (seconds, at least 0.01). Anything
    unparsable is ignored. See docs/flagger.md, "Floors".
    """
    text = os.environ.get(MIN_INTERVAL_ENV)
    if not text:
        return MIN_INTERVAL
    try:
        value = float(text)
    except ValueError:
        return MIN_INTERVAL
    return max(0.01, min(value, MIN_INTERVAL)) if math.isfinite(value) else MIN_INTERVAL


def _interval_floor(value: float) -> float:
    floor = min_interval()
    if value < floor:
        raise ValueError(f"must be at least {floor:g}s (the floor; docs/flagger.md)")
    return value


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError("must be greater than 0s")
    return value


Interval = Annotated[Duration, AfterValidator(_interval_floor)]
"""An analysis or metric interval: a :data:`Duration` of at least :func:`min_interval`."""

Timeout = Annotated[Duration, AfterValidator(_positive)]
"""A timeout or delay: a :data:`Duration` greater than zero."""


def _http_url(value: str | None) -> str | None:
    if value is not None and not value.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    return value


HttpUrl = Annotated[str, AfterValidator(_http_url)]
"""A URL with an ``http://`` or ``https://`` scheme (``hooks.slack.com/...`` is refused)."""

Finite = Annotated[float, Field(allow_inf_nan=False)]
"""A number that is neither NaN nor infinite."""

DEFAULT_HTTP_TIMEOUT = 10.0
"""Default timeout (seconds) of every outgoing HTTP call that does not set its own."""


def _check_name(value: str) -> str:
    if not value or len(value) > 253 or not all(c.isalnum() or c in "-_." for c in value):
        raise ValueError("must be 1-253 characters of letters, digits, '-', '_' or '.'")
    return value


Name = Annotated[str, AfterValidator(_check_name)]


def _check_template_key(value: str) -> str:
    namespace, _, name = value.rpartition("/")
    if namespace:
        _check_name(namespace)
    _check_name(name)
    return value


TemplateKey = Annotated[str, AfterValidator(_check_template_key)]
"""A template's name, or ``NAMESPACE/NAME`` for a namespaced MetricTemplate."""


class Model(BaseModel):
    """Base of every config model: unknown keys are errors, models are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def read_secret(
    path: str | None, env: str | None = None, *, environ: Mapping[str, str] | None = None
) -> SecretStr | None:
    """Read a secret from a file (stripped of surrounding whitespace) or an env variable.

    Args:
        path: the secret file (``*_file`` keys); must not be readable by others.
        env: name of the environment variable (``*_env`` keys), used when there is no path.
        environ: the environment to read ``env`` from (default: ``os.environ``).

    Raises:
        SecretError: the file cannot be read or is readable by others, or the variable is
            not set.
    """
    if path:
        if "\x00" in path:
            raise SecretError("secret file path contains a NUL byte")
        p = Path(path)
        try:
            mode = p.stat().st_mode
            if mode & 0o004:
                raise SecretError(
                    f"secret file {path} is readable by others; run: chmod o-r {path}"
                )
            value = p.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SecretError(f"cannot read secret file {path}: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise SecretError(f"secret file {path} is not UTF-8 text") from exc
    elif env:
        found = (os.environ if environ is None else environ).get(env)
        if found is None:
            raise SecretError(f"environment variable {env} is not set")
        value = found
    else:
        return None
    protect(value)  # never in a log line: docs/reliability.md, "Log lines"
    return SecretStr(value)


# --------------------------------------------------------------------------- providers


HEADER_SHAPE = "a name is one word without ':', a value one line"
HEADER_LATIN1 = "only Latin-1 text can be sent"


def header_problem(name: str, value: str) -> str | None:
    """Why ``name: value`` cannot be sent as one HTTP request header; None if it can.

    The one header rule of canaryd: the config checks configured headers with it, the
    providers check headers built from secret files with it before sending.
    """
    if not name or any(c in name for c in "\r\n: ") or "\r" in value or "\n" in value:
        return HEADER_SHAPE
    try:
        f"{name}{value}".encode("latin-1")
    except UnicodeEncodeError:
        return HEADER_LATIN1
    return None


def checked_headers(headers: dict[str, str]) -> dict[str, str]:
    """``headers`` unchanged if every one can be sent.

    Raises:
        ValueError: ``header '<name>': <problem>`` for the first that cannot.
    """
    for name, value in headers.items():
        problem = header_problem(name, value)
        if problem is not None:
            raise ValueError(f"header {name!r}: {problem}")
    return headers


class PrometheusProvider(Model):
    """A Prometheus-compatible HTTP API (Prometheus, Thanos, Mimir, VictoriaMetrics)."""

    type: Literal["prometheus"]
    address: str = "http://127.0.0.1:9090"
    timeout: Timeout = 5.0
    headers: dict[str, str] = Field(default_factory=dict)
    bearer_token_file: str | None = None
    username: str | None = None
    password_file: str | None = None
    insecureSkipVerify: bool = False

    @field_validator("address")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return v.rstrip("/")

    @field_validator("headers")
    @classmethod
    def _header_lines(cls, v: dict[str, str]) -> dict[str, str]:
        return checked_headers(v)


class _HttpProvider(Model):
    """What every HTTP metrics provider other than Prometheus has (docs/providers.md)."""

    address: str
    timeout: Duration = 5.0
    headers: dict[str, str] = Field(default_factory=dict)
    insecureSkipVerify: bool = False

    @field_validator("address")
    @classmethod
    def _http_url(cls, v: str) -> str:
        return PrometheusProvider._http_url(v)

    @field_validator("headers")
    @classmethod
    def _header_lines(cls, v: dict[str, str]) -> dict[str, str]:
        return checked_headers(v)


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

    address: str
    timeout: Duration = 5.0
    lookback: Duration = 600.0
    """Seconds of data an instant query covers, ending now (Flagger: 10 intervals of 1m)."""
    insecureSkipVerify: bool = False

    @field_validator("address")
    @classmethod
    def _http_url(cls, v: str) -> str:
        return PrometheusProvider._http_url(v)

    @field_validator("lookback")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v < 1:
            raise ValueError("must be at least 1s")
        return v


class DatadogProvider(_VendorProvider):
    """Datadog's metrics query API: v1 ``/api/v1/query`` or v2 scalar/timeseries formulas."""

    type: Literal["datadog"]
    address: str = "https://api.datadoghq.com"
    api: Literal["v1", "v2"] = "v1"
    aggregator: Literal["avg", "min", "max", "sum", "last", "area", "l2norm", "percentile"] = "avg"
    """How v2 scalar queries reduce the window to one number."""
    api_key_file: str
    application_key_file: str


class NewRelicProvider(_VendorProvider):
    """New Relic NRQL through NerdGraph (``POST /graphql``)."""

    type: Literal["newrelic"]
    address: str = "https://api.newrelic.com"
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
    endpoint_url: str | None = None
    """Another endpoint than AWS's (a VPC endpoint, a local test server)."""
    profile: str | None = None
    """A profile of the shared AWS config/credentials files (default: the chain's choice)."""
    timeout: Duration = 5.0
    lookback: Duration = 600.0

    @field_validator("endpoint_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        return None if v is None else PrometheusProvider._http_url(v)

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


# --------------------------------------------------------------------------- routers


class WebhookRouter(Model):
    """The generic mesh controller: canaryd POSTs route/promote/rollback actions."""

    type: Literal["webhook"]
    url: HttpUrl
    timeout: Timeout = DEFAULT_HTTP_TIMEOUT
    secret_file: str | None = None
    secret_env: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)


class HAProxyRouter(Model):
    """HAProxy runtime API: server weights in one backend (socket is a unix path or host:port)."""

    type: Literal["haproxy"]
    socket: str
    backend: str
    primary: str
    canary: str
    timeout: Timeout = 5.0
    promotion: Literal["address", "verify"] = "address"
    """``address``: promote points the primary server at the canary's address
    (``set server ... addr``); ``verify``: promote only checks both servers exist
    (the deploy pipeline redeploys the primary itself). See docs/routers.md."""


def _one_or_more(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _proxy_words(values: list[str]) -> list[str]:
    for value in values:
        if not value or any(c.isspace() or c in ";{}#'\"\\" for c in value):
            raise ValueError(f"{value!r}: one word without spaces, quotes, ';', '{{', '}}' or '#'")
    return values


ProxyWords = Annotated[
    list[str], BeforeValidator(_one_or_more), AfterValidator(_proxy_words), Field(min_length=1)
]
"""One or more words that go into a proxy's config file (addresses, names)."""

ProxyWord = Annotated[str, AfterValidator(lambda v: _proxy_words([v])[0])]
"""One word that goes into a proxy's config file."""


def _directive_text(value: str) -> str:
    if any(c in ";{}#\r\n" for c in value):
        raise ValueError(
            f"{value!r}: one directive's text, without ';', '{{', '}}', '#' or newlines"
        )
    return value.strip()


NginxText = Annotated[str, AfterValidator(_directive_text)]
"""Text that goes into one NGINX directive (canaryd adds the ``;``)."""


class NginxRouter(Model):
    """NGINX: an ``upstream`` block in an include file (test, reload), or NGINX Plus's API."""

    type: Literal["nginx"]
    file: str | None = None
    api: HttpUrl | None = None
    upstream: Annotated[str, AfterValidator(_check_name)]
    primary: ProxyWords
    canary: ProxyWords
    server_options: NginxText = ""
    directives: list[NginxText] = Field(default_factory=list)
    nginx_bin: str = "nginx"
    conf: str | None = None
    test_command: list[str] | None = Field(default=None, min_length=1)
    reload_command: list[str] | None = Field(default=None, min_length=1)
    pid_path: str | None = "/run/nginx.pid"
    username: str | None = None
    password_file: str | None = None
    timeout: Timeout = 10.0
    promotion: Literal["address", "verify"] = "address"
    """``address`` (file mode): promote points the primary's server lines at the
    canary's addresses; ``verify``: promote only sets weights (the deploy
    pipeline redeploys the primary). See docs/routers.md, "NGINX"."""

    @model_validator(mode="after")
    def _file_or_api(self) -> NginxRouter:
        if (self.file is None) == (self.api is None):
            raise ValueError("set exactly one of file (NGINX) or api (NGINX Plus)")
        if (
            self.api is not None
            and self.promotion == "address"
            and "promotion" in self.model_fields_set
        ):
            raise ValueError("promotion: address needs file; through NGINX Plus's api it is verify")
        return self


class EnvoyRouter(Model):
    """Envoy: canaryd writes the RDS file Envoy watches and reads it back via the admin API."""

    type: Literal["envoy"]
    file: str
    admin: HttpUrl = "http://127.0.0.1:9901"
    route_config: ProxyWord
    primary: ProxyWord
    canary: ProxyWord
    domains: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    prefix: str = "/"
    log_path: str | None = None
    timeout: Timeout = 10.0
    promotion: Literal["address", "verify"] = "verify"
    """``address``: promote points the primary cluster at the canary cluster's
    endpoints by replacing ``primary_eds`` (the primary cluster is an EDS
    cluster reading that file); ``verify``: promote only sets weights. See
    docs/routers.md, "Envoy"."""
    primary_eds: str | None = None

    @model_validator(mode="after")
    def _eds_for_address(self) -> EnvoyRouter:
        if self.promotion == "address" and self.primary_eds is None:
            raise ValueError(
                "promotion: address needs primary_eds (the EDS file of the primary cluster)"
            )
        return self


class TraefikRouter(Model):
    """Traefik: canaryd writes a ``weighted`` service for the file provider, reads it back."""

    type: Literal["traefik"]
    file: str
    api: HttpUrl = "http://127.0.0.1:8080"
    service: Annotated[str, AfterValidator(_check_name)]
    primary: ProxyWord
    canary: ProxyWord
    provider: Annotated[str, AfterValidator(_check_name)] = "file"
    username: str | None = None
    password_file: str | None = None
    timeout: Timeout = 10.0
    promotion: Literal["address", "verify"] = "address"
    """``address``: promote points the weighted service's primary side at the
    canary service's server URLs (a service in canaryd's file); ``verify``:
    promote only sets weights. See docs/routers.md, "Traefik"."""


def _http_base(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    return value.rstrip("/")


HttpBase = Annotated[str, AfterValidator(_http_base)]


class CaddyRouter(Model):
    """Caddy's admin API: weighted_round_robin weights of one reverse_proxy handler.

    ``handler`` is the handler's ``@id`` or its config path (``/config/apps/...``);
    ``primary``/``canary`` are upstream ``dial`` addresses (docs/routers.md, "Caddy").
    """

    type: Literal["caddy"]
    admin: HttpBase = "http://127.0.0.1:2019"
    handler: str = Field(min_length=1)
    primary: str = Field(min_length=1)
    canary: str = Field(min_length=1)
    timeout: Timeout = 5.0
    promotion: Literal["address", "verify"] = "address"
    """``address``: promote points the primary upstream's ``dial`` at the canary's
    (and tags it ``@id`` ``<handler>-canaryd-primary``); ``verify``: promote only
    sets weights. See docs/routers.md, "Caddy"."""

    @field_validator("handler")
    @classmethod
    def _id_or_path(cls, v: str) -> str:
        if v.startswith("/") and not v.startswith("/config/"):
            raise ValueError("must be an @id or a path starting with /config/")
        if any(c in v for c in "?#") or any(c.isspace() for c in v):
            raise ValueError("must not contain '?', '#' or whitespace")
        return v.rstrip("/")


class ConsulRouter(Model):
    """Consul service mesh: a ``service-splitter`` config entry (docs/routers.md, "Consul")."""

    type: Literal["consul"]
    address: HttpBase = "http://127.0.0.1:8500"
    service: Name
    primary_subset: str | None = None
    canary_subset: str | None = None
    primary_service: Name | None = None
    canary_service: Name | None = None
    datacenter: str | None = None
    namespace: str | None = None
    partition: str | None = None
    token_file: str | None = None
    timeout: Timeout = 5.0

    @model_validator(mode="after")
    def _two_targets(self) -> ConsulRouter:
        primary = (self.primary_service or self.service, self.primary_subset)
        if primary == (self.canary_service or self.service, self.canary_subset):
            raise ValueError(
                "primary and canary are the same split target; set primary_subset/"
                "canary_subset or primary_service/canary_service"
            )
        return self


class AlbRouter(Model):
    """AWS Application Load Balancer: target-group weights of a listener's forward action."""

    type: Literal["alb"]
    listener_arn: str = Field(min_length=1)
    rule_arn: str | None = None
    primary_target_group_arn: str = Field(min_length=1)
    canary_target_group_arn: str = Field(min_length=1)
    region: str | None = None
    endpoint_url: HttpBase | None = None
    timeout: Timeout = 10.0


class ExecRouter(Model):
    """Any other router: runs ``command`` (an argv, no shell) with the action and weights."""

    type: Literal["exec"]
    command: list[str] = Field(min_length=1)
    timeout: Timeout = 30.0
    env: dict[str, str] = Field(default_factory=dict)
    retry_exit_codes: list[int] = Field(default_factory=lambda: [75])

    @field_validator("command")
    @classmethod
    def _program(cls, v: list[str]) -> list[str]:
        if not v[0] or any("\x00" in arg for arg in v):
            raise ValueError("the first item is the program; no item may contain NUL")
        return v


RouterConfig = Annotated[
    WebhookRouter
    | HAProxyRouter
    | CaddyRouter
    | ConsulRouter
    | AlbRouter
    | ExecRouter
    | NginxRouter
    | EnvoyRouter
    | TraefikRouter,
    Field(discriminator="type"),
]


# --------------------------------------------------------------------------- notifiers


class Severity(StrEnum):
    """Alert severity; a filter of ``warn`` lets warn and error through."""

    INFO = "info"
    WARN = "warn"
    ERROR = "error"


class Notifier(Model):
    """Where alerts go: chat webhooks, a generic JSON webhook, or CloudEvents."""

    type: Literal["slack", "msteams", "discord", "gchat", "rocket", "webhook", "cloudevents"]
    url: HttpUrl | None = None
    url_file: str | None = None
    secret_file: str | None = None
    secret_env: str | None = None
    channel: str | None = None
    username: str | None = None
    timeout: Timeout = DEFAULT_HTTP_TIMEOUT

    @model_validator(mode="after")
    def _one_url(self) -> Notifier:
        if (self.url is None) == (self.url_file is None):
            raise ValueError("set exactly one of url or url_file")
        return self


# --------------------------------------------------------------------------- templates


class Template(Model):
    """A metric template (Flagger's MetricTemplate): a query for one provider.

    ``namespace`` (set for MetricTemplate manifests) makes ``templateRef``
    lookups namespaced, as in Flagger; a template without one matches any.
    """

    provider: Name
    query: str
    namespace: str | None = None


# --------------------------------------------------------------------------- canaries


class ThresholdRange(Model):
    """Inclusive bounds a metric value must stay within to pass."""

    min: Finite | None = None
    max: Finite | None = None

    @model_validator(mode="after")
    def _ordered(self) -> ThresholdRange:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class TemplateRef(Model):
    """Reference to an entry of ``templates`` (``namespace`` kept for Flagger manifests)."""

    name: Name
    namespace: str | None = None


class OnNoData(StrEnum):
    """What a metric without data does to the check."""

    FAIL = "fail"
    PASS = "pass"
    HOLD = "hold"


class CompareSpec(MetricSettings):
    """Judge this metric by comparing the canary with the primary (Mann-Whitney).

    The judge keys are those of ``canaryd judge`` (direction, tolerance, ...);
    ``lookback``/``step`` shape the range query run for each side. By default
    the metric's query is rendered once with ``target`` = the canary and once
    with ``target`` = the primary; ``primaryQuery``/``canaryQuery`` override that.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    lookback: Interval = 300.0
    step: Interval = 10.0
    primaryQuery: str | None = None
    canaryQuery: str | None = None


class OnMarginal(StrEnum):
    """What a Marginal statistical judgement does to the check."""

    HOLD = "hold"
    FAIL = "fail"
    PASS = "pass"


class JudgeSpec(Model):
    """How the compare metrics of one tick are scored together."""

    thresholds: ThresholdsInput = Field(default_factory=ThresholdsInput)
    groupWeights: dict[str, Annotated[float, Field(ge=0, le=100)]] = Field(default_factory=dict)
    onMarginal: OnMarginal = OnMarginal.HOLD

    @field_validator("groupWeights")
    @classmethod
    def _weights_fit(cls, weights: dict[str, float]) -> dict[str, float]:
        """All configured weights count against 100 (Kayenta's scoring, docs/judge.md)."""
        total = sum(weights.values())
        if total > 100.0:
            raise ValueError(f"groupWeights add up to {total:g}, more than 100")
        return weights


class MetricSpec(Model):
    """One metric check of an analysis (Flagger's ``analysis.metrics[]``).

    With ``compare`` the metric is judged against the primary instead of
    ``thresholdRange``.
    """

    name: Name
    threshold: Finite | None = None
    thresholdRange: ThresholdRange | None = None
    templateRef: TemplateRef | None = None
    query: str | None = None
    provider: Name | None = None
    interval: Interval = 60.0
    onNoData: OnNoData = OnNoData.FAIL
    templateVariables: dict[str, str] = Field(default_factory=dict)
    compare: CompareSpec | None = None
    dryRun: bool = False
    """Judged, recorded and shown, but never fails or holds a check (docs/flagger.md)."""

    @model_validator(mode="after")
    def _deprecated_threshold(self) -> MetricSpec:
        """Flagger's deprecated ``threshold``, read as Flagger reads it (docs/flagger.md).

        Without ``thresholdRange`` it is the minimum of ``request-success-rate``
        and the maximum of every other metric; with one it is ignored.
        """
        if self.threshold is None or self.thresholdRange is not None:
            return self
        bound = "min" if self.name == "request-success-rate" else "max"
        derived = ThresholdRange.model_validate({bound: self.threshold})
        object.__setattr__(self, "thresholdRange", derived)
        return self

    @model_validator(mode="after")
    def _source(self) -> MetricSpec:
        if self.templateRef is not None and self.query is not None:
            raise ValueError("set templateRef or query, not both")
        if self.compare is not None:
            if self.dryRun:
                raise ValueError("dryRun applies to thresholdRange metrics, not compare")
            return self
        if self.thresholdRange is None or (
            self.thresholdRange.min is None and self.thresholdRange.max is None
        ):
            raise ValueError("thresholdRange needs min, max or both (or the deprecated threshold)")
        return self


class WebhookType(StrEnum):
    """Flagger's webhook types; the ``confirm-*`` ones are gates."""

    CONFIRM_ROLLOUT = "confirm-rollout"
    PRE_ROLLOUT = "pre-rollout"
    ROLLOUT = "rollout"
    CONFIRM_TRAFFIC_INCREASE = "confirm-traffic-increase"
    CONFIRM_PROMOTION = "confirm-promotion"
    POST_ROLLOUT = "post-rollout"
    ROLLBACK = "rollback"
    EVENT = "event"


GATE_TYPES = frozenset(
    {
        WebhookType.CONFIRM_ROLLOUT,
        WebhookType.CONFIRM_TRAFFIC_INCREASE,
        WebhookType.CONFIRM_PROMOTION,
    }
)


class WebhookSpec(Model):
    """One webhook of an analysis.

    ``timeout`` is the HTTP timeout of one call, as in Flagger, and is honoured
    even when it is longer than the tick's observation budget (the tick then
    waits for the hook; docs/flagger.md). ``gateTimeout`` (gates only) is how
    long a gate may stay closed before the rollout fails. A gate without
    ``url`` is a manual gate opened by ``canaryd approve``. ``muteAlert``
    (gates) keeps the "waiting for approval" alert of this hook off the chat
    channels; ``disableTLS`` skips certificate verification for this hook.
    """

    name: Name
    type: WebhookType = WebhookType.ROLLOUT
    url: HttpUrl | None = None
    timeout: Timeout = DEFAULT_HTTP_TIMEOUT
    gateTimeout: Timeout | None = None
    retries: int = Field(default=0, ge=0, le=10)
    metadata: dict[str, str] = Field(default_factory=dict)
    secret_file: str | None = None
    secret_env: str | None = None
    muteAlert: bool = False
    disableTLS: bool = False

    @model_validator(mode="after")
    def _gate_fields(self) -> WebhookSpec:
        if self.type not in GATE_TYPES:
            if self.url is None:
                raise ValueError(f"a {self.type.value} webhook needs a url")
            if self.gateTimeout is not None:
                raise ValueError("gateTimeout applies to confirm-* gates only")
        return self


class Analysis(Model):
    """Flagger's ``spec.analysis`` plus canaryd's extensions."""

    interval: Interval = 60.0
    threshold: int = Field(default=1, ge=0)
    maxWeight: int | None = Field(default=None, ge=1, le=100)
    stepWeight: int | None = Field(default=None, ge=1, le=100)
    stepWeights: list[Annotated[int, Field(ge=1, le=100)]] | None = None
    stepWeightPromotion: int | None = Field(default=None, ge=1, le=100)
    iterations: int = Field(default=0, ge=0)
    match: list[dict[str, Any]] = Field(default_factory=list)
    metrics: list[MetricSpec] = Field(default_factory=list)
    webhooks: list[WebhookSpec] = Field(default_factory=list)
    judge: JudgeSpec = Field(default_factory=JudgeSpec)

    @field_validator("threshold")
    @classmethod
    def _flagger_threshold(cls, v: int) -> int:
        """Unset or 0 means 1, as Flagger's ``GetAnalysisThreshold`` (docs/flagger.md)."""
        return v or 1

    @field_validator("stepWeights")
    @classmethod
    def _increasing(cls, v: list[int] | None) -> list[int] | None:
        if v is not None:
            if not v:
                raise ValueError("must not be empty")
            for a, b in itertools.pairwise(v):
                if b <= a:
                    raise ValueError(f"must be strictly increasing ({a} then {b})")
        return v

    @model_validator(mode="after")
    def _strategy(self) -> Analysis:
        if self.iterations == 0 and self.stepWeight is None and self.stepWeights is None:
            raise ValueError(
                "set stepWeight or stepWeights (canary), or iterations (blue/green, A/B)"
            )
        if self.match and self.iterations == 0:
            raise ValueError("match (A/B testing) needs iterations > 0")
        names = [m.name for m in self.metrics]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"metric names must be unique: {', '.join(dup)}")
        hooks = [w.name for w in self.webhooks]
        dup = sorted({n for n in hooks if hooks.count(n) > 1})
        if dup:
            raise ValueError(f"webhook names must be unique: {', '.join(dup)}")
        return self

    @property
    def strategy(self) -> Literal["canary", "blue-green", "ab"]:
        """Which strategy Flagger would pick for these keys."""
        if self.iterations > 0:
            return "ab" if self.match else "blue-green"
        return "canary"

    @property
    def weight_notes(self) -> list[str]:
        """Where the weight keys do not mean what they say, as Flagger reads them."""
        notes = []
        if self.stepWeight is not None and self.stepWeights is not None:
            notes.append(
                f"stepWeight and stepWeights are both set: steps of {self.stepWeight}% "
                f"up to {self.stepWeights[-1]}% (the last of stepWeights), as in Flagger"
            )
        if self.stepWeights and self.maxWeight not in (None, self.stepWeights[-1]):
            notes.append(
                f"maxWeight {self.maxWeight} is ignored: stepWeights go up to "
                f"{self.stepWeights[-1]}%, as in Flagger"
            )
        return notes

    @property
    def weight_differences(self) -> list[str]:
        """Where canaryd's weights deliberately differ from Flagger's (docs/flagger.md)."""
        weights = self.weights
        if not self.stepWeight or not weights:
            return []
        flagger = min(100, -(-weights[-1] // self.stepWeight) * self.stepWeight)
        if flagger == weights[-1]:
            return []
        return [
            f"the last step stops at {weights[-1]}% where Flagger would overshoot to "
            f"{flagger}% (stepWeight {self.stepWeight})"
        ]

    @property
    def weights(self) -> list[int]:
        """The canary weights to walk through, ending at the effective maxWeight.

        As in Flagger, ``stepWeights`` win over ``maxWeight`` (their last entry is
        the maximum), and ``stepWeight`` with ``stepWeights`` takes steps of
        ``stepWeight`` up to that maximum. Unlike Flagger, the last step stops at
        the maximum instead of overshooting it (docs/flagger.md).
        """
        if self.stepWeights and not self.stepWeight:
            return list(self.stepWeights)
        step = self.stepWeight or 0
        cap = self.stepWeights[-1] if self.stepWeights else (self.maxWeight or 100)
        if not step:
            return []
        weights = list(range(step, cap + 1, step))
        return weights if weights and weights[-1] == cap else [*weights, cap]


def _alert_events(value: str | list[str]) -> str | list[str]:
    if isinstance(value, str):
        if value not in ("flagger", "all"):
            raise ValueError("must be flagger, all or a list of event names")
        return value
    for name in value:
        if name not in ALERTABLE:
            raise ValueError(
                f"unknown alert event {name!r}; expected one of: {', '.join(sorted(ALERTABLE))}"
            )
    return value


AlertEvents = Annotated[str | list[str], AfterValidator(_alert_events)]
"""``flagger``, ``all`` or a list of alertable event names."""


class AlertSpec(Model):
    """Send this canary's events to a notifier, filtered by severity.

    ``events`` chooses which events: ``flagger`` (the default: the moments
    Flagger alerts on), ``all``, or a list of event names (docs/events.md,
    "Alerts"). ``severity`` filters them as in Flagger.
    """

    name: Name
    notifier: Name
    severity: Severity = Severity.INFO
    events: AlertEvents = "flagger"


SHARED_ANALYSES_MAX = 4096
"""Distinct analysis blocks remembered for sharing between canaries (and reloads)."""

_SHARED_ANALYSES: dict[str, Analysis] = {}


class CanaryConfig(Model):
    """One canary: what to analyse, with which provider, through which router."""

    name: Name
    namespace: Name = "default"
    target: str | None = None
    primaryTarget: str | None = None
    router: Name
    provider: Name | None = None
    meshProvider: str | None = None
    service: str | None = None
    ingress: str | None = None
    route: str | None = None
    variables: dict[str, str] = Field(default_factory=dict)
    skipAnalysis: bool = False
    suspend: bool = False
    analysis: Analysis
    alerts: list[AlertSpec] = Field(default_factory=list)

    @field_validator("analysis", mode="wrap")
    @classmethod
    def _shared_analysis(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Analysis:
        """Canaries written from one template share one (immutable) analysis model.

        A validated analysis takes kilobytes; thousands of canaries with the same
        analysis block would otherwise hold thousands of equal copies.
        """
        if not isinstance(value, dict):
            return handler(value)  # type: ignore[no-any-return]
        try:
            key = json.dumps(value, allow_nan=False)  # key order kept: it shows in `match`
        except (TypeError, ValueError):  # not plain JSON data: no sharing
            return handler(value)  # type: ignore[no-any-return]
        shared = _SHARED_ANALYSES.get(key)
        if shared is None:
            shared = handler(value)
            if len(_SHARED_ANALYSES) >= SHARED_ANALYSES_MAX:
                _SHARED_ANALYSES.clear()
            _SHARED_ANALYSES[key] = shared
        return shared

    @property
    def key(self) -> str:
        """``namespace/name``."""
        return f"{self.namespace}/{self.name}"

    @property
    def target_name(self) -> str:
        """What built-in queries select on: ``target`` or, by default, the canary's name."""
        return self.target or self.name

    @property
    def service_name(self) -> str:
        """The ``service`` template variable: ``service`` or, as in Flagger, the target."""
        return self.service or self.target_name

    @property
    def ingress_name(self) -> str:
        """The ``ingress`` variable: ``ingress``, else ``variables.ingress``, else the target."""
        return self.ingress or self.variables.get("ingress") or self.target_name

    @property
    def route_name(self) -> str:
        """The ``route`` variable: ``route``, else ``variables.route``, else the target."""
        return self.route or self.variables.get("route") or self.target_name

    @property
    def primary_target_name(self) -> str:
        """What compare metrics select on for the primary: ``<target>-primary`` by default."""
        return self.primaryTarget or f"{self.target_name}-primary"


class ApiConfig(Model):
    """HTTP API settings."""

    token_file: str | None = None
    token_env: str | None = None
    anonymous_read: bool = False
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)


class OutboxConfig(Model):
    """Delivery of alerts and webhooks: retried with backoff, dead-lettered after ``maxAge``."""

    maxAge: Timeout = 3600.0
    initialBackoff: Timeout = 1.0
    maxBackoff: Timeout = 60.0
    pollInterval: Timeout = 0.5


class HistoryConfig(Model):
    """How long past rollouts (their checks and events) are kept; see docs/api.md, "History".

    A canary's current rollout is always kept. A finished rollout goes when it
    is beyond the newest ``keep`` of its canary or older than ``maxAge``; a
    rolled-back one only beyond the newest ``failedKeep`` failed ones or older
    than ``failedMaxAge``. A long rollout keeps its newest ``checksPerRollout``
    check records (and as many events).
    """

    keep: int = Field(default=20, ge=1)
    maxAge: Timeout = 30 * 86400.0
    failedKeep: int = Field(default=50, ge=1)
    failedMaxAge: Timeout = 90 * 86400.0
    checksPerRollout: int = Field(default=1000, ge=10)


class LogConfig(Model):
    """Logging: JSON lines (journald) or console; ``auto`` picks console on a terminal."""

    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class HaConfig(Model):
    """High availability with ``state: postgresql://…``: the leader lease (docs/ha.md)."""

    cluster: str = Field("default", min_length=1, max_length=200)
    """The lease row's name: replicas of one cluster share it."""
    leaseTtl: Timeout = 15.0
    """Seconds a lease lasts unrenewed; renewed every ``leaseTtl / 3``."""
    advertise: str = ""
    """This replica's API URL as others reach it (default ``http://`` + ``listen``)."""


POSTGRES_SCHEMES = ("postgresql://", "postgres://")

DEFAULT_STATE = "sqlite:///var/lib/canaryd/state.db"
"""The documented state file; its directory is created when missing (systemd's
``StateDirectory=`` normally provides it)."""


class Settings(BaseSettings):
    """The whole configuration file.

    Environment variables ``CANARYD_<KEY>`` (``__`` for nesting, e.g.
    ``CANARYD_PROVIDERS__PROM__ADDRESS``) override the file.
    """

    model_config = SettingsConfigDict(
        env_prefix="CANARYD_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        populate_by_name=True,
        case_sensitive=False,
    )

    include: list[str] = Field(default_factory=list)
    listen: str = "127.0.0.1:9879"
    state: str = DEFAULT_STATE
    api: ApiConfig = Field(default_factory=ApiConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    history: HistoryConfig = Field(default_factory=HistoryConfig)
    ha: HaConfig = Field(default_factory=HaConfig)
    meshProvider: str = "prometheus"
    providers: dict[Name, ProviderConfig] = Field(default_factory=dict)
    routers: dict[Name, RouterConfig] = Field(default_factory=dict)
    notifiers: dict[Name, Notifier] = Field(default_factory=dict)
    templates: dict[TemplateKey, Template] = Field(default_factory=dict)
    canaries: list[CanaryConfig] = Field(default_factory=list)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Environment overrides the file (the file arrives as init kwargs)."""
        return (env_settings, init_settings)

    @field_validator("listen")
    @classmethod
    def _host_port(cls, v: str) -> str:
        _, sep, port = v.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:9879")
        return v

    @field_validator("state")
    @classmethod
    def _state_url(cls, v: str) -> str:
        if v.startswith(POSTGRES_SCHEMES):  # several replicas, one leader (docs/ha.md)
            return v
        if not v.startswith("sqlite://"):
            raise ValueError(
                "must be sqlite:///ABSOLUTE/PATH, sqlite://RELATIVE/PATH or postgresql://…"
            )
        # a typo must not start an empty history elsewhere: only the default's directory
        # is created (docs/reliability.md, "State path")
        folder = Path(v.removeprefix("sqlite://")).parent
        if v != DEFAULT_STATE and not folder.is_dir():
            raise ValueError(
                f"directory {folder} does not exist (canaryd creates the state file, not its "
                f"directory; the default {DEFAULT_STATE} is the exception)"
            )
        return v

    @property
    def postgres(self) -> bool:
        """Whether the state is in PostgreSQL (high availability, docs/ha.md)."""
        return self.state.startswith(POSTGRES_SCHEMES)

    @property
    def state_path(self) -> Path:
        """Filesystem path of the SQLite state file."""
        return Path(self.state.removeprefix("sqlite://"))

    @property
    def listen_host_port(self) -> tuple[str, int]:
        """``listen`` split into host and port."""
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)

    def template_for(self, ref: TemplateRef, namespace: str) -> tuple[str, Template] | None:
        """The template a ``templateRef`` names, and its key, looked up as Flagger does.

        The reference's namespace (default: the canary's ``namespace``) and
        name select a namespaced template; a template without a namespace
        matches by name alone.
        """
        wanted = ref.namespace or namespace
        for key in (f"{wanted}/{ref.name}", ref.name):
            tpl = self.templates.get(key)
            if tpl is not None and tpl.namespace in (None, wanted):
                return key, tpl
        return None

    def canary(self, key: str) -> CanaryConfig | None:
        """The canary named ``namespace/name``, if configured."""
        return next((c for c in self.canaries if c.key == key), None)
