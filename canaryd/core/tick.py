"""The decision of one analysis tick: :func:`decide` (docs/flagger.md).

Rules: the failed-check counter is cumulative for the whole rollout, grows by at
most one per tick, and the rollout is rolled back in the tick in which it reaches
``threshold`` (or in the next tick, when a reload lowered ``threshold`` to or
under it); a closed gate waits without counting a failure. Once promotion has
begun nothing rolls it back: the primary already runs the new revision.
"""

from __future__ import annotations

from typing import Any

from canaryd.config.models import CanaryConfig, WebhookType
from canaryd.core.checks import (
    Needs,
    Observation,
    Outcome,
    Verdict,
    dry_run_findings,
    evaluate,
    judge_compare,
)
from canaryd.core.gates import (
    closed_gate,
    confirming,
    gate_timeout,
    has_traffic,
    needs,
    next_weight,
)
from canaryd.core.state import (
    CanaryState,
    CheckRecord,
    Decision,
    Effect,
    Phase,
    Route,
    RunHooks,
    emit,
    evolve,
)


def rollback(
    spec: CanaryConfig, state: CanaryState, now: float, reason: str, **fields: Any
) -> tuple[CanaryState, list[Effect]]:
    """Fail the rollout: all traffic to the primary, post-rollout hooks, ``rollout.rolled_back``."""
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
        emit(spec, new, "rollout.rolled_back", now, reason=reason, **fields),
    ]


def begin_promotion(
    spec: CanaryConfig, state: CanaryState, now: float, **fields: Any
) -> tuple[CanaryState, list[Effect]]:
    """Enter Promoting: the router promotes the primary to the canary's revision."""
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
        emit(spec, new, "rollout.promoting", now, **fields),
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
        emit(spec, new, "weight.advanced", now, previousWeight=state.canary_weight),
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
    limit = gate_timeout(spec.analysis, kind)
    if limit is not None and now - since >= limit:
        new, effects = rollback(
            spec, state, now, f"gate {gate} timed out after {limit:g}s", gate=gate
        )
        return new, [emit(spec, state, "gate.timed_out", now, gate=gate, timeout=limit), *effects]
    new = evolve(state, gate=gate, gate_since=since, phase=phase or state.phase)
    if state.gate == gate and state.phase is new.phase:
        return new, []
    name = "rollout.waiting" if kind is WebhookType.CONFIRM_ROLLOUT else "gate.waiting"
    mute = {"muteAlert": True} if muted else {}
    return new, [emit(spec, new, name, now, gate=gate, **mute)]


def _advance(
    spec: CanaryConfig, state: CanaryState, need: Needs, obs: Observation, now: float
) -> tuple[CanaryState, list[Effect]]:
    """A passing check: next step, or promotion, each behind its gate."""
    a = spec.analysis
    if not has_traffic(a, state):  # A/B: the first passing tick routes the matched users
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
        return begin_promotion(spec, state, now)
    if a.strategy != "canary":
        new = evolve(state, iteration=state.iteration + 1)
        return new, [emit(spec, new, "iteration.advanced", now)]
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
        emit(spec, new, "weight.advanced", now, previousWeight=state.canary_weight),
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
        effects.append(emit(spec, state, name, now, reason=reason, **fields))
        if state.failed_checks >= spec.analysis.threshold:
            state, more = rollback(spec, state, now, reason or "failed check", **fields)
            return state, effects + more
    else:
        name = "check.held_by_canaryd" if fields.get("own") else "check.held"
        effects.append(emit(spec, state, name, now, reason=reason, **fields))
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
    limit = gate_timeout(spec.analysis, kind)
    if limit is None or now - state.gate_since < limit:
        return None
    new, effects = rollback(
        spec, state, now, f"gate {state.gate} timed out after {limit:g}s", gate=state.gate
    )
    timed_out = emit(spec, state, "gate.timed_out", now, gate=state.gate, timeout=limit)
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
    tick = emit(
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
            new, (RunHooks(WebhookType.POST_ROLLOUT), emit(spec, new, "rollout.promoted", now))
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
            emit(spec, new, "weight.advanced", now, promotion=True),
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
        new, effects = rollback(
            spec,
            state,
            now,
            f"rollback webhook {hit.name} answered {hit.detail or 'OK'}",
            webhook=hit.name,
        )
        return Decision(new, tuple(effects))
    if confirming(state):
        if obs.gate_open:
            new = evolve(
                state,
                phase=Phase.PROGRESSING,
                gate=None,
                gate_since=None,
                approvals=state.approvals - {"rollout"},
            )
            return Decision(new, (emit(spec, new, "gate.approved", now, gate="rollout"),))
        new, effects = _wait_gate(
            spec, state, WebhookType.CONFIRM_ROLLOUT, now, Phase.WAITING, obs.gate_muted
        )
        return Decision(new, tuple(effects))
    if state.failed_checks >= spec.analysis.threshold:  # a reload lowered the threshold
        reason = f"failedChecks {state.failed_checks} reached threshold {spec.analysis.threshold}"
        new, effects = rollback(spec, state, now, reason)
        return Decision(new, tuple(effects))
    if spec.skipAnalysis:  # promote without analysis, as Flagger's skipAnalysis (docs/flagger.md)
        new, effects = begin_promotion(spec, state, now, skipped=True)
        return Decision(new, tuple(effects))
    return _progress(spec, state, need, obs, now)
