"""canaryd's own metrics, served at ``/metrics`` (prometheus-client, a dedicated registry).

Two kinds of series:

- events counted as they happen (tick durations, provider requests and errors,
  rollouts finished by result), in ordinary prometheus-client instruments;
- the state of each canary and of the outbox, read at scrape time:
  :meth:`DaemonMetrics.refresh` takes a :class:`Snapshot` (async: it reads the
  store), and a collector turns the snapshot into metric families.

Every per-canary series has the labels ``namespace`` and ``name``. The metric
reference is the table in ``docs/api.md``; ``config/grafana-dashboard.json`` and
``config/prometheus-rules.yaml`` use these names.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from canaryd import __version__
from canaryd.core.analysis import CanaryState, Phase
from canaryd.errors import ProviderError, ResourceError
from canaryd.providers import MetricsProvider

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


@dataclass(frozen=True, slots=True)
class CanarySample:
    """One canary as seen at scrape time."""

    namespace: str
    name: str
    state: CanaryState
    threshold: int
    strategy: str
    last_tick: float
    last_check: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the scrape-time collector reports."""

    ready: bool = False
    canaries: tuple[CanarySample, ...] = ()
    outbox_counts: dict[str, int] = field(default_factory=dict)
    oldest_pending: float | None = None
    deliveries: dict[str, int] = field(default_factory=dict)
    now: float = 0.0
    schedule_lag: float = 0.0
    ticking: int = 0
    api_refused: int = 0


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
        self.rollouts_finished = Counter(
            "canaryd_rollouts_finished",
            "Rollouts that ended, by result (promoted or rolled_back).",
            ["namespace", "name", "result"],
            registry=self.registry,
        )
        self.snapshot = Snapshot()
        self._phases: dict[str, Phase | None] = {}
        self.registry.register(_SnapshotCollector(self))

    def track(self, key: str, state: CanaryState) -> None:
        """Start counting a canary's rollouts from ``state`` (its series start at 0)."""
        namespace, _, name = key.partition("/")
        for result in RESULTS.values():
            self.rollouts_finished.labels(namespace, name, result)
        self._phases[key] = _settled(state)

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

    async def refresh(self, daemon: Daemon) -> None:
        """Take the snapshot the next :meth:`render` reports.

        Raises:
            StoreError: the outbox statistics or check history cannot be read.
        """
        samples = []
        for runner in list(daemon.runners.values()):
            spec = runner.spec
            samples.append(
                CanarySample(
                    spec.namespace,
                    spec.name,
                    runner.state,
                    spec.analysis.threshold,
                    spec.analysis.strategy,
                    runner.last_tick,
                    await daemon.last_check(runner),
                )
            )
        stats = await daemon.services.store.outbox_stats()
        dispatcher = getattr(daemon, "dispatcher", None)
        self.snapshot = Snapshot(
            ready=daemon.ready,
            canaries=tuple(samples),
            outbox_counts={str(k): int(v) for k, v in stats["counts"].items()},
            oldest_pending=stats["oldest_pending"],
            deliveries=dict(dispatcher.counters) if dispatcher is not None else {},
            now=time.time(),
            schedule_lag=daemon.schedule_lag(),
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


class _SnapshotCollector(Collector):
    """Turns the latest :class:`Snapshot` into metric families."""

    def __init__(self, owner: DaemonMetrics) -> None:
        self.owner = owner

    def describe(self) -> Iterable[Metric]:
        """Nothing up front: the families depend on the configured canaries."""
        return []

    def collect(self) -> Iterable[Metric]:
        """Every scrape-time family."""
        snap = self.owner.snapshot
        yield _gauge(
            "canaryd_build_info", "canaryd version (always 1).", ["version"], [([__version__], 1)]
        )
        yield _gauge(
            "canaryd_ready", "1 once config, store, API and loops are up.", [], [([], snap.ready)]
        )
        yield _gauge("canaryd_canaries", "Configured canaries.", [], [([], len(snap.canaries))])
        yield _gauge(
            "canaryd_schedule_lag_seconds",
            "How late ticks start after their due time (90th percentile of the last 10-20 s).",
            [],
            [([], snap.schedule_lag)],
        )
        yield _gauge("canaryd_ticks_in_flight", "Ticks running now.", [], [([], snap.ticking)])
        refused = CounterMetricFamily(
            "canaryd_api_connections_refused",
            "API connections closed on arrival because the API held its cap already.",
        )
        refused.add_metric([], snap.api_refused)
        yield refused
        yield from _canary_families(snap.canaries)
        yield from _outbox_families(snap)


def _gauge(
    name: str, doc: str, labels: list[str], values: Iterable[tuple[list[str], float]]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for label_values, value in values:
        family.add_metric(label_values, float(value))
    return family


_CANARY = ["namespace", "name"]


def _pending(s: CanarySample, phase: Phase) -> str:
    """The ``route_pending`` label of one phase's series: as the API's ``routePending`` for
    the current phase (docs/api.md), ``false`` for the others."""
    return "true" if s.state.route_pending and s.state.phase is phase else "false"


def _canary_families(samples: tuple[CanarySample, ...]) -> Iterator[Metric]:
    def per(fn: Any) -> list[tuple[list[str], float]]:
        return [([s.namespace, s.name], fn(s)) for s in samples]

    yield _gauge(
        "canaryd_canary_info",
        "The canary's revision and strategy (always 1).",
        [*_CANARY, "revision", "strategy"],
        [([s.namespace, s.name, s.state.revision or "", s.strategy], 1) for s in samples],
    )
    yield _gauge(
        "canaryd_canary_phase",
        "1 for the canary's current phase, 0 for the others; route_pending is true while the "
        "router has not confirmed the phase's route (Failed: the rollback is not applied yet).",
        [*_CANARY, "phase", "route_pending"],
        [
            ([s.namespace, s.name, p.value, _pending(s, p)], s.state.phase is p)
            for s in samples
            for p in Phase
        ],
    )
    yield _gauge(
        "canaryd_canary_route_pending",
        "1 while the router has not confirmed the route of the phase (a rollback, a promote).",
        _CANARY,
        per(lambda s: s.state.route_pending),
    )
    yield _gauge(
        "canaryd_canary_weight",
        "Traffic share of the canary, in percent.",
        _CANARY,
        per(lambda s: s.state.canary_weight),
    )
    yield _gauge(
        "canaryd_canary_primary_weight",
        "Traffic share of the primary, in percent.",
        _CANARY,
        per(lambda s: s.state.primary_weight),
    )
    yield _gauge(
        "canaryd_canary_failed_checks",
        "Failed checks of the current rollout.",
        _CANARY,
        per(lambda s: s.state.failed_checks),
    )
    yield _gauge(
        "canaryd_canary_threshold",
        "Failed checks that roll the canary back.",
        _CANARY,
        per(lambda s: s.threshold),
    )
    yield _gauge(
        "canaryd_canary_last_tick_timestamp_seconds",
        "Unix time the canary's last tick started (0 before the first).",
        _CANARY,
        per(lambda s: s.last_tick),
    )
    yield from _check_families(samples)


def _check_families(samples: tuple[CanarySample, ...]) -> Iterator[Metric]:
    labels = [*_CANARY, "metric"]
    value = GaugeMetricFamily(
        "canaryd_canary_metric_value", "Last observed value of each analysis metric.", labels=labels
    )
    low = GaugeMetricFamily(
        "canaryd_canary_metric_min", "Lower bound of each metric.", labels=labels
    )
    high = GaugeMetricFamily(
        "canaryd_canary_metric_max", "Upper bound of each metric.", labels=labels
    )
    for s in samples:
        for m in (s.last_check or {}).get("metrics", []):
            where = [s.namespace, s.name, str(m.get("name"))]
            number = _number(m.get("value"))
            if number is not None:
                value.add_metric(where, number)
            for family, key in ((low, "min"), (high, "max")):
                bound = _number(m.get(key))
                if bound is not None:
                    family.add_metric(where, bound)
    yield from (value, low, high)


def _number(value: Any) -> float | None:
    """A stored metric value as a float (NaN/Inf are stored as strings); None for no data."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _outbox_families(snap: Snapshot) -> Iterator[Metric]:
    statuses = {"pending": 0, "held": 0, "sent": 0, "dead": 0, **snap.outbox_counts}
    yield _gauge(
        "canaryd_outbox_messages",
        "Outbox messages by status (pending, held until their decision's routes apply, sent, "
        "dead).",
        ["status"],
        [([k], v) for k, v in sorted(statuses.items())],
    )
    age = snap.now - snap.oldest_pending if snap.oldest_pending is not None else 0.0
    yield _gauge(
        "canaryd_outbox_oldest_pending_age_seconds",
        "Age of the oldest undelivered outbox message (0 when none).",
        [],
        [([], max(0.0, age))],
    )
    deliveries = CounterMetricFamily(
        "canaryd_outbox_deliveries",
        "Webhook and notifier delivery attempts by outcome (failed includes dead).",
        labels=["outcome"],
    )
    for outcome in ("sent", "failed", "dead"):
        deliveries.add_metric([outcome], float(snap.deliveries.get(outcome, 0)))
    yield deliveries
