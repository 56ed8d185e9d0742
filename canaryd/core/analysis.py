"""The pure analysis core: Flagger's canary state machine as plain functions.

Nothing here awaits, reads a clock or touches the network. The runtime asks
:func:`needs` what to observe, gathers an :class:`Observation`, and calls
:func:`decide`, which returns the new :class:`CanaryState` plus the effects to
carry out (route traffic, run post-rollout hooks, emit events). Operator
commands (:func:`start_rollout`, :func:`abort`, ...) are pure in the same way.
How one tick's check is judged lives in :mod:`canaryd.core.checks`; its names are
re-exported here.

Rules (docs/flagger.md): the failed-check counter is cumulative for the whole
rollout, grows by at most one per tick, and the rollout is rolled back in the
tick in which it reaches ``threshold`` (or in the next tick, when a reload
lowered ``threshold`` to or under it); a closed gate waits without counting a
failure; no data fails a check unless the metric says ``onNoData: pass|hold``.
Once promotion has begun nothing rolls it back: the primary already runs the
new revision.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from enum import StrEnum
from typing import Any, Literal

from canaryd.config.models import Analysis, CanaryConfig, WebhookType
from canaryd.core.checks import (
    OWN_TROUBLE,
    PASSED,
    CompareSeries,
    HookResult,
    MetricValue,
    Needs,
    Observation,
    Outcome,
    Verdict,
    dry_run_findings,
    evaluate,
    judge_compare,
    judge_metric,
)
from canaryd.core.events import Event
from canaryd.errors import CommandError

Action = Literal["route", "promote", "rollback"]
"""What a route asks of the router (docs/design.md, "Seams")."""

__all__ = [
    "ACTIVE",
    "GATES",
    "PASSED",
    "CanaryState",
    "CheckRecord",
    "CompareSeries",
    "Decision",
    "Effect",
    "Emit",
    "HookResult",
    "MetricValue",
    "Needs",
    "Observation",
    "Outcome",
    "Phase",
    "Route",
    "RunHooks",
    "Verdict",
    "abort",
    "approve",
    "closed_gate",
    "decide",
    "evaluate",
    "gate_open",
    "judge_compare",
    "judge_metric",
    "needs",
    "next_weight",
    "pause",
    "pending_route",
    "promote",
    "resume",
    "route_applied",
    "route_refused",
    "router_failed",
    "skipped_gates",
    "start_rollout",
]


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


def _hooks(analysis: Analysis, kind: WebhookType) -> list[Any]:
    return [w for w in analysis.webhooks if w.type == kind]


def _event(spec: CanaryConfig, state: CanaryState, name: str, now: float, **fields: Any) -> Emit:
    base = {
        "canaryWeight": state.canary_weight,
        "primaryWeight": state.primary_weight,
        "failedChecks": state.failed_checks,
        "threshold": spec.analysis.threshold,
        "iteration": state.iteration,
    }
    base.update(fields)
    return Emit(Event(name, spec.key, state.revision, state.phase.value, now, base))


def next_weight(analysis: Analysis, current: int) -> int | None:
    """The next canary weight after ``current``, or None at maxWeight."""
    return next((w for w in analysis.weights if w > current), None)


def _at_last_step(analysis: Analysis, state: CanaryState) -> bool:
    """Whether a passing check now asks the promotion gate rather than taking another step.

    Blue/green asks it once ``iterations`` have passed, both before switching all
    traffic to the canary and before promoting it (Flagger's ``runBlueGreen``).
    """
    if analysis.strategy == "canary":
        return next_weight(analysis, state.canary_weight) is None
    if analysis.strategy == "blue-green":
        return state.iteration >= analysis.iterations
    return state.iteration + 1 >= analysis.iterations


def _has_traffic(analysis: Analysis, state: CanaryState) -> bool:
    """Blue/green: the canary has test traffic; A/B: once the router has the match rules."""
    return analysis.strategy != "ab" or state.match_routed


def _gate_timeout(analysis: Analysis, kind: WebhookType) -> float | None:
    limits = [w.gateTimeout for w in _hooks(analysis, kind) if w.gateTimeout is not None]
    return min(limits) if limits else None


def _gates(analysis: Analysis, state: CanaryState) -> tuple[WebhookType, ...]:
    """The gates a passing check must pass, in the order Flagger asks them."""
    promotion = WebhookType.CONFIRM_PROMOTION
    if state.phase is Phase.WAITING_PROMOTION:
        return (promotion,)
    if analysis.strategy == "ab" and not state.match_routed:
        return ()  # this tick only routes the matched users; nothing to judge yet
    if analysis.strategy != "canary":
        return (promotion,) if _at_last_step(analysis, state) else ()
    increase = WebhookType.CONFIRM_TRAFFIC_INCREASE
    return (increase, promotion) if _at_last_step(analysis, state) else (increase,)


def _checks(analysis: Analysis, state: CanaryState) -> bool:
    """Whether the canary has traffic to judge (never on a rollout's first tick)."""
    if analysis.strategy == "canary":
        return state.canary_weight > 0
    if analysis.strategy == "blue-green":
        return state.iteration > 0
    return _has_traffic(analysis, state)


def _confirming(state: CanaryState) -> bool:
    """Whether the rollout still needs its confirm-rollout gate to open (Waiting, or just
    started and not yet asked: it enters Waiting only once the gate answers closed)."""
    return state.phase is Phase.WAITING or (
        state.phase is Phase.PROGRESSING and state.gate == WebhookType.CONFIRM_ROLLOUT.value
    )


def needs(spec: CanaryConfig, state: CanaryState) -> Needs:
    """What the runtime must observe for the next tick of ``state``.

    Rollback webhooks are polled while Progressing, Waiting and WaitingPromotion,
    never once promotion has begun (as in Flagger).
    """
    a = spec.analysis
    if state.phase not in ACTIVE or state.phase is Phase.PAUSED or spec.suspend:
        return Needs()  # suspend: nothing happens until it is unset, as in Flagger
    if state.route_pending:
        return Needs()  # a pending route is sent again first (pending_route)
    if _confirming(state):
        return Needs(rollback_hooks=True, gates=(WebhookType.CONFIRM_ROLLOUT,))
    if state.phase in (Phase.PROMOTING, Phase.FINALISING):
        return Needs(promotion=True)  # rollback webhooks no longer apply (as in Flagger)
    if spec.skipAnalysis and state.phase is Phase.PROGRESSING:
        return Needs(rollback_hooks=True)  # promoted without analysis (docs/flagger.md)
    pre = not state.pre_rollout_done and bool(_hooks(a, WebhookType.PRE_ROLLOUT))
    return Needs(
        rollback_hooks=True, gates=_gates(a, state), pre_rollout=pre, checks=_checks(a, state)
    )


def closed_gate(spec: CanaryConfig, need: Needs, obs: Observation) -> WebhookType | None:
    """The first closed gate of the tick, if any (see :class:`Observation`)."""
    if obs.gate_open or not need.gates:
        return None
    if obs.closed_gate is not None:
        return obs.closed_gate
    return next((g for g in need.gates if _hooks(spec.analysis, g)), need.gates[-1])


def gate_open(
    spec: CanaryConfig, state: CanaryState, kind: WebhookType, results: tuple[HookResult, ...]
) -> bool:
    """Whether a gate is open: approved by hand, or every gate webhook answered 2xx.

    A gate without webhooks is open; a manual gate (no url) is reported by the
    runtime as a failing result, so only ``canaryd approve`` opens it.
    """
    return _gate_name(kind) in state.approvals or all(r.ok for r in results)


def _gate_name(kind: WebhookType) -> str:
    return next(n for n, t in GATES.items() if t is kind)


# --------------------------------------------------------------------------- transitions


def _rollback(
    spec: CanaryConfig, state: CanaryState, now: float, reason: str, **fields: Any
) -> tuple[CanaryState, list[Effect]]:
    new = evolve(
        state,
        phase=Phase.FAILED,
        canary_weight=0,
        primary_weight=100,
        finished_at=now,
        reason=reason,
        gate=None,
        gate_since=None,
        paused_phase=None,
        approvals=frozenset(),
    )
    return new, [
        Route("rollback", 100, 0),
        RunHooks(WebhookType.POST_ROLLOUT),
        _event(spec, new, "rollout.rolled_back", now, reason=reason, **fields),
    ]


def _begin_promotion(
    spec: CanaryConfig, state: CanaryState, now: float, **fields: Any
) -> tuple[CanaryState, list[Effect]]:
    new = evolve(
        state,
        phase=Phase.PROMOTING,
        gate=None,
        gate_since=None,
        approvals=state.approvals - {"promotion", "traffic-increase"},
        paused_phase=None,
    )
    return new, [
        Route("promote", new.primary_weight, new.canary_weight),
        _event(spec, new, "rollout.promoting", now, **fields),
    ]


def _switch_blue_green(
    spec: CanaryConfig, state: CanaryState, now: float
) -> tuple[CanaryState, list[Effect]]:
    """Blue/green after ``iterations``: all traffic to the canary, judged again, then promoted.

    The promotion approval stays: the gate is asked again before promoting.
    """
    new = evolve(
        state,
        canary_weight=100,
        primary_weight=0,
        iteration=state.iteration + 1,
        gate=None,
        gate_since=None,
    )
    return new, [
        Route("route", 0, 100),
        _event(spec, new, "weight.advanced", now, previousWeight=state.canary_weight),
    ]


def _wait_gate(
    spec: CanaryConfig,
    state: CanaryState,
    kind: WebhookType,
    now: float,
    phase: Phase | None = None,
    muted: bool = False,
) -> tuple[CanaryState, list[Effect]]:
    """Keep waiting on a closed gate; fail the rollout once its gateTimeout has passed.

    The waiting event is emitted once, when the wait begins; ``muted`` (the gate's
    closing webhook has ``muteAlert``) marks it so that no alert is sent for it.
    """
    gate = kind.value
    since = state.gate_since if state.gate == gate and state.gate_since is not None else now
    limit = _gate_timeout(spec.analysis, kind)
    if limit is not None and now - since >= limit:
        new, effects = _rollback(
            spec, state, now, f"gate {gate} timed out after {limit:g}s", gate=gate
        )
        return new, [_event(spec, state, "gate.timed_out", now, gate=gate, timeout=limit), *effects]
    new = evolve(state, gate=gate, gate_since=since, phase=phase or state.phase)
    if state.gate == gate and state.phase is new.phase:
        return new, []
    name = "rollout.waiting" if kind is WebhookType.CONFIRM_ROLLOUT else "gate.waiting"
    mute = {"muteAlert": True} if muted else {}
    return new, [_event(spec, new, name, now, gate=gate, **mute)]


def _advance(
    spec: CanaryConfig, state: CanaryState, need: Needs, obs: Observation, now: float
) -> tuple[CanaryState, list[Effect]]:
    """A passing check: next step, or promotion, each behind its gate."""
    a = spec.analysis
    if not _has_traffic(a, state):  # A/B: the first passing tick routes the matched users
        new = evolve(state, match_routed=True)
        return new, [Route("route", 100, 0, tuple(a.match))]
    closed = closed_gate(spec, need, obs)
    if closed is WebhookType.CONFIRM_PROMOTION:
        waiting = evolve(state, approvals=state.approvals - {"traffic-increase"})
        return _wait_gate(spec, waiting, closed, now, Phase.WAITING_PROMOTION, muted=obs.gate_muted)
    if closed is not None:
        return _wait_gate(spec, state, closed, now, muted=obs.gate_muted)
    if WebhookType.CONFIRM_PROMOTION in need.gates:
        if a.strategy == "blue-green" and state.iteration == a.iterations:
            return _switch_blue_green(spec, state, now)
        if a.strategy == "ab":
            state = evolve(state, iteration=state.iteration + 1)
        return _begin_promotion(spec, state, now)
    if a.strategy != "canary":
        new = evolve(state, iteration=state.iteration + 1)
        return new, [_event(spec, new, "iteration.advanced", now)]
    weight = next_weight(a, state.canary_weight)
    assert weight is not None  # _at_last_step would have chosen the promotion gate
    new = evolve(
        state,
        canary_weight=weight,
        primary_weight=100 - weight,
        gate=None,
        gate_since=None,
        approvals=state.approvals - {"traffic-increase"},
    )
    return new, [
        Route("route", new.primary_weight, weight),
        _event(spec, new, "weight.advanced", now, previousWeight=state.canary_weight),
    ]


def _apply_outcome(
    spec: CanaryConfig,
    state: CanaryState,
    need: Needs,
    obs: Observation,
    verdict: Verdict,
    now: float,
) -> tuple[CanaryState, list[Effect]]:
    """Count a failure (rolling back at threshold), hold, or advance."""
    outcome, reason, fields = verdict
    if outcome is Outcome.PASS:
        return _advance(spec, state, need, obs, now)
    effects: list[Effect] = []
    if outcome is Outcome.FAIL:
        state = evolve(state, failed_checks=state.failed_checks + 1, reason=reason)
        name = "pre_rollout.failed" if fields.get("stage") == "pre-rollout" else "check.failed"
        effects.append(_event(spec, state, name, now, reason=reason, **fields))
        if state.failed_checks >= spec.analysis.threshold:
            state, more = _rollback(spec, state, now, reason or "failed check", **fields)
            return state, effects + more
    else:
        name = "check.held_by_canaryd" if fields.get("own") else "check.held"
        effects.append(_event(spec, state, name, now, reason=reason, **fields))
    expired = _gate_expired(spec, state, now)
    return expired if expired is not None else (state, effects)


def _gate_expired(
    spec: CanaryConfig, state: CanaryState, now: float
) -> tuple[CanaryState, list[Effect]] | None:
    """Roll back when the gate the rollout waits on has been closed past its gateTimeout.

    Checked on failing and held ticks too: a gate's timeout does not wait for a
    passing check (docs/flagger.md).
    """
    if state.gate is None or state.gate_since is None:
        return None
    kind = WebhookType(state.gate)
    limit = _gate_timeout(spec.analysis, kind)
    if limit is None or now - state.gate_since < limit:
        return None
    new, effects = _rollback(
        spec, state, now, f"gate {state.gate} timed out after {limit:g}s", gate=state.gate
    )
    timed_out = _event(spec, state, "gate.timed_out", now, gate=state.gate, timeout=limit)
    return new, [timed_out, *effects]


def _progress(
    spec: CanaryConfig, state: CanaryState, need: Needs, obs: Observation, now: float
) -> Decision:
    judged, judgement = (None, None)
    if need.checks and obs.compare:
        judged, judgement = judge_compare(spec.analysis.judge, obs.compare)
    verdict = evaluate(need, obs, judged)
    effects: list[Effect] = []
    if need.pre_rollout and all(h.ok for h in obs.pre_rollout):
        state = evolve(state, pre_rollout_done=True)
    state, more = _apply_outcome(spec, state, need, obs, verdict, now)
    effects += more
    outcome, reason = verdict[0], verdict[1]
    metrics = obs.metrics if need.checks else ()
    record = CheckRecord(
        now,
        state.ticks,
        outcome,
        state.canary_weight,
        state.iteration,
        state.failed_checks,
        reason,
        metrics,
        judgement,
    )
    extra = {"judge": judgement} if judgement is not None else {}
    dry = dry_run_findings(metrics)
    if dry:
        extra["dryRun"] = dry
    tick = _event(
        spec,
        state,
        "analysis.tick",
        now,
        outcome=outcome.value,
        reason=reason,
        metrics=[m.as_dict() for m in metrics],
        **extra,
    )
    return Decision(state, (tick, *effects), record)


def _promotion_step(spec: CanaryConfig, state: CanaryState, now: float) -> Decision:
    """Promoting: move traffic back to the (now promoted) primary; Finalising: finish."""
    if state.phase is Phase.FINALISING:
        new = evolve(
            state, phase=Phase.SUCCEEDED, finished_at=now, reason=None, approvals=frozenset()
        )
        return Decision(
            new, (RunHooks(WebhookType.POST_ROLLOUT), _event(spec, new, "rollout.promoted", now))
        )
    step = spec.analysis.stepWeightPromotion or 100
    primary = min(100, state.primary_weight + step)
    new = evolve(state, primary_weight=primary, canary_weight=100 - primary)
    if primary == 100:
        new = evolve(new, phase=Phase.FINALISING)
    return Decision(
        new,
        (
            Route("route", primary, 100 - primary),
            _event(spec, new, "weight.advanced", now, promotion=True),
        ),
    )


def decide(spec: CanaryConfig, state: CanaryState, obs: Observation, now: float) -> Decision:
    """Run one analysis tick.

    Args:
        spec: the canary's configuration.
        state: its state before the tick.
        obs: what the runtime observed, as :func:`needs` asked.
        now: the tick's time (Unix seconds).

    Returns:
        The new state, the effects to carry out in order, and the check record.
    """
    need = needs(spec, state)
    if not need.anything:
        return Decision(state)
    state = evolve(state, ticks=state.ticks + 1)
    if state.phase in (Phase.PROMOTING, Phase.FINALISING):
        return _promotion_step(spec, state, now)
    hit = next((h for h in obs.rollback if h.ok), None) if need.rollback_hooks else None
    if hit is not None:
        new, effects = _rollback(
            spec,
            state,
            now,
            f"rollback webhook {hit.name} answered {hit.detail or 'OK'}",
            webhook=hit.name,
        )
        return Decision(new, tuple(effects))
    if _confirming(state):
        if obs.gate_open:
            new = evolve(
                state,
                phase=Phase.PROGRESSING,
                gate=None,
                gate_since=None,
                approvals=state.approvals - {"rollout"},
            )
            return Decision(new, (_event(spec, new, "gate.approved", now, gate="rollout"),))
        new, effects = _wait_gate(
            spec, state, WebhookType.CONFIRM_ROLLOUT, now, Phase.WAITING, obs.gate_muted
        )
        return Decision(new, tuple(effects))
    if state.failed_checks >= spec.analysis.threshold:  # a reload lowered the threshold
        reason = f"failedChecks {state.failed_checks} reached threshold {spec.analysis.threshold}"
        new, effects = _rollback(spec, state, now, reason)
        return Decision(new, tuple(effects))
    if spec.skipAnalysis:  # promote without analysis, as Flagger's skipAnalysis (docs/flagger.md)
        new, effects = _begin_promotion(spec, state, now, skipped=True)
        return Decision(new, tuple(effects))
    return _progress(spec, state, need, obs, now)


def router_failed(
    spec: CanaryConfig,
    state: CanaryState,
    error: str,
    now: float,
    *,
    weights: tuple[int, int] | None = None,
    own: bool = False,
) -> Decision:
    """The router did not apply a decision: a failed check on the state before it.

    With ``own`` the route could not even be sent for canaryd's own trouble (out of
    file descriptors or memory): the check holds instead (docs/reliability.md).

    A rollback whose route failed stays Failed with ``route_pending`` so the
    runtime keeps retrying the rollback route, at ``weights`` (primary, canary:
    what the router still has), and reports ``rollback.pending``; the rollback
    itself (``rollout.rolled_back``, post-rollout hooks) is reported only once the
    router confirms it (:func:`route_applied`). A pending route refused again is
    reported as ``router.failed`` with ``retrying``.
    Once promotion has begun (Promoting, Finalising, paused there) the failure is
    only reported and the step retried on the next tick: it never counts as a failed check nor
    turns into a rollback, since the primary already runs the new revision.
    """
    reason = error  # adapters name themselves: "router mesh: ...", "haproxy web/x: ..."
    if state.route_pending or _promotion_begun(state) or state.phase is Phase.SUCCEEDED:
        route = pending_route(state)
        action = {"action": route.action} if route is not None else {}
        event = _event(spec, state, "router.failed", now, error=error, retrying=True, **action)
        return Decision(state, (event,))
    if state.phase is Phase.FAILED:
        fields = dict(state.rollback_fields) or {"reason": state.reason}
        new = evolve(state, route_pending=True, rollback_fields=fields)
        if weights is not None:
            new = evolve(new, primary_weight=weights[0], canary_weight=weights[1])
        report = {**fields, "error": error, "retrying": True}
        return Decision(new, (_event(spec, new, "rollback.pending", now, **report),))
    if own:
        held = f"{OWN_TROUBLE}: {error}"
        return Decision(
            state,
            (
                _event(spec, state, "router.failed", now, error=error, retrying=True),
                _event(spec, state, "check.held_by_canaryd", now, reason=held, error=error),
            ),
        )
    new = evolve(state, failed_checks=state.failed_checks + 1, reason=reason)
    effects: list[Effect] = [
        _event(spec, new, "router.failed", now, error=error),
        _event(spec, new, "check.failed", now, reason=reason, error=error),
    ]
    if new.failed_checks >= spec.analysis.threshold:
        new, more = _rollback(spec, new, now, reason, error=error)
        effects += more
    return Decision(new, tuple(effects))


_BASE_FIELDS = frozenset(
    {"canaryWeight", "primaryWeight", "failedChecks", "threshold", "iteration"}
)
"""The fields every decision event carries (:func:`_event`), recomputed when it is emitted."""


def route_refused(
    spec: CanaryConfig,
    decision: Decision,
    action: Action,
    error: str,
    now: float,
    *,
    weights: tuple[int, int] | None = None,
) -> Decision | None:
    """A route of ``decision`` the router answered with an error, or did not answer.

    The router may have applied it anyway (an error after applying, a timeout),
    so two routes never become a failed check (docs/reliability.md):

    - a rollback: the decision stays Failed with ``route_pending`` at ``weights``
      (what the router still has) and reports ``rollback.pending``; its
      ``rollout.rolled_back`` event and post-rollout hooks are held back (their
      fields kept in ``rollback_fields``) until the router confirms the route;
    - ``promote``: promotion has begun; the decision stays Promoting with
      ``route_pending``, reported as ``router.failed`` with ``retrying``.

    Returns:
        The decision to record, or None for any other route (the caller judges
        it with :func:`router_failed` on the state before the decision).
    """
    if decision.state.phase is Phase.FAILED:
        rolled = next(
            (e.event for e in decision.effects if isinstance(e, Emit) and _held_back(e)), None
        )
        fields = {k: v for k, v in rolled.fields.items() if k not in _BASE_FIELDS} if rolled else {}
        kept = tuple(e for e in decision.effects if not _held_back(e))
        state = evolve(decision.state, rollback_fields=fields or decision.state.rollback_fields)
        pending = router_failed(spec, state, error, now, weights=weights)
        return Decision(pending.state, kept + pending.effects, decision.record)
    if action == "promote":
        new = evolve(decision.state, route_pending=True)
        event = _event(spec, new, "router.failed", now, error=error, action=action, retrying=True)
        return Decision(new, (*decision.effects, event), decision.record)
    return None


def _held_back(effect: Effect) -> bool:
    """Whether ``effect`` reports a rollback as done: its post-rollout hooks, its event."""
    if isinstance(effect, RunHooks):
        return effect.type is WebhookType.POST_ROLLOUT
    return isinstance(effect, Emit) and effect.event.name == "rollout.rolled_back"


def pending_route(state: CanaryState) -> Route | None:
    """The route to send again before anything else, while ``route_pending``.

    A paused promotion sends it again once resumed.
    """
    if not state.route_pending:
        return None
    if state.phase is Phase.FAILED:
        return Route("rollback", 100, 0)
    if state.phase is Phase.PROMOTING:
        return Route("promote", state.primary_weight, state.canary_weight)
    return None


def route_applied(spec: CanaryConfig, state: CanaryState, now: float) -> Decision:
    """The router confirmed the pending route (:func:`pending_route`) of ``state``.

    A rollback is now reported, once: all traffic on the primary,
    ``rollout.rolled_back`` with the fields it was decided with, post-rollout hooks.
    """
    if state.phase is not Phase.FAILED:
        return Decision(evolve(state, route_pending=False))
    new = evolve(
        state,
        route_pending=False,
        rollback_fields={},
        primary_weight=100,
        canary_weight=0,
        finished_at=now,
    )
    fields = dict(state.rollback_fields) or {"reason": state.reason}
    rolled_back = _event(spec, new, "rollout.rolled_back", now, **fields)
    return Decision(new, (RunHooks(WebhookType.POST_ROLLOUT), rolled_back))


# --------------------------------------------------------------------------- commands


def start_rollout(
    spec: CanaryConfig,
    state: CanaryState,
    revision: str,
    metadata: Mapping[str, str],
    rollout_id: str,
    now: float,
) -> Decision:
    """Begin a rollout of ``revision``; a new revision mid-rollout restarts the analysis.

    As in Flagger, a new revision while Progressing, Waiting or WaitingPromotion
    (or Paused) sends all traffic back to the primary, resets the counters and
    starts again with the new revision. The revision already under way is a
    no-op (the state is returned unchanged, without effects).

    With confirm-rollout webhooks the rollout starts Progressing with the gate
    pending; the first tick asks the gate and enters Waiting only if it is closed
    (as in Flagger).

    Raises:
        CommandError: a rollback is still waiting for the router, or a promotion
            is under way.
    """
    if state.route_pending and state.phase is Phase.FAILED:
        raise CommandError(
            f"{spec.key}: the rollback of revision {state.revision} is not applied yet "
            "(the router refused it; canaryd retries it every tick); start again once it is"
        )
    if state.active and state.revision == revision:
        return Decision(state)
    if _promotion_begun(state):
        raise CommandError(
            f"{spec.key} is promoting revision {state.revision} (phase {state.phase.value}); "
            "start the new revision once the promotion has finished"
        )
    fresh = _fresh_rollout(spec, revision, metadata, rollout_id, now)
    if not state.active:
        return fresh
    return _restart(spec, state, fresh, now)


def _restart(spec: CanaryConfig, state: CanaryState, fresh: Decision, now: float) -> Decision:
    """Replace the revision under way: traffic back to the primary first, then start anew."""
    new = evolve(fresh.state, seq=state.seq)
    effects: list[Effect] = []
    if state.canary_weight > 0 or state.primary_weight != 100 or state.match_routed:
        effects.append(Route("route", 100, 0))
    replaced = _event(spec, new, "rollout.restarted", now, previousRevision=state.revision)
    return Decision(new, (*effects, replaced, *fresh.effects))


def _fresh_rollout(
    spec: CanaryConfig,
    revision: str,
    metadata: Mapping[str, str],
    rollout_id: str,
    now: float,
) -> Decision:
    """The state and events of a rollout that begins now."""
    gated = bool(_hooks(spec.analysis, WebhookType.CONFIRM_ROLLOUT))
    new = CanaryState(
        phase=Phase.PROGRESSING,
        revision=revision,
        rollout_id=rollout_id,
        metadata=dict(metadata),
        started_at=now,
        gate=WebhookType.CONFIRM_ROLLOUT.value if gated else None,
        gate_since=now if gated else None,
    )
    return Decision(new, (_event(spec, new, "rollout.started", now, metadata=dict(metadata)),))


def _promotion_begun(state: CanaryState) -> bool:
    """Whether the primary already runs the new revision (Promoting, Finalising, paused there)."""
    promoting = (Phase.PROMOTING, Phase.FINALISING)
    return state.phase in promoting or (
        state.phase is Phase.PAUSED and state.paused_phase in promoting
    )


def _require_active(spec: CanaryConfig, state: CanaryState, verb: str) -> None:
    if not state.active:
        raise CommandError(
            f"cannot {verb} {spec.key}: no rollout in progress (phase {state.phase.value})"
        )


def abort(
    spec: CanaryConfig, state: CanaryState, now: float, reason: str = "aborted by operator"
) -> Decision:
    """Roll back now.

    Raises:
        CommandError: no rollout is under way, or its promotion has begun (the
            primary already runs the new revision: there is nothing to roll back to).
    """
    _require_active(spec, state, "abort")
    if _promotion_begun(state):
        raise CommandError(
            f"cannot abort {spec.key}: its promotion has begun (phase {state.phase.value}); "
            f"the primary already runs revision {state.revision}"
        )
    new, effects = _rollback(spec, state, now, reason, manual=True)
    return Decision(new, tuple(effects))


def rollback_again(
    spec: CanaryConfig, state: CanaryState, now: float, reason: str, fields: Mapping[str, Any]
) -> Decision:
    """Decide again a rollback that was sent before a restart but never recorded.

    The recorded ``state`` is from before that rollback; the traffic already went
    back, so the rollout must not go on from it (docs/reliability.md, "A rollback
    the store never recorded"). A rollout no longer under way, or whose promotion
    has begun, is left as recorded.
    """
    if not state.active or _promotion_begun(state):
        return Decision(state)
    extra = {k: v for k, v in fields.items() if k != "reason"}
    new, effects = _rollback(spec, state, now, reason, **extra)
    return Decision(new, tuple(effects))


def skipped_gates(spec: CanaryConfig, state: CanaryState) -> list[str]:
    """The gates a manual promotion would skip: configured, not approved, still ahead."""
    kinds = [WebhookType.CONFIRM_PROMOTION]
    if state.gate == WebhookType.CONFIRM_ROLLOUT.value:  # not yet opened (paused or not)
        kinds.insert(0, WebhookType.CONFIRM_ROLLOUT)
    names = [_gate_name(k) for k in kinds if _hooks(spec.analysis, k)]
    return [n for n in names if n not in state.approvals]


def promote(spec: CanaryConfig, state: CanaryState, now: float, *, force: bool = False) -> Decision:
    """Promote now, skipping the remaining steps; skipping a gate needs ``force``.

    Raises:
        CommandError: no rollout is under way, it is already promoting, or it has
            a gate that is not approved and ``force`` is not set.
    """
    _require_active(spec, state, "promote")
    if state.phase in (Phase.PROMOTING, Phase.FINALISING):
        raise CommandError(f"{spec.key} is already {state.phase.value}")
    if _promotion_begun(state):  # paused while promoting: resume finishes it
        raise CommandError(
            f"{spec.key} is already {state.paused_phase} (paused): "
            f"canaryd resume {spec.key} finishes the promotion"
        )
    skipped = skipped_gates(spec, state)
    if skipped and not force:
        raise CommandError(
            f"promoting {spec.key} would skip its gate(s) {', '.join(skipped)}: "
            f"approve them (canaryd approve {spec.key} --gate {skipped[0]}) "
            "or promote with --force"
        )
    extra: dict[str, Any] = {"forced": True, "skippedGates": skipped} if skipped else {}
    new, effects = _begin_promotion(spec, state, now, manual=True, **extra)
    return Decision(new, tuple(effects))


def pause(spec: CanaryConfig, state: CanaryState, now: float) -> Decision:
    """Stop analysing until resumed (weights stay where they are).

    Raises:
        CommandError: no rollout is under way, or it is already paused.
    """
    _require_active(spec, state, "pause")
    if state.phase is Phase.PAUSED:
        raise CommandError(f"{spec.key} is already paused")
    new = evolve(state, phase=Phase.PAUSED, paused_phase=state.phase)
    return Decision(new, (_event(spec, new, "rollout.paused", now),))


def resume(spec: CanaryConfig, state: CanaryState, now: float) -> Decision:
    """Continue a paused rollout in the phase it was paused in.

    Raises:
        CommandError: the canary is not paused.
    """
    if state.phase is not Phase.PAUSED or state.paused_phase is None:
        raise CommandError(f"{spec.key} is not paused (phase {state.phase.value})")
    # time spent paused does not count towards a gate's gateTimeout
    since = now if state.gate is not None else None
    new = evolve(state, phase=state.paused_phase, paused_phase=None, gate_since=since)
    return Decision(new, (_event(spec, new, "rollout.resumed", now),))


def approve(spec: CanaryConfig, state: CanaryState, gate: str, now: float) -> Decision:
    """Open a gate by hand (``rollout``, ``traffic-increase`` or ``promotion``).

    Raises:
        CommandError: unknown gate, a gate this canary does not have, or no
            rollout under way.
    """
    if gate not in GATES:
        raise CommandError(f"unknown gate {gate!r}; expected one of: {', '.join(GATES)}")
    if not _hooks(spec.analysis, GATES[gate]):
        have = [n for n, k in GATES.items() if _hooks(spec.analysis, k)]
        raise CommandError(
            f"{spec.key} has no {gate} gate (no {GATES[gate].value} webhook); "
            + (f"its gates: {', '.join(have)}" if have else "it has no gates")
        )
    _require_active(spec, state, "approve a gate of")
    new = evolve(state, approvals=state.approvals | {gate})
    return Decision(new, (_event(spec, new, "gate.approved", now, gate=gate, manual=True),))
