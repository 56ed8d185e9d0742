"""Analysis core: weights and steps, failed-check counting, blue/green and A/B (docs/design.md)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from analysis_helpers import bad, canary, names, ok, routes, run, started

from canaryd.config import WebhookType
from canaryd.core import analysis as core
from canaryd.core.analysis import HookResult, MetricValue, Observation, Phase, Route, RunHooks

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
