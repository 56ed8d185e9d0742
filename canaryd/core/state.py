"""The analysis core's state and effects (docs/design.md, "Layers").

:class:`CanaryState` is everything canaryd remembers about one canary; a
:class:`Decision` is the core's answer to a tick or a command: the new state and
the effects to carry out (:class:`Route`, :class:`RunHooks`, :class:`Emit`). The
small helpers every part of the state machine shares live here too. Pure: no
await, no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from enum import StrEnum
from typing import Any, Literal

from canaryd.config.models import Analysis, CanaryConfig, WebhookType
from canaryd.core.checks import MetricValue, Outcome
from canaryd.core.events import Event

Action = Literal["route", "promote", "rollback"]
"""What a route asks of the router (docs/design.md, "Seams")."""


class Phase(StrEnum):
    """Flagger's phases, plus ``Paused``."""

    INITIALIZED = "Initialized"
    WAITING = "Waiting"
    PROGRESSING = "Progressing"
    WAITING_PROMOTION = "WaitingPromotion"
    PROMOTING = "Promoting"
    FINALISING = "Finalising"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    PAUSED = "Paused"


ACTIVE = frozenset(
    {
        Phase.WAITING,
        Phase.PROGRESSING,
        Phase.WAITING_PROMOTION,
        Phase.PROMOTING,
        Phase.FINALISING,
        Phase.PAUSED,
    }
)
"""Phases in which a rollout is under way."""

GATES = {
    "rollout": WebhookType.CONFIRM_ROLLOUT,
    "traffic-increase": WebhookType.CONFIRM_TRAFFIC_INCREASE,
    "promotion": WebhookType.CONFIRM_PROMOTION,
}
"""Gate names of the API/CLI -> webhook types."""


@dataclass(frozen=True, slots=True)
class CheckRecord:
    """One tick's check, kept in the history shown by the API."""

    time: float
    tick: int
    outcome: Outcome
    canary_weight: int
    iteration: int
    failed_checks: int
    reason: str | None
    metrics: tuple[MetricValue, ...] = ()
    judge: Any = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        extra = {"judge": self.judge} if self.judge is not None else {}
        return {
            **extra,
            "time": self.time,
            "tick": self.tick,
            "outcome": self.outcome.value,
            "canaryWeight": self.canary_weight,
            "iteration": self.iteration,
            "failedChecks": self.failed_checks,
            "reason": self.reason,
            "metrics": [m.as_dict() for m in self.metrics],
        }


@dataclass(frozen=True, slots=True)
class CanaryState:
    """Everything canaryd remembers about one canary (persisted on every change)."""

    phase: Phase = Phase.INITIALIZED
    revision: str | None = None
    rollout_id: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    canary_weight: int = 0
    primary_weight: int = 100
    failed_checks: int = 0
    iteration: int = 0
    ticks: int = 0
    pre_rollout_done: bool = False
    gate: str | None = None
    gate_since: float | None = None
    paused_phase: Phase | None = None
    approvals: frozenset[str] = frozenset()
    started_at: float | None = None
    finished_at: float | None = None
    reason: str | None = None
    route_pending: bool = False
    """The router has not confirmed the route this state stands on: a rollback (Failed) or
    the ``promote`` action (Promoting); the runtime sends it again every tick
    (:func:`pending_route`, docs/reliability.md)."""
    rollback_fields: Mapping[str, Any] = field(default_factory=dict)
    """While a rollback's route is pending: the fields of its ``rollout.rolled_back`` event
    (reason, manual, webhook, metric...), emitted once the router confirms it."""
    match_routed: bool = False
    """A/B: the router has the ``match`` rules, so the canary gets its users."""
    seq: int = 0
    """Decisions persisted so far (set by the runtime); numbers idempotency keys so
    that no key repeats, even after a restart."""

    @property
    def active(self) -> bool:
        """Whether a rollout is under way."""
        return self.phase in ACTIVE


# --------------------------------------------------------------------------- effects


_STATE_FIELDS = tuple(f.name for f in dataclass_fields(CanaryState))


def evolve(state: CanaryState, **changes: Any) -> CanaryState:
    """``dataclasses.replace`` for a state, at half its cost (a tick makes several).

    Raises:
        TypeError: a change names no field of :class:`CanaryState`.
    """
    unknown = changes.keys() - _STATE_FIELD_SET
    if unknown:
        raise TypeError(f"CanaryState has no field {', '.join(sorted(unknown))}")
    new = object.__new__(CanaryState)
    for name in _STATE_FIELDS:
        object.__setattr__(new, name, changes[name] if name in changes else getattr(state, name))
    return new


_STATE_FIELD_SET = frozenset(_STATE_FIELDS)


@dataclass(frozen=True, slots=True)
class Route:
    """Ask the router to apply weights (and, for ``promote``, to promote the primary)."""

    action: Action
    primary_weight: int
    canary_weight: int
    match: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class RunHooks:
    """Fire-and-forget webhooks of one type (post-rollout), delivered via the outbox."""

    type: WebhookType


@dataclass(frozen=True, slots=True)
class Emit:
    """Log, store and alert an event."""

    event: Event


Effect = Route | RunHooks | Emit


@dataclass(frozen=True, slots=True)
class Decision:
    """The core's answer: the new state, what to do, and the tick's check record."""

    state: CanaryState
    effects: tuple[Effect, ...] = ()
    record: CheckRecord | None = None


# --------------------------------------------------------------------------- helpers


def hooks_of(analysis: Analysis, kind: WebhookType) -> list[Any]:
    """The webhooks of one type, in configuration order."""
    return [w for w in analysis.webhooks if w.type == kind]


def emit(spec: CanaryConfig, state: CanaryState, name: str, now: float, **fields: Any) -> Emit:
    """The effect that reports event ``name`` with the fields every decision event carries."""
    base = {
        "canaryWeight": state.canary_weight,
        "primaryWeight": state.primary_weight,
        "failedChecks": state.failed_checks,
        "threshold": spec.analysis.threshold,
        "iteration": state.iteration,
    }
    base.update(fields)
    return Emit(Event(name, spec.key, state.revision, state.phase.value, now, base))


def gate_name(kind: WebhookType) -> str:
    """The API/CLI name of a gate webhook type (:data:`GATES`)."""
    return next(n for n, t in GATES.items() if t is kind)


def promotion_begun(state: CanaryState) -> bool:
    """Whether the primary already runs the new revision (Promoting, Finalising, paused there)."""
    promoting = (Phase.PROMOTING, Phase.FINALISING)
    return state.phase in promoting or (
        state.phase is Phase.PAUSED and state.paused_phase in promoting
    )
