"""canaryd's state at scrape time: a :class:`Snapshot` and the collector that turns it
into metric families (the scrape-time half of :mod:`canaryd.service.metrics`).

Every per-canary series has the labels ``namespace`` and ``name``; the metric
reference is the table in ``docs/api.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from canaryd import __version__
from canaryd.core.analysis import CanaryState, Phase


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
    route_refused_seconds: float = 0.0
    """How long the router has refused every route of this canary (0: it confirmed the last)."""


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


class SnapshotCollector(Collector):
    """Turns the latest :class:`Snapshot` into metric families."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        """Report what ``snapshot()`` returns at each scrape."""
        self.snapshot = snapshot

    def describe(self) -> Iterable[Metric]:
        """Nothing up front: the families depend on the configured canaries."""
        return []

    def collect(self) -> Iterable[Metric]:
        """Every scrape-time family."""
        snap = self.snapshot()
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


def _per(
    samples: tuple[CanarySample, ...], fn: Callable[[CanarySample], float]
) -> list[tuple[list[str], float]]:
    """One value per canary, labelled with its namespace and name."""
    return [([s.namespace, s.name], fn(s)) for s in samples]


def _canary_families(samples: tuple[CanarySample, ...]) -> Iterator[Metric]:
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
        _per(samples, lambda s: s.state.route_pending),
    )
    yield _gauge(
        "canaryd_canary_route_refused_seconds",
        "How long the router has refused the canary's routes: seconds since the first refusal "
        "not followed by a confirmed route (0 once it confirms one, and after a restart).",
        _CANARY,
        _per(samples, lambda s: s.route_refused_seconds),
    )
    yield from _progress_families(samples)
    yield from _check_families(samples)


def _progress_families(samples: tuple[CanarySample, ...]) -> Iterator[Metric]:
    """Weights, failed checks against the threshold, and when the last tick started."""

    yield _gauge(
        "canaryd_canary_weight",
        "Traffic share of the canary, in percent.",
        _CANARY,
        _per(samples, lambda s: s.state.canary_weight),
    )
    yield _gauge(
        "canaryd_canary_primary_weight",
        "Traffic share of the primary, in percent.",
        _CANARY,
        _per(samples, lambda s: s.state.primary_weight),
    )
    yield _gauge(
        "canaryd_canary_failed_checks",
        "Failed checks of the current rollout.",
        _CANARY,
        _per(samples, lambda s: s.state.failed_checks),
    )
    yield _gauge(
        "canaryd_canary_threshold",
        "Failed checks that roll the canary back.",
        _CANARY,
        _per(samples, lambda s: s.threshold),
    )
    yield _gauge(
        "canaryd_canary_last_tick_timestamp_seconds",
        "Unix time the canary's last tick started (0 before the first).",
        _CANARY,
        _per(samples, lambda s: s.last_tick),
    )


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
