"""canaryd's own metrics, served at ``/metrics`` (prometheus-client, a dedicated registry).

Two kinds of series:

- events counted as they happen (tick durations, provider requests and errors,
  router calls and refusals, rollouts finished by result), in ordinary
  prometheus-client instruments;
- the state of each canary and of the outbox, read at scrape time:
  :meth:`DaemonMetrics.refresh` takes a :class:`Snapshot` (async: it reads the
  store), and a collector turns the snapshot into metric families
  (:mod:`canaryd.service.metrics_snapshot`).

Every per-canary series has the labels ``namespace`` and ``name``. The metric
reference is the table in ``docs/api.md``; ``config/grafana-dashboard.json`` and
``config/prometheus-rules.yaml`` use these names.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from canaryd.core.analysis import CanaryState, Phase
from canaryd.errors import ProviderError, ResourceError, RouterError
from canaryd.providers import MetricsProvider
from canaryd.routers import Router, RouteRequest
from canaryd.service.limits import out_of_resources
from canaryd.service.metrics_snapshot import CanarySample, Snapshot, SnapshotCollector

if TYPE_CHECKING:
    from canaryd.service.daemon import Daemon

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The exposition format served at ``/metrics``."""

TICK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
PROVIDER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
RESULTS = {Phase.SUCCEEDED: "promoted", Phase.FAILED: "rolled_back"}
"""Terminal phases -> the ``result`` label of ``canaryd_rollouts_finished_total``."""


def _settled(state: CanaryState) -> Phase | None:
    """The phase the router confirmed: None while a route is pending (a rollback the router
    has not confirmed has not happened yet, docs/reliability.md)."""
    return None if state.route_pending else state.phase


class DaemonMetrics:
    """The registry of one daemon and its instruments."""

    def __init__(self) -> None:
        """Create the registry and register every instrument in it."""
        self.registry = CollectorRegistry(auto_describe=True)
        self.tick_seconds = Histogram(
            "canaryd_tick_duration_seconds",
            "Duration of analysis ticks (observe, decide, route, persist).",
            buckets=TICK_BUCKETS,
            registry=self.registry,
        )
        self.provider_seconds = Histogram(
            "canaryd_provider_request_duration_seconds",
            "Duration of metric provider queries, retries included.",
            ["provider"],
            buckets=PROVIDER_BUCKETS,
            registry=self.registry,
        )
        self.provider_requests = Counter(
            "canaryd_provider_requests",
            "Metric provider queries.",
            ["provider"],
            registry=self.registry,
        )
        self.provider_errors = Counter(
            "canaryd_provider_errors",
            "Metric provider queries that failed for good (after retries).",
            ["provider"],
            registry=self.registry,
        )
        self.provider_own_trouble = Counter(
            "canaryd_provider_own_trouble",
            "Metric queries canaryd could not make itself (out of file descriptors or memory, "
            "no free connection of its own); their checks held.",
            ["provider"],
            registry=self.registry,
        )
        self.router_requests = Counter(
            "canaryd_router_requests",
            "Routes sent to a router (route, promote, rollback), its client's retries included.",
            ["router"],
            registry=self.registry,
        )
        self.router_errors = Counter(
            "canaryd_router_errors",
            "Routes the router refused or did not answer (after its client's retries); not "
            "those canaryd could not send for its own trouble (out of file descriptors, memory).",
            ["router"],
            registry=self.registry,
        )
        self.refused_since: dict[str, float] = {}
        """Per canary key: when the router refused its first route of the current run of
        refusals (removed once the router confirms one of its routes)."""
        self.rollouts_finished = Counter(
            "canaryd_rollouts_finished",
            "Rollouts that ended, by result (promoted or rolled_back).",
            ["namespace", "name", "result"],
            registry=self.registry,
        )
        self.snapshot = Snapshot()
        self._phases: dict[str, Phase | None] = {}
        self.registry.register(SnapshotCollector(lambda: self.snapshot))

    def track(self, key: str, state: CanaryState) -> None:
        """Start counting a canary's rollouts from ``state`` (its series start at 0)."""
        namespace, _, name = key.partition("/")
        for result in RESULTS.values():
            self.rollouts_finished.labels(namespace, name, result)
        self._phases[key] = _settled(state)
        self.refused_since.pop(key, None)  # a canary added back starts with a clean slate

    def changed(self, key: str, state: CanaryState) -> None:
        """Record a canary's new state: count a rollout that just ended."""
        tracked, before = key in self._phases, self._phases.get(key)
        self._phases[key] = _settled(state)
        result = RESULTS.get(state.phase) if _settled(state) is not None else None
        if result is not None and tracked and before != state.phase:
            namespace, _, name = key.partition("/")
            self.rollouts_finished.labels(namespace, name, result).inc()

    def provider(self, name: str, inner: MetricsProvider) -> MetricsProvider:
        """Wrap a provider so its queries are timed and counted (its series start at 0)."""
        self.provider_requests.labels(name)
        self.provider_errors.labels(name)
        self.provider_own_trouble.labels(name)
        return InstrumentedProvider(name, inner, self)

    def router(self, name: str, inner: Router) -> Router:
        """Wrap a router so its calls and refusals are counted (its series start at 0)."""
        return InstrumentedRouter(name, inner, self)

    async def refresh(self, daemon: Daemon) -> None:
        """Take the snapshot the next :meth:`render` reports.

        Raises:
            StoreError: the outbox statistics or check history cannot be read.
        """
        samples, now = [], time.time()
        for runner in list(daemon.runners.values()):
            spec = runner.spec
            since = self.refused_since.get(runner.key)
            samples.append(
                CanarySample(
                    spec.namespace,
                    spec.name,
                    runner.state,
                    spec.analysis.threshold,
                    spec.analysis.strategy,
                    runner.last_tick,
                    await daemon.last_check(runner),
                    0.0 if since is None else max(0.0, now - since),
                )
            )
        stats = await daemon.services.store.outbox_stats()
        dispatcher = daemon.dispatcher
        self.snapshot = Snapshot(
            ready=daemon.ready,
            canaries=tuple(samples),
            outbox_counts={str(k): int(v) for k, v in stats["counts"].items()},
            oldest_pending=stats["oldest_pending"],
            deliveries=dict(dispatcher.counters) if dispatcher is not None else {},
            now=now,
            schedule_lag=daemon.health.schedule_lag(),
            ticking=daemon.scheduler.ticking,
            api_refused=daemon.api_refused.total if daemon.api_refused is not None else 0,
        )

    def render(self) -> bytes:
        """The exposition text of every series."""
        return generate_latest(self.registry)


