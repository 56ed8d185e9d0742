"""The pure analysis core: one named case per rule of docs/design.md, "Analysis rules"."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from canaryd.config import CanaryConfig, OnNoData, WebhookType
from canaryd.core import analysis as core
from canaryd.core.analysis import (
    CanaryState,
    Decision,
    Emit,
    HookResult,
    MetricValue,
    Observation,
    Outcome,
    Phase,
    Route,
    RunHooks,
)
from canaryd.errors import CommandError


def canary(**analysis: Any) -> CanaryConfig:
    """A canary config with the given analysis keys (default: 10% steps to 50%, threshold 3)."""
    base: dict[str, Any] = {"interval": "1s", "threshold": 3, "stepWeight": 10, "maxWeight": 50}
    base.update(analysis)
    return CanaryConfig.model_validate(
        {"name": "web", "namespace": "prod", "router": "lb", "analysis": base}
    )


def ok(value: float = 99.9) -> Observation:
    """A passing observation: success rate within bounds."""
    return Observation(metrics=(MetricValue("request-success-rate", value, 99, None),))


def bad(value: float = 90.0) -> Observation:
    """A failing observation: success rate under its minimum."""
    return ok(value)


def started(spec: CanaryConfig) -> CanaryState:
    """State right after ``start_rollout``."""
    return core.start_rollout(spec, CanaryState(), "v2", {}, "r1", 0.0).state


def run(spec: CanaryConfig, state: CanaryState, obs: Observation, ticks: int) -> list[Decision]:
    """Drive ``ticks`` ticks with the same observation."""
    out = []
    for t in range(ticks):
        d = core.decide(spec, state, obs, float(t + 1))
        out.append(d)
        state = d.state
    return out


def names(d: Decision) -> list[str]:
    """Event names of a decision, without the per-tick line."""
    return [
        e.event.name for e in d.effects if isinstance(e, Emit) and e.event.name != "analysis.tick"
    ]


def routes(d: Decision) -> list[Route]:
    """Route effects of a decision."""
    return [e for e in d.effects if isinstance(e, Route)]


# --------------------------------------------------------------------------- canary strategy


def test_healthy_canary_walks_every_weight_then_promotes() -> None:
    """A canary that always passes goes 10, 20, ..., 50, then Promoting, Finalising, Succeeded."""
    spec = canary()
    ds = run(spec, started(spec), ok(), 9)
    assert [d.state.canary_weight for d in ds[:5]] == [10, 20, 30, 40, 50]
    assert [d.state.phase for d in ds[5:]] == [
        Phase.PROMOTING,
        Phase.FINALISING,
        Phase.SUCCEEDED,
        Phase.SUCCEEDED,
    ]
    assert routes(ds[5]) == [Route("promote", 50, 50)]
    assert routes(ds[6]) == [Route("route", 100, 0)]
    assert RunHooks(WebhookType.POST_ROLLOUT) in ds[7].effects
    assert names(ds[7]) == ["rollout.promoted"]
    assert ds[8].effects == ()


def test_first_tick_shifts_traffic_without_analysis() -> None:
    """At weight 0 there is no canary traffic to analyse, so the first tick only advances."""
    spec = canary()
    need = core.needs(spec, started(spec))
    assert not need.checks
    d = core.decide(spec, started(spec), Observation(), 1.0)
    assert d.state.canary_weight == 10 and routes(d) == [Route("route", 90, 10)]


def test_step_weights_walk_the_list() -> None:
    """stepWeights are walked in order and the last one caps the weight."""
    spec = canary(stepWeight=None, maxWeight=None, stepWeights=[5, 25, 60])
    ds = run(spec, started(spec), ok(), 4)
    assert [d.state.canary_weight for d in ds[:3]] == [5, 25, 60]
    assert ds[3].state.phase is Phase.PROMOTING


@pytest.mark.parametrize(
    ("threshold", "rolled_back_at"),
    [(1, 2), (3, 4), (5, 6)],
    ids=["threshold-1", "threshold-3", "threshold-5"],
)
def test_rollback_in_the_tick_that_reaches_threshold(threshold: int, rolled_back_at: int) -> None:
    """failedChecks reaching threshold rolls back in that same tick, not one later."""
    spec = canary(threshold=threshold)
    state = core.decide(spec, started(spec), Observation(), 1.0).state  # weight 10
    ds = run(spec, state, bad(), threshold)
    assert [d.state.failed_checks for d in ds] == list(range(1, threshold + 1))
    assert all(d.state.phase is Phase.PROGRESSING for d in ds[:-1])
    last = ds[-1]
    assert last.state.phase is Phase.FAILED
    assert (last.state.canary_weight, last.state.primary_weight) == (0, 100)
    assert routes(last) == [Route("rollback", 100, 0)]
    assert RunHooks(WebhookType.POST_ROLLOUT) in last.effects
    assert last.state.reason == "request-success-rate 90 < min 99"
    assert rolled_back_at == threshold + 1


def test_failed_checks_are_cumulative_across_passing_ticks() -> None:
    """A passing tick does not reset the counter."""
    spec = canary(threshold=3, maxWeight=100)
    state = core.decide(spec, started(spec), Observation(), 1.0).state
    for obs in (bad(), ok(), bad(), ok()):
        state = core.decide(spec, state, obs, 2.0).state
    assert state.failed_checks == 2 and state.phase is Phase.PROGRESSING
    assert core.decide(spec, state, bad(), 3.0).state.phase is Phase.FAILED


def test_a_failing_tick_does_not_advance() -> None:
    """The weight stays put on a failed check."""
    spec = canary()
    state = core.decide(spec, started(spec), Observation(), 1.0).state
    d = core.decide(spec, state, bad(), 2.0)
    assert d.state.canary_weight == 10 and routes(d) == []
    assert names(d) == ["check.failed"]


def test_at_most_one_failure_per_tick() -> None:
    """Several failing metrics and webhooks in one tick count once; the first is the reason."""
    spec = canary()
    state = core.decide(spec, started(spec), Observation(), 1.0).state
    obs = Observation(
        rollout=(HookResult("load", False, "HTTP 500"),),
        metrics=(MetricValue("a", 1.0, 99, None), MetricValue("b", None)),
    )
    d = core.decide(spec, state, obs, 2.0)
    assert d.state.failed_checks == 1
    assert d.state.reason == "webhook load: HTTP 500"


# --------------------------------------------------------------------------- metric judging


@pytest.mark.parametrize(
    ("metric", "outcome", "reason"),
    [
        (MetricValue("sr", 99.0, 99, None), Outcome.PASS, None),
        (MetricValue("sr", 98.99, 99, None), Outcome.FAIL, "sr 98.99 < min 99"),
        (MetricValue("lat", 500.0, None, 500), Outcome.PASS, None),
        (MetricValue("lat", 512.5, None, 500), Outcome.FAIL, "lat 512.5 > max 500"),
        (MetricValue("sr", None, 99, None), Outcome.FAIL, "sr: no data"),
        (MetricValue("sr", float("nan"), 99, None), Outcome.FAIL, "sr: no data"),
        (MetricValue("sr", None, 99, None, on_no_data=OnNoData.PASS), Outcome.PASS, None),
        (MetricValue("sr", None, 99, None, on_no_data=OnNoData.HOLD), Outcome.HOLD, "sr: no data"),
        (
            MetricValue("sr", None, 99, None, error="prometheus bad_data: parse error"),
            Outcome.FAIL,
            "sr: prometheus bad_data: parse error",
        ),
        (MetricValue("x", float("inf"), None, 10), Outcome.FAIL, "x inf > max 10"),
    ],
    ids=[
        "min-inclusive",
        "under-min",
        "max-inclusive",
        "over-max",
        "no-data-fails",
        "nan-is-no-data",
        "no-data-pass",
        "no-data-hold",
        "provider-error-fails",
        "infinity-over-max",
    ],
)
def test_judge_metric(metric: MetricValue, outcome: Outcome, reason: str | None) -> None:
    """Bounds are inclusive; no data fails unless onNoData says otherwise; errors fail."""
    assert core.judge_metric(metric) == (outcome, reason)


def test_hold_neither_advances_nor_counts() -> None:
    """onNoData: hold keeps the weight and the failed-check counter as they are."""
    spec = canary()
    state = core.decide(spec, started(spec), Observation(), 1.0).state
    obs = Observation(metrics=(MetricValue("sr", None, 99, None, on_no_data=OnNoData.HOLD),))
    ds = run(spec, state, obs, 10)
    assert all(d.state.canary_weight == 10 and d.state.failed_checks == 0 for d in ds)
    assert all(d.state.phase is Phase.PROGRESSING for d in ds)
    assert names(ds[0]) == ["check.held"]


def test_canaryds_own_trouble_holds_and_alerts() -> None:
    """A query canaryd could not make (out of fds) holds tick after tick, never counts."""
    spec = canary(threshold=1)
    state = core.decide(spec, started(spec), Observation(), 1.0).state
    emfile = "gave up after 1 attempt: OSError: Too many open files"
    obs = Observation(metrics=(MetricValue("sr", None, 99, None, error=emfile, own=True),))
    ds = run(spec, state, obs, 10)
    assert all(d.state.canary_weight == 10 and d.state.failed_checks == 0 for d in ds)
    assert all(d.state.phase is Phase.PROGRESSING for d in ds)
    assert names(ds[0]) == ["check.held_by_canaryd"]
    assert ds[0].record is not None and ds[0].record.outcome is Outcome.HOLD
    assert ds[0].record.reason == f"sr: canaryd's own trouble, not the canary's: {emfile}"


def test_a_webhook_canaryd_could_not_call_holds() -> None:
    """A rollout webhook not called for want of descriptors holds, unless a metric fails."""
    spec = canary(webhooks=[{"name": "load", "type": "rollout", "url": "http://127.0.0.1:9"}])
    state = core.decide(spec, started(spec), Observation(), 1.0).state
    held = (HookResult("load", False, "ClientConnectorError: Too many open files", own=True),)
    d = core.decide(spec, state, Observation(rollout=held, metrics=ok().metrics), 2.0)
    assert (d.state.failed_checks, d.state.canary_weight, names(d)) == (
        0,
        10,
        ["check.held_by_canaryd"],
    )
    d = core.decide(spec, state, Observation(rollout=held, metrics=bad().metrics), 2.0)
    assert d.state.failed_checks == 1 and names(d) == ["check.failed"]


def test_a_real_failure_beside_canaryds_own_trouble_still_counts() -> None:
    """A metric out of range fails the check even when another one held for canaryd's trouble."""
    spec = canary()
    state = core.decide(spec, started(spec), Observation(), 1.0).state
    held = MetricValue("sr", None, 99, None, error="out of fds", own=True)
    obs = Observation(metrics=(held, MetricValue("lat", 900.0, None, 500)))
    d = core.decide(spec, state, obs, 2.0)
    assert (d.state.failed_checks, d.state.reason) == (1, "lat 900 > max 500")


