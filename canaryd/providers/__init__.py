"""Metrics providers: the :class:`MetricsProvider` seam and its factory."""

from __future__ import annotations

from typing import Protocol

from canaryd.config.models import PrometheusProvider, ProviderConfig


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


def build_provider(cfg: ProviderConfig) -> MetricsProvider:
    """Create the provider for a config entry (the config's ``type`` picks the class).

    The provider holds connections of its own: close it with ``aclose()``.
    """
    from canaryd.providers.prometheus import Prometheus

    if isinstance(cfg, PrometheusProvider):
        return Prometheus(cfg)
    raise AssertionError(f"unhandled provider type {cfg!r}")  # config validation prevents this
