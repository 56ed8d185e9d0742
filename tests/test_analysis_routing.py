"""Analysis core: routes the router refused, pending rollbacks and promotions under way."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from analysis_helpers import bad, canary, names, ok, promoting, routes, run, started

from canaryd.config import CanaryConfig, WebhookType
from canaryd.core import analysis as core
from canaryd.core.analysis import (
    CanaryState,
    Decision,
    Emit,
    HookResult,
    Observation,
    Phase,
    Route,
    RunHooks,
)
from canaryd.errors import CommandError

# --------------------------------------------------------------------------- router failure


def _after_a_failed_check(spec: CanaryConfig) -> CanaryState:
    state = core.decide(spec, started(spec), ok(), 1.0).state
    return core.decide(spec, state, bad(), 2.0).state


FORWARD: dict[str, tuple[Callable[[CanaryConfig], CanaryState], dict[str, Any]]] = {
    "first-step": (started, {}),
    "next-step": (lambda spec: run(spec, started(spec), ok(), 2)[-1].state, {}),
    "one-failed-check": (_after_a_failed_check, {}),
    "blue-green-switch": (
        lambda spec: run(spec, started(spec), ok(), 3)[-1].state,
        {"stepWeight": None, "maxWeight": None, "iterations": 3},
    ),
    "ab-match": (
        started,
        {"stepWeight": None, "maxWeight": None, "iterations": 2, "match": [{"uri": {"x": "y"}}]},
    ),
}
"""States whose next passing tick routes towards the canary, before promotion (threshold 2)."""


@pytest.mark.parametrize("own", [False, True], ids=["router", "canaryd"])
@pytest.mark.parametrize("case", list(FORWARD))
def test_a_router_error_towards_the_canary_holds_the_check(case: str, own: bool) -> None:
    """A route towards the canary the router refused (or canaryd had no descriptor for) holds
    the check, as in Flagger: the state before the decision stays, weights and failedChecks
    included, router.failed says it is retried, and no number of errors fails a check."""
    make, keys = FORWARD[case]
    spec = canary(threshold=2, **keys)
    before = make(spec)
    decided = core.decide(spec, before, ok(), 5.0)
    assert routes(decided) and {r.action for r in routes(decided)} == {"route"}, routes(decided)
    assert core.route_refused(spec, decided, "route", "router lb: HTTP 503", 5.0) is None
    base = replace(before, ticks=decided.state.ticks)  # what the runtime keeps (commit.py)
    state = base
    for t in range(4):
        d = core.router_failed(spec, state, "router lb: HTTP 503", 6.0 + t, own=own)
        assert d.state == base and routes(d) == []
        assert names(d) == ["router.failed", *(["check.held_by_canaryd"] if own else [])]
        failed = next(e.event for e in d.effects if isinstance(e, Emit))
        assert failed.fields["error"] == "router lb: HTTP 503" and failed.fields["retrying"]
        assert failed.fields["failedChecks"] == before.failed_checks
        state = d.state
    assert core.decide(spec, state, ok(), 20.0).effects, "decided again on the next tick"


def test_failing_metrics_still_roll_back_while_the_router_refuses() -> None:
    """Router errors on passing ticks never count, but failing metrics on the ticks between do:
    the rollback comes in the tick that reaches threshold, and stays pending while the router
    still refuses it."""
    spec = canary(threshold=2)
    state = core.decide(spec, started(spec), ok(), 1.0).state  # the router took 10%
    counted = []
    for t, obs in enumerate([ok(), bad(), ok(), ok(), bad()]):
        d = core.decide(spec, state, obs, 2.0 + t)
        if [r.action for r in routes(d)] == ["route"]:  # passing: the router refuses its route
            base = replace(state, ticks=d.state.ticks)
            d = core.router_failed(spec, base, "router lb: connection refused", 2.0 + t)
        state = d.state
        counted.append(state.failed_checks)
    assert counted == [0, 1, 1, 1, 2]
    assert state.phase is Phase.FAILED and routes(d) == [Route("rollback", 100, 0)]
    assert state.reason is not None and state.reason.startswith("request-success-rate 90")
    error = "router lb: connection refused"
    held = core.route_refused(spec, d, "rollback", error, 8.0, weights=(90, 10))
    assert held is not None and held.state.route_pending and held.state.canary_weight == 10
    assert names(held)[-1] == "rollback.pending" and "rollout.rolled_back" not in names(held)


def test_a_route_canaryd_could_not_send_holds() -> None:
    """A route canaryd had no descriptor for holds the canary; it is not counted."""
    spec = canary(threshold=1)
    state = core.decide(spec, started(spec), Observation(), 1.0).state
    d = core.router_failed(spec, state, "router lb: Too many open files", 2.0, own=True)
    assert (d.state.phase, d.state.canary_weight, d.state.failed_checks) == (
        Phase.PROGRESSING,
        10,
        0,
    )
    assert names(d) == ["router.failed", "check.held_by_canaryd"]
    failed = core.abort(spec, started(spec), 1.0).state
    d = core.router_failed(spec, failed, "Too many open files", 2.0, own=True)
    assert d.state.route_pending  # a rollback's route is retried as ever


def test_failed_rollback_route_stays_pending() -> None:
    """If even the rollback route fails, the canary stays Failed with the route pending."""
    spec = canary()
    failed = core.abort(spec, started(spec), 1.0).state
    d = core.router_failed(spec, failed, "down", 2.0)
    assert d.state.phase is Phase.FAILED and d.state.route_pending


@pytest.mark.parametrize("own", [False, True], ids=["router", "canaryd"])
@pytest.mark.parametrize("phase", [Phase.PROMOTING, Phase.FINALISING], ids=["promoting", "final"])
def test_router_errors_after_promotion_retry_and_never_roll_back(phase: Phase, own: bool) -> None:
    """Once promotion began, router errors (canaryd's own trouble too) are reported and retried:
    no failed check, no rollback, however many there are."""
    spec = canary(threshold=2)
    state = replace(promoting(spec), phase=phase)
    for t in range(5):
        d = core.router_failed(spec, state, "router lb: HTTP 500", float(t), own=own)
        assert d.state == state and routes(d) == []
        assert names(d) == ["router.failed"]
        state = d.state
    assert state.failed_checks == 0 and state.phase is phase


def test_rollback_webhook_is_not_consulted_once_promotion_began() -> None:
    """A rollback webhook answering 2xx during Promoting does not roll the promoted primary back."""
    spec = canary(webhooks=[{"name": "stop", "type": "rollback", "url": "http://h/"}])
    assert not core.needs(spec, promoting(spec)).rollback_hooks
    d = core.decide(spec, promoting(spec), Observation(rollback=(HookResult("stop", True),)), 1.0)
    assert d.state.phase is Phase.FINALISING and "rollout.rolled_back" not in names(d)


@pytest.mark.parametrize("paused", [False, True], ids=["promoting", "paused-while-promoting"])
def test_abort_is_refused_once_promotion_began(paused: bool) -> None:
    """abort during Promoting (paused there or not) is refused: there is no old revision left to
    roll back to."""
    spec = canary()
    state = promoting(spec)
    if paused:
        state = core.pause(spec, state, 0.5).state
    with pytest.raises(CommandError, match="primary already runs revision v2"):
        core.abort(spec, state, 1.0)


def test_start_is_refused_while_a_rollback_is_pending() -> None:
    """A Failed rollout whose rollback the router has not applied yet blocks a new start."""
    spec = canary()
    failed = core.abort(spec, core.decide(spec, started(spec), Observation(), 1.0).state, 2.0)
    pending = core.router_failed(spec, failed.state, "down", 2.0).state
    assert pending.route_pending
    with pytest.raises(CommandError, match="rollback of revision v2 is not applied yet"):
        core.start_rollout(spec, pending, "v3", {}, "r2", 3.0)


# ---------------------------------------------------------------- routes the router refused


def _by_threshold(spec: CanaryConfig) -> Decision:
    state = core.decide(spec, started(spec), Observation(), 1.0).state
    return run(spec, state, bad(), 3)[-1]


def _by_webhook(spec: CanaryConfig) -> Decision:
    state = core.decide(spec, started(spec), Observation(), 1.0).state
    return core.decide(spec, state, replace(ok(), rollback=(HookResult("stop", True),)), 2.0)


def _by_abort(spec: CanaryConfig) -> Decision:
    return core.abort(spec, core.decide(spec, started(spec), Observation(), 1.0).state, 2.0)


def _by_gate_timeout(spec: CanaryConfig) -> Decision:
    closed = replace(ok(), gate_open=False)
    state = core.decide(spec, started(spec), closed, 1.0).state
    return core.decide(spec, state, closed, 20.0)


ROLLBACKS: dict[str, tuple[Callable[[CanaryConfig], Decision], dict[str, Any]]] = {
    "threshold": (_by_threshold, {"reason": "request-success-rate 90 < min 99"}),
    "rollback-webhook": (_by_webhook, {"webhook": "stop"}),
    "abort": (_by_abort, {"manual": True, "reason": "aborted by operator"}),
    "gate-timeout": (_by_gate_timeout, {"gate": "confirm-rollout"}),
}


def _rolled_back(d: Decision) -> list[Emit]:
    return [e for e in d.effects if isinstance(e, Emit) and e.event.name == "rollout.rolled_back"]


def _post_rollout(d: Decision) -> list[RunHooks]:
    return [e for e in d.effects if isinstance(e, RunHooks) and e.type is WebhookType.POST_ROLLOUT]


@pytest.mark.parametrize("cause", list(ROLLBACKS))
def test_a_refused_rollback_is_pending_and_reported_rolled_back_only_once_applied(
    cause: str,
) -> None:
    """Whatever decided a rollback, while the router refuses its route it is reported as
    rollback.pending (never rolled_back, no post-rollout hooks) at the router's weights; once the
    router confirms it, rolled_back (with the fields it was decided with) and the post-rollout
    hooks come exactly once."""
    spec = canary(
        webhooks=[
            {"name": "g", "type": "confirm-rollout", "url": "http://h/", "gateTimeout": "10s"}
        ]
        if cause == "gate-timeout"
        else []
    )
    make, expected = ROLLBACKS[cause]
    decided = make(spec)
    assert decided.state.phase is Phase.FAILED and routes(decided)[-1] == Route("rollback", 100, 0)
    original = _rolled_back(decided)[0].event.fields
    error = "router lb: refused"
    held = core.route_refused(spec, decided, "rollback", error, 5.0, weights=(90, 10))
    assert held is not None
    assert (held.state.phase, held.state.route_pending) == (Phase.FAILED, True)
    assert (held.state.primary_weight, held.state.canary_weight) == (90, 10)
    assert _rolled_back(held) == [] and _post_rollout(held) == []
    pending = [e.event for e in held.effects if isinstance(e, Emit)][-1]
    assert (pending.name, pending.level) == ("rollback.pending", "error")
    assert pending.fields["error"] == "router lb: refused" and pending.fields["retrying"] is True
    assert pending.fields["reason"] == decided.state.reason
    assert core.needs(spec, held.state) == core.Needs()
    state = held.state
    for t in range(4):  # refused again and again: retried, never rolled back
        assert core.pending_route(state) == Route("rollback", 100, 0)
        again = core.router_failed(spec, state, "router lb: refused", 6.0 + t)
        assert names(again) == ["router.failed"] and _post_rollout(again) == []
        state = again.state
    applied = core.route_applied(spec, state, 20.0)
    assert (applied.state.primary_weight, applied.state.canary_weight) == (100, 0)
    assert not applied.state.route_pending and core.pending_route(applied.state) is None
    assert len(_rolled_back(applied)) == 1 and len(_post_rollout(applied)) == 1
    fields = _rolled_back(applied)[0].event.fields
    assert fields["reason"] == original["reason"] == decided.state.reason
    for key, value in expected.items():
        assert fields[key] == original[key] == value, key
    assert (fields["canaryWeight"], fields["primaryWeight"]) == (0, 100)


def _promote_at_last_step(spec: CanaryConfig) -> Decision:
    return run(spec, started(spec), ok(), 6)[-1]


def _promote_after_gate(spec: CanaryConfig) -> Decision:
    state = run(spec, started(spec), ok(), 5)[-1].state
    waiting = core.decide(spec, state, replace(ok(), gate_open=False), 6.0).state
    assert waiting.phase is Phase.WAITING_PROMOTION
    return core.decide(spec, waiting, ok(), 7.0)


def _promote_blue_green(spec: CanaryConfig) -> Decision:
    return run(spec, started(spec), ok(), 3)[-1]


def _promote_by_operator(spec: CanaryConfig) -> Decision:
    return core.promote(spec, core.decide(spec, started(spec), Observation(), 1.0).state, 2.0)


PROMOTIONS: dict[str, tuple[Callable[[CanaryConfig], Decision], dict[str, Any]]] = {
    "last-step": (_promote_at_last_step, {}),
    "promotion-gate": (
        _promote_after_gate,
        {"webhooks": [{"name": "p", "type": "confirm-promotion", "url": "http://h/"}]},
    ),
    "blue-green": (_promote_blue_green, {"stepWeight": None, "maxWeight": None, "iterations": 1}),
    "operator": (_promote_by_operator, {}),
}


@pytest.mark.parametrize("path", list(PROMOTIONS))
def test_a_promote_the_router_answered_with_an_error_is_a_promotion_under_way(path: str) -> None:
    """However promote was sent, an error answer (the router may have applied it) leaves the
    rollout Promoting with the route pending: no failed check and no rollback however often it is
    refused; once confirmed the promotion continues."""
    make, keys = PROMOTIONS[path]
    spec = canary(threshold=1, **keys)
    decided = make(spec)
    promote = routes(decided)[-1]
    assert promote.action == "promote", routes(decided)
    held = core.route_refused(spec, decided, "promote", "router lb: timeout", 9.0)
    assert held is not None
    assert (held.state.phase, held.state.route_pending) == (Phase.PROMOTING, True)
    assert held.state.failed_checks == decided.state.failed_checks == 0
    assert "check.failed" not in names(held) and names(held)[-1] == "router.failed"
    state = held.state
    for t in range(5):
        assert core.needs(spec, state) == core.Needs(), "nothing is judged or advanced"
        assert core.pending_route(state) == promote
        again = core.router_failed(spec, state, "router lb: timeout", 10.0 + t)
        assert again.state == state and routes(again) == []
        state = again.state
    assert state.failed_checks == 0 and state.phase is Phase.PROMOTING
    applied = core.route_applied(spec, state, 20.0).state
    assert not applied.route_pending and core.needs(spec, applied).promotion
    after = core.decide(spec, applied, Observation(), 21.0)
    assert routes(after) == [Route("route", 100, 0)]


def test_a_paused_promotion_sends_its_pending_promote_again_once_resumed() -> None:
    """Paused with promote pending, nothing is sent; resumed, the promote is sent first."""
    spec = canary()
    decided = core.promote(spec, core.decide(spec, started(spec), Observation(), 1.0).state, 2.0)
    held = core.route_refused(spec, decided, "promote", "router lb: refused", 3.0)
    assert held is not None
    paused = core.pause(spec, held.state, 4.0).state
    assert core.pending_route(paused) is None and core.needs(spec, paused) == core.Needs()
    resumed = core.resume(spec, paused, 5.0).state
    assert core.pending_route(resumed) == Route("promote", 90, 10)