def test_no_data_rolls_back_after_threshold() -> None:
    """A canary with no traffic (no data) is rolled back, as Flagger teaches."""
    spec = canary(threshold=2)
    state = core.decide(spec, started(spec), Observation(), 1.0).state
    ds = run(spec, state, Observation(metrics=(MetricValue("sr", None, 99, None),)), 2)
    assert ds[-1].state.phase is Phase.FAILED
    assert ds[-1].state.reason == "sr: no data"


def test_tick_event_carries_every_metric_value() -> None:
    """analysis.tick lists every metric with its value and bounds."""
    spec = canary()
    state = core.decide(spec, started(spec), Observation(), 1.0).state
    obs = Observation(
        metrics=(MetricValue("sr", 99.5, 99, None), MetricValue("lat", 120, None, 500))
    )
    d = core.decide(spec, state, obs, 2.0)
    tick = next(
        e.event for e in d.effects if isinstance(e, Emit) and e.event.name == "analysis.tick"
    )
    assert tick.fields["metrics"] == [
        {"name": "sr", "value": 99.5, "min": 99, "max": None},
        {"name": "lat", "value": 120, "min": None, "max": 500},
    ]
    assert d.record is not None and d.record.outcome is Outcome.PASS


# --------------------------------------------------------------------------- webhooks and gates


