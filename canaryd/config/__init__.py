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

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from canaryd.config.loader import Loaded, load_config, summary

_LOADER = frozenset({"Loaded", "load_config", "summary"})


def __getattr__(name: str) -> Any:
    """The loader's names, imported on first use: the core and the adapters import the
    models from this package, and must not load the whole reading pipeline with them."""
    if name in _LOADER:
        from canaryd.config import loader

        return getattr(loader, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
