"""What the router answered to a decision's route (docs/reliability.md).

A route the router refused or did not answer is judged here: before promotion a
held check on the state before it (never a failed one: the router's trouble is not
the canary's), after it a step retried, or a rollback kept pending (and not
reported as done) until the router confirms it.
"""

from __future__ import annotations

from canaryd.config.models import CanaryConfig, WebhookType
from canaryd.core.checks import OWN_TROUBLE
from canaryd.core.state import (
    Action,
    CanaryState,
    Decision,
    Effect,
    Emit,
    Phase,
    Route,
    RunHooks,
    emit,
    evolve,
    promotion_begun,
)


def router_failed(
    spec: CanaryConfig,
    state: CanaryState,
    error: str,
    now: float,
    *,
    weights: tuple[int, int] | None = None,
    own: bool = False,
) -> Decision:
    """The router did not apply a decision: the check holds on the state before it.

    A route towards the canary before promotion that the router refused or did not
    answer neither passes nor fails a check, as in Flagger (docs/flagger.md): the
    state stays as it was (the caller passes the last weights the router
    confirmed), ``router.failed`` with ``retrying`` is reported, and the next tick
    judges the metrics again and decides again. Metrics that fail still count. With
    ``own`` the route could not even be sent for canaryd's own trouble (out of file
    descriptors or memory): ``check.held_by_canaryd`` says so too
    (docs/reliability.md).

    A rollback whose route failed stays Failed with ``route_pending`` so the
    runtime keeps retrying the rollback route, at ``weights`` (primary, canary:
    what the router still has), and reports ``rollback.pending``; the rollback
    itself (``rollout.rolled_back``, post-rollout hooks) is reported only once the
    router confirms it (:func:`route_applied`). A pending route refused again is
    reported as ``router.failed`` with ``retrying``.
    Once promotion has begun (Promoting, Finalising, paused there) the failure is
    only reported and the step retried on the next tick, since the primary already
    runs the new revision.
    """
    if state.route_pending or promotion_begun(state) or state.phase is Phase.SUCCEEDED:
        route = pending_route(state)
        action = {"action": route.action} if route is not None else {}
        event = emit(spec, state, "router.failed", now, error=error, retrying=True, **action)
        return Decision(state, (event,))
    if state.phase is Phase.FAILED:
        fields = dict(state.rollback_fields) or {"reason": state.reason}
        new = evolve(state, route_pending=True, rollback_fields=fields)
        if weights is not None:
            new = evolve(new, primary_weight=weights[0], canary_weight=weights[1])
        report = {**fields, "error": error, "retrying": True}
        return Decision(new, (emit(spec, new, "rollback.pending", now, **report),))
    held: list[Effect] = [emit(spec, state, "router.failed", now, error=error, retrying=True)]
    if own:
        reason = f"{OWN_TROUBLE}: {error}"
        held.append(emit(spec, state, "check.held_by_canaryd", now, reason=reason, error=error))
    return Decision(state, tuple(held))


_BASE_FIELDS = frozenset(
    {"canaryWeight", "primaryWeight", "failedChecks", "threshold", "iteration"}
)
"""The fields every decision event carries (:func:`emit`), recomputed when it is emitted."""


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
    so two routes are not reverted but kept pending (docs/reliability.md):

    - a rollback: the decision stays Failed with ``route_pending`` at ``weights``
      (what the router still has) and reports ``rollback.pending``; its
      ``rollout.rolled_back`` event and post-rollout hooks are held back (their
      fields kept in ``rollback_fields``) until the router confirms the route;
    - ``promote``: promotion has begun; the decision stays Promoting with
      ``route_pending``, reported as ``router.failed`` with ``retrying``.

    Returns:
        The decision to record, or None for any other route (the caller reverts
        it: :func:`router_failed` holds the check on the state before the decision).
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
        event = emit(spec, new, "router.failed", now, error=error, action=action, retrying=True)
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
    rolled_back = emit(spec, new, "rollout.rolled_back", now, **fields)
    return Decision(new, (RunHooks(WebhookType.POST_ROLLOUT), rolled_back))