def test_rollback_webhook_2xx_rolls_back_at_once() -> None:
    """A rollback webhook answering 2xx aborts the rollout in that tick, whatever the metrics."""
    spec = canary()
    state = core.decide(spec, started(spec), Observation(), 1.0).state
    obs = replace(ok(), rollback=(HookResult("manual", True),))
    d = core.decide(spec, state, obs, 2.0)
    assert d.state.phase is Phase.FAILED
    assert d.state.reason == "rollback webhook manual answered OK"
    assert d.state.failed_checks == 0


def test_pre_rollout_failure_counts_and_is_retried() -> None:
    """A failing pre-rollout webhook is a failed check; it runs again until it passes."""
    spec = canary(webhooks=[{"name": "db", "type": "pre-rollout", "url": "http://h/"}])
    state = started(spec)
    assert core.needs(spec, state).pre_rollout
    d = core.decide(
        spec, state, Observation(pre_rollout=(HookResult("db", False, "HTTP 503"),)), 1.0
    )
    assert d.state.failed_checks == 1 and d.state.canary_weight == 0
    assert names(d) == ["pre_rollout.failed"]
    assert core.needs(spec, d.state).pre_rollout
    d = core.decide(spec, d.state, Observation(pre_rollout=(HookResult("db", True),)), 2.0)
    assert d.state.pre_rollout_done and d.state.canary_weight == 10
    assert not core.needs(spec, d.state).pre_rollout


def test_confirm_rollout_gate_waits_then_progresses() -> None:
    """A closed confirm-rollout gate keeps the rollout Waiting without counting failures."""
    spec = canary(webhooks=[{"name": "go", "type": "confirm-rollout", "url": "http://h/"}])
    state = started(spec)
    assert core.needs(spec, state).gate is WebhookType.CONFIRM_ROLLOUT
    ds = run(spec, state, Observation(gate_open=False), 5)
    assert all(d.state.phase is Phase.WAITING and d.state.failed_checks == 0 for d in ds)
    d = core.decide(spec, ds[-1].state, Observation(gate_open=True), 9.0)
    assert d.state.phase is Phase.PROGRESSING


@pytest.mark.parametrize(
    ("gate_open", "phase", "events"),
    [
        (True, Phase.PROGRESSING, ["gate.approved"]),
        (False, Phase.WAITING, ["rollout.waiting"]),
    ],
    ids=["open-never-waits", "closed-waits"],
)
def test_confirm_rollout_enters_waiting_only_when_the_gate_is_closed(
    gate_open: bool, phase: Phase, events: list[str]
) -> None:
    """A gated rollout starts unconfirmed, not Waiting; its first tick asks the gate and only a
    closed gate makes it Waiting (as in Flagger)."""
    spec = canary(webhooks=[{"name": "go", "type": "confirm-rollout", "url": "http://h/"}])
    start = core.start_rollout(spec, CanaryState(), "v2", {}, "r1", 0.0)
    assert start.state.phase is not Phase.WAITING and names(start) == ["rollout.started"]
    need = core.needs(spec, start.state)
    assert (need.gate, need.checks) == (WebhookType.CONFIRM_ROLLOUT, False)
    d = core.decide(spec, start.state, Observation(gate_open=gate_open), 1.0)
    assert (d.state.phase, names(d), d.state.canary_weight) == (phase, events, 0)


@pytest.mark.parametrize(
    ("phase", "polled"),
    [
        (Phase.PROGRESSING, True),
        (Phase.WAITING, True),
        (Phase.WAITING_PROMOTION, True),
        (Phase.PROMOTING, False),
        (Phase.FINALISING, False),
    ],
    ids=lambda v: str(v),
)
def test_rollback_hooks_are_not_polled_once_promotion_has_begun(phase: Phase, polled: bool) -> None:
    """Rollback webhooks are asked while Progressing/Waiting/WaitingPromotion, never while
    Promoting or Finalising, where a stray 2xx cannot roll the promotion back."""
    spec = canary(webhooks=[{"name": "stop", "type": "rollback", "url": "http://h/"}])
    state = replace(started(spec), phase=phase, canary_weight=50, primary_weight=50)
    assert core.needs(spec, state).rollback_hooks is polled
    d = core.decide(spec, state, Observation(rollback=(HookResult("stop", True),)), 1.0)
    assert (d.state.phase is Phase.FAILED) is polled


