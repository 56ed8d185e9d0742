"""What a tick must observe, and which gates a passing check must pass (docs/flagger.md).

Pure: the runtime asks :func:`needs` before each tick and gathers an
:class:`~canaryd.core.checks.Observation` to match.
"""

from __future__ import annotations

from canaryd.config.models import Analysis, CanaryConfig, WebhookType
from canaryd.core.checks import HookResult, Needs, Observation
from canaryd.core.state import ACTIVE, CanaryState, Phase, gate_name, hooks_of


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


def has_traffic(analysis: Analysis, state: CanaryState) -> bool:
    """Blue/green: the canary has test traffic; A/B: once the router has the match rules."""
    return analysis.strategy != "ab" or state.match_routed


def gate_timeout(analysis: Analysis, kind: WebhookType) -> float | None:
    """The shortest gateTimeout of a gate's webhooks, or None when none sets one."""
    limits = [w.gateTimeout for w in hooks_of(analysis, kind) if w.gateTimeout is not None]
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
    return has_traffic(analysis, state)


def confirming(state: CanaryState) -> bool:
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
    if confirming(state):
        return Needs(rollback_hooks=True, gates=(WebhookType.CONFIRM_ROLLOUT,))
    if state.phase in (Phase.PROMOTING, Phase.FINALISING):
        return Needs(promotion=True)  # rollback webhooks no longer apply (as in Flagger)
    if spec.skipAnalysis and state.phase is Phase.PROGRESSING:
        return Needs(rollback_hooks=True)  # promoted without analysis (docs/flagger.md)
    pre = not state.pre_rollout_done and bool(hooks_of(a, WebhookType.PRE_ROLLOUT))
    return Needs(
        rollback_hooks=True, gates=_gates(a, state), pre_rollout=pre, checks=_checks(a, state)
    )


def closed_gate(spec: CanaryConfig, need: Needs, obs: Observation) -> WebhookType | None:
    """The first closed gate of the tick, if any (see :class:`Observation`)."""
    if obs.gate_open or not need.gates:
        return None
    if obs.closed_gate is not None:
        return obs.closed_gate
    return next((g for g in need.gates if hooks_of(spec.analysis, g)), need.gates[-1])


def gate_open(
    spec: CanaryConfig, state: CanaryState, kind: WebhookType, results: tuple[HookResult, ...]
) -> bool:
    """Whether a gate is open: approved by hand, or every gate webhook answered 2xx.

    A gate without webhooks is open; a manual gate (no url) is reported by the
    runtime as a failing result, so only ``canaryd approve`` opens it.
    """
    return gate_name(kind) in state.approvals or all(r.ok for r in results)