@dataclass
class InstrumentedProvider:
    """A :class:`~canaryd.providers.MetricsProvider` that times and counts another one."""

    name: str
    inner: MetricsProvider
    metrics: DaemonMetrics
    _children: tuple[Any, Any, Any, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Look the provider's series up once: ``labels()`` costs on every query otherwise."""
        m = self.metrics
        self._children = (
            m.provider_requests.labels(self.name),
            m.provider_errors.labels(self.name),
            m.provider_seconds.labels(self.name),
            m.provider_own_trouble.labels(self.name),
        )

    async def query(self, query: str, *, budget: float) -> float | None:
        """Run an instant query (see :class:`~canaryd.providers.MetricsProvider`).

        Raises:
            ProviderError: the query failed for good.
        """
        with self._counted():
            return await self.inner.query(query, budget=budget)

    async def query_range(
        self, query: str, *, start: float, end: float, step: float, budget: float
    ) -> list[float]:
        """Run a range query (see :class:`~canaryd.providers.MetricsProvider`).

        Raises:
            ProviderError: the query failed for good.
        """
        with self._counted():
            return await self.inner.query_range(
                query, start=start, end=end, step=step, budget=budget
            )

    @contextmanager
    def _counted(self) -> Iterator[None]:
        """Count and time one request (whatever its end); count its failure as an error."""
        requests, errors, seconds, own = self._children
        started = time.monotonic()
        try:
            yield
        except ResourceError:
            own.inc()
            raise
        except ProviderError:
            errors.inc()
            raise
        finally:
            requests.inc()
            seconds.observe(time.monotonic() - started)

    async def aclose(self) -> None:
        """Close the provider it counts."""
        await self.inner.aclose()


@dataclass
class InstrumentedRouter:
    """A :class:`~canaryd.routers.Router` whose calls are counted, and whose refusals of
    each canary's routes are timed (``canaryd_canary_route_refused_seconds``)."""

    name: str
    inner: Router
    metrics: DaemonMetrics
    _children: tuple[Any, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Look the router's series up once, as :class:`InstrumentedProvider` does."""
        m = self.metrics
        self._children = (m.router_requests.labels(self.name), m.router_errors.labels(self.name))

    async def apply(self, request: RouteRequest) -> None:
        """Send a route (see :class:`~canaryd.routers.Router`).

        Raises:
            RouterError: not applied or not confirmed.
        """
        requests, errors = self._children
        refused = self.metrics.refused_since
        try:
            await self.inner.apply(request)
        except RouterError as exc:
            if not out_of_resources(exc):  # canaryd's own trouble is not the router's
                errors.inc()
                refused.setdefault(request.canary, time.time())
            raise
        finally:
            requests.inc()
        refused.pop(request.canary, None)

    async def aclose(self) -> None:
        """Release what the router it counts holds."""
        await self.inner.aclose()