@pytest.mark.parametrize(
    ("gate", "muted"),
    [
        ("confirm-rollout", True),
        ("confirm-rollout", False),
        ("confirm-traffic-increase", True),
        ("confirm-promotion", True),
        ("confirm-promotion", False),
    ],
    ids=lambda v: str(v),
)
def test_waiting_event_of_a_muted_gate_says_so(gate: str, muted: bool) -> None:
    """The waiting event carries muteAlert exactly when the gate's closing webhook is muted."""
    spec = canary(maxWeight=20, webhooks=[{"name": "g", "type": gate, "url": "http://h/"}])
    state = started(spec)
    if gate != "confirm-rollout":
        state = core.decide(spec, state, Observation(), 1.0).state  # weight 10
    if gate == "confirm-promotion":
        state = core.decide(spec, state, ok(), 2.0).state  # weight 20 = maxWeight
    d = core.decide(spec, state, replace(ok(), gate_open=False, gate_muted=muted), 3.0)
    waiting = [e.event for e in d.effects if isinstance(e, Emit) and "waiting" in e.event.name]
    assert len(waiting) == 1
    assert waiting[0].fields.get("muteAlert", False) is muted


def test_traffic_increase_gate_holds_the_weight() -> None:
    """A closed confirm-traffic-increase gate stops the next step but counts no failure."""
    spec = canary(webhooks=[{"name": "ok", "type": "confirm-traffic-increase", "url": "http://h/"}])
    state = core.decide(spec, started(spec), Observation(), 1.0).state
    d = core.decide(spec, state, replace(ok(), gate_open=False), 2.0)
    assert d.state.canary_weight == 10 and d.state.failed_checks == 0
    assert d.state.gate == "confirm-traffic-increase"
    assert names(d) == ["gate.waiting"]
    d2 = core.decide(spec, d.state, replace(ok(), gate_open=False), 3.0)
    assert names(d2) == [], "waiting is announced once, not every tick"
    d3 = core.decide(spec, d2.state, ok(), 4.0)
    assert d3.state.canary_weight == 20 and d3.state.gate is None


def test_confirm_promotion_gate_waits_in_waiting_promotion_and_keeps_checking() -> None:
    """At maxWeight a closed promotion gate means WaitingPromotion, where checks still count."""
    spec = canary(maxWeight=10, threshold=2, webhooks=[{"name": "p", "type": "confirm-promotion"}])
    state = core.decide(spec, started(spec), Observation(), 1.0).state
    d = core.decide(spec, state, replace(ok(), gate_open=False), 2.0)
    assert d.state.phase is Phase.WAITING_PROMOTION
    d = core.decide(spec, d.state, replace(bad(), gate_open=False), 3.0)
    assert d.state.failed_checks == 1 and d.state.phase is Phase.WAITING_PROMOTION
    d = core.decide(spec, d.state, ok(), 4.0)
    assert d.state.phase is Phase.PROMOTING


@pytest.mark.parametrize(
    ("gate_type", "phase"),
    [("confirm-rollout", Phase.WAITING), ("confirm-promotion", Phase.PROGRESSING)],
    ids=["rollout-gate", "promotion-gate"],
)
def test_gate_timeout_fails_the_rollout(gate_type: str, phase: Phase) -> None:
    """A gate closed for longer than its gateTimeout rolls the rollout back."""
    spec = canary(
        maxWeight=10,
        webhooks=[{"name": "g", "type": gate_type, "url": "http://h/", "gateTimeout": "10s"}],
    )
    state = started(spec)
    if phase is Phase.PROGRESSING:
        state = core.decide(spec, state, Observation(), 0.0).state
    closed = replace(ok(), gate_open=False)
    d = core.decide(spec, state, closed, 1.0)
    assert d.state.phase is not Phase.FAILED
    d = core.decide(spec, d.state, closed, 9.0)
    assert d.state.phase is not Phase.FAILED
    d = core.decide(spec, d.state, closed, 11.5)
    assert d.state.phase is Phase.FAILED
    assert "timed out after 10s" in (d.state.reason or "")
    assert "gate.timed_out" in names(d)


def test_confirm_rollout_gate_times_out_from_the_start_and_is_announced_once() -> None:
    """The confirm-rollout gate's clock starts with the rollout; waiting is announced once."""
    spec = canary(
        webhooks=[
            {"name": "g", "type": "confirm-rollout", "url": "http://h/", "gateTimeout": "10s"}
        ]
    )
    d = core.decide(spec, started(spec), Observation(gate_open=False), 5.0)
    assert names(d) == ["rollout.waiting"] and d.state.gate_since == 0.0
    d = core.decide(spec, d.state, Observation(gate_open=False), 7.0)
    assert names(d) == [] and d.state.phase is Phase.WAITING
    d = core.decide(spec, d.state, Observation(gate_open=False), 10.0)
    assert d.state.phase is Phase.FAILED


def test_time_spent_paused_does_not_count_towards_a_gate_timeout() -> None:
    """Resuming a rollout paused at a closed gate restarts the gate's timeout."""
    spec = canary(
        webhooks=[
            {
                "name": "g",
                "type": "confirm-traffic-increase",
                "url": "http://h/",
                "gateTimeout": "10s",
            }
        ]
    )
    state = core.decide(spec, started(spec), Observation(), 1.0).state
    state = core.decide(spec, state, replace(ok(), gate_open=False), 2.0).state
    paused = core.pause(spec, state, 3.0).state
    resumed = core.resume(spec, paused, 3600.0).state
    d = core.decide(spec, resumed, replace(ok(), gate_open=False), 3601.0)
    assert d.state.phase is Phase.PROGRESSING and d.state.gate == "confirm-traffic-increase"


