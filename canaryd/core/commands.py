"""Operator commands: start, abort, promote, pause, resume, approve (docs/flagger.md).

Each is pure in the same way as a tick: state in, :class:`~canaryd.core.state.Decision`
out; a command that does not apply raises :class:`~canaryd.errors.CommandError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from canaryd.config.models import CanaryConfig, WebhookType
from canaryd.core.state import (
    GATES,
    CanaryState,
    Decision,
    Effect,
    Phase,
    Route,
    emit,
    evolve,
    gate_name,
    hooks_of,
    promotion_begun,
)
from canaryd.core.tick import begin_promotion, rollback
from canaryd.errors import CommandError


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
    if promotion_begun(state):
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
    replaced = emit(spec, new, "rollout.restarted", now, previousRevision=state.revision)
    return Decision(new, (*effects, replaced, *fresh.effects))


def _fresh_rollout(
    spec: CanaryConfig,
    revision: str,
    metadata: Mapping[str, str],
    rollout_id: str,
    now: float,
) -> Decision:
    """The state and events of a rollout that begins now."""
    gated = bool(hooks_of(spec.analysis, WebhookType.CONFIRM_ROLLOUT))
    new = CanaryState(
        phase=Phase.PROGRESSING,
        revision=revision,
        rollout_id=rollout_id,
        metadata=dict(metadata),
        started_at=now,
        gate=WebhookType.CONFIRM_ROLLOUT.value if gated else None,
        gate_since=now if gated else None,
    )
    return Decision(new, (emit(spec, new, "rollout.started", now, metadata=dict(metadata)),))


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
    if promotion_begun(state):
        raise CommandError(
            f"cannot abort {spec.key}: its promotion has begun (phase {state.phase.value}); "
            f"the primary already runs revision {state.revision}"
        )
    new, effects = rollback(spec, state, now, reason, manual=True)
    return Decision(new, tuple(effects))


def rollback_again(
    spec: CanaryConfig,
    state: CanaryState,
    now: float,
    reason: str,
    fields: Mapping[str, Any],
    *,
    failed_checks: int = 0,
) -> Decision:
    """Decide again a rollback that was sent before a restart but never recorded.

    The recorded ``state`` is from before that rollback; the traffic already went
    back, so the rollout must not go on from it (docs/reliability.md, "A rollback
    the store never recorded"). A rollout no longer under way, or whose promotion
    has begun, is left as recorded. The rollout's failed checks are those counted
    when it was rolled back (``failed_checks``), so the record shows the threshold
    that was reached, not the count before the lost tick.
    """
    if not state.active or promotion_begun(state):
        return Decision(state)
    extra = {k: v for k, v in fields.items() if k != "reason"}
    counted = evolve(state, failed_checks=max(state.failed_checks, failed_checks))
    new, effects = rollback(spec, counted, now, reason, **extra)
    return Decision(new, tuple(effects))


def skipped_gates(spec: CanaryConfig, state: CanaryState) -> list[str]:
    """The gates a manual promotion would skip: configured, not approved, still ahead."""
    kinds = [WebhookType.CONFIRM_PROMOTION]
    if state.gate == WebhookType.CONFIRM_ROLLOUT.value:  # not yet opened (paused or not)
        kinds.insert(0, WebhookType.CONFIRM_ROLLOUT)
    names = [gate_name(k) for k in kinds if hooks_of(spec.analysis, k)]
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
    if promotion_begun(state):  # paused while promoting: resume finishes it
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
    new, effects = begin_promotion(spec, state, now, manual=True, **extra)
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
    return Decision(new, (emit(spec, new, "rollout.paused", now),))


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
    return Decision(new, (emit(spec, new, "rollout.resumed", now),))


def approve(spec: CanaryConfig, state: CanaryState, gate: str, now: float) -> Decision:
    """Open a gate by hand (``rollout``, ``traffic-increase`` or ``promotion``).

    Raises:
        CommandError: unknown gate, a gate this canary does not have, or no
            rollout under way.
    """
    if gate not in GATES:
        raise CommandError(f"unknown gate {gate!r}; expected one of: {', '.join(GATES)}")
    if not hooks_of(spec.analysis, GATES[gate]):
        have = [n for n, k in GATES.items() if hooks_of(spec.analysis, k)]
        raise CommandError(
            f"{spec.key} has no {gate} gate (no {GATES[gate].value} webhook); "
            + (f"its gates: {', '.join(have)}" if have else "it has no gates")
        )
    _require_active(spec, state, "approve a gate of")
    new = evolve(state, approvals=state.approvals | {gate})
    return Decision(new, (emit(spec, new, "gate.approved", now, gate=gate, manual=True),))
