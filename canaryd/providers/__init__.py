"""Metrics providers: the :class:`MetricsProvider` seam and its factory.

One module per implementation (docs/providers.md): ``prometheus`` (and every
Prometheus-compatible API), ``graphite``, ``influxdb``, ``web``, ``datadog``,
``newrelic``, ``dynatrace``, ``cloudwatch``; what they
share (retries within the tick's budget, auth, timeouts) is ``base``.
"""

from __future__ import annotations

from typing import Protocol

from canaryd.config.models import (
    CloudWatchProvider,
    DatadogProvider,
    DynatraceProvider,
    GraphiteProvider,
    InfluxDBProvider,
    NewRelicProvider,
    PrometheusProvider,
    ProviderConfig,
    WebProvider,
)


class MetricsProvider(Protocol):
    """Where metric values come from.

    ``query`` returns one float, or ``None`` for "no data" (empty result or NaN).
    It retries transient failures itself, within ``budget`` seconds in total.
    """

    async def query(self, query: str, *, budget: float) -> float | None:
        """Run an instant query.

        Raises:
            ProviderError: the query failed for good (message says why).
        """
        ...

    async def query_range(
        self, query: str, *, start: float, end: float, step: float, budget: float
    ) -> list[float]:
        """Run a range query over one series and return its values in time order.

        Raises:
            ProviderError: the query failed for good.
        """
        ...

    async def aclose(self) -> None:
        """Release the provider's connections (idempotent); no query after it."""
        ...


ClosableProvider = MetricsProvider
"""The same Protocol: every provider has :meth:`~MetricsProvider.aclose` now. Kept for code
written when it did not."""


def build_provider(cfg: ProviderConfig) -> MetricsProvider:
    """Create the provider for a config entry (the config's ``type`` picks the class).

    The provider holds connections of its own: close it with ``aclose()``.
    """
    if isinstance(cfg, PrometheusProvider):
        from canaryd.providers.prometheus import Prometheus

        return Prometheus(cfg)
    if isinstance(cfg, GraphiteProvider):
        from canaryd.providers.graphite import Graphite

        return Graphite(cfg)
    if isinstance(cfg, InfluxDBProvider):
        from canaryd.providers.influxdb import InfluxDB

        return InfluxDB(cfg)
    if isinstance(cfg, WebProvider):
        from canaryd.providers.web import Web

        return Web(cfg)
    return _build_saas(cfg)


def _build_saas(cfg: ProviderConfig) -> ClosableProvider:
    """The SaaS providers (docs/providers.md): Datadog, New Relic, Dynatrace, CloudWatch."""
    if isinstance(cfg, DatadogProvider):
        from canaryd.providers.datadog import Datadog

        return Datadog(cfg)
    if isinstance(cfg, NewRelicProvider):
        from canaryd.providers.newrelic import NewRelic

        return NewRelic(cfg)
    if isinstance(cfg, DynatraceProvider):
        from canaryd.providers.dynatrace import Dynatrace

        return Dynatrace(cfg)
    if isinstance(cfg, CloudWatchProvider):
        from canaryd.providers.cloudwatch import CloudWatch

        return CloudWatch(cfg)
    raise AssertionError(f"unhandled provider type {cfg!r}")  # config validation prevents this