def test_manual_approval_opens_a_gate_once() -> None:
    """An approval is recorded in state and used up by the step it let through."""
    spec = canary(webhooks=[{"name": "m", "type": "confirm-traffic-increase"}])
    state = core.decide(spec, started(spec), Observation(), 1.0).state
    state = core.approve(spec, state, "traffic-increase", 2.0).state
    assert core.gate_open(
        spec, state, WebhookType.CONFIRM_TRAFFIC_INCREASE, (HookResult("m", False),)
    )
    state = core.decide(spec, state, ok(), 3.0).state
    assert state.canary_weight == 20 and state.approvals == frozenset()


# --------------------------------------------------------------------------- other strategies


def test_blue_green_runs_iterations_then_switches_and_promotes() -> None:
    """Blue/green: no analysis on the first tick, iterations at 0%, a judged tick at 100%, then
    promotion (Flagger's runBlueGreen)."""
    spec = canary(stepWeight=None, maxWeight=None, iterations=3)
    state = started(spec)
    assert not core.needs(spec, state).checks
    ds = run(spec, state, ok(), 8)
    assert [d.state.iteration for d in ds[:5]] == [1, 2, 3, 4, 4]
    assert [d.state.canary_weight for d in ds[:5]] == [0, 0, 0, 100, 100]
    assert routes(ds[3]) == [Route("route", 0, 100)]
    assert ds[3].state.phase is Phase.PROGRESSING
    assert core.needs(spec, ds[3].state).checks, "judged under full traffic before promotion"
    assert ds[4].state.phase is Phase.PROMOTING
    assert routes(ds[4]) == [Route("promote", 0, 100)]
    assert routes(ds[5]) == [Route("route", 100, 0)]
    assert ds[6].state.phase is Phase.SUCCEEDED


def test_ab_routes_matched_users_to_the_canary() -> None:
    """iterations with match: the first tick hands the match rules to the router, unjudged."""
    match = [{"headers": {"x-canary": {"exact": "insider"}}}]
    spec = canary(stepWeight=None, maxWeight=None, iterations=2, match=match)
    assert not core.needs(spec, started(spec)).checks
    d = core.decide(spec, started(spec), Observation(), 1.0)
    assert routes(d) == [Route("route", 100, 0, tuple(match))]
    assert d.state.iteration == 0 and d.state.failed_checks == 0
    d = core.decide(spec, d.state, ok(), 2.0)
    assert routes(d) == [] and d.state.iteration == 1


def test_ab_routes_matched_users_after_the_confirm_rollout_gate() -> None:
    """A/B behind a confirm-rollout gate still routes the matched users before judging."""
    match = [{"headers": {"x-canary": {"exact": "insider"}}}]
    spec = canary(
        stepWeight=None,
        maxWeight=None,
        iterations=2,
        match=match,
        webhooks=[{"name": "go", "type": "confirm-rollout", "url": "http://h/"}],
    )
    state = core.decide(spec, started(spec), Observation(gate_open=False), 1.0).state
    state = core.decide(spec, state, Observation(gate_open=True), 2.0).state
    d = core.decide(spec, state, ok(), 3.0)
    assert routes(d) == [Route("route", 100, 0, tuple(match))]


def test_ab_match_route_refused_by_the_router_is_sent_again() -> None:
    """When the router refuses the match rules, the next tick routes them again."""
    match = [{"headers": {"x-canary": {"exact": "insider"}}}]
    spec = canary(stepWeight=None, maxWeight=None, iterations=2, match=match)
    d = core.decide(spec, started(spec), Observation(), 1.0)
    before = replace(started(spec), ticks=d.state.ticks)  # what the runtime keeps
    state = core.router_failed(spec, before, "down", 1.0).state
    d = core.decide(spec, state, ok(), 2.0)
    assert routes(d) == [Route("route", 100, 0, tuple(match))]


def test_step_weight_promotion_moves_traffic_back_in_steps() -> None:
    """stepWeightPromotion shifts traffic to the promoted primary step by step."""
    spec = canary(maxWeight=50, stepWeightPromotion=20)
    state = replace(started(spec), canary_weight=50, primary_weight=50, phase=Phase.PROMOTING)
    ds = run(spec, state, Observation(), 4)
    assert [routes(d) for d in ds[:3]] == [
        [Route("route", 70, 30)],
        [Route("route", 90, 10)],
        [Route("route", 100, 0)],
    ]
    assert ds[2].state.phase is Phase.FINALISING
    assert ds[3].state.phase is Phase.SUCCEEDED


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


# --------------------------------------------------------------------------- commands


def test_start_rollout_refuses_while_promoting() -> None:
    """A new revision while the primary is being promoted is refused until promotion ends."""
    spec = canary()
    promoting = replace(started(spec), phase=Phase.PROMOTING, canary_weight=50, primary_weight=50)
    with pytest.raises(CommandError, match=r"promoting revision v2 .* once the promotion"):
        core.start_rollout(spec, promoting, "v3", {}, "r2", 1.0)


