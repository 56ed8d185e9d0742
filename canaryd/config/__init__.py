"""The configuration layer: YAML in, validated :class:`Settings` out (docs/design.md, "Layers").

Reading one file goes: :mod:`~canaryd.config.yamlpos` (YAML with positions) →
:mod:`~canaryd.config.merge` (includes, Flagger manifests via :mod:`~canaryd.config.flagger`) →
environment overrides (:mod:`~canaryd.config.loader`) → :mod:`~canaryd.config.check` (keys,
references, secrets) → the pydantic models of :mod:`~canaryd.config.models` →
:mod:`~canaryd.config.lint` (cross-field rules, every query rendered by
:mod:`~canaryd.config.queries`). :func:`load_config` runs it all.

The plain models are what the other layers import (``from canaryd.config import Settings``);
the core imports :mod:`canaryd.config.models` only, never the loading modules.
"""

from __future__ import annotations

from canaryd.config.loader import Loaded, load_config, summary

# The models first: modules the loader imports read them from this package while it loads.
from canaryd.config.models import (
    DEFAULT_HTTP_TIMEOUT,
    DEFAULT_STATE,
    GATE_TYPES,
    MIN_INTERVAL,
    MIN_INTERVAL_ENV,
    SHARED_ANALYSES_MAX,
    AlertEvents,
    AlertSpec,
    Analysis,
    ApiConfig,
    CanaryConfig,
    CompareSpec,
    Duration,
    Finite,
    HAProxyRouter,
    HttpUrl,
    Interval,
    JudgeSpec,
    LogConfig,
    MetricSpec,
    Model,
    Name,
    Notifier,
    OnMarginal,
    OnNoData,
    OutboxConfig,
    PrometheusProvider,
    ProviderConfig,
    RouterConfig,
    Settings,
    Severity,
    Template,
    TemplateKey,
    TemplateRef,
    ThresholdRange,
    Timeout,
    WebhookRouter,
    WebhookSpec,
    WebhookType,
    min_interval,
    read_secret,
)

__all__ = [
    "DEFAULT_HTTP_TIMEOUT",
    "DEFAULT_STATE",
    "GATE_TYPES",
    "MIN_INTERVAL",
    "MIN_INTERVAL_ENV",
    "SHARED_ANALYSES_MAX",
    "AlertEvents",
    "AlertSpec",
    "Analysis",
    "ApiConfig",
    "CanaryConfig",
    "CompareSpec",
    "Duration",
    "Finite",
    "HAProxyRouter",
    "HttpUrl",
    "Interval",
    "JudgeSpec",
    "Loaded",
    "LogConfig",
    "MetricSpec",
    "Model",
    "Name",
    "Notifier",
    "OnMarginal",
    "OnNoData",
    "OutboxConfig",
    "PrometheusProvider",
    "ProviderConfig",
    "RouterConfig",
    "Settings",
    "Severity",
    "Template",
    "TemplateKey",
    "TemplateRef",
    "ThresholdRange",
    "Timeout",
    "WebhookRouter",
    "WebhookSpec",
    "WebhookType",
    "load_config",
    "min_interval",
    "read_secret",
    "summary",
]
