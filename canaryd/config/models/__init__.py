"""Typed configuration models (docs/design.md, "Configuration"), one module per family.

The models validate *shape and values*; cross references (a canary naming an
undefined provider, ...) and file positions are handled by :mod:`canaryd.config.loader`,
which turns every problem into ``FILE:LINE:COLUMN: key.path: message``.

Keys follow Flagger's spelling (``stepWeight``, ``thresholdRange``, ...) so an
``analysis:`` block can be pasted from a Flagger ``Canary``. Secrets are never
inline values that could reach a log: they are read from ``*_file`` paths or
from the environment, and held as :class:`pydantic.SecretStr`.

This package's names are the configuration's public API (re-exported here); each
family lives in a module of its own: :mod:`~canaryd.config.models.base` (value
types, the base model, secrets, headers), :mod:`~canaryd.config.models.providers`,
:mod:`~canaryd.config.models.routers`, :mod:`~canaryd.config.models.notifiers`,
:mod:`~canaryd.config.models.analysis` (templates, metrics, webhooks, the
``analysis:`` block), :mod:`~canaryd.config.models.canary` and
:mod:`~canaryd.config.models.settings` (the whole file).
"""

from __future__ import annotations

from canaryd.config.models.analysis import (
    GATE_TYPES,
    Analysis,
    CompareSpec,
    JudgeSpec,
    MetricSpec,
    OnMarginal,
    OnNoData,
    Template,
    TemplateRef,
    ThresholdRange,
    WebhookSpec,
    WebhookType,
)
from canaryd.config.models.base import (
    DEFAULT_HTTP_TIMEOUT,
    HEADER_LATIN1,
    HEADER_SHAPE,
    MIN_INTERVAL,
    MIN_INTERVAL_ENV,
    Duration,
    Finite,
    HttpBase,
    HttpUrl,
    Interval,
    Model,
    Name,
    TemplateKey,
    Timeout,
    checked_headers,
    header_problem,
    min_interval,
    read_secret,
)
from canaryd.config.models.canary import SHARED_ANALYSES_MAX, AlertEvents, AlertSpec, CanaryConfig
from canaryd.config.models.notifiers import Notifier, Severity
from canaryd.config.models.providers import (
    CloudWatchProvider,
    DatadogProvider,
    DynatraceProvider,
    GraphiteProvider,
    InfluxDBProvider,
    NewRelicProvider,
    PrometheusProvider,
    ProviderConfig,
    SecretHeader,
    WebProvider,
)
from canaryd.config.models.routers import (
    AlbRouter,
    CaddyRouter,
    ConsulRouter,
    EnvoyRouter,
    ExecRouter,
    HAProxyRouter,
    NginxRouter,
    NginxText,
    ProxyWord,
    ProxyWords,
    RouterConfig,
    TraefikRouter,
    WebhookRouter,
)
from canaryd.config.models.settings import (
    DEFAULT_STATE,
    POSTGRES_SCHEMES,
    ApiConfig,
    HaConfig,
    HistoryConfig,
    LogConfig,
    OutboxConfig,
    Settings,
)

__all__ = [
    "DEFAULT_HTTP_TIMEOUT",
    "DEFAULT_STATE",
    "GATE_TYPES",
    "HEADER_LATIN1",
    "HEADER_SHAPE",
    "MIN_INTERVAL",
    "MIN_INTERVAL_ENV",
    "POSTGRES_SCHEMES",
    "SHARED_ANALYSES_MAX",
    "AlbRouter",
    "AlertEvents",
    "AlertSpec",
    "Analysis",
    "ApiConfig",
    "CaddyRouter",
    "CanaryConfig",
    "CloudWatchProvider",
    "CompareSpec",
    "ConsulRouter",
    "DatadogProvider",
    "Duration",
    "DynatraceProvider",
    "EnvoyRouter",
    "ExecRouter",
    "Finite",
    "GraphiteProvider",
    "HAProxyRouter",
    "HaConfig",
    "HistoryConfig",
    "HttpBase",
    "HttpUrl",
    "InfluxDBProvider",
    "Interval",
    "JudgeSpec",
    "LogConfig",
    "MetricSpec",
    "Model",
    "Name",
    "NewRelicProvider",
    "NginxRouter",
    "NginxText",
    "Notifier",
    "OnMarginal",
    "OnNoData",
    "OutboxConfig",
    "PrometheusProvider",
    "ProviderConfig",
    "ProxyWord",
    "ProxyWords",
    "RouterConfig",
    "SecretHeader",
    "Settings",
    "Severity",
    "Template",
    "TemplateKey",
    "TemplateRef",
    "ThresholdRange",
    "Timeout",
    "TraefikRouter",
    "WebProvider",
    "WebhookRouter",
    "WebhookSpec",
    "WebhookType",
    "checked_headers",
    "header_problem",
    "min_interval",
    "read_secret",
]