def test_new_rollout_after_a_finished_one_starts_clean() -> None:
    """After Failed, a new rollout starts with zero failed checks and weight 0."""
    spec = canary()
    failed = core.abort(spec, started(spec), 1.0).state
    new = core.start_rollout(spec, replace(failed, failed_checks=3), "v3", {}, "r2", 2.0).state
    assert (new.phase, new.revision, new.failed_checks, new.canary_weight) == (
        Phase.PROGRESSING,
        "v3",
        0,
        0,
    )


def test_pause_freezes_and_resume_continues() -> None:
    """A paused rollout does nothing on ticks; resume returns to the phase it was in."""
    spec = canary()
    state = core.decide(spec, started(spec), Observation(), 1.0).state
    paused = core.pause(spec, state, 2.0).state
    assert core.decide(spec, paused, bad(), 3.0).state == paused
    resumed = core.resume(spec, paused, 4.0).state
    assert resumed.phase is Phase.PROGRESSING and resumed.canary_weight == 10


def test_manual_promote_skips_remaining_steps() -> None:
    """promote goes straight to Promoting from any progressing phase."""
    spec = canary()
    state = core.decide(spec, started(spec), Observation(), 1.0).state
    d = core.promote(spec, state, 2.0)
    assert d.state.phase is Phase.PROMOTING and routes(d) == [Route("promote", 90, 10)]


@pytest.mark.parametrize(
    "command",
    [core.abort, core.promote, core.pause, core.resume],
    ids=["abort", "promote", "pause", "resume"],
)
def test_commands_without_rollout_are_conflicts(command: Any) -> None:
    """Commands on an idle canary raise CommandError (HTTP 409)."""
    with pytest.raises(CommandError):
        command(canary(), CanaryState(), 1.0)


def test_abort_rolls_back_with_reason() -> None:
    """abort rolls back at once and says it was the operator."""
    spec = canary()
    d = core.abort(spec, started(spec), 1.0)
    assert d.state.phase is Phase.FAILED and d.state.reason == "aborted by operator"
    assert names(d) == ["rollout.rolled_back"]


# --------------------------------------------------------------------------- compare (judge)


def compare_canary(**judge: Any) -> CanaryConfig:
    """A canary with one compare metric (latency, increase is bad)."""
    metric = {"name": "latency", "query": "q", "compare": {"direction": "increase"}}
    return canary(metrics=[metric], judge=judge) if judge else canary(metrics=[metric])


def series(spec: CanaryConfig, control: list[float], experiment: list[float]) -> Observation:
    """An observation holding one compare metric's two series."""
    cfg = spec.analysis.metrics[0].compare
    assert cfg is not None
    return Observation(
        compare=(core.CompareSeries(cfg.to_config("latency"), tuple(control), tuple(experiment)),)
    )


PRIMARY = [100.0, 104, 98, 101, 97, 103, 99, 102, 100, 96, 105, 101]


@pytest.mark.parametrize(
    ("experiment", "outcome"),
    [
        ([v * 1.3 for v in PRIMARY], Outcome.FAIL),
        (list(PRIMARY), Outcome.PASS),
        ([v * 0.7 for v in PRIMARY], Outcome.PASS),
    ],
    ids=["30pct-slower-fails", "identical-passes", "faster-passes-when-only-increase-is-bad"],
)
def test_compare_metric_judges_canary_against_primary(
    experiment: list[float], outcome: Outcome
) -> None:
    """A canary clearly slower than the primary fails the check even without fixed bounds."""
    spec = compare_canary()
    state = core.decide(spec, started(spec), Observation(), 1.0).state
    d = core.decide(spec, state, series(spec, PRIMARY, experiment), 2.0)
    assert d.record is not None and d.record.outcome is outcome
    assert d.record.judge["results"][0]["name"] == "latency"
    if outcome is Outcome.FAIL:
        assert d.state.reason == "compare: Fail (score 0; latency High)"
        assert d.state.failed_checks == 1


def test_marginal_judgement_holds_by_default() -> None:
    """A Marginal score neither advances nor counts a failure (onMarginal: hold)."""
    spec = canary(
        metrics=[
            {"name": "a", "query": "q", "compare": {"direction": "increase"}},
            {"name": "b", "query": "q", "compare": {"direction": "increase"}},
            {"name": "c", "query": "q", "compare": {"direction": "increase"}},
            {"name": "d", "query": "q", "compare": {"direction": "increase"}},
        ],
        judge={"thresholds": {"pass": 90, "marginal": 70}},
    )
    state = core.decide(spec, started(spec), Observation(), 1.0).state
    slow = tuple(v * 1.3 for v in PRIMARY)
    obs = Observation(
        compare=tuple(
            core.CompareSeries(
                m.compare.to_config(m.name),
                tuple(PRIMARY),
                slow if m.name == "a" else tuple(PRIMARY),
            )
            for m in spec.analysis.metrics
            if m.compare is not None
        )
    )
    d = core.decide(spec, state, obs, 2.0)
    assert d.record is not None and d.record.outcome is Outcome.HOLD
    assert (d.state.canary_weight, d.state.failed_checks) == (10, 0)


def test_compare_query_error_fails_the_check() -> None:
    """A provider error on either side fails the check with the provider's message."""
    spec = compare_canary()
    state = core.decide(spec, started(spec), Observation(), 1.0).state
    cfg = spec.analysis.metrics[0].compare
    assert cfg is not None
    obs = Observation(compare=(core.CompareSeries(cfg.to_config("latency"), error="timeout"),))
    d = core.decide(spec, state, obs, 2.0)
    assert d.state.reason == "latency: timeout"


def test_compare_query_canaryd_could_not_make_holds() -> None:
    """A compare query canaryd itself could not make holds the check instead of failing it."""
    spec = compare_canary()
    state = core.decide(spec, started(spec), Observation(), 1.0).state
    cfg = spec.analysis.metrics[0].compare
    assert cfg is not None
    held = core.CompareSeries(cfg.to_config("latency"), error="no free connection", own=True)
    d = core.decide(spec, state, Observation(compare=(held,)), 2.0)
    assert (d.state.failed_checks, d.state.canary_weight) == (0, 10)
    assert names(d) == ["check.held_by_canaryd"]


@pytest.mark.parametrize(
    ("keys", "weights"),
    [
        ({"stepWeight": 10, "maxWeight": 50}, [10, 20, 30, 40, 50]),
        ({"stepWeight": 30, "maxWeight": 50}, [30, 50]),
        ({"stepWeight": 40}, [40, 80, 100]),
        ({"stepWeights": [5, 25, 60], "maxWeight": 30}, [5, 25, 60]),
        ({"stepWeights": [1, 2, 10, 80], "maxWeight": 50}, [1, 2, 10, 80]),
        ({"stepWeight": 10, "stepWeights": [5, 25, 60]}, [10, 20, 30, 40, 50, 60]),
        ({"stepWeight": 25, "stepWeights": [5, 60], "maxWeight": 90}, [25, 50, 60]),
    ],
    ids=[
        "dividing-step",
        "step-stops-at-maxWeight",
        "default-max-100",
        "stepWeights-win-over-maxWeight",
        "stepWeights-win-over-a-lower-maxWeight",
        "stepWeight-steps-up-to-the-last-stepWeights",
        "stepWeight-capped-at-the-last-stepWeights",
    ],
)
def test_weights_end_exactly_at_max_weight(keys: dict[str, Any], weights: list[int]) -> None:
    """stepWeights win over maxWeight; stepWeight steps stop exactly at the maximum (Flagger's
    precedence, without its overshoot)."""
    assert canary(**{"stepWeight": None, "maxWeight": None, **keys}).analysis.weights == weights


def test_evolve_is_dataclasses_replace() -> None:
    """``evolve`` gives what ``dataclasses.replace`` gives, for every field; unknown names fail."""
    base = core.CanaryState(
        phase=core.Phase.PROGRESSING,
        revision="r1",
        rollout_id="x",
        metadata={"ticket": "OPS-1"},
        approvals=frozenset({"rollout"}),
        started_at=1.0,
    )
    changes: dict[str, Any] = {
        "phase": core.Phase.FAILED,
        "revision": "r2",
        "canary_weight": 40,
        "failed_checks": 3,
        "approvals": frozenset(),
        "reason": "why",
        "seq": 9,
    }
    for name, value in changes.items():
        assert core.evolve(base, **{name: value}) == replace(base, **{name: value})
    assert core.evolve(base, **changes) == replace(base, **changes)
    assert core.evolve(base) == base and core.evolve(base) is not base
    with pytest.raises(TypeError, match="no field wieght"):
        core.evolve(base, wieght=3)


# --------------------------------------------------------------------------- issue 12: verdicts


def promoting(spec: CanaryConfig) -> CanaryState:
    """A rollout whose promotion was accepted: the primary already runs the new revision."""
    return replace(started(spec), phase=Phase.PROMOTING, canary_weight=50, primary_weight=50)


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


def test_a_reload_lowering_threshold_under_failed_checks_rolls_back_next_tick() -> None:
    """failedChecks 3 with threshold lowered from 5 to 2 rolls back on the next tick, even a
    passing one."""
    spec = canary(threshold=5, maxWeight=100)
    state = core.decide(spec, started(spec), Observation(), 1.0).state
    for t in range(3):
        state = core.decide(spec, state, bad(), 2.0 + t).state
    assert state.failed_checks == 3 and state.phase is Phase.PROGRESSING
    d = core.decide(canary(threshold=2, maxWeight=100), state, ok(), 9.0)
    assert d.state.phase is Phase.FAILED and routes(d) == [Route("rollback", 100, 0)]
    assert d.state.reason == "failedChecks 3 reached threshold 2"


@pytest.mark.parametrize("obs", [bad(), Observation()], ids=["failing", "held-no-data-hold"])
def test_gate_timeout_is_checked_on_ticks_that_do_not_pass(obs: Observation) -> None:
    """A gate closed past its gateTimeout fails the rollout on a failing or held tick too."""
    spec = canary(
        threshold=10,
        webhooks=[
            {
                "name": "g",
                "type": "confirm-traffic-increase",
                "url": "http://h/",
                "gateTimeout": "10s",
            }
        ],
    )
    state = core.decide(spec, started(spec), Observation(), 0.0).state
    state = core.decide(spec, state, replace(ok(), gate_open=False), 1.0).state
    assert state.gate == "confirm-traffic-increase"
    if not obs.metrics:
        obs = Observation(metrics=(MetricValue("sr", None, 99, None, on_no_data=OnNoData.HOLD),))
    d = core.decide(spec, state, replace(obs, gate_open=False), 12.0)
    assert d.state.phase is Phase.FAILED
    assert "gate.timed_out" in names(d)


# --------------------------------------------------------------------------- issue 12: commands


def test_approving_a_gate_the_canary_does_not_have_is_refused() -> None:
    """approve --gate rollout on a canary without a confirm-rollout webhook is a conflict."""
    spec = canary(webhooks=[{"name": "p", "type": "confirm-promotion"}])
    with pytest.raises(CommandError, match=r"has no rollout gate.*its gates: promotion"):
        core.approve(spec, started(spec), "rollout", 1.0)
    assert core.approve(spec, started(spec), "promotion", 1.0).state.approvals == {"promotion"}


def test_promote_refuses_to_skip_a_closed_promotion_gate_without_force() -> None:
    """promote past a confirm-promotion gate needs approval or force; force is said in the
    event."""
    spec = canary(webhooks=[{"name": "p", "type": "confirm-promotion"}])
    state = core.decide(spec, started(spec), Observation(), 1.0).state
    with pytest.raises(CommandError, match=r"would skip its gate.*promotion.*--force"):
        core.promote(spec, state, 2.0)
    d = core.promote(spec, state, 2.0, force=True)
    event = next(e.event for e in d.effects if isinstance(e, Emit))
    assert (event.name, event.fields["forced"], event.fields["skippedGates"]) == (
        "rollout.promoting",
        True,
        ["promotion"],
    )
    approved = core.approve(spec, state, "promotion", 2.0).state
    assert core.promote(spec, approved, 3.0).state.phase is Phase.PROMOTING


def test_succeeded_rollout_keeps_no_approval() -> None:
    """An approval the rollout never used ends with it (Succeeded keeps none)."""
    spec = canary(maxWeight=10, webhooks=[{"name": "r", "type": "confirm-rollout"}])
    state = replace(started(spec), gate=None, gate_since=None, approvals=frozenset({"rollout"}))
    ds = run(spec, state, ok(), 4)
    assert ds[-1].state.phase is Phase.SUCCEEDED and ds[-1].state.approvals == frozenset()


# --------------------------------------------------------------------------- issue 13: Flagger


def test_a_new_revision_mid_rollout_restarts_the_analysis() -> None:
    """A new revision sends traffic back to the primary, resets the counters and says which
    revision replaced which."""
    spec = canary(threshold=5)
    state = core.decide(spec, started(spec), Observation(), 1.0).state
    state = core.decide(spec, state, ok(), 2.0).state
    state = core.decide(spec, state, bad(), 3.0).state
    assert (state.canary_weight, state.failed_checks) == (20, 1)
    d = core.start_rollout(spec, state, "v3", {"by": "ci"}, "r2", 4.0)
    assert routes(d) == [Route("route", 100, 0)]
    assert (d.state.revision, d.state.rollout_id, d.state.phase) == ("v3", "r2", Phase.PROGRESSING)
    assert (d.state.canary_weight, d.state.failed_checks, d.state.ticks) == (0, 0, 0)
    assert names(d) == ["rollout.restarted", "rollout.started"]
    restarted = next(e.event for e in d.effects if isinstance(e, Emit))
    assert (restarted.revision, restarted.fields["previousRevision"]) == ("v3", "v2")


def test_the_same_revision_again_is_a_no_op() -> None:
    """Starting the revision already under way changes nothing and has no effects."""
    spec = canary()
    state = core.decide(spec, started(spec), Observation(), 1.0).state
    d = core.start_rollout(spec, state, "v2", {}, "r2", 2.0)
    assert d.state == state and d.effects == ()


def test_the_last_step_asks_traffic_increase_then_promotion() -> None:
    """At maxWeight a closed confirm-traffic-increase gate holds before confirm-promotion is
    asked (Flagger asks both, in that order)."""
    spec = canary(
        maxWeight=20,
        webhooks=[
            {"name": "t", "type": "confirm-traffic-increase", "url": "http://h/"},
            {"name": "p", "type": "confirm-promotion", "url": "http://h/"},
        ],
    )
    state = run(spec, started(spec), ok(), 2)[-1].state
    assert state.canary_weight == 20
    need = core.needs(spec, state)
    assert need.gates == (WebhookType.CONFIRM_TRAFFIC_INCREASE, WebhookType.CONFIRM_PROMOTION)
    closed = WebhookType.CONFIRM_TRAFFIC_INCREASE
    d = core.decide(spec, state, replace(ok(), gate_open=False, closed_gate=closed), 3.0)
    assert (d.state.phase, d.state.gate) == (Phase.PROGRESSING, "confirm-traffic-increase")
    closed = WebhookType.CONFIRM_PROMOTION
    d = core.decide(spec, d.state, replace(ok(), gate_open=False, closed_gate=closed), 4.0)
    assert (d.state.phase, d.state.gate) == (Phase.WAITING_PROMOTION, "confirm-promotion")
    assert core.needs(spec, d.state).gates == (WebhookType.CONFIRM_PROMOTION,)


def test_a_restart_asks_the_confirm_rollout_gate_again() -> None:
    """The new revision of a restart waits for confirm-rollout like any new rollout."""
    spec = canary(webhooks=[{"name": "go", "type": "confirm-rollout", "url": "http://h/"}])
    state = core.decide(spec, started(spec), Observation(gate_open=True), 1.0).state
    state = core.decide(spec, state, Observation(), 2.0).state
    assert (state.phase, state.canary_weight) == (Phase.PROGRESSING, 10)
    d = core.start_rollout(spec, state, "v3", {}, "r2", 3.0)
    assert (d.state.phase, d.state.gate) == (Phase.PROGRESSING, "confirm-rollout")
    assert core.needs(spec, d.state).gates == (WebhookType.CONFIRM_ROLLOUT,)
    assert routes(d) == [Route("route", 100, 0)]
    waiting = core.decide(spec, d.state, Observation(gate_open=False), 4.0).state
    assert (waiting.phase, waiting.canary_weight) == (Phase.WAITING, 0)


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
